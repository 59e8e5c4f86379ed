//! Returning free heap memory to the kernel, for shards that just gave back the capacity of
//! containers sized by a peak (`broker::capacity`).

/// Releases free memory at the top and in the middle of every malloc arena (glibc
/// `malloc_trim(0)`); true if some was released.
pub fn trim_heap() -> bool {
    // SAFETY: malloc_trim takes no pointer and is thread-safe (it locks each arena).
    unsafe { libc::malloc_trim(0) == 1 }
}

/// Allocations from this size up are mapped on their own and unmapped when freed (glibc
/// `M_MMAP_THRESHOLD`, which also stops glibc from raising the threshold after such frees and
/// keeping later large buffers in arenas it rarely gives back).
pub fn set_mmap_threshold(bytes: i32) -> bool {
    // SAFETY: mallopt takes two ints; called before the shard threads allocate much.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
}

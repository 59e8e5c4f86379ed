//! A shard's io_uring, behind a safe interface.
//!
//! The ring is set up with COOP_TASKRUN, SINGLE_ISSUER and DEFER_TASKRUN: completions are only
//! run when the owning thread enters the kernel in [`Ring::submit_and_wait`], so one
//! `io_uring_enter` per loop pass both submits everything queued and reaps what finished.
//!
//! Buffers that an operation reads or writes are owned by this module until the operation
//! completes: send buffers are held in a slab and handed back with their completion, receive
//! buffers come from the provided buffer ring ([`BufRing`]), and the eventfd word and the
//! timer's timespec are fields of the [`Ring`], which outlives every operation it issues
//! (dropping an `IoUring` waits for nothing but cancels all in-flight operations when the fd
//! closes; the ring memory is unmapped only after that).
//!
//! # Layout
//! - `ring.rs`: [`Ring`], the operations and [`Completion`].
//! - `bufring.rs`: [`BufRing`], the provided buffer ring for receives.
//! - `fd.rs`: listeners with SO_REUSEPORT, eventfds, socket options, adopting raw fds.
//! - `heap.rs`: giving free heap memory back to the kernel.

mod bufring;
mod fd;
mod heap;
mod ring;

pub use bufring::BufRing;
pub use fd::{
    adopt_fd, eventfd, probe_bind, reuseport_listener, set_nodelay, shutdown_write, signal_eventfd,
};
pub use heap::{set_mmap_threshold, trim_heap};
pub use ring::{Completion, Ring, RingConfig};

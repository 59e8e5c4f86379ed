//! A data directory's file-system chores, shared by every log that keeps one: the `lock`
//! file that keeps a second process out, and making a directory's entries durable.

use std::fs::{File, OpenOptions};
use std::path::Path;

/// Takes the exclusive lock on `dir/lock` (created if missing; an flock, released when the
/// returned file is dropped or the process dies). `Ok(None)`: another holder has it.
pub fn try_lock(dir: &Path) -> std::io::Result<Option<File>> {
    let lock = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("lock"))?;
    match lock.try_lock() {
        Ok(()) => Ok(Some(lock)),
        Err(std::fs::TryLockError::WouldBlock) => Ok(None),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Makes `dir`'s entries (files created, renamed or removed in it) durable.
pub fn sync(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_second_holder_is_kept_out_until_the_first_lets_go() {
        let dir = std::env::temp_dir().join(format!("ringmq-dirlock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = super::try_lock(&dir).unwrap();
        assert!(first.is_some());
        assert!(super::try_lock(&dir).unwrap().is_none());
        drop(first);
        assert!(super::try_lock(&dir).unwrap().is_some());
        super::sync(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}

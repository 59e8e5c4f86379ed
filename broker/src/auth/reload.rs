//! Reloading the password and ACL files at run time (SIGHUP): the new [`Auth`] is parsed on
//! the signal's thread; a file that does not parse keeps the old settings. Shards pick the new
//! settings up on their next tick (one atomic load per tick), each swapping its whole `Arc`
//! at once and dropping its cache of verified passwords.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use super::Auth;
use crate::config::Config;

/// The current auth settings and a version that changes with each successful reload.
#[derive(Debug)]
pub struct Reloadable {
    current: Mutex<Arc<Auth>>,
    version: AtomicU64,
}

impl Reloadable {
    /// Starts from settings already loaded.
    pub fn new(auth: Auth) -> Self {
        Self {
            current: Mutex::new(Arc::new(auth)),
            version: AtomicU64::new(0),
        }
    }

    /// The settings now.
    pub fn current(&self) -> Arc<Auth> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Reads the files again. On success the new settings replace the old and the answer
    /// says what changed; on error (a bad line, a missing file) nothing changes.
    pub fn reload(&self, config: &Config) -> anyhow::Result<String> {
        let new = Auth::load(config)?;
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        // The AsyncAPI refusals per channel go on counting across the reload.
        if let (Some(new_api), Some(old_api)) = (&new.api, &current.api) {
            new_api.carry_counts(old_api);
        }
        let change = format!("{} -> {}", current.describe(), new.describe());
        *current = Arc::new(new);
        self.version.fetch_add(1, Ordering::Release);
        Ok(change)
    }

    /// Newer settings than version `seen`, if any (`seen` is updated).
    pub fn newer(&self, seen: &mut u64) -> Option<Arc<Auth>> {
        let version = self.version.load(Ordering::Acquire);
        if version == *seen {
            return None;
        }
        *seen = version;
        Some(self.current())
    }
}

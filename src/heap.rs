//! Giving freed heap memory back to the system after a burst.
//!
//! glibc's allocator keeps freed memory in its arenas for reuse. That is
//! right on the record path, but after a burst that will not come back (ten
//! thousand stream names that do not exist, each with its actor and metric
//! series, then evicted) the process would stay at its peak for good. Once
//! evictions have happened, [`TrimAfterEvictions`] asks the allocator, one
//! second later and once per second at most, to return what it can.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Schedules at most one trim per [`TRIM_DELAY`].
#[derive(Default)]
pub struct TrimAfterEvictions {
    scheduled: Arc<AtomicBool>,
}

/// How long after an eviction the trim runs: evictions come in waves (one
/// per stream whose idle timer runs out), and one trim serves the wave.
pub const TRIM_DELAY: Duration = Duration::from_secs(1);

impl TrimAfterEvictions {
    /// Notes an eviction; schedules a trim if none is pending. Must be
    /// called within a Tokio runtime.
    pub fn evicted(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let scheduled = self.scheduled.clone();
        tokio::spawn(async move {
            tokio::time::sleep(TRIM_DELAY).await;
            // Evictions from here on schedule the next trim.
            scheduled.store(false, Ordering::Release);
            // It walks the arenas: keep it off the runtime's threads.
            let _ = tokio::task::spawn_blocking(release_free_memory).await;
        });
    }
}

/// Returns free heap memory to the system where the allocator can (glibc);
/// a no-op elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim has no preconditions; it only releases memory
    // that no allocation uses, under the allocator's own locks.
    unsafe {
        libc::malloc_trim(0);
    }
}

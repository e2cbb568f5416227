//! Crash points for tests of the write-ahead rotation. With the `failpoints` feature, [`hit`] kills the process with
//! `SIGKILL` when `NHSMAIL_FAILPOINT` names the point, after skipping the first `NHSMAIL_FAILPOINT_SKIP` hits (0 by
//! default). Without the feature it compiles to nothing, so release builds cannot be crashed this way.

#[cfg(feature = "failpoints")]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static HITS: AtomicU64 = AtomicU64::new(0);

    if std::env::var("NHSMAIL_FAILPOINT").ok().as_deref() != Some(name) {
        return;
    }
    let skip: u64 = std::env::var("NHSMAIL_FAILPOINT_SKIP").ok().and_then(|value| value.parse().ok()).unwrap_or(0);
    if HITS.fetch_add(1, Ordering::SeqCst) < skip {
        return;
    }
    eprintln!("failpoint {name}: killing the agent with SIGKILL");
    // SAFETY: kill(2) on our own process id has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
}

#[cfg(not(feature = "failpoints"))]
#[inline(always)]
pub fn hit(_name: &str) {}

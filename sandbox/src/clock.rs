//! The sandbox's clock: the system time plus an offset that the control API sets, so tests
//! can move password expiry, lockout, token expiry and receipt times without waiting.

use std::sync::atomic::{AtomicI64, Ordering};

use chrono::{DateTime, TimeDelta, Utc};

/// Wall-clock time shifted by an adjustable offset in seconds.
#[derive(Debug, Default)]
pub struct Clock {
    offset_secs: AtomicI64,
}

impl Clock {
    /// Returns the sandbox's current time.
    pub fn now(&self) -> DateTime<Utc> {
        Utc::now() + TimeDelta::seconds(self.offset_secs())
    }

    pub fn offset_secs(&self) -> i64 {
        self.offset_secs.load(Ordering::Relaxed)
    }

    pub fn set_offset_secs(&self, secs: i64) {
        self.offset_secs.store(secs, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_moves_the_clock() {
        let clock = Clock::default();
        clock.set_offset_secs(86_400);
        let ahead = clock.now() - Utc::now();
        assert!(ahead >= TimeDelta::seconds(86_399), "clock ahead by {ahead}");
    }
}

//! A token bucket per client IP address for calls with unknown tokens, so guessing tokens is slow.
//!
//! Each address starts with [`CAPACITY`] failures in hand, refilled at [`REFILL_PER_SECOND`]. Only failed calls take
//! from the bucket. Once it is empty, the next call from that address waits until a failure would be allowed again,
//! and once the wait would pass [`MAX_WAIT`] calls are refused without looking at the token.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failed calls an address may make in a burst.
pub const CAPACITY: f64 = 10.0;
/// Failed calls allowed per second once the burst is spent.
pub const REFILL_PER_SECOND: f64 = 0.5;
/// Maximum wait imposed on one call. A call that would wait longer is rejected at once.
pub const MAX_WAIT: Duration = Duration::from_secs(10);
/// Addresses tracked before full buckets are dropped.
const MAX_TRACKED: usize = 10_000;

/// The decision for a call from an address, made before its token is checked.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Admission {
    Proceed,
    /// Wait this long, then check the token.
    Wait(Duration),
    /// Refuse without checking the token; the address may try again after this long.
    Refuse(Duration),
}

#[derive(Debug, Clone)]
struct Bucket {
    available: f64,
    updated: Instant,
    failures: u64,
}

/// Buckets by address.
#[derive(Debug, Default)]
pub struct Throttle {
    buckets: HashMap<IpAddr, Bucket>,
}

impl Throttle {
    /// Decides whether a call from `address` at `now` may have its token checked.
    pub fn admit(&mut self, address: IpAddr, now: Instant) -> Admission {
        let Some(bucket) = self.buckets.get_mut(&address) else { return Admission::Proceed };
        refill(bucket, now);
        if bucket.available >= 1.0 {
            return Admission::Proceed;
        }
        let wait = Duration::from_secs_f64((1.0 - bucket.available) / REFILL_PER_SECOND);
        if wait > MAX_WAIT { Admission::Refuse(wait - MAX_WAIT) } else { Admission::Wait(wait) }
    }

    /// Takes one failure from `address`'s bucket and returns the address's failures so far.
    pub fn record_failure(&mut self, address: IpAddr, now: Instant) -> u64 {
        if self.buckets.len() >= MAX_TRACKED && !self.buckets.contains_key(&address) {
            self.buckets.retain(|_, bucket| {
                refill(bucket, now);
                bucket.available < CAPACITY
            });
        }
        let bucket = self.buckets.entry(address).or_insert(Bucket { available: CAPACITY, updated: now, failures: 0 });
        refill(bucket, now);
        // The floor bounds how long an address stays refused after a flood of concurrent failures.
        let floor = 1.0 - (MAX_WAIT.as_secs_f64() + 1.0) * REFILL_PER_SECOND * 2.0;
        bucket.available = (bucket.available - 1.0).max(floor);
        bucket.failures += 1;
        bucket.failures
    }
}

fn refill(bucket: &mut Bucket, now: Instant) {
    let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
    bucket.available = (bucket.available + elapsed * REFILL_PER_SECOND).min(CAPACITY);
    bucket.updated = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 9));

    #[test]
    fn burst_of_failures_proceeds() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..CAPACITY as usize {
            assert_eq!(throttle.admit(PEER, now), Admission::Proceed);
            throttle.record_failure(PEER, now);
        }
    }

    #[test]
    fn spent_bucket_makes_caller_wait() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..CAPACITY as usize {
            throttle.record_failure(PEER, now);
        }
        assert_eq!(throttle.admit(PEER, now), Admission::Wait(Duration::from_secs(2)));
    }

    #[test]
    fn flood_is_refused_then_recovers() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..100 {
            throttle.record_failure(PEER, now);
        }
        assert!(matches!(throttle.admit(PEER, now), Admission::Refuse(_)));
        assert_eq!(throttle.admit(PEER, now + Duration::from_secs(60)), Admission::Proceed);
    }

    #[test]
    fn other_address_is_unaffected() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        for _ in 0..100 {
            throttle.record_failure(PEER, now);
        }
        let other = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 10));
        assert_eq!(throttle.admit(other, now), Admission::Proceed);
    }

    #[test]
    fn failures_are_counted() {
        let mut throttle = Throttle::default();
        let now = Instant::now();
        throttle.record_failure(PEER, now);
        assert_eq!(throttle.record_failure(PEER, now), 2);
    }
}

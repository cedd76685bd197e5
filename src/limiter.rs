//! One rate limiter for the whole process. Every HTTP attempt, first tries and retries
//! alike, takes a permit from the write or the read budget before it is sent. A 429 pauses
//! both budgets for everyone, so the whole job slows down, not one worker.

use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio::time::Instant;

/// Which budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// PATCH, POST, DELETE: the platform limits these.
    Write,
    /// GET: "effectively unlimited", limited here only to be a good citizen.
    Read,
}

/// Shared by every worker; see the module docs.
pub struct Limiter {
    write: Option<DefaultDirectRateLimiter>,
    read: Option<DefaultDirectRateLimiter>,
    paused_until: Mutex<Option<Instant>>,
}

/// Permits are spaced 1% wider than 1/rate, so that jitter between our clock and the
/// server's can never squeeze rate + 1 requests into a one-second window.
const SAFETY_MARGIN: f64 = 1.01;

/// A smooth quota: one permit every `1.01 / rate` seconds and a burst of one. Governor's
/// default burst equals the rate, which would let `rate` requests leave at once.
pub fn smooth_quota(per_second: NonZeroU32) -> Quota {
    let period = Duration::from_secs_f64(SAFETY_MARGIN / f64::from(per_second.get()));
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(per_second))
        .allow_burst(NonZeroU32::MIN)
}

impl Limiter {
    /// `None` for a budget means unlimited.
    pub fn new(write_per_second: Option<NonZeroU32>, read_per_second: Option<NonZeroU32>) -> Self {
        Limiter {
            write: write_per_second.map(|r| RateLimiter::direct(smooth_quota(r))),
            read: read_per_second.map(|r| RateLimiter::direct(smooth_quota(r))),
            paused_until: Mutex::new(None),
        }
    }

    /// Waits out any pause, then for a permit from `budget`.
    pub async fn acquire(&self, budget: Budget) {
        loop {
            let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
        let limiter = match budget {
            Budget::Write => &self.write,
            Budget::Read => &self.read,
        };
        if let Some(limiter) = limiter {
            limiter.until_ready().await;
        }
    }

    /// Holds every new request back for `wait` (a 429's `Retry-After`). Pauses only grow:
    /// a shorter one never cuts a longer one short.
    pub fn pause_for(&self, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use governor::clock::{Clock, FakeRelativeClock, Reference};

    #[test]
    fn smooth_quota_allows_no_burst_and_r_per_second() {
        let clock = FakeRelativeClock::default();
        let rate = NonZeroU32::new(50).unwrap();
        let limiter = RateLimiter::direct_with_clock(smooth_quota(rate), clock.clone());
        let mut granted = 0;
        let start = clock.now();
        // Step a fake clock through 3 s in 10 us steps, granting whenever allowed.
        for _ in 0..300_000 {
            while limiter.check().is_ok() {
                granted += 1;
            }
            clock.advance(Duration::from_micros(10));
        }
        let elapsed: Duration = clock.now().duration_since(start).into();
        assert_eq!(elapsed, Duration::from_secs(3));
        // 3 s at 50/s with a 1% margin: 149 (the first is free at t=0).
        assert!((147..=150).contains(&granted), "granted {granted}");
    }

    #[test]
    fn first_permit_is_single() {
        let clock = FakeRelativeClock::default();
        let limiter =
            RateLimiter::direct_with_clock(smooth_quota(NonZeroU32::new(1000).unwrap()), clock);
        assert!(limiter.check().is_ok());
        assert!(
            limiter.check().is_err(),
            "a burst above one would let the rate spike"
        );
    }
}

//! The write rate that shares the space with production: AIMD under the `--rate` ceiling,
//! as the AWS SDKs' adaptive retry mode and TCP do.
//!
//! A space's write limit (13,800 per 10 s) belongs to every client of the space, the
//! customer's calls and messages included. So the tool does not hold its `--rate` against
//! a server that says "too many" (429): a 429 on a write sets the pace to 70% of what the
//! server was seen to accept in the last second (at most once a second, so one burst of
//! 429s is one signal; never above the pace it had), and every accepted write adds back a
//! little, about 1% of the ceiling per second of success. `--rate` stays
//! a hard ceiling: the governor quota in [`crate::limiter`] is applied after this pacing,
//! whatever the rate here says. Several processes (shards) on one space each react to the
//! same 429s and share the budget the way TCP flows share a link.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// The lowest pace as a share of the ceiling: a storm of 429s never stops the job.
const FLOOR_SHARE: f64 = 0.02;
/// Added back per second of accepted writes, as a share of the ceiling.
const RECOVERY_PER_SEC: f64 = 0.01;
/// After a 429, the pace as a share of what the server accepted in the last second.
const BACKOFF: f64 = 0.7;
/// Two 429s closer than this are one signal.
const CUT_AT_MOST_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug)]
struct Pace {
    /// When the next write may leave.
    next: Option<Instant>,
    last_cut: Option<Instant>,
    /// The lowest rate the run came down to.
    lowest: f64,
    cuts: u64,
    /// Writes accepted in the current one-second window, and when it began.
    window_start: Option<Instant>,
    accepted_in_window: u64,
    /// Writes the server accepted in the last whole window: what it can take now.
    accepted_last_second: Option<u64>,
}

/// The adaptive pace of writes. Shared by every worker.
#[derive(Debug)]
pub struct AdaptiveRate {
    ceiling: f64,
    floor: f64,
    /// The current rate (writes per second) as f64 bits: read on every write.
    rate: AtomicU64,
    pace: Mutex<Pace>,
}

/// What the run saw of the adaptive rate, for the summary.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RateReport {
    pub current: f64,
    pub lowest: f64,
    pub cuts: u64,
}

impl AdaptiveRate {
    pub fn new(ceiling_per_second: u32) -> AdaptiveRate {
        let ceiling = f64::from(ceiling_per_second.max(1));
        AdaptiveRate {
            ceiling,
            floor: (ceiling * FLOOR_SHARE).max(1.0).min(ceiling),
            rate: AtomicU64::new(ceiling.to_bits()),
            pace: Mutex::new(Pace {
                next: None,
                last_cut: None,
                lowest: ceiling,
                cuts: 0,
                window_start: None,
                accepted_in_window: 0,
                accepted_last_second: None,
            }),
        }
    }

    fn pace(&self) -> std::sync::MutexGuard<'_, Pace> {
        self.pace.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes per second the job paces at now.
    pub fn current(&self) -> f64 {
        f64::from_bits(self.rate.load(Ordering::Relaxed))
    }

    fn set(&self, rate: f64) {
        self.rate.store(rate.to_bits(), Ordering::Relaxed);
    }

    /// When this write may leave: `None` at the ceiling (the governor alone paces then,
    /// so an unthrottled run pays nothing here), else the next slot `1/rate` after the last.
    pub fn slot(&self) -> Option<Instant> {
        let rate = self.current();
        if rate >= self.ceiling {
            return None;
        }
        let now = Instant::now();
        let mut pace = self.pace();
        let slot = pace.next.map_or(now, |n| n.max(now));
        pace.next = Some(slot + Duration::from_secs_f64(1.0 / rate));
        Some(slot)
    }

    /// The server refused a write with 429: halve the pace (once a second at most).
    pub fn on_throttled(&self) {
        let now = Instant::now();
        let mut pace = self.pace();
        if pace
            .last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < CUT_AT_MOST_EVERY)
        {
            return;
        }
        pace.last_cut = Some(now);
        pace.cuts += 1;
        // What the server took in the last second, or half the pace before a full second.
        let seen = pace
            .accepted_last_second
            .map_or(self.current() * 0.5 / BACKOFF, |n| n as f64);
        let rate = (seen.min(self.current()) * BACKOFF).max(self.floor);
        pace.lowest = pace.lowest.min(rate);
        self.set(rate);
        tracing::debug!(rate, "write rate cut after a 429");
    }

    /// A write was accepted: climb back, about `RECOVERY_PER_SEC` of the ceiling per second
    /// of writes at the current pace.
    pub fn on_accepted(&self) {
        {
            let now = Instant::now();
            let mut pace = self.pace();
            let start = *pace.window_start.get_or_insert(now);
            if now.saturating_duration_since(start) >= Duration::from_secs(1) {
                pace.accepted_last_second = Some(pace.accepted_in_window);
                pace.accepted_in_window = 0;
                pace.window_start = Some(now);
            }
            pace.accepted_in_window += 1;
        }
        let rate = self.current();
        if rate >= self.ceiling {
            return;
        }
        let step = self.ceiling * RECOVERY_PER_SEC / rate;
        self.set((rate + step).min(self.ceiling));
    }

    pub fn report(&self) -> RateReport {
        let pace = self.pace();
        RateReport {
            current: self.current(),
            lowest: pace.lowest,
            cuts: pace.cuts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_429_cuts_the_pace_to_what_the_server_took_and_successes_climb_back() {
        let a = AdaptiveRate::new(100);
        assert_eq!(a.slot(), None, "at the ceiling the governor alone paces");
        // Before a second of history: half the pace.
        a.on_throttled();
        assert_eq!(a.current(), 50.0);
        a.on_throttled();
        assert_eq!(a.current(), 50.0, "a burst of 429s is one signal");
        // A second after a cut, the next 429 counts again (not a moment before).
        tokio::time::advance(Duration::from_millis(999)).await;
        a.on_throttled();
        assert_eq!(a.current(), 50.0);
        tokio::time::advance(Duration::from_millis(1)).await;
        a.on_throttled();
        assert_eq!(a.current(), 25.0);
        a.set(50.0);
        tokio::time::advance(Duration::from_millis(1000)).await;
        // The server took 30 writes in the last second: 70% of that.
        for _ in 0..30 {
            a.on_accepted();
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        a.on_accepted();
        a.on_throttled();
        assert!((a.current() - 21.0).abs() < 1e-9, "{}", a.current());
        // Never above the pace it had, whatever the server took.
        a.set(25.0);
        tokio::time::advance(Duration::from_millis(1001)).await;
        for _ in 0..500 {
            a.on_accepted();
        }
        tokio::time::advance(Duration::from_millis(1001)).await;
        a.on_accepted();
        let before = a.current();
        a.on_throttled();
        assert!((a.current() - before * 0.7).abs() < 1e-9, "{}", a.current());
        a.set(25.0);
        // Slots are 1/rate apart.
        let first = a.slot().unwrap();
        let second = a.slot().unwrap();
        assert_eq!(second - first, Duration::from_millis(40));
        // Each accepted write adds ceiling * 1% / rate: about 1/s per second of writes.
        let mut accepted = 0;
        while a.current() < 100.0 {
            a.on_accepted();
            accepted += 1;
            assert!(a.current() <= 100.0);
        }
        assert!(
            (2000..20000).contains(&accepted),
            "{accepted} writes to climb back"
        );
        assert_eq!(a.slot(), None);
        let r = a.report();
        assert_eq!(r.cuts, 4);
        assert!((r.lowest - 21.0).abs() < 1e-9, "{r:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn the_pace_never_falls_below_its_floor() {
        let a = AdaptiveRate::new(1000);
        for _ in 0..50 {
            a.on_throttled();
            tokio::time::advance(Duration::from_secs(2)).await;
        }
        assert_eq!(a.current(), 20.0);
        let tiny = AdaptiveRate::new(1);
        tiny.on_throttled();
        assert_eq!(tiny.current(), 1.0, "never below one write a second");
    }
}

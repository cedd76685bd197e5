//! Pacing by the space's own count: what is left in its window above the reserve, spread
//! over the time until the window resets.
//!
//! The count an answer carries is the server's as it answered; the writes this job sent
//! after the one that brought it may not be in it yet, so they are taken off as if they
//! were (the writes in flight). Every shard sees the same count and keeps the same
//! reserve, so shards together never take the count below it either.

use std::time::Duration;

use tokio::time::Instant;

use super::headers::Announcement;

/// The newest count, where it stands now.
#[derive(Debug, Clone, Copy)]
struct Window {
    limit: u64,
    remaining: u64,
    resets_at: Instant,
    /// Writes this job had been granted when the write that brought the count was: the
    /// ones granted after it may be missing from `remaining`.
    counted_through: u64,
}

/// What the count allows now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spend {
    /// Writes per second that spend what is left above the reserve by the reset.
    Pace(f64),
    /// Nothing left above the reserve: wait for the window to reset.
    WaitUntil(Instant),
}

#[derive(Debug, Clone)]
pub struct Announced {
    /// Share of the window's limit left to the space's other clients.
    reserve_share: f64,
    latest: Option<Window>,
    /// How long a window is: the server's `w=` if it gave one, else the longest reset seen.
    length: Duration,
    lowest_remaining: Option<u64>,
}

impl Announced {
    pub fn new(reserve_share: f64) -> Announced {
        Announced {
            reserve_share: reserve_share.clamp(0.0, 1.0),
            latest: None,
            length: Duration::from_secs(1),
            lowest_remaining: None,
        }
    }

    /// A count arrived, on the answer to a write granted as number `granted` (so writes up
    /// to it are in the count). The newest answer wins: it is the server's latest word.
    pub fn observe(&mut self, a: Announcement, granted: u64, now: Instant) {
        self.length = a.window.unwrap_or(self.length.max(a.reset));
        self.lowest_remaining = Some(
            self.lowest_remaining
                .map_or(a.remaining, |r| r.min(a.remaining)),
        );
        self.latest = Some(Window {
            limit: a.limit,
            remaining: a.remaining,
            resets_at: now + a.reset,
            counted_through: granted,
        });
    }

    /// Writes kept for others: the reserve share of the window's limit, rounded up.
    pub fn reserve(&self) -> Option<u64> {
        self.latest
            .map(|w| (w.limit as f64 * self.reserve_share).ceil() as u64)
    }

    pub fn reserve_share(&self) -> f64 {
        self.reserve_share
    }

    /// The newest count's remaining writes.
    pub fn remaining(&self) -> Option<u64> {
        self.latest.map(|w| w.remaining)
    }

    pub fn limit(&self) -> Option<u64> {
        self.latest.map(|w| w.limit)
    }

    pub fn window(&self) -> Option<Duration> {
        self.latest.map(|_| self.length)
    }

    /// The lowest remaining count any answer carried.
    pub fn lowest_remaining(&self) -> Option<u64> {
        self.lowest_remaining
    }

    /// What may be spent now, `granted` writes having been granted so far; `None` before
    /// any count arrived. A window whose reset has passed with no newer count is taken as
    /// a fresh one (its whole limit), until the next answer says otherwise.
    pub fn spend(&mut self, granted: u64, now: Instant) -> Option<Spend> {
        let reserve = self.reserve()?;
        let length = self.length.max(Duration::from_millis(1));
        let w = self.latest.as_mut()?;
        if now >= w.resets_at {
            while w.resets_at <= now {
                w.resets_at += length;
            }
            w.remaining = w.limit;
            w.counted_through = granted;
        }
        let uncounted = granted.saturating_sub(w.counted_through);
        let left = w
            .remaining
            .saturating_sub(reserve)
            .saturating_sub(uncounted);
        if left == 0 {
            return Some(Spend::WaitUntil(w.resets_at));
        }
        let until_reset = w
            .resets_at
            .saturating_duration_since(now)
            .max(Duration::from_millis(1));
        Some(Spend::Pace(left as f64 / until_reset.as_secs_f64()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(limit: u64, remaining: u64, reset: u64) -> Announcement {
        Announcement {
            limit,
            remaining,
            reset: Duration::from_secs(reset),
            window: None,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_left_above_the_reserve_is_spread_until_the_reset() {
        let now = Instant::now();
        let mut a = Announced::new(0.5);
        assert_eq!(a.spend(0, now), None, "no count yet");
        a.observe(ann(1000, 1000, 10), 1, now);
        assert_eq!(a.reserve(), Some(500));
        assert_eq!(a.spend(1, now), Some(Spend::Pace(50.0)));
        // 100 more granted since: not in the count yet, taken off.
        assert_eq!(a.spend(101, now), Some(Spend::Pace(40.0)));
        // Others spent the window down to the reserve: wait for the reset.
        a.observe(ann(1000, 520, 4), 101, now);
        assert_eq!(a.spend(111, now), Some(Spend::Pace(2.5)));
        assert_eq!(
            a.spend(121, now),
            Some(Spend::WaitUntil(now + Duration::from_secs(4)))
        );
        assert_eq!(
            a.spend(500, now),
            Some(Spend::WaitUntil(now + Duration::from_secs(4)))
        );
        assert_eq!(a.lowest_remaining(), Some(520));
        // The reset passed with no newer count: a fresh window of the longest length seen.
        let later = now + Duration::from_secs(4);
        assert_eq!(a.spend(500, later), Some(Spend::Pace(50.0)));
        assert_eq!(a.window(), Some(Duration::from_secs(10)));
        // Past several windows: the next reset is the first one ahead.
        let much_later = now + Duration::from_secs(37);
        assert_eq!(a.spend(500, much_later), Some(Spend::Pace(500.0 / 7.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_rounds_up_and_a_zero_reserve_spends_everything() {
        let now = Instant::now();
        let mut a = Announced::new(0.25);
        a.observe(ann(10, 10, 1), 0, now);
        assert_eq!(a.reserve(), Some(3));
        assert_eq!(a.spend(0, now), Some(Spend::Pace(7.0)));
        let mut all = Announced::new(0.0);
        all.observe(ann(10, 1, 2), 0, now);
        assert_eq!(all.spend(0, now), Some(Spend::Pace(0.5)));
        let mut none = Announced::new(1.0);
        none.observe(ann(10, 10, 2), 0, now);
        assert!(matches!(none.spend(0, now), Some(Spend::WaitUntil(_))));
        // A reset of zero: the window resets now, and the next is a second on (no longer
        // window was seen).
        let mut zero = Announced::new(0.5);
        zero.observe(ann(10, 10, 0), 0, now);
        let soon = now + Duration::from_millis(1);
        assert_eq!(zero.spend(0, soon), Some(Spend::Pace(5.0 / 0.999)));
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_s_window_length_is_believed() {
        let now = Instant::now();
        let mut a = Announced::new(0.5);
        a.observe(
            Announcement {
                window: Some(Duration::from_secs(60)),
                ..ann(100, 10, 2)
            },
            0,
            now,
        );
        assert_eq!(a.window(), Some(Duration::from_secs(60)));
        assert_eq!(a.limit(), Some(100));
    }
}

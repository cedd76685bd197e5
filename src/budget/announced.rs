//! Pacing by the space's own count: what is left in its window above the reserve, spread
//! over the time until the window resets, for as long as the count can be trusted.
//!
//! The count an answer carries is the server's as it answered. The job's writes sent
//! before that write are taken as counted in it (those still on the wire are the only
//! slack); every write of the job sent after it, or granted and not yet sent, is taken
//! off as if counted. Of two counts for the same window the lower wins (a count never
//! rises within a window; an answer that overtook another on the way must not undo it).
//! With `--shard K/N`, each of the N processes spends only its Nth of the room above the
//! reserve: they see the same count, never each other's grants.
//!
//! A count is used only while it can be trusted: not once its window has reset (the job
//! cannot tell how full the next one is: one write at a time goes until an answer says),
//! not after an answer that carried none or an implausible one (until a plausible one
//! comes: the estimate paces meanwhile), and never again in the run once a write it
//! showed room for was refused.

use std::time::Duration;

use tokio::time::Instant;

use super::headers::Announcement;

/// The newest count, where it stands now.
#[derive(Debug, Clone, Copy)]
struct Window {
    limit: u64,
    remaining: u64,
    resets_at: Instant,
    /// The send number of the write whose answer brought the count: the job's writes
    /// sent after it are not in `remaining`.
    counted_through: u64,
}

/// What the count allows now.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spend {
    /// Writes per second that spend what is left above the reserve by the reset.
    Pace(f64),
    /// Nothing left above the reserve: wait for the window to reset.
    WaitUntil(Instant),
    /// The window has reset since the count came: how full the new one is, only an
    /// answer can say (one write at a time until one does).
    Renew,
}

/// Why no count paces the job now, though answers announced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Distrust {
    /// The latest answer carried no count.
    Absent,
    /// The latest answer's count could not be believed (the log says why, once).
    Implausible,
    /// A write was refused while the count showed room: never trusted again this run.
    Refuted,
}

impl std::fmt::Display for Distrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distrust::Absent => f.write_str("answers stopped announcing it"),
            Distrust::Implausible => f.write_str("an answer announced an implausible count"),
            Distrust::Refuted => f.write_str("a write was refused while it showed room"),
        }
    }
}

/// The writes of this job that a count may not include yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Writes {
    /// Writes sent so far (the last one's send number).
    pub sent: u64,
    /// Writes granted a slot and not sent yet.
    pub pending: u64,
}

#[derive(Debug, Clone)]
pub struct Announced {
    /// Share of the window's limit left to the space's other clients.
    reserve_share: f64,
    /// Processes that spend the same count knowing of each other (`--shard K/N`: N).
    sharers: u64,
    latest: Option<Window>,
    /// How long a window is: the server's `w=` if it gave one, else the longest reset seen.
    length: Duration,
    lowest_remaining: Option<u64>,
    distrust: Option<Distrust>,
}

impl Announced {
    pub fn new(reserve_share: f64) -> Announced {
        Announced {
            reserve_share: reserve_share.clamp(0.0, 1.0),
            sharers: 1,
            latest: None,
            length: Duration::from_secs(1),
            lowest_remaining: None,
            distrust: None,
        }
    }

    /// The count is spent by `n` processes that know of each other (shards).
    pub fn shared_by(mut self, n: u64) -> Announced {
        self.sharers = n.max(1);
        self
    }

    /// A count arrived, on the answer to the write sent as number `counted_through`.
    pub fn observe(&mut self, a: Announcement, counted_through: u64, now: Instant) {
        if self.distrust == Some(Distrust::Refuted) {
            return;
        }
        self.length = a.window.unwrap_or(self.length.max(a.reset));
        self.lowest_remaining = Some(
            self.lowest_remaining
                .map_or(a.remaining, |r| r.min(a.remaining)),
        );
        let new = Window {
            limit: a.limit,
            remaining: a.remaining,
            resets_at: now + a.reset,
            counted_through,
        };
        let trusted_live = self
            .latest
            .filter(|w| self.distrust.is_none() && now < w.resets_at);
        match trusted_live {
            // The same window, counted lower before: the lower count stands.
            Some(w) if self.room_key(&w) <= self.room_key(&new) => {}
            _ => self.latest = Some(new),
        }
        self.distrust = None;
    }

    /// Room above the reserve plus the writes counted: two counts of one window compare
    /// by it whatever they counted through.
    fn room_key(&self, w: &Window) -> i128 {
        i128::from(w.remaining) - i128::from(self.reserve_of(w.limit))
            + i128::from(w.counted_through)
    }

    fn reserve_of(&self, limit: u64) -> u64 {
        (limit as f64 * self.reserve_share).ceil() as u64
    }

    /// An answer came without a count, or with one that cannot be believed: no count is
    /// used until a plausible one comes.
    pub fn lost(&mut self, why: Distrust) {
        // An answer without a count before any came is no news; an implausible one is.
        let news = self.latest.is_some() || why == Distrust::Implausible;
        if news && self.distrust != Some(Distrust::Refuted) {
            self.distrust = Some(why);
        }
    }

    /// A write the count showed room for was refused: the count is not used again.
    pub fn refute(&mut self) {
        self.distrust = Some(Distrust::Refuted);
    }

    /// Why the count announced is not used, if it is not.
    pub fn distrust(&self) -> Option<Distrust> {
        self.distrust
    }

    /// Writes kept for others: the reserve share of the window's limit, rounded up.
    pub fn reserve(&self) -> Option<u64> {
        self.latest.map(|w| self.reserve_of(w.limit))
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

    /// What may be spent now, given this job's writes; `None` when no count can be used
    /// (none arrived, or it is not trusted). A window that has reset since the count came
    /// is never assumed fresh and full: the next answer says how full it is.
    pub fn spend(&self, writes: Writes, now: Instant) -> Option<Spend> {
        if self.distrust.is_some() {
            return None;
        }
        let w = self.latest?;
        if now >= w.resets_at {
            return Some(Spend::Renew);
        }
        let above = w.remaining.saturating_sub(self.reserve_of(w.limit)) / self.sharers;
        let uncounted = writes.sent.saturating_sub(w.counted_through) + writes.pending;
        let left = above.saturating_sub(uncounted);
        if left == 0 {
            return Some(Spend::WaitUntil(w.resets_at));
        }
        let until_reset = w.resets_at.saturating_duration_since(now);
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

    fn sent(sent: u64) -> Writes {
        Writes { sent, pending: 0 }
    }

    #[tokio::test(start_paused = true)]
    async fn what_is_left_above_the_reserve_is_spread_until_the_reset() {
        let now = Instant::now();
        let mut a = Announced::new(0.5);
        assert_eq!(a.spend(sent(0), now), None, "no count yet");
        a.observe(ann(1000, 1000, 10), 1, now);
        assert_eq!(a.reserve(), Some(500));
        assert_eq!(a.spend(sent(1), now), Some(Spend::Pace(50.0)));
        // 100 more sent since, and 20 granted and not sent: not in the count yet.
        assert_eq!(a.spend(sent(101), now), Some(Spend::Pace(40.0)));
        let pending = Writes {
            sent: 101,
            pending: 20,
        };
        assert_eq!(a.spend(pending, now), Some(Spend::Pace(38.0)));
        // Others spent the window down near the reserve.
        a.observe(ann(1000, 520, 4), 101, now);
        assert_eq!(a.spend(sent(111), now), Some(Spend::Pace(2.5)));
        let reset = Some(Spend::WaitUntil(now + Duration::from_secs(4)));
        assert_eq!(a.spend(sent(121), now), reset);
        assert_eq!(a.spend(sent(500), now), reset);
        assert_eq!(a.lowest_remaining(), Some(520));
        // The reset passed with no newer count: the window is not assumed fresh.
        let later = now + Duration::from_secs(4);
        assert_eq!(a.spend(sent(121), later), Some(Spend::Renew));
        assert_eq!(a.window(), Some(Duration::from_secs(10)));
        // The next answer's count is the new window's.
        a.observe(ann(1000, 900, 6), 122, later);
        assert_eq!(a.spend(sent(122), later), Some(Spend::Pace(400.0 / 6.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn within_a_window_the_lower_count_stands() {
        let now = Instant::now();
        let mut a = Announced::new(0.5);
        a.observe(ann(1000, 800, 10), 10, now);
        // An answer to an earlier write, arriving late: counted through 5 at 810, it would
        // leave 5 more than 800 through 10 does: the lower stands.
        a.observe(ann(1000, 810, 10), 5, now);
        assert_eq!(a.spend(sent(10), now), Some(Spend::Pace(30.0)));
        // A jump up within the window is not believed.
        a.observe(ann(1000, 1000, 10), 11, now);
        assert_eq!(a.remaining(), Some(800));
        assert_eq!(a.spend(sent(11), now), Some(Spend::Pace(29.9)));
        // A jump down is.
        a.observe(ann(1000, 600, 10), 12, now);
        assert_eq!(a.spend(sent(12), now), Some(Spend::Pace(10.0)));
        // Past the reset, a higher count is a new window.
        let later = now + Duration::from_secs(10);
        a.observe(ann(1000, 1000, 10), 13, later);
        assert_eq!(a.spend(sent(13), later), Some(Spend::Pace(50.0)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_count_is_not_used_after_an_answer_without_one_until_one_comes_again() {
        let now = Instant::now();
        let mut a = Announced::new(0.5);
        // Nothing to distrust before any count; an implausible one is told all the same.
        a.lost(Distrust::Absent);
        assert_eq!(a.distrust(), None);
        let mut wrong_from_the_start = Announced::new(0.5);
        wrong_from_the_start.lost(Distrust::Implausible);
        assert_eq!(wrong_from_the_start.distrust(), Some(Distrust::Implausible));
        a.observe(ann(100, 100, 10), 1, now);
        a.lost(Distrust::Absent);
        assert_eq!(a.spend(sent(1), now), None);
        assert_eq!(a.distrust(), Some(Distrust::Absent));
        a.observe(ann(100, 90, 9), 2, now);
        assert_eq!(a.spend(sent(2), now), Some(Spend::Pace(40.0 / 9.0)));
        a.lost(Distrust::Implausible);
        assert_eq!(a.spend(sent(2), now), None);
        // After the implausible answer a count is believed as is, even a higher one.
        a.observe(ann(100, 95, 9), 3, now);
        assert_eq!(a.spend(sent(3), now), Some(Spend::Pace(5.0)));
        // Refuted: never again, whatever comes.
        a.refute();
        a.observe(ann(100, 100, 9), 4, now);
        a.lost(Distrust::Absent);
        assert_eq!(a.spend(sent(4), now), None);
        assert_eq!(a.distrust(), Some(Distrust::Refuted));
        assert_eq!(
            Distrust::Refuted.to_string(),
            "a write was refused while it showed room"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn shards_each_spend_their_share_of_the_room() {
        let now = Instant::now();
        let mut a = Announced::new(0.5).shared_by(3);
        a.observe(ann(1000, 800, 10), 1, now);
        // 300 above the reserve, 100 each.
        assert_eq!(a.spend(sent(1), now), Some(Spend::Pace(10.0)));
        assert_eq!(a.spend(sent(100), now), Some(Spend::Pace(0.1)));
        assert!(matches!(a.spend(sent(101), now), Some(Spend::WaitUntil(_))));
        let zero = Announced::new(0.5).shared_by(0);
        assert_eq!(zero.sharers, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_reserve_rounds_up_and_a_zero_reserve_spends_everything() {
        let now = Instant::now();
        let mut a = Announced::new(0.25);
        a.observe(ann(10, 10, 1), 0, now);
        assert_eq!(a.reserve(), Some(3));
        assert_eq!(a.spend(sent(0), now), Some(Spend::Pace(7.0)));
        let mut all = Announced::new(0.0);
        all.observe(ann(10, 1, 2), 0, now);
        assert_eq!(all.spend(sent(0), now), Some(Spend::Pace(0.5)));
        let mut none = Announced::new(1.0);
        none.observe(ann(10, 10, 2), 0, now);
        assert!(matches!(
            none.spend(sent(0), now),
            Some(Spend::WaitUntil(_))
        ));
        // A reset of zero: the window resets now, and nothing is known of the next.
        let mut zero = Announced::new(0.5);
        zero.observe(ann(10, 10, 0), 0, now);
        assert_eq!(zero.spend(sent(0), now), Some(Spend::Renew));
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

//! The space's write budget, as the job sees it: shared with the customer's production
//! traffic (13,800 writes per 10 s for the whole space), so the job paces its writes by
//! what the space says and accepts, under `--rate` as a hard ceiling (the governor quota
//! in [`crate::limiter`], applied after this).
//!
//! - When answers announce the budget ([`headers`]: limit, remaining, reset), the job
//!   spends only what is left above `--reserve` (50% of the window's limit by default),
//!   spread until the window resets ([`announced`]); at the reserve it waits for the reset
//!   and says so; held there past the outage budget, it stops as an outage does.
//! - Without them, it paces by an [`estimate`] of what the space accepts, cut only when
//!   the share of refused writes rises (a limit), never on a steady share (noise).
//! - A 429 delays only its own row (the retry waits its `Retry-After`); the whole write
//!   budget pauses only when nearly every write is refused, for that `Retry-After`.
//!
//! The space's own count, when it sends one, outranks every guess.

pub mod announced;
pub mod estimate;
pub mod headers;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use announced::{Announced, Spend};
use estimate::{Estimate, Verdict};
use headers::Parsed;

/// The default `--reserve`: half the window's limit stays with the space's other clients.
pub const DEFAULT_RESERVE: f64 = 0.5;
/// The longest a spent budget holds every write back, whatever `Retry-After` says.
const MAX_SPENT_PAUSE: Duration = Duration::from_secs(60);

/// One write on its way: its place among the writes granted, and when it left.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    granted: u64,
    sent: Instant,
}

/// How a write was answered, as far as the budget cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Accepted,
    /// 429, with the wait the server asked for.
    Refused(Option<Duration>),
    /// Anything else (a 5xx, a lost answer): no evidence about the budget.
    Other,
}

/// The job stopped waiting: the space's count stayed at the reserve past the outage
/// budget.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "the space's write budget stayed at the reserve for {}s ({remaining} of {limit} left, \
     {reserve} kept for the space's other clients by --reserve)",
    held_for.as_secs()
)]
pub struct Held {
    pub held_for: Duration,
    pub remaining: u64,
    pub limit: u64,
    pub reserve: u64,
}

/// Where the pace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The space announced its budget in headers.
    Announced,
    /// No announcement; the pace follows what the space accepts.
    Estimated,
}

/// What the run saw of the budget, for progress and the summary.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct BudgetReport {
    pub source: Option<Source>,
    /// `--rate`.
    pub ceiling: f64,
    /// The pace now, writes per second (the ceiling when nothing holds it back).
    pub pace: f64,
    /// The lowest pace a cut set (estimated), and how many cuts.
    pub lowest_pace: f64,
    pub cuts: u64,
    /// What the space is believed to accept (estimated, after a cut).
    pub accepts_per_sec: Option<f64>,
    /// The announced window: its limit, its length, the reserve kept, the lowest count seen.
    pub limit: Option<u64>,
    pub window_secs: Option<f64>,
    pub reserve_share: f64,
    pub reserve: Option<u64>,
    pub lowest_remaining: Option<u64>,
    /// Writes answered 2xx and 429.
    pub accepted: u64,
    pub refused: u64,
    /// Time writes were held back: at the reserve, or with the budget spent.
    pub waited_secs: f64,
}

impl BudgetReport {
    /// What the job believes the budget is, in a few words: the announced window and the
    /// share kept, or what the space is seen to accept.
    pub fn believed(&self) -> String {
        use crate::human;
        match (self.source, self.limit) {
            (Some(Source::Announced), Some(limit)) => format!(
                "the space announces {} per {}, {} kept for others ({}%), lowest left {}",
                human::count(limit),
                human::duration(Duration::from_secs_f64(self.window_secs.unwrap_or(0.0))),
                human::count(self.reserve.unwrap_or(0)),
                (self.reserve_share * 100.0).round(),
                human::count(self.lowest_remaining.unwrap_or(0))
            ),
            _ => match self.accepts_per_sec {
                Some(knee) => format!(
                    "the space accepts about {} (estimated; cut {} time(s))",
                    human::rate(knee),
                    human::count(self.cuts)
                ),
                None if self.source.is_some() => "no limit seen".to_owned(),
                None => "no writes yet".to_owned(),
            },
        }
    }

    /// Refused writes as a share of the writes answered either way.
    pub fn refused_share(&self) -> f64 {
        let all = self.accepted + self.refused;
        if all == 0 {
            0.0
        } else {
            self.refused as f64 / all as f64
        }
    }
}

#[derive(Debug)]
struct State {
    announced: Announced,
    estimate: Estimate,
    /// The last write's slot under the pace: the next is `1/pace` after it, at the pace in
    /// force when it is asked for (a rising pace takes effect at once).
    last: Option<Instant>,
    /// Nearly every write refused: none leaves before this.
    spent_until: Option<Instant>,
    /// Since when the count has kept the job at the reserve.
    held_since: Option<Instant>,
    waited: Duration,
    /// The end of the last wait the log told of: each wait is told once, not per worker.
    told_until: Option<Instant>,
}

/// The write budget of one job, shared by every worker.
#[derive(Debug)]
pub struct WriteBudget {
    ceiling: f64,
    outage_budget: Duration,
    state: Mutex<State>,
    granted: AtomicU64,
    accepted: AtomicU64,
    refused: AtomicU64,
    implausible_warned: AtomicBool,
}

/// What a worker does next for its write slot.
enum Step {
    Go,
    /// Leave at this slot (already taken).
    At(Instant),
    /// Held back: wait, then ask again.
    Wait(Instant, Why),
    Stop(Held),
}

#[derive(Debug, Clone, Copy)]
enum Why {
    Reserve { remaining: u64, reserve: u64 },
    Spent,
}

impl WriteBudget {
    pub fn new(ceiling_per_second: u32, reserve_share: f64, outage_budget: Duration) -> Self {
        let ceiling = f64::from(ceiling_per_second.max(1));
        WriteBudget {
            ceiling,
            outage_budget,
            state: Mutex::new(State {
                announced: Announced::new(reserve_share),
                estimate: Estimate::new(ceiling),
                last: None,
                spent_until: None,
                held_since: None,
                waited: Duration::ZERO,
                told_until: None,
            }),
            granted: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            implausible_warned: AtomicBool::new(false),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for this write's slot under the budget. `Err` when the space's count has held
    /// the job at the reserve for longer than the outage budget.
    pub async fn slot(&self) -> Result<(), Held> {
        loop {
            let now = Instant::now();
            let step = self.step(now);
            match step {
                Step::Go => return Ok(()),
                Step::At(at) => {
                    tokio::time::sleep_until(at).await;
                    return Ok(());
                }
                Step::Stop(held) => return Err(held),
                Step::Wait(until, why) => {
                    let tell = {
                        let mut s = self.state();
                        let new = s.told_until.is_none_or(|t| t < now);
                        if new {
                            s.told_until = Some(until);
                        }
                        new
                    };
                    if tell {
                        Self::say_wait(why, until.saturating_duration_since(now));
                    }
                    tokio::time::sleep_until(until).await;
                    self.state().waited += Instant::now().saturating_duration_since(now);
                }
            }
        }
    }

    fn say_wait(why: Why, wait: Duration) {
        let secs = (wait.as_secs_f64() * 10.0).round() / 10.0;
        match why {
            Why::Reserve { remaining, reserve } => tracing::info!(
                remaining,
                reserve,
                wait_secs = secs,
                "the space's write budget is at the reserve kept for its other clients: \
                 writes wait for its window to reset"
            ),
            Why::Spent => tracing::info!(
                wait_secs = secs,
                "the space refuses nearly every write: writes wait as it asked"
            ),
        }
    }

    fn step(&self, now: Instant) -> Step {
        let mut s = self.state();
        if let Some(until) = s.spent_until.filter(|t| *t > now) {
            return Step::Wait(until, Why::Spent);
        }
        let granted = self.granted.load(Ordering::Relaxed);
        let rate = match s.announced.spend(granted, now) {
            Some(Spend::WaitUntil(until)) => {
                let since = *s.held_since.get_or_insert(now);
                let (limit, reserve) = (
                    s.announced.limit().unwrap_or(0),
                    s.announced.reserve().unwrap_or(0),
                );
                let remaining = s.announced.remaining().unwrap_or(0);
                let held_for = now.saturating_duration_since(since);
                if held_for > self.outage_budget {
                    return Step::Stop(Held {
                        held_for,
                        remaining,
                        limit,
                        reserve,
                    });
                }
                // Wake at the reset, or at the outage budget's end if that comes first.
                let until = until.min(since + self.outage_budget + Duration::from_millis(1));
                return Step::Wait(until, Why::Reserve { remaining, reserve });
            }
            Some(Spend::Pace(rate)) => {
                s.held_since = None;
                rate
            }
            None => {
                s.estimate.start(now);
                s.estimate.pace(now)
            }
        };
        self.granted.fetch_add(1, Ordering::Relaxed);
        if rate >= self.ceiling {
            // The governor alone paces at the ceiling: an unthrottled run pays nothing here.
            s.last = None;
            return Step::Go;
        }
        let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
        let slot = s.last.map_or(now, |last| (last + gap).max(now));
        s.last = Some(slot);
        if slot <= now {
            Step::Go
        } else {
            Step::At(slot)
        }
    }

    /// A write leaves now: its ticket, for [`WriteBudget::headers`] and
    /// [`WriteBudget::answered`].
    pub fn sent(&self) -> Ticket {
        Ticket {
            granted: self.granted.load(Ordering::Relaxed),
            sent: Instant::now(),
        }
    }

    /// The headers of a write's answer: an announced count is believed; an implausible
    /// one is ignored, with one warning a run.
    pub fn headers(&self, ticket: &Ticket, headers: &HeaderMap) {
        match headers::parse(headers, SystemTime::now()) {
            Parsed::Absent => {}
            Parsed::Seen(a) => self
                .state()
                .announced
                .observe(a, ticket.granted, Instant::now()),
            Parsed::Implausible(why) => {
                if !self.implausible_warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        "the space's rate-limit headers are not believed ({why}); the job \
                         paces by what the space accepts"
                    );
                }
            }
        }
    }

    /// A write was answered.
    pub fn answered(&self, ticket: &Ticket, answer: Answer) {
        let refused = match answer {
            Answer::Accepted => false,
            Answer::Refused(_) => true,
            Answer::Other => return,
        };
        let counter = if refused {
            &self.refused
        } else {
            &self.accepted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut s = self.state();
        let verdict = s.estimate.on_answer(ticket.sent, refused, now);
        if let (Verdict::Cut { spent: true }, Answer::Refused(wait)) = (verdict, answer) {
            let until = now + wait.unwrap_or(Duration::from_secs(1)).min(MAX_SPENT_PAUSE);
            if s.spent_until.is_none_or(|t| t < until) {
                s.spent_until = Some(until);
                s.estimate.paused_until(until);
            }
        }
    }

    pub fn report(&self) -> BudgetReport {
        let s = self.state();
        let now = Instant::now();
        let announced = s.announced.limit().is_some();
        let answered = self.accepted.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed);
        let source = if announced {
            Some(Source::Announced)
        } else if answered > 0 {
            Some(Source::Estimated)
        } else {
            None
        };
        let granted = self.granted.load(Ordering::Relaxed);
        let pace = match s.announced.clone().spend(granted, now) {
            Some(Spend::Pace(rate)) => rate.min(self.ceiling),
            Some(Spend::WaitUntil(_)) => 0.0,
            None => s.estimate.pace(now),
        };
        BudgetReport {
            source,
            ceiling: self.ceiling,
            pace,
            lowest_pace: s.estimate.lowest(),
            cuts: s.estimate.cuts(),
            accepts_per_sec: s.estimate.knee(),
            limit: s.announced.limit(),
            window_secs: s.announced.window().map(|w| w.as_secs_f64()),
            reserve_share: s.announced.reserve_share(),
            reserve: s.announced.reserve(),
            lowest_remaining: s.announced.lowest_remaining(),
            accepted: self.accepted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            waited_secs: s.waited.as_secs_f64(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn announce(b: &WriteBudget, limit: u64, remaining: u64, reset: u64) {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", HeaderValue::from(limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        b.headers(&b.sent(), &h);
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_reserve_writes_wait_for_the_reset_and_stop_past_the_outage_budget() {
        let b = WriteBudget::new(1000, 0.5, Duration::from_secs(5));
        // 10 left of 100, 50 kept: nothing to spend until the reset in 3 s.
        announce(&b, 100, 10, 3);
        let start = Instant::now();
        b.slot().await.unwrap();
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        let r = b.report();
        assert_eq!(r.source, Some(Source::Announced));
        assert_eq!(
            (r.limit, r.reserve, r.lowest_remaining),
            (Some(100), Some(50), Some(10))
        );
        assert!((r.waited_secs - 3.0).abs() < 1e-6, "{r:?}");
        // Others keep it there for longer than the outage budget: the job stops.
        announce(&b, 100, 40, 60);
        let held = b.slot().await.unwrap_err();
        assert_eq!((held.remaining, held.limit, held.reserve), (40, 100, 50));
        assert!(held.held_for > Duration::from_secs(5), "{held:?}");
        assert!(held.to_string().contains("40 of 100 left"), "{held}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_holds_every_write_for_the_wait_asked() {
        let b = WriteBudget::new(100, 0.5, Duration::from_secs(60));
        b.slot().await.unwrap();
        let ticket = b.sent();
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..12 {
            b.answered(&ticket, Answer::Refused(Some(Duration::from_secs(2))));
        }
        // Twelve refusals, the whole window: a cut, and the budget is spent, so the next
        // write waits the 2 s asked.
        let r = b.report();
        assert_eq!((r.refused, r.accepted, r.cuts), (12, 0, 1), "{r:?}");
        let start = Instant::now();
        b.slot().await.unwrap();
        assert!(Instant::now() - start >= Duration::from_secs(2) - Duration::from_millis(2));
        // Other answers are no evidence either way.
        b.answered(&ticket, Answer::Other);
        assert_eq!(b.report().refused + b.report().accepted, 12);
        assert!((b.report().refused_share() - 1.0).abs() < 1e-9);
    }
}

//! The space's write budget, as the job sees it: shared with the customer's production
//! traffic (13,800 writes per 10 s for the whole space), so the job paces its writes by
//! what the space says and accepts, under `--rate` as a hard ceiling (the limiter's
//! schedule of the times writes leave, in [`crate::limiter`], taken after this budget's
//! grant).
//!
//! - When answers announce the budget ([`headers`]: limit, remaining, reset), the job
//!   spends only what is left above `--reserve` (50% of the window's limit by default),
//!   spread until the window resets ([`announced`]); at the reserve it waits for the reset
//!   and says so; held there past the outage limit, it stops as an outage does.
//! - Without them, it paces by an [`estimate`] of what the space accepts, cut only when
//!   the share of refused writes rises (a limit), never on a steady share (noise).
//! - A 429 delays only its own row (the retry waits its `Retry-After`); the whole write
//!   budget pauses only when nearly every write is refused, for that `Retry-After`.
//!
//! The space's own count, when it sends one, outranks every guess.

pub mod announced;
pub mod estimate;
pub mod headers;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use tokio::time::Instant;

use announced::{Announced, Distrust, Spend, Writes};
use estimate::{Estimate, PaceChange};
use headers::Parsed;

/// The default `--reserve`: half the window's limit stays with the space's other clients.
pub const DEFAULT_RESERVE: f64 = 0.5;
/// The longest a spent budget holds every write back, whatever `Retry-After` says.
const MAX_SPENT_PAUSE: Duration = Duration::from_secs(60);
/// The longest a write waits before asking again while a renewal is under way.
const RECHECK: Duration = Duration::from_millis(250);
/// Once a count's window has reset, one write goes to learn the new window's count; if
/// no answer says within this, another may.
const RENEW_WAIT: Duration = Duration::from_secs(2);

/// A write's slot, granted. Sent with [`Grant::send`], or let go by dropping it (the row
/// found nothing left to write): until then the count is taken as spent by it.
#[derive(Debug)]
pub struct Grant {
    budget: Option<Arc<WriteBudget>>,
    /// Granted under a trusted count that showed room for it.
    announced: bool,
    at: Instant,
}

impl Grant {
    /// A slot no budget paces (a limiter without one).
    pub fn unpaced() -> Grant {
        Grant {
            budget: None,
            announced: false,
            at: Instant::now(),
        }
    }

    /// When the budget granted it: what it knew then is what it acted on.
    pub fn granted_at(&self) -> Instant {
        self.at
    }

    /// Whether it was granted under a trusted count that showed room for it.
    pub fn under_announcement(&self) -> bool {
        self.announced
    }

    /// The write leaves now: its ticket, for [`WriteBudget::headers`] and
    /// [`WriteBudget::answered`].
    pub fn send(mut self) -> Option<Ticket> {
        let budget = self.budget.take()?;
        let number = {
            let mut s = budget.state();
            s.writes.pending = s.writes.pending.saturating_sub(1);
            s.writes.sent += 1;
            s.writes.sent
        };
        Some(Ticket {
            number,
            sent: Instant::now(),
            announced: self.announced,
            read: false,
        })
    }
}

impl Drop for Grant {
    fn drop(&mut self) {
        if let Some(budget) = self.budget.take() {
            let mut s = budget.state();
            s.writes.pending = s.writes.pending.saturating_sub(1);
        }
    }
}

/// One write on its way: its own place among the writes sent, and when it left. A read
/// has one too: the writes sent before it, which its answer's count includes.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    number: u64,
    sent: Instant,
    announced: bool,
    read: bool,
}

impl Ticket {
    /// Its place among the job's writes sent: 1 for the first.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// Whether the write was granted under a trusted count that showed room for it.
    pub fn under_announcement(&self) -> bool {
        self.announced
    }
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
pub struct ReserveStall {
    pub held_for: Duration,
    pub remaining: u64,
    pub limit: u64,
    pub reserve: u64,
}

/// Where the pace comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PaceSource {
    /// The space announced its budget in headers, and the announcement is trusted.
    Announced,
    /// No announcement, or one not trusted; the pace follows what the space accepts.
    Estimated,
}

/// What the run saw of the budget, for progress and the summary.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct BudgetReport {
    pub source: Option<PaceSource>,
    /// Why the space's own count is not trusted, when it announced one.
    pub untrusted: Option<Distrust>,
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
    /// share kept, or what the space is seen to accept (and why a count it announced is
    /// not believed).
    pub fn believed(&self) -> String {
        use crate::human;
        if let (Some(PaceSource::Announced), Some(limit)) = (self.source, self.limit) {
            return format!(
                "the space announces {} per {}, {} kept for others ({}%), lowest left {}",
                human::count(limit),
                human::duration(Duration::from_secs_f64(self.window_secs.unwrap_or(0.0))),
                human::count(self.reserve.unwrap_or(0)),
                (self.reserve_share * 100.0).round(),
                human::count(self.lowest_remaining.unwrap_or(0))
            );
        }
        let estimate = match self.accepts_per_sec {
            Some(knee) => format!(
                "the space accepts about {} (estimated; cut {} time(s))",
                human::rate(knee),
                human::count(self.cuts)
            ),
            None if self.source.is_some() => "no limit seen".to_owned(),
            None => "no writes yet".to_owned(),
        };
        match self.untrusted {
            Some(why) => format!("{estimate}; the space's own count is not trusted ({why})"),
            None => estimate,
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
    /// The job's writes sent and granted-not-sent: what a count may not include yet.
    writes: Writes,
    /// The last grant's place under the pace: the next is `1/pace` after it, at the pace
    /// in force when it is asked for (a rising pace takes effect at once).
    last: Option<Instant>,
    /// The send number of the write whose answer brought the newest count, and that count.
    last_count: Option<(u64, u64)>,
    /// Nearly every write refused: none leaves before this.
    spent_until: Option<Instant>,
    /// Since when the count has kept the job at the reserve.
    held_since: Option<Instant>,
    /// When the write that is to bring a passed window's successor's count was granted.
    renewing: Option<Instant>,
    waited: Duration,
    /// The end of the last wait the log told of: each wait is told once, not per worker.
    told_until: Option<Instant>,
}

/// The write budget of one job, shared by every worker.
#[derive(Debug)]
pub struct WriteBudget {
    ceiling: f64,
    max_outage: Duration,
    state: Mutex<State>,
    accepted: AtomicU64,
    refused: AtomicU64,
    /// One warning a run for each way the count stops being trusted.
    warned: [AtomicBool; 3],
}

/// What a worker does next for its write slot.
enum Step {
    /// Granted (under a trusted count with room, or not).
    Go {
        announced: bool,
    },
    /// Wait, then ask again; a wait with a reason is told in the log.
    Wait(Instant, Option<Why>),
    /// A place ahead, held (counted as granted), laid after this many cuts of the pace:
    /// at it, the write goes if the newest count still has room for it and the pace was
    /// not cut since.
    At(Instant, u64),
    Stop(ReserveStall),
}

#[derive(Debug, Clone, Copy)]
enum Why {
    Reserve { remaining: u64, reserve: u64 },
    Spent,
}

impl WriteBudget {
    pub fn new(ceiling_per_second: u32, reserve_share: f64, max_outage: Duration) -> Self {
        let ceiling = f64::from(ceiling_per_second.max(1));
        WriteBudget {
            ceiling,
            max_outage,
            state: Mutex::new(State {
                announced: Announced::new(reserve_share),
                estimate: Estimate::new(ceiling),
                writes: Writes::default(),
                last: None,
                last_count: None,
                spent_until: None,
                held_since: None,
                renewing: None,
                waited: Duration::ZERO,
                told_until: None,
            }),
            accepted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            warned: Default::default(),
        }
    }

    /// The space's count is spent by `n` processes that know of each other (`--shard K/N`):
    /// each takes its Nth of the room above the reserve.
    pub fn shared_by(self, n: u64) -> Self {
        {
            let mut s = self.state();
            s.announced = s.announced.clone().shared_by(n);
        }
        self
    }

    /// A read leaves now: its answer's count includes the writes sent before it.
    pub fn read_ticket(&self) -> Ticket {
        Ticket {
            number: self.state().writes.sent,
            sent: Instant::now(),
            announced: false,
            read: true,
        }
    }

    /// Whether a granted write still has room under the newest count (the row's fresh read
    /// may have brought one after the grant): false sends it back for another slot.
    pub fn still_room(&self, grant: &Grant) -> bool {
        if grant.budget.is_none() {
            return true;
        }
        let s = self.state();
        let others = Writes {
            pending: s.writes.pending.saturating_sub(1),
            ..s.writes
        };
        !matches!(
            s.announced.spend(others, Instant::now()),
            Some(Spend::WaitUntil(_))
        )
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits for a write's slot under the budget. `Err` when the space's count has held
    /// the job at the reserve for longer than the outage limit. Nothing is handed out
    /// ahead of time: a write that waits for its place asks again when it comes, against
    /// the newest count.
    pub async fn slot(self: &Arc<Self>) -> Result<Grant, ReserveStall> {
        loop {
            let now = Instant::now();
            match self.step(now) {
                Step::Go { announced } => {
                    return Ok(Grant {
                        budget: Some(Arc::clone(self)),
                        announced,
                        at: now,
                    });
                }
                Step::Stop(held) => return Err(held),
                Step::At(place, cuts) => {
                    let held = Grant {
                        budget: Some(Arc::clone(self)),
                        announced: false,
                        at: place,
                    };
                    tokio::time::sleep_until(place).await;
                    if let Some(grant) = self.at_its_place(held, cuts) {
                        return Ok(grant);
                    }
                }
                Step::Wait(until, None) => tokio::time::sleep_until(until).await,
                Step::Wait(until, Some(why)) => {
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
            return Step::Wait(until, Some(Why::Spent));
        }
        let spend = s.announced.spend(s.writes, now);
        let rate = match spend {
            Some(Spend::WaitUntil(until)) => return self.at_the_reserve(&mut s, now, until),
            Some(Spend::Renew) => {
                s.held_since = None;
                if let Some(at) = s.renewing.filter(|t| now < *t + RENEW_WAIT) {
                    return Step::Wait((at + RENEW_WAIT).min(now + RECHECK), None);
                }
                s.renewing = Some(now);
                s.writes.pending += 1;
                return Step::Go { announced: false };
            }
            Some(Spend::Pace(rate)) => rate,
            None => {
                s.estimate.start(now);
                s.estimate.pace(now)
            }
        };
        s.held_since = None;
        if rate >= self.ceiling {
            // The governor alone paces at the ceiling: an unthrottled run pays nothing here.
            s.last = None;
        } else {
            // Places are laid out in order at the pace asked for, one gap apart; a write
            // whose place is ahead holds it, and is checked against the newest count
            // when it comes (`Step::At`).
            let gap = Duration::from_secs_f64(1.0 / rate.max(1e-3));
            let place = s.last.map_or(now, |last| (last + gap).max(now));
            s.last = Some(place);
            if place > now {
                s.writes.pending += 1;
                return Step::At(place, s.estimate.cuts());
            }
        }
        s.writes.pending += 1;
        Step::Go {
            announced: matches!(spend, Some(Spend::Pace(_))),
        }
    }

    /// A write whose place has come: it goes, unless a count now in use has no room for
    /// it, or the pace was cut since the place was laid (`cuts`: the cuts then; the
    /// place was spaced at a pace no longer in force). Then its place is let go, and it
    /// asks again.
    fn at_its_place(&self, mut held: Grant, cuts: u64) -> Option<Grant> {
        let now = Instant::now();
        let spend = {
            let s = self.state();
            if s.estimate.cuts() != cuts {
                return None;
            }
            let others = Writes {
                pending: s.writes.pending.saturating_sub(1),
                ..s.writes
            };
            s.announced.spend(others, now)
        };
        // (The state is unlocked here: letting the place go locks it.)
        held.announced = match spend {
            None => false,
            Some(Spend::Pace(_)) => true,
            Some(Spend::WaitUntil(_) | Spend::Renew) => return None,
        };
        held.at = now;
        Some(held)
    }

    /// The count keeps the job at the reserve until `until`: wait for it, or stop past the
    /// outage limit.
    fn at_the_reserve(&self, s: &mut State, now: Instant, until: Instant) -> Step {
        let since = *s.held_since.get_or_insert(now);
        let (limit, reserve) = (
            s.announced.limit().unwrap_or(0),
            s.announced.reserve().unwrap_or(0),
        );
        let remaining = s.announced.remaining().unwrap_or(0);
        let held_for = now.saturating_duration_since(since);
        if held_for > self.max_outage {
            return Step::Stop(ReserveStall {
                held_for,
                remaining,
                limit,
                reserve,
            });
        }
        // Wake at the reset, or at the outage limit if that comes first.
        let until = until.min(since + self.max_outage + Duration::from_millis(1));
        Step::Wait(until, Some(Why::Reserve { remaining, reserve }))
    }

    /// The headers of a write's answer, `wall` being this machine's clock: a plausible
    /// count is believed; an answer without one, or with an implausible one, leaves the
    /// job with no count until a plausible one comes (one warning a run for each).
    pub fn headers(&self, ticket: &Ticket, headers: &HeaderMap, wall: SystemTime) {
        let parsed = headers::parse(headers, wall);
        let mut s = self.state();
        if ticket.read {
            // A read's count is believed like a write's; a read without one (or with a
            // wrong one) says nothing of the writes' budget.
            if let Parsed::Seen(a) = parsed {
                s.announced.observe(a, ticket.number, Instant::now());
                s.renewing = None;
            }
            return;
        }
        s.renewing = None;
        match parsed {
            Parsed::Seen(a) => {
                s.announced.observe(a, ticket.number, Instant::now());
                s.last_count = Some((ticket.number, a.remaining));
            }
            Parsed::Absent => {
                let had = s.announced.limit().is_some() && s.announced.distrust().is_none();
                s.announced.lost(Distrust::Absent);
                drop(s);
                if had {
                    self.warn_once(
                        Distrust::Absent,
                        "an answer came without the space's rate-limit headers: the job \
                         paces by what the space accepts until they come again"
                            .into(),
                    );
                }
            }
            Parsed::Implausible(why) => {
                s.announced.lost(Distrust::Implausible);
                drop(s);
                self.warn_once(
                    Distrust::Implausible,
                    format!(
                        "the space's rate-limit headers are not believed ({why}); the job \
                         paces by what the space accepts"
                    ),
                );
            }
        }
    }

    /// Logs `message` the first time a count is distrusted for `kind`; whether it did.
    fn warn_once(&self, kind: Distrust, message: String) -> bool {
        let index = match kind {
            Distrust::Absent => 0,
            Distrust::Implausible => 1,
            Distrust::Refuted => 2,
        };
        let first = !self.warned[index].swap(true, Ordering::Relaxed);
        if first {
            tracing::warn!("{message}");
        }
        first
    }

    /// A write was answered. A refusal of a write the count showed room for refutes the
    /// count (unless its own answer says nothing is left): it is not used again this run.
    pub fn answered(&self, ticket: &Ticket, answer: Answer) {
        if ticket.read {
            return;
        }
        let refused = match answer {
            Answer::Accepted => false,
            Answer::Refused(_) => true,
            Answer::Other => {
                // No answer to learn from: the next write may try.
                self.state().renewing = None;
                return;
            }
        };
        let counter = if refused {
            &self.refused
        } else {
            &self.accepted
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let now = Instant::now();
        let mut s = self.state();
        if refused && ticket.announced && s.last_count != Some((ticket.number, 0)) {
            s.announced.refute();
            drop(s);
            self.warn_once(
                Distrust::Refuted,
                "a write was refused while the space's count showed room for it: its \
                 rate-limit headers are not trusted for the rest of the run; the job paces \
                 by what the space accepts"
                    .into(),
            );
            s = self.state();
        }
        let change = s.estimate.on_answer(ticket.sent, refused, now);
        if matches!(change, PaceChange::Cut { .. }) {
            // The places laid ahead were spaced at the old pace: the next is laid from now.
            s.last = None;
        }
        if let (PaceChange::Cut { spent: true }, Answer::Refused(wait)) = (change, answer) {
            let until = now + wait.unwrap_or(Duration::from_secs(1)).min(MAX_SPENT_PAUSE);
            if s.spent_until.is_none_or(|t| t < until) {
                s.spent_until = Some(until);
                s.estimate.paused_until(until);
            }
        }
    }

    /// Whether the space's refusals are judged noise (a flaky edge refusing whatever the
    /// rate): the estimate has learnt their share and found no limit, and the space
    /// announces none. Until then a refusal may be a limit's.
    pub fn refusals_are_noise(&self) -> bool {
        let s = self.state();
        s.announced.limit().is_none() && s.estimate.refusals_are_noise()
    }

    pub fn report(&self) -> BudgetReport {
        let s = self.state();
        let now = Instant::now();
        let announced = s.announced.limit().is_some();
        let untrusted = s.announced.distrust();
        let answered = self.accepted.load(Ordering::Relaxed) + self.refused.load(Ordering::Relaxed);
        let source = if announced && untrusted.is_none() {
            Some(PaceSource::Announced)
        } else if answered > 0 || announced || untrusted.is_some() {
            Some(PaceSource::Estimated)
        } else {
            None
        };
        let pace = match s.announced.spend(s.writes, now) {
            Some(Spend::Pace(rate)) => rate.min(self.ceiling),
            Some(Spend::WaitUntil(_) | Spend::Renew) => 0.0,
            None => s.estimate.pace(now),
        };
        BudgetReport {
            source,
            untrusted: untrusted.filter(|u| announced || *u == Distrust::Implausible),
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

    #[test]
    fn the_summary_says_no_writes_yet_apart_from_no_limit_seen() {
        let none = BudgetReport::default();
        assert_eq!(none.believed(), "no writes yet");
        let estimated = BudgetReport {
            source: Some(PaceSource::Estimated),
            ..BudgetReport::default()
        };
        assert_eq!(estimated.believed(), "no limit seen");
    }
    use reqwest::header::HeaderValue;

    fn ticket(b: &Arc<WriteBudget>) -> Ticket {
        let grant = Grant {
            budget: Some(Arc::clone(b)),
            announced: false,
            at: Instant::now(),
        };
        b.state().writes.pending += 1;
        grant.send().unwrap()
    }

    fn count(limit: u64, remaining: u64, reset: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit", HeaderValue::from(limit));
        h.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        h.insert("x-ratelimit-reset", HeaderValue::from(reset));
        h
    }

    fn announce(b: &Arc<WriteBudget>, limit: u64, remaining: u64, reset: u64) {
        b.headers(
            &ticket(b),
            &count(limit, remaining, reset),
            SystemTime::now(),
        );
    }

    fn budget(ceiling: u32, outage: u64) -> Arc<WriteBudget> {
        Arc::new(WriteBudget::new(ceiling, 0.5, Duration::from_secs(outage)))
    }

    #[tokio::test(start_paused = true)]
    async fn at_the_reserve_writes_wait_for_the_reset_and_stop_past_the_outage_limit() {
        let b = budget(1000, 5);
        // 10 left of 100, 50 kept: nothing to spend until the reset in 3 s.
        announce(&b, 100, 10, 3);
        let start = Instant::now();
        drop(b.slot().await.unwrap());
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        let r = b.report();
        assert_eq!(r.source, Some(PaceSource::Announced));
        assert_eq!(
            (r.limit, r.reserve, r.lowest_remaining),
            (Some(100), Some(50), Some(10))
        );
        assert!((r.waited_secs - 3.0).abs() < 1e-6, "{r:?}");
        // Others keep it there for longer than the outage limit: the job stops.
        announce(&b, 100, 40, 60);
        let held = b.slot().await.unwrap_err();
        assert_eq!((held.remaining, held.limit, held.reserve), (40, 100, 50));
        assert!(held.held_for > Duration::from_secs(5), "{held:?}");
        assert!(held.to_string().contains("40 of 100 left"), "{held}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_granted_write_counts_as_spent_until_it_is_sent_or_let_go() {
        let b = budget(1000, 60);
        let t0 = Instant::now();
        // 3 above the reserve, for the next 10 s.
        announce(&b, 100, 53, 10);
        let first = b.slot().await.unwrap();
        let second = b.slot().await.unwrap();
        assert!(first.announced && second.announced);
        assert_eq!(
            b.state().writes,
            Writes {
                sent: 1,
                pending: 2
            }
        );
        // Let go unsent: its place comes back.
        drop(second);
        assert_eq!(b.state().writes.pending, 1);
        let t = first.send().unwrap();
        assert_eq!((t.number, t.under_announcement()), (2, true));
        assert_eq!(
            b.state().writes,
            Writes {
                sent: 2,
                pending: 0
            }
        );
        let third = b.slot().await.unwrap();
        assert!(third.announced);
        assert_eq!(Instant::now(), t0 + Duration::from_millis(7500));
        // The last of the room is spread to the reset: its place comes when the window has
        // passed, so it goes as the one write that learns the next window's count.
        let fourth = b.slot().await.unwrap();
        assert_eq!(Instant::now(), t0 + Duration::from_secs(10));
        assert!(!fourth.announced);
        assert_eq!(b.state().renewing, Some(Instant::now()));
        assert!(Grant::unpaced().send().is_none());
    }

    /// The row's fresh read may bring a newer count after the grant: the write still has
    /// room when the only write not yet counted beside it is itself.
    #[tokio::test(start_paused = true)]
    async fn a_granted_write_still_has_room_for_itself_and_none_past_the_reserve() {
        let b = budget(1000, 60);
        announce(&b, 100, 60, 10);
        let granted = b.slot().await.unwrap();
        assert!(granted.announced);
        // Others' writes since: one left above the reserve, and it is this one's.
        announce(&b, 100, 51, 10);
        assert!(
            b.still_room(&granted),
            "the last write above the reserve is this one"
        );
        announce(&b, 100, 50, 10);
        assert!(!b.still_room(&granted), "none left above the reserve");
        assert!(b.still_room(&Grant::unpaced()), "no budget behind it");
    }

    /// Refusals are noise once the estimate has learnt them without finding a limit, and
    /// never while the space announces one.
    #[test]
    fn refusals_are_noise_only_when_learnt_so_and_no_count_is_announced() {
        let b = budget(1000, 60);
        assert!(!b.refusals_are_noise());
        for i in 0..200 {
            b.answered(&ticket(&b), Answer::Accepted);
            if i % 10 == 0 {
                b.answered(&ticket(&b), Answer::Refused(None));
            }
        }
        assert!(b.refusals_are_noise());
        announce(&b, 100, 90, 10);
        assert!(!b.refusals_are_noise(), "a limit the space announces");
    }

    /// The summary's source: none before any answer, estimated from writes answered (or
    /// refused) or from a count that is not believed, announced from a believed count.
    #[test]
    fn the_report_s_source_is_what_the_run_saw_of_the_budget() {
        let b = budget(1000, 60);
        assert_eq!(b.report().source, None, "nothing answered yet");
        b.answered(&ticket(&b), Answer::Accepted);
        assert_eq!(
            b.report().source,
            Some(PaceSource::Estimated),
            "writes, no count"
        );
        let b = budget(1000, 60);
        b.answered(&ticket(&b), Answer::Refused(None));
        assert_eq!(
            b.report().source,
            Some(PaceSource::Estimated),
            "a refusal alone"
        );
        let b = budget(1000, 60);
        announce(&b, 100, 90, 10);
        assert_eq!(b.report().source, Some(PaceSource::Announced));
        let b = budget(1000, 60);
        // More left than the limit: never believed.
        b.headers(&ticket(&b), &count(100, 200, 10), SystemTime::now());
        let r = b.report();
        assert_eq!(r.source, Some(PaceSource::Estimated), "{r:?}");
        assert_eq!(r.untrusted, Some(Distrust::Implausible));
    }

    /// Headers missing from an answer are worth a warning only where a count was believed,
    /// once; a space that never sends them gets none.
    #[test]
    fn a_missing_count_is_warned_of_once_and_only_after_one_was_believed() {
        let b = budget(1000, 60);
        b.headers(&ticket(&b), &HeaderMap::new(), SystemTime::now());
        assert!(
            !b.warned[0].load(Ordering::Relaxed),
            "never announced: no warning"
        );
        announce(&b, 100, 90, 10);
        b.headers(&ticket(&b), &HeaderMap::new(), SystemTime::now());
        assert!(b.warned[0].load(Ordering::Relaxed));
        let b = budget(1000, 60);
        assert!(b.warn_once(Distrust::Refuted, "first".into()));
        assert!(!b.warn_once(Distrust::Refuted, "again".into()));
        assert!(b.warn_once(Distrust::Absent, "another kind".into()));
    }

    #[tokio::test(start_paused = true)]
    async fn past_its_reset_a_count_lets_one_write_learn_the_next_window() {
        let b = budget(1000, 60);
        announce(&b, 100, 100, 2);
        tokio::time::advance(Duration::from_secs(2)).await;
        let t0 = Instant::now();
        // The window has passed: one write goes, the next waits for its answer ...
        let probe = b.slot().await.unwrap();
        assert!(!probe.announced);
        assert_eq!((Instant::now(), b.state().writes.pending), (t0, 1));
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.slot().await.map(|g| g.granted_at()) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            !waiter.is_finished(),
            "a second write went before the answer"
        );
        // ... which brings the new window's count: the waiting write goes under it.
        let t = probe.send().unwrap();
        b.headers(&t, &count(100, 99, 10), SystemTime::now());
        let granted = waiter.await.unwrap().unwrap();
        assert!(
            granted - t0 <= Duration::from_millis(550),
            "{:?}",
            granted - t0
        );
        // With no answer at all, another write may try after the wait.
        let b = budget(1000, 60);
        announce(&b, 100, 100, 1);
        tokio::time::advance(Duration::from_secs(1)).await;
        let t0 = Instant::now();
        drop(b.slot().await.unwrap());
        drop(b.slot().await.unwrap());
        assert_eq!(Instant::now() - t0, RENEW_WAIT);
        // A lost answer lets the next one try at once.
        let t = b.slot().await.unwrap().send().unwrap();
        b.answered(&t, Answer::Other);
        let before = Instant::now();
        drop(b.slot().await.unwrap());
        assert_eq!(Instant::now(), before);
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_waiting_for_its_place_asks_again_against_the_newest_count() {
        let b = budget(1000, 60);
        // 10 above the reserve over 10 s: a place a second.
        announce(&b, 100, 60, 10);
        let t = b.slot().await.unwrap().send().unwrap();
        let waiter = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.slot().await.map(|g| g.announced) }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Others spent the room: the waiting write does not leave at its old place.
        b.headers(&t, &count(100, 50, 9), SystemTime::now());
        let start = Instant::now();
        let announced = waiter.await.unwrap().unwrap();
        assert!(
            Instant::now() - start >= Duration::from_secs(8),
            "{:?}",
            start.elapsed()
        );
        assert!(!announced, "granted after the reset, with no count yet");
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_s_count_is_believed_and_a_granted_write_without_room_goes_back() {
        let b = budget(1000, 60);
        // 2 above the reserve: a write is granted.
        announce(&b, 100, 52, 10);
        let grant = b.slot().await.unwrap();
        assert!(b.still_room(&grant));
        // The row's fresh read brings a newer count: production spent the room.
        let read = b.read_ticket();
        assert!(read.read && read.number == 1);
        b.headers(&read, &count(100, 49, 9), SystemTime::now());
        assert!(!b.still_room(&grant), "no room left for it");
        assert!(b.still_room(&Grant::unpaced()));
        // A read without a count, or refused, says nothing of the writes' budget.
        b.headers(&read, &HeaderMap::new(), SystemTime::now());
        b.answered(&read, Answer::Refused(None));
        let r = b.report();
        assert_eq!(
            (r.untrusted, r.refused, r.lowest_remaining),
            (None, 0, Some(49))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_the_count_showed_room_for_refutes_it_for_the_run() {
        // A refusal whose own answer says nothing is left is consistent with the count.
        let b = budget(1000, 60);
        announce(&b, 100, 90, 10);
        let t = b.slot().await.unwrap().send().unwrap();
        b.headers(&t, &count(100, 0, 9), SystemTime::now());
        b.answered(&t, Answer::Refused(None));
        assert_eq!(b.report().untrusted, None);
        // A write granted with no count, refused: nothing to refute.
        let b = budget(1000, 60);
        let t = b.slot().await.unwrap().send().unwrap();
        announce(&b, 100, 90, 10);
        b.answered(&t, Answer::Refused(None));
        assert_eq!(b.report().untrusted, None);
        // Granted with room, refused with room left: refuted for the run.
        let t = b.slot().await.unwrap().send().unwrap();
        b.headers(&t, &count(100, 89, 9), SystemTime::now());
        b.answered(&t, Answer::Refused(None));
        let r = b.report();
        assert_eq!(
            (r.source, r.untrusted),
            (Some(PaceSource::Estimated), Some(Distrust::Refuted))
        );
        assert!(
            r.believed().contains("not trusted (a write was refused"),
            "{}",
            r.believed()
        );
        announce(&b, 100, 90, 10);
        assert_eq!(b.report().untrusted, Some(Distrust::Refuted));
        assert!(!b.slot().await.unwrap().announced);
    }

    #[tokio::test(start_paused = true)]
    async fn answers_without_a_count_or_with_a_wrong_one_leave_the_estimate_pacing() {
        let b = budget(1000, 60);
        assert_eq!(b.report().source, None);
        announce(&b, 100, 90, 10);
        assert_eq!(b.report().source, Some(PaceSource::Announced));
        b.headers(&ticket(&b), &HeaderMap::new(), SystemTime::now());
        let r = b.report();
        assert_eq!(
            (r.source, r.untrusted),
            (Some(PaceSource::Estimated), Some(Distrust::Absent))
        );
        announce(&b, 100, 90, 10);
        assert_eq!(b.report().untrusted, None);
        b.headers(&ticket(&b), &count(100, 101, 10), SystemTime::now());
        assert_eq!(b.report().untrusted, Some(Distrust::Implausible));
        // Implausible from the first answer on: the summary says so too.
        let never = budget(1000, 60);
        never.headers(&ticket(&never), &count(100, 101, 10), SystemTime::now());
        let r = never.report();
        assert_eq!(
            (r.source, r.untrusted),
            (Some(PaceSource::Estimated), Some(Distrust::Implausible))
        );
        assert!(!b.slot().await.unwrap().announced);
    }

    #[tokio::test(start_paused = true)]
    async fn a_spent_budget_holds_every_write_for_the_wait_asked() {
        let b = budget(100, 60);
        let ticket = b.slot().await.unwrap().send().unwrap();
        tokio::time::advance(Duration::from_millis(1)).await;
        for _ in 0..12 {
            b.answered(&ticket, Answer::Refused(Some(Duration::from_secs(2))));
        }
        // Twelve refusals, the whole window: a cut, and the budget is spent, so the next
        // write waits the 2 s asked.
        let r = b.report();
        assert_eq!((r.refused, r.accepted, r.cuts), (12, 0, 1), "{r:?}");
        let start = Instant::now();
        drop(b.slot().await.unwrap());
        assert!(Instant::now() - start >= Duration::from_secs(2) - Duration::from_millis(2));
        // Other answers are no evidence either way.
        b.answered(&ticket, Answer::Other);
        assert_eq!(b.report().refused + b.report().accepted, 12);
        assert!((b.report().refused_share() - 1.0).abs() < 1e-9);
    }

    /// Grants `n` writes asked for at once; when each came, from the first ask.
    async fn grants_asked_at_once(b: &Arc<WriteBudget>, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let waiters: Vec<_> = (0..n)
            .map(|_| {
                let b = Arc::clone(b);
                tokio::spawn(async move {
                    let grant = b.slot().await.unwrap();
                    let at = Instant::now() - start;
                    let _sent = grant.send();
                    at
                })
            })
            .collect();
        let mut at = Vec::new();
        for w in waiters {
            at.push(w.await.unwrap());
        }
        at.sort();
        at
    }

    #[tokio::test(start_paused = true)]
    async fn a_cut_lets_the_places_laid_at_the_old_pace_go() {
        // 32 rows ask at once in the start-up ramp: their places are laid up to 0.4 s out.
        let b = budget(250, 60);
        let first = b.slot().await.unwrap().send().unwrap();
        let waiters = {
            let b = Arc::clone(&b);
            tokio::spawn(async move { grants_asked_at_once(&b, 31).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        // Then nearly every write is refused: a cut, to a pace the places were not laid at.
        for _ in 0..40 {
            b.answered(&first, Answer::Refused(Some(Duration::from_millis(1))));
        }
        let r = b.report();
        assert!(r.cuts >= 1, "{r:?}");
        let at = waiters.await.unwrap();
        // At the cut's pace (at most 1/16 of 250 while it climbs back), 31 writes take
        // far longer than the ramp's 0.4 s.
        assert!(at[30] >= Duration::from_secs(1), "{at:?} at {}/s", r.pace);
    }
}

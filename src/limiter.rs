//! One rate limiter for the whole process. Every HTTP attempt, first tries and retries
//! alike, takes a permit from the write or the read budget before it is sent. Writes are
//! paced first by the space's write budget ([`WriteBudget`]: what it announces and
//! accepts), then by `--rate` as a hard ceiling (the governor quota, applied last). A 429
//! delays only its own request; the write budget decides when every write waits. An
//! unreachable space pauses both budgets.
//!
//! Every wait here is on tokio's clock (the governor quota too, through [`TokioClock`]),
//! so a test on a paused clock drives the real limiter.

use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

pub use crate::budget::{Grant, Held, WriteBudget};

/// The governor's clock: tokio's, as time since the limiter was made.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: Instant,
}

impl Clock for TokioClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        Instant::now().saturating_duration_since(self.origin)
    }
}

type Quotas = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Duration>>;

/// One `--rate` quota on tokio's clock.
struct Gate {
    limiter: Quotas,
    clock: TokioClock,
}

impl Gate {
    fn new(per_second: NonZeroU32) -> Gate {
        let clock = TokioClock {
            origin: Instant::now(),
        };
        Gate {
            limiter: RateLimiter::direct_with_clock(smooth_quota(per_second), clock),
            clock,
        }
    }

    async fn until_ready(&self) {
        while let Err(not_until) = self.limiter.check() {
            tokio::time::sleep(not_until.wait_time_from(self.clock.now())).await;
        }
    }
}

/// Which budget a request spends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// PATCH, POST, DELETE: the platform limits these.
    Write,
    /// GET: "effectively unlimited", limited here only to be a good citizen.
    Read,
}

impl Budget {
    fn index(self) -> usize {
        match self {
            Budget::Write => 0,
            Budget::Read => 1,
        }
    }
}

/// Shared by every worker; see the module docs.
pub struct Limiter {
    write: Option<Gate>,
    /// The same `--rate` ceiling again, taken when a write leaves: a write's slot is
    /// granted before its fresh read, so the read's round trip (which varies) sits between
    /// the slot and the send; this second gate keeps the ceiling true at the server.
    write_gate: Option<Gate>,
    read: Option<Gate>,
    /// Until when each budget is held back: [writes, reads]. An unreachable space holds
    /// both.
    paused_until: [Mutex<Option<Instant>>; 2],
    /// The pace of writes below the ceiling: the space's write budget.
    budget: Option<Arc<WriteBudget>>,
    /// `--concurrency`: requests on the wire at most. Taken after every wait a request
    /// makes (a pause, the read gate, a write's slot, a retry's backoff), so a row that
    /// waits holds none; `None` bounds nothing.
    requests: Option<Arc<Semaphore>>,
    /// Rows waiting for a write slot at once: as many as `requests`. A place the write
    /// budget lays ahead counts against the space's count until it is sent, so more rows
    /// under way than requests, all waiting, would leave that many writes of each window
    /// unspent (rows under way are one a request today: this holds if they grow).
    seekers: Option<Semaphore>,
}

/// One request's place among those on the wire ([`Limiter::request_slot`]): held while
/// the request is sent and answered, given back when dropped. A write's fresh read hands
/// its place to the PATCH built from it, so nothing queues between the two.
#[derive(Debug)]
pub struct RequestSlot {
    _permit: Option<OwnedSemaphorePermit>,
}

/// How late, at most, a request may reach the server compared with its neighbours (two
/// processes sharing two cores delay some requests by a few milliseconds).
const JITTER: f64 = 0.010;

/// The quota for `rate` requests per second, built so that no one-second window at the
/// server ever holds more than `rate`, while the mean stays close to it even though
/// waiters wake late.
///
/// GCRA with emission interval `T = 1/Q` and burst `b` lets through at most
/// `Q * w + b - 1` permits in any window of `w` seconds. The server sees our permits shifted
/// by up to `JITTER`, so its one-second window is our `1 + JITTER` window:
/// `Q = (rate - b + 1) / (1 + JITTER)`. A burst above one makes up for late wake-ups (each
/// sleep ends a little late; with a burst of one that lateness is lost on every permit,
/// which cost 26% of the rate at 1000/s): `b = rate / 100 + 1` from 100/s up, 1 below.
/// The mean is then about 98% of `rate`. Governor's default (burst = rate) would let `rate`
/// requests leave at once.
pub fn smooth_quota(per_second: NonZeroU32) -> Quota {
    let rate = per_second.get();
    let burst = if rate >= 100 { rate / 100 + 1 } else { 1 };
    let mean = f64::from(rate - burst + 1) / (1.0 + JITTER);
    let period = Duration::from_secs_f64(1.0 / mean);
    Quota::with_period(period)
        .unwrap_or_else(|| Quota::per_second(per_second))
        .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
}

impl Limiter {
    /// `None` for a budget means unlimited.
    pub fn new(write_per_second: Option<NonZeroU32>, read_per_second: Option<NonZeroU32>) -> Self {
        Limiter {
            write: write_per_second.map(Gate::new),
            write_gate: write_per_second.map(Gate::new),
            read: read_per_second.map(Gate::new),
            paused_until: [Mutex::new(None), Mutex::new(None)],
            budget: None,
            requests: None,
            seekers: None,
        }
    }

    /// At most `n` requests on the wire at once (`--concurrency`), whatever the rows
    /// under way.
    pub fn with_requests_in_flight(mut self, n: usize) -> Self {
        self.requests = Some(Arc::new(Semaphore::new(n.max(1))));
        self.seekers = Some(Semaphore::new(n.max(1)));
        self
    }

    /// Waits for a place among the requests on the wire; take it once nothing else is
    /// left to wait for, right before sending.
    pub async fn request_slot(&self) -> RequestSlot {
        let permit = match &self.requests {
            // The semaphore is never closed: an error cannot happen, and bounds nothing.
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        };
        RequestSlot { _permit: permit }
    }

    /// Paces writes by the space's write budget too (the quota stays the ceiling).
    pub fn with_budget(mut self, budget: Arc<WriteBudget>) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The write budget, for the client to feed each write's answer to.
    pub fn budget(&self) -> Option<&WriteBudget> {
        self.budget.as_deref()
    }

    /// Waits out any pause on `budget`.
    pub async fn unpaused(&self, budget: Budget) {
        loop {
            let until = *self.paused_until[budget.index()]
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => break,
            }
        }
    }

    /// Waits out any pause, then for a read permit.
    pub async fn read(&self) {
        self.unpaused(Budget::Read).await;
        if let Some(gate) = &self.read {
            gate.until_ready().await;
        }
    }

    /// Waits out any pause, then for a write's slot under the `--rate` ceiling and the
    /// space's write budget. `Err` when the space's count has held the job at the reserve
    /// past the outage budget. The budget decides last, so that it decides on the newest
    /// count it has as the write leaves (a queue at the ceiling after it would send writes
    /// it granted on an older one).
    pub async fn write(&self) -> Result<Grant, Held> {
        // Given back once granted: the grant is the write's from then on.
        let _seeking = match &self.seekers {
            Some(s) => s.acquire().await.ok(),
            None => None,
        };
        self.unpaused(Budget::Write).await;
        if let Some(gate) = &self.write {
            gate.until_ready().await;
        }
        match &self.budget {
            Some(b) => b.slot().await,
            None => Ok(Grant::unpaced()),
        }
    }

    /// Waits until a write whose slot was granted may leave without breaking the `--rate`
    /// ceiling in any one-second window. The slots are already spaced by the same
    /// ceiling, so this waits only when read round trips bunched writes together.
    pub async fn send_gate(&self) {
        if let Some(gate) = &self.write_gate {
            gate.until_ready().await;
        }
    }

    /// Holds every new request of `budget` back for `wait`, in every worker. Pauses only grow: a shorter one never cuts a longer one short.
    fn pause_for(&self, budget: Budget, wait: Duration) {
        let until = Instant::now() + wait;
        let mut guard = self.paused_until[budget.index()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|t| t < until) {
            *guard = Some(until);
        }
    }

    /// Holds every new request back for `wait` (the space cannot be reached).
    pub fn pause_all(&self, wait: Duration) {
        self.pause_for(Budget::Write, wait);
        self.pause_for(Budget::Read, wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Grants permits on a fake clock for `secs`, polling every `poll` (a late waiter wakes
    /// up to `poll` after its time): the grant times in microseconds.
    fn simulate(rate: u32, secs: u64, poll: Duration) -> Vec<u64> {
        use governor::clock::{Clock, FakeRelativeClock, Reference};
        let clock = FakeRelativeClock::default();
        let limiter = RateLimiter::direct_with_clock(
            smooth_quota(NonZeroU32::new(rate).unwrap()),
            clock.clone(),
        );
        let start = clock.now();
        let mut grants = Vec::new();
        while Duration::from(clock.now().duration_since(start)) < Duration::from_secs(secs) {
            while limiter.check().is_ok() {
                grants.push(Duration::from(clock.now().duration_since(start)).as_micros() as u64);
            }
            clock.advance(poll);
        }
        grants
    }

    fn max_in_window(grants: &[u64], micros: u64) -> usize {
        let mut best = 0;
        let mut lo = 0;
        for hi in 0..grants.len() {
            while grants[hi] - grants[lo] >= micros {
                lo += 1;
            }
            best = best.max(hi - lo + 1);
        }
        best
    }

    #[test]
    fn no_one_second_window_exceeds_the_rate_and_the_mean_stays_close() {
        for rate in [1u32, 10, 50, 99, 100, 500, 1000, 1380, 5000] {
            // Waiters that wake on time, and waiters that wake 300 us late.
            for poll in [Duration::from_micros(10), Duration::from_micros(300)] {
                let grants = simulate(rate, 5, poll);
                // Our window is one second plus the jitter the server may see.
                let max = max_in_window(&grants, 1_010_000);
                assert!(
                    max <= rate as usize,
                    "rate {rate}, poll {poll:?}: {max} in 1.01 s"
                );
                if rate >= 100 {
                    let mean = (grants.len() - 1) as f64 * 1e6
                        / (grants[grants.len() - 1] - grants[0]) as f64;
                    assert!(
                        mean >= 0.97 * f64::from(rate),
                        "rate {rate}, poll {poll:?}: mean {mean:.1}"
                    );
                }
            }
        }
    }

    #[test]
    fn low_rates_never_burst() {
        let clock = governor::clock::FakeRelativeClock::default();
        let limiter =
            RateLimiter::direct_with_clock(smooth_quota(NonZeroU32::new(50).unwrap()), clock);
        assert!(limiter.check().is_ok());
        assert!(
            limiter.check().is_err(),
            "a burst at 50/s would let the rate spike"
        );
    }

    #[test]
    fn the_burst_is_a_hundredth_of_the_rate_plus_one() {
        for (rate, burst) in [(1u32, 1u32), (99, 1), (100, 2), (1000, 11), (1380, 14)] {
            let q = smooth_quota(NonZeroU32::new(rate).unwrap());
            assert_eq!(q.burst_size().get(), burst, "rate {rate}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_holds_its_budget_and_only_ever_grows() {
        let limiter = Limiter::new(None, None);
        let start = Instant::now();
        limiter.read().await;
        assert_eq!(Instant::now(), start, "no pause: at once");
        limiter.pause_for(Budget::Write, Duration::from_secs(5));
        // A shorter pause asked later does not cut the longer one short.
        limiter.pause_for(Budget::Write, Duration::from_secs(1));
        // Reads go on while writes are held back.
        limiter.read().await;
        assert_eq!(Instant::now(), start, "a write pause holds no read");
        drop(limiter.write().await.unwrap());
        assert_eq!(Instant::now() - start, Duration::from_secs(5));
        drop(limiter.write().await.unwrap());
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(5),
            "the pause is over"
        );
        // A longer one asked during a pause extends it.
        limiter.pause_for(Budget::Read, Duration::from_secs(2));
        limiter.pause_for(Budget::Read, Duration::from_secs(3));
        drop(limiter.write().await.unwrap());
        assert_eq!(
            Instant::now() - start,
            Duration::from_secs(5),
            "a read pause holds no write"
        );
        limiter.read().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(8));
        // An unreachable space holds both.
        limiter.pause_all(Duration::from_secs(1));
        drop(limiter.write().await.unwrap());
        assert_eq!(Instant::now() - start, Duration::from_secs(9));
        limiter.pause_all(Duration::from_secs(1));
        limiter.read().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(10));
    }
}

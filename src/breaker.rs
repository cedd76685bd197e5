//! One circuit breaker for the space. When connections fail (DNS, refused, reset, timeout)
//! every row would retry on its own and the job would hammer a space that is not there; the
//! breaker turns those failures into one decision for the whole job instead:
//!
//! - one failed connection among answers is that connection's (a reset, a proxy's drop):
//!   its own request retries it after its backoff, and nothing else waits;
//! - a second before any answer is the space's: it pauses every worker (through the
//!   limiter) for an exponentially growing wait, and while the space is failing only one
//!   request at a time goes out (a probe), so a dead space sees about one connection a
//!   backoff step;
//! - any answer from the server (even a 500) closes the breaker;
//! - once the space has failed for longer than the outage limit, the job stops, like it
//!   does on refused credentials: rows not attempted are `skipped`, exit 3, resumable.
//!
//! The decisions are plain functions of the failure count and the clock, so tests can pin
//! them down without a network.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// What the job should do after a connection failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// One failed connection among answers: only its own request waits (its backoff).
    Alone,
    /// Hold every request back this long, then probe again.
    Pause(Duration),
    /// The space has been unreachable for longer than the outage limit: stop the job.
    GiveUp { failing_for: Duration },
}

#[derive(Debug, Default)]
struct State {
    /// When the current run of failures began; `None` while the space answers.
    failing_since: Option<Instant>,
    /// Failures in the current run.
    failures: u32,
    /// When the outage was last said in the log.
    said_at: Option<Instant>,
}

/// An outage is said in the log once it has lasted this long, then at most this often (and
/// at least at every probe, which comes within the retry policy's longest wait).
pub const SAY_EVERY: Duration = Duration::from_secs(5);

/// The probe slot, held: while the breaker is open, only its holder sends.
#[derive(Debug)]
pub struct Probe(#[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>);

/// Shared by every request of a job.
#[derive(Debug)]
pub struct Breaker {
    state: Mutex<State>,
    /// `state.failing_since.is_some()`, readable without the lock: every request asks, and
    /// a healthy space must not make tens of thousands of requests a second queue on it.
    open: AtomicBool,
    /// A connection failed since the last answer (the breaker still closed): the next
    /// failure before an answer opens it. Atomic for the same reason as `open`.
    suspect: AtomicBool,
    /// While open, requests go out one at a time.
    probe: Arc<tokio::sync::Mutex<()>>,
    min_pause: Duration,
    max_pause: Duration,
    budget: Duration,
}

impl Breaker {
    pub fn new(min_pause: Duration, max_pause: Duration, budget: Duration) -> Breaker {
        Breaker {
            state: Mutex::new(State::default()),
            open: AtomicBool::new(false),
            suspect: AtomicBool::new(false),
            probe: Arc::new(tokio::sync::Mutex::new(())),
            min_pause,
            max_pause: max_pause.max(min_pause),
            budget,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// True while the space is failing: requests should go out one at a time.
    pub fn is_open(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The probe slot: held for one attempt while the breaker is open (a write's fresh
    /// read keeps it for the PATCH built from it, with its place on the wire).
    pub async fn probe(&self) -> Probe {
        Probe(Arc::clone(&self.probe).lock_owned().await)
    }

    /// The server answered: the space is reachable.
    pub fn on_answer(&self) {
        if self.suspect.load(Ordering::Acquire) {
            self.suspect.store(false, Ordering::Release);
        }
        if !self.is_open() {
            return;
        }
        let mut state = self.state();
        *state = State::default();
        self.open.store(false, Ordering::Release);
    }

    /// How long the space has failed, when that is worth a line in the log now: the
    /// outage has lasted [`SAY_EVERY`] and was not said within the last one. Off a
    /// terminal nothing else moves while every request waits.
    pub fn due_to_say(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut state = self.state();
        let failing_for = now.saturating_duration_since(state.failing_since?);
        let quiet = state
            .said_at
            .is_none_or(|t| now.saturating_duration_since(t) >= SAY_EVERY);
        if failing_for < SAY_EVERY || !quiet {
            return None;
        }
        state.said_at = Some(now);
        Some(failing_for)
    }

    /// How long the space may fail before the job stops.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// A connection failed: whether only its request waits (the first since an answer),
    /// how long everyone waits, or whether to give up.
    pub fn on_failure(&self) -> Verdict {
        if !self.is_open() && !self.suspect.swap(true, Ordering::AcqRel) {
            return Verdict::Alone;
        }
        let now = Instant::now();
        let mut state = self.state();
        let since = *state.failing_since.get_or_insert(now);
        self.open.store(true, Ordering::Release);
        state.failures = state.failures.saturating_add(1);
        let failing_for = now.saturating_duration_since(since);
        if failing_for >= self.budget {
            return Verdict::GiveUp { failing_for };
        }
        let exponent = state.failures.saturating_sub(1).min(16);
        let pause = self
            .min_pause
            .saturating_mul(1u32 << exponent)
            .min(self.max_pause)
            // Never pause past the budget: the last probe lands when it runs out.
            .min(self.budget - failing_for);
        Verdict::Pause(pause)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pauses_grow_then_the_budget_stops_the_job() {
        let ms = Duration::from_millis;
        let b = Breaker::new(ms(200), ms(1000), ms(3000));
        assert!(!b.is_open());
        assert_eq!(
            b.on_failure(),
            Verdict::Alone,
            "one failure is its connection's"
        );
        assert!(!b.is_open());
        let mut pauses = Vec::new();
        loop {
            match b.on_failure() {
                Verdict::Pause(p) => {
                    assert!(b.is_open());
                    pauses.push(p);
                    tokio::time::advance(p).await;
                }
                Verdict::GiveUp { failing_for } => {
                    assert_eq!(failing_for, ms(3000));
                    break;
                }
                Verdict::Alone => panic!("open: every failure is the space's"),
            }
        }
        // 200, 400, 800, then capped at 1000, and the last one cut to end on the budget.
        assert_eq!(pauses, vec![ms(200), ms(400), ms(800), ms(1000), ms(600)]);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_said_once_it_lasts_then_at_most_every_few_seconds() {
        let b = Breaker::new(
            Duration::from_millis(100),
            Duration::from_secs(10),
            Duration::from_secs(60),
        );
        assert_eq!(b.due_to_say(), None, "no outage");
        assert_eq!(b.on_failure(), Verdict::Alone);
        let _ = b.on_failure();
        assert_eq!(b.due_to_say(), None, "a moment's failure");
        tokio::time::advance(SAY_EVERY - Duration::from_millis(1)).await;
        assert_eq!(b.due_to_say(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.due_to_say(), Some(SAY_EVERY));
        assert_eq!(b.due_to_say(), None, "just said");
        tokio::time::advance(SAY_EVERY - Duration::from_millis(1)).await;
        assert_eq!(b.due_to_say(), None);
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(b.due_to_say(), Some(SAY_EVERY * 2));
        // Answered: a new outage starts its own count and is said afresh.
        b.on_answer();
        assert_eq!(b.due_to_say(), None);
        assert_eq!(b.on_failure(), Verdict::Alone);
        let _ = b.on_failure();
        tokio::time::advance(SAY_EVERY).await;
        assert_eq!(b.due_to_say(), Some(SAY_EVERY));
        assert_eq!(b.budget(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_closes_the_breaker_and_restarts_the_count() {
        let ms = Duration::from_millis;
        let b = Breaker::new(ms(100), ms(10_000), ms(1000));
        assert_eq!(b.on_failure(), Verdict::Alone);
        assert_eq!(b.on_failure(), Verdict::Pause(ms(100)));
        assert_eq!(b.on_failure(), Verdict::Pause(ms(200)));
        tokio::time::advance(ms(900)).await;
        b.on_answer();
        assert!(!b.is_open());
        // The outage clock starts again: 900 ms of earlier failure do not count.
        tokio::time::advance(ms(900)).await;
        assert_eq!(b.on_failure(), Verdict::Alone);
        assert_eq!(b.on_failure(), Verdict::Pause(ms(100)));
    }

    #[test]
    fn a_lone_failure_among_answers_is_its_connection_s_and_two_in_a_row_the_space_s() {
        let ms = Duration::from_millis;
        let b = Breaker::new(ms(100), ms(10_000), ms(1000));
        // A drop now and then, answers between: nothing opens, nothing pauses.
        for _ in 0..5 {
            assert_eq!(b.on_failure(), Verdict::Alone);
            assert!(!b.is_open());
            b.on_answer();
        }
        // Two with no answer between: the space is failing.
        assert_eq!(b.on_failure(), Verdict::Alone);
        assert_eq!(b.on_failure(), Verdict::Pause(ms(100)));
        assert!(b.is_open());
        b.on_answer();
        assert!(!b.is_open());
        assert_eq!(
            b.on_failure(),
            Verdict::Alone,
            "closed by the answer, afresh"
        );
    }
}

//! The simulated space: fixed windows as the platform counts them, every write (the
//! job's and production's) counted at its arrival, and the headers an answer carries,
//! honest or not.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use tokio::time::Instant;

/// How the space (or a proxy before it) announces its count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Headers {
    /// `X-RateLimit-*`, the reset in seconds.
    Honest,
    /// The reset as a Unix time, with a `Date` from the same (skewed) clock.
    HonestUnix,
    /// The IETF fields.
    HonestIetf,
    /// Both families, agreeing.
    HonestBoth,
    /// Honest, the reset later than the truth (a clock ahead): the count outlives its
    /// window.
    ResetAhead,
    /// Honest on about half the answers, none on the others.
    SomeOnly,
    /// Honest on the first answers, then none.
    Stopping,
    Absent,
    /// The reset a Unix time from a clock behind ours, the `Date` from ours (a proxy's).
    ResetPast,
    /// The reset always zero.
    ResetZero,
    /// The reset far beyond any window (two minutes to two hours).
    ResetFarFuture,
    /// The remaining count anywhere in 0..=limit.
    RemainingJumps,
    /// The remaining count above the limit.
    RemainingAboveLimit,
    /// The remaining count always the whole limit (a lie).
    RemainingFull,
    /// The limit announced anywhere from half to twice the truth.
    LimitChanging,
    /// `X-RateLimit-*` honest, the IETF field another count.
    FamiliesDisagree,
}

impl Headers {
    pub const ALL: [Headers; 16] = [
        Headers::Honest,
        Headers::HonestUnix,
        Headers::HonestIetf,
        Headers::HonestBoth,
        Headers::ResetAhead,
        Headers::SomeOnly,
        Headers::Stopping,
        Headers::Absent,
        Headers::ResetPast,
        Headers::ResetZero,
        Headers::ResetFarFuture,
        Headers::RemainingJumps,
        Headers::RemainingAboveLimit,
        Headers::RemainingFull,
        Headers::LimitChanging,
        Headers::FamiliesDisagree,
    ];

    pub fn name(self) -> String {
        format!("{self:?}")
    }

    pub fn from_name(name: &str) -> Option<Headers> {
        Headers::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
    }

    /// Every count announced, when one is, is the truth (the reset may be late).
    pub fn counts_are_honest(self) -> bool {
        self.always_honest() || matches!(self, Headers::SomeOnly | Headers::Stopping)
    }

    /// Every answer carries the truth: the job, kept above the reserve, is never refused.
    pub fn always_honest(self) -> bool {
        matches!(
            self,
            Headers::Honest
                | Headers::HonestUnix
                | Headers::HonestIetf
                | Headers::HonestBoth
                | Headers::ResetAhead
        )
    }

    /// No count this behaviour sends can be believed.
    pub fn never_believable(self) -> bool {
        matches!(
            self,
            Headers::ResetPast
                | Headers::ResetFarFuture
                | Headers::RemainingAboveLimit
                | Headers::FamiliesDisagree
        )
    }
}

/// One write the space counted.
#[derive(Debug, Clone)]
pub struct Counted {
    pub at: Instant,
    pub window: u64,
    pub admitted: bool,
    /// Remaining in the window after it.
    pub remaining: u64,
}

/// An answer's headers and whether they carried an honest count.
pub struct Reply {
    pub counted: Counted,
    pub headers: HeaderMap,
    /// The count the headers carry is the true one.
    pub honest_count: bool,
    pub retry_after: Duration,
}

pub struct Space {
    pub start: Instant,
    pub window: Duration,
    /// Windows start at `start - phase`.
    pub phase: Duration,
    pub limit: u64,
    pub headers: Headers,
    /// The space's clock against ours, seconds (the `Date` it sends).
    pub skew_secs: i64,
    /// Answers after which `Stopping` stops.
    pub stop_after: u64,
    pub rng: fastrand::Rng,
    used: Vec<u64>,
    answers: u64,
    pub production_sent: u64,
    pub production_refused: u64,
}

/// Our wall clock at the simulation's start.
pub const EPOCH_SECS: u64 = 1_800_000_000;

impl Space {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        window: Duration,
        phase: Duration,
        limit: u64,
        headers: Headers,
        skew_secs: i64,
        stop_after: u64,
        seed: u64,
    ) -> Space {
        Space {
            start: Instant::now(),
            window,
            phase,
            limit,
            headers,
            skew_secs,
            stop_after,
            rng: fastrand::Rng::with_seed(seed ^ 0x5eed),
            used: Vec::new(),
            answers: 0,
            production_sent: 0,
            production_refused: 0,
        }
    }

    fn index_and_left(&self, now: Instant) -> (u64, Duration) {
        let since = now.duration_since(self.start) + self.phase;
        let w = self.window.as_nanos();
        let index = (since.as_nanos() / w) as u64;
        let left = Duration::from_nanos((w - since.as_nanos() % w) as u64);
        (index, left)
    }

    fn count(&mut self, now: Instant) -> (Counted, Duration) {
        let (index, left) = self.index_and_left(now);
        let i = index as usize;
        if self.used.len() <= i {
            self.used.resize(i + 1, 0);
        }
        let admitted = self.used[i] < self.limit;
        self.used[i] += u64::from(admitted);
        (
            Counted {
                at: now,
                window: index,
                admitted,
                remaining: self.limit - self.used[i],
            },
            left,
        )
    }

    /// Our wall clock now (the simulation's start is `EPOCH_SECS`).
    pub fn our_wall(&self, now: Instant) -> std::time::SystemTime {
        std::time::UNIX_EPOCH + Duration::from_secs(EPOCH_SECS) + now.duration_since(self.start)
    }

    /// One production write, counted.
    pub fn production(&mut self, now: Instant) {
        let (c, _) = self.count(now);
        self.production_sent += 1;
        self.production_refused += u64::from(!c.admitted);
    }

    /// One job write arriving now: counted, and its answer's headers.
    pub fn job_write(&mut self, now: Instant) -> Reply {
        let (counted, left) = self.count(now);
        self.answers += 1;
        let reset = left.as_secs_f64().ceil() as u64;
        let (headers, honest_count) = self.headers_for(&counted, reset, now);
        Reply {
            counted,
            headers,
            honest_count,
            retry_after: Duration::from_secs(reset.max(1)),
        }
    }

    fn headers_for(&mut self, c: &Counted, reset: u64, now: Instant) -> (HeaderMap, bool) {
        let mut h = HeaderMap::new();
        let (limit, remaining) = (self.limit, c.remaining);
        let space_secs = (self.our_wall(now).duration_since(std::time::UNIX_EPOCH))
            .map_or(0, |d| d.as_secs()) as i64
            + self.skew_secs;
        let honest = match self.headers {
            Headers::Honest => x(&mut h, limit, remaining, reset),
            Headers::HonestUnix => {
                date(&mut h, space_secs);
                x(&mut h, limit, remaining, space_secs as u64 + reset)
            }
            Headers::HonestIetf => ietf(&mut h, limit, remaining, reset, self.window),
            Headers::HonestBoth => {
                x(&mut h, limit, remaining, reset);
                ietf(&mut h, limit, remaining, reset, self.window)
            }
            Headers::ResetAhead => x(&mut h, limit, remaining, reset + self.skew_secs as u64),
            Headers::SomeOnly => self.rng.bool() && x(&mut h, limit, remaining, reset),
            Headers::Stopping => {
                self.answers <= self.stop_after && x(&mut h, limit, remaining, reset)
            }
            Headers::Absent => false,
            Headers::ResetPast => {
                let ours = space_secs - self.skew_secs;
                date(&mut h, ours);
                x(&mut h, limit, remaining, space_secs as u64 + reset);
                false
            }
            Headers::ResetZero => {
                x(&mut h, limit, remaining, 0);
                false
            }
            Headers::ResetFarFuture => {
                let far = self.rng.u64(121..=7200);
                x(&mut h, limit, remaining, far);
                false
            }
            Headers::RemainingJumps => {
                let r = self.rng.u64(0..=limit);
                x(&mut h, limit, r, reset) && r == remaining
            }
            Headers::RemainingAboveLimit => {
                x(&mut h, limit, limit + 1 + self.rng.u64(0..limit), reset);
                false
            }
            Headers::RemainingFull => {
                x(&mut h, limit, limit, reset);
                false
            }
            Headers::LimitChanging => {
                let shown = (limit as f64 * (0.5 + 1.5 * self.rng.f64())).max(1.0) as u64;
                x(&mut h, shown, remaining.min(shown), reset);
                false
            }
            Headers::FamiliesDisagree => {
                x(&mut h, limit, remaining, reset);
                let other = (remaining + 1 + self.rng.u64(0..limit)) % (limit + 1);
                ietf(&mut h, limit, other, reset, self.window);
                false
            }
        };
        (h, honest)
    }
}

fn set(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

fn x(h: &mut HeaderMap, limit: u64, remaining: u64, reset: u64) -> bool {
    set(h, "x-ratelimit-limit", limit.to_string());
    set(h, "x-ratelimit-remaining", remaining.to_string());
    set(h, "x-ratelimit-reset", reset.to_string());
    true
}

fn ietf(h: &mut HeaderMap, limit: u64, remaining: u64, reset: u64, window: Duration) -> bool {
    set(
        h,
        "ratelimit",
        format!("\"default\";r={remaining};t={reset}"),
    );
    set(
        h,
        "ratelimit-policy",
        format!("\"default\";q={limit};w={}", window.as_secs().max(1)),
    );
    true
}

fn date(h: &mut HeaderMap, unix_secs: i64) {
    let at = std::time::UNIX_EPOCH + Duration::from_secs(unix_secs.max(0) as u64);
    set(h, "date", httpdate::fmt_http_date(at));
}

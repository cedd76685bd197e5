//! Retry rules as pure functions: how long to wait, and what a `Retry-After` header means.
//! Which failures are worth another try is [`crate::failure`]'s table; the loop itself
//! lives in the client.

use std::time::{Duration, SystemTime};

use backon::ExponentialBuilder;

/// How hard to retry one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    /// The first backoff delay; it doubles each time, with jitter.
    pub min_delay: Duration,
    /// No single backoff wait is longer.
    pub max_delay: Duration,
    /// One request stops retrying once its attempts and waits have taken this long (the
    /// last attempt may still run its own timeout).
    pub max_total: Duration,
    /// A server's `Retry-After` is honoured up to this long; no single wait is longer.
    pub retry_after_cap: Duration,
    /// How long the space may be unreachable (every connection failing) before the job
    /// stops, like it does for refused credentials (the config key `outage_budget_secs`).
    pub max_outage: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 6,
            min_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
            max_total: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(60),
            max_outage: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The exponential backoff with full jitter that `backon` drives.
    pub fn backoff(&self) -> ExponentialBuilder {
        ExponentialBuilder::default()
            .with_min_delay(self.min_delay)
            .with_max_delay(self.max_delay)
            .with_factor(2.0)
            .with_jitter()
            .with_max_times(self.max_attempts.saturating_sub(1) as usize)
            .with_total_delay(Some(self.max_total))
    }

    /// The wait before the next try, or `None` to give up.
    ///
    /// The server's `Retry-After` when it gave one, else the backoff's own delay; never
    /// shorter than `min_delay` (a past date or `0.000001` must not turn into a burst of
    /// retries) and never longer than `retry_after_cap`. `spent` is how long this request
    /// has already taken. The backoff's own wait must fit within `max_total`; a wait the
    /// server asked for is honoured (up to the cap) whenever the request is still within
    /// `max_total`, so a `Retry-After` at or beyond the cap is always followed by one more
    /// attempt, and one request takes `max_total + retry_after_cap` at most. `None`
    /// (backoff exhausted) stays `None`.
    pub fn next_delay(
        &self,
        retry_after: Option<Duration>,
        backoff: Option<Duration>,
        spent: Duration,
    ) -> Option<Duration> {
        let base = backoff?;
        let wait = retry_after
            .unwrap_or(base)
            .max(self.min_delay)
            .min(self.retry_after_cap.max(self.min_delay));
        let fits = spent + wait <= self.max_total;
        let asked = retry_after.is_some() && spent < self.max_total;
        (fits || asked).then_some(wait)
    }
}

/// `Retry-After` as delta-seconds or an HTTP date; `None` when absent or unreadable.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(1e6)));
    }
    let when = httpdate::parse_http_date(value).ok()?;
    Some(when.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_retry_after_beyond_the_cap_waits_the_cap_then_tries_again() {
        let policy = RetryPolicy::default();
        let step = Some(Duration::from_millis(200));
        let huge = Some(Duration::from_secs(999_999));
        // The cap equals the total budget by default: the wait still happens.
        let early = Duration::from_millis(3);
        assert_eq!(
            policy.next_delay(huge, step, early),
            Some(policy.retry_after_cap)
        );
        // Any Retry-After within the budget is honoured, even when it runs past it.
        let late = Duration::from_secs(59);
        let asked = Some(Duration::from_secs(30));
        assert_eq!(
            policy.next_delay(asked, step, late),
            Some(Duration::from_secs(30))
        );
        // Past the budget, nothing more; the backoff's own wait must fit.
        assert_eq!(policy.next_delay(huge, step, policy.max_total), None);
        assert_eq!(
            policy.next_delay(None, Some(Duration::from_secs(2)), late),
            None
        );
        assert_eq!(
            policy.next_delay(None, Some(Duration::from_secs(1)), late),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            policy.next_delay(huge, None, early),
            None,
            "backoff exhausted"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("3", now), Some(Duration::from_secs(3)));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(7));
        assert_eq!(parse_retry_after(&later, now), Some(Duration::from_secs(7)));
        let past = httpdate::fmt_http_date(now - Duration::from_secs(7));
        assert_eq!(parse_retry_after(&past, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("soon", now), None);
        assert_eq!(
            parse_retry_after(" 1.5 ", now),
            Some(Duration::from_millis(1500))
        );
        for refused in ["-1.5", "-1", "inf", "NaN", "", "1e400"] {
            assert_eq!(parse_retry_after(refused, now), None, "{refused}");
        }
        // Absurd but finite values are capped here, then by the policy.
        assert_eq!(
            parse_retry_after("1e300", now),
            Some(Duration::from_secs(1_000_000))
        );
    }

    /// Property test (seeded, so a failure reproduces): every form a server may send.
    #[test]
    fn retry_after_properties_hold_for_many_values() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let mut rng = fastrand::Rng::with_seed(11);
        for _ in 0..5_000 {
            // Whole seconds: taken as they are (the policy caps them later).
            let n = rng.u64(..1_000_000_000_000);
            assert_eq!(
                parse_retry_after(&n.to_string(), now),
                Some(Duration::from_secs(n))
            );
            // Fractions: non-negative ones read and capped at 10^6 s; negative ones refused.
            let v = rng.f64() * 2e6;
            let want = Duration::from_secs_f64(v.min(1e6));
            assert_eq!(parse_retry_after(&format!(" {v} "), now), Some(want), "{v}");
            assert_eq!(
                parse_retry_after(&format!("-{}", v + 1e-3), now),
                None,
                "{v}"
            );
            // Dates: the time left until then, never negative.
            let offset = rng.i64(-1_000_000..1_000_000);
            let when = if offset >= 0 {
                now + Duration::from_secs(offset as u64)
            } else {
                now - Duration::from_secs(offset.unsigned_abs())
            };
            let date = httpdate::fmt_http_date(when);
            let left = Duration::from_secs(offset.max(0) as u64);
            assert_eq!(parse_retry_after(&date, now), Some(left), "{date}");
            // Noise: never a panic, and never a wait over the cap unless it was a count.
            let noise: String = (0..rng.usize(..12))
                .map(|_| b"0123456789.-+eEinfNa x"[rng.usize(..22)] as char)
                .collect();
            if let Some(d) = parse_retry_after(&noise, now) {
                let whole = noise.trim().parse::<u64>().is_ok();
                assert!(whole || d <= Duration::from_secs(1_000_000), "{noise:?}");
            }
        }
    }

    #[test]
    fn retry_after_is_capped_floored_and_exhaustion_wins() {
        let p = RetryPolicy::default();
        let zero = Duration::ZERO;
        let big = Some(Duration::from_secs(3600));
        assert_eq!(
            p.next_delay(big, Some(Duration::from_millis(5)), zero),
            Some(p.retry_after_cap)
        );
        assert_eq!(p.next_delay(big, None, zero), None);
        let d = Some(Duration::from_millis(250));
        assert_eq!(p.next_delay(None, d, zero), d);
        // A past date or a tiny value still waits the minimum backoff.
        for tiny in [Duration::ZERO, Duration::from_micros(1)] {
            assert_eq!(p.next_delay(Some(tiny), d, zero), Some(p.min_delay));
        }
        let ra = Some(Duration::from_secs(3));
        assert_eq!(p.next_delay(ra, d, zero), Some(Duration::from_secs(3)));
    }

    #[test]
    fn a_request_never_starts_a_wait_past_its_total_budget() {
        let p = RetryPolicy::default();
        let ra = Some(p.retry_after_cap);
        let d = Some(Duration::from_millis(250));
        assert_eq!(p.next_delay(ra, d, Duration::ZERO), ra);
        assert_eq!(p.next_delay(ra, d, Duration::from_millis(1)), ra);
        assert_eq!(p.next_delay(ra, d, p.max_total), None);
        let left = p.max_total - Duration::from_secs(2);
        assert_eq!(p.next_delay(None, d, left), d);
        assert_eq!(p.next_delay(None, Some(Duration::from_secs(3)), left), None);
        // Adding up every wait of a request that always hears the cap: one wait at most.
        let mut spent = Duration::ZERO;
        let mut waits = 0;
        while let Some(w) = p.next_delay(Some(Duration::from_secs(999_999_999)), d, spent) {
            spent += w;
            waits += 1;
        }
        assert_eq!((waits, spent), (1, p.retry_after_cap));
    }

    #[test]
    fn backoff_never_exceeds_its_cap_or_attempts() {
        use backon::BackoffBuilder;
        let p = RetryPolicy {
            max_total: Duration::from_secs(3600),
            ..RetryPolicy::default()
        };
        let delays: Vec<Duration> = p.backoff().build().collect();
        assert_eq!(delays.len() as u32, p.max_attempts - 1);
        // Jitter adds up to one more delay's worth on top of the capped base.
        assert!(delays.iter().all(|d| *d <= p.max_delay * 2), "{delays:?}");
    }
}

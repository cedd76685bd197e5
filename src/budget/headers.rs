//! The space's own count of its write budget, read from an answer's headers.
//!
//! The platform says every answer carries the limit and the remaining count in `X-`
//! headers whose names it does not document, so both families in common use are read:
//!
//! - `X-RateLimit-Limit` / `X-RateLimit-Remaining` / `X-RateLimit-Reset` (and the same
//!   without `X-`);
//! - the IETF fields: `RateLimit: "default";r=50;t=30` with
//!   `RateLimit-Policy: "default";q=100;w=10`, and the earlier draft's
//!   `RateLimit: limit=100, remaining=50, reset=30`.
//!
//! A proxy or a broken server may send anything, so the values are untrusted input:
//! anything implausible is refused whole ([`Parsed::Implausible`]), and the caller then
//! trusts no count until a plausible one comes: a remaining count above the limit, a
//! window beyond two minutes, a reset given as a time already past (a clock that disagrees
//! with ours: the window cannot be placed), or the two families both present and
//! disagreeing. A reset given as a Unix time is read against the answer's own `Date`
//! when it has one (the server's clock against itself: a skew between the two machines
//! cancels out), else against ours.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::header::HeaderMap;

/// What one answer says about the space's write budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Announcement {
    /// Writes the window allows.
    pub limit: u64,
    /// Writes left in the current window, as the server counted when it answered.
    pub remaining: u64,
    /// Until the window resets, from when the answer arrived.
    pub reset: Duration,
    /// The window's length, when the server says it (`w=` of `RateLimit-Policy`).
    pub window: Option<Duration>,
}

/// The headers of one answer, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// No limit/remaining/reset triple.
    Absent,
    Seen(Announcement),
    /// A triple whose values cannot be believed: why, for one warning.
    Implausible(String),
}

/// A limit above this is not a per-space write limit (the platform's is 13,800).
pub const MAX_LIMIT: u64 = 1_000_000;
/// A window that resets later than this is not believed: the platform's window is 10 s, and
/// a count that would hold for longer paces the job by a number it cannot see move.
pub const MAX_RESET: Duration = Duration::from_secs(120);
/// A reset above this many seconds is a Unix time, not a delay.
const UNIX_TIME_ABOVE: u64 = 1_000_000_000;

/// Reads the triple from `headers`, `now` being this machine's wall clock (for a reset
/// given as a Unix time, when the answer has no `Date`).
pub fn parse(headers: &HeaderMap, now: SystemTime) -> Parsed {
    let clock = header(headers, "date")
        .and_then(|d| httpdate::parse_http_date(d).ok())
        .unwrap_or(now);
    let read = |raw: Option<Raw<'_>>| {
        raw.map(|(limit, remaining, reset, window)| check(limit, remaining, reset, window, clock))
    };
    let x = read(x_ratelimit(headers));
    let ietf = read(ietf(headers));
    match (x, ietf) {
        (None, None) => Parsed::Absent,
        (Some(Err(why)), _) | (_, Some(Err(why))) => Parsed::Implausible(why),
        (Some(Ok(a)), Some(Ok(b))) if (a.limit, a.remaining) != (b.limit, b.remaining) => {
            Parsed::Implausible(format!(
                "the X-RateLimit headers say {} of {} left, the RateLimit field {} of {}",
                a.remaining, a.limit, b.remaining, b.limit
            ))
        }
        (Some(Ok(a)), _) | (None, Some(Ok(a))) => Parsed::Seen(a),
    }
}

/// Raw values: limit, remaining, reset, window (all as sent, checked later).
type Raw<'a> = (&'a str, &'a str, &'a str, Option<&'a str>);

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap_or("(not text)"))
}

/// `X-RateLimit-*` or `RateLimit-*` as three headers. A limit such as `100, 100;w=10`
/// (a policy after the number) counts by its first number.
fn x_ratelimit(headers: &HeaderMap) -> Option<Raw<'_>> {
    for prefix in ["x-ratelimit-", "ratelimit-"] {
        let get = |what: &str| header(headers, &format!("{prefix}{what}"));
        if let (Some(limit), Some(remaining), Some(reset)) =
            (get("limit"), get("remaining"), get("reset"))
        {
            let head = |v: &str| -> usize { v.find([',', ';']).unwrap_or(v.len()) };
            return Some((
                &limit[..head(limit)],
                &remaining[..head(remaining)],
                &reset[..head(reset)],
                None,
            ));
        }
    }
    None
}

/// The IETF `RateLimit` field, with `RateLimit-Policy` for the quota when the field itself
/// does not carry it. Only the first item of each is read.
fn ietf(headers: &HeaderMap) -> Option<Raw<'_>> {
    let field = header(headers, "ratelimit")?;
    let item = field.split(',').next().unwrap_or("");
    // The earlier draft: `limit=100, remaining=50, reset=30` (one item per key).
    let older = |key: &str| {
        field
            .split(',')
            .filter_map(|p| p.trim().split_once('='))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(key))
            .map(|(_, v)| v.trim())
    };
    if let (Some(limit), Some(remaining), Some(reset)) =
        (older("limit"), older("remaining"), older("reset"))
    {
        return Some((limit, remaining, reset, None));
    }
    let remaining = param(item, "r")?;
    let reset = param(item, "t").unwrap_or("0");
    let policy = header(headers, "ratelimit-policy")?;
    let policy = policy.split(',').next().unwrap_or("");
    let limit = param(policy, "q")?;
    Some((limit, remaining, reset, param(policy, "w")))
}

/// `key=value` among an item's `;` parameters.
fn param<'a>(item: &'a str, key: &str) -> Option<&'a str> {
    item.split(';')
        .skip(1)
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim())
}

fn number(what: &str, value: &str) -> Result<u64, String> {
    value.trim().parse::<u64>().map_err(|_| {
        format!(
            "{what} {} is not a whole number of zero or more",
            crate::inert::text(value, 40)
        )
    })
}

fn check(
    limit: &str,
    remaining: &str,
    reset: &str,
    window: Option<&str>,
    now: SystemTime,
) -> Result<Announcement, String> {
    let limit = number("limit", limit)?;
    let remaining = number("remaining", remaining)?;
    let reset = number("reset", reset)?;
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!("limit {limit} is outside 1..={MAX_LIMIT}"));
    }
    if remaining > limit {
        return Err(format!("remaining {remaining} is above the limit {limit}"));
    }
    let reset = if reset > UNIX_TIME_ABOVE {
        // The clock says when a whole second started: a reset in the second it names is
        // now, one before it is past (a clock that disagrees: the window cannot be placed).
        let at = UNIX_EPOCH + Duration::from_secs(reset);
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if reset < second {
            return Err(format!(
                "the window reset at Unix time {reset}, {}s before the answer's clock",
                second - reset
            ));
        }
        at.duration_since(now).unwrap_or(Duration::ZERO)
    } else {
        Duration::from_secs(reset)
    };
    if reset > MAX_RESET {
        return Err(format!(
            "the window resets in {}s, beyond {}s",
            reset.as_secs(),
            MAX_RESET.as_secs()
        ));
    }
    let window = match window {
        Some(w) => {
            let w = number("window", w)?;
            if w == 0 || Duration::from_secs(w) > MAX_RESET {
                return Err(format!(
                    "window {w}s is outside 1s..={}s",
                    MAX_RESET.as_secs()
                ));
            }
            Some(Duration::from_secs(w))
        }
        None => None,
    };
    Ok(Announcement {
        limit,
        remaining,
        reset,
        window,
    })
}

/// Whether a header looks like a rate limit's, for the one debug line that records what
/// the live platform sends (its names are not documented).
pub fn is_rate_header(name: &str) -> bool {
    name.contains("ratelimit")
        || name.contains("rate-limit")
        || (name.starts_with("x-") && (name.contains("rate") || name.contains("limit")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn seen(limit: u64, remaining: u64, reset: u64) -> Parsed {
        Parsed::Seen(Announcement {
            limit,
            remaining,
            reset: Duration::from_secs(reset),
            window: None,
        })
    }

    const NOW: u64 = 1_800_000_000;

    fn at(pairs: &[(&'static str, &str)]) -> Parsed {
        parse(&headers(pairs), UNIX_EPOCH + Duration::from_secs(NOW))
    }

    #[test]
    fn the_x_ratelimit_triple_and_its_unprefixed_twin() {
        let x = [
            ("x-ratelimit-limit", "13800"),
            ("x-ratelimit-remaining", "12001"),
            ("x-ratelimit-reset", "7"),
        ];
        assert_eq!(at(&x), seen(13800, 12001, 7));
        let plain = [
            ("ratelimit-limit", "100, 100;w=10"),
            ("ratelimit-remaining", "40"),
            ("ratelimit-reset", "3"),
        ];
        assert_eq!(at(&plain), seen(100, 40, 3));
        // Two of three is no announcement (the old sandbox sent the limit alone).
        assert_eq!(at(&x[..2]), Parsed::Absent);
        assert_eq!(at(&[("x-ratelimit-limit", "100")]), Parsed::Absent);
        assert_eq!(at(&[]), Parsed::Absent);
    }

    #[test]
    fn the_ietf_fields_current_and_earlier_draft() {
        let current = [
            ("ratelimit", "\"default\";r=50;t=30"),
            (
                "ratelimit-policy",
                "\"default\";q=100;w=60, \"daily\";q=1000;w=86400",
            ),
        ];
        assert_eq!(
            at(&current),
            Parsed::Seen(Announcement {
                limit: 100,
                remaining: 50,
                reset: Duration::from_secs(30),
                window: Some(Duration::from_secs(60)),
            })
        );
        // Without its policy the field gives no limit: no announcement.
        assert_eq!(at(&current[..1]), Parsed::Absent);
        let earlier = [("ratelimit", "limit=100, remaining=0, reset=9")];
        assert_eq!(at(&earlier), seen(100, 0, 9));
    }

    #[test]
    fn a_reset_above_a_billion_is_a_unix_time() {
        let unix = |t: u64| {
            at(&[
                ("x-ratelimit-limit", "10"),
                ("x-ratelimit-remaining", "5"),
                ("x-ratelimit-reset", &t.to_string()),
            ])
        };
        assert_eq!(unix(NOW + 8), seen(10, 5, 8));
        assert_eq!(unix(NOW), seen(10, 5, 0), "a reset in this second is now");
        let Parsed::Implausible(why) = unix(NOW - 5) else {
            panic!("a reset in the past cannot be placed")
        };
        assert!(why.contains("5s before"), "{why}");
        // Exactly a billion is still seconds, and far beyond the hour.
        assert!(matches!(unix(1_000_000_000), Parsed::Implausible(_)));
        assert!(matches!(unix(NOW + 121), Parsed::Implausible(_)));
        assert_eq!(unix(NOW + 120), seen(10, 5, 120));
        assert_eq!(unix(120), seen(10, 5, 120));
        assert!(matches!(unix(121), Parsed::Implausible(_)));
    }

    #[test]
    fn a_unix_reset_is_read_against_the_answer_s_own_date() {
        let skewed = |date: u64, reset: u64| {
            let date = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(date));
            at(&[
                ("date", date.as_str()),
                ("x-ratelimit-limit", "10"),
                ("x-ratelimit-remaining", "5"),
                ("x-ratelimit-reset", &reset.to_string()),
            ])
        };
        // The server's clock runs 12 s behind ours: its reset, 3 s on by its clock, is 3 s.
        assert_eq!(skewed(NOW - 12, NOW - 9), seen(10, 5, 3));
        // Ahead by 30 s: the same.
        assert_eq!(skewed(NOW + 30, NOW + 33), seen(10, 5, 3));
        // Past by its own clock: not believed.
        assert!(matches!(skewed(NOW - 12, NOW - 13), Parsed::Implausible(_)));
        // A Date that is not a date: ours is used.
        let bad_date = [
            ("date", "yesterday"),
            ("x-ratelimit-limit", "10"),
            ("x-ratelimit-remaining", "5"),
            ("x-ratelimit-reset", "1800000004"),
        ];
        assert_eq!(at(&bad_date), seen(10, 5, 4));
    }

    #[test]
    fn two_families_that_disagree_are_not_believed_two_that_agree_are() {
        let both = |remaining: &str| {
            at(&[
                ("x-ratelimit-limit", "100"),
                ("x-ratelimit-remaining", "40"),
                ("x-ratelimit-reset", "3"),
                ("ratelimit", &format!("\"d\";r={remaining};t=3")),
                ("ratelimit-policy", "\"d\";q=100;w=10"),
            ])
        };
        assert_eq!(both("40"), seen(100, 40, 3));
        let Parsed::Implausible(why) = both("90") else {
            panic!("disagreeing families believed")
        };
        assert!(
            why.contains("40 of 100") && why.contains("90 of 100"),
            "{why}"
        );
        // One family implausible: the whole answer is.
        let wrong = [
            ("x-ratelimit-limit", "100"),
            ("x-ratelimit-remaining", "400"),
            ("x-ratelimit-reset", "3"),
            ("ratelimit", "limit=100, remaining=40, reset=3"),
        ];
        assert!(matches!(at(&wrong), Parsed::Implausible(_)));
    }

    #[test]
    fn implausible_values_are_refused_whole() {
        let triple = |l: &str, r: &str, t: &str| {
            at(&[
                ("x-ratelimit-limit", l),
                ("x-ratelimit-remaining", r),
                ("x-ratelimit-reset", t),
            ])
        };
        for (l, r, t) in [
            ("abc", "1", "1"),
            ("100", "-1", "1"),
            ("100", "1", "-3"),
            ("100", "101", "1"),
            ("1000001", "1", "1"),
            ("0", "0", "1"),
            ("100", "1.5", "1"),
            ("", "1", "1"),
        ] {
            assert!(
                matches!(triple(l, r, t), Parsed::Implausible(_)),
                "{l} {r} {t}"
            );
        }
        assert_eq!(
            triple("1000000", "1000000", "0"),
            seen(1_000_000, 1_000_000, 0)
        );
        assert_eq!(triple(" 100 ", "100", "1"), seen(100, 100, 1));
        let bad_window = [
            ("ratelimit", "\"d\";r=5;t=1"),
            ("ratelimit-policy", "\"d\";q=10;w=0"),
        ];
        assert!(matches!(at(&bad_window), Parsed::Implausible(_)));
        // The reason names the value, cut short.
        let Parsed::Implausible(why) = triple(&"9".repeat(300), "1", "1") else {
            panic!()
        };
        assert!(why.contains("limit 999") && why.len() < 120, "{why}");
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-limit",
            HeaderValue::from_bytes(b"1\xff").unwrap(),
        );
        h.insert("x-ratelimit-remaining", HeaderValue::from_static("1"));
        h.insert("x-ratelimit-reset", HeaderValue::from_static("1"));
        let Parsed::Implausible(why) = parse(&h, SystemTime::now()) else {
            panic!()
        };
        assert!(why.contains("(not text)"), "{why}");
    }

    #[test]
    fn rate_headers_are_told_by_name() {
        for yes in [
            "x-ratelimit-limit",
            "ratelimit",
            "ratelimit-policy",
            "x-rate-limit-reset",
            "x-limit-left",
            "x-rate",
        ] {
            assert!(is_rate_header(yes), "{yes}");
        }
        for no in [
            "content-length",
            "retry-after",
            "limit",
            "rate",
            "x-request-id",
        ] {
            assert!(!is_rate_header(no), "{no}");
        }
    }

    #[test]
    fn noise_never_panics() {
        let mut rng = fastrand::Rng::with_seed(21);
        let alphabet: Vec<char> = "0123456789-;,=\"rtqwlimitremaingset .".chars().collect();
        for _ in 0..5000 {
            let mut noise = || -> String {
                (0..rng.usize(0..24))
                    .map(|_| alphabet[rng.usize(..alphabet.len())])
                    .collect()
            };
            let (a, b, c, d) = (noise(), noise(), noise(), noise());
            let _ = at(&[
                ("x-ratelimit-limit", &a),
                ("x-ratelimit-remaining", &b),
                ("x-ratelimit-reset", &c),
            ]);
            let _ = at(&[("ratelimit", &d), ("ratelimit-policy", &a)]);
        }
    }
}

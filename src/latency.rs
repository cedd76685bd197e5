//! Request latencies per kind (GET, list, PATCH) in a fixed log-scale histogram: constant
//! memory however many requests, lock-free recording from every worker, percentiles within
//! 1.6% (64 buckets per power of two of microseconds), as oha and DSBulk report them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Which request a latency belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    Get,
    List,
    Patch,
}

impl RequestKind {
    pub const ALL: [RequestKind; 3] = [RequestKind::Get, RequestKind::List, RequestKind::Patch];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Get => "get",
            RequestKind::List => "list",
            RequestKind::Patch => "patch",
        }
    }
}

/// When the first and the last of a kind of event happened (the run's PATCHes): the write
/// rate is counted over the time the job was writing, not its reads before the first write.
#[derive(Debug, Default)]
pub struct Span(std::sync::Mutex<Option<(std::time::Instant, std::time::Instant)>>);

impl Span {
    pub fn mark(&self, at: std::time::Instant) {
        let mut span = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *span = Some(match *span {
            Some((first, last)) => (first.min(at), last.max(at)),
            None => (at, at),
        });
    }

    /// From the first event to the last; `None` before the first.
    pub fn length(&self) -> Option<Duration> {
        let span = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        span.map(|(first, last)| last.duration_since(first))
    }
}

const SUB_BITS: u32 = 6;
const SUB: usize = 1 << SUB_BITS;
/// Powers of two of microseconds covered: up to about 2^37 us (38 hours).
const POWERS: usize = 38;
const BUCKETS: usize = POWERS * SUB;

/// One histogram.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
        }
    }
}

/// The bucket of a value: exact below 64 us, then 64 buckets per power of two.
fn bucket_of(us: u64) -> usize {
    if us < SUB as u64 {
        return us as usize;
    }
    let power = 63 - us.leading_zeros(); // >= SUB_BITS
    let sub = (us >> (power - SUB_BITS)) as usize & (SUB - 1);
    (((power - SUB_BITS + 1) as usize) * SUB + sub).min(BUCKETS - 1)
}

/// The lowest value in a bucket.
fn bucket_floor(index: usize) -> u64 {
    if index < SUB {
        return index as u64;
    }
    let power = (index / SUB) as u32 + SUB_BITS - 1;
    let sub = (index % SUB) as u64;
    (1u64 << power) | (sub << (power - SUB_BITS))
}

/// What a histogram says, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct Percentiles {
    pub count: u64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Histogram {
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// p50, p95, p99 and the maximum; `None` when nothing was recorded.
    pub fn percentiles(&self) -> Option<Percentiles> {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return None;
        }
        let max_us = self.max_us.load(Ordering::Relaxed);
        let at = |q: f64| {
            let rank = ((q * total as f64).ceil() as u64).max(1);
            let bucket = counts
                .iter()
                .scan(0u64, |seen, n| {
                    *seen += n;
                    Some(*seen)
                })
                .position(|seen| seen >= rank)
                // Always found: rank <= total.
                .unwrap_or_default();
            // Never report more than the largest value seen.
            bucket_floor(bucket).min(max_us) as f64 / 1000.0
        };
        Some(Percentiles {
            count: total,
            p50_ms: at(0.50),
            p95_ms: at(0.95),
            p99_ms: at(0.99),
            max_ms: max_us as f64 / 1000.0,
        })
    }
}

/// One histogram per request kind.
#[derive(Default)]
pub struct Latencies {
    get: Histogram,
    list: Histogram,
    patch: Histogram,
}

impl std::fmt::Debug for Latencies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("Latencies");
        for kind in RequestKind::ALL {
            d.field(kind.as_str(), &self.of(kind).percentiles());
        }
        d.finish()
    }
}

impl Latencies {
    pub fn of(&self, kind: RequestKind) -> &Histogram {
        match kind {
            RequestKind::Get => &self.get,
            RequestKind::List => &self.list,
            RequestKind::Patch => &self.patch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_wait_lands_in_the_last_bucket() {
        let h = Histogram::default();
        h.record(Duration::MAX);
        h.record(Duration::from_secs(u64::MAX / 2_000_000));
        let p = h.percentiles().unwrap();
        assert_eq!(p.count, 2);
        assert!(p.p50_ms <= p.max_ms);
    }

    #[test]
    fn each_kind_has_its_own_histogram() {
        let l = Latencies::default();
        l.of(RequestKind::Get).record(Duration::from_millis(3));
        l.of(RequestKind::Get).record(Duration::from_millis(5));
        assert_eq!(
            l.of(RequestKind::Get).percentiles().map(|p| p.count),
            Some(2)
        );
        assert_eq!(l.of(RequestKind::Patch).percentiles(), None);
        assert_eq!(l.of(RequestKind::List).percentiles(), None);
        let shown = format!("{l:?}");
        assert!(
            shown.contains("get: Some") && shown.contains("patch: None"),
            "{shown}"
        );
    }

    #[test]
    fn kinds_are_named_as_the_summary_keys_them() {
        let names: Vec<_> = RequestKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(names, ["get", "list", "patch"]);
    }

    #[test]
    fn buckets_are_ordered_and_tight() {
        let mut last = 0;
        for us in (0..2_000_000u64).step_by(37).chain([u64::MAX / 2]) {
            let b = bucket_of(us);
            assert!(b >= last, "{us}");
            last = b;
            let floor = bucket_floor(b);
            assert!(floor <= us, "{us}: floor {floor}");
            if us < 1 << 36 {
                assert!(us - floor <= us / 60, "{us}: floor {floor}");
            }
        }
    }

    #[test]
    fn percentiles_of_a_known_spread() {
        let h = Histogram::default();
        assert_eq!(h.percentiles(), None);
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let p = h.percentiles().unwrap();
        assert_eq!(p.count, 100);
        let near = |got: f64, want: f64| (got - want).abs() <= want * 0.02;
        assert!(near(p.p50_ms, 50.0), "{p:?}");
        assert!(near(p.p95_ms, 95.0), "{p:?}");
        assert!(near(p.p99_ms, 99.0), "{p:?}");
        assert_eq!(p.max_ms, 100.0);
    }
}

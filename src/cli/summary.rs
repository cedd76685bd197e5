//! The end-of-run summary: a small table a person reads at a glance, then what an
//! operator asks next (how long requests took, the slowest row, how often the server
//! throttled, the write rate against `--rate`, the space's write budget); and the same,
//! field for field, as JSON.

use std::path::Path;
use std::time::Duration;

use crate::engine::Outcome;
use crate::human;
use crate::settings::named;
use crate::status::Status;

/// Flags and variables the messages cite, from their declarations.
const RATE_FLAG: &str = named::rate.long_flag();
const CONCURRENCY_FLAG: &str = named::concurrency.long_flag();

/// The run's `--rate` and `--concurrency`: what the summary measures the run against.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub rate: u32,
    pub concurrency: usize,
}

impl Limits {
    pub(super) fn of(settings: &crate::config::Settings) -> Limits {
        Limits {
            rate: settings.write_rate.get(),
            concurrency: settings.concurrency,
        }
    }
}

/// The summary as text, `title` ("Plan", "Apply") first.
pub(super) fn summary_text(
    title: &str,
    o: &Outcome,
    report: Option<&Path>,
    limits: Limits,
) -> String {
    let mut text = format!("{title} finished in {}", human::duration(o.elapsed));
    if let Some(r) = report {
        text.push_str(&format!(" (report: {})", r.display()));
    }
    counts(&mut text, o);
    requests(&mut text, o, title != "Plan", limits);
    latencies(&mut text, o);
    budget(&mut text, o, limits.rate);
    projects(&mut text, o);
    text
}

/// Counts per project and the projects whose credentials were refused (a run with
/// several projects).
fn projects(text: &mut String, o: &Outcome) {
    for (project, counts) in &o.per_project {
        let mut line: Vec<String> = Status::ALL
            .iter()
            .filter_map(|s| {
                Some(format!(
                    "{} {}",
                    s.as_str(),
                    counts.get(s).filter(|n| **n > 0)?
                ))
            })
            .collect();
        line.sort_unstable();
        text.push_str(&format!(
            "\n  project {}: {}",
            crate::inert::text(project, 80),
            line.join(", ")
        ));
    }
    if !o.refused_projects.is_empty() {
        text.push_str(&format!(
            "\n  credentials refused for project(s) {}: their rows are skipped; fix the \
             token(s), then --resume",
            crate::inert::text(&o.refused_projects.join(", "), 2000)
        ));
    }
}

/// One line per status that occurred, then the rows that need a word of their own.
fn counts(text: &mut String, o: &Outcome) {
    for s in Status::ALL {
        let n = o.count(s);
        if n == 0 {
            continue;
        }
        text.push_str(&format!("\n  {:<13}{:>9}", s.as_str(), human::count(n)));
        // The rows --only/--skip did not choose are among the skipped: said on its line.
        if s == Status::Skipped && o.not_selected > 0 {
            let chosen = "not chosen by --only/--skip";
            text.push_str(&match o.not_selected >= n {
                true => format!("  ({chosen})"),
                false => format!("  ({} of them {chosen})", human::count(o.not_selected)),
            });
        }
    }
    if o.possibly_written > 0 {
        text.push_str(&format!(
            "\n  {:<13}{:>9}  (failed as `write_unknown`: the PATCH may have landed; rollback \
             includes them, --resume settles them)",
            "maybe written",
            human::count(o.possibly_written)
        ));
    }
    if o.already_done > 0 {
        text.push_str(&format!(
            "\n  {:<13}{:>9}  (kept from the earlier run)",
            "resumed",
            human::count(o.already_done)
        ));
    }
}

/// How the space was read and written: pages, requests, retries, the write rate and
/// what held it there.
fn requests(text: &mut String, o: &Outcome, writes: bool, limits: Limits) {
    if let Some(snap) = &o.snapshot {
        text.push_str(&format!(
            "\n  read in pages: {} pages, {} gateways listed, {} of the rows found there{}",
            human::count(snap.pages),
            human::count(snap.listed),
            human::count(snap.kept),
            match &snap.stopped_early {
                Some(why) => format!(" (stopped early: {why}; the rest read by GET)"),
                None => String::new(),
            }
        ));
    }
    text.push_str(&format!(
        "\n  requests {}, retries {}",
        human::count(o.requests),
        human::count(o.retries)
    ));
    // A plan writes nothing: no write rate to show.
    if o.writes > 0 || writes {
        // A rate over less than a second reads as a broken limit: the count alone then.
        let pace = match o.write_rate() {
            Some(r) => format!(" at {}", human::rate(r)),
            None => format!(" in {}", human::duration(o.elapsed)),
        };
        text.push_str(&format!(
            ", writes {}{pace} ({RATE_FLAG} {})",
            human::count(o.writes),
            human::count(u64::from(limits.rate))
        ));
        if let Some(bound) = write_bound(o, limits) {
            text.push_str(&format!(", held there by {bound}"));
        }
    }
}

/// What held the write rate where it was, as far as the run can tell, in this order: the
/// space's write budget (it held writes back or cut the pace), 429 answers, retries (more
/// than one write in ten), the requests on the wire (the rate is within 70% of what
/// `--concurrency` requests make at the round trips the run sent per write), `--rate` (the writes came
/// within 80% of it), or else the write pace's start-up (rows waited for their slot: in a
/// short run the pace's low start shows). `None` without a rate to explain.
fn write_bound(o: &Outcome, limits: Limits) -> Option<String> {
    let achieved = o.write_rate()?;
    let rate = f64::from(limits.rate);
    if let Some(b) = o.write_budget.filter(|b| b.source.is_some())
        && (b.waited_secs > 0.0 || b.cuts > 0)
    {
        return Some("the space's write budget".into());
    }
    if o.throttled > 0 {
        return Some(format!(
            "429 answers (their retries waited {})",
            human::duration(o.throttled_wait)
        ));
    }
    if o.retries * 10 > o.writes {
        return Some(format!("retries ({})", human::count(o.retries)));
    }
    if round_trips_allow(o, limits.concurrency).is_some_and(|most| achieved >= 0.7 * most) {
        return Some(format!(
            "{CONCURRENCY_FLAG} {} and the round trips (a written row is a read and a PATCH, and \
             a fresh read when it waited for its slot)",
            limits.concurrency
        ));
    }
    if achieved >= 0.8 * rate {
        return Some(RATE_FLAG.into());
    }
    let queued = o.slot_wait.as_secs_f64() / o.writes.max(1) as f64;
    if queued >= 0.5 / rate && crate::budget::estimate::ramps_up_to(rate) {
        return Some(format!(
            "the write pace's start-up (it starts at a sixteenth of {RATE_FLAG})"
        ));
    }
    Some(format!(
        "{CONCURRENCY_FLAG} {} and the round trips",
        limits.concurrency
    ))
}

/// The most writes a second `concurrency` requests on the wire could make, at the median
/// round trip of every request the run sent per write (reads, fresh reads, retries).
fn round_trips_allow(o: &Outcome, concurrency: usize) -> Option<f64> {
    let spent_ms: f64 = o
        .latency
        .iter()
        .map(|(_, p)| p.count as f64 * p.p50_ms)
        .sum();
    let per_write_ms = spent_ms / o.writes.max(1) as f64;
    (per_write_ms > 0.0).then(|| concurrency as f64 * 1000.0 / per_write_ms)
}

/// Latency per kind of request, the slowest row, and the 429s.
fn latencies(text: &mut String, o: &Outcome) {
    for (kind, p) in &o.latency {
        let ms = |x: f64| human::duration(Duration::from_secs_f64(x / 1000.0));
        text.push_str(&format!(
            "\n  {:<6} p50 {}  p95 {}  p99 {}  max {}  ({} request{})",
            kind.as_str().to_uppercase(),
            ms(p.p50_ms),
            ms(p.p95_ms),
            ms(p.p99_ms),
            ms(p.max_ms),
            human::count(p.count),
            if p.count == 1 { "" } else { "s" }
        ));
    }
    if let Some(slow) = &o.slowest {
        text.push_str(&format!(
            "\n  slowest row: line {} ({}), {}",
            slow.line,
            slow.id,
            human::duration(Duration::from_millis(slow.duration_ms))
        ));
    }
    if o.throttled > 0 {
        text.push_str(&format!(
            "\n  throttled: {} answer{} 429, their retries waited {} in all",
            human::count(o.throttled),
            if o.throttled == 1 { "" } else { "s" },
            human::duration(o.throttled_wait)
        ));
    }
}

/// The space's write budget as the job saw it, when it saw one.
fn budget(text: &mut String, o: &Outcome, rate: u32) {
    let Some(b) = o.write_budget.filter(|b| b.source.is_some()) else {
        return;
    };
    // The pace at the end of a run that wrote for under a second says nothing.
    let pace = match o.write_rate() {
        Some(_) => format!(
            ", pace {} at the end ({RATE_FLAG} {})",
            human::rate(b.pace),
            human::count(u64::from(rate))
        ),
        None => String::new(),
    };
    text.push_str(&format!(
        "\n  write budget: {}\n    refused {} of {} writes ({:.1}%), writes held back {}{pace}{}",
        b.believed(),
        human::count(b.refused),
        human::count(b.refused + b.accepted),
        b.refused_share() * 100.0,
        human::duration(Duration::from_secs_f64(b.waited_secs)),
        if b.cuts > 0 {
            format!(", lowest after a cut {}", human::rate(b.lowest_pace))
        } else {
            String::new()
        }
    ));
}

/// The summary JSON's format version (its `version` field).
pub(super) const SUMMARY_VERSION: u32 = 1;

/// The summary as JSON, field for field with the text.
pub(super) fn summary_json(o: &Outcome, report: &Path, limits: Limits) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), o.count(*s).into()))
        .collect();
    let mut summary = serde_json::json!({
        // The summary's own format: raised when a field changes meaning or goes away.
        "version": SUMMARY_VERSION,
        "sipgw_bulk": env!("CARGO_PKG_VERSION"),
        "rows": o.rows,
        "counts": counts,
        "already_done": o.already_done,
        "other_shards": o.other_shards,
        "not_selected": o.not_selected,
        "requests": o.requests,
        "retries": o.retries,
        "writes": o.writes,
        "elapsed_secs": o.elapsed.as_secs_f64(),
        "write_rate": o.write_rate(),
        "write_bound": write_bound(o, limits),
        "rate_limit": limits.rate,
        "concurrency": limits.concurrency,
        "latency_ms": latency_json(o),
        "slowest_row": o.slowest.as_ref().map(|s| serde_json::json!({
            "line": s.line, "id": s.id, "duration_ms": s.duration_ms,
        })),
        "throttled": {
            "answers_429": o.throttled,
            "retry_wait_secs": o.throttled_wait.as_secs_f64(),
        },
        "write_budget": o.write_budget.map(write_budget_json),
        "read_in_pages": o.snapshot.as_ref().map(|s| serde_json::json!({
            "pages": s.pages, "listed": s.listed, "found": s.kept, "complete": s.complete,
            "secs": s.elapsed.as_secs_f64(), "stopped_early": s.stopped_early,
        })),
        "stopped": o.stopped.map(|r| format!("{r:?}").to_lowercase()),
        "stop_detail": o.stop_detail,
        "possibly_written": o.possibly_written,
        "report": report.display().to_string(),
    });
    if let Some(map) = summary.as_object_mut() {
        add_projects(map, o);
    }
    summary
}

/// Each kind of request's latency percentiles, in milliseconds.
fn latency_json(o: &Outcome) -> serde_json::Value {
    let latency: serde_json::Map<String, serde_json::Value> = o
        .latency
        .iter()
        .map(|(k, p)| {
            (
                k.as_str().to_owned(),
                serde_json::to_value(p).unwrap_or_default(),
            )
        })
        .collect();
    latency.into()
}

/// The write budget's report, with the share of writes refused and whether the space's
/// announced limit was believed.
fn write_budget_json(b: crate::budget::BudgetReport) -> serde_json::Value {
    let mut v = serde_json::to_value(b).unwrap_or_default();
    if let Some(map) = v.as_object_mut() {
        map.insert("refused_share".into(), b.refused_share().into());
        map.insert("believed".into(), b.believed().into());
    }
    v
}

/// Several projects: the counts per project, by id, and the projects whose credentials
/// were refused (each only when there is something to say).
fn add_projects(map: &mut serde_json::Map<String, serde_json::Value>, o: &Outcome) {
    if !o.per_project.is_empty() {
        let projects: serde_json::Map<String, serde_json::Value> = o
            .per_project
            .iter()
            .map(|(id, counts)| {
                let counts: serde_json::Map<String, serde_json::Value> = counts
                    .iter()
                    .map(|(s, n)| (s.as_str().to_owned(), (*n).into()))
                    .collect();
                (id.clone(), counts.into())
            })
            .collect();
        map.insert("projects".into(), projects.into());
    }
    if !o.refused_projects.is_empty() {
        map.insert("refused_projects".into(), o.refused_projects.clone().into());
    }
}

pub(super) fn write_summary_json(path: &Path, summary: &serde_json::Value) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let text = serde_json::to_string_pretty(summary)? + "\n";
    crate::output::AtomicFile::create(path)
        .and_then(|mut f| {
            std::io::Write::write_all(&mut f, text.as_bytes())?;
            f.commit()
        })
        .with_context(|| format!("cannot write summary {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::budget::{BudgetReport, PaceSource};

    /// 101 writes paced 10 ms apart (100 a second), rows waiting `queued_ms` for each slot,
    /// each written row's requests taking `round_trip_ms` in all (at the median).
    fn writing(queued_ms: u64, round_trip_ms: f64) -> Outcome {
        let p = crate::latency::Percentiles {
            count: 101,
            p50_ms: round_trip_ms,
            p95_ms: round_trip_ms,
            p99_ms: round_trip_ms,
            max_ms: round_trip_ms,
        };
        Outcome {
            writes: 101,
            write_span: Some(Duration::from_secs(1)),
            slot_wait: Duration::from_millis(101 * queued_ms),
            latency: vec![(crate::latency::RequestKind::Patch, p)],
            ..Outcome::default()
        }
    }

    fn limits(rate: u32) -> Limits {
        Limits {
            rate,
            concurrency: 8,
        }
    }

    /// Each cause the summary names, in the order it is tested, at its edge.
    #[test]
    fn the_write_bound_names_what_held_the_rate() {
        let bound = |o: &Outcome, rate| write_bound(o, limits(rate)).unwrap_or_default();
        let fast = 1.0;
        // 8 requests on the wire, 80 ms of round trips a write: at most 100 a second.
        let trips = "--concurrency 8 and the round trips (a written row is a read and a PATCH, \
                     and a fresh read when it waited for its slot)";
        assert_eq!(bound(&writing(0, 80.0), 1000), trips);
        // 70% of what the round trips allow.
        assert_eq!(bound(&writing(0, 57.0), 1000), trips);
        assert_ne!(bound(&writing(0, 50.0), 1000), trips);
        // Within 80% of --rate.
        assert_eq!(bound(&writing(0, fast), 125), "--rate");
        assert_ne!(bound(&writing(0, fast), 126), "--rate");
        // Under it, rows that waited over half an interval for their slot: the start-up
        // (only where the pace ramps, from 64 a second).
        let start = "the write pace's start-up (it starts at a sixteenth of --rate)";
        assert_eq!(bound(&writing(3, fast), 200), start);
        assert_eq!(
            bound(&writing(2, fast), 200),
            "--concurrency 8 and the round trips"
        );
        let mut slower = writing(20, fast);
        slower.write_span = Some(Duration::from_secs(2));
        assert_eq!(bound(&slower, 63), "--concurrency 8 and the round trips");
        assert_eq!(bound(&slower, 64), start);
        let mut retried = writing(0, 80.0);
        retried.retries = 11;
        assert_eq!(bound(&retried, 1000), "retries (11)");
        retried.retries = 10;
        assert_eq!(bound(&retried, 1000), trips);
        let mut throttled = retried.clone();
        throttled.throttled = 1;
        throttled.throttled_wait = Duration::from_secs(2);
        assert_eq!(
            bound(&throttled, 100),
            "429 answers (their retries waited 2.0s)"
        );
        let seen = BudgetReport {
            source: Some(PaceSource::Estimated),
            ..BudgetReport::default()
        };
        let mut budget = throttled.clone();
        for quiet in [seen, BudgetReport { refused: 3, ..seen }] {
            budget.write_budget = Some(quiet);
            assert!(
                bound(&budget, 100).starts_with("429"),
                "nothing held back, no cut"
            );
        }
        for held in [
            BudgetReport {
                waited_secs: 0.5,
                ..seen
            },
            BudgetReport { cuts: 1, ..seen },
        ] {
            budget.write_budget = Some(held);
            assert_eq!(bound(&budget, 100), "the space's write budget");
        }
        budget.write_budget = Some(BudgetReport {
            source: None,
            cuts: 1,
            ..seen
        });
        assert!(bound(&budget, 100).starts_with("429"), "no budget seen");
        let mut brief = writing(0, fast);
        brief.write_span = Some(Duration::from_millis(999));
        assert_eq!(write_bound(&brief, limits(100)), None, "no rate to explain");
        let mut unmeasured = writing(0, fast);
        unmeasured.latency.clear();
        assert_eq!(round_trips_allow(&unmeasured, 8), None);
        assert_eq!(round_trips_allow(&writing(0, 80.0), 8), Some(100.0));
    }
}

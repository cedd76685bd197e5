//! The end-of-run summary: a small table a person reads at a glance, then what an
//! operator asks next (how long requests took, the slowest row, how often the server
//! throttled, the write rate against `--rate`, the space's write budget); and the same,
//! field for field, as JSON.

use std::path::Path;
use std::time::Duration;

use crate::engine::Outcome;
use crate::human;
use crate::status::Status;

/// The summary as text, `title` ("Plan", "Apply") first.
pub(super) fn summary_text(title: &str, o: &Outcome, report: Option<&Path>, rate: u32) -> String {
    let mut text = format!("{title} finished in {}", human::duration(o.elapsed));
    if let Some(r) = report {
        text.push_str(&format!(" (report: {})", r.display()));
    }
    counts(&mut text, o);
    requests(&mut text, o, title != "Plan", rate);
    latencies(&mut text, o);
    budget(&mut text, o, rate);
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
    text
}

/// One line per status that occurred, then the rows that need a word of their own.
fn counts(text: &mut String, o: &Outcome) {
    for s in Status::ALL {
        if o.count(s) > 0 {
            text.push_str(&format!(
                "\n  {:<13}{:>9}",
                s.as_str(),
                human::count(o.count(s))
            ));
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
    if o.not_selected > 0 {
        text.push_str(&format!(
            "\n  {:<13}{:>9}  (skipped: not chosen by --only/--skip)",
            "not selected",
            human::count(o.not_selected)
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

/// How the space was read and written: pages, requests, retries, the write rate.
fn requests(text: &mut String, o: &Outcome, writes: bool, rate: u32) {
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
            ", writes {}{pace} (--rate {})",
            human::count(o.writes),
            human::count(u64::from(rate))
        ));
    }
}

/// Latency per kind of request, the slowest row, and the 429s.
fn latencies(text: &mut String, o: &Outcome) {
    for (kind, p) in &o.latency {
        let ms = |x: f64| human::duration(Duration::from_secs_f64(x / 1000.0));
        text.push_str(&format!(
            "\n  {:<6} p50 {}  p95 {}  p99 {}  max {}  ({} requests)",
            kind.as_str().to_uppercase(),
            ms(p.p50_ms),
            ms(p.p95_ms),
            ms(p.p99_ms),
            ms(p.max_ms),
            human::count(p.count)
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
            "\n  throttled: {} answers 429, their retries waited {} in all",
            human::count(o.throttled),
            human::duration(o.throttled_wait)
        ));
    }
}

/// The space's write budget as the job saw it, when it saw one.
fn budget(text: &mut String, o: &Outcome, rate: u32) {
    let Some(b) = o.write_budget.filter(|b| b.source.is_some()) else {
        return;
    };
    text.push_str(&format!(
        "\n  write budget: {}\n    refused {} of {} writes ({:.1}%), writes held back {}, \
         pace {} at the end (--rate {}){}",
        b.believed(),
        human::count(b.refused),
        human::count(b.refused + b.accepted),
        b.refused_share() * 100.0,
        human::duration(Duration::from_secs_f64(b.waited_secs)),
        human::rate(b.pace),
        human::count(u64::from(rate)),
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
pub(super) fn summary_json(o: &Outcome, report: &Path, rate: u32) -> serde_json::Value {
    let counts: serde_json::Map<String, serde_json::Value> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), o.count(*s).into()))
        .collect();
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
        "rate_limit": rate,
        "latency_ms": latency,
        "slowest_row": o.slowest.as_ref().map(|s| serde_json::json!({
            "line": s.line, "id": s.id, "duration_ms": s.duration_ms,
        })),
        "throttled": {
            "answers_429": o.throttled,
            "retry_wait_secs": o.throttled_wait.as_secs_f64(),
        },
        "write_budget": o.write_budget.map(|b| {
            let mut v = serde_json::to_value(b).unwrap_or_default();
            if let Some(map) = v.as_object_mut() {
                map.insert("refused_share".into(), b.refused_share().into());
                map.insert("believed".into(), b.believed().into());
            }
            v
        }),
        "read_in_pages": o.snapshot.as_ref().map(|s| serde_json::json!({
            "pages": s.pages, "listed": s.listed, "found": s.kept, "complete": s.complete,
            "secs": s.elapsed.as_secs_f64(), "stopped_early": s.stopped_early,
        })),
        "stopped": o.stopped.map(|r| format!("{r:?}").to_lowercase()),
        "stop_detail": o.stop_detail,
        "possibly_written": o.possibly_written,
        "report": report.display().to_string(),
    });
    // Several projects: the counts per project, by id (only in a run with projects).
    if !o.per_project.is_empty()
        && let Some(map) = summary.as_object_mut()
    {
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
    // Several projects: the ones whose credentials were refused (only when some were).
    if !o.refused_projects.is_empty()
        && let Some(map) = summary.as_object_mut()
    {
        map.insert("refused_projects".into(), o.refused_projects.clone().into());
    }
    summary
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

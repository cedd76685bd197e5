//! A run's metrics in Prometheus' text format, for the monitoring stack a user already
//! has: node_exporter's textfile collector (`--metrics-file`), a Pushgateway
//! (`--push-gateway`), or a scrape while the run lasts (`--metrics-listen`).
//!
//! Names follow Prometheus' conventions: the `sipgw_bulk_` prefix, base units, `_total`
//! on counters, `_seconds` and `_timestamp_seconds`. Every metric carries the run's labels
//! (`space`, `command`, `shard`); a few add one of a fixed set (`status`, `kind`, `code`,
//! `mode`, `source`). No id, no name, nothing that grows with the manifest; only in a run
//! of several projects, rows and requests add `project`, bounded by the projects file.
//!
//! The parts: this file renders a [`Values`] (pure: the values in, the text out);
//! `live` keeps the values as the rows run; `sinks` writes, pushes and serves them.

mod live;
mod sinks;

use std::collections::{BTreeMap, HashMap};

use prometheus::{Counter, CounterVec, Encoder, Gauge, GaugeVec, Opts, Registry, TextEncoder};

use crate::budget::{BudgetReport, PaceSource};
use crate::latency::RequestKind;

pub use live::RunMetrics;
pub use sinks::{Sinks, SinksConfig};

/// The labels every metric of a run carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunLabels {
    /// The space's host (and port when it is not the scheme's), as in `acme.signalwire.com`.
    pub space: String,
    /// `plan` or `apply`.
    pub command: &'static str,
    /// `K/N`, or `all`.
    pub shard: String,
}

impl RunLabels {
    /// The labels as (name, value) pairs, in the order the text format sorts them.
    pub fn pairs(&self) -> [(&'static str, &str); 3] {
        [
            ("command", self.command),
            ("shard", &self.shard),
            ("space", &self.space),
        ]
    }
}

/// The values a run's metrics are made from, taken live or at its end.
#[derive(Debug, Clone, Default)]
pub struct Values {
    /// Rows by status (the report's vocabulary).
    pub rows: BTreeMap<&'static str, u64>,
    /// Gateways found differing from the manifest.
    pub drifted: u64,
    /// Answers by kind of request and status code.
    pub answers: Vec<(RequestKind, String, u64)>,
    pub retries: u64,
    /// 429 answers, and how long the retries after them waited.
    pub throttled: u64,
    pub retry_wait_secs: f64,
    /// The space's write budget as the job saw it (apply).
    pub budget: Option<BudgetReport>,
    /// `get`, `list` or `auto`.
    pub read_mode: &'static str,
    pub duration_secs: f64,
    /// In a run of several projects only (empty otherwise, and then no metric has a
    /// `project` label): the answers per project id, and the rows by (status, project
    /// id; empty for a row whose project the run lacks).
    pub project_answers: Vec<crate::client::ProjectSnapshot>,
    pub project_rows: BTreeMap<(&'static str, String), u64>,
}

impl Values {
    /// The run has several projects: the per-row and per-request metrics carry `project`.
    pub fn several_projects(&self) -> bool {
        self.project_answers.len() > 1
    }
}

/// How a run ended: its exit code, when, and whether that was a success.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ending {
    pub exit_code: i32,
    /// Unix time, seconds.
    pub at: f64,
}

impl Ending {
    /// A success is a run whose every row ended well: exit 0, or 2 (changes pending, or
    /// made, under `--detailed-exitcode`). Exit 1 (rows that need attention) and every
    /// stop or refusal are not.
    pub fn success(&self) -> bool {
        matches!(self.exit_code, 0 | 2)
    }
}

/// The name of the metric that carries the last success.
pub const LAST_SUCCESS: &str = "sipgw_bulk_last_success_timestamp_seconds";

/// The metrics as text. `ending` is `None` while the run lasts; `last_success` is the
/// last success known (this run's, or an earlier one's carried over), left out if none.
pub fn render(
    labels: &RunLabels,
    snap: &Values,
    ending: Option<&Ending>,
    last_success: Option<f64>,
) -> String {
    let text = Metrics::build(labels, snap.several_projects())
        .and_then(|m| m.fill(snap, ending, last_success));
    match text {
        Ok(text) => text,
        // The names and labels are ours and fixed: a registry error is a bug, said here.
        Err(e) => format!("# sipgw-bulk could not render its metrics: {e}\n"),
    }
}

/// The metrics, registered once per rendering (a few dozen: rendering is rare).
struct Metrics {
    registry: Registry,
    build_info: GaugeVec,
    last_success: Gauge,
    last_completion: Gauge,
    exit_code: Gauge,
    in_progress: Gauge,
    duration: Gauge,
    rows: GaugeVec,
    drifted: Gauge,
    requests: CounterVec,
    retries: Counter,
    throttled: Counter,
    retry_wait: Counter,
    pace: Gauge,
    budget: GaugeVec,
    budget_wait: Counter,
    read_mode: GaugeVec,
    shard_count: Gauge,
}

/// Every metric: name, help, and the labels of its own. The table in docs/monitoring.md is checked
/// against this list by a test.
pub const METRICS: [(&str, &str, &[&str], &str); 17] = [
    (
        "sipgw_bulk_build_info",
        "gauge",
        &["version"],
        "Always 1; the version of sipgw-bulk that ran.",
    ),
    (
        LAST_SUCCESS,
        "gauge",
        &[],
        "Unix time of the last run whose every row ended well (exit 0, or 2 with --detailed-exitcode); kept across failed runs.",
    ),
    (
        "sipgw_bulk_last_completion_timestamp_seconds",
        "gauge",
        &[],
        "Unix time the last run ended, however it ended.",
    ),
    (
        "sipgw_bulk_last_exit_code",
        "gauge",
        &[],
        "The last run's exit code (see the exit codes in docs/formats.md).",
    ),
    (
        "sipgw_bulk_run_in_progress",
        "gauge",
        &[],
        "1 while a run is going on, 0 once it ended.",
    ),
    (
        "sipgw_bulk_run_duration_seconds",
        "gauge",
        &[],
        "How long the run took (so far, while it lasts).",
    ),
    (
        "sipgw_bulk_rows",
        "gauge",
        &["status"],
        "Rows of the run's report by status (and `project` in a run of several projects).",
    ),
    (
        "sipgw_bulk_drifted_gateways",
        "gauge",
        &[],
        "Gateways the run found differing from the manifest.",
    ),
    (
        "sipgw_bulk_requests_total",
        "counter",
        &["kind", "code"],
        "HTTP attempts by kind (get, list, patch) and status code (none: no answer); and `project` in a run of several projects.",
    ),
    (
        "sipgw_bulk_retries_total",
        "counter",
        &[],
        "Attempts that were retries.",
    ),
    ("sipgw_bulk_throttled_total", "counter", &[], "429 answers."),
    (
        "sipgw_bulk_retry_wait_seconds_total",
        "counter",
        &[],
        "Time retries after 429s waited, summed over requests.",
    ),
    (
        "sipgw_bulk_write_pace_per_second",
        "gauge",
        &[],
        "The write pace the job kept at the end (apply).",
    ),
    (
        "sipgw_bulk_write_budget_per_second",
        "gauge",
        &["source"],
        "Writes a second the job believed the space accepts: announced, or estimated.",
    ),
    (
        "sipgw_bulk_write_budget_wait_seconds_total",
        "counter",
        &[],
        "Time writes were held back by the space's budget.",
    ),
    (
        "sipgw_bulk_read_mode",
        "gauge",
        &["mode"],
        "Always 1; how the run read the space (get, list, auto).",
    ),
    (
        "sipgw_bulk_shards",
        "gauge",
        &[],
        "The N of the run's --shard K/N (1 without it): a schedule whose shards report fewer groups than N, or different Ns, left rows untouched.",
    ),
];

/// The N of a `K/N` shard label; 1 for `all` (one process holds every row).
fn shard_count(shard: &str) -> f64 {
    shard
        .split_once('/')
        .and_then(|(_, n)| n.parse::<f64>().ok())
        .unwrap_or(1.0)
}

fn help(name: &str) -> &'static str {
    METRICS.iter().find(|m| m.0 == name).map_or("", |m| m.3)
}

impl Metrics {
    /// The metrics; with `several` projects, rows and requests by project too.
    fn build(labels: &RunLabels, several: bool) -> prometheus::Result<Metrics> {
        let by = |own: &'static [&'static str]| -> Vec<&'static str> {
            let mut by = own.to_vec();
            by.extend(several.then_some("project"));
            by
        };
        let constant: HashMap<String, String> = labels
            .pairs()
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let registry = Registry::new_custom(None, Some(constant))?;
        let opts = |name: &str| Opts::new(name, help(name));
        let gauge = |name: &str| -> prometheus::Result<Gauge> {
            let g = Gauge::with_opts(opts(name))?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauges = |name: &str, by: &[&str]| -> prometheus::Result<GaugeVec> {
            let g = GaugeVec::new(opts(name), by)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counter = |name: &str| -> prometheus::Result<Counter> {
            let c = Counter::with_opts(opts(name))?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let requests = CounterVec::new(opts("sipgw_bulk_requests_total"), &by(&["kind", "code"]))?;
        registry.register(Box::new(requests.clone()))?;
        let metrics = Metrics {
            build_info: gauges("sipgw_bulk_build_info", &["version"])?,
            last_success: gauge(LAST_SUCCESS)?,
            last_completion: gauge("sipgw_bulk_last_completion_timestamp_seconds")?,
            exit_code: gauge("sipgw_bulk_last_exit_code")?,
            in_progress: gauge("sipgw_bulk_run_in_progress")?,
            duration: gauge("sipgw_bulk_run_duration_seconds")?,
            rows: gauges("sipgw_bulk_rows", &by(&["status"]))?,
            drifted: gauge("sipgw_bulk_drifted_gateways")?,
            requests,
            retries: counter("sipgw_bulk_retries_total")?,
            throttled: counter("sipgw_bulk_throttled_total")?,
            retry_wait: counter("sipgw_bulk_retry_wait_seconds_total")?,
            pace: gauge("sipgw_bulk_write_pace_per_second")?,
            budget: gauges("sipgw_bulk_write_budget_per_second", &["source"])?,
            budget_wait: counter("sipgw_bulk_write_budget_wait_seconds_total")?,
            read_mode: gauges("sipgw_bulk_read_mode", &["mode"])?,
            shard_count: gauge("sipgw_bulk_shards")?,
            registry,
        };
        metrics.shard_count.set(shard_count(&labels.shard));
        Ok(metrics)
    }

    fn fill(
        self,
        snap: &Values,
        ending: Option<&Ending>,
        last_success: Option<f64>,
    ) -> prometheus::Result<String> {
        self.build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1.0);
        self.read_mode.with_label_values(&[snap.read_mode]).set(1.0);
        self.duration.set(snap.duration_secs);
        self.in_progress
            .set(if ending.is_some() { 0.0 } else { 1.0 });
        if snap.several_projects() {
            self.fill_projects(snap);
        } else {
            for (status, n) in &snap.rows {
                self.rows.with_label_values(&[*status]).set(*n as f64);
            }
            for (kind, code, n) in &snap.answers {
                let labels = [kind.as_str(), code.as_str()];
                self.requests.with_label_values(&labels).inc_by(*n as f64);
            }
        }
        self.drifted.set(snap.drifted as f64);
        self.retries.inc_by(snap.retries as f64);
        self.throttled.inc_by(snap.throttled as f64);
        self.retry_wait.inc_by(snap.retry_wait_secs.max(0.0));
        if let Some(b) = snap.budget.as_ref() {
            self.pace.set(b.pace);
            self.budget_wait.inc_by(b.waited_secs.max(0.0));
            if let Some((source, per_sec)) = believed(b) {
                self.budget.with_label_values(&[source]).set(per_sec);
            }
        }
        let mut unused = vec![];
        if let Some(end) = ending {
            self.last_completion.set(end.at);
            self.exit_code.set(f64::from(end.exit_code));
        } else {
            unused.push("sipgw_bulk_last_completion_timestamp_seconds");
            unused.push("sipgw_bulk_last_exit_code");
        }
        match last_success {
            Some(at) => self.last_success.set(at),
            None => unused.push(LAST_SUCCESS),
        }
        if snap.budget.is_none() {
            unused.push("sipgw_bulk_write_pace_per_second");
            unused.push("sipgw_bulk_write_budget_wait_seconds_total");
        }
        // A value not known is left out, not sent as a zero that would read as a fact.
        let families: Vec<_> = self
            .registry
            .gather()
            .into_iter()
            .filter(|f| !unused.contains(&f.name()))
            .collect();
        let mut out = Vec::new();
        TextEncoder::new().encode(&families, &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Metrics {
    /// Rows and requests by project: each project's own, and what no project's client
    /// sent (or a row no project owns) under `project=""`, so the sums stay the run's.
    fn fill_projects(&self, snap: &Values) {
        for ((status, project), n) in &snap.project_rows {
            let labels = [*status, project.as_str()];
            self.rows.with_label_values(&labels).set(*n as f64);
        }
        let mut rest: HashMap<(&str, &str), u64> = snap
            .answers
            .iter()
            .map(|(kind, code, n)| ((kind.as_str(), code.as_str()), *n))
            .collect();
        for (project, answers) in &snap.project_answers {
            for (kind, code, n) in answers {
                let labels = [kind.as_str(), code.as_str(), project.as_str()];
                self.requests.with_label_values(&labels).inc_by(*n as f64);
                if let Some(left) = rest.get_mut(&(kind.as_str(), code.as_str())) {
                    *left = left.saturating_sub(*n);
                }
            }
        }
        for ((kind, code), n) in rest.into_iter().filter(|(_, n)| *n > 0) {
            let labels = [kind, code, ""];
            self.requests.with_label_values(&labels).inc_by(n as f64);
        }
    }
}

/// What the job believed the space accepts, writes a second, and where that came from.
fn believed(b: &BudgetReport) -> Option<(&'static str, f64)> {
    match (b.source, b.limit, b.window_secs) {
        (Some(PaceSource::Announced), Some(limit), Some(window)) if window > 0.0 => {
            Some(("announced", limit as f64 / window))
        }
        _ => b.accepts_per_sec.map(|a| ("estimated", a)),
    }
}

/// The last success recorded for these labels in an earlier rendering (`text`), if any.
pub fn last_success_in(text: &str, labels: &RunLabels) -> Option<f64> {
    text.lines()
        .filter_map(|line| line.strip_prefix(LAST_SUCCESS))
        .filter_map(|rest| rest.strip_prefix('{'))
        .find_map(|rest| {
            let (set, value) = rest.split_once('}')?;
            let matches = labels
                .pairs()
                .iter()
                .all(|(k, v)| set.split(',').any(|kv| kv == format!("{k}=\"{v}\"")));
            let value: f64 = value.trim().parse().ok()?;
            (matches && value.is_finite()).then_some(value)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(shard: &str) -> RunLabels {
        RunLabels {
            space: "acme.signalwire.com".into(),
            command: "apply",
            shard: shard.into(),
        }
    }

    #[test]
    fn a_run_in_progress_leaves_out_what_it_does_not_know_yet() {
        let snap = Values {
            rows: [("updated", 3)].into_iter().collect(),
            read_mode: "get",
            ..Values::default()
        };
        let live = render(&labels("all"), &snap, None, None);
        assert!(live.contains("sipgw_bulk_run_in_progress{"), "{live}");
        assert!(live.contains("status=\"updated\""), "{live}");
        for absent in [
            LAST_SUCCESS,
            "sipgw_bulk_last_completion_timestamp_seconds",
            "sipgw_bulk_last_exit_code",
            "sipgw_bulk_write_pace_per_second",
        ] {
            assert!(!live.contains(absent), "{absent} in:\n{live}");
        }
        let end = Ending {
            exit_code: 1,
            at: 1_800_000_000.0,
        };
        let done = render(&labels("all"), &snap, Some(&end), Some(1_700_000_000.0));
        assert!(done.contains(" 1800000000\n"), "{done}");
        assert!(done.contains(" 1700000000\n"), "{done}");
        assert_eq!(
            last_success_in(&done, &labels("all")),
            Some(1_700_000_000.0)
        );
        assert_eq!(
            last_success_in(&done, &labels("0/2")),
            None,
            "another shard's"
        );
        assert_eq!(last_success_in("garbage\n", &labels("all")), None);
    }

    #[test]
    fn success_is_every_row_ending_well() {
        let ok = |exit_code| Ending { exit_code, at: 0.0 }.success();
        assert!(ok(0) && ok(2));
        assert!(!ok(1) && !ok(3) && !ok(4) && !ok(5) && !ok(64) && !ok(65));
    }

    #[test]
    fn the_budget_believed_is_the_announced_window_else_the_estimate() {
        let mut b = BudgetReport {
            source: Some(PaceSource::Announced),
            limit: Some(13_800),
            window_secs: Some(10.0),
            accepts_per_sec: Some(50.0),
            ..BudgetReport::default()
        };
        assert_eq!(believed(&b), Some(("announced", 1380.0)));
        b.source = Some(PaceSource::Estimated);
        assert_eq!(believed(&b), Some(("estimated", 50.0)));
        b.accepts_per_sec = None;
        assert_eq!(believed(&b), None);
    }
}

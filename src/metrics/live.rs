//! The run's values as its rows go by: an observer counts the records, the client's
//! counters and the write budget are read when the metrics are rendered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Ending, RunLabels, Values, render};
use crate::budget::WriteBudget;
use crate::client::RequestStats;
use crate::engine::Observer;
use crate::report::RowRecord;
use crate::status::Status;

/// One run's metrics, shared by the observer, the sinks and the caller.
pub struct RunMetrics {
    labels: RunLabels,
    read_mode: &'static str,
    started: Instant,
    rows: Mutex<BTreeMap<Status, u64>>,
    /// Rows by status and project id (empty: a row no project owns), for a run of several.
    project_rows: Mutex<BTreeMap<(Status, String), u64>>,
    drifted: AtomicU64,
    /// Set once the rows start: the run's request counters and write budget.
    live: Mutex<Option<Live>>,
}

/// What is read live: the run's request counters and its write budget (apply).
type Live = (Arc<RequestStats>, Option<Arc<WriteBudget>>);

impl RunMetrics {
    pub fn new(labels: RunLabels, read_mode: &'static str) -> Arc<RunMetrics> {
        Arc::new(RunMetrics {
            labels,
            read_mode,
            started: Instant::now(),
            rows: Mutex::default(),
            project_rows: Mutex::default(),
            drifted: AtomicU64::new(0),
            live: Mutex::default(),
        })
    }

    pub fn labels(&self) -> &RunLabels {
        &self.labels
    }

    /// The rows are about to run with these counters and this budget.
    pub fn attach(&self, stats: Arc<RequestStats>, budget: Option<Arc<WriteBudget>>) {
        *self.live.lock().unwrap_or_else(|p| p.into_inner()) = Some((stats, budget));
    }

    /// Sees every record: the rows by status, and the gateways found drifted.
    pub fn observer(self: &Arc<Self>) -> Box<dyn Observer> {
        Box::new(Counting(Arc::clone(self)))
    }

    /// The report's whole count at the end (a resumed run's kept rows included).
    pub fn set_rows(&self, counts: impl IntoIterator<Item = (Status, u64)>) {
        let mut rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        rows.clear();
        rows.extend(counts.into_iter().filter(|(_, n)| *n > 0));
    }

    /// The rows of each project at the end, in a run of several: `per_project`'s counts,
    /// and the rest of the report's (`set_rows`) under no project.
    pub fn set_project_rows<'a>(
        &self,
        per_project: impl IntoIterator<Item = (&'a String, &'a std::collections::HashMap<Status, u64>)>,
    ) {
        let mut rest = self.rows.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut by = self.project_rows.lock().unwrap_or_else(|p| p.into_inner());
        by.clear();
        for (project, counts) in per_project {
            for (status, n) in counts.iter().filter(|(_, n)| **n > 0) {
                by.insert((*status, project.clone()), *n);
                if let Some(left) = rest.get_mut(status) {
                    *left = left.saturating_sub(*n);
                }
            }
        }
        by.extend(
            rest.into_iter()
                .filter(|(_, n)| *n > 0)
                .map(|(status, n)| ((status, String::new()), n)),
        );
    }

    /// The values now.
    pub fn values_now(&self) -> Values {
        let rows = self.rows.lock().unwrap_or_else(|p| p.into_inner());
        let mut snap = Values {
            rows: rows.iter().map(|(s, n)| (s.as_str(), *n)).collect(),
            drifted: self.drifted.load(Ordering::Relaxed),
            read_mode: self.read_mode,
            duration_secs: self.started.elapsed().as_secs_f64(),
            ..Values::default()
        };
        drop(rows);
        if let Some((stats, budget)) = &*self.live.lock().unwrap_or_else(|p| p.into_inner()) {
            snap.answers = stats.answers.snapshot();
            snap.retries = stats.retries.load(Ordering::Relaxed);
            snap.throttled = stats.throttled.load(Ordering::Relaxed);
            snap.retry_wait_secs =
                Duration::from_micros(stats.throttled_wait_us.load(Ordering::Relaxed))
                    .as_secs_f64();
            snap.budget = budget.as_ref().map(|b| b.report());
            snap.project_answers = stats.projects.snapshot();
        }
        if snap.several_projects() {
            let by = self.project_rows.lock().unwrap_or_else(|p| p.into_inner());
            snap.project_rows = by
                .iter()
                .map(|((s, p), n)| ((s.as_str(), p.clone()), *n))
                .collect();
        } else {
            snap.project_answers.clear();
        }
        snap
    }

    /// The metrics as text now.
    pub fn render(&self, ending: Option<&Ending>, last_success: Option<f64>) -> String {
        render(&self.labels, &self.values_now(), ending, last_success)
    }
}

struct Counting(Arc<RunMetrics>);

impl Observer for Counting {
    fn record(&mut self, record: &RowRecord) {
        *self
            .0
            .rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(record.status)
            .or_default() += 1;
        *self
            .0
            .project_rows
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry((record.status, record.project.clone().unwrap_or_default()))
            .or_default() += 1;
        // Drifted: the read showed a difference (written or not), or the gateway moved
        // away from the reviewed plan.
        if !record.changed_fields.is_empty() || record.status == Status::Conflict {
            self.0.drifted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

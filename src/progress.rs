//! Progress while a job runs: an indicatif bar on a terminal (rows done of total, rate,
//! ETA, counts), or, off a terminal, a plain stats line in the log every few seconds so cron
//! logs stay readable. Log lines are printed above the bar without tearing it: the log
//! writer goes through [`LogWriter`], which suspends the bar while it writes.

use std::io::{self, Write};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::engine::Observer;
use crate::report::RowRecord;
use crate::status::{ErrorCode, Status};

/// The bar on screen, if any; the log writer checks it.
static ACTIVE_BAR: OnceLock<Mutex<Option<ProgressBar>>> = OnceLock::new();

fn active() -> &'static Mutex<Option<ProgressBar>> {
    ACTIVE_BAR.get_or_init(|| Mutex::new(None))
}

/// stderr for the log, writing around the progress bar.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let bar = active().lock().ok().and_then(|g| g.clone());
        match bar {
            Some(bar) => bar
                .suspend(|| io::stderr().write_all(buf))
                .map(|()| buf.len()),
            None => io::stderr().write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;
    fn make_writer(&'a self) -> LogWriter {
        LogWriter
    }
}

/// How progress shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ProgressMode {
    /// A bar on stderr (a terminal).
    Bar,
    /// A log line every interval.
    StatsLines(Duration),
    /// Nothing (`-q`).
    Off,
}

#[derive(Default, Clone, Copy)]
struct Counts {
    done: u64,
    /// `updated` in apply, `would_update` in a plan.
    changed: u64,
    unchanged: u64,
    failed: u64,
    other: u64,
}

/// Watches records and shows progress.
pub struct Progress {
    mode: ProgressMode,
    /// A plan: rows "would update", none is updated.
    plan: bool,
    total: u64,
    started: Instant,
    last_line: Instant,
    counts: Counts,
    bar: Option<ProgressBar>,
    /// The space's write budget as the job sees it (apply).
    budget: Option<Arc<crate::budget::WriteBudget>>,
}

impl Progress {
    pub fn new(mode: ProgressMode, total: u64, plan: bool) -> Progress {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{bar:30.cyan/blue} {human_pos}/{human_len} rows  {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.enable_steady_tick(Duration::from_millis(200));
            if let Ok(mut g) = active().lock() {
                *g = Some(bar.clone());
            }
            bar
        });
        let now = Instant::now();
        Progress {
            mode,
            plan,
            total,
            started: now,
            last_line: now,
            counts: Counts::default(),
            bar,
            budget: None,
        }
    }

    /// Shows the write budget too: what the job believes, its pace, the refusals.
    pub fn with_budget(mut self, budget: Option<Arc<crate::budget::WriteBudget>>) -> Self {
        self.budget = budget;
        self
    }

    fn rows_per_sec(&self) -> f64 {
        self.counts.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9)
    }

    fn stats_line(&self) {
        let c = self.counts;
        let rows_per_sec = (self.rows_per_sec() * 10.0).round() / 10.0;
        // Two calls because tracing's field names are static: a plan's lines must say
        // `would_update`, since a plan updates nothing.
        if self.plan {
            tracing::info!(
                done = c.done,
                total = self.total,
                would_update = c.changed,
                unchanged = c.unchanged,
                failed = c.failed,
                other = c.other,
                rows_per_sec,
                "plan progress"
            );
        } else {
            let b = self.budget.as_ref().map(|b| b.report()).unwrap_or_default();
            let round = |x: f64| (x * 10.0).round() / 10.0;
            tracing::info!(
                done = c.done,
                total = self.total,
                updated = c.changed,
                unchanged = c.unchanged,
                failed = c.failed,
                other = c.other,
                rows_per_sec,
                write_pace = round(b.pace),
                write_budget = %b.believed(),
                refused_pct = round(b.refused_share() * 100.0),
                waited_secs = round(b.waited_secs),
                "progress"
            );
        }
    }

    /// Clears the bar (the summary follows) or prints the last stats line.
    pub fn finish(self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
            if let Ok(mut g) = active().lock() {
                *g = None;
            }
        } else if matches!(self.mode, ProgressMode::StatsLines(_)) && self.counts.done > 0 {
            self.stats_line();
        }
    }
}

impl Observer for Progress {
    fn record(&mut self, r: &RowRecord) {
        let c = &mut self.counts;
        c.done += 1;
        match r.status {
            Status::Updated | Status::WouldUpdate => c.changed += 1,
            Status::Unchanged => c.unchanged += 1,
            Status::Failed | Status::Mismatch | Status::NotFound => c.failed += 1,
            _ => c.other += 1,
        }
        let c = self.counts;
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.inc(1);
                    let left = self.total.saturating_sub(c.done);
                    let per_sec = self.rows_per_sec();
                    let eta = if per_sec > 0.0 {
                        crate::human::duration(Duration::from_secs_f64(left as f64 / per_sec))
                    } else {
                        "?".into()
                    };
                    let pace = match self.budget.as_ref().map(|b| b.report()) {
                        Some(b) if b.source.is_some() && (b.pace < b.ceiling || b.refused > 0) => {
                            format!(
                                "  writes at {} ({}, {:.1}% refused)",
                                crate::human::rate(b.pace),
                                b.believed(),
                                b.refused_share() * 100.0
                            )
                        }
                        _ => String::new(),
                    };
                    bar.set_message(format!(
                        "{}{pace}  eta {eta}  {} {}, {} unchanged, {} failed",
                        crate::human::rate(per_sec),
                        crate::human::count(c.changed),
                        if self.plan { "would update" } else { "updated" },
                        crate::human::count(c.unchanged),
                        crate::human::count(c.failed)
                    ));
                }
            }
            ProgressMode::StatsLines(every) => {
                if self.last_line.elapsed() >= every {
                    self.last_line = Instant::now();
                    self.stats_line();
                }
            }
            ProgressMode::Off => {}
        }
    }
}

/// Several observers as one.
pub struct Tee(pub Vec<Box<dyn Observer>>);

impl Observer for Tee {
    fn record(&mut self, r: &RowRecord) {
        for o in &mut self.0 {
            o.record(r);
        }
    }
    fn passed(&mut self, seq: u64) {
        for o in &mut self.0 {
            o.passed(seq);
        }
    }
}

/// An observer the caller keeps a handle on, to finish it after the job (the job owns and
/// drops its own box).
pub struct Shared<T: Observer>(pub Arc<Mutex<T>>);

impl<T: Observer> Shared<T> {
    pub fn new(inner: T) -> (Shared<T>, Arc<Mutex<T>>) {
        let arc = Arc::new(Mutex::new(inner));
        (Shared(Arc::clone(&arc)), arc)
    }
}

impl<T: Observer> Observer for Shared<T> {
    fn record(&mut self, r: &RowRecord) {
        if let Ok(mut inner) = self.0.lock() {
            inner.record(r);
        }
    }
    fn passed(&mut self, seq: u64) {
        if let Ok(mut inner) = self.0.lock() {
            inner.passed(seq);
        }
    }
}

/// Takes the observer back once the job has dropped its handle.
pub fn reclaim<T: Observer>(arc: Arc<Mutex<T>>) -> Option<T> {
    Arc::try_unwrap(arc).ok().and_then(|m| m.into_inner().ok())
}

/// Rows that need a person, printed as they happen (through the log, so above the bar,
/// and as JSON under `--log-format json`), the first [`ErrorLines::SHOWN`] of them, then
/// listed again when the run ends: an operator sees which gateways failed without opening
/// the report.
#[derive(Default)]
pub struct ErrorLines {
    shown: Vec<(u64, String, Status, ErrorCode, String)>,
    more: u64,
}

impl ErrorLines {
    pub const SHOWN: usize = 20;

    /// The closing list; nothing when no row failed.
    pub fn finish(self, report: &std::path::Path) {
        if self.shown.is_empty() {
            return;
        }
        let total = self.shown.len() as u64 + self.more;
        let mut text = format!(
            "{} row(s) need attention (failed, conflict or mismatch); all are in {}:",
            crate::human::count(total),
            report.display()
        );
        for (line, id, status, code, message) in &self.shown {
            let said = status_and_code(*status, code);
            text.push_str(&format!("\n  line {line}  {id}  {said}: {message}"));
        }
        if self.more > 0 {
            text.push_str(&format!(
                "\n  ... and {} more",
                crate::human::count(self.more)
            ));
        }
        tracing::warn!("{text}");
    }
}

/// `failed http_500`, but `conflict` (not `conflict conflict`) where the code only
/// repeats the status.
fn status_and_code(status: Status, code: &ErrorCode) -> String {
    if code.repeats(status) {
        status.to_string()
    } else {
        format!("{status} {code}")
    }
}

impl Observer for ErrorLines {
    fn record(&mut self, r: &RowRecord) {
        if !matches!(
            r.status,
            Status::Failed | Status::Conflict | Status::Mismatch
        ) {
            return;
        }
        if self.shown.len() >= Self::SHOWN {
            self.more += 1;
            return;
        }
        let message = crate::inert::text(&r.error, 300);
        tracing::warn!(
            line = r.row,
            id = %r.id,
            status = %r.status,
            code = %r.error_code,
            "row {}: {message}",
            status_and_code(r.status, &r.error_code)
        );
        self.shown
            .push((r.row, r.id.clone(), r.status, r.error_code.clone(), message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_that_repeats_the_status_is_said_once() {
        assert_eq!(
            status_and_code(Status::Conflict, &"conflict".into()),
            "conflict"
        );
        assert_eq!(
            status_and_code(Status::Mismatch, &"mismatch".into()),
            "mismatch"
        );
        assert_eq!(status_and_code(Status::Failed, &"".into()), "failed");
        assert_eq!(
            status_and_code(Status::Failed, &"http_500".into()),
            "failed http_500"
        );
    }
}

//! The run's report: named, claimed from the ledger in one call (the path checked against
//! the run's other files, locked, its chain's link chosen, checked against its run file),
//! and closed when the rows are done (the journal settled, the run marked finished).

use std::path::{Path, PathBuf};

use super::{Mode, RunError, RunOptions, Source};
use crate::engine::{JobError, Outcome, StopReason};
use crate::ledger::{self, Claim, Ledger, RunFile};
use crate::report::ReportFormat;

/// The report this run writes, claimed: see [`Ledger::claim`]. `run` is what an apply is
/// made from (a plan's is not recorded). The ledger holds the lock while it lives;
/// `ledger.report()` is the report (the next link of a chain, after a finished run).
pub(super) async fn claim_report(
    options: &RunOptions,
    manifest: &Path,
    run: &RunFile,
) -> Result<Ledger, RunError> {
    let report = options
        .report
        .clone()
        .unwrap_or_else(|| default_report_path(manifest, options.report_format, options.mode));
    let paths = RunPaths::of(options);
    let run = (options.mode == Mode::Apply).then(|| run.clone());
    let (wait, resume) = (options.lock_timeout, options.resume);
    // Taking a lock may wait (`--lock-timeout`): off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        let claim = Claim {
            report,
            wait,
            run: run.as_ref(),
            resume,
        };
        Ledger::claim(&claim, |report| paths.refuse_clash(report))
    })
    .await
    .map_err(|e| RunError::Job(JobError::Internal(e.to_string())))?
}

/// `STEM.report.csv` for apply, `STEM.plan.csv` for a plan: a plan never takes the name
/// apply will use, so `plan m.csv` then `apply m.csv --yes` works with the defaults.
pub fn default_report_path(manifest: &Path, format: ReportFormat, mode: Mode) -> PathBuf {
    let stem = match manifest.file_stem().map(|s| s.to_string_lossy()) {
        Some(s) if s == "-" => "stdin".to_owned(),
        Some(s) => s.into_owned(),
        None => "manifest".to_owned(),
    };
    let ext = match format {
        ReportFormat::Csv => "csv",
        ReportFormat::Jsonl => "jsonl",
    };
    let kind = match mode {
        Mode::Apply => "report",
        Mode::Plan => "plan",
    };
    PathBuf::from(format!("{stem}.{kind}.{ext}"))
}

/// The plan an interactive apply shows and then applies: `REPORT.plan`.
pub fn reviewed_plan_path(report: &Path) -> PathBuf {
    ledger::beside(report, ".plan")
}

/// The files a run reads and writes besides its report, with the flag that named each.
struct RunPaths {
    mode: Mode,
    source: Source,
    save_plan: Option<PathBuf>,
    also_writes: Vec<(&'static str, PathBuf)>,
    also_reads: Vec<(&'static str, PathBuf)>,
}

impl RunPaths {
    fn of(options: &RunOptions) -> RunPaths {
        RunPaths {
            mode: options.mode,
            source: options.source.clone(),
            save_plan: options.save_plan.clone(),
            also_writes: options.also_writes.clone(),
            also_reads: options.also_reads.clone(),
        }
    }

    /// Refuses a run whose outputs (the report and its side files, a saved plan, the
    /// caller's own) name one of its inputs (the manifest or plan, the caller's) or each
    /// other.
    fn refuse_clash(&self, report: &Path) -> Result<(), RunError> {
        let journal = ledger::journal_path(report);
        let reviewed = reviewed_plan_path(report);
        let mut outputs: Vec<(&str, &Path)> = vec![("--report", report), ("the journal", &journal)];
        if self.mode == Mode::Apply && matches!(self.source, Source::Manifest { .. }) {
            outputs.push(("the reviewed plan", &reviewed));
        }
        if let Some(plan) = &self.save_plan {
            outputs.push(("--out", plan));
        }
        outputs.extend(self.also_writes.iter().map(|(f, p)| (*f, p.as_path())));
        let mut inputs: Vec<(&str, &Path)> = match &self.source {
            Source::Manifest { path, .. } => vec![("the manifest", path)],
            Source::Plan(path) => vec![("--plan", path)],
        };
        inputs.extend(self.also_reads.iter().map(|(f, p)| (*f, p.as_path())));
        crate::output::refuse_clash(&outputs, &inputs).map_err(RunError::Usage)
    }
}

/// The report after its rows: every finished row is in it now, so the journal keeps
/// only the before-values of writes that may have landed unseen (a later --resume settles
/// them; a report that failed keeps its whole journal: it may be the only record left);
/// and an apply that went through every row is marked finished (a later --resume starts
/// the next report).
pub(super) fn close_report(
    options: &RunOptions,
    ledger: &mut Ledger,
    run: &RunFile,
    outcome: &Outcome,
) {
    if options.mode != Mode::Apply {
        return;
    }
    let report = ledger.report().to_owned();
    if outcome.stopped != Some(StopReason::LedgerFailed)
        && let Err(e) = ledger::settle_journal(&report, &outcome.unsettled)
    {
        tracing::warn!(
            journal = %ledger::journal_path(&report).display(),
            "cannot tidy the journal ({e}); it is kept, and --resume still reads it"
        );
    }
    if outcome.stopped.is_none() && outcome.refused_projects.is_empty() {
        record_finished(ledger, run, &report);
    }
}

/// Marks the report's run finished: the next `--resume` of it starts a new report. A
/// run file that cannot be written is said loudly: that next resume would continue this
/// finished run and read nothing.
fn record_finished(ledger: &mut Ledger, run: &RunFile, report: &Path) {
    if let Err(e) = ledger.record_finished(run) {
        tracing::warn!(
            run_file = %ledger::run_path(report).display(),
            "cannot record that this run finished ({e}): a later --resume of this report \
             would continue it, reading nothing; give the next run another --report"
        );
    }
}

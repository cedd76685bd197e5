//! One `plan` or `apply`, as a Rust program calls it: everything around the [`engine`]'s
//! pipeline, in order.
//!
//! ```text
//!  open the source (a saved plan verified whole) ──▶ read the whole manifest once
//!  (unreadable: refused before any request; what the run is made from) ──▶ claim the
//!  report in one call (its path checked against the run's other files, locked: another
//!  run refused at once or after --lock-timeout; with --resume of a finished run, the next
//!  report of its chain, locked too; checked against its run file: exists / --resume /
//!  fingerprint) ──▶ a saved plan's header (space, manifest) ──▶ one apply per manifest
//!  and space on this machine ──▶ review: plan into REPORT.plan, show, ask, then apply
//!  that plan (or count the changes for --max-changes) ──▶ open the report (resume,
//!  journal) ──▶ run the pipeline until done or `stop` ──▶ close the report: settle the
//!  journal, mark the run finished (went through every row: a later --resume starts the
//!  next report)
//! ```
//!
//! The caller brings what is about people: how the go-ahead is asked ([`Approval`]), what
//! watches the rows ([`RunHooks::observe`]: progress, the plan on a screen), and when to stop
//! (a token its signal handler cancels). The CLI (`src/cli/reconcile.rs`) maps flags to a
//! [`RunOptions`] and a [`Finished`] or [`RunError`] to an exit code; `examples/library.rs`
//! drives the same API against the sandbox.
//!
//! The parts: `claim` (the report: named, claimed, closed), `review` (the interactive
//! apply's plan-show-ask, and the `--max-changes` count) and `passes` (the one pass over
//! the manifest before any request, and one pass of the engine with fresh clients and
//! limiter).
//!
//! [`engine`]: crate::engine

mod claim;
mod passes;
mod review;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::budget::WriteBudget;
use crate::client::{ClientBuildError, ClientConfig, RequestStats};
use crate::engine::{JobError, Observer, Outcome};
use crate::export::PagingLimits;
use crate::ledger::{GatewayLock, LedgerError, Opened, RunFile};
use crate::manifest::{Format, Manifest, ManifestError};
use crate::progress::Tee;
use crate::report::ReportFormat;
use crate::saved_plan::{self, PlanError, PlanHeader, PlanWriter};
use crate::selection::Selection;
use crate::shard::Shard;
use crate::snapshot::ReadMode;

use claim::{claim_report, close_report};
pub use claim::{default_report_path, reviewed_plan_path};
use passes::{Pass, Scan, plan_header_for, scan};
use review::Reviewed;

/// Where a run's rows come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A manifest (`-` for stdin), its format from the extension unless given.
    Manifest {
        path: PathBuf,
        format: Option<Format>,
    },
    /// A saved plan (`plan --out`): exactly its changes.
    Plan(PathBuf),
}

/// Read only, or read and write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// `--max-errors`: a count, or a share of the rows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ErrorLimit {
    Count(u64),
    Percent(f64),
}

impl ErrorLimit {
    /// The number of failed rows that stops a job over `rows` rows (at least 1).
    pub fn threshold(self, rows: u64) -> u64 {
        match self {
            ErrorLimit::Count(n) => n,
            ErrorLimit::Percent(p) => ((rows as f64 * p / 100.0).ceil() as u64).max(1),
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub source: Source,
    pub mode: Mode,
    /// The report; `None`: `STEM.report.csv` (apply) or `STEM.plan.csv` (plan) here.
    pub report: Option<PathBuf>,
    pub report_format: ReportFormat,
    /// Continue the report's run (apply).
    pub resume: bool,
    pub shard: Option<Shard>,
    /// `--only`/`--skip`: the rows this run is given; the others are reported `skipped`.
    pub selection: Option<Arc<Selection>>,
    pub max_errors: Option<ErrorLimit>,
    /// Write only the first N changes (a canary).
    pub limit: Option<u64>,
    /// Refuse to write anything when more rows would change.
    pub max_changes: Option<u64>,
    /// Save the plan here (plan mode): `apply --plan` of it writes exactly its changes.
    pub save_plan: Option<PathBuf>,
    /// How long to wait for another run's lock on the report (zero: refuse at once).
    pub lock_timeout: std::time::Duration,
    pub client: ClientConfig,
    /// `--concurrency`: requests on the wire at most, and rows under way.
    pub concurrency: usize,
    pub write_rate: NonZeroU32,
    /// Share of the space's announced write budget left to its other clients (`--reserve`).
    pub reserve: f64,
    /// `None`: reads are not limited.
    pub read_rate: Option<NonZeroU32>,
    /// One GET a row, or the space read in pages first (see [`crate::snapshot`]).
    pub read_mode: ReadMode,
    /// How far listing the space may go (`list` and `auto` read modes).
    pub paging: PagingLimits,
    /// Other files the caller writes for this run (the CLI's `--summary-json`) and reads
    /// (`--config`), with the flag that named each: no output may name an input or another
    /// output.
    pub also_writes: Vec<(&'static str, PathBuf)>,
    pub also_reads: Vec<(&'static str, PathBuf)>,
    /// Several projects of one space: each row runs with its `project`'s credentials, on
    /// one write budget; the report gains the `project` column.
    pub projects: Option<Arc<crate::projects::ProjectSet>>,
}

impl RunOptions {
    /// Defaults for a run of `source` against the space `client` points at.
    pub fn new(source: Source, mode: Mode, client: ClientConfig) -> RunOptions {
        RunOptions {
            source,
            mode,
            report: None,
            report_format: ReportFormat::Csv,
            resume: false,
            shard: None,
            selection: None,
            max_errors: None,
            limit: None,
            max_changes: None,
            save_plan: None,
            lock_timeout: std::time::Duration::ZERO,
            client,
            concurrency: crate::settings::defaults::CONCURRENCY,
            write_rate: NonZeroU32::new(crate::settings::defaults::WRITE_RATE)
                .unwrap_or(NonZeroU32::MIN),
            reserve: crate::budget::DEFAULT_RESERVE,
            read_rate: NonZeroU32::new(crate::settings::defaults::READ_RATE),
            read_mode: ReadMode::default(),
            paging: PagingLimits::default(),
            also_writes: Vec::new(),
            also_reads: Vec::new(),
            projects: None,
        }
    }
}

/// Makes the observer that shows the reviewed plan, given where the plan is saved.
pub type PreviewFn<'a> = Box<dyn FnOnce(&Path) -> Box<dyn Observer> + 'a>;
/// Asks for the go-ahead, given the plan's outcome.
pub type AskFn<'a> = Box<dyn FnOnce(&Outcome) -> bool + 'a>;
/// Makes the observer that sees every record, once the rows are about to run.
pub type ObserveFn<'a> = Box<dyn FnOnce(&RunStart) -> Box<dyn Observer> + 'a>;

/// How an apply gets its go-ahead.
pub enum Approval<'a> {
    /// Given already (`--yes`, a script, or a saved plan, which was the review).
    Given,
    /// Plan into `REPORT.plan` first, show it to `preview` (called with that path), ask
    /// with the plan's outcome, then apply exactly that plan.
    Ask {
        preview: PreviewFn<'a>,
        ask: AskFn<'a>,
    },
}

/// What the run knows when its rows start: for the caller's observers.
#[derive(Debug, Clone)]
pub struct RunStart {
    pub report: PathBuf,
    /// The rows source actually run (the reviewed plan, after an interactive review).
    pub source: PathBuf,
    pub format: Format,
    /// Rows in the manifest, and in this shard.
    pub rows: u64,
    pub in_shard: u64,
    /// Rows an earlier run finished (`--resume`): passed over.
    pub already_done: u64,
    /// The space's write budget as the job sees it (apply): progress shows it.
    pub budget: Option<Arc<WriteBudget>>,
    /// The run's request counters, live (metrics read them while the rows run).
    pub stats: Arc<RequestStats>,
}

/// The caller's side of a run.
pub struct RunHooks<'a> {
    /// Cancelled from outside (an interrupt): no new row or PATCH starts; requests on the
    /// wire finish.
    pub stop: CancellationToken,
    /// Cancelled once an interrupt's grace has run out: requests still on the wire are
    /// given up and their rows reported as they stand (the report stays whole).
    pub hurry: CancellationToken,
    /// Called once the rows are about to run; what it returns sees every record.
    pub observe: Option<ObserveFn<'a>>,
}

/// How a run ended, when it did not fail.
#[derive(Debug)]
pub enum Finished {
    /// The rows ran (to the end, or until a stop; see `outcome.stopped`).
    Ran {
        outcome: Outcome,
        start: RunStart,
        /// `Some` when a plan was to be saved: where, or why not.
        plan_saved: Option<Result<PathBuf, PlanError>>,
    },
    /// The review found nothing to change: nothing written.
    NothingToDo { preview: Outcome },
    /// Asked, and declined: nothing written.
    Declined {
        preview: Outcome,
        /// The plan that was shown, kept: `apply --plan` of it applies exactly it.
        plan: PathBuf,
    },
    /// The plan changes more rows than `max_changes`: nothing written.
    TooManyChanges { changes: u64, max: u64 },
    /// The review stopped before it saw every row (credentials, the space, an interrupt):
    /// nothing written.
    StoppedWhilePlanning { preview: Outcome },
}

/// Why a run could not start or go on. Each maps to one exit code in the CLI.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The manifest (or saved plan's rows) cannot be read as a whole.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The report: held by another run, exists without `--resume`, another manifest...
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A saved plan that cannot be used here.
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Client(#[from] ClientBuildError),
    /// A combination of options that cannot run.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Job(#[from] JobError),
}

/// Runs one plan or apply to its end. See the module docs for the order of things.
pub async fn execute(
    options: RunOptions,
    approval: Approval<'_>,
    hooks: RunHooks<'_>,
) -> Result<Finished, RunError> {
    let (manifest, plan_header) = open_source(&options)?;
    // Several projects: each row's own project reads it (a list shows one project's).
    let lists = options.read_mode != ReadMode::Get && options.projects.is_none();
    let (scan, manifest, options) = read_manifest(options, &manifest, lists).await?;
    let run_file = run_file(&options, &manifest, &scan);
    let mut ledger = claim_report(&options, manifest.source(), &run_file).await?;
    let report = ledger.report().to_owned();
    check_saved_plan(&options, plan_header.as_ref(), &scan)?;
    let _gateway_lock = lock_gateways(&options, &scan, &report)?;
    let reviewing = review::Review {
        options: &options,
        report: &report,
        saved_plan: plan_header.is_some(),
        lists,
    };
    let (scan, manifest) = match reviewing.decide(approval, manifest, scan).await? {
        Reviewed::Go { scan, manifest } => (*scan, manifest),
        Reviewed::Stop(finished) => return Ok(*finished),
    };
    ledger.set_project_column(options.projects.is_some());
    let opened = ledger.open(
        (options.mode == Mode::Apply).then_some(&run_file),
        options.report_format,
        options.resume,
    )?;
    let start = starting(&options, &manifest, &scan, &report, &opened);
    let (outcome, plan_saved) = run_rows(&options, &manifest, &scan, opened, &start, hooks).await?;
    close_report(&options, &mut ledger, &run_file, &outcome);
    Ok(Finished::Ran {
        outcome,
        start,
        plan_saved,
    })
}

/// The one pass over the whole manifest (see [`scan`]), and the options as it leaves
/// them: a manifest that names projects runs with its projects.
async fn read_manifest(
    options: RunOptions,
    manifest: &Manifest,
    lists: bool,
) -> Result<(Scan, Manifest, RunOptions), RunError> {
    let projects = passes::scan_projects(&options);
    let (scan, manifest) = scan(
        manifest,
        options.shard,
        options.selection.clone(),
        lists,
        projects,
    )
    .await?;
    let options = passes::with_named_projects(options, &scan);
    Ok((scan, manifest, options))
}

/// What this run is made from (its run file), fixed before an interactive apply swaps the
/// manifest for the plan it shows: a resume continues the manifest's run, not the plan's.
/// With several projects: the projects its rows belong to, and its (project, gateway)
/// pairs.
fn run_file(options: &RunOptions, manifest: &Manifest, scan: &Scan) -> RunFile {
    let several = options.projects.is_some();
    RunFile {
        selection: options.selection.as_ref().map(|s| s.digest()),
        projects: several.then(|| scan.projects.clone()),
        project_rows: several.then(|| scan.pairs.clone()),
        ..RunFile::new(
            options.client.base_url.as_str(),
            &options.client.credentials.project_id,
            options.shard,
            manifest.source(),
            &scan.sha256,
        )
    }
}

/// The rows' source, opened: a manifest, or a saved plan verified whole (with its header).
fn open_source(options: &RunOptions) -> Result<(Manifest, Option<PlanHeader>), RunError> {
    match &options.source {
        Source::Manifest { path, format } => {
            if path.extension().is_some_and(|e| e == "plan") && format.is_none() {
                return Err(RunError::Usage(format!(
                    "{p} looks like a saved plan: apply it with --plan {p}",
                    p = path.display()
                )));
            }
            Ok((Manifest::open(path, *format)?, None))
        }
        Source::Plan(path) => {
            if options.shard.is_some() {
                return Err(RunError::Usage(
                    "--shard does not go with --plan: a saved plan already holds only its rows \
                     (plan with --shard instead)"
                        .into(),
                ));
            }
            let header = saved_plan::verify(path)?;
            Ok((Manifest::open(path, Some(Format::Plan))?, Some(header)))
        }
    }
}

/// A saved plan applies only to the space it was made for, with its manifest unchanged,
/// and whole: every row of it in a project this run can act for.
fn check_saved_plan(
    options: &RunOptions,
    header: Option<&PlanHeader>,
    scan: &Scan,
) -> Result<(), RunError> {
    let (Some(header), Source::Plan(path)) = (header, &options.source) else {
        return Ok(());
    };
    let manifest_now = crate::bounded::file_sha256(Path::new(&header.manifest));
    header.check(
        path,
        options.client.base_url.as_str(),
        manifest_now.as_deref(),
    )?;
    match &scan.unresolved {
        // A reviewed plan is applied whole or not at all.
        Some(why) => Err(RunError::Usage(format!(
            "the saved plan has a row of a project this run cannot act for: {why}; \
             nothing was sent"
        ))),
        None => Ok(()),
    }
}

/// One apply of this manifest to this space at a time on this machine, whatever the
/// report. Held until the run ends.
fn lock_gateways(
    options: &RunOptions,
    scan: &Scan,
    report: &Path,
) -> Result<Option<GatewayLock>, RunError> {
    if options.mode != Mode::Apply {
        return Ok(None);
    }
    // Keyed by the (project, gateway) pairs, however the projects are spelled.
    let named = match scan.projects.as_slice() {
        [one] => format!("project {one}"),
        many if many.len() > 5 => format!(
            "projects {} and {} more",
            many[..5].join(", "),
            many.len() - 5
        ),
        many => format!("projects {}", many.join(", ")),
    };
    let lock = GatewayLock::acquire(&named, &scan.pairs, report)?;
    Ok(Some(lock))
}

/// What the rows start with, said in the log and handed to the caller's observers.
fn starting(
    options: &RunOptions,
    manifest: &Manifest,
    scan: &Scan,
    report: &Path,
    opened: &Opened,
) -> RunStart {
    if opened.resumed {
        tracing::info!(already_done = opened.done.len(), "resuming");
    }
    if !opened.recovered.is_empty() {
        tracing::info!(
            rows = opened.recovered.len(),
            "before-values recovered from the journal and the report for rows an earlier \
             run may have written"
        );
    }
    tracing::info!(
        manifest = %manifest.source().display(),
        rows = scan.rows,
        in_shard = scan.in_shard,
        report = %report.display(),
        mode = ?options.mode,
        "starting"
    );
    RunStart {
        report: report.to_owned(),
        source: manifest.source().to_owned(),
        format: manifest.format(),
        rows: scan.rows,
        in_shard: scan.in_shard,
        already_done: opened.done.len() as u64,
        budget: (options.mode == Mode::Apply).then(|| {
            // Shards spend one count: each takes its share of the room above the reserve.
            let sharers = options.shard.map_or(1, |s| u64::from(s.count));
            Arc::new(
                WriteBudget::new(
                    options.write_rate.get(),
                    options.reserve,
                    options.client.retry.max_outage,
                )
                .shared_by(sharers),
            )
        }),
        stats: Arc::default(),
    }
}

/// The rows, run into the opened report: the caller's observers and a saved plan's writer
/// see every record. The counts include the rows an earlier run finished.
async fn run_rows(
    options: &RunOptions,
    manifest: &Manifest,
    scan: &Scan,
    opened: Opened,
    start: &RunStart,
    hooks: RunHooks<'_>,
) -> Result<(Outcome, Option<Result<PathBuf, PlanError>>), RunError> {
    let mode = options.mode;
    let mut pass = Pass::new(options, manifest, scan);
    pass.max_errors = options.max_errors.map(|b| b.threshold(scan.chosen));
    pass.limit = options.limit;
    pass.done = Some(Arc::new(opened.done));
    pass.journal = opened.journal;
    pass.recovered = Some(Arc::new(opened.recovered));
    pass.budget = start.budget.clone();
    pass.stats = Some(Arc::clone(&start.stats));
    let mut observers: Vec<Box<dyn Observer>> = Vec::new();
    if let Some(observe) = hooks.observe {
        observers.push(observe(start));
    }
    let plan_file = match &options.save_plan {
        Some(path) if mode == Mode::Plan => {
            let header = plan_header_for(options, manifest, scan);
            let writer = PlanWriter::create(path, header).map_err(|cause| PlanError::Io {
                path: path.clone(),
                cause,
            })?;
            let (obs, handle) = crate::progress::Shared::new(writer);
            observers.push(Box::new(obs));
            Some(handle)
        }
        _ => None,
    };
    let mut outcome = pass
        .run_engine(
            opened.writer,
            mode == Mode::Apply,
            hooks.stop,
            hooks.hurry,
            Some(Box::new(Tee(observers))),
        )
        .await?;
    let plan_saved = plan_file
        .and_then(crate::progress::reclaim)
        .map(|writer| writer.finish(outcome.stopped.is_none()));
    for (status, n) in &opened.kept {
        *outcome.counts.entry(*status).or_default() += n;
    }
    Ok((outcome, plan_saved))
}

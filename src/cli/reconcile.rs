//! `plan` and `apply` at the command line. The run itself is [`crate::run::execute`]; this
//! module maps the flags to its options and brings what is about a person: the review on
//! a terminal (the plan's diff, its summary, the question), progress and the plan on
//! stdout, SIGINT/SIGTERM (no new PATCH; requests on the wire get `--grace`, a second
//! signal exits at once), the summary, the hint to continue, and the exit code.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::metrics_flags::{read_mode_name, run_labels, sinks_config};
use super::summary::{Limits, summary_json, summary_text, write_summary_json};
use super::{ApplyArgs, Context, Exit, ExitContext, Failure, JobArgs, manifest_failure, usage};
use crate::engine::{Observer, Outcome, StopReason};
use crate::ledger::{self, LedgerError};
use crate::metrics::{Ending, RunMetrics, Sinks};
use crate::plan_view::{PlanFormat, PlanView};
use crate::progress::{self, Progress, ProgressMode, Tee};
use crate::report::ReportFormat;
use crate::run::{self as library, Approval, Finished, RunError, RunHooks, RunOptions, RunStart};
use crate::saved_plan::PlanError;
use crate::selection::Selection;
use crate::settings::LogFormat;
use crate::settings::named;
use crate::status::Status;

/// Flags and variables the messages cite, from their declarations.
const REPORT_FLAG: &str = named::report.long_flag();
const PROJECTS_FLAG: &str = named::projects.long_flag();
const PROJECT_ID_ENV: &str = named::project_id.env_var();
const TOKEN_ENV: &str = named::api_token_file.env_var();

pub use crate::run::{Mode, Source};

/// What the CLI keeps of its observers, to finish them after the run.
#[derive(Default)]
struct Screens {
    progress: Option<Arc<Mutex<Progress>>>,
    plan: Option<Arc<Mutex<PlanView<std::io::BufWriter<std::io::Stdout>>>>>,
    errors: Option<Arc<Mutex<progress::ErrorLines>>>,
}

/// One `plan` or `apply` as the command line asked for it.
pub struct RunArgs<'a> {
    pub source: Source,
    pub job: &'a JobArgs,
    pub mode: Mode,
    /// The apply's own flags (`None` for a plan).
    pub apply: Option<&'a ApplyArgs>,
    /// `plan --out`.
    pub save_plan: Option<&'a Path>,
    /// Exit 2 when changes are pending; without it, pending changes are a success.
    pub detailed_exitcode: bool,
}

/// `plan` or `apply`, watched by the metrics' sinks when any is asked for: they see the
/// exit code the process ends with, whatever it is, a refusal before the first row too.
pub async fn plan_or_apply(ctx: &Context, args: RunArgs<'_>) -> Result<Exit, Failure> {
    let sinks = sinks_config(args.job)?;
    let labels = run_labels(ctx, args.job, args.mode);
    let read_mode = read_mode_name(args.job.read_mode);
    let detailed = args.detailed_exitcode;
    let exit = |result: Result<Exit, Failure>| match result {
        Ok(Exit::ChangesPending) if !detailed => Ok(Exit::Ok),
        other => other,
    };
    if !sinks.any() {
        return exit(reconcile(ctx, args, None).await);
    }
    let metrics = RunMetrics::new(labels, read_mode);
    let sinks = Sinks::start(Arc::clone(&metrics), sinks).await;
    let result = exit(reconcile(ctx, args, Some(&metrics)).await);
    let exit_code = match &result {
        Ok(exit) => *exit as i32,
        Err(failure) => failure.exit as i32,
    };
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    sinks.finish(Ending { exit_code, at }).await;
    result
}

/// `plan` or `apply`: the flags to options, the review and the screens, the run under
/// the signal watch, then what a person (or a script) is told.
async fn reconcile(
    ctx: &Context,
    args: RunArgs<'_>,
    metrics: Option<&Arc<RunMetrics>>,
) -> Result<Exit, Failure> {
    let RunArgs {
        source,
        job,
        mode,
        apply,
        save_plan,
        ..
    } = args;
    let yes = apply.is_some_and(|a| a.yes);
    refuse_unconfirmed(mode, yes, &source)?;
    let options = run_options(ctx, source, job, mode, apply, save_plan)?;
    let approval = if mode == Mode::Apply && !yes {
        review_on_terminal(ctx)
    } else {
        Approval::Given
    };
    let screens = Arc::new(Mutex::new(Screens::default()));
    let (stop, hurry) = (CancellationToken::new(), CancellationToken::new());
    let grace = Duration::from_secs(apply.map_or(30, |a| a.grace));
    let signals = tokio::spawn(watch_signals(stop.clone(), hurry.clone(), grace));
    let hooks = RunHooks {
        stop,
        hurry,
        observe: Some(Box::new(observers(
            ctx,
            job,
            mode,
            Arc::clone(&screens),
            metrics.cloned(),
        ))),
    };
    let finished = library::execute(options, approval, hooks).await;
    signals.abort();
    let mut screens = std::mem::take(&mut *screens.lock().unwrap_or_else(|p| p.into_inner()));
    screens.finish_progress();
    let (outcome, start, plan_saved) = match finished.map_err(run_failure)? {
        Finished::Ran {
            outcome,
            start,
            plan_saved,
        } => (outcome, start, plan_saved),
        before_writing => return Ok(nothing_written(ctx, before_writing)),
    };
    let report = start.report.clone();
    if let Some(metrics) = metrics {
        metrics.set_rows(outcome.counts.iter().map(|(s, n)| (*s, *n)));
        metrics.set_project_rows(&outcome.per_project);
    }
    if let Some(errors) = screens.errors.and_then(progress::reclaim) {
        errors.finish(&report);
    }
    say_plan_saved(ctx, plan_saved);
    say_summary(ctx, mode, &outcome, &report);
    if let Some(reason) = outcome.stopped {
        say_stopped(ctx, mode, reason, &outcome, &start, &rows_flags(job));
    }
    if let Some(path) = &job.summary_json {
        let target = ctx.target().ok().flatten();
        let limits = Limits::of(&ctx.settings);
        let summary = with_target(summary_json(&outcome, &report, limits), target.as_ref());
        write_summary_json(path, &summary).exit_with(Exit::Usage)?;
    }
    Ok(exit_code(&outcome, mode))
}

/// Apply writes: off a terminal it needs `--yes`, unless it applies a saved plan (that was
/// the review).
fn refuse_unconfirmed(mode: Mode, yes: bool, source: &Source) -> Result<(), Failure> {
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    let saved = matches!(source, Source::Plan(_));
    if mode == Mode::Apply && !yes && !interactive && !saved {
        return Err(usage(
            "apply writes to the API: pass --yes to confirm when not on a terminal \
             (or use `plan` / --dry-run to see the changes first)",
        ));
    }
    Ok(())
}

/// What several projects do not do yet: the interactive review (untested with projects)
/// is refused (exit 64) rather than risk a row with the wrong project's credentials.
fn refuse_with_projects(options: &RunOptions, yes: bool) -> Result<(), Failure> {
    let saved_plan = matches!(options.source, Source::Plan(_));
    if options.projects.is_none() || options.mode != Mode::Apply || yes || saved_plan {
        return Ok(());
    }
    Err(super::usage(format!(
        "with {PROJECTS_FLAG}, the interactive review (apply without --yes) is not supported \
         yet: plan (-o PLAN to save it), then apply --yes (or apply --plan PLAN --yes)"
    )))
}

/// The flags and settings as the library's options.
fn run_options(
    ctx: &Context,
    source: Source,
    job: &JobArgs,
    mode: Mode,
    apply: Option<&ApplyArgs>,
    save_plan: Option<&Path>,
) -> Result<RunOptions, Failure> {
    let (client, projects) = ctx.run_clients()?;
    let mut options = RunOptions::new(source, mode, client);
    options.projects = projects;
    refuse_with_projects(&options, apply.is_some_and(|a| a.yes))?;
    options.report = ctx.global.report.clone();
    options.report_format = report_format_for(ctx)?;
    options.resume = apply.is_some_and(|a| a.resume);
    options.shard = job.shard;
    refuse_old_output(apply.and_then(|a| a.old_output.as_deref()))?;
    options.selection = selection(job)?;
    options.max_errors = apply.and_then(|a| a.max_errors);
    options.limit = apply.and_then(|a| a.limit);
    options.max_changes = apply.and_then(|a| a.max_changes);
    options.save_plan = save_plan.map(Path::to_owned);
    options.lock_timeout = Duration::from_secs(job.lock_timeout);
    options.concurrency = ctx.settings.concurrency;
    options.write_rate = ctx.settings.write_rate;
    options.reserve = ctx.settings.reserve;
    options.read_rate = ctx.settings.read_rate;
    options.read_mode = job.read_mode;
    options.paging = ctx.settings.paging;
    options.also_writes = [
        ("--summary-json", &job.summary_json),
        ("--metrics-file", &job.metrics_file),
    ]
    .into_iter()
    .filter_map(|(flag, path)| Some((flag, path.clone()?)))
    .collect();
    options.also_reads = ctx
        .global
        .config
        .iter()
        .map(|p| (const { named::config.long_flag() }, p.clone()))
        .chain(id_files("--only", &job.only))
        .chain(id_files("--skip", &job.skip))
        .collect();
    Ok(options)
}

/// The old `--output FORMAT` of apply, refused with its new name.
fn refuse_old_output(format: Option<&str>) -> Result<(), Failure> {
    match format {
        Some(format) => Err(old_output(format)),
        None => Ok(()),
    }
}

/// `--output text|json`, the flag's old meaning, refused with the new name.
pub(super) fn old_output(format: &str) -> Failure {
    usage(format!(
        "--output no longer sets how the plan prints: use --diff-format {}. (-o/--output \
         names a file in every command that has it: export, rollback, and plan -o PLAN to \
         save the plan)",
        crate::inert::text(format, 40)
    ))
}

/// `--only`/`--skip`, read (their @FILEs too).
fn selection(job: &JobArgs) -> Result<Option<Arc<Selection>>, Failure> {
    let chosen = Selection::from_flags(&job.only, &job.skip).map_err(usage)?;
    Ok(chosen.map(Arc::new))
}

/// The files `--only @FILE` and `--skip @FILE` read: no output of the run may name one.
fn id_files(
    flag: &'static str,
    values: &[String],
) -> impl Iterator<Item = (&'static str, PathBuf)> {
    values
        .iter()
        .filter_map(move |v| Some((flag, PathBuf::from(v.strip_prefix('@')?))))
}

/// The review on a terminal: the plan's diff (cut at SHOWN_BEFORE_ASKING rows), its
/// summary, then the question.
fn review_on_terminal<'a>(ctx: &'a Context) -> Approval<'a> {
    type View = Arc<Mutex<PlanView<std::io::BufWriter<std::io::Stdout>>>>;
    let shown: Arc<Mutex<Option<View>>> = Arc::default();
    let colour = ctx.global.color.on_stdout();
    let slot = Arc::clone(&shown);
    Approval::Ask {
        preview: Box::new(move |plan_path: &Path| {
            let view = PlanView::new(
                std::io::BufWriter::new(std::io::stdout()),
                PlanFormat::Text,
                colour,
                false,
            )
            .with_cap(SHOWN_BEFORE_ASKING, plan_path.display().to_string());
            let (obs, handle) = progress::Shared::new(view);
            if let Ok(mut s) = slot.lock() {
                *s = Some(handle);
            }
            Box::new(obs) as Box<dyn Observer>
        }),
        ask: Box::new(move |outcome: &Outcome| {
            let handle = shown.lock().ok().and_then(|mut s| s.take());
            if let Some(view) = handle.and_then(progress::reclaim) {
                view.finish();
            }
            let limits = Limits::of(&ctx.settings);
            say(ctx, &summary_text("Plan", outcome, None, limits));
            confirm(outcome.count(Status::WouldUpdate)).unwrap_or(false)
        }),
    }
}

/// What watches the rows once they start: progress, and the plan on stdout (plan) or the
/// failed rows' lines (apply). Kept in `screens` to be finished after the run.
fn observers<'a>(
    ctx: &'a Context,
    job: &'a JobArgs,
    mode: Mode,
    screens: Arc<Mutex<Screens>>,
    metrics: Option<Arc<RunMetrics>>,
) -> impl FnOnce(&RunStart) -> Box<dyn Observer> + 'a {
    move |start: &RunStart| -> Box<dyn Observer> {
        let mut s = screens.lock().unwrap_or_else(|p| p.into_inner());
        let mut observers: Vec<Box<dyn Observer>> = Vec::new();
        if let Some(metrics) = metrics {
            metrics.attach(Arc::clone(&start.stats), start.budget.clone());
            observers.push(metrics.observer());
        }
        let remaining = start.in_shard.saturating_sub(start.already_done);
        let (obs, handle) = progress::Shared::new(
            Progress::new(progress_mode(ctx), remaining, mode == Mode::Plan)
                .with_budget(start.budget.clone()),
        );
        s.progress = Some(handle);
        observers.push(Box::new(obs));
        if mode == Mode::Apply {
            let (obs, handle) = progress::Shared::new(progress::ErrorLines::default());
            s.errors = Some(handle);
            observers.push(Box::new(obs));
        } else {
            let colour = ctx.global.color.on_stdout() && job.diff_format == PlanFormat::Text;
            // Buffered: a line-buffered stdout costs a system call per line of the plan.
            let (obs, handle) = progress::Shared::new(PlanView::new(
                std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
                job.diff_format,
                colour,
                job.show_unchanged,
            ));
            s.plan = Some(handle);
            observers.push(Box::new(obs));
        }
        Box::new(Tee(observers))
    }
}

impl Screens {
    /// The bar and the plan, finished before anything else is said.
    fn finish_progress(&mut self) {
        if let Some(p) = self.progress.take().and_then(progress::reclaim) {
            p.finish();
        }
        if let Some(view) = self.plan.take().and_then(progress::reclaim) {
            view.finish();
        }
    }
}

/// A run that ended at its review: why nothing was written, and the exit code.
fn nothing_written(ctx: &Context, finished: Finished) -> Exit {
    match finished {
        Finished::NothingToDo { preview } => {
            say(ctx, "nothing to change; nothing written.");
            exit_code(&preview, Mode::Plan)
        }
        Finished::Declined { plan, .. } => {
            say(
                ctx,
                &format!(
                    "declined; nothing written. The plan shown is kept in {p}: apply exactly \
                     it later with: sipgw-bulk apply --plan {p}",
                    p = shell_quote(&plan)
                ),
            );
            Exit::Aborted
        }
        Finished::TooManyChanges { changes, max } => {
            say(
                ctx,
                &format!(
                    "refused: the plan changes {changes} rows, more than --max-changes {max}; \
                     nothing written"
                ),
            );
            Exit::Aborted
        }
        Finished::StoppedWhilePlanning { preview } => {
            let why = preview
                .stopped
                .map(|r| format!("{r:?}").to_lowercase())
                .unwrap_or_default();
            say(
                ctx,
                &format!("stopped while planning ({why}); nothing written"),
            );
            Exit::Aborted
        }
        // Not a review's end; the caller handles it.
        Finished::Ran { outcome, .. } => exit_code(&outcome, Mode::Apply),
    }
}

fn say_plan_saved(ctx: &Context, plan_saved: Option<Result<std::path::PathBuf, PlanError>>) {
    match plan_saved {
        Some(Ok(path)) => say(
            ctx,
            &format!(
                "plan saved to {p}; apply exactly these changes with: sipgw-bulk apply \
                 --plan {p}",
                p = shell_quote(&path)
            ),
        ),
        Some(Err(e)) => tracing::warn!("{e}"),
        None => {}
    }
}

fn say_summary(ctx: &Context, mode: Mode, outcome: &Outcome, report: &Path) {
    let title = if mode == Mode::Apply { "Apply" } else { "Plan" };
    let limits = Limits::of(&ctx.settings);
    let target = ctx.target().ok().flatten();
    match ctx.settings.log_format {
        // JSON logs: the summary is one event whose `summary` is an object (a tracing field
        // would hold it as a string of JSON), in the subscriber's own line shape.
        LogFormat::Json if !ctx.global.quiet => eprintln!(
            "{}",
            super::json_log_line(
                "INFO",
                &format!("{title} finished"),
                "summary",
                with_target(summary_json(outcome, report, limits), target.as_ref())
            )
        ),
        LogFormat::Text if !ctx.global.quiet => {
            let mut text = summary_text(title, outcome, Some(report), limits);
            if let Some(target) = &target {
                text.push_str(&format!("\n  {target}"));
            }
            say(ctx, &text)
        }
        // -q: errors only.
        _ => {}
    }
}

/// The summary's JSON with the space it ran against (`space`: host, project and where each
/// came from).
fn with_target(
    mut summary: serde_json::Value,
    target: Option<&super::space::Target>,
) -> serde_json::Value {
    if let (Some(map), Some(target)) = (summary.as_object_mut(), target) {
        map.insert("space".into(), target.json());
    }
    summary
}

/// Why the job stopped, and the command that continues it.
fn say_stopped(
    ctx: &Context,
    mode: Mode,
    reason: StopReason,
    outcome: &Outcome,
    start: &RunStart,
    rows: &str,
) {
    let report = &start.report;
    let detail = outcome.stop_detail.as_deref().unwrap_or("");
    let why = match reason {
        StopReason::Unauthorized => format!(
            "the space refused the credentials (401/403): {}",
            ctx.target().ok().flatten().map_or_else(
                || format!("check {PROJECT_ID_ENV} and {TOKEN_ENV}"),
                |t| t.credentials_hint()
            )
        ),
        StopReason::Unreachable => format!("the space cannot be reached: {detail}"),
        StopReason::ErrorLimit => "--max-errors was reached".to_owned(),
        StopReason::Interrupted => "interrupted".to_owned(),
        StopReason::LedgerFailed => format!(
            "{detail}. Rows finished after that are missing from the report; the journal {} \
             keeps the before-value of every write sent. Free the space, then resume",
            ledger::journal_path(report).display()
        ),
    };
    // A stopped plan is never continued by an apply: nobody reviewed those rows.
    let next = match mode {
        Mode::Apply => format!("To continue: {}", resume_command(start, report, rows)),
        Mode::Plan => format!(
            "To see every row, run the plan again with another {REPORT_FLAG} (this one is kept): \
             {}",
            plan_command(&start.source, rows)
        ),
    };
    say(
        ctx,
        &format!(
            "stopped: {why}; rows not attempted are `skipped` in {}. {next}",
            report.display(),
        ),
    );
}

/// A run's error as an exit code, by its type.
fn run_failure(err: RunError) -> Failure {
    match err {
        RunError::Manifest(m) | RunError::Job(crate::engine::JobError::Manifest(m)) => {
            manifest_failure(m)
        }
        RunError::Ledger(l) => ledger_failure(l),
        other => Failure {
            exit: Exit::Usage,
            error: other.into(),
        },
    }
}

fn ledger_failure(err: LedgerError) -> Failure {
    let exit = match err {
        LedgerError::Locked(_) | LedgerError::SameRun { .. } => Exit::Locked,
        _ => Exit::Usage,
    };
    Failure {
        exit,
        error: err.into(),
    }
}
fn progress_mode(ctx: &Context) -> ProgressMode {
    let g = &ctx.global;
    if g.quiet {
        ProgressMode::Off
    } else if !g.no_progress
        && std::io::stderr().is_terminal()
        && ctx.settings.log_format == LogFormat::Text
    {
        ProgressMode::Bar
    } else {
        ProgressMode::StatsLines(Duration::from_secs(g.stats_interval.max(1)))
    }
}
/// A line for the person (text logs) or one JSON log event (JSON logs), on stderr.
fn say(ctx: &Context, text: &str) {
    match ctx.settings.log_format {
        LogFormat::Text => eprintln!("{text}"),
        LogFormat::Json => tracing::info!("{text}"),
    }
}
fn exit_code(outcome: &Outcome, mode: Mode) -> Exit {
    match outcome.stopped {
        Some(
            StopReason::Unauthorized
            | StopReason::Unreachable
            | StopReason::ErrorLimit
            | StopReason::LedgerFailed,
        ) => Exit::Aborted,
        Some(StopReason::Interrupted) => Exit::Interrupted,
        // Some projects' credentials refused, not all: their rows are for --resume.
        None if outcome.has_errors() || !outcome.refused_projects.is_empty() => Exit::RowErrors,
        None if mode == Mode::Plan && outcome.count(Status::WouldUpdate) > 0 => {
            Exit::ChangesPending
        }
        // Changes made: the same code, 2, under --detailed-exitcode.
        None if mode == Mode::Apply && outcome.count(Status::Updated) > 0 => Exit::ChangesPending,
        None => Exit::Ok,
    }
}

/// The report's format: from `--report`'s extension (`.jsonl`, `.csv`) unless given with
/// `--report-format` or in the config; a contradiction is a usage error, never a `.jsonl`
/// file holding CSV.
fn report_format_for(ctx: &Context) -> Result<ReportFormat, Failure> {
    let named = ctx.global.report.as_deref().and_then(|p| {
        match p.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" => Some(ReportFormat::Jsonl),
            "csv" => Some(ReportFormat::Csv),
            _ => None,
        }
    });
    let chosen = ctx.global.report_format.or(ctx.file.report_format);
    match (named, chosen) {
        (Some(n), Some(c)) if n != c => Err(usage(format!(
            "{REPORT_FLAG} {} says {n:?} by its extension but the report format is {c:?}: drop one \
             or make them agree",
            ctx.global
                .report
                .as_deref()
                .unwrap_or(Path::new(""))
                .display()
        ))),
        (Some(n), _) => Ok(n),
        (None, c) => Ok(c.unwrap_or_default()),
    }
}

/// Rows of the plan shown before the interactive apply asks; the rest are counted.
const SHOWN_BEFORE_ASKING: u64 = 50;

/// A path as a shell word.
fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-@".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The flags that chose this run's rows (`--shard`, `--only`, `--skip`), as they would be
/// typed again: a resume must choose the same rows.
fn rows_flags(job: &JobArgs) -> String {
    let mut flags = String::new();
    if let Some(s) = job.shard {
        flags.push_str(&format!(" --shard {s}"));
    }
    for (flag, values) in [("--only", &job.only), ("--skip", &job.skip)] {
        for value in values {
            flags.push_str(&format!(" {flag} {}", shell_quote(Path::new(value))));
        }
    }
    flags
}

fn plan_command(manifest: &Path, rows: &str) -> String {
    format!(
        "sipgw-bulk plan {} {REPORT_FLAG} NEW-REPORT{rows}",
        shell_quote(manifest)
    )
}

fn resume_command(start: &RunStart, report: &Path, rows: &str) -> String {
    let quote = shell_quote;
    let mut cmd = if start.format == crate::manifest::Format::Plan {
        format!(
            "sipgw-bulk apply --plan {} {REPORT_FLAG} {} --resume",
            quote(&start.source),
            quote(report)
        )
    } else {
        format!(
            "sipgw-bulk apply {} {REPORT_FLAG} {} --resume --yes",
            quote(&start.source),
            quote(report)
        )
    };
    if start.source == Path::new("-") {
        let format = match start.format {
            crate::manifest::Format::Csv => "csv",
            crate::manifest::Format::Yaml => "yaml",
            crate::manifest::Format::Plan => "plan",
        };
        cmd = format!("(the same manifest on stdin) | {cmd} --format {format}");
    }
    cmd.push_str(rows);
    cmd
}

fn confirm(changes: u64) -> Result<bool, Failure> {
    use std::io::Write;
    eprint!("Apply changes to {changes} gateway(s)? Type `yes` to go ahead: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .exit_with(Exit::Usage)?;
    Ok(matches!(answer.trim(), "yes" | "y"))
}

/// First SIGINT/SIGTERM: no new PATCH starts (rows waiting for a slot are `skipped`);
/// requests on the wire get `grace` to finish. Once the grace runs out, those requests
/// are given up and their rows reported as they stand (`write_unknown` where a PATCH may
/// have landed), so the report is whole and the job ends as an interrupt does. A second
/// signal (or a job that does not end within `HURRY` after the grace) exits at once:
/// every row recorded so far is in the report, which `--resume` accepts.
async fn watch_signals(stop: CancellationToken, hurry: CancellationToken, grace: Duration) {
    /// How long the job has to report the rows it gave up before the process exits.
    const HURRY: Duration = Duration::from_secs(5);
    super::wait_for_signal().await;
    tracing::warn!(
        grace_secs = grace.as_secs(),
        "interrupted: no new writes; finishing requests already sent (signal again to stop at once)"
    );
    stop.cancel();
    let again = tokio::select! {
        _ = super::wait_for_signal() => true,
        _ = tokio::time::sleep(grace) => false,
    };
    if !again {
        tracing::warn!(
            "the grace ran out: giving up requests still on the wire, reporting their rows"
        );
        hurry.cancel();
        tokio::select! {
            _ = super::wait_for_signal() => {}
            _ = tokio::time::sleep(HURRY) => {}
        }
    }
    tracing::warn!("stopping at once; the report holds every finished row, --resume continues");
    std::process::exit(Exit::Interrupted as i32);
}

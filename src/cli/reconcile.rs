//! `plan` and `apply`: one pipeline, with or without a writer.
//!
//! Order matters: lock the report (a second run exits 5 touching nothing), read the whole
//! manifest once (exit 65 before any request), check the ledger (exists / resume /
//! fingerprint), preview and ask or check guards, then run; on SIGINT/SIGTERM stop taking
//! rows, finish those in flight, report the rest `skipped`, exit 4.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::{ApplyArgs, Context, Exit, ExitContext, Failure, JobArgs, manifest_failure, usage};
use crate::client::{ClientConfig, ReadClient, RequestStats, WriteClient};
use crate::config::LogFormat;
use crate::engine::{self, Job, Observer, Outcome, StopReason};
use crate::ledger::{self, Ledger, LedgerError};
use crate::limiter::Limiter;
use crate::manifest::{DuplicateCheck, Manifest};
use crate::plan_view::{PlanFormat, PlanView};
use crate::progress::{self, Progress, ProgressMode, Tee};
use crate::report::{ReportFormat, ReportWriter, Status};
use crate::saved_plan;
use crate::shard::Shard;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Plan,
    Apply,
}

/// What one pass over the manifest found.
struct Scan {
    rows: u64,
    in_shard: u64,
    sha256: String,
}

/// Where a job's rows come from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// A manifest (`-` for stdin), its format from the extension unless given.
    Manifest {
        path: &'a Path,
        format: Option<crate::manifest::Format>,
    },
    /// A saved plan (`apply --plan`).
    Plan(&'a Path),
}

pub async fn run(
    ctx: &Context,
    source: Source<'_>,
    job: &JobArgs,
    mode: Mode,
    apply: Option<&ApplyArgs>,
    save_plan: Option<&Path>,
) -> Result<Exit, Failure> {
    let yes = apply.is_some_and(|a| a.yes);
    let resume = apply.is_some_and(|a| a.resume);
    let (manifest, plan_header) = match source {
        Source::Manifest { path, format } => {
            if path.extension().is_some_and(|e| e == "plan") && format.is_none() {
                return Err(usage(format!(
                    "{} looks like a saved plan: apply it with --plan {}",
                    path.display(),
                    path.display()
                )));
            }
            (
                Manifest::open(path, format).map_err(manifest_failure)?,
                None,
            )
        }
        Source::Plan(path) => {
            if job.shard.is_some() {
                return Err(usage(
                    "--shard does not go with --plan: a saved plan already holds only its rows \
                     (plan with --shard instead)",
                ));
            }
            let header = saved_plan::read_header(path).exit_with(Exit::Usage)?;
            let manifest = Manifest::open(path, Some(crate::manifest::Format::Plan))
                .map_err(manifest_failure)?;
            (manifest, Some(header))
        }
    };
    let report_format = report_format_for(ctx)?;
    let report_path = ctx
        .global
        .report
        .clone()
        .unwrap_or_else(|| default_report_path(manifest.source(), report_format, mode));

    let mut ledger = Ledger::lock(&report_path).map_err(ledger_failure)?;
    if mode == Mode::Plan {
        ledger.remove_lock_when_done();
    }
    let (mut scan, mut manifest) = scan(&manifest, job.shard).await?;
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    // A saved plan was reviewed already: applying it needs no second confirmation.
    if mode == Mode::Apply && !yes && !interactive && plan_header.is_none() {
        return Err(usage(
            "apply writes to the API: pass --yes to confirm when not on a terminal \
             (or use `plan` / --dry-run to see the changes first)",
        ));
    }
    ledger
        .preflight(&scan.sha256, resume)
        .map_err(ledger_failure)?;
    let client_config = ctx.client_config()?;
    if let (Some(header), Source::Plan(path)) = (&plan_header, source) {
        let manifest_now = saved_plan::file_sha256(Path::new(&header.manifest));
        header
            .check(
                path,
                client_config.base_url.as_str(),
                manifest_now.as_deref(),
            )
            .exit_with(Exit::Usage)?;
    }
    // One apply of this manifest to this space at a time on this machine, whatever the
    // report. Held until the run ends.
    let _run_lock = if mode == Mode::Apply {
        ledger::RunLock::acquire(
            client_config.base_url.as_str(),
            &scan.sha256,
            job.shard,
            &report_path,
        )
        .map_err(ledger_failure)?
    } else {
        None
    };

    let max_changes = apply.and_then(|a| a.max_changes);
    let limit = apply.and_then(|a| a.limit);
    let continuing = resume && report_path.exists();
    if mode == Mode::Apply && !yes && plan_header.is_none() && !continuing {
        // On a terminal: plan into REPORT.plan, show that plan, ask, then apply exactly
        // that file. Every planned gateway is read again just before its PATCH, and one
        // that moved since is a `conflict`, not written.
        let plan_path = reviewed_plan_path(&report_path);
        let mut preview = Pipeline::new(ctx, &client_config, &manifest, job);
        preview.limit = limit;
        let header = plan_header_for(&client_config, &manifest, &scan, job.shard);
        let writer = saved_plan::PlanWriter::create(&plan_path, header).exit_with(Exit::Usage)?;
        let (plan_obs, plan_handle) = progress::Shared::new(writer);
        let colour = ctx.global.color.on_stdout();
        let (view_obs, view_handle) = progress::Shared::new(
            PlanView::new(
                std::io::BufWriter::new(std::io::stdout()),
                PlanFormat::Text,
                colour,
                false,
            )
            .with_cap(SHOWN_BEFORE_ASKING, plan_path.display().to_string()),
        );
        let observers: Vec<Box<dyn Observer>> = vec![Box::new(plan_obs), Box::new(view_obs)];
        let outcome = preview
            .run(
                ReportWriter::discard(),
                false,
                Some((CancellationToken::new(), Box::new(Tee(observers)))),
            )
            .await?;
        if let Some(view) = progress::reclaim(view_handle) {
            view.finish();
        }
        let writer = progress::reclaim(plan_handle);
        let changes = outcome.count(Status::WouldUpdate);
        if let Some(reason) = outcome.stopped {
            say(
                ctx,
                &format!(
                    "stopped while planning ({}); nothing written",
                    format!("{reason:?}").to_lowercase()
                ),
            );
            return Ok(Exit::Aborted);
        }
        say(
            ctx,
            &summary_text("Plan", &outcome, None, ctx.settings.write_rate.get()),
        );
        if let Some(max) = max_changes
            && changes > max
        {
            say(
                ctx,
                &format!(
                    "refused: the plan changes {changes} rows, more than --max-changes {max}; \
                     nothing written"
                ),
            );
            return Ok(Exit::Aborted);
        }
        if changes == 0 {
            say(ctx, "nothing to change; nothing written.");
            return Ok(exit_code(&outcome, Mode::Plan));
        }
        let Some(writer) = writer else {
            return Err(usage("internal: the plan writer is still in use"));
        };
        let saved = writer.finish(true).exit_with(Exit::Usage)?;
        if !confirm(changes)? {
            let _ = std::fs::remove_file(&saved);
            say(ctx, "declined; nothing written.");
            return Ok(Exit::Aborted);
        }
        let reviewed = Manifest::open(&saved, Some(crate::manifest::Format::Plan))
            .map_err(manifest_failure)?;
        (scan, manifest) = self::scan(&reviewed, None).await?;
    } else if mode == Mode::Apply && max_changes.is_some() {
        // A guard to check before anything is written: count the changes first.
        let mut preview = Pipeline::new(ctx, &client_config, &manifest, job);
        preview.limit = limit;
        let preview = preview.run(ReportWriter::discard(), false, None).await?;
        let changes = preview.count(Status::WouldUpdate);
        if preview.stopped.is_some() {
            say(ctx, "stopped while counting the changes; nothing written");
            return Ok(Exit::Aborted);
        }
        if let Some(max) = max_changes
            && changes > max
        {
            say(
                ctx,
                &format!(
                    "refused: the plan changes {changes} rows, more than --max-changes {max}; \
                     nothing written"
                ),
            );
            return Ok(Exit::Aborted);
        }
    }

    let opened = ledger
        .open(manifest.source(), &scan.sha256, report_format, resume)
        .map_err(ledger_failure)?;
    if opened.resumed {
        tracing::info!(already_done = opened.done.len(), "resuming");
    }
    tracing::info!(
        manifest = %manifest.source().display(),
        rows = scan.rows,
        in_shard = scan.in_shard,
        report = %report_path.display(),
        mode = ?mode,
        "starting"
    );

    // Observers: the plan on stdout (plan mode), progress on stderr.
    let mut pipeline = Pipeline::new(ctx, &client_config, &manifest, job);
    pipeline.max_errors = apply
        .and_then(|a| a.max_errors)
        .map(|b| b.threshold(scan.in_shard));
    pipeline.limit = apply.and_then(|a| a.limit);
    pipeline.done = Some(Arc::new(opened.done));
    pipeline.journal = Some(opened.journal);
    if !opened.recovered.is_empty() {
        tracing::info!(
            rows = opened.recovered.len(),
            "before-values recovered from the journal for rows the report lost"
        );
    }
    pipeline.recovered = Some(Arc::new(opened.recovered));
    let (plan_view, plan_handle) = if mode == Mode::Plan {
        let colour = ctx.global.color.on_stdout() && job.output == PlanFormat::Text;
        // Buffered: a line-buffered stdout costs a system call per line of the plan.
        let (obs, handle) = progress::Shared::new(PlanView::new(
            std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout()),
            job.output,
            colour,
            job.show_unchanged,
        ));
        (Some(obs), Some(handle))
    } else {
        (None, None)
    };
    let (plan_file, plan_file_handle) = match save_plan {
        Some(path) => {
            let header = plan_header_for(&client_config, &manifest, &scan, job.shard);
            let writer = saved_plan::PlanWriter::create(path, header).exit_with(Exit::Usage)?;
            let (obs, handle) = progress::Shared::new(writer);
            (Some(obs), Some(handle))
        }
        None => (None, None),
    };
    let remaining = scan.in_shard.saturating_sub(pipeline.done_count());
    let (progress_obs, progress_handle) = progress::Shared::new(Progress::new(
        progress_mode(ctx),
        remaining,
        mode == Mode::Plan,
    ));
    let mut observers: Vec<Box<dyn Observer>> = vec![Box::new(progress_obs)];
    let (errors_obs, errors_handle) = progress::Shared::new(progress::ErrorLines::default());
    if mode == Mode::Apply {
        observers.push(Box::new(errors_obs));
    }
    if let Some(view) = plan_view {
        observers.push(Box::new(view));
    }
    if let Some(file) = plan_file {
        observers.push(Box::new(file));
    }

    let stop = CancellationToken::new();
    let grace = Duration::from_secs(apply.map_or(30, |a| a.grace));
    let signals = tokio::spawn(watch_signals(stop.clone(), grace));
    let ran = pipeline
        .run(
            opened.writer,
            mode == Mode::Apply,
            Some((stop, Box::new(Tee(observers)))),
        )
        .await;
    signals.abort();
    if let Some(p) = progress::reclaim(progress_handle) {
        p.finish();
    }
    if let Some(view) = plan_handle.and_then(progress::reclaim) {
        view.finish();
    }
    if let Some(errors) = progress::reclaim(errors_handle) {
        errors.finish(&report_path);
    }
    let mut outcome = ran?;
    if let Some(writer) = plan_file_handle.and_then(progress::reclaim) {
        match writer.finish(outcome.stopped.is_none()) {
            Ok(path) => say(
                ctx,
                &format!(
                    "plan saved to {p}; apply exactly these changes with: sipgw-bulk apply \
                     --plan {p}",
                    p = shell_quote(&path)
                ),
            ),
            Err(e) => tracing::warn!("{e}"),
        }
    }
    // The summary counts the rows an earlier run finished, too.
    for (status, n) in &opened.kept {
        *outcome.counts.entry(*status).or_default() += n;
    }
    // Every finished row is in the report now; the journal keeps only the before-values
    // of writes that may have landed unseen (a later --resume settles them). A report
    // that failed keeps its whole journal: it may be the only record left.
    if mode == Mode::Apply
        && outcome.stopped != Some(StopReason::LedgerFailed)
        && let Err(e) = ledger::settle_journal(&report_path, &outcome.unsettled)
    {
        tracing::warn!(
            journal = %ledger::journal_path(&report_path).display(),
            "cannot tidy the journal ({e}); it is kept, and --resume still reads it"
        );
    }

    let title = if mode == Mode::Apply { "Apply" } else { "Plan" };
    let rate = ctx.settings.write_rate.get();
    match ctx.settings.log_format {
        // JSON logs: the summary is one event with fields, not a multi-line string.
        LogFormat::Json if !ctx.global.quiet => tracing::info!(
            summary = %summary_json(&outcome, &report_path, rate),
            "{title} finished"
        ),
        LogFormat::Text if !ctx.global.quiet => say(
            ctx,
            &summary_text(title, &outcome, Some(&report_path), rate),
        ),
        // -q: errors only.
        _ => {}
    }
    if let Some(reason) = outcome.stopped {
        let detail = outcome.stop_detail.as_deref().unwrap_or("");
        let why = match reason {
            StopReason::Unauthorized => "the server refused the credentials (401/403)".to_owned(),
            StopReason::Unreachable => format!("the space cannot be reached: {detail}"),
            StopReason::ErrorBudget => "--max-errors was reached".to_owned(),
            StopReason::Interrupted => "interrupted".to_owned(),
            StopReason::LedgerFailed => format!(
                "{detail}. Rows finished after that are missing from the report; the \
                 journal {} keeps the before-value of every write sent. Free the space, \
                 then resume",
                ledger::journal_path(&report_path).display()
            ),
        };
        // A stopped plan is never continued by an apply: nobody reviewed those rows.
        let next = match mode {
            Mode::Apply => format!(
                "To continue: {}",
                resume_command(&manifest, &report_path, job.shard)
            ),
            Mode::Plan => format!(
                "To see every row, run the plan again with another --report (this one is \
                 kept): {}",
                plan_command(&manifest, job.shard)
            ),
        };
        say(
            ctx,
            &format!(
                "stopped: {why}; rows not attempted are `skipped` in {}. {next}",
                report_path.display(),
            ),
        );
    }
    if let Some(path) = &job.summary_json {
        write_summary_json(path, &outcome, &report_path, rate).exit_with(Exit::Usage)?;
    }
    Ok(exit_code(&outcome, mode))
}

/// A job's parts before it runs; `run` builds fresh clients and a fresh limiter each time,
/// so a preview pass leaves no state behind.
struct Pipeline<'a> {
    ctx: &'a Context,
    client: &'a ClientConfig,
    manifest: &'a Manifest,
    shard: Option<Shard>,
    max_errors: Option<u64>,
    limit: Option<u64>,
    done: Option<Arc<crate::ledger::IdSet>>,
    journal: Option<crate::ledger::Journal>,
    recovered: Option<Arc<HashMap<u128, crate::model::GatewayFields>>>,
}

impl<'a> Pipeline<'a> {
    fn new(
        ctx: &'a Context,
        client: &'a ClientConfig,
        manifest: &'a Manifest,
        job: &JobArgs,
    ) -> Pipeline<'a> {
        Pipeline {
            ctx,
            client,
            manifest,
            shard: job.shard,
            max_errors: None,
            limit: None,
            done: None,
            journal: None,
            recovered: None,
        }
    }

    fn done_count(&self) -> u64 {
        self.done.as_ref().map_or(0, |d| d.len() as u64)
    }

    async fn run(
        self,
        report: ReportWriter,
        writes: bool,
        extras: Option<(CancellationToken, Box<dyn Observer>)>,
    ) -> Result<Outcome, Failure> {
        let settings = &self.ctx.settings;
        let limiter = Arc::new(Limiter::new(Some(settings.write_rate), settings.read_rate));
        let stats = Arc::new(RequestStats::default());
        let abort = CancellationToken::new();
        let reader = ReadClient::new(self.client, limiter, Arc::clone(&stats), abort.clone())
            .exit_with(Exit::Usage)?;
        let (stop, observer) = match extras {
            Some((stop, observer)) => (stop, Some(observer)),
            None => (CancellationToken::new(), None),
        };
        let job = Job {
            manifest: self.manifest.clone(),
            writer: writes.then(|| WriteClient::new(reader.clone())),
            reader,
            report,
            concurrency: settings.concurrency,
            abort,
            stop,
            max_errors: self.max_errors,
            limit: self.limit,
            done: self.done,
            shard: self.shard,
            journal: if writes { self.journal } else { None },
            recovered: self.recovered,
            observer,
            stats,
        };
        engine::run(job).await.map_err(|err| match err {
            engine::JobError::Manifest(m) => manifest_failure(m),
            other => Failure {
                exit: Exit::Usage,
                error: other.into(),
            },
        })
    }
}

/// One pass over the whole manifest before any request: proves it readable (exit 65
/// otherwise), counts this shard's rows, fingerprints it, and finds the ids used twice, so
/// the run can check duplicates exactly without remembering every id.
async fn scan(manifest: &Manifest, shard: Option<Shard>) -> Result<(Scan, Manifest), Failure> {
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        let mut in_shard = 0u64;
        let first = manifest
            .first_pass(|row| {
                let owned = match (shard, row) {
                    (None, _) => true,
                    (Some(s), Ok(r)) => s.owns(&r.id.hyphenated().to_string()),
                    (Some(s), Err(bad)) => s.owns(&bad.id),
                };
                in_shard += u64::from(owned);
            })
            .map_err(manifest_failure)?;
        let scan = Scan {
            rows: first.stats.rows,
            in_shard,
            sha256: first.sha256,
        };
        Ok((
            scan,
            manifest.with_duplicates(DuplicateCheck::Only(Arc::new(first.repeated))),
        ))
    })
    .await
    .exit_with(Exit::BadManifest)?
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
            | StopReason::ErrorBudget
            | StopReason::LedgerFailed,
        ) => Exit::Aborted,
        Some(StopReason::Interrupted) => Exit::Interrupted,
        None if outcome.has_errors() => Exit::RowErrors,
        None if mode == Mode::Plan && outcome.count(Status::WouldUpdate) > 0 => {
            Exit::ChangesPending
        }
        None => Exit::Ok,
    }
}

/// `STEM.report.csv` for apply, `STEM.plan.csv` for a plan: a plan never takes the name
/// apply will use, so `plan m.csv` then `apply m.csv --yes` works with the defaults.
fn default_report_path(manifest: &Path, format: ReportFormat, mode: Mode) -> PathBuf {
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
            "--report {} says {n:?} by its extension but the report format is {c:?}: drop one \
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

/// The plan an interactive apply shows and then applies: `REPORT.plan`.
fn reviewed_plan_path(report: &Path) -> PathBuf {
    let mut name = report.as_os_str().to_owned();
    name.push(".plan");
    PathBuf::from(name)
}

fn plan_header_for(
    client: &ClientConfig,
    manifest: &Manifest,
    scan: &Scan,
    shard: Option<Shard>,
) -> saved_plan::PlanHeader {
    let source = manifest.source();
    let named = if source == Path::new("-") {
        "-".to_owned()
    } else {
        std::path::absolute(source)
            .unwrap_or_else(|_| source.to_owned())
            .display()
            .to_string()
    };
    saved_plan::PlanHeader {
        sipgw_bulk_plan: saved_plan::VERSION,
        space: client.base_url.as_str().trim_end_matches('/').to_owned(),
        manifest: named,
        manifest_sha256: scan.sha256.clone(),
        shard: shard.map(|s| s.to_string()),
        changes: 0,
    }
}

/// A path as a shell word.
fn shell_quote(p: &Path) -> String {
    let s = p.display().to_string();
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "/._-".contains(c))
    {
        s
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

fn plan_command(manifest: &Manifest, shard: Option<Shard>) -> String {
    let mut cmd = format!(
        "sipgw-bulk plan {} --report NEW-REPORT",
        shell_quote(manifest.source())
    );
    if let Some(s) = shard {
        cmd.push_str(&format!(" --shard {s}"));
    }
    cmd
}

fn resume_command(manifest: &Manifest, report: &Path, shard: Option<Shard>) -> String {
    let quote = shell_quote;
    let mut cmd = if manifest.format() == crate::manifest::Format::Plan {
        format!(
            "sipgw-bulk apply --plan {} --report {} --resume",
            quote(manifest.source()),
            quote(report)
        )
    } else {
        format!(
            "sipgw-bulk apply {} --report {} --resume --yes",
            quote(manifest.source()),
            quote(report)
        )
    };
    if manifest.source() == Path::new("-") {
        let format = match manifest.format() {
            crate::manifest::Format::Csv => "csv",
            crate::manifest::Format::Yaml => "yaml",
            crate::manifest::Format::Plan => "plan",
        };
        cmd = format!("(the same manifest on stdin) | {cmd} --format {format}");
    }
    if let Some(s) = shard {
        cmd.push_str(&format!(" --shard {s}"));
    }
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

/// The end-of-run summary: a small table a person reads at a glance, then what an
/// operator asks next: how long requests took, the slowest row, how often the server
/// throttled, and the write rate against `--rate`.
fn summary_text(title: &str, o: &Outcome, report: Option<&Path>, rate: u32) -> String {
    use crate::human;
    let mut text = format!("{title} finished in {}", human::duration(o.elapsed));
    if let Some(r) = report {
        text.push_str(&format!(" (report: {})", r.display()));
    }
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
    if o.already_done > 0 {
        text.push_str(&format!(
            "\n  {:<13}{:>9}  (kept from the earlier run)",
            "resumed",
            human::count(o.already_done)
        ));
    }
    text.push_str(&format!(
        "\n  requests {}, retries {}",
        human::count(o.requests),
        human::count(o.retries)
    ));
    // A plan writes nothing: no write rate to show.
    if o.writes > 0 || title != "Plan" {
        text.push_str(&format!(
            ", writes {} at {} (--rate {})",
            human::count(o.writes),
            human::rate(o.write_rate()),
            human::count(u64::from(rate))
        ));
    }
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
            "\n  throttled: {} answers 429, paused {} in all",
            human::count(o.throttled),
            human::duration(o.throttled_wait)
        ));
    }
    text
}

/// The summary as JSON, field for field with the text.
fn summary_json(o: &Outcome, report: &Path, rate: u32) -> serde_json::Value {
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
    serde_json::json!({
        "rows": o.rows,
        "counts": counts,
        "already_done": o.already_done,
        "other_shards": o.other_shards,
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
            "paused_secs": o.throttled_wait.as_secs_f64(),
        },
        "stopped": o.stopped.map(|r| format!("{r:?}").to_lowercase()),
        "stop_detail": o.stop_detail,
        "possibly_written": o.possibly_written,
        "report": report.display().to_string(),
    })
}

fn write_summary_json(path: &Path, o: &Outcome, report: &Path, rate: u32) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let summary = summary_json(o, report, rate);
    std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("cannot write summary {}", path.display()))
}

/// First SIGINT/SIGTERM: stop taking rows; rows in flight get `grace` to finish. A second
/// signal, or the grace running out, exits at once: every finished row is already in the
/// report (flushed per line), so the report is still one `--resume` accepts.
async fn watch_signals(stop: CancellationToken, grace: Duration) {
    super::wait_for_signal().await;
    tracing::warn!(
        grace_secs = grace.as_secs(),
        "interrupted: no new rows; finishing rows in flight (signal again to stop at once)"
    );
    stop.cancel();
    tokio::select! {
        _ = super::wait_for_signal() => {}
        _ = tokio::time::sleep(grace) => {}
    }
    tracing::warn!("stopping at once; the report holds every finished row, --resume continues");
    std::process::exit(Exit::Interrupted as i32);
}

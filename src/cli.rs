//! The command line: clap definitions, then one function per command that turns checked
//! settings into a library call and its result into an [`Exit`] code. No clap type goes
//! past this module.

use std::io::{IsTerminal, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::client::{ClientConfig, ReadClient, RequestStats, WriteClient};
use crate::config::{self, FileConfig, LogFormat, Overrides, Settings};
use crate::engine::{self, Job, Outcome};
use crate::limiter::Limiter;
use crate::manifest::{Format, Manifest, ManifestError};
use crate::report::{ReportFormat, ReportWriter, Status};
use crate::sandbox::{self, Faults, SandboxConfig, SandboxState};

/// Exit codes: the contract scripts rely on (PRODUCT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every row ended `updated`, `unchanged` (or `would_update` in a plan).
    Ok = 0,
    /// Finished, but some rows are `invalid`, `not_found`, `failed` or `mismatch`.
    RowErrors = 1,
    /// `plan --detailed-exitcode`: no errors, changes pending.
    ChangesPending = 2,
    /// Aborted: credentials refused.
    Aborted = 3,
    /// Usage or configuration error.
    Usage = 64,
    /// The manifest cannot be read as a whole.
    BadManifest = 65,
}

/// Reconcile SignalWire SIP gateways with a CSV or YAML manifest.
///
/// Reads each gateway, shows the field-level diff, PATCHes only what differs (all five
/// fields, as the live API requires), concurrently under one rate limit, and writes a
/// per-row report that doubles as checkpoint and undo file.
///
/// Credentials come from SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN (or project_id /
/// api_token_file in --config), never from a flag.
#[derive(Debug, Parser)]
#[command(name = "sipgw-bulk", version, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes. Precedence: flag > environment > config file > default.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// YAML config file (see config.example.yaml).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// SignalWire space: `acme`, `acme.signalwire.com` or its https URL.
    #[arg(long, global = true, env = "SIGNALWIRE_SPACE", value_name = "SPACE")]
    pub space: Option<String>,
    /// API base URL (wins over --space); https only, except a loopback host.
    #[arg(long, global = true, env = "SIGNALWIRE_BASE_URL", value_name = "URL")]
    pub base_url: Option<String>,
    /// Rows in flight at most [default: 32].
    #[arg(long, global = true, value_name = "N")]
    pub concurrency: Option<usize>,
    /// Writes per second at most, retries included [default: 1000].
    #[arg(long, global = true, value_name = "N")]
    pub rate: Option<u32>,
    /// Reads per second at most; 0 = unlimited [default: 5000].
    #[arg(long, global = true, value_name = "N")]
    pub read_rate: Option<u32>,
    /// Report file [default: MANIFEST-STEM.report.csv (or .jsonl) in the current directory].
    #[arg(long, global = true, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Report format [default: csv].
    #[arg(long, global = true, value_name = "FORMAT")]
    pub report_format: Option<ReportFormat>,
    /// Log format on stderr [default: text].
    #[arg(long, global = true, value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    /// More log detail (-v debug, -vv trace). RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only warnings and errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// No progress display.
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every row offline; print each bad row with its line. Sends nothing.
    ///
    /// Example: sipgw-bulk validate gateways.csv
    Validate(ManifestArgs),
    /// Read each gateway and write the report of what would change. Never writes.
    ///
    /// Example: sipgw-bulk plan gateways.csv --report plan.csv
    Plan(PlanArgs),
    /// Plan, then PATCH the rows that differ.
    ///
    /// Example: sipgw-bulk apply gateways.csv --rate 100 --yes --report run1.csv
    Apply(ApplyArgs),
    /// Serve a simulated SignalWire space on 127.0.0.1 until interrupted.
    ///
    /// Prints SIGNALWIRE_BASE_URL, SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN lines.
    /// Example: sipgw-bulk sandbox --seed-from examples/gateways.csv --port 8080
    Sandbox(SandboxArgs),
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The manifest: .csv, .yaml or .yml.
    pub manifest: PathBuf,
    /// Manifest format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
    /// Exit 2 when changes are pending (0: nothing to do, 1: errors).
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
    /// Do not ask before writing (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only plan: read and diff, write nothing (same as `plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Hold one gateway per id in this manifest (with the sandbox's own starting values).
    #[arg(long, value_name = "MANIFEST")]
    pub seed_from: Option<PathBuf>,
    /// Hold N generated gateways.
    #[arg(long, value_name = "N")]
    pub gateways: Option<u64>,
    /// Writes accepted per second before answering 429; 0 = no limit.
    #[arg(long, default_value_t = 1380, value_name = "N")]
    pub write_limit: u32,
    /// Inject an error status at a rate, e.g. `--fault 500=0.1 --fault 503=0.05`.
    #[arg(long, value_name = "STATUS=RATE", value_parser = parse_fault)]
    pub fault: Vec<(u16, f64)>,
    /// Retry-After seconds on injected 429/503.
    #[arg(long, default_value_t = 1, value_name = "SECS")]
    pub fault_retry_after: u64,
    /// Latency added to every API response, in milliseconds.
    #[arg(long, default_value_t = 0, value_name = "MS")]
    pub latency_ms: u64,
    /// Rate of requests whose connection is dropped without an answer.
    #[arg(long, default_value_t = 0.0, value_name = "RATE")]
    pub drop_rate: f64,
    /// Answer every PATCH of this gateway with 500 (repeatable).
    #[arg(long, value_name = "ID")]
    pub fail_patch: Vec<Uuid>,
}

fn parse_fault(s: &str) -> Result<(u16, f64), String> {
    let (status, rate) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}`: expected STATUS=RATE, like 500=0.1"))?;
    let status: u16 = status
        .trim()
        .parse()
        .map_err(|_| format!("`{status}` is not an HTTP status"))?;
    let rate: f64 = rate
        .trim()
        .parse()
        .map_err(|_| format!("`{rate}` is not a rate between 0 and 1"))?;
    if !(400..=599).contains(&status) || !(0.0..=1.0).contains(&rate) {
        return Err(format!(
            "`{s}`: status must be 400-599 and rate between 0 and 1"
        ));
    }
    Ok((status, rate))
}

/// Parses argv, runs the command, and returns the exit code. `main` only calls this.
pub fn main() -> i32 {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sipgw-bulk: cannot start the async runtime: {e}");
            return 70;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(exit) => exit as i32,
        Err(failure) => {
            eprintln!("sipgw-bulk: error: {:#}", failure.error);
            failure.exit as i32
        }
    }
}

/// An error with the exit code it maps to, decided by its type where it arises.
pub struct Failure {
    pub exit: Exit,
    pub error: anyhow::Error,
}

trait ExitContext<T> {
    fn exit_with(self, exit: Exit) -> Result<T, Failure>;
}

impl<T, E: Into<anyhow::Error>> ExitContext<T> for Result<T, E> {
    fn exit_with(self, exit: Exit) -> Result<T, Failure> {
        self.map_err(|e| Failure {
            exit,
            error: e.into(),
        })
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure {
        exit: Exit::Usage,
        error: anyhow::anyhow!(message.into()),
    }
}

fn manifest_failure(err: ManifestError) -> Failure {
    let exit = match err {
        ManifestError::UnknownFormat(_) => Exit::Usage,
        _ => Exit::BadManifest,
    };
    Failure {
        exit,
        error: err.into(),
    }
}

pub async fn run(cli: Cli) -> Result<Exit, Failure> {
    let file = match &cli.global.config {
        Some(path) => FileConfig::load(path).exit_with(Exit::Usage)?,
        None => FileConfig::default(),
    };
    let overrides = Overrides {
        space: cli.global.space.clone(),
        base_url: cli.global.base_url.clone(),
        concurrency: cli.global.concurrency,
        rate: cli.global.rate,
        read_rate: cli.global.read_rate,
        report_format: cli.global.report_format,
        log_format: cli.global.log_format,
    };
    let settings = config::resolve(&overrides, &file).exit_with(Exit::Usage)?;
    init_logging(&cli.global, settings.log_format);
    match cli.command {
        Command::Validate(args) => validate(&args).await,
        Command::Plan(args) => {
            let exit = reconcile(
                &cli.global,
                &settings,
                &file,
                &args.manifest,
                Mode::Plan,
                args.summary_json.as_deref(),
                false,
            )
            .await?;
            Ok(plan_exit(exit, args.detailed_exitcode))
        }
        Command::Apply(args) => {
            let mode = if args.dry_run {
                Mode::Plan
            } else {
                Mode::Apply
            };
            let exit = reconcile(
                &cli.global,
                &settings,
                &file,
                &args.manifest,
                mode,
                args.summary_json.as_deref(),
                args.yes,
            )
            .await?;
            Ok(plan_exit(exit, false))
        }
        Command::Sandbox(args) => serve_sandbox(args).await,
    }
}

/// Without `--detailed-exitcode`, pending changes are success.
fn plan_exit(exit: Exit, detailed: bool) -> Exit {
    match exit {
        Exit::ChangesPending if !detailed => Exit::Ok,
        other => other,
    }
}

fn init_logging(global: &GlobalArgs, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let level = match (global.quiet, global.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("sipgw_bulk={level},warn")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    // A second init (tests running `run` twice in one process) is harmless.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

async fn validate(args: &ManifestArgs) -> Result<Exit, Failure> {
    let manifest = Manifest::open(&args.manifest, args.format).map_err(manifest_failure)?;
    let stats = tokio::task::spawn_blocking(move || {
        let stdout = std::io::stdout();
        let mut out = stdout.lock();
        manifest.read(|row| {
            if let Err(bad) = row {
                // A closed stdout (`| head`) just ends the listing.
                if writeln!(out, "{bad}").is_err() {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
    })
    .await
    .exit_with(Exit::BadManifest)?
    .map_err(manifest_failure)?;
    eprintln!(
        "{} rows: {} valid, {} invalid",
        stats.rows,
        stats.rows - stats.invalid,
        stats.invalid
    );
    Ok(if stats.invalid > 0 {
        Exit::RowErrors
    } else {
        Exit::Ok
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plan,
    Apply,
}

/// Plan or apply: the same pipeline, with or without a writer.
async fn reconcile(
    global: &GlobalArgs,
    settings: &Settings,
    file: &FileConfig,
    args: &ManifestArgs,
    mode: Mode,
    summary_json: Option<&Path>,
    yes: bool,
) -> Result<Exit, Failure> {
    let manifest = Manifest::open(&args.manifest, args.format).map_err(manifest_failure)?;
    // A first pass proves the whole manifest readable before any request is sent.
    let scan = {
        let manifest = manifest.clone();
        tokio::task::spawn_blocking(move || manifest.read(|_| ControlFlow::Continue(())))
            .await
            .exit_with(Exit::BadManifest)?
            .map_err(manifest_failure)?
    };
    let interactive = std::io::stdin().is_terminal() && std::io::stderr().is_terminal();
    if mode == Mode::Apply && !yes && !interactive {
        return Err(usage(
            "apply writes to the API: pass --yes to confirm when not on a terminal \
             (or use `plan` / --dry-run to see the changes first)",
        ));
    }
    let base_url = settings.base_url.clone().ok_or_else(|| {
        usage("no space: set SIGNALWIRE_SPACE or --space (or --base-url / SIGNALWIRE_BASE_URL)")
    })?;
    let credentials =
        config::credentials(file, |k| std::env::var(k).ok()).exit_with(Exit::Usage)?;
    let report_path = global
        .report
        .clone()
        .unwrap_or_else(|| default_report_path(manifest.path(), settings.report_format));
    if report_path.exists() {
        return Err(usage(format!(
            "report {} already exists (it is an earlier run's record and undo file); \
             choose another --report or move it away",
            report_path.display()
        )));
    }
    let client_config = ClientConfig {
        base_url,
        credentials,
        timeout: settings.timeout,
        connect_timeout: settings.connect_timeout,
        retry: settings.retry,
        pool_size: settings.concurrency,
    };
    let new_job = |report: ReportWriter, writes: bool| -> Result<Job, Failure> {
        let limiter = Arc::new(Limiter::new(Some(settings.write_rate), settings.read_rate));
        let stats = Arc::new(RequestStats::default());
        let abort = CancellationToken::new();
        let reader = ReadClient::new(&client_config, limiter, Arc::clone(&stats), abort.clone())
            .exit_with(Exit::Usage)?;
        Ok(Job {
            manifest: manifest.clone(),
            writer: writes.then(|| WriteClient::new(reader.clone())),
            reader,
            report,
            concurrency: settings.concurrency,
            abort,
            stats,
        })
    };

    if mode == Mode::Apply && !yes {
        // On a terminal: show what would change, then ask.
        let job = new_job(ReportWriter::discard(settings.report_format), false)?;
        let preview = engine::run(job).await.map_err(job_failure)?;
        eprintln!("{}", summary_line("Plan", &preview, scan.rows));
        if preview.aborted {
            return Ok(Exit::Aborted);
        }
        if preview.count(Status::WouldUpdate) == 0 {
            eprintln!("nothing to change.");
            return Ok(exit_code(&preview, Mode::Plan));
        }
        if !confirm(preview.count(Status::WouldUpdate))? {
            eprintln!("nothing written.");
            return Ok(Exit::Ok);
        }
    }

    let report = ReportWriter::create(&report_path, settings.report_format)
        .with_context(|| format!("cannot create report {}", report_path.display()))
        .exit_with(Exit::Usage)?;
    let job = new_job(report, mode == Mode::Apply)?;
    tracing::info!(
        manifest = %manifest.path().display(),
        rows = scan.rows,
        invalid = scan.invalid,
        report = %report_path.display(),
        mode = ?mode,
        "starting"
    );
    let outcome = engine::run(job).await.map_err(job_failure)?;
    let title = if mode == Mode::Apply { "Apply" } else { "Plan" };
    eprintln!("{}", summary_line(title, &outcome, scan.rows));
    if outcome.aborted {
        eprintln!(
            "sipgw-bulk: stopped: the server refused the credentials (401/403); \
             rows not attempted are `skipped` in {}",
            report_path.display()
        );
    }
    if let Some(path) = summary_json {
        write_summary_json(path, &outcome, &report_path).exit_with(Exit::Usage)?;
    }
    Ok(exit_code(&outcome, mode))
}

fn job_failure(err: engine::JobError) -> Failure {
    match err {
        engine::JobError::Manifest(m) => manifest_failure(m),
        other => Failure {
            exit: Exit::Usage,
            error: other.into(),
        },
    }
}

fn exit_code(outcome: &Outcome, mode: Mode) -> Exit {
    if outcome.aborted {
        Exit::Aborted
    } else if outcome.has_errors() {
        Exit::RowErrors
    } else if mode == Mode::Plan && outcome.count(Status::WouldUpdate) > 0 {
        Exit::ChangesPending
    } else {
        Exit::Ok
    }
}

fn default_report_path(manifest: &Path, format: ReportFormat) -> PathBuf {
    let stem = manifest
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "manifest".into());
    let ext = match format {
        ReportFormat::Csv => "csv",
        ReportFormat::Jsonl => "jsonl",
    };
    PathBuf::from(format!("{stem}.report.{ext}"))
}

fn confirm(changes: u64) -> Result<bool, Failure> {
    eprint!("Apply changes to {changes} gateway(s)? Type `yes` to go ahead: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .exit_with(Exit::Usage)?;
    Ok(matches!(answer.trim(), "yes" | "y"))
}

/// `Apply: 1000 rows in 12.3s: 990 updated, 5 unchanged, 5 invalid | 1995 requests, 12 retries, 990 writes (80.4/s)`
pub fn summary_line(title: &str, o: &Outcome, rows: u64) -> String {
    let counts: Vec<String> = Status::ALL
        .iter()
        .filter(|s| o.count(**s) > 0)
        .map(|s| format!("{} {}", o.count(*s), s))
        .collect();
    format!(
        "{title}: {rows} rows in {:.1}s: {} | {} requests, {} retries, {} writes ({:.1}/s)",
        o.elapsed.as_secs_f64(),
        if counts.is_empty() {
            "nothing".to_owned()
        } else {
            counts.join(", ")
        },
        o.requests,
        o.retries,
        o.writes,
        o.write_rate()
    )
}

fn write_summary_json(path: &Path, o: &Outcome, report: &Path) -> anyhow::Result<()> {
    let counts: serde_json::Map<String, serde_json::Value> = Status::ALL
        .iter()
        .map(|s| (s.as_str().to_owned(), o.count(*s).into()))
        .collect();
    let summary = serde_json::json!({
        "rows": o.rows,
        "counts": counts,
        "requests": o.requests,
        "retries": o.retries,
        "writes": o.writes,
        "elapsed_secs": o.elapsed.as_secs_f64(),
        "write_rate": o.write_rate(),
        "aborted": o.aborted,
        "report": report.display().to_string(),
    });
    std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
        .with_context(|| format!("cannot write summary {}", path.display()))
}

async fn serve_sandbox(args: SandboxArgs) -> Result<Exit, Failure> {
    let config = SandboxConfig {
        write_limit: args.write_limit,
        faults: Faults {
            status_rates: args.fault,
            retry_after_secs: args.fault_retry_after,
            latency: std::time::Duration::from_millis(args.latency_ms),
            drop_rate: args.drop_rate.clamp(0.0, 1.0),
        },
        failing_ids: args.fail_patch,
        ..SandboxConfig::default()
    };
    let state = Arc::new(SandboxState::new(config));
    if let Some(path) = &args.seed_from {
        let manifest = Manifest::open(path, None).map_err(manifest_failure)?;
        let mut ids = Vec::new();
        manifest
            .read(|row| {
                let id = match row {
                    Ok(r) => Some(r.id),
                    Err(bad) => Uuid::try_parse(&bad.id).ok(),
                };
                ids.extend(id);
                ControlFlow::Continue(())
            })
            .map_err(manifest_failure)?;
        state.seed(ids);
    }
    if let Some(n) = args.gateways {
        state.seed(sandbox::generated_ids(n, 42));
    }
    let shutdown = CancellationToken::new();
    let running = sandbox::start(Arc::clone(&state), args.port, shutdown.clone())
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", args.port))
        .exit_with(Exit::Usage)?;
    {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(running.env_lines().as_bytes());
        let _ = out.flush();
    }
    tracing::info!(
        gateways = state.snapshot().len(),
        url = %running.base_url(),
        "sandbox serving until interrupted"
    );
    wait_for_signal().await;
    shutdown.cancel();
    let _ = running.task.await;
    Ok(Exit::Ok)
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

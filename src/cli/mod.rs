//! The command line: clap definitions, logging setup, and one module per command that turns
//! checked settings into a library call and its result into an [`Exit`] code. No clap
//! parser, command or match goes past this module: the value enums a flag takes derive
//! `clap::ValueEnum` where they are declared, and [`crate::settings`] holds each global
//! flag's clap attributes for `args` to expand.
//!
//! Conventions (as in xh): every flag has a one-line help, a default shown in brackets, and
//! every command's long help ends with a worked example.

mod args;
mod doctor;
mod export;
mod man;
mod metrics_flags;
mod reconcile;
mod rollback;
#[cfg(feature = "sandbox")]
mod sandbox;
mod show;
mod space;
mod summary;
mod validate;

use std::io::IsTerminal;

use clap::{CommandFactory, FromArgMatches};

use crate::config::{self, FileConfig, Overrides, Settings};
use crate::manifest::ManifestError;
use crate::settings::LogFormat;
use crate::settings::{Cmd, SETTINGS, Setting, named};

#[cfg(feature = "sandbox")]
use args::SandboxArgs;
use args::{
    ApplyArgs, Cli, Command, ExportArgs, GlobalArgs, JobArgs, ManifestArgs, PlanArgs, RollbackArgs,
    ShowArgs,
};

/// Exit codes: the contract scripts rely on (the table in docs/formats.md; the man page's
/// EXIT STATUS says the same, word for word).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Every row ended `updated`, `unchanged` (or `would_update` in a plan).
    Ok = 0,
    /// Finished, but some rows are `invalid`, `not_found`, `failed`, `mismatch` or
    /// `conflict`; or, in a run of several projects, one project's credentials were refused
    /// (its rows `skipped`, the run resumable).
    RowErrors = 1,
    /// `--detailed-exitcode` only, no errors and: `plan`, changes pending; `apply`, changes
    /// made.
    ChangesPending = 2,
    /// Aborted: credentials refused, the space unreachable past the outage limit (or a TLS
    /// failure), the report or journal not writable, `--max-errors` reached,
    /// `--max-changes` exceeded, the prompt declined.
    Aborted = 3,
    /// Interrupted (SIGINT/SIGTERM): no PATCH starts after the signal, requests already sent
    /// finish, rows waiting for a slot are `skipped`; report complete, resumable.
    Interrupted = 4,
    /// Another run holds the lock on this report, or is applying this manifest's gateways
    /// in this space.
    Locked = 5,
    /// Usage or configuration error (including `apply` without `--yes` off a terminal).
    Usage = 64,
    /// The manifest cannot be read as a whole (or changed while the run read it).
    BadManifest = 65,
}
/// Parses argv, runs the command, and returns the exit code. `main` only calls this.
pub fn main() -> i32 {
    let parsed = Cli::command().try_get_matches().and_then(|m| {
        refuse_unused(&m)?;
        Ok((Cli::from_arg_matches(&m)?, space::Origins::of(&m)))
    });
    let (cli, origins) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => return parse_failure(&e),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    #[cfg(feature = "sandbox")]
    if let Command::Sandbox(SandboxArgs {
        threads: Some(n), ..
    }) = &cli.command
    {
        builder.worker_threads((*n).max(1));
    }
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sipgw-bulk: cannot start the async runtime: {e}");
            return Exit::Usage as i32;
        }
    };
    match runtime.block_on(set_up_and_dispatch(cli, origins)) {
        Ok(exit) => exit as i32,
        Err(failure) => {
            // With JSON logs every stderr line must be JSON, the error included.
            if LOG_FORMAT.get() == Some(&LogFormat::Json) {
                tracing::error!(exit = failure.exit as i32, "{:#}", failure.error);
            } else {
                eprintln!("sipgw-bulk: error: {:#}", failure.error);
            }
            failure.exit as i32
        }
    }
}

/// The command as the settings table names it.
fn cmd_of(command: &Command) -> Cmd {
    match command {
        Command::Validate(_) => Cmd::Validate,
        Command::Plan(_) => Cmd::Plan,
        Command::Apply(_) => Cmd::Apply,
        Command::Doctor => Cmd::Doctor,
        Command::Export(_) => Cmd::Export,
        Command::Show(_) => Cmd::Show,
        Command::Rollback(_) => Cmd::Rollback,
        #[cfg(feature = "sandbox")]
        Command::Sandbox(_) => Cmd::Sandbox,
        Command::Completions { .. } => Cmd::Completions,
        Command::Man { .. } => Cmd::Man,
    }
}

/// The global options a command has no use for (each setting's declaration says which
/// commands take it): hidden from its help, refused on its command line (exit 64:
/// `validate --rate 5` would read as if it paced something), and the same settings from
/// the environment or the config file ignored there.
fn unused_by(cmd: Cmd) -> impl Iterator<Item = &'static Setting> {
    SETTINGS
        .iter()
        .filter(move |s| s.flag.is_some() && !s.takes.accepts(cmd))
}

/// A global option given on the command line to a command that has no use for it.
fn refuse_unused(matches: &clap::ArgMatches) -> Result<(), clap::Error> {
    use clap::parser::ValueSource;
    let Some((name, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let Some(cmd) = Cmd::named(name) else {
        return Ok(());
    };
    let given = |m: &clap::ArgMatches, id: &str| {
        m.try_contains_id(id).unwrap_or(false)
            && m.value_source(id) == Some(ValueSource::CommandLine)
    };
    match unused_by(cmd).find(|s| {
        s.flag
            .is_some_and(|id| given(sub, id) || given(matches, id))
    }) {
        Some(setting) => Err(clap::Error::raw(
            clap::error::ErrorKind::ArgumentConflict,
            format!(
                "`{name}` does not use {}: leave it out (set in the environment or the \
                 config file, the same setting is ignored by `{name}`)\n",
                setting.long.unwrap_or_default()
            ),
        )),
        None => Ok(()),
    }
}

/// A command's help listing only the global options that apply to it (`None`: clap's own
/// help is right as it is).
fn help_for(args: &[String]) -> Option<String> {
    let name = args
        .iter()
        .skip(1)
        .find(|a| Cmd::named(a).is_some_and(|cmd| unused_by(cmd).next().is_some()))?;
    let long = !args.iter().any(|a| a == "-h");
    let mut cmd = help_command();
    let sub = cmd.find_subcommand_mut(name)?;
    Some(if long {
        sub.render_long_help().to_string()
    } else {
        sub.render_help().to_string()
    })
}

/// The clap command, built, with the global options each command has no use for hidden
/// (for rendering help only: they are still accepted).
fn help_command() -> clap::Command {
    let mut cmd = Cli::command().bin_name("sipgw-bulk");
    // Globals are copied into the subcommands when the command is built.
    cmd.build();
    for command in Cmd::ALL {
        if cmd.find_subcommand(command.name()).is_none() {
            continue;
        }
        cmd = cmd.mut_subcommand(command.name(), |mut sub| {
            for id in unused_by(command).filter_map(|s| s.flag) {
                if sub.get_arguments().any(|a| a.get_id() == id) {
                    sub = sub.mut_arg(id, |a| a.hide(true));
                }
            }
            sub
        });
    }
    cmd
}

/// Help and version go to stdout (exit 0); every usage error is exit 64, never clap's 2
/// (which `plan --detailed-exitcode` uses for "changes pending"). With `--log-format json`
/// on the command line the error is one JSON line, like every other stderr line.
fn parse_failure(e: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    if e.kind() == ErrorKind::DisplayHelp
        && let Some(help) = help_for(&std::env::args().collect::<Vec<_>>())
    {
        print!("{help}");
        return Exit::Ok as i32;
    }
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        return Exit::Ok as i32;
    }
    if json_requested(std::env::args()) {
        // clap's own text (usage lines, the tip) as one message, without its colours.
        let text = e.render().to_string();
        let message = text.trim().strip_prefix("error: ").unwrap_or(text.trim());
        eprintln!("{}", json_error_line(message, Exit::Usage));
    } else {
        let _ = e.print();
    }
    Exit::Usage as i32
}

/// `--log-format json` or `--log-format=json` among the arguments.
fn json_requested(args: impl Iterator<Item = String>) -> bool {
    let flag = const { named::log_format.long_flag() };
    let mut previous_was_flag = false;
    for arg in args {
        if arg.strip_prefix(flag) == Some("=json") || (previous_was_flag && arg == "json") {
            return true;
        }
        previous_was_flag = arg == flag;
    }
    false
}

/// One error as a JSON log line, in the shape the tracing subscriber writes.
fn json_error_line(message: &str, exit: Exit) -> String {
    serde_json::json!({
        "timestamp": rfc3339_now(),
        "level": "ERROR",
        "message": message,
        "exit": exit as i32,
    })
    .to_string()
}

/// `sipgw-bulk.1` and one page per command (`sipgw-bulk-plan.1`, ...), each with the
/// global options the command takes, into `dir`.
fn write_man_pages(dir: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let mut cli = Cli::command();
    // Built, so each command carries the global options it accepts.
    cli.build();
    let mut pages = vec![("sipgw-bulk".to_owned(), cli.clone())];
    for sub in cli.get_subcommands().filter(|s| s.get_name() != "help") {
        // clap takes a command's name as a `&'static str`: this one-shot command leaks a
        // dozen short names to give it one.
        let name: &'static str = Box::leak(format!("sipgw-bulk-{}", sub.get_name()).into());
        pages.push((name.to_owned(), sub.clone().name(name)));
    }
    for (name, page) in pages {
        let path = dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        man::render(page, &mut text)?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

/// One event as a JSON log line, in the shape the tracing subscriber writes, with one
/// field that holds a JSON value (an object stays an object).
fn json_log_line(level: &str, message: &str, field: &str, value: serde_json::Value) -> String {
    let mut line = serde_json::json!({
        "timestamp": rfc3339_now(),
        "level": level,
        "message": message,
    });
    if let Some(map) = line.as_object_mut() {
        map.insert(field.to_owned(), value);
    }
    line.to_string()
}

/// Now as `2026-11-28T04:01:42.520840Z`, the tracing subscriber's timestamp format.
fn rfc3339_now() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = since.as_secs();
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let t = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        t / 3600,
        (t % 3600) / 60,
        t % 60,
        since.subsec_micros()
    )
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

/// Settings and the config file, as every command sees them.
pub struct Context {
    pub global: GlobalArgs,
    pub settings: Settings,
    pub file: FileConfig,
    /// Where the space and the base URL given by flag or environment came from.
    pub origins: space::Origins,
}

impl Context {
    /// The space the command talks to and its project, with the setting each came from;
    /// `None` when no setting names a space. Two settings naming different spaces: exit 64.
    fn target(&self) -> Result<Option<space::Target>, Failure> {
        let flags = Overrides {
            space: self.global.space.clone(),
            base_url: self.global.base_url.clone(),
            ..Overrides::default()
        };
        space::target(
            &self.origins,
            &flags,
            &self.file,
            self.global.config.as_deref(),
            |k| std::env::var(k).ok(),
        )
        .exit_with(Exit::Usage)
    }

    /// The API client's settings: the space's URL and the credentials. Names the space
    /// and the project (and where each came from) first, on stderr.
    fn client_config(&self) -> Result<crate::client::ClientConfig, Failure> {
        let base_url = self.space_url()?;
        let credentials = match self.projects()? {
            Some(set) => set
                .default_project()
                .map(crate::projects::Project::credentials)
                .ok_or_else(|| {
                    usage(format!(
                        "the projects file lists several projects and none is the default \
                         ({}): this command needs one project",
                        const { named::project_id.env_var() }
                    ))
                })?,
            None => {
                config::credentials(&self.file, |k| std::env::var(k).ok()).exit_with(Exit::Usage)?
            }
        };
        Ok(self.client_config_for(base_url, credentials))
    }
}

pub async fn set_up_and_dispatch(cli: Cli, origins: space::Origins) -> Result<Exit, Failure> {
    let early = cli.global.log_format.unwrap_or_default();
    let configured = configure(&cli);
    if configured.is_err() {
        // The config could not be read: log as the flags asked, so the error is JSON
        // under --log-format json too.
        init_logging(&cli.global, early);
    }
    let (settings, file) = configured?;
    init_logging(&cli.global, settings.log_format);
    let ctx = Context {
        global: cli.global,
        settings,
        file,
        origins,
    };
    dispatch(ctx, cli.command).await
}

/// The config file and the settings, before logging starts.
fn configure(cli: &Cli) -> Result<(Settings, FileConfig), Failure> {
    // A file-size limit (ulimit -f) must turn into a write error the run reports, not a
    // silent kill by SIGXFSZ: catching the signal makes the write fail with EFBIG instead.
    #[cfg(target_os = "linux")]
    let _ = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(25));
    let file = match &cli.global.config {
        Some(path) => FileConfig::load(path).exit_with(Exit::Usage)?,
        None => FileConfig::default(),
    };
    // A command ignores the settings it has no use for, from any level.
    let cmd = cmd_of(&cli.command);
    let file = file.for_command(cmd);
    let overrides = cli.global.overrides(cmd);
    let settings = config::resolve(&overrides, &file).exit_with(Exit::Usage)?;
    Ok((settings, file))
}

/// Runs one command.
async fn dispatch(ctx: Context, command: Command) -> Result<Exit, Failure> {
    match command {
        Command::Validate(args) => validate::run(&ctx, &args).await,
        Command::Plan(args) => plan(&ctx, &args).await,
        Command::Apply(args) => apply(&ctx, &args).await,
        Command::Export(args) => export::run(&ctx, &args).await,
        Command::Doctor => doctor::run(&ctx).await,
        Command::Show(args) => show::run(&ctx, &args).await,
        Command::Rollback(args) => rollback::run(&args),
        #[cfg(feature = "sandbox")]
        Command::Sandbox(args) => sandbox::run(args).await,
        Command::Completions { shell } => completions(shell),
        Command::Man { out_dir } => {
            match out_dir {
                Some(dir) => write_man_pages(&dir).exit_with(Exit::Usage)?,
                None => {
                    man::render(Cli::command(), &mut std::io::stdout()).exit_with(Exit::Usage)?
                }
            }
            Ok(Exit::Ok)
        }
    }
}

/// `plan`: the manifest's rows, read only, a plan saved with `--out`.
async fn plan(ctx: &Context, args: &PlanArgs) -> Result<Exit, Failure> {
    // `--output text|json`, the flag's old meaning, is never taken for a file name.
    if let Some(format) = args
        .out
        .as_deref()
        .and_then(std::path::Path::to_str)
        .filter(|f| matches!(*f, "text" | "json"))
    {
        return Err(reconcile::old_output(format));
    }
    let source = reconcile::Source::Manifest {
        path: args.manifest.manifest.clone(),
        format: args.manifest.format,
    };
    let run = reconcile::RunArgs {
        source,
        job: &args.job,
        mode: reconcile::Mode::Plan,
        apply: None,
        save_plan: args.out.as_deref(),
        detailed_exitcode: args.detailed_exitcode,
    };
    reconcile::plan_or_apply(ctx, run).await
}

/// `apply`: a manifest's rows or a saved plan's, written (read only with `--dry-run`).
async fn apply(ctx: &Context, args: &ApplyArgs) -> Result<Exit, Failure> {
    let mode = if args.dry_run {
        reconcile::Mode::Plan
    } else {
        reconcile::Mode::Apply
    };
    let source = match (&args.plan, &args.manifest) {
        (Some(plan), _) => reconcile::Source::Plan(plan.clone()),
        (None, Some(path)) => reconcile::Source::Manifest {
            path: path.clone(),
            format: args.format,
        },
        (None, None) => return Err(usage("apply needs a MANIFEST or --plan PLAN")),
    };
    let run = reconcile::RunArgs {
        source,
        job: &args.job,
        mode,
        apply: Some(args),
        save_plan: None,
        detailed_exitcode: args.detailed_exitcode,
    };
    reconcile::plan_or_apply(ctx, run).await
}

/// `completions SHELL`: the shell's completion script on stdout.
fn completions(shell: clap_complete::Shell) -> Result<Exit, Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "sipgw-bulk", &mut script);
    let script = String::from_utf8_lossy(&script);
    let script = match shell {
        // clap_complete names the command `sipgw__bulk` where it reads the words and
        // `sipgw__subcmd__bulk` where it completes them (the hyphen), so nothing
        // after the subcommand completed: one name for both.
        clap_complete::Shell::Bash => script.replace("sipgw__subcmd__bulk", "sipgw__bulk"),
        _ => script.into_owned(),
    };
    std::io::Write::write_all(&mut std::io::stdout(), script.as_bytes()).exit_with(Exit::Usage)?;
    Ok(Exit::Ok)
}

/// The log format in force, once logging is set up.
static LOG_FORMAT: std::sync::OnceLock<LogFormat> = std::sync::OnceLock::new();

fn init_logging(global: &GlobalArgs, format: LogFormat) {
    let _ = LOG_FORMAT.set(format);
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
        .with_writer(crate::progress::LogWriter)
        .with_target(false);
    // A second init (tests running `run` twice in one process) is harmless.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// SIGINT (Ctrl-C) or SIGTERM.
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

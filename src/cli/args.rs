//! The clap definitions: every command, flag and value parser. `cli` imports them
//! privately, for its commands only: none is reachable from outside `cli`.

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use uuid::Uuid;

use crate::config::Overrides;
use crate::manifest::Format;
use crate::plan_view::PlanFormat;
use crate::settings::Cmd;
use crate::shard::Shard;

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

/// The global options, from [`crate::settings`]'s declaration, and the flag layer for
/// `config::resolve`.
macro_rules! global_args {
    ($(
        $name:ident for $takes:ident help $help:literal
        $( flag $flag:ident : $fty:ty [ $($clap:tt)* ] $( env $env:literal )? $( sets $sets:ident )? )?
        $( reads $reads:literal )?
        $( key $key:ident : $kty:ty, example $example:literal
            $(, default $default:expr)? $(, land $land:expr)? )?
        ;
    )*) => {
        /// Flags every command takes. Precedence: flag > environment > config file > default.
        /// In each command's help they come after the command's own, under their own heading.
        #[derive(Debug, Args)]
        #[command(next_help_heading = "Global options")]
        pub struct GlobalArgs {
            $( $(
                #[doc = $help]
                #[arg(long, global = true, $($clap)* $(, env = $env, hide_env_values = true)?)]
                pub $flag: $fty,
            )? )*
        }

        impl GlobalArgs {
            /// The flags' layer (clap merged in their environment variables) under the config
            /// keys they override; a setting `cmd` has no use for is left out (ignored there).
            pub fn overrides(&self, cmd: Cmd) -> Overrides {
                let mut layer = Overrides::default();
                $( $( $(
                    if $crate::settings::$takes.uses(cmd) {
                        layer.$sets = self.$flag.clone();
                    }
                )? )? )*
                layer
            }
        }
    };
}
crate::settings::for_each_setting!(global_args);

/// `--color`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to paint what goes to stdout.
    pub fn on_stdout(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::io::stdout().is_terminal()
                    && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check every row offline; print each bad row with its line. Sends nothing.
    ///
    /// Example: sipgw-bulk validate gateways.csv
    Validate(ManifestArgs),
    /// Read each gateway and print what would change; write the report. Never writes to
    /// the API.
    ///
    /// Example: sipgw-bulk plan gateways.csv --report plan.csv --detailed-exitcode
    Plan(PlanArgs),
    /// Plan, then PATCH the rows that differ.
    ///
    /// Example: sipgw-bulk apply gateways.csv --rate 100 --max-errors 1% --yes --report run1.csv
    Apply(ApplyArgs),
    /// Check each project's access before a run. Never writes.
    ///
    /// Per project: credentials accepted, gateways visible, the rate-limit headers the
    /// space answers with (names and values), the round trip, the server's clock against
    /// this machine's. Exit 0 when every project is usable, 3 when one is refused or the
    /// space cannot be reached, 1 when the space answered but a project failed otherwise
    /// (a 5xx past the retries).
    ///
    /// Example: sipgw-bulk doctor --projects projects.yaml
    Doctor,
    /// Write a manifest of every gateway's current state (stdout without -o).
    ///
    /// Example: sipgw-bulk export -o before.csv
    Export(ExportArgs),
    /// Print one gateway's current state as a manifest row (or JSON), or a saved plan as
    /// its diff.
    ///
    /// Example: sipgw-bulk show 0823a606-0aff-4c90-9eba-f88ba118fe05
    Show(ShowArgs),
    /// Turn an apply report into a manifest that restores the before-values.
    ///
    /// Example: sipgw-bulk rollback run1.csv -o undo.csv && sipgw-bulk apply undo.csv --yes
    Rollback(RollbackArgs),
    /// Serve a simulated SignalWire space on 127.0.0.1 until interrupted.
    ///
    /// Prints SIGNALWIRE_BASE_URL, SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN lines.
    ///
    /// Example: sipgw-bulk sandbox --seed-from gateways.csv --port 8080 > sandbox.env
    #[cfg(feature = "sandbox")]
    Sandbox(SandboxArgs),
    /// Print a shell completion script.
    ///
    /// Example: sipgw-bulk completions bash > /etc/bash_completion.d/sipgw-bulk
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    ///
    /// Example: sipgw-bulk man > sipgw-bulk.1 && man ./sipgw-bulk.1
    ///
    /// Every page: sipgw-bulk man --out-dir /usr/local/share/man/man1
    Man {
        /// Write every page into DIR instead: sipgw-bulk.1 and one per command
        /// (sipgw-bulk-plan.1, ...).
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Args)]
pub struct ManifestArgs {
    /// The manifest: .csv, .yaml or .yml.
    pub manifest: PathBuf,
    /// Manifest format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
}

/// What plan and apply share.
#[derive(Debug, Args)]
pub struct JobArgs {
    /// Also write the summary as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    pub summary_json: Option<PathBuf>,
    /// Only rows whose id hashes to shard K of N (0 <= K < N), e.g. 0/4.
    #[arg(long, value_name = "K/N")]
    pub shard: Option<Shard>,
    /// Wait up to SECS for another run to release the report's lock (default: refuse at
    /// once, exit 5).
    #[arg(long, value_name = "SECS", default_value_t = 0)]
    pub lock_timeout: u64,
    /// In the plan, list unchanged rows too.
    #[arg(long)]
    pub show_unchanged: bool,
    /// How the plan's diff prints on stdout: text for people, json (one object a line) for
    /// tools.
    #[arg(long, value_name = "FORMAT", default_value = "text")]
    pub diff_format: PlanFormat,
    /// Run only this row (a gateway id), or the rows whose ids FILE lists (@FILE: one id
    /// a line); may be given again. The other rows are reported skipped (not_selected).
    #[arg(long, value_name = "ID|@FILE")]
    pub only: Vec<String>,
    /// Leave out this row (a gateway id), or the rows whose ids FILE lists (@FILE); may be
    /// given again. Those rows are reported skipped (not_selected).
    #[arg(long, value_name = "ID|@FILE")]
    pub skip: Vec<String>,
    /// How gateways are read: get (one GET a row), list (the whole space in pages first;
    /// GET only before a PATCH and for rows the pages lacked), auto (list while pages cost
    /// fewer round trips than the GETs would; 1,000 rows or more).
    #[arg(long, value_name = "MODE", default_value = "auto")]
    pub read_mode: crate::snapshot::ReadMode,
    /// Write the run's metrics to FILE at its end (Prometheus text format, for
    /// node_exporter's textfile collector: name it *.prom in the collector's directory).
    #[arg(long, value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,
    /// Push the run's metrics to this Pushgateway (at the end, and every --push-interval
    /// during the run); one that cannot be reached is a warning.
    #[arg(long, value_name = "URL")]
    pub push_gateway: Option<url::Url>,
    /// Seconds between pushes during a run.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    pub push_interval: u64,
    /// Serve the run's metrics at http://ADDR/metrics while it lasts (ADDR or PORT; a port
    /// alone listens on 127.0.0.1).
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<String>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    #[command(flatten)]
    pub manifest: ManifestArgs,
    /// Save the plan to PLAN: `apply --plan PLAN` then writes exactly these changes
    /// (`--out` is the same). How the plan prints is --diff-format.
    #[arg(
        short = 'o',
        long = "output",
        visible_alias = "out",
        value_name = "PLAN"
    )]
    pub out: Option<PathBuf>,
    #[command(flatten)]
    pub job: JobArgs,
    /// Exit 2 when changes are pending (0: nothing to do, 1: errors).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// The manifest: .csv, .yaml or .yml (not with --plan).
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub manifest: Option<PathBuf>,
    /// Manifest format, when the extension does not tell.
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Write exactly the changes of this saved plan (`plan -o`); a gateway that changed
    /// since is `conflict`, not written. Needs no --yes: the plan was the review.
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    #[command(flatten)]
    pub job: JobArgs,
    /// Do not ask before writing (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Only plan: read and diff, write nothing (same as `plan`).
    #[arg(long)]
    pub dry_run: bool,
    /// Exit 2 when changes were made (0: nothing to change, 1: errors): a scheduled apply
    /// that fixed drift tells its wrapper so. With --dry-run: 2 when changes are pending.
    #[arg(long)]
    pub detailed_exitcode: bool,
    /// Refuse to write anything when the plan changes more than N rows (exit 3).
    #[arg(long, value_name = "N")]
    pub max_changes: Option<u64>,
    /// Stop taking new rows once N rows (or P% of the rows) failed (exit 3).
    #[arg(long, value_name = "N|P%")]
    pub max_errors: Option<ErrorLimit>,
    /// Write only the first N rows that need a change (a canary); the rest are `skipped`.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Continue the run recorded in --report: rows already updated or unchanged are not
    /// touched again. Refused if the manifest changed. Starts afresh if there is no report.
    #[arg(long)]
    pub resume: bool,
    /// Seconds requests already sent may take to finish after SIGINT/SIGTERM (no new PATCH
    /// starts after the signal).
    #[arg(long, default_value_t = 30, value_name = "SECS")]
    pub grace: u64,
    /// The old spelling of --diff-format, refused with a hint: -o/--output names a file
    /// in every command that has it.
    #[arg(long = "output", hide = true, value_name = "FORMAT")]
    pub old_output: Option<String>,
}

use crate::run::ErrorLimit;

impl std::str::FromStr for ErrorLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(p) = s.trim().strip_suffix('%') {
            let p: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{s}`: expected N or P%, like 10 or 2.5%"))?;
            if !(0.0..=100.0).contains(&p) {
                return Err(format!("`{s}`: a percentage is between 0% and 100%"));
            }
            return Ok(ErrorLimit::Percent(p));
        }
        let n: u64 = s
            .trim()
            .parse()
            .map_err(|_| format!("`{s}`: expected N or P%, like 10 or 2.5%"))?;
        if n == 0 {
            return Err("--max-errors 0 would stop before the first row; use 1 or more".into());
        }
        Ok(ErrorLimit::Count(n))
    }
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Manifest format to write [default: from -o's extension, else csv].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
    /// Gateways asked for per page.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    pub page_size: u32,
    /// With --projects: only this project (its name or id; repeatable) [default: every
    /// project of the file].
    #[arg(long, value_name = "NAME|ID")]
    pub project: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The gateway's resource id.
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub id: Option<String>,
    /// Print JSON (the five fields and the id) instead of a CSV manifest row.
    #[arg(long, conflicts_with = "plan")]
    pub json: bool,
    /// Manifest format of the row [default: csv].
    #[arg(long, value_name = "FORMAT", conflicts_with_all = ["json", "plan"])]
    pub format: Option<Format>,
    /// Print this saved plan (`plan -o PLAN`) as the diff it is, checked as `apply --plan`
    /// checks it (a plan cut short or edited is refused, exit 64). Sends no request.
    #[arg(long, value_name = "PLAN")]
    pub plan: Option<PathBuf>,
    /// With --plan: how the diff prints, text for people or json (one object a line)
    /// [default: text].
    #[arg(long, value_name = "FORMAT", requires = "plan")]
    pub diff_format: Option<PlanFormat>,
    /// Read the gateway with this project's credentials (its name or id in --projects).
    #[arg(long, value_name = "NAME|ID", conflicts_with = "plan")]
    pub project: Option<String>,
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The report of the apply to undo (CSV or JSONL): each written row's before-values
    /// become a manifest row.
    // Its own id: the global `--report` flag has the id `report`, and clap then left this
    // argument out of the help.
    #[arg(id = "undo_report", value_name = "REPORT")]
    pub report: PathBuf,
    /// Write to FILE instead of stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Manifest format to write [default: from -o's extension, else csv].
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<Format>,
}

/// Whose values `sandbox --seed-from` gives its gateways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SeedValues {
    /// The sandbox's own starting values: applying the manifest changes every row.
    Sandbox,
    /// The manifest's values (over the sandbox's for fields a row leaves out): applying it
    /// changes nothing.
    Manifest,
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    pub port: u16,
    /// Hold one gateway per id in this manifest.
    #[arg(long, value_name = "MANIFEST")]
    pub seed_from: Option<PathBuf>,
    /// The seeded gateways' values: the sandbox's own (an apply of the manifest has work
    /// to do), or the manifest's (already as it says: rehearse a run with nothing to do,
    /// then drift).
    #[arg(
        long,
        value_name = "VALUES",
        default_value = "sandbox",
        requires = "seed_from"
    )]
    pub seed_values: SeedValues,
    /// Hold N generated gateways.
    #[arg(long, value_name = "N")]
    pub gateways: Option<u64>,
    /// Writes accepted per second before answering 429; 0 = no limit. Smooth (a token
    /// bucket holding a tenth of a second's writes) unless --limit-window is given.
    #[arg(long, default_value_t = 1380, value_name = "N")]
    pub write_limit: u32,
    /// Count the write limit in fixed windows of SECS seconds (N x SECS writes each), as
    /// the platform does (13,800 per 10 s: --write-limit 1380 --limit-window 10).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub limit_window: Option<u64>,
    /// Announce the write window on every answer: X-RateLimit-Limit, -Remaining, -Reset
    /// (implies --limit-window 10 unless given).
    #[arg(long)]
    pub announce_limit: bool,
    /// "Production" writes a second the sandbox spends itself against the same limit (the
    /// customer's own traffic); its refusals are counted in /__sandbox/stats.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub background_writes: u32,
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
    /// Answer PATCHes of this gateway with other codecs than were sent (repeatable).
    #[arg(long, value_name = "ID")]
    pub mismatch_patch: Vec<Uuid>,
    /// Hold the Nth valid PATCH (from 1): it is not applied and never answered while the
    /// sandbox serves, so a client can be killed at a chosen point, the same every time
    /// (/__sandbox/stats counts it in `patches_held` once it arrives).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub hold_patch: Option<u64>,
    /// With --hold-patch: apply that PATCH, then hold its answer (the write lands, the
    /// client never learns it did).
    #[arg(long, requires = "hold_patch")]
    pub hold_applied: bool,
    /// Serve N projects of one space, each with its own id and token and seeing only its
    /// own gateways (seeded gateways are dealt to them in turn); one write limit counts
    /// them all.
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub project_count: u16,
    /// Write the projects file for `--projects` here (mode 0600) and print
    /// `SIGNALWIRE_PROJECTS_FILE=FILE` after the other lines.
    #[arg(long, value_name = "FILE")]
    pub projects_out: Option<PathBuf>,
    /// Worker threads serving requests [default: the number of cores].
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `--reserve`: `50%` or `50`, a percentage.
fn parse_percent(s: &str) -> Result<f64, String> {
    let number = s.trim().trim_end_matches('%').trim();
    match number.parse::<f64>() {
        Ok(p) if (0.0..100.0).contains(&p) => Ok(p),
        _ => Err(format!("`{s}` is not a percentage from 0% to under 100%")),
    }
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

/// Every declared setting, walked from each of its sources: the table alone decides what
/// is checked, so a new setting is covered by its declaration.
#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::{Cli, GlobalArgs};
    use crate::config::{self, FileConfig};
    use crate::settings::{Cmd, SETTINGS, Setting};

    /// What a run of `plan` is given: the flags as parsed, the resolved settings, and the
    /// credentials (with the half a setting does not name taken from a baseline).
    fn observe(
        global: &GlobalArgs,
        mut file: FileConfig,
        env: impl Fn(&str) -> Option<String>,
        token: &std::path::Path,
    ) -> String {
        let settings = config::resolve(&global.overrides(Cmd::Plan), &file);
        file.project_id.get_or_insert_with(|| "base".into());
        file.api_token_file.get_or_insert_with(|| token.to_owned());
        let credentials =
            config::credentials(&file, env).map(|c| (c.project_id, c.token.expose().to_owned()));
        format!("{global:?}\n{settings:?}\n{credentials:?}")
    }

    fn parse(flags: &[&str]) -> GlobalArgs {
        let argv = [&["sipgw-bulk"], flags, &["plan", "m.csv"]].concat();
        let matches = Cli::command().try_get_matches_from(argv).unwrap();
        Cli::from_arg_matches(&matches).unwrap().global
    }

    /// The value a test gives the flag: one of its choices other than the first, else the
    /// declared example, else a number (which every flag without either takes).
    fn flag_value(setting: &Setting, arg: &clap::Arg) -> String {
        let choices = arg.get_possible_values();
        match (choices.last(), setting.example) {
            (Some(choice), _) if choices.len() > 1 => choice.get_name().to_owned(),
            (_, Some(example)) => example.to_owned(),
            _ => "7".to_owned(),
        }
    }

    fn baseline(token: &std::path::Path) -> String {
        observe(&parse(&[]), FileConfig::default(), |_| None, token)
    }

    #[test]
    fn every_flag_reaches_what_the_command_gets_and_the_same_as_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "PTbase").unwrap();
        let command = Cli::command();
        for setting in SETTINGS.iter().filter(|s| s.flag.is_some()) {
            let id = setting.flag.unwrap();
            let arg = command.get_arguments().find(|a| a.get_id() == id);
            let arg = arg.unwrap_or_else(|| panic!("{id}: declared, not a clap argument"));
            assert_eq!(arg.get_env().and_then(|e| e.to_str()), setting.env, "{id}");
            let long = setting.long.unwrap();
            let value = flag_value(setting, arg);
            let flags: Vec<&str> = match arg.get_action().takes_values() {
                true => vec![long, &value],
                false => vec![long],
            };
            let given = observe(&parse(&flags), FileConfig::default(), |_| None, &token);
            assert_ne!(given, baseline(&token), "{long} {value} changed nothing");
            if setting.key.is_some() {
                assert!(setting.sets.is_some(), "{long} overrides no config key");
            }
            let Some(key) = setting.sets else { continue };
            let file: FileConfig = serde_saphyr::from_str(&format!("{key}: {value}")).unwrap();
            let from_file = config::resolve(&Default::default(), &file);
            let from_flag =
                config::resolve(&parse(&flags).overrides(Cmd::Plan), &FileConfig::default());
            assert_eq!(
                format!("{from_flag:?}"),
                format!("{from_file:?}"),
                "{long} vs {key}"
            );
            assert_ne!(
                format!("{from_flag:?}"),
                format!(
                    "{:?}",
                    config::resolve(&Default::default(), &FileConfig::default())
                ),
                "{long} {value} does not reach the settings"
            );
        }
    }

    #[test]
    fn every_config_key_and_environment_variable_reaches_what_the_command_gets() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "PTbase").unwrap();
        for setting in SETTINGS {
            if let Some(key) = setting.key {
                let example = setting.example.unwrap();
                let path = dir.path().join("c.yaml");
                std::fs::write(&path, format!("{key}: {example}\n")).unwrap();
                let file = FileConfig::load(&path).unwrap();
                let given = observe(&parse(&[]), file, |_| None, &token);
                assert_ne!(given, baseline(&token), "{key}: {example} changed nothing");
            }
            if let (Some(var), None) = (setting.env, setting.flag) {
                let env = |k: &str| (k == var).then(|| "from-env".to_owned());
                let given = observe(&parse(&[]), FileConfig::default(), env, &token);
                assert_ne!(given, baseline(&token), "{var} changed nothing");
            }
        }
    }

    /// A setting from the config file is ignored by a command that does not take it.
    #[test]
    fn a_command_ignores_the_keys_it_does_not_take() {
        for setting in SETTINGS.iter().filter(|s| s.key.is_some()) {
            let key = setting.key.unwrap();
            let example = setting.example.unwrap();
            let text = format!("{key}: {example}");
            for cmd in Cmd::ALL.into_iter().filter(|c| !setting.takes.uses(*c)) {
                let file: FileConfig = serde_saphyr::from_str(&text).unwrap();
                let kept = format!("{:?}", file.for_command(cmd));
                assert_eq!(
                    kept,
                    format!("{:?}", FileConfig::default()),
                    "{key}, {cmd:?}"
                );
            }
        }
    }

    /// A help line's `[default: X]` is the declared default: the key set to X resolves to
    /// the settings of an empty config.
    #[test]
    fn every_default_the_help_shows_is_the_declared_one() {
        let defaults = format!(
            "{:?}",
            config::resolve(&Default::default(), &FileConfig::default())
        );
        let mut checked = 0;
        for setting in SETTINGS {
            let (Some(key), Some((_, shown))) =
                (setting.key, setting.help.split_once("[default: "))
            else {
                continue;
            };
            let shown = shown.split(']').next().unwrap().trim_end_matches('%');
            let file: FileConfig = serde_saphyr::from_str(&format!("{key}: {shown}")).unwrap();
            let given = format!("{:?}", config::resolve(&Default::default(), &file));
            assert_eq!(given, defaults, "{key}: the help says {shown}");
            checked += 1;
        }
        assert!(checked >= 6, "{checked}");
    }

    /// The table's commands are the command line's.
    #[test]
    fn the_table_names_every_command() {
        let names: Vec<String> = Cli::command()
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        for cmd in Cmd::ALL {
            if cmd == Cmd::Sandbox && !cfg!(feature = "sandbox") {
                continue;
            }
            assert!(names.contains(&cmd.name().to_owned()), "{cmd:?}");
        }
        for name in names {
            assert!(Cmd::named(&name).is_some(), "{name} is not in the table");
        }
    }
}

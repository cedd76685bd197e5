//! Every global setting, declared once: its flag, environment variable, config-file key,
//! default, help line, the commands that take it, and how its value lands in
//! `config::Settings`. The declaration is one `macro_rules!` table that other
//! modules expand: `config` into the config file's keys, the flag layer and the layering;
//! `cli` into the clap arguments and the per-command refusal; and [`SETTINGS`] here, the
//! same table as data (for help, man pages and the tests that walk every setting).
//!
//! Entry grammar, each part optional except the name, the commands and the help:
//!
//! ```text
//! NAME for COMMANDS help "LINE"
//!     flag FIELD: TYPE [CLAP ARG ATTRIBUTES] env "VAR" sets KEY   (a global option)
//!     reads "VAR"                  (an environment variable read outside clap)
//!     key KEY: TYPE, example "V", default EXPR, land |settings, value| { ... };
//! ```
//!
//! `sets KEY` names the config key the flag overrides (flag over environment over file
//! over default); `land` puts the chosen value into `Settings` and checks it.

/// Defaults, named so the README and `config.example.yaml` can cite them.
pub mod defaults {
    pub const CONCURRENCY: usize = 32;
    /// Writes per second: 18% of a space's 13,800 per 10 s. The limit is shared with the
    /// customer's production traffic, and a 429 the job provokes may land on a production
    /// request: the ceiling leaves 82% (1,130/s) to production before the adaptive pace
    /// ever has to act. Raise it for a space known to be idle.
    pub const WRITE_RATE: u32 = 250;
    pub const READ_RATE: u32 = 5000;
    pub const TIMEOUT_SECS: u64 = 30;
    pub const CONNECT_TIMEOUT_SECS: u64 = 10;
}

/// How log lines look on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// A command, as the settings table names it (its name is the subcommand's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmd {
    Validate,
    Plan,
    Apply,
    Doctor,
    Export,
    Show,
    Rollback,
    Sandbox,
    Completions,
    Man,
}

impl Cmd {
    /// Every command.
    pub const ALL: [Cmd; 10] = [
        Cmd::Validate,
        Cmd::Plan,
        Cmd::Apply,
        Cmd::Doctor,
        Cmd::Export,
        Cmd::Show,
        Cmd::Rollback,
        Cmd::Sandbox,
        Cmd::Completions,
        Cmd::Man,
    ];

    /// The subcommand's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Cmd::Validate => "validate",
            Cmd::Plan => "plan",
            Cmd::Apply => "apply",
            Cmd::Doctor => "doctor",
            Cmd::Export => "export",
            Cmd::Show => "show",
            Cmd::Rollback => "rollback",
            Cmd::Sandbox => "sandbox",
            Cmd::Completions => "completions",
            Cmd::Man => "man",
        }
    }

    pub fn named(name: &str) -> Option<Cmd> {
        Cmd::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Commands that print what is built in (a man page, a completion script): they accept
    /// every global option, as clap does, and refuse none.
    pub fn prints_only(self) -> bool {
        matches!(self, Cmd::Completions | Cmd::Man)
    }

    const fn bit(self) -> u16 {
        1 << self as u16
    }
}

/// A set of commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cmds(u16);

impl Cmds {
    pub const fn of(cmds: &[Cmd]) -> Cmds {
        let mut bits = 0;
        let mut i = 0;
        while i < cmds.len() {
            bits |= cmds[i].bit();
            i += 1;
        }
        Cmds(bits)
    }

    /// Whether the command uses the setting: its value (flag, environment, file) counts.
    pub const fn uses(self, cmd: Cmd) -> bool {
        self.0 & cmd.bit() != 0
    }

    /// Whether the command's line may carry the flag (and its help shows it).
    pub fn accepts(self, cmd: Cmd) -> bool {
        self.uses(cmd) || cmd.prints_only()
    }
}

/// Every command.
pub const ALL: Cmds = Cmds::of(&Cmd::ALL);
/// The commands that talk to a space.
pub const SPACE: Cmds = Cmds::of(&[Cmd::Plan, Cmd::Apply, Cmd::Export, Cmd::Show, Cmd::Doctor]);
/// The commands that read gateways in bulk.
pub const BULK_READS: Cmds = Cmds::of(&[Cmd::Plan, Cmd::Apply, Cmd::Export, Cmd::Doctor]);
/// A projects file: the commands that talk to a space, and `validate` (which checks a
/// row's project against it).
pub const PROJECTS: Cmds = Cmds::of(&[
    Cmd::Plan,
    Cmd::Apply,
    Cmd::Export,
    Cmd::Show,
    Cmd::Doctor,
    Cmd::Validate,
]);
/// The commands that run over rows.
pub const ROWS: Cmds = Cmds::of(&[Cmd::Plan, Cmd::Apply]);

/// One setting, as data.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    pub name: &'static str,
    /// The global option's id (its long flag with `_` for `-`).
    pub flag: Option<&'static str>,
    /// `--the-long-flag`.
    pub long: Option<&'static str>,
    /// The environment variable clap reads for the flag, or the library reads itself.
    pub env: Option<&'static str>,
    /// The config key the flag overrides.
    pub sets: Option<&'static str>,
    /// The config file's key.
    pub key: Option<&'static str>,
    /// A value the config file or the flag may give it, unlike its default.
    pub example: Option<&'static str>,
    pub takes: Cmds,
    pub help: &'static str,
}

impl Setting {
    /// The long flag (`--base-url`); in a `const`, a setting without one does not compile.
    pub const fn long_flag(&self) -> &'static str {
        match self.long {
            Some(long) => long,
            None => panic!("the setting has no flag"),
        }
    }

    /// The environment variable; in a `const`, a setting without one does not compile.
    pub const fn env_var(&self) -> &'static str {
        match self.env {
            Some(var) => var,
            None => panic!("the setting has no environment variable"),
        }
    }

    /// The config key; in a `const`, a setting without one does not compile.
    pub const fn config_key(&self) -> &'static str {
        match self.key {
            Some(key) => key,
            None => panic!("the setting has no config key"),
        }
    }
}

/// The declaration. `for_each_setting!(m)` calls `m! { entries }`.
macro_rules! for_each_setting {
    ($then:ident) => {
        $then! {
            config for SPACE help "YAML config file (see config.example.yaml)."
                flag config: Option<std::path::PathBuf> [value_name = "FILE"];
            space for SPACE help "SignalWire space: `acme`, `acme.signalwire.com` or its https URL."
                flag space: Option<String> [value_name = "SPACE"] env "SIGNALWIRE_SPACE" sets space
                // Lands with base_url, by config::resolve's base-URL rule.
                key space: String, example "acme";
            base_url for SPACE help "API base URL; https only, except a loopback host. With a \
        --space (or SIGNALWIRE_SPACE) that names another host: refused."
                flag base_url: Option<String> [value_name = "URL"] env "SIGNALWIRE_BASE_URL"
                    sets base_url
                key base_url: String, example "http://127.0.0.1:1";
            projects for PROJECTS help "Projects file: several projects of the space in one \
        run (see the guide's \"Several projects\"). Owned by you with no group/other \
        bits, or root's and not writable by others."
                flag projects: Option<std::path::PathBuf> [value_name = "FILE"]
                    env "SIGNALWIRE_PROJECTS_FILE" sets projects_file
                key projects_file: std::path::PathBuf, example "projects.yaml",
                    land |s, v| { s.projects_file = Some(v); Ok(()) };
            concurrency for ROWS help "Requests on the wire at most, and rows at work (a row \
        waiting out a retry is not, while refusals are judged noise; four times as many \
        under way at most) [default: 32]."
                flag concurrency: Option<usize> [value_name = "N"] sets concurrency
                key concurrency: usize, example "7", default $crate::settings::defaults::CONCURRENCY,
                    land |s, v| {
                        if !(1..=1024).contains(&v) {
                            return Err(ConfigError(format!(
                                "concurrency {v} is out of range (1 to 1024)"
                            )));
                        }
                        s.concurrency = v;
                        Ok(())
                    };
            rate for ROWS help "Writes per second at most, retries included [default: 250]."
                flag rate: Option<u32> [value_name = "N"] sets rate
                key rate: u32, example "7", default $crate::settings::defaults::WRITE_RATE,
                    land |s, v| {
                        s.write_rate = std::num::NonZeroU32::new(v).ok_or_else(|| {
                            ConfigError("rate must be at least 1 write per second".into())
                        })?;
                        Ok(())
                    };
            reserve for ROWS help "Share of the space's announced write budget left to its \
        other clients: the job never takes the remaining count below it \
        [default: 50%]."
                flag reserve: Option<f64> [value_name = "P%", value_parser = parse_percent]
                    sets reserve_percent
                key reserve_percent: f64, example "20",
                    default $crate::budget::DEFAULT_RESERVE * 100.0,
                    land |s, v| {
                        if !(0.0..100.0).contains(&v) {
                            return Err(ConfigError(format!(
                                "reserve {v}% is out of range (0% to under 100%: the job must \
                         be allowed some of the budget)"
                            )));
                        }
                        s.reserve = v / 100.0;
                        Ok(())
                    };
            read_rate for BULK_READS help "Reads per second at most; 0 = unlimited \
        [default: 5000]."
                flag read_rate: Option<u32> [value_name = "N"] sets read_rate
                key read_rate: u32, example "0", default $crate::settings::defaults::READ_RATE,
                    land |s, v| { s.read_rate = std::num::NonZeroU32::new(v); Ok(()) };
            report for ROWS help "Report file [default: STEM.report.csv for apply, \
        STEM.plan.csv for plan (or .jsonl)]."
                flag report: Option<std::path::PathBuf> [value_name = "FILE"];
            report_format for ROWS help "Report format [default: csv]."
                flag report_format: Option<$crate::report::ReportFormat> [value_name = "FORMAT"]
                    sets report_format
                key report_format: $crate::report::ReportFormat, example "jsonl",
                    land |s, v| { s.report_format = v; Ok(()) };
            log_format for ALL help "Log format on stderr [default: text]."
                flag log_format: Option<$crate::settings::LogFormat> [value_name = "FORMAT"]
                    sets log_format
                key log_format: $crate::settings::LogFormat, example "json",
                    land |s, v| { s.log_format = v; Ok(()) };
            verbose for ALL help "More log detail (-v debug, -vv trace). RUST_LOG overrides."
                flag verbose: u8 [short, action = clap::ArgAction::Count];
            quiet for ALL help "Only warnings and errors on stderr; no progress."
                flag quiet: bool [short];
            color for ROWS help "Colour in the plan: auto (a terminal, and NO_COLOR unset), \
        always or never."
                flag color: ColorChoice [value_name = "WHEN", default_value = "auto"];
            no_progress for ROWS help "No progress bar (stats lines still go to the log off \
        a terminal)."
                flag no_progress: bool [];
            stats_interval for ROWS help "Seconds between stats lines when there is no \
        progress bar."
                flag stats_interval: u64 [default_value_t = 10, value_name = "SECS"];
            project_id for SPACE help "Project id (HTTP Basic user)."
                reads "SIGNALWIRE_PROJECT_ID"
                key project_id: String, example "p-1";
            api_token_file for SPACE help "A file holding the API token (so the token itself \
        is never in the config)."
                reads "SIGNALWIRE_API_TOKEN"
                key api_token_file: std::path::PathBuf, example "token";
            timeout_secs for SPACE help "Whole-request timeout, in seconds [default: 30]."
                key timeout_secs: u64, example "7", default $crate::settings::defaults::TIMEOUT_SECS,
                    land |s, v| { s.timeout = std::time::Duration::from_secs(v); Ok(()) };
            connect_timeout_secs for SPACE help "Connect timeout, in seconds [default: 10]."
                key connect_timeout_secs: u64, example "7",
                    default $crate::settings::defaults::CONNECT_TIMEOUT_SECS,
                    land |s, v| {
                        s.connect_timeout = std::time::Duration::from_secs(v);
                        Ok(())
                    };
            max_attempts for SPACE help "Attempts in all for one request, the first included."
                key max_attempts: u32, example "2",
                    land |s, v| {
                        if v == 0 {
                            return Err(ConfigError("max_attempts must be at least 1".into()));
                        }
                        s.retry.max_attempts = v;
                        Ok(())
                    };
            max_retry_secs for SPACE help "The most time one request may spend trying."
                key max_retry_secs: u64, example "7",
                    land |s, v| { s.retry.max_total = std::time::Duration::from_secs(v); Ok(()) };
            retry_after_cap_secs for SPACE help "The longest single wait before a retry."
                key retry_after_cap_secs: u64, example "7",
                    land |s, v| {
                        s.retry.retry_after_cap = std::time::Duration::from_secs(v);
                        Ok(())
                    };
            outage_budget_secs for SPACE help "How long the space may be unreachable before \
        the job stops."
                key outage_budget_secs: u64, example "7",
                    land |s, v| {
                        s.retry.max_outage = std::time::Duration::from_secs(v);
                        Ok(())
                    };
            max_pages for SPACE help "Pages at most when paging through the space."
                key max_pages: u64, example "7",
                    land |s, v| { s.paging.max_pages = v; Ok(()) };
            max_list_gateways for SPACE help "Gateways at most when paging through the space."
                key max_list_gateways: u64, example "7",
                    land |s, v| { s.paging.max_gateways = v; Ok(()) };
            max_list_secs for SPACE help "Seconds at most when paging through the space."
                key max_list_secs: u64, example "7",
                    land |s, v| { s.paging.max_time = std::time::Duration::from_secs(v); Ok(()) };
        }
    };
}
pub(crate) use for_each_setting;

/// `--the-flag` for the id `the_flag`, as a `&'static str` made at compile time.
macro_rules! long_flag {
    ($id:ident) => {{
        const ID: &str = stringify!($id);
        const BYTES: [u8; ID.len() + 2] = {
            let mut out = [b'-'; ID.len() + 2];
            let id = ID.as_bytes();
            let mut i = 0;
            while i < id.len() {
                out[i + 2] = if id[i] == b'_' { b'-' } else { id[i] };
                i += 1;
            }
            out
        };
        match std::str::from_utf8(&BYTES) {
            Ok(long) => long,
            Err(_) => panic!("a flag's id is ASCII"),
        }
    }};
}

/// `Some` of the one value given, or `None`.
macro_rules! some {
    () => {
        None
    };
    ($value:expr) => {
        Some($value)
    };
}

/// [`SETTINGS`] from the declaration.
macro_rules! settings_table {
    ($(
        $name:ident for $takes:ident help $help:literal
        $( flag $flag:ident : $fty:ty [ $($clap:tt)* ] $( env $env:literal )? $( sets $sets:ident )? )?
        $( reads $reads:literal )?
        $( key $key:ident : $kty:ty, example $example:literal
            $(, default $default:expr)? $(, land $land:expr)? )?
        ;
    )*) => {
        /// Every setting, in the order of the declaration (the help's order).
        pub const SETTINGS: &[Setting] = &[$( named::$name ),*];

        /// Each setting by its name, for code that names one (`named::space.env`).
        #[allow(non_upper_case_globals)]
        pub mod named {
            use super::*;
            $(
                pub const $name: Setting = Setting {
                    name: stringify!($name),
                    flag: some!($( stringify!($flag) )?),
                    long: some!($( long_flag!($flag) )?),
                    env: some!($( $( $env )? )? $( $reads )?),
                    sets: some!($( $( stringify!($sets) )? )?),
                    key: some!($( stringify!($key) )?),
                    example: some!($( $example )?),
                    takes: $takes,
                    help: $help,
                };
            )*
        }
    };
}
for_each_setting!(settings_table);

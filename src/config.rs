//! Settings: command-line flags over environment over config file over built-in defaults.
//!
//! Raw values come in as [`Overrides`] (flags and their environment variables, merged by
//! clap) and [`FileConfig`] (the YAML file); [`resolve`] turns them into checked
//! [`Settings`]. Credentials come only from the environment or the file, never from argv.

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::export::PagingLimits;
use crate::report::ReportFormat;
use crate::retry::RetryPolicy;
use crate::secret::{Credentials, Secret};
use crate::settings::{Cmd, named};

use crate::settings::LogFormat;

/// The names this module's messages and lookups cite, from their declarations (a
/// declaration without one does not compile).
const PROJECT_ID_ENV: &str = named::project_id.env_var();
const PROJECT_ID_KEY: &str = named::project_id.config_key();
const TOKEN_ENV: &str = named::api_token_file.env_var();
const TOKEN_FILE_KEY: &str = named::api_token_file.config_key();
const BASE_URL_FLAG: &str = named::base_url.long_flag();

/// The config file's keys and the flags' layer, each field a setting's config key
/// ([`crate::settings`] declares them), and [`resolve`]'s layering.
macro_rules! config_layers {
    ($(
        $name:ident for $takes:ident help $help:literal
        $( flag $flag:ident : $fty:ty [ $($clap:tt)* ] $( env $env:literal )? $( sets $sets:ident )? )?
        $( reads $reads:literal )?
        $( key $key:ident : $kty:ty, example $example:literal
            $(, default $default:expr)? $(, land $land:expr)? )?
        ;
    )*) => {
        /// The config file (`--config FILE`). Every key is optional; unknown keys are refused.
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct FileConfig {
            $( $( #[doc = $help] pub $key: Option<$kty>, )? )*
        }

        /// Values from flags (clap has already merged in their environment variables), under
        /// the config key each overrides.
        #[derive(Debug, Default, Clone)]
        pub struct Overrides {
            $( $( #[doc = $help] pub $key: Option<$kty>, )? )*
        }

        impl FileConfig {
            /// The file without the keys `cmd` has no use for (ignored there).
            pub fn for_command(mut self, cmd: Cmd) -> FileConfig {
                $( $( if !$crate::settings::$takes.uses(cmd) { self.$key = None; } )? )*
                self
            }
        }

        /// Flag > environment (both in `flags`) > file > default, each value landed in
        /// [`Settings`] (and checked) as its declaration says.
        pub fn resolve(flags: &Overrides, file: &FileConfig) -> Result<Settings, ConfigError> {
            let mut settings = Settings::unset(base_url(flags, file)?);
            $( $(
                let $key: Option<$kty> =
                    flags.$key.clone().or_else(|| file.$key.clone()) $( .or(Some($default)) )?;
                let _ = &$key;
                $(
                    let land: fn(&mut Settings, $kty) -> Result<(), ConfigError> = $land;
                    if let Some(value) = $key {
                        land(&mut settings, value)?;
                    }
                )?
            )? )*
            Ok(settings)
        }
    };
}
crate::settings::for_each_setting!(config_layers);

/// Checked settings for a run.
#[derive(Debug, Clone)]
pub struct Settings {
    pub base_url: Option<Url>,
    pub concurrency: usize,
    pub write_rate: NonZeroU32,
    /// Share (0 to 1) of the space's announced write budget left to its other clients.
    pub reserve: f64,
    /// `None`: reads are not limited.
    pub read_rate: Option<NonZeroU32>,
    pub report_format: ReportFormat,
    pub log_format: LogFormat,
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    pub paging: PagingLimits,
    /// `--projects`: a projects file (several projects of the space in one run).
    pub projects_file: Option<PathBuf>,
}

impl Settings {
    /// Settings before any declared value (its default included) has landed.
    fn unset(base_url: Option<Url>) -> Settings {
        Settings {
            base_url,
            concurrency: 0,
            write_rate: NonZeroU32::MIN,
            reserve: 0.0,
            read_rate: None,
            report_format: ReportFormat::default(),
            log_format: LogFormat::default(),
            timeout: Duration::ZERO,
            connect_timeout: Duration::ZERO,
            retry: RetryPolicy::default(),
            paging: PagingLimits::default(),
            projects_file: None,
        }
    }
}

/// A setting that is missing or wrong: exit 64.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl FileConfig {
    /// Reads a config file; unknown keys and bad values are errors with their line.
    pub fn load(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = crate::bounded::read_small_file(path, crate::bounded::MAX_CONFIG_FILE)
            .map_err(|e| ConfigError(format!("cannot read config {}: {e}", path.display())))?;
        if text.trim().is_empty() {
            return Ok(FileConfig::default());
        }
        serde_saphyr::from_str(&text).map_err(|e| {
            ConfigError(format!(
                "config {}: {}",
                path.display(),
                config_error_line(&e.to_string())
            ))
        })
    }
}

/// The parser's message, safe to print: its first line only (the source snippet under it
/// would echo the line, which may hold a secret put in the wrong key), without its own
/// `error:` prefix, with any quoted value replaced (serde quotes the value it refused).
pub(crate) fn config_error_line(message: &str) -> String {
    let first = message.lines().next().unwrap_or("");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    let shown = match (first.find('"'), first.rfind('"')) {
        (Some(a), Some(b)) if b > a => format!("{}(value hidden){}", &first[..a], &first[b + 1..]),
        _ => first.to_owned(),
    };
    let hint = if shown.contains("`api_token`") || shown.contains("`token`") {
        format!(
            "; the token never goes in the config file: name a file holding it with \
             {TOKEN_FILE_KEY}, or set {TOKEN_ENV}"
        )
    } else {
        String::new()
    };
    crate::inert::text(&format!("{shown}{hint}"), 600)
}

/// The space's URL: `--base-url` (or its environment variable) > `--space` (or its) >
/// the file's `base_url` > the file's `space`.
fn base_url(flags: &Overrides, file: &FileConfig) -> Result<Option<Url>, ConfigError> {
    Ok(
        match (&flags.base_url, &flags.space, &file.base_url, &file.space) {
            (Some(url), _, _, _) => Some(parse_base_url(url)?),
            (None, Some(space), _, _) => Some(space_url(space)?),
            (None, None, Some(url), _) => Some(parse_base_url(url)?),
            (None, None, None, Some(space)) => Some(space_url(space)?),
            (None, None, None, None) => None,
        },
    )
}

/// `acme`, `acme.signalwire.com` or `https://acme.signalwire.com/` -> `https://acme.signalwire.com`.
///
/// Only a SignalWire space: a DNS label (letters, digits, inner hyphens; at most 63), alone
/// or under `.signalwire.com`. Anything else (another domain, a port, `#`, `?`, `\`, a
/// tab) is refused: a space name must never be able to change the host the credentials go
/// to. Any other host needs an explicit `--base-url`.
pub fn space_url(space: &str) -> Result<Url, ConfigError> {
    let refused = || {
        ConfigError(format!(
            "space {} is not a SignalWire space name (like `acme`, `acme.signalwire.com` or \
             https://acme.signalwire.com); for any other host pass {BASE_URL_FLAG}",
            crate::inert::text(&format!("{:?}", without_userinfo(space)), 80)
        ))
    };
    let s = space.strip_prefix("https://").unwrap_or(space);
    let s = s.strip_suffix('/').unwrap_or(s);
    let label = match s.len().checked_sub(".signalwire.com".len()) {
        Some(cut)
            if s.is_char_boundary(cut) && s[cut..].eq_ignore_ascii_case(".signalwire.com") =>
        {
            &s[..cut]
        }
        _ => s,
    };
    if !is_dns_label(label) {
        return Err(refused());
    }
    parse_base_url(&format!(
        "https://{}.signalwire.com",
        label.to_ascii_lowercase()
    ))
}

/// A DNS label: 1 to 63 ASCII letters, digits and hyphens, not starting or ending with one.
fn is_dns_label(s: &str) -> bool {
    (1..=63).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A URL or space name as it may be shown in a message: whatever comes before an `@` (a
/// user name and password, or a token) is hidden.
fn without_userinfo(text: &str) -> String {
    match text.rfind('@') {
        Some(at) => {
            let scheme = text.find("://").map_or(0, |i| i + 3).min(at);
            format!("{}(hidden)@{}", &text[..scheme], &text[at + 1..])
        }
        None => text.to_owned(),
    }
}

/// An explicit base URL: https, or plain http to a loopback host (the sandbox).
pub fn parse_base_url(text: &str) -> Result<Url, ConfigError> {
    let shown = crate::inert::text(&without_userinfo(text), 200);
    let url = Url::parse(text.trim())
        .map_err(|e| ConfigError(format!("base URL `{shown}` is not a URL: {e}")))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError(format!(
            "the base URL must not carry credentials; use {PROJECT_ID_ENV} and {TOKEN_ENV}"
        )));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback(&url) => Ok(url),
        "http" => Err(ConfigError(format!(
            "base URL `{shown}` is plain http: only https is allowed, except to a loopback host"
        ))),
        other => Err(ConfigError(format!(
            "base URL `{shown}` has scheme `{other}`: use https"
        ))),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Credentials from `SIGNALWIRE_PROJECT_ID` / `SIGNALWIRE_API_TOKEN`, else the config's
/// `project_id` / `api_token_file`. `env` is a parameter so tests need not touch the
/// process environment.
pub fn credentials(
    file: &FileConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Credentials, ConfigError> {
    let project_id = env(PROJECT_ID_ENV)
        .filter(|s| !s.trim().is_empty())
        .or_else(|| file.project_id.clone())
        .ok_or_else(|| {
            ConfigError(format!(
                "no project id: set {PROJECT_ID_ENV} (or {PROJECT_ID_KEY} in the config file)"
            ))
        })?;
    let token = match env(TOKEN_ENV).filter(|s| !s.trim().is_empty()) {
        Some(t) => t,
        None => match &file.api_token_file {
            Some(path) => {
                warn_if_others_can_read(path);
                // The value is never echoed: a token put where its path belongs would show.
                crate::bounded::read_small_file(path, crate::bounded::MAX_TOKEN_FILE).map_err(
                    |e| {
                        ConfigError(format!(
                            "cannot read the file that {TOKEN_FILE_KEY} names (value hidden: it \
                             may be the token itself; {TOKEN_FILE_KEY} names a file that holds \
                             the token): {e}"
                        ))
                    },
                )?
            }
            None => {
                return Err(ConfigError(format!(
                    "no API token: set {TOKEN_ENV} (or {TOKEN_FILE_KEY} in the config file)"
                )));
            }
        },
    };
    Ok(Credentials {
        project_id: project_id.trim().to_owned(),
        token: Secret::new(token.trim()),
    })
}

/// Like ssh with a private key: a token file that the group or others can read earns a
/// warning (the run goes on; the file is the operator's to fix).
fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o077 != 0
        {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", meta.permissions().mode() & 0o777),
                "the API token file can be read by other users: chmod 600 it"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::defaults;

    #[test]
    fn space_forms_all_give_the_same_url() {
        for s in [
            "acme",
            "acme.signalwire.com",
            "https://acme.signalwire.com/",
        ] {
            assert_eq!(
                space_url(s).unwrap().as_str(),
                "https://acme.signalwire.com/"
            );
        }
        assert!(space_url("a b").is_err());
        assert_eq!(
            space_url("Acme-2.SignalWire.com").unwrap().as_str(),
            "https://acme-2.signalwire.com/"
        );
    }

    #[test]
    fn a_space_name_can_never_change_the_host() {
        for bad in [
            "acme#",
            "acme?x=1",
            "acme\\evil.com",
            "acme\t",
            "ac\nme",
            " acme",
            "acme.evil.com",
            "evil.com",
            "acme.signalwire.com.evil.com",
            "acme:8443",
            "user@acme",
            "https://acme.signalwire.com/path",
            "http://acme.signalwire.com",
            "-acme",
            "acme-",
            "",
            ".signalwire.com",
            &"a".repeat(64),
        ] {
            let err = space_url(bad).expect_err(bad).to_string();
            assert!(err.contains("--base-url"), "{err}");
            assert!(!err.contains('\t') && !err.contains('\n'), "{err}");
        }
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(parse_base_url("http://127.0.0.1:8080").is_ok());
        assert!(parse_base_url("http://localhost:1").is_ok());
        assert!(parse_base_url("http://[::1]:1").is_ok());
        assert!(parse_base_url("http://example.com").is_err());
        assert!(parse_base_url("https://example.com").is_ok());
        assert!(parse_base_url("ftp://example.com").is_err());
        assert!(parse_base_url("https://u:p@example.com").is_err());
    }

    #[test]
    fn flags_beat_file_beats_default() {
        let file = FileConfig {
            concurrency: Some(4),
            rate: Some(10),
            space: Some("filespace".into()),
            ..FileConfig::default()
        };
        let flags = Overrides {
            rate: Some(20),
            ..Overrides::default()
        };
        let s = resolve(&flags, &file).unwrap();
        assert_eq!(s.concurrency, 4);
        assert_eq!(s.write_rate.get(), 20);
        assert_eq!(s.read_rate.map(|r| r.get()), Some(defaults::READ_RATE));
        assert_eq!(
            s.base_url.unwrap().as_str(),
            "https://filespace.signalwire.com/"
        );
        let s = resolve(&Overrides::default(), &FileConfig::default()).unwrap();
        assert_eq!(s.concurrency, defaults::CONCURRENCY);
        assert!(s.base_url.is_none());
        assert_eq!(s.reserve, 0.5);
    }

    #[test]
    fn the_reserve_is_a_percentage_under_100() {
        let with = |flag: Option<f64>, file: Option<f64>| {
            let flags = Overrides {
                reserve_percent: flag,
                ..Overrides::default()
            };
            let file = FileConfig {
                reserve_percent: file,
                ..FileConfig::default()
            };
            resolve(&flags, &file).map(|s| s.reserve)
        };
        assert_eq!(with(Some(20.0), Some(70.0)).unwrap(), 0.2, "the flag wins");
        assert_eq!(with(None, Some(70.0)).unwrap(), 0.7);
        assert_eq!(with(Some(0.0), None).unwrap(), 0.0);
        for bad in [100.0, -1.0, f64::NAN] {
            let err = with(None, Some(bad)).unwrap_err();
            assert!(err.to_string().contains("reserve"), "{err}");
        }
    }

    #[test]
    fn env_credentials_beat_the_file_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "PTfromfile\n").unwrap();
        let file = FileConfig {
            project_id: Some("p-file".into()),
            api_token_file: Some(token_file),
            ..FileConfig::default()
        };
        let c = credentials(&file, |_| None).unwrap();
        assert_eq!(
            (c.project_id.as_str(), c.token.expose()),
            ("p-file", "PTfromfile")
        );
        let c = credentials(&file, |k| Some(format!("{k}-env"))).unwrap();
        assert_eq!(c.token.expose(), "SIGNALWIRE_API_TOKEN-env");
        assert!(!format!("{c:?}").contains("SIGNALWIRE_API_TOKEN-env"));
        assert!(credentials(&FileConfig::default(), |_| None).is_err());
    }

    #[test]
    fn unknown_config_keys_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, "concurency: 3\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("concurency"), "{err}");
    }

    #[test]
    fn a_secret_in_the_config_is_never_echoed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.yaml");
        for text in [
            "concurrency: 3\napi_token: PTsecret123\n",
            "api_token: \"PTsecret123\"\n",
            "concurrency: PTsecret123\n",
            "project_id: [PTsecret123\n",
        ] {
            std::fs::write(&path, text).unwrap();
            let err = FileConfig::load(&path).unwrap_err().to_string();
            assert!(!err.contains("PTsecret123"), "{err}");
            assert!(!err.contains("error: "), "no second `error:` in {err}");
            assert!(!err.contains('\n'), "{err}");
        }
        std::fs::write(&path, "api_token: PTsecret123\n").unwrap();
        let err = FileConfig::load(&path).unwrap_err().to_string();
        assert!(err.contains("api_token_file"), "{err}");
    }

    #[test]
    fn a_token_where_a_path_or_a_space_belongs_is_never_echoed() {
        // The token given as api_token_file's value: the file does not exist.
        let file = FileConfig {
            project_id: Some("p".into()),
            api_token_file: Some(PathBuf::from("PTsecret123")),
            ..FileConfig::default()
        };
        let err = credentials(&file, |_| None).unwrap_err().to_string();
        assert!(!err.contains("PTsecret123"), "{err}");
        assert!(err.contains("api_token_file"), "{err}");
        for text in [
            "https://p:PTsecret123@acme.signalwire.com",
            "p:PTsecret123@acme",
            "https://PTsecret123@evil.example.com/",
        ] {
            let err = space_url(text).unwrap_err().to_string();
            assert!(!err.contains("PTsecret123"), "{err}");
            assert!(err.contains("(hidden)@"), "{err}");
        }
        for text in [
            "ftp://p:PTsecret123@acme.example.com",
            "http://p:PTsecret123@example.com",
            "https://p:PTsecret123@example.com",
            "not a url PTsecret123@",
        ] {
            let err = parse_base_url(text).unwrap_err().to_string();
            assert!(!err.contains("PTsecret123"), "{text}: {err}");
        }
        assert_eq!(
            without_userinfo("https://acme.signalwire.com"),
            "https://acme.signalwire.com"
        );
        assert_eq!(without_userinfo("a:b@c@host"), "(hidden)@host");
    }

    #[test]
    fn a_config_or_token_file_that_never_ends_is_refused_at_its_cap() {
        let err = FileConfig::load(Path::new("/dev/zero"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger than"), "{err}");
        let file = FileConfig {
            project_id: Some("p".into()),
            api_token_file: Some(PathBuf::from("/dev/zero")),
            ..FileConfig::default()
        };
        let err = credentials(&file, |_| None).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
    }
}

#[cfg(test)]
mod example_file {
    use super::*;

    /// The shipped example documents every key, and every key in it is one we read.
    #[test]
    fn config_example_parses_and_names_every_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
        let file = FileConfig::load(&path).unwrap();
        assert_eq!(file.space.as_deref(), Some("acme"));
        assert_eq!(file.reserve_percent, Some(50.0));
        let text = std::fs::read_to_string(&path).unwrap();
        for key in [
            "space",
            "base_url",
            "project_id",
            "api_token_file",
            "projects_file",
            "concurrency",
            "rate",
            "reserve_percent",
            "read_rate",
            "report_format",
            "log_format",
            "timeout_secs",
            "connect_timeout_secs",
            "max_attempts",
            "max_retry_secs",
            "retry_after_cap_secs",
            "outage_budget_secs",
            "max_pages",
            "max_list_gateways",
            "max_list_secs",
        ] {
            assert!(
                text.contains(&format!("{key}:")),
                "config.example.yaml lacks {key}"
            );
        }
    }

    /// Every key the settings declare is documented in the example.
    #[test]
    fn config_example_names_every_declared_key() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.yaml");
        let text = std::fs::read_to_string(&path).unwrap();
        for key in crate::settings::SETTINGS.iter().filter_map(|s| s.key) {
            assert!(
                text.contains(&format!("\n{key}:")) || text.contains(&format!("# {key}:")),
                "config.example.yaml lacks {key}"
            );
        }
    }
}

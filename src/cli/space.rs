//! Which space a command talks to, and which setting chose it. The space (`--space`,
//! `SIGNALWIRE_SPACE`, the config's `space`) and the base URL (`--base-url`,
//! `SIGNALWIRE_BASE_URL`, the config's `base_url`) each come from one place; two that name
//! different hosts are refused, naming both, so a sandbox's base URL left in the
//! environment never quietly wins over the space the operator asked for. The project id
//! comes from `SIGNALWIRE_PROJECT_ID` or the config's `project_id`. The token is never
//! part of any of this.

use std::path::Path;

use clap::ArgMatches;
use clap::parser::ValueSource;
use url::Url;

use super::{Exit, ExitContext, Failure, usage};
use crate::client::ApiError;
use crate::config::{ConfigError, FileConfig, Overrides, parse_base_url, space_url};
use crate::failure::{ExitPart, Reach, Stop};
use crate::projects::ProjectSet;
use crate::settings::{Setting, named};

/// The names this module cites, from their declarations (a declaration without one does
/// not compile).
const SPACE_FLAG: &str = named::space.long_flag();
const SPACE_KEY: &str = named::space.config_key();
const SPACE_ENV: &str = named::space.env_var();
const BASE_URL_ENV: &str = named::base_url.env_var();
const BASE_URL_FLAG: &str = named::base_url.long_flag();
const BASE_URL_KEY: &str = named::base_url.config_key();
const PROJECT_ID_ENV: &str = named::project_id.env_var();
const PROJECT_ID_KEY: &str = named::project_id.config_key();
const TOKEN_ENV: &str = named::api_token_file.env_var();
const TOKEN_FILE_KEY: &str = named::api_token_file.config_key();

/// Where the space and the base URL given by flag or environment came from (clap merges
/// the two; its matches still tell them apart).
#[derive(Debug, Default, Clone)]
pub struct Origins {
    space: Option<&'static str>,
    base_url: Option<&'static str>,
}

impl Origins {
    pub fn of(matches: &ArgMatches) -> Origins {
        let source = |setting: &Setting| match matches.value_source(setting.flag?) {
            Some(ValueSource::CommandLine) => setting.long,
            Some(ValueSource::EnvVariable) => setting.env,
            _ => None,
        };
        Origins {
            space: source(&named::space),
            base_url: source(&named::base_url),
        }
    }
}

/// The space a command talks to and its project, each with the setting that named it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The host (and port, when the URL names one).
    pub host: String,
    pub host_from: String,
    pub project: Option<String>,
    pub project_from: Option<String>,
    /// Where the API token came from (never the token).
    pub token_from: Option<String>,
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "space {} (from {})", self.host, self.host_from)?;
        match (&self.project, &self.project_from) {
            (Some(p), Some(from)) => write!(f, ", project {p} (from {from})"),
            _ => write!(f, ", no project id set"),
        }
    }
}

impl Target {
    /// What to check when the space refuses the credentials: the settings they come from,
    /// and which of them this run used.
    pub fn credentials_hint(&self) -> String {
        let used = match (&self.project_from, &self.token_from) {
            (Some(p), Some(t)) => {
                format!("; this run's project id came from {p}, its token from {t}")
            }
            _ => String::new(),
        };
        format!(
            "check {PROJECT_ID_ENV} and {TOKEN_ENV} (or the config's {PROJECT_ID_KEY} \
             and {TOKEN_FILE_KEY}){used}"
        )
    }

    /// The same, as JSON for the summary.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "host": self.host,
            "host_from": self.host_from,
            "project": self.project,
            "project_from": self.project_from,
        })
    }
}

/// A flag's value (clap merged in its environment variable) and where it came from.
fn pick<'a>(
    value: &'a Option<String>,
    origin: Option<&'static str>,
    flag: &str,
) -> Option<Named<'a>> {
    value.as_deref().map(|value| Named {
        value,
        from: origin.map_or_else(|| flag.to_owned(), str::to_owned),
    })
}

/// A setting's value and where it came from.
struct Named<'a> {
    value: &'a str,
    from: String,
}

/// The space and project the settings name. `None` when nothing names a space. Refused:
/// a space and a base URL that name different hosts, whatever their levels.
pub fn target(
    origins: &Origins,
    flags: &Overrides,
    file: &FileConfig,
    config: Option<&Path>,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<Target>, ConfigError> {
    let in_config = |key: &str| match config {
        Some(path) => format!(
            "{key} in {}",
            crate::inert::text(&path.display().to_string(), 200)
        ),
        None => key.to_owned(),
    };
    let space = pick(&flags.space, origins.space, SPACE_FLAG).or_else(|| {
        file.space.as_deref().map(|v| Named {
            value: v,
            from: in_config(SPACE_KEY),
        })
    });
    let base = pick(&flags.base_url, origins.base_url, BASE_URL_FLAG).or_else(|| {
        file.base_url.as_deref().map(|v| Named {
            value: v,
            from: in_config(BASE_URL_KEY),
        })
    });
    let space = space.map(|s| space_url(s.value).map(|url| (host(&url), s.from)));
    let base = base.map(|b| parse_base_url(b.value).map(|url| (host(&url), b.from)));
    let (host, host_from) = match (space.transpose()?, base.transpose()?) {
        (Some((a, a_from)), Some((b, b_from))) if a != b => {
            return Err(ConfigError(format!(
                "two settings name different spaces: {a_from} names {a}, {b_from} names {b}; \
                 unset one of them (or make them agree)"
            )));
        }
        (_, Some(chosen)) | (Some(chosen), None) => chosen,
        (None, None) => return Ok(None),
    };
    let (project, project_from) = match env(PROJECT_ID_ENV).filter(|p| !p.trim().is_empty()) {
        Some(p) => (Some(p), Some(PROJECT_ID_ENV.to_owned())),
        None => match &file.project_id {
            Some(p) => (Some(p.clone()), Some(in_config(PROJECT_ID_KEY))),
            None => (None, None),
        },
    };
    let token_from = match env(TOKEN_ENV).filter(|t| !t.trim().is_empty()) {
        Some(_) => Some(TOKEN_ENV.to_owned()),
        None => file
            .api_token_file
            .as_ref()
            .map(|_| in_config(TOKEN_FILE_KEY)),
    };
    Ok(Some(Target {
        host,
        host_from,
        project: project.map(|p| crate::inert::text(p.trim(), 80)),
        project_from,
        token_from,
    }))
}

/// A command's request that failed as an exit code and a plain word to add, as its kind's
/// decision says ([`crate::failure::Decision::command_exit`]): refused credentials (exit 3)
/// name the settings to check; a space that did not answer (DNS, refused, reset, TLS) is
/// exit 3, as for a run; anything else is exit 1.
pub fn request_failure(target: Option<&Target>, err: &ApiError) -> (super::Exit, String) {
    use super::Exit;
    let decision = err.decision();
    let exit = match decision.command_exit() {
        ExitPart::RowError => Exit::RowErrors,
        ExitPart::Stopped => Exit::Aborted,
        ExitPart::Interrupted => Exit::Interrupted,
    };
    let word = if decision.stop == Some(Stop::CredentialsRefused) {
        let hint = target.map_or_else(
            || format!("check {PROJECT_ID_ENV} and {TOKEN_ENV}"),
            Target::credentials_hint,
        );
        format!("; the space refused the credentials: {hint}")
    } else if decision.reach == Reach::Unanswered {
        let space = target.map_or_else(String::new, |t| format!(" ({})", t.host));
        format!("; the space{space} cannot be reached")
    } else {
        String::new()
    };
    (exit, word)
}

/// The run's projects when a projects file is named (`--projects`,
/// `SIGNALWIRE_PROJECTS_FILE`, the config's `projects_file`): read and checked before any
/// request. The project that `SIGNALWIRE_PROJECT_ID`/`SIGNALWIRE_API_TOKEN` (or the
/// config's `project_id`/`api_token_file`) set is one of them, and the default.
pub fn projects(
    flag: Option<&Path>,
    file: &FileConfig,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Option<ProjectSet>, ConfigError> {
    let Some(path) = flag.or(file.projects_file.as_deref()) else {
        return Ok(None);
    };
    let set = |k: &str| env(k).filter(|v| !v.trim().is_empty());
    let env_project = set(PROJECT_ID_ENV).is_some() || file.project_id.is_some();
    let env_token = set(TOKEN_ENV).is_some() || file.api_token_file.is_some();
    let default = match (env_project, env_token) {
        (true, _) => Some(crate::config::credentials(file, &env)?),
        (false, true) => {
            return Err(ConfigError(format!(
                "an API token is set ({TOKEN_ENV} or {TOKEN_FILE_KEY}) without a project id: \
                 set {PROJECT_ID_ENV} too, or unset the token and let the projects file name \
                 every project"
            )));
        }
        (false, false) => None,
    };
    ProjectSet::load(path, default)
        .map(Some)
        .map_err(|e| ConfigError(e.0))
}

impl super::Context {
    /// The run's projects, when a projects file is named: read and checked (owner, mode,
    /// duplicates, the environment's project's token) before any request; exit 64 if not.
    pub(super) fn projects(&self) -> Result<Option<crate::projects::ProjectSet>, Failure> {
        projects(self.settings.projects_file.as_deref(), &self.file, |k| {
            std::env::var(k).ok()
        })
        .exit_with(Exit::Usage)
    }

    /// A run's client settings and its projects: with a projects file, the default
    /// project's (else the file's first) credentials for the run's own client, and the
    /// set each row's project is found in.
    pub(super) fn run_clients(
        &self,
    ) -> Result<
        (
            crate::client::ClientConfig,
            Option<std::sync::Arc<crate::projects::ProjectSet>>,
        ),
        Failure,
    > {
        let Some(set) = self.projects()? else {
            return Ok((self.client_config()?, None));
        };
        let base_url = self.space_url()?;
        let main = set
            .default_project()
            .or_else(|| set.iter().next())
            .map(crate::projects::Project::credentials)
            .ok_or_else(|| usage("the projects file lists no project"))?;
        Ok((
            self.client_config_for(base_url, main),
            Some(std::sync::Arc::new(set)),
        ))
    }

    /// The space's URL, its name and origin logged first; exit 64 when nothing names one.
    pub(super) fn space_url(&self) -> Result<url::Url, Failure> {
        let no_space = || {
            usage(format!(
                "no space: set {SPACE_ENV} or {SPACE_FLAG} (or {BASE_URL_FLAG} / {BASE_URL_ENV})"
            ))
        };
        let target = self.target()?.ok_or_else(no_space)?;
        tracing::info!("{target}");
        self.settings.base_url.clone().ok_or_else(no_space)
    }

    /// The API client's settings for one project's credentials.
    pub(super) fn client_config_for(
        &self,
        base_url: url::Url,
        credentials: crate::secret::Credentials,
    ) -> crate::client::ClientConfig {
        crate::client::ClientConfig {
            base_url,
            credentials,
            timeout: self.settings.timeout,
            connect_timeout: self.settings.connect_timeout,
            retry: self.settings.retry,
            pool_size: self.settings.concurrency,
        }
    }
}

/// `acme.signalwire.com`, or `127.0.0.1:8080` for a URL with a port.
fn host(url: &Url) -> String {
    let host = url.host_str().unwrap_or("").to_ascii_lowercase();
    match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(_: &str) -> Option<String> {
        Some("proj".into())
    }

    #[test]
    fn the_space_and_the_base_url_must_agree() {
        let origins = Origins {
            space: Some("SIGNALWIRE_SPACE"),
            base_url: Some("SIGNALWIRE_BASE_URL"),
        };
        let mut flags = Overrides {
            space: Some("other".into()),
            base_url: Some("http://127.0.0.1:9".into()),
            ..Overrides::default()
        };
        let file = FileConfig::default();
        let err = target(&origins, &flags, &file, None, env).unwrap_err().0;
        assert!(
            err.contains("SIGNALWIRE_SPACE names other.signalwire.com")
                && err.contains("SIGNALWIRE_BASE_URL names 127.0.0.1:9"),
            "{err}"
        );
        flags.base_url = Some("https://Other.signalwire.com/".into());
        let t = target(&origins, &flags, &file, None, env).unwrap().unwrap();
        assert_eq!(t.host, "other.signalwire.com");
        assert_eq!(t.host_from, "SIGNALWIRE_BASE_URL");
        assert_eq!(
            t.to_string(),
            "space other.signalwire.com (from SIGNALWIRE_BASE_URL), project proj (from \
             SIGNALWIRE_PROJECT_ID)"
        );
    }

    #[test]
    fn the_config_file_is_named_as_the_origin() {
        let file = FileConfig {
            space: Some("acme".into()),
            project_id: Some("p1".into()),
            ..FileConfig::default()
        };
        let none = |_: &str| None;
        let t = target(
            &Origins::default(),
            &Overrides::default(),
            &file,
            Some(Path::new("c.yaml")),
            none,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.host_from, "space in c.yaml");
        assert_eq!(t.project_from.as_deref(), Some("project_id in c.yaml"));
        let flags = Overrides {
            base_url: Some("http://127.0.0.1:9".into()),
            ..Overrides::default()
        };
        let err = target(
            &Origins::default(),
            &flags,
            &file,
            Some(Path::new("c.yaml")),
            none,
        )
        .unwrap_err()
        .0;
        assert!(
            err.contains("space in c.yaml names acme.signalwire.com"),
            "{err}"
        );
        assert!(err.contains("--base-url names 127.0.0.1:9"), "{err}");
        assert_eq!(
            target(
                &Origins::default(),
                &Overrides::default(),
                &FileConfig::default(),
                None,
                none
            )
            .unwrap(),
            None
        );
    }

    /// `show` and `export` send one request: its kind's decision says the exit code and
    /// the word added.
    #[test]
    fn a_commands_failed_request_exits_as_its_kind_decides() {
        use super::super::Exit;
        use crate::failure::ErrorKind;
        let said = |err: ApiError| request_failure(None, &err);
        let (exit, word) = said(ApiError::answered(401, "http_401".into(), "no".into()));
        assert_eq!(exit, Exit::Aborted);
        assert!(word.contains("refused the credentials"), "{word}");
        for kind in [ErrorKind::Timeout, ErrorKind::Connect, ErrorKind::Tls] {
            let (exit, word) = said(ApiError::new(kind, "x".into()));
            assert_eq!(
                (exit, word.as_str()),
                (Exit::Aborted, "; the space cannot be reached"),
                "{kind:?}"
            );
        }
        let (exit, word) = said(ApiError::new(ErrorKind::Aborted, "x".into()));
        assert_eq!((exit, word.as_str()), (Exit::Aborted, ""));
        for status in [404, 422, 429, 500] {
            let (exit, word) = said(ApiError::answered(status, "c".into(), "m".into()));
            assert_eq!((exit, word.as_str()), (Exit::RowErrors, ""), "{status}");
        }
    }
}

//! Several projects of one space: the projects file (`--projects FILE`), read and checked
//! as ssh checks a private key before anything is sent, and the set of projects a run may
//! act for. Tokens are [`Secret`]s from the moment they are read: nothing here prints one.
//!
//! ```yaml
//! projects:
//!   - id: 7e0b6c2f-...        # the project id
//!     name: acme              # optional short name a manifest may use
//!     token: PT...            # the API token, or:
//!     # token_file: acme.token  (relative to this file)
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::secret::{Credentials, Secret};

/// The longest projects file read.
pub const MAX_PROJECTS_FILE: u64 = 1024 * 1024;
/// The most projects one file may list (the metrics' `project` label is bounded by it).
pub const MAX_PROJECTS: usize = 1000;

/// One project a run may act for.
#[derive(Debug, Clone)]
pub struct Project {
    pub id: String,
    pub name: Option<String>,
    pub token: Secret,
}

impl Project {
    /// The project's credentials for HTTP Basic.
    pub fn credentials(&self) -> Credentials {
        Credentials {
            project_id: self.id.clone(),
            token: self.token.clone(),
        }
    }

    /// Its name when it has one, else its id: how a person reads it in a log.
    pub fn label(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }
}

/// The projects of a run: the file's, and the environment's (or config's) project, which
/// is then the default one.
#[derive(Debug, Clone)]
pub struct ProjectSet {
    projects: Vec<Project>,
    /// The project an empty `project` cell means, when there is one.
    default: Option<usize>,
}

/// A projects file that cannot be used: exit 64, nothing sent. Never holds a token.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProjectsError(pub String);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    projects: Vec<RawProject>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProject {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    token_file: Option<PathBuf>,
}

impl ProjectSet {
    /// Reads and checks the projects file at `path`. `env_default`: the project set by
    /// `SIGNALWIRE_PROJECT_ID`/`SIGNALWIRE_API_TOKEN` or the config, which is one of the
    /// run's projects and its default (the file may list it too, with the same token).
    pub fn load(
        path: &Path,
        env_default: Option<Credentials>,
    ) -> Result<ProjectSet, ProjectsError> {
        let shown = shown(path);
        let text = read_checked(path, "projects file")?;
        let raw: RawFile = serde_saphyr::from_str(&text).map_err(|e| {
            ProjectsError(format!(
                "projects file {shown}: {}",
                crate::config::config_error_line(&e.to_string())
            ))
        })?;
        let dir = path.parent().unwrap_or_else(|| Path::new("."));
        let mut projects = Vec::with_capacity(raw.projects.len());
        for (i, p) in raw.projects.into_iter().enumerate() {
            projects.push(project(p, i + 1, dir, &shown)?);
        }
        ProjectSet::from_projects(projects, env_default, &shown)
    }

    /// The set from projects already read: ids and names unique, the environment's
    /// project (if any) added or matched. `source` names the file in messages.
    pub fn from_projects(
        mut projects: Vec<Project>,
        env_default: Option<Credentials>,
        source: &str,
    ) -> Result<ProjectSet, ProjectsError> {
        if projects.len() > MAX_PROJECTS {
            return Err(ProjectsError(format!(
                "projects file {source} lists {} projects: at most {MAX_PROJECTS}",
                projects.len()
            )));
        }
        check_unique(&projects, source)?;
        let default = match env_default {
            Some(env) => Some(
                match projects
                    .iter()
                    .position(|p| p.id.eq_ignore_ascii_case(&env.project_id))
                {
                    Some(i) if projects[i].token == env.token => i,
                    Some(i) => {
                        return Err(ProjectsError(format!(
                            "projects file {source}: project {} (entry {}) is the one \
                         SIGNALWIRE_PROJECT_ID (or the config's project_id) names, with \
                         another token: give it the same token, or leave it out of the file",
                            crate::inert::text(&env.project_id, 80),
                            i + 1
                        )));
                    }
                    None => {
                        projects.push(Project {
                            id: env.project_id,
                            name: None,
                            token: env.token,
                        });
                        projects.len() - 1
                    }
                },
            ),
            None => (projects.len() == 1).then_some(0),
        };
        if projects.is_empty() {
            return Err(ProjectsError(format!(
                "projects file {source} lists no project"
            )));
        }
        Ok(ProjectSet { projects, default })
    }

    /// A set of one project: the environment's (a run without `--projects`).
    pub fn single(credentials: Credentials) -> ProjectSet {
        ProjectSet {
            projects: vec![Project {
                id: credentials.project_id,
                name: None,
                token: credentials.token,
            }],
            default: Some(0),
        }
    }

    /// Every project, in the file's order (the environment's last when the file did not
    /// list it).
    pub fn iter(&self) -> impl Iterator<Item = &Project> {
        self.projects.iter()
    }

    pub fn len(&self) -> usize {
        self.projects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.projects.is_empty()
    }

    /// The project an empty `project` cell means, when there is one.
    pub fn default_project(&self) -> Option<&Project> {
        self.default.map(|i| &self.projects[i])
    }

    /// The project a manifest names, by id or by name (an id wins over a name).
    pub fn find(&self, key: &str) -> Option<&Project> {
        let key = key.trim();
        self.projects
            .iter()
            .find(|p| p.id.eq_ignore_ascii_case(key))
            .or_else(|| {
                self.projects
                    .iter()
                    .find(|p| p.name.as_deref() == Some(key))
            })
    }
}

impl ProjectSet {
    /// The project a row's `project` cell names (`None`: the default project), or why the
    /// row cannot run: a project the run has no credentials for, or an empty cell with
    /// no default project.
    pub fn resolve(&self, cell: Option<&str>) -> Result<(usize, &Project), String> {
        let found = match cell {
            Some(key) => self
                .projects
                .iter()
                .position(|p| p.id.eq_ignore_ascii_case(key.trim()))
                .or_else(|| {
                    self.projects
                        .iter()
                        .position(|p| p.name.as_deref() == Some(key.trim()))
                }),
            None => self.default,
        };
        match (found, cell) {
            (Some(i), _) => Ok((i, &self.projects[i])),
            (None, Some(key)) => Err(format!(
                "project `{}` is not one this run has credentials for (this run's projects: \
                 {})",
                crate::inert::text(key, 100),
                self.listing()
            )),
            (None, None) => Err(
                "the row names no project and the run has no default one: name it in the \
                 `project` column, or set SIGNALWIRE_PROJECT_ID"
                    .into(),
            ),
        }
    }

    /// The projects as a message lists them: names (or ids), the first ten.
    fn listing(&self) -> String {
        let mut shown: Vec<&str> = self.projects.iter().take(10).map(Project::label).collect();
        let more = self.projects.len().saturating_sub(10);
        let more = if more > 0 {
            format!(" and {more} more")
        } else {
            String::new()
        };
        shown.sort_unstable();
        format!("{}{more}", shown.join(", "))
    }

    /// The project at `index` (from [`ProjectSet::resolve`]).
    pub fn get(&self, index: usize) -> Option<&Project> {
        self.projects.get(index)
    }
}

/// One entry, checked: an id, a name that is not some project's id, one token source.
fn project(
    raw: RawProject,
    entry: usize,
    dir: &Path,
    source: &str,
) -> Result<Project, ProjectsError> {
    let at = |what: &str| ProjectsError(format!("projects file {source}, entry {entry}: {what}"));
    let id = raw.id.trim().to_owned();
    if !is_plain(&id) {
        return Err(at(&format!(
            "id {} is not a project id (letters, digits, `-`, `_`, `.`; 1 to 80)",
            crate::inert::text(&format!("{id:?}"), 100)
        )));
    }
    let name = raw.name.map(|n| n.trim().to_owned());
    if let Some(n) = &name
        && !is_plain(n)
    {
        return Err(at(&format!(
            "name {} is not a short name (letters, digits, `-`, `_`, `.`; 1 to 80)",
            crate::inert::text(&format!("{n:?}"), 100)
        )));
    }
    let token = match (raw.token, raw.token_file) {
        (Some(t), None) => t,
        (None, Some(file)) => read_checked(&dir.join(file), "token_file")?,
        (Some(_), Some(_)) => return Err(at("both token and token_file: give one")),
        (None, None) => return Err(at("no token: give token or token_file")),
    };
    let token = token.trim();
    if token.is_empty() {
        return Err(at("the token is empty"));
    }
    Ok(Project {
        id,
        name,
        token: Secret::new(token),
    })
}

/// An id or a name as a manifest cell, a log field and a metrics label can carry.
fn is_plain(text: &str) -> bool {
    (1..=80).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// One project id listed twice, or one name given to two projects (or a name that is
/// another project's id): refused, naming both entries.
fn check_unique(projects: &[Project], source: &str) -> Result<(), ProjectsError> {
    for (j, p) in projects.iter().enumerate() {
        for (i, q) in projects[..j].iter().enumerate() {
            let clash = if q.id.eq_ignore_ascii_case(&p.id) {
                Some(format!("project id {} is listed twice", p.id))
            } else if p.name.is_some() && p.name == q.name {
                Some(format!("name {} is given to two projects", p.label()))
            } else if [(p, q), (q, p)].iter().any(|(a, b)| {
                a.name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(&b.id))
            }) {
                Some("a project's name is another project's id".to_owned())
            } else {
                None
            };
            if let Some(clash) = clash {
                return Err(ProjectsError(format!(
                    "projects file {source}: {clash} (entries {} and {})",
                    i + 1,
                    j + 1
                )));
            }
        }
    }
    Ok(())
}

/// Who may have written or read a file of secrets, as ssh judges a private key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// This user's file with no group or other bits, or root's not writable by others.
    Accepted,
    /// This user's file that the group or others may read or write.
    OpenToOthers,
    /// Root's file that the group or others may write.
    WritableByOthers,
    /// Owned by another user than this one and root.
    ForeignOwner,
}

/// The rule on a secrets file's owner and mode bits: a file owned by `me` must have no
/// group or other bits; a file owned by root (a mounted Kubernetes Secret: `0440` with
/// the pod's `fsGroup`, read by a non-root pod) must not be writable by group or others;
/// any other owner is refused. A process running as root reads root's files under the
/// first rule (a pod running as root mounts its Secret `0400`).
pub fn access(owner: u32, mode: u32, me: u32) -> Access {
    if owner == me {
        // This user's own rule first, as ssh: root's own file too must be private.
        if mode & 0o077 == 0 {
            Access::Accepted
        } else {
            Access::OpenToOthers
        }
    } else if owner == 0 {
        if mode & 0o022 == 0 {
            Access::Accepted
        } else {
            Access::WritableByOthers
        }
    } else {
        Access::ForeignOwner
    }
}

/// Reads a secrets file whole, after checking the opened file's owner and mode (the file
/// checked is the one read: no swap between the check and the read).
fn read_checked(path: &Path, what: &str) -> Result<String, ProjectsError> {
    use std::io::Read;
    let shown = shown(path);
    let cannot = |e: std::io::Error| ProjectsError(format!("cannot read {what} {shown}: {e}"));
    let file = crate::bounded::open_regular(path).map_err(cannot)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata().map_err(cannot)?;
        // SAFETY: getuid has no failure mode and touches no memory.
        let me = unsafe { libc::getuid() };
        let mode = meta.mode() & 0o7777;
        let refused = match access(meta.uid(), mode, me) {
            Access::Accepted => None,
            Access::OpenToOthers => Some(format!(
                "its mode {mode:04o} lets the group or others read or write it: chmod 600 it"
            )),
            Access::WritableByOthers => Some(format!(
                "it is root's with mode {mode:04o}: the group or others can write it"
            )),
            Access::ForeignOwner => Some(format!(
                "it is owned by uid {}, neither this user (uid {me}) nor root",
                meta.uid()
            )),
        };
        if let Some(why) = refused {
            return Err(ProjectsError(format!("{what} {shown} is refused: {why}")));
        }
    }
    let mut text = String::new();
    file.take(MAX_PROJECTS_FILE + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_PROJECTS_FILE {
        return Err(ProjectsError(format!(
            "{what} {shown} is larger than {MAX_PROJECTS_FILE} bytes"
        )));
    }
    Ok(text)
}

fn shown(path: &Path) -> String {
    crate::inert::text(&path.display().to_string(), 200)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_rule_is_sshs() {
        let me = 1000;
        assert_eq!(access(me, 0o600, me), Access::Accepted);
        assert_eq!(access(me, 0o400, me), Access::Accepted);
        assert_eq!(access(me, 0o640, me), Access::OpenToOthers);
        assert_eq!(access(me, 0o604, me), Access::OpenToOthers);
        assert_eq!(access(me, 0o620, me), Access::OpenToOthers);
        // A mounted Secret: root's, 0440 with the pod's fsGroup.
        assert_eq!(access(0, 0o440, me), Access::Accepted);
        assert_eq!(access(0, 0o444, me), Access::Accepted);
        assert_eq!(access(0, 0o460, me), Access::WritableByOthers);
        assert_eq!(access(0, 0o442, me), Access::WritableByOthers);
        assert_eq!(access(1001, 0o600, me), Access::ForeignOwner);
        assert_eq!(access(1001, 0o400, me), Access::ForeignOwner);
        // Running as root: root's file is its own, and must be private.
        assert_eq!(access(0, 0o440, 0), Access::OpenToOthers);
        assert_eq!(access(0, 0o400, 0), Access::Accepted);
    }

    fn p(id: &str, name: Option<&str>, token: &str) -> Project {
        Project {
            id: id.into(),
            name: name.map(str::to_owned),
            token: Secret::new(token),
        }
    }

    fn creds(id: &str, token: &str) -> Credentials {
        Credentials {
            project_id: id.into(),
            token: Secret::new(token),
        }
    }

    #[test]
    fn ids_and_names_are_unique() {
        let err =
            ProjectSet::from_projects(vec![p("a1", None, "t1"), p("A1", None, "t2")], None, "f")
                .unwrap_err();
        assert!(err.0.contains("listed twice (entries 1 and 2)"), "{err}");
        let err = ProjectSet::from_projects(
            vec![p("a1", Some("x"), "t1"), p("a2", Some("x"), "t2")],
            None,
            "f",
        )
        .unwrap_err();
        assert!(err.0.contains("name x is given to two"), "{err}");
        let err = ProjectSet::from_projects(
            vec![p("a1", None, "t1"), p("a2", Some("a1"), "t2")],
            None,
            "f",
        )
        .unwrap_err();
        assert!(err.0.contains("another project's id"), "{err}");
    }

    #[test]
    fn the_environments_project_is_the_default_and_keeps_its_token() {
        let file = || vec![p("a1", Some("acme"), "tok-a1"), p("b2", None, "tok-b2")];
        let set = ProjectSet::from_projects(file(), None, "f").unwrap();
        assert!(set.default_project().is_none());
        let set = ProjectSet::from_projects(file(), Some(creds("b2", "tok-b2")), "f").unwrap();
        assert_eq!(set.default_project().unwrap().id, "b2");
        assert_eq!(set.len(), 2);
        let set = ProjectSet::from_projects(file(), Some(creds("c3", "tok-c3")), "f").unwrap();
        assert_eq!(set.default_project().unwrap().id, "c3");
        assert_eq!(set.len(), 3);
        let err =
            ProjectSet::from_projects(file(), Some(creds("b2", "other-token")), "f").unwrap_err();
        assert!(err.0.contains("with another token"), "{err}");
        assert!(!err.0.contains("other-token") && !err.0.contains("tok-b2"));
        let one = ProjectSet::from_projects(vec![p("a1", None, "t")], None, "f").unwrap();
        assert_eq!(one.default_project().unwrap().id, "a1");
        assert_eq!(set.find("acme").unwrap().id, "a1");
        assert_eq!(set.find("B2").unwrap().id, "b2");
        assert!(set.find("nobody").is_none());
        assert_eq!(set.resolve(Some("acme")).unwrap().1.id, "a1");
        assert_eq!(set.resolve(None).unwrap().1.id, "c3");
        let err = set.resolve(Some("nobody")).unwrap_err();
        assert!(err.contains("`nobody` is not one this run has"), "{err}");
        assert!(err.contains("acme, b2, c3"), "{err}");
        let two = ProjectSet::from_projects(file(), None, "f").unwrap();
        assert!(two.resolve(None).unwrap_err().contains("no default one"));
    }
}

//! The run file (`REPORT.run.json`): what a run was made from, so `--resume` continues
//! that run and nothing else.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{LedgerError, short};

/// What a report's run file (`REPORT.run.json`) records: what the run was made from.
/// `--resume` refuses a run that differs in any of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFile {
    /// The run file's format version ([`RUN_FILE_VERSION`]).
    pub sipgw_bulk_run: u32,
    /// The space's base URL, as `https://acme.signalwire.com` (no trailing slash).
    pub space: String,
    pub project_id: String,
    /// `K/N`, or none for the whole manifest.
    pub shard: Option<String>,
    /// The manifest (or saved plan) as the user named it.
    pub manifest: String,
    pub manifest_sha256: String,
    /// `--only`/`--skip`: a digest of the rows chosen; none when every row runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
    /// In a run of several projects (a projects file, or a manifest with a `project`
    /// column): the ids of the projects its rows belong to, lower case, sorted. A
    /// `--resume` whose projects do not cover every one of them is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub projects: Option<Vec<String>>,
    /// And the digest of its (project, gateway) pairs: a `--resume` whose projects file
    /// (or environment) gives a row another project is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project_rows: Option<String>,
    /// When the run went through every row (it ended with exit 0, 1 or 2), as an HTTP date.
    /// A `--resume` then starts a new report: a finished run is never continued, so a
    /// second scheduled run on one day still reads every gateway. None while the run
    /// lasts, and for a run that was cut off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished: Option<String>,
    /// The report's size when the run finished: a link of a chain that no longer has it
    /// (cut, truncated, edited) is refused rather than followed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_bytes: Option<u64>,
    /// The report's SHA-256 then: an edit that keeps its size is refused too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_sha256: Option<String>,
}

/// The run file's format version.
pub const RUN_FILE_VERSION: u32 = 1;

impl RunFile {
    pub fn new(
        space: &str,
        project_id: &str,
        shard: Option<crate::shard::Shard>,
        manifest: &Path,
        manifest_sha256: &str,
    ) -> RunFile {
        RunFile {
            sipgw_bulk_run: RUN_FILE_VERSION,
            space: normalized_space(space),
            project_id: project_id.to_owned(),
            shard: shard.map(|s| s.to_string()),
            manifest: manifest.display().to_string(),
            manifest_sha256: manifest_sha256.to_owned(),
            selection: None,
            projects: None,
            project_rows: None,
            finished: None,
            report_bytes: None,
            report_sha256: None,
        }
    }

    /// Why a run described by `now` does not continue this one, if it does not. An
    /// empty space or project (a report made before run files) matches any.
    pub(super) fn refuses(&self, now: &RunFile, report: &Path) -> Option<LedgerError> {
        if self.manifest_sha256 != now.manifest_sha256 {
            return Some(LedgerError::ManifestChanged {
                report: report.to_owned(),
                was: short(&self.manifest_sha256),
                now: short(&now.manifest_sha256),
            });
        }
        self.refuses_projects(now, report)
            .or_else(|| self.refuses_link(now, report))
    }

    /// Why `now` does not act for this run's projects, if it does not: a project of its
    /// rows that `now` cannot act for, or a row whose project is another one now. A run
    /// file without projects (a single-project run's) lets the project id decide.
    fn refuses_projects(&self, now: &RunFile, report: &Path) -> Option<LedgerError> {
        let was = self.projects.as_ref()?;
        let single = [now.project_id.to_ascii_lowercase()];
        let covered = now.projects.as_deref().unwrap_or(&single);
        let lacking: Vec<&str> = was
            .iter()
            .filter(|p| !covered.contains(p))
            .map(String::as_str)
            .collect();
        let why = if !lacking.is_empty() {
            format!(
                "for project(s) {}, which this run has no credentials for (or no row of the \
                 manifest names now)",
                lacking.join(", ")
            )
        } else if now.project_rows.is_some() && now.project_rows != self.project_rows {
            "in which some row belonged to another project than it does now (the projects \
             file, or SIGNALWIRE_PROJECT_ID for an empty cell, names another project for it)"
                .to_owned()
        } else {
            return None;
        };
        Some(LedgerError::OtherProjects {
            report: report.to_owned(),
            why: crate::inert::text(&why, 2000),
        })
    }

    /// Why a run described by `now` is not of this one's schedule, if it is not: another
    /// space, project, shard or selection. The manifest's content may differ (a chain's
    /// next link reads the manifest as it is that day).
    pub(super) fn refuses_link(&self, now: &RunFile, report: &Path) -> Option<LedgerError> {
        let known = |s: &str| !s.is_empty();
        // Several projects: their ids decide (a resume), or may change with the manifest
        // (a chain's next link); the project id is then only the default one's.
        let one_project = self.projects.is_none() && now.projects.is_none();
        if (known(&self.space) && self.space != now.space)
            || (one_project && known(&self.project_id) && self.project_id != now.project_id)
        {
            return Some(LedgerError::OtherSpace {
                report: report.to_owned(),
                was: format!("{} (project {})", self.space, self.project_id),
                now: format!("{} (project {})", now.space, now.project_id),
            });
        }
        if known(&self.space) && self.shard != now.shard {
            let shown = |s: &Option<String>| s.clone().unwrap_or_else(|| "(none)".into());
            return Some(LedgerError::OtherShard {
                report: report.to_owned(),
                was: shown(&self.shard),
                now: shown(&now.shard),
            });
        }
        if self.selection != now.selection {
            let shown = |s: &Option<String>| match s {
                Some(digest) => format!("rows chosen by --only/--skip (digest {})", short(digest)),
                None => "every row".to_owned(),
            };
            return Some(LedgerError::OtherSelection {
                report: report.to_owned(),
                was: shown(&self.selection),
                now: shown(&now.selection),
            });
        }
        None
    }
}

/// A space's base URL, compared and recorded one way: lower case, no trailing slash.
fn normalized_space(space: &str) -> String {
    space.trim_end_matches('/').to_ascii_lowercase()
}

/// What the lock file of a report made by an earlier version held: the manifest's
/// fingerprint, read once so such a report still resumes.
#[derive(Debug, Deserialize)]
pub(super) struct LegacyLockNote {
    pub(super) manifest_sha256: String,
    pub(super) manifest: String,
}

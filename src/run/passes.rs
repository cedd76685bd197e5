//! The passes: one over the whole manifest before any request ([`scan`]), and one of the
//! engine over its rows ([`Pass`]), each with fresh clients and a fresh limiter.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{RunError, RunOptions};
use crate::budget::WriteBudget;
use crate::client::{Cancel, ReadClient, RequestStats, WriteClient};
use crate::engine::{self, Job, JobError, Observer, Outcome};
use crate::ledger::{EarlierWrite, IdSet, IdsDigest, Journal};
use crate::limiter::Limiter;
use crate::manifest::{DuplicateCheck, Format, Manifest};
use crate::projects::ProjectSet;
use crate::report::ReportWriter;
use crate::saved_plan::{self, PlanHeader};
use crate::selection::Selection;
use crate::shard::Shard;
use crate::snapshot::SnapshotBuilder;

/// What one pass over the manifest found.
pub(super) struct Scan {
    pub(super) rows: u64,
    pub(super) in_shard: u64,
    /// Rows of this shard that `--only`/`--skip` chose (all of them without either).
    pub(super) chosen: u64,
    pub(super) sha256: String,
    /// The (project, gateway) pairs this run may write (valid, chosen rows of this shard
    /// whose project the run can act for), in any order: the run lock's key, and what
    /// the run file records in a run of several projects.
    pub(super) pairs: String,
    /// The ids of those pairs' projects, lower case, sorted.
    pub(super) projects: Vec<String>,
    /// The keys of this shard's ids, for a snapshot (`list` and `auto` read modes).
    pub(super) keys: Option<Arc<Vec<u64>>>,
    /// Some row names its project (the manifest has a `project` column or key).
    pub(super) names_projects: bool,
    /// Why the first chosen row whose project the run cannot act for cannot (such a row
    /// is `invalid`; a saved plan with one is refused).
    pub(super) unresolved: Option<String>,
}

/// One pass over the whole manifest before any request: proves it readable, counts this
/// shard's rows, fingerprints it, and finds the ids used twice, so the run can check
/// duplicates exactly without remembering every id. With `keys`, it also collects the
/// snapshot keys of this shard's chosen ids. An id `--only` names that no row has is
/// refused here, before any request: a typo runs nothing rather than nothing it meant; so
/// is a selection that leaves no row of the manifest (in any shard) to run.
pub(super) async fn scan(
    manifest: &Manifest,
    shard: Option<Shard>,
    selection: Option<Arc<Selection>>,
    keys: bool,
    projects: Arc<ProjectSet>,
) -> Result<(Scan, Manifest), RunError> {
    let manifest = manifest.clone();
    tokio::task::spawn_blocking(move || {
        let (mut in_shard, mut chosen, mut selected) = (0u64, 0u64, 0u64);
        let mut wanted = Vec::new();
        let mut pairs = Pairs::new(&projects);
        let mut names_projects = false;
        let mut named: HashSet<u128> = selection
            .as_ref()
            .and_then(|s| s.only().cloned())
            .unwrap_or_default();
        let first = manifest.first_pass(|row| {
            if let Ok(r) = row {
                named.remove(&r.id.as_u128());
                names_projects |= r.project.is_some();
            }
            // Whatever the shard: a selection is refused only when it leaves no row of
            // the whole manifest (a shard may hold none of the chosen rows).
            let passed_over = selection.as_ref().and_then(|s| match row {
                Ok(r) => s.passes_over_uuid(r.id),
                Err(bad) => s.passes_over(&bad.id),
            });
            selected += u64::from(passed_over.is_none());
            let owned = match (shard, row) {
                (None, _) => true,
                (Some(s), Ok(r)) => s.owns(&r.id.hyphenated().to_string()),
                (Some(s), Err(bad)) => s.owns(&bad.id),
            };
            if !owned {
                return;
            }
            in_shard += 1;
            if passed_over.is_some() {
                return;
            }
            chosen += 1;
            if let Ok(r) = row {
                pairs.add(r);
                if keys {
                    wanted.push(SnapshotBuilder::key(&r.id));
                }
            }
        })?;
        refuse_unknown_ids(&named, &manifest)?;
        if selection.is_some() && selected == 0 {
            return Err(RunError::Usage(format!(
                "--only/--skip leave no row of {} to run (it has {} rows, none chosen); \
                 nothing was done",
                manifest.source().display(),
                first.stats.rows
            )));
        }
        let scan = Scan {
            rows: first.stats.rows,
            in_shard,
            chosen,
            sha256: first.sha256,
            pairs: pairs.digest.finish(),
            projects: pairs.projects.into_iter().collect(),
            keys: keys.then(|| SnapshotBuilder::keys(wanted)),
            names_projects,
            unresolved: pairs.unresolved,
        };
        Ok((
            scan,
            manifest.with_duplicates(DuplicateCheck::Only(Arc::new(first.repeated))),
        ))
    })
    .await
    .map_err(|e| RunError::Job(JobError::Internal(e.to_string())))?
}

/// The (project, gateway) pairs of a scan: each row's project as the run resolves it
/// (by name or id, an empty cell the default project), so one spelling or another of a
/// project finds the same pairs. A row whose project the run lacks writes nothing.
struct Pairs<'a> {
    set: &'a ProjectSet,
    digest: IdsDigest,
    projects: BTreeSet<String>,
    unresolved: Option<String>,
}

impl<'a> Pairs<'a> {
    fn new(set: &'a ProjectSet) -> Pairs<'a> {
        Pairs {
            set,
            digest: IdsDigest::default(),
            projects: BTreeSet::new(),
            unresolved: None,
        }
    }

    fn add(&mut self, row: &crate::manifest::Row) {
        match self.set.resolve(row.project.as_deref()) {
            Ok((_, project)) => {
                let id = project.id.to_ascii_lowercase();
                self.digest.add_pair(&id, &row.id);
                self.projects.insert(id);
            }
            Err(why) => {
                self.unresolved.get_or_insert(why);
            }
        }
    }
}

/// The projects a scan resolves rows with: the run's set, or the environment's project
/// alone (as [`with_named_projects`] makes it for a manifest that names projects).
pub(super) fn scan_projects(options: &RunOptions) -> Arc<ProjectSet> {
    options
        .projects
        .clone()
        .unwrap_or_else(|| Arc::new(ProjectSet::single(options.client.credentials.clone())))
}

/// A manifest that names projects, run without a projects file: its one project is the
/// run's set, so a row naming another is `invalid` and the report has the `project` column.
pub(super) fn with_named_projects(mut options: RunOptions, scan: &Scan) -> RunOptions {
    if scan.names_projects && options.projects.is_none() {
        let single = ProjectSet::single(options.client.credentials.clone());
        options.projects = Some(Arc::new(single));
    }
    options
}

/// `--only` ids that no row of the manifest has: a typo, or the wrong manifest.
fn refuse_unknown_ids(named: &HashSet<u128>, manifest: &Manifest) -> Result<(), RunError> {
    if named.is_empty() {
        return Ok(());
    }
    let mut ids: Vec<String> = named
        .iter()
        .map(|id| uuid::Uuid::from_u128(*id).hyphenated().to_string())
        .collect();
    ids.sort();
    let more = match ids.len() {
        n if n > 5 => format!(" and {} more", n - 5),
        _ => String::new(),
    };
    ids.truncate(5);
    Err(RunError::Usage(format!(
        "--only names {} id(s) that no row of {} has: {}{more}; nothing was done",
        named.len(),
        manifest.source().display(),
        ids.join(", ")
    )))
}

/// A pass's parts before it runs; [`Pass::run_engine`] builds fresh clients and a fresh limiter each
/// time, so a preview pass leaves no state behind.
pub(super) struct Pass<'a> {
    options: &'a RunOptions,
    manifest: &'a Manifest,
    /// Rows this pass runs, and the keys of their ids (for a snapshot).
    rows: u64,
    keys: Option<&'a Arc<Vec<u64>>>,
    pub(super) max_errors: Option<u64>,
    pub(super) limit: Option<u64>,
    pub(super) done: Option<Arc<IdSet>>,
    pub(super) journal: Option<Journal>,
    pub(super) recovered: Option<Arc<HashMap<u128, EarlierWrite>>>,
    pub(super) budget: Option<Arc<WriteBudget>>,
    /// The pass's request counters: the caller's, to watch them live (metrics).
    pub(super) stats: Option<Arc<RequestStats>>,
}

impl<'a> Pass<'a> {
    pub(super) fn new(options: &'a RunOptions, manifest: &'a Manifest, scan: &'a Scan) -> Pass<'a> {
        Pass {
            options,
            manifest,
            rows: scan.chosen,
            keys: scan.keys.as_ref(),
            max_errors: None,
            limit: None,
            done: None,
            journal: None,
            recovered: None,
            budget: None,
            stats: None,
        }
    }

    pub(super) async fn run_engine(
        self,
        report: ReportWriter,
        writes: bool,
        stop: CancellationToken,
        hurry: CancellationToken,
        observer: Option<Box<dyn Observer>>,
    ) -> Result<Outcome, RunError> {
        let o = self.options;
        let mut limiter =
            Limiter::new(Some(o.write_rate), o.read_rate).with_requests_in_flight(o.concurrency);
        if let Some(budget) = &self.budget {
            limiter = limiter.with_budget(Arc::clone(budget));
        }
        let limiter = Arc::new(limiter);
        let stats = self.stats.clone().unwrap_or_default();
        let abort = CancellationToken::new();
        let projects = match &o.projects {
            Some(set) => Some(project_clients(
                o,
                set,
                &limiter,
                &stats,
                (&abort, &stop),
                writes,
            )?),
            None => None,
        };
        let cancel = Cancel {
            abort: abort.clone(),
            stop: stop.clone(),
        };
        let reader = ReadClient::new(&o.client, limiter, Arc::clone(&stats), cancel)?;
        let snapshot = self.read_in_pages(&reader, &stop).await?;
        let projects_seen = projects.clone();
        let job = Job {
            manifest: self.manifest.clone(),
            writer: writes.then(|| WriteClient::new(reader.clone())),
            reader,
            report,
            rows_in_flight: crate::engine::rows_in_flight(o.concurrency),
            hurry,
            max_errors: self.max_errors,
            limit: self.limit,
            done: self.done,
            // A saved plan's rows were shard-filtered when it was made.
            shard: if self.manifest.format() == Format::Plan {
                None
            } else {
                o.shard
            },
            selection: o.selection.clone(),
            journal: if writes { self.journal } else { None },
            recovered: self.recovered,
            observer,
            stats,
            snapshot: snapshot.clone(),
            projects,
        };
        let mut outcome = engine::reconcile_rows(job).await?;
        if let Some(projects) = &projects_seen {
            stopped_projects(projects, &mut outcome);
        }
        outcome.write_budget = self.budget.as_ref().map(|b| b.report());
        if let Some(s) = snapshot {
            outcome.elapsed += s.stats.elapsed;
            outcome.snapshot = Some(s.stats.clone());
        }
        Ok(outcome)
    }
}

impl Pass<'_> {
    /// The space read in pages first, up to the read mode's page cap (`list`, `auto`);
    /// `None` (`get`): every row is read by GET. Rows the pages lack are read by GET.
    async fn read_in_pages(
        &self,
        reader: &ReadClient,
        stop: &CancellationToken,
    ) -> Result<Option<Arc<crate::snapshot::Snapshot>>, RunError> {
        let o = self.options;
        let (Some(max_pages), Some(keys)) =
            (o.read_mode.max_pages(self.rows, o.concurrency), self.keys)
        else {
            return Ok(None);
        };
        tracing::info!(read_mode = ?o.read_mode, "reading the space in pages");
        let builder = SnapshotBuilder::wanting(Arc::clone(keys)).map_err(snapshot_error)?;
        let snapshot = crate::snapshot::take(reader, builder, max_pages, o.paging, stop)
            .await
            .map_err(snapshot_error)?;
        let s = &snapshot.stats;
        tracing::info!(
            pages = s.pages,
            listed = s.listed,
            found = s.kept,
            complete = s.complete,
            secs = s.elapsed.as_secs(),
            "space read in pages; rows it lacks are read by GET"
        );
        Ok(Some(Arc::new(snapshot)))
    }
}

/// A client per project, on the pass's one limiter (one write budget for the space), its
/// counters and its abort token.
fn project_clients(
    o: &RunOptions,
    set: &Arc<crate::projects::ProjectSet>,
    limiter: &Arc<Limiter>,
    stats: &Arc<RequestStats>,
    (abort, stop): (&CancellationToken, &CancellationToken),
    writes: bool,
) -> Result<Arc<engine::ProjectClients>, RunError> {
    let mut readers = Vec::with_capacity(set.len());
    for project in set.iter() {
        let config = crate::client::ClientConfig {
            credentials: project.credentials(),
            ..o.client.clone()
        };
        // Its own abort under the job's: refused credentials stop this project only.
        readers.push(ReadClient::for_project(
            &config,
            Arc::clone(limiter),
            Arc::clone(stats),
            Cancel {
                abort: abort.child_token(),
                stop: stop.clone(),
            },
        )?);
    }
    let writers = match writes {
        true => readers.iter().cloned().map(WriteClient::new).collect(),
        false => Vec::new(),
    };
    Ok(Arc::new(engine::ProjectClients {
        set: Arc::clone(set),
        readers,
        writers,
    }))
}

/// The projects whose clients stopped: each named in the log; every one stopped is the
/// job's stop (refused credentials: exit 3), some of them a run cut off for their rows.
fn stopped_projects(projects: &engine::ProjectClients, outcome: &mut Outcome) {
    use crate::client::AbortCause;
    let mut unreachable = 0;
    for (project, reader) in projects.set.iter().zip(&projects.readers) {
        match reader.abort_cause() {
            Some(AbortCause::Unauthorized) => {
                tracing::error!(
                    project = %crate::inert::text(project.label(), 80),
                    id = %crate::inert::text(&project.id, 80),
                    "the space refused this project's credentials: its rows are skipped \
                     (credentials_refused); fix its token, then --resume"
                );
                outcome.refused_projects.push(project.id.clone());
            }
            Some(AbortCause::Unreachable(_)) => unreachable += 1,
            None => {}
        }
    }
    let stopped = outcome.refused_projects.len() + unreachable;
    if outcome.stopped.is_none() && stopped == projects.readers.len() && stopped > 0 {
        outcome.stopped = Some(match unreachable {
            0 => engine::StopReason::Unauthorized,
            _ => engine::StopReason::Unreachable,
        });
    }
}

fn snapshot_error(e: std::io::Error) -> RunError {
    RunError::Job(JobError::Snapshot(e))
}

pub(super) fn plan_header_for(
    options: &RunOptions,
    manifest: &Manifest,
    scan: &Scan,
) -> PlanHeader {
    let source = manifest.source();
    let named = if source == Path::new("-") {
        "-".to_owned()
    } else {
        std::path::absolute(source)
            .unwrap_or_else(|_| source.to_owned())
            .display()
            .to_string()
    };
    PlanHeader {
        sipgw_bulk_plan: saved_plan::VERSION,
        space: options
            .client
            .base_url
            .as_str()
            .trim_end_matches('/')
            .to_owned(),
        manifest: named,
        manifest_sha256: scan.sha256.clone(),
        shard: options.shard.map(|s| s.to_string()),
        changes: 0,
        rows: 0,
        rows_sha256: String::new(),
    }
}

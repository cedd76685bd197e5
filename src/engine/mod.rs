//! The pipeline: manifest stream -> bounded channel -> a fixed pool of workers (the rows
//! under way, [`rows_in_flight`]) -> one recorder, the report's writer.
//!
//! ```text
//!  reader (thread) ──rows──▶ worker 1..N ──records──▶ recorder (thread) ──▶ report file
//!        └─────── invalid / skipped rows ───────────────▲            └──▶ observers (plan view, saved plan, progress, metrics)
//! ```
//!
//! Memory is set by the channel sizes, not by the manifest. Every row the reader yields
//! ends as exactly one record: a worker's result, or `invalid`/`skipped` straight from the
//! reader. Plan, apply, canary (`limit`) and resume are parameters of this one loop: apply
//! has a [`WriteClient`], plan does not.
//!
//! Stopping: the client trips `abort` on 401/403 or an unreachable space (no request after
//! it); `stop` is tripped by an interrupt, the error limit or a report/journal that cannot
//! be written (no new row starts, and no new PATCH: a row waiting for its write slot or out
//! a retry's wait leaves unsent; requests on the wire finish). Either way the rows not
//! written are reported `skipped` with the reason, except a row whose PATCH may have
//! landed, which is read back and settled. A dead report writer never leaves the others
//! waiting: it stops the job and keeps draining the channel.
//!
//! Writes are never retried blind: when a PATCH may have reached the server but no good
//! answer came back, the gateway is read first; already as desired means `updated` (with
//! the original `before`), otherwise the PATCH goes again. A row whose outcome stays
//! unknown ends `failed` with `error_code` `write_unknown` and its `before`, and its
//! journal entry is kept until a later run settles it.
//!
//! The parts: `reader` (the manifest thread: routes each row to the workers, or straight
//! to the report), `workers` (the pool), `row` (one row: read, diff, decide), `write` (a
//! row that differs: slot, fresh read, PATCH, settle a lost answer), `recorder` (the
//! report's only writer, and the counts), `verdict` (how a record ends when it does not
//! end well, shared by `row` and `write`) and `stop` (which token fired, and why).

mod canary;
mod reader;
mod recorder;
mod row;
mod stop;
mod verdict;
mod workers;
mod write;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::client::{ReadClient, RequestStats, WriteClient};
use crate::latency::{Percentiles, RequestKind};
use crate::ledger::{EarlierWrite, IdSet, Journal};
use crate::manifest::{Manifest, ManifestError, Row};
use crate::projects::ProjectSet;
use crate::report::{ReportWriter, RowRecord};
use crate::selection::Selection;
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::status::Status;

use reader::{ReadTotals, RowReader};
use recorder::{Recorder, Tally};
use stop::Stopper;

/// Sees each record after it reaches the report (plan display, progress, stats lines).
pub trait Observer: Send {
    fn record(&mut self, record: &RowRecord);
    /// A row passed over without a record (done in an earlier run, or another shard's).
    fn passed(&mut self, _seq: u64) {}
}

/// How a job runs.
pub struct Job {
    pub manifest: Manifest,
    pub reader: ReadClient,
    /// `Some` for apply; `None` makes a plan that cannot write.
    pub writer: Option<WriteClient>,
    pub report: ReportWriter,
    /// Rows under way at most ([`rows_in_flight`] of `--concurrency`): a row waiting for
    /// its write slot or out a retry's wait holds a place here, not a request's (the
    /// client's limiter bounds those, and the rows at work).
    pub rows_in_flight: usize,
    /// Tripped from outside once the interrupt's grace ran out: a request still on the
    /// wire is given up, its row reported as it stands (`write_unknown` once a PATCH may
    /// have landed), so the report is whole when the job ends.
    pub hurry: CancellationToken,
    /// Stop once this many rows have ended `failed` or `mismatch`.
    pub max_errors: Option<u64>,
    /// Write only the first N rows that need a change (a canary); the rest are `skipped`.
    pub limit: Option<u64>,
    /// Ids (as u128) already done in an earlier run: neither read nor reported again.
    pub done: Option<Arc<IdSet>>,
    /// Only this shard's rows are read and reported.
    pub shard: Option<Shard>,
    /// `--only`/`--skip`: rows not chosen are reported `skipped`, never read.
    pub selection: Option<Arc<Selection>>,
    /// Apply: each row's `before` is journaled here before its PATCH is sent.
    pub journal: Option<Journal>,
    /// Writes an earlier run may have made (`--resume`: this report's; a chain's next
    /// link: the previous report's), with the rows' undo values.
    pub recovered: Option<Arc<HashMap<u128, EarlierWrite>>>,
    pub observer: Option<Box<dyn Observer>>,
    pub stats: Arc<RequestStats>,
    /// `--read-mode list`: the space as paged before the rows start. A row it holds is
    /// diffed against it (and read again by GET before a PATCH); any other row is read
    /// by GET.
    pub snapshot: Option<Arc<Snapshot>>,
    /// Several projects of one space: each row is read and written with its project's
    /// clients (`reader` and `writer` are then the default project's, or the first's).
    pub projects: Option<Arc<ProjectClients>>,
}

/// Several projects of one space: a client per project, all on one limiter (one write
/// budget for the space), each with its own abort token under the job's (refused
/// credentials stop that project's rows only), and the set a row's `project` cell is
/// resolved in.
pub struct ProjectClients {
    pub set: Arc<ProjectSet>,
    /// In the set's order.
    pub readers: Vec<ReadClient>,
    /// Apply: in the set's order; empty for a plan.
    pub writers: Vec<WriteClient>,
}

/// Why a job stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The server refused the credentials (401/403).
    Unauthorized,
    /// The space could not be reached for longer than the outage limit (or TLS failed).
    Unreachable,
    /// `--max-errors` was reached.
    ErrorLimit,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The report or the journal could not be written (disk full, I/O error).
    LedgerFailed,
}

/// What a finished job tells the caller.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub counts: HashMap<Status, u64>,
    /// Rows in the manifest (including ones skipped as already done).
    pub rows: u64,
    /// Rows passed over because an earlier run finished them (`--resume`).
    pub already_done: u64,
    /// Rows passed over because they belong to another shard.
    pub other_shards: u64,
    /// Rows reported `skipped` because `--only`/`--skip` did not choose them.
    pub not_selected: u64,
    pub elapsed: Duration,
    pub requests: u64,
    pub retries: u64,
    pub writes: u64,
    /// From the first PATCH to the last: the time the job was writing.
    pub write_span: Option<Duration>,
    /// Time rows waited for their write slot, in all (`--rate`, the space's budget).
    pub slot_wait: Duration,
    pub stopped: Option<StopReason>,
    /// Rows that may have been written although no answer said so (`write_unknown`).
    pub possibly_written: u64,
    /// Ids whose before-value only the journal holds safely (possibly written, not
    /// settled): the journal keeps them when the run ends.
    pub unsettled: Vec<u128>,
    /// Why the space was unreachable, or why the report could not be written.
    pub stop_detail: Option<String>,
    /// Latency percentiles per kind of request (kinds that were sent).
    pub latency: Vec<(RequestKind, Percentiles)>,
    /// The row that took longest, end to end.
    pub slowest: Option<SlowRow>,
    /// 429 answers, and how long the retries after them waited in all.
    pub throttled: u64,
    pub throttled_wait: Duration,
    /// The space's write budget as the job saw it (an apply's run; set by the caller that
    /// owns the limiter).
    pub write_budget: Option<crate::budget::BudgetReport>,
    /// `--read-mode list`/`auto`: how the space was read in pages (set by the caller).
    pub snapshot: Option<crate::snapshot::SnapshotStats>,
    /// Several projects: the ids of those whose credentials the space refused (their
    /// rows `skipped`, `credentials_refused`) while others ran: a run cut off for them.
    pub refused_projects: Vec<String>,
    /// Several projects: the counts per status of each project (by id).
    pub per_project: std::collections::BTreeMap<String, HashMap<Status, u64>>,
}

/// The slowest row of a run: where to look first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowRow {
    pub line: u64,
    pub id: String,
    pub duration_ms: u64,
}

impl Outcome {
    pub fn count(&self, status: Status) -> u64 {
        self.counts.get(&status).copied().unwrap_or(0)
    }

    /// Writes per second while the job was writing (first PATCH to last: the reads before
    /// the first write are not the write rate's); none when that took under a second,
    /// where a rate reads as a broken limit (2 writes in 7 ms is not 290 a second).
    pub fn write_rate(&self) -> Option<f64> {
        let secs = self.write_span?.as_secs_f64();
        // N writes paced 1/R apart span (N - 1)/R seconds.
        (secs >= 1.0).then(|| self.writes.saturating_sub(1) as f64 / secs)
    }

    /// Any row that needs someone's attention.
    pub fn has_errors(&self) -> bool {
        self.counts.iter().any(|(s, n)| s.is_error() && *n > 0)
    }
}

/// A job that could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("cannot write the report")]
    Report(#[source] std::io::Error),
    #[error("cannot keep the snapshot of the space in a temporary file")]
    Snapshot(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What every worker shares.
struct Shared {
    reader: ReadClient,
    writer: Option<WriteClient>,
    stopper: Stopper,
    max_errors: Option<u64>,
    errors: AtomicU64,
    /// `--limit`: the first rows in order that need a change.
    canary: Option<canary::Canary>,
    journal: Option<Journal>,
    recovered: Option<Arc<HashMap<u128, EarlierWrite>>>,
    stats: Arc<RequestStats>,
    projects: Option<Arc<ProjectClients>>,
}

impl Shared {
    /// The clients `row` is read and written with: its project's, in a run with several.
    fn clients(&self, row: &Row) -> (ReadClient, Option<WriteClient>) {
        let chosen = self.projects.as_ref().and_then(|p| {
            let (i, _) = p.set.resolve(row.project.as_deref()).ok()?;
            Some((p.readers.get(i)?.clone(), p.writers.get(i).cloned()))
        });
        chosen.unwrap_or_else(|| (self.reader.clone(), self.writer.clone()))
    }

    /// The row's project id for the report, in a run with several projects; `None` in a
    /// single-project run, or for a row whose project the run lacks.
    fn project_id(&self, row: &Row) -> Option<String> {
        let projects = self.projects.as_ref()?;
        let (_, project) = projects.set.resolve(row.project.as_deref()).ok()?;
        Some(project.id.clone())
    }

    /// A row skipped because its project's client stopped: the space refused that
    /// project's credentials, or could not be reached (each project's client stops on its
    /// own, and says which).
    fn project_abort_note(&self, row: &Row, record: &mut crate::report::RowRecord) {
        use crate::client::AbortCause;
        if record.status != Status::Skipped || self.stopper.reason().is_some() {
            return;
        }
        let reader = self.clients(row).0;
        if let Some(AbortCause::Unreachable(_)) = reader.abort_cause() {
            let (code, note) = StopReason::Unreachable.skip_note();
            if record.error_code == crate::status::ErrorCode::CredentialsRefused {
                record.error_code = code.into();
                record.error = note.into();
            }
        }
    }

    /// Why the row cannot run: a project the run has no credentials for.
    fn unknown_project(&self, row: &Row) -> Option<String> {
        let projects = self.projects.as_ref()?;
        projects.set.resolve(row.project.as_deref()).err()
    }
}

/// Rows under way for `concurrency` requests on the wire: four a request. As many as
/// `concurrency` are at work ([`crate::limiter::Limiter::place_at_work`]); the rest wait
/// out a retry (holding a timer, not a place, while the write budget judges the space's
/// refusals noise) or wait for a place, holding no row. `--max-errors` can be passed by
/// the rows already under way when it is reached: at most this many, less one.
pub fn rows_in_flight(concurrency: usize) -> usize {
    concurrency.max(1) * 4
}

/// Runs the job to the end and returns its counts: the report's writer, the manifest's
/// reader and the workers start, the reader's end closes the rows' channel, the workers'
/// end closes the records', and the recorder's end is the job's.
pub async fn reconcile_rows(job: Job) -> Result<Outcome, JobError> {
    let started = Instant::now();
    let rows_in_flight = job.rows_in_flight.max(1);
    let (shared, rows, recorder) = split_job(job);
    let (row_tx, row_rx) = mpsc::channel(rows_in_flight.max(256));
    let (record_tx, record_rx) = mpsc::channel(1024);

    let recording = recorder.spawn(record_rx, Arc::clone(&shared));
    let reading = rows.spawn(row_tx, record_tx.clone(), Arc::clone(&shared));
    let working = workers::spawn(rows_in_flight, row_rx, record_tx, &shared);

    let read = reading.await.map_err(internal)?;
    for worker in working {
        worker.await.map_err(internal)?;
    }
    let tally = recording.await.map_err(internal)?;
    let stopped = shared.stopper.reason();
    // A dead report can leave the reader's last send unread: that is not the manifest's
    // fault, so the ledger's error is the one to report.
    let read = match read {
        Ok(totals) => totals,
        Err(_) if stopped == Some(StopReason::LedgerFailed) => ReadTotals::default(),
        Err(e) => return Err(e.into()),
    };
    Ok(outcome(started, &shared, read, tally))
}

/// The job's parts: what every worker shares, the manifest thread's, the report thread's.
fn split_job(job: Job) -> (Arc<Shared>, RowReader, Recorder) {
    let Job {
        manifest,
        reader,
        writer,
        report,
        rows_in_flight: _,
        hurry,
        max_errors,
        limit,
        done,
        shard,
        selection,
        journal,
        recovered,
        observer,
        stats,
        snapshot,
        projects,
    } = job;
    let shared = Arc::new(Shared {
        // The client's tokens are the job's: what stops one stops the other.
        stopper: Stopper::new(reader.clone()).with_hurry(hurry),
        reader,
        writer,
        max_errors,
        errors: AtomicU64::new(0),
        canary: limit.map(canary::Canary::new),
        journal,
        recovered,
        stats,
        projects,
    });
    let rows = RowReader {
        manifest,
        shard,
        selection,
        done,
        snapshot,
    };
    (shared, rows, Recorder::new(report, observer))
}

/// The counts of a job that ran: the recorder's, the reader's and the client's.
fn outcome(started: Instant, shared: &Shared, read: ReadTotals, tally: Tally) -> Outcome {
    let stats = &shared.stats;
    let stopped = shared.stopper.reason();
    Outcome {
        rows: read.rows,
        already_done: read.already_done,
        other_shards: read.other_shards,
        not_selected: read.not_selected,
        counts: tally.counts,
        elapsed: started.elapsed(),
        requests: stats.requests.load(Ordering::Relaxed),
        retries: stats.retries.load(Ordering::Relaxed),
        writes: stats.writes.load(Ordering::Relaxed),
        write_span: stats.write_span.length(),
        slot_wait: Duration::from_micros(stats.slot_wait_us.load(Ordering::Relaxed)),
        stopped,
        possibly_written: tally.unsettled.len() as u64,
        unsettled: tally.unsettled,
        stop_detail: shared.stopper.detail(),
        latency: RequestKind::ALL
            .iter()
            .filter_map(|k| Some((*k, stats.latencies.of(*k).percentiles()?)))
            .collect(),
        slowest: tally.slowest,
        throttled: stats.throttled.load(Ordering::Relaxed),
        throttled_wait: Duration::from_micros(stats.throttled_wait_us.load(Ordering::Relaxed)),
        write_budget: None,
        snapshot: None,
        refused_projects: Vec::new(),
        per_project: tally.per_project,
    }
}

fn internal(e: tokio::task::JoinError) -> JobError {
    JobError::Internal(e.to_string())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::client::ClientConfig;
    use crate::secret::{Credentials, Secret};

    /// A client for a space nobody listens on: the engine's parts are tested without a
    /// request leaving.
    pub(in crate::engine) fn client() -> ReadClient {
        client_on(Arc::new(crate::limiter::Limiter::new(None, None)))
    }

    /// [`client`] on this limiter.
    pub(in crate::engine) fn client_on(limiter: Arc<crate::limiter::Limiter>) -> ReadClient {
        let config = ClientConfig {
            base_url: url::Url::parse("http://127.0.0.1:9").unwrap(),
            credentials: Credentials {
                project_id: "p".into(),
                token: Secret::new("t"),
            },
            timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            retry: crate::retry::RetryPolicy::default(),
            pool_size: 1,
        };
        let stats = Arc::new(RequestStats::default());
        ReadClient::new(&config, limiter, stats, crate::client::Cancel::default()).unwrap()
    }

    /// What every worker shares, with a writer (an apply) and nothing recovered.
    pub(in crate::engine) fn shared() -> Shared {
        let reader = client();
        Shared {
            stopper: Stopper::new(reader.clone()),
            writer: Some(WriteClient::new(reader.clone())),
            reader,
            max_errors: None,
            errors: AtomicU64::new(0),
            canary: None,
            journal: None,
            recovered: None,
            stats: Arc::new(RequestStats::default()),
            projects: None,
        }
    }

    #[test]
    fn an_outcome_counts_rates_and_errors() {
        let mut o = Outcome::default();
        assert_eq!(o.count(Status::Updated), 0);
        assert_eq!(o.write_rate(), None, "no time: no rate, not infinity");
        assert!(!o.has_errors());
        o.writes = 31;
        o.elapsed = Duration::from_secs(60);
        o.write_span = Some(Duration::from_millis(999));
        assert_eq!(o.write_rate(), None, "writing under a second: no rate");
        o.write_span = Some(Duration::from_secs(1));
        assert_eq!(o.write_rate(), Some(30.0), "31 writes 1/30 s apart");
        o.write_span = Some(Duration::from_secs(2));
        assert_eq!(o.write_rate(), Some(15.0));
        o.writes = 0;
        assert_eq!(o.write_rate(), Some(0.0));
        o.counts.insert(Status::Updated, 4);
        o.counts.insert(Status::Failed, 0);
        assert_eq!(o.count(Status::Updated), 4);
        assert!(!o.has_errors(), "a status with no rows is no error");
        o.counts.insert(Status::Conflict, 1);
        assert!(o.has_errors());
    }
}

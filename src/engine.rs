//! The pipeline: manifest stream -> bounded channel -> a fixed pool of `concurrency`
//! workers -> one report writer.
//!
//! ```text
//!  reader thread ──rows──▶ worker 1..N ──records──▶ writer thread ──▶ report file
//!        └─────── invalid / skipped rows ─────────────▲          └──▶ observer (plan, progress)
//! ```
//!
//! Memory is set by the channel sizes, not by the manifest. Every row the reader yields
//! ends as exactly one record: a worker's result, or `invalid`/`skipped` straight from the
//! reader. Plan, apply, canary (`limit`) and resume are parameters of this one loop: apply
//! has a [`WriteClient`], plan does not.
//!
//! Stopping: the client trips `abort` on 401/403 or an unreachable space (no request after
//! it); `stop` is tripped by an interrupt, the error budget or a report/journal that cannot
//! be written (no new row starts; rows in flight finish). Either way the rows not started
//! are reported `skipped` with the reason. A dead report writer never leaves the others
//! waiting: it stops the job and keeps draining the channel.
//!
//! Writes are never retried blind: when a PATCH may have reached the server but no good
//! answer came back, the gateway is read first; already as desired means `updated` (with
//! the original `before`), otherwise the PATCH goes again. A row whose outcome stays
//! unknown ends `failed` with `error_code` `write_unknown` and its `before`, and its
//! journal entry is kept until a later run settles it.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::client::{AbortCause, ApiError, ErrorKind, ReadClient, RequestStats, WriteClient};
use crate::diff::{differing, merge};
use crate::latency::{Percentiles, RequestKind};
use crate::ledger::{IdSet, Journal};
use crate::manifest::{Manifest, ManifestError, Row};
use crate::model::GatewayFields;
use crate::report::{ReportWriter, RowRecord, WRITE_UNKNOWN};
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::status::Status;

/// Sees each record after it reaches the report (plan display, progress, stats lines).
pub trait Observer: Send {
    fn record(&mut self, record: &RowRecord);
    /// A row passed over without a record (done in an earlier run, or another shard's).
    fn passed(&mut self, _seq: u64) {}
}

/// What the writer thread receives.
// Records are nearly every event; boxing them would allocate per row to shrink a rare one.
#[allow(clippy::large_enum_variant)]
enum Event {
    Record(RowRecord),
    Passed(u64),
}

/// How a job runs.
pub struct Job {
    pub manifest: Manifest,
    pub reader: ReadClient,
    /// `Some` for apply; `None` makes a plan that cannot write.
    pub writer: Option<WriteClient>,
    pub report: ReportWriter,
    /// Rows in flight at most.
    pub concurrency: usize,
    /// Tripped by the client on 401/403.
    pub abort: CancellationToken,
    /// Tripped from outside (an interrupt): no new row starts.
    pub stop: CancellationToken,
    /// Stop once this many rows have ended `failed` or `mismatch`.
    pub max_errors: Option<u64>,
    /// Write only the first N rows that need a change (a canary); the rest are `skipped`.
    pub limit: Option<u64>,
    /// Ids (as u128) already done in an earlier run: neither read nor reported again.
    pub done: Option<Arc<IdSet>>,
    /// Only this shard's rows are read and reported.
    pub shard: Option<Shard>,
    /// Apply: each row's `before` is journaled here before its PATCH is sent.
    pub journal: Option<Journal>,
    /// Before-values journaled by an earlier run whose report lost the row (`--resume`).
    pub recovered: Option<Arc<HashMap<u128, GatewayFields>>>,
    pub observer: Option<Box<dyn Observer>>,
    pub stats: Arc<RequestStats>,
    /// `--read-mode list`: the space as paged before the rows start. A row it holds is
    /// diffed against it (and read again by GET before a PATCH); any other row is read
    /// by GET.
    pub snapshot: Option<Arc<Snapshot>>,
}

/// Why a job stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The server refused the credentials (401/403).
    Unauthorized,
    /// The space could not be reached for longer than the outage budget (or TLS failed).
    Unreachable,
    /// `--max-errors` was reached.
    ErrorBudget,
    /// SIGINT or SIGTERM.
    Interrupted,
    /// The report or the journal could not be written (disk full, I/O error).
    LedgerFailed,
}

impl StopReason {
    fn skip_note(self) -> (&'static str, &'static str) {
        match self {
            StopReason::Unauthorized => (
                "aborted",
                "not attempted: the job stopped after the server refused the credentials",
            ),
            StopReason::Unreachable => (
                "unreachable",
                "not attempted: the job stopped because the space could not be reached",
            ),
            StopReason::LedgerFailed => (
                "ledger",
                "not attempted: the job stopped because its report or journal could not be \
                 written",
            ),
            StopReason::ErrorBudget => (
                "max_errors",
                "not attempted: the job stopped when --max-errors was reached",
            ),
            StopReason::Interrupted => ("interrupted", "not attempted: the job was interrupted"),
        }
    }
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
    pub elapsed: Duration,
    pub requests: u64,
    pub retries: u64,
    pub writes: u64,
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

    /// Writes per second over the run.
    pub fn write_rate(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.writes as f64 / secs
        } else {
            0.0
        }
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

/// Shared stop state: which token fired, and why.
struct Stopper {
    abort: CancellationToken,
    stop: CancellationToken,
    reason: OnceLock<StopReason>,
    /// Why the report or journal failed: the path and the cause.
    ledger_fault: OnceLock<String>,
    /// The client, which knows why it aborted.
    client: ReadClient,
}

impl Stopper {
    fn reason(&self) -> Option<StopReason> {
        if let Some(r) = self.reason.get() {
            Some(*r)
        } else if self.abort.is_cancelled() {
            Some(match self.client.abort_cause() {
                Some(AbortCause::Unreachable(_)) => StopReason::Unreachable,
                _ => StopReason::Unauthorized,
            })
        } else if self.stop.is_cancelled() {
            Some(StopReason::Interrupted)
        } else {
            None
        }
    }

    fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.stop.cancel();
    }

    /// The report or journal cannot be written: stop at once, say why once.
    fn ledger_failed(&self, what: String) {
        if self.ledger_fault.set(what.clone()).is_ok() {
            tracing::error!("{what}: stopping; rows in flight finish");
        }
        self.stop(StopReason::LedgerFailed);
    }

    fn skipped(&self, seq: u64, line: u64, id: String) -> RowRecord {
        let (code, note) = self.reason().unwrap_or(StopReason::Interrupted).skip_note();
        RowRecord::bare(seq, line, id, Status::Skipped, code, note.to_owned())
    }
}

/// What every worker shares.
struct Shared {
    reader: ReadClient,
    writer: Option<WriteClient>,
    stopper: Stopper,
    max_errors: Option<u64>,
    errors: AtomicU64,
    limit: Option<u64>,
    writes_started: AtomicU64,
    journal: Option<Journal>,
    recovered: Option<Arc<HashMap<u128, GatewayFields>>>,
    stats: Arc<RequestStats>,
}

/// Runs the job to the end and returns its counts.
pub async fn run(job: Job) -> Result<Outcome, JobError> {
    let started = Instant::now();
    let Job {
        manifest,
        reader,
        writer,
        mut report,
        concurrency,
        abort,
        stop,
        max_errors,
        limit,
        done,
        shard,
        journal,
        recovered,
        mut observer,
        stats,
        snapshot,
    } = job;
    let concurrency = concurrency.max(1);
    let shared = Arc::new(Shared {
        stopper: Stopper {
            abort,
            stop,
            reason: OnceLock::new(),
            ledger_fault: OnceLock::new(),
            client: reader.clone(),
        },
        reader,
        writer,
        max_errors,
        errors: AtomicU64::new(0),
        limit,
        writes_started: AtomicU64::new(0),
        journal,
        recovered,
        stats: Arc::clone(&stats),
    });
    let (row_tx, row_rx) =
        mpsc::channel::<(Row, Option<GatewayFields>)>((concurrency * 4).max(256));
    let (record_tx, mut record_rx) = mpsc::channel::<Event>(1024);

    // The writer: the only owner of the report file. It writes whatever records are
    // waiting, then flushes before it waits again: every finished row reaches the file
    // within one batch (never more than 256 rows, and at once when the job is quiet),
    // without a write system call per row when rows finish by the thousand.
    let write_task = {
        let shared = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || {
            let mut tally = Tally::default();
            let mut alive = true;
            let mut handle = |report: &mut ReportWriter, event: Event| -> std::io::Result<()> {
                match event {
                    Event::Record(record) => {
                        report.write(&record)?;
                        tally.count(&record);
                        if let Some(o) = observer.as_mut() {
                            o.record(&record);
                        }
                    }
                    Event::Passed(seq) => {
                        if let Some(o) = observer.as_mut() {
                            o.passed(seq);
                        }
                    }
                }
                Ok(())
            };
            while let Some(event) = record_rx.blocking_recv() {
                if !alive {
                    // The report is dead: keep draining so no one waits on us forever.
                    continue;
                }
                let mut written = handle(&mut report, event);
                let mut batch = 1;
                while batch < 256 && written.is_ok() {
                    match record_rx.try_recv() {
                        Ok(event) => written = handle(&mut report, event),
                        Err(_) => break,
                    }
                    batch += 1;
                }
                if let Err(e) = written.and_then(|()| report.flush()) {
                    alive = false;
                    shared.stopper.ledger_failed(format!(
                        "cannot write report {}: {e}",
                        report.path().display()
                    ));
                    continue;
                }
                if batch < 16 {
                    // Rows are trickling in: let a few gather rather than wake for each one.
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let path = report.path().to_owned();
            if alive && let Err(e) = report.close() {
                shared
                    .stopper
                    .ledger_failed(format!("cannot write report {}: {e}", path.display()));
            }
            tally
        })
    };

    // The reader: checks rows and feeds the workers; invalid rows go straight to the report.
    let read_task = {
        let record_tx = record_tx.clone();
        let shared = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || {
            let mut already_done = 0u64;
            let mut other_shards = 0u64;
            let stats = manifest.read(|checked| {
                let (seq, foreign) = match (&checked, shard) {
                    (Ok(row), Some(s)) => (row.seq, !s.owns(&row.id.hyphenated().to_string())),
                    (Err(bad), Some(s)) => (bad.seq, !s.owns(&bad.id)),
                    (Ok(row), None) => (row.seq, false),
                    (Err(bad), None) => (bad.seq, false),
                };
                let event = if foreign {
                    other_shards += 1;
                    Event::Passed(seq)
                } else {
                    match checked {
                        Ok(row) if done.as_ref().is_some_and(|d| d.contains(&row.id.as_u128())) => {
                            already_done += 1;
                            Event::Passed(seq)
                        }
                        Ok(row) if shared.stopper.reason().is_none() => {
                            // When the queue is full, nap instead of blocking on it: a
                            // blocked sender is woken for every row a worker takes, a
                            // thread switch per row; a 1 ms nap refills it in one go.
                            while row_tx.capacity() == 0 && !row_tx.is_closed() {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                            // The snapshot is a file: looked up here, off the workers' threads.
                            let listed = snapshot.as_ref().and_then(|s| s.get(&row.id));
                            // A send fails only when the workers are gone (the writer failed).
                            return match row_tx.blocking_send((row, listed)) {
                                Ok(()) => ControlFlow::Continue(()),
                                Err(_) => ControlFlow::Break(()),
                            };
                        }
                        Ok(row) => Event::Record(shared.stopper.skipped(
                            row.seq,
                            row.line,
                            row.id.hyphenated().to_string(),
                        )),
                        Err(bad) => Event::Record(RowRecord::bare(
                            bad.seq,
                            bad.line,
                            bad.id,
                            Status::Invalid,
                            "invalid",
                            bad.message,
                        )),
                    }
                };
                match record_tx.blocking_send(event) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            });
            stats.map(|s| (s, already_done, other_shards))
        })
    };

    let row_rx = Arc::new(Mutex::new(row_rx));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let row_rx = Arc::clone(&row_rx);
        let record_tx = record_tx.clone();
        let shared = Arc::clone(&shared);
        workers.push(tokio::spawn(async move {
            loop {
                let next = row_rx.lock().await.recv().await;
                let Some((row, listed)) = next else { break };
                // At debug level: a span costs an allocation per row even when nothing in
                // it is logged; with -v, every retry and row log line carries it.
                let span = tracing::debug_span!("row", line = row.line, id = %row.id);
                let record = reconcile(&row, listed, &shared).instrument(span).await;
                let record = keep_possible_write(record, &row, &shared);
                if matches!(record.status, Status::Failed | Status::Mismatch)
                    && let Some(max) = shared.max_errors
                    && shared.errors.fetch_add(1, Ordering::Relaxed) + 1 >= max
                {
                    shared.stopper.stop(StopReason::ErrorBudget);
                }
                if record_tx.send(Event::Record(record)).await.is_err() {
                    break;
                }
            }
        }));
    }
    drop(record_tx);

    let read_result = read_task
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?;
    for w in workers {
        w.await.map_err(|e| JobError::Internal(e.to_string()))?;
    }
    let tally = write_task
        .await
        .map_err(|e| JobError::Internal(e.to_string()))?;
    let stopped = shared.stopper.reason();
    // A dead report can leave the reader's last send unread: that is not the manifest's
    // fault, so the ledger's error is the one to report.
    let (read_stats, already_done, other_shards) = match read_result {
        Ok(r) => r,
        Err(_) if stopped == Some(StopReason::LedgerFailed) => Default::default(),
        Err(e) => return Err(e.into()),
    };
    let stop_detail = match stopped {
        Some(StopReason::LedgerFailed) => shared.stopper.ledger_fault.get().cloned(),
        Some(StopReason::Unreachable) => match shared.reader.abort_cause() {
            Some(AbortCause::Unreachable(why)) => Some(why),
            _ => None,
        },
        _ => None,
    };

    Ok(Outcome {
        rows: read_stats.rows,
        already_done,
        other_shards,
        counts: tally.counts,
        elapsed: started.elapsed(),
        requests: stats.requests.load(Ordering::Relaxed),
        retries: stats.retries.load(Ordering::Relaxed),
        writes: stats.writes.load(Ordering::Relaxed),
        stopped,
        possibly_written: tally.unsettled.len() as u64,
        unsettled: tally.unsettled,
        stop_detail,
        latency: RequestKind::ALL
            .iter()
            .filter_map(|k| Some((*k, stats.latencies.of(*k).percentiles()?)))
            .collect(),
        slowest: tally.slowest,
        throttled: stats.throttled.load(Ordering::Relaxed),
        throttled_wait: Duration::from_micros(stats.throttled_wait_us.load(Ordering::Relaxed)),
        write_budget: None,
        snapshot: None,
    })
}

/// What the writer counts as records reach the report.
#[derive(Default)]
struct Tally {
    counts: HashMap<Status, u64>,
    unsettled: Vec<u128>,
    slowest: Option<SlowRow>,
}

impl Tally {
    fn count(&mut self, record: &RowRecord) {
        *self.counts.entry(record.status).or_default() += 1;
        if record.attempts > 0
            && self
                .slowest
                .as_ref()
                .is_none_or(|s| record.duration_ms > s.duration_ms)
        {
            self.slowest = Some(SlowRow {
                line: record.row,
                id: record.id.clone(),
                duration_ms: record.duration_ms,
            });
        }
        if record.error_code == WRITE_UNKNOWN
            && let Ok(id) = uuid::Uuid::try_parse(&record.id)
        {
            self.unsettled.push(id.as_u128());
        }
    }
}

/// A row an earlier run may have written (its before-value recovered from the journal)
/// that this run could not even read (skipped, or its GET failed) stays marked
/// `write_unknown` with that before-value: the report alone still undoes it. (A row this
/// run did read is judged in [`reconcile`]: by whether the gateway moved since.)
fn keep_possible_write(record: RowRecord, row: &Row, shared: &Shared) -> RowRecord {
    let unread = matches!(record.status, Status::Skipped | Status::Failed)
        && record.before.is_none()
        && record.error_code != WRITE_UNKNOWN;
    match shared
        .recovered
        .as_ref()
        .and_then(|r| r.get(&row.id.as_u128()))
    {
        Some(before) if unread => {
            let mut record = possibly_written_earlier(record);
            record.before = Some(before.clone());
            record
        }
        _ => record,
    }
}

/// Marks a row an earlier run may have written, and this run did not settle.
fn possibly_written_earlier(mut record: RowRecord) -> RowRecord {
    record.error = format!(
        "possibly written by an earlier run whose answer was lost, and not settled now: {}",
        record.error
    );
    record.status = Status::Failed;
    record.error_code = WRITE_UNKNOWN.into();
    record
}

/// One row: read (or take the snapshot's `listed` fields), diff, and write when it
/// differs (and a writer was given).
async fn reconcile(row: &Row, listed: Option<GatewayFields>, shared: &Shared) -> RowRecord {
    let id = row.id.hyphenated().to_string();
    if shared.stopper.reason().is_some() {
        return shared.stopper.skipped(row.seq, row.line, id);
    }
    let started = Instant::now();
    let mut record = RowRecord::bare(row.seq, row.line, id, Status::Failed, "", String::new());
    let finish = |mut record: RowRecord| {
        record.duration_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(status = %record.status, attempts = record.attempts, "row done");
        record
    };

    let from_listing = listed.is_some();
    let current = match listed {
        // The list page's answer: no request of this row's own.
        Some(fields) => {
            record.http_status = Some(200);
            fields
        }
        None => match shared.reader.get_gateway(&row.id).await {
            Ok(reply) => {
                record.attempts = reply.attempts;
                record.http_status = Some(reply.status);
                reply.value.sip_gateway
            }
            Err(err) => return finish(failed(record, err, &shared.stopper)),
        },
    };
    let desired = merge(&current, &row.desired);
    record.changed_fields = differing(&current, &desired);
    record.before = Some(current);
    if record.changed_fields.is_empty() {
        return finish(settled_unchanged(record, row, shared));
    }
    // A saved plan's row: written only if the gateway still looks as the plan saw it (a
    // gateway already as the plan would leave it was settled above, as unchanged). A
    // listing may be stale, so an apply leaves that judgement to the fresh read before the
    // write.
    if let Some(expected) = &row.expected
        && let Some(current) = &record.before
        && (!from_listing || shared.writer.is_none())
    {
        let moved = differing(expected, current);
        if !moved.is_empty() {
            let current = current.clone();
            return finish(conflict(record, current, &moved));
        }
    }
    // The canary applies to a plan too, so the plan shown before asking holds only the
    // rows that will be written.
    if let Some(limit) = shared.limit
        && shared.writes_started.fetch_add(1, Ordering::Relaxed) >= limit
    {
        record.status = Status::Skipped;
        record.error_code = "limit".into();
        record.error = format!("not written: --limit {limit} reached (a change is pending)");
        record.after = Some(desired);
        return finish(record);
    }
    let Some(writer) = shared.writer.as_ref() else {
        record.status = Status::WouldUpdate;
        record.after = Some(desired);
        return finish(record);
    };
    // An earlier run's write of this row that may have landed: it did, at least in part,
    // when the gateway no longer looks as it did then. The undo value is then the gateway
    // as it was before any run touched it, and a failure now leaves it possibly written.
    let original = shared
        .recovered
        .as_ref()
        .and_then(|r| r.get(&row.id.as_u128()))
        .filter(|o| record.before.as_ref() != Some(*o))
        .cloned();
    let earlier = original.is_some();
    let record = write_fresh(record, row, shared, writer, original).await;
    finish(match record.status {
        Status::Failed if earlier && record.error_code != WRITE_UNKNOWN => {
            possibly_written_earlier(record)
        }
        _ => record,
    })
}

/// A row that needs no change. Written by an earlier run that crashed before its report
/// line (its before-value recovered from the journal or the report): reported as that
/// write, so the report stays a complete undo file.
fn settled_unchanged(mut record: RowRecord, row: &Row, shared: &Shared) -> RowRecord {
    record.status = Status::Unchanged;
    record.changed_fields = Default::default();
    record.after = record.before.clone();
    if let Some(before) = shared
        .recovered
        .as_ref()
        .and_then(|r| r.get(&row.id.as_u128()))
        && let Some(after) = record.after.as_ref()
        && !differing(before, after).is_empty()
    {
        record.status = Status::Updated;
        record.changed_fields = differing(before, after);
        record.before = Some(before.clone());
    }
    record
}

/// Not written: the gateway no longer looks as the reviewed plan saw it.
fn conflict(mut record: RowRecord, now: GatewayFields, moved: &crate::diff::FieldSet) -> RowRecord {
    record.status = Status::Conflict;
    record.error_code = "conflict".into();
    record.error = format!(
        "not written: the gateway changed since the plan was made ({} differ); plan again \
         to review it",
        moved.to_string().replace(';', ", ")
    );
    record.before = Some(now);
    record
}

/// Writes a row that differs. Every attempt waits for its write slot, then reads the
/// gateway afresh and builds the PATCH from that read, so an edit someone else made while
/// the row waited survives (the window left is the read's round trip: the API has no
/// conditional PATCH). The fresh read also settles an attempt whose answer was lost: as
/// desired means it landed; otherwise it is sent again. At most the retry policy's
/// attempts in PATCHes a row ([`WriteClient::schedule`]), within its total time. Once
/// a PATCH may have landed, the row's `before` is fixed to the read that preceded it; a
/// row that then stops is read once more, and unless that read shows the gateway as it
/// was (nothing landed) or as desired, it is `write_unknown`: it stays in the rollback.
async fn write_fresh(
    mut record: RowRecord,
    row: &Row,
    shared: &Shared,
    writer: &WriteClient,
    original: Option<GatewayFields>,
) -> RowRecord {
    // The undo value once something of ours (or an earlier run's) may have landed.
    if let Some(original) = &original {
        record.before = Some(original.clone());
    }
    let mut fixed_before = original;
    let mut unanswered = 0u32;
    let mut patches = 0u32;
    let mut journaled = false;
    let mut schedule = writer.schedule();
    loop {
        if let Err(err) = writer.slot().await {
            return gave_up(record, err, &fixed_before, unanswered, &shared.stopper);
        }
        if patches > 0 {
            // The read of a second attempt is part of its retry.
            shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let now = match shared.reader.get_gateway(&row.id).await {
            Ok(reply) => {
                record.attempts += reply.attempts;
                record.http_status = Some(reply.status);
                reply.value.sip_gateway
            }
            Err(err) => return gave_up(record, err, &fixed_before, unanswered, &shared.stopper),
        };
        let desired = merge(&now, &row.desired);
        let changes = differing(&now, &desired);
        let before = fixed_before.clone().unwrap_or_else(|| now.clone());
        if changes.is_empty() {
            // As desired: our lost answer's PATCH landed, or someone else got there first.
            record.after = Some(now.clone());
            record.changed_fields = differing(&before, &now);
            record.status = if record.changed_fields.is_empty() {
                Status::Unchanged
            } else {
                Status::Updated
            };
            record.before = Some(before);
            return record;
        }
        if let Some(expected) = &row.expected {
            let moved = differing(expected, &now);
            if !moved.is_empty() && unanswered == 0 && fixed_before.is_none() {
                return conflict(record, now, &moved);
            }
            if !moved.is_empty() {
                record.before = Some(before);
                return unknown(
                    record,
                    "not written again: an earlier PATCH's answer was lost and the gateway \
                     now differs from both the plan's before and after"
                        .into(),
                );
            }
        }
        record.before = Some(before.clone());
        record.changed_fields = changes;
        if !journaled && let Some(journal) = shared.journal.as_ref() {
            if let Err(e) = journal.record(&row.id, &before) {
                shared.stopper.ledger_failed(format!(
                    "cannot write journal {}: {e}",
                    journal.path().display()
                ));
                return shared
                    .stopper
                    .skipped(row.seq, row.line, row.id.hyphenated().to_string());
            }
            journaled = true;
        }
        patches += 1;
        let mut err = match writer.patch_once(&row.id, &desired, patches).await {
            Ok(reply) => return answered(record, &desired, reply.status, reply.value.sip_gateway),
            Err(err) => err,
        };
        // Counted here, once: the failure paths below add only other requests' attempts.
        record.attempts += u32::from(err.attempts > 0);
        err.attempts = 0;
        record.http_status = err.status;
        if err.maybe_applied {
            unanswered += 1;
            fixed_before = Some(before);
            tracing::debug!(code = %err.code, "the PATCH may have landed: reading it back next");
        } else if !err.retryable() {
            return gave_up(record, err, &fixed_before, unanswered, &shared.stopper);
        }
        match writer.wait_before_retry(&mut schedule, &err) {
            Some(wait) => tokio::time::sleep(wait).await,
            None if unanswered > 0 => return settle(record, row, err, shared).await,
            None => return gave_up(record, err, &fixed_before, unanswered, &shared.stopper),
        }
    }
}

/// The row's time or attempts ran out right after a PATCH whose answer was lost: one
/// more read says what became of it. As desired: `updated`. Unmoved from `before`: a
/// plain failure. Anything else: `write_unknown`, in the rollback.
async fn settle(mut record: RowRecord, row: &Row, err: ApiError, shared: &Shared) -> RowRecord {
    shared.stats.retries.fetch_add(1, Ordering::Relaxed);
    let now = match shared.reader.get_gateway(&row.id).await {
        Ok(reply) => {
            record.attempts += reply.attempts;
            reply.value.sip_gateway
        }
        Err(read_err) => {
            record.attempts += read_err.attempts;
            let message = format!(
                "the PATCH may have been applied: {} ({}); reading the gateway back failed \
                 too: {}",
                err.message, err.code, read_err.message
            );
            return unknown(record, message);
        }
    };
    if differing(&now, &merge(&now, &row.desired)).is_empty() {
        let before = record.before.clone().unwrap_or_else(|| now.clone());
        record.changed_fields = differing(&before, &now);
        record.status = Status::Updated;
        record.after = Some(now);
        return record;
    }
    if record.before.as_ref() == Some(&now) {
        return failed(record, err, &shared.stopper);
    }
    let message = format!(
        "the PATCH may have been applied in part: {} ({}), and the gateway is now neither \
         as it was nor as desired",
        err.message, err.code
    );
    unknown(record, message)
}

/// The server answered the PATCH: `updated` when the answer is what was sent, otherwise
/// `mismatch`, reported rather than hidden.
fn answered(
    mut record: RowRecord,
    desired: &GatewayFields,
    status: u16,
    answer: GatewayFields,
) -> RowRecord {
    record.attempts += 1;
    record.http_status = Some(status);
    let differs = differing(desired, &answer);
    if differs.is_empty() {
        record.status = Status::Updated;
    } else {
        record.status = Status::Mismatch;
        record.error_code = "mismatch".into();
        record.error = format!(
            "the server's answer differs from what was sent in: {}",
            differs.to_string().replace(';', ", ")
        );
    }
    record.after = Some(answer);
    record
}

/// A row that stops: a plain failure when nothing of this run may have landed; otherwise
/// `write_unknown` with the before-value fixed when it might have.
fn gave_up(
    mut record: RowRecord,
    err: ApiError,
    fixed_before: &Option<GatewayFields>,
    unanswered: u32,
    stopper: &Stopper,
) -> RowRecord {
    if unanswered == 0 {
        return failed(record, err, stopper);
    }
    record.attempts += err.attempts;
    record.before = fixed_before.clone().or(record.before);
    let message = format!(
        "a PATCH may have been applied (its answer was lost) and the row could not be \
         settled: {} ({})",
        err.message, err.code
    );
    unknown(record, message)
}

/// Marks a row whose PATCH may have landed: `failed`, `write_unknown`, its `before` kept
/// for the rollback and a later `--resume`.
fn unknown(mut record: RowRecord, message: String) -> RowRecord {
    record.status = Status::Failed;
    record.error_code = WRITE_UNKNOWN.into();
    record.error = message;
    record
}

/// Fills a record from a failed request. The attempts of earlier requests are kept.
fn failed(mut record: RowRecord, err: ApiError, stopper: &Stopper) -> RowRecord {
    record.attempts += err.attempts;
    record.http_status = err.status;
    record.status = match err.kind {
        ErrorKind::NotFound => Status::NotFound,
        ErrorKind::Aborted => {
            let (code, note) = stopper
                .reason()
                .unwrap_or(StopReason::Unauthorized)
                .skip_note();
            record.error_code = code.into();
            record.error = note.into();
            record.status = Status::Skipped;
            return record;
        }
        _ => Status::Failed,
    };
    record.error_code = err.code;
    record.error = err.message;
    record
}

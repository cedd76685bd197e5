//! The pipeline: manifest stream -> bounded channel -> a fixed pool of `concurrency`
//! workers -> one report writer.
//!
//! ```text
//!  reader thread ──rows──▶ worker 1..N ──records──▶ writer thread ──▶ report file
//!        └──────────── invalid / skipped rows ─────────▲
//! ```
//!
//! Memory is set by the channel sizes, not by the manifest. Every row the reader yields
//! ends as exactly one record: a worker's result, or `invalid`/`skipped` straight from the
//! reader. Plan and apply are one loop: apply has a [`WriteClient`], plan does not.

use std::collections::HashMap;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{Mutex, mpsc};
use tokio_util::sync::CancellationToken;

use crate::client::{ApiError, ErrorKind, ReadClient, RequestStats, WriteClient};
use crate::diff::{differing, merge};
use crate::manifest::{Manifest, ManifestError, Row};
use crate::report::{ReportWriter, RowRecord, Status};

/// How a job runs.
pub struct Job {
    pub manifest: Manifest,
    pub reader: ReadClient,
    /// `Some` for apply; `None` makes a plan that cannot write.
    pub writer: Option<WriteClient>,
    pub report: ReportWriter,
    /// Rows in flight at most.
    pub concurrency: usize,
    /// Tripped by the client on 401/403: no new requests, untried rows `skipped`.
    pub abort: CancellationToken,
    pub stats: Arc<RequestStats>,
}

/// What a finished job tells the caller.
#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub counts: HashMap<Status, u64>,
    pub rows: u64,
    pub elapsed: Duration,
    pub requests: u64,
    pub retries: u64,
    pub writes: u64,
    /// The job stopped early because the server refused the credentials.
    pub aborted: bool,
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
    #[error("cannot write the report: {0}")]
    Report(#[source] std::io::Error),
    #[error("internal error: {0}")]
    Internal(String),
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
        stats,
    } = job;
    let concurrency = concurrency.max(1);
    let (row_tx, row_rx) = mpsc::channel::<Row>(concurrency * 2);
    let (record_tx, mut record_rx) = mpsc::channel::<RowRecord>(1024);

    // The writer: the only owner of the report file.
    let write_task = tokio::task::spawn_blocking(move || {
        let mut counts: HashMap<Status, u64> = HashMap::new();
        while let Some(record) = record_rx.blocking_recv() {
            report.write(&record).map_err(JobError::Report)?;
            *counts.entry(record.status).or_default() += 1;
        }
        Ok::<_, JobError>(counts)
    });

    // The reader: checks rows and feeds the workers; invalid rows go straight to the report.
    let read_task = {
        let record_tx = record_tx.clone();
        let abort = abort.clone();
        tokio::task::spawn_blocking(move || {
            manifest.read(|checked| {
                // A send fails only when the other side is gone (the writer failed).
                let sent = match checked {
                    Ok(row) if abort.is_cancelled() => {
                        record_tx.blocking_send(skipped(&row)).map_err(drop)
                    }
                    Ok(row) => row_tx.blocking_send(row).map_err(drop),
                    Err(bad) => record_tx
                        .blocking_send(RowRecord::bare(
                            bad.line,
                            bad.id,
                            Status::Invalid,
                            "invalid",
                            bad.message,
                        ))
                        .map_err(drop),
                };
                if sent.is_err() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
        })
    };

    let row_rx = Arc::new(Mutex::new(row_rx));
    let mut workers = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        let row_rx = Arc::clone(&row_rx);
        let record_tx = record_tx.clone();
        let reader = reader.clone();
        let writer = writer.clone();
        let abort = abort.clone();
        workers.push(tokio::spawn(async move {
            loop {
                let next = row_rx.lock().await.recv().await;
                let Some(row) = next else { break };
                let record = reconcile(&row, &reader, writer.as_ref(), &abort).await;
                if record_tx.send(record).await.is_err() {
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
    let counts = write_task
        .await
        .map_err(|e| JobError::Internal(e.to_string()))??;
    let read_stats = read_result?;

    Ok(Outcome {
        rows: read_stats.rows,
        counts,
        elapsed: started.elapsed(),
        requests: stats.requests.load(Ordering::Relaxed),
        retries: stats.retries.load(Ordering::Relaxed),
        writes: stats.writes.load(Ordering::Relaxed),
        aborted: abort.is_cancelled(),
    })
}

fn skipped(row: &Row) -> RowRecord {
    RowRecord::bare(
        row.line,
        row.id.hyphenated().to_string(),
        Status::Skipped,
        "aborted",
        "not attempted: the job stopped after the server refused the credentials".into(),
    )
}

/// One row: read, diff, and write when it differs (and a writer was given).
async fn reconcile(
    row: &Row,
    reader: &ReadClient,
    writer: Option<&WriteClient>,
    abort: &CancellationToken,
) -> RowRecord {
    if abort.is_cancelled() {
        return skipped(row);
    }
    let started = Instant::now();
    let mut record = RowRecord::bare(
        row.line,
        row.id.hyphenated().to_string(),
        Status::Failed,
        "",
        String::new(),
    );
    let finish = |mut record: RowRecord| {
        record.duration_ms = started.elapsed().as_millis() as u64;
        record
    };

    let current = match reader.get_gateway(&row.id).await {
        Ok(reply) => {
            record.attempts = reply.attempts;
            record.http_status = Some(reply.status);
            reply.value.sip_gateway
        }
        Err(err) => return finish(failed(record, err)),
    };
    let desired = merge(&current, &row.desired);
    record.changed_fields = differing(&current, &desired);
    record.before = Some(current);
    if record.changed_fields.is_empty() {
        record.status = Status::Unchanged;
        record.after = record.before.clone();
        return finish(record);
    }
    let Some(writer) = writer else {
        record.status = Status::WouldUpdate;
        record.after = Some(desired);
        return finish(record);
    };
    match writer.update_gateway(&row.id, &desired).await {
        Ok(reply) => {
            record.attempts += reply.attempts;
            record.http_status = Some(reply.status);
            let answered = reply.value.sip_gateway;
            let differs = differing(&desired, &answered);
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
            record.after = Some(answered);
            finish(record)
        }
        Err(err) => finish(failed(record, err)),
    }
}

/// Fills a record from a failed request. The attempts of earlier requests are kept.
fn failed(mut record: RowRecord, err: ApiError) -> RowRecord {
    record.attempts += err.attempts;
    record.http_status = err.status;
    record.status = match err.kind {
        ErrorKind::NotFound => Status::NotFound,
        ErrorKind::Aborted => Status::Skipped,
        _ => Status::Failed,
    };
    record.error_code = err.code;
    record.error = err.message;
    record
}

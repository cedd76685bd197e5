//! The pool: a worker for each row under way ([`super::rows_in_flight`]) takes rows from
//! one queue, each row reconciled to its record, and the records sent to the recorder. A failed or mismatched row counts
//! toward `--max-errors`, which stops the job when reached.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;
use tracing::Instrument;

use super::reader::Work;
use super::recorder::Event;
use super::{Shared, StopReason, row};
use crate::limiter::Limiter;
use crate::report::RowRecord;
use crate::status::Status;

pub(super) fn spawn(
    rows_in_flight: usize,
    rows: mpsc::Receiver<Work>,
    records: mpsc::Sender<Event>,
    shared: &Arc<Shared>,
) -> Vec<JoinHandle<()>> {
    let rows = Arc::new(Mutex::new(rows));
    (0..rows_in_flight)
        .map(|_| {
            let rows = Arc::clone(&rows);
            let records = records.clone();
            let shared = Arc::clone(shared);
            tokio::spawn(async move { work(&rows, &records, &shared).await })
        })
        .collect()
}

async fn work(rows: &Mutex<mpsc::Receiver<Work>>, records: &mpsc::Sender<Event>, shared: &Shared) {
    let limiter = shared.reader.limiter();
    loop {
        // A place at work first: a worker waiting for one holds no row.
        let place = limiter.place_at_work().await;
        // The canary's turn is dealt under the queue's lock: in the order rows were sent.
        let next = {
            let mut queue = rows.lock().await;
            let next = queue.recv().await;
            next.map(|work| (work, shared.canary.as_ref().map(|c| c.deal())))
        };
        let Some(((row, listed), turn)) = next else {
            break;
        };
        // At debug level: a span costs an allocation per row even when nothing in it is
        // logged; with -v, every retry and row log line carries it.
        let span = tracing::debug_span!("row", line = row.line, id = %row.id);
        let working = row::reconcile(&row, listed, turn, shared).instrument(span);
        let record = Limiter::at_work(place, working).await;
        let mut record = row::keep_possible_write(record, &row, shared);
        record.project = shared.project_id(&row);
        shared.project_abort_note(&row, &mut record);
        count_error(&record, shared);
        if records.send(Event::Record(record)).await.is_err() {
            break;
        }
    }
}

/// Stops the job once `--max-errors` rows have failed.
fn count_error(record: &RowRecord, shared: &Shared) {
    if matches!(record.status, Status::Failed | Status::Mismatch)
        && let Some(max) = shared.max_errors
        && shared.errors.fetch_add(1, Ordering::Relaxed) + 1 >= max
    {
        shared.stopper.stop(StopReason::ErrorLimit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: Status) -> RowRecord {
        RowRecord::bare(0, 2, "id".into(), status, "", String::new())
    }

    #[test]
    fn the_error_budget_stops_the_job_at_its_count_of_failed_or_mismatched_rows() {
        let mut shared = super::super::tests::shared();
        shared.max_errors = Some(2);
        for status in [
            Status::Updated,
            Status::NotFound,
            Status::Conflict,
            Status::Failed,
        ] {
            count_error(&record(status), &shared);
        }
        assert_eq!(
            shared.stopper.reason(),
            None,
            "one failure of the two allowed"
        );
        count_error(&record(Status::Mismatch), &shared);
        assert_eq!(shared.stopper.reason(), Some(StopReason::ErrorLimit));

        let unlimited = super::super::tests::shared();
        for _ in 0..10 {
            count_error(&record(Status::Failed), &unlimited);
        }
        assert_eq!(unlimited.stopper.reason(), None);
    }
}

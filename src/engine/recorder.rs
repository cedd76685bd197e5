//! The report's only writer, on a thread of its own: each record goes to the report, the
//! counts and the observers, in that order. It writes whatever records are waiting, then
//! flushes before it waits again: every finished row reaches the file within one batch
//! (never more than 256 rows, and at once when the job is quiet), without a write system
//! call per row when rows finish by the thousand.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Observer, Shared, SlowRow};
use crate::report::{ReportWriter, RowRecord};
use crate::status::ErrorCode;
use crate::status::Status;

/// What the recorder receives.
// Records are nearly every event; boxing them would allocate per row to shrink a rare one.
#[allow(clippy::large_enum_variant)]
pub(super) enum Event {
    Record(RowRecord),
    /// A row passed over without a record (done in an earlier run, or another shard's).
    Passed(u64),
}

/// Records at most this many rows between two flushes.
const BATCH: usize = 256;
/// Fewer than this many waiting: rows are trickling in, let a few gather.
const TRICKLE: usize = 16;

pub(super) struct Recorder {
    report: ReportWriter,
    observer: Option<Box<dyn Observer>>,
    tally: Tally,
}

impl Recorder {
    pub(super) fn new(report: ReportWriter, observer: Option<Box<dyn Observer>>) -> Recorder {
        Recorder {
            report,
            observer,
            tally: Tally::default(),
        }
    }

    /// Records until every sender is gone. A report that cannot be written stops the job
    /// and the recorder keeps draining, so no worker waits on it forever.
    pub(super) fn spawn(
        mut self,
        mut events: mpsc::Receiver<Event>,
        shared: Arc<Shared>,
    ) -> JoinHandle<Tally> {
        tokio::task::spawn_blocking(move || {
            let mut alive = true;
            while let Some(event) = events.blocking_recv() {
                if !alive {
                    continue;
                }
                let (written, batch) = self.batch(event, &mut events);
                if let Err(e) = written.and_then(|()| self.report.flush()) {
                    alive = false;
                    shared.stopper.ledger_failed(self.cannot_write(e));
                    continue;
                }
                if batch < TRICKLE {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
            let Recorder { report, tally, .. } = self;
            let path = report.path().to_owned();
            if alive && let Err(e) = report.close() {
                shared
                    .stopper
                    .ledger_failed(format!("cannot write report {}: {e}", path.display()));
            }
            tally
        })
    }

    /// `first` and whatever else is waiting, up to a batch: the first error, and how many.
    fn batch(
        &mut self,
        first: Event,
        events: &mut mpsc::Receiver<Event>,
    ) -> (std::io::Result<()>, usize) {
        let mut written = self.record(first);
        let mut batch = 1;
        while batch < BATCH && written.is_ok() {
            match events.try_recv() {
                Ok(event) => written = self.record(event),
                Err(_) => break,
            }
            batch += 1;
        }
        (written, batch)
    }

    fn record(&mut self, event: Event) -> std::io::Result<()> {
        match event {
            Event::Record(record) => {
                self.report.write(&record)?;
                self.tally.count(&record);
                if let Some(o) = self.observer.as_mut() {
                    o.record(&record);
                }
            }
            Event::Passed(seq) => {
                if let Some(o) = self.observer.as_mut() {
                    o.passed(seq);
                }
            }
        }
        Ok(())
    }

    fn cannot_write(&self, e: std::io::Error) -> String {
        format!("cannot write report {}: {e}", self.report.path().display())
    }
}

/// What the writer counts as records reach the report.
#[derive(Default)]
pub(super) struct Tally {
    pub(super) counts: HashMap<Status, u64>,
    /// Several projects: the counts per project id (bounded by the projects file).
    pub(super) per_project: std::collections::BTreeMap<String, HashMap<Status, u64>>,
    pub(super) unsettled: Vec<u128>,
    pub(super) slowest: Option<SlowRow>,
}

impl Tally {
    fn count(&mut self, record: &RowRecord) {
        *self.counts.entry(record.status).or_default() += 1;
        if let Some(project) = &record.project {
            let counts = self.per_project.entry(project.clone()).or_default();
            *counts.entry(record.status).or_default() += 1;
        }
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
        if record.error_code == ErrorCode::WriteUnknown
            && let Ok(id) = uuid::Uuid::try_parse(&record.id)
        {
            self.unsettled.push(id.as_u128());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{ReportFormat, read_report};
    use std::sync::Mutex;

    fn record(seq: u64, status: Status, attempts: u32, ms: u64) -> RowRecord {
        let id = crate::sandbox::generated_ids(seq + 1, 5)[seq as usize].to_string();
        let mut r = RowRecord::bare(seq, seq + 2, id, status, "", String::new());
        r.attempts = attempts;
        r.duration_ms = ms;
        r
    }

    #[test]
    fn the_tally_counts_statuses_the_slowest_read_row_and_unsettled_writes() {
        let mut t = Tally::default();
        t.count(&record(0, Status::Updated, 1, 30));
        // Slower, but never sent: no request of its own, not the slowest row.
        t.count(&record(1, Status::Invalid, 0, 90));
        t.count(&record(2, Status::Updated, 2, 30));
        let mut unknown = record(3, Status::Failed, 3, 50);
        unknown.error_code = ErrorCode::WriteUnknown;
        t.count(&unknown);
        let mut bad_id = record(4, Status::Failed, 1, 10);
        bad_id.error_code = ErrorCode::WriteUnknown;
        bad_id.id = "not-a-uuid".into();
        t.count(&bad_id);
        assert_eq!(t.counts[&Status::Updated], 2);
        assert_eq!(t.counts[&Status::Failed], 2);
        assert_eq!(t.counts[&Status::Invalid], 1);
        let slowest = t.slowest.unwrap();
        assert_eq!((slowest.line, slowest.duration_ms), (5, 50));
        let id = uuid::Uuid::try_parse(&unknown.id).unwrap().as_u128();
        assert_eq!(t.unsettled, [id]);
    }

    /// Sees what reaches it, in order.
    struct Seen(Arc<Mutex<Vec<String>>>);
    impl Observer for Seen {
        fn record(&mut self, record: &RowRecord) {
            self.0.lock().unwrap().push(format!("r{}", record.seq));
        }
        fn passed(&mut self, seq: u64) {
            self.0.lock().unwrap().push(format!("p{seq}"));
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_record_reaches_the_report_the_counts_and_the_observer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let report = ReportWriter::create(&path, ReportFormat::Csv).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder::new(report, Some(Box::new(Seen(Arc::clone(&seen)))));
        let shared = Arc::new(super::super::tests::shared());
        let (tx, rx) = mpsc::channel(1024);
        let done = recorder.spawn(rx, Arc::clone(&shared));
        // More than a batch at once, then a trickle.
        for seq in 0..600 {
            tx.send(Event::Record(record(seq, Status::Unchanged, 1, 1)))
                .await
                .unwrap();
        }
        tx.send(Event::Passed(600)).await.unwrap();
        tx.send(Event::Record(record(601, Status::Updated, 1, 1)))
            .await
            .unwrap();
        drop(tx);
        let tally = done.await.unwrap();
        assert_eq!(tally.counts[&Status::Unchanged], 600);
        assert_eq!(tally.counts[&Status::Updated], 1);
        let rows = read_report(&path).unwrap();
        assert_eq!(rows.len(), 601);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 602);
        assert_eq!(seen[600], "p600");
        assert_eq!(seen[601], "r601");
        assert_eq!(shared.stopper.reason(), None);
    }

    #[test]
    fn a_report_that_cannot_be_written_is_named_with_its_cause() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.csv");
        let report = ReportWriter::create(&path, ReportFormat::Csv).unwrap();
        let recorder = Recorder::new(report, None);
        let said = recorder.cannot_write(std::io::Error::other("disk full"));
        assert_eq!(
            said,
            format!("cannot write report {}: disk full", path.display())
        );
    }
}

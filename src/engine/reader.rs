//! The manifest's thread: checks each row and routes it. A row of this shard that is not
//! done yet goes to the workers (with the snapshot's fields when the space was read in
//! pages); an invalid row, a row `--only`/`--skip` did not choose, and every row once the
//! job stops, go straight to the report; a row done earlier or another shard's is passed
//! over.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::Shared;
use super::recorder::Event;
use crate::ledger::IdSet;
use crate::manifest::{CheckedRow, Manifest, ManifestError, Row};
use crate::model::GatewayFields;
use crate::report::RowRecord;
use crate::selection::{NOT_SELECTED, Selection};
use crate::shard::Shard;
use crate::snapshot::Snapshot;
use crate::status::Status;

/// A row for the workers, with its fields from the snapshot when it holds them.
pub(super) type Work = (Row, Option<GatewayFields>);

/// What the reader needs.
pub(super) struct RowReader {
    pub(super) manifest: Manifest,
    pub(super) shard: Option<Shard>,
    pub(super) selection: Option<Arc<Selection>>,
    /// Ids (as u128) done in an earlier run.
    pub(super) done: Option<Arc<IdSet>>,
    pub(super) snapshot: Option<Arc<Snapshot>>,
}

/// What the reader counted.
#[derive(Debug, Default)]
pub(super) struct ReadTotals {
    /// Rows in the manifest.
    pub(super) rows: u64,
    pub(super) already_done: u64,
    pub(super) other_shards: u64,
    pub(super) not_selected: u64,
}

/// Where a row goes.
enum Route {
    Workers(Row),
    Report(Event),
}

impl RowReader {
    pub(super) fn spawn(
        self,
        rows: mpsc::Sender<Work>,
        records: mpsc::Sender<Event>,
        shared: Arc<Shared>,
    ) -> JoinHandle<Result<ReadTotals, ManifestError>> {
        tokio::task::spawn_blocking(move || {
            let mut totals = ReadTotals::default();
            let stats = self.manifest.read(|checked| {
                let sent = match self.route(checked, &shared, &mut totals) {
                    Route::Workers(row) => self.to_workers(row, &rows),
                    Route::Report(event) => records.blocking_send(event).is_ok(),
                };
                // A send fails only when the receivers are gone (the report failed).
                if sent {
                    ControlFlow::Continue(())
                } else {
                    ControlFlow::Break(())
                }
            })?;
            totals.rows = stats.rows;
            Ok(totals)
        })
    }

    fn route(&self, checked: CheckedRow, shared: &Shared, totals: &mut ReadTotals) -> Route {
        let seq = match &checked {
            Ok(row) => row.seq,
            Err(bad) => bad.seq,
        };
        // A row naming a project the run has no credentials for cannot run.
        let checked = checked.and_then(|row| match shared.unknown_project(&row) {
            Some(message) => Err(crate::manifest::InvalidRow {
                seq: row.seq,
                line: row.line,
                id: row.id.hyphenated().to_string(),
                message,
            }),
            None => Ok(row),
        });
        let project = checked.as_ref().ok().and_then(|row| shared.project_id(row));
        let mut route = self.route_checked(checked, seq, shared, totals);
        if let Route::Report(Event::Record(record)) = &mut route {
            record.project = project;
        }
        route
    }

    fn route_checked(
        &self,
        checked: CheckedRow,
        seq: u64,
        shared: &Shared,
        totals: &mut ReadTotals,
    ) -> Route {
        if self.is_foreign(&checked) {
            totals.other_shards += 1;
            return Route::Report(Event::Passed(seq));
        }
        if let Some(why) = self.not_chosen(&checked) {
            totals.not_selected += 1;
            let (line, id) = match checked {
                Ok(row) => (row.line, row.id.hyphenated().to_string()),
                Err(bad) => (bad.line, bad.id),
            };
            let record = RowRecord::bare(seq, line, id, Status::Skipped, NOT_SELECTED, why.into());
            return Route::Report(Event::Record(record));
        }
        match checked {
            Ok(row) if self.is_done(&row) => {
                totals.already_done += 1;
                Route::Report(Event::Passed(seq))
            }
            Ok(row) if shared.stopper.reason().is_none() => Route::Workers(row),
            Ok(row) => {
                let id = row.id.hyphenated().to_string();
                Route::Report(Event::Record(shared.stopper.skipped(row.seq, row.line, id)))
            }
            Err(bad) => Route::Report(Event::Record(RowRecord::bare(
                bad.seq,
                bad.line,
                bad.id,
                Status::Invalid,
                "invalid",
                bad.message,
            ))),
        }
    }

    /// Another shard's row (an invalid one too: its shard is its id's, as written).
    fn is_foreign(&self, checked: &CheckedRow) -> bool {
        match (checked, self.shard) {
            (_, None) => false,
            (Ok(row), Some(s)) => !s.owns(&row.id.hyphenated().to_string()),
            (Err(bad), Some(s)) => !s.owns(&bad.id),
        }
    }

    /// Why `--only`/`--skip` did not choose this row, if they did not.
    fn not_chosen(&self, checked: &CheckedRow) -> Option<&'static str> {
        let selection = self.selection.as_ref()?;
        match checked {
            Ok(row) => selection.passes_over_uuid(row.id),
            Err(bad) => selection.passes_over(&bad.id),
        }
    }

    fn is_done(&self, row: &Row) -> bool {
        self.done
            .as_ref()
            .is_some_and(|d| d.contains(&row.id.as_u128()))
    }

    fn to_workers(&self, row: Row, rows: &mpsc::Sender<Work>) -> bool {
        // When the queue is full, nap instead of blocking on it: a blocked sender is woken
        // for every row a worker takes, a thread switch per row; a 1 ms nap refills it in
        // one go.
        while rows.capacity() == 0 && !rows.is_closed() {
            std::thread::sleep(Duration::from_millis(1));
        }
        // The snapshot is a file: looked up here, off the workers' threads.
        let listed = self.snapshot.as_ref().and_then(|s| s.get(&row.id));
        rows.blocking_send((row, listed)).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::super::StopReason;
    use super::*;
    use crate::manifest::InvalidRow;
    use crate::model::Desired;

    fn row(seq: u64, id: uuid::Uuid) -> CheckedRow {
        Ok(Row {
            seq,
            line: seq + 2,
            id,
            desired: Desired::default(),
            expected: None,
            project: None,
        })
    }

    fn reader(shard: Option<Shard>, done: Vec<u128>) -> (RowReader, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.csv");
        std::fs::write(&path, "id\n").unwrap();
        let reader = RowReader {
            manifest: Manifest::open(&path, None).unwrap(),
            shard,
            selection: None,
            done: Some(Arc::new(IdSet::from(done))),
            snapshot: None,
        };
        (reader, dir)
    }

    fn kind(route: Route) -> String {
        match route {
            Route::Workers(row) => format!("work {}", row.seq),
            Route::Report(Event::Passed(seq)) => format!("pass {seq}"),
            Route::Report(Event::Record(r)) => format!("{} {} {}", r.status, r.seq, r.error_code),
        }
    }

    #[test]
    fn each_row_goes_to_the_workers_the_report_or_past_it() {
        let shared = super::super::tests::shared();
        let ids = crate::sandbox::generated_ids(40, 3);
        let shard: Shard = "0/2".parse().unwrap();
        let mine: Vec<_> = ids.iter().filter(|i| shard.owns(&i.to_string())).collect();
        let theirs: Vec<_> = ids.iter().filter(|i| !shard.owns(&i.to_string())).collect();
        let (reader, _dir) = reader(Some(shard), vec![mine[1].as_u128()]);
        let mut totals = ReadTotals::default();
        let mut route = |c: CheckedRow| kind(reader.route(c, &shared, &mut totals));
        assert_eq!(route(row(0, *mine[0])), "work 0");
        assert_eq!(route(row(1, *mine[1])), "pass 1", "done in an earlier run");
        assert_eq!(route(row(2, *theirs[0])), "pass 2", "another shard's");
        let bad = |seq, id: String| {
            Err(InvalidRow {
                seq,
                line: seq + 2,
                id,
                message: "bad".into(),
            })
        };
        assert_eq!(route(bad(3, mine[2].to_string())), "invalid 3 invalid");
        assert_eq!(
            route(bad(4, theirs[1].to_string())),
            "pass 4",
            "its shard is its id's"
        );
        shared.stopper.stop(StopReason::ErrorLimit);
        assert_eq!(route(row(5, *mine[3])), "skipped 5 max_errors");
        assert_eq!(
            route(row(6, *mine[1])),
            "pass 6",
            "done rows pass even when stopped"
        );
        assert_eq!((totals.already_done, totals.other_shards), (2, 2));
    }

    #[test]
    fn rows_not_chosen_go_to_the_report_as_skipped_even_invalid_ones() {
        let shared = super::super::tests::shared();
        let ids = crate::sandbox::generated_ids(4, 5);
        let (mut reader, _dir) = reader(None, vec![ids[3].as_u128()]);
        let chosen = [ids[0].to_string(), ids[3].to_string()];
        let selection = Selection::from_flags(&chosen, &[]).unwrap();
        reader.selection = selection.map(Arc::new);
        let mut totals = ReadTotals::default();
        let mut route = |c: CheckedRow| kind(reader.route(c, &shared, &mut totals));
        assert_eq!(route(row(0, ids[0])), "work 0");
        assert_eq!(route(row(1, ids[1])), "skipped 1 not_selected");
        let bad = Err(InvalidRow {
            seq: 2,
            line: 4,
            id: ids[2].to_string(),
            message: "bad".into(),
        });
        assert_eq!(
            route(bad),
            "skipped 2 not_selected",
            "not chosen: not invalid"
        );
        assert_eq!(route(row(3, ids[3])), "pass 3", "chosen and done earlier");
        assert_eq!((totals.not_selected, totals.already_done), (2, 1));
    }

    #[test]
    fn without_a_shard_every_row_is_this_run_s() {
        let shared = super::super::tests::shared();
        let (reader, _dir) = reader(None, Vec::new());
        let mut totals = ReadTotals::default();
        for (seq, id) in crate::sandbox::generated_ids(20, 4).into_iter().enumerate() {
            assert!(!reader.is_foreign(&row(seq as u64, id)));
            let route = reader.route(row(seq as u64, id), &shared, &mut totals);
            assert_eq!(kind(route), format!("work {seq}"));
        }
        assert_eq!((totals.already_done, totals.other_shards), (0, 0));
    }
}

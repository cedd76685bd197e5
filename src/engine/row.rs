//! One row: read the gateway (or take the snapshot's fields), diff it against the row,
//! and decide: unchanged, a conflict with the reviewed plan, held by the canary, a change
//! a plan shows, or a write ([`super::write`]).

use std::time::{Duration, Instant};

use super::Shared;
use super::canary::Turn;
use super::verdict::{conflict, failed, possibly_written_earlier};
use super::write::{FirstRead, write};
use crate::client::ApiError;
use crate::diff::{FieldSet, differing, merge};
use crate::manifest::Row;
use crate::model::GatewayFields;
use crate::report::RowRecord;
use crate::status::ErrorCode;
use crate::status::Status;

/// A row an earlier run of this report may have written (its before-value recovered from
/// the journal or the report) that this run could not even read (skipped, or its GET
/// failed) stays marked `write_unknown` with that before-value and what that write may
/// have left: the report alone still undoes it. One carried from the chain's previous
/// report is not: this run wrote nothing to it, and that report undoes it. (A row this run
/// did read is judged in [`reconcile`]: by whether the gateway moved since.)
pub(super) fn keep_possible_write(record: RowRecord, row: &Row, shared: &Shared) -> RowRecord {
    let unread = matches!(record.status, Status::Skipped | Status::Failed)
        && record.before.is_none()
        && record.error_code != ErrorCode::WriteUnknown;
    match shared
        .recovered
        .as_ref()
        .and_then(|r| r.get(&row.id.as_u128()))
        .and_then(|w| w.unread())
    {
        Some(earlier) if unread => {
            let mut record = possibly_written_earlier(record);
            record.before = Some(earlier.before.clone());
            record.after = earlier.after.clone();
            record
        }
        _ => record,
    }
}

/// One row to its record, timed. A row that starts after the job stopped is `skipped`.
pub(super) async fn reconcile(
    row: &Row,
    listed: Option<GatewayFields>,
    turn: Option<Turn<'_>>,
    shared: &Shared,
) -> RowRecord {
    let id = row.id.hyphenated().to_string();
    if shared.stopper.reason().is_some() {
        return shared.stopper.skipped(row.seq, row.line, id);
    }
    let started = Instant::now();
    let record = RowRecord::bare(row.seq, row.line, id, Status::Failed, "", String::new());
    let mut record = decide(record, row, listed, turn, shared).await;
    record.duration_ms = started.elapsed().as_millis() as u64;
    tracing::debug!(status = %record.status, attempts = record.attempts, "row done");
    record
}

/// Reads (or takes `listed`), diffs, and writes when the row differs and a writer was
/// given.
async fn decide(
    mut record: RowRecord,
    row: &Row,
    listed: Option<GatewayFields>,
    turn: Option<Turn<'_>>,
    shared: &Shared,
) -> RowRecord {
    let from_listing = listed.is_some();
    let (current, timed) = match read_current(&mut record, row, listed, shared).await {
        Ok(read) => read,
        Err(err) => return failed(record, err, &shared.stopper),
    };
    let desired = merge(&current, &row.desired);
    record.changed_fields = differing(&current, &desired);
    // A write of this report's earlier run (or the chain's previous one) that landed
    // here: the row's undo value is that write's before, whatever this run decides.
    let landed = earlier_write_landed(row, &current, shared);
    record.before = Some(current);
    if record.changed_fields.is_empty() {
        return settled_unchanged(record, landed);
    }
    // A saved plan's row: written only if the gateway still looks as the plan saw it (a
    // gateway already as the plan would leave it was settled above, as unchanged). A
    // listing may be stale, so an apply leaves that judgement to the fresh read before the
    // write.
    if let Some(expected) = &row.expected
        && let Some(current) = &record.before
        && (!from_listing || shared.writer.is_none())
        // The write path settles a conflict with an earlier write in mind.
        && landed.is_none()
    {
        let moved = differing(expected, current);
        if !moved.is_empty() {
            let current = current.clone();
            return conflict(record, current, &moved);
        }
    }
    // The canary applies to a plan too, so the plan shown before asking holds only the
    // rows that will be written.
    if let Some((turn, canary)) = turn.zip(shared.canary.as_ref())
        && !turn.wants_write().await
    {
        record.status = Status::Skipped;
        record.error_code = ErrorCode::from("limit");
        record.error = format!(
            "not written: --limit {} reached (a change is pending)",
            canary.limit()
        );
        record.after = Some(desired);
        return match landed {
            Some((before, ours)) => held_after_an_earlier_write(record, before, ours),
            None => record,
        };
    }
    match shared.clients(row).1 {
        Some(writer) => {
            let first = timed.zip(record.before.clone());
            let first =
                first.map(|((answered, trip), fields)| FirstRead::new(fields, answered, trip));
            write(record, row, shared, &writer, (landed, first)).await
        }
        None => {
            record.status = Status::WouldUpdate;
            record.after = Some(desired);
            record
        }
    }
}

/// Where an earlier run of this report (or the chain's previous one) wrote this row and
/// the answer was lost, read as `now`: that write's undo value and fields.
fn earlier_write_landed(
    row: &Row,
    now: &GatewayFields,
    shared: &Shared,
) -> Option<(GatewayFields, FieldSet)> {
    let recovered = shared.recovered.as_ref()?;
    recovered.get(&row.id.as_u128())?.landed(now)
}

/// A row the canary holds back that an earlier run's write (its answer lost) changed:
/// not written now, and that write stays in the report (`write_unknown`, its before), so
/// the report still undoes it and a `--resume` settles it.
fn held_after_an_earlier_write(
    mut record: RowRecord,
    before: GatewayFields,
    ours: FieldSet,
) -> RowRecord {
    record.after = record.before.take();
    record.before = Some(before);
    record.changed_fields = record.changed_fields.union(ours);
    possibly_written_earlier(record)
}

/// The gateway as it is: the list page's answer (no request of this row's own), else a
/// GET, with when it was answered and its round trip.
async fn read_current(
    record: &mut RowRecord,
    row: &Row,
    listed: Option<GatewayFields>,
    shared: &Shared,
) -> Result<(GatewayFields, Option<(tokio::time::Instant, Duration)>), ApiError> {
    if let Some(fields) = listed {
        record.http_status = Some(200);
        return Ok((fields, None));
    }
    let reply = super::write::read_gateway(shared, row).await?;
    record.attempts = reply.attempts;
    record.http_status = Some(reply.status);
    let answered = tokio::time::Instant::now();
    Ok((reply.value.sip_gateway, Some((answered, reply.round_trip))))
}

/// A row that needs no change. Written by an earlier run that crashed before its report
/// line, or whose answer was lost (its before-value recovered from the journal or the
/// report, or carried from the chain's previous report while the gateway is as that run
/// left it): reported as that write, so the report stays a complete undo file.
fn settled_unchanged(
    mut record: RowRecord,
    landed: Option<(GatewayFields, FieldSet)>,
) -> RowRecord {
    record.status = Status::Unchanged;
    record.changed_fields = Default::default();
    record.after = record.before.clone();
    if let Some((before, ours)) = landed {
        record.status = Status::Updated;
        record.changed_fields = ours;
        record.before = Some(before);
    }
    record
}

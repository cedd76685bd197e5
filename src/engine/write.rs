//! A row that differs, written. Every attempt waits for its write slot and builds the
//! PATCH from a read taken within a round trip of it: the row's first read when it is
//! still that fresh ([`FirstRead`]), else a read afresh; a lost answer is settled by
//! reading, never by sending again blind.

use std::ops::ControlFlow;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::Shared;
use super::stop::Stopper;
use super::verdict::{conflict, failed, possibly_written_earlier, unknown};
use crate::client::{ApiError, Patched, ReadAge, Reply, WriteClient, WriteSchedule};
use crate::diff::{FieldSet, differing, merge, with_fields_from};
use crate::failure::ErrorKind;
use crate::limiter::{RequestSlot, WriteSlot};
use crate::manifest::Row;
use crate::model::{GatewayFields, GatewayResource};
use crate::report::RowRecord;
use crate::status::ErrorCode;
use crate::status::Status;

/// A row that differs, written. `landed`: an earlier run's write of this row whose answer
/// was lost and that landed, at least in part, as the caller's read shows it
/// ([`crate::ledger::EarlierWrite::landed`]: the fields it asked for, for a `write_unknown`
/// carried from the chain's previous report only while the gateway is what that write
/// asked for). The undo value is then the gateway as it was before that write, and a
/// failure now leaves the row possibly written, as read.
pub(super) async fn write(
    record: RowRecord,
    row: &Row,
    shared: &Shared,
    writer: &WriteClient,
    (landed, first): (Option<(GatewayFields, FieldSet)>, Option<FirstRead>),
) -> RowRecord {
    let read = record.before.clone();
    let earlier = landed.is_some();
    let record = write_fresh(record, row, shared, writer, (landed, first)).await;
    match record.status {
        Status::Failed if earlier && record.error_code != ErrorCode::WriteUnknown => {
            let mut record = possibly_written_earlier(record);
            record.after = read;
            record
        }
        _ => record,
    }
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
/// After the job stops no PATCH starts: a row waiting for its slot or out a retry's wait
/// leaves then ([`Attempts::stopped`]). The first attempt of a row whose own read is
/// still fresh when its slot comes is built from that read ([`FirstRead`]).
async fn write_fresh(
    mut record: RowRecord,
    row: &Row,
    shared: &Shared,
    writer: &WriteClient,
    (landed, mut first): (Option<(GatewayFields, FieldSet)>, Option<FirstRead>),
) -> RowRecord {
    // The undo value once something of ours (or an earlier run's) may have landed.
    if let Some((before, _)) = &landed {
        record.before = Some(before.clone());
    }
    let mut tries = Attempts::new(landed, writer.schedule());
    let mut stale = false;
    loop {
        // A row whose own read is still fresh needs no time ahead of its write to read.
        let fresh_until = first.as_ref().map(FirstRead::fresh_until);
        let slot = tokio::select! {
            biased;
            () = shared.stopper.halted() => return tries.stopped(record, row, shared).await,
            slot = writer.slot(fresh_until) => slot,
        };
        let slot = match slot {
            Ok(slot) => slot,
            Err(err) => return tries.gave_up(record, err, &shared.stopper),
        };
        let read_again = std::mem::take(&mut stale);
        if tries.patches > 0 || read_again {
            // The read of a second attempt is part of its retry (so is a read again after
            // one that aged before its write could leave).
            shared.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        let (now, request, read) =
            match read_for_write(&mut record, row, shared, writer, (first.take(), &slot)).await {
                Ok(read) => read,
                Err(err) => return tries.gave_up(record, err, &shared.stopper),
            };
        if !writer.still_room(&slot) {
            // The read brought a count with no room for this write: another slot, then
            // another read (what is written is built from a read after the slot).
            continue;
        }
        let patch = match tries.prepare(record, row, shared, now).await {
            ControlFlow::Continue((r, patch)) => {
                record = r;
                patch
            }
            ControlFlow::Break(ended) => return ended,
        };
        let sent = (slot, request, read);
        match tries.send(record, row, (shared, writer), patch, sent).await {
            ControlFlow::Continue((r, read_again)) => {
                record = r;
                stale = read_again;
            }
            ControlFlow::Break(ended) => return ended,
        }
    }
}

/// An attempt's PATCH, built from the read after its slot: what it asks for, the row's
/// undo value, and the fields it changes.
struct Patch {
    desired: GatewayFields,
    before: GatewayFields,
    changes: FieldSet,
}

impl Attempts {
    /// Builds the attempt's PATCH from `now`, the read after its slot, and journals it.
    /// The row ends here (`Break`) when `now` is already as desired, has moved since the
    /// reviewed plan, or the job stopped (or the journal failed) before the PATCH left.
    async fn prepare(
        &mut self,
        mut record: RowRecord,
        row: &Row,
        shared: &Shared,
        now: GatewayFields,
    ) -> ControlFlow<RowRecord, (RowRecord, Patch)> {
        let desired = merge(&now, &row.desired);
        let changes = differing(&now, &desired);
        let (before, ours) = self.undo_for(&now);
        if changes.is_empty() {
            return ControlFlow::Break(as_desired(record, before, ours, now));
        }
        if let Some(expected) = &row.expected {
            let moved = differing(expected, &now);
            if !moved.is_empty() {
                return ControlFlow::Break(self.moved_since_plan(record, before, now, &moved));
            }
        }
        if shared.stopper.is_halted() {
            return ControlFlow::Break(self.stopped(record, row, shared).await);
        }
        record.before = Some(before.clone());
        // What an earlier write of ours that may have landed changed is this row's change
        // too: the line agrees with itself.
        record.changed_fields = changes.union(ours);
        if !self.journal(row, &before, changes, shared) {
            let id = row.id.hyphenated().to_string();
            return ControlFlow::Break(shared.stopper.skipped(row.seq, row.line, id));
        }
        let patch = Patch {
            desired,
            before,
            changes,
        };
        ControlFlow::Continue((record, patch))
    }

    /// Sends the attempt's PATCH on its slot, place and read, and says what the row does
    /// next: it ends (`Break`: answered, stopped, given up, or settled by a read), or tries
    /// again (`Continue`), `true` when nothing was sent because the read aged before the
    /// write could leave.
    async fn send(
        &mut self,
        mut record: RowRecord,
        row: &Row,
        (shared, writer): (&Shared, &WriteClient),
        Patch {
            desired,
            before,
            changes,
        }: Patch,
        (slot, request, read): (WriteSlot, RequestSlot, ReadAge),
    ) -> ControlFlow<RowRecord, (RowRecord, bool)> {
        use ControlFlow::{Break, Continue};
        self.patches += 1;
        let leaving = (slot, Some(request));
        let sent = tokio::select! {
            biased;
            reply = writer.patch_once(&row.id, &desired, self.patches, leaving, read) => reply,
            () = shared.stopper.hurried() => {
                let ended = self.on_the_wire_at_the_end(record, before, changes, desired, shared, writer);
                return Break(ended);
            }
        };
        let err = match sent {
            Ok(Patched::Answered(reply)) => {
                return Break(answered(
                    record,
                    &desired,
                    reply.status,
                    reply.value.sip_gateway,
                ));
            }
            Ok(Patched::StaleRead) => {
                // Nothing was sent: another slot, another read.
                self.patches -= 1;
                tracing::debug!(
                    row = row.line,
                    "read again: its read aged past a round trip"
                );
                return Continue((record, true));
            }
            Err(err)
                if matches!(err.kind, ErrorKind::Aborted | ErrorKind::Interrupted)
                    && shared.stopper.is_halted() =>
            {
                return Break(self.stopped(record, row, shared).await);
            }
            Err(err) => err,
        };
        match self.after_failure(&mut record, err, before, changes, desired, writer) {
            Next::Retry(wait) => tokio::select! {
                biased;
                () = shared.stopper.halted() => Break(self.stopped(record, row, shared).await),
                // The row's place at work is another row's meanwhile.
                () = writer.limiter().wait_out(wait) => Continue((record, false)),
            },
            Next::Settle(err) => Break(settle(record, row, err, shared, self.asked.take()).await),
            Next::GiveUp(err) => Break(self.gave_up(record, err, &shared.stopper)),
        }
    }
}

/// What a row does after a PATCH that failed.
enum Next {
    /// Waits this long, then another slot, read and PATCH.
    Retry(std::time::Duration),
    /// Its attempts are spent after a lost answer: one more read says what landed.
    Settle(ApiError),
    GiveUp(ApiError),
}

/// One row's write attempts so far.
struct Attempts {
    /// The row's undo value once a PATCH (this run's or an earlier one's) may have landed.
    fixed_before: Option<GatewayFields>,
    /// The fields those PATCHes asked to change.
    ours: FieldSet,
    /// The fields journaled for this row so far.
    journaled: Option<FieldSet>,
    /// What the last PATCH whose answer was lost asked for: the row's `after` if it stays
    /// `write_unknown` (a next link's undo value stands while the gateway is that).
    asked: Option<GatewayFields>,
    /// PATCHes whose answer was lost, and the last one's error.
    unanswered: u32,
    lost: Option<ApiError>,
    patches: u32,
    schedule: WriteSchedule,
}

impl Attempts {
    fn new(landed: Option<(GatewayFields, FieldSet)>, schedule: WriteSchedule) -> Attempts {
        let (fixed_before, ours) = landed.unzip();
        Attempts {
            fixed_before,
            ours: ours.unwrap_or_default(),
            journaled: None,
            asked: None,
            unanswered: 0,
            lost: None,
            patches: 0,
            schedule,
        }
    }

    /// A PATCH failed: counts it, and says what comes next. A PATCH that may have landed
    /// fixes the row's undo value and is read back before anything else.
    fn after_failure(
        &mut self,
        record: &mut RowRecord,
        mut err: ApiError,
        before: GatewayFields,
        changes: FieldSet,
        desired: GatewayFields,
        writer: &WriteClient,
    ) -> Next {
        // Counted here, once: the failure paths add only other requests' attempts.
        record.attempts += u32::from(err.attempts > 0);
        err.attempts = 0;
        record.http_status = err.status;
        if err.maybe_applied {
            self.unanswered += 1;
            self.fixed_before = Some(before);
            self.ours = self.ours.union(changes);
            self.asked = Some(desired);
            self.lost = Some(err.clone());
            tracing::debug!(code = %err.code(), "the PATCH may have landed: reading it back next");
        } else if !err.retryable() {
            return Next::GiveUp(err);
        }
        match writer.wait_before_retry(&mut self.schedule, &err) {
            Some(wait) => Next::Retry(wait),
            None if self.unanswered > 0 => Next::Settle(err),
            None => Next::GiveUp(err),
        }
    }

    /// The interrupt's grace ran out with this row's PATCH on the wire: it may have
    /// landed, so the row is reported as possibly written, its before kept, for --resume.
    fn on_the_wire_at_the_end(
        &mut self,
        mut record: RowRecord,
        before: GatewayFields,
        changes: FieldSet,
        desired: GatewayFields,
        shared: &Shared,
        writer: &WriteClient,
    ) -> RowRecord {
        let mut err = given_up(true);
        self.after_failure(&mut record, err.clone(), before, changes, desired, writer);
        err.attempts = 0; // counted just above
        self.gave_up(record, err, &shared.stopper)
    }

    /// The job stopped while this row waited (for its slot, out a retry's wait, or at the
    /// last gate before its PATCH leaves): no PATCH starts now. Nothing of this run's may
    /// have landed: `skipped`, and `--resume` takes it up. A PATCH whose answer was lost:
    /// read once more and settled as at the end of its attempts (`write_unknown` with its
    /// `before` unless that read settles it), never plain `skipped`.
    async fn stopped(&mut self, record: RowRecord, row: &Row, shared: &Shared) -> RowRecord {
        match self.lost.take() {
            Some(err) => settle(record, row, err, shared, self.asked.take()).await,
            None => {
                let id = row.id.hyphenated().to_string();
                shared.stopper.skipped(row.seq, row.line, id)
            }
        }
    }

    /// The row's undo value read as `now`, and the fields our earlier PATCHes changed:
    /// their `before` of those fields, `now`'s of the rest (someone else's since).
    fn undo_for(&self, now: &GatewayFields) -> (GatewayFields, FieldSet) {
        match &self.fixed_before {
            None => (now.clone(), FieldSet::default()),
            Some(fixed) => {
                let ours = differing(fixed, now).intersection(self.ours);
                (with_fields_from(now, fixed, ours), ours)
            }
        }
    }

    /// Journals the row's before-value ahead of its first PATCH. False when the journal
    /// cannot be written: the job stops, and this row is not written (`skipped`).
    fn journal(
        &mut self,
        row: &Row,
        before: &GatewayFields,
        changes: FieldSet,
        shared: &Shared,
    ) -> bool {
        let fresh = self
            .journaled
            .is_none_or(|done| !changes.without(done).is_empty());
        let Some(journal) = shared.journal.as_ref().filter(|_| fresh) else {
            return true;
        };
        let fields = self.journaled.unwrap_or_default().union(changes);
        if let Err(e) = journal.record(&row.id, before, fields) {
            shared.stopper.ledger_failed(format!(
                "cannot write journal {}: {e}",
                journal.path().display()
            ));
            return false;
        }
        self.journaled = Some(fields);
        true
    }

    /// The gateway no longer looks as the reviewed plan saw it: a conflict, unless a PATCH
    /// of ours may have landed, which makes it `write_unknown`.
    fn moved_since_plan(
        &self,
        mut record: RowRecord,
        before: GatewayFields,
        now: GatewayFields,
        moved: &FieldSet,
    ) -> RowRecord {
        if self.unanswered == 0 && self.fixed_before.is_none() {
            return conflict(record, now, moved);
        }
        record.before = Some(before);
        record.after = self.asked.clone().or(Some(now));
        unknown(
            record,
            "not written again: an earlier PATCH's answer was lost and the gateway now \
             differs from both the plan's before and after"
                .into(),
        )
    }

    /// A row that stops: a plain failure when nothing of this run may have landed;
    /// otherwise `write_unknown` with the before-value fixed when it might have.
    fn gave_up(&self, mut record: RowRecord, err: ApiError, stopper: &Stopper) -> RowRecord {
        if self.unanswered == 0 {
            return failed(record, err, stopper);
        }
        record.attempts += err.attempts;
        record.before = self.fixed_before.clone().or(record.before);
        record.after = self.asked.clone();
        let message = format!(
            "a PATCH may have been applied (its answer was lost) and the row could not be \
             settled: {} ({})",
            err.message,
            err.code()
        );
        unknown(record, message)
    }
}

/// A request given up because the interrupt's grace ran out before its answer came (a
/// PATCH: it may have landed).
fn given_up(maybe_applied: bool) -> ApiError {
    let mut err = ApiError::new(
        ErrorKind::Interrupted,
        "the interrupt's grace ran out before the answer came".into(),
    );
    err.maybe_applied = maybe_applied;
    // The request was made: it counts among the row's attempts.
    err.attempts = 1;
    err
}

/// A GET of the row's gateway, given up once the interrupt's grace has run out.
pub(super) async fn read_gateway(
    shared: &Shared,
    row: &Row,
) -> Result<Reply<GatewayResource>, ApiError> {
    let reader = shared.clients(row).0;
    tokio::select! {
        biased;
        reply = reader.get_gateway(&row.id) => reply,
        () = shared.stopper.hurried() => Err(given_up(false)),
    }
}

/// A row's own read (its GET; a page's listing is older): the gateway as it was answered,
/// when, and the round trip. A write whose slot and place on the wire come within that
/// round trip of the answer is built from it, with no second read: the window between the
/// read and the write is then no wider than a second read would leave (about a round
/// trip). A row that waited longer reads again ([`read_fresh`]).
#[derive(Debug, Clone)]
pub(super) struct FirstRead {
    fields: GatewayFields,
    answered: Instant,
    round_trip: Duration,
}

impl FirstRead {
    pub(super) fn new(fields: GatewayFields, answered: Instant, round_trip: Duration) -> FirstRead {
        FirstRead {
            fields,
            answered,
            round_trip,
        }
    }

    /// The read and a place on the wire for the PATCH, if the read is still as fresh as a
    /// second one would be once that place is held and the write's time (`leaves_at`)
    /// has come; `None` (the place let go) otherwise.
    async fn if_still_fresh(
        self,
        writer: &WriteClient,
        stopper: &Stopper,
        leaves_at: Option<Instant>,
    ) -> Option<(GatewayFields, RequestSlot, ReadAge)> {
        if !self.fresh(leaves_at) {
            return None;
        }
        let request = tokio::select! {
            biased;
            () = stopper.halted() => return None,
            request = writer.request_slot() => request,
        };
        let age = ReadAge {
            answered: self.answered,
            may_be: self.round_trip,
        };
        self.fresh(leaves_at).then_some((self.fields, request, age))
    }

    /// Until when a write may leave on it.
    fn fresh_until(&self) -> Instant {
        self.answered + self.round_trip
    }

    /// Whether the read is no older than its round trip when the write leaves.
    fn fresh(&self, leaves_at: Option<Instant>) -> bool {
        let leaves = leaves_at.map_or_else(Instant::now, |t| t.max(Instant::now()));
        leaves.saturating_duration_since(self.answered) <= self.round_trip
    }
}

/// What this attempt's PATCH is built from, with its place on the wire and its age: the
/// row's first read while it is still within its round trip when the write leaves, else
/// a fresh read.
async fn read_for_write(
    record: &mut RowRecord,
    row: &Row,
    shared: &Shared,
    writer: &WriteClient,
    (first, slot): (Option<FirstRead>, &WriteSlot),
) -> Result<(GatewayFields, RequestSlot, ReadAge), ApiError> {
    if let Some(first) = first
        && let Some(read) = first
            .if_still_fresh(writer, &shared.stopper, slot.leaves_at())
            .await
    {
        return Ok(read);
    }
    read_fresh(record, row, shared, slot).await
}

/// The gateway as it is now, read after the write slot was granted, the read's place
/// among the requests on the wire, kept for the PATCH, and its age: it may be as old as
/// its round trip, or the time the slot was handed over ahead of the write's time.
async fn read_fresh(
    record: &mut RowRecord,
    row: &Row,
    shared: &Shared,
    slot: &WriteSlot,
) -> Result<(GatewayFields, RequestSlot, ReadAge), ApiError> {
    let reader = shared.clients(row).0;
    let (reply, request) = tokio::select! {
        biased;
        read = reader.get_gateway_keeping_slot(&row.id) => read?,
        () = shared.stopper.hurried() => return Err(given_up(false)),
    };
    record.attempts += reply.attempts;
    record.http_status = Some(reply.status);
    let age = ReadAge {
        answered: Instant::now(),
        may_be: reply.round_trip.max(slot.lead()),
    };
    Ok((reply.value.sip_gateway, request, age))
}

/// Already as desired: our lost answer's PATCH landed (in `ours`, undone by `before`), or
/// someone else got there first.
fn as_desired(
    mut record: RowRecord,
    before: GatewayFields,
    ours: FieldSet,
    now: GatewayFields,
) -> RowRecord {
    record.changed_fields = ours;
    record.after = Some(now);
    record.status = if record.changed_fields.is_empty() {
        Status::Unchanged
    } else {
        Status::Updated
    };
    record.before = Some(before);
    record
}

/// The row's time or attempts ran out right after a PATCH whose answer was lost (it
/// asked for `asked`): one more read says what became of it. As desired: `updated`.
/// Unmoved from `before`: a plain failure. Anything else: `write_unknown`, in the
/// rollback.
async fn settle(
    mut record: RowRecord,
    row: &Row,
    err: ApiError,
    shared: &Shared,
    asked: Option<GatewayFields>,
) -> RowRecord {
    shared.stats.retries.fetch_add(1, Ordering::Relaxed);
    let now = match read_gateway(shared, row).await {
        Ok(reply) => {
            record.attempts += reply.attempts;
            reply.value.sip_gateway
        }
        Err(read_err) => {
            record.attempts += read_err.attempts;
            let message = format!(
                "the PATCH may have been applied: {} ({}); reading the gateway back failed \
                 too: {}",
                err.message,
                err.code(),
                read_err.message
            );
            record.after = asked;
            return unknown(record, message);
        }
    };
    if differing(&now, &merge(&now, &row.desired)).is_empty() {
        let before = record.before.clone().unwrap_or_else(|| now.clone());
        let ours = differing(&before, &now).intersection(record.changed_fields);
        record.before = Some(with_fields_from(&now, &before, ours));
        record.changed_fields = ours;
        record.status = if ours.is_empty() {
            Status::Unchanged
        } else {
            Status::Updated
        };
        record.after = Some(now);
        return record;
    }
    if record.before.as_ref() == Some(&now) {
        return failed(record, err, &shared.stopper);
    }
    let message = format!(
        "the PATCH may have been applied in part: {} ({}), and the gateway is now neither \
         as it was nor as desired",
        err.message,
        err.code()
    );
    record.after = asked;
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
        record.error_code = ErrorCode::Named(Status::Mismatch);
        record.error = format!(
            "the server's answer differs from what was sent in: {}",
            differs.to_string().replace(';', ", ")
        );
    }
    record.after = Some(answer);
    record
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{client_on, shared};
    use crate::limiter::Limiter;

    #[tokio::test(start_paused = true)]
    async fn a_first_read_is_written_from_only_while_within_its_round_trip() {
        let limiter = Arc::new(Limiter::new(None, None).with_requests_in_flight(1));
        let writer = WriteClient::new(client_on(Arc::clone(&limiter)));
        let stopper = shared().stopper;
        let fields = crate::sandbox::starting_fields(1);
        let trip = Duration::from_millis(10);
        // The slot came at once, a request slot too: written from the first read.
        let first = FirstRead::new(fields.clone(), Instant::now(), trip);
        let (read, request, age) = first.if_still_fresh(&writer, &stopper, None).await.unwrap();
        assert_eq!((read, age.may_be), (fields.clone(), trip));
        drop(request);
        // The write slot came after more than a round trip: read again.
        let first = FirstRead::new(fields.clone(), Instant::now(), trip);
        tokio::time::advance(Duration::from_millis(11)).await;
        assert!(
            first
                .if_still_fresh(&writer, &stopper, None)
                .await
                .is_none()
        );
        // The slot came at once, but its time to leave is more than a round trip away.
        let first = FirstRead::new(fields.clone(), Instant::now(), trip);
        let later = Instant::now() + Duration::from_millis(11);
        assert!(
            first
                .if_still_fresh(&writer, &stopper, Some(later))
                .await
                .is_none()
        );
        let first = FirstRead::new(fields.clone(), Instant::now(), trip);
        let soon = Instant::now() + Duration::from_millis(9);
        assert!(
            first
                .if_still_fresh(&writer, &stopper, Some(soon))
                .await
                .is_some()
        );
        // Fresh when asked, but the request slot came a round trip later: read again.
        let busy = limiter.request_slot().await;
        let first = FirstRead::new(fields, Instant::now(), trip);
        let waiting = tokio::spawn(async move {
            let writer = writer;
            let stopper = shared().stopper;
            first
                .if_still_fresh(&writer, &stopper, None)
                .await
                .is_none()
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(busy);
        assert!(
            waiting.await.unwrap(),
            "written from a read older than its round trip"
        );
    }

    use super::*;
    use crate::sandbox::starting_fields;

    fn record() -> RowRecord {
        RowRecord::bare(0, 2, "id".into(), Status::Failed, "", String::new())
    }

    #[test]
    fn already_as_desired_is_unchanged_or_updated_by_the_before() {
        let (a, b) = (starting_fields(1), starting_fields(2));
        let r = as_desired(record(), a.clone(), FieldSet::default(), a.clone());
        assert_eq!(r.status, Status::Unchanged);
        assert!(r.changed_fields.is_empty());
        let r = as_desired(record(), a.clone(), differing(&a, &b), b.clone());
        assert_eq!(r.status, Status::Updated);
        assert_eq!(r.changed_fields, differing(&a, &b));
        assert_eq!((r.before, r.after), (Some(a), Some(b)));
    }

    #[test]
    fn an_answer_that_differs_from_what_was_sent_is_a_mismatch() {
        let (sent, other) = (starting_fields(1), starting_fields(2));
        let r = answered(record(), &sent, 200, sent.clone());
        assert_eq!(
            (r.status, r.attempts, r.http_status),
            (Status::Updated, 1, Some(200))
        );
        assert_eq!(r.after, Some(sent.clone()));
        let r = answered(record(), &sent, 201, other.clone());
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Mismatch, "mismatch")
        );
        assert_eq!(r.after, Some(other));
        assert!(
            r.error.contains("differs from what was sent"),
            "{}",
            r.error
        );
    }

    #[test]
    fn a_row_that_stops_is_unknown_only_once_a_patch_may_have_landed() {
        let shared = super::super::tests::shared();
        let writer = shared.writer.clone().unwrap();
        let (original, now) = (starting_fields(1), starting_fields(2));
        let mut err = ApiError::new(ErrorKind::Timeout, "slow".into());
        err.attempts = 2;
        let tries = Attempts::new(None, writer.schedule());
        let r = tries.gave_up(record(), err.clone(), &shared.stopper);
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Failed, "timeout")
        );
        assert_eq!(r.before, None);

        let mut tries = Attempts::new(None, writer.schedule());
        tries.unanswered = 1;
        tries.fixed_before = Some(original.clone());
        tries.asked = Some(now.clone());
        let r = tries.gave_up(record(), err.clone(), &shared.stopper);
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Failed, "write_unknown")
        );
        assert_eq!(r.after.as_ref(), Some(&now), "what it asked for");
        assert_eq!((r.before, r.attempts), (Some(original.clone()), 2));
        assert!(r.error.contains("slow (timeout)"), "{}", r.error);

        // The plan's gateway moved: a conflict, unless a PATCH of ours may have landed.
        let moved = differing(&original, &now);
        let fresh = Attempts::new(None, writer.schedule());
        let r = fresh.moved_since_plan(record(), original.clone(), now.clone(), &moved);
        assert_eq!(r.status, Status::Conflict);
        let earlier = Attempts::new(Some((original.clone(), moved)), writer.schedule());
        let r = earlier.moved_since_plan(record(), original.clone(), now.clone(), &moved);
        assert_eq!(
            (r.error_code.as_str(), r.before),
            ("write_unknown", Some(original))
        );
        let r = tries.moved_since_plan(record(), now.clone(), now, &moved);
        assert_eq!(r.error_code, ErrorCode::WriteUnknown);
    }
}

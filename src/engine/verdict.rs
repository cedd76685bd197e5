//! How a record ends when it does not end well: the verdicts both the row's decision and
//! its write reach (a failed request, a conflict with the reviewed plan, a write whose
//! outcome is unknown, an earlier run's write this run could not settle).

use super::StopReason;
use super::stop::Stopper;
use crate::client::{ApiError, ErrorKind};
use crate::diff::FieldSet;
use crate::model::GatewayFields;
use crate::report::{RowRecord, WRITE_UNKNOWN};
use crate::status::Status;

/// Not written: the gateway no longer looks as the reviewed plan saw it.
pub(super) fn conflict(mut record: RowRecord, now: GatewayFields, moved: &FieldSet) -> RowRecord {
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

/// Marks a row an earlier run may have written, and this run did not settle.
pub(super) fn possibly_written_earlier(mut record: RowRecord) -> RowRecord {
    record.error = format!(
        "possibly written by an earlier run whose answer was lost, and not settled now: {}",
        record.error
    );
    record.status = Status::Failed;
    record.error_code = WRITE_UNKNOWN.into();
    record
}

/// Marks a row whose PATCH may have landed: `failed`, `write_unknown`, its `before` kept
/// for the rollback and a later `--resume`.
pub(super) fn unknown(mut record: RowRecord, message: String) -> RowRecord {
    record.status = Status::Failed;
    record.error_code = WRITE_UNKNOWN.into();
    record.error = message;
    record
}

/// Fills a record from a failed request. The attempts of earlier requests are kept.
pub(super) fn failed(mut record: RowRecord, err: ApiError, stopper: &Stopper) -> RowRecord {
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

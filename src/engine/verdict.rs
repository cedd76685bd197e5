//! How a record ends when it does not end well: the verdicts both the row's decision and
//! its write reach (a failed request, a conflict with the reviewed plan, a write whose
//! outcome is unknown, an earlier run's write this run could not settle).

use super::StopReason;
use super::stop::Stopper;
use crate::client::ApiError;
use crate::diff::FieldSet;
use crate::failure::{RowEnd, Stop};
use crate::model::GatewayFields;
use crate::report::RowRecord;
use crate::status::ErrorCode;
use crate::status::Status;

/// Not written: the gateway no longer looks as the reviewed plan saw it.
pub(super) fn conflict(mut record: RowRecord, now: GatewayFields, moved: &FieldSet) -> RowRecord {
    record.status = Status::Conflict;
    record.error_code = ErrorCode::Named(Status::Conflict);
    record.error = format!(
        "not written: the gateway changed since the plan was made ({} {}); plan again \
         to review it",
        moved.to_string().replace(';', ", "),
        if moved.len() == 1 {
            "differs"
        } else {
            "differ"
        }
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
    record.error_code = ErrorCode::WriteUnknown;
    record
}

/// Marks a row whose PATCH may have landed: `failed`, `write_unknown`, its `before` kept
/// for the rollback and a later `--resume`.
pub(super) fn unknown(mut record: RowRecord, message: String) -> RowRecord {
    record.status = Status::Failed;
    record.error_code = ErrorCode::WriteUnknown;
    record.error = message;
    record
}

/// Fills a record from a failed request, as its kind's decision says it ends. The attempts
/// of earlier requests are kept.
pub(super) fn failed(mut record: RowRecord, err: ApiError, stopper: &Stopper) -> RowRecord {
    record.attempts += err.attempts;
    record.http_status = err.status;
    let decision = err.decision();
    record.status = decision.row.status();
    if decision.row != RowEnd::Skipped {
        record.error_code = ErrorCode::from(err.code());
        record.error = err.message;
        return record;
    }
    let (code, note) = if decision.stop == Some(Stop::CredentialsRefused) {
        // The space refused the credentials for this row's own request: nothing was
        // written, and the job stops; the row is for `--resume` once they are fixed, not a
        // failure of its own.
        (
            StopReason::Unauthorized.skip_note().0,
            format!(
                "not written: the space refused the credentials (HTTP {})",
                err.status
                    .map_or_else(|| "401/403".to_owned(), |s| s.to_string())
            ),
        )
    } else {
        // Not sent because the job had stopped: its reason.
        let (code, note) = stopper
            .reason()
            .unwrap_or(StopReason::Unauthorized)
            .skip_note();
        (code, note.to_owned())
    };
    record.error_code = ErrorCode::from(code);
    record.error = note;
    record
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::differing;
    use crate::failure::ErrorKind;
    use crate::sandbox::starting_fields;

    fn record() -> RowRecord {
        let mut r = RowRecord::bare(3, 4, "id".into(), Status::Failed, "", String::new());
        r.attempts = 2;
        r
    }

    fn stopper() -> Stopper {
        let client = super::super::tests::client();
        Stopper::new(client)
    }

    #[test]
    fn a_failed_request_maps_by_its_kind_and_keeps_earlier_attempts() {
        let stopper = stopper();
        let mut err = ApiError::answered(404, "http_404".into(), "gone".into());
        assert_eq!(err.kind, ErrorKind::NotFound);
        err.attempts = 1;
        let r = failed(record(), err.clone(), &stopper);
        assert_eq!(
            (r.status, r.attempts, r.http_status),
            (Status::NotFound, 3, Some(404))
        );
        assert_eq!(
            (r.error_code.as_str(), r.error.as_str()),
            ("http_404", "gone")
        );
        // A 429 that outlived its retries fails the row with the server's code, as a 5xx
        // does; so does a failure of our own, with its kind's code.
        for (status, kind) in [
            (429, ErrorKind::Throttled),
            (503, ErrorKind::ServerTransient),
            (501, ErrorKind::ServerFault),
            (422, ErrorKind::Rejected),
        ] {
            let answer = ApiError::answered(status, "their_code".into(), "why".into());
            assert_eq!(answer.kind, kind);
            let r = failed(record(), answer, &stopper);
            assert_eq!(
                (r.status, r.error_code.as_str(), r.error.as_str()),
                (Status::Failed, "their_code", "why"),
                "{status}"
            );
        }
        let r = failed(
            record(),
            ApiError::new(ErrorKind::Tls, "x".into()),
            &stopper,
        );
        assert_eq!((r.status, r.error_code.as_str()), (Status::Failed, "tls"));
        // Refused credentials: not a failure of the row's own, skipped for --resume.
        let mut refused = err.clone();
        refused.kind = ErrorKind::Unauthorized;
        refused.status = Some(401);
        let r = failed(record(), refused, &stopper);
        assert_eq!(
            (r.status, r.error_code.as_str(), r.http_status),
            (Status::Skipped, "credentials_refused", Some(401))
        );
        // Not sent because the job stopped: skipped, with the stop's reason.
        err.kind = ErrorKind::Aborted;
        let r = failed(record(), err.clone(), &stopper);
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Skipped, "credentials_refused")
        );
        stopper.stop(StopReason::Interrupted);
        let r = failed(record(), err, &stopper);
        assert_eq!(r.error_code.as_str(), "interrupted");
        assert_eq!(r.error, StopReason::Interrupted.skip_note().1);
    }

    #[test]
    fn a_conflict_names_what_moved_and_keeps_the_gateway_as_it_is_now() {
        let (plan, now) = (starting_fields(1), starting_fields(2));
        let moved = differing(&plan, &now);
        let r = conflict(record(), now.clone(), &moved);
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Conflict, "conflict")
        );
        assert_eq!(r.before, Some(now));
        assert!(r.error.contains("changed since the plan"), "{}", r.error);
        let named = moved.to_string().replace(';', ", ");
        assert!(named.contains(", "), "two fields moved: {named}");
        assert!(
            r.error.contains(&format!("({named} differ)")),
            "{}",
            r.error
        );
        let mut one = crate::diff::FieldSet::default();
        one.insert(crate::diff::Field::ALL[0]);
        let r = conflict(record(), starting_fields(2), &one);
        assert!(r.error.contains(&format!("({one} differs)")), "{}", r.error);
    }

    #[test]
    fn an_unknown_write_is_a_failure_that_stays_in_the_rollback() {
        let r = unknown(record(), "lost".into());
        assert_eq!(
            (r.status, r.error_code.as_str(), r.error.as_str()),
            (Status::Failed, "write_unknown", "lost")
        );
        let mut earlier = record();
        earlier.status = Status::Skipped;
        earlier.error = "why".into();
        let r = possibly_written_earlier(earlier);
        assert_eq!(
            (r.status, r.error_code.as_str()),
            (Status::Failed, "write_unknown")
        );
        assert!(r.error.starts_with("possibly written by an earlier run"));
        assert!(r.error.ends_with(": why"), "{}", r.error);
    }
}

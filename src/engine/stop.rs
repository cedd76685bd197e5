//! Why a job stops: the client's abort (credentials refused, the space unreachable) or the
//! job's own stop (an interrupt, the error limit, a ledger that cannot be written), told
//! apart once so every row not started is `skipped` with the same reason.

use std::sync::OnceLock;

use tokio_util::sync::CancellationToken;

use super::StopReason;
use crate::client::{AbortCause, ReadClient};
use crate::report::RowRecord;
use crate::status::Status;

/// Shared stop state: which token fired, and why.
pub(super) struct Stopper {
    abort: CancellationToken,
    stop: CancellationToken,
    /// The interrupt's grace ran out: requests still on the wire are given up.
    hurry: CancellationToken,
    reason: OnceLock<StopReason>,
    /// Why the report or journal failed: the path and the cause.
    ledger_fault: OnceLock<String>,
    /// The client, which knows why it aborted.
    client: ReadClient,
}

impl Stopper {
    /// The job's stop state on its client's tokens ([`crate::client::Cancel`]).
    pub(super) fn new(client: ReadClient) -> Stopper {
        let crate::client::Cancel { abort, stop } = client.cancel();
        Stopper {
            abort,
            stop,
            hurry: CancellationToken::new(),
            reason: OnceLock::new(),
            ledger_fault: OnceLock::new(),
            client,
        }
    }

    pub(super) fn reason(&self) -> Option<StopReason> {
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

    /// Resolves once the job stops or aborts: a row waiting for its write slot, or out a
    /// retry's wait, leaves then, unsent.
    pub(super) async fn halted(&self) {
        tokio::select! {
            () = self.stop.cancelled() => {}
            () = self.abort.cancelled() => {}
        }
    }

    /// Requests on the wire are given up when `hurry` is cancelled.
    pub(super) fn with_hurry(mut self, hurry: CancellationToken) -> Stopper {
        self.hurry = hurry;
        self
    }

    /// Resolves once the interrupt's grace has run out: a request still on the wire is
    /// given up and its row reported as it stands.
    pub(super) async fn hurried(&self) {
        self.hurry.cancelled().await;
    }

    /// Whether the job has stopped or aborted: no PATCH starts after that.
    pub(super) fn is_halted(&self) -> bool {
        self.stop.is_cancelled() || self.abort.is_cancelled()
    }

    pub(super) fn stop(&self, reason: StopReason) {
        let _ = self.reason.set(reason);
        self.stop.cancel();
    }

    /// The report or journal cannot be written: stop at once, say why once.
    pub(super) fn ledger_failed(&self, what: String) {
        if self.ledger_fault.set(what.clone()).is_ok() {
            tracing::error!("{what}: stopping; rows in flight finish");
        }
        self.stop(StopReason::LedgerFailed);
    }

    pub(super) fn skipped(&self, seq: u64, line: u64, id: String) -> RowRecord {
        let (code, note) = self.reason().unwrap_or(StopReason::Interrupted).skip_note();
        RowRecord::bare(seq, line, id, Status::Skipped, code, note.to_owned())
    }

    /// Why the space was unreachable, or why the report could not be written.
    pub(super) fn detail(&self) -> Option<String> {
        match self.reason() {
            Some(StopReason::LedgerFailed) => self.ledger_fault.get().cloned(),
            Some(StopReason::Unreachable) => match self.client.abort_cause() {
                Some(AbortCause::Unreachable(why)) => Some(why),
                _ => None,
            },
            _ => None,
        }
    }
}

impl StopReason {
    pub(super) fn skip_note(self) -> (&'static str, &'static str) {
        match self {
            StopReason::Unauthorized => (
                "credentials_refused",
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
            StopReason::ErrorLimit => (
                "max_errors",
                "not attempted: the job stopped when --max-errors was reached",
            ),
            StopReason::Interrupted => ("interrupted", "not attempted: the job was interrupted"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopper() -> (Stopper, CancellationToken, CancellationToken) {
        let client = super::super::tests::client();
        let crate::client::Cancel { abort, stop } = client.cancel();
        (Stopper::new(client), abort, stop)
    }

    #[test]
    fn the_reason_is_the_one_given_then_the_abort_then_an_interrupt() {
        let (s, abort, stop) = stopper();
        assert_eq!(s.reason(), None);
        stop.cancel();
        assert_eq!(s.reason(), Some(StopReason::Interrupted));
        abort.cancel();
        // The client aborts without a cause only on refused credentials.
        assert_eq!(s.reason(), Some(StopReason::Unauthorized));
        s.ledger_failed("cannot write report r.csv: disk full".into());
        assert_eq!(s.reason(), Some(StopReason::LedgerFailed));
        assert_eq!(
            s.detail().as_deref(),
            Some("cannot write report r.csv: disk full")
        );
        // The first reason given stays.
        s.stop(StopReason::ErrorLimit);
        assert_eq!(s.reason(), Some(StopReason::LedgerFailed));
    }

    #[test]
    fn a_stop_skips_rows_with_its_own_code_and_note() {
        let (s, _, _) = stopper();
        s.stop(StopReason::ErrorLimit);
        assert!(s.stop.is_cancelled());
        let r = s.skipped(7, 9, "id".into());
        assert_eq!((r.seq, r.row, r.status), (7, 9, Status::Skipped));
        assert_eq!(
            (r.error_code.as_str(), r.error.as_str()),
            StopReason::ErrorLimit.skip_note()
        );
        assert_eq!(
            s.detail(),
            None,
            "only a ledger or an unreachable space has details"
        );
        let reasons = [
            StopReason::Unauthorized,
            StopReason::Unreachable,
            StopReason::ErrorLimit,
            StopReason::Interrupted,
            StopReason::LedgerFailed,
        ];
        let codes: std::collections::HashSet<_> = reasons.iter().map(|r| r.skip_note().0).collect();
        assert_eq!(codes.len(), reasons.len(), "each reason has its own code");
        // The code the engine compares (a project's skipped rows) reads back as its type.
        assert_eq!(
            crate::status::ErrorCode::from(StopReason::Unauthorized.skip_note().0),
            crate::status::ErrorCode::CredentialsRefused
        );
        assert!(
            reasons
                .iter()
                .all(|r| r.skip_note().1.starts_with("not attempted"))
        );
    }
}

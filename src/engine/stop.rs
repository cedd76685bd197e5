//! Why a job stops: the client's abort (credentials refused, the space unreachable) or the
//! job's own stop (an interrupt, the error budget, a ledger that cannot be written), told
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
    reason: OnceLock<StopReason>,
    /// Why the report or journal failed: the path and the cause.
    ledger_fault: OnceLock<String>,
    /// The client, which knows why it aborted.
    client: ReadClient,
}

impl Stopper {
    pub(super) fn new(
        abort: CancellationToken,
        stop: CancellationToken,
        client: ReadClient,
    ) -> Stopper {
        Stopper {
            abort,
            stop,
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

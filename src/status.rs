//! What became of a row: the report's vocabulary. It lives at the bottom of the house
//! because everything above speaks it: the engine decides it, the report writes and reads
//! it, a saved plan and the manifest's plan reader select `would_update` by it, and the
//! CLI turns it into exit codes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// How a row ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Written, and the server's answer matches what was sent.
    Updated,
    /// Already as the manifest says: nothing written.
    Unchanged,
    /// Plan only: would be written.
    WouldUpdate,
    /// The row failed its checks; nothing sent.
    Invalid,
    /// The gateway does not exist (404).
    NotFound,
    /// A request failed (after retries, or not retryable).
    Failed,
    /// Not attempted: the job stopped (abort, guard, interrupt, limit).
    Skipped,
    /// Written, but the server's answer differs from what was sent.
    Mismatch,
    /// Not written: the gateway no longer looks as it did in the plan that was reviewed.
    Conflict,
}

impl Status {
    pub const ALL: [Status; 9] = [
        Status::Updated,
        Status::Unchanged,
        Status::WouldUpdate,
        Status::Invalid,
        Status::NotFound,
        Status::Failed,
        Status::Skipped,
        Status::Mismatch,
        Status::Conflict,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Updated => "updated",
            Status::Unchanged => "unchanged",
            Status::WouldUpdate => "would_update",
            Status::Invalid => "invalid",
            Status::NotFound => "not_found",
            Status::Failed => "failed",
            Status::Skipped => "skipped",
            Status::Mismatch => "mismatch",
            Status::Conflict => "conflict",
        }
    }

    /// A row that ended this way needs someone's attention (exit code 1).
    pub fn is_error(self) -> bool {
        matches!(
            self,
            Status::Invalid
                | Status::NotFound
                | Status::Failed
                | Status::Mismatch
                | Status::Conflict
        )
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

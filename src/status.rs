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

/// A row's `error_code` in the report, as a type. The code the tool acts on is a variant
/// of its own (`write_unknown`: the row stays in the rollback and `--resume` settles it;
/// `credentials_refused`: a project's skipped row, told apart from an unreachable one),
/// and so is a code that names a status (`invalid`, `conflict`, `mismatch`); every other
/// code (the server's, a failure kind's, a stop's) is text to show, never compared. It is
/// written as its text and read back through [`ErrorCode::from`], the one place that
/// text becomes a code.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(from = "String")]
pub enum ErrorCode {
    /// No code: the row ended well.
    #[default]
    Empty,
    /// The row's PATCH may have landed although no answer said so: its `before` is kept,
    /// `rollback` restores it, `--resume` settles it.
    WriteUnknown,
    /// The space refused the credentials: the row was not attempted (`skipped`), and is
    /// for `--resume` once they are fixed. In a run of several projects, a row skipped
    /// because its project's client stopped carries it until the cause is known (the
    /// space unreachable instead rewrites it).
    CredentialsRefused,
    /// The code names a status (`conflict` on a conflict, `invalid` on an invalid row).
    Named(Status),
    /// Any other code: shown, never compared.
    Text(String),
}

impl ErrorCode {
    /// The text the report holds.
    pub fn as_str(&self) -> &str {
        match self {
            ErrorCode::Empty => "",
            ErrorCode::WriteUnknown => "write_unknown",
            ErrorCode::CredentialsRefused => "credentials_refused",
            ErrorCode::Named(status) => status.as_str(),
            ErrorCode::Text(text) => text,
        }
    }

    /// Whether the code says nothing the row's status does not (none, or the status's own
    /// name): said once, as `conflict` rather than `conflict conflict`.
    pub fn repeats(&self, status: Status) -> bool {
        match self {
            ErrorCode::Empty => true,
            ErrorCode::Named(named) => *named == status,
            _ => false,
        }
    }
}

impl From<&str> for ErrorCode {
    fn from(text: &str) -> ErrorCode {
        match text {
            "" => ErrorCode::Empty,
            "write_unknown" => ErrorCode::WriteUnknown,
            "credentials_refused" => ErrorCode::CredentialsRefused,
            _ => match Status::ALL.into_iter().find(|s| s.as_str() == text) {
                Some(status) => ErrorCode::Named(status),
                None => ErrorCode::Text(text.to_owned()),
            },
        }
    }
}

impl From<String> for ErrorCode {
    fn from(text: String) -> ErrorCode {
        match ErrorCode::from(text.as_str()) {
            ErrorCode::Text(_) => ErrorCode::Text(text),
            code => code,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_code_reads_back_as_what_it_was_written() {
        let mut codes = vec![
            ErrorCode::Empty,
            ErrorCode::WriteUnknown,
            ErrorCode::CredentialsRefused,
            ErrorCode::Text("missing_sip_configuration".into()),
            ErrorCode::Text("http_429".into()),
            ErrorCode::Text("timeout".into()),
        ];
        codes.extend(Status::ALL.map(ErrorCode::Named));
        for code in codes {
            let text = code.as_str().to_owned();
            assert_eq!(ErrorCode::from(text.as_str()), code, "{text}");
            assert_eq!(ErrorCode::from(text.clone()), code, "{text}");
            assert_eq!(code.to_string(), text);
        }
        assert_eq!(ErrorCode::from("write_unknown"), ErrorCode::WriteUnknown);
        assert_eq!(
            ErrorCode::from("credentials_refused"),
            ErrorCode::CredentialsRefused
        );
        assert_eq!(
            ErrorCode::from("conflict"),
            ErrorCode::Named(Status::Conflict)
        );
        assert_eq!(ErrorCode::from(""), ErrorCode::Empty);
    }

    #[test]
    fn a_code_repeats_only_nothing_or_its_own_status() {
        assert!(ErrorCode::Empty.repeats(Status::Failed));
        assert!(ErrorCode::Named(Status::Conflict).repeats(Status::Conflict));
        assert!(!ErrorCode::Named(Status::Conflict).repeats(Status::Failed));
        assert!(!ErrorCode::WriteUnknown.repeats(Status::Failed));
        assert!(!ErrorCode::Text("http_500".into()).repeats(Status::Failed));
    }
}

//! What a failed request means, decided in one place. [`ErrorKind`] says what failed (a 429
//! is [`ErrorKind::Throttled`], apart from the server's errors); [`ErrorKind::decision`] is
//! the one table that says, for each kind, whether to try again, whether the server's
//! `Retry-After` sets the wait, whether the job stops, how the row ends and what the exit
//! code hears of it. The client, the engine and the CLI read the table; none of them
//! compares an error's code or text.

use crate::status::Status;

/// Why a request failed, as a type. An HTTP answer's kind comes from its status alone
/// ([`ErrorKind::of_status`]); every other kind is one of our own, named in the report's
/// `error_code` column by [`ErrorKind::code`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401 or 403: the space refused the credentials.
    Unauthorized,
    /// 404: the gateway does not exist.
    NotFound,
    /// 429: the space refused the request for load.
    Throttled,
    /// Another 4xx (400, 422, ...): the request must change before it can succeed.
    Rejected,
    /// 500, 502, 503 or 504: a transient server error.
    ServerTransient,
    /// Another 5xx (501, 505, ...): no retry fixes it.
    ServerFault,
    /// TLS failed (an untrusted certificate, a peer that does not speak TLS).
    Tls,
    /// The request or its answer took longer than the timeout.
    Timeout,
    /// No connection could be made (refused, DNS).
    Connect,
    /// The connection failed otherwise (dropped mid-answer).
    Transport,
    /// A 2xx whose body is not the resource asked for.
    Unreadable,
    /// An answer longer than the cap read for it.
    TooLarge,
    /// A gateway answer that names another gateway.
    OtherGateway,
    /// A gateway answer with a field of insane size.
    OversizedField,
    /// A 2xx that quotes the credential.
    QuotesCredential,
    /// Not sent: the PATCH would lack a field the API requires.
    IncompleteBody,
    /// Not sent: the body could not be encoded.
    Unencodable,
    /// Not sent: the client stopped sending (credentials refused, the space unreachable).
    Aborted,
    /// Not sent, or given up on the wire: the job was interrupted.
    Interrupted,
}

/// What the decision table says about one kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Another attempt may succeed. (A write that may have landed is read back before
    /// anything else, whatever this says.)
    pub retry: bool,
    /// The server's `Retry-After`, when it sent one, sets the wait before that attempt
    /// (within the retry policy's cap); otherwise the backoff's own delay does.
    pub retry_after: bool,
    /// The space refused for load: the write budget hears a refusal, and the wait before
    /// the retry counts as throttled.
    pub refusal: bool,
    /// What the circuit breaker hears of it.
    pub reach: Reach,
    /// This failure stops the job: nothing is sent after it.
    pub stop: Option<Stop>,
    /// How the row ends when this is its last failure.
    pub row: RowEnd,
    /// What it adds to a run's exit code.
    pub exit: ExitPart,
}

/// What a failure tells the circuit breaker about the space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The space answered: the breaker closes.
    Answered,
    /// No answer came: the breaker counts it toward the outage limit (a pause for
    /// everyone, then the job stops). A command of one request says the space cannot be
    /// reached.
    Unanswered,
    /// Nothing was sent: the breaker hears nothing.
    NotSent,
}

/// Why a failure stops the job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The credentials were refused: every request would be.
    CredentialsRefused,
    /// The space cannot be trusted or reached: no retry fixes it.
    Unreachable,
}

/// How a row ends after its last failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowEnd {
    /// `failed`, with the error's code and message.
    Failed,
    /// `not_found`, with the error's code and message.
    NotFound,
    /// `skipped`, for `--resume`: nothing of it was written, and the job stopped (this
    /// failure's own [`Stop`], or whatever stopped it before).
    Skipped,
}

/// What a failure adds to the exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitPart {
    /// A row that needs attention: exit 1, unless something graver happened.
    RowError,
    /// The job stopped (credentials refused, the space unreachable): exit 3.
    Stopped,
    /// The job was interrupted: exit 4.
    Interrupted,
}

impl RowEnd {
    /// The row's status in the report.
    pub fn status(self) -> Status {
        match self {
            RowEnd::Failed => Status::Failed,
            RowEnd::NotFound => Status::NotFound,
            RowEnd::Skipped => Status::Skipped,
        }
    }
}

impl Decision {
    /// The exit code a command of one request (`show`, `export`) hears: a space that did
    /// not answer cannot be reached (exit 3) there, where a run fails only the row.
    pub fn command_exit(&self) -> ExitPart {
        match self.reach {
            Reach::Unanswered => ExitPart::Stopped,
            _ => self.exit,
        }
    }
}

impl ErrorKind {
    /// Every kind, for the tests that walk the table.
    pub const ALL: [ErrorKind; 19] = [
        ErrorKind::Unauthorized,
        ErrorKind::NotFound,
        ErrorKind::Throttled,
        ErrorKind::Rejected,
        ErrorKind::ServerTransient,
        ErrorKind::ServerFault,
        ErrorKind::Tls,
        ErrorKind::Timeout,
        ErrorKind::Connect,
        ErrorKind::Transport,
        ErrorKind::Unreadable,
        ErrorKind::TooLarge,
        ErrorKind::OtherGateway,
        ErrorKind::OversizedField,
        ErrorKind::QuotesCredential,
        ErrorKind::IncompleteBody,
        ErrorKind::Unencodable,
        ErrorKind::Aborted,
        ErrorKind::Interrupted,
    ];

    /// The kind of an HTTP answer that is not a success, by its status alone: the one
    /// place a status is read as a kind.
    pub fn of_status(status: u16) -> ErrorKind {
        match status {
            401 | 403 => ErrorKind::Unauthorized,
            404 => ErrorKind::NotFound,
            429 => ErrorKind::Throttled,
            500 | 502 | 503 | 504 => ErrorKind::ServerTransient,
            500..=599 => ErrorKind::ServerFault,
            _ => ErrorKind::Rejected,
        }
    }

    /// The report's `error_code` for a failure of our own. An HTTP answer's code is the
    /// one its body named (`missing_sip_configuration`), else `http_NNN`; these texts are
    /// what the report shows when nothing else named it.
    pub fn code(self) -> &'static str {
        match self {
            ErrorKind::Unauthorized => "unauthorized",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Throttled => "throttled",
            ErrorKind::Rejected => "rejected",
            ErrorKind::ServerTransient | ErrorKind::ServerFault => "server_error",
            ErrorKind::Tls => "tls",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Connect => "connect",
            ErrorKind::Transport => "transport",
            ErrorKind::Unreadable => "bad_response",
            ErrorKind::TooLarge => "body_too_large",
            ErrorKind::OtherGateway => "id_mismatch",
            ErrorKind::OversizedField => "oversized_field",
            ErrorKind::QuotesCredential => "credential_in_answer",
            ErrorKind::IncompleteBody => "incomplete_body",
            ErrorKind::Unencodable => "encode",
            ErrorKind::Aborted => "aborted",
            ErrorKind::Interrupted => "interrupted",
        }
    }

    /// The decision table: what a failure of this kind means.
    pub fn decision(self) -> Decision {
        use ErrorKind as K;
        // A row's own failure: not retried, the space answered, the row fails (exit 1).
        let fails = Decision {
            retry: false,
            retry_after: false,
            refusal: false,
            reach: Reach::Answered,
            stop: None,
            row: RowEnd::Failed,
            exit: ExitPart::RowError,
        };
        let not_sent = Decision {
            reach: Reach::NotSent,
            row: RowEnd::Skipped,
            exit: ExitPart::Stopped,
            ..fails
        };
        let unanswered = Decision {
            retry: true,
            reach: Reach::Unanswered,
            ..fails
        };
        match self {
            K::Unauthorized => Decision {
                stop: Some(Stop::CredentialsRefused),
                row: RowEnd::Skipped,
                exit: ExitPart::Stopped,
                ..fails
            },
            K::NotFound => Decision {
                row: RowEnd::NotFound,
                ..fails
            },
            K::Throttled => Decision {
                retry: true,
                retry_after: true,
                refusal: true,
                ..fails
            },
            K::ServerTransient => Decision {
                retry: true,
                retry_after: true,
                ..fails
            },
            // Retried like any transport failure, though no retry fixes it: the job stops
            // at once, so the retry finds the client aborted.
            K::Tls => Decision {
                stop: Some(Stop::Unreachable),
                ..unanswered
            },
            K::Timeout | K::Connect | K::Transport => unanswered,
            K::IncompleteBody | K::Unencodable => Decision {
                reach: Reach::NotSent,
                ..fails
            },
            K::Aborted => not_sent,
            K::Interrupted => Decision {
                exit: ExitPart::Interrupted,
                ..not_sent
            },
            K::Rejected
            | K::ServerFault
            | K::Unreadable
            | K::TooLarge
            | K::OtherGateway
            | K::OversizedField
            | K::QuotesCredential => fails,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ErrorKind as K;

    /// The table written out in full, one line a kind: a change to any one decision
    /// fails here. Columns: retry, retry_after, refusal, reach, stop, row, exit.
    #[test]
    fn each_kind_has_its_decision() {
        use ExitPart::{Interrupted as Int, RowError, Stopped};
        use Reach::{Answered as A, NotSent as N, Unanswered as U};
        use RowEnd::{Failed, NotFound, Skipped};
        let creds = Some(Stop::CredentialsRefused);
        let unreachable = Some(Stop::Unreachable);
        #[rustfmt::skip]
        let table = [
            (K::Unauthorized,     false, false, false, A, creds,       Skipped,  Stopped),
            (K::NotFound,         false, false, false, A, None,        NotFound, RowError),
            (K::Throttled,        true,  true,  true,  A, None,        Failed,   RowError),
            (K::Rejected,         false, false, false, A, None,        Failed,   RowError),
            (K::ServerTransient,  true,  true,  false, A, None,        Failed,   RowError),
            (K::ServerFault,      false, false, false, A, None,        Failed,   RowError),
            (K::Tls,              true,  false, false, U, unreachable, Failed,   RowError),
            (K::Timeout,          true,  false, false, U, None,        Failed,   RowError),
            (K::Connect,          true,  false, false, U, None,        Failed,   RowError),
            (K::Transport,        true,  false, false, U, None,        Failed,   RowError),
            (K::Unreadable,       false, false, false, A, None,        Failed,   RowError),
            (K::TooLarge,         false, false, false, A, None,        Failed,   RowError),
            (K::OtherGateway,     false, false, false, A, None,        Failed,   RowError),
            (K::OversizedField,   false, false, false, A, None,        Failed,   RowError),
            (K::QuotesCredential, false, false, false, A, None,        Failed,   RowError),
            (K::IncompleteBody,   false, false, false, N, None,        Failed,   RowError),
            (K::Unencodable,      false, false, false, N, None,        Failed,   RowError),
            (K::Aborted,          false, false, false, N, None,        Skipped,  Stopped),
            (K::Interrupted,      false, false, false, N, None,        Skipped,  Int),
        ];
        assert_eq!(table.len(), ErrorKind::ALL.len());
        for (kind, retry, retry_after, refusal, reach, stop, row, exit) in table {
            let want = Decision {
                retry,
                retry_after,
                refusal,
                reach,
                stop,
                row,
                exit,
            };
            assert_eq!(kind.decision(), want, "{kind:?}");
        }
        for (kind, row) in ErrorKind::ALL.iter().zip(table) {
            assert_eq!(
                *kind, row.0,
                "ALL lists every kind once, in the table's order"
            );
        }
    }

    #[test]
    fn a_status_is_read_as_its_kind() {
        for (status, kind) in [
            (401, K::Unauthorized),
            (403, K::Unauthorized),
            (404, K::NotFound),
            (429, K::Throttled),
            (400, K::Rejected),
            (409, K::Rejected),
            (422, K::Rejected),
            (500, K::ServerTransient),
            (502, K::ServerTransient),
            (503, K::ServerTransient),
            (504, K::ServerTransient),
            (501, K::ServerFault),
            (505, K::ServerFault),
            (599, K::ServerFault),
            (302, K::Rejected),
        ] {
            assert_eq!(ErrorKind::of_status(status), kind, "{status}");
        }
    }

    /// The statuses retried are exactly the transient ones and 429, and only those wait
    /// for a `Retry-After`.
    #[test]
    fn only_throttling_and_transient_statuses_are_retried() {
        for status in 300..=599 {
            let d = ErrorKind::of_status(status).decision();
            let transient = matches!(status, 429 | 500 | 502 | 503 | 504);
            assert_eq!(d.retry, transient, "{status}");
            assert_eq!(d.retry_after, transient, "{status}");
            assert_eq!(d.refusal, status == 429, "{status}");
        }
    }

    /// The report's `error_code` texts of our own failures, as operators' scripts read them.
    #[test]
    fn our_own_codes_keep_their_texts() {
        let codes: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(
            codes,
            [
                "unauthorized",
                "not_found",
                "throttled",
                "rejected",
                "server_error",
                "server_error",
                "tls",
                "timeout",
                "connect",
                "transport",
                "bad_response",
                "body_too_large",
                "id_mismatch",
                "oversized_field",
                "credential_in_answer",
                "incomplete_body",
                "encode",
                "aborted",
                "interrupted",
            ]
        );
    }

    #[test]
    fn a_row_end_is_its_status_and_a_command_hears_an_unanswered_space_as_stopped() {
        assert_eq!(RowEnd::Failed.status(), Status::Failed);
        assert_eq!(RowEnd::NotFound.status(), Status::NotFound);
        assert_eq!(RowEnd::Skipped.status(), Status::Skipped);
        for kind in ErrorKind::ALL {
            let d = kind.decision();
            let want = if d.reach == Reach::Unanswered {
                ExitPart::Stopped
            } else {
                d.exit
            };
            assert_eq!(d.command_exit(), want, "{kind:?}");
        }
        assert_eq!(K::Timeout.decision().command_exit(), ExitPart::Stopped);
        assert_eq!(K::NotFound.decision().command_exit(), ExitPart::RowError);
        assert_eq!(K::Aborted.decision().command_exit(), ExitPart::Stopped);
    }
}

//! A failed request: its kind ([`crate::failure`] decides what each kind means), its
//! status, code and message; and the server's error bodies read loosely and made inert.

use std::time::Duration;

use reqwest::StatusCode;

use crate::failure::Decision;
use crate::failure::ErrorKind;

/// Why the client stopped sending anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortCause {
    /// 401 or 403.
    Unauthorized,
    /// Every connection failed for longer than the outage limit, or failed in a way no
    /// retry fixes (a TLS certificate the client cannot trust).
    Unreachable(String),
}

/// A failed request, with what a person needs to act on it. Never holds a secret. What
/// it means (retry, wait, stop, the row's status) is its kind's [`Decision`], never its
/// code or text.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    /// The code an error answer's body named (`missing_sip_configuration`, else
    /// `http_422`): shown, never compared. `None` for a failure of our own.
    pub(super) server_code: Option<String>,
    pub message: String,
    /// HTTP attempts this request made.
    pub attempts: u32,
    /// A write that may have reached the server although no good answer came back (the
    /// connection dropped after the request left, a timeout, a 5xx from a proxy, an answer
    /// that could not be believed). Never retried blind: the caller reads the gateway first.
    pub maybe_applied: bool,
    pub(super) retry_after: Option<Duration>,
}

impl ApiError {
    /// A failure of our own: its code is its kind's.
    pub fn new(kind: ErrorKind, message: String) -> ApiError {
        ApiError {
            kind,
            status: None,
            server_code: None,
            message,
            attempts: 0,
            maybe_applied: false,
            retry_after: None,
        }
    }

    /// An error answer: its kind from its status, its code and message from its body.
    pub fn answered(status: u16, code: String, message: String) -> ApiError {
        ApiError {
            status: Some(status),
            server_code: Some(code),
            ..ApiError::new(ErrorKind::of_status(status), message)
        }
    }

    /// The report's `error_code`: the server's code for an error answer, else our kind's.
    pub fn code(&self) -> &str {
        self.server_code.as_deref().unwrap_or(self.kind.code())
    }

    /// What this failure means: its kind's row of the decision table.
    pub fn decision(&self) -> Decision {
        self.kind.decision()
    }

    /// Worth another attempt: its kind says so, and never a write that may have landed
    /// (that one is read back first).
    pub fn retryable(&self) -> bool {
        !self.maybe_applied && self.decision().retry
    }

    /// The server's `Retry-After`, where the kind says it sets the wait.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after.filter(|_| self.decision().retry_after)
    }

    /// The space refused the request for load: the answer's status says so, even when
    /// reading its body then failed.
    pub fn refused(&self) -> bool {
        self.status
            .is_some_and(|s| ErrorKind::of_status(s).decision().refusal)
    }
}

impl ApiError {
    /// Stamps a check's error with the reply it was about.
    pub(super) fn after(mut self, attempts: u32, status: u16) -> ApiError {
        self.attempts = attempts;
        self.status = Some(status);
        self
    }
}

pub(super) fn transport_error(err: &reqwest::Error, attempt: u32) -> ApiError {
    let kind = if is_tls_failure(err) {
        ErrorKind::Tls
    } else if err.is_timeout() {
        ErrorKind::Timeout
    } else if err.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Transport
    };
    ApiError {
        attempts: attempt,
        ..ApiError::new(kind, crate::inert::text(&error_chain(err), 300))
    }
}

/// A TLS failure (an untrusted certificate, a peer that does not speak TLS): no retry
/// fixes it. Found by type anywhere in the error's causes, never by its text.
pub fn is_tls_failure(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(err);
    while let Some(e) = next {
        if e.is::<rustls::Error>() {
            return true;
        }
        // tokio-rustls hands rustls' error over inside an io::Error (itself wrapped in
        // another): an io::Error's `source` skips the error it wraps, so step into it.
        next = match e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    false
}

/// An error and its causes on one line, the way `{:#}` prints an anyhow chain.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// SignalWire's error shapes, read loosely: `errors[]` (422), then `error`, then raw text.
/// Both parts are inert (control characters escaped, length capped): they reach the report,
/// the plan and the log.
pub fn parse_error_body(status: StatusCode, body: &[u8]) -> (String, String) {
    let fallback_code = format!("http_{}", status.as_u16());
    let (code, message) = parse_error_shape(status, body, fallback_code);
    (
        crate::inert::text(&code, 64),
        crate::inert::text(&message, 500),
    )
}

fn parse_error_shape(status: StatusCode, body: &[u8], fallback_code: String) -> (String, String) {
    #[derive(serde::Deserialize)]
    struct Entry {
        code: Option<String>,
        message: Option<String>,
        attribute: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Shape {
        errors: Option<Vec<Entry>>,
        error: Option<serde_json::Value>,
    }
    if let Ok(shape) = serde_json::from_slice::<Shape>(body) {
        if let Some(errors) = shape.errors.filter(|e| !e.is_empty()) {
            let code = errors[0].code.clone().unwrap_or(fallback_code);
            let message = errors
                .iter()
                .map(|e| {
                    let mut m = e.message.clone().unwrap_or_else(|| "error".into());
                    if let Some(c) = &e.code {
                        m = format!("{c}: {m}");
                    }
                    if let Some(a) = &e.attribute {
                        m.push_str(&format!(" (attribute `{a}`)"));
                    }
                    m
                })
                .collect::<Vec<_>>()
                .join("; ");
            return (code, format!("HTTP {}: {message}", status.as_u16()));
        }
        if let Some(error) = shape.error {
            let text = error
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            return (fallback_code, format!("HTTP {}: {text}", status.as_u16()));
        }
    }
    let text = String::from_utf8_lossy(body);
    let text: String = text.trim().chars().take(200).collect();
    let message = if text.is_empty() {
        format!("HTTP {}", status)
    } else {
        format!("HTTP {}: {text}", status.as_u16())
    };
    (fallback_code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_are_read_loosely() {
        let s422 = StatusCode::UNPROCESSABLE_ENTITY;
        let body = br#"{"errors":[{"type":"validation_error","code":"missing_sip_configuration","message":"Ciphers are required","attribute":"ciphers","url":"https://x"},{"code":"other","message":"Also"}]}"#;
        let (code, msg) = parse_error_body(s422, body);
        assert_eq!(code, "missing_sip_configuration");
        assert_eq!(
            msg,
            "HTTP 422: missing_sip_configuration: Ciphers are required (attribute `ciphers`); other: Also"
        );
        let (code, msg) = parse_error_body(StatusCode::NOT_FOUND, br#"{"error":"Not Found"}"#);
        assert_eq!(
            (code.as_str(), msg.as_str()),
            ("http_404", "HTTP 404: Not Found")
        );
        let (_, msg) = parse_error_body(StatusCode::BAD_GATEWAY, b"<html>upstream</html>");
        assert_eq!(msg, "HTTP 502: <html>upstream</html>");
        let (_, msg) = parse_error_body(StatusCode::BAD_GATEWAY, b"");
        assert_eq!(msg, "HTTP 502 Bad Gateway");
    }

    /// An error answer takes its kind from its status and its code from its body; a
    /// failure of our own, its kind's code. What it means is its kind's decision: a 429
    /// is retried after its `Retry-After` and is a refusal; a 404's `Retry-After` is not
    /// heard; a write that may have landed is never retried blind.
    #[test]
    fn an_error_means_what_its_kind_decides() {
        let mut throttled = ApiError::answered(429, "http_429".into(), "slow down".into());
        throttled.retry_after = Some(Duration::from_secs(3));
        assert_eq!(
            (throttled.kind, throttled.status, throttled.code()),
            (ErrorKind::Throttled, Some(429), "http_429")
        );
        assert!(throttled.retryable() && throttled.refused());
        assert_eq!(throttled.retry_after(), Some(Duration::from_secs(3)));
        throttled.maybe_applied = true;
        assert!(!throttled.retryable(), "a write that may have landed");

        let mut gone = ApiError::answered(404, "not_there".into(), "gone".into());
        gone.retry_after = Some(Duration::from_secs(3));
        assert_eq!((gone.kind, gone.code()), (ErrorKind::NotFound, "not_there"));
        assert!(!gone.retryable() && !gone.refused());
        assert_eq!(gone.retry_after(), None);

        let busy = ApiError::answered(503, "http_503".into(), "busy".into());
        assert_eq!(busy.kind, ErrorKind::ServerTransient);
        assert!(busy.retryable() && !busy.refused());

        let timeout = ApiError::new(ErrorKind::Timeout, "slow".into());
        assert_eq!((timeout.code(), timeout.status), ("timeout", None));
        assert!(timeout.retryable() && !timeout.refused());
        assert_eq!(timeout.decision(), ErrorKind::Timeout.decision());
        // A 429 whose body could not be read is still the space refusing for load.
        let dropped = ApiError::new(ErrorKind::Transport, "reset".into()).after(1, 429);
        assert!(dropped.refused());
        assert_eq!(dropped.code(), "transport");
    }

    #[test]
    fn a_tls_error_is_found_inside_nested_io_errors() {
        let tls = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let nested =
            std::io::Error::other(std::io::Error::new(std::io::ErrorKind::InvalidData, tls));
        assert!(is_tls_failure(&nested));
        let plain =
            std::io::Error::other(std::io::Error::from(std::io::ErrorKind::ConnectionReset));
        assert!(!is_tls_failure(&plain));
    }

    /// Found by `fuzz/run.sh` (error_body): a run of control characters escaped past the
    /// length cap.
    #[test]
    fn a_body_of_control_characters_stays_within_the_message_cap() {
        let mut body = br#"{"err"#.to_vec();
        body.extend(std::iter::repeat_n(0x0b, 100));
        body.extend_from_slice(b"or\":\"Not ound\x01\0\0\0\0\0\0\0\0\"}");
        let (code, message) = parse_error_body(StatusCode::UNPROCESSABLE_ENTITY, &body);
        assert!(message.chars().count() <= 520, "{message}");
        assert!(!message.chars().any(char::is_control), "{message:?}");
        assert!(!code.chars().any(char::is_control));
        let (_, message) = parse_error_body(StatusCode::BAD_GATEWAY, &[0x0b; 5000]);
        assert!(message.chars().count() <= 520, "{message}");
    }
}

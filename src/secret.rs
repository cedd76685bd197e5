//! Credentials as a type that cannot leak: `Debug` and `Display` print `(redacted)`, so a
//! settings struct can be logged whole. The token is only read when the auth header is built.
//!
//! A server (or a proxy) may quote the request back, `Authorization` header and all. The
//! [`Redactor`] knows every form in which the token leaves this process and finds them in
//! what comes back, so nothing the server says can carry the credential into a log, a
//! report or a terminal. It lives here because this is the only module that sees the token.

use std::borrow::Cow;
use std::fmt;

/// A secret string (the API token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Holds `value`; from now on the process leaves no core dump (see
    /// [`forbid_core_dumps`]).
    pub fn new(value: impl Into<String>) -> Secret {
        forbid_core_dumps();
        Secret(value.into())
    }

    /// The secret itself. Call sites are few and named: the auth header and the sandbox.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(redacted)")
    }
}

/// A project id and its API token: HTTP Basic's user and password.
#[derive(Clone, Debug)]
pub struct Credentials {
    pub project_id: String,
    pub token: Secret,
}

impl Credentials {
    /// The `Authorization` header value, marked sensitive so hyper never logs it.
    pub fn basic_auth_header(&self) -> reqwest::header::HeaderValue {
        use base64::Engine;
        let raw = format!("{}:{}", self.project_id, self.token.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        // Base64 output is always a valid header value.
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Basic {encoded}"))
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("Basic"));
        value.set_sensitive(true);
        value
    }
}

/// Marks the process not dumpable (Linux): a crash leaves no core file holding the token,
/// and no other process of the same user can attach to read it. Once is enough: the mark
/// lasts as long as the process.
pub fn forbid_core_dumps() {
    #[cfg(target_os = "linux")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            // SAFETY: PR_SET_DUMPABLE takes one integer argument and touches no memory of
            // ours; the unused arguments are zero as the man page asks.
            let done = unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
            if done != 0 {
                tracing::warn!(
                    "could not mark the process not dumpable: a core dump could hold the token"
                );
            }
        });
    }
}

/// What stands in for the credential in a server's text.
pub const REDACTED: &str = "(redacted)";

/// Finds the token in what the server sends back, in each encoding the tool sends it in.
#[derive(Clone, Debug, Default)]
pub struct Redactor {
    /// Longest first, so a form that holds another is replaced whole. Each searcher is
    /// built once: every answer is searched, and building one costs more than a search of a
    /// gateway's answer.
    needles: Vec<memchr::memmem::Finder<'static>>,
}

impl Credentials {
    /// The forms of the token to look for: as is, percent-encoded, and the Basic auth
    /// header's base64 of `project:token` (standard and URL-safe alphabets, with or without
    /// padding, and with `/` escaped as JSON may write it).
    pub fn redactor(&self) -> Redactor {
        use base64::Engine;
        use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
        let token = self.token.expose();
        let pair = format!("{}:{}", self.project_id, token);
        let standard = STANDARD_NO_PAD.encode(&pair);
        let mut needles = vec![
            token.to_owned(),
            percent_encode(token),
            standard.replace('/', "\\/"),
            URL_SAFE_NO_PAD.encode(&pair),
            standard,
        ];
        // A token of a few characters would match everywhere; real ones are long.
        needles.retain(|n| n.len() >= 8);
        needles.sort_by_key(|n| std::cmp::Reverse(n.len()));
        needles.dedup();
        Redactor {
            needles: needles
                .iter()
                .map(|n| memchr::memmem::Finder::new(n.as_bytes()).into_owned())
                .collect(),
        }
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Redactor {
    /// Whether `bytes` hold the credential in any form.
    pub fn found_in(&self, bytes: &[u8]) -> bool {
        self.needles.iter().any(|n| n.find(bytes).is_some())
    }

    /// `bytes` with every form of the credential replaced by [`REDACTED`].
    pub fn redact<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        if !self.found_in(bytes) {
            return Cow::Borrowed(bytes);
        }
        let mut out = bytes.to_vec();
        for needle in &self.needles {
            let mut next = Vec::with_capacity(out.len());
            let mut rest = &out[..];
            while let Some(at) = needle.find(rest) {
                next.extend_from_slice(&rest[..at]);
                next.extend_from_slice(REDACTED.as_bytes());
                rest = &rest[at + needle.needle().len()..];
            }
            next.extend_from_slice(rest);
            out = next;
        }
        Cow::Owned(out)
    }

    /// [`Redactor::redact`] for text.
    pub fn redact_text<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let c = Credentials {
            project_id: "p".into(),
            token: Secret::new("PT-very-secret"),
        };
        assert!(!format!("{c:?}").contains("very-secret"));
        assert_eq!(format!("{}", c.token), "(redacted)");
        assert_eq!(format!("{:?}", c.token), "(redacted)");
        assert!(c.basic_auth_header().is_sensitive());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn holding_a_secret_makes_the_process_not_dumpable() {
        let _s = Secret::new("PT-x");
        // SAFETY: PR_GET_DUMPABLE reads a flag and takes no pointer.
        let dumpable = unsafe { libc::prctl(libc::PR_GET_DUMPABLE, 0, 0, 0, 0) };
        assert_eq!(dumpable, 0);
    }

    #[test]
    fn every_form_of_the_token_the_tool_sends_is_found_and_replaced() {
        let c = Credentials {
            project_id: "p-1234".into(),
            token: Secret::new("PT?secret/token+value"),
        };
        let r = c.redactor();
        let header = c.basic_auth_header();
        let header = header.to_str().unwrap();
        let b64 = header.trim_start_matches("Basic ");
        let quoted = [
            format!("echo: {header}"),
            format!("{{\"authorization\":\"{}\"}}", b64.replace('/', "\\/")),
            "token=PT%3Fsecret%2Ftoken%2Bvalue".to_owned(),
            "raw PT?secret/token+value twice PT?secret/token+value".to_owned(),
            {
                use base64::Engine;
                base64::engine::general_purpose::URL_SAFE.encode("p-1234:PT?secret/token+value")
            },
        ];
        for text in &quoted {
            assert!(r.found_in(text.as_bytes()), "{text}");
            let clean = r.redact_text(text);
            assert!(!r.found_in(clean.as_bytes()), "{clean}");
            assert!(!clean.contains("secret/token"), "{clean}");
            assert!(clean.contains(REDACTED), "{clean}");
        }
        assert_eq!(
            r.redact_text("raw PT?secret/token+value."),
            "raw (redacted)."
        );
        let plain = "nothing to see";
        assert!(matches!(r.redact_text(plain), Cow::Borrowed(_)));
        assert!(!r.found_in(plain.as_bytes()));
        // A token too short to search for safely is not searched for.
        let tiny = Credentials {
            project_id: String::new(),
            token: Secret::new("ab"),
        };
        assert!(!tiny.redactor().found_in(b"abab"));
    }
}

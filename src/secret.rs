//! Credentials as a type that cannot leak: `Debug` and `Display` print `(redacted)`, so a
//! settings struct can be logged whole. The token is only read when the auth header is built.

use std::fmt;

/// A secret string (the API token).
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
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
        assert!(c.basic_auth_header().is_sensitive());
    }
}

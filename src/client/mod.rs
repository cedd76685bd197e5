//! The SignalWire SIP gateway API over HTTP: GET, PATCH and list, with Basic auth, timeouts,
//! the shared rate limiter and retries.
//!
//! Two types make "plan never writes" a fact of construction: [`ReadClient`] can only read;
//! [`WriteClient`] wraps one and adds PATCH. The plan path is never handed a `WriteClient`.
//!
//! A 401 or 403 trips the client's abort token: every request after it fails at once
//! without touching the network, so bad credentials are not hammered. A space that cannot
//! be reached trips it too, through the [`Breaker`], once the outage limit passes (a TLS
//! failure at once: no retry can mend it).
//!
//! Nothing the server says is believed unchecked: bodies are read against a size cap, a
//! gateway answer must carry the id that was asked for and fields of sane size, and a
//! write whose answer was lost is reported as such ([`ApiError::maybe_applied`]) instead of
//! being sent again blind.
//!
//! The parts: `send` (one request: permits, retries, the breaker, the write budget's
//! answers), `answers` (answers counted by kind and status code, for the metrics), `body` (bodies read against a cap and checked before they are believed),
//! `error` (what failed, as a type, and the server's error bodies read loosely), `paging`
//! (list pages and the links between them) and `write` (the PATCH, one attempt at a time,
//! for the engine's read-before-write loop).

mod answers;
mod body;
mod error;
mod paging;
mod send;
mod write;

use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use reqwest::header::{self, HeaderMap, HeaderValue};
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use crate::breaker::Breaker;
use crate::latency::{Latencies, RequestKind};
use crate::limiter::{Limiter, RequestSlot};
use crate::model::{GATEWAYS_PATH, GatewayResource};
use crate::retry::RetryPolicy;
use crate::secret::Credentials;

pub use answers::{AnswerCounts, ProjectAnswers, ProjectSnapshot};
use body::{check_gateway, decode};
use error::error_chain;
pub use error::{AbortCause, ApiError, is_tls_failure, parse_error_body};
pub use paging::{Links, Page};
pub use write::{Patched, ReadAge, WriteSchedule};

/// The largest answer read for one gateway (GET, PATCH, and any error body): a real one is
/// under 1 KiB.
pub const MAX_GATEWAY_BODY: usize = 256 * 1024;
/// The largest list page read: 1,000 gateways of about 600 bytes each, with room to spare.
pub const MAX_PAGE_BODY: usize = 16 * 1024 * 1024;

/// What the client needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `https://{space}.signalwire.com`, or a loopback `http://` URL (the sandbox).
    pub base_url: Url,
    pub credentials: Credentials,
    /// Whole-request timeout, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// Idle keep-alive connections kept per host; set to the job's concurrency.
    pub pool_size: usize,
}

/// Counters for the summary, shared by every request.
#[derive(Debug, Default)]
pub struct RequestStats {
    /// HTTP attempts sent (first tries and retries).
    pub requests: AtomicU64,
    /// Attempts that were retries.
    pub retries: AtomicU64,
    /// Write attempts (PATCH) sent, and when the first and the last went.
    pub writes: AtomicU64,
    pub write_span: crate::latency::Span,
    /// Time rows waited for their write slot, in all (what `--rate` or the space's write
    /// budget cost the job).
    pub slot_wait_us: AtomicU64,
    /// How long each attempt took, answer read, per kind of request.
    pub latencies: Latencies,
    /// Refusals for load (429) followed by a retry, and how long those retries waited in
    /// all (each delays only its own request; a 429 that ends its request is not here).
    pub throttled: AtomicU64,
    pub throttled_wait_us: AtomicU64,
    /// Answers by kind of request and status code (the run's metrics).
    pub answers: AnswerCounts,
    /// The same answers per project, from the clients made [`ReadClient::for_project`].
    pub projects: ProjectAnswers,
}

/// A successful reply and how many attempts it took.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub status: u16,
    pub attempts: u32,
    /// The answered attempt's round trip, from sent to answered.
    pub round_trip: Duration,
}

struct Inner {
    http: reqwest::Client,
    collection: Url,
    limiter: Arc<Limiter>,
    retry: RetryPolicy,
    stats: Arc<RequestStats>,
    /// Cancelled by the client itself, when the space refuses the credentials or cannot
    /// be reached.
    abort: CancellationToken,
    abort_cause: OnceLock<AbortCause>,
    /// The job's own stop (an interrupt, the error limit, the ledger).
    stop: CancellationToken,
    breaker: Breaker,
    /// The space as a person knows it, for messages: `https://acme.signalwire.com`.
    space: String,
    rate_headers_logged: AtomicBool,
    /// Finds the credential in what the server sends back.
    redactor: crate::secret::Redactor,
    /// What the latest answer's headers said about the space (for `doctor`).
    last_answer: std::sync::Mutex<RawAnswerHeaders>,
    /// Its project's answers, in a run of several projects ([`ReadClient::for_project`]).
    project_answers: Option<Arc<AnswerCounts>>,
}

/// The rate-limit headers and the `Date` of the latest answer, as `doctor` shows them:
/// names lowercase, values made inert and cut, the credential cut out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnswerHeaders {
    pub rate_limit: Vec<(String, String)>,
    pub date: Option<std::time::SystemTime>,
}

/// The latest answer's rate-limit headers and `Date` as they came (cheap clones of the
/// header values): every answer is kept, only `doctor` reads them, so they are made
/// inert, redacted and parsed when read ([`ReadClient::last_answer_headers`]).
#[derive(Debug, Default)]
struct RawAnswerHeaders {
    rate_limit: Vec<(header::HeaderName, HeaderValue)>,
    date: Option<HeaderValue>,
}

/// Reads gateways. Cheap to clone; clones share the connection pool, limiter and counters.
#[derive(Clone)]
pub struct ReadClient {
    inner: Arc<Inner>,
}

/// Reads and writes gateways. Only `apply` builds one.
#[derive(Clone)]
pub struct WriteClient {
    read: ReadClient,
}

/// What ends a client's requests: after either token, no request starts and a retry's
/// wait ends; a request already sent finishes.
#[derive(Debug, Clone, Default)]
pub struct Cancel {
    /// Cancelled by the client itself when the space refuses the credentials or cannot be
    /// reached (see [`ReadClient::abort_cause`]); a job watches it to stop.
    pub abort: CancellationToken,
    /// The job's own stop (an interrupt, the error limit, the ledger), from outside.
    pub stop: CancellationToken,
}

/// A client that cannot be built (TLS setup, bad base URL).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct ClientBuildError(String);

impl ReadClient {
    pub fn new(
        config: &ClientConfig,
        limiter: Arc<Limiter>,
        stats: Arc<RequestStats>,
        cancel: Cancel,
    ) -> Result<ReadClient, ClientBuildError> {
        ReadClient::build(config, limiter, stats, cancel, None)
    }

    /// A client of one project of a run of several: its answers are also counted under
    /// its project id in `stats.projects`.
    pub fn for_project(
        config: &ClientConfig,
        limiter: Arc<Limiter>,
        stats: Arc<RequestStats>,
        cancel: Cancel,
    ) -> Result<ReadClient, ClientBuildError> {
        let answers = stats.projects.of(&config.credentials.project_id);
        ReadClient::build(config, limiter, stats, cancel, Some(answers))
    }

    fn build(
        config: &ClientConfig,
        limiter: Arc<Limiter>,
        stats: Arc<RequestStats>,
        Cancel { abort, stop }: Cancel,
        project_answers: Option<Arc<AnswerCounts>>,
    ) -> Result<ReadClient, ClientBuildError> {
        // Ring is our rustls crypto provider; installing it twice is harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            config.credentials.basic_auth_header(),
        );
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("sipgw-bulk/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            .pool_max_idle_per_host(config.pool_size.max(1))
            .pool_idle_timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            // Never follow a redirect: the auth header must not go to another host.
            .redirect(reqwest::redirect::Policy::none())
            // reqwest 0.13 retries some refusals by itself, outside our limiter. No retries
            // at all: its retry layer otherwise copies every request (headers and all) in
            // case it retries, even with a scope that never does.
            .retry(reqwest::retry::never().max_retries_per_request(0))
            .build()
            .map_err(|e| ClientBuildError(error_chain(&e)))?;
        let collection = join_path(&config.base_url, GATEWAYS_PATH)?;
        let space = config.base_url.as_str().trim_end_matches('/').to_owned();
        Ok(ReadClient {
            inner: Arc::new(Inner {
                http,
                collection,
                limiter,
                retry: config.retry,
                stats,
                abort,
                abort_cause: OnceLock::new(),
                stop,
                breaker: Breaker::new(
                    config.retry.min_delay,
                    config.retry.max_delay,
                    config.retry.max_outage,
                ),
                space,
                rate_headers_logged: AtomicBool::new(false),
                redactor: config.credentials.redactor(),
                last_answer: std::sync::Mutex::new(RawAnswerHeaders::default()),
                project_answers,
            }),
        })
    }

    /// The limiter every request of this client waits at (the job's, shared by every
    /// project's clients).
    pub fn limiter(&self) -> &Limiter {
        &self.inner.limiter
    }

    /// The tokens that end this client's requests (the job's too).
    pub fn cancel(&self) -> Cancel {
        Cancel {
            abort: self.inner.abort.clone(),
            stop: self.inner.stop.clone(),
        }
    }

    /// The rate-limit headers and `Date` of the latest answer (empty before any).
    pub fn last_answer_headers(&self) -> AnswerHeaders {
        let Ok(raw) = self.inner.last_answer.lock() else {
            return AnswerHeaders::default();
        };
        let redactor = &self.inner.redactor;
        let rate_limit = raw
            .rate_limit
            .iter()
            .map(|(name, value)| {
                let value = redactor.redact_text(value.to_str().unwrap_or("?"));
                (
                    crate::inert::text(name.as_str(), 100),
                    crate::inert::text(&value, 100),
                )
            })
            .collect();
        let date = raw
            .date
            .as_ref()
            .and_then(|d| d.to_str().ok())
            .and_then(|d| httpdate::parse_http_date(d).ok());
        AnswerHeaders { rate_limit, date }
    }

    /// Why the client stopped sending, once it has.
    pub fn abort_cause(&self) -> Option<AbortCause> {
        self.inner.abort_cause.get().cloned()
    }

    /// Stops every request; true for the call that gave the cause (the first one).
    fn abort_with(&self, cause: AbortCause) -> bool {
        let first = self.inner.abort_cause.set(cause).is_ok();
        self.inner.abort.cancel();
        first
    }

    /// GET one gateway by its resource id. The answer must be that gateway.
    pub async fn get_gateway(&self, id: &Uuid) -> Result<Reply<GatewayResource>, ApiError> {
        self.get_gateway_keeping_slot(id)
            .await
            .map(|(reply, _slot)| reply)
    }

    /// [`ReadClient::get_gateway`], keeping its place among the requests on the wire for
    /// the PATCH built from it ([`WriteClient::patch_once`]): no queue between the read a
    /// write is built from and the write.
    pub async fn get_gateway_keeping_slot(
        &self,
        id: &Uuid,
    ) -> Result<(Reply<GatewayResource>, RequestSlot), ApiError> {
        let url = self.gateway_url(id);
        let (reply, slot) = self.call_keeping_slot(RequestKind::Get, url, None).await?;
        let reply: Reply<GatewayResource> = decode(reply)?;
        check_gateway(&reply.value, Some(id)).map_err(|e| e.after(reply.attempts, reply.status))?;
        Ok((reply, slot))
    }

    /// The collection's URL and `/{id}`: only the id is parsed onto it (a hyphenated id
    /// needs no escaping), not the whole path again.
    fn gateway_url(&self, id: &Uuid) -> Url {
        let mut url = self.inner.collection.clone();
        // The collection is a base URL (`join_path` checked), so this cannot fail.
        if let Ok(mut path) = url.path_segments_mut() {
            path.push(id.hyphenated().encode_lower(&mut Uuid::encode_buffer()));
        }
        url
    }
}

/// `base` + `path`, keeping any path prefix the base URL has.
fn join_path(base: &Url, path: &str) -> Result<Url, ClientBuildError> {
    let mut url = base.clone();
    let prefix = base.path().trim_end_matches('/');
    url.set_path(&format!("{prefix}{path}"));
    url.set_query(None);
    if url.cannot_be_a_base() {
        return Err(ClientBuildError(format!("`{base}` is not a base URL")));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gateway_url_is_the_collection_and_the_id() {
        let id = Uuid::parse_str("0f8fad5b-d9cb-469f-a165-70867728950e").unwrap();
        for (base, want) in [
            (
                "http://127.0.0.1:9",
                "http://127.0.0.1:9/api/fabric/resources/sip_gateways/",
            ),
            (
                "https://acme.signalwire.com/",
                "https://acme.signalwire.com/api/fabric/resources/sip_gateways/",
            ),
            (
                "http://127.0.0.1:9/prefix/?q=1",
                "http://127.0.0.1:9/prefix/api/fabric/resources/sip_gateways/",
            ),
        ] {
            let config = ClientConfig {
                base_url: Url::parse(base).unwrap(),
                credentials: Credentials {
                    project_id: "p".into(),
                    token: crate::secret::Secret::new("PT0123456789"),
                },
                timeout: Duration::from_secs(1),
                connect_timeout: Duration::from_secs(1),
                retry: RetryPolicy::default(),
                pool_size: 1,
            };
            let client = ReadClient::new(
                &config,
                Arc::new(Limiter::new(None, None)),
                Arc::default(),
                Cancel::default(),
            )
            .unwrap();
            assert_eq!(client.gateway_url(&id).as_str(), format!("{want}{id}"));
        }
    }

    #[test]
    fn collection_url_keeps_a_prefix() {
        let base = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(
            join_path(&base, GATEWAYS_PATH).unwrap().as_str(),
            "http://127.0.0.1:9/prefix/api/fabric/resources/sip_gateways"
        );
    }
}

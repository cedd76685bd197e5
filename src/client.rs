//! The SignalWire SIP gateway API over HTTP: GET, PATCH and list, with Basic auth, timeouts,
//! the shared rate limiter and retries.
//!
//! Two types make "plan never writes" a fact of construction: [`ReadClient`] can only read;
//! [`WriteClient`] wraps one and adds PATCH. The plan path is never handed a `WriteClient`.
//!
//! A 401 or 403 trips the client's abort token: every request after it fails at once
//! without touching the network, so bad credentials are not hammered. A space that cannot
//! be reached trips it too, through the [`Breaker`], once the outage budget is spent.
//!
//! Nothing the server says is believed unchecked: bodies are read against a size cap, a
//! gateway answer must carry the id that was asked for and fields of sane size, and a
//! write whose answer was lost is reported as such ([`ApiError::maybe_applied`]) instead of
//! being sent again blind.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use backon::Retryable;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use tokio_util::sync::CancellationToken;
use url::Url;
use uuid::Uuid;

use crate::breaker::{Breaker, Verdict};
use crate::budget::{Answer, Held, Ticket, WriteBudget};
use crate::latency::{Latencies, RequestKind};
use crate::limiter::{Budget, Limiter};
use crate::model::{
    Encryption, GATEWAYS_PATH, GatewayFields, GatewayResource, MAX_LIST_FIELD, MAX_TEXT_FIELD,
};
use crate::retry::{RetryPolicy, is_retryable_status, parse_retry_after};
use crate::secret::Credentials;

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
    /// Write attempts (PATCH) sent.
    pub writes: AtomicU64,
    /// How long each attempt took, answer read, per kind of request.
    pub latencies: Latencies,
    /// 429 answers that paused the job, and the pauses' total length.
    pub throttled: AtomicU64,
    pub throttled_wait_us: AtomicU64,
}

/// Why a request failed, as a type: the engine maps it to a row status, never by its text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// 401 or 403: the job stops.
    Unauthorized,
    /// 404: the gateway does not exist.
    NotFound,
    /// Another 4xx (400, 422, ...): the request must change before it can succeed.
    Rejected,
    /// 429 or a 5xx that outlived its retries.
    Server,
    /// Connection refused or dropped, timeout: outlived its retries.
    Transport,
    /// A 2xx whose body is not the resource we expected (unreadable, too large, oversized
    /// fields, or another gateway's id).
    BadResponse,
    /// Not sent: the job was aborted (bad credentials, or the space unreachable).
    Aborted,
}

/// Why the client stopped sending anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AbortCause {
    /// 401 or 403.
    Unauthorized,
    /// Every connection failed for longer than the outage budget, or failed in a way no
    /// retry fixes (a TLS certificate the client cannot trust).
    Unreachable(String),
}

/// A failed request, with what a person needs to act on it. Never holds a secret.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub kind: ErrorKind,
    pub status: Option<u16>,
    /// The server's error code (`missing_sip_configuration`) or our own (`timeout`).
    pub code: String,
    pub message: String,
    /// HTTP attempts this request made.
    pub attempts: u32,
    /// A write that may have reached the server although no good answer came back (the
    /// connection dropped after the request left, a timeout, a 5xx from a proxy, an answer
    /// that could not be believed). Never retried blind: the caller reads the gateway first.
    pub maybe_applied: bool,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(kind: ErrorKind, status: Option<u16>, code: &str, message: String) -> ApiError {
        ApiError {
            kind,
            status,
            code: code.to_owned(),
            message,
            attempts: 0,
            maybe_applied: false,
            retry_after: None,
        }
    }

    /// Worth another attempt: a transport failure or a transient status, and never a
    /// write that may have landed (that one is read back first).
    pub fn retryable(&self) -> bool {
        if self.maybe_applied {
            return false;
        }
        match self.kind {
            ErrorKind::Transport => true,
            ErrorKind::Server => self.status.is_none_or(is_retryable_status),
            _ => false,
        }
    }
}

/// A successful reply and how many attempts it took.
#[derive(Debug, Clone)]
pub struct Reply<T> {
    pub value: T,
    pub status: u16,
    pub attempts: u32,
}

struct Inner {
    http: reqwest::Client,
    collection: Url,
    limiter: Arc<Limiter>,
    retry: RetryPolicy,
    stats: Arc<RequestStats>,
    abort: CancellationToken,
    abort_cause: OnceLock<AbortCause>,
    breaker: Breaker,
    /// The space as a person knows it, for messages: `https://acme.signalwire.com`.
    space: String,
    rate_headers_logged: AtomicBool,
    /// Finds the credential in what the server sends back.
    redactor: crate::secret::Redactor,
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

/// A client that cannot be built (TLS setup, bad base URL).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up the HTTP client: {0}")]
pub struct ClientBuildError(String);

impl ReadClient {
    pub fn new(
        config: &ClientConfig,
        limiter: Arc<Limiter>,
        stats: Arc<RequestStats>,
        abort: CancellationToken,
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
            // reqwest 0.13 retries some refusals by itself, outside our limiter.
            .retry(reqwest::retry::never())
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
                breaker: Breaker::new(
                    config.retry.min_delay,
                    config.retry.max_delay,
                    config.retry.outage_budget,
                ),
                space,
                rate_headers_logged: AtomicBool::new(false),
                redactor: config.credentials.redactor(),
            }),
        })
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
        let url = self.gateway_url(id);
        let reply = self.call(RequestKind::Get, url, None).await?;
        let reply: Reply<GatewayResource> = decode(reply)?;
        check_gateway(&reply.value, Some(id)).map_err(|e| e.after(reply.attempts, reply.status))?;
        Ok(reply)
    }

    /// The first page of the list, asking for `page_size` gateways a page.
    pub fn first_page_url(&self, page_size: u32) -> Url {
        let mut url = self.inner.collection.clone();
        url.set_query(Some(&format!("page_size={page_size}")));
        url
    }

    /// GET one page of the gateway list. Every gateway on it is checked like a GET answer.
    pub async fn list_page(&self, url: Url) -> Result<Reply<Page>, ApiError> {
        let reply = self.call(RequestKind::List, url, None).await?;
        let reply: Reply<Page> = decode(reply)?;
        for gateway in &reply.value.data {
            check_gateway(gateway, None).map_err(|e| e.after(reply.attempts, reply.status))?;
        }
        Ok(reply)
    }

    /// Resolves a `links.next` (absolute URL or path) against the space. A link to another
    /// scheme, host or port, or one carrying a user name or password, is refused: the
    /// credentials must never leave for another host or be replaced by the server's.
    pub fn resolve_link(&self, next: &str) -> Result<Url, String> {
        let base = &self.inner.collection;
        let shown = crate::inert::text(next, 200);
        let url = base
            .join(next)
            .map_err(|e| format!("`links.next` {shown} is not a URL: {e}"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err(format!(
                "`links.next` {shown} carries a user name or password: refused, so the \
                 credentials are never replaced by the server's"
            ));
        }
        if url.scheme() != base.scheme()
            || url.host_str() != base.host_str()
            || url.port_or_known_default() != base.port_or_known_default()
        {
            return Err(format!(
                "`links.next` points to {}://{} but the space is {}://{}: refused, so the \
                 credentials do not leave for another host",
                url.scheme(),
                crate::inert::text(url.host_str().unwrap_or(""), 100),
                base.scheme(),
                base.host_str().unwrap_or("")
            ));
        }
        Ok(url)
    }

    fn gateway_url(&self, id: &Uuid) -> Url {
        let mut url = self.inner.collection.clone();
        url.set_path(&format!(
            "{}/{}",
            self.inner.collection.path(),
            id.hyphenated()
        ));
        url
    }

    /// One HTTP request with permits, retries and error mapping.
    async fn call(
        &self,
        kind: RequestKind,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Reply<bytes_body::Body>, ApiError> {
        let inner = &self.inner;
        let budget = match kind {
            RequestKind::Get | RequestKind::List => Budget::Read,
            RequestKind::Patch => Budget::Write,
        };
        let attempts = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let attempt = || async {
            if inner.abort.is_cancelled() {
                return Err(self.aborted(attempts.load(Ordering::Relaxed)));
            }
            // While the space is failing, one request at a time probes it.
            let _probe = if inner.breaker.is_open() {
                Some(inner.breaker.probe().await)
            } else {
                None
            };
            if let Err(held) = inner.limiter.acquire(budget).await {
                self.stop_held(&held);
            }
            if inner.abort.is_cancelled() {
                return Err(self.aborted(attempts.load(Ordering::Relaxed)));
            }
            let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            self.send_counted(kind, url.clone(), body.clone(), n).await
        };
        attempt
            .retry(inner.retry.backoff())
            .sleep(tokio::time::sleep)
            .when(ApiError::retryable)
            .adjust(|err: &ApiError, backoff| {
                inner
                    .retry
                    .next_delay(err.retry_after, backoff, started.elapsed())
            })
            .notify(|err: &ApiError, wait: Duration| self.before_retry(err, wait))
            .await
    }

    /// One HTTP attempt whose permit is held: counted, timed, and fed to the write pace
    /// and the breaker. `n` is the attempt's number for this request (1 for a first try).
    async fn send_counted(
        &self,
        kind: RequestKind,
        url: Url,
        body: Option<Vec<u8>>,
        n: u32,
    ) -> Result<Reply<bytes_body::Body>, ApiError> {
        let inner = &self.inner;
        let (method, max_body) = match kind {
            RequestKind::Get => (Method::GET, MAX_GATEWAY_BODY),
            RequestKind::List => (Method::GET, MAX_PAGE_BODY),
            RequestKind::Patch => (Method::PATCH, MAX_GATEWAY_BODY),
        };
        inner.stats.requests.fetch_add(1, Ordering::Relaxed);
        if n > 1 {
            inner.stats.retries.fetch_add(1, Ordering::Relaxed);
        }
        if kind == RequestKind::Patch {
            inner.stats.writes.fetch_add(1, Ordering::Relaxed);
        }
        let sent = tokio::time::Instant::now();
        // A write's answer, headers and all, tells the write budget what the space has left.
        let write = match (kind, inner.limiter.budget()) {
            (RequestKind::Patch, Some(budget)) => Some((budget, budget.sent())),
            _ => None,
        };
        let result = self.send_once(method, url, body, n, max_body, write).await;
        inner.stats.latencies.of(kind).record(sent.elapsed());
        if let Some((budget, ticket)) = write {
            let answer = match &result {
                Ok(_) => Answer::Accepted,
                Err(e) if e.status == Some(429) => Answer::Refused(e.retry_after),
                Err(_) => Answer::Other,
            };
            budget.answered(&ticket, answer);
        }
        self.note_reachability(&result);
        result
    }

    /// The space's count held the job at the reserve past the outage budget: the job stops
    /// as it does when the space cannot be reached (exit 3, rows left `skipped`).
    fn stop_held(&self, held: &Held) {
        if self.abort_with(AbortCause::Unreachable(held.to_string())) {
            tracing::error!("stopping: {held}");
        }
    }

    /// Before a retry that waits `wait`. A 429 delays only its own request: a proxy or a
    /// flaky edge refusing a share of everything must not hold every worker back (the
    /// write budget decides when every write waits).
    fn before_retry(&self, err: &ApiError, wait: Duration) {
        let inner = &self.inner;
        if err.status == Some(429) {
            inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
            inner.stats.throttled_wait_us.fetch_add(
                u64::try_from(wait.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        tracing::debug!(
            status = err.status,
            code = %err.code,
            wait_ms = wait.as_millis() as u64,
            "retrying: {}",
            err.message
        );
    }

    /// Feeds the breaker: any answer closes it; a failed connection pauses everyone or,
    /// past the outage budget (or on a TLS failure, which no retry fixes), stops the job.
    fn note_reachability(&self, result: &Result<Reply<bytes_body::Body>, ApiError>) {
        let inner = &self.inner;
        let err = match result {
            Ok(_) => return inner.breaker.on_answer(),
            Err(e) if e.kind == ErrorKind::Transport => e,
            Err(e) if e.kind == ErrorKind::Aborted => return,
            Err(_) => return inner.breaker.on_answer(),
        };
        if err.code == "tls" {
            // Said once, by whoever stops the job: the rows in flight fail the same way.
            if self.abort_with(AbortCause::Unreachable(err.message.clone())) {
                tracing::error!(space = %inner.space, "cannot reach the space: {}", err.message);
            }
            return;
        }
        match inner.breaker.on_failure() {
            Verdict::Pause(wait) => inner.limiter.pause_all(wait),
            Verdict::GiveUp { failing_for } => {
                let why = format!(
                    "every connection to {} failed for {}s (last: {})",
                    inner.space,
                    failing_for.as_secs(),
                    err.message
                );
                if self.abort_with(AbortCause::Unreachable(why.clone())) {
                    tracing::error!("cannot reach the space: {why}");
                }
            }
        }
    }

    fn aborted(&self, attempts: u32) -> ApiError {
        let message = match self.inner.abort_cause.get() {
            Some(AbortCause::Unreachable(_)) => {
                "not sent: the job stopped because the space could not be reached"
            }
            _ => "not sent: the job stopped after the server refused the credentials",
        };
        ApiError {
            attempts,
            ..ApiError::new(ErrorKind::Aborted, None, "aborted", message.into())
        }
    }

    async fn send_once(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        attempt: u32,
        max_body: usize,
        budget: Option<(&WriteBudget, Ticket)>,
    ) -> Result<Reply<bytes_body::Body>, ApiError> {
        let inner = &self.inner;
        let write = method != Method::GET;
        let mut request = inner.http.request(method, url);
        if let Some(body) = body {
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        let response = request.send().await.map_err(|e| {
            let mut err = transport_error(&e, attempt);
            // A request that never connected was never sent; anything later may have been.
            err.maybe_applied = write && !e.is_connect();
            err
        })?;
        let status = response.status();
        self.log_rate_headers(response.headers());
        if let Some((budget, ticket)) = &budget {
            budget.headers(ticket, response.headers());
        }
        let retry_after = response
            .headers()
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = read_capped(response, max_body, attempt)
            .await
            .map_err(|mut err| {
                err.status = Some(status.as_u16());
                err.maybe_applied = write && status != StatusCode::TOO_MANY_REQUESTS;
                err
            })?;
        if status.is_success() {
            if inner.redactor.found_in(&bytes) {
                // Believed, it would reach the report and the terminal; altered, a full-body
                // PATCH would write the alteration back.
                return Err(ApiError {
                    attempts: attempt,
                    maybe_applied: write,
                    ..ApiError::new(
                        ErrorKind::BadResponse,
                        Some(status.as_u16()),
                        "credential_in_answer",
                        "the server's answer quotes the credential: not believed".into(),
                    )
                });
            }
            return Ok(Reply {
                value: bytes_body::Body(bytes),
                status: status.as_u16(),
                attempts: attempt,
            });
        }
        let kind = match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                self.abort_with(AbortCause::Unauthorized);
                ErrorKind::Unauthorized
            }
            StatusCode::NOT_FOUND => ErrorKind::NotFound,
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => ErrorKind::Server,
            _ => ErrorKind::Rejected,
        };
        // Error bodies are shown: the credential is cut out of them first (a server may
        // quote the request back, header and all).
        let (code, message) = parse_error_body(status, &inner.redactor.redact(&bytes));
        Err(ApiError {
            attempts: attempt,
            // A 5xx may come from a proxy after the server applied the write.
            maybe_applied: write && status.is_server_error(),
            retry_after,
            ..ApiError::new(kind, Some(status.as_u16()), &code, message)
        })
    }

    /// The platform's rate-limit headers have no documented names: log the `x-` headers
    /// that look like them, once, at debug.
    fn log_rate_headers(&self, headers: &HeaderMap) {
        if self.inner.rate_headers_logged.load(Ordering::Relaxed) {
            return;
        }
        let seen: Vec<String> = headers
            .iter()
            .filter(|(name, _)| crate::budget::headers::is_rate_header(name.as_str()))
            .map(|(name, value)| {
                let value = self
                    .inner
                    .redactor
                    .redact_text(value.to_str().unwrap_or("?"));
                format!("{}={}", name, crate::inert::text(&value, 100))
            })
            .collect();
        if !seen.is_empty() && !self.inner.rate_headers_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(headers = %seen.join(" "), "rate-limit headers from the platform");
        }
    }
}

impl WriteClient {
    pub fn new(read: ReadClient) -> WriteClient {
        WriteClient { read }
    }

    /// A row's write schedule: the backoff between its attempts and the time they started.
    /// Its backoff allows `max_attempts - 1` waits, so a row sends at most `max_attempts`
    /// PATCHes (first tries, retries and sends after a lost answer), each after a fresh
    /// read.
    pub fn schedule(&self) -> WriteSchedule {
        WriteSchedule {
            backoff: backon::BackoffBuilder::build(self.read.inner.retry.backoff()),
            started: tokio::time::Instant::now(),
        }
    }

    /// Waits for a write slot: any pause, the write pace, the `--rate` ceiling. The caller
    /// then reads the gateway afresh and, if it still needs the change, sends
    /// [`WriteClient::patch_once`] at once: what is written is built from a read taken
    /// after the wait, never before it.
    pub async fn slot(&self) -> Result<(), ApiError> {
        let inner = &self.read.inner;
        if inner.abort.is_cancelled() {
            return Err(self.read.aborted(0));
        }
        if let Err(held) = inner.limiter.acquire(Budget::Write).await {
            self.read.stop_held(&held);
        }
        if inner.abort.is_cancelled() {
            return Err(self.read.aborted(0));
        }
        Ok(())
    }

    /// Sends one PATCH with all five fields, the `n`th of its row, without retrying: the
    /// caller reads the gateway again before any other attempt. Refuses (without sending)
    /// a body that lacks a field: live spaces validate PATCH as a full replacement.
    pub async fn patch_once(
        &self,
        id: &Uuid,
        fields: &GatewayFields,
        n: u32,
    ) -> Result<Reply<GatewayResource>, ApiError> {
        let missing = fields.missing();
        if !missing.is_empty() {
            return Err(ApiError::new(
                ErrorKind::Rejected,
                None,
                "incomplete_body",
                format!(
                    "not sent: the gateway has no {} and the manifest does not set it \
                     (a PATCH must carry all five fields)",
                    missing.join(", ")
                ),
            ));
        }
        let body = serde_json::to_vec(fields)
            .map_err(|e| ApiError::new(ErrorKind::Rejected, None, "encode", e.to_string()))?;
        let inner = &self.read.inner;
        // While the space is failing, one request at a time probes it.
        let _probe = if inner.breaker.is_open() {
            Some(inner.breaker.probe().await)
        } else {
            None
        };
        inner.limiter.send_gate().await;
        if inner.abort.is_cancelled() {
            return Err(self.read.aborted(0));
        }
        let url = self.read.gateway_url(id);
        let reply = self
            .read
            .send_counted(RequestKind::Patch, url, Some(body), n)
            .await?;
        // A 2xx was sent back: the write reached the server, whatever the body says.
        let applied = |mut e: ApiError| {
            e.maybe_applied = true;
            e
        };
        let reply: Reply<GatewayResource> = decode(reply).map_err(applied)?;
        check_gateway(&reply.value, Some(id))
            .map_err(|e| applied(e.after(reply.attempts, reply.status)))?;
        Ok(reply)
    }

    /// How long to wait before the row's next attempt after `err`, or `None` to give up
    /// (the backoff's attempts or the policy's total time are spent). A 429's wait is this
    /// row's alone.
    pub fn wait_before_retry(
        &self,
        schedule: &mut WriteSchedule,
        err: &ApiError,
    ) -> Option<Duration> {
        let wait = self.read.inner.retry.next_delay(
            err.retry_after,
            schedule.backoff.next(),
            schedule.started.elapsed(),
        )?;
        self.read.before_retry(err, wait);
        Some(wait)
    }
}

/// One row's write attempts: see [`WriteClient::schedule`].
pub struct WriteSchedule {
    backoff: backon::ExponentialBackoff,
    started: tokio::time::Instant,
}

/// One page of `GET /api/fabric/resources/sip_gateways`.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct Page {
    pub data: Vec<GatewayResource>,
    #[serde(default)]
    pub links: Links,
}

/// A page's links; only `next` matters.
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Links {
    #[serde(default)]
    pub next: Option<String>,
}

/// Raw bytes of a successful reply, decoded by the caller that knows the type.
mod bytes_body {
    pub struct Body(pub bytes::Bytes);
}

fn decode<T: serde::de::DeserializeOwned>(
    reply: Reply<bytes_body::Body>,
) -> Result<Reply<T>, ApiError> {
    match serde_json::from_slice(&reply.value.0) {
        Ok(value) => Ok(Reply {
            value,
            status: reply.status,
            attempts: reply.attempts,
        }),
        Err(e) => Err(ApiError::new(
            ErrorKind::BadResponse,
            None,
            "bad_response",
            format!(
                "the server's answer is not what was asked for: {}",
                crate::inert::text(&e.to_string(), 200)
            ),
        )
        .after(reply.attempts, reply.status)),
    }
}

impl ApiError {
    /// Stamps a check's error with the reply it was about.
    fn after(mut self, attempts: u32, status: u16) -> ApiError {
        self.attempts = attempts;
        self.status = Some(status);
        self
    }
}

/// A gateway answer is believed only when it is the one asked for and its fields are of a
/// sane size (a hostile server must not fill plans, reports and memory).
fn check_gateway(gateway: &GatewayResource, asked: Option<&Uuid>) -> Result<(), ApiError> {
    let bad = |code: &str, message: String| {
        Err(ApiError::new(ErrorKind::BadResponse, None, code, message))
    };
    if let Some(asked) = asked
        && Uuid::try_parse(&gateway.id).ok().as_ref() != Some(asked)
    {
        return bad(
            "id_mismatch",
            format!(
                "the server answered for gateway {} instead of {}: not believed, nothing \
                 written",
                crate::inert::text(&gateway.id, 64),
                asked.hyphenated()
            ),
        );
    }
    let f = &gateway.sip_gateway;
    let long_text = [("name", &f.name), ("uri", &f.uri)]
        .into_iter()
        .find(|(_, v)| v.len() > MAX_TEXT_FIELD);
    if let Some((field, value)) = long_text {
        return bad(
            "oversized_field",
            format!(
                "the server's `{field}` is {} bytes (at most {MAX_TEXT_FIELD} are believed)",
                value.len()
            ),
        );
    }
    let lists = [
        (
            "ciphers",
            f.ciphers
                .iter()
                .map(|c| c.as_str().len())
                .collect::<Vec<_>>(),
        ),
        (
            "codecs",
            f.codecs.iter().map(|c| c.as_str().len()).collect(),
        ),
    ];
    for (field, lens) in lists {
        if lens.len() > MAX_LIST_FIELD || lens.iter().any(|l| *l > MAX_LIST_FIELD) {
            return bad(
                "oversized_field",
                format!(
                    "the server's `{field}` has {} entries or one longer than {MAX_LIST_FIELD} \
                     bytes: not believed",
                    lens.len()
                ),
            );
        }
    }
    if let Some(Encryption::Other(e)) = &f.encryption
        && e.len() > MAX_LIST_FIELD
    {
        return bad(
            "oversized_field",
            format!(
                "the server's `encryption` is {} bytes: not believed",
                e.len()
            ),
        );
    }
    Ok(())
}

/// Reads a body chunk by chunk against `cap`: a server cannot make us hold more.
async fn read_capped(
    mut response: reqwest::Response,
    cap: usize,
    attempt: u32,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = |what: String| ApiError {
        attempts: attempt,
        ..ApiError::new(
            ErrorKind::BadResponse,
            None,
            "body_too_large",
            format!("the server's answer is {what}, more than the {cap} bytes read at most"),
        )
    };
    match response.content_length() {
        Some(len) if len > cap as u64 => return Err(too_large(format!("{len} bytes"))),
        // A declared length frames the body (hyper stops there): read it whole, no copy.
        Some(_) => {
            return response
                .bytes()
                .await
                .map_err(|e| transport_error(&e, attempt));
        }
        None => {}
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| transport_error(&e, attempt))?
    {
        if body.len() + chunk.len() > cap {
            return Err(too_large("longer".into()));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn transport_error(err: &reqwest::Error, attempt: u32) -> ApiError {
    let code = if is_tls_failure(err) {
        "tls"
    } else if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "connect"
    } else {
        "transport"
    };
    ApiError {
        attempts: attempt,
        ..ApiError::new(
            ErrorKind::Transport,
            None,
            code,
            crate::inert::text(&error_chain(err), 300),
        )
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
fn error_chain(err: &dyn std::error::Error) -> String {
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

    #[test]
    fn collection_url_keeps_a_prefix() {
        let base = Url::parse("http://127.0.0.1:9/prefix/").unwrap();
        assert_eq!(
            join_path(&base, GATEWAYS_PATH).unwrap().as_str(),
            "http://127.0.0.1:9/prefix/api/fabric/resources/sip_gateways"
        );
    }
}

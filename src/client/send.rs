//! One request, from permit to answer: the limiter's slot, the breaker's probe, retries
//! with backoff (and the server's Retry-After), the write budget fed every write's answer,
//! and the answer mapped to a reply or an [`ApiError`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use backon::Retryable;
use reqwest::header::{self, HeaderMap};
use reqwest::{Method, StatusCode};
use url::Url;

use super::body::{bytes_body, read_capped};
use super::error::transport_error;
use super::{
    AbortCause, ApiError, MAX_GATEWAY_BODY, MAX_PAGE_BODY, ReadClient, Reply, parse_error_body,
};
use crate::breaker::Verdict;
use crate::budget::{Answer, Grant, ReserveStall, Ticket, WriteBudget};
use crate::failure::{ErrorKind, Reach, Stop};
use crate::latency::RequestKind;
use crate::limiter::{Lane, RequestSlot};
use crate::retry::parse_retry_after;

impl ReadClient {
    /// One HTTP request with permits, retries and error mapping.
    pub(super) async fn call(
        &self,
        kind: RequestKind,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<Reply<bytes_body::Body>, ApiError> {
        self.call_keeping_slot(kind, url, body)
            .await
            .map(|(reply, _slot)| reply)
    }

    /// [`ReadClient::call`], keeping the answered attempt's place among the requests on
    /// the wire for the caller's next request (a write's fresh read hands it to the PATCH).
    /// Reads only (a GET or a page): a PATCH is sent by [`WriteClient::patch_once`]. A
    /// retry's wait holds no place; it ends, as every wait before a request leaves does,
    /// once the job stops: the read is not sent, and fails as interrupted.
    ///
    /// [`WriteClient::patch_once`]: super::WriteClient::patch_once
    pub(super) async fn call_keeping_slot(
        &self,
        kind: RequestKind,
        url: Url,
        body: Option<Vec<u8>>,
    ) -> Result<(Reply<bytes_body::Body>, RequestSlot), ApiError> {
        debug_assert_ne!(kind, RequestKind::Patch, "a PATCH leaves by patch_once");
        let inner = &self.inner;
        let attempts = AtomicU32::new(0);
        let started = tokio::time::Instant::now();
        let attempt = || async {
            let sent = attempts.load(Ordering::Relaxed);
            let (slot, probe) = tokio::select! {
                biased;
                () = inner.abort.cancelled() => return Err(self.aborted(sent)),
                () = inner.stop.cancelled() => return Err(self.stopped(sent)),
                admitted = self.admit_read() => admitted,
            };
            if inner.abort.is_cancelled() {
                return Err(self.aborted(sent));
            }
            if inner.stop.is_cancelled() {
                return Err(self.stopped(sent));
            }
            let n = attempts.fetch_add(1, Ordering::Relaxed) + 1;
            self.send_counted(kind, url.clone(), body.clone(), n, None)
                .await
                .map(|reply| (reply, slot.with_probe(probe)))
        };
        let (abort, stop) = (inner.abort.clone(), inner.stop.clone());
        let limiter = std::sync::Arc::clone(&inner.limiter);
        attempt
            .retry(inner.retry.backoff())
            // Cut short when the job stops: the next attempt then ends the read unsent.
            // The row's place at work is another row's meanwhile.
            .sleep(move |wait| {
                let (abort, stop, limiter) = (abort.clone(), stop.clone(), limiter.clone());
                async move {
                    tokio::select! {
                        () = limiter.wait_out(wait) => {}
                        () = abort.cancelled() => {}
                        () = stop.cancelled() => {}
                    }
                }
            })
            .when(ApiError::retryable)
            .adjust(|err: &ApiError, backoff| {
                inner
                    .retry
                    .next_delay(err.retry_after(), backoff, started.elapsed())
            })
            .notify(|err: &ApiError, wait: Duration| self.before_retry(err, wait))
            .await
    }

    /// A read's waits before it leaves: the read pace, its place on the wire, and, while
    /// the space is failing, the breaker's probe. The probe is asked once the place is
    /// held, since the space may have started failing while the read waited for one (as
    /// in `patch_once`: the place first, then the probe).
    async fn admit_read(&self) -> (RequestSlot, Option<crate::breaker::Probe>) {
        let inner = &self.inner;
        inner.limiter.read().await;
        let slot = inner.limiter.request_slot().await;
        let probe = if inner.breaker.is_open() {
            let probe = inner.breaker.probe().await;
            // The pause the last probe's failure set holds this one too.
            inner.limiter.unpaused(Lane::Read).await;
            Some(probe)
        } else {
            None
        };
        (slot, probe)
    }

    /// One HTTP attempt whose permit is held: counted, timed, and fed to the write pace
    /// and the breaker. `n` is the attempt's number for this request (1 for a first try);
    /// a write sends its `grant` (its slot) as it leaves.
    pub(super) async fn send_counted(
        &self,
        kind: RequestKind,
        url: Url,
        body: Option<Vec<u8>>,
        n: u32,
        grant: Option<Grant>,
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
            inner.stats.write_span.mark(std::time::Instant::now());
        }
        let sent = tokio::time::Instant::now();
        // A write's answer, headers and all, tells the write budget what the space has left;
        // so does a read's (the count the row's fresh read brings is the newest there is).
        let write = match (inner.limiter.budget(), grant.and_then(Grant::send)) {
            (Some(budget), Some(ticket)) => Some((budget, ticket)),
            (Some(budget), None) if kind != RequestKind::Patch => {
                Some((budget, budget.read_ticket()))
            }
            _ => None,
        };
        let mut result = self.send_once(method, url, body, n, max_body, write).await;
        let round_trip = sent.elapsed();
        inner.stats.latencies.of(kind).record(round_trip);
        if let Ok(reply) = &mut result {
            reply.round_trip = round_trip;
            if kind == RequestKind::Get {
                inner.limiter.saw_read_round_trip(round_trip);
            }
        }
        let status = match &result {
            Ok(reply) => Some(reply.status),
            Err(e) => e.status,
        };
        inner.stats.answers.record(kind, status);
        if let Some(own) = &inner.project_answers {
            own.record(kind, status);
        }
        if let Some((budget, ticket)) = write {
            let answer = match &result {
                Ok(_) => Answer::Accepted,
                Err(e) if e.refused() => Answer::Refused(e.retry_after),
                Err(_) => Answer::Other,
            };
            budget.answered(&ticket, answer);
        }
        self.note_reachability(&result);
        result
    }

    /// The space's count held the job at the reserve past the outage limit: the job stops
    /// as it does when the space cannot be reached (exit 3, rows left `skipped`).
    pub(super) fn stop_at_reserve(&self, stall: &ReserveStall) {
        if self.abort_with(AbortCause::Unreachable(stall.to_string())) {
            tracing::error!("stopping: {stall}");
        }
    }

    /// Before a retry that waits `wait`. A refusal for load (429) delays only its own
    /// request: a proxy or a flaky edge refusing a share of everything must not hold every
    /// worker back (the write budget decides when every write waits).
    pub(super) fn before_retry(&self, err: &ApiError, wait: Duration) {
        let inner = &self.inner;
        if err.refused() {
            inner.stats.throttled.fetch_add(1, Ordering::Relaxed);
            inner.stats.throttled_wait_us.fetch_add(
                u64::try_from(wait.as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        tracing::debug!(
            status = err.status,
            code = %err.code(),
            wait_ms = wait.as_millis() as u64,
            "retrying: {}",
            err.message
        );
    }

    /// Heeds what a failure's kind decides for the whole job: a failure that stops it
    /// (refused credentials, TLS) aborts the client; otherwise the breaker hears whether
    /// the space answered (an answer closes it; a failed connection pauses everyone or,
    /// past the outage limit, stops the job).
    fn note_reachability(&self, result: &Result<Reply<bytes_body::Body>, ApiError>) {
        let inner = &self.inner;
        let err = match result {
            Ok(_) => return inner.breaker.on_answer(),
            Err(e) => e,
        };
        let decision = err.decision();
        match decision.stop {
            Some(Stop::CredentialsRefused) => {
                self.abort_with(AbortCause::Unauthorized);
            }
            Some(Stop::Unreachable) => {
                // Said once, by whoever stops the job: the rows in flight fail the same way.
                if self.abort_with(AbortCause::Unreachable(err.message.clone())) {
                    tracing::error!(space = %inner.space, "cannot reach the space: {}", err.message);
                }
                return;
            }
            None => {}
        }
        match decision.reach {
            Reach::Answered => inner.breaker.on_answer(),
            Reach::NotSent => {}
            Reach::Unanswered => self.note_unanswered(err),
        }
    }

    /// A connection that failed: nothing more when it is the first since an answer (its
    /// request's own backoff retries it), else a pause for everyone, or the job stopped
    /// once every connection has failed for longer than the outage limit.
    fn note_unanswered(&self, err: &ApiError) {
        let inner = &self.inner;
        match inner.breaker.on_failure() {
            // Its own request retries it; nothing else waits.
            Verdict::Alone => {}
            Verdict::Pause(wait) => {
                if let Some(failing_for) = inner.breaker.due_to_say() {
                    tracing::warn!(
                        space = %inner.space,
                        "no answer from the space for {}s (last: {}); waiting for it at most \
                         {}s from the first failure (outage_budget_secs)",
                        failing_for.as_secs(),
                        err.message,
                        inner.breaker.budget().as_secs()
                    );
                }
                inner.limiter.pause_all(wait)
            }
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

    /// A read not sent because its job stopped while it waited (an interrupt, the error
    /// budget): the row is skipped for the job's reason.
    fn stopped(&self, attempts: u32) -> ApiError {
        ApiError {
            attempts,
            ..ApiError::new(
                ErrorKind::Interrupted,
                "not sent: the job stopped while the read waited".into(),
            )
        }
    }

    pub(super) fn aborted(&self, attempts: u32) -> ApiError {
        let message = match self.inner.abort_cause.get() {
            Some(AbortCause::Unreachable(_)) => {
                "not sent: the job stopped because the space could not be reached"
            }
            _ => "not sent: the job stopped after the server refused the credentials",
        };
        ApiError {
            attempts,
            ..ApiError::new(ErrorKind::Aborted, message.into())
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
        self.note_answer_headers(response.headers());
        if let Some((budget, ticket)) = &budget {
            budget.headers(ticket, response.headers(), SystemTime::now());
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
                // A refusal for load was not applied; any other answer may have been.
                err.maybe_applied = write && !err.refused();
                err
            })?;
        self.answer(status, bytes, retry_after, attempt, write)
    }

    /// An answer read whole, as a reply or an error. A 2xx that quotes the credential is
    /// not believed; an error body has it cut out before it is shown.
    fn answer(
        &self,
        status: StatusCode,
        bytes: bytes::Bytes,
        retry_after: Option<Duration>,
        attempt: u32,
        write: bool,
    ) -> Result<Reply<bytes_body::Body>, ApiError> {
        let inner = &self.inner;
        if status.is_success() {
            if inner.redactor.found_in(&bytes) {
                // Believed, it would reach the report and the terminal; altered, a full-body
                // PATCH would write the alteration back.
                return Err(ApiError {
                    attempts: attempt,
                    maybe_applied: write,
                    status: Some(status.as_u16()),
                    ..ApiError::new(
                        ErrorKind::QuotesCredential,
                        "the server's answer quotes the credential: not believed".into(),
                    )
                });
            }
            return Ok(Reply {
                value: bytes_body::Body(bytes),
                status: status.as_u16(),
                attempts: attempt,
                round_trip: Duration::ZERO, // set by the caller, which timed it
            });
        }
        // Error bodies are shown: the credential is cut out of them first (a server may
        // quote the request back, header and all).
        let (code, message) = parse_error_body(status, &inner.redactor.redact(&bytes));
        Err(ApiError {
            attempts: attempt,
            // A 5xx may come from a proxy after the server applied the write.
            maybe_applied: write && status.is_server_error(),
            retry_after,
            ..ApiError::answered(status.as_u16(), code, message)
        })
    }

    /// Keeps the answer's rate-limit headers and `Date` for
    /// [`ReadClient::last_answer_headers`], as they came: every answer passes here, and only
    /// `doctor` reads them.
    fn note_answer_headers(&self, headers: &HeaderMap) {
        let rate_limit: Vec<_> = headers
            .iter()
            .filter(|(name, _)| crate::budget::headers::is_rate_header(name.as_str()))
            .map(|(name, value)| (name.clone(), value.clone()))
            .collect();
        self.log_rate_headers(&rate_limit);
        let date = headers.get(header::DATE).cloned();
        if let Ok(mut last) = self.inner.last_answer.lock() {
            *last = super::RawAnswerHeaders { rate_limit, date };
        }
    }

    /// The platform's rate-limit headers have no documented names: log the `x-` headers
    /// that look like them, once, at debug.
    fn log_rate_headers(&self, seen: &[(header::HeaderName, header::HeaderValue)]) {
        if seen.is_empty() || self.inner.rate_headers_logged.load(Ordering::Relaxed) {
            return;
        }
        let seen: Vec<String> = seen
            .iter()
            .map(|(name, value)| {
                let value = self
                    .inner
                    .redactor
                    .redact_text(value.to_str().unwrap_or("?"));
                format!("{}={}", name, crate::inert::text(&value, 100))
            })
            .collect();
        if !self.inner.rate_headers_logged.swap(true, Ordering::Relaxed) {
            tracing::debug!(headers = %seen.join(" "), "rate-limit headers from the platform");
        }
    }
}

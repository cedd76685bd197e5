//! The PATCH: a write slot first, then one attempt at a time. The engine builds each
//! attempt from a read within a round trip of it (the row's first read while it is that
//! fresh, else a read between the slot and the PATCH), and reads again before any other
//! attempt.

use std::sync::atomic::Ordering;
use std::time::Duration;

use uuid::Uuid;

use super::body::{check_gateway, decode};
use super::{ApiError, ReadClient, Reply, WriteClient};
use crate::failure::ErrorKind;
use crate::latency::RequestKind;
use crate::limiter::{LATE, RequestSlot, WriteSlot};
use crate::model::{GatewayFields, GatewayResource};

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

    /// Waits for a write slot: any pause, the write pace, a time under the `--rate`
    /// ceiling (handed over a read's round trip ahead of it). The caller then reads the
    /// gateway afresh and, if it still needs the change, sends
    /// [`WriteClient::patch_once`]: what is written is built from a read taken after the
    /// wait, never before it. Dropping the slot unsent gives its place back.
    /// `fresh_until`: the caller holds a read it may write from until then
    /// ([`crate::limiter::Limiter::write_holding`]).
    pub async fn slot(
        &self,
        fresh_until: Option<tokio::time::Instant>,
    ) -> Result<WriteSlot, ApiError> {
        let inner = &self.read.inner;
        if inner.abort.is_cancelled() {
            return Err(self.read.aborted(0));
        }
        let asked = std::time::Instant::now();
        let grant = inner.limiter.write_holding(fresh_until).await;
        let waited = asked.elapsed().as_micros() as u64;
        inner
            .stats
            .slot_wait_us
            .fetch_add(waited, Ordering::Relaxed);
        let grant = match grant {
            Ok(grant) => grant,
            Err(stall) => {
                self.read.stop_at_reserve(&stall);
                return Err(self.read.aborted(0));
            }
        };
        if inner.abort.is_cancelled() {
            return Err(self.read.aborted(0));
        }
        Ok(grant)
    }

    /// Waits for a place among the requests on the wire, for a PATCH built from a read
    /// that kept none.
    pub async fn request_slot(&self) -> RequestSlot {
        self.read.inner.limiter.request_slot().await
    }

    /// Whether a granted slot still has room under the newest count the space announced
    /// (the fresh read may have brought one): a slot without it is given back, and the row
    /// waits for another and reads again.
    pub fn still_room(&self, slot: &WriteSlot) -> bool {
        self.read
            .inner
            .limiter
            .budget()
            .is_none_or(|b| b.still_room(slot.grant()))
    }

    /// Sends one PATCH with every field, the `n`th of its row, without retrying: the
    /// caller reads the gateway again before any other attempt. Refuses (without sending)
    /// a body that lacks a field: live spaces validate PATCH as a full replacement. Once
    /// the job stops it sends nothing: the last waits before the request leaves end with
    /// an `Interrupted` error instead. `request`: the place on the wire its fresh read
    /// kept; without one, it waits for one. `read`: the read the body was built from. Once
    /// the last wait is over, a read older than it may be (the breaker held the write, or
    /// it missed its time) sends nothing: [`Patched::StaleRead`], and the caller reads
    /// again.
    pub async fn patch_once(
        &self,
        id: &Uuid,
        fields: &GatewayFields,
        n: u32,
        (mut slot, request): (WriteSlot, Option<RequestSlot>),
        read: ReadAge,
    ) -> Result<Patched, ApiError> {
        let body = full_body(fields)?;
        let fresh_until = read.answered + read.may_be + LATE;
        let Some(_leaving) = self.wait_to_leave(&mut slot, request, fresh_until).await? else {
            return Ok(Patched::StaleRead);
        };
        if read.answered.elapsed() > read.may_be + LATE {
            return Ok(Patched::StaleRead);
        }
        let url = self.read.gateway_url(id);
        let reply = self
            .read
            .send_counted(
                RequestKind::Patch,
                url,
                Some(body),
                n,
                Some(slot.into_grant()),
            )
            .await?;
        // A 2xx was sent back: the write reached the server, whatever the body says.
        let applied = |mut e: ApiError| {
            e.maybe_applied = true;
            e
        };
        let reply: Reply<GatewayResource> = decode(reply).map_err(applied)?;
        check_gateway(&reply.value, Some(id))
            .map_err(|e| applied(e.after(reply.attempts, reply.status)))?;
        Ok(Patched::Answered(reply))
    }

    /// A PATCH's last waits, in this order: a place on the wire (unless its read kept
    /// one), the breaker's probe while the space is failing (the fresh read's, kept, is
    /// this PATCH's), then the `--rate` schedule's time, so that no queue after the
    /// schedule can bunch writes into one second. The place and probe are held until the
    /// answer. Ends unsent once the job stops or the client aborts. `None` when the write
    /// missed its time and no other comes while its read is fresh (until `fresh_until`).
    async fn wait_to_leave(
        &self,
        slot: &mut WriteSlot,
        request: Option<RequestSlot>,
        fresh_until: tokio::time::Instant,
    ) -> Result<Option<(RequestSlot, Option<crate::breaker::Probe>)>, ApiError> {
        let inner = &self.read.inner;
        let stopped = || {
            ApiError::new(
                ErrorKind::Interrupted,
                "not sent: the job stopped while the write waited to leave".into(),
            )
        };
        let request = match request {
            Some(held) => held,
            None => tokio::select! {
                biased;
                () = inner.stop.cancelled() => return Err(stopped()),
                held = inner.limiter.request_slot() => held,
            },
        };
        let probe = if inner.breaker.is_open() && !request.holds_probe() {
            tokio::select! {
                biased;
                () = inner.stop.cancelled() => return Err(stopped()),
                probe = inner.breaker.probe() => Some(probe),
            }
        } else {
            None
        };
        let on_time = tokio::select! {
            biased;
            () = inner.stop.cancelled() => return Err(stopped()),
            on_time = inner.limiter.send_gate(slot, Some(fresh_until)) => on_time,
        };
        if inner.abort.is_cancelled() {
            return Err(self.read.aborted(0));
        }
        if inner.stop.is_cancelled() {
            return Err(stopped());
        }
        Ok(on_time.then_some((request, probe)))
    }

    /// The limiter its requests wait at (its reader's).
    pub fn limiter(&self) -> &crate::limiter::Limiter {
        self.read.limiter()
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
            err.retry_after(),
            schedule.backoff.next(),
            schedule.started.elapsed(),
        )?;
        self.read.before_retry(err, wait);
        Some(wait)
    }
}

/// The PATCH body: every field, or an error naming those missing (live spaces validate a
/// PATCH as a full replacement).
fn full_body(fields: &GatewayFields) -> Result<Vec<u8>, ApiError> {
    let missing = fields.missing();
    if !missing.is_empty() {
        return Err(ApiError::new(
            ErrorKind::IncompleteBody,
            format!(
                "not sent: the gateway has no {} and the manifest does not set it \
                 (a PATCH must carry all five fields)",
                missing.join(", ")
            ),
        ));
    }
    serde_json::to_vec(fields).map_err(|e| ApiError::new(ErrorKind::Unencodable, e.to_string()))
}

/// The read a PATCH is built from: when it was answered, and how old it may be when the
/// PATCH leaves (about a round trip: the window in which someone else's edit can be lost,
/// the API having no conditional PATCH).
#[derive(Debug, Clone, Copy)]
pub struct ReadAge {
    pub answered: tokio::time::Instant,
    pub may_be: Duration,
}

/// What became of a PATCH that was not refused.
#[derive(Debug)]
pub enum Patched {
    /// Sent and answered with the gateway.
    Answered(Reply<GatewayResource>),
    /// Not sent: its read was older than it may be once the write could leave.
    StaleRead,
}

/// One row's write attempts: see [`WriteClient::schedule`].
pub struct WriteSchedule {
    backoff: backon::ExponentialBackoff,
    started: tokio::time::Instant,
}

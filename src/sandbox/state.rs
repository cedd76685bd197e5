//! The sandbox's data and counters. Gateways live in a `BTreeMap` (stable order for
//! paging) behind one `RwLock`; counters are atomics, so the hot path takes no lock but
//! the map's.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{SandboxConfig, starting_fields};
use crate::model::GatewayFields;

/// One stored gateway.
#[derive(Debug, Clone)]
pub struct StoredGateway {
    /// The project that holds it (0: the main one).
    pub project: usize,
    pub sip_id: Uuid,
    pub fields: GatewayFields,
    pub created_at: String,
    pub updated_at: String,
}

/// What the sandbox saw, for tests and benchmarks.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    pub requests: u64,
    pub gets: u64,
    pub lists: u64,
    pub patches: u64,
    pub patches_applied: u64,
    /// PATCH bodies that lacked one of the five fields.
    pub partial_patches: u64,
    pub unauthorized: u64,
    /// Requests that named a gateway of another project than their credentials' (each
    /// answered 404): a client must never ask one project about another's gateway.
    pub foreign_requests: u64,
    /// Requests that arrived after the first 401 was answered.
    pub requests_after_first_unauthorized: u64,
    /// Most write requests (PATCH/POST/DELETE) that arrived in any one-second window.
    pub max_writes_in_any_second: u64,
    /// Write requests that arrived, and when the first and last did (microseconds since
    /// the sandbox started), for the mean write rate.
    pub writes: u64,
    pub first_write_us: u64,
    pub last_write_us: u64,
    pub writes_throttled: u64,
    pub faults_injected: u64,
    /// Writes the limit let through, and writes it answered 429, in each second since
    /// the sandbox started: how clients sharing the space converge.
    pub accepted_per_second: Vec<u64>,
    pub throttled_per_second: Vec<u64>,
    /// The sandbox's own "production" writes (`background_writes`): sent, refused, and
    /// per second accepted and refused.
    pub production_writes: u64,
    pub production_refused: u64,
    pub production_accepted_per_second: Vec<u64>,
    pub production_refused_per_second: Vec<u64>,
    /// With fixed windows: the lowest count left in a window just after a client's write
    /// was admitted (`None` before any).
    pub lowest_remaining_after_client_write: Option<u64>,
    /// For each PATCH applied, the time since that gateway was last read (microseconds):
    /// the window in which another client's edit would be overwritten. Median and most.
    pub read_to_write_p50_us: u64,
    pub read_to_write_max_us: u64,
    /// PATCHes held so far (`--hold-patch`): the client waits for their answers.
    pub patches_held: u64,
    /// The most requests the sandbox was answering at once.
    pub max_requests_in_flight: u64,
}

/// One change to a gateway, as the change log keeps it (`SandboxConfig::log_changes`).
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub id: Uuid,
    pub before: GatewayFields,
    pub after: GatewayFields,
    /// Made by a PATCH (false: an out-of-band edit, [`SandboxState::edit`]).
    pub patch: bool,
}

/// The PATCH to hold: how many more to let through first, and whether it lands before its
/// answer is held. Each arming has its own release, so releasing one never lets an older
/// held PATCH go on.
#[derive(Default)]
struct HoldPlan {
    countdown: Option<u64>,
    applied: bool,
    release: CancellationToken,
    /// The gateway of the PATCH this arming held.
    taken: Option<Uuid>,
}

/// A PATCH being held: before it lands, or after (only its answer waits).
pub(super) enum Hold {
    Before(CancellationToken),
    After(CancellationToken),
}

pub struct SandboxState {
    config: SandboxConfig,
    pub(super) gateways: RwLock<BTreeMap<Uuid, StoredGateway>>,
    started: Instant,
    pub(super) requests: AtomicU64,
    pub(super) gets: AtomicU64,
    pub(super) lists: AtomicU64,
    pub(super) patches: AtomicU64,
    pub(super) patches_applied: AtomicU64,
    pub(super) partial_patches: AtomicU64,
    pub(super) unauthorized: AtomicU64,
    pub(super) foreign_requests: AtomicU64,
    /// `requests` when the first 401 went out; `u64::MAX` until then.
    pub(super) first_unauthorized_at: AtomicU64,
    pub(super) writes_throttled: AtomicU64,
    pub(super) faults_injected: AtomicU64,
    /// Arrival of every write, in microseconds since start (for the window count).
    write_arrivals: Mutex<Vec<u64>>,
    /// The server-side write limit's state.
    limit: Mutex<LimitState>,
    /// Per second since start: (writes admitted, writes answered 429) by the limit, for
    /// the clients' writes and for production's.
    write_seconds: Mutex<Vec<(u64, u64)>>,
    production_seconds: Mutex<Vec<(u64, u64)>>,
    lowest_remaining: Mutex<Option<u64>>,
    /// PATCHes applied per gateway.
    patch_counts: Mutex<HashMap<Uuid, u32>>,
    /// When each gateway was last read (microseconds since start).
    last_read: Mutex<HashMap<Uuid, u64>>,
    /// For each applied PATCH of a gateway read before: microseconds since that read.
    read_to_write: Mutex<Vec<u64>>,
    /// Out-of-band edits made as soon as a list's last page has been served.
    after_listing: Mutex<Vec<(Uuid, GatewayFields)>>,
    /// Ids whose PATCH answer reports other codecs (the config's, changeable while serving).
    mismatch: Mutex<HashSet<Uuid>>,
    hold: Mutex<HoldPlan>,
    held: AtomicU64,
    /// Cancelled when the server stops: a held PATCH then answers 503.
    pub(super) stopping: CancellationToken,
    changes: Mutex<Vec<Change>>,
    /// Projects (by number) whose token is revoked: their requests are answered 401.
    revoked: Mutex<HashSet<usize>>,
    /// Requests being answered now, and the most at once.
    pub(super) in_flight: AtomicU64,
    pub(super) max_in_flight: AtomicU64,
    /// `throttled_once_ids` not yet throttled.
    pub(super) throttle_once: Mutex<HashSet<Uuid>>,
}

impl SandboxState {
    /// Whether this PATCH of `id` is the one to answer 429 (its first, if listed).
    pub(super) fn throttles_once(&self, id: &Uuid) -> bool {
        lock(&self.throttle_once).remove(id)
    }

    pub fn new(config: SandboxConfig) -> SandboxState {
        let hold = HoldPlan {
            countdown: config.hold_patch,
            applied: config.hold_applied,
            ..HoldPlan::default()
        };
        SandboxState {
            mismatch: Mutex::new(config.mismatch_ids.iter().copied().collect()),
            hold: Mutex::new(hold),
            held: AtomicU64::new(0),
            stopping: CancellationToken::new(),
            changes: Mutex::new(Vec::new()),
            revoked: Mutex::new(HashSet::new()),
            in_flight: AtomicU64::new(0),
            max_in_flight: AtomicU64::new(0),
            throttle_once: Mutex::new(config.throttled_once_ids.iter().copied().collect()),
            config,
            gateways: RwLock::new(BTreeMap::new()),
            started: Instant::now(),
            requests: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            patches: AtomicU64::new(0),
            patches_applied: AtomicU64::new(0),
            partial_patches: AtomicU64::new(0),
            unauthorized: AtomicU64::new(0),
            foreign_requests: AtomicU64::new(0),
            first_unauthorized_at: AtomicU64::new(u64::MAX),
            writes_throttled: AtomicU64::new(0),
            faults_injected: AtomicU64::new(0),
            write_arrivals: Mutex::new(Vec::new()),
            limit: Mutex::new(LimitState::default()),
            write_seconds: Mutex::new(Vec::new()),
            production_seconds: Mutex::new(Vec::new()),
            lowest_remaining: Mutex::new(None),
            patch_counts: Mutex::new(HashMap::new()),
            last_read: Mutex::new(HashMap::new()),
            read_to_write: Mutex::new(Vec::new()),
            after_listing: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> &SandboxConfig {
        &self.config
    }

    /// Adds one gateway per id with the sandbox's starting values, in the main project.
    pub fn seed(&self, ids: impl IntoIterator<Item = Uuid>) {
        self.seed_in(0, ids);
    }

    /// Adds one gateway per id to project number `project` (0: the main one).
    pub fn seed_in(&self, project: usize, ids: impl IntoIterator<Item = Uuid>) {
        let mut map = write_lock(&self.gateways);
        for id in ids {
            let n = map.len() as u64 + 1;
            map.entry(id).or_insert_with(|| StoredGateway {
                project,
                sip_id: super::random_uuid(),
                fields: starting_fields(n),
                created_at: "2024-05-06T12:20:00Z".into(),
                updated_at: "2024-05-06T12:20:00Z".into(),
            });
        }
    }

    /// Changes a gateway as another client of the space would (an out-of-band edit, for
    /// rehearsing conflicts). Not counted as a PATCH. False when there is no such gateway.
    pub fn edit(&self, id: &Uuid, fields: GatewayFields) -> bool {
        match write_lock(&self.gateways).get_mut(id) {
            Some(g) => {
                self.log_change(*id, &g.fields, &fields, false);
                g.fields = fields;
                true
            }
            None => false,
        }
    }

    /// Called with the gateways' write lock held, so the log's order is the map's.
    pub(super) fn log_change(
        &self,
        id: Uuid,
        before: &GatewayFields,
        after: &GatewayFields,
        patch: bool,
    ) {
        if self.config.log_changes {
            lock(&self.changes).push(Change {
                id,
                before: before.clone(),
                after: after.clone(),
                patch,
            });
        }
    }

    /// The change log from entry `from` on (empty unless `log_changes`).
    pub fn changes_from(&self, from: usize) -> Vec<Change> {
        lock(&self.changes).get(from..).unwrap_or_default().to_vec()
    }

    /// From now on, PATCHes of exactly these gateways are answered with other codecs than
    /// were sent (and stored so): a read-back mismatch.
    pub fn set_mismatch(&self, ids: impl IntoIterator<Item = Uuid>) {
        *lock(&self.mismatch) = ids.into_iter().collect();
    }

    pub(super) fn mismatches(&self, id: &Uuid) -> bool {
        lock(&self.mismatch).contains(id)
    }

    /// Holds the `nth` PATCH from now (1: the next valid one): its answer is not sent
    /// until [`SandboxState::release_held`], so a client can be killed at a chosen point.
    /// With `applied` the write lands first; otherwise only after the release.
    pub fn hold_patch(&self, nth: u64, applied: bool) {
        *lock(&self.hold) = HoldPlan {
            countdown: Some(nth.max(1)),
            applied,
            ..HoldPlan::default()
        };
    }

    /// Holds nothing more (a PATCH already held stays held).
    pub fn disarm_hold(&self) {
        lock(&self.hold).countdown = None;
    }

    /// Lets the PATCH held by the last [`SandboxState::hold_patch`] go on.
    pub fn release_held(&self) {
        lock(&self.hold).release.cancel();
    }

    /// PATCHes held so far (each counted once it lands, with `applied`, or at once).
    pub fn patches_held(&self) -> u64 {
        self.held.load(Ordering::SeqCst)
    }

    /// The gateway whose PATCH the last [`SandboxState::hold_patch`] held, once it has.
    pub fn held_gateway(&self) -> Option<Uuid> {
        lock(&self.hold).taken
    }

    /// Whether this PATCH of `id` is the one to hold, counting it.
    pub(super) fn take_hold(&self, id: Uuid) -> Option<Hold> {
        let mut plan = lock(&self.hold);
        let left = plan.countdown.as_mut()?;
        *left = left.saturating_sub(1);
        if *left > 0 {
            return None;
        }
        plan.countdown = None;
        plan.taken = Some(id);
        let release = plan.release.clone();
        Some(match plan.applied {
            true => Hold::After(release),
            false => Hold::Before(release),
        })
    }

    /// Counts a held PATCH and waits for its release: true once released, false when the
    /// sandbox stops first.
    pub(super) async fn held(&self, release: &CancellationToken) -> bool {
        self.held.fetch_add(1, Ordering::SeqCst);
        tokio::select! {
            _ = release.cancelled() => true,
            _ = self.stopping.cancelled() => false,
        }
    }

    /// Makes [`SandboxState::edit`] once the next list's last page has been served:
    /// another client changing a gateway between a snapshot read in pages and its PATCH.
    pub fn edit_after_listing(&self, id: Uuid, fields: GatewayFields) {
        lock(&self.after_listing).push((id, fields));
    }

    /// Called when a last page went out: the edits waiting for it are made.
    pub(super) fn listing_done(&self) {
        let edits = std::mem::take(&mut *lock(&self.after_listing));
        for (id, fields) in edits {
            self.edit(&id, fields);
        }
    }

    /// Revokes project number `project`'s token (`false`: restores it), as an operator
    /// rotating it mid-run would: its requests are answered 401 from now on.
    pub fn revoke(&self, project: usize, revoked: bool) {
        let mut set = lock(&self.revoked);
        if revoked {
            set.insert(project)
        } else {
            set.remove(&project)
        };
    }

    pub(super) fn is_revoked(&self, project: usize) -> bool {
        lock(&self.revoked).contains(&project)
    }

    /// The project number that holds `id` (0: the main one).
    pub fn project_of(&self, id: &Uuid) -> Option<usize> {
        read_lock(&self.gateways).get(id).map(|g| g.project)
    }

    /// Gateways held.
    pub fn len(&self) -> usize {
        read_lock(&self.gateways).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The current fields of every gateway.
    pub fn snapshot(&self) -> BTreeMap<Uuid, GatewayFields> {
        read_lock(&self.gateways)
            .iter()
            .map(|(id, g)| (*id, g.fields.clone()))
            .collect()
    }

    /// PATCHes applied to `id` so far.
    pub fn patch_count(&self, id: &Uuid) -> u32 {
        lock(&self.patch_counts).get(id).copied().unwrap_or(0)
    }

    pub(super) fn record_patch_applied(&self, id: Uuid) {
        self.patches_applied.fetch_add(1, Ordering::Relaxed);
        *lock(&self.patch_counts).entry(id).or_default() += 1;
        if let Some(read) = lock(&self.last_read).get(&id).copied() {
            let now = self.started.elapsed().as_micros() as u64;
            lock(&self.read_to_write).push(now.saturating_sub(read));
        }
    }

    pub(super) fn record_read(&self, id: Uuid) {
        let now = self.started.elapsed().as_micros() as u64;
        lock(&self.last_read).insert(id, now);
    }

    /// Notes a write request's arrival (before auth and faults: every attempt counts).
    pub(super) fn note_write_arrival(&self) {
        let micros = self.started.elapsed().as_micros() as u64;
        lock(&self.write_arrivals).push(micros);
    }

    /// Whether the server-side write limit lets one more client write through.
    pub(super) fn admit_write(&self) -> Admission {
        let admission = self.admit(self.started.elapsed());
        let second = self.started.elapsed().as_secs() as usize;
        if admission.admitted {
            if let Some(left) = admission.remaining {
                let mut lowest = lock(&self.lowest_remaining);
                *lowest = Some(lowest.map_or(left, |l| l.min(left)));
            }
        } else {
            self.writes_throttled.fetch_add(1, Ordering::Relaxed);
        }
        count_second(&self.write_seconds, second, admission.admitted);
        admission
    }

    /// One "production" write, spent against the same limit as the clients'.
    pub(super) fn production_write(&self) {
        let admission = self.admit(self.started.elapsed());
        let second = self.started.elapsed().as_secs() as usize;
        count_second(&self.production_seconds, second, admission.admitted);
    }

    /// The write limit's answer for one write arriving `at` after start (and the count it
    /// announces), spending a write when it is let through.
    fn admit(&self, at: Duration) -> Admission {
        let limit = self.config.write_limit;
        if limit == 0 {
            return Admission::free();
        }
        let mut state = lock(&self.limit);
        match self.config.limit_window {
            Some(window) => {
                let (size, index, reset_secs) = fixed_window(limit, window, at);
                if state.window != index {
                    state.window = index;
                    state.used = 0;
                }
                let admitted = state.used < size;
                state.used += u64::from(admitted);
                Admission {
                    admitted,
                    remaining: Some(size - state.used),
                    limit: Some(size),
                    reset_secs,
                }
            }
            None => {
                // A token bucket: `limit` tokens a second, holding a tenth of a second's.
                let capacity = (f64::from(limit) / 10.0).max(1.0);
                let now = at.as_secs_f64();
                let elapsed = now - state.last_refill.unwrap_or(now);
                state.tokens = Some(
                    (state.tokens.unwrap_or(capacity) + elapsed * f64::from(limit)).min(capacity),
                );
                state.last_refill = Some(now);
                let admitted = state.tokens.unwrap_or(0.0) >= 1.0;
                if admitted {
                    state.tokens = state.tokens.map(|t| t - 1.0);
                }
                Admission {
                    admitted,
                    remaining: None,
                    limit: None,
                    reset_secs: 1,
                }
            }
        }
    }

    /// What the limit would announce now, without spending anything (for reads).
    pub(super) fn announce_now(&self) -> Option<(u64, u64, u64)> {
        let window = self.config.limit_window?;
        let limit = self.config.write_limit;
        if limit == 0 {
            return None;
        }
        let (size, index, reset_secs) = fixed_window(limit, window, self.started.elapsed());
        let state = lock(&self.limit);
        let used = if state.window == index { state.used } else { 0 };
        Some((size, size.saturating_sub(used), reset_secs))
    }

    pub fn stats(&self) -> Stats {
        let requests = self.requests.load(Ordering::Relaxed);
        let first_401 = self.first_unauthorized_at.load(Ordering::Relaxed);
        let arrivals = lock(&self.write_arrivals).clone();
        let seconds = lock(&self.write_seconds).clone();
        let production = lock(&self.production_seconds).clone();
        let mut gaps = lock(&self.read_to_write).clone();
        gaps.sort_unstable();
        Stats {
            read_to_write_p50_us: gaps.get(gaps.len() / 2).copied().unwrap_or(0),
            read_to_write_max_us: gaps.last().copied().unwrap_or(0),
            patches_held: self.patches_held(),
            max_requests_in_flight: self.max_in_flight.load(Ordering::Relaxed),
            accepted_per_second: seconds.iter().map(|s| s.0).collect(),
            throttled_per_second: seconds.iter().map(|s| s.1).collect(),
            production_writes: production.iter().map(|s| s.0 + s.1).sum(),
            production_refused: production.iter().map(|s| s.1).sum(),
            production_accepted_per_second: production.iter().map(|s| s.0).collect(),
            production_refused_per_second: production.iter().map(|s| s.1).collect(),
            lowest_remaining_after_client_write: *lock(&self.lowest_remaining),
            requests,
            gets: self.gets.load(Ordering::Relaxed),
            lists: self.lists.load(Ordering::Relaxed),
            patches: self.patches.load(Ordering::Relaxed),
            patches_applied: self.patches_applied.load(Ordering::Relaxed),
            partial_patches: self.partial_patches.load(Ordering::Relaxed),
            unauthorized: self.unauthorized.load(Ordering::Relaxed),
            foreign_requests: self.foreign_requests.load(Ordering::Relaxed),
            requests_after_first_unauthorized: requests.saturating_sub(first_401),
            max_writes_in_any_second: max_in_window(&arrivals, 1_000_000),
            writes: arrivals.len() as u64,
            first_write_us: arrivals.iter().copied().min().unwrap_or(0),
            last_write_us: arrivals.iter().copied().max().unwrap_or(0),
            writes_throttled: self.writes_throttled.load(Ordering::Relaxed),
            faults_injected: self.faults_injected.load(Ordering::Relaxed),
        }
    }
}

/// The write limit's state: a fixed window's number and its writes, or a token bucket.
#[derive(Debug, Default)]
struct LimitState {
    window: u64,
    used: u64,
    tokens: Option<f64>,
    last_refill: Option<f64>,
}

/// The write limit's answer to one write.
#[derive(Debug, Clone, Copy)]
pub(super) struct Admission {
    pub admitted: bool,
    /// With fixed windows: the window's size, what is left of it, and the seconds until
    /// it resets (rounded up), for the headers.
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    pub reset_secs: u64,
}

impl Admission {
    fn free() -> Admission {
        Admission {
            admitted: true,
            limit: None,
            remaining: None,
            reset_secs: 0,
        }
    }
}

/// For a limit of `limit` writes a second counted in fixed windows of `window`, at `at`
/// after start: the window's size, its number, and the whole seconds until it resets.
fn fixed_window(limit: u32, window: Duration, at: Duration) -> (u64, u64, u64) {
    let size = u64::from(limit) * window.as_secs().max(1);
    let index = at.as_micros() / window.as_micros().max(1);
    let reset = (window * (index as u32 + 1)).saturating_sub(at);
    let reset_secs = reset.as_secs() + u64::from(reset.subsec_nanos() > 0);
    (size, index as u64, reset_secs)
}

/// Counts one write, admitted or refused, in its second.
fn count_second(seconds: &Mutex<Vec<(u64, u64)>>, second: usize, admitted: bool) {
    let mut seconds = lock(seconds);
    if seconds.len() <= second {
        seconds.resize(second + 1, (0, 0));
    }
    if admitted {
        seconds[second].0 += 1;
    } else {
        seconds[second].1 += 1;
    }
}

/// The most arrivals in any half-open window `[t, t + width)`, sliding over every arrival.
pub fn max_in_window(arrivals: &[u64], width: u64) -> u64 {
    let mut sorted = arrivals.to_vec();
    sorted.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..sorted.len() {
        while sorted[end] - sorted[start] >= width {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best as u64
}

// A poisoned lock only means a handler panicked mid-update; the data is still usable for a
// simulator, so recover it rather than take the server down.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
pub(super) fn read_lock<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}
pub(super) fn write_lock<T>(m: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_count_is_half_open_and_sliding() {
        // 0 and 1_000_000 are a full second apart: never in the same window.
        assert_eq!(max_in_window(&[0, 999_999, 1_000_000], 1_000_000), 2);
        assert_eq!(max_in_window(&[5, 1, 3, 2_000_000], 1_000_000), 3);
        assert_eq!(max_in_window(&[], 1_000_000), 0);
    }
}

//! A simulated SignalWire space on loopback: the five gateway endpoints with the live
//! platform's behaviour (Basic auth, full-body PATCH validation, 404s, 422s in SignalWire's
//! shape, paging by `links.next`, a server-side write limit answering 429 + `Retry-After`,
//! optionally announced in rate-limit headers over fixed windows and partly spent by
//! simulated production writes) plus injected faults for rehearsals (error rates per status, latency, dropped
//! connections). Tests, examples, benchmarks and users rehearsing a migration all run
//! against it.
//!
//! It counts what it sees ([`Stats`]), served at `GET /__sandbox/stats`, so a test or a
//! benchmark can check what the client really sent: writes per one-second window, PATCHes
//! per gateway, requests after the first 401.

//!
//! The server (axum) sits behind the default `sandbox` cargo feature, so a program that
//! embeds the library can leave it out; the starting values and generated ids below stay,
//! for tests and rehearsals.

#[cfg(feature = "sandbox")]
mod handlers;
#[cfg(feature = "sandbox")]
mod state;

#[cfg(feature = "sandbox")]
use std::net::SocketAddr;
#[cfg(feature = "sandbox")]
use std::sync::Arc;
use std::time::Duration;

#[cfg(feature = "sandbox")]
use tokio::net::TcpListener;
use uuid::Uuid;

#[cfg(feature = "sandbox")]
pub use state::{Change, SandboxState, Stats};

use crate::model::{Cipher, Codec, Encryption, GatewayFields};

/// The writable fields of a SIP gateway as the API knows them: the sandbox's own list,
/// kept apart from the tool's declaration (`model::gateway_fields`) because it imitates
/// the API, not the client. A test compares the two.
pub const API_FIELDS: [&str; 5] = ["name", "uri", "encryption", "ciphers", "codecs"];

/// Injected faults. Rates are probabilities in 0..=1, drawn per API request.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// `(status, rate)`: answer this status instead of handling the request.
    pub status_rates: Vec<(u16, f64)>,
    /// `Retry-After` seconds sent with an injected 429 or 503.
    pub retry_after_secs: u64,
    /// Added before every API response.
    pub latency: Duration,
    /// Close the connection without a complete answer.
    pub drop_rate: f64,
}

/// How the sandbox behaves.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub project_id: String,
    pub api_token: String,
    /// More projects of the same space, `(id, token)`: each sees only its own gateways
    /// (another's is 404 to it); one write limit counts them all. The main project is
    /// number 0, these 1 and up.
    pub extra_projects: Vec<(String, String)>,
    /// Writes accepted per second before 429; 0 = no limit. The platform's is 13,800/10 s.
    pub write_limit: u32,
    /// `None`: the limit is smooth (a token bucket holding a tenth of a second's writes),
    /// as a proxy or a per-token limit refuses. `Some(w)`: it counts fixed windows of `w`
    /// (`write_limit * w` writes each), as the platform does.
    pub limit_window: Option<Duration>,
    /// Answers carry `X-RateLimit-Limit` / `-Remaining` / `-Reset` for the write window
    /// (only with `limit_window`: a smooth limit has no window to announce; the CLI's
    /// `--announce-limit` sets a 10 s one).
    pub announce_limit: bool,
    /// "Production" writes a second the sandbox spends itself against the same limit, as
    /// the customer's calls and messages would.
    pub background_writes: u32,
    pub faults: Faults,
    /// Ids whose every PATCH is answered 500 (rehearsing a stubborn subset).
    pub failing_ids: Vec<Uuid>,
    /// Ids whose first PATCH is answered 429 with the faults' `Retry-After` (a row that
    /// must wait while the others could go).
    pub throttled_once_ids: Vec<Uuid>,
    /// Ids whose PATCH answer reports other codecs than were sent (a read-back mismatch).
    pub mismatch_ids: Vec<Uuid>,
    /// If set, `links.next` points at this origin instead of a path (tests a foreign link).
    pub next_link_origin: Option<String>,
    /// The largest page the list serves (the platform's: 1,000).
    pub max_page_size: usize,
    /// Hold the Nth valid PATCH (from 1): its answer is not sent until
    /// [`SandboxState::release_held`] or the sandbox stops (then 503), so a test can kill
    /// the client at a chosen point, the same one every time.
    pub hold_patch: Option<u64>,
    /// The held PATCH lands first and only its answer waits (else it lands on release).
    pub hold_applied: bool,
    /// Keep every change to a gateway, PATCH or out-of-band edit, in order
    /// ([`SandboxState::changes_from`]). Off by default: it grows with every write.
    pub log_changes: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        SandboxConfig {
            project_id: random_uuid().hyphenated().to_string(),
            api_token: format!("PT{}", random_uuid().simple()),
            extra_projects: Vec::new(),
            write_limit: 1380,
            limit_window: None,
            announce_limit: false,
            background_writes: 0,
            faults: Faults::default(),
            failing_ids: Vec::new(),
            throttled_once_ids: Vec::new(),
            mismatch_ids: Vec::new(),
            next_link_origin: None,
            max_page_size: 1000,
            hold_patch: None,
            hold_applied: false,
            log_changes: false,
        }
    }
}

impl SandboxConfig {
    /// This config with `n` projects in all (the main one and `n - 1` more, each with its
    /// own random id and token).
    pub fn with_projects(mut self, n: usize) -> SandboxConfig {
        self.extra_projects = (1..n)
            .map(|_| {
                (
                    random_uuid().hyphenated().to_string(),
                    format!("PT{}", random_uuid().simple()),
                )
            })
            .collect();
        self
    }

    /// Every project, `(id, token)`, the main one first.
    pub fn projects(&self) -> Vec<(&str, &str)> {
        std::iter::once((self.project_id.as_str(), self.api_token.as_str()))
            .chain(
                self.extra_projects
                    .iter()
                    .map(|(id, token)| (id.as_str(), token.as_str())),
            )
            .collect()
    }

    /// The projects file for these projects (names `p1`, `p2`, ...), as `--projects`
    /// reads it.
    pub fn projects_yaml(&self) -> String {
        let mut text = String::from("projects:\n");
        for (i, (id, token)) in self.projects().iter().enumerate() {
            text.push_str(&format!(
                "  - id: {id}\n    name: p{}\n    token: {token}\n",
                i + 1
            ));
        }
        text
    }
}

/// The sandbox's starting values for gateway number `n`: deliberately not what a manifest
/// asks for, so applying one has work to do.
pub fn starting_fields(n: u64) -> GatewayFields {
    GatewayFields {
        name: format!("sandbox-gw-{n}"),
        uri: format!("sip:pbx{n}.sandbox.example.net"),
        encryption: Some(Encryption::Optional),
        ciphers: vec![Cipher::AesCm128HmacSha1_80],
        codecs: vec![Codec::Pcmu, Codec::Pcma],
    }
}

/// A random (v4) UUID. The sandbox needs no cryptographic randomness.
pub fn random_uuid() -> Uuid {
    uuid::Builder::from_random_bytes(fastrand::u128(..).to_le_bytes()).into_uuid()
}

/// `n` gateway ids, the same for the same `seed`.
pub fn generated_ids(n: u64, seed: u64) -> Vec<Uuid> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..n)
        .map(|_| uuid::Builder::from_random_bytes(rng.u128(..).to_le_bytes()).into_uuid())
        .collect()
}

/// A sandbox serving on a bound socket.
#[cfg(feature = "sandbox")]
pub struct RunningSandbox {
    pub addr: SocketAddr,
    pub state: Arc<SandboxState>,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

#[cfg(feature = "sandbox")]
impl RunningSandbox {
    /// `http://127.0.0.1:PORT`, what `SIGNALWIRE_BASE_URL` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The three lines `sandbox` prints, ready for `export`/`eval`.
    pub fn env_lines(&self) -> String {
        format!(
            "SIGNALWIRE_BASE_URL={}\nSIGNALWIRE_PROJECT_ID={}\nSIGNALWIRE_API_TOKEN={}\n",
            self.base_url(),
            self.state.config().project_id,
            self.state.config().api_token
        )
    }
}

/// Binds `127.0.0.1:port` (0 picks a free port) and serves `state` until `shutdown` fires.
#[cfg(feature = "sandbox")]
pub async fn start(
    state: Arc<SandboxState>,
    port: u16,
    shutdown: tokio_util::sync::CancellationToken,
) -> std::io::Result<RunningSandbox> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let app = handlers::router(Arc::clone(&state));
    let production = state.config().background_writes;
    if production > 0 {
        let state = Arc::clone(&state);
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut tick =
                tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(production)));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tick.tick() => state.production_write(),
                }
            }
        });
    }
    let stopping = state.stopping.clone();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.cancelled().await;
                // A held PATCH answers now, so the graceful stop does not wait for it.
                stopping.cancel();
            })
            .await
    });
    Ok(RunningSandbox { addr, state, task })
}

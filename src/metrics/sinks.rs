//! Where the metrics go: a file for node_exporter's textfile collector, a Pushgateway,
//! and `/metrics` served while the run lasts. None of them can fail a run: a sink that
//! cannot be reached or written is a warning.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use tokio::task::JoinHandle;
use url::Url;

use super::{Ending, RunMetrics, last_success_in};

/// The longest a push may take, at the end or during the run.
const PUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Which sinks a run has.
#[derive(Debug, Clone, Default)]
pub struct SinksConfig {
    /// `--metrics-file`: written at the end, atomically, no timestamps in the samples.
    pub file: Option<PathBuf>,
    /// `--push-gateway`: the Pushgateway's base URL.
    pub push: Option<Url>,
    /// Push during the run this often (and once at the end).
    pub push_every: Duration,
    /// `--metrics-listen`: serve `/metrics` here while the run lasts.
    pub listen: Option<SocketAddr>,
}

impl SinksConfig {
    pub fn any(&self) -> bool {
        self.file.is_some() || self.push.is_some() || self.listen.is_some()
    }
}

/// The sinks of a running job.
pub struct Sinks {
    metrics: Arc<RunMetrics>,
    config: SinksConfig,
    pusher: Option<Pusher>,
    tasks: Vec<JoinHandle<()>>,
}

impl Sinks {
    /// Starts serving (with `listen`) and pushing during the run (with `push`).
    pub async fn start(metrics: Arc<RunMetrics>, config: SinksConfig) -> Sinks {
        let pusher = config
            .push
            .as_ref()
            .and_then(|url| Pusher::new(url, &metrics));
        let mut tasks = Vec::new();
        if let Some(addr) = config.listen {
            match serve(addr, Arc::clone(&metrics)).await {
                Ok(task) => tasks.push(task),
                Err(e) => tracing::warn!("cannot serve metrics on {addr}: {e}"),
            }
        }
        if let Some(pusher) = pusher.clone() {
            let metrics = Arc::clone(&metrics);
            let every = config.push_every.max(Duration::from_secs(1));
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    pusher.push(metrics.render(None, None)).await;
                }
            }));
        }
        Sinks {
            metrics,
            config,
            pusher,
            tasks,
        }
    }

    /// The run ended: the last values go to the file and the Pushgateway. A failed run
    /// keeps the last success it finds: the Pushgateway's (a push that leaves it out does
    /// not replace it), the old file's (read back before it is replaced).
    pub async fn finish(self, ending: Ending) {
        for task in &self.tasks {
            task.abort();
        }
        let success = ending.success().then_some(ending.at);
        if let Some(path) = &self.config.file {
            self.write_file(path, &ending, success);
        }
        if let Some(pusher) = &self.pusher {
            pusher
                .push(self.metrics.render(Some(&ending), success))
                .await;
        }
    }
}

impl Sinks {
    /// The file, with the last success read back from the old one (through a cap, and
    /// only from a regular file: a FIFO or a device put there during the run is left as
    /// it is, with a warning, never waited on).
    fn write_file(&self, path: &std::path::Path, ending: &Ending, success: Option<f64>) {
        let earlier = match crate::bounded::read_regular_file(path, MAX_METRICS_FILE) {
            Ok(old) => last_success_in(&old, self.metrics.labels()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                tracing::warn!("metrics file {} not written: {e}", path.display());
                return;
            }
            Err(e) => {
                tracing::warn!(
                    "cannot read back the last success from metrics file {}: {e}",
                    path.display()
                );
                None
            }
        };
        let text = self.metrics.render(Some(ending), success.or(earlier));
        if let Err(e) = write_atomically(path, &text) {
            tracing::warn!("cannot write metrics file {}: {e}", path.display());
        }
    }
}

/// The longest metrics file read back (the tool's own is a few KiB).
pub const MAX_METRICS_FILE: u64 = 1024 * 1024;

fn write_atomically(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    let mut file = crate::output::AtomicFile::create(path)?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    file.commit()
}

/// Pushes to one group of a Pushgateway: job `sipgw_bulk`, and the run's space, command
/// and shard (no `instance`: a group per run, not per machine).
#[derive(Clone)]
struct Pusher {
    http: reqwest::Client,
    url: Url,
    /// The URL as logged: no user name or password.
    shown: String,
}

impl Pusher {
    fn new(base: &Url, metrics: &RunMetrics) -> Option<Pusher> {
        // Ring is our rustls crypto provider (an https Pushgateway); installing it twice is
        // harmless.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .timeout(PUSH_TIMEOUT)
            .connect_timeout(PUSH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .retry(reqwest::retry::never())
            .build();
        let http = match http {
            Ok(http) => http,
            Err(e) => {
                tracing::warn!("cannot set up the push to the Pushgateway: {e}");
                return None;
            }
        };
        let url = group_url(base, metrics.labels())?;
        let mut shown = url.clone();
        let _ = shown.set_username("");
        let _ = shown.set_password(None);
        Some(Pusher {
            http,
            url,
            shown: crate::inert::text(shown.as_str(), 300),
        })
    }

    /// POST: the metrics pushed replace those of the same name in the group, and leave the
    /// others (the last success of an earlier run) as they are.
    async fn push(&self, text: String) {
        let sent = self
            .http
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "text/plain; version=0.0.4")
            .body(text)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => {}
            Ok(answer) => tracing::warn!(
                "the Pushgateway at {} refused the metrics: HTTP {}",
                self.shown,
                answer.status()
            ),
            Err(e) => tracing::warn!("cannot push metrics to {}: {e}", self.shown),
        }
    }
}

/// `BASE/metrics/job@base64/…/space@base64/…/command@base64/…/shard@base64/…`: every
/// value base64url-encoded, so a `/` in a shard or a `:` in a space needs no escaping.
fn group_url(base: &Url, labels: &super::RunLabels) -> Option<Url> {
    let encode = |v: &str| base64::engine::general_purpose::URL_SAFE.encode(v);
    let mut path = base.path().trim_end_matches('/').to_owned();
    path.push_str(&format!("/metrics/job@base64/{}", encode("sipgw_bulk")));
    for (name, value) in labels.pairs() {
        // An empty value is written `=`, as the Pushgateway documents.
        let value = if value.is_empty() {
            "=".to_owned()
        } else {
            encode(value)
        };
        path.push_str(&format!("/{name}@base64/{value}"));
    }
    let mut url = base.clone();
    url.set_path(&path);
    url.set_query(None);
    (!url.cannot_be_a_base()).then_some(url)
}

#[cfg(feature = "metrics-listen")]
async fn serve(addr: SocketAddr, metrics: Arc<RunMetrics>) -> std::io::Result<JoinHandle<()>> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(address = %listener.local_addr()?, "serving metrics at /metrics");
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4",
                    )],
                    metrics.render(None, None),
                )
            }
        }),
    );
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!("the metrics server stopped: {e}");
        }
    }))
}

#[cfg(not(feature = "metrics-listen"))]
async fn serve(_addr: SocketAddr, _metrics: Arc<RunMetrics>) -> std::io::Result<JoinHandle<()>> {
    Err(std::io::Error::other(
        "this build has no metrics server (the `metrics-listen` feature)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_group_is_job_space_command_shard_each_base64url() {
        let labels = super::super::RunLabels {
            space: "127.0.0.1:9".into(),
            command: "plan",
            shard: "0/2".into(),
        };
        let base = Url::parse("http://gw:9091/prefix/").unwrap();
        let url = group_url(&base, &labels).unwrap();
        assert_eq!(
            url.as_str(),
            "http://gw:9091/prefix/metrics/job@base64/c2lwZ3dfYnVsaw==/command@base64/cGxhbg==\
             /shard@base64/MC8y/space@base64/MTI3LjAuMC4xOjk="
        );
        let empty = super::super::RunLabels {
            space: String::new(),
            ..labels
        };
        let url = group_url(&base, &empty).unwrap();
        assert!(url.as_str().ends_with("/space@base64/="), "{url}");
    }
}

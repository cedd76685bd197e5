//! Misbehaving peers for fault tests, each a real server on a loopback port in its own
//! runtime: an HTTP server whose every answer a test writes (a hostile space, or a proxy
//! in front of the sandbox that loses answers), and a TCP listener that drops every
//! connection (a space that is not there).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use sipgw_bulk::model::GatewayFields;

/// What a handler sees of a request.
pub struct Seen {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub authorization: Option<String>,
    pub body: Bytes,
}

pub type Handler = Arc<dyn Fn(Seen) -> BoxFuture<'static, Response> + Send + Sync>;

/// An HTTP server whose answers the test writes.
pub struct Peer {
    pub addr: SocketAddr,
    pub requests: Arc<AtomicU64>,
    shutdown: CancellationToken,
    _runtime: tokio::runtime::Runtime,
}

impl Peer {
    pub fn start(handler: Handler) -> Peer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let requests = Arc::new(AtomicU64::new(0));
        let shutdown = CancellationToken::new();
        let counter = Arc::clone(&requests);
        let stop = shutdown.clone();
        let addr = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let app = axum::Router::new().fallback(move |request: Request| {
                let handler = Arc::clone(&handler);
                let counter = Arc::clone(&counter);
                async move {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let (parts, body) = request.into_parts();
                    let body = axum::body::to_bytes(body, 1 << 20)
                        .await
                        .unwrap_or_default();
                    handler(Seen {
                        method: parts.method,
                        uri: parts.uri.to_string(),
                        authorization: parts
                            .headers
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        body,
                    })
                    .await
                }
            });
            tokio::spawn(async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move { stop.cancelled().await })
                    .await
            });
            addr
        });
        Peer {
            addr,
            requests,
            shutdown,
            _runtime: runtime,
        }
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A TCP listener that accepts every connection and closes it at once (or, with
/// `greeting`, writes that first): a space that resets everything, or one that does not
/// speak TLS.
pub struct Dropper {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicU64>,
    _runtime: tokio::runtime::Runtime,
}

impl Dropper {
    pub fn start(greeting: &'static [u8]) -> Dropper {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let connections = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&connections);
        let addr = runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                while let Ok((mut stream, _)) = listener.accept().await {
                    counter.fetch_add(1, Ordering::Relaxed);
                    let _ = stream.write_all(greeting).await;
                    drop(stream);
                }
            });
            addr
        });
        Dropper {
            addr,
            connections,
            _runtime: runtime,
        }
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// A gateway resource as the API returns it.
pub fn gateway_json(id: &str, f: &GatewayFields) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "project_id": "p",
        "display_name": f.name,
        "type": "sip_gateway",
        "sip_gateway": f,
    })
}

pub fn json(status: StatusCode, value: serde_json::Value) -> Response {
    (status, axum::Json(value)).into_response()
}

/// An answer whose body fails mid-way: the client sees the connection drop.
pub fn dropped() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("dropped by the test peer"))
    });
    let mut response = Response::new(Body::from_stream(failing));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("64"));
    response
}

/// Forwards a request to `upstream` (the sandbox) and returns its answer.
pub async fn forward(client: &reqwest::Client, upstream: &str, seen: Seen) -> Response {
    let mut request = client.request(seen.method, format!("{upstream}{}", seen.uri));
    if let Some(auth) = seen.authorization {
        request = request.header(header::AUTHORIZATION, auth);
    }
    if !seen.body.is_empty() {
        request = request
            .header(header::CONTENT_TYPE, "application/json")
            .body(seen.body);
    }
    match request.send().await {
        Ok(answer) => {
            let status = answer.status();
            let body = answer.bytes().await.unwrap_or_default();
            let mut response = Response::new(Body::from(body));
            *response.status_mut() = status;
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            response
        }
        Err(_) => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The current resident-set high-water mark of a running process, in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

//! The sandbox's HTTP surface: one gate (auth, faults, write limit) in front of the five
//! gateway endpoints, and two unauthenticated admin endpoints for tests and benchmarks.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::state::{Hold, SandboxState, StoredGateway, read_lock, write_lock};
use crate::model::GATEWAYS_PATH;
use crate::model::{Cipher, Codec, Encryption, GatewayFields};

type Shared = Arc<SandboxState>;

pub fn router(state: Shared) -> Router {
    let api = Router::new()
        .route(GATEWAYS_PATH, get(list).post(create))
        .route(
            &format!("{GATEWAYS_PATH}/{{id}}"),
            get(fetch).patch(update).delete(remove),
        )
        .route_layer(middleware::from_fn_with_state(Arc::clone(&state), gate));
    Router::new()
        .merge(api)
        .route("/__sandbox/stats", get(stats))
        .route("/__sandbox/gateways", get(dump))
        .with_state(state)
}

fn error(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "error": text }))).into_response()
}

fn with_retry_after(mut response: Response, secs: u64) -> Response {
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

/// SignalWire's 422 shape.
fn unprocessable(errors: Vec<(&str, String, Option<&str>)>) -> Response {
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|(code, message, attribute)| {
            json!({
                "type": "validation_error",
                "code": code,
                "message": message,
                "attribute": attribute,
                "url": format!("https://developer.signalwire.com/rest/overview/error-codes#{code}"),
            })
        })
        .collect();
    (
        StatusCode::UNPROCESSABLE_ENTITY,
        axum::Json(json!({ "errors": errors })),
    )
        .into_response()
}

fn is_write(method: &Method) -> bool {
    matches!(
        *method,
        Method::PATCH | Method::POST | Method::DELETE | Method::PUT
    )
}

/// One request being answered, counted until its answer is built.
struct InFlight<'a>(&'a SandboxState);

impl<'a> InFlight<'a> {
    fn enter(state: &'a SandboxState) -> InFlight<'a> {
        let now = state.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        state.max_in_flight.fetch_max(now, Ordering::Relaxed);
        InFlight(state)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Auth, then faults, then the write limit; only then the handler.
async fn gate(State(state): State<Shared>, mut request: Request, next: Next) -> Response {
    let n = state.requests.fetch_add(1, Ordering::Relaxed) + 1;
    let _answering = InFlight::enter(&state);
    let write = is_write(request.method());
    if write {
        state.note_write_arrival();
    }
    let config = state.config();
    let caller = config
        .projects()
        .iter()
        .position(|(id, token)| authorized(&request, id, token))
        .filter(|p| !state.is_revoked(*p));
    let Some(caller) = caller else {
        state.unauthorized.fetch_add(1, Ordering::Relaxed);
        let _ = state.first_unauthorized_at.compare_exchange(
            u64::MAX,
            n,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        return error(StatusCode::UNAUTHORIZED, "Unauthorized");
    };
    request.extensions_mut().insert(Caller(caller));
    let faults = &config.faults;
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.drop_rate > 0.0 && fastrand::f64() < faults.drop_rate {
        state.faults_injected.fetch_add(1, Ordering::Relaxed);
        return dropped_connection();
    }
    let draw = fastrand::f64();
    let mut cumulative = 0.0;
    for (status, rate) in &faults.status_rates {
        cumulative += rate;
        if draw < cumulative {
            state.faults_injected.fetch_add(1, Ordering::Relaxed);
            let code = StatusCode::from_u16(*status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let response = error(code, code.canonical_reason().unwrap_or("Error"));
            return match *status {
                429 | 503 => with_retry_after(response, faults.retry_after_secs),
                _ => response,
            };
        }
    }
    let admission = write.then(|| state.admit_write());
    let announced = match admission {
        Some(a) => a.limit.zip(a.remaining).map(|(l, r)| (l, r, a.reset_secs)),
        None => state.announce_now(),
    };
    let mut response = match admission {
        Some(a) if !a.admitted => with_retry_after(
            error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests"),
            a.reset_secs.max(1),
        ),
        _ => next.run(request).await,
    };
    if config.announce_limit
        && let Some((limit, remaining, reset)) = announced
    {
        let headers = response.headers_mut();
        headers.insert("x-ratelimit-limit", HeaderValue::from(limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(reset));
    }
    response
}

/// A response whose body fails mid-way: the client sees the connection drop.
fn dropped_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("injected connection drop"))
    });
    let mut response = Response::new(Body::from_stream(failing));
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("64"));
    response
}

/// The project whose credentials a request carries (its number; 0: the main one).
#[derive(Debug, Clone, Copy)]
struct Caller(usize);

/// The gateway `id` as `caller` may see it: another project's is as absent as an unknown
/// id (404), and counted.
fn visible(state: &SandboxState, caller: Caller, id: &Uuid) -> bool {
    match state.project_of(id) {
        Some(p) if p == caller.0 => true,
        Some(_) => {
            state.foreign_requests.fetch_add(1, Ordering::Relaxed);
            false
        }
        None => false,
    }
}

fn authorized(request: &Request, project_id: &str, token: &str) -> bool {
    use base64::Engine;
    let Some(value) = request.headers().get(header::AUTHORIZATION) else {
        return false;
    };
    let Some(encoded) = value.to_str().ok().and_then(|v| v.strip_prefix("Basic ")) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    decoded == format!("{project_id}:{token}").as_bytes()
}

fn resource(state: &SandboxState, id: &Uuid, g: &StoredGateway) -> Value {
    json!({
        "id": id.hyphenated().to_string(),
        "project_id": state
            .config()
            .projects()
            .get(g.project)
            .map_or("", |(id, _)| *id),
        "display_name": g.fields.name,
        "type": "sip_gateway",
        "created_at": g.created_at,
        "updated_at": g.updated_at,
        "sip_gateway": sip_gateway(g),
    })
}

/// The gateway's `sip_gateway` object: its id and the API's fields ([`super::API_FIELDS`]).
fn sip_gateway(g: &StoredGateway) -> Value {
    let stored = serde_json::to_value(&g.fields).unwrap_or_default();
    let mut object = serde_json::Map::new();
    object.insert("id".into(), json!(g.sip_id.hyphenated().to_string()));
    for key in super::API_FIELDS {
        let value = stored.get(key).cloned().unwrap_or_default();
        object.insert(key.into(), value);
    }
    Value::Object(object)
}

#[derive(Deserialize)]
struct ListQuery {
    page_size: Option<usize>,
    page_token: Option<String>,
}

async fn list(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(q): Query<ListQuery>,
) -> Response {
    state.lists.fetch_add(1, Ordering::Relaxed);
    let size = q
        .page_size
        .unwrap_or(50)
        .clamp(1, state.config().max_page_size.max(1));
    let after = match q.page_token.as_deref().map(Uuid::try_parse) {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => {
            return unprocessable(vec![(
                "invalid_parameter",
                "page_token is not valid".into(),
                Some("page_token"),
            )]);
        }
    };
    let map = read_lock(&state.gateways);
    let range = match after {
        Some(a) => map.range((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
        None => map.range(..),
    };
    let page: Vec<(&Uuid, &StoredGateway)> = range
        .filter(|(_, g)| g.project == caller.0)
        .take(size + 1)
        .collect();
    let more = page.len() > size;
    let data: Vec<Value> = page
        .iter()
        .take(size)
        .map(|(id, g)| resource(&state, id, g))
        .collect();
    let origin = state.config().next_link_origin.clone().unwrap_or_default();
    let mut links = json!({
        "self": format!("{GATEWAYS_PATH}?page_size={size}"),
        "first": format!("{GATEWAYS_PATH}?page_size={size}"),
    });
    if more && let Some((last, _)) = page.get(size - 1) {
        links["next"] = json!(format!(
            "{origin}{GATEWAYS_PATH}?page_size={size}&page_token={last}"
        ));
    }
    let body = json!({ "data": data, "links": links });
    drop(map);
    if !more {
        state.listing_done();
    }
    axum::Json(body).into_response()
}

async fn fetch(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    state.gets.fetch_add(1, Ordering::Relaxed);
    let Ok(id) = Uuid::try_parse(&id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if !visible(&state, caller, &id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    state.record_read(id);
    match read_lock(&state.gateways).get(&id) {
        Some(g) => axum::Json(resource(&state, &id, g)).into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn update(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    state.patches.fetch_add(1, Ordering::Relaxed);
    let Ok(id) = Uuid::try_parse(&id) else {
        return error(StatusCode::NOT_FOUND, "Not Found");
    };
    if !visible(&state, caller, &id) {
        return error(StatusCode::NOT_FOUND, "Not Found");
    }
    if state.config().failing_ids.contains(&id) {
        return error(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    }
    if state.throttles_once(&id) {
        let refused = error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
        return with_retry_after(refused, state.config().faults.retry_after_secs);
    }
    let mut fields = match validate_full_body(&body) {
        Ok(fields) => fields,
        Err(rejected) => {
            if rejected.partial {
                state.partial_patches.fetch_add(1, Ordering::Relaxed);
            }
            return *rejected.response;
        }
    };
    if state.mismatches(&id) {
        // The platform "normalises" the codec list: the answer differs from the request.
        fields.codecs = if fields.codecs == [Codec::G729] {
            vec![Codec::Pcmu]
        } else {
            vec![Codec::G729]
        };
    }
    // The PATCH chosen to be held (`--hold-patch`): its answer waits, before or after it
    // lands, until released; a sandbox that stops answers 503 instead.
    let hold = state.take_hold(id);
    if let Some(Hold::Before(release)) = &hold
        && !state.held(release).await
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    // In a block: the map's guard is gone before the held answer's wait.
    let answer = {
        let mut map = write_lock(&state.gateways);
        let Some(g) = map.get_mut(&id) else {
            return error(StatusCode::NOT_FOUND, "Not Found");
        };
        state.log_change(id, &g.fields, &fields, true);
        g.fields = fields;
        g.updated_at = httpdate::fmt_http_date(std::time::SystemTime::now());
        resource(&state, &id, g)
    };
    state.record_patch_applied(id);
    if let Some(Hold::After(release)) = &hold
        && !state.held(release).await
    {
        return error(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable");
    }
    axum::Json(answer).into_response()
}

async fn create(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Response {
    let fields = match validate_full_body(&body) {
        Ok(fields) => fields,
        Err(rejected) => return *rejected.response,
    };
    let id = super::random_uuid();
    let now = httpdate::fmt_http_date(std::time::SystemTime::now());
    let g = StoredGateway {
        project: caller.0,
        sip_id: super::random_uuid(),
        fields,
        created_at: now.clone(),
        updated_at: now,
    };
    let answer = resource(&state, &id, &g);
    write_lock(&state.gateways).insert(id, g);
    (StatusCode::CREATED, axum::Json(answer)).into_response()
}

async fn remove(
    State(state): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
) -> Response {
    let removed = Uuid::try_parse(&id)
        .ok()
        .filter(|id| visible(&state, caller, id))
        .and_then(|id| write_lock(&state.gateways).remove(&id));
    match removed {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => error(StatusCode::NOT_FOUND, "Not Found"),
    }
}

async fn stats(State(state): State<Shared>) -> Response {
    axum::Json(state.stats()).into_response()
}

async fn dump(State(state): State<Shared>) -> Response {
    let map: serde_json::Map<String, Value> = state
        .snapshot()
        .into_iter()
        .map(|(id, f)| (id.hyphenated().to_string(), json!(f)))
        .collect();
    axum::Json(Value::Object(map)).into_response()
}

/// A refused body, and whether it lacked one of the five fields (what the tool must never
/// send; the tests count these).
struct Rejected {
    response: Box<Response>,
    partial: bool,
}

/// The live platform validates PATCH as a full replacement: all five fields, known enum
/// values, at least one cipher and codec, an external URI.
fn validate_full_body(body: &[u8]) -> Result<GatewayFields, Rejected> {
    let Ok(Value::Object(obj)) = serde_json::from_slice::<Value>(body) else {
        return Err(Rejected {
            response: Box::new(error(StatusCode::BAD_REQUEST, "Bad Request")),
            partial: true,
        });
    };
    let partial = super::API_FIELDS
        .iter()
        .any(|k| obj.get(*k).is_none_or(Value::is_null));
    let mut errors: Vec<(&str, String, Option<&str>)> = Vec::new();
    for key in obj.keys() {
        if !super::API_FIELDS.contains(&key.as_str()) {
            errors.push((
                "unknown_parameter",
                format!("{key} is not a parameter"),
                None,
            ));
        }
    }
    let text = |key: &'static str, errors: &mut Vec<_>| -> String {
        match obj.get(key).and_then(Value::as_str) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                errors.push((
                    "missing_required_parameter",
                    format!("{key} is required"),
                    Some(key),
                ));
                String::new()
            }
        }
    };
    let name = text("name", &mut errors);
    let uri = text("uri", &mut errors);
    let encryption = text("encryption", &mut errors);
    if !encryption.is_empty()
        && !["required", "optional", "forbidden"].contains(&encryption.as_str())
    {
        errors.push((
            "invalid_parameter",
            format!("encryption must be one of required, optional, forbidden; got {encryption}"),
            Some("encryption"),
        ));
    }
    if !uri.is_empty() && !is_external(&uri) {
        errors.push((
            "sip_gateway_uri_must_be_external",
            "The SIP gateway URI must point to an external SIP entity".into(),
            Some("uri"),
        ));
    }
    let ciphers = enum_list::<Cipher>(&obj, "ciphers", Cipher::KNOWN, &mut errors);
    let codecs = enum_list::<Codec>(&obj, "codecs", Codec::KNOWN, &mut errors);
    if !errors.is_empty() {
        return Err(Rejected {
            response: Box::new(unprocessable(errors)),
            partial,
        });
    }
    Ok(GatewayFields {
        name,
        uri,
        encryption: Some(Encryption::from_wire(&encryption)),
        ciphers,
        codecs,
    })
}

fn enum_list<T: for<'de> Deserialize<'de>>(
    obj: &serde_json::Map<String, Value>,
    key: &'static str,
    known: &[&str],
    errors: &mut Vec<(&str, String, Option<&'static str>)>,
) -> Vec<T> {
    let items: Vec<&str> = obj
        .get(key)
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if items.is_empty() {
        errors.push((
            "missing_sip_configuration",
            format!("At least one of {key} is required"),
            Some(key),
        ));
        return Vec::new();
    }
    if let Some(bad) = items.iter().find(|i| !known.contains(i)) {
        errors.push((
            "invalid_parameter",
            format!("{key} has an unknown value {bad}"),
            Some(key),
        ));
        return Vec::new();
    }
    items
        .iter()
        .filter_map(|i| serde_json::from_value(Value::String((*i).to_owned())).ok())
        .collect()
}

fn is_external(uri: &str) -> bool {
    let (_, host) = crate::model::sip_address_parts(uri);
    let host = host
        .split([':', ';'])
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    !(host.is_empty()
        || host == "localhost"
        || host.starts_with("127.")
        || host.ends_with(".signalwire.com"))
}

//! The gateway's public API: sign-up, and every data call authenticated, routed to the owning
//! region, re-routed on 421 and held (bounded) during a cutover.

use crate::route::{Route, resolve, resolve_service};
use crate::state::{CallLabels, GatewayState};
use crate::tokens::Identity;
use axum::Json;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use domicile_core::{CollectionKind, Market, ServiceName, UserId};
use domicile_http::{ApiError, request};
use domicile_wire::api::{EPOCH_HEADER, ErrorBody, MARKET_HEADER};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupRequest {
    market: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SignupResponse {
    pub user: String,
    pub market: String,
    pub token: String,
}

/// `POST /v1/signup` `{"market":"IN"}` → a new user id and its token.
pub async fn signup(
    State(state): State<Arc<GatewayState>>,
    body: Body,
) -> Result<Json<SignupResponse>, ApiError> {
    let req: SignupRequest = request::json(&request::body(body, 4 << 10).await?)?;
    let market =
        Market::new(&req.market).map_err(|e| ApiError::bad("invalid_market", e.to_string()))?;
    if !state.table().policy.markets.contains_key(&market) {
        return Err(ApiError::bad(
            "unknown_market",
            format!("market {market} is not served by this cluster"),
        ));
    }
    let user = {
        use rand::RngCore;
        let mut id = [0u8; 10];
        rand::rng().fill_bytes(&mut id);
        let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
        UserId::new(format!("u{hex}")).map_err(|e| ApiError::Internal(e.to_string()))?
    };
    let identity = Identity { user, market };
    let token = state
        .tokens
        .issue(&identity)
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Json(SignupResponse {
        user: identity.user.to_string(),
        market: market.to_string(),
        token,
    }))
}

/// Checks the bearer token and that it is the path's user.
pub(crate) fn authenticate(
    state: &GatewayState,
    headers: &HeaderMap,
    user: &str,
) -> Result<Identity, ApiError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized("send `Authorization: Bearer <token>` from sign-up".into())
        })?;
    let identity = state
        .tokens
        .verify(token)
        .map_err(|e| ApiError::Unauthorized(e.to_string()))?;
    if identity.user.as_str() != user {
        return Err(ApiError::Forbidden(
            "a token reaches only its own user's data".into(),
        ));
    }
    Ok(identity)
}

/// A request body: buffered (retryable) or streamed (a blob: sent once).
pub(crate) enum Payload {
    Buffered(Bytes),
    Streamed(Option<Body>),
}

pub async fn record_call(
    State(state): State<Arc<GatewayState>>,
    Path((user, collection, _key)): Path<(String, String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    call(state, user, collection, method, uri, headers, body).await
}

pub async fn list_call(
    State(state): State<Arc<GatewayState>>,
    Path((user, collection)): Path<(String, String)>,
    method: Method,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    call(state, user, collection, method, uri, headers, body).await
}

async fn call(
    state: Arc<GatewayState>,
    user: String,
    collection: String,
    method: Method,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let response =
        match route_and_forward(&state, &user, &collection, &method, &uri, &headers, body).await {
            Ok(r) => r,
            Err(e) => e.into_response(),
        };
    observe(&state, &method, started, &response);
    response
}

/// Counts a proxied call by method and status, and its latency.
pub(crate) fn observe(
    state: &GatewayState,
    method: &Method,
    started: Instant,
    response: &Response,
) {
    state
        .metrics
        .latency
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .calls
        .get_or_create(&CallLabels {
            method: method.to_string(),
            status: response.status().as_u16(),
        })
        .inc();
}

async fn route_and_forward(
    state: &GatewayState,
    user: &str,
    collection: &str,
    method: &Method,
    uri: &axum::http::Uri,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let identity = authenticate(state, headers, user)?;
    let collection = request::collection(collection)?;
    let first = resolve(&state.table(), &identity.user, identity.market, &collection)?;
    let mut payload = match (method, first.kind) {
        (&Method::PUT, CollectionKind::Blobs) => Payload::Streamed(Some(body)),
        _ => Payload::Buffered(request::body(body, state.config.max_record_bytes).await?),
    };
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let response =
        forward_from(state, &identity, first, method, path, headers, &mut payload).await?;
    Ok(relay(response))
}

/// Forwards a call for `identity`'s data of `service` to its owner: re-routed after a 421,
/// held (bounded) during a cutover. Returns the first answer that is not a 421.
pub(crate) async fn forward_routed(
    state: &GatewayState,
    identity: &Identity,
    service: &ServiceName,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    payload: &mut Payload,
) -> Result<Response, ApiError> {
    let first = resolve_service(&state.table(), &identity.user, identity.market, service)?;
    forward_from(state, identity, first, method, path, headers, payload).await
}

/// [`forward_routed`] from a route already resolved (a record call resolves it to learn the
/// collection's kind first).
async fn forward_from(
    state: &GatewayState,
    identity: &Identity,
    first: Route,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    payload: &mut Payload,
) -> Result<Response, ApiError> {
    let deadline = tokio::time::Instant::now() + state.config.hold;
    let service = first.service.clone();
    let mut route = first;
    loop {
        let outcome = forward(state, method, path, headers, identity, &route, payload).await;
        let retry = match outcome {
            Ok(response) if response.status() != StatusCode::MISDIRECTED_REQUEST => {
                return Ok(response);
            }
            Ok(response) => {
                let text = axum::body::to_bytes(response.into_body(), 64 << 10)
                    .await
                    .unwrap_or_default();
                let code = serde_json::from_slice::<ErrorBody>(&text)
                    .map(|b| b.error.code)
                    .unwrap_or_default();
                Retry::Misdirected {
                    fenced: code == "range_fenced",
                }
            }
            Err(e) => {
                tracing::warn!(region = %route.region, error = %e, "region node unreachable");
                Retry::Unreachable
            }
        };
        if matches!(payload, Payload::Streamed(None)) {
            return Err(ApiError::RetryLater {
                message: "the range moved while a blob was streaming; send it again".into(),
                after_secs: 1,
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::RetryLater {
                message: format!(
                    "{}/{} is being moved; retry shortly",
                    route.service, identity.market
                ),
                after_secs: 1,
            });
        }
        match retry {
            // A cutover: hold the call until the control plane publishes the new owner.
            Retry::Misdirected { fenced: true } => {
                state.metrics.holds.inc();
                state.table_change(deadline).await;
            }
            // A stale table: fetch the newest now; if the control plane has nothing newer yet,
            // wait for its next version.
            Retry::Misdirected { fenced: false } | Retry::Unreachable => {
                state.metrics.retries.inc();
                if !state.refresh().await {
                    state
                        .table_change(deadline.min(
                            tokio::time::Instant::now() + std::time::Duration::from_millis(200),
                        ))
                        .await;
                }
            }
        }
        route = resolve_service(&state.table(), &identity.user, identity.market, &service)?;
    }
}

enum Retry {
    Misdirected { fenced: bool },
    Unreachable,
}

/// Headers passed from the client to the region node.
const FORWARDED: [header::HeaderName; 3] = [
    header::IF_MATCH,
    header::IF_NONE_MATCH,
    header::CONTENT_TYPE,
];
/// Headers passed back from the region node to the client.
const RELAYED: [header::HeaderName; 4] = [
    header::ETAG,
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::RETRY_AFTER,
];

/// Sends the call to `route`'s node: into its router when it runs in this process, else over
/// the pooled HTTP client. Either way the node gets the same request and makes the same checks.
async fn forward(
    state: &GatewayState,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    identity: &Identity,
    route: &Route,
    payload: &mut Payload,
) -> Result<Response, reqwest::Error> {
    if let Some(node) = state.local.router(route) {
        state.metrics.forwarded_in_process.inc();
        let body = match payload {
            Payload::Buffered(bytes) => Body::from(bytes.clone()),
            Payload::Streamed(body) => body.take().unwrap_or_else(Body::empty),
        };
        let mut request = match node_request(method, path, headers, identity, route).body(body) {
            Ok(request) => request,
            Err(e) => return Ok(not_forwardable(e)),
        };
        // The gateway is a cluster member, as its client certificate says over TLS.
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(domicile_http::Peer {
                addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
                cluster_member: true,
            }));
        use tower::ServiceExt;
        return Ok(match node.oneshot(request).await {
            Ok(response) => response,
            Err(never) => match never {},
        });
    }
    let body = match payload {
        Payload::Buffered(bytes) => reqwest::Body::from(bytes.clone()),
        Payload::Streamed(body) => match body.take() {
            Some(body) => reqwest::Body::wrap_stream(body.into_data_stream()),
            None => reqwest::Body::from(Bytes::new()),
        },
    };
    let uri = format!("{}{path}", route.url);
    let request = match node_request(method, &uri, headers, identity, route).body(body) {
        Ok(request) => reqwest::Request::try_from(request)?,
        Err(e) => return Ok(not_forwardable(e)),
    };
    let response = state.http.execute(request).await.inspect_err(|_| {
        state.metrics.forwards_failed.inc();
    })?;
    match response.version() {
        reqwest::Version::HTTP_2 => state.metrics.forwarded_http2.inc(),
        _ => state.metrics.forwarded_http1.inc(),
    };
    Ok(axum::http::Response::from(response).map(Body::new))
}

/// The request a node gets for a call: `method` on `uri`, the user's market, the route's epoch
/// and the client's headers that matter to the node.
fn node_request(
    method: &Method,
    uri: &str,
    headers: &HeaderMap,
    identity: &Identity,
    route: &Route,
) -> axum::http::request::Builder {
    let mut request = axum::http::Request::builder()
        .method(method.clone())
        .uri(uri)
        .header(MARKET_HEADER, identity.market.as_str())
        .header(EPOCH_HEADER, route.epoch.0);
    for name in FORWARDED {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    request
}

fn not_forwardable(e: axum::http::Error) -> Response {
    ApiError::bad("invalid_path", format!("not a forwardable call: {e}")).into_response()
}

/// The node's answer as the client gets it: its status, the headers a client needs, and its
/// body, streamed through.
pub(crate) fn relay(response: Response) -> Response {
    let (parts, body) = response.into_parts();
    let mut headers = HeaderMap::new();
    for name in RELAYED {
        if let Some(v) = parts.headers.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    (parts.status, headers, body).into_response()
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<Arc<GatewayState>>) -> impl IntoResponse {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, &state.metrics.registry).is_err() {
        tracing::error!("metrics encoding failed");
    }
    let ct = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, ct)], text)
}

//! The gateway (`domicile gateway`): signs users up, authenticates every call with a PASETO
//! token, and forwards it to the region that owns `(service, market, bucket)`: over pooled,
//! mutually authenticated HTTP/1.1 (decision 0004), or straight into the node's router when the
//! node runs in the same process (`domicile up`; decision 0017).
//! On a 421 it refreshes its routing table and retries; during a cutover it holds the call
//! (bounded, 2 s by default) and then answers 503 with `Retry-After`.
//!
//! Architecture Invariant: the gateway never forwards a call whose route it cannot determine,
//! and a token reaches only its own user's data. It keeps no data of its own.

#![deny(clippy::unwrap_used)]

pub mod batch;
pub mod consent;
pub mod erasure;
pub mod export;
pub mod local;
pub mod proxy;
pub mod route;
pub mod state;
pub mod tokens;

use axum::Router;
use axum::routing::{any, delete, get, post, put};
pub use local::LocalNodes;
pub use state::{GatewayConfig, GatewayState, NodeHttp};
use std::sync::Arc;

pub fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/v1/signup", post(proxy::signup))
        .route("/v1/users/{user}", delete(erasure::erase))
        .route("/v1/users/{user}/export", get(export::export))
        .route("/v1/users/{user}/batch", post(batch::batch))
        .route("/v1/users/{user}/consents", get(consent::list))
        .route(
            "/v1/users/{user}/consents/{purpose}",
            put(consent::grant).delete(consent::revoke),
        )
        .route("/v1/users/{user}/{collection}", get(proxy::list_call))
        .route(
            "/v1/users/{user}/{collection}/{key}",
            any(proxy::record_call),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(proxy::metrics))
        .fallback(|| async { domicile_http::ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { domicile_http::ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

//! The control plane (`domicile control`): the one source of truth for regions, policy,
//! placement and epochs, persisted in its own store. Serves the admin API (`/admin`, behind an
//! admin credential), the routing table's watch (`/internal/table`, long poll by version) and
//! the ledger's event intake (`/internal/ledger/events`).
//!
//! Architecture Invariant: `/internal` answers only a peer whose connection presented a
//! certificate from the cluster CA (the listener accepts connections without one for `/admin`).
//!
//! Architecture Invariant: every change is validated against the policy, pushed to the region
//! nodes it concerns (release at the old owner before own at the new one), persisted, and only
//! then published with a new table version. A change that fails half-way is retried with the
//! same epoch, which region nodes accept idempotently.

#![deny(clippy::unwrap_used)]

pub mod admin;
pub mod ledger;
pub mod migration;
pub mod placement_change;
pub mod policy_change;
pub mod state;
pub mod table;
pub mod user_override;

use axum::Router;
use axum::routing::{get, put};
pub use state::ControlState;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::net::TcpListener;

pub fn router(state: Arc<ControlState>) -> Router {
    let internal = Router::new()
        .route("/internal/table", get(table::watch))
        .route_layer(axum::middleware::from_fn(
            domicile_http::require_cluster_member,
        ));
    Router::new()
        .merge(internal)
        .route("/admin/table", get(admin::table))
        .route("/admin/regions/{id}", put(admin::put_region))
        .route(
            "/admin/policy",
            get(admin::get_policy).put(admin::put_policy),
        )
        .route(
            "/admin/placement",
            get(admin::get_placement).post(admin::change_placement),
        )
        .route(
            "/admin/checkpoints/{name}",
            get(admin::get_checkpoint).put(admin::put_checkpoint),
        )
        .route(
            "/admin/migrations",
            axum::routing::post(migration::api::start),
        )
        .route("/admin/migrations/current", get(migration::api::status))
        .route(
            "/admin/migrations/current/document",
            get(migration::api::document),
        )
        .route(
            "/admin/migrations/current/{action}",
            axum::routing::post(migration::api::steer),
        )
        .route("/admin/ledger", get(migration::api::get_ledger))
        .route(
            "/admin/ledger/checkpoint",
            axum::routing::post(migration::api::post_checkpoint),
        )
        .route(
            "/internal/ledger/events",
            axum::routing::post(ledger::events::post_event),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(admin::metrics))
        .fallback(|| async { domicile_http::ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { domicile_http::ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .with_state(state)
}

/// Binds a listener; `serve` runs until `shutdown` completes.
pub async fn bind(addr: &str) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

pub async fn serve(
    listener: TcpListener,
    state: Arc<ControlState>,
    transport: &domicile_tls::ServerTransport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    domicile_http::serve(listener, router(state), transport, shutdown).await
}

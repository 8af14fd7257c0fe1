//! The region node: one region's store served over HTTP (axum).
//!
//! Public API under `/v1` (records and blobs of a user, consents, export pages), internal API
//! under `/internal` (snapshot and change streams, import, digests, ownership, purge, erasure),
//! `/metrics` and `/healthz`.
//!
//! Architecture Invariant: the node enforces, on every request, that it owns the range at the
//! caller's epoch and that the policy allows the data in this region; it knows nothing of the
//! gateway, the control plane or other regions beyond the ids it is told.

#![deny(clippy::unwrap_used)]

pub mod batch;
pub mod blob_transfer;
pub mod consent;
pub mod erasure;
pub mod export;
pub mod internal;
pub mod metrics;
pub mod ownership;
pub mod public;
pub mod pull;
pub mod state;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use domicile_core::{ClusterConfig, RegionId};
pub use domicile_http::ApiError;
use domicile_store::{
    BlobError, BlobStore, EncryptedStore, RegionStore, StoreError, StoreSpec, open_store,
};
pub use state::NodeState;
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use thiserror::Error;
use tokio::net::TcpListener;

#[derive(Debug, Error)]
pub enum NodeError {
    #[error("region {0} is not declared in the config")]
    UnknownRegion(RegionId),
    #[error("open the store: {0}")]
    Store(#[from] StoreError),
    #[error("open the blob store: {0}")]
    Blobs(#[from] BlobError),
    #[error("listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("serve: {0}")]
    Serve(std::io::Error),
}

/// Opens a region's store and blob store as the config names them (paths relative to `base`).
pub async fn open(
    cluster: &ClusterConfig,
    region: &RegionId,
    base: &Path,
) -> Result<NodeState, NodeError> {
    let config = cluster
        .region(region)
        .ok_or_else(|| NodeError::UnknownRegion(region.clone()))?;
    let engine = open_store(&StoreSpec::parse(&config.store, base)?).await?;
    let blobs = BlobStore::from_spec(&config.blobs, base)?;
    open_sealed(
        cluster,
        region,
        engine,
        blobs,
        &base.join(config.keyring_path()),
    )
    .await
}

/// A node over `engine` and `blobs`, both encrypted at rest with the region's keyring at
/// `keyring` (made if missing).
pub async fn open_sealed(
    cluster: &ClusterConfig,
    region: &RegionId,
    engine: Arc<dyn RegionStore>,
    blobs: BlobStore,
    keyring: &Path,
) -> Result<NodeState, NodeError> {
    let store = Arc::new(EncryptedStore::with_keyring_file(
        engine,
        keyring,
        region.as_str(),
    )?);
    let keys = store.keys().clone();
    let blobs = blobs.with_encryption(keys.clone());
    Ok(NodeState::new(cluster, region.clone(), store, blobs)
        .await?
        .with_data_keys(keys))
}

/// Every route of the node. JSON errors for unknown paths and methods too.
pub fn router(state: Arc<NodeState>) -> Router {
    let metrics = state.metrics.clone();
    Router::new()
        .route("/v1/users/{user}/consents", get(consent::list))
        .route(
            "/v1/users/{user}/consents/{purpose}",
            put(consent::grant).delete(consent::revoke),
        )
        .route("/v1/users/{user}/export", get(export::page))
        .route("/v1/users/{user}/batch", post(batch::write_batch))
        .route("/v1/users/{user}/{collection}", get(public::list))
        .route(
            "/v1/users/{user}/{collection}/{key}",
            get(public::get_record)
                .put(public::put_record)
                .delete(public::delete_record),
        )
        .route(
            "/internal/blobs/{service}/{market}/{user}/{collection}/{hash}",
            get(blob_transfer::get)
                .head(blob_transfer::head)
                .put(blob_transfer::put),
        )
        .route("/internal/snapshot", post(internal::snapshot))
        .route("/internal/changes", get(internal::changes))
        .route("/internal/import", post(internal::import))
        .route("/internal/pull", post(pull::start))
        .route("/internal/pull/{session}/next", post(pull::next))
        .route(
            "/internal/pull/{session}",
            axum::routing::delete(pull::close),
        )
        .route("/internal/digest", post(internal::digest))
        .route("/internal/fence", post(internal::fence))
        .route("/internal/unfence", post(internal::unfence))
        .route("/internal/own", post(internal::own))
        .route("/internal/release", post(internal::release))
        .route("/internal/ownership", get(internal::ownership))
        .route("/internal/user-ownership", post(internal::user_ownership))
        .route("/internal/purge", post(internal::purge))
        .route("/internal/status", get(internal::status))
        .route("/internal/users/{user}/erase", post(erasure::erase))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok" }))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            metrics::track,
        ))
        .with_state(state)
}

async fn render_metrics(State(state): State<Arc<NodeState>>) -> impl IntoResponse {
    state.metrics.last_lsn.set(state.store.last_lsn().0);
    state.metrics.pull_sessions.set(state.pulls.len() as u64);
    let ct = HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8");
    ([(header::CONTENT_TYPE, ct)], state.metrics.render())
}

/// Follows the control plane's routing table and adopts every newer policy, so residency is
/// enforced against the policy version in force (a completed phase tightens it).
pub async fn follow_policy(
    state: Arc<NodeState>,
    control: domicile_client::control::ControlClient,
) {
    let initial = Arc::new(domicile_wire::api::RoutingTable {
        version: 0,
        buckets: state.buckets,
        schema: state.schema.clone(),
        policy: state.policy().as_ref().clone(),
        regions: Vec::new(),
        placement: domicile_core::Placement::default(),
        overrides: Vec::new(),
    });
    let (tx, mut rx) = tokio::sync::watch::channel(initial);
    tokio::spawn(control.watch(Arc::new(tx)));
    while rx.changed().await.is_ok() {
        let table = rx.borrow_and_update().clone();
        state.update_policy(&table.policy);
    }
}

/// A bound, not yet serving, region node.
pub struct BoundNode {
    listener: TcpListener,
    state: Arc<NodeState>,
}

impl BoundNode {
    pub async fn bind(state: NodeState, addr: &str) -> Result<Self, NodeError> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| NodeError::Listen {
                addr: addr.to_string(),
                source,
            })?;
        Ok(Self {
            listener,
            state: Arc::new(state),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, NodeError> {
        self.listener.local_addr().map_err(NodeError::Serve)
    }

    pub fn state(&self) -> Arc<NodeState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then finishes in-flight requests.
    /// With TLS, every connection must present a certificate from the cluster CA: every caller
    /// of a node (gateway, control plane, mover) is a cluster member.
    pub async fn serve(
        self,
        transport: &domicile_tls::ServerTransport,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), NodeError> {
        tracing::info!(region = %self.state.region, addr = ?self.listener.local_addr().ok(), "region node serving");
        domicile_http::serve(self.listener, router(self.state), transport, shutdown)
            .await
            .map_err(NodeError::Serve)
    }
}

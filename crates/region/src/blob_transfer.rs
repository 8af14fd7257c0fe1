//! Blobs between regions: `/internal/blobs/{service}/{market}/{user}/{collection}/{hash}`.
//!
//! A move carries a blob collection's records (the blob's metadata) through snapshots and change
//! streams; the mover copies each record's blob first (`HEAD` at the target, then `GET` at the
//! source streamed into `PUT` at the target), so a record never arrives before its bytes. The
//! source opens the blob under its own data key and the target seals it under its own: plaintext
//! exists only in flight, over the cluster's internal connections.

use crate::state::NodeState;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use domicile_core::{CollectionKind, Market, ServiceName};
use domicile_http::ApiError;
use domicile_http::request;
use domicile_store::CollectionAddress;
use futures::TryStreamExt;
use std::sync::Arc;

/// The path of one blob: whose it is and its content address.
#[derive(serde::Deserialize)]
pub struct BlobPath {
    service: String,
    market: String,
    user: String,
    collection: String,
    hash: String,
}

impl BlobPath {
    fn owner(&self, state: &NodeState) -> Result<(CollectionAddress, String), ApiError> {
        let service = ServiceName::new(&self.service)
            .map_err(|e| ApiError::bad("invalid_service", e.to_string()))?;
        let market = Market::new(&self.market)
            .map_err(|e| ApiError::bad("invalid_market", e.to_string()))?;
        let user = request::user(&self.user)?;
        let name = request::collection(&self.collection)?;
        let spec = state
            .schema
            .collection(&name)
            .filter(|s| s.service == service && s.kind == CollectionKind::Blobs)
            .ok_or_else(|| {
                ApiError::bad(
                    "scope_mismatch",
                    format!("{name} is not a blob collection of {service}"),
                )
            })?;
        let hash = self.hash.to_ascii_lowercase();
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ApiError::bad(
                "invalid_hash",
                "a blob's address is 64 hex digits (BLAKE3)",
            ));
        }
        Ok((
            CollectionAddress::new(spec.service.clone(), market, user, name, state.buckets),
            hash,
        ))
    }
}

/// `HEAD`: 200 when this region holds the blob, 404 when not.
pub async fn head(
    State(state): State<Arc<NodeState>>,
    Path(path): Path<BlobPath>,
) -> Result<StatusCode, ApiError> {
    let (owner, hash) = path.owner(&state)?;
    if state.blobs.exists(&owner, &hash).await? {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::NotFound(format!("no blob {hash}")))
    }
}

/// `GET`: the blob's plaintext, streamed.
pub async fn get(
    State(state): State<Arc<NodeState>>,
    Path(path): Path<BlobPath>,
) -> Result<Response, ApiError> {
    let (owner, hash) = path.owner(&state)?;
    let stream = state.blobs.get_stream(&owner, &hash).await?;
    let ct = [(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    )];
    Ok((ct, Body::from_stream(stream)).into_response())
}

/// Stores a streamed blob (sealed here) if its content matches `hash`, its address; content
/// that does not is removed again and refused (`hash_mismatch`).
pub(crate) async fn store_checked<S, E>(
    state: &NodeState,
    owner: &CollectionAddress,
    hash: &str,
    stream: S,
) -> Result<(), ApiError>
where
    S: futures::Stream<Item = Result<bytes::Bytes, E>> + Send,
    E: std::fmt::Display,
{
    let stored = state
        .blobs
        .put_stream(owner, stream, state.limits.max_blob_bytes)
        .await?;
    if stored.hash != hash {
        // Stored under the content's own address, which no record names: remove it.
        if let Err(e) = state.blobs.delete(owner, &stored.hash).await {
            tracing::warn!(error = %e, hash = %stored.hash, "could not remove a mismatched blob");
        }
        return Err(ApiError::bad(
            "hash_mismatch",
            format!("the content's BLAKE3 is {}, not {hash}", stored.hash),
        ));
    }
    Ok(())
}

/// `PUT`: stores the streamed blob (sealed here) if its content matches its address, which
/// the residency policy must allow in this region.
pub async fn put(
    State(state): State<Arc<NodeState>>,
    Path(path): Path<BlobPath>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let (owner, hash) = path.owner(&state)?;
    // Nothing crosses a border the policy forbids: checked before a byte is read.
    state.check_residency(owner.market, &owner.service)?;
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    store_checked(&state, &owner, &hash, stream).await?;
    Ok(StatusCode::NO_CONTENT)
}

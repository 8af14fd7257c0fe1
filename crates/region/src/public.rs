//! The public data API under `/v1`: records and blobs of one user, with versions as ETags.

use crate::state::NodeState;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use domicile_core::{CollectionKind, Epoch, Market, RecordKey, Version};
use domicile_http::ApiError;
use domicile_http::request;
use domicile_store::{
    BlobRef, CollectionAddress, Mutation, MutationOp, Precondition, RecordAddress,
};
use domicile_wire::api::{ListItem, ListResponse, WriteResponse};
use futures::TryStreamExt;
use serde::Deserialize;
use std::sync::Arc;

/// The largest page `list` returns.
const MAX_PAGE: usize = 1000;

/// A validated request target: the collection address plus routing facts from the headers.
struct Target {
    collection: CollectionAddress,
    kind: CollectionKind,
    /// The consent purpose a write here needs an active grant of.
    consent: Option<String>,
    epoch: Option<Epoch>,
}

impl Target {
    fn parse(
        state: &NodeState,
        user: &str,
        collection: &str,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let user = request::user(user)?;
        let name = request::collection(collection)?;
        let spec = state
            .schema
            .collection(&name)
            .ok_or_else(|| ApiError::NotFound(format!("the schema has no collection {name}")))?;
        let market: Market = request::market(headers)?;
        let epoch = request::epoch(headers)?;
        let collection =
            CollectionAddress::new(spec.service.clone(), market, user, name, state.buckets);
        Ok(Self {
            collection,
            kind: spec.kind,
            consent: spec.consent.clone(),
            epoch,
        })
    }

    fn record(&self, key: RecordKey) -> RecordAddress {
        self.collection.record(key)
    }
}

fn etag_headers(version: Version) -> [(header::HeaderName, HeaderValue); 1] {
    // A version's ETag is digits in quotes: always a valid header value.
    let value =
        HeaderValue::from_str(&version.to_etag()).unwrap_or(HeaderValue::from_static("\"0\""));
    [(header::ETAG, value)]
}

fn written(version: Version) -> Response {
    (
        etag_headers(version),
        Json(WriteResponse {
            version: version.to_string(),
        }),
    )
        .into_response()
}

/// Checks ownership for a read of the target's bucket.
async fn check_read(state: &NodeState, t: &Target) -> Result<(), ApiError> {
    let c = &t.collection;
    state
        .ownership()
        .check_collection(c, t.epoch, false)
        .map(|_| ())
}

pub async fn get_record(
    State(state): State<Arc<NodeState>>,
    Path((user, collection, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::parse(&state, &user, &collection, &headers)?;
    let address = t.record(request::key(&key)?);
    check_read(&state, &t).await?;
    let record = state
        .store
        .get(&address)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no record {key}")))?;
    match t.kind {
        CollectionKind::Records => {
            let ct = [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )];
            Ok((etag_headers(record.version), ct, record.value).into_response())
        }
        CollectionKind::Blobs => {
            let blob: BlobRef = serde_json::from_slice(&record.value)
                .map_err(|e| ApiError::Internal(format!("blob metadata of {key}: {e}")))?;
            let stream = state.blobs.get_stream(&t.collection, &blob.hash).await?;
            let content_type = blob
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream");
            let ct = HeaderValue::from_str(content_type)
                .unwrap_or(HeaderValue::from_static("application/octet-stream"));
            let headers = [
                (header::CONTENT_TYPE, ct),
                (header::CONTENT_LENGTH, HeaderValue::from(blob.size)),
            ];
            Ok((
                etag_headers(record.version),
                headers,
                Body::from_stream(stream),
            )
                .into_response())
        }
    }
}

pub async fn put_record(
    State(state): State<Arc<NodeState>>,
    Path((user, collection, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let t = Target::parse(&state, &user, &collection, &headers)?;
    let address = t.record(request::key(&key)?);
    let precondition = request::precondition(&headers)?;
    let c = &t.collection;
    // Residency first: a forbidden write is refused even if an operator mis-set ownership.
    state.check_residency(c.market, &c.service)?;
    match t.kind {
        CollectionKind::Records => {
            let value = request::body(body, state.limits.max_record_bytes).await?;
            write(
                &state,
                &t,
                Mutation {
                    address,
                    op: MutationOp::Put(value),
                    precondition,
                },
            )
            .await
            .map(written)
        }
        CollectionKind::Blobs => put_blob(&state, &t, address, precondition, &headers, body).await,
    }
}

/// One durable write under the ownership gate (see `NodeState::ownership`). A put to a
/// collection with a consent purpose also checks the grant, holding the user's consent lock
/// from the check to the commit (see `consent`); deletes need no grant.
async fn write(state: &NodeState, t: &Target, mutation: Mutation) -> Result<Version, ApiError> {
    let c = &t.collection;
    let _consent = match &t.consent {
        Some(_) => Some(state.consent_locks.lock(&c.user).await),
        None => None,
    };
    let gate = state.write_gate().await;
    gate.check_collection(c, t.epoch, true)?;
    if let Some(purpose) = &t.consent
        && matches!(mutation.op, MutationOp::Put(_))
    {
        crate::consent::require_grant(state, c, purpose).await?;
    }
    let versions = state.store.write(vec![mutation]).await?;
    drop(gate);
    versions
        .first()
        .copied()
        .ok_or_else(|| ApiError::Internal("write returned no version".into()))
}

async fn put_blob(
    state: &NodeState,
    t: &Target,
    address: RecordAddress,
    precondition: Precondition,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Check ownership (and consent) before streaming megabytes in; the write re-checks both.
    {
        let c = &t.collection;
        state.ownership().check_collection(c, t.epoch, true)?;
        if let Some(purpose) = &t.consent {
            crate::consent::require_grant(state, c, purpose).await?;
        }
    }
    let stream = body.into_data_stream().map_err(|e| e.to_string());
    let mut blob = state
        .blobs
        .put_stream(&t.collection, stream, state.limits.max_blob_bytes)
        .await?;
    blob.content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let meta = serde_json::to_vec(&blob).map_err(|e| ApiError::Internal(e.to_string()))?;
    let previous = state.store.get(&address).await?;
    let mutation = Mutation {
        address: address.clone(),
        op: MutationOp::Put(meta.into()),
        precondition,
    };
    match write(state, t, mutation).await {
        Ok(version) => {
            if let Some(previous) = previous {
                release_blob(state, &t.collection, &previous.value).await;
            }
            Ok(written(version))
        }
        Err(e) => {
            release_blob_hash(state, &t.collection, &blob.hash).await;
            Err(e)
        }
    }
}

/// Deletes a blob a record no longer points at, unless another record of the user still does.
async fn release_blob(state: &NodeState, owner: &CollectionAddress, meta: &[u8]) {
    if let Ok(old) = serde_json::from_slice::<BlobRef>(meta) {
        release_blob_hash(state, owner, &old.hash).await;
    }
}

pub(crate) async fn release_blob_hash(state: &NodeState, owner: &CollectionAddress, hash: &str) {
    match blob_referenced(state, owner, hash).await {
        Ok(false) => {
            if let Err(e) = state.blobs.delete(owner, hash).await {
                tracing::warn!(error = %e, %hash, "could not delete an unreferenced blob");
            }
        }
        Ok(true) => {}
        Err(e) => {
            tracing::warn!(error = ?e, %hash, "could not check blob references; keeping the blob")
        }
    }
}

async fn blob_referenced(
    state: &NodeState,
    owner: &CollectionAddress,
    hash: &str,
) -> Result<bool, ApiError> {
    let mut after: Option<RecordKey> = None;
    loop {
        let page = state.store.list(owner, after.as_ref(), MAX_PAGE).await?;
        for item in &page.items {
            if let Some(r) = state.store.get(&owner.record(item.key.clone())).await?
                && serde_json::from_slice::<BlobRef>(&r.value).is_ok_and(|b| b.hash == hash)
            {
                return Ok(true);
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(false),
        }
    }
}

pub async fn delete_record(
    State(state): State<Arc<NodeState>>,
    Path((user, collection, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let t = Target::parse(&state, &user, &collection, &headers)?;
    let address = t.record(request::key(&key)?);
    let precondition = request::precondition(&headers)?;
    let c = &t.collection;
    state.check_residency(c.market, &c.service)?;
    let previous = match t.kind {
        CollectionKind::Blobs => state.store.get(&address).await?,
        CollectionKind::Records => None,
    };
    let version = write(
        &state,
        &t,
        Mutation {
            address,
            op: MutationOp::Delete,
            precondition,
        },
    )
    .await?;
    if let Some(previous) = previous {
        release_blob(&state, &t.collection, &previous.value).await;
    }
    Ok(written(version))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<usize>,
}

pub async fn list(
    State(state): State<Arc<NodeState>>,
    Path((user, collection)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let q = request::query(query)?;
    let t = Target::parse(&state, &user, &collection, &headers)?;
    let after = q.after.as_deref().map(request::key).transpose()?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad(
            "invalid_query",
            format!("limit must be 1..={MAX_PAGE}"),
        ));
    }
    check_read(&state, &t).await?;
    let page = state
        .store
        .list(&t.collection, after.as_ref(), limit)
        .await?;
    Ok(Json(ListResponse {
        items: page
            .items
            .into_iter()
            .map(|i| ListItem {
                key: i.key.to_string(),
                version: i.version.to_string(),
                size: i.size,
            })
            .collect(),
        next: page.next.map(|k| k.to_string()),
    }))
}

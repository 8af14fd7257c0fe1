//! `POST /v1/users/{user}/batch`: several record writes of one user in one service, applied as
//! one atomic, durable store write — all or none. What an app does at sign-up or checkout
//! without a round trip (and an fsync wait) per record.
//!
//! One service, so one owner region and one ownership check; blobs stream through their own
//! endpoint and are refused here. Every write is validated before anything is written.

use crate::state::NodeState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use domicile_core::CollectionKind;
use domicile_http::{ApiError, request};
use domicile_store::{CollectionAddress, Mutation, MutationOp, Precondition};
use domicile_wire::api::{BATCH_MAX_BYTES, BATCH_MAX_WRITES, BatchRequest, BatchResponse};
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

/// A batch checked whole: its mutations (at least one; every one of the same user, market,
/// service and bucket), and the consent purposes its puts need.
struct CheckedBatch {
    mutations: Vec<Mutation>,
    purposes: BTreeSet<(CollectionAddress, String)>,
}

impl CheckedBatch {
    /// The first write's collection: whose user, market, service and bucket every write shares.
    fn scope(&self) -> Result<&CollectionAddress, ApiError> {
        self.mutations
            .first()
            .map(|m| &m.address.collection)
            .ok_or_else(|| ApiError::Internal("a batch without writes".into()))
    }
}

fn check(
    state: &NodeState,
    user: &str,
    headers: &HeaderMap,
    req: BatchRequest,
) -> Result<CheckedBatch, ApiError> {
    if req.writes.len() > BATCH_MAX_WRITES {
        return Err(ApiError::bad(
            "batch_too_large",
            format!(
                "a batch carries at most {BATCH_MAX_WRITES} writes, not {}",
                req.writes.len()
            ),
        ));
    }
    let service = request::batch_service(
        &state.schema,
        req.writes.iter().map(|w| w.collection.as_str()),
    )?;
    let user = request::user(user)?;
    let market = request::market(headers)?;
    let mut mutations = Vec::with_capacity(req.writes.len());
    let mut purposes = BTreeSet::new();
    let mut seen = HashSet::with_capacity(req.writes.len());
    for (i, w) in req.writes.into_iter().enumerate() {
        let name = request::collection(&w.collection)?;
        // Known, and of `service`: `batch_service` checked every write.
        let spec = state
            .schema
            .collection(&name)
            .filter(|spec| spec.service == service)
            .ok_or_else(|| ApiError::Internal(format!("write {i}: {name} left the schema")))?;
        if spec.kind == CollectionKind::Blobs {
            return Err(ApiError::bad(
                "blob_in_batch",
                format!("write {i}: {name} holds blobs; send each with its own PUT"),
            ));
        }
        let key = request::key(&w.key)?;
        if !seen.insert((name.clone(), key.clone())) {
            return Err(ApiError::bad(
                "duplicate_write",
                format!("write {i}: {name}/{key} is written twice in the batch"),
            ));
        }
        let op = match (w.value, w.delete) {
            (Some(value), false) => {
                let value = value.get().as_bytes();
                if value.len() as u64 > state.limits.max_record_bytes {
                    return Err(ApiError::PayloadTooLarge {
                        limit: state.limits.max_record_bytes,
                    });
                }
                MutationOp::Put(bytes::Bytes::copy_from_slice(value))
            }
            (None, true) => MutationOp::Delete,
            (Some(_), true) => {
                return Err(ApiError::bad(
                    "invalid_write",
                    format!("write {i}: a write has a value or `delete: true`, not both"),
                ));
            }
            (None, false) => {
                return Err(ApiError::bad(
                    "invalid_write",
                    format!("write {i}: give a value, or `delete: true`"),
                ));
            }
        };
        let precondition = match &w.if_match {
            Some(m) => request::if_match(m, "invalid_write")?,
            None => Precondition::None,
        };
        let collection = CollectionAddress::new(
            spec.service.clone(),
            market,
            user.clone(),
            name,
            state.buckets,
        );
        if let (Some(purpose), MutationOp::Put(_)) = (&spec.consent, &op) {
            purposes.insert((collection.clone(), purpose.clone()));
        }
        mutations.push(Mutation {
            address: collection.record(key),
            op,
            precondition,
        });
    }
    Ok(CheckedBatch {
        mutations,
        purposes,
    })
}

/// `POST /v1/users/{user}/batch` with a [`BatchRequest`]: answers each write's version.
pub async fn write_batch(
    State(state): State<Arc<NodeState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<BatchResponse>, ApiError> {
    let req: BatchRequest = request::json(&request::body(body, BATCH_MAX_BYTES).await?)?;
    let epoch = request::epoch(&headers)?;
    let batch = check(&state, &user, &headers, req)?;
    let c = batch.scope()?.clone();
    // Residency first: a forbidden write is refused even if an operator mis-set ownership.
    state.check_residency(c.market, &c.service)?;
    // As a single write: the consent lock from the grant check to the commit, the ownership
    // gate across the commit.
    let _consent = match batch.purposes.is_empty() {
        true => None,
        false => Some(state.consent_locks.lock(&c.user).await),
    };
    let gate = state.write_gate().await;
    gate.check_collection(&c, epoch, true)?;
    for (collection, purpose) in &batch.purposes {
        crate::consent::require_grant(&state, collection, purpose).await?;
    }
    let versions = state.store.write(batch.mutations).await?;
    drop(gate);
    Ok(Json(BatchResponse {
        versions: versions.iter().map(ToString::to_string).collect(),
    }))
}

//! Erasure: `POST /internal/users/{user}/erase` removes everything of one user this region
//! holds, in every service and market, and answers only when it is gone. The gateway calls it
//! on every region (not only the owners: a region may hold a reverse-replication copy, a copy
//! being migrated in, or a leftover) for `DELETE /v1/users/{user}`.
//!
//! Per (service, market), under the user's consent lock and the ownership gate:
//! - where this node owns the user's data (and the range is not fenced), every live record of
//!   every collection (the consents collection included) is deleted as an ordinary logged
//!   mutation, so the tombstones reach every copy through the change log (catch-up,
//!   reverse replication) and outrank any older version a stream still carries;
//! - where the range is fenced (a cutover is draining it), the call fails with 421
//!   `range_fenced`: a logged delete after the fence would miss the drain. The caller retries
//!   once the cutover is committed, and then the new owner deletes;
//! - where another region owns it (or no one here knows), the stored copy — records and their
//!   tombstones — is removed without logging (`RegionStore::purge_user`): it is not a mutation
//!   of this region's data, and the owner's logged deletes reach it through any stream that
//!   still feeds it.
//!
//! The user's blobs of that service and market go with their records. Every step is
//! idempotent: erasing again finds nothing and answers zeros.

use crate::state::NodeState;
use axum::Json;
use axum::extract::{Path, State};
use domicile_core::{Market, RecordKey, ServiceName, UserId};
use domicile_http::ApiError;
use domicile_http::request;
use domicile_store::{CollectionAddress, Mutation, MutationOp, Precondition, StoreError};
use domicile_wire::api::{EraseResponse, Erased};
use std::sync::Arc;

/// Records deleted per store batch.
const BATCH: usize = 1000;

/// `POST /internal/users/{user}/erase` → `{region, records, blobs, keys_destroyed}`.
pub async fn erase(
    State(state): State<Arc<NodeState>>,
    Path(user): Path<String>,
) -> Result<Json<EraseResponse>, ApiError> {
    let user = request::user(&user)?;
    Ok(Json(erase_user(&state, &user).await?))
}

/// Erases everything of `user` in this region: records and blobs of every service and market,
/// then (with encryption at rest) the user's data keys. Returns what it removed.
pub async fn erase_user(state: &NodeState, user: &UserId) -> Result<EraseResponse, ApiError> {
    let mut out = EraseResponse {
        region: state.region.clone(),
        records: 0,
        blobs: 0,
        keys_destroyed: 0,
    };
    let markets: Vec<Market> = state.policy().markets.keys().copied().collect();
    for service in state.schema.services() {
        for &market in &markets {
            let erased = erase_scope(state, &service, market, user).await?;
            out.records += erased.records;
            out.blobs += erased.blobs;
        }
    }
    // Crypto-shredding, after the deletes (a failure before it is retried whole): whatever
    // sealed bytes of the user remain in engine files, journals or backups no longer open.
    if let Some(keys) = &state.data_keys {
        let services = state.schema.services();
        let bucket = state.buckets.bucket_of(user);
        for &market in &markets {
            out.keys_destroyed += keys.destroy_user(user, market, bucket, &services).await?;
        }
        state.metrics.data_keys_destroyed.inc_by(out.keys_destroyed);
    }
    state.metrics.erasures.inc();
    state.metrics.records_erased.inc_by(out.records);
    state.metrics.blobs_erased.inc_by(out.blobs);
    tracing::info!(%user, records = out.records, blobs = out.blobs, keys_destroyed = out.keys_destroyed, "user erased");
    Ok(out)
}

/// Erases `user`'s data of one service and market (see the module doc for the three cases).
async fn erase_scope(
    state: &NodeState,
    service: &ServiceName,
    market: Market,
    user: &UserId,
) -> Result<Erased, ApiError> {
    let collections = state.schema.stored_collections(service);
    let Some((first, _)) = collections.first() else {
        return Ok(Erased::default());
    };
    let of = CollectionAddress::new(
        service.clone(),
        market,
        user.clone(),
        first.clone(),
        state.buckets,
    );
    let _consent = state.consent_locks.lock(user).await;
    let gate = state.write_gate().await;
    let records = match gate.check_collection(&of, None, true) {
        Ok(_) => {
            let mut records = 0;
            for (name, _) in &collections {
                let c = CollectionAddress {
                    collection: name.clone(),
                    ..of.clone()
                };
                records += delete_all(state, &c).await?;
            }
            records
        }
        Err(
            e @ ApiError::Misdirected {
                code: "range_fenced",
                ..
            },
        ) => return Err(e),
        Err(ApiError::Misdirected { .. }) => {
            state
                .store
                .purge_user(service, market, user, state.buckets)
                .await?
        }
        Err(e) => return Err(e),
    };
    let blobs = state
        .blobs
        .purge_user(service, market, user, state.buckets)
        .await?;
    drop(gate);
    Ok(Erased { records, blobs })
}

/// Deletes every live record of `c` as logged mutations, a batch at a time; returns how many.
/// Call with the ownership gate held.
async fn delete_all(state: &NodeState, c: &CollectionAddress) -> Result<u64, ApiError> {
    let mut deleted = 0u64;
    loop {
        let page = state.store.list(c, None::<&RecordKey>, BATCH).await?;
        if page.items.is_empty() {
            return Ok(deleted);
        }
        let n = page.items.len() as u64;
        let batch = page
            .items
            .into_iter()
            .map(|item| Mutation {
                address: c.record(item.key),
                op: MutationOp::Delete,
                precondition: Precondition::None,
            })
            .collect();
        match state.store.write(batch).await {
            Ok(_) => deleted += n,
            // A record went between the listing and the batch (the user deleted it): list again.
            Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

//! `DELETE /v1/users/{user}`: the user's data erased in every region, answered only when every
//! region has answered. Every region, not only today's owners: a region may still hold a copy
//! (reverse replication, a move in progress, a leftover). A region that fails fails the call
//! (5xx with the JSON error); the erasure is idempotent, so the client retries it whole.

use crate::proxy::authenticate;
use crate::state::GatewayState;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use domicile_core::{RegionId, UserId};
use domicile_http::ApiError;
use domicile_wire::api::{EraseResponse, ErasureSummary, ErrorBody};
use std::sync::Arc;

/// `DELETE /v1/users/{user}` → `{user, records, blobs, keys_destroyed, regions:[…]}`.
pub async fn erase(
    State(state): State<Arc<GatewayState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ErasureSummary>, ApiError> {
    let identity = authenticate(&state, &headers, &user)?;
    let deadline = tokio::time::Instant::now() + state.config.hold;
    let regions: Vec<RegionId> = state.table().regions.iter().map(|r| r.id.clone()).collect();
    let answers = futures::future::join_all(
        regions
            .iter()
            .map(|region| erase_in(&state, region, &identity.user, deadline)),
    )
    .await;
    let mut summary = ErasureSummary {
        user: identity.user.clone(),
        records: 0,
        blobs: 0,
        keys_destroyed: 0,
        regions: Vec::with_capacity(answers.len()),
    };
    for answer in answers {
        let answer = answer?;
        summary.records += answer.records;
        summary.blobs += answer.blobs;
        summary.keys_destroyed += answer.keys_destroyed;
        summary.regions.push(answer);
    }
    // Every erasure is its own ledger event (a retry records a second, which erased nothing).
    let erasure = domicile_wire::ledger::Erasure {
        user: identity.user.clone(),
        regions: summary.regions.iter().map(|r| r.region.clone()).collect(),
        records: summary.records,
        blobs: summary.blobs,
        keys_destroyed: summary.keys_destroyed,
    };
    let id = format!("erasure/{}/{}", identity.user, now_ms());
    state.record(id, &erasure).await?;
    state.metrics.erasures.inc();
    tracing::info!(user = %identity.user, records = summary.records, blobs = summary.blobs, regions = summary.regions.len(), "user erased everywhere");
    Ok(Json(summary))
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

/// Erases `user` in one region. A range being cut over there (421 `range_fenced`) is waited
/// out until `deadline`, like a held call; then 503 with `Retry-After`.
async fn erase_in(
    state: &GatewayState,
    region: &RegionId,
    user: &UserId,
    deadline: tokio::time::Instant,
) -> Result<EraseResponse, ApiError> {
    loop {
        let url = state
            .table()
            .url_of(region)
            .map(str::to_string)
            .ok_or_else(|| ApiError::RetryLater {
                message: format!("region {region} has no endpoint; retry the erasure"),
                after_secs: 1,
            })?;
        let response = state
            .http
            .post(format!("{url}/internal/users/{user}/erase"))
            .send()
            .await
            .map_err(|e| {
                ApiError::BadGateway(format!(
                    "region {region} is unreachable ({e}); nothing there was confirmed \
                     erased, retry the erasure"
                ))
            })?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(|e| {
            ApiError::BadGateway(format!("region {region}'s answer broke off: {e}"))
        })?;
        if status == StatusCode::OK {
            return serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::BadGateway(format!("region {region} answered malformed JSON: {e}"))
            });
        }
        let message = serde_json::from_slice::<ErrorBody>(&bytes)
            .map(|b| format!("{}: {}", b.error.code, b.error.message))
            .unwrap_or_else(|_| status.to_string());
        if status != StatusCode::MISDIRECTED_REQUEST {
            return Err(ApiError::BadGateway(format!(
                "region {region} could not erase: {message}; retry the erasure"
            )));
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ApiError::RetryLater {
                message: format!("region {region} is cutting the user's data over; retry"),
                after_secs: 1,
            });
        }
        state.metrics.holds.inc();
        state.table_change(deadline).await;
    }
}

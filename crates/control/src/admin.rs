//! The admin API (`/admin`): regions, policy and placement, behind the admin credential
//! (`Authorization: Bearer <token>`).

use crate::placement_change::{PlacementRequest, change};
use crate::state::ControlState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use domicile_core::{Market, Placement, Policy, RegionId};
use domicile_http::{ApiError, request};
use domicile_wire::api::{RegionEndpoint, RoutingTable};
use serde::Deserialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Refuses a request without the admin credential (401), comparing in constant time.
pub fn authorize(state: &ControlState, headers: &HeaderMap) -> Result<(), ApiError> {
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::Unauthorized(
                "the admin API needs `Authorization: Bearer <admin token>`".into(),
            )
        })?;
    if presented
        .as_bytes()
        .ct_eq(state.admin_token.as_bytes())
        .into()
    {
        Ok(())
    } else {
        Err(ApiError::Unauthorized(
            "the admin token is not valid".into(),
        ))
    }
}

pub async fn table(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
) -> Result<Json<RoutingTable>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.table().as_ref().clone()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionBody {
    jurisdiction: Market,
    url: String,
}

/// `PUT /admin/regions/{id}` `{"jurisdiction","url"}`: adds a region or moves its endpoint.
pub async fn put_region(
    State(state): State<Arc<ControlState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RoutingTable>, ApiError> {
    authorize(&state, &headers)?;
    let id = RegionId::new(id).map_err(|e| ApiError::bad("invalid_id", e.to_string()))?;
    let body: RegionBody = request::json(&request::body(body, 64 << 10).await?)?;
    if !(body.url.starts_with("http://") || body.url.starts_with("https://")) {
        return Err(ApiError::bad(
            "invalid_url",
            "url must start with http:// or https://",
        ));
    }
    let _one_at_a_time = state.changes.lock().await;
    let mut next = state.table().as_ref().clone();
    match next.regions.iter_mut().find(|r| r.id == id) {
        Some(r) if r.jurisdiction != body.jurisdiction => {
            return Err(ApiError::Conflict(format!(
                "region {id} is in {}; a region's jurisdiction cannot change",
                r.jurisdiction
            )));
        }
        Some(r) => r.url = body.url,
        None => next.regions.push(RegionEndpoint {
            id,
            jurisdiction: body.jurisdiction,
            url: body.url,
        }),
    }
    Ok(Json(state.commit(next).await?.as_ref().clone()))
}

pub async fn get_policy(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
) -> Result<Json<Policy>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.table().policy.clone()))
}

/// `PUT /admin/policy`: a new policy version. Refused if the current placement breaks it.
pub async fn put_policy(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Policy>, ApiError> {
    authorize(&state, &headers)?;
    let policy: Policy = request::json(&request::body(body, 1 << 20).await?)?;
    Ok(Json(
        crate::policy_change::change(&state, policy)
            .await?
            .policy
            .clone(),
    ))
}

pub async fn get_placement(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
) -> Result<Json<Placement>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(state.table().placement.clone()))
}

/// `POST /admin/placement` `{"service","market","buckets","region"}`: places a range in a region
/// at a new epoch (ownership only; moving the data is the migration engine's job).
pub async fn change_placement(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RoutingTable>, ApiError> {
    authorize(&state, &headers)?;
    let req: PlacementRequest = request::json(&request::body(body, 64 << 10).await?)?;
    Ok(Json(change(&state, req).await?.as_ref().clone()))
}

/// `GET /metrics`: Prometheus text.
pub async fn metrics(State(state): State<Arc<ControlState>>) -> impl IntoResponse {
    let table = state.table();
    let changes = state
        .admin_changes
        .load(std::sync::atomic::Ordering::Relaxed);
    let text: String = format!(
        "# HELP domicile_control_table_version The routing table's version.\n# TYPE domicile_control_table_version gauge\ndomicile_control_table_version {}\n# HELP domicile_control_changes_total Committed admin changes.\n# TYPE domicile_control_changes_total counter\ndomicile_control_changes_total {changes}\n# HELP domicile_control_placement_ranges Placement ranges.\n# TYPE domicile_control_placement_ranges gauge\ndomicile_control_placement_ranges {}\n",
        table.version,
        table.placement.ranges().len()
    ) + &crate::migration::metrics(&state).await;
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        )],
        text,
    )
}

/// `PUT /admin/checkpoints/{name}` (any JSON): the durable state of a running move, saved by
/// the mover after every step so that a crash resumes from it.
pub async fn put_checkpoint(
    State(state): State<Arc<ControlState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    domicile_core::RecordKey::new(name.as_str())
        .map_err(|e| ApiError::bad("invalid_id", e.to_string()))?;
    let value: serde_json::Value = request::json(&request::body(body, 1 << 20).await?)?;
    let bytes = serde_json::to_vec(&value).map_err(|e| ApiError::Internal(e.to_string()))?;
    state.save_checkpoint(&name, bytes.into()).await?;
    Ok(Json(value))
}

/// `GET /admin/checkpoints/{name}`.
pub async fn get_checkpoint(
    State(state): State<Arc<ControlState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    authorize(&state, &headers)?;
    let bytes = state
        .load_checkpoint(&name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no checkpoint {name}")))?;
    serde_json::from_slice(&bytes)
        .map(Json)
        .map_err(|e| ApiError::Internal(e.to_string()))
}

//! Per-user overrides: one user's service data placed in a region other than its bucket's
//! (relocation, a VIP, a test user). Same protocol as a placement change: policy first, the old
//! owner hands over before the new one owns, then the table is committed with a new version.

use crate::admin::authorize;
use crate::state::{ControlState, url_of};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use domicile_client::region::RegionClient;
use domicile_core::{Epoch, Market, RegionId, ServiceName, UserId};
use domicile_http::{ApiError, request};
use domicile_wire::api::{RoutingTable, UserOverride, UserOwnershipRequest};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverrideBody {
    market: Market,
    region: RegionId,
}

fn parse(
    user: &str,
    service: &str,
    table: &RoutingTable,
) -> Result<(UserId, ServiceName), ApiError> {
    let user = UserId::new(user).map_err(|e| ApiError::bad("invalid_id", e.to_string()))?;
    let service =
        ServiceName::new(service).map_err(|e| ApiError::bad("invalid_id", e.to_string()))?;
    if table.schema.collections_of(&service).next().is_none() {
        return Err(ApiError::bad(
            "unknown_service",
            format!("the schema has no service {service}"),
        ));
    }
    Ok((user, service))
}

async fn tell(
    state: &ControlState,
    table: &RoutingTable,
    region: &RegionId,
    req: &UserOwnershipRequest,
) -> Result<(), ApiError> {
    RegionClient::new(url_of(table, region)?, state.http.clone())
        .user_ownership(req)
        .await
        .map_err(|e| ApiError::BadGateway(format!("user ownership at {region}: {e}")))
}

/// `PUT /admin/users/{user}/overrides/{service}` `{"market","region"}`.
pub async fn put(
    State(state): State<Arc<ControlState>>,
    Path((user, service)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RoutingTable>, ApiError> {
    authorize(&state, &headers)?;
    let body: OverrideBody = request::json(&request::body(body, 4 << 10).await?)?;
    let _one_at_a_time = state.changes.lock().await;
    let table = state.table();
    let (user, service) = parse(&user, &service, &table)?;
    url_of(&table, &body.region)?;
    table
        .policy
        .check(body.market, &service, &body.region)
        .map_err(|v| ApiError::ResidencyViolation(v.to_string()))?;
    let bucket = table.buckets.bucket_of(&user);
    let row = table
        .placement
        .lookup(&service, body.market, bucket)
        .ok_or_else(|| {
            ApiError::bad(
                "no_placement",
                format!(
                    "{service}/{} has no placement for bucket {bucket}",
                    body.market
                ),
            )
        })?;
    let current = table.user_override(&user, &service);
    let (from, epoch) = match current {
        Some(o) => (o.region.clone(), o.epoch.max(row.epoch)),
        None => (row.region.clone(), row.epoch),
    };
    if current.is_some_and(|o| o.region == body.region) {
        return Ok(Json(table.as_ref().clone())); // already there
    }
    let epoch: Epoch = epoch.next();
    let req = |owner: Option<RegionId>| UserOwnershipRequest {
        service: service.clone(),
        market: body.market,
        user: user.clone(),
        epoch,
        owner,
        remove: false,
    };
    // The old owner stops first: at no moment do two regions accept this user's writes.
    tell(&state, &table, &from, &req(Some(body.region.clone()))).await?;
    tell(&state, &table, &body.region, &req(None)).await?;
    let mut next = table.as_ref().clone();
    next.overrides
        .retain(|o| !(o.user == user && o.service == service));
    next.overrides.push(UserOverride {
        user,
        service,
        market: body.market,
        region: body.region,
        epoch,
    });
    Ok(Json(state.commit(next).await?.as_ref().clone()))
}

/// `DELETE /admin/users/{user}/overrides/{service}`: the user's data follows its bucket again.
pub async fn delete(
    State(state): State<Arc<ControlState>>,
    Path((user, service)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<RoutingTable>, ApiError> {
    authorize(&state, &headers)?;
    let _one_at_a_time = state.changes.lock().await;
    let table = state.table();
    let (user, service) = parse(&user, &service, &table)?;
    let Some(o) = table.user_override(&user, &service).cloned() else {
        return Err(ApiError::NotFound(format!(
            "user {user} has no {service} override"
        )));
    };
    let bucket = table.buckets.bucket_of(&user);
    let row = table
        .placement
        .lookup(&service, o.market, bucket)
        .ok_or_else(|| ApiError::Internal(format!("{service}/{} lost its placement", o.market)))?;
    let req = UserOwnershipRequest {
        service: service.clone(),
        market: o.market,
        user: user.clone(),
        epoch: o.epoch,
        owner: None,
        remove: true,
    };
    // The override's region lets go first; then the bucket's owner forgets it handed the user over.
    tell(&state, &table, &o.region, &req).await?;
    tell(&state, &table, &row.region, &req).await?;
    let mut next = table.as_ref().clone();
    next.overrides
        .retain(|x| !(x.user == user && x.service == service));
    Ok(Json(state.commit(next).await?.as_ref().clone()))
}

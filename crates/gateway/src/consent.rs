//! Consents through the gateway: a purpose's grant or revocation is recorded in every service
//! with a collection of that purpose, at that service's owner (where the consent records live,
//! so the owner checks them locally and they move with the service's data).

use crate::proxy::{Payload, authenticate, forward_routed, relay};
use crate::state::{ConsentLabels, GatewayState};
use crate::tokens::Identity;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use domicile_core::ServiceName;
use domicile_http::{ApiError, request};
use domicile_wire::api::{ConsentList, ServiceConsent};
use serde::de::DeserializeOwned;
use std::sync::Arc;

/// The largest consent body accepted.
const MAX_BODY: u64 = 16 << 10;

/// A region's JSON answer, or (on any other status) the region's error relayed as it is.
pub(crate) async fn region_json<T: DeserializeOwned>(response: Response) -> Result<T, Response> {
    if !response.status().is_success() {
        return Err(relay(response));
    }
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .map_err(|e| {
            ApiError::BadGateway(format!("a region's answer broke off: {e}")).into_response()
        })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::BadGateway(format!("a region answered malformed JSON: {e}")).into_response()
    })
}

/// Sends one consent call to the owner of each of `services`; all their records, or the first
/// failure (a retry is safe: grants and revocations are idempotent).
async fn each_service(
    state: &GatewayState,
    identity: &Identity,
    services: &[ServiceName],
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: bytes::Bytes,
) -> Result<ConsentList, Response> {
    let mut consents = Vec::new();
    for service in services {
        let sep = if path.contains('?') { '&' } else { '?' };
        let path = format!("{path}{sep}service={service}");
        let mut payload = Payload::Buffered(body.clone());
        let response = forward_routed(
            state,
            identity,
            service,
            method,
            &path,
            headers,
            &mut payload,
        )
        .await
        .map_err(IntoResponse::into_response)?;
        if method == Method::GET {
            let list: ConsentList = region_json(response).await?;
            consents.extend(list.consents);
        } else {
            let one: ServiceConsent = region_json(response).await?;
            consents.push(one);
        }
    }
    Ok(ConsentList { consents })
}

async fn change(
    state: Arc<GatewayState>,
    user: String,
    purpose: String,
    method: Method,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ConsentList>, Response> {
    let identity = authenticate(&state, &headers, &user).map_err(IntoResponse::into_response)?;
    let body = request::body(body, MAX_BODY)
        .await
        .map_err(IntoResponse::into_response)?;
    let services = state.table().schema.services_of_purpose(&purpose);
    if services.is_empty() {
        return Err(ApiError::NotFound(format!(
            "the schema has no collection with consent purpose {purpose}"
        ))
        .into_response());
    }
    let path = format!("/v1/users/{}/consents/{purpose}", identity.user);
    let list = each_service(&state, &identity, &services, &method, &path, &headers, body).await?;
    let label = if method == Method::PUT {
        "grant"
    } else {
        record_revocations(&state, &identity, &purpose, &list)
            .await
            .map_err(IntoResponse::into_response)?;
        "revoke"
    };
    state
        .metrics
        .consent_changes
        .get_or_create(&ConsentLabels {
            change: label.to_string(),
        })
        .inc();
    Ok(Json(list))
}

/// Writes one `consent_revocation` ledger entry per collection of the purpose, with what its
/// service erased.
async fn record_revocations(
    state: &GatewayState,
    identity: &Identity,
    purpose: &str,
    list: &ConsentList,
) -> Result<(), ApiError> {
    let schema = state.table().schema.clone();
    for sc in &list.consents {
        let erased = sc.erased.unwrap_or_default();
        for (collection, _) in schema
            .collections_of(&sc.service)
            .filter(|(_, spec)| spec.consent.as_deref() == Some(purpose))
        {
            let body = domicile_wire::ledger::ConsentRevocation {
                user: identity.user.clone(),
                collection: collection.clone(),
                purpose: purpose.to_string(),
                records_erased: erased.records,
            };
            // One event per revocation: its consent record's version names it.
            let id = format!(
                "consent-revocation/{}/{}/{collection}/{}",
                identity.user, sc.service, sc.version
            );
            state.record(id, &body).await?;
        }
    }
    Ok(())
}

/// `PUT /v1/users/{user}/consents/{purpose}` `{"notice_version"}` → the grant as recorded in
/// each service of the purpose.
pub async fn grant(
    State(state): State<Arc<GatewayState>>,
    Path((user, purpose)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ConsentList>, Response> {
    change(state, user, purpose, Method::PUT, headers, body).await
}

/// `DELETE /v1/users/{user}/consents/{purpose}` → the revocation as recorded in each service,
/// with what it erased there.
pub async fn revoke(
    State(state): State<Arc<GatewayState>>,
    Path((user, purpose)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ConsentList>, Response> {
    change(state, user, purpose, Method::DELETE, headers, body).await
}

/// `GET /v1/users/{user}/consents` → every consent record of the user, from every service that
/// keeps them.
pub async fn list(
    State(state): State<Arc<GatewayState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Result<Json<ConsentList>, Response> {
    let identity = authenticate(&state, &headers, &user).map_err(IntoResponse::into_response)?;
    let schema = state.table().schema.clone();
    let services: Vec<ServiceName> = schema
        .services()
        .into_iter()
        .filter(|s| schema.keeps_consents(s))
        .collect();
    let path = format!("/v1/users/{}/consents", identity.user);
    let list = each_service(
        &state,
        &identity,
        &services,
        &Method::GET,
        &path,
        &headers,
        bytes::Bytes::new(),
    )
    .await?;
    Ok(Json(list))
}

//! `POST /v1/users/{user}/batch`: a batch of one user's record writes in one service, routed
//! like a single write to that service's owner (which applies it all or none). The gateway
//! reads only the collections, to find the service; the region node checks the rest.

use crate::proxy::{Payload, authenticate, forward_routed, observe, relay};
use crate::state::GatewayState;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use domicile_core::ServiceName;
use domicile_http::{ApiError, request};
use domicile_wire::api::{BATCH_MAX_BYTES, BatchRoute};
use std::sync::Arc;
use std::time::Instant;

/// The one service of a batch's collections, or why it has none.
fn service_of(state: &GatewayState, batch: &BatchRoute) -> Result<ServiceName, ApiError> {
    let table = state.table();
    let mut service: Option<ServiceName> = None;
    for (i, w) in batch.writes.iter().enumerate() {
        let name = request::collection(&w.collection)?;
        let spec = table.schema.collection(&name).ok_or_else(|| {
            ApiError::bad(
                "unknown_collection",
                format!("write {i}: the schema has no collection {name}"),
            )
        })?;
        match &service {
            Some(s) if s != &spec.service => {
                return Err(ApiError::bad(
                    "mixed_services",
                    format!(
                        "write {i}: {name} belongs to service {}, the batch to {s}; a batch \
                         stays within one service",
                        spec.service
                    ),
                ));
            }
            Some(_) => {}
            None => service = Some(spec.service.clone()),
        }
    }
    service.ok_or_else(|| ApiError::bad("empty_batch", "a batch needs at least one write"))
}

pub async fn batch(
    State(state): State<Arc<GatewayState>>,
    Path(user): Path<String>,
    OriginalUri(uri): OriginalUri,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    let answer = async {
        let identity = authenticate(&state, &headers, &user)?;
        let bytes = request::body(body, BATCH_MAX_BYTES).await?;
        let service = service_of(&state, &request::json::<BatchRoute>(&bytes)?)?;
        let mut payload = Payload::Buffered(bytes);
        let response = forward_routed(
            &state,
            &identity,
            &service,
            &Method::POST,
            uri.path(),
            &headers,
            &mut payload,
        )
        .await?;
        Ok::<_, ApiError>(relay(response))
    }
    .await;
    let response = answer.unwrap_or_else(IntoResponse::into_response);
    observe(&state, &Method::POST, started, &response);
    response
}

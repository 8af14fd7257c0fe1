//! `POST /v1/users/{user}/batch`: a batch of one user's record writes in one service, routed
//! like a single write to that service's owner (which applies it all or none). The gateway
//! reads only the collections, to find the service; the region node checks the rest.

use crate::proxy::{Payload, authenticate, forward_routed, observe, relay};
use crate::state::GatewayState;
use axum::body::Body;
use axum::extract::{OriginalUri, Path, State};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use domicile_http::{ApiError, request};
use domicile_wire::api::{BATCH_MAX_BYTES, BatchRoute};
use std::sync::Arc;
use std::time::Instant;

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
        let route = request::json::<BatchRoute>(&bytes)?;
        let service = request::batch_service(
            &state.table().schema,
            route.writes.iter().map(|w| w.collection.as_str()),
        )?;
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

//! `GET /internal/table?after=V&wait_ms=N`: the routing table when its version passes V,
//! waiting up to N ms (long poll); 304 when nothing changed in time.

use crate::state::ControlState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domicile_http::{ApiError, request};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchQuery {
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

pub async fn watch(
    State(state): State<Arc<ControlState>>,
    query: Result<Query<WatchQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = request::query(query)?;
    let mut rx = state.subscribe();
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    let newer = tokio::select! {
        newer = tokio::time::timeout(wait, rx.wait_for(|t| t.version > q.after)) => newer.ok().and_then(Result::ok).map(|t| t.clone()),
        () = state.closed() => None,
    };
    match newer {
        Some(table) => Ok(Json(table.as_ref().clone()).into_response()),
        None => {
            let table = state.table();
            if table.version > q.after {
                Ok(Json(table.as_ref().clone()).into_response())
            } else {
                Ok(StatusCode::NOT_MODIFIED.into_response())
            }
        }
    }
}

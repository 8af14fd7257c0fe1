//! The internal API under `/internal`: what the control plane and other regions use to move
//! data — snapshot and change streams, import, digests, ownership changes and purge.
//!
//! Streams use the binary framing of `domicile_wire::frame` (docs/design/stream-framing.md).

use crate::ownership::Change as OwnershipChange;
use crate::state::NodeState;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use domicile_core::{BucketSet, Market, Scope, ServiceName};
use domicile_http::ApiError;
use domicile_http::request;
use domicile_store::{Lsn, VersionedRecord};
use domicile_wire::api::{
    DigestResponse, FenceResponse, ImportResponse, OwnershipResponse, PurgeResponse, RangeRequest,
    STREAM_CONTENT_TYPE, ScopeRequest, StatusResponse, UserOwnershipRequest,
};
use domicile_wire::frame::{self, Frame, Header, StreamKind};
use futures::StreamExt;
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// The largest import body: one chunk of a move (the mover sends many).
const MAX_IMPORT_BYTES: u64 = 128 << 20;
/// Changes returned per change-stream request at most.
const MAX_CHANGES: usize = 10_000;
/// The longest a change-stream request waits for new changes.
const MAX_WAIT: Duration = Duration::from_secs(30);

fn stream_response(body: Body) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(STREAM_CONTENT_TYPE),
        )],
        body,
    )
        .into_response()
}

pub(crate) fn scope_of(state: &NodeState, req: ScopeRequest) -> Result<Scope, ApiError> {
    req.buckets
        .check(state.buckets)
        .map_err(|e| ApiError::bad("invalid_buckets", e.to_string()))?;
    if state.schema.collections_of(&req.service).next().is_none() {
        return Err(ApiError::bad(
            "unknown_service",
            format!("the schema has no service {}", req.service),
        ));
    }
    Ok(req.into())
}

/// `POST /internal/snapshot` `{service, market, buckets}` → a snapshot stream.
pub async fn snapshot(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: ScopeRequest = request::json(&request::body(body, 1 << 20).await?)?;
    let scope = scope_of(&state, req)?;
    let scan = state.store.snapshot(&scope).await?;
    let lsn = scan.lsn;
    let mut head = BytesMut::new();
    frame::encode_header(
        &mut head,
        Header {
            kind: StreamKind::Snapshot,
            lsn,
        },
    );
    // One piece per chunk; END (with the frame count) only after the last, so a receiver
    // that does not see it knows the stream broke.
    let frames = futures::stream::unfold(Some((scan.chunks, 0u64)), move |state| async move {
        let (mut chunks, count) = state?;
        let mut out = BytesMut::new();
        let next = match chunks.next().await {
            Some(Ok(records)) => {
                records
                    .iter()
                    .for_each(|r| frame::encode_record(&mut out, r));
                Some((chunks, count + records.len() as u64))
            }
            Some(Err(e)) => {
                tracing::error!(error = %e, "snapshot stream failed");
                frame::encode_error(&mut out, "snapshot failed on the source; see its log");
                None
            }
            None => {
                frame::encode_end(&mut out, lsn, count);
                None
            }
        };
        Some((Ok::<_, std::convert::Infallible>(out.freeze()), next))
    });
    let stream = futures::stream::once(async move { Ok(head.freeze()) }).chain(frames);
    Ok(stream_response(Body::from_stream(stream)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangesQuery {
    service: ServiceName,
    market: Market,
    buckets: BucketSet,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
    /// How long to wait for new changes when there are none (long poll), in milliseconds.
    #[serde(default)]
    wait_ms: u64,
}

/// `GET /internal/changes?service=&market=&buckets=&after=&limit=&wait_ms=` → a change stream
/// whose END frame carries the position to continue from.
pub async fn changes(
    State(state): State<Arc<NodeState>>,
    query: Result<Query<ChangesQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = request::query(query)?;
    let scope = scope_of(
        &state,
        ScopeRequest {
            service: q.service,
            market: q.market,
            buckets: q.buckets,
        },
    )?;
    let limit = q.limit.unwrap_or(MAX_CHANGES).clamp(1, MAX_CHANGES);
    let after = Lsn(q.after);
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    let (mut changes, mut position) = state.store.changes(after, &scope, limit).await?;
    if changes.is_empty() && !wait.is_zero() {
        // Long poll: wake on the next durable commit (in scope or not) or at the deadline.
        state.store.wait_for_changes(position, wait).await;
        (changes, position) = state.store.changes(after, &scope, limit).await?;
    }
    let mut out = BytesMut::new();
    frame::encode_header(
        &mut out,
        Header {
            kind: StreamKind::Changes,
            lsn: after,
        },
    );
    // A stream stops after the change that takes it past CHANGE_STREAM_BYTES and continues
    // from there: a reader of large records gets them in bounded pieces.
    let mut sent = 0;
    for c in &changes {
        frame::encode_change(&mut out, c);
        sent += 1;
        if out.len() >= domicile_wire::api::CHANGE_STREAM_BYTES && sent < changes.len() {
            position = c.entry.lsn;
            break;
        }
    }
    frame::encode_end(&mut out, position, sent as u64);
    Ok(stream_response(Body::from(out.freeze())))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImportQuery {
    service: ServiceName,
    market: Market,
}

/// `POST /internal/import?service=&market=` with an import stream → `{applied, skipped}`.
/// The whole body is validated before anything is applied, and applied atomically.
pub async fn import(
    State(state): State<Arc<NodeState>>,
    query: Result<Query<ImportQuery>, QueryRejection>,
    body: Body,
) -> Result<Json<ImportResponse>, ApiError> {
    let q = request::query(query)?;
    // Nothing crosses a border the policy forbids: checked before a byte is read.
    state.check_residency(q.market, &q.service)?;
    let bytes = request::body(body, MAX_IMPORT_BYTES).await?;
    let records = import_records(&state, &q.service, q.market, &bytes)?;
    let outcome = state.store.import(records).await?;
    state.metrics.records_imported.inc_by(outcome.applied);
    Ok(Json(outcome.into()))
}

/// An import stream's records, each checked against the import's scope and the node's limits.
fn import_records(
    state: &NodeState,
    service: &ServiceName,
    market: Market,
    bytes: &[u8],
) -> Result<Vec<VersionedRecord>, ApiError> {
    let malformed = |e: frame::FrameError| ApiError::bad("malformed_stream", e.to_string());
    let (header, frames, _) = frame::decode_all(bytes).map_err(malformed)?;
    if header.kind != StreamKind::Import {
        return Err(ApiError::bad(
            "malformed_stream",
            "expected an import stream",
        ));
    }
    let mut records: Vec<VersionedRecord> = Vec::with_capacity(frames.len());
    let mut check = ImportCheck::new(state, service, market);
    for f in frames {
        let Frame::Record(r) = f else {
            return Err(ApiError::bad(
                "malformed_stream",
                "an import stream carries only records",
            ));
        };
        check.record(&r)?;
        records.push(r);
    }
    Ok(records)
}

/// The checks every imported record passes, wherever it came from: an import request or a
/// pull from a source node.
pub(crate) struct ImportCheck<'a> {
    state: &'a NodeState,
    service: &'a ServiceName,
    market: Market,
    /// The last user whose bucket was checked, and that bucket.
    bucket_checked: Option<(domicile_core::UserId, domicile_core::Bucket)>,
}

impl<'a> ImportCheck<'a> {
    pub(crate) fn new(state: &'a NodeState, service: &'a ServiceName, market: Market) -> Self {
        Self {
            state,
            service,
            market,
            bucket_checked: None,
        }
    }

    /// Refuses a record outside the import's service and market, of an undeclared collection,
    /// in the wrong bucket for its user, or over the node's record size limit.
    pub(crate) fn record(&mut self, r: &VersionedRecord) -> Result<(), ApiError> {
        let (state, service, market) = (self.state, self.service, self.market);
        let c = &r.address.collection;
        if c.service != *service || c.market != market {
            return Err(ApiError::bad(
                "scope_mismatch",
                format!(
                    "record of {}/{} in an import for {service}/{market}",
                    c.service, c.market
                ),
            ));
        }
        // Declared collections of the service, and its consent records (`_consents`).
        if !state.schema.stores_in(&c.collection, service) {
            return Err(ApiError::bad(
                "scope_mismatch",
                format!("collection {} is not part of {service}", c.collection),
            ));
        }
        // A user's records come together: their bucket is hashed once per user, not per record.
        let checked = self
            .bucket_checked
            .as_ref()
            .is_some_and(|(user, bucket)| *user == c.user && *bucket == c.bucket);
        if !checked {
            if state.buckets.bucket_of(&c.user) != c.bucket {
                return Err(ApiError::bad(
                    "scope_mismatch",
                    format!("user {} is not in bucket {}", c.user, c.bucket),
                ));
            }
            self.bucket_checked = Some((c.user.clone(), c.bucket));
        }
        if r.value
            .as_ref()
            .is_some_and(|v| v.len() as u64 > state.limits.max_record_bytes)
        {
            return Err(ApiError::PayloadTooLarge {
                limit: state.limits.max_record_bytes,
            });
        }
        Ok(())
    }
}

/// `POST /internal/digest` `{service, market, buckets}` → one digest per bucket.
pub async fn digest(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<DigestResponse>, ApiError> {
    let req: ScopeRequest = request::json(&request::body(body, 1 << 20).await?)?;
    let scope = scope_of(&state, req)?;
    Ok(Json(DigestResponse {
        digests: state.store.digest(&scope).await?,
    }))
}

async fn ownership_change(
    state: &NodeState,
    change: OwnershipChange,
    body: Body,
) -> Result<RangeRequest, ApiError> {
    let req: RangeRequest = request::json(&request::body(body, 1 << 20).await?)?;
    if change == OwnershipChange::Own {
        state.check_residency(req.market, &req.service)?;
    }
    state
        .change_ownership(
            change,
            &req.service,
            req.market,
            req.buckets,
            req.epoch,
            req.owner.clone(),
        )
        .await?;
    Ok(req)
}

/// `POST /internal/fence`: stop accepting writes for a range owned at `epoch`; answers the last
/// LSN, after which no write of the range can land.
pub async fn fence(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<FenceResponse>, ApiError> {
    ownership_change(&state, OwnershipChange::Fence, body).await?;
    // The exclusive gate waited for in-flight writes, so this LSN covers all of them.
    Ok(Json(FenceResponse {
        lsn: state.store.last_lsn().0,
    }))
}

/// `POST /internal/unfence`: give a fenced range its writes back (a cutover that was abandoned).
pub async fn unfence(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<OwnershipResponse>, ApiError> {
    ownership_change(&state, OwnershipChange::Unfence, body).await?;
    Ok(ownership_view(&state).await)
}

/// `POST /internal/own`: take ownership of a range at a newer epoch.
pub async fn own(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<OwnershipResponse>, ApiError> {
    ownership_change(&state, OwnershipChange::Own, body).await?;
    Ok(ownership_view(&state).await)
}

/// `POST /internal/release`: record that another region owns a range from `epoch` on.
pub async fn release(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<OwnershipResponse>, ApiError> {
    ownership_change(&state, OwnershipChange::Release, body).await?;
    Ok(ownership_view(&state).await)
}

async fn ownership_view(state: &NodeState) -> Json<OwnershipResponse> {
    let table = state.ownership();
    Json(OwnershipResponse {
        region: state.region.clone(),
        ranges: table.ranges(),
        users: table.users(),
    })
}

/// `POST /internal/user-ownership` `{service, market, user, epoch, owner?, remove?}`: one user's
/// override — owned here (no `owner`; the policy must allow it), owned elsewhere, or dropped.
pub async fn user_ownership(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<OwnershipResponse>, ApiError> {
    let req: UserOwnershipRequest = request::json(&request::body(body, 64 << 10).await?)?;
    if req.owner.is_none() && !req.remove {
        state.check_residency(req.market, &req.service)?;
    }
    state
        .change_table(
            |_| false,
            |t| {
                t.apply_user(
                    &req.service,
                    &req.user,
                    req.epoch,
                    req.owner.clone(),
                    req.remove,
                )
            },
        )
        .await?;
    tracing::info!(service = %req.service, user = %req.user, epoch = %req.epoch, owner = ?req.owner, remove = req.remove, "user ownership changed");
    Ok(ownership_view(&state).await)
}

/// `GET /internal/ownership`.
pub async fn ownership(State(state): State<Arc<NodeState>>) -> Json<OwnershipResponse> {
    ownership_view(&state).await
}

/// `POST /internal/purge` `{service, market, buckets}`: removes records and blobs of a scope this
/// node no longer owns. Refused (409) while any bucket of it is owned or fenced here.
pub async fn purge(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<PurgeResponse>, ApiError> {
    let req: ScopeRequest = request::json(&request::body(body, 1 << 20).await?)?;
    let scope = scope_of(&state, req)?;
    let purging = state.start_purge(&scope).await?;
    // A pull of the scope (a copy given up) writes nothing once the purge has begun.
    state.pulls.end_overlapping(&scope).await;
    let started = std::time::Instant::now();
    let records = state.store.purge(&scope).await?;
    let records_ms = started.elapsed().as_millis() as u64;
    let blobs = state.blobs.purge(&scope).await?;
    let blobs_ms = started.elapsed().as_millis() as u64 - records_ms;
    // Last, once nothing sealed under them is left to read: a retried purge destroys the rest.
    let keys_destroyed = match &state.data_keys {
        Some(keys) => keys.destroy_scope(&scope).await?,
        None => 0,
    };
    drop(purging);
    state.metrics.records_purged.inc_by(records);
    state.metrics.data_keys_destroyed.inc_by(keys_destroyed);
    tracing::info!(
        service = %scope.service, market = %scope.market, buckets = %scope.buckets, records,
        blobs, keys_destroyed, ms = started.elapsed().as_millis() as u64, records_ms, blobs_ms,
        "purged"
    );
    Ok(Json(PurgeResponse {
        records,
        blobs,
        keys_destroyed,
    }))
}

/// `GET /internal/status`.
pub async fn status(State(state): State<Arc<NodeState>>) -> Json<StatusResponse> {
    Json(StatusResponse {
        region: state.region.clone(),
        engine: state.store.engine().to_string(),
        last_lsn: state.store.last_lsn().0,
        policy_version: state.policy().version,
    })
}

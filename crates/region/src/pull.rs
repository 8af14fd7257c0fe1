//! A move's target pulling a snapshot from its source (decision 0016).
//!
//! `POST /internal/pull` `{source, scope}` opens a consistent snapshot of the scope at the source
//! node, over the cluster's mutual TLS, and starts a session that reads it ahead, checks every
//! record as any import is checked, copies the blobs its records name, and imports it chunk by
//! chunk — up to [`IMPORTS_IN_FLIGHT`] at once, so one chunk is decoded and sealed while the
//! other commits. `POST /internal/pull/{session}/next` answers with the next chunk's totals in
//! snapshot order once it is durable here; the mover checkpoints each and paces the next.
//! `DELETE /internal/pull/{session}` gives a pull up.
//!
//! So a copy's records travel from source to target only: the control plane that runs the move
//! carries none of them (before, it relayed every byte, which cost a copy a tenth of its CPU and
//! sent personal data through a third host).
//!
//! A session runs at most [`IMPORTS_IN_FLIGHT`] imports ahead of the chunk the mover last took,
//! plus one finished: pacing holds on average, in bursts of a few chunks. A session nobody asks
//! for a chunk for [`PULL_IDLE`] (its mover crashed, or paused without closing it) ends by
//! itself; a resumed move starts a new one from its checkpoint (imports are idempotent by
//! version).

use crate::internal::{ImportCheck, scope_of};
use crate::state::NodeState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use domicile_client::ClientError;
use domicile_client::region::RegionClient;
use domicile_core::CollectionName;
use domicile_http::ApiError;
use domicile_http::request;
use domicile_store::{BlobRef, CollectionAddress, VersionedRecord};
use domicile_wire::api::{PullNext, PullRequest, PullStarted, PulledChunk, ScopeRequest};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Records per chunk: one atomic import here, and one checkpoint at the control plane.
pub const CHUNK_RECORDS: usize = 10_000;

/// A chunk stops growing once its records' frames hold this many bytes (it may pass it by one
/// record): memory stays bounded when records are large.
pub const CHUNK_BYTES: usize = 8 << 20;

/// Chunk imports a pull keeps going at once.
pub const IMPORTS_IN_FLIGHT: usize = 2;

/// Blobs copied at once while a chunk's records wait for them.
const BLOBS_IN_FLIGHT: usize = 8;

/// A session nobody asked for a chunk for this long ends by itself.
pub const PULL_IDLE: Duration = Duration::from_secs(300);

/// What one chunk's pull came to.
type PulledResult = Result<PulledChunk, ApiError>;

/// The pulls this node runs as a move's target.
pub struct PullSessions {
    /// Seeded from the clock, so a restarted node does not hand out an id a mover still holds
    /// from before.
    next_id: AtomicU64,
    sessions: std::sync::Mutex<HashMap<u64, Arc<PullSession>>>,
}

impl Default for PullSessions {
    fn default() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Self {
            next_id: AtomicU64::new(seed),
            sessions: std::sync::Mutex::new(HashMap::new()),
        }
    }
}

impl PullSessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<PullSession>>> {
        // A poisoned lock only means a thread panicked between map operations: the map is whole.
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn get(&self, id: u64) -> Option<Arc<PullSession>> {
        self.lock().get(&id).cloned()
    }

    /// Ends every pull of data in `scope` and waits for the imports they had started: a purge
    /// of the scope then leaves nothing behind that a late import could write back.
    pub async fn end_overlapping(&self, scope: &domicile_core::Scope) {
        let ended: Vec<Arc<PullSession>> = {
            let mut sessions = self.lock();
            let ids: Vec<u64> = sessions
                .iter()
                .filter(|(_, s)| {
                    s.scope.service == scope.service
                        && s.scope.market == scope.market
                        && s.scope
                            .buckets
                            .ranges()
                            .iter()
                            .any(|a| scope.buckets.ranges().iter().any(|b| a.overlaps(b)))
                })
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| sessions.remove(id)).collect()
        };
        for session in ended {
            session.pump.abort();
            let _all_done = session.imports.write().await;
        }
    }

    /// Ends session `id`, if it runs: its pump stops (imports already started finish).
    fn close(&self, id: u64) -> bool {
        let session = self.lock().remove(&id);
        if let Some(s) = &session {
            s.pump.abort();
        }
        session.is_some()
    }

    /// Pulls under way.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct PullSession {
    scope: ScopeRequest,
    /// The chunks imported, in snapshot order; closed after the last.
    done: tokio::sync::Mutex<mpsc::Receiver<PulledResult>>,
    pump: tokio::task::AbortHandle,
    /// Held shared by every import under way: whoever takes it exclusively (after stopping the
    /// pump) knows none is left.
    imports: Arc<tokio::sync::RwLock<()>>,
}

/// Aborts a task when dropped: a pump given up stops reading its source too.
struct AbortOnDrop<T>(JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `POST /internal/pull` `{source, scope}` → `{session, snapshot_lsn}`.
pub async fn start(
    State(state): State<Arc<NodeState>>,
    body: Body,
) -> Result<Json<PullStarted>, ApiError> {
    let req: PullRequest = request::json(&request::body(body, 1 << 20).await?)?;
    scope_of(&state, req.scope.clone())?;
    // Nothing crosses a border the policy forbids: checked before a byte is read.
    state.check_residency(req.scope.market, &req.scope.service)?;
    let source_url = reqwest::Url::parse(&req.source)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .ok_or_else(|| {
            ApiError::bad(
                "invalid_source",
                format!("{:?} is not a region node's http(s) URL", req.source),
            )
        })?;
    let source = RegionClient::new(source_url.as_str(), state.peers.clone());
    let reader = source
        .snapshot(&req.scope)
        .await
        .map_err(|e| ApiError::BadGateway(format!("source: {e}")))?;
    let snapshot_lsn = reader.lsn.0;
    let id = state.pulls.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = mpsc::channel(1);
    let imports = Arc::new(tokio::sync::RwLock::new(()));
    let pump = tokio::spawn(pump(
        state.clone(),
        id,
        source,
        req.scope.clone(),
        reader,
        tx,
        imports.clone(),
    ));
    state.pulls.lock().insert(
        id,
        Arc::new(PullSession {
            scope: req.scope,
            done: tokio::sync::Mutex::new(rx),
            pump: pump.abort_handle(),
            imports,
        }),
    );
    tracing::info!(session = id, source = %source_url, snapshot_lsn, "pull started");
    Ok(Json(PullStarted {
        session: id,
        snapshot_lsn,
    }))
}

/// `POST /internal/pull/{session}/next` → the next chunk imported, or none at the end.
pub async fn next(
    State(state): State<Arc<NodeState>>,
    Path(id): Path<u64>,
) -> Result<Json<PullNext>, ApiError> {
    let session = state
        .pulls
        .get(id)
        .ok_or_else(|| ApiError::NotFound(format!("no pull session {id}")))?;
    let next = session.done.lock().await.recv().await;
    match next {
        Some(Ok(chunk)) => Ok(Json(PullNext { chunk: Some(chunk) })),
        Some(Err(e)) => {
            state.pulls.close(id);
            Err(e)
        }
        None => {
            state.pulls.close(id);
            Ok(Json(PullNext { chunk: None }))
        }
    }
}

/// `DELETE /internal/pull/{session}`: gives the pull up.
pub async fn close(
    State(state): State<Arc<NodeState>>,
    Path(id): Path<u64>,
) -> Result<StatusCode, ApiError> {
    if state.pulls.close(id) {
        tracing::info!(session = id, "pull closed");
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound(format!("no pull session {id}")))
    }
}

/// Reads the snapshot ahead, imports its chunks up to [`IMPORTS_IN_FLIGHT`] at once, and hands
/// their totals on in order; stops at the snapshot's end, at the first failure, or when nobody
/// takes a chunk for [`PULL_IDLE`].
async fn pump(
    state: Arc<NodeState>,
    id: u64,
    source: RegionClient,
    scope: ScopeRequest,
    mut reader: domicile_client::region_data::SnapshotReader,
    done: mpsc::Sender<PulledResult>,
    imports: Arc<tokio::sync::RwLock<()>>,
) {
    let (chunk_tx, mut chunks) = mpsc::channel(1);
    let _read = AbortOnDrop(tokio::spawn(async move {
        loop {
            let next = reader.next_records(CHUNK_RECORDS, CHUNK_BYTES).await;
            let last = !matches!(next, Ok(Some(_)));
            let item = match next {
                Ok(Some(records)) => Ok(records),
                Ok(None) => return,
                Err(e) => Err(ApiError::BadGateway(format!("source: {e}"))),
            };
            if chunk_tx.send(item).await.is_err() || last {
                return;
            }
        }
    }));
    let blob_collections = Arc::new(state.schema.blob_collections_of(&scope.service));
    // Imports started run to the end even if the pump is stopped: each is one atomic batch.
    let mut in_flight: VecDeque<JoinHandle<PulledResult>> = VecDeque::new();
    let mut read_all = false;
    loop {
        while !read_all && in_flight.len() < IMPORTS_IN_FLIGHT {
            let Some(chunk) = chunks.recv().await else {
                read_all = true;
                break;
            };
            let (state, source, scope, blobs) = (
                state.clone(),
                source.clone(),
                scope.clone(),
                blob_collections.clone(),
            );
            let importing = imports.clone().read_owned().await;
            in_flight.push_back(tokio::spawn(async move {
                let _importing = importing;
                import_chunk(&state, &source, &scope, &blobs, chunk?).await
            }));
        }
        let Some(import) = in_flight.pop_front() else {
            break;
        };
        let result = match import.await {
            Ok(r) => r,
            Err(e) => Err(ApiError::Internal(format!("pull import task: {e}"))),
        };
        let failed = result.is_err();
        if let Err(e) = &result {
            tracing::warn!(session = id, error = %e, "pull failed");
        }
        match tokio::time::timeout(PULL_IDLE, done.send(result)).await {
            Ok(Ok(())) if !failed => {}
            Ok(Ok(())) => return,
            // Closed, or nobody asked for so long that the mover is gone.
            Ok(Err(_)) | Err(_) => {
                tracing::info!(session = id, "pull given up by its mover");
                state.pulls.close(id);
                return;
            }
        }
    }
}

/// A record's size as a move reports it: its user, collection and key, its version, its value.
pub fn record_bytes(r: &VersionedRecord) -> u64 {
    let a = &r.address;
    let c = &a.collection;
    (c.user.as_str().len() + c.collection.as_str().len() + a.key.as_str().len() + 8) as u64
        + r.value.as_ref().map_or(0, |v| v.len() as u64)
}

/// Checks one chunk of the source's records, copies the blobs they name, and imports them.
async fn import_chunk(
    state: &NodeState,
    source: &RegionClient,
    scope: &ScopeRequest,
    blob_collections: &BTreeSet<CollectionName>,
    records: Vec<VersionedRecord>,
) -> PulledResult {
    let mut check = ImportCheck::new(state, &scope.service, scope.market);
    let (mut bytes, mut blobs) = (0u64, Vec::new());
    for r in &records {
        check.record(r)?;
        let c = &r.address.collection;
        if !scope.buckets.contains(c.bucket) {
            return Err(ApiError::BadGateway(format!(
                "the source sent a record of bucket {} outside the pulled scope",
                c.bucket
            )));
        }
        bytes += record_bytes(r);
        if let Some(value) = &r.value
            && blob_collections.contains(&c.collection)
        {
            let blob: BlobRef = serde_json::from_slice(value).map_err(|_| {
                ApiError::BadGateway(format!(
                    "source record {:?} holds no blob reference",
                    r.address
                ))
            })?;
            blobs.push((c.clone(), blob.hash));
        }
    }
    let last_bucket = records
        .last()
        .map_or(0, |r| u32::from(r.address.collection.bucket.0));
    let count = records.len() as u64;
    // A blob record never lands before its bytes.
    for group in blobs.chunks(BLOBS_IN_FLIGHT) {
        let copies = group
            .iter()
            .map(|(owner, hash)| carry_blob(state, source, owner, hash));
        bytes += futures::future::try_join_all(copies)
            .await?
            .iter()
            .sum::<u64>();
    }
    let outcome = state.store.import(records).await?;
    state.metrics.records_imported.inc_by(outcome.applied);
    Ok(PulledChunk {
        records: count,
        bytes,
        applied: outcome.applied,
        last_bucket,
    })
}

/// Copies one blob from the source unless this node holds it; returns the bytes copied.
async fn carry_blob(
    state: &NodeState,
    source: &RegionClient,
    owner: &CollectionAddress,
    hash: &str,
) -> Result<u64, ApiError> {
    if state.blobs.exists(owner, hash).await? {
        return Ok(0);
    }
    let stream = match source.blob_stream(owner, hash).await {
        Ok(s) => s,
        // Gone at the source: the record naming it was overwritten after the snapshot, and the
        // change that did it follows in the log.
        Err(ClientError::Status { status: 404, .. }) => {
            tracing::debug!(%hash, "blob gone at the source; its newer record follows");
            return Ok(0);
        }
        Err(e) => return Err(ApiError::BadGateway(format!("source blob: {e}"))),
    };
    let size = Arc::new(AtomicU64::new(0));
    let counted = {
        let size = size.clone();
        stream.inspect(move |chunk| {
            if let Ok(c) = chunk {
                size.fetch_add(c.len() as u64, Ordering::Relaxed);
            }
        })
    };
    crate::blob_transfer::store_checked(state, owner, hash, counted)
        .await
        .map_err(|e| match e {
            ApiError::BadRequest { message, .. } => {
                ApiError::BadGateway(format!("the source's blob: {message}"))
            }
            other => other,
        })?;
    Ok(size.load(Ordering::Relaxed))
}

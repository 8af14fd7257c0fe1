//! Consent: grants and revocations per user and purpose, and the check every write to a
//! collection with a consent purpose passes.
//!
//! A user's consent records live in the reserved collection `_consents` (key = purpose) of each
//! service that has a collection of that purpose, so they move with that service's data and the
//! owning node checks them locally. A grant or revocation is a write like any other: residency,
//! then ownership, under the ownership gate, logged. A revocation keeps the record (granted =
//! false, `revoked_at`) and deletes the user's records of the purpose's collections in the same
//! atomic batch, so the deletes reach every copy through the change log.
//!
//! Writes to a consent collection and consent decisions of the same user are serialized by a
//! per-user lock ([`ConsentLocks`]) taken before the ownership gate: a write checks the grant
//! and lands while holding it, so a revocation cannot fall between a write's check and its
//! commit (and the revocation's erase cannot miss a write that passed its check).

use crate::state::NodeState;
use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use bytes::Bytes;
use domicile_core::{
    CollectionKind, Epoch, RecordKey, ServiceName, UserId, Version, consents_collection,
};
use domicile_http::ApiError;
use domicile_http::request;
use domicile_store::{BlobRef, CollectionAddress, Mutation, MutationOp, Precondition};
use domicile_wire::api::{ConsentList, ConsentRecord, ConsentRequest, Erased, ServiceConsent};
use serde::Deserialize;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use tokio::sync::{Mutex, MutexGuard};

/// Stripes of the per-user consent lock (users hash onto them; a collision only serializes
/// two users' consent writes).
const STRIPES: usize = 256;
/// The longest notice version accepted.
const MAX_NOTICE_VERSION: usize = 128;
/// Records listed per store call while erasing a collection.
const PAGE: usize = 1000;

/// Per-user locks that serialize consent decisions with writes to consent collections.
pub struct ConsentLocks {
    stripes: Vec<Mutex<()>>,
}

impl Default for ConsentLocks {
    fn default() -> Self {
        Self {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
        }
    }
}

impl ConsentLocks {
    /// Locks `user`'s consent stripe. Always taken before the ownership gate.
    pub async fn lock(&self, user: &UserId) -> MutexGuard<'_, ()> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        user.hash(&mut h);
        let i = (h.finish() % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().await
    }
}

/// The user's consents collection in `of`'s service and market.
fn consents_of(of: &CollectionAddress) -> CollectionAddress {
    CollectionAddress {
        collection: consents_collection(),
        ..of.clone()
    }
}

/// The consent record for `purpose` in the consents collection `consents`, with its version.
async fn stored(
    state: &NodeState,
    consents: &CollectionAddress,
    purpose: &str,
) -> Result<Option<(Version, ConsentRecord)>, ApiError> {
    let Some(record) = state
        .store
        .get(&consents.record(request::key(purpose)?))
        .await?
    else {
        return Ok(None);
    };
    let consent: ConsentRecord = serde_json::from_slice(&record.value)
        .map_err(|e| ApiError::Internal(format!("consent record {purpose}: {e}")))?;
    Ok(Some((record.version, consent)))
}

/// Refuses a write to `c` (a collection of consent purpose `purpose`) unless the user has an
/// active grant. Call with the user's consent lock and the ownership gate held.
pub(crate) async fn require_grant(
    state: &NodeState,
    c: &CollectionAddress,
    purpose: &str,
) -> Result<(), ApiError> {
    match stored(state, &consents_of(c), purpose).await? {
        Some((_, consent)) if consent.granted => Ok(()),
        _ => {
            state.metrics.consent_refusals.inc();
            Err(ApiError::ConsentRequired(format!(
                "writing to {} needs the user's consent to {purpose}; grant it with PUT \
                 /v1/users/{}/consents/{purpose}",
                c.collection, c.user
            )))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceQuery {
    service: Option<ServiceName>,
}

/// A validated consent call: the user's consents collection in the chosen service.
struct Call {
    consents: CollectionAddress,
    purpose: String,
    epoch: Option<Epoch>,
}

fn now() -> Result<String, ApiError> {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(|e| ApiError::Internal(format!("format the time: {e}")))
}

/// Picks the service a consent call is about: the one named, which must have a collection of
/// the purpose, or the purpose's only service.
fn service_of(
    state: &NodeState,
    purpose: &str,
    named: Option<ServiceName>,
) -> Result<ServiceName, ApiError> {
    let services = state.schema.services_of_purpose(purpose);
    if services.is_empty() {
        return Err(ApiError::NotFound(format!(
            "the schema has no collection with consent purpose {purpose}"
        )));
    }
    match named {
        Some(s) if services.contains(&s) => Ok(s),
        Some(s) => Err(ApiError::NotFound(format!(
            "service {s} has no collection with consent purpose {purpose}"
        ))),
        None if services.len() == 1 => Ok(services[0].clone()),
        None => Err(ApiError::bad(
            "ambiguous_purpose",
            format!("purpose {purpose} is used by several services; name one with ?service="),
        )),
    }
}

impl Call {
    fn parse(
        state: &NodeState,
        user: &str,
        purpose: &str,
        query: ServiceQuery,
        headers: &HeaderMap,
    ) -> Result<Self, ApiError> {
        let user = request::user(user)?;
        let service = service_of(state, purpose, query.service)?;
        let market = request::market(headers)?;
        let epoch = request::epoch(headers)?;
        let consents =
            CollectionAddress::new(service, market, user, consents_collection(), state.buckets);
        Ok(Self {
            consents,
            purpose: purpose.to_string(),
            epoch,
        })
    }

    fn key(&self) -> Result<RecordKey, ApiError> {
        request::key(&self.purpose)
    }
}

fn answer(
    service: &ServiceName,
    version: Version,
    consent: ConsentRecord,
    erased: Option<Erased>,
) -> Json<ServiceConsent> {
    Json(ServiceConsent {
        service: service.clone(),
        version: version.to_string(),
        consent,
        erased,
    })
}

fn put(
    address: domicile_store::RecordAddress,
    consent: &ConsentRecord,
) -> Result<Mutation, ApiError> {
    let value = serde_json::to_vec(consent).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(Mutation {
        address,
        op: MutationOp::Put(Bytes::from(value)),
        precondition: Precondition::None,
    })
}

/// `PUT /v1/users/{user}/consents/{purpose}[?service=]` `{"notice_version"}`: records a grant.
pub async fn grant(
    State(state): State<Arc<NodeState>>,
    Path((user, purpose)): Path<(String, String)>,
    query: Result<Query<ServiceQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ServiceConsent>, ApiError> {
    let call = Call::parse(&state, &user, &purpose, request::query(query)?, &headers)?;
    let req: ConsentRequest = request::json(&request::body(body, 16 << 10).await?)?;
    let notice = req.notice_version.trim();
    if notice.is_empty()
        || notice.len() > MAX_NOTICE_VERSION
        || notice.chars().any(char::is_control)
    {
        return Err(ApiError::bad(
            "invalid_notice_version",
            format!("notice_version must be 1-{MAX_NOTICE_VERSION} printable characters"),
        ));
    }
    let c = &call.consents;
    state.check_residency(c.market, &c.service)?;
    let consent = ConsentRecord {
        purpose: call.purpose.clone(),
        granted: true,
        notice_version: Some(notice.to_string()),
        granted_at: Some(now()?),
        revoked_at: None,
    };
    let mutation = put(c.record(call.key()?), &consent)?;
    let _consent = state.consent_locks.lock(&c.user).await;
    let gate = state.write_gate().await;
    gate.check_collection(c, call.epoch, true)?;
    let versions = state.store.write(vec![mutation]).await?;
    drop(gate);
    let version = versions
        .first()
        .copied()
        .ok_or_else(|| ApiError::Internal("write returned no version".into()))?;
    state.metrics.consents_granted.inc();
    tracing::info!(user = %c.user, service = %c.service, purpose = %call.purpose, notice, "consent granted");
    Ok(answer(&c.service, version, consent, None))
}

/// `DELETE /v1/users/{user}/consents/{purpose}[?service=]`: records the revocation and erases
/// the user's data of the purpose's collections, in one atomic batch.
pub async fn revoke(
    State(state): State<Arc<NodeState>>,
    Path((user, purpose)): Path<(String, String)>,
    query: Result<Query<ServiceQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<ServiceConsent>, ApiError> {
    let call = Call::parse(&state, &user, &purpose, request::query(query)?, &headers)?;
    let c = &call.consents;
    state.check_residency(c.market, &c.service)?;
    let _consent = state.consent_locks.lock(&c.user).await;
    let gate = state.write_gate().await;
    gate.check_collection(c, call.epoch, true)?;
    let previous = stored(&state, c, &call.purpose).await?.map(|(_, p)| p);
    let consent = match previous {
        // Revoking again keeps the first revocation's time.
        Some(p) if !p.granted => p,
        Some(p) => ConsentRecord {
            granted: false,
            revoked_at: Some(now()?),
            ..p
        },
        None => ConsentRecord {
            purpose: call.purpose.clone(),
            granted: false,
            notice_version: None,
            granted_at: None,
            revoked_at: Some(now()?),
        },
    };
    let mut batch = vec![put(c.record(call.key()?), &consent)?];
    // The purpose's data, read under the lock: no write to it can land until the batch has.
    let mut blobs: Vec<(CollectionAddress, String)> = Vec::new();
    for (name, kind) in state
        .schema
        .collections_of_purpose(&c.service, &call.purpose)
    {
        let collection = CollectionAddress {
            collection: name,
            ..c.clone()
        };
        let mut after: Option<RecordKey> = None;
        loop {
            let page = state.store.list(&collection, after.as_ref(), PAGE).await?;
            for item in page.items {
                let address = collection.record(item.key);
                if kind == CollectionKind::Blobs
                    && let Some(r) = state.store.get(&address).await?
                    && let Ok(blob) = serde_json::from_slice::<BlobRef>(&r.value)
                {
                    blobs.push((collection.clone(), blob.hash));
                }
                batch.push(Mutation {
                    address,
                    op: MutationOp::Delete,
                    precondition: Precondition::None,
                });
            }
            match page.next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
    }
    let records = (batch.len() - 1) as u64;
    let versions = state.store.write(batch).await?;
    drop(gate);
    let version = versions
        .first()
        .copied()
        .ok_or_else(|| ApiError::Internal("write returned no version".into()))?;
    let blob_count = blobs.len() as u64;
    for (collection, hash) in blobs {
        crate::public::release_blob_hash(&state, &collection, &hash).await;
    }
    state.metrics.consents_revoked.inc();
    state.metrics.records_erased.inc_by(records);
    state.metrics.blobs_erased.inc_by(blob_count);
    tracing::info!(user = %c.user, service = %c.service, purpose = %call.purpose, records, blobs = blob_count, "consent revoked; the purpose's data erased");
    Ok(answer(
        &c.service,
        version,
        consent,
        Some(Erased {
            records,
            blobs: blob_count,
        }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    service: ServiceName,
}

/// `GET /v1/users/{user}/consents?service=`: the user's consent records in one service.
pub async fn list(
    State(state): State<Arc<NodeState>>,
    Path(user): Path<String>,
    query: Result<Query<ListQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<ConsentList>, ApiError> {
    let q = request::query(query)?;
    let user = request::user(&user)?;
    if !state.schema.keeps_consents(&q.service) {
        return Err(ApiError::NotFound(format!(
            "service {} has no collection with a consent purpose",
            q.service
        )));
    }
    let market = request::market(&headers)?;
    let epoch = request::epoch(&headers)?;
    let consents = CollectionAddress::new(
        q.service.clone(),
        market,
        user,
        consents_collection(),
        state.buckets,
    );
    state
        .ownership()
        .check_collection(&consents, epoch, false)?;
    let mut out = Vec::new();
    let mut after: Option<RecordKey> = None;
    loop {
        let page = state.store.list(&consents, after.as_ref(), PAGE).await?;
        for item in page.items {
            if let Some((version, consent)) = stored(&state, &consents, item.key.as_str()).await? {
                out.push(ServiceConsent {
                    service: q.service.clone(),
                    version: version.to_string(),
                    consent,
                    erased: None,
                });
            }
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(Json(ConsentList { consents: out }))
}

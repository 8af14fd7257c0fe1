//! JSON bodies of the region node's public and internal APIs.

use domicile_core::{BucketRange, BucketSet, Epoch, Market, RegionId, Scope, ServiceName};
use domicile_store::{BucketDigest, ImportOutcome};
use serde::{Deserialize, Serialize};

/// Header carrying the user's market on every data request (set by the gateway).
pub const MARKET_HEADER: &str = "x-domicile-market";
/// Header carrying the epoch the caller routed by; a stale one gets 421.
pub const EPOCH_HEADER: &str = "x-domicile-epoch";
/// Content type of binary streams.
pub const STREAM_CONTENT_TYPE: &str = "application/x-domicile-stream";

/// A change stream ends after the change that takes it past this size, its END naming that
/// change as the position to continue from: so a stream this long may have been cut short,
/// whatever its count of changes.
pub const CHANGE_STREAM_BYTES: usize = 8 << 20;

/// Every error: `{"error":{"code","message"}}`, plus the owner on a 421.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// On 421: the region that owns the range, when this node knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<RegionId>,
    /// On 421: the epoch of the range as this node knows it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<Epoch>,
}

/// The answer to a write: the new version (a string, since versions exceed 2^53).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WriteResponse {
    pub version: String,
}

/// The most writes one batch may carry.
pub const BATCH_MAX_WRITES: usize = 1000;
/// The largest batch body, in bytes (each value also stays within the record limit).
pub const BATCH_MAX_BYTES: u64 = 16 << 20;

/// `POST /v1/users/{user}/batch`: writes of one user's records in one service, applied as one
/// atomic, durable write (all or none).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    pub writes: Vec<BatchWrite>,
}

/// One write of a batch: a put of `value` (any JSON, stored as its text) or a delete.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchWrite {
    pub collection: String,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<Box<serde_json::value::RawValue>>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub delete: bool,
    /// As the `If-Match` header of a single write: `*` or an ETag this API returned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
}

/// What the gateway reads of a batch to route it: the collections.
#[derive(Debug, Deserialize)]
pub struct BatchRoute {
    pub writes: Vec<BatchRouteWrite>,
}

#[derive(Debug, Deserialize)]
pub struct BatchRouteWrite {
    pub collection: String,
}

/// The answer to a batch: each write's new version, in the request's order (a delete's is the
/// tombstone's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchResponse {
    pub versions: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListItem {
    pub key: String,
    pub version: String,
    pub size: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListResponse {
    pub items: Vec<ListItem>,
    pub next: Option<String>,
}

/// A consent record as a service keeps it (reserved collection `_consents`, key = purpose).
/// A revocation keeps the record (granted = false, with `revoked_at`); it is never deleted,
/// except by erasing the user. Times are RFC 3339 (UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentRecord {
    pub purpose: String,
    pub granted: bool,
    /// The version of the notice the user was shown when granting.
    pub notice_version: Option<String>,
    pub granted_at: Option<String>,
    pub revoked_at: Option<String>,
}

/// `PUT /v1/users/{user}/consents/{purpose}` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRequest {
    pub notice_version: String,
}

/// What a revocation erased, or an erasure removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Erased {
    pub records: u64,
    pub blobs: u64,
}

/// One service's consent record, as a region node answers a grant, a revocation or a listing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceConsent {
    pub service: ServiceName,
    /// The consent record's version.
    pub version: String,
    pub consent: ConsentRecord,
    /// On a revocation: the user's data of the purpose's collections that was erased.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erased: Option<Erased>,
}

/// The consent records of a user: a region node's for one service, the gateway's for all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsentList {
    pub consents: Vec<ServiceConsent>,
}

/// One record of a user as an export page carries it. A record's value is `value` when it is
/// UTF-8, `value_base64` otherwise; a blob collection's record carries `blob` (its metadata;
/// the bytes are fetched from the record's usual path).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportItem {
    pub collection: String,
    pub key: String,
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<domicile_store::BlobRef>,
}

/// `GET /v1/users/{user}/export?service=&after=&limit=` at a region node: one page of a user's
/// records of one service (every collection, consents included); `next` is the `after` of the
/// next page (`collection/key`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportPage {
    pub items: Vec<ExportItem>,
    pub next: Option<String>,
}

/// `POST /internal/users/{user}/erase` at a region node: what it removed. `records` counts
/// logged deletes where it owns the data and stored entries removed where it does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EraseResponse {
    pub region: RegionId,
    pub records: u64,
    pub blobs: u64,
    /// The user's data keys destroyed in this region (crypto-shredding; 0 until encryption at
    /// rest holds per-(user, service) keys).
    #[serde(default)]
    pub keys_destroyed: u64,
}

/// `DELETE /v1/users/{user}` at the gateway: every region's answer, and the totals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureSummary {
    pub user: domicile_core::UserId,
    pub records: u64,
    pub blobs: u64,
    pub keys_destroyed: u64,
    pub regions: Vec<EraseResponse>,
}

/// A scope as the internal API takes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeRequest {
    pub service: ServiceName,
    pub market: Market,
    pub buckets: BucketSet,
}

impl From<ScopeRequest> for Scope {
    fn from(s: ScopeRequest) -> Self {
        Scope {
            service: s.service,
            market: s.market,
            buckets: s.buckets,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DigestResponse {
    pub digests: Vec<BucketDigest>,
}

/// `POST /internal/pull` at a move's target: pull a consistent snapshot of `scope` from the
/// node at `source` (decision 0016). The target reads, checks and imports it chunk by chunk;
/// the mover only asks for each chunk's totals, so no record passes through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PullRequest {
    /// The source node's base URL, as the cluster reaches it.
    pub source: String,
    pub scope: ScopeRequest,
}

/// A pull under way at the target: where to ask for its chunks, and the snapshot's LSN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullStarted {
    pub session: u64,
    pub snapshot_lsn: u64,
}

/// `POST /internal/pull/{session}/next`: the next chunk the target imported, in snapshot
/// order, or none once the snapshot has ended (the session is then closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullNext {
    pub chunk: Option<PulledChunk>,
}

/// One chunk of a pull, imported at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PulledChunk {
    pub records: u64,
    /// Its records' user, collection and key, version and value bytes, and the bytes of the
    /// blobs they named that were copied with them.
    pub bytes: u64,
    /// Records the target took (the rest it had at an equal or newer version).
    pub applied: u64,
    /// The bucket of the chunk's last record: snapshots stream in bucket order, so every
    /// bucket below it is copied whole.
    pub last_bucket: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImportResponse {
    pub applied: u64,
    pub skipped: u64,
}

impl From<ImportOutcome> for ImportResponse {
    fn from(o: ImportOutcome) -> Self {
        Self {
            applied: o.applied,
            skipped: o.skipped,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PurgeResponse {
    pub records: u64,
    pub blobs: u64,
    /// Data keys destroyed with the data (crypto-shredding); 0 where nothing is encrypted.
    #[serde(default)]
    pub keys_destroyed: u64,
}

/// A range of one service and market, with the epoch an ownership change is made at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    pub service: ServiceName,
    pub market: Market,
    pub buckets: BucketRange,
    pub epoch: Epoch,
    /// For `release`: the region that owns the range from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<RegionId>,
}

/// The answer to `fence`: the last LSN, which the mover drains up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceResponse {
    pub lsn: u64,
}

/// How a node holds a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
pub enum RangeState {
    /// This node serves reads and writes.
    Owned,
    /// This node serves reads; writes are held off during a cutover.
    Fenced,
    /// Another region owns the range (if known).
    Foreign { owner: Option<RegionId> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedRange {
    pub service: ServiceName,
    pub market: Market,
    pub buckets: BucketRange,
    pub epoch: Epoch,
    #[serde(flatten)]
    pub state: RangeState,
}

/// A per-user override as a region node holds it: this user's data of one service is owned by
/// this node (`Owned`) or by another region (`Foreign`), whatever the bucket's placement says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedUser {
    pub service: ServiceName,
    pub user: domicile_core::UserId,
    pub epoch: Epoch,
    #[serde(flatten)]
    pub state: RangeState,
}

/// `POST /internal/user-ownership`: own (no `owner`), hand over (`owner`), or drop (`remove`) a
/// user's override on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserOwnershipRequest {
    pub service: ServiceName,
    pub market: Market,
    pub user: domicile_core::UserId,
    pub epoch: Epoch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<RegionId>,
    #[serde(default)]
    pub remove: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnershipResponse {
    pub region: RegionId,
    pub ranges: Vec<OwnedRange>,
    #[serde(default)]
    pub users: Vec<OwnedUser>,
}

/// A per-user placement override in the routing table: one user's service data lives in
/// `region` at `epoch` instead of where its bucket is placed (a relocation, a VIP, a test user).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserOverride {
    pub user: domicile_core::UserId,
    pub service: ServiceName,
    pub market: Market,
    pub region: RegionId,
    pub epoch: Epoch,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusResponse {
    pub region: RegionId,
    pub engine: String,
    pub last_lsn: u64,
    pub policy_version: u64,
}

/// A region as the routing table names it: where its node listens.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionEndpoint {
    pub id: RegionId,
    pub jurisdiction: Market,
    /// Base URL of the region node, e.g. `http://127.0.0.1:7401`.
    pub url: String,
}

/// Everything a gateway needs to route, as the control plane publishes it. `version` increases
/// with every change (placement, epochs, policy, regions), so watchers ask for "newer than V".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingTable {
    pub version: u64,
    pub buckets: domicile_core::BucketCount,
    pub schema: domicile_core::Schema,
    pub policy: domicile_core::Policy,
    pub regions: Vec<RegionEndpoint>,
    pub placement: domicile_core::Placement,
    /// Rare per-user overrides; looked up before the placement.
    #[serde(default)]
    pub overrides: Vec<UserOverride>,
}

impl RoutingTable {
    /// The URL of `region`'s node, if the table has one.
    pub fn url_of(&self, region: &RegionId) -> Option<&str> {
        self.regions
            .iter()
            .find(|r| &r.id == region)
            .map(|r| r.url.as_str())
    }

    pub fn user_override(
        &self,
        user: &domicile_core::UserId,
        service: &ServiceName,
    ) -> Option<&UserOverride> {
        self.overrides
            .iter()
            .find(|o| &o.user == user && &o.service == service)
    }
}

//! The transfer ledger as it crosses the network: its entries, the export `GET /admin/ledger`
//! answers (and `domicile audit` reads, online or from a file), and the events other roles
//! record through `POST /internal/ledger/events`.

use serde::{Deserialize, Serialize};

/// What an export says it is (`format`).
pub const EXPORT_FORMAT: &str = "domicile-ledger/1";

/// One ledger entry. `hash` is BLAKE3 over the other fields (`prev` included), so the entries
/// form a chain; a `checkpoint` entry's body carries an Ed25519 signature over everything up to
/// and including itself (see `domicile_control::ledger`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// 1, 2, 3, … with no gap.
    pub seq: u64,
    /// Unix milliseconds, as the control plane's clock said when it appended the entry.
    pub time_ms: u64,
    /// `transfer`, `purge`, `policy`, `checkpoint`, `key_destruction`, `erasure`,
    /// `consent_revocation`.
    pub kind: String,
    /// What the entry is about, unique per event (an event written twice after a crash is
    /// recognised by it and not appended again).
    pub id: String,
    pub body: serde_json::Value,
    /// Hex BLAKE3 of the previous entry (64 zeros for the first).
    pub prev: String,
    pub hash: String,
}

/// The whole ledger, as exported (`GET /admin/ledger`, or a file saved from it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerExport {
    /// [`EXPORT_FORMAT`].
    pub format: String,
    /// The hex Ed25519 public key the control plane signs checkpoints with, as it publishes
    /// it. A verifier should pin its own copy (`domicile audit verify --public-key`).
    pub public_key: String,
    /// The key's id (the first 16 hex digits of BLAKE3 of the key), as checkpoints name it.
    pub key_id: String,
    pub entries: Vec<LedgerEntry>,
}

/// An event another role records in the ledger (`POST /internal/ledger/events`): one of the
/// kinds the control plane accepts from outside (`key_destruction`, `erasure`,
/// `consent_revocation`), with an id unique to the event (a retry with the same id is not
/// appended twice).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerEvent {
    pub kind: String,
    pub id: String,
    pub body: serde_json::Value,
}

/// The answer to a recorded event: the entry's sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAppended {
    pub seq: u64,
}

/// Why data keys were destroyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DestructionReason {
    /// The data moved to another region; the source's copy is crypto-shredded.
    Moved,
    /// The user (or a consent revocation) asked for the data to be erased.
    Erased,
    /// A rolled-back move's copy at its target is crypto-shredded.
    RolledBack,
}

/// `key_destruction`: a region destroyed (user, service) data keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyDestruction {
    pub region: domicile_core::RegionId,
    pub service: domicile_core::ServiceName,
    /// How many users' keys were destroyed.
    pub users: u64,
    /// The user, when it was one user's keys (an erasure).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<domicile_core::UserId>,
    pub reason: DestructionReason,
}

/// `erasure`: a user's data erased everywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Erasure {
    pub user: domicile_core::UserId,
    /// Every region that held the user's data and erased it.
    pub regions: Vec<domicile_core::RegionId>,
    pub records: u64,
    pub blobs: u64,
    pub keys_destroyed: u64,
}

/// `consent_revocation`: a grant revoked and the collection's data erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentRevocation {
    pub user: domicile_core::UserId,
    pub collection: domicile_core::CollectionName,
    /// The consent purpose the grant was for.
    pub purpose: String,
    pub records_erased: u64,
}

/// A body the ledger accepts from other roles, with its kind.
pub trait EventBody: Serialize {
    const KIND: &'static str;
}

impl EventBody for KeyDestruction {
    const KIND: &'static str = "key_destruction";
}

impl EventBody for Erasure {
    const KIND: &'static str = "erasure";
}

impl EventBody for ConsentRevocation {
    const KIND: &'static str = "consent_revocation";
}

impl LedgerEvent {
    /// The event `id` with `body` (its kind from the body's type).
    pub fn new<B: EventBody>(id: impl Into<String>, body: &B) -> Result<Self, serde_json::Error> {
        Ok(Self {
            kind: B::KIND.to_string(),
            id: id.into(),
            body: serde_json::to_value(body)?,
        })
    }
}

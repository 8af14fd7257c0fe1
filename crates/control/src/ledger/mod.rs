//! The transfer ledger: an append-only, hash-chained record of every cross-border transfer,
//! purge, policy change, key destruction and erasure, kept in the control plane's store, with
//! Ed25519-signed checkpoints.
//!
//! Each entry's hash is BLAKE3 over its sequence number, time, kind, id, body and the previous
//! entry's hash, so an edit, removal or reorder breaks the chain. A `checkpoint` entry signs
//! (with the control plane's [`LedgerKey`]) the hash its own fields would have without the
//! signature — which covers the previous entry's hash, so the whole chain up to and including
//! the checkpoint. One is written at the end of every phase, and whenever the ledger is
//! exported with entries after the last one ([`export`]), so an export is signed end to end.
//! [`verify::verify`] checks the chain and every signature and names the first bad entry.

pub mod events;
pub mod key;
pub mod verify;

use crate::state::ControlState;
use bytes::Bytes;
use domicile_http::ApiError;
use domicile_store::StoreError;
pub use domicile_wire::ledger::{EXPORT_FORMAT, LedgerEntry, LedgerExport};
pub use key::{KeyError, LedgerKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The entry kinds.
pub mod kind {
    /// A range of a service's data of a market moved between regions.
    pub const TRANSFER: &str = "transfer";
    /// A range's copy removed from a region: the source after a move, the target after a
    /// rollback.
    pub const PURGE: &str = "purge";
    /// A policy version published after a phase.
    pub const POLICY: &str = "policy";
    /// A signature over the chain up to and including itself.
    pub const CHECKPOINT: &str = "checkpoint";
    /// Data keys destroyed at a region (crypto-shredding), after a move or an erasure.
    pub const KEY_DESTRUCTION: &str = "key_destruction";
    /// A user's data erased in every region.
    pub const ERASURE: &str = "erasure";
    /// A consent grant revoked (and the collection's data erased).
    pub const CONSENT_REVOCATION: &str = "consent_revocation";
}

const HEAD: &str = "ledger/head";

/// What a checkpoint's signature is over: this context, then the 32 bytes of the hash the
/// checkpoint entry would have without its `signature` field.
pub const SIGNING_CONTEXT: &[u8] = b"domicile ledger checkpoint v1\0";

/// The previous hash of the first entry.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn entry_key(seq: u64) -> String {
    format!("ledger/{seq:010}")
}

#[derive(Debug, Error)]
pub enum LedgerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the control plane has no ledger signing key")]
    NoKey,
    /// A recorded event the ledger does not accept (its kind, id or body).
    #[error("{0}")]
    Refused(String),
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Store(e) => e.into(),
            LedgerError::NoKey => ApiError::Internal(e.to_string()),
            LedgerError::Refused(m) => ApiError::bad("event_refused", m),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

/// The hash of an entry with these fields (hex).
pub fn hash_of(
    seq: u64,
    time_ms: u64,
    kind: &str,
    id: &str,
    body: &serde_json::Value,
    prev: &str,
) -> String {
    digest(seq, time_ms, kind, id, body, prev)
        .to_hex()
        .to_string()
}

fn digest(
    seq: u64,
    time_ms: u64,
    kind: &str,
    id: &str,
    body: &serde_json::Value,
    prev: &str,
) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&time_ms.to_le_bytes());
    for part in [kind, id, &body.to_string(), prev] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize()
}

/// An entry with its hash computed (the chain's only rule for entries that are not checkpoints).
pub fn seal(
    seq: u64,
    time_ms: u64,
    kind: &str,
    id: &str,
    body: serde_json::Value,
    prev: &str,
) -> LedgerEntry {
    LedgerEntry {
        seq,
        time_ms,
        kind: kind.to_string(),
        id: id.to_string(),
        hash: hash_of(seq, time_ms, kind, id, &body, prev),
        body,
        prev: prev.to_string(),
    }
}

/// What a checkpoint's signature covers: [`SIGNING_CONTEXT`] and the hash of the checkpoint
/// entry without its `signature` (which chains to every entry before it).
pub fn signed_message(entry: &LedgerEntry) -> Vec<u8> {
    let mut unsigned = entry.body.clone();
    if let Some(map) = unsigned.as_object_mut() {
        map.remove("signature");
    }
    let hash = digest(
        entry.seq,
        entry.time_ms,
        &entry.kind,
        &entry.id,
        &unsigned,
        &entry.prev,
    );
    let mut message = SIGNING_CONTEXT.to_vec();
    message.extend_from_slice(hash.as_bytes());
    message
}

/// A checkpoint entry at `seq` after `prev` (the hash of entry `seq - 1`), signed with `key`.
pub fn checkpoint_entry(
    key: &LedgerKey,
    seq: u64,
    time_ms: u64,
    id: &str,
    reason: &str,
    prev: &str,
) -> LedgerEntry {
    let mut entry = LedgerEntry {
        seq,
        time_ms,
        kind: kind::CHECKPOINT.to_string(),
        id: id.to_string(),
        body: serde_json::json!({
            "covers": seq - 1, "head": prev, "reason": reason,
            "algorithm": "ed25519", "key_id": key.public().id(),
        }),
        prev: prev.to_string(),
        hash: String::new(),
    };
    let signature = key.sign(&signed_message(&entry));
    if let Some(map) = entry.body.as_object_mut() {
        map.insert("signature".into(), signature.into());
    }
    entry.hash = hash_of(seq, time_ms, &entry.kind, id, &entry.body, prev);
    entry
}

fn corrupt(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("ledger: {e}"))
}

async fn head(state: &ControlState) -> Result<Head, StoreError> {
    match state.store.load_meta(HEAD).await? {
        Some(b) => serde_json::from_slice(&b).map_err(corrupt),
        None => Ok(Head {
            seq: 0,
            hash: GENESIS.to_string(),
        }),
    }
}

/// Under the ledger lock: the entry with `id` among the last `lookback`, if any.
async fn recent(
    state: &ControlState,
    head: &Head,
    id: &str,
    lookback: u64,
) -> Result<Option<LedgerEntry>, StoreError> {
    let mut seq = head.seq;
    while seq > 0 && head.seq - seq < lookback {
        if let Some(e) = load(state, seq).await?
            && e.id == id
        {
            return Ok(Some(e));
        }
        seq -= 1;
    }
    Ok(None)
}

/// Stores `entry` (which extends the head), then moves the head to it: the entry is durable
/// before the head points at it.
async fn store(state: &ControlState, entry: &LedgerEntry) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(entry).map_err(corrupt)?;
    state
        .store
        .store_meta(&entry_key(entry.seq), Bytes::from(bytes))
        .await?;
    let next = serde_json::to_vec(&Head {
        seq: entry.seq,
        hash: entry.hash.clone(),
    })
    .map_err(corrupt)?;
    state.store.store_meta(HEAD, Bytes::from(next)).await
}

/// Appends an entry (unless the last `lookback` entries already hold one with this `id`) and
/// returns its sequence number. The entry is durable before the head points at it.
pub async fn append(
    state: &ControlState,
    kind: &str,
    id: &str,
    body: serde_json::Value,
    lookback: u64,
) -> Result<u64, LedgerError> {
    let _one_at_a_time = state.ledger.lock().await;
    let head = head(state).await?;
    if let Some(e) = recent(state, &head, id, lookback).await? {
        return Ok(e.seq);
    }
    let entry = seal(
        head.seq + 1,
        crate::migration::now_ms(),
        kind,
        id,
        body,
        &head.hash,
    );
    store(state, &entry).await?;
    Ok(entry.seq)
}

/// Signs the head: appends a checkpoint entry (`id`, `reason`) unless the ledger is empty or its
/// last entry is already a checkpoint (or one with this `id` is among the last few). Returns
/// the checkpoint covering the head, if any.
pub async fn checkpoint(
    state: &ControlState,
    id: &str,
    reason: &str,
) -> Result<Option<u64>, LedgerError> {
    let key = state.ledger_key.as_ref().ok_or(LedgerError::NoKey)?;
    let _one_at_a_time = state.ledger.lock().await;
    let head = head(state).await?;
    if head.seq == 0 {
        return Ok(None);
    }
    if let Some(last) = load(state, head.seq).await?
        && last.kind == kind::CHECKPOINT
    {
        return Ok(Some(last.seq));
    }
    if let Some(e) = recent(state, &head, id, 8).await? {
        return Ok(Some(e.seq));
    }
    let entry = checkpoint_entry(
        key,
        head.seq + 1,
        crate::migration::now_ms(),
        id,
        reason,
        &head.hash,
    );
    store(state, &entry).await?;
    tracing::info!(seq = entry.seq, reason, "ledger checkpoint signed");
    Ok(Some(entry.seq))
}

async fn load(state: &ControlState, seq: u64) -> Result<Option<LedgerEntry>, StoreError> {
    match state.store.load_meta(&entry_key(seq)).await? {
        Some(b) => serde_json::from_slice(&b).map(Some).map_err(corrupt),
        None => Ok(None),
    }
}

/// Every entry, in order.
pub async fn entries(state: &ControlState) -> Result<Vec<LedgerEntry>, StoreError> {
    let head = head(state).await?;
    let mut out = Vec::with_capacity(head.seq as usize);
    for seq in 1..=head.seq {
        out.push(
            load(state, seq)
                .await?
                .ok_or_else(|| corrupt(format!("entry {seq} is missing")))?,
        );
    }
    Ok(out)
}

/// The whole ledger with the public key, after signing the head if entries were appended since
/// the last checkpoint (so what is exported is signed end to end).
pub async fn export(state: &ControlState) -> Result<LedgerExport, LedgerError> {
    let key = state.ledger_key.as_ref().ok_or(LedgerError::NoKey)?;
    let now = crate::migration::now_ms();
    checkpoint(state, &format!("export/{now}"), "export").await?;
    Ok(LedgerExport {
        format: EXPORT_FORMAT.to_string(),
        public_key: key.public().hex(),
        key_id: key.public().id().to_string(),
        entries: entries(state).await?,
    })
}

//! The transfer ledger: an append-only, hash-chained record of every cross-border transfer,
//! purge and policy change, kept in the control plane's store. Each entry's hash is BLAKE3 over
//! the previous hash and the entry's own fields, so an edit, removal or reorder breaks the chain
//! ([`verify`]). Signed checkpoints and `domicile audit` build on this (the security issue).

use crate::state::ControlState;
use bytes::Bytes;
use domicile_store::StoreError;
use serde::{Deserialize, Serialize};

const HEAD: &str = "ledger/head";

fn entry_key(seq: u64) -> String {
    format!("ledger/{seq:010}")
}

/// One ledger entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// 1, 2, 3, … with no gap.
    pub seq: u64,
    pub time_ms: u64,
    /// `transfer`, `purge`, `policy`.
    pub kind: String,
    /// What the entry is about, unique per event (an event written twice after a crash is
    /// recognised by it and not appended again).
    pub id: String,
    pub body: serde_json::Value,
    /// Hex BLAKE3 of the previous entry (64 zeros for the first).
    pub prev: String,
    pub hash: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Head {
    seq: u64,
    hash: String,
}

const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn hash_of(
    seq: u64,
    time_ms: u64,
    kind: &str,
    id: &str,
    body: &serde_json::Value,
    prev: &str,
) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&time_ms.to_le_bytes());
    for part in [kind, id, &body.to_string(), prev] {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part.as_bytes());
    }
    h.finalize().to_hex().to_string()
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

/// Appends an entry (unless the last `lookback` entries already hold one with this `id`) and
/// returns its sequence number. The entry is durable before the head points at it.
pub async fn append(
    state: &ControlState,
    kind: &str,
    id: &str,
    body: serde_json::Value,
    lookback: u64,
) -> Result<u64, StoreError> {
    let _one_at_a_time = state.ledger.lock().await;
    let head = head(state).await?;
    let mut seq = head.seq;
    while seq > 0 && head.seq - seq < lookback {
        if let Some(e) = load(state, seq).await?
            && e.id == id
        {
            return Ok(e.seq);
        }
        seq -= 1;
    }
    let seq = head.seq + 1;
    let time_ms = crate::migration::now_ms();
    let hash = hash_of(seq, time_ms, kind, id, &body, &head.hash);
    let entry = LedgerEntry {
        seq,
        time_ms,
        kind: kind.to_string(),
        id: id.to_string(),
        body,
        prev: head.hash,
        hash: hash.clone(),
    };
    let bytes = serde_json::to_vec(&entry).map_err(corrupt)?;
    state
        .store
        .store_meta(&entry_key(seq), Bytes::from(bytes))
        .await?;
    let next = serde_json::to_vec(&Head { seq, hash }).map_err(corrupt)?;
    state.store.store_meta(HEAD, Bytes::from(next)).await?;
    Ok(seq)
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

/// Checks the chain; the error names the first bad entry.
pub fn verify(entries: &[LedgerEntry]) -> Result<(), String> {
    let mut prev = GENESIS.to_string();
    for (i, e) in entries.iter().enumerate() {
        let expected_seq = i as u64 + 1;
        if e.seq != expected_seq {
            return Err(format!("entry {expected_seq}: found seq {}", e.seq));
        }
        if e.prev != prev {
            return Err(format!("entry {}: does not follow entry {}", e.seq, i));
        }
        if hash_of(e.seq, e.time_ms, &e.kind, &e.id, &e.body, &e.prev) != e.hash {
            return Err(format!(
                "entry {}: its hash does not match its contents",
                e.seq
            ));
        }
        prev.clone_from(&e.hash);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chain(n: u64) -> Vec<LedgerEntry> {
        let mut prev = GENESIS.to_string();
        (1..=n)
            .map(|seq| {
                let body = serde_json::json!({ "records": seq * 10 });
                let hash = hash_of(
                    seq,
                    1000 + seq,
                    "transfer",
                    &format!("t{seq}"),
                    &body,
                    &prev,
                );
                let e = LedgerEntry {
                    seq,
                    time_ms: 1000 + seq,
                    kind: "transfer".into(),
                    id: format!("t{seq}"),
                    body,
                    prev: prev.clone(),
                    hash: hash.clone(),
                };
                prev = hash;
                e
            })
            .collect()
    }

    #[test]
    fn edits_removals_and_reorders_are_detected() {
        let good = chain(4);
        assert_eq!(verify(&good), Ok(()));
        let mut edited = good.clone();
        edited[2].body = serde_json::json!({ "records": 1 });
        assert!(verify(&edited).unwrap_err().starts_with("entry 3:"));
        let mut removed = good.clone();
        removed.remove(1);
        assert!(verify(&removed).unwrap_err().starts_with("entry 2:"));
        let mut reordered = good.clone();
        reordered.swap(1, 2);
        assert!(verify(&reordered).is_err());
    }
}

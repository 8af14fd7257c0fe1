//! The group-commit writer: one thread applies every mutation, so concurrent writers share fsyncs.
//!
//! Callers queue requests; the writer takes everything queued (up to a bound), evaluates each
//! request against the store plus the effects of the requests before it in the group, writes the
//! survivors as one atomic fjall batch with `fdatasync`, and only then answers all of them. One
//! writer also makes LSN assignment and version checks race-free without locks on the read path.
//! If a durable commit fails, the store is poisoned: every later write is refused.

use super::Shared;
use crate::error::StoreError;
use crate::keys::{self, encode_change, encode_value, lsn_key};
use crate::queue::{
    Grouped, KeyState, PurgeTurn, Reply, Request, clone_error, decide_batch, gather,
};
use crate::record::{ChangeOp, ImportOutcome, Lsn, Mutation, VersionedRecord};
use crate::store::MetaPuts;
use domicile_core::{Hlc, Version};
use fjall::{Database, Keyspace, PersistMode};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;

/// How many keys a purge or trim removes per durable batch.
const DELETE_CHUNK: usize = 8_192;

/// An answer held back until the group it belongs to is durable.
enum Pending {
    Write(Reply<Vec<Version>>, Result<Vec<Version>, StoreError>),
    Import(Reply<ImportOutcome>, Result<ImportOutcome, StoreError>),
    Meta(Reply<()>),
}

pub(crate) struct Writer {
    pub db: Database,
    pub records: Keyspace,
    pub changes: Keyspace,
    pub meta: Keyspace,
    pub shared: Arc<Shared>,
    pub hlc: Hlc,
    pub next_lsn: Lsn,
}

struct Group {
    batch: fjall::OwnedWriteBatch,
    /// Set when staging failed half-way: the group is dropped, not committed.
    broken: Option<String>,
    overlay: HashMap<Vec<u8>, (Version, bool)>,
    /// Whether staged keys must go into the overlay (a later request of the group may read them).
    remember: bool,
    pending: Vec<Pending>,
    lsn: Lsn,
}

impl Writer {
    pub fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let queued = gather(first, &mut rx);
            self.process(queued);
        }
        tracing::debug!("store writer stopped: every handle was dropped");
    }

    fn process(&mut self, queued: Vec<Request>) {
        let mut group: Option<Group> = None;
        let total = queued.len();
        for (index, request) in queued.into_iter().enumerate() {
            if self.shared.poisoned.load(Ordering::Acquire) {
                request.fail(StoreError::Poisoned);
                continue;
            }
            match request {
                Request::Purge {
                    ranges,
                    limit,
                    reply,
                } => {
                    self.commit(group.take());
                    let _ = reply.send(self.purge(&ranges, limit));
                }
                Request::Trim { upto, reply } => {
                    self.commit(group.take());
                    let _ = reply.send(self.trim(upto));
                }
                Request::Grouped(grouped) => {
                    let g = group.get_or_insert_with(|| Group {
                        batch: self.db.batch().durability(Some(PersistMode::SyncData)),
                        broken: None,
                        overlay: HashMap::new(),
                        remember: true,
                        pending: Vec::new(),
                        lsn: self.next_lsn,
                    });
                    // The last request of a group needs no overlay: nothing after it reads it.
                    g.remember = index + 1 < total;
                    let pending = self.stage(g, grouped);
                    g.pending.push(pending);
                }
            }
        }
        self.commit(group);
    }

    fn log(&self, g: &mut Group, key: Vec<u8>, version: Version, value: Option<&[u8]>) {
        g.lsn = Lsn(g.lsn.0 + 1);
        let op = if value.is_some() {
            ChangeOp::Put
        } else {
            ChangeOp::Delete
        };
        g.batch.insert(
            &self.changes,
            lsn_key(g.lsn).to_vec(),
            encode_change(op, version, &key),
        );
        if g.remember {
            g.batch
                .insert(&self.records, key.clone(), encode_value(version, value));
            g.overlay.insert(key, (version, value.is_some()));
        } else {
            g.batch
                .insert(&self.records, key, encode_value(version, value));
        }
    }

    fn stage(&mut self, g: &mut Group, request: Grouped) -> Pending {
        match request {
            Grouped::Write { batch, meta, reply } => {
                let versions = self.stage_write(g, batch);
                // A refused batch stages nothing, its metadata included.
                if versions.is_ok() {
                    self.stage_meta(g, meta);
                }
                Pending::Write(reply, versions)
            }
            Grouped::Import {
                records,
                meta,
                reply,
            } => {
                let outcome = self.stage_import(g, records);
                match &outcome {
                    Ok(_) => self.stage_meta(g, meta),
                    Err(e) => g.broken = Some(e.to_string()),
                }
                Pending::Import(reply, outcome)
            }
            Grouped::Meta { name, value, reply } => {
                match value {
                    Some(value) => g
                        .batch
                        .insert(&self.meta, name.into_bytes(), value.to_vec()),
                    None => g.batch.remove(&self.meta, name.into_bytes()),
                }
                Pending::Meta(reply)
            }
        }
    }

    fn stage_meta(&self, g: &mut Group, meta: MetaPuts) {
        for (name, value) in meta {
            g.batch
                .insert(&self.meta, name.into_bytes(), value.to_vec());
        }
    }

    /// Checks a client batch against current state; stages it only if every mutation passes.
    fn stage_write(
        &mut self,
        g: &mut Group,
        batch: Vec<Mutation>,
    ) -> Result<Vec<Version>, StoreError> {
        let (records, overlay) = (&self.records, &g.overlay);
        let decided = decide_batch(batch, &mut self.hlc, |key| {
            stored_state(records, overlay, key)
        })?;
        let versions = decided.iter().map(|d| d.version).collect();
        for d in decided {
            self.log(g, d.key, d.version, d.value.as_deref());
        }
        Ok(versions)
    }

    /// Stages the records that win against what is stored; the rest are counted as skipped.
    /// Records go straight into the group: an engine error while reading abandons the whole
    /// group (see `commit`), so an import is still all or nothing.
    fn stage_import(
        &mut self,
        g: &mut Group,
        records: Vec<VersionedRecord>,
    ) -> Result<ImportOutcome, StoreError> {
        let keys: Vec<Vec<u8>> = records
            .iter()
            .map(|r| keys::record_key(&r.address))
            .collect();
        // A snapshot chunk arrives in key order: its stored versions come from one range scan.
        let sorted = keys.windows(2).all(|w| w[0] < w[1]);
        let stored = if sorted {
            self.stored_versions_sorted(&keys)?
        } else {
            keys.iter()
                .map(|k| self.stored_version(k))
                .collect::<Result<_, _>>()?
        };
        // Unsorted batches may repeat a key: later copies must see earlier ones.
        let mut local: HashMap<Vec<u8>, Version> = HashMap::new();
        let mut outcome = ImportOutcome::default();
        for ((r, key), stored) in records.into_iter().zip(keys).zip(stored) {
            let current = g
                .overlay
                .get(&key)
                .map(|(v, _)| *v)
                .or_else(|| local.get(&key).copied())
                .or(stored);
            if current.is_some_and(|v| v >= r.version) {
                outcome.skipped += 1;
                continue;
            }
            if !sorted {
                local.insert(key.clone(), r.version);
            }
            self.hlc.observe(r.version);
            self.log(g, key, r.version, r.value.as_deref());
            outcome.applied += 1;
        }
        Ok(outcome)
    }

    fn stored_version(&self, key: &[u8]) -> Result<Option<Version>, StoreError> {
        match self.records.get(key)? {
            Some(v) => Ok(Some(keys::decode_value(&v)?.0)),
            None => Ok(None),
        }
    }

    /// Stored versions of strictly increasing `keys`, by one merge over their key range; falls
    /// back to point reads when the range holds many other keys (a sparse batch).
    fn stored_versions_sorted(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Version>>, StoreError> {
        let mut out = vec![None; keys.len()];
        let (Some(first), Some(last)) = (keys.first(), keys.last()) else {
            return Ok(out);
        };
        let budget = keys.len() * 2 + 64;
        let mut i = 0;
        for (visited, guard) in self.records.range(first.clone()..=last.clone()).enumerate() {
            if visited > budget {
                for (slot, key) in out.iter_mut().zip(keys).skip(i) {
                    *slot = self.stored_version(key)?;
                }
                return Ok(out);
            }
            let (k, v) = guard.into_inner()?;
            while i < keys.len() && keys[i].as_slice() < &k[..] {
                i += 1;
            }
            if i == keys.len() {
                break;
            }
            if keys[i].as_slice() == &k[..] {
                out[i] = Some(keys::decode_value(&v)?.0);
                i += 1;
            }
        }
        Ok(out)
    }

    fn commit(&mut self, group: Option<Group>) {
        let Some(g) = group else { return };
        let result = match g.broken {
            // Nothing of a broken group reaches the engine; every request in it fails.
            Some(reason) => Err(StoreError::Engine(format!("group abandoned: {reason}"))),
            None => self.commit_batch(g.batch, g.lsn),
        };
        if result.is_ok() {
            self.next_lsn = g.lsn;
        }
        for p in g.pending {
            let _ = match (p, &result) {
                (Pending::Write(reply, r), Ok(())) => reply.send(r).is_ok(),
                (Pending::Import(reply, o), Ok(())) => reply.send(o).is_ok(),
                (Pending::Meta(reply), Ok(())) => reply.send(Ok(())).is_ok(),
                (Pending::Write(reply, _), Err(e)) => reply.send(Err(clone_error(e))).is_ok(),
                (Pending::Import(reply, _), Err(e)) => reply.send(Err(clone_error(e))).is_ok(),
                (Pending::Meta(reply), Err(e)) => reply.send(Err(clone_error(e))).is_ok(),
            };
        }
    }

    /// Commits one durable batch and publishes its LSN, or poisons the store.
    fn commit_batch(&self, batch: fjall::OwnedWriteBatch, lsn: Lsn) -> Result<(), StoreError> {
        let mut committed = self
            .shared
            .committed
            .lock()
            .map_err(|_| StoreError::Poisoned)?;
        let result = if self.shared.fail_next_commit.swap(false, Ordering::AcqRel) {
            Err(StoreError::Engine("injected fsync failure".into()))
        } else {
            batch.commit().map_err(StoreError::from)
        };
        match result {
            Ok(()) => {
                *committed = lsn;
                drop(committed);
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared.lsn_watch.send_replace(lsn);
                Ok(())
            }
            Err(e) => {
                tracing::error!(error = %e, "durable commit failed; poisoning the store");
                self.shared.poisoned.store(true, Ordering::Release);
                Err(e)
            }
        }
    }

    fn delete_keys(&self, ks: &Keyspace, keys: Vec<Vec<u8>>) -> Result<(), StoreError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for k in keys {
            batch.remove(ks, k);
        }
        let lsn = *self
            .shared
            .committed
            .lock()
            .map_err(|_| StoreError::Poisoned)?;
        self.commit_batch(batch, lsn)
    }

    /// Deletes up to `limit` keys of `ks` in `from..end`, in durable chunks, each chunk starting
    /// just past the last key the one before removed (not at the range's start, where the
    /// earlier chunks' tombstones lie until compaction). Returns how many it removed and, if it
    /// stopped at `limit`, where to go on.
    fn delete_range(
        &self,
        ks: &Keyspace,
        mut from: Vec<u8>,
        end: &[u8],
        limit: usize,
    ) -> Result<(usize, Option<Vec<u8>>), StoreError> {
        let mut removed = 0;
        loop {
            let left = limit - removed;
            if left == 0 {
                return Ok((removed, Some(from)));
            }
            let chunk: Vec<Vec<u8>> = ks
                .range(from.clone()..end.to_vec())
                .take(DELETE_CHUNK.min(left))
                .map(|g| g.key().map(|k| k.to_vec()))
                .collect::<Result<_, _>>()?;
            let Some(last) = chunk.last() else {
                return Ok((removed, None));
            };
            from = successor(last);
            removed += chunk.len();
            self.delete_keys(ks, chunk)?;
        }
    }

    /// Removes up to `limit` records of `ranges`; says what is left.
    fn purge(&self, ranges: &[(Vec<u8>, Vec<u8>)], limit: usize) -> Result<PurgeTurn, StoreError> {
        let mut removed = 0;
        for (i, (start, end)) in ranges.iter().enumerate() {
            let (n, stopped_at) =
                self.delete_range(&self.records, start.clone(), end, limit - removed)?;
            removed += n;
            if let Some(from) = stopped_at {
                let mut rest = vec![(from, end.clone())];
                rest.extend_from_slice(&ranges[i + 1..]);
                return Ok(PurgeTurn {
                    removed: removed as u64,
                    rest,
                });
            }
        }
        Ok(PurgeTurn {
            removed: removed as u64,
            rest: Vec::new(),
        })
    }

    fn trim(&self, upto: Lsn) -> Result<u64, StoreError> {
        let upto = upto.min(self.next_lsn);
        // Up to and including `upto`'s entry: the range ends at the key just past it.
        let end = successor(&lsn_key(upto));
        let (removed, _) = self.delete_range(&self.changes, Vec::new(), &end, usize::MAX)?;
        // Remember the floor so that the LSN never goes back, even with an empty log.
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        batch.insert(
            &self.meta,
            super::LSN_FLOOR.as_bytes().to_vec(),
            lsn_key(upto).to_vec(),
        );
        self.commit_batch(batch, self.next_lsn)?;
        Ok(removed as u64)
    }
}

/// The least key after `key` in byte order.
fn successor(key: &[u8]) -> Vec<u8> {
    let mut next = Vec::with_capacity(key.len() + 1);
    next.extend_from_slice(key);
    next.push(0);
    next
}

/// A key's state as a group sees it: staged earlier in the group, or stored.
fn stored_state(
    records: &Keyspace,
    overlay: &HashMap<Vec<u8>, KeyState>,
    key: &[u8],
) -> Result<Option<KeyState>, StoreError> {
    if let Some(s) = overlay.get(key) {
        return Ok(Some(*s));
    }
    match records.get(key)? {
        Some(v) => {
            let (version, value) = keys::decode_value(&v)?;
            Ok(Some((version, value.is_some())))
        }
        None => Ok(None),
    }
}

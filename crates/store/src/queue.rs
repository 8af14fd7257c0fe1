//! The request queue both engines' single writers work from: what callers queue, how a writer
//! gathers a group from it, and the rules a client write is checked by. The engines differ in
//! how a group reaches disk, not in what a group is or what a write may do.

use crate::error::StoreError;
use crate::record::{ImportOutcome, Lsn, Mutation, MutationOp, Precondition, VersionedRecord};
use bytes::Bytes;
use domicile_core::{BucketCount, Hlc, Market, Scope, ServiceName, UserId, Version};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// How many records one group may carry before it is committed (bounds memory and latency).
pub(crate) const MAX_GROUP_RECORDS: usize = 16_384;
/// Entries a purge removes per turn of the writer.
pub(crate) const PURGE_TURN: usize = 4_096;

/// One turn of a purge: what it removed, and the key ranges still to purge (none: done).
#[derive(Debug)]
pub(crate) struct PurgeTurn {
    pub removed: u64,
    /// Start from where this turn stopped: a turn that began at the range's start again would
    /// walk past every tombstone the earlier turns left (until compaction), and a purge of n
    /// records would read n²/(2·PURGE_TURN) of them — minutes at a million records.
    pub rest: Vec<(Vec<u8>, Vec<u8>)>,
}

/// How many requests may wait for the writer before callers wait to queue.
pub(crate) const QUEUE_DEPTH: usize = 4096;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, StoreError>>;

pub(crate) enum Request {
    /// Requests that share a group (and its durable commit).
    Grouped(Grouped),
    /// Purges and trims run alone, between groups. A purge removes stored entries whose
    /// record key falls in one of its half-open ranges, unlogged: at least `limit` of them if
    /// there are that many (an engine may remove more in one turn), and says how many and
    /// what is left to purge.
    Purge {
        ranges: Vec<(Vec<u8>, Vec<u8>)>,
        limit: usize,
        reply: Reply<PurgeTurn>,
    },
    Trim {
        upto: Lsn,
        reply: Reply<u64>,
    },
}

pub(crate) enum Grouped {
    Write {
        batch: Vec<Mutation>,
        reply: Reply<Vec<Version>>,
    },
    Import {
        records: Vec<VersionedRecord>,
        reply: Reply<ImportOutcome>,
    },
    /// Stores (`Some`) or deletes (`None`) a metadata value.
    Meta {
        name: String,
        value: Option<Bytes>,
        reply: Reply<()>,
    },
}

impl Request {
    fn weight(&self) -> usize {
        match self {
            Request::Grouped(Grouped::Write { batch, .. }) => batch.len(),
            Request::Grouped(Grouped::Import { records, .. }) => records.len(),
            _ => 1,
        }
    }

    pub(crate) fn fail(self, err: StoreError) {
        // A caller that went away no longer needs its answer.
        let _ = match self {
            Request::Grouped(g) => {
                g.fail(err);
                true
            }
            Request::Purge { reply, .. } => reply.send(Err(err)).is_ok(),
            Request::Trim { reply, .. } => reply.send(Err(err)).is_ok(),
        };
    }
}

impl Grouped {
    pub(crate) fn fail(self, err: StoreError) {
        let _ = match self {
            Grouped::Write { reply, .. } => reply.send(Err(err)).is_ok(),
            Grouped::Import { reply, .. } => reply.send(Err(err)).is_ok(),
            Grouped::Meta { reply, .. } => reply.send(Err(err)).is_ok(),
        };
    }
}

/// `first` and everything queued behind it, up to [`MAX_GROUP_RECORDS`] records.
pub(crate) fn gather(first: Request, rx: &mut mpsc::Receiver<Request>) -> Vec<Request> {
    let mut weight = first.weight();
    let mut queued = vec![first];
    while weight < MAX_GROUP_RECORDS {
        match rx.try_recv() {
            Ok(r) => {
                weight += r.weight();
                queued.push(r);
            }
            Err(_) => break,
        }
    }
    queued
}

/// A key's state as a writer sees it: (version, live).
pub(crate) type KeyState = (Version, bool);

/// Checks one client mutation against its key's state: the precondition, and that a delete
/// names a live record. `index` is the mutation's place in its batch, for the error.
pub(crate) fn check_mutation(
    index: usize,
    m: &Mutation,
    state: Option<KeyState>,
) -> Result<(), StoreError> {
    let live = state.filter(|(_, live)| *live).map(|(v, _)| v);
    let ok = match m.precondition {
        Precondition::None => true,
        Precondition::Absent => live.is_none(),
        Precondition::Exists => live.is_some(),
        Precondition::Version(v) => live == Some(v),
    };
    if !ok {
        return Err(StoreError::PreconditionFailed {
            index,
            current: live,
        });
    }
    if matches!(m.op, MutationOp::Delete) && live.is_none() {
        return Err(StoreError::NotFound { index });
    }
    Ok(())
}

/// One mutation of a decided batch: its record key, new version and value (`None`: delete).
pub(crate) struct Decided {
    pub key: Vec<u8>,
    pub version: Version,
    pub value: Option<Bytes>,
}

/// Decides a client batch, all or nothing: each mutation is checked against its key's state
/// (as `stored` reads it, or as an earlier mutation of the batch left it) and gets a new
/// version from `hlc`, above every version its key has had even if the wall clock went back or
/// a copy came from the future. Both engines' writers stage exactly what this returns.
pub(crate) fn decide_batch(
    batch: Vec<Mutation>,
    hlc: &mut Hlc,
    mut stored: impl FnMut(&[u8]) -> Result<Option<KeyState>, StoreError>,
) -> Result<Vec<Decided>, StoreError> {
    let mut local: HashMap<Vec<u8>, KeyState> = HashMap::new();
    let mut decided = Vec::with_capacity(batch.len());
    let now = now_millis();
    for (index, m) in batch.into_iter().enumerate() {
        let key = crate::keys::record_key(&m.address);
        let state = match local.get(&key) {
            Some(s) => Some(*s),
            None => stored(&key)?,
        };
        check_mutation(index, &m, state)?;
        if let Some((v, _)) = state {
            hlc.observe(v);
        }
        let version = hlc.next(now);
        let value = match m.op {
            MutationOp::Put(b) => Some(b),
            MutationOp::Delete => None,
        };
        local.insert(key.clone(), (version, value.is_some()));
        decided.push(Decided {
            key,
            version,
            value,
        });
    }
    Ok(decided)
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The same failure for every request of a group (errors are not `Clone`).
pub(crate) fn clone_error(e: &StoreError) -> StoreError {
    match e {
        StoreError::Poisoned => StoreError::Poisoned,
        other => StoreError::Engine(other.to_string()),
    }
}

/// A store handle's side of the queue: queues a request and waits for its answer.
pub(crate) struct Submit<'a> {
    pub tx: Option<&'a mpsc::Sender<Request>>,
    pub poisoned: &'a AtomicBool,
}

impl Submit<'_> {
    async fn send<T>(&self, make: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(StoreError::Poisoned);
        }
        let (reply, rx) = oneshot::channel();
        let tx = self.tx.ok_or(StoreError::Closed)?;
        tx.send(make(reply)).await.map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    pub async fn write(&self, batch: Vec<Mutation>) -> Result<Vec<Version>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|reply| Request::Grouped(Grouped::Write { batch, reply }))
            .await
    }

    pub async fn import(&self, records: Vec<VersionedRecord>) -> Result<ImportOutcome, StoreError> {
        if records.is_empty() {
            return Ok(ImportOutcome::default());
        }
        self.send(|reply| Request::Grouped(Grouped::Import { records, reply }))
            .await
    }

    pub async fn store_meta(&self, name: &str, value: Option<Bytes>) -> Result<(), StoreError> {
        let name = name.to_string();
        self.send(|reply| Request::Grouped(Grouped::Meta { name, value, reply }))
            .await
    }

    pub async fn purge(&self, scope: &Scope) -> Result<u64, StoreError> {
        let ranges = scope
            .buckets
            .ranges()
            .iter()
            .map(|r| crate::keys::bucket_range_bounds(&scope.service, scope.market, *r))
            .collect();
        self.purge_ranges(ranges).await
    }

    /// A purge in turns of [`PURGE_TURN`] entries, so that the region's writes go on between
    /// them (a 60k-record purge run in one turn held a busy region's writes for 5 s).
    async fn purge_ranges(&self, mut ranges: Vec<(Vec<u8>, Vec<u8>)>) -> Result<u64, StoreError> {
        let mut removed = 0;
        while !ranges.is_empty() {
            let turn = self
                .send(|reply| Request::Purge {
                    ranges,
                    limit: PURGE_TURN,
                    reply,
                })
                .await?;
            removed += turn.removed;
            ranges = turn.rest;
        }
        Ok(removed)
    }

    pub async fn purge_user(
        &self,
        service: &ServiceName,
        market: Market,
        user: &UserId,
        buckets: BucketCount,
    ) -> Result<u64, StoreError> {
        let ranges = vec![crate::keys::user_bounds(service, market, user, buckets)];
        self.purge_ranges(ranges).await
    }

    pub async fn trim(&self, upto: Lsn) -> Result<u64, StoreError> {
        self.send(|reply| Request::Trim { upto, reply }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{CollectionAddress, RecordAddress};
    use domicile_core::{BucketCount, CollectionName, Market, RecordKey, ServiceName, UserId};

    fn mutation(op: MutationOp, precondition: Precondition) -> Mutation {
        let address: RecordAddress = CollectionAddress::new(
            ServiceName::new("ecommerce").unwrap(),
            Market::new("IN").unwrap(),
            UserId::new("u").unwrap(),
            CollectionName::new("orders").unwrap(),
            BucketCount::DEFAULT,
        )
        .record(RecordKey::new("k").unwrap());
        Mutation {
            address,
            op,
            precondition,
        }
    }

    #[test]
    fn writes_are_checked_against_the_live_version_only() {
        let put = |p| mutation(MutationOp::Put(Bytes::from_static(b"v")), p);
        let (v, tombstone) = (Some((Version(5), true)), Some((Version(6), false)));
        assert!(check_mutation(0, &put(Precondition::Absent), tombstone).is_ok());
        assert!(check_mutation(0, &put(Precondition::Absent), v).is_err());
        assert!(check_mutation(0, &put(Precondition::Exists), tombstone).is_err());
        assert!(check_mutation(0, &put(Precondition::Version(Version(5))), v).is_ok());
        assert!(matches!(
            check_mutation(3, &put(Precondition::Version(Version(4))), v),
            Err(StoreError::PreconditionFailed {
                index: 3,
                current: Some(Version(5))
            })
        ));
        let delete = mutation(MutationOp::Delete, Precondition::None);
        assert!(matches!(
            check_mutation(1, &delete, tombstone),
            Err(StoreError::NotFound { index: 1 })
        ));
        assert!(check_mutation(1, &delete, v).is_ok());
    }
}

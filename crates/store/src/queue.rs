//! The request queue both engines' single writers work from: what callers queue, how a writer
//! gathers a group from it, and the rules a client write is checked by. The engines differ in
//! how a group reaches disk, not in what a group is or what a write may do.

use crate::error::StoreError;
use crate::record::{ImportOutcome, Lsn, Mutation, MutationOp, Precondition, VersionedRecord};
use crate::store::MetaPuts;
use bytes::Bytes;
use domicile_core::{BucketCount, Hlc, Market, Scope, ServiceName, UserId, Version};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{Semaphore, mpsc, oneshot};

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
        meta: MetaPuts,
        reply: Reply<Vec<Version>>,
    },
    Import {
        records: Vec<VersionedRecord>,
        meta: MetaPuts,
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

/// An import at least this large is bulk: a copy's chunk, not a drain's last changes.
pub(crate) const BULK_IMPORT_RECORDS: usize = 1024;
/// Bulk imports in a writer's queue at once; the rest wait their turn (in arrival order)
/// before it. The writer takes its queue in order, so every chunk queued is a commit that a
/// small write behind it waits for: with seven copies into one region, a cutover's fenced
/// drain of a few records waited 1.2 s behind their chunks (`demo --users 1000000`). Two keep
/// a copy's own pipeline (one chunk staged while the other commits).
pub(crate) const BULK_IMPORTS_QUEUED: usize = 2;

/// Turns for bulk imports in one writer's queue (see [`BULK_IMPORTS_QUEUED`]). Tokio's
/// semaphore is fair: turns go in arrival order.
pub(crate) fn bulk_import_turns() -> Semaphore {
    Semaphore::new(BULK_IMPORTS_QUEUED)
}

/// A store handle's side of the queue: queues a request and waits for its answer.
pub(crate) struct Submit<'a> {
    pub tx: Option<&'a mpsc::Sender<Request>>,
    pub poisoned: &'a AtomicBool,
    /// From [`bulk_import_turns`]: one per store, shared by its handles.
    pub bulk_imports: &'a Semaphore,
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

    pub async fn write(
        &self,
        batch: Vec<Mutation>,
        meta: MetaPuts,
    ) -> Result<Vec<Version>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        self.send(|reply| Request::Grouped(Grouped::Write { batch, meta, reply }))
            .await
    }

    /// Imports `records`; a bulk import first waits for its turn in the queue.
    pub async fn import(
        &self,
        records: Vec<VersionedRecord>,
        meta: MetaPuts,
    ) -> Result<ImportOutcome, StoreError> {
        if records.is_empty() {
            return Ok(ImportOutcome::default());
        }
        let _turn = if records.len() >= BULK_IMPORT_RECORDS {
            Some(
                self.bulk_imports
                    .acquire()
                    .await
                    .map_err(|_| StoreError::Closed)?,
            )
        } else {
            None
        };
        self.send(|reply| {
            Request::Grouped(Grouped::Import {
                records,
                meta,
                reply,
            })
        })
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
    use std::sync::Arc;

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

    /// `n` imported records of one user.
    fn records(n: usize) -> Vec<VersionedRecord> {
        let address = mutation(MutationOp::Delete, Precondition::None).address;
        (0..n)
            .map(|i| VersionedRecord {
                address: address
                    .collection
                    .record(RecordKey::new(format!("k{i}")).unwrap()),
                version: Version(i as u64 + 1),
                value: Some(Bytes::from_static(b"v")),
            })
            .collect()
    }

    /// How many records the import `request` carries.
    fn size(request: &Request) -> usize {
        match request {
            Request::Grouped(Grouped::Import { records, .. }) => records.len(),
            _ => panic!("not an import"),
        }
    }

    /// Answers the import `request` as the writer would.
    fn answer(request: Request) {
        if let Request::Grouped(Grouped::Import { reply, .. }) = request {
            let _ = reply.send(Ok(ImportOutcome::default()));
        }
    }

    #[tokio::test]
    async fn at_most_two_bulk_imports_queue_and_small_imports_pass_the_rest() {
        let (tx, mut rx) = mpsc::channel(16);
        let poisoned = Arc::new(AtomicBool::new(false));
        let turns = Arc::new(bulk_import_turns());
        let import = |n: usize| {
            let (tx, poisoned, turns) = (tx.clone(), poisoned.clone(), turns.clone());
            tokio::spawn(async move {
                let submit = Submit {
                    tx: Some(&tx),
                    poisoned: &poisoned,
                    bulk_imports: &turns,
                };
                submit.import(records(n), Vec::new()).await
            })
        };
        // Spawned in this order on a single-threaded runtime, so polled in this order: the
        // third bulk import asks for its turn before the small import is queued.
        let bulk = BULK_IMPORT_RECORDS;
        let first = import(bulk);
        let second = import(bulk + 1);
        let third = import(bulk + 2);
        let small = import(3);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(rx.recv().await.unwrap());
        }
        assert_eq!(
            held.iter().map(size).collect::<Vec<_>>(),
            [bulk, bulk + 1, 3]
        );
        answer(held.pop().unwrap());
        assert!(small.await.unwrap().is_ok());
        assert!(rx.try_recv().is_err(), "a third bulk import is queued");
        // Answering the first bulk import gives the third its turn.
        answer(held.remove(0));
        assert!(first.await.unwrap().is_ok());
        let next = rx.recv().await.unwrap();
        assert_eq!(size(&next), bulk + 2);
        answer(next);
        answer(held.remove(0));
        assert!(third.await.unwrap().is_ok());
        assert!(second.await.unwrap().is_ok());
    }
}

//! The request queue both engines' single writers work from: what callers queue, how a writer
//! gathers a group from it, and the rules a client write is checked by. The engines differ in
//! how a group reaches disk, not in what a group is or what a write may do.

use crate::error::StoreError;
use crate::record::{ImportOutcome, Lsn, Mutation, MutationOp, Precondition, VersionedRecord};
use bytes::Bytes;
use domicile_core::{BucketCount, Hlc, Market, Scope, ServiceName, UserId, Version};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot};

/// How many records one group may carry before it is committed (bounds memory and latency).
pub(crate) const MAX_GROUP_RECORDS: usize = 16_384;
/// Entries a purge removes per turn of the writer.
pub(crate) const PURGE_TURN: usize = 4_096;

/// One turn of a purge: what it removed, and the key ranges still to purge (none: done).
#[derive(Debug, Default)]
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
            Request::Grouped(Grouped::Meta { .. }) => 1,
            // A purge's turn holds the writer for thousands of deletes: bulk.
            Request::Purge { limit, .. } => *limit,
            Request::Trim { .. } => 1,
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

/// Requests of at most this many records are interactive: a user's write, an ownership change,
/// a cutover's drain. Anything bigger (a copy's chunk, a purge's turn) is bulk.
pub(crate) const INTERACTIVE_RECORDS: usize = 1_024;

/// What a writer has received and not yet processed. Requests that share the queue are
/// concurrent (each caller waits for its answer before it sends again), so a writer may take
/// them in any order; it takes interactive ones first. Without that, a cutover's last drain and
/// the target's `own` waited behind every copy chunk queued before them (seconds at 1M users,
/// with the range fenced), and so did users' writes.
#[derive(Default)]
pub(crate) struct Backlog {
    waiting: VecDeque<Request>,
}

impl Backlog {
    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn push(&mut self, request: Request) {
        self.waiting.push_back(request);
    }

    /// The next group: whatever has arrived is taken in (up to [`QUEUE_DEPTH`] waiting), then
    /// the interactive requests in arrival order, then bulk ones in arrival order, up to
    /// [`MAX_GROUP_RECORDS`] records (at least one request). The rest waits for the next group.
    pub fn next_group(&mut self, rx: &mut mpsc::Receiver<Request>) -> Vec<Request> {
        while self.waiting.len() < QUEUE_DEPTH {
            match rx.try_recv() {
                Ok(r) => self.waiting.push_back(r),
                Err(_) => break,
            }
        }
        let (mut group, mut weight) = (Vec::new(), 0);
        let mut later = VecDeque::with_capacity(self.waiting.len());
        for interactive in [true, false] {
            for r in std::mem::take(&mut self.waiting) {
                let fits = group.is_empty() || weight < MAX_GROUP_RECORDS;
                if (r.weight() <= INTERACTIVE_RECORDS) == interactive && fits {
                    weight += r.weight();
                    group.push(r);
                } else {
                    later.push_back(r);
                }
            }
            std::mem::swap(&mut self.waiting, &mut later);
        }
        group
    }
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
    async fn purge_ranges(&self, ranges: Vec<(Vec<u8>, Vec<u8>)>) -> Result<u64, StoreError> {
        let mut removed = 0;
        let mut ranges = ranges;
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

    /// A write of `records` mutations, named by its first mutation's precondition version.
    fn write_of(records: usize, name: u64) -> Request {
        let (reply, _) = oneshot::channel();
        let m = mutation(MutationOp::Delete, Precondition::Version(Version(name)));
        Request::Grouped(Grouped::Write {
            batch: vec![m; records],
            reply,
        })
    }

    fn names(group: &[Request]) -> Vec<u64> {
        group
            .iter()
            .map(|r| match r {
                Request::Grouped(Grouped::Write { batch, .. }) => match batch[0].precondition {
                    Precondition::Version(v) => v.0,
                    _ => unreachable!(),
                },
                Request::Grouped(Grouped::Meta { .. }) => 0,
                _ => unreachable!(),
            })
            .collect()
    }

    #[test]
    fn a_group_takes_interactive_requests_before_bulk_ones_that_arrived_first() {
        let (tx, mut rx) = mpsc::channel(QUEUE_DEPTH);
        // Copy chunks queued first, then a user's write and an ownership change.
        for (records, name) in [(10_000, 1), (10_000, 2), (10_000, 3), (1, 4)] {
            tx.try_send(write_of(records, name)).unwrap();
        }
        let (reply, _) = oneshot::channel();
        tx.try_send(Request::Grouped(Grouped::Meta {
            name: "ownership".into(),
            value: None,
            reply,
        }))
        .unwrap();
        let mut backlog = Backlog::default();
        // Interactive first, then bulk in arrival order up to the group's weight.
        assert_eq!(names(&backlog.next_group(&mut rx)), [4, 0, 1, 2]);
        tx.try_send(write_of(1, 5)).unwrap();
        tx.try_send(write_of(20_000, 6)).unwrap();
        assert_eq!(names(&backlog.next_group(&mut rx)), [5, 3, 6]);
        assert!(backlog.is_empty());
        // A request heavier than a whole group still goes, alone.
        tx.try_send(write_of(20_000, 7)).unwrap();
        tx.try_send(write_of(20_000, 8)).unwrap();
        assert_eq!(names(&backlog.next_group(&mut rx)), [7]);
        assert_eq!(names(&backlog.next_group(&mut rx)), [8]);
        assert!(backlog.is_empty());
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

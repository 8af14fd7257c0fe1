//! The `RegionStore` trait: the contract every engine meets (and the conformance suite checks).

use crate::digest::BucketDigest;
use crate::error::StoreError;
use crate::record::{
    Change, CollectionAddress, ImportOutcome, ListPage, Lsn, Mutation, Record, RecordAddress,
    VersionedRecord,
};
use async_trait::async_trait;
use bytes::Bytes;
use domicile_core::{BucketCount, Market, RecordKey, Scope, ServiceName, UserId, Version};
use futures::stream::BoxStream;
use std::time::Duration;

/// Metadata values (name, value) stored in the same atomic commit as a write or an import, and
/// only if it applies: a new data key lands with the first values it seals, in one commit.
pub type MetaPuts = Vec<(String, Bytes)>;

/// A snapshot chunk is closed once its values reach this many bytes (it may pass it by one
/// record): with large records a chunk of 1,024 would hold a GiB, and a scan keeps a few chunks
/// queued ahead of its reader.
pub const SNAPSHOT_CHUNK_BYTES: usize = 2 << 20;

/// The bytes a record weighs in a snapshot chunk: its value, and a little for its address.
pub fn chunk_weight(r: &VersionedRecord) -> usize {
    r.value.as_ref().map_or(0, |v| v.len()) + 64
}

/// Gathers a snapshot's records into chunks of at most `max_records`, closed early once their
/// weight reaches [`SNAPSHOT_CHUNK_BYTES`]: every engine's scan chunks the same way.
pub(crate) struct SnapshotChunker {
    max_records: usize,
    chunk: Vec<VersionedRecord>,
    weight: usize,
}

impl SnapshotChunker {
    pub(crate) fn new(max_records: usize) -> Self {
        Self {
            max_records,
            chunk: Vec::new(),
            weight: 0,
        }
    }

    /// Adds a record; returns the chunk it closed, if it closed one.
    pub(crate) fn push(&mut self, r: VersionedRecord) -> Option<Vec<VersionedRecord>> {
        self.weight += chunk_weight(&r);
        self.chunk.push(r);
        if self.chunk.len() < self.max_records && self.weight < SNAPSHOT_CHUNK_BYTES {
            return None;
        }
        self.weight = 0;
        Some(std::mem::take(&mut self.chunk))
    }

    /// The last, partial chunk, if any.
    pub(crate) fn finish(self) -> Option<Vec<VersionedRecord>> {
        (!self.chunk.is_empty()).then_some(self.chunk)
    }
}

/// A consistent snapshot of a scope: every record (tombstones included) as of `lsn`, streamed
/// in key order in chunks of at most [`SNAPSHOT_CHUNK_BYTES`] (and one record). Changes after
/// `lsn` come from [`RegionStore::changes`].
pub struct SnapshotScan {
    pub lsn: Lsn,
    pub chunks: BoxStream<'static, Result<Vec<VersionedRecord>, StoreError>>,
}

/// A region's store. Every mutation is durable when the call returns, and appends a change-log
/// entry atomically with itself.
#[async_trait]
pub trait RegionStore: Send + Sync + 'static {
    /// The engine's name, as `bench` and the logs report it.
    fn engine(&self) -> &'static str;

    /// Applies a batch of client mutations atomically, assigning each a new version from the
    /// store's hybrid logical clock. Returns the versions in batch order. A failed precondition or
    /// a delete of a missing record fails the whole batch and writes nothing.
    async fn write(&self, batch: Vec<Mutation>) -> Result<Vec<Version>, StoreError> {
        self.write_with_meta(batch, MetaPuts::new()).await
    }

    /// [`RegionStore::write`], storing `meta` in the same commit if (and only if) the batch
    /// applies.
    async fn write_with_meta(
        &self,
        batch: Vec<Mutation>,
        meta: MetaPuts,
    ) -> Result<Vec<Version>, StoreError>;

    /// The live record at `address`, if any.
    async fn get(&self, address: &RecordAddress) -> Result<Option<Record>, StoreError>;

    /// Live records of one collection in key order, strictly after `after`, at most `limit`.
    async fn list(
        &self,
        collection: &CollectionAddress,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<ListPage, StoreError>;

    /// Imports versioned records: each is applied only if its version is higher than the stored
    /// one (tombstones included); an equal or lower version is a no-op. Replaying any set of
    /// imports in any order converges to the same state.
    async fn import(&self, records: Vec<VersionedRecord>) -> Result<ImportOutcome, StoreError> {
        self.import_with_meta(records, MetaPuts::new()).await
    }

    /// [`RegionStore::import`], storing `meta` in the same commit.
    async fn import_with_meta(
        &self,
        records: Vec<VersionedRecord>,
        meta: MetaPuts,
    ) -> Result<ImportOutcome, StoreError>;

    /// A consistent snapshot of `scope` with the LSN it is consistent at.
    async fn snapshot(&self, scope: &Scope) -> Result<SnapshotScan, StoreError>;

    /// Change-log entries after `after` that fall in `scope`, in LSN order, at most `limit`,
    /// each with the record's current state. Returns the entries and the LSN read up to (the
    /// position to continue from, which moves past entries outside the scope too).
    async fn changes(
        &self,
        after: Lsn,
        scope: &Scope,
        limit: usize,
    ) -> Result<(Vec<Change>, Lsn), StoreError>;

    /// The last LSN made durable.
    fn last_lsn(&self) -> Lsn;

    /// Waits until the log passes `after` or `timeout` elapses; returns the last LSN.
    async fn wait_for_changes(&self, after: Lsn, timeout: Duration) -> Lsn;

    /// One digest per bucket of `scope` (empty buckets included), over live records.
    async fn digest(&self, scope: &Scope) -> Result<Vec<BucketDigest>, StoreError>;

    /// Removes every record and tombstone of `scope`. Not logged: a purge is not a mutation
    /// to replicate. Returns the number of stored entries removed.
    async fn purge(&self, scope: &Scope) -> Result<u64, StoreError>;

    /// Removes every record and tombstone of one user in one service and market (the user's
    /// bucket). Not logged, like `purge`: the region node uses it for copies it does not own
    /// (erasure), whose owner logs the deletes that reach every stream. Returns the number of
    /// stored entries removed.
    async fn purge_user(
        &self,
        service: &ServiceName,
        market: Market,
        user: &UserId,
        buckets: BucketCount,
    ) -> Result<u64, StoreError>;

    /// Drops change-log entries at or before `upto` (after every consumer has passed them).
    async fn trim_changes(&self, upto: Lsn) -> Result<u64, StoreError>;

    /// Reads a small named metadata value (ownership tables and the like).
    async fn load_meta(&self, name: &str) -> Result<Option<Bytes>, StoreError>;

    /// Durably stores a small named metadata value.
    async fn store_meta(&self, name: &str, value: Bytes) -> Result<(), StoreError>;

    /// Durably deletes a metadata value (a missing one is not an error).
    async fn delete_meta(&self, name: &str) -> Result<(), StoreError>;

    /// Metadata values whose names start with `prefix`, in name order, strictly after `after`,
    /// at most `limit`.
    async fn list_meta(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>, StoreError>;

    /// Rewrites the metadata so that deleted values leave the engine's files as far as the
    /// engine can make them (crypto-shredding deletes wrapped data keys, then calls this).
    async fn scrub_meta(&self) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::CollectionAddress;
    use bytes::Bytes;
    use domicile_core::{BucketCount, RecordKey, Version};

    fn record(key: usize, value_len: usize) -> VersionedRecord {
        let c = CollectionAddress::new(
            "ecommerce".parse().unwrap(),
            "IN".parse().unwrap(),
            "u1".parse().unwrap(),
            "orders".parse().unwrap(),
            BucketCount::DEFAULT,
        );
        VersionedRecord {
            address: c.record(RecordKey::new(format!("k{key}")).unwrap()),
            version: Version(1),
            value: Some(Bytes::from(vec![b'v'; value_len])),
        }
    }

    #[test]
    fn chunks_close_on_their_record_count_or_their_weight() {
        let mut chunks = SnapshotChunker::new(3);
        let lens: Vec<usize> = (0..7)
            .filter_map(|k| chunks.push(record(k, 10)).map(|c| c.len()))
            .collect();
        assert_eq!(lens, [3, 3]);
        assert_eq!(chunks.finish().map(|c| c.len()), Some(1));

        // Large values close a chunk early, at the record that reaches the weight.
        let mut chunks = SnapshotChunker::new(1024);
        let big = SNAPSHOT_CHUNK_BYTES / 2;
        assert!(chunks.push(record(0, big)).is_none());
        assert_eq!(chunks.push(record(1, big)).map(|c| c.len()), Some(2));
        assert!(chunks.finish().is_none());
    }
}

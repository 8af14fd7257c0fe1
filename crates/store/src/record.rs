//! What the store holds and returns: addressed, versioned records and change-log entries.

use bytes::Bytes;
use domicile_core::{
    Bucket, BucketCount, CollectionName, Market, RecordKey, ServiceName, UserId, Version,
};
use serde::{Deserialize, Serialize};

/// A log sequence number: the position of a mutation in a region's change log. LSNs start at 1
/// and increase by one per logged mutation; `Lsn(0)` means "before everything".
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Lsn(pub u64);

/// One user's collection in one service and market: what `list` pages through.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CollectionAddress {
    pub service: ServiceName,
    pub market: Market,
    pub bucket: Bucket,
    pub user: UserId,
    pub collection: CollectionName,
}

impl CollectionAddress {
    pub fn new(
        service: ServiceName,
        market: Market,
        user: UserId,
        collection: CollectionName,
        buckets: BucketCount,
    ) -> Self {
        let bucket = buckets.bucket_of(&user);
        Self {
            service,
            market,
            bucket,
            user,
            collection,
        }
    }

    pub fn record(&self, key: RecordKey) -> RecordAddress {
        RecordAddress {
            collection: self.clone(),
            key,
        }
    }
}

/// The full address of one record. Ordered as the store orders keys.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordAddress {
    pub collection: CollectionAddress,
    pub key: RecordKey,
}

impl RecordAddress {
    pub fn bucket(&self) -> Bucket {
        self.collection.bucket
    }
}

/// A live record as a client sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub version: Version,
    pub value: Bytes,
}

/// A record with its version as it moves between regions; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionedRecord {
    pub address: RecordAddress,
    pub version: Version,
    pub value: Option<Bytes>,
}

/// When a write should apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precondition {
    #[default]
    None,
    /// Only if no live record exists (`If-None-Match: *`).
    Absent,
    /// Only if a live record exists (`If-Match: *`).
    Exists,
    /// Only if the live record has exactly this version (`If-Match: "<version>"`).
    Version(Version),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MutationOp {
    Put(Bytes),
    Delete,
}

/// One client write. A batch of mutations applies atomically: all or none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mutation {
    pub address: RecordAddress,
    pub op: MutationOp,
    pub precondition: Precondition,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeOp {
    Put,
    Delete,
}

/// One change-log entry, written atomically with the mutation it records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangeEntry {
    pub lsn: Lsn,
    pub address: RecordAddress,
    pub op: ChangeOp,
    pub version: Version,
}

/// A change-log entry with the record's current state, ready to import elsewhere. The current
/// state may be newer than the entry (a later write); import keeps the higher version, so
/// applying it is always correct. `current` is `None` when the record has since been purged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub entry: ChangeEntry,
    pub current: Option<VersionedRecord>,
}

/// One item of a `list` page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedRecord {
    pub key: RecordKey,
    pub version: Version,
    pub size: u64,
}

/// A page of a collection, in key order; `next` is the key to pass as `after` for the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub items: Vec<ListedRecord>,
    pub next: Option<RecordKey>,
}

/// What an import did: records that won (applied) and records that lost to an equal or higher
/// version already stored (skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ImportOutcome {
    pub applied: u64,
    pub skipped: u64,
}

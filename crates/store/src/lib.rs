//! Region storage: the [`RegionStore`] trait every engine implements, the embedded engine
//! ([`EmbeddedStore`], on fjall), the PostgreSQL engine ([`PostgresStore`]) and the region's
//! content-addressed [`BlobStore`].
//!
//! Architecture Invariant: the store knows nothing about HTTP, ownership or policy. It keeps
//! records, their versions and the change log, and answers for scopes (service × market ×
//! buckets); deciding who may write is the region node's job.

#![deny(clippy::unwrap_used)]

pub mod blob;
pub mod digest;
pub mod embedded;
pub mod encryption;
pub mod error;
pub(crate) mod keys;
pub mod postgres;
mod queue;
pub mod record;
pub mod spec;
pub mod store;

pub use blob::{BlobError, BlobRef, BlobStore};
pub use digest::{BucketDigest, BucketDigester};
pub use embedded::{EmbeddedOptions, EmbeddedStore};
pub use encryption::{DataKeys, EncryptedStore, EncryptionError, KeyProvider, KeyringFile};
pub use error::StoreError;
pub use postgres::{PostgresOptions, PostgresSpec, PostgresStore};
pub use record::{
    Change, ChangeEntry, ChangeOp, CollectionAddress, ImportOutcome, ListPage, ListedRecord, Lsn,
    Mutation, MutationOp, Precondition, Record, RecordAddress, VersionedRecord,
};
pub use spec::{StoreSpec, open_store};
pub use store::{MetaPuts, RegionStore, SNAPSHOT_CHUNK_BYTES, SnapshotScan, chunk_weight};

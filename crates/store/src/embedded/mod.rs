//! The embedded engine: fjall keyspaces for records, the change log and metadata, written by one
//! group-commit thread (see `writer`) and read directly by callers (see `read`).
//!
//! Chosen over redb by measurement: docs/decisions/0001-embedded-engine.md.

mod read;
mod writer;

use crate::digest::BucketDigest;
use crate::error::StoreError;
use crate::queue::{QUEUE_DEPTH, Request, Submit};
use crate::record::{
    Change, CollectionAddress, ImportOutcome, ListPage, Lsn, Mutation, Record, RecordAddress,
    VersionedRecord,
};
use crate::store::{MetaPuts, RegionStore, SnapshotScan};
use async_trait::async_trait;
use bytes::Bytes;
use domicile_core::{BucketCount, Hlc, Market, RecordKey, Scope, ServiceName, UserId, Version};
use fjall::config::PinningPolicy;
use fjall::{Database, Keyspace, KeyspaceCreateOptions};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use writer::Writer;

/// The meta key holding the highest trimmed LSN, so the LSN never goes back.
const LSN_FLOOR: &str = "lsn-floor";

/// Tuning of the embedded engine. The defaults keep a region node under 256 MiB while it
/// copies 10 million records (decision 0011, `bench copy --records 10000000`).
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Block cache, shared by every keyspace; it also holds the blocks that are not pinned:
    /// every filter block, and index blocks past level 0.
    pub cache_bytes: u64,
    /// Memtable size per keyspace before it is flushed to a table. A keyspace holds up to five
    /// (one active, four sealed awaiting their flush) when compaction falls behind an import.
    pub memtable_bytes: u64,
    /// A bulk import (a copy's chunk) waits while every keyspace's memtables together, active
    /// and sealed, hold more than this: a copy that outruns the flushes would otherwise fill
    /// each keyspace's queue of sealed memtables before fjall halts it (114 MiB of memtables
    /// and a 266 MiB target node in a 10M-record copy, decision 0016).
    pub import_write_buffer_bytes: u64,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            cache_bytes: 48 << 20,
            memtable_bytes: 8 << 20,
            import_write_buffer_bytes: 48 << 20,
        }
    }
}

/// State shared by the writer thread and readers.
pub(crate) struct Shared {
    /// The last durable LSN. Held by the writer across commit + publish, and by snapshot takers,
    /// so that a snapshot and its LSN always agree.
    committed: Mutex<Lsn>,
    lsn_watch: watch::Sender<Lsn>,
    poisoned: AtomicBool,
    fail_next_commit: AtomicBool,
    commits: AtomicU64,
}

/// How often a bulk import looks again at the memtables awaiting their flush.
const FLUSH_POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// The longest a bulk import waits for flushes.
const FLUSH_WAIT_MAX: std::time::Duration = std::time::Duration::from_secs(30);

/// A region store on fjall. Cheap to clone; dropping the last clone stops the writer and
/// closes the database, so the folder can be opened again at once.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    db: Database,
    records: Keyspace,
    changes: Keyspace,
    meta: Keyspace,
    shared: Arc<Shared>,
    lsn_rx: watch::Receiver<Lsn>,
    /// `None` only while dropping.
    tx: Option<mpsc::Sender<Request>>,
    writer: Option<std::thread::JoinHandle<()>>,
    /// Turns for bulk imports in the writer's queue.
    bulk_imports: tokio::sync::Semaphore,
    /// See [`EmbeddedOptions::import_write_buffer_bytes`].
    import_write_buffer: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the writer after it has answered everything queued.
        self.tx.take();
        if let Some(writer) = self.writer.take()
            && writer.join().is_err()
        {
            tracing::error!("store writer thread panicked");
        }
    }
}

/// Every keyspace's options (fjall keeps them with the keyspace: they apply to stores created
/// with them). fjall pins level-0 filters and level-0 and level-1 index blocks outside the
/// cache by default, which grew with the store (22 MB at 3M records, `heaptrack`); here no
/// filter or index block is pinned: all are read through the bounded cache. Level 0's indexes
/// grow with how far compaction lags a fast import (a 10M copy's target peaked at 258 MiB
/// with them pinned, decision 0011's addendum).
fn keyspace_options(options: &EmbeddedOptions) -> KeyspaceCreateOptions {
    KeyspaceCreateOptions::default()
        .max_memtable_size(options.memtable_bytes)
        .index_block_pinning_policy(PinningPolicy::all(false))
        .filter_block_pinning_policy(PinningPolicy::all(false))
}

impl EmbeddedStore {
    /// Opens (or creates) a store in `path`, recovering from the journal after a crash.
    pub fn open(path: &Path, options: EmbeddedOptions) -> Result<Self, StoreError> {
        let db = Database::builder(path)
            .cache_size(options.cache_bytes)
            .open()?;
        let records = db.keyspace("records", || keyspace_options(&options))?;
        let changes = db.keyspace("changes", || keyspace_options(&options))?;
        // Meta too: under fjall's default 64 MiB memtable, one data key per user and service
        // accumulated in memory and was never flushed (it never reached the limit).
        let meta = db.keyspace("meta", || keyspace_options(&options))?;

        let mut last = match meta.get(LSN_FLOOR)? {
            Some(v) => crate::keys::decode_lsn(&v)?,
            None => Lsn(0),
        };
        let mut hlc = Hlc::new();
        if let Some(guard) = changes.last_key_value() {
            let (k, v) = guard.into_inner()?;
            let lsn = crate::keys::decode_lsn(&k)?;
            last = last.max(lsn);
            let (entry, _) = crate::keys::decode_change(lsn, &v)?;
            hlc.observe(entry.version);
        }

        let (lsn_tx, lsn_rx) = watch::channel(last);
        let shared = Arc::new(Shared {
            committed: Mutex::new(last),
            lsn_watch: lsn_tx,
            poisoned: AtomicBool::new(false),
            fail_next_commit: AtomicBool::new(false),
            commits: AtomicU64::new(0),
        });
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let writer = Writer {
            db: db.clone(),
            records: records.clone(),
            changes: changes.clone(),
            meta: meta.clone(),
            shared: shared.clone(),
            hlc,
            next_lsn: last,
        };
        let writer = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Engine(format!("start the writer thread: {e}")))?;
        let inner = Inner {
            db,
            records,
            changes,
            meta,
            shared,
            lsn_rx,
            tx: Some(tx),
            writer: Some(writer),
            bulk_imports: crate::queue::bulk_import_turns(),
            import_write_buffer: options.import_write_buffer_bytes,
        };
        Ok(Self {
            inner: Arc::new(inner),
        })
    }

    /// Durable commits so far (each shared by every write in its group).
    pub fn commits(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    /// Failpoint: the next durable commit fails as a failed fsync would.
    #[doc(hidden)]
    pub fn fail_next_commit(&self) {
        self.inner
            .shared
            .fail_next_commit
            .store(true, Ordering::Release);
    }

    fn submit(&self) -> Submit<'_> {
        Submit {
            tx: self.inner.tx.as_ref(),
            poisoned: &self.inner.shared.poisoned,
            bulk_imports: &self.inner.bulk_imports,
        }
    }

    /// Waits while the memtables awaiting their flush exceed the import limit, polling (fjall
    /// signals no flush), and for at most [`FLUSH_WAIT_MAX`]: a stuck flush must not stall a
    /// copy forever, fjall's own halt still bounds it.
    async fn wait_for_flushes(&self) {
        let limit = self.inner.import_write_buffer;
        let started = std::time::Instant::now();
        while self.inner.db.write_buffer_size() > limit {
            if started.elapsed() > FLUSH_WAIT_MAX {
                tracing::warn!(
                    buffered = self.inner.db.write_buffer_size(),
                    limit,
                    "flushes are behind; importing anyway"
                );
                return;
            }
            tokio::time::sleep(FLUSH_POLL).await;
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EmbeddedStore) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| StoreError::Engine(format!("reader task failed: {e}")))?
    }
}

#[async_trait]
impl RegionStore for EmbeddedStore {
    fn engine(&self) -> &'static str {
        "embedded-fjall"
    }

    async fn write_with_meta(
        &self,
        batch: Vec<Mutation>,
        meta: MetaPuts,
    ) -> Result<Vec<Version>, StoreError> {
        self.submit().write(batch, meta).await
    }

    async fn get(&self, address: &RecordAddress) -> Result<Option<Record>, StoreError> {
        // Point reads are served from the block cache in microseconds; no thread hop.
        self.read_record(address)
    }

    async fn list(
        &self,
        collection: &CollectionAddress,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let (collection, after) = (collection.clone(), after.cloned());
        self.blocking(move |s| s.read_list(&collection, after.as_ref(), limit))
            .await
    }

    async fn import_with_meta(
        &self,
        records: Vec<VersionedRecord>,
        meta: MetaPuts,
    ) -> Result<ImportOutcome, StoreError> {
        if records.len() >= crate::queue::BULK_IMPORT_RECORDS {
            self.wait_for_flushes().await;
        }
        self.submit().import(records, meta).await
    }

    async fn snapshot(&self, scope: &Scope) -> Result<SnapshotScan, StoreError> {
        self.read_snapshot(scope.clone())
    }

    async fn changes(
        &self,
        after: Lsn,
        scope: &Scope,
        limit: usize,
    ) -> Result<(Vec<Change>, Lsn), StoreError> {
        let scope = scope.clone();
        self.blocking(move |s| s.read_changes(after, &scope, limit))
            .await
    }

    fn last_lsn(&self) -> Lsn {
        *self.inner.lsn_rx.borrow()
    }

    async fn wait_for_changes(&self, after: Lsn, timeout: Duration) -> Lsn {
        let mut rx = self.inner.lsn_rx.clone();
        // A closed channel means the writer is gone; report what is durable.
        let _ = tokio::time::timeout(timeout, rx.wait_for(|lsn| *lsn > after)).await;
        self.last_lsn()
    }

    async fn digest(&self, scope: &Scope) -> Result<Vec<BucketDigest>, StoreError> {
        let scope = scope.clone();
        self.blocking(move |s| s.read_digest(&scope)).await
    }

    async fn purge(&self, scope: &Scope) -> Result<u64, StoreError> {
        self.submit().purge(scope).await
    }

    async fn purge_user(
        &self,
        service: &ServiceName,
        market: Market,
        user: &UserId,
        buckets: BucketCount,
    ) -> Result<u64, StoreError> {
        self.submit()
            .purge_user(service, market, user, buckets)
            .await
    }

    async fn trim_changes(&self, upto: Lsn) -> Result<u64, StoreError> {
        self.submit().trim(upto).await
    }

    async fn load_meta(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        Ok(self
            .inner
            .meta
            .get(name)?
            .map(|v| Bytes::copy_from_slice(&v)))
    }

    async fn store_meta(&self, name: &str, value: Bytes) -> Result<(), StoreError> {
        self.submit().store_meta(name, Some(value)).await
    }

    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        self.submit().store_meta(name, None).await
    }

    async fn list_meta(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        let meta = self.inner.meta.clone();
        let prefix = prefix.to_string();
        let after = after.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            read::meta_page(&meta, &prefix, after.as_deref(), limit)
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("metadata listing stopped: {e}")))?
    }

    async fn scrub_meta(&self) -> Result<(), StoreError> {
        // Flush the memtable to a table, then merge every table into one: a deleted value's
        // bytes survive only until the compaction drops the tables that held them.
        let meta = self.inner.meta.clone();
        tokio::task::spawn_blocking(move || {
            meta.rotate_memtable_and_wait()?;
            meta.major_compact()
        })
        .await
        .map_err(|e| StoreError::Corrupt(format!("metadata scrub stopped: {e}")))?
        .map_err(StoreError::from)
    }
}

//! `domicile bench store`: the region store against the bare engine doing the same work.
//!
//! - durable writes: `writers` concurrent writers, one record per write, each acknowledged only
//!   when durable — through `RegionStore` (group commit), and with every writer committing its
//!   own fdatasync'd fjall batch (record + change-log entry), the bare engine's way;
//! - import: versioned 256-byte records in batches of 10,000, in the order a snapshot stream
//!   delivers them (bucket, user, key) — through `RegionStore::import` (read-before-write, higher
//!   version wins, logged) and as bare durable fjall batches; only the engine's time is counted;
//! - scan: a consistent snapshot of everything imported; point reads: random gets;
//! - peak RSS of the whole run.

use crate::machine::{Machine, peak_rss_mib, reset_peak_rss};
use bytes::Bytes;
use domicile_core::{BucketCount, CollectionName, Market, RecordKey, ServiceName, UserId, Version};
use domicile_core::{BucketSet, Scope};
use domicile_store::{
    CollectionAddress, EmbeddedOptions, EmbeddedStore, Mutation, MutationOp, Precondition,
    RegionStore, StoreError, VersionedRecord,
};
use fjall::{Database, KeyspaceCreateOptions, PersistMode};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, RngCore};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use thiserror::Error;

pub(crate) const VALUE_BYTES: usize = 256;
pub(crate) const IMPORT_BATCH: usize = 10_000;
pub(crate) const RECORDS_PER_USER: u64 = 64;
const POINT_READS: u64 = 200_000;

#[derive(Debug, Clone)]
pub struct StoreBenchOptions {
    /// Where the stores live (a fresh folder under it is made and removed).
    pub dir: PathBuf,
    /// Records to import (and then scan and read).
    pub records: u64,
    /// Concurrent writers for the durable-write figures.
    pub writers: usize,
    /// How long each durable-write figure is measured.
    pub write_seconds: f64,
    /// Show progress bars (on stderr).
    pub progress: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct StoreBenchReport {
    pub engine: String,
    pub records: u64,
    pub writers: usize,
    pub value_bytes: usize,
    pub durable_writes_per_s: f64,
    pub raw_durable_writes_per_s: f64,
    pub durable_vs_raw: f64,
    pub commits_per_s: f64,
    pub import_records_per_s: f64,
    pub raw_import_records_per_s: f64,
    pub import_vs_raw: f64,
    pub scan_records_per_s: f64,
    pub point_reads_per_s: f64,
    /// Peak RSS while the region store imports `records` records (the memory target's reading).
    pub peak_rss_mib: f64,
    /// Peak RSS over the whole run, every phase and both engines.
    pub peak_rss_mib_whole_run: f64,
    pub machine: Machine,
}

/// The figures one run measured (rates per second, RSS in MiB), before rounding.
pub(crate) struct Measured {
    pub durable: f64,
    pub raw_durable: f64,
    pub commits: f64,
    pub raw_import: f64,
    pub imported: Imported,
}

/// What the store did with the imported records: import, scan and point-read rates.
pub(crate) struct Imported {
    pub import: f64,
    pub scan: f64,
    pub reads: f64,
    /// Peak RSS of the import phase, where the peak could be reset before it.
    pub import_peak: Option<f64>,
    /// Peak RSS of the run before the import phase.
    pub whole_run_so_far: f64,
}

/// Imports `o.records` records into a fresh `store`, then scans and point-reads them.
pub(crate) async fn import_scan_read(
    store: Arc<dyn RegionStore>,
    order: &Arc<ImportOrder>,
    o: &StoreBenchOptions,
) -> Result<Imported, BenchError> {
    let whole_run_so_far = peak_rss_mib().unwrap_or(0.0);
    let phase_peak = reset_peak_rss();
    let import = store_import(store.as_ref(), order, o).await?;
    let import_peak = peak_rss_mib().unwrap_or(0.0);
    let scan = scan(store.as_ref(), o.records).await?;
    let reads = point_reads(store, order.clone(), o.records).await?;
    Ok(Imported {
        import,
        scan,
        reads,
        import_peak: phase_peak.then_some(import_peak),
        whole_run_so_far,
    })
}

impl StoreBenchReport {
    pub(crate) fn new(engine: &str, o: &StoreBenchOptions, m: Measured) -> Self {
        let round = |x: f64| (x * 10.0).round() / 10.0;
        let ratio = |a: f64, b: f64| (a / b * 100.0).round() / 100.0;
        let (i, now) = (&m.imported, peak_rss_mib().unwrap_or(0.0));
        Self {
            engine: engine.into(),
            records: o.records,
            writers: o.writers,
            value_bytes: VALUE_BYTES,
            durable_writes_per_s: round(m.durable),
            raw_durable_writes_per_s: round(m.raw_durable),
            durable_vs_raw: ratio(m.durable, m.raw_durable),
            commits_per_s: round(m.commits),
            import_records_per_s: round(i.import),
            raw_import_records_per_s: round(m.raw_import),
            import_vs_raw: ratio(i.import, m.raw_import),
            scan_records_per_s: round(i.scan),
            point_reads_per_s: round(i.reads),
            peak_rss_mib: round(i.import_peak.unwrap_or(now)),
            peak_rss_mib_whole_run: round(i.whole_run_so_far.max(now)),
            machine: Machine::current(),
        }
    }
}

#[derive(Debug, Error)]
pub enum BenchError {
    #[error("move: {0}")]
    Move(#[from] domicile_migrate::MoveError),
    #[error("region node: {0}")]
    Node(#[from] domicile_region::NodeError),
    #[error("region client: {0}")]
    Client(#[from] domicile_client::ClientError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("bare engine: {0}")]
    Engine(#[from] fjall::Error),
    #[error("benchmark folder {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("benchmark task failed: {0}")]
    Task(String),
    #[error("the scan returned {got} records, expected {expected}")]
    Scan { got: u64, expected: u64 },
}

pub(crate) fn service() -> ServiceName {
    ServiceName::new("ecommerce").unwrap_or_else(|_| unreachable!("a valid literal"))
}

pub(crate) fn market() -> Market {
    Market::new("IN").unwrap_or_else(|_| unreachable!("a valid literal"))
}

pub(crate) fn address(user: &str, key: &str) -> Result<domicile_store::RecordAddress, BenchError> {
    let bad = |e: domicile_core::IdError| BenchError::Task(e.to_string());
    let c = CollectionAddress::new(
        service(),
        market(),
        UserId::new(user).map_err(bad)?,
        CollectionName::new("orders").map_err(bad)?,
        BucketCount::DEFAULT,
    );
    Ok(c.record(RecordKey::new(key).map_err(bad)?))
}

pub(crate) fn random_value() -> Bytes {
    let mut v = vec![0u8; VALUE_BYTES];
    rand::rng().fill_bytes(&mut v);
    Bytes::from(v)
}

/// The users of the import, in the order a snapshot stream delivers them: by bucket, then by
/// user id (`RECORDS_PER_USER` records each, keys in order within a user).
pub struct ImportOrder {
    users: Vec<(u16, String)>,
}

impl ImportOrder {
    pub fn new(records: u64) -> Self {
        let n = records.div_ceil(RECORDS_PER_USER);
        let mut users: Vec<(u16, String)> = (0..n)
            .map(|i| {
                let name = format!("u{i}");
                let bucket =
                    UserId::new(name.as_str()).map_or(0, |u| BucketCount::DEFAULT.bucket_of(&u).0);
                (bucket, name)
            })
            .collect();
        users.sort();
        Self { users }
    }

    /// The address of the `i`-th record in stream order.
    fn address(&self, i: u64) -> Result<domicile_store::RecordAddress, BenchError> {
        let (_, user) = &self.users[(i / RECORDS_PER_USER) as usize];
        address(user, &format!("k{:04}", i % RECORDS_PER_USER))
    }

    /// The `i`-th record in stream order.
    fn record(&self, i: u64) -> Result<VersionedRecord, BenchError> {
        Ok(VersionedRecord {
            address: self.address(i)?,
            version: Version::from_parts(1_700_000_000_000, (i % 1000) as u16),
            value: Some(random_value()),
        })
    }

    pub fn batch(&self, start: u64, len: u64) -> Result<Vec<VersionedRecord>, BenchError> {
        (start..start + len).map(|i| self.record(i)).collect()
    }
}

pub(crate) fn bar(progress: bool, len: u64, what: &str) -> ProgressBar {
    if !progress {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style =
        ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.set_prefix(what.to_string());
    bar
}

pub(crate) fn fresh_dir(base: &Path, name: &str) -> Result<PathBuf, BenchError> {
    let path = base.join(name);
    let io = |source| BenchError::Io {
        path: path.clone(),
        source,
    };
    if path.exists() {
        std::fs::remove_dir_all(&path).map_err(io)?;
    }
    std::fs::create_dir_all(&path).map_err(io)?;
    Ok(path)
}

/// The bare engine with the same layout and options as the embedded store.
struct RawEngine {
    db: Database,
    records: fjall::Keyspace,
    changes: fjall::Keyspace,
    lsn: AtomicU64,
}

impl RawEngine {
    fn open(path: &Path) -> Result<Self, BenchError> {
        let options = EmbeddedOptions::default();
        let ks = || KeyspaceCreateOptions::default().max_memtable_size(options.memtable_bytes);
        let db = Database::builder(path)
            .cache_size(options.cache_bytes)
            .open()?;
        let records = db.keyspace("records", ks)?;
        let changes = db.keyspace("changes", ks)?;
        Ok(Self {
            db,
            records,
            changes,
            lsn: AtomicU64::new(0),
        })
    }

    fn commit(&self, items: impl Iterator<Item = (Vec<u8>, Bytes)>) -> Result<(), BenchError> {
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncData));
        for (key, value) in items {
            let lsn = self.lsn.fetch_add(1, Ordering::Relaxed) + 1;
            let mut entry = Vec::with_capacity(10 + key.len());
            entry.extend_from_slice(&[1, 1]);
            entry.extend_from_slice(&lsn.to_be_bytes());
            entry.extend_from_slice(&key);
            batch.insert(&self.changes, lsn.to_be_bytes().to_vec(), entry);
            let mut stored = Vec::with_capacity(9 + value.len());
            stored.push(0);
            stored.extend_from_slice(&lsn.to_be_bytes());
            stored.extend_from_slice(&value);
            batch.insert(&self.records, key, stored);
        }
        batch.commit()?;
        Ok(())
    }
}

fn raw_key(r: &VersionedRecord) -> Vec<u8> {
    let c = &r.address.collection;
    format!(
        "{}\0{}{:05}{}\0{}\0{}",
        c.service, c.market, c.bucket.0, c.user, c.collection, r.address.key
    )
    .into_bytes()
}

/// `writers` concurrent single-record durable writes through the store: (writes/s, commits/s).
pub(crate) async fn store_durable_writes(
    store: Arc<dyn RegionStore>,
    commits: impl Fn() -> u64,
    o: &StoreBenchOptions,
) -> Result<(f64, f64), BenchError> {
    let deadline = Instant::now() + Duration::from_secs_f64(o.write_seconds);
    let done = Arc::new(AtomicU64::new(0));
    let commits_before = commits();
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..o.writers {
        let (store, done) = (store.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                let m = Mutation {
                    address: address(&format!("w{w}"), &format!("k{i}"))?,
                    op: MutationOp::Put(random_value()),
                    precondition: Precondition::None,
                };
                store.write(vec![m]).await?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, BenchError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    let secs = started.elapsed().as_secs_f64();
    let commits = (commits() - commits_before) as f64;
    Ok((done.load(Ordering::Relaxed) as f64 / secs, commits / secs))
}

fn raw_durable_writes(engine: Arc<RawEngine>, o: &StoreBenchOptions) -> Result<f64, BenchError> {
    let deadline = Instant::now() + Duration::from_secs_f64(o.write_seconds);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..o.writers)
        .map(|w| {
            let (engine, done) = (engine.clone(), done.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let key = format!("ecommerce\0IN{w:05}w{w}\0orders\0k{i}").into_bytes();
                    engine.commit(std::iter::once((key, random_value())))?;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
                Ok::<_, BenchError>(())
            })
        })
        .collect();
    for t in threads {
        t.join()
            .map_err(|_| BenchError::Task("raw writer panicked".into()))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

async fn store_import(
    store: &dyn RegionStore,
    order: &ImportOrder,
    o: &StoreBenchOptions,
) -> Result<f64, BenchError> {
    let bar = bar(o.progress, o.records, "import (region store)");
    let mut elapsed = Duration::ZERO;
    let mut start = 0;
    while start < o.records {
        let len = (IMPORT_BATCH as u64).min(o.records - start);
        // As for the bare engine, only the engine's work is timed, not making the batch.
        let batch = order.batch(start, len)?;
        let t = Instant::now();
        store.import(batch).await?;
        elapsed += t.elapsed();
        bar.inc(len);
        start += len;
    }
    bar.finish_and_clear();
    Ok(o.records as f64 / elapsed.as_secs_f64())
}

fn raw_import(
    engine: &RawEngine,
    order: &ImportOrder,
    o: &StoreBenchOptions,
) -> Result<f64, BenchError> {
    let bar = bar(o.progress, o.records, "import (bare engine)");
    let mut elapsed = Duration::ZERO;
    let mut start = 0;
    while start < o.records {
        let len = (IMPORT_BATCH as u64).min(o.records - start);
        // Generating the batch is not the engine's work: only the commit is timed.
        let batch = order.batch(start, len)?;
        let t = Instant::now();
        engine.commit(
            batch
                .iter()
                .map(|r| (raw_key(r), r.value.clone().unwrap_or_default())),
        )?;
        elapsed += t.elapsed();
        bar.inc(len);
        start += len;
    }
    bar.finish_and_clear();
    Ok(o.records as f64 / elapsed.as_secs_f64())
}

async fn scan(store: &dyn RegionStore, expected: u64) -> Result<f64, BenchError> {
    let scope = Scope {
        service: service(),
        market: market(),
        buckets: BucketSet::from_ranges([BucketCount::DEFAULT.all()]),
    };
    let started = Instant::now();
    let mut scan = store.snapshot(&scope).await?;
    let mut got = 0u64;
    while let Some(chunk) = scan.chunks.next().await {
        got += chunk?.len() as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    if got != expected {
        return Err(BenchError::Scan { got, expected });
    }
    Ok(got as f64 / secs)
}

/// Random gets of imported records (any of the first `records` in stream order) from two tasks.
async fn point_reads(
    store: Arc<dyn RegionStore>,
    order: Arc<ImportOrder>,
    records: u64,
) -> Result<f64, BenchError> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..2 {
        let (store, order) = (store.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            for _ in 0..POINT_READS / 2 {
                let i = rand::rng().random_range(0..records);
                let a = order.address(i)?;
                if store.get(&a).await?.is_none() {
                    return Err(BenchError::Task(format!("record {i} missing")));
                }
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    Ok(POINT_READS as f64 / started.elapsed().as_secs_f64())
}

/// Runs the whole benchmark; the stores live under `options.dir` and are removed afterwards.
pub async fn run_store_bench(options: StoreBenchOptions) -> Result<StoreBenchReport, BenchError> {
    let o = &options;
    let store_dir = fresh_dir(&o.dir, "region-store")?;
    let raw_dir = fresh_dir(&o.dir, "bare-engine")?;
    let progress = bar(o.progress, 4, "durable writes");

    // One engine open at a time, so the peak RSS is one store's, not the sum of several.
    let store = EmbeddedStore::open(&store_dir, EmbeddedOptions::default())?;
    let counter = store.clone();
    let (durable, commits) =
        store_durable_writes(Arc::new(store), move || counter.commits(), o).await?;
    progress.inc(1);
    let raw_durable = {
        let engine = Arc::new(RawEngine::open(&raw_dir)?);
        let o = o.clone();
        tokio::task::spawn_blocking(move || raw_durable_writes(engine, &o))
            .await
            .map_err(|e| BenchError::Task(e.to_string()))??
    };
    progress.finish_and_clear();

    // Import into fresh stores, so the write figures' data does not count.
    let store_dir = fresh_dir(&o.dir, "region-store-import")?;
    let store = EmbeddedStore::open(&store_dir, EmbeddedOptions::default())?;
    let order = Arc::new(ImportOrder::new(o.records));
    let imported = import_scan_read(Arc::new(store), &order, o).await?;
    let raw_dir = fresh_dir(&o.dir, "bare-engine-import")?;
    let raw_import = {
        let engine = RawEngine::open(&raw_dir)?;
        let o = o.clone();
        tokio::task::spawn_blocking(move || raw_import(&engine, &order, &o))
            .await
            .map_err(|e| BenchError::Task(e.to_string()))??
    };
    for dir in [
        "region-store",
        "bare-engine",
        "region-store-import",
        "bare-engine-import",
    ] {
        let path = o.dir.join(dir);
        std::fs::remove_dir_all(&path).map_err(|source| BenchError::Io { path, source })?;
    }
    Ok(StoreBenchReport::new(
        "embedded-fjall",
        o,
        Measured {
            durable,
            raw_durable,
            commits,
            raw_import,
            imported,
        },
    ))
}

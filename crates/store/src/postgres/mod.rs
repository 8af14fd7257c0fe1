//! The PostgreSQL engine: records and the change log in tables written in one transaction per
//! group of writes, by one writer connection (see `writer`); reads through a connection pool
//! (see `read`).
//!
//! One writer per store, held by a session advisory lock: it assigns LSNs in commit order, so
//! the change log is dense and a reader never sees LSN n+1 before n, and it commits everything
//! queued as one transaction (group commit: concurrent writers share one WAL flush). A second
//! process opening the same schema waits for the lock instead of writing beside it.
//! Chosen and measured in docs/decisions/0006-postgres-engine.md.

mod read;
pub(crate) mod schema;
mod spec;
mod writer;

use crate::digest::BucketDigest;
use crate::error::StoreError;
use crate::queue::{QUEUE_DEPTH, Submit};
use crate::record::{
    Change, CollectionAddress, ImportOutcome, ListPage, Lsn, Mutation, Record, RecordAddress,
    VersionedRecord,
};
use crate::store::{MetaPuts, RegionStore, SnapshotScan};
use async_trait::async_trait;
use bytes::Bytes;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use domicile_core::{BucketCount, Hlc, Market, RecordKey, Scope, ServiceName, UserId, Version};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_postgres::NoTls;
use writer::Writer;

pub use spec::PostgresSpec;

/// Tuning of the PostgreSQL engine.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Pooled connections for reads (the writer has its own).
    pub pool_size: usize,
    /// A group writing at least this many rows sends them with `COPY … FROM STDIN BINARY`;
    /// smaller groups send arrays in one statement (fewer round trips).
    pub copy_threshold: usize,
    /// How long opening waits for another process that holds the store.
    pub lock_timeout: Duration,
    /// How long a read waits for a pooled connection before it fails (rather than hang).
    pub pool_wait: Duration,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        Self {
            pool_size: 16,
            copy_threshold: 256,
            lock_timeout: Duration::from_secs(15),
            pool_wait: Duration::from_secs(30),
        }
    }
}

/// Turns a driver error into a store error that names the database's message.
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Engine(format!(
            "postgres: {} ({}: {})",
            db.message(),
            db.severity(),
            db.code().code()
        )),
        None => StoreError::Engine(format!("postgres: {e}")),
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e),
        other => StoreError::Engine(format!("postgres pool: {other}")),
    }
}

/// State shared by the writer task and readers.
pub(crate) struct Shared {
    lsn_watch: watch::Sender<Lsn>,
    poisoned: AtomicBool,
    commits: AtomicU64,
}

/// The SQL of every statement, with the schema filled in.
pub(crate) struct Sql {
    pub get: String,
    pub list: String,
    pub log_position: String,
    pub scan_range: String,
    pub live_range: String,
    pub changes: String,
    pub load_meta: String,
    pub states: String,
    pub states_in_range: String,
    pub upsert_staged: String,
    pub copy_changes: String,
    pub copy_staged: String,
    pub copy_records: String,
    pub write_group: String,
    pub store_meta: String,
    pub delete_meta: String,
    pub list_meta: String,
    pub vacuum_meta: String,
    pub set_position: String,
    pub purge_range: String,
    pub trim: String,
}

impl Sql {
    fn new(schema: &str) -> Self {
        let s = format!("\"{schema}\"");
        Self {
            get: format!("SELECT version, value FROM {s}.records WHERE key = $1"),
            list: format!(
                "SELECT key, version, length(value) FROM {s}.records \
                 WHERE key >= $1 AND key < $2 AND value IS NOT NULL ORDER BY key LIMIT $3"
            ),
            log_position: format!("SELECT last_lsn, last_version FROM {s}.log_position"),
            scan_range: format!(
                "SELECT key, version, value FROM {s}.records \
                 WHERE key >= $1 AND key < $2 ORDER BY key"
            ),
            live_range: format!(
                "SELECT key, version, value FROM {s}.records \
                 WHERE key >= $1 AND key < $2 AND value IS NOT NULL ORDER BY key"
            ),
            changes: format!(
                "SELECT c.lsn, c.op, c.version, c.key, r.version, r.value \
                 FROM {s}.changes c LEFT JOIN {s}.records r ON r.key = c.key \
                 WHERE c.lsn > $1 AND c.lsn <= $2 AND EXISTS ( \
                     SELECT 1 FROM unnest($3::bytea[], $4::bytea[]) AS b(lo, hi) \
                     WHERE c.key >= b.lo AND c.key < b.hi) \
                 ORDER BY c.lsn LIMIT $5"
            ),
            load_meta: format!("SELECT value FROM {s}.meta WHERE name = $1"),
            states: format!(
                "SELECT key, version, value IS NOT NULL FROM {s}.records WHERE key = ANY($1)"
            ),
            // The budget ($3) bounds a range that holds many other rows: then `states` instead.
            states_in_range: format!(
                "SELECT key, version, value IS NOT NULL FROM {s}.records \
                 WHERE key >= $1 AND key <= $2 ORDER BY key LIMIT $3"
            ),
            upsert_staged: format!(
                "INSERT INTO {s}.records (key, version, value) \
                 SELECT key, version, value FROM pg_temp.domicile_staged \
                 ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value"
            ),
            copy_changes: format!(
                "COPY {s}.changes (lsn, op, version, key) FROM STDIN (FORMAT binary)"
            ),
            copy_staged:
                "COPY pg_temp.domicile_staged (key, version, value) FROM STDIN (FORMAT binary)"
                    .to_string(),
            copy_records: format!(
                "COPY {s}.records (key, version, value) FROM STDIN (FORMAT binary)"
            ),
            // A whole small group in one statement, so one round trip (and one commit).
            write_group: format!(
                "WITH c AS (INSERT INTO {s}.changes (lsn, op, version, key) \
                     SELECT * FROM unnest($1::bigint[], $2::smallint[], $3::bigint[], $4::bytea[])), \
                 p AS (UPDATE {s}.log_position SET last_lsn = $8, last_version = $9) \
                 INSERT INTO {s}.records (key, version, value) \
                 SELECT * FROM unnest($5::bytea[], $6::bigint[], $7::bytea[]) \
                 ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value"
            ),
            store_meta: format!(
                "INSERT INTO {s}.meta (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value"
            ),
            delete_meta: format!("DELETE FROM {s}.meta WHERE name = $1"),
            list_meta: format!(
                "SELECT name, value FROM {s}.meta \
                 WHERE name >= $1 AND starts_with(name, $2) ORDER BY name LIMIT $3"
            ),
            vacuum_meta: format!("VACUUM {s}.meta"),
            set_position: format!("UPDATE {s}.log_position SET last_lsn = $1, last_version = $2"),
            purge_range: format!("DELETE FROM {s}.records WHERE key >= $1 AND key < $2"),
            trim: format!("DELETE FROM {s}.changes WHERE lsn <= $1"),
        }
    }
}

/// A region store on PostgreSQL. Cheap to clone; dropping the last clone ends the writer and
/// closes its connection, which releases the store for another process.
#[derive(Clone)]
pub struct PostgresStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pool: Pool,
    sql: Arc<Sql>,
    shared: Arc<Shared>,
    lsn_rx: watch::Receiver<Lsn>,
    tx: mpsc::Sender<crate::queue::Request>,
    /// Turns for bulk imports in the writer's queue.
    bulk_imports: tokio::sync::Semaphore,
    schema: String,
}

impl PostgresStore {
    /// Connects, takes the store's lock, runs pending migrations and starts the writer.
    pub async fn open(spec: &PostgresSpec, options: PostgresOptions) -> Result<Self, StoreError> {
        let config = spec.config()?;
        let schema = spec.schema().to_string();
        // The writer names itself after its schema, so an operator sees which store it serves.
        let mut writer_config = config.clone();
        writer_config.application_name(format!("domicile-writer:{schema}"));
        let (mut client, connection) = writer_config.connect(NoTls).await.map_err(pg_error)?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::warn!(error = %e, "store writer connection ended");
            }
        });
        // Durable on return, whatever the server's default; a bounded wait for the lock.
        client
            .batch_execute(&format!(
                "SET synchronous_commit = on; SET lock_timeout = '{}ms'",
                options.lock_timeout.as_millis()
            ))
            .await
            .map_err(pg_error)?;
        client
            .execute(
                "SELECT pg_advisory_lock(hashtext('domicile-store:' || $1::text))",
                &[&schema],
            )
            .await
            .map_err(|e| match e.as_db_error() {
                Some(db) if db.code() == &tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE => {
                    StoreError::Engine(format!(
                        "schema {schema} is held by another running store (waited {:?})",
                        options.lock_timeout
                    ))
                }
                _ => pg_error(e),
            })?;
        client
            .batch_execute("SET lock_timeout = 0")
            .await
            .map_err(pg_error)?;
        schema::migrate(&mut client, &schema).await?;
        client
            .batch_execute(
                "CREATE TEMP TABLE IF NOT EXISTS domicile_staged \
                 (key bytea, version bigint, value bytea) ON COMMIT DELETE ROWS",
            )
            .await
            .map_err(pg_error)?;

        let sql = Arc::new(Sql::new(&schema));
        let row = client
            .query_one(&sql.log_position, &[])
            .await
            .map_err(pg_error)?;
        let last = Lsn(u64::try_from(row.get::<_, i64>(0))
            .map_err(|_| StoreError::Corrupt("negative log position".into()))?);
        let mut hlc = Hlc::new();
        hlc.observe(schema::version_from_sql(row.get(1)));

        let (lsn_tx, lsn_rx) = watch::channel(last);
        let shared = Arc::new(Shared {
            lsn_watch: lsn_tx,
            poisoned: AtomicBool::new(false),
            commits: AtomicU64::new(0),
        });
        let writer = Writer::new(
            client,
            sql.clone(),
            shared.clone(),
            hlc,
            last,
            options.copy_threshold,
        )
        .await?;
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        tokio::spawn(writer.run(rx));

        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(options.pool_wait))
            .build()
            .map_err(|e| StoreError::Engine(format!("postgres pool: {e}")))?;
        tracing::info!(schema, lsn = last.0, "opened the PostgreSQL store");
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                sql,
                shared,
                lsn_rx,
                tx,
                bulk_imports: crate::queue::bulk_import_turns(),
                schema,
            }),
        })
    }

    /// The schema this store keeps its tables in.
    pub fn schema(&self) -> &str {
        &self.inner.schema
    }

    /// Durable commits so far (each shared by every write in its group).
    pub fn commits(&self) -> u64 {
        self.inner.shared.commits.load(Ordering::Relaxed)
    }

    pub fn is_poisoned(&self) -> bool {
        self.inner.shared.poisoned.load(Ordering::Acquire)
    }

    fn submit(&self) -> Submit<'_> {
        Submit {
            tx: Some(&self.inner.tx),
            poisoned: &self.inner.shared.poisoned,
            bulk_imports: &self.inner.bulk_imports,
        }
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }
}

#[async_trait]
impl RegionStore for PostgresStore {
    fn engine(&self) -> &'static str {
        "postgres"
    }

    async fn write_with_meta(
        &self,
        batch: Vec<Mutation>,
        meta: MetaPuts,
    ) -> Result<Vec<Version>, StoreError> {
        self.submit().write(batch, meta).await
    }

    async fn get(&self, address: &RecordAddress) -> Result<Option<Record>, StoreError> {
        self.read_record(address).await
    }

    async fn list(
        &self,
        collection: &CollectionAddress,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        self.read_list(collection, after, limit).await
    }

    async fn import_with_meta(
        &self,
        records: Vec<VersionedRecord>,
        meta: MetaPuts,
    ) -> Result<ImportOutcome, StoreError> {
        self.submit().import(records, meta).await
    }

    async fn snapshot(&self, scope: &Scope) -> Result<SnapshotScan, StoreError> {
        self.read_snapshot(scope.clone()).await
    }

    async fn changes(
        &self,
        after: Lsn,
        scope: &Scope,
        limit: usize,
    ) -> Result<(Vec<Change>, Lsn), StoreError> {
        self.read_changes(after, scope, limit).await
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
        self.read_digest(scope).await
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
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.load_meta)
            .await
            .map_err(pg_error)?;
        let row = client.query_opt(&stmt, &[&name]).await.map_err(pg_error)?;
        Ok(row.map(|r| Bytes::from(r.get::<_, Vec<u8>>(0))))
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
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.list_meta)
            .await
            .map_err(pg_error)?;
        let from = after.unwrap_or(prefix);
        // `>=` so one statement serves both cases; `after` itself is dropped below.
        let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
        let rows = client
            .query(&stmt, &[&from, &prefix, &fetch])
            .await
            .map_err(pg_error)?;
        Ok(rows
            .into_iter()
            .map(|r| (r.get::<_, String>(0), Bytes::from(r.get::<_, Vec<u8>>(1))))
            .filter(|(name, _)| Some(name.as_str()) != after)
            .take(limit)
            .collect())
    }

    async fn scrub_meta(&self) -> Result<(), StoreError> {
        // VACUUM frees deleted rows' space for reuse; the write-ahead log keeps them until it is
        // recycled (decision 0007).
        let client = self.client().await?;
        client
            .batch_execute(&self.inner.sql.vacuum_meta)
            .await
            .map_err(pg_error)
    }
}

//! `domicile bench store --engine postgres[://…]`: the PostgreSQL engine beside bare PostgreSQL
//! doing the same work in the same run, with the same fields as the embedded engine's report.
//!
//! - durable writes: `writers` concurrent single-record writes through `RegionStore` (one writer
//!   connection, group commit), beside `writers` connections each committing its own
//!   `INSERT` of the record and its change-log row (bare PostgreSQL, whose own WAL group commit
//!   shares flushes between concurrent backends);
//! - import: the same 10,000-record batches through `RegionStore::import` (versions read, higher
//!   version wins, logged), beside a bare binary `COPY` of the rows and their change-log rows;
//! - scan and point reads through the store.
//!
//! The benchmark owns three schemas (`domicile_bench_*`), dropped before and after. Without a
//! URL it starts a throwaway cluster (fsync on). RSS is this process's (PostgreSQL's is its own).

use crate::store::{
    BenchError, IMPORT_BATCH, ImportOrder, Measured, StoreBenchOptions, StoreBenchReport, bar,
    import_scan_read, random_value, store_durable_writes,
};
use domicile_pg_cluster::PgCluster;
use domicile_store::{PostgresOptions, PostgresSpec, PostgresStore};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, NoTls};

const SCHEMAS: [&str; 3] = [
    "domicile_bench_writes",
    "domicile_bench_import",
    "domicile_bench_raw",
];

fn pg(e: tokio_postgres::Error) -> BenchError {
    BenchError::Task(format!(
        "postgres: {}",
        e.as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_string())
    ))
}

/// Starts a throwaway cluster (off the async threads: it waits for `initdb` and `pg_ctl`).
pub async fn throwaway_cluster() -> Result<PgCluster, BenchError> {
    tokio::task::spawn_blocking(PgCluster::start)
        .await
        .map_err(|e| BenchError::Task(e.to_string()))?
        .map_err(|e| BenchError::Task(e.to_string()))
}

pub(crate) async fn connect(spec: &PostgresSpec) -> Result<Client, BenchError> {
    let (client, connection) = spec.config()?.connect(NoTls).await.map_err(pg)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

async fn drop_schemas(client: &Client) -> Result<(), BenchError> {
    for s in SCHEMAS {
        client
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {s} CASCADE"))
            .await
            .map_err(pg)?;
    }
    Ok(())
}

/// Runs the benchmark against `spec`'s database, or a throwaway cluster when `spec` is `None`.
pub async fn run_postgres_store_bench(
    options: StoreBenchOptions,
    spec: Option<PostgresSpec>,
) -> Result<StoreBenchReport, BenchError> {
    let o = &options;
    let (_cluster, spec) = match spec {
        Some(spec) => (None, spec),
        None => {
            let cluster = throwaway_cluster().await?;
            let spec = PostgresSpec::parse(&cluster.url("postgres"))?;
            (Some(cluster), spec)
        }
    };
    let admin = connect(&spec).await?;
    drop_schemas(&admin).await?;
    let progress = bar(o.progress, 2, "durable writes");

    let store =
        PostgresStore::open(&spec.with_schema(SCHEMAS[0])?, PostgresOptions::default()).await?;
    let counter = store.clone();
    let (durable, commits) =
        store_durable_writes(Arc::new(store), move || counter.commits(), o).await?;
    progress.inc(1);
    let raw_durable = raw_durable_writes(&spec, &admin, o).await?;
    progress.finish_and_clear();

    let store =
        PostgresStore::open(&spec.with_schema(SCHEMAS[1])?, PostgresOptions::default()).await?;
    let order = Arc::new(ImportOrder::new(o.records));
    let imported = import_scan_read(Arc::new(store), &order, o).await?;
    let raw_import = raw_import(&admin, &order, o).await?;
    drop_schemas(&admin).await?;

    Ok(StoreBenchReport::new(
        "postgres",
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

/// The bare tables: the same key, version and value columns, and a change log.
async fn create_raw(admin: &Client) -> Result<(), BenchError> {
    let s = SCHEMAS[2];
    admin
        .batch_execute(&format!(
            "DROP SCHEMA IF EXISTS {s} CASCADE; CREATE SCHEMA {s};
             CREATE TABLE {s}.records (key bytea PRIMARY KEY, version bigint NOT NULL, value bytea);
             CREATE TABLE {s}.changes (lsn bigserial PRIMARY KEY, op smallint NOT NULL,
                                       version bigint NOT NULL, key bytea NOT NULL);"
        ))
        .await
        .map_err(pg)
}

/// Every writer on its own connection, one autocommitted statement (record + change row) per
/// write: PostgreSQL's own way to take concurrent durable writes.
async fn raw_durable_writes(
    spec: &PostgresSpec,
    admin: &Client,
    o: &StoreBenchOptions,
) -> Result<f64, BenchError> {
    create_raw(admin).await?;
    let s = SCHEMAS[2];
    let sql = format!(
        "WITH c AS (INSERT INTO {s}.changes (op, version, key) VALUES (1, $2, $1)) \
         INSERT INTO {s}.records (key, version, value) VALUES ($1, $2, $3) \
         ON CONFLICT (key) DO UPDATE SET version = EXCLUDED.version, value = EXCLUDED.value"
    );
    let mut clients = Vec::with_capacity(o.writers);
    for _ in 0..o.writers {
        clients.push(connect(spec).await?);
    }
    let deadline = Instant::now() + Duration::from_secs_f64(o.write_seconds);
    let done = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for (w, client) in clients.into_iter().enumerate() {
        let (done, sql) = (done.clone(), sql.clone());
        tasks.push(tokio::spawn(async move {
            let stmt = client.prepare(&sql).await.map_err(pg)?;
            let mut i = 0u64;
            while Instant::now() < deadline {
                let key = format!("ecommerce\0IN{w:05}w{w}\0orders\0k{i}").into_bytes();
                let version = i as i64;
                let value = random_value();
                client
                    .execute(&stmt, &[&key, &version, &value.as_ref()])
                    .await
                    .map_err(pg)?;
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            Ok::<_, BenchError>(())
        }));
    }
    for t in tasks {
        t.await.map_err(|e| BenchError::Task(e.to_string()))??;
    }
    Ok(done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64())
}

/// The same batches as bare binary `COPY`s of the rows and their change-log rows, one
/// transaction per batch; only the database's work is timed.
async fn raw_import(
    admin: &Client,
    order: &ImportOrder,
    o: &StoreBenchOptions,
) -> Result<f64, BenchError> {
    create_raw(admin).await?;
    let s = SCHEMAS[2];
    let bar = bar(o.progress, o.records, "import (bare postgres)");
    let mut elapsed = Duration::ZERO;
    let mut start = 0;
    let mut lsn = 0i64;
    while start < o.records {
        let len = (IMPORT_BATCH as u64).min(o.records - start);
        let batch = order.batch(start, len)?;
        let rows: Vec<(Vec<u8>, i64, Vec<u8>)> = batch
            .iter()
            .map(|r| {
                let c = &r.address.collection;
                let key = format!(
                    "{}\0{}{:05}{}\0{}\0{}",
                    c.service, c.market, c.bucket.0, c.user, c.collection, r.address.key
                )
                .into_bytes();
                (
                    key,
                    r.version.0 as i64,
                    r.value.clone().unwrap_or_default().to_vec(),
                )
            })
            .collect();
        let t = Instant::now();
        admin.batch_execute("BEGIN").await.map_err(pg)?;
        let sink = admin
            .copy_in(&format!(
                "COPY {s}.records (key, version, value) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(pg)?;
        let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA, Type::INT8, Type::BYTEA]);
        let mut writer = std::pin::pin!(writer);
        for (key, version, value) in &rows {
            let row: [&(dyn ToSql + Sync); 3] = [key, version, value];
            writer.as_mut().write(&row).await.map_err(pg)?;
        }
        writer.finish().await.map_err(pg)?;
        let sink = admin
            .copy_in(&format!(
                "COPY {s}.changes (lsn, op, version, key) FROM STDIN (FORMAT binary)"
            ))
            .await
            .map_err(pg)?;
        let writer =
            BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT2, Type::INT8, Type::BYTEA]);
        let mut writer = std::pin::pin!(writer);
        for (key, version, _) in &rows {
            lsn += 1;
            let row: [&(dyn ToSql + Sync); 4] = [&lsn, &1i16, version, key];
            writer.as_mut().write(&row).await.map_err(pg)?;
        }
        writer.finish().await.map_err(pg)?;
        admin.batch_execute("COMMIT").await.map_err(pg)?;
        elapsed += t.elapsed();
        bar.inc(len);
        start += len;
    }
    bar.finish_and_clear();
    Ok(o.records as f64 / elapsed.as_secs_f64())
}

//! The conformance suite on the PostgreSQL engine, against a throwaway cluster this test binary
//! starts (once) from the machine's server binaries; skipped, saying why, where none is
//! installed, unless DOMICILE_REQUIRE_POSTGRES=1 (CI) makes that a failure.

use domicile_pg_cluster::PgCluster;
use domicile_store::{PostgresOptions, PostgresSpec, PostgresStore, RegionStore};
use futures::future::BoxFuture;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::Path;
use std::sync::{Arc, OnceLock};

static CLUSTER: OnceLock<PgCluster> = OnceLock::new();

pub fn available() -> bool {
    domicile_pg_cluster::available_for_tests().expect("PostgreSQL must be installed here")
}

/// The cluster's URL; the first caller starts it (it stops when this process ends).
pub fn cluster_url() -> String {
    CLUSTER
        .get_or_init(|| PgCluster::start().expect("start a throwaway PostgreSQL cluster"))
        .url("postgres")
}

/// Where `dir`'s store lives: recorded in the folder on first use (one schema per folder), so
/// that reopening, also from the crash check's writer process, finds the same tables.
fn spec_for(dir: &Path, options_tag: &str) -> PostgresSpec {
    let marker = dir.join("postgres-store");
    let spec = match std::fs::read_to_string(&marker) {
        Ok(spec) => spec,
        Err(_) => {
            let mut h = DefaultHasher::new();
            dir.hash(&mut h);
            let spec = format!(
                "{}?schema=t_{options_tag}_{:016x}",
                cluster_url(),
                h.finish()
            );
            std::fs::write(&marker, &spec).expect("record the store's location");
            spec
        }
    };
    PostgresSpec::parse(&spec).expect("a valid spec")
}

/// A plain connection to `spec`'s database, for what a test does behind the store's back.
async fn admin_client(spec: &PostgresSpec) -> tokio_postgres::Client {
    let (client, connection) = spec
        .config()
        .unwrap()
        .connect(tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
}

fn open_with(
    dir: &Path,
    tag: &str,
    options: PostgresOptions,
) -> BoxFuture<'static, Arc<dyn RegionStore>> {
    let spec = spec_for(dir, tag);
    Box::pin(async move {
        let store = PostgresStore::open(&spec, options)
            .await
            .expect("open the PostgreSQL store");
        Arc::new(store) as Arc<dyn RegionStore>
    })
}

/// The engine as configured by default: small groups as arrays, bulk groups by `COPY`.
fn open_postgres(dir: &Path) -> BoxFuture<'static, Arc<dyn RegionStore>> {
    open_with(dir, "d", PostgresOptions::default())
}

mod default_options {
    use super::*;
    domicile_store_conformance::suite!(open_postgres, available = available);
}

/// Every group through `COPY`, so the bulk path passes the whole suite too.
fn open_postgres_copy_only(dir: &Path) -> BoxFuture<'static, Arc<dyn RegionStore>> {
    open_with(
        dir,
        "c",
        PostgresOptions {
            copy_threshold: 0,
            ..PostgresOptions::default()
        },
    )
}

mod copy_only {
    use super::*;
    domicile_store_conformance::suite!(open_postgres_copy_only, available = available);
}

/// Engine-specific behaviour the suite does not reach: bulk imports over existing rows (the
/// range read of stored versions, and its fallback for sparse groups), the store lock, and
/// a schema newer than the build.
mod engine {
    use super::*;
    use bytes::Bytes;
    use domicile_core::Version;
    use domicile_store::VersionedRecord;
    use domicile_store_conformance::fixtures::{order, whole};
    use futures::StreamExt;
    use std::time::Duration;

    fn record(user: &str, i: usize, version: u64) -> VersionedRecord {
        VersionedRecord {
            address: order(user, &format!("k{i:05}")),
            version: Version(version),
            value: Some(Bytes::from(format!("{user}/{i}@{version}"))),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bulk_imports_over_existing_rows_keep_the_higher_version() {
        if !available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let store = open_postgres(dir.path()).await;
        // Every third key exists already: half of them newer than the import, half older.
        let existing: Vec<_> = (0..3000)
            .step_by(3)
            .map(|i| record("bulk", i, if i % 2 == 0 { 500 } else { 50 }))
            .collect();
        store.import(existing).await.unwrap();
        // A sparse neighbour: many rows of other users inside the dense range's key span.
        let neighbours: Vec<_> = (0..3000).map(|i| record("bulk-n", i, 7)).collect();
        store.import(neighbours).await.unwrap();

        let incoming: Vec<_> = (0..3000).map(|i| record("bulk", i, 100)).collect();
        let outcome = store.import(incoming.clone()).await.unwrap();
        let newer_existing = (0..3000).step_by(3).filter(|i| i % 2 == 0).count() as u64;
        assert_eq!(outcome.skipped, newer_existing);
        assert_eq!(outcome.applied, 3000 - newer_existing);
        // The same import again changes nothing (idempotent).
        let again = store.import(incoming).await.unwrap();
        assert_eq!((again.applied, again.skipped), (0, 3000));
        for i in [0usize, 3, 6, 9, 1, 2, 2999] {
            let got = store
                .get(&order("bulk", &format!("k{i:05}")))
                .await
                .unwrap()
                .unwrap();
            let expected = if i % 3 == 0 && i % 2 == 0 { 500 } else { 100 };
            assert_eq!(got.version, Version(expected), "key {i}");
        }
        // And a sparse bulk group (every 50th key across the neighbour's span) falls back to
        // per-key reads with the same outcome.
        let sparse: Vec<_> = (0..3000)
            .step_by(50)
            .map(|i| record("bulk-n", i, 8))
            .collect();
        let n = sparse.len() as u64;
        let outcome = store.import(sparse).await.unwrap();
        assert_eq!((outcome.applied, outcome.skipped), (n, 0));
        let mut scan = store.snapshot(&whole("ecommerce", "IN")).await.unwrap();
        let mut rows = 0;
        while let Some(chunk) = scan.chunks.next().await {
            rows += chunk.unwrap().len();
        }
        assert_eq!(rows, 6000);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_second_store_on_the_same_schema_waits_for_the_first() {
        if !available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let first = open_postgres(dir.path()).await;
        let spec = spec_for(dir.path(), "d");
        let quick = PostgresOptions {
            lock_timeout: Duration::from_millis(200),
            ..PostgresOptions::default()
        };
        let Err(e) = PostgresStore::open(&spec, quick.clone()).await else {
            panic!("a second writer opened beside the first");
        };
        assert!(
            e.to_string().contains("held by another running store"),
            "{e}"
        );
        drop(first);
        // Once the first is gone (its connection closes), the store opens.
        PostgresStore::open(
            &spec,
            PostgresOptions {
                lock_timeout: Duration::from_secs(30),
                ..quick
            },
        )
        .await
        .expect("reopen after the first store closed");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_schema_newer_than_the_build_is_refused() {
        if !available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_for(dir.path(), "d");
        let store = PostgresStore::open(&spec, PostgresOptions::default())
            .await
            .unwrap();
        let client = admin_client(&spec).await;
        client
            .execute(
                &format!(
                    "INSERT INTO \"{}\".schema_migrations (version, description) VALUES (99, 'future')",
                    store.schema()
                ),
                &[],
            )
            .await
            .unwrap();
        drop(store);
        let Err(e) = PostgresStore::open(&spec, PostgresOptions::default()).await else {
            panic!("opened a schema from the future");
        };
        assert!(e.to_string().contains("version 99"), "{e}");
    }
}

/// The writer's connection lost (here: terminated by an administrator) leaves a commit's
/// outcome unknowable, so the store refuses writes rather than guess; reopening recovers with
/// everything acknowledged before.
mod lost_writer {
    use super::*;
    use domicile_store::StoreError;
    use domicile_store_conformance::fixtures::{order, put};

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_writer_connection_poisons_the_store_until_reopened() {
        if !available() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let spec = spec_for(dir.path(), "d");
        let store = PostgresStore::open(&spec, PostgresOptions::default())
            .await
            .unwrap();
        let before = order("lost", "before");
        store.write(vec![put(&before, "kept")]).await.unwrap();

        let admin = admin_client(&spec).await;
        // With a timeout, pg_terminate_backend returns once the backend has exited.
        let killed = admin
            .execute(
                "SELECT pg_terminate_backend(pid, 10000) FROM pg_stat_activity WHERE application_name = $1",
                &[&format!("domicile-writer:{}", store.schema())],
            )
            .await
            .unwrap();
        assert_eq!(killed, 1, "one writer connection per store");

        // However the loss is noticed, no write is acknowledged after it, and the store stays
        // refused (poisoned) rather than trying again on its own.
        let after = order("lost", "after");
        assert!(store.write(vec![put(&after, "refused")]).await.is_err());
        assert!(store.is_poisoned());
        assert!(matches!(
            store.write(vec![put(&after, "refused")]).await,
            Err(StoreError::Poisoned)
        ));
        drop(store);

        let reopened = PostgresStore::open(&spec, PostgresOptions::default())
            .await
            .unwrap();
        let got = reopened
            .get(&before)
            .await
            .unwrap()
            .expect("acknowledged write kept");
        assert_eq!(&got.value[..], b"kept");
        assert!(reopened.get(&after).await.unwrap().is_none());
        reopened.write(vec![put(&after, "now")]).await.unwrap();
    }
}

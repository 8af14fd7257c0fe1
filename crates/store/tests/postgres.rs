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

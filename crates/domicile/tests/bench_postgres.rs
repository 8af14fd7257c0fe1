//! The PostgreSQL benchmarks run end to end (small, so they check the reports, not the speed):
//! `bench store` against a server given by URL, and `bench copy` between two throwaway clusters
//! with its `pg_dump | pg_restore` baseline.

use domicile_pg_cluster::{PgCluster, available_for_tests};
use serde_json::Value;
use std::process::Command;

fn bench(args: &[&str], dir: &std::path::Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_domicile"))
        .arg("bench")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run domicile bench");
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("a JSON report")
}

#[test]
fn bench_store_runs_against_a_postgres_url_and_cleans_up() {
    if !available_for_tests().expect("PostgreSQL must be installed here") {
        return;
    }
    let cluster = PgCluster::start().expect("start a throwaway cluster");
    let dir = tempfile::tempdir().unwrap();
    let url = cluster.url("postgres");
    let r = bench(
        &[
            "store",
            "--json",
            "--engine",
            &url,
            "--records",
            "3000",
            "--writers",
            "4",
            "--seconds",
            "0.3",
        ],
        dir.path(),
    );
    assert_eq!(r["engine"], "postgres");
    for field in [
        "durable_writes_per_s",
        "raw_durable_writes_per_s",
        "import_records_per_s",
        "raw_import_records_per_s",
        "scan_records_per_s",
        "point_reads_per_s",
    ] {
        assert!(r[field].as_f64().unwrap() > 0.0, "{field}: {r}");
    }
    // The benchmark's schemas are gone afterwards.
    let out = Command::new(cluster.bin("psql"))
        .args([
            &url,
            "-Atc",
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 'domicile_bench%'",
        ])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
}

#[test]
fn bench_copy_between_postgres_regions_reports_the_pg_dump_baseline() {
    if !available_for_tests().expect("PostgreSQL must be installed here") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let r = bench(
        &[
            "copy",
            "--json",
            "--from",
            "postgres",
            "--to",
            "postgres",
            "--records",
            "5000",
        ],
        dir.path(),
    );
    assert_eq!(
        (r["from"].as_str(), r["to"].as_str()),
        (Some("postgres"), Some("postgres"))
    );
    assert_eq!(r["records"], 5000);
    assert_eq!(r["verified"], true, "{r}");
    // Each node its own `domicile region` process, with its own memory reading.
    assert_eq!(r["nodes"], "processes", "{r}");
    for node in ["peak_rss_mib_source_node", "peak_rss_mib_target_node"] {
        assert!(r[node].as_f64().is_some_and(|m| m > 0.0), "{node}: {r}");
    }
    let (copy, dump) = (
        r["records_per_s"].as_f64().unwrap(),
        r["pg_dump_restore_records_per_s"].as_f64().unwrap(),
    );
    assert!(copy > 0.0 && dump > 0.0, "{r}");
    let ratio = r["ratio"].as_f64().unwrap();
    assert!((ratio - copy / dump).abs() < 0.01 + ratio * 0.01, "{r}");
}

//! The throwaway cluster starts, serves on loopback, and is gone (server and folder) once dropped.

use domicile_pg_cluster::{PgCluster, available_for_tests};
use std::net::TcpStream;

#[test]
fn starts_serves_and_cleans_up() {
    if !available_for_tests().expect("PostgreSQL is required here") {
        return;
    }
    let cluster = PgCluster::start().expect("start a cluster");
    let root = cluster.root().to_path_buf();
    assert!(root.join("data").join("PG_VERSION").is_file());
    TcpStream::connect(("127.0.0.1", cluster.port())).expect("the server accepts connections");
    let out = std::process::Command::new(cluster.bin("psql"))
        .args([&cluster.url("postgres"), "-Atc", "SHOW fsync"])
        .output()
        .expect("run psql");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "on");
    let port = cluster.port();
    drop(cluster);
    assert!(!root.exists(), "the cluster's folder is removed");
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "the server is stopped"
    );
}

//! The demo end to end, small: the reference migration over TLS, with every promise of its
//! report checked — nothing lost, nothing left behind, photos moved with their records, the
//! ledger verified (chain and signatures), and no canary on disk in plaintext.

use serde_json::Value;
use std::process::Command;

#[test]
fn a_small_demo_keeps_every_promise_of_its_report() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let out = Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args([
            "demo",
            "--users",
            "400",
            "--seconds",
            "1",
            "--after-seconds",
            "1",
            "--clients",
            "8",
            "--flash-orders",
            "500",
            "--photo-share",
            "0.25",
            "--rollback-window",
            "1s",
        ])
        .arg("--json")
        .arg(&report)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run domicile demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed:\n{stdout}\n{stderr}");
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["users"], 400);
    assert!(r["blobs"].as_u64().unwrap() > 0, "some users have photos");
    assert_eq!(r["client"]["errors"], 0, "{r}");
    assert_eq!(r["copies_left_behind"], 0, "{r}");
    assert_eq!(r["photos_checked"], r["blobs"], "{r}");
    assert_eq!(
        r["photos_lost"], 0,
        "every photo moved with its record: {r}"
    );
    assert_eq!(r["ledger_verified"], true, "{r}");
    assert_eq!(r["plaintext_hits"], 0, "{r}");
    let phases = r["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3, "{r}");
    for p in phases {
        assert_eq!(p["verified"], true, "{p}");
        assert_eq!(p["lost_writes"], 0, "{p}");
        assert_eq!(p["duplicate_writes"], 0, "{p}");
    }
}

//! Live moves through the real binary: cutovers of a range under writes through the gateway.

use std::process::Command;

#[test]
fn cutovers_under_writes_lose_and_fail_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args([
            "bench",
            "cutover",
            "--json",
            "--cutovers",
            "4",
            "--writers",
            "2",
            "--users",
            "20",
        ])
        .current_dir(dir.path())
        .output()
        .expect("run domicile bench cutover");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cutovers"], 4);
    assert_eq!(report["failed_requests"], 0, "{report}");
    assert_eq!(report["lost_writes"], 0, "{report}");
    assert_eq!(report["verified"], true, "{report}");
    assert!(
        report["writes_acknowledged"].as_u64().unwrap() > 0,
        "{report}"
    );
}

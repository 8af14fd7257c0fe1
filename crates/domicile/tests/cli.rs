//! The CLI's contract: `--help` everywhere, bad input → one line on stderr and a non-zero exit.

use std::process::Command;

fn domicile(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args(args)
        .output()
        .expect("run domicile")
}

#[test]
fn every_subcommand_has_help() {
    for args in [
        &["--help"][..],
        &["region", "--help"],
        &["bench", "--help"],
        &["bench", "store", "--help"],
        &["certs", "init", "--help"],
    ] {
        let out = domicile(args);
        assert!(out.status.success(), "{args:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
}

#[test]
fn bad_input_is_one_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    let bad_toml = dir.path().join("bad.toml");
    std::fs::write(&bad_toml, "regions = 1").unwrap();
    let forbidden = dir.path().join("forbidden.toml");
    let text = domicile_core::reference::CLUSTER_TOML.replace(
        "[[placement]]\nregion = \"cn-beijing\"",
        "[[placement]]\nregion = \"us-west\"",
    );
    std::fs::write(&forbidden, text).unwrap();
    let missing = dir.path().join("missing.toml");
    let tls = dir.path().join("tls");
    let made = domicile(&["certs", "init", &tls.display().to_string()]);
    assert!(made.status.success(), "{made:?}");
    let bad_tls = dir.path().join("bad-tls");
    assert!(
        domicile(&["certs", "init", &bad_tls.display().to_string()])
            .status
            .success()
    );
    std::fs::write(bad_tls.join("region.key"), "not a key").unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(&good, domicile_core::reference::CLUSTER_TOML).unwrap();
    let token = dir.path().join("admin.token");
    std::fs::write(&token, "t").unwrap();
    let region_with = |tls: &std::path::Path| -> Vec<String> {
        [
            "region",
            "--config",
            &good.display().to_string(),
            "--region",
            "us-west",
            "--listen",
            "127.0.0.1:0",
            "--tls-dir",
            &tls.display().to_string(),
        ]
        .map(str::to_string)
        .to_vec()
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec![
                "region".into(),
                "--config".into(),
                missing.display().to_string(),
                "--region".into(),
                "us-west".into(),
                "--tls-dir".into(),
                tls.display().to_string(),
            ],
            "read config",
        ),
        (
            vec![
                "region".into(),
                "--config".into(),
                bad_toml.display().to_string(),
                "--region".into(),
                "us-west".into(),
                "--tls-dir".into(),
                tls.display().to_string(),
            ],
            "config is not valid",
        ),
        (
            vec![
                "region".into(),
                "--config".into(),
                forbidden.display().to_string(),
                "--region".into(),
                "us-west".into(),
                "--tls-dir".into(),
                tls.display().to_string(),
            ],
            "forbids",
        ),
        (
            vec![
                "bench".into(),
                "store".into(),
                "--records".into(),
                "0".into(),
            ],
            "--records must be at least 1",
        ),
        // A missing or bad certificate file is named.
        (
            region_with(&dir.path().join("no-such-dir")),
            "no-such-dir/ca.pem",
        ),
        (region_with(&bad_tls), "bad-tls/region.key"),
        (
            ["certs", "init", &tls.display().to_string()]
                .map(str::to_string)
                .to_vec(),
            "already holds a CA",
        ),
        (
            [
                "migrate",
                "status",
                "--control",
                "https://127.0.0.1:1",
                "--admin-token-file",
                &token.display().to_string(),
            ]
            .map(str::to_string)
            .to_vec(),
            "--ca-file",
        ),
    ];
    for (args, expected) in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = domicile(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
        assert!(
            lines[0].starts_with("domicile: ") && lines[0].contains(expected),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn bench_gateway_reports_every_path_and_refuses_a_cpu_the_machine_lacks() {
    let out = domicile(&[
        "bench",
        "gateway",
        "--json",
        "--clients",
        "2",
        "--seconds",
        "0.2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for rps in ["direct_rps", "gateway_rps", "networked_gateway_rps"] {
        assert!(report[rps].as_f64().unwrap() > 0.0, "{rps}: {report}");
    }
    for ms in [
        "added_p50_ms",
        "added_p99_ms",
        "networked_added_p50_ms",
        "networked_added_p99_ms",
    ] {
        assert!(report[ms].is_f64(), "{ms}: {report}");
    }
    assert_eq!(report["errors"], 0);
    assert_eq!(report["networked_gateway_node_http"], "http1");

    let out = domicile(&[
        "bench",
        "gateway",
        "--gateway-cpu",
        "4096",
        "--seconds",
        "0.1",
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--gateway-cpu 4096"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
}

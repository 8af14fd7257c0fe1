//! A real `domicile region` process: serves on a free port, survives a restart, shuts down
//! cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

struct Running {
    child: Child,
    url: String,
}

/// Starts a region node and waits for the ready line it prints (no sleeps, no fixed ports).
fn start(config: &Path, region: &str) -> Running {
    let tls = config.with_file_name("tls");
    let mut child = Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args([
            "region",
            "--tls-dir",
            &tls.display().to_string(),
            "--config",
            &config.display().to_string(),
            "--region",
            region,
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start domicile region");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let ready: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}"));
    Running {
        child,
        url: ready["url"].as_str().expect("url").to_string(),
    }
}

fn stop(mut running: Running) {
    let pid = running.child.id().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(status.success());
    let exit = running.child.wait().expect("wait for the node");
    assert!(exit.success(), "clean shutdown on SIGTERM: {exit:?}");
}

#[tokio::test]
async fn a_region_process_serves_and_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cluster.toml");
    std::fs::write(&config, domicile_core::reference::CLUSTER_TOML).unwrap();
    let tls = super::cluster_processes::certs(dir.path());
    let http = super::cluster_processes::member_client(&tls);

    let node = start(&config, "cn-beijing");
    let put = http
        .put(format!("{}/v1/users/alice/orders/o-1", node.url))
        .header("x-domicile-market", "IN")
        .body("two phones")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let etag = put.headers()["etag"].to_str().unwrap().to_string();
    let health = http
        .get(format!("{}/healthz", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    stop(node);

    // Relative store paths resolve against the config's folder.
    assert!(dir.path().join("data/cn-beijing/store").is_dir());
    let node = start(&config, "cn-beijing");
    let get = http
        .get(format!("{}/v1/users/alice/orders/o-1", node.url))
        .header("x-domicile-market", "IN")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200);
    assert_eq!(get.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(get.text().await.unwrap(), "two phones");
    // Another region of the same cluster, in its own process, knows who owns the data.
    let other = start(&config, "ap-singapore");
    let misdirected = http
        .get(format!("{}/v1/users/alice/orders/o-1", other.url))
        .header("x-domicile-market", "IN")
        .send()
        .await
        .unwrap();
    assert_eq!(misdirected.status(), 421);
    let body: serde_json::Value = misdirected.json().await.unwrap();
    assert_eq!(body["error"]["owner"], "cn-beijing");
    stop(other);
    stop(node);
}

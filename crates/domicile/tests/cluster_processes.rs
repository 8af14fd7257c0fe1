//! The cluster as separate processes on loopback: control plane, gateway and two region nodes.
//! Sign-up, reads and writes through the gateway, refusals, an admin placement change, a
//! forbidden one, bad input at every endpoint, and a region node killed and restarted under
//! load without losing an acknowledged write.

use reqwest::StatusCode;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

pub(crate) struct Process {
    pub(crate) child: Child,
    pub(crate) ready: Value,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `domicile ARGS` and waits for the one JSON line it prints when it serves.
pub(crate) fn spawn(args: &[&str]) -> Process {
    let mut child = Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start domicile");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    let ready = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{args:?}: {e}: {line:?}"));
    Process { child, ready }
}

/// `domicile up` with its data in `data` and its gateway on a free loopback port.
pub(crate) fn start_up(data: &Path) -> Process {
    spawn(&[
        "up",
        "--data-dir",
        &data.display().to_string(),
        "--listen",
        "127.0.0.1:0",
    ])
}

/// Makes a certificate folder with `domicile certs init DIR/tls` and returns it.
pub(crate) fn certs(dir: &Path) -> std::path::PathBuf {
    let tls = dir.join("tls");
    let out = Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args(["certs", "init", &tls.display().to_string()])
        .output()
        .expect("run domicile certs init");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tls
}

/// A client with the folder's `client` certificate: reaches every listener of the cluster.
pub(crate) fn member_client(tls: &Path) -> reqwest::Client {
    let role = domicile_tls::RoleTls::load(tls, domicile_tls::Role::Client).expect("client cert");
    domicile_client::http_client(&role.client)
}

/// A control plane over TLS on `127.0.0.1:port` (0: the OS picks), its data in `dir/control`.
pub(crate) fn start_control(dir: &Path, config: &Path, tls: &Path, port: u16) -> Process {
    spawn(&[
        "control",
        "--tls-dir",
        &tls.display().to_string(),
        "--config",
        &config.display().to_string(),
        "--data-dir",
        &dir.join("control").display().to_string(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ])
}

/// The admin credential a control plane wrote when it started.
pub(crate) fn admin_token(control: &Process) -> String {
    std::fs::read_to_string(control.ready["admin_token_file"].as_str().unwrap()).unwrap()
}

pub(crate) fn url(p: &Process, field: &str) -> String {
    p.ready[field]
        .as_str()
        .expect("url in the ready line")
        .to_string()
}

struct Cluster {
    _dir: tempfile::TempDir,
    config: std::path::PathBuf,
    tls: std::path::PathBuf,
    control: Process,
    regions: Vec<(String, Process)>,
    gateway: Process,
    admin: String,
    http: reqwest::Client,
}

pub(crate) fn start_region(config: &Path, region: &str, control: &str, tls: &Path) -> Process {
    spawn(&[
        "region",
        "--tls-dir",
        &tls.display().to_string(),
        "--config",
        &config.display().to_string(),
        "--region",
        region,
        "--listen",
        "127.0.0.1:0",
        "--control",
        control,
    ])
}

/// Tells the control plane where a region listens (ports are picked by the OS), with the
/// region's jurisdiction as the reference scenario declares it.
pub(crate) async fn register(
    http: &reqwest::Client,
    control: &str,
    admin: &str,
    id: &str,
    p: &Process,
) {
    let jurisdiction = domicile_core::reference::cluster_config()
        .regions
        .iter()
        .find(|r| r.id.as_str() == id)
        .map(|r| r.jurisdiction.to_string())
        .unwrap_or_else(|| panic!("{id} is not a reference region"));
    let r = http
        .put(format!("{control}/admin/regions/{id}"))
        .bearer_auth(admin)
        .json(&json!({ "jurisdiction": jurisdiction, "url": url(p, "url") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "{:?}", r.text().await);
}

/// A gateway following `control`, its signing key kept in `dir`.
pub(crate) fn start_gateway(dir: &Path, control: &str, tls: &Path) -> Process {
    let key = dir.join("gateway.key").display().to_string();
    spawn(&[
        "gateway",
        "--tls-dir",
        &tls.display().to_string(),
        "--control",
        control,
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        &key,
    ])
}

impl Cluster {
    async fn start() -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, domicile_core::reference::CLUSTER_TOML).unwrap();
        let tls = certs(dir.path());
        let control = start_control(dir.path(), &config, &tls, 0);
        let control_url = url(&control, "control");
        let admin = admin_token(&control);
        let http = member_client(&tls);
        let mut regions = Vec::new();
        for region in ["cn-beijing", "us-west"] {
            let p = start_region(&config, region, &control_url, &tls);
            regions.push((region.to_string(), p));
        }
        for (id, p) in &regions {
            register(&http, &control_url, &admin, id, p).await;
        }
        let gateway = start_gateway(dir.path(), &control_url, &tls);
        Cluster {
            _dir: dir,
            config,
            tls,
            control,
            regions,
            gateway,
            admin,
            http,
        }
    }

    async fn register(&self, i: usize) {
        let (id, p) = &self.regions[i];
        register(
            &self.http,
            &url(&self.control, "control"),
            &self.admin,
            id,
            p,
        )
        .await;
    }

    fn gw(&self) -> String {
        url(&self.gateway, "gateway")
    }

    async fn signup(&self, market: &str) -> (String, String) {
        super::adversarial::signup(&self.http, &self.gw(), market).await
    }

    async fn admin_post(&self, path: &str, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", url(&self.control, "control")))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn lsn(&self, i: usize) -> u64 {
        let v: Value = self
            .http
            .get(format!(
                "{}/internal/status",
                url(&self.regions[i].1, "url")
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["last_lsn"].as_u64().unwrap()
    }
}

async fn assert_error(r: reqwest::Response, status: StatusCode, code: &str) {
    assert_eq!(r.status(), status);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["code"], code, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_serves_refuses_and_reroutes_across_processes() {
    let c = Cluster::start().await;
    let (user, token) = c.signup("IN").await;
    let record = format!("{}/v1/users/{user}/orders/o-1", c.gw());
    let put = c
        .http
        .put(&record)
        .bearer_auth(&token)
        .body("two phones")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let get = c
        .http
        .get(&record)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(get.text().await.unwrap(), "two phones");

    // Refusals: another user's data, no token, a forged token.
    let (_, other_token) = c.signup("IN").await;
    assert_error(
        c.http
            .get(&record)
            .bearer_auth(&other_token)
            .send()
            .await
            .unwrap(),
        StatusCode::FORBIDDEN,
        "forbidden",
    )
    .await;
    assert_error(
        c.http.get(&record).send().await.unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;
    let forged = format!("{}x", &token[..token.len() - 1]);
    assert_error(
        c.http
            .get(&record)
            .bearer_auth(&forged)
            .send()
            .await
            .unwrap(),
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    )
    .await;

    // A batch: one service's records at once, read back singly.
    let batch = format!("{}/v1/users/{user}/batch", c.gw());
    let written = c
        .http
        .post(&batch)
        .bearer_auth(&token)
        .json(&json!({ "writes": [
            { "collection": "addresses", "key": "home", "value": { "line1": "1 MG Road" } },
            { "collection": "orders", "key": "o-7", "value": { "sku": "phone-4" } },
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(written.status(), StatusCode::OK);
    let versions: Value = written.json().await.unwrap();
    assert_eq!(versions["versions"].as_array().map(Vec::len), Some(2));
    let o7 = c
        .http
        .get(format!("{}/v1/users/{user}/orders/o-7", c.gw()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(o7.text().await.unwrap(), r#"{"sku":"phone-4"}"#);

    // Bad input at every endpoint: clear JSON errors, nothing written anywhere.
    let lsns = (c.lsn(0).await, c.lsn(1).await);
    for (body, who, status, code) in [
        (
            json!({ "writes": [
                { "collection": "orders", "key": "o-8", "value": 1 },
                { "collection": "profile", "key": "main", "value": 1 },
            ]}),
            &token,
            StatusCode::BAD_REQUEST,
            "mixed_services",
        ),
        (
            json!({ "writes": [{ "collection": "games", "key": "g", "value": 1 }] }),
            &token,
            StatusCode::BAD_REQUEST,
            "unknown_collection",
        ),
        (
            json!({ "writes": [] }),
            &token,
            StatusCode::BAD_REQUEST,
            "empty_batch",
        ),
        (
            json!({ "writes": [{ "collection": "orders", "key": "o-8", "value": 1 }] }),
            &other_token,
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
    ] {
        let r = c
            .http
            .post(&batch)
            .bearer_auth(who)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_error(r, status, code).await;
    }
    let signup = format!("{}/v1/signup", c.gw());
    assert_error(
        c.http
            .post(&signup)
            .json(&json!({ "market": "XX" }))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "invalid_market",
    )
    .await;
    assert_error(
        c.http
            .post(&signup)
            .json(&json!({ "market": "FR" }))
            .send()
            .await
            .unwrap(),
        StatusCode::BAD_REQUEST,
        "unknown_market",
    )
    .await;
    assert_error(
        c.http.post(&signup).body("{").send().await.unwrap(),
        StatusCode::BAD_REQUEST,
        "malformed_body",
    )
    .await;
    let big = vec![b'x'; (1 << 20) + 1];
    assert_error(
        c.http
            .put(&record)
            .bearer_auth(&token)
            .body(big)
            .send()
            .await
            .unwrap(),
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    )
    .await;
    let unknown = format!("{}/v1/users/{user}/games/g-1", c.gw());
    assert_error(
        c.http
            .put(&unknown)
            .bearer_auth(&token)
            .body("x")
            .send()
            .await
            .unwrap(),
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        c.admin_post("/admin/placement", json!({ "service": "ecommerce" }))
            .await,
        StatusCode::BAD_REQUEST,
        "malformed_body",
    )
    .await;
    let no_admin = c
        .http
        .post(format!("{}/admin/placement", url(&c.control, "control")))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_error(no_admin, StatusCode::UNAUTHORIZED, "unauthorized").await;
    assert_eq!((c.lsn(0).await, c.lsn(1).await), lsns);

    // A placement the policy forbids is refused with the rule it breaks.
    let forbidden = c.admin_post("/admin/placement", json!({ "service": "account", "market": "CN", "buckets": "0-1023", "region": "us-west" })).await;
    assert_eq!(forbidden.status(), StatusCode::FORBIDDEN);
    let v: Value = forbidden.json().await.unwrap();
    assert_eq!(v["error"]["code"], "residency_violation");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("markets.CN.allowed"),
        "{v}"
    );

    // An admin placement change: IN's shop moves to us-west at epoch 2. The old owner now
    // answers 421 naming the new one; the gateway re-routes transparently.
    let moved = c.admin_post("/admin/placement", json!({ "service": "ecommerce", "market": "IN", "buckets": "0-1023", "region": "us-west" })).await;
    assert_eq!(moved.status(), StatusCode::OK, "{:?}", moved.text().await);
    let old = c
        .http
        .get(format!(
            "{}/v1/users/{user}/orders/o-1",
            url(&c.regions[0].1, "url")
        ))
        .header("x-domicile-market", "IN")
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), StatusCode::MISDIRECTED_REQUEST);
    let v: Value = old.json().await.unwrap();
    assert_eq!(
        (v["error"]["owner"].as_str(), v["error"]["epoch"].as_u64()),
        (Some("us-west"), Some(2))
    );
    let put = c
        .http
        .put(format!("{}/v1/users/{user}/orders/o-2", c.gw()))
        .bearer_auth(&token)
        .body("case")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let direct = c
        .http
        .get(format!(
            "{}/v1/users/{user}/orders/o-2",
            url(&c.regions[1].1, "url")
        ))
        .header("x-domicile-market", "IN")
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.text().await.unwrap(),
        "case",
        "the write landed in us-west"
    );
}

/// The value of the metric line that starts with `series ` on `url`'s `/metrics` (0 if none).
pub(crate) async fn metric(http: &reqwest::Client, url: &str, series: &str) -> u64 {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

pub(crate) const RETRIES: &str = "domicile_gateway_retries_total";
pub(crate) const IN_PROCESS: &str = "domicile_gateway_forwards_total{hop=\"in_process\"}";
pub(crate) const HTTP1: &str = "domicile_gateway_forwards_total{hop=\"http1\"}";
pub(crate) const HTTP2: &str = "domicile_gateway_forwards_total{hop=\"http2\"}";

/// The first half of moving SG's shop from the node at `from` to `to_region`'s at `to`, as
/// the control plane performs it: release at epoch 2, then own — not yet committed, so a
/// gateway's table still names the old owner, which answers 421.
pub(crate) async fn begin_sg_shop_move(
    http: &reqwest::Client,
    from: &str,
    to: &str,
    to_region: &str,
) {
    let range = |owner: Option<&str>| json!({ "service": "ecommerce", "market": "SG", "buckets": "0-1023", "epoch": 2, "owner": owner });
    for (node, step, owner) in [(from, "release", Some(to_region)), (to, "own", None)] {
        let r = http
            .post(format!("{node}/internal/{step}"))
            .json(&range(owner))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{step}");
    }
}

/// A `PUT` of `body` to `url` sent in the background; its status.
pub(crate) fn put_in_background(
    http: &reqwest::Client,
    url: String,
    token: &str,
    body: &'static str,
) -> tokio::task::JoinHandle<StatusCode> {
    let (http, token) = (http.clone(), token.to_string());
    tokio::spawn(async move {
        http.put(url)
            .bearer_auth(token)
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_meets_a_moved_range_is_held_and_retried_transparently() {
    let c = Cluster::start().await;
    let (user, token) = c.signup("SG").await;
    // The old owner releases SG's shop to us-west at epoch 2 and us-west owns it; the gateway's
    // table still says cn-beijing.
    let (from, to) = (url(&c.regions[0].1, "url"), url(&c.regions[1].1, "url"));
    begin_sg_shop_move(&c.http, &from, &to, "us-west").await;
    let before = metric(&c.http, &c.gw(), RETRIES).await;
    let record = format!("{}/v1/users/{user}/orders/o-1", c.gw());
    let call = put_in_background(&c.http, record, &token, "held");
    // The call met a 421 and is being held (no sleeps: wait for the gateway to say so).
    while metric(&c.http, &c.gw(), RETRIES).await == before {
        tokio::task::yield_now().await;
    }
    // The control plane commits the change (re-telling the nodes is idempotent at epoch 2).
    let commit = c.admin_post("/admin/placement", json!({ "service": "ecommerce", "market": "SG", "buckets": "0-1023", "region": "us-west" })).await;
    assert_eq!(commit.status(), StatusCode::OK, "{:?}", commit.text().await);
    assert_eq!(
        call.await.unwrap(),
        StatusCode::OK,
        "the held call succeeded once the table moved"
    );
    let direct = c
        .http
        .get(format!(
            "{}/v1/users/{user}/orders/o-1",
            url(&c.regions[1].1, "url")
        ))
        .header("x-domicile-market", "SG")
        .send()
        .await
        .unwrap();
    assert_eq!(direct.text().await.unwrap(), "held");
    // A gateway of its own process reaches every node over the network.
    assert_eq!(metric(&c.http, &c.gw(), IN_PROCESS).await, 0);
    assert!(metric(&c.http, &c.gw(), HTTP1).await >= 2);
    assert_eq!(
        metric(&c.http, &c.gw(), HTTP2).await,
        0,
        "HTTP/1.1 by default"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_told_to_speak_http2_to_the_nodes_does() {
    let c = Cluster::start().await;
    let key = c._dir.path().join("gateway-h2.key").display().to_string();
    let h2 = spawn(&[
        "gateway",
        "--tls-dir",
        &c.tls.display().to_string(),
        "--control",
        &url(&c.control, "control"),
        "--listen",
        "127.0.0.1:0",
        "--key-file",
        &key,
        "--node-http",
        "http2",
    ]);
    let gw = url(&h2, "gateway");
    let (user, token) = super::adversarial::signup(&c.http, &gw, "SG").await;
    let token = token.as_str();
    let record = format!("{gw}/v1/users/{user}/orders/o-1");
    let put = c
        .http
        .put(&record)
        .bearer_auth(token)
        .body("over h2")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let get = c.http.get(&record).bearer_auth(token).send().await.unwrap();
    assert_eq!(get.text().await.unwrap(), "over h2");
    assert_eq!(
        metric(&c.http, &gw, HTTP2).await,
        2,
        "both calls went over HTTP/2"
    );
    assert_eq!(metric(&c.http, &gw, HTTP1).await, 0);
    // A bad value is refused on the command line, with a one-line reason.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args([
            "gateway",
            "--node-http",
            "spdy",
            "--control",
            "https://127.0.0.1:1",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid value 'spdy'"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_region_restarted_under_load_loses_no_acknowledged_write() {
    let mut c = Cluster::start().await;
    let (user, token) = c.signup("CN").await;
    let base = format!("{}/v1/users/{user}/orders", c.gw());
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (http, base, token, stop) =
                (c.http.clone(), base.clone(), token.clone(), stop.clone());
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let key = format!("w{w}-{i:05}");
                    let r = http
                        .put(format!("{base}/{key}"))
                        .bearer_auth(&token)
                        .body(key.clone())
                        .send()
                        .await;
                    if matches!(&r, Ok(r) if r.status() == StatusCode::OK) {
                        acknowledged.push(key);
                    }
                    i += 1;
                }
                acknowledged
            })
        })
        .collect();
    // Let the writers get going: wait until the node has logged a few hundred writes.
    while c.lsn(0).await < 200 {
        tokio::task::yield_now().await;
    }
    // SIGKILL cn-beijing mid-load, restart it on the same store, tell the control plane.
    let control_url = url(&c.control, "control");
    drop(c.regions.remove(0));
    let restarted = start_region(&c.config, "cn-beijing", &control_url, &c.tls);
    c.regions.insert(0, ("cn-beijing".into(), restarted));
    c.register(0).await;
    let resumed = c.lsn(0).await;
    while c.lsn(0).await < resumed + 100 {
        tokio::task::yield_now().await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut acknowledged = Vec::new();
    for w in writers {
        acknowledged.extend(w.await.unwrap());
    }
    assert!(
        acknowledged.len() > 300,
        "{} writes acknowledged",
        acknowledged.len()
    );
    for key in &acknowledged {
        let r = c
            .http
            .get(format!("{base}/{key}"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "acknowledged write {key} lost");
        assert_eq!(r.text().await.unwrap(), *key);
    }
}

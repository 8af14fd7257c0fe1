//! Live moves through the real binary: cutovers under writes through the gateway; a plan run by
//! a control plane that is SIGKILLed twenty times and resumes every time; a rollback in the
//! rollback window; stale writes to a moved-away range; bad plan files refused with nothing
//! moved.

use super::cluster_processes::{
    Process, admin_token, certs, member_client, register, start_control, start_gateway,
    start_region, url,
};
use domicile_client::region::RegionClient;
use domicile_core::BucketSet;
use domicile_wire::api::ScopeRequest;
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

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

/// Control plane, cn-beijing and ap-singapore nodes, a gateway: separate processes.
struct Cluster {
    dir: tempfile::TempDir,
    config: std::path::PathBuf,
    tls: std::path::PathBuf,
    control: Process,
    control_port: u16,
    regions: Vec<(String, Process)>,
    gateway: Process,
    admin: String,
    http: reqwest::Client,
}

impl Cluster {
    async fn start() -> Cluster {
        Self::start_with(domicile_core::reference::CLUSTER_TOML).await
    }

    /// The same processes on another cluster config (the reference one with changes).
    async fn start_with(config_toml: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, config_toml).unwrap();
        let tls = certs(dir.path());
        let control = start_control(dir.path(), &config, &tls, 0);
        let control_url = url(&control, "control");
        let control_port = control_url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap();
        let admin = admin_token(&control);
        let http = member_client(&tls);
        let mut regions = Vec::new();
        for region in ["cn-beijing", "ap-singapore"] {
            let p = start_region(&config, region, &control_url, &tls);
            register(&http, &control_url, &admin, region, &p).await;
            regions.push((region.to_string(), p));
        }
        let gateway = start_gateway(dir.path(), &control_url, &tls);
        Cluster {
            dir,
            config,
            tls,
            control,
            control_port,
            regions,
            gateway,
            admin,
            http,
        }
    }

    fn control_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.control_port)
    }

    fn gw(&self) -> String {
        url(&self.gateway, "gateway")
    }

    fn region(&self, id: &str) -> RegionClient {
        let p = &self.regions.iter().find(|(r, _)| r == id).unwrap().1;
        RegionClient::new(url(p, "url"), self.http.clone())
    }

    /// SIGKILL, then start again on the same port (gateways and nodes keep its URL).
    fn kill_and_restart_control(&mut self) {
        self.control.child.kill().unwrap();
        self.control.child.wait().unwrap();
        self.control = start_control(self.dir.path(), &self.config, &self.tls, self.control_port);
    }

    async fn signup(&self, market: &str) -> (String, String) {
        let v: Value = self
            .http
            .post(format!("{}/v1/signup", self.gw()))
            .json(&json!({ "market": market }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (
            v["user"].as_str().unwrap().to_string(),
            v["token"].as_str().unwrap().to_string(),
        )
    }

    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.control_url()))
            .bearer_auth(&self.admin)
    }

    async fn status(&self) -> Option<Value> {
        let r = self
            .admin(reqwest::Method::GET, "/admin/migrations/current")
            .send()
            .await
            .ok()?;
        r.status().is_success().then_some(())?;
        r.json().await.ok()
    }

    /// The steps the current run's first phase has units in, if the control plane answers.
    async fn steps(&self) -> Option<std::collections::BTreeSet<String>> {
        let s = self.status().await?;
        Some(
            s["phases"][0]["steps"]
                .as_object()?
                .keys()
                .cloned()
                .collect(),
        )
    }

    /// Polls the run until `done` says so (bounded: a run that never gets there fails the test).
    async fn until(&self, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..1200 {
            if let Some(s) = self.status().await
                && done(&s)
            {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the migration never got to {what}: {:?}",
            self.status().await
        );
    }
}

/// Writers through the gateway, each write a new key; returns what was acknowledged and how
/// many were tried.
type Acked = Vec<(usize, String, String)>;

fn writers(
    c: &Cluster,
    users: &Arc<Vec<(String, String)>>,
    stop: &Arc<AtomicBool>,
    n: usize,
) -> Vec<tokio::task::JoinHandle<(Acked, u64)>> {
    (0..n)
        .map(|w| {
            let (http, gw, users, stop) = (c.http.clone(), c.gw(), users.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut acked, mut tried) = (Vec::new(), 0u64);
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let user = (w * 31 + i * 7) % users.len();
                    let (u, t) = &users[user];
                    let key = format!("w{w}-{i:06}");
                    let value = format!("value of {key}");
                    tried += 1;
                    let r = http
                        .put(format!("{gw}/v1/users/{u}/orders/{key}"))
                        .bearer_auth(t)
                        .body(value.clone())
                        .send()
                        .await;
                    if r.is_ok_and(|r| r.status().is_success()) {
                        acked.push((user, key, value));
                    }
                    i += 1;
                    // Paced, not a flood: the point is writes at every moment of the run.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                (acked, tried)
            })
        })
        .collect()
}

async fn lost(c: &Cluster, users: &[(String, String)], acked: &Acked) -> Vec<String> {
    let mut lost = Vec::new();
    for (user, key, value) in acked {
        let (u, t) = &users[*user];
        let r = c
            .http
            .get(format!("{}/v1/users/{u}/orders/{key}", c.gw()))
            .bearer_auth(t)
            .send()
            .await
            .unwrap();
        let status = r.status();
        if status != StatusCode::OK || r.text().await.unwrap() != *value {
            lost.push(format!("{u}/{key}: {status}"));
        }
    }
    lost
}

/// Live records of `service`/`market` held by `node`.
async fn held(node: &RegionClient, service: &str, market: &str) -> u64 {
    let scope = ScopeRequest {
        service: service.parse().unwrap(),
        market: market.parse().unwrap(),
        buckets: BucketSet::from_ranges([domicile_core::BucketCount::DEFAULT.all()]),
    };
    let mut snapshot = node.snapshot(&scope).await.unwrap();
    let mut n = 0;
    while let Some(batch) = snapshot.next_batch(10_000).await.unwrap() {
        n += batch.iter().filter(|r| r.value.is_some()).count() as u64;
    }
    n
}

const KILL_PLAN: &str = r#"
name = "kill-test"
[[phases]]
name = "shop"
services = ["ecommerce"]
markets = ["HK", "SG", "MY", "ID"]
target = "ap-singapore"
waves = [1, 5, 10, 25, 50, 100]
rollback_window = "2s"
"#;

/// A simple deterministic generator for the kill points (xorshift).
fn next(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_killed_twenty_times_mid_move_resumes_and_loses_nothing() {
    let mut c = Cluster::start().await;
    let mut users = Vec::new();
    for market in ["HK", "SG", "MY", "ID", "CN"] {
        for _ in 0..6 {
            users.push(c.signup(market).await);
        }
    }
    let users = Arc::new(users);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(&c, &users, &stop, 3);
    let r = c
        .admin(reqwest::Method::POST, "/admin/migrations")
        .body(KILL_PLAN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);

    // Twenty SIGKILLs at seeded random moments; the steps seen just before each are kept. On
    // a loaded machine a run can sit in one step through several pauses: a kill then waits
    // (bounded) for the steps to change, so the kills meet the run in more than one of them.
    let mut seed = 0x2014_u64;
    let mut seen = std::collections::BTreeSet::new();
    let mut at_last_kill = None;
    for _ in 0..20 {
        let pause = 20 + next(&mut seed) % 250;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let mut steps = c.steps().await;
        for _ in 0..200 {
            if steps.is_some() && steps != at_last_kill {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            steps = c.steps().await;
        }
        seen.extend(steps.iter().flatten().cloned());
        at_last_kill = steps;
        c.kill_and_restart_control();
    }
    let done = c.until("Completed", |s| s["state"] == "completed").await;
    stop.store(true, Ordering::Relaxed);
    let (mut acked, mut tried) = (Vec::new(), 0);
    for t in tasks {
        let (a, n) = t.await.unwrap();
        acked.extend(a);
        tried += n;
    }

    let phase = &done["phases"][0];
    assert_eq!(phase["verified"], true, "{done}");
    assert_eq!(phase["cutovers"], phase["units"], "{done}");
    assert!(
        seen.len() >= 2,
        "the kills met the run in one state only: {seen:?}"
    );
    let lost = lost(&c, &users, &acked).await;
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    // No copy left behind, and nothing duplicated: each market's orders are at the target
    // only, once each (keys are unique; 2 seeded orders per user do not exist here).
    let (source, target) = (c.region("cn-beijing"), c.region("ap-singapore"));
    let mut at_target = 0;
    for market in ["HK", "SG", "MY", "ID"] {
        assert_eq!(
            held(&source, "ecommerce", market).await,
            0,
            "{market} left behind"
        );
        at_target += held(&target, "ecommerce", market).await;
    }
    let moved_writes = acked
        .iter()
        .filter(|(u, _, _)| *u < 24) // the HK, SG, MY and ID users
        .count() as u64;
    assert!(
        at_target >= moved_writes && at_target <= moved_writes + (tried - acked.len() as u64),
        "{at_target} records at the target for {moved_writes} acknowledged writes"
    );
    // The ledger: one transfer per unit however often the control plane died around it, each
    // naming its operator, all signed by the key the control plane published on its first start.
    let public_key = c.dir.path().join("control").join("ledger.pub");
    let out = run_cli(
        &c,
        &[
            "audit",
            "verify",
            "--public-key",
            &public_key.display().to_string(),
        ],
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ledger verified: "), "{stdout}");
    assert!(
        stdout.contains("every entry is covered by a checkpoint"),
        "{stdout}"
    );
    let out = run_cli(&c, &["audit", "show", "--json"]).await;
    let export: domicile_wire::ledger::LedgerExport = serde_json::from_slice(&out.stdout).unwrap();
    let transfers: Vec<_> = export
        .entries
        .iter()
        .filter(|e| e.kind == "transfer")
        .collect();
    assert_eq!(
        Some(transfers.len() as u64),
        phase["units"].as_u64(),
        "{export:?}"
    );
    let ids: std::collections::BTreeSet<_> = transfers.iter().map(|e| &e.id).collect();
    assert_eq!(ids.len(), transfers.len(), "a transfer written twice");
    for t in &transfers {
        for field in [
            "from",
            "to",
            "service",
            "market",
            "buckets",
            "records",
            "bytes",
            "digest",
            "legal_basis",
        ] {
            assert!(t.body.get(field).is_some(), "{field} missing: {}", t.body);
        }
        // Users are counted by the digests: never more than the records that moved.
        let (users, records) = (t.body["users"].as_u64(), t.body["records"].as_u64());
        assert!(
            users.is_some_and(|u| u <= records.unwrap_or(0)),
            "{}",
            t.body
        );
        assert!(
            t.body["operator"]
                .as_str()
                .unwrap()
                .starts_with("admin credential "),
            "{}",
            t.body
        );
    }
    assert!(
        export
            .entries
            .iter()
            .any(|e| e.kind == "checkpoint" && e.body["reason"] == "phase shop completed"),
        "{export:?}"
    );
    let purges = export.entries.iter().filter(|e| e.kind == "purge").count();
    assert_eq!(purges, transfers.len(), "one purge per transfer");
    eprintln!(
        "kill test: 20 kills, states seen {seen:?}, {} writes acknowledged of {tried}",
        acked.len()
    );
}

const ROLLBACK_PLAN: &str = r#"
name = "rollback-test"
[[phases]]
name = "shop"
services = ["ecommerce"]
markets = ["HK"]
target = "ap-singapore"
waves = [100]
rollback_window = "10m"
"#;

async fn run_cli(c: &Cluster, args: &[&str]) -> std::process::Output {
    let token_file = c.dir.path().join("control").join("admin.token");
    let mut all = args.to_vec();
    let (control, token) = (c.control_url(), token_file.display().to_string());
    let ca = c.tls.join("ca.pem").display().to_string();
    all.extend([
        "--control",
        &control,
        "--admin-token-file",
        &token,
        "--ca-file",
        &ca,
    ]);
    let all: Vec<String> = all.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_domicile"))
            .args(&all)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_plans_move_nothing_and_a_rollback_in_the_window_loses_nothing() {
    let c = Cluster::start().await;
    let table = |c: &Cluster| {
        let http = c.http.clone();
        let (url, admin) = (c.control_url(), c.admin.clone());
        async move {
            let v: Value = http
                .get(format!("{url}/admin/table"))
                .bearer_auth(admin)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v
        }
    };
    let before = table(&c).await;

    // Bad plan files: one clear line, a non-zero exit, nothing moved.
    let bad = [
        (
            "malformed.toml",
            "name = \"x\"\n[[phases]\n",
            "plan is not valid: line 2",
        ),
        (
            "unknown-region.toml",
            "name = \"x\"\n[[phases]]\nname = \"p\"\nservices = [\"ecommerce\"]\nmarkets = [\"HK\"]\ntarget = \"eu-mars\"\n",
            "names region eu-mars, which the cluster does not declare",
        ),
        (
            "forbidden.toml",
            "name = \"x\"\n[[phases]]\nname = \"p\"\nservices = [\"ecommerce\"]\nmarkets = [\"CN\"]\ntarget = \"us-west\"\n",
            "forbids ecommerce data of market CN in region us-west",
        ),
        (
            "overlap.toml",
            "name = \"x\"\n[[phases]]\nname = \"a\"\nservices = [\"ecommerce\"]\nmarkets = [\"HK\"]\ntarget = \"ap-singapore\"\n[[phases]]\nname = \"b\"\nservices = [\"ecommerce\"]\nmarkets = [\"HK\"]\ntarget = \"ap-singapore\"\n",
            "overlapping phases: a and b",
        ),
    ];
    let mut refused = 0;
    for (name, text, says) in bad {
        let path = c.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = run_cli(&c, &["migrate", "run", &path.display().to_string()]).await;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was accepted");
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{name}: {stderr}");
        refused += 1;
    }
    assert_eq!(refused, 4);
    assert_eq!(
        table(&c).await,
        before,
        "a refused plan changed the routing table"
    );

    // A move of HK's shop, held in its rollback window.
    let mut users = Vec::new();
    for _ in 0..8 {
        users.push(c.signup("HK").await);
    }
    let mut acked: Acked = Vec::new();
    let put = |user: usize, key: String| {
        let (u, t) = users[user].clone();
        let (http, gw) = (c.http.clone(), c.gw());
        async move {
            let value = format!("value of {key}");
            let r = http
                .put(format!("{gw}/v1/users/{u}/orders/{key}"))
                .bearer_auth(t)
                .body(value.clone())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
            (user, key, value)
        }
    };
    for i in 0..16 {
        acked.push(put(i % 8, format!("before-{i}")).await);
    }
    let path = c.dir.path().join("rollback.toml");
    std::fs::write(&path, ROLLBACK_PLAN).unwrap();
    let out = run_cli(
        &c,
        &["migrate", "run", "--detach", &path.display().to_string()],
    )
    .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.until("Reversing", |s| {
        s["phases"][0]["steps"]["Reversing"] == s["phases"][0]["units"]
    })
    .await;
    // Written at the new owner inside the window: these must survive the rollback.
    for i in 0..16 {
        acked.push(put(i % 8, format!("in-window-{i}")).await);
    }
    // A stale writer at the old owner, at the epoch it used to own the range at: refused.
    let (u, _) = &users[0];
    let stale = c
        .http
        .put(format!(
            "{}/v1/users/{u}/orders/stale",
            url(&c.regions[0].1, "url")
        ))
        .header("x-domicile-market", "HK")
        .header("x-domicile-epoch", "1")
        .body("stale")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale.status(),
        StatusCode::MISDIRECTED_REQUEST,
        "split brain"
    );

    let out = run_cli(&c, &["migrate", "rollback"]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let done = c.until("RolledBack", |s| s["state"] == "rolled_back").await;
    assert_eq!(done["phases"][0]["state"], "rolled_back");
    // Every acknowledged write reads back with its value (status 200, same bytes).
    let lost = lost(&c, &users, &acked).await;
    assert!(lost.is_empty(), "lost in the rollback: {lost:?}");
    assert_eq!(held(&c.region("ap-singapore"), "ecommerce", "HK").await, 0);
    assert_eq!(
        held(&c.region("cn-beijing"), "ecommerce", "HK").await,
        acked.len() as u64
    );
    // The ledger: no transfer, the copy purged at the target, signed when the phase rolled back.
    let public_key = c.dir.path().join("control").join("ledger.pub");
    let key = public_key.display().to_string();
    let out = run_cli(&c, &["audit", "verify", "--public-key", &key]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_cli(&c, &["audit", "show", "--json"]).await;
    let export: domicile_wire::ledger::LedgerExport = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        !export.entries.iter().any(|e| e.kind == "transfer"),
        "{export:?}"
    );
    assert!(
        export.entries.iter().any(|e| e.kind == "purge"
            && e.body["reason"] == "rolled back"
            && e.body["region"] == "ap-singapore"),
        "{export:?}"
    );
    assert!(
        export
            .entries
            .iter()
            .any(|e| e.kind == "checkpoint" && e.body["reason"] == "phase shop rolled back"),
        "{export:?}"
    );
    let after = table(&c).await;
    let rows = after["placement"].as_array().unwrap();
    assert!(
        rows.iter()
            .filter(|r| r["service"] == "ecommerce" && r["market"] == "HK")
            .all(|r| r["region"] == "cn-beijing"),
        "{rows:?}"
    );
}

/// HK's shop to `target`, in two waves, with a one-second rollback window.
fn hk_shop_to(target: &str) -> String {
    format!(
        "name = \"hk-shop-to-{target}\"\n\
         [[phases]]\n\
         name = \"shop\"\n\
         services = [\"ecommerce\"]\n\
         markets = [\"HK\"]\n\
         target = \"{target}\"\n\
         waves = [10, 100]\n\
         rollback_window = \"1s\"\n"
    )
}

/// One cluster, two engines: cn-beijing on the embedded store, ap-singapore on PostgreSQL (a
/// throwaway cluster). HK's shop moves there and back under live writes; each move is verified
/// by equal digests with the source fenced, no acknowledged write is lost, and no copy stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_to_a_postgres_region_and_back_under_writes_loses_nothing() {
    if !domicile_pg_cluster::available_for_tests().expect("PostgreSQL must be installed here") {
        return;
    }
    let pg = tokio::task::spawn_blocking(domicile_pg_cluster::PgCluster::start)
        .await
        .unwrap()
        .expect("start a throwaway PostgreSQL cluster");
    let config = domicile_core::reference::CLUSTER_TOML.replace(
        "store = \"embedded:data/ap-singapore/store\"",
        &format!("store = \"{}?schema=ap_singapore\"", pg.url("postgres")),
    );
    assert_ne!(config, domicile_core::reference::CLUSTER_TOML);
    let c = Cluster::start_with(&config).await;
    let mut users = Vec::new();
    for market in ["HK", "CN"] {
        for _ in 0..8 {
            users.push(c.signup(market).await);
        }
    }
    let users = Arc::new(users);
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = writers(&c, &users, &stop, 3);

    let (beijing, singapore) = (c.region("cn-beijing"), c.region("ap-singapore"));
    let mut moves = Vec::new();
    for (plan, from, to) in [
        (hk_shop_to("ap-singapore"), &beijing, &singapore),
        (hk_shop_to("cn-beijing"), &singapore, &beijing),
    ] {
        let r = c
            .admin(reqwest::Method::POST, "/admin/migrations")
            .body(plan)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED, "{:?}", r.text().await);
        let done = c.until("Completed", |s| s["state"] == "completed").await;
        let phase = &done["phases"][0];
        assert_eq!(phase["verified"], true, "{done}");
        assert_eq!(phase["cutovers"], phase["units"], "{done}");
        assert_eq!(held(from, "ecommerce", "HK").await, 0, "HK left behind");
        assert!(held(to, "ecommerce", "HK").await > 0);
        moves.push(phase["records_moved"].clone());
    }
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.unwrap().0);
    }
    let lost = lost(&c, &users, &acked).await;
    assert!(
        lost.is_empty(),
        "{} acknowledged writes lost: {lost:?}",
        lost.len()
    );
    assert!(acked.len() > 10, "the writers wrote during the moves");
    eprintln!(
        "embedded -> postgres -> embedded: records moved {moves:?}, {} writes acknowledged",
        acked.len()
    );
}

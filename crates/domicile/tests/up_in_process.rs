//! `domicile up` runs the gateway and the region nodes in one process, and its gateway calls
//! them in-process (decision 0017): no socket, TLS or HTTP encoding between them, and the same
//! answers — ownership checks, refusals, 421s, holds and retries — as over the network.

use super::adversarial::signup;
use super::cluster_processes::{
    HTTP1, HTTP2, IN_PROCESS, RETRIES, begin_sg_shop_move, member_client, metric,
    put_in_background, start_up,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::Path;

/// Calls the gateway at `gw` sent to nodes over the network, in either HTTP version.
async fn over_network(http: &reqwest::Client, gw: &str) -> u64 {
    metric(http, gw, HTTP1).await + metric(http, gw, HTTP2).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_calls_its_own_nodes_in_process_with_every_check_of_the_network_path() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let up = start_up(&data);
    let e = &up.ready;
    let field = |k: &str| e[k].as_str().unwrap().to_string();
    let (gw, control) = (field("gateway"), field("control"));
    let region = |id: &str| e["regions"][id].as_str().unwrap().to_string();
    let (beijing, singapore) = (region("cn-beijing"), region("ap-singapore"));
    let admin = std::fs::read_to_string(field("admin_token_file")).unwrap();
    let http = member_client(Path::new(&field("tls_dir")));

    let (user, token) = signup(&http, &gw, "SG").await;
    let (other, _) = signup(&http, &gw, "SG").await;
    let record = format!("{gw}/v1/users/{user}/orders/o-1");

    // A write and a read, answered by cn-beijing's node inside the process.
    let put = http
        .put(&record)
        .bearer_auth(&token)
        .header("content-type", "text/plain")
        .body("first")
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), StatusCode::OK);
    let etag = put.headers().get("etag").cloned().expect("the node's ETag");
    let read = http.get(&record).bearer_auth(&token).send().await.unwrap();
    assert_eq!(read.status(), StatusCode::OK);
    assert_eq!(read.headers().get("etag"), Some(&etag));
    assert_eq!(read.text().await.unwrap(), "first");
    // The node's own refusals come back as they are: a stale If-Match is 412 and writes nothing.
    let stale = http
        .put(&record)
        .bearer_auth(&token)
        .header("if-match", "\"0\"")
        .body("lost")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), StatusCode::PRECONDITION_FAILED);
    let body: Value = stale.json().await.unwrap();
    assert_eq!(body["error"]["code"], "precondition_failed");
    // The gateway's: another user's data is 403, and nothing reaches a node for it.
    let before = metric(&http, &gw, IN_PROCESS).await;
    let theirs = http
        .get(format!("{gw}/v1/users/{other}/orders/o-1"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(theirs.status(), StatusCode::FORBIDDEN);
    assert_eq!(metric(&http, &gw, IN_PROCESS).await, before);
    assert!(before >= 3, "calls went in-process: {before}");
    assert_eq!(over_network(&http, &gw).await, 0, "no call used a socket");

    // A move's first half: cn-beijing releases SG's shop to ap-singapore, which owns it; the
    // gateway's table still says cn-beijing, whose in-process node must answer 421.
    begin_sg_shop_move(&http, &beijing, &singapore, "ap-singapore").await;
    let before = metric(&http, &gw, RETRIES).await;
    let held = put_in_background(&http, record.clone(), &token, "held");
    // The call met the 421 and waits for a newer table (no sleeps: the gateway says so).
    while metric(&http, &gw, RETRIES).await == before {
        tokio::task::yield_now().await;
    }
    let commit = http
        .post(format!("{control}/admin/placement"))
        .bearer_auth(admin.trim())
        .json(&json!({ "service": "ecommerce", "market": "SG", "buckets": "0-1023", "region": "ap-singapore" }))
        .send()
        .await
        .unwrap();
    assert_eq!(commit.status(), StatusCode::OK, "{:?}", commit.text().await);
    assert_eq!(
        held.await.unwrap(),
        StatusCode::OK,
        "retried at the new owner"
    );
    let direct = http
        .get(format!("{singapore}/v1/users/{user}/orders/o-1"))
        .header("x-domicile-market", "SG")
        .send()
        .await
        .unwrap();
    assert_eq!(
        direct.text().await.unwrap(),
        "held",
        "the write landed in ap-singapore"
    );
    let old = http
        .get(format!("{beijing}/v1/users/{user}/orders/o-1"))
        .header("x-domicile-market", "SG")
        .send()
        .await
        .unwrap();
    assert_eq!(
        old.status(),
        StatusCode::MISDIRECTED_REQUEST,
        "cn-beijing released it"
    );
    assert_eq!(over_network(&http, &gw).await, 0, "still no socket");
}

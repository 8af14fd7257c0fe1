//! A move's target pulling a snapshot from its source node (decision 0016): the source serves
//! on loopback, the target takes requests through its router.

use crate::harness::Node;
use axum::http::{Method, StatusCode};
use domicile_core::RegionId;
use domicile_region::BoundNode;
use domicile_store::{BlobStore, EmbeddedOptions, EmbeddedStore};
use std::sync::Arc;

const SCOPE: &str = r#"{"service":"ecommerce","market":"HK","buckets":"0-1023"}"#;

/// A cn-beijing node serving on loopback (plaintext), with `users` HK users of three orders.
async fn serving_source(users: u32) -> (String, Node, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(&dir.path().join("store"), EmbeddedOptions::default()).unwrap();
    let blobs = BlobStore::local(&dir.path().join("blobs")).unwrap();
    let state = domicile_region::open_sealed(
        &domicile_core::reference::cluster_config(),
        &RegionId::new("cn-beijing").unwrap(),
        Arc::new(store),
        blobs,
        &dir.path().join("keyring.json"),
    )
    .await
    .unwrap();
    let bound = BoundNode::bind(state, "127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", bound.local_addr().unwrap());
    let source = Node::of(bound.state());
    tokio::spawn(async move {
        let plaintext = domicile_tls::ServerTransport::InsecurePlaintext;
        bound.serve(&plaintext, std::future::pending()).await
    });
    for u in 0..users {
        for k in 0..3 {
            let path = format!("/v1/users/hk{u}/orders/o{k}");
            let r = source
                .data(Method::PUT, &path, "HK", format!("order {u}/{k}"))
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    (url, source, dir)
}

fn pull_request(source: &str, scope: &str) -> String {
    format!(r#"{{"source":"{source}","scope":{scope}}}"#)
}

/// Starts a pull of `SCOPE` from `source` at `target`; its session id and snapshot LSN.
async fn start_pull(target: &Node, source: &str) -> (u64, u64) {
    let started = target
        .send(
            Method::POST,
            "/internal/pull",
            &[],
            pull_request(source, SCOPE),
        )
        .await;
    assert_eq!(started.status, StatusCode::OK, "{:?}", started.body);
    let j = started.json();
    (
        j["session"].as_u64().unwrap(),
        j["snapshot_lsn"].as_u64().unwrap(),
    )
}

async fn digests(node: &Node) -> serde_json::Value {
    let r = node
        .send(Method::POST, "/internal/digest", &[], SCOPE)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["digests"].clone()
}

#[tokio::test]
async fn a_target_pulls_a_scope_from_its_source_chunk_by_chunk_and_ends_the_session() {
    let (url, source, _dir) = serving_source(40).await;
    let target = Node::start("us-west").await;

    let (session, snapshot_lsn) = start_pull(&target, &url).await;
    assert_eq!(snapshot_lsn, 120);

    let next = format!("/internal/pull/{session}/next");
    let (mut records, mut applied, mut chunks) = (0, 0, 0);
    loop {
        let r = target.send(Method::POST, &next, &[], "").await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let chunk = r.json()["chunk"].clone();
        if chunk.is_null() {
            break;
        }
        records += chunk["records"].as_u64().unwrap();
        applied += chunk["applied"].as_u64().unwrap();
        assert!(chunk["bytes"].as_u64().unwrap() > 0);
        chunks += 1;
    }
    assert_eq!((records, applied, chunks), (120, 120, 1));
    assert_eq!(digests(&source).await, digests(&target).await);
    assert!(
        target.state.pulls.is_empty(),
        "the last chunk ends the session"
    );
    target
        .send(Method::POST, &next, &[], "")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_pull_given_up_is_closed_and_its_session_is_gone() {
    let (url, _source, _dir) = serving_source(5).await;
    let target = Node::start("us-west").await;
    let (session, _) = start_pull(&target, &url).await;
    assert_eq!(target.state.pulls.len(), 1);
    let metrics = target.send(Method::GET, "/metrics", &[], "").await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.lines().any(|l| l == "domicile_region_pull_sessions 1"),
        "{text}"
    );

    let r = target
        .send(
            Method::DELETE,
            &format!("/internal/pull/{session}"),
            &[],
            "",
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(target.state.pulls.is_empty());
    for (method, path) in [
        (Method::POST, format!("/internal/pull/{session}/next")),
        (Method::DELETE, format!("/internal/pull/{session}")),
    ] {
        target
            .send(method, &path, &[], "")
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }

    // A purge of the scope (a rollback) ends a pull still running and waits for its imports:
    // nothing is written back behind it.
    start_pull(&target, &url).await;
    let purged = target
        .send(Method::POST, "/internal/purge", &[], SCOPE)
        .await;
    assert_eq!(purged.status, StatusCode::OK, "{:?}", purged.body);
    assert!(target.state.pulls.is_empty());
    let snap = target
        .send(Method::POST, "/internal/snapshot", &[], SCOPE)
        .await;
    let (_, records, _) = domicile_wire::frame::decode_all(&snap.body).unwrap();
    assert!(records.is_empty(), "{} records left behind", records.len());
}

#[tokio::test]
async fn pulls_that_cannot_run_are_refused_with_clear_errors_and_write_nothing() {
    let (url, _source, _dir) = serving_source(5).await;
    let target = Node::start("us-west").await;
    // A port nothing listens on any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let cn = r#"{"service":"ecommerce","market":"CN","buckets":"0-1023"}"#;
    let no_service = r#"{"service":"laundry","market":"HK","buckets":"0-1023"}"#;
    let cases: Vec<(String, StatusCode, &str)> = vec![
        (pull_request("ftp://x", SCOPE), StatusCode::BAD_REQUEST, "invalid_source"),
        (pull_request("not a url", SCOPE), StatusCode::BAD_REQUEST, "invalid_source"),
        // CN users may only ever be in cn-beijing.
        (pull_request(&url, cn), StatusCode::FORBIDDEN, "residency_violation"),
        (pull_request(&url, no_service), StatusCode::BAD_REQUEST, "unknown_service"),
        (pull_request(&closed, SCOPE), StatusCode::BAD_GATEWAY, "bad_gateway"),
        ("{".to_string(), StatusCode::BAD_REQUEST, "malformed_body"),
        (
            r#"{"source":"http://x","scope":{"service":"ecommerce","market":"HK","buckets":"0-1023"},"extra":1}"#.to_string(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
    ];
    for (body, status, code) in cases {
        target
            .send(Method::POST, "/internal/pull", &[], body.clone())
            .await
            .assert_error(status, code);
    }
    assert!(target.state.pulls.is_empty());
    assert_eq!(target.lsn(), 0, "nothing written");
    target
        .send(Method::POST, "/internal/pull/12/next", &[], "")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

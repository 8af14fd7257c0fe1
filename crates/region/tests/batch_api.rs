//! `POST /v1/users/{user}/batch`: one service's writes of one user, all or none.

use crate::harness::Node;
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

async fn batch(node: &Node, user: &str, market: &str, body: Value) -> crate::harness::Reply {
    node.data(
        Method::POST,
        &format!("/v1/users/{user}/batch"),
        market,
        body.to_string(),
    )
    .await
}

#[tokio::test]
async fn a_batch_writes_every_record_at_once_with_versions_in_order() {
    let node = Node::start("cn-beijing").await;
    let before = node.lsn();
    let r = batch(
        &node,
        "u1",
        "IN",
        json!({ "writes": [
            { "collection": "addresses", "key": "home", "value": { "line1": "1 Main St" } },
            { "collection": "orders", "key": "o-1", "value": { "total": 12345678901234567890u64 } },
            { "collection": "orders", "key": "o-2", "value": [1, 2, 3] },
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let versions: Vec<String> = r.json()["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions.len(), 3);
    assert_eq!(node.lsn(), before + 3, "one change-log entry per write");

    // Each value is stored as the JSON text it was sent as (big numbers intact).
    let o1 = node
        .data(Method::GET, "/v1/users/u1/orders/o-1", "IN", "")
        .await;
    assert_eq!(&o1.body[..], br#"{"total":12345678901234567890}"#);
    assert_eq!(
        o1.headers["etag"].to_str().unwrap(),
        format!("\"{}\"", versions[1])
    );

    // Deletes and preconditions, checked against the versions answered.
    let r = batch(
        &node,
        "u1",
        "IN",
        json!({ "writes": [
            { "collection": "orders", "key": "o-1", "delete": true, "if_match": format!("\"{}\"", versions[1]) },
            { "collection": "orders", "key": "o-3", "value": "new" },
        ]}),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    node.data(Method::GET, "/v1/users/u1/orders/o-1", "IN", "")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn a_batch_with_one_bad_write_writes_nothing() {
    let node = Node::start("cn-beijing").await;
    let ok = batch(
        &node,
        "u1",
        "IN",
        json!({ "writes": [{ "collection": "orders", "key": "o-1", "value": 1 }] }),
    )
    .await;
    assert_eq!(ok.status, StatusCode::OK);
    let big = "x".repeat((1 << 20) + 1);
    let cases: Vec<(Value, StatusCode, &str)> = vec![
        (
            json!({ "writes": [] }),
            StatusCode::BAD_REQUEST,
            "empty_batch",
        ),
        (
            json!({ "writes": (0..1001).map(|i| json!({ "collection": "orders", "key": format!("k{i}"), "value": 1 })).collect::<Vec<_>>() }),
            StatusCode::BAD_REQUEST,
            "batch_too_large",
        ),
        (
            json!({ "writes": [
                { "collection": "orders", "key": "o-9", "value": 1 },
                { "collection": "profile", "key": "main", "value": 1 },
            ]}),
            StatusCode::BAD_REQUEST,
            "mixed_services",
        ),
        (
            json!({ "writes": [
                { "collection": "orders", "key": "o-9", "value": 1 },
                { "collection": "orders", "key": "o-9", "value": 2 },
            ]}),
            StatusCode::BAD_REQUEST,
            "duplicate_write",
        ),
        (
            json!({ "writes": [{ "collection": "photos", "key": "p", "value": 1 }] }),
            StatusCode::BAD_REQUEST,
            "blob_in_batch",
        ),
        (
            json!({ "writes": [{ "collection": "games", "key": "g", "value": 1 }] }),
            StatusCode::BAD_REQUEST,
            "unknown_collection",
        ),
        (
            json!({ "writes": [{ "collection": "orders", "key": "o-9" }] }),
            StatusCode::BAD_REQUEST,
            "invalid_write",
        ),
        (
            json!({ "writes": [{ "collection": "orders", "key": "o-9", "value": 1, "delete": true }] }),
            StatusCode::BAD_REQUEST,
            "invalid_write",
        ),
        (
            json!({ "writes": [
                { "collection": "orders", "key": "o-9", "value": 1 },
                { "collection": "orders", "key": "bad/key", "value": 1 },
            ]}),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            json!({ "writes": [
                { "collection": "orders", "key": "o-9", "value": 1 },
                { "collection": "orders", "key": "o-10", "value": big },
            ]}),
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            json!({ "writes": [{ "collection": "orders", "key": "o-9", "value": 1, "colour": "red" }] }),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        // A stale precondition fails the whole batch, the good write with it.
        (
            json!({ "writes": [
                { "collection": "orders", "key": "o-9", "value": 1 },
                { "collection": "orders", "key": "o-1", "value": 2, "if_match": "\"1\"" },
            ]}),
            StatusCode::PRECONDITION_FAILED,
            "precondition_failed",
        ),
        // Contacts need the user's consent: nothing of the batch is written without it.
        (
            json!({ "writes": [
                { "collection": "notes", "key": "n-1", "value": "x" },
                { "collection": "contacts", "key": "c-1", "value": "mum" },
            ]}),
            StatusCode::FORBIDDEN,
            "consent_required",
        ),
    ];
    for (body, status, code) in cases {
        let lsn = node.lsn();
        batch(&node, "u1", "IN", body.clone())
            .await
            .assert_error(status, code);
        assert_eq!(node.lsn(), lsn, "a refused batch wrote something: {body}");
    }
    node.data(Method::GET, "/v1/users/u1/orders/o-9", "IN", "")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    node.send(
        Method::POST,
        "/v1/users/u1/batch",
        &[("x-domicile-market", "IN")],
        "{not json",
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "malformed_body");
}

#[tokio::test]
async fn batches_obey_ownership_and_residency() {
    // A range owned elsewhere: 421, nothing written.
    let node = Node::start("us-west").await;
    let orders = json!({ "writes": [{ "collection": "orders", "key": "o-1", "value": 1 }] });
    let reply = batch(&node, "u1", "HK", orders.clone()).await;
    reply.assert_error(StatusCode::MISDIRECTED_REQUEST, "not_owner");
    assert_eq!(reply.json()["error"]["owner"], "cn-beijing");
    // CN users' data may only live in cn-beijing.
    batch(&node, "u1", "CN", orders)
        .await
        .assert_error(StatusCode::FORBIDDEN, "residency_violation");
    assert_eq!(node.lsn(), 0);
}

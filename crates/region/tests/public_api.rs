//! The public API: records, blobs, versions, preconditions, bad input, ownership, residency.

use crate::harness::{Node, reference_with};
use axum::http::{Method, StatusCode};
use domicile_core::{BucketCount, BucketRange, Epoch, Market, ServiceName, UserId};

#[tokio::test]
async fn records_round_trip_with_versions_as_etags() {
    let node = Node::start("cn-beijing").await;
    let put = node
        .data(Method::PUT, "/v1/users/u1/orders/o-1", "IN", "hello")
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let version = put.json()["version"].as_str().unwrap().to_string();
    let etag = put.headers["etag"].to_str().unwrap().to_string();
    assert_eq!(etag, format!("\"{version}\""));

    let get = node
        .data(Method::GET, "/v1/users/u1/orders/o-1", "IN", "")
        .await;
    assert_eq!((get.status, &get.body[..]), (StatusCode::OK, &b"hello"[..]));
    assert_eq!(get.headers["etag"], etag.as_str());

    // Conditional writes: a stale ETag is refused and changes nothing.
    let lsn = node.lsn();
    let stale = node
        .send(
            Method::PUT,
            "/v1/users/u1/orders/o-1",
            &[("x-domicile-market", "IN"), ("if-match", "\"1\"")],
            "x",
        )
        .await;
    stale.assert_error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    let exists = node
        .send(
            Method::PUT,
            "/v1/users/u1/orders/o-1",
            &[("x-domicile-market", "IN"), ("if-none-match", "*")],
            "x",
        )
        .await;
    exists.assert_error(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(node.lsn(), lsn);
    let ok = node
        .send(
            Method::PUT,
            "/v1/users/u1/orders/o-1",
            &[("x-domicile-market", "IN"), ("if-match", &etag)],
            "v2",
        )
        .await;
    assert_eq!(ok.status, StatusCode::OK);

    for k in ["o-3", "o-2"] {
        node.data(Method::PUT, &format!("/v1/users/u1/orders/{k}"), "IN", "x")
            .await;
    }
    let page = node
        .data(Method::GET, "/v1/users/u1/orders?limit=2", "IN", "")
        .await
        .json();
    assert_eq!(page["items"].as_array().unwrap().len(), 2);
    assert_eq!(page["items"][0]["key"], "o-1");
    assert_eq!(page["next"], "o-2");
    let rest = node
        .data(Method::GET, "/v1/users/u1/orders?after=o-2", "IN", "")
        .await
        .json();
    assert_eq!(rest["items"][0]["key"], "o-3");
    assert!(rest["next"].is_null());

    let del = node
        .data(Method::DELETE, "/v1/users/u1/orders/o-1", "IN", "")
        .await;
    assert_eq!(del.status, StatusCode::OK);
    node.data(Method::GET, "/v1/users/u1/orders/o-1", "IN", "")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
    node.data(Method::DELETE, "/v1/users/u1/orders/o-1", "IN", "")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_input_gets_a_json_error_and_writes_nothing() {
    let node = Node::start("cn-beijing").await;
    let big = vec![b'x'; (1 << 20) + 1];
    /// (method, uri, headers, body, expected status, expected code)
    type Case<'a> = (
        Method,
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        StatusCode,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            Method::PUT,
            "/v1/users/bad%20id/orders/k",
            vec![("x-domicile-market", "IN")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            Method::PUT,
            "/v1/users/u/orders/k%2Fx",
            vec![("x-domicile-market", "IN")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            Method::PUT,
            "/v1/users/u/Orders/k",
            vec![("x-domicile-market", "IN")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_id",
        ),
        (
            Method::PUT,
            "/v1/users/u/games/k",
            vec![("x-domicile-market", "IN")],
            b"v".to_vec(),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PUT,
            "/v1/users/u/orders/k",
            vec![],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "missing_market",
        ),
        (
            Method::PUT,
            "/v1/users/u/orders/k",
            vec![("x-domicile-market", "XX")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_market",
        ),
        (
            Method::PUT,
            "/v1/users/u/orders/k",
            vec![("x-domicile-market", "IN"), ("x-domicile-epoch", "one")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            Method::PUT,
            "/v1/users/u/orders/k",
            vec![("x-domicile-market", "IN"), ("if-match", "W/\"1\"")],
            b"v".to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_header",
        ),
        (
            Method::PUT,
            "/v1/users/u/orders/k",
            vec![("x-domicile-market", "IN")],
            big,
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
        ),
        (
            Method::GET,
            "/v1/users/u/orders?limit=0",
            vec![("x-domicile-market", "IN")],
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/users/u/orders?limit=abc",
            vec![("x-domicile-market", "IN")],
            vec![],
            StatusCode::BAD_REQUEST,
            "invalid_query",
        ),
        (
            Method::GET,
            "/v1/nothing",
            vec![],
            vec![],
            StatusCode::NOT_FOUND,
            "not_found",
        ),
        (
            Method::PATCH,
            "/v1/users/u/orders/k",
            vec![("x-domicile-market", "IN")],
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/internal/digest",
            vec![],
            b"{not json".to_vec(),
            StatusCode::BAD_REQUEST,
            "malformed_body",
        ),
        (
            Method::POST,
            "/internal/digest",
            vec![],
            br#"{"service":"ecommerce","market":"IN","buckets":"0-5000"}"#.to_vec(),
            StatusCode::BAD_REQUEST,
            "invalid_buckets",
        ),
    ];
    let mut refused = 0;
    for (method, uri, headers, body, status, code) in cases {
        let reply = node.send(method.clone(), uri, &headers, body).await;
        assert_eq!(reply.status, status, "{method} {uri}: {:?}", reply.body);
        reply.assert_error(status, code);
        refused += 1;
    }
    assert_eq!(refused, 15);
    assert_eq!(node.lsn(), 0, "no refused request wrote anything");
}

#[tokio::test]
async fn requests_for_ranges_owned_elsewhere_get_421_naming_the_owner() {
    let node = Node::start("us-west").await;
    let reply = node
        .data(Method::PUT, "/v1/users/u1/orders/o-1", "HK", "x")
        .await;
    reply.assert_error(StatusCode::MISDIRECTED_REQUEST, "not_owner");
    assert_eq!(reply.json()["error"]["owner"], "cn-beijing");
    assert_eq!(reply.json()["error"]["epoch"], 1);
    node.data(Method::GET, "/v1/users/u1/orders/o-1", "HK", "")
        .await
        .assert_error(StatusCode::MISDIRECTED_REQUEST, "not_owner");

    let owner = Node::start("cn-beijing").await;
    let stale = owner
        .send(
            Method::PUT,
            "/v1/users/u1/orders/o-1",
            &[("x-domicile-market", "HK"), ("x-domicile-epoch", "7")],
            "x",
        )
        .await;
    stale.assert_error(StatusCode::MISDIRECTED_REQUEST, "stale_epoch");
    let current = owner
        .send(
            Method::PUT,
            "/v1/users/u1/orders/o-1",
            &[("x-domicile-market", "HK"), ("x-domicile-epoch", "1")],
            "x",
        )
        .await;
    assert_eq!(current.status, StatusCode::OK);
    assert_eq!(node.lsn(), 0);
}

#[tokio::test]
async fn residency_is_enforced_even_when_ownership_is_mis_set() {
    let node = Node::start("us-west").await;
    // An operator mistake: us-west is told it owns CN's accounts.
    let service = ServiceName::new("account").unwrap();
    let cn = Market::new("CN").unwrap();
    node.state
        .change_ownership(
            domicile_region::ownership::Change::Own,
            &service,
            cn,
            BucketCount::DEFAULT.all(),
            Epoch(2),
            None,
        )
        .await
        .unwrap();
    let reply = node
        .data(Method::PUT, "/v1/users/u1/profile/main", "CN", "x")
        .await;
    reply.assert_error(StatusCode::FORBIDDEN, "residency_violation");
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("market CN")
            && message.contains("us-west")
            && message.contains("markets.CN.allowed"),
        "{message}"
    );
    node.data(Method::DELETE, "/v1/users/u1/profile/main", "CN", "")
        .await
        .assert_error(StatusCode::FORBIDDEN, "residency_violation");
    // And the internal API refuses to hand it the range in the first place.
    let own = node
        .send(
            Method::POST,
            "/internal/own",
            &[],
            r#"{"service":"account","market":"CN","buckets":"0-1023","epoch":3}"#,
        )
        .await;
    own.assert_error(StatusCode::FORBIDDEN, "residency_violation");
    assert_eq!(node.lsn(), 0);
}

#[tokio::test]
async fn fenced_ranges_refuse_writes_but_serve_reads() {
    let node = Node::start("cn-beijing").await;
    node.data(Method::PUT, "/v1/users/u1/orders/o-1", "SG", "x")
        .await;
    let bucket = BucketCount::DEFAULT.bucket_of(&UserId::new("u1").unwrap());
    let range = BucketRange::single(bucket);
    let body = format!(r#"{{"service":"ecommerce","market":"SG","buckets":"{range}","epoch":1}}"#);
    let fence = node
        .send(Method::POST, "/internal/fence", &[], body.clone())
        .await;
    assert_eq!(fence.status, StatusCode::OK, "{:?}", fence.body);
    assert_eq!(fence.json()["lsn"], node.lsn());
    node.data(Method::PUT, "/v1/users/u1/orders/o-2", "SG", "y")
        .await
        .assert_error(StatusCode::MISDIRECTED_REQUEST, "range_fenced");
    assert_eq!(
        node.data(Method::GET, "/v1/users/u1/orders/o-1", "SG", "")
            .await
            .status,
        StatusCode::OK
    );
    // Other services of the same user are not fenced.
    assert_eq!(
        node.data(Method::PUT, "/v1/users/u1/profile/p", "SG", "z")
            .await
            .status,
        StatusCode::OK
    );
    let unfence = node
        .send(Method::POST, "/internal/unfence", &[], body)
        .await;
    assert_eq!(unfence.status, StatusCode::OK);
    assert_eq!(
        node.data(Method::PUT, "/v1/users/u1/orders/o-2", "SG", "y")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn blobs_stream_through_with_a_size_limit() {
    let cluster =
        reference_with(|t| *t = t.replace("max_blob_bytes = 67108864", "max_blob_bytes = 300000"));
    let node = Node::start_with("cn-beijing", cluster).await;
    let photo: Vec<u8> = (0..250_000u32).map(|i| (i % 251) as u8).collect();
    let put = node
        .send(
            Method::PUT,
            "/v1/users/u1/photos/p1",
            &[("x-domicile-market", "MY"), ("content-type", "image/jpeg")],
            photo.clone(),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK, "{:?}", put.body);
    let get = node
        .data(Method::GET, "/v1/users/u1/photos/p1", "MY", "")
        .await;
    assert_eq!(get.status, StatusCode::OK);
    assert_eq!(get.headers["content-type"], "image/jpeg");
    assert_eq!(get.headers["content-length"], "250000");
    assert!(get.body == photo, "the photo comes back byte for byte");
    let lsn = node.lsn();
    let too_big = node
        .data(
            Method::PUT,
            "/v1/users/u1/photos/p2",
            "MY",
            vec![0u8; 300_001],
        )
        .await;
    too_big.assert_error(StatusCode::PAYLOAD_TOO_LARGE, "too_large");
    assert_eq!(node.lsn(), lsn);
    assert_eq!(
        node.data(Method::DELETE, "/v1/users/u1/photos/p1", "MY", "")
            .await
            .status,
        StatusCode::OK
    );
    node.data(Method::GET, "/v1/users/u1/photos/p1", "MY", "")
        .await
        .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn metrics_count_requests() {
    let node = Node::start("cn-beijing").await;
    node.data(Method::PUT, "/v1/users/u1/orders/o-1", "IN", "x")
        .await;
    let metrics = node.send(Method::GET, "/metrics", &[], "").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    assert!(text.contains("domicile_region_http_requests_total{route=\"/v1/users/{user}/{collection}/{key}\",method=\"PUT\",status=\"200\"} 1"), "{text}");
    assert!(text.contains("domicile_region_last_lsn 1"), "{text}");
}

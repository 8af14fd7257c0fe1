//! Consent, export pages and erasure at one region node.

use crate::harness::Node;
use axum::http::{Method, StatusCode};
use domicile_core::{BucketRange, Epoch, Market, ServiceName, UserId};
use serde_json::Value;

const NOTICE: &str = r#"{"notice_version":"2026-01"}"#;

async fn grant(node: &Node, user: &str) -> Value {
    let r = node
        .data(
            Method::PUT,
            &format!("/v1/users/{user}/consents/contacts-sync"),
            "MY",
            NOTICE,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()
}

#[tokio::test]
async fn a_write_without_a_grant_is_refused_and_a_grant_lets_it_in() {
    let node = Node::start("cn-beijing").await;
    let lsn = node.lsn();
    let refused = node
        .data(Method::PUT, "/v1/users/u1/contacts/c-1", "MY", "mum")
        .await;
    refused.assert_error(StatusCode::FORBIDDEN, "consent_required");
    assert_eq!(node.lsn(), lsn, "a refused write writes nothing");
    // Collections without a purpose need nothing.
    let notes = node
        .data(Method::PUT, "/v1/users/u1/notes/n-1", "MY", "x")
        .await;
    assert_eq!(notes.status, StatusCode::OK);

    let granted = grant(&node, "u1").await;
    assert_eq!(granted["service"], "cloud");
    assert_eq!(granted["consent"]["granted"], true);
    assert_eq!(granted["consent"]["notice_version"], "2026-01");
    assert!(granted["consent"]["granted_at"].as_str().is_some());
    let ok = node
        .data(Method::PUT, "/v1/users/u1/contacts/c-1", "MY", "mum")
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    // Another user's grant is theirs alone.
    node.data(Method::PUT, "/v1/users/u2/contacts/c-1", "MY", "x")
        .await
        .assert_error(StatusCode::FORBIDDEN, "consent_required");

    // The consent record is listed, and cannot be written through the data API.
    let list = node
        .data(Method::GET, "/v1/users/u1/consents?service=cloud", "MY", "")
        .await
        .json();
    assert_eq!(list["consents"][0]["consent"]["purpose"], "contacts-sync");
    node.data(
        Method::PUT,
        "/v1/users/u1/_consents/contacts-sync",
        "MY",
        r#"{"granted":true}"#,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn bad_consent_calls_are_refused_with_a_reason() {
    let node = Node::start("cn-beijing").await;
    node.data(
        Method::PUT,
        "/v1/users/u1/consents/ads-tracking",
        "MY",
        NOTICE,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    node.data(
        Method::PUT,
        "/v1/users/u1/consents/contacts-sync?service=ecommerce",
        "MY",
        NOTICE,
    )
    .await
    .assert_error(StatusCode::NOT_FOUND, "not_found");
    for body in ["{", r#"{"notice_version":""}"#, r#"{"version":"1"}"#] {
        let r = node
            .data(
                Method::PUT,
                "/v1/users/u1/consents/contacts-sync",
                "MY",
                body,
            )
            .await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
    }
    node.send(
        Method::PUT,
        "/v1/users/u1/consents/contacts-sync",
        &[],
        NOTICE,
    )
    .await
    .assert_error(StatusCode::BAD_REQUEST, "missing_market");
    // CN's cloud data may not live in us-west: a grant there is refused like any write.
    let west = Node::start("us-west").await;
    west.data(
        Method::PUT,
        "/v1/users/u1/consents/contacts-sync",
        "CN",
        NOTICE,
    )
    .await
    .assert_error(StatusCode::FORBIDDEN, "residency_violation");
}

#[tokio::test]
async fn revoking_erases_the_purposes_data_and_keeps_the_revocation() {
    let node = Node::start("cn-beijing").await;
    grant(&node, "u1").await;
    grant(&node, "u2").await;
    for k in ["c-1", "c-2", "c-3"] {
        for u in ["u1", "u2"] {
            let r = node
                .data(
                    Method::PUT,
                    &format!("/v1/users/{u}/contacts/{k}"),
                    "MY",
                    "x",
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
    node.data(Method::PUT, "/v1/users/u1/notes/n-1", "MY", "keep")
        .await;
    let lsn = node.lsn();
    let revoked = node
        .data(
            Method::DELETE,
            "/v1/users/u1/consents/contacts-sync",
            "MY",
            "",
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{:?}", revoked.body);
    let j = revoked.json();
    assert_eq!(j["consent"]["granted"], false);
    assert_eq!(j["consent"]["notice_version"], "2026-01");
    assert!(j["consent"]["revoked_at"].as_str().is_some());
    assert_eq!(j["erased"]["records"], 3);
    assert_eq!(
        node.lsn(),
        lsn + 4,
        "the revocation and the three deletes are logged mutations"
    );

    let list = node
        .data(Method::GET, "/v1/users/u1/contacts", "MY", "")
        .await
        .json();
    assert_eq!(list["items"].as_array().unwrap().len(), 0, "{list}");
    let consents = node
        .data(Method::GET, "/v1/users/u1/consents?service=cloud", "MY", "")
        .await
        .json();
    assert_eq!(
        consents["consents"][0]["consent"]["granted"], false,
        "the revocation record remains"
    );
    node.data(Method::PUT, "/v1/users/u1/contacts/c-4", "MY", "x")
        .await
        .assert_error(StatusCode::FORBIDDEN, "consent_required");
    // Only the purpose's collections, only this user.
    let notes = node
        .data(Method::GET, "/v1/users/u1/notes/n-1", "MY", "")
        .await;
    assert_eq!(&notes.body[..], b"keep");
    let other = node
        .data(Method::GET, "/v1/users/u2/contacts", "MY", "")
        .await
        .json();
    assert_eq!(other["items"].as_array().unwrap().len(), 3);
    // Revoking again is harmless and keeps the first revocation's time.
    let again = node
        .data(
            Method::DELETE,
            "/v1/users/u1/consents/contacts-sync",
            "MY",
            "",
        )
        .await
        .json();
    assert_eq!(again["consent"]["revoked_at"], j["consent"]["revoked_at"]);
    assert_eq!(again["erased"]["records"], 0);
    let metrics = String::from_utf8(
        node.send(Method::GET, "/metrics", &[], "")
            .await
            .body
            .to_vec(),
    )
    .unwrap();
    assert!(
        metrics.contains("domicile_region_consents_revoked_total 2"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_revocation_at_a_node_that_does_not_own_the_data_is_misdirected() {
    let node = Node::start("cn-beijing").await;
    let cloud = ServiceName::new("cloud").unwrap();
    let my = Market::new("MY").unwrap();
    node.state
        .change_ownership(
            domicile_region::ownership::Change::Release,
            &cloud,
            my,
            BucketRange::new(0, 1023).unwrap(),
            Epoch(2),
            None,
        )
        .await
        .unwrap();
    node.data(
        Method::DELETE,
        "/v1/users/u1/consents/contacts-sync",
        "MY",
        "",
    )
    .await
    .assert_error(StatusCode::MISDIRECTED_REQUEST, "not_owner");
}

#[tokio::test]
async fn export_pages_carry_every_record_of_the_user_and_nothing_else() {
    let node = Node::start("cn-beijing").await;
    grant(&node, "u1").await;
    node.data(Method::PUT, "/v1/users/u1/contacts/c-1", "MY", "mum")
        .await;
    node.data(Method::PUT, "/v1/users/u1/notes/n-1", "MY", vec![0xffu8, 0])
        .await;
    node.data(Method::PUT, "/v1/users/u1/photos/p-1", "MY", "jpeg")
        .await;
    node.data(Method::PUT, "/v1/users/u2/notes/n-1", "MY", "canary")
        .await;
    let mut items = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let uri = match &after {
            Some(a) => format!("/v1/users/u1/export?service=cloud&limit=2&after={a}"),
            None => "/v1/users/u1/export?service=cloud&limit=2".to_string(),
        };
        let page = node.data(Method::GET, &uri, "MY", "").await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        let j = page.json();
        items.extend(j["items"].as_array().unwrap().clone());
        match j["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
    }
    let names: Vec<String> = items
        .iter()
        .map(|i| {
            format!(
                "{}/{}",
                i["collection"].as_str().unwrap(),
                i["key"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        names,
        [
            "_consents/contacts-sync",
            "contacts/c-1",
            "notes/n-1",
            "photos/p-1"
        ]
    );
    assert_eq!(items[1]["value"], "mum");
    assert_eq!(items[2]["value_base64"], "/wA=");
    assert_eq!(items[3]["blob"]["size"], 4);
    let bad = node
        .data(Method::GET, "/v1/users/u1/export?service=games", "MY", "")
        .await;
    bad.assert_error(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn erase_removes_the_users_data_owned_or_not_and_nothing_else() {
    let node = Node::start("cn-beijing").await;
    grant(&node, "u1").await;
    for (u, path, body) in [
        ("u1", "contacts/c-1", "mum"),
        ("u1", "notes/n-1", "x"),
        ("u1", "photos/p-1", "jpeg"),
        ("u1", "orders/o-1", "x"),
        ("u2", "notes/n-1", "canary"),
    ] {
        let r = node
            .data(Method::PUT, &format!("/v1/users/{u}/{path}"), "MY", body)
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    // ecommerce/MY now belongs to another region: its copy here is a leftover.
    let ecommerce = ServiceName::new("ecommerce").unwrap();
    let my = Market::new("MY").unwrap();
    node.state
        .change_ownership(
            domicile_region::ownership::Change::Release,
            &ecommerce,
            my,
            BucketRange::new(0, 1023).unwrap(),
            Epoch(2),
            Some("us-west".parse().unwrap()),
        )
        .await
        .unwrap();
    let lsn = node.lsn();
    let r = node
        .send(Method::POST, "/internal/users/u1/erase", &[], "")
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let j = r.json();
    assert_eq!(j["region"], "cn-beijing");
    assert_eq!(
        j["records"], 5,
        "consent, contact, note, photo; the order's copy"
    );
    assert_eq!(j["blobs"], 1);
    assert_eq!(
        j["keys_destroyed"], 2,
        "the user's data keys here: cloud (owned) and ecommerce (the copy)"
    );
    assert_eq!(
        node.lsn(),
        lsn + 4,
        "owned data is deleted by logged mutations, the foreign copy is not"
    );
    for path in ["contacts/c-1", "notes/n-1", "photos/p-1"] {
        node.data(Method::GET, &format!("/v1/users/u1/{path}"), "MY", "")
            .await
            .assert_error(StatusCode::NOT_FOUND, "not_found");
    }
    let user = UserId::new("u1").unwrap();
    for scope_service in ["ecommerce", "cloud"] {
        let left = node
            .state
            .store
            .list(
                &domicile_store::CollectionAddress::new(
                    ServiceName::new(scope_service).unwrap(),
                    my,
                    user.clone(),
                    if scope_service == "cloud" {
                        "notes"
                    } else {
                        "orders"
                    }
                    .parse()
                    .unwrap(),
                    node.state.buckets,
                ),
                None,
                10,
            )
            .await
            .unwrap();
        assert!(left.items.is_empty(), "{scope_service}");
    }
    let canary = node
        .data(Method::GET, "/v1/users/u2/notes/n-1", "MY", "")
        .await;
    assert_eq!(&canary.body[..], b"canary");
    // Idempotent: again, nothing left to remove.
    let again = node
        .send(Method::POST, "/internal/users/u1/erase", &[], "")
        .await
        .json();
    assert_eq!(
        (again["records"].as_u64(), again["blobs"].as_u64()),
        (Some(0), Some(0))
    );
    node.send(Method::POST, "/internal/users/bad%20id/erase", &[], "")
        .await
        .assert_error(StatusCode::BAD_REQUEST, "invalid_id");
}

#[tokio::test]
async fn erase_waits_out_a_fenced_range() {
    let node = Node::start("cn-beijing").await;
    node.data(Method::PUT, "/v1/users/u1/orders/o-1", "MY", "x")
        .await;
    let ecommerce = ServiceName::new("ecommerce").unwrap();
    let my = Market::new("MY").unwrap();
    let epoch = node
        .state
        .ownership()
        .check(
            &ecommerce,
            my,
            node.state.buckets.bucket_of(&UserId::new("u1").unwrap()),
            None,
            false,
        )
        .unwrap();
    node.state
        .change_ownership(
            domicile_region::ownership::Change::Fence,
            &ecommerce,
            my,
            BucketRange::new(0, 1023).unwrap(),
            epoch,
            None,
        )
        .await
        .unwrap();
    let lsn = node.lsn();
    node.send(Method::POST, "/internal/users/u1/erase", &[], "")
        .await
        .assert_error(StatusCode::MISDIRECTED_REQUEST, "range_fenced");
    assert_eq!(node.lsn(), lsn, "nothing logged after the fence");
}

#[tokio::test]
async fn consent_records_move_with_their_services_data() {
    let source = Node::start("cn-beijing").await;
    let target = Node::start("ap-singapore").await;
    grant(&source, "u1").await;
    source
        .data(Method::PUT, "/v1/users/u1/contacts/c-1", "MY", "mum")
        .await;
    // A move of cloud/MY by hand: snapshot, import, own at a newer epoch.
    let snap = source
        .send(
            Method::POST,
            "/internal/snapshot",
            &[],
            r#"{"service":"cloud","market":"MY","buckets":"0-1023"}"#,
        )
        .await;
    let (_, records, _) = domicile_wire::frame::decode_all(&snap.body).unwrap();
    let imported = target
        .import(
            "service=cloud&market=MY",
            crate::internal_api::import_body(&records),
        )
        .await;
    assert_eq!(imported.status, StatusCode::OK, "{:?}", imported.body);
    assert_eq!(
        imported.json()["applied"],
        2,
        "the consent record and the contact"
    );
    target
        .state
        .change_ownership(
            domicile_region::ownership::Change::Own,
            &ServiceName::new("cloud").unwrap(),
            Market::new("MY").unwrap(),
            BucketRange::new(0, 1023).unwrap(),
            Epoch(2),
            None,
        )
        .await
        .unwrap();
    // The new owner checks the grant that moved with the data.
    let ok = target
        .data(Method::PUT, "/v1/users/u1/contacts/c-2", "MY", "dad")
        .await;
    assert_eq!(ok.status, StatusCode::OK, "{:?}", ok.body);
    target
        .data(Method::PUT, "/v1/users/u2/contacts/c-1", "MY", "x")
        .await
        .assert_error(StatusCode::FORBIDDEN, "consent_required");
    let revoked = target
        .data(
            Method::DELETE,
            "/v1/users/u1/consents/contacts-sync",
            "MY",
            "",
        )
        .await
        .json();
    assert_eq!(revoked["erased"]["records"], 2);
}

/// Writes racing a revocation: whatever the interleaving, each write is either refused or
/// erased by it — none survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_write_racing_a_revocation_survives_it() {
    let node = std::sync::Arc::new(Node::start("cn-beijing").await);
    grant(&node, "u1").await;
    let writers: Vec<_> = (0..40)
        .map(|i| {
            let node = node.clone();
            tokio::spawn(async move {
                node.data(
                    Method::PUT,
                    &format!("/v1/users/u1/contacts/c-{i}"),
                    "MY",
                    "x",
                )
                .await
                .status
            })
        })
        .collect();
    let revoke = {
        let node = node.clone();
        tokio::spawn(async move {
            node.data(
                Method::DELETE,
                "/v1/users/u1/consents/contacts-sync",
                "MY",
                "",
            )
            .await
            .status
        })
    };
    assert_eq!(revoke.await.unwrap(), StatusCode::OK);
    for w in writers {
        let status = w.await.unwrap();
        assert!(
            status == StatusCode::OK || status == StatusCode::FORBIDDEN,
            "{status}"
        );
    }
    let list = node
        .data(Method::GET, "/v1/users/u1/contacts", "MY", "")
        .await
        .json();
    assert_eq!(list["items"], serde_json::json!([]), "{list}");
}

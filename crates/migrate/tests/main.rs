//! The mover between two real region nodes on loopback, under concurrent writes.

use axum::http::StatusCode;
use domicile_client::region::RegionClient;
use domicile_core::RegionId;
use domicile_migrate::Mover;
use domicile_region::{BoundNode, NodeState};
use domicile_store::{BlobStore, EmbeddedOptions, EmbeddedStore};
use domicile_wire::api::ScopeRequest;
use std::sync::Arc;

async fn node(region: &str, dir: &std::path::Path) -> (String, Arc<NodeState>) {
    let cluster = domicile_core::reference::cluster_config();
    let store = EmbeddedStore::open(&dir.join(region), EmbeddedOptions::default()).unwrap();
    let blobs = BlobStore::local(&dir.join(format!("{region}-blobs"))).unwrap();
    let state = NodeState::new(
        &cluster,
        RegionId::new(region).unwrap(),
        Arc::new(store),
        blobs,
    )
    .await
    .unwrap();
    let bound = BoundNode::bind(state, "127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", bound.local_addr().unwrap());
    let state = bound.state();
    tokio::spawn(bound.serve(std::future::pending()));
    (url, state)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_copied_under_writes_catches_up_and_verifies_equal() {
    let dir = tempfile::tempdir().unwrap();
    let (source_url, _) = node("cn-beijing", dir.path()).await;
    let (target_url, _) = node("ap-singapore", dir.path()).await;
    let http = reqwest::Client::new();
    let put = {
        let (http, source_url) = (http.clone(), source_url.clone());
        move |user: String, key: String, value: String| {
            let (http, url) = (
                http.clone(),
                format!("{source_url}/v1/users/{user}/orders/{key}"),
            );
            async move {
                let r = http
                    .put(url)
                    .header("x-domicile-market", "MY")
                    .body(value)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), StatusCode::OK);
            }
        }
    };
    for i in 0..3_000 {
        put(
            format!("my{}", i % 300),
            format!("o{i}"),
            format!("order {i}"),
        )
        .await;
    }
    let scope = ScopeRequest {
        service: "ecommerce".parse().unwrap(),
        market: "MY".parse().unwrap(),
        buckets: "0-1023".parse().unwrap(),
    };
    let mover = Mover {
        source: RegionClient::new(source_url.clone(), http.clone()),
        target: RegionClient::new(target_url.clone(), http.clone()),
        scope: scope.clone(),
    };
    // Writes keep landing at the source while the copy runs.
    let writer = tokio::spawn({
        let put = put.clone();
        async move {
            for i in 0..500 {
                put(
                    format!("my{}", i % 50),
                    format!("late{i}"),
                    format!("late {i}"),
                )
                .await;
            }
        }
    });
    let copied = mover.copy(|_| {}).await.unwrap();
    assert!(copied.records >= 3_000);
    writer.await.unwrap();
    let (_, applied) = mover.catch_up(copied.snapshot_lsn).await.unwrap();
    assert!(applied + copied.records >= 3_500);
    let v = mover.verify().await.unwrap();
    assert!(v.equal(), "digests differ in {:?}", v.differing);
    assert_eq!(v.records, 3_500);

    // A record changed behind the mover's back is found by the digests and repaired.
    let r = http
        .put(format!("{target_url}/v1/users/my7/orders/o7"))
        .header("x-domicile-market", "MY")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        StatusCode::MISDIRECTED_REQUEST,
        "the target does not own it yet"
    );
    let stale = domicile_store::VersionedRecord {
        address: domicile_store::CollectionAddress::new(
            scope.service.clone(),
            scope.market,
            "my7".parse().unwrap(),
            "orders".parse().unwrap(),
            domicile_core::BucketCount::DEFAULT,
        )
        .record("extra".parse().unwrap()),
        version: domicile_core::Version(1),
        value: None,
    };
    mover
        .target
        .import(&scope, std::slice::from_ref(&stale))
        .await
        .unwrap();
    let v = mover.verify().await.unwrap();
    assert!(v.equal(), "a tombstone alone does not change a digest");
    let live = domicile_store::VersionedRecord {
        value: Some(bytes::Bytes::from("tampered")),
        version: domicile_core::Version(2),
        ..stale
    };
    mover.target.import(&scope, &[live]).await.unwrap();
    let v = mover.verify().await.unwrap();
    assert_eq!(v.differing.len(), 1);
    // Repairing re-copies the bucket from the source. FIXME(issue 4): a key that only the target
    // holds is not removed yet — narrowing to keys (and tombstoning extras) is the engine's
    // next step; today the bucket still differs after the repair, and this asserts that.
    let repaired = mover.repair(&v.differing).await.unwrap();
    assert_eq!(repaired, 0, "every source record was already there");
    assert_eq!(mover.verify().await.unwrap().differing.len(), 1);
}

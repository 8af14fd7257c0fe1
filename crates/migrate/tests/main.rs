//! The mover between two real region nodes on loopback, under concurrent writes.

use axum::http::StatusCode;
use domicile_client::region::RegionClient;
use domicile_core::{BucketCount, RegionId};
use domicile_migrate::Mover;
use domicile_region::{BoundNode, NodeState};
use domicile_store::{BlobStore, EmbeddedOptions, EmbeddedStore};
use domicile_wire::api::ScopeRequest;
use std::sync::Arc;

/// The certificates of the test's cluster (made on first use, in `dir/tls`).
fn tls(dir: &std::path::Path, role: domicile_tls::Role) -> domicile_tls::RoleTls {
    let certs = dir.join("tls");
    domicile_tls::certs::ensure(&certs).unwrap();
    domicile_tls::RoleTls::load(&certs, role).unwrap()
}

/// A client of the test's region nodes: mutual TLS with the cluster's `client` certificate.
fn cluster_client(dir: &std::path::Path) -> reqwest::Client {
    domicile_client::http_client(&tls(dir, domicile_tls::Role::Client).client)
}

/// A region node serving over mutual TLS, as in a cluster.
async fn node(region: &str, dir: &std::path::Path) -> (String, Arc<NodeState>) {
    let cluster = domicile_core::reference::cluster_config();
    let store = EmbeddedStore::open(&dir.join(region), EmbeddedOptions::default()).unwrap();
    let blobs = BlobStore::local(&dir.join(format!("{region}-blobs"))).unwrap();
    let state = domicile_region::open_sealed(
        &cluster,
        &RegionId::new(region).unwrap(),
        Arc::new(store),
        blobs,
        &dir.join(format!("{region}-keyring.json")),
    )
    .await
    .unwrap()
    .with_peer_transport(&tls(dir, domicile_tls::Role::Region).client);
    let bound = BoundNode::bind(state, "127.0.0.1:0").await.unwrap();
    let url = format!("https://{}", bound.local_addr().unwrap());
    let state = bound.state();
    let transport = tls(dir, domicile_tls::Role::Region).server;
    tokio::spawn(async move { bound.serve(&transport, std::future::pending()).await });
    (url, state)
}

/// A mover of `service` in `market` (every bucket) from a new cn-beijing node to a new
/// ap-singapore node.
async fn mover_between_new_nodes(dir: &std::path::Path, service: &str, market: &str) -> Mover {
    let (source_url, _) = node("cn-beijing", dir).await;
    let (target_url, _) = node("ap-singapore", dir).await;
    let http = cluster_client(dir);
    let scope = ScopeRequest {
        service: service.parse().unwrap(),
        market: market.parse().unwrap(),
        buckets: "0-1023".parse().unwrap(),
    };
    Mover {
        source: RegionClient::new(source_url, http.clone()),
        target: RegionClient::new(target_url, http),
        blob_collections: reference_blob_collections(&scope.service),
        scope,
        buckets: BucketCount::DEFAULT,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_copied_under_writes_catches_up_and_verifies_equal() {
    let dir = tempfile::tempdir().unwrap();
    let (source_url, _) = node("cn-beijing", dir.path()).await;
    let (target_url, _) = node("ap-singapore", dir.path()).await;
    let http = cluster_client(dir.path());
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
        buckets: BucketCount::DEFAULT,
        blob_collections: reference_blob_collections(&scope.service),
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
    // The repair is narrowed to the one key that differs: a live key only the target holds,
    // which it tombstones; every other record of the bucket was already there.
    let repaired = mover.repair(&v.differing).await.unwrap();
    assert_eq!(repaired, 1, "only the extra key differed");
    assert!(mover.verify().await.unwrap().equal());
    let mut at_target = mover.target.snapshot(&scope).await.unwrap();
    let mut extra = None;
    while let Some(batch) = at_target.next_batch(1_000).await.unwrap() {
        extra = extra.or(batch
            .into_iter()
            .find(|r| r.address.key.as_str() == "extra"));
    }
    let extra = extra.expect("the extra key's tombstone");
    assert_eq!(extra.value, None, "the extra key is gone");
    assert_eq!(
        extra.version,
        domicile_core::Version(3),
        "one above its version"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn photos_move_with_their_blobs_and_the_purged_source_loses_its_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (source_url, source) = node("cn-beijing", dir.path()).await;
    let (target_url, _) = node("ap-singapore", dir.path()).await;
    let http = cluster_client(dir.path());
    let photo = |u: usize| -> Vec<u8> {
        format!("photo-canary-{u}-")
            .bytes()
            .cycle()
            .take(150_000 + u)
            .collect()
    };
    let users = 20;
    for u in 0..users {
        let r = http
            .put(format!("{source_url}/v1/users/sg{u}/photos/p1"))
            .header("x-domicile-market", "SG")
            .header("content-type", "image/jpeg")
            .body(photo(u))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{}", r.text().await.unwrap());
    }
    let scope = ScopeRequest {
        service: "cloud".parse().unwrap(),
        market: "SG".parse().unwrap(),
        buckets: "0-1023".parse().unwrap(),
    };
    let mover = Mover {
        source: RegionClient::new(source_url.clone(), http.clone()),
        target: RegionClient::new(target_url.clone(), http.clone()),
        scope: scope.clone(),
        buckets: BucketCount::DEFAULT,
        blob_collections: reference_blob_collections(&scope.service),
    };
    let copied = mover.copy(|_| {}).await.unwrap();
    assert_eq!(copied.records, users as u64);
    assert!(
        copied.bytes > (users * 150_000) as u64,
        "the copy counts the blobs' bytes: {}",
        copied.bytes
    );
    assert!(mover.verify().await.unwrap().equal());

    // Every photo is at the target, byte for byte (opened there under the target's own keys).
    let owner = |u: usize| {
        domicile_store::CollectionAddress::new(
            scope.service.clone(),
            scope.market,
            format!("sg{u}").parse().unwrap(),
            "photos".parse().unwrap(),
            BucketCount::DEFAULT,
        )
    };
    for u in 0..users {
        let hash = blake3::hash(&photo(u)).to_hex().to_string();
        assert!(mover.target.has_blob(&owner(u), &hash).await.unwrap());
        let body = http
            .get(format!(
                "{target_url}/internal/blobs/cloud/SG/sg{u}/photos/{hash}"
            ))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        assert_eq!(body.as_ref(), photo(u).as_slice());
    }
    // A second copy finds every blob there already and carries none again.
    let again = mover.copy(|_| {}).await.unwrap();
    assert!(again.bytes < (users * 1_000) as u64, "{}", again.bytes);

    // No copy left behind: the purged source holds neither the blobs nor the keys to its bytes.
    let release = domicile_wire::api::RangeRequest {
        service: scope.service.clone(),
        market: scope.market,
        buckets: "0-1023".parse().unwrap(),
        epoch: domicile_core::Epoch(2),
        owner: Some("ap-singapore".parse().unwrap()),
    };
    mover.source.release(&release).await.unwrap();
    let purged = mover.source.purge(&scope).await.unwrap();
    assert_eq!(
        (purged.blobs, purged.keys_destroyed),
        (users as u64, users as u64)
    );
    let keys = source.data_keys.as_ref().unwrap();
    for u in 0..users {
        let hash = blake3::hash(&photo(u)).to_hex().to_string();
        assert!(!mover.source.has_blob(&owner(u), &hash).await.unwrap());
        assert!(matches!(
            keys.for_read(&owner(u)).await,
            Err(domicile_store::StoreError::Encryption(
                domicile_store::EncryptionError::KeyDestroyed(_)
            ))
        ));
    }
}

/// A test control plane's commit: the range released at its old owner and owned by `owner`
/// (the source or the target) at the next epoch, which `current` then records.
async fn hand_over(
    source: &RegionClient,
    target: &RegionClient,
    current: &std::sync::Mutex<(RegionId, domicile_core::Epoch)>,
    spec: &domicile_migrate::wave::WaveSpec,
    owner: &RegionId,
) -> Result<domicile_core::Epoch, String> {
    let epoch = current.lock().unwrap().1.next();
    let range = |owner| domicile_wire::api::RangeRequest {
        service: spec.service.clone(),
        market: spec.market,
        buckets: spec.buckets,
        epoch,
        owner,
    };
    let (from, to) = if *owner == spec.target {
        (source, target)
    } else {
        (target, source)
    };
    from.release(&range(Some(owner.clone())))
        .await
        .map_err(|e| e.to_string())?;
    to.own(&range(None)).await.map_err(|e| e.to_string())?;
    *current.lock().unwrap() = (owner.clone(), epoch);
    Ok(epoch)
}

mod waves {
    use super::{hand_over, node};
    use axum::http::StatusCode;
    use domicile_client::region::RegionClient;
    use domicile_core::{BucketCount, Epoch, RegionId};
    use domicile_migrate::Mover;
    use domicile_migrate::throttle::Throttle;
    use domicile_migrate::wave::{self, Control, Step, Wave, WaveSpec};
    use domicile_wire::api::RangeRequest;
    use std::sync::Mutex;

    /// The control plane's part, done by hand against the same region nodes: checkpoints kept
    /// in memory (every one, to check the order of steps), the commit as release + own.
    struct Hand {
        source: RegionClient,
        target: RegionClient,
        steps: Mutex<Vec<Step>>,
        owner: Mutex<(RegionId, Epoch)>,
    }

    impl Control for Hand {
        async fn checkpoint(&self, wave: &Wave) -> Result<(), String> {
            let mut steps = self.steps.lock().unwrap();
            if steps.last() != Some(&wave.step) {
                steps.push(wave.step);
            }
            Ok(())
        }
        async fn commit(&self, spec: &WaveSpec, owner: &RegionId) -> Result<Epoch, String> {
            hand_over(&self.source, &self.target, &self.owner, spec, owner).await
        }
        async fn owner(&self, _: &WaveSpec) -> Result<(RegionId, Epoch), String> {
            Ok(self.owner.lock().unwrap().clone())
        }
    }

    async fn setup(
        dir: &std::path::Path,
        rollback_window: std::time::Duration,
    ) -> (reqwest::Client, String, String, Mover, Hand, WaveSpec) {
        let (source_url, _) = node("cn-beijing", dir).await;
        let (target_url, _) = node("ap-singapore", dir).await;
        let http = super::cluster_client(dir);
        for i in 0..200 {
            let r = http
                .put(format!("{source_url}/v1/users/id{}/orders/o{i}", i % 20))
                .header("x-domicile-market", "ID")
                .body(format!("order {i}"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let spec = WaveSpec {
            service: "ecommerce".parse().unwrap(),
            market: "ID".parse().unwrap(),
            buckets: BucketCount::DEFAULT.all(),
            source: "cn-beijing".parse().unwrap(),
            target: "ap-singapore".parse().unwrap(),
            epoch: Epoch(1),
            rollback_window,
        };
        let client = |u: &str| RegionClient::new(u.to_string(), http.clone());
        let mover = Mover {
            source: client(&source_url),
            target: client(&target_url),
            scope: spec.scope(),
            buckets: BucketCount::DEFAULT,
            blob_collections: crate::reference_blob_collections(&spec.scope().service),
        };
        let hand = Hand {
            source: client(&source_url),
            target: client(&target_url),
            steps: Mutex::new(Vec::new()),
            owner: Mutex::new((spec.source.clone(), spec.epoch)),
        };
        (http, source_url, target_url, mover, hand, spec)
    }

    fn put(
        http: &reqwest::Client,
        base: &str,
        key: &str,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
        http.put(format!("{base}/v1/users/id3/orders/{key}"))
            .header("x-domicile-market", "ID")
            .body(key.to_string())
            .send()
    }

    fn get(
        http: &reqwest::Client,
        base: &str,
        key: &str,
    ) -> impl std::future::Future<Output = reqwest::Result<reqwest::Response>> {
        http.get(format!("{base}/v1/users/id3/orders/{key}"))
            .header("x-domicile-market", "ID")
            .send()
    }

    async fn is_empty(client: &RegionClient, spec: &WaveSpec) -> bool {
        client
            .snapshot(&spec.scope())
            .await
            .unwrap()
            .next_batch(10)
            .await
            .unwrap()
            .is_none()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wave_runs_through_every_step_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let (http, source_url, target_url, mover, hand, spec) =
            setup(dir.path(), std::time::Duration::ZERO).await;
        let mut w = Wave::new(spec);
        wave::run(&mut w, &mover, &hand, &Throttle::new(None))
            .await
            .unwrap();
        assert_eq!(
            *hand.steps.lock().unwrap(),
            [
                Step::Copying,
                Step::CatchingUp,
                Step::Verifying,
                Step::CuttingOver,
                Step::Completed
            ]
        );
        assert!(
            w.verified && w.records_copied == 200 && w.purged == 200,
            "{w:?}"
        );
        let r = get(&http, &target_url, "o3").await.unwrap();
        assert_eq!(r.text().await.unwrap(), "order 3");
        let old = get(&http, &source_url, "o3").await.unwrap();
        assert_eq!(old.status(), StatusCode::MISDIRECTED_REQUEST);
        assert!(
            is_empty(&mover.source, &w.spec).await,
            "no copy left behind"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_wave_rolled_back_mid_cutover_gives_the_source_its_writes_back() {
        let dir = tempfile::tempdir().unwrap();
        let (http, source_url, _, mover, hand, spec) =
            setup(dir.path(), std::time::Duration::ZERO).await;
        // As if the mover crashed mid-cutover: the copy is at the target, the source is fenced.
        mover.copy(|_| {}).await.unwrap();
        let fence = RangeRequest {
            service: spec.service.clone(),
            market: spec.market,
            buckets: spec.buckets,
            epoch: Epoch(1),
            owner: None,
        };
        mover.source.fence(&fence).await.unwrap();
        let fenced = put(&http, &source_url, "during").await.unwrap();
        assert_eq!(fenced.status(), StatusCode::MISDIRECTED_REQUEST, "fenced");
        let mut w = Wave::new(spec);
        w.step = Step::CuttingOver;
        wave::request_rollback(&mut w).unwrap();
        wave::run(&mut w, &mover, &hand, &Throttle::new(None))
            .await
            .unwrap();
        assert_eq!(w.step, Step::RolledBack);
        let r = put(&http, &source_url, "after").await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "the source takes writes again");
        assert!(
            is_empty(&mover.target, &w.spec).await,
            "the partial copy is gone"
        );
        // A wave that has completed cannot roll back: that is a move in the other direction.
        w.step = Step::Completed;
        assert!(wave::request_rollback(&mut w).is_err());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rollback_in_the_window_keeps_the_writes_made_at_the_target() {
        let dir = tempfile::tempdir().unwrap();
        let (http, source_url, target_url, mover, hand, spec) =
            setup(dir.path(), std::time::Duration::from_secs(3600)).await;
        let mut w = Wave::new(spec);
        let throttle = Throttle::new(None);
        wave::run(&mut w, &mover, &hand, &throttle).await.unwrap();
        assert_eq!(w.step, Step::Reversing);
        // Acknowledged at the new owner during the rollback window: one new, one overwritten.
        for key in ["new-at-target", "o3"] {
            let r = put(&http, &target_url, key).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        // A stale writer at the old owner is refused: one writer per bucket.
        let stale = put(&http, &source_url, "stale").await.unwrap();
        assert_eq!(stale.status(), StatusCode::MISDIRECTED_REQUEST);
        // Part of it flows back before the rollback, the rest is drained by it.
        wave::reverse_pass(&mut w, &mover, std::time::Duration::ZERO)
            .await
            .unwrap();
        let late = put(&http, &target_url, "late-at-target").await.unwrap();
        assert_eq!(late.status(), StatusCode::OK);
        wave::request_rollback(&mut w).unwrap();
        wave::run(&mut w, &mover, &hand, &throttle).await.unwrap();
        assert_eq!(w.step, Step::RolledBack);
        for (key, value) in [
            ("new-at-target", "new-at-target"),
            ("o3", "o3"),
            ("late-at-target", "late-at-target"),
            ("o23", "order 23"),
        ] {
            let r = get(&http, &source_url, key).await.unwrap();
            assert_eq!(r.status(), StatusCode::OK, "{key}");
            assert_eq!(r.text().await.unwrap(), value);
        }
        let refused = get(&http, &target_url, "o3").await.unwrap();
        assert_eq!(refused.status(), StatusCode::MISDIRECTED_REQUEST);
        assert!(
            is_empty(&mover.target, &w.spec).await,
            "the target's copy is gone"
        );
    }
}
mod wave_model;

fn reference_blob_collections(
    service: &domicile_core::ServiceName,
) -> std::collections::BTreeSet<domicile_core::CollectionName> {
    domicile_core::reference::cluster_config()
        .schema
        .blob_collections_of(service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_many_chunks_imports_them_side_by_side_and_reports_them_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let mover = mover_between_new_nodes(dir.path(), "ecommerce", "MY").await;
    let scope = mover.scope.clone();
    // 3.5 chunks' worth: the copy keeps two imports going and ends on a short chunk.
    let total = domicile_migrate::mover::CHUNK * 7 / 2;
    let records: Vec<_> = (0..total)
        .map(|i| domicile_store::VersionedRecord {
            address: domicile_store::CollectionAddress::new(
                scope.service.clone(),
                scope.market,
                format!("my{}", i % 5_000).parse().unwrap(),
                "orders".parse().unwrap(),
                BucketCount::DEFAULT,
            )
            .record(format!("o{i}").parse().unwrap()),
            version: domicile_core::Version(1_000 + i as u64),
            value: Some(bytes::Bytes::from(format!("order {i}"))),
        })
        .collect();
    for chunk in records.chunks(5_000) {
        mover.source.import(&scope, chunk).await.unwrap();
    }
    let mut run = mover.start_copy(&scope).await.unwrap();
    let unlimited = domicile_migrate::throttle::Throttle::new(None);
    let mut chunks = Vec::new();
    while let Some(c) = run.next_chunk(&unlimited).await.unwrap() {
        chunks.push(c);
    }
    let report = run.finish().await.unwrap();
    assert_eq!(report.records, total as u64);
    assert_eq!(report.applied, total as u64);
    assert!(chunks.len() >= 4, "{chunks:?}");
    // In snapshot order: totals grow chunk by chunk (by at most a chunk), and so does the
    // bucket copied whole below.
    let mut before = 0;
    for pair in chunks.windows(2) {
        assert!(
            pair[1].complete_below >= pair[0].complete_below,
            "{chunks:?}"
        );
    }
    for c in &chunks {
        assert!(c.records > before, "{chunks:?}");
        assert!(c.records - before <= domicile_migrate::mover::CHUNK as u64);
        before = c.records;
    }
    let v = mover.verify().await.unwrap();
    assert!(v.equal(), "digests differ in {:?}", v.differing);
    assert_eq!(v.records, total as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scope_of_large_records_copies_and_catches_up_in_bounded_imports() {
    let dir = tempfile::tempdir().unwrap();
    let mover = mover_between_new_nodes(dir.path(), "cloud", "MY").await;
    let scope = mover.scope.clone();
    // 140 notes of 1,000,000 bytes: 140 MB, more than a node takes in one import body
    // (128 MiB), so one chunk of them all would be refused.
    let note = |i: usize, round: u64| domicile_store::VersionedRecord {
        address: domicile_store::CollectionAddress::new(
            scope.service.clone(),
            scope.market,
            format!("my{}", i % 7).parse().unwrap(),
            "notes".parse().unwrap(),
            BucketCount::DEFAULT,
        )
        .record(format!("n{i}").parse().unwrap()),
        version: domicile_core::Version(1_000 * round + i as u64),
        value: Some(bytes::Bytes::from(vec![b'a' + (i % 26) as u8; 1_000_000])),
    };
    let first: Vec<_> = (0..140).map(|i| note(i, 1)).collect();
    for group in first.chunks(20) {
        mover.source.import(&scope, group).await.unwrap();
    }
    let copied = mover.copy(|_| {}).await.unwrap();
    assert_eq!((copied.records, copied.applied), (140, 140));
    assert!(mover.verify().await.unwrap().equal());
    // Rewritten after the snapshot: catch-up reads them in change streams cut short by their
    // size bound (a few records each) and imports them in bounded bodies. A pass cut short
    // says nothing about the lag: catching up to a lag of 256 changes still carries all 140.
    let second: Vec<_> = (0..140).map(|i| note(i, 2)).collect();
    for group in second.chunks(20) {
        mover.source.import(&scope, group).await.unwrap();
    }
    let caught_up = mover
        .catch_up_until(copied.snapshot_lsn, 256)
        .await
        .unwrap();
    assert_eq!(caught_up.records, 140);
    assert!(caught_up.passes > 1, "{caught_up:?}");
    assert!(mover.verify().await.unwrap().equal());
}

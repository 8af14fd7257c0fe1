//! Encryption at rest: the conformance suite through [`EncryptedStore`], no plaintext in any
//! file, sealed bytes that do not open anywhere but their place, and crypto-shredding.

use bytes::Bytes;
use domicile_core::{BucketCount, Scope, UserId};
use domicile_store::{
    BlobStore, EmbeddedOptions, EmbeddedStore, EncryptedStore, KeyringFile, RegionStore,
    StoreError, VersionedRecord,
};
use domicile_store_conformance::fixtures::{collection, order, put, service, whole};
use futures::TryStreamExt;
use std::path::Path;
use std::sync::Arc;

/// An embedded engine under `dir/engine`, sealed with `region`'s keyring at `keyring`.
fn open_sealed(
    dir: &Path,
    keyring: &Path,
    region: &str,
) -> (Arc<dyn RegionStore>, Arc<EncryptedStore>) {
    let engine: Arc<dyn RegionStore> = Arc::new(
        EmbeddedStore::open(&dir.join("engine"), EmbeddedOptions::default())
            .expect("open the embedded store"),
    );
    let sealed =
        EncryptedStore::with_keyring_file(engine.clone(), keyring, region).expect("keyring");
    (engine, Arc::new(sealed))
}

mod encrypted_conformance {
    use domicile_store::RegionStore;
    use futures::future::BoxFuture;
    use std::path::Path;
    use std::sync::Arc;

    fn open_encrypted(dir: &Path) -> BoxFuture<'static, Arc<dyn RegionStore>> {
        let dir = dir.to_path_buf();
        Box::pin(async move {
            let (_, sealed) = super::open_sealed(&dir, &dir.join("keyring.json"), "us-west");
            sealed as Arc<dyn RegionStore>
        })
    }

    domicile_store_conformance::suite!(open_encrypted);
}

const CANARY: &str = "canary-5f1d9c0e-plaintext-must-never-reach-disk";

/// Every file under `dir` that holds `needle`.
fn files_holding(dir: &Path, needle: &[u8]) -> Vec<std::path::PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if std::fs::read(&path)
                .unwrap()
                .windows(needle.len())
                .any(|w| w == needle)
            {
                hits.push(path);
            }
        }
    }
    hits
}

#[tokio::test]
async fn no_value_or_blob_reaches_a_file_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.json");
    let photo: Vec<u8> = CANARY.bytes().cycle().take(300_000).collect();
    {
        let (_, store) = open_sealed(dir.path(), &keyring, "us-west");
        for i in 0..200 {
            store
                .write(vec![put(
                    &order(&format!("u{i}"), "o1"),
                    &format!("{CANARY} #{i}"),
                )])
                .await
                .unwrap();
        }
        let blobs = BlobStore::local(&dir.path().join("blobs"))
            .unwrap()
            .with_encryption(store.keys().clone());
        let owner = collection("cloud", "SG", "ivy", "photos");
        let blob = blobs
            .put_bytes(&owner, Bytes::from(photo.clone()), 1 << 20)
            .await
            .unwrap();
        let back: Vec<Bytes> = blobs
            .get_stream(&owner, &blob.hash)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        assert_eq!(back.concat(), photo);
        assert_eq!(blob.size, photo.len() as u64);
        let got = store.get(&order("u7", "o1")).await.unwrap().unwrap();
        assert_eq!(got.value, Bytes::from(format!("{CANARY} #7")));
    }
    // The engine's journal and tables, the blob folder, the keyring: nothing holds the canary.
    assert_eq!(
        files_holding(dir.path(), CANARY.as_bytes()),
        Vec::<std::path::PathBuf>::new()
    );

    // The scan is not blind: the same writes on the bare engine leave the canary on disk.
    let bare_dir = tempfile::tempdir().unwrap();
    {
        let bare = EmbeddedStore::open(bare_dir.path(), EmbeddedOptions::default()).unwrap();
        bare.write(vec![put(&order("u1", "o1"), CANARY)])
            .await
            .unwrap();
    }
    assert!(!files_holding(bare_dir.path(), CANARY.as_bytes()).is_empty());
}

#[tokio::test]
async fn sealed_bytes_moved_to_another_key_or_user_do_not_open() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = open_sealed(dir.path(), &dir.path().join("k.json"), "us-west");
    let alice = order("alice", "o1");
    store.write(vec![put(&alice, CANARY)]).await.unwrap();
    store
        .write(vec![put(&order("bob", "o1"), "bob's own")])
        .await
        .unwrap();
    let sealed = engine.get(&alice).await.unwrap().unwrap();
    assert_ne!(sealed.value, Bytes::from(CANARY));

    let mut refused = 0;
    // The same bytes under another key of alice's, and under bob's (who has a data key too).
    for target in [order("alice", "o2"), order("bob", "o1")] {
        engine
            .import(vec![VersionedRecord {
                address: target.clone(),
                version: domicile_core::Version(u64::MAX / 2),
                value: Some(sealed.value.clone()),
            }])
            .await
            .unwrap();
        match store.get(&target).await {
            Err(StoreError::Encryption(_)) => refused += 1,
            other => panic!("moved sealed bytes opened at {target:?}: {other:?}"),
        }
    }
    assert_eq!(refused, 2);
    assert_eq!(
        store.get(&alice).await.unwrap().unwrap().value,
        Bytes::from(CANARY)
    );
}

#[tokio::test]
async fn another_regions_key_does_not_open_a_regions_data() {
    let dir = tempfile::tempdir().unwrap();
    let west_ring = dir.path().join("west.json");
    let record = order("alice", "o1");
    {
        let (_, west) = open_sealed(dir.path(), &west_ring, "us-west");
        west.write(vec![put(&record, CANARY)]).await.unwrap();
    }
    // The engine files carried to Singapore, opened with Singapore's keyring.
    let (_, singapore) = open_sealed(dir.path(), &dir.path().join("sg.json"), "ap-singapore");
    assert!(matches!(
        singapore.get(&record).await,
        Err(StoreError::Encryption(_))
    ));
    // And the west keyring file cannot be passed off as Singapore's.
    assert!(KeyringFile::open_or_create(&west_ring, "ap-singapore").is_err());
}

#[tokio::test]
async fn destroyed_keys_leave_the_remaining_bytes_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let (engine, store) = open_sealed(dir.path(), &dir.path().join("k.json"), "us-west");
    let moved = order("alice", "o1");
    let erased = order("bob", "o1");
    let kept = order("carol", "o1");
    for r in [&moved, &erased, &kept] {
        store.write(vec![put(r, CANARY)]).await.unwrap();
    }
    let leftovers: Vec<_> = [&moved, &erased]
        .iter()
        .map(|r| {
            (
                *r,
                futures::executor::block_on(engine.get(r)).unwrap().unwrap(),
            )
        })
        .collect();

    // A completed move destroys the scope's keys at the source; an erasure one user's.
    let scope: Scope = whole("ecommerce", "IN");
    let scope_of_alice = Scope {
        buckets: domicile_core::BucketSet::from_ranges([domicile_core::BucketRange {
            first: moved.bucket().0,
            last: moved.bucket().0,
        }]),
        ..scope
    };
    let keys = store.keys();
    assert!(keys.destroy_scope(&scope_of_alice).await.unwrap() >= 1);
    let bob = UserId::new("bob").unwrap();
    let bob_bucket = BucketCount::default().bucket_of(&bob);
    assert_eq!(
        keys.destroy_user(
            &bob,
            erased.collection.market,
            bob_bucket,
            &[service("ecommerce")]
        )
        .await
        .unwrap(),
        1
    );

    // The sealed bytes the engine still holds (nothing was purged here) no longer open, even
    // after a restart with the same keyring.
    drop(store);
    drop(engine);
    let (engine, store) = open_sealed(dir.path(), &dir.path().join("k.json"), "us-west");
    for (address, sealed) in leftovers {
        assert_eq!(engine.get(address).await.unwrap().unwrap(), sealed);
        assert!(matches!(
            store.get(address).await,
            Err(StoreError::Encryption(
                domicile_store::EncryptionError::KeyDestroyed(_)
            ))
        ));
    }
    assert_eq!(
        store.get(&kept).await.unwrap().unwrap().value,
        Bytes::from(CANARY)
    );
}

#[tokio::test]
async fn destroying_a_scope_destroys_exactly_the_keys_of_its_bucket_ranges() {
    let dir = tempfile::tempdir().unwrap();
    let (_, store) = open_sealed(dir.path(), &dir.path().join("k.json"), "us-west");
    let records: Vec<_> = (0..300)
        .map(|i| order(&format!("user-{i}"), "o1"))
        .collect();
    for chunk in records.chunks(50) {
        store
            .write(chunk.iter().map(|r| put(r, CANARY)).collect())
            .await
            .unwrap();
    }
    // Another market's keys of the same buckets stay.
    let other_market = collection("ecommerce", "SG", "user-0", "orders")
        .record(domicile_core::RecordKey::new("o1").unwrap());
    store.write(vec![put(&other_market, CANARY)]).await.unwrap();
    let ranges = [
        domicile_core::BucketRange { first: 0, last: 99 },
        domicile_core::BucketRange {
            first: 500,
            last: 640,
        },
    ];
    let scope = Scope {
        buckets: domicile_core::BucketSet::from_ranges(ranges),
        ..whole("ecommerce", "IN")
    };
    let inside = |r: &domicile_store::RecordAddress| scope.buckets.contains(r.bucket());
    let expected = records.iter().filter(|r| inside(r)).count() as u64;
    assert!(expected > 10 && expected < 290, "{expected}");
    assert_eq!(store.keys().destroy_scope(&scope).await.unwrap(), expected);
    for r in &records {
        let read = store.get(r).await;
        if inside(r) {
            assert!(
                matches!(
                    read,
                    Err(StoreError::Encryption(
                        domicile_store::EncryptionError::KeyDestroyed(_)
                    ))
                ),
                "{r:?}"
            );
        } else {
            assert_eq!(read.unwrap().unwrap().value, Bytes::from(CANARY), "{r:?}");
        }
    }
    assert!(store.get(&other_market).await.unwrap().is_some());
    // Destroying again finds nothing.
    assert_eq!(store.keys().destroy_scope(&scope).await.unwrap(), 0);
}

/// A new owner's data key is stored in the commit of the first batch that seals with it: a
/// refused batch leaves no key behind, concurrent first writes share one key, and everything
/// opens again after a reopen (with a cold key cache).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_owners_key_lands_with_its_first_values_and_only_then() {
    let dir = tempfile::tempdir().unwrap();
    let keyring = dir.path().join("keyring.json");
    let keys_of = |engine: Arc<dyn RegionStore>, user: &'static str| async move {
        engine
            .list_meta("dek/", None, 1000)
            .await
            .unwrap()
            .into_iter()
            .filter(|(name, _)| name.ends_with(&format!("/{user}")))
            .count()
    };
    {
        let (engine, store) = open_sealed(dir.path(), &keyring, "us-west");
        let mut refused = put(&order("first", "o-2"), "never");
        refused.precondition = domicile_store::Precondition::Exists;
        assert!(
            store
                .write(vec![put(&order("first", "o-1"), "never"), refused])
                .await
                .is_err()
        );
        assert_eq!(
            keys_of(engine.clone(), "first").await,
            0,
            "no key without values"
        );
        let writes = (0..16).map(|i| {
            let store = store.clone();
            async move {
                store
                    .write(vec![put(
                        &order("first", &format!("o-{i}")),
                        &format!("v{i}"),
                    )])
                    .await
            }
        });
        for written in futures::future::join_all(writes).await {
            written.unwrap();
        }
        assert_eq!(keys_of(engine.clone(), "first").await, 1, "one key, shared");
        store
            .import(vec![VersionedRecord {
                address: order("imported", "o-1"),
                version: domicile_core::Version(5),
                value: Some(Bytes::from("from elsewhere")),
            }])
            .await
            .unwrap();
        assert_eq!(keys_of(engine, "imported").await, 1);
    }
    let (_, store) = open_sealed(dir.path(), &keyring, "us-west");
    for i in 0..16 {
        let r = store.get(&order("first", &format!("o-{i}"))).await.unwrap();
        assert_eq!(r.map(|r| r.value), Some(Bytes::from(format!("v{i}"))));
    }
    let r = store.get(&order("imported", "o-1")).await.unwrap();
    assert_eq!(r.map(|r| r.value), Some(Bytes::from("from elsewhere")));
}

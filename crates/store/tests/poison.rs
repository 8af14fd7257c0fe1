//! After a failed durable commit the embedded store refuses writes instead of guessing.

use bytes::Bytes;
use domicile_store::{EmbeddedOptions, EmbeddedStore, RegionStore, StoreError};
use domicile_store_conformance::fixtures::{order, put};

#[tokio::test]
async fn a_failed_fsync_poisons_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let kept = order("hank", "o-1");
    store.write(vec![put(&kept, "before")]).await.unwrap();
    store.fail_next_commit();
    let lost = order("hank", "o-2");
    assert!(store.write(vec![put(&lost, "x")]).await.is_err());
    assert!(store.is_poisoned());
    for attempt in [
        store.write(vec![put(&lost, "y")]).await.map(|_| ()),
        store.store_meta("m", Bytes::new()).await,
    ] {
        assert!(matches!(attempt, Err(StoreError::Poisoned)), "{attempt:?}");
    }
    // Reads still work, and show nothing of the failed write.
    assert_eq!(
        store.get(&kept).await.unwrap().unwrap().value,
        Bytes::from("before")
    );
    assert_eq!(store.get(&lost).await.unwrap(), None);
    drop(store);
    // Reopening recovers from what is on disk.
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    assert!(!store.is_poisoned());
    store
        .write(vec![put(&lost, "after restart")])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_share_commits() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let before = store.commits();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20 {
                store
                    .write(vec![put(&order(&format!("w{t}"), &format!("k{i}")), "v")])
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let commits = store.commits() - before;
    assert_eq!(store.last_lsn().0, 64 * 20);
    // Group commit: 1,280 writes from 64 concurrent writers need far fewer than 1,280 fsyncs.
    assert!(commits < 64 * 20, "{commits} commits for 1280 writes");
}

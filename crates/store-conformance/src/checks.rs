//! The conformance checks, one async function each. Each opens fresh stores in temp folders.

use crate::Open;
use crate::fixtures::*;
use bytes::Bytes;
use domicile_core::{Bucket, RecordKey, Version};
use domicile_store::{ChangeOp, Lsn, Precondition, RegionStore, StoreError, VersionedRecord};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

pub async fn fresh(open: Open) -> (TempDir, Arc<dyn RegionStore>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open(dir.path()).await;
    (dir, store)
}

/// Drains a snapshot of `scope` into a vector, with its LSN.
pub async fn snapshot_all(
    store: &dyn RegionStore,
    scope: &domicile_core::Scope,
) -> (Lsn, Vec<VersionedRecord>) {
    let scan = store.snapshot(scope).await.expect("snapshot");
    let mut out = Vec::new();
    let mut chunks = scan.chunks;
    while let Some(chunk) = chunks.next().await {
        out.extend(chunk.expect("snapshot chunk"));
    }
    (scan.lsn, out)
}

pub async fn crud_and_versions(open: Open) {
    let (_dir, store) = fresh(open).await;
    let a = order("alice", "o-1");
    assert_eq!(store.get(&a).await.unwrap(), None);
    let v1 = store.write(vec![put(&a, "first")]).await.unwrap()[0];
    let got = store.get(&a).await.unwrap().expect("written");
    assert_eq!((got.version, got.value), (v1, Bytes::from("first")));
    let v2 = store.write(vec![put(&a, "second")]).await.unwrap()[0];
    assert!(v2 > v1, "versions increase per key");
    assert_eq!(
        store.get(&a).await.unwrap().unwrap().value,
        Bytes::from("second")
    );
    let v3 = store.write(vec![delete(&a)]).await.unwrap()[0];
    assert!(v3 > v2);
    assert_eq!(store.get(&a).await.unwrap(), None);
    match store.write(vec![delete(&a)]).await {
        Err(StoreError::NotFound { index: 0 }) => {}
        other => panic!("deleting a missing record: {other:?}"),
    }
    // The same key in another user, collection, service or market is another record.
    let other_user = order("bob", "o-1");
    let other_market = collection("ecommerce", "BR", "alice", "orders").record(a.key.clone());
    store
        .write(vec![put(&other_user, "b"), put(&other_market, "c")])
        .await
        .unwrap();
    assert_eq!(store.get(&a).await.unwrap(), None);
    assert_eq!(
        store.get(&other_market).await.unwrap().unwrap().value,
        Bytes::from("c")
    );
    // An empty value is a value, not a deletion.
    store.write(vec![put(&a, "")]).await.unwrap();
    assert_eq!(store.get(&a).await.unwrap().unwrap().value, Bytes::new());
}

pub async fn conditional_writes(open: Open) {
    let (_dir, store) = fresh(open).await;
    let a = order("carol", "o-1");
    let with = |p: Precondition, value: &str| {
        let mut m = put(&a, value);
        m.precondition = p;
        vec![m]
    };
    assert!(matches!(
        store.write(with(Precondition::Exists, "x")).await,
        Err(StoreError::PreconditionFailed {
            index: 0,
            current: None
        })
    ));
    let v1 = store
        .write(with(Precondition::Absent, "one"))
        .await
        .unwrap()[0];
    assert!(matches!(
        store.write(with(Precondition::Absent, "x")).await,
        Err(StoreError::PreconditionFailed { current: Some(v), .. }) if v == v1
    ));
    assert!(matches!(
        store.write(with(Precondition::Version(Version(v1.0 + 1)), "x")).await,
        Err(StoreError::PreconditionFailed { current: Some(v), .. }) if v == v1
    ));
    let v2 = store
        .write(with(Precondition::Version(v1), "two"))
        .await
        .unwrap()[0];
    assert_eq!(
        store.get(&a).await.unwrap().unwrap().value,
        Bytes::from("two")
    );
    // Refused writes wrote nothing: the log holds exactly the two accepted ones.
    let (changes, _) = store
        .changes(Lsn(0), &whole("ecommerce", "IN"), 100)
        .await
        .unwrap();
    let versions: Vec<Version> = changes.iter().map(|c| c.entry.version).collect();
    assert_eq!(versions, [v1, v2]);
    // A tombstone is not a live record for preconditions.
    store.write(vec![delete(&a)]).await.unwrap();
    store
        .write(with(Precondition::Absent, "three"))
        .await
        .unwrap();
}

pub async fn batches_are_atomic(open: Open) {
    let (_dir, store) = fresh(open).await;
    let (a, b) = (order("dave", "o-1"), order("dave", "o-2"));
    let mut second = put(&b, "b");
    second.precondition = Precondition::Exists;
    let err = store.write(vec![put(&a, "a"), second]).await.unwrap_err();
    assert!(
        matches!(err, StoreError::PreconditionFailed { index: 1, .. }),
        "{err:?}"
    );
    assert_eq!(
        store.get(&a).await.unwrap(),
        None,
        "nothing of a refused batch is written"
    );
    assert_eq!(store.last_lsn(), Lsn(0));
    // Several mutations of one key in one batch apply in order.
    let versions = store
        .write(vec![put(&a, "1"), put(&a, "2"), delete(&b).clone()])
        .await;
    assert!(matches!(versions, Err(StoreError::NotFound { index: 2 })));
    let versions = store.write(vec![put(&a, "1"), put(&a, "2")]).await.unwrap();
    assert!(versions[1] > versions[0]);
    assert_eq!(
        store.get(&a).await.unwrap().unwrap().value,
        Bytes::from("2")
    );
}

pub async fn list_order_and_pagination(open: Open) {
    let (_dir, store) = fresh(open).await;
    let coll = collection("ecommerce", "IN", "erin", "orders");
    let mut model = BTreeMap::new();
    for i in [7, 3, 11, 1, 9, 5, 2, 10, 4, 8, 6, 0] {
        let key = format!("k{i:02}");
        let a = coll.record(RecordKey::new(key.as_str()).unwrap());
        store.write(vec![put(&a, &"v".repeat(i))]).await.unwrap();
        model.insert(key, i as u64);
    }
    // Deleted records and neighbours (other user, other collection) never show up.
    let gone = coll.record(RecordKey::new("k05").unwrap());
    store.write(vec![delete(&gone)]).await.unwrap();
    model.remove("k05");
    store
        .write(vec![put(&order("erin2", "k00"), "x")])
        .await
        .unwrap();
    let addresses = collection("ecommerce", "IN", "erin", "addresses");
    store
        .write(vec![put(
            &addresses.record(RecordKey::new("k00").unwrap()),
            "x",
        )])
        .await
        .unwrap();

    let mut seen = Vec::new();
    let mut after: Option<RecordKey> = None;
    loop {
        let page = store.list(&coll, after.as_ref(), 3).await.unwrap();
        assert!(page.items.len() <= 3);
        seen.extend(page.items.iter().map(|i| (i.key.to_string(), i.size)));
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    let expected: Vec<(String, u64)> = model.into_iter().collect();
    assert_eq!(seen, expected);
    let page = store
        .list(&coll, Some(&RecordKey::new("k10").unwrap()), 100)
        .await
        .unwrap();
    let keys: Vec<String> = page.items.iter().map(|i| i.key.to_string()).collect();
    assert_eq!(keys, ["k11"]);
    assert_eq!(page.next, None);
}

pub async fn change_log_is_complete_and_ordered(open: Open) {
    let (_dir, store) = fresh(open).await;
    let mut expected = Vec::new();
    for i in 0..50u32 {
        let a = order(&format!("u{}", i % 7), &format!("k{}", i % 5));
        let exists = store.get(&a).await.unwrap().is_some();
        let (m, op) = if i % 4 == 3 && exists {
            (delete(&a), ChangeOp::Delete)
        } else {
            (put(&a, "v"), ChangeOp::Put)
        };
        let v = store.write(vec![m]).await.unwrap()[0];
        expected.push((a, op, v));
    }
    assert_eq!(store.last_lsn(), Lsn(expected.len() as u64));
    let (changes, position) = store
        .changes(Lsn(0), &whole("ecommerce", "IN"), 1000)
        .await
        .unwrap();
    assert_eq!(position, store.last_lsn());
    assert_eq!(changes.len(), expected.len());
    for (i, (change, (a, op, v))) in changes.iter().zip(&expected).enumerate() {
        assert_eq!(
            change.entry.lsn,
            Lsn(i as u64 + 1),
            "LSNs are dense and ordered"
        );
        assert_eq!(
            (&change.entry.address, change.entry.op, change.entry.version),
            (a, *op, *v)
        );
        let current = change.current.as_ref().expect("not purged");
        assert!(
            current.version >= *v,
            "the current state is at least as new as the entry"
        );
    }
    // Waiting returns at once when there is something newer, and after the timeout otherwise.
    assert_eq!(
        store.wait_for_changes(Lsn(0), Duration::from_secs(5)).await,
        store.last_lsn()
    );
    let last = store.last_lsn();
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move { store.wait_for_changes(last, Duration::from_secs(30)).await })
    };
    store
        .write(vec![put(&order("late", "k"), "v")])
        .await
        .unwrap();
    assert_eq!(waiter.await.unwrap(), Lsn(last.0 + 1));
}

pub async fn change_stream_filters_by_scope_and_pages(open: Open) {
    let (_dir, store) = fresh(open).await;
    let (b1, b2) = (Bucket(1), Bucket(2));
    let (u1, u2) = (user_in_bucket(b1, "p"), user_in_bucket(b2, "p"));
    let mut in_scope = Vec::new();
    for i in 0..30 {
        let user = if i % 2 == 0 { &u1 } else { &u2 };
        let a = order(user, &format!("k{i}"));
        store.write(vec![put(&a, "v")]).await.unwrap();
        if i % 2 == 0 {
            in_scope.push(a);
        }
        // Same bucket, other service or market: outside the scope.
        let shop_br = collection("ecommerce", "BR", user, "orders")
            .record(RecordKey::new(format!("k{i}")).unwrap());
        let account = collection("account", "IN", user, "profile")
            .record(RecordKey::new(format!("k{i}")).unwrap());
        store
            .write(vec![put(&shop_br, "v"), put(&account, "v")])
            .await
            .unwrap();
    }
    let scope = scope_of("ecommerce", "IN", [b1]);
    let mut got = Vec::new();
    let mut from = Lsn(0);
    loop {
        let (page, next) = store.changes(from, &scope, 4).await.unwrap();
        assert!(page.len() <= 4);
        assert!(next >= from);
        got.extend(page.into_iter().map(|c| c.entry.address));
        if next == store.last_lsn() {
            break;
        }
        from = next;
    }
    assert_eq!(got, in_scope);
    // Reading from the end returns nothing and stays put.
    let (rest, at) = store.changes(store.last_lsn(), &scope, 10).await.unwrap();
    assert!(rest.is_empty());
    assert_eq!(at, store.last_lsn());
    // A page of nothing skips nothing: the position stays where it was.
    let (none, at) = store.changes(Lsn(0), &scope, 0).await.unwrap();
    assert!(none.is_empty());
    assert_eq!(at, Lsn(0));
}

pub async fn snapshot_is_isolated_from_concurrent_writes(open: Open) {
    let (_dir, store) = fresh(open).await;
    let scope = whole("ecommerce", "IN");
    let mut before = BTreeMap::new();
    for i in 0..3000 {
        let a = order(&format!("s{}", i % 97), &format!("k{i}"));
        let v = store.write(vec![put(&a, &format!("v{i}"))]).await.unwrap()[0];
        before.insert(a, v);
    }
    let scan = store.snapshot(&scope).await.unwrap();
    assert_eq!(scan.lsn, store.last_lsn());
    // Writers change, delete and add records while the snapshot is being read.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for i in 0..600 {
                let a = order(&format!("s{}", (i * 5) % 97), &format!("k{}", i * 5));
                let m = if i % 3 == 0 {
                    delete(&a)
                } else {
                    put(&a, "changed")
                };
                store
                    .write(vec![m, put(&order("new", &format!("n{i}")), "new")])
                    .await
                    .unwrap();
            }
        })
    };
    let mut snapshot_records = Vec::new();
    let mut chunks = scan.chunks;
    while let Some(chunk) = chunks.next().await {
        snapshot_records.extend(chunk.unwrap());
        tokio::task::yield_now().await;
    }
    writer.await.unwrap();
    let seen: BTreeMap<_, _> = snapshot_records
        .iter()
        .map(|r| (r.address.clone(), r.version))
        .collect();
    assert_eq!(
        seen, before,
        "the snapshot shows exactly the state at its LSN"
    );
    assert!(snapshot_records.iter().all(|r| r.value.is_some()));

    // The move's copy path: the snapshot, then the changes after its LSN, reproduce the source.
    let (_dir2, copy) = fresh(open).await;
    copy.import(snapshot_records).await.unwrap();
    let (changes, _) = store.changes(scan.lsn, &scope, 100_000).await.unwrap();
    assert_eq!(changes.len(), 1200);
    copy.import(changes.into_iter().filter_map(|c| c.current).collect())
        .await
        .unwrap();
    assert_eq!(
        copy.digest(&scope).await.unwrap(),
        store.digest(&scope).await.unwrap()
    );
}

pub async fn import_is_idempotent_and_order_independent(open: Open) {
    let (_d1, first) = fresh(open).await;
    let (_d2, second) = fresh(open).await;
    let mut records = Vec::new();
    for k in 0..40u64 {
        let a = order(&format!("i{}", k % 6), &format!("k{k}"));
        for v in 1..=4u64 {
            let value = if (k + v) % 5 == 0 {
                None
            } else {
                Some(Bytes::from(format!("{k}:{v}")))
            };
            records.push(VersionedRecord {
                address: a.clone(),
                version: Version(100 * v + k),
                value,
            });
        }
    }
    let forward = first.import(records.clone()).await.unwrap();
    assert_eq!(forward.applied + forward.skipped, records.len() as u64);
    // The other store gets them backwards, in small batches, twice.
    let mut reversed = records.clone();
    reversed.reverse();
    for chunk in reversed.chunks(7).chain(records.chunks(13)) {
        second.import(chunk.to_vec()).await.unwrap();
    }
    let scope = whole("ecommerce", "IN");
    assert_eq!(
        first.digest(&scope).await.unwrap(),
        second.digest(&scope).await.unwrap()
    );
    assert_eq!(
        snapshot_all(first.as_ref(), &scope).await.1,
        snapshot_all(second.as_ref(), &scope).await.1
    );
    // Replaying everything again changes nothing and logs nothing.
    let lsn = first.last_lsn();
    let again = first.import(records.clone()).await.unwrap();
    assert_eq!((again.applied, again.skipped), (0, records.len() as u64));
    assert_eq!(first.last_lsn(), lsn);
    // The highest version of each key won, tombstones included.
    for k in 0..40u64 {
        let a = order(&format!("i{}", k % 6), &format!("k{k}"));
        let expected = if (k + 4) % 5 == 0 {
            None
        } else {
            Some(Bytes::from(format!("{k}:4")))
        };
        assert_eq!(first.get(&a).await.unwrap().map(|r| r.value), expected);
    }
    // A sorted batch over a range that already holds other keys, some of its own keys at higher
    // versions and some at lower: only the lower ones are replaced, neighbours are untouched.
    let (_d3, third) = fresh(open).await;
    let neighbours: Vec<VersionedRecord> = (0..300u64)
        .map(|k| VersionedRecord {
            address: order("sparse", &format!("k{k:03}")),
            version: Version(50 + k % 2 * 100),
            value: Some(Bytes::from(format!("old {k}"))),
        })
        .collect();
    third.import(neighbours).await.unwrap();
    let batch: Vec<VersionedRecord> = (0..300u64)
        .step_by(3)
        .map(|k| VersionedRecord {
            address: order("sparse", &format!("k{k:03}")),
            version: Version(100),
            value: Some(Bytes::from(format!("new {k}"))),
        })
        .collect();
    let outcome = third.import(batch).await.unwrap();
    assert_eq!(
        (outcome.applied, outcome.skipped),
        (50, 50),
        "even keys were at 50, odd at 150"
    );
    for k in 0..300u64 {
        let got = third
            .get(&order("sparse", &format!("k{k:03}")))
            .await
            .unwrap()
            .unwrap();
        let expected = if k % 3 == 0 && k % 2 == 0 {
            format!("new {k}")
        } else {
            format!("old {k}")
        };
        assert_eq!(got.value, Bytes::from(expected), "key {k}");
    }
    // A client write after an import outranks the imported version.
    let a = order("i1", "k1");
    let v = first.write(vec![put(&a, "client")]).await.unwrap()[0];
    assert!(v > Version(401));
}

pub async fn digests_are_equal_after_a_copy(open: Open) {
    let (_d1, source) = fresh(open).await;
    let (_d2, target) = fresh(open).await;
    let scope = whole("cloud", "MY");
    for i in 0..500 {
        let a = collection("cloud", "MY", &format!("d{}", i % 41), "notes")
            .record(RecordKey::new(format!("n{i}")).unwrap());
        source
            .write(vec![put(&a, &format!("note {i}"))])
            .await
            .unwrap();
        if i % 9 == 0 {
            source.write(vec![delete(&a)]).await.unwrap();
        }
    }
    let (_, records) = snapshot_all(source.as_ref(), &scope).await;
    target.import(records).await.unwrap();
    let (a, b) = (
        source.digest(&scope).await.unwrap(),
        target.digest(&scope).await.unwrap(),
    );
    assert_eq!(a.len(), 1024, "one digest per bucket, empty ones included");
    assert_eq!(a, b);
    assert_eq!(a.iter().map(|d| d.records).sum::<u64>(), 500 - 56);
    // Tombstones do not count: a target without them still agrees.
    let (_d3, live_only) = fresh(open).await;
    let (_, records) = snapshot_all(source.as_ref(), &scope).await;
    live_only
        .import(records.into_iter().filter(|r| r.value.is_some()).collect())
        .await
        .unwrap();
    assert_eq!(live_only.digest(&scope).await.unwrap(), a);
    // One changed record changes exactly its bucket's digest.
    let victim = collection("cloud", "MY", "d3", "notes").record(RecordKey::new("n3").unwrap());
    target.write(vec![put(&victim, "tampered")]).await.unwrap();
    let c = target.digest(&scope).await.unwrap();
    let differing: Vec<Bucket> = a
        .iter()
        .zip(&c)
        .filter(|(x, y)| x != y)
        .map(|(x, _)| x.bucket)
        .collect();
    assert_eq!(differing, [victim.bucket()]);
}

/// A purge bigger than one turn of an engine's writer (engines purge in turns so that writes
/// go on between them), over two ranges with a bucket between them that is not purged, still
/// removes everything, counts it once, and leaves the bucket between alone.
pub async fn purge_removes_a_scope_larger_than_a_turn(open: Open) {
    let (_dir, store) = fresh(open).await;
    let (first, between, last) = (
        user_in_bucket(Bucket(10), "big"),
        user_in_bucket(Bucket(11), "big"),
        user_in_bucket(Bucket(12), "big"),
    );
    // 6,000 + 5,000: turns of either engine end inside a range and at its edge.
    let records: Vec<VersionedRecord> = (0..11_000u64)
        .map(|k| VersionedRecord {
            address: order(if k < 6_000 { &first } else { &last }, &format!("k{k:05}")),
            version: Version(1 + k),
            value: Some(Bytes::from(format!("v{k}"))),
        })
        .collect();
    store.import(records).await.unwrap();
    store
        .write(vec![put(&order(&between, "k1"), "stays")])
        .await
        .unwrap();
    let scope = scope_of("ecommerce", "IN", [Bucket(10), Bucket(12)]);
    assert_eq!(scope.buckets.ranges().len(), 2);
    assert_eq!(store.purge(&scope).await.unwrap(), 11_000);
    let (_, left) = snapshot_all(store.as_ref(), &scope).await;
    assert!(left.is_empty(), "{} records left", left.len());
    assert!(store.get(&order(&between, "k1")).await.unwrap().is_some());
    assert_eq!(store.purge(&scope).await.unwrap(), 0);
}

/// Many copy-sized imports at once, and small writes beside them (several copies into one
/// region while its clients write): every one lands, whatever an engine queues or gates.
pub async fn concurrent_bulk_imports_and_writes_all_land(open: Open) {
    let (_dir, store) = fresh(open).await;
    let imports = (0..6u64).map(|i| {
        let store = store.clone();
        let records: Vec<VersionedRecord> = (0..1_500u64)
            .map(|k| VersionedRecord {
                address: order(&format!("bulk{i}"), &format!("k{k:05}")),
                version: Version(1 + k),
                value: Some(Bytes::from(format!("v{i}:{k}"))),
            })
            .collect();
        async move { store.import(records).await.unwrap().applied }
    });
    let writes = (0..20u64).map(|w| {
        let store = store.clone();
        async move {
            store
                .write(vec![put(&order("small", &format!("w{w:02}")), "x")])
                .await
                .unwrap()
                .len() as u64
        }
    });
    let (applied, written) = futures::future::join(
        futures::future::join_all(imports),
        futures::future::join_all(writes),
    )
    .await;
    assert_eq!(applied, vec![1_500; 6]);
    assert_eq!(written.iter().sum::<u64>(), 20);
    let (_, records) = snapshot_all(store.as_ref(), &whole("ecommerce", "IN")).await;
    assert_eq!(records.len(), 6 * 1_500 + 20);
}

/// Trimming a log longer than one delete chunk of an engine removes exactly the entries up to
/// the LSN.
pub async fn trim_removes_a_log_longer_than_a_chunk(open: Open) {
    let (_dir, store) = fresh(open).await;
    let records: Vec<VersionedRecord> = (0..20_000u64)
        .map(|k| VersionedRecord {
            address: order("tina", &format!("k{k:05}")),
            version: Version(1 + k),
            value: Some(Bytes::from("v")),
        })
        .collect();
    store.import(records).await.unwrap();
    // A fresh store logs the 20,000 applied imports as LSNs 1..=20,000.
    assert_eq!(store.last_lsn(), Lsn(20_000));
    let upto = Lsn(17_000);
    assert_eq!(store.trim_changes(upto).await.unwrap(), 17_000);
    let (rest, _) = store
        .changes(Lsn(0), &whole("ecommerce", "IN"), 100_000)
        .await
        .unwrap();
    assert_eq!(rest.len(), 3_000);
    assert_eq!(rest.first().map(|c| c.entry.lsn), Some(Lsn(upto.0 + 1)));
}

pub async fn purge_removes_exactly_the_scope(open: Open) {
    let (_dir, store) = fresh(open).await;
    let (b1, b2) = (Bucket(10), Bucket(11));
    let (u1, u2) = (user_in_bucket(b1, "g"), user_in_bucket(b2, "g"));
    for i in 0..20 {
        for user in [&u1, &u2] {
            store
                .write(vec![put(&order(user, &format!("k{i}")), "v")])
                .await
                .unwrap();
            let account = collection("account", "IN", user, "profile")
                .record(RecordKey::new(format!("k{i}")).unwrap());
            store.write(vec![put(&account, "v")]).await.unwrap();
        }
    }
    store.write(vec![delete(&order(&u1, "k0"))]).await.unwrap();
    let removed = store
        .purge(&scope_of("ecommerce", "IN", [b1]))
        .await
        .unwrap();
    assert_eq!(removed, 20, "live records and the tombstone");
    assert!(store.get(&order(&u1, "k1")).await.unwrap().is_none());
    assert!(
        store.get(&order(&u2, "k1")).await.unwrap().is_some(),
        "other buckets stay"
    );
    let account = collection("account", "IN", &u1, "profile").record(RecordKey::new("k1").unwrap());
    assert!(
        store.get(&account).await.unwrap().is_some(),
        "other services stay"
    );
    let (_, left) = snapshot_all(store.as_ref(), &scope_of("ecommerce", "IN", [b1])).await;
    assert!(left.is_empty(), "no tombstones left either");
    // The purged records' log entries no longer carry data.
    let (changes, _) = store
        .changes(Lsn(0), &scope_of("ecommerce", "IN", [b1]), 1000)
        .await
        .unwrap();
    assert!(!changes.is_empty());
    assert!(changes.iter().all(|c| c.current.is_none()));
    assert_eq!(
        store
            .purge(&scope_of("ecommerce", "IN", [b1]))
            .await
            .unwrap(),
        0
    );
}

/// `purge_user` removes one user's records and tombstones of one service and market, unlogged,
/// and nothing of anyone else: not a neighbour in the same bucket, not a user whose id starts
/// with this one's, not the same user's other services.
pub async fn purge_user_removes_exactly_one_user(open: Open) {
    let (_dir, store) = fresh(open).await;
    let b = Bucket(20);
    let (u1, u2) = (user_in_bucket(b, "e"), user_in_bucket(b, "f"));
    let longer = format!("{u1}0");
    for user in [&u1, &u2, &longer] {
        for i in 0..3 {
            store
                .write(vec![put(&order(user, &format!("k{i}")), "v")])
                .await
                .unwrap();
        }
        let profile =
            collection("account", "IN", user, "profile").record(RecordKey::new("p").unwrap());
        store.write(vec![put(&profile, "v")]).await.unwrap();
    }
    store.write(vec![delete(&order(&u1, "k0"))]).await.unwrap();
    let lsn = store.last_lsn();
    let user = domicile_core::UserId::new(u1.as_str()).unwrap();
    let removed = store
        .purge_user(&service("ecommerce"), market("IN"), &user, BUCKETS)
        .await
        .unwrap();
    assert_eq!(removed, 3, "two live records and the tombstone");
    assert_eq!(store.last_lsn(), lsn, "a purge is not logged");
    let (_, left) = snapshot_all(store.as_ref(), &scope_of("ecommerce", "IN", [b])).await;
    assert!(
        left.iter()
            .all(|r| r.address.collection.user.as_str() != u1),
        "nothing of the user is left, tombstones included"
    );
    assert_eq!(left.len(), 3, "the neighbour's records stay");
    for other in [&u2, &longer] {
        assert!(store.get(&order(other, "k1")).await.unwrap().is_some());
    }
    let profile = collection("account", "IN", &u1, "profile").record(RecordKey::new("p").unwrap());
    assert!(
        store.get(&profile).await.unwrap().is_some(),
        "other services stay"
    );
    assert_eq!(
        store
            .purge_user(&service("ecommerce"), market("IN"), &user, BUCKETS)
            .await
            .unwrap(),
        0
    );
}

pub async fn writes_survive_a_reopen(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let a = order("frank", "o-1");
    let (v, lsn) = {
        let store = open(dir.path()).await;
        let v = store.write(vec![put(&a, "kept")]).await.unwrap()[0];
        store
            .write(vec![
                put(&order("frank", "o-2"), "x"),
                delete(&order("frank", "o-2")),
            ])
            .await
            .unwrap();
        (v, store.last_lsn())
    };
    let store = open(dir.path()).await;
    assert_eq!(
        store.get(&a).await.unwrap().map(|r| (r.version, r.value)),
        Some((v, Bytes::from("kept")))
    );
    assert_eq!(store.last_lsn(), lsn);
    let v2 = store.write(vec![put(&a, "again")]).await.unwrap()[0];
    assert!(v2 > v);
    assert_eq!(
        store.last_lsn(),
        Lsn(lsn.0 + 1),
        "LSNs continue, never reused"
    );
}

pub async fn trimmed_change_log_keeps_its_lsns(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let scope = whole("ecommerce", "IN");
    {
        let store = open(dir.path()).await;
        for i in 0..10 {
            store
                .write(vec![put(&order("gina", &format!("k{i}")), "v")])
                .await
                .unwrap();
        }
        assert_eq!(store.trim_changes(Lsn(6)).await.unwrap(), 6);
        let (rest, _) = store.changes(Lsn(0), &scope, 100).await.unwrap();
        let lsns: Vec<u64> = rest.iter().map(|c| c.entry.lsn.0).collect();
        assert_eq!(lsns, [7, 8, 9, 10]);
        store.trim_changes(Lsn(10)).await.unwrap();
    }
    let store = open(dir.path()).await;
    assert_eq!(
        store.last_lsn(),
        Lsn(10),
        "an empty log still remembers its position"
    );
    store
        .write(vec![put(&order("gina", "k10"), "v")])
        .await
        .unwrap();
    assert_eq!(store.last_lsn(), Lsn(11));
}

/// Metadata carried by a write or an import lands in the same commit, and only if it applies:
/// what lets a new data key and the first values it seals be one durable write.
pub async fn meta_lands_with_its_batch_or_not_at_all(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (order("ivan", "o-1"), order("ivan", "o-2"));
    let meta = |name: &str| vec![(name.to_string(), Bytes::from(format!("key of {name}")))];
    {
        let store = open(dir.path()).await;
        let mut refused = put(&b, "b");
        refused.precondition = Precondition::Exists;
        assert!(
            store
                .write_with_meta(vec![put(&a, "a"), refused], meta("dek/refused"))
                .await
                .is_err()
        );
        assert_eq!(store.load_meta("dek/refused").await.unwrap(), None);
        store
            .write_with_meta(vec![put(&a, "a")], meta("dek/written"))
            .await
            .unwrap();
        let imported = VersionedRecord {
            address: b.clone(),
            version: Version(7),
            value: Some(Bytes::from("b")),
        };
        let outcome = store
            .import_with_meta(vec![imported.clone()], meta("dek/imported"))
            .await
            .unwrap();
        assert_eq!(outcome.applied, 1);
        // An import whose records are all older still stores its metadata: the key is needed
        // by whatever it would have sealed, and storing it twice is harmless.
        store
            .import_with_meta(vec![imported], meta("dek/skipped"))
            .await
            .unwrap();
    }
    let store = open(dir.path()).await;
    for name in ["dek/written", "dek/imported", "dek/skipped"] {
        assert_eq!(
            store.load_meta(name).await.unwrap(),
            Some(Bytes::from(format!("key of {name}"))),
            "{name} survives a reopen"
        );
    }
    assert_eq!(store.load_meta("dek/refused").await.unwrap(), None);
    assert_eq!(
        store.get(&b).await.unwrap().map(|r| r.value),
        Some(Bytes::from("b"))
    );
}

pub async fn meta_round_trips(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).await;
        assert_eq!(store.load_meta("ownership").await.unwrap(), None);
        store
            .store_meta("ownership", Bytes::from("v1"))
            .await
            .unwrap();
        store
            .store_meta("ownership", Bytes::from("v2"))
            .await
            .unwrap();
    }
    let store = open(dir.path()).await;
    assert_eq!(
        store.load_meta("ownership").await.unwrap(),
        Some(Bytes::from("v2"))
    );
}

pub async fn meta_lists_by_prefix_and_deletes(open: Open) {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = open(dir.path()).await;
        for name in ["dek/b", "dek/a", "dek/c", "dekx", "other"] {
            store
                .store_meta(name, Bytes::from(format!("value of {name}")))
                .await
                .unwrap();
        }
        let names = |page: Vec<(String, Bytes)>| -> Vec<String> {
            page.into_iter().map(|(n, _)| n).collect()
        };
        let all = store.list_meta("dek/", None, 10).await.unwrap();
        assert_eq!(all[0].1, Bytes::from("value of dek/a"));
        assert_eq!(names(all), ["dek/a", "dek/b", "dek/c"]);
        let first = store.list_meta("dek/", None, 2).await.unwrap();
        assert_eq!(names(first), ["dek/a", "dek/b"]);
        let rest = store.list_meta("dek/", Some("dek/b"), 2).await.unwrap();
        assert_eq!(names(rest), ["dek/c"]);
        store.delete_meta("dek/b").await.unwrap();
        store.delete_meta("never-stored").await.unwrap();
        store.scrub_meta().await.unwrap();
        assert_eq!(store.load_meta("dek/b").await.unwrap(), None);
    }
    let store = open(dir.path()).await;
    assert_eq!(
        store.load_meta("dek/b").await.unwrap(),
        None,
        "a delete is durable"
    );
    let left: Vec<String> = store
        .list_meta("dek/", None, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(left, ["dek/a", "dek/c"]);
    assert_eq!(
        store.load_meta("other").await.unwrap(),
        Some(Bytes::from("value of other"))
    );
}

/// Large records come in chunks bounded by bytes, not only by count, and all of them come:
/// a scan queues chunks ahead of its reader, and 1,024 records of a MiB would be a GiB each.
pub async fn snapshot_chunks_are_bounded_by_bytes(open: Open) {
    let (_dir, store) = fresh(open).await;
    let user = user_in_bucket(Bucket(7), "large");
    // 24 values of 512 KiB (12 MiB), then small ones: the bound holds as sizes change.
    let records: Vec<VersionedRecord> = (0..64u64)
        .map(|k| VersionedRecord {
            address: order(&user, &format!("k{k:03}")),
            version: Version(1 + k),
            value: Some(if k < 24 {
                Bytes::from(vec![b'a' + (k % 26) as u8; 512 << 10])
            } else {
                Bytes::from(format!("small {k}"))
            }),
        })
        .collect();
    for group in records.chunks(8) {
        store.import(group.to_vec()).await.unwrap();
    }
    let scan = store
        .snapshot(&scope_of("ecommerce", "IN", [Bucket(7)]))
        .await
        .unwrap();
    let mut chunks = scan.chunks;
    let mut seen = Vec::new();
    while let Some(chunk) = chunks.next().await {
        let chunk = chunk.unwrap();
        let weight: usize = chunk.iter().map(domicile_store::chunk_weight).sum();
        let largest = chunk
            .iter()
            .map(domicile_store::chunk_weight)
            .max()
            .unwrap_or(0);
        assert!(
            weight <= domicile_store::SNAPSHOT_CHUNK_BYTES + largest,
            "a chunk of {} records weighs {weight} bytes",
            chunk.len()
        );
        seen.extend(chunk);
    }
    assert_eq!(seen, records);
}

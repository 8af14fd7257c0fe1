//! The internal API: streams, import, digests, ownership changes and purge — a move by hand.

use crate::harness::Node;
use axum::http::{Method, StatusCode};
use bytes::BytesMut;
use domicile_store::Lsn;
use domicile_wire::frame::{self, Frame, Header, StreamKind};

const SCOPE: &str = r#"{"service":"ecommerce","market":"HK","buckets":"0-1023"}"#;

async fn seed(node: &Node, users: u32) {
    for u in 0..users {
        for k in 0..3 {
            let r = node
                .data(
                    Method::PUT,
                    &format!("/v1/users/hk{u}/orders/o{k}"),
                    "HK",
                    format!("order {u}/{k}"),
                )
                .await;
            assert_eq!(r.status, StatusCode::OK);
        }
    }
}

pub(crate) fn import_body(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    frame::encode_header(
        &mut out,
        Header {
            kind: StreamKind::Import,
            lsn: Lsn(0),
        },
    );
    let mut n = 0;
    for f in frames {
        if let Frame::Record(r) = f {
            frame::encode_record(&mut out, r);
            n += 1;
        }
    }
    frame::encode_end(&mut out, Lsn(0), n);
    out.to_vec()
}

#[tokio::test]
async fn a_scope_moves_by_snapshot_changes_and_import_with_equal_digests() {
    let source = Node::start("cn-beijing").await;
    let target = Node::start("us-west").await;
    seed(&source, 20).await;

    let snap = source
        .send(Method::POST, "/internal/snapshot", &[], SCOPE)
        .await;
    assert_eq!(snap.status, StatusCode::OK);
    assert_eq!(
        snap.headers["content-type"],
        "application/x-domicile-stream"
    );
    let (header, records, _) = frame::decode_all(&snap.body).unwrap();
    assert_eq!((header.kind, header.lsn), (StreamKind::Snapshot, Lsn(60)));
    assert_eq!(records.len(), 60);

    // Writes continue at the source after the snapshot.
    source
        .data(Method::PUT, "/v1/users/hk1/orders/o9", "HK", "late")
        .await;
    source
        .data(Method::DELETE, "/v1/users/hk2/orders/o0", "HK", "")
        .await;

    let imported = target
        .import("service=ecommerce&market=HK", import_body(&records))
        .await;
    assert_eq!(imported.status, StatusCode::OK, "{:?}", imported.body);
    assert_eq!(imported.json()["applied"], 60);

    let changes = source
        .send(
            Method::GET,
            "/internal/changes?service=ecommerce&market=HK&buckets=0-1023&after=60",
            &[],
            "",
        )
        .await;
    assert_eq!(changes.status, StatusCode::OK);
    let (header, frames, next) = frame::decode_all(&changes.body).unwrap();
    assert_eq!((header.kind, next), (StreamKind::Changes, Lsn(62)));
    let current: Vec<Frame> = frames
        .into_iter()
        .filter_map(|f| match f {
            Frame::Change(c) => c.current.map(Frame::Record),
            _ => None,
        })
        .collect();
    assert_eq!(current.len(), 2, "the put and the tombstone");
    let imported = target
        .import("service=ecommerce&market=HK", import_body(&current))
        .await;
    assert_eq!(imported.json()["applied"], 2);
    // Replaying the snapshot again is a no-op: imports are idempotent.
    let again = target
        .import("service=ecommerce&market=HK", import_body(&records))
        .await;
    assert_eq!(
        (
            again.json()["applied"].as_u64(),
            again.json()["skipped"].as_u64()
        ),
        (Some(0), Some(60))
    );

    let d1 = source
        .send(Method::POST, "/internal/digest", &[], SCOPE)
        .await
        .json();
    let d2 = target
        .send(Method::POST, "/internal/digest", &[], SCOPE)
        .await
        .json();
    assert_eq!(d1["digests"].as_array().unwrap().len(), 1024);
    assert_eq!(d1, d2);

    // Cut over by hand: fence, release at the source, own at the target; then purge the source.
    let range = r#"{"service":"ecommerce","market":"HK","buckets":"0-1023","epoch":1}"#;
    assert_eq!(
        source
            .send(Method::POST, "/internal/fence", &[], range)
            .await
            .status,
        StatusCode::OK
    );
    let purge = source
        .send(Method::POST, "/internal/purge", &[], SCOPE)
        .await;
    purge.assert_error(StatusCode::CONFLICT, "conflict");
    let release =
        r#"{"service":"ecommerce","market":"HK","buckets":"0-1023","epoch":2,"owner":"us-west"}"#;
    assert_eq!(
        source
            .send(Method::POST, "/internal/release", &[], release)
            .await
            .status,
        StatusCode::OK
    );
    let own = r#"{"service":"ecommerce","market":"HK","buckets":"0-1023","epoch":2}"#;
    let owned = target.send(Method::POST, "/internal/own", &[], own).await;
    assert_eq!(owned.status, StatusCode::OK, "{:?}", owned.body);

    let moved = target
        .send(
            Method::GET,
            "/v1/users/hk1/orders/o9",
            &[("x-domicile-market", "HK"), ("x-domicile-epoch", "2")],
            "",
        )
        .await;
    assert_eq!(&moved.body[..], b"late");
    let old = source
        .data(Method::GET, "/v1/users/hk1/orders/o9", "HK", "")
        .await;
    old.assert_error(StatusCode::MISDIRECTED_REQUEST, "not_owner");
    assert_eq!(old.json()["error"]["owner"], "us-west");
    let purged = source
        .send(Method::POST, "/internal/purge", &[], SCOPE)
        .await;
    assert_eq!(purged.status, StatusCode::OK);
    assert_eq!(
        purged.json()["records"],
        61,
        "60 live records and one tombstone"
    );
    let empty = source
        .send(Method::POST, "/internal/snapshot", &[], SCOPE)
        .await;
    assert!(
        frame::decode_all(&empty.body).unwrap().1.is_empty(),
        "no copy left behind"
    );
}

#[tokio::test]
async fn imports_the_policy_forbids_or_that_are_malformed_write_nothing() {
    let source = Node::start("cn-beijing").await;
    let target = Node::start("us-west").await;
    for u in 0..3 {
        source
            .data(
                Method::PUT,
                &format!("/v1/users/cn{u}/profile/p"),
                "CN",
                "x",
            )
            .await;
    }
    let snap = source
        .send(
            Method::POST,
            "/internal/snapshot",
            &[],
            r#"{"service":"account","market":"CN","buckets":"0-1023"}"#,
        )
        .await;
    let (_, records, _) = frame::decode_all(&snap.body).unwrap();
    let body = import_body(&records);
    let forbidden = target
        .import("service=account&market=CN", body.clone())
        .await;
    forbidden.assert_error(StatusCode::FORBIDDEN, "residency_violation");
    // Claiming another market in the query does not smuggle CN records in.
    let mismatch = target
        .import("service=account&market=HK", body.clone())
        .await;
    mismatch.assert_error(StatusCode::BAD_REQUEST, "scope_mismatch");
    let truncated = target
        .import("service=account&market=HK", body[..body.len() - 3].to_vec())
        .await;
    truncated.assert_error(StatusCode::BAD_REQUEST, "malformed_stream");
    let garbage = target.import("service=account&market=HK", "hello").await;
    garbage.assert_error(StatusCode::BAD_REQUEST, "malformed_stream");
    let missing = target.import("service=account", body).await;
    missing.assert_error(StatusCode::BAD_REQUEST, "invalid_query");
    assert_eq!(target.lsn(), 0);
}

#[tokio::test]
async fn an_import_with_a_record_in_the_wrong_bucket_writes_nothing() {
    let source = Node::start("cn-beijing").await;
    let target = Node::start("us-west").await;
    seed(&source, 2).await;
    let snap = source
        .send(Method::POST, "/internal/snapshot", &[], SCOPE)
        .await;
    let (_, frames, _) = frame::decode_all(&snap.body).unwrap();
    assert_eq!(frames.len(), 6);
    // The import checks a user's bucket once per run of their records: a later record of the
    // same user naming another bucket must still be caught, wherever it sits in the run.
    for tampered in [0, 1, 5] {
        let mut frames = frames.clone();
        let Frame::Record(r) = &mut frames[tampered] else {
            panic!("a snapshot carries records");
        };
        let bucket = &mut r.address.collection.bucket;
        bucket.0 = (bucket.0 + 1) % 1024;
        let refused = target
            .import("service=ecommerce&market=HK", import_body(&frames))
            .await;
        refused.assert_error(StatusCode::BAD_REQUEST, "scope_mismatch");
    }
    assert_eq!(target.lsn(), 0, "a refused import writes nothing");
    let accepted = target
        .import("service=ecommerce&market=HK", import_body(&frames))
        .await;
    assert_eq!(accepted.status, StatusCode::OK);
}

#[tokio::test]
async fn long_polling_the_change_stream_wakes_on_a_write() {
    let node = Node::start("cn-beijing").await;
    let state = node.state.clone();
    let poll = tokio::spawn(async move {
        let node = Node::of(state);
        node.send(
            Method::GET,
            "/internal/changes?service=ecommerce&market=ID&buckets=0-1023&after=0&wait_ms=20000",
            &[],
            "",
        )
        .await
    });
    // The poll is waiting (or about to): a write wakes it long before its 20 s deadline.
    node.data(Method::PUT, "/v1/users/id1/orders/o1", "ID", "x")
        .await;
    let reply = poll.await.unwrap();
    let (_, frames, next) = frame::decode_all(&reply.body).unwrap();
    assert_eq!((frames.len(), next), (1, Lsn(1)));
}

#[tokio::test]
async fn ownership_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = domicile_core::reference::cluster_config();
    let region = domicile_core::RegionId::new("cn-beijing").unwrap();
    let open = || async {
        let store =
            domicile_store::EmbeddedStore::open(&dir.path().join("s"), Default::default()).unwrap();
        let blobs = domicile_store::BlobStore::local(&dir.path().join("b")).unwrap();
        let state = domicile_region::open_sealed(
            &cluster,
            &region,
            std::sync::Arc::new(store),
            blobs,
            &dir.path().join("keyring.json"),
        )
        .await
        .unwrap();
        std::sync::Arc::new(state)
    };
    let state = open().await;
    let release =
        r#"{"service":"cloud","market":"PH","buckets":"0-99","epoch":2,"owner":"ap-singapore"}"#;
    let reply = Node::of(state.clone())
        .send(Method::POST, "/internal/release", &[], release)
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    drop(reply);
    let before = state.ownership().ranges();
    drop(state);
    let state = open().await;
    assert_eq!(state.ownership().ranges(), before);
}

/// Lets spawned tasks run as far as they can: the ones still waiting are waiting for a lock.
async fn settle() {
    for _ in 0..200 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owning_a_new_range_does_not_wait_for_writes_in_flight_but_fencing_and_purges_do() {
    use domicile_core::{Epoch, Market, ServiceName};
    use domicile_region::ownership::Change;
    let node = Node::start("ap-singapore").await;
    let state = node.state.clone();
    let ecommerce = ServiceName::new("ecommerce").unwrap();
    let (my, sg) = (Market::new("MY").unwrap(), Market::new("SG").unwrap());
    let range: domicile_core::BucketRange = "0-99".parse().unwrap();
    let change = |change: Change, market: Market| {
        let (state, service) = (state.clone(), ecommerce.clone());
        async move {
            state
                .change_ownership(change, &service, market, range, Epoch(2), None)
                .await
        }
    };
    // A write in flight: it holds the gate shared until its commit is durable.
    let in_flight = state.write_gate().await;
    // The target takes a range it held none of: no write of it can be in flight.
    tokio::time::timeout(std::time::Duration::from_secs(60), change(Change::Own, my))
        .await
        .expect("own waited for a write to another range")
        .unwrap();
    // Fencing takes writes away: it waits for the write in flight.
    let fence = tokio::spawn(change(Change::Fence, my));
    settle().await;
    assert!(!fence.is_finished(), "the fence did not wait for the write");
    drop(in_flight);
    fence.await.unwrap().unwrap();

    // A purge holds the gate and marks its scope: owning a range of it waits for the purge.
    let scope = domicile_core::Scope {
        service: ecommerce.clone(),
        market: sg,
        buckets: domicile_core::BucketSet::from_ranges([range]),
    };
    let purge = state.start_purge(&scope).await.unwrap();
    let own = tokio::spawn(change(Change::Own, sg));
    settle().await;
    assert!(
        !own.is_finished(),
        "owning a range being purged raced the purge"
    );
    drop(purge);
    own.await.unwrap().unwrap();
    assert!(
        state.start_purge(&scope).await.is_err(),
        "a purge of a range owned here is refused"
    );
}

#[tokio::test]
async fn a_change_stream_of_large_records_ends_early_and_continues_where_it_stopped() {
    let node = Node::start("cn-beijing").await;
    // Twelve records of ~1 MB: a change stream stops once it passes 8 MiB.
    for k in 0..12 {
        let r = node
            .data(
                Method::PUT,
                &format!("/v1/users/hk1/orders/big{k:02}"),
                "HK",
                vec![b'x'; 1_000_000],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let read = |after: u64| {
        let node = &node;
        async move {
            let uri = format!(
                "/internal/changes?service=ecommerce&market=HK&buckets=0-1023&after={after}"
            );
            let r = node.send(Method::GET, &uri, &[], "").await;
            assert_eq!(r.status, StatusCode::OK);
            let (_, frames, next) = frame::decode_all(&r.body).unwrap();
            let lsns: Vec<u64> = frames
                .iter()
                .map(|f| match f {
                    Frame::Change(c) => c.entry.lsn.0,
                    other => panic!("unexpected {other:?}"),
                })
                .collect();
            (lsns, next)
        }
    };
    let (first, next) = read(0).await;
    assert_eq!(
        first,
        (1..=9).collect::<Vec<_>>(),
        "stops after passing 8 MiB"
    );
    assert_eq!(next, Lsn(9), "continues after the last change sent");
    let (rest, end) = read(next.0).await;
    assert_eq!(rest, (10..=12).collect::<Vec<_>>());
    assert_eq!(end, Lsn(12));
}

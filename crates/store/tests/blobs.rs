//! The blob store: content addressing, streaming, limits, purge.

use bytes::Bytes;
use domicile_core::{Bucket, BucketRange, BucketSet, Scope};
use domicile_store::{BlobError, BlobStore};
use domicile_store_conformance::fixtures::{BUCKETS, collection, user_in_bucket};
use futures::TryStreamExt;

async fn read_all(
    store: &BlobStore,
    owner: &domicile_store::CollectionAddress,
    hash: &str,
) -> Vec<u8> {
    let chunks: Vec<Bytes> = store
        .get_stream(owner, hash)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

#[tokio::test]
async fn blobs_stream_in_and_out_by_content_address() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    let owner = collection("cloud", "MY", "ivy", "photos");
    let parts: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 10_000])).collect();
    let body = futures::stream::iter(parts.clone().into_iter().map(Ok::<_, std::io::Error>));
    let blob = store.put_stream(&owner, body, 1 << 20).await.unwrap();
    assert_eq!(blob.size, 400_000);
    let expected: Vec<u8> = parts.concat();
    assert_eq!(blob.hash, blake3::hash(&expected).to_hex().to_string());
    assert_eq!(read_all(&store, &owner, &blob.hash).await, expected);
    // The same content again is the same object.
    let again = store
        .put_bytes(&owner, Bytes::from(expected.clone()), 1 << 20)
        .await
        .unwrap();
    assert_eq!(again, blob);
    store.delete(&owner, &blob.hash).await.unwrap();
    assert!(matches!(
        store.get_stream(&owner, &blob.hash).await,
        Err(BlobError::NotFound)
    ));
}

#[tokio::test]
async fn oversized_and_broken_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    let owner = collection("cloud", "MY", "jay", "photos");
    let big = futures::stream::iter(
        (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 1000]))),
    );
    assert!(matches!(
        store.put_stream(&owner, big, 5_000).await,
        Err(BlobError::TooLarge { limit: 5_000 })
    ));
    let broken = futures::stream::iter([
        Ok(Bytes::from("part")),
        Err(std::io::Error::other("client went away")),
    ]);
    assert!(matches!(
        store.put_stream(&owner, broken, 5_000).await,
        Err(BlobError::Upload(_))
    ));
    let files: Vec<_> = walk(dir.path());
    assert!(files.is_empty(), "left behind: {files:?}");
}

#[tokio::test]
async fn large_blobs_go_through_a_temporary_object_that_a_refusal_removes() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    let owner = collection("cloud", "MY", "kay", "photos");
    let mib = |i: u8| Ok::<_, std::io::Error>(Bytes::from(vec![i; 1 << 20]));
    // Past the single-put size, so stored through a multipart upload and a rename.
    let parts: Vec<_> = (0..7u8).map(mib).collect();
    let expected: Vec<u8> = (0..7u8).flat_map(|i| vec![i; 1 << 20]).collect();
    let blob = store
        .put_stream(&owner, futures::stream::iter(parts), 8 << 20)
        .await
        .unwrap();
    assert_eq!(blob.hash, blake3::hash(&expected).to_hex().to_string());
    assert_eq!(read_all(&store, &owner, &blob.hash).await, expected);
    let too_big = futures::stream::iter((0..9u8).map(mib));
    assert!(matches!(
        store.put_stream(&owner, too_big, 8 << 20).await,
        Err(BlobError::TooLarge { .. })
    ));
    let broken = futures::stream::iter(
        (0..6u8)
            .map(mib)
            .chain([Err(std::io::Error::other("client went away"))]),
    );
    assert!(matches!(
        store.put_stream(&owner, broken, 8 << 20).await,
        Err(BlobError::Upload(_))
    ));
    let files = walk(dir.path());
    assert_eq!(files.len(), 1, "left behind: {files:?}");
    assert!(files[0].ends_with(&blob.hash), "{files:?}");
}

#[tokio::test]
async fn purge_deletes_exactly_the_scope() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    // Buckets 3 and 4 are in the scope; 30 (a folder name starting with "3") and 7 are not.
    let mut blobs = Vec::new();
    for (bucket, body, purged) in [
        (3, "three", true),
        (4, "four", true),
        (30, "thirty", false),
        (7, "seven", false),
    ] {
        let owner = collection(
            "cloud",
            "MY",
            &user_in_bucket(Bucket(bucket), "b"),
            "photos",
        );
        let blob = store
            .put_bytes(&owner, Bytes::from(body), 100)
            .await
            .unwrap();
        blobs.push((owner, blob, body, purged));
    }
    let scope = Scope {
        service: blobs[0].0.service.clone(),
        market: blobs[0].0.market,
        buckets: BucketSet::from_ranges([BucketRange::new(3, 4).unwrap()]),
    };
    assert_eq!(store.purge(&scope).await.unwrap(), 2);
    for (owner, blob, body, purged) in &blobs {
        if *purged {
            assert!(matches!(
                store.get_stream(owner, &blob.hash).await,
                Err(BlobError::NotFound)
            ));
        } else {
            assert_eq!(read_all(&store, owner, &blob.hash).await, body.as_bytes());
        }
    }
    assert_eq!(store.purge(&scope).await.unwrap(), 0, "nothing left");
    // A service with no blobs in the market: nothing to list, nothing deleted.
    let no_blobs = Scope {
        service: "account".parse().unwrap(),
        ..scope
    };
    assert_eq!(store.purge(&no_blobs).await.unwrap(), 0);
}

#[tokio::test]
async fn purge_user_deletes_one_users_blobs_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = BlobStore::local(dir.path()).unwrap();
    let (u1, u2) = (
        user_in_bucket(Bucket(5), "p"),
        user_in_bucket(Bucket(5), "q"),
    );
    let longer = format!("{u1}0");
    let o1 = collection("cloud", "MY", &u1, "photos");
    let others = [
        collection("cloud", "MY", &u2, "photos"),
        collection("cloud", "MY", &longer, "photos"),
        collection("cloud", "SG", &u1, "photos"),
    ];
    store.put_bytes(&o1, Bytes::from("a"), 100).await.unwrap();
    let b1 = store.put_bytes(&o1, Bytes::from("b"), 100).await.unwrap();
    let mut kept = Vec::new();
    for o in &others {
        kept.push(store.put_bytes(o, Bytes::from("c"), 100).await.unwrap());
    }
    let removed = store
        .purge_user(&o1.service, o1.market, &o1.user, BUCKETS)
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert!(matches!(
        store.get_stream(&o1, &b1.hash).await,
        Err(BlobError::NotFound)
    ));
    for (o, b) in others.iter().zip(&kept) {
        assert_eq!(read_all(&store, o, &b.hash).await, b"c");
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

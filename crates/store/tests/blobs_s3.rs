//! The blob store on S3: the behaviours `blobs.rs` checks on the local backend, against a real
//! S3-compatible server (`s3s-fs`, installed by `.ci/run`) that each test starts on a free port
//! and stops when it ends.
//!
//! The server is `$DOMICILE_S3_SERVER`, else `s3s-fs` on `PATH`, in `$CARGO_HOME/bin` or in
//! `~/.cargo/bin`. Without one the tests print `skipped: <why>` and pass, unless
//! `DOMICILE_REQUIRE_S3=1`.

use bytes::Bytes;
use domicile_core::{Bucket, BucketSet, Scope};
use domicile_store::{BlobError, BlobStore, CollectionAddress};
use domicile_store_conformance::fixtures::{collection, user_in_bucket};
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::aws::AmazonS3Builder;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BUCKET: &str = "domicile-blobs";
const ACCESS_KEY: &str = "domicile-test";
const SECRET_KEY: &str = "domicile-test-secret";
const MIB: usize = 1024 * 1024;

/// A running S3-compatible server over a temporary folder; killed on drop.
struct S3Server {
    child: Child,
    endpoint: String,
    /// The server's data folder: one folder per bucket, plus its multipart state.
    root: tempfile::TempDir,
    _logs: tempfile::TempDir,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl S3Server {
    /// Starts the server with one empty bucket, or returns `None` (after printing why) when no
    /// server is installed and `DOMICILE_REQUIRE_S3=1` is not set.
    fn start() -> Option<Self> {
        let binary = match find_server() {
            Ok(binary) => binary,
            Err(why) => {
                if std::env::var("DOMICILE_REQUIRE_S3").as_deref() == Ok("1") {
                    panic!("DOMICILE_REQUIRE_S3=1 but {why}");
                }
                eprintln!("skipped: {why}");
                return None;
            }
        };
        // The port is free when picked but may be taken before the server binds it: the server
        // then exits, and another port is tried.
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Self::start_on_free_port(&binary) {
                Ok(server) => return Some(server),
                Err(why) => failures.push(why),
            }
        }
        panic!(
            "could not start {}:\n{}",
            binary.display(),
            failures.join("\n")
        );
    }

    fn start_on_free_port(binary: &Path) -> Result<Self, String> {
        let root = tempfile::tempdir().expect("server data folder");
        // s3s-fs keeps each bucket as a folder of its root.
        std::fs::create_dir(root.path().join(BUCKET)).expect("create the bucket");
        let logs = tempfile::tempdir().expect("server log folder");
        let log_path = logs.path().join("s3s-fs.log");
        let log = std::fs::File::create(&log_path).expect("server log");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("pick a free port")
            .port();
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(root.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("server log"))
            .stderr(log)
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary.display()))?;
        let mut server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            root,
            _logs: logs,
        };
        let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = server.child.try_wait().expect("server status") {
                return Err(format!("port {port}: exited with {status}: {}", log()));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("port {port}: not accepting after 20 s: {}", log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn spec(&self, prefix: &str) -> String {
        format!(
            "s3://{BUCKET}/{prefix}?endpoint={}&region=local&allow_http=true",
            self.endpoint
        )
    }

    fn credentials() -> AmazonS3Builder {
        AmazonS3Builder::new()
            .with_access_key_id(ACCESS_KEY)
            .with_secret_access_key(SECRET_KEY)
    }

    /// A blob store on this server under `prefix`, opened from its spec.
    fn blobs(&self, prefix: &str) -> BlobStore {
        BlobStore::s3(&self.spec(prefix), Self::credentials()).expect("open the s3 blob store")
    }

    /// Every key in the bucket, through the S3 API.
    async fn keys(&self) -> Vec<String> {
        let s3 = Self::credentials()
            .with_bucket_name(BUCKET)
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .build()
            .expect("s3 client");
        let mut keys: Vec<String> = s3
            .list(None)
            .map_ok(|meta| meta.location.to_string())
            .try_collect()
            .await
            .expect("list the bucket");
        keys.sort();
        keys
    }

    /// Every file in the server's data folder but the sidecars s3s-fs keeps beside objects (which
    /// its delete leaves behind): objects, and the parts and state of multipart uploads not yet
    /// completed or aborted.
    fn files(&self) -> Vec<PathBuf> {
        let sidecar = |path: &PathBuf| {
            path.parent() == Some(self.root.path())
                && path.file_name().is_some_and(|name| {
                    let name = name.to_string_lossy();
                    name.starts_with(".bucket-")
                        && (name.ends_with(".internal.json") || name.ends_with(".metadata.json"))
                        && !name.contains(".upload-")
                })
        };
        let mut files: Vec<PathBuf> = walk(self.root.path())
            .into_iter()
            .filter(|path| !sidecar(path))
            .collect();
        files.sort();
        files
    }
}

fn find_server() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("DOMICILE_S3_SERVER") {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(format!(
                "DOMICILE_S3_SERVER={} is not a file",
                path.display()
            ))
        };
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .unwrap_or_default();
    let cargo_home = std::env::var_os("CARGO_HOME").map(|home| PathBuf::from(home).join("bin"));
    let home = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo/bin"));
    on_path
        .into_iter()
        .chain(cargo_home)
        .chain(home)
        .map(|dir| dir.join("s3s-fs"))
        .find(|path| path.is_file())
        .ok_or_else(|| {
            "no S3-compatible server: set DOMICILE_S3_SERVER, or put s3s-fs on PATH or in \
             ~/.cargo/bin (`cargo install s3s-fs --locked --version 0.14.1 --features binary`)"
                .to_string()
        })
}

fn walk(dir: &Path) -> Vec<PathBuf> {
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

async fn read_all(store: &BlobStore, owner: &CollectionAddress, hash: &str) -> Vec<u8> {
    let chunks: Vec<Bytes> = store
        .get_stream(owner, hash)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    chunks.concat()
}

/// `total` bytes in chunks of `chunk`, not all alike (so parts differ).
fn pattern(total: usize, chunk: usize) -> Vec<Bytes> {
    (0..total)
        .step_by(chunk)
        .map(|start| {
            let len = chunk.min(total - start);
            Bytes::from(
                (start..start + len)
                    .map(|i| (i % 251) as u8)
                    .collect::<Vec<u8>>(),
            )
        })
        .collect()
}

fn ok_stream(parts: Vec<Bytes>) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> {
    futures::stream::iter(parts.into_iter().map(Ok))
}

/// `parts` as an upload body that, before yielding the part at `wait_at`, waits until the server
/// has stored a part of a multipart upload, and then ends with `end`: so that an upload refused or
/// broken after that point has parts on the server to abort.
fn after_a_stored_part(
    server: &S3Server,
    parts: Vec<Bytes>,
    wait_at: usize,
    end: Option<std::io::Error>,
) -> impl futures::Stream<Item = Result<Bytes, std::io::Error>> + Send {
    let root = server.root.path().to_path_buf();
    futures::stream::iter(parts.into_iter().enumerate())
        .then(move |(i, part)| {
            let root = root.clone();
            async move {
                if i == wait_at {
                    wait_for_a_stored_part(&root).await;
                }
                Ok(part)
            }
        })
        .chain(futures::stream::iter(end.map(Err)))
}

/// Waits until s3s-fs holds a part of a multipart upload (`.upload_id-{id}.part-{n}` in its root).
async fn wait_for_a_stored_part(root: &Path) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stored = std::fs::read_dir(root).unwrap().any(|entry| {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            name.starts_with(".upload_id-") && name.contains(".part-")
        });
        if stored {
            return;
        }
        assert!(Instant::now() < deadline, "no part stored after 20 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn blob_key(prefix: &str, owner: &CollectionAddress, hash: &str) -> String {
    format!(
        "{prefix}/blobs/{}/{}/{}/{}/{hash}",
        owner.service, owner.market, owner.bucket.0, owner.user
    )
}

#[tokio::test]
async fn s3_blobs_stream_in_and_out_by_content_address() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.blobs("region-a");
    let owner = collection("cloud", "MY", "ivy", "photos");
    let parts: Vec<Bytes> = (0..40u8).map(|i| Bytes::from(vec![i; 10_000])).collect();
    let blob = store
        .put_stream(&owner, ok_stream(parts.clone()), 1 << 20)
        .await
        .unwrap();
    assert_eq!(blob.size, 400_000);
    let expected: Vec<u8> = parts.concat();
    assert_eq!(blob.hash, blake3::hash(&expected).to_hex().to_string());
    assert_eq!(read_all(&store, &owner, &blob.hash).await, expected);
    // Under the spec's prefix, at its content address, and nothing else.
    assert_eq!(
        server.keys().await,
        [blob_key("region-a", &owner, &blob.hash)]
    );
    // The same content again is the same object.
    let again = store
        .put_bytes(&owner, Bytes::from(expected.clone()), 1 << 20)
        .await
        .unwrap();
    assert_eq!(again, blob);
    assert_eq!(server.keys().await.len(), 1);
    store.delete(&owner, &blob.hash).await.unwrap();
    assert!(matches!(
        store.get_stream(&owner, &blob.hash).await,
        Err(BlobError::NotFound)
    ));
    // Deleting a missing blob is not an error.
    store.delete(&owner, &blob.hash).await.unwrap();
    assert!(server.keys().await.is_empty());
}

#[tokio::test]
async fn s3_large_blobs_stream_through_a_multipart_upload() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.blobs("region-a");
    let owner = collection("cloud", "MY", "kim", "photos");
    let total = 9 * MIB + 12_345;
    let parts = pattern(total, 256 * 1024 + 7);
    let blob = store
        .put_stream(&owner, ok_stream(parts.clone()), 64 * MIB as u64)
        .await
        .unwrap();
    let expected = parts.concat();
    assert_eq!(blob.size, total as u64);
    assert_eq!(blob.hash, blake3::hash(&expected).to_hex().to_string());
    // The temporary object was moved to the content address: one object, no upload state.
    let key = blob_key("region-a", &owner, &blob.hash);
    assert_eq!(server.keys().await, std::slice::from_ref(&key));
    assert_eq!(server.files(), [server.root.path().join(BUCKET).join(&key)]);
    // Streamed out in more than one piece.
    let chunks: Vec<Bytes> = store
        .get_stream(&owner, &blob.hash)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert!(chunks.len() > 1, "one chunk of {total} bytes");
    assert!(chunks.concat() == expected, "the blob came back changed");
}

#[tokio::test]
async fn s3_oversized_and_broken_uploads_leave_nothing() {
    let Some(server) = S3Server::start() else {
        return;
    };
    let store = server.blobs("region-a");
    let owner = collection("cloud", "MY", "jay", "photos");
    // Refused while still in memory.
    let big = ok_stream(pattern(10_000, 1000));
    assert!(matches!(
        store.put_stream(&owner, big, 5_000).await,
        Err(BlobError::TooLarge { limit: 5_000 })
    ));
    // Refused after a part was stored (the upload turns multipart at its sixth MiB).
    let limit = 7 * MIB as u64;
    let huge = after_a_stored_part(&server, pattern(9 * MIB, MIB), 6, None);
    assert!(matches!(
        store.put_stream(&owner, huge, limit).await,
        Err(BlobError::TooLarge { limit: l }) if l == limit
    ));
    // Broken while still in memory, and after a part was stored.
    let broken = futures::stream::iter([
        Ok(Bytes::from("part")),
        Err(std::io::Error::other("client went away")),
    ]);
    assert!(matches!(
        store.put_stream(&owner, broken, 5_000).await,
        Err(BlobError::Upload(_))
    ));
    let reset = std::io::Error::other("reset");
    let broken = after_a_stored_part(&server, pattern(6 * MIB + 1, MIB), 6, Some(reset));
    assert!(matches!(
        store.put_stream(&owner, broken, limit).await,
        Err(BlobError::Upload(_))
    ));
    assert_eq!(server.keys().await, Vec::<String>::new());
    let files = server.files();
    assert!(files.is_empty(), "left behind: {files:?}");
}

#[tokio::test]
async fn s3_purge_deletes_exactly_the_scope() {
    let Some(server) = S3Server::start() else {
        return;
    };
    // Two regions sharing the bucket under their own prefixes.
    let (store, other_region) = (server.blobs("region-a"), server.blobs("region-b"));
    let (u1, u2, u3) = (
        user_in_bucket(Bucket(3), "b"),
        user_in_bucket(Bucket(3), "c"),
        user_in_bucket(Bucket(4), "b"),
    );
    let (o1, o2, o3) = (
        collection("cloud", "MY", &u1, "photos"),
        collection("cloud", "MY", &u2, "photos"),
        collection("cloud", "MY", &u3, "photos"),
    );
    let b1 = store.put_bytes(&o1, Bytes::from("one"), 100).await.unwrap();
    let b1b = store.put_bytes(&o1, Bytes::from("uno"), 100).await.unwrap();
    let b2 = store.put_bytes(&o2, Bytes::from("two"), 100).await.unwrap();
    let b3 = store
        .put_bytes(&o3, Bytes::from("three"), 100)
        .await
        .unwrap();
    let elsewhere = other_region
        .put_bytes(&o1, Bytes::from("one"), 100)
        .await
        .unwrap();
    let scope = Scope {
        service: o1.service.clone(),
        market: o1.market,
        buckets: BucketSet::from_buckets([Bucket(3)]),
    };
    assert_eq!(store.purge(&scope).await.unwrap(), 3);
    for (owner, blob) in [(&o1, &b1), (&o1, &b1b), (&o2, &b2)] {
        assert!(matches!(
            store.get_stream(owner, &blob.hash).await,
            Err(BlobError::NotFound)
        ));
    }
    assert_eq!(read_all(&store, &o3, &b3.hash).await, b"three");
    assert_eq!(read_all(&other_region, &o1, &elsewhere.hash).await, b"one");
    assert_eq!(
        server.keys().await,
        [
            blob_key("region-a", &o3, &b3.hash),
            blob_key("region-b", &o1, &elsewhere.hash),
        ]
    );
    // Nothing left to purge.
    assert_eq!(store.purge(&scope).await.unwrap(), 0);
}

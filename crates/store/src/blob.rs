//! The region's blob store (photos): content-addressed objects through `object_store`.
//!
//! A blob lives at `blobs/{service}/{market}/{bucket}/{user}/{blake3 hex}`: addressed by content
//! within one user's data, so that purging a scope deletes whole prefixes and erasing a user
//! never touches another user's bytes (dedupe across users would tie their erasures together).
//!
//! Uploads are hashed and counted while they stream in, and refused once they pass the size
//! limit. A body that ends within [`SINGLE_PUT_BYTES`] is written with one put at its content
//! address. A larger one streams through a multipart upload to a temporary object, which is
//! renamed to its content address only when complete; a refused or broken upload is aborted and
//! its temporary object removed, so it leaves no blob behind.
//!
//! A region's config names its blob store with a spec ([`BlobStore::from_spec`]):
//!
//! - `file:PATH`: a local folder (relative to the config's base folder); files and their
//!   folders are fsynced, and a rename is atomic.
//! - `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=true]`: an S3 or S3-compatible
//!   bucket, objects under `PREFIX` (so regions can share a bucket). `endpoint` is for
//!   S3-compatible servers (path-style requests), `allow_http=true` permits a plain `http://`
//!   endpoint; values are taken literally. Credentials and anything the spec leaves out come
//!   from the standard environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//!   `AWS_SESSION_TOKEN`, `AWS_REGION`, ...), never from the spec. S3 has no rename: it is a
//!   server-side copy then a delete of the temporary object, so a blob larger than the store's
//!   single-copy limit (5 GiB on AWS) cannot be stored. A process killed mid-upload can leave an
//!   incomplete multipart upload or an object under `tmp/`; neither is ever read as a blob, and a
//!   bucket lifecycle rule (abort incomplete multipart uploads, expire `tmp/`) removes them.

use crate::encryption::{BlobOpener, BlobSealer, DataKeys, EncryptionError};
use crate::error::StoreError;
use crate::record::CollectionAddress;
use bytes::Bytes;
use domicile_core::{BucketCount, Market, Scope, ServiceName, UserId};
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BlobError {
    #[error("blob exceeds the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("blob not found")]
    NotFound,
    #[error("blob upload was interrupted: {0}")]
    Upload(String),
    #[error("object store error: {0}")]
    Store(String),
    #[error(
        "invalid blob store spec {0:?}: expected file:PATH or \
         s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=true]"
    )]
    Spec(String),
    /// The blob's data key or sealed bytes failed (never the caller's fault).
    #[error("blob encryption: {0}")]
    Sealing(String),
}

impl BlobError {
    fn from_sealing(e: EncryptionError) -> Self {
        match e {
            // A destroyed key means the blob was erased: nothing of it can be read.
            EncryptionError::KeyDestroyed(_) => BlobError::NotFound,
            other => BlobError::Sealing(other.to_string()),
        }
    }

    fn from_store(e: StoreError) -> Self {
        match e {
            StoreError::Encryption(e) => Self::from_sealing(e),
            other => BlobError::Sealing(other.to_string()),
        }
    }
}

impl From<object_store::Error> for BlobError {
    fn from(e: object_store::Error) -> Self {
        match e {
            object_store::Error::NotFound { .. } => BlobError::NotFound,
            other => BlobError::Store(other.to_string()),
        }
    }
}

/// The metadata a blob collection's record holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    /// BLAKE3 of the content, lower-case hex.
    pub hash: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
}

/// A region's blob store.
#[derive(Clone)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Set: every blob is sealed under its owner's data key (`encryption::sealed_blobs`).
    keys: Option<Arc<DataKeys>>,
}

impl std::fmt::Debug for BlobStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlobStore")
            .field("store", &self.store)
            .field("sealed", &self.keys.is_some())
            .finish()
    }
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);

/// A body that ends within this many bytes is stored with one put at its content address, with no
/// temporary object; a larger one goes through a multipart upload in parts of this size (S3's
/// smallest part is 5 MiB).
pub const SINGLE_PUT_BYTES: u64 = 5 * 1024 * 1024;

/// Parts of one multipart upload in flight at once (bounds an upload's memory).
const PARTS_IN_FLIGHT: usize = 4;

/// How long an abandoned upload's parts in flight may take to finish before it is aborted.
const ABORT_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// A multipart upload to a temporary object, once the body outgrew [`SINGLE_PUT_BYTES`].
struct Staged {
    tmp: ObjectPath,
    upload: WriteMultipart,
}

/// Bytes on their way to the object store.
#[derive(Default)]
struct Outgoing {
    stored: u64,
    head: Vec<Bytes>,
}

/// What a body that was read to its end left to store.
struct Received {
    hash: String,
    size: u64,
    /// The whole body, when it was small enough to keep in memory.
    head: Vec<Bytes>,
}

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store, keys: None }
    }

    /// Seals every blob stored from now on (and opens what it reads) with its owner's data key.
    pub fn with_encryption(mut self, keys: Arc<DataKeys>) -> Self {
        self.keys = Some(keys);
        self
    }

    /// A blob store in a local folder (created if missing), with fsync on every write.
    pub fn local(path: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(path)
            .map_err(|e| BlobError::Store(format!("create {}: {e}", path.display())))?;
        let fs = LocalFileSystem::new_with_prefix(path)?.with_fsync(true);
        Ok(Self::new(Arc::new(fs)))
    }

    /// Opens `file:PATH` (relative to `base`) or
    /// `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=true]` (credentials from the
    /// environment; see the module doc).
    pub fn from_spec(spec: &str, base: &Path) -> Result<Self, BlobError> {
        if spec.starts_with("s3://") {
            return Self::s3(spec, AmazonS3Builder::from_env());
        }
        match spec.split_once(':') {
            Some(("file", path)) if !path.is_empty() => Self::local(&base.join(path)),
            _ => Err(BlobError::Spec(spec.to_string())),
        }
    }

    /// Opens an `s3://` spec; `builder` supplies what the spec does not name, credentials above
    /// all ([`from_spec`](Self::from_spec) passes `AmazonS3Builder::from_env()`). Makes no request.
    pub fn s3(spec: &str, builder: AmazonS3Builder) -> Result<Self, BlobError> {
        let parsed = S3Spec::parse(spec)?;
        let mut builder = builder.with_bucket_name(&parsed.bucket);
        if let Some(endpoint) = &parsed.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &parsed.region {
            builder = builder.with_region(region);
        }
        if let Some(allow_http) = parsed.allow_http {
            builder = builder.with_allow_http(allow_http);
        }
        let s3 = builder
            .build()
            .map_err(|e| BlobError::Store(format!("open {spec}: {e}")))?;
        Ok(match parsed.prefix {
            Some(prefix) => Self::new(Arc::new(PrefixStore::new(s3, prefix))),
            None => Self::new(Arc::new(s3)),
        })
    }

    fn user_prefix(owner: &CollectionAddress) -> String {
        format!(
            "blobs/{}/{}/{}/{}",
            owner.service, owner.market, owner.bucket.0, owner.user
        )
    }

    fn path(owner: &CollectionAddress, hash: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{hash}", Self::user_prefix(owner)))
    }

    fn tmp_path() -> ObjectPath {
        let n = UPLOADS.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        ObjectPath::from(format!("tmp/{}-{nanos}-{n}", std::process::id()))
    }

    /// Streams `body` in, refusing it once it passes `limit` bytes. Returns its content address.
    pub async fn put_stream<S, E>(
        &self,
        owner: &CollectionAddress,
        body: S,
        limit: u64,
    ) -> Result<BlobRef, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut staged = None;
        let sealer = match &self.keys {
            Some(keys) => Some(
                BlobSealer::new(
                    keys.for_write(owner).await.map_err(BlobError::from_store)?,
                    owner.clone(),
                )
                .map_err(BlobError::from_sealing)?,
            ),
            None => None,
        };
        let received = match self.receive(body, limit, sealer, &mut staged).await {
            Ok(received) => received,
            Err(e) => {
                if let Some(staged) = staged {
                    Self::abort(staged).await;
                }
                return Err(e);
            }
        };
        let target = Self::path(owner, &received.hash);
        match staged {
            None => {
                let payload: PutPayload = received.head.into_iter().collect();
                self.store.put(&target, payload).await?;
            }
            Some(Staged { tmp, upload }) => {
                // On failure `finish` aborts the upload itself.
                upload.finish().await?;
                if let Err(e) = self.store.rename(&tmp, &target).await {
                    self.discard(&tmp).await;
                    return Err(e.into());
                }
            }
        }
        Ok(BlobRef {
            hash: received.hash,
            size: received.size,
            content_type: None,
        })
    }

    /// Reads `body` to its end, hashing and counting its plaintext (sealing it on the way when
    /// `sealer` is given); keeps what it stores in memory while that fits within
    /// [`SINGLE_PUT_BYTES`], then starts `staged` and streams the rest into it.
    async fn receive<S, E>(
        &self,
        body: S,
        limit: u64,
        mut sealer: Option<BlobSealer>,
        staged: &mut Option<Staged>,
    ) -> Result<Received, BlobError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut out = Outgoing::default();
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| BlobError::Upload(e.to_string()))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&chunk);
            match &mut sealer {
                Some(sealer) => {
                    for sealed in sealer.push(&chunk).map_err(BlobError::from_sealing)? {
                        self.emit(&mut out, sealed, staged).await?;
                    }
                }
                None => self.emit(&mut out, chunk, staged).await?,
            }
        }
        if let Some(sealer) = sealer {
            let last = sealer.finish().map_err(BlobError::from_sealing)?;
            self.emit(&mut out, last, staged).await?;
        }
        Ok(Received {
            hash: hasher.finalize().to_hex().to_string(),
            size,
            head: out.head,
        })
    }

    /// Hands stored bytes on: kept in memory, or into the multipart upload once they outgrow
    /// one put.
    async fn emit(
        &self,
        out: &mut Outgoing,
        bytes: Bytes,
        staged: &mut Option<Staged>,
    ) -> Result<(), BlobError> {
        out.stored += bytes.len() as u64;
        match staged {
            Some(Staged { upload, .. }) => {
                upload.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                upload.put(bytes);
            }
            None => {
                out.head.push(bytes);
                if out.stored > SINGLE_PUT_BYTES {
                    let tmp = Self::tmp_path();
                    let mut upload = WriteMultipart::new(self.store.put_multipart(&tmp).await?);
                    for chunk in out.head.drain(..) {
                        upload.put(chunk);
                    }
                    *staged = Some(Staged { tmp, upload });
                }
            }
        }
        Ok(())
    }

    /// Aborts a refused or broken upload so that the store keeps none of it. Parts in flight are
    /// let finish first (for a while): on S3 a part that lands after the abort would be kept,
    /// unlisted, until a lifecycle rule removes it.
    async fn abort(mut staged: Staged) {
        let settled = tokio::time::timeout(ABORT_WAIT, staged.upload.wait_for_capacity(0)).await;
        if let Ok(Err(e)) = settled {
            tracing::debug!(tmp = %staged.tmp, error = %e, "a part of an abandoned upload failed");
        }
        if let Err(e) = staged.upload.abort().await {
            tracing::warn!(tmp = %staged.tmp, error = %e, "could not abort a blob upload");
        }
    }

    /// Removes a temporary object left by a failed rename.
    async fn discard(&self, tmp: &ObjectPath) {
        match self.store.delete(tmp).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(%tmp, error = %e, "could not remove a temporary blob object");
            }
        }
    }

    /// Stores a whole blob given in memory (imports between regions).
    pub async fn put_bytes(
        &self,
        owner: &CollectionAddress,
        bytes: Bytes,
        limit: u64,
    ) -> Result<BlobRef, BlobError> {
        let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(bytes)]);
        self.put_stream(owner, body, limit).await
    }

    /// Streams a blob out.
    pub async fn get_stream(
        &self,
        owner: &CollectionAddress,
        hash: &str,
    ) -> Result<BoxStream<'static, Result<Bytes, BlobError>>, BlobError> {
        let result = self.store.get(&Self::path(owner, hash)).await?;
        let sealed = result.into_stream().map_err(BlobError::from);
        let Some(keys) = &self.keys else {
            return Ok(sealed.boxed());
        };
        let opener = BlobOpener::new(
            keys.for_read(owner).await.map_err(BlobError::from_store)?,
            owner.clone(),
        );
        Ok(open_stream(sealed.boxed(), opener))
    }

    /// Whether the blob is stored.
    pub async fn exists(&self, owner: &CollectionAddress, hash: &str) -> Result<bool, BlobError> {
        match self.store.head(&Self::path(owner, hash)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes one blob; a missing blob is not an error.
    pub async fn delete(&self, owner: &CollectionAddress, hash: &str) -> Result<(), BlobError> {
        match self.store.delete(&Self::path(owner, hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every blob of `scope`; returns how many. Deletes go out as the listing comes in
    /// (on S3 in bulk requests of up to 1000 keys).
    pub async fn purge(&self, scope: &Scope) -> Result<u64, BlobError> {
        // One listing of the market's bucket folders, then only those in the scope: a service
        // without blobs costs one empty listing, not one per bucket of the range.
        let market = ObjectPath::from(format!("blobs/{}/{}", scope.service, scope.market));
        let folders = match self.store.list_with_delimiter(Some(&market)).await {
            Ok(listing) => listing.common_prefixes,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let in_scope: Vec<ObjectPath> = folders
            .into_iter()
            .filter(|folder| {
                folder
                    .filename()
                    .and_then(|name| name.parse::<u16>().ok())
                    .is_some_and(|b| scope.buckets.contains(domicile_core::Bucket(b)))
            })
            .collect();
        let mut removed = 0u64;
        for chunk in in_scope.chunks(PURGE_FOLDERS_AT_ONCE) {
            let deleted = futures::future::try_join_all(
                chunk
                    .iter()
                    .map(|folder| delete_prefix(self.store.clone(), folder.clone())),
            )
            .await?;
            removed += deleted.iter().sum::<u64>();
        }
        Ok(removed)
    }

    /// Deletes every blob of one user in one service and market (every collection: blobs are
    /// stored per user, see the module doc); returns how many.
    pub async fn purge_user(
        &self,
        service: &ServiceName,
        market: Market,
        user: &UserId,
        buckets: BucketCount,
    ) -> Result<u64, BlobError> {
        let prefix = ObjectPath::from(format!(
            "blobs/{service}/{market}/{}/{user}",
            buckets.bucket_of(user).0
        ));
        delete_prefix(self.store.clone(), prefix).await
    }
}

/// Bucket folders a purge deletes at once.
const PURGE_FOLDERS_AT_ONCE: usize = 16;

/// Deletes every blob under `prefix`; returns how many.
async fn delete_prefix(store: Arc<dyn ObjectStore>, prefix: ObjectPath) -> Result<u64, BlobError> {
    let mut removed = 0u64;
    let listing = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location)
        .boxed();
    let mut deleted = store.delete_stream(listing);
    while let Some(result) = deleted.next().await {
        match result {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => removed += 1,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(removed)
}

/// Opens a sealed blob's bytes as they stream out; the last segment is checked at the end, so a
/// cut-short blob ends in an error, never in silently short content.
fn open_stream(
    sealed: BoxStream<'static, Result<Bytes, BlobError>>,
    opener: BlobOpener,
) -> BoxStream<'static, Result<Bytes, BlobError>> {
    futures::stream::try_unfold(Some((sealed, opener)), |state| async move {
        let Some((mut sealed, mut opener)) = state else {
            return Ok(None);
        };
        loop {
            match sealed.next().await {
                Some(chunk) => {
                    let plain = opener.push(&chunk?).map_err(BlobError::from_sealing)?;
                    if !plain.is_empty() {
                        let joined: Bytes = if plain.len() == 1 {
                            plain.into_iter().next().unwrap_or_default()
                        } else {
                            plain.concat().into()
                        };
                        return Ok(Some((joined, Some((sealed, opener)))));
                    }
                }
                None => {
                    let last = opener.finish().map_err(BlobError::from_sealing)?;
                    return Ok(Some((last, None)));
                }
            }
        }
    })
    .boxed()
}

/// A parsed `s3://BUCKET[/PREFIX][?endpoint=URL&region=R&allow_http=BOOL]` spec.
#[derive(Debug, PartialEq, Eq)]
struct S3Spec {
    bucket: String,
    prefix: Option<ObjectPath>,
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
}

impl S3Spec {
    fn parse(spec: &str) -> Result<Self, BlobError> {
        let invalid = || BlobError::Spec(spec.to_string());
        let rest = spec.strip_prefix("s3://").ok_or_else(invalid)?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
        if bucket.is_empty() || bucket.contains(char::is_whitespace) {
            return Err(invalid());
        }
        let prefix = prefix.trim_end_matches('/');
        let prefix = if prefix.is_empty() {
            None
        } else if prefix.split('/').any(str::is_empty) {
            return Err(invalid());
        } else {
            Some(ObjectPath::parse(prefix).map_err(|_| invalid())?)
        };
        let mut parsed = Self {
            bucket: bucket.to_string(),
            prefix,
            endpoint: None,
            region: None,
            allow_http: None,
        };
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').ok_or_else(invalid)?;
            if value.is_empty() {
                return Err(invalid());
            }
            let fresh = match key {
                "endpoint" => parsed.endpoint.replace(value.to_string()).is_none(),
                "region" => parsed.region.replace(value.to_string()).is_none(),
                "allow_http" => {
                    let allow = value.parse::<bool>().map_err(|_| invalid())?;
                    parsed.allow_http.replace(allow).is_none()
                }
                _ => false,
            };
            if !fresh {
                return Err(invalid());
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3(
        bucket: &str,
        prefix: Option<&str>,
        endpoint: Option<&str>,
        region: Option<&str>,
        allow_http: Option<bool>,
    ) -> S3Spec {
        S3Spec {
            bucket: bucket.to_string(),
            prefix: prefix.map(ObjectPath::from),
            endpoint: endpoint.map(str::to_string),
            region: region.map(str::to_string),
            allow_http,
        }
    }

    #[test]
    fn s3_specs_parse() {
        let parse = |spec: &str| S3Spec::parse(spec).expect(spec);
        assert_eq!(parse("s3://photos"), s3("photos", None, None, None, None));
        assert_eq!(parse("s3://photos/"), s3("photos", None, None, None, None));
        assert_eq!(
            parse("s3://photos/eu/frankfurt/"),
            s3("photos", Some("eu/frankfurt"), None, None, None)
        );
        assert_eq!(
            parse("s3://photos/mumbai?region=ap-south-1"),
            s3("photos", Some("mumbai"), None, Some("ap-south-1"), None)
        );
        assert_eq!(
            parse("s3://b?endpoint=http://127.0.0.1:9000&region=local&allow_http=true"),
            s3(
                "b",
                None,
                Some("http://127.0.0.1:9000"),
                Some("local"),
                Some(true)
            )
        );
        assert_eq!(
            parse("s3://b/p?allow_http=false"),
            s3("b", Some("p"), None, None, Some(false))
        );
    }

    #[test]
    fn bad_s3_specs_are_refused_with_both_forms_named() {
        for spec in [
            "s3://",
            "s3:///prefix",
            "s3://b//double",
            "s3://b/../up",
            "s3://b?region",
            "s3://b?region=",
            "s3://b?allow_http=yes",
            "s3://b?region=a&region=b",
            "s3://b?access_key_id=AKIA",
            "s3://my bucket",
        ] {
            let err = S3Spec::parse(spec).expect_err(spec);
            assert!(
                matches!(&err, BlobError::Spec(s) if s == spec),
                "{spec}: {err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("file:PATH") && message.contains("s3://BUCKET"),
                "{message}"
            );
        }
        let base = Path::new("/nonexistent");
        for spec in ["s3:/b", "S3://b", "file:", "gs://b"] {
            assert!(
                matches!(BlobStore::from_spec(spec, base), Err(BlobError::Spec(_))),
                "{spec}"
            );
        }
    }

    #[test]
    fn an_s3_spec_opens_without_a_request() {
        let base = Path::new("/nonexistent");
        BlobStore::from_spec(
            "s3://b/region-a?endpoint=http://127.0.0.1:9&allow_http=true",
            base,
        )
        .expect("an s3 spec opens");
    }
}

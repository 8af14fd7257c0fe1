//! The region's blob store (photos): content-addressed objects through `object_store`.
//!
//! A blob lives at `blobs/{service}/{market}/{bucket}/{user}/{blake3 hex}`: addressed by content
//! within one user's data, so that purging a scope deletes whole prefixes and erasing a user
//! never touches another user's bytes (dedupe across users would tie their erasures together).
//! Uploads stream to a temporary object while hashing and counting, and are renamed to their
//! content address only when complete and within the size limit: a refused or broken upload
//! leaves no blob behind. The local filesystem backend fsyncs files and their folders.

use crate::record::CollectionAddress;
use bytes::Bytes;
use domicile_core::Scope;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt, TryStreamExt};
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
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
    #[error("invalid blob store spec {0:?}: expected file:PATH")]
    Spec(String),
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
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
}

static UPLOADS: AtomicU64 = AtomicU64::new(0);

impl BlobStore {
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    /// A blob store in a local folder (created if missing), with fsync on every write.
    pub fn local(path: &Path) -> Result<Self, BlobError> {
        std::fs::create_dir_all(path)
            .map_err(|e| BlobError::Store(format!("create {}: {e}", path.display())))?;
        let fs = LocalFileSystem::new_with_prefix(path)?.with_fsync(true);
        Ok(Self::new(Arc::new(fs)))
    }

    /// Opens `file:PATH` (relative to `base`).
    pub fn from_spec(spec: &str, base: &Path) -> Result<Self, BlobError> {
        match spec.split_once(':') {
            Some(("file", path)) if !path.is_empty() => Self::local(&base.join(path)),
            _ => Err(BlobError::Spec(spec.to_string())),
        }
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
        let n = UPLOADS.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = ObjectPath::from(format!("tmp/{}-{nanos}-{n}", std::process::id()));
        let mut upload = WriteMultipart::new(self.store.put_multipart(&tmp).await?);
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        let mut body = std::pin::pin!(body);
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    let _ = upload.abort().await;
                    return Err(BlobError::Upload(e.to_string()));
                }
            };
            size += chunk.len() as u64;
            if size > limit {
                let _ = upload.abort().await;
                return Err(BlobError::TooLarge { limit });
            }
            hasher.update(&chunk);
            upload.put(chunk);
        }
        upload.finish().await?;
        let hash = hasher.finalize().to_hex().to_string();
        self.store.rename(&tmp, &Self::path(owner, &hash)).await?;
        Ok(BlobRef {
            hash,
            size,
            content_type: None,
        })
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
        Ok(result.into_stream().map_err(BlobError::from).boxed())
    }

    /// Deletes one blob; a missing blob is not an error.
    pub async fn delete(&self, owner: &CollectionAddress, hash: &str) -> Result<(), BlobError> {
        match self.store.delete(&Self::path(owner, hash)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every blob of `scope`; returns how many.
    pub async fn purge(&self, scope: &Scope) -> Result<u64, BlobError> {
        let mut removed = 0u64;
        for bucket in scope.buckets.buckets() {
            let prefix = ObjectPath::from(format!(
                "blobs/{}/{}/{}",
                scope.service, scope.market, bucket.0
            ));
            let mut listing = self.store.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                let meta = meta?;
                match self.store.delete(&meta.location).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => removed += 1,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        Ok(removed)
    }
}

//! [`EncryptedStore`]: any engine, with every value sealed on the way in and opened on the way
//! out. The change log, keys, versions and LSNs pass through untouched, so replication, imports
//! and ordering work as on the bare engine; digests are over plaintext, so an encrypted region
//! and any other agree on the same data whatever their keys.

use super::seal::{VALUE_OVERHEAD, open_value, record_place, seal_value};
use super::{DataKeyId, DataKeys};
use crate::digest::{BucketDigest, BucketDigester};
use crate::error::StoreError;
use crate::record::{
    Change, CollectionAddress, ImportOutcome, ListPage, Lsn, Mutation, MutationOp, Record,
    RecordAddress, VersionedRecord,
};
use crate::store::{RegionStore, SnapshotScan};
use async_trait::async_trait;
use aws_lc_rs::aead::RandomizedNonceKey;
use bytes::Bytes;
use domicile_core::{BucketCount, Market, RecordKey, Scope, ServiceName, UserId, Version};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

pub struct EncryptedStore {
    inner: Arc<dyn RegionStore>,
    keys: Arc<DataKeys>,
}

impl EncryptedStore {
    pub fn new(inner: Arc<dyn RegionStore>, keys: Arc<DataKeys>) -> Self {
        Self { inner, keys }
    }

    /// `inner` sealed under `region`'s keyring file at `keyring` (made if missing), its data
    /// keys kept in `inner`'s metadata: how a region node seals its store.
    pub fn with_keyring_file(
        inner: Arc<dyn RegionStore>,
        keyring: &std::path::Path,
        region: &str,
    ) -> Result<Self, StoreError> {
        let ring = super::KeyringFile::open_or_create(keyring, region)?;
        let keys = Arc::new(DataKeys::new(region, Arc::new(ring), inner.clone()));
        Ok(Self::new(inner, keys))
    }

    pub fn keys(&self) -> &Arc<DataKeys> {
        &self.keys
    }
}

/// The data keys of a batch's owners, each fetched (or made) once. Missing keys are made
/// concurrently, so their durable writes share the engine's group commits: an import of a
/// thousand new users costs a few fsyncs, not a thousand.
async fn keys_of<'a>(
    keys: &DataKeys,
    owners: impl Iterator<Item = &'a CollectionAddress>,
    write: bool,
) -> Result<BatchKeys, StoreError> {
    let mut distinct: Vec<&CollectionAddress> = Vec::new();
    let mut seen = HashSet::new();
    let mut last: Option<DataKeyId> = None;
    for owner in owners {
        // Batches come grouped by owner (snapshots run in user order): a repeat of the last
        // owner needs no id built and hashed.
        if last.as_ref().is_some_and(|id| id.owns(owner)) {
            continue;
        }
        let id = DataKeyId::of(owner);
        if seen.insert(id.clone()) {
            distinct.push(owner);
        }
        last = Some(id);
    }
    let fetched = futures::future::try_join_all(distinct.iter().map(|owner| async move {
        let key = if write {
            keys.for_write(owner).await?
        } else {
            keys.for_read(owner).await?
        };
        Ok::<_, StoreError>((DataKeyId::of(owner), key))
    }))
    .await?;
    Ok(BatchKeys {
        keys: fetched.into_iter().collect(),
        last: None,
    })
}

/// A batch's data keys by owner, remembering the last one asked for.
struct BatchKeys {
    keys: HashMap<DataKeyId, Arc<RandomizedNonceKey>>,
    last: Option<(DataKeyId, Arc<RandomizedNonceKey>)>,
}

impl BatchKeys {
    fn key_of(&mut self, owner: &CollectionAddress) -> Result<Arc<RandomizedNonceKey>, StoreError> {
        if let Some((id, key)) = &self.last
            && id.owns(owner)
        {
            return Ok(key.clone());
        }
        let id = DataKeyId::of(owner);
        let key = self
            .keys
            .get(&id)
            .cloned()
            .ok_or_else(|| StoreError::Corrupt("a batch's data key went missing".into()))?;
        self.last = Some((id, key.clone()));
        Ok(key)
    }
}

async fn open(
    keys: &DataKeys,
    address: &RecordAddress,
    sealed: &[u8],
) -> Result<Bytes, StoreError> {
    let key = keys.for_read(&address.collection).await?;
    Ok(open_value(&key, &record_place(address), sealed)?)
}

async fn open_records(
    keys: &DataKeys,
    mut records: Vec<VersionedRecord>,
) -> Result<Vec<VersionedRecord>, StoreError> {
    let live = records.iter().filter(|r| r.value.is_some());
    let mut batch_keys = keys_of(keys, live.map(|r| &r.address.collection), false).await?;
    for r in &mut records {
        if let Some(v) = &r.value {
            let key = batch_keys.key_of(&r.address.collection)?;
            r.value = Some(open_value(&key, &record_place(&r.address), v)?);
        }
    }
    Ok(records)
}

#[async_trait]
impl RegionStore for EncryptedStore {
    fn engine(&self) -> &'static str {
        self.inner.engine()
    }

    async fn write(&self, mut batch: Vec<Mutation>) -> Result<Vec<Version>, StoreError> {
        let puts = batch.iter().filter(|m| matches!(m.op, MutationOp::Put(_)));
        let mut batch_keys = keys_of(&self.keys, puts.map(|m| &m.address.collection), true).await?;
        for m in &mut batch {
            if let MutationOp::Put(value) = &m.op {
                let key = batch_keys.key_of(&m.address.collection)?;
                m.op = MutationOp::Put(seal_value(&key, &record_place(&m.address), value)?);
            }
        }
        self.inner.write(batch).await
    }

    async fn get(&self, address: &RecordAddress) -> Result<Option<Record>, StoreError> {
        match self.inner.get(address).await? {
            Some(r) => Ok(Some(Record {
                version: r.version,
                value: open(&self.keys, address, &r.value).await?,
            })),
            None => Ok(None),
        }
    }

    async fn list(
        &self,
        collection: &CollectionAddress,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let mut page = self.inner.list(collection, after, limit).await?;
        for item in &mut page.items {
            item.size = item.size.saturating_sub(VALUE_OVERHEAD as u64);
        }
        Ok(page)
    }

    async fn import(&self, mut records: Vec<VersionedRecord>) -> Result<ImportOutcome, StoreError> {
        let live = records.iter().filter(|r| r.value.is_some());
        let mut batch_keys = keys_of(&self.keys, live.map(|r| &r.address.collection), true).await?;
        for r in &mut records {
            if let Some(v) = &r.value {
                let key = batch_keys.key_of(&r.address.collection)?;
                r.value = Some(seal_value(&key, &record_place(&r.address), v)?);
            }
        }
        self.inner.import(records).await
    }

    async fn snapshot(&self, scope: &Scope) -> Result<SnapshotScan, StoreError> {
        let scan = self.inner.snapshot(scope).await?;
        let keys = self.keys.clone();
        let chunks = scan
            .chunks
            .then(move |chunk| {
                let keys = keys.clone();
                async move { open_records(&keys, chunk?).await }
            })
            .boxed();
        Ok(SnapshotScan {
            lsn: scan.lsn,
            chunks,
        })
    }

    async fn changes(
        &self,
        after: Lsn,
        scope: &Scope,
        limit: usize,
    ) -> Result<(Vec<Change>, Lsn), StoreError> {
        let (mut changes, upto) = self.inner.changes(after, scope, limit).await?;
        for c in &mut changes {
            if let Some(VersionedRecord {
                address,
                value: Some(v),
                ..
            }) = &mut c.current
            {
                *v = open(&self.keys, address, v).await?;
            }
        }
        Ok((changes, upto))
    }

    fn last_lsn(&self) -> Lsn {
        self.inner.last_lsn()
    }

    async fn wait_for_changes(&self, after: Lsn, timeout: Duration) -> Lsn {
        self.inner.wait_for_changes(after, timeout).await
    }

    /// Over plaintext, from a snapshot: the engine's own digest would hash ciphertext, which
    /// differs between regions (their own keys, fresh nonces) for the same data.
    async fn digest(&self, scope: &Scope) -> Result<Vec<BucketDigest>, StoreError> {
        let mut digesters: BTreeMap<u16, BucketDigester> = scope
            .buckets
            .buckets()
            .map(|b| (b.0, BucketDigester::new(b)))
            .collect();
        let mut scan = self.snapshot(scope).await?;
        while let Some(chunk) = scan.chunks.next().await {
            for r in chunk? {
                let (Some(value), Some(d)) = (&r.value, digesters.get_mut(&r.address.bucket().0))
                else {
                    continue;
                };
                d.add(&r.address, r.version, value);
            }
        }
        Ok(digesters
            .into_values()
            .map(BucketDigester::finish)
            .collect())
    }

    async fn purge(&self, scope: &Scope) -> Result<u64, StoreError> {
        self.inner.purge(scope).await
    }

    async fn purge_user(
        &self,
        service: &ServiceName,
        market: Market,
        user: &UserId,
        buckets: BucketCount,
    ) -> Result<u64, StoreError> {
        self.inner.purge_user(service, market, user, buckets).await
    }

    async fn trim_changes(&self, upto: Lsn) -> Result<u64, StoreError> {
        self.inner.trim_changes(upto).await
    }

    async fn load_meta(&self, name: &str) -> Result<Option<Bytes>, StoreError> {
        self.inner.load_meta(name).await
    }

    async fn store_meta(&self, name: &str, value: Bytes) -> Result<(), StoreError> {
        self.inner.store_meta(name, value).await
    }

    async fn delete_meta(&self, name: &str) -> Result<(), StoreError> {
        self.inner.delete_meta(name).await
    }

    async fn list_meta(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(String, Bytes)>, StoreError> {
        self.inner.list_meta(prefix, after, limit).await
    }

    async fn scrub_meta(&self) -> Result<(), StoreError> {
        self.inner.scrub_meta().await
    }
}

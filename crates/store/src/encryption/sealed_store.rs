//! [`EncryptedStore`]: any engine, with every value sealed on the way in and opened on the way
//! out. The change log, keys, versions and LSNs pass through untouched, so replication, imports
//! and ordering work as on the bare engine; digests are over plaintext, so an encrypted region
//! and any other agree on the same data whatever their keys.

use super::data_key::DataKey;
use super::seal::{VALUE_OVERHEAD, open_value, record_place, seal_value};
use super::{BatchKey, DataKeyId, DataKeys};
use crate::digest::{BucketDigest, BucketDigester};
use crate::error::StoreError;
use crate::record::{
    Change, CollectionAddress, ImportOutcome, ListPage, Lsn, Mutation, MutationOp, Record,
    RecordAddress, VersionedRecord,
};
use crate::store::{MetaPuts, RegionStore, SnapshotScan};
use async_trait::async_trait;
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
/// concurrently; a batch that writes (`write`) carries the puts of the keys it made in its own
/// commit, so a new user's first values and their key are one durable write.
async fn keys_of<'a>(
    keys: &DataKeys,
    owners: impl Iterator<Item = &'a CollectionAddress>,
    write: bool,
) -> Result<BatchKeys, StoreError> {
    let mut distinct: Vec<(DataKeyId, &CollectionAddress)> = Vec::new();
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
            distinct.push((id.clone(), owner));
        }
        last = Some(id);
    }
    let fetched = futures::future::join_all(distinct.into_iter().map(|(id, owner)| async move {
        let key = if write {
            keys.for_batch(&id).await?
        } else {
            BatchKey {
                key: keys.for_read(owner).await?,
                unstored: None,
            }
        };
        Ok::<_, StoreError>((id, key))
    }))
    .await;
    let mut batch = BatchKeys {
        keys: HashMap::with_capacity(fetched.len()),
        unstored: MetaPuts::new(),
        last: None,
    };
    let mut failed = None;
    for f in fetched {
        match f {
            Ok((id, k)) => {
                batch.unstored.extend(k.unstored);
                batch.keys.insert(id, k.key);
            }
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    if let Some(e) = failed {
        // Keys made for this batch will not be stored by it.
        batch.settle(keys, false);
        return Err(e);
    }
    Ok(batch)
}

/// A batch's data keys by owner, remembering the last one asked for.
struct BatchKeys {
    keys: HashMap<DataKeyId, Arc<DataKey>>,
    /// Puts of the new keys among them, for the batch's commit.
    unstored: MetaPuts,
    last: Option<(DataKeyId, Arc<DataKey>)>,
}

impl BatchKeys {
    fn key_of(&mut self, owner: &CollectionAddress) -> Result<Arc<DataKey>, StoreError> {
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

    /// Commits the sealed batch (`sealed` says whether sealing succeeded) with `meta` and the
    /// puts of its new keys, then tells `keys` whether they were stored.
    async fn commit<T, F>(
        self,
        keys: &DataKeys,
        sealed: Result<(), StoreError>,
        mut meta: MetaPuts,
        commit: impl FnOnce(MetaPuts) -> F,
    ) -> Result<T, StoreError>
    where
        F: std::future::Future<Output = Result<T, StoreError>>,
    {
        if let Err(e) = sealed {
            self.settle(keys, false);
            return Err(e);
        }
        meta.extend(self.unstored.iter().cloned());
        let committed = commit(meta).await;
        self.settle(keys, committed.is_ok());
        committed
    }

    /// Tells `keys` whether the batch's commit, which carried its new keys, applied.
    fn settle(&self, keys: &DataKeys, stored: bool) {
        for (name, _) in &self.unstored {
            keys.settle(name, stored);
        }
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

    async fn write_with_meta(
        &self,
        mut batch: Vec<Mutation>,
        meta: MetaPuts,
    ) -> Result<Vec<Version>, StoreError> {
        let puts = batch.iter().filter(|m| matches!(m.op, MutationOp::Put(_)));
        let mut batch_keys = keys_of(&self.keys, puts.map(|m| &m.address.collection), true).await?;
        let sealed = batch.iter_mut().try_for_each(|m| {
            if let MutationOp::Put(value) = &m.op {
                let key = batch_keys.key_of(&m.address.collection)?;
                m.op = MutationOp::Put(seal_value(&key, &record_place(&m.address), value)?);
            }
            Ok::<_, StoreError>(())
        });
        batch_keys
            .commit(&self.keys, sealed, meta, |meta| {
                self.inner.write_with_meta(batch, meta)
            })
            .await
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

    async fn import_with_meta(
        &self,
        mut records: Vec<VersionedRecord>,
        meta: MetaPuts,
    ) -> Result<ImportOutcome, StoreError> {
        let live = records.iter().filter(|r| r.value.is_some());
        let mut batch_keys = keys_of(&self.keys, live.map(|r| &r.address.collection), true).await?;
        let sealed = records.iter_mut().try_for_each(|r| {
            if let Some(v) = &r.value {
                let key = batch_keys.key_of(&r.address.collection)?;
                r.value = Some(seal_value(&key, &record_place(&r.address), v)?);
            }
            Ok::<_, StoreError>(())
        });
        batch_keys
            .commit(&self.keys, sealed, meta, |meta| {
                self.inner.import_with_meta(records, meta)
            })
            .await
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

//! Data keys: one random AES-256 key per (service, market, bucket, user) — one user's data in
//! one service — kept in the store's metadata wrapped by the region's key-encryption key.
//!
//! A key is made (and durably stored) before the first value is sealed with it. Unwrapped keys
//! are cached, bounded; destroying a key deletes it from the metadata, evicts it, and scrubs the
//! metadata so the wrapped bytes leave the engine's files.

use super::EncryptionError;
use super::data_key::DataKey;
use super::keyring::KeyProvider;
use super::seal::place;
use crate::error::StoreError;
use crate::record::CollectionAddress;
use crate::store::RegionStore;
use bytes::Bytes;
use domicile_core::{Bucket, Market, Scope, ServiceName, UserId};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use zeroize::Zeroizing;

const PREFIX: &str = "dek/";
/// Unwrapped keys kept in memory; beyond this, some are dropped and unwrapped again when needed.
/// An unwrapped AES-256-GCM key costs ~500 bytes in aws-lc (`heaptrack`): 65,536 of them were
/// 30 MiB of a node's 256 MiB budget. A miss costs one metadata read and one unwrap, and a
/// copy meets a user's keys together (snapshots run in user order), so fewer suffice.
const CACHE_KEYS: usize = 16_384;
/// Key creations in flight at once are serialised per shard, so two writers of one user never
/// make two keys.
const CREATE_SHARDS: usize = 64;
/// Metadata names listed per page while destroying a scope's keys.
const LIST_PAGE: usize = 1024;
/// Key deletes queued at once while destroying many (they share the engine's group commits).
const DESTROYS_AT_ONCE: usize = 256;

/// Whose data a data key seals.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DataKeyId {
    pub service: ServiceName,
    pub market: Market,
    pub bucket: Bucket,
    pub user: UserId,
}

impl DataKeyId {
    pub fn of(c: &CollectionAddress) -> Self {
        Self {
            service: c.service.clone(),
            market: c.market,
            bucket: c.bucket,
            user: c.user.clone(),
        }
    }

    /// Whether `c` is this owner's data: what [`DataKeyId::of`] would give for `c`, without
    /// building and hashing an id.
    pub fn owns(&self, c: &CollectionAddress) -> bool {
        self.user == c.user
            && self.bucket == c.bucket
            && self.market == c.market
            && self.service == c.service
    }

    /// Its metadata name; ordered by service, market, bucket, so a scope's keys are one range.
    fn name(&self) -> String {
        format!(
            "{PREFIX}{}/{}/{:05}/{}",
            self.service, self.market, self.bucket.0, self.user
        )
    }
}

/// A data key as a batch of writes or imports gets it.
pub struct BatchKey {
    pub key: Arc<DataKey>,
    /// The key's metadata put (name, wrapped key) while it is not known to be stored: the batch
    /// stores it in its own commit ([`RegionStore::write_with_meta`]), then tells
    /// [`DataKeys::settle`] how that went.
    pub unstored: Option<(String, Bytes)>,
}

/// A key made for batches whose commits have not landed yet. Every batch that seals with it
/// carries its put, so whichever commits first stores it; until one has, no other key can be
/// made for its owner (it is not in the evictable cache, and makers look here first).
struct UnstoredKey {
    key: Arc<DataKey>,
    wrapped: Bytes,
    /// Batches carrying it whose commits have not ended.
    batches: usize,
}

/// A region's data keys.
pub struct DataKeys {
    region: String,
    provider: Arc<dyn KeyProvider>,
    store: Arc<dyn RegionStore>,
    cache: Mutex<HashMap<String, Arc<DataKey>>>,
    unstored: Mutex<HashMap<String, UnstoredKey>>,
    creating: Vec<tokio::sync::Mutex<()>>,
    /// Scrubs asked for, and the last ticket a finished scrub covered.
    scrub_tickets: AtomicU64,
    scrubbed: tokio::sync::Mutex<u64>,
}

impl DataKeys {
    /// `store` is the engine itself (not an [`super::EncryptedStore`]): data keys live in its
    /// metadata.
    pub fn new(region: &str, provider: Arc<dyn KeyProvider>, store: Arc<dyn RegionStore>) -> Self {
        Self {
            region: region.to_string(),
            provider,
            store,
            cache: Mutex::new(HashMap::new()),
            unstored: Mutex::new(HashMap::new()),
            creating: (0..CREATE_SHARDS)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
            scrub_tickets: AtomicU64::new(0),
            scrubbed: tokio::sync::Mutex::new(0),
        }
    }

    /// The wrap context binds a wrapped key to its region and owner.
    fn context(&self, name: &str) -> Vec<u8> {
        place(
            "domicile/data-key/v1",
            &[self.region.as_bytes(), name.as_bytes()],
        )
    }

    fn cached(&self, name: &str) -> Option<Arc<DataKey>> {
        self.cache.lock().ok()?.get(name).cloned()
    }

    fn remember(&self, name: String, key: Arc<DataKey>) {
        if let Ok(mut cache) = self.cache.lock() {
            if cache.len() >= CACHE_KEYS {
                // Drop an arbitrary eighth: cheap, and a dropped key only costs an unwrap.
                let drop: Vec<String> = cache.keys().take(CACHE_KEYS / 8).cloned().collect();
                for k in drop {
                    cache.remove(&k);
                }
            }
            cache.insert(name, key);
        }
    }

    fn shard_of(name: &str) -> usize {
        let h = blake3::hash(name.as_bytes());
        usize::from(h.as_bytes()[0]) % CREATE_SHARDS
    }

    fn shard(&self, name: &str) -> &tokio::sync::Mutex<()> {
        &self.creating[Self::shard_of(name)]
    }

    async fn load(&self, name: &str) -> Result<Option<Arc<DataKey>>, StoreError> {
        let Some(wrapped) = self.store.load_meta(name).await? else {
            return Ok(None);
        };
        let secret = self.provider.unwrap(&wrapped, &self.context(name)).await?;
        let key = DataKey::new(secret.as_ref())?;
        let key = Arc::new(key);
        self.remember(name.to_string(), key.clone());
        Ok(Some(key))
    }

    /// A new random key for `name`, and its wrapped form.
    async fn make(&self, name: &str) -> Result<(Arc<DataKey>, Bytes), StoreError> {
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(secret.as_mut())
            .map_err(|_| EncryptionError::Crypto("random data key"))?;
        let wrapped = self
            .provider
            .wrap(secret.as_ref(), &self.context(name))
            .await?;
        let key = DataKey::new(secret.as_ref())?;
        Ok((Arc::new(key), Bytes::from(wrapped)))
    }

    /// The unstored key of `name`, if a batch in flight made one; `join` counts one more batch
    /// carrying it.
    fn unstored_key(&self, name: &str, join: bool) -> Option<(Arc<DataKey>, Bytes)> {
        let mut unstored = self.unstored.lock().ok()?;
        let u = unstored.get_mut(name)?;
        if join {
            u.batches += 1;
        }
        Some((u.key.clone(), u.wrapped.clone()))
    }

    /// The key to seal `owner`'s data with, made and stored durably if it has none (blobs,
    /// whose segments are stored before any record names them).
    pub async fn for_write(&self, owner: &CollectionAddress) -> Result<Arc<DataKey>, StoreError> {
        let name = DataKeyId::of(owner).name();
        if let Some(key) = self.cached(&name) {
            return Ok(key);
        }
        let _one_maker = self.shard(&name).lock().await;
        if let Some((key, wrapped)) = self.unstored_key(&name, false) {
            self.store.store_meta(&name, wrapped).await?;
            self.settle_stored(&name);
            return Ok(key);
        }
        if let Some(key) = self.load(&name).await? {
            return Ok(key);
        }
        let (key, wrapped) = self.make(&name).await?;
        self.store.store_meta(&name, wrapped).await?;
        self.remember(name, key.clone());
        Ok(key)
    }

    /// The key to seal the data of `id`'s owner with in a batch of writes or imports. A new key is not
    /// stored here: the batch stores it in its own commit (one durable write for a new user's
    /// first values, not two), and must then [`DataKeys::settle`] it.
    pub async fn for_batch(&self, id: &DataKeyId) -> Result<BatchKey, StoreError> {
        let name = id.name();
        if let Some(key) = self.cached(&name) {
            return Ok(BatchKey {
                key,
                unstored: None,
            });
        }
        let _one_maker = self.shard(&name).lock().await;
        if let Some((key, wrapped)) = self.unstored_key(&name, true) {
            return Ok(BatchKey {
                key,
                unstored: Some((name, wrapped)),
            });
        }
        if let Some(key) = self.load(&name).await? {
            return Ok(BatchKey {
                key,
                unstored: None,
            });
        }
        let (key, wrapped) = self.make(&name).await?;
        if let Ok(mut unstored) = self.unstored.lock() {
            unstored.insert(
                name.clone(),
                UnstoredKey {
                    key: key.clone(),
                    wrapped: wrapped.clone(),
                    batches: 1,
                },
            );
        }
        Ok(BatchKey {
            key,
            unstored: Some((name, wrapped)),
        })
    }

    /// A batch that carried the unstored key `name` has committed (`stored`) or failed. Once one
    /// has committed, the key is an ordinary stored key; once every carrier has failed, it is
    /// forgotten (nothing sealed with it was stored), and the next batch makes or loads another.
    pub fn settle(&self, name: &str, stored: bool) {
        if stored {
            self.settle_stored(name);
            return;
        }
        if let Ok(mut unstored) = self.unstored.lock()
            && let Some(u) = unstored.get_mut(name)
        {
            u.batches = u.batches.saturating_sub(1);
            if u.batches == 0 {
                unstored.remove(name);
            }
        }
    }

    fn settle_stored(&self, name: &str) {
        let stored = self.unstored.lock().ok().and_then(|mut u| u.remove(name));
        if let Some(u) = stored {
            self.remember(name.to_string(), u.key);
        }
    }

    /// The key `owner`'s data was sealed with; an error if it was destroyed (or never made).
    pub async fn for_read(&self, owner: &CollectionAddress) -> Result<Arc<DataKey>, StoreError> {
        let name = DataKeyId::of(owner).name();
        if let Some(key) = self.cached(&name) {
            return Ok(key);
        }
        self.load(&name)
            .await?
            .ok_or_else(|| EncryptionError::KeyDestroyed(name).into())
    }

    /// Destroys every data key of `scope` (a completed move's source, a rolled-back target);
    /// returns how many.
    pub async fn destroy_scope(&self, scope: &Scope) -> Result<u64, StoreError> {
        let prefix = format!("{PREFIX}{}/{}/", scope.service, scope.market);
        let mut doomed = Vec::new();
        // Names are ordered by zero-padded bucket: each range of the scope is one listing.
        for range in scope.buckets.ranges() {
            // Every name of bucket `first` sorts after `…/{first:05}` (it goes on with `/user`).
            let mut after = Some(format!("{prefix}{:05}", range.first));
            'listing: loop {
                let page = self
                    .store
                    .list_meta(&prefix, after.as_deref(), LIST_PAGE)
                    .await?;
                let Some((last, _)) = page.last() else { break };
                after = Some(last.clone());
                for (name, _) in page {
                    let bucket = name[prefix.len()..]
                        .split('/')
                        .next()
                        .and_then(|b| b.parse::<u16>().ok());
                    // Listed from the range's first bucket on: in it until past its last.
                    match bucket {
                        Some(b) if b > range.last => break 'listing,
                        Some(_) => doomed.push(name),
                        None => {}
                    }
                }
            }
        }
        self.destroy_all(&doomed).await?;
        Ok(doomed.len() as u64)
    }

    /// Destroys `names`, a chunk at a time, then scrubs once. For each chunk the makers' locks
    /// of its shards are held (taken in shard order, so two destroyers never deadlock) while its
    /// deletes are queued together: they share the engine's group commits, no maker can cache a
    /// key being destroyed, and a maker waits for one chunk's commit at most, not the whole
    /// scope's (a 27k-key purge holding every lock stalled the region's new keys for seconds).
    async fn destroy_all(&self, names: &[String]) -> Result<(), StoreError> {
        if names.is_empty() {
            return Ok(());
        }
        for chunk in names.chunks(DESTROYS_AT_ONCE) {
            let mut shards: Vec<usize> = chunk.iter().map(|n| Self::shard_of(n)).collect();
            shards.sort_unstable();
            shards.dedup();
            let mut no_makers = Vec::with_capacity(shards.len());
            for shard in shards {
                no_makers.push(self.creating[shard].lock().await);
            }
            futures::future::try_join_all(chunk.iter().map(|name| self.store.delete_meta(name)))
                .await?;
            if let Ok(mut cache) = self.cache.lock() {
                for name in chunk {
                    cache.remove(name);
                }
            }
        }
        self.scrub().await
    }

    /// Scrubs the metadata after deletes that have returned. Concurrent callers share scrubs:
    /// one that starts after a caller's ticket covers that caller's deletes.
    async fn scrub(&self) -> Result<(), StoreError> {
        let ticket = self.scrub_tickets.fetch_add(1, Ordering::SeqCst) + 1;
        let mut covered = self.scrubbed.lock().await;
        if *covered >= ticket {
            return Ok(());
        }
        let upto = self.scrub_tickets.load(Ordering::SeqCst);
        self.store.scrub_meta().await?;
        *covered = upto;
        Ok(())
    }

    /// Destroys `user`'s data keys of every service in `services` (an erasure); returns how many
    /// existed.
    pub async fn destroy_user(
        &self,
        user: &UserId,
        market: Market,
        bucket: Bucket,
        services: &[ServiceName],
    ) -> Result<u64, StoreError> {
        let mut doomed = Vec::new();
        for service in services {
            let name = DataKeyId {
                service: service.clone(),
                market,
                bucket,
                user: user.clone(),
            }
            .name();
            if self.store.load_meta(&name).await?.is_some() {
                doomed.push(name);
            }
        }
        self.destroy_all(&doomed).await?;
        Ok(doomed.len() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::{BucketCount, CollectionName};

    fn address(service: &str, market: &str, user: &str, collection: &str) -> CollectionAddress {
        CollectionAddress::new(
            ServiceName::new(service).unwrap(),
            Market::new(market).unwrap(),
            UserId::new(user).unwrap(),
            CollectionName::new(collection).unwrap(),
            BucketCount::DEFAULT,
        )
    }

    #[test]
    fn an_id_owns_exactly_the_addresses_it_is_made_of() {
        let id = DataKeyId::of(&address("cloud", "MY", "u1", "notes"));
        assert!(
            id.owns(&address("cloud", "MY", "u1", "photos")),
            "any collection"
        );
        for other in [
            address("cloud", "MY", "u2", "notes"),
            address("cloud", "SG", "u1", "notes"),
            address("account", "MY", "u1", "profile"),
        ] {
            assert!(!id.owns(&other));
            assert_ne!(DataKeyId::of(&other), id);
        }
    }
}

//! The embedded engine's read paths: point reads, pages, snapshots, the change log, digests.

use super::EmbeddedStore;
use crate::digest::{BucketDigest, BucketDigester};
use crate::error::StoreError;
use crate::keys;
use crate::record::{
    Change, CollectionAddress, ListPage, ListedRecord, Lsn, Record, RecordAddress, VersionedRecord,
};
use crate::store::{SnapshotChunker, SnapshotScan};
use bytes::Bytes;
use domicile_core::{RecordKey, Scope};
use fjall::Readable;
use tokio_stream::wrappers::ReceiverStream;

/// Records per snapshot chunk: large enough to amortise a frame, small enough to checkpoint often.
const SNAPSHOT_CHUNK: usize = 1024;
/// Change-log entries examined per `changes` call, whatever the scope matches.
const CHANGES_SCAN_LIMIT: usize = 65_536;

/// Ranges of a digested bucket set this close are read by one scan.
const DIGEST_GAP: u32 = 16;

impl EmbeddedStore {
    pub(super) fn read_record(
        &self,
        address: &RecordAddress,
    ) -> Result<Option<Record>, StoreError> {
        let Some(raw) = self.inner.records.get(keys::record_key(address))? else {
            return Ok(None);
        };
        let (version, value) = keys::decode_value(&raw)?;
        Ok(value.map(|v| Record {
            version,
            value: Bytes::copy_from_slice(v),
        }))
    }

    pub(super) fn read_list(
        &self,
        collection: &CollectionAddress,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let range = keys::ListRange::new(collection, after);
        let mut items = Vec::new();
        let mut more = false;
        for guard in self
            .inner
            .records
            .range::<&[u8], _>(range.start.as_slice()..range.end.as_slice())
        {
            let (k, v) = guard.into_inner()?;
            let (version, value) = keys::decode_value(&v)?;
            let Some(value) = value else { continue };
            if items.len() == limit {
                more = true;
                break;
            }
            let key = range.record_key_of(&k)?;
            items.push(ListedRecord {
                key,
                version,
                size: value.len() as u64,
            });
        }
        let next = if more {
            items.last().map(|i| i.key.clone())
        } else {
            None
        };
        Ok(ListPage { items, next })
    }

    pub(super) fn read_snapshot(&self, scope: Scope) -> Result<SnapshotScan, StoreError> {
        let (snapshot, lsn) = {
            let committed = self
                .inner
                .shared
                .committed
                .lock()
                .map_err(|_| StoreError::Poisoned)?;
            (self.inner.db.snapshot(), *committed)
        };
        let records = self.inner.records.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // The scan runs on its own blocking thread and stops when the receiver goes away.
        tokio::task::spawn_blocking(move || {
            let send = |chunk| tx.blocking_send(chunk).is_ok();
            let mut chunks = SnapshotChunker::new(SNAPSHOT_CHUNK);
            for range in scope.buckets.ranges() {
                let (start, end) = keys::bucket_range_bounds(&scope.service, scope.market, *range);
                for guard in snapshot.range(&records, start..end) {
                    let item = guard
                        .into_inner()
                        .map_err(StoreError::from)
                        .and_then(|(k, v)| {
                            let (version, value) = keys::decode_value(&v)?;
                            Ok(VersionedRecord {
                                address: keys::decode_record_key(&k)?,
                                version,
                                value: value.map(Bytes::copy_from_slice),
                            })
                        });
                    match item.map(|r| chunks.push(r)) {
                        Ok(Some(chunk)) => {
                            if !send(Ok(chunk)) {
                                return;
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            send(Err(e));
                            return;
                        }
                    }
                }
            }
            if let Some(chunk) = chunks.finish() {
                send(Ok(chunk));
            }
            // Release the engine before the stream ends, so that a reader who drained it can
            // close and reopen the store at once.
            drop(snapshot);
            drop(records);
            drop(tx);
        });
        Ok(SnapshotScan {
            lsn,
            chunks: Box::pin(ReceiverStream::new(rx)),
        })
    }

    pub(super) fn read_changes(
        &self,
        after: Lsn,
        scope: &Scope,
        limit: usize,
    ) -> Result<(Vec<Change>, Lsn), StoreError> {
        let upto = self.last_lsn_committed()?;
        if after >= upto {
            return Ok((Vec::new(), after));
        }
        let mut position = after;
        let mut out = Vec::new();
        let mut exhausted = true;
        let start = keys::lsn_key(Lsn(after.0.saturating_add(1)));
        let end = keys::lsn_key(upto);
        for (examined, guard) in self.inner.changes.range(start..=end).enumerate() {
            if out.len() >= limit || examined >= CHANGES_SCAN_LIMIT {
                exhausted = false;
                break;
            }
            let (k, v) = guard.into_inner()?;
            let lsn = keys::decode_lsn(&k)?;
            position = lsn;
            let (entry, record_key) = keys::decode_change(lsn, &v)?;
            let a = &entry.address.collection;
            if !scope.contains(&a.service, a.market, a.bucket) {
                continue;
            }
            let current = match self.inner.records.get(record_key)? {
                Some(raw) => {
                    let (version, value) = keys::decode_value(&raw)?;
                    Some(VersionedRecord {
                        address: entry.address.clone(),
                        version,
                        value: value.map(Bytes::copy_from_slice),
                    })
                }
                None => None,
            };
            out.push(Change { entry, current });
        }
        if exhausted {
            // Everything up to the durable end was examined, matched or not.
            position = position.max(upto);
        }
        Ok((out, position.max(after)))
    }

    fn last_lsn_committed(&self) -> Result<Lsn, StoreError> {
        Ok(*self
            .inner
            .shared
            .committed
            .lock()
            .map_err(|_| StoreError::Poisoned)?)
    }

    /// One digest per bucket of the scope, in bucket order. Buckets are read by range scans
    /// over spans of the set (ranges less than [`DIGEST_GAP`] buckets apart share one scan):
    /// opening an iterator costs more than reading a few records, and a set of buckets changed
    /// by live writes is scattered.
    pub(super) fn read_digest(&self, scope: &Scope) -> Result<Vec<BucketDigest>, StoreError> {
        let snapshot = self.inner.db.snapshot();
        let offset = keys::market_prefix(&scope.service, scope.market).len();
        let mut digesters: std::collections::BTreeMap<u16, BucketDigester> = scope
            .buckets
            .buckets()
            .map(|b| (b.0, BucketDigester::new(b)))
            .collect();
        let mut spans: Vec<domicile_core::BucketRange> = Vec::new();
        for range in scope.buckets.ranges() {
            match spans.last_mut() {
                Some(last) if u32::from(range.first) <= u32::from(last.last) + DIGEST_GAP => {
                    last.last = last.last.max(range.last);
                }
                _ => spans.push(*range),
            }
        }
        for span in spans {
            let (start, end) = keys::bucket_range_bounds(&scope.service, scope.market, span);
            for guard in snapshot.range(&self.inner.records, start..end) {
                let (k, v) = guard.into_inner()?;
                let bucket = k
                    .get(offset..offset + 2)
                    .map(|b| u16::from_be_bytes([b[0], b[1]]))
                    .ok_or_else(|| StoreError::Corrupt("a record key without a bucket".into()))?;
                let Some(digester) = digesters.get_mut(&bucket) else {
                    continue; // a bucket in the gap between two ranges of the set
                };
                let (version, value) = keys::decode_value(&v)?;
                if let Some(value) = value {
                    digester.add(&keys::decode_record_key(&k)?, version, value);
                }
            }
        }
        Ok(digesters
            .into_values()
            .map(BucketDigester::finish)
            .collect())
    }
}

/// One page of metadata values under `prefix`, strictly after `after`.
pub(super) fn meta_page(
    meta: &fjall::Keyspace,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(String, Bytes)>, StoreError> {
    let mut out = Vec::new();
    for guard in meta.prefix(prefix.as_bytes()) {
        if out.len() == limit {
            break;
        }
        let (k, v) = guard.into_inner()?;
        if after.is_some_and(|a| k.as_ref() <= a.as_bytes()) {
            continue;
        }
        let name = String::from_utf8(k.to_vec())
            .map_err(|_| StoreError::Corrupt("a metadata name is not UTF-8".into()))?;
        out.push((name, Bytes::copy_from_slice(&v)));
    }
    Ok(out)
}

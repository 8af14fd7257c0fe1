//! The PostgreSQL engine's read paths, through the pool: point reads, pages, snapshots (one
//! repeatable-read transaction that also reads the log position), the change log, digests.

use super::schema::version_from_sql;
use super::{PostgresStore, pg_error};
use crate::digest::{BucketDigest, BucketDigester};
use crate::error::StoreError;
use crate::keys;
use crate::record::{
    Change, ChangeEntry, ChangeOp, CollectionAddress, ListPage, ListedRecord, Lsn, Record,
    RecordAddress, VersionedRecord,
};
use crate::store::{SNAPSHOT_CHUNK_BYTES, SnapshotChunker, SnapshotScan, chunk_weight};
use bytes::Bytes;
use domicile_core::{RecordKey, Scope};
use futures::{StreamExt, TryStreamExt};
use std::collections::BTreeMap;
use tokio_postgres::IsolationLevel;
use tokio_postgres::types::ToSql;
use tokio_stream::wrappers::ReceiverStream;

/// At most this many rows per portal fetch (one round trip each) and per chunk of a snapshot;
/// the mover checkpoints per its own chunks, not per fetch.
const SNAPSHOT_CHUNK: i32 = 4096;
/// Change-log entries examined per `changes` call, whatever the scope matches (LSNs are dense,
/// so this bounds the range the query reads).
const CHANGES_SCAN_LIMIT: u64 = 65_536;

fn lsn_from_sql(v: i64) -> Result<Lsn, StoreError> {
    u64::try_from(v)
        .map(Lsn)
        .map_err(|_| StoreError::Corrupt("negative LSN".into()))
}

fn lsn_to_sql(lsn: Lsn) -> i64 {
    i64::try_from(lsn.0).unwrap_or(i64::MAX)
}

/// A read-only repeatable-read transaction: every query in it sees one snapshot.
async fn snapshot_transaction(
    client: &mut deadpool_postgres::Object,
) -> Result<deadpool_postgres::Transaction<'_>, StoreError> {
    client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(pg_error)
}

/// The key ranges of a scope's buckets, as two parallel arrays (bounds `[lo, hi)`).
fn scope_bounds(scope: &Scope) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    scope
        .buckets
        .ranges()
        .iter()
        .map(|r| keys::bucket_range_bounds(&scope.service, scope.market, *r))
        .unzip()
}

impl PostgresStore {
    pub(super) async fn read_record(
        &self,
        address: &RecordAddress,
    ) -> Result<Option<Record>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.get)
            .await
            .map_err(pg_error)?;
        let row = client
            .query_opt(&stmt, &[&keys::record_key(address)])
            .await
            .map_err(pg_error)?;
        Ok(row.and_then(|r| {
            r.get::<_, Option<Vec<u8>>>(1).map(|value| Record {
                version: version_from_sql(r.get(0)),
                value: Bytes::from(value),
            })
        }))
    }

    pub(super) async fn read_list(
        &self,
        collection: &CollectionAddress,
        after: Option<&RecordKey>,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let range = keys::ListRange::new(collection, after);
        let fetch = i64::try_from(limit)
            .unwrap_or(i64::MAX - 1)
            .saturating_add(1);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.list)
            .await
            .map_err(pg_error)?;
        let rows = client
            .query(&stmt, &[&range.start, &range.end, &fetch])
            .await
            .map_err(pg_error)?;
        let more = rows.len() > limit;
        let mut items = Vec::with_capacity(rows.len().min(limit));
        for row in rows.into_iter().take(limit) {
            let key = range.record_key_of(row.get::<_, &[u8]>(0))?;
            items.push(ListedRecord {
                key,
                version: version_from_sql(row.get(1)),
                size: u64::try_from(row.get::<_, i32>(2)).unwrap_or(0),
            });
        }
        let next = if more {
            items.last().map(|i| i.key.clone())
        } else {
            None
        };
        Ok(ListPage { items, next })
    }

    /// Opens a repeatable-read transaction, reads the log position in it (so the LSN and the
    /// rows agree), then streams the scope's ranges through a portal, chunk by chunk.
    pub(super) async fn read_snapshot(&self, scope: Scope) -> Result<SnapshotScan, StoreError> {
        let mut client = self.client().await?;
        let sql = self.inner.sql.clone();
        let (lsn_tx, lsn_rx) = tokio::sync::oneshot::channel();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let scan = async {
                let txn = snapshot_transaction(&mut client).await?;
                let position = txn
                    .query_one(&sql.log_position, &[])
                    .await
                    .map_err(pg_error)?;
                if lsn_tx.send(lsn_from_sql(position.get(0))?).is_err() {
                    return Ok(());
                }
                let stmt = txn
                    .prepare_cached(&sql.scan_range)
                    .await
                    .map_err(pg_error)?;
                // Rows are fetched by count, so the count follows the rows' size: one row
                // first, then about a chunk's bytes at the size of the rows fetched last.
                let mut fetch: i32 = 1;
                let mut chunks = SnapshotChunker::new(SNAPSHOT_CHUNK as usize);
                for range in scope.buckets.ranges() {
                    let (start, end) =
                        keys::bucket_range_bounds(&scope.service, scope.market, *range);
                    let portal = txn.bind(&stmt, &[&start, &end]).await.map_err(pg_error)?;
                    loop {
                        let rows = txn.query_portal(&portal, fetch).await.map_err(pg_error)?;
                        if rows.is_empty() {
                            break;
                        }
                        let (done, fetched) = (rows.len() < fetch as usize, rows.len());
                        let mut weight = 0;
                        for row in rows {
                            let r = VersionedRecord {
                                address: keys::decode_record_key(&row.get::<_, Vec<u8>>(0))?,
                                version: version_from_sql(row.get(1)),
                                value: row.get::<_, Option<Vec<u8>>>(2).map(Bytes::from),
                            };
                            weight += chunk_weight(&r);
                            if let Some(chunk) = chunks.push(r)
                                && tx.send(Ok(chunk)).await.is_err()
                            {
                                return Ok(()); // the reader went away
                            }
                        }
                        let per_row = (weight / fetched).max(1);
                        fetch = (SNAPSHOT_CHUNK_BYTES / per_row).clamp(1, SNAPSHOT_CHUNK as usize)
                            as i32;
                        if done {
                            break;
                        }
                    }
                }
                if let Some(chunk) = chunks.finish()
                    && tx.send(Ok(chunk)).await.is_err()
                {
                    return Ok(());
                }
                txn.commit().await.map_err(pg_error)
            };
            if let Err(e) = scan.await {
                let _ = tx.send(Err(e)).await;
            }
        });
        let lsn = match lsn_rx.await {
            Ok(lsn) => lsn,
            // The task ended before it had a position: its error is the stream's first item.
            Err(_) => {
                let mut rx = rx;
                return Err(match rx.recv().await {
                    Some(Err(e)) => e,
                    _ => StoreError::Engine("the snapshot ended before it began".into()),
                });
            }
        };
        Ok(SnapshotScan {
            lsn,
            chunks: Box::pin(ReceiverStream::new(rx)),
        })
    }

    pub(super) async fn read_changes(
        &self,
        after: Lsn,
        scope: &Scope,
        limit: usize,
    ) -> Result<(Vec<Change>, Lsn), StoreError> {
        let upto = self.last_lsn_published();
        if after >= upto || limit == 0 {
            return Ok((Vec::new(), after));
        }
        let window_end = Lsn(upto.0.min(after.0.saturating_add(CHANGES_SCAN_LIMIT)));
        let (lo, hi) = scope_bounds(scope);
        let fetch = i64::try_from(limit).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&self.inner.sql.changes)
            .await
            .map_err(pg_error)?;
        let params: [&(dyn ToSql + Sync); 5] = [
            &lsn_to_sql(after),
            &lsn_to_sql(window_end),
            &lo,
            &hi,
            &fetch,
        ];
        let rows = client.query(&stmt, &params).await.map_err(pg_error)?;
        let full = rows.len() >= limit;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let lsn = lsn_from_sql(r.get(0))?;
            let op = match r.get::<_, i16>(1) {
                1 => ChangeOp::Put,
                2 => ChangeOp::Delete,
                _ => return Err(StoreError::Corrupt("change-log op".into())),
            };
            let address = keys::decode_record_key(&r.get::<_, Vec<u8>>(3))?;
            let current = r.get::<_, Option<i64>>(4).map(|v| VersionedRecord {
                address: address.clone(),
                version: version_from_sql(v),
                value: r.get::<_, Option<Vec<u8>>>(5).map(Bytes::from),
            });
            out.push(Change {
                entry: ChangeEntry {
                    lsn,
                    address,
                    op,
                    version: version_from_sql(r.get(2)),
                },
                current,
            });
        }
        // A full page stops at its last entry; otherwise the whole window was examined.
        let position = match (full, out.last()) {
            (true, Some(last)) => last.entry.lsn,
            _ => window_end,
        };
        Ok((out, position.max(after)))
    }

    fn last_lsn_published(&self) -> Lsn {
        *self.inner.lsn_rx.borrow()
    }

    /// One digest per bucket of the scope, in bucket order, from one repeatable-read snapshot.
    /// PostgreSQL has no BLAKE3, so live rows stream to the node in key order and are hashed
    /// here, through the same [`BucketDigester`] as every engine.
    pub(super) async fn read_digest(&self, scope: &Scope) -> Result<Vec<BucketDigest>, StoreError> {
        let mut digesters: BTreeMap<u16, BucketDigester> = scope
            .buckets
            .buckets()
            .map(|b| (b.0, BucketDigester::new(b)))
            .collect();
        let mut client = self.client().await?;
        let txn = snapshot_transaction(&mut client).await?;
        let stmt = txn
            .prepare_cached(&self.inner.sql.live_range)
            .await
            .map_err(pg_error)?;
        for range in scope.buckets.ranges() {
            let (start, end) = keys::bucket_range_bounds(&scope.service, scope.market, *range);
            let params: [&(dyn ToSql + Sync); 2] = [&start, &end];
            let rows = txn
                .query_raw(&stmt, params.iter().copied())
                .await
                .map_err(pg_error)?;
            let mut rows = std::pin::pin!(rows.map_err(pg_error));
            while let Some(row) = rows.next().await {
                let row = row?;
                let address = keys::decode_record_key(&row.get::<_, Vec<u8>>(0))?;
                let Some(digester) = digesters.get_mut(&address.bucket().0) else {
                    continue;
                };
                let value: Vec<u8> = row.get(2);
                digester.add(&address, version_from_sql(row.get(1)), &value);
            }
        }
        txn.commit().await.map_err(pg_error)?;
        Ok(digesters
            .into_values()
            .map(BucketDigester::finish)
            .collect())
    }
}

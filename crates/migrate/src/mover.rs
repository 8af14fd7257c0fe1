//! The data-moving steps of a move between two region nodes.

use crate::throttle::Throttle;
use domicile_client::ClientError;
use domicile_client::region::RegionClient;
use domicile_core::Version;
use domicile_core::{Bucket, BucketCount, BucketSet, CollectionName};
use domicile_store::RecordAddress;
use domicile_store::{BlobRef, Lsn, VersionedRecord};
use domicile_wire::api::ImportResponse;
use domicile_wire::api::{PullRequest, ScopeRequest};
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Records per import request of a catch-up, drain or repair (a copy's chunks are the target's:
/// `domicile_region::pull::CHUNK_RECORDS`, the same size).
pub const CHUNK: usize = 10_000;

/// An import body stops growing at this size (it may pass it by one record): a region node
/// refuses import bodies over 128 MiB, and memory stays bounded when records are large
/// (10,000 records of 1 MiB would be 10 GiB).
pub const CHUNK_BYTES: usize = 8 << 20;

#[derive(Debug, Error)]
pub enum MoveError {
    #[error("source: {0}")]
    Source(ClientError),
    #[error("target: {0}")]
    Target(ClientError),
    #[error("copy task failed: {0}")]
    Task(String),
    #[error("blob copy: {0}")]
    Blob(ClientError),
    #[error("source record {0} holds no blob reference")]
    BlobRef(String),
}

/// One chunk of a copy, imported at the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkDone {
    pub snapshot_lsn: Lsn,
    /// Totals so far in this copy.
    pub records: u64,
    pub bytes: u64,
    pub applied: u64,
    /// Every bucket below this one is copied whole (snapshots stream in bucket order).
    pub complete_below: u32,
}

/// What a catch-up pass applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Applied {
    /// The source LSN reached.
    pub position: Lsn,
    pub records: u64,
    /// The buckets those changes fell in: a digest checked before them is stale there.
    pub buckets: BTreeSet<Bucket>,
    /// Reads of the source's log, and the time they took; the time the target's imports took
    /// (a slow fenced drain says which side held it).
    pub passes: u32,
    pub reading: Duration,
    pub importing: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct CopyReport {
    /// The LSN the snapshot was consistent at: catch-up starts after it.
    pub snapshot_lsn: Lsn,
    pub records: u64,
    pub bytes: u64,
    /// Records the target took (the rest it already had at an equal or newer version).
    pub applied: u64,
    pub seconds: f64,
}

#[derive(Debug, Clone, Default)]
pub struct Verification {
    pub buckets: u64,
    pub records: u64,
    /// Buckets whose digests differ between source and target.
    pub differing: Vec<Bucket>,
}

impl Verification {
    pub fn equal(&self) -> bool {
        self.differing.is_empty()
    }
}

/// One scope moving from `source` to `target`. Cheap to clone (clients share their pools): a
/// copy's imports run as tasks of their own.
#[derive(Clone)]
pub struct Mover {
    pub source: RegionClient,
    pub target: RegionClient,
    pub scope: ScopeRequest,
    /// The cluster's bucket count, to place a record's user in its bucket.
    pub buckets: BucketCount,
    /// The scope's blob collections: their records travel after their blobs.
    pub blob_collections: BTreeSet<CollectionName>,
}

/// Blobs copied at once while a chunk's records wait for them.
const BLOBS_IN_FLIGHT: usize = 8;

impl Mover {
    /// Copies a consistent snapshot of the scope: the target pulls it from the source chunk by
    /// chunk (decision 0016). `progress` is told the records copied so far after every chunk.
    pub async fn copy(&self, progress: impl Fn(u64) + Send) -> Result<CopyReport, MoveError> {
        let unlimited = Throttle::new(None);
        let mut run = self.start_copy(&self.scope).await?;
        while let Some(c) = run.next_chunk(&unlimited).await? {
            progress(c.records);
        }
        run.finish().await
    }

    /// Starts copying `scope` (a part of this mover's scope): the target opens a snapshot at the
    /// source and imports it ahead; the caller takes the chunks one by one
    /// ([`CopyRun::next_chunk`]), checkpointing between them.
    pub async fn start_copy(&self, scope: &ScopeRequest) -> Result<CopyRun<'_>, MoveError> {
        let started = Instant::now();
        let pull = self
            .target
            .pull_start(&PullRequest {
                source: self.source.base().to_string(),
                scope: scope.clone(),
            })
            .await
            .map_err(MoveError::Target)?;
        Ok(CopyRun {
            mover: self,
            session: pull.session,
            ended: false,
            report: CopyReport {
                snapshot_lsn: Lsn(pull.snapshot_lsn),
                ..CopyReport::default()
            },
            started,
        })
    }

    /// Applies the source's changes after `from` at the target until a pass finds none (the
    /// lag was zero at that moment). Returns the position reached and records applied.
    pub async fn catch_up(&self, from: Lsn) -> Result<(Lsn, u64), MoveError> {
        let a = self.catch_up_until(from, 0).await?;
        Ok((a.position, a.records))
    }

    /// Like [`Mover::catch_up`], but stops as soon as a pass carries at most `lag` changes: under
    /// a steady write load the lag never reaches zero, and the cutover drains the rest fenced.
    pub async fn catch_up_until(&self, from: Lsn, lag: usize) -> Result<Applied, MoveError> {
        let mut applied = Applied {
            position: from,
            ..Applied::default()
        };
        loop {
            let (carried, next, cut_short) = self.pass(&mut applied).await?;
            // A pass cut short by the stream's size bound says nothing about the lag.
            let idle = !cut_short
                && ((carried == 0 && next == applied.position) || (lag > 0 && carried <= lag));
            applied.position = next;
            if idle {
                return Ok(applied);
            }
        }
    }

    /// Applies the source's changes after `from` until the position reaches `until` (a fence's
    /// LSN: nothing of the scope can follow it), without a confirming empty pass.
    pub async fn drain_to(&self, from: Lsn, until: u64) -> Result<Applied, MoveError> {
        let mut applied = Applied {
            position: from,
            ..Applied::default()
        };
        while applied.position.0 < until {
            let (carried, next, _) = self.pass(&mut applied).await?;
            if carried == 0 && next == applied.position {
                break; // the source has nothing past this point (it is behind the fence LSN)
            }
            applied.position = next;
        }
        Ok(applied)
    }

    /// One read of the source's changes after `applied.position`, imported at the target and
    /// added to `applied` (but for the position). Returns the changes carried, the next
    /// position, and whether the read was cut short by its size bound.
    async fn pass(&self, applied: &mut Applied) -> Result<(usize, Lsn, bool), MoveError> {
        let read = Instant::now();
        let page = self
            .source
            .changes(&self.scope, applied.position, CHUNK, Duration::ZERO)
            .await
            .map_err(MoveError::Source)?;
        applied.passes += 1;
        applied.reading += read.elapsed();
        let (next, cut_short) = (page.next, page.cut_short);
        let records: Vec<_> = page.changes.into_iter().filter_map(|c| c.current).collect();
        if !records.is_empty() {
            applied.buckets.extend(
                records
                    .iter()
                    .map(|r| self.buckets.bucket_of(&r.address.collection.user)),
            );
            let import = Instant::now();
            applied.records += self.import(&self.scope, &records).await?.0.applied;
            applied.importing += import.elapsed();
        }
        Ok((records.len(), next, cut_short))
    }

    /// Imports `records` at the target, after copying the blobs their records name (unless the
    /// target has them already), so a blob record never arrives before its bytes; in imports of
    /// at most [`CHUNK`] records and [`CHUNK_BYTES`] (passed by at most one record) each. Returns the imports'
    /// outcome and the blob bytes copied.
    async fn import(
        &self,
        scope: &ScopeRequest,
        records: &[VersionedRecord],
    ) -> Result<(ImportResponse, u64), MoveError> {
        let mut outcome = ImportResponse {
            applied: 0,
            skipped: 0,
        };
        let mut copied = 0u64;
        let mut rest = records;
        while !rest.is_empty() {
            let (mut n, mut size) = (0, 0);
            while n < rest.len() && n < CHUNK && size < CHUNK_BYTES {
                size += domicile_store::chunk_weight(&rest[n]);
                n += 1;
            }
            let (group, tail) = rest.split_at(n);
            rest = tail;
            let mut blobs = Vec::new();
            for r in group {
                if let Some(value) = &r.value
                    && self
                        .blob_collections
                        .contains(&r.address.collection.collection)
                {
                    blobs.push((r.address.collection.clone(), blob_hash(r, value)?));
                }
            }
            copied += self.carry_blobs(&blobs).await?;
            let done = self
                .target
                .import(scope, group)
                .await
                .map_err(MoveError::Target)?;
            outcome.applied += done.applied;
            outcome.skipped += done.skipped;
        }
        Ok((outcome, copied))
    }

    /// Copies the blobs named, a few at once; returns the bytes copied.
    async fn carry_blobs(
        &self,
        blobs: &[(domicile_store::CollectionAddress, String)],
    ) -> Result<u64, MoveError> {
        let mut copied = 0u64;
        for group in blobs.chunks(BLOBS_IN_FLIGHT) {
            let copies = group
                .iter()
                .map(|(owner, hash)| self.carry_blob(owner, hash));
            copied += futures::future::try_join_all(copies)
                .await?
                .iter()
                .sum::<u64>();
        }
        Ok(copied)
    }

    /// Copies one blob to the target unless it holds it; returns the bytes copied.
    async fn carry_blob(
        &self,
        owner: &domicile_store::CollectionAddress,
        hash: &str,
    ) -> Result<u64, MoveError> {
        if self
            .target
            .has_blob(owner, hash)
            .await
            .map_err(MoveError::Blob)?
        {
            return Ok(0);
        }
        match self.source.copy_blob(&self.target, owner, hash).await {
            Ok(bytes) => Ok(bytes),
            // Gone at the source: the record naming it was overwritten after this read, and
            // the change that did it follows in the log.
            Err(ClientError::Status { status: 404, .. }) => {
                tracing::debug!(%hash, "blob gone at the source; its newer record follows");
                Ok(0)
            }
            Err(e) => Err(MoveError::Blob(e)),
        }
    }

    /// Compares per-bucket digests of source and target over the whole scope.
    pub async fn verify(&self) -> Result<Verification, MoveError> {
        self.verify_scope(&self.scope).await
    }

    /// Compares per-bucket digests of source and target over some of the scope's buckets.
    pub async fn verify_buckets(&self, buckets: &[Bucket]) -> Result<Verification, MoveError> {
        if buckets.is_empty() {
            return Ok(Verification::default());
        }
        let scope = self.sub_scope(buckets);
        self.verify_scope(&scope).await
    }

    fn sub_scope(&self, buckets: &[Bucket]) -> ScopeRequest {
        ScopeRequest {
            service: self.scope.service.clone(),
            market: self.scope.market,
            buckets: BucketSet::from_buckets(buckets.iter().copied()),
        }
    }

    async fn verify_scope(&self, scope: &ScopeRequest) -> Result<Verification, MoveError> {
        let (a, b) = tokio::join!(self.source.digest(scope), self.target.digest(scope));
        let (a, b) = (a.map_err(MoveError::Source)?, b.map_err(MoveError::Target)?);
        let differing = a
            .iter()
            .zip(&b)
            .filter(|(x, y)| x != y)
            .map(|(x, _)| x.bucket)
            .collect();
        Ok(Verification {
            buckets: a.len() as u64,
            records: a.iter().map(|d| d.records).sum(),
            differing,
        })
    }

    /// Repairs the differing buckets key by key, one bucket at a time: both sides' records of
    /// the bucket are compared, and the target gets each source record it lacks or holds at an
    /// older version, and a tombstone for each live key that only it holds (left by a rolled
    /// back attempt, or put there by hand). Returns the keys repaired.
    pub async fn repair(&self, buckets: &[Bucket]) -> Result<u64, MoveError> {
        let mut repaired = 0;
        for bucket in buckets {
            let scope = self.sub_scope(std::slice::from_ref(bucket));
            let (source, target) = tokio::try_join!(
                read_whole(&self.source, &scope, MoveError::Source),
                read_whole(&self.target, &scope, MoveError::Target)
            )?;
            let fixes = key_repairs(source, target);
            self.import(&scope, &fixes).await?;
            repaired += fixes.len() as u64;
        }
        Ok(repaired)
    }
}

/// Every record of `scope` at `node` (tombstones included), read from one snapshot.
async fn read_whole(
    node: &RegionClient,
    scope: &ScopeRequest,
    error: fn(ClientError) -> MoveError,
) -> Result<Vec<VersionedRecord>, MoveError> {
    let mut reader = node.snapshot(scope).await.map_err(error)?;
    let mut records = Vec::new();
    while let Some(batch) = reader.next_batch(CHUNK).await.map_err(error)? {
        records.extend(batch);
    }
    Ok(records)
}

/// What the target must import for its records to match the source's: the source's record
/// where the target's is missing or older, and a tombstone (one version above) for a live key
/// the source does not hold. A target record newer than the source's is left alone: versions
/// only move forward, and the fenced check reports what still differs.
fn key_repairs(source: Vec<VersionedRecord>, target: Vec<VersionedRecord>) -> Vec<VersionedRecord> {
    let mut at_target: HashMap<RecordAddress, (Version, bool)> = target
        .into_iter()
        .map(|r| (r.address, (r.version, r.value.is_some())))
        .collect();
    let mut fixes = Vec::new();
    for r in source {
        match at_target.remove(&r.address) {
            Some((version, _)) if version >= r.version => {}
            // Missing at both ends is equal: a tombstone need not travel.
            None if r.value.is_none() => {}
            _ => fixes.push(r),
        }
    }
    for (address, (version, live)) in at_target {
        if live {
            fixes.push(VersionedRecord {
                address,
                version: Version(version.0 + 1),
                value: None,
            });
        }
    }
    fixes
}

/// The content hash a blob collection's record refers to.
fn blob_hash(r: &VersionedRecord, value: &[u8]) -> Result<String, MoveError> {
    let blob: BlobRef = serde_json::from_slice(value)
        .map_err(|_| MoveError::BlobRef(format!("{:?}", r.address)))?;
    Ok(blob.hash)
}

/// A copy under way: the target pulls the snapshot ahead of the caller, who takes its chunks
/// in snapshot order.
pub struct CopyRun<'a> {
    mover: &'a Mover,
    /// The target's pull session.
    session: u64,
    /// The target reported the snapshot's end (and closed the session).
    ended: bool,
    report: CopyReport,
    started: Instant,
}

impl CopyRun<'_> {
    /// The next chunk, once the target has it durably (then paced by `throttle`); `None` once
    /// the snapshot has ended and every chunk is in. Chunks after it may already be importing:
    /// a checkpoint after this one is still exact, and a resumed copy imports them again
    /// (idempotent).
    pub async fn next_chunk(
        &mut self,
        throttle: &Throttle,
    ) -> Result<Option<ChunkDone>, MoveError> {
        if self.ended {
            return Ok(None);
        }
        let next = self.mover.target.pull_next(self.session).await;
        let Some(chunk) = next.map_err(MoveError::Target)? else {
            self.ended = true;
            return Ok(None);
        };
        throttle.take(chunk.records).await;
        let r = &mut self.report;
        r.records += chunk.records;
        r.bytes += chunk.bytes;
        r.applied += chunk.applied;
        Ok(Some(ChunkDone {
            snapshot_lsn: r.snapshot_lsn,
            records: r.records,
            bytes: r.bytes,
            applied: r.applied,
            // The last record's bucket may continue in the next chunk; the ones before are whole.
            complete_below: chunk.last_bucket,
        }))
    }

    pub fn snapshot_lsn(&self) -> Lsn {
        self.report.snapshot_lsn
    }

    /// The totals, once every chunk was taken.
    pub async fn finish(mut self) -> Result<CopyReport, MoveError> {
        self.report.seconds = self.started.elapsed().as_secs_f64();
        Ok(std::mem::take(&mut self.report))
    }
}

impl Drop for CopyRun<'_> {
    /// A copy given up (an error, a pause) ends its pull at the target, which stops reading and
    /// importing (if this cannot reach it, the session ends when nobody asks for a chunk).
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (target, session) = (self.mover.target.clone(), self.session);
            runtime.spawn(async move {
                if let Err(e) = target.pull_close(session).await {
                    tracing::warn!(session, error = %e, "could not close a pull at the target");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_store::CollectionAddress;

    fn record(key: &str, version: u64, value: Option<&str>) -> VersionedRecord {
        VersionedRecord {
            address: CollectionAddress::new(
                "ecommerce".parse().unwrap(),
                "MY".parse().unwrap(),
                "my7".parse().unwrap(),
                "orders".parse().unwrap(),
                BucketCount::DEFAULT,
            )
            .record(key.parse().unwrap()),
            version: Version(version),
            value: value.map(|v| bytes::Bytes::from(v.to_string())),
        }
    }

    #[test]
    fn repairs_are_narrowed_to_the_keys_that_differ() {
        let source = vec![
            record("same", 5, Some("a")),
            record("older-at-target", 7, Some("new")),
            record("missing-at-target", 3, Some("m")),
            record("deleted-at-source", 9, None),
            record("gone-everywhere", 4, None),
            record("newer-at-target", 2, Some("old")),
        ];
        let target = vec![
            record("same", 5, Some("a")),
            record("older-at-target", 6, Some("old")),
            record("deleted-at-source", 8, Some("stale")),
            record("newer-at-target", 3, Some("x")),
            record("only-at-target", 11, Some("extra")),
            record("tombstone-only-at-target", 12, None),
        ];
        let mut fixes = key_repairs(source, target);
        fixes.sort_by(|a, b| a.address.key.as_str().cmp(b.address.key.as_str()));
        let got: Vec<(&str, u64, bool)> = fixes
            .iter()
            .map(|r| (r.address.key.as_str(), r.version.0, r.value.is_some()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("deleted-at-source", 9, false),
                ("missing-at-target", 3, true),
                ("older-at-target", 7, true),
                ("only-at-target", 12, false),
            ]
        );
    }
}

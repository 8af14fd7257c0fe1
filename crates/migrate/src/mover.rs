//! The data-moving steps of a move between two region nodes.

use crate::throttle::Throttle;
use domicile_client::ClientError;
use domicile_client::region::RegionClient;
use domicile_core::{Bucket, BucketCount, BucketSet};
use domicile_store::{Lsn, VersionedRecord};
use domicile_wire::api::ScopeRequest;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Records per import request: one atomic batch at the target, and one checkpoint.
pub const CHUNK: usize = 10_000;

#[derive(Debug, Error)]
pub enum MoveError {
    #[error("source: {0}")]
    Source(ClientError),
    #[error("target: {0}")]
    Target(ClientError),
    #[error("copy task failed: {0}")]
    Task(String),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
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

/// One scope moving from `source` to `target`.
pub struct Mover {
    pub source: RegionClient,
    pub target: RegionClient,
    pub scope: ScopeRequest,
    /// The cluster's bucket count, to place a record's user in its bucket.
    pub buckets: BucketCount,
}

fn record_bytes(r: &domicile_store::VersionedRecord) -> u64 {
    let c = &r.address.collection;
    (c.user.as_str().len() + c.collection.as_str().len() + r.address.key.as_str().len() + 8) as u64
        + r.value.as_ref().map_or(0, |v| v.len() as u64)
}

impl Mover {
    /// Copies a consistent snapshot of the scope, in chunks of [`CHUNK`] records; reading the
    /// next chunk from the source overlaps importing the current one at the target.
    /// `progress` is told the records copied so far after every chunk.
    pub async fn copy(&self, progress: impl Fn(u64) + Send) -> Result<CopyReport, MoveError> {
        let unlimited = Throttle::new(None);
        self.copy_chunks(&self.scope, &unlimited, async |c: ChunkDone| {
            progress(c.records);
            Ok(())
        })
        .await
    }

    /// Copies `scope` (a part of this mover's scope), pacing the chunks by `throttle` and
    /// calling `on_chunk` (a checkpoint) after each chunk is imported.
    pub async fn copy_chunks(
        &self,
        scope: &ScopeRequest,
        throttle: &Throttle,
        mut on_chunk: impl AsyncFnMut(ChunkDone) -> Result<(), MoveError>,
    ) -> Result<CopyReport, MoveError> {
        let started = Instant::now();
        let mut reader = self
            .source
            .snapshot(scope)
            .await
            .map_err(MoveError::Source)?;
        let mut report = CopyReport {
            snapshot_lsn: reader.lsn,
            ..CopyReport::default()
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel(2);
        let read = tokio::spawn(async move {
            loop {
                match reader.next_batch(CHUNK).await {
                    Ok(Some(batch)) => {
                        if tx.send(Ok(batch)).await.is_err() {
                            return;
                        }
                    }
                    Ok(None) => return,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                }
            }
        });
        while let Some(batch) = rx.recv().await {
            let batch: Vec<VersionedRecord> = batch.map_err(MoveError::Source)?;
            throttle.take(batch.len() as u64).await;
            let outcome = self
                .target
                .import(scope, &batch)
                .await
                .map_err(MoveError::Target)?;
            report.records += batch.len() as u64;
            report.bytes += batch.iter().map(record_bytes).sum::<u64>();
            report.applied += outcome.applied;
            // The last record's bucket may continue in the next chunk; the ones before are whole.
            let complete_below = batch.last().map_or(0, |r| {
                u32::from(self.buckets.bucket_of(&r.address.collection.user).0)
            });
            on_chunk(ChunkDone {
                snapshot_lsn: report.snapshot_lsn,
                records: report.records,
                bytes: report.bytes,
                applied: report.applied,
                complete_below,
            })
            .await?;
        }
        read.await.map_err(|e| MoveError::Task(e.to_string()))?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
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
            let (changes, next) = self
                .source
                .changes(&self.scope, applied.position, CHUNK, Duration::ZERO)
                .await
                .map_err(MoveError::Source)?;
            let records: Vec<_> = changes.into_iter().filter_map(|c| c.current).collect();
            if !records.is_empty() {
                applied.buckets.extend(
                    records
                        .iter()
                        .map(|r| self.buckets.bucket_of(&r.address.collection.user)),
                );
                applied.records += self
                    .target
                    .import(&self.scope, &records)
                    .await
                    .map_err(MoveError::Target)?
                    .applied;
            }
            let idle = (records.is_empty() && next == applied.position)
                || (lag > 0 && records.len() <= lag);
            applied.position = next;
            if idle {
                return Ok(applied);
            }
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

    /// Re-copies the differing buckets from the source; returns how many records the target
    /// took (the keys repaired).
    pub async fn repair(&self, buckets: &[Bucket]) -> Result<u64, MoveError> {
        if buckets.is_empty() {
            return Ok(0);
        }
        let scope = self.sub_scope(buckets);
        let unlimited = Throttle::new(None);
        let report = self
            .copy_chunks(&scope, &unlimited, async |_: ChunkDone| Ok(()))
            .await?;
        Ok(report.applied)
    }
}

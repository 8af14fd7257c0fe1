//! The data-moving steps of a move between two region nodes.

use domicile_client::ClientError;
use domicile_client::region::RegionClient;
use domicile_core::Bucket;
use domicile_core::BucketSet;
use domicile_store::Lsn;
use domicile_wire::api::ScopeRequest;
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
}

fn record_bytes(r: &domicile_store::VersionedRecord) -> u64 {
    let c = &r.address.collection;
    (c.user.as_str().len() + c.collection.as_str().len() + r.address.key.as_str().len() + 8) as u64
        + r.value.as_ref().map_or(0, |v| v.len() as u64)
}

impl Mover {
    /// Copies a consistent snapshot of the scope, in chunks of [`CHUNK`] records; reading the
    /// next chunk from the source overlaps importing the current one at the target.
    /// `progress` is told the records copied so far after every chunk (a checkpoint).
    pub async fn copy(&self, progress: impl Fn(u64) + Send) -> Result<CopyReport, MoveError> {
        self.copy_scope(&self.scope, progress).await
    }

    async fn copy_scope(
        &self,
        scope: &ScopeRequest,
        progress: impl Fn(u64) + Send,
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
            let batch = batch.map_err(MoveError::Source)?;
            let outcome = self
                .target
                .import(scope, &batch)
                .await
                .map_err(MoveError::Target)?;
            report.records += batch.len() as u64;
            report.bytes += batch.iter().map(record_bytes).sum::<u64>();
            report.applied += outcome.applied;
            progress(report.records);
        }
        read.await.map_err(|e| MoveError::Task(e.to_string()))?;
        report.seconds = started.elapsed().as_secs_f64();
        Ok(report)
    }

    /// Applies the source's changes after `from` at the target until a pass finds none (the
    /// lag was zero at that moment). Returns the position reached and records applied.
    pub async fn catch_up(&self, from: Lsn) -> Result<(Lsn, u64), MoveError> {
        self.catch_up_until(from, 0).await
    }

    /// Like [`Mover::catch_up`], but stops as soon as a pass carries at most `lag` changes: under
    /// a steady write load the lag never reaches zero, and the cutover drains the rest fenced.
    pub async fn catch_up_until(&self, from: Lsn, lag: usize) -> Result<(Lsn, u64), MoveError> {
        let mut position = from;
        let mut applied = 0;
        loop {
            let (changes, next) = self
                .source
                .changes(&self.scope, position, CHUNK, Duration::ZERO)
                .await
                .map_err(MoveError::Source)?;
            let records: Vec<_> = changes.into_iter().filter_map(|c| c.current).collect();
            if !records.is_empty() {
                applied += self
                    .target
                    .import(&self.scope, &records)
                    .await
                    .map_err(MoveError::Target)?
                    .applied;
            }
            let idle =
                (records.is_empty() && next == position) || (lag > 0 && records.len() <= lag);
            position = next;
            if idle {
                return Ok((position, applied));
            }
        }
    }

    /// Compares per-bucket digests of source and target.
    pub async fn verify(&self) -> Result<Verification, MoveError> {
        let (a, b) = tokio::join!(
            self.source.digest(&self.scope),
            self.target.digest(&self.scope)
        );
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
        let scope = ScopeRequest {
            service: self.scope.service.clone(),
            market: self.scope.market,
            buckets: BucketSet::from_buckets(buckets.iter().copied()),
        };
        Ok(self.copy_scope(&scope, |_| {}).await?.applied)
    }
}

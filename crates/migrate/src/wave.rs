//! One wave of a move — one scope from its source region to its target — as an explicit state
//! machine (DESIGN.md §5):
//!
//! ```text
//! Pending → Copying → CatchingUp → Verifying → CuttingOver → Reversing → Completed
//!                                                 (RollingBack → RolledBack from any step before Completed)
//! ```
//!
//! Every step is idempotent and the state is checkpointed after each one, so a crash resumes
//! from the last checkpoint: a copy runs again (imports keep the higher version), a catch-up
//! restarts from the saved LSN, a fence that already holds is accepted again, and a cutover that
//! already committed is recognised from the routing table.

use crate::mover::{CopyReport, MoveError, Mover};
use domicile_client::ClientError;
use domicile_core::{BucketRange, BucketSet, Epoch, Market, RegionId, ServiceName};
use domicile_store::Lsn;
use domicile_wire::api::{RangeRequest, ScopeRequest};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};
use thiserror::Error;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    Pending,
    Copying,
    CatchingUp,
    Verifying,
    CuttingOver,
    Reversing,
    Completed,
    RollingBack,
    RolledBack,
}

/// What a wave moves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveSpec {
    pub service: ServiceName,
    pub market: Market,
    pub buckets: BucketRange,
    pub source: RegionId,
    pub target: RegionId,
    /// The epoch the source owns the range at when the wave starts.
    pub epoch: Epoch,
    /// How long the target's changes flow back to the source after the cutover (zero, or the
    /// policy forbids the data to return: no reversing).
    pub rollback_window: Duration,
}

impl WaveSpec {
    pub fn scope(&self) -> ScopeRequest {
        ScopeRequest {
            service: self.service.clone(),
            market: self.market,
            buckets: BucketSet::from_ranges([self.buckets]),
        }
    }

    fn range(&self, epoch: Epoch, owner: Option<RegionId>) -> RangeRequest {
        RangeRequest {
            service: self.service.clone(),
            market: self.market,
            buckets: self.buckets,
            epoch,
            owner,
        }
    }
}

/// A wave's checkpointed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub spec: WaveSpec,
    pub step: Step,
    /// The source LSN the target has caught up to.
    pub position: Lsn,
    /// The target LSN at the cutover: reversing starts after it.
    pub reverse_from: Lsn,
    pub records_copied: u64,
    pub bytes_copied: u64,
    pub records_applied: u64,
    pub keys_repaired: u64,
    pub verified: bool,
    /// Writes to the range were refused (fenced) for this long during the cutover.
    pub write_unavailable_ms: f64,
    /// Stored entries purged at the source when the wave completed.
    pub purged: u64,
}

impl Wave {
    pub fn new(spec: WaveSpec) -> Self {
        Self {
            spec,
            step: Step::Pending,
            position: Lsn(0),
            reverse_from: Lsn(0),
            records_copied: 0,
            bytes_copied: 0,
            records_applied: 0,
            keys_repaired: 0,
            verified: false,
            write_unavailable_ms: 0.0,
            purged: 0,
        }
    }
}

#[derive(Debug, Error)]
pub enum WaveError {
    #[error(transparent)]
    Move(#[from] MoveError),
    #[error("{0}")]
    Region(ClientError),
    #[error("committing the new epoch: {0}")]
    Commit(String),
    #[error("digests still differ after repair in buckets {0:?}")]
    Unverified(Vec<domicile_core::Bucket>),
    #[error("checkpoint: {0}")]
    Checkpoint(String),
}

/// What the wave needs from the control plane: durable checkpoints, and the epoch commit.
#[allow(async_fn_in_trait)]
pub trait Control {
    /// Persists the wave's state durably before the next step starts.
    async fn checkpoint(&self, wave: &Wave) -> Result<(), String>;
    /// Commits `target` as the range's owner at `epoch` (releasing the source, owning at the
    /// target, publishing the routing table). Must be idempotent.
    async fn commit(&self, spec: &WaveSpec, epoch: Epoch) -> Result<(), String>;
}

/// The lag (changes per catch-up pass) below which a wave fences the source.
const CUTOVER_LAG: usize = 256;

/// How many verify-and-repair rounds before a wave gives up.
const REPAIR_ROUNDS: usize = 3;

/// Runs a wave from its checkpointed step to `Completed`.
pub async fn run(wave: &mut Wave, mover: &Mover, control: &impl Control) -> Result<(), WaveError> {
    loop {
        match wave.step {
            Step::Pending => wave.step = Step::Copying,
            Step::Copying => {
                let CopyReport {
                    snapshot_lsn,
                    records,
                    bytes,
                    applied,
                    ..
                } = mover.copy(|_| {}).await?;
                wave.position = snapshot_lsn;
                (wave.records_copied, wave.bytes_copied) = (records, bytes);
                wave.records_applied += applied;
                wave.step = Step::CatchingUp;
            }
            Step::CatchingUp => {
                let (position, applied) = mover.catch_up(wave.position).await?;
                wave.position = position;
                wave.records_applied += applied;
                wave.step = Step::Verifying;
            }
            Step::Verifying => {
                verify_and_repair(wave, mover).await?;
                wave.step = Step::CuttingOver;
            }
            Step::CuttingOver => {
                cut_over(wave, mover, control).await?;
                if wave.spec.rollback_window.is_zero() {
                    purge_source(wave, mover).await?;
                } else {
                    wave.step = Step::Reversing;
                }
            }
            Step::Reversing => {
                reverse(wave, mover).await?;
                purge_source(wave, mover).await?;
            }
            Step::Completed | Step::RolledBack => return Ok(()),
            Step::RollingBack => {
                roll_back(wave, mover).await?;
            }
        }
        control
            .checkpoint(wave)
            .await
            .map_err(WaveError::Checkpoint)?;
    }
}

/// No copy left behind: the source's records and blobs of the scope go (purge is idempotent).
async fn purge_source(wave: &mut Wave, mover: &Mover) -> Result<(), WaveError> {
    wave.purged = mover
        .source
        .purge(&wave.spec.scope())
        .await
        .map_err(WaveError::Region)?
        .records;
    wave.step = Step::Completed;
    Ok(())
}

/// Abandons a wave that has not cut over: the source gets its writes back (if it was fenced)
/// and the target's partial copy is purged. The source never stopped owning the range, so no
/// acknowledged write is lost.
pub async fn roll_back(wave: &mut Wave, mover: &Mover) -> Result<(), WaveError> {
    let range = wave.spec.range(wave.spec.epoch, None);
    // Unfencing a range that is owned and not fenced is accepted as a no-op.
    mover
        .source
        .unfence(&range)
        .await
        .map_err(WaveError::Region)?;
    mover
        .target
        .purge(&wave.spec.scope())
        .await
        .map_err(WaveError::Region)?;
    wave.step = Step::RolledBack;
    Ok(())
}

/// Marks a wave for rollback; refused once it has cut over (the target owns the range: moving
/// it back is a new wave in the other direction, which reversing keeps loss-free).
pub fn request_rollback(wave: &mut Wave) -> Result<(), WaveError> {
    match wave.step {
        Step::Pending | Step::Copying | Step::CatchingUp | Step::Verifying | Step::CuttingOver => {
            wave.step = Step::RollingBack;
            Ok(())
        }
        other => Err(WaveError::Commit(format!(
            "a wave in {other:?} cannot roll back; move the range back instead"
        ))),
    }
}

async fn verify_and_repair(wave: &mut Wave, mover: &Mover) -> Result<(), WaveError> {
    for _ in 0..REPAIR_ROUNDS {
        let v = mover.verify().await?;
        if v.equal() {
            wave.verified = true;
            return Ok(());
        }
        wave.keys_repaired += mover.repair(&v.differing).await?;
        let (position, applied) = mover.catch_up(wave.position).await?;
        wave.position = position;
        wave.records_applied += applied;
    }
    let v = mover.verify().await?;
    if v.equal() {
        wave.verified = true;
        return Ok(());
    }
    Err(WaveError::Unverified(v.differing))
}

/// Catch up until the lag is small, fence the source, drain its last changes, commit the new
/// epoch. The write-unavailability window is fence → commit.
async fn cut_over(wave: &mut Wave, mover: &Mover, control: &impl Control) -> Result<(), WaveError> {
    let spec = &wave.spec;
    let next = spec.epoch.next();
    // Catch up until the lag is small, so the fenced drain below is short.
    let (position, applied) = mover.catch_up_until(wave.position, CUTOVER_LAG).await?;
    wave.position = position;
    wave.records_applied += applied;
    let started = Instant::now();
    // A resumed wave may find the fence already up (accepted again) or the commit already made
    // (the source refuses the fence at the old epoch): then re-commit, which is idempotent.
    let fenced = mover.source.fence(&spec.range(spec.epoch, None)).await;
    if let Ok(fence_lsn) = fenced {
        loop {
            let (position, applied) = mover.catch_up(wave.position).await?;
            wave.position = position;
            wave.records_applied += applied;
            if position.0 >= fence_lsn {
                break;
            }
        }
        // The drain applied every change up to the fence's LSN, and no write can land after it:
        // the target now holds exactly the source's data (Verifying checked the copy by digests).
        wave.reverse_from = Lsn(mover.target.status_lsn().await.map_err(WaveError::Region)?);
    }
    control
        .commit(spec, next)
        .await
        .map_err(WaveError::Commit)?;
    wave.write_unavailable_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(())
}

/// The target's changes flow back to the source for the rollback window, so that a rollback
/// loses nothing.
async fn reverse(wave: &mut Wave, mover: &Mover) -> Result<(), WaveError> {
    let back = Mover {
        source: mover.target.clone(),
        target: mover.source.clone(),
        scope: mover.scope.clone(),
    };
    let until = Instant::now() + wave.spec.rollback_window;
    let mut position = wave.reverse_from;
    while Instant::now() < until {
        let wait = until
            .saturating_duration_since(Instant::now())
            .min(Duration::from_secs(1));
        let (changes, next) = back
            .source
            .changes(&back.scope, position, crate::mover::CHUNK, wait)
            .await
            .map_err(WaveError::Region)?;
        let records: Vec<_> = changes.into_iter().filter_map(|c| c.current).collect();
        if !records.is_empty() {
            back.target
                .import(&back.scope, &records)
                .await
                .map_err(WaveError::Region)?;
        }
        position = next;
    }
    wave.reverse_from = position;
    Ok(())
}

//! One wave of a move — one scope (service × market × bucket range) from its source region to
//! its target — as an explicit state machine (DESIGN.md §5; the crash argument for each step is
//! in `docs/design/migration-engine.md`):
//!
//! ```text
//! Pending → Copying → CatchingUp → Verifying → CuttingOver → Reversing → Completed
//!    └──────────┴──────────┴───────────┴────────────┴────────────┴──→ RollingBack → RolledBack
//! ```
//!
//! Every step is idempotent and the state is checkpointed after each one (and after every
//! copied chunk), so a crash resumes from the last checkpoint: the copy goes on from the first
//! bucket not yet copied whole (imports keep the higher version), a catch-up restarts from the
//! saved LSN, a fence that already holds is accepted again, and who owns the range is read from
//! the control plane's committed table, never guessed.

use crate::mover::{Applied, MoveError, Mover};
use crate::throttle::Throttle;
use domicile_client::ClientError;
use domicile_core::{Bucket, BucketRange, BucketSet, Epoch, Market, RegionId, ServiceName};
use domicile_store::Lsn;
use domicile_wire::api::{RangeRequest, ScopeRequest};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
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

impl Step {
    /// Completed and RolledBack are final.
    pub fn is_final(self) -> bool {
        matches!(self, Step::Completed | Step::RolledBack)
    }

    /// Every step before Completed may roll back.
    pub fn may_roll_back(self) -> bool {
        !matches!(self, Step::Completed | Step::RolledBack)
    }
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
    /// How long the target's changes flow back to the source after the cutover: zero when the
    /// policy forbids the data to return to the source (then there is no Reversing step).
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

    /// The part of the scope from bucket `first` on (what a resumed copy still has to copy).
    fn scope_from(&self, first: u32) -> Option<ScopeRequest> {
        let first = u16::try_from(first).ok()?;
        (first <= self.buckets.last).then(|| ScopeRequest {
            service: self.service.clone(),
            market: self.market,
            buckets: BucketSet::from_ranges([BucketRange {
                first,
                last: self.buckets.last,
            }]),
        })
    }
}

/// A wave's checkpointed state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wave {
    pub spec: WaveSpec,
    pub step: Step,
    /// The source LSN the target has every change up to (while copying: the first snapshot's).
    pub position: Lsn,
    /// Copying: every bucket below this one is at the target whole.
    pub copied_below: u32,
    /// Buckets whose digests are not known equal since their last change: checked again, with
    /// the source fenced, before the cutover commits.
    pub unverified: BTreeSet<Bucket>,
    /// The target's LSN when the source was drained: reversing starts after it.
    pub reverse_from: Lsn,
    /// The epoch the target owns the range at after the cutover.
    pub committed_epoch: Option<Epoch>,
    /// Reversing ends at this time (Unix ms; a crash does not extend the window).
    pub reverse_until_ms: u64,
    pub records_copied: u64,
    pub bytes_copied: u64,
    pub records_applied: u64,
    pub records_reversed: u64,
    pub keys_repaired: u64,
    /// Every bucket's digest was equal at the cutover, with the source fenced.
    pub verified: bool,
    /// Writes to the range were refused (fenced) for this long during the cutover.
    pub write_unavailable_ms: f64,
    /// Stored entries purged when the wave ended (at the source, or at the target if rolled back).
    pub purged: u64,
    /// Blobs purged, and data keys destroyed with them (crypto-shredding), at the same place.
    #[serde(default)]
    pub blobs_purged: u64,
    #[serde(default)]
    pub keys_destroyed: u64,
    /// What moved, as the source held it at the cutover: live records and one BLAKE3 over its
    /// per-bucket digests (hex), for the ledger.
    pub moved_records: u64,
    /// Users with live records in what moved.
    #[serde(default)]
    pub moved_users: u64,
    pub moved_digest: Option<String>,
}

impl Wave {
    pub fn new(spec: WaveSpec) -> Self {
        Self {
            copied_below: u32::from(spec.buckets.first),
            spec,
            step: Step::Pending,
            position: Lsn(0),
            unverified: BTreeSet::new(),
            reverse_from: Lsn(0),
            committed_epoch: None,
            reverse_until_ms: 0,
            records_copied: 0,
            bytes_copied: 0,
            records_applied: 0,
            records_reversed: 0,
            keys_repaired: 0,
            verified: false,
            write_unavailable_ms: 0.0,
            purged: 0,
            blobs_purged: 0,
            keys_destroyed: 0,
            moved_records: 0,
            moved_users: 0,
            moved_digest: None,
        }
    }

    /// A purge run again after a crash finds nothing: keep the first counts.
    fn absorb_purge(&mut self, purged: &domicile_wire::api::PurgeResponse) {
        self.purged = self.purged.max(purged.records);
        self.blobs_purged = self.blobs_purged.max(purged.blobs);
        self.keys_destroyed = self.keys_destroyed.max(purged.keys_destroyed);
    }

    fn absorb(&mut self, applied: Applied) {
        self.position = applied.position;
        self.records_applied += applied.records;
        self.unverified.extend(applied.buckets);
    }
}

#[derive(Debug, Error)]
pub enum WaveError {
    #[error(transparent)]
    Move(#[from] MoveError),
    #[error("{0}")]
    Region(ClientError),
    #[error("control plane: {0}")]
    Control(String),
    #[error(
        "digests of {service}/{market} still differ in buckets {buckets:?} with the source fenced"
    )]
    Unverified {
        service: ServiceName,
        market: Market,
        buckets: Vec<Bucket>,
    },
    #[error("a wave in {0:?} cannot roll back: it has completed; move the range back instead")]
    TooLateToRollBack(Step),
}

/// What the operator asked for, seen between steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interrupt {
    None,
    /// Stop at the next step boundary (after its checkpoint); `run` returns with the step kept.
    Pause,
    /// Roll back at the next step boundary.
    RollBack,
}

/// What the wave needs from the control plane: durable checkpoints, the committed owner of a
/// range, and the epoch commit.
pub trait Control: Sync {
    /// Persists the wave's state durably before the next step starts.
    fn checkpoint(&self, wave: &Wave) -> impl Future<Output = Result<(), String>> + Send;
    /// Commits `owner` as the range's owner at a new epoch (releasing the other region, owning
    /// at `owner`, publishing the routing table). Idempotent. Returns the epoch.
    fn commit(
        &self,
        spec: &WaveSpec,
        owner: &RegionId,
    ) -> impl Future<Output = Result<Epoch, String>> + Send;
    /// The range's owner and epoch in the committed routing table.
    fn owner(
        &self,
        spec: &WaveSpec,
    ) -> impl Future<Output = Result<(RegionId, Epoch), String>> + Send;
    /// Polled between steps.
    fn interrupt(&self) -> Interrupt {
        Interrupt::None
    }
    /// Held from the last catch-up through the commit, if the control plane serialises
    /// cutovers: a fenced range then never waits for another unit's commit.
    fn cutover_slot(&self) -> Option<&tokio::sync::Mutex<()>> {
        None
    }
}

/// A cutover whose window exceeds this is logged with its parts.
const SLOW_CUTOVER_MS: f64 = 100.0;

/// The lag (changes carried by one catch-up pass) under which a wave counts as caught up: it
/// moves on to verify, and at the cutover fences the source. Never zero: under a steady write
/// load (a flash sale) an empty pass may not come until the load ends, and whatever is left is
/// drained with the source fenced.
const CATCH_UP_LAG: usize = 256;

/// Verify-and-repair rounds before the cutover; buckets that keep changing are left to the
/// fenced check, where they cannot change.
const REPAIR_ROUNDS: usize = 3;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn checkpoint(control: &impl Control, wave: &Wave) -> Result<(), WaveError> {
    control.checkpoint(wave).await.map_err(WaveError::Control)
}

/// Runs a wave from its checkpointed step until it is Reversing (the engine pumps the reverse
/// stream and completes it when the window closes), Completed, RolledBack, or paused.
pub async fn run(
    wave: &mut Wave,
    mover: &Mover,
    control: &impl Control,
    throttle: &Throttle,
) -> Result<(), WaveError> {
    loop {
        match control.interrupt() {
            Interrupt::Pause if !wave.step.is_final() => return Ok(()),
            Interrupt::RollBack if wave.step.may_roll_back() && wave.step != Step::RollingBack => {
                wave.step = Step::RollingBack;
                checkpoint(control, wave).await?;
            }
            _ => {}
        }
        let (step, started) = (wave.step, Instant::now());
        match wave.step {
            Step::Pending => wave.step = Step::Copying,
            Step::Copying => {
                copy(wave, mover, control, throttle).await?;
                wave.step = Step::CatchingUp;
            }
            Step::CatchingUp => {
                let applied = mover.catch_up_until(wave.position, CATCH_UP_LAG).await?;
                wave.absorb(applied);
                wave.step = Step::Verifying;
            }
            Step::Verifying => {
                verify_and_repair(wave, mover).await?;
                wave.step = Step::CuttingOver;
            }
            Step::CuttingOver => {
                cut_over(wave, mover, control).await?;
                if wave.spec.rollback_window.is_zero() {
                    // The figures of what moved are saved before the purge erases their source.
                    checkpoint(control, wave).await?;
                    purge_source(wave, mover).await?;
                } else {
                    wave.reverse_until_ms = now_ms() + wave.spec.rollback_window.as_millis() as u64;
                    wave.step = Step::Reversing;
                }
            }
            Step::Reversing | Step::Completed | Step::RolledBack => return Ok(()),
            Step::RollingBack => roll_back(wave, mover, control).await?,
        }
        checkpoint(control, wave).await?;
        tracing::debug!(
            service = %wave.spec.service, market = %wave.spec.market, buckets = %wave.spec.buckets,
            ?step, ms = started.elapsed().as_millis() as u64, "wave step done"
        );
    }
}

/// Copies the scope from the first bucket not yet copied whole, checkpointing after each chunk.
async fn copy(
    wave: &mut Wave,
    mover: &Mover,
    control: &impl Control,
    throttle: &Throttle,
) -> Result<(), WaveError> {
    let Some(scope) = wave.spec.scope_from(wave.copied_below) else {
        return Ok(());
    };
    let (base_records, base_bytes, base_applied) =
        (wave.records_copied, wave.bytes_copied, wave.records_applied);
    let resumed = wave.position != Lsn(0);
    let mut run = mover.start_copy(&scope).await?;
    // Catch-up must start at the first snapshot: buckets copied before a crash missed the
    // changes made since it.
    if !resumed {
        wave.position = run.snapshot_lsn();
    }
    while let Some(c) = run.next_chunk(throttle).await? {
        wave.copied_below = wave.copied_below.max(c.complete_below);
        wave.records_copied = base_records + c.records;
        wave.bytes_copied = base_bytes + c.bytes;
        wave.records_applied = base_applied + c.applied;
        checkpoint(control, wave).await?;
    }
    run.finish().await?;
    wave.copied_below = u32::from(wave.spec.buckets.last) + 1;
    Ok(())
}

/// Compares every bucket's digest; differing buckets are re-copied from the source and checked
/// again, with the buckets the catch-up touched meanwhile. What still differs (hot buckets
/// under live writes) is left in `unverified` for the fenced check.
async fn verify_and_repair(wave: &mut Wave, mover: &Mover) -> Result<(), WaveError> {
    let mut check: Vec<Bucket> = mover.verify().await?.differing;
    for _ in 0..REPAIR_ROUNDS {
        wave.unverified.clear();
        if check.is_empty() {
            return Ok(());
        }
        wave.keys_repaired += mover.repair(&check).await?;
        let applied = mover.catch_up_until(wave.position, CATCH_UP_LAG).await?;
        wave.absorb(applied);
        let touched: BTreeSet<Bucket> = check
            .drain(..)
            .chain(wave.unverified.iter().copied())
            .collect();
        let touched: Vec<Bucket> = touched.into_iter().collect();
        check = mover.verify_buckets(&touched).await?.differing;
    }
    wave.unverified.extend(check);
    Ok(())
}

/// Catch up until the lag is small, fence the source, drain its last changes, check every
/// bucket not known equal (nothing can change it now), commit the new epoch. The
/// write-unavailability window is fence → commit.
async fn cut_over(wave: &mut Wave, mover: &Mover, control: &impl Control) -> Result<(), WaveError> {
    let spec = wave.spec.clone();
    // A crash after the commit and before its checkpoint: the table says who owns the range.
    let (owner, epoch) = control.owner(&spec).await.map_err(WaveError::Control)?;
    if owner == spec.target && wave.committed_epoch.is_some() {
        return Ok(()); // committed and recorded before a crash; the source may be purged already
    }
    let committed = if owner == spec.target {
        Some(epoch)
    } else {
        finish_half_commit(control, &mover.source, &spec, &spec.target, epoch).await?
    };
    if let Some(epoch) = committed {
        // Committed (or half-committed) before a crash: the source was drained and verified
        // (the commit follows both); where reversing starts was not saved, so it starts at the
        // beginning.
        wave.committed_epoch = Some(epoch);
        wave.verified = true;
        wave.reverse_from = Lsn(0);
        return record_moved(wave, mover).await;
    }
    let _slot = match control.cutover_slot() {
        Some(slot) => Some(slot.lock().await),
        None => None,
    };
    // Catch up until the lag is small, so the fenced drain below is short; compare the buckets
    // changed since Verifying while writes still flow, so that the fenced check below only
    // covers the few changed in the last moments.
    let applied = mover.catch_up_until(wave.position, CATCH_UP_LAG).await?;
    wave.absorb(applied);
    if !wave.unverified.is_empty() {
        let check: Vec<Bucket> = wave.unverified.iter().copied().collect();
        let differing: BTreeSet<Bucket> = mover
            .verify_buckets(&check)
            .await?
            .differing
            .into_iter()
            .collect();
        wave.unverified.retain(|b| differing.contains(b));
        let applied = mover.catch_up_until(wave.position, CATCH_UP_LAG).await?;
        wave.absorb(applied);
    }
    let started = Instant::now();
    // Accepted again if a resumed wave finds the fence already up.
    let fence_lsn = mover
        .source
        .fence(&spec.range(spec.epoch, None))
        .await
        .map_err(WaveError::Region)?;
    let fenced_ms = started.elapsed().as_secs_f64() * 1000.0;
    let applied = mover.drain_to(wave.position, fence_lsn).await?;
    let drained_records = applied.records;
    let (drain_passes, drain_read_ms, drain_import_ms) = (
        applied.passes,
        applied.reading.as_secs_f64() * 1000.0,
        applied.importing.as_secs_f64() * 1000.0,
    );
    wave.absorb(applied);
    let drain_ms = started.elapsed().as_secs_f64() * 1000.0;
    // Nothing can write to the range now: whatever digest differs is a real difference. The
    // target's LSN (where reversing will start) is read alongside: nothing writes there either.
    let check: Vec<Bucket> = wave.unverified.iter().copied().collect();
    let mut fenced_repairs = 0;
    let (verification, target_lsn) =
        tokio::join!(mover.verify_buckets(&check), mover.target.status_lsn());
    wave.reverse_from = Lsn(target_lsn.map_err(WaveError::Region)?);
    if !wave.unverified.is_empty() {
        let mut differing = verification?.differing;
        fenced_repairs = differing.len();
        if !differing.is_empty() {
            wave.keys_repaired += mover.repair(&differing).await?;
            differing = mover.verify_buckets(&differing).await?.differing;
        }
        if !differing.is_empty() {
            return Err(WaveError::Unverified {
                service: spec.service.clone(),
                market: spec.market,
                buckets: differing,
            });
        }
        wave.unverified.clear();
    }
    wave.verified = true;
    let drained_ms = started.elapsed().as_secs_f64() * 1000.0;
    // `reverse_from` is not checkpointed before the commit (that would lengthen the fenced
    // window by a durable write): a crash between the commit and the next checkpoint reverses
    // from the start of the target's log instead — the copy's imports come back as no-ops.
    let epoch = control
        .commit(&spec, &spec.target)
        .await
        .map_err(WaveError::Control)?;
    wave.committed_epoch = Some(epoch);
    wave.write_unavailable_ms = started.elapsed().as_secs_f64() * 1000.0;
    if wave.write_unavailable_ms > SLOW_CUTOVER_MS {
        tracing::info!(
            service = %spec.service, market = %spec.market, buckets = %spec.buckets,
            total_ms = wave.write_unavailable_ms, fence_ms = fenced_ms,
            drain_ms = drain_ms - fenced_ms, drained_records, drain_passes, drain_read_ms,
            drain_import_ms, checked_buckets = check.len(), fenced_repairs,
            drain_and_check_ms = drained_ms - fenced_ms,
            commit_ms = wave.write_unavailable_ms - drained_ms,
            "slow cutover"
        );
    }
    record_moved(wave, mover).await
}

/// A crash in the middle of a commit leaves `node` released to `to` at a newer epoch than the
/// committed table's `epoch`: the commit had begun, so its checks had passed. It is finished
/// (a placement change retried with the same epoch is accepted as a no-op where it was done).
/// Returns the epoch `to` owns the range at, if that was the case.
async fn finish_half_commit(
    control: &impl Control,
    node: &domicile_client::region::RegionClient,
    spec: &WaveSpec,
    to: &RegionId,
    epoch: Epoch,
) -> Result<Option<Epoch>, WaveError> {
    let table = node.ownership().await.map_err(WaveError::Region)?;
    let released = table.ranges.iter().any(|r| {
        r.service == spec.service
            && r.market == spec.market
            && r.buckets.first <= spec.buckets.first
            && spec.buckets.first <= r.buckets.last
            && r.epoch > epoch
            && r.state
                == domicile_wire::api::RangeState::Foreign {
                    owner: Some(to.clone()),
                }
    });
    if !released {
        return Ok(None);
    }
    tracing::info!(service = %spec.service, market = %spec.market, buckets = %spec.buckets, %to, "finishing a commit cut short");
    control
        .commit(spec, to)
        .await
        .map(Some)
        .map_err(WaveError::Control)
}

/// The source is frozen after the commit (released, nothing reversed yet): its digest is what
/// moved.
async fn record_moved(wave: &mut Wave, mover: &Mover) -> Result<(), WaveError> {
    let spec = &wave.spec;
    let digests = mover
        .source
        .digest(&spec.scope())
        .await
        .map_err(WaveError::Region)?;
    let mut hasher = blake3::Hasher::new();
    for d in &digests {
        hasher.update(&d.bucket.0.to_le_bytes());
        hasher.update(&d.records.to_le_bytes());
        hasher.update(&d.digest);
    }
    wave.moved_records = digests.iter().map(|d| d.records).sum();
    wave.moved_users = digests.iter().map(|d| d.users).sum();
    wave.moved_digest = Some(hasher.finalize().to_hex().to_string());
    Ok(())
}

/// One pull of the target's changes since the cutover, applied at the source, so that a
/// rollback in the window loses nothing. Waits up to `wait` for changes. Returns the records
/// applied.
pub async fn reverse_pass(
    wave: &mut Wave,
    mover: &Mover,
    wait: Duration,
) -> Result<u64, WaveError> {
    let page = mover
        .target
        .changes(&mover.scope, wave.reverse_from, crate::mover::CHUNK, wait)
        .await
        .map_err(WaveError::Region)?;
    let next = page.next;
    let records: Vec<_> = page.changes.into_iter().filter_map(|c| c.current).collect();
    let mut applied = 0;
    if !records.is_empty() {
        applied = mover
            .source
            .import(&mover.scope, &records)
            .await
            .map_err(WaveError::Region)?
            .applied;
    }
    wave.reverse_from = next;
    wave.records_reversed += applied;
    Ok(applied)
}

/// Ends a wave in Reversing whose window has closed: the source's copy is purged.
pub async fn complete(
    wave: &mut Wave,
    mover: &Mover,
    control: &impl Control,
) -> Result<(), WaveError> {
    if wave.step == Step::Reversing {
        let started = Instant::now();
        purge_source(wave, mover).await?;
        checkpoint(control, wave).await?;
        tracing::debug!(
            service = %wave.spec.service, market = %wave.spec.market, buckets = %wave.spec.buckets,
            ms = started.elapsed().as_millis() as u64, "source purged"
        );
    }
    Ok(())
}

/// No copy left behind: the source's records and blobs of the scope go (purge is idempotent).
async fn purge_source(wave: &mut Wave, mover: &Mover) -> Result<(), WaveError> {
    let purged = mover
        .source
        .purge(&wave.spec.scope())
        .await
        .map_err(WaveError::Region)?;
    wave.absorb_purge(&purged);
    wave.step = Step::Completed;
    Ok(())
}

/// Marks a wave for rollback; refused once it has completed (the source's copy is gone: moving
/// the range back is a new wave in the other direction).
pub fn request_rollback(wave: &mut Wave) -> Result<(), WaveError> {
    if wave.step.may_roll_back() {
        if wave.step != Step::RollingBack {
            wave.step = Step::RollingBack;
        }
        Ok(())
    } else {
        Err(WaveError::TooLateToRollBack(wave.step))
    }
}

/// Gives the range back to its source, losing no acknowledged write, and purges the target's
/// copy. Before the commit the source never stopped owning the range: it is unfenced. After
/// it (Reversing), the target is fenced, its last changes are drained back to the source (which
/// has every earlier one from the reverse stream), and the source owns the range again at a new
/// epoch.
pub async fn roll_back(
    wave: &mut Wave,
    mover: &Mover,
    control: &impl Control,
) -> Result<(), WaveError> {
    let spec = wave.spec.clone();
    let (mut owner, mut epoch) = control.owner(&spec).await.map_err(WaveError::Control)?;
    // A commit cut short by a crash is finished first, whichever way it was going.
    if owner == spec.source {
        if let Some(e) =
            finish_half_commit(control, &mover.source, &spec, &spec.target, epoch).await?
        {
            (owner, epoch) = (spec.target.clone(), e);
        }
    } else if owner == spec.target
        && let Some(e) =
            finish_half_commit(control, &mover.target, &spec, &spec.source, epoch).await?
    {
        (owner, epoch) = (spec.source.clone(), e);
        // Given back already: what remains is the purge below.
        wave.committed_epoch = None;
    }
    if owner == spec.target {
        let started = Instant::now();
        let fence_lsn = mover
            .target
            .fence(&spec.range(epoch, None))
            .await
            .map_err(WaveError::Region)?;
        while wave.reverse_from.0 < fence_lsn {
            reverse_pass(wave, mover, Duration::ZERO).await?;
        }
        control
            .commit(&spec, &spec.source)
            .await
            .map_err(WaveError::Control)?;
        wave.write_unavailable_ms += started.elapsed().as_secs_f64() * 1000.0;
    } else {
        // Unfencing a range that is owned and not fenced is accepted as a no-op.
        mover
            .source
            .unfence(&spec.range(epoch, None))
            .await
            .map_err(WaveError::Region)?;
    }
    let purged = mover
        .target
        .purge(&spec.scope())
        .await
        .map_err(WaveError::Region)?;
    wave.absorb_purge(&purged);
    wave.step = Step::RolledBack;
    Ok(())
}

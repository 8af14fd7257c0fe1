//! Driving a run: phases in order; in each, waves in order (a wave starts once every unit of
//! the one before has cut over); units of a wave a few at a time; reversing until each unit's
//! rollback window closes; then the phase completes — sources purged, ledger written, the
//! phase's policy change published.

use super::units::{UnitControl, make_units, mover};
use super::{CURRENT, Migration, PhaseState, RunState, now_ms, settled};
use crate::ledger;
use crate::state::ControlState;
use bytes::Bytes;
use domicile_migrate::throttle::Throttle;
use domicile_migrate::wave::{self, Control, Interrupt, Step};
use domicile_store::StoreError;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Mutex, Semaphore, mpsc, watch};
use tokio::task::JoinSet;

/// Units of one wave that run their steps at once (each holds two region connections and, while
/// copying, a chunk in memory: this bounds both).
const UNITS_AT_ONCE: usize = 4;

/// Source purges at once when a phase completes: a region runs them side by side, their deletes
/// share group commits and their metadata scrubs coalesce (`DataKeys::scrub`).
const PURGES_AT_ONCE: usize = 16;

/// The longest a reverse pass waits for the target's next change.
const REVERSE_POLL: Duration = Duration::from_millis(500);

pub struct Engine {
    pub(crate) state: Arc<ControlState>,
    doc: Mutex<Migration>,
    /// The operator's wish, seen by units between steps.
    interrupt: watch::Sender<Interrupt>,
    /// The task driving the run, while there is one.
    driver: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// One cutover at a time: a fenced range never waits for another unit's commit.
    pub(crate) cutover: Mutex<()>,
}

fn interrupt_of(state: RunState) -> Interrupt {
    match state {
        RunState::Paused => Interrupt::Pause,
        RunState::RollingBack | RunState::RolledBack => Interrupt::RollBack,
        RunState::Running | RunState::Completed => Interrupt::None,
    }
}

async fn persist(state: &ControlState, doc: &Migration) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    state.store.store_meta(CURRENT, Bytes::from(bytes)).await
}

/// The saved run, if any.
pub(crate) async fn load(state: &ControlState) -> Result<Option<Migration>, StoreError> {
    match state.store.load_meta(CURRENT).await? {
        Some(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| StoreError::Corrupt(format!("migration document: {e}"))),
        None => Ok(None),
    }
}

impl Engine {
    /// Saves `doc` as the current run and returns its engine (not yet driven).
    pub(crate) async fn create(
        state: Arc<ControlState>,
        doc: Migration,
    ) -> Result<Arc<Self>, StoreError> {
        persist(&state, &doc).await?;
        Ok(Self::of(state, doc))
    }

    pub(crate) fn of(state: Arc<ControlState>, doc: Migration) -> Arc<Self> {
        Arc::new(Self {
            interrupt: watch::channel(interrupt_of(doc.state)).0,
            state,
            doc: Mutex::new(doc),
            driver: Mutex::new(None),
            cutover: Mutex::new(()),
        })
    }

    pub fn interrupt(&self) -> Interrupt {
        *self.interrupt.borrow()
    }

    pub async fn snapshot(&self) -> Migration {
        self.doc.lock().await.clone()
    }

    /// Changes the document and saves it durably, under one lock (saves are ordered).
    pub(crate) async fn save(&self, change: impl FnOnce(&mut Migration)) -> Result<(), StoreError> {
        let mut doc = self.doc.lock().await;
        change(&mut doc);
        persist(&self.state, &doc).await
    }

    /// Sets the run's state (pause, resume, roll back), durably, and tells the units.
    pub(crate) async fn set_state(&self, next: RunState) -> Result<(), StoreError> {
        self.save(|m| {
            m.state = next;
            if next != RunState::Paused {
                m.error = None;
            }
        })
        .await?;
        self.interrupt.send_replace(interrupt_of(next));
        Ok(())
    }

    /// Starts driving the run unless a driver is still at work.
    pub(crate) async fn drive(self: &Arc<Self>) {
        let mut driver = self.driver.lock().await;
        if driver.as_ref().is_some_and(|h| !h.is_finished()) {
            return;
        }
        let engine = self.clone();
        *driver = Some(tokio::spawn(async move {
            if let Err(e) = engine.run().await {
                tracing::error!(error = %e, "migration stopped");
                let message = e.to_string();
                let _ = engine
                    .save(|m| {
                        m.state = RunState::Paused;
                        m.error = Some(message);
                    })
                    .await;
                engine.interrupt.send_replace(Interrupt::Pause);
            }
        }));
    }

    /// Phases from the saved one on, until the run completes, rolls back or pauses.
    async fn run(self: &Arc<Self>) -> Result<(), String> {
        loop {
            let doc = self.snapshot().await;
            match doc.state {
                RunState::Paused | RunState::Completed | RunState::RolledBack => return Ok(()),
                RunState::Running | RunState::RollingBack => {}
            }
            if doc.phase >= doc.phases.len() {
                self.save(|m| {
                    m.state = RunState::Completed;
                    m.finished_ms = Some(now_ms());
                })
                .await
                .map_err(|e| e.to_string())?;
                tracing::info!(migration = %doc.id, "migration completed");
                return Ok(());
            }
            self.run_phase(doc.phase).await?;
        }
    }

    async fn run_phase(self: &Arc<Self>, p: usize) -> Result<(), String> {
        let doc = self.snapshot().await;
        let phase = doc.phases[p].resolved.clone();
        if doc.phases[p].state == PhaseState::Pending {
            self.save(|m| {
                m.phases[p].state = PhaseState::Running;
                m.phases[p].started_ms = Some(now_ms());
            })
            .await
            .map_err(|e| e.to_string())?;
            tracing::info!(phase = %phase.name, "phase started");
        }
        let throttle = Arc::new(Throttle::new(phase.rate_limit));
        let permits = Arc::new(Semaphore::new(UNITS_AT_ONCE));
        let (settled_tx, mut settled_rx) = mpsc::unbounded_channel::<Result<(), String>>();
        let mut tasks: JoinSet<Result<(), String>> = JoinSet::new();
        let mut failure = None;
        for w in 0..phase.waves.len() {
            if self.interrupt() != Interrupt::None {
                break;
            }
            if self.snapshot().await.phases[p].waves_started <= w {
                let units = make_units(&self.state.table(), &phase, w);
                tracing::info!(phase = %phase.name, wave = w + 1, units = units.len(), "wave started");
                self.save(|m| {
                    m.phases[p].units.extend(units);
                    m.phases[p].waves_started = w + 1;
                })
                .await
                .map_err(|e| e.to_string())?;
            }
            let doc = self.snapshot().await;
            let mut waiting = 0;
            for (i, unit) in doc.phases[p].units.iter().enumerate() {
                if unit.wave != w || unit.run.step.is_final() {
                    continue;
                }
                let (engine, throttle, permits, settled_tx) = (
                    self.clone(),
                    throttle.clone(),
                    permits.clone(),
                    settled_tx.clone(),
                );
                tasks.spawn(async move {
                    unit_task(engine, p, i, &throttle, &permits, &settled_tx).await
                });
                waiting += 1;
            }
            while waiting > 0 {
                match settled_rx.recv().await {
                    Some(Ok(())) => {}
                    Some(Err(e)) => failure = Some(e),
                    None => break,
                }
                waiting -= 1;
            }
            if failure.is_some() {
                break;
            }
        }
        // Reversing goes on until every window has closed (or the operator interrupts).
        if let Err(e) = join_all(tasks).await {
            failure = Some(e);
        }
        match (self.interrupt(), failure) {
            (Interrupt::RollBack, _) => self.roll_back_phase(p).await,
            (Interrupt::Pause, _) => Ok(()),
            (Interrupt::None, Some(e)) => {
                let name = phase.name.clone();
                self.save(|m| {
                    m.state = RunState::Paused;
                    m.error = Some(format!("phase {name}: {e}"));
                })
                .await
                .map_err(|e| e.to_string())?;
                self.interrupt.send_replace(Interrupt::Pause);
                Ok(())
            }
            (Interrupt::None, None) => self.complete_phase(p).await,
        }
    }

    /// Every unit of the phase that has not completed goes back to its source.
    async fn roll_back_phase(self: &Arc<Self>, p: usize) -> Result<(), String> {
        let doc = self.snapshot().await;
        for (i, unit) in doc.phases[p].units.iter().enumerate() {
            if !unit.run.step.may_roll_back() {
                continue;
            }
            let control = UnitControl {
                engine: self.clone(),
                phase: p,
                index: i,
            };
            let mut w = unit.run.clone();
            let mover = mover(self, &w.spec)?;
            wave::request_rollback(&mut w).map_err(|e| e.to_string())?;
            control.checkpoint(&w).await?;
            wave::run(&mut w, &mover, &control, &Throttle::new(None))
                .await
                .map_err(|e| format!("rolling back {}/{}: {e}", w.spec.service, w.spec.market))?;
        }
        // What the rolled-back units had copied to their targets is purged there: recorded, and
        // signed with the rest.
        let doc = self.snapshot().await;
        let name = &doc.phases[p].resolved.name;
        let lookback = 2 * doc.phases[p].units.len() as u64 + 3;
        for unit in &doc.phases[p].units {
            let w = &unit.run;
            if w.step != Step::RolledBack || (w.records_copied == 0 && w.purged == 0) {
                continue;
            }
            let s = &w.spec;
            ledger::append(
                &self.state,
                ledger::kind::PURGE,
                &format!(
                    "{}/{name}/{}/{}/{}/rollback-purge",
                    doc.id, s.service, s.market, s.buckets
                ),
                purge_body(&doc.id, w, &s.target, "rolled back"),
                lookback,
            )
            .await
            .map_err(|e| e.to_string())?;
            record_key_destruction(
                &self.state,
                &format!(
                    "{}/{name}/{}/{}/{}/rollback-keys",
                    doc.id, s.service, s.market, s.buckets
                ),
                w,
                &s.target,
                domicile_wire::ledger::DestructionReason::RolledBack,
                lookback,
            )
            .await?;
        }
        ledger::checkpoint(
            &self.state,
            &format!("{}/{name}/checkpoint", doc.id),
            &format!("phase {name} rolled back"),
        )
        .await
        .map_err(|e| format!("signing the ledger after the rollback: {e}"))?;
        self.save(|m| {
            m.phases[p].state = PhaseState::RolledBack;
            m.phases[p].finished_ms = Some(now_ms());
            m.state = RunState::RolledBack;
            m.finished_ms = Some(now_ms());
        })
        .await
        .map_err(|e| e.to_string())?;
        tracing::info!(phase = %doc.phases[p].resolved.name, "phase rolled back");
        Ok(())
    }

    /// Every unit's window has closed: purge the sources, write the ledger, tighten the policy.
    async fn complete_phase(self: &Arc<Self>, p: usize) -> Result<(), String> {
        let doc = self.snapshot().await;
        // A unit writes a purge, a key destruction and a transfer entry; then the policy and the
        // checkpoint.
        let lookback = 3 * doc.phases[p].units.len() as u64 + 3;
        let operator = doc
            .operator
            .clone()
            .unwrap_or_else(|| "not recorded (started before operators were)".to_string());
        let table = self.state.table();
        self.purge_sources(p).await?;
        let doc = self.snapshot().await;
        for (i, unit) in doc.phases[p].units.iter().enumerate() {
            let w = unit.run.clone();
            if w.step != Step::Completed || unit.ledger_seq.is_some() {
                continue;
            }
            let s = &w.spec;
            let legal_basis = table
                .policy
                .markets
                .get(&s.market)
                .and_then(|m| m.legal_basis.clone());
            let jurisdiction = |r: &domicile_core::RegionId| {
                table
                    .regions
                    .iter()
                    .find(|e| &e.id == r)
                    .map(|e| e.jurisdiction.to_string())
            };
            let body = json!({
                "migration": doc.id, "phase": doc.phases[p].resolved.name,
                "service": s.service, "market": s.market, "buckets": s.buckets,
                "from": s.source, "from_jurisdiction": jurisdiction(&s.source),
                "to": s.target, "to_jurisdiction": jurisdiction(&s.target),
                "records": w.moved_records, "records_copied": w.records_copied,
                "bytes": w.bytes_copied, "digest": w.moved_digest,
                "purged_at_source": w.purged, "blobs_purged_at_source": w.blobs_purged,
                "data_keys_destroyed_at_source": w.keys_destroyed, "epoch": w.committed_epoch,
                "legal_basis": legal_basis, "operator": operator,
                // Users with live records in the range as it moved (counted by the digests).
                "users": w.moved_users,
                "users_basis": format!(
                    "every user of market {} whose bucket (BLAKE3(user) mod {}) is in {}",
                    s.market, table.buckets.get(), s.buckets
                ),
                "digest_basis": "BLAKE3 over each bucket's (bucket, live records, digest) at the source, fenced, at the cutover",
            });
            let id = format!(
                "{}/{}/{}/{}/{}",
                doc.id, doc.phases[p].resolved.name, s.service, s.market, s.buckets
            );
            // The purge first: a crash after the transfer's seq is saved skips the unit.
            ledger::append(
                &self.state,
                ledger::kind::PURGE,
                &format!("{id}/purge"),
                purge_body(&doc.id, &w, &s.source, "moved"),
                lookback,
            )
            .await
            .map_err(|e| e.to_string())?;
            record_key_destruction(
                &self.state,
                &format!("{id}/keys"),
                &w,
                &s.source,
                domicile_wire::ledger::DestructionReason::Moved,
                lookback,
            )
            .await?;
            let seq = ledger::append(&self.state, ledger::kind::TRANSFER, &id, body, lookback)
                .await
                .map_err(|e| e.to_string())?;
            self.save(|m| m.phases[p].units[i].ledger_seq = Some(seq))
                .await
                .map_err(|e| e.to_string())?;
        }
        // The phase's policy change, applied to the policy as it stands (idempotent: once
        // applied, the rules remove nothing more).
        let current = self.state.table().policy.clone();
        let next = doc.plan.phases[p].apply(&current);
        if next != current {
            let version = next.version;
            crate::policy_change::change(&self.state, next)
                .await
                .map_err(|e| format!("publishing the policy after the phase: {e}"))?;
            ledger::append(
                &self.state,
                ledger::kind::POLICY,
                &format!("{}/{}/policy", doc.id, doc.phases[p].resolved.name),
                json!({ "version": version, "rules": doc.plan.phases[p].policy_after,
                        "after_phase": doc.phases[p].resolved.name }),
                lookback,
            )
            .await
            .map_err(|e| e.to_string())?;
        }
        // The phase's entries are signed before the phase counts as completed.
        let name = &doc.phases[p].resolved.name;
        ledger::checkpoint(
            &self.state,
            &format!("{}/{name}/checkpoint", doc.id),
            &format!("phase {name} completed"),
        )
        .await
        .map_err(|e| format!("signing the ledger after the phase: {e}"))?;
        let hold = doc.plan.phases[p].pause_after && p + 1 < doc.phases.len();
        self.save(|m| {
            m.phases[p].state = PhaseState::Completed;
            m.phases[p].finished_ms = Some(now_ms());
            m.phase = p + 1;
            if hold {
                m.state = RunState::Paused;
            }
        })
        .await
        .map_err(|e| e.to_string())?;
        if hold {
            self.interrupt.send_replace(Interrupt::Pause);
        }
        tracing::info!(phase = %doc.phases[p].resolved.name, paused = hold, "phase completed");
        Ok(())
    }

    /// Completes the phase's units whose windows have closed: their sources are purged, several
    /// units at once (each purge is checkpointed; the ledger is written after, in order).
    async fn purge_sources(self: &Arc<Self>, p: usize) -> Result<(), String> {
        let doc = self.snapshot().await;
        let permits = Arc::new(Semaphore::new(PURGES_AT_ONCE));
        let mut purges: JoinSet<Result<(), String>> = JoinSet::new();
        for (i, unit) in doc.phases[p].units.iter().enumerate() {
            if unit.run.step != Step::Reversing {
                continue;
            }
            let (engine, permits, mut w) = (self.clone(), permits.clone(), unit.run.clone());
            purges.spawn(async move {
                let _permit = permits
                    .acquire()
                    .await
                    .map_err(|e| format!("unit permits: {e}"))?;
                let control = UnitControl {
                    engine: engine.clone(),
                    phase: p,
                    index: i,
                };
                let mover = mover(&engine, &w.spec)?;
                wave::complete(&mut w, &mover, &control)
                    .await
                    .map_err(|e| e.to_string())
            });
        }
        join_all(purges).await
    }
}

/// Waits for every task; the last failure, if any (a task that panicked counts as failed).
async fn join_all(mut tasks: JoinSet<Result<(), String>>) -> Result<(), String> {
    let mut failure = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failure = Some(e),
            Err(e) => failure = Some(format!("a task failed: {e}")),
        }
    }
    failure.map_or(Ok(()), Err)
}

/// A `purge` entry's body: a range's copy removed from `region` (the source after a move, the
/// target after a rollback).
fn purge_body(
    migration: &str,
    wave: &domicile_migrate::wave::Wave,
    region: &domicile_core::RegionId,
    reason: &str,
) -> serde_json::Value {
    let spec = &wave.spec;
    json!({
        "migration": migration, "region": region, "service": spec.service,
        "market": spec.market, "buckets": spec.buckets, "entries_purged": wave.purged,
        "blobs_purged": wave.blobs_purged, "data_keys_destroyed": wave.keys_destroyed,
        "reason": reason,
    })
}

/// Records the data keys a unit's purge destroyed at `region` (crypto-shredding), if any.
async fn record_key_destruction(
    state: &crate::ControlState,
    id: &str,
    wave: &domicile_migrate::wave::Wave,
    region: &domicile_core::RegionId,
    reason: domicile_wire::ledger::DestructionReason,
    lookback: u64,
) -> Result<(), String> {
    if wave.keys_destroyed == 0 {
        return Ok(());
    }
    let body = domicile_wire::ledger::KeyDestruction {
        region: region.clone(),
        service: wave.spec.service.clone(),
        users: wave.keys_destroyed,
        user: None,
        reason,
    };
    let body = serde_json::to_value(&body).map_err(|e| e.to_string())?;
    ledger::append(state, ledger::kind::KEY_DESTRUCTION, id, body, lookback)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// One unit: its steps up to the cutover (reported on `settled`), then its reverse stream until
/// its window closes.
async fn unit_task(
    engine: Arc<Engine>,
    p: usize,
    i: usize,
    throttle: &Throttle,
    permits: &Semaphore,
    settled_tx: &mpsc::UnboundedSender<Result<(), String>>,
) -> Result<(), String> {
    let control = UnitControl {
        engine: engine.clone(),
        phase: p,
        index: i,
    };
    let mut w = engine.snapshot().await.phases[p].units[i].run.clone();
    let stepped = async {
        let mover = mover(&engine, &w.spec)?;
        let _permit = permits
            .acquire()
            .await
            .map_err(|e| format!("unit permits: {e}"))?;
        wave::run(&mut w, &mover, &control, throttle)
            .await
            .map_err(|e| {
                format!(
                    "{}/{} buckets {}: {e}",
                    w.spec.service, w.spec.market, w.spec.buckets
                )
            })?;
        Ok::<_, String>(mover)
    }
    .await;
    let mover = match stepped {
        Ok(m) => {
            let _ = settled_tx.send(Ok(()));
            m
        }
        Err(e) => {
            let _ = settled_tx.send(Err(e.clone()));
            return Err(e);
        }
    };
    if !settled(w.step) {
        return Ok(()); // paused
    }
    while w.step == Step::Reversing && control.interrupt() == Interrupt::None {
        let now = now_ms();
        if now >= w.reverse_until_ms {
            break;
        }
        let wait = REVERSE_POLL.min(Duration::from_millis(w.reverse_until_ms - now));
        // Not checkpointed per pass: after a crash the stream restarts from the last saved
        // position and re-delivers what it had applied, as no-ops (equal versions).
        wave::reverse_pass(&mut w, &mover, wait)
            .await
            .map_err(|e| format!("reversing {}/{}: {e}", w.spec.service, w.spec.market))?;
    }
    control.checkpoint(&w).await
}

//! The migration engine, run by the control plane: a plan's phases one after the other, each
//! phase wave by wave, each wave as units — one per (service, market, placement row) — that run
//! `domicile_migrate::wave`'s state machine. The whole run is one document in the control
//! plane's store, saved after every step of every unit (and every copied chunk), so a control
//! plane that crashes resumes from it on start (`resume`). Design: `docs/design/migration-engine.md`.

pub mod api;
mod engine;
mod units;

pub use engine::Engine;

use domicile_migrate::plan::{Plan, ResolvedPhase};
use domicile_migrate::wave::{Step, Wave};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the run document lives in the control plane's store.
pub(crate) const CURRENT: &str = "migration/current";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A migration's state as the operator sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Running,
    /// Stopped between steps by `pause`, or by an error (`error` says which); `resume` goes on.
    Paused,
    /// The current phase's units are rolling back.
    RollingBack,
    RolledBack,
    Completed,
}

impl RunState {
    pub fn is_final(self) -> bool {
        matches!(self, RunState::RolledBack | RunState::Completed)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseState {
    Pending,
    Running,
    Completed,
    RolledBack,
}

/// One unit of a wave: a range of one (service, market) placement row moving to its target.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    /// The wave of the phase it belongs to (0-based).
    pub wave: usize,
    pub run: Wave,
    /// The ledger entry of its transfer, once written.
    pub ledger_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseRun {
    pub resolved: ResolvedPhase,
    pub state: PhaseState,
    /// Waves whose units exist (they are made from the routing table when the wave starts).
    pub waves_started: usize,
    pub units: Vec<Unit>,
    pub started_ms: Option<u64>,
    pub finished_ms: Option<u64>,
}

/// The run document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    /// `<plan name>-<start time ms>`.
    pub id: String,
    pub plan: Plan,
    pub state: RunState,
    /// Why the run paused itself, if it did.
    pub error: Option<String>,
    /// The phase being run (== phases.len() once completed).
    pub phase: usize,
    pub phases: Vec<PhaseRun>,
    pub started_ms: u64,
    pub finished_ms: Option<u64>,
}

/// What `status` shows of a phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseSummary {
    pub name: String,
    pub state: PhaseState,
    pub waves: usize,
    pub waves_started: usize,
    pub units: usize,
    /// Units per step (`Copying: 2`, …).
    pub steps: BTreeMap<String, usize>,
    pub records_moved: u64,
    pub bytes_moved: u64,
    pub records_caught_up: u64,
    pub records_reversed: u64,
    pub keys_repaired: u64,
    pub cutovers: usize,
    pub write_unavailable_ms_p50: f64,
    pub write_unavailable_ms_p99: f64,
    pub write_unavailable_ms_max: f64,
    /// Every unit that cut over was verified equal with the source fenced.
    pub verified: bool,
    pub purged: u64,
    pub seconds: Option<f64>,
}

/// `GET /admin/migrations/current`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationStatus {
    pub id: String,
    pub plan: String,
    pub state: RunState,
    pub error: Option<String>,
    pub phase: usize,
    pub phases: Vec<PhaseSummary>,
}

/// The `q` quantile of sorted `xs` (nearest rank), 0 if empty.
fn quantile(xs: &[f64], q: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let rank = (q * xs.len() as f64).ceil() as usize;
    xs[rank.clamp(1, xs.len()) - 1]
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

impl PhaseRun {
    pub fn summary(&self) -> PhaseSummary {
        let mut steps = BTreeMap::new();
        let mut windows = Vec::new();
        let mut s = PhaseSummary {
            name: self.resolved.name.clone(),
            state: self.state,
            waves: self.resolved.waves.len(),
            waves_started: self.waves_started,
            units: self.units.len(),
            steps: BTreeMap::new(),
            records_moved: 0,
            bytes_moved: 0,
            records_caught_up: 0,
            records_reversed: 0,
            keys_repaired: 0,
            cutovers: 0,
            write_unavailable_ms_p50: 0.0,
            write_unavailable_ms_p99: 0.0,
            write_unavailable_ms_max: 0.0,
            verified: true,
            purged: 0,
            seconds: None,
        };
        for u in &self.units {
            let w = &u.run;
            *steps.entry(format!("{:?}", w.step)).or_insert(0) += 1;
            s.records_moved += w.records_copied;
            s.bytes_moved += w.bytes_copied;
            s.records_caught_up += w.records_applied;
            s.records_reversed += w.records_reversed;
            s.keys_repaired += w.keys_repaired;
            s.purged += w.purged;
            if w.committed_epoch.is_some() {
                s.cutovers += 1;
                windows.push(w.write_unavailable_ms);
                s.verified &= w.verified;
            }
        }
        windows.sort_by(f64::total_cmp);
        s.write_unavailable_ms_p50 = round3(quantile(&windows, 0.5));
        s.write_unavailable_ms_p99 = round3(quantile(&windows, 0.99));
        s.write_unavailable_ms_max = round3(quantile(&windows, 1.0));
        s.steps = steps;
        s.seconds = match (self.started_ms, self.finished_ms) {
            (Some(a), Some(b)) => Some(round3(b.saturating_sub(a) as f64 / 1000.0)),
            (Some(a), None) => Some(round3(now_ms().saturating_sub(a) as f64 / 1000.0)),
            _ => None,
        };
        s
    }
}

impl Migration {
    pub fn status(&self) -> MigrationStatus {
        MigrationStatus {
            id: self.id.clone(),
            plan: self.plan.name.clone(),
            state: self.state,
            error: self.error.clone(),
            phase: self.phase,
            phases: self.phases.iter().map(PhaseRun::summary).collect(),
        }
    }

    /// Units that may still roll back in the current phase.
    pub(crate) fn live_units(&self) -> usize {
        self.phases.get(self.phase).map_or(0, |p| {
            p.units
                .iter()
                .filter(|u| u.run.step.may_roll_back())
                .count()
        })
    }
}

/// Whether a step counts as "cut over" for a wave's progress.
pub(crate) fn settled(step: Step) -> bool {
    matches!(step, Step::Reversing | Step::Completed | Step::RolledBack)
}

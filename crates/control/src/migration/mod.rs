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

pub use domicile_wire::migration::{MigrationStatus, PhaseState, PhaseSummary, RunState};
use std::time::{SystemTime, UNIX_EPOCH};

/// Where the run document lives in the control plane's store.
pub(crate) const CURRENT: &str = "migration/current";

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

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
    /// Who started the run (the operator they named, and the admin credential's id).
    #[serde(default)]
    pub operator: Option<String>,
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

/// Prometheus text for the current run: its units by step, cutovers, and the worst window.
pub async fn metrics(state: &crate::state::ControlState) -> String {
    use std::fmt::Write as _;
    let Some(engine) = state.migration.lock().await.clone() else {
        return String::new();
    };
    let doc = engine.snapshot().await;
    let mut steps: BTreeMap<String, usize> = BTreeMap::new();
    let (mut cutovers, mut worst) = (0u64, 0.0f64);
    for u in doc.phases.iter().flat_map(|p| &p.units) {
        *steps.entry(format!("{:?}", u.run.step)).or_insert(0) += 1;
        if u.run.committed_epoch.is_some() {
            cutovers += 1;
            worst = worst.max(u.run.write_unavailable_ms);
        }
    }
    let mut out = String::from(
        "# HELP domicile_migration_units Units of the current migration by step.\n# TYPE domicile_migration_units gauge\n",
    );
    for (step, n) in steps {
        let _ = writeln!(out, "domicile_migration_units{{step=\"{step}\"}} {n}");
    }
    let _ = write!(
        out,
        "# HELP domicile_migration_cutovers Cutovers committed by the current migration.\n# TYPE domicile_migration_cutovers gauge\ndomicile_migration_cutovers {cutovers}\n# HELP domicile_migration_write_unavailable_ms_max The longest cutover window of the current migration.\n# TYPE domicile_migration_write_unavailable_ms_max gauge\ndomicile_migration_write_unavailable_ms_max {worst}\n# HELP domicile_migration_phase The phase being run (0-based; = phases once completed).\n# TYPE domicile_migration_phase gauge\ndomicile_migration_phase {}\n",
        doc.phase
    );
    out
}

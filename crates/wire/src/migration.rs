//! The migration engine's status as the admin API reports it (`GET /admin/migrations/current`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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

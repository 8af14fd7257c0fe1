//! The migration admin API: `POST /admin/migrations` (a plan's TOML) starts a run;
//! `GET /admin/migrations/current` is its status; `POST /admin/migrations/current/{pause,
//! resume,rollback}` steer it. `GET /admin/ledger` exports the ledger (signed to its head);
//! `POST /admin/ledger/checkpoint` signs the head.

use super::engine::{Engine, load};
use super::{Migration, MigrationStatus, PhaseRun, PhaseState, RunState, now_ms};
use crate::admin::authorize;
use crate::ledger;
use crate::state::ControlState;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use domicile_core::{ClusterConfig, RegionConfig};
use domicile_http::{ApiError, request};
use domicile_migrate::plan::Plan;
use domicile_store::StoreError;
use domicile_wire::api::RoutingTable;
use std::sync::Arc;

/// Resumes a saved run that had not ended (after a restart or a crash): from its last
/// checkpoint, if it was running or rolling back; a paused run waits for `resume`.
pub async fn resume(state: &Arc<ControlState>) -> Result<(), StoreError> {
    let Some(doc) = load(state).await? else {
        return Ok(());
    };
    if doc.state.is_final() {
        return Ok(());
    }
    tracing::info!(migration = %doc.id, state = ?doc.state, phase = doc.phase, "resuming migration");
    let engine = Engine::of(state.clone(), doc);
    *state.migration.lock().await = Some(engine.clone());
    engine.drive().await;
    Ok(())
}

/// The cluster as the plan sees it: today's regions, schema, policy and placement.
fn config_of(table: &RoutingTable) -> ClusterConfig {
    ClusterConfig {
        buckets: table.buckets,
        schema: table.schema.clone(),
        regions: table
            .regions
            .iter()
            .map(|r| RegionConfig {
                id: r.id.clone(),
                jurisdiction: r.jurisdiction,
                listen: r.url.clone(),
                store: String::new(),
                blobs: String::new(),
                keyring: None,
            })
            .collect(),
        limits: Default::default(),
        policy: table.policy.clone(),
        placement: table.placement.clone(),
    }
}

/// Checks `text` against the current table and makes the run's document (nothing moves yet).
pub fn plan_run(table: &RoutingTable, text: &str) -> Result<Migration, ApiError> {
    let refused =
        |e: domicile_migrate::plan::PlanError| ApiError::bad("plan_refused", e.to_string());
    let plan = Plan::from_toml(text).map_err(refused)?;
    let resolved = plan.validate(&config_of(table)).map_err(refused)?;
    let started_ms = now_ms();
    Ok(Migration {
        id: format!("{}-{started_ms}", plan.name),
        plan,
        state: RunState::Running,
        error: None,
        phase: 0,
        phases: resolved
            .into_iter()
            .map(|resolved| PhaseRun {
                resolved,
                state: PhaseState::Pending,
                waves_started: 0,
                units: Vec::new(),
                started_ms: None,
                finished_ms: None,
            })
            .collect(),
        started_ms,
        finished_ms: None,
        operator: None,
    })
}

/// `POST /admin/migrations`, body: the plan (TOML). 201 with the status; 400 `plan_refused`
/// naming the rule if the policy or the cluster forbids it; 409 while another run has not ended.
pub async fn start(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<MigrationStatus>), ApiError> {
    authorize(&state, &headers)?;
    let operator = operator_of(&state, &headers)?;
    let bytes = request::body(body, 1 << 20).await?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| ApiError::bad("plan_refused", "the plan is not UTF-8 text"))?;
    let mut slot = state.migration.lock().await;
    if let Some(engine) = slot.as_ref() {
        let current = engine.snapshot().await;
        if !current.state.is_final() {
            return Err(ApiError::Conflict(format!(
                "migration {} is {:?}; finish, roll back or resume it first",
                current.id, current.state
            )));
        }
    }
    let mut doc = plan_run(&state.table(), text)?;
    doc.operator = Some(operator);
    tracing::info!(migration = %doc.id, phases = doc.phases.len(), "migration started");
    let engine = Engine::create(state.clone(), doc).await?;
    *slot = Some(engine.clone());
    drop(slot);
    engine.drive().await;
    Ok((StatusCode::CREATED, Json(engine.snapshot().await.status())))
}

async fn current(state: &ControlState) -> Result<Arc<Engine>, ApiError> {
    state
        .migration
        .lock()
        .await
        .clone()
        .ok_or_else(|| ApiError::NotFound("no migration has been started".into()))
}

/// `GET /admin/migrations/current`.
pub async fn status(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
) -> Result<Json<MigrationStatus>, ApiError> {
    authorize(&state, &headers)?;
    let engine = match current(&state).await {
        Ok(e) => e,
        // A run that ended before this process started is still reported.
        Err(e) => match load(&state).await? {
            Some(doc) => return Ok(Json(doc.status())),
            None => return Err(e),
        },
    };
    Ok(Json(engine.snapshot().await.status()))
}

/// `GET /admin/migrations/current/document`: the whole saved run (every unit's state).
pub async fn document(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
) -> Result<Json<Migration>, ApiError> {
    authorize(&state, &headers)?;
    match current(&state).await {
        Ok(engine) => Ok(Json(engine.snapshot().await)),
        Err(e) => load(&state).await?.map(Json).ok_or(e),
    }
}

/// `POST /admin/migrations/current/{action}`: `pause`, `resume` or `rollback`.
pub async fn steer(
    State(state): State<Arc<ControlState>>,
    Path(action): Path<String>,
    headers: HeaderMap,
) -> Result<Json<MigrationStatus>, ApiError> {
    authorize(&state, &headers)?;
    let engine = current(&state).await?;
    let doc = engine.snapshot().await;
    let refuse = |what: &str| {
        Err(ApiError::Conflict(format!(
            "migration {} is {:?}: cannot {what}",
            doc.id, doc.state
        )))
    };
    match (action.as_str(), doc.state) {
        ("pause", RunState::Running) => engine.set_state(RunState::Paused).await?,
        ("pause", RunState::Paused) => {}
        ("resume", RunState::Paused) => {
            engine.set_state(RunState::Running).await?;
            engine.drive().await;
        }
        ("resume", RunState::Running) => engine.drive().await,
        ("rollback", RunState::Running | RunState::Paused | RunState::RollingBack) => {
            if doc.live_units() == 0 && doc.state != RunState::RollingBack {
                return Err(ApiError::Conflict(format!(
                    "migration {}: nothing in phase {} can roll back (its moves have completed)",
                    doc.id,
                    doc.phases
                        .get(doc.phase)
                        .map_or("-", |p| p.resolved.name.as_str())
                )));
            }
            engine.set_state(RunState::RollingBack).await?;
            engine.drive().await;
        }
        ("pause" | "resume" | "rollback", _) => return refuse(&action),
        _ => {
            return Err(ApiError::NotFound(format!(
                "no action {action:?}: pause, resume or rollback"
            )));
        }
    }
    Ok(Json(engine.snapshot().await.status()))
}

/// `GET /admin/ledger`: the export (`{"format","public_key","key_id","entries"}`), after
/// signing the head if entries were appended since the last checkpoint. Verify it with
/// `domicile audit verify`, against a public key kept apart from the control plane.
pub async fn get_ledger(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
) -> Result<Json<ledger::LedgerExport>, ApiError> {
    authorize(&state, &headers)?;
    Ok(Json(ledger::export(&state).await?))
}

/// `POST /admin/ledger/checkpoint`: signs the head now (no new entry if the last one is a
/// checkpoint already). `{"seq"}`: the checkpoint covering the head (0 for an empty ledger).
pub async fn post_checkpoint(
    State(state): State<Arc<ControlState>>,
    headers: HeaderMap,
) -> Result<Json<domicile_wire::ledger::LedgerAppended>, ApiError> {
    authorize(&state, &headers)?;
    let id = format!("admin/{}", now_ms());
    let seq = ledger::checkpoint(&state, &id, "requested").await?;
    Ok(Json(domicile_wire::ledger::LedgerAppended {
        seq: seq.unwrap_or(0),
    }))
}

/// The header naming the operator who starts a run (recorded in the ledger's transfers).
pub use domicile_client::admin::OPERATOR_HEADER;

/// Who starts a run: the `x-domicile-operator` header (1-128 printable characters) and the
/// admin credential's id.
fn operator_of(state: &ControlState, headers: &HeaderMap) -> Result<String, ApiError> {
    let credential = format!("admin credential {}", state.admin_credential_id());
    let Some(value) = headers.get(OPERATOR_HEADER) else {
        return Ok(credential);
    };
    let name = value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.len() <= 128 && !n.chars().any(char::is_control))
        .ok_or_else(|| {
            ApiError::bad(
                "invalid_operator",
                format!("{OPERATOR_HEADER} is 1-128 printable characters"),
            )
        })?;
    Ok(format!("{name} ({credential})"))
}

//! The migration under live traffic: the demo's plan (the reference plan, pausing after each
//! phase) run by the control plane's engine, with a flash sale while phase 1 moves the shop.
//! Each market's latency after a phase is measured from the moment the phase's last unit has
//! cut over (the phase's rollback window and purge run beside that window), and the next phase
//! starts once the window is over and the phase has completed.

use crate::flash::{self, FlashSale};
use crate::seed::SeededUser;
use crate::traffic::{Live, hold, window_bar};
use crate::{DemoError, DemoOptions};
use domicile_client::admin::AdminClient;
use domicile_client::control::ControlClient;
use domicile_migrate::plan::Plan;
use domicile_migrate::status_view::follow;
use domicile_wire::api::RoutingTable;
use domicile_wire::migration::{MigrationStatus, RunState};
use std::time::Duration;

/// The reference plan as the demo runs it: every phase pauses when done; rollback windows of
/// `rollback_window`.
pub fn demo_plan(rollback_window: Duration) -> Result<String, DemoError> {
    let mut plan = Plan::reference().map_err(|e| DemoError::Options(e.to_string()))?;
    for phase in &mut plan.phases {
        phase.pause_after = true;
        phase.rollback_window_secs = rollback_window.as_secs();
    }
    toml::to_string(&plan).map_err(|e| DemoError::Options(format!("the demo plan: {e}")))
}

pub struct PhasesOutcome {
    pub status: MigrationStatus,
    /// The routing table after each phase.
    pub tables: Vec<RoutingTable>,
    pub flash: Option<FlashSale>,
}

/// What the demo's migration needs.
pub struct Setting<'a> {
    pub http: &'a reqwest::Client,
    pub gateway: &'a str,
    pub admin: &'a AdminClient,
    pub control: &'a ControlClient,
    pub users: &'a [SeededUser],
    pub options: &'a DemoOptions,
    /// Seconds of traffic measured after each phase.
    pub after_seconds: u64,
    /// Orders in the flash sale (0: none).
    pub flash_orders: usize,
}

pub async fn run(s: &Setting<'_>, live: &Live, plan: &str) -> Result<PhasesOutcome, DemoError> {
    let moved_first: Vec<domicile_core::Market> = Plan::from_toml(plan)
        .map_err(|e| DemoError::Options(e.to_string()))?
        .phases
        .first()
        .map(|p| p.markets.clone())
        .unwrap_or_default();
    let started = s.admin.start_migration_by(plan, Some("demo")).await?;
    let names: Vec<String> = started.phases.iter().map(|p| p.name.clone()).collect();
    let during = |i: usize| format!("during:{}", names.get(i).map_or("-", String::as_str));
    live.set_label(&during(0));
    // The sale: buyers of every market that phase 1 moves.
    let buyers: Vec<usize> = (0..s.users.len())
        .filter(|i| moved_first.contains(&s.users[*i].market))
        .collect();
    let mut sale = (s.flash_orders > 0 && !buyers.is_empty()).then(|| {
        let (http, gateway, users, label) = (
            s.http.clone(),
            s.gateway.to_string(),
            s.users.to_vec(),
            during(0),
        );
        let orders = s.flash_orders;
        tokio::spawn(async move {
            flash::run(&http, &gateway, &users, &buyers, orders, 64, &label).await
        })
    });
    let mut tables = Vec::new();
    let mut flash = None;
    let status = loop {
        let done = tables.len();
        // The window after a phase opens once its last unit has cut over: from then every
        // request of the phase is served from its new home, and the rollback window and the
        // purge run beside the measurement, as they would beside an operator's traffic.
        let cut_over = follow(s.admin, s.options.progress, |st| {
            st.phases
                .get(done)
                .is_some_and(|p| p.waves_started == p.waves && p.cutovers >= p.units)
        })
        .await?;
        stopped_badly(&cut_over)?;
        // The sale is load of phase 1's own: its window opens once the sale is over too.
        if let Some(task) = sale.take() {
            flash = Some(
                task.await
                    .map_err(|e| DemoError::Migration(format!("flash sale task: {e}")))?,
            );
        }
        tables.push(s.control.current().await?);
        let name = names.get(done).cloned().unwrap_or_default();
        live.set_label(&name);
        hold(
            &window_bar(s.options, s.after_seconds, &format!("after {name}")),
            s.after_seconds,
        )
        .await;
        let status = follow(s.admin, s.options.progress, |_| false).await?;
        stopped_badly(&status)?;
        if status.state == RunState::Completed {
            break status;
        }
        live.set_label(&during(done + 1));
        s.admin.steer("resume").await?;
    };
    Ok(PhasesOutcome {
        status,
        tables,
        flash,
    })
}

/// An error unless the run is running, paused between phases, or completed.
fn stopped_badly(status: &MigrationStatus) -> Result<(), DemoError> {
    match (status.state, &status.error) {
        (RunState::Running | RunState::Paused | RunState::Completed, None) => Ok(()),
        (state, error) => Err(DemoError::Migration(format!(
            "the migration stopped {state:?}: {}",
            error.as_deref().unwrap_or("no error given")
        ))),
    }
}

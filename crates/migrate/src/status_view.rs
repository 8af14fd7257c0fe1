//! How a run's status is shown: a table, and progress bars while it runs.

use crate::plan;
use domicile_client::ClientError;
use domicile_client::admin::AdminClient;
use domicile_wire::migration::{MigrationStatus, RunState};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Polls the run's status until it stops running or `until` says so (the bars are then cleared,
/// for the next `follow` to draw again), with a progress bar per phase.
pub async fn follow(
    client: &AdminClient,
    bars: bool,
    mut until: impl FnMut(&MigrationStatus) -> bool,
) -> Result<MigrationStatus, ClientError> {
    let multi = MultiProgress::new();
    if !bars {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{prefix:>26} [{bar:30}] {pos}/{len} units {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut phase_bars: Vec<ProgressBar> = Vec::new();
    loop {
        let status = client.migration().await?;
        let reached = until(&status);
        for (i, p) in status.phases.iter().enumerate() {
            if phase_bars.len() <= i {
                let bar = multi.add(ProgressBar::new(0).with_style(style.clone()));
                bar.set_prefix(format!("phase {} {}", i + 1, p.name));
                phase_bars.push(bar);
            }
            let Some(bar) = phase_bars.get(i) else {
                continue;
            };
            let cut_over = ["Reversing", "Completed", "RolledBack"]
                .iter()
                .filter_map(|s| p.steps.get(*s))
                .sum::<usize>();
            bar.set_length(p.units as u64);
            bar.set_position(cut_over as u64);
            bar.set_message(format!(
                "· wave {}/{} · {} records · {:?}",
                p.waves_started, p.waves, p.records_moved, p.state
            ));
        }
        if reached {
            for bar in &phase_bars {
                bar.finish_and_clear();
            }
            return Ok(status);
        }
        if status.state != RunState::Running && status.state != RunState::RollingBack {
            for bar in &phase_bars {
                bar.finish();
            }
            return Ok(status);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// The status as a table.
pub fn status_table(s: &MigrationStatus) -> String {
    let mut text = format!("migration {} (plan {}): {:?}", s.id, s.plan, s.state);
    if let Some(e) = &s.error {
        text.push_str(&format!(" — {e}"));
    }
    text.push('\n');
    let mut rows = vec![vec![
        "phase".to_string(),
        "state".into(),
        "waves".into(),
        "units".into(),
        "records".into(),
        "bytes".into(),
        "cutovers".into(),
        "window p99".into(),
        "max".into(),
        "verified".into(),
        "repaired".into(),
    ]];
    for p in &s.phases {
        rows.push(vec![
            p.name.clone(),
            format!("{:?}", p.state),
            format!("{}/{}", p.waves_started, p.waves),
            p.units.to_string(),
            p.records_moved.to_string(),
            plan::bytes(p.bytes_moved),
            p.cutovers.to_string(),
            format!("{:.1} ms", p.write_unavailable_ms_p99),
            format!("{:.1} ms", p.write_unavailable_ms_max),
            if p.verified { "yes" } else { "NO" }.to_string(),
            p.keys_repaired.to_string(),
        ]);
    }
    text + &plan::aligned(
        &rows,
        &[
            false, false, true, true, true, true, true, true, true, false, true,
        ],
        "  ",
    )
}

//! `domicile migrate …`: migration plans. `plan FILE` is the dry run: it checks the plan against
//! the cluster's regions, schema, policy and placement, and estimates every phase and wave.
//! `run`, `status`, `pause`, `resume` and `rollback` steer the engine of a running control plane.

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use domicile_client::admin::AdminClient;
use domicile_latency::LatencyModel;
use domicile_migrate::plan::{DryRun, MEASURED_COPY_RATE, Plan, Workload};
use domicile_migrate::status_view::{follow, status_table};
use domicile_wire::migration::RunState;
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Dry run of a plan file: refuse it if the policy or the cluster forbids it, else print per
    /// phase and wave the buckets, the users, records and bytes that would move, the copy time,
    /// and each market's modelled latency change. Moves nothing.
    Plan(PlanArgs),
    /// Start the plan on a running control plane, then follow it with a progress bar per phase
    /// until it completes, pauses or rolls back (`--detach`: start and return).
    Run(RunArgs),
    /// The current run: per phase, its state, waves, records and bytes moved, cutover windows.
    Status(StatusArgs),
    /// Stop the run at the next step boundary (every step is checkpointed; nothing is undone).
    Pause(ControlArgs),
    /// Go on with a paused run from its checkpoints.
    Resume(ControlArgs),
    /// Give the current phase's moved ranges back to their sources (no acknowledged write is
    /// lost: the rollback window's reverse stream and a fenced drain bring them back).
    Rollback(ControlArgs),
}

#[derive(Args)]
pub struct ControlArgs {
    /// The control plane's URL (`domicile up --ready-file` names it).
    #[arg(long, env = "DOMICILE_CONTROL")]
    control: String,
    /// The file holding the admin token (`admin_token_file` in the ready file).
    #[arg(long, env = "DOMICILE_ADMIN_TOKEN_FILE")]
    admin_token_file: PathBuf,
    /// The cluster CA to trust for an `https://` control plane (`ca_file` in the ready file).
    #[arg(long, env = "DOMICILE_CA_FILE")]
    ca_file: Option<PathBuf>,
}

#[derive(Args)]
pub struct RunArgs {
    /// The plan (TOML), e.g. examples/plans/reference-2014.toml.
    file: PathBuf,
    #[command(flatten)]
    control: ControlArgs,
    /// Start the run and return at once.
    #[arg(long)]
    detach: bool,
    /// Print the final status as JSON (no progress bars).
    #[arg(long)]
    json: bool,
    /// Who runs the plan, recorded in every transfer's ledger entry with the admin credential's
    /// id (which alone is recorded without it).
    #[arg(long)]
    operator: Option<String>,
}

#[derive(Args)]
pub struct StatusArgs {
    #[command(flatten)]
    control: ControlArgs,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct PlanArgs {
    /// The plan (TOML), e.g. examples/plans/reference-2014.toml.
    file: PathBuf,
    /// The cluster config (TOML) to check the plan against (default: the built-in reference
    /// cluster, examples/reference-cluster.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Users to estimate for, split over markets by the demo's default weights
    /// (CN=40,IN=15,ID=10,BR=7,PH=7,MY=6,TW=5,HK=5,SG=5).
    #[arg(long, default_value_t = 20_000)]
    users: u64,
    /// Copy rate in records/s; each phase's rate_limit caps it. The default is the rate
    /// `domicile bench copy` measured region to region (docs/BENCHMARKS.md, 2026-11-25).
    #[arg(long, default_value_t = MEASURED_COPY_RATE, value_parser = clap::value_parser!(u64).range(1..))]
    copy_rate: u64,
    /// Print JSON instead of tables.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: MigrateCommand) -> Result<()> {
    match cmd {
        MigrateCommand::Plan(args) => out(&dry_run(&args)?),
        MigrateCommand::Run(args) => run_plan(args).await,
        MigrateCommand::Status(args) => {
            let status = admin(&args.control)?.migration().await?;
            out(&if args.json {
                serde_json::to_string_pretty(&status)? + "\n"
            } else {
                status_table(&status)
            })
        }
        MigrateCommand::Pause(c) => steer(&c, "pause").await,
        MigrateCommand::Resume(c) => steer(&c, "resume").await,
        MigrateCommand::Rollback(c) => steer(&c, "rollback").await,
    }
}

/// Not print!: a closed pipe (`| head`) is an error to report, not a panic.
fn out(text: &str) -> Result<()> {
    std::io::stdout()
        .lock()
        .write_all(text.as_bytes())
        .context("write to stdout")
}

fn admin(args: &ControlArgs) -> Result<AdminClient> {
    let token = std::fs::read_to_string(&args.admin_token_file)
        .with_context(|| format!("read the admin token {}", args.admin_token_file.display()))?;
    let transport = crate::certs::outside_client(&args.control, args.ca_file.as_deref())?;
    Ok(AdminClient::new(
        args.control.clone(),
        token.trim(),
        domicile_client::http_client(&transport),
    ))
}

async fn steer(args: &ControlArgs, action: &str) -> Result<()> {
    let status = admin(args)?.steer(action).await?;
    out(&status_table(&status))
}

async fn run_plan(args: RunArgs) -> Result<()> {
    let file = args.file.display();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("read plan {file}"))?;
    let client = admin(&args.control)?;
    let started = client
        .start_migration_by(&text, args.operator.as_deref())
        .await
        .with_context(|| format!("start plan {file}"))?;
    if args.detach {
        return out(&format!("started migration {}\n", started.id));
    }
    let status = follow(&client, !args.json, |_| false).await?;
    out(&if args.json {
        serde_json::to_string_pretty(&status)? + "\n"
    } else {
        status_table(&status)
    })?;
    match status.state {
        RunState::Completed => Ok(()),
        RunState::Paused => match &status.error {
            Some(e) => Err(anyhow!("migration {} paused: {e}", status.id)),
            None => Ok(()),
        },
        other => Err(anyhow!("migration {} ended {other:?}", status.id)),
    }
}

/// The dry run's text (tables or JSON).
fn dry_run(args: &PlanArgs) -> Result<String> {
    let (config, source) = crate::cluster_config(args.config.as_deref())?;
    let file = args.file.display();
    let text = std::fs::read_to_string(&args.file).with_context(|| format!("read plan {file}"))?;
    let plan = Plan::from_toml(&text).with_context(|| format!("parse plan {file}"))?;
    let resolved = plan
        .validate(&config)
        .with_context(|| format!("plan {file} is refused against config {source}"))?;
    let weights = domicile_demo::options::parse_weights(domicile_demo::options::DEFAULT_WEIGHTS)
        .map_err(|e| anyhow!("the demo's default weights: {e}"))?;
    let model = LatencyModel::reference().context("load the latency model's tables")?;
    let run = DryRun::estimate(
        &plan,
        &resolved,
        &config,
        &source,
        &Workload::new(args.users, weights),
        args.copy_rate,
        &model,
    );
    Ok(if args.json {
        serde_json::to_string_pretty(&run)? + "\n"
    } else {
        run.table()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: MigrateCommand,
    }

    fn args(extra: &[&str]) -> PlanArgs {
        let plan = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../examples/plans/reference-2014.toml"
        );
        let argv = ["migrate", "plan", plan]
            .into_iter()
            .chain(extra.iter().copied());
        match Cli::parse_from(argv).command {
            MigrateCommand::Plan(a) => a,
            _ => unreachable!("parsed a plan command"),
        }
    }

    #[test]
    fn the_reference_plan_dry_runs() {
        let table = dry_run(&args(&[])).unwrap();
        assert!(table.contains("Phase 1 ecommerce: 8 moves"), "{table}");
        let json: serde_json::Value =
            serde_json::from_str(&dry_run(&args(&["--json", "--users", "1000"])).unwrap()).unwrap();
        assert_eq!(json["users"], 1000);
        assert_eq!(json["phases"].as_array().unwrap().len(), 3);
        assert_eq!(json["phases"][0]["waves"][0]["buckets"], "0-10");
        assert_eq!(json["phases"][2]["latency"][0]["to"], "ap-mumbai");
    }

    #[test]
    fn a_bad_plan_is_one_clear_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(
            &path,
            "name = \"x\"\n[[phases]]\nname = \"p\"\nservices = [\"ecommerce\"]\nmarkets = [\"CN\"]\ntarget = \"us-west\"\n",
        )
        .unwrap();
        let mut a = args(&[]);
        a.file = path;
        let err = format!("{:#}", dry_run(&a).unwrap_err());
        assert!(err.contains("is refused against config reference: phase p: the target is forbidden: policy v1 forbids ecommerce data of market CN in region us-west: markets.CN.allowed = [cn-beijing]"), "{err}");
        assert!(!err.contains('\n'));
    }

    #[test]
    fn the_weights_are_the_demos() {
        let weights =
            domicile_demo::options::parse_weights(domicile_demo::options::DEFAULT_WEIGHTS).unwrap();
        assert_eq!(weights.len(), 9);
        let w = Workload::new(20_000, weights);
        let cn = w.users_in(domicile_core::Market::new("CN").unwrap());
        assert!((cn - 8_000.0).abs() < 1e-6);
    }
}

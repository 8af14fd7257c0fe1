//! `domicile migrate …`: migration plans. `plan FILE` is the dry run: it checks the plan against
//! the cluster's regions, schema, policy and placement, and estimates every phase and wave.

use anyhow::{Context, Result, anyhow};
use clap::{Args, Subcommand};
use domicile_core::ClusterConfig;
use domicile_latency::LatencyModel;
use domicile_migrate::plan::{DryRun, MEASURED_COPY_RATE, Plan, Workload};
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Dry run of a plan file: refuse it if the policy or the cluster forbids it, else print per
    /// phase and wave the buckets, the users, records and bytes that would move, the copy time,
    /// and each market's modelled latency change. Moves nothing.
    Plan(PlanArgs),
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
        MigrateCommand::Plan(args) => {
            let text = dry_run(&args)?;
            // Not print!: a closed pipe (`| head`) is an error to report, not a panic.
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("write the dry run to stdout")
        }
    }
}

/// The dry run's text (tables or JSON).
fn dry_run(args: &PlanArgs) -> Result<String> {
    let (config, source) = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("read config {}", path.display()))?;
            let config = ClusterConfig::from_toml(&text)
                .with_context(|| format!("load config {}", path.display()))?;
            (config, path.display().to_string())
        }
        None => (
            domicile_core::reference::cluster_config(),
            "reference".to_string(),
        ),
    };
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

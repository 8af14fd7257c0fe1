//! `domicile`: one binary for every role (region node, …) and tool (bench, …).
//! It only parses arguments and wires the library crates together.

mod audit;
mod bench;
mod certs;
mod cluster;
mod demo;
mod latency;
mod migrate_cmd;
mod region;
mod roles;
mod up;

use anyhow::Result;
use clap::{Parser, Subcommand};

// The store allocates per record on every path; glibc's allocator spent ~28% of an import
// in malloc/free under contention (perf, bench store). See docs/decisions/0002-allocator.md.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "domicile",
    version,
    about = "Residency-aware data platform: serve every user's data from the region their country allows, and move it there live."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a region node: one region's store behind the public and internal APIs.
    Region(region::RegionArgs),
    /// The reference scenario end to end on a fresh temporary data dir, with a report.
    Demo(demo::DemoArgs),
    /// Run the control plane: regions, policy, placement and epochs, and the admin API.
    Control(roles::ControlArgs),
    /// Run a gateway: sign-up, authentication and routing to the owning region.
    Gateway(roles::GatewayArgs),
    /// Run the whole cluster in one process: control plane, gateway and a region node per region.
    Up(up::UpArgs),
    /// The latency model: where each market's data would be fastest.
    #[command(subcommand)]
    Latency(latency::LatencyCommand),
    /// Migration plans: `plan FILE` is a dry run (validate and estimate; moves nothing).
    #[command(subcommand)]
    Migrate(migrate_cmd::MigrateCommand),
    /// The transfer ledger: `verify` its chain and signatures, `show` its entries.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Run a benchmark and print its figures as JSON.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Certificates: `init DIR` makes a development CA and a certificate per role.
    #[command(subcommand)]
    Certs(certs::CertsCommand),
}

/// The cluster config a `--config` option names, or the built-in reference cluster; with the
/// name to quote in messages.
fn cluster_config(
    path: Option<&std::path::Path>,
) -> Result<(domicile_core::ClusterConfig, String)> {
    use anyhow::Context as _;
    let Some(path) = path else {
        return Ok((
            domicile_core::reference::cluster_config(),
            "reference".to_string(),
        ));
    };
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
    let config = domicile_core::ClusterConfig::from_toml(&text)
        .with_context(|| format!("load config {}", path.display()))?;
    Ok((config, path.display().to_string()))
}

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn main() {
    let cli = Cli::parse();
    // The engine logs every flush and compaction at info; keep ours readable. The demo and the
    // benchmarks print reports: only warnings interleave with them.
    init_tracing(match cli.command {
        Command::Demo(_)
        | Command::Bench(_)
        | Command::Latency(_)
        | Command::Migrate(_)
        | Command::Audit(_)
        | Command::Certs(_) => "warn",
        _ => "info,fjall=warn,lsm_tree=warn",
    });
    let result: Result<()> = (|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            match cli.command {
                Command::Region(args) => region::run(args).await,
                Command::Up(args) => up::run(args).await,
                Command::Control(args) => roles::control(args).await,
                Command::Gateway(args) => roles::gateway(args).await,
                Command::Demo(args) => demo::run(args).await,
                Command::Latency(cmd) => latency::run(cmd).await,
                Command::Migrate(cmd) => migrate_cmd::run(cmd).await,
                Command::Audit(cmd) => audit::run(cmd).await,
                Command::Bench(cmd) => bench::run(cmd).await,
                Command::Certs(cmd) => certs::run(cmd),
            }
        })
    })();
    if let Err(e) = result {
        // One line, the whole chain of causes: what failed and why.
        eprintln!("domicile: {e:#}");
        std::process::exit(1);
    }
}

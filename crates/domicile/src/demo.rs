//! `domicile demo`: the reference scenario on a fresh temporary data dir — five regions up,
//! users seeded through the gateway, live traffic per market with modelled geography, a report.

use crate::cluster::Cluster;
use anyhow::{Context, Result};
use clap::Args;
use domicile_client::control::ControlClient;
use domicile_demo::options::{DEFAULT_WEIGHTS, parse_weights};
use domicile_demo::report::ClientTotals;
use domicile_demo::{DemoOptions, Report};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct DemoArgs {
    /// Simulated users to seed.
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Seconds of live traffic per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Write the JSON report here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Share of users with a photo (20–200 KiB).
    #[arg(long, default_value_t = 0.10)]
    photo_share: f64,
    /// Users per market, relative.
    #[arg(long, default_value = DEFAULT_WEIGHTS)]
    weights: String,
    /// Concurrent simulated clients, split across markets by weight.
    #[arg(long, default_value_t = 64)]
    clients: usize,
    /// Keep the data here instead of a temporary folder that is removed afterwards.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seed of the simulated users and traffic.
    #[arg(long, default_value_t = 2014)]
    seed: u64,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    anyhow::ensure!(args.users > 0, "--users must be at least 1");
    anyhow::ensure!(args.seconds > 0, "--seconds must be at least 1");
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.photo_share),
        "--photo-share must be between 0 and 1"
    );
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    let options = DemoOptions {
        users: args.users,
        duration: Duration::from_secs(args.seconds),
        photo_share: args.photo_share,
        weights: parse_weights(&args.weights).context("parse --weights")?,
        clients: args.clients,
        seed: args.seed,
        ..DemoOptions::default()
    };
    let temp = tempfile::Builder::new()
        .prefix("domicile-demo-")
        .tempdir()
        .context("create a temporary data dir")?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let started = Instant::now();

    let config = domicile_core::reference::cluster_config();
    let cluster = Cluster::start(&config, &data_dir, "127.0.0.1:0").await?;
    let e = &cluster.endpoints;
    eprintln!(
        "domicile demo: 5 regions, control plane and gateway up at {}",
        e.gateway
    );
    // Clients speak HTTP/1.1 with keep-alive, one pooled connection per concurrent client.
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(256)
        .build()
        .context("build the HTTP client")?;
    let control = ControlClient::new(e.control.clone(), domicile_client::http_client());
    let outcome = workload(&http, &control, e, &options, &args, started).await;
    // Stop every server before the temporary data dir goes, whatever the workload did.
    cluster.shutdown().await?;
    drop(temp);
    outcome
}

async fn workload(
    http: &reqwest::Client,
    control: &ControlClient,
    e: &crate::cluster::Endpoints,
    options: &DemoOptions,
    args: &DemoArgs,
    started: Instant,
) -> Result<()> {
    let (http, control, options) = (http.clone(), control.clone(), options.clone());

    let seeded = domicile_demo::seed::seed(&http, &e.gateway, &options)
        .await
        .context("seed users")?;
    eprintln!(
        "seeded {} users: {} records, {} photos ({:.1} MiB) in {:.1} s",
        seeded.users.len(),
        seeded.records,
        seeded.blobs,
        seeded.blob_bytes as f64 / (1 << 20) as f64,
        started.elapsed().as_secs_f64()
    );
    let mut report = Report {
        users: seeded.users.len() as u64,
        records: seeded.records,
        blobs: seeded.blobs,
        blob_bytes: seeded.blob_bytes,
        seconds: 0.0,
        client: ClientTotals {
            requests: 0,
            errors: 0,
        },
        markets: BTreeMap::new(),
    };
    let before = domicile_demo::traffic::run(
        &http,
        &e.gateway,
        &control,
        &seeded.users,
        &options,
        "before",
    )
    .await?;
    report.add_phase("before", before);
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;

    println!(
        "\nBefore (2014 placement: every market served from its policy's current region)\n{}",
        report.table("before")
    );
    println!(
        "users {}  records {}  photos {}  client requests {}  client errors {}  total {:.1} s",
        report.users,
        report.records,
        report.blobs,
        report.client.requests,
        report.client.errors,
        report.seconds
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

//! `domicile demo`: the reference scenario on a fresh temporary data dir — five regions up,
//! users seeded through the gateway, live traffic per market with modelled geography, a report.

use crate::cluster::Cluster;
use anyhow::{Context, Result};
use clap::Args;
use domicile_client::admin::AdminClient;
use domicile_client::control::ControlClient;
use domicile_demo::checker;
use domicile_demo::options::{DEFAULT_WEIGHTS, parse_weights};
use domicile_demo::phases::{self, Setting};
use domicile_demo::report::{ClientTotals, PhaseReport};
use domicile_demo::traffic::{Live, hold, window_bar};
use domicile_demo::{DemoOptions, Report};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
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
    /// Seconds of traffic measured after each phase of the migration.
    #[arg(long, default_value_t = 3)]
    after_seconds: u64,
    /// Each phase's rollback window (the reference plan's 30 s, shortened so the demo stays
    /// under a minute).
    #[arg(long, default_value = "2s", value_parser = parse_window)]
    rollback_window: u64,
    /// Orders in the flash sale run while phase 1 moves the shop (0: no sale).
    #[arg(long, default_value_t = 20_000)]
    flash_orders: usize,
    /// Only the "before" picture: no migration.
    #[arg(long)]
    no_migration: bool,
}

fn parse_window(text: &str) -> Result<u64, String> {
    domicile_migrate::plan::parse_duration(text)
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
    // Clients speak HTTP/1.1 with keep-alive over TLS, one pooled connection per concurrent
    // client; they trust the cluster CA like any app would.
    let http = domicile_client::builder(&cluster.outside, domicile_client::Alpn::Http1)
        .pool_max_idle_per_host(256)
        .build()
        .context("build the HTTP client")?;
    // The routing table and the final check read the cluster from inside (client certificate).
    let nodes = domicile_client::http_client(&cluster.member);
    let control = ControlClient::new(e.control.clone(), nodes.clone());
    let outcome = workload(&http, &nodes, &control, e, &options, &args, started).await;
    // Stop every server before the data dir is scanned (and the temporary one goes), whatever
    // the workload did.
    cluster.shutdown().await?;
    step("cluster stopped", started);
    let mut report = outcome?;
    report.plaintext_hits = domicile_demo::canary::plaintext_hits(&data_dir, &options.canary)
        .with_context(|| format!("scan {} for the canary", data_dir.display()))?;
    step("data dir scanned for the canary", started);
    drop(temp);
    report.seconds = (started.elapsed().as_secs_f64() * 10.0).round() / 10.0;
    present(&report, &args)
}

async fn workload(
    http: &reqwest::Client,
    nodes: &reqwest::Client,
    control: &ControlClient,
    e: &crate::cluster::Endpoints,
    options: &DemoOptions,
    args: &DemoArgs,
    started: Instant,
) -> Result<Report> {
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
        migration: None,
        phases: Vec::new(),
        claims: Vec::new(),
        flash_sale: None,
        acknowledged_writes: 0,
        copies_left_behind: 0,
        photos_checked: 0,
        photos_lost: 0,
        ledger_verified: false,
        ledger_entries: 0,
        ledger_checkpoints: 0,
        plaintext_hits: 0,
    };
    // The table as the control plane publishes it, for the clients' modelled delays.
    let first = Arc::new(control.current().await?);
    let before_table = first.as_ref().clone();
    // The clients' receiver exists before the watch starts: a watch whose sender has no
    // receiver ends at once, and the clients would then model every phase from the first table.
    let (tables, clients_table) = tokio::sync::watch::channel(first);
    let watcher = tokio::spawn(control.clone().watch(Arc::new(tables)));
    let users = Arc::new(seeded.users);
    let live = Live::start(
        &http,
        &e.gateway,
        clients_table,
        users.clone(),
        &options,
        "before",
    )?;
    hold(&window_bar(&options, args.seconds, "before"), args.seconds).await;
    step("before window measured", started);

    let token = std::fs::read_to_string(&e.admin_token_file)
        .with_context(|| format!("read {}", e.admin_token_file.display()))?;
    let admin = AdminClient::new(e.control.clone(), token.trim(), http.clone());
    let migrated = if args.no_migration {
        None
    } else {
        let setting = Setting {
            http: &http,
            gateway: &e.gateway,
            admin: &admin,
            control: &control,
            users: &users,
            options: &options,
            after_seconds: args.after_seconds,
            flash_orders: args.flash_orders,
        };
        let plan = phases::demo_plan(Duration::from_secs(args.rollback_window))?;
        eprintln!(
            "migrating: the reference plan, {} s rollback windows",
            args.rollback_window
        );
        Some(phases::run(&setting, &live, &plan).await)
    };
    let traffic = live.stop().await?;
    watcher.abort();
    step("migration done, traffic stopped", started);
    let migrated = migrated.transpose()?;
    for (label, markets) in traffic.by_label {
        report.add_phase(&label, markets);
    }
    let mut acked = traffic.acked;
    if let Some(m) = &migrated {
        report.migration = Some(m.status.id.clone());
        if let Some(sale) = &m.flash {
            acked.extend(sale.acked.iter().cloned());
            report.flash_sale = Some(sale.clone());
        }
    }
    let final_table = control.current().await?;
    let checked = checker::check(&http, nodes, &e.gateway, &users, &acked, &final_table).await?;
    step("acknowledged writes checked", started);
    report.acknowledged_writes = checked.writes;
    report.copies_left_behind = checked.copies_left_behind;
    report.photos_checked = checked.photos;
    report.photos_lost = checked.photos_lost;
    if let Some(m) = &migrated {
        for p in &m.status.phases {
            let count = |map: &BTreeMap<String, u64>| {
                map.get(&p.name).copied().unwrap_or(0)
                    + map.get(&format!("during:{}", p.name)).copied().unwrap_or(0)
            };
            report.phases.push(PhaseReport {
                name: p.name.clone(),
                waves: p.waves,
                units: p.units,
                records_moved: p.records_moved,
                bytes_moved: p.bytes_moved,
                cutovers: p.cutovers,
                write_unavailable_ms_p50: p.write_unavailable_ms_p50,
                write_unavailable_ms_p99: p.write_unavailable_ms_p99,
                write_unavailable_ms_max: p.write_unavailable_ms_max,
                verified: p.verified,
                keys_repaired: p.keys_repaired,
                lost_writes: count(&checked.lost),
                duplicate_writes: count(&checked.duplicates),
                seconds: p.seconds,
            });
        }
        let processing = report
            .markets
            .values()
            .filter_map(|m| m.get("before"))
            .map(|p| p.processing_p50_ms)
            .fold(0.0, f64::max);
        let model = domicile_latency::LatencyModel::reference()?;
        report.claims = domicile_demo::claims::evaluate(
            &domicile_latency::claims(),
            &model,
            &domicile_demo::claims::Evidence {
                before: &before_table,
                after: &m.tables,
                processing_ms: processing,
                flash_orders_per_s: m.flash.as_ref().map(|f| f.orders_per_s),
            },
        );
        // The whole check `domicile audit verify` makes: the chain, and every checkpoint's
        // signature against the public key the control plane wrote to its file (not the one
        // the export names), with no entry left unsigned.
        let export = admin.ledger().await?;
        let text = std::fs::read_to_string(&e.ledger_public_key_file)
            .with_context(|| format!("read {}", e.ledger_public_key_file.display()))?;
        let key = domicile_control::ledger::VerifyingKey::parse(&text)?;
        match crate::audit::check(&export, &key, false) {
            Ok(v) => {
                report.ledger_verified = true;
                report.ledger_checkpoints = v.checkpoints;
            }
            Err(bad) => eprintln!("ledger NOT verified: {bad}"),
        }
        report.ledger_entries = export.entries.len() as u64;
        step("ledger verified", started);
    }
    Ok(report)
}

/// Logs how long the demo has run when it finishes a step (`RUST_LOG=domicile=info`).
fn step(name: &str, started: Instant) {
    tracing::info!(
        step = name,
        at_s = started.elapsed().as_secs_f64(),
        "demo step done"
    );
}

/// Prints the tables and the summary, and writes the JSON report.
fn present(report: &Report, args: &DemoArgs) -> Result<()> {
    let mut labels = vec!["before".to_string()];
    labels.extend(report.phases.iter().map(|p| p.name.clone()));
    for label in &labels {
        println!("\n{label}\n{}", report.table(label));
    }
    if !report.phases.is_empty() {
        println!(
            "Migration {}\n{}",
            report.migration.as_deref().unwrap_or("-"),
            report.phases_table()
        );
        if let Some(f) = &report.flash_sale {
            println!(
                "flash sale during phase 1: {} of {} orders accepted in {:.2} s ({:.0} orders/s), {} errors",
                f.accepted, f.orders, f.seconds, f.orders_per_s, f.errors
            );
        }
        println!("\nPublished claims\n{}", report.claims_table());
        println!(
            "acknowledged writes {} (every one read back; lost: {}), copies left behind {}, ledger {} entries and {} signed checkpoints, chain and signatures {}",
            report.acknowledged_writes,
            report.phases.iter().map(|p| p.lost_writes).sum::<u64>(),
            report.copies_left_behind,
            report.ledger_entries,
            report.ledger_checkpoints,
            if report.ledger_verified {
                "verified"
            } else {
                "BROKEN"
            }
        );
    }
    if report.photos_checked > 0 {
        println!(
            "photos read back at their final home: {} (lost or different: {})",
            report.photos_checked, report.photos_lost
        );
    }
    println!(
        "encryption at rest: the run's canary (in every user's notes and photos) found {} times in the data dir's files",
        report.plaintext_hits
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
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}

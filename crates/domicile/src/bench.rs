//! `domicile bench …`: benchmarks that print JSON, each with its baseline from the same run.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use domicile_bench::store_postgres::run_postgres_store_bench;
use domicile_bench::{StoreBenchOptions, run_store_bench};
use domicile_store::PostgresSpec;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// The region store against the bare engine: durable writes, import, scan, point reads, RSS.
    Store(StoreArgs),
    /// Reads through the gateway against reads sent straight to the region node, same run.
    Gateway(GatewayArgs),
    /// A scope copied region to region over loopback, beside the target store's import rate.
    Copy(CopyArgs),
    /// Repeated cutovers of a live range under a steady write load through the gateway.
    Cutover(CutoverArgs),
    /// What encryption at rest costs: the store and copy workloads plain and sealed, same run.
    Encryption(EncryptionArgs),
}

#[derive(Args)]
pub struct EncryptionArgs {
    /// Print only the JSON report on stdout (progress goes to stderr either way).
    #[arg(long)]
    json: bool,
    /// Records to import, scan and read in each store variant.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Records to copy region to region in each copy variant.
    #[arg(long, default_value_t = 200_000)]
    copy_records: u64,
    /// Concurrent writers for the durable-write figures.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Seconds each durable-write figure is measured for.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
}

#[derive(Args)]
pub struct CutoverArgs {
    /// Print only the JSON report.
    #[arg(long)]
    json: bool,
    /// Cutovers to run: HK's shop in this many equal bucket ranges, each moved once from
    /// cn-beijing to ap-singapore (at most the cluster's bucket count).
    #[arg(long, default_value_t = 100)]
    cutovers: usize,
    /// Concurrent writers through the gateway.
    #[arg(long, default_value_t = 8)]
    writers: usize,
    /// Users of the moving market (HK), written to at random.
    #[arg(long, default_value_t = 1000)]
    users: usize,
}

#[derive(Args)]
pub struct CopyArgs {
    /// Print only the JSON report.
    #[arg(long)]
    json: bool,
    /// Records in the copied scope.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// The source region's engine: `embedded`, `postgres` (a throwaway local cluster) or a
    /// `postgres://` URL.
    #[arg(long, default_value = "embedded")]
    from: String,
    /// The target region's engine, as `--from`. PostgreSQL on both sides adds the
    /// `pg_dump | pg_restore` baseline.
    #[arg(long, default_value = "embedded")]
    to: String,
    /// Run both region nodes inside this process instead of as `domicile region` processes
    /// of their own (then only the whole process's memory can be read).
    #[arg(long)]
    in_process: bool,
}

#[derive(Args)]
pub struct GatewayArgs {
    /// Print only the JSON report.
    #[arg(long)]
    json: bool,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Seconds per measurement (each path is measured twice, alternating).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Requests per second of the fixed-rate latency runs (default: half the slowest path's
    /// saturation throughput, measured first).
    #[arg(long)]
    rate: Option<f64>,
    /// Pin the networked gateway's process to this CPU and everything else (clients, region
    /// nodes, the in-process gateway) to the others, as a gateway tier on machines of its own
    /// would run (needs `taskset`).
    #[arg(long)]
    gateway_cpu: Option<usize>,
    /// The HTTP the gateway process speaks to the node (`domicile gateway --node-http`).
    #[arg(long, value_enum, default_value_t = crate::roles::NodeHttpArg::Http1)]
    node_http: crate::roles::NodeHttpArg,
}

#[derive(Args)]
pub struct StoreArgs {
    /// Print only the JSON report on stdout (progress goes to stderr either way).
    #[arg(long)]
    json: bool,
    /// Records to import, scan and read.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Concurrent writers for the durable-write figures.
    #[arg(long, default_value_t = 64)]
    writers: usize,
    /// Seconds each durable-write figure is measured for.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Folder for the benchmark's stores (default: a temporary folder on the same disk as the
    /// current directory, removed afterwards).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// `embedded`, `postgres` (a throwaway local cluster from the machine's PostgreSQL server
    /// binaries) or a `postgres://USER@HOST:PORT/DB` URL (the benchmark creates and drops its own
    /// `domicile_bench_*` schemas there).
    #[arg(long, default_value = "embedded")]
    engine: String,
}

pub async fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Gateway(args) => gateway(args).await,
        BenchCommand::Cutover(args) => cutover(args).await,
        BenchCommand::Copy(args) => {
            anyhow::ensure!(args.records > 0, "--records must be at least 1");
            let dir = tempfile::Builder::new()
                .prefix("domicile-bench-copy-")
                .tempdir_in(std::env::current_dir()?)?;
            let from = domicile_bench::copy::CopyEngine::parse(&args.from)?;
            let to = domicile_bench::copy::CopyEngine::parse(&args.to)?;
            let nodes = if args.in_process {
                domicile_bench::copy::Nodes::InProcess { encrypted: true }
            } else {
                domicile_bench::copy::Nodes::Processes {
                    exe: std::env::current_exe().context("find this program to run nodes")?,
                }
            };
            let report =
                domicile_bench::copy::run_copy_bench(args.records, &from, &to, dir.path(), &nodes)
                    .await
                    .context("run the copy benchmark")?;
            let _ = args.json;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Encryption(args) => {
            anyhow::ensure!(args.records > 0, "--records must be at least 1");
            anyhow::ensure!(args.copy_records > 0, "--copy-records must be at least 1");
            anyhow::ensure!(args.writers > 0, "--writers must be at least 1");
            anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
            let dir = tempfile::Builder::new()
                .prefix("domicile-bench-encryption-")
                .tempdir_in(std::env::current_dir()?)?;
            let options = StoreBenchOptions {
                dir: dir.path().to_path_buf(),
                records: args.records,
                writers: args.writers,
                write_seconds: args.seconds,
                progress: !args.json,
            };
            let report =
                domicile_bench::encryption::run_encryption_bench(options, args.copy_records)
                    .await
                    .context("run the encryption benchmark")?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        BenchCommand::Store(args) => {
            anyhow::ensure!(args.records > 0, "--records must be at least 1");
            anyhow::ensure!(args.writers > 0, "--writers must be at least 1");
            anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
            let dir = match args.dir {
                Some(d) => d,
                None => std::env::current_dir()?.join(".domicile-bench"),
            };
            let options = StoreBenchOptions {
                dir: dir.clone(),
                records: args.records,
                writers: args.writers,
                write_seconds: args.seconds,
                progress: !args.json,
            };
            let report = match args.engine.as_str() {
                "embedded" => run_store_bench(options).await,
                "postgres" => run_postgres_store_bench(options, None).await,
                url if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
                    let spec = PostgresSpec::parse(url)?;
                    run_postgres_store_bench(options, Some(spec)).await
                }
                other => anyhow::bail!(
                    "--engine {other}: expected embedded, postgres or a postgres:// URL"
                ),
            }
            .context("run the store benchmark")?;
            let _ = std::fs::remove_dir(&dir);
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

/// The paths `bench gateway` measures a read over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReadPath {
    /// Straight to the region node, over TLS with the cluster's client certificate.
    Direct,
    /// Through the gateway as `domicile up` runs it: the node in its process (decision 0017).
    Gateway,
    /// Through `domicile gateway` in its own process, calling the node over mutual TLS.
    NetworkedGateway,
}

impl ReadPath {
    const ALL: [ReadPath; 3] = [
        ReadPath::Direct,
        ReadPath::Gateway,
        ReadPath::NetworkedGateway,
    ];
}

/// One user's record read straight from its region node and through both gateways, in turn
/// (direct, gateway, networked gateway, twice) so that drift in the machine's load hits all.
async fn gateway(args: GatewayArgs) -> Result<()> {
    use domicile_bench::load::{closed_loop, fixed_rate};
    anyhow::ensure!(args.clients > 0, "--clients must be at least 1");
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    // Read before `--gateway-cpu` pins this process (the machine's CPUs, not the pinned set).
    let machine = domicile_bench::machine::Machine::current();
    if let Some(cpu) = args.gateway_cpu {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        anyhow::ensure!(
            cpu < cpus && cpus > 1,
            "--gateway-cpu {cpu}: this machine has CPUs 0-{}, and needs another for the rest",
            cpus - 1
        );
    }
    let dir = tempfile::Builder::new()
        .prefix("domicile-bench-gw-")
        .tempdir()?;
    let cluster = crate::cluster::Cluster::start(
        &domicile_core::reference::cluster_config(),
        dir.path(),
        "127.0.0.1:0",
    )
    .await?;
    let e = cluster.endpoints.clone();
    let (networked, mut gateway_process) =
        match networked_gateway(&e, &dir.path().join("gateway.key"), &args).await {
            Ok(started) => started,
            Err(e) => {
                cluster.shutdown().await?;
                return Err(e);
            }
        };
    // HTTP/1.1 connections (one per concurrent client) over TLS, with the cluster's `client`
    // certificate, which region nodes require (the gateway asks for none).
    let http = domicile_client::builder(&cluster.member, domicile_client::Alpn::Http1)
        .pool_max_idle_per_host(args.clients * 2)
        .build()?;
    let (user, token) = signup(&http, &e.gateway, "CN").await?;
    let path = format!("/v1/users/{user}/orders/o-1");
    let put = http
        .put(format!("{}{path}", e.gateway))
        .bearer_auth(&token)
        .body(vec![b'x'; 256])
        .send()
        .await?;
    anyhow::ensure!(
        put.status().is_success(),
        "seed write failed: {}",
        put.status()
    );
    let region = e
        .regions
        .get(&domicile_core::RegionId::new("cn-beijing")?)
        .context("cn-beijing url")?
        .clone();
    let duration = std::time::Duration::from_secs_f64(args.seconds);
    let request = {
        let urls = [
            format!("{region}{path}"),
            format!("{}{path}", e.gateway),
            format!("{networked}{path}"),
        ];
        move |read: ReadPath, h: &reqwest::Client| match read {
            ReadPath::Direct => h.get(&urls[0]).header("x-domicile-market", "CN"),
            ReadPath::Gateway => h.get(&urls[1]).bearer_auth(&token),
            ReadPath::NetworkedGateway => h.get(&urls[2]).bearer_auth(&token),
        }
    };
    // Throughput: closed loops.
    let saturated = alternating("saturated", args.json, |read| {
        let (http, request) = (http.clone(), request.clone());
        async move { closed_loop(&http, args.clients, duration, move |h| request(read, h)).await }
    })
    .await;
    // Latency: every path offered the same fixed rate, one all sustain. At saturation a closed
    // loop's p50 is its clients over its throughput (Little's law): the throughput gap again,
    // not what the hop adds to a request.
    let rate = match args.rate {
        Some(r) => r,
        None => {
            ReadPath::ALL
                .iter()
                .map(|p| mean(&saturated, *p, |r| r.rps))
                .fold(f64::INFINITY, f64::min)
                / 2.0
        }
    };
    anyhow::ensure!(rate >= 1.0, "--rate must be at least 1 request per second");
    let at_rate = alternating(&format!("at {rate:.0}/s"), args.json, |read| {
        let (http, request) = (http.clone(), request.clone());
        async move {
            fixed_rate(&http, rate, args.clients, duration, move |h| {
                request(read, h)
            })
            .await
        }
    })
    .await;
    // The gateway process goes first: it watches the control plane, which stops with the
    // cluster, and would log it unreachable on the way down.
    gateway_process
        .kill()
        .await
        .context("stop the gateway process")?;
    cluster.shutdown().await?;
    let rps = |p| mean(&saturated, p, |r| r.rps);
    let share = |p| (rps(p) / rps(ReadPath::Direct) * 100.0).round() / 100.0;
    let (p50, p99): (Figure, Figure) = (|r| r.p50_ms, |r| r.p99_ms);
    let errors: u64 = saturated
        .iter()
        .chain(&at_rate)
        .map(|(_, r)| r.errors)
        .sum();
    use ReadPath::{Direct, Gateway, NetworkedGateway};
    let (at, sat) = (&at_rate[..], &saturated[..]);
    let report = serde_json::json!({
        "clients": args.clients,
        "seconds_per_run": args.seconds,
        "gateway_hop": "in-process (domicile up, demo)",
        "networked_gateway": match args.gateway_cpu {
            Some(cpu) => format!("its own process on CPU {cpu}; the rest on the other CPUs"),
            None => "its own process, sharing every CPU".to_string(),
        },
        "networked_gateway_node_http": args.node_http.name(),
        "gateway_rps": rps(Gateway).round(),
        "direct_rps": rps(Direct).round(),
        "gateway_vs_direct": share(Gateway),
        "latency_rate_rps": rate.round(),
        "gateway_p50_ms": ms(at, Gateway, p50),
        "gateway_p99_ms": ms(at, Gateway, p99),
        "direct_p50_ms": ms(at, Direct, p50),
        "direct_p99_ms": ms(at, Direct, p99),
        "added_p50_ms": added_ms(at, Gateway, p50),
        "added_p99_ms": added_ms(at, Gateway, p99),
        "saturated_gateway_p50_ms": ms(sat, Gateway, p50),
        "saturated_gateway_p99_ms": ms(sat, Gateway, p99),
        "saturated_direct_p50_ms": ms(sat, Direct, p50),
        "saturated_direct_p99_ms": ms(sat, Direct, p99),
        "saturated_added_p50_ms": added_ms(sat, Gateway, p50),
        "saturated_added_p99_ms": added_ms(sat, Gateway, p99),
        "networked_gateway_rps": rps(NetworkedGateway).round(),
        "networked_gateway_vs_direct": share(NetworkedGateway),
        "networked_gateway_p50_ms": ms(at, NetworkedGateway, p50),
        "networked_gateway_p99_ms": ms(at, NetworkedGateway, p99),
        "networked_added_p50_ms": added_ms(at, NetworkedGateway, p50),
        "networked_added_p99_ms": added_ms(at, NetworkedGateway, p99),
        "errors": errors,
        "machine": machine,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

/// `domicile gateway` in a process of its own, with the cluster's token key, calling the
/// region nodes over mutual TLS in `args.node_http`; its URL and the process (killed when
/// dropped). With `args.gateway_cpu`, it runs on that CPU alone and this process on the others.
async fn networked_gateway(
    e: &crate::cluster::Endpoints,
    key_file: &std::path::Path,
    args: &GatewayArgs,
) -> Result<(String, tokio::process::Child)> {
    use tokio::io::AsyncBufReadExt;
    let exe = std::env::current_exe().context("find this binary")?;
    let mut command = match args.gateway_cpu {
        Some(cpu) => {
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            let others: Vec<String> = (0..cpus)
                .filter(|c| *c != cpu)
                .map(|c| c.to_string())
                .collect();
            // Every thread of this process, and those it starts later, on the other CPUs.
            let pinned = tokio::process::Command::new("taskset")
                .args(["-a", "-p", "-c", &others.join(",")])
                .arg(std::process::id().to_string())
                .stdout(std::process::Stdio::null())
                .status()
                .await
                .context("run taskset (util-linux)")?;
            anyhow::ensure!(pinned.success(), "taskset could not pin this process");
            let mut c = tokio::process::Command::new("taskset");
            c.args(["-c", &cpu.to_string()]).arg(&exe);
            c
        }
        None => tokio::process::Command::new(&exe),
    };
    let mut child = command
        .args([
            "gateway",
            "--listen",
            "127.0.0.1:0",
            "--control",
            &e.control,
            "--node-http",
            args.node_http.name(),
        ])
        .arg("--key-file")
        .arg(key_file)
        .arg("--tls-dir")
        .arg(&e.tls_dir)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("start `domicile gateway`")?;
    let stdout = child.stdout.take().context("the gateway's stdout")?;
    let line = tokio::io::BufReader::new(stdout)
        .lines()
        .next_line()
        .await?
        .context("`domicile gateway` exited before it served")?;
    let ready: serde_json::Value = serde_json::from_str(&line)
        .with_context(|| format!("the gateway's ready line {line:?}"))?;
    let url = ready["gateway"]
        .as_str()
        .with_context(|| format!("no URL in the gateway's ready line {line:?}"))?;
    Ok((url.to_string(), child))
}

/// Every path of [`ReadPath::ALL`] measured by `run` in turn, twice over (so that drift over
/// the runs touches all), printed unless `quiet`.
async fn alternating<Run, Fut>(
    label: &str,
    quiet: bool,
    run: Run,
) -> Vec<(ReadPath, domicile_bench::load::LoadResult)>
where
    Run: Fn(ReadPath) -> Fut,
    Fut: std::future::Future<Output = domicile_bench::load::LoadResult>,
{
    let mut runs = Vec::new();
    for _round in 0..2 {
        for read in ReadPath::ALL {
            let r = run(read).await;
            if !quiet {
                eprintln!("{label} {read:?} {r:?}");
            }
            runs.push((read, r));
        }
    }
    runs
}

type Figure = fn(&domicile_bench::load::LoadResult) -> f64;

/// The mean of `f` over the runs of `read`, in ms to the µs.
fn ms(runs: &[(ReadPath, domicile_bench::load::LoadResult)], read: ReadPath, f: Figure) -> f64 {
    (mean(runs, read, f) * 1000.0).round() / 1000.0
}

/// What `read` adds to the direct path's `f`, in ms to the µs.
fn added_ms(
    runs: &[(ReadPath, domicile_bench::load::LoadResult)],
    read: ReadPath,
    f: Figure,
) -> f64 {
    ((mean(runs, read, f) - mean(runs, ReadPath::Direct, f)) * 1000.0).round() / 1000.0
}

/// The mean of `f` over the runs of `read`.
fn mean(runs: &[(ReadPath, domicile_bench::load::LoadResult)], read: ReadPath, f: Figure) -> f64 {
    let v: Vec<f64> = runs
        .iter()
        .filter(|(p, _)| *p == read)
        .map(|(_, r)| f(r))
        .collect();
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Signs up one user of `market` through the gateway: (user, token).
async fn signup(http: &reqwest::Client, gateway: &str, market: &str) -> Result<(String, String)> {
    let s: serde_json::Value = http
        .post(format!("{gateway}/v1/signup"))
        .json(&serde_json::json!({ "market": market }))
        .send()
        .await?
        .json()
        .await?;
    Ok((
        s["user"].as_str().context("sign-up user")?.to_string(),
        s["token"].as_str().context("sign-up token")?.to_string(),
    ))
}

/// Cutovers of HK's shop, range by range from cn-beijing to ap-singapore, while writers keep
/// writing through the gateway; every acknowledged write is read back at the end.
async fn cutover(args: CutoverArgs) -> Result<()> {
    /// Keys each writer overwrites in turn.
    const KEYS: usize = 500;
    use domicile_client::region::RegionClient;
    use domicile_migrate::http_control::HttpControl;
    use domicile_migrate::wave::{self, Wave, WaveSpec};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    anyhow::ensure!(
        args.cutovers > 0 && args.writers > 0 && args.users > 0,
        "--cutovers, --writers and --users must be at least 1"
    );
    anyhow::ensure!(
        args.cutovers as u64 <= u64::from(domicile_core::BucketCount::DEFAULT.get()),
        "--cutovers must be at most the bucket count ({})",
        domicile_core::BucketCount::DEFAULT.get()
    );
    let dir = tempfile::Builder::new()
        .prefix("domicile-bench-cutover-")
        .tempdir_in(std::env::current_dir()?)?;
    let cluster = crate::cluster::Cluster::start(
        &domicile_core::reference::cluster_config(),
        dir.path(),
        "127.0.0.1:0",
    )
    .await?;
    let e = cluster.endpoints.clone();
    let admin = std::fs::read_to_string(&e.admin_token_file)?
        .trim()
        .to_string();
    let http = domicile_client::builder(&cluster.member, domicile_client::Alpn::Http1).build()?;
    let nodes = domicile_client::http_client(&cluster.member);
    let mut users = Vec::new();
    for _ in 0..args.users {
        let (u, t) = signup(&http, &e.gateway, "HK").await?;
        let r = http
            .put(format!("{}/v1/users/{u}/orders/seed", e.gateway))
            .bearer_auth(&t)
            .body("seed")
            .send()
            .await?;
        anyhow::ensure!(r.status().is_success(), "seed write: {}", r.status());
        users.push((u, t));
    }
    let users = Arc::new(users);
    let stop = Arc::new(AtomicBool::new(false));
    let failed = Arc::new(AtomicU64::new(0));
    let acknowledged_writes = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..args.writers)
        .map(|w| {
            let (http, gw, users, stop, failed, acks) = (
                http.clone(),
                e.gateway.clone(),
                users.clone(),
                stop.clone(),
                failed.clone(),
                acknowledged_writes.clone(),
            );
            tokio::spawn(async move {
                // key → (last acknowledged value, values tried after it whose outcome is unknown)
                let mut acked: std::collections::BTreeMap<
                    (usize, String),
                    (Option<String>, Vec<String>),
                > = Default::default();
                let mut i = 0usize;
                // A steady load: one write per writer every 5 ms (200/s each), not a flood. Each
                // writer overwrites its own KEYS keys in turn, so the moving range stays the same
                // size however many cutovers run, and every key has one writer.
                let mut pace = tokio::time::interval(std::time::Duration::from_millis(5));
                while !stop.load(Ordering::Relaxed) {
                    pace.tick().await;
                    let user = (w * 7919 + i) % users.len();
                    let (u, t) = &users[user];
                    let key = format!("w{w}-k{:04}", i % KEYS);
                    let value = format!("{key}-v{i}");
                    let slot = acked.entry((user, key.clone())).or_default();
                    match http
                        .put(format!("{gw}/v1/users/{u}/orders/{key}"))
                        .bearer_auth(t)
                        .body(value.clone())
                        .send()
                        .await
                    {
                        Ok(r) if r.status().is_success() => {
                            acks.fetch_add(1, Ordering::Relaxed);
                            *slot = (Some(value), Vec::new());
                        }
                        _ => {
                            slot.1.push(value);
                            failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    i += 1;
                }
                acked
            })
        })
        .collect();

    let control = domicile_client::control::ControlClient::new(e.control.clone(), nodes.clone());
    let service: domicile_core::ServiceName = "ecommerce".parse()?;
    let market: domicile_core::Market = "HK".parse()?;
    let mut windows = Vec::new();
    let (mut verified, mut moved) = (true, 0u64);
    let progress = if args.json {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(args.cutovers as u64)
    };
    let unlimited = domicile_migrate::throttle::Throttle::new(None);
    let n = args.cutovers as u32;
    for k in 0..args.cutovers {
        let table = control.current().await?;
        // Range k of `cutovers` equal parts of the market's buckets, each moved once, as the
        // waves of a plan do (moving one range back and forth instead measures the source's
        // purged-but-not-yet-compacted history, which a real move never revisits).
        let count = table.buckets.get();
        let first = (k as u32 * count / n) as u16;
        let last = ((k as u32 + 1) * count / n - 1) as u16;
        let row = table
            .placement
            .lookup(&service, market, domicile_core::Bucket(first))
            .context("HK shop placement")?
            .clone();
        let spec = WaveSpec {
            service: service.clone(),
            market,
            buckets: domicile_core::BucketRange { first, last },
            source: row.region.clone(),
            target: "ap-singapore".parse()?,
            epoch: row.epoch,
            rollback_window: std::time::Duration::ZERO,
        };
        let url =
            |r: &domicile_core::RegionId| table.url_of(r).map(str::to_string).context("region url");
        let mover = domicile_migrate::Mover {
            source: RegionClient::new(url(&spec.source)?, nodes.clone()),
            target: RegionClient::new(url(&spec.target)?, nodes.clone()),
            scope: spec.scope(),
            buckets: table.buckets,
            blob_collections: table.schema.blob_collections_of(&spec.scope().service),
        };
        let ctl = HttpControl {
            url: e.control.clone(),
            admin_token: admin.clone(),
            http: http.clone(),
            name: format!("bench-cutover-{k}"),
        };
        let mut w = Wave::new(spec);
        wave::run(&mut w, &mover, &ctl, &unlimited)
            .await
            .with_context(|| format!("cutover {k}"))?;
        verified &= w.verified;
        moved += w.records_copied;
        windows.push(w.write_unavailable_ms);
        progress.inc(1);
    }
    progress.finish_and_clear();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in writers {
        acked.extend(w.await?);
    }
    // Lost: a key whose stored value is not its last acknowledged one (nor one tried after it
    // whose outcome the writer could not know).
    let mut lost = 0u64;
    let mut acknowledged = 0u64;
    for ((user, key), (last, unknown)) in &acked {
        let Some(last) = last else { continue };
        acknowledged += 1;
        let (u, t) = &users[*user];
        let r = http
            .get(format!("{}/v1/users/{u}/orders/{key}", e.gateway))
            .bearer_auth(t)
            .send()
            .await?;
        let ok = r.status().is_success();
        let stored = r.text().await?;
        if !ok || (stored != *last && !unknown.contains(&stored)) {
            lost += 1;
        }
    }
    cluster.shutdown().await?;
    windows.sort_by(f64::total_cmp);
    let pick =
        |q: f64| windows[((q * windows.len() as f64).ceil() as usize).clamp(1, windows.len()) - 1];
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let report = serde_json::json!({
        "cutovers": windows.len(),
        "p50_ms": round3(pick(0.5)),
        "p99_ms": round3(pick(0.99)),
        "max_ms": round3(pick(1.0)),
        "writes_acknowledged": acknowledged_writes.load(Ordering::Relaxed),
        "keys_checked": acknowledged,
        "failed_requests": failed.load(Ordering::Relaxed),
        "lost_writes": lost,
        "verified": verified,
        "records_moved": moved,
        "machine": domicile_bench::machine::Machine::current(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

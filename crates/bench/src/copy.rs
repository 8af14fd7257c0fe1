//! `domicile bench copy`: a scope copied region to region over loopback (snapshot stream →
//! import, through both nodes' internal APIs), beside the target store's own import rate for the
//! same records in the same run. Either region may be on the embedded engine or on PostgreSQL;
//! when both are on PostgreSQL, the same rows are also moved the incumbent's way, `pg_dump
//! --format=custom | pg_restore` between the two servers, and timed in the same run.

use crate::machine::Machine;
use crate::store::{BenchError, ImportOrder};
use domicile_client::region::RegionClient;
use domicile_core::RegionId;
use domicile_migrate::Mover;
use domicile_pg_cluster::PgCluster;
use domicile_region::BoundNode;
use domicile_store::{
    EmbeddedOptions, EmbeddedStore, EncryptedStore, PostgresOptions, PostgresSpec, PostgresStore,
    RegionStore,
};
use domicile_wire::api::ScopeRequest;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const BATCH: u64 = 10_000;

/// Where a benchmark region keeps its store.
#[derive(Debug, Clone)]
pub enum CopyEngine {
    Embedded,
    /// A throwaway local cluster, started for the run.
    PostgresThrowaway,
    Postgres(PostgresSpec),
}

impl CopyEngine {
    /// `embedded`, `postgres` or a `postgres://` URL.
    pub fn parse(s: &str) -> Result<Self, BenchError> {
        match s {
            "embedded" => Ok(Self::Embedded),
            "postgres" => Ok(Self::PostgresThrowaway),
            url => Ok(Self::Postgres(PostgresSpec::parse(url).map_err(|e| {
                BenchError::Task(format!("{url}: expected embedded, postgres or a URL ({e})"))
            })?)),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Self::Embedded => "embedded-fjall",
            _ => "postgres",
        }
    }
}

/// Where the benchmark's two region nodes run.
#[derive(Debug, Clone)]
pub enum Nodes {
    /// In this process, sealing at rest as a cluster runs them (`true`), or not (`false`: the
    /// plain baseline of `bench encryption`).
    InProcess { encrypted: bool },
    /// Each its own `domicile region` process started from `exe` (sealing at rest), as a
    /// cluster runs them: each node's memory is then read alone.
    Processes { exe: PathBuf },
}

/// A region's store as the benchmark set it up (a throwaway cluster lives as long as this).
struct RegionStoreSetup {
    spec: String,
    postgres: Option<PostgresSpec>,
    _cluster: Option<PgCluster>,
}

async fn set_up(engine: &CopyEngine, region: &str) -> Result<RegionStoreSetup, BenchError> {
    let schema = region.replace('-', "_");
    let (spec, cluster) = match engine {
        CopyEngine::Embedded => {
            return Ok(RegionStoreSetup {
                spec: format!("embedded:{region}/store"),
                postgres: None,
                _cluster: None,
            });
        }
        CopyEngine::PostgresThrowaway => {
            let cluster = crate::store_postgres::throwaway_cluster().await?;
            (
                PostgresSpec::parse(&cluster.url("postgres"))?,
                Some(cluster),
            )
        }
        CopyEngine::Postgres(spec) => (spec.clone(), None),
    };
    let spec = spec.with_schema(&schema)?;
    let admin = crate::store_postgres::connect(&spec).await?;
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .map_err(|e| BenchError::Task(format!("drop {schema}: {e}")))?;
    Ok(RegionStoreSetup {
        spec: spec.to_string(),
        postgres: Some(spec),
        _cluster: cluster,
    })
}

#[derive(Debug, Clone, Serialize)]
pub struct CopyBenchReport {
    pub from: String,
    pub to: String,
    /// Both nodes sealing at rest (as every cluster runs them).
    pub encrypted: bool,
    /// `processes` (each node its own process) or `in-process`.
    pub nodes: &'static str,
    pub records: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub raw_import_records_per_s: f64,
    pub copy_vs_raw_import: f64,
    /// Embedded target with sealing nodes: the same records imported straight into a sealing
    /// store (the engine under `EncryptedStore`, a fresh keyring), no network or framing. It
    /// splits the gap to the raw rate into what sealing costs and what the move costs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealed_import_records_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub copy_vs_sealed_import: Option<f64>,
    /// PostgreSQL to PostgreSQL only: the same rows through `pg_dump -Fc | pg_restore`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pg_dump_restore_records_per_s: Option<f64>,
    /// `records_per_s / pg_dump_restore_records_per_s`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio: Option<f64>,
    pub verified: bool,
    /// Peak RSS (MiB) of this process during the copy: the mover, and with `in-process` nodes
    /// both nodes as well.
    pub peak_rss_mib_during_copy: Option<f64>,
    /// Peak RSS (MiB) of each node's own process during the copy (`processes` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib_source_node: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peak_rss_mib_target_node: Option<f64>,
    pub machine: Machine,
}

/// A running benchmark node.
enum RunningNode {
    /// Serving until the benchmark's stop fires; finishes when it has closed its store.
    InProcess(tokio::task::JoinHandle<()>),
    Process(Box<NodeProcess>),
}

/// A `domicile region` process (its stdout, which printed the ready line, kept open).
struct NodeProcess {
    child: tokio::process::Child,
    _stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl RunningNode {
    fn pid(&self) -> Option<String> {
        match self {
            Self::InProcess(_) => None,
            Self::Process(node) => node.child.id().map(|p| p.to_string()),
        }
    }

    async fn stop(self) -> Result<(), BenchError> {
        match self {
            Self::InProcess(served) => served.await.map_err(|e| BenchError::Task(e.to_string())),
            // Killed outright: its data is the benchmark's, thrown away after the run.
            Self::Process(mut node) => node
                .child
                .kill()
                .await
                .map_err(|e| BenchError::Task(format!("stop a region node: {e}"))),
        }
    }
}

/// The cluster config `text` with `region`'s store line set to `spec`.
fn store_line(text: String, region: &str, spec: &str) -> Result<String, BenchError> {
    let reference = format!("store = \"embedded:data/{region}/store\"");
    let line = format!("store = {}", toml::Value::String(spec.to_string()));
    let text = text.replace(&reference, &line);
    let config = domicile_core::ClusterConfig::from_toml(&text)
        .map_err(|e| BenchError::Task(format!("the nodes' config: {e}")))?;
    let set = config
        .regions
        .iter()
        .any(|r| r.id.as_str() == region && r.store == spec);
    set.then_some(text)
        .ok_or_else(|| BenchError::Task(format!("the reference config has no {reference}")))
}

/// `domicile region` for `region` of the config at `config`, on a free loopback port; returns
/// its URL once it has printed its ready line.
async fn spawn(
    exe: &Path,
    config: &Path,
    region: &str,
    dir: &Path,
) -> Result<(String, RunningNode), BenchError> {
    use tokio::io::AsyncBufReadExt;
    let failed = |e: std::io::Error| BenchError::Task(format!("start {region}'s node: {e}"));
    let log = std::fs::File::create(dir.join(format!("{region}.log"))).map_err(failed)?;
    let mut child = tokio::process::Command::new(exe)
        .arg("region")
        .arg("--config")
        .arg(config)
        .args(["--region", region, "--listen", "127.0.0.1:0", "--tls-dir"])
        .arg(dir.join("tls"))
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(failed)?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Task(format!("{region}'s node: no stdout")))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let Some(line) = lines.next_line().await.map_err(failed)? else {
        return Err(BenchError::Task(format!(
            "{region}'s node exited before it served; see {}",
            dir.join(format!("{region}.log")).display()
        )));
    };
    #[derive(serde::Deserialize)]
    struct Ready {
        url: String,
    }
    let ready: Ready = serde_json::from_str(&line)
        .map_err(|e| BenchError::Task(format!("{region}'s ready line {line:?}: {e}")))?;
    Ok((
        ready.url,
        RunningNode::Process(Box::new(NodeProcess {
            child,
            _stdout: lines,
        })),
    ))
}

/// A region node in this process, serving until `stop` fires.
async fn start(
    config: &domicile_core::ClusterConfig,
    region: &str,
    store: &str,
    dir: &Path,
    tls: &domicile_tls::RoleTls,
    stop: &tokio::sync::watch::Sender<bool>,
    encrypted: bool,
) -> Result<(String, RunningNode), BenchError> {
    let id = RegionId::new(region).map_err(|e| BenchError::Task(e.to_string()))?;
    let state = if encrypted {
        domicile_region::open(config, &id, dir).await?
    } else {
        // The baseline of `bench encryption`: the same node with nothing sealed.
        let engine =
            domicile_store::open_store(&domicile_store::StoreSpec::parse(store, dir)?).await?;
        let blobs = domicile_store::BlobStore::local(&dir.join(format!("{region}-blobs")))
            .map_err(|e| BenchError::Task(e.to_string()))?;
        domicile_region::NodeState::new(config, id, engine, blobs).await?
    };
    // A target pulls from its source as a cluster member.
    let node = BoundNode::bind(state.with_peer_transport(&tls.client), "127.0.0.1:0").await?;
    let url = format!("{}://{}", tls.server.scheme(), node.local_addr()?);
    let mut rx = stop.subscribe();
    let tls = tls.server.clone();
    let served = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = node.serve(&tls, stopped).await {
            eprintln!("region node: {e}");
        }
    });
    Ok((url, RunningNode::InProcess(served)))
}

/// Copies `records` records between two region nodes run as `nodes` says.
pub async fn run_copy_bench(
    records: u64,
    from: &CopyEngine,
    to: &CopyEngine,
    dir: &Path,
    nodes: &Nodes,
) -> Result<CopyBenchReport, BenchError> {
    let encrypted = match nodes {
        Nodes::InProcess { encrypted } => *encrypted,
        Nodes::Processes { .. } => true,
    };
    let order = ImportOrder::new(records);
    let source_store = set_up(from, "cn-beijing").await?;
    let target_store = set_up(to, "ap-mumbai").await?;
    let scope = ScopeRequest {
        service: "ecommerce"
            .parse()
            .map_err(|e: domicile_core::IdError| BenchError::Task(e.to_string()))?,
        market: "IN"
            .parse()
            .map_err(|e: domicile_core::IdError| BenchError::Task(e.to_string()))?,
        buckets: domicile_core::BucketSet::from_ranges([domicile_core::BucketCount::DEFAULT.all()]),
    };
    // Over mutual TLS, as a migration's mover calls region nodes.
    let certs = dir.join("tls");
    let tls_error = |e: domicile_tls::TlsError| BenchError::Task(e.to_string());
    domicile_tls::certs::ensure(&certs).map_err(tls_error)?;
    let region_tls =
        domicile_tls::RoleTls::load(&certs, domicile_tls::Role::Region).map_err(tls_error)?;
    let client = domicile_tls::RoleTls::load(&certs, domicile_tls::Role::Client)
        .map_err(tls_error)?
        .client;
    let http = domicile_client::http_client(&client);
    let (stop, _) = tokio::sync::watch::channel(false);
    // The reference cluster with both regions' stores set: parsed for nodes in this process,
    // written out for `domicile region` processes.
    let config_text = [
        ("cn-beijing", &source_store.spec),
        ("ap-mumbai", &target_store.spec),
    ]
    .iter()
    .try_fold(
        domicile_core::reference::CLUSTER_TOML.to_string(),
        |text, (region, spec)| store_line(text, region, spec),
    )?;
    let ((source_url, source_node), (target_url, target_node)) = match nodes {
        Nodes::InProcess { encrypted } => {
            let config = domicile_core::ClusterConfig::from_toml(&config_text)
                .map_err(|e| BenchError::Task(format!("the nodes' config: {e}")))?;
            let node =
                |region, store| start(&config, region, store, dir, &region_tls, &stop, *encrypted);
            (
                node("cn-beijing", &source_store.spec).await?,
                node("ap-mumbai", &target_store.spec).await?,
            )
        }
        Nodes::Processes { exe } => {
            let path = dir.join("cluster.toml");
            std::fs::write(&path, config_text)
                .map_err(|e| BenchError::Task(format!("{}: {e}", path.display())))?;
            // One after the other: the first makes the keyring file both share.
            let source = spawn(exe, &path, "cn-beijing", dir).await?;
            let target = spawn(exe, &path, "ap-mumbai", dir).await?;
            (source, target)
        }
    };
    let source = RegionClient::new(source_url, http.clone());
    let target = RegionClient::new(target_url, http);
    let mut start_at = 0;
    while start_at < records {
        let len = BATCH.min(records - start_at);
        source.import(&scope, &order.batch(start_at, len)?).await?;
        start_at += len;
    }

    let mover = Mover {
        source,
        target,
        blob_collections: domicile_core::reference::cluster_config()
            .schema
            .blob_collections_of(&scope.service),
        scope,
        buckets: domicile_core::BucketCount::DEFAULT,
    };
    let node_pids = [source_node.pid(), target_node.pid()];
    let reset = crate::machine::reset_peak_rss()
        && node_pids
            .iter()
            .flatten()
            .all(|pid| crate::machine::reset_peak_rss_of(pid));
    let copied = mover.copy(|_| {}).await?;
    let peak_of = |pid: &Option<String>| {
        pid.as_deref()
            .filter(|_| reset)
            .and_then(crate::machine::peak_rss_mib_of)
            .map(|m| (m * 10.0).round() / 10.0)
    };
    let (peak_source, peak_target) = (peak_of(&node_pids[0]), peak_of(&node_pids[1]));
    let peak_rss = if reset {
        crate::machine::peak_rss_mib()
    } else {
        None
    };
    let verified = mover.verify().await?.equal();
    drop(mover);
    stop.send_replace(true);
    for node in [source_node, target_node] {
        node.stop().await?;
    }

    let dump_restore = match (&source_store.postgres, &target_store.postgres) {
        (Some(source), Some(target)) => Some(pg_dump_restore(source, target, records).await?),
        _ => None,
    };

    // The target store's own import rate for the same records, no network, no framing.
    let raw: Arc<dyn RegionStore> = match &target_store.postgres {
        None => Arc::new(EmbeddedStore::open(
            &dir.join("raw-import"),
            EmbeddedOptions::default(),
        )?),
        Some(spec) => Arc::new(
            PostgresStore::open(
                &spec.with_schema("domicile_bench_raw_import")?,
                PostgresOptions::default(),
            )
            .await?,
        ),
    };
    let elapsed = timed_import(raw.as_ref(), &order, records).await?;
    drop(raw);
    let sealed_rate = match (&target_store.postgres, encrypted) {
        (None, true) => {
            let dir = dir.join("sealed-import");
            let engine: Arc<dyn RegionStore> = Arc::new(EmbeddedStore::open(
                &dir.join("engine"),
                EmbeddedOptions::default(),
            )?);
            let sealed =
                EncryptedStore::with_keyring_file(engine, &dir.join("keyring.json"), "ap-mumbai")?;
            let elapsed = timed_import(&sealed, &order, records).await?;
            Some(records as f64 / elapsed.as_secs_f64())
        }
        _ => None,
    };
    if let Some(spec) = &target_store.postgres {
        let admin = crate::store_postgres::connect(spec).await?;
        for schema in ["domicile_bench_raw_import", "cn_beijing", "ap_mumbai"] {
            let _ = admin
                .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .await;
        }
    }
    if let Some(spec) = &source_store.postgres {
        let admin = crate::store_postgres::connect(spec).await?;
        let _ = admin
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", spec.schema()))
            .await;
    }
    let raw_rate = records as f64 / elapsed.as_secs_f64();
    let rate = copied.records as f64 / copied.seconds;
    let dump_rate = dump_restore.map(|secs| records as f64 / secs);
    Ok(CopyBenchReport {
        from: from.name().into(),
        to: to.name().into(),
        encrypted,
        nodes: match nodes {
            Nodes::InProcess { .. } => "in-process",
            Nodes::Processes { .. } => "processes",
        },
        records: copied.records,
        records_per_s: rate.round(),
        mb_per_s: (copied.bytes as f64 / (1 << 20) as f64 / copied.seconds * 10.0).round() / 10.0,
        raw_import_records_per_s: raw_rate.round(),
        copy_vs_raw_import: (rate / raw_rate * 100.0).round() / 100.0,
        sealed_import_records_per_s: sealed_rate.map(f64::round),
        copy_vs_sealed_import: sealed_rate.map(|s| (rate / s * 100.0).round() / 100.0),
        pg_dump_restore_records_per_s: dump_rate.map(f64::round),
        ratio: dump_rate.map(|d| (rate / d * 100.0).round() / 100.0),
        verified,
        peak_rss_mib_during_copy: peak_rss.map(|m| (m * 10.0).round() / 10.0),
        peak_rss_mib_source_node: peak_source,
        peak_rss_mib_target_node: peak_target,
        machine: Machine::current(),
    })
}

/// Imports the benchmark's `records` into `store` in its batches; the time spent importing.
async fn timed_import(
    store: &dyn RegionStore,
    order: &ImportOrder,
    records: u64,
) -> Result<Duration, BenchError> {
    let mut elapsed = Duration::ZERO;
    let mut start_at = 0;
    while start_at < records {
        let len = BATCH.min(records - start_at);
        let batch = order.batch(start_at, len)?;
        let t = Instant::now();
        store.import(batch).await?;
        elapsed += t.elapsed();
        start_at += len;
    }
    Ok(elapsed)
}

/// Moves the source region's records table to a fresh database on the target's server with
/// `pg_dump --format=custom | pg_restore` (table, primary key and all); returns the seconds.
async fn pg_dump_restore(
    source: &PostgresSpec,
    target: &PostgresSpec,
    records: u64,
) -> Result<f64, BenchError> {
    const DATABASE: &str = "domicile_bench_restore";
    let bindir = domicile_pg_cluster::bindir().map_err(|e| BenchError::Task(e.to_string()))?;
    let admin = crate::store_postgres::connect(target).await?;
    let sql_err = |e: tokio_postgres::Error| BenchError::Task(format!("restore database: {e}"));
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
        .await
        .map_err(sql_err)?;
    admin
        .batch_execute(&format!("CREATE DATABASE {DATABASE}"))
        .await
        .map_err(sql_err)?;
    let conninfo = |spec: &PostgresSpec, db: Option<&str>| -> Result<String, BenchError> {
        let (host, port, user, dbname) = server(spec)?;
        let dbname = db.map_or(dbname, str::to_string);
        Ok(format!(
            "host={host} port={port} user={user} dbname={dbname}"
        ))
    };
    let (from, to) = (conninfo(source, None)?, conninfo(target, Some(DATABASE))?);
    let schema = source.schema().to_string();
    let restore_spec = PostgresSpec::parse(&target_url(target, DATABASE)?)?;
    let restore_db = crate::store_postgres::connect(&restore_spec).await?;
    restore_db
        .batch_execute(&format!("CREATE SCHEMA {schema}"))
        .await
        .map_err(sql_err)?;
    drop(restore_db);
    let script = format!(
        "set -o pipefail; '{dump}' --format=custom --table='{schema}.records' --dbname=\"$FROM\" \
         | '{restore}' --dbname=\"$TO\" --no-owner --exit-on-error",
        dump = bindir.join("pg_dump").display(),
        restore = bindir.join("pg_restore").display(),
    );
    let started = Instant::now();
    let out = tokio::process::Command::new("bash")
        .arg("-c")
        .arg(&script)
        .env("FROM", &from)
        .env("TO", &to)
        .output()
        .await
        .map_err(|e| BenchError::Task(format!("run pg_dump | pg_restore: {e}")))?;
    let secs = started.elapsed().as_secs_f64();
    if !out.status.success() {
        return Err(BenchError::Task(format!(
            "pg_dump | pg_restore failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    // Check that the rows arrived, so the baseline cannot be fast by doing nothing.
    let restored = crate::store_postgres::connect(&restore_spec).await?;
    let n: i64 = restored
        .query_one(&format!("SELECT count(*) FROM {schema}.records"), &[])
        .await
        .map_err(sql_err)?
        .get(0);
    drop(restored);
    if u64::try_from(n).ok() != Some(records) {
        return Err(BenchError::Scan {
            got: u64::try_from(n).unwrap_or(0),
            expected: records,
        });
    }
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {DATABASE}"))
        .await
        .map_err(sql_err)?;
    Ok(secs)
}

/// `spec`'s server: host, port, user and database (libpq's defaults where unset).
fn server(spec: &PostgresSpec) -> Result<(String, u16, String, String), BenchError> {
    let config = spec.config()?;
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        _ => "127.0.0.1".to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres").to_string();
    let dbname = config.get_dbname().unwrap_or("postgres").to_string();
    Ok((host, port, user, dbname))
}

/// `spec`'s server with another database, as a URL.
fn target_url(spec: &PostgresSpec, database: &str) -> Result<String, BenchError> {
    let (host, port, user, _) = server(spec)?;
    Ok(format!("postgres://{user}@{host}:{port}/{database}"))
}

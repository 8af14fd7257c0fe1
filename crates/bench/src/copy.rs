//! `domicile bench copy`: a scope copied region to region over loopback (snapshot stream →
//! import, through both nodes' internal APIs), beside the target store's own import rate for the
//! same records in the same run.

use crate::machine::Machine;
use crate::store::{BenchError, ImportOrder};
use domicile_client::region::RegionClient;
use domicile_core::RegionId;
use domicile_migrate::Mover;
use domicile_region::BoundNode;
use domicile_store::{EmbeddedOptions, EmbeddedStore, RegionStore};
use domicile_wire::api::ScopeRequest;
use serde::Serialize;
use std::path::Path;
use std::time::{Duration, Instant};

const BATCH: u64 = 10_000;

#[derive(Debug, Clone, Serialize)]
pub struct CopyBenchReport {
    pub records: u64,
    pub records_per_s: f64,
    pub mb_per_s: f64,
    pub raw_import_records_per_s: f64,
    pub copy_vs_raw_import: f64,
    pub verified: bool,
    /// Peak RSS (MiB) of the process — source node, target node and mover — during the copy.
    pub peak_rss_mib_during_copy: Option<f64>,
    pub machine: Machine,
}

/// A region node serving until `stop` fires; the handle finishes when it has closed its store.
async fn start(
    region: &str,
    dir: &Path,
    stop: &tokio::sync::watch::Sender<bool>,
) -> Result<(String, tokio::task::JoinHandle<()>), BenchError> {
    let config = domicile_core::reference::cluster_config();
    let id = RegionId::new(region).map_err(|e| BenchError::Task(e.to_string()))?;
    let state = domicile_region::open(&config, &id, dir).await?;
    let node = BoundNode::bind(state, "127.0.0.1:0").await?;
    let url = format!("http://{}", node.local_addr()?);
    let mut rx = stop.subscribe();
    let served = tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = node.serve(stopped).await {
            eprintln!("region node: {e}");
        }
    });
    Ok((url, served))
}

pub async fn run_copy_bench(records: u64, dir: &Path) -> Result<CopyBenchReport, BenchError> {
    let order = ImportOrder::new(records);
    let scope = ScopeRequest {
        service: "ecommerce"
            .parse()
            .map_err(|e: domicile_core::IdError| BenchError::Task(e.to_string()))?,
        market: "IN"
            .parse()
            .map_err(|e: domicile_core::IdError| BenchError::Task(e.to_string()))?,
        buckets: domicile_core::BucketSet::from_ranges([domicile_core::BucketCount::DEFAULT.all()]),
    };
    let http = domicile_client::http_client();
    let (stop, _) = tokio::sync::watch::channel(false);
    let (source_url, source_node) = start("cn-beijing", dir, &stop).await?;
    let (target_url, target_node) = start("ap-mumbai", dir, &stop).await?;
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
        scope,
        buckets: domicile_core::BucketCount::DEFAULT,
    };
    let reset = crate::machine::reset_peak_rss();
    let copied = mover.copy(|_| {}).await?;
    let peak_rss = if reset {
        crate::machine::peak_rss_mib()
    } else {
        None
    };
    let verified = mover.verify().await?.equal();
    drop(mover);
    stop.send_replace(true);
    for node in [source_node, target_node] {
        node.await.map_err(|e| BenchError::Task(e.to_string()))?;
    }

    // The target store's own import rate for the same records, no network, no framing.
    let raw = EmbeddedStore::open(&dir.join("raw-import"), EmbeddedOptions::default())?;
    let mut elapsed = Duration::ZERO;
    let mut start_at = 0;
    while start_at < records {
        let len = BATCH.min(records - start_at);
        let batch = order.batch(start_at, len)?;
        let t = Instant::now();
        raw.import(batch).await?;
        elapsed += t.elapsed();
        start_at += len;
    }
    let raw_rate = records as f64 / elapsed.as_secs_f64();
    let rate = copied.records as f64 / copied.seconds;
    Ok(CopyBenchReport {
        records: copied.records,
        records_per_s: rate.round(),
        mb_per_s: (copied.bytes as f64 / (1 << 20) as f64 / copied.seconds * 10.0).round() / 10.0,
        raw_import_records_per_s: raw_rate.round(),
        copy_vs_raw_import: (rate / raw_rate * 100.0).round() / 100.0,
        verified,
        peak_rss_mib_during_copy: peak_rss.map(|m| (m * 10.0).round() / 10.0),
        machine: Machine::current(),
    })
}

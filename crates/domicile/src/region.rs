//! `domicile region`: run one region node from the cluster config.

use anyhow::{Context, Result};
use clap::Args;
use domicile_core::{ClusterConfig, RegionId};
use domicile_region::BoundNode;
use std::path::PathBuf;

#[derive(Args)]
pub struct RegionArgs {
    /// The cluster config (TOML); see examples/reference-cluster.toml.
    #[arg(long)]
    config: PathBuf,
    /// Which of the config's regions this node serves.
    #[arg(long)]
    region: String,
    /// Listen address, overriding the region's `listen` (port 0 picks a free port).
    #[arg(long)]
    listen: Option<String>,
    /// The control plane's URL: the node then follows its policy versions.
    #[arg(long)]
    control: Option<String>,
    /// Once serving, also write `{"region","url"}` as JSON to this file (it is always printed
    /// as one line on stdout).
    #[arg(long)]
    ready_file: Option<PathBuf>,
    #[command(flatten)]
    tls: crate::certs::TlsArgs,
}

/// Reads and validates a cluster config; returns it with the folder its paths are relative to.
pub fn load_config(path: &std::path::Path) -> Result<(ClusterConfig, PathBuf)> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("read config {}", path.display()))?;
    let config = ClusterConfig::from_toml(&text)
        .with_context(|| format!("load config {}", path.display()))?;
    let base = path.parent().map(PathBuf::from).unwrap_or_default();
    Ok((config, base))
}

pub async fn run(args: RegionArgs) -> Result<()> {
    let (cluster, base) = load_config(&args.config)?;
    let tls = args.tls.load(domicile_tls::Role::Region)?;
    let region = RegionId::new(args.region.as_str()).context("parse --region")?;
    let listen = match &args.listen {
        Some(l) => l.clone(),
        None => cluster
            .region(&region)
            .map(|r| r.listen.clone())
            .unwrap_or_default(),
    };
    let state = domicile_region::open(&cluster, &region, &base)
        .await
        .with_context(|| format!("open region {region}"))?
        // As a move's target it pulls from the source as a cluster member.
        .with_peer_transport(&tls.client);
    let node = BoundNode::bind(state, &listen).await?;
    let url = format!("{}://{}", tls.server.scheme(), node.local_addr()?);
    let ready = serde_json::json!({ "region": region, "url": url });
    if let Some(path) = &args.ready_file {
        std::fs::write(path, serde_json::to_vec_pretty(&ready)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    println!("{ready}");
    tracing::info!(%region, %url, "ready");
    let follower = args.control.clone().map(|control| {
        let client = domicile_client::control::ControlClient::new(
            control,
            domicile_client::http_client(&tls.client),
        );
        tokio::spawn(domicile_region::follow_policy(node.state(), client))
    });
    node.serve(&tls.server, shutdown_signal()).await?;
    if let Some(f) = follower {
        f.abort();
    }
    tracing::info!(%region, "stopped");
    Ok(())
}

/// Completes on Ctrl-C (SIGINT) or SIGTERM: the node then stops accepting, finishes in-flight
/// requests and closes its store.
pub async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C still works");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
    tracing::info!("shutting down");
}

//! `domicile up`: the whole cluster in one process, until Ctrl-C.

use crate::cluster::Cluster;
use crate::region::{load_config, shutdown_signal};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

#[derive(Args)]
pub struct UpArgs {
    /// The cluster config (default: the reference scenario of 2014, examples/reference-cluster.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where every store lives (the config's store paths are taken relative to it).
    #[arg(long, default_value = "domicile-data")]
    data_dir: PathBuf,
    /// Once everything serves, write `{"gateway","control","regions","admin_token_file"}` here.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// The gateway's listen address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
}

pub async fn run(args: UpArgs) -> Result<()> {
    let config = match &args.config {
        Some(path) => load_config(path)?.0,
        None => domicile_core::reference::cluster_config(),
    };
    let cluster = Cluster::start(&config, &args.data_dir, &args.listen).await?;
    let ready = serde_json::to_string_pretty(&cluster.endpoints)?;
    if let Some(path) = &args.ready_file {
        std::fs::write(path, &ready).with_context(|| format!("write {}", path.display()))?;
    }
    println!("{}", serde_json::to_string(&cluster.endpoints)?);
    tracing::info!(gateway = %cluster.endpoints.gateway, control = %cluster.endpoints.control, "domicile is up");
    shutdown_signal().await;
    cluster.shutdown().await
}

//! `domicile control` and `domicile gateway`: the control plane and the gateway as processes.

use crate::cluster::secret_file;
use crate::region::{load_config, shutdown_signal};
use anyhow::{Context, Result};
use clap::Args;
use domicile_control::ControlState;
use domicile_gateway::tokens::TokenIssuer;
use domicile_gateway::{GatewayConfig, GatewayState};
use domicile_store::{EmbeddedOptions, EmbeddedStore};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ControlArgs {
    /// The cluster config: regions (with their `listen` addresses as URLs), policy, placement.
    #[arg(long)]
    config: PathBuf,
    /// The control plane's own store.
    #[arg(long, default_value = "domicile-data/control")]
    data_dir: PathBuf,
    #[arg(long, default_value = "127.0.0.1:7300")]
    listen: String,
    /// The admin credential's file (created with a random token if missing).
    #[arg(long)]
    admin_token_file: Option<PathBuf>,
    #[command(flatten)]
    tls: crate::certs::TlsArgs,
}

pub async fn control(args: ControlArgs) -> Result<()> {
    let (config, _) = load_config(&args.config)?;
    let tls = args.tls.load(domicile_tls::Role::Control)?;
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let token_file = args
        .admin_token_file
        .clone()
        .unwrap_or_else(|| args.data_dir.join("admin.token"));
    let token = secret_file(&token_file, domicile_control::state::new_admin_token)?;
    let store = EmbeddedStore::open(&args.data_dir.join("store"), EmbeddedOptions::default())
        .context("open the control plane's store")?;
    let (ledger_key, ledger_public_key_file) = ledger_key(&args.data_dir)?;
    // A new routing table reaches regions at their configured `listen` over https; over explicit
    // plaintext, say http for those with a fixed port (the persisted table, and registrations
    // with PUT /admin/regions, are kept otherwise).
    let urls: BTreeMap<_, _> = match tls.client {
        domicile_client::ClientTransport::Tls(_) => BTreeMap::new(),
        domicile_client::ClientTransport::InsecurePlaintext => config
            .regions
            .iter()
            .filter(|r| !r.listen.ends_with(":0"))
            .map(|r| (r.id.clone(), format!("http://{}", r.listen)))
            .collect(),
    };
    let state = Arc::new(
        ControlState::open(Arc::new(store), &config, &urls, token)
            .await?
            .with_ledger_key(ledger_key)
            .with_transport(&tls.client),
    );
    let (listener, addr) = domicile_control::bind(&args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let ready = serde_json::json!({
        "control": format!("{}://{addr}", tls.server.scheme()),
        "admin_token_file": token_file,
        "ledger_public_key_file": ledger_public_key_file,
    });
    // A run that was cut short (a crash, a restart) goes on from its last checkpoint.
    domicile_control::migration::api::resume(&state)
        .await
        .context("resume the saved migration")?;
    println!("{ready}");
    tracing::info!(%addr, "control plane serving");
    let closing = state.clone();
    domicile_control::serve(listener, state, &tls.server, async move {
        shutdown_signal().await;
        closing.close();
    })
    .await?;
    Ok(())
}

/// The ledger's signing key in `dir` (`ledger.key`, 0600; created on the first start) and the
/// file its public key is published in beside it (`ledger.pub`).
pub fn ledger_key(dir: &std::path::Path) -> Result<(domicile_control::ledger::LedgerKey, PathBuf)> {
    let public = dir.join("ledger.pub");
    let key = domicile_control::ledger::LedgerKey::load_or_create(&dir.join("ledger.key"), &public)
        .context("load the ledger signing key")?;
    Ok((key, public))
}

#[derive(Args)]
pub struct GatewayArgs {
    /// The control plane's URL (the routing table is watched from there).
    #[arg(long)]
    control: String,
    #[arg(long, default_value = "127.0.0.1:7400")]
    listen: String,
    /// The token signing key's file (created if missing; keep it to keep tokens valid).
    #[arg(long, default_value = "domicile-data/gateway.key")]
    key_file: PathBuf,
    /// Milliseconds a call is held while its range is cut over, before 503.
    #[arg(long, default_value_t = 2000)]
    hold_ms: u64,
    /// The HTTP spoken to region nodes: `http1`, a pool of keep-alive connections (measured
    /// faster on loopback, decision 0004), or `http2`, calls multiplexed over TLS (ALPN `h2`),
    /// for nodes across long round trips.
    #[arg(long, value_enum, default_value_t = NodeHttpArg::Http1)]
    node_http: NodeHttpArg,
    #[command(flatten)]
    tls: crate::certs::TlsArgs,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum NodeHttpArg {
    Http1,
    Http2,
}

impl NodeHttpArg {
    /// As written on the command line.
    pub fn name(self) -> &'static str {
        match self {
            NodeHttpArg::Http1 => "http1",
            NodeHttpArg::Http2 => "http2",
        }
    }
}

pub async fn gateway(args: GatewayArgs) -> Result<()> {
    let tls = args.tls.load(domicile_tls::Role::Gateway)?;
    if let Some(parent) = args.key_file.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
    }
    let tokens = TokenIssuer::load_or_create(&args.key_file, Duration::from_secs(24 * 3600))?;
    let config = GatewayConfig {
        hold: Duration::from_millis(args.hold_ms),
        node_http: match args.node_http {
            NodeHttpArg::Http1 => domicile_gateway::NodeHttp::Http1Pool,
            NodeHttpArg::Http2 => domicile_gateway::NodeHttp::Http2,
        },
        ..GatewayConfig::default()
    };
    let state = GatewayState::start(
        &args.control,
        tokens,
        config,
        &tls.client,
        domicile_gateway::LocalNodes::default(),
    )
    .await
    .context("fetch the routing table")?;
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!(
        "{}",
        serde_json::json!({ "gateway": format!("{}://{addr}", tls.server.scheme()) })
    );
    tracing::info!(%addr, "gateway serving");
    let router = domicile_gateway::router(state);
    domicile_http::serve(listener, router, &tls.server, shutdown_signal()).await?;
    Ok(())
}

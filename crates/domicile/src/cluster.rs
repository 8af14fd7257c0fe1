//! Starting every role in one process (`domicile up`, `domicile demo`): one region node per
//! region (each with its own store folder and loopback listener), the control plane and the
//! gateway — all real servers on real sockets, wired by the URLs they bound, over TLS: the
//! certificates are made in `DATA_DIR/tls` on first start (as `domicile certs init` would).

use anyhow::{Context, Result};
use domicile_control::ControlState;
use domicile_core::{ClusterConfig, RegionId};
use domicile_gateway::tokens::TokenIssuer;
use domicile_gateway::{GatewayConfig, GatewayState, LocalNodes};
use domicile_region::BoundNode;
use domicile_store::{EmbeddedOptions, EmbeddedStore};
use domicile_tls::{ClientTransport, Role, RoleTls};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Where everything of a running cluster answers.
#[derive(Debug, Clone, Serialize)]
pub struct Endpoints {
    pub gateway: String,
    pub control: String,
    pub regions: BTreeMap<RegionId, String>,
    /// The file holding the admin credential (`Authorization: Bearer <contents>` on `/admin`).
    pub admin_token_file: PathBuf,
    /// The ledger's public key (checkpoints are signed with its private half, `ledger.key`).
    pub ledger_public_key_file: PathBuf,
    /// The cluster CA's certificate: what clients trust (`curl --cacert`).
    pub ca_file: PathBuf,
    /// The certificate folder (`domicile certs init` layout): `client.pem`/`client.key` reach
    /// region nodes and `/internal` directly.
    pub tls_dir: PathBuf,
}

pub struct Cluster {
    pub endpoints: Endpoints,
    /// A client outside the cluster: trusts the CA, presents no certificate (the demo's users).
    pub outside: ClientTransport,
    /// A tool inside the cluster: presents the `client` certificate (reaches region nodes).
    pub member: ClientTransport,
    control: Arc<ControlState>,
    /// Stops the gateway and the region nodes.
    stop: watch::Sender<bool>,
    tasks: JoinSet<Result<()>>,
    /// Stops the control plane's server, once the servers that watch it are down.
    stop_control: watch::Sender<bool>,
    control_served: tokio::task::JoinHandle<Result<()>>,
}

/// Reads a secret file, or creates it (0600) with `make()`.
pub fn secret_file(path: &Path, make: impl FnOnce() -> String) -> Result<String> {
    if path.exists() {
        return Ok(std::fs::read_to_string(path)
            .with_context(|| format!("read {}", path.display()))?
            .trim()
            .to_string());
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let value = make();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    f.write_all(value.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("write {}", path.display()))?;
    Ok(value)
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

impl Cluster {
    /// Starts everything under `data_dir` (store paths in the config are taken relative to it).
    pub async fn start(
        config: &ClusterConfig,
        data_dir: &Path,
        gateway_listen: &str,
    ) -> Result<Cluster> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("create {}", data_dir.display()))?;
        let tls_dir = data_dir.join("tls");
        if domicile_tls::certs::ensure(&tls_dir)? {
            tracing::info!(dir = %tls_dir.display(), "made the cluster CA and certificates");
        }
        let tls = |role| RoleTls::load(&tls_dir, role);
        let (region_tls, control_tls, gateway_tls) =
            (tls(Role::Region)?, tls(Role::Control)?, tls(Role::Gateway)?);
        let member = tls(Role::Client)?.client;
        let ca_file = tls_dir.join(domicile_tls::certs::CA_CERT);
        let outside = domicile_tls::trust_ca(&ca_file)?;
        let (stop, _) = watch::channel(false);
        let (stop_control, _) = watch::channel(false);
        let mut tasks = JoinSet::new();

        // Region nodes first: their bound addresses go into the routing table.
        let mut bound = Vec::new();
        let mut urls = BTreeMap::new();
        let mut local = LocalNodes::default();
        for region in &config.regions {
            let state = domicile_region::open(config, &region.id, data_dir)
                .await
                .with_context(|| format!("open region {}", region.id))?
                .with_peer_transport(&region_tls.client);
            let node = BoundNode::bind(state, "127.0.0.1:0").await?;
            let url = format!("https://{}", node.local_addr()?);
            // The gateway calls this node in-process (decision 0017); it still serves its URL
            // for the control plane, movers, other nodes and tools.
            local = local.with(
                region.id.clone(),
                url.clone(),
                domicile_region::router(node.state()),
            );
            urls.insert(region.id.clone(), url);
            bound.push(node);
        }

        let control_dir = data_dir.join("control");
        std::fs::create_dir_all(&control_dir)?;
        let control_store = EmbeddedStore::open(&control_dir, EmbeddedOptions::default())
            .context("open the control plane's store")?;
        let admin_token_file = data_dir.join("admin.token");
        let admin_token = secret_file(&admin_token_file, domicile_control::state::new_admin_token)?;
        let (ledger_key, ledger_public_key_file) = crate::roles::ledger_key(data_dir)?;
        let control = Arc::new(
            ControlState::open(Arc::new(control_store), config, &urls, admin_token.clone())
                .await?
                .with_ledger_key(ledger_key)
                .with_transport(&control_tls.client),
        );
        let (listener, control_addr) = domicile_control::bind("127.0.0.1:0").await?;
        let control_url = format!("https://{control_addr}");
        let rx = stop_control.subscribe();
        let served = control.clone();
        let transport = control_tls.server.clone();
        let control_served = tokio::spawn(async move {
            domicile_control::serve(listener, served, &transport, stopped(rx))
                .await
                .context("control plane")
        });

        for node in bound {
            let state = node.state();
            let client = domicile_client::control::ControlClient::new(
                control_url.clone(),
                domicile_client::http_client(&region_tls.client),
            );
            let follower = tokio::spawn(domicile_region::follow_policy(state, client));
            let rx = stop.subscribe();
            let transport = region_tls.server.clone();
            tasks.spawn(async move {
                let result = node.serve(&transport, stopped(rx)).await;
                follower.abort();
                result.context("region node")
            });
        }

        domicile_control::migration::api::resume(&control)
            .await
            .context("resume the saved migration")?;

        let gateway_url = spawn_gateway(
            data_dir,
            &control_url,
            &gateway_tls,
            local,
            gateway_listen,
            stop.subscribe(),
            &mut tasks,
        )
        .await?;

        Ok(Cluster {
            endpoints: Endpoints {
                gateway: gateway_url,
                control: control_url,
                regions: urls,
                admin_token_file,
                ledger_public_key_file,
                ca_file,
                tls_dir,
            },
            outside,
            member,
            control,
            stop,
            tasks,
            stop_control,
            control_served,
        })
    }

    /// Stops every server (in-flight requests finish) and waits for them.
    /// The control plane goes last: the gateway and the region nodes watch its routing table
    /// until they stop, and would otherwise report it unreachable on the way down.
    /// The first failure is the answer, and the control plane stops all the same.
    pub async fn shutdown(mut self) -> Result<()> {
        self.control.close();
        self.stop.send_replace(true);
        let mut failed = None;
        while let Some(done) = self.tasks.join_next().await {
            if let Err(e) = done.map_err(anyhow::Error::from).and_then(|served| served) {
                failed.get_or_insert(e);
            }
        }
        self.stop_control.send_replace(true);
        let control = self
            .control_served
            .await
            .map_err(anyhow::Error::from)
            .and_then(|served| served);
        match failed {
            Some(e) => Err(e),
            None => control,
        }
    }
}

/// Starts a gateway with the cluster's key on `listen`, serving until `stop`; its URL.
async fn spawn_gateway(
    data_dir: &Path,
    control_url: &str,
    tls: &RoleTls,
    local: LocalNodes,
    listen: &str,
    stop: watch::Receiver<bool>,
    tasks: &mut JoinSet<Result<()>>,
) -> Result<String> {
    let tokens = TokenIssuer::load_or_create(
        &data_dir.join("gateway.key"),
        Duration::from_secs(24 * 3600),
    )?;
    let gateway = GatewayState::start(
        control_url,
        tokens,
        GatewayConfig::default(),
        &tls.client,
        local,
    )
    .await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listen on {listen}"))?;
    let url = format!("https://{}", listener.local_addr()?);
    let transport = tls.server.clone();
    tasks.spawn(async move {
        let router = domicile_gateway::router(gateway);
        domicile_http::serve(listener, router, &transport, stopped(stop))
            .await
            .context("gateway")
    });
    Ok(url)
}

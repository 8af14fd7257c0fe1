//! The gateway's state: token issuer, the routing table (kept fresh by a watch), the pooled
//! HTTP/1.1 client to region nodes, the nodes in its own process, and its metrics.

use crate::local::LocalNodes;
use crate::tokens::TokenIssuer;
use domicile_client::control::ControlClient;
use domicile_wire::api::RoutingTable;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// How long a call is held while its range is being cut over before 503.
    pub hold: Duration,
    /// Largest record body buffered (so that it can be retried after a 421).
    pub max_record_bytes: u64,
    /// How calls reach region nodes in other processes.
    pub node_http: NodeHttp,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            hold: Duration::from_secs(2),
            max_record_bytes: 1 << 20,
            node_http: NodeHttp::Http1Pool,
        }
    }
}

/// The HTTP the gateway speaks to region nodes in other processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeHttp {
    /// A pool of HTTP/1.1 keep-alive connections per node: the default, measured faster on
    /// loopback and on shared cores (decision 0004).
    Http1Pool,
    /// HTTP/2, negotiated by ALPN over the cluster's TLS (prior knowledge over plaintext):
    /// calls multiplexed on pooled connections, for nodes across long round trips.
    Http2,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    pub method: String,
    pub status: u16,
}

/// How a call reached its region node.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HopLabels {
    /// `in_process` (the node runs in the gateway's process), `http1` or `http2` (the
    /// version a node in another process answered in), or `failed` (no node answered).
    pub hop: &'static str,
}

pub struct GatewayMetrics {
    pub registry: Registry,
    pub calls: Family<CallLabels, Counter>,
    /// Calls answered by an in-process node's router.
    pub forwarded_in_process: Counter,
    /// Calls answered by a node over HTTP/1.1.
    pub forwarded_http1: Counter,
    /// Calls answered by a node over HTTP/2.
    pub forwarded_http2: Counter,
    /// Calls that reached no node (connection refused or broken).
    pub forwards_failed: Counter,
    pub latency: Histogram,
    pub retries: Counter,
    pub holds: Counter,
    pub consent_changes: Family<ConsentLabels, Counter>,
    pub exports: Counter,
    pub erasures: Counter,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsentLabels {
    /// `grant` or `revoke`.
    pub change: String,
}

impl GatewayMetrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("domicile_gateway");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Histogram::new(exponential_buckets(0.000_05, 2.0, 18));
        let (retries, holds) = (Counter::default(), Counter::default());
        registry.register("calls", "Calls by method and status", calls.clone());
        let forwards = Family::<HopLabels, Counter>::default();
        registry.register(
            "forwards",
            "Calls forwarded to region nodes (retries included), by how they reached the node",
            forwards.clone(),
        );
        let hop = |hop| forwards.get_or_create(&HopLabels { hop }).clone();
        let (forwarded_in_process, forwarded_http1, forwarded_http2, forwards_failed) =
            (hop("in_process"), hop("http1"), hop("http2"), hop("failed"));
        registry.register(
            "call_seconds",
            "Call latency through the gateway",
            latency.clone(),
        );
        registry.register("retries", "Calls re-routed after a 421", retries.clone());
        registry.register("holds", "Calls held during a cutover", holds.clone());
        let consent_changes = Family::<ConsentLabels, Counter>::default();
        let (exports, erasures) = (Counter::default(), Counter::default());
        registry.register(
            "consent_changes",
            "Consent grants and revocations recorded in every service of their purpose",
            consent_changes.clone(),
        );
        registry.register("exports", "User exports started", exports.clone());
        registry.register(
            "erasures",
            "User erasures completed in every region",
            erasures.clone(),
        );
        Self {
            registry,
            calls,
            forwarded_in_process,
            forwarded_http1,
            forwarded_http2,
            forwards_failed,
            latency,
            retries,
            holds,
            consent_changes,
            exports,
            erasures,
        }
    }
}

pub struct GatewayState {
    pub tokens: TokenIssuer,
    pub config: GatewayConfig,
    pub(crate) table: watch::Receiver<Arc<RoutingTable>>,
    table_tx: Arc<watch::Sender<Arc<RoutingTable>>>,
    control: ControlClient,
    pub(crate) http: reqwest::Client,
    /// Region nodes in this process, called without a network hop.
    pub(crate) local: LocalNodes,
    pub metrics: GatewayMetrics,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for GatewayState {
    fn drop(&mut self) {
        // The watch would otherwise outlive the gateway, polling a control plane that is gone.
        self.watcher.abort();
    }
}

impl GatewayState {
    /// Fetches the table once, then keeps it fresh with a watch on the control plane. Calls to
    /// the nodes in `local` go straight into their routers; every other node is called over
    /// the network with `transport`.
    pub async fn start(
        control_url: &str,
        tokens: TokenIssuer,
        config: GatewayConfig,
        transport: &domicile_client::ClientTransport,
        local: LocalNodes,
    ) -> Result<Arc<Self>, domicile_client::ClientError> {
        let control = ControlClient::new(control_url, domicile_client::http_client(transport));
        let table = control.current().await?;
        let (tx, rx) = watch::channel(Arc::new(table));
        let tx = Arc::new(tx);
        let watcher = tokio::spawn(control.clone().watch(tx.clone()));
        // By default a pool of HTTP/1.1 keep-alive connections to each node, over mutual TLS:
        // on loopback they beat one multiplexed HTTP/2 connection (decision 0004), so ALPN
        // offers only `http/1.1`.
        let builder = match config.node_http {
            NodeHttp::Http1Pool => {
                domicile_client::builder(transport, domicile_client::Alpn::Http1)
                    .pool_max_idle_per_host(1024)
            }
            NodeHttp::Http2 => match transport {
                domicile_client::ClientTransport::Tls(_) => {
                    domicile_client::builder(transport, domicile_client::Alpn::H2Only)
                }
                domicile_client::ClientTransport::InsecurePlaintext => {
                    domicile_client::builder(transport, domicile_client::Alpn::Http1)
                        .http2_prior_knowledge()
                }
            },
        };
        let http = builder
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .unwrap_or_else(|_| domicile_client::http_client(transport));
        Ok(Arc::new(Self {
            tokens,
            config,
            table: rx,
            table_tx: tx,
            control,
            http,
            local,
            metrics: GatewayMetrics::new(),
            watcher,
        }))
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.borrow().clone()
    }

    /// Records an erasure or a consent revocation in the control plane's transfer ledger.
    /// The data is already gone when this is called; a failure says so, and a retry of the
    /// (idempotent) call records it.
    pub(crate) async fn record<B: domicile_wire::ledger::EventBody>(
        &self,
        id: String,
        body: &B,
    ) -> Result<u64, domicile_http::ApiError> {
        let event = domicile_wire::ledger::LedgerEvent::new(id, body)
            .map_err(|e| domicile_http::ApiError::Internal(format!("ledger event: {e}")))?;
        self.control.record_ledger_event(&event).await.map_err(|e| {
            domicile_http::ApiError::BadGateway(format!(
                "done, but the ledger did not record it ({e}); retry the call to record it"
            ))
        })
    }

    /// Asks the control plane for a newer table now (after a 421); true if one arrived.
    pub(crate) async fn refresh(&self) -> bool {
        let version = self.table().version;
        match self.control.table(version, Duration::ZERO).await {
            Ok(Some(table)) => domicile_client::control::publish(&self.table_tx, table),
            Ok(None) => false,
            Err(e) => {
                tracing::warn!(error = %e, "routing table refresh failed");
                false
            }
        }
    }

    /// Waits until the table changes or `until` passes.
    pub(crate) async fn table_change(&self, until: tokio::time::Instant) {
        let mut rx = self.table.clone();
        rx.mark_unchanged();
        let _ = tokio::time::timeout_at(until, rx.changed()).await;
    }
}

//! The control plane's state: the routing table, persisted in its store, with a version watch.

use bytes::Bytes;
use domicile_client::{ClientTransport, http_client};
use domicile_core::{ClusterConfig, RegionId};
use domicile_http::ApiError;
use domicile_store::{RegionStore, StoreError};
use domicile_wire::api::{RegionEndpoint, RoutingTable};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::sync::{Mutex, watch};

const TABLE_META: &str = "routing-table";

pub struct ControlState {
    pub(crate) store: Arc<dyn RegionStore>,
    table: watch::Sender<Arc<RoutingTable>>,
    /// Admin changes run one at a time (each pushes to region nodes before it commits).
    pub(crate) changes: Mutex<()>,
    pub(crate) admin_token: String,
    pub(crate) http: reqwest::Client,
    pub(crate) admin_changes: AtomicU64,
    /// Set when the control plane stops: long polls answer at once instead of holding it open.
    closing: watch::Sender<bool>,
    /// Ledger appends run one at a time (each reads the head it extends).
    pub(crate) ledger: Mutex<()>,
    /// Signs the ledger's checkpoints (`with_ledger_key`); without one, checkpoints are refused.
    pub(crate) ledger_key: Option<crate::ledger::LedgerKey>,
    /// The migration being run, if any (one at a time).
    pub(crate) migration: Mutex<Option<Arc<crate::migration::Engine>>>,
}

impl ControlState {
    /// Loads the persisted table, or builds version 1 from the cluster config, with the region
    /// URLs given (regions listening on port 0 are only known once bound).
    pub async fn open(
        store: Arc<dyn RegionStore>,
        cluster: &ClusterConfig,
        urls: &BTreeMap<RegionId, String>,
        admin_token: String,
    ) -> Result<Self, StoreError> {
        let table = match store.load_meta(TABLE_META).await? {
            Some(bytes) => {
                let mut table: RoutingTable = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("routing table: {e}")))?;
                // Addresses change between runs (port 0); everything else is the persisted truth.
                for region in &mut table.regions {
                    if let Some(url) = urls.get(&region.id) {
                        region.url.clone_from(url);
                    }
                }
                table
            }
            None => RoutingTable {
                version: 1,
                buckets: cluster.buckets,
                schema: cluster.schema.clone(),
                policy: cluster.policy.clone(),
                regions: cluster
                    .regions
                    .iter()
                    .map(|r| RegionEndpoint {
                        id: r.id.clone(),
                        jurisdiction: r.jurisdiction,
                        url: urls
                            .get(&r.id)
                            .cloned()
                            // Nodes serve TLS unless told otherwise (decision 0007).
                            .unwrap_or_else(|| format!("https://{}", r.listen)),
                    })
                    .collect(),
                placement: cluster.placement.clone(),
                overrides: Vec::new(),
            },
        };
        persist(store.as_ref(), &table).await?;
        let (tx, _) = watch::channel(Arc::new(table));
        Ok(Self {
            store,
            table: tx,
            changes: Mutex::new(()),
            admin_token,
            // Plaintext until `with_transport` gives it the cluster's TLS.
            http: http_client(&ClientTransport::InsecurePlaintext),
            admin_changes: AtomicU64::new(0),
            closing: watch::channel(false).0,
            ledger: Mutex::new(()),
            ledger_key: None,
            migration: Mutex::new(None),
        })
    }

    /// Signs the ledger's checkpoints with `key` (`LedgerKey::load_or_create` in the data dir).
    pub fn with_ledger_key(mut self, key: crate::ledger::LedgerKey) -> Self {
        self.ledger_key = Some(key);
        self
    }

    /// The public key the ledger's checkpoints are signed with, if any.
    pub fn ledger_public_key(&self) -> Option<&crate::ledger::VerifyingKey> {
        self.ledger_key
            .as_ref()
            .map(crate::ledger::LedgerKey::public)
    }

    /// An id for the admin credential that cannot be turned back into it (the first 16 hex
    /// digits of BLAKE3 of the token): who did something, in the ledger.
    pub fn admin_credential_id(&self) -> String {
        blake3::hash(self.admin_token.as_bytes()).to_hex()[..16].to_string()
    }

    /// Calls region nodes with `transport` (mutual TLS with the control plane's certificate).
    #[must_use]
    pub fn with_transport(mut self, transport: &ClientTransport) -> Self {
        self.http = http_client(transport);
        self
    }

    pub fn table(&self) -> Arc<RoutingTable> {
        self.table.borrow().clone()
    }

    /// Reads a checkpoint (a move's saved state) by name.
    pub async fn load_checkpoint(&self, name: &str) -> Result<Option<bytes::Bytes>, StoreError> {
        self.store.load_meta(&format!("checkpoint/{name}")).await
    }

    /// Durably saves a checkpoint by name.
    pub async fn save_checkpoint(&self, name: &str, value: bytes::Bytes) -> Result<(), StoreError> {
        self.store
            .store_meta(&format!("checkpoint/{name}"), value)
            .await
    }

    /// Ends every long poll now (before a graceful shutdown, which would wait for them).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    pub(crate) async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<RoutingTable>> {
        self.table.subscribe()
    }

    /// Persists `next` with the next version and publishes it to watchers.
    pub(crate) async fn commit(
        &self,
        mut next: RoutingTable,
    ) -> Result<Arc<RoutingTable>, ApiError> {
        next.version = self.table().version + 1;
        persist(self.store.as_ref(), &next).await?;
        let next = Arc::new(next);
        self.table.send_replace(next.clone());
        self.admin_changes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tracing::info!(version = next.version, "routing table committed");
        Ok(next)
    }
}

async fn persist(store: &dyn RegionStore, table: &RoutingTable) -> Result<(), StoreError> {
    let bytes = serde_json::to_vec(table).map_err(|e| StoreError::Corrupt(e.to_string()))?;
    store.store_meta(TABLE_META, Bytes::from(bytes)).await
}

/// A fresh random admin credential (256 bits, hex).
pub fn new_admin_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The URL of `region`'s node in `table`, or a 400 naming the unknown region.
pub(crate) fn url_of(table: &RoutingTable, region: &RegionId) -> Result<String, ApiError> {
    table.url_of(region).map(str::to_string).ok_or_else(|| {
        ApiError::bad(
            "unknown_region",
            format!("no region {region} in the routing table"),
        )
    })
}

//! A region node's shared state: its region, the cluster's rules, its store and ownership.

use crate::metrics::NodeMetrics;
use crate::ownership::{Change, OwnershipTable};
use bytes::Bytes;
use domicile_core::{
    BucketCount, BucketRange, ClusterConfig, Epoch, Limits, Market, Policy, RegionId, Schema,
    ServiceName,
};
use domicile_http::ApiError;
use domicile_store::{BlobStore, DataKeys, RegionStore, StoreError};
use domicile_wire::api::OwnedRange;
use std::sync::Arc;
use tokio::sync::RwLock;

/// The metadata name under which the ownership table is persisted.
const OWNERSHIP_META: &str = "ownership";

/// The ownership table as persisted (JSON, format 1).
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedOwnership {
    ranges: Vec<OwnedRange>,
    #[serde(default)]
    users: Vec<domicile_wire::api::OwnedUser>,
}

pub struct NodeState {
    pub region: RegionId,
    pub buckets: BucketCount,
    pub schema: Schema,
    /// The policy this node enforces; replaced when the control plane publishes a newer one.
    policy: std::sync::RwLock<Arc<Policy>>,
    pub limits: Limits,
    pub store: Arc<dyn RegionStore>,
    pub blobs: BlobStore,
    /// The ownership table in force: reads check it without waiting for anything.
    ownership: std::sync::RwLock<Arc<OwnershipTable>>,
    /// Writes hold this shared across their ownership check and their durable write; a change
    /// that takes writes away (fence, release, user changes) holds it exclusively. So when
    /// `fence` returns its LSN, every write that passed the check before the fence is already
    /// in the log — the cutover drain cannot miss one. Taking a range this node held no bucket
    /// of needs no gate: no write of it can be in flight, and the writes that are (to other
    /// ranges) are not its business — so a target's `own` does not wait behind them.
    write_gate: RwLock<()>,
    /// One ownership change at a time: each is computed from, persisted after, and put in force
    /// over the one before.
    changes: tokio::sync::Mutex<()>,
    /// The scopes being purged: owning a range that overlaps one takes the exclusive gate, and
    /// so waits for the purge (which holds the gate shared) instead of racing it.
    purging: std::sync::Mutex<Vec<domicile_core::Scope>>,
    pub metrics: Arc<NodeMetrics>,
    /// The region's data keys, when its data is encrypted at rest: purges and erasures destroy
    /// the keys of what they remove (crypto-shredding).
    pub data_keys: Option<Arc<DataKeys>>,
    /// Serializes a user's consent decisions with writes to their consent collections.
    pub consent_locks: crate::consent::ConsentLocks,
    /// How this node calls other nodes: a move's target pulls from its source.
    pub peers: reqwest::Client,
    /// The pulls this node runs as a move's target.
    pub pulls: crate::pull::PullSessions,
}

impl NodeState {
    /// Builds the state, loading the persisted ownership table or deriving it from placement.
    pub async fn new(
        cluster: &ClusterConfig,
        region: RegionId,
        store: Arc<dyn RegionStore>,
        blobs: BlobStore,
    ) -> Result<Self, StoreError> {
        let ownership = match store.load_meta(OWNERSHIP_META).await? {
            Some(bytes) => {
                let saved: SavedOwnership = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Corrupt(format!("ownership table: {e}")))?;
                OwnershipTable::from_ranges(saved.ranges, saved.users, cluster.buckets)
            }
            None => OwnershipTable::from_placement(&cluster.placement, &region, cluster.buckets),
        };
        Ok(Self {
            region,
            buckets: cluster.buckets,
            schema: cluster.schema.clone(),
            policy: std::sync::RwLock::new(Arc::new(cluster.policy.clone())),
            limits: cluster.limits,
            store,
            blobs,
            ownership: std::sync::RwLock::new(Arc::new(ownership)),
            write_gate: RwLock::new(()),
            changes: tokio::sync::Mutex::new(()),
            purging: std::sync::Mutex::new(Vec::new()),
            metrics: Arc::new(NodeMetrics::new()),
            data_keys: None,
            consent_locks: crate::consent::ConsentLocks::default(),
            peers: domicile_client::http_client(
                &domicile_client::ClientTransport::InsecurePlaintext,
            ),
            pulls: crate::pull::PullSessions::default(),
        })
    }

    /// Calls other nodes over `transport` (the cluster's mutual TLS, as a member).
    pub fn with_peer_transport(mut self, transport: &domicile_client::ClientTransport) -> Self {
        self.peers = domicile_client::http_client(transport);
        self
    }

    /// Destroys the data keys of whatever this node purges or erases from now on.
    pub fn with_data_keys(mut self, keys: Arc<DataKeys>) -> Self {
        self.data_keys = Some(keys);
        self
    }

    pub fn policy(&self) -> Arc<Policy> {
        // A poisoned lock only means a writer panicked mid-swap of an Arc: the value is whole.
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Adopts `policy` if it is newer than the one in force; returns whether it did.
    pub fn update_policy(&self, policy: &Policy) -> bool {
        let mut current = self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if policy.version <= current.version {
            return false;
        }
        tracing::info!(region = %self.region, version = policy.version, "policy updated");
        *current = Arc::new(policy.clone());
        true
    }

    /// Refuses data that the policy does not allow in this region.
    pub fn check_residency(&self, market: Market, service: &ServiceName) -> Result<(), ApiError> {
        self.policy()
            .check(market, service, &self.region)
            .map_err(|v| ApiError::ResidencyViolation(v.to_string()))
    }

    /// Applies an ownership change durably: persisted first, then in effect.
    pub async fn change_ownership(
        &self,
        change: Change,
        service: &ServiceName,
        market: Market,
        range: BucketRange,
        epoch: Epoch,
        owner: Option<RegionId>,
    ) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        // Owning a range none of whose buckets this node holds (or is purging) gives writes,
        // never takes any.
        let widens = |table: &OwnershipTable| {
            change == Change::Own
                && !table.holds_any(service, market, range.buckets())
                && !self.purging_any(service, market, range)
        };
        let gate_ms = self
            .change_table(widens, |next| {
                next.apply(change, service, market, range, epoch, owner)
            })
            .await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(?change, %service, %market, %range, %epoch, gate_ms, ms, "ownership changed");
        Ok(())
    }

    /// Starts a purge of `scope`: refused while any bucket of it is held here; otherwise the
    /// write gate (shared) is held, and the scope marked as being purged, until the returned
    /// guard is dropped. Checked and marked under the change lock, so no change slips between.
    pub async fn start_purge(
        &self,
        scope: &domicile_core::Scope,
    ) -> Result<PurgeGuard<'_>, ApiError> {
        let _one_change = self.changes.lock().await;
        let gate = self.write_gate().await;
        if gate.holds_any(&scope.service, scope.market, scope.buckets.buckets()) {
            return Err(ApiError::Conflict(format!(
                "{}/{} buckets {} are still owned here; release them before purging",
                scope.service, scope.market, scope.buckets
            )));
        }
        self.purging
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(scope.clone());
        Ok(PurgeGuard {
            state: self,
            scope: scope.clone(),
            _gate: gate,
        })
    }

    fn purging_any(&self, service: &ServiceName, market: Market, range: BucketRange) -> bool {
        self.purging
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .any(|s| {
                s.service == *service
                    && s.market == market
                    && range.buckets().any(|b| s.buckets.contains(b))
            })
    }

    /// The ownership table in force, for a read's check or a view.
    pub fn ownership(&self) -> Arc<OwnershipTable> {
        self.ownership
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The write gate, shared, with the table in force: hold it across a write's ownership
    /// check and its durable write.
    pub async fn write_gate(&self) -> WriteGate<'_> {
        let shared = self.write_gate.read().await;
        WriteGate {
            _shared: shared,
            table: self.ownership(),
        }
    }

    /// Applies `edit` to a copy of the table, persists the copy, then puts it in force. A change
    /// that may take writes away does it all under the exclusive write gate, so no write sees a
    /// half-made change; one that only `widens` (see `write_gate`) does not wait for it. Returns
    /// how long it waited for the gate (for the writes in flight under it), in ms.
    pub async fn change_table(
        &self,
        widens: impl FnOnce(&OwnershipTable) -> bool,
        edit: impl FnOnce(&mut OwnershipTable) -> Result<(), ApiError>,
    ) -> Result<f64, ApiError> {
        let _one_change = self.changes.lock().await;
        let waited = std::time::Instant::now();
        // Changes are serialized: the table read here stays the one in force until the swap.
        let current = self.ownership();
        let _exclusive = if widens(&current) {
            None
        } else {
            Some(self.write_gate.write().await)
        };
        let gate_ms = waited.elapsed().as_secs_f64() * 1000.0;
        let mut next = OwnershipTable::clone(&current);
        edit(&mut next)?;
        let saved = SavedOwnership {
            ranges: next.ranges(),
            users: next.users(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.store
            .store_meta(OWNERSHIP_META, Bytes::from(bytes))
            .await?;
        *self
            .ownership
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(next);
        Ok(gate_ms)
    }
}

/// The shared write gate and the table a write checks under it.
pub struct WriteGate<'a> {
    _shared: tokio::sync::RwLockReadGuard<'a, ()>,
    table: Arc<OwnershipTable>,
}

impl std::ops::Deref for WriteGate<'_> {
    type Target = OwnershipTable;

    fn deref(&self) -> &OwnershipTable {
        &self.table
    }
}

/// A purge under way: the write gate held shared, its scope marked (see
/// [`NodeState::start_purge`]).
pub struct PurgeGuard<'a> {
    state: &'a NodeState,
    scope: domicile_core::Scope,
    _gate: WriteGate<'a>,
}

impl Drop for PurgeGuard<'_> {
    fn drop(&mut self) {
        let mut purging = self
            .state
            .purging
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(at) = purging.iter().position(|s| *s == self.scope) {
            purging.remove(at);
        }
    }
}

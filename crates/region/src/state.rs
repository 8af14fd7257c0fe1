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
    /// Writes hold this shared across their ownership check and their durable write; ownership
    /// changes take it exclusively. So when `fence` returns its LSN, every write that passed the
    /// check before the fence is already in the log — the cutover drain cannot miss one.
    pub ownership: RwLock<OwnershipTable>,
    pub metrics: Arc<NodeMetrics>,
    /// The region's data keys, when its data is encrypted at rest: purges and erasures destroy
    /// the keys of what they remove (crypto-shredding).
    pub data_keys: Option<Arc<DataKeys>>,
    /// Serializes a user's consent decisions with writes to their consent collections.
    pub consent_locks: crate::consent::ConsentLocks,
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
            ownership: RwLock::new(ownership),
            metrics: Arc::new(NodeMetrics::new()),
            data_keys: None,
            consent_locks: crate::consent::ConsentLocks::default(),
        })
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
        let gate_ms = self
            .change_table(|next| next.apply(change, service, market, range, epoch, owner))
            .await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(?change, %service, %market, %range, %epoch, gate_ms, ms, "ownership changed");
        Ok(())
    }

    /// Applies `edit` to a copy of the table, persists the copy, then puts it in force — all
    /// under the exclusive gate, so no write sees a half-made change. Returns how long it waited
    /// for the gate (for the writes in flight under it), in ms.
    pub async fn change_table(
        &self,
        edit: impl FnOnce(&mut OwnershipTable) -> Result<(), ApiError>,
    ) -> Result<f64, ApiError> {
        let waited = std::time::Instant::now();
        let mut table = self.ownership.write().await;
        let gate_ms = waited.elapsed().as_secs_f64() * 1000.0;
        let mut next = table.clone();
        edit(&mut next)?;
        let saved = SavedOwnership {
            ranges: next.ranges(),
            users: next.users(),
        };
        let bytes = serde_json::to_vec(&saved).map_err(|e| ApiError::Internal(e.to_string()))?;
        self.store
            .store_meta(OWNERSHIP_META, Bytes::from(bytes))
            .await?;
        *table = next;
        Ok(gate_ms)
    }
}

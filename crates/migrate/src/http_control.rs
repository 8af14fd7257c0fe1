//! The wave's [`Control`] through the control plane's admin API, for a mover outside the
//! control plane (the benchmarks): checkpoints under `/admin/checkpoints/{name}`, the owner read
//! from `/admin/table`, the epoch commit as a placement change (`POST /admin/placement`, which
//! releases the other region, owns at the new one and publishes the table — idempotently).

use crate::wave::{Control, Wave, WaveSpec};
use domicile_core::{Bucket, Epoch, RegionId};
use domicile_wire::api::RoutingTable;
use serde_json::json;

pub struct HttpControl {
    pub url: String,
    pub admin_token: String,
    pub http: reqwest::Client,
    /// The checkpoint's name (one per wave).
    pub name: String,
}

impl HttpControl {
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<reqwest::Response, String> {
        let r = request
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(r)
        } else {
            let status = r.status();
            Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
        }
    }
}

/// The owner of the first bucket of `spec`'s range (a wave's range is one placement row).
pub fn owner_in(table: &RoutingTable, spec: &WaveSpec) -> Result<(RegionId, Epoch), String> {
    table
        .placement
        .lookup(&spec.service, spec.market, Bucket(spec.buckets.first))
        .map(|row| (row.region.clone(), row.epoch))
        .ok_or_else(|| {
            format!(
                "{} of market {} is not placed in the routing table",
                spec.service, spec.market
            )
        })
}

impl Control for HttpControl {
    async fn checkpoint(&self, wave: &Wave) -> Result<(), String> {
        let url = format!("{}/admin/checkpoints/{}", self.url, self.name);
        self.call(self.http.put(url).json(wave)).await.map(|_| ())
    }

    async fn commit(&self, spec: &WaveSpec, owner: &RegionId) -> Result<Epoch, String> {
        let body = json!({ "service": spec.service, "market": spec.market, "buckets": spec.buckets, "region": owner });
        let table: RoutingTable = self
            .call(
                self.http
                    .post(format!("{}/admin/placement", self.url))
                    .json(&body),
            )
            .await?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        owner_in(&table, spec).map(|(_, epoch)| epoch)
    }

    async fn owner(&self, spec: &WaveSpec) -> Result<(RegionId, Epoch), String> {
        let table: RoutingTable = self
            .call(self.http.get(format!("{}/admin/table", self.url)))
            .await?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        owner_in(&table, spec)
    }
}

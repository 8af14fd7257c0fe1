//! The wave's [`Control`] through the control plane's admin API: checkpoints under
//! `/admin/checkpoints/{name}`, the epoch commit as a placement change (`POST /admin/placement`,
//! which releases at the source, owns at the target and publishes the table — idempotently).

use crate::wave::{Control, Wave, WaveSpec};
use domicile_core::Epoch;
use serde_json::json;

pub struct HttpControl {
    pub url: String,
    pub admin_token: String,
    pub http: reqwest::Client,
    /// The checkpoint's name (one per wave).
    pub name: String,
}

impl HttpControl {
    async fn call(&self, request: reqwest::RequestBuilder) -> Result<(), String> {
        let r = request
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            Ok(())
        } else {
            let status = r.status();
            Err(format!("{status}: {}", r.text().await.unwrap_or_default()))
        }
    }

    /// The wave saved under this name, if any (to resume it).
    pub async fn load(&self) -> Result<Option<Wave>, String> {
        let r = self
            .http
            .get(format!("{}/admin/checkpoints/{}", self.url, self.name))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if r.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !r.status().is_success() {
            return Err(format!("{}", r.status()));
        }
        r.json().await.map(Some).map_err(|e| e.to_string())
    }
}

impl Control for HttpControl {
    async fn checkpoint(&self, wave: &Wave) -> Result<(), String> {
        let url = format!("{}/admin/checkpoints/{}", self.url, self.name);
        self.call(self.http.put(url).json(wave)).await
    }

    async fn commit(&self, spec: &WaveSpec, _epoch: Epoch) -> Result<(), String> {
        let body = json!({ "service": spec.service, "market": spec.market, "buckets": spec.buckets, "region": spec.target });
        self.call(
            self.http
                .post(format!("{}/admin/placement", self.url))
                .json(&body),
        )
        .await
    }
}

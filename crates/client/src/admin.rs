//! The control plane's admin API as the CLI and the demo use it: migrations and the ledger.

use crate::{ClientError, json, send};
use domicile_wire::migration::MigrationStatus;

#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl AdminClient {
    pub fn new(base: impl Into<String>, token: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            token: token.into(),
            http,
        }
    }

    /// Starts a run of the plan (TOML text); refused with the rule it breaks.
    pub async fn start_migration(&self, plan: &str) -> Result<MigrationStatus, ClientError> {
        let url = format!("{}/admin/migrations", self.base);
        let request = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header("content-type", "application/toml")
            .body(plan.to_string());
        json(&url, send(&url, request).await?).await
    }

    pub async fn migration(&self) -> Result<MigrationStatus, ClientError> {
        let url = format!("{}/admin/migrations/current", self.base);
        json(
            &url,
            send(&url, self.http.get(&url).bearer_auth(&self.token)).await?,
        )
        .await
    }

    /// `pause`, `resume` or `rollback`.
    pub async fn steer(&self, action: &str) -> Result<MigrationStatus, ClientError> {
        let url = format!("{}/admin/migrations/current/{action}", self.base);
        json(
            &url,
            send(&url, self.http.post(&url).bearer_auth(&self.token)).await?,
        )
        .await
    }

    /// `{"verified","problem","entries"}`.
    pub async fn ledger(&self) -> Result<serde_json::Value, ClientError> {
        let url = format!("{}/admin/ledger", self.base);
        json(
            &url,
            send(&url, self.http.get(&url).bearer_auth(&self.token)).await?,
        )
        .await
    }
}

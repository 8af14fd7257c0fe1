//! The control plane's admin API as the CLI and the demo use it: migrations and the ledger.

use crate::{ClientError, json, send};
use domicile_wire::ledger::{LedgerAppended, LedgerExport};
use domicile_wire::migration::MigrationStatus;

/// The header naming who starts a run.
pub const OPERATOR_HEADER: &str = "x-domicile-operator";

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

    /// Starts a run of the plan (TOML text); refused with the rule it breaks. The ledger names
    /// the admin credential as its operator.
    pub async fn start_migration(&self, plan: &str) -> Result<MigrationStatus, ClientError> {
        self.start_migration_by(plan, None).await
    }

    /// Starts a run of the plan, naming its `operator` (recorded in the ledger's transfers with
    /// the admin credential's id).
    pub async fn start_migration_by(
        &self,
        plan: &str,
        operator: Option<&str>,
    ) -> Result<MigrationStatus, ClientError> {
        let url = format!("{}/admin/migrations", self.base);
        let mut request = self
            .http
            .post(&url)
            .bearer_auth(&self.token)
            .header("content-type", "application/toml")
            .body(plan.to_string());
        if let Some(name) = operator {
            request = request.header(OPERATOR_HEADER, name);
        }
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

    /// The ledger's export (signed to its head by the control plane before it answers).
    pub async fn ledger(&self) -> Result<LedgerExport, ClientError> {
        let url = format!("{}/admin/ledger", self.base);
        json(
            &url,
            send(&url, self.http.get(&url).bearer_auth(&self.token)).await?,
        )
        .await
    }

    /// Signs the ledger's head now; the checkpoint covering it (0: the ledger is empty).
    pub async fn ledger_checkpoint(&self) -> Result<u64, ClientError> {
        let url = format!("{}/admin/ledger/checkpoint", self.base);
        let appended: LedgerAppended = json(
            &url,
            send(&url, self.http.post(&url).bearer_auth(&self.token)).await?,
        )
        .await?;
        Ok(appended.seq)
    }
}

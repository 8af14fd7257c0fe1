//! A region node's internal ownership endpoints, as the control plane calls them.

use crate::{ClientError, json, send};
use domicile_wire::api::{FenceResponse, OwnershipResponse, RangeRequest, UserOwnershipRequest};

#[derive(Debug, Clone)]
pub struct RegionClient {
    pub(crate) base: String,
    pub(crate) http: reqwest::Client,
}

impl RegionClient {
    pub fn new(base: impl Into<String>, http: reqwest::Client) -> Self {
        Self {
            base: base.into().trim_end_matches('/').to_string(),
            http,
        }
    }

    /// POSTs a JSON body to `path`; the answer if it is a success.
    pub(crate) async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        send(&url, self.http.post(&url).json(body)).await
    }

    pub async fn fence(&self, range: &RangeRequest) -> Result<u64, ClientError> {
        let r = self.post("/internal/fence", range).await?;
        let body: FenceResponse = json(&format!("{}/internal/fence", self.base), r).await?;
        Ok(body.lsn)
    }

    pub async fn unfence(&self, range: &RangeRequest) -> Result<(), ClientError> {
        self.post("/internal/unfence", range).await.map(|_| ())
    }

    pub async fn own(&self, range: &RangeRequest) -> Result<(), ClientError> {
        self.post("/internal/own", range).await.map(|_| ())
    }

    pub async fn release(&self, range: &RangeRequest) -> Result<(), ClientError> {
        self.post("/internal/release", range).await.map(|_| ())
    }

    /// The node's ownership table.
    pub async fn ownership(&self) -> Result<OwnershipResponse, ClientError> {
        let url = format!("{}/internal/ownership", self.base);
        json(&url, send(&url, self.http.get(&url)).await?).await
    }

    pub async fn user_ownership(&self, request: &UserOwnershipRequest) -> Result<(), ClientError> {
        self.post("/internal/user-ownership", request)
            .await
            .map(|_| ())
    }
}

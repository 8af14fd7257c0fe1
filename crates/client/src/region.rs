//! A region node's internal ownership endpoints, as the control plane calls them.

use crate::{ClientError, check};
use domicile_wire::api::{FenceResponse, RangeRequest, UserOwnershipRequest};

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

    async fn post(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<reqwest::Response, ClientError> {
        let url = format!("{}{path}", self.base);
        let response = self
            .http
            .post(&url)
            .json(body)
            .send()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        check(&url, response).await
    }

    pub async fn fence(&self, range: &RangeRequest) -> Result<u64, ClientError> {
        let url = format!("{}/internal/fence", self.base);
        let r = self.post("/internal/fence", range).await?;
        let body: FenceResponse = r.json().await.map_err(|e| ClientError::Body {
            url,
            message: e.to_string(),
        })?;
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

    pub async fn user_ownership(&self, request: &UserOwnershipRequest) -> Result<(), ClientError> {
        self.post("/internal/user-ownership", request)
            .await
            .map(|_| ())
    }
}

//! HTTP clients of domicile's internal APIs: the control plane's routing table, with a
//! long-poll watch ([`control`]), and region nodes' ownership endpoints ([`region`]).
//!
//! Architecture Invariant: servers never depend on each other; they talk through these clients
//! and the types of `domicile-wire`.

#![deny(clippy::unwrap_used)]

pub mod admin;
pub mod control;
pub mod region;
pub mod region_data;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("{url}: {source}")]
    Transport { url: String, source: reqwest::Error },
    #[error("{url} answered {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: unreadable answer: {message}")]
    Body { url: String, message: String },
}

/// The shared HTTP client: pooled connections, HTTP/2 when the peer speaks it.
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .tcp_nodelay(true)
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Turns a non-success answer into an error carrying the server's JSON message.
pub(crate) async fn check(
    url: &str,
    response: reqwest::Response,
) -> Result<reqwest::Response, ClientError> {
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    let message = serde_json::from_str::<domicile_wire::api::ErrorBody>(&text)
        .map(|b| format!("{}: {}", b.error.code, b.error.message))
        .unwrap_or(text);
    Err(ClientError::Status {
        url: url.to_string(),
        status,
        message,
    })
}

/// Sends `request` to `url`; a transport failure or a non-success answer is the error.
pub(crate) async fn send(
    url: &str,
    request: reqwest::RequestBuilder,
) -> Result<reqwest::Response, ClientError> {
    let response = request
        .send()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
    check(url, response).await
}

/// Reads a JSON answer.
pub(crate) async fn json<T: serde::de::DeserializeOwned>(
    url: &str,
    response: reqwest::Response,
) -> Result<T, ClientError> {
    response.json().await.map_err(|e| ClientError::Body {
        url: url.to_string(),
        message: e.to_string(),
    })
}

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

pub use domicile_tls::{Alpn, ClientTransport};

/// The shared HTTP client: pooled HTTP/1.1 keep-alive connections (as before TLS: decision
/// 0004 measured them faster than one HTTP/2 connection on loopback; servers speak both), TLS
/// as `transport` says (the cluster CA as the only root, the role's certificate as its own).
pub fn http_client(transport: &ClientTransport) -> reqwest::Client {
    builder(transport, Alpn::Http1)
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .build()
        .unwrap_or_else(|e| {
            tracing::error!(error = %e, "HTTP client settings refused; using the defaults");
            // Nothing a caller passes can fail this: the TLS config is always a rustls one.
            builder(transport, Alpn::Http1)
                .build()
                .expect("an HTTP client with default settings")
        })
}

/// A client builder with `transport`'s TLS, offering `alpn`, `TCP_NODELAY` set: for clients
/// with pool settings of their own. Always build clients through this (or [`http_client`]):
/// reqwest has no TLS provider of its own here (decision 0007).
pub fn builder(transport: &ClientTransport, alpn: Alpn) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .use_preconfigured_tls(transport.rustls_config(alpn))
        .tcp_nodelay(true)
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

//! Builds region nodes on temp stores and sends them requests.

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use bytes::Bytes;
use domicile_core::{ClusterConfig, RegionId};
use domicile_region::{NodeState, router};
use domicile_store::{BlobStore, EmbeddedOptions, EmbeddedStore};
use http_body_util::BodyExt;
use std::sync::Arc;
use tower::ServiceExt;

pub struct Node {
    pub state: Arc<NodeState>,
    _dir: Option<tempfile::TempDir>,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }

    /// Asserts an error reply: status, JSON shape and code.
    pub fn assert_error(&self, status: StatusCode, code: &str) {
        assert_eq!(self.status, status, "{:?}", self.body);
        let j = self.json();
        assert_eq!(j["error"]["code"], code, "{j}");
        assert!(
            j["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{j}"
        );
    }
}

pub fn reference_with(edit: impl FnOnce(&mut String)) -> ClusterConfig {
    let mut text = domicile_core::reference::CLUSTER_TOML.to_string();
    edit(&mut text);
    ClusterConfig::from_toml(&text).expect("test config")
}

impl Node {
    pub async fn start(region: &str) -> Node {
        Self::start_with(region, domicile_core::reference::cluster_config()).await
    }

    pub async fn start_with(region: &str, cluster: ClusterConfig) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let store =
            EmbeddedStore::open(&dir.path().join("store"), EmbeddedOptions::default()).unwrap();
        let blobs = BlobStore::local(&dir.path().join("blobs")).unwrap();
        let state = domicile_region::open_sealed(
            &cluster,
            &RegionId::new(region).unwrap(),
            Arc::new(store),
            blobs,
            &dir.path().join("keyring.json"),
        )
        .await
        .unwrap();
        Node {
            state: Arc::new(state),
            _dir: Some(dir),
        }
    }

    /// A client of an existing node's state (the caller keeps its files alive).
    pub fn of(state: Arc<NodeState>) -> Node {
        Node { state, _dir: None }
    }

    pub async fn send(
        &self,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: impl Into<Body>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let response = router(self.state.clone())
            .oneshot(req.body(body.into()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A data request for a user of `market`.
    pub async fn data(
        &self,
        method: Method,
        path: &str,
        market: &str,
        body: impl Into<Body>,
    ) -> Reply {
        self.send(method, path, &[("x-domicile-market", market)], body)
            .await
    }

    /// `POST /internal/import?{query}` with `body` (an import stream).
    pub async fn import(&self, query: &str, body: impl Into<Body>) -> Reply {
        let uri = format!("/internal/import?{query}");
        self.send(Method::POST, &uri, &[], body).await
    }

    pub fn lsn(&self) -> u64 {
        self.state.store.last_lsn().0
    }
}

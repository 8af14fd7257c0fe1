//! Prometheus metrics of a region node, served at `/metrics`.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Instant;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: String,
    pub method: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

pub struct NodeMetrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
    pub records_imported: Counter,
    pub records_purged: Counter,
    pub data_keys_destroyed: Counter,
    pub last_lsn: Gauge<u64, AtomicU64>,
    /// Copies this node is pulling from a source, as a move's target.
    pub pull_sessions: Gauge<u64, AtomicU64>,
    pub consent_refusals: Counter,
    pub consents_granted: Counter,
    pub consents_revoked: Counter,
    pub export_pages: Counter,
    pub erasures: Counter,
    pub records_erased: Counter,
    pub blobs_erased: Counter,
}

impl NodeMetrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("domicile_region");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 18))
        });
        let records_imported = Counter::default();
        let records_purged = Counter::default();
        let data_keys_destroyed = Counter::default();
        let last_lsn = Gauge::<u64, AtomicU64>::default();
        let pull_sessions = Gauge::<u64, AtomicU64>::default();
        registry.register(
            "pull_sessions",
            "Copies this node is pulling from a source node (as a move's target)",
            pull_sessions.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_seconds",
            "HTTP request latency by route",
            latency.clone(),
        );
        registry.register(
            "records_imported",
            "Records applied by internal imports",
            records_imported.clone(),
        );
        registry.register(
            "records_purged",
            "Stored entries removed by purges",
            records_purged.clone(),
        );
        registry.register(
            "data_keys_destroyed",
            "Data keys destroyed by purges and erasures (crypto-shredding)",
            data_keys_destroyed.clone(),
        );
        registry.register(
            "last_lsn",
            "The last durable change-log LSN",
            last_lsn.clone(),
        );
        let consent_refusals = Counter::default();
        let consents_granted = Counter::default();
        let consents_revoked = Counter::default();
        let export_pages = Counter::default();
        let erasures = Counter::default();
        let records_erased = Counter::default();
        let blobs_erased = Counter::default();
        for (name, help, counter) in [
            (
                "consent_refusals",
                "Writes refused for want of a consent grant",
                &consent_refusals,
            ),
            (
                "consents_granted",
                "Consent grants recorded",
                &consents_granted,
            ),
            (
                "consents_revoked",
                "Consent revocations recorded (each erases the purpose's data)",
                &consents_revoked,
            ),
            ("export_pages", "Export pages served", &export_pages),
            ("erasures", "User erasures completed", &erasures),
            (
                "records_erased",
                "Records removed by revocations and erasures",
                &records_erased,
            ),
            (
                "blobs_erased",
                "Blobs removed by revocations and erasures",
                &blobs_erased,
            ),
        ] {
            registry.register(name, help, counter.clone());
        }
        Self {
            registry,
            requests,
            latency,
            records_imported,
            records_purged,
            data_keys_destroyed,
            last_lsn,
            pull_sessions,
            consent_refusals,
            consents_granted,
            consents_revoked,
            export_pages,
            erasures,
            records_erased,
            blobs_erased,
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            tracing::error!("metrics encoding failed");
        }
        out
    }
}

impl Default for NodeMetrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Counts and times every request, and logs it at debug level.
pub async fn track(
    State(metrics): State<Arc<NodeMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let method = request.method().to_string();
    let started = Instant::now();
    let response = next.run(request).await.into_response();
    let status = response.status().as_u16();
    let elapsed = started.elapsed();
    metrics
        .latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    tracing::debug!(%method, %route, status, micros = elapsed.as_micros() as u64, "request");
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status,
        })
        .inc();
    response
}

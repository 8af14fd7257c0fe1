//! The demo's report: printed as a table, written as JSON.

use crate::traffic::MarketTraffic;
use domicile_core::Market;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct PhaseLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    pub errors: u64,
    /// The region(s) that served the market, by requests.
    pub regions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClientTotals {
    pub requests: u64,
    pub errors: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub users: u64,
    pub records: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
    pub seconds: f64,
    pub client: ClientTotals,
    /// `markets.<CODE>.<phase>`: `before` today; the migration adds one entry per phase.
    pub markets: BTreeMap<Market, BTreeMap<String, PhaseLatency>>,
}

impl Report {
    pub fn add_phase(&mut self, phase: &str, traffic: BTreeMap<Market, MarketTraffic>) {
        for (market, t) in traffic {
            self.client.requests += t.requests;
            self.client.errors += t.errors;
            let latency = PhaseLatency {
                p50_ms: round(t.samples.quantile(0.5).unwrap_or(0.0)),
                p99_ms: round(t.samples.quantile(0.99).unwrap_or(0.0)),
                requests: t.requests,
                errors: t.errors,
                regions: t.regions,
            };
            self.markets
                .entry(market)
                .or_default()
                .insert(phase.to_string(), latency);
        }
    }

    /// A readable table of one phase, markets in the reference order.
    pub fn table(&self, phase: &str) -> String {
        let mut out = format!(
            "{:<7} {:<14} {:>9} {:>9} {:>9} {:>7}\n",
            "market", "served from", "p50 ms", "p99 ms", "requests", "errors"
        );
        let order = domicile_core::reference::MARKETS;
        let mut markets: Vec<&Market> = self.markets.keys().collect();
        markets.sort_by_key(|m| {
            order
                .iter()
                .position(|o| *o == m.as_str())
                .unwrap_or(usize::MAX)
        });
        for market in markets {
            if let Some(p) = self.markets.get(market).and_then(|m| m.get(phase)) {
                let region = p
                    .regions
                    .iter()
                    .max_by_key(|(_, n)| **n)
                    .map_or("-", |(r, _)| r.as_str());
                out.push_str(&format!(
                    "{:<7} {:<14} {:>9.1} {:>9.1} {:>9} {:>7}\n",
                    market.as_str(),
                    region,
                    p.p50_ms,
                    p.p99_ms,
                    p.requests,
                    p.errors
                ));
            }
        }
        out
    }
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

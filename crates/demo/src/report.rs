//! The demo's report: printed as a table, written as JSON.

use crate::traffic::MarketTraffic;
use domicile_core::Market;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize)]
pub struct PhaseLatency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The real (unmodelled) part of the median request.
    pub processing_p50_ms: f64,
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

/// One phase of the migration, as the report gives it.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseReport {
    pub name: String,
    pub waves: usize,
    pub units: usize,
    pub records_moved: u64,
    pub bytes_moved: u64,
    pub cutovers: usize,
    pub write_unavailable_ms_p50: f64,
    pub write_unavailable_ms_p99: f64,
    pub write_unavailable_ms_max: f64,
    pub verified: bool,
    pub keys_repaired: u64,
    /// Acknowledged writes made while this phase ran (or just after it) not found at the end.
    pub lost_writes: u64,
    /// Acknowledged writes made while this phase ran found outside their final home too.
    pub duplicate_writes: u64,
    pub seconds: Option<f64>,
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
    /// The migration's id in the control plane.
    pub migration: Option<String>,
    pub phases: Vec<PhaseReport>,
    pub claims: Vec<crate::claims::ClaimCheck>,
    pub flash_sale: Option<crate::flash::FlashSale>,
    /// Acknowledged client writes, every one read back at the end.
    pub acknowledged_writes: u64,
    /// Records found in a region for a range it does not own (0: no copy left behind).
    pub copies_left_behind: u64,
    /// Seeded photos read back at the end, and those missing or different.
    pub photos_checked: u64,
    pub photos_lost: u64,
    /// The transfer ledger verified as `domicile audit verify` does: the hash chain, and every
    /// checkpoint's Ed25519 signature against the control plane's public key, with every entry
    /// covered by a checkpoint.
    pub ledger_verified: bool,
    pub ledger_entries: u64,
    pub ledger_checkpoints: u64,
    /// Occurrences of the run's canary (planted in every user's notes and photos) in any file
    /// under the data directory after the run: 0 when everything at rest is encrypted.
    pub plaintext_hits: u64,
}

impl Report {
    pub fn add_phase(&mut self, phase: &str, traffic: BTreeMap<Market, MarketTraffic>) {
        for (market, t) in traffic {
            self.client.requests += t.requests;
            self.client.errors += t.errors;
            let latency = PhaseLatency {
                p50_ms: round(t.samples.quantile(0.5).unwrap_or(0.0)),
                p99_ms: round(t.samples.quantile(0.99).unwrap_or(0.0)),
                processing_p50_ms: round(t.processing.quantile(0.5).unwrap_or(0.0)),
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

    /// The phases as a table.
    pub fn phases_table(&self) -> String {
        let mut out = format!(
            "{:<24} {:>6} {:>9} {:>10} {:>8} {:>9} {:>9} {:>8} {:>8} {:>5} {:>4}\n",
            "phase",
            "units",
            "records",
            "bytes",
            "cutovers",
            "p99 ms",
            "max ms",
            "verified",
            "repaired",
            "lost",
            "dup"
        );
        for p in &self.phases {
            out.push_str(&format!(
                "{:<24} {:>6} {:>9} {:>10} {:>8} {:>9.1} {:>9.1} {:>8} {:>8} {:>5} {:>4}\n",
                p.name,
                p.units,
                p.records_moved,
                p.bytes_moved,
                p.cutovers,
                p.write_unavailable_ms_p99,
                p.write_unavailable_ms_max,
                if p.verified { "yes" } else { "NO" },
                p.keys_repaired,
                p.lost_writes,
                p.duplicate_writes
            ));
        }
        out
    }

    /// The claims as a table.
    pub fn claims_table(&self) -> String {
        let mut out = String::new();
        for c in &self.claims {
            out.push_str(&format!(
                "{:<22} {:<42} {:>10} {}\n",
                c.id,
                c.claimed,
                c.modelled.map_or("-".to_string(), |m| format!("{m:.1}")),
                if c.holds { "holds" } else { "does not hold" }
            ));
        }
        out
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

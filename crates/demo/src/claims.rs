//! The published claims of the reference migration (`domicile_latency::claims`), each set beside
//! the figure the demo models or measures for it, and whether it holds.
//!
//! How each unit is modelled (DESIGN.md §7, `processing + round trips × RTT`, RTTs from the
//! latency model's tables, processing as measured by the demo's clients):
//! - `percent faster`: a page load of the shop ([`round_trips::PAGE_LOAD`]) from where the
//!   market's `ecommerce` data lived before the phase vs after it: `(before / after − 1) × 100`;
//! - `ms lower`: one warm API request ([`round_trips::REQUEST`]) to the market's `account` data,
//!   before vs after: `before − after`;
//! - `times faster`: a sync of the market's `cloud` data ([`round_trips::SYNC`]): `before / after`;
//! - `orders per second`: measured — the demo's flash sale through the gateway during a move.
//!
//! A claim bounded below ("at least") holds if every market's figure reaches the bound; one
//! bounded above ("up to", "as much as") if every market gains and none exceeds it; one bounded
//! on both sides if every market's figure lies between. `modelled` is the worst market's figure.

use domicile_core::{Bucket, Market, RegionId, ServiceName};
use domicile_latency::{Claim, ClaimMarkets, Phase};
use domicile_latency::{LatencyModel, round_trips};
use domicile_wire::api::RoutingTable;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct ClaimCheck {
    pub id: String,
    /// The published figure in words, e.g. "at least 30 percent faster".
    pub claimed: String,
    /// The demo's figure for the worst market (`null` if it could not be modelled).
    pub modelled: Option<f64>,
    pub unit: String,
    pub holds: bool,
    /// What was modelled or measured.
    pub basis: String,
}

/// The inputs: the routing table before the migration and after each phase (`after[0]` is after
/// phase 1), the measured processing time per request, and the flash sale's measured rate.
pub struct Evidence<'a> {
    pub before: &'a RoutingTable,
    pub after: &'a [RoutingTable],
    pub processing_ms: f64,
    pub flash_orders_per_s: Option<f64>,
}

fn region_of(table: &RoutingTable, service: &str, market: Market) -> Option<RegionId> {
    let service = ServiceName::new(service).ok()?;
    // Every bucket of a (service, market) moves together by the end of a phase: bucket 0 names it.
    table
        .placement
        .lookup(&service, market, Bucket(0))
        .map(|r| r.region.clone())
}

fn bounds(c: &Claim) -> String {
    match (c.low, c.high) {
        (Some(l), Some(h)) => format!("{} {l}–{h} {}", c.claim, c.unit),
        (Some(l), None) => format!("{} {l} {}", c.claim, c.unit),
        (None, Some(h)) => format!("{} {h} {}", c.claim, c.unit),
        (None, None) => c.claim.clone(),
    }
}

fn holds(c: &Claim, figures: &[f64]) -> bool {
    !figures.is_empty()
        && figures.iter().all(|&x| match (c.low, c.high) {
            (Some(l), Some(h)) => l <= x && x <= h,
            (Some(l), None) => x >= l,
            (None, Some(h)) => x > 0.0 && x <= h,
            (None, None) => false,
        })
}

fn worst(c: &Claim, figures: &[f64]) -> Option<f64> {
    let fold = |f: fn(f64, f64) -> f64| figures.iter().copied().reduce(f);
    match (c.low, c.high) {
        (None, Some(_)) => fold(f64::max),
        _ => fold(f64::min),
    }
}

pub fn evaluate(claims: &[Claim], model: &LatencyModel, e: &Evidence) -> Vec<ClaimCheck> {
    claims
        .iter()
        .map(|c| {
            let (figures, basis) = figures(c, model, e);
            ClaimCheck {
                id: c.id.clone(),
                claimed: bounds(c),
                modelled: worst(c, &figures).map(|x| (x * 10.0).round() / 10.0),
                unit: c.unit.clone(),
                holds: holds(c, &figures),
                basis,
            }
        })
        .collect()
}

fn figures(c: &Claim, model: &LatencyModel, e: &Evidence) -> (Vec<f64>, String) {
    if c.unit == "orders per second" {
        return (
            e.flash_orders_per_s.into_iter().collect(),
            "measured: the demo's flash sale through the gateway while phase 1 moves the shop"
                .into(),
        );
    }
    let (service, trips, how) = match c.unit.as_str() {
        "percent faster" => ("ecommerce", round_trips::PAGE_LOAD, "page load"),
        "ms lower" => ("account", round_trips::REQUEST, "warm API request"),
        "times faster" => ("cloud", round_trips::SYNC, "collection sync"),
        other => return (Vec::new(), format!("no model for unit {other:?}")),
    };
    let Phase::Number(n) = c.phase else {
        return (Vec::new(), "a latency claim needs a phase".into());
    };
    let Some(after) = e.after.get(n as usize - 1) else {
        return (Vec::new(), format!("phase {n} did not run"));
    };
    let markets: Vec<Market> = match &c.markets {
        ClaimMarkets::Only(m) => m.clone(),
        ClaimMarkets::All => after.policy.markets.keys().copied().collect(),
    };
    let mut figures = Vec::new();
    for m in markets {
        let predict = |t: &RoutingTable| {
            region_of(t, service, m).and_then(|r| model.predict_ms(m, &r, e.processing_ms, trips))
        };
        let (Some(b), Some(a)) = (predict(e.before), predict(after)) else {
            continue;
        };
        figures.push(match c.unit.as_str() {
            "percent faster" => (b / a - 1.0) * 100.0,
            "ms lower" => b - a,
            _ => b / a,
        });
    }
    (
        figures,
        format!(
            "modelled: {how} ({trips} round trips) to {service} data before vs after phase {n}, \
             {:.1} ms measured processing",
            e.processing_ms
        ),
    )
}

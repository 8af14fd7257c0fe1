//! The latency model: round-trip times per (market, region) and per pair of regions, and the
//! prediction `processing + round_trips × RTT` (DESIGN.md §7).

use crate::csv;
use crate::error::LatencyError;
use domicile_core::{Market, RegionId};
use serde::Serialize;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;

/// `data/market_region_rtt.csv`, compiled in.
pub const MARKET_REGION_CSV: &str = include_str!("../data/market_region_rtt.csv");
/// `data/region_rtt.csv`, compiled in.
pub const REGION_REGION_CSV: &str = include_str!("../data/region_rtt.csv");

const MARKET_REGION: &str = "market-region RTT table";
const REGION_REGION: &str = "region-region RTT table";
const MARKET_REGION_COLUMNS: [&str; 5] = ["market", "region", "rtt_ms", "basis", "how"];
const REGION_REGION_COLUMNS: [&str; 5] = ["region_a", "region_b", "rtt_ms", "basis", "how"];

/// Whether a figure was measured or stands in for a missing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Basis {
    Measured,
    Assumed,
}

/// One round-trip time with where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rtt {
    pub ms: f64,
    pub basis: Basis,
    /// The measured endpoints and source, as the table words it.
    pub how: String,
}

/// Round-trip times from each market's users to each region, and between regions.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyModel {
    market_region: BTreeMap<(Market, RegionId), Rtt>,
    /// Keyed by the pair in order (`a < b`).
    region_region: BTreeMap<(RegionId, RegionId), Rtt>,
}

impl LatencyModel {
    /// The model from the compiled-in tables (`data/`, copied from the design's measured data).
    pub fn reference() -> Result<Self, LatencyError> {
        Self::from_csv(MARKET_REGION_CSV, REGION_REGION_CSV)
    }

    /// Builds a model from two CSV texts with the headers
    /// `market,region,rtt_ms,basis,how` and `region_a,region_b,rtt_ms,basis,how`.
    /// Refuses, naming the table, line and problem: a wrong header or width, an invalid market or
    /// region id, an RTT that is not a finite number ≥ 0, a basis other than `measured` or
    /// `assumed`, a pair given twice (either order for regions), and a region paired with itself.
    pub fn from_csv(market_region: &str, region_region: &str) -> Result<Self, LatencyError> {
        // Each table keeps the line of every row until the end, to name it in a duplicate error.
        let mut markets = BTreeMap::new();
        for row in csv::read(MARKET_REGION, market_region, &MARKET_REGION_COLUMNS)? {
            let bad = |problem: String| LatencyError::row(MARKET_REGION, row.line, problem);
            let [market, region, ms, basis, how] = &row.fields[..] else {
                return Err(bad("wrong number of fields".into()));
            };
            let market = Market::new(market).map_err(|e| bad(e.to_string()))?;
            let region = RegionId::new(region.as_str()).map_err(|e| bad(e.to_string()))?;
            let rtt = parse_rtt(ms, basis, how).map_err(bad)?;
            match markets.entry((market, region)) {
                Entry::Vacant(slot) => {
                    slot.insert((row.line, rtt));
                }
                Entry::Occupied(first) => {
                    let ((market, region), (first, _)) = (first.key(), first.get());
                    return Err(bad(format!(
                        "{market} to {region} is given twice (first on line {first})"
                    )));
                }
            }
        }
        let mut regions = BTreeMap::new();
        for row in csv::read(REGION_REGION, region_region, &REGION_REGION_COLUMNS)? {
            let bad = |problem: String| LatencyError::row(REGION_REGION, row.line, problem);
            let [a, b, ms, basis, how] = &row.fields[..] else {
                return Err(bad("wrong number of fields".into()));
            };
            let a = RegionId::new(a.as_str()).map_err(|e| bad(e.to_string()))?;
            let b = RegionId::new(b.as_str()).map_err(|e| bad(e.to_string()))?;
            if a == b {
                return Err(bad(format!(
                    "{a} is paired with itself; a region's RTT to itself is 0 by definition"
                )));
            }
            let rtt = parse_rtt(ms, basis, how).map_err(bad)?;
            match regions.entry(ordered(&a, &b)) {
                Entry::Vacant(slot) => {
                    slot.insert((row.line, rtt));
                }
                Entry::Occupied(first) => {
                    let first = first.get().0;
                    return Err(bad(format!(
                        "{a} and {b} are given twice, in either order (first on line {first})"
                    )));
                }
            }
        }
        Ok(Self {
            market_region: markets.into_iter().map(|(k, (_, v))| (k, v)).collect(),
            region_region: regions.into_iter().map(|(k, (_, v))| (k, v)).collect(),
        })
    }

    /// The round-trip time (ms) from `market`'s users to `region`, if the table has it.
    pub fn rtt_ms(&self, market: Market, region: &RegionId) -> Option<f64> {
        self.rtt(market, region).map(|r| r.ms)
    }

    /// As [`Self::rtt_ms`], with the figure's basis and source.
    pub fn rtt(&self, market: Market, region: &RegionId) -> Option<&Rtt> {
        self.market_region.get(&(market, region.clone()))
    }

    /// The round-trip time (ms) between two regions, in either order; 0 from a region to itself
    /// (whether or not the table knows it).
    pub fn region_rtt_ms(&self, a: &RegionId, b: &RegionId) -> Option<f64> {
        if a == b {
            return Some(0.0);
        }
        self.region_region.get(&ordered(a, b)).map(|r| r.ms)
    }

    /// The modelled latency (ms) of an action by `market`'s users served from `region`:
    /// `processing_ms + round_trips × RTT` (DESIGN.md §7). `processing_ms` is measured by the
    /// caller; `round_trips` is one of [`crate::round_trips`] or the caller's own count.
    /// `None` when the table has no RTT for the pair.
    pub fn predict_ms(
        &self,
        market: Market,
        region: &RegionId,
        processing_ms: f64,
        round_trips: u32,
    ) -> Option<f64> {
        let rtt = self.rtt_ms(market, region)?;
        Some(processing_ms + f64::from(round_trips) * rtt)
    }
}

fn ordered(a: &RegionId, b: &RegionId) -> (RegionId, RegionId) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

fn parse_rtt(ms: &str, basis: &str, how: &str) -> Result<Rtt, String> {
    let ms: f64 = ms
        .trim()
        .parse()
        .map_err(|_| format!("rtt_ms {ms:?} is not a number"))?;
    if !ms.is_finite() || ms < 0.0 {
        return Err(format!("rtt_ms {ms} must be a finite number ≥ 0"));
    }
    let basis = match basis {
        "measured" => Basis::Measured,
        "assumed" => Basis::Assumed,
        other => return Err(format!("basis {other:?} must be measured or assumed")),
    };
    Ok(Rtt {
        ms,
        basis,
        how: how.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::reference::MARKETS;

    const REFERENCE_REGIONS: [&str; 5] = [
        "cn-beijing",
        "us-west",
        "ap-singapore",
        "ap-mumbai",
        "sa-saopaulo",
    ];

    fn market(m: &str) -> Market {
        Market::new(m).unwrap()
    }

    fn region(r: &str) -> RegionId {
        RegionId::new(r).unwrap()
    }

    #[test]
    fn reference_tables_load() {
        let model = LatencyModel::reference().unwrap();
        assert_eq!(model.market_region.len(), 60);
        assert_eq!(model.region_region.len(), 15);
        let delhi = model.rtt(market("IN"), &region("ap-mumbai")).unwrap();
        assert_eq!(delhi.ms, 28.6);
        assert_eq!(delhi.basis, Basis::Measured);
        assert!(delhi.how.contains("Pune"), "{}", delhi.how);
        assert_eq!(
            model
                .rtt(market("BR"), &region("sa-saopaulo"))
                .unwrap()
                .basis,
            Basis::Assumed
        );
    }

    #[test]
    fn every_reference_market_reaches_every_reference_region() {
        let model = LatencyModel::reference().unwrap();
        let config = domicile_core::reference::cluster_config();
        let mut missing = Vec::new();
        for m in MARKETS {
            for r in REFERENCE_REGIONS {
                if model.rtt_ms(market(m), &region(r)).is_none() {
                    missing.push(format!("{m} to {r}"));
                }
            }
        }
        assert!(missing.is_empty(), "no RTT for: {}", missing.join(", "));
        // The reference cluster's own regions are the same five, and every pair of them is known.
        let ids: Vec<&RegionId> = config.regions.iter().map(|r| &r.id).collect();
        assert_eq!(
            ids,
            REFERENCE_REGIONS.map(region).iter().collect::<Vec<_>>()
        );
        for a in &ids {
            for b in &ids {
                assert!(model.region_rtt_ms(a, b).is_some(), "no RTT for {a} to {b}");
            }
        }
    }

    #[test]
    fn region_pairs_are_symmetric_and_zero_to_themselves() {
        let model = LatencyModel::reference().unwrap();
        let (a, b) = (region("ap-mumbai"), region("us-west"));
        assert_eq!(model.region_rtt_ms(&a, &b), Some(231.1));
        assert_eq!(model.region_rtt_ms(&b, &a), Some(231.1));
        assert_eq!(model.region_rtt_ms(&a, &a), Some(0.0));
        assert_eq!(model.region_rtt_ms(&a, &region("eu-frankfurt")), None);
    }

    #[test]
    fn predict_is_processing_plus_round_trips_times_rtt() {
        let model = LatencyModel::reference().unwrap();
        let (india, beijing, mumbai) = (market("IN"), region("cn-beijing"), region("ap-mumbai"));
        assert_eq!(model.predict_ms(india, &mumbai, 0.0, 1), Some(28.6));
        assert_eq!(model.predict_ms(india, &mumbai, 7.5, 0), Some(7.5));
        let beijing_ms = model.predict_ms(india, &beijing, 12.0, 3).unwrap();
        assert!(
            (beijing_ms - (12.0 + 3.0 * 250.4)).abs() < 1e-9,
            "{beijing_ms}"
        );
        assert_eq!(
            model.predict_ms(india, &region("ap-hongkong"), 0.0, 2),
            Some(223.2)
        );
        assert_eq!(model.predict_ms(market("FR"), &mumbai, 1.0, 1), None);
    }

    /// Every measured figure of the two tables is one of the published figures behind them.
    #[test]
    fn measured_figures_come_from_the_published_table() {
        const PUBLISHED: &str = include_str!("../data/rtt_published.csv");
        let columns = ["from", "to", "rtt_ms", "source", "notes"];
        let published: Vec<f64> = csv::read("published", PUBLISHED, &columns)
            .unwrap()
            .iter()
            .map(|r| r.fields[2].parse().unwrap())
            .collect();
        let model = LatencyModel::reference().unwrap();
        let figures = model
            .market_region
            .iter()
            .map(|((m, r), rtt)| (format!("{m} to {r}"), rtt))
            .chain(
                model
                    .region_region
                    .iter()
                    .map(|((a, b), rtt)| (format!("{a} to {b}"), rtt)),
            );
        for (pair, rtt) in figures {
            // Assumed figures borrow a published one too (the same-metro 2.9 ms).
            assert!(
                published.contains(&rtt.ms),
                "{pair}: {} ms ({:?}) is not in rtt_published.csv",
                rtt.ms,
                rtt.basis
            );
        }
    }

    fn check_error(market_region: &str, region_region: &str, expected: &str) {
        let header_m = "market,region,rtt_ms,basis,how\n";
        let header_r = "region_a,region_b,rtt_ms,basis,how\n";
        let err = LatencyModel::from_csv(
            &format!("{header_m}{market_region}"),
            &format!("{header_r}{region_region}"),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(err, expected);
    }

    #[test]
    fn malformed_rows_are_refused_with_their_line() {
        let ok = "IN,ap-mumbai,28.6,measured,x\n";
        check_error(
            &format!("{ok}IN,ap-mumbai,abc,measured,x\n"),
            "",
            "market-region RTT table, line 3: rtt_ms \"abc\" is not a number",
        );
        check_error(
            "IN,ap-mumbai,-1,measured,x\n",
            "",
            "market-region RTT table, line 2: rtt_ms -1 must be a finite number ≥ 0",
        );
        check_error(
            "IN,ap-mumbai,NaN,measured,x\n",
            "",
            "market-region RTT table, line 2: rtt_ms NaN must be a finite number ≥ 0",
        );
        check_error(
            "IN,ap-mumbai,28.6,guessed,x\n",
            "",
            "market-region RTT table, line 2: basis \"guessed\" must be measured or assumed",
        );
        check_error(
            &format!("{ok}\n{ok}"),
            "",
            "market-region RTT table, line 4: IN to ap-mumbai is given twice (first on line 2)",
        );
        check_error(
            "IN,ap-mumbai,28.6,measured\n",
            "",
            "market-region RTT table, line 2: 4 fields; expected 5 (market,region,rtt_ms,basis,how)",
        );
        let err = LatencyModel::from_csv(&format!("market,region,rtt_ms,basis,how\nXK,{ok}"), "")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("market-region RTT table, line 2: "),
            "{err}"
        );
        assert!(err.contains("market"), "{err}");
        check_error(
            ok,
            "us-west,ap-mumbai,231.1,measured,x\nap-mumbai,us-west,231.1,measured,x\n",
            "region-region RTT table, line 3: ap-mumbai and us-west are given twice, in either order (first on line 2)",
        );
        check_error(
            ok,
            "us-west,us-west,1,measured,x\n",
            "region-region RTT table, line 2: us-west is paired with itself; a region's RTT to itself is 0 by definition",
        );
        check_error(
            ok,
            "us-west,Mumbai,1,measured,x\n",
            &format!(
                "region-region RTT table, line 2: {}",
                RegionId::new("Mumbai").unwrap_err()
            ),
        );
        check_error(
            ok,
            "us-west,ap-mumbai,1,measured,\"x\n",
            "region-region RTT table, line 2: a quoted field is never closed",
        );
    }
}

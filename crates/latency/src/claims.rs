//! The published outcome claims of the reference migration (`data/claims.csv`), for reports to
//! put modelled figures beside.

use crate::csv;
use crate::error::LatencyError;
use domicile_core::Market;
use serde::Serialize;
use std::collections::BTreeMap;

/// `data/claims.csv`, compiled in.
pub const CLAIMS_CSV: &str = include_str!("../data/claims.csv");

const TABLE: &str = "claims table";
const COLUMNS: [&str; 8] = [
    "id",
    "phase",
    "market",
    "metric",
    "claim",
    "value_low",
    "value_high",
    "unit",
];

/// The migration phase a claim is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Every phase (`all`).
    All,
    /// One phase, numbered from 1.
    #[serde(untagged)]
    Number(u32),
}

/// The markets a claim is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ClaimMarkets {
    /// Every market (`all`).
    All,
    /// These markets (`SG|HK|TW` in the file).
    #[serde(untagged)]
    Only(Vec<Market>),
}

/// One published claim: `claim` words how the figure is bounded ("at least", "up to",
/// "between", …); `low` and `high` are the figure's bounds, at least one of them given.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Claim {
    pub id: String,
    pub phase: Phase,
    pub markets: ClaimMarkets,
    pub metric: String,
    pub claim: String,
    pub low: Option<f64>,
    pub high: Option<f64>,
    pub unit: String,
}

/// The compiled-in claims.
pub fn claims() -> Vec<Claim> {
    // The file is part of this crate's source and tested below; failing here is a build defect.
    #[allow(clippy::expect_used)]
    parse_claims(CLAIMS_CSV).expect("the reference claims are valid")
}

/// Parses a claims table with the header `id,phase,market,metric,claim,value_low,value_high,unit`.
/// Refuses, naming the line: an empty or repeated id, a phase other than `all` or a number ≥ 1,
/// markets other than `all` or `|`-separated ISO codes, a bound that is not a finite number, no
/// bound at all, or `low > high`.
pub fn parse_claims(text: &str) -> Result<Vec<Claim>, LatencyError> {
    let mut seen = BTreeMap::new();
    let mut claims = Vec::new();
    for row in csv::read(TABLE, text, &COLUMNS)? {
        let bad = |problem: String| LatencyError::row(TABLE, row.line, problem);
        let [id, phase, markets, metric, claim, low, high, unit] = &row.fields[..] else {
            return Err(bad("wrong number of fields".into()));
        };
        if id.is_empty() {
            return Err(bad("the id is empty".into()));
        }
        if let Some(first) = seen.insert(id.clone(), row.line) {
            return Err(bad(format!(
                "id {id} is used twice (first on line {first})"
            )));
        }
        let phase = match phase.as_str() {
            "all" => Phase::All,
            n => match n.parse::<u32>() {
                Ok(n) if n >= 1 => Phase::Number(n),
                _ => return Err(bad(format!("phase {n:?} must be all or a number ≥ 1"))),
            },
        };
        let markets = match markets.as_str() {
            "all" => ClaimMarkets::All,
            list => ClaimMarkets::Only(
                list.split('|')
                    .map(Market::new)
                    .collect::<Result<_, _>>()
                    .map_err(|e| bad(format!("markets {list:?}: {e}")))?,
            ),
        };
        let bound = |name: &str, value: &str| -> Result<Option<f64>, LatencyError> {
            if value.is_empty() {
                return Ok(None);
            }
            match value.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Some(v)),
                _ => Err(bad(format!("{name} {value:?} is not a finite number"))),
            }
        };
        let (low, high) = (bound("value_low", low)?, bound("value_high", high)?);
        match (low, high) {
            (None, None) => return Err(bad("neither value_low nor value_high is given".into())),
            (Some(l), Some(h)) if l > h => {
                return Err(bad(format!("value_low {l} is above value_high {h}")));
            }
            _ => {}
        }
        claims.push(Claim {
            id: id.clone(),
            phase,
            markets,
            metric: metric.clone(),
            claim: claim.clone(),
            low,
            high,
            unit: unit.clone(),
        });
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_claims_parse() {
        let claims = claims();
        let ids: Vec<&str> = claims.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "site-speed-sg-hk-tw",
                "site-speed-in",
                "request-latency-in",
                "photo-sync-my",
                "flash-sale"
            ]
        );
        let india = &claims[2];
        assert_eq!(india.phase, Phase::Number(2));
        assert_eq!(
            india.markets,
            ClaimMarkets::Only(vec![Market::new("IN").unwrap()])
        );
        assert_eq!((india.low, india.high), (None, Some(350.0)));
        assert_eq!(india.unit, "ms lower");
        assert_eq!(claims[3].low, Some(2.0));
        assert_eq!(claims[3].high, Some(3.0));
        assert_eq!(claims[4].phase, Phase::All);
        assert_eq!(claims[4].markets, ClaimMarkets::All);
        let json = serde_json::to_value(&claims[0]).unwrap();
        assert_eq!(json["phase"], 1);
        assert_eq!(json["markets"], serde_json::json!(["SG", "HK", "TW"]));
        assert_eq!(serde_json::to_value(&claims[4]).unwrap()["markets"], "all");
    }

    fn check_error(row: &str, expected: &str) {
        let text = format!("{}\nok,1,IN,m,up to,,1,ms\n{row}\n", COLUMNS.join(","));
        let err = parse_claims(&text).unwrap_err().to_string();
        assert_eq!(err, format!("claims table, line 3: {expected}"));
    }

    #[test]
    fn malformed_claims_are_refused_with_their_line() {
        check_error("ok,1,IN,m,c,,1,ms", "id ok is used twice (first on line 2)");
        check_error(
            "x,0,IN,m,c,,1,ms",
            "phase \"0\" must be all or a number ≥ 1",
        );
        check_error(
            "x,one,IN,m,c,,1,ms",
            "phase \"one\" must be all or a number ≥ 1",
        );
        check_error(
            "x,1,IN,m,c,,,ms",
            "neither value_low nor value_high is given",
        );
        check_error("x,1,IN,m,c,3,2,ms", "value_low 3 is above value_high 2");
        check_error(
            "x,1,IN,m,c,inf,,ms",
            "value_low \"inf\" is not a finite number",
        );
        let err = parse_claims(&format!("{}\nx,1,IN|in,m,c,1,,ms\n", COLUMNS.join(",")))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("claims table, line 2: markets \"IN|in\": "),
            "{err}"
        );
    }
}

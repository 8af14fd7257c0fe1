//! What the demo runs: how many users, how long, which markets with which weights.

use crate::DemoError;
use domicile_core::Market;
use std::collections::BTreeMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub users: usize,
    pub duration: Duration,
    /// Share of users with a photo (20–200 KiB blob).
    pub photo_share: f64,
    /// Share of users who granted `contacts-sync` (only they get contacts).
    pub contacts_share: f64,
    /// Relative number of users per market.
    pub weights: BTreeMap<Market, f64>,
    /// Concurrent simulated clients in all, split across markets by weight.
    pub clients: usize,
    /// Concurrent requests while seeding.
    pub seed_concurrency: usize,
    /// The RNG seed: the same seed seeds the same users and records.
    pub seed: u64,
    pub progress: bool,
    /// Planted in every seeded user's notes and photos, then searched for on disk
    /// ([`crate::canary`]).
    pub canary: String,
}

/// Default weights: roughly the reference phone maker's users by market.
pub const DEFAULT_WEIGHTS: &str = "CN=40,IN=15,ID=10,BR=7,PH=7,MY=6,TW=5,HK=5,SG=5";

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            users: 20_000,
            duration: Duration::from_secs(10),
            photo_share: 0.10,
            contacts_share: 0.6,
            weights: parse_weights(DEFAULT_WEIGHTS).unwrap_or_default(),
            clients: 64,
            seed_concurrency: 64,
            seed: 2014,
            progress: true,
            canary: crate::canary::fresh(),
        }
    }
}

/// Parses `CN=40,IN=15,…`.
pub fn parse_weights(text: &str) -> Result<BTreeMap<Market, f64>, DemoError> {
    let mut out = BTreeMap::new();
    for part in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (m, w) = part
            .split_once('=')
            .ok_or_else(|| DemoError::Options(format!("weight {part:?} is not MARKET=NUMBER")))?;
        let market = Market::new(m.trim()).map_err(|e| DemoError::Options(e.to_string()))?;
        let weight: f64 = w
            .trim()
            .parse()
            .ok()
            .filter(|w: &f64| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| {
                DemoError::Options(format!(
                    "weight of {market} must be a number ≥ 0, not {w:?}"
                ))
            })?;
        out.insert(market, weight);
    }
    if out.values().sum::<f64>() <= 0.0 {
        return Err(DemoError::Options("the weights add up to nothing".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_parse_and_refuse_nonsense() {
        let w = parse_weights(DEFAULT_WEIGHTS).unwrap();
        assert_eq!(w.len(), 9);
        assert!(parse_weights("CN").is_err());
        assert!(parse_weights("XX=1").is_err());
        assert!(parse_weights("CN=-1").is_err());
        assert!(parse_weights("CN=0").is_err());
    }
}

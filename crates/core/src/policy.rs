//! Residency policy: per market, the regions the law allows and the preferred one, with
//! per-service exceptions. Versioned, because a completed phase may tighten it.

use crate::ids::{RegionId, ServiceName};
use crate::market::Market;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use thiserror::Error;

/// A market's rule for one service (or for all its services).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRule {
    pub allowed: Vec<RegionId>,
    pub preferred: RegionId,
}

/// One market's policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketPolicy {
    pub allowed: Vec<RegionId>,
    pub preferred: RegionId,
    /// The legal basis recorded in the ledger for transfers of this market's data.
    #[serde(default)]
    pub legal_basis: Option<String>,
    /// Exceptions by service; a service not listed follows the market's rule.
    #[serde(default)]
    pub services: BTreeMap<ServiceName, ServiceRule>,
}

/// The whole policy. Markets not listed may be placed nowhere (deny by default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub version: u64,
    pub markets: BTreeMap<Market, MarketPolicy>,
}

/// A placement or write the policy forbids: names the market, the region and the rule.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "policy v{policy_version} forbids {service} data of market {market} in region {region}: {rule}"
)]
pub struct PolicyViolation {
    pub market: Market,
    pub service: ServiceName,
    pub region: RegionId,
    pub rule: String,
    pub policy_version: u64,
}

impl Policy {
    /// The rule that applies to `service` in `market`, with its path in the policy document.
    pub fn rule(&self, market: Market, service: &ServiceName) -> Option<(String, ServiceRule)> {
        let m = self.markets.get(&market)?;
        Some(match m.services.get(service) {
            Some(rule) => (
                format!("markets.{market}.services.{service}.allowed"),
                rule.clone(),
            ),
            None => (
                format!("markets.{market}.allowed"),
                ServiceRule {
                    allowed: m.allowed.clone(),
                    preferred: m.preferred.clone(),
                },
            ),
        })
    }

    /// Whether `service` data of `market` may live in `region`.
    pub fn check(
        &self,
        market: Market,
        service: &ServiceName,
        region: &RegionId,
    ) -> Result<(), PolicyViolation> {
        let violation = |rule: String| PolicyViolation {
            market,
            service: service.clone(),
            region: region.clone(),
            rule,
            policy_version: self.version,
        };
        let Some((path, rule)) = self.rule(market, service) else {
            return Err(violation(format!(
                "market {market} has no policy (deny by default)"
            )));
        };
        if rule.allowed.contains(region) {
            return Ok(());
        }
        let allowed: Vec<&str> = rule.allowed.iter().map(RegionId::as_str).collect();
        Err(violation(format!("{path} = [{}]", allowed.join(", "))))
    }

    /// The preferred region of `service` in `market`.
    pub fn preferred(&self, market: Market, service: &ServiceName) -> Option<RegionId> {
        self.rule(market, service).map(|(_, r)| r.preferred)
    }

    /// Checks the policy's own consistency: every preferred region is allowed.
    pub fn validate(&self) -> Result<(), String> {
        for (market, m) in &self.markets {
            if !m.allowed.contains(&m.preferred) {
                return Err(format!(
                    "markets.{market}.preferred = {} is not in markets.{market}.allowed",
                    m.preferred
                ));
            }
            for (service, r) in &m.services {
                if !r.allowed.contains(&r.preferred) {
                    return Err(format!(
                        "markets.{market}.services.{service}.preferred = {} is not allowed",
                        r.preferred
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> RegionId {
        RegionId::new(s).unwrap()
    }

    #[test]
    fn violations_name_market_region_and_rule() {
        let policy = crate::reference::cluster_config().policy;
        let cn = Market::new("CN").unwrap();
        let shop = ServiceName::new("ecommerce").unwrap();
        assert!(policy.check(cn, &shop, &id("cn-beijing")).is_ok());
        let err = policy.check(cn, &shop, &id("us-west")).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("market CN"), "{text}");
        assert!(text.contains("us-west"), "{text}");
        assert!(text.contains("markets.CN.allowed = [cn-beijing]"), "{text}");
    }

    #[test]
    fn service_exceptions_override_the_market_rule() {
        let mut policy = crate::reference::cluster_config().policy;
        let hk = Market::new("HK").unwrap();
        let shop = ServiceName::new("ecommerce").unwrap();
        let account = ServiceName::new("account").unwrap();
        policy.markets.get_mut(&hk).unwrap().services.insert(
            shop.clone(),
            ServiceRule {
                allowed: vec![id("ap-singapore")],
                preferred: id("ap-singapore"),
            },
        );
        let err = policy.check(hk, &shop, &id("cn-beijing")).unwrap_err();
        assert!(
            err.rule
                .starts_with("markets.HK.services.ecommerce.allowed")
        );
        assert!(policy.check(hk, &account, &id("cn-beijing")).is_ok());
    }

    #[test]
    fn unknown_markets_are_denied() {
        let policy = crate::reference::cluster_config().policy;
        let fr = Market::new("FR").unwrap();
        let err = policy
            .check(fr, &ServiceName::new("cloud").unwrap(), &id("us-west"))
            .unwrap_err();
        assert!(err.rule.contains("deny by default"));
    }
}

//! The cluster configuration file (TOML): buckets, schema, regions, limits, policy, placement.
//!
//! Parsing only; paths are resolved by the caller, which knows where the file lives.

use crate::bucket::{BucketCount, BucketRange};
use crate::epoch::Epoch;
use crate::ids::{RegionId, ServiceName};
use crate::market::Market;
use crate::placement::{Placement, PlacementError, PlacementRange};
use crate::policy::{Policy, PolicyViolation};
use crate::schema::{Schema, SchemaError};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One region of the cluster and where its node keeps things.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionConfig {
    pub id: RegionId,
    /// The country whose law governs the region's data centre.
    pub jurisdiction: Market,
    /// The node's listen address, e.g. `127.0.0.1:7401` (port 0 picks a free port).
    #[serde(default = "default_listen")]
    pub listen: String,
    /// The store: `embedded:PATH` (relative to the config file).
    pub store: String,
    /// The blob store: `file:PATH` (relative to the config file).
    pub blobs: String,
    /// The region's keyring (its key-encryption keys; made on first start), relative to the
    /// config file. Default: `keyrings/<id>.json`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keyring: Option<String>,
}

impl RegionConfig {
    /// The keyring file's path relative to the config's base folder.
    pub fn keyring_path(&self) -> String {
        self.keyring
            .clone()
            .unwrap_or_else(|| format!("keyrings/{}.json", self.id))
    }
}

fn default_listen() -> String {
    "127.0.0.1:0".to_string()
}

/// Size limits on what clients may write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default = "Limits::default_record")]
    pub max_record_bytes: u64,
    #[serde(default = "Limits::default_blob")]
    pub max_blob_bytes: u64,
}

impl Limits {
    fn default_record() -> u64 {
        1 << 20
    }
    fn default_blob() -> u64 {
        64 << 20
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_record_bytes: Self::default_record(),
            max_blob_bytes: Self::default_blob(),
        }
    }
}

/// A placement row as written in the file: `service`, `market` and `buckets` may be left out to
/// mean every service of the schema, every market of the policy, every bucket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct PlacementRow {
    service: Option<ServiceName>,
    market: Option<Market>,
    buckets: Option<BucketRange>,
    region: RegionId,
    #[serde(default = "initial_epoch")]
    epoch: Epoch,
}

fn initial_epoch() -> Epoch {
    Epoch::INITIAL
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    buckets: BucketCount,
    schema: Option<Schema>,
    regions: Vec<RegionConfig>,
    #[serde(default)]
    limits: Limits,
    policy: Policy,
    #[serde(default)]
    placement: Vec<PlacementRow>,
}

/// A validated cluster configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    pub buckets: BucketCount,
    pub schema: Schema,
    pub regions: Vec<RegionConfig>,
    pub limits: Limits,
    pub policy: Policy,
    pub placement: Placement,
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("config is not valid: {0}")]
    Parse(String),
    #[error(transparent)]
    Schema(#[from] SchemaError),
    #[error("region {0} is declared twice")]
    DuplicateRegion(RegionId),
    #[error("{context} names region {region}, which is not declared under [[regions]]")]
    UnknownRegion { context: String, region: RegionId },
    #[error("placement names service {0}, which the schema does not declare")]
    UnknownService(ServiceName),
    #[error("policy is inconsistent: {0}")]
    Policy(String),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error(transparent)]
    Forbidden(#[from] PolicyViolation),
}

/// A TOML error as one line: `line L, column C: message`.
pub(crate) fn one_line(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {}", e.message())
        }
        None => e.message().to_string(),
    }
}

impl ClusterConfig {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig =
            toml::from_str(text).map_err(|e| ConfigError::Parse(one_line(text, &e)))?;
        let schema = match raw.schema {
            Some(s) => {
                s.validate()?;
                s
            }
            None => crate::reference::schema(),
        };
        let mut seen = std::collections::BTreeSet::new();
        for r in &raw.regions {
            if !seen.insert(r.id.clone()) {
                return Err(ConfigError::DuplicateRegion(r.id.clone()));
            }
        }
        let known = |context: String, region: &RegionId| {
            if seen.contains(region) {
                Ok(())
            } else {
                Err(ConfigError::UnknownRegion {
                    context,
                    region: region.clone(),
                })
            }
        };
        raw.policy.validate().map_err(ConfigError::Policy)?;
        for (market, m) in &raw.policy.markets {
            for region in m
                .allowed
                .iter()
                .chain(m.services.values().flat_map(|s| &s.allowed))
            {
                known(format!("policy.markets.{market}"), region)?;
            }
        }
        let services = schema.services();
        let mut ranges = Vec::new();
        for row in raw.placement {
            known("placement".to_string(), &row.region)?;
            let row_services = match row.service {
                Some(s) if services.contains(&s) => vec![s],
                Some(s) => return Err(ConfigError::UnknownService(s)),
                None => services.clone(),
            };
            let markets: Vec<Market> = match row.market {
                Some(m) => vec![m],
                None => raw.policy.markets.keys().copied().collect(),
            };
            for service in &row_services {
                for market in &markets {
                    ranges.push(PlacementRange {
                        service: service.clone(),
                        market: *market,
                        buckets: row.buckets.unwrap_or(raw.buckets.all()),
                        region: row.region.clone(),
                        epoch: row.epoch,
                    });
                }
            }
        }
        let placement = Placement::new(ranges, raw.buckets)?;
        placement.check_policy(&raw.policy)?;
        Ok(Self {
            buckets: raw.buckets,
            schema,
            regions: raw.regions,
            limits: raw.limits,
            policy: raw.policy,
            placement,
        })
    }

    pub fn region(&self, id: &RegionId) -> Option<&RegionConfig> {
        self.regions.iter().find(|r| &r.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_error(text: &str, expected: &str) {
        let err = ClusterConfig::from_toml(text).unwrap_err().to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
    }

    const REGION: &str = "[[regions]]\nid = \"us-west\"\njurisdiction = \"US\"\nstore = \"embedded:a\"\nblobs = \"file:b\"\n";
    const POLICY: &str = "[policy]\nversion = 1\n[policy.markets.US]\nallowed = [\"us-west\"]\npreferred = \"us-west\"\n";

    #[test]
    fn placement_rows_expand_over_services_and_markets() {
        let text = format!("{REGION}{POLICY}[[placement]]\nregion = \"us-west\"\n");
        let config = ClusterConfig::from_toml(&text).unwrap();
        assert_eq!(config.placement.ranges().len(), 4); // four reference services × one market
        assert_eq!(config.limits, Limits::default());
    }

    #[test]
    fn bad_configs_say_what_is_wrong() {
        check_error(&format!("{REGION}{REGION}{POLICY}"), "declared twice");
        check_error(
            &format!("{REGION}{POLICY}[[placement]]\nregion = \"mars\"\n"),
            "mars",
        );
        check_error(
            &format!("{REGION}{POLICY}[[placement]]\nservice = \"games\"\nregion = \"us-west\"\n"),
            "games",
        );
        check_error(
            &format!("{REGION}{POLICY}buckets = 0\n"),
            "config is not valid",
        );
        check_error("regions = 3", "config is not valid");
    }

    #[test]
    fn reference_config_parses() {
        let config = crate::reference::cluster_config();
        assert_eq!(config.regions.len(), 5);
        assert_eq!(config.placement.ranges().len(), 4 * 9);
    }
}

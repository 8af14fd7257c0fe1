//! The reference scenario: a phone maker whose services all ran from Beijing (DESIGN.md §1).

use crate::config::ClusterConfig;
use crate::schema::Schema;

/// The reference cluster as of 2014: five regions, every market's data in `cn-beijing`.
/// The same file ships as `examples/reference-cluster.toml`.
pub const CLUSTER_TOML: &str = include_str!("../../../examples/reference-cluster.toml");

/// The reference schema: `ecommerce`, `account`, `messaging` and `cloud`.
pub const SCHEMA_TOML: &str = include_str!("../../../examples/reference-schema.toml");

/// The reference markets, in the order the demo reports them.
pub const MARKETS: [&str; 9] = ["CN", "HK", "TW", "SG", "MY", "ID", "PH", "IN", "BR"];

pub fn schema() -> Schema {
    // The file is part of this crate's source and tested below; failing here is a build defect.
    #[allow(clippy::expect_used)]
    Schema::from_toml(SCHEMA_TOML).expect("the reference schema is valid")
}

pub fn cluster_config() -> ClusterConfig {
    #[allow(clippy::expect_used)]
    ClusterConfig::from_toml(CLUSTER_TOML).expect("the reference cluster config is valid")
}

//! domicile's core model: the vocabulary of DESIGN.md as types, with their validation rules.
//!
//! Architecture Invariant: this crate does no I/O and has no async; every other crate may depend
//! on it, and it depends on none of them. Clocks are passed in (see [`version::Hlc`]).

pub mod bucket;
pub mod config;
pub mod epoch;
pub mod ids;
pub mod market;
pub mod placement;
pub mod policy;
pub mod reference;
pub mod schema;
pub mod version;

pub use bucket::{Bucket, BucketCount, BucketRange, BucketSet};
pub use config::{ClusterConfig, ConfigError, Limits, RegionConfig};
pub use epoch::Epoch;
pub use ids::{CollectionName, IdError, RecordKey, RegionId, ServiceName, UserId};
pub use market::Market;
pub use placement::{Placement, PlacementError, PlacementRange, Scope};
pub use policy::{MarketPolicy, Policy, PolicyViolation, ServiceRule};
pub use schema::{
    CONSENTS_COLLECTION, CollectionKind, CollectionSpec, Schema, SchemaError, consents_collection,
};
pub use version::{Hlc, Version};

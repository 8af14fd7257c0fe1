//! domicile's latency model and placement advisor (DESIGN.md §7): measured round-trip times from
//! each market's users to each region and between regions, the prediction
//! `processing + round_trips × RTT`, and, per market, the allowed region with the lowest latency.
//!
//! The tables ship inside the crate (`data/`, see its README for sources and caveats) and are
//! compiled in, so nothing is read at run time; [`LatencyModel::from_csv`] takes other tables.
//!
//! Architecture Invariant: like `domicile-core`, this crate does no I/O and has no async; it
//! depends on core alone.

mod advise;
mod claims;
mod csv;
mod error;
mod model;
pub mod round_trips;

pub use advise::{Advice, Choice, Today, WeightedTotal};
pub use claims::{CLAIMS_CSV, Claim, ClaimMarkets, Phase, claims, parse_claims};
pub use error::LatencyError;
pub use model::{Basis, LatencyModel, MARKET_REGION_CSV, REGION_REGION_CSV, Rtt};

//! The demo's workload, run against a live cluster through its gateway: seed simulated users of
//! the reference markets with realistic records and photos ([`seed`]), then run closed-loop
//! clients per market that add the modelled network delay of their market to every real request
//! ([`traffic`]), and report per-market latency ([`report`]).

pub mod canary;
pub mod checker;
pub mod claims;
pub mod flash;
pub mod options;
pub mod phases;
pub mod report;
pub mod seed;
pub mod stats;
pub mod traffic;

pub use options::DemoOptions;
pub use report::Report;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum DemoError {
    #[error("{0}")]
    Options(String),
    #[error("control plane: {0}")]
    Control(#[from] domicile_client::ClientError),
    #[error("latency model: {0}")]
    Latency(#[from] domicile_latency::LatencyError),
    #[error("seeding failed: {0}")]
    Seed(String),
    #[error("migration: {0}")]
    Migration(String),
}

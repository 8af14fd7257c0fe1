//! Benchmarks behind `domicile bench`. Each prints one JSON object and measures its baseline
//! (the bare engine, or the incumbent tool) side by side in the same run, so that a noisy,
//! shared machine moves both figures together.

pub mod copy;
pub mod encryption;
pub mod load;
pub mod machine;
pub mod store;
pub mod store_postgres;

pub use store::{StoreBenchOptions, StoreBenchReport, run_store_bench};

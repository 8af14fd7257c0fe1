//! Moving a scope (service × market × buckets) between regions, step by step (DESIGN.md §5):
//! copy a consistent snapshot in chunks, catch up on the source's change log after the
//! snapshot's LSN, and verify by per-bucket digests, repairing the buckets that differ.
//!
//! This crate holds the data-moving steps; the state machine that sequences them with fencing,
//! epochs, checkpoints and rollback (the migration engine) builds on them.
//!
//! Architecture Invariant: every step is idempotent — imports keep the higher version — so a
//! step cut short (a crash, a lost connection) is simply run again.

#![deny(clippy::unwrap_used)]

pub mod http_control;
pub mod mover;
pub mod plan;
pub mod status_view;
pub mod throttle;
pub mod wave;

pub use mover::{CopyReport, MoveError, Mover, Verification};

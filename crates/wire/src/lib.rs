//! Wire formats shared by servers and clients: the JSON bodies of the public and internal APIs
//! ([`api`]) and the versioned binary framing of snapshot, change and import streams
//! ([`frame`], specified in docs/design/stream-framing.md).
//!
//! Architecture Invariant: this is the only crate that defines what crosses the network; servers
//! and clients both depend on it and never on each other.

pub mod api;
pub mod frame;
pub mod ledger;
pub mod migration;

//! What every domicile HTTP server (region node, control plane, gateway) shares: the one API
//! error type with its mapping to statuses and JSON bodies, and request parsing that turns every
//! malformed input into a 400 with a reason.

#![deny(clippy::unwrap_used)]

pub mod error;
pub mod request;
pub mod serve;

pub use error::ApiError;
pub use serve::{Peer, require_cluster_member, serve};

//! Region node tests, in-process through the router (`tower::ServiceExt::oneshot`).

mod batch_api;
mod consent_api;
mod harness;
mod internal_api;
mod public_api;
mod pull_api;

//! Region node tests, in-process through the router (`tower::ServiceExt::oneshot`).

mod harness;
mod internal_api;
mod public_api;

//! Encryption at rest (DESIGN.md §6, decision 0009).
//!
//! Each region has its own key-encryption key behind a [`KeyProvider`] (a keyring file by
//! default; a KMS plugs in behind the same trait). Each (service, market, bucket, user) — one
//! user's data in one service — has its own random data key, kept in the store's metadata
//! wrapped by the region's key ([`DataKeys`]). Every value and blob is sealed with AES-256-GCM
//! (aws-lc-rs) under its data key, with associated data that binds it to its place, so bytes
//! moved to another row, user or region do not open ([`seal`]). [`EncryptedStore`] wraps any
//! engine: engines only ever hold sealed values, callers only ever see plaintext.
//!
//! Crypto-shredding: destroying a data key ([`DataKeys::destroy_scope`],
//! [`DataKeys::destroy_user`]) deletes the wrapped key durably and scrubs it from the engine's
//! metadata files, so whatever sealed bytes remain anywhere can no longer be opened.

mod data_key;
mod data_keys;
mod keyring;
pub mod seal;
mod sealed_blobs;
mod sealed_store;

pub use data_key::DataKey;
pub use data_keys::{BatchKey, DataKeyId, DataKeys};
pub use keyring::{KeyProvider, KeyringFile};
pub(crate) use sealed_blobs::{BlobOpener, BlobSealer};
pub use sealed_store::EncryptedStore;

use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum EncryptionError {
    #[error("keyring {path}: {reason}")]
    Keyring { path: String, reason: String },
    #[error("key-encryption key {0:?} is not in this region's keyring")]
    UnknownKey(String),
    #[error("a data key does not unwrap with this region's key-encryption key")]
    Unwrap,
    /// The bytes do not open under their data key and place: tampered, moved, or sealed by
    /// another region.
    #[error("sealed bytes do not open: {0}")]
    Open(&'static str),
    #[error("the data key of {0} has been destroyed")]
    KeyDestroyed(String),
    #[error("the crypto library failed: {0}")]
    Crypto(&'static str),
}

//! The store's error type.

use domicile_core::Version;
use thiserror::Error;

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A conditional write found another version (or none) than the caller expected.
    #[error("precondition failed for mutation {index}: current version is {current:?}")]
    PreconditionFailed {
        index: usize,
        current: Option<Version>,
    },
    /// A delete named a record that does not exist.
    #[error("record not found (mutation {index})")]
    NotFound { index: usize },
    /// An earlier durable write failed; the store refuses writes rather than guess what is on disk.
    #[error("store is poisoned after a failed durable write; restart the node to recover")]
    Poisoned,
    #[error("store engine error: {0}")]
    Engine(String),
    #[error("stored bytes are corrupt: {0}")]
    Corrupt(String),
    #[error(
        "invalid store spec {0:?}: expected embedded:PATH or postgres://USER@HOST:PORT/DB[?schema=NAME]"
    )]
    Spec(String),
    #[error("the store is closed")]
    Closed,
    #[error(transparent)]
    Encryption(#[from] crate::encryption::EncryptionError),
}

impl From<fjall::Error> for StoreError {
    fn from(e: fjall::Error) -> Self {
        match e {
            fjall::Error::Poisoned => StoreError::Poisoned,
            other => StoreError::Engine(other.to_string()),
        }
    }
}

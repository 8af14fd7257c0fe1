//! Store specs as written in the cluster config (`embedded:PATH` or `postgres://…`), and
//! opening them.

use crate::embedded::{EmbeddedOptions, EmbeddedStore};
use crate::error::StoreError;
use crate::postgres::{PostgresOptions, PostgresSpec, PostgresStore};
use crate::store::RegionStore;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Which engine a region uses and where its data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreSpec {
    Embedded(PathBuf),
    Postgres(PostgresSpec),
}

impl StoreSpec {
    /// Parses `embedded:PATH` (a relative PATH is resolved against `base`, the config's folder)
    /// or a `postgres://` URL (see [`PostgresSpec`]).
    pub fn parse(spec: &str, base: &Path) -> Result<Self, StoreError> {
        if spec.starts_with("postgres://") || spec.starts_with("postgresql://") {
            return Ok(StoreSpec::Postgres(PostgresSpec::parse(spec)?));
        }
        match spec.split_once(':') {
            Some(("embedded", path)) if !path.is_empty() => {
                Ok(StoreSpec::Embedded(base.join(path)))
            }
            _ => Err(StoreError::Spec(spec.to_string())),
        }
    }
}

/// Opens the store a spec names.
pub async fn open_store(spec: &StoreSpec) -> Result<Arc<dyn RegionStore>, StoreError> {
    match spec {
        StoreSpec::Embedded(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || {
                std::fs::create_dir_all(&path)
                    .map_err(|e| StoreError::Engine(format!("create {}: {e}", path.display())))?;
                EmbeddedStore::open(&path, EmbeddedOptions::default())
            })
            .await
            .map_err(|e| StoreError::Engine(format!("open task failed: {e}")))??;
            Ok(Arc::new(store))
        }
        StoreSpec::Postgres(spec) => Ok(Arc::new(
            PostgresStore::open(spec, PostgresOptions::default()).await?,
        )),
    }
}

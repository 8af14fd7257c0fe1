//! `domicile bench encryption`: what encryption at rest costs. The same store workload (durable
//! writes by concurrent writers, import, scan, point reads) on the embedded engine bare and
//! through `EncryptedStore`, and the same region-to-region copy between plain and sealing
//! nodes — each pair measured side by side in one run.

use crate::copy::{CopyBenchReport, CopyEngine, Nodes, run_copy_bench};
use crate::machine::Machine;
use crate::store::{
    BenchError, ImportOrder, StoreBenchOptions, fresh_dir, import_scan_read, store_durable_writes,
};
use domicile_store::{EmbeddedOptions, EmbeddedStore, EncryptedStore, RegionStore};
use serde::Serialize;
use std::sync::Arc;

/// One variant's store figures.
#[derive(Debug, Clone, Serialize)]
pub struct StoreFigures {
    pub durable_writes_per_s: f64,
    pub import_records_per_s: f64,
    pub scan_records_per_s: f64,
    pub point_reads_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct EncryptionBenchReport {
    pub records: u64,
    pub writers: usize,
    pub value_bytes: usize,
    pub store_plain: StoreFigures,
    pub store_encrypted: StoreFigures,
    /// Encrypted ÷ plain, per figure (1.0 = free).
    pub durable_writes_ratio: f64,
    pub import_ratio: f64,
    pub scan_ratio: f64,
    pub point_reads_ratio: f64,
    pub copy_plain: CopyBenchReport,
    pub copy_encrypted: CopyBenchReport,
    pub copy_ratio: f64,
    pub machine: Machine,
}

/// Durable writes, then import, scan and point reads into a fresh store, for one variant.
async fn store_figures(o: &StoreBenchOptions, encrypted: bool) -> Result<StoreFigures, BenchError> {
    let name = if encrypted { "encrypted" } else { "plain" };
    let open =
        |dir: &std::path::Path| -> Result<(EmbeddedStore, Arc<dyn RegionStore>), BenchError> {
            let engine = EmbeddedStore::open(&dir.join("engine"), EmbeddedOptions::default())?;
            let store: Arc<dyn RegionStore> = if encrypted {
                Arc::new(EncryptedStore::with_keyring_file(
                    Arc::new(engine.clone()),
                    &dir.join("keyring.json"),
                    "ap-mumbai",
                )?)
            } else {
                Arc::new(engine.clone())
            };
            Ok((engine, store))
        };
    let dir = fresh_dir(&o.dir, &format!("{name}-writes"))?;
    let (engine, store) = open(&dir)?;
    let (durable, _) = store_durable_writes(store, move || engine.commits(), o).await?;
    let dir = fresh_dir(&o.dir, &format!("{name}-import"))?;
    let (_, store) = open(&dir)?;
    let order = Arc::new(ImportOrder::new(o.records));
    let imported = import_scan_read(store, &order, o).await?;
    for d in ["writes", "import"] {
        let path = o.dir.join(format!("{name}-{d}"));
        std::fs::remove_dir_all(&path).map_err(|source| BenchError::Io { path, source })?;
    }
    let round = |x: f64| (x * 10.0).round() / 10.0;
    Ok(StoreFigures {
        durable_writes_per_s: round(durable),
        import_records_per_s: round(imported.import),
        scan_records_per_s: round(imported.scan),
        point_reads_per_s: round(imported.reads),
    })
}

/// Runs both pairs; the stores live under `o.dir` and are removed afterwards.
pub async fn run_encryption_bench(
    o: StoreBenchOptions,
    copy_records: u64,
) -> Result<EncryptionBenchReport, BenchError> {
    let store_plain = store_figures(&o, false).await?;
    let store_encrypted = store_figures(&o, true).await?;
    let copy_plain = {
        let dir = fresh_dir(&o.dir, "copy-plain")?;
        run_copy_bench(
            copy_records,
            &CopyEngine::Embedded,
            &CopyEngine::Embedded,
            &dir,
            &Nodes::InProcess { encrypted: false },
        )
        .await?
    };
    let copy_encrypted = {
        let dir = fresh_dir(&o.dir, "copy-encrypted")?;
        run_copy_bench(
            copy_records,
            &CopyEngine::Embedded,
            &CopyEngine::Embedded,
            &dir,
            &Nodes::InProcess { encrypted: true },
        )
        .await?
    };
    for d in ["copy-plain", "copy-encrypted"] {
        let path = o.dir.join(d);
        std::fs::remove_dir_all(&path).map_err(|source| BenchError::Io { path, source })?;
    }
    let ratio = |a: f64, b: f64| (a / b * 100.0).round() / 100.0;
    Ok(EncryptionBenchReport {
        records: o.records,
        writers: o.writers,
        value_bytes: crate::store::VALUE_BYTES,
        durable_writes_ratio: ratio(
            store_encrypted.durable_writes_per_s,
            store_plain.durable_writes_per_s,
        ),
        import_ratio: ratio(
            store_encrypted.import_records_per_s,
            store_plain.import_records_per_s,
        ),
        scan_ratio: ratio(
            store_encrypted.scan_records_per_s,
            store_plain.scan_records_per_s,
        ),
        point_reads_ratio: ratio(
            store_encrypted.point_reads_per_s,
            store_plain.point_reads_per_s,
        ),
        copy_ratio: ratio(copy_encrypted.records_per_s, copy_plain.records_per_s),
        store_plain,
        store_encrypted,
        copy_plain,
        copy_encrypted,
        machine: Machine::current(),
    })
}

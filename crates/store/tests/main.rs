//! Integration tests of the store crate: the conformance suite on the embedded engine, and the
//! engine's own failure behaviour.

mod embedded_conformance {
    use domicile_store::{EmbeddedOptions, EmbeddedStore, RegionStore};
    use futures::future::BoxFuture;
    use std::path::Path;
    use std::sync::Arc;

    fn open_embedded(dir: &Path) -> BoxFuture<'static, Arc<dyn RegionStore>> {
        let dir = dir.to_path_buf();
        Box::pin(async move {
            let store = EmbeddedStore::open(&dir, EmbeddedOptions::default())
                .expect("open the embedded store");
            Arc::new(store) as Arc<dyn RegionStore>
        })
    }

    domicile_store_conformance::suite!(open_embedded);
}

mod blobs;
mod blobs_s3;
mod encryption;
mod poison;
mod postgres;

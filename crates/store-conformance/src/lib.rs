//! The storage conformance suite: written once, run against every `RegionStore` engine.
//!
//! An engine's test file calls [`suite!`] with a function that opens its store in a folder;
//! opening the same folder again must reopen the same store (the durability and crash checks
//! depend on it), also from another process (the crash check's writer). An engine that keeps
//! its data elsewhere (a database server) records in the folder where that is. Every check compares the engine with a simple model, never with itself.

pub mod checks;
pub mod crash;
pub mod fixtures;
pub mod model;

use domicile_store::RegionStore;
use futures::future::BoxFuture;
use std::path::Path;
use std::sync::Arc;

/// Opens (or reopens) an engine's store kept in `dir`.
pub type Open = fn(&Path) -> BoxFuture<'static, Arc<dyn RegionStore>>;

/// For engines that need no outside software: always available.
pub fn always_available() -> bool {
    true
}

/// Expands to one `#[test]` per conformance check for the engine that `$open` opens.
/// With `available = f`, each test first calls `f()` and returns at once when it says `false`
/// (an engine whose server is not installed here; `f` prints why, or panics where it must run).
#[macro_export]
macro_rules! suite {
    ($open:path) => {
        $crate::suite!($open, available = $crate::always_available);
    };
    ($open:path, available = $available:path) => {
        mod conformance {
            use super::*;

            macro_rules! check {
                ($name:ident) => {
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $name() {
                        if !$available() {
                            return;
                        }
                        $crate::checks::$name($open).await;
                    }
                };
            }

            check!(crud_and_versions);
            check!(conditional_writes);
            check!(batches_are_atomic);
            check!(list_order_and_pagination);
            check!(change_log_is_complete_and_ordered);
            check!(change_stream_filters_by_scope_and_pages);
            check!(snapshot_is_isolated_from_concurrent_writes);
            check!(snapshot_chunks_are_bounded_by_bytes);
            check!(import_is_idempotent_and_order_independent);
            check!(digests_are_equal_after_a_copy);
            check!(purge_removes_exactly_the_scope);
            check!(purge_removes_a_scope_larger_than_a_turn);
            check!(concurrent_bulk_imports_and_writes_all_land);
            check!(purge_user_removes_exactly_one_user);
            check!(writes_survive_a_reopen);
            check!(trimmed_change_log_keeps_its_lsns);
            check!(trim_removes_a_log_longer_than_a_chunk);
            check!(meta_lands_with_its_batch_or_not_at_all);
            check!(meta_round_trips);
            check!(meta_lists_by_prefix_and_deletes);

            #[test]
            fn model_based_random_operations() {
                if !$available() {
                    return;
                }
                $crate::model::run($open);
            }

            #[test]
            fn acknowledged_writes_survive_sigkill() {
                if !$available() {
                    return;
                }
                $crate::crash::parent($open, concat!(module_path!(), "::crash_writer_process"));
            }

            /// The writer process of the crash test: does nothing unless the crash test started
            /// this test binary as its child (see `crash::parent`).
            #[test]
            fn crash_writer_process() {
                $crate::crash::child($open);
            }
        }
    };
}

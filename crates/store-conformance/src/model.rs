//! Model-based property test: random operations against the store and a `BTreeMap` model.
//!
//! Reproducible: the seed is fixed (override with `DOMICILE_MODEL_SEED=<u64>`, and the number of
//! cases with `DOMICILE_MODEL_CASES`); a failure prints the seed and the shrunk operation list.

use crate::Open;
use crate::fixtures::{BUCKETS, collection};
use bytes::Bytes;
use domicile_core::{BucketSet, RecordKey, Scope, Version};
use domicile_store::{
    BucketDigester, CollectionAddress, Lsn, Mutation, MutationOp, Precondition, RecordAddress,
    RegionStore, StoreError, VersionedRecord,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Debug, Clone)]
pub enum Op {
    Put {
        user: u8,
        key: u8,
        value: u8,
    },
    PutIfVersion {
        user: u8,
        key: u8,
        stale: bool,
    },
    Delete {
        user: u8,
        key: u8,
    },
    Import {
        user: u8,
        key: u8,
        delta: i8,
        value: Option<u8>,
    },
    Get {
        user: u8,
        key: u8,
    },
    List {
        user: u8,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let (u, k) = (0u8..4, 0u8..6);
    prop_oneof![
        4 => (u.clone(), k.clone(), any::<u8>()).prop_map(|(user, key, value)| Op::Put { user, key, value }),
        1 => (u.clone(), k.clone(), any::<bool>()).prop_map(|(user, key, stale)| Op::PutIfVersion { user, key, stale }),
        2 => (u.clone(), k.clone()).prop_map(|(user, key)| Op::Delete { user, key }),
        2 => (u.clone(), k.clone(), -3i8..4, proptest::option::of(any::<u8>()))
            .prop_map(|(user, key, delta, value)| Op::Import { user, key, delta, value }),
        2 => (u.clone(), k).prop_map(|(user, key)| Op::Get { user, key }),
        1 => u.prop_map(|user| Op::List { user }),
        1 => Just(Op::Reopen),
    ]
}

fn coll(user: u8) -> CollectionAddress {
    collection("messaging", "PH", &format!("m{user}"), "messages")
}

fn address(user: u8, key: u8) -> RecordAddress {
    coll(user).record(RecordKey::new(format!("k{key}")).expect("valid key"))
}

fn value_of(v: u8) -> Bytes {
    Bytes::from(vec![v; usize::from(v % 17)])
}

/// (version, value or tombstone) per (user, key).
type Model = BTreeMap<(u8, u8), (Version, Option<Bytes>)>;

fn live(model: &Model, user: u8, key: u8) -> Option<(Version, Bytes)> {
    model
        .get(&(user, key))
        .and_then(|(v, b)| b.clone().map(|b| (*v, b)))
}

async fn check(open: Open, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let mut store: Arc<dyn RegionStore> = open(dir.path()).await;
    let mut model = Model::new();
    let mut logged = 0u64;
    for op in ops {
        match op {
            Op::Put { user, key, value } => {
                let m = Mutation {
                    address: address(user, key),
                    op: MutationOp::Put(value_of(value)),
                    precondition: Precondition::None,
                };
                let v = store.write(vec![m]).await.map_err(fail)?[0];
                if let Some((old, _)) = model.get(&(user, key)) {
                    prop_assert!(v > *old, "a write outranks what it replaces");
                }
                model.insert((user, key), (v, Some(value_of(value))));
                logged += 1;
            }
            Op::PutIfVersion { user, key, stale } => {
                let current = live(&model, user, key).map(|(v, _)| v);
                let expected = current
                    .map(|v| if stale { Version(v.0 - 1) } else { v })
                    .unwrap_or(Version(1));
                let m = Mutation {
                    address: address(user, key),
                    op: MutationOp::Put(value_of(1)),
                    precondition: Precondition::Version(expected),
                };
                match store.write(vec![m]).await {
                    Ok(v) => {
                        prop_assert!(current == Some(expected));
                        model.insert((user, key), (v[0], Some(value_of(1))));
                        logged += 1;
                    }
                    Err(StoreError::PreconditionFailed { current: c, .. }) => {
                        prop_assert!(current != Some(expected));
                        prop_assert_eq!(c, current);
                    }
                    Err(e) => return Err(fail(e)),
                }
            }
            Op::Delete { user, key } => {
                let m = Mutation {
                    address: address(user, key),
                    op: MutationOp::Delete,
                    precondition: Precondition::None,
                };
                match (store.write(vec![m]).await, live(&model, user, key)) {
                    (Ok(v), Some(_)) => {
                        model.insert((user, key), (v[0], None));
                        logged += 1;
                    }
                    (Err(StoreError::NotFound { .. }), None) => {}
                    (other, expected) => {
                        prop_assert!(false, "delete gave {:?}, model {:?}", other, expected)
                    }
                }
            }
            Op::Import {
                user,
                key,
                delta,
                value,
            } => {
                let base = model.get(&(user, key)).map_or(1000, |(v, _)| v.0);
                let version = Version(base.saturating_add_signed(i64::from(delta)).max(1));
                let record = VersionedRecord {
                    address: address(user, key),
                    version,
                    value: value.map(value_of),
                };
                let outcome = store.import(vec![record]).await.map_err(fail)?;
                let wins = model.get(&(user, key)).is_none_or(|(v, _)| version > *v);
                prop_assert_eq!(outcome.applied, u64::from(wins));
                if wins {
                    model.insert((user, key), (version, value.map(value_of)));
                    logged += 1;
                }
            }
            Op::Get { user, key } => {
                let got = store
                    .get(&address(user, key))
                    .await
                    .map_err(fail)?
                    .map(|r| (r.version, r.value));
                prop_assert_eq!(got, live(&model, user, key));
            }
            Op::List { user } => {
                let page = store.list(&coll(user), None, 100).await.map_err(fail)?;
                let got: Vec<(String, Version)> = page
                    .items
                    .into_iter()
                    .map(|i| (i.key.to_string(), i.version))
                    .collect();
                let mut expected: Vec<(String, Version)> = (0u8..6)
                    .filter_map(|k| live(&model, user, k).map(|(v, _)| (format!("k{k}"), v)))
                    .collect();
                expected.sort();
                prop_assert_eq!(got, expected);
            }
            Op::Reopen => {
                let lsn = store.last_lsn();
                drop(store);
                store = open(dir.path()).await;
                prop_assert_eq!(store.last_lsn(), lsn);
            }
        }
    }
    prop_assert_eq!(
        store.last_lsn(),
        Lsn(logged),
        "one log entry per applied mutation"
    );
    // Digests equal the model's, computed by the shared definition.
    let scope = Scope {
        service: coll(0).service,
        market: coll(0).market,
        buckets: BucketSet::from_ranges([BUCKETS.all()]),
    };
    let digests = store.digest(&scope).await.map_err(fail)?;
    let mut by_bucket: BTreeMap<u16, Vec<(RecordAddress, Version, Bytes)>> = BTreeMap::new();
    for ((user, key), (v, value)) in &model {
        if let Some(value) = value {
            let a = address(*user, *key);
            by_bucket
                .entry(a.bucket().0)
                .or_default()
                .push((a, *v, value.clone()));
        }
    }
    for d in digests {
        let mut digester = BucketDigester::new(d.bucket);
        let mut records = by_bucket.remove(&d.bucket.0).unwrap_or_default();
        records.sort_by(|a, b| a.0.cmp(&b.0));
        for (a, v, value) in &records {
            digester.add(a, *v, value);
        }
        prop_assert_eq!(d, digester.finish());
    }
    Ok(())
}

fn fail(e: StoreError) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Runs the model-based test against the engine `open` opens.
pub fn run(open: Open) {
    let seed: u64 = std::env::var("DOMICILE_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5EED_2026);
    let cases: u32 = std::env::var("DOMICILE_MODEL_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let mut seed_bytes = [0u8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let config = Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner = TestRunner::new_with_rng(
        config,
        TestRng::from_seed(RngAlgorithm::ChaCha, &seed_bytes),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let result = runner.run(&proptest::collection::vec(op(), 1..80), |ops| {
        runtime.block_on(check(open, ops))
    });
    if let Err(e) = result {
        panic!("model-based test failed (DOMICILE_MODEL_SEED={seed}): {e}");
    }
}

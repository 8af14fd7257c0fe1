//! The crash test: a real writer process is killed with SIGKILL mid-stream; afterwards every
//! acknowledged write must be there, intact, and nothing may be half-written.
//!
//! The test binary runs itself again as the writer (`crash_writer_process`, selected by name and
//! told where to write by an environment variable). The writer prints `ack <task> <seq>
//! <version>` after each durable write returns; the parent kills it after enough acks, reads
//! every ack printed before the kill, reopens the store and checks.

use crate::Open;
use crate::fixtures::collection;
use bytes::Bytes;
use domicile_core::{RecordKey, Version};
use domicile_store::{Lsn, Mutation, MutationOp, Precondition, RecordAddress};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const DIR_ENV: &str = "DOMICILE_CRASH_WRITER_DIR";
const TASKS: u32 = 16;
/// Acknowledged writes to wait for before the kill.
const KILL_AFTER: usize = 1500;
/// The writer stops on its own after this many writes per task, should the parent be gone.
const MAX_PER_TASK: u32 = 100_000;

/// Every write is a batch of two records whose values are derived from (task, seq), so the
/// checker knows exactly what each must hold and can see a half-applied batch.
fn pair(task: u32, seq: u32) -> [(RecordAddress, Bytes); 2] {
    let user = format!("crash-{task}");
    let make = |coll: &str, len: usize| {
        let a = collection("cloud", "MY", &user, coll)
            .record(RecordKey::new(format!("s{seq:06}")).expect("key"));
        let byte = (task * 31 + seq) as u8;
        (a, Bytes::from(vec![byte; len]))
    };
    [
        make("notes", 64 + (seq as usize % 900)),
        make("contacts", 200 + (seq as usize % 3000)),
    ]
}

/// The writer: runs only when the parent started this binary with the directory variable set.
pub fn child(open: Open) {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let store = open(std::path::Path::new(&dir)).await;
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for seq in 0..MAX_PER_TASK {
                    let batch = pair(task, seq)
                        .into_iter()
                        .map(|(address, value)| Mutation {
                            address,
                            op: MutationOp::Put(value),
                            precondition: Precondition::None,
                        })
                        .collect();
                    let versions = store.write(batch).await.expect("durable write");
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ack {task} {seq} {}", versions[0].0).expect("stdout");
                    out.flush().expect("stdout");
                }
            }));
        }
        for t in tasks {
            t.await.expect("writer task");
        }
    });
}

/// The checker: starts the writer, kills it, reopens and verifies.
pub fn parent(open: Open, child_test: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Create the store here first: an engine whose data lives on a server this process started
    // records in the folder where, so that the writer process uses the same server.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async { drop(open(dir.path()).await) });
    let exe = std::env::current_exe().expect("test binary path");
    // libtest names the test without the crate prefix.
    let name = child_test
        .split_once("::")
        .map_or(child_test, |(_, rest)| rest);
    let mut child = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(DIR_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the writer process");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut acked: BTreeMap<(u32, u32), Version> = BTreeMap::new();
    let mut killed = false;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("read the writer's output");
        let mut parts = line.split_whitespace();
        if parts.next() != Some("ack") {
            continue;
        }
        let mut field = || {
            parts
                .next()
                .and_then(|p| p.parse::<u64>().ok())
                .expect("ack field")
        };
        let (task, seq, version) = (field() as u32, field() as u32, Version(field()));
        acked.insert((task, seq), version);
        if !killed && acked.len() >= KILL_AFTER {
            child.kill().expect("SIGKILL the writer");
            killed = true;
        }
    }
    let status = child.wait().expect("reap the writer");
    assert!(killed, "the writer ended before it was killed: {status:?}");
    assert!(!status.success(), "the writer was killed, not finished");

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let store = open(dir.path()).await;
        for (&(task, seq), version) in &acked {
            for (address, value) in pair(task, seq) {
                let got = store.get(&address).await.expect("read after crash");
                let got = got.unwrap_or_else(|| panic!("acknowledged write {task}/{seq} lost"));
                assert_eq!(
                    got.value, value,
                    "acknowledged write {task}/{seq} corrupted"
                );
                if address.collection.collection.as_str() == "notes" {
                    assert_eq!(got.version, *version);
                }
            }
        }
        // Unacknowledged writes may or may not have landed, but never half a batch, and every
        // record present is intact.
        for task in 0..TASKS {
            let last_acked = acked
                .range((task, 0)..=(task, u32::MAX))
                .next_back()
                .map_or(0, |((_, s), _)| *s);
            for seq in last_acked + 1..last_acked + 50 {
                let [(a1, v1), (a2, v2)] = pair(task, seq);
                let (g1, g2) = (
                    store.get(&a1).await.expect("read"),
                    store.get(&a2).await.expect("read"),
                );
                assert_eq!(
                    g1.is_some(),
                    g2.is_some(),
                    "batch {task}/{seq} half-written"
                );
                if let (Some(g1), Some(g2)) = (g1, g2) {
                    assert_eq!(
                        (g1.value, g2.value),
                        (v1, v2),
                        "batch {task}/{seq} corrupted"
                    );
                }
            }
        }
        // The change log is dense and holds one entry per record written.
        let scope = crate::fixtures::whole("cloud", "MY");
        let (changes, _) = store
            .changes(Lsn(0), &scope, usize::MAX)
            .await
            .expect("change log");
        assert_eq!(changes.len() as u64, store.last_lsn().0);
        assert!(
            changes
                .iter()
                .enumerate()
                .all(|(i, c)| c.entry.lsn == Lsn(i as u64 + 1))
        );
        assert!(changes.len() >= 2 * acked.len());
    });
}

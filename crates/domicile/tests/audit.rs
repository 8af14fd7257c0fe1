//! The transfer ledger end to end: a real control plane process records events and signs
//! checkpoints; `domicile audit show --json` exports the ledger; `domicile audit verify` accepts
//! the export against the pinned public key, and detects every way of tampering with it —
//! naming the first bad entry.

use super::cluster_processes::{Process, certs, member_client, url};
use domicile_client::control::ControlClient;
use domicile_control::ledger::{
    GENESIS, LedgerEntry, LedgerExport, LedgerKey, checkpoint_entry, hash_of, kind, seal,
};
use domicile_core::{CollectionName, RegionId, ServiceName, UserId};
use domicile_wire::ledger::{
    ConsentRevocation, DestructionReason, Erasure, KeyDestruction, LedgerEvent,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A control plane over TLS with the test's certificates (`dir/tls`, made once).
fn start_control(dir: &Path) -> Process {
    let tls = dir.join("tls");
    if !tls.exists() {
        certs(dir);
    }
    let config = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/reference-cluster.toml"
    );
    super::cluster_processes::start_control(dir, Path::new(config), &tls, 0)
}

fn cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_domicile"))
        .args(args)
        .output()
        .expect("run domicile")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `audit verify` on `export` (written to a file) against the pinned key: `Ok(stdout)` or
/// `Err(the one stderr line)`.
fn verify_file(
    dir: &Path,
    name: &str,
    export: &LedgerExport,
    key: &Path,
) -> Result<String, String> {
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(export).unwrap()).unwrap();
    let out = cli(&[
        "audit",
        "verify",
        "--file",
        &path.display().to_string(),
        "--public-key",
        &key.display().to_string(),
    ]);
    if out.status.success() {
        return Ok(text(&out.stdout));
    }
    assert_eq!(out.status.code(), Some(1), "{name}");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{name}: {stderr}");
    Err(stderr)
}

fn erasure(user: &str, records: u64) -> Erasure {
    Erasure {
        user: UserId::new(user).unwrap(),
        regions: vec![
            RegionId::new("cn-beijing").unwrap(),
            RegionId::new("ap-singapore").unwrap(),
        ],
        records,
        blobs: 1,
        keys_destroyed: 2,
    }
}

/// Recomputes every hash from index `from` on, as an attacker who edits and re-chains would
/// (a checkpoint's `head` follows, its signature cannot).
fn rechain(entries: &mut [LedgerEntry], from: usize) {
    for i in from..entries.len() {
        let prev = if i == 0 {
            GENESIS.to_string()
        } else {
            entries[i - 1].hash.clone()
        };
        let e = &mut entries[i];
        e.prev = prev;
        if e.kind == kind::CHECKPOINT
            && let Some(map) = e.body.as_object_mut()
        {
            map.insert("head".into(), e.prev.clone().into());
        }
        e.hash = hash_of(e.seq, e.time_ms, &e.kind, &e.id, &e.body, &e.prev);
    }
}

/// A forged entry appended with a correct chain.
fn forged_after(entries: &[LedgerEntry]) -> LedgerEntry {
    let last = entries.last().unwrap();
    seal(
        last.seq + 1,
        last.time_ms + 1,
        kind::ERASURE,
        "forged",
        serde_json::to_value(erasure("mallory", 0)).unwrap(),
        &last.hash,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_verify_detects_every_kind_of_tampering_and_names_the_first_bad_entry() {
    let dir = tempfile::tempdir().unwrap();
    let mut control = start_control(dir.path());
    let base = url(&control, "control");
    let token_file = control.ready["admin_token_file"]
        .as_str()
        .unwrap()
        .to_string();
    let pinned = PathBuf::from(control.ready["ledger_public_key_file"].as_str().unwrap());
    let pinned_text = std::fs::read_to_string(&pinned).unwrap();
    let admin = std::fs::read_to_string(&token_file).unwrap();
    let http = member_client(&dir.path().join("tls"));
    let ca = dir.path().join("tls/ca.pem").display().to_string();
    let client = ControlClient::new(base.clone(), http.clone());

    // Events as the gateway and region nodes will record them; a retry is not appended twice.
    let e1 = LedgerEvent::new("erasure/alice", &erasure("alice", 7)).unwrap();
    assert_eq!(client.record_ledger_event(&e1).await.unwrap(), 1);
    let kd = KeyDestruction {
        region: RegionId::new("cn-beijing").unwrap(),
        service: ServiceName::new("ecommerce").unwrap(),
        users: 1,
        user: Some(UserId::new("alice").unwrap()),
        reason: DestructionReason::Erased,
    };
    let e2 = LedgerEvent::new("keys/alice/cn-beijing", &kd).unwrap();
    assert_eq!(client.record_ledger_event(&e2).await.unwrap(), 2);
    assert_eq!(client.record_ledger_event(&e1).await.unwrap(), 1);
    // Signed on demand: entry 3.
    let r = http
        .post(format!("{base}/admin/ledger/checkpoint"))
        .bearer_auth(admin.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.json::<Value>().await.unwrap()["seq"], 3);
    let cr = ConsentRevocation {
        user: UserId::new("bob").unwrap(),
        collection: CollectionName::new("photos").unwrap(),
        purpose: "marketing".into(),
        records_erased: 3,
    };
    let e4 = LedgerEvent::new("consent/bob/photos", &cr).unwrap();
    assert_eq!(client.record_ledger_event(&e4).await.unwrap(), 4);
    let e5 = LedgerEvent::new("erasure/carol", &erasure("carol", 2)).unwrap();
    assert_eq!(client.record_ledger_event(&e5).await.unwrap(), 5);

    // Nothing else is accepted from outside, and the admin API wants its credential.
    for bad in [
        json!({"kind": "transfer", "id": "t", "body": {}}),
        json!({"kind": "checkpoint", "id": "c", "body": {}}),
        json!({"kind": "erasure", "id": "e", "body": {"user": "bad id"}}),
    ] {
        let r = http
            .post(format!("{base}/internal/ledger/events"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], "event_refused", "{body}");
    }
    // An operator name is 1-128 printable characters (it goes into every transfer entry).
    let r = http
        .post(format!("{base}/admin/migrations"))
        .bearer_auth(admin.trim())
        .header("x-domicile-operator", "x".repeat(129))
        .body("name = \"p\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"]["code"],
        "invalid_operator"
    );
    let r = http
        .get(format!("{base}/admin/ledger"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(r.json::<Value>().await.unwrap()["error"]["code"].is_string());

    // The export, through the CLI: the control plane signs the head first (entry 6).
    let out = cli(&[
        "audit",
        "show",
        "--json",
        "--ca-file",
        &ca,
        "--control",
        &base,
        "--admin-token-file",
        &token_file,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let export: LedgerExport = serde_json::from_slice(&out.stdout).unwrap();
    let kinds: Vec<&str> = export.entries.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "erasure",
            "key_destruction",
            "checkpoint",
            "consent_revocation",
            "erasure",
            "checkpoint"
        ]
    );
    assert_eq!(export.public_key, pinned_text.trim());
    let good = verify_file(dir.path(), "good", &export, &pinned).unwrap();
    assert!(
        good.starts_with(&format!(
            "ledger verified: 6 entries, 2 checkpoints, head {}\n",
            export.entries[5].hash
        )),
        "{good}"
    );
    assert!(good.contains("(pinned from"), "{good}");

    // Online, unpinned: verified, and it says the key was not pinned. Readable blocks.
    let online = cli(&[
        "audit",
        "verify",
        "--ca-file",
        &ca,
        "--control",
        &base,
        "--admin-token-file",
        &token_file,
    ]);
    assert!(online.status.success(), "{}", text(&online.stderr));
    assert!(text(&online.stdout).contains("NOT pinned"));
    let shown = cli(&[
        "audit",
        "show",
        "--ca-file",
        &ca,
        "--control",
        &base,
        "--admin-token-file",
        &token_file,
    ]);
    let shown = text(&shown.stdout);
    assert!(shown.contains("entry 4  "), "{shown}");
    assert!(
        shown.contains("  consent_revocation  consent/bob/photos\n"),
        "{shown}"
    );
    assert!(shown.contains("  records_erased  3\n"), "{shown}");

    // The key survives a restart: the same public key, the same ledger, still verified.
    drop(control);
    control = start_control(dir.path());
    assert_eq!(std::fs::read_to_string(&pinned).unwrap(), pinned_text);
    let after = cli(&[
        "audit",
        "verify",
        "--ca-file",
        &ca,
        "--control",
        &url(&control, "control"),
        "--admin-token-file",
        &token_file,
        "--public-key",
        &pinned.display().to_string(),
    ]);
    assert!(after.status.success(), "{}", text(&after.stderr));
    assert!(text(&after.stdout).starts_with("ledger verified: 6 entries, 2 checkpoints"));

    // Tampering, every way; each must be refused, naming the first bad entry.
    let other = LedgerKey::generate();
    let e = &export.entries;
    let mut cases: Vec<(&str, LedgerExport, u64, &str)> = Vec::new();
    let with = |entries: Vec<LedgerEntry>| LedgerExport {
        entries,
        ..export.clone()
    };

    let mut edited = e.clone();
    edited[3].body["records_erased"] = json!(0);
    cases.push((
        "edit a body field",
        with(edited.clone()),
        4,
        "hash does not match",
    ));
    rechain(&mut edited, 3);
    cases.push((
        "edit a body field and re-chain",
        with(edited),
        6,
        "signature does not verify",
    ));

    let mut edited_time = e.clone();
    edited_time[0].time_ms += 1;
    cases.push(("edit a time", with(edited_time), 1, "hash does not match"));

    let mut deleted = e.clone();
    deleted.remove(1);
    cases.push(("delete an entry", with(deleted.clone()), 2, "found entry 3"));
    for (i, d) in deleted.iter_mut().enumerate() {
        d.seq = i as u64 + 1;
    }
    rechain(&mut deleted, 0);
    cases.push((
        "delete an entry, renumber and re-chain",
        with(deleted),
        2,
        "checkpoint does not say it covers",
    ));

    let mut truncated = e.clone();
    truncated.pop();
    cases.push((
        "delete the last checkpoint",
        with(truncated),
        4,
        "not covered by any checkpoint",
    ));

    let mut reordered = e.clone();
    reordered.swap(0, 1);
    cases.push((
        "reorder two entries",
        with(reordered.clone()),
        1,
        "found entry 2",
    ));
    reordered.swap(0, 1);
    reordered.swap(3, 4);
    let (s3, s4) = (reordered[3].seq, reordered[4].seq);
    reordered[3].seq = s4;
    reordered[4].seq = s3;
    rechain(&mut reordered, 3);
    cases.push((
        "reorder two entries, renumber and re-chain",
        with(reordered),
        6,
        "signature does not verify",
    ));

    let mut appended = e.clone();
    appended.push(forged_after(e));
    cases.push((
        "append a forged entry (correct chain, unsigned)",
        with(appended.clone()),
        7,
        "not covered by any checkpoint",
    ));

    let mut other_key = appended.clone();
    let last = &appended[6];
    other_key.push(checkpoint_entry(
        &other,
        8,
        last.time_ms,
        "c",
        "forged",
        &last.hash,
    ));
    cases.push((
        "append a forged entry with a checkpoint signed by another key",
        with(other_key),
        8,
        "not by the trusted key",
    ));

    let mut claimed = appended.clone();
    let mut cp = checkpoint_entry(&other, 8, last.time_ms, "c", "forged", &last.hash);
    cp.body["key_id"] = json!(export.key_id);
    cp.hash = hash_of(cp.seq, cp.time_ms, &cp.kind, &cp.id, &cp.body, &cp.prev);
    claimed.push(cp);
    cases.push((
        "append a forged entry with a checkpoint claiming the trusted key",
        with(claimed),
        8,
        "signature does not verify",
    ));

    let mut forged_sig = e.clone();
    let sig = forged_sig[2].body["signature"]
        .as_str()
        .unwrap()
        .to_string();
    let flipped = if sig.starts_with('0') { "1" } else { "0" };
    forged_sig[2].body["signature"] = json!(format!("{flipped}{}", &sig[1..]));
    rechain(&mut forged_sig, 2);
    cases.push((
        "forge a checkpoint's signature",
        with(forged_sig),
        3,
        "signature does not verify",
    ));

    // Everything re-signed with another key, the export naming that key: caught by the pin.
    let mut resigned: Vec<LedgerEntry> = Vec::new();
    for x in e {
        let prev = resigned
            .last()
            .map_or(GENESIS.to_string(), |p| p.hash.clone());
        let mut body = x.body.clone();
        if x.seq == 1 {
            body["records"] = json!(0);
        }
        resigned.push(if x.kind == kind::CHECKPOINT {
            checkpoint_entry(&other, x.seq, x.time_ms, &x.id, "forged", &prev)
        } else {
            seal(x.seq, x.time_ms, &x.kind, &x.id, body, &prev)
        });
    }
    let mut resigned_export = with(resigned);
    resigned_export.public_key = other.public().hex();
    resigned_export.key_id = other.public().id().to_string();
    cases.push((
        "re-sign the whole ledger with another key",
        resigned_export.clone(),
        3,
        "not by the trusted key",
    ));

    let (total, mut detected) = (cases.len(), 0);
    for (i, (what, tampered, seq, why)) in cases.into_iter().enumerate() {
        let err = verify_file(dir.path(), &format!("case{i}"), &tampered, &pinned).expect_err(what);
        assert!(
            err.starts_with(&format!("domicile: ledger NOT verified: entry {seq}: "))
                && err.contains(why),
            "{what}: {err}"
        );
        eprintln!("detected: {what}: {}", err.trim());
        detected += 1;
    }
    eprintln!(
        "ledger tampering: {detected} of {total} cases detected, each naming its first bad entry"
    );
    assert_eq!(detected, total);

    // Without a pinned key, the re-signed ledger verifies against the key it names: which is
    // why the output says so.
    let path = dir.path().join("resigned.json");
    std::fs::write(&path, serde_json::to_vec(&resigned_export).unwrap()).unwrap();
    let unpinned = cli(&["audit", "verify", "--file", &path.display().to_string()]);
    assert!(unpinned.status.success(), "{}", text(&unpinned.stderr));
    assert!(text(&unpinned.stdout).contains("NOT pinned"));

    // An unsigned tail is reported, not refused, with --allow-unsigned-tail.
    let mut tail = export.clone();
    tail.entries.push(forged_after(&export.entries));
    let path = dir.path().join("tail.json");
    std::fs::write(&path, serde_json::to_vec(&tail).unwrap()).unwrap();
    let allowed = cli(&[
        "audit",
        "verify",
        "--file",
        &path.display().to_string(),
        "--public-key",
        &pinned.display().to_string(),
        "--allow-unsigned-tail",
    ]);
    assert!(allowed.status.success(), "{}", text(&allowed.stderr));
    assert!(text(&allowed.stdout).contains("unsigned tail: entries 7..=7"));

    // Bad input: one line, non-zero.
    for (args, expected) in [
        (vec!["audit", "verify"], "name the ledger"),
        (
            vec!["audit", "verify", "--file", "/nonexistent/ledger.json"],
            "read ledger",
        ),
        (
            vec![
                "audit",
                "verify",
                "--file",
                &token_file,
                "--public-key",
                &token_file,
            ],
            "is not an export",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_domicile"))
            .args(&args)
            .env_remove("DOMICILE_CONTROL")
            .env_remove("DOMICILE_ADMIN_TOKEN_FILE")
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
    }
}

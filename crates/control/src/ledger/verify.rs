//! Verifying a ledger: the hash chain, every checkpoint's signature against a trusted key, and
//! which entries a valid checkpoint covers. Pure: used by the control plane, `domicile audit`
//! and the demo alike.

use super::{GENESIS, LedgerEntry, VerifyingKey, hash_of, kind, signed_message};
use serde::Serialize;

/// The first entry that does not verify, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadEntry {
    pub seq: u64,
    pub reason: String,
}

impl std::fmt::Display for BadEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "entry {}: {}", self.seq, self.reason)
    }
}

impl std::error::Error for BadEntry {}

fn bad(seq: u64, reason: impl Into<String>) -> BadEntry {
    BadEntry {
        seq,
        reason: reason.into(),
    }
}

/// What a verified ledger holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    pub entries: u64,
    pub checkpoints: u64,
    /// The last entry's hash (64 zeros for an empty ledger).
    pub head: String,
    /// The last entry a valid checkpoint covers (itself included); 0 if none.
    pub signed_through: u64,
}

impl Verified {
    /// The entries after the last valid checkpoint (first, last), if any.
    pub fn unsigned_tail(&self) -> Option<(u64, u64)> {
        (self.entries > self.signed_through).then_some((self.signed_through + 1, self.entries))
    }

    /// Refuses an unsigned tail, naming its first entry: with no signature over them, entries
    /// appended after the last checkpoint could have been appended by anyone.
    pub fn require_signed(&self) -> Result<(), BadEntry> {
        match self.unsigned_tail() {
            None => Ok(()),
            Some((first, last)) => Err(bad(
                first,
                format!(
                    "not covered by any checkpoint (entries {first}..={last} are unsigned: anyone could have appended them)"
                ),
            )),
        }
    }
}

/// Checks the hash chain alone; the error names the first bad entry.
pub fn verify_chain(entries: &[LedgerEntry]) -> Result<(), BadEntry> {
    let mut prev = GENESIS;
    for (i, e) in entries.iter().enumerate() {
        chain_link(i as u64 + 1, prev, e)?;
        prev = &e.hash;
    }
    Ok(())
}

fn chain_link(expected: u64, prev: &str, e: &LedgerEntry) -> Result<(), BadEntry> {
    if e.seq != expected {
        return Err(bad(
            expected,
            format!(
                "expected here, found entry {} (entries were removed, reordered or inserted)",
                e.seq
            ),
        ));
    }
    if e.prev != prev {
        return Err(bad(
            e.seq,
            format!(
                "does not follow entry {} (its prev is not that entry's hash)",
                e.seq - 1
            ),
        ));
    }
    if hash_of(e.seq, e.time_ms, &e.kind, &e.id, &e.body, &e.prev) != e.hash {
        return Err(bad(e.seq, "its hash does not match its contents (edited)"));
    }
    Ok(())
}

/// Checks the chain and every checkpoint's signature against `key`, in order; the error names
/// the first bad entry. An unsigned tail is not an error here: see [`Verified::require_signed`].
pub fn verify(entries: &[LedgerEntry], key: &VerifyingKey) -> Result<Verified, BadEntry> {
    let mut prev = GENESIS;
    let mut checkpoints = 0;
    let mut signed_through = 0;
    for (i, e) in entries.iter().enumerate() {
        chain_link(i as u64 + 1, prev, e)?;
        if e.kind == kind::CHECKPOINT {
            check_checkpoint(e, key, signed_through)?;
            checkpoints += 1;
            signed_through = e.seq;
        }
        prev = &e.hash;
    }
    Ok(Verified {
        entries: entries.len() as u64,
        checkpoints,
        head: prev.to_string(),
        signed_through,
    })
}

fn check_checkpoint(
    e: &LedgerEntry,
    key: &VerifyingKey,
    signed_through: u64,
) -> Result<(), BadEntry> {
    let field = |name: &str| e.body.get(name);
    let covers = field("covers").and_then(serde_json::Value::as_u64);
    if covers != Some(e.seq - 1) || field("head").and_then(|h| h.as_str()) != Some(e.prev.as_str())
    {
        return Err(bad(
            e.seq,
            format!(
                "checkpoint does not say it covers the entry before it (covers {}, head {})",
                covers.map_or("-".to_string(), |c| c.to_string()),
                field("head").and_then(|h| h.as_str()).unwrap_or("-")
            ),
        ));
    }
    let key_id = field("key_id").and_then(|k| k.as_str()).unwrap_or("-");
    if key_id != key.id() {
        return Err(bad(
            e.seq,
            format!(
                "checkpoint is signed by key {key_id}, not by the trusted key {}",
                key.id()
            ),
        ));
    }
    let signature = field("signature").and_then(|s| s.as_str()).unwrap_or("");
    if !key.verifies(&signed_message(e), signature) {
        let first = signed_through + 1;
        return Err(bad(
            e.seq,
            format!(
                "checkpoint signature does not verify against key {}: it is forged, or entries {first}..={} are not what it signed",
                key.id(),
                e.seq
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{LedgerKey, checkpoint_entry, seal};
    use super::*;
    use serde_json::json;

    /// `n` transfer entries with a checkpoint after every `every`.
    fn chain(key: &LedgerKey, n: u64, every: u64) -> Vec<LedgerEntry> {
        let mut out: Vec<LedgerEntry> = Vec::new();
        let mut transfers = 0;
        while transfers < n {
            let seq = out.len() as u64 + 1;
            let prev = out.last().map_or(GENESIS.to_string(), |e| e.hash.clone());
            transfers += 1;
            out.push(seal(
                seq,
                1000 + seq,
                "transfer",
                &format!("t{transfers}"),
                json!({ "records": transfers * 10 }),
                &prev,
            ));
            if transfers % every == 0 {
                let prev = out.last().map_or(String::new(), |e| e.hash.clone());
                out.push(checkpoint_entry(
                    key,
                    seq + 1,
                    1000 + seq + 1,
                    &format!("c{seq}"),
                    "test",
                    &prev,
                ));
            }
        }
        out
    }

    /// Recomputes every hash from `from` (0-based) on: an attacker who edits and re-chains.
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

    fn first_bad(entries: &[LedgerEntry], key: &LedgerKey) -> BadEntry {
        match verify(entries, key.public()) {
            Ok(v) => v.require_signed().unwrap_err(),
            Err(e) => e,
        }
    }

    #[test]
    fn a_good_ledger_verifies_and_reports_its_unsigned_tail() {
        let key = LedgerKey::generate();
        let good = chain(&key, 6, 3);
        let v = verify(&good, key.public()).unwrap();
        assert_eq!((v.entries, v.checkpoints, v.signed_through), (8, 2, 8));
        assert_eq!(v.head, good[7].hash);
        v.require_signed().unwrap();
        verify_chain(&good).unwrap();
        let tail = chain(&key, 7, 3);
        let v = verify(&tail, key.public()).unwrap();
        assert_eq!(v.unsigned_tail(), Some((9, 9)));
        assert_eq!(v.require_signed().unwrap_err().seq, 9);
        let empty = verify(&[], key.public()).unwrap();
        assert_eq!((empty.entries, empty.head.as_str()), (0, GENESIS));
    }

    #[test]
    fn edits_removals_reorders_and_forgeries_name_the_first_bad_entry() {
        let key = LedgerKey::generate();
        let good = chain(&key, 6, 3); // t t t C t t t C: seqs 1-8
        let mut cases: Vec<(&str, Vec<LedgerEntry>, u64, &str)> = Vec::new();

        let mut edited = good.clone();
        edited[1].body = json!({ "records": 1 });
        cases.push(("edit", edited.clone(), 2, "hash does not match"));
        rechain(&mut edited, 1);
        cases.push(("edit, re-chained", edited, 4, "signature does not verify"));

        let mut removed = good.clone();
        removed.remove(1);
        cases.push(("removal", removed, 2, "found entry 3"));

        let mut reordered = good.clone();
        reordered.swap(4, 5);
        cases.push(("reorder", reordered, 5, "found entry 6"));

        let mut appended = good.clone();
        appended.push(seal(
            9,
            2000,
            "transfer",
            "forged",
            json!({"records": 1}),
            &good[7].hash,
        ));
        cases.push((
            "appended, unsigned",
            appended.clone(),
            9,
            "not covered by any checkpoint",
        ));

        let other = LedgerKey::generate();
        let mut other_signed = appended.clone();
        other_signed.push(checkpoint_entry(
            &other,
            10,
            2001,
            "c",
            "forged",
            &appended[8].hash,
        ));
        cases.push((
            "appended, other key",
            other_signed,
            10,
            "not by the trusted key",
        ));

        let mut claimed = appended.clone();
        let mut forged = checkpoint_entry(&other, 10, 2001, "c", "forged", &appended[8].hash);
        if let Some(map) = forged.body.as_object_mut() {
            map.insert("key_id".into(), key.public().id().into());
        }
        forged.hash = hash_of(
            10,
            2001,
            &forged.kind,
            &forged.id,
            &forged.body,
            &forged.prev,
        );
        claimed.push(forged);
        cases.push((
            "appended, forged signature",
            claimed,
            10,
            "signature does not verify",
        ));

        let mut flipped = good.clone();
        if let Some(map) = flipped[3].body.as_object_mut() {
            let sig = map["signature"]
                .as_str()
                .unwrap_or("")
                .replacen('0', "1", 1)
                .replacen('a', "b", 1);
            map.insert("signature".into(), sig.into());
        }
        rechain(&mut flipped, 3);
        cases.push((
            "checkpoint signature edited",
            flipped,
            4,
            "signature does not verify",
        ));

        let mut moved = good.clone();
        if let Some(map) = moved[7].body.as_object_mut() {
            map.insert("covers".into(), 3.into());
        }
        rechain(&mut moved, 7);
        cases.push((
            "checkpoint covers edited",
            moved,
            8,
            "does not say it covers",
        ));

        for (what, entries, seq, why) in cases {
            let e = first_bad(&entries, &key);
            assert_eq!(e.seq, seq, "{what}: {e}");
            assert!(e.to_string().contains(why), "{what}: {e}");
        }
    }
}

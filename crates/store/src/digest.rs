//! Bucket digests: equal data ⇒ equal digest, on any engine.
//!
//! A digest is BLAKE3 over the bucket's *live* records in (user, collection, key) byte order;
//! each record contributes its length-prefixed user, collection and key, its version (u64,
//! big-endian) and the BLAKE3 hash of its value. Tombstones do not count, so two regions holding
//! the same live data agree whatever tombstones each still keeps. Every engine feeds records in
//! the same order through [`BucketDigester`], so the definition lives in one place.

use crate::record::RecordAddress;
use domicile_core::{Bucket, Version};
use serde::{Deserialize, Serialize};

/// The digest of one bucket of a scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketDigest {
    pub bucket: Bucket,
    pub records: u64,
    /// Users with at least one live record in the bucket (what a ledger entry counts).
    #[serde(default)]
    pub users: u64,
    #[serde(with = "hex32")]
    pub digest: [u8; 32],
}

/// Accumulates one bucket's digest; feed live records in (user, collection, key) order.
pub struct BucketDigester {
    bucket: Bucket,
    records: u64,
    users: u64,
    /// Records arrive grouped by user, so a new user is a change from the last one.
    last_user: Option<String>,
    hasher: blake3::Hasher,
}

impl BucketDigester {
    pub fn new(bucket: Bucket) -> Self {
        Self {
            bucket,
            records: 0,
            users: 0,
            last_user: None,
            hasher: blake3::Hasher::new(),
        }
    }

    pub fn add(&mut self, address: &RecordAddress, version: Version, value: &[u8]) {
        let c = &address.collection;
        if self.last_user.as_deref() != Some(c.user.as_str()) {
            self.users += 1;
            self.last_user = Some(c.user.as_str().to_string());
        }
        // Ids are validated to at most 256 bytes, so the length prefixes cannot truncate.
        self.hasher.update(&[c.user.as_str().len() as u8]);
        self.hasher.update(c.user.as_str().as_bytes());
        self.hasher.update(&[c.collection.as_str().len() as u8]);
        self.hasher.update(c.collection.as_str().as_bytes());
        self.hasher
            .update(&(address.key.as_str().len() as u16).to_be_bytes());
        self.hasher.update(address.key.as_str().as_bytes());
        self.hasher.update(&version.0.to_be_bytes());
        self.hasher.update(blake3::hash(value).as_bytes());
        self.records += 1;
    }

    pub fn finish(self) -> BucketDigest {
        BucketDigest {
            bucket: self.bucket,
            records: self.records,
            users: self.users,
            digest: *self.hasher.finalize().as_bytes(),
        }
    }
}

mod hex32 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
        s.serialize_str(&hex)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        let bad = || serde::de::Error::custom("expected 64 hex digits");
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(s.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16)
                .map_err(|_| bad())?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::{BucketCount, CollectionName, Market, RecordKey, ServiceName, UserId};

    fn at(user: &str, collection: &str, key: &str) -> RecordAddress {
        crate::record::CollectionAddress::new(
            ServiceName::new("cloud").unwrap(),
            Market::new("SG").unwrap(),
            UserId::new(user).unwrap(),
            CollectionName::new(collection).unwrap(),
            BucketCount::default(),
        )
        .record(RecordKey::new(key).unwrap())
    }

    #[test]
    fn a_digest_counts_records_and_users() {
        let mut d = BucketDigester::new(Bucket(0));
        for (u, c, k) in [
            ("ann", "notes", "1"),
            ("ann", "photos", "p"),
            ("bob", "notes", "1"),
        ] {
            d.add(&at(u, c, k), Version(1), b"v");
        }
        let done = d.finish();
        assert_eq!((done.records, done.users), (3, 2));
        assert_eq!(BucketDigester::new(Bucket(0)).finish().users, 0);
    }
}

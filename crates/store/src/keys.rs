//! The record-key byte layout both engines share (the PostgreSQL engine keys its rows by the same
//! bytes, so both order records identically), and the embedded engine's value and change-log
//! layout (see docs/design/embedded-layout.md).
//!
//! records:  service 0x00 market(2) bucket(u16 BE) user 0x00 collection 0x00 key
//!           → flags(u8: bit 0 = tombstone) version(u64 BE) value
//! changes:  lsn(u64 BE) → format(u8 = 1) op(u8: 1 put, 2 delete) version(u64 BE) record-key
//! meta:     name → value
//!
//! Ids never contain NUL (see `domicile_core::ids`), so NUL-terminated fields sort exactly as the
//! tuple (service, market, bucket, user, collection, key) does, and a collection is a prefix.

use crate::error::StoreError;
use crate::record::{ChangeEntry, ChangeOp, CollectionAddress, Lsn, RecordAddress};
use domicile_core::{
    Bucket, BucketRange, CollectionName, Market, RecordKey, ServiceName, UserId, Version,
};

const TOMBSTONE: u8 = 1;
const CHANGE_FORMAT: u8 = 1;

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

/// `service 0x00 market`: the prefix of everything one service holds for one market.
pub fn market_prefix(service: &ServiceName, market: Market) -> Vec<u8> {
    let mut k = Vec::with_capacity(service.as_str().len() + 3 + 2);
    k.extend_from_slice(service.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&market.as_bytes());
    k
}

pub fn bucket_prefix(service: &ServiceName, market: Market, bucket: Bucket) -> Vec<u8> {
    let mut k = market_prefix(service, market);
    k.extend_from_slice(&bucket.0.to_be_bytes());
    k
}

/// The half-open key range `[start, end)` of a bucket range.
pub fn bucket_range_bounds(
    service: &ServiceName,
    market: Market,
    range: BucketRange,
) -> (Vec<u8>, Vec<u8>) {
    let start = bucket_prefix(service, market, Bucket(range.first));
    let end = match range.last.checked_add(1) {
        Some(next) => bucket_prefix(service, market, Bucket(next)),
        None => {
            // Past bucket 0xFFFF: users are ASCII, so no key continues with 0xFF.
            let mut end = bucket_prefix(service, market, Bucket(u16::MAX));
            end.push(0xFF);
            end
        }
    };
    (start, end)
}

/// The half-open key range `[start, end)` of everything one user holds in one service and
/// market: `… user 0x00` up to `… user 0x01` (ids hold no NUL, so no other user's key is in it).
pub fn user_bounds(
    service: &ServiceName,
    market: Market,
    user: &UserId,
    buckets: domicile_core::BucketCount,
) -> (Vec<u8>, Vec<u8>) {
    let mut start = bucket_prefix(service, market, buckets.bucket_of(user));
    start.extend_from_slice(user.as_str().as_bytes());
    let mut end = start.clone();
    start.push(0);
    end.push(1);
    (start, end)
}

pub fn collection_prefix(c: &CollectionAddress) -> Vec<u8> {
    let mut k = bucket_prefix(&c.service, c.market, c.bucket);
    k.extend_from_slice(c.user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(c.collection.as_str().as_bytes());
    k.push(0);
    k
}

/// The stored keys of one collection's records after a given key: what `list` reads.
pub struct ListRange {
    /// First key to read (inclusive).
    pub start: Vec<u8>,
    /// Past the collection (exclusive).
    pub end: Vec<u8>,
    prefix_len: usize,
}

impl ListRange {
    /// Keys never hold NUL, so "after k" is "at or after k + NUL"; the prefix ends with the NUL
    /// after the collection, and 0x01 in its place bounds the collection from above.
    pub fn new(c: &CollectionAddress, after: Option<&RecordKey>) -> Self {
        let prefix = collection_prefix(c);
        let prefix_len = prefix.len();
        let mut end = prefix.clone();
        if let Some(last) = end.last_mut() {
            *last = 1;
        }
        let mut start = prefix;
        if let Some(k) = after {
            start.extend_from_slice(k.as_str().as_bytes());
            start.push(0);
        }
        Self {
            start,
            end,
            prefix_len,
        }
    }

    /// The record key of a stored key from this range.
    pub fn record_key_of(&self, stored: &[u8]) -> Result<RecordKey, StoreError> {
        stored
            .get(self.prefix_len..)
            .and_then(|s| std::str::from_utf8(s).ok())
            .and_then(|s| RecordKey::new(s).ok())
            .ok_or_else(|| corrupt("record key"))
    }
}

pub fn record_key(a: &RecordAddress) -> Vec<u8> {
    let mut k = collection_prefix(&a.collection);
    k.extend_from_slice(a.key.as_str().as_bytes());
    k
}

fn split_nul(bytes: &[u8]) -> Result<(&str, &[u8]), StoreError> {
    let at = bytes
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt("record key field"))?;
    let field = std::str::from_utf8(&bytes[..at]).map_err(|_| corrupt("record key utf-8"))?;
    Ok((field, &bytes[at + 1..]))
}

pub fn decode_record_key(bytes: &[u8]) -> Result<RecordAddress, StoreError> {
    let bad = |_| corrupt("record key id");
    let (service, rest) = split_nul(bytes)?;
    if rest.len() < 4 {
        return Err(corrupt("record key too short"));
    }
    let market = Market::from_bytes([rest[0], rest[1]]).map_err(bad)?;
    let bucket = Bucket(u16::from_be_bytes([rest[2], rest[3]]));
    let (user, rest) = split_nul(&rest[4..])?;
    let (collection, key) = split_nul(rest)?;
    let key = std::str::from_utf8(key).map_err(|_| corrupt("record key utf-8"))?;
    Ok(RecordAddress {
        collection: CollectionAddress {
            service: ServiceName::new(service).map_err(bad)?,
            market,
            bucket,
            user: UserId::new(user).map_err(bad)?,
            collection: CollectionName::new(collection).map_err(bad)?,
        },
        key: RecordKey::new(key).map_err(bad)?,
    })
}

pub fn encode_value(version: Version, value: Option<&[u8]>) -> Vec<u8> {
    let mut v = Vec::with_capacity(9 + value.map_or(0, <[u8]>::len));
    v.push(if value.is_some() { 0 } else { TOMBSTONE });
    v.extend_from_slice(&version.0.to_be_bytes());
    if let Some(value) = value {
        v.extend_from_slice(value);
    }
    v
}

/// A stored value: its version and, unless it is a tombstone, its bytes.
pub fn decode_value(bytes: &[u8]) -> Result<(Version, Option<&[u8]>), StoreError> {
    if bytes.len() < 9 {
        return Err(corrupt("record value too short"));
    }
    let mut version = [0u8; 8];
    version.copy_from_slice(&bytes[1..9]);
    let version = Version(u64::from_be_bytes(version));
    match bytes[0] {
        0 => Ok((version, Some(&bytes[9..]))),
        TOMBSTONE => Ok((version, None)),
        _ => Err(corrupt("record flags")),
    }
}

pub fn lsn_key(lsn: Lsn) -> [u8; 8] {
    lsn.0.to_be_bytes()
}

pub fn decode_lsn(bytes: &[u8]) -> Result<Lsn, StoreError> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| corrupt("change-log key"))?;
    Ok(Lsn(u64::from_be_bytes(b)))
}

pub fn encode_change(op: ChangeOp, version: Version, record_key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(10 + record_key.len());
    v.push(CHANGE_FORMAT);
    v.push(match op {
        ChangeOp::Put => 1,
        ChangeOp::Delete => 2,
    });
    v.extend_from_slice(&version.0.to_be_bytes());
    v.extend_from_slice(record_key);
    v
}

/// Decodes a change-log value; returns the entry and the raw record key it names.
pub fn decode_change(lsn: Lsn, bytes: &[u8]) -> Result<(ChangeEntry, &[u8]), StoreError> {
    if bytes.len() < 10 || bytes[0] != CHANGE_FORMAT {
        return Err(corrupt("change-log entry"));
    }
    let op = match bytes[1] {
        1 => ChangeOp::Put,
        2 => ChangeOp::Delete,
        _ => return Err(corrupt("change-log op")),
    };
    let mut version = [0u8; 8];
    version.copy_from_slice(&bytes[2..10]);
    let key = &bytes[10..];
    let address = decode_record_key(key)?;
    Ok((
        ChangeEntry {
            lsn,
            address,
            op,
            version: Version(u64::from_be_bytes(version)),
        },
        key,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::BucketCount;

    fn address(user: &str, key: &str) -> RecordAddress {
        CollectionAddress::new(
            ServiceName::new("ecommerce").unwrap(),
            Market::new("IN").unwrap(),
            UserId::new(user).unwrap(),
            CollectionName::new("orders").unwrap(),
            BucketCount::DEFAULT,
        )
        .record(RecordKey::new(key).unwrap())
    }

    #[test]
    fn record_keys_round_trip_and_sort_like_their_tuples() {
        let a = address("alice", "o-1");
        let encoded = record_key(&a);
        assert_eq!(decode_record_key(&encoded).unwrap(), a);
        // "ab" sorts after "a"+anything only via the terminator: same order as the tuples.
        let (x, y) = (address("a", "z"), address("a", "za"));
        assert_eq!(record_key(&x) < record_key(&y), x < y);
    }

    #[test]
    fn values_and_changes_round_trip() {
        let v = Version(42);
        assert_eq!(
            decode_value(&encode_value(v, Some(b"hi"))).unwrap(),
            (v, Some(&b"hi"[..]))
        );
        assert_eq!(decode_value(&encode_value(v, None)).unwrap(), (v, None));
        assert!(decode_value(b"short").is_err());
        let a = address("bob", "k");
        let key = record_key(&a);
        let encoded = encode_change(ChangeOp::Delete, v, &key);
        let (entry, raw) = decode_change(Lsn(7), &encoded).unwrap();
        assert_eq!(
            (entry.lsn, entry.op, entry.version, entry.address),
            (Lsn(7), ChangeOp::Delete, v, a)
        );
        assert_eq!(raw, key.as_slice());
    }

    #[test]
    fn the_last_bucket_has_an_upper_bound() {
        let s = ServiceName::new("cloud").unwrap();
        let m = Market::new("BR").unwrap();
        let (start, end) = bucket_range_bounds(&s, m, BucketRange::new(65535, 65535).unwrap());
        assert!(start < end);
    }
}

//! Buckets: `hash(user_id) mod B`, the unit of placement and of a move.
//!
//! The hash is BLAKE3 (a fixed, published function with test vectors) of the user id's UTF-8
//! bytes; the first 8 bytes of the digest read as a little-endian `u64`, modulo B. It depends on
//! nothing but the id's bytes, so it is the same on every version, platform and process — a user
//! never changes bucket unless B changes, and B is fixed per cluster.

use crate::ids::UserId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use thiserror::Error;

/// One bucket number, `0..B`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Bucket(pub u16);

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// The number of buckets B of a cluster: 1..=65536, default 1024.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct BucketCount(u32);

impl BucketCount {
    pub const DEFAULT: BucketCount = BucketCount(1024);

    pub fn new(n: u32) -> Result<Self, BucketError> {
        if n == 0 || n > 65_536 {
            return Err(BucketError::Count(n));
        }
        Ok(Self(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }

    /// The bucket of `user`: BLAKE3(user id) → first 8 bytes, little-endian → mod B.
    pub fn bucket_of(self, user: &UserId) -> Bucket {
        let hash = blake3::hash(user.as_str().as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&hash.as_bytes()[..8]);
        // The modulus is at most 65536, so the remainder fits in u16.
        Bucket((u64::from_le_bytes(first) % u64::from(self.0)) as u16)
    }

    /// The range of every bucket.
    pub fn all(self) -> BucketRange {
        BucketRange {
            first: 0,
            last: (self.0 - 1) as u16,
        }
    }
}

impl Default for BucketCount {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl TryFrom<u32> for BucketCount {
    type Error = BucketError;
    fn try_from(n: u32) -> Result<Self, BucketError> {
        Self::new(n)
    }
}

impl From<BucketCount> for u32 {
    fn from(b: BucketCount) -> u32 {
        b.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BucketError {
    #[error("bucket count {0} is out of range: it must be 1..=65536")]
    Count(u32),
    #[error("invalid bucket range {0:?}: expected `N` or `FIRST-LAST` with FIRST <= LAST")]
    Range(String),
    #[error("bucket {bucket} is outside 0..{count}")]
    OutOfRange { bucket: u32, count: u32 },
}

/// An inclusive range of buckets, written `FIRST-LAST` (or `N` for one bucket).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BucketRange {
    pub first: u16,
    pub last: u16,
}

impl BucketRange {
    pub fn new(first: u16, last: u16) -> Result<Self, BucketError> {
        if first > last {
            return Err(BucketError::Range(format!("{first}-{last}")));
        }
        Ok(Self { first, last })
    }

    pub fn single(b: Bucket) -> Self {
        Self {
            first: b.0,
            last: b.0,
        }
    }

    pub fn contains(&self, b: Bucket) -> bool {
        self.first <= b.0 && b.0 <= self.last
    }

    pub fn len(&self) -> u32 {
        u32::from(self.last) - u32::from(self.first) + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn overlaps(&self, other: &BucketRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }

    /// Whether every bucket of `other` is in `self`.
    pub fn covers(&self, other: &BucketRange) -> bool {
        self.first <= other.first && other.last <= self.last
    }

    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + use<> {
        (self.first..=self.last).map(Bucket)
    }

    /// Checks that the range lies inside `0..count`.
    pub fn check(&self, count: BucketCount) -> Result<(), BucketError> {
        if u32::from(self.last) >= count.get() {
            return Err(BucketError::OutOfRange {
                bucket: self.last.into(),
                count: count.get(),
            });
        }
        Ok(())
    }
}

impl fmt::Display for BucketRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.first == self.last {
            write!(f, "{}", self.first)
        } else {
            write!(f, "{}-{}", self.first, self.last)
        }
    }
}

impl std::str::FromStr for BucketRange {
    type Err = BucketError;
    fn from_str(s: &str) -> Result<Self, BucketError> {
        let err = || BucketError::Range(s.to_string());
        let parse = |p: &str| p.trim().parse::<u16>().map_err(|_| err());
        match s.split_once('-') {
            Some((a, b)) => Self::new(parse(a)?, parse(b)?).map_err(|_| err()),
            None => {
                let n = parse(s)?;
                Ok(Self { first: n, last: n })
            }
        }
    }
}

impl Serialize for BucketRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BucketRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A set of buckets as sorted, disjoint, non-adjacent ranges; written `0-15,20,30-40`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct BucketSet {
    ranges: Vec<BucketRange>,
}

impl BucketSet {
    pub fn from_ranges(ranges: impl IntoIterator<Item = BucketRange>) -> Self {
        let mut ranges: Vec<BucketRange> = ranges.into_iter().collect();
        ranges.sort();
        let mut merged: Vec<BucketRange> = Vec::with_capacity(ranges.len());
        for r in ranges {
            match merged.last_mut() {
                Some(last) if u32::from(r.first) <= u32::from(last.last) + 1 => {
                    last.last = last.last.max(r.last);
                }
                _ => merged.push(r),
            }
        }
        Self { ranges: merged }
    }

    pub fn from_buckets(buckets: impl IntoIterator<Item = Bucket>) -> Self {
        Self::from_ranges(buckets.into_iter().map(BucketRange::single))
    }

    pub fn ranges(&self) -> &[BucketRange] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn len(&self) -> u32 {
        self.ranges.iter().map(BucketRange::len).sum()
    }

    pub fn contains(&self, b: Bucket) -> bool {
        // Ranges are sorted and disjoint: find the last range starting at or before b.
        let idx = self.ranges.partition_point(|r| r.first <= b.0);
        idx > 0 && self.ranges[idx - 1].contains(b)
    }

    pub fn buckets(&self) -> impl Iterator<Item = Bucket> + '_ {
        self.ranges.iter().flat_map(BucketRange::buckets)
    }

    pub fn check(&self, count: BucketCount) -> Result<(), BucketError> {
        self.ranges.iter().try_for_each(|r| r.check(count))
    }
}

impl fmt::Display for BucketSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, r) in self.ranges.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{r}")?;
        }
        Ok(())
    }
}

impl std::str::FromStr for BucketSet {
    type Err = BucketError;
    fn from_str(s: &str) -> Result<Self, BucketError> {
        if s.trim().is_empty() {
            return Ok(Self::default());
        }
        let ranges = s
            .split(',')
            .map(str::parse)
            .collect::<Result<Vec<BucketRange>, _>>()?;
        Ok(Self::from_ranges(ranges))
    }
}

impl Serialize for BucketSet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for BucketSet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bucket_hash_is_pinned() {
        // Pinned values: if these change, every stored key and placement moves. Never update them.
        let b = BucketCount::DEFAULT;
        let got: Vec<u16> = ["alice", "bob", "u-000001", "Z"]
            .iter()
            .map(|u| b.bucket_of(&UserId::new(*u).unwrap()).0)
            .collect();
        assert_eq!(got, PINNED);
    }
    const PINNED: [u16; 4] = [625, 740, 123, 130];

    #[test]
    fn sets_parse_merge_and_print() {
        let s: BucketSet = "30-40,0-15,16,20".parse().unwrap();
        assert_eq!(s.to_string(), "0-16,20,30-40");
        assert!(s.contains(Bucket(16)) && s.contains(Bucket(35)) && !s.contains(Bucket(17)));
        assert_eq!(s.len(), 17 + 1 + 11);
        assert!("5-3".parse::<BucketSet>().is_err());
        assert!("x".parse::<BucketSet>().is_err());
        assert!(BucketCount::new(0).is_err());
        assert!(
            "1024"
                .parse::<BucketSet>()
                .unwrap()
                .check(BucketCount::DEFAULT)
                .is_err()
        );
    }

    proptest! {
        #[test]
        fn set_membership_matches_a_model(ranges in proptest::collection::vec((0u16..200, 0u16..20), 0..8), probe in 0u16..230) {
            let rs: Vec<BucketRange> = ranges.iter().map(|(a, l)| BucketRange::new(*a, a + l).unwrap()).collect();
            let set = BucketSet::from_ranges(rs.clone());
            let model = rs.iter().any(|r| r.contains(Bucket(probe)));
            prop_assert_eq!(set.contains(Bucket(probe)), model);
            let reparsed: BucketSet = set.to_string().parse().unwrap();
            prop_assert_eq!(reparsed, set);
        }

        #[test]
        fn buckets_are_in_range(user in "[A-Za-z0-9._-]{1,128}", n in 1u32..=65536) {
            let count = BucketCount::new(n).unwrap();
            let b = count.bucket_of(&UserId::new(user).unwrap());
            prop_assert!(u32::from(b.0) < n);
        }
    }
}

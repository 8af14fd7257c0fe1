//! Record versions from a hybrid logical clock (HLC).
//!
//! A version is one `u64`: the high 48 bits are milliseconds since the Unix epoch, the low 16 a
//! logical counter. Versions order writes to one record; import keeps the higher one, so replay
//! in any order converges. A node's clock observes every version it imports, so a write accepted
//! after a cutover always outranks whatever was copied to the node.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A record version. `Version::ZERO` is never assigned to a write.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Version(pub u64);

impl Version {
    pub const ZERO: Version = Version(0);
    const LOGICAL_BITS: u32 = 16;

    pub fn from_parts(millis: u64, logical: u16) -> Self {
        Version((millis << Self::LOGICAL_BITS) | u64::from(logical))
    }

    pub fn millis(self) -> u64 {
        self.0 >> Self::LOGICAL_BITS
    }

    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }

    /// The version as an HTTP entity tag (quoted, strong).
    pub fn to_etag(self) -> String {
        format!("\"{}\"", self.0)
    }

    /// Parses a strong entity tag written by [`Version::to_etag`].
    pub fn from_etag(tag: &str) -> Option<Self> {
        let inner = tag.trim().strip_prefix('"')?.strip_suffix('"')?;
        inner.parse().ok().map(Version)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A hybrid logical clock. The caller passes the wall clock in, so this stays pure and testable.
#[derive(Debug, Clone, Default)]
pub struct Hlc {
    last: Version,
}

impl Hlc {
    pub fn new() -> Self {
        Self::default()
    }

    /// The next version: greater than every version issued or observed, and close to `now_millis`.
    pub fn next(&mut self, now_millis: u64) -> Version {
        let physical = Version::from_parts(now_millis, 0);
        self.last = if physical > self.last {
            physical
        } else {
            Version(self.last.0 + 1)
        };
        self.last
    }

    /// Moves the clock past `seen`, so that every later [`Hlc::next`] outranks it.
    pub fn observe(&mut self, seen: Version) {
        if seen > self.last {
            self.last = seen;
        }
    }

    pub fn last(&self) -> Version {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parts_round_trip_and_etags_parse() {
        let v = Version::from_parts(1_764_000_000_000, 7);
        assert_eq!((v.millis(), v.logical()), (1_764_000_000_000, 7));
        assert_eq!(Version::from_etag(&v.to_etag()), Some(v));
        assert_eq!(Version::from_etag("W/\"1\""), None);
        assert_eq!(Version::from_etag("12"), None);
    }

    proptest! {
        // Whatever the wall clock does (stalls, jumps back) and whatever is observed, versions
        // issued by one clock strictly increase and outrank everything observed before them.
        #[test]
        fn versions_strictly_increase(steps in proptest::collection::vec((0u64..10_000, any::<bool>(), 0u64..20_000), 1..200)) {
            let mut hlc = Hlc::new();
            let mut prev = Version::ZERO;
            let mut max_seen = Version::ZERO;
            for (now, observe, seen) in steps {
                if observe {
                    let seen = Version::from_parts(seen, 3);
                    hlc.observe(seen);
                    max_seen = max_seen.max(seen);
                }
                let v = hlc.next(now);
                prop_assert!(v > prev);
                prop_assert!(v > max_seen);
                prev = v;
            }
        }
    }
}

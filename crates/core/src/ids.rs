//! Validated identifiers: region, user, service, collection and record key.
//!
//! Each is a newtype over `String` that can only be built through validation, so code that holds
//! one never re-checks it. The character sets are chosen so that none of them contains `/` or
//! NUL: ids are safe in URL paths, object-store paths and NUL-separated storage keys.

use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;
use thiserror::Error;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid {kind} {value:?}: {rule}")]
pub struct IdError {
    pub kind: &'static str,
    pub value: String,
    pub rule: &'static str,
}

macro_rules! validated_id {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $max:literal, $rule:literal, $allowed:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest accepted id, in bytes.
            pub const MAX_LEN: usize = $max;

            /// Validates `value`.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                let allowed: fn(u8) -> bool = $allowed;
                if value.is_empty() || value.len() > $max || !value.bytes().all(allowed) {
                    return Err(IdError { kind: $kind, value, rule: $rule });
                }
                Ok(Self(value))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

fn lower_dash(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'
}

validated_id!(
    /// A region's id, such as `ap-singapore`.
    RegionId, "region id", 64, "1-64 characters of [a-z0-9-]", lower_dash
);

validated_id!(
    /// A user's id: 1–128 characters of `[A-Za-z0-9._-]`.
    UserId, "user id", 128, "1-128 characters of [A-Za-z0-9._-]",
    |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-')
);

validated_id!(
    /// A service: a group of collections that move together (`ecommerce`, `account`, …).
    ServiceName, "service", 64, "1-64 characters of [a-z0-9-]", lower_dash
);

validated_id!(
    /// A collection: a named set of per-user records or blobs (`orders`, `photos`, …).
    CollectionName, "collection", 64, "1-64 characters of [a-z0-9_-]",
    |b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'_' | b'-')
);

validated_id!(
    /// A record's key inside one user's collection: 1–256 characters of `[A-Za-z0-9._~:-]`.
    RecordKey, "record key", 256, "1-256 characters of [A-Za-z0-9._~:-]",
    |b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'~' | b':' | b'-')
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_documented_rule() {
        for ok in ["a", "user-1", "U.s_e-r", &"x".repeat(128)] {
            assert!(UserId::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a b", "ü", "a\0", &"x".repeat(129)] {
            let err = UserId::new(bad).unwrap_err();
            assert_eq!(err.kind, "user id");
        }
    }

    #[test]
    fn region_and_collection_ids_refuse_separators() {
        assert!(RegionId::new("ap-singapore").is_ok());
        assert!(RegionId::new("AP").is_err());
        assert!(CollectionName::new("orders").is_ok());
        assert!(CollectionName::new("orders/x").is_err());
        assert!(RecordKey::new("2026:order~1").is_ok());
        assert!(RecordKey::new("a/b").is_err());
    }

    #[test]
    fn deserializing_validates() {
        let r: Result<UserId, _> = serde_json::from_str("\"bad id\"");
        assert!(r.is_err());
        let r: UserId = serde_json::from_str("\"good\"").unwrap();
        assert_eq!(r.as_str(), "good");
    }
}

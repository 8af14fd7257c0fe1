//! Markets: the country a user belongs to, as an officially assigned ISO 3166-1 alpha-2 code.

use crate::ids::IdError;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// The officially assigned ISO 3166-1 alpha-2 codes (249 of them), concatenated and sorted.
/// User-assigned and reserved codes (`XK`, `EU`, `UK`, …) are refused on purpose: a market decides
/// which law applies, so it must name a real jurisdiction.
const ASSIGNED: &str = "ADAEAFAGAIALAMAOAQARASATAUAWAXAZBABBBDBEBFBGBHBIBJBLBMBNBOBQBRBSBTBVBWBYBZ\
CACCCDCFCGCHCICKCLCMCNCOCRCUCVCWCXCYCZDEDJDKDMDODZECEEEGEHERESETFIFJFKFMFOFRGAGBGDGEGFGGGHGIGLGMGN\
GPGQGRGSGTGUGWGYHKHMHNHRHTHUIDIEILIMINIOIQIRISITJEJMJOJPKEKGKHKIKMKNKPKRKWKYKZLALBLCLILKLRLSLTLULV\
LYMAMCMDMEMFMGMHMKMLMMMNMOMPMQMRMSMTMUMVMWMXMYMZNANCNENFNGNINLNONPNRNUNZOMPAPEPFPGPHPKPLPMPNPRPSPT\
PWPYQARERORSRURWSASBSCSDSESGSHSISJSKSLSMSNSOSRSSSTSVSXSYSZTCTDTFTGTHTJTKTLTMTNTOTRTTTVTWTZUAUGUMUS\
UYUZVAVCVEVGVIVNVUWFWSYEYTZAZMZW";

/// A market: an ISO 3166-1 alpha-2 country code such as `IN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Market([u8; 2]);

impl Market {
    /// Validates `code` (upper case, officially assigned).
    pub fn new(code: &str) -> Result<Self, IdError> {
        let err = || IdError {
            kind: "market",
            value: code.to_string(),
            rule: "an officially assigned ISO 3166-1 alpha-2 code in upper case, such as IN",
        };
        let bytes: [u8; 2] = code.as_bytes().try_into().map_err(|_| err())?;
        if !bytes.iter().all(u8::is_ascii_uppercase) {
            return Err(err());
        }
        // The list is sorted (checked by a test), so a binary search finds a code in 8 steps.
        let (codes, _) = ASSIGNED.as_bytes().as_chunks::<2>();
        let assigned = codes.binary_search(&bytes).is_ok();
        if !assigned {
            return Err(err());
        }
        Ok(Self(bytes))
    }

    /// The two code bytes, as stored in keys.
    pub fn as_bytes(&self) -> [u8; 2] {
        self.0
    }

    /// Rebuilds a market from stored key bytes, validating them again.
    pub fn from_bytes(bytes: [u8; 2]) -> Result<Self, IdError> {
        Self::new(std::str::from_utf8(&bytes).unwrap_or("??"))
    }

    pub fn as_str(&self) -> &str {
        // Both bytes are ASCII upper-case letters by construction.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Market {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        Self::new(s)
    }
}

impl Serialize for Market {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Market {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_sorted_and_complete() {
        let codes: Vec<&[u8]> = ASSIGNED.as_bytes().chunks_exact(2).collect();
        assert_eq!(codes.len(), 249);
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn reference_markets_are_valid_and_others_are_not() {
        for m in ["CN", "HK", "TW", "SG", "MY", "ID", "PH", "IN", "BR", "US"] {
            assert_eq!(Market::new(m).unwrap().as_str(), m);
        }
        for bad in ["", "in", "XK", "UK", "EU", "IND", "I", "Z1"] {
            assert!(Market::new(bad).is_err(), "{bad}");
        }
    }
}

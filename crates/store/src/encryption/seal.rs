//! Sealing one value: AES-256-GCM with a random 96-bit nonce (a data key seals one user's data
//! in one service, far below the 2^32 messages a random-nonce key may seal), and associated data
//! that names the value's place, so sealed bytes copied elsewhere do not open.
//!
//! Layout: `[format 1][nonce 12][ciphertext][tag 16]`.

use super::EncryptionError;
use super::data_key::DataKey;
use crate::record::RecordAddress;
use aws_lc_rs::aead::NONCE_LEN;
use bytes::Bytes;

const VALUE_FORMAT: u8 = 1;
const TAG_LEN: usize = 16;

/// Bytes a sealed value adds to its plaintext.
pub const VALUE_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;

/// Length-prefixed parts under a domain label, so no two places share associated data.
pub(crate) fn place(label: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(label.as_bytes());
    for p in parts {
        out.extend_from_slice(&(p.len() as u32).to_be_bytes());
        out.extend_from_slice(p);
    }
    out
}

/// A record's associated data: service, market, user, collection and key.
pub fn record_place(address: &RecordAddress) -> Vec<u8> {
    let c = &address.collection;
    place(
        "domicile/value/v1",
        &[
            c.service.as_str().as_bytes(),
            c.market.as_str().as_bytes(),
            c.user.as_str().as_bytes(),
            c.collection.as_str().as_bytes(),
            address.key.as_str().as_bytes(),
        ],
    )
}

/// Seals `plaintext` into one buffer laid out as above: one allocation, one copy.
pub fn seal_value(key: &DataKey, place: &[u8], plaintext: &[u8]) -> Result<Bytes, EncryptionError> {
    let mut out = Vec::with_capacity(plaintext.len() + VALUE_OVERHEAD);
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&[0u8; NONCE_LEN]);
    out.extend_from_slice(plaintext);
    let (nonce, tag) = key.seal_in_place_separate_tag(place, &mut out[1 + NONCE_LEN..])?;
    out[1..1 + NONCE_LEN].copy_from_slice(&nonce);
    out.extend_from_slice(tag.as_ref());
    Ok(Bytes::from(out))
}

pub fn open_value(key: &DataKey, place: &[u8], sealed: &[u8]) -> Result<Bytes, EncryptionError> {
    if sealed.len() < VALUE_OVERHEAD || sealed[0] != VALUE_FORMAT {
        return Err(EncryptionError::Open("not a sealed value"));
    }
    let mut body = sealed[1 + NONCE_LEN..].to_vec();
    let len = key
        .open_in_place(&sealed[1..1 + NONCE_LEN], place, &mut body)?
        .len();
    body.truncate(len);
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_opens_only_at_its_place_and_under_its_key() {
        let key = DataKey::new(&[3u8; 32]).unwrap();
        let other = DataKey::new(&[4u8; 32]).unwrap();
        let here = place("t", &[b"alice", b"notes", b"n1"]);
        let there = place("t", &[b"alice", b"notes", b"n2"]);
        let sealed = seal_value(&key, &here, b"canary").unwrap();
        assert_eq!(sealed.len(), 6 + VALUE_OVERHEAD);
        assert!(!sealed.windows(6).any(|w| w == b"canary"));
        assert_eq!(
            open_value(&key, &here, &sealed).unwrap(),
            Bytes::from("canary")
        );
        assert!(open_value(&key, &there, &sealed).is_err());
        assert!(open_value(&other, &here, &sealed).is_err());
        let mut flipped = sealed.to_vec();
        flipped[20] ^= 1;
        assert!(open_value(&key, &here, &flipped).is_err());
        assert_ne!(
            seal_value(&key, &here, b"canary").unwrap(),
            sealed,
            "fresh nonce each time"
        );
    }

    #[test]
    fn places_are_length_prefixed() {
        assert_ne!(place("t", &[b"ab", b"c"]), place("t", &[b"a", b"bc"]));
    }
}

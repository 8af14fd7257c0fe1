//! Sealing one value: AES-256-GCM with a random 96-bit nonce (a data key seals one user's data
//! in one service, far below the 2^32 messages a random-nonce key may seal), and associated data
//! that names the value's place, so sealed bytes copied elsewhere do not open.
//!
//! Layout: `[format 1][nonce 12][ciphertext][tag 16]`.

use super::EncryptionError;
use crate::record::RecordAddress;
use aws_lc_rs::aead::{Aad, NONCE_LEN, Nonce, RandomizedNonceKey};
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
pub fn seal_value(
    key: &RandomizedNonceKey,
    place: &[u8],
    plaintext: &[u8],
) -> Result<Bytes, EncryptionError> {
    let mut out = Vec::with_capacity(plaintext.len() + VALUE_OVERHEAD);
    out.push(VALUE_FORMAT);
    out.extend_from_slice(&[0u8; NONCE_LEN]);
    out.extend_from_slice(plaintext);
    let (nonce, tag) = key
        .seal_in_place_separate_tag(Aad::from(place), &mut out[1 + NONCE_LEN..])
        .map_err(|_| EncryptionError::Crypto("seal a value"))?;
    out[1..1 + NONCE_LEN].copy_from_slice(nonce.as_ref());
    out.extend_from_slice(tag.as_ref());
    Ok(Bytes::from(out))
}

pub fn open_value(
    key: &RandomizedNonceKey,
    place: &[u8],
    sealed: &[u8],
) -> Result<Bytes, EncryptionError> {
    if sealed.len() < VALUE_OVERHEAD || sealed[0] != VALUE_FORMAT {
        return Err(EncryptionError::Open("not a sealed value"));
    }
    let nonce = Nonce::try_assume_unique_for_key(&sealed[1..1 + NONCE_LEN])
        .map_err(|_| EncryptionError::Open("bad nonce"))?;
    let mut body = sealed[1 + NONCE_LEN..].to_vec();
    let len = key
        .open_in_place(nonce, Aad::from(place), &mut body)
        .map_err(|_| EncryptionError::Open("authentication failed"))?
        .len();
    body.truncate(len);
    Ok(Bytes::from(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::aead::AES_256_GCM;

    #[test]
    fn a_value_opens_only_at_its_place_and_under_its_key() {
        let key = RandomizedNonceKey::new(&AES_256_GCM, &[3u8; 32]).unwrap();
        let other = RandomizedNonceKey::new(&AES_256_GCM, &[4u8; 32]).unwrap();
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

//! One data key's cipher: AES-256-GCM (aws-lc-rs) with a fresh random 96-bit nonce for every
//! seal, as `RandomizedNonceKey` would draw, but drawn from aws-lc's generator in blocks of
//! [`NONCES_PER_DRAW`] (decision 0016).
//!
//! Why: `RandomizedNonceKey` calls the generator once per seal, and each call pays its fixed
//! cost — an RDRAND read for prediction resistance, a fork check under a lock, a CTR-DRBG
//! update — around 12 bytes of output. A copy seals every record it imports, and those calls
//! were 8% of a copy target's CPU, sixteen times the AES-GCM itself. One draw of
//! `12 × NONCES_PER_DRAW` bytes pays that cost once per block. The nonces are the same
//! uniform draws from the same vetted generator, each handed out once, so the random-nonce
//! bound (far below 2^32 seals per key; a data key seals one user's data in one service) is
//! unchanged.
//!
//! The block is thread-local, and a thread hands out each nonce once. A process that forked
//! without exec could hand out its parent's remaining nonces again; domicile never does (it
//! starts region nodes and PostgreSQL by fork and exec).

use super::EncryptionError;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, Tag, UnboundKey};
use std::cell::RefCell;

/// Nonces drawn from the generator at once, per thread.
pub const NONCES_PER_DRAW: usize = 256;

/// A data key ready to seal and open.
pub struct DataKey(LessSafeKey);

impl DataKey {
    pub fn new(secret: &[u8]) -> Result<Self, EncryptionError> {
        let key = UnboundKey::new(&AES_256_GCM, secret)
            .map_err(|_| EncryptionError::Crypto("AES-256-GCM key"))?;
        Ok(Self(LessSafeKey::new(key)))
    }

    /// Seals `in_out` in place under a fresh nonce; the nonce and the tag to store with it.
    pub fn seal_in_place_separate_tag(
        &self,
        aad: &[u8],
        in_out: &mut [u8],
    ) -> Result<([u8; NONCE_LEN], Tag), EncryptionError> {
        let nonce = fresh_nonce()?;
        let tag = self
            .0
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), in_out)
            .map_err(|_| EncryptionError::Crypto("seal"))?;
        Ok((nonce, tag))
    }

    /// Opens `in_out` (ciphertext then tag) in place; the plaintext part of it.
    pub fn open_in_place<'a>(
        &self,
        nonce: &[u8],
        aad: &[u8],
        in_out: &'a mut [u8],
    ) -> Result<&'a mut [u8], EncryptionError> {
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| EncryptionError::Open("bad nonce"))?;
        self.0
            .open_in_place(nonce, Aad::from(aad), in_out)
            .map_err(|_| EncryptionError::Open("authentication failed"))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(..)")
    }
}

/// This thread's block of drawn, not yet used nonces.
struct NonceBlock {
    bytes: Box<[u8; NONCE_LEN * NONCES_PER_DRAW]>,
    next: usize,
}

thread_local! {
    static NONCES: RefCell<NonceBlock> = RefCell::new(NonceBlock {
        bytes: Box::new([0u8; NONCE_LEN * NONCES_PER_DRAW]),
        next: NONCES_PER_DRAW,
    });
}

/// A nonce never handed out before: the next of this thread's block, drawing a new block when
/// it is used up.
fn fresh_nonce() -> Result<[u8; NONCE_LEN], EncryptionError> {
    NONCES.with(|block| {
        let mut block = block.borrow_mut();
        if block.next == NONCES_PER_DRAW {
            aws_lc_rs::rand::fill(block.bytes.as_mut())
                .map_err(|_| EncryptionError::Crypto("draw nonces"))?;
            block.next = 0;
        }
        let at = block.next * NONCE_LEN;
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&block.bytes[at..at + NONCE_LEN]);
        // Scrub it from the block: a nonce is public once sealed, but a used one has no
        // business lying around.
        block.bytes[at..at + NONCE_LEN].fill(0);
        block.next += 1;
        Ok(nonce)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn nonces_are_never_handed_out_twice_across_draws() {
        let seen: HashSet<[u8; NONCE_LEN]> = (0..NONCES_PER_DRAW * 3 + 7)
            .map(|_| fresh_nonce().unwrap())
            .collect();
        assert_eq!(seen.len(), NONCES_PER_DRAW * 3 + 7);
        assert!(!seen.contains(&[0u8; NONCE_LEN]));
    }

    #[test]
    fn threads_draw_their_own_nonces() {
        let other: HashSet<[u8; NONCE_LEN]> = std::thread::spawn(|| {
            (0..NONCES_PER_DRAW)
                .map(|_| fresh_nonce().unwrap())
                .collect()
        })
        .join()
        .unwrap();
        let here: HashSet<[u8; NONCE_LEN]> = (0..NONCES_PER_DRAW)
            .map(|_| fresh_nonce().unwrap())
            .collect();
        assert!(here.is_disjoint(&other));
    }

    #[test]
    fn a_sealed_value_opens_under_its_nonce_and_aad_only() {
        let key = DataKey::new(&[5u8; 32]).unwrap();
        let mut body = b"hello".to_vec();
        let (nonce, tag) = key.seal_in_place_separate_tag(b"here", &mut body).unwrap();
        body.extend_from_slice(tag.as_ref());
        let mut copy = body.clone();
        assert_eq!(
            key.open_in_place(&nonce, b"here", &mut copy).unwrap(),
            b"hello"
        );
        let mut copy = body.clone();
        assert!(key.open_in_place(&nonce, b"there", &mut copy).is_err());
        let mut other = nonce;
        other[0] ^= 1;
        assert!(key.open_in_place(&other, b"here", &mut body).is_err());
        assert!(DataKey::new(&[1u8; 16]).is_err(), "AES-256 needs 32 bytes");
    }
}

//! Sealing a blob as it streams: the plaintext is cut into segments of [`SEGMENT`] bytes, each
//! sealed on its own (AES-256-GCM, random nonce) with associated data naming the blob's owner,
//! a random blob id, the segment's index and whether it is the last — so segments cannot be
//! reordered, dropped, truncated at a boundary, or spliced between blobs or users (the STREAM
//! construction's guarantees, built from the vetted AEAD alone).
//!
//! Layout: `"DMB1"`, blob id (16), then segments `[nonce 12][ciphertext][tag 16]`; every
//! segment but the last holds exactly [`SEGMENT`] plaintext bytes, the last 0..=[`SEGMENT`].

use super::EncryptionError;
use super::data_key::DataKey;
use super::seal::place;
use crate::record::CollectionAddress;
use aws_lc_rs::aead::NONCE_LEN;
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

const MAGIC: &[u8; 4] = b"DMB1";
const ID_LEN: usize = 16;
const HEADER: usize = MAGIC.len() + ID_LEN;
/// Plaintext bytes per sealed segment.
pub const SEGMENT: usize = 64 * 1024;
const TAG_LEN: usize = 16;
const SEALED_SEGMENT: usize = NONCE_LEN + SEGMENT + TAG_LEN;

fn segment_place(owner: &CollectionAddress, id: &[u8], index: u64, last: bool) -> Vec<u8> {
    place(
        "domicile/blob/v1",
        &[
            owner.service.as_str().as_bytes(),
            owner.market.as_str().as_bytes(),
            owner.user.as_str().as_bytes(),
            id,
            &index.to_be_bytes(),
            &[u8::from(last)],
        ],
    )
}

/// Seals a blob's plaintext as it arrives.
pub(crate) struct BlobSealer {
    key: Arc<DataKey>,
    owner: CollectionAddress,
    id: [u8; ID_LEN],
    index: u64,
    pending: BytesMut,
    header_sent: bool,
}

impl BlobSealer {
    pub fn new(key: Arc<DataKey>, owner: CollectionAddress) -> Result<Self, EncryptionError> {
        let mut id = [0u8; ID_LEN];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| EncryptionError::Crypto("random blob id"))?;
        Ok(Self {
            key,
            owner,
            id,
            index: 0,
            pending: BytesMut::new(),
            header_sent: false,
        })
    }

    fn seal_segment(&mut self, plain: &[u8], last: bool) -> Result<Bytes, EncryptionError> {
        let mut out = Vec::with_capacity(HEADER + NONCE_LEN + plain.len() + TAG_LEN);
        if !self.header_sent {
            out.extend_from_slice(MAGIC);
            out.extend_from_slice(&self.id);
            self.header_sent = true;
        }
        let aad = segment_place(&self.owner, &self.id, self.index, last);
        let at = out.len();
        out.extend_from_slice(&[0u8; NONCE_LEN]);
        out.extend_from_slice(plain);
        let (nonce, tag) = self
            .key
            .seal_in_place_separate_tag(&aad, &mut out[at + NONCE_LEN..])?;
        out[at..at + NONCE_LEN].copy_from_slice(&nonce);
        out.extend_from_slice(tag.as_ref());
        self.index += 1;
        Ok(Bytes::from(out))
    }

    /// Sealed bytes ready to store after `plain` arrived: a segment is sealed once more
    /// plaintext follows it (until then it might be the last).
    pub fn push(&mut self, plain: &[u8]) -> Result<Vec<Bytes>, EncryptionError> {
        self.pending.extend_from_slice(plain);
        let mut out = Vec::new();
        while self.pending.len() > SEGMENT {
            let segment = self.pending.split_to(SEGMENT);
            out.push(self.seal_segment(&segment, false)?);
        }
        Ok(out)
    }

    /// The last segment (possibly empty).
    pub fn finish(mut self) -> Result<Bytes, EncryptionError> {
        let rest = std::mem::take(&mut self.pending);
        self.seal_segment(&rest, true)
    }
}

/// Opens a sealed blob as its bytes arrive.
pub(crate) struct BlobOpener {
    key: Arc<DataKey>,
    owner: CollectionAddress,
    id: Option<[u8; ID_LEN]>,
    index: u64,
    pending: BytesMut,
}

impl BlobOpener {
    pub fn new(key: Arc<DataKey>, owner: CollectionAddress) -> Self {
        Self {
            key,
            owner,
            id: None,
            index: 0,
            pending: BytesMut::new(),
        }
    }

    fn open_segment(&mut self, sealed: &[u8], last: bool) -> Result<Bytes, EncryptionError> {
        let id = self
            .id
            .ok_or(EncryptionError::Open("blob header missing"))?;
        if sealed.len() < NONCE_LEN + TAG_LEN {
            return Err(EncryptionError::Open("blob truncated"));
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let mut body = body.to_vec();
        let aad = segment_place(&self.owner, &id, self.index, last);
        let len = self
            .key
            .open_in_place(nonce, &aad, &mut body)
            .map_err(|_| EncryptionError::Open("a blob segment failed authentication"))?
            .len();
        body.truncate(len);
        self.index += 1;
        Ok(Bytes::from(body))
    }

    /// Plaintext ready after `sealed` arrived: a segment opens once more bytes follow it.
    pub fn push(&mut self, sealed: &[u8]) -> Result<Vec<Bytes>, EncryptionError> {
        self.pending.extend_from_slice(sealed);
        if self.id.is_none() {
            if self.pending.len() < HEADER {
                return Ok(Vec::new());
            }
            let header = self.pending.split_to(HEADER);
            if &header[..MAGIC.len()] != MAGIC {
                return Err(EncryptionError::Open("not a sealed blob"));
            }
            let mut id = [0u8; ID_LEN];
            id.copy_from_slice(&header[MAGIC.len()..]);
            self.id = Some(id);
        }
        let mut out = Vec::new();
        while self.pending.len() > SEALED_SEGMENT {
            let segment = self.pending.split_to(SEALED_SEGMENT);
            out.push(self.open_segment(&segment, false)?);
        }
        Ok(out)
    }

    /// The last segment's plaintext; an error if the blob was cut short.
    pub fn finish(mut self) -> Result<Bytes, EncryptionError> {
        let rest = std::mem::take(&mut self.pending);
        self.open_segment(&rest, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::{BucketCount, CollectionName, Market, ServiceName, UserId};

    fn owner(user: &str) -> CollectionAddress {
        CollectionAddress::new(
            ServiceName::new("cloud").unwrap(),
            Market::new("SG").unwrap(),
            UserId::new(user).unwrap(),
            CollectionName::new("photos").unwrap(),
            BucketCount::default(),
        )
    }

    fn key() -> Arc<DataKey> {
        Arc::new(DataKey::new(&[9u8; 32]).unwrap())
    }

    fn seal(key: &Arc<DataKey>, plain: &[u8], pieces: usize) -> Vec<u8> {
        let mut s = BlobSealer::new(key.clone(), owner("alice")).unwrap();
        let mut out = Vec::new();
        for piece in plain.chunks(pieces.max(1)) {
            for b in s.push(piece).unwrap() {
                out.extend_from_slice(&b);
            }
        }
        out.extend_from_slice(&s.finish().unwrap());
        out
    }

    fn open(
        key: &Arc<DataKey>,
        user: &str,
        sealed: &[u8],
        pieces: usize,
    ) -> Result<Vec<u8>, EncryptionError> {
        let mut o = BlobOpener::new(key.clone(), owner(user));
        let mut out = Vec::new();
        for piece in sealed.chunks(pieces.max(1)) {
            for b in o.push(piece)? {
                out.extend_from_slice(&b);
            }
        }
        out.extend_from_slice(&o.finish()?);
        Ok(out)
    }

    #[test]
    fn blobs_of_every_size_round_trip_in_any_pieces() {
        let k = key();
        for size in [
            0,
            1,
            SEGMENT - 1,
            SEGMENT,
            SEGMENT + 1,
            3 * SEGMENT,
            3 * SEGMENT + 17,
        ] {
            let plain: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            for pieces in [1000, 4096, SEGMENT, 7 * SEGMENT] {
                let sealed = seal(&k, &plain, pieces);
                assert_eq!(
                    open(&k, "alice", &sealed, 333).unwrap(),
                    plain,
                    "size {size}"
                );
            }
        }
    }

    #[test]
    fn truncated_spliced_or_moved_blobs_do_not_open() {
        let k = key();
        let plain = vec![5u8; 2 * SEGMENT + 10];
        let sealed = seal(&k, &plain, 10_000);
        // Cut at a segment boundary: the new last segment was sealed as not-last.
        let boundary = HEADER + SEALED_SEGMENT;
        assert!(open(&k, "alice", &sealed[..boundary], 4096).is_err());
        assert!(open(&k, "alice", &sealed[..sealed.len() - 1], 4096).is_err());
        assert!(
            open(&k, "bob", &sealed, 4096).is_err(),
            "moved to another user"
        );
        // Swap the first two segments.
        let mut swapped = sealed[..HEADER].to_vec();
        swapped.extend_from_slice(&sealed[HEADER + SEALED_SEGMENT..HEADER + 2 * SEALED_SEGMENT]);
        swapped.extend_from_slice(&sealed[HEADER..HEADER + SEALED_SEGMENT]);
        swapped.extend_from_slice(&sealed[HEADER + 2 * SEALED_SEGMENT..]);
        assert!(open(&k, "alice", &swapped, 4096).is_err());
        let other = Arc::new(DataKey::new(&[8u8; 32]).unwrap());
        assert!(open(&other, "alice", &sealed, 4096).is_err());
    }
}

//! The binary stream framing (version 1) of snapshot, change and import streams.
//!
//! ```text
//! stream   = header frame* end
//! header   = "DMST" version:u8 kind:u8 lsn:u64        (14 bytes)
//! frame    = tag:u8 len:u32 payload[len]
//! RECORD 1 = record
//! CHANGE 2 = lsn:u64 op:u8 version:u64 has_current:u8 (record | address)
//! END    3 = lsn:u64 frames:u64        (frames = RECORD/CHANGE frames sent; detects truncation)
//! ERROR  4 = utf-8 message             (the sender failed mid-stream)
//! address  = service:str8 market:[u8;2] bucket:u16 user:str8 collection:str8 key:str16
//! record   = address version:u64 live:u8 [value_len:u32 value]
//! ```
//! Integers are big-endian; `str8`/`str16` are a u8/u16 length and UTF-8 bytes. Every id is
//! validated on decode, so a decoded stream holds only well-formed addresses. The full design
//! note, with the reasons for each choice, is docs/design/stream-framing.md.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use domicile_core::{Bucket, CollectionName, Market, RecordKey, ServiceName, UserId, Version};
use domicile_store::{
    Change, ChangeEntry, ChangeOp, CollectionAddress, Lsn, RecordAddress, VersionedRecord,
};
use thiserror::Error;

pub const MAGIC: &[u8; 4] = b"DMST";
pub const VERSION: u8 = 1;
pub const HEADER_LEN: usize = 14;
/// The largest payload a frame may carry: a maximal record plus its address, with room to spare.
pub const MAX_FRAME: u32 = 80 << 20;

const TAG_RECORD: u8 = 1;
const TAG_CHANGE: u8 = 2;
const TAG_END: u8 = 3;
const TAG_ERROR: u8 = 4;

/// What a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Snapshot = 1,
    Changes = 2,
    Import = 3,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: StreamKind,
    /// Snapshot: the LSN it is consistent at. Changes: the position it starts after.
    pub lsn: Lsn,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Record(VersionedRecord),
    Change(Change),
    End { lsn: Lsn, frames: u64 },
    Error(String),
}

/// A frame as [`Decoder::next_raw`] hands it over.
// Returned by value and taken apart at once; boxing `Other` would allocate per change frame.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawFrame {
    /// A RECORD frame's payload, not yet decoded or checked.
    Record(Bytes),
    /// Any other frame, decoded.
    Other(Frame),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum FrameError {
    #[error("not a domicile stream (bad magic)")]
    Magic,
    #[error("unsupported stream format version {0}")]
    Version(u8),
    #[error("unknown stream kind {0}")]
    Kind(u8),
    #[error("unknown frame tag {0}")]
    Tag(u8),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(u32),
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("stream ended without an END frame")]
    Truncated,
    #[error("END frame counts {declared} frames but {seen} arrived")]
    Count { declared: u64, seen: u64 },
}

fn malformed(what: impl Into<String>) -> FrameError {
    FrameError::Malformed(what.into())
}

// ---- encoding ----

pub fn encode_header(out: &mut BytesMut, header: Header) {
    out.put_slice(MAGIC);
    out.put_u8(VERSION);
    out.put_u8(header.kind as u8);
    out.put_u64(header.lsn.0);
}

fn put_str8(out: &mut BytesMut, s: &str) {
    // Ids are validated to at most 128 bytes, so the length fits.
    out.put_u8(s.len() as u8);
    out.put_slice(s.as_bytes());
}

fn put_address(out: &mut BytesMut, a: &RecordAddress) {
    let c = &a.collection;
    put_str8(out, c.service.as_str());
    out.put_slice(&c.market.as_bytes());
    out.put_u16(c.bucket.0);
    put_str8(out, c.user.as_str());
    put_str8(out, c.collection.as_str());
    out.put_u16(a.key.as_str().len() as u16);
    out.put_slice(a.key.as_str().as_bytes());
}

fn put_record(out: &mut BytesMut, r: &VersionedRecord) {
    put_address(out, &r.address);
    out.put_u64(r.version.0);
    match &r.value {
        Some(v) => {
            out.put_u8(1);
            out.put_u32(v.len() as u32);
            out.put_slice(v);
        }
        None => out.put_u8(0),
    }
}

fn framed(out: &mut BytesMut, tag: u8, body: impl FnOnce(&mut BytesMut)) {
    out.put_u8(tag);
    let at = out.len();
    out.put_u32(0);
    body(out);
    let len = (out.len() - at - 4) as u32;
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

pub fn encode_record(out: &mut BytesMut, r: &VersionedRecord) {
    framed(out, TAG_RECORD, |o| put_record(o, r));
}

pub fn encode_change(out: &mut BytesMut, c: &Change) {
    framed(out, TAG_CHANGE, |o| {
        o.put_u64(c.entry.lsn.0);
        o.put_u8(match c.entry.op {
            ChangeOp::Put => 1,
            ChangeOp::Delete => 2,
        });
        o.put_u64(c.entry.version.0);
        match &c.current {
            Some(r) => {
                o.put_u8(1);
                put_record(o, r);
            }
            None => {
                o.put_u8(0);
                put_address(o, &c.entry.address);
            }
        }
    });
}

pub fn encode_end(out: &mut BytesMut, lsn: Lsn, frames: u64) {
    framed(out, TAG_END, |o| {
        o.put_u64(lsn.0);
        o.put_u64(frames);
    });
}

pub fn encode_error(out: &mut BytesMut, message: &str) {
    framed(out, TAG_ERROR, |o| o.put_slice(message.as_bytes()));
}

// ---- decoding ----

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn need(&self, n: usize, what: &str) -> Result<(), FrameError> {
        if self.0.remaining() < n {
            Err(malformed(format!("short {what}")))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &str) -> Result<u8, FrameError> {
        self.need(1, what)?;
        Ok(self.0.get_u8())
    }
    fn u16(&mut self, what: &str) -> Result<u16, FrameError> {
        self.need(2, what)?;
        Ok(self.0.get_u16())
    }
    fn u32(&mut self, what: &str) -> Result<u32, FrameError> {
        self.need(4, what)?;
        Ok(self.0.get_u32())
    }
    fn u64(&mut self, what: &str) -> Result<u64, FrameError> {
        self.need(8, what)?;
        Ok(self.0.get_u64())
    }
    fn bytes(&mut self, n: usize, what: &str) -> Result<&'a [u8], FrameError> {
        self.need(n, what)?;
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }
    fn str(&mut self, n: usize, what: &str) -> Result<&'a str, FrameError> {
        std::str::from_utf8(self.bytes(n, what)?)
            .map_err(|_| malformed(format!("{what} is not UTF-8")))
    }
    /// An address's fields in place: the one reading of the address layout.
    fn address_view(&mut self) -> Result<AddressView<'a>, FrameError> {
        let n = self.u8("service length")?.into();
        let service = self.str(n, "service")?;
        let m = self.bytes(2, "market")?;
        let market = [m[0], m[1]];
        let bucket = self.u16("bucket")?;
        let n = self.u8("user length")?.into();
        let user = self.str(n, "user")?;
        let n = self.u8("collection length")?.into();
        let collection = self.str(n, "collection")?;
        let n = self.u16("key length")?.into();
        let key = self.str(n, "key")?;
        Ok(AddressView {
            service,
            market,
            bucket,
            user,
            collection,
            key,
        })
    }
    /// A record's fields in place: the one reading of the record layout.
    fn record_view(&mut self) -> Result<RecordView<'a>, FrameError> {
        let address = self.address_view()?;
        let version = self.u64("version")?;
        let value = match self.u8("live flag")? {
            0 => None,
            1 => {
                let n = self.u32("value length")? as usize;
                Some(self.bytes(n, "value")?)
            }
            other => return Err(malformed(format!("live flag {other}"))),
        };
        Ok(RecordView {
            address,
            version,
            value,
        })
    }
    fn address(&mut self) -> Result<RecordAddress, FrameError> {
        self.address_view()?.to_owned()
    }
    fn record(&mut self) -> Result<VersionedRecord, FrameError> {
        self.record_view()?.to_owned()
    }
    fn finish(&self, what: &str) -> Result<(), FrameError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(malformed(format!("trailing bytes in {what}")))
        }
    }
}

/// Decodes one RECORD frame's payload (as [`RawFrame::Record`] holds it), checking every id.
pub fn decode_record(payload: &[u8]) -> Result<VersionedRecord, FrameError> {
    view_record(payload)?.to_owned()
}

/// An address read in place: names UTF-8, not yet validated as ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressView<'a> {
    pub service: &'a str,
    pub market: [u8; 2],
    pub bucket: u16,
    pub user: &'a str,
    pub collection: &'a str,
    pub key: &'a str,
}

impl AddressView<'_> {
    /// The address with every id validated.
    pub fn to_owned(&self) -> Result<RecordAddress, FrameError> {
        let bad = |e: domicile_core::IdError| malformed(e.to_string());
        Ok(RecordAddress {
            collection: CollectionAddress {
                service: ServiceName::new(self.service).map_err(bad)?,
                market: Market::from_bytes(self.market).map_err(bad)?,
                bucket: Bucket(self.bucket),
                user: UserId::new(self.user).map_err(bad)?,
                collection: CollectionName::new(self.collection).map_err(bad)?,
            },
            key: RecordKey::new(self.key).map_err(bad)?,
        })
    }
}

/// A RECORD payload read in place, without copying it or validating its ids: what a relay
/// needs to pass a record on (its receiver decodes it in full, [`RecordView::to_owned`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    pub address: AddressView<'a>,
    pub version: u64,
    pub value: Option<&'a [u8]>,
}

impl RecordView<'_> {
    /// The record with every id validated and its value copied.
    pub fn to_owned(&self) -> Result<VersionedRecord, FrameError> {
        Ok(VersionedRecord {
            address: self.address.to_owned()?,
            version: Version(self.version),
            value: self.value.map(Bytes::copy_from_slice),
        })
    }
}

/// Reads a RECORD payload's fields in place.
pub fn view_record(payload: &[u8]) -> Result<RecordView<'_>, FrameError> {
    let mut r = Reader(payload);
    let view = r.record_view()?;
    r.finish("record")?;
    Ok(view)
}

fn decode_payload(tag: u8, payload: &[u8]) -> Result<Frame, FrameError> {
    let mut r = Reader(payload);
    let frame = match tag {
        TAG_RECORD => Frame::Record(r.record()?),
        TAG_CHANGE => {
            let lsn = Lsn(r.u64("lsn")?);
            let op = match r.u8("op")? {
                1 => ChangeOp::Put,
                2 => ChangeOp::Delete,
                other => return Err(malformed(format!("op {other}"))),
            };
            let version = Version(r.u64("version")?);
            let (address, current) = match r.u8("current flag")? {
                1 => {
                    let rec = r.record()?;
                    (rec.address.clone(), Some(rec))
                }
                0 => (r.address()?, None),
                other => return Err(malformed(format!("current flag {other}"))),
            };
            Frame::Change(Change {
                entry: ChangeEntry {
                    lsn,
                    address,
                    op,
                    version,
                },
                current,
            })
        }
        TAG_END => Frame::End {
            lsn: Lsn(r.u64("lsn")?),
            frames: r.u64("frame count")?,
        },
        TAG_ERROR => {
            Frame::Error(String::from_utf8_lossy(r.bytes(payload.len(), "message")?).into_owned())
        }
        other => return Err(FrameError::Tag(other)),
    };
    r.finish("frame")?;
    Ok(frame)
}

/// An incremental decoder: feed it bytes as they arrive, take frames as they complete.
#[derive(Debug, Default)]
pub struct Decoder {
    buf: BytesMut,
    header: Option<Header>,
    frames: u64,
    ended: bool,
}

impl Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The header, once it has arrived.
    pub fn header(&mut self) -> Result<Option<Header>, FrameError> {
        if self.header.is_none() {
            if self.buf.len() < HEADER_LEN {
                return Ok(None);
            }
            let head = self.buf.split_to(HEADER_LEN);
            if &head[..4] != MAGIC {
                return Err(FrameError::Magic);
            }
            if head[4] != VERSION {
                return Err(FrameError::Version(head[4]));
            }
            let kind = match head[5] {
                1 => StreamKind::Snapshot,
                2 => StreamKind::Changes,
                3 => StreamKind::Import,
                other => return Err(FrameError::Kind(other)),
            };
            let mut lsn = [0u8; 8];
            lsn.copy_from_slice(&head[6..14]);
            self.header = Some(Header {
                kind,
                lsn: Lsn(u64::from_be_bytes(lsn)),
            });
        }
        Ok(self.header)
    }

    /// The next complete frame, if one has arrived. Checks the END frame's count.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        Ok(match self.next_raw()? {
            None => None,
            Some(RawFrame::Record(payload)) => Some(decode_payload(TAG_RECORD, &payload)?),
            Some(RawFrame::Other(frame)) => Some(frame),
        })
    }

    /// As [`Decoder::next_frame`], but a RECORD frame's payload is handed over undecoded, for a
    /// relay that passes records on to a receiver which decodes and checks them in full.
    pub fn next_raw(&mut self) -> Result<Option<RawFrame>, FrameError> {
        if self.header()?.is_none() || self.buf.len() < 5 {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if self.buf.len() < 5 + len as usize {
            return Ok(None);
        }
        self.buf.advance(5);
        let payload = self.buf.split_to(len as usize);
        if self.ended {
            return Err(malformed("data after the END frame"));
        }
        if tag == TAG_RECORD {
            self.frames += 1;
            return Ok(Some(RawFrame::Record(payload.freeze())));
        }
        let frame = decode_payload(tag, &payload)?;
        match &frame {
            Frame::Record(_) | Frame::Change(_) => self.frames += 1,
            Frame::End { frames, .. } => {
                if *frames != self.frames {
                    return Err(FrameError::Count {
                        declared: *frames,
                        seen: self.frames,
                    });
                }
                self.ended = true;
            }
            Frame::Error(_) => {}
        }
        Ok(Some(RawFrame::Other(frame)))
    }

    /// Call when the input is exhausted: a stream must have ended with END.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.ended {
            Ok(())
        } else {
            Err(FrameError::Truncated)
        }
    }
}

/// Decodes a whole stream held in memory: its header and frames (END checked, not returned).
pub fn decode_all(bytes: &[u8]) -> Result<(Header, Vec<Frame>, Lsn), FrameError> {
    let mut d = Decoder::new();
    d.push(bytes);
    let header = d.header()?.ok_or(FrameError::Truncated)?;
    let mut frames = Vec::new();
    let mut end = Lsn(0);
    while let Some(f) = d.next_frame()? {
        match f {
            Frame::End { lsn, .. } => end = lsn,
            Frame::Error(message) => return Err(malformed(format!("sender failed: {message}"))),
            other => frames.push(other),
        }
    }
    d.finish()?;
    Ok((header, frames, end))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use domicile_core::BucketCount;
    use proptest::prelude::*;

    pub(crate) fn record(
        user: &str,
        key: &str,
        version: u64,
        value: Option<&[u8]>,
    ) -> VersionedRecord {
        let c = CollectionAddress::new(
            ServiceName::new("cloud").unwrap(),
            Market::new("MY").unwrap(),
            UserId::new(user).unwrap(),
            CollectionName::new("notes").unwrap(),
            BucketCount::DEFAULT,
        );
        VersionedRecord {
            address: c.record(RecordKey::new(key).unwrap()),
            version: Version(version),
            value: value.map(Bytes::copy_from_slice),
        }
    }

    /// A snapshot stream at LSN 42 of `records` (and `change`, if any).
    pub(crate) fn stream(records: &[VersionedRecord], change: Option<Change>) -> BytesMut {
        let mut out = BytesMut::new();
        encode_header(
            &mut out,
            Header {
                kind: StreamKind::Snapshot,
                lsn: Lsn(42),
            },
        );
        for r in records {
            encode_record(&mut out, r);
        }
        let extra = change.map(|c| encode_change(&mut out, &c)).is_some() as u64;
        encode_end(&mut out, Lsn(42), records.len() as u64 + extra);
        out
    }

    #[test]
    fn streams_round_trip() {
        let records = vec![
            record("a", "k1", 5, Some(b"hello")),
            record("b", "k2", 6, None),
        ];
        let change = Change {
            entry: ChangeEntry {
                lsn: Lsn(9),
                address: records[1].address.clone(),
                op: ChangeOp::Delete,
                version: Version(6),
            },
            current: None,
        };
        let bytes = stream(&records, Some(change.clone()));
        let (header, frames, end) = decode_all(&bytes).unwrap();
        assert_eq!(
            header,
            Header {
                kind: StreamKind::Snapshot,
                lsn: Lsn(42)
            }
        );
        assert_eq!(end, Lsn(42));
        assert_eq!(
            frames,
            vec![
                Frame::Record(records[0].clone()),
                Frame::Record(records[1].clone()),
                Frame::Change(change)
            ]
        );
    }

    #[test]
    fn damaged_streams_are_refused() {
        let records = vec![record("a", "k1", 5, Some(b"hello"))];
        let bytes = stream(&records, None);
        // Truncated anywhere: never a silent success.
        for cut in 0..bytes.len() {
            assert!(decode_all(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_magic = bytes.clone();
        bad_magic[0] = b'X';
        assert_eq!(decode_all(&bad_magic).unwrap_err(), FrameError::Magic);
        let mut bad_version = bytes.clone();
        bad_version[4] = 9;
        assert_eq!(
            decode_all(&bad_version).unwrap_err(),
            FrameError::Version(9)
        );
        // A frame dropped from the middle is caught by the END count.
        let mut out = BytesMut::new();
        encode_header(
            &mut out,
            Header {
                kind: StreamKind::Import,
                lsn: Lsn(0),
            },
        );
        encode_end(&mut out, Lsn(0), 1);
        assert!(matches!(
            decode_all(&out),
            Err(FrameError::Count {
                declared: 1,
                seen: 0
            })
        ));
    }

    proptest! {
        // Arbitrary bytes never panic the decoder, whatever they claim.
        #[test]
        fn arbitrary_bytes_do_not_panic(tail in proptest::collection::vec(any::<u8>(), 0..300)) {
            let mut bytes = BytesMut::new();
            encode_header(&mut bytes, Header { kind: StreamKind::Import, lsn: Lsn(1) });
            bytes.extend_from_slice(&tail);
            let _ = decode_all(&bytes);
        }

        #[test]
        fn records_round_trip(user in "[A-Za-z0-9._-]{1,128}", key in "[A-Za-z0-9._~:-]{1,256}", version in any::<u64>(), value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))) {
            let r = record(&user, &key, version, value.as_deref());
            let bytes = stream(std::slice::from_ref(&r), None);
            let (_, frames, _) = decode_all(&bytes).unwrap();
            prop_assert_eq!(&frames, &vec![Frame::Record(r.clone())]);
            // Read raw, as a snapshot reader takes it, the record reads the same in place and
            // decodes the same.
            let mut d = Decoder::new();
            d.push(&bytes);
            let mut payloads = Vec::new();
            while let Some(raw) = d.next_raw().unwrap() {
                if let RawFrame::Record(payload) = raw {
                    payloads.push(payload);
                }
            }
            prop_assert_eq!(payloads.len(), 1);
            let view = view_record(&payloads[0]).unwrap();
            prop_assert_eq!((view.address.user, view.address.key, view.value), (user.as_str(), key.as_str(), value.as_deref()));
            prop_assert_eq!(decode_record(&payloads[0]).unwrap(), r);
        }
    }
}

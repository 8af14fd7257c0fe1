//! A chunk of a snapshot's records on its way into an import stream, undecoded.
//!
//! A copy's relay (the mover) reads the source's snapshot stream and imports it at the target
//! chunk by chunk. Decoding every record into owned ids and values only to encode it again cost
//! the relay most of its CPU (decision 0015); instead it appends each RECORD frame's payload as
//! it came to an import body. The target decodes and checks every record in full, as it does
//! any import, so a damaged frame is still refused there.

use crate::frame::{self, FrameError, Header, RecordView, StreamKind};
use bytes::{Bytes, BytesMut};
use domicile_store::{Lsn, VersionedRecord};
use std::ops::Range;

/// An import stream being built from RECORD payloads: header, frames, and (in
/// [`ImportChunk::into_body`]) the END frame with their count.
#[derive(Debug)]
pub struct ImportChunk {
    body: BytesMut,
    records: u64,
    /// Where the last record's payload lies in `body`.
    last: Option<Range<usize>>,
}

impl ImportChunk {
    /// An empty chunk whose body has room for `capacity` bytes before it grows.
    pub fn with_capacity(capacity: usize) -> Self {
        let mut body = BytesMut::with_capacity(capacity.max(frame::HEADER_LEN));
        frame::encode_header(
            &mut body,
            Header {
                kind: StreamKind::Import,
                lsn: Lsn(0),
            },
        );
        Self {
            body,
            records: 0,
            last: None,
        }
    }

    /// Appends one RECORD frame's payload.
    pub fn push(&mut self, payload: &[u8]) {
        frame::put_record_frame(&mut self.body, payload);
        let end = self.body.len();
        self.last = Some(end - payload.len()..end);
        self.records += 1;
    }

    /// Appends one record, encoded here.
    pub fn push_record(&mut self, record: &VersionedRecord) {
        let at = self.body.len();
        frame::encode_record(&mut self.body, record);
        // The payload follows the frame's tag and length.
        self.last = Some(at + 5..self.body.len());
        self.records += 1;
    }

    /// Records in the chunk.
    pub fn len(&self) -> u64 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The body's size so far, in bytes.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Every record's payload, in order.
    pub fn payloads(&self) -> impl Iterator<Item = &[u8]> {
        frame::record_payloads(&self.body, frame::HEADER_LEN)
    }

    /// The last record, read in place.
    pub fn last(&self) -> Option<Result<RecordView<'_>, FrameError>> {
        let range = self.last.clone()?;
        Some(frame::view_record(&self.body[range]))
    }

    /// The whole import stream: the frames and an END frame counting them.
    pub fn into_body(mut self) -> Bytes {
        frame::encode_end(&mut self.body, Lsn(0), self.records);
        self.body.freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::{record, stream};
    use crate::frame::{Decoder, Frame, RawFrame, decode_all};

    #[test]
    fn passed_on_records_decode_as_the_ones_sent() {
        let records = vec![
            record("u-1", "a", 7, Some(b"one")),
            record("u-1", "b", 7, None),
            record("u-2", "c", 7, Some(b"")),
        ];
        let mut decoder = Decoder::new();
        decoder.push(&stream(&records, None));
        let mut chunk = ImportChunk::with_capacity(0);
        while let Some(raw) = decoder.next_raw().unwrap() {
            match raw {
                RawFrame::Record(payload) => chunk.push(&payload),
                RawFrame::Other(Frame::End { .. }) => {}
                RawFrame::Other(other) => panic!("unexpected {other:?}"),
            }
        }
        decoder.finish().unwrap();
        assert_eq!(chunk.len(), 3);
        let last = chunk.last().unwrap().unwrap();
        assert_eq!(
            (last.address.user, last.address.key, last.value),
            ("u-2", "c", Some(&b""[..]))
        );
        let views: Vec<_> = chunk
            .payloads()
            .map(|p| frame::view_record(p).unwrap())
            .collect();
        assert_eq!(views[1].value, None);
        assert_eq!(views[0].address.collection, "notes");
        // Encoding the records here builds the same body as passing their frames on.
        let mut encoded = ImportChunk::with_capacity(0);
        records.iter().for_each(|r| encoded.push_record(r));
        assert_eq!(encoded.last(), chunk.last());
        let body = chunk.into_body();
        assert_eq!(encoded.into_body(), body);
        let (header, frames, _) = decode_all(&body).unwrap();
        assert_eq!(header.kind, StreamKind::Import);
        let back: Vec<_> = frames
            .into_iter()
            .map(|f| match f {
                Frame::Record(r) => r,
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(back, records);
    }

    #[test]
    fn an_empty_chunk_is_an_empty_import() {
        let chunk = ImportChunk::with_capacity(16);
        assert!(chunk.is_empty() && chunk.last().is_none());
        let (_, frames, _) = decode_all(&chunk.into_body()).unwrap();
        assert!(frames.is_empty());
    }

    #[test]
    fn a_damaged_payload_is_refused_by_the_receiver() {
        let mut chunk = ImportChunk::with_capacity(0);
        chunk.push(b"\x05clo");
        assert!(chunk.last().unwrap().is_err());
        assert!(decode_all(&chunk.into_body()).is_err());
    }
}

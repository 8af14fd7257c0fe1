//! A region node's data-moving endpoints: snapshot and change streams, import, digests, purge —
//! what a move between regions is made of.

use crate::region::RegionClient;
use crate::{ClientError, check, json, send};
use domicile_store::{BucketDigest, Change, CollectionAddress, Lsn, VersionedRecord};
use domicile_wire::api::{
    DigestResponse, ImportResponse, PullNext, PullRequest, PullStarted, PurgeResponse, ScopeRequest,
};
use domicile_wire::frame::{self, Decoder, Frame, RawFrame, StreamKind};
use futures::StreamExt;
use futures::stream::BoxStream;
use std::time::Duration;

/// One read of a node's change log.
#[derive(Debug)]
pub struct ChangePage {
    pub changes: Vec<Change>,
    /// The position to continue from.
    pub next: Lsn,
    /// The stream reached its size bound: more changes may follow at once, however few this
    /// page holds.
    pub cut_short: bool,
}

/// A snapshot being read: its LSN, and its records in batches as they arrive.
pub struct SnapshotReader {
    pub lsn: Lsn,
    url: String,
    body: BoxStream<'static, reqwest::Result<bytes::Bytes>>,
    decoder: Decoder,
    done: bool,
    /// Room to give the next batch of records: the last one's length, so its vector is
    /// allocated once instead of grown from empty.
    chunk_capacity: usize,
}

impl SnapshotReader {
    /// The next up-to-`max` records; `None` once the stream has ended (with its END frame).
    pub async fn next_batch(
        &mut self,
        max: usize,
    ) -> Result<Option<Vec<VersionedRecord>>, ClientError> {
        self.next_records(max, usize::MAX).await
    }

    /// The next records, decoded: up to `max_records`, and no more once their frames hold
    /// `max_bytes`; `None` once the stream has ended.
    pub async fn next_records(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<Vec<VersionedRecord>>, ClientError> {
        let mut out = Vec::with_capacity(self.chunk_capacity.min(max_records));
        let mut size = 0;
        while out.len() < max_records && size < max_bytes {
            let Some(payload) = self.next_record().await? else {
                break;
            };
            size += payload.len();
            out.push(frame::decode_record(&payload).map_err(|e| self.bad(e.to_string()))?);
        }
        self.chunk_capacity = self.chunk_capacity.max(out.len());
        Ok((!out.is_empty()).then_some(out))
    }

    /// The next RECORD frame's payload, reading on as needed; `None` at the END frame.
    async fn next_record(&mut self) -> Result<Option<bytes::Bytes>, ClientError> {
        while !self.done {
            match self
                .decoder
                .next_raw()
                .map_err(|e| self.bad(e.to_string()))?
            {
                Some(RawFrame::Record(payload)) => return Ok(Some(payload)),
                Some(RawFrame::Other(Frame::End { .. })) => self.done = true,
                Some(RawFrame::Other(Frame::Error(m))) => {
                    return Err(self.bad(format!("source failed: {m}")));
                }
                Some(RawFrame::Other(Frame::Change(_) | Frame::Record(_))) => {
                    return Err(self.bad("a change frame in a snapshot".into()));
                }
                None => match self.body.next().await {
                    Some(chunk) => {
                        let chunk = chunk.map_err(|source| ClientError::Transport {
                            url: self.url.clone(),
                            source,
                        })?;
                        self.decoder.push(&chunk);
                    }
                    None => {
                        self.decoder.finish().map_err(|e| self.bad(e.to_string()))?;
                        self.done = true;
                    }
                },
            }
        }
        Ok(None)
    }

    fn bad(&self, message: String) -> ClientError {
        ClientError::Body {
            url: self.url.clone(),
            message,
        }
    }
}

impl RegionClient {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post_json<T: serde::de::DeserializeOwned>(
        &self,
        path: &str,
        body: &impl serde::Serialize,
    ) -> Result<T, ClientError> {
        json(&self.url(path), self.post(path, body).await?).await
    }

    /// Starts reading a consistent snapshot of `scope`.
    pub async fn snapshot(&self, scope: &ScopeRequest) -> Result<SnapshotReader, ClientError> {
        let url = self.url("/internal/snapshot");
        let r = self.post("/internal/snapshot", scope).await?;
        let mut reader = SnapshotReader {
            lsn: Lsn(0),
            url: url.clone(),
            body: r.bytes_stream().boxed(),
            decoder: Decoder::new(),
            done: false,
            chunk_capacity: 0,
        };
        let header = loop {
            if let Some(h) = reader.decoder.header().map_err(|e| ClientError::Body {
                url: url.clone(),
                message: e.to_string(),
            })? {
                break h;
            }
            match reader.body.next().await {
                Some(chunk) => {
                    reader
                        .decoder
                        .push(&chunk.map_err(|source| ClientError::Transport {
                            url: url.clone(),
                            source,
                        })?)
                }
                None => {
                    return Err(ClientError::Body {
                        url,
                        message: "the snapshot ended before its header".into(),
                    });
                }
            }
        };
        if header.kind != StreamKind::Snapshot {
            return Err(ClientError::Body {
                url,
                message: "not a snapshot stream".into(),
            });
        }
        reader.lsn = header.lsn;
        Ok(reader)
    }

    /// Changes of `scope` after `after` (waiting up to `wait` when there are none), and the
    /// position to continue from.
    pub async fn changes(
        &self,
        scope: &ScopeRequest,
        after: Lsn,
        limit: usize,
        wait: Duration,
    ) -> Result<ChangePage, ClientError> {
        let url = format!(
            "{}?service={}&market={}&buckets={}&after={}&limit={limit}&wait_ms={}",
            self.url("/internal/changes"),
            scope.service,
            scope.market,
            scope.buckets,
            after.0,
            wait.as_millis()
        );
        let bytes = send(&url, self.http.get(&url))
            .await?
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.clone(),
                source,
            })?;
        let (_, frames, next) = frame::decode_all(&bytes).map_err(|e| ClientError::Body {
            url: url.clone(),
            message: e.to_string(),
        })?;
        let changes = frames
            .into_iter()
            .filter_map(|f| match f {
                Frame::Change(c) => Some(c),
                _ => None,
            })
            .collect();
        Ok(ChangePage {
            changes,
            next,
            cut_short: bytes.len() >= domicile_wire::api::CHANGE_STREAM_BYTES,
        })
    }

    /// Imports records of one service and market (applied atomically, higher version wins).
    pub async fn import(
        &self,
        scope: &ScopeRequest,
        records: &[VersionedRecord],
    ) -> Result<ImportResponse, ClientError> {
        let size: usize = records.iter().map(domicile_store::chunk_weight).sum();
        let mut body = bytes::BytesMut::with_capacity(size + frame::HEADER_LEN + 64);
        frame::encode_header(
            &mut body,
            frame::Header {
                kind: StreamKind::Import,
                lsn: Lsn(0),
            },
        );
        for r in records {
            frame::encode_record(&mut body, r);
        }
        frame::encode_end(&mut body, Lsn(0), records.len() as u64);
        let url = format!(
            "{}?service={}&market={}",
            self.url("/internal/import"),
            scope.service,
            scope.market
        );
        let request = self
            .http
            .post(&url)
            .header(
                reqwest::header::CONTENT_TYPE,
                domicile_wire::api::STREAM_CONTENT_TYPE,
            )
            .body(body.freeze());
        json(&url, send(&url, request).await?).await
    }

    /// The node's last durable LSN.
    pub async fn status_lsn(&self) -> Result<u64, ClientError> {
        let url = self.url("/internal/status");
        let status: domicile_wire::api::StatusResponse =
            json(&url, send(&url, self.http.get(&url)).await?).await?;
        Ok(status.last_lsn)
    }

    pub async fn digest(&self, scope: &ScopeRequest) -> Result<Vec<BucketDigest>, ClientError> {
        let r: DigestResponse = self.post_json("/internal/digest", scope).await?;
        Ok(r.digests)
    }

    pub async fn purge(&self, scope: &ScopeRequest) -> Result<PurgeResponse, ClientError> {
        self.post_json("/internal/purge", scope).await
    }

    fn blob_url(&self, owner: &CollectionAddress, hash: &str) -> String {
        self.url(&format!(
            "/internal/blobs/{}/{}/{}/{}/{hash}",
            owner.service, owner.market, owner.user, owner.collection
        ))
    }

    /// Whether this node holds the blob.
    pub async fn has_blob(
        &self,
        owner: &CollectionAddress,
        hash: &str,
    ) -> Result<bool, ClientError> {
        let url = self.blob_url(owner, hash);
        let response =
            self.http
                .head(&url)
                .send()
                .await
                .map_err(|source| ClientError::Transport {
                    url: url.clone(),
                    source,
                })?;
        if response.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(false);
        }
        check(&url, response).await.map(|_| true)
    }

    /// The node's base URL, as this client reaches it.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Asks this node (a move's target) to pull a snapshot of `request.scope` from the source.
    pub async fn pull_start(&self, request: &PullRequest) -> Result<PullStarted, ClientError> {
        self.post_json("/internal/pull", request).await
    }

    /// The next chunk this node imported for pull `session`; `None` once the snapshot ended.
    pub async fn pull_next(
        &self,
        session: u64,
    ) -> Result<Option<domicile_wire::api::PulledChunk>, ClientError> {
        let next: PullNext = self
            .post_json(&format!("/internal/pull/{session}/next"), &())
            .await?;
        Ok(next.chunk)
    }

    /// Ends pull `session` at this node (a copy given up); an unknown session is no error.
    pub async fn pull_close(&self, session: u64) -> Result<(), ClientError> {
        let url = self.url(&format!("/internal/pull/{session}"));
        match send(&url, self.http.delete(&url)).await {
            Ok(_) | Err(ClientError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// A blob's plaintext from this node, as it arrives.
    pub async fn blob_stream(
        &self,
        owner: &CollectionAddress,
        hash: &str,
    ) -> Result<BoxStream<'static, Result<bytes::Bytes, String>>, ClientError> {
        let url = self.blob_url(owner, hash);
        let response = send(&url, self.http.get(&url)).await?;
        Ok(response
            .bytes_stream()
            .map(|chunk| chunk.map_err(|e| e.to_string()))
            .boxed())
    }

    /// Streams a blob from this node into `target` (opened here, sealed there); returns its
    /// size.
    pub async fn copy_blob(
        &self,
        target: &RegionClient,
        owner: &CollectionAddress,
        hash: &str,
    ) -> Result<u64, ClientError> {
        let from = self.blob_url(owner, hash);
        let response = send(&from, self.http.get(&from)).await?;
        let size = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = {
            let size = size.clone();
            response.bytes_stream().inspect(move |chunk| {
                if let Ok(c) = chunk {
                    size.fetch_add(c.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            })
        };
        let to = target.blob_url(owner, hash);
        let request = target
            .http
            .put(&to)
            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
            .body(reqwest::Body::wrap_stream(counted));
        send(&to, request).await?;
        Ok(size.load(std::sync::atomic::Ordering::Relaxed))
    }
}

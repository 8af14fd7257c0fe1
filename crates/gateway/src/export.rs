//! `GET /v1/users/{user}/export`: all of a user's data, from every service's owning region, as
//! one tar archive (`application/x-tar`), streamed:
//!
//! - `manifest.json`: `{format, user, market, services, records, blobs}`;
//! - `records.jsonl`: one JSON object per record of every service (consent records included):
//!   `{service, collection, key, version, value | value_base64 | blob + file}`;
//! - `blobs/<collection>/<key>`: each blob's bytes, the `file` its record names.
//!
//! The records are gathered first (page by page from each owner; a tar entry needs its size
//! before its bytes), so a failure there is an ordinary JSON error. Blobs are then streamed
//! one by one from their owners, never held whole. A failure after the archive has started
//! (an owner gone, a blob replaced meanwhile) ends the body early, without the end-of-archive
//! blocks: a client that does not find them knows the archive is incomplete and retries.

use crate::consent::region_json;
use crate::proxy::{Payload, authenticate, forward_routed};
use crate::state::GatewayState;
use crate::tokens::Identity;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use domicile_core::ServiceName;
use domicile_http::ApiError;
use domicile_store::BlobRef;
use domicile_wire::api::ExportPage;
use futures::StreamExt;
use serde_json::{Value, json};
use std::sync::Arc;

const BLOCK: usize = 512;
/// Chunks of the archive buffered ahead of a slow client.
const AHEAD: usize = 8;

/// A blob to stream after the records: where it is and what its record says it is.
struct BlobEntry {
    service: ServiceName,
    path: String,
    file: String,
    blob: BlobRef,
}

/// `GET /v1/users/{user}/export` → `application/x-tar`.
pub async fn export(
    State(state): State<Arc<GatewayState>>,
    Path(user): Path<String>,
    headers: HeaderMap,
) -> Response {
    match start(state, &user, &headers).await {
        Ok(r) | Err(r) => r,
    }
}

async fn start(
    state: Arc<GatewayState>,
    user: &str,
    headers: &HeaderMap,
) -> Result<Response, Response> {
    let identity = authenticate(&state, headers, user).map_err(IntoResponse::into_response)?;
    let services = state.table().schema.services();
    let mut lines = Vec::new();
    let mut blobs = Vec::new();
    for service in &services {
        gather(&state, &identity, service, &mut lines, &mut blobs).await?;
    }
    let records = lines.iter().filter(|&&b| b == b'\n').count();
    let manifest = json!({
        "format": "domicile-export/1",
        "user": identity.user,
        "market": identity.market,
        "services": services,
        "records": records,
        "blobs": blobs.len(),
    });
    let manifest = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| ApiError::Internal(e.to_string()).into_response())?;
    let mut head = Vec::new();
    for (name, data) in [("manifest.json", manifest), ("records.jsonl", lines)] {
        head.extend(entry_header(name, data.len() as u64).map_err(internal)?);
        head.extend_from_slice(&data);
        head.extend(padding(data.len() as u64));
    }
    state.metrics.exports.inc();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(AHEAD);
    tokio::spawn(async move {
        if tx.send(Ok(Bytes::from(head))).await.is_err() {
            return;
        }
        for entry in blobs {
            if let Err(e) = stream_blob(&state, &identity, &entry, &tx).await {
                tracing::warn!(user = %identity.user, file = %entry.file, error = %e, "export broke off");
                let _ = tx.send(Err(std::io::Error::other(e))).await;
                return;
            }
        }
        let _ = tx.send(Ok(Bytes::from(vec![0u8; 2 * BLOCK]))).await;
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    let disposition = format!("attachment; filename=\"{user}-export.tar\"");
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(response)
}

fn internal(e: std::io::Error) -> Response {
    ApiError::Internal(format!("tar header: {e}")).into_response()
}

/// Reads every export page of `service` from its owner: records into `lines`, blobs to fetch
/// into `blobs`.
async fn gather(
    state: &GatewayState,
    identity: &Identity,
    service: &ServiceName,
    lines: &mut Vec<u8>,
    blobs: &mut Vec<BlobEntry>,
) -> Result<(), Response> {
    let mut after: Option<String> = None;
    loop {
        let mut path = format!("/v1/users/{}/export?service={service}", identity.user);
        if let Some(a) = &after {
            path.push_str("&after=");
            path.push_str(a);
        }
        let mut payload = Payload::Buffered(Bytes::new());
        let response = forward_routed(
            state,
            identity,
            service,
            &Method::GET,
            &path,
            &HeaderMap::new(),
            &mut payload,
        )
        .await
        .map_err(IntoResponse::into_response)?;
        let page: ExportPage = region_json(response).await?;
        for item in page.items {
            let mut line = serde_json::to_value(&item)
                .map_err(|e| ApiError::Internal(e.to_string()).into_response())?;
            if let Value::Object(map) = &mut line {
                map.insert("service".into(), json!(service));
                if let Some(blob) = item.blob {
                    let file = format!("blobs/{}/{}", item.collection, item.key);
                    map.insert("file".into(), json!(file));
                    blobs.push(BlobEntry {
                        service: service.clone(),
                        path: format!(
                            "/v1/users/{}/{}/{}",
                            identity.user, item.collection, item.key
                        ),
                        file,
                        blob,
                    });
                }
            }
            serde_json::to_writer(&mut *lines, &line)
                .map_err(|e| ApiError::Internal(e.to_string()).into_response())?;
            lines.push(b'\n');
        }
        match page.next {
            Some(next) => after = Some(next),
            None => return Ok(()),
        }
    }
}

/// Streams one blob's entry: header, the bytes from its owner, padding. Fails if the owner
/// does not serve exactly the bytes the record announced (the blob changed meanwhile).
async fn stream_blob(
    state: &GatewayState,
    identity: &Identity,
    entry: &BlobEntry,
    tx: &tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> Result<(), String> {
    let mut payload = Payload::Buffered(Bytes::new());
    let response = forward_routed(
        state,
        identity,
        &entry.service,
        &Method::GET,
        &entry.path,
        &HeaderMap::new(),
        &mut payload,
    )
    .await
    .map_err(|e| e.to_string())?;
    if response.status() != StatusCode::OK {
        return Err(format!("{} answered {}", entry.path, response.status()));
    }
    let size = entry.blob.size;
    let header = entry_header(&entry.file, size).map_err(|e| e.to_string())?;
    tx.send(Ok(Bytes::from(header)))
        .await
        .map_err(|_| "client went away".to_string())?;
    let mut sent = 0u64;
    let mut body = response.into_body().into_data_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| format!("{}: {e}", entry.path))?;
        sent += chunk.len() as u64;
        if sent > size {
            break;
        }
        tx.send(Ok(chunk))
            .await
            .map_err(|_| "client went away".to_string())?;
    }
    if sent != size {
        return Err(format!(
            "{} changed while exporting ({sent} bytes, the record says {size})",
            entry.path
        ));
    }
    tx.send(Ok(Bytes::from(padding(size))))
        .await
        .map_err(|_| "client went away".to_string())
}

/// The header block(s) of a regular file entry of `size` bytes (a GNU long-name entry first
/// when the path does not fit the header).
fn entry_header(path: &str, size: u64) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    header.set_mtime(now);
    let mut builder = tar::Builder::new(Vec::new());
    // Writes the header (with its checksum) and no data: the caller streams the bytes.
    builder.append_data(&mut header, path, std::io::empty())?;
    Ok(std::mem::take(builder.get_mut()))
}

/// Zeros that round `size` up to whole blocks.
fn padding(size: u64) -> Vec<u8> {
    let rem = (size % BLOCK as u64) as usize;
    if rem == 0 {
        Vec::new()
    } else {
        vec![0u8; BLOCK - rem]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn headers_and_padding_make_an_archive_tar_reads_back() {
        let long = format!("blobs/photos/{}", "k".repeat(200));
        let mut archive = Vec::new();
        for (name, data) in [
            ("records.jsonl", b"{}\n".to_vec()),
            (long.as_str(), vec![7u8; 1000]),
        ] {
            archive.extend(entry_header(name, data.len() as u64).unwrap());
            archive.extend_from_slice(&data);
            archive.extend(padding(data.len() as u64));
        }
        archive.extend(vec![0u8; 2 * BLOCK]);
        let mut read = tar::Archive::new(&archive[..]);
        let mut seen = Vec::new();
        for entry in read.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.push((path, data.len()));
        }
        assert_eq!(seen, [("records.jsonl".to_string(), 3), (long, 1000)]);
    }
}

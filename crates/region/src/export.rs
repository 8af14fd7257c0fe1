//! Export pages: one user's records of one service, every collection (the consents collection
//! included), with their values, page by page. The gateway assembles the user's archive from
//! the pages of every service's owner and fetches blob bytes from their usual paths.

use crate::state::NodeState;
use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use base64::Engine;
use domicile_core::{CollectionKind, CollectionName, RecordKey, ServiceName};
use domicile_http::ApiError;
use domicile_http::request;
use domicile_store::{BlobRef, CollectionAddress};
use domicile_wire::api::{ExportItem, ExportPage};
use serde::Deserialize;
use std::sync::Arc;

/// The most items a page carries.
const MAX_PAGE: usize = 1000;
/// A page ends once its values pass this many bytes (records are at most the record limit).
const PAGE_BYTES: usize = 4 << 20;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportQuery {
    service: ServiceName,
    /// `collection/key`: the last item of the previous page.
    after: Option<String>,
    limit: Option<usize>,
}

fn parse_after(after: Option<&str>) -> Result<Option<(CollectionName, RecordKey)>, ApiError> {
    let Some(after) = after else {
        return Ok(None);
    };
    let (collection, key) = after.split_once('/').ok_or_else(|| {
        ApiError::bad("invalid_query", "after must be collection/key from `next`")
    })?;
    Ok(Some((request::collection(collection)?, request::key(key)?)))
}

/// `GET /v1/users/{user}/export?service=&after=&limit=` → an [`ExportPage`].
pub async fn page(
    State(state): State<Arc<NodeState>>,
    Path(user): Path<String>,
    query: Result<Query<ExportQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<ExportPage>, ApiError> {
    let q = request::query(query)?;
    let user = request::user(&user)?;
    let market = request::market(&headers)?;
    let epoch = request::epoch(&headers)?;
    let collections = state.schema.stored_collections(&q.service);
    if collections.is_empty() {
        return Err(ApiError::NotFound(format!(
            "the schema has no service {}",
            q.service
        )));
    }
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad(
            "invalid_query",
            format!("limit must be 1..={MAX_PAGE}"),
        ));
    }
    let after = parse_after(q.after.as_deref())?;
    let (first, _) = &collections[0];
    let of = CollectionAddress::new(
        q.service.clone(),
        market,
        user,
        first.clone(),
        state.buckets,
    );
    state.ownership().check_collection(&of, epoch, false)?;
    let mut items = Vec::new();
    let mut bytes = 0usize;
    for (name, kind) in collections {
        let mut from = match &after {
            Some((c, _)) if name < *c => continue,
            Some((c, k)) if name == *c => Some(k.clone()),
            _ => None,
        };
        let collection = CollectionAddress {
            collection: name.clone(),
            ..of.clone()
        };
        loop {
            let want = (limit - items.len()).min(MAX_PAGE);
            let listed = state.store.list(&collection, from.as_ref(), want).await?;
            for item in listed.items {
                let address = collection.record(item.key.clone());
                // Deleted since it was listed: not part of the export.
                let Some(record) = state.store.get(&address).await? else {
                    continue;
                };
                bytes += record.value.len();
                items.push(export_item(&name, kind, &item.key, record)?);
                if items.len() >= limit || bytes >= PAGE_BYTES {
                    state.metrics.export_pages.inc();
                    return Ok(Json(ExportPage {
                        items,
                        next: Some(format!("{name}/{}", item.key)),
                    }));
                }
            }
            match listed.next {
                Some(next) => from = Some(next),
                None => break,
            }
        }
    }
    state.metrics.export_pages.inc();
    Ok(Json(ExportPage { items, next: None }))
}

fn export_item(
    collection: &CollectionName,
    kind: CollectionKind,
    key: &RecordKey,
    record: domicile_store::Record,
) -> Result<ExportItem, ApiError> {
    let mut item = ExportItem {
        collection: collection.to_string(),
        key: key.to_string(),
        version: record.version.to_string(),
        value: None,
        value_base64: None,
        blob: None,
    };
    match kind {
        CollectionKind::Blobs => {
            let blob: BlobRef = serde_json::from_slice(&record.value)
                .map_err(|e| ApiError::Internal(format!("blob metadata of {key}: {e}")))?;
            item.blob = Some(blob);
        }
        CollectionKind::Records => match std::str::from_utf8(&record.value) {
            Ok(text) => item.value = Some(text.to_string()),
            Err(_) => {
                item.value_base64 =
                    Some(base64::engine::general_purpose::STANDARD.encode(&record.value))
            }
        },
    }
    Ok(item)
}

//! Turning HTTP requests into validated domicile values; every failure is a 400 with a reason.

use crate::error::ApiError;
use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use domicile_core::{CollectionName, Epoch, Market, RecordKey, UserId, Version};
use domicile_store::Precondition;
use domicile_wire::api::{EPOCH_HEADER, MARKET_HEADER};
use http_body_util::BodyExt;

pub fn user(s: &str) -> Result<UserId, ApiError> {
    UserId::new(s).map_err(|e| ApiError::bad("invalid_id", e.to_string()))
}

pub fn collection(s: &str) -> Result<CollectionName, ApiError> {
    CollectionName::new(s).map_err(|e| ApiError::bad("invalid_id", e.to_string()))
}

pub fn key(s: &str) -> Result<RecordKey, ApiError> {
    RecordKey::new(s).map_err(|e| ApiError::bad("invalid_id", e.to_string()))
}

/// The one service of a batch's collections (`POST /v1/users/{user}/batch`), or why it has
/// none: an unknown collection, collections of two services, no writes at all.
pub fn batch_service<'a>(
    schema: &domicile_core::Schema,
    collections: impl IntoIterator<Item = &'a str>,
) -> Result<domicile_core::ServiceName, ApiError> {
    let mut service: Option<domicile_core::ServiceName> = None;
    for (i, name) in collections.into_iter().enumerate() {
        let name = collection(name)?;
        let spec = schema.collection(&name).ok_or_else(|| {
            ApiError::bad(
                "unknown_collection",
                format!("write {i}: the schema has no collection {name}"),
            )
        })?;
        match &service {
            Some(s) if s != &spec.service => {
                return Err(ApiError::bad(
                    "mixed_services",
                    format!(
                        "write {i}: {name} belongs to service {}, the batch to {s}; a batch \
                         stays within one service",
                        spec.service
                    ),
                ));
            }
            Some(_) => {}
            None => service = Some(spec.service.clone()),
        }
    }
    service.ok_or_else(|| ApiError::bad("empty_batch", "a batch needs at least one write"))
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::bad("invalid_header", format!("{name} is not ASCII")))
        })
        .transpose()
}

/// The user's market, from the `x-domicile-market` header (set by the gateway).
pub fn market(headers: &HeaderMap) -> Result<Market, ApiError> {
    let value = header(headers, MARKET_HEADER)?.ok_or_else(|| {
        ApiError::bad(
            "missing_market",
            format!("the {MARKET_HEADER} header is required"),
        )
    })?;
    Market::new(value).map_err(|e| ApiError::bad("invalid_market", e.to_string()))
}

/// The epoch the caller routed by, if it says.
pub fn epoch(headers: &HeaderMap) -> Result<Option<Epoch>, ApiError> {
    header(headers, EPOCH_HEADER)?
        .map(|v| {
            v.parse::<u64>().map(Epoch).map_err(|_| {
                ApiError::bad(
                    "invalid_header",
                    format!("{EPOCH_HEADER} must be an integer"),
                )
            })
        })
        .transpose()
}

/// `If-Match: *` / `If-Match: "<version>"` / `If-None-Match: *`.
pub fn precondition(headers: &HeaderMap) -> Result<Precondition, ApiError> {
    let if_match_header = header(headers, "if-match")?;
    let if_none_match = header(headers, "if-none-match")?;
    match (if_match_header, if_none_match) {
        (Some(_), Some(_)) => Err(ApiError::bad(
            "invalid_header",
            "send If-Match or If-None-Match, not both",
        )),
        (Some(m), None) => if_match(m, "invalid_header"),
        (None, Some(m)) if m.trim() == "*" => Ok(Precondition::Absent),
        (None, Some(_)) => Err(ApiError::bad(
            "invalid_header",
            "only If-None-Match: * is supported",
        )),
        (None, None) => Ok(Precondition::None),
    }
}

/// An `If-Match` value (the header, or a batch write's `if_match`): `*` or an ETag this API
/// returned; `code` is the error code a bad one gets.
pub fn if_match(value: &str, code: &'static str) -> Result<Precondition, ApiError> {
    if value.trim() == "*" {
        return Ok(Precondition::Exists);
    }
    Version::from_etag(value)
        .map(Precondition::Version)
        .ok_or_else(|| ApiError::bad(code, "If-Match must be * or an ETag this API returned"))
}

/// Reads a whole body, refusing it with 413 once it passes `limit` bytes.
pub async fn body(body: Body, limit: u64) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, limit as usize);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(e) => Err(ApiError::bad(
            "malformed_body",
            format!("could not read the body: {e}"),
        )),
    }
}

/// Parses a JSON body into `T`, with the parser's message on failure.
pub fn json<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad("malformed_body", format!("invalid JSON body: {e}")))
}

/// Maps a query-string rejection to a 400 with the parser's reason.
pub fn query<T>(
    q: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|axum::extract::Query(v)| v)
        .map_err(|e| ApiError::bad("invalid_query", e.body_text()))
}

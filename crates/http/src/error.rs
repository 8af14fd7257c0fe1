//! The one API error type and its mapping to HTTP: `{"error":{"code","message"}}`.
//!
//! Internal errors are logged with their detail and answered with a generic message, so nothing
//! of the engine leaks to a client.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use domicile_core::{Epoch, RegionId};
use domicile_store::{BlobError, StoreError};
use domicile_wire::api::{ErrorBody, ErrorDetail};

#[derive(Debug)]
pub enum ApiError {
    /// 400 with a specific code (`invalid_id`, `missing_market`, `malformed_body`, …).
    BadRequest {
        code: &'static str,
        message: String,
    },
    NotFound(String),
    /// 401: no or bad credential.
    Unauthorized(String),
    /// 403: authenticated, but not allowed (another user's data).
    Forbidden(String),
    /// 412: a conditional write found another version.
    PreconditionFailed(String),
    /// 409: the request conflicts with the node's state (ownership changes, purge of owned data).
    Conflict(String),
    PayloadTooLarge {
        limit: u64,
    },
    /// 403: the collection needs a consent purpose the user has not granted (or revoked).
    ConsentRequired(String),
    /// 403: the policy does not allow this region to hold the data.
    ResidencyViolation(String),
    /// 421: this node does not own the range at the caller's epoch (or it is fenced).
    Misdirected {
        code: &'static str,
        message: String,
        owner: Option<RegionId>,
        epoch: Option<Epoch>,
    },
    MethodNotAllowed,
    /// 503: the store refuses writes (poisoned) or is closing.
    Unavailable(String),
    /// 502: a region node the request depends on failed.
    BadGateway(String),
    /// 503 with `Retry-After`: try again shortly (e.g. a cutover outlasted the hold).
    RetryLater {
        message: String,
        after_secs: u64,
    },
    Internal(String),
}

impl ApiError {
    pub fn bad(code: &'static str, message: impl Into<String>) -> Self {
        ApiError::BadRequest {
            code,
            message: message.into(),
        }
    }

    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest { code, .. } => (StatusCode::BAD_REQUEST, code),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::BadGateway(_) => (StatusCode::BAD_GATEWAY, "bad_gateway"),
            ApiError::RetryLater { .. } => (StatusCode::SERVICE_UNAVAILABLE, "retry_later"),
            ApiError::PreconditionFailed(_) => {
                (StatusCode::PRECONDITION_FAILED, "precondition_failed")
            }
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::ResidencyViolation(_) => (StatusCode::FORBIDDEN, "residency_violation"),
            ApiError::ConsentRequired(_) => (StatusCode::FORBIDDEN, "consent_required"),
            ApiError::Misdirected { code, .. } => (StatusCode::MISDIRECTED_REQUEST, code),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn status(&self) -> StatusCode {
        self.parts().0
    }

    /// The message a client is shown: internal details stay in the log.
    fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; see the node's log".to_string(),
            ApiError::PayloadTooLarge { limit } => {
                format!("body exceeds the limit of {limit} bytes")
            }
            ApiError::MethodNotAllowed => "this endpoint does not support that method".into(),
            ApiError::Misdirected { message, .. }
            | ApiError::RetryLater { message, .. }
            | ApiError::BadRequest { message, .. }
            | ApiError::NotFound(message)
            | ApiError::Unauthorized(message)
            | ApiError::Forbidden(message)
            | ApiError::BadGateway(message)
            | ApiError::PreconditionFailed(message)
            | ApiError::Conflict(message)
            | ApiError::ResidencyViolation(message)
            | ApiError::ConsentRequired(message)
            | ApiError::Unavailable(message) => message.clone(),
        }
    }
}

/// `code: message`, with internal details kept (for logs and for callers in the same process).
impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let code = self.parts().1;
        match self {
            ApiError::Internal(detail) => write!(f, "{code}: {detail}"),
            _ => write!(f, "{code}: {}", self.public_message()),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::PreconditionFailed { current, .. } => {
                ApiError::PreconditionFailed(match current {
                    Some(v) => format!("the record's current version is {v}"),
                    None => "the record does not exist".to_string(),
                })
            }
            StoreError::NotFound { .. } => ApiError::NotFound("record not found".into()),
            StoreError::Poisoned | StoreError::Closed => ApiError::Unavailable(e.to_string()),
            // Its data key was destroyed (erased, or moved away): the data is gone.
            StoreError::Encryption(domicile_store::EncryptionError::KeyDestroyed(_)) => {
                ApiError::NotFound("the record was erased".into())
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        match e {
            BlobError::TooLarge { limit } => ApiError::PayloadTooLarge { limit },
            BlobError::NotFound => ApiError::NotFound("blob not found".into()),
            BlobError::Upload(m) => {
                ApiError::bad("malformed_body", format!("upload interrupted: {m}"))
            }
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        if let ApiError::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let (owner, epoch) = match &self {
            ApiError::Misdirected { owner, epoch, .. } => (owner.clone(), *epoch),
            _ => (None, None),
        };
        let body = Json(ErrorBody {
            error: ErrorDetail {
                code: code.to_string(),
                message: self.public_message(),
                owner,
                epoch,
            },
        });
        match self {
            ApiError::RetryLater { after_secs, .. } => (
                status,
                [(axum::http::header::RETRY_AFTER, after_secs.to_string())],
                body,
            )
                .into_response(),
            _ => (status, body).into_response(),
        }
    }
}

//! Events other roles record in the ledger (`POST /internal/ledger/events`): key destruction,
//! erasure and consent revocation — only these kinds, each with its body checked against its
//! type in `domicile_wire::ledger`, so a caller can neither forge a transfer nor a checkpoint.

use super::{LedgerError, append, kind};
use crate::state::ControlState;
use axum::Json;
use axum::body::Body;
use axum::extract::State;
use domicile_http::{ApiError, request};
use domicile_wire::ledger::{
    ConsentRevocation, Erasure, KeyDestruction, LedgerAppended, LedgerEvent,
};
use std::sync::Arc;

/// How far back a retried event is looked for (it is not appended twice).
const LOOKBACK: u64 = 256;

/// The longest event id.
const ID_MAX: usize = 256;

/// Checks an event: an accepted kind, a printable id, and a body of that kind's type.
pub fn check(event: &LedgerEvent) -> Result<(), LedgerError> {
    if event.id.is_empty() || event.id.len() > ID_MAX || event.id.chars().any(char::is_control) {
        return Err(LedgerError::Refused(format!(
            "an event id is 1-{ID_MAX} printable characters"
        )));
    }
    let body = event.body.clone();
    let parsed = match event.kind.as_str() {
        kind::KEY_DESTRUCTION => serde_json::from_value::<KeyDestruction>(body).map(drop),
        kind::ERASURE => serde_json::from_value::<Erasure>(body).map(drop),
        kind::CONSENT_REVOCATION => serde_json::from_value::<ConsentRevocation>(body).map(drop),
        other => {
            return Err(LedgerError::Refused(format!(
                "the ledger does not accept {other:?} events from outside the control plane: {}, {} or {}",
                kind::KEY_DESTRUCTION,
                kind::ERASURE,
                kind::CONSENT_REVOCATION
            )));
        }
    };
    parsed.map_err(|e| LedgerError::Refused(format!("{} body: {e}", event.kind)))
}

/// Appends a checked event (a retry with the same id returns the first one's seq).
pub async fn record(state: &ControlState, event: LedgerEvent) -> Result<u64, LedgerError> {
    check(&event)?;
    append(state, &event.kind, &event.id, event.body, LOOKBACK).await
}

/// `POST /internal/ledger/events` `{"kind","id","body"}` → `{"seq"}`.
pub async fn post_event(
    State(state): State<Arc<ControlState>>,
    body: Body,
) -> Result<Json<LedgerAppended>, ApiError> {
    let event: LedgerEvent = request::json(&request::body(body, 64 << 10).await?)?;
    let seq = record(&state, event).await?;
    Ok(Json(LedgerAppended { seq }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_the_outside_kinds_with_their_bodies_are_accepted() {
        let ok = LedgerEvent::new(
            "erase/u1",
            &Erasure {
                user: domicile_core::UserId::new("u1").unwrap(),
                regions: vec![domicile_core::RegionId::new("ap-mumbai").unwrap()],
                records: 3,
                blobs: 1,
                keys_destroyed: 2,
            },
        )
        .unwrap();
        assert_eq!(ok.kind, "erasure");
        check(&ok).unwrap();
        let event = |kind: &str, id: &str, body| LedgerEvent {
            kind: kind.into(),
            id: id.into(),
            body,
        };
        let kd = json!({"region":"us-west","service":"ecommerce","users":4,"reason":"moved"});
        check(&event("key_destruction", "k1", kd.clone())).unwrap();
        for (bad, why) in [
            (
                event("transfer", "t", kd.clone()),
                "does not accept \"transfer\"",
            ),
            (
                event("checkpoint", "c", kd.clone()),
                "does not accept \"checkpoint\"",
            ),
            (event("key_destruction", "", kd.clone()), "printable"),
            (event("key_destruction", "a\nb", kd.clone()), "printable"),
            (
                event("key_destruction", "k", json!({"region":"us-west"})),
                "key_destruction body",
            ),
            (
                event(
                    "key_destruction",
                    "k",
                    json!({"region":"us-west","service":"ecommerce","users":4,"reason":"bored"}),
                ),
                "key_destruction body",
            ),
            (
                event(
                    "erasure",
                    "e",
                    json!({"user":"bad id","regions":[],"records":0,"blobs":0,"keys_destroyed":0}),
                ),
                "erasure body",
            ),
        ] {
            let err = check(&bad).unwrap_err().to_string();
            assert!(err.contains(why), "{err}");
        }
    }
}

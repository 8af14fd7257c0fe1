//! Publishing a new policy version: refused if it is not newer, names an unknown region, or
//! would forbid data where the current placement keeps it.

use crate::state::ControlState;
use domicile_core::Policy;
use domicile_http::ApiError;
use domicile_wire::api::RoutingTable;
use std::sync::Arc;

pub async fn change(state: &ControlState, policy: Policy) -> Result<Arc<RoutingTable>, ApiError> {
    policy
        .validate()
        .map_err(|m| ApiError::bad("invalid_policy", m))?;
    let _one_at_a_time = state.changes.lock().await;
    let mut next = state.table().as_ref().clone();
    if policy.version <= next.policy.version {
        return Err(ApiError::Conflict(format!(
            "policy version {} is not newer than the current {}",
            policy.version, next.policy.version
        )));
    }
    for (market, m) in &policy.markets {
        for region in m
            .allowed
            .iter()
            .chain(m.services.values().flat_map(|s| &s.allowed))
        {
            if !next.regions.iter().any(|r| &r.id == region) {
                return Err(ApiError::bad(
                    "unknown_region",
                    format!("policy.markets.{market} names unknown region {region}"),
                ));
            }
        }
    }
    next.placement.check_policy(&policy).map_err(|v| {
        ApiError::Conflict(format!(
            "the current placement would break the new policy: {v}"
        ))
    })?;
    tracing::info!(version = policy.version, "policy changed");
    next.policy = policy;
    state.commit(next).await
}

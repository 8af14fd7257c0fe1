//! Resolving a call to the region that owns it: collection → service, user → bucket,
//! (service, market, bucket) → region and epoch, from the routing table.

use domicile_core::{
    Bucket, CollectionKind, CollectionName, Epoch, Market, RegionId, ServiceName, UserId,
};
use domicile_http::ApiError;
use domicile_wire::api::RoutingTable;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub service: ServiceName,
    pub kind: CollectionKind,
    pub bucket: Bucket,
    pub region: RegionId,
    pub url: String,
    pub epoch: Epoch,
}

/// The route of `user`'s `collection`, or why there is none. The gateway never guesses: a call
/// whose route it cannot determine is refused, never forwarded.
pub fn resolve(
    table: &RoutingTable,
    user: &UserId,
    market: Market,
    collection: &CollectionName,
) -> Result<Route, ApiError> {
    let spec = table
        .schema
        .collection(collection)
        .ok_or_else(|| ApiError::NotFound(format!("the schema has no collection {collection}")))?;
    let mut route = resolve_service(table, user, market, &spec.service)?;
    route.kind = spec.kind;
    Ok(route)
}

/// The route of `user`'s data of `service` (consents, export pages); `kind` is `Records`.
pub fn resolve_service(
    table: &RoutingTable,
    user: &UserId,
    market: Market,
    service: &ServiceName,
) -> Result<Route, ApiError> {
    let bucket = table.buckets.bucket_of(user);
    let row = table
        .placement
        .lookup(service, market, bucket)
        .ok_or_else(|| ApiError::RetryLater {
            message: format!(
                "no placement for {service}/{market} bucket {bucket} (routing table v{})",
                table.version
            ),
            after_secs: 1,
        })?;
    let endpoint = table
        .regions
        .iter()
        .find(|r| r.id == row.region)
        .ok_or_else(|| ApiError::RetryLater {
            message: format!(
                "region {} has no endpoint in routing table v{}",
                row.region, table.version
            ),
            after_secs: 1,
        })?;
    Ok(Route {
        service: service.clone(),
        kind: CollectionKind::Records,
        bucket,
        region: row.region.clone(),
        url: endpoint.url.clone(),
        epoch: row.epoch,
    })
}

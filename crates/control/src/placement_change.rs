//! Placing a range of buckets in a region: split the rows it overlaps, bump the epoch, tell the
//! old owners to release and the new one to own, then commit the table.

use crate::state::{ControlState, url_of};
use domicile_client::region::RegionClient;
use domicile_core::{BucketRange, Epoch, Market, Placement, PlacementRange, RegionId, ServiceName};
use domicile_http::ApiError;
use domicile_wire::api::{RangeRequest, RoutingTable};
use serde::Deserialize;
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRequest {
    pub service: ServiceName,
    pub market: Market,
    pub buckets: BucketRange,
    pub region: RegionId,
}

/// The rows after placing `req` at `epoch`: overlapped rows are cut around the new row.
fn replan(current: &Placement, req: &PlacementRequest, epoch: Epoch) -> Vec<PlacementRange> {
    let mut rows = Vec::new();
    for row in current.ranges() {
        if row.service != req.service
            || row.market != req.market
            || !row.buckets.overlaps(&req.buckets)
        {
            rows.push(row.clone());
            continue;
        }
        if row.buckets.first < req.buckets.first {
            rows.push(PlacementRange {
                buckets: BucketRange {
                    first: row.buckets.first,
                    last: req.buckets.first - 1,
                },
                ..row.clone()
            });
        }
        if row.buckets.last > req.buckets.last {
            rows.push(PlacementRange {
                buckets: BucketRange {
                    first: req.buckets.last + 1,
                    last: row.buckets.last,
                },
                ..row.clone()
            });
        }
    }
    rows.push(PlacementRange {
        service: req.service.clone(),
        market: req.market,
        buckets: req.buckets,
        region: req.region.clone(),
        epoch,
    });
    rows
}

pub async fn change(
    state: &ControlState,
    req: PlacementRequest,
) -> Result<Arc<RoutingTable>, ApiError> {
    let _one_at_a_time = state.changes.lock().await;
    let table = state.table();
    if table.schema.collections_of(&req.service).next().is_none() {
        return Err(ApiError::bad(
            "unknown_service",
            format!("the schema has no service {}", req.service),
        ));
    }
    req.buckets
        .check(table.buckets)
        .map_err(|e| ApiError::bad("invalid_buckets", e.to_string()))?;
    let target_url = url_of(&table, &req.region)?;
    // Nothing crosses a border the policy forbids: refused with the rule, before anything moves.
    table
        .policy
        .check(req.market, &req.service, &req.region)
        .map_err(|v| ApiError::ResidencyViolation(v.to_string()))?;

    let overlapped: Vec<&PlacementRange> = table
        .placement
        .ranges()
        .iter()
        .filter(|r| {
            r.service == req.service && r.market == req.market && r.buckets.overlaps(&req.buckets)
        })
        .collect();
    let covered: u32 = overlapped
        .iter()
        .map(|r| {
            u32::from(r.buckets.last.min(req.buckets.last))
                - u32::from(r.buckets.first.max(req.buckets.first))
                + 1
        })
        .sum();
    if covered == req.buckets.len() && overlapped.iter().all(|r| r.region == req.region) {
        return Ok(table); // already placed there: nothing to do
    }
    let epoch = overlapped
        .iter()
        .map(|r| r.epoch)
        .max()
        .unwrap_or(Epoch(0))
        .next();

    let started = std::time::Instant::now();
    // Old owners stop first, so that at no moment do two regions accept writes for a bucket.
    for row in overlapped.iter().filter(|r| r.region != req.region) {
        let part = BucketRange {
            first: row.buckets.first.max(req.buckets.first),
            last: row.buckets.last.min(req.buckets.last),
        };
        let release = RangeRequest {
            service: req.service.clone(),
            market: req.market,
            buckets: part,
            epoch,
            owner: Some(req.region.clone()),
        };
        RegionClient::new(url_of(&table, &row.region)?, state.http.clone())
            .release(&release)
            .await
            .map_err(|e| ApiError::BadGateway(format!("release at {}: {e}", row.region)))?;
    }
    let released = started.elapsed();
    let own = RangeRequest {
        service: req.service.clone(),
        market: req.market,
        buckets: req.buckets,
        epoch,
        owner: None,
    };
    RegionClient::new(target_url, state.http.clone())
        .own(&own)
        .await
        .map_err(|e| ApiError::BadGateway(format!("own at {}: {e}", req.region)))?;

    let mut next = table.as_ref().clone();
    next.placement = Placement::new(replan(&table.placement, &req, epoch), table.buckets)
        .map_err(|e| ApiError::Internal(format!("replanned placement is invalid: {e}")))?;
    let owned = started.elapsed();
    let committed = state.commit(next).await;
    // Where a cutover's commit spends its time (the migration logs the whole as `commit_ms`).
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
    tracing::info!(
        service = %req.service, market = %req.market, buckets = %req.buckets, region = %req.region,
        %epoch, release_ms = ms(released), own_ms = ms(owned - released),
        table_commit_ms = ms(started.elapsed() - owned), "placement changed"
    );
    committed
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::BucketCount;

    #[test]
    fn a_placed_range_cuts_the_rows_it_overlaps() {
        let config = domicile_core::reference::cluster_config();
        let req = PlacementRequest {
            service: ServiceName::new("ecommerce").unwrap(),
            market: Market::new("IN").unwrap(),
            buckets: BucketRange::new(100, 199).unwrap(),
            region: RegionId::new("ap-mumbai").unwrap(),
        };
        let rows = replan(&config.placement, &req, Epoch(2));
        let placement = Placement::new(rows, BucketCount::DEFAULT).unwrap();
        let region = |b: u16| {
            placement
                .lookup(&req.service, req.market, domicile_core::Bucket(b))
                .map(|r| (r.region.to_string(), r.epoch))
        };
        assert_eq!(region(99), Some(("cn-beijing".into(), Epoch(1))));
        assert_eq!(region(100), Some(("ap-mumbai".into(), Epoch(2))));
        assert_eq!(region(199), Some(("ap-mumbai".into(), Epoch(2))));
        assert_eq!(region(200), Some(("cn-beijing".into(), Epoch(1))));
        // Other services and markets keep their single row.
        assert_eq!(
            placement.ranges().len(),
            config.placement.ranges().len() + 2
        );
    }
}

//! Placement: `(service, market, bucket range) → (region, epoch)`, stored as ranges.

use crate::bucket::{Bucket, BucketCount, BucketRange, BucketSet};
use crate::epoch::Epoch;
use crate::ids::{RegionId, ServiceName};
use crate::market::Market;
use crate::policy::{Policy, PolicyViolation};
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// One placement row: these buckets of this service and market live in `region` at `epoch`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlacementRange {
    pub service: ServiceName,
    pub market: Market,
    pub buckets: BucketRange,
    pub region: RegionId,
    pub epoch: Epoch,
}

/// The unit a store scans, streams, digests and purges: some buckets of one service and market.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Scope {
    pub service: ServiceName,
    pub market: Market,
    pub buckets: BucketSet,
}

impl Scope {
    pub fn contains(&self, service: &ServiceName, market: Market, bucket: Bucket) -> bool {
        &self.service == service && self.market == market && self.buckets.contains(bucket)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    #[error("placement ranges overlap for {service}/{market}: {a} and {b}")]
    Overlap {
        service: ServiceName,
        market: Market,
        a: BucketRange,
        b: BucketRange,
    },
    #[error(
        "placement range {range} of {service}/{market} is outside the cluster's {count} buckets"
    )]
    OutOfRange {
        service: ServiceName,
        market: Market,
        range: BucketRange,
        count: u32,
    },
    #[error(transparent)]
    Policy(#[from] PolicyViolation),
}

/// The placement table. It grows with services × markets × ranges, never with users.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Placement {
    ranges: Vec<PlacementRange>,
}

impl Placement {
    /// Builds a table, refusing overlapping ranges and buckets past `count`.
    pub fn new(
        mut ranges: Vec<PlacementRange>,
        count: BucketCount,
    ) -> Result<Self, PlacementError> {
        ranges.sort_by(|a, b| {
            (&a.service, a.market, a.buckets).cmp(&(&b.service, b.market, b.buckets))
        });
        for r in &ranges {
            if r.buckets.check(count).is_err() {
                return Err(PlacementError::OutOfRange {
                    service: r.service.clone(),
                    market: r.market,
                    range: r.buckets,
                    count: count.get(),
                });
            }
        }
        for pair in ranges.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.service == b.service && a.market == b.market && a.buckets.overlaps(&b.buckets) {
                return Err(PlacementError::Overlap {
                    service: a.service.clone(),
                    market: a.market,
                    a: a.buckets,
                    b: b.buckets,
                });
            }
        }
        Ok(Self { ranges })
    }

    pub fn ranges(&self) -> &[PlacementRange] {
        &self.ranges
    }

    /// The row that places `bucket` of `service` in `market`, if any.
    pub fn lookup(
        &self,
        service: &ServiceName,
        market: Market,
        bucket: Bucket,
    ) -> Option<&PlacementRange> {
        // Sorted by (service, market, first bucket): binary search for the last row at or
        // before (service, market, bucket), then check it.
        let idx = self.ranges.partition_point(|r| {
            (&r.service, r.market, r.buckets.first) <= (service, market, bucket.0)
        });
        let row = self.ranges.get(idx.checked_sub(1)?)?;
        (row.service == *service && row.market == market && row.buckets.contains(bucket))
            .then_some(row)
    }

    /// Checks every row against the policy; the first forbidden one is the error.
    pub fn check_policy(&self, policy: &Policy) -> Result<(), PolicyViolation> {
        self.ranges
            .iter()
            .try_for_each(|r| policy.check(r.market, &r.service, &r.region))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(service: &str, market: &str, buckets: &str, region: &str) -> PlacementRange {
        PlacementRange {
            service: ServiceName::new(service).unwrap(),
            market: Market::new(market).unwrap(),
            buckets: buckets.parse().unwrap(),
            region: RegionId::new(region).unwrap(),
            epoch: Epoch::INITIAL,
        }
    }

    #[test]
    fn lookup_finds_the_covering_row() {
        let p = Placement::new(
            vec![
                row("ecommerce", "IN", "512-1023", "ap-mumbai"),
                row("ecommerce", "IN", "0-511", "cn-beijing"),
                row("account", "IN", "0-1023", "cn-beijing"),
            ],
            BucketCount::DEFAULT,
        )
        .unwrap();
        let shop = ServiceName::new("ecommerce").unwrap();
        let india = Market::new("IN").unwrap();
        assert_eq!(
            p.lookup(&shop, india, Bucket(600)).unwrap().region.as_str(),
            "ap-mumbai"
        );
        assert_eq!(
            p.lookup(&shop, india, Bucket(0)).unwrap().region.as_str(),
            "cn-beijing"
        );
        assert!(
            p.lookup(&shop, Market::new("BR").unwrap(), Bucket(0))
                .is_none()
        );
    }

    #[test]
    fn overlaps_and_out_of_range_rows_are_refused() {
        let err = Placement::new(
            vec![
                row("cloud", "BR", "0-10", "us-west"),
                row("cloud", "BR", "10-20", "us-west"),
            ],
            BucketCount::DEFAULT,
        )
        .unwrap_err();
        assert!(matches!(err, PlacementError::Overlap { .. }));
        let err = Placement::new(
            vec![row("cloud", "BR", "0-1024", "us-west")],
            BucketCount::DEFAULT,
        )
        .unwrap_err();
        assert!(matches!(err, PlacementError::OutOfRange { .. }));
    }

    #[test]
    fn placement_against_policy_names_the_rule() {
        let policy = crate::reference::cluster_config().policy;
        let p = Placement::new(
            vec![row("cloud", "CN", "0-1023", "us-west")],
            BucketCount::DEFAULT,
        )
        .unwrap();
        let err = p.check_policy(&policy).unwrap_err();
        assert_eq!(err.market.as_str(), "CN");
        assert_eq!(err.region.as_str(), "us-west");
        assert!(err.rule.contains("markets.CN.allowed"));
    }
}

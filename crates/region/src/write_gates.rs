//! The write gates: one reader–writer lock per stripe of (service, market, bucket).
//!
//! A write holds its bucket's stripe shared across its ownership check and its durable write; a
//! change that takes writes away from a range (fence, release, a user's override) holds the
//! stripes of the range's buckets exclusively. So when a fence returns its LSN, every write of
//! the range that passed its check is already in the log — and a fence of one range waits only
//! for the writes in flight in that range (and the few that share its stripes), not for every
//! write of the region, nor do the region's other writes queue behind it.
//!
//! Why stripes and not one lock per region: under a flash sale a region has hundreds of writes
//! in flight, each waiting for a group commit; one region-wide gate made every cutover wait for
//! all of them, and made all of them wait for the cutover. Why not one lock per bucket of every
//! (service, market): that is a million locks; stripes bound the memory (at most 16,384 locks)
//! at the price of a rare false wait when two (service, market) pairs share a lane.
//!
//! Deadlock freedom: whoever holds more than one stripe takes them in ascending order, so a
//! waiter only ever waits for stripes above every stripe it holds.

use domicile_core::{Bucket, BucketCount, Market, ServiceName};
use std::hash::{Hash, Hasher};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// At most this many stripes per node (48 bytes each: 768 KiB).
const MAX_STRIPES: u32 = 16_384;

pub struct WriteGates {
    /// `lanes × buckets` stripes: a (service, market) pair hashes to a lane, and within a lane
    /// each bucket has its own stripe, so one pair's ranges never share a stripe.
    stripes: Box<[RwLock<()>]>,
    lanes: u32,
    buckets: u32,
}

/// Stripes held shared: writes of their buckets may go on, changes wait.
pub struct SharedGates<'a> {
    _guards: Vec<RwLockReadGuard<'a, ()>>,
}

/// Stripes held exclusively: no write of their buckets is in flight or can start.
pub struct ExclusiveGates<'a> {
    _guards: Vec<RwLockWriteGuard<'a, ()>>,
}

impl WriteGates {
    pub fn new(buckets: BucketCount) -> Self {
        let buckets = buckets.get();
        // Bucket counts above MAX_STRIPES fold several buckets into one stripe.
        let lanes = (MAX_STRIPES / buckets).clamp(1, 16);
        let count = (lanes * buckets).min(MAX_STRIPES);
        Self {
            stripes: (0..count).map(|_| RwLock::new(())).collect(),
            lanes,
            buckets,
        }
    }

    /// How many stripes there are.
    pub fn len(&self) -> usize {
        self.stripes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.stripes.is_empty()
    }

    fn stripe(&self, service: &ServiceName, market: Market, bucket: Bucket) -> usize {
        // A fixed-key hasher: the same pair lands in the same lane for the node's lifetime,
        // which is all that matters (stripes are never persisted).
        let mut h = std::hash::DefaultHasher::new();
        service.hash(&mut h);
        market.hash(&mut h);
        let lane = (h.finish() % u64::from(self.lanes)) as usize;
        let index = lane * self.buckets as usize + usize::from(bucket.0);
        index % self.stripes.len()
    }

    /// The stripes of `buckets`, ascending and each once.
    fn stripes_of(
        &self,
        service: &ServiceName,
        market: Market,
        buckets: impl Iterator<Item = Bucket>,
    ) -> Vec<usize> {
        let mut stripes: Vec<usize> = buckets.map(|b| self.stripe(service, market, b)).collect();
        stripes.sort_unstable();
        stripes.dedup();
        stripes
    }

    /// Every stripe of `bucket` in every lane, exclusively: for a change to one user's override,
    /// which applies whatever market a write of theirs names.
    pub async fn exclusive_bucket(&self, bucket: Bucket) -> ExclusiveGates<'_> {
        let mut stripes: Vec<usize> = (0..self.lanes as usize)
            .map(|lane| (lane * self.buckets as usize + usize::from(bucket.0)) % self.stripes.len())
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::new();
        for s in stripes {
            guards.push(self.stripes[s].write().await);
        }
        ExclusiveGates { _guards: guards }
    }

    /// One write's gate: its bucket's stripe, shared.
    pub async fn write(
        &self,
        service: &ServiceName,
        market: Market,
        bucket: Bucket,
    ) -> RwLockReadGuard<'_, ()> {
        self.stripes[self.stripe(service, market, bucket)]
            .read()
            .await
    }

    /// Every stripe of `buckets`, shared (a purge: writes go on, changes of the scope wait).
    pub async fn shared(
        &self,
        service: &ServiceName,
        market: Market,
        buckets: impl Iterator<Item = Bucket>,
    ) -> SharedGates<'_> {
        let mut guards = Vec::new();
        for s in self.stripes_of(service, market, buckets) {
            guards.push(self.stripes[s].read().await);
        }
        SharedGates { _guards: guards }
    }

    /// Every stripe of `buckets`, exclusively: returns once no write of them is in flight.
    pub async fn exclusive(
        &self,
        service: &ServiceName,
        market: Market,
        buckets: impl Iterator<Item = Bucket>,
    ) -> ExclusiveGates<'_> {
        let mut guards = Vec::new();
        for s in self.stripes_of(service, market, buckets) {
            guards.push(self.stripes[s].write().await);
        }
        ExclusiveGates { _guards: guards }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(service: &str, market: &str) -> (ServiceName, Market) {
        (
            ServiceName::new(service).unwrap(),
            Market::new(market).unwrap(),
        )
    }

    #[test]
    fn stripes_are_bounded_and_a_pairs_buckets_never_share_one() {
        let gates = WriteGates::new(BucketCount::DEFAULT);
        assert!(gates.len() <= MAX_STRIPES as usize);
        let (s, m) = pair("ecommerce", "MY");
        let all = gates.stripes_of(&s, m, (0..1024).map(Bucket));
        assert_eq!(
            all.len(),
            1024,
            "each bucket of one pair has its own stripe"
        );
        for count in [1, 7, 1024, 16_384, 65_536] {
            let gates = WriteGates::new(BucketCount::new(count).unwrap());
            assert!(!gates.is_empty() && gates.len() <= MAX_STRIPES as usize);
            let last = Bucket((count - 1) as u16);
            assert!(gates.stripe(&s, m, last) < gates.len());
        }
    }

    #[tokio::test]
    async fn an_exclusive_range_waits_for_its_own_writes_only() {
        use futures::FutureExt;
        let gates = WriteGates::new(BucketCount::DEFAULT);
        let (s, my) = pair("ecommerce", "MY");
        let in_range = gates.write(&s, my, Bucket(5)).await;
        let outside = gates.write(&s, my, Bucket(500)).await;
        // The range 0-99 waits for the write to bucket 5, not for the one to bucket 500.
        let fence = gates.exclusive(&s, my, (0..100).map(Bucket));
        tokio::pin!(fence);
        assert!(
            futures::poll!(&mut fence).is_pending(),
            "the range did not wait for its write in flight"
        );
        drop(in_range);
        let held = fence.await;
        drop(outside);
        // While held, a write to the range waits; one to another bucket, or of another
        // market's same bucket, goes through.
        assert!(gates.write(&s, my, Bucket(7)).now_or_never().is_none());
        assert!(gates.write(&s, my, Bucket(700)).now_or_never().is_some());
        let (_, sg) = pair("ecommerce", "SG");
        let other_lane = gates.stripe(&s, sg, Bucket(7)) != gates.stripe(&s, my, Bucket(7));
        assert_eq!(
            gates.write(&s, sg, Bucket(7)).now_or_never().is_some(),
            other_lane
        );
        drop(held);
        assert!(gates.write(&s, my, Bucket(7)).now_or_never().is_some());
        // A user's override: their bucket in every lane, whatever market a write names.
        let user = gates.exclusive_bucket(Bucket(9)).await;
        assert!(gates.write(&s, sg, Bucket(9)).now_or_never().is_none());
        assert!(gates.write(&s, my, Bucket(9)).now_or_never().is_none());
        assert!(gates.write(&s, my, Bucket(10)).now_or_never().is_some());
        drop(user);
    }
}

//! Which (service, market, bucket) ranges this node owns, at which epoch, and in what state.
//!
//! Held per bucket (B slots per service × market: a few tens of thousands in all) so checks are
//! O(1) and range changes cannot leave overlapping rows; exported and persisted as merged ranges.
//! Every change is written to the store's metadata before it takes effect, so a restarted node
//! never owns what it had given up.

use domicile_core::UserId;
use domicile_core::{
    Bucket, BucketCount, BucketRange, Epoch, Market, Placement, RegionId, ServiceName,
};
use domicile_http::ApiError;
use domicile_wire::api::{OwnedRange, OwnedUser, RangeState};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    epoch: Epoch,
    state: RangeState,
}

/// The ownership table of one node.
#[derive(Debug, Clone)]
pub struct OwnershipTable {
    buckets: BucketCount,
    slots: BTreeMap<(ServiceName, Market), Vec<Option<Slot>>>,
    /// Per-user overrides: they outrank the user's bucket.
    users: BTreeMap<(ServiceName, UserId), Slot>,
}

/// What an ownership change does to each bucket of its range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    Fence,
    Unfence,
    Own,
    Release,
}

impl OwnershipTable {
    /// The table implied by the configured placement: rows of `region` are owned, others foreign.
    pub fn from_placement(placement: &Placement, region: &RegionId, buckets: BucketCount) -> Self {
        let mut table = Self {
            buckets,
            slots: BTreeMap::new(),
            users: BTreeMap::new(),
        };
        for row in placement.ranges() {
            let state = if &row.region == region {
                RangeState::Owned
            } else {
                RangeState::Foreign {
                    owner: Some(row.region.clone()),
                }
            };
            table.fill(
                &row.service,
                row.market,
                row.buckets,
                Slot {
                    epoch: row.epoch,
                    state,
                },
            );
        }
        table
    }

    pub fn from_ranges(
        ranges: Vec<OwnedRange>,
        users: Vec<OwnedUser>,
        buckets: BucketCount,
    ) -> Self {
        let mut table = Self {
            buckets,
            slots: BTreeMap::new(),
            users: BTreeMap::new(),
        };
        for r in ranges {
            table.fill(
                &r.service,
                r.market,
                r.buckets,
                Slot {
                    epoch: r.epoch,
                    state: r.state,
                },
            );
        }
        for u in users {
            table.users.insert(
                (u.service, u.user),
                Slot {
                    epoch: u.epoch,
                    state: u.state,
                },
            );
        }
        table
    }

    /// The override of `user`'s `service` data, if this node holds one: the same checks as
    /// [`OwnershipTable::check`], against the user's own slot.
    pub fn check_user(
        &self,
        service: &ServiceName,
        user: &UserId,
        caller_epoch: Option<Epoch>,
    ) -> Option<Result<Epoch, ApiError>> {
        let slot = self.users.get(&(service.clone(), user.clone()))?;
        let what = format!("{service} data of user {user}");
        Some(match &slot.state {
            RangeState::Foreign { owner } => Err(ApiError::Misdirected {
                code: "not_owner",
                message: format!(
                    "{what} is owned by {} at epoch {}",
                    owner.as_ref().map_or("another region", |o| o.as_str()),
                    slot.epoch
                ),
                owner: owner.clone(),
                epoch: Some(slot.epoch),
            }),
            _ if caller_epoch.is_some_and(|e| e != slot.epoch) => Err(ApiError::Misdirected {
                code: "stale_epoch",
                message: format!("{what} is at epoch {} here", slot.epoch),
                owner: None,
                epoch: Some(slot.epoch),
            }),
            _ => Ok(slot.epoch),
        })
    }

    /// Checks a request for one user's collection: the user's override if this node holds one,
    /// the bucket's range otherwise.
    pub fn check_collection(
        &self,
        c: &domicile_store::CollectionAddress,
        caller_epoch: Option<Epoch>,
        write: bool,
    ) -> Result<Epoch, ApiError> {
        match self.check_user(&c.service, &c.user, caller_epoch) {
            Some(result) => result,
            None => self.check(&c.service, c.market, c.bucket, caller_epoch, write),
        }
    }

    /// Sets (or with `remove`, drops) a user's override. Setting needs a newer epoch than the
    /// override it replaces; repeating one that took effect succeeds.
    pub fn apply_user(
        &mut self,
        service: &ServiceName,
        user: &UserId,
        epoch: Epoch,
        owner: Option<RegionId>,
        remove: bool,
    ) -> Result<(), ApiError> {
        let key = (service.clone(), user.clone());
        if remove {
            self.users.remove(&key);
            return Ok(());
        }
        let state = match owner {
            Some(owner) => RangeState::Foreign { owner: Some(owner) },
            None => RangeState::Owned,
        };
        match self.users.get(&key) {
            Some(s) if s.epoch == epoch && s.state == state => Ok(()),
            Some(s) if s.epoch >= epoch => Err(ApiError::Conflict(format!(
                "user {user}'s {service} override is at epoch {}; {epoch} is not newer",
                s.epoch
            ))),
            _ => {
                self.users.insert(key, Slot { epoch, state });
                Ok(())
            }
        }
    }

    pub fn users(&self) -> Vec<OwnedUser> {
        self.users
            .iter()
            .map(|((service, user), slot)| OwnedUser {
                service: service.clone(),
                user: user.clone(),
                epoch: slot.epoch,
                state: slot.state.clone(),
            })
            .collect()
    }

    fn fill(&mut self, service: &ServiceName, market: Market, range: BucketRange, slot: Slot) {
        let n = self.buckets.get() as usize;
        let slots = self
            .slots
            .entry((service.clone(), market))
            .or_insert_with(|| vec![None; n]);
        for b in range.buckets() {
            if let Some(s) = slots.get_mut(usize::from(b.0)) {
                *s = Some(slot.clone());
            }
        }
    }

    fn slot(&self, service: &ServiceName, market: Market, bucket: Bucket) -> Option<&Slot> {
        self.slots
            .get(&(service.clone(), market))?
            .get(usize::from(bucket.0))?
            .as_ref()
    }

    /// Checks that this node may serve a request for `bucket` at the caller's epoch (if given).
    /// Reads are served while fenced; writes are not.
    pub fn check(
        &self,
        service: &ServiceName,
        market: Market,
        bucket: Bucket,
        caller_epoch: Option<Epoch>,
        write: bool,
    ) -> Result<Epoch, ApiError> {
        let what = format!("{service}/{market} bucket {bucket}");
        let Some(slot) = self.slot(service, market, bucket) else {
            return Err(ApiError::Misdirected {
                code: "not_owner",
                message: format!("this region does not hold {what}"),
                owner: None,
                epoch: None,
            });
        };
        if let RangeState::Foreign { owner } = &slot.state {
            let message = match owner {
                Some(o) => format!("{what} is owned by {o} at epoch {}", slot.epoch),
                None => format!("{what} is not owned by this region (epoch {})", slot.epoch),
            };
            return Err(ApiError::Misdirected {
                code: "not_owner",
                message,
                owner: owner.clone(),
                epoch: Some(slot.epoch),
            });
        }
        if let Some(e) = caller_epoch
            && e != slot.epoch
        {
            return Err(ApiError::Misdirected {
                code: "stale_epoch",
                message: format!(
                    "{what} is at epoch {} here, the request was routed at epoch {e}",
                    slot.epoch
                ),
                owner: None,
                epoch: Some(slot.epoch),
            });
        }
        if write && slot.state == RangeState::Fenced {
            return Err(ApiError::Misdirected {
                code: "range_fenced",
                message: format!("{what} is being cut over; retry shortly"),
                owner: None,
                epoch: Some(slot.epoch),
            });
        }
        Ok(slot.epoch)
    }

    /// Whether any bucket of the range is owned (or fenced) here.
    pub fn holds_any(
        &self,
        service: &ServiceName,
        market: Market,
        buckets: impl Iterator<Item = Bucket>,
    ) -> bool {
        let mut buckets = buckets;
        buckets.any(|b| {
            self.slot(service, market, b)
                .is_some_and(|s| matches!(s.state, RangeState::Owned | RangeState::Fenced))
        })
    }

    /// Applies an ownership change to every bucket of `range`, or refuses it without changing
    /// anything. Repeating a change that already took effect succeeds (callers retry).
    pub fn apply(
        &mut self,
        change: Change,
        service: &ServiceName,
        market: Market,
        range: BucketRange,
        epoch: Epoch,
        owner: Option<RegionId>,
    ) -> Result<(), ApiError> {
        range
            .check(self.buckets)
            .map_err(|e| ApiError::bad("invalid_buckets", e.to_string()))?;
        let conflict = |b: Bucket, slot: Option<&Slot>| {
            ApiError::Conflict(format!(
                "cannot {change:?} {service}/{market} bucket {b} at epoch {epoch}: it is {}",
                match slot {
                    Some(s) => format!("{:?} at epoch {}", s.state, s.epoch),
                    None => "not known here".to_string(),
                }
            ))
        };
        let target = match change {
            Change::Fence => RangeState::Fenced,
            Change::Unfence | Change::Own => RangeState::Owned,
            Change::Release => RangeState::Foreign { owner },
        };
        for b in range.buckets() {
            let slot = self.slot(service, market, b);
            let allowed = match (change, slot) {
                (_, Some(s)) if s.epoch == epoch && s.state == target => true,
                (Change::Fence, Some(s)) => s.epoch == epoch && s.state == RangeState::Owned,
                (Change::Unfence, Some(s)) => s.epoch == epoch && s.state == RangeState::Fenced,
                (Change::Own | Change::Release, Some(s)) => s.epoch < epoch,
                (Change::Own | Change::Release, None) => true,
                (Change::Fence | Change::Unfence, None) => false,
            };
            if !allowed {
                return Err(conflict(b, slot));
            }
        }
        self.fill(
            service,
            market,
            range,
            Slot {
                epoch,
                state: target,
            },
        );
        Ok(())
    }

    /// The table as merged ranges, in (service, market, bucket) order.
    pub fn ranges(&self) -> Vec<OwnedRange> {
        let mut out: Vec<OwnedRange> = Vec::new();
        for ((service, market), slots) in &self.slots {
            for (i, slot) in slots.iter().enumerate() {
                let Some(slot) = slot else { continue };
                let b = i as u16;
                match out.last_mut() {
                    Some(last)
                        if &last.service == service
                            && last.market == *market
                            && u32::from(last.buckets.last) + 1 == u32::from(b)
                            && last.epoch == slot.epoch
                            && last.state == slot.state =>
                    {
                        last.buckets.last = b;
                    }
                    _ => out.push(OwnedRange {
                        service: service.clone(),
                        market: *market,
                        buckets: BucketRange { first: b, last: b },
                        epoch: slot.epoch,
                        state: slot.state.clone(),
                    }),
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> OwnershipTable {
        let config = domicile_core::reference::cluster_config();
        OwnershipTable::from_placement(
            &config.placement,
            &RegionId::new("cn-beijing").unwrap(),
            config.buckets,
        )
    }

    fn shop() -> ServiceName {
        ServiceName::new("ecommerce").unwrap()
    }

    #[test]
    fn a_cutover_sequence_moves_ownership() {
        let mut t = table();
        let (s, m) = (shop(), Market::new("IN").unwrap());
        let range = BucketRange::new(0, 9).unwrap();
        assert_eq!(
            t.check(&s, m, Bucket(5), Some(Epoch(1)), true).unwrap(),
            Epoch(1)
        );
        t.apply(Change::Fence, &s, m, range, Epoch(1), None)
            .unwrap();
        t.apply(Change::Fence, &s, m, range, Epoch(1), None)
            .unwrap(); // retried: fine
        assert!(
            t.check(&s, m, Bucket(5), None, false).is_ok(),
            "reads go on while fenced"
        );
        let err = t.check(&s, m, Bucket(5), None, true).unwrap_err();
        assert!(matches!(
            err,
            ApiError::Misdirected {
                code: "range_fenced",
                ..
            }
        ));
        assert!(
            t.check(&s, m, Bucket(10), None, true).is_ok(),
            "outside the range: untouched"
        );
        let target = RegionId::new("ap-mumbai").unwrap();
        t.apply(
            Change::Release,
            &s,
            m,
            range,
            Epoch(2),
            Some(target.clone()),
        )
        .unwrap();
        match t
            .check(&s, m, Bucket(5), Some(Epoch(1)), false)
            .unwrap_err()
        {
            ApiError::Misdirected { owner, epoch, .. } => {
                assert_eq!((owner, epoch), (Some(target), Some(Epoch(2))))
            }
            other => panic!("{other:?}"),
        }
        // Ownership can come back only at a newer epoch.
        assert!(t.apply(Change::Own, &s, m, range, Epoch(2), None).is_err());
        t.apply(Change::Own, &s, m, range, Epoch(3), None).unwrap();
        assert!(t.check(&s, m, Bucket(5), Some(Epoch(3)), true).is_ok());
        let err = t.check(&s, m, Bucket(5), Some(Epoch(2)), true).unwrap_err();
        assert!(matches!(
            err,
            ApiError::Misdirected {
                code: "stale_epoch",
                ..
            }
        ));
    }

    #[test]
    fn refused_changes_change_nothing() {
        let mut t = table();
        let (s, m) = (shop(), Market::new("BR").unwrap());
        t.apply(
            Change::Fence,
            &s,
            m,
            BucketRange::new(5, 5).unwrap(),
            Epoch(1),
            None,
        )
        .unwrap();
        let before = t.ranges();
        // Releasing 0-9 at the current epoch fails (a release needs a newer epoch): bucket 5
        // stays fenced, nothing else changes.
        assert!(
            t.apply(
                Change::Release,
                &s,
                m,
                BucketRange::new(0, 9).unwrap(),
                Epoch(1),
                None
            )
            .is_err()
        );
        assert_eq!(t.ranges(), before);
        assert!(
            t.apply(
                Change::Fence,
                &s,
                m,
                BucketRange::new(0, 2000).unwrap(),
                Epoch(1),
                None
            )
            .is_err()
        );
    }

    #[test]
    fn user_overrides_outrank_the_bucket() {
        let mut t = table();
        let c = domicile_store::CollectionAddress::new(
            shop(),
            Market::new("HK").unwrap(),
            UserId::new("vip").unwrap(),
            domicile_core::CollectionName::new("orders").unwrap(),
            BucketCount::DEFAULT,
        );
        assert_eq!(
            t.check_collection(&c, Some(Epoch(1)), true).unwrap(),
            Epoch(1)
        );
        let elsewhere = RegionId::new("us-west").unwrap();
        t.apply_user(
            &c.service,
            &c.user,
            Epoch(2),
            Some(elsewhere.clone()),
            false,
        )
        .unwrap();
        match t.check_collection(&c, None, false).unwrap_err() {
            ApiError::Misdirected { owner, epoch, .. } => {
                assert_eq!((owner, epoch), (Some(elsewhere), Some(Epoch(2))))
            }
            other => panic!("{other:?}"),
        }
        // Not newer: refused; the same change again: fine.
        assert!(
            t.apply_user(&c.service, &c.user, Epoch(2), None, false)
                .is_err()
        );
        t.apply_user(
            &c.service,
            &c.user,
            Epoch(2),
            Some(RegionId::new("us-west").unwrap()),
            false,
        )
        .unwrap();
        t.apply_user(&c.service, &c.user, Epoch(3), None, false)
            .unwrap();
        assert_eq!(
            t.check_collection(&c, Some(Epoch(3)), true).unwrap(),
            Epoch(3)
        );
        assert!(
            t.check_collection(&c, Some(Epoch(1)), true).is_err(),
            "a stale epoch"
        );
        t.apply_user(&c.service, &c.user, Epoch(3), None, true)
            .unwrap();
        assert_eq!(
            t.check_collection(&c, Some(Epoch(1)), true).unwrap(),
            Epoch(1),
            "back to the bucket"
        );
    }

    #[test]
    fn ranges_round_trip_merged() {
        let t = table();
        let ranges = t.ranges();
        assert_eq!(ranges.len(), 36, "one merged range per service and market");
        let again = OwnershipTable::from_ranges(ranges.clone(), Vec::new(), BucketCount::DEFAULT);
        assert_eq!(again.ranges(), ranges);
    }
}

//! Addresses and values the checks use: reference services and markets, deterministic names.

use bytes::Bytes;
use domicile_core::{
    Bucket, BucketCount, BucketSet, CollectionName, Market, RecordKey, Scope, ServiceName, UserId,
};
use domicile_store::{CollectionAddress, Mutation, MutationOp, Precondition, RecordAddress};

pub const BUCKETS: BucketCount = BucketCount::DEFAULT;

pub fn service(s: &str) -> ServiceName {
    ServiceName::new(s).expect("valid service")
}

pub fn market(m: &str) -> Market {
    Market::new(m).expect("valid market")
}

pub fn collection(
    service_name: &str,
    market_code: &str,
    user: &str,
    coll: &str,
) -> CollectionAddress {
    CollectionAddress::new(
        service(service_name),
        market(market_code),
        UserId::new(user).expect("valid user"),
        CollectionName::new(coll).expect("valid collection"),
        BUCKETS,
    )
}

/// `ecommerce/IN/<user>/orders/<key>`.
pub fn order(user: &str, key: &str) -> RecordAddress {
    collection("ecommerce", "IN", user, "orders").record(RecordKey::new(key).expect("valid key"))
}

pub fn put(address: &RecordAddress, value: &str) -> Mutation {
    Mutation {
        address: address.clone(),
        op: MutationOp::Put(Bytes::from(value.to_string())),
        precondition: Precondition::None,
    }
}

pub fn delete(address: &RecordAddress) -> Mutation {
    Mutation {
        address: address.clone(),
        op: MutationOp::Delete,
        precondition: Precondition::None,
    }
}

/// The scope of every bucket of a service and market.
pub fn whole(service_name: &str, market_code: &str) -> Scope {
    Scope {
        service: service(service_name),
        market: market(market_code),
        buckets: BucketSet::from_ranges([BUCKETS.all()]),
    }
}

pub fn scope_of(
    service_name: &str,
    market_code: &str,
    buckets: impl IntoIterator<Item = Bucket>,
) -> Scope {
    Scope {
        service: service(service_name),
        market: market(market_code),
        buckets: BucketSet::from_buckets(buckets),
    }
}

/// A user id that lands in `bucket` (found by search; the bucket hash is pinned).
pub fn user_in_bucket(bucket: Bucket, tag: &str) -> String {
    (0u64..)
        .map(|i| format!("{tag}-{i}"))
        .find(|u| BUCKETS.bucket_of(&UserId::new(u.as_str()).expect("valid user")) == bucket)
        .expect("some user lands in every bucket")
}

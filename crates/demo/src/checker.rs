//! After the run: every acknowledged write is read back from its final home — a snapshot of
//! each range at the region that owns it in the final table, then, for any write that scan did
//! not find, a read through the gateway (a missing or different value is a lost write) — and
//! every region's store is scanned for data of ranges it does not own (a copy left behind; an
//! acknowledged write found there is a duplicate).

use crate::DemoError;
use crate::seed::SeededUser;
use crate::traffic::AckedWrite;
use domicile_client::region::RegionClient;
use domicile_core::BucketSet;
use domicile_wire::api::{RoutingTable, ScopeRequest};
use futures::StreamExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// The collection the simulated clients write to (and the checker reads back).
const ORDERS: &str = "orders";

#[derive(Debug, Clone, Default, Serialize)]
pub struct Checked {
    /// Acknowledged writes read back.
    pub writes: u64,
    /// Lost writes by the label they were written under.
    pub lost: BTreeMap<String, u64>,
    /// Acknowledged writes also found outside their home, by label.
    pub duplicates: BTreeMap<String, u64>,
    /// Records found in a region for a range it does not own.
    pub copies_left_behind: u64,
    /// Seeded photos read back through the gateway.
    pub photos: u64,
    /// Seeded photos missing or different when read back (their blobs must move with them).
    pub photos_lost: u64,
}

/// `http` reaches the gateway; `nodes` the region nodes (with a cluster certificate).
pub async fn check(
    http: &reqwest::Client,
    nodes: &reqwest::Client,
    gateway: &str,
    users: &[SeededUser],
    acked: &[AckedWrite],
    table: &RoutingTable,
) -> Result<Checked, DemoError> {
    let mut out = Checked {
        writes: acked.len() as u64,
        ..Checked::default()
    };
    let found = read_at_owners(nodes, users, acked, table).await?;
    let unseen: Vec<&AckedWrite> = acked
        .iter()
        .zip(&found)
        .filter(|(_, seen)| !**seen)
        .map(|(w, _)| w)
        .collect();
    let mut reads = futures::stream::iter(unseen)
        .map(|w| {
            let u = &users[w.user];
            let request = http
                .get(format!("{gateway}/v1/users/{}/{ORDERS}/{}", u.user, w.key))
                .bearer_auth(&u.token);
            async move {
                let found = match request.send().await {
                    Ok(r) if r.status().is_success() => r.text().await.ok(),
                    _ => None,
                };
                (w, found.as_deref() == Some(w.body.as_str()))
            }
        })
        .buffer_unordered(64);
    while let Some((w, ok)) = reads.next().await {
        if !ok {
            *out.lost.entry(w.label.clone()).or_insert(0) += 1;
        }
    }
    let mut photo_reads = futures::stream::iter(users.iter().filter(|u| u.photo.is_some()))
        .map(|u| {
            let request = http
                .get(format!("{gateway}/v1/users/{}/photos/p-0001", u.user))
                .bearer_auth(&u.token);
            async move {
                let found = match request.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.ok(),
                    _ => None,
                };
                found.map(|b| blake3::hash(&b).to_hex().to_string()) == u.photo
            }
        })
        .buffer_unordered(16);
    while let Some(ok) = photo_reads.next().await {
        out.photos += 1;
        if !ok {
            out.photos_lost += 1;
        }
    }
    drop(photo_reads);
    // (user, key) of every acknowledged write, to recognise it in a scan.
    let wanted: BTreeMap<(&str, &str), &AckedWrite> = acked
        .iter()
        .map(|w| ((users[w.user].user.as_str(), w.key.as_str()), w))
        .collect();
    let client = nodes;
    for region in &table.regions {
        let node = RegionClient::new(region.url.clone(), client.clone());
        let foreign: BTreeSet<_> = table
            .placement
            .ranges()
            .iter()
            .filter(|r| r.region != region.id)
            .map(|r| (r.service.clone(), r.market, r.buckets))
            .collect();
        for (service, market, buckets) in foreign {
            let scope = ScopeRequest {
                service,
                market,
                buckets: BucketSet::from_ranges([buckets]),
            };
            let mut snapshot = node.snapshot(&scope).await?;
            while let Some(batch) = snapshot.next_batch(10_000).await? {
                for r in batch.iter().filter(|r| r.value.is_some()) {
                    out.copies_left_behind += 1;
                    let c = &r.address.collection;
                    if let Some(w) = wanted.get(&(c.user.as_str(), r.address.key.as_str())) {
                        *out.duplicates.entry(w.label.clone()).or_insert(0) += 1;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Which acknowledged writes (all in `orders`) hold their value at their range's owner, by one
/// snapshot per owned range of the orders' service.
async fn read_at_owners(
    nodes: &reqwest::Client,
    users: &[SeededUser],
    acked: &[AckedWrite],
    table: &RoutingTable,
) -> Result<Vec<bool>, DemoError> {
    let mut found = vec![false; acked.len()];
    let orders = domicile_core::CollectionName::new(ORDERS)
        .map_err(|e| DemoError::Migration(e.to_string()))?;
    let Some(spec) = table.schema.collection(&orders) else {
        return Ok(found);
    };
    let wanted: BTreeMap<(&str, &str), usize> = acked
        .iter()
        .enumerate()
        .map(|(i, w)| ((users[w.user].user.as_str(), w.key.as_str()), i))
        .collect();
    for range in table
        .placement
        .ranges()
        .iter()
        .filter(|r| r.service == spec.service)
    {
        let Some(url) = table.url_of(&range.region) else {
            continue; // read through the gateway instead
        };
        let node = RegionClient::new(url.to_string(), nodes.clone());
        let scope = ScopeRequest {
            service: range.service.clone(),
            market: range.market,
            buckets: BucketSet::from_ranges([range.buckets]),
        };
        let mut snapshot = node.snapshot(&scope).await?;
        while let Some(batch) = snapshot.next_batch(10_000).await? {
            for r in &batch {
                let (Some(value), c) = (&r.value, &r.address.collection) else {
                    continue;
                };
                if c.collection != orders {
                    continue;
                }
                if let Some(&i) = wanted.get(&(c.user.as_str(), r.address.key.as_str())) {
                    found[i] = value.as_ref() == acked[i].body.as_bytes();
                }
            }
        }
    }
    Ok(found)
}

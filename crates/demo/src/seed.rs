//! Seeding: sign up N users across the markets by weight and give each realistic records in
//! every collection — through the public API, as real clients would.

use crate::{DemoError, DemoOptions};
use domicile_core::Market;
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};

/// A seeded user and what the traffic phase may read back.
#[derive(Debug, Clone)]
pub struct SeededUser {
    pub user: String,
    pub market: Market,
    pub token: String,
    /// BLAKE3 (hex) of the user's photo, if they have one: read back after the run.
    pub photo: Option<String>,
}

#[derive(Debug, Default)]
pub struct SeedOutcome {
    pub users: Vec<SeededUser>,
    pub records: u64,
    pub blobs: u64,
    pub blob_bytes: u64,
}

/// Picks a market by weight from a uniform draw in `0..1`.
pub fn pick_market(o: &DemoOptions, draw: f64) -> Market {
    let total: f64 = o.weights.values().sum();
    let mut acc = 0.0;
    let mut last = None;
    for (market, weight) in &o.weights {
        acc += weight / total;
        last = Some(*market);
        if draw < acc {
            return *market;
        }
    }
    // Rounding can leave the draw a hair above the last boundary.
    last.unwrap_or_else(|| unreachable!("weights were checked to be non-empty"))
}

fn bar(o: &DemoOptions, len: u64, prefix: &str) -> ProgressBar {
    if !o.progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} {per_sec} {msg}")
    {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_prefix(prefix.to_string());
    b
}

struct Counters {
    records: AtomicU64,
    blobs: AtomicU64,
    blob_bytes: AtomicU64,
}

async fn put(
    http: &reqwest::Client,
    gateway: &str,
    u: &SeededUser,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), DemoError> {
    send(
        http,
        reqwest::Method::PUT,
        gateway,
        u,
        path,
        body,
        content_type,
    )
    .await
}

async fn send(
    http: &reqwest::Client,
    method: reqwest::Method,
    gateway: &str,
    u: &SeededUser,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> Result<(), DemoError> {
    let url = format!("{gateway}/v1/users/{}/{path}", u.user);
    let r = http
        .request(method, &url)
        .bearer_auth(&u.token)
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .map_err(|e| {
            DemoError::Seed(format!("{path}: {e}: {:?}", std::error::Error::source(&e)))
        })?;
    let status = r.status();
    // Read the answer whole: an unread body resets its stream, and peers limit resets.
    let text = r
        .text()
        .await
        .map_err(|e| DemoError::Seed(format!("{path}: {e}")))?;
    if !status.is_success() {
        return Err(DemoError::Seed(format!("{path}: {status} {text}")));
    }
    Ok(())
}

/// Writes `writes` (collection, key, value) of one service in one batch.
async fn batch(
    http: &reqwest::Client,
    gateway: &str,
    u: &SeededUser,
    writes: &[(&str, &str, serde_json::Value)],
) -> Result<(), DemoError> {
    let body = json!({
        "writes": writes
            .iter()
            .map(|(collection, key, value)| json!({ "collection": collection, "key": key, "value": value }))
            .collect::<Vec<_>>()
    });
    send(
        http,
        reqwest::Method::POST,
        gateway,
        u,
        "batch",
        body.to_string().into_bytes(),
        "application/json",
    )
    .await
}

async fn seed_user(
    http: &reqwest::Client,
    gateway: &str,
    o: &DemoOptions,
    index: usize,
    counters: &Counters,
) -> Result<SeededUser, DemoError> {
    let mut rng =
        StdRng::seed_from_u64(o.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let market = pick_market(o, rng.random::<f64>());
    let signup = http
        .post(format!("{gateway}/v1/signup"))
        .json(&json!({ "market": market.as_str() }))
        .send()
        .await
        .map_err(|e| {
            DemoError::Seed(format!("sign-up: {e}: {:?}", std::error::Error::source(&e)))
        })?;
    if !signup.status().is_success() {
        return Err(DemoError::Seed(format!("sign-up: {}", signup.status())));
    }
    let s: serde_json::Value = signup
        .json()
        .await
        .map_err(|e| DemoError::Seed(format!("sign-up body: {e}")))?;
    let (Some(user), Some(token)) = (s["user"].as_str(), s["token"].as_str()) else {
        return Err(DemoError::Seed(
            "sign-up answered without user or token".into(),
        ));
    };
    let mut u = SeededUser {
        user: user.to_string(),
        market,
        token: token.to_string(),
        photo: None,
    };
    let j = "application/json";
    // One batch per service (a batch stays within one service, applied all or none).
    let account = vec![
        (
            "profile",
            "main",
            json!({ "name": format!("User {index}"), "market": market.as_str(), "locale": "en" }),
        ),
        (
            "credentials",
            "password",
            json!({ "scheme": "argon2id", "hash": format!("{:032x}", rng.random::<u128>()) }),
        ),
    ];
    let shop = vec![
        (
            "addresses",
            "home",
            json!({ "line1": format!("{} Market Street", rng.random_range(1..999)), "country": market.as_str() }),
        ),
        (
            "orders",
            "o-0001",
            json!({ "items": [{ "sku": "phone-4", "qty": 1, "price": 1999 }], "status": "delivered" }),
        ),
        (
            "orders",
            "o-0002",
            json!({ "items": [{ "sku": "band-1", "qty": 2, "price": 79 }], "status": "shipped" }),
        ),
    ];
    let messages = vec![
        (
            "messages",
            "m-0001",
            json!({ "to": "friend", "text": "see you at the launch" }),
        ),
        (
            "messages",
            "m-0002",
            json!({ "to": "family", "text": "new phone arrived" }),
        ),
    ];
    let mut cloud = vec![(
        "notes",
        "n-0001",
        json!({ "text": format!("back up photos before the trip {}", o.canary) }),
    )];
    if rng.random::<f64>() < o.contacts_share {
        // Contacts need the user's consent to `contacts-sync`: granted first, as an app would
        // after showing its notice (a write without it is refused with 403 consent_required).
        let notice = json!({ "notice_version": "demo-2026-01" });
        put(
            http,
            gateway,
            &u,
            "consents/contacts-sync",
            notice.to_string().into_bytes(),
            j,
        )
        .await?;
        let contacts = json!([{ "name": "Mum", "phone": format!("+{}", rng.random_range(10_000_000u64..99_999_999)) }]);
        cloud.push(("contacts", "c-0001", contacts));
    }
    let mut written = 0;
    for writes in [account, shop, messages, cloud] {
        written += writes.len() as u64;
        batch(http, gateway, &u, &writes).await?;
    }
    if rng.random::<f64>() < o.photo_share {
        let mut photo = vec![0u8; rng.random_range(20 * 1024..=200 * 1024)];
        rng.fill_bytes(&mut photo);
        // Every photo carries the canary, which must never reach a disk in plaintext.
        let mark = o.canary.as_bytes();
        photo[..mark.len()].copy_from_slice(mark);
        let size = photo.len() as u64;
        let hash = blake3::hash(&photo).to_hex().to_string();
        put(http, gateway, &u, "photos/p-0001", photo, "image/jpeg").await?;
        u.photo = Some(hash);
        counters.blobs.fetch_add(1, Ordering::Relaxed);
        counters.blob_bytes.fetch_add(size, Ordering::Relaxed);
    }
    counters.records.fetch_add(written, Ordering::Relaxed);
    Ok(u)
}

/// Seeds `o.users` users through the gateway; any failed write fails the seeding.
pub async fn seed(
    http: &reqwest::Client,
    gateway: &str,
    o: &DemoOptions,
) -> Result<SeedOutcome, DemoError> {
    let counters = Counters {
        records: AtomicU64::new(0),
        blobs: AtomicU64::new(0),
        blob_bytes: AtomicU64::new(0),
    };
    let progress = bar(o, o.users as u64, "seeding");
    let mut users = Vec::with_capacity(o.users);
    let mut stream = futures::stream::iter(0..o.users)
        .map(|i| seed_user(http, gateway, o, i, &counters))
        .buffer_unordered(o.seed_concurrency.max(1));
    while let Some(u) = stream.next().await {
        users.push(u?);
        progress.inc(1);
    }
    progress.finish_and_clear();
    Ok(SeedOutcome {
        users,
        records: counters.records.load(Ordering::Relaxed),
        blobs: counters.blobs.load(Ordering::Relaxed),
        blob_bytes: counters.blob_bytes.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markets_are_picked_by_weight() {
        let o = DemoOptions::default();
        let mut counts = std::collections::BTreeMap::new();
        for i in 0..10_000 {
            *counts
                // Mid-bucket draws: none sits exactly on a (rounded) boundary.
                .entry(pick_market(&o, (f64::from(i) + 0.5) / 10_000.0))
                .or_insert(0) += 1;
        }
        assert_eq!(counts[&Market::new("CN").unwrap()], 4_000);
        assert_eq!(counts[&Market::new("SG").unwrap()], 500);
        assert_eq!(
            pick_market(&o, 0.999_999_999),
            *o.weights.keys().last().unwrap()
        );
    }
}

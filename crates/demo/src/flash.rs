//! A flash sale: many orders as fast as the gateway takes them, from many clients at once —
//! run while a phase moves the shop, to show that a move does not stop the sale.

use crate::seed::SeededUser;
use crate::traffic::AckedWrite;
use futures::StreamExt;
use serde::Serialize;
use std::time::Instant;

#[derive(Debug, Clone, Serialize)]
pub struct FlashSale {
    pub orders: u64,
    pub accepted: u64,
    pub errors: u64,
    pub seconds: f64,
    pub orders_per_s: f64,
    #[serde(skip)]
    pub acked: Vec<AckedWrite>,
}

/// `orders` orders from `buyers` (indexes into `users`), `concurrency` at a time.
pub async fn run(
    http: &reqwest::Client,
    gateway: &str,
    users: &[SeededUser],
    buyers: &[usize],
    orders: usize,
    concurrency: usize,
    label: &str,
) -> FlashSale {
    let started = Instant::now();
    let mut stream = futures::stream::iter(0..orders)
        .map(|i| {
            let index = buyers[i % buyers.len().max(1)];
            let u = &users[index];
            let key = format!("flash-{i:07}");
            let body = format!("{{\"sku\":\"phone-5\",\"qty\":1,\"sale\":{i}}}");
            let request = http
                .put(format!("{gateway}/v1/users/{}/orders/{key}", u.user))
                .bearer_auth(&u.token)
                .body(body.clone());
            async move {
                let ok = match request.send().await {
                    Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                ok.then_some((index, key, body))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut sale = FlashSale {
        orders: orders as u64,
        accepted: 0,
        errors: 0,
        seconds: 0.0,
        orders_per_s: 0.0,
        acked: Vec::with_capacity(orders),
    };
    while let Some(outcome) = stream.next().await {
        match outcome {
            Some((user, key, body)) => {
                sale.accepted += 1;
                sale.acked.push(AckedWrite {
                    user,
                    key,
                    body,
                    label: label.to_string(),
                });
            }
            None => sale.errors += 1,
        }
    }
    sale.seconds = started.elapsed().as_secs_f64();
    sale.orders_per_s = (sale.accepted as f64 / sale.seconds.max(1e-9)).round();
    sale
}

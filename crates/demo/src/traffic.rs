//! Live traffic: closed-loop clients per market, each request preceded by the modelled network
//! delay between the client's market and the region that serves it, so the measured latency is
//! real processing plus the geography of the reference scenario.

use crate::seed::SeededUser;
use crate::stats::Samples;
use crate::{DemoError, DemoOptions};
use domicile_core::{CollectionName, Market, UserId};
use domicile_latency::{LatencyModel, round_trips};
use domicile_wire::api::RoutingTable;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What one market's clients saw.
#[derive(Debug, Clone, Default)]
pub struct MarketTraffic {
    pub requests: u64,
    pub errors: u64,
    pub samples: Samples,
    /// Regions that served this market's requests, with counts.
    pub regions: BTreeMap<String, u64>,
}

/// The operations a client mixes, with their weights: mostly reads, as apps do.
const MIX: [(u32, Op); 5] = [
    (55, Op::ReadOrder),
    (15, Op::ReadProfile),
    (15, Op::WriteOrder),
    (10, Op::ListMessages),
    (5, Op::ReadNote),
];

#[derive(Debug, Clone, Copy)]
enum Op {
    ReadOrder,
    ReadProfile,
    WriteOrder,
    ListMessages,
    ReadNote,
}

impl Op {
    fn pick(draw: u32) -> Op {
        let mut acc = 0;
        for (weight, op) in MIX {
            acc += weight;
            if draw < acc {
                return op;
            }
        }
        Op::ReadOrder
    }

    fn collection(self) -> &'static str {
        match self {
            Op::ReadOrder | Op::WriteOrder => "orders",
            Op::ReadProfile => "profile",
            Op::ListMessages => "messages",
            Op::ReadNote => "notes",
        }
    }
}

/// The region serving `user`'s `collection` per the table, and the modelled delay to it.
fn modelled(
    table: &RoutingTable,
    model: &LatencyModel,
    user: &SeededUser,
    collection: &str,
) -> Option<(String, f64)> {
    let name = CollectionName::new(collection).ok()?;
    let service = &table.schema.collection(&name)?.service;
    let bucket = table
        .buckets
        .bucket_of(&UserId::new(user.user.as_str()).ok()?);
    let region = &table.placement.lookup(service, user.market, bucket)?.region;
    let rtt = model.rtt_ms(user.market, region)?;
    Some((region.to_string(), rtt * f64::from(round_trips::REQUEST)))
}

struct Client {
    http: reqwest::Client,
    gateway: String,
    table: Arc<RoutingTable>,
    model: Arc<LatencyModel>,
    users: Arc<Vec<SeededUser>>,
    deadline: Instant,
    rng: StdRng,
}

impl Client {
    async fn run(mut self) -> MarketTraffic {
        let mut out = MarketTraffic::default();
        let mut written = 0u64;
        while Instant::now() < self.deadline {
            let u = &self.users[self.rng.random_range(0..self.users.len())];
            let op = Op::pick(self.rng.random_range(0..100));
            let Some((region, delay_ms)) = modelled(&self.table, &self.model, u, op.collection())
            else {
                out.errors += 1;
                out.requests += 1;
                continue;
            };
            // The network between the client's market and the serving region, then the real call.
            tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
            let base = format!("{}/v1/users/{}", self.gateway, u.user);
            let request = match op {
                Op::ReadOrder => self.http.get(format!("{base}/orders/o-0001")),
                Op::ReadProfile => self.http.get(format!("{base}/profile/main")),
                Op::ReadNote => self.http.get(format!("{base}/notes/n-0001")),
                Op::ListMessages => self.http.get(format!("{base}/messages?limit=20")),
                Op::WriteOrder => {
                    written += 1;
                    let body =
                        format!("{{\"items\":[{{\"sku\":\"case-2\",\"qty\":1}}],\"n\":{written}}}");
                    self.http
                        .put(format!(
                            "{base}/orders/live-{written:06}-{}",
                            self.rng.random::<u32>()
                        ))
                        .body(body)
                }
            };
            let started = Instant::now();
            let ok = match request.bearer_auth(&u.token).send().await {
                Ok(r) => {
                    let ok = r.status().is_success();
                    ok && r.bytes().await.is_ok()
                }
                Err(_) => false,
            };
            let real_ms = started.elapsed().as_secs_f64() * 1000.0;
            out.requests += 1;
            if ok {
                out.samples.add(delay_ms + real_ms);
                *out.regions.entry(region).or_insert(0) += 1;
            } else {
                out.errors += 1;
            }
        }
        out
    }
}

/// Runs `o.clients` clients, split across markets by weight, for `o.duration`.
pub async fn run(
    http: &reqwest::Client,
    gateway: &str,
    control: &domicile_client::control::ControlClient,
    users: &[SeededUser],
    o: &DemoOptions,
    label: &str,
) -> Result<BTreeMap<Market, MarketTraffic>, DemoError> {
    let table = Arc::new(control.current().await?);
    let model = Arc::new(LatencyModel::reference()?);
    let total: f64 = o.weights.values().sum();
    let deadline = Instant::now() + o.duration;
    let mut tasks = Vec::new();
    for (market, weight) in &o.weights {
        let market_users: Vec<SeededUser> = users
            .iter()
            .filter(|u| u.market == *market)
            .cloned()
            .collect();
        if market_users.is_empty() {
            continue;
        }
        let market_users = Arc::new(market_users);
        let clients = ((o.clients as f64 * weight / total).round() as usize).max(1);
        for c in 0..clients {
            let client = Client {
                http: http.clone(),
                gateway: gateway.to_string(),
                table: table.clone(),
                model: model.clone(),
                users: market_users.clone(),
                deadline,
                rng: StdRng::seed_from_u64(
                    o.seed
                        ^ (u64::from(market.as_bytes()[0]) << 8 | u64::from(market.as_bytes()[1]))
                        ^ ((c as u64) << 20),
                ),
            };
            let market = *market;
            tasks.push(tokio::spawn(async move { (market, client.run().await) }));
        }
    }
    let progress = if o.progress {
        let b = ProgressBar::new(o.duration.as_secs().max(1));
        if let Ok(style) = ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} s") {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(format!("traffic {label}"));
        b
    } else {
        ProgressBar::hidden()
    };
    let ticker = {
        let progress = progress.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tick.tick().await;
                progress.inc(1);
            }
        })
    };
    let mut out: BTreeMap<Market, MarketTraffic> = BTreeMap::new();
    for t in tasks {
        let (market, traffic) = t
            .await
            .map_err(|e| DemoError::Seed(format!("client task: {e}")))?;
        let m = out.entry(market).or_default();
        m.requests += traffic.requests;
        m.errors += traffic.errors;
        m.samples.extend(traffic.samples);
        for (region, n) in traffic.regions {
            *m.regions.entry(region).or_insert(0) += n;
        }
    }
    ticker.abort();
    progress.finish_and_clear();
    Ok(out)
}

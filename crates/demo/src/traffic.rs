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
use tokio::sync::watch;

/// What one market's clients saw.
#[derive(Debug, Clone, Default)]
pub struct MarketTraffic {
    pub requests: u64,
    pub errors: u64,
    pub samples: Samples,
    /// The real part of each successful request (gateway, node, store), without the modelled
    /// network delay.
    pub processing: Samples,
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

/// An acknowledged write, to be read back from its final home at the end.
#[derive(Debug, Clone)]
pub struct AckedWrite {
    /// Index into the seeded users.
    pub user: usize,
    pub key: String,
    pub body: String,
    /// The traffic label when it was acknowledged (the phase under way).
    pub label: String,
}

/// What one client saw, per label.
#[derive(Default)]
struct ClientOutcome {
    by_label: BTreeMap<String, MarketTraffic>,
    acked: Vec<AckedWrite>,
}

struct Client {
    http: reqwest::Client,
    gateway: String,
    tables: watch::Receiver<Arc<RoutingTable>>,
    model: Arc<LatencyModel>,
    users: Arc<Vec<SeededUser>>,
    /// Indexes into `users` of this client's market.
    mine: Arc<Vec<usize>>,
    label: watch::Receiver<String>,
    stop: watch::Receiver<bool>,
    rng: StdRng,
    id: usize,
}

impl Client {
    async fn run(mut self) -> ClientOutcome {
        let mut out = ClientOutcome::default();
        let mut written = 0u64;
        while !*self.stop.borrow() {
            let label = self.label.borrow().clone();
            let table = self.tables.borrow().clone();
            let index = self.mine[self.rng.random_range(0..self.mine.len())];
            let u = &self.users[index];
            let op = Op::pick(self.rng.random_range(0..100));
            let traffic = out.by_label.entry(label.clone()).or_default();
            let Some((region, delay_ms)) = modelled(&table, &self.model, u, op.collection()) else {
                traffic.errors += 1;
                traffic.requests += 1;
                continue;
            };
            // The network between the client's market and the serving region, then the real call.
            tokio::time::sleep(Duration::from_secs_f64(delay_ms / 1000.0)).await;
            let base = format!("{}/v1/users/{}", self.gateway, u.user);
            let mut write = None;
            let request = match op {
                Op::ReadOrder => self.http.get(format!("{base}/orders/o-0001")),
                Op::ReadProfile => self.http.get(format!("{base}/profile/main")),
                Op::ReadNote => self.http.get(format!("{base}/notes/n-0001")),
                Op::ListMessages => self.http.get(format!("{base}/messages?limit=20")),
                Op::WriteOrder => {
                    written += 1;
                    let key = format!("live-{:03}-{written:07}", self.id);
                    let body =
                        format!("{{\"items\":[{{\"sku\":\"case-2\",\"qty\":1}}],\"n\":{written}}}");
                    let request = self
                        .http
                        .put(format!("{base}/orders/{key}"))
                        .body(body.clone());
                    write = Some((key, body));
                    request
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
            traffic.requests += 1;
            if ok {
                traffic.samples.add(delay_ms + real_ms);
                traffic.processing.add(real_ms);
                *traffic.regions.entry(region).or_insert(0) += 1;
                if let Some((key, body)) = write {
                    out.acked.push(AckedWrite {
                        user: index,
                        key,
                        body,
                        label,
                    });
                }
            } else {
                traffic.errors += 1;
            }
        }
        out
    }
}

/// What the clients saw: per label, per market; and every acknowledged write.
#[derive(Debug, Default)]
pub struct TrafficOutcome {
    pub by_label: BTreeMap<String, BTreeMap<Market, MarketTraffic>>,
    pub acked: Vec<AckedWrite>,
}

/// Clients running until [`Live::stop`]; each sample is filed under the label current when
/// its request started ([`Live::set_label`]), and each request's modelled delay follows the
/// routing table as it changes (`tables`).
pub struct Live {
    label: watch::Sender<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<(Market, ClientOutcome)>>,
}

impl Live {
    /// Starts `o.clients` clients, split across markets by weight.
    pub fn start(
        http: &reqwest::Client,
        gateway: &str,
        tables: watch::Receiver<Arc<RoutingTable>>,
        users: Arc<Vec<SeededUser>>,
        o: &DemoOptions,
        label: &str,
    ) -> Result<Live, DemoError> {
        let model = Arc::new(LatencyModel::reference()?);
        let total: f64 = o.weights.values().sum();
        let (label_tx, label_rx) = watch::channel(label.to_string());
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut tasks = Vec::new();
        for (market, weight) in &o.weights {
            let mine: Vec<usize> = (0..users.len())
                .filter(|i| users[*i].market == *market)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let mine = Arc::new(mine);
            let clients = ((o.clients as f64 * weight / total).round() as usize).max(1);
            for c in 0..clients {
                let client = Client {
                    http: http.clone(),
                    gateway: gateway.to_string(),
                    tables: tables.clone(),
                    model: model.clone(),
                    users: users.clone(),
                    mine: mine.clone(),
                    label: label_rx.clone(),
                    stop: stop_rx.clone(),
                    rng: StdRng::seed_from_u64(
                        o.seed
                            ^ (u64::from(market.as_bytes()[0]) << 8
                                | u64::from(market.as_bytes()[1]))
                            ^ ((c as u64) << 20),
                    ),
                    id: tasks.len(),
                };
                let market = *market;
                tasks.push(tokio::spawn(async move { (market, client.run().await) }));
            }
        }
        Ok(Live {
            label: label_tx,
            stop: stop_tx,
            tasks,
        })
    }

    pub fn set_label(&self, label: &str) {
        self.label.send_replace(label.to_string());
    }

    /// Stops every client after its current request and gathers what they saw.
    pub async fn stop(self) -> Result<TrafficOutcome, DemoError> {
        self.stop.send_replace(true);
        let mut out = TrafficOutcome::default();
        for t in self.tasks {
            let (market, client) = t
                .await
                .map_err(|e| DemoError::Seed(format!("client task: {e}")))?;
            out.acked.extend(client.acked);
            for (label, traffic) in client.by_label {
                let m = out
                    .by_label
                    .entry(label)
                    .or_default()
                    .entry(market)
                    .or_default();
                m.requests += traffic.requests;
                m.errors += traffic.errors;
                m.samples.extend(traffic.samples);
                m.processing.extend(traffic.processing);
                for (region, n) in traffic.regions {
                    *m.regions.entry(region).or_insert(0) += n;
                }
            }
        }
        Ok(out)
    }
}

/// A progress bar that counts `seconds` of a labelled window.
pub fn window_bar(o: &DemoOptions, seconds: u64, label: &str) -> ProgressBar {
    if !o.progress {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(seconds.max(1));
    if let Ok(style) = ProgressStyle::with_template("{prefix:>26} [{bar:30}] {pos}/{len} s") {
        b.set_style(style.progress_chars("=> "));
    }
    b.set_prefix(format!("traffic {label}"));
    b
}

/// Waits `seconds`, ticking `bar` once a second.
pub async fn hold(bar: &ProgressBar, seconds: u64) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    for _ in 0..seconds {
        tick.tick().await;
        bar.inc(1);
    }
    bar.finish_and_clear();
}

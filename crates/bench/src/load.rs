//! HTTP load for a fixed time, with throughput and latency percentiles: closed loop (`clients`
//! concurrent clients each sending the next request as soon as the previous one answered: the
//! most a path serves) or open loop (requests sent at a fixed rate whatever the answers: a
//! path's latency at a load it sustains).

use serde::Serialize;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub requests: u64,
    pub errors: u64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs `make(client)` in a loop from `clients` tasks for `duration`.
pub async fn closed_loop<F>(
    http: &reqwest::Client,
    clients: usize,
    duration: Duration,
    make: F,
) -> LoadResult
where
    F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let started = Instant::now();
    let deadline = started + duration;
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (http, make) = (http.clone(), make.clone());
            tokio::spawn(async move {
                let (mut latencies, mut errors) = (Vec::new(), 0u64);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let ok = answered(make(&http)).await;
                    if ok {
                        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
                    } else {
                        errors += 1;
                    }
                }
                (latencies, errors)
            })
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    summarize(all, errors, started.elapsed())
}

/// Sends `make(client)` at `rps` requests per second for `duration`, each on its own task, so
/// a slow answer delays no later request, with at most `connections` in flight (as many as the
/// pool keeps open: more would pay a TLS handshake each); latency runs from each request's
/// actual send.
pub async fn fixed_rate<F>(
    http: &reqwest::Client,
    rps: f64,
    connections: usize,
    duration: Duration,
    make: F,
) -> LoadResult
where
    F: Fn(&reqwest::Client) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let started = Instant::now();
    let count = (duration.as_secs_f64() * rps).max(1.0) as u64;
    let in_flight = Arc::new(tokio::sync::Semaphore::new(connections.max(1)));
    let mut sent = tokio::task::JoinSet::new();
    for i in 0..count {
        let due = started + Duration::from_secs_f64(i as f64 / rps);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            break;
        };
        let (http, make) = (http.clone(), make.clone());
        sent.spawn(async move {
            let _permit = permit;
            let t = Instant::now();
            let ok = answered(make(&http)).await;
            ok.then(|| t.elapsed().as_secs_f64() * 1000.0)
        });
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    while let Some(done) = sent.join_next().await {
        match done {
            Ok(Some(ms)) => all.push(ms),
            _ => errors += 1,
        }
    }
    summarize(all, errors, started.elapsed())
}

/// Sends `request`; whether it was answered with success and its body read whole.
async fn answered(request: reqwest::RequestBuilder) -> bool {
    match request.send().await {
        Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
        Err(_) => false,
    }
}

fn summarize(mut all: Vec<f64>, errors: u64, elapsed: Duration) -> LoadResult {
    let secs = elapsed.as_secs_f64();
    all.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        if all.is_empty() {
            0.0
        } else {
            all[((q * all.len() as f64).ceil() as usize).clamp(1, all.len()) - 1]
        }
    };
    let round = |x: f64| (x * 1000.0).round() / 1000.0;
    LoadResult {
        requests: all.len() as u64 + errors,
        errors,
        rps: (all.len() as f64 / secs).round(),
        p50_ms: round(pick(0.5)),
        p99_ms: round(pick(0.99)),
    }
}

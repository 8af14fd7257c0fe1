//! `domicile latency …`: the latency model's advice on where each market's data would be fastest.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use domicile_core::{ClusterConfig, Market, ServiceName};
use domicile_latency::{Advice, LatencyModel, WeightedTotal, round_trips};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum LatencyCommand {
    /// Per service and market: the allowed region with the lowest modelled latency of one
    /// request, and the saving against today's placement.
    Advise(AdviseArgs),
}

#[derive(Args)]
pub struct AdviseArgs {
    /// The cluster config (TOML) whose policy and placement to advise on (default: the built-in
    /// reference cluster, examples/reference-cluster.toml).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Only this service (default: every service of the config's schema).
    #[arg(long)]
    service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: LatencyCommand) -> Result<()> {
    match cmd {
        LatencyCommand::Advise(args) => {
            let (config, source) = crate::cluster_config(args.config.as_deref())?;
            let model = LatencyModel::reference().context("load the latency model's tables")?;
            let report = advise(&model, &config, &source, args.service.as_deref())?;
            let text = if args.json {
                serde_json::to_string_pretty(&report)? + "\n"
            } else {
                report.table()
            };
            // Not print!: a closed pipe (`| head`) is an error to report, not a panic.
            std::io::stdout()
                .lock()
                .write_all(text.as_bytes())
                .context("write the advice to stdout")
        }
    }
}

/// What `latency advise` prints.
#[derive(Debug, Serialize)]
struct Report {
    /// The config file, or `reference`.
    config: String,
    policy_version: u64,
    /// What one modelled figure is: round trips of one request, with no processing time.
    round_trips: u32,
    /// How markets are weighted in each service's total.
    weights: &'static str,
    services: Vec<ServiceAdvice>,
}

#[derive(Debug, Serialize)]
struct ServiceAdvice {
    service: ServiceName,
    markets: Vec<Advice>,
    weighted_total: Option<WeightedTotal>,
}

const WEIGHTS: &str = "equal: 1 per market of the policy";

fn advise(
    model: &LatencyModel,
    config: &ClusterConfig,
    source: &str,
    only: Option<&str>,
) -> Result<Report> {
    let all = config.schema.services();
    let services = match only {
        None => all,
        Some(name) => {
            let service = ServiceName::new(name).context("parse --service")?;
            if !all.contains(&service) {
                let names: Vec<&str> = all.iter().map(ServiceName::as_str).collect();
                anyhow::bail!(
                    "service {service} is not in the config's schema (it has: {})",
                    names.join(", ")
                );
            }
            vec![service]
        }
    };
    // No user counts per market are configured yet, so every market weighs the same.
    let weights: BTreeMap<Market, f64> = config.policy.markets.keys().map(|&m| (m, 1.0)).collect();
    let services = services
        .into_iter()
        .map(|service| {
            let mut markets = model.advise(&config.policy, &config.placement, &service, &weights);
            markets.sort_by_key(|a| report_order(a.market));
            let weighted_total = WeightedTotal::of(&markets);
            ServiceAdvice {
                service,
                markets,
                weighted_total,
            }
        })
        .collect();
    Ok(Report {
        config: source.to_string(),
        policy_version: config.policy.version,
        round_trips: round_trips::REQUEST,
        weights: WEIGHTS,
        services,
    })
}

/// The reference markets in the order the demo reports them, then any others by code.
fn report_order(market: Market) -> (usize, Market) {
    let position = domicile_core::reference::MARKETS
        .iter()
        .position(|m| *m == market.as_str());
    (position.unwrap_or(usize::MAX), market)
}

impl Report {
    fn table(&self) -> String {
        let mut rows = vec![
            [
                "service",
                "market",
                "today",
                "ms",
                "best",
                "ms",
                "saving ms",
                "%",
                "advice",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for s in &self.services {
            for a in &s.markets {
                rows.push(market_row(a));
            }
            if let Some(t) = &s.weighted_total {
                // The total covers the markets with both figures and a weight, maybe not all.
                let label = if t.markets == s.markets.len() {
                    "all*".to_string()
                } else {
                    format!("{} of {}*", t.markets, s.markets.len())
                };
                let mut row = vec![s.service.to_string(), label];
                row.extend([
                    String::new(),
                    ms(t.today_ms),
                    String::new(),
                    ms(t.best_ms),
                    ms(t.saving_ms),
                    percent(t.saving_percent),
                    String::new(),
                ]);
                rows.push(row);
            }
        }
        let right = [false, false, false, true, false, true, true, true, false];
        let mut out = format!(
            "Modelled latency of one request ({} round trip, no processing) per market; \
             config {}, policy v{}.\n\n",
            self.round_trips, self.config, self.policy_version
        );
        out.push_str(&aligned(&rows, &right));
        let _ = writeln!(
            out,
            "\n* user-weighted mean over the markets with both figures; weights {WEIGHTS}."
        );
        out
    }
}

fn market_row(a: &Advice) -> Vec<String> {
    let today = a.today.as_ref();
    let today_region = today.map_or("-".to_string(), |t| {
        if t.share < 1.0 {
            format!("{} ({:.0}% of buckets)", t.region, 100.0 * t.share)
        } else {
            t.region.to_string()
        }
    });
    let advice = match (today, &a.best) {
        (_, None) => "no allowed region has an RTT".to_string(),
        (None, Some(_)) => "not placed".to_string(),
        (Some(t), Some(_)) if !t.allowed => "move: today's region is not allowed".to_string(),
        (Some(_), Some(_)) if a.moves() => "move".to_string(),
        (Some(_), Some(_)) => "stay".to_string(),
    };
    let advice = if a.unmodelled.is_empty() {
        advice
    } else {
        let names: Vec<&str> = a.unmodelled.iter().map(|r| r.as_str()).collect();
        format!("{advice} (no RTT for {})", names.join(", "))
    };
    vec![
        a.service.to_string(),
        a.market.to_string(),
        today_region,
        today.and_then(|t| t.ms).map_or("-".into(), ms),
        a.best.as_ref().map_or("-".into(), |b| b.region.to_string()),
        a.best.as_ref().map_or("-".into(), |b| ms(b.ms)),
        a.saving_ms.map_or("-".into(), ms),
        a.saving_percent.map_or("-".into(), percent),
        advice,
    ]
}

fn ms(v: f64) -> String {
    format!("{v:.1}")
}

fn percent(v: f64) -> String {
    format!("{v:.0}")
}

/// Columns padded to their widest cell, two spaces apart; `right[i]` right-aligns column `i`.
fn aligned(rows: &[Vec<String>], right: &[bool]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let width = widths[i];
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference_report(only: Option<&str>) -> Result<Report> {
        let model = LatencyModel::reference()?;
        let config = domicile_core::reference::cluster_config();
        advise(&model, &config, "reference", only)
    }

    #[test]
    fn reference_advice_moves_in_and_br_and_keeps_cn() {
        let report = reference_report(None).unwrap();
        assert_eq!(report.services.len(), 4);
        for s in &report.services {
            let order: Vec<&str> = s.markets.iter().map(|a| a.market.as_str()).collect();
            assert_eq!(order, domicile_core::reference::MARKETS);
            let best = |m: &str| {
                let a = s.markets.iter().find(|a| a.market.as_str() == m).unwrap();
                a.best.as_ref().unwrap().region.to_string()
            };
            assert_eq!(best("IN"), "ap-mumbai");
            assert_eq!(best("BR"), "sa-saopaulo");
            assert_eq!(best("CN"), "cn-beijing");
            assert!(s.weighted_total.is_some());
        }
        let table = report.table();
        let row = |service: &str, market: &str| {
            table
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>())
                .find(|cells| cells.get(..2) == Some(&[service, market][..]))
        };
        assert_eq!(
            row("cloud", "IN").unwrap(),
            [
                "cloud",
                "IN",
                "cn-beijing",
                "250.4",
                "ap-mumbai",
                "28.6",
                "221.8",
                "89",
                "move"
            ],
            "{table}"
        );
        assert_eq!(row("cloud", "CN").unwrap().last(), Some(&"stay"), "{table}");
        assert!(row("cloud", "all*").is_some(), "{table}");
        let json = serde_json::to_value(&report).unwrap();
        assert_eq!(json["services"][0]["markets"][0]["market"], "CN");
    }

    #[test]
    fn one_service_or_a_clear_error() {
        let report = reference_report(Some("ecommerce")).unwrap();
        assert_eq!(report.services.len(), 1);
        let err = reference_report(Some("games")).unwrap_err().to_string();
        assert!(
            err.contains("service games is not in the config's schema (it has: account"),
            "{err}"
        );
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["a".to_string(), "1.0".to_string()],
            vec!["long".to_string(), "100.5".to_string()],
        ];
        assert_eq!(aligned(&rows, &[false, true]), "a       1.0\nlong  100.5\n");
    }
}

//! The placement advisor: for each market of a policy, the allowed region with the lowest modelled
//! latency, against the region serving the market today (DESIGN.md §7).

use crate::model::LatencyModel;
use crate::round_trips;
use domicile_core::{Market, Placement, Policy, RegionId, ServiceName};
use serde::Serialize;
use std::collections::BTreeMap;

/// Where one service of one market lives today and where it would be fastest.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Advice {
    pub service: ServiceName,
    pub market: Market,
    /// The market's share of users for the weighted total (0 when `weights` does not list it).
    pub weight: f64,
    /// The policy entry that decided the allowed regions, e.g. `markets.CN.allowed`.
    pub rule: String,
    /// `None` when the placement has no buckets of this service and market.
    pub today: Option<Today>,
    /// The allowed region with the lowest modelled latency; `None` when no allowed region has an
    /// RTT for this market. A tie goes to today's region, then to the first region by name.
    pub best: Option<Choice>,
    /// `today.ms − best.ms`, when both are known.
    pub saving_ms: Option<f64>,
    /// The saving as a percentage of today's latency.
    pub saving_percent: Option<f64>,
    /// Allowed regions the model has no RTT for from this market: `best` was chosen without them.
    pub unmodelled: Vec<RegionId>,
}

/// The region serving a market today: the one holding most of its buckets.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Today {
    pub region: RegionId,
    /// The fraction of the market's placed buckets in `region` (1 when it holds them all).
    pub share: f64,
    /// Whether the policy allows `region`; `false` makes a move mandatory, not just faster.
    pub allowed: bool,
    /// The modelled latency of one request from there; `None` without an RTT.
    pub ms: Option<f64>,
}

/// A region and the modelled latency of one request from it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    pub region: RegionId,
    pub ms: f64,
}

impl Advice {
    /// Whether the best region differs from today's.
    pub fn moves(&self) -> bool {
        match (&self.today, &self.best) {
            (Some(today), Some(best)) => today.region != best.region,
            _ => false,
        }
    }
}

/// The user-weighted mean latency of one request over several markets, today and at the best
/// allowed regions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WeightedTotal {
    /// Markets counted: weight > 0 and both latencies known.
    pub markets: usize,
    /// Their summed weight.
    pub weight: f64,
    pub today_ms: f64,
    pub best_ms: f64,
    pub saving_ms: f64,
    pub saving_percent: f64,
}

impl WeightedTotal {
    /// The weighted means over `advice`; `None` when no market counts.
    pub fn of(advice: &[Advice]) -> Option<Self> {
        let (mut markets, mut weight, mut today, mut best) = (0, 0.0, 0.0, 0.0);
        for a in advice {
            let (Some(Today { ms: Some(t), .. }), Some(b)) = (&a.today, &a.best) else {
                continue;
            };
            if a.weight > 0.0 {
                markets += 1;
                weight += a.weight;
                today += a.weight * t;
                best += a.weight * b.ms;
            }
        }
        if markets == 0 {
            return None;
        }
        let (today_ms, best_ms) = (today / weight, best / weight);
        let saving_ms = today_ms - best_ms;
        Some(Self {
            markets,
            weight,
            today_ms,
            best_ms,
            saving_ms,
            saving_percent: percent(saving_ms, today_ms).unwrap_or(0.0),
        })
    }
}

impl LatencyModel {
    /// For `service` in every market of `policy` (in market order): today's region (from
    /// `placement`: the region of most buckets, ties to the first by name), the allowed region
    /// (`policy.rule`) with the lowest latency, the modelled latency of one request
    /// ([`round_trips::REQUEST`], no processing) from each, and the saving. Each market carries
    /// its weight from `weights` (absent, negative or not finite: 0) for [`WeightedTotal::of`].
    pub fn advise(
        &self,
        policy: &Policy,
        placement: &Placement,
        service: &ServiceName,
        weights: &BTreeMap<Market, f64>,
    ) -> Vec<Advice> {
        let one_request =
            |market, region: &RegionId| self.predict_ms(market, region, 0.0, round_trips::REQUEST);
        let mut advice = Vec::new();
        for &market in policy.markets.keys() {
            let Some((rule, allowed)) = policy.rule(market, service) else {
                continue;
            };
            let mut allowed = allowed.allowed;
            allowed.sort();
            allowed.dedup();
            let today = today(placement, service, market).map(|(region, share)| Today {
                allowed: allowed.contains(&region),
                ms: one_request(market, &region),
                region,
                share,
            });
            let today_region = today.as_ref().map(|t| &t.region);
            let (mut modelled, mut unmodelled) = (Vec::new(), Vec::new());
            for region in allowed {
                match one_request(market, &region) {
                    Some(ms) => modelled.push(Choice { region, ms }),
                    None => unmodelled.push(region),
                }
            }
            let best = modelled.into_iter().min_by(|a, b| {
                a.ms.total_cmp(&b.ms)
                    .then_with(|| {
                        // Staying put wins a tie: a move must buy something.
                        let moves = |c: &Choice| Some(&c.region) != today_region;
                        moves(a).cmp(&moves(b))
                    })
                    .then_with(|| a.region.cmp(&b.region))
            });
            let today_ms = today.as_ref().and_then(|t| t.ms);
            let saving_ms = today_ms.zip(best.as_ref()).map(|(t, b)| t - b.ms);
            advice.push(Advice {
                service: service.clone(),
                market,
                weight: weights
                    .get(&market)
                    .copied()
                    .filter(|w| w.is_finite() && *w > 0.0)
                    .unwrap_or(0.0),
                rule,
                saving_percent: saving_ms.zip(today_ms).and_then(|(s, t)| percent(s, t)),
                saving_ms,
                today,
                best,
                unmodelled,
            });
        }
        advice
    }
}

/// The region holding most of `service`'s buckets in `market`, and its share of them.
fn today(placement: &Placement, service: &ServiceName, market: Market) -> Option<(RegionId, f64)> {
    let mut buckets: BTreeMap<&RegionId, u32> = BTreeMap::new();
    for range in placement.ranges() {
        if &range.service == service && range.market == market {
            *buckets.entry(&range.region).or_default() += range.buckets.len();
        }
    }
    let total: u32 = buckets.values().sum();
    // Most buckets first; on a tie the first region by name (iteration is in name order).
    let (region, most) = buckets
        .into_iter()
        .max_by(|a, b| a.1.cmp(&b.1).then_with(|| b.0.cmp(a.0)))?;
    Some((region.clone(), f64::from(most) / f64::from(total.max(1))))
}

fn percent(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| 100.0 * part / whole)
}

#[cfg(test)]
mod tests {
    use super::*;
    use domicile_core::reference::{MARKETS, cluster_config};
    use domicile_core::{BucketCount, Epoch, PlacementRange};

    fn market(m: &str) -> Market {
        Market::new(m).unwrap()
    }

    fn region(r: &str) -> RegionId {
        RegionId::new(r).unwrap()
    }

    fn equal_weights() -> BTreeMap<Market, f64> {
        MARKETS.iter().map(|m| (market(m), 1.0)).collect()
    }

    fn by_market(advice: &[Advice]) -> BTreeMap<&str, &Advice> {
        advice.iter().map(|a| (a.market.as_str(), a)).collect()
    }

    #[test]
    fn reference_config_moves_in_and_br_home_and_keeps_cn_in_beijing() {
        let model = LatencyModel::reference().unwrap();
        let config = cluster_config();
        for service in config.schema.services() {
            let advice = model.advise(
                &config.policy,
                &config.placement,
                &service,
                &equal_weights(),
            );
            assert_eq!(advice.len(), MARKETS.len());
            let advice = by_market(&advice);
            let best = |m: &str| advice[m].best.as_ref().unwrap().region.as_str().to_string();
            assert_eq!(best("IN"), "ap-mumbai", "{service}");
            assert_eq!(best("BR"), "sa-saopaulo", "{service}");
            assert_eq!(best("CN"), "cn-beijing", "{service}");
            for m in ["HK", "TW", "SG", "MY", "ID", "PH"] {
                assert_eq!(best(m), "ap-singapore", "{service} {m}");
            }

            let cn = advice["CN"];
            assert_eq!(cn.rule, "markets.CN.allowed");
            assert!(!cn.moves());
            assert_eq!(cn.saving_ms, Some(0.0));
            assert_eq!(cn.saving_percent, Some(0.0));

            let india = advice["IN"];
            let today = india.today.as_ref().unwrap();
            assert_eq!(today.region.as_str(), "cn-beijing");
            assert_eq!(
                (today.share, today.allowed, today.ms),
                (1.0, true, Some(250.4))
            );
            assert_eq!(india.best.as_ref().unwrap().ms, 28.6);
            let saving = india.saving_ms.unwrap();
            assert!((saving - (250.4 - 28.6)).abs() < 1e-9, "{saving}");
            let percent = india.saving_percent.unwrap();
            assert!((percent - 100.0 * saving / 250.4).abs() < 1e-9, "{percent}");
            assert!(india.moves());
            assert!(india.unmodelled.is_empty());
        }
    }

    #[test]
    fn weighted_total_weighs_markets() {
        let model = LatencyModel::reference().unwrap();
        let config = cluster_config();
        let shop = ServiceName::new("ecommerce").unwrap();
        let weights = BTreeMap::from([(market("CN"), 3.0), (market("IN"), 1.0)]);
        let advice = model.advise(&config.policy, &config.placement, &shop, &weights);
        assert_eq!(by_market(&advice)["BR"].weight, 0.0);
        let total = WeightedTotal::of(&advice).unwrap();
        assert_eq!(total.markets, 2);
        assert_eq!(total.weight, 4.0);
        let today = (3.0 * 25.6 + 250.4) / 4.0;
        let best = (3.0 * 25.6 + 28.6) / 4.0;
        assert!((total.today_ms - today).abs() < 1e-9);
        assert!((total.best_ms - best).abs() < 1e-9);
        assert!((total.saving_percent - 100.0 * (today - best) / today).abs() < 1e-9);
        let nobody = BTreeMap::from([(market("IN"), f64::NAN), (market("BR"), -2.0)]);
        let advice = model.advise(&config.policy, &config.placement, &shop, &nobody);
        assert_eq!(WeightedTotal::of(&advice), None);
    }

    #[test]
    fn today_is_the_region_of_most_buckets() {
        let model = LatencyModel::reference().unwrap();
        let policy = cluster_config().policy;
        let shop = ServiceName::new("ecommerce").unwrap();
        let row = |buckets: &str, r: &str| PlacementRange {
            service: shop.clone(),
            market: market("IN"),
            buckets: buckets.parse().unwrap(),
            region: region(r),
            epoch: Epoch::INITIAL,
        };
        let placement = Placement::new(
            vec![row("0-99", "cn-beijing"), row("100-1023", "ap-mumbai")],
            BucketCount::DEFAULT,
        )
        .unwrap();
        let advice = model.advise(&policy, &placement, &shop, &BTreeMap::new());
        let advice = by_market(&advice);
        let india = advice["IN"];
        let today = india.today.as_ref().unwrap();
        assert_eq!(today.region.as_str(), "ap-mumbai");
        assert!((today.share - 924.0 / 1024.0).abs() < 1e-12);
        assert!(!india.moves());
        // Markets the placement does not cover have no today and no saving, but a best region.
        let br = advice["BR"];
        assert_eq!((&br.today, br.saving_ms), (&None, None));
        assert_eq!(br.best.as_ref().unwrap().region.as_str(), "sa-saopaulo");
    }

    #[test]
    fn a_forbidden_today_and_unmodelled_regions_are_reported() {
        let market_region = "market,region,rtt_ms,basis,how\n\
            IN,cn-beijing,250.4,measured,x\n\
            IN,us-west,249.5,measured,x\n";
        let region_region = "region_a,region_b,rtt_ms,basis,how\n";
        let model = LatencyModel::from_csv(market_region, region_region).unwrap();
        let mut policy = cluster_config().policy;
        // A tightened policy: IN no longer allows cn-beijing.
        let india = policy.markets.get_mut(&market("IN")).unwrap();
        india.allowed.retain(|r| r.as_str() != "cn-beijing");
        let config = cluster_config();
        let shop = ServiceName::new("ecommerce").unwrap();
        let advice = model.advise(&policy, &config.placement, &shop, &BTreeMap::new());
        let advice = by_market(&advice);
        let india = advice["IN"];
        assert!(!india.today.as_ref().unwrap().allowed);
        assert_eq!(india.best.as_ref().unwrap().region.as_str(), "us-west");
        let unmodelled: Vec<&str> = india.unmodelled.iter().map(RegionId::as_str).collect();
        assert_eq!(unmodelled, ["ap-mumbai", "ap-singapore"]);
        assert_eq!(advice["CN"].best, None);
        assert_eq!(advice["CN"].saving_ms, None);
    }
}

//! Plan files (TOML): named phases, each moving some services × markets to a target region in
//! waves of buckets, with the policy change that takes effect when the phase completes; checked
//! against a cluster's regions, schema, policy and placement before anything moves, and estimated
//! for a dry run (`domicile migrate plan`).
//!
//! The format (`examples/plans/reference-2014.toml` is the reference):
//!
//! ```toml
//! name = "reference-2014"
//!
//! [[phases]]
//! name = "ecommerce"
//! services = ["ecommerce"]
//! markets = ["HK", "IN", "BR"]
//! target = "ap-singapore"      # a region id, or "preferred": the policy's preferred region
//! waves = [1, 10, 100]         # cumulative % of the buckets moved by each wave (the default)
//! rate_limit = 100000          # records/s; omit for no cap
//! rollback_window = "30s"      # "Ns", "Nm", "Nh" or an integer of seconds (default "30s")
//!
//! [phases.targets]             # optional per-market overrides of `target`
//! BR = "us-west"
//!
//! [[phases.policy_after]]      # when the phase completes: these regions are no longer allowed
//! markets = ["HK", "IN", "BR"]
//! services = ["ecommerce"]
//! remove = ["cn-beijing"]
//! ```
//!
//! `preferred` is resolved per market and service by [`Policy::preferred`] against the policy as
//! it stands when the phase starts (after every earlier phase's `policy_after`), so the name
//! `preferred` cannot be used as a region id in a plan.

use domicile_core::{
    BucketCount, BucketRange, ClusterConfig, Market, Policy, PolicyViolation, RegionId,
    ServiceName, ServiceRule,
};
use domicile_latency::{LatencyModel, round_trips};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use thiserror::Error;

/// The reference plan (DESIGN.md §1), `examples/plans/reference-2014.toml`, compiled in.
pub const REFERENCE_PLAN_TOML: &str = include_str!("../../../examples/plans/reference-2014.toml");

/// Waves when a phase names none: a 1% canary, then up to 10%, then every bucket.
pub const DEFAULT_WAVES: [u8; 3] = [1, 10, 100];

/// The rollback window when a phase names none.
pub const DEFAULT_ROLLBACK_WINDOW_SECS: u64 = 30;

/// The measured copy rate, records/s: `domicile bench copy` (1M records region to region over
/// loopback, the target pulling from the source) moved a mean of 328,681 records/s in three
/// runs on 2026-12-06 (docs/BENCHMARKS.md, "fifth session"); slower hours measure less.
pub const MEASURED_COPY_RATE: u64 = 328_000;

/// A migration plan: phases run one after the other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub name: String,
    pub phases: Vec<Phase>,
}

/// One phase: `services` × `markets` move to `target` (or `targets[market]`), wave by wave.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub name: String,
    pub services: Vec<ServiceName>,
    pub markets: Vec<Market>,
    pub target: Target,
    /// Per-market overrides of `target`; every key must be one of `markets`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<Market, Target>,
    /// Cumulative percentages of the buckets moved by the end of each wave: strictly
    /// increasing, each in 1..=100, the last 100.
    #[serde(default = "default_waves", deserialize_with = "de_waves")]
    pub waves: Vec<u8>,
    /// The copy's cap in records/s (`None`: no cap).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "de_rate_limit"
    )]
    pub rate_limit: Option<u64>,
    /// How long the target's changes flow back to the source after a cutover (`rollback_window`
    /// in the file).
    #[serde(
        rename = "rollback_window",
        default = "default_rollback_window",
        serialize_with = "ser_duration",
        deserialize_with = "de_duration"
    )]
    pub rollback_window_secs: u64,
    /// The policy change that takes effect when the phase completes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub policy_after: Vec<PolicyRule>,
    /// Pause the run when this phase completes (a sign-off point); `resume` starts the next.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pause_after: bool,
}

/// Where a phase moves data: a region, or the policy's preferred region of each market × service.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    Region(RegionId),
    Preferred,
}

/// One rule of a phase's `policy_after`: `remove` is no longer allowed for `markets` × `services`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRule {
    pub markets: Vec<Market>,
    pub services: Vec<ServiceName>,
    pub remove: Vec<RegionId>,
}

/// A plan refused: says which phase and what is wrong, on one line.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PlanError {
    /// The TOML is malformed or does not fit the format: `line L, column C: message`.
    #[error("plan is not valid: {0}")]
    Parse(String),
    /// The plan contradicts itself (empty or repeated entries, bad waves, …).
    #[error("plan is not valid: {0}")]
    Invalid(String),
    #[error("phase {phase}: {context} names region {region}, which the cluster does not declare")]
    UnknownRegion {
        phase: String,
        context: String,
        region: RegionId,
    },
    #[error("phase {phase}: service {service} is not in the cluster's schema")]
    UnknownService { phase: String, service: ServiceName },
    #[error("phase {phase}: market {market} is not in the cluster's policy")]
    UnknownMarket { phase: String, market: Market },
    /// The policy in force when the phase starts forbids its target.
    #[error("phase {phase}: the target is forbidden: {violation}")]
    Forbidden {
        phase: String,
        violation: PolicyViolation,
    },
    #[error(
        "overlapping phases: {earlier} and {phase} both move {service} of market {market} to {region}"
    )]
    Overlap {
        phase: String,
        earlier: String,
        service: ServiceName,
        market: Market,
        region: RegionId,
    },
    #[error("phase {phase}: {service} of market {market} is already in {region}: nothing to move")]
    AlreadyThere {
        phase: String,
        service: ServiceName,
        market: Market,
        region: RegionId,
    },
    /// A phase moves whole (service, market) placements; a split or partial one is refused.
    #[error(
        "phase {phase}: {service} of market {market} is not placed whole in one region ({placed}); a plan moves whole placements"
    )]
    NotWhole {
        phase: String,
        service: ServiceName,
        market: Market,
        placed: String,
    },
    #[error(
        "phase {phase}: policy_after removes every allowed region of {service} in market {market}"
    )]
    NothingAllowed {
        phase: String,
        service: ServiceName,
        market: Market,
    },
    /// The phase's `policy_after` would forbid data where it still lives after the phase.
    #[error("phase {phase}: policy_after would strand data that stays put: {violation}")]
    Stranded {
        phase: String,
        violation: PolicyViolation,
    },
}

/// One (service, market) moved by a phase.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub service: ServiceName,
    pub market: Market,
    /// Where the data is when the phase starts: today's placement, or an earlier phase's target.
    pub from: RegionId,
    pub to: RegionId,
}

/// One wave of a phase: these buckets of every move of the phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wave {
    /// The plan's cumulative percentage this wave ends at.
    pub percent: u8,
    pub buckets: BucketRange,
}

/// A phase checked against a cluster: concrete moves, waves as bucket ranges, and the policy the
/// control plane publishes when the phase completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedPhase {
    pub name: String,
    pub moves: Vec<Move>,
    pub waves: Vec<Wave>,
    pub rate_limit: Option<u64>,
    pub rollback_window_secs: u64,
    /// The policy version in force while the phase runs.
    pub policy_version: u64,
    /// The policy after the phase (`policy_after` applied); the same version if nothing changed.
    pub policy_after: Policy,
}

// ---- parsing -------------------------------------------------------------------------------

fn default_waves() -> Vec<u8> {
    DEFAULT_WAVES.to_vec()
}

fn default_rollback_window() -> u64 {
    DEFAULT_ROLLBACK_WINDOW_SECS
}

/// Waves must be strictly increasing percentages in 1..=100 ending at 100.
fn check_waves(waves: &[u8]) -> Result<(), String> {
    let Some(&last) = waves.last() else {
        return Err("waves is empty: give at least [100]".into());
    };
    if let Some(&w) = waves.iter().find(|w| !(1..=100).contains(*w)) {
        return Err(format!("wave {w}% is outside 1..=100"));
    }
    if let Some(pair) = waves.windows(2).find(|p| p[0] >= p[1]) {
        return Err(format!(
            "waves must be strictly increasing, but {}% is followed by {}%",
            pair[0], pair[1]
        ));
    }
    if last != 100 {
        return Err(format!(
            "the last wave must be 100% (every bucket), not {last}%"
        ));
    }
    Ok(())
}

fn de_waves<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let waves = Vec::<u8>::deserialize(d)?;
    check_waves(&waves).map_err(de::Error::custom)?;
    Ok(waves)
}

fn de_rate_limit<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(de::Error::custom(
            "rate_limit must be at least 1 record/s; leave it out for no cap",
        )),
        n => Ok(Some(n)),
    }
}

/// Parses `"Ns"`, `"Nm"` or `"Nh"` into seconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let bad = || format!("duration {text:?} is not a whole number followed by s, m or h");
    let unit = match text.chars().last() {
        Some('s') => 1,
        Some('m') => 60,
        Some('h') => 3600,
        _ => return Err(bad()),
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let n: u64 = digits.parse().map_err(|_| bad())?;
    n.checked_mul(unit)
        .ok_or_else(|| format!("duration {text:?} is too long"))
}

/// Writes seconds in the largest unit that divides them: `30s`, `5m`, `2h`.
pub fn format_duration(secs: u64) -> String {
    if secs > 0 && secs.is_multiple_of(3600) {
        format!("{}h", secs / 3600)
    } else if secs > 0 && secs.is_multiple_of(60) {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    struct Secs;
    impl Visitor<'_> for Secs {
        type Value = u64;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"5m\" or \"1h\", or whole seconds")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<u64, E> {
            parse_duration(v).map_err(E::custom)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
            Ok(v)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
            u64::try_from(v).map_err(|_| E::custom(format!("duration {v} is negative")))
        }
    }
    d.deserialize_any(Secs)
}

fn ser_duration<S: Serializer>(secs: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format_duration(*secs))
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Region(r) => f.write_str(r.as_str()),
            Target::Preferred => f.write_str("preferred"),
        }
    }
}

impl Serialize for Target {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "preferred" {
            return Ok(Target::Preferred);
        }
        RegionId::new(s)
            .map(Target::Region)
            .map_err(de::Error::custom)
    }
}

/// A TOML error on one line: `line L, column C: message`.
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = text.get(..span.start.min(text.len())).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// The first item that appears twice, if any.
fn repeated<T: Ord + Clone>(items: &[T]) -> Option<T> {
    let mut seen = BTreeSet::new();
    items.iter().find(|i| !seen.insert(*i)).cloned()
}

impl Plan {
    /// Parses a plan file and checks what can be checked without a cluster.
    pub fn from_toml(text: &str) -> Result<Plan, PlanError> {
        let plan: Plan = toml::from_str(text).map_err(|e| PlanError::Parse(one_line(text, &e)))?;
        plan.check()?;
        Ok(plan)
    }

    /// The reference plan, `examples/plans/reference-2014.toml`.
    pub fn reference() -> Result<Plan, PlanError> {
        Plan::from_toml(REFERENCE_PLAN_TOML)
    }

    /// The plan's own consistency: names, non-empty and unrepeated lists, waves, rate limits.
    fn check(&self) -> Result<(), PlanError> {
        let invalid = |s: String| Err(PlanError::Invalid(s));
        if self.name.trim().is_empty() {
            return invalid("the plan has no name".into());
        }
        if self.phases.is_empty() {
            return invalid(format!("plan {} has no phases", self.name));
        }
        let names: Vec<&str> = self.phases.iter().map(|p| p.name.as_str()).collect();
        if let Some(name) = repeated(&names) {
            return invalid(format!("two phases are named {name:?}"));
        }
        self.phases.iter().try_for_each(Phase::check)
    }

    /// Checks the plan against `config` — every phase against the policy as it will be after the
    /// earlier phases' `policy_after` — and resolves every (phase, service, market) to a move
    /// between two concrete regions. Nothing moves if this fails.
    pub fn validate(&self, config: &ClusterConfig) -> Result<Vec<ResolvedPhase>, PlanError> {
        self.check()?;
        let mut policy = config.policy.clone();
        let mut placed = Placed::of(config);
        // (service, market) → the phase that last moved it.
        let mut moved_by: BTreeMap<(ServiceName, Market), &str> = BTreeMap::new();
        let mut resolved = Vec::with_capacity(self.phases.len());
        for phase in &self.phases {
            phase.check_names(config)?;
            let name = || phase.name.clone();
            let mut moves = Vec::new();
            for service in &phase.services {
                for &market in &phase.markets {
                    let to =
                        match phase.target_of(market) {
                            Target::Region(r) => r.clone(),
                            Target::Preferred => policy.preferred(market, service).ok_or(
                                PlanError::UnknownMarket {
                                    phase: name(),
                                    market,
                                },
                            )?,
                        };
                    policy.check(market, service, &to).map_err(|violation| {
                        PlanError::Forbidden {
                            phase: name(),
                            violation,
                        }
                    })?;
                    let from = placed
                        .whole(service, market, config.buckets)
                        .map_err(|placed| PlanError::NotWhole {
                            phase: name(),
                            service: service.clone(),
                            market,
                            placed,
                        })?;
                    if from == to {
                        return Err(match moved_by.get(&(service.clone(), market)) {
                            Some(earlier) => PlanError::Overlap {
                                phase: name(),
                                earlier: earlier.to_string(),
                                service: service.clone(),
                                market,
                                region: to,
                            },
                            None => PlanError::AlreadyThere {
                                phase: name(),
                                service: service.clone(),
                                market,
                                region: to,
                            },
                        });
                    }
                    moves.push(Move {
                        service: service.clone(),
                        market,
                        from,
                        to,
                    });
                }
            }
            for m in &moves {
                placed.set(&m.service, m.market, config.buckets.all(), &m.to);
                moved_by.insert((m.service.clone(), m.market), &phase.name);
            }
            let after = phase.apply(&policy);
            for (market, service, rule) in rules_of(&after) {
                if rule.allowed.is_empty() {
                    return Err(PlanError::NothingAllowed {
                        phase: name(),
                        service,
                        market,
                    });
                }
            }
            placed
                .check(&after)
                .map_err(|violation| PlanError::Stranded {
                    phase: name(),
                    violation,
                })?;
            resolved.push(ResolvedPhase {
                name: name(),
                moves,
                waves: waves(config.buckets, &phase.waves),
                rate_limit: phase.rate_limit,
                rollback_window_secs: phase.rollback_window_secs,
                policy_version: policy.version,
                policy_after: after.clone(),
            });
            policy = after;
        }
        Ok(resolved)
    }
}

/// Every service rule of a policy (the market's own rule included), to check none is empty.
fn rules_of(policy: &Policy) -> Vec<(Market, ServiceName, &ServiceRule)> {
    policy
        .markets
        .iter()
        .flat_map(|(m, p)| p.services.iter().map(move |(s, r)| (*m, s.clone(), r)))
        .collect()
}

impl Phase {
    fn check(&self) -> Result<(), PlanError> {
        let invalid = |s: String| Err(PlanError::Invalid(format!("phase {}: {s}", self.name)));
        if self.name.trim().is_empty() {
            return Err(PlanError::Invalid("a phase has no name".into()));
        }
        if self.services.is_empty() || self.markets.is_empty() {
            return invalid("services and markets must each name at least one".into());
        }
        if let Some(s) = repeated(&self.services) {
            return invalid(format!("service {s} is listed twice"));
        }
        if let Some(m) = repeated(&self.markets) {
            return invalid(format!("market {m} is listed twice"));
        }
        if let Some(m) = self.targets.keys().find(|m| !self.markets.contains(m)) {
            return invalid(format!(
                "targets.{m} overrides the target of a market the phase does not move"
            ));
        }
        if let Err(e) = check_waves(&self.waves) {
            return invalid(e);
        }
        if self.rate_limit == Some(0) {
            return invalid("rate_limit must be at least 1 record/s".into());
        }
        for rule in &self.policy_after {
            if rule.markets.is_empty() || rule.services.is_empty() || rule.remove.is_empty() {
                return invalid(
                    "every policy_after rule needs markets, services and regions to remove".into(),
                );
            }
        }
        Ok(())
    }

    /// Every service, market and region the phase names is known to the cluster.
    fn check_names(&self, config: &ClusterConfig) -> Result<(), PlanError> {
        let phase = || self.name.clone();
        let services = config.schema.services();
        let service_lists = std::iter::once(&self.services)
            .chain(self.policy_after.iter().map(|r| &r.services))
            .flatten();
        for service in service_lists {
            if !services.contains(service) {
                return Err(PlanError::UnknownService {
                    phase: phase(),
                    service: service.clone(),
                });
            }
        }
        let market_lists = std::iter::once(&self.markets)
            .chain(self.policy_after.iter().map(|r| &r.markets))
            .flatten();
        for &market in market_lists {
            if !config.policy.markets.contains_key(&market) {
                return Err(PlanError::UnknownMarket {
                    phase: phase(),
                    market,
                });
            }
        }
        let targets = std::iter::once(("target".to_string(), &self.target)).chain(
            self.targets
                .iter()
                .map(|(m, t)| (format!("targets.{m}"), t)),
        );
        let regions = targets
            .filter_map(|(context, t)| match t {
                Target::Region(r) => Some((context, r)),
                Target::Preferred => None,
            })
            .chain(
                self.policy_after
                    .iter()
                    .flat_map(|r| &r.remove)
                    .map(|r| ("policy_after.remove".to_string(), r)),
            );
        for (context, region) in regions {
            if config.region(region).is_none() {
                return Err(PlanError::UnknownRegion {
                    phase: phase(),
                    context,
                    region: region.clone(),
                });
            }
        }
        Ok(())
    }

    /// The target of `market` in this phase.
    pub fn target_of(&self, market: Market) -> &Target {
        self.targets.get(&market).unwrap_or(&self.target)
    }

    /// The policy once this phase has completed: each `policy_after` rule removes its regions
    /// from the allowed list of its markets × services, as per-service rules (the market's own
    /// rule is the starting point where a service has none). The preferred region stays if it is
    /// still allowed, else the first remaining allowed region takes its place. The version goes
    /// up by one if anything changed. Markets the policy does not list are left alone (they are
    /// denied everywhere already).
    pub fn apply(&self, policy: &Policy) -> Policy {
        let mut next = policy.clone();
        for rule in &self.policy_after {
            rule.apply_to(&mut next);
        }
        if next.markets != policy.markets {
            next.version = policy.version + 1;
        }
        next
    }
}

impl PolicyRule {
    fn apply_to(&self, policy: &mut Policy) {
        for market in &self.markets {
            let Some(m) = policy.markets.get_mut(market) else {
                continue;
            };
            for service in &self.services {
                let current = m.services.get(service).cloned().unwrap_or(ServiceRule {
                    allowed: m.allowed.clone(),
                    preferred: m.preferred.clone(),
                });
                if !current.allowed.iter().any(|r| self.remove.contains(r)) {
                    continue;
                }
                let allowed: Vec<RegionId> = current
                    .allowed
                    .into_iter()
                    .filter(|r| !self.remove.contains(r))
                    .collect();
                let preferred = if allowed.contains(&current.preferred) {
                    current.preferred
                } else {
                    allowed.first().cloned().unwrap_or(current.preferred)
                };
                m.services
                    .insert(service.clone(), ServiceRule { allowed, preferred });
            }
        }
    }
}

/// Where each (service, market) lives as the plan is walked: today's placement rows, replaced
/// by one whole range at the target after each move.
struct Placed(BTreeMap<(ServiceName, Market), Vec<(BucketRange, RegionId)>>);

impl Placed {
    fn of(config: &ClusterConfig) -> Self {
        let mut rows: BTreeMap<_, Vec<_>> = BTreeMap::new();
        for r in config.placement.ranges() {
            rows.entry((r.service.clone(), r.market))
                .or_default()
                .push((r.buckets, r.region.clone()));
        }
        Self(rows)
    }

    /// The one region holding every bucket of (service, market), or what is placed instead.
    fn whole(
        &self,
        service: &ServiceName,
        market: Market,
        count: BucketCount,
    ) -> Result<RegionId, String> {
        let rows = self
            .0
            .get(&(service.clone(), market))
            .map(Vec::as_slice)
            .unwrap_or_default();
        let regions: BTreeSet<&RegionId> = rows.iter().map(|(_, r)| r).collect();
        // Placement ranges never overlap, so full coverage is a sum of lengths.
        let covered: u32 = rows.iter().map(|(b, _)| b.len()).sum();
        match (regions.iter().next(), regions.len()) {
            (Some(region), 1) if covered == count.get() => Ok((*region).clone()),
            (None, _) => Err("not placed".into()),
            _ => Err(rows
                .iter()
                .map(|(b, r)| format!("{b} in {r}"))
                .collect::<Vec<_>>()
                .join(", ")),
        }
    }

    fn set(&mut self, service: &ServiceName, market: Market, all: BucketRange, to: &RegionId) {
        self.0
            .insert((service.clone(), market), vec![(all, to.clone())]);
    }

    /// Every placed range is allowed by `policy`.
    fn check(&self, policy: &Policy) -> Result<(), PolicyViolation> {
        for ((service, market), rows) in &self.0 {
            for (_, region) in rows {
                policy.check(*market, service, region)?;
            }
        }
        Ok(())
    }
}

/// Turns cumulative percentages into bucket ranges of `count` buckets: wave k covers
/// `[ceil(B·p(k-1)/100), ceil(B·pk/100))`, every wave at least one bucket while buckets remain;
/// a wave left with no bucket (tiny B) is dropped.
pub fn waves(count: BucketCount, percents: &[u8]) -> Vec<Wave> {
    let b = u64::from(count.get());
    let mut out = Vec::with_capacity(percents.len());
    let mut start = 0u64;
    for &p in percents {
        let end = (b * u64::from(p)).div_ceil(100).max(start + 1).min(b);
        if end > start {
            let first = u16::try_from(start).unwrap_or(u16::MAX);
            let last = u16::try_from(end - 1).unwrap_or(u16::MAX);
            out.push(Wave {
                percent: p,
                buckets: BucketRange { first, last },
            });
        }
        start = end;
    }
    out
}

// ---- dry run ---------------------------------------------------------------------------------

/// What one user stores in one service, on average.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ServiceVolume {
    pub records_per_user: f64,
    /// Per record as the mover counts it: user id, collection, key, version and value.
    pub bytes_per_record: f64,
    /// Blob (photo) bytes per user; not timed by the copy rate, which is measured on records.
    pub blob_bytes_per_user: f64,
}

/// The population a dry run estimates for: users split over markets by weight, and per service
/// what a user stores.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Workload {
    pub users: u64,
    /// Relative number of users per market; markets not listed have no users.
    pub weights: BTreeMap<Market, f64>,
    pub volumes: BTreeMap<ServiceName, ServiceVolume>,
    /// For services `volumes` does not list.
    pub other_service: ServiceVolume,
}

impl Workload {
    /// `users` split by `weights`, with what the demo's seeding writes per user
    /// (`domicile-demo`'s `seed`): ecommerce an address and two orders (3 records, ~200 B each);
    /// account a profile and credentials (2, ~150 B); messaging two messages (2, ~100 B); cloud a
    /// note, contacts for the 60% who granted `contacts-sync`, and a photo's record for 10%
    /// (1.7, ~150 B) plus the photo itself, 20–200 KiB (110 KiB on average) for 10% of users.
    pub fn new(users: u64, weights: BTreeMap<Market, f64>) -> Self {
        let volume = |records_per_user, bytes_per_record, blob_bytes_per_user| ServiceVolume {
            records_per_user,
            bytes_per_record,
            blob_bytes_per_user,
        };
        let volumes = [
            ("ecommerce", volume(3.0, 200.0, 0.0)),
            ("account", volume(2.0, 150.0, 0.0)),
            ("messaging", volume(2.0, 100.0, 0.0)),
            ("cloud", volume(1.7, 150.0, 0.1 * 110.0 * 1024.0)),
        ]
        .into_iter()
        .filter_map(|(s, v)| Some((ServiceName::new(s).ok()?, v)))
        .collect();
        Self {
            users,
            weights,
            volumes,
            other_service: volume(2.0, 200.0, 0.0),
        }
    }

    /// The users of `market`.
    pub fn users_in(&self, market: Market) -> f64 {
        let total: f64 = self.weights.values().sum();
        let w = self.weights.get(&market).copied().unwrap_or(0.0);
        if total > 0.0 {
            self.users as f64 * w / total
        } else {
            0.0
        }
    }

    pub fn volume(&self, service: &ServiceName) -> ServiceVolume {
        self.volumes
            .get(service)
            .copied()
            .unwrap_or(self.other_service)
    }
}

/// Users, records and bytes moved, and the time the copy takes.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Volume {
    pub users: u64,
    pub records: u64,
    /// Record bytes plus blob bytes.
    pub bytes: u64,
    /// `records` at the phase's copy rate.
    pub seconds: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WaveEstimate {
    /// 1-based.
    pub wave: usize,
    pub percent: u8,
    pub buckets: BucketRange,
    pub bucket_count: u32,
    #[serde(flatten)]
    pub volume: Volume,
}

/// The modelled latency of one request (warm connection) by a market's users, before and after
/// a phase moves some of its services.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencyChange {
    pub market: Market,
    pub services: Vec<ServiceName>,
    pub from: RegionId,
    pub to: RegionId,
    pub from_ms: Option<f64>,
    pub to_ms: Option<f64>,
    /// `to_ms - from_ms`: negative is faster.
    pub change_ms: Option<f64>,
    /// `from_ms / to_ms`.
    pub speedup: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseEstimate {
    pub name: String,
    pub moves: usize,
    pub rate_limit: Option<u64>,
    /// The copy rate used: the measured rate, capped by `rate_limit`.
    pub records_per_s: u64,
    pub rollback_window: String,
    pub policy_version: u64,
    pub policy_version_after: u64,
    pub waves: Vec<WaveEstimate>,
    pub total: Volume,
    pub latency: Vec<LatencyChange>,
}

/// What `domicile migrate plan` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DryRun {
    pub plan: String,
    /// The cluster config file, or `reference`.
    pub config: String,
    pub buckets: u32,
    pub users: u64,
    pub copy_rate: u64,
    /// Round trips of the modelled request (no processing time).
    pub round_trips: u32,
    pub phases: Vec<PhaseEstimate>,
    pub total: Volume,
}

impl DryRun {
    /// Estimates every phase and wave of a validated plan for `workload`, copying at
    /// `copy_rate` records/s (each phase's `rate_limit` caps it), with `model`'s latencies.
    pub fn estimate(
        plan: &Plan,
        resolved: &[ResolvedPhase],
        config: &ClusterConfig,
        config_name: &str,
        workload: &Workload,
        copy_rate: u64,
        model: &LatencyModel,
    ) -> DryRun {
        let b = f64::from(config.buckets.get());
        let mut total = Accumulator::default();
        let phases = resolved
            .iter()
            .map(|phase| {
                let rate = phase.rate_limit.map_or(copy_rate, |r| r.min(copy_rate));
                let markets: BTreeSet<Market> = phase.moves.iter().map(|m| m.market).collect();
                let mut phase_total = Accumulator::default();
                let waves = phase
                    .waves
                    .iter()
                    .enumerate()
                    .map(|(i, wave)| {
                        let share = f64::from(wave.buckets.len()) / b;
                        let mut acc = Accumulator {
                            users: markets.iter().map(|&m| workload.users_in(m)).sum::<f64>()
                                * share,
                            ..Accumulator::default()
                        };
                        for m in &phase.moves {
                            let users = workload.users_in(m.market) * share;
                            let v = workload.volume(&m.service);
                            acc.records += users * v.records_per_user;
                            acc.bytes += users
                                * (v.records_per_user * v.bytes_per_record + v.blob_bytes_per_user);
                        }
                        phase_total.add(&acc);
                        WaveEstimate {
                            wave: i + 1,
                            percent: wave.percent,
                            buckets: wave.buckets,
                            bucket_count: wave.buckets.len(),
                            volume: acc.volume(rate),
                        }
                    })
                    .collect();
                total.add(&phase_total);
                total.seconds += phase_total.records / rate.max(1) as f64;
                PhaseEstimate {
                    name: phase.name.clone(),
                    moves: phase.moves.len(),
                    rate_limit: phase.rate_limit,
                    records_per_s: rate,
                    rollback_window: format_duration(phase.rollback_window_secs),
                    policy_version: phase.policy_version,
                    policy_version_after: phase.policy_after.version,
                    waves,
                    total: phase_total.volume(rate),
                    latency: latency_changes(phase, model),
                }
            })
            .collect();
        DryRun {
            plan: plan.name.clone(),
            config: config_name.to_string(),
            buckets: config.buckets.get(),
            users: workload.users,
            copy_rate,
            round_trips: round_trips::REQUEST,
            phases,
            total: Volume {
                users: total.users.round() as u64,
                records: total.records.round() as u64,
                bytes: total.bytes.round() as u64,
                seconds: total.seconds,
            },
        }
    }

    /// The dry run as aligned tables, one block per phase.
    pub fn table(&self) -> String {
        let mut out = format!(
            "Plan {} (dry run, nothing moves): config {}, {} buckets, {} users, copy at {} records/s.\n",
            self.plan, self.config, self.buckets, self.users, self.copy_rate
        );
        for (i, p) in self.phases.iter().enumerate() {
            let limit = p
                .rate_limit
                .map_or("no rate limit".to_string(), |r| format!("rate limit {r}/s"));
            let policy = if p.policy_version_after == p.policy_version {
                format!("policy v{} unchanged", p.policy_version)
            } else {
                format!(
                    "policy v{} -> v{}",
                    p.policy_version, p.policy_version_after
                )
            };
            let _ = write!(
                out,
                "\nPhase {} {}: {} moves, {limit} (copy {}/s), rollback window {}, {policy}\n\n",
                i + 1,
                p.name,
                p.moves,
                p.records_per_s,
                p.rollback_window
            );
            let mut rows = vec![
                [
                    "wave",
                    "%",
                    "buckets",
                    "users",
                    "records",
                    "bytes",
                    "copy time",
                ]
                .map(String::from)
                .to_vec(),
            ];
            let volume_cells = |v: &Volume| {
                [
                    v.users.to_string(),
                    v.records.to_string(),
                    bytes(v.bytes),
                    seconds(v.seconds),
                ]
            };
            for w in &p.waves {
                let mut row = vec![
                    w.wave.to_string(),
                    w.percent.to_string(),
                    format!("{} ({})", w.buckets, w.bucket_count),
                ];
                row.extend(volume_cells(&w.volume));
                rows.push(row);
            }
            let mut row = vec!["all".to_string(), String::new(), String::new()];
            row.extend(volume_cells(&p.total));
            rows.push(row);
            out.push_str(&aligned(
                &rows,
                &[false, true, false, true, true, true, true],
                "  ",
            ));
            out.push('\n');
            let mut rows = vec![
                [
                    "market",
                    "services",
                    "from",
                    "ms",
                    "to",
                    "ms",
                    "change ms",
                    "faster",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for l in &p.latency {
                let services: Vec<&str> = l.services.iter().map(ServiceName::as_str).collect();
                rows.push(vec![
                    l.market.to_string(),
                    services.join(","),
                    l.from.to_string(),
                    l.from_ms.map_or("-".into(), |v| format!("{v:.1}")),
                    l.to.to_string(),
                    l.to_ms.map_or("-".into(), |v| format!("{v:.1}")),
                    l.change_ms.map_or("-".into(), |v| format!("{v:+.1}")),
                    l.speedup.map_or("-".into(), |v| format!("{v:.1}x")),
                ]);
            }
            out.push_str(&aligned(
                &rows,
                &[false, false, false, true, false, true, true, true],
                "  ",
            ));
        }
        let t = &self.total;
        let _ = write!(
            out,
            "\nTotal: {} records, {}, {} of copying.\n\n\
             Users: split over markets by weight. Records and bytes per user and service: as the\n\
             demo seeds them. Copy time: records only (photo bytes are not timed), at the copy\n\
             rate (`domicile bench copy`, docs/BENCHMARKS.md, unless --copy-rate) capped by the\n\
             phase's rate limit. Latency: one request on a warm connection ({} round trip, no\n\
             processing) in the latency model; `faster` is the ratio of the two.\n",
            t.records,
            bytes(t.bytes),
            seconds(t.seconds),
            self.round_trips
        );
        out
    }
}

#[derive(Debug, Default)]
struct Accumulator {
    users: f64,
    records: f64,
    bytes: f64,
    seconds: f64,
}

impl Accumulator {
    fn add(&mut self, other: &Accumulator) {
        self.users += other.users;
        self.records += other.records;
        self.bytes += other.bytes;
    }

    fn volume(&self, rate: u64) -> Volume {
        Volume {
            users: self.users.round() as u64,
            records: self.records.round() as u64,
            bytes: self.bytes.round() as u64,
            seconds: self.records / rate.max(1) as f64,
        }
    }
}

/// Per (market, from, to) of a phase, in the phase's order: one request's latency before/after.
fn latency_changes(phase: &ResolvedPhase, model: &LatencyModel) -> Vec<LatencyChange> {
    let mut out: Vec<LatencyChange> = Vec::new();
    for m in &phase.moves {
        if let Some(l) = out
            .iter_mut()
            .find(|l| l.market == m.market && l.from == m.from && l.to == m.to)
        {
            l.services.push(m.service.clone());
            continue;
        }
        let ms = |r: &RegionId| model.predict_ms(m.market, r, 0.0, round_trips::REQUEST);
        let (from_ms, to_ms) = (ms(&m.from), ms(&m.to));
        let both = from_ms.zip(to_ms);
        out.push(LatencyChange {
            market: m.market,
            services: vec![m.service.clone()],
            from: m.from.clone(),
            to: m.to.clone(),
            from_ms,
            to_ms,
            change_ms: both.map(|(f, t)| t - f),
            speedup: both.and_then(|(f, t)| (t > 0.0).then(|| f / t)),
        });
    }
    out
}

pub fn bytes(b: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if b < 1024 {
        return format!("{b} B");
    }
    let mut v = b as f64 / 1024.0;
    let mut unit = UNITS[0];
    for u in &UNITS[1..] {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = u;
    }
    format!("{v:.1} {unit}")
}

fn seconds(s: f64) -> String {
    if s < 60.0 {
        format!("{s:.2} s")
    } else if s < 3600.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// Columns padded to their widest cell; `right[i]` right-aligns column `i`.
pub fn aligned(rows: &[Vec<String>], right: &[bool], gap: &str) -> String {
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
        let mut line = String::from("  ");
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str(gap);
            }
            let width = widths.get(i).copied().unwrap_or(0);
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
    use domicile_core::reference;

    fn region(r: &str) -> RegionId {
        RegionId::new(r).unwrap()
    }

    fn market(m: &str) -> Market {
        Market::new(m).unwrap()
    }

    fn service(s: &str) -> ServiceName {
        ServiceName::new(s).unwrap()
    }

    /// A plan of one phase, `extra` appended to its table.
    fn one_phase(services: &str, markets: &str, target: &str, extra: &str) -> String {
        format!(
            "name = \"t\"\n[[phases]]\nname = \"p1\"\nservices = [{services}]\nmarkets = [{markets}]\ntarget = \"{target}\"\n{extra}"
        )
    }

    /// Parses and validates `input` against the reference cluster; the error must contain
    /// `expected` and be one line.
    fn check(input: &str, expected: &str) {
        let result = Plan::from_toml(input).and_then(|p| p.validate(&reference::cluster_config()));
        let err = result.expect_err("the plan should be refused").to_string();
        assert!(err.contains(expected), "expected {expected:?} in {err:?}");
        assert!(!err.contains('\n'), "not one line: {err:?}");
    }

    #[test]
    fn the_reference_plan_yields_the_reference_moves() {
        let config = reference::cluster_config();
        let phases = Plan::reference().unwrap().validate(&config).unwrap();
        let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ecommerce", "account-messaging-cloud", "go-local"]);
        let moves = |p: &ResolvedPhase| -> Vec<String> {
            p.moves
                .iter()
                .map(|m| format!("{} {} {}>{}", m.service, m.market, m.from, m.to))
                .collect()
        };
        let overseas = ["HK", "TW", "SG", "MY", "ID", "PH", "IN", "BR"];
        let first_two = |services: &[&str]| -> Vec<String> {
            let mut out = Vec::new();
            for s in services {
                for m in overseas {
                    let to = if m == "BR" { "us-west" } else { "ap-singapore" };
                    out.push(format!("{s} {m} cn-beijing>{to}"));
                }
            }
            out
        };
        assert_eq!(moves(&phases[0]), first_two(&["ecommerce"]));
        assert_eq!(
            moves(&phases[1]),
            first_two(&["account", "messaging", "cloud"])
        );
        let mut local = Vec::new();
        for s in ["ecommerce", "account", "messaging", "cloud"] {
            local.push(format!("{s} IN ap-singapore>ap-mumbai"));
            local.push(format!("{s} BR us-west>sa-saopaulo"));
        }
        assert_eq!(moves(&phases[2]), local);
        // CN never moves.
        assert!(
            phases
                .iter()
                .flat_map(|p| &p.moves)
                .all(|m| m.market != market("CN"))
        );

        // Each phase tightens the policy once.
        let versions: Vec<(u64, u64)> = phases
            .iter()
            .map(|p| (p.policy_version, p.policy_after.version))
            .collect();
        assert_eq!(versions, [(1, 2), (2, 3), (3, 4)]);
        let last = &phases[2].policy_after;
        for s in ["ecommerce", "account", "messaging", "cloud"] {
            let s = service(s);
            for m in overseas {
                assert!(last.check(market(m), &s, &region("cn-beijing")).is_err());
            }
            assert!(
                last.check(market("IN"), &s, &region("ap-singapore"))
                    .is_err()
            );
            assert!(last.check(market("IN"), &s, &region("ap-mumbai")).is_ok());
            assert!(last.check(market("BR"), &s, &region("us-west")).is_err());
            assert!(last.check(market("BR"), &s, &region("sa-saopaulo")).is_ok());
            assert!(last.check(market("CN"), &s, &region("cn-beijing")).is_ok());
            assert!(
                last.check(market("HK"), &s, &region("ap-singapore"))
                    .is_ok()
            );
        }
        assert!(last.validate().is_ok());

        // 1024 buckets: 1% → 11 buckets, 10% → up to bucket 102, then the rest.
        let waves: Vec<String> = phases[0]
            .waves
            .iter()
            .map(|w| w.buckets.to_string())
            .collect();
        assert_eq!(waves, ["0-10", "11-102", "103-1023"]);
        assert_eq!(phases[0].rate_limit, Some(100_000));
        assert_eq!(phases[0].rollback_window_secs, 30);
    }

    #[test]
    fn bad_plans_say_what_is_wrong() {
        let shop = "\"ecommerce\"";
        // Unknown names.
        check(&one_phase(shop, "\"HK\"", "mars", ""), "names region mars");
        check(
            &one_phase(
                shop,
                "\"HK\"",
                "ap-singapore",
                "[phases.targets]\nHK = \"moon\"\n",
            ),
            "targets.HK names region moon",
        );
        check(
            &one_phase("\"games\"", "\"HK\"", "ap-singapore", ""),
            "service games is not",
        );
        check(
            &one_phase(shop, "\"FR\"", "us-west", ""),
            "market FR is not in the cluster's policy",
        );
        check(
            &one_phase(shop, "\"XX\"", "us-west", ""),
            "line 5, column 11: invalid market \"XX\"",
        );
        // Forbidden placement: CN data may only live in cn-beijing; the rule is named.
        check(
            &one_phase(shop, "\"CN\"", "us-west", ""),
            "phase p1: the target is forbidden: policy v1 forbids ecommerce data of market CN in region us-west: markets.CN.allowed = [cn-beijing]",
        );
        check(
            &one_phase(shop, "\"CN\"", "cn-beijing", ""),
            "ecommerce of market CN is already in cn-beijing",
        );
        // Overlapping phases: the same service × market to the same target twice.
        let twice = format!(
            "{}[[phases]]\nname = \"p2\"\nservices = [\"account\", \"ecommerce\"]\nmarkets = [\"HK\"]\ntarget = \"ap-singapore\"\n",
            one_phase(shop, "\"HK\"", "ap-singapore", "")
        );
        check(
            &twice,
            "overlapping phases: p1 and p2 both move ecommerce of market HK to ap-singapore",
        );
        // Malformed TOML, with its place.
        check(
            "name = \"t\"\nphases = [",
            "plan is not valid: line 2, column 11:",
        );
        check("name = \"t\"\n[[phases]]\nname = 3\n", "line 3, column 8:");
        check(
            &one_phase(shop, "\"HK\"", "us-west", "colour = \"red\"\n"),
            "line 7, column 1: unknown field `colour`",
        );
        check("name = \"t\"\nphases = []\n", "plan t has no phases");
        // Bad waves.
        let waves = |w: &str| one_phase(shop, "\"HK\"", "ap-singapore", &format!("waves = {w}\n"));
        check(
            &waves("[10, 5, 100]"),
            "line 7, column 9: waves must be strictly increasing, but 10% is followed by 5%",
        );
        check(
            &waves("[1, 10]"),
            "the last wave must be 100% (every bucket), not 10%",
        );
        check(&waves("[0, 100]"), "wave 0% is outside 1..=100");
        check(&waves("[]"), "waves is empty");
        check(&waves("[1, 300]"), "line 7, column");
        // Other fields.
        check(
            &one_phase(
                shop,
                "\"HK\"",
                "ap-singapore",
                "rollback_window = \"soon\"\n",
            ),
            "line 7, column 19: duration \"soon\" is not a whole number followed by s, m or h",
        );
        check(
            &one_phase(shop, "\"HK\"", "ap-singapore", "rate_limit = 0\n"),
            "rate_limit must be at least 1 record/s",
        );
        check(
            &one_phase(shop, "\"HK\", \"HK\"", "ap-singapore", ""),
            "phase p1: market HK is listed twice",
        );
        check(
            &one_phase(
                shop,
                "\"HK\"",
                "ap-singapore",
                "[phases.targets]\nTW = \"us-west\"\n",
            ),
            "targets.TW overrides the target of a market the phase does not move",
        );
    }

    #[test]
    fn policy_after_may_not_strand_or_empty() {
        let rule = |markets: &str, services: &str, remove: &str| {
            format!(
                "[[phases.policy_after]]\nmarkets = [{markets}]\nservices = [{services}]\nremove = [{remove}]\n"
            )
        };
        // Removing cn-beijing for HK's account, still there after the phase.
        check(
            &one_phase(
                "\"ecommerce\"",
                "\"HK\"",
                "ap-singapore",
                &rule("\"HK\"", "\"ecommerce\", \"account\"", "\"cn-beijing\""),
            ),
            "phase p1: policy_after would strand data that stays put: policy v2 forbids account data of market HK in region cn-beijing",
        );
        check(
            &one_phase(
                "\"ecommerce\"",
                "\"CN\"",
                "cn-beijing",
                &rule("\"CN\"", "\"ecommerce\"", "\"cn-beijing\""),
            ),
            "already in cn-beijing",
        );
        check(
            &one_phase(
                "\"ecommerce\"",
                "\"HK\"",
                "ap-singapore",
                &rule(
                    "\"HK\"",
                    "\"ecommerce\"",
                    "\"cn-beijing\", \"us-west\", \"ap-singapore\"",
                ),
            ),
            "policy_after removes every allowed region of ecommerce in market HK",
        );
        check(
            &one_phase(
                "\"ecommerce\"",
                "\"HK\"",
                "ap-singapore",
                &rule("\"HK\"", "\"ecommerce\"", "\"pluto\""),
            ),
            "policy_after.remove names region pluto",
        );
    }

    #[test]
    fn later_phases_see_the_tightened_policy() {
        // Phase 1 takes HK's shop out of Beijing for good; phase 2 may not bring it back.
        let text = format!(
            "{}[[phases.policy_after]]\nmarkets = [\"HK\"]\nservices = [\"ecommerce\"]\nremove = [\"cn-beijing\"]\n\
             [[phases]]\nname = \"back\"\nservices = [\"ecommerce\"]\nmarkets = [\"HK\"]\ntarget = \"cn-beijing\"\n",
            one_phase("\"ecommerce\"", "\"HK\"", "ap-singapore", "")
        );
        check(
            &text,
            "phase back: the target is forbidden: policy v2 forbids ecommerce data of market HK in region cn-beijing: markets.HK.services.ecommerce.allowed = [us-west, ap-singapore]",
        );
        // Moving again to a different target is fine, from where the earlier phase put it.
        let text = format!(
            "{}[[phases]]\nname = \"again\"\nservices = [\"ecommerce\"]\nmarkets = [\"HK\"]\ntarget = \"us-west\"\n",
            one_phase("\"ecommerce\"", "\"HK\"", "ap-singapore", "")
        );
        let phases = Plan::from_toml(&text)
            .unwrap()
            .validate(&reference::cluster_config())
            .unwrap();
        assert_eq!(phases[1].moves[0].from, region("ap-singapore"));
        assert_eq!(phases[1].moves[0].to, region("us-west"));
        assert_eq!(phases[1].policy_after.version, 1, "nothing tightened");
    }

    #[test]
    fn apply_adds_service_rules_and_keeps_or_replaces_preferred() {
        let policy = reference::cluster_config().policy;
        let phase = |remove: &[&str]| Phase {
            name: "p".into(),
            services: vec![service("cloud")],
            markets: vec![market("IN")],
            target: Target::Preferred,
            targets: BTreeMap::new(),
            waves: default_waves(),
            rate_limit: None,
            rollback_window_secs: 30,
            policy_after: vec![PolicyRule {
                markets: vec![market("IN"), market("FR")],
                services: vec![service("cloud")],
                remove: remove.iter().map(|r| region(r)).collect(),
            }],
            pause_after: false,
        };
        let next = phase(&["cn-beijing"]).apply(&policy);
        assert_eq!(next.version, 2);
        let rule = &next.markets[&market("IN")].services[&service("cloud")];
        assert_eq!(
            rule.allowed,
            ["us-west", "ap-singapore", "ap-mumbai"].map(region)
        );
        assert_eq!(rule.preferred, region("ap-mumbai"));
        // Other services and markets keep the market's rule.
        assert!(
            !next.markets[&market("IN")]
                .services
                .contains_key(&service("account"))
        );
        assert_eq!(next.markets[&market("HK")], policy.markets[&market("HK")]);
        // Removing the preferred region: the first remaining allowed one is preferred.
        let next = phase(&["ap-mumbai"]).apply(&policy);
        let rule = &next.markets[&market("IN")].services[&service("cloud")];
        assert_eq!(rule.preferred, region("cn-beijing"));
        // Removing what is not allowed anyway changes nothing, not even the version.
        let next = phase(&["sa-saopaulo"]).apply(&policy);
        assert_eq!(next, policy);
    }

    #[test]
    fn waves_cover_every_bucket_once() {
        let count = |n| BucketCount::new(n).unwrap();
        let ranges = |n, p: &[u8]| -> Vec<String> {
            waves(count(n), p)
                .iter()
                .map(|w| w.buckets.to_string())
                .collect()
        };
        assert_eq!(ranges(1024, &DEFAULT_WAVES), ["0-10", "11-102", "103-1023"]);
        assert_eq!(ranges(100, &DEFAULT_WAVES), ["0", "1-9", "10-99"]);
        assert_eq!(ranges(4, &DEFAULT_WAVES), ["0", "1", "2-3"]);
        assert_eq!(ranges(1, &DEFAULT_WAVES), ["0"]);
        assert_eq!(ranges(65536, &[100]), ["0-65535"]);
        for n in [1, 2, 3, 7, 100, 1000, 1024, 65536] {
            for p in [&[100][..], &[1, 10, 100], &[50, 99, 100], &[1, 2, 3, 100]] {
                let w = waves(count(n), p);
                let total: u32 = w.iter().map(|w| w.buckets.len()).sum();
                assert_eq!(total, n, "{n} {p:?}");
                assert_eq!(w[0].buckets.first, 0);
                for pair in w.windows(2) {
                    assert_eq!(
                        u32::from(pair[0].buckets.last) + 1,
                        u32::from(pair[1].buckets.first)
                    );
                }
            }
        }
    }

    #[test]
    fn durations_parse_and_print() {
        assert_eq!(parse_duration("30s"), Ok(30));
        assert_eq!(parse_duration("5m"), Ok(300));
        assert_eq!(parse_duration("2h"), Ok(7200));
        assert_eq!(parse_duration("0s"), Ok(0));
        for bad in ["", "s", "30", "-1s", "1.5m", "3d", " 3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("99999999999999999999h").is_err());
        assert_eq!(format_duration(30), "30s");
        assert_eq!(format_duration(300), "5m");
        assert_eq!(format_duration(7200), "2h");
        assert_eq!(format_duration(0), "0s");
        let text = one_phase(
            "\"ecommerce\"",
            "\"HK\"",
            "ap-singapore",
            "rollback_window = 90\n",
        );
        assert_eq!(
            Plan::from_toml(&text).unwrap().phases[0].rollback_window_secs,
            90
        );
    }

    #[test]
    fn defaults_apply_and_plans_round_trip() {
        let text = one_phase("\"ecommerce\"", "\"HK\"", "preferred", "");
        let plan = Plan::from_toml(&text).unwrap();
        let p = &plan.phases[0];
        assert_eq!(p.waves, DEFAULT_WAVES);
        assert_eq!(p.rollback_window_secs, DEFAULT_ROLLBACK_WINDOW_SECS);
        assert_eq!(p.rate_limit, None);
        assert_eq!(p.target, Target::Preferred);
        let resolved = plan.validate(&reference::cluster_config()).unwrap();
        assert_eq!(resolved[0].moves[0].to, region("ap-singapore"));

        let reference = Plan::reference().unwrap();
        let again = Plan::from_toml(&toml::to_string(&reference).unwrap()).unwrap();
        assert_eq!(again, reference);
    }

    fn reference_dry_run(users: u64) -> DryRun {
        let config = reference::cluster_config();
        let plan = Plan::reference().unwrap();
        let resolved = plan.validate(&config).unwrap();
        let weights = [
            ("CN", 40.0),
            ("IN", 15.0),
            ("ID", 10.0),
            ("BR", 7.0),
            ("PH", 7.0),
            ("MY", 6.0),
            ("TW", 5.0),
            ("HK", 5.0),
            ("SG", 5.0),
        ]
        .map(|(m, w)| (market(m), w))
        .into();
        DryRun::estimate(
            &plan,
            &resolved,
            &config,
            "reference",
            &Workload::new(users, weights),
            MEASURED_COPY_RATE,
            &LatencyModel::reference().unwrap(),
        )
    }

    #[test]
    fn the_dry_run_estimates_each_wave() {
        let run = reference_dry_run(20_000);
        let table = run.table();
        println!("{table}");
        let phase = &run.phases[0];
        // 60% of 20,000 users are outside CN; wave 1 is 11 of 1024 buckets.
        assert_eq!(phase.total.users, 12_000);
        assert_eq!(phase.total.records, 36_000);
        assert_eq!(
            phase.waves[0].volume.users,
            (12_000.0f64 * 11.0 / 1024.0).round() as u64
        );
        let records: u64 = phase.waves.iter().map(|w| w.volume.records).sum();
        assert!(records.abs_diff(phase.total.records) <= 3);
        assert_eq!(phase.records_per_s, 100_000, "the rate limit caps the copy");
        // Phase 2: 2 + 2 + 1.7 records per user.
        assert_eq!(run.phases[1].total.records, 68_400);
        // Phase 3: IN and BR, 22% of users, every service.
        assert_eq!(run.phases[2].total.users, 4_400);
        // IN's request: 250.4 ms from Beijing, 68.9 from Singapore, 28.6 from Mumbai.
        let latency = |p: usize, m: &str| {
            run.phases[p]
                .latency
                .iter()
                .find(|l| l.market == market(m))
                .unwrap()
                .clone()
        };
        let l = latency(0, "IN");
        assert_eq!((l.from_ms, l.to_ms), (Some(250.4), Some(68.9)));
        assert!((l.change_ms.unwrap() + 181.5).abs() < 1e-9);
        let l = latency(2, "IN");
        assert_eq!(l.services.len(), 4);
        assert_eq!(
            (l.from.as_str(), l.to.as_str()),
            ("ap-singapore", "ap-mumbai")
        );
        assert!(table.contains("Phase 3 go-local: 8 moves"), "{table}");
        assert!(
            table
                .lines()
                .any(|l| l.split_whitespace().next() == Some("all"))
        );
    }

    #[test]
    fn columns_line_up() {
        let rows = vec![
            vec!["a".to_string(), "1.0".to_string()],
            vec!["long".to_string(), "100.5".to_string()],
        ];
        assert_eq!(
            aligned(&rows, &[false, true], "  "),
            "  a       1.0\n  long  100.5\n"
        );
        assert_eq!(bytes(10), "10 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 20), "3.0 MiB");
    }
}

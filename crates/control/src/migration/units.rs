//! A unit's view of the control plane (`wave::Control`), and making a wave's units from the
//! routing table.

use super::engine::Engine;
use super::{Migration, Unit};
use crate::placement_change::{self, PlacementRequest};
use domicile_client::region::RegionClient;
use domicile_core::{BucketRange, Epoch, RegionId};
use domicile_migrate::Mover;
use domicile_migrate::http_control::owner_in;
use domicile_migrate::wave::{Control, Interrupt, Wave, WaveSpec};
use domicile_wire::api::RoutingTable;
use std::sync::Arc;
use std::time::Duration;

pub(crate) struct UnitControl {
    pub engine: Arc<Engine>,
    pub phase: usize,
    pub index: usize,
}

impl Control for UnitControl {
    async fn checkpoint(&self, wave: &Wave) -> Result<(), String> {
        self.engine
            .save(|m: &mut Migration| {
                if let Some(u) = m
                    .phases
                    .get_mut(self.phase)
                    .and_then(|p| p.units.get_mut(self.index))
                {
                    u.run = wave.clone();
                }
            })
            .await
            .map_err(|e| e.to_string())
    }

    async fn commit(&self, spec: &WaveSpec, owner: &RegionId) -> Result<Epoch, String> {
        let req = PlacementRequest {
            service: spec.service.clone(),
            market: spec.market,
            buckets: spec.buckets,
            region: owner.clone(),
        };
        let table = placement_change::change(&self.engine.state, req)
            .await
            .map_err(|e| e.to_string())?;
        owner_in(&table, spec).map(|(_, epoch)| epoch)
    }

    async fn owner(&self, spec: &WaveSpec) -> Result<(RegionId, Epoch), String> {
        owner_in(&self.engine.state.table(), spec)
    }

    fn interrupt(&self) -> Interrupt {
        self.engine.interrupt()
    }

    fn cutover_slot(&self) -> Option<&tokio::sync::Mutex<()>> {
        Some(&self.engine.cutover)
    }
}

/// The mover between a unit's source and target, at their URLs in the current table.
pub(crate) fn mover(engine: &Engine, spec: &WaveSpec) -> Result<Mover, String> {
    let table = engine.state.table();
    let client = |r: &RegionId| {
        table
            .url_of(r)
            .map(|url| RegionClient::new(url.to_string(), engine.state.http.clone()))
            .ok_or_else(|| format!("region {r} has no URL in the routing table"))
    };
    Ok(Mover {
        source: client(&spec.source)?,
        target: client(&spec.target)?,
        scope: spec.scope(),
        buckets: table.buckets,
        blob_collections: table.schema.blob_collections_of(&spec.scope().service),
    })
}

/// The units of wave `wave` of a phase: for each move, the placement rows overlapping the
/// wave's buckets that are not at the target yet. Reversing is planned only where the policy
/// lets the data return to its source.
pub(crate) fn make_units(
    table: &RoutingTable,
    phase: &domicile_migrate::plan::ResolvedPhase,
    wave: usize,
) -> Vec<Unit> {
    let Some(w) = phase.waves.get(wave) else {
        return Vec::new();
    };
    let mut units = Vec::new();
    for m in &phase.moves {
        for row in table.placement.ranges() {
            if row.service != m.service
                || row.market != m.market
                || !row.buckets.overlaps(&w.buckets)
                || row.region == m.to
            {
                continue;
            }
            let may_return = table
                .policy
                .check(m.market, &m.service, &row.region)
                .is_ok();
            let window = if may_return {
                Duration::from_secs(phase.rollback_window_secs)
            } else {
                Duration::ZERO
            };
            units.push(Unit {
                wave,
                run: Wave::new(WaveSpec {
                    service: m.service.clone(),
                    market: m.market,
                    buckets: BucketRange {
                        first: row.buckets.first.max(w.buckets.first),
                        last: row.buckets.last.min(w.buckets.last),
                    },
                    source: row.region.clone(),
                    target: m.to.clone(),
                    epoch: row.epoch,
                    rollback_window: window,
                }),
                ledger_seq: None,
            });
        }
    }
    units
}

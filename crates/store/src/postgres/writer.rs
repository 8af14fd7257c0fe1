//! The PostgreSQL engine's group-commit writer: one task owns the writer connection, takes
//! everything queued (up to a bound), decides each request against the stored state plus the
//! effects of the requests before it in the group, and writes the survivors in one transaction.
//! Only when `COMMIT` returns are the requests answered and the new LSN published.
//!
//! The stored state of every key the group touches is read with one query before anything is
//! written; the single writer (held by the advisory lock) is what makes that read race-free.
//! Rows go to the server as arrays in one statement, or with binary `COPY` for bulk groups.
//! A `COMMIT` whose outcome is unknown (an error, a lost connection) poisons the store: the
//! next process reads the truth from the database instead of this one guessing.

use super::schema::{version_from_sql, version_to_sql};
use super::{Shared, Sql, pg_error};
use crate::error::StoreError;
use crate::keys;
use crate::queue::{
    Grouped, KeyState, PurgeTurn, Reply, Request, clone_error, decide_batch, gather,
};
use crate::record::{ChangeOp, ImportOutcome, Lsn, Mutation, VersionedRecord};
use crate::store::MetaPuts;
use bytes::Bytes;
use domicile_core::{Hlc, Version};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::sync::mpsc;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

/// An answer held back until the group it belongs to is durable.
enum Pending {
    Write(Reply<Vec<Version>>, Result<Vec<Version>, StoreError>),
    Import(Reply<ImportOutcome>, ImportOutcome),
    Meta(Reply<()>),
}

/// What one group will write.
#[derive(Default)]
struct Plan {
    /// The final state of every key the group writes, in first-write order.
    rows: Vec<(Vec<u8>, Version, Option<Bytes>)>,
    row_of: HashMap<Vec<u8>, usize>,
    /// One change-log entry per mutation: (lsn, op, version, key index into `rows`).
    changes: Vec<(Lsn, ChangeOp, Version, usize)>,
    meta: Vec<(String, Option<Bytes>)>,
    /// Whether some written key already has a stored row (else rows can be `COPY`d straight
    /// into the table: nothing to conflict with, as this is the only writer).
    overwrites: bool,
}

impl Plan {
    /// Stages a write's or an import's metadata puts into the same transaction.
    fn put_meta(&mut self, meta: MetaPuts) {
        self.meta
            .extend(meta.into_iter().map(|(name, value)| (name, Some(value))));
    }

    fn state(&self, stored: &HashMap<Vec<u8>, KeyState>, key: &[u8]) -> Option<KeyState> {
        match self.row_of.get(key) {
            Some(&i) => self.rows.get(i).map(|(_, v, value)| (*v, value.is_some())),
            None => stored.get(key).copied(),
        }
    }

    fn log(
        &mut self,
        stored: &HashMap<Vec<u8>, KeyState>,
        lsn: &mut Lsn,
        key: Vec<u8>,
        version: Version,
        value: Option<Bytes>,
    ) {
        *lsn = Lsn(lsn.0 + 1);
        self.overwrites |= stored.contains_key(&key);
        let op = if value.is_some() {
            ChangeOp::Put
        } else {
            ChangeOp::Delete
        };
        let index = match self.row_of.get(&key) {
            Some(&i) => {
                self.rows[i] = (key, version, value);
                i
            }
            None => {
                self.row_of.insert(key.clone(), self.rows.len());
                self.rows.push((key, version, value));
                self.rows.len() - 1
            }
        };
        self.changes.push((*lsn, op, version, index));
    }
}

struct Statements {
    states: Statement,
    states_in_range: Statement,
    upsert_staged: Statement,
    write_group: Statement,
    store_meta: Statement,
    delete_meta: Statement,
    set_position: Statement,
    purge_range: Statement,
    trim: Statement,
}

pub(crate) struct Writer {
    client: Client,
    sql: Arc<Sql>,
    statements: Statements,
    shared: Arc<Shared>,
    hlc: Hlc,
    next_lsn: Lsn,
    copy_threshold: usize,
}

fn lsn_to_sql(lsn: Lsn) -> Result<i64, StoreError> {
    i64::try_from(lsn.0).map_err(|_| StoreError::Engine("LSN out of range".into()))
}

fn op_to_sql(op: ChangeOp) -> i16 {
    match op {
        ChangeOp::Put => 1,
        ChangeOp::Delete => 2,
    }
}

impl Writer {
    pub async fn new(
        client: Client,
        sql: Arc<Sql>,
        shared: Arc<Shared>,
        hlc: Hlc,
        next_lsn: Lsn,
        copy_threshold: usize,
    ) -> Result<Self, StoreError> {
        let prepare = |q: &str| {
            let q = q.to_string();
            let c = &client;
            async move { c.prepare(&q).await.map_err(pg_error) }
        };
        let statements = Statements {
            states: prepare(&sql.states).await?,
            states_in_range: prepare(&sql.states_in_range).await?,
            upsert_staged: prepare(&sql.upsert_staged).await?,
            write_group: prepare(&sql.write_group).await?,
            store_meta: prepare(&sql.store_meta).await?,
            delete_meta: prepare(&sql.delete_meta).await?,
            set_position: prepare(&sql.set_position).await?,
            purge_range: prepare(&sql.purge_range).await?,
            trim: prepare(&sql.trim).await?,
        };
        Ok(Self {
            client,
            sql,
            statements,
            shared,
            hlc,
            next_lsn,
            copy_threshold,
        })
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.recv().await {
            let queued = gather(first, &mut rx);
            self.process(queued).await;
        }
        tracing::debug!("store writer stopped: every handle was dropped");
    }

    fn poisoned(&self) -> bool {
        self.shared.poisoned.load(Ordering::Acquire)
    }

    fn poison(&self, why: &StoreError) {
        tracing::error!(error = %why, "durable commit failed; poisoning the store");
        self.shared.poisoned.store(true, Ordering::Release);
    }

    /// Whether the writer may write: not poisoned, and its connection alive (a lost connection
    /// may have taken a commit's outcome with it, so it poisons the store).
    fn usable(&self) -> Result<(), StoreError> {
        if !self.poisoned() && self.client.is_closed() {
            self.poison(&StoreError::Engine(
                "the writer connection is closed".into(),
            ));
        }
        if self.poisoned() {
            Err(StoreError::Poisoned)
        } else {
            Ok(())
        }
    }

    /// A read before any write failed: if the session is gone with it, the writer can never
    /// write again, so the store is poisoned now rather than at the next write.
    fn lost(&self, e: tokio_postgres::Error) -> StoreError {
        let alive = answered_and_alive(&e) && !self.client.is_closed();
        let error = pg_error(e);
        if !alive {
            self.poison(&error);
        }
        error
    }

    async fn process(&mut self, queued: Vec<Request>) {
        let mut group = Vec::new();
        for request in queued {
            match request {
                Request::Grouped(g) => group.push(g),
                // One statement per range, whatever the limit: it may remove more.
                Request::Purge { ranges, reply, .. } => {
                    self.commit_group(std::mem::take(&mut group)).await;
                    let result = match self.usable() {
                        Ok(()) => self.purge(ranges).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                }
                Request::Trim { upto, reply } => {
                    self.commit_group(std::mem::take(&mut group)).await;
                    let result = match self.usable() {
                        Ok(()) => self.trim(upto).await,
                        Err(e) => Err(e),
                    };
                    let _ = reply.send(result);
                }
            }
        }
        self.commit_group(group).await;
    }

    async fn commit_group(&mut self, group: Vec<Grouped>) {
        if group.is_empty() {
            return;
        }
        if let Err(e) = self.usable() {
            for g in group {
                g.fail(clone_error(&e));
            }
            return;
        }
        let stored = match self.read_states(&group).await {
            Ok(s) => s,
            Err(e) => {
                for g in group {
                    g.fail(clone_error(&e));
                }
                return;
            }
        };
        let mut plan = Plan::default();
        let mut lsn = self.next_lsn;
        let pending: Vec<Pending> = group
            .into_iter()
            .map(|g| self.stage(&mut plan, &stored, &mut lsn, g))
            .collect();
        let result = self.apply(&plan, lsn).await;
        match &result {
            Ok(()) => {
                self.next_lsn = lsn;
                self.shared.commits.fetch_add(1, Ordering::Relaxed);
                self.shared.lsn_watch.send_replace(lsn);
            }
            Err(Failure::Unknown(e)) => self.poison(e),
            Err(Failure::RolledBack(_)) => {}
        }
        for p in pending {
            let _ = match (p, &result) {
                (Pending::Write(reply, r), Ok(())) => reply.send(r).is_ok(),
                (Pending::Import(reply, o), Ok(())) => reply.send(Ok(o)).is_ok(),
                (Pending::Meta(reply), Ok(())) => reply.send(Ok(())).is_ok(),
                (Pending::Write(reply, _), Err(f)) => reply.send(Err(f.to_error())).is_ok(),
                (Pending::Import(reply, _), Err(f)) => reply.send(Err(f.to_error())).is_ok(),
                (Pending::Meta(reply), Err(f)) => reply.send(Err(f.to_error())).is_ok(),
            };
        }
    }

    /// The stored (version, live) of every key the group's writes and imports name.
    async fn read_states(
        &self,
        group: &[Grouped],
    ) -> Result<HashMap<Vec<u8>, KeyState>, StoreError> {
        let mut keys: HashSet<Vec<u8>> = HashSet::new();
        for g in group {
            match g {
                Grouped::Write { batch, .. } => {
                    keys.extend(batch.iter().map(|m| keys::record_key(&m.address)));
                }
                Grouped::Import { records, .. } => {
                    keys.extend(records.iter().map(|r| keys::record_key(&r.address)));
                }
                Grouped::Meta { .. } => {}
            }
        }
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let mut keys: Vec<Vec<u8>> = keys.into_iter().collect();
        keys.sort_unstable();
        let rows = match self.states_by_range(&keys).await? {
            Some(rows) => rows,
            None => self
                .client
                .query(&self.statements.states, &[&keys])
                .await
                .map_err(|e| self.lost(e))?,
        };
        Ok(rows
            .into_iter()
            .map(|r| {
                (
                    r.get::<_, Vec<u8>>(0),
                    (version_from_sql(r.get(1)), r.get::<_, bool>(2)),
                )
            })
            .collect())
    }

    /// A bulk group's keys are mostly one dense key range (a snapshot chunk): one range scan
    /// reads their states cheaper than a probe per key. `None` when the range holds many other
    /// rows (a sparse group), and for small groups.
    async fn states_by_range(
        &self,
        sorted: &[Vec<u8>],
    ) -> Result<Option<Vec<tokio_postgres::Row>>, StoreError> {
        let (Some(first), Some(last)) = (sorted.first(), sorted.last()) else {
            return Ok(None);
        };
        if sorted.len() < self.copy_threshold.max(64) {
            return Ok(None);
        }
        let budget = i64::try_from(sorted.len() * 2 + 64).unwrap_or(i64::MAX);
        let rows = self
            .client
            .query(&self.statements.states_in_range, &[first, last, &budget])
            .await
            .map_err(|e| self.lost(e))?;
        Ok((i64::try_from(rows.len()).unwrap_or(i64::MAX) < budget).then_some(rows))
    }

    fn stage(
        &mut self,
        plan: &mut Plan,
        stored: &HashMap<Vec<u8>, KeyState>,
        lsn: &mut Lsn,
        request: Grouped,
    ) -> Pending {
        match request {
            Grouped::Write { batch, meta, reply } => {
                let versions = self.stage_write(plan, stored, lsn, batch);
                // A refused batch stages nothing, its metadata included.
                if versions.is_ok() {
                    plan.put_meta(meta);
                }
                Pending::Write(reply, versions)
            }
            Grouped::Import {
                records,
                meta,
                reply,
            } => {
                let outcome = self.stage_import(plan, stored, lsn, records);
                plan.put_meta(meta);
                Pending::Import(reply, outcome)
            }
            Grouped::Meta { name, value, reply } => {
                plan.meta.push((name, value));
                Pending::Meta(reply)
            }
        }
    }

    /// Stages a client batch as `queue::decide_batch` decides it (all or nothing).
    fn stage_write(
        &mut self,
        plan: &mut Plan,
        stored: &HashMap<Vec<u8>, KeyState>,
        lsn: &mut Lsn,
        batch: Vec<Mutation>,
    ) -> Result<Vec<Version>, StoreError> {
        let decided = decide_batch(batch, &mut self.hlc, |key| Ok(plan.state(stored, key)))?;
        let versions = decided.iter().map(|d| d.version).collect();
        for d in decided {
            plan.log(stored, lsn, d.key, d.version, d.value);
        }
        Ok(versions)
    }

    /// Stages the records that win against what is stored; the rest are counted as skipped.
    fn stage_import(
        &mut self,
        plan: &mut Plan,
        stored: &HashMap<Vec<u8>, KeyState>,
        lsn: &mut Lsn,
        records: Vec<VersionedRecord>,
    ) -> ImportOutcome {
        let mut outcome = ImportOutcome::default();
        for r in records {
            let key = keys::record_key(&r.address);
            if plan
                .state(stored, &key)
                .is_some_and(|(v, _)| v >= r.version)
            {
                outcome.skipped += 1;
                continue;
            }
            self.hlc.observe(r.version);
            plan.log(stored, lsn, key, r.version, r.value);
            outcome.applied += 1;
        }
        outcome
    }

    /// Writes a staged group: a small one (no metadata) as one statement, otherwise as one
    /// transaction, with binary `COPY` for bulk.
    async fn apply(&mut self, plan: &Plan, lsn: Lsn) -> Result<(), Failure> {
        let last_version = version_to_sql(self.hlc.last());
        let lsn = lsn_to_sql(lsn).map_err(Failure::RolledBack)?;
        if plan.changes.is_empty() && plan.meta.is_empty() {
            return Ok(());
        }
        let bulk = plan.changes.len() >= self.copy_threshold;
        if !bulk && plan.meta.is_empty() {
            let (lsns, ops, versions, keys) = change_columns(plan).map_err(Failure::RolledBack)?;
            let row_keys: Vec<&[u8]> = plan.rows.iter().map(|(k, _, _)| k.as_slice()).collect();
            let row_versions: Vec<i64> = plan
                .rows
                .iter()
                .map(|(_, v, _)| version_to_sql(*v))
                .collect();
            let values: Vec<Option<&[u8]>> =
                plan.rows.iter().map(|(_, _, v)| v.as_deref()).collect();
            let params: [&(dyn ToSql + Sync); 9] = [
                &lsns,
                &ops,
                &versions,
                &keys,
                &row_keys,
                &row_versions,
                &values,
                &lsn,
                &last_version,
            ];
            // An error the server answered means the statement's transaction rolled back; no
            // answer, or the session's end, leaves the commit's outcome unknown.
            return match self
                .client
                .execute(&self.statements.write_group, &params)
                .await
            {
                Ok(_) => Ok(()),
                Err(e) if answered_and_alive(&e) && !self.client.is_closed() => {
                    Err(Failure::RolledBack(pg_error(e)))
                }
                Err(e) => Err(Failure::Unknown(pg_error(e))),
            };
        }
        let tx = self
            .client
            .transaction()
            .await
            .map_err(|e| Failure::RolledBack(pg_error(e)))?;
        let staged: Result<(), StoreError> = async {
            if !plan.changes.is_empty() {
                copy_changes(&tx, &self.sql, plan).await?;
                if plan.overwrites {
                    copy_rows(&tx, &self.sql.copy_staged, plan).await?;
                    tx.execute(&self.statements.upsert_staged, &[])
                        .await
                        .map_err(pg_error)?;
                } else {
                    copy_rows(&tx, &self.sql.copy_records, plan).await?;
                }
                tx.execute(&self.statements.set_position, &[&lsn, &last_version])
                    .await
                    .map_err(pg_error)?;
            }
            for (name, value) in &plan.meta {
                match value {
                    Some(value) => {
                        let value: &[u8] = value.as_ref();
                        tx.execute(&self.statements.store_meta, &[name, &value])
                            .await
                    }
                    None => tx.execute(&self.statements.delete_meta, &[name]).await,
                }
                .map_err(pg_error)?;
            }
            Ok(())
        }
        .await;
        if let Err(e) = staged {
            // Dropping the transaction rolls it back; nothing of the group is written.
            drop(tx);
            return Err(Failure::RolledBack(e));
        }
        tx.commit().await.map_err(|e| Failure::Unknown(pg_error(e)))
    }

    /// One statement per range, in one transaction: nothing is left for another turn.
    async fn purge(&mut self, ranges: Vec<(Vec<u8>, Vec<u8>)>) -> Result<PurgeTurn, StoreError> {
        let tx = self.client.transaction().await.map_err(pg_error)?;
        let mut removed = 0u64;
        for (start, end) in ranges {
            removed += tx
                .execute(&self.statements.purge_range, &[&start, &end])
                .await
                .map_err(pg_error)?;
        }
        tx.commit().await.map_err(pg_error)?;
        Ok(PurgeTurn {
            removed,
            rest: Vec::new(),
        })
    }

    async fn trim(&mut self, upto: Lsn) -> Result<u64, StoreError> {
        // The log position row keeps the last LSN, so the LSN never goes back.
        let upto = lsn_to_sql(upto.min(self.next_lsn))?;
        self.client
            .execute(&self.statements.trim, &[&upto])
            .await
            .map_err(pg_error)
    }
}

type ChangeColumns<'a> = (Vec<i64>, Vec<i16>, Vec<i64>, Vec<&'a [u8]>);

fn change_columns(plan: &Plan) -> Result<ChangeColumns<'_>, StoreError> {
    let mut cols: ChangeColumns<'_> = (
        Vec::with_capacity(plan.changes.len()),
        Vec::with_capacity(plan.changes.len()),
        Vec::with_capacity(plan.changes.len()),
        Vec::with_capacity(plan.changes.len()),
    );
    for (lsn, op, version, row) in &plan.changes {
        cols.0.push(lsn_to_sql(*lsn)?);
        cols.1.push(op_to_sql(*op));
        cols.2.push(version_to_sql(*version));
        cols.3.push(plan.rows[*row].0.as_slice());
    }
    Ok(cols)
}

/// Sends a bulk group's change-log rows with binary `COPY`, straight into their table.
async fn copy_changes(
    tx: &tokio_postgres::Transaction<'_>,
    sql: &Sql,
    plan: &Plan,
) -> Result<(), StoreError> {
    let sink = tx.copy_in(&sql.copy_changes).await.map_err(pg_error)?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::INT2, Type::INT8, Type::BYTEA]);
    let mut writer = std::pin::pin!(writer);
    for (lsn, op, version, row) in &plan.changes {
        let values: [&(dyn ToSql + Sync); 4] = [
            &lsn_to_sql(*lsn)?,
            &op_to_sql(*op),
            &version_to_sql(*version),
            &plan.rows[*row].0.as_slice(),
        ];
        writer.as_mut().write(&values).await.map_err(pg_error)?;
    }
    writer.finish().await.map_err(pg_error)?;
    Ok(())
}

/// Sends a bulk group's final rows with binary `COPY` (`copy` names the table: the records
/// themselves when no row exists yet, else the staging table the caller upserts from).
async fn copy_rows(
    tx: &tokio_postgres::Transaction<'_>,
    copy: &str,
    plan: &Plan,
) -> Result<(), StoreError> {
    let sink = tx.copy_in(copy).await.map_err(pg_error)?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::BYTEA, Type::INT8, Type::BYTEA]);
    let mut writer = std::pin::pin!(writer);
    for (key, version, value) in &plan.rows {
        let values: [&(dyn ToSql + Sync); 3] = [
            &key.as_slice(),
            &version_to_sql(*version),
            &value.as_deref(),
        ];
        writer.as_mut().write(&values).await.map_err(pg_error)?;
    }
    writer.finish().await.map_err(pg_error)?;
    Ok(())
}

/// Whether the server answered with an error that left the session alive (so the statement's
/// implicit transaction rolled back). A FATAL or PANIC ends the session: whether a commit in
/// progress happened is then unknown.
fn answered_and_alive(e: &tokio_postgres::Error) -> bool {
    e.as_db_error()
        .is_some_and(|db| !matches!(db.severity(), "FATAL" | "PANIC"))
}

/// Why a group was not written: rolled back for sure, or lost at `COMMIT` (outcome unknown).
enum Failure {
    RolledBack(StoreError),
    Unknown(StoreError),
}

impl Failure {
    fn to_error(&self) -> StoreError {
        match self {
            Failure::RolledBack(e) => StoreError::Engine(format!("group rolled back: {e}")),
            Failure::Unknown(_) => StoreError::Poisoned,
        }
    }
}

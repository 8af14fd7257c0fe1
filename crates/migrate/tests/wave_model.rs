//! The wave state machine (`domicile_migrate::wave`) against a model: random interleavings of
//! client writes and deletes, single steps, crashes of the control plane (the wave reloaded from
//! its last checkpoint, some of them in the middle of a step) and rollback requests, between two
//! real region nodes; every acknowledged write must end up at the final owner, and nothing else.
//! Half of the cases have no rollback window, half a long one (they wait in Reversing).
//!
//! Reproducible: the seed is fixed and failures are not persisted; a failure is shrunk and
//! reported with its action list and a trace of what each action did. The situations the cases
//! met are printed (`--nocapture`), and the essential ones are asserted, so that a change to
//! the strategy cannot quietly stop exercising them.

use super::{cluster_client, hand_over, node};
use axum::http::StatusCode;
use domicile_client::region::RegionClient;
use domicile_core::{BucketCount, Epoch, RegionId};
use domicile_migrate::Mover;
use domicile_migrate::throttle::Throttle;
use domicile_migrate::wave::{self, Control, Interrupt, Step, Wave, WaveError, WaveSpec};
use domicile_wire::api::ErrorBody;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Client actions touch users `id0..id{USERS}` and keys `k0..k{KEYS}`.
const USERS: u8 = 6;
const KEYS: u8 = 8;
/// The seed covers more users, so that the copy spans more buckets than the writes touch.
const SEEDED_USERS: u8 = 16;
/// Cases per rollback window (zero, then one hour).
const CASES: u32 = 6;
const CRASH: &str = "injected crash";

#[derive(Debug, Clone)]
enum Action {
    /// A client write of a new value, sent to the range's owner in the committed table.
    Put { user: u8, key: u8 },
    /// A client delete, sent likewise.
    Delete { user: u8, key: u8 },
    /// A client read at the owner, checked against the model.
    Get { user: u8, key: u8 },
    /// The wave runs exactly one step.
    Step,
    /// One step, the control plane crashing just before or just after the `at`-th durable
    /// action (checkpoint or commit) of it; clients write while it is down (`while_down`), then
    /// it restarts and reloads the wave from its last checkpoint.
    StepCrashing {
        at: usize,
        after: bool,
        while_down: Vec<(u8, u8)>,
    },
    /// The control plane restarts between steps: the wave is reloaded from its last checkpoint.
    Crash,
    /// The operator asks for a rollback (saved at once, as the engine does).
    RollBack,
    /// In Reversing: one pull of the target's changes back to the source.
    ReversePass { checkpoint: bool },
}

/// An action, drawn with these weights: put, delete, get, step, crashing step, crash, rollback,
/// reverse pass.
fn action(w: [u32; 8]) -> impl Strategy<Value = Action> {
    let (u, k) = (0..USERS, 0..KEYS);
    prop_oneof![
        w[0] => (u.clone(), k.clone()).prop_map(|(user, key)| Action::Put { user, key }),
        w[1] => (u.clone(), k.clone()).prop_map(|(user, key)| Action::Delete { user, key }),
        w[2] => (u.clone(), k.clone()).prop_map(|(user, key)| Action::Get { user, key }),
        w[3] => Just(Action::Step),
        // The first durable action of most steps is their last; Copying checkpoints a chunk
        // first, CuttingOver and RollingBack commit first.
        w[4] => (
            prop_oneof![3 => Just(1usize), 1 => Just(2)],
            any::<bool>(),
            proptest::collection::vec((u, k), 1..=2),
        )
            .prop_map(|(at, after, while_down)| Action::StepCrashing { at, after, while_down }),
        w[5] => Just(Action::Crash),
        w[6] => Just(Action::RollBack),
        w[7] => any::<bool>().prop_map(|checkpoint| Action::ReversePass { checkpoint }),
    ]
}

/// 15 to 25 actions: a run-up that mostly drives the wave forward (with writes between its
/// steps), then a tail that mostly writes and reverses wherever the wave got to; and whether
/// the operator asks for a rollback after the last action (else one is rare).
fn case() -> impl Strategy<Value = (Vec<Action>, bool)> {
    (
        proptest::collection::vec(action([6, 2, 2, 10, 8, 2, 1, 2]), 8..=12),
        proptest::collection::vec(action([8, 4, 2, 4, 4, 2, 1, 6]), 7..=13),
        any::<bool>(),
    )
        .prop_map(|(mut actions, tail, roll_back_at_end)| {
            actions.extend(tail);
            (actions, roll_back_at_end)
        })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CrashAt {
    at: usize,
    after: bool,
}

/// The control plane's part, done by hand against the two region nodes: the last checkpoint
/// kept in memory (what a restarted control plane loads), the committed owner of the range, the
/// commit as release + own. It also pauses a run after one step and injects crashes.
struct Plane {
    source: RegionClient,
    target: RegionClient,
    saved: Mutex<Wave>,
    owner: Mutex<(RegionId, Epoch)>,
    /// Durable actions (checkpoints and commits) since the current run was armed.
    durable: AtomicUsize,
    /// Checkpoints since the current run was armed.
    checkpoints: AtomicUsize,
    one_step: AtomicBool,
    crash: Mutex<Option<CrashAt>>,
}

impl Plane {
    fn arm(&self, one_step: bool, crash: Option<CrashAt>) {
        self.durable.store(0, Ordering::SeqCst);
        self.checkpoints.store(0, Ordering::SeqCst);
        self.one_step.store(one_step, Ordering::SeqCst);
        *self.crash.lock().unwrap() = crash;
    }

    /// Counts a durable action; `Some(after)` if the control plane crashes at this one.
    fn crash_here(&self) -> Option<bool> {
        let n = self.durable.fetch_add(1, Ordering::SeqCst) + 1;
        let crash = *self.crash.lock().unwrap();
        crash.filter(|c| c.at == n).map(|c| c.after)
    }

    fn saved(&self) -> Wave {
        self.saved.lock().unwrap().clone()
    }

    fn committed_owner(&self) -> RegionId {
        self.owner.lock().unwrap().0.clone()
    }
}

impl Control for Plane {
    async fn checkpoint(&self, wave: &Wave) -> Result<(), String> {
        let crash = self.crash_here();
        if crash == Some(false) {
            return Err(CRASH.into());
        }
        *self.saved.lock().unwrap() = wave.clone();
        self.checkpoints.fetch_add(1, Ordering::SeqCst);
        if crash == Some(true) {
            return Err(CRASH.into());
        }
        Ok(())
    }

    async fn commit(&self, spec: &WaveSpec, owner: &RegionId) -> Result<Epoch, String> {
        let crash = self.crash_here();
        if crash == Some(false) {
            return Err(CRASH.into());
        }
        let epoch = hand_over(&self.source, &self.target, &self.owner, spec, owner).await?;
        if crash == Some(true) {
            return Err(CRASH.into());
        }
        Ok(epoch)
    }

    async fn owner(&self, _: &WaveSpec) -> Result<(RegionId, Epoch), String> {
        Ok(self.owner.lock().unwrap().clone())
    }

    fn interrupt(&self) -> Interrupt {
        if self.one_step.load(Ordering::SeqCst) && self.checkpoints.load(Ordering::SeqCst) >= 1 {
            Interrupt::Pause
        } else {
            Interrupt::None
        }
    }
}

/// One case: the two nodes, the wave as the running control plane holds it, and the model.
struct Case {
    http: reqwest::Client,
    source_url: String,
    target_url: String,
    plane: Plane,
    wave: Wave,
    mover: Mover,
    /// Every acknowledged write not deleted since: (user, key) → value.
    model: BTreeMap<(u8, u8), String>,
    values: u32,
    /// Notable situations the case met (for the coverage check).
    seen: BTreeSet<String>,
    trace: Vec<String>,
}

fn mover(http: &reqwest::Client, source_url: &str, target_url: &str, spec: &WaveSpec) -> Mover {
    Mover {
        source: RegionClient::new(source_url.to_string(), http.clone()),
        target: RegionClient::new(target_url.to_string(), http.clone()),
        scope: spec.scope(),
        buckets: BucketCount::DEFAULT,
        blob_collections: crate::reference_blob_collections(&spec.scope().service),
    }
}

fn path(base: &str, user: u8, key: u8) -> String {
    format!("{base}/v1/users/id{user}/orders/k{key}")
}

impl Case {
    async fn start(dir: &Path, rollback_window: Duration) -> Result<Self, TestCaseError> {
        std::fs::create_dir_all(dir).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (source_url, _) = node("cn-beijing", dir).await;
        let (target_url, _) = node("ap-singapore", dir).await;
        let http = cluster_client(dir);
        let mut model = BTreeMap::new();
        for user in 0..SEEDED_USERS {
            for key in (0..KEYS).filter(|k| (user * 3 + k) % 4 == 0) {
                let value = format!("seed {user}/{key}");
                let r = http
                    .put(path(&source_url, user, key))
                    .header("x-domicile-market", "ID")
                    .body(value.clone())
                    .send()
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(r.status(), StatusCode::OK);
                model.insert((user, key), value);
            }
        }
        let spec = WaveSpec {
            service: "ecommerce".parse().unwrap(),
            market: "ID".parse().unwrap(),
            buckets: BucketCount::DEFAULT.all(),
            source: "cn-beijing".parse().unwrap(),
            target: "ap-singapore".parse().unwrap(),
            epoch: Epoch(1),
            rollback_window,
        };
        let client = |u: &str| RegionClient::new(u.to_string(), http.clone());
        let wave = Wave::new(spec.clone());
        let plane = Plane {
            source: client(&source_url),
            target: client(&target_url),
            saved: Mutex::new(wave.clone()),
            owner: Mutex::new((spec.source.clone(), spec.epoch)),
            durable: AtomicUsize::new(0),
            checkpoints: AtomicUsize::new(0),
            one_step: AtomicBool::new(false),
            crash: Mutex::new(None),
        };
        Ok(Self {
            mover: mover(&http, &source_url, &target_url, &spec),
            http,
            source_url,
            target_url,
            plane,
            wave,
            model,
            values: 0,
            seen: BTreeSet::new(),
            trace: Vec::new(),
        })
    }

    fn fail(&self, what: impl std::fmt::Display) -> TestCaseError {
        TestCaseError::fail(format!(
            "{what}\n  wave: {:?}\n  trace:\n    {}",
            self.wave,
            self.trace.join("\n    ")
        ))
    }

    fn url_of(&self, region: &RegionId) -> &str {
        if *region == self.wave.spec.source {
            &self.source_url
        } else {
            &self.target_url
        }
    }

    /// The node the committed table names as the range's owner: where clients are sent.
    fn owner_url(&self) -> String {
        self.url_of(&self.plane.committed_owner()).to_string()
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<(StatusCode, String), TestCaseError> {
        let r = request
            .header("x-domicile-market", "ID")
            .send()
            .await
            .map_err(|e| self.fail(e))?;
        let status = r.status();
        let body = r.text().await.map_err(|e| self.fail(e))?;
        Ok((status, body))
    }

    /// A write refused by the owner: only because the range is fenced for a cutover.
    fn refused(&mut self, what: &str, body: &str) -> Result<(), TestCaseError> {
        let code = serde_json::from_str::<ErrorBody>(body)
            .map(|b| b.error.code)
            .map_err(|e| self.fail(format!("{what}: 421 with body {body:?}: {e}")))?;
        if code != "range_fenced" {
            return Err(self.fail(format!(
                "{what} refused by the owner in the committed table: {body}"
            )));
        }
        self.seen.insert("a write refused while fenced".into());
        Ok(())
    }

    async fn put(&mut self, user: u8, key: u8) -> Result<(), TestCaseError> {
        self.values += 1;
        let value = format!("v{}", self.values);
        let url = self.owner_url();
        let (status, body) = self
            .send(self.http.put(path(&url, user, key)).body(value.clone()))
            .await?;
        let what = format!("put id{user}/k{key}={value} at {url}");
        self.trace.push(format!("{what}: {status}"));
        match status {
            StatusCode::OK => {
                self.model.insert((user, key), value);
                Ok(())
            }
            StatusCode::MISDIRECTED_REQUEST => self.refused(&what, &body),
            _ => Err(self.fail(format!("{what}: {status} {body}"))),
        }
    }

    async fn delete(&mut self, user: u8, key: u8) -> Result<(), TestCaseError> {
        let url = self.owner_url();
        let (status, body) = self.send(self.http.delete(path(&url, user, key))).await?;
        let what = format!("delete id{user}/k{key} at {url}");
        self.trace.push(format!("{what}: {status}"));
        let modelled = self.model.get(&(user, key)).cloned();
        match (status, modelled) {
            (StatusCode::OK, Some(_)) => {
                self.model.remove(&(user, key));
                Ok(())
            }
            (StatusCode::NOT_FOUND, None) => Ok(()),
            (StatusCode::MISDIRECTED_REQUEST, _) => self.refused(&what, &body),
            (status, modelled) => Err(self.fail(format!(
                "{what}: {status} {body}, but the model holds {modelled:?}"
            ))),
        }
    }

    async fn get(&self, url: &str, user: u8, key: u8) -> Result<(), TestCaseError> {
        let (status, body) = self.send(self.http.get(path(url, user, key))).await?;
        let modelled = self.model.get(&(user, key));
        let agrees = match (status, modelled) {
            (StatusCode::OK, Some(v)) => body == *v,
            (StatusCode::NOT_FOUND, None) => true,
            _ => false,
        };
        if !agrees {
            return Err(self.fail(format!(
                "get id{user}/k{key} at {url}: {status} {body:?}, but the model holds {modelled:?}"
            )));
        }
        Ok(())
    }

    /// What a restarted control plane does: load the last checkpoint, make a new mover.
    fn restart(&mut self) {
        let lost = self.wave.step;
        self.wave = self.plane.saved();
        self.mover = mover(
            &self.http,
            &self.source_url,
            &self.target_url,
            &self.wave.spec,
        );
        if lost != self.wave.step {
            self.seen.insert(format!(
                "a crash went back from {lost:?} to {:?}",
                self.wave.step
            ));
        }
    }

    async fn step(
        &mut self,
        crash: Option<CrashAt>,
        while_down: &[(u8, u8)],
    ) -> Result<(), TestCaseError> {
        let before = self.wave.step;
        self.plane.arm(true, crash);
        let result = wave::run(
            &mut self.wave,
            &self.mover,
            &self.plane,
            &Throttle::new(None),
        )
        .await;
        self.plane.arm(false, None);
        match result {
            Ok(()) => {
                self.seen.insert(format!("reached {:?}", self.wave.step));
                self.trace
                    .push(format!("step {before:?} -> {:?}", self.wave.step));
                Ok(())
            }
            Err(WaveError::Control(e)) if e == CRASH => {
                let crash = crash.expect("crashes are only injected when asked for");
                let when = if crash.after { "after" } else { "before" };
                let what = format!("a crash {when} durable action {} of {before:?}", crash.at);
                self.trace.push(format!("step: {what}"));
                self.seen.insert(what);
                for &(user, key) in while_down {
                    self.put(user, key).await?;
                }
                self.restart();
                self.trace
                    .push(format!("restarted; reloaded {:?}", self.wave.step));
                Ok(())
            }
            Err(e) => Err(self.fail(format!("step {before:?}: {e}"))),
        }
    }

    async fn apply(&mut self, action: &Action) -> Result<(), TestCaseError> {
        match *action {
            Action::Put { user, key } => self.put(user, key).await,
            Action::Delete { user, key } => self.delete(user, key).await,
            Action::Get { user, key } => {
                let url = self.owner_url();
                self.get(&url, user, key).await
            }
            Action::Step => self.step(None, &[]).await,
            Action::StepCrashing {
                at,
                after,
                ref while_down,
            } => self.step(Some(CrashAt { at, after }), while_down).await,
            Action::Crash => {
                self.restart();
                self.trace
                    .push(format!("crash; reloaded {:?}", self.wave.step));
                Ok(())
            }
            Action::RollBack if self.wave.step.may_roll_back() => {
                let before = self.wave.step;
                let committed = self.plane.committed_owner() == self.wave.spec.target;
                self.seen.insert(format!(
                    "a rollback requested in {before:?}{}",
                    if committed { " after the commit" } else { "" }
                ));
                wave::request_rollback(&mut self.wave).map_err(|e| self.fail(e))?;
                self.plane
                    .checkpoint(&self.wave)
                    .await
                    .map_err(|e| self.fail(e))?;
                self.trace.push(format!("rollback requested in {before:?}"));
                Ok(())
            }
            Action::ReversePass { checkpoint } if self.wave.step == Step::Reversing => {
                let applied = wave::reverse_pass(&mut self.wave, &self.mover, Duration::ZERO)
                    .await
                    .map_err(|e| self.fail(format!("reverse pass: {e}")))?;
                if applied > 0 {
                    self.seen
                        .insert("a reverse pass that applied writes".into());
                }
                if checkpoint {
                    self.plane
                        .checkpoint(&self.wave)
                        .await
                        .map_err(|e| self.fail(e))?;
                }
                self.trace.push(format!(
                    "reverse pass: {applied} applied (checkpoint: {checkpoint})"
                ));
                Ok(())
            }
            Action::RollBack | Action::ReversePass { .. } => Ok(()),
        }
    }

    /// Runs the wave to its end (completing it if it waits in Reversing) and checks every node
    /// against the model. Returns the final step.
    async fn finish(&mut self) -> Result<Step, TestCaseError> {
        let before = self.wave.step;
        wave::run(
            &mut self.wave,
            &self.mover,
            &self.plane,
            &Throttle::new(None),
        )
        .await
        .map_err(|e| self.fail(format!("final run from {before:?}: {e}")))?;
        if self.wave.step == Step::Reversing {
            wave::complete(&mut self.wave, &self.mover, &self.plane)
                .await
                .map_err(|e| self.fail(format!("complete: {e}")))?;
        }
        self.trace
            .push(format!("final run {before:?} -> {:?}", self.wave.step));
        let spec = self.wave.spec.clone();
        let (owner, other, other_client) = match self.wave.step {
            Step::Completed => {
                if !self.wave.verified {
                    return Err(self.fail("completed without being verified"));
                }
                (&spec.target, &spec.source, &self.mover.source)
            }
            Step::RolledBack => (&spec.source, &spec.target, &self.mover.target),
            step => return Err(self.fail(format!("the wave ended in {step:?}"))),
        };
        if self.plane.committed_owner() != *owner {
            return Err(self.fail(format!(
                "the wave ended in {:?} but the table names {} as the owner",
                self.wave.step,
                self.plane.committed_owner()
            )));
        }
        if self.plane.saved() != self.wave {
            return Err(self.fail("the final state was not checkpointed"));
        }
        let owner_url = self.url_of(owner).to_string();
        for user in 0..SEEDED_USERS {
            for key in 0..KEYS {
                self.get(&owner_url, user, key).await?;
            }
        }
        let other_url = self.url_of(other).to_string();
        let (status, _) = self.send(self.http.get(path(&other_url, 0, 0))).await?;
        if status != StatusCode::MISDIRECTED_REQUEST {
            return Err(self.fail(format!("{other} still serves reads: {status}")));
        }
        let left = other_client
            .snapshot(&spec.scope())
            .await
            .map_err(|e| self.fail(e))?
            .next_batch(10)
            .await
            .map_err(|e| self.fail(e))?;
        if let Some(left) = left {
            return Err(self.fail(format!(
                "{other} still holds {} records of the scope, e.g. {:?}",
                left.len(),
                left[0]
            )));
        }
        Ok(self.wave.step)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_interleavings_of_writes_steps_crashes_and_rollbacks_lose_nothing() {
    let root = tempfile::tempdir().unwrap();
    let handle = tokio::runtime::Handle::current();
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        rng_algorithm: RngAlgorithm::ChaCha,
        max_shrink_iters: 200,
        ..Config::default()
    };
    // One fixed seed for both halves: the second runner's generator is drawn from the first's.
    let mut first = TestRunner::new_with_rng(
        config.clone(),
        TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]),
    );
    let second = TestRunner::new_with_rng(config, first.new_rng());
    let runs = AtomicUsize::new(0);
    let seen = Mutex::new(BTreeMap::<String, u32>::new());
    let strategy = case();
    // The runner is synchronous and each case drives async code: it runs off the worker.
    tokio::task::block_in_place(|| {
        for (window, mut runner) in [(Duration::ZERO, first), (Duration::from_secs(3600), second)] {
            let result = runner.run(&strategy, |(actions, roll_back_at_end)| {
                let n = runs.fetch_add(1, Ordering::SeqCst);
                let dir = root.path().join(format!("case{n}"));
                handle.block_on(async {
                    let mut case = Case::start(&dir, window).await?;
                    for action in &actions {
                        case.apply(action).await?;
                    }
                    if roll_back_at_end {
                        case.apply(&Action::RollBack).await?;
                    }
                    let end = case.finish().await?;
                    case.seen
                        .insert(format!("window {window:?}: ended {end:?}"));
                    let mut seen = seen.lock().unwrap();
                    for s in case.seen {
                        *seen.entry(s).or_default() += 1;
                    }
                    Ok(())
                })
            });
            if let Err(e) = result {
                panic!("rollback window {window:?}: {e}");
            }
        }
    });
    let seen = seen.into_inner().unwrap();
    for (situation, cases) in &seen {
        println!("{cases:>2} cases: {situation}");
    }
    // The seed is fixed: these are met every run. A change to the strategy that loses one of
    // them weakens the test, and fails it here.
    for situation in [
        "window 0ns: ended Completed",
        "window 0ns: ended RolledBack",
        "window 3600s: ended Completed",
        "window 3600s: ended RolledBack",
        "a rollback requested in Reversing after the commit",
        "a write refused while fenced",
        "a crash after durable action 1 of CuttingOver",
        "a crash before durable action 1 of CuttingOver",
    ] {
        assert!(
            seen.contains_key(situation),
            "no case met: {situation}; met: {seen:#?}"
        );
    }
}

/// Found by the property test above (with a check of `moved_records` against the model's
/// live records at the commit): with a zero rollback window the commit and the source's purge
/// were one step, so a crash between the purge and its checkpoint reloaded the wave in
/// CuttingOver, and the resumed step computed what moved from the source it had already purged —
/// a ledger entry saying nothing moved. The figures are now saved before the purge.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_the_purge_and_its_checkpoint_keeps_the_ledger_figures() {
    let dir = tempfile::tempdir().unwrap();
    let mut case = Case::start(dir.path(), Duration::ZERO).await.unwrap();
    for _ in 0..4 {
        case.apply(&Action::Step).await.unwrap();
    }
    assert_eq!(case.wave.step, Step::CuttingOver);
    let live = case.model.len() as u64;
    // Durable action 1 of the step is the commit, 2 the checkpoint after the purge.
    let crash = Action::StepCrashing {
        at: 2,
        after: false,
        while_down: Vec::new(),
    };
    case.apply(&crash).await.unwrap();
    assert_eq!(case.wave.step, Step::CuttingOver, "reloaded");
    assert_eq!(case.finish().await.unwrap(), Step::Completed);
    assert_eq!(case.wave.moved_records, live, "{:?}", case.wave);
    assert_eq!(case.wave.purged, live, "{:?}", case.wave);
}

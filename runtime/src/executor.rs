//! The executor: the one DAG engine over any [`Store`]. It starts runs, executes claimed tasks (conditions,
//! fan-out, templates, the step kind under a timeout), and commits each result together with the successors
//! it makes ready; it owns retries (SPEC section 5), dead letters, skips, failure handling and replays.

use crate::metrics::Metrics;
use crate::model::*;
use crate::store::{now_ms, Store, StoreError};
use serde_json::{json, Map, Value};
use sluice_connectors::egress::Egress;
use sluice_connectors::{Connector, Outcome, StepCx, StepError};
use sluice_engine::compile::{Plan, PlanStep};
use sluice_engine::model::{Condition, ErrorClass, ForEach};
use sluice_engine::template::{Ambient, Renderer, Scope};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Most items one `for_each` may fan out to (SPEC section 2).
pub const MAX_ITEMS: usize = 10_000;
/// Largest output a step may produce, serialized (SPEC section 2).
pub const MAX_OUTPUT: usize = 1024 * 1024;
/// Deepest nesting of a stored value (a trigger body, an output): stored documents wrap it a few levels
/// more and must read back under the JSON parser's limit of 128.
pub const MAX_DEPTH: usize = 64;

/// How deeply a value nests (a scalar is 0), without recursion.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|x| (x, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|x| (x, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Secrets of tenants, as templates see them (`secrets.NAME`).
#[async_trait::async_trait]
pub trait Secrets: Send + Sync {
    async fn for_tenant(&self, tenant: &str) -> Result<Arc<HashMap<String, String>>, StoreError>;
}

/// A fixed set of secrets for every tenant (`sluice run --secret NAME=VALUE`).
pub struct StaticSecrets(pub Arc<HashMap<String, String>>);

impl StaticSecrets {
    pub fn new(secrets: HashMap<String, String>) -> StaticSecrets {
        StaticSecrets(Arc::new(secrets))
    }
}

#[async_trait::async_trait]
impl Secrets for StaticSecrets {
    async fn for_tenant(&self, _tenant: &str) -> Result<Arc<HashMap<String, String>>, StoreError> {
        Ok(self.0.clone())
    }
}

/// How a run is started (see [`Executor::start`]).
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `(key, ttl)`: start nothing when a run of the tenant holds this key (see [`NewRun::dedup`]).
    pub dedup: Option<(String, Duration)>,
    /// Refuse when the tenant has this many runs queued or running.
    pub max_in_flight: Option<u32>,
}

/// What starting a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    New(String),
    /// The de-duplication key is held by this run: nothing was started.
    Duplicate(String),
    /// The tenant is at its limit of runs in flight: nothing was started.
    Full,
}

/// Where `emit` steps send their events: the tenant's pipelines with a matching `event` trigger.
#[async_trait::async_trait]
pub trait Events: Send + Sync {
    /// Starts the matching pipelines; answers the ids of the runs started.
    async fn emit(&self, tenant: &str, event_type: &str, id: &str, data: &Value) -> Result<Vec<String>, String>;
}

/// Events of a single pipeline run (`sluice run`): no other pipeline exists, so an event starts none.
pub struct NoOtherPipelines;

#[async_trait::async_trait]
impl Events for NoOtherPipelines {
    async fn emit(&self, _tenant: &str, _event_type: &str, _id: &str, _data: &Value) -> Result<Vec<String>, String> {
        Ok(Vec::new())
    }
}

/// Most steps one slot runs in a row through chained commits before it claims in turn again (so timers,
/// expired leases and other tenants are served).
pub const MAX_CHAIN: usize = 16;

struct ChainSlot {
    allowed: bool,
    /// The plan of the run being handled, so a chaining commit can name what the next task will read.
    plan: Option<Arc<Plan>>,
    next: Option<Claimed>,
    /// What the chaining commit read for the next task (its header and states), saving it a round trip.
    loaded: Option<(RunHeader, Vec<Option<StepState>>)>,
}

/// The state documents a task reads: its own, then its dependencies' (for `on_failure` steps every main
/// step's too).
fn load_keys(plan: &Plan, task: &TaskRef) -> Option<Vec<String>> {
    let step = plan.step(&task.step)?;
    let on_failure = plan.on_failure.iter().any(|s| s.id == task.step);
    let mut keys = vec![task.state_key()];
    if on_failure {
        keys.extend(plan.steps.iter().map(|s| s.id.clone()));
    }
    keys.extend(step.needs.iter().cloned());
    Some(keys)
}

tokio::task_local! {
    static CHAIN: RefCell<ChainSlot>;
}

/// Settings of an executor.
#[derive(Debug, Clone)]
pub struct Config {
    /// How long a claimed task stays leased without a heartbeat before another worker may run it.
    pub lease: Duration,
    pub egress: Egress,
}

impl Default for Config {
    fn default() -> Self {
        Config { lease: Duration::from_secs(30), egress: Egress::PublicOnly }
    }
}

/// Why an operation on runs failed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("no such run")]
    NoSuchRun,
    #[error("no such dead letter")]
    NoSuchDeadLetter,
    #[error("{0}")]
    Invalid(String),
}

/// The executor. Cheap to share (`Arc`); every worker of a process uses one.
pub struct Executor {
    store: Arc<dyn Store>,
    connectors: HashMap<&'static str, Arc<dyn Connector>>,
    renderer: Renderer,
    secrets: Arc<dyn Secrets>,
    events: Arc<dyn Events>,
    http: reqwest::Client,
    http_no_redirect: reqwest::Client,
    config: Config,
    plans: Mutex<HashMap<String, Arc<Plan>>>,
    finished: tokio::sync::broadcast::Sender<(String, String, RunStatus)>,
    metrics: Arc<Metrics>,
    tokens: Option<Arc<dyn sluice_connectors::TokenSource>>,
}

fn rfc3339(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", ulid::Ulid::new())
}

fn class_name(c: ErrorClass) -> String {
    c.as_str().to_string()
}

/// The result of one attempt, before it is committed.
enum Attempted {
    Done(Outcome),
    Failed(StepError),
}

impl Executor {
    pub fn new(
        store: Arc<dyn Store>,
        connectors: Vec<Arc<dyn Connector>>,
        secrets: Arc<dyn Secrets>,
        events: Arc<dyn Events>,
        config: Config,
    ) -> Result<Executor, String> {
        let http = sluice_connectors::egress::client(config.egress, true)?;
        let http_no_redirect = sluice_connectors::egress::client(config.egress, false)?;
        Ok(Executor {
            store,
            connectors: connectors.into_iter().map(|c| (c.name(), c)).collect(),
            renderer: Renderer::new(),
            secrets,
            events,
            http,
            http_no_redirect,
            config,
            plans: Mutex::new(HashMap::new()),
            finished: tokio::sync::broadcast::channel(4096).0,
            metrics: Arc::new(Metrics::new()),
            tokens: None,
        })
    }

    /// Where `auth: { connection }` gets its tokens (the server's and workers' connection manager).
    pub fn with_tokens(mut self, tokens: Arc<dyn sluice_connectors::TokenSource>) -> Executor {
        self.tokens = Some(tokens);
        self
    }

    /// Records into these metrics instead of the executor's own (a server shares one set).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Executor {
        self.metrics = metrics;
        self
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// `(tenant, run, status)` of every run this executor moved to a final status, as it happens. Runs that
    /// other processes finish are not seen here; read the store for those.
    pub fn finished_runs(&self) -> tokio::sync::broadcast::Receiver<(String, String, RunStatus)> {
        self.finished.subscribe()
    }

    /// Commits through the store and announces runs that this commit finished. A commit that releases the
    /// task being handled asks for the next ready task of its run (see [`Executor::handle`]).
    async fn commit(
        &self,
        tenant: &str,
        run: &str,
        claimed: Option<&Claimed>,
        mut c: Commit,
    ) -> Result<CommitResult, StoreError> {
        let chaining = claimed.filter(|_| c.release && CHAIN.try_with(|s| s.borrow().allowed).unwrap_or(false));
        if let Some(cl) = chaining {
            c.chain = Some((cl.worker.clone(), now_ms() + self.config.lease.as_millis() as u64));
            // What each task this commit may chain will read, so the commit reads it for the next step.
            if let Some(plan) = CHAIN.try_with(|s| s.borrow().plan.clone()).ok().flatten() {
                let tasks = c
                    .candidates
                    .iter()
                    .map(|(t, _)| t)
                    .chain(c.enqueue.iter())
                    .chain(c.finalize.iter().map(|(_, t)| t));
                c.chain_loads = tasks.filter_map(|t| Some((t.encode(), load_keys(&plan, t)?))).collect();
            }
        }
        let status = c
            .run
            .as_ref()
            .map(|(_, h)| h.status)
            .filter(|s| s.is_terminal())
            .or(c.finish.as_ref().map(|_| RunStatus::Succeeded));
        let started_ms =
            c.run.as_ref().map(|(_, h)| h.started_at_ms).or(c.finish.as_ref().map(|(_, h)| h.started_at_ms));
        let r = self.store.commit(tenant, run, claimed, c).await?;
        if r.stale {
            if let Some(cl) = claimed {
                tracing::warn!(tenant, run, step = %cl.task.step, worker = %cl.worker, "this worker's lease had expired and another worker took the step; its result is dropped");
            }
            return Ok(r);
        }
        if let (Some(status), true) = (status, r.run_written) {
            self.metrics.inc("sluice_runs_finished_total", &[("tenant", tenant), ("status", status.as_str())]);
            if let Some(ms) = started_ms {
                let secs = now_ms().saturating_sub(ms) as f64 / 1000.0;
                self.metrics.observe("sluice_run_duration_seconds", &[("tenant", tenant)], secs);
            }
            let _ = self.finished.send((tenant.to_string(), run.to_string(), status));
        }
        if let (Some(cl), Some(task)) = (chaining, r.chained.clone()) {
            let next = Claimed { tenant: cl.tenant.clone(), task, worker: cl.worker.clone() };
            let loaded = r.chained_load.clone();
            let _ = CHAIN.try_with(|s| {
                let mut s = s.borrow_mut();
                s.next = Some(next);
                s.loaded = loaded;
            });
        }
        Ok(r)
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn lease(&self) -> Duration {
        self.config.lease
    }

    /// Starts a run of `plan`: stores it with its trigger and makes its first steps runnable. The run is durable
    /// when this returns.
    pub async fn start_run(
        &self,
        tenant: &str,
        plan: &Plan,
        version: u32,
        trigger: Value,
    ) -> Result<String, ExecError> {
        match self.start(tenant, plan, version, trigger, &StartOptions::default()).await? {
            Started::New(id) | Started::Duplicate(id) => Ok(id),
            Started::Full => Err(ExecError::Invalid("the tenant has too many runs in flight".into())),
        }
    }

    /// Starts a run of `plan` unless its de-duplication key is held or the tenant is at its limit of runs in
    /// flight (one atomic step of the store). A started run is durable when this returns.
    pub async fn start(
        &self,
        tenant: &str,
        plan: &Plan,
        version: u32,
        trigger: Value,
        opts: &StartOptions,
    ) -> Result<Started, ExecError> {
        let id = new_id("run");
        let now = now_ms();
        let kind = trigger.get("kind").and_then(Value::as_str).unwrap_or("manual").to_string();
        let header = RunHeader {
            id: id.clone(),
            pipeline: plan.name.clone(),
            version,
            tenant: tenant.to_string(),
            status: RunStatus::Queued,
            trigger,
            started_at: rfc3339(now),
            started_at_ms: now,
            finished_at: None,
            error: None,
            reason: None,
        };
        let ready = plan.steps.iter().filter(|s| s.needs.is_empty()).map(|s| TaskRef::step(&id, &s.id)).collect();
        let plan_json = serde_json::to_value(plan).map_err(|e| ExecError::Invalid(e.to_string()))?;
        let mut new = NewRun::new(header, plan_json, ready);
        new.dedup = opts.dedup.as_ref().map(|(k, ttl)| (k.clone(), ttl.as_millis() as u64));
        new.max_in_flight = opts.max_in_flight;
        match self.store.create_run(tenant, &new).await? {
            Created::New => {}
            Created::Duplicate(first) => return Ok(Started::Duplicate(first)),
            Created::Full => return Ok(Started::Full),
        }
        self.metrics.inc("sluice_runs_started_total", &[("tenant", tenant), ("trigger", &kind)]);
        // This process's workers find the plan without reading it back (the snapshot is the same value).
        if let Ok(mut m) = self.plans.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(format!("{tenant}|{id}"), Arc::new(plan.clone()));
        }
        Ok(Started::New(id))
    }

    fn cache(&self, tenant: &str, run: &str, json: Option<Value>) -> Result<Option<Arc<Plan>>, StoreError> {
        let cache_key = format!("{tenant}|{run}");
        if let Some(p) = self.plans.lock().ok().and_then(|m| m.get(&cache_key).cloned()) {
            return Ok(Some(p));
        }
        let Some(json) = json else { return Ok(None) };
        let p: Plan = serde_json::from_value(json).map_err(|e| StoreError::Corrupt(format!("plan of {run}: {e}")))?;
        let p = Arc::new(p);
        if let Ok(mut m) = self.plans.lock() {
            if m.len() > 10_000 {
                m.clear();
            }
            m.insert(cache_key, p.clone());
        }
        Ok(Some(p))
    }

    /// A run's plan: from the cache, else from the store (a plan never changes once its run exists).
    async fn plan(&self, tenant: &str, run: &str) -> Result<Option<Arc<Plan>>, StoreError> {
        if let Some(p) = self.cache(tenant, run, None)? {
            return Ok(Some(p));
        }
        let json = self.store.plan(tenant, run).await?;
        self.cache(tenant, run, json)
    }

    /// A run's header (read now) and plan.
    async fn plan_of(&self, tenant: &str, run: &str) -> Result<Option<(RunHeader, Arc<Plan>)>, StoreError> {
        let Some((header, plan_json)) = self.store.run(tenant, run).await? else { return Ok(None) };
        Ok(self.cache(tenant, run, Some(plan_json))?.map(|p| (header, p)))
    }

    /// Runs one claimed task to its next durable state. Errors are store errors: the task stays claimed and runs
    /// again when its lease ends.
    ///
    /// A commit that makes the next step of the same run ready may hand it straight back (a chain): it runs
    /// here at once, up to [`MAX_CHAIN`] steps in a row, before this slot goes back to claiming in turn.
    pub async fn handle(&self, claimed: &Claimed) -> Result<(), StoreError> {
        let mut current = claimed.clone();
        let mut loaded = None;
        for hop in 1..=MAX_CHAIN {
            let slot =
                RefCell::new(ChainSlot { allowed: hop < MAX_CHAIN, plan: None, next: None, loaded: loaded.take() });
            let next = CHAIN
                .scope(slot, async {
                    self.handle_one(&current).await?;
                    Ok::<_, StoreError>(CHAIN.with(|s| {
                        let mut s = s.borrow_mut();
                        (s.next.take(), s.loaded.take())
                    }))
                })
                .await?;
            match next {
                (Some(n), l) => {
                    current = n;
                    loaded = l;
                }
                (None, _) => return Ok(()),
            }
        }
        Ok(())
    }

    async fn handle_one(&self, claimed: &Claimed) -> Result<(), StoreError> {
        let tenant = claimed.tenant.as_str();
        let task = &claimed.task;
        let release = |mut c: Commit| {
            c.release = true;
            c
        };
        let Some(plan) = self.plan(tenant, &task.run).await? else {
            self.commit(tenant, &claimed.task.run, Some(claimed), release(Commit::default())).await?;
            return Ok(());
        };
        let on_failure = plan.on_failure.iter().any(|s| s.id == task.step);
        let Some(step) = plan.step(&task.step).cloned() else {
            self.commit(tenant, &claimed.task.run, Some(claimed), release(Commit::default())).await?;
            return Ok(());
        };
        let keys = load_keys(&plan, task).unwrap_or_default();
        let read_ids: Vec<String> = keys.iter().skip(1).cloned().collect();
        let key = task.state_key();
        // One round trip: the header (a queued run becomes running), this task's state and what it reads;
        // none when the commit that chained this task read them already.
        let preloaded = CHAIN
            .try_with(|s| {
                let mut s = s.borrow_mut();
                s.plan = Some(plan.clone());
                s.loaded.take()
            })
            .ok()
            .flatten()
            .filter(|(_, states)| states.len() == keys.len());
        let loaded = match preloaded {
            Some(l) => Some(l),
            None => self.store.load(tenant, &task.run, &keys).await?,
        };
        let Some((header, mut loaded)) = loaded else {
            self.commit(tenant, &claimed.task.run, Some(claimed), release(Commit::default())).await?;
            return Ok(());
        };
        let dep_states = loaded.split_off(1.min(loaded.len()));
        let state = loaded.pop().flatten().unwrap_or_default();
        if state.status.is_terminal() {
            self.commit(tenant, &claimed.task.run, Some(claimed), release(Commit::default())).await?;
            return Ok(());
        }
        // A run that stopped cancels its remaining main steps; `on_failure` steps run only in a failed run.
        let stopped = !state.replayed
            && if on_failure { header.status != RunStatus::Failed } else { header.status.is_terminal() };
        if stopped {
            let status =
                if header.reason.as_deref() == Some("filtered") { StepStatus::Skipped } else { StepStatus::Cancelled };
            let mut c = Commit::default();
            match task.index {
                None => c.close.push((key, StepState { status, output: Value::Null, wait_until: None, ..state })),
                // A dropped item forgets it was enqueued, so a replay of the run enqueues it again.
                Some(_) => c.forget.push(task.clone()),
            }
            self.commit(tenant, &claimed.task.run, Some(claimed), release(c)).await?;
            return Ok(());
        }
        let now = now_ms();
        // A fanned-out step whose items are all done: its task came back to gather their outputs.
        if task.index.is_none() && state.status == StepStatus::Running && state.items.is_some() {
            return self.gather(claimed, &header, &plan, &step, state).await;
        }
        // A delay that is over.
        if state.status == StepStatus::Waiting && step.uses == "delay" {
            let until = state.wait_until.unwrap_or(0);
            if now + 1 >= until {
                return self.succeed(claimed, &header, &plan, &step, state, Value::Null, None).await;
            }
            let c = Commit { schedule: Some((task.clone(), until)), ..Commit::default() };
            self.commit(tenant, &claimed.task.run, Some(claimed), release(c)).await?;
            return Ok(());
        }

        let deps: HashMap<String, StepState> =
            read_ids.iter().cloned().zip(dep_states).map(|(k, v)| (k, v.unwrap_or_default())).collect();
        let secrets = self.secrets.for_tenant(tenant).await?;

        if task.index.is_none() {
            // Skip propagation: a step whose every dependency was skipped is skipped too.
            if !step.needs.is_empty()
                && step.needs.iter().all(|n| deps.get(n).is_some_and(|s| s.status == StepStatus::Skipped))
            {
                return self.skip(claimed, &header, &plan, &step, state, "every dependency was skipped").await;
            }
        }
        let attempt_no = state.attempts.len() as u32 + 1;
        if attempt_no == 1 && task.index.is_none() && step.needs.is_empty() {
            // A first step's first attempt: how long the run waited in the queue for a worker.
            let waited = now.saturating_sub(header.started_at_ms) as f64 / 1000.0;
            self.metrics.observe("sluice_queue_wait_seconds", &[("tenant", tenant)], waited);
        }
        let scope = self.scope(&header, &plan, &deps, &secrets, attempt_no, None);
        let amb = Ambient {
            now: chrono::DateTime::from_timestamp_millis(now as i64).unwrap_or_default(),
            seed: rand::random(),
        };

        if task.index.is_none() {
            if let Some(cond) = &step.condition {
                let truth = match cond {
                    Condition::Bool(b) => Ok(*b),
                    Condition::Expr(e) => self.renderer.condition(e, &scope(None), &amb),
                };
                match truth {
                    Ok(false) => return self.skip(claimed, &header, &plan, &step, state, "`if` was false").await,
                    Ok(true) => {}
                    Err(e) => {
                        let err = StepError::new(ErrorClass::Template, format!("`if`: {}", e.message));
                        return self.fail(claimed, &header, &plan, &step, state, now, err, Value::Null).await;
                    }
                }
            }
            if let Some(fe) = &step.for_each {
                return self.fan_out(claimed, &header, &plan, &step, state, fe, &scope(None), &amb, now).await;
            }
        }

        // An item of a `for_each`: its value comes from the list stored at fan-out.
        let item = match task.index {
            Some(i) => {
                let list_key = format!("{}@list", step.id);
                let list =
                    self.store.states(tenant, &task.run, &[list_key]).await?.pop().flatten().unwrap_or_default().output;
                Some((list.get(i as usize).cloned().unwrap_or(Value::Null), i))
            }
            None => None,
        };
        let scope = scope(item);
        // When the step was first tried: the event time of what it sends, the same on every retry.
        let first_ms = state
            .attempts
            .first()
            .and_then(|a| chrono::DateTime::parse_from_rfc3339(&a.started_at).ok())
            .and_then(|t| u64::try_from(t.timestamp_millis()).ok())
            .unwrap_or(now);
        let rendered = self.render_with(&step, &scope, &amb);
        let (with, attempted) = match rendered {
            Ok(with) => {
                // A `log` line goes to the process's log: it must not carry secrets (other kinds need them).
                let out = if step.uses == "log" {
                    let shown = sluice_engine::template::redact_json(
                        &with,
                        &secrets.values().map(String::as_str).collect::<Vec<_>>(),
                    );
                    self.attempt(claimed, &step, &shown, attempt_no, now, first_ms).await
                } else {
                    self.attempt(claimed, &step, &with, attempt_no, now, first_ms).await
                };
                (with, out)
            }
            Err(e) => (Value::Null, Attempted::Failed(e)),
        };
        let result = if matches!(attempted, Attempted::Done(_)) { "ok" } else { "error" };
        self.metrics.inc("sluice_attempts_total", &[("tenant", tenant), ("result", result)]);
        let took = now_ms().saturating_sub(now) as f64 / 1000.0;
        self.metrics.observe("sluice_attempt_duration_seconds", &[("tenant", tenant)], took);
        let redacted_with =
            sluice_engine::template::redact_json(&with, &secrets.values().map(String::as_str).collect::<Vec<_>>());
        match attempted {
            Attempted::Done(outcome) => {
                let mut state = state;
                state.attempts.push(Attempt {
                    number: attempt_no,
                    started_at: rfc3339(now),
                    finished_at: rfc3339(now_ms()),
                    error: None,
                });
                match outcome {
                    Outcome::Output(v) => {
                        let v = sluice_engine::template::redact_json(
                            &v,
                            &secrets.values().map(String::as_str).collect::<Vec<_>>(),
                        );
                        if depth(&v) > MAX_DEPTH {
                            state.attempts.pop();
                            let err = StepError::config(format!(
                                "the step's output nests deeper than {MAX_DEPTH} levels; flatten it (e.g. pick the fields you need with a transform)"
                            ));
                            return self.fail(claimed, &header, &plan, &step, state, now, err, redacted_with).await;
                        }
                        if serde_json::to_vec(&v).map_or(0, |b| b.len()) > MAX_OUTPUT {
                            state.attempts.pop();
                            let err = StepError::config(
                                "the step's output is larger than 1 MiB; a step's output may be at most 1 MiB",
                            );
                            return self.fail(claimed, &header, &plan, &step, state, now, err, redacted_with).await;
                        }
                        self.succeed(claimed, &header, &plan, &step, state, v, None).await
                    }
                    Outcome::Emit { id, event_type, data } => {
                        // The event becomes other runs' trigger, stored and shown: no secret goes with it.
                        let data = sluice_engine::template::redact_json(
                            &data,
                            &secrets.values().map(String::as_str).collect::<Vec<_>>(),
                        );
                        if let Err(e) = self.events.emit(tenant, &event_type, &id, &data).await {
                            state.attempts.pop();
                            let err = StepError::new(ErrorClass::Network, format!("emitting `{event_type}`: {e}"));
                            return self.fail(claimed, &header, &plan, &step, state, now, err, redacted_with).await;
                        }
                        self.succeed(claimed, &header, &plan, &step, state, Value::String(id), None).await
                    }
                    Outcome::Filtered => self.filtered(claimed, &header, &plan, &step, state).await,
                    Outcome::WaitUntil(until) => {
                        // The wait is one attempt in all: forget this entry, the final success records it.
                        state.attempts.pop();
                        self.park(claimed, state, StepStatus::Waiting, until).await
                    }
                }
            }
            Attempted::Failed(e) => {
                let e = StepError { message: scope.redact(&e.message), ..e };
                self.fail(claimed, &header, &plan, &step, state, now, e, redacted_with).await
            }
        }
    }

    /// The template scope of a step (SPEC section 3).
    fn scope<'a>(
        &'a self,
        header: &'a RunHeader,
        plan: &'a Plan,
        deps: &'a HashMap<String, StepState>,
        secrets: &'a HashMap<String, String>,
        attempt: u32,
        _unused: Option<()>,
    ) -> impl Fn(Option<(Value, u32)>) -> Scope + 'a {
        move |item| {
            let mut steps = Map::new();
            for (id, s) in deps {
                steps.insert(
                    id.clone(),
                    json!({ "output": s.output, "status": status_name(s.status), "attempts": s.attempts.len() }),
                );
            }
            let mut root = json!({
                "trigger": header.trigger,
                "steps": steps,
                "vars": plan.vars,
                "secrets": secrets,
                "run": {
                    "id": header.id, "pipeline": header.pipeline, "version": header.version,
                    "tenant": header.tenant, "started_at": header.started_at, "attempt": attempt,
                },
            });
            if let Some(err) = &header.error {
                root["error"] = json!({ "step": err.step, "class": err.class, "message": err.message });
            }
            if let Some((v, i)) = item {
                root["item"] = v;
                root["index"] = json!(i);
            }
            Scope::new(root)
        }
    }

    fn render_with(&self, step: &PlanStep, scope: &Scope, amb: &Ambient) -> Result<Value, StepError> {
        let exprs = self.connectors.get(step.uses.as_str()).map_or(&[][..], |c| c.expression_fields());
        let mut out = Map::new();
        for (k, v) in step.with.as_object().into_iter().flatten() {
            let rendered = match v {
                Value::String(s) if exprs.contains(&k.as_str()) => self
                    .renderer
                    .condition(s, scope, amb)
                    .map(Value::Bool)
                    .map_err(|e| StepError::new(ErrorClass::Template, format!("`{k}`: {}", e.message)))?,
                other => self
                    .renderer
                    .render_tree(other, scope, amb)
                    .map_err(|e| StepError::new(ErrorClass::Template, format!("`with.{k}`: {}", e.message)))?,
            };
            out.insert(k.clone(), rendered);
        }
        Ok(Value::Object(out))
    }

    /// Runs the kind once under the attempt's timeout, renewing the lease meanwhile.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        claimed: &Claimed,
        step: &PlanStep,
        with: &Value,
        attempt: u32,
        now: u64,
        first_ms: u64,
    ) -> Attempted {
        let Some(kind) = self.connectors.get(step.uses.as_str()).cloned() else {
            return Attempted::Failed(StepError::config(format!("unknown step kind `{}`", step.uses)));
        };
        let timeout = with
            .get("timeout")
            .and_then(Value::as_str)
            .and_then(sluice_engine::model::Duration::parse)
            .map_or(step.timeout.0, |d| d.0);
        let task = &claimed.task;
        let idempotency_key = match task.index {
            Some(i) => format!("{}:{}:{i}", task.run, task.step),
            None => format!("{}:{}", task.run, task.step),
        };
        let cx = StepCx {
            tenant: claimed.tenant.clone(),
            run_id: task.run.clone(),
            step_id: task.step.clone(),
            index: task.index,
            attempt,
            idempotency_key,
            http: self.http.clone(),
            http_no_redirect: self.http_no_redirect.clone(),
            egress: self.config.egress,
            timeout,
            now_ms: now,
            first_attempt_ms: first_ms,
            tokens: self.tokens.clone(),
        };
        let run = kind.run(&cx, with.clone());
        let lease_ms = self.config.lease.as_millis() as u64;
        let renew_every = (self.config.lease / 3).max(Duration::from_millis(100));
        let heartbeat = async {
            let mut tick = tokio::time::interval(renew_every);
            tick.tick().await;
            loop {
                tick.tick().await;
                match self.store.extend(&claimed.worker, std::slice::from_ref(claimed), lease_ms).await {
                    // The lease went to another worker (this one stalled past it): stop; the commit that
                    // follows is refused as stale, and the other worker's run of the step counts.
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, run = %task.run, step = %task.step, "cannot renew the lease"),
                }
            }
        };
        let timed = tokio::time::timeout(timeout, run);
        tokio::select! {
            r = timed => match r {
                Ok(Ok(outcome)) => Attempted::Done(outcome),
                Ok(Err(e)) => Attempted::Failed(e),
                Err(_) => Attempted::Failed(StepError::new(ErrorClass::Timeout, format!("the attempt took longer than its timeout of {}", sluice_engine::model::Duration(timeout)))),
            },
            () = heartbeat => Attempted::Failed(StepError::new(ErrorClass::Network, "this worker lost the step's lease; another worker runs it")),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn fan_out(
        &self,
        claimed: &Claimed,
        header: &RunHeader,
        plan: &Plan,
        step: &PlanStep,
        state: StepState,
        fe: &ForEach,
        scope: &Scope,
        amb: &Ambient,
        now: u64,
    ) -> Result<(), StoreError> {
        let list = match fe {
            ForEach::List(items) => Ok(Value::Array(items.clone())),
            ForEach::Template(t) => self
                .renderer
                .render(t, scope, amb)
                .map_err(|e| StepError::new(ErrorClass::Template, format!("`for_each`: {}", e.message))),
        };
        let items = match list {
            Ok(Value::Array(items)) => items,
            Ok(other) => {
                let err = StepError::new(
                    ErrorClass::Template,
                    format!("`for_each` must yield a list, found {}", kind_of(&other)),
                );
                return self.fail(claimed, header, plan, step, state, now, err, Value::Null).await;
            }
            Err(e) => return self.fail(claimed, header, plan, step, state, now, e, Value::Null).await,
        };
        if items.len() > MAX_ITEMS {
            let err =
                StepError::config(format!("`for_each` yielded {} items; at most {MAX_ITEMS} are allowed", items.len()));
            return self.fail(claimed, header, plan, step, state, now, err, Value::Null).await;
        }
        if items.is_empty() {
            return self.succeed(claimed, header, plan, step, state, Value::Array(Vec::new()), None).await;
        }
        let n = items.len() as u32;
        let window = step.concurrency.max(1).min(n);
        let run = &claimed.task.run;
        let c = Commit {
            states: vec![
                (step.id.clone(), StepState { status: StepStatus::Running, items: Some(n), ..state }),
                (
                    format!("{}@list", step.id),
                    StepState { status: StepStatus::Succeeded, output: Value::Array(items), ..StepState::default() },
                ),
            ],
            enqueue: (0..window).map(|i| TaskRef::item(run, &step.id, i)).collect(),
            release: true,
            guarded: true,
            ..Commit::default()
        };
        self.commit(&claimed.tenant, &claimed.task.run, Some(claimed), c).await?;
        Ok(())
    }

    /// Commits a success: the step (or item) and the successors it makes ready; finishes the run when it was
    /// the last step.
    #[allow(clippy::too_many_arguments)]
    async fn succeed(
        &self,
        claimed: &Claimed,
        header: &RunHeader,
        plan: &Plan,
        step: &PlanStep,
        mut state: StepState,
        output: Value,
        reason: Option<String>,
    ) -> Result<(), StoreError> {
        state.status = StepStatus::Succeeded;
        state.output = output;
        state.wait_until = None;
        state.reason = reason;
        self.metrics.inc("sluice_steps_total", &[("tenant", &claimed.tenant), ("status", "succeeded")]);
        match claimed.task.index {
            None => {
                let c = Commit {
                    states: vec![(step.id.clone(), state)],
                    terminal: vec![step.id.clone()],
                    candidates: self.candidates(plan, &claimed.task.run, &step.id),
                    finish: self.finish_for(plan, header, &step.id),
                    release: true,
                    ..Commit::default()
                };
                self.commit(&claimed.tenant, &claimed.task.run, Some(claimed), c).await?;
                Ok(())
            }
            Some(i) => self.item_finished(claimed, step, i, state, None).await,
        }
    }

    /// An item is done (succeeded, or failed with `continue_on_error`): start the next, finish the step when
    /// it was the last.
    async fn item_finished(
        &self,
        claimed: &Claimed,
        step: &PlanStep,
        index: u32,
        state: StepState,
        dead_letter: Option<DeadLetter>,
    ) -> Result<(), StoreError> {
        let tenant = claimed.tenant.as_str();
        let run = claimed.task.run.as_str();
        let total = self
            .store
            .states(tenant, run, std::slice::from_ref(&step.id))
            .await?
            .pop()
            .flatten()
            .and_then(|s| s.items)
            .unwrap_or(0);
        let next = index + step.concurrency.max(1);
        // The item that completes the set also queues the step's own task, in the same atomic commit, to
        // gather the outputs: a crash between the two cannot strand the step.
        let c = Commit {
            states: vec![(claimed.task.state_key(), state)],
            item_done: Some((step.id.clone(), index)),
            enqueue: if next < total { vec![TaskRef::item(run, &step.id, next)] } else { Vec::new() },
            finalize: Some((total, TaskRef::step(run, &step.id))),
            dead_letter,
            release: true,
            ..Commit::default()
        };
        self.commit(tenant, &claimed.task.run, Some(claimed), c).await?;
        Ok(())
    }

    /// Every item of a `for_each` step is done: the step's output is the list of item outputs, in item order.
    async fn gather(
        &self,
        claimed: &Claimed,
        header: &RunHeader,
        plan: &Plan,
        step: &PlanStep,
        state: StepState,
    ) -> Result<(), StoreError> {
        let tenant = claimed.tenant.as_str();
        let run = claimed.task.run.as_str();
        let total = state.items.unwrap_or(0);
        let keys: Vec<String> = (0..total).map(|i| state_key(&step.id, Some(i))).collect();
        let items = self.store.states(tenant, run, &keys).await?;
        if !items.iter().all(|s| s.as_ref().is_some_and(|s| s.status.is_terminal())) {
            // Not every item is done (a duplicate of this task): the last item queues it again.
            self.commit(tenant, run, Some(claimed), Commit { release: true, ..Commit::default() }).await?;
            return Ok(());
        }
        let outputs: Vec<Value> = items.iter().map(|s| s.as_ref().map_or(Value::Null, |s| s.output.clone())).collect();
        let step_state = StepState {
            status: StepStatus::Succeeded,
            output: Value::Array(outputs),
            attempts: Vec::new(),
            items: Some(total),
            ..state
        };
        let c = Commit {
            states: vec![(step.id.clone(), step_state)],
            terminal: vec![step.id.clone()],
            candidates: self.candidates(plan, run, &step.id),
            finish: self.finish_for(plan, header, &step.id),
            release: true,
            ..Commit::default()
        };
        self.commit(tenant, run, Some(claimed), c).await?;
        Ok(())
    }

    /// The steps waiting for `done`, each with everything it waits for.
    fn candidates(&self, plan: &Plan, run: &str, done: &str) -> Vec<(TaskRef, Vec<String>)> {
        plan.dependants(done)
            .into_iter()
            .map(|s| (TaskRef::step(run, &s.id), s.needs.iter().filter(|n| *n != done).cloned().collect()))
            .collect()
    }

    /// For a main step that no main step waits for: the header the run gets when this step was the last to
    /// become terminal (the store checks the count atomically with the commit).
    fn finish_for(&self, plan: &Plan, header: &RunHeader, step: &str) -> Option<(Vec<String>, RunHeader)> {
        let main = plan.steps.iter().any(|s| s.id == step);
        let sink = !plan.steps.iter().any(|s| s.needs.iter().any(|n| n == step));
        (main && sink).then(|| {
            let mut done = header.clone();
            done.status = RunStatus::Succeeded;
            done.finished_at = Some(rfc3339(now_ms()));
            // The main steps by name: `on_failure` steps share the terminal set and must not count.
            (plan.steps.iter().map(|s| s.id.clone()).collect(), done)
        })
    }

    async fn skip(
        &self,
        claimed: &Claimed,
        header: &RunHeader,
        plan: &Plan,
        step: &PlanStep,
        state: StepState,
        why: &str,
    ) -> Result<(), StoreError> {
        self.metrics.inc("sluice_steps_total", &[("tenant", &claimed.tenant), ("status", "skipped")]);
        let c = Commit {
            states: vec![(
                step.id.clone(),
                StepState { status: StepStatus::Skipped, output: Value::Null, reason: Some(why.into()), ..state },
            )],
            terminal: vec![step.id.clone()],
            candidates: self.candidates(plan, &claimed.task.run, &step.id),
            finish: self.finish_for(plan, header, &step.id),
            release: true,
            ..Commit::default()
        };
        self.commit(&claimed.tenant, &claimed.task.run, Some(claimed), c).await?;
        Ok(())
    }

    /// `filter` said no: the run succeeds with reason `filtered`; steps not yet finished are skipped.
    async fn filtered(
        &self,
        claimed: &Claimed,
        header: &RunHeader,
        plan: &Plan,
        step: &PlanStep,
        mut state: StepState,
    ) -> Result<(), StoreError> {
        state.status = StepStatus::Succeeded;
        state.output = Value::Null;
        state.reason = Some("filtered".into());
        let mut c = Commit {
            states: vec![(step.id.clone(), state)],
            terminal: vec![step.id.clone()],
            release: true,
            ..Commit::default()
        };
        // A filter stops its part of the pipeline: the main steps (the run succeeds as `filtered`), or, in
        // `on_failure`, the failure handlers (the run stays failed).
        let on_failure = plan.on_failure.iter().any(|s| s.id == step.id);
        let rest = if on_failure { &plan.on_failure } else { &plan.steps };
        let all = self.store.all_states(&claimed.tenant, &claimed.task.run).await?;
        let known: HashMap<&str, &StepState> = all.iter().map(|(k, s)| (k.as_str(), s)).collect();
        for s in rest {
            if s.id != step.id && !known.get(s.id.as_str()).is_some_and(|st| st.status.is_terminal()) {
                let prev = known.get(s.id.as_str()).map(|st| (*st).clone()).unwrap_or_default();
                c.close.push((
                    s.id.clone(),
                    StepState {
                        status: StepStatus::Skipped,
                        output: Value::Null,
                        reason: Some("filtered".into()),
                        ..prev
                    },
                ));
            }
        }
        if !on_failure {
            let mut done = header.clone();
            done.status = RunStatus::Succeeded;
            done.reason = Some("filtered".into());
            done.finished_at = Some(rfc3339(now_ms()));
            c.run = Some((RunStatus::Running, done));
        }
        self.commit(&claimed.tenant, &claimed.task.run, Some(claimed), c).await?;
        Ok(())
    }

    /// Puts a task aside until `at` (a retry, a delay): its state says why, a timer brings it back, and no
    /// worker holds it meanwhile. Guarded: a step the failing run closed meanwhile stays closed.
    async fn park(
        &self,
        claimed: &Claimed,
        mut state: StepState,
        status: StepStatus,
        at: u64,
    ) -> Result<(), StoreError> {
        state.status = status;
        state.wait_until = Some(at);
        let c = Commit {
            states: vec![(claimed.task.state_key(), state)],
            schedule: Some((claimed.task.clone(), at)),
            release: true,
            guarded: true,
            ..Commit::default()
        };
        self.commit(&claimed.tenant, &claimed.task.run, Some(claimed), c).await?;
        Ok(())
    }

    /// A failed attempt: retried per the step's policy, or failed for good (a dead letter), failing the run
    /// unless `continue_on_error`.
    #[allow(clippy::too_many_arguments)]
    async fn fail(
        &self,
        claimed: &Claimed,
        header: &RunHeader,
        plan: &Plan,
        step: &PlanStep,
        mut state: StepState,
        started: u64,
        err: StepError,
        inputs: Value,
    ) -> Result<(), StoreError> {
        let tenant = claimed.tenant.as_str();
        let task = &claimed.task;
        let finished = now_ms();
        let number = state.attempts.len() as u32 + 1;
        let error = ErrorRecord { class: class_name(err.class), message: err.message.clone() };
        state.attempts.push(Attempt {
            number,
            started_at: rfc3339(started),
            finished_at: rfc3339(finished),
            error: Some(error.clone()),
        });
        // Counted from the last replay, which gives a step its whole retry budget again.
        let relative = number.saturating_sub(state.attempt_base).max(1);
        if step.retry.retries(err.class, relative) {
            let delay = step.retry.delay_ms(relative, state.last_delay_ms, rand::random::<f64>(), err.retry_after_ms);
            let at = finished + delay;
            state.last_delay_ms = Some(delay);
            self.park(claimed, state, StepStatus::Retrying, at).await?;
            self.metrics.inc("sluice_retries_total", &[("tenant", tenant)]);
            tracing::info!(tenant, run = %task.run, step = %task.step, attempt = number, delay_ms = delay, class = %error.class, "step failed; retrying");
            return Ok(());
        }
        let dl = DeadLetter {
            id: new_id("dl"),
            tenant: tenant.to_string(),
            run_id: task.run.clone(),
            step: task.step.clone(),
            index: task.index,
            inputs,
            error: error.clone(),
            attempts: state.attempts.clone(),
            created_at: rfc3339(finished),
        };
        tracing::warn!(tenant, run = %task.run, step = %task.step, class = %error.class, "step failed for good: {}", error.message);
        self.metrics.inc("sluice_dead_letters_total", &[("tenant", tenant)]);
        self.metrics.inc("sluice_steps_total", &[("tenant", tenant), ("status", "failed")]);
        state.status = StepStatus::Failed;
        state.output = Value::Null;
        state.wait_until = None;
        state.dead_letter = Some(dl.id.clone());
        if step.continue_on_error {
            // Counts as finished: the run goes on.
            return match task.index {
                Some(i) => self.item_finished(claimed, step, i, state, Some(dl)).await,
                None => {
                    let c = Commit {
                        states: vec![(step.id.clone(), state)],
                        terminal: vec![step.id.clone()],
                        candidates: self.candidates(plan, &task.run, &step.id),
                        finish: self.finish_for(plan, header, &step.id),
                        dead_letter: Some(dl),
                        release: true,
                        ..Commit::default()
                    };
                    self.commit(tenant, &claimed.task.run, Some(claimed), c).await?;
                    Ok(())
                }
            };
        }
        let on_failure = plan.on_failure.iter().any(|s| s.id == step.id);
        let mut c = Commit { dead_letter: Some(dl), release: true, ..Commit::default() };
        c.states.push((task.state_key(), state.clone()));
        if task.index.is_some() {
            let step_state = self
                .store
                .states(tenant, &task.run, std::slice::from_ref(&step.id))
                .await?
                .pop()
                .flatten()
                .unwrap_or_default();
            c.states.push((
                step.id.clone(),
                StepState {
                    status: StepStatus::Failed,
                    output: Value::Null,
                    dead_letter: state.dead_letter.clone(),
                    ..step_state
                },
            ));
        }
        c.terminal.push(step.id.clone());
        if on_failure {
            // An `on_failure` step failing ends only itself; its dependants still run.
            c.candidates = self.candidates(plan, &task.run, &step.id);
            self.commit(tenant, &claimed.task.run, Some(claimed), c).await?;
            return Ok(());
        }
        // The run fails: steps not finished are cancelled (the store keeps any that finished meanwhile),
        // `on_failure` steps start.
        let all = self.store.all_states(tenant, &task.run).await?;
        let known: HashMap<&str, &StepState> = all.iter().map(|(k, s)| (k.as_str(), s)).collect();
        for s in &plan.steps {
            if s.id != step.id && !known.get(s.id.as_str()).is_some_and(|st| st.status.is_terminal()) {
                let prev = known.get(s.id.as_str()).map(|st| (*st).clone()).unwrap_or_default();
                c.close.push((
                    s.id.clone(),
                    StepState { status: StepStatus::Cancelled, output: Value::Null, wait_until: None, ..prev },
                ));
            }
        }
        let mut failed = header.clone();
        failed.status = RunStatus::Failed;
        failed.error = Some(RunError { step: step.id.clone(), class: error.class, message: error.message });
        failed.finished_at = Some(rfc3339(finished));
        c.run = Some((RunStatus::Running, failed));
        c.enqueue =
            plan.on_failure.iter().filter(|s| s.needs.is_empty()).map(|s| TaskRef::step(&task.run, &s.id)).collect();
        self.commit(tenant, &claimed.task.run, Some(claimed), c).await?;
        Ok(())
    }

    /// Cancels a run: its remaining steps are cancelled as workers reach them.
    pub async fn cancel(&self, tenant: &str, run: &str) -> Result<RunStatus, ExecError> {
        // The status may move under us (a worker starts the run): compare against what is there, again.
        for _ in 0..5 {
            let (header, _) = self.plan_of(tenant, run).await?.ok_or(ExecError::NoSuchRun)?;
            if header.status.is_terminal() {
                return Ok(header.status);
            }
            let mut cancelled = header.clone();
            cancelled.status = RunStatus::Cancelled;
            cancelled.finished_at = Some(rfc3339(now_ms()));
            let r = self
                .commit(tenant, run, None, Commit { run: Some((header.status, cancelled)), ..Commit::default() })
                .await?;
            if r.run_written {
                return Ok(RunStatus::Cancelled);
            }
        }
        let (now, _) = self.plan_of(tenant, run).await?.ok_or(ExecError::NoSuchRun)?;
        Ok(now.status)
    }

    /// Replays a dead letter: the step runs again (same idempotency key), the run goes back to running and
    /// continues downstream; steps that had succeeded are not run again.
    pub async fn replay(&self, tenant: &str, dead_letter: &str) -> Result<String, ExecError> {
        let dl = self.store.dead_letter(tenant, dead_letter).await?.ok_or(ExecError::NoSuchDeadLetter)?;
        let (header, plan) = self.plan_of(tenant, &dl.run_id).await?.ok_or(ExecError::NoSuchRun)?;
        let all = self.store.all_states(tenant, &dl.run_id).await?;
        let states: HashMap<&str, &StepState> = all.iter().map(|(k, s)| (k.as_str(), s)).collect();
        let run = dl.run_id.as_str();
        // The replayed task: pending, with its whole retry budget, allowed to run in a finished run.
        let again = |key: &str| {
            let prev = states.get(key).map(|s| (*s).clone()).unwrap_or_default();
            StepState {
                status: StepStatus::Pending,
                output: Value::Null,
                dead_letter: None,
                wait_until: None,
                attempt_base: prev.attempts.len() as u32,
                replayed: true,
                ..prev
            }
        };
        let mut c = Commit::default();
        let task = TaskRef { run: dl.run_id.clone(), step: dl.step.clone(), index: dl.index };
        c.states.push((task.state_key(), again(&task.state_key())));
        // Did this step fail the run? Then the run goes back to running and what the failure cancelled runs
        // again. Otherwise (a `continue_on_error` step, an `on_failure` step) only the step runs again and
        // the run keeps its status: its dependants ran already and are not run again.
        let failed_here =
            header.status == RunStatus::Failed && header.error.as_ref().is_some_and(|e| e.step == dl.step);
        if failed_here {
            let mut reopen = vec![TaskRef::step(run, &dl.step)];
            if let Some(failed) = dl.index {
                reopen.push(task.clone());
                if let Some(step_state) = states.get(dl.step.as_str()) {
                    let st = StepState { status: StepStatus::Running, dead_letter: None, ..(*step_state).clone() };
                    c.states.push((dl.step.clone(), st));
                }
                // Items that did not finish run again; ones still queued or running are not doubled (their
                // enqueued mark stands), ones a stopped run dropped were forgotten and go again.
                let total = states.get(dl.step.as_str()).and_then(|s| s.items).unwrap_or(0);
                for i in (0..total).filter(|i| *i != failed) {
                    if !states.get(state_key(&dl.step, Some(i)).as_str()).is_some_and(|s| s.status.is_terminal()) {
                        c.enqueue.push(TaskRef::item(run, &dl.step, i));
                    }
                }
            }
            // A step is started afresh (fanning out again if it is a `for_each`).
            let afresh = |c: &mut Commit, reopen: &mut Vec<TaskRef>, id: &str| {
                let prev = states.get(id).map(|s| (*s).clone()).unwrap_or_default();
                for i in 0..prev.items.unwrap_or(0) {
                    c.states.push((state_key(id, Some(i)), StepState::default()));
                    reopen.push(TaskRef::item(run, id, i));
                }
                c.states.push((id.to_string(), StepState { attempts: prev.attempts, ..StepState::default() }));
                reopen.push(TaskRef::step(run, id));
            };
            let cancelled: Vec<&PlanStep> = plan
                .steps
                .iter()
                .filter(|s| {
                    s.id != dl.step && states.get(s.id.as_str()).is_some_and(|st| st.status == StepStatus::Cancelled)
                })
                .collect();
            let reopened: Vec<&str> = cancelled.iter().map(|s| s.id.as_str()).chain([dl.step.as_str()]).collect();
            for s in &cancelled {
                afresh(&mut c, &mut reopen, &s.id);
                let ready = s.needs.iter().all(|n| {
                    !reopened.contains(&n.as_str()) && states.get(n.as_str()).is_some_and(|st| st.status.is_terminal())
                });
                if ready {
                    c.enqueue.push(TaskRef::step(run, &s.id));
                }
            }
            // The failure handlers run again if the run fails again.
            for s in &plan.on_failure {
                afresh(&mut c, &mut reopen, &s.id);
            }
            c.reopen = reopen;
            let mut running = header.clone();
            running.status = RunStatus::Running;
            running.error = None;
            running.finished_at = None;
            running.reason = None;
            c.run = Some((header.status, running));
        }
        c.schedule = Some((task, 0));
        c.remove_dead_letter = Some(dl.id.clone());
        let r = self.commit(tenant, run, None, c).await?;
        if r.stale {
            // Another replay of this dead letter came first.
            return Err(ExecError::NoSuchDeadLetter);
        }
        Ok(dl.run_id)
    }

    /// The run record of SPEC section 6.
    pub async fn record(&self, tenant: &str, run: &str) -> Result<Value, ExecError> {
        let (header, plan) = self.plan_of(tenant, run).await?.ok_or(ExecError::NoSuchRun)?;
        let all = self.store.all_states(tenant, run).await?;
        let states: HashMap<&str, &StepState> = all.iter().map(|(k, s)| (k.as_str(), s)).collect();
        let mut steps = Map::new();
        for s in plan.steps.iter().chain(plan.on_failure.iter()) {
            let st = states.get(s.id.as_str()).map(|s| (*s).clone()).unwrap_or_default();
            let mut rec = json!({ "status": status_name(st.status), "output": st.output, "attempts": st.attempts });
            if let Some(dl) = &st.dead_letter {
                rec["dead_letter"] = json!(dl);
            }
            if let Some(r) = &st.reason {
                rec["reason"] = json!(r);
            }
            if let Some(n) = st.items {
                let items: Vec<Value> = (0..n)
                    .map(|i| {
                        let it = states.get(state_key(&s.id, Some(i)).as_str()).map(|s| (*s).clone()).unwrap_or_default();
                        json!({ "index": i, "status": status_name(it.status), "output": it.output, "attempts": it.attempts })
                    })
                    .collect();
                rec["items"] = Value::Array(items);
            }
            steps.insert(s.id.clone(), rec);
        }
        let mut out = json!({
            "id": header.id, "pipeline": header.pipeline, "version": header.version, "tenant": header.tenant,
            "status": header.status.as_str(), "trigger": header.trigger, "started_at": header.started_at,
            "finished_at": header.finished_at, "error": header.error, "steps": steps,
        });
        if let Some(r) = &header.reason {
            out["reason"] = json!(r);
        }
        Ok(out)
    }

    /// Whether a run is over: terminal, and (when failed) with its `on_failure` steps finished.
    pub async fn is_finished(&self, tenant: &str, run: &str) -> Result<bool, ExecError> {
        let (header, plan) = self.plan_of(tenant, run).await?.ok_or(ExecError::NoSuchRun)?;
        if !header.status.is_terminal() {
            return Ok(false);
        }
        if header.status != RunStatus::Failed || plan.on_failure.is_empty() {
            return Ok(true);
        }
        let ids: Vec<String> = plan.on_failure.iter().map(|s| s.id.clone()).collect();
        let states = self.store.states(tenant, run, &ids).await?;
        Ok(states.iter().all(|s| s.as_ref().is_some_and(|s| s.status.is_terminal())))
    }
}

pub fn status_name(s: StepStatus) -> &'static str {
    match s {
        StepStatus::Pending => "pending",
        StepStatus::Running => "running",
        StepStatus::Retrying => "retrying",
        StepStatus::Waiting => "waiting",
        StepStatus::Succeeded => "succeeded",
        StepStatus::Failed => "failed",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

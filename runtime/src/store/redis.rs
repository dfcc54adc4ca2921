//! The Redis store: many `sluice serve` and `sluice worker` processes share it.
//!
//! Every key of a tenant carries the hash tag `{t:<tenant>}` and every Lua script touches one tenant's keys
//! only, so Redis Cluster needs no redesign. One script claims a task (promoting due timers and expired leases
//! on the way) and one commits a step's result with the successors it makes ready. Tenants are served in turn
//! through the `sl:{g}:active` sorted set (score: when the tenant next has work); workers wake on a pub/sub
//! message instead of polling. Connection errors are returned, and the caller retries; nothing panics.

use super::{now_ms, Result, Store, StoreError};
use crate::model::{
    Claimed, Commit, CommitResult, Created, DeadLetter, NewRun, RunHeader, RunQuery, StepState, TaskRef,
};
use async_trait::async_trait;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The tenant rotation: tenant -> when its next work is due (ms). Global keys share the hash tag `{g}`.
pub(crate) const ACTIVE: &str = "sl:{g}:active";
/// Every tenant that ever had work, for housekeeping.
pub(crate) const TENANTS: &str = "sl:{g}:tenants";
/// Per tenant, the earliest due time announced since it was last picked (see `settle.lua`).
pub(crate) const DUE: &str = "sl:{g}:due";
/// The pub/sub channel that wakes idle workers.
const WAKE: &str = "sl:wake";
/// How long a worker holds a picked tenant before the rotation offers it to others again.
const HOLD_MS: u64 = 5_000;

pub(crate) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Redis(e.to_string())
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// The run's status is its own field (scripts change it without rewriting the header); it wins over the
/// header's copy.
fn with_status(mut h: RunHeader, status: &str) -> Result<RunHeader> {
    h.status = serde_json::from_value(Value::String(status.to_string()))
        .map_err(|e| StoreError::Corrupt(format!("run status {status:?}: {e}")))?;
    Ok(h)
}

/// `{ status, header, state documents... }` as the `load` and `commit` scripts answer it.
fn loaded(out: Vec<Option<String>>) -> Result<Option<(RunHeader, Vec<Option<StepState>>)>> {
    let mut out = out.into_iter();
    let (Some(Some(status)), Some(Some(header))) = (out.next(), out.next()) else { return Ok(None) };
    let header = with_status(parse(&header)?, &status)?;
    let states = out.map(|d| d.map(|d| parse(&d)).transpose()).collect::<Result<Vec<_>>>()?;
    Ok(Some((header, states)))
}

/// Key names of one tenant, all in one hash slot.
pub(crate) struct Keys {
    base: String,
}

impl Keys {
    pub(crate) fn new(tenant: &str) -> Keys {
        Keys { base: format!("sl:{{t:{tenant}}}") }
    }
    fn ready(&self) -> String {
        format!("{}:ready", self.base)
    }
    fn timers(&self) -> String {
        format!("{}:timers", self.base)
    }
    fn inflight(&self) -> String {
        format!("{}:inflight", self.base)
    }
    fn run(&self, run: &str) -> String {
        format!("{}:run:{run}", self.base)
    }
    fn run_part(&self, run: &str, part: &str) -> String {
        format!("{}:run:{run}:{part}", self.base)
    }
    fn dead_letters(&self) -> String {
        format!("{}:dl", self.base)
    }
    fn rate(&self, name: &str) -> String {
        format!("{}:rl:{name}", self.base)
    }
    fn dead_letter_index(&self) -> String {
        format!("{}:dlidx", self.base)
    }
    /// Run ids, all at score 0 so they sort by id (a ULID: by start time).
    fn runs(&self) -> String {
        format!("{}:runs", self.base)
    }
    /// Runs counted against the tenant's limit of runs in flight.
    fn live(&self) -> String {
        format!("{}:live", self.base)
    }
    fn dedup(&self, key: &str) -> String {
        format!("{}:dedup:{key}", self.base)
    }
    /// The prefix of every run hash: `run_prefix() + id` is `run(id)`.
    fn run_prefix(&self) -> String {
        format!("{}:run:", self.base)
    }
    pub(crate) fn base(&self) -> &str {
        &self.base
    }
}

/// The Redis store.
pub struct RedisStore {
    pub(crate) conn: ConnectionManager,
    claim: Script,
    commit: Script,
    create: Script,
    extend: Script,
    load: Script,
    announce: Script,
    pick: Script,
    settle: Script,
    probe: Script,
    rate: Script,
    list: Script,
    notify: Arc<Notify>,
    generation: Arc<AtomicU64>,
    retention: Duration,
}

impl RedisStore {
    /// Connects to `url` (`redis://host:port/db`). The connection reconnects by itself after errors.
    pub async fn connect(url: &str) -> Result<RedisStore> {
        let client = redis::Client::open(url).map_err(err)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_response_timeout(Some(Duration::from_secs(10)))
            .set_connection_timeout(Some(Duration::from_secs(5)));
        let conn = ConnectionManager::new_with_config(client.clone(), config).await.map_err(err)?;
        let notify = Arc::new(Notify::new());
        let generation = Arc::new(AtomicU64::new(0));
        tokio::spawn(listen(client, notify.clone(), generation.clone()));
        Ok(RedisStore {
            conn,
            claim: Script::new(include_str!("lua/claim.lua")),
            commit: Script::new(include_str!("lua/commit.lua")),
            create: Script::new(include_str!("lua/create.lua")),
            extend: Script::new(include_str!("lua/extend.lua")),
            load: Script::new(include_str!("lua/load.lua")),
            announce: Script::new(include_str!("lua/announce.lua")),
            pick: Script::new(include_str!("lua/pick.lua")),
            settle: Script::new(include_str!("lua/settle.lua")),
            probe: Script::new(include_str!("lua/probe.lua")),
            rate: Script::new(include_str!("lua/rate.lua")),
            list: Script::new(include_str!("lua/list.lua")),
            notify,
            generation,
            retention: super::DEFAULT_RETENTION,
        })
    }

    /// How long finished runs are kept (default 7 days).
    pub fn with_retention(mut self, retention: Duration) -> RedisStore {
        self.retention = retention;
        self
    }

    /// Announces work of `tenant` due at `at_ms`: the tenant enters the rotation; idle workers wake when the
    /// tenant's next work moved earlier.
    async fn announce(&self, tenant: &str, at_ms: u64) -> Result<()> {
        self.idempotent(|mut c| async move {
            self.announce
                .key(ACTIVE)
                .key(TENANTS)
                .key(DUE)
                .arg(at_ms)
                .arg(tenant)
                .arg(WAKE)
                .invoke_async::<i64>(&mut c)
                .await
        })
        .await
        .map(|_| ())
    }

    /// Runs an idempotent operation, and once more when the connection dropped under it (the manager has
    /// reconnected by then), so a Redis restart or a killed connection costs a caller nothing.
    pub(crate) async fn idempotent<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(ConnectionManager) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match f(self.conn.clone()).await {
            Err(e) if e.is_connection_dropped() || e.is_io_error() || e.is_connection_refusal() => {
                tracing::debug!(error = %e, "redis connection dropped; trying again");
                tokio::time::sleep(Duration::from_millis(50)).await;
                f(self.conn.clone()).await.map_err(err)
            }
            r => r.map_err(err),
        }
    }
}

/// Wakes local waiters on every `sl:wake` message; resubscribes after connection errors.
async fn listen(client: redis::Client, notify: Arc<Notify>, generation: Arc<AtomicU64>) {
    loop {
        match client.get_async_pubsub().await {
            Ok(mut ps) => {
                if ps.subscribe(WAKE).await.is_ok() {
                    let mut msgs = ps.on_message();
                    while msgs.next().await.is_some() {
                        generation.fetch_add(1, Ordering::SeqCst);
                        notify.notify_waiters();
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "redis pub/sub unavailable; retrying"),
        }
        // Lost the subscription: wake everyone once (work may have arrived meanwhile), then resubscribe.
        generation.fetch_add(1, Ordering::SeqCst);
        notify.notify_waiters();
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[async_trait]
impl Store for RedisStore {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn create_run(&self, tenant: &str, run: &NewRun) -> Result<Created> {
        let k = Keys::new(tenant);
        let header = serde_json::to_string(&run.header).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let plan = serde_json::to_string(&run.plan).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let ready: Vec<String> = run.ready.iter().map(TaskRef::encode).collect();
        let id = &run.header.id;
        let (dedup_key, ttl) = match &run.dedup {
            Some((key, ttl)) => (k.dedup(key), *ttl),
            None => (k.dedup(""), 0),
        };
        // The index keeps run ids at most as long as the longest a run can be kept.
        let keep = self.retention.max(super::DEAD_LETTER_RETENTION).as_millis() as u64;
        let oldest = format!("run_{}", ulid::Ulid::from_parts(now_ms().saturating_sub(keep), 0));
        // Creating a run is idempotent (same id, same documents; tasks pushed once; a held key that names
        // this run counts as stored), so it is safe to retry.
        let (code, first): (i64, String) = self
            .idempotent(|mut c| {
                let mut inv = self.create.prepare_invoke();
                inv.key(k.ready())
                    .key(k.run(id))
                    .key(k.run_part(id, "enq"))
                    .key(k.runs())
                    .key(k.live())
                    .key(&dedup_key);
                inv.arg(run.header.status.as_str()).arg(&header).arg(&plan).arg(&run.header.pipeline).arg(id);
                inv.arg(ttl).arg(run.max_in_flight.unwrap_or(0)).arg(k.run_prefix()).arg(&oldest);
                for t in &ready {
                    inv.arg(t);
                }
                async move { inv.invoke_async::<(i64, String)>(&mut c).await }
            })
            .await?;
        match code {
            1 => {
                // The run is stored: a failed announcement must not answer an error (a client would retry
                // and start it twice); housekeeping puts the tenant back in the rotation.
                if let Err(e) = self.announce(tenant, now_ms()).await {
                    tracing::warn!(tenant, run = %id, "stored a run but could not announce it (housekeeping will): {e}");
                }
                Ok(Created::New)
            }
            2 => Ok(Created::Duplicate(first)),
            _ => Ok(Created::Full),
        }
    }

    async fn list_runs(&self, tenant: &str, q: &RunQuery) -> Result<(Vec<RunHeader>, Option<String>)> {
        let k = Keys::new(tenant);
        let limit = q.limit.clamp(1, 1000);
        let out: Vec<String> = self
            .idempotent(|mut c| {
                let mut inv = self.list.prepare_invoke();
                inv.key(k.runs()).arg(k.run_prefix()).arg(q.before.as_deref().unwrap_or(""));
                inv.arg(limit).arg(q.pipeline.as_deref().unwrap_or("")).arg(q.status.map_or("", |s| s.as_str()));
                async move { inv.invoke_async::<Vec<String>>(&mut c).await }
            })
            .await?;
        let mut it = out.into_iter();
        let next = it.next().filter(|n| !n.is_empty());
        let mut runs = Vec::new();
        while let (Some(status), Some(header)) = (it.next(), it.next()) {
            runs.push(with_status(parse(&header)?, &status)?);
        }
        Ok((runs, next))
    }

    async fn queue_depth(&self, tenant: &str) -> Result<u64> {
        let k = Keys::new(tenant);
        let (ready, timers): (u64, u64) = self
            .idempotent(|mut c| {
                let (r, t) = (k.ready(), k.timers());
                async move { redis::pipe().llen(r).zcard(t).query_async(&mut c).await }
            })
            .await?;
        Ok(ready + timers)
    }

    async fn claim(&self, worker: &str, lease_ms: u64) -> Result<Option<Claimed>> {
        let mut c = self.conn.clone();
        for _ in 0..8 {
            let now = now_ms();
            // Hold the tenant due first while claiming from it; whoever adds work meanwhile lowers its score
            // again, and a worker that dies here leaves it held for HOLD_MS only: nothing is stranded.
            let (tenant, held): (Option<String>, i64) =
                self.pick.key(ACTIVE).key(DUE).arg(now).arg(HOLD_MS).invoke_async(&mut c).await.map_err(err)?;
            let Some(tenant) = tenant else { return Ok(None) };
            let k = Keys::new(&tenant);
            let (task, next): (Option<String>, i64) = self
                .claim
                .key(k.ready())
                .key(k.timers())
                .key(k.inflight())
                .arg(now)
                .arg(now + lease_ms)
                .arg(worker)
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            self.settle
                .key(ACTIVE)
                .key(DUE)
                .arg(&tenant)
                .arg(held)
                .arg(next)
                .invoke_async::<i64>(&mut c)
                .await
                .map_err(err)?;
            if let Some(t) = task {
                let task = TaskRef::decode(&t).ok_or_else(|| StoreError::Corrupt(format!("task {t:?}")))?;
                return Ok(Some(Claimed { tenant, task, worker: worker.to_string() }));
            }
        }
        Ok(None)
    }

    async fn wait_for_work(&self, max: Duration) {
        let seen = self.generation.load(Ordering::SeqCst);
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.generation.load(Ordering::SeqCst) != seen {
            return;
        }
        let mut c = self.conn.clone();
        let first: redis::RedisResult<Vec<(String, f64)>> = c.zrange_withscores(ACTIVE, 0, 0).await;
        let wait = match first.ok().and_then(|v| v.into_iter().next()) {
            Some((_, at)) => Duration::from_millis((at as i64 - now_ms() as i64).max(0) as u64).min(max),
            None => max,
        };
        if wait.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(wait, notified).await;
    }

    async fn extend(&self, worker: &str, claims: &[Claimed], lease_ms: u64) -> Result<u32> {
        let mut c = self.conn.clone();
        let until = now_ms() + lease_ms;
        let mut held = 0;
        for cl in claims {
            let k = Keys::new(&cl.tenant);
            held += self
                .extend
                .key(k.inflight())
                .arg(until)
                .arg(format!("{worker}\t{}", cl.task.encode()))
                .invoke_async::<u32>(&mut c)
                .await
                .map_err(err)?;
        }
        Ok(held)
    }

    async fn run(&self, tenant: &str, run: &str) -> Result<Option<(RunHeader, Value)>> {
        let k = Keys::new(tenant);
        let key = k.run(run);
        let (status, header, plan): (Option<String>, Option<String>, Option<String>) = self
            .idempotent(|mut c| {
                let key = key.clone();
                async move { redis::cmd("HMGET").arg(key).arg("status").arg("header").arg("plan").query_async(&mut c).await }
            })
            .await?;
        match (status, header, plan) {
            (Some(s), Some(h), Some(p)) => Ok(Some((with_status(parse(&h)?, &s)?, parse(&p)?))),
            _ => Ok(None),
        }
    }

    async fn plan(&self, tenant: &str, run: &str) -> Result<Option<Value>> {
        let key = Keys::new(tenant).run(run);
        let plan: Option<String> = self
            .idempotent(|mut c| {
                let key = key.clone();
                async move { c.hget(key, "plan").await }
            })
            .await?;
        plan.map(|p| parse(&p)).transpose()
    }

    async fn load(
        &self,
        tenant: &str,
        run: &str,
        keys: &[String],
    ) -> Result<Option<(RunHeader, Vec<Option<StepState>>)>> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let mut inv = self.load.key(k.run(run));
        inv.key(k.run_part(run, "states"));
        for key in keys {
            inv.arg(key);
        }
        let out: Vec<Option<String>> = inv.invoke_async(&mut c).await.map_err(err)?;
        loaded(out)
    }

    async fn states(&self, tenant: &str, run: &str, keys: &[String]) -> Result<Vec<Option<StepState>>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let key = Keys::new(tenant).run_part(run, "states");
        let docs: Vec<Option<String>> = self
            .idempotent(|mut c| {
                let key = key.clone();
                async move { redis::cmd("HMGET").arg(key).arg(keys).query_async(&mut c).await }
            })
            .await?;
        docs.into_iter().map(|d| d.map(|d| parse(&d)).transpose()).collect()
    }

    async fn all_states(&self, tenant: &str, run: &str) -> Result<Vec<(String, StepState)>> {
        let key = Keys::new(tenant).run_part(run, "states");
        let all: Vec<(String, String)> = self
            .idempotent(|mut c| {
                let key = key.clone();
                async move { c.hgetall(key).await }
            })
            .await?;
        all.into_iter().map(|(key, d)| Ok((key, parse(&d)?))).collect()
    }

    async fn commit(&self, tenant: &str, run_id: &str, claimed: Option<&Claimed>, cm: Commit) -> Result<CommitResult> {
        let now = now_ms();
        let to_json = |v: &dyn erased::Ser| v.json();
        let mut states = Vec::new();
        for (key, s) in &cm.states {
            states.push(json!([key, to_json(s)?]));
        }
        let mut close = Vec::new();
        for (key, st) in &cm.close {
            close.push(json!([key, to_json(st)?]));
        }
        let candidates: Vec<Value> = cm.candidates.iter().map(|(t, deps)| json!([t.encode(), deps])).collect();
        let woke_at = match &cm.schedule {
            Some((_, at)) if cm.enqueue.is_empty() && cm.candidates.is_empty() => (*at).max(now),
            _ => now,
        };
        let mut payload = json!({
            "now": now,
            "states": states,
            "terminal": cm.terminal,
            "close": close,
            "forget": cm.forget.iter().map(TaskRef::encode).collect::<Vec<_>>(),
            "guarded": cm.guarded,
            "candidates": candidates,
            "enqueue": cm.enqueue.iter().map(TaskRef::encode).collect::<Vec<_>>(),
            "reopen": cm.reopen.iter().map(|t| json!([t.encode(), t.step, t.index.map_or(-1, i64::from)])).collect::<Vec<_>>(),
        });
        if let Some((step, idx)) = &cm.item_done {
            payload["item_done"] = json!([step, idx]);
        }
        if let Some((t, at)) = &cm.schedule {
            payload["schedule"] = json!([t.encode(), at]);
        }
        if let Some((expected, header)) = &cm.run {
            payload["run"] = json!([expected.as_str(), header.status.as_str(), to_json(header)?]);
        }
        if let Some(dl) = &cm.dead_letter {
            payload["dead_letter"] = json!([dl.id, now, to_json(dl)?]);
        }
        if let Some((items, task)) = &cm.finalize {
            payload["finalize"] = json!([items, task.encode()]);
        }
        if let Some((worker, until)) = &cm.chain {
            payload["chain"] = json!([worker, until]);
            if !cm.chain_loads.is_empty() {
                payload["chain_loads"] = json!(cm.chain_loads);
            }
        }
        if let Some((total, header)) = &cm.finish {
            payload["finish"] = json!([total, to_json(header)?]);
        }
        if let Some(id) = &cm.remove_dead_letter {
            payload["remove_dead_letter"] = json!(id);
        }
        if let (true, Some(cl)) = (cm.release, claimed) {
            payload["release"] = json!(format!("{}\t{}", cl.worker, cl.task.encode()));
        }
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let (items_done, written, pushed, chained, stale, load): (
            u32,
            i64,
            i64,
            Option<String>,
            i64,
            Option<Vec<Option<String>>>,
        ) = self
            .commit
            .key(k.ready())
            .key(k.timers())
            .key(k.inflight())
            .key(k.run(run_id))
            .key(k.run_part(run_id, "states"))
            .key(k.run_part(run_id, "terminal"))
            .key(k.run_part(run_id, "enq"))
            .key(k.run_part(run_id, "items"))
            .key(k.run_part(run_id, "itemcount"))
            .key(k.dead_letters())
            .key(k.dead_letter_index())
            .arg(payload.to_string())
            .arg(self.retention.as_millis() as u64)
            .arg(super::DEAD_LETTER_RETENTION.as_millis() as u64)
            .invoke_async(&mut c)
            .await
            .map_err(err)?;
        if pushed > 0 {
            self.announce(tenant, woke_at).await?;
        }
        let chained = chained
            .map(|t| TaskRef::decode(&t).ok_or_else(|| StoreError::Corrupt(format!("task {t:?}"))))
            .transpose()?;
        let chained_load = match load {
            Some(docs) => loaded(docs)?,
            None => None,
        };
        Ok(CommitResult { items_done, run_written: written == 1, chained, chained_load, stale: stale == 1 })
    }

    async fn dead_letters_page(&self, tenant: &str, before: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let limit = limit.clamp(1, 10_000);
        // The index scores dead letters by creation time; ids (ULIDs) order those of the same millisecond.
        let max = match before {
            Some(id) => {
                let score: Option<f64> = c.zscore(k.dead_letter_index(), id).await.map_err(err)?;
                match score {
                    Some(s) => s.to_string(),
                    // The cursor's dead letter went (replayed): its id carries its time.
                    None => ulid::Ulid::from_string(id.trim_start_matches("dl_"))
                        .map(|u| u.timestamp_ms().to_string())
                        .unwrap_or_else(|_| "+inf".into()),
                }
            }
            None => "+inf".into(),
        };
        let ids: Vec<String> = redis::cmd("ZREVRANGEBYSCORE")
            .arg(k.dead_letter_index())
            .arg(&max)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 64)
            .query_async(&mut c)
            .await
            .map_err(err)?;
        let mut ids: Vec<String> = ids.into_iter().filter(|id| before.is_none_or(|b| id.as_str() < b)).collect();
        ids.sort_by(|a, b| b.cmp(a));
        ids.truncate(limit);
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let docs: Vec<Option<String>> =
            redis::cmd("HMGET").arg(k.dead_letters()).arg(&ids).query_async(&mut c).await.map_err(err)?;
        docs.into_iter().flatten().map(|d| parse(&d)).collect()
    }

    async fn dead_letter(&self, tenant: &str, id: &str) -> Result<Option<DeadLetter>> {
        let k = Keys::new(tenant);
        let doc: Option<String> = self
            .idempotent(|mut c| {
                let key = k.dead_letters();
                async move { c.hget(key, id).await }
            })
            .await?;
        doc.map(|d| parse(&d)).transpose()
    }

    async fn rate_limit(&self, tenant: &str, name: &str, rate: f64, burst: u32) -> Result<Option<Duration>> {
        let key = Keys::new(tenant).rate(name);
        let wait: u64 = self
            .idempotent(|mut c| {
                let key = key.clone();
                async move { self.rate.key(key).arg(now_ms()).arg(rate).arg(burst.max(1)).invoke_async(&mut c).await }
            })
            .await?;
        Ok((wait > 0).then(|| Duration::from_millis(wait)))
    }

    async fn housekeeping(&self) -> Result<u64> {
        // Finished runs expire by themselves. What is left: tenants with work that a crash between a commit
        // and its announcement left out of the rotation go back in.
        let mut c = self.conn.clone();
        let mut tenants: Vec<String> = c.smembers(TENANTS).await.map_err(err)?;
        // Tenants of the catalog too: a first run whose announcement failed left its tenant out of the set.
        let known: Vec<String> = c.hkeys(crate::catalog::redis::TENANT_DOCS).await.map_err(err)?;
        tenants.extend(known);
        tenants.sort();
        tenants.dedup();
        for tenant in tenants {
            let k = Keys::new(&tenant);
            let next: i64 = self
                .probe
                .key(k.ready())
                .key(k.timers())
                .key(k.inflight())
                .arg(now_ms())
                .invoke_async(&mut c)
                .await
                .map_err(err)?;
            if next >= 0 {
                self.announce(&tenant, next as u64).await?;
            }
        }
        Ok(0)
    }

    async fn commands_executed(&self) -> Result<u64> {
        let mut c = self.conn.clone();
        let info: String = redis::cmd("INFO").arg("commandstats").query_async(&mut c).await.map_err(err)?;
        Ok(info
            .lines()
            .filter_map(|l| {
                l.split_once(":calls=").and_then(|(_, rest)| rest.split(',').next()).and_then(|n| n.parse::<u64>().ok())
            })
            .sum())
    }
}

/// Serializing the documents of a commit to JSON text.
mod erased {
    use super::{Result, StoreError};
    pub trait Ser {
        fn json(&self) -> Result<String>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn json(&self) -> Result<String> {
            serde_json::to_string(self).map_err(|e| StoreError::Corrupt(e.to_string()))
        }
    }
}

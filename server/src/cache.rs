//! What a server caches of the catalog: key owners, tenant records and compiled pipelines. The catalog's
//! generation is polled every [`POLL`]; when another process changed anything, everything is dropped and
//! read again on demand. Changes made by this process drop it at once.

use crate::Shared;
use sluice_engine::compile::Plan;
use sluice_engine::model::Trigger;
use sluice_runtime::catalog::Tenant;
use sluice_runtime::StoreError;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the catalog's generation is read: a change made through another server applies here within it.
pub const POLL: Duration = Duration::from_millis(500);

/// Entries kept at most per map; past it the map starts over (a flood of wrong keys cannot grow it).
const MAX_ENTRIES: usize = 10_000;

/// The oldest an entry may be: a backstop for a change whose generation bump was lost.
pub const MAX_AGE: Duration = Duration::from_secs(5);

/// A pipeline's latest version, compiled.
#[derive(Debug)]
pub struct Loaded {
    pub version: u32,
    pub plan: Arc<Plan>,
}

/// A tenant's pipelines, and its webhook paths.
#[derive(Debug, Default)]
pub struct TenantPipelines {
    pub by_name: HashMap<String, Arc<Loaded>>,
    /// Webhook path -> pipeline name.
    pub hooks: HashMap<String, String>,
}

/// Entries by key, each with when it was read.
type Timed<V> = Mutex<HashMap<String, (Instant, V)>>;

#[derive(Default)]
pub struct Cache {
    generation: AtomicU64,
    /// Counts clears: a read that started before a clear must not store what it read.
    epoch: AtomicU64,
    owners: Timed<Option<(String, String)>>,
    tenants: Timed<Option<Arc<Tenant>>>,
    pipelines: Timed<Arc<TenantPipelines>>,
}

fn get<V: Clone>(m: &Timed<V>, k: &str) -> Option<V> {
    m.lock().ok().and_then(|m| m.get(k).filter(|(at, _)| at.elapsed() < MAX_AGE).map(|(_, v)| v.clone()))
}

fn put<V>(cache: &Cache, epoch: u64, m: &Timed<V>, k: &str, v: V) {
    if let Ok(mut m) = m.lock() {
        if cache.epoch.load(Ordering::SeqCst) != epoch {
            return;
        }
        if m.len() >= MAX_ENTRIES {
            m.clear();
        }
        m.insert(k.to_string(), (Instant::now(), v));
    }
}

impl Cache {
    pub fn new() -> Cache {
        Cache::default()
    }

    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        if let Ok(mut m) = self.owners.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.tenants.lock() {
            m.clear();
        }
        if let Ok(mut m) = self.pipelines.lock() {
            m.clear();
        }
    }

    /// Drops everything when the catalog's generation moved.
    pub fn observe_generation(&self, g: u64) {
        if self.generation.swap(g, Ordering::SeqCst) != g {
            self.clear();
        }
    }
}

/// The tenant owning an API key (by its hash), and the key's id.
pub async fn key_owner(state: &Shared, hash: &str) -> Result<Option<(String, String)>, StoreError> {
    if let Some(v) = get(&state.cache.owners, hash) {
        return Ok(v);
    }
    let epoch = state.cache.epoch.load(Ordering::SeqCst);
    let owner = state.s.catalog.key_owner(hash).await?;
    put(&state.cache, epoch, &state.cache.owners, hash, owner.clone());
    Ok(owner)
}

pub async fn tenant(state: &Shared, id: &str) -> Result<Option<Arc<Tenant>>, StoreError> {
    if let Some(v) = get(&state.cache.tenants, id) {
        return Ok(v);
    }
    let epoch = state.cache.epoch.load(Ordering::SeqCst);
    let t = state.s.catalog.tenant(id).await?.map(Arc::new);
    put(&state.cache, epoch, &state.cache.tenants, id, t.clone());
    Ok(t)
}

pub async fn pipelines(state: &Shared, tenant: &str) -> Result<Arc<TenantPipelines>, StoreError> {
    if let Some(v) = get(&state.cache.pipelines, tenant) {
        return Ok(v);
    }
    let epoch = state.cache.epoch.load(Ordering::SeqCst);
    let mut out = TenantPipelines::default();
    for p in state.s.catalog.pipelines(tenant).await? {
        let plan: Plan = serde_json::from_value(p.plan)
            .map_err(|e| StoreError::Corrupt(format!("the plan of pipeline {}: {e}", p.name)))?;
        for t in &plan.triggers {
            if let Trigger::Webhook(w) = t {
                out.hooks.insert(w.path.clone(), p.name.clone());
            }
        }
        out.by_name.insert(p.name.clone(), Arc::new(Loaded { version: p.version, plan: Arc::new(plan) }));
    }
    let out = Arc::new(out);
    put(&state.cache, epoch, &state.cache.pipelines, tenant, out.clone());
    Ok(out)
}

/// Polls the catalog's generation until `stop` is set.
pub async fn poll(state: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        match state.s.catalog.generation().await {
            Ok(g) => state.cache.observe_generation(g),
            Err(e) => tracing::debug!("cannot read the catalog generation: {e}"),
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.changed() => return,
        }
    }
}

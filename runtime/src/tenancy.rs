//! What tenants own, as the executor sees it: their secrets (sealed in the catalog, opened here with the
//! master key) and their event routing (`emit` starts the tenant's pipelines with a matching `event`
//! trigger). Shared by `sluice serve` and `sluice worker`, so a step runs the same in either.

use crate::catalog::Catalog;
use crate::crypto::MasterKey;
use crate::executor::{Events, Executor, Secrets, StartOptions, Started};
use crate::store::StoreError;
use serde_json::{json, Value};
use sluice_engine::compile::Plan;
use sluice_engine::model::Trigger;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// How long opened secrets are reused before they are read again: a changed secret reaches running
/// pipelines within this.
pub const SECRETS_TTL: Duration = Duration::from_secs(1);

/// The owner a secret is sealed for (its associated data): a sealed value moved to another tenant or name
/// does not open.
pub fn secret_owner(tenant: &str, name: &str) -> String {
    format!("{tenant}/secret/{name}")
}

type Cached = (Instant, Arc<HashMap<String, String>>);

/// Tenants' secrets from the catalog.
pub struct StoreSecrets {
    catalog: Arc<dyn Catalog>,
    key: MasterKey,
    cache: Mutex<HashMap<String, Cached>>,
}

impl StoreSecrets {
    pub fn new(catalog: Arc<dyn Catalog>, key: MasterKey) -> StoreSecrets {
        StoreSecrets { catalog, key, cache: Mutex::new(HashMap::new()) }
    }

    /// Forgets what was read (after this process changed a secret).
    pub fn invalidate(&self, tenant: &str) {
        if let Ok(mut c) = self.cache.lock() {
            c.remove(tenant);
        }
    }
}

#[async_trait::async_trait]
impl Secrets for StoreSecrets {
    async fn for_tenant(&self, tenant: &str) -> Result<Arc<HashMap<String, String>>, StoreError> {
        if let Some((at, v)) = self.cache.lock().ok().and_then(|c| c.get(tenant).cloned()) {
            if at.elapsed() < SECRETS_TTL {
                return Ok(v);
            }
        }
        let mut out = HashMap::new();
        for (name, sealed, _) in self.catalog.secrets(tenant).await? {
            match self.key.open(&secret_owner(tenant, &name), &sealed) {
                Ok(v) => {
                    out.insert(name, v);
                }
                // A secret sealed under another master key: templates see it missing, and the log says why.
                Err(e) => tracing::error!(tenant, secret = %name, "cannot open the secret: {e}"),
            }
        }
        let out = Arc::new(out);
        if let Ok(mut c) = self.cache.lock() {
            if c.len() > 10_000 {
                c.clear();
            }
            c.insert(tenant.to_string(), (Instant::now(), out.clone()));
        }
        Ok(out)
    }
}

/// How long an event's id de-duplicates the runs it starts: a retried `emit` starts nothing twice.
pub const EVENT_DEDUP: Duration = Duration::from_secs(24 * 3600);

/// Events of a tenant start the tenant's pipelines whose `event` trigger has the event's type.
pub struct CatalogEvents {
    catalog: Arc<dyn Catalog>,
    executor: OnceLock<Weak<Executor>>,
}

impl CatalogEvents {
    pub fn new(catalog: Arc<dyn Catalog>) -> Arc<CatalogEvents> {
        Arc::new(CatalogEvents { catalog, executor: OnceLock::new() })
    }

    /// The executor that starts the runs (built after this, since it holds this).
    pub fn bind(&self, executor: &Arc<Executor>) {
        let _ = self.executor.set(Arc::downgrade(executor));
    }
}

#[async_trait::async_trait]
impl Events for CatalogEvents {
    async fn emit(&self, tenant: &str, event_type: &str, id: &str, data: &Value) -> Result<Vec<String>, String> {
        let ex = self.executor.get().and_then(Weak::upgrade).ok_or("the server is shutting down")?;
        let pipelines = self.catalog.pipelines(tenant).await.map_err(|e| e.to_string())?;
        // Runs an event starts count against the tenant's runs in flight like any other.
        let max_in_flight =
            self.catalog.tenant(tenant).await.map_err(|e| e.to_string())?.map(|t| t.limits.max_runs_in_flight);
        let mut started = Vec::new();
        for p in pipelines {
            let plan: Plan = match serde_json::from_value(p.plan.clone()) {
                Ok(plan) => plan,
                Err(e) => return Err(format!("pipeline `{}` is stored corrupt: {e}", p.name)),
            };
            let listens = plan.triggers.iter().any(|t| matches!(t, Trigger::Event(e) if e.event_type == event_type));
            if !listens {
                continue;
            }
            let trigger = json!({ "kind": "event", "type": event_type, "id": id, "body": data });
            let opts = StartOptions { dedup: Some((format!("event:{id}:{}", p.name), EVENT_DEDUP)), max_in_flight };
            match ex.start(tenant, &plan, p.version, trigger, &opts).await.map_err(|e| e.to_string())? {
                Started::New(run) | Started::Duplicate(run) => started.push(run),
                // The emit step fails and is retried by its policy; runs it started already are not started
                // twice (their de-duplication keys hold).
                Started::Full => {
                    return Err(format!(
                        "the tenant is at its limit of runs in flight; `{}` was not started yet",
                        p.name
                    ))
                }
            }
        }
        Ok(started)
    }
}

//! Schedules: every server runs this loop; each tick starts exactly one run however many servers run,
//! because the run is created with the de-duplication key `tick:<pipeline>:<trigger>:<tick time>`, one
//! atomic step of the store (on Redis a Lua script: the first server to create it wins, the others get the
//! first run's id back and start nothing).
//!
//! Missed ticks: a tick that came due while no server was running is started when a server starts if it is
//! at most [`GRACE`] old; older missed ticks are skipped (logged), so downtime never causes a storm of
//! catch-up runs. After a pause of the process, likewise only the latest due tick runs.

use crate::{cache, Shared, DEDUP_WINDOW};
use chrono::{DateTime, Timelike as _, Utc};
use serde_json::{json, Value};
use sluice_engine::compile::Plan;
use sluice_engine::model::Trigger;
use sluice_runtime::{StartOptions, Started, StoreError};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// How old a due tick may be and still start its run.
pub const GRACE: Duration = Duration::from_secs(60);

struct Schedule {
    tenant: String,
    pipeline: String,
    version: u32,
    plan: Arc<Plan>,
    index: usize,
    cron: croner::Cron,
    cron_text: String,
    tz: chrono_tz::Tz,
    input: Value,
    next: Option<DateTime<Utc>>,
}

impl Schedule {
    fn key(&self) -> (String, String, usize, String, String) {
        (self.tenant.clone(), self.pipeline.clone(), self.index, self.cron_text.clone(), self.tz.name().to_string())
    }

    /// The first tick strictly after `t`, in whole seconds (every server computes the same tick times).
    fn after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let t = t.with_nanosecond(0).unwrap_or(t);
        self.cron.find_next_occurrence(&t.with_timezone(&self.tz), false).ok().map(|d| d.with_timezone(&Utc))
    }
}

/// Every schedule of every tenant. A tenant whose pipelines cannot be read keeps the schedules it had (and
/// `Err` says to try again); at the first load a schedule counts from `GRACE` ago (the tick missed while no
/// server ran), later a new or changed schedule counts from now.
async fn load(
    state: &Shared,
    previous: Vec<Schedule>,
    now: DateTime<Utc>,
    first: bool,
) -> (Vec<Schedule>, Result<(), StoreError>) {
    let tenants = match state.s.catalog.tenants().await {
        Ok(t) => t,
        Err(e) => return (previous, Err(e)),
    };
    let mut kept: HashMap<_, _> = previous.iter().map(|s| (s.key(), s.next)).collect();
    let mut by_tenant: HashMap<String, Vec<Schedule>> = HashMap::new();
    for s in previous {
        by_tenant.entry(s.tenant.clone()).or_default().push(s);
    }
    let mut out = Vec::new();
    let mut result = Ok(());
    let start = if first { now - chrono::Duration::from_std(GRACE).unwrap_or_default() } else { now };
    for t in tenants {
        let pipelines = match cache::pipelines(state, &t.id).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(tenant = %t.id, "scheduler: cannot read the pipelines; keeping their schedules: {e}");
                out.extend(by_tenant.remove(&t.id).unwrap_or_default());
                result = Err(e);
                continue;
            }
        };
        for (name, p) in &pipelines.by_name {
            for (index, trig) in p.plan.triggers.iter().enumerate() {
                let Trigger::Schedule(s) = trig else { continue };
                let Ok(cron) = s.cron.parse::<croner::Cron>() else { continue };
                let tz: chrono_tz::Tz = s.timezone.as_deref().unwrap_or("UTC").parse().unwrap_or(chrono_tz::UTC);
                let mut sched = Schedule {
                    tenant: t.id.clone(),
                    pipeline: name.clone(),
                    version: p.version,
                    plan: p.plan.clone(),
                    index,
                    cron,
                    cron_text: s.cron.clone(),
                    tz,
                    input: s.input.clone().unwrap_or_else(|| json!({})),
                    next: None,
                };
                sched.next = match kept.remove(&sched.key()) {
                    Some(next) => next,
                    None => sched.after(start),
                };
                out.push(sched);
            }
        }
    }
    (out, result)
}

async fn fire(state: &Shared, s: &Schedule, tick: DateTime<Utc>) -> bool {
    let tenant = match cache::tenant(state, &s.tenant).await {
        Ok(Some(t)) => t,
        Ok(None) => return true,
        Err(_) => return false,
    };
    let trigger = json!({
        "kind": "schedule", "body": s.input, "cron": s.cron_text, "timezone": s.tz.name(),
        "scheduled_at": tick.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let key = format!("tick:{}:{}:{}", s.pipeline, s.index, tick.timestamp());
    let opts = StartOptions { dedup: Some((key, DEDUP_WINDOW)), max_in_flight: Some(tenant.limits.max_runs_in_flight) };
    match state.s.executor.start(&s.tenant, &s.plan, s.version, trigger, &opts).await {
        Ok(Started::New(run)) => {
            tracing::info!(tenant = %s.tenant, pipeline = %s.pipeline, run, %tick, "schedule tick started a run")
        }
        Ok(Started::Duplicate(run)) => {
            tracing::debug!(tenant = %s.tenant, pipeline = %s.pipeline, run, %tick, "tick started by another server")
        }
        Ok(Started::Full) => {
            tracing::warn!(tenant = %s.tenant, pipeline = %s.pipeline, %tick, "tick skipped: the tenant is at its limit of runs in flight")
        }
        Err(e) => {
            tracing::warn!(tenant = %s.tenant, pipeline = %s.pipeline, %tick, "tick failed to start, trying again: {e}");
            return false;
        }
    }
    true
}

/// Runs the schedules of every tenant until `stop` is set.
pub async fn run(state: Shared, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut schedules: Vec<Schedule> = Vec::new();
    let mut loaded: Option<u64> = None;
    let mut first = true;
    loop {
        let now = Utc::now();
        match state.s.catalog.generation().await {
            Ok(g) if loaded != Some(g) => {
                state.cache.observe_generation(g);
                let (s, result) = load(&state, std::mem::take(&mut schedules), now, loaded.is_none() && first).await;
                schedules = s;
                match result {
                    Ok(()) => {
                        loaded = Some(g);
                        first = false;
                        tracing::debug!(schedules = schedules.len(), "scheduler: schedules loaded");
                    }
                    Err(e) => tracing::warn!("scheduler: cannot read every schedule, trying again: {e}"),
                }
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("scheduler: cannot read the catalog: {e}"),
        }
        let now = Utc::now();
        for s in &mut schedules {
            let Some(mut tick) = s.next.filter(|n| *n <= now) else { continue };
            // The latest due tick; the ones before it were missed.
            let mut missed = 0u32;
            let next = loop {
                match s.after(tick) {
                    Some(n) if n <= now => {
                        tick = n;
                        missed += 1;
                    }
                    other => break other,
                }
            };
            s.next = next;
            if missed > 0 {
                tracing::info!(tenant = %s.tenant, pipeline = %s.pipeline, missed, "scheduler: skipped missed ticks");
            }
            if (now - tick).to_std().unwrap_or_default() <= GRACE && !fire(&state, s, tick).await {
                // The store failed: this tick again on the next round (its de-duplication key keeps it one run).
                s.next = Some(tick);
            }
        }
        let until_next = schedules
            .iter()
            .filter_map(|s| s.next)
            .min()
            .map(|n| (n - Utc::now()).to_std().unwrap_or_default())
            .unwrap_or(Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep(until_next.clamp(Duration::from_millis(20), Duration::from_secs(1))) => {}
            _ = stop.changed() => return,
        }
    }
}

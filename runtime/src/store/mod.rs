//! The store: one trait, two implementations (an embedded SQLite file, and Redis shared by many processes).
//!
//! Every call takes the tenant first. The trait holds the few operations that must be atomic (create a run,
//! claim a task under a lease, commit a step's result with its successors); the DAG logic above it is the
//! executor's and is the same for both stores.

pub mod redis;
pub mod sqlite;

/// The GCRA decision for one request: the new theoretical arrival time, or the wait before a request would
/// be admitted. Shared by the embedded store; the Redis store runs the same arithmetic in `lua/rate.lua`.
pub fn gcra(tat_ms: Option<f64>, now_ms: f64, rate: f64, burst: u32) -> std::result::Result<f64, Duration> {
    let interval = 1000.0 / rate.max(1e-9);
    let tolerance = interval * (f64::from(burst.max(1)) - 1.0);
    let tat = tat_ms.unwrap_or(now_ms).max(now_ms);
    let allow_at = tat - tolerance;
    if now_ms < allow_at {
        return Err(Duration::from_millis((allow_at - now_ms).ceil() as u64));
    }
    Ok(tat + interval)
}

use crate::model::{Claimed, Commit, CommitResult, Created, DeadLetter, NewRun, RunHeader, RunQuery, StepState};
use async_trait::async_trait;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("embedded store: {0}")]
    Sqlite(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

impl StoreError {
    /// Whether trying again later may succeed (a lost connection), as opposed to a bug or corrupt data.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Redis(_))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// How long a finished run is kept with its outputs, unless the store is told otherwise (SPEC section 6).
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);
/// How long a dead letter is kept at most when it is neither replayed nor deleted.
pub const DEAD_LETTER_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `embedded` or `redis`, for logs and benchmarks.
    fn name(&self) -> &'static str;

    /// Stores a run (header and plan) and makes its first tasks runnable, unless its de-duplication key is
    /// held already or the tenant is at its limit of runs in flight (see [`NewRun`]); one atomic step.
    /// Durable when it returns.
    async fn create_run(&self, tenant: &str, run: &NewRun) -> Result<Created>;

    /// A page of the tenant's runs, newest first, and the cursor of the next page. Filters are applied
    /// while paging, so a page may hold fewer than `limit` runs and still have a next one.
    async fn list_runs(&self, tenant: &str, q: &RunQuery) -> Result<(Vec<RunHeader>, Option<String>)>;

    /// Tasks of the tenant waiting for a worker (ready now, or timers), for metrics.
    async fn queue_depth(&self, tenant: &str) -> Result<u64>;

    /// Claims the next runnable task, tenants served in turn, under a lease of `lease_ms` for `worker`.
    /// Tasks whose lease expired (their worker died) and timers that came due are runnable again.
    async fn claim(&self, worker: &str, lease_ms: u64) -> Result<Option<Claimed>>;

    /// Waits until work may be available (a push wakes it) or `max` passes.
    async fn wait_for_work(&self, max: Duration);

    /// Extends the leases of tasks a worker is still running; answers how many it still held.
    async fn extend(&self, worker: &str, claims: &[Claimed], lease_ms: u64) -> Result<u32>;

    /// The run's header and plan snapshot.
    async fn run(&self, tenant: &str, run: &str) -> Result<Option<(RunHeader, serde_json::Value)>>;

    /// The run's plan snapshot alone (it never changes, so callers cache it).
    async fn plan(&self, tenant: &str, run: &str) -> Result<Option<serde_json::Value>>;

    /// What a worker needs to run a task, in one round trip: the run's header and the given state documents.
    /// A `queued` run becomes `running` (its first step started).
    async fn load(
        &self,
        tenant: &str,
        run: &str,
        keys: &[String],
    ) -> Result<Option<(RunHeader, Vec<Option<StepState>>)>>;

    /// State documents by key (`step` or `step#index`); missing ones are `None`.
    async fn states(&self, tenant: &str, run: &str, keys: &[String]) -> Result<Vec<Option<StepState>>>;

    /// Every state document of a run.
    async fn all_states(&self, tenant: &str, run: &str) -> Result<Vec<(String, StepState)>>;

    /// Applies one change atomically (see [`Commit`]).
    async fn commit(&self, tenant: &str, run: &str, claimed: Option<&Claimed>, c: Commit) -> Result<CommitResult>;

    /// One request against the tenant's rate limit `name` (GCRA: `rate` a second, bursts of `burst`), shared
    /// by every process on this store. `Ok(None)` admits it; `Ok(Some(wait))` refuses it and says when to try
    /// again (for a 429's `Retry-After`).
    async fn rate_limit(&self, tenant: &str, name: &str, rate: f64, burst: u32) -> Result<Option<Duration>>;

    /// A page of the tenant's dead letters, newest first: at most `limit`, older than the dead letter
    /// `before` when given (the last id of the previous page).
    async fn dead_letters_page(&self, tenant: &str, before: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>>;

    /// One dead letter by id.
    async fn dead_letter(&self, tenant: &str, id: &str) -> Result<Option<DeadLetter>>;

    /// The tenant's dead letters, newest first (up to 10,000; page with [`Store::dead_letters_page`]).
    async fn dead_letters(&self, tenant: &str) -> Result<Vec<DeadLetter>> {
        self.dead_letters_page(tenant, None, 10_000).await
    }

    /// How many commands the store has executed so far, for benchmarks: on Redis every command the server ran
    /// (commands inside scripts included, from `INFO commandstats`, all clients); on the embedded store the SQL
    /// statements this process ran.
    async fn commands_executed(&self) -> Result<u64>;

    /// Deletes what outlived its keeping period (finished runs past the retention, dead letters past 30
    /// days); answers how many runs went. Housekeeping, the one operation across tenants; Redis expires keys
    /// by itself, so there it does nothing.
    async fn housekeeping(&self) -> Result<u64>;
}

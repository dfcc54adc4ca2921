//! The catalog: what a tenant owns besides its runs (the tenant record and limits, API keys, pipeline
//! versions, sealed secrets), stored beside the runs in the same store, so every server and worker sharing a
//! store sees the same catalog.
//!
//! Every call but the admin ones (tenants, the key index) takes the tenant first. Values arrive ready to
//! store: keys hashed and secrets sealed by the caller; the catalog never sees a plain key or secret.

pub mod redis;
pub mod sqlite;

use crate::store::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

/// A tenant's limits (SPEC section 9).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Requests a second on the API and webhook endpoints, on average.
    pub requests_per_second: f64,
    /// Requests admitted at once above the average.
    pub burst: u32,
    /// Runs queued or running at once; more are refused with 429.
    pub max_runs_in_flight: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { requests_per_second: 50.0, burst: 100, max_runs_in_flight: 500 }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tenant {
    pub id: String,
    pub limits: Limits,
    pub created_at: String,
}

/// An API key as stored: its SHA-256, never the key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    /// Hex SHA-256 of the whole key.
    pub hash: String,
    /// The key's first characters, so people can tell their keys apart.
    pub prefix: String,
    pub created_at: String,
}

/// One version of a pipeline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineVersion {
    pub name: String,
    pub version: u32,
    /// The text as it was sent, and its format (`yaml` or `json`).
    pub source: String,
    pub format: String,
    /// Hex SHA-256 of `source`: a PUT of the same text makes no new version.
    pub hash: String,
    /// The compiled plan (`sluice_engine::compile::Plan` as JSON).
    pub plan: serde_json::Value,
    pub created_at: String,
    /// `api`, `folder` (loaded from the `--pipelines` folder, and deleted when its file goes) or `sync`
    /// (applied by `sluice sync`: managed by git, so API edits are refused unless forced).
    pub origin: String,
    /// The API key id that made this version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    /// The git commit `sluice sync` applied it from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// What a PUT of a pipeline did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Put {
    /// A new version (1 for a new pipeline).
    Created(u32),
    /// The text equals the latest version's: nothing changed.
    Unchanged(u32),
    /// `(path, pipeline)`: a webhook path of this pipeline belongs to another pipeline of the tenant; nothing
    /// changed.
    PathTaken(String, String),
    /// The pipeline is managed by `sluice sync` (its latest version, with its commit): nothing changed.
    Managed(u32, Option<String>),
}

/// One change of a bulk apply (`sluice sync`).
#[derive(Debug, Clone, PartialEq)]
pub enum BulkOp {
    Put(Box<PipelineVersion>),
    Delete(String),
}

/// What a bulk apply did: all of it, or nothing.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// Each pipeline and what happened to it (`None`: deleted).
    Done(Vec<(String, Option<Put>)>),
    /// A pipeline's version is not the one the plan saw (`None`: absent): nothing changed.
    Moved { name: String, expected: Option<u32>, found: Option<u32> },
    /// A webhook path is another pipeline's: nothing changed.
    PathTaken { name: String, path: String, owner: String },
}

/// Versions kept per pipeline; older ones are deleted (runs keep their own copy of the plan).
pub const VERSIONS_KEPT: u32 = 100;

impl PipelineVersion {
    /// The webhook paths of this version's triggers.
    pub fn webhook_paths(&self) -> Vec<String> {
        let triggers = self.plan.get("triggers").and_then(serde_json::Value::as_array);
        triggers
            .into_iter()
            .flatten()
            .filter_map(|t| t.get("webhook")?.get("path")?.as_str().map(str::to_string))
            .collect()
    }
}

#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Creates a tenant; `false` when it exists already.
    async fn create_tenant(&self, t: &Tenant) -> Result<bool>;
    async fn tenant(&self, id: &str) -> Result<Option<Tenant>>;
    /// Every tenant, by id.
    async fn tenants(&self) -> Result<Vec<Tenant>>;
    /// Deletes a tenant and everything it owns (keys, pipelines, secrets, runs, dead letters).
    async fn delete_tenant(&self, id: &str) -> Result<bool>;

    async fn add_key(&self, tenant: &str, key: &ApiKey) -> Result<()>;
    /// The tenant and key id of a key hash.
    async fn key_owner(&self, hash: &str) -> Result<Option<(String, String)>>;
    async fn keys(&self, tenant: &str) -> Result<Vec<ApiKey>>;
    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool>;

    /// Stores a new version of a pipeline, unless its text equals the latest version's or one of its webhook
    /// paths is another pipeline's (checked in the same atomic step). Versions only grow: a pipeline deleted
    /// and put again continues its numbering; the last [`VERSIONS_KEPT`] are kept.
    /// Unless `force`, a pipeline whose latest version came from `sluice sync` is refused (`Put::Managed`)
    /// to anything but another sync, in the same atomic step.
    async fn put_pipeline(&self, tenant: &str, p: &PipelineVersion, force: bool) -> Result<Put>;
    /// Applies puts and deletes all at once, or nothing: only when every pipeline in `expected` is at the
    /// given latest version (`None`: absent), and no webhook path conflicts.
    async fn apply(&self, tenant: &str, ops: &[BulkOp], expected: &[(String, Option<u32>)]) -> Result<Applied>;

    /// A version of a pipeline (the latest when `None`); a deleted pipeline has none.
    async fn pipeline(&self, tenant: &str, name: &str, version: Option<u32>) -> Result<Option<PipelineVersion>>;
    /// The latest version of every pipeline of the tenant, by name.
    async fn pipelines(&self, tenant: &str) -> Result<Vec<PipelineVersion>>;
    /// The version numbers and creation times of a pipeline, oldest first.
    async fn versions(&self, tenant: &str, name: &str) -> Result<Vec<(u32, String)>>;
    async fn delete_pipeline(&self, tenant: &str, name: &str) -> Result<bool>;

    async fn put_secret(&self, tenant: &str, name: &str, sealed: &str, updated_at: &str) -> Result<()>;
    /// `(name, sealed, updated_at)` of every secret, by name.
    async fn secrets(&self, tenant: &str) -> Result<Vec<(String, String, String)>>;
    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool>;

    /// A number that changes whenever anything in the catalog changes (any tenant), so processes know when
    /// to drop what they cached.
    async fn generation(&self) -> Result<u64>;

    /// OAuth2 connections, as documents (`crate::oauth::Connection` as JSON, secrets sealed inside).
    async fn put_connection(&self, tenant: &str, name: &str, doc: &str) -> Result<()>;
    async fn connection(&self, tenant: &str, name: &str) -> Result<Option<String>>;
    async fn connections(&self, tenant: &str) -> Result<Vec<(String, String)>>;
    async fn delete_connection(&self, tenant: &str, name: &str) -> Result<bool>;
    /// Writes a connection only while `token` holds its lock (see [`Catalog::lock`]): a refresh that lost
    /// its lock (it took too long) writes nothing.
    async fn put_connection_locked(&self, tenant: &str, name: &str, doc: &str, token: &str) -> Result<bool>;
    /// Takes the connection's lock for `ttl_ms` unless someone holds it; `token` identifies the holder.
    async fn lock(&self, tenant: &str, name: &str, token: &str, ttl_ms: u64) -> Result<bool>;
    async fn unlock(&self, tenant: &str, name: &str, token: &str) -> Result<()>;

    /// A pending authorization (`state` -> document), kept for `ttl_ms`. Global: the callback is public
    /// and finds its tenant through the state.
    async fn put_authorization(&self, state: &str, doc: &str, ttl_ms: u64) -> Result<()>;
    /// Takes a pending authorization: answers it once, then never again.
    async fn take_authorization(&self, state: &str) -> Result<Option<String>>;
}

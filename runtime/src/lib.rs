//! Sluice's runtime: one executor over two stores, on apalis workers.
//!
//! `executor` is the DAG engine (retries, dead letters, fan-out, failure handling); `store` holds the two
//! implementations of the one `Store` trait (embedded SQLite, Redis); `catalog` what tenants own besides runs
//! (keys, pipeline versions, sealed secrets), on the same two stores; `tenancy` feeds tenants' secrets and
//! events to the executor; `worker` runs apalis workers that claim tasks from a store. Which store runs is
//! chosen by the binary, never here.

pub mod catalog;
pub mod crypto;
pub mod executor;
pub mod metrics;
pub mod model;
pub mod oauth;
pub mod store;
pub mod tenancy;
pub mod worker;

pub use catalog::Catalog;
pub use executor::{Config, Events, Executor, NoOtherPipelines, Secrets, StartOptions, Started, StaticSecrets};
pub use metrics::Metrics;
pub use store::{redis::RedisStore, sqlite::SqliteStore, Store, StoreError};

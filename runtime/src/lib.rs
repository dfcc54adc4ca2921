//! Sluice's runtime: one executor over two stores, on apalis workers.
//!
//! `executor` is the DAG engine (retries, dead letters, fan-out, failure handling); `store` holds the two
//! implementations of the one `Store` trait (embedded SQLite, Redis); `worker` runs apalis workers that claim
//! tasks from a store. Which store runs is chosen by the binary, never here.

pub mod crypto;
pub mod executor;
pub mod model;
pub mod store;
pub mod worker;

pub use executor::{Config, Events, Executor, NoOtherPipelines, Secrets, StaticSecrets};
pub use store::{redis::RedisStore, sqlite::SqliteStore, Store, StoreError};

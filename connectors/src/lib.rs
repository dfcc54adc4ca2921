//! Sluice's step kinds behind the one `StepKind` interface, and the registry: one line per kind.
//!
//! Each kind declares its `with` as Rust types whose schema becomes part of the pipeline JSON Schema, and
//! checks offline what a schema cannot say. Nothing here executes yet or does IO at validation time.

mod kinds;
mod types;

pub use kinds::{Delay, Emit, Filter, Http, Log, Transform, WebhookSend};
pub use types::*;

use sluice_engine::kind::{Registry, StepKind};
use std::sync::Arc;

/// Every built-in step kind, in the order `sluice schema` lists them.
pub fn registry() -> Arc<Registry> {
    let kinds: Vec<Box<dyn StepKind>> = vec![
        Box::new(Http),
        Box::new(Transform),
        Box::new(WebhookSend),
        Box::new(Filter),
        Box::new(Delay),
        Box::new(Log),
        Box::new(Emit),
    ];
    Arc::new(Registry::new(kinds))
}

//! Sluice's step kinds behind one interface, and the registry: one line per kind.
//!
//! Each kind declares its `with` as Rust types whose schema becomes part of the pipeline JSON Schema, checks
//! offline what a schema cannot say (`StepKind`, for the validator), and runs one attempt (`Connector`, for the
//! executor) through an egress-checked HTTP client.

pub mod egress;
mod exec;
mod kinds;
pub mod run;
mod types;
pub mod verify;

pub use exec::{retry_after_ms, sign, webhook_id, MAX_BODY};
pub use kinds::{Delay, Emit, Filter, Http, Log, Transform, WebhookSend};
pub use run::{Connector, Outcome, StepCx, StepError, TokenSource};
pub use types::*;

use sluice_engine::kind::{Registry, StepKind};
use std::sync::Arc;

/// Every built-in step kind, in the order `sluice schema` lists them.
pub fn connectors() -> Vec<Arc<dyn Connector>> {
    vec![
        Arc::new(Http),
        Arc::new(Transform),
        Arc::new(WebhookSend),
        Arc::new(Filter),
        Arc::new(Delay),
        Arc::new(Log),
        Arc::new(Emit),
    ]
}

/// The validator's view of the built-in kinds.
pub fn registry() -> Arc<Registry> {
    let kinds: Vec<Arc<dyn StepKind>> = connectors().into_iter().map(|c| c as Arc<dyn StepKind>).collect();
    Arc::new(Registry::new(kinds))
}

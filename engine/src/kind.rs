//! The step-kind interface: what the pipeline core needs to know about a `uses:` kind.
//!
//! Implementations live in the `connectors` crate; this crate never names one. The core asks a kind for
//! its `with` schema and for offline checks of `with`; it never executes anything.

use crate::diag::Diagnostic;
use crate::yaml::Node;
use schemars::{Schema, SchemaGenerator};
use std::sync::Arc;

/// One step kind (`http`, `transform`, ...), as the validator and compiler see it.
pub trait StepKind: Send + Sync {
    /// The `uses:` name.
    fn name(&self) -> &'static str;
    /// One sentence for the schema and `--help` texts.
    fn description(&self) -> &'static str;
    /// The JSON Schema of `with` for this kind.
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema;
    /// Checks of `with` that a schema cannot say (e.g. two mutually exclusive keys), offline.
    /// `with` is the parsed tree, so diagnostics can point into it.
    fn check(&self, _with: &Node, _out: &mut Vec<Diagnostic>) {}
    /// Top-level `with` keys that hold a bare expression (like `if:`, braces optional) rather than a template.
    fn expression_fields(&self) -> &'static [&'static str] {
        &[]
    }
}

/// The set of step kinds a validator and runtime know, in registration order.
pub struct Registry {
    kinds: Vec<Arc<dyn StepKind>>,
}

impl Registry {
    pub fn new(kinds: Vec<Arc<dyn StepKind>>) -> Registry {
        Registry { kinds }
    }
    pub fn get(&self, name: &str) -> Option<&dyn StepKind> {
        self.kinds.iter().find(|k| k.name() == name).map(|k| k.as_ref())
    }
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }
    pub fn kinds(&self) -> impl Iterator<Item = &dyn StepKind> {
        self.kinds.iter().map(|k| k.as_ref())
    }
}

//! Sluice's pipeline core: parse, validate, compile and template pipelines.
//!
//! Text in, values and diagnostics out. This crate does no IO: no files, no network, no clock, no
//! environment, no async runtime. The binary reads files and hands their text here.

pub mod compile;
pub mod diag;
pub mod emit;
pub mod fmt;
pub mod kind;
pub mod model;
pub mod schema;
pub mod template;
pub mod validate;
pub mod yaml;

pub use compile::{compile, Plan, PlanStep, RetryPolicy};
pub use diag::{Code, Diagnostic, Severity};
pub use kind::{Registry, StepKind};
pub use model::Pipeline;
pub use validate::{Checked, Validator};

//! Running a step: the `Connector` interface every kind implements, the context it gets, and what it returns.
//!
//! A connector sees only its rendered `with` and a [`StepCx`]: ids, the idempotency key, an egress-checked HTTP
//! client, the attempt's timeout and the clock. It never sees the queue, the store or the API, and it does not
//! retry: it says which class its error is, and the executor owns the retry policy.

use futures::future::BoxFuture;
use serde_json::Value;
use sluice_engine::kind::StepKind;
use sluice_engine::model::ErrorClass;
use std::time::Duration;

/// Everything a step may use while it runs.
#[derive(Clone)]
pub struct StepCx {
    pub tenant: String,
    pub run_id: String,
    pub step_id: String,
    pub index: Option<u32>,
    pub attempt: u32,
    /// `<run_id>:<step_id>[:<index>]`: the same on every attempt and replay.
    pub idempotency_key: String,
    /// Follows redirects (each hop checked); for `http`.
    pub http: reqwest::Client,
    /// Never follows redirects; for `webhook.send`.
    pub http_no_redirect: reqwest::Client,
    pub egress: crate::egress::Egress,
    /// Bound of this attempt.
    pub timeout: Duration,
    /// Milliseconds since the Unix epoch, at the start of the attempt.
    pub now_ms: u64,
    /// Milliseconds since the Unix epoch, at the start of the step's first attempt (an event's own time,
    /// the same on every retry).
    pub first_attempt_ms: u64,
    /// Access tokens of the tenant's OAuth2 connections (`auth: { connection }`); `None` where there are
    /// none (`sluice run`).
    pub tokens: Option<std::sync::Arc<dyn TokenSource>>,
}

/// Where `auth: { connection: NAME }` gets its access token: cached, renewed before it expires, one refresh
/// at a time per connection across every process.
pub trait TokenSource: Send + Sync {
    /// A valid access token of the tenant's connection. `rejected` is a token the API just answered 401
    /// to: it is not given again (it is refreshed, once, whoever asks).
    fn token<'a>(
        &'a self,
        tenant: &'a str,
        connection: &'a str,
        rejected: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StepError>>;
}

/// What a successful step produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step's output.
    Output(Value),
    /// `filter` said no: the run stops as succeeded, reason `filtered`.
    Filtered,
    /// `delay`: continue at this time (ms since the epoch), holding no worker meanwhile.
    WaitUntil(u64),
    /// `emit`: start the tenant's pipelines listening to `event_type`; the output is `id`.
    Emit { id: String, event_type: String, data: Value },
}

/// A failed attempt: its class decides whether it is retried.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct StepError {
    pub class: ErrorClass,
    pub message: String,
    /// A server's `Retry-After`, in milliseconds.
    pub retry_after_ms: Option<u64>,
}

impl StepError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        StepError { class, message: message.into(), retry_after_ms: None }
    }
    pub fn config(message: impl Into<String>) -> Self {
        Self::new(ErrorClass::Config, message)
    }
}

/// A step kind that can run: the validator's view (`StepKind`) plus execution.
pub trait Connector: StepKind {
    /// Runs one attempt with the rendered `with`. Expression fields (`filter.when`) arrive evaluated to booleans.
    fn run<'a>(&'a self, cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>>;
}

/// Reads a typed `with` from the rendered value; a mismatch (e.g. a template that rendered a number where a
/// string belongs) is a `config` error naming the field.
pub fn parse_with<T: serde::de::DeserializeOwned>(kind: &str, with: Value) -> Result<T, StepError> {
    serde_json::from_value(with)
        .map_err(|e| StepError::config(format!("the rendered `with` of this {kind} step is invalid: {e}")))
}

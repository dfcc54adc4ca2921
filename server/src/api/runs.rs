//! Runs and dead letters: start (manual), list, get, cancel, retry; list and replay dead letters.

use super::{check_id, check_name, Page};
use crate::auth::TenantAuth;
use crate::cache::Loaded;
use crate::error::{ApiError, ApiResult, Raw, P, Q};
use crate::{cache, json, Shared, DEDUP_WINDOW};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sluice_engine::model::Trigger;
use sluice_runtime::catalog::Tenant;
use sluice_runtime::model::{RunQuery, RunStatus};
use sluice_runtime::{StartOptions, Started};
use std::time::Duration;
use utoipa::ToSchema;

/// A run was started (or had been, for a duplicate).
#[derive(Serialize, ToSchema)]
pub struct RunStarted {
    pub run_id: String,
    /// Present and true when a run with the same `webhook-id` / `Idempotency-Key` existed: nothing started.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<bool>,
}

/// Starts a run of `pipeline` for `tenant`: 202 once durable; 200 with the first run's id for a duplicate
/// de-duplication key; 429 when the tenant is at its limit of runs in flight.
pub async fn start_run(
    state: &Shared,
    tenant: &Tenant,
    pipeline: &Loaded,
    trigger: Value,
    dedup: Option<String>,
) -> ApiResult<Response> {
    let opts =
        StartOptions { dedup: dedup.map(|k| (k, DEDUP_WINDOW)), max_in_flight: Some(tenant.limits.max_runs_in_flight) };
    match state.s.executor.start(&tenant.id, &pipeline.plan, pipeline.version, trigger, &opts).await? {
        Started::New(id) => Ok(json(StatusCode::ACCEPTED, json!(RunStarted { run_id: id, duplicate: None }))),
        Started::Duplicate(id) => Ok(json(StatusCode::OK, json!(RunStarted { run_id: id, duplicate: Some(true) }))),
        Started::Full => {
            state.s.metrics.inc("sluice_rate_limited_total", &[("tenant", &tenant.id), ("limit", "runs_in_flight")]);
            Err(ApiError::too_many(
                "too_many_runs",
                format!(
                    "tenant `{}` has {} runs queued or running, its limit; try again when some have finished",
                    tenant.id, tenant.limits.max_runs_in_flight
                ),
                Duration::from_secs(1),
            ))
        }
    }
}

/// Refuses a trigger body that nests deeper than a stored value may.
pub fn check_depth(body: &Value) -> ApiResult<()> {
    let max = sluice_runtime::executor::MAX_DEPTH;
    if sluice_runtime::executor::depth(body) > max {
        return Err(ApiError::bad_request("too_deep", format!("the body nests deeper than {max} levels; flatten it")));
    }
    Ok(())
}

/// The `Idempotency-Key` header, checked.
pub fn idempotency_key(headers: &HeaderMap) -> ApiResult<Option<String>> {
    let Some(v) = headers.get("idempotency-key") else { return Ok(None) };
    let v = v.to_str().ok().map(str::trim).filter(|v| !v.is_empty() && v.len() <= 255).ok_or_else(|| {
        ApiError::bad_request("invalid_header", "`Idempotency-Key` must be 1 to 255 characters of visible text")
    })?;
    Ok(Some(v.to_string()))
}

#[utoipa::path(post, path = "/v1/pipelines/{name}/runs", tag = "runs", params(("name" = String, Path),
        ("Idempotency-Key" = Option<String>, Header, description = "Starts at most one run per key in 24 h")),
    request_body(content = Object, description = "The trigger body (`trigger.body`); empty means `{}`"),
    security(("api_key" = [])),
    responses((status = 202, description = "Durably stored", body = RunStarted),
        (status = 200, description = "A run with this Idempotency-Key exists: its id", body = RunStarted),
        (status = 404, body = super::ErrorBody), (status = 409, description = "The pipeline has no `manual` trigger", body = super::ErrorBody),
        (status = 429, body = super::ErrorBody)))]
pub async fn start(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    headers: HeaderMap,
    Raw(body): Raw,
) -> ApiResult<Response> {
    check_name("pipeline", &name, false).map_err(|_| ApiError::not_found("the pipeline"))?;
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("the trigger body is not valid JSON: {e}")))?
    };
    check_depth(&body)?;
    let key = idempotency_key(&headers)?;
    let pipelines = cache::pipelines(&state, &t.id).await?;
    let p = pipelines.by_name.get(&name).ok_or_else(|| ApiError::not_found("the pipeline"))?;
    if !p.plan.triggers.iter().any(|t| matches!(t, Trigger::Manual(_))) {
        return Err(ApiError::conflict(
            "no_manual_trigger",
            format!("pipeline `{name}` cannot be started by the API: add `- manual: {{}}` to its `triggers`"),
        ));
    }
    let trigger = json!({ "kind": "manual", "body": body });
    start_run(&state, &t, p, trigger, key.map(|k| format!("manual:{name}:{k}"))).await
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    /// Only runs of this pipeline.
    pub pipeline: Option<String>,
    /// Only runs in this status: queued, running, succeeded, failed, cancelled.
    pub status: Option<String>,
    /// The `next` of the previous page.
    pub cursor: Option<String>,
    /// Runs per page, 1 to 1000 (default 100).
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct RunSummary {
    pub id: String,
    pub pipeline: String,
    pub version: u32,
    pub status: String,
    /// webhook, schedule, manual or event.
    pub trigger: String,
    pub started_at: String,
    pub finished_at: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub error: Option<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct RunList {
    pub items: Vec<RunSummary>,
    pub next: Option<String>,
}

fn parse_status(s: &str) -> ApiResult<RunStatus> {
    serde_json::from_value(Value::String(s.to_string())).map_err(|_| {
        ApiError::bad_request(
            "invalid_query",
            format!("`status` is `{s}`; use queued, running, succeeded, failed or cancelled"),
        )
    })
}

#[utoipa::path(get, path = "/v1/runs", tag = "runs", params(RunFilter), security(("api_key" = [])),
    responses((status = 200, description = "Newest first", body = RunList), (status = 400, body = super::ErrorBody)))]
pub async fn list(TenantAuth(t): TenantAuth, State(state): State<Shared>, Q(f): Q<RunFilter>) -> ApiResult<Response> {
    let limit = Page { cursor: None, limit: f.limit }.limit()?;
    if let Some(p) = &f.pipeline {
        check_name("pipeline", p, false)?;
    }
    if let Some(c) = &f.cursor {
        check_id(c, "run_", "the cursor")
            .map_err(|_| ApiError::bad_request("invalid_query", "`cursor` is not a run id"))?;
    }
    let q = RunQuery {
        pipeline: f.pipeline.clone(),
        status: f.status.as_deref().map(parse_status).transpose()?,
        before: f.cursor.clone(),
        limit,
    };
    let (runs, next) = state.s.store.list_runs(&t.id, &q).await?;
    let items = runs
        .into_iter()
        .map(|h| RunSummary {
            trigger: h.trigger.get("kind").and_then(Value::as_str).unwrap_or("manual").to_string(),
            id: h.id,
            pipeline: h.pipeline,
            version: h.version,
            status: h.status.as_str().to_string(),
            started_at: h.started_at,
            finished_at: h.finished_at,
            error: h.error.map(|e| json!(e)),
        })
        .collect();
    Ok(json(StatusCode::OK, json!(RunList { items, next })))
}

/// One try of a step.
#[derive(Serialize, ToSchema)]
pub struct AttemptOut {
    pub number: u32,
    pub started_at: String,
    pub finished_at: String,
    pub error: Option<ClassedError>,
}

/// An error with its class: network, timeout, http_4xx, http_429, http_5xx, template, config.
#[derive(Serialize, ToSchema)]
pub struct ClassedError {
    pub class: String,
    pub message: String,
}

/// Where a run failed.
#[derive(Serialize, ToSchema)]
pub struct RunErrorOut {
    pub step: String,
    pub class: String,
    pub message: String,
}

/// One item of a `for_each` step.
#[derive(Serialize, ToSchema)]
pub struct ItemOut {
    pub index: u32,
    pub status: String,
    pub output: Value,
    pub attempts: Vec<AttemptOut>,
}

/// A step of a run: pending, running, retrying, waiting, succeeded, failed, skipped or cancelled.
#[derive(Serialize, ToSchema)]
pub struct StepRecord {
    pub status: String,
    /// The step's output (any JSON value; `null` until it succeeds).
    pub output: Value,
    pub attempts: Vec<AttemptOut>,
    /// The dead letter of a step that failed for good.
    pub dead_letter: Option<String>,
    /// Why it was skipped or stopped the run.
    pub reason: Option<String>,
    /// The items of a `for_each` step.
    pub items: Option<Vec<ItemOut>>,
}

/// The run record of SPEC section 6 (also what `sluice run --format json` prints).
#[derive(Serialize, ToSchema)]
pub struct RunRecord {
    pub id: String,
    pub pipeline: String,
    /// The pipeline version the run started on.
    pub version: u32,
    pub tenant: String,
    /// queued, running, succeeded, failed or cancelled.
    pub status: String,
    /// `kind` (webhook, schedule, manual, event), `body`, and per kind `webhook_id`, `headers`,
    /// `scheduled_at`, `type`.
    #[schema(value_type = Object)]
    pub trigger: Value,
    pub started_at: String,
    pub finished_at: Option<String>,
    pub error: Option<RunErrorOut>,
    pub reason: Option<String>,
    pub steps: std::collections::BTreeMap<String, StepRecord>,
}

#[utoipa::path(get, path = "/v1/runs/{id}", tag = "runs", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The run record: steps, attempts, outputs", body = RunRecord),
        (status = 404, body = super::ErrorBody)))]
pub async fn get(TenantAuth(t): TenantAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<Response> {
    check_id(&id, "run_", "the run")?;
    let record = state.s.executor.record(&t.id, &id).await?;
    Ok(json(StatusCode::OK, record))
}

#[derive(Serialize, ToSchema)]
pub struct RunStatusOut {
    pub id: String,
    pub status: String,
}

#[utoipa::path(post, path = "/v1/runs/{id}/cancel", tag = "runs", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The run's status now (a finished run keeps its own)", body = RunStatusOut),
        (status = 404, body = super::ErrorBody)))]
pub async fn cancel(TenantAuth(t): TenantAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<Response> {
    check_id(&id, "run_", "the run")?;
    let status = state.s.executor.cancel(&t.id, &id).await?;
    Ok(json(StatusCode::OK, json!(RunStatusOut { id, status: status.as_str().to_string() })))
}

#[derive(Serialize, ToSchema)]
pub struct Retried {
    pub run_id: String,
    /// The dead letters replayed.
    pub replayed: Vec<String>,
}

#[utoipa::path(post, path = "/v1/runs/{id}/retry", tag = "runs", params(("id" = String, Path)), security(("api_key" = [])),
    responses((status = 202, description = "The failed steps run again; the run continues from them", body = Retried),
        (status = 409, description = "The run has not failed, or has no failed step to retry", body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn retry(TenantAuth(t): TenantAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<Response> {
    check_id(&id, "run_", "the run")?;
    let (header, _) = state.s.store.run(&t.id, &id).await?.ok_or_else(|| ApiError::not_found("the run"))?;
    if header.status != RunStatus::Failed {
        return Err(ApiError::conflict(
            "run_not_failed",
            format!("run `{id}` is {}; only a failed run can be retried", header.status.as_str()),
        ));
    }
    let failed_step = header.error.as_ref().map(|e| e.step.clone());
    // The run's dead letters are named in its state documents (steps and items).
    let mut letters = Vec::new();
    for (_, st) in state.s.store.all_states(&t.id, &id).await? {
        if let Some(dl) = st.dead_letter.filter(|_| st.status == sluice_runtime::model::StepStatus::Failed) {
            if let Some(d) = state.s.store.dead_letter(&t.id, &dl).await? {
                letters.push(d);
            }
        }
    }
    letters.sort_by(|a, b| a.id.cmp(&b.id));
    letters.dedup_by(|a, b| a.id == b.id);
    // The step that failed the run first: its replay takes the run back to running.
    letters.sort_by_key(|d| Some(&d.step) != failed_step.as_ref());
    if letters.is_empty() {
        return Err(ApiError::conflict("nothing_to_retry", format!("run `{id}` has no dead letter left to replay")));
    }
    let mut replayed = Vec::new();
    for d in letters {
        match state.s.executor.replay(&t.id, &d.id).await {
            Ok(_) => replayed.push(d.id),
            // Replayed meanwhile by someone else: that is what was asked.
            Err(sluice_runtime::executor::ExecError::NoSuchDeadLetter) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json(StatusCode::ACCEPTED, json!(Retried { run_id: id, replayed })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadLetterFilter {
    /// Only dead letters of this run.
    pub run: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterOut {
    pub id: String,
    pub run_id: String,
    pub step: String,
    /// The item of a `for_each` step.
    pub index: Option<u32>,
    #[schema(value_type = Object)]
    pub error: Value,
    #[schema(value_type = Vec<Object>)]
    pub attempts: Value,
    /// The rendered inputs, secrets redacted.
    #[schema(value_type = Object)]
    pub inputs: Value,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct DeadLetterList {
    pub items: Vec<DeadLetterOut>,
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/v1/dead-letters", tag = "dead letters", params(DeadLetterFilter), security(("api_key" = [])),
    responses((status = 200, description = "Newest first", body = DeadLetterList)))]
pub async fn dead_letters(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    Q(f): Q<DeadLetterFilter>,
) -> ApiResult<Response> {
    let limit = Page { cursor: None, limit: f.limit }.limit()?;
    if let Some(c) = &f.cursor {
        check_id(c, "dl_", "the cursor")
            .map_err(|_| ApiError::bad_request("invalid_query", "`cursor` is not a dead letter id"))?;
    }
    // Pages of the store, filtered by run, until this page is full (at most 20 pages of the store looked at).
    let mut page = Vec::new();
    let mut before = f.cursor.clone();
    let mut more = false;
    for _ in 0..20 {
        let batch = state.s.store.dead_letters_page(&t.id, before.as_deref(), limit + 1).await?;
        let exhausted = batch.len() <= limit;
        before = batch.last().map(|d| d.id.clone());
        for d in batch {
            if f.run.as_ref().is_none_or(|r| *r == d.run_id) {
                page.push(d);
            }
        }
        if page.len() > limit {
            more = true;
            page.truncate(limit);
            break;
        }
        if exhausted {
            more = false;
            break;
        }
        more = true;
    }
    let next = if more { page.last().map(|d| d.id.clone()).or(before) } else { None };
    let items = page
        .into_iter()
        .map(|d| DeadLetterOut {
            id: d.id,
            run_id: d.run_id,
            step: d.step,
            index: d.index,
            error: json!(d.error),
            attempts: json!(d.attempts),
            inputs: d.inputs,
            created_at: d.created_at,
        })
        .collect();
    Ok(json(StatusCode::OK, json!(DeadLetterList { items, next })))
}

#[utoipa::path(post, path = "/v1/dead-letters/{id}/replay", tag = "dead letters", params(("id" = String, Path)),
    security(("api_key" = [])),
    responses((status = 202, description = "The step runs again with the same idempotency key; the run continues", body = RunStarted),
        (status = 404, description = "No such dead letter (or it was replayed already)", body = super::ErrorBody)))]
pub async fn replay(TenantAuth(t): TenantAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<Response> {
    check_id(&id, "dl_", "the dead letter")?;
    let run = state.s.executor.replay(&t.id, &id).await?;
    Ok(json(StatusCode::ACCEPTED, json!(RunStarted { run_id: run, duplicate: None })))
}

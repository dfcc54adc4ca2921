//! Pipelines: versions kept, validated exactly as `sluice validate` does; an invalid one is 422 and changes
//! nothing.

use super::{check_name, now_rfc3339, paginate, Page};
use crate::auth::TenantAuth;
use crate::error::{ApiError, ApiResult, Raw, P, Q};
use crate::{json, Shared};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use sluice_engine::compile::Plan;
use sluice_runtime::catalog::{PipelineVersion, Put};
use utoipa::ToSchema;

/// What a PUT did.
#[derive(Serialize, ToSchema)]
pub struct PutResult {
    pub name: String,
    pub version: u32,
    /// False when the text equals the latest version's (no new version).
    pub changed: bool,
    /// Warnings of validation, as `sluice validate --format json` prints them.
    #[schema(value_type = Vec<super::DiagnosticOut>)]
    pub warnings: Vec<Value>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionOut {
    pub version: u32,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineOut {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    /// The triggers as written.
    #[schema(value_type = Vec<Object>)]
    pub triggers: Value,
    /// The text as it was sent.
    pub source: String,
    /// `yaml` or `json`.
    pub format: String,
    /// `api`, or `folder` when loaded from the server's `--pipelines` folder.
    pub origin: String,
    pub created_at: String,
    /// Every version kept, oldest first.
    pub versions: Vec<VersionOut>,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineSummary {
    pub name: String,
    pub version: u32,
    pub description: Option<String>,
    #[schema(value_type = Vec<Object>)]
    pub triggers: Value,
    pub origin: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct PipelineList {
    pub items: Vec<PipelineSummary>,
    pub next: Option<String>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct VersionQuery {
    /// A version to show instead of the latest.
    pub version: Option<u32>,
    /// `json`: the pipeline itself as canonical JSON (the same document a no-code editor can PUT back).
    pub export: Option<String>,
}

fn digest(src: &str) -> String {
    hex::encode(Sha256::digest(src.as_bytes()))
}

/// Validates and stores a pipeline of `tenant` named `name` (from `src`, `yaml` or `json`): 422 with the
/// diagnostics when invalid, 409 when its webhook path is another pipeline's.
pub async fn store(
    state: &Shared,
    tenant: &str,
    name: &str,
    src: &str,
    format: &str,
    origin: &str,
) -> ApiResult<PutResult> {
    let (version, warnings) = prepare(name, src, format, origin, None, None, state).await?;
    put_version(state, tenant, version, warnings, false).await
}

/// Validates a pipeline into the version to store, or answers 422 with every diagnostic.
pub async fn prepare(
    name: &str,
    src: &str,
    format: &str,
    origin: &str,
    author: Option<&str>,
    commit: Option<&str>,
    state: &Shared,
) -> ApiResult<(PipelineVersion, Vec<Value>)> {
    let diags_or = validate(state, name, src, format).await?;
    let (plan, warnings) = diags_or;
    let version = PipelineVersion {
        name: name.to_string(),
        version: 0,
        source: src.to_string(),
        format: format.to_string(),
        hash: digest(src),
        plan: serde_json::to_value(&plan).map_err(ApiError::internal)?,
        created_at: now_rfc3339(),
        origin: origin.to_string(),
        author: author.map(str::to_string),
        commit: commit.map(str::to_string),
    };
    Ok((version, warnings))
}

/// Compiles a pipeline exactly as `sluice validate` checks it: the plan and the warnings, or 422.
pub async fn validate(state: &Shared, name: &str, src: &str, format: &str) -> ApiResult<(Plan, Vec<Value>)> {
    let file = format!("{name}.{}", if format == "json" { "json" } else { "yaml" });
    let validator = state.s.validator.clone();
    let (file2, src2) = (file.clone(), src.to_string());
    // Validation is CPU work: off the async threads.
    let checked = tokio::task::spawn_blocking(move || match sluice_engine::compile(&validator, &file2, &src2) {
        Ok((plan, warnings)) => (warnings, Some(plan)),
        Err(diags) => (diags, None),
    })
    .await
    .map_err(ApiError::internal)?;
    let (diags, plan): (Vec<sluice_engine::diag::Diagnostic>, Option<Plan>) = checked;
    let as_json: Vec<Value> = diags.iter().map(|d| d.to_json()).collect();
    let Some(plan) = plan else {
        let errors = diags.iter().filter(|d| d.is_error()).count();
        let first = diags.iter().find(|d| d.is_error()).map(|d| format!(": {}", d.message)).unwrap_or_default();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_pipeline",
            format!("the pipeline has {errors} error(s){first}; see `diagnostics`; nothing was stored"),
        )
        .with("diagnostics", Value::Array(as_json)));
    };
    let warnings: Vec<Value> = as_json.into_iter().filter(|d| d["severity"] != "error").collect();
    Ok((plan, warnings))
}

/// Stores a prepared version; unless `force`, a pipeline managed by `sluice sync` is refused (409), checked in
/// the store's atomic write.
pub async fn put_version(
    state: &Shared,
    tenant: &str,
    version: PipelineVersion,
    warnings: Vec<Value>,
    force: bool,
) -> ApiResult<PutResult> {
    let (name, origin) = (version.name.clone(), version.origin.clone());
    let name = name.as_str();
    let origin = origin.as_str();
    let put = state.s.catalog.put_pipeline(tenant, &version, force).await?;
    let (version, changed) = match put {
        Put::Created(v) => (v, true),
        Put::Unchanged(v) => (v, false),
        // A webhook path belongs to one pipeline of the tenant (checked in the store's atomic write).
        Put::PathTaken(path, owner) => {
            return Err(ApiError::conflict(
                "webhook_path_taken",
                format!("the webhook path `{path}` belongs to pipeline `{owner}`; choose another `path`"),
            ))
        }
        // A pipeline `sluice sync` manages follows its git folder: a hand edit would drift from it.
        Put::Managed(_, commit) => {
            return Err(ApiError::conflict(
                "managed_by_git",
                format!(
                    "pipeline `{name}` is managed by `sluice sync`{}; change it in its git folder, or send it with `?force=true`",
                    commit.map(|c| format!(" (commit {c})")).unwrap_or_default()
                ),
            ))
        }
    };
    if changed {
        state.changed(tenant);
        tracing::info!(tenant, pipeline = name, version, origin, "pipeline stored");
    }
    Ok(PutResult { name: name.to_string(), version, changed, warnings })
}

/// `yaml` or `json`, from the Content-Type.
fn format_of(headers: &HeaderMap) -> ApiResult<&'static str> {
    let ct = headers.get(axum::http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match essence.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" | "text/plain" | "" => Ok("yaml"),
        "application/json" => Ok("json"),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("`{other}` is not a pipeline format: send `application/yaml` or `application/json`"),
        )),
    }
}

#[utoipa::path(put, path = "/v1/pipelines/{name}", tag = "pipelines", params(("name" = String, Path), PutQuery),
    request_body(content = String, description = "The pipeline, as YAML or JSON", content_type = "application/yaml"),
    security(("api_key" = [])),
    responses((status = 201, description = "A new pipeline (version 1)", body = PutResult),
        (status = 200, description = "A new version, or unchanged", body = PutResult),
        (status = 422, description = "Invalid: `diagnostics` holds what `sluice validate --format json` prints", body = super::InvalidPipelineBody),
        (status = 409, body = super::ErrorBody), (status = 413, body = super::ErrorBody), (status = 415, body = super::ErrorBody)))]
pub async fn put(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    Q(q): Q<PutQuery>,
    axum::Extension(key): axum::Extension<crate::auth::KeyId>,
    headers: HeaderMap,
    Raw(body): Raw,
) -> ApiResult<Response> {
    check_name("pipeline", &name, false)?;
    let format = format_of(&headers)?;
    let src = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("invalid_body", "the pipeline is not UTF-8 text"))?;
    let (version, warnings) = prepare(&name, src, format, "api", Some(&key.0), None, &state).await?;
    let r = put_version(&state, &t.id, version, warnings, q.force.unwrap_or(false)).await?;
    let status = if r.changed && r.version == 1 { StatusCode::CREATED } else { StatusCode::OK };
    Ok(json(status, json!(r)))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct PutQuery {
    /// Store even when the pipeline is managed by `sluice sync`.
    pub force: Option<bool>,
}

fn triggers_of(p: &PipelineVersion) -> Value {
    p.plan.get("triggers").cloned().unwrap_or(Value::Array(vec![]))
}

fn description_of(p: &PipelineVersion) -> Option<String> {
    p.plan.get("description").and_then(Value::as_str).map(str::to_string)
}

#[utoipa::path(get, path = "/v1/pipelines/{name}", tag = "pipelines", params(("name" = String, Path), VersionQuery),
    security(("api_key" = [])),
    responses((status = 200, description = "The pipeline with its versions; with `Accept: application/yaml` its canonical YAML", body = PipelineOut),
        (status = 404, body = super::ErrorBody)))]
pub async fn get(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    Q(q): Q<VersionQuery>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    check_name("pipeline", &name, false).map_err(|_| ApiError::not_found("the pipeline"))?;
    let p =
        state.s.catalog.pipeline(&t.id, &name, q.version).await?.ok_or_else(|| ApiError::not_found("the pipeline"))?;
    if let Some(e) = q.export.as_deref() {
        if e != "json" {
            return Err(ApiError::bad_request(
                "invalid_query",
                "`export` takes `json` (or ask for YAML with `Accept: application/yaml`)",
            ));
        }
        let file = format!("{name}.{}", if p.format == "json" { "json" } else { "yaml" });
        let checked = state.s.validator.check(&file, &p.source);
        let doc = checked
            .pipeline
            .as_ref()
            .and_then(|pl| serde_json::to_value(pl).ok())
            .ok_or_else(|| ApiError::internal(format!("stored pipeline {name} no longer parses")))?;
        return Ok(json(StatusCode::OK, doc));
    }
    // `Accept: application/yaml`: the pipeline itself in its canonical form (an export a no-code editor
    // reads back; exporting it again gives the same bytes).
    let accept = headers.get(axum::http::header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.contains("yaml") {
        // YAML as `sluice fmt` writes it (comments kept); a JSON pipeline in the same canonical form.
        let yaml = if p.format == "json" {
            let checked = state.s.validator.check(&format!("{name}.json"), &p.source);
            checked
                .pipeline
                .as_ref()
                .map(sluice_engine::emit::canonical_yaml)
                .ok_or_else(|| ApiError::internal(format!("stored pipeline {name} no longer parses")))?
        } else {
            sluice_engine::fmt::format(&p.source)
                .map_err(|_| ApiError::internal(format!("stored pipeline {name} no longer parses")))?
        };
        return Ok(([(axum::http::header::CONTENT_TYPE, "application/yaml")], yaml).into_response());
    }
    let versions = state.s.catalog.versions(&t.id, &name).await?;
    let out = PipelineOut {
        name: p.name.clone(),
        version: p.version,
        description: description_of(&p),
        triggers: triggers_of(&p),
        source: p.source.clone(),
        format: p.format.clone(),
        origin: p.origin.clone(),
        created_at: p.created_at.clone(),
        versions: versions.into_iter().map(|(version, created_at)| VersionOut { version, created_at }).collect(),
    };
    Ok(json(StatusCode::OK, json!(out)))
}

#[utoipa::path(get, path = "/v1/pipelines", tag = "pipelines", params(Page), security(("api_key" = [])),
    responses((status = 200, body = PipelineList)))]
pub async fn list(TenantAuth(t): TenantAuth, State(state): State<Shared>, Q(page): Q<Page>) -> ApiResult<Response> {
    let all = state.s.catalog.pipelines(&t.id).await?;
    let (items, next) = paginate(all, |p| p.name.as_str(), &page, false)?;
    let items: Vec<PipelineSummary> = items
        .iter()
        .map(|p| PipelineSummary {
            name: p.name.clone(),
            version: p.version,
            description: description_of(p),
            triggers: triggers_of(p),
            origin: p.origin.clone(),
            created_at: p.created_at.clone(),
        })
        .collect();
    Ok(json(StatusCode::OK, json!(PipelineList { items, next })))
}

#[utoipa::path(delete, path = "/v1/pipelines/{name}", tag = "pipelines", params(("name" = String, Path), PutQuery),
    security(("api_key" = [])),
    responses((status = 204, description = "Deleted; its runs go on with the version they started on"),
        (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    Q(q): Q<PutQuery>,
) -> ApiResult<StatusCode> {
    check_name("pipeline", &name, false).map_err(|_| ApiError::not_found("the pipeline"))?;
    if let Some(cur) = state.s.catalog.pipeline(&t.id, &name, None).await? {
        if cur.origin == "sync" && !q.force.unwrap_or(false) {
            return Err(ApiError::conflict(
                "managed_by_git",
                format!("pipeline `{name}` is managed by `sluice sync`; delete its file and sync with --prune, or DELETE with `?force=true`"),
            ));
        }
    }
    if !state.s.catalog.delete_pipeline(&t.id, &name).await? {
        return Err(ApiError::not_found("the pipeline"));
    }
    state.changed(&t.id);
    Ok(StatusCode::NO_CONTENT)
}

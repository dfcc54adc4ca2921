//! Git-ops and versions: `POST /v1/sync` (plan, or apply a whole folder at once with optimistic
//! concurrency), `GET /v1/pipelines/{name}/versions`, `.../diff`, `POST .../rollback`.

use super::pipelines::{prepare, put_version, validate};
use super::{check_name, now_rfc3339};
use crate::auth::{KeyId, TenantAuth};
use crate::error::{ApiError, ApiResult, Body, P, Q};
use crate::{json, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sluice_runtime::catalog::{Applied, BulkOp, PipelineVersion, Put};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A plan as a map: steps keyed by id (readable paths such as `steps.fetch.timeout`).
fn keyed(plan: &Value) -> Value {
    let mut v = plan.clone();
    for list in ["steps", "on_failure"] {
        if let Some(Value::Array(steps)) = plan.get(list) {
            let mut m = Map::new();
            for s in steps {
                let id = s.get("id").and_then(Value::as_str).unwrap_or("").to_string();
                let mut s = s.clone();
                if let Value::Object(o) = &mut s {
                    o.remove("id");
                }
                m.insert(id, s);
            }
            v[list] = Value::Object(m);
        }
    }
    v
}

fn shown(v: &Value) -> String {
    match v {
        Value::String(s) if s.contains('\n') => format!("{s:?}"),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The changes from `a` to `b`, one line each: `path: old -> new`, `path: added value`, `path: removed`.
pub fn diff(a: &Value, b: &Value) -> Vec<String> {
    fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                    walk(&p, x.get(k), y.get(k), out);
                }
            }
            (Some(x), Some(y)) if x == y => {}
            (Some(Value::Array(x)), Some(Value::Array(y))) => {
                for i in 0..x.len().max(y.len()) {
                    walk(&format!("{path}[{i}]"), x.get(i), y.get(i), out);
                }
            }
            (Some(x), Some(y)) => out.push(format!("{path}: {} -> {}", shown(x), shown(y))),
            (None, Some(y)) => out.push(format!("{path}: added {}", shown(y))),
            (Some(_), None) => out.push(format!("{path}: removed")),
            (None, None) => {}
        }
    }
    let mut out = Vec::new();
    walk("", Some(&keyed(a)), Some(&keyed(b)), &mut out);
    out
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncFile {
    /// The pipeline name (the file name without its extension).
    pub name: String,
    pub source: String,
    /// `yaml` (default) or `json`.
    #[serde(default)]
    pub format: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncIn {
    /// Every pipeline of the folder.
    pub files: Vec<SyncFile>,
    /// Delete the tenant's pipelines that are not in `files`.
    #[serde(default)]
    pub prune: bool,
    /// Only answer what would change.
    #[serde(default)]
    pub plan: bool,
    /// The versions the plan saw (`null`: absent); the apply is refused when the server moved since.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub expected: Option<BTreeMap<String, Option<u32>>>,
    /// The git commit the folder is at.
    pub commit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Change {
    pub name: String,
    /// The version now (absent for a new pipeline).
    pub from: Option<u32>,
    /// What changes, one line each (`steps.fetch.timeout: 10s -> 30s`).
    pub changes: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct SyncPlan {
    pub create: Vec<Change>,
    pub update: Vec<Change>,
    /// Deleted with `prune` (listed without it, as not deleted).
    pub delete: Vec<Change>,
    pub unchanged: Vec<String>,
    /// Not in the folder and kept, because `prune` is off.
    pub kept: Vec<String>,
    /// Loaded from the server's `--pipelines` folder: sync neither takes them over nor deletes them.
    pub skipped: Vec<String>,
    /// The versions this plan saw, to send back with the apply.
    #[schema(value_type = Object)]
    pub expected: BTreeMap<String, Option<u32>>,
    /// Whether anything would change.
    pub changed: bool,
    /// With an apply: the version of each pipeline now (`null`: deleted).
    #[schema(value_type = Option<Object>)]
    pub applied: Option<BTreeMap<String, Option<u32>>>,
}

#[utoipa::path(post, path = "/v1/sync", tag = "pipelines", request_body = SyncIn, security(("api_key" = [])),
    responses((status = 200, description = "The plan, and with `plan: false` what was applied (all of it)", body = SyncPlan),
        (status = 422, description = "A pipeline is invalid: `diagnostics` of every file; nothing changed", body = super::InvalidPipelineBody),
        (status = 409, description = "The server moved since the plan, or a webhook path conflicts: nothing changed", body = super::ErrorBody)))]
pub async fn sync(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    axum::Extension(key): axum::Extension<KeyId>,
    Body(req): Body<SyncIn>,
) -> ApiResult<Response> {
    if req.files.len() > 1000 {
        return Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "too_many_files", "at most 1000 pipelines a sync"));
    }
    // Every file validated first; any error: nothing changes, every diagnostic answered.
    let mut prepared = Vec::new();
    let mut diagnostics = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for f in &req.files {
        check_name("pipeline", &f.name, false)?;
        if !seen.insert(f.name.clone()) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "duplicate_pipeline",
                format!("`{}` is in the folder twice", f.name),
            ));
        }
        let format = f.format.as_deref().unwrap_or("yaml");
        if !matches!(format, "yaml" | "json") {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_format",
                format!("`{}`: format must be `yaml` or `json`", f.name),
            ));
        }
        match prepare(&f.name, &f.source, format, "sync", Some(&key.0), req.commit.as_deref(), &state).await {
            Ok((v, _)) => prepared.push(v),
            Err(e) => match e.extra.as_deref() {
                Some((_, Value::Array(d))) => diagnostics.extend(d.iter().cloned()),
                _ => return Err(e),
            },
        }
    }
    if !diagnostics.is_empty() {
        let errors = diagnostics.iter().filter(|d| d["severity"] == "error").count();
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_pipeline",
            format!("the folder has {errors} error(s); see `diagnostics`; nothing changed"),
        )
        .with("diagnostics", Value::Array(diagnostics)));
    }
    let current: BTreeMap<String, PipelineVersion> =
        state.s.catalog.pipelines(&t.id).await?.into_iter().map(|p| (p.name.clone(), p)).collect();
    let mut plan = SyncPlan {
        create: vec![],
        update: vec![],
        delete: vec![],
        unchanged: vec![],
        kept: vec![],
        skipped: vec![],
        expected: BTreeMap::new(),
        changed: false,
        applied: None,
    };
    let mut ops = Vec::new();
    for v in &prepared {
        match current.get(&v.name) {
            None => {
                plan.expected.insert(v.name.clone(), None);
                plan.create.push(Change { name: v.name.clone(), from: None, changes: vec![] });
                ops.push(BulkOp::Put(Box::new(v.clone())));
            }
            Some(cur) if cur.origin == "folder" => {
                plan.expected.insert(v.name.clone(), Some(cur.version));
                plan.skipped.push(v.name.clone());
            }
            Some(cur) => {
                plan.expected.insert(v.name.clone(), Some(cur.version));
                if cur.hash == v.hash && cur.origin == "sync" {
                    plan.unchanged.push(v.name.clone());
                } else {
                    let mut changes = diff(&cur.plan, &v.plan);
                    if changes.is_empty() {
                        changes.push(if cur.hash == v.hash {
                            format!("managed by git from now on (was `{}`)", cur.origin)
                        } else {
                            "formatting or comments only".to_string()
                        });
                    }
                    plan.update.push(Change { name: v.name.clone(), from: Some(cur.version), changes });
                    ops.push(BulkOp::Put(Box::new(v.clone())));
                }
            }
        }
    }
    for (name, cur) in &current {
        if prepared.iter().any(|v| &v.name == name) {
            continue;
        }
        plan.expected.insert(name.clone(), Some(cur.version));
        if cur.origin == "folder" {
            plan.skipped.push(name.clone());
        } else if req.prune {
            plan.delete.push(Change { name: name.clone(), from: Some(cur.version), changes: vec![] });
            ops.push(BulkOp::Delete(name.clone()));
        } else {
            plan.kept.push(name.clone());
        }
    }
    plan.changed = !ops.is_empty();
    if req.plan {
        return Ok(json(StatusCode::OK, json!(plan)));
    }
    // The versions the plan saw: the caller's when it sends them (a plan made earlier), else this one's.
    let expected: Vec<(String, Option<u32>)> = match &req.expected {
        Some(e) => e.iter().map(|(k, v)| (k.clone(), *v)).collect(),
        None => plan.expected.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    };
    for k in plan.expected.keys() {
        if !expected.iter().any(|(n, _)| n == k) {
            return Err(ApiError::conflict(
                "concurrent_change",
                format!("pipeline `{k}` appeared on the server after the plan was made; nothing changed; plan again"),
            ));
        }
    }
    match state.s.catalog.apply(&t.id, &ops, &expected).await? {
        Applied::Done(done) => {
            state.changed(&t.id);
            let mut applied = BTreeMap::new();
            for (name, put) in done {
                applied.insert(
                    name,
                    match put {
                        Some(Put::Created(v) | Put::Unchanged(v)) => Some(v),
                        _ => None,
                    },
                );
            }
            tracing::info!(tenant = %t.id, changes = ops.len(), commit = req.commit.as_deref().unwrap_or(""), "sync applied");
            plan.applied = Some(applied);
            Ok(json(StatusCode::OK, json!(plan)))
        }
        Applied::Moved { name, expected, found } => {
            let v = |x: Option<u32>| x.map_or("absent".to_string(), |v| format!("version {v}"));
            Err(ApiError::conflict(
                "concurrent_change",
                format!(
                    "pipeline `{name}` changed on the server since the plan ({} then, {} now); nothing changed; plan again",
                    v(expected),
                    v(found)
                ),
            ))
        }
        Applied::PathTaken { name, path, owner } => Err(ApiError::conflict(
            "webhook_path_taken",
            format!("`{name}` takes the webhook path `{path}` of pipeline `{owner}`; nothing changed"),
        )),
    }
}

#[derive(Serialize, ToSchema)]
pub struct VersionInfo {
    pub version: u32,
    pub created_at: String,
    /// Hex SHA-256 of the source.
    pub hash: String,
    /// `api`, `folder` or `sync`.
    pub origin: String,
    /// The API key id that made it.
    pub author: Option<String>,
    /// The git commit `sluice sync` applied it from.
    pub commit: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct VersionList {
    pub items: Vec<VersionInfo>,
    pub next: Option<String>,
}

#[utoipa::path(get, path = "/v1/pipelines/{name}/versions", tag = "pipelines", params(("name" = String, Path)),
    security(("api_key" = [])), responses((status = 200, description = "Oldest first", body = VersionList), (status = 404, body = super::ErrorBody)))]
pub async fn versions(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
) -> ApiResult<Response> {
    check_name("pipeline", &name, false).map_err(|_| ApiError::not_found("the pipeline"))?;
    let list = state.s.catalog.versions(&t.id, &name).await?;
    if list.is_empty() {
        return Err(ApiError::not_found("the pipeline"));
    }
    let mut items = Vec::new();
    for (v, _) in list {
        if let Some(p) = state.s.catalog.pipeline(&t.id, &name, Some(v)).await? {
            items.push(VersionInfo {
                version: v,
                created_at: p.created_at,
                hash: p.hash,
                origin: p.origin,
                author: p.author,
                commit: p.commit,
            });
        }
    }
    Ok(json(StatusCode::OK, json!(VersionList { items, next: None })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DiffQuery {
    pub from: u32,
    /// The latest when not given.
    pub to: Option<u32>,
}

#[utoipa::path(get, path = "/v1/pipelines/{name}/diff", tag = "pipelines", params(("name" = String, Path), DiffQuery),
    security(("api_key" = [])), responses((status = 200, description = "What changed between two versions"), (status = 404, body = super::ErrorBody)))]
pub async fn diff_versions(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    Q(q): Q<DiffQuery>,
) -> ApiResult<Response> {
    check_name("pipeline", &name, false).map_err(|_| ApiError::not_found("the pipeline"))?;
    let a = state
        .s
        .catalog
        .pipeline(&t.id, &name, Some(q.from))
        .await?
        .ok_or_else(|| ApiError::not_found("that version"))?;
    let b = state.s.catalog.pipeline(&t.id, &name, q.to).await?.ok_or_else(|| ApiError::not_found("that version"))?;
    Ok(json(
        StatusCode::OK,
        json!({ "name": name, "from": a.version, "to": b.version, "changes": diff(&a.plan, &b.plan) }),
    ))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RollbackIn {
    /// The version whose text becomes the newest version.
    pub version: u32,
    /// Also for a pipeline managed by `sluice sync`.
    #[serde(default)]
    pub force: bool,
}

#[utoipa::path(post, path = "/v1/pipelines/{name}/rollback", tag = "pipelines", params(("name" = String, Path)), request_body = RollbackIn,
    security(("api_key" = [])), responses((status = 200, description = "A new version with that version's text", body = super::pipelines::PutResult),
        (status = 404, body = super::ErrorBody), (status = 409, body = super::ErrorBody)))]
pub async fn rollback(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    axum::Extension(key): axum::Extension<KeyId>,
    Body(r): Body<RollbackIn>,
) -> ApiResult<Response> {
    check_name("pipeline", &name, false).map_err(|_| ApiError::not_found("the pipeline"))?;
    let cur = state.s.catalog.pipeline(&t.id, &name, None).await?.ok_or_else(|| ApiError::not_found("the pipeline"))?;
    if cur.origin == "sync" && !r.force {
        return Err(ApiError::conflict(
            "managed_by_git",
            format!("pipeline `{name}` is managed by `sluice sync`; roll back in git, or send `force: true`"),
        ));
    }
    let old = state
        .s
        .catalog
        .pipeline(&t.id, &name, Some(r.version))
        .await?
        .ok_or_else(|| ApiError::not_found("that version"))?;
    // Validated again: the step kinds may have changed since that version.
    validate(&state, &name, &old.source, &old.format).await?;
    let (version, warnings) = prepare(&name, &old.source, &old.format, "api", Some(&key.0), None, &state).await?;
    let result =
        put_version(&state, &t.id, PipelineVersion { created_at: now_rfc3339(), ..version }, warnings, r.force).await?;
    Ok(json(StatusCode::OK, json!(result)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diffs_read_as_paths() {
        let a = json!({ "name": "p", "steps": [{ "id": "fetch", "timeout": "10s", "with": { "url": "a" } }] });
        let b = json!({ "name": "p", "steps": [{ "id": "fetch", "timeout": "30s", "with": { "url": "a", "method": "POST" } }, { "id": "x", "uses": "log" }] });
        assert_eq!(
            diff(&a, &b),
            vec![
                "steps.fetch.timeout: 10s -> 30s".to_string(),
                "steps.fetch.with.method: added POST".to_string(),
                "steps.x: added {\"uses\":\"log\"}".to_string(),
            ]
        );
        assert!(diff(&a, &a).is_empty());
    }
}

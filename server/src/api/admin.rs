//! Admin: tenants and their API keys (`SLUICE_ADMIN_TOKEN`).

use super::{check_name, now_rfc3339, paginate, Page};
use crate::auth::{new_key, AdminAuth};
use crate::error::{ApiError, ApiResult, Body, P, Q};
use crate::{json, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_runtime::catalog::{Limits, Tenant};
use utoipa::ToSchema;

/// A tenant's limits; each field is optional and falls back to the server's default.
#[derive(Debug, Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct LimitsIn {
    /// Requests a second on the API and webhook endpoints, on average (0.1 to 100000).
    #[schema(example = 20)]
    pub requests_per_second: Option<f64>,
    /// Requests admitted at once above the average (1 to 1000000).
    #[schema(example = 40)]
    pub burst: Option<u32>,
    /// Runs queued or running at once; more are refused with 429 (1 to 1000000).
    #[schema(example = 100)]
    pub max_runs_in_flight: Option<u32>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTenant {
    /// `^[a-z0-9][a-z0-9-]{0,62}$`
    #[schema(example = "acme")]
    pub id: String,
    #[serde(default)]
    pub limits: Option<LimitsIn>,
}

#[derive(Serialize, ToSchema)]
pub struct LimitsOut {
    pub requests_per_second: f64,
    pub burst: u32,
    pub max_runs_in_flight: u32,
}

#[derive(Serialize, ToSchema)]
pub struct TenantOut {
    pub id: String,
    pub limits: LimitsOut,
    pub created_at: String,
}

/// A new key: shown once, stored only as its hash.
#[derive(Serialize, ToSchema)]
pub struct CreatedKey {
    /// The tenant.
    pub id: String,
    pub key_id: String,
    /// `sk_...`: shown only in this answer.
    pub api_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyOut {
    pub id: String,
    /// The key's first characters.
    pub prefix: String,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct TenantList {
    pub items: Vec<TenantOut>,
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub items: Vec<KeyOut>,
    pub next: Option<String>,
}

pub fn tenant_out(t: &Tenant) -> TenantOut {
    TenantOut {
        id: t.id.clone(),
        limits: LimitsOut {
            requests_per_second: t.limits.requests_per_second,
            burst: t.limits.burst,
            max_runs_in_flight: t.limits.max_runs_in_flight,
        },
        created_at: t.created_at.clone(),
    }
}

fn limits(given: Option<LimitsIn>, default: Limits) -> ApiResult<Limits> {
    let g = given.unwrap_or_default();
    let out = Limits {
        requests_per_second: g.requests_per_second.unwrap_or(default.requests_per_second),
        burst: g.burst.unwrap_or(default.burst),
        max_runs_in_flight: g.max_runs_in_flight.unwrap_or(default.max_runs_in_flight),
    };
    let bad = |m: &str| Err(ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_limits", m.to_string()));
    if !(0.1..=100_000.0).contains(&out.requests_per_second) {
        return bad("`limits.requests_per_second` must be from 0.1 to 100000");
    }
    if !(1..=1_000_000).contains(&out.burst) {
        return bad("`limits.burst` must be from 1 to 1000000");
    }
    if !(1..=1_000_000).contains(&out.max_runs_in_flight) {
        return bad("`limits.max_runs_in_flight` must be from 1 to 1000000");
    }
    Ok(out)
}

/// Creates a tenant (and the tenant itself when it does not exist yet) with its first API key.
pub async fn create_tenant(state: &Shared, id: &str, given: Option<LimitsIn>) -> ApiResult<Option<CreatedKey>> {
    check_name("tenant", id, false)?;
    let t = Tenant { id: id.to_string(), limits: limits(given, state.s.default_limits)?, created_at: now_rfc3339() };
    if !state.s.catalog.create_tenant(&t).await? {
        return Ok(None);
    }
    let (key, record) = new_key();
    if let Err(e) = state.s.catalog.add_key(id, &record).await {
        // Without its key the tenant is unusable and a retry would answer 409: take it back.
        let _ = state.s.catalog.delete_tenant(id).await;
        return Err(e.into());
    }
    state.changed(id);
    tracing::info!(tenant = id, "tenant created");
    Ok(Some(CreatedKey { id: id.to_string(), key_id: record.id, api_key: key }))
}

#[utoipa::path(post, path = "/v1/admin/tenants", tag = "admin", request_body = NewTenant,
    security(("admin" = [])),
    responses((status = 201, description = "Created, with its first API key (shown once)", body = CreatedKey),
        (status = 409, description = "The tenant exists", body = super::ErrorBody),
        (status = 401, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn create(_: AdminAuth, State(state): State<Shared>, Body(t): Body<NewTenant>) -> ApiResult<Response> {
    match create_tenant(&state, &t.id, t.limits).await? {
        Some(k) => Ok(json(StatusCode::CREATED, json!(k))),
        None => Err(ApiError::conflict("tenant_exists", format!("tenant `{}` exists already", t.id))),
    }
}

#[utoipa::path(get, path = "/v1/admin/tenants", tag = "admin", params(Page), security(("admin" = [])),
    responses((status = 200, body = TenantList), (status = 401, body = super::ErrorBody)))]
pub async fn list(_: AdminAuth, State(state): State<Shared>, Q(page): Q<Page>) -> ApiResult<Response> {
    let all = state.s.catalog.tenants().await?;
    let (items, next) = paginate(all, |t| t.id.as_str(), &page, false)?;
    let items: Vec<TenantOut> = items.iter().map(tenant_out).collect();
    Ok(json(StatusCode::OK, json!(TenantList { items, next })))
}

#[utoipa::path(get, path = "/v1/admin/tenants/{id}", tag = "admin", params(("id" = String, Path)),
    security(("admin" = [])),
    responses((status = 200, body = TenantOut), (status = 404, body = super::ErrorBody)))]
pub async fn get(_: AdminAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<Response> {
    check_name("tenant", &id, false).map_err(|_| ApiError::not_found("the tenant"))?;
    let t = state.s.catalog.tenant(&id).await?.ok_or_else(|| ApiError::not_found("the tenant"))?;
    Ok(json(StatusCode::OK, json!(tenant_out(&t))))
}

#[utoipa::path(delete, path = "/v1/admin/tenants/{id}", tag = "admin", params(("id" = String, Path)),
    security(("admin" = [])),
    responses((status = 204, description = "Deleted with everything it owned"), (status = 404, body = super::ErrorBody)))]
pub async fn delete(_: AdminAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<StatusCode> {
    check_name("tenant", &id, false).map_err(|_| ApiError::not_found("the tenant"))?;
    if !state.s.catalog.delete_tenant(&id).await? {
        return Err(ApiError::not_found("the tenant"));
    }
    state.changed(&id);
    tracing::info!(tenant = id, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/admin/tenants/{id}/keys", tag = "admin", params(("id" = String, Path)),
    security(("admin" = [])),
    responses((status = 201, description = "A new key (shown once)", body = CreatedKey), (status = 404, body = super::ErrorBody)))]
pub async fn create_key(_: AdminAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<Response> {
    check_name("tenant", &id, false).map_err(|_| ApiError::not_found("the tenant"))?;
    state.s.catalog.tenant(&id).await?.ok_or_else(|| ApiError::not_found("the tenant"))?;
    let (key, record) = new_key();
    state.s.catalog.add_key(&id, &record).await?;
    state.changed(&id);
    Ok(json(StatusCode::CREATED, json!(CreatedKey { id, key_id: record.id, api_key: key })))
}

#[utoipa::path(get, path = "/v1/admin/tenants/{id}/keys", tag = "admin", params(("id" = String, Path)),
    security(("admin" = [])),
    responses((status = 200, body = KeyList), (status = 404, body = super::ErrorBody)))]
pub async fn keys(_: AdminAuth, State(state): State<Shared>, P(id): P<String>) -> ApiResult<Response> {
    check_name("tenant", &id, false).map_err(|_| ApiError::not_found("the tenant"))?;
    state.s.catalog.tenant(&id).await?.ok_or_else(|| ApiError::not_found("the tenant"))?;
    let items: Vec<KeyOut> = state
        .s
        .catalog
        .keys(&id)
        .await?
        .into_iter()
        .map(|k| KeyOut { id: k.id, prefix: k.prefix, created_at: k.created_at })
        .collect();
    Ok(json(StatusCode::OK, json!(KeyList { items, next: None })))
}

#[utoipa::path(delete, path = "/v1/admin/tenants/{id}/keys/{key_id}", tag = "admin",
    params(("id" = String, Path), ("key_id" = String, Path)), security(("admin" = [])),
    responses((status = 204, description = "Revoked: the key stops working on every server"), (status = 404, body = super::ErrorBody)))]
pub async fn revoke_key(
    _: AdminAuth,
    State(state): State<Shared>,
    P((id, key_id)): P<(String, String)>,
) -> ApiResult<StatusCode> {
    check_name("tenant", &id, false).map_err(|_| ApiError::not_found("the tenant"))?;
    if !state.s.catalog.revoke_key(&id, &key_id).await? {
        return Err(ApiError::not_found("the key"));
    }
    state.changed(&id);
    Ok(StatusCode::NO_CONTENT)
}

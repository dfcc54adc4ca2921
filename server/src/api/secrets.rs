//! Secrets: sealed under the master key before they reach the store, never returned.

use super::{check_name, now_rfc3339};
use crate::auth::TenantAuth;
use crate::error::{ApiError, ApiResult, Body, P};
use crate::{json, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_runtime::tenancy::secret_owner;
use utoipa::ToSchema;

/// The largest secret value.
pub const MAX_SECRET: usize = 64 * 1024;

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecretIn {
    /// The value; templates read it as `secrets.NAME`. Stored encrypted, never shown again.
    #[schema(example = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")]
    pub value: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretOut {
    pub name: String,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct SecretList {
    pub items: Vec<SecretOut>,
    pub next: Option<String>,
}

#[utoipa::path(put, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), request_body = SecretIn,
    security(("api_key" = [])),
    responses((status = 200, description = "Stored (encrypted); the value is never returned", body = SecretOut),
        (status = 400, body = super::ErrorBody), (status = 422, body = super::ErrorBody)))]
pub async fn put(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    Body(s): Body<SecretIn>,
) -> ApiResult<Response> {
    check_name("secret", &name, true)?;
    if s.value.is_empty() || s.value.len() > MAX_SECRET {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_secret",
            format!("a secret's `value` must be 1 to {MAX_SECRET} bytes"),
        ));
    }
    let sealed = state.s.master_key.seal(&secret_owner(&t.id, &name), &s.value).map_err(ApiError::internal)?;
    let updated_at = now_rfc3339();
    state.s.catalog.put_secret(&t.id, &name, &sealed, &updated_at).await?;
    state.changed(&t.id);
    Ok(json(StatusCode::OK, json!(SecretOut { name, updated_at })))
}

#[utoipa::path(get, path = "/v1/secrets", tag = "secrets", security(("api_key" = [])),
    responses((status = 200, description = "Names only", body = SecretList)))]
pub async fn list(TenantAuth(t): TenantAuth, State(state): State<Shared>) -> ApiResult<Response> {
    let items: Vec<SecretOut> = state
        .s
        .catalog
        .secrets(&t.id)
        .await?
        .into_iter()
        .map(|(name, _, updated_at)| SecretOut { name, updated_at })
        .collect();
    Ok(json(StatusCode::OK, json!(SecretList { items, next: None })))
}

#[utoipa::path(delete, path = "/v1/secrets/{name}", tag = "secrets", params(("name" = String, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Deleted"), (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    check_name("secret", &name, true).map_err(|_| ApiError::not_found("the secret"))?;
    if !state.s.catalog.delete_secret(&t.id, &name).await? {
        return Err(ApiError::not_found("the secret"));
    }
    state.changed(&t.id);
    Ok(StatusCode::NO_CONTENT)
}

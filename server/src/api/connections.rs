//! OAuth2 connections: `PUT/GET/DELETE /v1/connections/{name}`, `POST .../authorize`, and the public
//! `GET /oauth/callback`. Client secrets and tokens are sealed; no answer ever shows them.

use super::{check_name, now_rfc3339};
use crate::auth::TenantAuth;
use crate::error::{ApiError, ApiResult, Body, P, Q};
use crate::{json, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sluice_runtime::oauth::{AuthMethod, CallbackError, Connection, Grant, Status, TokenError};
use std::collections::BTreeMap;
use utoipa::ToSchema;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionIn {
    /// `client_credentials` or `authorization_code`.
    #[schema(value_type = String, example = "authorization_code")]
    pub grant: Grant,
    #[schema(example = "https://auth.example.com/oauth/token")]
    pub token_url: String,
    /// The provider's authorization endpoint (code grant).
    #[schema(example = "https://auth.example.com/oauth/authorize")]
    pub authorize_url: Option<String>,
    pub client_id: String,
    /// Stored encrypted; never shown again.
    pub client_secret: String,
    #[serde(default)]
    pub scopes: Vec<String>,
    /// `client_secret_basic` (default) or `client_secret_post`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub auth_method: AuthMethod,
    /// Extra parameters of the token and authorization requests (e.g. `audience`).
    #[serde(default)]
    pub extra_params: BTreeMap<String, String>,
    /// The provider's issuer, checked against the callback's `iss` (RFC 9207); the authorize URL's origin
    /// when not given.
    pub issuer: Option<String>,
}

/// A connection as shown: everything but the client secret and the tokens.
#[derive(Serialize, ToSchema)]
pub struct ConnectionOut {
    pub name: String,
    pub grant: String,
    pub token_url: String,
    pub authorize_url: Option<String>,
    pub client_id: String,
    pub scopes: Vec<String>,
    pub auth_method: String,
    #[schema(value_type = Object)]
    pub extra_params: serde_json::Value,
    pub issuer: Option<String>,
    /// `connected`, `needs_authorization` or `broken`.
    pub status: String,
    /// When the current access token expires.
    pub expires_at: Option<String>,
    pub granted_scopes: Option<String>,
    /// Why it is not connected.
    pub last_error: Option<String>,
    pub updated_at: String,
}

#[derive(Serialize, ToSchema)]
pub struct ConnectionList {
    pub items: Vec<ConnectionOut>,
    pub next: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Authorization {
    /// Open this URL (the provider's consent page, with PKCE S256 and a fresh `state`).
    pub url: String,
    /// The authorization must come back before this.
    pub expires_at: String,
}

fn web_url(what: &str, s: &str) -> ApiResult<()> {
    match url::Url::parse(s) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection",
            format!("`{what}` must be an http(s) URL"),
        )),
    }
}

fn connections(state: &Shared) -> ApiResult<&sluice_runtime::oauth::Connections> {
    state.s.connections.as_deref().ok_or_else(|| ApiError::internal("connections are not configured"))
}

fn token_error(e: TokenError) -> ApiError {
    match e {
        TokenError::Store(m) => ApiError::internal(m),
        other => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "connection_failed", other.to_string()),
    }
}

#[utoipa::path(put, path = "/v1/connections/{name}", tag = "connections", params(("name" = String, Path)),
    request_body = ConnectionIn, security(("api_key" = [])),
    responses((status = 200, description = "Stored; a client-credentials connection fetches its first token at once", body = ConnectionOut),
        (status = 422, body = super::ErrorBody)))]
pub async fn put(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
    Body(c): Body<ConnectionIn>,
) -> ApiResult<Response> {
    check_name("connection", &name, false)?;
    let mgr = connections(&state)?;
    web_url("token_url", &c.token_url)?;
    if let Some(u) = &c.authorize_url {
        web_url("authorize_url", u)?;
    }
    if c.grant == Grant::AuthorizationCode && c.authorize_url.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection",
            "the authorization_code grant needs `authorize_url`",
        ));
    }
    if c.client_id.is_empty() || c.client_secret.is_empty() || c.client_secret.len() > 4096 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_connection",
            "`client_id` and `client_secret` must be set (a secret of at most 4096 bytes)",
        ));
    }
    // The egress guard applies to token requests too: a private address is refused here already.
    for u in [Some(&c.token_url), c.authorize_url.as_ref()].into_iter().flatten() {
        if let Ok(parsed) = url::Url::parse(u) {
            sluice_connectors::egress::check_url(&parsed, state.s.egress)
                .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_connection", e))?;
        }
    }
    let sealed = mgr.seal_secret(&t.id, &name, &c.client_secret).map_err(ApiError::internal)?;
    let conn = Connection {
        name: name.clone(),
        grant: c.grant,
        token_url: c.token_url,
        authorize_url: c.authorize_url,
        client_id: c.client_id,
        client_secret_sealed: sealed,
        scopes: c.scopes,
        auth_method: c.auth_method,
        extra_params: c.extra_params,
        issuer: c.issuer,
        status: match c.grant {
            Grant::ClientCredentials => Status::Connected,
            Grant::AuthorizationCode => Status::NeedsAuthorization,
        },
        tokens_sealed: None,
        expires_at: None,
        granted_scopes: None,
        last_error: None,
        updated_at: now_rfc3339(),
    };
    // The same provider, client, secret and scopes: the tokens it has stay (a re-sync does not disconnect),
    // read under the connection's lock so a refresh that just rotated them is kept. A broken connection
    // is tried afresh.
    let secret = c.client_secret.clone();
    let (tenant, probe) = (t.id.clone(), conn.clone());
    mgr.save_config(&t.id, &conn, |old| {
        old.status != Status::Broken
            && old.grant == probe.grant
            && old.token_url == probe.token_url
            && old.client_id == probe.client_id
            && old.scopes == probe.scopes
            && mgr.same_secret(&tenant, old, &secret)
    })
    .await?;
    if conn.grant == Grant::ClientCredentials {
        // The first token now: a wrong secret or URL shows at once (the connection says `broken`).
        if let Err(e) = mgr.access_token(&t.id, &name, None).await {
            tracing::warn!(tenant = %t.id, connection = %name, "first token: {e}");
        }
    }
    let now = mgr.load(&t.id, &name).await?.ok_or_else(|| ApiError::not_found("the connection"))?;
    Ok(json(StatusCode::OK, mgr.shown(&now)))
}

#[utoipa::path(get, path = "/v1/connections/{name}", tag = "connections", params(("name" = String, Path)), security(("api_key" = [])),
    responses((status = 200, body = ConnectionOut), (status = 404, body = super::ErrorBody)))]
pub async fn get(TenantAuth(t): TenantAuth, State(state): State<Shared>, P(name): P<String>) -> ApiResult<Response> {
    check_name("connection", &name, false).map_err(|_| ApiError::not_found("the connection"))?;
    let mgr = connections(&state)?;
    let c = mgr.load(&t.id, &name).await?.ok_or_else(|| ApiError::not_found("the connection"))?;
    Ok(json(StatusCode::OK, mgr.shown(&c)))
}

#[utoipa::path(get, path = "/v1/connections", tag = "connections", security(("api_key" = [])),
    responses((status = 200, body = ConnectionList)))]
pub async fn list(TenantAuth(t): TenantAuth, State(state): State<Shared>) -> ApiResult<Response> {
    let mgr = connections(&state)?;
    let mut items = Vec::new();
    for (name, _) in state.s.catalog.connections(&t.id).await? {
        if let Some(c) = mgr.load(&t.id, &name).await? {
            items.push(mgr.shown(&c));
        }
    }
    Ok(json(StatusCode::OK, json!({ "items": items, "next": null })))
}

#[utoipa::path(delete, path = "/v1/connections/{name}", tag = "connections", params(("name" = String, Path)), security(("api_key" = [])),
    responses((status = 204, description = "Deleted with its tokens"), (status = 404, body = super::ErrorBody)))]
pub async fn delete(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
) -> ApiResult<StatusCode> {
    check_name("connection", &name, false).map_err(|_| ApiError::not_found("the connection"))?;
    let mgr = connections(&state)?;
    if !mgr.delete(&t.id, &name).await? {
        return Err(ApiError::not_found("the connection"));
    }
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/connections/{name}/authorize", tag = "connections", params(("name" = String, Path)), security(("api_key" = [])),
    responses((status = 200, description = "The provider URL to open", body = Authorization),
        (status = 409, description = "A client-credentials connection needs no authorization", body = super::ErrorBody),
        (status = 404, body = super::ErrorBody)))]
pub async fn authorize(
    TenantAuth(t): TenantAuth,
    State(state): State<Shared>,
    P(name): P<String>,
) -> ApiResult<Response> {
    check_name("connection", &name, false).map_err(|_| ApiError::not_found("the connection"))?;
    let mgr = connections(&state)?;
    let c = mgr.load(&t.id, &name).await?.ok_or_else(|| ApiError::not_found("the connection"))?;
    if c.grant != Grant::AuthorizationCode {
        return Err(ApiError::conflict(
            "no_authorization",
            format!("connection `{name}` uses client credentials: it needs no authorization"),
        ));
    }
    let redirect = format!("{}/oauth/callback", state.s.public_url.trim_end_matches('/'));
    let (url, expires_at) = mgr.authorize(&t.id, &c, &redirect).await.map_err(token_error)?;
    Ok(json(StatusCode::OK, json!(Authorization { url, expires_at })))
}

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CallbackQuery {
    pub state: Option<String>,
    pub code: Option<String>,
    /// The provider's issuer (RFC 9207).
    pub iss: Option<String>,
    pub error: Option<String>,
    pub error_description: Option<String>,
}

fn page(status: StatusCode, title: &str, text: &str) -> Response {
    let esc = |s: &str| s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;");
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{}</title></head><body><h1>{}</h1><p>{}</p></body></html>",
        esc(title), esc(title), esc(text)
    );
    (status, Html(body)).into_response()
}

#[utoipa::path(get, path = "/oauth/callback", tag = "connections", params(CallbackQuery),
    responses((status = 200, description = "Connected (an HTML page)", content_type = "text/html"),
        (status = 400, description = "Forged, replayed, expired or refused: nothing was asked of the provider", content_type = "text/html")))]
pub async fn callback(State(state): State<Shared>, Q(q): Q<CallbackQuery>) -> Response {
    let Some(mgr) = state.s.connections.as_deref() else {
        return page(StatusCode::NOT_FOUND, "Not available", "this server has no connections");
    };
    let Some(st) = q.state.filter(|s| !s.is_empty() && s.len() <= 200) else {
        return page(StatusCode::BAD_REQUEST, "Not connected", "the callback has no `state`");
    };
    let error = q.error.map(|e| match q.error_description {
        Some(d) => format!("{e}: {d}"),
        None => e,
    });
    match mgr.callback(&st, q.code.as_deref(), q.iss.as_deref(), error.as_deref()).await {
        Ok((tenant, name)) => page(
            StatusCode::OK,
            "Connected",
            &format!("The connection `{name}` of `{tenant}` is connected. You can close this window."),
        ),
        Err(CallbackError::Store(e)) => {
            tracing::error!("oauth callback: {e}");
            page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Try again",
                "the server could not finish; start the authorization again",
            )
        }
        Err(e) => page(StatusCode::BAD_REQUEST, "Not connected", &e.to_string()),
    }
}

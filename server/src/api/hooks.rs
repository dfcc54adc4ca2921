//! Inbound webhooks: `POST /hooks/{tenant}/{path}`. Verified (Standard Webhooks or HMAC-SHA256, constant
//! time, 5-minute tolerance, several secrets while rotating), de-duplicated for 24 h on `webhook-id` or
//! `Idempotency-Key`, answered 202 only once the run is stored. Every refusal is a 4xx and starts nothing.

use super::runs::{idempotency_key, start_run};
use crate::auth::limit_requests;
use crate::error::{ApiError, ApiResult, Raw, P};
use crate::{cache, Shared};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use serde_json::{json, Map, Value};
use sluice_connectors::verify::{self, VerifyError};
use sluice_engine::model::{Trigger, VerifyScheme, WebhookTrigger};
use sluice_engine::template::{Ambient, Scope};
use sluice_runtime::tenancy::StoreSecrets;
use sluice_runtime::Secrets as _;

/// Header names (parts of) a pipeline does not get in `trigger.headers`: credentials, tokens and signatures
/// (`x-gitlab-token`, `x-api-key`, `x-hub-signature-256`, `authorization`, `cookie`, ...).
const HIDDEN_HEADERS: &[&str] = &["auth", "cookie", "token", "key", "secret", "signature", "hmac", "password"];

fn no_hook() -> ApiError {
    ApiError::not_found("no webhook at this address; it")
}

/// The verification secrets: the rendered `secret`, split on whitespace (several while rotating).
async fn secrets_of(
    state: &Shared,
    secrets: &StoreSecrets,
    tenant: &str,
    vars: &Value,
    template: &str,
) -> ApiResult<Vec<String>> {
    let values = secrets.for_tenant(tenant).await?;
    let scope = Scope::new(json!({ "secrets": *values, "vars": vars }));
    let amb = Ambient { now: chrono::Utc::now(), seed: 0 };
    let rendered = state.s.validator.renderer().render(template, &scope, &amb).map_err(|e| {
        tracing::error!(tenant, "the webhook's verification secret does not render: {e}");
        ApiError::unauthorized("this webhook cannot verify requests now (its secret is not set); nothing was started")
    })?;
    let text = match rendered {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let list: Vec<String> = text.split_whitespace().map(str::to_string).collect();
    if list.is_empty() {
        tracing::error!(tenant, "the webhook's verification secret renders empty: set the secret it names");
        return Err(ApiError::unauthorized(
            "this webhook cannot verify requests now (its secret is not set); nothing was started",
        ));
    }
    Ok(list)
}

fn refused(e: VerifyError) -> ApiError {
    let code = match e {
        VerifyError::MissingHeader(_) | VerifyError::MissingSignatureHeader(_) => "missing_signature",
        VerifyError::TooOld | VerifyError::TooNew | VerifyError::BadTimestamp => "stale_timestamp",
        VerifyError::NoMatch => "invalid_signature",
        VerifyError::BadSecret(_) => "verification_unavailable",
    };
    ApiError::new(StatusCode::UNAUTHORIZED, code, format!("{e}; nothing was started"))
}

#[utoipa::path(post, path = "/hooks/{tenant}/{path}", tag = "webhooks",
    params(("tenant" = String, Path), ("path" = String, Path, description = "The trigger's `path`")),
    request_body(content = Object, description = "Any body: JSON becomes `trigger.body` as a value, anything else as text"),
    responses((status = 202, description = "Verified and durably stored", body = super::runs::RunStarted),
        (status = 200, description = "A duplicate `webhook-id` / `Idempotency-Key`: the first run's id; nothing started", body = super::runs::RunStarted),
        (status = 401, description = "Verification failed; nothing started", body = super::ErrorBody),
        (status = 404, body = super::ErrorBody), (status = 413, body = super::ErrorBody), (status = 429, body = super::ErrorBody)))]
pub async fn receive(
    State(state): State<Shared>,
    P((tenant_id, path)): P<(String, String)>,
    headers: HeaderMap,
    Raw(body): Raw,
) -> ApiResult<Response> {
    let result = receive_inner(&state, &tenant_id, &path, &headers, &body).await;
    let outcome = match &result {
        Ok(r) if r.status() == StatusCode::OK => "duplicate",
        Ok(_) => "accepted",
        Err(_) => "rejected",
    };
    if outcome != "rejected" || cache::tenant(&state, &tenant_id).await.ok().flatten().is_some() {
        state.s.metrics.inc("sluice_webhooks_total", &[("tenant", &tenant_id), ("result", outcome)]);
    }
    result
}

async fn receive_inner(
    state: &Shared,
    tenant_id: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    super::check_name("tenant", tenant_id, false).map_err(|_| no_hook())?;
    let tenant = cache::tenant(state, tenant_id).await?.ok_or_else(no_hook)?;
    let pipelines = cache::pipelines(state, tenant_id).await?;
    let name = pipelines.hooks.get(path).ok_or_else(no_hook)?;
    // Counted once the address exists, before the signature is checked (a flood of bad signatures is
    // limited too).
    limit_requests(state, &tenant, "webhooks").await?;
    let pipeline = pipelines.by_name.get(name).ok_or_else(no_hook)?;
    let hook: Option<&WebhookTrigger> = pipeline.plan.triggers.iter().find_map(|t| match t {
        Trigger::Webhook(w) if w.path == path => Some(w),
        _ => None,
    });
    let hook = hook.ok_or_else(no_hook)?;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let mut webhook_id = None;
    if let Some(v) = &hook.verify {
        let vars = serde_json::to_value(&pipeline.plan.vars).unwrap_or(Value::Null);
        let secrets = secrets_of(state, &state.s.secrets, tenant_id, &vars, &v.secret).await?;
        match v.scheme {
            VerifyScheme::StandardWebhooks => {
                let now = chrono::Utc::now().timestamp().max(0) as u64;
                let ok = verify::standard_webhooks(&secrets, header, body, now).map_err(refused)?;
                webhook_id = Some(ok.id);
            }
            VerifyScheme::HmacSha256 => {
                let name = v.header.as_deref().unwrap_or("x-signature-256");
                verify::hmac_sha256(&secrets, name, header, body).map_err(refused)?;
            }
        }
    }
    let webhook_id = match webhook_id {
        Some(id) => Some(id),
        None => match header("webhook-id") {
            Some(id) if !id.trim().is_empty() && id.len() <= 255 => Some(id.trim().to_string()),
            _ => idempotency_key(headers)?,
        },
    };
    let is_json = header("content-type").is_some_and(|ct| ct.to_ascii_lowercase().contains("json"));
    let value: Value = if body.is_empty() {
        Value::Null
    } else if is_json {
        serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("the body is not valid JSON ({e}); nothing was started"))
        })?
    } else {
        match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(_) => Value::String(String::from_utf8_lossy(body).into_owned()),
        }
    };
    super::runs::check_depth(&value)?;
    let own = hook.verify.as_ref().and_then(|v| v.header.as_deref()).map(str::to_ascii_lowercase);
    let mut shown = Map::new();
    for (k, v) in headers {
        let k = k.as_str();
        if HIDDEN_HEADERS.iter().any(|h| k.contains(h)) || own.as_deref() == Some(k) {
            continue;
        }
        if let Ok(v) = v.to_str() {
            shown.insert(k.to_string(), Value::String(v.to_string()));
        }
    }
    let trigger = json!({
        "kind": "webhook", "path": path, "body": value, "headers": shown, "webhook_id": webhook_id,
    });
    start_run(state, &tenant, pipeline, trigger, webhook_id.map(|id| format!("hook:{path}:{id}"))).await
}

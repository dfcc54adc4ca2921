//! Operations: liveness, readiness, Prometheus metrics, and the answers for unknown routes.

use crate::error::ApiError;
use crate::{json, Shared};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "The process is up")))]
pub async fn healthz() -> Response {
    json(StatusCode::OK, json!({ "status": "ok" }))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "The store answers"), (status = 503, description = "The store does not answer", body = super::ErrorBody)))]
pub async fn readyz(State(state): State<Shared>) -> Response {
    match tokio::time::timeout(std::time::Duration::from_secs(2), state.s.catalog.generation()).await {
        Ok(Ok(_)) => json(StatusCode::OK, json!({ "status": "ready", "store": state.s.store.name() })),
        Ok(Err(e)) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", format!("the store does not answer: {e}"))
                .into_response()
        }
        Err(_) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_ready", "the store does not answer within 2s")
            .into_response(),
    }
}

#[utoipa::path(get, path = "/metrics", tag = "operations",
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn metrics(State(state): State<Shared>, headers: axum::http::HeaderMap) -> Response {
    if let Some(token) = &state.s.metrics_token {
        let given = headers.get("authorization").and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| crate::auth::digest(g) == crate::auth::digest(token));
        if !ok {
            return ApiError::unauthorized("/metrics wants the metrics token (SLUICE_METRICS_TOKEN) as a bearer token")
                .into_response();
        }
    }
    let tenants = state.s.catalog.tenants().await.unwrap_or_default();
    let mut depths = Vec::new();
    for t in &tenants {
        if let Ok(d) = state.s.store.queue_depth(&t.id).await {
            depths.push((t.id.clone(), d));
        }
    }
    let gauges: Vec<sluice_runtime::metrics::Gauge<'_>> =
        depths.iter().map(|(t, d)| ("sluice_queue_depth", vec![("tenant", t.as_str())], *d as f64)).collect();
    let text = state.s.metrics.render(&gauges);
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn no_route() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no_route", "no such route; GET /openapi.json lists every route")
}

pub async fn no_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

//! `sluice serve`: the HTTP API (SPEC section 9), inbound webhooks, the scheduler and tenancy, over the
//! runtime's executor and stores. The binary picks the store and reads the environment; this crate takes
//! the pieces ready-made ([`Services`]) and serves them.

pub mod api;
pub mod auth;
pub mod cache;
pub mod error;
pub mod gitops;
pub mod openapi;
pub mod scheduler;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use sluice_engine::Validator;
use sluice_runtime::catalog::{Catalog, Limits};
use sluice_runtime::crypto::MasterKey;
use sluice_runtime::tenancy::StoreSecrets;
use sluice_runtime::{Executor, Metrics, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use cache::Cache;

/// The largest request body (pipelines, webhooks, API bodies): what `sluice validate` reads of a file.
pub const BODY_LIMIT: usize = 1024 * 1024;

/// How long de-duplication keys of inbound webhooks and `Idempotency-Key`s are held (SPEC section 6).
pub const DEDUP_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// Everything a server works with, built by the binary.
pub struct Services {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<dyn Catalog>,
    pub executor: Arc<Executor>,
    pub validator: Arc<Validator>,
    pub master_key: MasterKey,
    /// `SLUICE_ADMIN_TOKEN`; without it the admin routes refuse every request.
    pub admin_token: Option<String>,
    pub secrets: Arc<StoreSecrets>,
    pub metrics: Arc<Metrics>,
    /// Limits of tenants created without their own.
    pub default_limits: Limits,
    /// `SLUICE_METRICS_TOKEN`: when set, `/metrics` wants it as a bearer token (it names every tenant).
    pub metrics_token: Option<String>,
    /// OAuth2 connections (tokens for steps, the authorization flow).
    pub connections: Option<Arc<sluice_runtime::oauth::Connections>>,
    /// Where outbound requests may go (token endpoints included).
    pub egress: sluice_connectors::egress::Egress,
    /// The server's address as providers' redirects reach it (`--public-url`): the callback is
    /// `<public_url>/oauth/callback`.
    pub public_url: String,
}

/// The state every handler reads.
pub struct AppState {
    pub s: Services,
    pub cache: Cache,
    admin_hash: Option<[u8; 32]>,
}

pub type Shared = Arc<AppState>;

impl AppState {
    pub fn new(s: Services) -> Shared {
        let admin_hash = s.admin_token.as_deref().filter(|t| !t.is_empty()).map(auth::digest);
        Arc::new(AppState { s, cache: Cache::new(), admin_hash })
    }

    /// Drops what this process cached of the catalog after it changed it (other processes notice the
    /// catalog's generation within [`cache::POLL`]).
    pub fn changed(&self, tenant: &str) {
        self.cache.clear();
        self.s.secrets.invalidate(tenant);
    }
}

/// Every route of SPEC section 9.
pub fn router(state: Shared) -> Router {
    use api::{admin, connections, hooks, ops, pipelines, runs, secrets, sync};
    let v1 = Router::new()
        .route("/pipelines", get(pipelines::list))
        .route("/pipelines/{name}", put(pipelines::put).get(pipelines::get).delete(pipelines::delete))
        .route("/pipelines/{name}/runs", post(runs::start))
        .route("/pipelines/{name}/versions", get(sync::versions))
        .route("/pipelines/{name}/diff", get(sync::diff_versions))
        .route("/pipelines/{name}/rollback", post(sync::rollback))
        .route("/sync", post(sync::sync))
        .route("/runs", get(runs::list))
        .route("/runs/{id}", get(runs::get))
        .route("/runs/{id}/cancel", post(runs::cancel))
        .route("/runs/{id}/retry", post(runs::retry))
        .route("/dead-letters", get(runs::dead_letters))
        .route("/dead-letters/{id}/replay", post(runs::replay))
        .route("/secrets", get(secrets::list))
        .route("/secrets/{name}", put(secrets::put).delete(secrets::delete))
        .route("/connections", get(connections::list))
        .route("/connections/{name}", put(connections::put).get(connections::get).delete(connections::delete))
        .route("/connections/{name}/authorize", post(connections::authorize))
        .route("/admin/tenants", post(admin::create).get(admin::list))
        .route("/admin/tenants/{id}", get(admin::get).delete(admin::delete))
        .route("/admin/tenants/{id}/keys", post(admin::create_key).get(admin::keys))
        .route("/admin/tenants/{id}/keys/{key_id}", axum::routing::delete(admin::revoke_key));
    Router::new()
        .nest("/v1", v1)
        .route("/hooks/{tenant}/{*path}", post(hooks::receive))
        .route("/oauth/callback", get(connections::callback))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/openapi.json", get(openapi::document))
        // A route layer runs after routing, so it knows the matched route.
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .fallback(ops::no_route)
        .method_not_allowed_fallback(ops::no_method)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // A bug that panics answers the JSON 500, and the server goes on.
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_: Box<dyn std::any::Any + Send>| {
            error::ApiError::internal("a handler panicked").into_response()
        }))
        .with_state(state)
}

/// Logs every request (route, status, time) and counts it.
async fn observe(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |m| m.as_str()).to_string();
    let method = req.method().clone();
    let started = Instant::now();
    let response = next.run(req).await;
    let status = response.status();
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    state.s.metrics.inc("sluice_http_requests_total", &[("route", &route), ("status", status.as_str())]);
    if status.is_server_error() {
        tracing::warn!(%method, route, status = status.as_u16(), ms, "request failed");
    } else {
        tracing::debug!(%method, route, status = status.as_u16(), ms, "request");
    }
    response
}

/// Serves until `shutdown` resolves, then stops taking requests and lets those in flight finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Shared,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = router(state);
    axum::serve(listener, app.into_make_service()).with_graceful_shutdown(shutdown).await
}

/// The response of a handler that answers JSON with a status.
pub(crate) fn json(status: axum::http::StatusCode, v: serde_json::Value) -> Response {
    (status, axum::Json(v)).into_response()
}

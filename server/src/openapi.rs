//! The OpenAPI 3.1 document, made from the handlers' annotations and types (utoipa), served at
//! `/openapi.json`.

use crate::api;
use axum::response::IntoResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |desc: &str| {
            SecurityScheme::Http(
                HttpBuilder::new().scheme(HttpAuthScheme::Bearer).description(Some(desc.to_string())).build(),
            )
        };
        components.add_security_scheme("api_key", bearer("A tenant's API key, `sk_...`"));
        components.add_security_scheme("admin", bearer("The admin token (SLUICE_ADMIN_TOKEN)"));
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice", description = "Declarative, multi-tenant pipeline runner for API integrations. Every error answers `{\"error\": {\"code\", \"message\"}}`."),
    paths(
        api::pipelines::put, api::pipelines::get, api::pipelines::list, api::pipelines::delete,
        api::runs::start, api::runs::list, api::runs::get, api::runs::cancel, api::runs::retry,
        api::runs::dead_letters, api::runs::replay,
        api::secrets::put, api::secrets::list, api::secrets::delete,
        api::hooks::receive,
        api::admin::create, api::admin::list, api::admin::get, api::admin::delete,
        api::admin::create_key, api::admin::keys, api::admin::revoke_key,
        api::ops::healthz, api::ops::readyz, api::ops::metrics,
    ),
    modifiers(&Security)
)]
pub struct ApiDoc;

pub async fn document() -> axum::response::Response {
    axum::Json(ApiDoc::openapi()).into_response()
}

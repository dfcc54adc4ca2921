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
        // What any request may answer besides its own statuses, all with the one error body.
        let common: &[(&str, &str, bool)] = &[
            ("400", "A body, query or path that does not parse", true),
            ("401", "No key, or a wrong or revoked one (on webhooks: the request does not verify)", true),
            ("404", "Missing, or another tenant's (the same answer)", true),
            ("413", "A body over 1 MiB", false),
            ("415", "A body in a format this operation does not take", false),
            ("422", "Well-formed but wrong (unknown fields, wrong types)", false),
            ("429", "Over the tenant's request rate or runs in flight; see Retry-After", true),
            ("503", "The store does not answer; see Retry-After", true),
        ];
        let error = || {
            utoipa::openapi::ResponseBuilder::new().content(
                "application/json",
                utoipa::openapi::ContentBuilder::new()
                    .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
        };
        for (path, item) in openapi.paths.paths.iter_mut() {
            let ops = [&mut item.get, &mut item.put, &mut item.post, &mut item.delete];
            let ops_present = ops.into_iter().flatten();
            for op in ops_present {
                let bodyless = op.request_body.is_none();
                for (code, desc, always) in common {
                    if path == "/healthz" || path == "/metrics" || path == "/openapi.json" || path == "/oauth/callback"
                    {
                        continue;
                    }
                    if !always && bodyless {
                        continue;
                    }
                    op.responses
                        .responses
                        .entry(code.to_string())
                        .or_insert_with(|| error().description(*desc).build().into());
                }
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Sluice", description = "Declarative, multi-tenant pipeline runner for API integrations. Every error answers `{\"error\": {\"code\", \"message\"}}`."),
    paths(
        api::pipelines::put, api::pipelines::get, api::pipelines::list, api::pipelines::delete,
        api::sync::sync, api::sync::versions, api::sync::diff_versions, api::sync::rollback,
        api::runs::start, api::runs::list, api::runs::get, api::runs::cancel, api::runs::retry,
        api::runs::dead_letters, api::runs::replay,
        api::secrets::put, api::secrets::list, api::secrets::delete,
        api::hooks::receive,
        api::connections::put, api::connections::get, api::connections::list, api::connections::delete,
        api::connections::authorize, api::connections::callback,
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

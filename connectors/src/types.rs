//! The `with` types of the built-in step kinds, as written in a pipeline (templates allowed).
//!
//! Their doc comments are the descriptions editors show. Templated values use [`Templated`], which
//! accepts the value itself or a whole `{{ expression }}` that yields it.

use indexmap::IndexMap;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sluice_engine::model::{Duration, WHOLE_TEMPLATE_PATTERN};
use std::borrow::Cow;
use std::marker::PhantomData;

/// A `T`, or a template that is exactly one `{{ expression }}` yielding a `T` at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Templated<T> {
    pub value: Value,
    #[serde(skip)]
    _t: PhantomData<T>,
}

impl<T: JsonSchema> JsonSchema for Templated<T> {
    fn schema_name() -> Cow<'static, str> {
        format!("Templated_{}", T::schema_name()).into()
    }
    fn inline_schema() -> bool {
        true
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let inner = g.subschema_for::<T>();
        json_schema!({ "anyOf": [inner, { "$ref": "#/$defs/WholeTemplate" }] })
    }
}

/// The schema of a string that is one whole `{{ expression }}`; registered once by [`whole_template`].
pub fn whole_template(g: &mut SchemaGenerator) {
    g.definitions_mut().entry("WholeTemplate".to_string()).or_insert_with(|| {
        serde_json::json!({
            "description": "A template that is exactly one `{{ expression }}`; it yields the expression's value.",
            "type": "string",
            "pattern": WHOLE_TEMPLATE_PATTERN,
            "examples": ["{{ steps.fetch.output.body.items }}"],
        })
    });
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Post,
    Put,
    Patch,
    Delete,
    Head,
    Options,
}

/// `with` of `uses: http`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HttpWith {
    /// The request method.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "GET", "examples" = ["POST"]))]
    pub method: Option<Templated<Method>>,
    /// The URL, `http://` or `https://`; a template.
    #[schemars(extend("examples" = ["{{ vars.crm_base }}/users/{{ trigger.body.user_id }}"]))]
    pub url: String,
    /// Request headers; values are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"accept": "application/json", "x-request-id": "{{ run.id }}"}]))]
    pub headers: Option<IndexMap<String, String>>,
    /// Query parameters, appended to the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"email": "{{ trigger.body.email }}", "limit": 50}]))]
    pub query: Option<IndexMap<String, Value>>,
    /// A JSON body (any template tree). At most one of `body`, `form`, `raw`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"email": "{{ steps.shape.output.email }}", "plan": "{{ steps.shape.output.plan }}"}]))]
    pub body: Option<Value>,
    /// A form body (`application/x-www-form-urlencoded`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"email": "{{ trigger.body.email }}", "source": "sluice"}]))]
    pub form: Option<IndexMap<String, Value>>,
    /// A raw text body, sent as is; set `content-type` in `headers`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["<contact><email>{{ trigger.body.email }}</email></contact>"]))]
    pub raw: Option<String>,
    /// How the request authenticates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"connection": "crm"}, {"bearer": "{{ secrets.API_TOKEN }}"}]))]
    pub auth: Option<Auth>,
    /// Statuses that count as success: a code, a range such as `"200-299"`, or a list of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "200-299", "examples" = [[200, 404]]))]
    pub expect_status: Option<ExpectStatus>,
    /// Bound of one attempt; overrides the step's `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "30s", "examples" = ["10s"]))]
    pub timeout: Option<Duration>,
}

/// How an `http` step authenticates: exactly one of `connection`, `bearer`, `basic`, `header`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Auth {
    Connection(String),
    Bearer(String),
    Basic(BasicAuth),
    Header(HeaderAuth),
}

impl JsonSchema for Auth {
    fn schema_name() -> Cow<'static, str> {
        "Auth".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let basic = g.subschema_for::<BasicAuth>();
        let header = g.subschema_for::<HeaderAuth>();
        json_schema!({
            "description": "How the request authenticates: exactly one of `connection` (an OAuth2 connection of the tenant), `bearer`, `basic`, `header`.",
            "type": "object",
            "properties": {
                "connection": { "type": "string", "description": "The name of an OAuth2 connection of this tenant.", "examples": ["crm"] },
                "bearer": { "type": "string", "description": "A bearer token, usually `{{ secrets.NAME }}`.", "examples": ["{{ secrets.API_TOKEN }}"] },
                "basic": basic,
                "header": header,
            },
            "additionalProperties": false,
            "minProperties": 1,
            "maxProperties": 1,
        })
    }
}

/// HTTP basic authentication.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("examples" = [{"username": "sluice", "password": "{{ secrets.CRM_PASSWORD }}"}]))]
pub struct BasicAuth {
    /// The user name; a template.
    #[schemars(extend("examples" = ["sluice", "{{ secrets.CRM_USER }}"]))]
    pub username: String,
    /// The password, usually `{{ secrets.NAME }}`.
    #[schemars(extend("examples" = ["{{ secrets.CRM_PASSWORD }}"]))]
    pub password: String,
}

/// A custom header carrying a credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("examples" = [{"name": "x-api-key", "value": "{{ secrets.CRM_API_KEY }}"}]))]
pub struct HeaderAuth {
    /// The header name, e.g. `x-api-key`.
    #[schemars(extend("examples" = ["x-api-key"]))]
    pub name: String,
    /// The header value, usually `{{ secrets.NAME }}`.
    #[schemars(extend("examples" = ["{{ secrets.CRM_API_KEY }}"]))]
    pub value: String,
}

/// Expected statuses: `200`, `"200-299"`, or a list of those.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ExpectStatus {
    One(StatusSpec),
    Many(Vec<StatusSpec>),
}

/// One status code or range.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StatusSpec {
    Code(u16),
    Range(String),
}

pub const STATUS_RANGE_PATTERN: &str = "^[1-5][0-9]{2}(-[1-5][0-9]{2})?$";

impl JsonSchema for ExpectStatus {
    fn schema_name() -> Cow<'static, str> {
        "ExpectStatus".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "Statuses that count as success: a code such as `201`, a range such as `\"200-299\"`, or a list of them.",
            "type": ["integer", "string", "array"],
            "minimum": 100,
            "maximum": 599,
            "pattern": STATUS_RANGE_PATTERN,
            "items": { "type": ["integer", "string"], "minimum": 100, "maximum": 599, "pattern": STATUS_RANGE_PATTERN },
            "minItems": 1,
            "examples": ["200-299", 201, [200, 404]],
        })
    }
}

impl ExpectStatus {
    /// Whether `status` is expected; `None` means the default 200-299.
    pub fn accepts(spec: Option<&ExpectStatus>, status: u16) -> bool {
        let Some(spec) = spec else { return (200..300).contains(&status) };
        let one = |s: &StatusSpec| match s {
            StatusSpec::Code(c) => *c == status,
            StatusSpec::Range(r) => parse_range(r).is_some_and(|(a, b)| (a..=b).contains(&status)),
        };
        match spec {
            ExpectStatus::One(s) => one(s),
            ExpectStatus::Many(v) => v.iter().any(one),
        }
    }
}

/// `"200-299"` or `"204"` as an inclusive range.
pub fn parse_range(r: &str) -> Option<(u16, u16)> {
    match r.split_once('-') {
        Some((a, b)) => Some((a.trim().parse().ok()?, b.trim().parse().ok()?)),
        None => {
            let c = r.trim().parse().ok()?;
            Some((c, c))
        }
    }
}

/// `with` of `uses: transform`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TransformWith {
    /// Any tree of values; every string in it is a template. The rendered tree is the step's output.
    #[schemars(extend("examples" = [{ "email": "{{ steps.lookup.output.body.email }}" }]))]
    pub output: Value,
}

/// One signing secret or several (during rotation every one signs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Secrets {
    One(String),
    Many(Vec<String>),
}

/// `with` of `uses: webhook.send`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSendWith {
    /// The receiver's URL.
    #[schemars(extend("examples" = ["https://hooks.partner.example/in"]))]
    pub url: String,
    /// The Standard Webhooks secret (`whsec_...`), or a list of them while rotating.
    #[schemars(extend("examples" = ["{{ secrets.PARTNER_WHSEC }}"]))]
    pub secret: Secrets,
    /// The event type, sent as `type` in the payload.
    #[schemars(extend("examples" = ["customer.upgraded"]))]
    pub event: String,
    /// The event data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["{{ steps.shape.output }}", {"email": "{{ steps.shape.output.email }}", "plan": "PRO"}]))]
    pub body: Option<Value>,
    /// Extra request headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"x-tenant": "acme"}]))]
    pub headers: Option<IndexMap<String, String>>,
}

/// `with` of `uses: filter`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FilterWith {
    /// When false, the run stops as `succeeded` with reason `filtered`.
    #[schemars(extend("examples" = ["trigger.body.plan == 'pro'"]))]
    pub when: sluice_engine::model::Condition,
}

/// `with` of `uses: delay`: exactly one of `for` and `until`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("minProperties" = 1, "maxProperties" = 1))]
pub struct DelayWith {
    /// How long to wait.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["10m", "{{ trigger.body.wait }}"]))]
    pub duration: Option<Templated<Duration>>,
    /// When to continue: an RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["2026-12-24T18:00:00Z"]))]
    pub until: Option<String>,
}

/// A log level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// `with` of `uses: log`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogWith {
    /// The message; a template.
    #[schemars(extend("examples" = ["synced {{ steps.fetch.output.body | length }} orders"]))]
    pub message: String,
    /// The level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "info", "examples" = ["warn"]))]
    pub level: Option<Level>,
}

/// `with` of `uses: emit`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmitWith {
    /// The event type (a template); pipelines of this tenant with a matching `event` trigger start.
    #[serde(rename = "type")]
    #[schemars(extend("examples" = ["user.created"]))]
    pub event_type: String,
    /// The event's data: the started runs' `trigger.body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"user_id": "{{ trigger.body.user_id }}", "plan": "{{ steps.shape.output.plan }}"}]))]
    pub data: Option<Value>,
}

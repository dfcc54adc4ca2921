//! The pipeline format as Rust types: the one source of truth for `schemas/pipeline.schema.json`.
//!
//! Doc comments here become the schema's descriptions. These types only describe; checking lives in
//! `schema` (shape) and `validate` (meaning).

use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::borrow::Cow;

pub const NAME_PATTERN: &str = "^[a-z0-9][a-z0-9-]{0,62}$";
pub const STEP_ID_PATTERN: &str = "^[a-z_][a-z0-9_]{0,62}$";
pub const VAR_PATTERN: &str = "^[A-Za-z_][A-Za-z0-9_]{0,62}$";
pub const WEBHOOK_PATH_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._~/-]{0,127}$";
pub const EVENT_TYPE_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";
pub const DURATION_PATTERN: &str = "^([0-9]{1,9}(ms|s|m|h|d))+$";
/// A string that is exactly one `{{ expression }}`, which yields the expression's native value.
pub const WHOLE_TEMPLATE_PATTERN: &str = "^\\s*\\{\\{[\\s\\S]*\\}\\}\\s*$";
pub const MAX_STEPS: usize = 500;

/// A Sluice pipeline: triggers start a run; steps form a DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Sluice pipeline", extend("$id" = "https://sluice.dev/schemas/pipeline.schema.json"))]
pub struct Pipeline {
    /// Format version of this file; always `1`.
    #[schemars(range(min = 1, max = 1), extend("examples" = [1]))]
    pub version: u32,
    /// The pipeline's name, unique in its tenant; must equal the file name without `.yaml`.
    #[schemars(regex(pattern = NAME_PATTERN), extend("examples" = ["signup-to-crm"]))]
    pub name: String,
    /// What the pipeline does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["New sign-ups are enriched and pushed to the CRM"]))]
    pub description: Option<String>,
    /// What starts a run: at least one trigger, at most 50.
    #[schemars(length(min = 1, max = 50), extend("examples" = [[{"webhook": {"path": "signups"}}, {"manual": {}}]]))]
    pub triggers: Vec<Trigger>,
    /// Constants readable in templates as `vars.NAME`.
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    #[schemars(extend("propertyNames" = {"pattern": VAR_PATTERN}, "examples" = [{"crm_base": "https://crm.example.com/api"}]))]
    pub vars: IndexMap<String, serde_json::Value>,
    /// Settings every step inherits unless it sets its own.
    #[serde(default, skip_serializing_if = "Defaults::is_empty")]
    #[schemars(extend("examples" = [{"timeout": "30s", "retry": {"max_attempts": 5, "initial_delay": "500ms"}}]))]
    pub defaults: Defaults,
    /// The steps of the DAG, at least one, at most 500.
    #[schemars(length(min = 1, max = 500), extend("examples" = [[{"id": "lookup", "uses": "http", "with": {"url": "{{ vars.crm_base }}/users/{{ trigger.body.user_id }}"}}]]))]
    pub steps: Vec<Step>,
    /// Steps that run once when the run fails, with `error` in scope.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("examples" = [[{"id": "alert", "uses": "http", "with": {"method": "POST", "url": "https://alerts.example/in", "body": {"run": "{{ run.id }}", "error": "{{ error.message }}"}}}]]))]
    pub on_failure: Vec<Step>,
}

/// One trigger: exactly one of `webhook`, `schedule`, `manual`, `event`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Trigger {
    Webhook(WebhookTrigger),
    Schedule(ScheduleTrigger),
    Manual(Option<ManualTrigger>),
    Event(EventTrigger),
}

impl Trigger {
    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Webhook(_) => "webhook",
            Trigger::Schedule(_) => "schedule",
            Trigger::Manual(_) => "manual",
            Trigger::Event(_) => "event",
        }
    }
}

impl JsonSchema for Trigger {
    fn schema_name() -> Cow<'static, str> {
        "Trigger".into()
    }
    fn json_schema(g: &mut SchemaGenerator) -> Schema {
        let webhook = g.subschema_for::<WebhookTrigger>();
        let schedule = g.subschema_for::<ScheduleTrigger>();
        let manual = g.subschema_for::<ManualTrigger>();
        let event = g.subschema_for::<EventTrigger>();
        schemars::json_schema!({
            "description": "What starts a run: exactly one of `webhook`, `schedule`, `manual` or `event`.",
            "type": "object",
            "properties": {
                "webhook": webhook,
                "schedule": schedule,
                "manual": { "description": "Runs started by hand or by `POST /v1/pipelines/{name}/runs`; write `manual: {}`.", "anyOf": [manual, { "type": "null" }], "examples": [{}] },
                "event": event,
            },
            "additionalProperties": false,
            "minProperties": 1,
            "maxProperties": 1,
            "examples": [{ "webhook": { "path": "signups" } }, { "manual": {} }],
        })
    }
}

/// A signed (or unsigned) inbound webhook: `POST /hooks/<tenant>/<path>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("examples" = [{"path": "signups", "verify": {"scheme": "standard-webhooks", "secret": "{{ secrets.SIGNUP_WHSEC }}"}}]))]
pub struct WebhookTrigger {
    /// The path under `/hooks/<tenant>/`; unique in the tenant.
    #[schemars(regex(pattern = WEBHOOK_PATH_PATTERN), extend("examples" = ["signups"]))]
    pub path: String,
    /// How requests are verified; absent means unverified (a warning in `sluice validate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"scheme": "hmac-sha256", "secret": "{{ secrets.GITHUB_WHSEC }}", "header": "x-hub-signature-256"}]))]
    pub verify: Option<Verify>,
}

/// Signature verification of an inbound webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Verify {
    /// The signature scheme.
    #[schemars(extend("examples" = ["standard-webhooks"]))]
    pub scheme: VerifyScheme,
    /// The signing secret, usually a template reading a tenant secret.
    #[schemars(extend("examples" = ["{{ secrets.SIGNUP_WHSEC }}"]))]
    pub secret: String,
    /// For `hmac-sha256`: the header that carries the hex signature (an optional `sha256=` prefix is accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "x-signature-256", "examples" = ["x-hub-signature-256"]))]
    pub header: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
/// `standard-webhooks` (webhook-id, webhook-timestamp, webhook-signature headers) or `hmac-sha256` of the body.
pub enum VerifyScheme {
    StandardWebhooks,
    HmacSha256,
}

/// A cron schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("examples" = [{"cron": "*/15 * * * *", "timezone": "Europe/Berlin"}]))]
pub struct ScheduleTrigger {
    /// A cron expression: 5 fields, or 6 with seconds first.
    #[schemars(extend("examples" = ["*/15 * * * *", "0 30 9 * * MON-FRI"]))]
    pub cron: String,
    /// The IANA time zone the expression is read in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "UTC", "examples" = ["Europe/Berlin"]))]
    pub timezone: Option<String>,
    /// The run's `trigger.body`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"source": "nightly"}]))]
    pub input: Option<serde_json::Value>,
}

/// Runs started by hand or through `POST /v1/pipelines/{name}/runs`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualTrigger {}

/// Runs started by `emit` steps of the same tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(extend("examples" = [{"type": "user.created"}]))]
pub struct EventTrigger {
    /// The event type to listen to.
    #[serde(rename = "type")]
    #[schemars(regex(pattern = EVENT_TYPE_PATTERN), extend("examples" = ["user.created"]))]
    pub event_type: String,
}

/// Settings inherited by every step.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Bound of one attempt of a step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "30s", "examples" = ["30s", "2m"]))]
    pub timeout: Option<Duration>,
    /// Retry policy of every step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"max_attempts": 5, "backoff": "exponential", "initial_delay": "500ms", "factor": 2, "max_delay": "1m", "jitter": "full"}]))]
    pub retry: Option<RetryConfig>,
}

impl Defaults {
    pub fn is_empty(&self) -> bool {
        self.timeout.is_none() && self.retry.is_none()
    }
}

/// When and how a failed attempt is tried again (SPEC section 5).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included; `1` means no retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100), extend("default" = 3, "examples" = [5]))]
    pub max_attempts: Option<u32>,
    /// How the delay grows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "exponential", "examples" = ["linear"]))]
    pub backoff: Option<Backoff>,
    /// Delay before the second attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "1s", "examples" = ["500ms"]))]
    pub initial_delay: Option<Duration>,
    /// Growth factor for `exponential`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10), extend("default" = 2, "examples" = [1.5]))]
    pub factor: Option<f64>,
    /// Cap of one delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "5m", "examples" = ["1m"]))]
    pub max_delay: Option<Duration>,
    /// Randomisation of each delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "full", "examples" = ["equal"]))]
    pub jitter: Option<Jitter>,
    /// Error classes that are retried; `template` and `config` never are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = ["network", "timeout", "http_429", "http_5xx"], "examples" = [["network", "timeout", "http_5xx"]]))]
    pub retry_on: Option<Vec<ErrorClass>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// `exponential`: initial_delay × factor^(n−1); `linear`: initial_delay × n; `constant`: initial_delay.
pub enum Backoff {
    Exponential,
    Linear,
    Constant,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
/// `none`, `full` = uniform(0, base), `equal` = base/2 + uniform(0, base/2), `decorrelated` = uniform(initial, 3 × previous).
pub enum Jitter {
    None,
    Full,
    Equal,
    Decorrelated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
/// The class of a step error.
pub enum ErrorClass {
    Network,
    Timeout,
    #[serde(rename = "http_4xx")]
    Http4xx,
    #[serde(rename = "http_429")]
    Http429,
    #[serde(rename = "http_5xx")]
    Http5xx,
    Template,
    Config,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Network => "network",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Http4xx => "http_4xx",
            ErrorClass::Http429 => "http_429",
            ErrorClass::Http5xx => "http_5xx",
            ErrorClass::Template => "template",
            ErrorClass::Config => "config",
        }
    }
}

/// One node of the DAG.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's id, unique in the pipeline; templates read it as `steps.<id>`.
    #[schemars(regex(pattern = STEP_ID_PATTERN), extend("examples" = ["fetch_orders"]))]
    pub id: String,
    /// What the step does, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["Look the new user up in the CRM"]))]
    pub description: Option<String>,
    /// The step kind.
    #[schemars(extend("examples" = ["http"]))]
    pub uses: String,
    /// The kind's inputs; strings are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"method": "GET", "url": "{{ vars.crm_base }}/users/{{ trigger.body.user_id }}", "auth": {"connection": "crm"}}]))]
    pub with: Option<serde_json::Value>,
    /// Steps that must finish first, beyond those the templates read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("items" = {"type": "string", "pattern": STEP_ID_PATTERN}, "examples" = [["lookup"]]))]
    pub needs: Vec<String>,
    /// Run the step only when this expression is true (braces optional); otherwise it is `skipped`.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["steps.shape.output.plan == 'PRO'"]))]
    pub condition: Option<Condition>,
    /// Fan out: one task per item of this list (`item` and `index` in scope).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = ["{{ steps.shape.output.tags }}"]))]
    pub for_each: Option<ForEach>,
    /// With `for_each`: at most this many items run at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000), extend("default" = 10, "examples" = [4]))]
    pub concurrency: Option<u32>,
    /// A failed step counts as finished (status `failed`, output `null`) and the run goes on.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    #[schemars(extend("default" = false, "examples" = [true]))]
    pub continue_on_error: bool,
    /// Bound of one attempt; overrides `defaults.timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "30s", "examples" = ["2m"]))]
    pub timeout: Option<Duration>,
    /// Retry policy; each field overrides `defaults.retry`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("examples" = [{"max_attempts": 8}]))]
    pub retry: Option<RetryConfig>,
}

/// An `if:` condition: an expression, or a literal boolean.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Condition {
    Bool(bool),
    Expr(String),
}

/// A `for_each`: a template yielding a list, or a literal list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ForEach {
    List(Vec<serde_json::Value>),
    Template(String),
}

/// A duration such as `500ms`, `30s`, `5m`, `1h`, `1d`, or combined as `1m30s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    pub fn parse(s: &str) -> Option<Duration> {
        let b = s.as_bytes();
        if b.is_empty() {
            return None;
        }
        let mut i = 0;
        let mut total: u128 = 0;
        while i < b.len() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i == start || i - start > 9 {
                return None;
            }
            let n: u128 = s.get(start..i)?.parse().ok()?;
            let unit_start = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let ms = match s.get(unit_start..i)? {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "d" => 86_400_000,
                _ => return None,
            };
            total = total.checked_add(n.checked_mul(ms)?)?;
        }
        let ms = u64::try_from(total).ok()?;
        Some(Duration(std::time::Duration::from_millis(ms)))
    }
    pub fn as_millis(&self) -> u64 {
        self.0.as_millis() as u64
    }
}

impl std::fmt::Display for Duration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.as_millis();
        for (unit, size) in [("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
            if ms >= size && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl Serialize for Duration {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Duration::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("invalid duration {s:?}")))
    }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "A duration: a number and a unit (`ms`, `s`, `m`, `h`, `d`), e.g. `500ms`, `30s`, `1m30s`.",
            "type": "string",
            "pattern": DURATION_PATTERN,
            "examples": ["500ms", "30s", "5m"],
        })
    }
}

/// Builds the draft 2020-12 pipeline schema, with `uses` limited to `kinds` and `with` checked per kind.
pub fn pipeline_schema(registry: &crate::kind::Registry) -> serde_json::Value {
    let mut g = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let root = g.root_schema_for::<Pipeline>();
    let mut root = root.to_value();
    let mut branches = Vec::new();
    let mut names = Vec::new();
    let mut kind_defs = serde_json::Map::new();
    for kind in registry.kinds() {
        let (name, description) = (kind.name(), kind.description());
        let mut s = kind.with_schema(&mut g).to_value();
        if let Some(o) = s.as_object_mut() {
            o.insert("description".into(), json!(description));
        }
        let def = format!("With_{}", name.replace('.', "_"));
        let needs_with = s.get("required").and_then(|r| r.as_array()).is_some_and(|r| !r.is_empty())
            || s.get("minProperties").and_then(|m| m.as_u64()).is_some_and(|m| m > 0);
        kind_defs.insert(def.clone(), s);
        names.push(json!(name));
        let mut then = json!({ "properties": { "with": { "$ref": format!("#/$defs/{def}") } } });
        if needs_with {
            then["required"] = json!(["with"]);
        }
        branches.push(json!({
            "if": { "properties": { "uses": { "const": name } }, "required": ["uses"] },
            "then": then,
        }));
    }
    // Definitions created while generating the kinds' schemas.
    let extra = g.take_definitions(true);
    if let Some(defs) = root.get_mut("$defs").and_then(|d| d.as_object_mut()) {
        for (k, v) in extra {
            defs.entry(k).or_insert(v);
        }
        for (k, v) in kind_defs {
            defs.insert(k, v);
        }
        if let Some(step) = defs.get_mut("Step").and_then(|s| s.as_object_mut()) {
            if let Some(uses) =
                step.get_mut("properties").and_then(|p| p.get_mut("uses")).and_then(|u| u.as_object_mut())
            {
                uses.insert("enum".into(), json!(names));
            }
            step.insert("allOf".into(), json!(branches));
        }
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_print() {
        for (s, ms) in [("500ms", 500), ("30s", 30_000), ("1m30s", 90_000), ("2h", 7_200_000), ("1d", 86_400_000)] {
            assert_eq!(Duration::parse(s).map(|d| d.as_millis()), Some(ms), "{s}");
        }
        for bad in ["", "10", "s", "10 s", "1.5s", "10sec", "-1s", "99999999999999999d"] {
            assert_eq!(Duration::parse(bad), None, "{bad}");
        }
        assert_eq!(Duration::parse("90s").map(|d| d.to_string()), Some("90s".into()));
        assert_eq!(Duration::parse("1500ms").map(|d| d.to_string()), Some("1500ms".into()));
    }
}

//! The built-in step kinds: their names, `with` schemas and offline checks.

use crate::types::*;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use sluice_engine::diag::{Code, Diagnostic};
use sluice_engine::kind::StepKind;
use sluice_engine::template::has_template;
use sluice_engine::yaml::Node;

fn schema_of<T: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    whole_template(g);
    T::json_schema(g)
}

/// A literal URL (no template) must be absolute http(s) with a host.
fn check_url(with: &Node, out: &mut Vec<Diagnostic>) {
    let Some(n) = with.get("url") else { return };
    let Some(url) = n.as_str() else { return };
    if has_template(url) {
        if url.trim_start().starts_with("{{") {
            return;
        }
        // A template later in the URL: the scheme and host part is literal and can still be checked.
        let head = url.split("{{").next().unwrap_or("");
        if head.to_ascii_lowercase().starts_with("http://") || head.to_ascii_lowercase().starts_with("https://") {
            return;
        }
    }
    let lower = url.to_ascii_lowercase();
    let rest = lower.strip_prefix("https://").or_else(|| lower.strip_prefix("http://"));
    let ok = rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or("");
        !host.is_empty() && !host.contains(' ')
    });
    if !ok {
        out.push(
            Diagnostic::new(
                Code::BadWith,
                n.span,
                format!("`url` must be an absolute http:// or https:// URL, found {:?}", url),
            )
            .label("not an http(s) URL")
            .hint("write the full URL, e.g. `https://api.example.com/v1/orders`"),
        );
    }
}

/// `http`: one HTTP request.
pub struct Http;

impl StepKind for Http {
    fn name(&self) -> &'static str {
        "http"
    }
    fn description(&self) -> &'static str {
        "An HTTP request; output `status`, `headers` and `body` (parsed when JSON)."
    }
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema {
        schema_of::<HttpWith>(g)
    }
    fn check(&self, with: &Node, out: &mut Vec<Diagnostic>) {
        check_url(with, out);
        let bodies: Vec<&str> = ["body", "form", "raw"].into_iter().filter(|k| with.get(k).is_some()).collect();
        if bodies.len() > 1 {
            let sp = with.key_span(bodies[1]).unwrap_or(with.span);
            out.push(
                Diagnostic::new(
                    Code::BadWith,
                    sp,
                    format!("an http step sends one body, but both `{}` and `{}` are set", bodies[0], bodies[1]),
                )
                .label("second body")
                .hint("keep one of `body` (JSON), `form` (URL-encoded) and `raw` (text)"),
            );
        }
        if let Some(es) = with.get("expect_status") {
            let items: Vec<&Node> = match es.as_seq() {
                [] => vec![es],
                many => many.iter().collect(),
            };
            for it in items {
                if let Some(r) = it.as_str() {
                    if parse_range(r).is_some_and(|(a, b)| a > b) {
                        out.push(
                            Diagnostic::new(Code::BadWith, it.span, format!("the status range `{r}` is empty"))
                                .hint("write the lower code first, e.g. `200-299`"),
                        );
                    }
                }
            }
        }
    }
}

/// `transform`: renders a tree of templates.
pub struct Transform;

impl StepKind for Transform {
    fn name(&self) -> &'static str {
        "transform"
    }
    fn description(&self) -> &'static str {
        "Renders `output`, a tree of templates; the rendered tree is the step's output."
    }
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema {
        schema_of::<TransformWith>(g)
    }
}

/// `webhook.send`: a Standard-Webhooks-signed POST.
pub struct WebhookSend;

impl StepKind for WebhookSend {
    fn name(&self) -> &'static str {
        "webhook.send"
    }
    fn description(&self) -> &'static str {
        "Sends a Standard Webhooks signed event; output `status`, `webhook_id`, `attempt`."
    }
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema {
        schema_of::<WebhookSendWith>(g)
    }
    fn check(&self, with: &Node, out: &mut Vec<Diagnostic>) {
        check_url(with, out);
        let Some(s) = with.get("secret") else { return };
        let secrets: Vec<&Node> = match s.as_seq() {
            [] => vec![s],
            many => many.iter().collect(),
        };
        for n in secrets {
            if let Some(v) = n.as_str() {
                if !has_template(v) && !v.starts_with("whsec_") {
                    out.push(
                        Diagnostic::new(Code::BadWith, n.span, "a Standard Webhooks secret starts with `whsec_`")
                            .label("not a whsec_ secret")
                            .hint("store the secret as a tenant secret and write `secret: \"{{ secrets.NAME }}\"`"),
                    );
                }
            }
        }
    }
}

/// `filter`: stops the run as succeeded when its condition is false.
pub struct Filter;

impl StepKind for Filter {
    fn name(&self) -> &'static str {
        "filter"
    }
    fn description(&self) -> &'static str {
        "Stops the run as `succeeded` (reason `filtered`) when `when` is false."
    }
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema {
        schema_of::<FilterWith>(g)
    }
    fn expression_fields(&self) -> &'static [&'static str] {
        &["when"]
    }
}

/// `delay`: waits without holding a worker.
pub struct Delay;

impl StepKind for Delay {
    fn name(&self) -> &'static str {
        "delay"
    }
    fn description(&self) -> &'static str {
        "Waits `for` a duration or `until` a time, without holding a worker."
    }
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema {
        schema_of::<DelayWith>(g)
    }
    fn check(&self, with: &Node, out: &mut Vec<Diagnostic>) {
        if let Some(n) = with.get("until") {
            if let Some(v) = n.as_str() {
                if !has_template(v) && chrono::DateTime::parse_from_rfc3339(v).is_err() {
                    out.push(
                        Diagnostic::new(
                            Code::BadWith,
                            n.span,
                            format!("`until` must be an RFC 3339 time, found {v:?}"),
                        )
                        .label("not an RFC 3339 time")
                        .hint("write e.g. `2026-12-24T18:00:00Z`"),
                    );
                }
            }
        }
    }
}

/// `log`: writes a message to the run's log.
pub struct Log;

impl StepKind for Log {
    fn name(&self) -> &'static str {
        "log"
    }
    fn description(&self) -> &'static str {
        "Writes `message` to the log at `level`."
    }
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema {
        schema_of::<LogWith>(g)
    }
}

/// `emit`: starts the tenant's pipelines that listen to an event type.
pub struct Emit;

impl StepKind for Emit {
    fn name(&self) -> &'static str {
        "emit"
    }
    fn description(&self) -> &'static str {
        "Emits an event: every pipeline of the tenant with a matching `event` trigger starts; output the event id."
    }
    fn with_schema(&self, g: &mut SchemaGenerator) -> Schema {
        schema_of::<EmitWith>(g)
    }
    fn check(&self, with: &Node, out: &mut Vec<Diagnostic>) {
        let Some(n) = with.get("type") else { return };
        let Some(t) = n.as_str() else { return };
        let valid = |c: char| c.is_ascii_alphanumeric() || "._:-".contains(c);
        let ok = t.starts_with(|c: char| c.is_ascii_alphanumeric()) && t.len() <= 128 && t.chars().all(valid);
        if !has_template(t) && !ok {
            out.push(
                Diagnostic::new(
                    Code::BadWith,
                    n.span,
                    format!("`type` must be an event type like `user.created`, found {t:?}"),
                )
                .label("not an event type")
                .hint("event types are letters, digits and `.`, `_`, `:`, `-`, starting with a letter or digit"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_status_accepts() {
        let spec: Option<ExpectStatus> = serde_json::from_value(serde_json::json!(["200-204", 404])).ok();
        assert!(ExpectStatus::accepts(spec.as_ref(), 204));
        assert!(ExpectStatus::accepts(spec.as_ref(), 404));
        assert!(!ExpectStatus::accepts(spec.as_ref(), 205));
        assert!(ExpectStatus::accepts(None, 299));
        assert!(!ExpectStatus::accepts(None, 300));
    }
}

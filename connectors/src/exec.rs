//! How each built-in kind runs one attempt. HTTP error classes, Standard Webhooks signing, response limits.

use crate::egress;
use crate::kinds::{Delay, Emit, Filter, Http, Log, Transform, WebhookSend};
use crate::run::{parse_with, Connector, Outcome, StepCx, StepError};
use crate::types::*;
use base64::Engine as _;
use futures::future::BoxFuture;
use futures::FutureExt;
use hmac::{Hmac, Mac};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use sluice_engine::model::ErrorClass;

/// Largest response body a step keeps (SPEC section 2: a step's output is at most 1 MiB).
pub const MAX_BODY: usize = 1024 * 1024;

/// Turns numbers and booleans at `paths` into text (`*` stands for every entry of a mapping), so that a
/// whole-expression template such as `x-index: "{{ index }}"`, which renders a number, is a valid header.
fn as_text(with: &mut Value, paths: &[&[&str]]) {
    fn walk(v: &mut Value, path: &[&str]) {
        match path.split_first() {
            None => {
                if matches!(v, Value::Number(_) | Value::Bool(_)) {
                    *v = Value::String(v.to_string());
                }
            }
            Some((&"*", rest)) => {
                if let Value::Object(m) = v {
                    m.values_mut().for_each(|x| walk(x, rest));
                }
            }
            Some((k, rest)) => {
                if let Some(x) = v.get_mut(*k) {
                    walk(x, rest);
                }
            }
        }
    }
    for p in paths {
        walk(with, p);
    }
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The class and message of a transport error; egress refusals are `config` (retrying cannot help).
fn transport_error(method: &str, url: &str, e: &reqwest::Error) -> StepError {
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    if chain.contains("refused to connect to") || chain.contains("refused the URL scheme") {
        let msg = chain.split("refused").nth(1).map_or(chain.clone(), |m| format!("refused{m}"));
        return StepError::config(msg);
    }
    if e.is_timeout() {
        return StepError::new(ErrorClass::Timeout, format!("{method} {url} timed out"));
    }
    if e.is_redirect() {
        return StepError::config(format!("{method} {url}: {chain}"));
    }
    StepError::new(ErrorClass::Network, format!("{method} {url} failed: {chain}"))
}

/// Milliseconds to wait from a `Retry-After` header (seconds or an HTTP date).
pub fn retry_after_ms(value: &str, now_ms: u64) -> Option<u64> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(secs.saturating_mul(1000));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let at_ms = u64::try_from(at.timestamp_millis()).ok()?;
    Some(at_ms.saturating_sub(now_ms))
}

/// The class of an unexpected status.
fn status_error(method: &str, url: &str, status: u16, body_excerpt: &str, retry_after: Option<u64>) -> StepError {
    let class = match status {
        429 => ErrorClass::Http429,
        500..=599 => ErrorClass::Http5xx,
        _ => ErrorClass::Http4xx,
    };
    let excerpt = if body_excerpt.is_empty() { String::new() } else { format!(": {body_excerpt}") };
    StepError { class, message: format!("{method} {url} answered {status}{excerpt}"), retry_after_ms: retry_after }
}

/// Reads a response body, refusing more than [`MAX_BODY`] bytes.
async fn read_body(mut resp: reqwest::Response, method: &str, url: &str) -> Result<Vec<u8>, StepError> {
    let mut body = Vec::new();
    loop {
        match resp.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err(StepError::config(format!(
                        "{method} {url} answered a body larger than 1 MiB; a step's output may be at most 1 MiB (nothing is truncated)"
                    )));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err(transport_error(method, url, &e)),
        }
    }
}

fn headers_json(h: &reqwest::header::HeaderMap) -> Value {
    let mut m = Map::new();
    for (k, v) in h {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        match m.get_mut(k.as_str()) {
            Some(Value::String(prev)) => {
                prev.push_str(", ");
                prev.push_str(&v);
            }
            _ => {
                m.insert(k.as_str().to_string(), Value::String(v));
            }
        }
    }
    Value::Object(m)
}

fn excerpt(body: &[u8]) -> String {
    let s = String::from_utf8_lossy(body);
    let one_line: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    one_line.chars().take(200).collect()
}

impl Connector for Http {
    fn run<'a>(&'a self, cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>> {
        async move {
            let mut with = with;
            as_text(
                &mut with,
                &[&["headers", "*"], &["auth", "bearer"], &["auth", "basic", "*"], &["auth", "header", "value"]],
            );
            let w: HttpWith = parse_with("http", with)?;
            let method_name = match w.method.as_ref().map(|m| &m.value) {
                None | Some(Value::Null) => "GET".to_string(),
                Some(v) => text_of(v).to_ascii_uppercase(),
            };
            let method = reqwest::Method::from_bytes(method_name.as_bytes())
                .map_err(|_| StepError::config(format!("`{method_name}` is not an HTTP method")))?;
            let mut url = reqwest::Url::parse(&w.url)
                .map_err(|e| StepError::config(format!("`{}` is not a valid URL: {e}", w.url)))?;
            if let Some(q) = &w.query {
                let mut pairs = url.query_pairs_mut();
                for (k, v) in q {
                    match v {
                        Value::Array(items) => items.iter().for_each(|i| {
                            pairs.append_pair(k, &text_of(i));
                        }),
                        other => {
                            pairs.append_pair(k, &text_of(other));
                        }
                    }
                }
            }
            egress::check_url(&url, cx.egress).map_err(StepError::config)?;
            let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
            let build = |bearer: Option<&str>| -> Result<reqwest::RequestBuilder, StepError> {
                let mut req = cx
                    .http
                    .request(method.clone(), url.clone())
                    .timeout(cx.timeout)
                    .header("idempotency-key", &cx.idempotency_key);
                for (k, v) in w.headers.iter().flatten() {
                    let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| StepError::config(format!("`{k}` is not a valid header name")))?;
                    let value = reqwest::header::HeaderValue::from_str(v).map_err(|_| {
                        StepError::config(format!("the value of header `{k}` is not valid header text"))
                    })?;
                    req = req.header(name, value);
                }
                match &w.auth {
                    None | Some(Auth::Connection(_)) => {}
                    Some(Auth::Bearer(token)) => req = req.bearer_auth(token),
                    Some(Auth::Basic(b)) => req = req.basic_auth(&b.username, Some(&b.password)),
                    Some(Auth::Header(h)) => {
                        let name = reqwest::header::HeaderName::from_bytes(h.name.as_bytes())
                            .map_err(|_| StepError::config(format!("`{}` is not a valid header name", h.name)))?;
                        req = req.header(name, h.value.as_str());
                    }
                }
                if let Some(token) = bearer {
                    req = req.bearer_auth(token);
                }
                if let Some(body) = &w.body {
                    req = req.json(body);
                } else if let Some(form) = &w.form {
                    let pairs: Vec<(String, String)> = form.iter().map(|(k, v)| (k.clone(), text_of(v))).collect();
                    req = req.form(&pairs);
                } else if let Some(raw) = &w.raw {
                    req = req.body(raw.clone());
                }
                Ok(req)
            };
            let resp = match &w.auth {
                Some(Auth::Connection(name)) => {
                    let tokens = cx.tokens.as_ref().ok_or_else(|| {
                        StepError::config(format!(
                            "OAuth2 connections need `sluice serve`; this run has no connection named `{name}`"
                        ))
                    })?;
                    let token = tokens.token(&cx.tenant, name, None).await?;
                    let resp =
                        build(Some(&token))?.send().await.map_err(|e| transport_error(method.as_str(), &shown, &e))?;
                    if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
                        // The token was refused (revoked, or expired early): one refresh, one retry.
                        let fresh = tokens.token(&cx.tenant, name, Some(&token)).await?;
                        build(Some(&fresh))?.send().await.map_err(|e| transport_error(method.as_str(), &shown, &e))?
                    } else {
                        resp
                    }
                }
                _ => build(None)?.send().await.map_err(|e| transport_error(method.as_str(), &shown, &e))?,
            };
            let status = resp.status().as_u16();
            let headers = headers_json(resp.headers());
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after_ms(v, cx.now_ms));
            let is_json =
                resp.headers().get("content-type").and_then(|v| v.to_str().ok()).is_some_and(|ct| ct.contains("json"));
            let body = read_body(resp, method.as_str(), &shown).await?;
            if !ExpectStatus::accepts(w.expect_status.as_ref(), status) {
                let ra = if matches!(status, 429 | 503) { retry_after } else { None };
                return Err(status_error(method.as_str(), &shown, status, &excerpt(&body), ra));
            }
            let parsed = if body.is_empty() {
                Value::Null
            } else if is_json {
                serde_json::from_slice(&body)
                    .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()))
            } else {
                Value::String(String::from_utf8_lossy(&body).into_owned())
            };
            Ok(Outcome::Output(json!({ "status": status, "headers": headers, "body": parsed })))
        }
        .boxed()
    }
}

impl Connector for Transform {
    fn run<'a>(&'a self, _cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>> {
        async move {
            let w: TransformWith = parse_with("transform", with)?;
            Ok(Outcome::Output(w.output))
        }
        .boxed()
    }
}

/// The Standard Webhooks message id of a step: derived from its idempotency key, so the same on every retry.
pub fn webhook_id(idempotency_key: &str) -> String {
    let d = Sha256::digest(idempotency_key.as_bytes());
    format!("msg_{}", hex_lower(&d[..12]))
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `v1,<base64 HMAC-SHA256 of "id.timestamp.body">` for each secret, space-separated (Standard Webhooks).
pub fn sign(secrets: &[String], id: &str, timestamp: u64, body: &[u8]) -> Result<String, StepError> {
    let mut sigs = Vec::new();
    for s in secrets {
        let b64 = s.strip_prefix("whsec_").unwrap_or(s);
        let key = base64::engine::general_purpose::STANDARD.decode(b64.trim()).map_err(|_| {
            StepError::config("a webhook secret must be `whsec_` followed by base64; this one does not decode")
        })?;
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&key).map_err(|e| StepError::config(format!("webhook secret: {e}")))?;
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        sigs.push(format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())));
    }
    if sigs.is_empty() {
        return Err(StepError::config("`secret` is empty; give at least one `whsec_...` secret"));
    }
    Ok(sigs.join(" "))
}

impl Connector for WebhookSend {
    fn run<'a>(&'a self, cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>> {
        async move {
            let mut with = with;
            as_text(&mut with, &[&["headers", "*"]]);
            let w: WebhookSendWith = parse_with("webhook.send", with)?;
            let url = reqwest::Url::parse(&w.url)
                .map_err(|e| StepError::config(format!("`{}` is not a valid URL: {e}", w.url)))?;
            egress::check_url(&url, cx.egress).map_err(StepError::config)?;
            let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
            let secrets = match &w.secret {
                Secrets::One(s) => vec![s.clone()],
                Secrets::Many(v) => v.clone(),
            };
            let id = webhook_id(&cx.idempotency_key);
            let ts = cx.now_ms / 1000;
            // The event's own time, the same on every retry (the body, and so its signature over the same
            // id, does not change); `webhook-timestamp` is this attempt's time.
            let now = chrono::DateTime::from_timestamp_millis(cx.first_attempt_ms as i64).unwrap_or_default();
            let payload = json!({
                "type": w.event,
                "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                "data": w.body.clone().unwrap_or(Value::Null),
            });
            let body = serde_json::to_vec(&payload).map_err(|e| StepError::config(format!("webhook body: {e}")))?;
            let signature = sign(&secrets, &id, ts, &body)?;
            let mut req = cx
                .http_no_redirect
                .post(url.clone())
                .timeout(cx.timeout)
                .header("content-type", "application/json")
                .header("webhook-id", &id)
                .header("webhook-timestamp", ts.to_string())
                .header("webhook-signature", signature)
                .header("idempotency-key", &cx.idempotency_key);
            for (k, v) in w.headers.iter().flatten() {
                let name = reqwest::header::HeaderName::from_bytes(k.as_bytes())
                    .map_err(|_| StepError::config(format!("`{k}` is not a valid header name")))?;
                req = req.header(name, v.as_str());
            }
            let resp = req.body(body).send().await.map_err(|e| transport_error("POST", &shown, &e))?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry_after_ms(v, cx.now_ms));
            let body = read_body(resp, "POST", &shown).await?;
            match status {
                200..=299 => Ok(Outcome::Output(json!({ "status": status, "webhook_id": id, "attempt": cx.attempt }))),
                300..=399 => Err(StepError::config(format!(
                    "POST {shown} answered {status} (a redirect); webhooks do not follow redirects: update the URL"
                ))),
                410 => Err(StepError::config(format!(
                    "POST {shown} answered 410 Gone: the receiver disabled this endpoint"
                ))),
                _ => Err(status_error(
                    "POST",
                    &shown,
                    status,
                    &excerpt(&body),
                    if matches!(status, 429 | 503) { retry_after } else { None },
                )),
            }
        }
        .boxed()
    }
}

impl Connector for Filter {
    fn run<'a>(&'a self, _cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>> {
        async move {
            match with.get("when") {
                Some(Value::Bool(true)) => Ok(Outcome::Output(Value::Null)),
                Some(Value::Bool(false)) => Ok(Outcome::Filtered),
                _ => Err(StepError::config("`when` did not evaluate to true or false")),
            }
        }
        .boxed()
    }
}

impl Connector for Delay {
    fn run<'a>(&'a self, cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>> {
        async move {
            if let Some(v) = with.get("for") {
                let text = text_of(v);
                let d = sluice_engine::model::Duration::parse(&text)
                    .ok_or_else(|| StepError::config(format!("`for` must be a duration like `30s`, found {text:?}")))?;
                return Ok(Outcome::WaitUntil(cx.now_ms.saturating_add(d.as_millis())));
            }
            if let Some(v) = with.get("until") {
                let text = text_of(v);
                let at = chrono::DateTime::parse_from_rfc3339(&text)
                    .map_err(|_| StepError::config(format!("`until` must be an RFC 3339 time, found {text:?}")))?;
                return Ok(Outcome::WaitUntil(u64::try_from(at.timestamp_millis()).unwrap_or(0)));
            }
            Err(StepError::config("`delay` needs `for` or `until`"))
        }
        .boxed()
    }
}

impl Connector for Log {
    fn run<'a>(&'a self, cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>> {
        async move {
            let w: LogWith = parse_with("log", with)?;
            let (run, step) = (cx.run_id.as_str(), cx.step_id.as_str());
            match w.level.unwrap_or(Level::Info) {
                Level::Debug => tracing::debug!(tenant = %cx.tenant, run, step, "{}", w.message),
                Level::Info => tracing::info!(tenant = %cx.tenant, run, step, "{}", w.message),
                Level::Warn => tracing::warn!(tenant = %cx.tenant, run, step, "{}", w.message),
                Level::Error => tracing::error!(tenant = %cx.tenant, run, step, "{}", w.message),
            }
            Ok(Outcome::Output(Value::Null))
        }
        .boxed()
    }
}

impl Connector for Emit {
    fn run<'a>(&'a self, cx: &'a StepCx, with: Value) -> BoxFuture<'a, Result<Outcome, StepError>> {
        async move {
            let w: EmitWith = parse_with("emit", with)?;
            // Deterministic per step, so a retried or replayed emit names the same event.
            let d = Sha256::digest(cx.idempotency_key.as_bytes());
            let id = format!("evt_{}", hex_lower(&d[..12]));
            Ok(Outcome::Emit { id, event_type: w.event_type, data: w.data.unwrap_or(Value::Null) })
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        assert_eq!(retry_after_ms("7", 0), Some(7000));
        let now = chrono::DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z")
            .map(|d| d.timestamp_millis() as u64)
            .unwrap_or(0);
        assert_eq!(retry_after_ms("Wed, 21 Oct 2015 07:28:30 GMT", now), Some(30_000));
        assert_eq!(retry_after_ms("soon", 0), None);
    }

    #[test]
    fn signatures_follow_standard_webhooks() {
        // The example of the Standard Webhooks specification's reference libraries.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_string();
        let sig =
            sign(&[secret], "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#).unwrap_or_default();
        assert_eq!(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(sign(&["whsec_%%%".into()], "id", 1, b"x").is_err());
        assert_eq!(webhook_id("run_1:notify"), webhook_id("run_1:notify"));
    }
}

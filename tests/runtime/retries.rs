//! Retries as SPEC section 5 says: backoff kinds and jitter bounds, `retry_on`, `Retry-After`, timeouts, and
//! classes that are never retried.

use crate::both_stores;
use crate::harness::{Env, Peer, Reply};
use serde_json::json;
use std::time::Duration;

both_stores!(
    constant_backoff_waits_the_computed_delay,
    exponential_equal_jitter_stays_in_bounds,
    linear_full_and_decorrelated_jitter_stay_in_bounds,
    retry_after_replaces_the_delay,
    retry_after_is_capped_by_max_delay,
    timeout_bounds_each_attempt,
    classes_outside_retry_on_fail_at_once,
    template_errors_are_never_retried
);

fn gaps(hits: &[crate::harness::Hit]) -> Vec<Duration> {
    hits.windows(2).map(|w| w[1].at.duration_since(w[0].at)).collect()
}

fn pipeline(peer: &Peer, retry: &str) -> String {
    r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: call
    uses: http
    retry: RETRY
    with: { url: "BASE/x" }
"#
    .replace("BASE", &peer.url)
    .replace("RETRY", retry)
}

/// Slack for scheduling on a busy 2-core machine; the lower bound is exact.
const SLACK: Duration = Duration::from_millis(250);

async fn constant_backoff_waits_the_computed_delay(env: Env) {
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(500), Reply::status(500), Reply::status(500)]);
    let yaml = pipeline(&peer, "{ max_attempts: 4, backoff: constant, initial_delay: 300ms, jitter: none }");
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let g = gaps(&peer.hits("/x"));
    assert_eq!(g.len(), 3);
    for gap in g {
        assert!(
            gap >= Duration::from_millis(300) && gap < Duration::from_millis(300) + SLACK,
            "gap {gap:?}, expected 300 ms"
        );
    }
    let attempts = rec["steps"]["call"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    assert_eq!(attempts.iter().map(|a| a["number"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    env.shutdown().await;
}

async fn exponential_equal_jitter_stays_in_bounds(env: Env) {
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(503), Reply::status(503), Reply::status(503)]);
    let yaml = pipeline(
        &peer,
        "{ max_attempts: 4, backoff: exponential, initial_delay: 200ms, factor: 2, max_delay: 500ms, jitter: equal }",
    );
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    // Bases 200, 400, min(800, 500) = 500 ms; equal jitter waits between half the base and the base.
    let bases = [200u64, 400, 500];
    for (gap, base) in gaps(&peer.hits("/x")).into_iter().zip(bases) {
        let (lo, hi) = (Duration::from_millis(base / 2), Duration::from_millis(base) + SLACK);
        assert!(gap >= lo && gap < hi, "gap {gap:?} outside [{lo:?}, {hi:?})");
    }
    env.shutdown().await;
}

async fn retry_after_replaces_the_delay(env: Env) {
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(429).header("retry-after", "1")]);
    let yaml = pipeline(&peer, "{ max_attempts: 2, backoff: constant, initial_delay: 10ms, jitter: none }");
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let g = gaps(&peer.hits("/x"));
    assert!(g[0] >= Duration::from_millis(1000) && g[0] < Duration::from_millis(1000) + SLACK, "gap {:?}", g[0]);
    assert_eq!(rec["steps"]["call"]["attempts"][0]["error"]["class"], "http_429");
    env.shutdown().await;
}

async fn retry_after_is_capped_by_max_delay(env: Env) {
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(503).header("retry-after", "30")]);
    let yaml = pipeline(&peer, "{ max_attempts: 2, initial_delay: 10ms, max_delay: 200ms, jitter: none }");
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let g = gaps(&peer.hits("/x"));
    assert!(g[0] >= Duration::from_millis(200) && g[0] < Duration::from_millis(200) + SLACK, "gap {:?}", g[0]);
    env.shutdown().await;
}

async fn timeout_bounds_each_attempt(env: Env) {
    let peer = Peer::start().await;
    peer.script(
        "/x",
        [Reply::status(200).after(Duration::from_secs(3)), Reply::status(200).after(Duration::from_secs(3))],
    );
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: call
    uses: http
    timeout: 200ms
    retry: { max_attempts: 2, initial_delay: 10ms, jitter: none }
    with: { url: "BASE/x" }
"#
    .replace("BASE", &peer.url);
    let t = std::time::Instant::now();
    let rec = env.run(&yaml, json!({})).await;
    assert!(t.elapsed() < Duration::from_millis(2500), "a timed-out attempt ran on: {:?}", t.elapsed());
    assert_eq!(rec["status"], "failed", "{rec:#}");
    let attempts = rec["steps"]["call"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a["error"]["class"] == "timeout"), "{attempts:#?}");
    assert_eq!(rec["error"]["class"], "timeout");
    assert_eq!(rec["error"]["step"], "call");
    env.shutdown().await;
}

async fn classes_outside_retry_on_fail_at_once(env: Env) {
    let peer = Peer::start().await;
    peer.script("/x", [Reply::json(404, json!({ "error": "no such user" }))]);
    let yaml = pipeline(&peer, "{ max_attempts: 5, initial_delay: 10ms }");
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(peer.hits("/x").len(), 1, "http_4xx is not in the default retry_on");
    assert_eq!(rec["error"]["class"], "http_4xx");
    let msg = rec["error"]["message"].as_str().unwrap();
    assert!(msg.contains("answered 404") && msg.contains("no such user"), "{msg}");
    // With http_4xx in retry_on it is retried.
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(404)]);
    let yaml = pipeline(&peer, "{ max_attempts: 2, initial_delay: 10ms, retry_on: [http_4xx] }");
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(peer.hits("/x").len(), 2);
    env.shutdown().await;
}

async fn template_errors_are_never_retried(env: Env) {
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: shape
    uses: transform
    retry: { max_attempts: 5, initial_delay: 10ms, retry_on: [template, config, network] }
    with: { output: "{{ trigger.body.user.email }}" }
"#;
    let rec = env.run(yaml, json!({ "user": null })).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    let attempts = rec["steps"]["shape"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0]["error"]["class"], "template");
    env.shutdown().await;
}

async fn linear_full_and_decorrelated_jitter_stay_in_bounds(env: Env) {
    // Linear with full jitter: bases 150, 300, 450 ms; each wait is between 0 and its base.
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(500), Reply::status(500), Reply::status(500)]);
    let yaml =
        pipeline(&peer, "{ max_attempts: 4, backoff: linear, initial_delay: 150ms, max_delay: 1s, jitter: full }");
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    for (gap, base) in gaps(&peer.hits("/x")).into_iter().zip([150u64, 300, 450]) {
        assert!(gap < Duration::from_millis(base) + SLACK, "gap {gap:?} over the base {base} ms");
    }
    // Decorrelated: each wait is between initial_delay and 3 x the previous wait, capped by max_delay.
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(503), Reply::status(503), Reply::status(503)]);
    let yaml = pipeline(&peer, "{ max_attempts: 4, initial_delay: 100ms, max_delay: 400ms, jitter: decorrelated }");
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let g = gaps(&peer.hits("/x"));
    assert_eq!(g.len(), 3);
    for gap in &g {
        assert!(
            *gap >= Duration::from_millis(100) && *gap < Duration::from_millis(400) + SLACK,
            "gap {gap:?} outside [100 ms, 400 ms]"
        );
    }
    env.shutdown().await;
}

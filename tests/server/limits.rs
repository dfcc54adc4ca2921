//! Per-tenant limits: request rate (429 + Retry-After, shared by every server on a Redis) and runs in flight.

use crate::harness::*;
use crate::on_both;
use serde_json::{json, Value};
use std::sync::Arc;

on_both!(request_rate_is_limited_per_tenant, runs_in_flight_are_limited);

async fn request_rate_is_limited_per_tenant(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let admin = server.admin();
    let slow = server.api(&admin.tenant("slow", json!({ "requests_per_second": 0.5, "burst": 3 })).await);
    let other = server.api(&admin.tenant("other", Value::Null).await);
    for _ in 0..3 {
        slow.get("/v1/runs").await.expect(200);
    }
    let refused = slow.get("/v1/runs").await;
    refused.expect_error(429, "rate_limited");
    let wait: u64 = refused
        .headers
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    // Webhooks have a bucket of their own at the same rate: a flood at a webhook address does not lock the
    // tenant out of its API, nor the other way round.
    let hooks = server.api(&admin.tenant("hooks", json!({ "requests_per_second": 0.5, "burst": 2 })).await);
    let p = "version: 1\nname: hook\ntriggers:\n  - webhook: { path: in }\nsteps:\n  - id: a\n    uses: transform\n    with: { output: 1 }\n";
    hooks.put_yaml("hook", p).await.expect(201);
    let post = || hooks.send("POST", "/hooks/hooks/in", Some(("application/json", b"{}".to_vec())), &[]);
    post().await.expect(202);
    post().await.expect(202);
    post().await.expect_error(429, "rate_limited");
    hooks.get("/v1/pipelines").await.expect(200);
    // Requests to an address that does not exist are not counted.
    slow.send("POST", "/hooks/slow/none", Some(("application/json", b"{}".to_vec())), &[])
        .await
        .expect_error(404, "not_found");
    // Another tenant is not affected.
    for _ in 0..5 {
        other.get("/v1/runs").await.expect(200);
    }
    // On Redis, a second server shares the limit.
    if backing.redis.is_some() {
        let second = Server::start(&backing).await;
        let via_second = second.api(&slow.key);
        via_second.get("/v1/runs").await.expect_error(429, "rate_limited");
    }
    let m = server.api("").get("/metrics").await;
    assert!(m.text.contains("sluice_rate_limited_total{tenant=\"slow\",limit=\"api\"}"), "{}", m.text);
}

async fn runs_in_flight_are_limited(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", json!({ "max_runs_in_flight": 2 })).await);
    let p = "version: 1\nname: slow\ntriggers:\n  - manual: {}\nsteps:\n  - id: wait\n    uses: delay\n    with: { for: 2s }\n";
    api.put_yaml("slow", p).await.expect(201);
    let a = api.start("slow", json!({})).await;
    let _b = api.start("slow", json!({})).await;
    let third = api.post("/v1/pipelines/slow/runs", json!({})).await;
    third.expect_error(429, "too_many_runs");
    assert!(third.headers.get("retry-after").is_some());
    // When they finish, new runs are admitted again.
    api.wait_run(&a).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let r = api.post("/v1/pipelines/slow/runs", json!({})).await;
        if r.status == 202 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no run admitted after the others finished: {}", r.text);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

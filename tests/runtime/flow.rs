//! How a run flows: chains, parallel branches and joins, `if` and skips, `for_each`, `filter`, `delay`, cancel.

use crate::both_stores;
use crate::harness::{Env, Peer, Reply};
use serde_json::json;
use std::time::{Duration, Instant};

both_stores!(
    chain_passes_values_and_records_the_run,
    branches_run_in_parallel_and_join,
    false_if_skips_and_skips_propagate,
    for_each_keeps_item_order_and_bounds_concurrency,
    filter_stops_the_run_as_filtered,
    delay_holds_no_worker,
    cancel_stops_the_remaining_steps,
    http_sends_one_idempotency_key_per_step_and_item
);

async fn chain_passes_values_and_records_the_run(env: Env) {
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: a
    uses: transform
    with: { output: { n: "{{ trigger.body.n + 1 }}", tags: [x, y] } }
  - id: b
    uses: transform
    with: { output: { n: "{{ steps.a.output.n * 10 }}", tags: "{{ steps.a.output.tags }}", text: "n={{ steps.a.output.n }}" } }
  - id: c
    uses: log
    with: { message: "done {{ steps.b.output.n }}" }
"#;
    let rec = env.run(yaml, json!({ "n": 1 })).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["tenant"], "acme");
    assert_eq!(rec["pipeline"], "t");
    assert!(rec["id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(rec["steps"]["b"]["output"], json!({ "n": 20, "tags": ["x", "y"], "text": "n=2" }));
    assert_eq!(rec["steps"]["c"]["status"], "succeeded");
    assert_eq!(rec["steps"]["c"]["output"], json!(null));
    let attempts = rec["steps"]["a"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0]["number"], 1);
    assert_eq!(attempts[0]["error"], json!(null));
    assert!(rec["finished_at"].as_str().is_some());
    env.shutdown().await;
}

async fn branches_run_in_parallel_and_join(env: Env) {
    let peer = Peer::start().await;
    for p in ["/l", "/r"] {
        peer.script(p, [Reply::json(200, json!({ "side": p })).after(Duration::from_millis(300))]);
    }
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
vars: { base: "BASE" }
steps:
  - id: root
    uses: transform
    with: { output: 1 }
  - id: left
    uses: http
    needs: [root]
    with: { url: "{{ vars.base }}/l" }
  - id: right
    uses: http
    needs: [root]
    with: { url: "{{ vars.base }}/r" }
  - id: join
    uses: transform
    with: { output: [ "{{ steps.left.output.body.side }}", "{{ steps.right.output.body.side }}" ] }
"#
    .replace("BASE", &peer.url);
    let t = Instant::now();
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["join"]["output"], json!(["/l", "/r"]));
    assert_eq!(peer.max_inflight(), 2, "the two branches ran one after the other");
    assert!(t.elapsed() < Duration::from_millis(3000));
    env.shutdown().await;
}

async fn false_if_skips_and_skips_propagate(env: Env) {
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: gate
    uses: transform
    if: "trigger.body.plan == 'pro'"
    with: { output: yes }
  - id: after_gate
    uses: transform
    with: { output: "{{ steps.gate.output }}" }
  - id: reader
    uses: transform
    needs: [gate, other]
    with: { output: { gate: "{{ steps.gate.output }}", status: "{{ steps.gate.status }}" } }
  - id: other
    uses: transform
    with: { output: 2 }
"#;
    let rec = env.run(yaml, json!({ "plan": "free" })).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["gate"]["status"], "skipped");
    assert_eq!(rec["steps"]["after_gate"]["status"], "skipped", "every dependency was skipped");
    assert_eq!(rec["steps"]["reader"]["status"], "succeeded", "one dependency ran");
    assert_eq!(rec["steps"]["reader"]["output"], json!({ "gate": null, "status": "skipped" }));
    let rec = env.run(yaml, json!({ "plan": "pro" })).await;
    assert_eq!(rec["steps"]["gate"]["status"], "succeeded");
    assert_eq!(rec["steps"]["after_gate"]["output"], json!("yes"));
    env.shutdown().await;
}

async fn for_each_keeps_item_order_and_bounds_concurrency(env: Env) {
    let peer = Peer::start().await;
    // Early items answer slowest, so finishing order differs from item order.
    for i in 0..6u64 {
        peer.script(
            &format!("/item/{i}"),
            [Reply::json(200, json!({ "i": i })).after(Duration::from_millis(150 - 20 * i))],
        );
    }
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
vars: { base: "BASE" }
steps:
  - id: list
    uses: transform
    with: { output: [0, 1, 2, 3, 4, 5] }
  - id: each
    uses: http
    for_each: "{{ steps.list.output }}"
    concurrency: 2
    with: { url: "{{ vars.base }}/item/{{ item }}", headers: { x-index: "{{ index }}" } }
  - id: total
    uses: transform
    with: { output: "{{ steps.each.output | map(attribute='body') | map(attribute='i') | sum }}" }
"#
    .replace("BASE", &peer.url);
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let outs: Vec<_> =
        rec["steps"]["each"]["output"].as_array().unwrap().iter().map(|o| o["body"]["i"].clone()).collect();
    assert_eq!(outs, (0..6).map(|i| json!(i)).collect::<Vec<_>>(), "outputs in item order");
    let items = rec["steps"]["each"]["items"].as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert!(items.iter().enumerate().all(|(i, it)| it["index"] == i && it["status"] == "succeeded"));
    assert_eq!(rec["steps"]["total"]["output"], json!(15));
    assert!(peer.max_inflight() <= 2, "concurrency 2, but {} items ran at once", peer.max_inflight());
    for i in 0..6 {
        assert_eq!(peer.hits(&format!("/item/{i}"))[0].header("x-index"), i.to_string());
    }
    env.shutdown().await;
}

async fn filter_stops_the_run_as_filtered(env: Env) {
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: only_big
    uses: filter
    with: { when: "trigger.body.amount > 100" }
  - id: act
    uses: transform
    needs: [only_big]
    with: { output: acted }
"#;
    let rec = env.run(yaml, json!({ "amount": 5 })).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["reason"], "filtered");
    assert_eq!(rec["steps"]["act"]["status"], "skipped");
    let rec = env.run(yaml, json!({ "amount": 500 })).await;
    assert_eq!(rec["steps"]["act"]["output"], "acted");
    assert!(rec.get("reason").is_none());
    env.shutdown().await;
}

async fn delay_holds_no_worker(env: Env) {
    // The default harness runs 4 slots; eight delayed runs at once must all wait together, not four at a time.
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: wait
    uses: delay
    with: { for: 400ms }
  - id: after
    uses: transform
    needs: [wait]
    with: { output: done }
"#;
    let t = Instant::now();
    let mut ids = Vec::new();
    for _ in 0..8 {
        ids.push(env.start(yaml, json!({})).await);
    }
    for id in &ids {
        let rec = env.wait(id).await;
        assert_eq!(rec["status"], "succeeded", "{rec:#}");
        assert_eq!(rec["steps"]["wait"]["status"], "succeeded");
        assert_eq!(rec["steps"]["after"]["output"], "done");
    }
    let took = t.elapsed();
    assert!(took >= Duration::from_millis(400), "the delay was cut short: {took:?}");
    assert!(took < Duration::from_millis(800 * 2 - 100), "delays held worker slots: 8 runs of 400 ms took {took:?}");
    env.shutdown().await;
}

async fn cancel_stops_the_remaining_steps(env: Env) {
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: wait
    uses: delay
    with: { for: 2s }
  - id: after
    uses: transform
    needs: [wait]
    with: { output: never }
"#;
    let id = env.start(yaml, json!({})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let status = env.ex.cancel(crate::harness::TENANT, &id).await.unwrap();
    assert_eq!(status.as_str(), "cancelled");
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "cancelled");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let rec = env.ex.record(crate::harness::TENANT, &id).await.unwrap();
    assert_ne!(rec["steps"]["after"]["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["after"]["output"], json!(null));
    env.shutdown().await;
}

async fn http_sends_one_idempotency_key_per_step_and_item(env: Env) {
    let peer = Peer::start().await;
    peer.script("/once", [Reply::status(503), Reply::status(502)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
vars: { base: "BASE" }
defaults:
  retry: { max_attempts: 3, initial_delay: 10ms, jitter: none }
steps:
  - id: once
    uses: http
    with: { method: POST, url: "{{ vars.base }}/once", body: { a: 1 } }
  - id: many
    uses: http
    for_each: [a, b]
    with: { url: "{{ vars.base }}/many/{{ item }}" }
"#
    .replace("BASE", &peer.url);
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let run = rec["id"].as_str().unwrap();
    let once = peer.hits("/once");
    assert_eq!(once.len(), 3);
    for h in &once {
        assert_eq!(h.header("idempotency-key"), format!("{run}:once"));
        assert_eq!(h.json(), json!({ "a": 1 }));
    }
    assert_eq!(peer.hits("/many/a")[0].header("idempotency-key"), format!("{run}:many:0"));
    assert_eq!(peer.hits("/many/b")[0].header("idempotency-key"), format!("{run}:many:1"));
    assert_eq!(rec["steps"]["once"]["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(rec["steps"]["once"]["attempts"][0]["error"]["class"], "http_5xx");
    env.shutdown().await;
}

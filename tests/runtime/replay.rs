//! Replays and stopped runs in the shapes that once went wrong: a cancelled independent root, `on_failure`
//! steps in the finish count, a replayed step's retry budget, `continue_on_error` replays, a `filter` in
//! `on_failure`, and `delay` inside `for_each`.

use crate::both_stores;
use crate::harness::{Env, Peer, Reply, TENANT};
use serde_json::json;
use std::time::Duration;

both_stores!(
    replay_runs_what_the_failure_cancelled,
    replay_waits_for_every_main_step_not_for_on_failure_ones,
    a_replayed_step_gets_its_retries_again,
    replaying_a_continue_on_error_step_runs_it_and_keeps_the_run,
    filter_in_on_failure_stops_the_handlers,
    delay_inside_for_each_ends,
    replay_fans_a_cancelled_for_each_out_again_and_reruns_the_handlers
);

async fn only_dead_letter(env: &Env) -> String {
    let dls = env.store.dead_letters(TENANT).await.unwrap();
    assert_eq!(dls.len(), 1, "{dls:#?}");
    dls[0].id.clone()
}

async fn replay_runs_what_the_failure_cancelled(env: Env) {
    let peer = Peer::start().await;
    peer.script("/a", [Reply::status(400)]);
    // `c` is an independent root, waiting to retry when `a` fails for good.
    peer.script("/c", [Reply::status(503)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: a
    uses: http
    with: { url: "BASE/a" }
  - id: c
    uses: http
    retry: { max_attempts: 3, initial_delay: 400ms, jitter: none }
    with: { url: "BASE/c" }
"#
    .replace("BASE", &peer.url);
    let id = env.start(&yaml, json!({})).await;
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(rec["steps"]["c"]["status"], "cancelled");
    env.ex.replay(TENANT, &only_dead_letter(&env).await).await.unwrap();
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["c"]["status"], "succeeded");
    env.shutdown().await;
}

async fn replay_waits_for_every_main_step_not_for_on_failure_ones(env: Env) {
    let peer = Peer::start().await;
    peer.script("/a", [Reply::status(400)]);
    peer.script("/c", [Reply::status(200).after(Duration::from_millis(600))]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: a
    uses: http
    with: { url: "BASE/a" }
  - id: b
    uses: transform
    needs: [a]
    with: { output: b }
  - id: c
    uses: http
    needs: [a]
    with: { url: "BASE/c" }
on_failure:
  - id: alert
    uses: transform
    with: { output: "{{ error.step }}" }
"#
    .replace("BASE", &peer.url);
    let id = env.start(&yaml, json!({})).await;
    assert_eq!(env.wait(&id).await["steps"]["alert"]["status"], "succeeded");
    env.ex.replay(TENANT, &only_dead_letter(&env).await).await.unwrap();
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    // The run finished only when the slow `c` had, not when `a` and `b` plus `alert` made three.
    assert_eq!(rec["steps"]["c"]["status"], "succeeded", "{rec:#}");
    assert_eq!(peer.hits("/c").len(), 1);
    env.shutdown().await;
}

async fn a_replayed_step_gets_its_retries_again(env: Env) {
    let peer = Peer::start().await;
    // Three attempts fail (the whole budget); after the replay one more 503 must be retried, not final.
    peer.script("/x", [Reply::status(503), Reply::status(503), Reply::status(503), Reply::status(503)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: x
    uses: http
    retry: { max_attempts: 3, initial_delay: 10ms, jitter: none }
    with: { url: "BASE/x" }
"#
    .replace("BASE", &peer.url);
    let id = env.start(&yaml, json!({})).await;
    assert_eq!(env.wait(&id).await["status"], "failed");
    env.ex.replay(TENANT, &only_dead_letter(&env).await).await.unwrap();
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let attempts = rec["steps"]["x"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 5, "3 before the replay, 2 after: {attempts:#?}");
    assert_eq!(attempts.iter().map(|a| a["number"].as_u64().unwrap()).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    env.shutdown().await;
}

async fn replaying_a_continue_on_error_step_runs_it_and_keeps_the_run(env: Env) {
    let peer = Peer::start().await;
    peer.script("/opt", [Reply::status(400)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: opt
    uses: http
    continue_on_error: true
    with: { url: "BASE/opt" }
  - id: after
    uses: transform
    with: { output: "{{ steps.opt.status }}" }
"#
    .replace("BASE", &peer.url);
    let id = env.start(&yaml, json!({})).await;
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["steps"]["after"]["output"], "failed");
    let dl = only_dead_letter(&env).await;
    env.ex.replay(TENANT, &dl).await.unwrap();
    // The run went on without the step, so it keeps its status; the step runs again on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let rec = loop {
        let rec = env.ex.record(TENANT, &id).await.unwrap();
        if rec["steps"]["opt"]["status"] == "succeeded" || std::time::Instant::now() > deadline {
            break rec;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["opt"]["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["after"]["output"], "failed", "a step that had succeeded is not run again");
    assert!(env.ex.replay(TENANT, &dl).await.is_err(), "a dead letter replays once");
    env.shutdown().await;
}

async fn filter_in_on_failure_stops_the_handlers(env: Env) {
    let peer = Peer::start().await;
    peer.script("/a", [Reply::status(400)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: a
    uses: http
    with: { url: "BASE/a" }
on_failure:
  - id: only_5xx
    uses: filter
    with: { when: "error.class == 'http_5xx'" }
  - id: page
    uses: http
    needs: [only_5xx]
    with: { url: "BASE/page" }
"#
    .replace("BASE", &peer.url);
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(rec["steps"]["only_5xx"]["reason"], "filtered");
    assert_eq!(rec["steps"]["page"]["status"], "skipped");
    assert!(peer.hits("/page").is_empty());
    env.shutdown().await;
}

async fn delay_inside_for_each_ends(env: Env) {
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: pause
    uses: delay
    for_each: [1, 2, 3]
    with: { for: 300ms }
"#;
    let t = std::time::Instant::now();
    let rec = env.run(yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert!(t.elapsed() >= Duration::from_millis(300));
    assert_eq!(rec["steps"]["pause"]["output"], json!([null, null, null]));
    env.shutdown().await;
}

async fn replay_fans_a_cancelled_for_each_out_again_and_reruns_the_handlers(env: Env) {
    let peer = Peer::start().await;
    // `a` fails twice; `each` is in the middle of its items when `a` fails the first time.
    peer.script("/a", [Reply::status(400).after(Duration::from_millis(150)), Reply::status(400)]);
    for i in 0..3 {
        peer.script(&format!("/item/{i}"), [Reply::json(200, json!({ "i": i })).after(Duration::from_millis(400))]);
    }
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: a
    uses: http
    with: { url: "BASE/a" }
  - id: each
    uses: http
    for_each: [0, 1, 2]
    with: { url: "BASE/item/{{ item }}" }
on_failure:
  - id: alert
    uses: http
    with: { url: "BASE/alert" }
"#
    .replace("BASE", &peer.url);
    let id = env.start(&yaml, json!({})).await;
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(rec["steps"]["each"]["status"], "cancelled", "{rec:#}");
    assert_eq!(peer.hits("/alert").len(), 1);
    // Replay: `a` fails again, so the run fails again and its handlers run again.
    env.ex.replay(TENANT, &only_dead_letter(&env).await).await.unwrap();
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(peer.hits("/alert").len(), 2, "on_failure runs on the second failure too: {rec:#}");
    // Replay again: `a` succeeds now, and the cancelled fan-out runs from the start and completes.
    env.ex.replay(TENANT, &only_dead_letter(&env).await).await.unwrap();
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let outs: Vec<_> = rec["steps"]["each"]["output"].as_array().unwrap().iter().map(|o| o["status"].clone()).collect();
    assert_eq!(outs, vec![json!(200), json!(200), json!(200)], "{rec:#}");
    env.shutdown().await;
}

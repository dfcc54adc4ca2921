//! When steps fail: `continue_on_error`, `on_failure` with `error` in scope, dead letters (inputs redacted,
//! every attempt) and their replay, and the egress guard.

use crate::both_stores;
use crate::harness::{Backend, Env, Opts, Peer, Reply, TENANT};
use serde_json::json;
use sluice_connectors::egress::Egress;

both_stores!(
    finished_runs_are_deleted_after_their_retention,
    continue_on_error_lets_the_run_succeed,
    on_failure_runs_with_the_error_in_scope,
    dead_letter_keeps_redacted_inputs_and_replay_continues
);

async fn continue_on_error_lets_the_run_succeed(env: Env) {
    let peer = Peer::start().await;
    peer.script("/x", [Reply::status(404)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: optional
    uses: http
    continue_on_error: true
    with: { url: "BASE/x" }
  - id: next
    uses: transform
    with: { output: { status: "{{ steps.optional.status }}", output: "{{ steps.optional.output }}" } }
"#
    .replace("BASE", &peer.url);
    let rec = env.run(&yaml, json!({})).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["optional"]["status"], "failed");
    assert_eq!(rec["steps"]["optional"]["output"], json!(null));
    assert_eq!(rec["steps"]["next"]["output"], json!({ "status": "failed", "output": null }));
    assert_eq!(rec["error"], json!(null));
    env.shutdown().await;
}

async fn on_failure_runs_with_the_error_in_scope(env: Env) {
    let peer = Peer::start().await;
    peer.script("/charge", [Reply::status(500)]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: charge
    uses: http
    retry: { max_attempts: 1 }
    with: { method: POST, url: "BASE/charge" }
  - id: receipt
    uses: transform
    with: { output: "{{ steps.charge.output }}" }
  - id: unrelated
    uses: delay
    with: { for: 5s }
on_failure:
  - id: alert
    uses: http
    with:
      method: POST
      url: "BASE/alert"
      body: { step: "{{ error.step }}", class: "{{ error.class }}", message: "{{ error.message }}", run: "{{ run.id }}" }
"#
    .replace("BASE", &peer.url);
    let t = std::time::Instant::now();
    let rec = env.run(&yaml, json!({})).await;
    assert!(t.elapsed() < std::time::Duration::from_secs(4), "the failure waited for a pending delay");
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(rec["error"]["step"], "charge");
    assert_eq!(rec["steps"]["receipt"]["status"], "cancelled");
    assert_eq!(rec["steps"]["alert"]["status"], "succeeded");
    let alert = peer.hits("/alert");
    assert_eq!(alert.len(), 1);
    let body = alert[0].json();
    assert_eq!(body["step"], "charge");
    assert_eq!(body["class"], "http_5xx");
    assert_eq!(body["run"], rec["id"]);
    assert!(body["message"].as_str().unwrap().contains("answered 500"), "{body}");
    env.shutdown().await;
}

async fn dead_letter_keeps_redacted_inputs_and_replay_continues(env: Env) {
    let env = Env::with(env.backend, Opts { secrets: vec![("TOKEN", "s3cr3t-token-value")], ..Opts::default() }).await;
    let peer = Peer::start().await;
    peer.script("/push", [Reply::json(400, json!({ "error": "bad token s3cr3t-token-value" }))]);
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: first
    uses: http
    with: { url: "BASE/first" }
  - id: push
    uses: http
    needs: [first]
    with:
      method: POST
      url: "BASE/push"
      auth: { bearer: "{{ secrets.TOKEN }}" }
      body: { token: "{{ secrets.TOKEN }}", n: 1 }
  - id: after
    uses: transform
    with: { output: "{{ steps.push.output.status }}" }
"#
    .replace("BASE", &peer.url);
    let id = env.start(&yaml, json!({})).await;
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "failed", "{rec:#}");
    assert_eq!(rec["steps"]["after"]["status"], "cancelled");
    let dls = env.store.dead_letters(TENANT).await.unwrap();
    assert_eq!(dls.len(), 1);
    let dl = &dls[0];
    assert!(dl.id.starts_with("dl_"));
    assert_eq!(rec["steps"]["push"]["dead_letter"], dl.id.as_str());
    assert_eq!((dl.run_id.as_str(), dl.step.as_str()), (id.as_str(), "push"));
    assert_eq!(dl.error.class, "http_4xx");
    assert_eq!(dl.attempts.len(), 1);
    let stored = serde_json::to_string(&dls).unwrap() + &rec.to_string();
    assert!(!stored.contains("s3cr3t-token-value"), "a secret leaked: {stored}");
    assert_eq!(dl.inputs["body"]["token"], "***");
    assert_eq!(dl.inputs["auth"]["bearer"], "***");
    assert_eq!(dl.inputs["body"]["n"], 1);

    // The partner is fixed: replay runs the step again with the same key, and the run goes on from there.
    let replayed = env.ex.replay(TENANT, &dl.id).await.unwrap();
    assert_eq!(replayed, id);
    let rec = env.wait(&id).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    assert_eq!(rec["steps"]["after"]["output"], 200);
    assert_eq!(rec["error"], json!(null));
    assert_eq!(peer.hits("/first").len(), 1, "a step that had succeeded ran again");
    let pushes = peer.hits("/push");
    assert_eq!(pushes.len(), 2);
    assert!(pushes.iter().all(|h| h.header("idempotency-key") == format!("{id}:push")));
    assert_eq!(pushes[1].header("authorization"), "Bearer s3cr3t-token-value");
    let attempts = rec["steps"]["push"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "the replay is the step's next attempt: {attempts:#?}");
    assert!(env.store.dead_letters(TENANT).await.unwrap().is_empty(), "a replayed dead letter is gone");
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn egress_refuses_loopback_private_and_metadata_addresses() {
    let env = Env::with(Backend::Embedded, Opts { egress: Egress::PublicOnly, ..Opts::default() }).await;
    let peer = Peer::start().await;
    let port = peer.url.rsplit(':').next().unwrap().to_string();
    let mut cases = vec![
        (peer.url.clone(), "loopback"),
        (format!("http://localhost:{port}/"), "loopback"),
        ("http://169.254.169.254/latest/meta-data/".to_string(), "link-local"),
        ("http://10.0.0.8/".to_string(), "private"),
        ("http://[::ffff:127.0.0.1]/".to_string(), "loopback"),
        ("file:///etc/passwd".to_string(), "scheme"),
    ];
    // A name that the resolver turns into a loopback address (this machine's own name, from /etc/hosts)
    // is refused after resolution, on the address that would be dialed.
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_string();
    let resolved: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&(host.as_str(), 80)).map(Iterator::collect).unwrap_or_default();
    if !host.is_empty() && !resolved.is_empty() && resolved.iter().all(|a| a.ip().is_loopback()) {
        cases.push((format!("http://{host}:{port}/"), "loopback"));
    }
    for (url, why) in cases {
        let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: call
    uses: http
    with: { url: "{{ trigger.body.url }}" }
"#;
        let rec = env.run(yaml, json!({ "url": url })).await;
        assert_eq!(rec["status"], "failed", "{url}: {rec:#}");
        let err = &rec["steps"]["call"]["attempts"][0]["error"];
        assert_eq!(err["class"], "config", "{url}: refusals are not retried: {err}");
        let msg = err["message"].as_str().unwrap();
        assert!(msg.contains("refused"), "{url}: {msg}");
        assert!(msg.contains(why), "{url}: the message should say it is {why}: {msg}");
        if why != "scheme" {
            assert!(msg.contains("--allow-private-network"), "{url}: the message should say how to allow it: {msg}");
        }
    }
    assert!(peer.all_hits().is_empty(), "a refused request reached the peer");
    env.shutdown().await;
}

async fn finished_runs_are_deleted_after_their_retention(env: Env) {
    let backend = env.backend;
    env.shutdown().await;
    let env =
        Env::with(backend, Opts { retention: Some(std::time::Duration::from_millis(300)), ..Opts::default() }).await;
    let yaml = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
steps:
  - id: a
    uses: transform
    with: { output: 1 }
"#;
    let done = env.run(yaml, json!({})).await;
    let id = done["id"].as_str().unwrap().to_string();
    let slow = yaml.replace("uses: transform\n    with: { output: 1 }", "uses: delay\n    with: { for: 1500ms }");
    let running = env.start(&slow, json!({})).await;
    assert!(env.ex.record(TENANT, &id).await.is_ok(), "a finished run is kept during its retention");
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    env.store.housekeeping().await.unwrap();
    assert!(env.ex.record(TENANT, &id).await.is_err(), "the run outlived its retention");
    assert!(env.store.all_states(TENANT, &id).await.unwrap().is_empty(), "its outputs outlived it");
    // A run that has not finished is never deleted.
    let rec = env.wait(&running).await;
    assert_eq!(rec["status"], "succeeded");
    env.shutdown().await;
}

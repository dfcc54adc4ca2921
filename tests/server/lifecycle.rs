//! Restarts, dead letter replay through the API, graceful shutdown, and the `--pipelines` folder.

use crate::harness::*;
use crate::on_both;
use serde_json::{json, Value};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

on_both!(
    runs_and_pipelines_survive_a_restart,
    a_dead_letter_replay_continues_the_run,
    shutdown_finishes_what_is_in_flight,
    the_pipelines_folder_is_loaded_and_watched,
);

async fn runs_and_pipelines_survive_a_restart(backing: Arc<Backing>) {
    let mut server = Server::start(&backing).await;
    let key = server.admin().tenant("acme", Value::Null).await;
    let api = server.api(&key);
    let p = "version: 1\nname: slow\ntriggers:\n  - manual: {}\nsteps:\n  - id: wait\n    uses: delay\n    with: { for: 1500ms }\n  - id: done\n    uses: transform\n    needs: [wait]\n    with: { output: \"{{ trigger.body.n }}\" }\n";
    api.put_yaml("slow", p).await.expect(201);
    api.put_json("/v1/secrets/KEEP", json!({ "value": "kept-across-restarts" })).await.expect(200);
    let run = api.start("slow", json!({ "n": 7 })).await;
    let h = [("idempotency-key", "before-restart")];
    let first =
        api.send("POST", "/v1/pipelines/slow/runs", Some(("application/json", br#"{"n":1}"#.to_vec())), &h).await;
    let first = first.expect(202)["run_id"].clone();
    // Killed outright while the run waits; started again on the same store.
    server.restart().await;
    let api = server.api(&key);
    // De-duplication keys survive too.
    let again =
        api.send("POST", "/v1/pipelines/slow/runs", Some(("application/json", br#"{"n":1}"#.to_vec())), &h).await;
    assert_eq!(again.expect(200)["run_id"], first);
    let rec = api.wait_run(&run).await;
    assert_eq!(
        (rec["status"].as_str(), rec["steps"]["done"]["output"].clone()),
        (Some("succeeded"), json!(7)),
        "{rec}"
    );
    assert_eq!(api.get("/v1/pipelines/slow").await.expect(200)["version"], 1);
    assert_eq!(api.get("/v1/secrets").await.expect(200)["items"][0]["name"], "KEEP");
    let listed = api.get("/v1/runs").await;
    assert!(listed.expect(200)["items"].as_array().unwrap().iter().any(|r| r["id"] == run.as_str()));
}

async fn a_dead_letter_replay_continues_the_run(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    let peer = Peer::start().await;
    peer.script("/partner", [Reply::status(500), Reply::status(503)]);
    let p = format!(
        "version: 1\nname: push\ntriggers:\n  - manual: {{}}\nsteps:\n  - id: call\n    uses: http\n    retry: {{ max_attempts: 1 }}\n    with:\n      url: {}/partner\n      method: POST\n      body: {{ order: \"{{{{ trigger.body.order }}}}\" }}\n  - id: after\n    uses: transform\n    needs: [call]\n    with: {{ output: \"{{{{ steps.call.output.status }}}}\" }}\n",
        peer.url
    );
    api.put_yaml("push", &p).await.expect(201);
    let run = api.start("push", json!({ "order": "o-1" })).await;
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["status"], "failed");
    let dls = api.get(&format!("/v1/dead-letters?run={run}")).await;
    let dl = dls.expect(200)["items"][0].clone();
    assert_eq!((dl["run_id"].as_str(), dl["step"].as_str()), (Some(run.as_str()), Some("call")), "{dl}");
    assert_eq!(dl["error"]["class"], "http_5xx");
    // Replayed: the step runs again with the same idempotency key, then the run continues downstream.
    let replay = api.post(&format!("/v1/dead-letters/{}/replay", dl["id"].as_str().unwrap()), json!({})).await;
    assert_eq!(replay.expect(202)["run_id"], run.as_str());
    // The second reply is a 503 too: it fails again, a new dead letter. Retry from the failed step.
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["status"], "failed", "{rec}");
    let retried = api.post(&format!("/v1/runs/{run}/retry"), json!({})).await;
    assert_eq!(retried.expect(202)["replayed"].as_array().map(Vec::len), Some(1));
    let rec = loop {
        let r = api.wait_run(&run).await;
        if r["status"] != "failed" {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(rec["steps"]["after"]["output"], 200);
    let keys: Vec<String> = peer.hits("/partner").iter().map(|h| h.header("idempotency-key").to_string()).collect();
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k == &keys[0] && !k.is_empty()), "{keys:?}");
    // Consumed: a second replay finds nothing; a succeeded run cannot be retried.
    api.post(&format!("/v1/dead-letters/{}/replay", dl["id"].as_str().unwrap()), json!({}))
        .await
        .expect_error(404, "not_found");
    api.post(&format!("/v1/runs/{run}/retry"), json!({})).await.expect_error(409, "run_not_failed");
    assert_eq!(api.get("/v1/dead-letters").await.expect(200)["items"], json!([]));
    // Paging: three failed runs, two a page; a run filter.
    peer.script("/partner", [Reply::status(500), Reply::status(500), Reply::status(500)]);
    let mut failed = Vec::new();
    for i in 0..3 {
        let r = api.start("push", json!({ "order": i })).await;
        api.wait_run(&r).await;
        failed.push(r);
    }
    let p1 = api.get("/v1/dead-letters?limit=2").await.expect(200).clone();
    assert_eq!(p1["items"].as_array().map(Vec::len), Some(2));
    assert_eq!(p1["items"][0]["run_id"], failed[2].as_str(), "newest first");
    let p2 =
        api.get(&format!("/v1/dead-letters?limit=2&cursor={}", p1["next"].as_str().unwrap())).await.expect(200).clone();
    assert_eq!((p2["items"].as_array().map(Vec::len), p2["next"].clone()), (Some(1), Value::Null));
    assert_eq!(p2["items"][0]["run_id"], failed[0].as_str());
    let one = api.get(&format!("/v1/dead-letters?run={}", failed[1])).await.expect(200).clone();
    assert_eq!(one["items"].as_array().map(Vec::len), Some(1));
    let m = server.api("").get("/metrics").await.text;
    assert!(m.contains("sluice_dead_letters_total{tenant=\"acme\"} 5"), "{m}");
    assert!(m.contains("sluice_attempts_total{tenant=\"acme\",result=\"error\"} 5"), "{m}");
}

async fn shutdown_finishes_what_is_in_flight(backing: Arc<Backing>) {
    let mut server = Server::start(&backing).await;
    let key = server.admin().tenant("acme", Value::Null).await;
    let api = server.api(&key);
    let peer = Peer::start().await;
    peer.script("/slow", [Reply::json(200, json!({ "ok": true })).after(Duration::from_millis(1500))]);
    let p = format!(
        "version: 1\nname: slow-call\ntriggers:\n  - manual: {{}}\nsteps:\n  - id: call\n    uses: http\n    with: {{ url: {}/slow }}\n",
        peer.url
    );
    api.put_yaml("slow-call", &p).await.expect(201);
    let run = api.start("slow-call", json!({})).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while peer.hits("/slow").is_empty() {
        assert!(Instant::now() < deadline, "the step never started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let started = Instant::now();
    assert_eq!(server.terminate(), Some(0), "sluice serve exits 0 on SIGTERM");
    assert!(started.elapsed() >= Duration::from_millis(900), "it did not wait for the step in flight");
    // The step finished before the process went: after a restart the run is done and the step ran once.
    server.restart().await;
    let rec = server.api(&key).wait_run(&run).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(peer.hits("/slow").len(), 1);
}

async fn the_pipelines_folder_is_loaded_and_watched(backing: Arc<Backing>) {
    let folder = TempDir::new("folder");
    let acme = folder.0.join("acme");
    std::fs::create_dir_all(&acme).unwrap();
    std::fs::write(acme.join("echo.yaml"), echo_pipeline("echo")).unwrap();
    std::fs::write(acme.join("broken.yaml"), "version: 1\nname: broken\n").unwrap();
    let dir = folder.0.display().to_string();
    let server = Server::start_with(&backing, &["--pipelines", &dir]).await;
    let made = server.admin().post("/v1/admin/tenants/acme/keys", json!({})).await;
    let api = server.api(made.expect(201)["api_key"].as_str().unwrap());
    let got = api.get("/v1/pipelines/echo").await;
    assert_eq!((got.expect(200)["version"].clone(), got.body["origin"].clone()), (json!(1), json!("folder")));
    api.get("/v1/pipelines/broken").await.expect_error(404, "not_found");
    let run = api.start("echo", json!({ "a": 1 })).await;
    assert_eq!(api.wait_run(&run).await["status"], "succeeded");
    // Changed on disk: a new version within a few seconds; an invalid change keeps the last good one.
    std::fs::write(acme.join("echo.yaml"), echo_pipeline("echo").replace("got:", "received:")).unwrap();
    let until = |want: u64| {
        let api = api.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                let v = api.get("/v1/pipelines/echo").await;
                if v.body["version"] == want {
                    return;
                }
                assert!(Instant::now() < deadline, "version {want} never came: {}", v.text);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    until(2).await;
    std::fs::write(acme.join("echo.yaml"), "version: 1\nname: echo\ntriggers: []\n").unwrap();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(api.get("/v1/pipelines/echo").await.expect(200)["version"], 2);
    // Gone from the folder: deleted.
    std::fs::remove_file(acme.join("echo.yaml")).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while api.get("/v1/pipelines/echo").await.status != 404 {
        assert!(Instant::now() < deadline, "the pipeline outlived its file");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An API-only server (`--workers 0`) and a separate `sluice worker` on one Redis are one service: the worker
/// runs the server's runs, with the tenant's secrets and event routing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_only_servers_and_separate_workers_are_one_service() {
    let backing = Backing::new(Backend::Redis);
    let server = Server::start_with(&backing, &["--workers", "0"]).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    api.put_json("/v1/secrets/TOKEN", json!({ "value": "worker-side-secret" })).await.expect(200);
    let emitter = "version: 1\nname: emitter\ntriggers:\n  - manual: {}\nsteps:\n  - id: use\n    uses: transform\n    with: { output: \"{{ secrets.TOKEN | length }}\" }\n  - id: tell\n    uses: emit\n    needs: [use]\n    with: { type: thing.done, data: { n: \"{{ steps.use.output }}\" } }\n";
    let listener = "version: 1\nname: listener\ntriggers:\n  - event: { type: thing.done }\nsteps:\n  - id: got\n    uses: transform\n    with: { output: \"{{ trigger.body.n }}\" }\n";
    api.put_yaml("emitter", emitter).await.expect(201);
    api.put_yaml("listener", listener).await.expect(201);
    let run = api.start("emitter", json!({})).await;
    // Nothing runs it yet: the server has no workers.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(api.get(&format!("/v1/runs/{run}")).await.expect(200)["status"], "queued");
    let mut worker = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["worker", "--redis", &backing.redis.as_ref().unwrap().url, "--concurrency", "4"])
        .env("SLUICE_MASTER_KEY", MASTER_KEY)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start a sluice worker");
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    assert_eq!(rec["steps"]["use"]["output"], "worker-side-secret".len());
    let deadline = Instant::now() + Duration::from_secs(20);
    let started = loop {
        if let Some(r) = api.run_ids("listener").await.first() {
            break r["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "the event started no run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(api.wait_run(&started).await["steps"]["got"]["output"], "worker-side-secret".len());
    let _ = worker.kill();
    let _ = worker.wait();
}

//! Faults with real processes: a `sluice worker` killed with SIGKILL mid-step loses nothing and successors run
//! once; workers survive Redis dropping their connections; an embedded store reopened after its process is
//! gone still has every acknowledged run.

use crate::harness::{Env, Peer, RedisServer, Reply, TempDir, TENANT};
use serde_json::json;
use sluice_connectors::egress::Egress;
use sluice_runtime::{executor, Executor, RedisStore, SqliteStore, StaticSecrets, Store};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An executor with no workers of its own: it starts runs and reads them; worker processes do the steps.
fn client(store: Arc<dyn Store>) -> Executor {
    let config = executor::Config { lease: Duration::from_secs(2), egress: Egress::AllowPrivate };
    Executor::new(
        store,
        sluice_connectors::connectors(),
        Arc::new(StaticSecrets::new(Default::default())),
        Arc::new(executor::NoOtherPipelines),
        config,
    )
    .expect("executor")
}

fn worker(redis: &RedisServer) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["worker", "--redis", &redis.url, "--lease", "2s", "--concurrency", "4", "--allow-private-network"])
        .env("RUST_LOG", "warn")
        .env("SLUICE_MASTER_KEY", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start a sluice worker")
}

async fn wait_until(what: &str, max: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn finished(ex: &Executor, run: &str, max: Duration) -> serde_json::Value {
    let deadline = Instant::now() + max;
    loop {
        if ex.is_finished(TENANT, run).await.expect("state") {
            return ex.record(TENANT, run).await.expect("record");
        }
        let rec = ex.record(TENANT, run).await.expect("record");
        assert!(Instant::now() < deadline, "run did not finish within {max:?}: {rec:#}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const DIAMOND: &str = r#"
version: 1
name: t
triggers: [ { manual: {} } ]
vars: { base: "BASE" }
defaults: { timeout: 60s }
steps:
  - id: first
    uses: http
    with: { url: "{{ vars.base }}/first" }
  - id: slow
    uses: http
    needs: [first]
    with: { url: "{{ vars.base }}/slow" }
  - id: left
    uses: http
    needs: [slow]
    with: { url: "{{ vars.base }}/left" }
  - id: right
    uses: http
    needs: [slow]
    with: { url: "{{ vars.base }}/right" }
  - id: join
    uses: http
    needs: [left, right]
    with: { url: "{{ vars.base }}/join" }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_killed_mid_step_loses_nothing_and_successors_run_once() {
    let redis = RedisServer::start();
    let peer = Peer::start().await;
    // The first try of `slow` hangs; the worker is killed while it waits.
    peer.script("/slow", [Reply::status(200).after(Duration::from_secs(60))]);
    let ex = client(Arc::new(RedisStore::connect(&redis.url).await.expect("redis")));
    let run = ex
        .start_run(TENANT, &Env::plan(&DIAMOND.replace("BASE", &peer.url)), 1, json!({ "kind": "manual", "body": {} }))
        .await
        .expect("start");

    let mut first = worker(&redis);
    wait_until("the worker is inside `slow`", Duration::from_secs(20), || !peer.hits("/slow").is_empty()).await;
    first.kill().expect("SIGKILL the worker");
    let _ = first.wait();
    let killed_at = Instant::now();

    let mut second = worker(&redis);
    let rec = finished(&ex, &run, Duration::from_secs(30)).await;
    let _ = second.kill();
    let _ = second.wait();

    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let slow = peer.hits("/slow");
    assert_eq!(slow.len(), 2, "the killed step runs again elsewhere, once");
    assert!(
        slow[1].at.duration_since(killed_at) < Duration::from_secs(10),
        "the lease of 2 s should have freed the step soon"
    );
    assert_eq!(
        slow[0].header("idempotency-key"),
        slow[1].header("idempotency-key"),
        "the rerun keeps its idempotency key"
    );
    for p in ["/first", "/left", "/right", "/join"] {
        assert_eq!(peer.hits(p).len(), 1, "{p} must run exactly once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_survive_redis_dropping_their_connections() {
    let redis = RedisServer::start();
    let peer = Peer::start().await;
    let ex = client(Arc::new(RedisStore::connect(&redis.url).await.expect("redis")));
    let plan = Env::plan(&DIAMOND.replace("BASE", &peer.url));
    let mut w = worker(&redis);
    let run = ex.start_run(TENANT, &plan, 1, json!({ "kind": "manual", "body": {} })).await.expect("start");
    assert_eq!(finished(&ex, &run, Duration::from_secs(20)).await["status"], "succeeded");

    // Cut every connection but this one (commands, pub/sub), twice, with work arriving in between.
    let mut admin = redis.conn().await;
    for _ in 0..2 {
        for kind in ["normal", "pubsub"] {
            let _: redis::Value = redis::cmd("CLIENT")
                .arg("KILL")
                .arg("TYPE")
                .arg(kind)
                .arg("SKIPME")
                .arg("yes")
                .query_async(&mut admin)
                .await
                .expect("CLIENT KILL");
        }
        let run =
            ex.start_run(TENANT, &plan, 1, json!({ "kind": "manual", "body": {} })).await.expect("start after the cut");
        let rec = finished(&ex, &run, Duration::from_secs(20)).await;
        assert_eq!(rec["status"], "succeeded", "{rec:#}");
        assert!(w.try_wait().expect("status").is_none(), "the worker exited after losing its connection");
    }
    let _ = w.kill();
    let _ = w.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_acknowledged_run_survives_its_process_on_the_embedded_store() {
    let dir = TempDir::new("durable");
    let peer = Peer::start().await;
    let plan = Env::plan(&DIAMOND.replace("BASE", &peer.url));
    // Accepted and stored, then the process that accepted it is gone before any worker ran.
    let run = {
        let ex = client(Arc::new(SqliteStore::open(&dir.0).expect("open")));
        ex.start_run(TENANT, &plan, 1, json!({ "kind": "manual", "body": {} })).await.expect("start")
    };
    let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.0).expect("reopen"));
    let ex = Arc::new(client(store));
    let (stop, rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(sluice_runtime::worker::run_workers(ex.clone(), 2, rx));
    let rec = finished(&ex, &run, Duration::from_secs(20)).await;
    assert_eq!(rec["status"], "succeeded", "{rec:#}");
    let _ = stop.send(true);
    let _ = workers.await;
}

/// A worker that stalled past its lease: another worker took the step, so the stalled one's renewal finds
/// nothing to renew and its commit is refused whole (fencing), on both stores.
async fn fencing(store: Arc<dyn Store>) {
    use sluice_runtime::model::{Commit, NewRun, RunHeader, RunStatus, StepState, StepStatus, TaskRef};
    let header = RunHeader {
        id: "run_fence".into(),
        pipeline: "t".into(),
        version: 1,
        tenant: TENANT.into(),
        status: RunStatus::Queued,
        trigger: json!({}),
        started_at: String::new(),
        started_at_ms: 0,
        finished_at: None,
        error: None,
        reason: None,
    };
    let task = TaskRef::step("run_fence", "a");
    store.create_run(TENANT, &NewRun::new(header, json!({}), vec![task.clone()])).await.unwrap();
    let a = store.claim("worker-a", 50).await.unwrap().expect("worker a claims the task");
    tokio::time::sleep(Duration::from_millis(150)).await;
    let b = store.claim("worker-b", 30_000).await.unwrap().expect("the expired lease makes the task claimable");
    assert_eq!(b.task, task);
    assert_eq!(store.extend("worker-a", std::slice::from_ref(&a), 30_000).await.unwrap(), 0, "a's lease is gone");
    assert_eq!(store.extend("worker-b", std::slice::from_ref(&b), 30_000).await.unwrap(), 1);
    let done = |who: &str| Commit {
        states: vec![(
            "a".into(),
            StepState { status: StepStatus::Succeeded, output: json!(who), ..StepState::default() },
        )],
        terminal: vec!["a".into()],
        release: true,
        ..Commit::default()
    };
    let stale = store.commit(TENANT, "run_fence", Some(&a), done("a")).await.unwrap();
    assert!(stale.stale, "a commit without the lease must be refused");
    assert_eq!(
        store.states(TENANT, "run_fence", &["a".into()]).await.unwrap(),
        vec![None],
        "nothing of it was applied"
    );
    let ok = store.commit(TENANT, "run_fence", Some(&b), done("b")).await.unwrap();
    assert!(!ok.stale);
    let st = store.states(TENANT, "run_fence", &["a".into()]).await.unwrap();
    assert_eq!(st[0].as_ref().map(|s| s.output.clone()), Some(json!("b")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_worker_cannot_commit_over_the_one_that_took_its_step() {
    let dir = TempDir::new("fence");
    fencing(Arc::new(SqliteStore::open(&dir.0).expect("open"))).await;
    let redis = RedisServer::start();
    fencing(Arc::new(RedisStore::connect(&redis.url).await.expect("redis"))).await;
}

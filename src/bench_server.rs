//! `sluice bench --workload webhook|noisy`: the server's two standard workloads.
//!
//! - `webhook`: signed inbound webhooks through the real HTTP server (axum, verification, de-duplication,
//!   rate limit, durable store), from 64 concurrent keep-alive connections on this machine; reports the
//!   accepted rate and the request latency, then runs every stored run and checks its result.
//! - `noisy`: one tenant floods the engine with runs while another starts one run at a time; reports how
//!   much the quiet tenant's run latency grows over an idle engine (fair scheduling).

use crate::bench::{percentile, round, BenchArgs};
use anyhow::{bail, Context as _};
use serde_json::{json, Value};
use sluice_connectors::egress::Egress;
use sluice_runtime::catalog::{Catalog, Limits, Tenant};
use sluice_runtime::crypto::MasterKey;
use sluice_runtime::{executor, Executor, RedisStore, SqliteStore, Store};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const CLIENTS: usize = 64;

pub(crate) async fn open(args: &BenchArgs) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Catalog>, std::path::PathBuf)> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-{}-{}", std::process::id(), ulid::Ulid::new()));
    Ok(match &args.redis {
        Some(url) => {
            let s = Arc::new(RedisStore::connect(url).await.with_context(|| format!("cannot connect to {url}"))?);
            (s.clone(), s, dir)
        }
        None => {
            let s = Arc::new(SqliteStore::open(&dir).context("cannot create the temporary store")?);
            (s.clone(), s, dir)
        }
    })
}

fn emit(args: &BenchArgs, report: &Value, human: String) -> anyhow::Result<ExitCode> {
    match args.format {
        crate::Format::Json => crate::emit(&format!("{}\n", serde_json::to_string_pretty(report)?)),
        crate::Format::Human => crate::emit(&human),
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn webhook(validator: sluice_engine::Validator, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (store, catalog, dir) = open(&args).await?;
    let key = MasterKey::from_base64(&MasterKey::generate()).map_err(anyhow::Error::msg)?;
    let config = executor::Config { egress: Egress::AllowPrivate, ..executor::Config::default() };
    let limits = Limits { requests_per_second: 100_000.0, burst: 1_000_000, max_runs_in_flight: 1_000_000 };
    let (state, ex) = crate::serve::services(
        store.clone(),
        catalog.clone(),
        key.clone(),
        validator,
        config,
        limits,
        None,
        String::new(),
    )?;
    // A tenant of its own per benchmark, so runs on a shared Redis never mix.
    let tenant = format!("bench-{}", ulid::Ulid::new().to_string().to_lowercase());
    let created = chrono::Utc::now().to_rfc3339();
    catalog.create_tenant(&Tenant { id: tenant.clone(), limits, created_at: created.clone() }).await?;
    let sealed =
        key.seal(&sluice_runtime::tenancy::secret_owner(&tenant, "WHSEC"), SECRET).map_err(anyhow::Error::msg)?;
    catalog.put_secret(&tenant, "WHSEC", &sealed, &created).await?;
    let yaml = "version: 1\nname: ingest\ntriggers:\n  - webhook:\n      path: in\n      verify: { scheme: standard-webhooks, secret: \"{{ secrets.WHSEC }}\" }\nsteps:\n  - id: add\n    uses: transform\n    with: { output: \"{{ trigger.body.n + 1 }}\" }\n";
    if let Err(e) = sluice_server::api::pipelines::store(&state, &tenant, "ingest", yaml, "yaml", "api").await {
        bail!("the benchmark pipeline was refused: {}", e.message);
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/{tenant}/in", listener.local_addr()?);
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sluice_server::serve(listener, state.clone(), async move {
        let _ = http_stopped.await;
    }));

    // Every request signed before the clock starts: signing is the sender's cost.
    let now = chrono::Utc::now().timestamp() as u64;
    let secrets = vec![SECRET.to_string()];
    let mut requests = Vec::with_capacity(args.runs);
    for n in 0..args.runs {
        let body = format!("{{\"n\":{n}}}");
        let id = format!("msg_{n}_{}", ulid::Ulid::new());
        let sig = sluice_connectors::sign(&secrets, &id, now, body.as_bytes()).map_err(|e| anyhow::anyhow!("{e}"))?;
        requests.push((id, sig, body));
    }
    let requests = Arc::new(requests);
    let client = reqwest::Client::builder().pool_max_idle_per_host(CLIENTS).build()?;
    let send = move |client: reqwest::Client, url: String, (id, sig, body): (String, String, String)| async move {
        let t = Instant::now();
        let r = client
            .post(&url)
            .header("webhook-id", id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", sig)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        anyhow::Ok((status, v, t.elapsed().as_secs_f64() * 1000.0))
    };
    // Warm up connections and scripts with requests that are not counted.
    for i in 0..CLIENTS.min(args.runs) {
        let (id, _, body) = &requests[i];
        let warm = (
            format!("warm_{id}"),
            sluice_connectors::sign(&secrets, &format!("warm_{id}"), now, body.as_bytes())
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            body.clone(),
        );
        send(client.clone(), url.clone(), warm).await?;
    }

    let before = store.commands_executed().await?;
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let (client, url, next, requests) = (client.clone(), url.clone(), next.clone(), requests.clone());
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(req) = requests.get(i) else { return anyhow::Ok(out) };
                let (status, v, ms) = send(client.clone(), url.clone(), req.clone()).await?;
                out.push((i, status, v["run_id"].as_str().unwrap_or("").to_string(), ms));
            }
        }));
    }
    let mut results = Vec::with_capacity(args.runs);
    for t in tasks {
        results.extend(t.await??);
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let after = store.commands_executed().await?;
    let refused: Vec<_> = results.iter().filter(|r| r.1 != 202).collect();
    if let Some(r) = refused.first() {
        bail!("{} of {} webhooks were not accepted, e.g. #{} answered {}", refused.len(), args.runs, r.0, r.1);
    }
    let mut latencies: Vec<f64> = results.iter().map(|r| r.3).collect();
    latencies.sort_by(f64::total_cmp);

    // Replayed ids: the first run's id, nothing started.
    let mut by_index: HashMap<usize, String> = results.iter().map(|r| (r.0, r.2.clone())).collect();
    for i in 0..args.runs.min(100) {
        let (status, v, _) = send(client.clone(), url.clone(), requests[i].clone()).await?;
        if status != 200 || v["run_id"].as_str() != by_index.get(&i).map(String::as_str) {
            bail!("replayed webhook #{i} answered {status} {v}, not the first run's id");
        }
    }

    // Every stored run runs and gives n + 1.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(sluice_runtime::worker::run_workers(ex.clone(), args.concurrency, stop_rx));
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut wrong = Vec::new();
    for (i, run) in by_index.drain() {
        loop {
            if ex.is_finished(&tenant, &run).await? {
                break;
            }
            if Instant::now() > deadline {
                bail!("run {run} did not finish within 5 minutes");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let rec = ex.record(&tenant, &run).await?;
        if rec["status"] != "succeeded" || rec["steps"]["add"]["output"] != json!(i + 1) {
            wrong.push(format!("{run}: {} {}", rec["status"], rec["steps"]["add"]["output"]));
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), workers).await;
    let _ = http_stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
    let _ = catalog.delete_tenant(&tenant).await;
    let _ = std::fs::remove_dir_all(&dir);
    if !wrong.is_empty() {
        bail!("{} of {} runs are wrong, e.g. {}", wrong.len(), args.runs, wrong[0]);
    }
    let commands = after.saturating_sub(before).saturating_sub(u64::from(args.redis.is_some()));
    let report = json!({
        "workload": "webhook",
        "store": store.name(),
        "runs": args.runs,
        "steps_per_run": 1,
        "clients": CLIENTS,
        "elapsed_s": round(elapsed, 3),
        "runs_per_s": round(args.runs as f64 / elapsed, 1),
        "latency_ms": { "p50": round(percentile(&latencies, 0.5), 2), "p99": round(percentile(&latencies, 0.99), 2),
                         "max": round(latencies.last().copied().unwrap_or(0.0), 2) },
        "store_commands_per_webhook": round(commands as f64 / args.runs as f64, 2),
    });
    let human = format!(
        "webhook workload on the {} store: {} signed webhooks from {CLIENTS} connections\n  {} accepted/s ({} s), every one verified, de-duplicated and stored before its 202\n  request latency: p50 {} ms, p99 {} ms, max {} ms\n  store commands per webhook: {}\n  then every run ran and was checked\n",
        report["store"].as_str().unwrap_or(""),
        report["runs"],
        report["runs_per_s"],
        report["elapsed_s"],
        report["latency_ms"]["p50"],
        report["latency_ms"]["p99"],
        report["latency_ms"]["max"],
        report["store_commands_per_webhook"],
    );
    emit(&args, &report, human)
}

/// One run of the quiet tenant, start to finish, in ms.
async fn quiet_run(ex: &Executor, tenant: &str, plan: &sluice_engine::Plan, n: i64) -> anyhow::Result<f64> {
    let t = Instant::now();
    let id = ex.start_run(tenant, plan, 1, json!({ "kind": "manual", "body": { "n": n } })).await?;
    let deadline = t + Duration::from_secs(300);
    while !ex.is_finished(tenant, &id).await? {
        if Instant::now() > deadline {
            bail!("a quiet run did not finish within 5 minutes");
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rec = ex.record(tenant, &id).await?;
    if rec["status"] != "succeeded" || rec["steps"]["s10"]["output"] != json!(n + 10) {
        bail!("quiet run {id} is wrong: {} {}", rec["status"], rec["steps"]["s10"]["output"]);
    }
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

pub async fn noisy(plan: sluice_engine::Plan, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (store, _, dir) = open(&args).await?;
    let ex = crate::bench::plain_executor(store.clone())?;
    let suffix = ulid::Ulid::new().to_string().to_lowercase();
    let (loud, quiet) = (format!("noisy-{suffix}"), format!("quiet-{suffix}"));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(sluice_runtime::worker::run_workers(ex.clone(), args.concurrency, stop_rx));

    // The quiet tenant alone: its latency on an idle engine.
    let mut idle = Vec::new();
    for i in 0..40 {
        let ms = quiet_run(&ex, &quiet, &plan, i).await?;
        if i >= 10 {
            idle.push(ms);
        }
    }
    idle.sort_by(f64::total_cmp);

    // The flood: every run of the noisy tenant queued as fast as they can be stored, while the quiet tenant
    // starts one run at a time until the flood is through.
    let t0 = Instant::now();
    let queued = Arc::new(std::sync::Mutex::new(Vec::with_capacity(args.runs)));
    let flooding = {
        let (ex, loud, plan, queued, runs) = (ex.clone(), loud.clone(), plan.clone(), queued.clone(), args.runs);
        tokio::spawn(async move {
            // 16 starters at once, as a flood of webhooks would come.
            let mut starters = tokio::task::JoinSet::new();
            for part in 0..16 {
                let (ex, loud, plan, queued) = (ex.clone(), loud.clone(), plan.clone(), queued.clone());
                starters.spawn(async move {
                    for i in (part..runs).step_by(16) {
                        let id = ex.start_run(&loud, &plan, 1, json!({ "kind": "manual", "body": { "n": i } })).await?;
                        if let Ok(mut q) = queued.lock() {
                            q.push(id);
                        }
                    }
                    anyhow::Ok(())
                });
            }
            while let Some(r) = starters.join_next().await {
                r??;
            }
            anyhow::Ok(t0.elapsed().as_secs_f64())
        })
    };
    // Flood runs that finished, counted from the executor's notices (a lagging receiver re-counts by polling).
    let finished = Arc::new(AtomicUsize::new(0));
    let counting = {
        let (mut rx, finished, loud) = (ex.finished_runs(), finished.clone(), loud.clone());
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok((t, _, _)) if t == loud => {
                        finished.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        finished.fetch_add(n as usize, Ordering::Relaxed);
                    }
                    Err(_) => return,
                }
            }
        })
    };
    let mut under = Vec::new();
    let mut n = 0;
    let mut queued_s = None;
    loop {
        under.push(quiet_run(&ex, &quiet, &plan, n).await?);
        n += 1;
        if queued_s.is_none() && flooding.is_finished() {
            queued_s = Some(0.0);
        }
        if queued_s.is_some() && finished.load(Ordering::Relaxed) >= args.runs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let queued_s = flooding.await??;
    counting.abort();
    let flood: Vec<String> = queued.lock().map(|q| q.clone()).unwrap_or_default();
    let flood_s = t0.elapsed().as_secs_f64();
    for id in &flood {
        let rec = ex.record(&loud, id).await?;
        if rec["status"] != "succeeded" {
            bail!("noisy run {id} is {}", rec["status"]);
        }
    }
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), workers).await;
    let _ = std::fs::remove_dir_all(&dir);
    if under.is_empty() {
        bail!("the flood was over before a quiet run could start; use more --runs");
    }
    under.sort_by(f64::total_cmp);
    let idle_p50 = percentile(&idle, 0.5);
    let report = json!({
        "workload": "noisy",
        "store": store.name(),
        "runs": args.runs,
        "steps_per_run": 10,
        "concurrency": args.concurrency,
        "flood": { "queued_s": round(queued_s, 3), "drained_s": round(flood_s, 3),
                   "steps_per_s": round((args.runs * 10) as f64 / flood_s, 1) },
        "quiet_idle_ms": { "p50": round(idle_p50, 2), "p99": round(percentile(&idle, 0.99), 2) },
        "quiet_under_flood_ms": { "p50": round(percentile(&under, 0.5), 2), "p99": round(percentile(&under, 0.99), 2),
                                  "max": round(under.last().copied().unwrap_or(0.0), 2), "samples": under.len() },
        "slowdown_p50": round(percentile(&under, 0.5) / idle_p50.max(0.001), 2),
        "slowdown_p99": round(percentile(&under, 0.99) / idle_p50.max(0.001), 2),
        "fifo_wait_s": round(flood_s, 3),
    });
    let human = format!(
        "noisy-neighbour workload on the {} store: one tenant floods {} runs of 10 steps ({} slots)\n  flood drained in {} s ({} steps/s); a FIFO queue would make every other tenant wait up to that long\n  the quiet tenant's 10-step run: idle p50 {} ms; under the flood p50 {} ms, p99 {} ms ({} runs)\n  slowdown over idle: p50 x{}, p99 x{}\n",
        report["store"].as_str().unwrap_or(""),
        report["runs"],
        report["concurrency"],
        report["flood"]["drained_s"],
        report["flood"]["steps_per_s"],
        report["quiet_idle_ms"]["p50"],
        report["quiet_under_flood_ms"]["p50"],
        report["quiet_under_flood_ms"]["p99"],
        report["quiet_under_flood_ms"]["samples"],
        report["slowdown_p50"],
        report["slowdown_p99"],
    );
    emit(&args, &report, human)
}

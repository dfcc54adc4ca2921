//! `sluice bench`: drives a standard workload through the real engine (store, apalis workers, executor) on the
//! embedded store or on Redis, checks every run's result, and reports throughput, latency and store commands
//! per step.

use anyhow::{bail, Context as _};
use clap::{Args, ValueEnum};
use serde_json::{json, Value};
use sluice_connectors::egress::Egress;
use sluice_runtime::{executor, Executor, StaticSecrets, Store};
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Workload {
    /// 10 `transform` steps in a row, each adding 1 to a value.
    Chain,
    /// A root, 8 parallel steps, and a join that sums them.
    Fanout,
    /// Signed inbound webhooks through the HTTP server, verified and stored; then every run checked.
    Webhook,
    /// One tenant floods chain runs while another starts one at a time: the quiet tenant's slowdown.
    Noisy,
}

#[derive(Args)]
pub struct BenchArgs {
    /// Run on this Redis instead of a temporary embedded store (or set SLUICE_REDIS_URL). Benchmark data is
    /// written under the tenant `bench`.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    pub(crate) redis: Option<String>,
    #[arg(long, value_enum, default_value_t = Workload::Chain)]
    pub(crate) workload: Workload,
    /// Runs to drive through the engine.
    #[arg(long, default_value_t = 2000)]
    pub(crate) runs: usize,
    /// Step slots of the in-process workers.
    #[arg(long, default_value_t = 32)]
    pub(crate) concurrency: usize,
    #[arg(long, value_enum, default_value_t = crate::Format::Human)]
    pub(crate) format: crate::Format,
}

const TENANT: &str = "bench";

fn pipeline(w: Workload) -> (String, usize) {
    let mut y = String::from("version: 1\nname: bench\ntriggers: [ { manual: {} } ]\nsteps:\n");
    match w {
        Workload::Chain => {
            y.push_str("  - id: s1\n    uses: transform\n    with: { output: \"{{ trigger.body.n + 1 }}\" }\n");
            for i in 2..=10 {
                y.push_str(&format!(
                    "  - id: s{i}\n    uses: transform\n    with: {{ output: \"{{{{ steps.s{}.output + 1 }}}}\" }}\n",
                    i - 1
                ));
            }
            (y, 10)
        }
        Workload::Webhook | Workload::Noisy => pipeline(Workload::Chain),
        Workload::Fanout => {
            y.push_str("  - id: root\n    uses: transform\n    with: { output: \"{{ trigger.body.n }}\" }\n");
            let mut sum = Vec::new();
            for i in 1..=8 {
                y.push_str(&format!("  - id: b{i}\n    uses: transform\n    with: {{ output: \"{{{{ steps.root.output + {i} }}}}\" }}\n"));
                sum.push(format!("steps.b{i}.output"));
            }
            y.push_str(&format!(
                "  - id: join\n    uses: transform\n    with: {{ output: \"{{{{ {} }}}}\" }}\n",
                sum.join(" + ")
            ));
            (y, 10)
        }
    }
}

/// The output the last step must have for input `n`.
fn expected(w: Workload, n: i64) -> (&'static str, i64) {
    match w {
        Workload::Chain => ("s10", n + 10),
        Workload::Fanout => ("join", 8 * n + 36),
        Workload::Webhook | Workload::Noisy => expected(Workload::Chain, n),
    }
}

pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

pub fn run(validator: &sluice_engine::Validator, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let (yaml, steps_per_run) = pipeline(args.workload);
    let plan = match sluice_engine::compile(validator, "bench.yaml", &yaml) {
        Ok((plan, _)) => plan,
        Err(d) => bail!("the benchmark pipeline does not compile: {d:?}"),
    };
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    // The retry probe fails on purpose; its warnings are not news.
    crate::init_logs("error");
    match args.workload {
        Workload::Webhook => rt
            .block_on(crate::bench_server::webhook(sluice_engine::Validator::new(sluice_connectors::registry()), args)),
        Workload::Noisy => rt.block_on(crate::bench_server::noisy(plan, args)),
        _ => rt.block_on(bench(plan, steps_per_run, args)),
    }
}

/// An executor for benchmark workloads: no tenant secrets, no event routing, private addresses allowed (the
/// only outbound request of a workload is the retry probe's, to a closed port on this machine).
pub(crate) fn plain_executor(store: Arc<dyn Store>) -> anyhow::Result<Arc<Executor>> {
    let config = executor::Config { egress: Egress::AllowPrivate, ..executor::Config::default() };
    let ex = Executor::new(
        store,
        sluice_connectors::connectors(),
        Arc::new(StaticSecrets::new(HashMap::new())),
        Arc::new(executor::NoOtherPipelines),
        config,
    )
    .map_err(anyhow::Error::msg)?;
    Ok(Arc::new(ex))
}

async fn bench(plan: sluice_engine::Plan, steps_per_run: usize, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let (store, _, dir) = crate::bench_server::open(&args).await?;
    let ex = plain_executor(store.clone())?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(sluice_runtime::worker::run_workers(ex.clone(), args.concurrency, stop_rx));
    let mut done = ex.finished_runs();
    let trigger =
        |n: i64| json!({ "kind": "manual", "body": { "n": n }, "headers": {}, "query": {}, "received_at": "" });

    // Warm up (scripts loaded, connections open), then one run at a time for the idle latency.
    let mut idle = Vec::new();
    for i in 0..60 {
        let t = Instant::now();
        let id = ex.start_run(TENANT, &plan, 1, trigger(i)).await?;
        wait_for(&mut done, std::slice::from_ref(&id)).await?;
        if i >= 10 {
            idle.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    idle.sort_by(f64::total_cmp);

    // Throughput: every run started at once, the clock stops when the last one finished.
    let before = store.commands_executed().await?;
    let t0 = Instant::now();
    let mut started: HashMap<String, (Instant, i64)> = HashMap::with_capacity(args.runs);
    let mut latencies = Vec::with_capacity(args.runs);
    let mut finished = 0usize;
    let mut failed = Vec::new();
    for i in 0..args.runs {
        let n = i as i64;
        let id = ex.start_run(TENANT, &plan, 1, trigger(n)).await?;
        started.insert(id, (Instant::now(), n));
        while let Ok((_, run, status)) = done.try_recv() {
            note(&started, &mut latencies, &mut finished, &mut failed, run, status);
        }
    }
    while finished < args.runs {
        match tokio::time::timeout(Duration::from_secs(60), done.recv()).await {
            Ok(Ok((_, run, status))) => note(&started, &mut latencies, &mut finished, &mut failed, run, status),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(n))) => {
                bail!("the benchmark lost {n} completion notices")
            }
            Ok(Err(e)) => bail!("{e}"),
            Err(_) => bail!("no run finished for 60 s; {finished} of {} are done", args.runs),
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let after = store.commands_executed().await?;
    let retry_errors = retry_accuracy(&ex, &mut done).await?;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), workers).await;

    // Every run's result is checked, outside the measured window.
    for (id, (_, n)) in &started {
        let rec = ex.record(TENANT, id).await?;
        let (last, want) = expected(args.workload, *n);
        if rec["status"] != "succeeded" || rec["steps"][last]["output"] != json!(want) {
            failed.push(format!(
                "{id}: expected {last} = {want}, got {} ({})",
                rec["steps"][last]["output"], rec["status"]
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if !failed.is_empty() {
        bail!("{} of {} runs are wrong, e.g. {}", failed.len(), args.runs, failed[0]);
    }
    latencies.sort_by(f64::total_cmp);
    let steps = (args.runs * steps_per_run) as f64;
    // The first `INFO` of the two is counted in the difference.
    let commands = after.saturating_sub(before).saturating_sub(u64::from(args.redis.is_some()));
    let report = json!({
        "workload": match args.workload { Workload::Fanout => "fanout", _ => "chain" },
        "store": store.name(),
        "runs": args.runs,
        "steps_per_run": steps_per_run,
        "concurrency": args.concurrency,
        "elapsed_s": round(elapsed, 3),
        "runs_per_s": round(args.runs as f64 / elapsed, 1),
        "steps_per_s": round(steps / elapsed, 1),
        "latency_ms": { "p50": round(percentile(&latencies, 0.5), 2), "p99": round(percentile(&latencies, 0.99), 2) },
        "idle_run_ms": { "p50": round(percentile(&idle, 0.5), 2), "p99": round(percentile(&idle, 0.99), 2) },
        "store_commands_per_step": round(commands as f64 / steps, 2),
        "retry_delay_error_ms": {
            "p50": round(percentile(&retry_errors, 0.5), 2),
            "max": round(retry_errors.last().copied().unwrap_or(0.0), 2),
            "samples": retry_errors.len(),
        },
    });
    match args.format {
        crate::Format::Json => crate::emit(&format!("{}\n", serde_json::to_string_pretty(&report)?)),
        crate::Format::Human => crate::emit(&human(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs a step that fails with a network error (a closed local port) and is retried 5 times after a
/// constant 100 ms; answers how far each measured wait (end of one attempt to start of the next) was from
/// 100 ms, sorted.
async fn retry_accuracy(
    ex: &Executor,
    done: &mut tokio::sync::broadcast::Receiver<(String, String, sluice_runtime::model::RunStatus)>,
) -> anyhow::Result<Vec<f64>> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let yaml = format!(
        "version: 1\nname: probe\ntriggers: [ {{ manual: {{}} }} ]\nsteps:\n  - id: call\n    uses: http\n    retry: {{ max_attempts: 6, backoff: constant, initial_delay: 100ms, jitter: none, retry_on: [network] }}\n    with: {{ url: \"http://127.0.0.1:{port}/\" }}\n"
    );
    let v = sluice_engine::Validator::new(sluice_connectors::registry());
    let plan = match sluice_engine::compile(&v, "probe.yaml", &yaml) {
        Ok((plan, _)) => plan,
        Err(d) => bail!("the retry probe does not compile: {d:?}"),
    };
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(ex.start_run(TENANT, &plan, 1, json!({ "kind": "manual", "body": {} })).await?);
    }
    wait_for(done, &ids).await?;
    let ms = |v: &Value| {
        v.as_str().and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok()).map(|t| t.timestamp_millis() as f64)
    };
    let mut errors = Vec::new();
    for id in &ids {
        let rec = ex.record(TENANT, id).await?;
        let attempts = rec["steps"]["call"]["attempts"].as_array().cloned().unwrap_or_default();
        for w in attempts.windows(2) {
            if let (Some(end), Some(start)) = (ms(&w[0]["finished_at"]), ms(&w[1]["started_at"])) {
                errors.push((start - end - 100.0).abs());
            }
        }
    }
    if errors.is_empty() {
        bail!("the retry probe recorded no retries");
    }
    errors.sort_by(f64::total_cmp);
    Ok(errors)
}

fn note(
    started: &HashMap<String, (Instant, i64)>,
    latencies: &mut Vec<f64>,
    finished: &mut usize,
    failed: &mut Vec<String>,
    run: String,
    status: sluice_runtime::model::RunStatus,
) {
    if let Some((t, _)) = started.get(&run) {
        *finished += 1;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
        if status != sluice_runtime::model::RunStatus::Succeeded {
            failed.push(format!("{run}: {}", status.as_str()));
        }
    }
}

/// Waits until each of `ids` was reported finished.
async fn wait_for(
    done: &mut tokio::sync::broadcast::Receiver<(String, String, sluice_runtime::model::RunStatus)>,
    ids: &[String],
) -> anyhow::Result<()> {
    let mut left: Vec<&String> = ids.iter().collect();
    while !left.is_empty() {
        let (_, run, _) = tokio::time::timeout(Duration::from_secs(30), done.recv())
            .await
            .context("a warm-up run did not finish within 30 s")??;
        left.retain(|id| **id != run);
    }
    Ok(())
}

pub(crate) fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

fn human(r: &Value) -> String {
    format!(
        "{} workload on the {} store: {} runs of {} steps with {} step slots\n  {} steps/s, {} runs/s ({} s)\n  run latency under load: p50 {} ms, p99 {} ms\n  one run on an idle engine: p50 {} ms, p99 {} ms\n  store commands per step: {}\n  retry delay error: p50 {} ms, max {} ms ({} retries after 100 ms)\n",
        r["workload"].as_str().unwrap_or(""),
        r["store"].as_str().unwrap_or(""),
        r["runs"],
        r["steps_per_run"],
        r["concurrency"],
        r["steps_per_s"],
        r["runs_per_s"],
        r["elapsed_s"],
        r["latency_ms"]["p50"],
        r["latency_ms"]["p99"],
        r["idle_run_ms"]["p50"],
        r["idle_run_ms"]["p99"],
        r["store_commands_per_step"],
        r["retry_delay_error_ms"]["p50"],
        r["retry_delay_error_ms"]["max"],
        r["retry_delay_error_ms"]["samples"],
    )
}

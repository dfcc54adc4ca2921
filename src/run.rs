//! `sluice run FILE`: one run of one pipeline on an embedded, temporary store, with progress and the run record.

use crate::{emit, read_one, Source};
use anyhow::Context as _;
use clap::Args;
use sluice_connectors::egress::Egress;
use sluice_engine::{diag, Validator};
use sluice_runtime::{executor, Executor, SqliteStore, StaticSecrets};
use std::collections::HashMap;
use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    /// The pipeline file.
    file: PathBuf,
    /// The trigger body: JSON text, or `@path` to read it from a file.
    #[arg(long)]
    input: Option<String>,
    /// A secret the templates can read as `secrets.NAME` (repeatable).
    #[arg(long = "secret", value_name = "NAME=VALUE")]
    secrets: Vec<String>,
    /// `human` (default) or `json` (the run record).
    #[arg(long, value_enum, default_value_t = crate::Format::Human)]
    format: crate::Format,
    /// Allow outbound requests to loopback and private addresses (local development and tests).
    #[arg(long)]
    allow_private_network: bool,
    /// Step slots running at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
}

const EXIT_FAILED: u8 = 1;
const EXIT_INVALID: u8 = 2;

pub fn run(validator: &Validator, args: RunArgs) -> anyhow::Result<ExitCode> {
    let (name, src) = match read_one(&args.file)? {
        Source::Text(n, s) => (n, s),
        Source::Unreadable(d) => {
            eprint!("{}", diag::render(&d, ""));
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let plan = match sluice_engine::compile(validator, &name, &src) {
        Ok((plan, warnings)) => {
            for w in &warnings {
                eprint!("{}", diag::render(w, &src));
            }
            plan
        }
        Err(diags) => {
            for d in &diags {
                eprint!("{}", diag::render(d, &src));
            }
            return Ok(ExitCode::from(EXIT_INVALID));
        }
    };
    let body: serde_json::Value = match &args.input {
        None => serde_json::json!({}),
        Some(text) => {
            let text = match text.strip_prefix('@') {
                Some(path) => std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
                None => text.clone(),
            };
            serde_json::from_str(&text).context("--input is not valid JSON")?
        }
    };
    let mut secrets = HashMap::new();
    for s in &args.secrets {
        let (k, v) = s.split_once('=').with_context(|| format!("--secret {s:?} must be NAME=VALUE"))?;
        secrets.insert(k.to_string(), v.to_string());
    }
    // `log` steps print here; retries and failures are in the summary printed at the end.
    crate::init_logs("warn,sluice_connectors=info");
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(run_once(plan, body, secrets, &args))
}

async fn run_once(
    plan: sluice_engine::Plan,
    body: serde_json::Value,
    secrets: HashMap<String, String>,
    args: &RunArgs,
) -> anyhow::Result<ExitCode> {
    let dir = std::env::temp_dir().join(format!("sluice-run-{}-{}", std::process::id(), ulid::Ulid::new()));
    let store = Arc::new(SqliteStore::open(&dir).context("cannot create the temporary store")?);
    let config = executor::Config {
        egress: if args.allow_private_network { Egress::AllowPrivate } else { Egress::PublicOnly },
        ..executor::Config::default()
    };
    let ex = Arc::new(
        Executor::new(
            store,
            sluice_connectors::connectors(),
            Arc::new(StaticSecrets::new(secrets)),
            Arc::new(executor::NoOtherPipelines),
            config,
        )
        .map_err(anyhow::Error::msg)?,
    );
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let workers = tokio::spawn(sluice_runtime::worker::run_workers(ex.clone(), args.concurrency, stop_rx));
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let trigger = serde_json::json!({ "kind": "manual", "body": body, "headers": {}, "query": {}, "received_at": now });
    let tenant = "local";
    let run_id = ex.start_run(tenant, &plan, 1, trigger).await?;
    let progress = args.format == crate::Format::Human && std::io::stderr().is_terminal();
    let mut shown: HashMap<String, String> = HashMap::new();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = &mut ctrl_c, if !interrupted => {
                interrupted = true;
                eprintln!("interrupted: cancelling the run");
                ex.cancel(tenant, &run_id).await?;
            }
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
        if progress {
            let record = ex.record(tenant, &run_id).await?;
            for (id, step) in record["steps"].as_object().into_iter().flatten() {
                let status = step["status"].as_str().unwrap_or("").to_string();
                if status != "pending" && shown.get(id) != Some(&status) {
                    eprintln!("  {id}: {status}");
                    shown.insert(id.clone(), status);
                }
            }
        }
        if ex.is_finished(tenant, &run_id).await? {
            break;
        }
    }
    let record = ex.record(tenant, &run_id).await?;
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), workers).await;
    let _ = std::fs::remove_dir_all(&dir);
    match args.format {
        crate::Format::Json => emit(&format!("{}\n", serde_json::to_string_pretty(&record)?)),
        crate::Format::Human => emit(&human(&record)),
    }
    Ok(if record["status"] == "succeeded" { ExitCode::SUCCESS } else { ExitCode::from(EXIT_FAILED) })
}

/// The run record for people: the run's status, then one block per step.
fn human(record: &serde_json::Value) -> String {
    let mut out = String::new();
    let status = record["status"].as_str().unwrap_or("");
    let reason = record["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
    out.push_str(&format!(
        "run {} of {}: {status}{reason}\n",
        record["id"].as_str().unwrap_or(""),
        record["pipeline"].as_str().unwrap_or("")
    ));
    if let Some(e) = record.get("error").filter(|e| !e.is_null()) {
        out.push_str(&format!(
            "  error in `{}` ({}): {}\n",
            e["step"].as_str().unwrap_or(""),
            e["class"].as_str().unwrap_or(""),
            e["message"].as_str().unwrap_or("")
        ));
    }
    for (id, step) in record["steps"].as_object().into_iter().flatten() {
        let attempts = step["attempts"].as_array().map_or(0, Vec::len);
        let s = step["status"].as_str().unwrap_or("");
        out.push_str(&format!("\n{id}: {s}, {attempts} attempt{}\n", if attempts == 1 { "" } else { "s" }));
        for a in step["attempts"].as_array().into_iter().flatten() {
            if let Some(e) = a.get("error").filter(|e| !e.is_null()) {
                out.push_str(&format!(
                    "  attempt {}: {}: {}\n",
                    a["number"],
                    e["class"].as_str().unwrap_or(""),
                    e["message"].as_str().unwrap_or("")
                ));
            }
        }
        if let Some(r) = step["reason"].as_str() {
            out.push_str(&format!("  reason: {r}\n"));
        }
        if !step["output"].is_null() {
            let text = serde_json::to_string_pretty(&step["output"]).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            for l in lines.iter().take(20) {
                out.push_str(&format!("  {l}\n"));
            }
            if lines.len() > 20 {
                out.push_str(&format!("  ... ({} more lines; --format json shows all)\n", lines.len() - 20));
            }
        }
    }
    out
}

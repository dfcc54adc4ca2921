//! `sluice sync DIR --server URL [--plan] [--prune]`: makes a tenant's pipelines on a server equal to a
//! folder, all at once or not at all. The tenant's key comes from `SLUICE_API_KEY`.
//!
//! The folder is validated here first (any error: the diagnostics as `sluice validate` prints them, exit 1,
//! nothing sent). Then the server makes the plan (`POST /v1/sync` with `plan: true`), which is printed; with
//! `--plan` that is all (exit 0 when nothing would change, 2 when something would). Otherwise the plan's
//! versions go back with the apply, and the server refuses it whole if anything moved since.

use crate::{emit, read_one, Source};
use anyhow::{bail, Context as _};
use clap::Args;
use serde_json::{json, Value};
use sluice_engine::{diag, Validator};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct SyncArgs {
    /// A tenant folder: `<name>.yaml` (or `.yml`, `.json`) files.
    dir: PathBuf,
    /// The server, e.g. `https://sluice.example.com`.
    #[arg(long, env = "SLUICE_SERVER")]
    server: String,
    /// Only print what would change (exit 0: nothing would; 2: something would).
    #[arg(long)]
    plan: bool,
    /// Delete the server's pipelines that are not in the folder.
    #[arg(long)]
    prune: bool,
}

const EXIT_FAILED: u8 = 1;
const EXIT_DRIFT: u8 = 2;

/// The folder's pipeline files, by name.
fn files(dir: &Path) -> anyhow::Result<Vec<(String, String, String, String)>> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the folder {}", dir.display()))?
        .filter_map(Result::ok)
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = e.path();
        let format = match path.extension().and_then(|x| x.to_str()) {
            Some("yaml" | "yml") => "yaml",
            Some("json") => "json",
            _ => continue,
        };
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
        match read_one(&path)? {
            Source::Text(shown, text) => out.push((name, shown, text, format.to_string())),
            Source::Unreadable(d) => bail!("{}", diag::render(&d, "")),
        }
    }
    Ok(out)
}

/// The git commit of the folder's work tree, when it is in one.
fn commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git").arg("-C").arg(dir).args(["rev-parse", "HEAD"]).output().ok()?;
    let id = String::from_utf8(out.stdout).ok()?.trim().to_string();
    if !out.status.success() || id.is_empty() {
        return None;
    }
    // Uncommitted changes: the folder is not that commit.
    let status =
        std::process::Command::new("git").arg("-C").arg(dir).args(["status", "--porcelain", "."]).output().ok()?;
    Some(if status.stdout.is_empty() { id } else { format!("{id}-dirty") })
}

fn print_plan(plan: &Value) -> String {
    let mut out = String::new();
    let list = |k: &str| plan[k].as_array().cloned().unwrap_or_default();
    for c in list("create") {
        out.push_str(&format!("  + {} (new)\n", c["name"].as_str().unwrap_or("")));
    }
    for c in list("update") {
        out.push_str(&format!("  ~ {} (version {})\n", c["name"].as_str().unwrap_or(""), c["from"]));
        for line in c["changes"].as_array().into_iter().flatten() {
            out.push_str(&format!("      {}\n", line.as_str().unwrap_or("")));
        }
    }
    for c in list("delete") {
        out.push_str(&format!("  - {} (version {}, deleted)\n", c["name"].as_str().unwrap_or(""), c["from"]));
    }
    for n in list("skipped") {
        out.push_str(&format!(
            "  ! {} (loaded from the server's --pipelines folder; not touched)\n",
            n.as_str().unwrap_or("")
        ));
    }
    for n in list("kept") {
        out.push_str(&format!("  ? {} (not in the folder; kept, use --prune to delete)\n", n.as_str().unwrap_or("")));
    }
    let count = |k: &str| list(k).len();
    out.push_str(&format!(
        "plan: {} to create, {} to update, {} to delete, {} unchanged\n",
        count("create"),
        count("update"),
        count("delete"),
        count("unchanged")
    ));
    out
}

/// Runs the sync; every failure is exit 1 (2 means drift, never an error).
pub fn run(validator: &Validator, args: SyncArgs) -> anyhow::Result<ExitCode> {
    match sync(validator, args) {
        Ok(code) => Ok(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            Ok(ExitCode::from(EXIT_FAILED))
        }
    }
}

fn sync(validator: &Validator, args: SyncArgs) -> anyhow::Result<ExitCode> {
    let key = std::env::var("SLUICE_API_KEY").context("set SLUICE_API_KEY to the tenant's API key (sk_...)")?;
    let files = files(&args.dir)?;
    // Everything checked first, as `sluice validate` would; any error: nothing is sent.
    let checked = validator.check_all(&files.iter().map(|(_, f, t, _)| (f.clone(), t.clone())).collect::<Vec<_>>());
    let mut errors = 0;
    let mut text = String::new();
    for (c, (_, _, src, _)) in checked.iter().zip(&files) {
        for d in &c.diags {
            errors += usize::from(d.is_error());
            text.push_str(&diag::render(d, src));
            text.push('\n');
        }
    }
    if errors > 0 {
        eprint!("{text}");
        eprintln!("invalid: {errors} error(s); nothing was changed");
        return Ok(ExitCode::from(EXIT_FAILED));
    }
    if !text.is_empty() {
        eprint!("{text}");
    }
    let body_files: Vec<Value> =
        files.iter().map(|(name, _, src, format)| json!({ "name": name, "source": src, "format": format })).collect();
    let commit = commit(&args.dir);
    let url = format!("{}/v1/sync", args.server.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let send = |plan: bool, expected: Option<Value>| {
            let mut body = json!({ "files": body_files, "prune": args.prune, "plan": plan, "commit": commit });
            if let Some(e) = expected {
                body["expected"] = e;
            }
            client.post(&url).bearer_auth(&key).json(&body).send()
        };
        let answer = send(true, None).await.with_context(|| format!("cannot reach {url}"))?;
        let status = answer.status();
        let plan: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            report(&plan);
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        if !plan["changed"].is_boolean() {
            bail!("{url} did not answer a Sluice sync plan (is --server right?)");
        }
        emit(&print_plan(&plan));
        let changed = plan["changed"].as_bool().unwrap_or(false);
        if args.plan {
            return Ok(if changed { ExitCode::from(EXIT_DRIFT) } else { ExitCode::SUCCESS });
        }
        if !changed {
            emit("nothing to apply\n");
            return Ok(ExitCode::SUCCESS);
        }
        let answer =
            send(false, Some(plan["expected"].clone())).await.with_context(|| format!("cannot reach {url}"))?;
        let status = answer.status();
        let done: Value = answer.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            report(&done);
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        if !done["applied"].is_object() {
            bail!("{url} did not answer what it applied; check the server's pipelines");
        }
        let applied = done["applied"].as_object().map_or(0, |m| m.len());
        emit(&format!("applied: {applied} pipeline(s) changed, all at once\n"));
        Ok(ExitCode::SUCCESS)
    })
}

/// An error answer of the server, with diagnostics when there are.
fn report(body: &Value) {
    eprintln!(
        "error: {} ({})",
        body["error"]["message"].as_str().unwrap_or("the server refused the sync"),
        body["error"]["code"].as_str().unwrap_or("")
    );
    for d in body["diagnostics"].as_array().into_iter().flatten() {
        eprintln!(
            "{}:{}:{}: {}[{}]: {}",
            d["file"].as_str().unwrap_or(""),
            d["line"],
            d["column"],
            d["severity"].as_str().unwrap_or(""),
            d["code"].as_str().unwrap_or(""),
            d["message"].as_str().unwrap_or("")
        );
    }
}

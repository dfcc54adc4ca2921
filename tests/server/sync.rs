//! Git-ops: `sluice sync` (plan, apply all at once, prune, drift exit codes, concurrent changes refused,
//! managed pipelines), and pipeline versions (list, diff, rollback).

use crate::harness::*;
use crate::on_both;
use serde_json::{json, Value};
use std::process::Command;
use std::sync::Arc;

on_both!(sync_plans_applies_prunes_and_refuses_drift, versions_diff_and_rollback);

fn pipeline(name: &str, timeout: &str) -> String {
    format!(
        "version: 1\nname: {name}\ntriggers:\n  - manual: {{}}\nsteps:\n  - id: fetch\n    uses: transform\n    timeout: {timeout}\n    with: {{ output: \"{{{{ trigger.body }}}}\" }}\n"
    )
}

/// `sluice sync` against the server: exit code and standard output (standard error appended).
fn sync(server: &Server, key: &str, dir: &std::path::Path, flags: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .arg("sync")
        .arg(dir)
        .args(["--server", &server.base])
        .args(flags)
        .env("SLUICE_API_KEY", key)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run sluice sync");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

async fn sync_plans_applies_prunes_and_refuses_drift(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let key = server.admin().tenant("acme", json!({ "requests_per_second": 1000, "burst": 1000 })).await;
    let api = server.api(&key);
    let dir = TempDir::new("sync");
    std::fs::write(dir.0.join("alpha.yaml"), pipeline("alpha", "10s")).unwrap();
    std::fs::write(dir.0.join("beta.yaml"), pipeline("beta", "10s")).unwrap();
    std::fs::write(dir.0.join("README.md"), "not a pipeline").unwrap();
    // A pipeline made by hand, not in the folder.
    api.put_yaml("manual", &pipeline("manual", "5s")).await.expect(201);

    let (code, out) = sync(&server, &key, &dir.0, &["--plan"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(
        out,
        "  + alpha (new)\n  + beta (new)\n  ? manual (not in the folder; kept, use --prune to delete)\nplan: 2 to create, 0 to update, 0 to delete, 0 unchanged\n"
    );
    assert_eq!(api.get("/v1/pipelines/alpha").await.status, 404, "a plan changes nothing");
    let (code, out) = sync(&server, &key, &dir.0, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.ends_with("applied: 2 pipeline(s) changed, all at once\n"), "{out}");
    let got = api.get("/v1/pipelines/alpha").await.expect(200).clone();
    assert_eq!((got["version"].clone(), got["origin"].clone()), (json!(1), json!("sync")));
    // In sync now: exit 0.
    let (code, out) = sync(&server, &key, &dir.0, &["--plan"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("plan: 0 to create, 0 to update, 0 to delete, 2 unchanged"), "{out}");

    // A change shows as a readable diff.
    std::fs::write(dir.0.join("alpha.yaml"), pipeline("alpha", "30s")).unwrap();
    let (code, out) = sync(&server, &key, &dir.0, &["--plan"]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("  ~ alpha (version 1)\n      steps.fetch.timeout: 10s -> 30s\n"), "{out}");

    // Managed pipelines refuse hand edits, unless forced.
    let edit = api.put_yaml("beta", &pipeline("beta", "20s")).await;
    edit.expect_error(409, "managed_by_git");
    assert!(edit.body["error"]["message"].as_str().unwrap().contains("force"), "{}", edit.text);

    api.delete("/v1/pipelines/beta").await.expect_error(409, "managed_by_git");
    // Failures are exit 1, never the drift code 2.
    let (code, out) = sync(&server, &key, &dir.0.join("missing"), &["--plan"]);
    assert_eq!(code, 1, "{out}");
    let wrong = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["sync", &dir.0.display().to_string(), "--plan", "--server", "http://127.0.0.1:1"])
        .env("SLUICE_API_KEY", &key)
        .output()
        .unwrap();
    assert_eq!(wrong.status.code(), Some(1));
    let usage = Command::new(env!("CARGO_BIN_EXE_sluice")).args(["sync", "--plan"]).output().unwrap();
    assert_eq!(usage.status.code(), Some(1));
    // An invalid folder changes nothing: the diagnostics as `sluice validate` prints them, exit 1.
    std::fs::write(dir.0.join("gamma.yaml"), "version: 1\nname: gamma\ntriggers: []\nsteps: []\n").unwrap();
    let (code, out) = sync(&server, &key, &dir.0, &[]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("gamma.yaml:3:11: error[") && out.contains("nothing was changed"), "{out}");
    assert_eq!(api.get("/v1/pipelines/alpha").await.body["version"], 1);
    std::fs::remove_file(dir.0.join("gamma.yaml")).unwrap();

    // A change on the server between the plan and the apply: refused whole.
    let files = json!([
        { "name": "alpha", "source": pipeline("alpha", "30s") },
        { "name": "beta", "source": pipeline("beta", "10s") },
    ]);
    let plan = api.post("/v1/sync", json!({ "files": files, "plan": true })).await.expect(200).clone();
    assert_eq!(plan["update"][0]["name"], "alpha");
    api.send(
        "PUT",
        "/v1/pipelines/beta?force=true",
        Some(("application/yaml", pipeline("beta", "20s").into_bytes())),
        &[],
    )
    .await
    .expect(200);
    let late = api.post("/v1/sync", json!({ "files": files, "plan": false, "expected": plan["expected"] })).await;
    late.expect_error(409, "concurrent_change");
    assert!(late.body["error"]["message"].as_str().unwrap().contains("beta"), "{}", late.text);
    assert_eq!(api.get("/v1/pipelines/alpha").await.body["version"], 1, "nothing was half-applied");

    // Prune: the hand-made pipeline goes with --prune only.
    let (code, out) = sync(&server, &key, &dir.0, &["--prune", "--plan"]);
    assert_eq!(code, 2);
    assert!(out.contains("  - manual (version 1, deleted)\n"), "{out}");
    let (code, out) = sync(&server, &key, &dir.0, &["--prune"]);
    assert_eq!(code, 0, "{out}");
    api.get("/v1/pipelines/manual").await.expect_error(404, "not_found");
    assert_eq!(api.get("/v1/pipelines/alpha").await.body["version"], 2);
    // beta was forced by hand: the sync took it back to the folder's text, managed again.
    let beta = api.get("/v1/pipelines/beta").await.expect(200).clone();
    assert_eq!(beta["origin"], "sync");
    assert!(beta["source"].as_str().unwrap().contains("timeout: 10s"));
    let (code, out) = sync(&server, &key, &dir.0, &["--prune", "--plan"]);
    assert_eq!(code, 0, "{out}");

    // A webhook path moves from one pipeline to another in one sync.
    let hooked = |name: &str, path: Option<&str>| {
        let trig = path.map_or("  - manual: {}\n".to_string(), |p| format!("  - webhook: {{ path: {p} }}\n"));
        format!("version: 1\nname: {name}\ntriggers:\n{trig}steps:\n  - id: a\n    uses: transform\n    with: {{ output: 1 }}\n")
    };
    std::fs::write(dir.0.join("alpha.yaml"), hooked("alpha", None)).unwrap();
    std::fs::write(dir.0.join("beta.yaml"), hooked("beta", Some("in"))).unwrap();
    assert_eq!(sync(&server, &key, &dir.0, &[]).0, 0);
    std::fs::write(dir.0.join("alpha.yaml"), hooked("alpha", Some("in"))).unwrap();
    std::fs::write(dir.0.join("beta.yaml"), hooked("beta", None)).unwrap();
    let (code, out) = sync(&server, &key, &dir.0, &[]);
    assert_eq!(code, 0, "{out}");
    let hook = api.send("POST", "/hooks/acme/in", Some(("application/json", b"{}".to_vec())), &[]).await;
    let run = hook.expect(202)["run_id"].as_str().unwrap().to_string();
    assert_eq!(api.wait_run(&run).await["pipeline"], "alpha");
}

async fn versions_diff_and_rollback(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let admin = server.admin();
    let key = admin.tenant("acme", Value::Null).await;
    let api = server.api(&key);
    let key_id = admin.get("/v1/admin/tenants/acme/keys").await.body["items"][0]["id"].as_str().unwrap().to_string();
    api.put_yaml("p", &pipeline("p", "10s")).await.expect(201);
    api.put_yaml("p", &pipeline("p", "30s")).await.expect(200);
    let versions = api.get("/v1/pipelines/p/versions").await.expect(200).clone();
    let items = versions["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    assert_eq!((items[0]["author"].as_str(), items[0]["origin"].as_str()), (Some(key_id.as_str()), Some("api")));
    assert_ne!(items[0]["hash"], items[1]["hash"]);
    let d = api.get("/v1/pipelines/p/diff?from=1&to=2").await.expect(200).clone();
    assert_eq!(d["changes"], json!(["steps.fetch.timeout: 10s -> 30s"]));
    // A run keeps its version; a rollback is a new version with the old text.
    let rb = api.post("/v1/pipelines/p/rollback", json!({ "version": 1 })).await.expect(200).clone();
    assert_eq!(rb["version"], 3);
    let now = api.get("/v1/pipelines/p").await.expect(200).clone();
    assert_eq!(now["source"], pipeline("p", "10s"));
    assert_eq!(api.get("/v1/pipelines/p/diff?from=1").await.body["changes"], json!([]));
    api.post("/v1/pipelines/p/rollback", json!({ "version": 9 })).await.expect_error(404, "not_found");
    // An export reads back as the same pipeline and exports to the same bytes (JSON in, YAML out).
    let as_json = json!({ "version": 1, "name": "exported", "triggers": [{ "manual": {} }],
        "steps": [{ "with": { "output": "{{ trigger.body }}" }, "uses": "transform", "id": "a" }] });
    api.put_json("/v1/pipelines/exported", as_json).await.expect(201);
    let export = |api: Api| async move {
        let a = api.send("GET", "/v1/pipelines/exported", None, &[("accept", "application/yaml")]).await;
        assert_eq!(a.headers.get("content-type").and_then(|v| v.to_str().ok()), Some("application/yaml"));
        a.text
    };
    let first = export(api.clone()).await;
    assert_eq!(first, "version: 1\nname: exported\ntriggers:\n- manual: {}\nsteps:\n- id: a\n  uses: transform\n  with:\n    output: \"{{ trigger.body }}\"\n");
    api.put_yaml("exported", &first).await.expect(200);
    assert_eq!(export(api.clone()).await, first);
    // JSON out, and back in: the same YAML again.
    let as_json = api.get("/v1/pipelines/exported?export=json").await.expect(200).clone();
    assert_eq!(as_json["steps"][0]["id"], "a");
    api.put_json("/v1/pipelines/exported", as_json).await.expect(200);
    assert_eq!(export(api.clone()).await, first);
    // A YAML pipeline's export keeps its comments.
    let commented = format!(
        "# why this exists\n{}",
        pipeline("commented", "10s").replace("  - id: fetch\n", "  - id: fetch # the only step\n")
    );
    api.put_yaml("commented", &commented).await.expect(201);
    let out = api.send("GET", "/v1/pipelines/commented", None, &[("accept", "application/yaml")]).await.text;
    assert!(out.contains("# why this exists\n") && out.contains("- id: fetch # the only step\n"), "{out}");
    // Another tenant sees none of it.
    let other = server.api(&admin.tenant("other", Value::Null).await);
    other.get("/v1/pipelines/p/versions").await.expect_error(404, "not_found");
    other.get("/v1/pipelines/p/diff?from=1").await.expect_error(404, "not_found");
    other.post("/v1/pipelines/p/rollback", json!({ "version": 1 })).await.expect_error(404, "not_found");
}

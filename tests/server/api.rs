//! The API: tenant isolation on every route, pipeline versions, secrets, bad input, the OpenAPI document.

use crate::harness::*;
use crate::on_both;
use serde_json::{json, Value};
use std::sync::Arc;

on_both!(
    another_tenants_resources_answer_404_on_every_route,
    pipelines_keep_versions_and_runs_keep_theirs,
    secrets_are_sealed_never_returned_and_redacted,
    keys_are_several_revocable_and_admin_only,
    bad_input_on_every_route_is_a_4xx_json_error,
    events_start_the_tenants_matching_pipelines,
);

/// A pipeline whose first step fails for good at once (nothing listens on the port), so it leaves a dead
/// letter; a second step would run after it.
fn failing_pipeline(name: &str, port: u16) -> String {
    format!(
        "version: 1\nname: {name}\ntriggers:\n  - manual: {{}}\n  - webhook: {{ path: {name} }}\nsteps:\n  - id: call\n    uses: http\n    retry: {{ max_attempts: 1 }}\n    with:\n      url: http://127.0.0.1:{port}/down\n  - id: after\n    uses: transform\n    needs: [call]\n    with:\n      output: done\n"
    )
}

async fn another_tenants_resources_answer_404_on_every_route(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let admin = server.admin();
    let a = server.api(&admin.tenant("alpha", Value::Null).await);
    let b = server.api(&admin.tenant("beta", Value::Null).await);
    a.put_yaml("sync", &failing_pipeline("sync", free_port())).await.expect(201);
    a.put_json("/v1/secrets/TOKEN", json!({ "value": "alpha-secret-value" })).await.expect(200);
    let run = a.start("sync", json!({})).await;
    let rec = a.wait_run(&run).await;
    assert_eq!(rec["status"], "failed", "{rec}");
    let dl = rec["steps"]["call"]["dead_letter"].as_str().expect("a dead letter").to_string();

    // What a missing resource answers, to compare with.
    let missing_run = "run_01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let missing = b.get(&format!("/v1/runs/{missing_run}")).await;
    missing.expect_error(404, "not_found");

    // Every tenant route, with alpha's names and ids, called with beta's key.
    let walk: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/v1/pipelines/sync".into(), None),
        ("DELETE", "/v1/pipelines/sync".into(), None),
        ("POST", "/v1/pipelines/sync/runs".into(), Some(json!({}))),
        ("GET", format!("/v1/runs/{run}"), None),
        ("POST", format!("/v1/runs/{run}/cancel"), None),
        ("POST", format!("/v1/runs/{run}/retry"), None),
        ("POST", format!("/v1/dead-letters/{dl}/replay"), None),
        ("DELETE", "/v1/secrets/TOKEN".into(), None),
    ];
    for (method, path, body) in &walk {
        let answer =
            b.send(method, path, body.as_ref().map(|v| ("application/json", v.to_string().into_bytes())), &[]).await;
        answer.expect_error(404, "not_found");
        // Exactly as for what does not exist: same status, same code, same shape.
        assert_eq!(answer.body["error"].as_object().map(|o| o.len()), Some(2), "{method} {path}: {}", answer.text);
    }
    // A missing run and another tenant's run are indistinguishable.
    let theirs = b.get(&format!("/v1/runs/{run}")).await;
    assert_eq!(theirs.text, missing.text);
    // Lists show nothing of alpha.
    for path in ["/v1/pipelines", "/v1/runs", "/v1/dead-letters", "/v1/secrets"] {
        let page = b.get(path).await;
        assert_eq!(page.expect(200)["items"], json!([]), "{path}: {}", page.text);
    }
    let filtered = b.get("/v1/runs?pipeline=sync").await;
    assert_eq!(filtered.expect(200)["items"], json!([]));
    // Beta's webhook address for alpha's path does not exist; alpha's does.
    b.send("POST", "/hooks/beta/sync", Some(("application/json", b"{}".to_vec())), &[])
        .await
        .expect_error(404, "not_found");
    // The admin routes refuse tenant keys.
    for (method, path) in
        [("GET", "/v1/admin/tenants"), ("POST", "/v1/admin/tenants/alpha/keys"), ("DELETE", "/v1/admin/tenants/alpha")]
    {
        b.send(method, path, None, &[]).await.expect_error(401, "unauthorized");
    }
    // Beta may use the same names for its own things, and alpha's stay as they were.
    b.put_yaml("sync", &echo_pipeline("sync")).await.expect(201);
    b.put_json("/v1/secrets/TOKEN", json!({ "value": "beta-value" })).await.expect(200);
    let ours = a.get("/v1/pipelines/sync").await;
    assert_eq!(ours.expect(200)["version"], 1);
    assert!(ours.body["source"].as_str().unwrap().contains("/down"));
    // Alpha's things are all still there.
    a.get(&format!("/v1/runs/{run}")).await.expect(200);
    let dls = a.get("/v1/dead-letters").await;
    assert_eq!(dls.expect(200)["items"][0]["id"], dl.as_str());
    assert_eq!(a.get("/v1/secrets").await.expect(200)["items"][0]["name"], "TOKEN");
    // No key, a wrong key: 401 with the error body.
    server.api("").get("/v1/runs").await.expect_error(401, "unauthorized");
    server.api("sk_not_a_key").get("/v1/runs").await.expect_error(401, "unauthorized");
}

async fn pipelines_keep_versions_and_runs_keep_theirs(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    let v1 = "version: 1\nname: slow\ntriggers:\n  - manual: {}\nsteps:\n  - id: wait\n    uses: delay\n    with: { for: 1500ms }\n  - id: mark\n    uses: transform\n    needs: [wait]\n    with: { output: one }\n";
    let put = api.put_yaml("slow", v1).await;
    assert_eq!(put.expect(201)["version"], 1);
    // The same text again: no new version.
    let again = api.put_yaml("slow", v1).await;
    assert_eq!(again.expect(200)["changed"], false);
    let run = api.start("slow", json!({})).await;
    let v2 = v1.replace("output: one", "output: two");
    assert_eq!(api.put_yaml("slow", &v2).await.expect(200)["version"], 2);
    // The run started on version 1 finishes on version 1's plan.
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["version"], 1);
    assert_eq!(rec["steps"]["mark"]["output"], "one");
    let later = api.start("slow", json!({})).await;
    let rec2 = api.wait_run(&later).await;
    assert_eq!((rec2["version"].clone(), rec2["steps"]["mark"]["output"].clone()), (json!(2), json!("two")));
    let got = api.get("/v1/pipelines/slow").await;
    let body = got.expect(200);
    assert_eq!(body["versions"].as_array().map(Vec::len), Some(2));
    assert_eq!(api.get("/v1/pipelines/slow?version=1").await.expect(200)["source"], v1);
    // An invalid PUT: 422 with validate's diagnostics, and nothing changes.
    let bad = api.put_yaml("slow", &v2.replace("needs: [wait]", "needs: [wiat]")).await;
    bad.expect_error(422, "invalid_pipeline");
    let d = &bad.body["diagnostics"][0];
    assert_eq!((d["file"].as_str(), d["severity"].as_str()), (Some("slow.yaml"), Some("error")), "{}", bad.text);
    assert!(d["line"].as_u64().is_some() && d["code"].as_str().is_some_and(|c| c.starts_with('S')), "{}", bad.text);
    assert!(d["hint"].as_str().is_some_and(|h| h.contains("wait")), "{}", bad.text);
    assert_eq!(api.get("/v1/pipelines/slow").await.expect(200)["version"], 2);
    // The URL names the pipeline; a different `name:` is the same mistake `sluice validate` reports.
    api.put_yaml("other", v1).await.expect_error(422, "invalid_pipeline");
    // JSON pipelines are accepted too.
    let as_json = json!({ "version": 1, "name": "from-json", "triggers": [{ "manual": {} }],
        "steps": [{ "id": "a", "uses": "transform", "with": { "output": 1 } }] });
    api.put_json("/v1/pipelines/from-json", as_json).await.expect(201);
    // Listed, paged by name.
    let page = api.get("/v1/pipelines?limit=1").await;
    let first = page.expect(200).clone();
    assert_eq!(first["items"].as_array().map(Vec::len), Some(1));
    let next = first["next"].as_str().expect("a next page");
    let rest = api.get(&format!("/v1/pipelines?limit=10&cursor={next}")).await;
    assert_eq!(rest.expect(200)["items"][0]["name"], "slow");
    // A cursor whose item went (deleted meanwhile) still pages on by order.
    let gone = api.get("/v1/pipelines?cursor=from-jsoo").await;
    assert_eq!(gone.expect(200)["items"][0]["name"], "slow");
    // Deleted: gone, and a PUT afterwards continues the numbering.
    api.delete("/v1/pipelines/slow").await.expect(204);
    api.get("/v1/pipelines/slow").await.expect_error(404, "not_found");
    assert_eq!(api.put_yaml("slow", v1).await.expect(200)["version"], 3);
    // The run list filters by status and pipeline.
    let ok = api.get("/v1/runs?pipeline=slow&status=succeeded").await;
    assert_eq!(ok.expect(200)["items"].as_array().map(Vec::len), Some(2));
    api.get("/v1/runs?status=bogus").await.expect_error(400, "invalid_query");
}

async fn secrets_are_sealed_never_returned_and_redacted(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    let secret = "s3cr3t-value-that-must-not-leak";
    api.put_json("/v1/secrets/API_TOKEN", json!({ "value": secret })).await.expect(200);
    let p = "version: 1\nname: uses-secret\ntriggers:\n  - manual: {}\nsteps:\n  - id: show\n    uses: transform\n    with:\n      output: \"token={{ secrets.API_TOKEN }}\"\n";
    api.put_yaml("uses-secret", p).await.expect(201);
    let run = api.start("uses-secret", json!({})).await;
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    // The step got the value (it rendered), the record shows it redacted.
    assert_eq!(rec["steps"]["show"]["output"], "token=***", "{rec}");
    let listed = api.get("/v1/secrets").await;
    assert!(!listed.text.contains(secret) && listed.text.contains("API_TOKEN"), "{}", listed.text);
    // At rest, the store holds only the sealed value.
    match &backing.redis {
        Some(r) => {
            let mut c = r.conn().await;
            let keys: Vec<String> = redis::cmd("KEYS").arg("*").query_async(&mut c).await.unwrap();
            for k in keys {
                let dump: Option<Vec<u8>> = redis::cmd("DUMP").arg(&k).query_async(&mut c).await.unwrap();
                let dump = String::from_utf8_lossy(&dump.unwrap_or_default()).to_string();
                assert!(!dump.contains(secret), "key {k} holds the secret in clear");
            }
        }
        None => {
            for entry in std::fs::read_dir(&backing.dir.0).unwrap() {
                let bytes = std::fs::read(entry.unwrap().path()).unwrap();
                assert!(!String::from_utf8_lossy(&bytes).contains(secret), "the data folder holds the secret in clear");
            }
        }
    }
    // Changed: the next run sees the new value; deleted: templates see it missing.
    api.put_json("/v1/secrets/API_TOKEN", json!({ "value": "second-value-1234" })).await.expect(200);
    api.delete("/v1/secrets/API_TOKEN").await.expect(204);
    api.delete("/v1/secrets/API_TOKEN").await.expect_error(404, "not_found");
    api.put_json("/v1/secrets/bad-name", json!({ "value": "x" })).await.expect_error(400, "invalid_name");
}

async fn keys_are_several_revocable_and_admin_only(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let admin = server.admin();
    let first = admin.tenant("acme", json!({ "requests_per_second": 100, "burst": 100 })).await;
    let second = admin.post("/v1/admin/tenants/acme/keys", json!({})).await;
    let second_key = second.expect(201)["api_key"].as_str().unwrap().to_string();
    let key_id = second.body["key_id"].as_str().unwrap().to_string();
    for k in [&first, &second_key] {
        server.api(k).get("/v1/runs").await.expect(200);
    }
    let keys = admin.get("/v1/admin/tenants/acme/keys").await;
    let listed = keys.expect(200).clone();
    assert_eq!(listed["items"].as_array().map(Vec::len), Some(2));
    assert!(!keys.text.contains(&first[3..]) && !keys.text.contains(&second_key[3..]), "keys are shown once only");
    admin.delete(&format!("/v1/admin/tenants/acme/keys/{key_id}")).await.expect(204);
    server.api(&second_key).get("/v1/runs").await.expect_error(401, "unauthorized");
    server.api(&first).get("/v1/runs").await.expect(200);
    admin.post("/v1/admin/tenants", json!({ "id": "acme" })).await.expect_error(409, "tenant_exists");
    admin.post("/v1/admin/tenants", json!({ "id": "Not Valid" })).await.expect_error(400, "invalid_name");
    let t = admin.get("/v1/admin/tenants/acme").await;
    assert_eq!(t.expect(200)["limits"]["requests_per_second"], 100.0);
    server.api("wrong").get("/v1/admin/tenants").await.expect_error(401, "unauthorized");
    // Deleting a tenant removes what it owned; its keys stop working.
    admin.delete("/v1/admin/tenants/acme").await.expect(204);
    server.api(&first).get("/v1/runs").await.expect_error(401, "unauthorized");
    admin.get("/v1/admin/tenants/acme").await.expect_error(404, "not_found");
}

async fn bad_input_on_every_route_is_a_4xx_json_error(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let admin = server.admin();
    let api = server.api(&admin.tenant("acme", json!({ "requests_per_second": 10000, "burst": 10000 })).await);
    api.put_yaml("echo", &echo_pipeline("echo")).await.expect(201);
    let big = vec![b'x'; 1024 * 1024 + 1];
    let bodies: Vec<(&str, Vec<u8>)> = vec![
        ("application/json", b"{not json".to_vec()),
        ("application/json", b"[1, 2, 3]".to_vec()),
        ("application/json", br#"{"value": 12, "unknown_field": true}"#.to_vec()),
        ("application/json", br#"{"id": ["a"], "limits": {"burst": "many"}}"#.to_vec()),
        ("application/yaml", b"version: [\n".to_vec()),
        ("text/csv", b"a,b\n".to_vec()),
        ("application/json", big.clone()),
        ("application/json", vec![0xff, 0xfe, 0x00]),
    ];
    let routes: Vec<(&str, &str, &Api)> = vec![
        ("PUT", "/v1/pipelines/echo", &api),
        ("POST", "/v1/pipelines/echo/runs", &api),
        ("PUT", "/v1/secrets/NAME", &api),
        ("POST", "/v1/admin/tenants", &admin),
        ("POST", "/hooks/acme/nothing-here", &api),
        ("GET", "/v1/runs?limit=abc", &api),
        ("GET", "/v1/runs?cursor=zzz", &api),
        ("GET", "/v1/dead-letters?limit=0", &api),
        ("GET", "/v1/pipelines?unknown=1", &api),
        ("POST", "/v1/runs/not-a-run/cancel", &api),
        ("POST", "/v1/dead-letters/x/replay", &api),
        ("DELETE", "/v1/pipelines/Bad%20Name", &api),
        ("PATCH", "/v1/runs", &api),
        ("GET", "/v1/nothing", &api),
    ];
    for (method, path, client) in &routes {
        for (ct, body) in &bodies {
            // A trigger body may be any JSON value: only what is not JSON is bad there.
            if *path == "/v1/pipelines/echo/runs" && body.len() < 1000 && serde_json::from_slice::<Value>(body).is_ok()
            {
                continue;
            }
            // Routes that read no body answer before it is sent; a huge one only breaks the client's pipe.
            let reads_body = matches!(
                *path,
                "/v1/pipelines/echo" | "/v1/pipelines/echo/runs" | "/v1/secrets/NAME" | "/v1/admin/tenants"
            ) || path.starts_with("/hooks/");
            if !(reads_body && matches!(*method, "PUT" | "POST")) && body.len() > 1000 {
                continue;
            }
            let a = client.send(method, path, Some((ct, body.clone())), &[]).await;
            assert!(
                (400..500).contains(&a.status),
                "{method} {path} ({ct}, {} bytes): {} {}",
                body.len(),
                a.status,
                a.text
            );
            assert!(
                a.body["error"]["code"].is_string() && a.body["error"]["message"].is_string(),
                "{method} {path}: {}",
                a.text
            );
        }
    }
    // The specific answers clients rely on.
    api.send("PUT", "/v1/pipelines/echo", Some(("application/json", big)), &[])
        .await
        .expect_error(413, "body_too_large");
    api.send("PUT", "/v1/secrets/NAME", Some(("application/json", b"{".to_vec())), &[])
        .await
        .expect_error(400, "invalid_json");
    api.send("PUT", "/v1/secrets/NAME", Some(("application/json", br#"{"value": 1}"#.to_vec())), &[])
        .await
        .expect_error(422, "invalid_body");
    api.send("PUT", "/v1/secrets/NAME", Some(("application/json", br#"{"value": "v", "x": 1}"#.to_vec())), &[])
        .await
        .expect_error(422, "invalid_body");
    api.send("PUT", "/v1/pipelines/echo", Some(("text/csv", b"x".to_vec())), &[])
        .await
        .expect_error(415, "unsupported_media_type");
    api.send("PATCH", "/v1/runs", None, &[]).await.expect_error(405, "method_not_allowed");
    // Nothing of it was stored.
    assert_eq!(api.get("/v1/secrets").await.expect(200)["items"], json!([]));
    assert_eq!(api.get("/v1/pipelines/echo").await.expect(200)["version"], 1);
}

async fn events_start_the_tenants_matching_pipelines(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let admin = server.admin();
    let api = server.api(&admin.tenant("acme", Value::Null).await);
    let other = server.api(&admin.tenant("other", Value::Null).await);
    let emitter = "version: 1\nname: emitter\ntriggers:\n  - manual: {}\nsteps:\n  - id: tell\n    uses: emit\n    with:\n      type: user.created\n      data: { user: \"{{ trigger.body.user }}\" }\n";
    let listener = "version: 1\nname: listener\ntriggers:\n  - event: { type: user.created }\nsteps:\n  - id: greet\n    uses: transform\n    with:\n      output: \"hello {{ trigger.body.user }}\"\n";
    api.put_yaml("emitter", emitter).await.expect(201);
    api.put_yaml("listener", listener).await.expect(201);
    other.put_yaml("listener", listener).await.expect(201);
    let run = api.start("emitter", json!({ "user": "ada" })).await;
    assert_eq!(api.wait_run(&run).await["status"], "succeeded");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let started = loop {
        let ids = api.run_ids("listener").await;
        if let Some(first) = ids.first() {
            break first["id"].as_str().unwrap().to_string();
        }
        assert!(std::time::Instant::now() < deadline, "the event started no run");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let rec = api.wait_run(&started).await;
    assert_eq!(rec["trigger"]["kind"], "event");
    assert_eq!(rec["steps"]["greet"]["output"], "hello ada");
    // The other tenant's listener heard nothing.
    assert!(other.run_ids("listener").await.is_empty());
    // A manual run with an Idempotency-Key starts once.
    let h = [("idempotency-key", "order-42")];
    let first = api
        .send("POST", "/v1/pipelines/emitter/runs", Some(("application/json", br#"{"user":"x"}"#.to_vec())), &h)
        .await;
    let again = api
        .send("POST", "/v1/pipelines/emitter/runs", Some(("application/json", br#"{"user":"x"}"#.to_vec())), &h)
        .await;
    assert_eq!(first.expect(202)["run_id"], again.expect(200)["run_id"]);
    assert_eq!(again.body["duplicate"], true);
    // A pipeline without a manual trigger cannot be started by the API.
    api.post("/v1/pipelines/listener/runs", json!({})).await.expect_error(409, "no_manual_trigger");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_every_route_and_is_served() {
    let backing = Backing::new(Backend::Embedded);
    let server = Server::start(&backing).await;
    let doc = server.api("").get("/openapi.json").await.expect(200).clone();
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.1")), "{}", doc["openapi"]);
    let expected = [
        ("put", "/v1/pipelines/{name}"),
        ("get", "/v1/pipelines/{name}"),
        ("delete", "/v1/pipelines/{name}"),
        ("get", "/v1/pipelines"),
        ("post", "/v1/pipelines/{name}/runs"),
        ("get", "/v1/runs"),
        ("get", "/v1/runs/{id}"),
        ("post", "/v1/runs/{id}/cancel"),
        ("post", "/v1/runs/{id}/retry"),
        ("get", "/v1/dead-letters"),
        ("post", "/v1/dead-letters/{id}/replay"),
        ("put", "/v1/secrets/{name}"),
        ("delete", "/v1/secrets/{name}"),
        ("get", "/v1/secrets"),
        ("post", "/hooks/{tenant}/{path}"),
        ("post", "/v1/admin/tenants"),
        ("get", "/v1/admin/tenants"),
        ("delete", "/v1/admin/tenants/{id}"),
        ("post", "/v1/admin/tenants/{id}/keys"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
    ];
    for (method, path) in expected {
        assert!(doc["paths"][path][method].is_object(), "the OpenAPI document lacks {method} {path}");
    }
    // Every documented operation exists on the server (no `no_route` answer) and declares its answers.
    let api = server.api("");
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            assert!(
                op["responses"].as_object().is_some_and(|r| !r.is_empty()),
                "{method} {path} declares no responses"
            );
            let concrete = path
                .replace("{name}", "x")
                .replace("{id}", "x")
                .replace("{tenant}", "x")
                .replace("{path}", "x")
                .replace("{key_id}", "x");
            let a = api.send(&method.to_uppercase(), &concrete, None, &[]).await;
            assert_ne!(a.body["error"]["code"], "no_route", "{method} {path} is documented but not served");
            assert_ne!(a.status, 405, "{method} {path} is documented but not served");
        }
    }
    // The document's error schema is the body every error has.
    assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
    // The metrics count what happened, by tenant.
    let key = server.admin().tenant("acme", Value::Null).await;
    let t = server.api(&key);
    t.put_yaml("echo", &echo_pipeline("echo")).await.expect(201);
    let run = t.start("echo", json!({})).await;
    t.wait_run(&run).await;
    let m = api.get("/metrics").await.text;
    for line in [
        "# TYPE sluice_runs_started_total counter",
        "sluice_runs_started_total{tenant=\"acme\",trigger=\"manual\"} 1",
        "sluice_runs_finished_total{tenant=\"acme\",status=\"succeeded\"} 1",
        "sluice_steps_total{tenant=\"acme\",status=\"succeeded\"} 1",
        "sluice_attempts_total{tenant=\"acme\",result=\"ok\"} 1",
        "sluice_queue_wait_seconds_count{tenant=\"acme\"} 1",
        "sluice_run_duration_seconds_count{tenant=\"acme\"} 1",
        "sluice_queue_depth{tenant=\"acme\"} 0",
    ] {
        assert!(m.contains(line), "/metrics lacks `{line}`:\n{m}");
    }
    // Real answers fit their documented schemas.
    let fits = |name: &str, value: &Value| {
        let schema = json!({ "$ref": format!("#/components/schemas/{name}"), "components": doc["components"] });
        let v = jsonschema::draft202012::new(&schema).unwrap_or_else(|e| panic!("{name}: {e}"));
        let errors: Vec<String> = v.iter_errors(value).map(|e| format!("{e} at {}", e.instance_path())).collect();
        assert!(errors.is_empty(), "{name} does not fit its schema: {errors:?}\n{value}");
    };
    fits("RunRecord", &t.get(&format!("/v1/runs/{run}")).await.expect(200).clone());
    fits("RunList", &t.get("/v1/runs").await.expect(200).clone());
    fits("PipelineOut", &t.get("/v1/pipelines/echo").await.expect(200).clone());
    let bad = t.put_yaml("echo", "version: 1\nname: echo\n").await;
    fits("InvalidPipelineBody", &bad.body);
    fits("ErrorBody", &t.get("/v1/runs/run_01ARZ3NDEKTSV4RRFFQ69G5FAV").await.body);
}

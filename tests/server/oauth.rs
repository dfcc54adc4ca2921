//! OAuth2 connections against a real, independent authorization server: the certified `oidc-provider`
//! (npm, run on the machine's Node.js; PKCE required, refresh-token rotation with reuse detection, token
//! lifetimes of 2 s). `scripts/test` installs it into `target/oidc-provider`; the tests never skip.

use crate::harness::*;
use crate::on_both;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The `oidc-provider` process, killed on drop.
pub struct Provider {
    child: Child,
    pub base: String,
}

impl Provider {
    pub fn start(redirect: &str, ttl_s: u32) -> Provider {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let dir = std::env::var("SLUICE_OIDC_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|_| root.join("target/oidc-provider"));
        assert!(
            dir.join("node_modules/oidc-provider").exists(),
            "oidc-provider is not installed in {}: run scripts/test (it runs `npm install --prefix target/oidc-provider oidc-provider@8`)",
            dir.display()
        );
        // ESM resolves packages next to the script: the script runs from the install folder.
        std::fs::copy(root.join("tests/oauth/provider.mjs"), dir.join("provider.mjs")).expect("copy provider.mjs");
        let port = free_port();
        let mut child = Command::new("node")
            .arg(dir.join("provider.mjs"))
            .args([port.to_string(), redirect.to_string(), ttl_s.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node is needed for the OAuth tests");
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "oidc-provider did not start");
            if let Ok(Some(s)) = child.try_wait() {
                panic!("oidc-provider exited: {s}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Provider { child, base }
    }

    /// Token requests the provider served, by grant type (and `error:<grant>:<error>`).
    pub async fn stats(&self) -> Value {
        reqwest::get(format!("{}/_stats", self.base)).await.unwrap().json().await.unwrap()
    }

    pub fn count(stats: &Value, key: &str) -> u64 {
        stats[key].as_u64().unwrap_or(0)
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn whoami(name: &str, connection: &str, provider: &Provider) -> String {
    format!(
        "version: 1\nname: {name}\ntriggers:\n  - manual: {{}}\nsteps:\n  - id: call\n    uses: http\n    retry: {{ max_attempts: 1 }}\n    with:\n      url: {}/api/whoami\n      auth: {{ connection: {connection} }}\n",
        provider.base
    )
}

/// A browser: follows the provider's redirects with a cookie jar, submits its login and consent forms,
/// and stops at the redirect to our callback; answers that URL.
async fn walk(start: &str, callback_prefix: &str) -> String {
    let client =
        reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut next = client.get(start).send().await.unwrap();
    for _ in 0..20 {
        if let Some(loc) = next.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string) {
            let loc = next.url().join(&loc).unwrap().to_string();
            if loc.starts_with(callback_prefix) {
                return loc;
            }
            next = client.get(&loc).send().await.unwrap();
            continue;
        }
        let page = next.text().await.unwrap();
        let action =
            page.split("action=\"").nth(1).and_then(|r| r.split('"').next()).expect("a form on the page").to_string();
        let prompt = page.split("name=\"prompt\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("login");
        let form: Vec<(&str, &str)> = match prompt {
            "login" => vec![("prompt", "login"), ("login", "ada"), ("password", "any")],
            other => vec![("prompt", other)],
        };
        next = client.post(&action).form(&form).send().await.unwrap();
    }
    panic!("the authorization walk did not reach the callback");
}

on_both!(client_credentials_fetch_one_token_per_lifetime, the_code_flow_connects_refreshes_once_and_notices_revocation);

async fn client_credentials_fetch_one_token_per_lifetime(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", json!({ "requests_per_second": 1000, "burst": 1000 })).await);
    let provider = Provider::start(&format!("{}/oauth/callback", server.base), 2);
    for (name, client, secret, method) in [
        ("basic", "cc-basic", "cc-basic-secret", "client_secret_basic"),
        ("post", "cc-post", "cc-post-secret", "client_secret_post"),
    ] {
        let put = api
            .put_json(
                &format!("/v1/connections/{name}"),
                json!({
                "grant": "client_credentials", "token_url": format!("{}/token", provider.base),
                "client_id": client, "client_secret": secret, "scopes": ["read"], "auth_method": method }),
            )
            .await;
        let shown = put.expect(200).clone();
        assert_eq!(shown["status"], "connected", "{shown}");
        assert!(shown["expires_at"].is_string());
        assert!(!put.text.contains(secret), "the client secret is never shown");
        api.put_yaml(&format!("who-{name}"), &whoami(&format!("who-{name}"), name, &provider)).await.expect(201);
    }
    // Runs one after another for 5 s: every one authenticated, a new token only as lifetimes run out.
    let before = Provider::count(&provider.stats().await, "client_credentials");
    let t0 = Instant::now();
    let mut runs = 0;
    while t0.elapsed() < Duration::from_secs(5) {
        for name in ["basic", "post"] {
            let run = api.start(&format!("who-{name}"), json!({})).await;
            let rec = api.wait_run(&run).await;
            assert_eq!(rec["status"], "succeeded", "{rec}");
            let client = if name == "basic" { "cc-basic" } else { "cc-post" };
            assert_eq!(rec["steps"]["call"]["output"]["body"]["client"], client);
        }
        runs += 2;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fetched = Provider::count(&provider.stats().await, "client_credentials") - before;
    // A 2 s token is renewed 0.5 s before it expires: about one token per 1.5 s per connection.
    assert!(runs > 20, "only {runs} runs");
    assert!((4..=12).contains(&fetched), "{fetched} tokens for {runs} runs over two connections in 5 s");
    // A wrong secret: the connection says so, a step fails with class config and no retry.
    let bad = api
        .put_json(
            "/v1/connections/wrong",
            json!({
            "grant": "client_credentials", "token_url": format!("{}/token", provider.base),
            "client_id": "cc-basic", "client_secret": "not-the-secret" }),
        )
        .await;
    assert_eq!(bad.expect(200)["status"], "broken", "{}", bad.text);
    api.put_yaml("who-wrong", &whoami("who-wrong", "wrong", &provider)).await.expect(201);
    let run = api.start("who-wrong", json!({})).await;
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["error"]["class"], "config", "{rec}");
    assert_eq!(rec["steps"]["call"]["attempts"].as_array().map(Vec::len), Some(1));
    // Another tenant sees none of it.
    let other = server.api(&server.admin().tenant("other", Value::Null).await);
    other.get("/v1/connections/basic").await.expect_error(404, "not_found");
    other.post("/v1/connections/basic/authorize", json!({})).await.expect_error(404, "not_found");
}

async fn the_code_flow_connects_refreshes_once_and_notices_revocation(backing: Arc<Backing>) {
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", json!({ "requests_per_second": 1000, "burst": 1000 })).await);
    let callback = format!("{}/oauth/callback", server.base);
    let provider = Provider::start(&callback, 2);
    let conn = json!({
        "grant": "authorization_code", "token_url": format!("{}/token", provider.base),
        "authorize_url": format!("{}/auth", provider.base), "client_id": "app", "client_secret": "app-secret",
        "scopes": ["openid", "offline_access"], "extra_params": { "prompt": "consent" } });
    assert_eq!(api.put_json("/v1/connections/app", conn).await.expect(200)["status"], "needs_authorization");
    api.put_yaml("who", &whoami("who", "app", &provider)).await.expect(201);
    let alert = "version: 1\nname: alert\ntriggers:\n  - event: { type: connection.needs_authorization }\nsteps:\n  - id: say\n    uses: transform\n    with: { output: \"reconnect {{ trigger.body.connection }}\" }\n";
    api.put_yaml("alert", alert).await.expect(201);

    // Forged callbacks are refused without a call to the provider.
    let public = reqwest::Client::new();
    let forged = public.get(format!("{callback}?state=forged&code=abc")).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    let start =
        api.post("/v1/connections/app/authorize", json!({})).await.expect(200)["url"].as_str().unwrap().to_string();
    assert!(start.contains("code_challenge_method=S256") && start.contains("state="), "{start}");
    let state = start.split("state=").nth(1).and_then(|s| s.split('&').next()).unwrap().to_string();
    let wrong_iss =
        public.get(format!("{callback}?state={state}&code=abc&iss=https%3A%2F%2Fevil.example")).send().await.unwrap();
    assert_eq!(wrong_iss.status(), 400);
    assert_eq!(Provider::count(&provider.stats().await, "authorization_code"), 0);
    assert_eq!(api.get("/v1/connections/app").await.body["status"], "needs_authorization");

    // The real walk: login, consent, the redirect back to us with `code`, `state` and `iss`.
    let start =
        api.post("/v1/connections/app/authorize", json!({})).await.expect(200)["url"].as_str().unwrap().to_string();
    let back = walk(&start, &callback).await;
    assert!(back.contains("iss="), "the provider sends RFC 9207 iss: {back}");
    let done = public.get(&back).send().await.unwrap();
    assert_eq!(done.status(), 200, "{}", done.text().await.unwrap_or_default());
    let shown = api.get("/v1/connections/app").await.expect(200).clone();
    assert_eq!(shown["status"], "connected", "{shown}");
    assert!(shown.get("tokens_sealed").is_none() && !shown.to_string().contains("app-secret"));
    // A replayed callback is refused, and the code is not exchanged twice.
    assert_eq!(public.get(&back).send().await.unwrap().status(), 400);
    assert_eq!(Provider::count(&provider.stats().await, "authorization_code"), 1);

    let run = api.start("who", json!({})).await;
    assert_eq!(api.wait_run(&run).await["steps"]["call"]["output"]["body"]["account"], "ada");

    // The access token dies early: 10 runs at once each get a 401, and one refresh serves them all.
    reqwest::get(format!("{}/_revoke_access", provider.base)).await.unwrap();
    let before = Provider::count(&provider.stats().await, "refresh_token");
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(api.start("who", json!({})).await);
    }
    for id in &ids {
        let rec = api.wait_run(id).await;
        assert_eq!(rec["status"], "succeeded", "{rec}");
        assert_eq!(
            rec["steps"]["call"]["attempts"].as_array().map(Vec::len),
            Some(1),
            "one attempt: refreshed and retried inside it"
        );
    }
    assert_eq!(Provider::count(&provider.stats().await, "refresh_token") - before, 1);

    // After the token expired, 20 runs at once (on Redis spread over the workers of two servers): exactly
    // one refresh, no revoked grant.
    let _second = match backing.redis {
        Some(_) => Some(Server::start(&backing).await),
        None => None,
    };
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(api.start("who", json!({})).await);
    }
    for id in &ids {
        let rec = api.wait_run(id).await;
        assert_eq!(rec["status"], "succeeded", "{rec}");
    }
    let stats = provider.stats().await;
    assert_eq!(Provider::count(&stats, "refresh_token"), 2, "one refresh after the 401s, one after expiry: {stats}");
    assert!(stats.as_object().unwrap().keys().all(|k| !k.starts_with("error:")), "{stats}");

    // The user revokes access at the provider: the next refresh is refused, the connection needs
    // authorization, the step fails with class config, and the alert pipeline hears of it.
    reqwest::get(format!("{}/_revoke_all", provider.base)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let run = api.start("who", json!({})).await;
    let rec = api.wait_run(&run).await;
    assert_eq!((rec["status"].as_str(), rec["error"]["class"].as_str()), (Some("failed"), Some("config")), "{rec}");
    assert_eq!(api.get("/v1/connections/app").await.body["status"], "needs_authorization");
    let deadline = Instant::now() + Duration::from_secs(10);
    let alerted = loop {
        if let Some(r) = api.run_ids("alert").await.first() {
            break r["id"].as_str().unwrap().to_string();
        }
        assert!(Instant::now() < deadline, "no connection.needs_authorization event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(api.wait_run(&alerted).await["steps"]["say"]["output"], "reconnect app");
    // Later runs fail at once, without asking the provider again (no retry storm).
    let refreshes = Provider::count(&provider.stats().await, "error:refresh_token:invalid_grant");
    let run = api.start("who", json!({})).await;
    assert_eq!(api.wait_run(&run).await["error"]["class"], "config");
    assert_eq!(Provider::count(&provider.stats().await, "error:refresh_token:invalid_grant"), refreshes);
}

/// A token endpoint that answers 503 with `Retry-After`: the step is retried after the wait its policy
/// allows, and then gets its token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_token_endpoint_is_retried_after_its_retry_after() {
    let backing = Backing::new(Backend::Embedded);
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    let peer = Peer::start().await;
    peer.script(
        "/token",
        [
            Reply::status(503).header("retry-after", "1"),
            Reply::status(503).header("retry-after", "1"),
            Reply::json(200, json!({ "access_token": "tok-1", "token_type": "Bearer", "expires_in": 3600 })),
        ],
    );
    let put = api
        .put_json(
            "/v1/connections/flaky",
            json!({
            "grant": "client_credentials", "token_url": format!("{}/token", peer.url),
            "client_id": "c", "client_secret": "s" }),
        )
        .await;
    put.expect(200);
    let p = format!(
        "version: 1\nname: flaky\ntriggers:\n  - manual: {{}}\nsteps:\n  - id: call\n    uses: http\n    retry: {{ max_attempts: 4, initial_delay: 100ms, jitter: none }}\n    with:\n      url: {}/api\n      auth: {{ connection: flaky }}\n",
        peer.url
    );
    api.put_yaml("flaky", &p).await.expect(201);
    let run = api.start("flaky", json!({})).await;
    let rec = api.wait_run(&run).await;
    assert_eq!(rec["status"], "succeeded", "{rec}");
    // The PUT's first token request met the first 503 and its Retry-After: the run's first attempt fails
    // with it without calling the endpoint again; each later attempt waits out the Retry-After.
    let attempts = rec["steps"]["call"]["attempts"].as_array().unwrap().clone();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(attempts[0]["error"]["class"], "http_5xx");
    let at = |v: &Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    for w in attempts.windows(2) {
        let waited = at(&w[1]["started_at"]) - at(&w[0]["finished_at"]);
        assert!(waited.num_milliseconds() >= 900, "waited {waited} instead of Retry-After's 1 s");
    }
    assert_eq!(peer.hits("/token").len(), 3, "the token endpoint is called once per Retry-After, no more");
    let api_hits = peer.hits("/api");
    assert_eq!(api_hits.len(), 1);
    assert_eq!(api_hits[0].header("authorization"), "Bearer tok-1");
}

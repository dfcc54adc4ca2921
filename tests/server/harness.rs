//! A `sluice serve` process on a free port over either store, and a small JSON client for it.

pub use crate::runtime_harness::{free_port, python_sign, Peer, RedisServer, Reply, TempDir};
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const ADMIN: &str = "admin-token-for-tests";
pub const MASTER_KEY: &str = "q83vEjRWeJGrze8SNFV4kNp1jWFk3KVWe3IuQnt2i2E=";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
}

/// Where servers keep their state: a data folder, or a private redis-server. Several servers may share it.
pub struct Backing {
    pub backend: Backend,
    pub dir: TempDir,
    pub redis: Option<RedisServer>,
}

impl Backing {
    pub fn new(backend: Backend) -> Arc<Backing> {
        let redis = (backend == Backend::Redis).then(RedisServer::start);
        Arc::new(Backing { backend, dir: TempDir::new("serve"), redis })
    }
}

/// A running `sluice serve`, killed on drop.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub backing: Arc<Backing>,
    extra: Vec<String>,
    port: u16,
}

impl Server {
    pub async fn start(backing: &Arc<Backing>) -> Server {
        Server::start_with(backing, &[]).await
    }

    pub async fn start_with(backing: &Arc<Backing>, extra: &[&str]) -> Server {
        let port = free_port();
        let mut s = Server {
            child: None,
            base: format!("http://127.0.0.1:{port}"),
            backing: backing.clone(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            port,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sluice"));
        cmd.args(["serve", "--listen", &format!("127.0.0.1:{}", self.port), "--allow-private-network"]);
        cmd.args(["--lease", "2s"]);
        if !self.extra.iter().any(|a| a == "--workers") {
            cmd.args(["--workers", "4"]);
        }
        match &self.backing.redis {
            Some(r) => cmd.args(["--redis", &r.url]),
            None => cmd.args(["--data-dir", &self.backing.dir.0.display().to_string()]),
        };
        cmd.args(&self.extra)
            .env("SLUICE_ADMIN_TOKEN", ADMIN)
            .env("SLUICE_MASTER_KEY", MASTER_KEY)
            .env("RUST_LOG", std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        self.child = Some(cmd.spawn().expect("start sluice serve"));
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{}/readyz", self.base)).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "sluice serve on port {} did not get ready within 20 s", self.port);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// SIGKILL: nothing is finished or handed back.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then waits for the process to exit; answers its exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill").args(["-TERM", &c.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            if let Ok(Some(status)) = c.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the same server again (same port, same store).
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await;
    }

    pub fn api(&self, key: &str) -> Api {
        Api { base: self.base.clone(), key: key.to_string(), client: reqwest::Client::new() }
    }

    pub fn admin(&self) -> Api {
        self.api(ADMIN)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An answer: status, headers, and the body as JSON (`Value::Null` when it is not JSON).
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Answer {
    /// Asserts the status and answers the body.
    #[track_caller]
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        &self.body
    }

    /// Asserts an error answer of SPEC section 7: this status, the JSON error body with this code.
    #[track_caller]
    pub fn expect_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "unexpected answer: {}", self.text);
        assert_eq!(self.body["error"]["code"], code, "unexpected error: {}", self.text);
        assert!(self.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{}", self.text);
    }
}

/// A client with one key.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub key: String,
    pub client: reqwest::Client,
}

impl Api {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if !self.key.is_empty() {
            req = req.bearer_auth(&self.key);
        }
        if let Some((ct, bytes)) = body {
            req = req.header("content-type", ct).body(bytes);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let r = req.send().await.expect("the server answers");
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap_or_default();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Answer { status, headers, body, text }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, None, &[]).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send("DELETE", path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send("POST", path, Some(("application/json", body.to_string().into_bytes())), &[]).await
    }

    pub async fn put_json(&self, path: &str, body: Value) -> Answer {
        self.send("PUT", path, Some(("application/json", body.to_string().into_bytes())), &[]).await
    }

    pub async fn put_yaml(&self, name: &str, yaml: &str) -> Answer {
        self.send("PUT", &format!("/v1/pipelines/{name}"), Some(("application/yaml", yaml.as_bytes().to_vec())), &[])
            .await
    }

    /// Creates a tenant (as the admin) and answers its first API key.
    pub async fn tenant(&self, id: &str, limits: Value) -> String {
        let body = if limits.is_null() { json!({ "id": id }) } else { json!({ "id": id, "limits": limits }) };
        let a = self.post("/v1/admin/tenants", body).await;
        a.expect(201)["api_key"].as_str().expect("api_key").to_string()
    }

    /// Starts a manual run; answers its id.
    pub async fn start(&self, pipeline: &str, body: Value) -> String {
        let a = self.post(&format!("/v1/pipelines/{pipeline}/runs"), body).await;
        a.expect(202)["run_id"].as_str().expect("run_id").to_string()
    }

    /// Waits until the run is in a final status; answers its record.
    pub async fn wait_run(&self, run: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let a = self.get(&format!("/v1/runs/{run}")).await;
            let rec = a.expect(200).clone();
            if matches!(rec["status"].as_str(), Some("succeeded" | "failed" | "cancelled")) {
                return rec;
            }
            assert!(Instant::now() < deadline, "run {run} did not finish within 30 s: {rec}");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every run id of a pipeline, newest first (following `next`).
    pub async fn run_ids(&self, pipeline: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let mut cursor = String::new();
        loop {
            let a = self.get(&format!("/v1/runs?pipeline={pipeline}&limit=50{cursor}")).await;
            let page = a.expect(200).clone();
            out.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["next"].as_str() {
                Some(n) => cursor = format!("&cursor={n}"),
                None => return out,
            }
        }
    }
}

pub fn now_s() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// Runs each named test once per store: `mod NAME { embedded, redis }`, both calling `NAME(backing)`.
#[macro_export]
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn embedded() {
                    super::$name($crate::harness::Backing::new($crate::harness::Backend::Embedded)).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    super::$name($crate::harness::Backing::new($crate::harness::Backend::Redis)).await
                }
            }
        )*
    };
}

/// A pipeline with a manual trigger whose one step transforms the body.
pub fn echo_pipeline(name: &str) -> String {
    format!(
        "version: 1\nname: {name}\ntriggers:\n  - manual: {{}}\nsteps:\n  - id: echo\n    uses: transform\n    with:\n      output:\n        got: \"{{{{ trigger.body }}}}\"\n"
    )
}

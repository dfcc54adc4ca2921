//! The runtime suite's harness: a real `redis-server` per test on a free port, an embedded store in a fresh
//! folder, an executor with its apalis workers over either, and a scripted HTTP peer on 127.0.0.1.

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use sluice_connectors::egress::Egress;
use sluice_runtime::{executor, Executor, RedisStore, SqliteStore, StaticSecrets, Store};
use std::collections::{HashMap, VecDeque};
use std::io::{Read as _, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

pub const TENANT: &str = "acme";

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A private `redis-server` on a free port, stopped on drop. Never skipped: the binary must be installed
/// (`.ci/run` installs it when missing).
pub struct RedisServer {
    child: Child,
    pub port: u16,
    pub url: String,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed: the runtime tests need it (`apt-get install redis-server`, or run .ci/run)");
        let server = RedisServer { child, port, url: format!("redis://127.0.0.1:{port}/") };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if server.ping() {
                return server;
            }
            assert!(Instant::now() < deadline, "redis-server on port {port} did not answer PING within 10 s");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn ping(&self) -> bool {
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else { return false };
        let mut buf = [0u8; 7];
        s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
    }

    /// A plain connection for inspecting the server (INFO, CLIENT KILL).
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url.as_str()).expect("url").get_multiplexed_async_connection().await.expect("connect")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh folder under the system's temporary folder, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("sluice-test-{tag}-{}", ulid::Ulid::new()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Redis,
}

/// How a test wants its executor.
pub struct Opts {
    pub concurrency: usize,
    pub lease: Duration,
    pub secrets: Vec<(&'static str, &'static str)>,
    pub egress: Egress,
    /// How long finished runs are kept (the stores' default when `None`).
    pub retention: Option<Duration>,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            concurrency: 4,
            lease: Duration::from_secs(30),
            secrets: Vec::new(),
            egress: Egress::AllowPrivate,
            retention: None,
        }
    }
}

/// One store, one executor and its workers.
pub struct Env {
    pub backend: Backend,
    pub ex: Arc<Executor>,
    pub store: Arc<dyn Store>,
    stop: watch::Sender<bool>,
    workers: Option<tokio::task::JoinHandle<()>>,
    pub redis: Option<RedisServer>,
    _dir: TempDir,
}

impl Env {
    pub async fn new(backend: Backend) -> Env {
        Env::with(backend, Opts::default()).await
    }

    pub async fn with(backend: Backend, opts: Opts) -> Env {
        let dir = TempDir::new("rt");
        let (store, redis): (Arc<dyn Store>, _) = match backend {
            Backend::Embedded => {
                let s = SqliteStore::open(&dir.0).expect("open the embedded store");
                (
                    Arc::new(match opts.retention {
                        Some(r) => s.with_retention(r),
                        None => s,
                    }),
                    None,
                )
            }
            Backend::Redis => {
                let server = RedisServer::start();
                let s = RedisStore::connect(&server.url).await.expect("connect to redis");
                (
                    Arc::new(match opts.retention {
                        Some(r) => s.with_retention(r),
                        None => s,
                    }),
                    Some(server),
                )
            }
        };
        let secrets: HashMap<String, String> =
            opts.secrets.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let config = executor::Config { lease: opts.lease, egress: opts.egress };
        let ex = Arc::new(
            Executor::new(
                store.clone(),
                sluice_connectors::connectors(),
                Arc::new(StaticSecrets::new(secrets)),
                Arc::new(executor::NoOtherPipelines),
                config,
            )
            .expect("executor"),
        );
        let (stop, rx) = watch::channel(false);
        let workers = Some(tokio::spawn(sluice_runtime::worker::run_workers(ex.clone(), opts.concurrency, rx)));
        Env { backend, ex, store, stop, workers, redis, _dir: dir }
    }

    /// Compiles `yaml` (its `name` must be `t`) or panics with the diagnostics.
    pub fn plan(yaml: &str) -> sluice_engine::Plan {
        let v = sluice_engine::Validator::new(sluice_connectors::registry());
        match sluice_engine::compile(&v, "t.yaml", yaml) {
            Ok((plan, _)) => plan,
            Err(d) => panic!("the test pipeline is invalid: {d:#?}"),
        }
    }

    pub async fn start(&self, yaml: &str, body: Value) -> String {
        let trigger = json!({ "kind": "manual", "body": body, "headers": {}, "query": {}, "received_at": "2026-12-03T00:00:00.000Z" });
        self.ex.start_run(TENANT, &Env::plan(yaml), 1, trigger).await.expect("start the run")
    }

    /// Waits until the run is over (its `on_failure` steps included) and answers its record.
    pub async fn wait(&self, run: &str) -> Value {
        self.wait_for(run, Duration::from_secs(30)).await
    }

    pub async fn wait_for(&self, run: &str, max: Duration) -> Value {
        let deadline = Instant::now() + max;
        loop {
            if self.ex.is_finished(TENANT, run).await.expect("run state") {
                return self.ex.record(TENANT, run).await.expect("record");
            }
            if Instant::now() > deadline {
                let rec = self.ex.record(TENANT, run).await.expect("record");
                panic!("run {run} did not finish within {max:?} on {:?}: {rec:#}", self.backend);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub async fn run(&self, yaml: &str, body: Value) -> Value {
        let id = self.start(yaml, body).await;
        self.wait(&id).await
    }

    /// Stops the workers and waits for them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(w) = self.workers.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), w).await;
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// One scripted answer of the peer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO }
    }
    pub fn json(status: u16, body: Value) -> Reply {
        Reply {
            body: body.to_string(),
            headers: vec![("content-type".into(), "application/json".into())],
            ..Reply::status(status)
        }
    }
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    pub fn after(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
}

/// A request the peer received.
#[derive(Clone, Debug)]
pub struct Hit {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Hit {
    pub fn header(&self, k: &str) -> &str {
        self.headers.get(k).map_or("", String::as_str)
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct PeerState {
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    hits: Mutex<Vec<Hit>>,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
}

/// A real HTTP server on 127.0.0.1: answers scripted replies per path (then `200` echoing the request's JSON
/// body as `{"path", "echo"}`), and records every request.
#[derive(Clone)]
pub struct Peer {
    pub url: String,
    state: Arc<PeerState>,
}

impl Peer {
    pub async fn start() -> Peer {
        let state = Arc::new(PeerState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the peer");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let st = state.clone();
        let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
            let st = st.clone();
            async move { answer(st, method, uri, headers, body).await }
        });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Peer { url, state }
    }

    /// Queues replies for `path` (answered in order, then the default echo).
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().expect("lock").entry(path.to_string()).or_default().extend(replies);
    }

    pub fn hits(&self, path: &str) -> Vec<Hit> {
        self.state.hits.lock().expect("lock").iter().filter(|h| h.path == path).cloned().collect()
    }

    pub fn all_hits(&self) -> Vec<Hit> {
        self.state.hits.lock().expect("lock").clone()
    }

    /// The most requests that were being answered at once.
    pub fn max_inflight(&self) -> usize {
        self.state.max_inflight.load(Ordering::SeqCst)
    }
}

async fn answer(st: Arc<PeerState>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_string();
    let hit = Hit {
        method: method.to_string(),
        path: path.clone(),
        headers: headers.iter().map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string())).collect(),
        body: body.to_vec(),
        at: Instant::now(),
    };
    let echo = hit.json();
    st.hits.lock().expect("lock").push(hit);
    let now = st.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_inflight.fetch_max(now, Ordering::SeqCst);
    let reply = st.script.lock().expect("lock").get_mut(&path).and_then(VecDeque::pop_front);
    let reply = reply.unwrap_or_else(|| Reply::json(200, json!({ "path": path, "echo": echo })));
    tokio::time::sleep(reply.delay).await;
    st.inflight.fetch_sub(1, Ordering::SeqCst);
    let mut resp =
        (StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), reply.body).into_response();
    for (k, v) in &reply.headers {
        if let (Ok(k), Ok(v)) = (axum::http::HeaderName::from_bytes(k.as_bytes()), axum::http::HeaderValue::from_str(v))
        {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// Runs each named test once per store: `mod NAME { embedded, redis }`, both calling `NAME(env)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn embedded() {
                    super::$name($crate::harness::Env::new($crate::harness::Backend::Embedded).await).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn redis() {
                    super::$name($crate::harness::Env::new($crate::harness::Backend::Redis).await).await
                }
            }
        )*
    };
}

/// Signs `body` with the official `standardwebhooks` library: answers (webhook-id, timestamp, signature).
pub fn python_sign(secret: &str, id: &str, timestamp: u64, body: &[u8]) -> String {
    let script = "import sys, datetime\nfrom standardwebhooks.webhooks import Webhook\n\
        body = sys.stdin.buffer.read()\n\
        ts = datetime.datetime.fromtimestamp(int(sys.argv[3]), tz=datetime.timezone.utc)\n\
        print(Webhook(sys.argv[1]).sign(sys.argv[2], ts, body))\n";
    let mut child = Command::new("python3")
        .args(["-c", script, secret, id, &timestamp.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with standardwebhooks");
    child.stdin.take().expect("stdin").write_all(body).expect("write");
    let out = child.wait_with_output().expect("python3 ran");
    assert!(out.status.success(), "signing failed");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

//! `sluice serve`: the API, inbound webhooks, the scheduler and workers in one process. The embedded store
//! in `--data-dir` by default; `--redis` shares one Redis with any number of servers and `sluice worker`s.

use crate::worker::parse_lease;
use anyhow::Context as _;
use clap::Args;
use sluice_connectors::egress::Egress;
use sluice_engine::Validator;
use sluice_runtime::catalog::{Catalog, Limits};
use sluice_runtime::crypto::MasterKey;
use sluice_runtime::tenancy::{CatalogEvents, StoreSecrets};
use sluice_runtime::{executor, Executor, Metrics, RedisStore, SqliteStore, Store};
use sluice_server::gitops::FolderFile;
use sluice_server::{AppState, Services};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: String,
    /// Folder of the embedded store (created if missing); ignored with --redis.
    #[arg(long, default_value = "sluice-data")]
    data_dir: PathBuf,
    /// A shared Redis instead of the embedded store, e.g. `redis://10.0.0.5:6379/0`.
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis: Option<String>,
    /// A git-ops folder (`<tenant>/<name>.yaml`) loaded at start and reloaded when it changes.
    #[arg(long)]
    pipelines: Option<PathBuf>,
    /// Step slots in this process (0: API, webhooks and scheduler only; workers run elsewhere).
    #[arg(long, default_value_t = 8)]
    workers: usize,
    /// How long a step stays leased without a heartbeat (at most 30s).
    #[arg(long, default_value = "30s", value_parser = parse_lease)]
    lease: Duration,
    /// How long finished runs are kept, e.g. `7d`, `12h`.
    #[arg(long, default_value = "7d", value_parser = parse_retention)]
    retention: Duration,
    /// Allow outbound requests to loopback and private addresses (local development and tests).
    #[arg(long)]
    allow_private_network: bool,
    /// This server's address as users' browsers reach it, for OAuth2 redirects
    /// (`<public-url>/oauth/callback`); `http://<listen>` when not given.
    #[arg(long)]
    public_url: Option<String>,
    /// Default request rate of tenants created without limits (requests a second).
    #[arg(long, default_value_t = 50.0)]
    default_rps: f64,
    /// Default burst of tenants created without limits.
    #[arg(long, default_value_t = 100)]
    default_burst: u32,
    /// Default runs in flight of tenants created without limits.
    #[arg(long, default_value_t = 500)]
    default_max_runs: u32,
}

pub(crate) fn parse_retention(s: &str) -> Result<Duration, String> {
    let d = sluice_engine::model::Duration::parse(s).ok_or_else(|| format!("`{s}` is not a duration like `7d`"))?;
    let d = Duration::from_millis(d.as_millis());
    if d < Duration::from_secs(60) {
        return Err(format!("`{s}`: keep finished runs at least 1m"));
    }
    Ok(d)
}

/// The master key: `SLUICE_MASTER_KEY`, or on the embedded store a key generated once into the data folder.
pub(crate) fn master_key(data_dir: Option<&Path>) -> anyhow::Result<MasterKey> {
    if let Ok(text) = std::env::var("SLUICE_MASTER_KEY") {
        return MasterKey::from_base64(&text).map_err(anyhow::Error::msg);
    }
    let Some(dir) = data_dir else {
        anyhow::bail!(
            "SLUICE_MASTER_KEY is not set: with Redis every server and worker must share one key (base64 of 32 \
             random bytes, e.g. `openssl rand -base64 32`)"
        );
    };
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join("master.key");
    if let Ok(text) = std::fs::read_to_string(&path) {
        return MasterKey::from_base64(&text).map_err(anyhow::Error::msg);
    }
    let text = MasterKey::generate();
    write_private(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    tracing::warn!(
        "SLUICE_MASTER_KEY is not set: generated one into {}; secrets are encrypted with it. Set SLUICE_MASTER_KEY \
         in production and keep it safe",
        path.display()
    );
    MasterKey::from_base64(&text).map_err(anyhow::Error::msg)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(text.as_bytes())
}

/// The `--pipelines` folder's files, and a fingerprint that changes when any of them does.
fn read_folder(dir: &Path) -> anyhow::Result<(Vec<FolderFile>, u64)> {
    use std::hash::{Hash as _, Hasher as _};
    let mut files = Vec::new();
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let mut tenants: Vec<_> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the pipelines folder {}", dir.display()))?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()) && !e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    tenants.sort_by_key(|e| e.file_name());
    for t in tenants {
        let tenant = t.file_name().to_string_lossy().to_string();
        let mut entries: Vec<_> = std::fs::read_dir(t.path())?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let ext = path.extension().and_then(|x| x.to_str()).unwrap_or("");
            let format = match ext {
                "yaml" | "yml" => "yaml",
                "json" => "json",
                _ => continue,
            };
            let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_string) else { continue };
            let shown = path.display().to_string();
            let (text, unreadable) = match crate::read_one(&path)? {
                crate::Source::Text(_, text) => (text, None),
                crate::Source::Unreadable(d) => (String::new(), Some(d.message)),
            };
            shown.hash(&mut h);
            text.hash(&mut h);
            unreadable.hash(&mut h);
            let format = format.to_string();
            files.push(FolderFile { tenant: tenant.clone(), name, format, text, shown, unreadable });
        }
    }
    Ok((files, h.finish()))
}

/// The server's state and its executor over a store (shared with `sluice bench --workload webhook`).
#[allow(clippy::too_many_arguments)]
pub(crate) fn services(
    store: Arc<dyn Store>,
    catalog: Arc<dyn Catalog>,
    key: MasterKey,
    validator: Validator,
    config: executor::Config,
    default_limits: Limits,
    admin_token: Option<String>,
    public_url: String,
) -> anyhow::Result<(sluice_server::Shared, Arc<Executor>)> {
    let metrics = Arc::new(Metrics::new());
    let secrets = Arc::new(StoreSecrets::new(catalog.clone(), key.clone()));
    let events = CatalogEvents::new(catalog.clone());
    let egress = config.egress;
    let connections = oauth_connections(catalog.clone(), key.clone(), egress, &events)?;
    let ex = Arc::new(
        Executor::new(store.clone(), sluice_connectors::connectors(), secrets.clone(), events.clone(), config)
            .map_err(anyhow::Error::msg)?
            .with_metrics(metrics.clone())
            .with_tokens(connections.clone()),
    );
    events.bind(&ex);
    let state = AppState::new(Services {
        store,
        catalog,
        executor: ex.clone(),
        validator: Arc::new(validator),
        master_key: key,
        admin_token,
        secrets,
        metrics,
        default_limits,
        metrics_token: std::env::var("SLUICE_METRICS_TOKEN").ok().filter(|t| !t.is_empty()),
        connections: Some(connections),
        egress,
        public_url,
    });
    Ok((state, ex))
}

/// The OAuth2 connection manager: token requests go out through the egress guard (no redirects followed),
/// and `connection.needs_authorization` goes to the tenant's pipelines.
pub(crate) fn oauth_connections(
    catalog: Arc<dyn Catalog>,
    key: MasterKey,
    egress: Egress,
    events: &Arc<CatalogEvents>,
) -> anyhow::Result<Arc<sluice_runtime::oauth::Connections>> {
    let http = sluice_connectors::egress::client(egress, false).map_err(anyhow::Error::msg)?;
    let c = sluice_runtime::oauth::Connections::new(catalog, key, http, egress);
    let weak: std::sync::Weak<dyn sluice_runtime::Events> = Arc::downgrade(events) as _;
    c.bind_events(weak);
    Ok(c)
}

pub fn run(validator: Validator, args: ServeArgs) -> anyhow::Result<ExitCode> {
    crate::init_logs("info,sluice_connectors=info");
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(serve(validator, args))
}

async fn serve(validator: Validator, args: ServeArgs) -> anyhow::Result<ExitCode> {
    if !(0.1..=100_000.0).contains(&args.default_rps) {
        anyhow::bail!("--default-rps must be from 0.1 to 100000");
    }
    if !(1..=1_000_000).contains(&args.default_burst) || !(1..=1_000_000).contains(&args.default_max_runs) {
        anyhow::bail!("--default-burst and --default-max-runs must be from 1 to 1000000");
    }
    let admin_token = std::env::var("SLUICE_ADMIN_TOKEN").ok().filter(|t| !t.trim().is_empty());
    let (store, catalog, key): (Arc<dyn Store>, Arc<dyn Catalog>, MasterKey) = match &args.redis {
        Some(url) => {
            let key = master_key(None)?;
            let s = Arc::new(
                RedisStore::connect(url)
                    .await
                    .with_context(|| format!("cannot connect to {url}"))?
                    .with_retention(args.retention),
            );
            (s.clone(), s, key)
        }
        None => {
            let key = master_key(Some(&args.data_dir))?;
            let s = Arc::new(
                SqliteStore::open(&args.data_dir)
                    .with_context(|| format!("cannot open the store in {}", args.data_dir.display()))?
                    .with_retention(args.retention),
            );
            (s.clone(), s, key)
        }
    };
    let limits = Limits {
        requests_per_second: args.default_rps,
        burst: args.default_burst,
        max_runs_in_flight: args.default_max_runs,
    };
    let config = executor::Config {
        lease: args.lease,
        egress: if args.allow_private_network { Egress::AllowPrivate } else { Egress::PublicOnly },
    };
    let public_url = args.public_url.clone().unwrap_or_else(|| format!("http://{}", args.listen));
    let (state, ex) =
        services(store.clone(), catalog, key, validator, config, limits, admin_token.clone(), public_url)?;
    if admin_token.is_none() {
        tracing::warn!("SLUICE_ADMIN_TOKEN is not set: the admin API (tenants and keys) is off");
    }
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(dir) = args.pipelines.clone() {
        let (files, fingerprint) = read_folder(&dir)?;
        let applied = sluice_server::gitops::apply(&state, &files).await;
        // Applied again on the next look when the store failed part of it.
        let mut seen = if applied.failed == 0 { fingerprint } else { fingerprint.wrapping_add(1) };
        tracing::info!(folder = %dir.display(), stored = applied.stored, unchanged = applied.unchanged, invalid = applied.invalid, deleted = applied.deleted, "pipelines folder loaded");
        let (state, mut stop) = (state.clone(), stop_rx.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => return,
                }
                let read = tokio::task::spawn_blocking({
                    let dir = dir.clone();
                    move || read_folder(&dir)
                })
                .await;
                match read {
                    Ok(Ok((files, fp))) if fp != seen => {
                        let a = sluice_server::gitops::apply(&state, &files).await;
                        seen = if a.failed == 0 { fp } else { fp.wrapping_add(1) };
                        tracing::info!(
                            stored = a.stored,
                            invalid = a.invalid,
                            deleted = a.deleted,
                            "pipelines folder changed"
                        );
                    }
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::warn!("cannot read the pipelines folder: {e:#}"),
                    Err(e) => tracing::warn!("cannot read the pipelines folder: {e}"),
                }
            }
        }));
    }
    tasks.push(tokio::spawn(sluice_server::cache::poll(state.clone(), stop_rx.clone())));
    tasks.push(tokio::spawn(sluice_server::scheduler::run(state.clone(), stop_rx.clone())));
    if args.workers == 0 && args.redis.is_none() {
        tracing::warn!("--workers 0 on the embedded store: runs are stored but nothing here runs them (`sluice worker` needs Redis)");
    }
    let workers = (args.workers > 0)
        .then(|| tokio::spawn(sluice_runtime::worker::run_workers(ex.clone(), args.workers, stop_rx.clone())));
    let listener = tokio::net::TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or(args.listen.clone());
    tracing::info!(listen = %addr, store = store.name(), workers = args.workers, "sluice serve: listening on http://{addr}");
    let (http_stop_tx, http_stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(sluice_server::serve(listener, state, async move {
        let _ = http_stop_rx.await;
    }));
    crate::shutdown_signal().await;
    tracing::info!("stopping: no new requests or steps; finishing what is in flight");
    let _ = http_stop_tx.send(());
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
    if let Some(w) = workers {
        // Steps in flight finish (or hand back their lease, so another worker takes them up).
        let _ = tokio::time::timeout(Duration::from_secs(30), w).await;
    }
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    tracing::info!("stopped");
    Ok(ExitCode::SUCCESS)
}

//! `sluice worker`: step workers only, on a shared Redis, for scale-out. Any number of them, on any number of
//! machines, share the work of every `sluice serve` that uses the same Redis.

use anyhow::Context as _;
use clap::Args;
use sluice_connectors::egress::Egress;
use sluice_runtime::tenancy::{CatalogEvents, StoreSecrets};
use sluice_runtime::{executor, Executor, RedisStore};
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Args)]
pub struct WorkerArgs {
    /// The shared Redis, e.g. `redis://10.0.0.5:6379/0` (or set SLUICE_REDIS_URL).
    #[arg(long, env = "SLUICE_REDIS_URL")]
    redis: String,
    /// Step slots running at once in this process.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// How long a step stays leased to this worker without a heartbeat; after that another worker runs it
    /// (a crashed worker's steps wait at most this long). At most 30s.
    #[arg(long, default_value = "30s", value_parser = parse_lease)]
    lease: std::time::Duration,
    /// Allow outbound requests to loopback and private addresses (local development and tests).
    #[arg(long)]
    allow_private_network: bool,
    /// How long finished runs are kept (the same as the servers' `--retention`), e.g. `7d`.
    #[arg(long, default_value = "7d", value_parser = crate::serve::parse_retention)]
    retention: std::time::Duration,
    /// Serve this worker's Prometheus metrics (`GET /metrics`) on this address, e.g. `127.0.0.1:9464`.
    #[arg(long)]
    metrics_listen: Option<String>,
}

pub(crate) fn parse_lease(s: &str) -> Result<std::time::Duration, String> {
    let d = sluice_engine::model::Duration::parse(s).ok_or_else(|| format!("`{s}` is not a duration like `30s`"))?;
    let d = std::time::Duration::from_millis(d.as_millis());
    if d < std::time::Duration::from_millis(500) || d > std::time::Duration::from_secs(30) {
        return Err(format!("`{s}`: the lease must be between 500ms and 30s"));
    }
    Ok(d)
}

pub fn run(args: WorkerArgs) -> anyhow::Result<ExitCode> {
    crate::init_logs("info");
    let rt =
        tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the async runtime")?;
    rt.block_on(async move {
        let store = Arc::new(
            RedisStore::connect(&args.redis)
                .await
                .with_context(|| format!("cannot connect to {}", args.redis))?
                .with_retention(args.retention),
        );
        let config = executor::Config {
            lease: args.lease,
            egress: if args.allow_private_network { Egress::AllowPrivate } else { Egress::PublicOnly },
        };
        // Tenants' secrets and event routing live in the shared store, as for `sluice serve`.
        let key = crate::serve::master_key(None)?;
        let secrets = Arc::new(StoreSecrets::new(store.clone(), key.clone()));
        let events = CatalogEvents::new(store.clone());
        let connections = crate::serve::oauth_connections(store.clone(), key.clone(), config.egress, &events)?;
        let metrics = Arc::new(sluice_runtime::Metrics::new());
        let ex = Arc::new(
            Executor::new(store, sluice_connectors::connectors(), secrets, events.clone(), config)
                .map_err(anyhow::Error::msg)?
                .with_metrics(metrics.clone())
                .with_tokens(connections),
        );
        events.bind(&ex);
        if let Some(addr) = &args.metrics_listen {
            let listener =
                tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
            let app = axum::Router::new().route(
                "/metrics",
                axum::routing::get(move || {
                    let metrics = metrics.clone();
                    async move { ([("content-type", "text/plain; version=0.0.4")], metrics.render(&[])) }
                }),
            );
            tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            });
        }
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tracing::info!(concurrency = args.concurrency, lease_ms = args.lease.as_millis() as u64, "worker started");
        let workers = tokio::spawn(sluice_runtime::worker::run_workers(ex, args.concurrency, stop_rx));
        crate::shutdown_signal().await;
        tracing::info!("stopping: finishing the steps in flight");
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), workers).await;
        Ok(ExitCode::SUCCESS)
    })
}

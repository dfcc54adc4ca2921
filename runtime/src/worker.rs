//! Workers: apalis workers whose backend claims step tasks from a [`Store`] under leases, and whose handler is
//! the [`Executor`]. A store error never stops a worker: claims are retried with backoff and the worker is
//! supervised and restarted under a new, unique name.

use crate::executor::Executor;
use crate::model::Claimed;
use crate::store::{Store, StoreError};
use apalis::layers::WorkerBuilderExt;
use apalis_core::backend::{Backend, BackendConfig};
use apalis_core::task::Task;
use apalis_core::worker::builder::WorkerBuilder;
use apalis_core::worker::context::WorkerContext;
use futures::stream::{BoxStream, StreamExt};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

/// A unique worker identity per process start (and per restart): process id and a ULID.
pub fn worker_name(prefix: &str) -> String {
    format!("{prefix}-{}-{}", std::process::id(), ulid::Ulid::new())
}

/// The apalis backend: a stream of claimed tasks. It claims only when apalis asks for a task, so a worker
/// never holds more tasks than it has free slots.
pub struct ClaimBackend {
    stream: BoxStream<'static, Task<Claimed>>,
}

impl ClaimBackend {
    pub fn new(store: Arc<dyn Store>, worker: String, lease: Duration, stop: watch::Receiver<bool>) -> ClaimBackend {
        let lease_ms = lease.as_millis() as u64;
        let stream = futures::stream::unfold((store, worker, stop, 0u32), move |(store, worker, mut stop, mut failures)| async move {
            loop {
                if *stop.borrow() {
                    return None;
                }
                // Each claim holds its lease under its own token, so slots of one worker never pass for each
                // other (a stalled slot cannot commit over a sibling that took its step).
                let holder = format!("{worker}/{}", ulid::Ulid::new());
                match store.claim(&holder, lease_ms).await {
                    Ok(Some(c)) => return Some((Task::new(c), (store, worker, stop, 0))),
                    Ok(None) => {
                        tokio::select! {
                            () = store.wait_for_work(Duration::from_millis(500)) => {}
                            _ = stop.changed() => {}
                        }
                    }
                    Err(e) => {
                        failures = failures.saturating_add(1);
                        let backoff = Duration::from_millis((50u64 << failures.min(6)).min(2_000));
                        tracing::warn!(worker = %worker, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot claim a task; retrying");
                        tokio::time::sleep(backoff).await;
                    }
                }
            }
        })
        .boxed();
        ClaimBackend { stream }
    }
}

impl Backend for ClaimBackend {
    type Task = Task<Claimed>;
    type Error = StoreError;

    fn poll_ready(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _worker: &WorkerContext,
    ) -> Poll<Option<Result<Self::Task, Self::Error>>> {
        self.stream.poll_next_unpin(cx).map(|t| t.map(Ok))
    }

    fn poll_close(&mut self, _cx: &mut Context<'_>, _worker: &WorkerContext) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

impl BackendConfig for ClaimBackend {
    type Args = Claimed;
    type Id = apalis_core::task::task_id::RandomId;
    type Kind = apalis_core::backend::finalize::Ephemeral;
    type Config = ();
    type Layer = tower_layer::Identity;

    fn config(&self) -> &Self::Config {
        &()
    }

    fn middleware(&mut self, _worker: &mut WorkerContext) -> Self::Layer {
        tower_layer::Identity::new()
    }
}

/// Step slots per apalis worker: each worker claims on its own, so several claim at once.
const SLOTS_PER_WORKER: usize = 8;

/// Runs `concurrency` step slots on apalis workers until `stop` turns true, restarting any worker after an
/// error. The slots are split over several workers of at most 8 slots, so claims run in parallel too.
pub async fn run_workers(executor: Arc<Executor>, concurrency: usize, stop: watch::Receiver<bool>) {
    let concurrency = concurrency.max(1);
    let workers = concurrency.div_ceil(SLOTS_PER_WORKER);
    let mut handles = vec![tokio::spawn(housekeeping(executor.clone(), stop.clone()))];
    for i in 0..workers {
        let slots = concurrency / workers + usize::from(i < concurrency % workers);
        handles.push(tokio::spawn(supervise(executor.clone(), slots, stop.clone())));
    }
    for h in handles {
        let _ = h.await;
    }
}

/// Every 30 seconds: deletes finished runs past their retention and puts back in the rotation any tenant
/// with work that a crash left out of it.
async fn housekeeping(executor: Arc<Executor>, mut stop: watch::Receiver<bool>) {
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => {}
        }
        if *stop.borrow() {
            return;
        }
        match executor.store().housekeeping().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(runs = n, "deleted finished runs past their retention"),
            Err(e) => tracing::warn!(error = %e, "housekeeping failed; trying again later"),
        }
        wait = Duration::from_secs(30);
    }
}

/// One apalis worker of `concurrency` slots, restarted under a new name after any error.
async fn supervise(executor: Arc<Executor>, concurrency: usize, stop: watch::Receiver<bool>) {
    let mut restarts = 0u32;
    loop {
        if *stop.borrow() {
            return;
        }
        let name = worker_name("sluice");
        let backend = ClaimBackend::new(executor.store().clone(), name.clone(), executor.lease(), stop.clone());
        let ex = executor.clone();
        let handler = move |claimed: Claimed| {
            let ex = ex.clone();
            // Each step runs on its own tokio task so slots use every core; apalis's concurrency limit
            // still bounds how many are in flight.
            let step = tokio::spawn(async move {
                if let Err(e) = ex.handle(&claimed).await {
                    // The task stays leased; it runs again when the lease ends.
                    tracing::warn!(run = %claimed.task.run, step = %claimed.task.step, error = %e, "step could not be recorded; it will run again");
                }
            });
            async move {
                if let Err(e) = step.await {
                    tracing::error!(error = %e, "a step task panicked; its lease will expire and it will run again");
                }
                Ok::<(), std::io::Error>(())
            }
        };
        let worker = WorkerBuilder::new(name.as_str()).backend(backend).concurrency(concurrency.max(1)).build(handler);
        let mut stop_signal = stop.clone();
        let shutdown = async move {
            while !*stop_signal.borrow() {
                if stop_signal.changed().await.is_err() {
                    break;
                }
            }
            Ok::<(), std::io::Error>(())
        };
        match worker.run_until(shutdown).await {
            Ok(()) => return,
            Err(e) => {
                restarts += 1;
                let backoff = Duration::from_millis((100u64 << restarts.min(5)).min(5_000));
                tracing::warn!(worker = %name, error = %e, "worker stopped; restarting under a new name");
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

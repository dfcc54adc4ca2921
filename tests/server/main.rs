//! The server suite: the real `sluice serve` binary over HTTP, on the embedded store and on a real
//! `redis-server` started per test; signed webhooks from the official `standardwebhooks` library; several
//! servers on one Redis; restarts; every route walked with another tenant's key and with bad input.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)] // tests set up files and processes

/// The runtime suite's harness (redis-server, temporary folders, scripted HTTP peers), shared.
#[allow(dead_code)]
#[path = "../runtime/harness.rs"]
pub mod runtime_harness;

pub mod harness;

mod api;
mod hooks;
mod lifecycle;
mod limits;
mod oauth;
mod schedules;
mod sync;

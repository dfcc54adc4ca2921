//! The runtime suite: the same tests on the embedded store and on a real Redis, with real HTTP peers; and
//! fault tests with real processes (a worker killed mid-step, Redis connections cut under a worker).
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)] // tests set up files and processes

pub mod harness;

mod cli;
mod failure;
mod faults;
mod flow;
mod limits;
mod replay;
mod retries;
mod webhooks;

//! Schedules: each tick starts exactly one run, however many servers share the store.

use crate::harness::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

const EVERY_SECOND: &str = "version: 1\nname: tick\ntriggers:\n  - schedule: { cron: \"* * * * * *\", timezone: Europe/Berlin, input: { from: schedule } }\nsteps:\n  - id: a\n    uses: transform\n    with: { output: \"{{ trigger.body.from }}\" }\n";

/// Lets the schedule run for a while, then checks that every tick started one run and no tick two.
async fn ticks_of(api: &Api, servers: usize) {
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let runs = api.run_ids("tick").await;
    let ticks: Vec<String> = {
        let mut out = Vec::new();
        for r in &runs {
            let rec = api.get(&format!("/v1/runs/{}", r["id"].as_str().unwrap())).await;
            let rec = rec.expect(200);
            assert_eq!(rec["trigger"]["kind"], "schedule");
            assert_eq!(rec["trigger"]["body"]["from"], "schedule");
            out.push(rec["trigger"]["scheduled_at"].as_str().unwrap().to_string());
        }
        out
    };
    let unique: BTreeSet<&String> = ticks.iter().collect();
    assert_eq!(unique.len(), ticks.len(), "a tick started more than one run with {servers} servers: {ticks:?}");
    assert!(ticks.len() >= 3, "too few ticks ran in 4.5 s: {ticks:?}");
    for t in &ticks {
        assert!(t.ends_with(".000Z"), "ticks fall on whole seconds: {t}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_redis_start_one_run_per_tick() {
    let backing = Backing::new(Backend::Redis);
    let first = Server::start(&backing).await;
    let second = Server::start(&backing).await;
    let api = first.api(&first.admin().tenant("acme", Value::Null).await);
    api.put_yaml("tick", EVERY_SECOND).await.expect(201);
    ticks_of(&api, 2).await;
    drop(second);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_store_starts_one_run_per_tick() {
    let backing = Backing::new(Backend::Embedded);
    let server = Server::start(&backing).await;
    let api = server.api(&server.admin().tenant("acme", Value::Null).await);
    api.put_yaml("tick", EVERY_SECOND).await.expect(201);
    ticks_of(&api, 1).await;
}

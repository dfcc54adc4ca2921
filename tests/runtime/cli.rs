//! `sluice run` and `sluice bench` as users run them: exit codes, the run record, the benchmark's report.

use crate::harness::{RedisServer, TempDir};
use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice")).args(args).env("RUST_LOG", "warn").output().expect("run sluice")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

const GREET: &str = r#"
version: 1
name: greet
triggers: [ { manual: {} } ]
steps:
  - id: shape
    uses: transform
    with: { output: { hello: "{{ trigger.body.name | upper }}", token: "{{ secrets.TOKEN }}" } }
  - id: fail_on_bob
    uses: transform
    if: "trigger.body.name == 'bob'"
    with: { output: "{{ trigger.body.no_such_field }}" }
"#;

#[test]
fn run_prints_the_run_record_and_exits_by_outcome() {
    let dir = TempDir::new("cli");
    let file = dir.0.join("greet.yaml");
    std::fs::write(&file, GREET).unwrap();
    let input = dir.0.join("input.json");
    std::fs::write(&input, r#"{"name": "ada"}"#).unwrap();
    let f = file.to_str().unwrap();

    let o = sluice(&[
        "run",
        f,
        "--input",
        &format!("@{}", input.display()),
        "--secret",
        "TOKEN=t0ps3cret",
        "--format",
        "json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), String::from_utf8_lossy(&o.stderr));
    let rec: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the run record is JSON");
    assert_eq!(rec["status"], "succeeded");
    assert_eq!(rec["pipeline"], "greet");
    assert_eq!(rec["steps"]["shape"]["output"]["hello"], "ADA");
    assert_eq!(rec["steps"]["shape"]["output"]["token"], "***", "secrets are redacted in outputs");
    assert_eq!(rec["steps"]["fail_on_bob"]["status"], "skipped");
    assert_eq!(rec["steps"]["shape"]["attempts"][0]["number"], 1);

    // The secret is given again: without it `shape` could fail first (it runs beside `fail_on_bob`).
    let o = sluice(&["run", f, "--input", r#"{"name": "bob"}"#, "--secret", "TOKEN=t0ps3cret"]);
    assert_eq!(o.status.code(), Some(1), "a failed run exits 1: {}", stdout(&o));
    let out = stdout(&o);
    assert!(out.contains("failed") && out.contains("no_such_field"), "{out}");

    let bad = dir.0.join("bad.yaml");
    std::fs::write(&bad, "version: 1\nname: bad\ntriggers: [ { manual: {} } ]\nsteps:\n  - id: a\n    uses: htp\n")
        .unwrap();
    let o = sluice(&["run", bad.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "an invalid pipeline exits 2");
    assert!(String::from_utf8_lossy(&o.stderr).contains("S2010"), "{}", String::from_utf8_lossy(&o.stderr));

    let o = sluice(&["run", f, "--input", "{not json"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--input is not valid JSON"));
}

#[test]
fn bench_reports_every_field_on_both_stores() {
    let redis = RedisServer::start();
    for extra in [vec![], vec!["--redis", redis.url.as_str()]] {
        for workload in ["chain", "fanout"] {
            let mut args = vec!["bench", "--workload", workload, "--runs", "30", "--format", "json"];
            args.extend(extra.iter().copied());
            let o = sluice(&args);
            assert_eq!(o.status.code(), Some(0), "{}", String::from_utf8_lossy(&o.stderr));
            let r: serde_json::Value = serde_json::from_slice(&o.stdout).expect("JSON report");
            for key in [
                "workload",
                "runs",
                "steps_per_run",
                "elapsed_s",
                "runs_per_s",
                "steps_per_s",
                "latency_ms",
                "store_commands_per_step",
            ] {
                assert!(r.get(key).is_some(), "{key} missing in {r}");
            }
            assert_eq!(r["workload"], workload);
            assert_eq!(r["runs"], 30);
            assert_eq!(r["steps_per_run"], 10);
            assert!(r["steps_per_s"].as_f64().unwrap() > 0.0);
            assert!(r["latency_ms"]["p50"].as_f64().is_some() && r["latency_ms"]["p99"].as_f64().is_some());
            assert!(r["store_commands_per_step"].as_f64().unwrap() > 1.0, "{r}");
            assert!(r["retry_delay_error_ms"]["samples"].as_u64().unwrap() > 0, "{r}");
        }
    }
}

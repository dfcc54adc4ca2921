//! The `sluice` binary as users run it: output shapes and exit codes of SPEC section 8.

use std::process::{Command, Output};

fn sluice(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(args)
        .current_dir(crate::root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run sluice: {e}"))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn validate_exit_codes() {
    assert_eq!(sluice(&["validate", "examples", "pipelines"]).status.code(), Some(0));
    let bad = sluice(&["validate", "tests/fixtures/invalid/s2003-step-needs-itself.yaml"]);
    assert_eq!(bad.status.code(), Some(1));
    let out = stdout(&bad);
    assert!(out.contains("tests/fixtures/invalid/s2003-step-needs-itself.yaml:"), "{out}");
    assert!(out.contains(": error[S2003]: "), "{out}");
    assert_eq!(sluice(&["validate", "no/such/file.yaml"]).status.code(), Some(2));
    assert_eq!(sluice(&["validate"]).status.code(), Some(2));
    assert_eq!(sluice(&["frobnicate"]).status.code(), Some(2));
}

#[test]
fn validate_reports_every_file_in_one_pass() {
    let o = sluice(&["validate", "--format", "json", "tests/fixtures/invalid"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let items = v.as_array().cloned().unwrap_or_default();
    let files: std::collections::BTreeSet<&str> = items.iter().filter_map(|d| d["file"].as_str()).collect();
    assert!(files.len() > 30, "{files:?}");
    for d in &items {
        for key in ["file", "line", "column", "severity", "code", "message", "hint"] {
            assert!(d.get(key).is_some(), "{d} lacks {key}");
        }
        assert!(d["line"].as_u64().unwrap_or(0) >= 1);
        assert!(["error", "warning"].contains(&d["severity"].as_str().unwrap_or("")));
    }
}

#[test]
fn warnings_alone_exit_zero() {
    let o = sluice(&["validate", "tests/fixtures/invalid/w4001-unverified-webhook.yaml"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("warning[W4001]"));
}

#[test]
fn schema_prints_the_checked_in_schema() {
    let o = sluice(&["schema"]);
    assert_eq!(o.status.code(), Some(0));
    let printed: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let on_disk: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(crate::root().join("schemas/pipeline.schema.json")).unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(printed, on_disk);
}

#[test]
fn graph_formats() {
    let file = "pipelines/acme/signup-to-crm.yaml";
    let m = stdout(&sluice(&["graph", file, "--format", "mermaid"]));
    assert!(m.starts_with("flowchart TD"), "{m}");
    assert!(m.contains("s_lookup --> s_shape"), "{m}");
    let d = stdout(&sluice(&["graph", file, "--format", "dot"]));
    assert!(d.starts_with("digraph"), "{d}");
    let j: serde_json::Value =
        serde_json::from_str(&stdout(&sluice(&["graph", file, "--format", "json"]))).unwrap_or_default();
    let steps = j["steps"].as_array().cloned().unwrap_or_default();
    let shape = steps.iter().find(|s| s["id"] == "shape").cloned().unwrap_or_default();
    assert_eq!(shape["needs"], serde_json::json!(["lookup"]));
    assert!(j["steps"][0]["retry"]["max_attempts"].as_u64().is_some_and(|n| n >= 1));
    let bad = sluice(&["graph", "tests/fixtures/invalid/s2003-step-needs-itself.yaml"]);
    assert_eq!(bad.status.code(), Some(1));
}

#[test]
fn stdin_is_accepted() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "-", "--format", "json"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut s) = child.stdin.take() {
        let _ = s.write_all(b"{\"version\": 1, \"name\": \"x\", \"triggers\": [{\"manual\": {}}], \"steps\": [{\"id\": \"a\", \"uses\": \"log\", \"with\": {\"message\": \"hi\"}}]}");
    }
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
}

#[test]
fn oversized_and_binary_files() {
    let dir = std::env::temp_dir().join(format!("sluice-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let big = dir.join("big.yaml");
    std::fs::write(&big, "a".repeat(1024 * 1024 + 1)).unwrap_or_else(|e| panic!("{e}"));
    let bin = dir.join("bin.yaml");
    std::fs::write(&bin, b"version: 1\nname: \xff\xfe\n").unwrap_or_else(|e| panic!("{e}"));
    let o = sluice(&["validate", "--format", "json", big.to_str().unwrap_or(""), bin.to_str().unwrap_or("")]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    let codes: Vec<&str> =
        v.as_array().map(|a| a.iter().filter_map(|d| d["code"].as_str()).collect()).unwrap_or_default();
    assert_eq!(codes, ["S0002", "S0001"], "{v}");
    assert_eq!(v[1]["line"], 2);
    // The human rendering of S0002, snapshotted like every stored fixture (the file is made here, not stored).
    let o = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "big.yaml"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(1));
    insta::with_settings!({ prepend_module_to_snapshot => false, snapshot_path => "../snapshots" }, {
        insta::assert_snapshot!("s0002-file-over-1-mib", stdout(&o));
    });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn endless_input_is_refused_at_1_mib() {
    // `/dev/zero` has no size in its metadata: reading must stop at the limit, not at the end.
    let o = sluice(&["validate", "--format", "json", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("S0002"), "{}", stdout(&o));
    let mut child = Command::new(env!("CARGO_BIN_EXE_sluice"))
        .args(["validate", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    if let Some(mut s) = child.stdin.take() {
        use std::io::Write as _;
        // The reader stops early; a broken pipe here is expected.
        let _ = s.write_all(&vec![b'a'; 3 * 1024 * 1024]);
    }
    let o = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("error[S0002]"), "{}", stdout(&o));
}

#[test]
fn fmt_rewrites_checks_and_keeps_comments() {
    let dir = std::env::temp_dir().join(format!("sluice-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_default();
    let f = dir.join("x.yaml");
    let src = "# about x\nname: x\nversion: 1   # format\nsteps:\n  - uses: transform\n    id: a\n    with: { output: 1 }\ntriggers: [ { manual: {} } ]\n";
    std::fs::write(&f, src).unwrap_or_default();
    let path = f.display().to_string();
    let check = sluice(&["fmt", "--check", &path]);
    assert_eq!(check.status.code(), Some(1), "{}", stdout(&check));
    assert!(stdout(&check).contains("would reformat"));
    assert_eq!(std::fs::read_to_string(&f).unwrap_or_default(), src, "--check changes nothing");
    let fmt = sluice(&["fmt", &path]);
    assert_eq!(fmt.status.code(), Some(0));
    let out = std::fs::read_to_string(&f).unwrap_or_default();
    assert_eq!(out, "version: 1 # format\n# about x\nname: x\ntriggers:\n- manual: {}\nsteps:\n- id: a\n  uses: transform\n  with:\n    output: 1\n");
    assert_eq!(sluice(&["fmt", "--check", &path]).status.code(), Some(0), "formatted files pass --check");
    assert_eq!(sluice(&["validate", &path]).status.code(), Some(0));
    std::fs::write(&f, "version: [\n").unwrap_or_default();
    assert_eq!(sluice(&["fmt", &path]).status.code(), Some(1), "unparsable files are reported and left alone");
    assert_eq!(std::fs::read_to_string(&f).unwrap_or_default(), "version: [\n");
    let _ = std::fs::remove_dir_all(&dir);
}

//! Every file under tests/fixtures/invalid produces the code its name starts with, and its rendered
//! diagnostics are snapshotted; every valid fixture, example and sample pipeline validates.

use crate::{files_under, read, validator};
use sluice_engine::diag;
use std::collections::BTreeMap;

fn render_all(files: &[(String, String)]) -> String {
    let checked = validator().check_all(files);
    let sources: BTreeMap<&str, &str> = files.iter().map(|(f, s)| (f.as_str(), s.as_str())).collect();
    let mut out = String::new();
    for c in &checked {
        for d in &c.diags {
            out.push_str(&diag::render(d, sources.get(d.file.as_str()).copied().unwrap_or("")));
        }
    }
    out
}

#[test]
fn every_invalid_fixture_produces_its_code() {
    let files = files_under("tests/fixtures/invalid");
    assert!(!files.is_empty(), "no invalid fixtures");
    // Files in a sub-folder form one tenant folder and are checked together.
    let mut groups: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for f in &files {
        let (name, text) = read(f);
        let key = match f.parent().and_then(|p| p.file_name()).and_then(|n| n.to_str()) {
            Some("invalid") | None => f.file_name().and_then(|n| n.to_str()).unwrap_or("").to_string(),
            Some(folder) => folder.to_string(),
        };
        groups.entry(key).or_default().push((name, text));
    }
    let mut failures = Vec::new();
    for (key, group) in &groups {
        // Files are named `<code>-<what>` in lower case (the name inside must match the file name).
        let code = key.split('-').next().unwrap_or("").to_uppercase();
        let code = code.as_str();
        let checked = validator().check_all(group);
        let codes: Vec<&str> = checked.iter().flat_map(|c| c.diags.iter().map(|d| d.code.as_str())).collect();
        if !codes.contains(&code) {
            failures.push(format!("{key}: expected {code}, got {codes:?}"));
        }
        let snapshot_name = key.trim_end_matches(".yaml").trim_end_matches(".json").trim_end_matches(".yml");
        insta::with_settings!({ prepend_module_to_snapshot => false, snapshot_path => "../snapshots" }, {
            insta::assert_snapshot!(snapshot_name, render_all(group));
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn every_code_has_a_fixture() {
    let files = files_under("tests/fixtures/invalid");
    let names: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
    // S0002 (a file over 1 MiB) is made by `cli::oversized_and_binary_files`, not stored.
    let missing: Vec<&str> = diag::Code::ALL
        .iter()
        .map(|c| c.as_str())
        .filter(|c| *c != "S0002")
        .filter(|c| !names.iter().any(|n| n.to_lowercase().contains(&format!("/{}-", c.to_lowercase()))))
        .collect();
    assert!(missing.is_empty(), "codes without an invalid fixture: {missing:?}");
}

#[test]
fn valid_fixtures_examples_and_pipelines_validate() {
    for dir in ["tests/fixtures/valid", "examples", "pipelines"] {
        let files: Vec<(String, String)> = files_under(dir).iter().map(|f| read(f)).collect();
        assert!(!files.is_empty(), "{dir} is empty");
        for c in validator().check_all(&files) {
            let errors: Vec<String> = c
                .diags
                .iter()
                .filter(|d| d.is_error())
                .map(|d| format!("{}:{}: {}", d.file, d.span.start.line, d.message))
                .collect();
            assert!(errors.is_empty(), "{}", errors.join("\n"));
            assert!(c.pipeline.is_some(), "{} did not compile", c.file);
        }
    }
}

#[test]
fn sample_pipelines_have_no_warnings() {
    let files: Vec<(String, String)> = files_under("pipelines").iter().map(|f| read(f)).collect();
    for c in validator().check_all(&files) {
        assert!(c.diags.is_empty(), "{}: {:?}", c.file, c.diags);
    }
}

#[test]
fn every_code_is_documented() {
    let doc = std::fs::read_to_string(crate::root().join("docs/diagnostics.md")).unwrap_or_default();
    for c in diag::Code::ALL {
        let row = format!("| `{}` | {} |", c.as_str(), c.title());
        assert!(doc.contains(&row), "docs/diagnostics.md lacks the row: {row}");
    }
}

//! The rules of ARCHITECTURE.md that a test can see: module docs on every source file, and the pipeline
//! core's dependencies (no IO, no async runtime, no other workspace crate).

use crate::root;

fn rust_files(dir: &str) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn every_source_file_says_what_it_is_for() {
    for dir in ["engine/src", "connectors/src", "runtime/src", "server/src", "src"] {
        for f in rust_files(dir) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            let first = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
            assert!(first.starts_with("//!"), "{} does not start with a `//!` module doc", f.display());
        }
    }
}

#[test]
fn the_core_depends_on_nothing_that_does_io() {
    let manifest = std::fs::read_to_string(root().join("engine/Cargo.toml")).unwrap_or_default();
    let deps = manifest.split("[dependencies]").nth(1).unwrap_or("").split("\n[").next().unwrap_or("");
    for forbidden in ["tokio", "reqwest", "hyper", "redis", "sqlx", "apalis", "axum", "sluice-connectors"] {
        assert!(!deps.contains(forbidden), "engine/Cargo.toml depends on {forbidden}");
    }
    for f in rust_files("engine/src") {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for call in ["std::fs::", "std::env::", "std::net::", "SystemTime::now", "Utc::now", "std::process::"] {
            let code: String =
                text.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
            // Tests inside the core may use a clock to build fixed inputs; production code may not.
            let production = code.split("#[cfg(test)]").next().unwrap_or("");
            assert!(!production.contains(call), "{} uses {call}: the pipeline core does no IO", f.display());
        }
    }
}

#[test]
fn the_executor_and_workers_never_name_a_store() {
    // Backends are picked at the edge (the binary); the executor and the workers hold a `dyn Store`.
    for f in ["runtime/src/executor.rs", "runtime/src/worker.rs"] {
        let text = std::fs::read_to_string(root().join(f)).unwrap_or_default();
        for name in ["RedisStore", "SqliteStore", "redis::", "rusqlite"] {
            assert!(!text.contains(name), "{f} names {name}: it must reach stores only through the Store trait");
        }
    }
    for crate_dir in ["engine", "connectors"] {
        let manifest = std::fs::read_to_string(root().join(crate_dir).join("Cargo.toml")).unwrap_or_default();
        assert!(!manifest.contains("sluice-runtime"), "{crate_dir} depends on the runtime");
    }
}

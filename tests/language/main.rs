//! The pipeline language, end to end: fixtures with snapshotted diagnostics, the schema, the CLI, and
//! property tests that arbitrary input never panics or hangs the validator.
#![allow(clippy::disallowed_methods)] // the tests read fixture files and set up the environment

mod architecture;
mod cli;
mod fixtures;
mod props;
mod roundtrip;
mod schema;

use sluice_engine::Validator;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The one validator of the built-in kinds, shared by the tests.
pub fn validator() -> &'static Validator {
    static V: OnceLock<Validator> = OnceLock::new();
    V.get_or_init(|| Validator::new(sluice_connectors::registry()))
}

/// The repository root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Pipeline files under `dir`, sorted, as paths relative to the repository root.
pub fn files_under(dir: &str) -> Vec<PathBuf> {
    fn walk(p: &Path, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(p) else { return };
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                walk(&path, out);
            } else if matches!(path.extension().and_then(|x| x.to_str()), Some("yaml" | "yml" | "json")) {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join(dir), &mut out);
    out.sort();
    out.into_iter().map(|p| p.strip_prefix(root()).map(Path::to_path_buf).unwrap_or(p)).collect()
}

/// Reads a repository file as (display path, text).
pub fn read(rel: &Path) -> (String, String) {
    let text = std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{}: {e}", rel.display()));
    (rel.display().to_string().replace('\\', "/"), text)
}

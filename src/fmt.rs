//! `sluice fmt PATH... [--check]`: rewrites YAML pipeline files in their canonical form, comments kept
//! (`sluice_engine::fmt`). `--check` changes nothing and exits 1 when a file is not formatted, for CI.

use anyhow::Context as _;
use clap::Args;
use sluice_engine::diag;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Args)]
pub struct FmtArgs {
    /// Files or folders (searched for `.yaml` and `.yml` files).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Change nothing; list the files that are not formatted and exit 1 when there are any.
    #[arg(long)]
    check: bool,
}

fn yaml_files(p: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    if p.is_dir() {
        let mut entries: Vec<_> = std::fs::read_dir(p)?.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            if !e.file_name().to_string_lossy().starts_with('.') {
                yaml_files(&e.path(), out)?;
            }
        }
    } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")) {
        out.push(p.to_path_buf());
    }
    Ok(())
}

pub fn run(args: FmtArgs) -> anyhow::Result<ExitCode> {
    let mut files = Vec::new();
    for p in &args.paths {
        std::fs::metadata(p).with_context(|| format!("cannot read {}", p.display()))?;
        yaml_files(p, &mut files).with_context(|| format!("cannot read {}", p.display()))?;
    }
    let (mut unformatted, mut broken) = (0, 0);
    for f in &files {
        let src = match crate::read_one(f)? {
            crate::Source::Text(_, t) => t,
            crate::Source::Unreadable(d) => {
                eprint!("{}", diag::render(&d, ""));
                broken += 1;
                continue;
            }
        };
        match sluice_engine::fmt::format(&src) {
            Ok(out) if out == src => {}
            Ok(_) if args.check => {
                println!("would reformat {}", f.display());
                unformatted += 1;
            }
            Ok(out) => {
                std::fs::write(f, out).with_context(|| format!("cannot write {}", f.display()))?;
                println!("formatted {}", f.display());
            }
            Err(diags) => {
                for mut d in diags {
                    d.file = f.display().to_string();
                    eprint!("{}", diag::render(&d, &src));
                }
                broken += 1;
            }
        }
    }
    Ok(if unformatted + broken > 0 { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

//! The `--pipelines` folder (`<tenant>/<name>.yaml`): loaded at start and again whenever it changes (the
//! binary reads the files and hands them here). Each file is validated and stored like a PUT, with origin
//! `folder`; an invalid file is logged with its diagnostics and leaves the version before it in place; a
//! pipeline whose file went is deleted. Tenants that do not exist are created (without a key: the admin
//! makes one with `POST /v1/admin/tenants/{id}/keys`).

use crate::api::{check_name, pipelines};
use crate::Shared;
use sluice_runtime::catalog::Tenant;
use std::collections::BTreeSet;

/// One file of the folder.
#[derive(Debug, Clone)]
pub struct FolderFile {
    pub tenant: String,
    /// The file name's stem: the pipeline name.
    pub name: String,
    /// `yaml` or `json`.
    pub format: String,
    pub text: String,
    /// The path as shown in logs.
    pub shown: String,
    /// Why the file could not be read as text (too large, not UTF-8): it counts as invalid, so the version
    /// before it stays.
    pub unreadable: Option<String>,
}

/// What applying the folder did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Applied {
    pub stored: usize,
    pub unchanged: usize,
    pub invalid: usize,
    pub deleted: usize,
    /// Store errors: the folder is applied again on the next look even if it did not change.
    pub failed: usize,
}

/// Makes the folder's pipelines the store's pipelines of origin `folder`.
pub async fn apply(state: &Shared, files: &[FolderFile]) -> Applied {
    let mut out = Applied::default();
    let mut present = BTreeSet::new();
    let tenants: BTreeSet<&str> = files.iter().map(|f| f.tenant.as_str()).collect();
    for t in &tenants {
        if check_name("tenant", t, false).is_err() {
            tracing::warn!(
                folder = t,
                "skipped: a tenant folder's name must be a valid tenant id (lower-case letters, digits, `-`)"
            );
            continue;
        }
        match state.s.catalog.tenant(t).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                let record =
                    Tenant { id: t.to_string(), limits: state.s.default_limits, created_at: crate::api::now_rfc3339() };
                match state.s.catalog.create_tenant(&record).await {
                    Ok(_) => {
                        state.changed(t);
                        tracing::info!(tenant = t, "tenant created from the pipelines folder; make it an API key with POST /v1/admin/tenants/{t}/keys");
                    }
                    Err(e) => tracing::error!(tenant = t, "cannot create the tenant: {e}"),
                }
            }
            Err(e) => tracing::error!(tenant = t, "cannot read the tenant: {e}"),
        }
    }
    for f in files {
        if check_name("tenant", &f.tenant, false).is_err() {
            continue;
        }
        present.insert((f.tenant.clone(), f.name.clone()));
        // A pipeline `sluice sync` manages follows its git folder, not this one.
        if let Ok(Some(cur)) = state.s.catalog.pipeline(&f.tenant, &f.name, None).await {
            if cur.origin == "sync" {
                tracing::warn!(file = %f.shown, "skipped: this pipeline is managed by `sluice sync`");
                out.unchanged += 1;
                continue;
            }
        }
        if let Some(why) = &f.unreadable {
            out.invalid += 1;
            tracing::error!(file = %f.shown, "pipeline not loaded (the version before it stays): {why}");
            continue;
        }
        match pipelines::store(state, &f.tenant, &f.name, &f.text, &f.format, "folder").await {
            Ok(r) if r.changed => {
                out.stored += 1;
                tracing::info!(file = %f.shown, version = r.version, "pipeline loaded");
            }
            Ok(_) => out.unchanged += 1,
            Err(e) if e.status.is_server_error() => {
                out.failed += 1;
                tracing::error!(file = %f.shown, "pipeline not loaded, trying again: {}", e.message);
            }
            Err(e) => {
                out.invalid += 1;
                let details = match e.extra.as_deref() {
                    Some((_, serde_json::Value::Array(diags))) => diags
                        .iter()
                        .filter(|d| d["severity"] == "error")
                        .map(|d| {
                            format!(
                                "\n  {}:{}:{}: error[{}]: {}",
                                f.shown,
                                d["line"],
                                d["column"],
                                d["code"].as_str().unwrap_or(""),
                                d["message"].as_str().unwrap_or("")
                            )
                        })
                        .collect::<String>(),
                    _ => String::new(),
                };
                tracing::error!(file = %f.shown, "pipeline not loaded (the version before it stays): {}{details}", e.message);
            }
        }
    }
    // Pipelines that came from the folder and whose file is gone (only when the rest went through, so a
    // store that fails half-way deletes nothing).
    if out.failed > 0 {
        return out;
    }
    if let Ok(all) = state.s.catalog.tenants().await {
        for t in all {
            let Ok(list) = state.s.catalog.pipelines(&t.id).await else { continue };
            for p in list.into_iter().filter(|p| p.origin == "folder") {
                if !present.contains(&(t.id.clone(), p.name.clone())) {
                    if let Ok(true) = state.s.catalog.delete_pipeline(&t.id, &p.name).await {
                        out.deleted += 1;
                        state.changed(&t.id);
                        tracing::info!(tenant = %t.id, pipeline = %p.name, "pipeline deleted: its file left the folder");
                    }
                }
            }
        }
    }
    out
}

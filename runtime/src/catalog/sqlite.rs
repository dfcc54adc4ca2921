//! The catalog on the embedded store: tables beside the runs, in the same file.

use super::{ApiKey, Applied, BulkOp, Catalog, PipelineVersion, Put, Tenant};
use crate::store::sqlite::{err, json, parse, SqliteStore};
use crate::store::Result;
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tenants (id TEXT PRIMARY KEY, doc TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS api_keys (hash TEXT PRIMARY KEY, tenant TEXT NOT NULL, id TEXT NOT NULL, doc TEXT NOT NULL)
  WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys (tenant, id);
CREATE TABLE IF NOT EXISTS pipeline_versions (tenant TEXT NOT NULL, name TEXT NOT NULL, version INTEGER NOT NULL,
  doc TEXT NOT NULL, PRIMARY KEY (tenant, name, version)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS pipelines (tenant TEXT NOT NULL, name TEXT NOT NULL, latest INTEGER NOT NULL,
  live INTEGER NOT NULL, PRIMARY KEY (tenant, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS secrets (tenant TEXT NOT NULL, name TEXT NOT NULL, sealed TEXT NOT NULL,
  updated_at TEXT NOT NULL, PRIMARY KEY (tenant, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS hook_paths (tenant TEXT NOT NULL, path TEXT NOT NULL, name TEXT NOT NULL,
  PRIMARY KEY (tenant, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS connections (tenant TEXT NOT NULL, name TEXT NOT NULL, doc TEXT NOT NULL,
  PRIMARY KEY (tenant, name)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS authorizations (state TEXT PRIMARY KEY, doc TEXT NOT NULL, expires_ms INTEGER NOT NULL)
  WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS catalog_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
";

/// Creates the catalog's tables (called when the store opens).
pub(crate) fn init(c: &Connection) -> Result<()> {
    c.execute_batch(SCHEMA).map_err(err)
}

fn bump(tx: &rusqlite::Transaction<'_>) -> Result<()> {
    tx.execute(
        "INSERT INTO catalog_meta (key, value) VALUES ('generation', 1)
         ON CONFLICT (key) DO UPDATE SET value = value + 1",
        [],
    )
    .map_err(err)?;
    Ok(())
}

/// A new version of a pipeline inside the caller's transaction (see [`Catalog::put_pipeline`]).
fn put_in(tx: &Connection, tenant: &str, p: &PipelineVersion) -> Result<Put> {
    let paths = p.webhook_paths();
    for path in &paths {
        let owner: Option<String> = tx
            .query_row("SELECT name FROM hook_paths WHERE tenant = ?1 AND path = ?2", params![tenant, path], |r| {
                r.get(0)
            })
            .optional()
            .map_err(err)?;
        if let Some(owner) = owner.filter(|o| *o != p.name) {
            return Ok(Put::PathTaken(path.clone(), owner));
        }
    }
    let head: Option<(u32, bool)> = tx
        .query_row("SELECT latest, live FROM pipelines WHERE tenant = ?1 AND name = ?2", params![tenant, p.name], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .optional()
        .map_err(err)?;
    if let Some((latest, true)) = head {
        let doc: Option<String> = tx
            .query_row(
                "SELECT doc FROM pipeline_versions WHERE tenant = ?1 AND name = ?2 AND version = ?3",
                params![tenant, p.name, latest],
                |r| r.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(doc) = doc {
            let old: PipelineVersion = parse(&doc)?;
            if old.hash == p.hash && old.origin == p.origin {
                return Ok(Put::Unchanged(latest));
            }
        }
    }
    let version = head.map_or(1, |(latest, _)| latest + 1);
    tx.execute("DELETE FROM hook_paths WHERE tenant = ?1 AND name = ?2", params![tenant, p.name]).map_err(err)?;
    for path in &paths {
        tx.execute("INSERT INTO hook_paths (tenant, path, name) VALUES (?1, ?2, ?3)", params![tenant, path, p.name])
            .map_err(err)?;
    }
    tx.execute(
        "DELETE FROM pipeline_versions WHERE tenant = ?1 AND name = ?2 AND version <= ?3",
        params![tenant, p.name, i64::from(version) - i64::from(super::VERSIONS_KEPT)],
    )
    .map_err(err)?;
    let doc = json(&PipelineVersion { version, ..p.clone() })?;
    tx.execute(
        "INSERT INTO pipeline_versions (tenant, name, version, doc) VALUES (?1, ?2, ?3, ?4)",
        params![tenant, p.name, version, doc],
    )
    .map_err(err)?;
    tx.execute(
        "INSERT INTO pipelines (tenant, name, latest, live) VALUES (?1, ?2, ?3, 1)
         ON CONFLICT (tenant, name) DO UPDATE SET latest = ?3, live = 1",
        params![tenant, p.name, version],
    )
    .map_err(err)?;
    Ok(Put::Created(version))
}

/// Deletes a pipeline inside the caller's transaction (the head stays so numbering continues).
fn delete_in(tx: &Connection, tenant: &str, name: &str) -> Result<bool> {
    let n = tx
        .execute("UPDATE pipelines SET live = 0 WHERE tenant = ?1 AND name = ?2 AND live = 1", params![tenant, name])
        .map_err(err)?;
    tx.execute("DELETE FROM pipeline_versions WHERE tenant = ?1 AND name = ?2", params![tenant, name]).map_err(err)?;
    tx.execute("DELETE FROM hook_paths WHERE tenant = ?1 AND name = ?2", params![tenant, name]).map_err(err)?;
    Ok(n > 0)
}

/// Every table holding a tenant's data, and its tenant column.
const TENANT_TABLES: &[&str] = &[
    "api_keys",
    "pipeline_versions",
    "pipelines",
    "secrets",
    "hook_paths",
    "connections",
    "runs",
    "states",
    "terminal",
    "enqueued",
    "items_done",
    "queue",
    "served",
    "dead_letters",
    "dedup",
    "live_counts",
];

#[async_trait]
impl Catalog for SqliteStore {
    async fn create_tenant(&self, t: &Tenant) -> Result<bool> {
        let (id, doc) = (t.id.clone(), json(t)?);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let n =
                tx.execute("INSERT OR IGNORE INTO tenants (id, doc) VALUES (?1, ?2)", params![id, doc]).map_err(err)?;
            bump(&tx)?;
            tx.commit().map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let id = id.to_string();
        self.with(move |c| {
            let doc: Option<String> = c
                .prepare_cached("SELECT doc FROM tenants WHERE id = ?1")
                .and_then(|mut s| s.query_row(params![id], |r| r.get(0)).optional())
                .map_err(err)?;
            doc.map(|d| parse(&d)).transpose()
        })
        .await
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        self.with(move |c| {
            let mut s = c.prepare_cached("SELECT doc FROM tenants ORDER BY id").map_err(err)?;
            let rows = s.query_map([], |r| r.get::<_, String>(0)).map_err(err)?;
            rows.map(|r| parse(&r.map_err(err)?)).collect()
        })
        .await
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool> {
        let id = id.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let n = tx.execute("DELETE FROM tenants WHERE id = ?1", params![id]).map_err(err)?;
            for table in TENANT_TABLES {
                tx.execute(&format!("DELETE FROM {table} WHERE tenant = ?1"), params![id]).map_err(err)?;
            }
            bump(&tx)?;
            tx.commit().map_err(err)?;
            Ok(n == 1)
        })
        .await
    }

    async fn add_key(&self, tenant: &str, key: &ApiKey) -> Result<()> {
        let (tenant, hash, id, doc) = (tenant.to_string(), key.hash.clone(), key.id.clone(), json(key)?);
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            tx.execute(
                "INSERT INTO api_keys (hash, tenant, id, doc) VALUES (?1, ?2, ?3, ?4)",
                params![hash, tenant, id, doc],
            )
            .map_err(err)?;
            bump(&tx)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn key_owner(&self, hash: &str) -> Result<Option<(String, String)>> {
        let hash = hash.to_string();
        self.with(move |c| {
            c.prepare_cached("SELECT tenant, id FROM api_keys WHERE hash = ?1")
                .and_then(|mut s| s.query_row(params![hash], |r| Ok((r.get(0)?, r.get(1)?))).optional())
                .map_err(err)
        })
        .await
    }

    async fn keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            let mut s = c.prepare_cached("SELECT doc FROM api_keys WHERE tenant = ?1 ORDER BY id").map_err(err)?;
            let rows = s.query_map(params![tenant], |r| r.get::<_, String>(0)).map_err(err)?;
            rows.map(|r| parse(&r.map_err(err)?)).collect()
        })
        .await
    }

    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool> {
        let (tenant, key_id) = (tenant.to_string(), key_id.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let n = tx
                .execute("DELETE FROM api_keys WHERE tenant = ?1 AND id = ?2", params![tenant, key_id])
                .map_err(err)?;
            bump(&tx)?;
            tx.commit().map_err(err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_pipeline(&self, tenant: &str, p: &PipelineVersion, force: bool) -> Result<Put> {
        let (tenant, p) = (tenant.to_string(), p.clone());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            if !force && p.origin != "sync" {
                let doc: Option<String> = tx
                    .query_row(
                        "SELECT v.doc FROM pipelines h JOIN pipeline_versions v
                           ON v.tenant = h.tenant AND v.name = h.name AND v.version = h.latest
                         WHERE h.tenant = ?1 AND h.name = ?2 AND h.live = 1",
                        params![tenant, p.name],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                if let Some(doc) = doc {
                    let cur: PipelineVersion = parse(&doc)?;
                    if cur.origin == "sync" {
                        return Ok(Put::Managed(cur.version, cur.commit));
                    }
                }
            }
            let put = put_in(&tx, &tenant, &p)?;
            if matches!(put, Put::Created(_)) {
                bump(&tx)?;
                tx.commit().map_err(err)?;
            }
            Ok(put)
        })
        .await
    }

    async fn apply(&self, tenant: &str, ops: &[BulkOp], expected: &[(String, Option<u32>)]) -> Result<Applied> {
        let (tenant, ops, expected) = (tenant.to_string(), ops.to_vec(), expected.to_vec());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            for (name, want) in &expected {
                let now: Option<u32> = tx
                    .query_row(
                        "SELECT latest FROM pipelines WHERE tenant = ?1 AND name = ?2 AND live = 1",
                        params![tenant, name],
                        |r| r.get(0),
                    )
                    .optional()
                    .map_err(err)?;
                if now != *want {
                    return Ok(Applied::Moved { name: name.clone(), expected: *want, found: now });
                }
            }
            let mut out = Vec::new();
            // Deletes first, so paths they free can be taken by the puts of the same apply.
            for op in ops.iter().filter(|o| matches!(o, BulkOp::Delete(_))) {
                if let BulkOp::Delete(name) = op {
                    delete_in(&tx, &tenant, name)?;
                    out.push((name.clone(), None));
                }
            }
            // The paths of every pipeline put are freed first, so paths can move between them.
            for op in &ops {
                if let BulkOp::Put(p) = op {
                    tx.execute("DELETE FROM hook_paths WHERE tenant = ?1 AND name = ?2", params![tenant, p.name])
                        .map_err(err)?;
                }
            }
            for op in &ops {
                if let BulkOp::Put(p) = op {
                    match put_in(&tx, &tenant, p)? {
                        Put::PathTaken(path, owner) => {
                            return Ok(Applied::PathTaken { name: p.name.clone(), path, owner })
                        }
                        put => out.push((p.name.clone(), Some(put))),
                    }
                }
            }
            bump(&tx)?;
            tx.commit().map_err(err)?;
            Ok(Applied::Done(out))
        })
        .await
    }

    async fn pipeline(&self, tenant: &str, name: &str, version: Option<u32>) -> Result<Option<PipelineVersion>> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.with(move |c| {
            let doc: Option<String> = c
                .prepare_cached(
                    "SELECT v.doc FROM pipelines p JOIN pipeline_versions v
                       ON v.tenant = p.tenant AND v.name = p.name AND v.version = COALESCE(?3, p.latest)
                     WHERE p.tenant = ?1 AND p.name = ?2 AND p.live = 1",
                )
                .and_then(|mut s| s.query_row(params![tenant, name, version], |r| r.get(0)).optional())
                .map_err(err)?;
            doc.map(|d| parse(&d)).transpose()
        })
        .await
    }

    async fn pipelines(&self, tenant: &str) -> Result<Vec<PipelineVersion>> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT v.doc FROM pipelines p JOIN pipeline_versions v
                       ON v.tenant = p.tenant AND v.name = p.name AND v.version = p.latest
                     WHERE p.tenant = ?1 AND p.live = 1 ORDER BY p.name",
                )
                .map_err(err)?;
            let rows = s.query_map(params![tenant], |r| r.get::<_, String>(0)).map_err(err)?;
            rows.map(|r| parse(&r.map_err(err)?)).collect()
        })
        .await
    }

    async fn versions(&self, tenant: &str, name: &str) -> Result<Vec<(u32, String)>> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.with(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT v.doc FROM pipelines p JOIN pipeline_versions v ON v.tenant = p.tenant AND v.name = p.name
                     WHERE p.tenant = ?1 AND p.name = ?2 AND p.live = 1 ORDER BY v.version",
                )
                .map_err(err)?;
            let rows = s.query_map(params![tenant, name], |r| r.get::<_, String>(0)).map_err(err)?;
            rows.map(|r| {
                let v: PipelineVersion = parse(&r.map_err(err)?)?;
                Ok((v.version, v.created_at))
            })
            .collect()
        })
        .await
    }

    async fn delete_pipeline(&self, tenant: &str, name: &str) -> Result<bool> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            // The head stays (not live) so numbering continues; the versions go.
            let n = tx
                .execute(
                    "UPDATE pipelines SET live = 0 WHERE tenant = ?1 AND name = ?2 AND live = 1",
                    params![tenant, name],
                )
                .map_err(err)?;
            tx.execute("DELETE FROM pipeline_versions WHERE tenant = ?1 AND name = ?2", params![tenant, name])
                .map_err(err)?;
            tx.execute("DELETE FROM hook_paths WHERE tenant = ?1 AND name = ?2", params![tenant, name]).map_err(err)?;
            bump(&tx)?;
            tx.commit().map_err(err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn put_secret(&self, tenant: &str, name: &str, sealed: &str, updated_at: &str) -> Result<()> {
        let (t, n, s, u) = (tenant.to_string(), name.to_string(), sealed.to_string(), updated_at.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            tx.execute(
                "INSERT INTO secrets (tenant, name, sealed, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, name) DO UPDATE SET sealed = ?3, updated_at = ?4",
                params![t, n, s, u],
            )
            .map_err(err)?;
            bump(&tx)?;
            tx.commit().map_err(err)
        })
        .await
    }

    async fn secrets(&self, tenant: &str) -> Result<Vec<(String, String, String)>> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            let mut s = c
                .prepare_cached("SELECT name, sealed, updated_at FROM secrets WHERE tenant = ?1 ORDER BY name")
                .map_err(err)?;
            let rows = s.query_map(params![tenant], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).map_err(err)?;
            rows.map(|r| r.map_err(err)).collect()
        })
        .await
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool> {
        let (tenant, name) = (tenant.to_string(), name.to_string());
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let n = tx
                .execute("DELETE FROM secrets WHERE tenant = ?1 AND name = ?2", params![tenant, name])
                .map_err(err)?;
            bump(&tx)?;
            tx.commit().map_err(err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn generation(&self) -> Result<u64> {
        self.with(move |c| {
            let g: Option<i64> = c
                .query_row("SELECT value FROM catalog_meta WHERE key = 'generation'", [], |r| r.get(0))
                .optional()
                .map_err(err)?;
            Ok(g.unwrap_or(0) as u64)
        })
        .await
    }

    async fn put_connection(&self, tenant: &str, name: &str, doc: &str) -> Result<()> {
        let (t, n, d) = (tenant.to_string(), name.to_string(), doc.to_string());
        self.with(move |c| {
            c.execute(
                "INSERT INTO connections (tenant, name, doc) VALUES (?1, ?2, ?3)
                 ON CONFLICT (tenant, name) DO UPDATE SET doc = ?3",
                params![t, n, d],
            )
            .map(|_| ())
            .map_err(err)
        })
        .await
    }

    async fn connection(&self, tenant: &str, name: &str) -> Result<Option<String>> {
        let (t, n) = (tenant.to_string(), name.to_string());
        self.with(move |c| {
            c.query_row("SELECT doc FROM connections WHERE tenant = ?1 AND name = ?2", params![t, n], |r| r.get(0))
                .optional()
                .map_err(err)
        })
        .await
    }

    async fn connections(&self, tenant: &str) -> Result<Vec<(String, String)>> {
        let t = tenant.to_string();
        self.with(move |c| {
            let mut s =
                c.prepare_cached("SELECT name, doc FROM connections WHERE tenant = ?1 ORDER BY name").map_err(err)?;
            let rows = s.query_map(params![t], |r| Ok((r.get(0)?, r.get(1)?))).map_err(err)?;
            rows.map(|r| r.map_err(err)).collect()
        })
        .await
    }

    async fn delete_connection(&self, tenant: &str, name: &str) -> Result<bool> {
        let (t, n) = (tenant.to_string(), name.to_string());
        self.with(move |c| {
            c.execute("DELETE FROM connections WHERE tenant = ?1 AND name = ?2", params![t, n])
                .map(|n| n > 0)
                .map_err(err)
        })
        .await
    }

    async fn put_connection_locked(&self, tenant: &str, name: &str, doc: &str, token: &str) -> Result<bool> {
        if !self.holds(tenant, name, token) {
            return Ok(false);
        }
        // An update only: a connection deleted meanwhile stays deleted.
        let (t, n, d) = (tenant.to_string(), name.to_string(), doc.to_string());
        self.with(move |c| {
            c.execute("UPDATE connections SET doc = ?3 WHERE tenant = ?1 AND name = ?2", params![t, n, d])
                .map(|n| n > 0)
                .map_err(err)
        })
        .await
    }

    async fn lock(&self, tenant: &str, name: &str, token: &str, ttl_ms: u64) -> Result<bool> {
        // One process serves an embedded store: its locks live in memory.
        let mut locks = self.locks.lock().map_err(|_| err("the locks' lock is poisoned"))?;
        let now = crate::store::now_ms();
        let key = format!("{tenant}/{name}");
        match locks.get(&key) {
            Some((_, until)) if *until > now => Ok(false),
            _ => {
                locks.insert(key, (token.to_string(), now + ttl_ms));
                Ok(true)
            }
        }
    }

    async fn unlock(&self, tenant: &str, name: &str, token: &str) -> Result<()> {
        let mut locks = self.locks.lock().map_err(|_| err("the locks' lock is poisoned"))?;
        let key = format!("{tenant}/{name}");
        if locks.get(&key).is_some_and(|(t, _)| t == token) {
            locks.remove(&key);
        }
        Ok(())
    }

    async fn put_authorization(&self, state: &str, doc: &str, ttl_ms: u64) -> Result<()> {
        let (s, d) = (state.to_string(), doc.to_string());
        self.with(move |c| {
            let now = crate::store::now_ms() as i64;
            c.execute("DELETE FROM authorizations WHERE expires_ms < ?1", params![now]).map_err(err)?;
            c.execute(
                "INSERT OR REPLACE INTO authorizations (state, doc, expires_ms) VALUES (?1, ?2, ?3)",
                params![s, d, now + ttl_ms as i64],
            )
            .map(|_| ())
            .map_err(err)
        })
        .await
    }

    async fn take_authorization(&self, state: &str) -> Result<Option<String>> {
        let s = state.to_string();
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let doc: Option<String> = tx
                .query_row(
                    "SELECT doc FROM authorizations WHERE state = ?1 AND expires_ms >= ?2",
                    params![s, crate::store::now_ms() as i64],
                    |r| r.get(0),
                )
                .optional()
                .map_err(err)?;
            tx.execute("DELETE FROM authorizations WHERE state = ?1", params![s]).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(doc)
        })
        .await
    }
}

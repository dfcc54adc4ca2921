//! The catalog on Redis. A tenant's catalog keys carry its hash tag like its runs; the tenant list, the key
//! index (key hash -> tenant) and the generation counter are the global keys (`{g}`), touched by admin
//! operations and lookups only.

use super::{ApiKey, Applied, BulkOp, Catalog, PipelineVersion, Put, Tenant};
use crate::store::redis::{err, parse, Keys, RedisStore, ACTIVE, DUE, TENANTS};
use crate::store::{Result, StoreError};
use async_trait::async_trait;
use redis::{AsyncCommands, Script};
use std::sync::LazyLock;

pub(crate) const TENANT_DOCS: &str = "sl:{g}:tenant-docs";
const KEY_INDEX: &str = "sl:{g}:apikeys";
const GENERATION: &str = "sl:{g}:catalog-gen";

static PUT_LOCKED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        "if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then redis.call('HSET', KEYS[2], ARGV[2], ARGV[3]) return 1 end return 0",
    )
});
static UNLOCK: LazyLock<Script> = LazyLock::new(|| {
    Script::new("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
});
static APPLY: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../store/lua/apply.lua")));
static PUT_PIPELINE: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../store/lua/put_pipeline.lua")));

fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl Keys {
    fn keys(&self) -> String {
        format!("{}:keys", self.base())
    }
    fn heads(&self) -> String {
        format!("{}:pl", self.base())
    }
    fn counters(&self) -> String {
        format!("{}:plcount", self.base())
    }
    fn versions(&self, name: &str) -> String {
        format!("{}:plv:{name}", self.base())
    }
    fn latest_hash(&self, name: &str) -> String {
        format!("{}:plh:{name}", self.base())
    }
    fn hook_paths(&self) -> String {
        format!("{}:hookpaths", self.base())
    }
    fn connections(&self) -> String {
        format!("{}:conns", self.base())
    }
    fn connection_lock(&self, name: &str) -> String {
        format!("{}:connlock:{name}", self.base())
    }
    fn secrets(&self) -> String {
        format!("{}:secrets", self.base())
    }
}

/// A version document as stored: its number is the hash field's name.
fn version_doc(field: &str, doc: &str) -> Result<PipelineVersion> {
    let mut p: PipelineVersion = parse(doc)?;
    p.version = field.parse().map_err(|_| StoreError::Corrupt(format!("pipeline version {field:?}")))?;
    Ok(p)
}

impl RedisStore {
    async fn bump(&self) -> Result<()> {
        self.idempotent(|mut c| async move { c.incr::<_, _, u64>(GENERATION, 1).await }).await.map(|_| ())
    }
}

#[async_trait]
impl Catalog for RedisStore {
    async fn create_tenant(&self, t: &Tenant) -> Result<bool> {
        let doc = json(t)?;
        let mut c = self.conn.clone();
        let added: bool = c.hset_nx(TENANT_DOCS, &t.id, doc).await.map_err(err)?;
        self.bump().await?;
        Ok(added)
    }

    async fn tenant(&self, id: &str) -> Result<Option<Tenant>> {
        let doc: Option<String> = self.idempotent(|mut c| async move { c.hget(TENANT_DOCS, id).await }).await?;
        doc.map(|d| parse(&d)).transpose()
    }

    async fn tenants(&self) -> Result<Vec<Tenant>> {
        let all: Vec<(String, String)> = self.idempotent(|mut c| async move { c.hgetall(TENANT_DOCS).await }).await?;
        let mut out = all.iter().map(|(_, d)| parse(d)).collect::<Result<Vec<Tenant>>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn delete_tenant(&self, id: &str) -> Result<bool> {
        let k = Keys::new(id);
        let mut c = self.conn.clone();
        let keys: Vec<(String, String)> = c.hgetall(k.keys()).await.map_err(err)?;
        for (_, doc) in &keys {
            let key: ApiKey = parse(doc)?;
            let _: () = c.hdel(KEY_INDEX, &key.hash).await.map_err(err)?;
        }
        let removed: u32 = c.hdel(TENANT_DOCS, id).await.map_err(err)?;
        // Every key of the tenant shares its prefix (and hash slot).
        let pattern = format!("{}:*", k.base());
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut c)
                .await
                .map_err(err)?;
            if !batch.is_empty() {
                let _: () = c.del(batch).await.map_err(err)?;
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let _: () = c.zrem(ACTIVE, id).await.map_err(err)?;
        let _: () = c.srem(TENANTS, id).await.map_err(err)?;
        let _: () = c.hdel(DUE, id).await.map_err(err)?;
        self.bump().await?;
        Ok(removed == 1)
    }

    async fn add_key(&self, tenant: &str, key: &ApiKey) -> Result<()> {
        let k = Keys::new(tenant);
        let doc = json(key)?;
        let mut c = self.conn.clone();
        let _: () = c.hset(k.keys(), &key.id, doc).await.map_err(err)?;
        let _: () = c.hset(KEY_INDEX, &key.hash, format!("{tenant}\t{}", key.id)).await.map_err(err)?;
        self.bump().await
    }

    async fn key_owner(&self, hash: &str) -> Result<Option<(String, String)>> {
        let v: Option<String> = self.idempotent(|mut c| async move { c.hget(KEY_INDEX, hash).await }).await?;
        Ok(v.and_then(|v| v.split_once('\t').map(|(t, k)| (t.to_string(), k.to_string()))))
    }

    async fn keys(&self, tenant: &str) -> Result<Vec<ApiKey>> {
        let k = Keys::new(tenant);
        let all: Vec<(String, String)> = self
            .idempotent(|mut c| {
                let key = k.keys();
                async move { c.hgetall(key).await }
            })
            .await?;
        let mut out = all.iter().map(|(_, d)| parse(d)).collect::<Result<Vec<ApiKey>>>()?;
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    async fn revoke_key(&self, tenant: &str, key_id: &str) -> Result<bool> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let doc: Option<String> = c.hget(k.keys(), key_id).await.map_err(err)?;
        let Some(doc) = doc else {
            // Gone already; bump anyway, in case the bump of the revocation that removed it failed.
            self.bump().await?;
            return Ok(false);
        };
        let key: ApiKey = parse(&doc)?;
        let _: () = c.hdel(KEY_INDEX, &key.hash).await.map_err(err)?;
        let _: () = c.hdel(k.keys(), key_id).await.map_err(err)?;
        self.bump().await?;
        Ok(true)
    }

    async fn put_pipeline(&self, tenant: &str, p: &PipelineVersion, force: bool) -> Result<Put> {
        let k = Keys::new(tenant);
        let doc = json(&PipelineVersion { version: 0, ..p.clone() })?;
        let mark = format!("{}\t{}", p.hash, p.origin);
        let paths = p.webhook_paths();
        let out: Vec<redis::Value> = self
            .idempotent(|mut c| {
                let mut inv = PUT_PIPELINE.prepare_invoke();
                inv.key(k.heads()).key(k.counters()).key(k.versions(&p.name)).key(k.latest_hash(&p.name));
                inv.key(k.hook_paths());
                inv.arg(&p.name).arg(&mark).arg(&doc).arg(super::VERSIONS_KEPT);
                inv.arg(if !force && p.origin != "sync" { "1" } else { "0" });
                for path in &paths {
                    inv.arg(path);
                }
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        let num = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => Ok(*n),
            other => Err(StoreError::Corrupt(format!("put_pipeline answered {other:?}"))),
        };
        let text = |v: Option<&redis::Value>| match v {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
            _ => String::new(),
        };
        // A bump even for `Unchanged`: when the bump of the write that stored it failed, the retry repairs it.
        self.bump().await?;
        match num(out.first())? {
            1 => Ok(Put::Created(u32::try_from(num(out.get(1))?).unwrap_or(0))),
            0 => Ok(Put::Unchanged(u32::try_from(num(out.get(1))?).unwrap_or(0))),
            3 => {
                let v = u32::try_from(num(out.get(1))?).unwrap_or(0);
                let commit = self.pipeline(tenant, &p.name, Some(v)).await?.and_then(|c| c.commit);
                Ok(Put::Managed(v, commit))
            }
            _ => Ok(Put::PathTaken(text(out.get(1)), text(out.get(2)))),
        }
    }

    async fn apply(&self, tenant: &str, ops: &[BulkOp], expected: &[(String, Option<u32>)]) -> Result<Applied> {
        let k = Keys::new(tenant);
        let mut inv = APPLY.prepare_invoke();
        inv.key(k.heads()).key(k.counters()).key(k.hook_paths());
        inv.arg(super::VERSIONS_KEPT).arg(expected.len());
        for (name, v) in expected {
            inv.arg(name).arg(v.map(|v| v.to_string()).unwrap_or_default());
        }
        inv.arg(ops.len());
        for op in ops {
            match op {
                BulkOp::Put(p) => {
                    let doc = json(&PipelineVersion { version: 0, ..(**p).clone() })?;
                    let paths = p.webhook_paths();
                    inv.key(k.versions(&p.name)).key(k.latest_hash(&p.name));
                    inv.arg("put").arg(&p.name).arg(format!("{}\t{}", p.hash, p.origin)).arg(doc).arg(paths.len());
                    for path in &paths {
                        inv.arg(path);
                    }
                }
                BulkOp::Delete(name) => {
                    inv.key(k.versions(name)).key(k.latest_hash(name));
                    inv.arg("del").arg(name).arg("").arg("").arg(0);
                }
            }
        }
        let mut c = self.conn.clone();
        let out: Vec<redis::Value> = inv.invoke_async(&mut c).await.map_err(err)?;
        let text = |v: Option<&redis::Value>| match v {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
            Some(redis::Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        };
        let num = |v: Option<&redis::Value>| match v {
            Some(redis::Value::Int(n)) => *n,
            _ => 0,
        };
        let applied = match text(out.first()).as_str() {
            "moved" => {
                let found = text(out.get(2));
                Applied::Moved {
                    name: text(out.get(1)),
                    expected: expected.iter().find(|(n, _)| *n == text(out.get(1))).and_then(|(_, v)| *v),
                    found: found.parse().ok(),
                }
            }
            "path" => Applied::PathTaken { name: text(out.get(1)), path: text(out.get(2)), owner: text(out.get(3)) },
            _ => {
                let mut done = Vec::new();
                for chunk in out.get(1..).unwrap_or(&[]).chunks(3) {
                    let (name, code, v) = (text(chunk.first()), num(chunk.get(1)), num(chunk.get(2)));
                    let v = u32::try_from(v).unwrap_or(0);
                    done.push((
                        name,
                        match code {
                            1 => Some(Put::Created(v)),
                            0 => Some(Put::Unchanged(v)),
                            _ => None,
                        },
                    ));
                }
                Applied::Done(done)
            }
        };
        self.bump().await?;
        Ok(applied)
    }

    async fn pipeline(&self, tenant: &str, name: &str, version: Option<u32>) -> Result<Option<PipelineVersion>> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let latest: Option<u32> = c.hget(k.heads(), name).await.map_err(err)?;
        let Some(latest) = latest else { return Ok(None) };
        let v = version.unwrap_or(latest);
        let doc: Option<String> = c.hget(k.versions(name), v).await.map_err(err)?;
        doc.map(|d| version_doc(&v.to_string(), &d)).transpose()
    }

    async fn pipelines(&self, tenant: &str) -> Result<Vec<PipelineVersion>> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let mut heads: Vec<(String, u32)> = c.hgetall(k.heads()).await.map_err(err)?;
        heads.sort();
        if heads.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (name, v) in &heads {
            pipe.hget(k.versions(name), *v);
        }
        let docs: Vec<Option<String>> = pipe.query_async(&mut c).await.map_err(err)?;
        let mut out = Vec::new();
        for ((_, v), doc) in heads.iter().zip(docs) {
            if let Some(doc) = doc {
                out.push(version_doc(&v.to_string(), &doc)?);
            }
        }
        Ok(out)
    }

    async fn versions(&self, tenant: &str, name: &str) -> Result<Vec<(u32, String)>> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let live: Option<u32> = c.hget(k.heads(), name).await.map_err(err)?;
        if live.is_none() {
            return Ok(Vec::new());
        }
        let all: Vec<(String, String)> = c.hgetall(k.versions(name)).await.map_err(err)?;
        let mut out = all
            .iter()
            .map(|(f, d)| version_doc(f, d).map(|p| (p.version, p.created_at)))
            .collect::<Result<Vec<_>>>()?;
        out.sort();
        Ok(out)
    }

    async fn delete_pipeline(&self, tenant: &str, name: &str) -> Result<bool> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let removed: u32 = c.hdel(k.heads(), name).await.map_err(err)?;
        let _: () = c.del(&[k.versions(name), k.latest_hash(name)]).await.map_err(err)?;
        let paths: Vec<(String, String)> = c.hgetall(k.hook_paths()).await.map_err(err)?;
        for (path, owner) in paths {
            if owner == name {
                let _: () = c.hdel(k.hook_paths(), path).await.map_err(err)?;
            }
        }
        self.bump().await?;
        Ok(removed == 1)
    }

    async fn put_secret(&self, tenant: &str, name: &str, sealed: &str, updated_at: &str) -> Result<()> {
        let k = Keys::new(tenant);
        let doc = json(&(sealed, updated_at))?;
        let mut c = self.conn.clone();
        let _: () = c.hset(k.secrets(), name, doc).await.map_err(err)?;
        self.bump().await
    }

    async fn secrets(&self, tenant: &str) -> Result<Vec<(String, String, String)>> {
        let k = Keys::new(tenant);
        let all: Vec<(String, String)> = self
            .idempotent(|mut c| {
                let key = k.secrets();
                async move { c.hgetall(key).await }
            })
            .await?;
        let mut out = Vec::new();
        for (name, doc) in all {
            let (sealed, updated): (String, String) = parse(&doc)?;
            out.push((name, sealed, updated));
        }
        out.sort();
        Ok(out)
    }

    async fn delete_secret(&self, tenant: &str, name: &str) -> Result<bool> {
        let k = Keys::new(tenant);
        let mut c = self.conn.clone();
        let removed: u32 = c.hdel(k.secrets(), name).await.map_err(err)?;
        self.bump().await?;
        Ok(removed == 1)
    }

    async fn generation(&self) -> Result<u64> {
        let g: Option<u64> = self.idempotent(|mut c| async move { c.get(GENERATION).await }).await?;
        Ok(g.unwrap_or(0))
    }

    async fn put_connection(&self, tenant: &str, name: &str, doc: &str) -> Result<()> {
        let k = Keys::new(tenant).connections();
        self.idempotent(|mut c| {
            let k = k.clone();
            async move { c.hset::<_, _, _, ()>(k, name, doc).await }
        })
        .await
    }

    async fn connection(&self, tenant: &str, name: &str) -> Result<Option<String>> {
        let k = Keys::new(tenant).connections();
        self.idempotent(|mut c| {
            let k = k.clone();
            async move { c.hget(k, name).await }
        })
        .await
    }

    async fn connections(&self, tenant: &str) -> Result<Vec<(String, String)>> {
        let k = Keys::new(tenant).connections();
        let mut all: Vec<(String, String)> = self
            .idempotent(|mut c| {
                let k = k.clone();
                async move { c.hgetall(k).await }
            })
            .await?;
        all.sort();
        Ok(all)
    }

    async fn delete_connection(&self, tenant: &str, name: &str) -> Result<bool> {
        let k = Keys::new(tenant).connections();
        let n: u32 = self
            .idempotent(|mut c| {
                let k = k.clone();
                async move { c.hdel(k, name).await }
            })
            .await?;
        Ok(n == 1)
    }

    async fn put_connection_locked(&self, tenant: &str, name: &str, doc: &str, token: &str) -> Result<bool> {
        let k = Keys::new(tenant);
        let written: i64 = self
            .idempotent(|mut c| {
                let mut inv = PUT_LOCKED.prepare_invoke();
                inv.key(k.connection_lock(name)).key(k.connections()).arg(token).arg(name).arg(doc);
                async move { inv.invoke_async(&mut c).await }
            })
            .await?;
        Ok(written == 1)
    }

    async fn lock(&self, tenant: &str, name: &str, token: &str, ttl_ms: u64) -> Result<bool> {
        // Not retried: a lost reply would make a second try see its own lock as someone else's.
        let key = Keys::new(tenant).connection_lock(name);
        let mut c = self.conn.clone();
        let got: Option<String> = redis::cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl_ms)
            .query_async(&mut c)
            .await
            .map_err(err)?;
        Ok(got.is_some())
    }

    async fn unlock(&self, tenant: &str, name: &str, token: &str) -> Result<()> {
        let key = Keys::new(tenant).connection_lock(name);
        self.idempotent(|mut c| {
            let mut inv = UNLOCK.prepare_invoke();
            inv.key(&key).arg(token);
            async move { inv.invoke_async::<i64>(&mut c).await }
        })
        .await
        .map(|_| ())
    }

    async fn put_authorization(&self, state: &str, doc: &str, ttl_ms: u64) -> Result<()> {
        let key = format!("sl:{{g}}:oauth:{state}");
        self.idempotent(|mut c| {
            let key = key.clone();
            async move { redis::cmd("SET").arg(key).arg(doc).arg("PX").arg(ttl_ms).query_async::<()>(&mut c).await }
        })
        .await
    }

    async fn take_authorization(&self, state: &str) -> Result<Option<String>> {
        // GETDEL: the first caller gets it, a replay gets nothing (not retried: a retry could not tell).
        let key = format!("sl:{{g}}:oauth:{state}");
        let mut c = self.conn.clone();
        redis::cmd("GETDEL").arg(key).query_async(&mut c).await.map_err(err)
    }
}

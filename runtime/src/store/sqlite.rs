//! The embedded store: one SQLite file (WAL), every operation one transaction, wake-ups in process.
//!
//! Durable against a crash of the process: a commit that returned is on disk. Tenants are served in turn by
//! a `served` counter; leases are timestamps, so a task whose worker died is claimed again when its lease ends.

use super::{now_ms, Result, Store, StoreError};
use crate::model::{
    Claimed, Commit, CommitResult, Created, DeadLetter, NewRun, RunHeader, RunQuery, StepState, TaskRef,
};
use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const SCHEMA: &str = "
PRAGMA journal_mode = WAL;
PRAGMA synchronous = NORMAL;
PRAGMA foreign_keys = OFF;
CREATE TABLE IF NOT EXISTS runs (tenant TEXT NOT NULL, id TEXT NOT NULL, status TEXT NOT NULL, header TEXT NOT NULL,
  plan TEXT NOT NULL, finished_ms INTEGER, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS runs_finished ON runs (finished_ms) WHERE finished_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS states (tenant TEXT NOT NULL, run TEXT NOT NULL, key TEXT NOT NULL, doc TEXT NOT NULL,
  PRIMARY KEY (tenant, run, key)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS terminal (tenant TEXT NOT NULL, run TEXT NOT NULL, step TEXT NOT NULL,
  PRIMARY KEY (tenant, run, step)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS enqueued (tenant TEXT NOT NULL, run TEXT NOT NULL, task TEXT NOT NULL,
  PRIMARY KEY (tenant, run, task)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS items_done (tenant TEXT NOT NULL, run TEXT NOT NULL, step TEXT NOT NULL, idx INTEGER NOT NULL,
  PRIMARY KEY (tenant, run, step, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS queue (seq INTEGER PRIMARY KEY AUTOINCREMENT, tenant TEXT NOT NULL, task TEXT NOT NULL,
  run_at INTEGER NOT NULL, lease_until INTEGER, worker TEXT);
CREATE INDEX IF NOT EXISTS queue_due ON queue (run_at);
CREATE INDEX IF NOT EXISTS queue_task ON queue (tenant, task);
CREATE TABLE IF NOT EXISTS served (tenant TEXT PRIMARY KEY, turn INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dead_letters (tenant TEXT NOT NULL, id TEXT NOT NULL, created_ms INTEGER NOT NULL,
  doc TEXT NOT NULL, PRIMARY KEY (tenant, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dedup (tenant TEXT NOT NULL, key TEXT NOT NULL, run TEXT NOT NULL,
  expires_ms INTEGER NOT NULL, PRIMARY KEY (tenant, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS dedup_expiry ON dedup (expires_ms);
";

/// Schema changes after the first release, in order; `PRAGMA user_version` counts the ones applied.
const MIGRATIONS: &[&str] = &[
    "ALTER TABLE runs ADD COLUMN pipeline TEXT NOT NULL DEFAULT '';
     UPDATE runs SET pipeline = COALESCE(json_extract(header, '$.pipeline'), '');
     CREATE INDEX IF NOT EXISTS runs_live ON runs (tenant, status);",
    // Runs in flight per tenant, kept by triggers on every path that changes a run's status (so the limit
    // check reads one row instead of counting).
    "CREATE TABLE live_counts (tenant TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID;
     INSERT INTO live_counts SELECT tenant, COUNT(*) FROM runs WHERE status IN ('queued', 'running') GROUP BY tenant;
     CREATE TRIGGER runs_live_insert AFTER INSERT ON runs WHEN NEW.status IN ('queued', 'running') BEGIN
       INSERT INTO live_counts (tenant, n) VALUES (NEW.tenant, 1) ON CONFLICT (tenant) DO UPDATE SET n = n + 1;
     END;
     CREATE TRIGGER runs_live_update AFTER UPDATE OF status ON runs
       WHEN (OLD.status IN ('queued', 'running')) <> (NEW.status IN ('queued', 'running')) BEGIN
       INSERT INTO live_counts (tenant, n) VALUES (NEW.tenant, 0) ON CONFLICT (tenant) DO NOTHING;
       UPDATE live_counts SET n = n + (CASE WHEN NEW.status IN ('queued', 'running') THEN 1 ELSE -1 END)
         WHERE tenant = NEW.tenant;
     END;
     CREATE TRIGGER runs_live_delete AFTER DELETE ON runs WHEN OLD.status IN ('queued', 'running') BEGIN
       UPDATE live_counts SET n = n - 1 WHERE tenant = OLD.tenant;
     END;",
];

/// SQL statements run by every embedded store of this process (for `sluice bench`).
static STATEMENTS: AtomicU64 = AtomicU64::new(0);

/// The embedded store.
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
    /// New runs go to one thread that writes them in groups (one synced commit for all that are waiting).
    creates: Mutex<std::sync::mpsc::Sender<CreateJob>>,
    /// Rate-limit state: one process serves an embedded store, so it lives in memory.
    rates: Mutex<std::collections::HashMap<(String, String), f64>>,
    /// Connection locks (`tenant/name` -> holder, until ms), in memory for the same reason.
    pub(crate) locks: Mutex<std::collections::HashMap<String, (String, u64)>>,
    retention: Duration,
    notify: Arc<Notify>,
    generation: AtomicU64,
}

pub(crate) fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Sqlite(e.to_string())
}

pub(crate) fn json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn parse<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| StoreError::Corrupt(e.to_string()))
}

impl SqliteStore {
    /// Opens (or creates) the store in `dir/sluice.db`.
    pub fn open(dir: &Path) -> Result<SqliteStore> {
        std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create {}: {e}", dir.display())))?;
        let conn = Connection::open(dir.join("sluice.db")).map_err(err)?;
        conn.busy_timeout(Duration::from_secs(10)).map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        let applied: usize = conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(err)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(applied) {
            conn.execute_batch(&format!("BEGIN; {m} PRAGMA user_version = {}; COMMIT;", i + 1)).map_err(err)?;
        }
        crate::catalog::sqlite::init(&conn)?;
        conn.trace_v2(
            rusqlite::trace::TraceEventCodes::SQLITE_TRACE_PROFILE,
            Some(|_| {
                STATEMENTS.fetch_add(1, Ordering::Relaxed);
            }),
        );
        let conn = Arc::new(Mutex::new(conn));
        let (creates, jobs) = std::sync::mpsc::channel();
        let writer = conn.clone();
        std::thread::Builder::new()
            .name("sluice-sqlite-create".into())
            .spawn(move || creator(writer, jobs))
            .map_err(|e| err(format!("cannot start the store's writer: {e}")))?;
        Ok(SqliteStore {
            conn,
            creates: Mutex::new(creates),
            rates: Mutex::new(std::collections::HashMap::new()),
            locks: Mutex::new(std::collections::HashMap::new()),
            retention: super::DEFAULT_RETENTION,
            notify: Arc::new(Notify::new()),
            generation: AtomicU64::new(0),
        })
    }

    /// How long finished runs are kept (default 7 days).
    pub fn with_retention(mut self, retention: Duration) -> SqliteStore {
        self.retention = retention;
        self
    }

    pub(crate) async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = conn.lock().map_err(|_| err("the store's lock is poisoned"))?;
            f(&mut c)
        })
        .await
        .map_err(err)?
    }

    /// Whether `token` holds the connection's lock now.
    pub(crate) fn holds(&self, tenant: &str, name: &str, token: &str) -> bool {
        let now = now_ms();
        self.locks
            .lock()
            .map(|l| l.get(&format!("{tenant}/{name}")).is_some_and(|(t, until)| t == token && *until > now))
            .unwrap_or(false)
    }

    fn wake(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.notify.notify_waiters();
    }
}

/// The run's status column wins over the header's copy (a claim marks a run running without rewriting it).
fn with_status(mut h: RunHeader, status: &str) -> Result<RunHeader> {
    h.status = serde_json::from_value(serde_json::Value::String(status.to_string()))
        .map_err(|e| StoreError::Corrupt(format!("run status {status:?}: {e}")))?;
    Ok(h)
}

/// The run header (a queued run becomes running) and the given state documents.
fn read_load(
    c: &Connection,
    tenant: &str,
    run: &str,
    keys: &[String],
) -> Result<Option<(RunHeader, Vec<Option<StepState>>)>> {
    let row: Option<(String, String)> = c
        .prepare_cached("SELECT status, header FROM runs WHERE tenant = ?1 AND id = ?2")
        .and_then(|mut st| st.query_row(params![tenant, run], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(err)?;
    let Some((mut status, header)) = row else { return Ok(None) };
    if status == "queued" {
        c.execute(
            "UPDATE runs SET status = 'running' WHERE tenant = ?1 AND id = ?2 AND status = 'queued'",
            params![tenant, run],
        )
        .map_err(err)?;
        status = "running".into();
    }
    let header = with_status(parse(&header)?, &status)?;
    let mut stmt =
        c.prepare_cached("SELECT doc FROM states WHERE tenant = ?1 AND run = ?2 AND key = ?3").map_err(err)?;
    let mut states = Vec::with_capacity(keys.len());
    for k in keys {
        let doc: Option<String> = stmt.query_row(params![tenant, run, k], |r| r.get(0)).optional().map_err(err)?;
        states.push(doc.map(|d| parse(&d)).transpose()?);
    }
    Ok(Some((header, states)))
}

fn push(tx: &Connection, tenant: &str, task: &TaskRef, at: u64) -> Result<()> {
    tx.execute(
        "INSERT INTO queue (tenant, task, run_at) VALUES (?1, ?2, ?3)",
        params![tenant, task.encode(), at as i64],
    )
    .map_err(err)?;
    Ok(())
}

/// Enqueues a task once per run; answers whether it went on the queue for any worker. With `chain` (worker,
/// lease until) and nothing chained yet, the task goes to that worker under a lease instead.
fn push_once(
    tx: &Connection,
    tenant: &str,
    task: &TaskRef,
    chain: Option<&(String, u64)>,
    chained: &mut Option<TaskRef>,
) -> Result<bool> {
    let n = tx
        .execute(
            "INSERT OR IGNORE INTO enqueued (tenant, run, task) VALUES (?1, ?2, ?3)",
            params![tenant, task.run, task.encode()],
        )
        .map_err(err)?;
    if n == 0 {
        return Ok(false);
    }
    match chain {
        Some((worker, until)) if chained.is_none() => {
            tx.execute(
                "INSERT INTO queue (tenant, task, run_at, lease_until, worker) VALUES (?1, ?2, 0, ?3, ?4)",
                params![tenant, task.encode(), *until as i64, worker],
            )
            .map_err(err)?;
            *chained = Some(task.clone());
            Ok(false)
        }
        _ => {
            push(tx, tenant, task, 0)?;
            Ok(true)
        }
    }
}

/// A run to create, queued for the creating thread.
struct CreateReq {
    tenant: String,
    id: String,
    status: &'static str,
    header: String,
    plan: String,
    pipeline: String,
    ready: Vec<TaskRef>,
    dedup: Option<(String, u64)>,
    max: Option<u32>,
}

type CreateJob = (CreateReq, tokio::sync::oneshot::Sender<Result<Created>>);

/// What `create_run` writes, inside the caller's transaction: de-duplication, the runs-in-flight limit, the
/// run and its first tasks. Writes nothing unless it answers `New` (the caller rolls back otherwise).
fn create_in(c: &Connection, r: &CreateReq) -> Result<Created> {
    let now = now_ms() as i64;
    if let Some((key, ttl)) = &r.dedup {
        let first: Option<String> = c
            .query_row(
                "SELECT run FROM dedup WHERE tenant = ?1 AND key = ?2 AND expires_ms > ?3",
                params![r.tenant, key, now],
                |row| row.get(0),
            )
            .optional()
            .map_err(err)?;
        if let Some(first) = first {
            return Ok(Created::Duplicate(first));
        }
        c.execute(
            "INSERT OR REPLACE INTO dedup (tenant, key, run, expires_ms) VALUES (?1, ?2, ?3, ?4)",
            params![r.tenant, key, r.id, now + *ttl as i64],
        )
        .map_err(err)?;
    }
    if let Some(max) = r.max {
        let live: i64 = c
            .query_row("SELECT n FROM live_counts WHERE tenant = ?1", params![r.tenant], |row| row.get(0))
            .optional()
            .map_err(err)?
            .unwrap_or(0);
        if live >= i64::from(max) {
            return Ok(Created::Full);
        }
    }
    c.execute(
        "INSERT INTO runs (tenant, id, status, header, plan, pipeline) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![r.tenant, r.id, r.status, r.header, r.plan, r.pipeline],
    )
    .map_err(err)?;
    for t in &r.ready {
        push_once(c, &r.tenant, t, None, &mut None)?;
    }
    Ok(Created::New)
}

/// The creating thread: takes every create waiting (up to 256) and writes them in one transaction whose
/// commit is synced to disk (group commit), each in a savepoint of its own, then answers each.
fn creator(conn: Arc<Mutex<Connection>>, jobs: std::sync::mpsc::Receiver<CreateJob>) {
    while let Ok(first) = jobs.recv() {
        let mut batch = vec![first];
        while batch.len() < 256 {
            match jobs.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let mut results: Vec<Result<Created>> = Vec::with_capacity(batch.len());
        let outcome = (|| -> Result<()> {
            let c = conn.lock().map_err(|_| err("the store's lock is poisoned"))?;
            // A new run is acknowledged (202) once this returns: its commit is synced to disk (which syncs
            // every commit before it too); the commits of steps stay `NORMAL` (a crash of the machine may
            // roll back the last ones, and those steps run again).
            c.pragma_update(None, "synchronous", "FULL").map_err(err)?;
            let done = (|| -> Result<()> {
                c.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
                for (req, _) in &batch {
                    c.execute_batch("SAVEPOINT one").map_err(err)?;
                    let r = create_in(&c, req);
                    if !matches!(r, Ok(Created::New)) {
                        c.execute_batch("ROLLBACK TO one").map_err(err)?;
                    }
                    c.execute_batch("RELEASE one").map_err(err)?;
                    results.push(r);
                }
                c.execute_batch("COMMIT").map_err(err)
            })();
            if done.is_err() {
                let _ = c.execute_batch("ROLLBACK");
            }
            let _ = c.pragma_update(None, "synchronous", "NORMAL");
            done
        })();
        let mut results = results.into_iter();
        for (_, reply) in batch {
            let r = match &outcome {
                Ok(()) => results.next().unwrap_or_else(|| Err(err("no result"))),
                Err(e) => Err(err(e)),
            };
            let _ = reply.send(r);
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    fn name(&self) -> &'static str {
        "embedded"
    }

    async fn create_run(&self, tenant: &str, run: &NewRun) -> Result<Created> {
        let req = CreateReq {
            tenant: tenant.to_string(),
            id: run.header.id.clone(),
            status: run.header.status.as_str(),
            header: json(&run.header)?,
            plan: json(&run.plan)?,
            pipeline: run.header.pipeline.clone(),
            ready: run.ready.clone(),
            dedup: run.dedup.clone(),
            max: run.max_in_flight,
        };
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sent = self.creates.lock().map_err(|_| err("the store's lock is poisoned"))?.send((req, tx));
        sent.map_err(|_| err("the store's writer stopped"))?;
        let created = rx.await.map_err(|_| err("the store's writer stopped"))??;
        if created == Created::New {
            self.wake();
        }
        Ok(created)
    }

    async fn list_runs(&self, tenant: &str, q: &RunQuery) -> Result<(Vec<RunHeader>, Option<String>)> {
        let (tenant, q) = (tenant.to_string(), q.clone());
        self.with(move |c| {
            let limit = q.limit.clamp(1, 1000);
            let mut stmt = c
                .prepare_cached(
                    "SELECT status, header FROM runs WHERE tenant = ?1 AND (?2 IS NULL OR id < ?2)
                     AND (?3 IS NULL OR pipeline = ?3) AND (?4 IS NULL OR status = ?4) ORDER BY id DESC LIMIT ?5",
                )
                .map_err(err)?;
            let rows = stmt
                .query_map(
                    params![tenant, q.before, q.pipeline, q.status.map(|s| s.as_str()), (limit + 1) as i64],
                    |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)),
                )
                .map_err(err)?;
            let mut out = Vec::new();
            for row in rows {
                let (status, header) = row.map_err(err)?;
                out.push(with_status(parse(&header)?, &status)?);
            }
            let next = if out.len() > limit {
                out.truncate(limit);
                out.last().map(|h| h.id.clone())
            } else {
                None
            };
            Ok((out, next))
        })
        .await
    }

    async fn queue_depth(&self, tenant: &str) -> Result<u64> {
        let tenant = tenant.to_string();
        self.with(move |c| {
            c.query_row("SELECT COUNT(*) FROM queue WHERE tenant = ?1 AND lease_until IS NULL", params![tenant], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(err)
        })
        .await
    }

    async fn claim(&self, worker: &str, lease_ms: u64) -> Result<Option<Claimed>> {
        let worker = worker.to_string();
        self.with(move |c| {
            let now = now_ms() as i64;
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            let row: Option<(i64, String, String)> = tx
                .query_row(
                    "SELECT q.seq, q.tenant, q.task FROM queue q LEFT JOIN served s ON s.tenant = q.tenant
                     WHERE (q.lease_until IS NULL AND q.run_at <= ?1) OR q.lease_until <= ?1
                     ORDER BY COALESCE(s.turn, 0), q.seq LIMIT 1",
                    params![now],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(err)?;
            let Some((seq, tenant, task)) = row else { return Ok(None) };
            tx.execute(
                "UPDATE queue SET lease_until = ?1, worker = ?2 WHERE seq = ?3",
                params![now + lease_ms as i64, worker, seq],
            )
            .map_err(err)?;
            tx.execute(
                "INSERT INTO served (tenant, turn) VALUES (?1, (SELECT COALESCE(MAX(turn), 0) + 1 FROM served))
                 ON CONFLICT (tenant) DO UPDATE SET turn = (SELECT COALESCE(MAX(turn), 0) + 1 FROM served)",
                params![tenant],
            )
            .map_err(err)?;
            tx.commit().map_err(err)?;
            let task = TaskRef::decode(&task).ok_or_else(|| StoreError::Corrupt(format!("task {task:?}")))?;
            Ok(Some(Claimed { tenant, task, worker }))
        })
        .await
    }

    async fn wait_for_work(&self, max: Duration) {
        let seen = self.generation.load(Ordering::SeqCst);
        let notified = self.notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.generation.load(Ordering::SeqCst) != seen {
            return;
        }
        // Sleep no longer than the next timer or lease expiry.
        let next = self
            .with(|c| {
                c.query_row("SELECT MIN(COALESCE(lease_until, run_at)) FROM queue", [], |r| r.get::<_, Option<i64>>(0))
                    .map_err(err)
            })
            .await
            .ok()
            .flatten();
        let wait = match next {
            Some(at) => Duration::from_millis((at - now_ms() as i64).max(0) as u64).min(max),
            None => max,
        };
        if wait.is_zero() {
            return;
        }
        let _ = tokio::time::timeout(wait, notified).await;
    }

    async fn extend(&self, worker: &str, claims: &[Claimed], lease_ms: u64) -> Result<u32> {
        let worker = worker.to_string();
        let claims = claims.to_vec();
        self.with(move |c| {
            let until = (now_ms() + lease_ms) as i64;
            let tx = c.transaction().map_err(err)?;
            let mut held = 0usize;
            for cl in &claims {
                held += tx
                    .execute(
                        "UPDATE queue SET lease_until = ?1 WHERE tenant = ?2 AND task = ?3 AND worker = ?4 AND lease_until IS NOT NULL",
                        params![until, cl.tenant, cl.task.encode(), worker],
                    )
                    .map_err(err)?;
            }
            tx.commit().map_err(err)?;
            Ok(u32::try_from(held).unwrap_or(u32::MAX))
        })
        .await
    }

    async fn run(&self, tenant: &str, run: &str) -> Result<Option<(RunHeader, serde_json::Value)>> {
        let (tenant, run) = (tenant.to_string(), run.to_string());
        self.with(move |c| {
            let row: Option<(String, String, String)> = c
                .query_row(
                    "SELECT status, header, plan FROM runs WHERE tenant = ?1 AND id = ?2",
                    params![tenant, run],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()
                .map_err(err)?;
            match row {
                Some((s, h, p)) => Ok(Some((with_status(parse(&h)?, &s)?, parse(&p)?))),
                None => Ok(None),
            }
        })
        .await
    }

    async fn plan(&self, tenant: &str, run: &str) -> Result<Option<serde_json::Value>> {
        let (tenant, run) = (tenant.to_string(), run.to_string());
        self.with(move |c| {
            let plan: Option<String> = c
                .query_row("SELECT plan FROM runs WHERE tenant = ?1 AND id = ?2", params![tenant, run], |r| r.get(0))
                .optional()
                .map_err(err)?;
            plan.map(|p| parse(&p)).transpose()
        })
        .await
    }

    async fn load(
        &self,
        tenant: &str,
        run: &str,
        keys: &[String],
    ) -> Result<Option<(RunHeader, Vec<Option<StepState>>)>> {
        let (tenant, run, keys) = (tenant.to_string(), run.to_string(), keys.to_vec());
        self.with(move |c| read_load(c, &tenant, &run, &keys)).await
    }

    async fn states(&self, tenant: &str, run: &str, keys: &[String]) -> Result<Vec<Option<StepState>>> {
        let (tenant, run, keys) = (tenant.to_string(), run.to_string(), keys.to_vec());
        self.with(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT doc FROM states WHERE tenant = ?1 AND run = ?2 AND key = ?3").map_err(err)?;
            let mut out = Vec::with_capacity(keys.len());
            for k in &keys {
                let doc: Option<String> =
                    stmt.query_row(params![tenant, run, k], |r| r.get(0)).optional().map_err(err)?;
                out.push(match doc {
                    Some(d) => Some(parse(&d)?),
                    None => None,
                });
            }
            Ok(out)
        })
        .await
    }

    async fn all_states(&self, tenant: &str, run: &str) -> Result<Vec<(String, StepState)>> {
        let (tenant, run) = (tenant.to_string(), run.to_string());
        self.with(move |c| {
            let mut stmt =
                c.prepare_cached("SELECT key, doc FROM states WHERE tenant = ?1 AND run = ?2").map_err(err)?;
            let rows = stmt
                .query_map(params![tenant, run], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
                .map_err(err)?;
            let mut out = Vec::new();
            for row in rows {
                let (k, d) = row.map_err(err)?;
                out.push((k, parse(&d)?));
            }
            Ok(out)
        })
        .await
    }

    async fn commit(&self, tenant: &str, run: &str, claimed: Option<&Claimed>, c: Commit) -> Result<CommitResult> {
        let tenant = tenant.to_string();
        let run_id = run.to_string();
        let claimed = claimed.cloned();
        let chain = c.chain.clone();
        let res = self
            .with(move |conn| {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
                let mut result = CommitResult::default();
                let mut woke = c.schedule.is_some();
                // A replay applies once: the dead letter it consumes must still be there.
                if let Some(id) = &c.remove_dead_letter {
                    let n = tx
                        .execute("DELETE FROM dead_letters WHERE tenant = ?1 AND id = ?2", params![tenant, id])
                        .map_err(err)?;
                    if n == 0 {
                        return Ok((CommitResult { stale: true, ..CommitResult::default() }, false));
                    }
                }
                // Fencing: a commit that releases a claim applies only while this worker still holds it.
                if let (true, Some(cl)) = (c.release, &claimed) {
                    let held = tx
                        .execute(
                            "DELETE FROM queue WHERE tenant = ?1 AND task = ?2 AND worker = ?3 AND lease_until IS NOT NULL",
                            params![tenant, cl.task.encode(), cl.worker],
                        )
                        .map_err(err)?;
                    if held == 0 {
                        // Dropping the transaction rolls it back: nothing of this commit is applied.
                        return Ok((CommitResult { stale: true, ..CommitResult::default() }, false));
                    }
                }
                for t in &c.forget {
                    tx.execute(
                        "DELETE FROM enqueued WHERE tenant = ?1 AND run = ?2 AND task = ?3",
                        params![tenant, run_id, t.encode()],
                    )
                    .map_err(err)?;
                }
                for t in &c.reopen {
                    match t.index {
                        None => tx.execute(
                            "DELETE FROM terminal WHERE tenant = ?1 AND run = ?2 AND step = ?3",
                            params![tenant, run_id, t.step],
                        ),
                        Some(i) => tx.execute(
                            "DELETE FROM items_done WHERE tenant = ?1 AND run = ?2 AND step = ?3 AND idx = ?4",
                            params![tenant, run_id, t.step, i],
                        ),
                    }
                    .map_err(err)?;
                    tx.execute(
                        "DELETE FROM enqueued WHERE tenant = ?1 AND run = ?2 AND task = ?3",
                        params![tenant, run_id, t.encode()],
                    )
                    .map_err(err)?;
                    // Copies still waiting (a retry timer, the queue) go: the task is enqueued afresh if at all.
                    tx.execute(
                        "DELETE FROM queue WHERE tenant = ?1 AND task = ?2 AND lease_until IS NULL",
                        params![tenant, t.encode()],
                    )
                    .map_err(err)?;
                }
                for (key, state) in &c.states {
                    if c.guarded {
                        let closed: Option<i64> = tx
                            .query_row(
                                "SELECT 1 FROM terminal WHERE tenant = ?1 AND run = ?2 AND step = ?3",
                                params![tenant, run_id, key],
                                |r| r.get(0),
                            )
                            .optional()
                            .map_err(err)?;
                        if closed.is_some() {
                            continue;
                        }
                    }
                    tx.execute(
                        "INSERT INTO states (tenant, run, key, doc) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (tenant, run, key) DO UPDATE SET doc = excluded.doc",
                        params![tenant, run_id, key, json(state)?],
                    )
                    .map_err(err)?;
                }
                for step in &c.terminal {
                    tx.execute(
                        "INSERT OR IGNORE INTO terminal (tenant, run, step) VALUES (?1, ?2, ?3)",
                        params![tenant, run_id, step],
                    )
                    .map_err(err)?;
                }
                for (key, state) in &c.close {
                    let n = tx
                        .execute(
                            "INSERT OR IGNORE INTO terminal (tenant, run, step) VALUES (?1, ?2, ?3)",
                            params![tenant, run_id, key],
                        )
                        .map_err(err)?;
                    if n == 1 {
                        tx.execute(
                            "INSERT INTO states (tenant, run, key, doc) VALUES (?1, ?2, ?3, ?4)
                             ON CONFLICT (tenant, run, key) DO UPDATE SET doc = excluded.doc",
                            params![tenant, run_id, key, json(state)?],
                        )
                        .map_err(err)?;
                    }
                }
                if let Some((step, idx)) = &c.item_done {
                    tx.execute(
                        "INSERT OR IGNORE INTO items_done (tenant, run, step, idx) VALUES (?1, ?2, ?3, ?4)",
                        params![tenant, run_id, step, idx],
                    )
                    .map_err(err)?;
                    result.items_done = tx
                        .query_row(
                            "SELECT COUNT(*) FROM items_done WHERE tenant = ?1 AND run = ?2 AND step = ?3",
                            params![tenant, run_id, step],
                            |r| r.get::<_, u32>(0),
                        )
                        .map_err(err)?;
                }
                if let Some((items, task)) = &c.finalize {
                    if result.items_done >= *items {
                        // Past the once-per-run rule: the step's task was enqueued once already.
                        match &chain {
                            Some((worker, until)) if result.chained.is_none() => {
                                tx.execute(
                                    "INSERT INTO queue (tenant, task, run_at, lease_until, worker) VALUES (?1, ?2, 0, ?3, ?4)",
                                    params![tenant, task.encode(), *until as i64, worker],
                                )
                                .map_err(err)?;
                                result.chained = Some(task.clone());
                            }
                            _ => {
                                push(&tx, &tenant, task, 0)?;
                                woke = true;
                            }
                        }
                    }
                }
                for (task, deps) in &c.candidates {
                    let mut all = true;
                    for d in deps {
                        let found: Option<i64> = tx
                            .query_row(
                                "SELECT 1 FROM terminal WHERE tenant = ?1 AND run = ?2 AND step = ?3",
                                params![tenant, run_id, d],
                                |r| r.get(0),
                            )
                            .optional()
                            .map_err(err)?;
                        if found.is_none() {
                            all = false;
                            break;
                        }
                    }
                    if all {
                        woke |= push_once(&tx, &tenant, task, chain.as_ref(), &mut result.chained)?;
                    }
                }
                for task in &c.enqueue {
                    woke |= push_once(&tx, &tenant, task, chain.as_ref(), &mut result.chained)?;
                }
                if let Some((task, at)) = &c.schedule {
                    push(&tx, &tenant, task, *at)?;
                }
                if let Some((expected, header)) = &c.run {
                    let n = tx
                        .execute(
                            "UPDATE runs SET header = ?1, status = ?2,
                             finished_ms = CASE WHEN ?2 IN ('succeeded', 'failed', 'cancelled') THEN ?6 ELSE NULL END
                             WHERE tenant = ?3 AND id = ?4 AND status = ?5",
                            params![
                                json(header)?,
                                header.status.as_str(),
                                tenant,
                                header.id,
                                expected.as_str(),
                                now_ms() as i64
                            ],
                        )
                        .map_err(err)?;
                    result.run_written = n == 1;
                }
                if let Some(dl) = &c.dead_letter {
                    tx.execute(
                        "INSERT OR REPLACE INTO dead_letters (tenant, id, created_ms, doc) VALUES (?1, ?2, ?3, ?4)",
                        params![tenant, dl.id, now_ms() as i64, json(dl)?],
                    )
                    .map_err(err)?;
                }
                if let (Some((ids, header)), false) = (&c.finish, result.run_written) {
                    let terminal: usize = tx
                        .query_row(
                            "SELECT COUNT(*) FROM terminal WHERE tenant = ?1 AND run = ?2 AND step IN (SELECT value FROM json_each(?3))",
                            params![tenant, run_id, json(ids)?],
                            |r| r.get(0),
                        )
                        .map_err(err)?;
                    if terminal >= ids.len() {
                        let n = tx
                            .execute(
                                "UPDATE runs SET header = ?1, status = 'succeeded', finished_ms = ?4
                                 WHERE tenant = ?2 AND id = ?3 AND status = 'running'",
                                params![json(header)?, tenant, run_id, now_ms() as i64],
                            )
                            .map_err(err)?;
                        result.run_written = n == 1;
                    }
                }
                if let Some(task) = &result.chained {
                    let encoded = task.encode();
                    if let Some((_, keys)) = c.chain_loads.iter().find(|(t, _)| *t == encoded) {
                        result.chained_load = read_load(&tx, &tenant, &run_id, keys)?;
                    }
                }
                tx.commit().map_err(err)?;
                Ok((result, woke))
            })
            .await?;
        if res.1 {
            self.wake();
        }
        Ok(res.0)
    }

    async fn dead_letters_page(&self, tenant: &str, before: Option<&str>, limit: usize) -> Result<Vec<DeadLetter>> {
        let (tenant, before) = (tenant.to_string(), before.map(str::to_string));
        let limit = limit.clamp(1, 10_000) as i64;
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT doc FROM dead_letters WHERE tenant = ?1 AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
                )
                .map_err(err)?;
            let rows = stmt.query_map(params![tenant, before, limit], |r| r.get::<_, String>(0)).map_err(err)?;
            let mut out = Vec::new();
            for r in rows {
                out.push(parse(&r.map_err(err)?)?);
            }
            Ok(out)
        })
        .await
    }

    async fn dead_letter(&self, tenant: &str, id: &str) -> Result<Option<DeadLetter>> {
        let (tenant, id) = (tenant.to_string(), id.to_string());
        self.with(move |c| {
            let doc: Option<String> = c
                .query_row("SELECT doc FROM dead_letters WHERE tenant = ?1 AND id = ?2", params![tenant, id], |r| {
                    r.get(0)
                })
                .optional()
                .map_err(err)?;
            doc.map(|d| parse(&d)).transpose()
        })
        .await
    }

    async fn rate_limit(&self, tenant: &str, name: &str, rate: f64, burst: u32) -> Result<Option<Duration>> {
        let mut rates = self.rates.lock().map_err(|_| err("the rate limits' lock is poisoned"))?;
        let now = now_ms() as f64;
        let key = (tenant.to_string(), name.to_string());
        match super::gcra(rates.get(&key).copied(), now, rate, burst) {
            Ok(tat) => {
                if rates.len() > 100_000 {
                    rates.retain(|_, t| *t > now);
                }
                rates.insert(key, tat);
                Ok(None)
            }
            Err(wait) => Ok(Some(wait)),
        }
    }

    async fn housekeeping(&self) -> Result<u64> {
        let cutoff = now_ms().saturating_sub(self.retention.as_millis() as u64) as i64;
        let dl_cutoff = now_ms().saturating_sub(super::DEAD_LETTER_RETENTION.as_millis() as u64) as i64;
        self.with(move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate).map_err(err)?;
            tx.execute_batch("CREATE TEMP TABLE IF NOT EXISTS gone (tenant TEXT, id TEXT); DELETE FROM gone;").map_err(err)?;
            // At most 1,000 runs a round, so the store is never locked for long.
            let n = tx
                .execute(
                    "INSERT INTO gone SELECT tenant, id FROM runs WHERE finished_ms IS NOT NULL AND finished_ms < ?1 LIMIT 1000",
                    params![cutoff],
                )
                .map_err(err)?;
            for table in ["states", "terminal", "enqueued", "items_done"] {
                tx.execute(&format!("DELETE FROM {table} WHERE (tenant, run) IN (SELECT tenant, id FROM gone)"), []).map_err(err)?;
            }
            tx.execute("DELETE FROM runs WHERE (tenant, id) IN (SELECT tenant, id FROM gone)", []).map_err(err)?;
            tx.execute("DELETE FROM dead_letters WHERE created_ms < ?1", params![dl_cutoff]).map_err(err)?;
            tx.execute("DELETE FROM dedup WHERE expires_ms < ?1", params![now_ms() as i64]).map_err(err)?;
            tx.commit().map_err(err)?;
            Ok(n as u64)
        })
        .await
    }

    async fn commands_executed(&self) -> Result<u64> {
        Ok(STATEMENTS.load(Ordering::Relaxed))
    }
}

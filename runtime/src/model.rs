//! Run state as stored: runs, steps, items, attempts, dead letters, and the tasks that move them.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One unit of work: a step of a run, or one item of a `for_each` step.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TaskRef {
    pub run: String,
    pub step: String,
    pub index: Option<u32>,
}

impl TaskRef {
    pub fn step(run: &str, step: &str) -> TaskRef {
        TaskRef { run: run.to_string(), step: step.to_string(), index: None }
    }
    pub fn item(run: &str, step: &str, index: u32) -> TaskRef {
        TaskRef { run: run.to_string(), step: step.to_string(), index: Some(index) }
    }
    /// `run|step` or `run|step|index`: ids never contain `|`.
    pub fn encode(&self) -> String {
        match self.index {
            Some(i) => format!("{}|{}|{i}", self.run, self.step),
            None => format!("{}|{}", self.run, self.step),
        }
    }
    pub fn decode(s: &str) -> Option<TaskRef> {
        let mut parts = s.split('|');
        let run = parts.next()?.to_string();
        let step = parts.next()?.to_string();
        let index = match parts.next() {
            Some(i) => Some(i.parse().ok()?),
            None => None,
        };
        Some(TaskRef { run, step, index })
    }
    /// The key of this task's state document: `step` or `step#index`.
    pub fn state_key(&self) -> String {
        state_key(&self.step, self.index)
    }
}

pub fn state_key(step: &str, index: Option<u32>) -> String {
    match index {
        Some(i) => format!("{step}#{i}"),
        None => step.to_string(),
    }
}

/// A task claimed by a worker, under a lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub tenant: String,
    pub task: TaskRef,
    /// The worker holding the lease.
    pub worker: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl RunStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, RunStatus::Succeeded | RunStatus::Failed | RunStatus::Cancelled)
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    #[default]
    Pending,
    Running,
    Retrying,
    Waiting,
    Succeeded,
    Failed,
    Skipped,
    Cancelled,
}

impl StepStatus {
    pub fn is_terminal(self) -> bool {
        matches!(self, StepStatus::Succeeded | StepStatus::Failed | StepStatus::Skipped | StepStatus::Cancelled)
    }
}

/// An error as recorded: its class and a message (secrets redacted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorRecord {
    pub class: String,
    pub message: String,
}

/// One try of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    pub number: u32,
    pub started_at: String,
    pub finished_at: String,
    pub error: Option<ErrorRecord>,
}

/// The state document of a step or of one item.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct StepState {
    pub status: StepStatus,
    #[serde(default)]
    pub output: Value,
    #[serde(default)]
    pub attempts: Vec<Attempt>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_letter: Option<String>,
    /// For a `for_each` step: how many items it fanned out to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub items: Option<u32>,
    /// For a waiting `delay` or a retry: when the task runs again (ms since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_until: Option<u64>,
    /// The last retry delay, for `decorrelated` jitter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delay_ms: Option<u64>,
    /// Why a step was skipped or a run stopped (`if`, `filtered`, `dependencies skipped`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Attempts made before the last replay: a replayed step gets its whole retry budget again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub attempt_base: u32,
    /// Set by a replay: the step's success may be the run's last (its dependants already ran).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub replayed: bool,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where a run failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunError {
    pub step: String,
    pub class: String,
    pub message: String,
}

/// The header of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunHeader {
    pub id: String,
    pub pipeline: String,
    pub version: u32,
    pub tenant: String,
    pub status: RunStatus,
    pub trigger: Value,
    pub started_at: String,
    pub started_at_ms: u64,
    #[serde(default)]
    pub finished_at: Option<String>,
    #[serde(default)]
    pub error: Option<RunError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A step that failed for good, kept to be inspected and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: String,
    pub tenant: String,
    pub run_id: String,
    pub step: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// The rendered inputs, secrets redacted.
    pub inputs: Value,
    pub error: ErrorRecord,
    pub attempts: Vec<Attempt>,
    pub created_at: String,
}

/// One atomic change of a run, applied by [`crate::store::Store::commit`].
#[derive(Debug, Clone, Default)]
pub struct Commit {
    /// State documents to write, by state key.
    pub states: Vec<(String, StepState)>,
    /// Steps that became terminal (added to the run's terminal set).
    pub terminal: Vec<String>,
    /// Skip writing `states` of steps that are terminal already (closed by a failing run meanwhile): for
    /// commits that keep a step going (a retry, a wait, a fan-out), never for ones that finish it.
    pub guarded: bool,
    /// Steps to close (cancelled, or skipped by a filter): each state is written and the step made terminal
    /// only if the step is not terminal yet, so a step that finished meanwhile keeps its result.
    pub close: Vec<(String, StepState)>,
    /// An item that finished: added to its step's done-items set; the result says how many are done.
    pub item_done: Option<(String, u32)>,
    /// `(items, step task)`: when `item_done` brings the step's done items to `items`, the step's task is
    /// queued (again, past the once-per-run rule) to gather the outputs.
    pub finalize: Option<(u32, TaskRef)>,
    /// Tasks to enqueue once all the listed steps are terminal; each at most once per run.
    pub candidates: Vec<(TaskRef, Vec<String>)>,
    /// Tasks to enqueue now, each at most once per run.
    pub enqueue: Vec<TaskRef>,
    /// A task to run again at a time (a retry, a delay, a replay): not de-duplicated.
    pub schedule: Option<(TaskRef, u64)>,
    /// The new run header, written only if the run's current status is the given one.
    pub run: Option<(RunStatus, RunHeader)>,
    pub dead_letter: Option<DeadLetter>,
    /// A dead letter that is replayed: removed.
    pub remove_dead_letter: Option<String>,
    /// Tasks that were dropped (an item of a stopped run): no longer counted as enqueued, so a replay can
    /// enqueue them again.
    pub forget: Vec<TaskRef>,
    /// Tasks to run again from the start (a replay): no longer terminal, done or enqueued, and waiting
    /// copies removed.
    pub reopen: Vec<TaskRef>,
    /// Release the committing worker's claim on its task.
    pub release: bool,
    /// Hand the first task this commit makes ready straight to this worker, leased until the given time (ms),
    /// instead of putting it on the ready list: a chain runs without a trip through the queue.
    pub chain: Option<(String, u64)>,
    /// For each task this commit may chain (encoded): the state keys it reads, which the commit then reads
    /// for it with the run header (see [`CommitResult::chained_load`]).
    pub chain_loads: Vec<(String, Vec<String>)>,
    /// The run succeeds (this header is written) when, after this commit, every listed main step is terminal
    /// and the run is still running. Given by commits of steps that no main step waits for.
    pub finish: Option<(Vec<String>, RunHeader)>,
}

/// What a commit observed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CommitResult {
    /// Items of `item_done`'s step that are done, after this commit.
    pub items_done: u32,
    /// Whether the run header was written (by `run`, or by `finish`).
    pub run_written: bool,
    /// The task handed to the committing worker (see [`Commit::chain`]).
    pub chained: Option<TaskRef>,
    /// The run header and the chained task's state documents, read after the commit's writes.
    pub chained_load: Option<(RunHeader, Vec<Option<StepState>>)>,
    /// The commit released a claim this worker no longer held (its lease went to another worker): nothing
    /// was applied.
    pub stale: bool,
}

/// A new run: its header, the plan it runs (snapshot), and the tasks ready at once.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub header: RunHeader,
    pub plan: Value,
    pub ready: Vec<TaskRef>,
    /// `(key, ttl_ms)`: the run is created only if no run of the tenant holds this key yet (an inbound
    /// `webhook-id`, an `Idempotency-Key`, a schedule tick); the key is then held for `ttl_ms`.
    pub dedup: Option<(String, u64)>,
    /// Refuse the run when the tenant already has this many runs queued or running.
    pub max_in_flight: Option<u32>,
}

impl NewRun {
    pub fn new(header: RunHeader, plan: Value, ready: Vec<TaskRef>) -> NewRun {
        NewRun { header, plan, ready, dedup: None, max_in_flight: None }
    }
}

/// What creating a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// Stored, durable.
    New,
    /// Another run holds the de-duplication key: its id; nothing was stored.
    Duplicate(String),
    /// The tenant has `max_in_flight` runs queued or running already; nothing was stored.
    Full,
}

/// A page of a tenant's runs, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub pipeline: Option<String>,
    pub status: Option<RunStatus>,
    /// Runs older than this run id (the `next` of the previous page).
    pub before: Option<String>,
    pub limit: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_refs_round_trip() {
        for t in [TaskRef::step("run_1", "a"), TaskRef::item("run_1", "b", 7)] {
            assert_eq!(TaskRef::decode(&t.encode()), Some(t.clone()));
        }
        assert_eq!(TaskRef::decode("x"), None);
        assert_eq!(TaskRef::decode("r|s|zz"), None);
    }
}

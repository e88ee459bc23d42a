//! What a workflow remembers between runs: the history of its runs, the
//! incremental cursors of its reads, and the idempotency keys of the writes
//! it has completed.
//!
//! The store is a trait so that another backend (PostgreSQL, for teams that
//! share state across machines) can follow the embedded SQLite one. Nothing
//! secret is ever handed to it: run inputs and errors are masked before they
//! are saved, and idempotency keys are stored as digests.

mod sqlite;

pub use sqlite::SqliteStore;

use std::path::{Path, PathBuf};

/// A state store failure, ready to print.
#[derive(Debug, Clone, thiserror::Error)]
#[error("state store {path}: {message}")]
pub struct StateError {
    /// The store.
    pub path: String,
    /// What went wrong.
    pub message: String,
}

/// A result of the state store.
pub type StateResult<T> = Result<T, StateError>;

/// One run as the history keeps it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunRecord {
    /// The run's ID (sortable by start time).
    pub id: String,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow file.
    pub file: String,
    /// `running`, `succeeded`, `failed` or `interrupted`.
    pub status: String,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// When it ended.
    pub ended_at: Option<String>,
    /// The inputs, secrets masked (JSON).
    pub inputs: serde_json::Value,
    /// The run it resumed, if any.
    pub resumed_from: Option<String>,
    /// The final report (JSON), once the run has ended.
    pub report: Option<serde_json::Value>,
    /// Why it failed.
    pub error: Option<String>,
}

/// An incremental cursor.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CursorRecord {
    /// The step that reads incrementally.
    pub step: String,
    /// The last value seen by a successful run.
    pub value: String,
    /// When it last moved.
    pub updated_at: String,
}

/// How far a paginated read of a run got with every record of its pages
/// handled.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Checkpoint {
    /// The reading step.
    pub step: String,
    /// A digest of the parameters the read was sent with (its window): a
    /// resumed run that would read another window starts from the first page.
    pub window: String,
    /// Leading pages handled: a resumed run reads on after them.
    pub pages: u64,
    /// The latest cursor value the read had seen, as text.
    pub cursor: Option<String>,
}

/// What the store knows of a write's idempotency key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// The write completed.
    Done,
    /// The request was sent and no answer came (or the process died while
    /// it was in flight): the write may or may not have happened.
    Uncertain,
    /// It is being sent right now, by this run or by another one still
    /// running.
    Sending,
}

/// Which idempotency keys a reset forgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForgetKeys {
    /// None: writes that completed or may have are never sent again.
    None,
    /// Those of uncertain writes (checked in the API and found missing):
    /// the next run sends them, and skips the completed ones.
    Uncertain,
    /// All of them: the next run sends every write again.
    All,
}

/// How a claimed write ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyOutcome {
    /// It completed: never send it again.
    Done,
    /// Its outcome is unknown.
    Uncertain,
    /// It certainly did not happen (refused, or never sent): forget the key
    /// so that a later run tries again.
    Released,
}

/// Keys and cursors per step of one workflow, for `flow state show`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyCounts {
    /// The write step.
    pub step: String,
    /// Completed writes.
    pub done: u64,
    /// Writes of unknown outcome.
    pub uncertain: u64,
}

/// How long the history keeps runs.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Runs older than this many days are removed...
    pub days: u32,
    /// ...and so are all but this many most recent runs.
    pub runs: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { days: 30, runs: 1000 }
    }
}

/// A place that keeps run history, cursors and idempotency keys.
///
/// Every method is one transaction: a crash at any instant leaves the store
/// as it was before the call or after it.
pub trait StateStore: Send + Sync {
    /// Records a new run as `running`.
    fn begin_run(&self, run: &RunRecord) -> StateResult<()>;
    /// Records how a run ended, with its report.
    fn finish_run(&self, id: &str, status: &str, report: &serde_json::Value, error: Option<&str>) -> StateResult<()>;
    /// Runs that say `running` but whose process is gone become `interrupted`.
    fn mark_interrupted(&self) -> StateResult<()>;
    /// The most recent runs, newest first, of one workflow or of all.
    fn runs(&self, workflow: Option<&str>, limit: usize) -> StateResult<Vec<RunRecord>>;
    /// One run by ID (or by a unique prefix of it).
    fn run(&self, id: &str) -> StateResult<Option<RunRecord>>;
    /// The latest run of a workflow, if it failed or was interrupted.
    fn resumable(&self, workflow: &str) -> StateResult<Option<RunRecord>>;
    /// Removes old runs; returns how many.
    fn prune(&self, keep: Retention) -> StateResult<usize>;

    /// The cursors of a workflow.
    fn cursors(&self, workflow: &str) -> StateResult<Vec<CursorRecord>>;
    /// Moves cursors, all in one transaction.
    fn set_cursors(&self, workflow: &str, values: &[(String, String)]) -> StateResult<()>;

    /// What the store knows of a write's key.
    fn key_state(&self, workflow: &str, step: &str, key: &str) -> StateResult<Option<KeyState>>;
    /// Saves how far a read of a run got.
    fn set_checkpoint(&self, run: &str, checkpoint: &Checkpoint) -> StateResult<()>;
    /// The checkpoints of a run's reads.
    fn checkpoints(&self, run: &str) -> StateResult<Vec<Checkpoint>>;
    /// Claims a write for `run` before it is sent, in one step, so that two
    /// runs (or two records of one run) never both send it: None when the
    /// claim is this run's, otherwise why it is not. With `retake`, a write
    /// left uncertain is claimed again (it may safely be sent twice). A
    /// crash before [`StateStore::settle_key`] leaves the key uncertain.
    fn claim_key(
        &self,
        workflow: &str,
        step: &str,
        key: &str,
        run: &str,
        retake: bool,
    ) -> StateResult<Option<KeyState>>;
    /// Records how a claimed write ended.
    fn settle_key(&self, workflow: &str, step: &str, key: &str, outcome: KeyOutcome) -> StateResult<()>;
    /// Completed and uncertain writes per step.
    fn key_counts(&self, workflow: &str) -> StateResult<Vec<KeyCounts>>;

    /// Forgets cursors (of one step, or all) and the idempotency keys
    /// `keys` names. Returns how many cursors and keys went.
    fn reset(&self, workflow: &str, step: Option<&str>, keys: ForgetKeys) -> StateResult<(usize, usize)>;
}

/// The default store of a workflow: `.flow/state.db` beside it, or
/// `.flow/sandbox.db` for runs against the simulators, so that trying a
/// workflow in the sandbox never moves the cursors of the real accounts.
pub fn default_path(workflow: &Path, sandbox: bool) -> PathBuf {
    let dir = workflow.parent().unwrap_or_else(|| Path::new("."));
    dir.join(".flow").join(if sandbox { "sandbox.db" } else { "state.db" })
}

/// A new run ID: the start time, then random letters (`20261128-221530-k3x9`).
pub fn new_run_id() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    let suffix: String = (0..4)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{}-{suffix}", chrono::Utc::now().format("%Y%m%d-%H%M%S"))
}

/// The digest an idempotency key is stored as: the key may hold personal
/// data (a phone, an e-mail), the store only needs to recognise it.
pub fn key_digest(key: &str) -> String {
    crate::lua::md5_hex(key.as_bytes())
}

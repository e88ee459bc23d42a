//! What a run reports: per-step status and counts, the outputs, the error.
//! Printed for people, or as one JSON document with `--output json`.

use indexmap::IndexMap;
use serde::Serialize;

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StepStatus {
    /// Not started yet.
    Pending,
    /// Running.
    Running,
    /// Done.
    Succeeded,
    /// Failed.
    Failed,
    /// Its condition was false, or the step it reads from was skipped.
    Skipped,
    /// The run stopped before the step could finish.
    Cancelled,
}

/// The fields templates may read from `steps.<id>`.
pub const STEP_FIELDS: &[&str] = &[
    "status",
    "count",
    "rejected",
    "failed",
    "skipped",
    "uncertain",
    "duration_ms",
    "error",
    "first",
];

/// The result of one step.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// The step's kind (`read`, `lua`, `write`, `for_each`).
    pub kind: &'static str,
    /// Where the step is.
    pub status: StepStatus,
    /// Records the step produced (read, transformed, written), or items a
    /// `for_each` ran.
    pub count: u64,
    /// Records a script rejected under `on_error: continue`.
    pub rejected: u64,
    /// `for_each` items that failed under `on_error: continue`.
    pub failed: u64,
    /// Writes skipped because their key completed before.
    pub skipped: u64,
    /// Writes not sent because an earlier attempt's outcome is unknown.
    pub uncertain: u64,
    /// How long the step took.
    pub duration_ms: u64,
    /// Why the step failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The first record the step produced (`steps.<id>.first` in
    /// templates); kept out of summaries and history, since records may hold
    /// personal data.
    #[serde(skip)]
    pub first: Option<serde_json::Value>,
    /// The nested steps of a `for_each`, summed over its items.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub steps: IndexMap<String, StepReport>,
}

impl StepReport {
    /// A step that has not started.
    pub fn pending(kind: &'static str) -> Self {
        StepReport {
            kind,
            status: StepStatus::Pending,
            count: 0,
            rejected: 0,
            failed: 0,
            skipped: 0,
            uncertain: 0,
            duration_ms: 0,
            error: None,
            first: None,
            steps: IndexMap::new(),
        }
    }

    /// Adds another item's result of the same nested step.
    pub fn absorb(&mut self, other: &StepReport) {
        self.count += other.count;
        self.rejected += other.rejected;
        self.failed += other.failed;
        self.skipped += other.skipped;
        self.uncertain += other.uncertain;
        self.duration_ms += other.duration_ms;
        let rank = |s: StepStatus| match s {
            StepStatus::Failed => 5,
            StepStatus::Cancelled => 4,
            StepStatus::Running => 3,
            StepStatus::Succeeded => 2,
            StepStatus::Skipped => 1,
            StepStatus::Pending => 0,
        };
        if rank(other.status) > rank(self.status) {
            self.status = other.status;
        }
        if self.error.is_none() {
            self.error.clone_from(&other.error);
        }
        for (id, r) in &other.steps {
            match self.steps.get_mut(id) {
                Some(mine) => mine.absorb(r),
                None => {
                    self.steps.insert(id.clone(), r.clone());
                }
            }
        }
    }
}

/// How the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    /// Every step succeeded, was skipped, or failed under `on_error: continue`.
    Succeeded,
    /// A step failed and the run stopped.
    Failed,
    /// The run was asked to stop (Ctrl-C, SIGTERM) and did, after the
    /// requests under way; `flow run --resume` goes on from there.
    Interrupted,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// The run's ID in the state store, when the run has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// The workflow's name.
    pub workflow: String,
    /// The workflow file.
    pub file: String,
    /// How the run ended.
    pub status: RunStatus,
    /// When it started (RFC 3339, UTC).
    pub started_at: String,
    /// How long it took.
    pub duration_ms: u64,
    /// Every top-level step.
    pub steps: IndexMap<String, StepReport>,
    /// The workflow's outputs.
    pub outputs: IndexMap<String, serde_json::Value>,
    /// Why the run failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

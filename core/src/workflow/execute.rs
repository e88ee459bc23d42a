//! The executor: runs a workflow's steps as a graph of record streams.
//!
//! Every step is a task. A step starts when the steps its templates read
//! (`steps.<id>`) have finished, and reads the records of its `from:` step
//! while that step is still producing them. Sources and sinks do blocking file
//! I/O and Lua is synchronous, so those steps run on blocking threads and talk
//! to the streams through the runtime handle. A fatal failure cancels the
//! step's scope (the run, or one `for_each` item); consumers see it before
//! they commit anything, so a failed run never replaces an output file.

use super::load::LoadedWorkflow;
use super::model::{Format, InputType, OnError, Retry, Step};
use super::report::{RunReport, RunStatus, StepReport, StepStatus};
use crate::checkpoint::Marks;
use crate::diagnostic::{did_you_mean, Diagnostics};
use crate::record::{Batch, Inlet, Outlet};
use crate::state::{KeyOutcome, KeyState, RunRecord, StateStore};
use crate::template::Templates;
use futures::future::BoxFuture;
use indexmap::IndexMap;
use minijinja::Value as Mj;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

mod lua;
use lua::{lua_in_one_state, lua_in_states, LuaJob};

/// Hears what a run does, for progress displays.
pub trait Observer: Send + Sync {
    /// A top-level step started.
    fn step_started(&self, _id: &str, _kind: &str) {}
    /// A top-level step has produced `count` records so far.
    fn step_progress(&self, _id: &str, _count: u64) {}
    /// A top-level step ended.
    fn step_finished(&self, _id: &str, _report: &StepReport) {}
}

struct Silent;
impl Observer for Silent {}

/// How to run a workflow.
pub struct RunOptions {
    /// `--input key=value` pairs.
    pub inputs: Vec<(String, String)>,
    /// A `.env` file other than the one next to the workflow.
    pub env_file: Option<PathBuf>,
    /// Who hears about progress.
    pub observer: Arc<dyn Observer>,
    /// Print the first request of every `call` step instead of sending it,
    /// and write no files.
    pub dry_run: bool,
    /// Base URLs and config values that replace a provider's in every
    /// connection that uses it (`flow run --sandbox`), by provider name.
    pub overrides: std::collections::HashMap<String, ProviderOverride>,
    /// Where run history, cursors and idempotency keys live; without one,
    /// nothing is remembered between runs.
    pub state: Option<Arc<dyn StateStore>>,
    /// The run this one resumes.
    pub resumed_from: Option<String>,
    /// Resolves, with what asked, when the run is to stop early (a signal):
    /// no new request goes out, the ones under way finish, and the run ends
    /// `interrupted`.
    pub stop: Option<std::pin::Pin<Box<dyn std::future::Future<Output = String> + Send>>>,
}

/// Where a provider's connections go instead, and with which config.
#[derive(Debug, Clone, Default)]
pub struct ProviderOverride {
    /// The scheme, host and port (`http://127.0.0.1:8080`); the path of the
    /// descriptor's base URL goes after it, so a server that answers under
    /// the real API's paths sees a wrong one in the descriptor.
    pub origin: String,
    /// Config values, replacing the workflow's.
    pub config: serde_json::Map<String, Value>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            inputs: Vec::new(),
            env_file: None,
            observer: Arc::new(Silent),
            dry_run: false,
            state: None,
            resumed_from: None,
            overrides: Default::default(),
            stop: None,
        }
    }
}

/// Everything a run shares between its steps.
struct Run {
    lw: Arc<LoadedWorkflow>,
    connections: std::collections::HashMap<String, Arc<crate::connection::Connection>>,
    templates: Templates,
    inputs: Value,
    inputs_mj: Mj,
    env_mj: Mj,
    observer: Arc<dyn Observer>,
    dry_run: bool,
    /// Steps whose first request `--dry-run` has printed.
    previewed: Mutex<std::collections::HashSet<String>>,
    /// The state store, unless this is a dry run or state is off.
    state: Option<Arc<dyn StateStore>>,
    /// This run's ID.
    run_id: String,
    /// Where each incremental step starts, by step ID.
    cursor_starts: std::collections::HashMap<String, String>,
    /// The latest cursor value each incremental step has seen.
    cursor_seen: Arc<Mutex<std::collections::HashMap<String, Value>>>,
    /// The files (and tables) write steps have opened, and the step of each:
    /// two steps writing one would lose one's records.
    written: Mutex<std::collections::HashMap<(PathBuf, Option<String>), String>>,
    /// Where each read of the resumed run got, by step ID.
    checkpoints: std::collections::HashMap<String, crate::state::Checkpoint>,
}

/// The latest cursor values of a followed read: per page until the page is
/// handled, then folded into one.
#[derive(Default)]
struct PageCursors {
    pending: std::collections::BTreeMap<u64, Value>,
    handled: Option<Value>,
}

/// The steps of one scope: the workflow, or one item of a `for_each`.
struct Scope {
    parent: Option<Arc<Scope>>,
    item: Option<Value>,
    reports: Mutex<IndexMap<String, StepReport>>,
    cancelled: AtomicBool,
    error: Mutex<Option<String>>,
    top: bool,
    /// Writes under way or applied in this scope (or one inside it) that
    /// nothing keeps from being sent again: no key, not idempotent. An item
    /// with any is not tried again.
    unguarded_writes: AtomicUsize,
    /// Set to stop this scope's steps at once (see [`Scope::abort`]).
    aborting: AtomicBool,
}

/// Wakes every scope waiting in [`Scope::aborted`] when any is aborted;
/// each checks whether the abort was its own or one around it.
static ABORTS: tokio::sync::Notify = tokio::sync::Notify::const_new();

impl Scope {
    fn new(parent: Option<Arc<Scope>>, item: Option<Value>) -> Self {
        let top = parent.is_none();
        Scope {
            parent,
            item,
            reports: Mutex::default(),
            cancelled: AtomicBool::new(false),
            error: Mutex::default(),
            top,
            unguarded_writes: AtomicUsize::new(0),
            aborting: AtomicBool::new(false),
        }
    }

    /// Stops the scope's steps where they are (an item's `timeout`), and
    /// those of the scopes inside it.
    fn abort(&self) {
        self.aborting.store(true, Ordering::Relaxed);
        ABORTS.notify_waiters();
    }

    /// This scope, or one around it, was aborted.
    fn is_aborting(&self) -> bool {
        self.aborting.load(Ordering::Relaxed) || self.parent.as_ref().is_some_and(|p| p.is_aborting())
    }

    /// Returns once this scope or one around it is aborted.
    async fn aborted(&self) {
        loop {
            let notified = ABORTS.notified();
            tokio::pin!(notified);
            // Registered before the check, so that no abort is missed.
            notified.as_mut().enable();
            if self.is_aborting() {
                return;
            }
            notified.await;
        }
    }

    /// Counts a write that a retry would send again, here and in the
    /// scopes around (`+1` before it goes out, `-1` when it certainly was
    /// not applied).
    fn note_unguarded_write(&self, started: bool) {
        if started {
            self.unguarded_writes.fetch_add(1, Ordering::Relaxed);
        } else {
            self.unguarded_writes.fetch_sub(1, Ordering::Relaxed);
        }
        if let Some(p) = &self.parent {
            p.note_unguarded_write(started);
        }
    }

    fn has_unguarded_writes(&self) -> bool {
        self.unguarded_writes.load(Ordering::Relaxed) > 0
    }

    fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed) || self.parent.as_ref().is_some_and(|p| p.is_cancelled())
    }

    /// Records the scope's first fatal error and stops its steps.
    fn fail(&self, message: String) {
        if let Ok(mut e) = self.error.lock() {
            if e.is_none() {
                *e = Some(message);
            }
        }
        self.cancelled.store(true, Ordering::Relaxed);
    }

    fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }

    fn report(&self, id: &str, f: impl FnOnce(&mut StepReport)) {
        if let Ok(mut r) = self.reports.lock() {
            if let Some(rep) = r.get_mut(id) {
                f(rep);
            }
        }
    }

    fn reports(&self) -> IndexMap<String, StepReport> {
        self.reports.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// `steps.<id>` as templates see them: outer scopes first, then this one.
    fn steps_view(&self, into: &mut BTreeMap<String, Value>) {
        if let Some(p) = &self.parent {
            p.steps_view(into);
        }
        for (id, r) in self.reports() {
            into.insert(
                id,
                json!({"status": r.status, "count": r.count, "rejected": r.rejected, "failed": r.failed,
                       "skipped": r.skipped, "uncertain": r.uncertain,
                       "duration_ms": r.duration_ms, "error": r.error, "first": r.first}),
            );
        }
    }

    fn item(&self) -> Option<&Value> {
        self.item
            .as_ref()
            .or_else(|| self.parent.as_ref().and_then(|p| p.item()))
    }
}

impl Run {
    fn context(&self, scope: &Scope) -> Mj {
        let mut steps = BTreeMap::new();
        scope.steps_view(&mut steps);
        let mut ctx: BTreeMap<&str, Mj> = BTreeMap::new();
        ctx.insert("inputs", self.inputs_mj.clone());
        ctx.insert("env", self.env_mj.clone());
        ctx.insert("secrets", self.env_mj.clone());
        ctx.insert("steps", Mj::from_serialize(&steps));
        if let Some(item) = scope.item() {
            ctx.insert("item", Mj::from_serialize(item));
        }
        Mj::from(ctx)
    }
}

/// Why a step did not succeed.
enum StepError {
    Failed(String),
    Cancelled,
}

impl From<String> for StepError {
    fn from(s: String) -> Self {
        StepError::Failed(s)
    }
}

/// How the error of a write whose outcome is unknown ends.
const RECORDED_UNCERTAIN: &str = "recorded as uncertain: later runs will not send it again";

/// A write's claimed key. Settled by the call when its answer comes; when
/// the call is dropped before that (a `for_each` item's `timeout`), the
/// request may have gone out, so the key is settled as uncertain and the
/// step's report counts it.
struct Claim {
    store: Arc<dyn StateStore>,
    workflow: String,
    step: String,
    key: String,
    scope: Arc<Scope>,
    settled: bool,
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        if let Err(e) = self
            .store
            .settle_key(&self.workflow, &self.step, &self.key, KeyOutcome::Uncertain)
        {
            tracing::error!(step = %self.step, "A write stopped under way could not be recorded as uncertain: {e}");
        }
        self.scope.report(&self.step, |r| r.uncertain += 1);
    }
}

/// What a step produced.
#[derive(Default)]
struct Done {
    count: u64,
    rejected: u64,
    failed: u64,
    skipped: u64,
    uncertain: u64,
    children: IndexMap<String, StepReport>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    Waiting,
    Running,
    Done(StepStatus),
}

/// Runs a loaded workflow. Problems with its inputs or env file come back as
/// diagnostics (exit code 2); everything after the start is in the report.
pub async fn run(lw: Arc<LoadedWorkflow>, mut opts: RunOptions) -> Result<RunReport, Diagnostics> {
    let inputs = resolve_inputs(&lw, &opts.inputs)?;
    let env = crate::secrets::load_env(opts.env_file.as_deref(), &lw.dir)?;
    for name in &lw.secret_names {
        if let Some(v) = env.get(name) {
            crate::secrets::register(v);
        }
    }
    let connections = open_connections(&lw, &inputs, &env, &opts.overrides)?;
    let started_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let run_id = crate::state::new_run_id();
    let state = opts.state.filter(|_| !opts.dry_run);
    let mut cursor_starts = std::collections::HashMap::new();
    let mut checkpoints = std::collections::HashMap::new();
    if let Some(store) = &state {
        let fail = |e: crate::state::StateError| {
            Diagnostics::from(crate::diagnostic::Diagnostic::new(&lw.path, e.to_string()))
        };
        store.mark_interrupted().map_err(fail)?;
        let saved: std::collections::HashMap<String, String> = store
            .cursors(&lw.workflow.name)
            .map_err(fail)?
            .into_iter()
            .map(|c| (c.step, c.value))
            .collect();
        let templates = Templates::new();
        let ctx = minijinja::context! { inputs => Mj::from_serialize(&inputs), env => Mj::from_serialize(&env), secrets => Mj::from_serialize(&env) };
        for step in &lw.workflow.steps {
            let Some(c) = &step.cursor else { continue };
            let start = match (saved.get(&step.id), &c.initial) {
                (Some(v), _) => Some(match c.lookback {
                    Some(back) => crate::dates::shift_back(v, back.0),
                    None => v.clone(),
                }),
                (None, Some(t)) => Some(templates.render_str(t, &ctx).map_err(|e| {
                    Diagnostics::from(crate::diagnostic::Diagnostic::new(
                        &lw.path,
                        format!("step `{}`: `cursor.initial`: {e}", step.id),
                    ))
                })?),
                (None, None) => None,
            };
            if let Some(start) = start {
                cursor_starts.insert(step.id.clone(), start);
            }
        }
        if let Some(from) = &opts.resumed_from {
            // Reads go on after the pages the resumed run handled.
            for c in store.checkpoints(from).map_err(fail)? {
                checkpoints.insert(c.step.clone(), c);
            }
        }
        // State is kept by workflow name: another file of the same name
        // shares its cursors and write keys.
        if let Some(last) = store
            .runs(Some(&lw.workflow.name), 1)
            .ok()
            .and_then(|r| r.into_iter().next())
        {
            let other = match (std::fs::canonicalize(&last.file), std::fs::canonicalize(&lw.path)) {
                (Ok(a), Ok(b)) => a != b,
                _ => false,
            };
            if other {
                tracing::warn!(
                    "The last run of `{}` in this state store came from {}: the two files share its cursors and write keys (writes one made, the other skips as done); give this file its own `name:` if it is another job",
                    lw.workflow.name,
                    last.file
                );
            }
        }
        let masked: Value = serde_json::from_str(&crate::secrets::mask(&inputs.to_string())).unwrap_or(Value::Null);
        store
            .begin_run(&RunRecord {
                id: run_id.clone(),
                workflow: lw.workflow.name.clone(),
                // Whole, so that runs started from other folders name one
                // file alike (see the warning above).
                file: std::fs::canonicalize(&lw.path)
                    .unwrap_or_else(|_| lw.path.clone())
                    .display()
                    .to_string(),
                status: "running".into(),
                started_at: started_at.clone(),
                ended_at: None,
                inputs: masked,
                resumed_from: opts.resumed_from.clone(),
                report: None,
                error: None,
            })
            .map_err(fail)?;
    }
    let run = Arc::new(Run {
        state: state.clone(),
        run_id: run_id.clone(),
        cursor_starts,
        cursor_seen: Arc::default(),
        written: Mutex::default(),
        checkpoints,
        connections,
        templates: Templates::new(),
        inputs_mj: Mj::from_serialize(&inputs),
        inputs,
        env_mj: Mj::from_serialize(&env),
        observer: opts.observer,
        dry_run: opts.dry_run,
        previewed: Mutex::default(),
        lw: Arc::clone(&lw),
    });
    let clock = Instant::now();
    let top = Arc::new(Scope::new(None, None));
    let steps = Arc::new(lw.workflow.steps.clone());
    let stopped = Arc::new(AtomicBool::new(false));
    let watch = opts.stop.take().map(|stop| {
        let (top, stopped) = (Arc::clone(&top), Arc::clone(&stopped));
        tokio::spawn(async move {
            let why = stop.await;
            tracing::warn!("{why}: stopping once the requests under way have their answers");
            stopped.store(true, Ordering::Relaxed);
            top.fail(format!("stopped by {why}"));
            crate::connection::stop_requests();
        })
    });
    run_scope(Arc::clone(&run), steps, Arc::clone(&top), None, None).await;
    if let Some(watch) = watch {
        watch.abort();
    }
    let stopped = stopped.load(Ordering::Relaxed);

    let mut error = top.error();
    let mut outputs = IndexMap::new();
    if error.is_none() {
        let ctx = run.context(&top);
        for (name, tmpl) in &lw.workflow.outputs {
            match run.templates.render(tmpl, &ctx) {
                Ok(v) => {
                    outputs.insert(name.clone(), v);
                }
                Err(e) => {
                    error = Some(format!("output `{name}`: {e}"));
                    break;
                }
            }
        }
    }
    let mut error = error.map(|e| crate::secrets::mask(&e));
    if let (Some(store), None) = (&state, &error) {
        // The run succeeded: every downstream step has handled the records,
        // so the cursors may move.
        // A step that failed under `on_error: continue` did not: the cursor
        // it reads from, or its own, stays where it was.
        let reports = top.reports();
        let seen: Vec<(String, String)> = run
            .cursor_seen
            .lock()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), cursor_text(v))).collect())
            .unwrap_or_default();
        let seen: Vec<(String, String)> = seen
            .into_iter()
            .filter(|(id, _)| match failed_downstream(id, &lw.workflow.steps, &reports) {
                Some(failed) => {
                    tracing::warn!(step = %id, "The cursor stays where it was: step `{failed}` did not handle every record");
                    false
                }
                None => true,
            })
            .collect();
        if !seen.is_empty() {
            if let Err(e) = store.set_cursors(&lw.workflow.name, &seen) {
                error = Some(format!("the run succeeded but its cursors could not be saved: {e}"));
            }
        }
    }
    let report = RunReport {
        run_id: state.as_ref().map(|_| run_id.clone()),
        workflow: lw.workflow.name.clone(),
        file: lw.path.display().to_string(),
        status: match (&error, stopped) {
            (None, _) => RunStatus::Succeeded,
            (Some(_), true) => RunStatus::Interrupted,
            (Some(_), false) => RunStatus::Failed,
        },
        started_at,
        duration_ms: clock.elapsed().as_millis() as u64,
        steps: top.reports(),
        outputs,
        error,
    };
    if let Some(store) = &state {
        let saved = serde_json::to_string(&report)
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&crate::secrets::mask(&t)).ok())
            .unwrap_or(Value::Null);
        let status = match report.status {
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Interrupted => "interrupted",
        };
        if let Err(e) = store.finish_run(&run_id, status, &saved, report.error.as_deref()) {
            tracing::error!("Cannot record the end of run {run_id}: {e}");
        }
        match store.prune(crate::state::Retention::default()) {
            Ok(0) => {}
            Ok(n) => tracing::debug!(removed = n, "Pruned old runs."),
            Err(e) => tracing::warn!("Cannot prune old runs: {e}"),
        }
    }
    Ok(report)
}

/// A cursor value as stored: text as it is, anything else as JSON.
fn cursor_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Whether `a` comes after `b`: as dates when both are dates, as numbers when
/// both are numbers, as text otherwise.
fn cursor_after(a: &Value, b: &Value) -> bool {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let (Some(ta), Some(tb)) = (text(a), text(b)) else {
        return !a.is_null() && b.is_null();
    };
    if let (Ok(x), Ok(y)) = (ta.trim().parse::<f64>(), tb.trim().parse::<f64>()) {
        return x > y;
    }
    if let (Some(x), Some(y)) = (crate::dates::parse(&ta), crate::dates::parse(&tb)) {
        return x > y;
    }
    ta > tb
}

/// The value at a dotted path of a record.
fn field_at<'a>(record: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(record, |v, k| v.get(k))
}

/// Sets a value at a dotted path of the parameters, making objects on the way.
fn set_at(params: &mut serde_json::Map<String, Value>, path: &str, value: Value) {
    let mut parts = path.split('.').peekable();
    let mut map = params;
    while let Some(k) = parts.next() {
        if parts.peek().is_none() {
            map.insert(k.to_owned(), value);
            return;
        }
        let slot = map
            .entry(k.to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
        if !slot.is_object() {
            *slot = Value::Object(Default::default());
        }
        let Value::Object(next) = slot else { return };
        map = next;
    }
}

fn kind_of(step: &Step) -> &'static str {
    match step.kinds().first() {
        Some(&"run") => "lua",
        Some(k) => k,
        None => "none",
    }
}

/// Whether a step reads the fields of the records it is given: a Lua step,
/// by a script's path (`lua:`) or inline (`run:`). A source keeping records
/// as JSON text (an API's pages, a JSON Lines file) then finds their fields
/// as it reads them.
fn reads_fields(step: &Step) -> bool {
    kind_of(step) == "lua"
}

/// How a step names another step's rejected records: `<id>.rejected`.
pub const REJECTED_SUFFIX: &str = ".rejected";

/// A rejected record with the reason, for a `.rejected` stream.
fn rejected(record: &Value, error: &str) -> Value {
    let mut out = match record {
        Value::Object(m) => m.clone(),
        other => {
            let mut m = serde_json::Map::new();
            m.insert("item".into(), other.clone());
            m
        }
    };
    out.insert("_error".into(), Value::String(crate::secrets::mask(error)));
    Value::Object(out)
}

/// A step that did not handle every record it got among `id` and the steps
/// that read its records, directly or through others: one that failed or
/// was cancelled, a `for_each` with failed items that no step reads as
/// `<id>.rejected`, or one whose nested step failed while its items went on.
fn failed_downstream(id: &str, steps: &[Step], reports: &IndexMap<String, StepReport>) -> Option<String> {
    let mut reached = vec![id.to_owned()];
    let mut i = 0;
    while let Some(at) = reached.get(i).cloned() {
        i += 1;
        if let Some(r) = reports.get(&at) {
            if unhandled(&at, r, steps, reports) {
                return Some(at);
            }
        }
        for s in steps {
            let reads = stream_sources(s)
                .iter()
                .any(|src| src.split('.').next() == Some(at.as_str()));
            if reads && !reached.contains(&s.id) {
                reached.push(s.id.clone());
            }
        }
    }
    None
}

/// Whether step `id` (reported as `r`, among `steps` of one scope reported
/// as `reports`) left records it got unhandled: it failed or was cancelled;
/// its items failed and no step of its scope that ran reads them as
/// `<id>.rejected`; or, its items all done, a step inside them did so.
fn unhandled(id: &str, r: &StepReport, steps: &[Step], reports: &IndexMap<String, StepReport>) -> bool {
    if matches!(r.status, StepStatus::Failed | StepStatus::Cancelled) {
        return true;
    }
    if r.failed > 0 {
        let name = format!("{id}.rejected");
        return !steps.iter().any(|s| {
            stream_sources(s).contains(&name.as_str())
                && reports
                    .get(&s.id)
                    .is_some_and(|rep| rep.status == StepStatus::Succeeded)
        });
    }
    let nested: &[Step] = steps
        .iter()
        .find(|s| s.id == id)
        .and_then(|s| s.steps.as_deref())
        .unwrap_or(&[]);
    r.steps.iter().any(|(nid, nr)| unhandled(nid, nr, nested, &r.steps))
}

/// The steps a step streams records from, in its own scope.
fn stream_sources(step: &Step) -> Vec<&str> {
    if let Some(from) = &step.from {
        return from.names().into_iter().filter(|n| *n != "item").collect();
    }
    step.for_each
        .as_deref()
        .filter(|f| !crate::template::is_template(f) && *f != "item")
        .into_iter()
        .collect()
}

/// Every template string of a step, nested steps included.
fn step_templates<'a>(step: &'a Step, out: &mut Vec<&'a str>) {
    out.extend(step.condition.as_deref());
    if let Some(r) = &step.read {
        let (super::model::ReadSpec::Path(p) | super::model::ReadSpec::Full(super::model::ReadOptions { path: p, .. })) =
            r;
        out.push(p);
    }
    if let Some(w) = &step.write {
        match w {
            super::model::WriteSpec::Path(p) => out.push(p),
            super::model::WriteSpec::Full(o) => out.push(&o.path),
        }
    }
    if let Some(f) = step.for_each.as_deref().filter(|f| crate::template::is_template(f)) {
        out.push(f);
    }
    fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
        match v {
            Value::String(s) => out.push(s),
            Value::Array(a) => a.iter().for_each(|x| strings(x, out)),
            Value::Object(m) => m.values().for_each(|x| strings(x, out)),
            _ => {}
        }
    }
    for v in step.with.iter().flat_map(|w| w.values()) {
        strings(v, out);
    }
    for nested in step.steps.iter().flatten() {
        step_templates(nested, out);
    }
}

/// The steps of this scope whose results a step's templates read.
fn completion_deps(run: &Run, step: &Step, ids: &[&str]) -> Vec<String> {
    let mut texts = Vec::new();
    step_templates(step, &mut texts);
    let mut deps = Vec::new();
    for t in texts {
        for name in run.templates.references(t).unwrap_or_default() {
            let mut parts = name.split('.');
            if parts.next() == Some("steps") {
                if let Some(id) = parts.next() {
                    if id != step.id && ids.contains(&id) && !deps.iter().any(|d| d == id) {
                        deps.push(id.to_owned());
                    }
                }
            }
        }
    }
    deps
}

fn run_scope(
    run: Arc<Run>,
    steps: Arc<Vec<Step>>,
    scope: Arc<Scope>,
    item: Option<Batch>,
    export: Option<Arc<Outlet>>,
) -> BoxFuture<'static, ()> {
    Box::pin(async move {
        let n = steps.len();
        let ids: Vec<&str> = steps.iter().map(|s| s.id.as_str()).collect();
        if let Ok(mut r) = scope.reports.lock() {
            for s in steps.iter() {
                r.insert(s.id.clone(), StepReport::pending(kind_of(s)));
            }
        }
        let deps: Vec<Vec<String>> = steps.iter().map(|s| completion_deps(&run, s, &ids)).collect();
        // A source is a step's records (port 0) or its rejects (port 1, `<id>.rejected`).
        let sources: Vec<Vec<(usize, usize)>> = steps
            .iter()
            .map(|s| {
                stream_sources(s)
                    .iter()
                    .filter_map(|src| {
                        let (name, port) = match src.strip_suffix(REJECTED_SUFFIX) {
                            Some(base) => (base, 1),
                            None => (*src, 0),
                        };
                        ids.iter().position(|i| *i == name).map(|j| (j, port))
                    })
                    .collect()
            })
            .collect();

        let mut outlets: Vec<[Outlet; 2]> = (0..n).map(|_| [Outlet::none(), Outlet::none()]).collect();
        let mut feeds: Vec<Vec<Inlet>> = (0..n).map(|_| Vec::new()).collect();
        for p in 0..n {
            for (port, outlet) in outlets[p].iter_mut().enumerate() {
                let consumers: Vec<usize> = (0..n).filter(|c| sources[*c].contains(&(p, port))).collect();
                if consumers.is_empty() {
                    continue;
                }
                if consumers.iter().all(|c| deps[*c].is_empty()) {
                    if consumers.iter().any(|c| reads_fields(&steps[*c])) {
                        outlet.want_fields();
                    }
                    for c in consumers {
                        feeds[c].push(outlet.channel());
                    }
                    continue;
                }
                let spool = match outlet.spool() {
                    Ok(s) => s,
                    Err(e) => return scope.fail(format!("cannot create a temporary file for step `{}`: {e}", ids[p])),
                };
                for c in consumers {
                    match spool.reader() {
                        Ok(r) => feeds[c].push(Inlet::Spool(r)),
                        Err(e) => {
                            return scope.fail(format!("cannot read a temporary file for step `{}`: {e}", ids[p]))
                        }
                    }
                }
            }
        }
        let mut inlets: Vec<Inlet> = feeds.into_iter().map(Inlet::merge).collect();
        for (c, s) in steps.iter().enumerate() {
            // `from: item`, or a nested `for_each: item` (once, over it).
            if s.from.as_ref().is_some_and(|f| f.is_item())
                || (s.from.is_none() && s.for_each.as_deref() == Some("item"))
            {
                inlets[c] = Inlet::Once(item.clone());
            }
        }
        if let (Some(export), Some(last)) = (export, outlets.last_mut()) {
            last[0].forward(export);
        }

        let (phase_tx, phase_rx): (Vec<_>, Vec<_>) = (0..n).map(|_| watch::channel(Phase::Waiting)).unzip();
        let mut set = JoinSet::new();
        for (i, ((inlet, [outlet, rejects]), phase)) in inlets.into_iter().zip(outlets).zip(phase_tx).enumerate() {
            let dep_rx = deps[i]
                .iter()
                .filter_map(|d| ids.iter().position(|x| x == d).map(|j| phase_rx[j].clone()))
                .collect();
            let task = StepTask {
                run: Arc::clone(&run),
                scope: Arc::clone(&scope),
                steps: Arc::clone(&steps),
                index: i,
                inlet: Some(inlet),
                outlet: Arc::new(outlet),
                rejects: Arc::new(rejects),
                phase,
                deps: dep_rx,
                sources: sources[i]
                    .iter()
                    .map(|(j, _)| (ids[*j].to_owned(), phase_rx[*j].clone()))
                    .collect(),
            };
            // When the scope is aborted, a step is dropped where it is (a
            // write's claim settles as uncertain), inside its task, so that
            // the join below waits until it is. A `for_each` is not: the
            // scopes of its items see the abort and end their own steps the
            // same way, and it ends once they have, with their counts.
            let scope = Arc::clone(&scope);
            let winds_down = steps[i].for_each.is_some();
            set.spawn(async move {
                if winds_down {
                    task.run().await;
                } else {
                    tokio::select! {
                        () = task.run() => {}
                        () = scope.aborted() => {}
                    }
                }
            });
        }
        while let Some(joined) = set.join_next().await {
            if let Err(e) = joined {
                if e.is_panic() {
                    scope.fail(format!("internal error: a step panicked ({e}); please report this"));
                }
            }
        }
    })
}

struct StepTask {
    run: Arc<Run>,
    scope: Arc<Scope>,
    steps: Arc<Vec<Step>>,
    index: usize,
    inlet: Option<Inlet>,
    outlet: Arc<Outlet>,
    /// Records the step rejected under `on_error: continue`, with `_error`.
    rejects: Arc<Outlet>,
    phase: watch::Sender<Phase>,
    deps: Vec<watch::Receiver<Phase>>,
    sources: Vec<(String, watch::Receiver<Phase>)>,
}

async fn wait_until(rx: &mut watch::Receiver<Phase>, f: impl Fn(Phase) -> bool) -> Phase {
    match rx.wait_for(|p| f(*p)).await {
        Ok(p) => *p,
        Err(_) => Phase::Done(StepStatus::Cancelled),
    }
}

impl StepTask {
    fn step(&self) -> &Step {
        &self.steps[self.index]
    }

    async fn run(mut self) {
        let id = self.step().id.clone();
        let outcome = self.prepare_and_execute().await;
        let step = &self.steps[self.index];
        // What a step that did not finish had counted is in its report
        // already (a `for_each` writes its items' counts there): kept.
        let (status, error, done) = match outcome {
            Ok(Some(done)) => (StepStatus::Succeeded, None, Some(done)),
            Ok(None) => (StepStatus::Skipped, None, Some(Done::default())),
            Err(StepError::Cancelled) => (StepStatus::Cancelled, None, None),
            // Refused because the run is stopping: nothing failed.
            Err(StepError::Failed(msg)) if msg.contains(crate::connection::NOT_SENT_STOPPING) => {
                (StepStatus::Cancelled, None, None)
            }
            Err(StepError::Failed(msg)) => {
                let msg = crate::secrets::mask(&msg);
                if step.on_error == OnError::Fail {
                    self.scope.fail(format!("step `{id}` failed: {msg}"));
                } else {
                    tracing::warn!(step = %id, "Step failed; continuing as `on_error: continue` says: {msg}");
                }
                (StepStatus::Failed, Some(msg), None)
            }
        };
        self.scope.report(&id, |r| {
            // A write whose outcome is unknown counts as uncertain too.
            if error.as_deref().is_some_and(|e| e.contains(RECORDED_UNCERTAIN)) {
                r.uncertain = r.uncertain.max(1);
            }
            r.status = status;
            r.error = error;
            if let Some(done) = done {
                r.count = r.count.max(done.count);
                r.rejected = done.rejected;
                r.failed = done.failed;
                r.skipped = done.skipped;
                r.uncertain = done.uncertain;
                r.steps = done.children;
            }
            r.first = self.outlet.first();
        });
        self.phase.send_replace(Phase::Done(status));
        self.rejects.close();
        if self.scope.top {
            if let Some(r) = self.scope.reports().get(&id) {
                self.run.observer.step_finished(&id, r);
            }
        }
        self.outlet.close();
    }

    /// Waits for what the step needs, checks its condition and runs it.
    /// `Ok(None)` means skipped.
    async fn prepare_and_execute(&mut self) -> Result<Option<Done>, StepError> {
        for rx in &mut self.deps {
            wait_until(rx, |p| matches!(p, Phase::Done(_))).await;
        }
        let id = self.step().id.clone();
        let mut skipped = 0;
        for (_, rx) in &mut self.sources {
            if wait_until(rx, |p| p != Phase::Waiting).await == Phase::Done(StepStatus::Skipped) {
                skipped += 1;
            }
        }
        if skipped > 0 && skipped == self.sources.len() {
            tracing::debug!(step = %id, "Skipped: every step it reads from was skipped.");
            return Ok(None);
        }
        if self.scope.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        let step = self.step().clone();
        if let Some(cond) = &step.condition {
            let ctx = self.run.context(&self.scope);
            let v = self
                .run
                .templates
                .render(cond, &ctx)
                .map_err(|e| format!("`if`: {e}"))?;
            if !truthy(&v) {
                return Ok(None);
            }
        }
        self.phase.send_replace(Phase::Running);
        let kind = kind_of(&step);
        self.scope.report(&id, |r| r.status = StepStatus::Running);
        if self.scope.top {
            self.run.observer.step_started(&id, kind);
        }
        let clock = Instant::now();
        let result = match kind {
            "read" => self.read(&step).await,
            "lua" => self.lua(&step).await,
            "write" => timed(step.timeout, self.write(&step)).await,
            "for_each" => self.for_each(&step).await,
            "call" => self.call(&step).await,
            other => Err(StepError::Failed(format!("unknown step kind `{other}`"))),
        };
        let ms = clock.elapsed().as_millis() as u64;
        self.scope.report(&id, |r| r.duration_ms = ms);
        result.map(Some)
    }

    fn progress(&self) -> Progress {
        let run = Arc::clone(&self.run);
        let scope = Arc::clone(&self.scope);
        let id = self.step().id.clone();
        Arc::new(move |count| {
            scope.report(&id, |r| r.count = count);
            if scope.top {
                run.observer.step_progress(&id, count);
            }
        })
    }

    fn render_path(&self, field: &str, text: &str) -> Result<PathBuf, StepError> {
        let ctx = self.run.context(&self.scope);
        let rel = self
            .run
            .templates
            .render_str(text, &ctx)
            .map_err(|e| format!("`{field}`: {e}"))?;
        Ok(self.run.lw.resolve(&rel))
    }

    async fn read(&mut self, step: &Step) -> Result<Done, StepError> {
        let Some(spec) = &step.read else {
            return Err(StepError::Cancelled);
        };
        let opts = spec.options();
        let path = self.render_path("read.path", &opts.path)?;
        let format = opts
            .format
            .or_else(|| crate::source::format_of(&path))
            .ok_or_else(|| format!("cannot tell the format of {}; add `format:`", path.display()))?;
        let mut attempt = 1;
        loop {
            let stop = Arc::new(AtomicBool::new(false));
            let (outlet, scope, stop2, progress) = (
                Arc::clone(&self.outlet),
                Arc::clone(&self.scope),
                Arc::clone(&stop),
                self.progress(),
            );
            let path2 = path.clone();
            let sent = Arc::new(AtomicU64::new(0));
            let sent2 = Arc::clone(&sent);
            let handle = Handle::current();
            let job = tokio::task::spawn_blocking(move || {
                let mut sent = 0u64;
                let mut cancelled = false;
                let fields = outlet.wants_fields();
                let result = crate::source::read_batches(&path2, format, opts.delimiter, fields, &mut |batch| {
                    if stop2.load(Ordering::Relaxed) || scope.is_cancelled() {
                        cancelled = true;
                        return false;
                    }
                    sent += batch.len() as u64;
                    let alive = handle.block_on(outlet.send(batch.into()));
                    sent2.store(sent, Ordering::Relaxed);
                    progress(sent);
                    alive
                });
                match result {
                    Ok(_) => Ok(Done {
                        count: sent,
                        ..Done::default()
                    }),
                    // Stopped by the run ending (a step after it failed, a
                    // signal), not every record was read.
                    Err(crate::source::SourceError::Stopped) if cancelled || scope.is_cancelled() => {
                        Err(StepError::Cancelled)
                    }
                    Err(crate::source::SourceError::Stopped) => Ok(Done {
                        count: sent,
                        ..Done::default()
                    }),
                    Err(e) => Err(StepError::Failed(e.to_string())),
                }
            });
            let result = match step.timeout {
                Some(limit) => match tokio::time::timeout(limit.0, job).await {
                    Ok(r) => r.unwrap_or_else(|e| Err(StepError::Failed(format!("internal error: {e}")))),
                    Err(_) => {
                        stop.store(true, Ordering::Relaxed);
                        Err(StepError::Failed(format!("timed out after {}", human(limit.0))))
                    }
                },
                None => job
                    .await
                    .unwrap_or_else(|e| Err(StepError::Failed(format!("internal error: {e}")))),
            };
            match result {
                Err(StepError::Failed(msg)) if sent.load(Ordering::Relaxed) == 0 => {
                    if let Some(wait) = retry_wait(step.retry.as_ref(), attempt) {
                        tracing::warn!(step = %step.id, attempt, "Retrying after error: {msg}");
                        tokio::select! {
                            () = tokio::time::sleep(wait) => {}
                            () = crate::connection::until_stopped() => return Err(StepError::Cancelled),
                        }
                        attempt += 1;
                        continue;
                    }
                    return Err(StepError::Failed(msg));
                }
                other => return other,
            }
        }
    }

    async fn call(&mut self, step: &Step) -> Result<Done, StepError> {
        let target = step.call.clone().unwrap_or_default();
        let (conn_name, action) = target.split_once('.').unwrap_or((target.as_str(), ""));
        let conn = self
            .run
            .connections
            .get(conn_name)
            .cloned()
            .ok_or_else(|| format!("there is no connection `{conn_name}`"))?;
        let ctx = self.run.context(&self.scope);
        let mut params = serde_json::Map::new();
        for (k, v) in step.with.iter().flatten() {
            params.insert(
                k.clone(),
                render_tree(&self.run.templates, v, &ctx).map_err(|e| format!("`with.{k}`: {e}"))?,
            );
        }
        if let Some(c) = &step.cursor {
            if let Some(start) = self.run.cursor_starts.get(&step.id) {
                set_at(&mut params, &c.param, Value::String(start.clone()));
            }
        }
        // The window this read covers: a resumed run reads on after the
        // pages handled before only when it reads the same window.
        let window = (self.scope.top && self.run.state.is_some())
            .then(|| crate::state::key_digest(&Value::Object(params.clone()).to_string()));
        let resumed = self.run.checkpoints.get(&step.id);
        if resumed.is_some_and(|c| Some(&c.window) != window.as_ref()) {
            tracing::info!(step = %step.id, "The read's parameters changed since the resumed run: reading from the first page.");
        }
        let resumed = resumed.filter(|c| Some(&c.window) == window.as_ref());
        // The cursor values of a followed read's pages, for its checkpoint;
        // those of the pages the resumed run handled still count.
        let handled: Option<Value> = resumed
            .and_then(|c| c.cursor.as_deref())
            .and_then(|t| serde_json::from_str(t).ok());
        if let (Some(v), Ok(mut seen)) = (&handled, self.run.cursor_seen.lock()) {
            seen.insert(step.id.clone(), v.clone());
        }
        let page_cursors = Arc::new(Mutex::new(PageCursors {
            handled,
            ..PageCursors::default()
        }));
        if let Some(c) = &step.cursor {
            if self.run.state.is_some() {
                let seen = Arc::clone(&self.run.cursor_seen);
                let pages = Arc::clone(&page_cursors);
                let (id, field) = (step.id.clone(), c.field.clone());
                self.outlet.set_tap(Arc::new(move |batch: &Batch| {
                    let mut latest: Option<Value> = None;
                    for record in batch.iter().flatten() {
                        let Some(v) = field_at(&record, &field).filter(|v| !v.is_null()) else {
                            continue;
                        };
                        if latest.as_ref().is_none_or(|best| cursor_after(v, best)) {
                            latest = Some(v.clone());
                        }
                    }
                    let Some(latest) = latest else { return };
                    if let (Some(page), Ok(mut pages)) = (batch.marks().pages().next(), pages.lock()) {
                        let slot = pages.pending.entry(page).or_insert_with(|| latest.clone());
                        if cursor_after(&latest, slot) {
                            *slot = latest.clone();
                        }
                    }
                    if let Ok(mut seen) = seen.lock() {
                        let newer = seen.get(&id).is_none_or(|old| cursor_after(&latest, old));
                        if newer {
                            seen.insert(id.clone(), latest);
                        }
                    }
                }));
            }
        }
        let key = match &step.key {
            Some(t) => {
                // A key with an empty part (`lead-{{ item.phone }}` of an
                // item without a phone) would be every such item's key: all
                // but the first would be skipped as done.
                // (With `{% %}` blocks or `{# #}` comments, which decide what
                // is rendered, the key as a whole.)
                let blank_value = |v: Result<Value, _>| match v {
                    Ok(Value::Null) => true,
                    Ok(Value::String(s)) => s.trim().is_empty(),
                    _ => false,
                };
                let blank = if t.contains("{%") || t.contains("{#") {
                    blank_value(self.run.templates.render(t, &ctx))
                } else {
                    crate::template::expressions(t)
                        .into_iter()
                        .any(|expr| blank_value(self.run.templates.render(&format!("{{{{ {expr} }}}}"), &ctx)))
                };
                if blank {
                    return Err(StepError::Failed(format!(
                        "`key` `{t}` has an empty part for this item (a field it names is null or empty), so it cannot tell the item's write from others; key on fields every item has, or leave such items out with `if:`"
                    )));
                }
                Some(
                    self.run
                        .templates
                        .render_str(t, &ctx)
                        .map_err(|e| format!("`key`: {e}"))?,
                )
            }
            None => None,
        };
        if self.run.dry_run {
            let first = self
                .run
                .previewed
                .lock()
                .map(|mut p| p.insert(step.id.clone()))
                .unwrap_or(false);
            if first {
                let text = conn.preview(action, &params).map_err(|e| e.0)?;
                // Ignored when nobody reads any more (a closed pipe).
                let _ = std::io::Write::write_fmt(
                    &mut std::io::stdout().lock(),
                    format_args!("step `{}` would send:\n  {text}\n", step.id),
                );
            }
            return Ok(Done::default());
        }
        let claimed = match (&key, &self.run.state) {
            (Some(key), Some(store)) => {
                let wf = &self.run.lw.workflow.name;
                let resend = conn.descriptor.idempotency_header.is_some();
                match store
                    .claim_key(wf, &step.id, key, &self.run.run_id, resend)
                    .map_err(|e| e.to_string())?
                {
                    None => {}
                    Some(KeyState::Done) => {
                        tracing::debug!(step = %step.id, "Skipped: this write completed before.");
                        return Ok(Done {
                            skipped: 1,
                            ..Done::default()
                        });
                    }
                    Some(KeyState::Sending) => {
                        tracing::debug!(step = %step.id, "Skipped: the same write is being sent now, by this run or another.");
                        return Ok(Done {
                            skipped: 1,
                            ..Done::default()
                        });
                    }
                    Some(KeyState::Uncertain) => {
                        tracing::warn!(
                            step = %step.id,
                            "Not sent: an earlier attempt of this write may have reached the server; check it there; if it is missing, `flow state reset {} --uncertain` sends it on the next run.",
                            self.run.lw.path.display()
                        );
                        return Ok(Done {
                            uncertain: 1,
                            ..Done::default()
                        });
                    }
                }
                Some(Claim {
                    store: Arc::clone(store),
                    workflow: wf.clone(),
                    step: step.id.clone(),
                    key: key.clone(),
                    scope: Arc::clone(&self.scope),
                    settled: false,
                })
            }
            _ => None,
        };
        // A write nothing keeps from being sent twice: its item is not
        // tried again once it may have gone out.
        let unguarded = claimed.is_none()
            && conn
                .action(action)
                .map(|a| a.is_write() && !a.is_idempotent())
                .unwrap_or(true);
        if unguarded {
            self.scope.note_unguarded_write(true);
        }
        let skip = resumed.map(|c| c.pages).unwrap_or(0);
        let pages = self.page_track(step, page_cursors, window, skip);
        let result = self
            .call_attempts(step, &conn, action, &params, key.as_deref(), pages.as_ref())
            .await;
        if unguarded {
            let certainly_not_applied = match &result {
                Ok(_) => false,
                Err(StepError::Cancelled) => true,
                Err(StepError::Failed(msg)) => !msg.contains(crate::connection::MAYBE_SENT),
            };
            if certainly_not_applied {
                self.scope.note_unguarded_write(false);
            }
        }
        if let Some(mut claim) = claimed {
            let (store, key) = (Arc::clone(&claim.store), claim.key.clone());
            claim.settled = true;
            drop(claim);
            let wf = &self.run.lw.workflow.name;
            let outcome = match &result {
                Ok(_) => KeyOutcome::Done,
                Err(StepError::Failed(msg)) if msg.contains(crate::connection::MAYBE_SENT) => KeyOutcome::Uncertain,
                Err(_) => KeyOutcome::Released,
            };
            store
                .settle_key(wf, &step.id, &key, outcome)
                .map_err(|e| format!("the write was sent but its outcome could not be recorded: {e}"))?;
            if outcome == KeyOutcome::Uncertain {
                if let Err(StepError::Failed(msg)) = result {
                    return Err(StepError::Failed(format!("{msg} ({RECORDED_UNCERTAIN})")));
                }
            }
        }
        result
    }

    /// Follows the pages of a top-level read so that a resumed run reads on
    /// after those whose records were all handled (see [`crate::checkpoint`]).
    fn page_track(
        &self,
        step: &Step,
        cursors: Arc<Mutex<PageCursors>>,
        window: Option<String>,
        skip: u64,
    ) -> Option<Arc<crate::checkpoint::Tracker>> {
        // A window is known for top-level reads with a state store only.
        let window = window?;
        let store = Arc::clone(self.run.state.as_ref()?);
        if step.key.is_some() || self.outlet.is_empty() {
            return None;
        }
        if skip > 0 {
            tracing::info!(step = %step.id, pages = skip, "Resuming after the pages the interrupted run handled.");
        }
        let (run_id, id) = (self.run.run_id.clone(), step.id.clone());
        let save = move |pages: u64| {
            // The latest cursor value of the handled pages only: a page read
            // ahead but not handled must not move it.
            let cursor = cursors.lock().ok().and_then(|mut c| {
                let later = c.pending.split_off(&(pages - skip));
                let handled = std::mem::replace(&mut c.pending, later);
                for v in handled.into_values() {
                    if c.handled.as_ref().is_none_or(|best| cursor_after(&v, best)) {
                        c.handled = Some(v);
                    }
                }
                c.handled.as_ref().map(Value::to_string)
            });
            let checkpoint = crate::state::Checkpoint {
                step: id.clone(),
                window: window.clone(),
                pages,
                cursor,
            };
            if let Err(e) = store.set_checkpoint(&run_id, &checkpoint) {
                tracing::warn!(step = %id, "Could not save a checkpoint: {e}");
            }
        };
        if skip > 0 {
            // Kept from the start, so that resuming this run again does not
            // read the pages handled before it.
            save(skip);
        }
        Some(crate::checkpoint::Tracker::new(skip, Box::new(save)))
    }

    async fn call_attempts(
        &self,
        step: &Step,
        conn: &crate::connection::Connection,
        action: &str,
        params: &serde_json::Map<String, Value>,
        key: Option<&str>,
        pages: Option<&Arc<crate::checkpoint::Tracker>>,
    ) -> Result<Done, StepError> {
        let progress = self.progress();
        let mut attempt = 1;
        loop {
            let sent = Arc::new(AtomicU64::new(0));
            let counter = Arc::clone(&sent);
            let report = Arc::clone(&progress);
            let track = move |n: u64| {
                counter.store(n, Ordering::Relaxed);
                report(n);
            };
            let fut = conn.stream(action, params, &self.outlet, &track, key, pages);
            let result = match step.timeout {
                Some(limit) => match tokio::time::timeout(limit.0, fut).await {
                    Ok(r) => r.map_err(|e| e.0),
                    // A write cut short may have been applied; one that is
                    // idempotent may be sent again.
                    Err(_) if conn.action(action).map(|a| !a.is_idempotent()).unwrap_or(true) => Err(format!(
                        "timed out after {}; {}, so it is not sent again",
                        human(limit.0),
                        crate::connection::MAYBE_SENT
                    )),
                    Err(_) => Err(format!("timed out after {}", human(limit.0))),
                },
                None => fut.await.map_err(|e| e.0),
            };
            match result {
                // A read stopped because the run is ending (a step after it
                // failed, or a signal): not every page was read. (A write that
                // went through is done, whatever happens to the run.)
                Ok(_) if self.scope.is_cancelled() && !conn.action(action).map(|a| a.is_write()).unwrap_or(true) => {
                    return Err(StepError::Cancelled)
                }
                Ok(count) => {
                    return Ok(Done {
                        count,
                        ..Done::default()
                    })
                }
                Err(msg)
                    if sent.load(Ordering::Relaxed) == 0
                        && !conn.action(action).map(|a| a.is_write()).unwrap_or(true) =>
                {
                    // The run is ending: a read is not tried again. (A write's
                    // error goes on as it is: it tells whether it may have
                    // been applied.)
                    if self.scope.is_cancelled() {
                        return Err(StepError::Cancelled);
                    }
                    match retry_wait(step.retry.as_ref(), attempt) {
                        Some(wait) => {
                            tracing::warn!(step = %step.id, attempt, "Retrying after error: {msg}");
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = crate::connection::until_stopped() => return Err(StepError::Cancelled),
                            }
                            attempt += 1;
                        }
                        None => return Err(StepError::Failed(msg)),
                    }
                }
                Err(msg) => return Err(StepError::Failed(msg)),
            }
        }
    }

    async fn lua(&mut self, step: &Step) -> Result<Done, StepError> {
        let source = self
            .run
            .lw
            .scripts
            .get(&step.id)
            .cloned()
            .ok_or_else(|| format!("the script of step `{}` was not loaded", step.id))?;
        let opts = match (&step.lua, &step.run) {
            (Some(spec), _) => spec.options(),
            _ => super::model::LuaOptions::default(),
        };
        let limits = crate::lua::Limits {
            memory: opts
                .memory_limit
                .map(|m| m.0)
                .unwrap_or(crate::lua::DEFAULT_MEMORY_LIMIT),
            instructions: opts.instruction_limit.unwrap_or(crate::lua::DEFAULT_INSTRUCTION_LIMIT),
        };
        let mut ctx = json!({"inputs": self.run.inputs});
        if let Some(item) = self.scope.item() {
            ctx["item"] = item.clone();
        }
        let inlet = self.inlet.take().unwrap_or(Inlet::Empty);
        let interrupt = Arc::new(AtomicBool::new(false));
        let job = Arc::new(LuaJob {
            source,
            limits,
            id: step.id.clone(),
            ctx,
            from: step.from.as_ref().map(|f| f.names().join("`, `")).unwrap_or_default(),
            continue_on_error: step.on_error == OnError::Continue,
            interrupt: Arc::clone(&interrupt),
            outlet: lua::Exit::new(&self.outlet),
            rejects: lua::Exit::new(&self.rejects),
            scope: Arc::clone(&self.scope),
        });
        let ended = Arc::clone(&job);
        let progress = self.progress();
        let nested = self.scope.item().is_some();
        let result = match opts.parallel.unwrap_or(1) {
            // Inside a `for_each`, where each item would start its own
            // states and threads, one state does.
            states if states > 1 && !nested => timed(step.timeout, lua_in_states(job, inlet, progress, states)).await,
            _ => timed(step.timeout, lua_in_one_state(job, inlet, progress)).await,
        };
        // A script still running (timed out) stops at its next instruction
        // check; one stuck in a C call sends nothing more either way.
        interrupt.store(true, Ordering::Relaxed);
        ended.outlet.close();
        ended.rejects.close();
        result
    }

    async fn write(&mut self, step: &Step) -> Result<Done, StepError> {
        let Some(spec) = &step.write else {
            return Err(StepError::Cancelled);
        };
        let opts = spec.options();
        let path = self.render_path("write.path", &opts.path)?;
        let format = opts
            .format
            .or_else(|| crate::source::format_of(&path))
            .ok_or_else(|| format!("cannot tell the format of {}; add `format:`", path.display()))?;
        let format = if opts.table.is_some() && opts.format.is_none() {
            Format::Sqlite
        } else {
            format
        };
        // The file as the system finds it (through links, to a file that
        // may not be there yet), with its table (names of any case).
        let target = crate::sink::resolve_link(&path).unwrap_or_else(|| path.clone());
        let dir = target
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        let canonical = match target.file_name() {
            Some(name) => std::fs::canonicalize(dir)
                .map(|d| d.join(name))
                .unwrap_or_else(|_| target.clone()),
            None => target.clone(),
        };
        let table = (format == Format::Sqlite).then(|| opts.table.as_deref().unwrap_or("records").to_lowercase());
        // (A device or a pipe, `/dev/null` say, may take any number.)
        let special = std::fs::metadata(&canonical).is_ok_and(|m| !m.is_file());
        if let Some(mut written) = (!special).then(|| self.run.written.lock().ok()).flatten() {
            match written.get(&(canonical.clone(), table.clone())) {
                Some(other) if *other != step.id => {
                    return Err(StepError::Failed(format!(
                        "the step `{other}` writes {} too: one would replace or mix into the other's records; give each step a file of its own",
                        path.display()
                    )));
                }
                _ => {
                    written.insert((canonical, table), step.id.clone());
                }
            }
        }
        let mut inlet = self.inlet.take().unwrap_or(Inlet::Empty);
        if self.run.dry_run {
            // Count what would be written; touch no file.
            let mut n = 0u64;
            while let Some(batch) = inlet.next().await {
                n += batch?.len() as u64;
            }
            let _ = std::io::Write::write_fmt(
                &mut std::io::stdout().lock(),
                format_args!("step `{}` would write {n} records to {}\n", step.id, path.display()),
            );
            return Ok(Done {
                count: n,
                ..Done::default()
            });
        }
        let (outlet, scope, progress) = (Arc::clone(&self.outlet), Arc::clone(&self.scope), self.progress());
        let handle = Handle::current();
        let job = tokio::task::spawn_blocking(move || {
            let sink_opts = crate::sink::SinkOptions {
                path: &path,
                format,
                table: opts.table.as_deref(),
                append: opts.append,
                columns: opts.columns.as_deref(),
            };
            let mut sink = crate::sink::open(&sink_opts).map_err(|e| e.to_string())?;
            let mut written = 0u64;
            while let Some(batch) = handle.block_on(inlet.next()) {
                let mut batch = batch?;
                if scope.is_cancelled() {
                    return Err(StepError::Cancelled);
                }
                // A file or table is committed whole when the step ends, not
                // as records come: their page marks go no further, and
                // dropped unsettled they hold the read's checkpoint back.
                drop(batch.take_marks());
                match sink.write_batch(&batch) {
                    Ok(n) => written += n,
                    Err((n, e)) => return Err(StepError::Failed(format!("{e} (record {})", written + n + 1))),
                }
                if !outlet.is_empty() {
                    handle.block_on(outlet.send(batch));
                }
                progress(written);
            }
            if scope.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            sink.finish().map_err(|e| e.to_string())?;
            Ok(Done {
                count: written,
                ..Done::default()
            })
        });
        job.await
            .unwrap_or_else(|e| Err(StepError::Failed(format!("internal error: {e}"))))
    }

    async fn for_each(&mut self, step: &Step) -> Result<Done, StepError> {
        let nested = Arc::new(step.steps.clone().unwrap_or_default());
        let over = step.for_each.clone().unwrap_or_default();
        let mut list: Option<std::vec::IntoIter<Value>> = None;
        if crate::template::is_template(&over) {
            let ctx = self.run.context(&self.scope);
            match self
                .run
                .templates
                .render(&over, &ctx)
                .map_err(|e| format!("`for_each`: {e}"))?
            {
                Value::Array(a) => list = Some(a.into_iter()),
                Value::Null => list = Some(Vec::new().into_iter()),
                other => {
                    return Err(StepError::Failed(format!(
                        "`for_each` must give a list; it gave {}",
                        type_name(&other)
                    )))
                }
            }
        }
        let mut inlet = self.inlet.take().unwrap_or(Inlet::Empty);
        let semaphore = Arc::new(Semaphore::new(step.concurrency.unwrap_or(1).max(1)));
        let export = (!self.outlet.is_empty()).then(|| Arc::clone(&self.outlet));
        let summary = Arc::new(Mutex::new(StepReport::pending("for_each")));
        let first_error: Arc<Mutex<Option<String>>> = Arc::default();
        let progress = self.progress();
        let mut set = JoinSet::new();
        let mut buffer: std::vec::IntoIter<Value> = Vec::new().into_iter();
        let mut index = 0u64;
        // The page marks of the batch being dispatched: each item's task
        // settles a copy once its steps are done. Where the items' results
        // or rejects go on to other steps, the records are not finished with
        // here: their marks are dropped, holding the checkpoint back.
        let hold = export.is_some() || !self.rejects.is_empty();
        let mut current = Marks::default();
        loop {
            let item = match buffer.next() {
                Some(i) => i,
                None => match &mut list {
                    Some(l) => match l.next() {
                        Some(i) => i,
                        None => break,
                    },
                    None => match inlet.next().await {
                        Some(Ok(mut batch)) => {
                            let marks = batch.take_marks();
                            let next = if hold { Marks::default() } else { marks };
                            std::mem::replace(&mut current, next).settle();
                            buffer = batch
                                .iter()
                                .map(|r| r.map(std::borrow::Cow::into_owned))
                                .collect::<Result<Vec<_>, _>>()
                                .map_err(StepError::Failed)?
                                .into_iter();
                            continue;
                        }
                        Some(Err(e)) => return Err(StepError::Failed(e)),
                        None => break,
                    },
                },
            };
            if self.scope.is_cancelled() || first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                break;
            }
            let Ok(permit) = Arc::clone(&semaphore).acquire_owned().await else {
                break;
            };
            // An item that failed while this one waited for its turn stops it.
            if self.scope.is_cancelled() || first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
                break;
            }
            index += 1;
            let rejects = (!self.rejects.is_empty()).then(|| (Arc::clone(&self.rejects), item.clone()));
            let item_task = ItemTask {
                run: Arc::clone(&self.run),
                parent: Arc::clone(&self.scope),
                nested: Arc::clone(&nested),
                item,
                index,
                retry: step.retry.clone(),
                timeout: step.timeout.map(|t| t.0),
                export: export.clone(),
            };
            let (summary, first_error, continue_on_error, progress) = (
                Arc::clone(&summary),
                Arc::clone(&first_error),
                step.on_error == OnError::Continue,
                Arc::clone(&progress),
            );
            let marks = current.clone();
            let scope = Arc::clone(&self.scope);
            set.spawn(async move {
                let _permit = permit;
                let (result, reports) = item_task.run().await;
                // Handled: its steps ran to the end (not stopped by a failure
                // elsewhere) and no write of it is left uncertain, which a
                // resumed run must meet again.
                let uncertain = reports.values().any(|r| r.uncertain > 0);
                if !scope.is_cancelled() && !uncertain && (result.is_ok() || continue_on_error) {
                    marks.settle();
                }
                if let Ok(mut s) = summary.lock() {
                    let mut r = StepReport::pending("for_each");
                    r.steps = reports;
                    s.absorb(&r);
                    match &result {
                        Ok(()) => s.count += 1,
                        // Refused because the run is stopping: not a failure.
                        Err(msg) if msg.contains(crate::connection::NOT_SENT_STOPPING) => {}
                        Err(_) => s.failed += 1,
                    }
                    progress(s.count);
                }
                if let Err(msg) = result.as_ref().map_err(|m| m.as_str()) {
                    if msg.contains(crate::connection::NOT_SENT_STOPPING) {
                        return;
                    }
                    if continue_on_error {
                        tracing::warn!(item = index, "Item failed; continuing: {msg}");
                        if let Some((outlet, item)) = rejects {
                            outlet.send(vec![self::rejected(&item, msg)].into()).await;
                        }
                    } else if let Ok(mut e) = first_error.lock() {
                        e.get_or_insert(format!("item {index}: {msg}"));
                    }
                }
            });
            while let Some(r) = set.try_join_next() {
                if let Err(e) = r {
                    return Err(StepError::Failed(format!("internal error: {e}")));
                }
            }
        }
        while let Some(r) = set.join_next().await {
            if let Err(e) = r {
                return Err(StepError::Failed(format!("internal error: {e}")));
            }
        }
        let s = summary
            .lock()
            .map(|s| s.clone())
            .unwrap_or_else(|_| StepReport::pending("for_each"));
        if self.scope.is_cancelled() || first_error.lock().map(|e| e.is_some()).unwrap_or(false) {
            self.scope.report(&step.id, |r| {
                r.count = s.count;
                r.failed = s.failed;
                r.skipped = s.steps.values().map(|c| c.skipped).sum();
                r.uncertain = s.steps.values().map(|c| c.uncertain).sum();
                r.steps = s.steps.clone();
            });
        }
        if let Some(e) = first_error.lock().ok().and_then(|e| e.clone()) {
            return Err(StepError::Failed(e));
        }
        if self.scope.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        current.settle();
        Ok(Done {
            count: s.count,
            failed: s.failed,
            rejected: 0,
            // Writes skipped or held back by the nested steps.
            skipped: s.steps.values().map(|c| c.skipped).sum(),
            uncertain: s.steps.values().map(|c| c.uncertain).sum(),
            children: s.steps,
        })
    }
}

/// Renders every string of a JSON value as a template.
fn render_tree(t: &Templates, v: &Value, ctx: &Mj) -> Result<Value, crate::template::TemplateError> {
    Ok(match v {
        Value::String(s) => t.render(s, ctx)?,
        Value::Array(a) => Value::Array(a.iter().map(|x| render_tree(t, x, ctx)).collect::<Result<_, _>>()?),
        Value::Object(m) => {
            let mut out = serde_json::Map::new();
            for (k, x) in m {
                out.insert(k.clone(), render_tree(t, x, ctx)?);
            }
            Value::Object(out)
        }
        other => other.clone(),
    })
}

/// Opens the workflow's connections: renders their config with the inputs
/// and environment, checks it against the provider.
fn open_connections(
    lw: &LoadedWorkflow,
    inputs: &Value,
    env: &BTreeMap<String, String>,
    overrides: &std::collections::HashMap<String, ProviderOverride>,
) -> Result<std::collections::HashMap<String, Arc<crate::connection::Connection>>, Diagnostics> {
    let templates = Templates::new();
    let env_mj = Mj::from_serialize(env);
    let ctx = minijinja::context! { inputs => Mj::from_serialize(inputs), env => env_mj.clone(), secrets => env_mj };
    let mut out = std::collections::HashMap::new();
    let mut diags = Diagnostics::default();
    for (name, conn) in &lw.workflow.connections {
        let path = format!("connections.{name}");
        let Some(d) = lw.registry.get(&conn.provider) else {
            diags.push(lw.diagnostic(&path, format!("there is no provider `{}`", conn.provider)));
            continue;
        };
        let replaced = overrides.get(&conn.provider);
        let mut config = replaced.map(|o| o.config.clone()).unwrap_or_default();
        for (k, v) in &conn.config {
            if config.contains_key(k) {
                continue;
            }
            match render_tree(&templates, v, &ctx) {
                Ok(v) => {
                    config.insert(k.clone(), v);
                }
                Err(e) => diags.push(
                    lw.diagnostic(&format!("{path}.config.{k}"), e.to_string())
                        .hint("set the variable in the environment or in .env"),
                ),
            }
        }
        let from_workflow = match &conn.base_url {
            Some(t) => match templates.render_str(t, &ctx) {
                Ok(u) => Some(u),
                Err(e) => {
                    diags.push(lw.diagnostic(&format!("{path}.base_url"), e.to_string()));
                    None
                }
            },
            None => None,
        };
        let base_url = replaced
            .map(|o| {
                format!(
                    "{}{}",
                    o.origin.trim_end_matches('/'),
                    crate::connection::base_path(&d.base_url)
                )
            })
            .or_else(|| crate::connection::base_url_from_env(&conn.provider))
            .or(from_workflow);
        if !diags.is_empty() {
            continue;
        }
        let config = match crate::connection::resolve_config(d, &config) {
            Ok(c) => c,
            Err(errors) => {
                for e in errors {
                    diags.push(lw.diagnostic(&format!("{path}.config"), e));
                }
                continue;
            }
        };
        let d = if conn.rate_limit.is_some() || conn.parallel.is_some() {
            Arc::new(d.with_limits(conn.rate_limit.as_ref(), conn.parallel))
        } else {
            Arc::clone(d)
        };
        match crate::connection::Connection::new(name, d, config, base_url) {
            Ok(c) => {
                out.insert(name.clone(), Arc::new(c));
            }
            Err(e) => diags.push(lw.diagnostic(&path, e)),
        }
    }
    if diags.is_empty() {
        Ok(out)
    } else {
        Err(diags)
    }
}

/// Reports a step's running count.
type Progress = Arc<dyn Fn(u64) + Send + Sync>;

async fn timed(
    limit: Option<crate::units::Duration>,
    fut: impl std::future::Future<Output = Result<Done, StepError>>,
) -> Result<Done, StepError> {
    match limit {
        Some(limit) => match tokio::time::timeout(limit.0, fut).await {
            Ok(r) => r,
            Err(_) => Err(StepError::Failed(format!("timed out after {}", human(limit.0)))),
        },
        None => fut.await,
    }
}

/// One item of a `for_each`: its nested steps, tried again as `retry` says.
struct ItemTask {
    run: Arc<Run>,
    parent: Arc<Scope>,
    nested: Arc<Vec<Step>>,
    item: Value,
    index: u64,
    retry: Option<Retry>,
    timeout: Option<Duration>,
    export: Option<Arc<Outlet>>,
}

impl ItemTask {
    async fn run(self) -> (Result<(), String>, IndexMap<String, StepReport>) {
        let mut attempt = 1;
        loop {
            let scope = Arc::new(Scope::new(Some(Arc::clone(&self.parent)), Some(self.item.clone())));
            let batch: Batch = vec![self.item.clone()].into();
            // What this attempt passes on, counted: records gone on cannot
            // be called back, so an item that passed any is not tried again.
            let passed = Arc::new(AtomicUsize::new(0));
            let export = self.export.as_ref().map(|to| {
                let mut counted = Outlet::none();
                counted.forward(Arc::clone(to));
                let passed = Arc::clone(&passed);
                counted.set_tap(Arc::new(move |b: &Batch| {
                    passed.fetch_add(b.len(), Ordering::Relaxed);
                }));
                Arc::new(counted)
            });
            let fut = run_scope(
                Arc::clone(&self.run),
                Arc::clone(&self.nested),
                Arc::clone(&scope),
                Some(batch),
                export,
            );
            let mut timed_out = false;
            match self.timeout {
                Some(limit) => {
                    let mut fut = fut;
                    timed_out = tokio::select! {
                        () = &mut fut => false,
                        () = tokio::time::sleep(limit) => true,
                    };
                    if timed_out {
                        // The steps under way are dropped, and waited for
                        // until they are; a write among them is recorded as
                        // uncertain (see `Claim`).
                        scope.abort();
                        fut.await;
                    }
                }
                None => fut.await,
            }
            if scope.is_aborting() {
                let why = match self.timeout {
                    Some(limit) if timed_out => format!("timed out after {}", human(limit)),
                    _ => "stopped: an item around it timed out".to_owned(),
                };
                let mut uncertain = false;
                if let Ok(mut reports) = scope.reports.lock() {
                    for r in reports.values_mut() {
                        if r.status == StepStatus::Running {
                            r.status = StepStatus::Failed;
                            r.error = Some(why.clone());
                        }
                        uncertain |= r.uncertain > 0;
                    }
                }
                let why = if uncertain {
                    format!("{why}; a write under way may have reached the server ({RECORDED_UNCERTAIN})")
                } else if scope.has_unguarded_writes() {
                    format!("{why}; a write under way may have reached the server")
                } else {
                    why
                };
                // In place of what a step stopped on the way may have said.
                if let Ok(mut e) = scope.error.lock() {
                    *e = Some(why);
                }
                scope.cancelled.store(true, Ordering::Relaxed);
            }
            let reports = scope.reports();
            match scope.error() {
                None => return (Ok(()), reports),
                Some(e) => {
                    if scope.has_unguarded_writes() {
                        // Trying the item again would send a write that may
                        // have been applied; a `key` would make it safe.
                        if self.retry.as_ref().is_some_and(|r| r.attempts > 1) {
                            tracing::warn!(
                                item = self.index,
                                "Not trying the item again: a write of it without a `key` may have been applied"
                            );
                        }
                        return (Err(e), reports);
                    }
                    let passed = passed.load(Ordering::Relaxed);
                    if passed > 0 {
                        // Its records would go on a second time.
                        if self.retry.as_ref().is_some_and(|r| r.attempts > 1) {
                            tracing::warn!(
                                item = self.index,
                                "Not trying the item again: it had passed {passed} record(s) on to the steps after it"
                            );
                        }
                        return (Err(e), reports);
                    }
                    if !self.parent.is_cancelled() && !self.parent.is_aborting() {
                        if let Some(wait) = retry_wait(self.retry.as_ref(), attempt) {
                            tracing::warn!(item = self.index, attempt, "Retrying item after error: {e}");
                            tokio::select! {
                                () = tokio::time::sleep(wait) => {}
                                () = crate::connection::until_stopped() => return (Err(e), reports),
                            }
                            attempt += 1;
                            continue;
                        }
                    }
                    return (Err(e), reports);
                }
            }
        }
    }
}

/// The wait before the next attempt, or None when attempts are used up.
fn retry_wait(retry: Option<&Retry>, attempt: u32) -> Option<Duration> {
    let r = retry?;
    if attempt >= r.attempts {
        return None;
    }
    let base = r.backoff.0.as_secs_f64() * 2f64.powi(attempt as i32 - 1);
    let cap = r.max_backoff.map(|m| m.0.as_secs_f64()).unwrap_or(f64::MAX);
    Some(Duration::from_secs_f64(base.min(cap)))
}

fn human(d: Duration) -> String {
    if d.as_secs() >= 1 {
        format!("{}s", d.as_secs_f64())
    } else {
        format!("{}ms", d.as_millis())
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "text",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Whether a condition's value counts as true.
pub(crate) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !matches!(
            s.trim().to_ascii_lowercase().as_str(),
            "" | "false" | "0" | "no" | "off" | "none"
        ),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// Converts an input given as text to its declared type.
fn coerce_text(kind: InputType, text: &str) -> Result<Value, String> {
    let bad = |what: &str| format!("`{text}` is not {what}");
    match kind {
        InputType::String => Ok(Value::String(text.to_owned())),
        InputType::Integer => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| bad("a whole number")),
        InputType::Number => text
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| bad("a number")),
        InputType::Boolean => match text.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(Value::Bool(true)),
            "false" | "no" | "0" | "off" => Ok(Value::Bool(false)),
            _ => Err(bad("true or false")),
        },
        InputType::Date => crate::dates::parse(text)
            .map(|_| Value::String(text.to_owned()))
            .ok_or_else(|| bad("a date (write it like 2024-05-01 or 2024-05-01T10:00:00Z)")),
        InputType::List => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Array(_)) => Ok(v),
            // Meant as JSON, and broken: not to be read as `a,b,c`.
            Err(e) if text.trim_start().starts_with('[') => Err(format!("`{text}` is not a JSON list ({e})")),
            _ => Ok(Value::Array(
                text.split(',').map(|s| Value::String(s.trim().to_owned())).collect(),
            )),
        },
        InputType::Object => match serde_json::from_str::<Value>(text) {
            Ok(v @ Value::Object(_)) => Ok(v),
            _ => Err(bad("a JSON object")),
        },
    }
}

/// Checks a default (or any JSON value) against an input type.
pub(crate) fn coerce_value(kind: InputType, v: &Value) -> Result<Value, String> {
    let ok = match (kind, v) {
        (_, Value::String(s)) if kind != InputType::String => return coerce_text(kind, s),
        (InputType::String, Value::String(_)) => true,
        (InputType::Integer, Value::Number(n)) => n.is_i64() || n.is_u64(),
        (InputType::Number, Value::Number(_)) => true,
        (InputType::Boolean, Value::Bool(_)) => true,
        (InputType::List, Value::Array(_)) => true,
        (InputType::Object, Value::Object(_)) => true,
        _ => false,
    };
    if ok {
        Ok(v.clone())
    } else {
        Err(format!("{v} is not of type {}", super::validate::input_type_name(kind)))
    }
}

fn resolve_inputs(lw: &LoadedWorkflow, given: &[(String, String)]) -> Result<Value, Diagnostics> {
    let mut diags = Diagnostics::default();
    let declared = &lw.workflow.inputs;
    let mut out = serde_json::Map::new();
    for (i, (key, text)) in given.iter().enumerate() {
        if given[..i].iter().any(|(k, _)| k == key) {
            diags.push(
                lw.diagnostic(&format!("inputs.{key}"), format!("--input {key} is given twice"))
                    .hint("give each input once"),
            );
            continue;
        }
        match declared.get(key) {
            None => {
                let mut d = lw.diagnostic("inputs", format!("the workflow has no input `{key}`"));
                d = match did_you_mean(key, declared.keys().map(String::as_str)) {
                    Some(s) => d.hint(format!("did you mean `{s}`?")),
                    None if declared.is_empty() => d.hint("this workflow takes no inputs"),
                    None => d.hint(format!(
                        "its inputs are: {}",
                        declared.keys().cloned().collect::<Vec<_>>().join(", ")
                    )),
                };
                diags.push(d);
            }
            Some(input) => match coerce_text(input.kind, text) {
                Ok(v) => {
                    out.insert(key.clone(), v);
                }
                Err(e) => diags.push(lw.diagnostic(&format!("inputs.{key}"), format!("--input {key}: {e}"))),
            },
        }
    }
    for (key, input) in declared {
        if out.contains_key(key) {
            continue;
        }
        match &input.default {
            Some(d) => match coerce_value(input.kind, d) {
                Ok(v) => {
                    out.insert(key.clone(), v);
                }
                Err(e) => diags.push(lw.diagnostic(&format!("inputs.{key}.default"), e)),
            },
            None => diags.push(
                lw.diagnostic(&format!("inputs.{key}"), format!("the input `{key}` is required"))
                    .hint(format!("pass it with --input {key}=...")),
            ),
        }
    }
    if diags.is_empty() {
        Ok(Value::Object(out))
    } else {
        Err(diags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness() {
        for v in [json!(true), json!(1), json!("yes"), json!([1]), json!({"a": 1})] {
            assert!(truthy(&v), "{v}");
        }
        for v in [
            json!(false),
            json!(0),
            json!("false"),
            json!(""),
            json!(null),
            json!([]),
        ] {
            assert!(!truthy(&v), "{v}");
        }
    }

    #[test]
    fn input_coercion() {
        assert_eq!(coerce_text(InputType::Integer, "42").unwrap(), json!(42));
        assert!(coerce_text(InputType::Integer, "4.2").is_err());
        assert_eq!(coerce_text(InputType::Boolean, "yes").unwrap(), json!(true));
        assert_eq!(coerce_text(InputType::List, "a, b").unwrap(), json!(["a", "b"]));
        assert_eq!(coerce_text(InputType::List, "[1,2]").unwrap(), json!([1, 2]));
        assert!(coerce_text(InputType::List, "[1,2")
            .unwrap_err()
            .contains("is not a JSON list"));
        assert!(coerce_text(InputType::Date, "someday").is_err());
        assert!(coerce_value(InputType::Integer, &json!("x")).is_err());
        assert!(coerce_value(InputType::String, &json!(5)).is_err());
    }

    #[test]
    fn lua_steps_read_fields_whichever_way_the_script_is_given() {
        let step = |yaml: &str| serde_yaml::from_str::<Step>(yaml).unwrap();
        assert!(reads_fields(&step("id: m\nfrom: a\nlua: map.lua\n")));
        assert!(reads_fields(&step(
            "id: m\nfrom: a\nlua: { path: map.lua, parallel: 2 }\n"
        )));
        assert!(reads_fields(&step(
            "id: m\nfrom: a\nrun: \"function transform(r) return r end\"\n"
        )));
        assert!(!reads_fields(&step("id: w\nfrom: a\nwrite: out.jsonl\n")));
        assert!(!reads_fields(&step("id: c\nfrom: a\ncall: bench.list_deals\n")));
    }

    #[test]
    fn retry_backoff_doubles_and_caps() {
        let r = Retry {
            attempts: 4,
            backoff: crate::units::Duration(Duration::from_secs(1)),
            max_backoff: Some(crate::units::Duration(Duration::from_secs(3))),
        };
        let waits: Vec<_> = (1..5).map(|a| retry_wait(Some(&r), a)).collect();
        assert_eq!(
            waits,
            vec![
                Some(Duration::from_secs(1)),
                Some(Duration::from_secs(2)),
                Some(Duration::from_secs(3)),
                None
            ]
        );
    }
}

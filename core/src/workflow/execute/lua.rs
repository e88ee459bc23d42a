//! The `lua` step: a script over every record, in one Lua state or in
//! several at once.

use super::{rejected, Done, Scope, StepError};
use crate::checkpoint::Marks;
use crate::record::{Batch, Inlet, Outlet, BATCH_BYTES, BATCH_SIZE};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::runtime::Handle;
use tokio::sync::Semaphore;

/// What every Lua state of a `lua` step needs.
pub(super) struct LuaJob {
    pub(super) source: crate::workflow::load::ScriptSource,
    pub(super) limits: crate::lua::Limits,
    pub(super) id: String,
    pub(super) ctx: Value,
    /// The steps the records come from, for messages.
    pub(super) from: String,
    pub(super) continue_on_error: bool,
    pub(super) interrupt: Arc<AtomicBool>,
    pub(super) outlet: Exit,
    pub(super) rejects: Exit,
    pub(super) scope: Arc<Scope>,
}

/// Where a step's records go, as its Lua threads hold it: closed when the
/// step ends, so that a thread stuck where no limit reaches it (a C call
/// such as a pattern match that runs long) does not keep the steps after
/// it waiting for more.
pub(super) struct Exit(Mutex<Option<Arc<Outlet>>>);

impl Exit {
    pub(super) fn new(outlet: &Arc<Outlet>) -> Self {
        Exit(Mutex::new(Some(Arc::clone(outlet))))
    }

    /// The outlet, unless the step has ended.
    fn get(&self) -> Option<Arc<Outlet>> {
        self.0.lock().ok().and_then(|o| o.clone())
    }

    /// Lets go of the outlet: what reads from it ends once the step has.
    pub(super) fn close(&self) {
        if let Ok(mut o) = self.0.lock() {
            o.take();
        }
    }
}

/// What one Lua state made of one batch, for the step to send on in order.
struct Mapped {
    records: Vec<crate::rawjson::RawRecords>,
    rejects: Vec<Value>,
    marks: Marks,
    /// The batch's place in the window of batches under way.
    _turn: tokio::sync::OwnedSemaphorePermit,
}

impl LuaJob {
    fn load(&self) -> Result<crate::lua::Script, StepError> {
        crate::lua::Script::load_interruptible(
            &self.source.code,
            &self.source.name,
            self.limits,
            &self.id,
            &self.ctx,
            Arc::clone(&self.interrupt),
        )
        .map_err(|e| StepError::Failed(e.message))
    }

    /// A script's error, led by the script's name when it does not name a
    /// place in it already (limits, what `transform` returned).
    fn located(&self, message: &str) -> String {
        if message.starts_with(&self.source.name) {
            message.to_owned()
        } else {
            format!("{}: {message}", self.source.name)
        }
    }

    /// Runs `script` over the records of `batch`, numbered on from
    /// `position`. What it returns gathers in `out`, handed to `full` each
    /// time a batch is full (false: stop, and so does this, with false).
    /// Records the script fails on go to `reject` when the step continues on
    /// errors; otherwise the first failure ends the step.
    fn map(
        &self,
        script: &crate::lua::Script,
        batch: &crate::lua::Scanned,
        position: &mut u64,
        out: &mut crate::lua::Output,
        mut reject: impl FnMut(Value),
        mut full: impl FnMut(&mut crate::lua::Output) -> bool,
    ) -> Result<bool, StepError> {
        let mut index = 0;
        let len = batch.records().len();
        while index < len {
            let (ran, result) = script.transform_many(&|i| batch.input(i), index..len, out, BATCH_SIZE);
            index += ran;
            *position += ran as u64;
            if (out.len() >= BATCH_SIZE || out.bytes() >= BATCH_BYTES) && !full(out) {
                return Ok(false);
            }
            let Err(e) = result else { continue };
            let failed = index;
            index += 1;
            *position += 1;
            if !self.continue_on_error {
                return Err(StepError::Failed(format!(
                    "{} (record {position} of `{}`)",
                    self.located(&e.message),
                    self.from
                )));
            }
            // A record with no value in flow goes to the rejects as its
            // text, not lost.
            let record = batch
                .records()
                .value(failed)
                .unwrap_or_else(|| match batch.input(failed) {
                    crate::lua::Input::Value(v) => v.clone(),
                    input => Value::String(input.text().unwrap_or_default().to_owned()),
                });
            let message = self.located(&e.message);
            reject(rejected(&record, &message));
            tracing::warn!(step = %self.id, record = *position, "Record rejected: {}", crate::secrets::mask(&message));
        }
        Ok(true)
    }
}

/// The batches of `inlet` with the fields of their records found (see
/// [`crate::lua::Scanned`]), one batch ahead of the thread the script runs
/// on: that thread only runs Lua. The batches stop coming when the receiver
/// is dropped, and `inlet` is dropped then too.
fn scan_ahead(mut inlet: Inlet) -> tokio::sync::mpsc::Receiver<Result<(Marks, crate::lua::Scanned), String>> {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tokio::spawn(async move {
        loop {
            let batch = tokio::select! {
                () = tx.closed() => return,
                batch = inlet.next() => batch,
            };
            let Some(batch) = batch else { return };
            let scanned = batch.map(|mut batch| (batch.take_marks(), crate::lua::Scanned::of(batch.shared())));
            if tx.send(scanned).await.is_err() {
                return;
            }
        }
    });
    rx
}

/// A `lua` step in one Lua state, on a thread of its own.
pub(super) async fn lua_in_one_state(
    job: Arc<LuaJob>,
    inlet: Inlet,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
) -> Result<Done, StepError> {
    let handle = Handle::current();
    let mut inlet = scan_ahead(inlet);
    let work = tokio::task::spawn_blocking(move || {
        let script = job.load()?;
        // Records come out as JSON text, sent on a batch at a time, with
        // the page marks of the batch they came from. A script with
        // `finish` may fold any record into what it emits at the end, so
        // it holds every mark until then.
        let mut out = crate::lua::Output::default();
        let mut done = Done::default();
        let mut held = Marks::default();
        let folds = script.has_finish();
        let send = |out: &mut crate::lua::Output, done: &mut Done, marks: Marks| -> bool {
            if out.is_empty() {
                marks.settle();
                return true;
            }
            done.count += out.len() as u64;
            let records = crate::record::Records::Raw(out.take());
            match job.outlet.get() {
                Some(outlet) => handle.block_on(outlet.send(Batch::marked(records, marks))),
                None => false,
            }
        };
        let mut position = 0u64;
        let mut pending = Marks::default();
        while let Some(batch) = handle.block_on(inlet.recv()) {
            let (marks, scanned) = batch?;
            if job.scope.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            if folds {
                held.extend(marks.clone());
            }
            pending.extend(marks.clone());
            let mut rejected = 0;
            let going = job.map(
                &script,
                &scanned,
                &mut position,
                &mut out,
                |record| {
                    rejected += 1;
                    if let Some(rejects) = job.rejects.get().filter(|r| !r.is_empty()) {
                        handle.block_on(rejects.send(Batch::marked(vec![record].into(), marks.clone())));
                    }
                },
                |out| send(out, &mut done, pending.clone()),
            )?;
            // The rejects and `pending` have their own.
            marks.settle();
            done.rejected += rejected;
            if !going {
                return Ok(done);
            }
            // What this batch gave moves on now, unless the next batch is
            // already there and no page marks tie these records to their
            // own pages (a resumed run reads on after the last page all of
            // whose records were handled): then it waits for that batch's,
            // up to a full batch. Each batch sent wakes the step after this
            // one, which on a small machine costs as much as mapping many
            // records.
            let room = out.len() < BATCH_SIZE && out.bytes() < BATCH_BYTES;
            let wait = room && !out.is_empty() && pending.is_empty() && !inlet.is_empty();
            if !wait && !send(&mut out, &mut done, std::mem::take(&mut pending)) {
                return Ok(done);
            }
            progress(done.count);
        }
        if job.scope.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        script
            .finish_into(&mut out)
            .map_err(|e| format!("{} (in `finish`)", e.message))?;
        send(&mut out, &mut done, held);
        progress(done.count);
        Ok(done)
    });
    work.await
        .unwrap_or_else(|e| Err(StepError::Failed(format!("internal error: {e}"))))
}

/// A `lua` step in `states` Lua states, each on a thread of its own: each
/// batch goes to the first state free to take it, and what the states make
/// goes on in the order the batches came.
pub(super) async fn lua_in_states(
    job: Arc<LuaJob>,
    mut inlet: Inlet,
    progress: Arc<dyn Fn(u64) + Send + Sync>,
    states: usize,
) -> Result<Done, StepError> {
    // Each result names its batch; none when the state could not start.
    let (results, mut mapped) = tokio::sync::mpsc::channel::<(Option<u64>, Result<Mapped, StepError>)>(2 * states);
    // One queue for all states: a state that is busy, or not yet running,
    // holds no batch back.
    #[allow(clippy::type_complexity)]
    let (queue, batches) =
        tokio::sync::mpsc::channel::<(u64, u64, Marks, crate::lua::Scanned, tokio::sync::OwnedSemaphorePermit)>(states);
    let batches = Arc::new(Mutex::new(batches));
    // At most this many batches between upstream and downstream: while one
    // batch takes long, the others do not pile up waiting for their turn.
    let window = Arc::new(Semaphore::new(4 * states));
    let mut workers = Vec::with_capacity(states);
    for _ in 0..states {
        let (job, results, batches) = (Arc::clone(&job), results.clone(), Arc::clone(&batches));
        workers.push(tokio::task::spawn_blocking(move || {
            // Validation refused scripts with `finish` here: a workflow runs
            // only once it has been checked.
            let script = match job.load() {
                Ok(script) => script,
                Err(e) => {
                    let _ = results.blocking_send((None, Err(e)));
                    return;
                }
            };
            let mut out = crate::lua::Output::default();
            loop {
                let next = match batches.lock() {
                    Ok(mut batches) => batches.blocking_recv(),
                    Err(_) => None,
                };
                let Some((seq, mut position, marks, scanned, turn)) = next else {
                    return;
                };
                let (mut records, mut rejects) = (Vec::new(), Vec::new());
                // A state that breaks down fails the step in this batch's
                // turn, rather than leaving a gap the others wait behind.
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    job.map(
                        &script,
                        &scanned,
                        &mut position,
                        &mut out,
                        |record| rejects.push(record),
                        |out| {
                            records.push(out.take());
                            true
                        },
                    )
                }))
                .unwrap_or_else(|_| {
                    Err(StepError::Failed(format!(
                        "internal error in a Lua state of step `{}`",
                        job.id
                    )))
                })
                .map(|_| {
                    if !out.is_empty() {
                        records.push(out.take());
                    }
                    Mapped {
                        records,
                        rejects,
                        marks,
                        _turn: turn,
                    }
                });
                let failed = result.is_err();
                if results.blocking_send((Some(seq), result)).is_err() || failed {
                    return;
                }
            }
        }));
    }
    // The states hold the queue's receiving end: when the last one stops,
    // sending to it fails.
    drop((results, batches));
    // Fired (dropped) when the collector stops, for whatever reason: no
    // more batches are taken from upstream then.
    let (stopped, mut stop) = tokio::sync::oneshot::channel::<()>();
    let scope = Arc::clone(&job.scope);
    let dispatch = async move {
        let (mut seq, mut position) = (0u64, 0u64);
        loop {
            let batch = tokio::select! {
                biased;
                _ = &mut stop => break,
                batch = inlet.next() => batch,
            };
            let Some(batch) = batch else { break };
            let mut batch = batch?;
            if scope.is_cancelled() {
                return Err(StepError::Cancelled);
            }
            let n = batch.len() as u64;
            let marks = batch.take_marks();
            let scanned = crate::lua::Scanned::of(batch.shared());
            let turn = tokio::select! {
                biased;
                _ = &mut stop => break,
                turn = Arc::clone(&window).acquire_owned() => match turn {
                    Ok(turn) => turn,
                    Err(_) => break,
                },
            };
            let sent = tokio::select! {
                biased;
                _ = &mut stop => break,
                sent = queue.send((seq, position, marks, scanned, turn)) => sent,
            };
            if sent.is_err() {
                break;
            }
            seq += 1;
            position += n;
        }
        Ok::<_, StepError>(seq)
    };
    let (outlet, rejects, scope) = (
        job.outlet.get().unwrap_or_default(),
        job.rejects.get().unwrap_or_default(),
        Arc::clone(&job.scope),
    );
    let collect = async move {
        let _stopped = stopped;
        let mut done = Done::default();
        let mut waiting = BTreeMap::new();
        let mut due = 0u64;
        while let Some((seq, result)) = mapped.recv().await {
            // A state that could not load the script fails the step at once;
            // a record that fails does so in its turn, as in one state.
            let Some(seq) = seq else {
                return Err(result.err().unwrap_or(StepError::Cancelled));
            };
            waiting.insert(seq, result);
            while let Some(result) = waiting.remove(&due) {
                let Mapped {
                    records,
                    rejects: failed,
                    marks,
                    ..
                } = result?;
                due += 1;
                if scope.is_cancelled() {
                    return Err(StepError::Cancelled);
                }
                done.rejected += failed.len() as u64;
                if !rejects.is_empty() {
                    for record in failed {
                        rejects.send(Batch::marked(vec![record].into(), marks.clone())).await;
                    }
                }
                for records in records {
                    done.count += records.len() as u64;
                    let batch = Batch::marked(crate::record::Records::Raw(records), marks.clone());
                    if !outlet.send(batch).await {
                        // Nothing takes records any more: stop, as one state does.
                        return Ok((done, None));
                    }
                }
                marks.settle();
                progress(done.count);
            }
        }
        if scope.is_cancelled() {
            return Err(StepError::Cancelled);
        }
        Ok((done, Some(due)))
    };
    let (dispatched, collected) = tokio::join!(dispatch, collect);
    if !matches!(collected, Ok((_, Some(_)))) {
        // Stopped early: a state still mapping a batch nobody will take
        // stops at its next instruction check.
        job.interrupt.store(true, Ordering::Relaxed);
    }
    // Every state has stopped or stops now: its queue or its results are gone.
    let mut lost = false;
    for worker in workers {
        lost |= worker.await.is_err();
    }
    let (done, mapped) = collected?;
    let dispatched = dispatched?;
    if lost || mapped.is_some_and(|mapped| mapped != dispatched) {
        return Err(StepError::Failed(format!(
            "internal error: a Lua state of step `{}` stopped before mapping every batch",
            job.id
        )));
    }
    Ok(done)
}

//! Sandboxed Lua for record transforms.
//!
//! Scripts come from users and their colleagues' repositories, so flow does
//! not trust them: a state has only the `table`, `string`, `math`, `utf8` and
//! `coroutine` libraries, no `load`, `require`, `io`, `os` or `debug`, accepts
//! text chunks only, has a memory limit, and every call runs under an
//! instruction budget. The `flow` module gives scripts what mapping needs:
//! JSON, md5, dates, phone numbers and logging.

mod convert;
mod flowlib;
pub(crate) mod lazy;
mod pool;

use mlua::{
    ffi, ChunkMode, Function, HookTriggers, Lua, LuaOptions, LuaSerdeExt, StdLib, Table, Value as LuaValue, VmState,
};
use serde_json::Value;
use std::cell::RefCell;
use std::ffi::c_int;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

pub use flowlib::md5_hex;

/// Default memory limit of one Lua state.
pub const DEFAULT_MEMORY_LIMIT: u64 = 64 * 1024 * 1024;
/// Default instruction budget of one call, about a second of work.
pub const DEFAULT_INSTRUCTION_LIMIT: u64 = 100_000_000;
/// How often the instruction hook runs.
const HOOK_EVERY: u32 = 10_000;

/// Limits of a script.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes the state may allocate.
    pub memory: u64,
    /// Instructions one call may run.
    pub instructions: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory: DEFAULT_MEMORY_LIMIT,
            instructions: DEFAULT_INSTRUCTION_LIMIT,
        }
    }
}

/// A script failed: it did not compile, raised an error, ran out of its
/// budget, or returned something that is not a record.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ScriptError {
    /// The message, starting with the script's name and line where Lua knows them.
    pub message: String,
}

impl ScriptError {
    fn new(message: impl Into<String>) -> Self {
        ScriptError {
            message: message.into(),
        }
    }
}

/// Turns an mlua error into one line a user can act on.
fn describe(err: &mlua::Error, limits: &Limits) -> String {
    match err {
        mlua::Error::SyntaxError { message, .. } => message.clone(),
        mlua::Error::MemoryError(_) => format!(
            "the script ran out of memory (limit {} MiB); raise `memory_limit` or keep less data in the script",
            limits.memory / (1024 * 1024)
        ),
        mlua::Error::CallbackError { cause, .. } => describe(cause, limits),
        mlua::Error::RuntimeError(m) => {
            let first = m.lines().next().unwrap_or(m);
            // `error({})`, `error(nil)`: a value with nothing to say.
            let kind = first.split(": 0x").next().unwrap_or(first);
            if first == "nil" {
                "the script raised an error with no message (`error(nil)`); give `error` a text that says what went wrong".to_owned()
            } else if first.contains(": 0x") && ["table", "userdata", "function", "thread"].contains(&kind) {
                format!("the script raised a {kind} as its error, with no message; give `error` a text that says what went wrong")
            } else {
                first.to_owned()
            }
        }
        mlua::Error::WithContext { cause, .. } => describe(cause, limits),
        other => {
            let text = other.to_string();
            text.lines().next().unwrap_or(&text).to_owned()
        }
    }
}

/// A new sandboxed state with the `flow` module installed.
fn sandbox(limits: &Limits, step: &str) -> mlua::Result<Lua> {
    let libs = StdLib::TABLE | StdLib::STRING | StdLib::MATH | StdLib::UTF8 | StdLib::COROUTINE;
    let lua = Lua::new_with(libs, LuaOptions::default())?;
    let globals = lua.globals();
    for name in [
        "load",
        "loadfile",
        "dofile",
        "require",
        "collectgarbage",
        "loadstring",
        "module",
    ] {
        globals.raw_set(name, LuaValue::Nil)?;
    }
    // `string.dump` would hand out bytecode; the sandbox deals in text only.
    let string: Table = globals.get("string")?;
    string.raw_set("dump", LuaValue::Nil)?;
    flowlib::install(&lua, step)?;
    lua.set_memory_limit(limits.memory as usize)?;
    // A record's tables and strings die young: generational collection
    // reclaims them at a fraction of the incremental collector's cost.
    lua.gc_gen(0, 0);
    Ok(lua)
}

/// Makes `pcall`, `xpcall` and `coroutine.resume` refuse to start once the
/// call's instruction budget is spent. Without this a script could catch the
/// budget error in a loop and never stop: the error raised by the wrapper is
/// outside the protected call, so it reaches the caller.
fn guard_protected_calls(lua: &Lua, used: &Arc<AtomicU64>, max: u64) -> mlua::Result<()> {
    let globals = lua.globals();
    let coroutine: Table = globals.get("coroutine")?;
    let targets: [(&Table, &str); 3] = [(&globals, "pcall"), (&globals, "xpcall"), (&coroutine, "resume")];
    for (table, name) in targets {
        let original: Function = table.get(name)?;
        let used = Arc::clone(used);
        let guarded = lua.create_function(move |_, args: mlua::MultiValue| {
            if used.load(Ordering::Relaxed) > max {
                return Err(mlua::Error::RuntimeError(format!(
                    "the script ran more than {max} instructions in one call; raise `instruction_limit` or make it do less work"
                )));
            }
            original.call::<mlua::MultiValue>(args)
        })?;
        table.raw_set(name, guarded)?;
    }
    Ok(())
}

/// Checks a script without running any record through it: it must compile
/// and define `function transform(record, ctx)`. True when it also defines
/// `finish`.
pub fn check(source: &str, chunk_name: &str) -> Result<bool, ScriptError> {
    Script::load(source, chunk_name, Limits::default(), "check", &Value::Null).map(|s| s.has_finish())
}

/// A loaded transform script, ready to be called once per record.
pub struct Script {
    /// Dropped first: the state gets its own allocator back before it closes.
    _pool: pool::Attached,
    lua: Lua,
    /// The metatable that marks tables as arrays.
    array_mt: Table,
    transform: Function,
    finish: Option<Function>,
    ctx: Table,
    used: Arc<AtomicU64>,
    limits: Limits,
    /// The record being handed over, its buffers kept between records.
    tape: RefCell<convert::Tape>,
    /// The field names the tape last pushed, as Lua strings.
    names: Table,
    /// Writes what the script returns, its buffers kept between records.
    writer: RefCell<convert::Writer>,
    /// The metatable of records kept as JSON text until read (see `lazy`).
    lazy_mt: Table,
    /// The tape that decodes their nested values; Lua holds its address,
    /// so it goes last, after the state.
    _scratch: Scratch,
}

/// A tape owned here and used by Lua through its address.
struct Scratch(*mut convert::Tape);

impl Scratch {
    fn new() -> Self {
        Scratch(Box::into_raw(Box::default()))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: made by `Box::into_raw` in `new`, freed once here, after
        // the state that used it (declared before it in `Script`).
        drop(unsafe { Box::from_raw(self.0) });
    }
}

/// What a call returned.
pub type Records = Vec<Value>;

/// Records for one protected call (see [`Script::transform_many`]).
struct Batch<'f, 'r> {
    records: &'f dyn Fn(usize) -> Input<'r>,
    range: std::ops::Range<usize>,
    limit: usize,
}

impl Script {
    /// Compiles and runs a script's top level, then finds its functions.
    /// `ctx` holds the values scripts see as `ctx` (`inputs`, `item`, `step`).
    pub fn load(source: &str, chunk_name: &str, limits: Limits, step: &str, ctx: &Value) -> Result<Self, ScriptError> {
        Self::load_interruptible(source, chunk_name, limits, step, ctx, Arc::new(AtomicBool::new(false)))
    }

    /// Like [`Script::load`], with a flag that stops the script wherever it
    /// is when set (a step's timeout, or the run being cancelled).
    pub fn load_interruptible(
        source: &str,
        chunk_name: &str,
        limits: Limits,
        step: &str,
        ctx: &Value,
        interrupt: Arc<AtomicBool>,
    ) -> Result<Self, ScriptError> {
        // Made before the state, so that it is dropped after it on every path.
        let scratch = Scratch::new();
        let lua = sandbox(&limits, step).map_err(|e| ScriptError::new(describe(&e, &limits)))?;
        // Declared after the state, so that it is dropped before it.
        let pool = pool::Pool::attach(&lua).map_err(|e| ScriptError::new(describe(&e, &limits)))?;
        let used = Arc::new(AtomicU64::new(0));
        let budget = Arc::clone(&used);
        let max = limits.instructions;
        lua.set_global_hook(HookTriggers::new().every_nth_instruction(HOOK_EVERY), move |_, _| {
            if interrupt.load(Ordering::Relaxed) {
                return Err(mlua::Error::RuntimeError("the script was stopped".into()));
            }
            let n = budget.fetch_add(HOOK_EVERY as u64, Ordering::Relaxed) + HOOK_EVERY as u64;
            if n > max {
                Err(mlua::Error::RuntimeError(format!(
                    "the script ran more than {max} instructions in one call; raise `instruction_limit` or make it do less work"
                )))
            } else {
                Ok(VmState::Continue)
            }
        })
        .map_err(|e| ScriptError::new(describe(&e, &limits)))?;
        guard_protected_calls(&lua, &used, max).map_err(|e| ScriptError::new(describe(&e, &limits)))?;

        let array_mt = lua.array_metatable();
        let array_mt_ptr = array_mt.to_pointer();
        let names = lua
            .create_table()
            .map_err(|e| ScriptError::new(describe(&e, &limits)))?;
        let tape_ptr = scratch.0;
        // SAFETY: runs in a protected call with the array metatable at index
        // 1; the scratch tape lives as long as the state (see `Script`).
        // What is left on the stack is returned: the metatable alone.
        let lazy_mt: Table = unsafe {
            lua.exec_raw(&array_mt, |state| {
                lazy::install(state, 1, tape_ptr);
                ffi::lua_remove(state, 1);
            })
        }
        .map_err(|e| ScriptError::new(describe(&e, &limits)))?;
        let lazy_mt_ptr = lazy_mt.to_pointer();
        flowlib::install_encode(&lua, array_mt_ptr, lazy_mt_ptr, limits.memory as usize)
            .map_err(|e| ScriptError::new(describe(&e, &limits)))?;

        let name = format!("@{chunk_name}");
        lua.load(source)
            .set_name(name)
            .set_mode(ChunkMode::Text)
            .exec()
            .map_err(|e| ScriptError::new(describe(&e, &limits)))?;
        let globals = lua.globals();
        let transform = match globals.get::<LuaValue>("transform") {
            Ok(LuaValue::Function(f)) => f,
            _ => {
                return Err(ScriptError::new(format!(
                    "{chunk_name}: the script does not define `function transform(record, ctx)`"
                )))
            }
        };
        let finish = match globals.get::<LuaValue>("finish") {
            Ok(LuaValue::Function(f)) => Some(f),
            _ => None,
        };
        let ctx_table = flowlib::context(&lua, step, ctx).map_err(|e| ScriptError::new(describe(&e, &limits)))?;
        Ok(Script {
            _pool: pool,
            lua,
            array_mt,
            transform,
            finish,
            ctx: ctx_table,
            used,
            limits,
            tape: RefCell::default(),
            names,
            writer: RefCell::new(
                convert::Writer::new(array_mt_ptr, lazy_mt_ptr, limits.memory as usize).with_scratch(tape_ptr),
            ),
            lazy_mt,
            _scratch: scratch,
        })
    }

    /// True when the script defines `finish`.
    pub fn has_finish(&self) -> bool {
        self.finish.is_some()
    }

    /// Runs `transform(record, ctx)`: nil (or an empty table) drops the
    /// record, a table is the new record, a list of tables becomes several
    /// records.
    pub fn transform(&self, record: &Value) -> Result<Records, ScriptError> {
        let mut out = Output::default();
        self.transform_into(Input::Value(record), &mut out)?;
        Ok(out.into_values())
    }

    /// Like [`Script::transform`] for a record given as a value or as JSON
    /// text; the records it returns are appended to `out` as JSON text.
    /// Returns how many.
    pub fn transform_into(&self, record: Input<'_>, out: &mut Output) -> Result<usize, ScriptError> {
        let before = out.len();
        let (_, result) = self.transform_many(&|_| record, 0..1, out, usize::MAX);
        result.map(|()| out.len() - before)
    }

    /// Runs `transform` over `records(i)` for each `i` of `range`, as
    /// [`Script::transform_into`] does, in one go: it stops at the record
    /// that fails (which adds nothing to `out`), or once `out` holds `limit`
    /// records or more. Returns how many records ran without an error, and
    /// the error of the record after them if it failed.
    pub fn transform_many<'r>(
        &self,
        records: &dyn Fn(usize) -> Input<'r>,
        range: std::ops::Range<usize>,
        out: &mut Output,
        limit: usize,
    ) -> (usize, Result<(), ScriptError>) {
        let mut ran = 0;
        let result = self.call(
            &self.transform,
            Some(Batch { records, range, limit }),
            &mut ran,
            "transform",
            out,
        );
        (ran, result.map(|_| ()))
    }

    /// Runs `finish(ctx)` if the script defines it, for records emitted at the
    /// end (aggregations).
    pub fn finish(&self) -> Result<Records, ScriptError> {
        let mut out = Output::default();
        self.finish_into(&mut out)?;
        Ok(out.into_values())
    }

    /// Like [`Script::finish`], appending the records to `out` as JSON text.
    pub fn finish_into(&self, out: &mut Output) -> Result<usize, ScriptError> {
        match &self.finish {
            Some(f) => self.call(f, None, &mut 0, "finish", out),
            None => Ok(0),
        }
    }

    /// Calls `func(ctx)`, or `func(record, ctx)` for each record of
    /// `records` (see [`Script::transform_many`]), in one protected call,
    /// each call under a fresh instruction budget, and appends what it
    /// returns to `out`. `ran` counts the records done without an error.
    /// Returns how many records were appended.
    fn call<'r>(
        &self,
        func: &Function,
        records: Option<Batch<'_, 'r>>,
        ran: &mut usize,
        name: &str,
        out: &mut Output,
    ) -> Result<usize, ScriptError> {
        let scratch = self._scratch.0;
        let mut tape = self.tape.borrow_mut();
        let tape = &mut *tape;
        let mut writer = self.writer.borrow_mut();
        let writer = &mut *writer;
        let before = out.len();
        let mut failed: Option<String> = None;
        // Before each call: a fresh budget, and the scratch tape free. A Lua
        // error in the last call may have left it marked as in use.
        let fresh = || {
            self.used.store(0, Ordering::Relaxed);
            // SAFETY: no Lua code runs now, so nothing else uses the tape.
            unsafe {
                (*scratch).busy = false;
                (*scratch).current = [0, 0];
            }
        };
        // SAFETY: the closure runs inside a protected call with the function,
        // `ctx`, the array metatable, the tape's names and the metatable of
        // records kept as text at stack indices 1 to 5. A Lua error
        // (the script's, or memory running out) unwinds to that call through
        // frames that own nothing: the tapes, `out`, the counts and the
        // results are borrowed from this frame, outside the protected call.
        let called = unsafe {
            self.lua
                .exec_raw::<()>((func, &self.ctx, &self.array_mt, &self.names, &self.lazy_mt), |state| {
                    let Some(Batch { records, range, limit }) = records else {
                        fresh();
                        ffi::lua_pushvalue(state, 1);
                        ffi::lua_pushvalue(state, 2);
                        ffi::lua_call(state, 1, 1);
                        failed = records_into(state, ffi::lua_gettop(state), writer, name, out).err();
                        ffi::lua_settop(state, 0);
                        return;
                    };
                    for i in range {
                        fresh();
                        if let Err(e) = push_record(state, records(i), tape, scratch) {
                            failed = Some(e);
                            break;
                        }
                        ffi::lua_call(state, 2, 1);
                        if let Err(e) = records_into(state, ffi::lua_gettop(state), writer, name, out) {
                            failed = Some(e);
                            break;
                        }
                        ffi::lua_settop(state, 5);
                        *ran += 1;
                        if out.len() >= limit || out.bytes() >= crate::record::BATCH_BYTES {
                            break;
                        }
                    }
                    ffi::lua_settop(state, 0);
                })
        };
        // Whether or not a Lua error cut the call short, no record is under
        // way any more.
        fresh();
        called.map_err(|e| ScriptError::new(describe(&e, &self.limits)))?;
        match failed {
            Some(e) => Err(ScriptError::new(e)),
            None => Ok(out.len() - before),
        }
    }
}

/// Pushes the function at index 1, a record as it gets it, and `ctx` (at
/// index 2), with the record also left beneath them so that it lives as long
/// as the call. Errors say why the record cannot be handed over.
///
/// # Safety
/// Inside the protected call of [`Script::call`], with its five values at
/// indices 1 to 5 and nothing above them.
unsafe fn push_record(
    state: *mut ffi::lua_State,
    record: Input<'_>,
    tape: &mut convert::Tape,
    scratch: *mut convert::Tape,
) -> Result<(), String> {
    if ffi::lua_checkstack(state, 6) == 0 {
        return Err("the record is nested too deep for Lua".to_owned());
    }
    let decoded = |tape: &mut convert::Tape, t: &str| {
        tape.read(&mut serde_json::Deserializer::from_str(t))
            .map_err(|e| format!("the record is not valid JSON: {e}"))?;
        if !tape.push(state, 3, 4) {
            return Err("the record is nested too deep for Lua".to_owned());
        }
        Ok(())
    };
    match record {
        Input::Text(t) => match lazy::scan(t, &mut tape.fields) {
            // A record on its own: of no shape known to be another's.
            Some(names) => lazy::push(state, t, (&tape.fields, names, 0, true), 4, 5, scratch),
            None => decoded(tape, t)?,
        },
        Input::Scanned(Scan {
            text,
            fields: Some((fields, names, shape)),
            breaks,
        }) => lazy::push(state, text, (fields, names, shape, breaks), 4, 5, scratch),
        Input::Scanned(Scan { text, fields: None, .. }) => decoded(tape, text)?,
        Input::Value(v) => {
            tape.read(v).map_err(|e| e.to_string())?;
            if !tape.push(state, 3, 4) {
                return Err("the record is nested too deep for Lua".to_owned());
            }
        }
    }
    ffi::lua_pushvalue(state, 1);
    ffi::lua_pushvalue(state, -2);
    ffi::lua_pushvalue(state, 2);
    Ok(())
}

/// Appends what a script's function returned (at stack index `idx`) to
/// `out`: nil (or an empty table) is nothing, a table is a record, a list of
/// tables is several records. Returns how many.
unsafe fn records_into(
    state: *mut ffi::lua_State,
    idx: c_int,
    writer: &mut convert::Writer,
    func: &str,
    out: &mut Output,
) -> Result<usize, String> {
    match ffi::lua_type(state, idx) {
        ffi::LUA_TNIL => return Ok(0),
        ffi::LUA_TTABLE => {}
        _ => {
            return Err(format!(
                "`{func}` must return a table (the record), a list of tables, or nil; it returned a {}",
                convert::type_name(state, idx)
            ))
        }
    }
    if lazy::is_empty(state, idx, writer.scratch()) {
        // An empty table is an empty list: nothing to emit.
        return Ok(0);
    }
    let idx = ffi::lua_absindex(state, idx);
    let len = ffi::lua_rawlen(state, idx);
    let is_list = len > 0 && ffi::lua_rawgeti(state, idx, 1) == ffi::LUA_TTABLE;
    if len > 0 {
        ffi::lua_pop(state, 1);
    }
    // A table with names besides 1..n is one record (number keys become
    // names), not a list.
    let is_list = is_list && writer.is_list(state, idx, len);
    if !is_list {
        record_into(state, idx, writer, func, out)?;
        return Ok(1);
    }
    // A list with a bad element gives nothing: the records before it go too.
    let (text, spans, multiline) = (out.text.len(), out.spans.len(), out.multiline);
    for i in 1..=len {
        let kind = ffi::lua_rawgeti(state, idx, i as ffi::lua_Integer);
        let written = if kind == ffi::LUA_TTABLE {
            record_into(state, ffi::lua_gettop(state), writer, func, out)
        } else {
            Err(format!(
                "`{func}` returned a list whose element {i} is a {}, not a table",
                convert::type_name(state, -1)
            ))
        };
        ffi::lua_pop(state, 1);
        if let Err(e) = written {
            out.text.truncate(text);
            out.spans.truncate(spans);
            out.multiline = multiline;
            return Err(e);
        }
    }
    Ok(len)
}

/// Appends the table at `idx` to `out` as one record.
unsafe fn record_into(
    state: *mut ffi::lua_State,
    idx: c_int,
    writer: &mut convert::Writer,
    func: &str,
    out: &mut Output,
) -> Result<(), String> {
    let start = out.text.len();
    if let Err(e) = writer.write(state, idx, &mut out.text) {
        out.text.truncate(start);
        return Err(format!("`{func}` returned a table that is not a record: {e}"));
    }
    if !out.text[start..].starts_with('{') {
        let shown = out.text[start..].to_owned();
        out.text.truncate(start);
        return Err(format!(
            "`{func}` returned {shown}, which is not a record (a table with named fields)"
        ));
    }
    // Line breaks come only from the text of records kept as text: the
    // writer escapes those of strings.
    if writer.copied_breaks() {
        out.multiline |= memchr::memchr2(b'\n', b'\r', &out.text.as_bytes()[start..]).is_some();
    }
    out.spans.push((start, out.text.len()));
    out.text.push('\n');
    Ok(())
}

/// A record handed to a script.
#[derive(Clone, Copy)]
pub enum Input<'a> {
    /// A parsed record.
    Value(&'a Value),
    /// A record as JSON text, checked to be JSON before (as every record
    /// kept as text is): the fields a script leaves alone are written out as
    /// they are.
    Text(&'a str),
    /// A record as JSON text whose fields were found before (see
    /// [`Scanned`]).
    Scanned(Scan<'a>),
}

impl<'a> Input<'a> {
    /// The record's text, when it came as text.
    pub fn text(&self) -> Option<&'a str> {
        match self {
            Input::Value(_) => None,
            Input::Text(t) => Some(t),
            Input::Scanned(s) => Some(s.text),
        }
    }
}

/// One record of a [`Scanned`] batch.
#[derive(Clone, Copy)]
pub struct Scan<'a> {
    text: &'a str,
    /// Where its fields are, the bits of their names and its shape; None
    /// when the record is not kept as text but decoded whole.
    fields: Option<(&'a [lazy::Field], u128, lazy::Shape)>,
    /// Whether the text may hold a line break.
    breaks: bool,
}

/// A batch of records kept as text with the fields of each one found: the
/// work of handing a record to a script that needs no Lua state, done where
/// the records arrive rather than on the thread the script runs on.
pub struct Scanned {
    records: Arc<crate::record::Records>,
    fields: Vec<lazy::Field>,
    /// For each record: where its fields start in `fields`, how many there
    /// are (`u32::MAX`: decoded whole), the bits of their names and its
    /// shape.
    at: Vec<(u32, u32, u128, lazy::Shape)>,
}

impl Scanned {
    /// A batch with the fields of each record found, when its records are
    /// text.
    pub fn of(records: Arc<crate::record::Records>) -> Self {
        let mut fields = Vec::new();
        let mut at: Vec<(u32, u32, u128, lazy::Shape)> = Vec::new();
        match &*records {
            crate::record::Records::Raw(raw) => match raw.fields() {
                // Found as the page was read: used where they are.
                Some(found) => {
                    at.reserve(raw.len());
                    let mut last = None;
                    for item in &found.at {
                        if item.n == u32::MAX {
                            at.push((0, u32::MAX, 0, 0));
                            continue;
                        }
                        let shape = match (item.same, last) {
                            (true, Some(shape)) => shape,
                            _ => lazy::new_shape(),
                        };
                        last = Some(shape);
                        at.push((item.from, item.n, item.names, shape));
                    }
                }
                None => {
                    at.reserve(raw.len());
                    let mut scratch = Vec::new();
                    // The last record kept as text: its index and shape.
                    let mut last: Option<(usize, lazy::Shape)> = None;
                    for i in 0..raw.len() {
                        // A batch too large for the offsets is handed over as it is.
                        let Ok(start) = u32::try_from(fields.len()) else {
                            at.clear();
                            break;
                        };
                        let text = raw.text(i);
                        match lazy::scan(text, &mut scratch) {
                            Some(names) => {
                                let before = last.map(|(j, shape)| {
                                    let (from, n, ..) = at[j];
                                    let from = from as usize;
                                    (shape, raw.text(j), &fields[from..from + n as usize])
                                });
                                let shape = lazy::shape_of(text, &scratch, before);
                                last = Some((i, shape));
                                fields.extend_from_slice(&scratch);
                                at.push((start, scratch.len() as u32, names, shape));
                            }
                            None => at.push((start, u32::MAX, 0, 0)),
                        }
                    }
                }
            },
            crate::record::Records::Values(_) => {}
        }
        Scanned { records, fields, at }
    }

    /// The records.
    pub fn records(&self) -> &crate::record::Records {
        &self.records
    }

    /// Record `i`, for a script.
    pub fn input(&self, i: usize) -> Input<'_> {
        match (&*self.records, self.at.get(i)) {
            (crate::record::Records::Raw(raw), Some(&(start, n, names, shape))) => {
                // The fields found with the page, or here.
                let all = raw.fields().map_or(&self.fields[..], |found| &found.fields[..]);
                let (start, n) = (start as usize, n as usize);
                Input::Scanned(Scan {
                    text: raw.text(i),
                    breaks: raw.multiline(),
                    fields: all
                        .get(start..start.saturating_add(n))
                        .filter(|_| n != u32::MAX as usize)
                        .map(|these| (these, names, shape)),
                })
            }
            _ => self.records.input(i),
        }
    }
}

/// Records a script returned, as JSON text.
#[derive(Debug, Default)]
pub struct Output {
    /// The records, each followed by a line break.
    text: String,
    spans: Vec<(usize, usize)>,
    /// Whether a record has line breaks of its own.
    multiline: bool,
}

impl Output {
    /// How many records.
    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// How many bytes of text they take.
    pub fn bytes(&self) -> usize {
        self.text.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// The records gathered so far, leaving this empty.
    pub fn take(&mut self) -> crate::rawjson::RawRecords {
        // The next batch is likely the size of this one: room for it now
        // saves copying the text as it grows.
        let (bytes, records) = (self.text.len(), self.spans.len());
        let text = std::mem::replace(&mut self.text, String::with_capacity(bytes));
        let spans = std::mem::replace(&mut self.spans, Vec::with_capacity(records));
        let multiline = std::mem::take(&mut self.multiline);
        crate::rawjson::RawRecords::lines(text, spans, multiline)
    }

    /// The records parsed.
    pub fn into_values(mut self) -> Vec<Value> {
        let raw = self.take();
        (0..raw.len()).filter_map(|i| raw.value(i)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn script(src: &str) -> Script {
        Script::load(
            src,
            "test.lua",
            Limits::default(),
            "t",
            &json!({"inputs": {"source": "expo"}}),
        )
        .unwrap()
    }

    /// What a script makes of records given as text (kept as text until
    /// read) and as values (decoded whole), one fresh state each: the two
    /// must agree.
    fn both_ways(src: &str, records: &[Value]) -> Vec<Value> {
        let (lazy, eager) = (script(src), script(src));
        let mut from_text = Output::default();
        let mut from_values = Output::default();
        for rec in records {
            let text = rec.to_string();
            lazy.transform_into(Input::Text(&text), &mut from_text).unwrap();
            eager.transform_into(Input::Value(rec), &mut from_values).unwrap();
        }
        let (a, b) = (from_text.into_values(), from_values.into_values());
        assert_eq!(a, b, "{src}");
        a
    }

    #[test]
    fn tables_with_number_keys_and_names_keep_every_field() {
        let out = both_ways(
            "function transform(r) r[1] = {q = 1} return r end",
            &[json!({"a": 1, "b": "x"})],
        );
        assert_eq!(out, vec![json!({"1": {"q": 1}, "a": 1, "b": "x"})]);
        let out = both_ways(
            "function transform(r) r.a = {[1] = 1, [3] = 3} r.b = {[1] = 1, x = 2} r.c = {1, 2, 3} return r end",
            &[json!({"z": 0})],
        );
        assert_eq!(
            out,
            vec![json!({"a": {"1": 1, "3": 3}, "b": {"1": 1, "x": 2}, "c": [1, 2, 3], "z": 0})]
        );
    }

    #[test]
    fn a_name_set_twice_is_written_once_or_refused() {
        // The text's "2", set again as r[2]: the script's value, once.
        let s = script("function transform(r) r[2] = 'n' return r end");
        let mut out = Output::default();
        s.transform_into(Input::Text(r#"{"2":"two","x":1}"#), &mut out).unwrap();
        assert_eq!(out.take().text(0), r#"{"2":"n","x":1}"#);
        let err = text_error("function transform(r) return {x = 1, [2] = 'a', ['2'] = 'b'} end", "{}");
        assert!(err.contains("`2` is set twice"), "{err}");
    }

    /// The error a script makes of one record given as text.
    fn text_error(src: &str, text: &str) -> String {
        script(src)
            .transform_into(Input::Text(text), &mut Output::default())
            .unwrap_err()
            .message
    }

    fn sample() -> Vec<Value> {
        vec![
            json!({"id": 7, "name": "Анна \"А\"\n", "phone": "8 (912) 345-67-89", "summ": 1.5,
                   "ok": true, "none": null, "tags": ["a", {"b": [1, 2]}], "deep": {"x": {"y": "z"}},
                   "big": 9007199254740993u64, "neg": -12, "exp": 1e300}),
            json!({"id": 8, "name": "Борис", "phone": "", "summ": 0, "ok": false, "none": null,
                   "tags": [], "deep": {"x": {}}, "big": 1, "neg": 0, "exp": 2.5}),
        ]
    }

    #[test]
    fn records_kept_as_text_behave_as_decoded_ones() {
        let got = both_ways(
            "function transform(r)
               r.deal_id, r.id = r.id, nil
               r.client_name, r.name = r.name, nil
               r.phone = flow.phone(r.phone)
               r.missing = r.nothing_here
               return r
             end",
            &sample(),
        );
        assert_eq!(got[0]["deal_id"], json!(7));
        assert_eq!(got[0]["client_name"], json!("Анна \"А\"\n"));
        assert_eq!(got[0]["phone"], json!("+79123456789"));
        assert!(got[0].get("id").is_none() && got[0].get("name").is_none());
        assert_eq!(got[0]["tags"], json!(["a", {"b": [1, 2]}]));
        both_ways("function transform(r) return r end", &sample());
        both_ways("function transform(r) return {r, {copy = r}} end", &sample());
    }

    #[test]
    fn nested_tables_read_from_text_are_the_records_own() {
        let got = both_ways(
            "function transform(r)
               assert(r.deep == r.deep)
               r.deep.x.added = #r.tags
               table.insert(r.tags, 'more')
               r.deep.x = r.deep.x
               return r
             end",
            &sample(),
        );
        assert_eq!(got[0]["deep"], json!({"x": {"y": "z", "added": 2}}));
        assert_eq!(got[1]["tags"], json!(["more"]));
    }

    #[test]
    fn whole_table_functions_see_every_field_of_a_record_kept_as_text() {
        both_ways(
            "function transform(r)
               local names = {}
               for k in pairs(r) do names[#names + 1] = k end
               table.sort(names)
               local n, k = 0, next(r)
               while k do n = n + 1; k = next(r, k) end
               return {names = table.concat(names, ','), n = n}
             end",
            &sample(),
        );
        let got = both_ways(
            "function transform(r)
               local id = rawget(r, 'id')
               rawset(r, 'phone', nil)
               assert(getmetatable(r) == nil)
               return {id = id, json = flow.json.encode(r), keys = r}
             end",
            &sample(),
        );
        let encoded: Value = serde_json::from_str(got[0]["json"].as_str().unwrap()).unwrap();
        assert_eq!(encoded, got[0]["keys"]);
        assert!(encoded.get("phone").is_none() && encoded.get("summ").is_some());
        both_ways(
            "function transform(r) setmetatable(r, {__index = function() return 1 end}) r.z = r.q return r end",
            &sample(),
        );
    }

    #[test]
    fn a_record_kept_as_text_outlives_its_call() {
        // Each record keeps its own text: one held from an earlier call
        // still reads as itself.
        let got = both_ways(
            "function transform(r)
               local prev = last
               last = r
               if prev then prev.next_id = r.id return prev end
             end",
            &sample(),
        );
        assert_eq!(got.len(), 1);
        assert_eq!(got[0]["id"], json!(7));
        assert_eq!(got[0]["next_id"], json!(8));
    }

    #[test]
    fn a_record_with_every_field_removed_is_dropped() {
        let got = both_ways(
            "function transform(r) for _, k in ipairs({'a', 'b'}) do r[k] = nil end return r end",
            &[json!({"a": 1, "b": 2}), json!({"a": 1, "c": 3})],
        );
        assert_eq!(got, vec![json!({"c": 3})]);
    }

    #[test]
    fn scripts_never_hold_the_functions_that_would_see_a_record_as_text() {
        // Taken at the top level, before any record, and from `pairs`.
        both_ways(
            "local rs, rg, nx, gm = rawset, rawget, next, getmetatable
             local raw_next = pairs({})
             function transform(r)
               local kinds = {}
               for k in raw_next, r do kinds[#kinds + 1] = type(k) end
               table.sort(kinds)
               rs(r, 'id', rg(r, 'id') + 1)
               return {kinds = table.concat(kinds, ','), first = type(nx(r)), mt = gm(r) == nil, r = r}
             end",
            &sample(),
        );
        let err = text_error(
            "function transform(r) setmetatable({}, {__gc = function() end}) return r end",
            r#"{"a":1}"#,
        );
        assert!(err.contains("finalizers"), "{err}");
        // Nor through a record whose text holds the `__gc` field.
        let err = text_error(
            "function transform(r) setmetatable({}, r) return r end",
            r#"{"__gc":0,"a":1}"#,
        );
        assert!(err.contains("finalizers"), "{err}");
    }

    #[test]
    fn a_coroutine_may_yield_inside_the_wrapped_library_functions() {
        let got = both_ways(
            "function transform(r)
               local t = setmetatable({}, {__pairs = function()
                 coroutine.yield()
                 return next, {k = 'v'}, nil
               end})
               local co = coroutine.wrap(function() for k, v in pairs(t) do r[k] = v end end)
               co()
               co()
               return r
             end",
            &sample(),
        );
        assert_eq!(got[0]["k"], json!("v"));
    }

    #[test]
    fn odd_names_and_numbers_read_from_text_as_when_decoded() {
        let got = both_ways(
            r#"function transform(r)
               r.empty, r[""] = r[""], nil
               r.z2, r.f2 = r.z, r.f
               r.zt = math.type(r.z)
               return r
             end"#,
            &[json!({"": 1, "a": 2, "z": -0.0, "f": 1.5e3})],
        );
        assert_eq!(got[0]["empty"], json!(1));
        assert!(got[0].get("").is_none());
        assert_eq!(got[0]["zt"], json!("float"));
        // A number Lua cannot hold fails the script when read, as it fails
        // the record when decoded whole.
        let err = text_error("function transform(r) r.y = r.x return r end", r#"{"x":1e400,"w":1}"#);
        assert!(err.contains("field `x`"), "{err}");
        let err = text_error(
            "function transform(r) for k in pairs(r) do end return r end",
            r#"{"w":1,"x":1e400}"#,
        );
        assert!(err.contains("field `x`"), "{err}");
        // `-0` is a float to JSON readers.
        let s = script("function transform(r) r.t = math.type(r.z) return r end");
        let mut out = Output::default();
        s.transform_into(Input::Text(r#"{"z":-0}"#), &mut out).unwrap();
        assert_eq!(out.into_values()[0]["t"], json!("float"));
    }

    #[test]
    fn records_scanned_ahead_map_as_records_given_as_text() {
        let src = "function transform(r)
                     r.deal_id, r.id = r.id, nil
                     r.phone = flow.phone(r.phone)
                     return r
                   end";
        // Kept as text, and not: escaped names, a name twice, an array, a
        // number; 70 fields.
        let wide: serde_json::Map<String, Value> = (0..70).map(|i| (format!("f{i}"), json!(i))).collect();
        let mut texts: Vec<String> = sample().iter().map(Value::to_string).collect();
        texts.extend(
            [
                r#"{"a\"b": 1, "id": 2}"#,
                r#"{"id": 1, "id": 2}"#,
                r#"  { "id" : [ 1 , { "b" : "}" } ] , "c" : "x\\y" }  "#,
            ]
            .map(str::to_owned),
        );
        texts.push(Value::Object(wide).to_string());
        texts.push(sample()[1].to_string());
        let mut lines = texts.join("\n");
        lines.push('\n');
        let scanned = Scanned::of(Arc::new(crate::record::Records::Raw(
            crate::rawjson::RawRecords::from_lines(lines),
        )));
        let (a, b) = (script(src), script(src));
        let (mut from_scan, mut from_text) = (Output::default(), Output::default());
        let n = texts.len();
        let (ran, result) = a.transform_many(&|i| scanned.input(i), 0..n, &mut from_scan, n);
        assert_eq!((ran, result.is_ok()), (n, true));
        b.transform_many(&|i| Input::Text(&texts[i]), 0..n, &mut from_text, n)
            .1
            .unwrap();
        assert_eq!(from_scan.into_values(), from_text.into_values());
        // Records that are values pass through as values.
        let values = Scanned::of(Arc::new(crate::record::Records::Values(sample())));
        assert!(matches!(values.input(1), Input::Value(v) if v == &sample()[1]));
    }

    #[test]
    fn records_of_one_shape_are_written_as_each_one_is() {
        // What the script does differs from record to record: fields added,
        // removed, swapped, set under a number key; records of other shapes
        // (other names, other order, fewer fields) come in between.
        let src = "function transform(r)
                     local n = r.id
                     if n % 2 == 0 then r.extra = n end
                     if n % 3 == 0 then r.comment = nil end
                     if n % 5 == 0 then r[7] = 'seven' end
                     if n % 7 == 0 then r.b, r.a = r.a, r.b end
                     if n % 11 == 0 then r.z = {n, {deep = n}} end
                     r.deal_id, r.id = r.id, nil
                     return r
                   end";
        let texts: Vec<String> = (0..60)
            .map(|i| match i % 13 {
                4 => format!(r#"{{"id":{i},"b":"x{i}","a":"y","comment":"c"}}"#),
                9 => format!(r#"{{"id":{i},"a":"y","b":"x{i}"}}"#),
                10 => format!(r#"{{"id":{i},"a":"y","c":"x{i}","comment":"c"}}"#),
                _ => format!(r#"{{"id":{i},"a":"Кузнецов {i}","b":{i}.5,"comment":"c\"q","7":null}}"#),
            })
            .collect();
        let mut lines = texts.join("\n");
        lines.push('\n');
        let scanned = Scanned::of(Arc::new(crate::record::Records::Raw(
            crate::rawjson::RawRecords::from_lines(lines),
        )));
        // Records given as text one by one are of no shape known to be
        // another's: each is written on its own.
        let (a, b) = (script(src), script(src));
        let (mut from_scan, mut one_by_one) = (Output::default(), Output::default());
        let n = texts.len();
        let (ran, result) = a.transform_many(&|i| scanned.input(i), 0..n, &mut from_scan, n);
        assert_eq!((ran, result.is_ok()), (n, true));
        for text in &texts {
            b.transform_into(Input::Text(text), &mut one_by_one).unwrap();
        }
        assert_eq!(from_scan.text, one_by_one.text);
        // The same records in an API's page, their fields found as the page
        // is read (as for a Lua step after a call).
        let page = format!("{{\"data\": [{}], \"last_page\": 1}}", texts.join(",\n "));
        let (_, raw) = crate::rawjson::split(page, &["data".to_owned()], true).unwrap();
        let raw = raw.unwrap();
        assert!(raw.fields().is_some());
        let paged = Scanned::of(Arc::new(crate::record::Records::Raw(raw)));
        let mut from_page = Output::default();
        let (ran, result) = script(src).transform_many(&|i| paged.input(i), 0..n, &mut from_page, n);
        assert_eq!((ran, result.is_ok()), (n, true));
        assert_eq!(from_page.text, one_by_one.text);
        // Records of as many fields, named otherwise past those the script
        // touches, one after the other: no shape is taken for another's.
        let texts: Vec<String> = (0..10)
            .map(|i| format!(r#"{{"id":{i},"a":"y","{}":{i}}}"#, ["x", "z"][i % 2]))
            .collect();
        let page = format!("[{}]", texts.join(","));
        let (_, raw) = crate::rawjson::split(page, &[], true).unwrap();
        let paged = Scanned::of(Arc::new(crate::record::Records::Raw(raw.unwrap())));
        let (mut from_page, mut one_by_one) = (Output::default(), Output::default());
        let src = "function transform(r) r.deal_id, r.id = r.id, nil return r end";
        script(src)
            .transform_many(&|i| paged.input(i), 0..10, &mut from_page, 10)
            .1
            .unwrap();
        let b = script(src);
        for text in &texts {
            b.transform_into(Input::Text(text), &mut one_by_one).unwrap();
        }
        assert_eq!(from_page.text, one_by_one.text);
        assert!(
            from_page.text.contains(r#"{"a":"y","deal_id":9,"z":9}"#),
            "{}",
            from_page.text
        );
        assert!(from_scan.text.contains(r#""7":"seven","a":"#), "{}", from_scan.text);
        assert!(
            from_scan.text.contains(r#""a":"y","b":"x9","deal_id":9}"#),
            "{}",
            from_scan.text
        );
        // The same keys in the table, and not the same fields left in the
        // text (an escaped string is never decoded up front).
        let src = "function transform(r) if r.id % 2 == 0 then r.comment = nil end return r end";
        let (a, b) = (script(src), script(src));
        let (mut from_scan, mut one_by_one) = (Output::default(), Output::default());
        let scanned = Scanned::of(Arc::new(crate::record::Records::Raw(
            crate::rawjson::RawRecords::from_lines(
                (0..6)
                    .map(|i| format!("{{\"id\":{i},\"comment\":\"c\\\"q\"}}\n"))
                    .collect(),
            ),
        )));
        a.transform_many(&|i| scanned.input(i), 0..6, &mut from_scan, 6)
            .1
            .unwrap();
        for i in 0..6 {
            b.transform_into(scanned.records().input(i), &mut one_by_one).unwrap();
        }
        assert_eq!(from_scan.text, one_by_one.text);
        assert_eq!(from_scan.text.matches("comment").count(), 3, "{}", from_scan.text);
    }

    /// Random records, `n` of them: names drawn from a few, in the order of
    /// the record before, its first names only, those and one more, or
    /// shuffled; now and then a name twice or escaped (records that cannot
    /// be kept as text); values of every kind.
    fn random_records(seed: u64, n: usize) -> Vec<String> {
        let mut state = seed;
        let mut next = move |below: usize| {
            // xorshift64*
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % below
        };
        const NAMES: [&str; 9] = ["id", "a", "b", "c", "name", "x", "y", "7", "comment"];
        const VALUES: [&str; 10] = [
            "1",
            "-2.5",
            "\"Кузнецов\"",
            "\"s\\\"q\"",
            "null",
            "true",
            "{\"k\": [1, 2]}",
            "[1, {\"b\": \"}\"}]",
            "\"\"",
            "9007199254740993",
        ];
        let mut last: Vec<&str> = vec!["id", "a", "b"];
        (0..n)
            .map(|i| {
                let mut names: Vec<&str> = match next(6) {
                    0 | 1 => last.clone(),
                    2 => last[..next(last.len() + 1)].to_vec(),
                    3 => {
                        let mut more = last.clone();
                        more.extend(NAMES.iter().find(|m| !last.contains(m)));
                        more
                    }
                    _ => {
                        let mut pool = NAMES.to_vec();
                        let k = next(NAMES.len() + 1);
                        (0..k).map(|_| pool.remove(next(pool.len()))).collect()
                    }
                };
                last = names.clone();
                match next(20) {
                    0 if !names.is_empty() => names.push(names[0]),
                    1 => names.push("i\\u0064"),
                    _ => {}
                }
                let fields: Vec<String> = names
                    .iter()
                    .map(|&name| match name {
                        "id" => format!("\"id\": {i}"),
                        _ => format!("\"{name}\": {}", VALUES[next(VALUES.len())]),
                    })
                    .collect();
                format!("{{{}}}", fields.join(", "))
            })
            .collect()
    }

    #[test]
    fn random_records_map_alike_from_a_page_a_file_lines_and_values() {
        let scripts = [
            // Reads, sets, removes and moves fields, differently from record
            // to record.
            "function transform(r)
               local n = tonumber(r.id) or 0
               if n % 2 == 0 then r.seen = r.name end
               if n % 3 == 0 then r.a = nil end
               if n % 5 == 0 then r.b = r.c end
               if n % 7 == 0 and r.x ~= nil then r.x = {r.x} end
               if n % 11 == 0 then r[8] = 'eight' end
               return r
             end",
            // Every name, as `pairs` finds them.
            "function transform(r)
               local names = {}
               for k in pairs(r) do names[#names + 1] = tostring(k) end
               table.sort(names)
               r.names = table.concat(names, ',')
               return r
             end",
            // A copy made field by field; fields removed and set again;
            // the raw and whole-table functions.
            "function transform(r)
               local out = {}
               for k, v in pairs(r) do out[k] = v end
               out.first = next(r) ~= nil
               out.raw_a = rawget(r, 'a')
               out.len = rawlen(r)
               if (tonumber(r.id) or 0) % 4 == 1 then r.name = nil; r.name = 'again'; out.name = r.name end
               return out
             end",
            // The benchmark's renaming.
            "function transform(r)
               r.deal_id, r.id = r.id, nil
               r.client, r.name = r.name, nil
               r.amount, r.b = r.b, nil
               return r
             end",
        ];
        let dir = tempfile::tempdir().unwrap();
        for seed in 1..=6u64 {
            let texts = random_records(seed, 1200);
            let values: Vec<Value> = texts
                .iter()
                .map(|t| serde_json::from_str(t).unwrap_or_else(|e| panic!("{t}: {e}")))
                .collect();
            let n = texts.len();
            // An API's page, its records' fields found as it is read.
            let page = format!("{{\"data\": [{}], \"last_page\": 1}}", texts.join(","));
            let (_, raw) = crate::rawjson::split(page, &["data".to_owned()], true).unwrap();
            let paged = Scanned::of(Arc::new(crate::record::Records::Raw(raw.unwrap())));
            // A JSON Lines file, in batches, the same.
            let path = dir.path().join(format!("{seed}.jsonl"));
            std::fs::write(&path, texts.join("\n")).unwrap();
            let mut batches = Vec::new();
            crate::source::read_batches(&path, crate::workflow::model::Format::Jsonl, None, true, &mut |b| {
                batches.push(Scanned::of(Arc::new(b)));
                true
            })
            .unwrap();
            // Lines whose fields the step finds itself (as read back from a
            // spool).
            let lined = Scanned::of(Arc::new(crate::record::Records::Raw(
                crate::rawjson::RawRecords::from_lines(texts.join("\n") + "\n"),
            )));
            for src in scripts {
                let mut from_values = Output::default();
                let eager = script(src);
                for v in &values {
                    eager.transform_into(Input::Value(v), &mut from_values).unwrap();
                }
                let want = from_values.into_values();
                let mut from_page = Output::default();
                let (ran, result) = script(src).transform_many(&|i| paged.input(i), 0..n, &mut from_page, n);
                assert_eq!((ran, result.map_err(|e| e.message)), (n, Ok(())));
                let mut from_file = Output::default();
                let lazy = script(src);
                for batch in &batches {
                    let len = batch.records().len();
                    let (ran, result) = lazy.transform_many(&|i| batch.input(i), 0..len, &mut from_file, usize::MAX);
                    assert_eq!((ran, result.map_err(|e| e.message)), (len, Ok(())));
                }
                let mut from_lines = Output::default();
                let (ran, result) = script(src).transform_many(&|i| lined.input(i), 0..n, &mut from_lines, n);
                assert_eq!((ran, result.map_err(|e| e.message)), (n, Ok(())));
                for (way, got) in [
                    ("page", from_page.into_values()),
                    ("file", from_file.into_values()),
                    ("lines", from_lines.into_values()),
                ] {
                    assert_eq!(got.len(), want.len(), "{way}, seed {seed}: {src}");
                    for (k, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert_eq!(g, w, "{way}, seed {seed}, record {k} ({}): {src}", texts[k]);
                    }
                }
            }
        }
    }

    #[test]
    fn a_line_break_in_the_text_of_a_record_is_noted() {
        let s = script("function transform(r) r.n = 1 return r end");
        for (page, breaks) in [
            ("{\"d\": [{\"a\": [1,\n 2]}, {\"a\": \"x\\ny\"}]}", true),
            ("{\"d\": [{\"a\": [1,\r 2]}, {\"a\": 1}]}", true),
            ("{\"d\": [{\"a\": [1, 2]}, {\"a\": \"x\\ny\"}]}\n", false),
        ] {
            let (_, raw) = crate::rawjson::split(page.to_owned(), &["d".to_owned()], true).unwrap();
            let scanned = Scanned::of(Arc::new(crate::record::Records::Raw(raw.unwrap())));
            let mut out = Output::default();
            s.transform_many(&|i| scanned.input(i), 0..2, &mut out, 2).1.unwrap();
            assert_eq!(out.multiline, breaks, "{page:?}");
            // Written out, each record is one line.
            let mut lines = Vec::new();
            crate::record::Records::Raw(out.take()).write_jsonl(&mut lines).unwrap();
            let lines = String::from_utf8(lines).unwrap();
            assert_eq!(lines.lines().count(), 2, "{lines}");
            assert!(
                lines.contains(r#"{"a":[1,2],"n":1}"#) || lines.contains(r#"{"a":[1, 2],"n":1}"#),
                "{lines}"
            );
        }
    }

    #[test]
    fn records_that_cannot_be_kept_as_text_are_decoded_whole() {
        let s = script("function transform(r) r.seen = true return r end");
        for text in [
            r#"{"a\"b": 1, "c": 2}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"  { "a" : [ 1 , { "b" : "}" } ] , "c" : "x\\y" }  "#,
        ] {
            let mut out = Output::default();
            s.transform_into(Input::Text(text), &mut out).unwrap();
            let mut want: Value = serde_json::from_str(text).unwrap();
            want["seen"] = json!(true);
            assert_eq!(out.into_values(), vec![want], "{text}");
        }
        let wide: serde_json::Map<String, Value> = (0..70).map(|i| (format!("f{i}"), json!(i))).collect();
        both_ways("function transform(r) r.f3 = nil return r end", &[Value::Object(wide)]);
    }

    #[test]
    fn transform_returns_record_nil_or_list() {
        let s = script(
            "function transform(r, ctx)
               if r.skip then return nil end
               if r.split then return {{a=1},{a=2}} end
               return {name = string.upper(r.name), source = ctx.inputs.source}
             end",
        );
        assert_eq!(
            s.transform(&json!({"name": "ann"})).unwrap(),
            vec![json!({"name": "ANN", "source": "expo"})]
        );
        assert!(s.transform(&json!({"skip": true})).unwrap().is_empty());
        assert_eq!(s.transform(&json!({"split": true})).unwrap().len(), 2);
    }

    #[test]
    fn finish_emits_aggregates() {
        let s = script("local n = 0 function transform(r) n = n + 1 end function finish(ctx) return {count = n} end");
        for _ in 0..3 {
            s.transform(&json!({})).unwrap();
        }
        assert_eq!(s.finish().unwrap(), vec![json!({"count": 3})]);
    }

    #[test]
    fn nulls_survive_a_round_trip() {
        let s = script("function transform(r) return r end");
        let rec = json!({"a": null, "b": [1, 2], "c": {"d": "e"}, "e": []});
        assert_eq!(s.transform(&rec).unwrap(), vec![rec]);
    }

    #[test]
    fn records_of_changing_shapes_keep_their_own_fields() {
        // Field names are reused from one record to the next while the shape
        // holds; every change of shape must still give each record its own.
        let s = script("function transform(r) r.seen = true return r end");
        let records = [
            json!({"a": 1, "b": "x", "c": [1, {"d": null}]}),
            json!({"a": 2, "b": "y", "c": []}),
            json!({"b": "z", "a": 3}),
            json!({"a": 4, "e": {"f": "g"}, "b": "w"}),
            json!({}),
            json!({"a": 5, "b": "v", "c": [true]}),
        ];
        for rec in records {
            let mut want = rec.clone();
            want["seen"] = json!(true);
            let text = rec.to_string();
            let mut out = Output::default();
            s.transform_into(Input::Text(&text), &mut out).unwrap();
            assert_eq!(out.into_values(), vec![want.clone()], "{text}");
            assert_eq!(s.transform(&rec).unwrap(), vec![want]);
        }
    }

    #[test]
    fn output_is_json_lines_even_when_a_field_kept_as_text_spans_lines() {
        let s = script("function transform(r) r.n = r.n + 1 return r end");
        let mut out = Output::default();
        for text in ["{\"n\": 1, \"k\": {\n  \"a\": [1,\n 2]\n}}", "{\"n\": 2}"] {
            s.transform_into(Input::Text(text), &mut out).unwrap();
        }
        let records = crate::record::Records::Raw(out.take());
        let mut lines = Vec::new();
        records.write_jsonl(&mut lines).unwrap();
        assert_eq!(
            String::from_utf8(lines).unwrap(),
            "{\"k\":{\"a\":[1,2]},\"n\":2}\n{\"n\":3}\n"
        );
        // Records on one line each are the output's text as it is.
        s.transform_into(Input::Text("{\"n\": 5}"), &mut out).unwrap();
        assert_eq!(out.take().as_json_lines(), Some("{\"n\":6}\n"));
    }

    #[test]
    fn fields_read_in_the_records_before_are_decoded_up_front_with_the_same_result() {
        let s = script(
            r#"function transform(r)
                 if r.kind == "touch" then r.a, r.b, r.e = r.a + 1, nil, r.e .. "!" end
                 if r.kind == "add" then r.z = r.a + r.e end
                 return r
               end"#,
        );
        let scratch = s._scratch.0;
        let once = |text: &str| {
            let mut out = Output::default();
            s.transform_into(Input::Text(text), &mut out).unwrap();
            out.take().as_json_lines().unwrap().to_owned()
        };
        assert_eq!(
            once(r#"{"a":1,"b":"x","c":1E+2,"d":"q","e":"y","kind":"touch"}"#),
            "{\"a\":2,\"c\":1E+2,\"d\":\"q\",\"e\":\"y!\",\"kind\":\"touch\"}\n"
        );
        // SAFETY: no call is under way.
        assert_eq!(
            unsafe { (*scratch).touched },
            0b11_0011,
            "a, b, e and kind were taken from the text"
        );
        // Those fields are now decoded as the record is handed over; ones
        // whose text would not come back the same stay text. Untouched, the
        // record comes out as it came.
        for text in [
            r#"{"a":-0,"b":"\u00e9","c":7,"d":"q","e":1.50,"kind":"skip"}"#,
            r#"{"a":123456789012345678901234567890,"b":null,"c":true,"d":"q","e":[1, 2],"kind":"skip"}"#,
            r#"{"a":12,"b":false,"c":"x","d":"q","e":"Анна","kind":"skip"}"#,
        ] {
            assert_eq!(once(text), format!("{text}\n"));
            // SAFETY: as above.
            assert_eq!(unsafe { (*scratch).hot }, 0b11_0011);
        }
        assert_eq!(
            once(r#"{"a":2,"b":"x","c":1,"d":"q","e":3,"kind":"add"}"#),
            "{\"a\":2,\"b\":\"x\",\"c\":1,\"d\":\"q\",\"e\":3,\"kind\":\"add\",\"z\":5}\n"
        );
        // A record of another shape: the positions learnt name other fields.
        assert_eq!(
            once(r#"{"kind":"touch","e":"w","b":1,"a":5}"#),
            "{\"a\":6,\"e\":\"w!\",\"kind\":\"touch\"}\n"
        );
    }

    #[test]
    fn an_empty_field_name_at_a_position_whose_name_was_never_kept_is_read() {
        let s = script("function transform(r) local _ = r.a, r.b return r end");
        let mut out = Output::default();
        // The first record makes both positions hot; in the second the
        // first field stays text (a float), so only the second's name is
        // kept; the third has the empty name where no name was kept.
        for text in [r#"{"a":1,"b":2}"#, r#"{"a":1.5,"b":2}"#, r#"{"":1,"b":2}"#] {
            s.transform_into(Input::Text(text), &mut out).unwrap();
        }
        assert_eq!(out.into_values()[2], json!({"": 1, "b": 2}));
    }

    #[test]
    fn a_batch_stops_at_the_record_that_fails_or_once_enough_are_out() {
        let s = script("function transform(r) if r.n == 3 then error('three') end return { r, r } end");
        let texts: Vec<String> = (1..=5).map(|n| format!("{{\"n\":{n}}}")).collect();
        let records = |i: usize| Input::Text(&texts[i]);
        let mut out = Output::default();
        let (ran, result) = s.transform_many(&records, 0..5, &mut out, usize::MAX);
        assert_eq!(ran, 2);
        assert!(result.unwrap_err().message.contains("three"));
        assert_eq!(out.len(), 4);
        let (ran, result) = s.transform_many(&records, 3..5, &mut out, 5);
        assert!(result.is_ok());
        assert_eq!((ran, out.len()), (1, 6));
        let values = out.into_values();
        assert_eq!(values[0], json!({"n": 1}));
        assert_eq!(values[5], json!({"n": 4}));
    }

    #[test]
    fn a_list_with_a_bad_element_gives_no_record_at_all() {
        let s = script("function transform(r) if r.n == 2 then return { { n = 1 }, 5 } end return r end");
        let mut out = Output::default();
        s.transform_into(Input::Text("{\"n\":1}"), &mut out).unwrap();
        let err = s.transform_into(Input::Text("{\"n\":2}"), &mut out).unwrap_err();
        assert!(err.message.contains("element 2 is a number"), "{}", err.message);
        assert_eq!(out.into_values(), vec![json!({"n": 1})]);
    }

    #[test]
    fn output_is_json_in_name_order() {
        let s = script(
            r#"function transform(r)
                 return {z = 1, a = "q\"\n\1", m = {2.5, flow.null, -0.0}, n = 3.0, [7] = "seven"}
               end"#,
        );
        let mut out = Output::default();
        s.transform_into(Input::Text("{}"), &mut out).unwrap();
        let raw = out.take();
        assert_eq!(
            raw.text(0),
            r#"{"7":"seven","a":"q\"\n\u0001","m":[2.5,null,-0.0],"n":3.0,"z":1}"#
        );
    }

    #[test]
    fn strings_that_are_not_text_are_refused() {
        let s = script("function transform(r) return {bad = string.char(255)} end");
        let err = s.transform(&json!({})).unwrap_err();
        assert!(
            err.message.contains("field `bad`") && err.message.contains("UTF-8"),
            "{}",
            err.message
        );
        let s = script("function transform(r) return {f = print or function() end} end");
        let err = s.transform(&json!({})).unwrap_err();
        assert!(
            err.message.contains("a function, which has no JSON form"),
            "{}",
            err.message
        );
        let s = script("function transform(r) local t = {} t.self = t return t end");
        let err = s.transform(&json!({})).unwrap_err();
        assert!(err.message.contains("nested more than"), "{}", err.message);
        // One short path, not a field name per level.
        assert!(err.message.len() < 250, "{}", err.message);
        let s = script("function transform(r) return { a = { b = { c = print } } } end");
        let err = s.transform(&json!({})).unwrap_err();
        assert!(err.message.contains("field `a.b.c`: a function"), "{}", err.message);
        // A division by zero is not written as null.
        for (expr, shown) in [("0/0", "NaN"), ("1/0", "inf"), ("-1/0", "-inf")] {
            let s = script(&format!("function transform(r) return {{ avg = {expr} }} end"));
            let err = s.transform(&json!({})).unwrap_err();
            assert!(
                err.message
                    .contains(&format!("field `avg`: the number {shown}, which has no JSON form")),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn a_record_too_big_for_the_memory_limit_is_an_error() {
        let limits = Limits {
            memory: 2 * 1024 * 1024,
            ..Limits::default()
        };
        let s = Script::load(
            "function transform(r) return r end",
            "big.lua",
            limits,
            "t",
            &Value::Null,
        )
        .unwrap();
        let big: Vec<String> = (0..100_000).map(|i| format!("value number {i}")).collect();
        let text = json!({ "list": big }).to_string();
        let err = s
            .transform_into(Input::Text(&text), &mut Output::default())
            .unwrap_err();
        assert!(err.message.contains("memory"), "{}", err.message);
        // The state is still usable afterwards.
        assert_eq!(s.transform(&json!({"a": 1})).unwrap(), vec![json!({"a": 1})]);
    }

    #[test]
    fn dangerous_globals_are_absent() {
        for g in [
            "io",
            "os",
            "debug",
            "load",
            "loadfile",
            "dofile",
            "require",
            "collectgarbage",
            "package",
        ] {
            let s = script(&format!("function transform(r) return {{present = {g} ~= nil}} end"));
            assert_eq!(s.transform(&json!({})).unwrap(), vec![json!({"present": false})], "{g}");
        }
        let s = script("function transform(r) return {dump = string.dump ~= nil} end");
        assert_eq!(s.transform(&json!({})).unwrap(), vec![json!({"dump": false})]);
    }

    #[test]
    fn errors_name_the_script_and_line() {
        let s = script("function transform(r)\n  return r.missing.field\nend");
        let err = s.transform(&json!({})).unwrap_err();
        assert!(err.message.starts_with("test.lua:2:"), "{}", err.message);
        let err = Script::load(
            "function transform(r) return end end",
            "bad.lua",
            Limits::default(),
            "t",
            &Value::Null,
        )
        .err()
        .unwrap();
        assert!(err.message.contains("bad.lua:1:"), "{}", err.message);
        let err = Script::load("x = 1", "none.lua", Limits::default(), "t", &Value::Null)
            .err()
            .unwrap();
        assert!(
            err.message.contains("does not define `function transform"),
            "{}",
            err.message
        );
        // An error value with nothing to say is named for what it is.
        let err = script("function transform(r) error({}) end")
            .transform(&json!({}))
            .unwrap_err();
        assert!(
            err.message.starts_with("the script raised a table as its error"),
            "{}",
            err.message
        );
        let err = script("function transform(r) error(nil) end")
            .transform(&json!({}))
            .unwrap_err();
        assert!(err.message.contains("no message (`error(nil)`)"), "{}", err.message);
    }

    #[test]
    fn bad_return_values_are_rejected() {
        let s = script("function transform(r) return 'text' end");
        assert!(s
            .transform(&json!({}))
            .unwrap_err()
            .message
            .contains("returned a string"));
        let s = script("function transform(r) return {1, 2} end");
        assert!(s.transform(&json!({})).unwrap_err().message.contains("not a record"));
    }

    #[test]
    fn instruction_budget_stops_endless_loops_even_under_pcall() {
        let limits = Limits {
            instructions: 1_000_000,
            ..Limits::default()
        };
        let s = Script::load(
            "function transform(r) while true do pcall(function() while true do end end) end end",
            "loop.lua",
            limits,
            "t",
            &Value::Null,
        )
        .unwrap();
        let err = s.transform(&json!({})).unwrap_err();
        assert!(err.message.contains("instructions"), "{}", err.message);
        // The budget is per call: the next record gets a fresh one.
        let s2 = Script::load(
            "function transform(r) for i=1,1000 do end return r end",
            "ok.lua",
            limits,
            "t",
            &Value::Null,
        )
        .unwrap();
        for _ in 0..5 {
            s2.transform(&json!({})).unwrap();
        }
    }

    #[test]
    fn a_record_of_shared_parts_cannot_grow_past_the_memory_limit_as_json() {
        let limits = Limits {
            memory: 4 * 1024 * 1024,
            ..Limits::default()
        };
        // A few KB in the state; 16 GB written out in full.
        let grow = "local t = string.rep('x', 1000) for i = 1, 24 do t = {t, t} end";
        for (body, says) in [
            ("return {a = t}", "field `a`"),
            (
                "local ok, e = pcall(flow.json.encode, t) error(tostring(e), 0)",
                "flow.json.encode",
            ),
        ] {
            let s = Script::load(
                &format!("function transform(r) {grow} {body} end"),
                "bomb.lua",
                limits,
                "t",
                &Value::Null,
            )
            .unwrap();
            let err = s.transform(&json!({})).unwrap_err();
            assert!(
                err.message.contains("larger than 4 MiB as JSON") && err.message.contains(says),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn memory_limit_is_enforced() {
        let limits = Limits {
            memory: 4 * 1024 * 1024,
            ..Limits::default()
        };
        let s = Script::load(
            "function transform(r) local t = {} for i = 1, 1e7 do t[i] = string.rep('x', 100) .. i end return r end",
            "mem.lua",
            limits,
            "t",
            &Value::Null,
        )
        .unwrap();
        let err = s.transform(&json!({})).unwrap_err();
        assert!(err.message.contains("memory"), "{}", err.message);
    }

    #[test]
    fn bytecode_is_refused() {
        // A binary chunk starts with ESC "Lua".
        let err = Script::load("\x1bLua\x54\x00", "bin.lua", Limits::default(), "t", &Value::Null)
            .err()
            .unwrap();
        assert!(
            err.message.contains("binary") || err.message.contains("attempt to load"),
            "{}",
            err.message
        );
    }
}

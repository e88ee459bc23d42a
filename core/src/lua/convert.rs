//! Records into Lua tables and back, through Lua's C API.
//!
//! A record is first read into a [`Tape`] (its values in document order,
//! strings gathered in one buffer), which is then replayed onto the Lua
//! stack as tables; the table a script returns is written straight out as
//! JSON text. Going through the C API instead of one handle per value keeps
//! the cost of a 14-field record to about a microsecond each way.
//!
//! Both directions follow the rules scripts rely on: JSON `null` is
//! `flow.null`, JSON arrays are tables marked as arrays, and a table is
//! written as an array when it is marked so or has elements `1..n`, as an
//! object otherwise, with its keys in sorted order so that output is the
//! same from run to run.
//!
//! Safety: replaying a tape may raise a Lua error (out of memory), which
//! unwinds with `longjmp` to the protected call around it. The functions
//! that touch the stack while that can happen own nothing that needs
//! dropping: they see the tape and the output only through references.

use super::lazy;
use mlua::ffi;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use std::ffi::{c_int, c_void, CStr};
use std::fmt;

/// How deep tables may nest in a record (a table that contains itself
/// would otherwise never end).
const MAX_DEPTH: usize = 128;

/// One value of a record, in document order. A container is followed by
/// its elements (an object's as name, value pairs).
#[derive(Debug, Clone, Copy)]
enum Tok {
    Null,
    Bool(bool),
    Int(i64),
    Num(f64),
    /// Text at `start..end` of the tape's string buffer.
    Str(usize, usize),
    /// An object of that many fields.
    Obj(usize),
    /// An array of that many elements.
    Arr(usize),
}

/// A record read and ready to become a Lua table. Kept between records so
/// that its buffers are allocated once.
#[derive(Debug, Default)]
pub(crate) struct Tape {
    toks: Vec<Tok>,
    strs: String,
    /// The field names of the last records, in order: their Lua strings sit
    /// at the same positions in a table the caller keeps, so that records
    /// of one shape reuse them instead of making each name again.
    names: String,
    name_spans: Vec<(usize, usize)>,
    /// Where the fields of a record kept as text are (see `lazy`).
    pub(crate) fields: Vec<[u32; 4]>,
    /// Set while the tape is being pushed (see `lazy`).
    pub(crate) busy: bool,
    /// The record kept as text that the call under way was given: its
    /// table's address and its text's, so that its metamethods find the
    /// text without looking it up (see `lazy`). Zero when no call is under
    /// way.
    pub(crate) current: [usize; 2],
    /// The fields, by position, that scripts took out of the text of the
    /// records kept as text before this one (see `lazy::push`).
    pub(crate) hot: u64,
    /// Those the record under way gave up through its metamethods.
    pub(crate) touched: u64,
    /// Records pushed since `hot` was last forgotten.
    pub(crate) since_hot: u32,
    /// Keys the record under way was given through its metamethods that
    /// are not fields of its text: the next record's table is made with
    /// room for as many (see `lazy::push`).
    pub(crate) added: u32,
    /// The names of the hot fields of the last record by position, whose
    /// Lua strings the caller keeps at the negated positions (from -1) of
    /// its table of names; None where it keeps none.
    pub(crate) hot_names: Vec<Option<Vec<u8>>>,
}

impl Tape {
    /// Reads a record from JSON text or a parsed value.
    pub(crate) fn read<'de, D: Deserializer<'de>>(&mut self, d: D) -> Result<(), D::Error> {
        self.toks.clear();
        self.strs.clear();
        d.deserialize_any(Reader(self))
    }

    /// Pushes the value read, whatever it is, with plain tables for objects.
    /// False when the stack cannot grow.
    ///
    /// # Safety
    /// `state` is a live Lua state inside a protected call, with room for
    /// one more value on its stack; `array_mt` is an absolute index.
    pub(crate) unsafe fn push_value(&self, state: *mut ffi::lua_State, array_mt: c_int) -> bool {
        let mut at = 0;
        push_tok(state, &self.toks, &self.strs, &mut at, array_mt)
    }

    /// Pushes the record onto the stack as a table (`flow.null` for null).
    /// `array_mt` is the stack index of the array metatable, `names` of the
    /// table of field names that goes with this tape. False when the stack
    /// cannot grow.
    ///
    /// # Safety
    /// `state` is a live Lua state inside a protected call, with room for
    /// one more value on its stack.
    pub(crate) unsafe fn push(&mut self, state: *mut ffi::lua_State, array_mt: c_int, names: c_int) -> bool {
        let array_mt = ffi::lua_absindex(state, array_mt);
        let names = ffi::lua_absindex(state, names);
        let Some(&Tok::Obj(n)) = self.toks.first() else {
            let mut at = 0;
            return push_tok(state, &self.toks, &self.strs, &mut at, array_mt);
        };
        if ffi::lua_checkstack(state, 3) == 0 {
            return false;
        }
        new_object(state, n);
        let mut at = 1;
        for i in 0..n {
            let Some(&Tok::Str(a, b)) = self.toks.get(at) else {
                return false;
            };
            at += 1;
            let name = &self.strs[a..b];
            let slot = i as ffi::lua_Integer + 1;
            if self.name_spans.get(i).is_some_and(|&(c, d)| &self.names[c..d] == name) {
                ffi::lua_rawgeti(state, names, slot);
            } else {
                push_str(state, name);
                ffi::lua_pushvalue(state, -1);
                ffi::lua_rawseti(state, names, slot);
                // Noted only once Lua has it: names past this one are stale.
                if let Some(&(c, _)) = self.name_spans.get(i) {
                    self.names.truncate(c);
                    self.name_spans.truncate(i);
                }
                let c = self.names.len();
                self.names.push_str(name);
                self.name_spans.push((c, self.names.len()));
            }
            if !push_tok(state, &self.toks, &self.strs, &mut at, array_mt) {
                return false;
            }
            ffi::lua_rawset(state, -3);
        }
        true
    }
}

/// Pushes the value at `toks[*at]` (and its elements), moving `at` past it.
/// False when the stack cannot grow; a nil stands in for the value.
unsafe fn push_tok(state: *mut ffi::lua_State, toks: &[Tok], strs: &str, at: &mut usize, array_mt: c_int) -> bool {
    let Some(tok) = toks.get(*at) else {
        ffi::lua_pushnil(state);
        return true;
    };
    *at += 1;
    match *tok {
        Tok::Null => ffi::lua_pushlightuserdata(state, std::ptr::null_mut()),
        Tok::Bool(b) => ffi::lua_pushboolean(state, c_int::from(b)),
        Tok::Int(i) => ffi::lua_pushinteger(state, i),
        Tok::Num(n) => ffi::lua_pushnumber(state, n),
        Tok::Str(a, b) => push_str(state, &strs[a..b]),
        Tok::Obj(n) => {
            if ffi::lua_checkstack(state, 3) == 0 {
                ffi::lua_pushnil(state);
                return false;
            }
            new_object(state, n);
            for _ in 0..n {
                let ok = push_tok(state, toks, strs, at, array_mt) && push_tok(state, toks, strs, at, array_mt);
                if !ok {
                    return false;
                }
                ffi::lua_rawset(state, -3);
            }
        }
        Tok::Arr(n) => {
            if ffi::lua_checkstack(state, 3) == 0 {
                ffi::lua_pushnil(state);
                return false;
            }
            ffi::lua_createtable(state, c_int::try_from(n).unwrap_or(0), 0);
            for i in 0..n {
                if !push_tok(state, toks, strs, at, array_mt) {
                    return false;
                }
                ffi::lua_rawseti(state, -2, i as ffi::lua_Integer + 1);
            }
            ffi::lua_pushvalue(state, array_mt);
            ffi::lua_setmetatable(state, -2);
        }
    }
    true
}

/// A table for an object of `n` fields, with room for a few more: scripts
/// that rename or add some then fill free slots instead of rebuilding it.
unsafe fn new_object(state: *mut ffi::lua_State, n: usize) {
    ffi::lua_createtable(state, 0, c_int::try_from(n + 4).unwrap_or(0));
}

unsafe fn push_str(state: *mut ffi::lua_State, s: &str) {
    ffi::lua_pushlstring(state, s.as_ptr().cast(), s.len());
}

/// Reads one value into the tape.
struct Reader<'t>(&'t mut Tape);

impl<'de> DeserializeSeed<'de> for Reader<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl Reader<'_> {
    fn text(&mut self, v: &str) -> Tok {
        let start = self.0.strs.len();
        self.0.strs.push_str(v);
        Tok::Str(start, self.0.strs.len())
    }
}

impl<'de> Visitor<'de> for Reader<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.0.toks.push(Tok::Bool(v));
        Ok(())
    }

    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.0.toks.push(Tok::Int(v));
        Ok(())
    }

    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.0.toks.push(match i64::try_from(v) {
            Ok(i) => Tok::Int(i),
            Err(_) => Tok::Num(v as f64),
        });
        Ok(())
    }

    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.0.toks.push(Tok::Num(v));
        Ok(())
    }

    fn visit_str<E>(mut self, v: &str) -> Result<(), E> {
        let tok = self.text(v);
        self.0.toks.push(tok);
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.0.toks.push(Tok::Null);
        Ok(())
    }

    fn visit_none<E>(self) -> Result<(), E> {
        self.0.toks.push(Tok::Null);
        Ok(())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = self.0.toks.len();
        self.0.toks.push(Tok::Arr(0));
        let mut n = 0;
        while seq.next_element_seed(Reader(self.0))?.is_some() {
            n += 1;
        }
        self.0.toks[at] = Tok::Arr(n);
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = self.0.toks.len();
        self.0.toks.push(Tok::Obj(0));
        let mut n = 0;
        while map.next_key_seed(Reader(self.0))?.is_some() {
            map.next_value_seed(Reader(self.0))?;
            n += 1;
        }
        self.0.toks[at] = Tok::Obj(n);
        Ok(())
    }
}

/// The name of the type of the value at `idx`, as scripts know it.
pub(crate) unsafe fn type_name(state: *mut ffi::lua_State, idx: c_int) -> &'static str {
    match ffi::lua_type(state, idx) {
        ffi::LUA_TNIL => "nil",
        ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(state, idx).is_null() => "flow.null",
        t => CStr::from_ptr(ffi::lua_typename(state, t)).to_str().unwrap_or("value"),
    }
}

/// The text of the string at `idx`, which must be a string (not a number:
/// reading a number as text would change it in place).
unsafe fn str_at<'a>(state: *mut ffi::lua_State, idx: c_int) -> Result<&'a str, ()> {
    let mut len = 0usize;
    let p = ffi::lua_tolstring(state, idx, &mut len);
    if p.is_null() {
        return Err(());
    }
    // The string lives as long as the table or stack slot holding it, which
    // outlives every use the writer makes of it.
    let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len);
    utf8(bytes).ok_or(())
}

/// `bytes` as text, if they are UTF-8.
fn utf8(bytes: &[u8]) -> Option<&str> {
    /// What the vectorised check takes at a time; shorter texts it checks
    /// a character at a time.
    const CHUNK: usize = 64;
    if bytes.is_ascii() {
        // ASCII is UTF-8: most names and values, checked without the
        // general validator's set-up.
        // SAFETY: ASCII.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    if bytes.len() < CHUNK {
        // A short text that is not ASCII (Cyrillic names, cities,
        // comments), padded with zeros to be checked in one go: a zero byte
        // is ASCII, and cannot complete a character the text cut short.
        let mut padded = [0u8; CHUNK];
        padded[..bytes.len()].copy_from_slice(bytes);
        simdutf8::basic::from_utf8(&padded).ok()?;
        // SAFETY: checked, padded, just above.
        return Some(unsafe { std::str::from_utf8_unchecked(bytes) });
    }
    simdutf8::basic::from_utf8(bytes).ok()
}

/// Writes Lua values as JSON, keeping its buffers from one record to the
/// next.
#[derive(Debug, Default)]
pub(crate) struct Writer {
    /// The array metatable's address.
    array_mt: usize,
    /// The address of the metatable of records kept as text.
    lazy_mt: usize,
    /// The address of the scratch tape, whose `current` is the record of
    /// the call under way; 0 when not known.
    scratch: usize,
    /// Scratch buffers of the tables being written, one per depth.
    levels: Vec<Level>,
    /// The field order of the last record: records of one shape come back
    /// from Lua with their names in the same order, and sort the same way.
    last_names: String,
    last_spans: Vec<(usize, usize)>,
    /// How many of the last record's names were the script's own keys.
    last_lua_keys: usize,
    /// The last record's shape and the fields gone from its text, when it
    /// was kept as text (see `lazy::Shape`); 0 otherwise.
    last_shape: lazy::Shape,
    last_gone: u64,
    last_order: Vec<usize>,
    /// What goes before each value of such a record, in that order: the
    /// separator, the quoted name and the colon.
    last_heads: String,
    last_head_spans: Vec<(usize, usize)>,
    /// The most bytes one value may take as JSON (the state's memory limit:
    /// tables that share parts are written out in full, and would otherwise
    /// grow past any limit outside the state's accounting).
    max_len: usize,
    /// Where the value being written may end in the output, at most.
    limit: usize,
    /// Whether the value written holds text of a record kept as text that
    /// may have a line break.
    breaks: bool,
}

/// Marks a value span as one in the text of a record kept as text rather
/// than in the level's buffer.
const IN_SOURCE: usize = 1 << (usize::BITS - 1);

/// A table being written: its names and values, in Lua's order.
#[derive(Debug, Default)]
struct Level {
    names: String,
    name_spans: Vec<(usize, usize)>,
    values: String,
    value_spans: Vec<(usize, usize)>,
    order: Vec<usize>,
}

impl Level {
    fn push_name(&mut self, name: &str) {
        let at = self.names.len();
        self.names.push_str(name);
        self.name_spans.push((at, self.names.len()));
    }
}

impl Writer {
    pub(crate) fn new(array_mt: *const c_void, lazy_mt: *const c_void, max_len: usize) -> Self {
        Writer {
            array_mt: array_mt as usize,
            lazy_mt: lazy_mt as usize,
            max_len,
            ..Writer::default()
        }
    }

    /// Makes `scratch` the tape whose `current` record is found without a
    /// lookup (see `lazy::Source::of_record`).
    pub(crate) fn with_scratch(mut self, scratch: *const Tape) -> Self {
        self.scratch = scratch as usize;
        self
    }

    /// The scratch tape given to [`Writer::with_scratch`] (null if none).
    pub(crate) fn scratch(&self) -> *const Tape {
        self.scratch as *const Tape
    }

    /// An error when the value, with `held` bytes of it already written
    /// elsewhere, has grown past the limit.
    fn check_len(&self, held: usize) -> Result<(), String> {
        if held > self.limit {
            return Err(format!(
                "it is larger than {} MiB as JSON (tables that share parts are written out in full); raise `memory_limit` or return less",
                self.max_len / (1024 * 1024)
            ));
        }
        Ok(())
    }

    /// The last record's name at `i`.
    fn last_name(&self, i: usize) -> &str {
        let (a, b) = self.last_spans[i];
        &self.last_names[a..b]
    }

    /// Puts the last record's first `n` names in `level`: those of the
    /// table being written so far, which were only compared until now.
    fn names_so_far(&self, level: &mut Level, n: usize) {
        for i in 0..n {
            level.push_name(self.last_name(i));
        }
    }

    /// Writes the value at stack index `idx` as JSON. Errors say what
    /// cannot be JSON. Raises no Lua error.
    ///
    /// # Safety
    /// `state` is a live Lua state and `idx` a valid index in it.
    pub(crate) unsafe fn write(
        &mut self,
        state: *mut ffi::lua_State,
        idx: c_int,
        out: &mut String,
    ) -> Result<(), String> {
        self.limit = out.len().saturating_add(self.max_len);
        self.breaks = false;
        self.value(state, idx, out, 0, 0)
    }

    /// Whether the last value written may have a line break: only the text
    /// of a record kept as text, copied as it came, can hold one (between
    /// the tokens of a value); strings are written with theirs escaped.
    pub(crate) fn copied_breaks(&self) -> bool {
        self.breaks
    }

    /// Writes a value into `out`; `held` is what the tables around it hold
    /// in their own buffers meanwhile (for the size limit).
    unsafe fn value(
        &mut self,
        state: *mut ffi::lua_State,
        idx: c_int,
        out: &mut String,
        depth: usize,
        held: usize,
    ) -> Result<(), String> {
        match ffi::lua_type(state, idx) {
            ffi::LUA_TNIL => out.push_str("null"),
            ffi::LUA_TLIGHTUSERDATA if ffi::lua_touserdata(state, idx).is_null() => out.push_str("null"),
            ffi::LUA_TBOOLEAN => out.push_str(if ffi::lua_toboolean(state, idx) != 0 {
                "true"
            } else {
                "false"
            }),
            ffi::LUA_TNUMBER => {
                if ffi::lua_isinteger(state, idx) != 0 {
                    out.push_str(itoa::Buffer::new().format(ffi::lua_tointegerx(state, idx, std::ptr::null_mut())));
                } else {
                    let n = ffi::lua_tonumberx(state, idx, std::ptr::null_mut());
                    if !n.is_finite() {
                        // Not null: that would hide a division by zero.
                        return Err(format!("the number {n}, which has no JSON form"));
                    }
                    out.push_str(ryu::Buffer::new().format_finite(n));
                }
            }
            ffi::LUA_TSTRING => {
                let s = str_at(state, idx).map_err(|_| "a string that is not valid UTF-8 text".to_owned())?;
                push_string(out, s);
            }
            ffi::LUA_TTABLE => {
                if depth >= MAX_DEPTH {
                    return Err(format!(
                        "tables nested more than {MAX_DEPTH} deep (does a table contain itself?)"
                    ));
                }
                if ffi::lua_checkstack(state, 3) == 0 {
                    return Err("tables nested too deep for the Lua stack".to_owned());
                }
                if self.levels.len() <= depth {
                    self.levels.resize_with(depth + 1, Level::default);
                }
                // This depth's buffers, out of `levels` while nested tables
                // use the deeper ones.
                let mut level = std::mem::take(&mut self.levels[depth]);
                let written = self.table(state, ffi::lua_absindex(state, idx), out, depth, held, &mut level);
                self.levels[depth] = level;
                written?;
            }
            _ => return Err(format!("a {}, which has no JSON form", type_name(state, idx))),
        }
        Ok(())
    }

    unsafe fn table(
        &mut self,
        state: *mut ffi::lua_State,
        t: c_int,
        out: &mut String,
        depth: usize,
        held: usize,
        level: &mut Level,
    ) -> Result<(), String> {
        let len = ffi::lua_rawlen(state, t);
        let mt = if ffi::lua_getmetatable(state, t) != 0 {
            let mt = ffi::lua_topointer(state, -1) as usize;
            ffi::lua_pop(state, 1);
            mt
        } else {
            0
        };
        let marked = mt == self.array_mt;
        // An array: marked as one, or holding 1..n and nothing else. A
        // record kept as text, or a table with names or holes besides
        // 1..n, is an object (number keys become names), so nothing it
        // holds is dropped.
        let array = marked || (len > 0 && mt != self.lazy_mt && only_indexes(state, t, len));
        if array {
            out.push('[');
            for i in 1..=len {
                if i > 1 {
                    out.push(',');
                }
                ffi::lua_rawgeti(state, t, i as ffi::lua_Integer);
                let written = self
                    .value(state, -1, out, depth + 1, held)
                    .and_then(|()| self.check_len(held + out.len()));
                ffi::lua_pop(state, 1);
                written?;
            }
            out.push(']');
            return Ok(());
        }
        // Fields of a record kept as text that nobody touched: as they came.
        let src = if mt == self.lazy_mt {
            lazy::Source::of_record(state, t, self.scratch as *const Tape)
        } else {
            None
        };
        // A record of the last one's shape with the same fields out of its
        // text: while its own keys are the last one's, their names are only
        // compared, and the names in its text not even that.
        let mut known = depth == 0
            && src
                .as_ref()
                .is_some_and(|src| src.shape() != 0 && src.shape() == self.last_shape && src.gone() == self.last_gone);
        // Names and values are gathered in the order Lua keeps them, then
        // written in name order.
        level.names.clear();
        level.name_spans.clear();
        level.values.clear();
        level.value_spans.clear();
        let mut number = NumberName::default();
        ffi::lua_pushnil(state);
        while ffi::lua_next(state, t) != 0 {
            let name = match ffi::lua_type(state, -2) {
                ffi::LUA_TLIGHTUSERDATA if lazy::is_source_key(state, -2) => {
                    ffi::lua_pop(state, 1);
                    continue;
                }
                ffi::LUA_TSTRING => match str_at(state, -2) {
                    Ok(s) => s,
                    Err(()) => {
                        ffi::lua_pop(state, 2);
                        return Err("a field name that is not valid UTF-8 text".to_owned());
                    }
                },
                ffi::LUA_TNUMBER => number.of(state, -2),
                _ => {
                    let e = format!("a field named by a {}", type_name(state, -2));
                    ffi::lua_pop(state, 2);
                    return Err(e);
                }
            };
            let key = level.value_spans.len();
            if known && !(key < self.last_lua_keys && self.last_name(key) == name) {
                known = false;
                self.names_so_far(level, key);
            }
            if !known {
                level.push_name(name);
            }
            let value_at = level.values.len();
            // Held meanwhile: what the tables around hold, `out` so far, and
            // this table's names.
            let around = held + out.len() + level.names.len();
            let written = self
                .value(state, -1, &mut level.values, depth + 1, around)
                .and_then(|()| self.check_len(around + level.values.len()));
            if let Err(e) = written {
                // The key, and so its name, is still on the stack.
                let e = in_field(name, &e);
                ffi::lua_pop(state, 2);
                return Err(e);
            }
            level.value_spans.push((value_at, level.values.len()));
            ffi::lua_pop(state, 1);
        }
        let lua_keys = level.value_spans.len();
        if known && lua_keys != self.last_lua_keys {
            known = false;
            self.names_so_far(level, lua_keys);
        }
        let src_text = src.as_ref().map_or("", |src| src.text());
        if let Some(src) = &src {
            self.breaks |= src.breaks();
            if known {
                for (c, d) in src.values() {
                    level.value_spans.push((c | IN_SOURCE, d));
                }
            } else {
                for (name, (c, d)) in src.fields() {
                    level.push_name(name);
                    level.value_spans.push((c | IN_SOURCE, d));
                }
            }
        }
        // A value's text, as bytes: appended whole (see below), it needs no
        // check of where characters begin.
        let (src_bytes, values) = (src_text.as_bytes(), level.values.as_bytes());
        let value = |(c, d): (usize, usize)| {
            if c & IN_SOURCE != 0 {
                &src_bytes[c & !IN_SOURCE..d]
            } else {
                &values[c..d]
            }
        };
        let names = &level.names;
        let spans = &level.name_spans;
        out.push('{');
        if depth == 0 {
            // Records of one shape: the order and the names' text are kept.
            let same =
                known || (*names == self.last_names && *spans == self.last_spans && lua_keys == self.last_lua_keys);
            if !same {
                let mut order = Vec::new();
                name_order(names, spans, &level.value_spans, &mut order)?;
                self.last_heads.clear();
                self.last_head_spans.clear();
                for (i, &f) in order.iter().enumerate() {
                    let at = self.last_heads.len();
                    if i > 0 {
                        self.last_heads.push(',');
                    }
                    push_string(&mut self.last_heads, &names[spans[f].0..spans[f].1]);
                    self.last_heads.push(':');
                    self.last_head_spans.push((at, self.last_heads.len()));
                }
                self.last_names.clone_from(names);
                self.last_spans.clone_from(spans);
                self.last_lua_keys = lua_keys;
                self.last_order = order;
            }
            // Only once the names above are this record's: a record refused
            // on the way leaves the last one's shape with the last one's names.
            (self.last_shape, self.last_gone) = src.as_ref().map_or((0, 0), |src| (src.shape(), src.gone()));
            let heads = self.last_heads.as_bytes();
            // SAFETY: only whole texts are appended: the quoted names with
            // what goes around them, and JSON values, which begin and end
            // next to ASCII characters. `out` stays UTF-8.
            let out = unsafe { out.as_mut_vec() };
            // Each name and value is written once: room for all of them.
            out.reserve(heads.len() + values.len() + src_bytes.len());
            for (&f, &(a, b)) in self.last_order.iter().zip(&self.last_head_spans) {
                append(out, &heads[a..b]);
                append(out, value(level.value_spans[f]));
            }
        } else {
            name_order(names, spans, &level.value_spans, &mut level.order)?;
            for (i, &f) in level.order.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let (a, b) = spans[f];
                push_string(out, &names[a..b]);
                out.push(':');
                // SAFETY: a whole JSON value, as above.
                unsafe { out.as_mut_vec() }.extend_from_slice(value(level.value_spans[f]));
            }
        }
        out.push('}');
        Ok(())
    }
}

/// Appends `src` to `out`; a short one (most names and values of a
/// record) with a few word-sized copies instead of a call to `memcpy`.
#[inline(always)]
fn append(out: &mut Vec<u8>, src: &[u8]) {
    let (n, len) = (src.len(), out.len());
    if n > 32 || out.capacity() - len < 32 {
        out.extend_from_slice(src);
        return;
    }
    let (s, d) = (src.as_ptr(), out.as_mut_ptr());
    // SAFETY: `out` has room for 32 more bytes; the reads are within `src`
    // (two copies that overlap when shorter than twice their size), and
    // the bytes written up to `len + n` are `src`'s.
    unsafe {
        let d = d.add(len);
        if n >= 16 {
            copy_ends::<u128>(s, d, n);
        } else if n >= 8 {
            copy_ends::<u64>(s, d, n);
        } else if n >= 4 {
            copy_ends::<u32>(s, d, n);
        } else {
            for i in 0..n {
                *d.add(i) = *s.add(i);
            }
        }
        out.set_len(len + n);
    }
}

/// Copies the `n` bytes at `s` to `d` as two words of type `W`: the first
/// word of them and the last, which overlap when `n` is under two words.
///
/// # Safety
/// `n` is at least the size of `W`; `s` has `n` bytes to read and `d` room
/// for `n`.
#[inline(always)]
unsafe fn copy_ends<W: Copy>(s: *const u8, d: *mut u8, n: usize) {
    let w = std::mem::size_of::<W>();
    let (a, b) = (
        s.cast::<W>().read_unaligned(),
        s.add(n - w).cast::<W>().read_unaligned(),
    );
    d.cast::<W>().write_unaligned(a);
    d.add(n - w).cast::<W>().write_unaligned(b);
}

/// The text of a number used as a field name, kept here while it is used.
#[derive(Default)]
struct NumberName {
    integer: itoa::Buffer,
    float: ryu::Buffer,
}

impl NumberName {
    /// The name the number at `idx` stands for.
    ///
    /// # Safety
    /// `idx` is a valid index holding a number.
    unsafe fn of(&mut self, state: *mut ffi::lua_State, idx: c_int) -> &str {
        if ffi::lua_isinteger(state, idx) != 0 {
            self.integer
                .format(ffi::lua_tointegerx(state, idx, std::ptr::null_mut()))
        } else {
            self.float.format(ffi::lua_tonumberx(state, idx, std::ptr::null_mut()))
        }
    }
}

/// True when the table at `t` (an absolute index) holds the keys 1..`len`
/// and nothing else: no names, no holes.
pub(crate) unsafe fn only_indexes(state: *mut ffi::lua_State, t: c_int, len: usize) -> bool {
    if ffi::lua_checkstack(state, 2) == 0 {
        return false;
    }
    let mut indexes = 0usize;
    ffi::lua_pushnil(state);
    while ffi::lua_next(state, t) != 0 {
        ffi::lua_pop(state, 1);
        let k = ffi::lua_tointegerx(state, -1, std::ptr::null_mut());
        if ffi::lua_isinteger(state, -1) == 0 || k < 1 || k as u64 > len as u64 {
            ffi::lua_pop(state, 1);
            return false;
        }
        indexes += 1;
    }
    indexes == len
}

impl Writer {
    /// True when the table at `t` (an absolute index) is a list of records
    /// rather than one: not a record kept as text, and only 1..n.
    pub(crate) unsafe fn is_list(&self, state: *mut ffi::lua_State, t: c_int, len: usize) -> bool {
        let lazy = ffi::lua_getmetatable(state, t) != 0 && {
            let mt = ffi::lua_topointer(state, -1) as usize;
            ffi::lua_pop(state, 1);
            mt == self.lazy_mt
        };
        !lazy && only_indexes(state, t, len)
    }
}

/// An error of a field's value, with the field named: nested fields make
/// one dotted path (`field `a.b``), cut short when it runs long (a table
/// that contains itself).
fn in_field(name: &str, e: &str) -> String {
    let Some((inner, why)) = e.strip_prefix("field `").and_then(|rest| rest.split_once("`: ")) else {
        return format!("field `{name}`: {e}");
    };
    let mut path = format!("{name}.{}", inner.trim_end_matches("..."));
    if path.len() > 80 || inner.ends_with("...") {
        let mut cut = path.len().min(80);
        while !path.is_char_boundary(cut) {
            cut -= 1;
        }
        path.truncate(cut);
        path.push_str("...");
    }
    format!("field `{path}`: {why}")
}

/// The positions of `spans` (into `names`) in name order.
fn name_order(
    names: &str,
    spans: &[(usize, usize)],
    values: &[(usize, usize)],
    order: &mut Vec<usize>,
) -> Result<(), String> {
    let name = |f: usize| &names[spans[f].0..spans[f].1];
    order.clear();
    order.extend(0..spans.len());
    order.sort_unstable_by(|&a, &b| name(a).cmp(name(b)));
    // A name twice: a field of the record's text that the script set again
    // under a number key (`r[2]` for `"2"`) gives way to it; the script's
    // own keys twice (`t[2]` and `t["2"]`) cannot both be written.
    let from_text = |f: usize| values[f].0 & IN_SOURCE != 0;
    let mut i = 1;
    while i < order.len() {
        let (a, b) = (order[i - 1], order[i]);
        if name(a) != name(b) {
            i += 1;
            continue;
        }
        match (from_text(a), from_text(b)) {
            (true, false) => {
                order.remove(i - 1);
            }
            (false, true) => {
                order.remove(i);
            }
            _ => {
                return Err(format!(
                    "the field `{}` is set twice, under a number key and under a text one; set it once",
                    name(a)
                ))
            }
        }
    }
    Ok(())
}

/// A JSON string: quotes, backslashes and control characters escaped,
/// everything else as it is.
pub(crate) fn push_string(out: &mut String, s: &str) {
    /// Which bytes need an escape.
    const ESCAPE: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 0x20 {
            t[b] = true;
            b += 1;
        }
        t[b'"' as usize] = true;
        t[b'\\' as usize] = true;
        t
    };
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    // Eight bytes at a time past the text that needs no escape.
    let clean = bytes
        .chunks_exact(8)
        .take_while(|c| !needs_escape(u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]])))
        .count()
        * 8;
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate().skip(clean) {
        if !ESCAPE[usize::from(b)] {
            continue;
        }
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xf)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Whether any of the eight bytes in `word` is a control character, a
/// quote or a backslash.
fn needs_escape(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    // A byte below `n` (n ≤ 128) sets its high bit here; bytes from 0x80 up
    // do not, as `!word` clears it.
    let below = |n: u64| word.wrapping_sub(ONES * n) & !word & HIGH;
    let zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    below(0x20) | zero(word ^ (ONES * u64::from(b'"'))) | zero(word ^ (ONES * u64::from(b'\\'))) != 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_texts_are_utf8_exactly_when_the_standard_library_says_so() {
        // Every cut of texts of one-, two-, three- and four-byte characters,
        // and each with a byte changed, against `std::str::from_utf8`.
        let texts = ["Кузнецов Иван, Казань", "€ 10 — ещё", "𝄞 a 𝄞", "plain ascii text"];
        for text in texts {
            let bytes = text.as_bytes();
            for end in 0..=bytes.len() {
                for start in 0..=end.min(3) {
                    let cut = &bytes[start..end];
                    assert_eq!(utf8(cut).is_some(), std::str::from_utf8(cut).is_ok(), "{cut:?}");
                    for at in 0..cut.len() {
                        for b in [0x00, 0x41, 0x80, 0xbf, 0xc0, 0xc3, 0xe0, 0xed, 0xf0, 0xf4, 0xf5, 0xff] {
                            let mut changed = cut.to_vec();
                            changed[at] = b;
                            assert_eq!(
                                utf8(&changed).is_some(),
                                std::str::from_utf8(&changed).is_ok(),
                                "{changed:?}"
                            );
                        }
                    }
                }
            }
        }
        let long = "ж".repeat(40);
        assert_eq!(utf8(long.as_bytes()), Some(long.as_str()));
        assert_eq!(utf8(&long.as_bytes()[..63]), None);
        assert_eq!(utf8(&long.as_bytes()[..64]), Some(&long[..64]));
    }

    #[test]
    fn words_that_need_an_escape_are_found() {
        for b in 0u8..=255 {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = b;
                let expected = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(needs_escape(u64::from_le_bytes(word)), expected, "byte {b:#x} at {at}");
            }
        }
        assert!(!needs_escape(u64::from_le_bytes(
            *"Дмит".as_bytes().first_chunk().expect("8 bytes")
        )));
    }

    #[test]
    fn appended_bytes_are_the_ones_given_whatever_the_room() {
        let text: Vec<u8> = (0..48u8).map(|b| b'A' + b).collect();
        for start in [0, 3, 17] {
            for n in 0..=40 {
                for room in [0, 8, 31, 32, 64] {
                    let mut out = Vec::with_capacity(start + room);
                    out.extend_from_slice(&text[..start]);
                    append(&mut out, &text[start..start + n.min(48 - start)]);
                    let n = n.min(48 - start);
                    assert_eq!(out, &text[..start + n], "start {start}, {n} bytes, room {room}");
                }
            }
        }
    }

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        push_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\"b\\c\nd\u{1}é");
        // Long text, with the character to escape anywhere in it.
        for special in ['"', '\\', '\n', '\u{1f}', 'й'] {
            for at in 0..40 {
                let text: String = (0..40).map(|i| if i == at { special } else { 'x' }).collect();
                let mut out = String::new();
                push_string(&mut out, &text);
                assert_eq!(serde_json::from_str::<String>(&out).unwrap(), text, "{out}");
                assert_eq!(out.len() - text.len() > 2, special != 'й', "{out}");
            }
        }
    }

    #[test]
    fn a_tape_holds_values_in_document_order() {
        let mut tape = Tape::default();
        tape.read(&mut serde_json::Deserializer::from_str(
            r#"{"a":[1,2.5,null],"b":"x\ny","c":{}}"#,
        ))
        .unwrap();
        let shown = format!("{:?}", tape.toks);
        assert_eq!(
            shown,
            "[Obj(3), Str(0, 1), Arr(3), Int(1), Num(2.5), Null, Str(1, 2), Str(2, 5), Str(5, 6), Obj(0)]"
        );
        assert_eq!(tape.strs, "abx\nyc");
    }
}

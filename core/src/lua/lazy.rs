//! Records that stay JSON text until a script touches their fields.
//!
//! A mapping script usually reads a few fields of a record and renames or
//! rewrites a few more; the rest pass through. Turning every field into a
//! Lua string on the way in, and every string back into JSON on the way out,
//! is most of what a record costs. So a record that arrives as JSON text is
//! handed to the script as a table that holds, under a key scripts cannot
//! name, a copy of the record's text and where each field is in it:
//!
//! - reading a field the table does not hold yet (`__index`) decodes that
//!   field's value from the text into the table, which holds it from then
//!   on (so a nested table read twice is the same table);
//! - writing such a field (`__newindex`) takes it out of the text the same
//!   way, and `nil` removes it;
//! - `pairs`, `next`, `rawget`, `rawset`, `getmetatable` and `setmetatable`
//!   first decode every field still in the text and turn the record into a
//!   plain table;
//! - writing the record out copies the fields nobody touched as the text
//!   they arrived in;
//! - the fields the script took out of the text of the records before are
//!   decoded as the record is handed over, when their text is what they
//!   would be written back as (see [`push`]): records of one shape meet the
//!   same fields, and reading or setting a field the table holds calls no
//!   metamethod.
//!
//! Only objects whose field names have no escapes, with at most 64 fields
//! and no name twice, are kept this way; other records are decoded whole.
//!
//! Safety: as in `convert`, the functions Lua calls here may raise a Lua
//! error (out of memory) that unwinds with `longjmp`; they own nothing that
//! needs dropping while that can happen, and they change a record's text
//! only after Lua has what replaces it.

use super::convert::Tape;
use mlua::ffi;
use std::ffi::{c_int, c_void};

/// The most fields a record kept as text may have (one bit each).
const MAX_FIELDS: usize = 64;

/// Its address, as a light userdata, is the key under which a record keeps
/// its text.
static SOURCE_KEY: u8 = 0;

fn source_key() -> *const c_void {
    std::ptr::from_ref(&SOURCE_KEY).cast()
}

/// Whether the value at `idx` is the key a record keeps its text under.
///
/// # Safety
/// `idx` is a valid index of a live state.
pub(crate) unsafe fn is_source_key(state: *mut ffi::lua_State, idx: c_int) -> bool {
    ffi::lua_type(state, idx) == ffi::LUA_TLIGHTUSERDATA && ffi::lua_touserdata(state, idx).cast_const() == source_key()
}

/// Where a field is in a record's text: name start and end, value start and
/// end.
pub(crate) type Field = [u32; 4];

/// The head of a record's text as Lua keeps it (a userdata): the number of
/// fields and which of them have left the text; then the fields, then the
/// text.
#[repr(C)]
struct Head {
    fields: u32,
    len: u32,
    gone: u64,
    /// The bits of the names of the fields (see [`name_bit`]), low half
    /// first: a name whose bit is not set is not among them.
    names: [u64; 2],
    /// The record's shape (see [`Shape`]).
    shape: Shape,
    /// Whether the text may hold a line break (between the tokens of a
    /// value: JSON strings hold none).
    breaks: bool,
}

/// Records of one shape have the same field names in the same order. Two
/// records given the same shape by [`Shape::of`] have; 0 says nothing.
pub(crate) type Shape = u64;

/// The shape of a record whose fields are `fields` in `text`: `last`'s
/// when the record before (`last_text`, `last_fields`) has the same names in
/// the same order, a new one otherwise.
pub(crate) fn shape_of(text: &str, fields: &[Field], last: Option<(Shape, &str, &[Field])>) -> Shape {
    if let Some((shape, last_text, last_fields)) = last {
        fn name<'t>(t: &'t str, f: &Field) -> &'t [u8] {
            &t.as_bytes()[f[0] as usize..f[1] as usize]
        }
        let same = last_fields.len() == fields.len()
            && fields
                .iter()
                .zip(last_fields)
                .all(|(f, l)| name(text, f) == name(last_text, l));
        if same {
            return shape;
        }
    }
    new_shape()
}

/// A shape no record has had yet.
pub(crate) fn new_shape() -> Shape {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Finds the top-level fields of a JSON object, and returns the bits of
/// their names (see [`name_bit`]). None when the text is not an object that
/// can be kept as text (see the module's documentation); the text is known
/// to be valid JSON, and anything else is refused, never misread.
pub(crate) fn scan(text: &str, fields: &mut Vec<Field>) -> Option<u128> {
    fields.clear();
    let b = text.as_bytes();
    u32::try_from(b.len()).ok()?;
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = skip_ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return None;
    }
    let mut names = Names::default();
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let name_start = i + 1;
        let name_end = quote_or_backslash(b, name_start)?;
        if b[name_end] == b'\\' {
            return None;
        }
        if !names.add(b, fields, name_start, name_end) {
            return None;
        }
        i = skip_ws(b, name_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let value_start = skip_ws(b, i + 1);
        let value_end = skip_value(b, value_start)?;
        // Offsets fit: the text's length does.
        fields.push([name_start as u32, name_end as u32, value_start as u32, value_end as u32]);
        i = skip_ws(b, value_end);
        match b.get(i) {
            Some(b',') => i = skip_ws(b, i + 1),
            Some(b'}') => return (skip_ws(b, i + 1) == b.len()).then_some(names.seen),
            _ => return None,
        }
    }
}

/// The names of a record's fields as they are found, to refuse a record
/// with one name twice or more than [`MAX_FIELDS`] fields.
pub(crate) struct Names {
    /// One bit per name seen, from a hash of it (see [`name_bit`]): a name
    /// is compared with the others of the same bit only when its bit is
    /// already set.
    pub(crate) seen: u128,
    slots: [u8; MAX_FIELDS],
}

impl Default for Names {
    fn default() -> Self {
        Names {
            seen: 0,
            slots: [0; MAX_FIELDS],
        }
    }
}

impl Names {
    /// Notes the name at `start..end` of `text`, the record's text, as the
    /// name of the field about to follow `fields`. False when the record
    /// cannot be kept as text: the name is there already, or there is no
    /// room for another field. A name with an escape is the caller's to
    /// refuse.
    #[inline]
    pub(crate) fn add(&mut self, text: &[u8], fields: &[Field], start: usize, end: usize) -> bool {
        let n = fields.len();
        if n >= MAX_FIELDS {
            return false;
        }
        let name = &text[start..end];
        let slot = name_slot(name);
        if self.seen & (1 << slot) != 0
            && (fields.iter().zip(&self.slots[..n]))
                .any(|(f, &other)| other == slot && text.get(f[0] as usize..f[1] as usize) == Some(name))
        {
            return false;
        }
        self.seen |= 1 << slot;
        self.slots[n] = slot;
        true
    }
}

/// One of 128 bits, picked by the length and the first and last bytes of a
/// field name.
fn name_bit(name: &[u8]) -> u128 {
    1 << name_slot(name)
}

/// Which of the 128 bits [`name_bit`] picks.
fn name_slot(name: &[u8]) -> u8 {
    let (first, last) = match name {
        [] => (0, 0),
        [a, .., z] => (*a, *z),
        [a] => (*a, *a),
    };
    let h = (name.len() as u64 | u64::from(first) << 8 | u64::from(last) << 16).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (h >> 57) as u8
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while matches!(b.get(i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end of the string whose opening quote is at `i`.
fn skip_string(b: &[u8], mut i: usize) -> Option<usize> {
    i += 1;
    loop {
        i = quote_or_backslash(b, i)?;
        if b[i] == b'"' {
            return Some(i + 1);
        }
        i += 2;
    }
}

/// The position of the first `"` or `\` at or after `i`. Eight bytes at a
/// time: the strings of a record are mostly shorter than a call to a
/// vectorised search is worth.
fn quote_or_backslash(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = ONES << 7;
    while let Some(chunk) = b.get(i..).and_then(<[u8]>::first_chunk::<8>) {
        let w = u64::from_le_bytes(*chunk);
        let (q, s) = (w ^ (ONES * u64::from(b'"')), w ^ (ONES * u64::from(b'\\')));
        // A byte of `q` or `s` is zero where `w` has the byte sought; the
        // lowest flag is exact (those above it may not be).
        let found = ((q.wrapping_sub(ONES) & !q) | (s.wrapping_sub(ONES) & !s)) & HIGH;
        if found != 0 {
            return Some(i + (found.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| c == b'"' || c == b'\\').map(|n| i + n)
}

/// The end of the value that starts at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut i = i;
            loop {
                match *b.get(i)? {
                    b'"' => {
                        i = skip_string(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            // What ends a number, `true`, `false` or `null`.
            const END: [bool; 256] = {
                let mut end = [false; 256];
                let mut k = 0;
                let ends = b",}] \t\n\r";
                while k < ends.len() {
                    end[ends[k] as usize] = true;
                    k += 1;
                }
                end
            };
            let n = b[i..].iter().position(|&c| END[usize::from(c)]).unwrap_or(b.len() - i);
            (n > 0).then_some(i + n)
        }
    }
}

/// Records after which the fields learnt as hot are forgotten and learnt
/// again, so that a run whose records change shape stops decoding fields
/// that no longer matter.
const RELEARN_AFTER: u32 = 1024;

/// Pushes a record kept as text: a table with `lazy_mt` (a stack index) as
/// its metatable, holding a copy of `text`, `fields` and the bits of their
/// names from [`scan`], the record's shape (see [`Shape`]) and whether its
/// text may hold a line break. It becomes the tape's `current` record,
/// found by its metamethods without a lookup.
///
/// The fields at the positions the script took out of the text of the
/// records before this one (the tape's `hot`) are decoded into the table
/// here, as reading them would, when their values are ones that are
/// written back exactly as they came (see [`Plain`]): a script reads and
/// sets them as plain table fields, without calling a metamethod, and the
/// record is written out the same whether it touched them or not.
///
/// # Safety
/// `state` is a live Lua state inside a protected call, with room for four
/// more values on its stack; `name_strings` is the index of the table that
/// keeps the names the tape's `hot_names` stand for. The caller keeps the
/// table where Lua cannot collect it (on its stack) until it clears the
/// tape's `current`.
pub(crate) unsafe fn push(
    state: *mut ffi::lua_State,
    text: &str,
    (fields, names, shape, breaks): (&[Field], u128, Shape, bool),
    name_strings: c_int,
    lazy_mt: c_int,
    tape: *mut Tape,
) {
    let lazy_mt = ffi::lua_absindex(state, lazy_mt);
    let name_strings = ffi::lua_absindex(state, name_strings);
    let (hot, added) = {
        let tape = &mut *tape;
        tape.hot |= tape.touched;
        tape.touched = 0;
        tape.since_hot += 1;
        if tape.since_hot >= RELEARN_AFTER {
            tape.hot = 0;
            tape.since_hot = 0;
        }
        let all = if fields.len() >= MAX_FIELDS {
            u64::MAX
        } else {
            (1 << fields.len()) - 1
        };
        (tape.hot & all, std::mem::take(&mut tape.added))
    };
    // Room for the text's key, the fields decoded here and the keys the
    // script added to the record before: a table of records of one shape
    // is made the size it ends up, as Lua rounds it up to a power of two.
    ffi::lua_createtable(state, 0, (1 + hot.count_ones() + added.min(64)) as c_int);
    let head = std::mem::size_of::<Head>();
    let spans = std::mem::size_of_val(fields);
    let p = ffi::lua_newuserdatauv(state, head + spans + text.len(), 0).cast::<u8>();
    p.cast::<Head>().write(Head {
        fields: fields.len() as u32,
        len: text.len() as u32,
        gone: 0,
        names: [names as u64, (names >> 64) as u64],
        shape,
        breaks,
    });
    std::ptr::copy_nonoverlapping(fields.as_ptr().cast::<u8>(), p.add(head), spans);
    std::ptr::copy_nonoverlapping(text.as_ptr(), p.add(head + spans), text.len());
    ffi::lua_rawsetp(state, -2, source_key());
    ffi::lua_pushvalue(state, lazy_mt);
    ffi::lua_setmetatable(state, -2);
    let mut gone = 0u64;
    let mut bits = hot;
    while bits != 0 {
        let i = bits.trailing_zeros() as usize;
        bits &= bits - 1;
        let [a, b, c, d] = fields[i];
        let Some(value) = Plain::of(&text[c as usize..d as usize]) else {
            continue;
        };
        let name = &text.as_bytes()[a as usize..b as usize];
        // The Lua string of the name, kept from the last record of this
        // shape.
        let slot = -(i as ffi::lua_Integer) - 1;
        let known = &(*tape).hot_names;
        if known.get(i).is_some_and(|n| n.as_deref() == Some(name)) {
            ffi::lua_rawgeti(state, name_strings, slot);
        } else {
            ffi::lua_pushlstring(state, name.as_ptr().cast(), name.len());
            ffi::lua_pushvalue(state, -1);
            ffi::lua_rawseti(state, name_strings, slot);
            // Noted only once Lua has it.
            let hot_names = &mut (*tape).hot_names;
            if hot_names.len() <= i {
                hot_names.resize_with(i + 1, || None);
            }
            let kept = hot_names[i].get_or_insert_with(Vec::new);
            kept.clear();
            kept.extend_from_slice(name);
        }
        value.push(state);
        ffi::lua_rawset(state, -3);
        gone |= 1 << i;
    }
    (*p.cast::<Head>()).gone = gone;
    (*tape).current = [ffi::lua_topointer(state, -1) as usize, p as usize];
}

/// The integer JSON text `v` is, if it is one that fits: not `-0`, which
/// JSON readers take as a float, nor a number with a fraction or exponent.
fn integer(v: &str) -> Option<i64> {
    let digits = v.strip_prefix('-').unwrap_or(v).as_bytes();
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) || v == "-0" {
        return None;
    }
    if digits.len() > 18 {
        // Where the range of i64 ends.
        return v.parse().ok();
    }
    // 18 digits cannot overflow.
    let n = digits.iter().fold(0i64, |n, &d| n * 10 + i64::from(d - b'0'));
    Some(if v.starts_with('-') { -n } else { n })
}

/// A value whose text is the one it is written back as: a string without
/// escapes, an integer, `true`, `false` or `null`.
enum Plain<'a> {
    Str(&'a str),
    Int(i64),
    Bool(bool),
    Null,
}

impl<'a> Plain<'a> {
    fn of(v: &'a str) -> Option<Self> {
        let bytes = v.as_bytes();
        match bytes.first()? {
            // The closing quote is the first quote or backslash after the
            // opening one when there is no escape.
            b'"' if quote_or_backslash(bytes, 1) == Some(bytes.len() - 1) => Some(Plain::Str(&v[1..v.len() - 1])),
            b't' => Some(Plain::Bool(true)),
            b'f' => Some(Plain::Bool(false)),
            b'n' => Some(Plain::Null),
            b'-' | b'0'..=b'9' => integer(v).map(Plain::Int),
            _ => None,
        }
    }

    /// # Safety
    /// Room for one more value on the stack.
    unsafe fn push(&self, state: *mut ffi::lua_State) {
        match *self {
            Plain::Str(s) => {
                ffi::lua_pushlstring(state, s.as_ptr().cast(), s.len());
            }
            Plain::Int(n) => ffi::lua_pushinteger(state, n),
            Plain::Bool(b) => ffi::lua_pushboolean(state, c_int::from(b)),
            Plain::Null => ffi::lua_pushlightuserdata(state, std::ptr::null_mut()),
        }
    }
}

/// The text of the table at `t`, as [`Source::anchored`] finds it, leaving
/// a value on the stack. The record of the call under way is known without
/// a lookup: the caller's frame keeps it alive, and it keeps its text for as
/// long as it has the metatable that leads here.
///
/// # Safety
/// As [`Source::anchored`]; `tape` is the scratch tape.
unsafe fn source_at(state: *mut ffi::lua_State, t: c_int, tape: *mut Tape) -> Option<Source> {
    let [table, head] = (*tape).current;
    if table != 0 && ffi::lua_topointer(state, t) as usize == table {
        ffi::lua_pushnil(state);
        return Some(Source {
            head: head as *mut Head,
        });
    }
    Source::anchored(state, t)
}

/// A record's text, as the table at some index holds it.
pub(crate) struct Source {
    head: *mut Head,
}

impl Source {
    /// The text of the table at `t`, if it keeps one.
    ///
    /// # Safety
    /// `t` is a valid index of a live state with room for one more value.
    /// The result is used only while the table is alive and keeps the text.
    pub(crate) unsafe fn of(state: *mut ffi::lua_State, t: c_int) -> Option<Source> {
        let src = Source::anchored(state, t);
        ffi::lua_pop(state, 1);
        src
    }

    /// Like [`Source::of`], for a table that has the metatable of records
    /// kept as text: the record of the call under way (the `current` of
    /// `tape`, the scratch tape, when not null) is known without a lookup.
    ///
    /// # Safety
    /// As [`Source::of`]; the tape is used by nothing else meanwhile.
    pub(crate) unsafe fn of_record(state: *mut ffi::lua_State, t: c_int, tape: *const Tape) -> Option<Source> {
        if let Some(&Tape {
            current: [table, head], ..
        }) = tape.as_ref()
        {
            if table != 0 && ffi::lua_topointer(state, t) as usize == table {
                return Some(Source {
                    head: head as *mut Head,
                });
            }
        }
        Source::of(state, t)
    }

    /// Like [`Source::of`], leaving the text's userdata (or nil) on the
    /// stack, so that it lives as long as that slot whatever the script does
    /// to the table meanwhile.
    ///
    /// # Safety
    /// As [`Source::of`].
    pub(crate) unsafe fn anchored(state: *mut ffi::lua_State, t: c_int) -> Option<Source> {
        if ffi::lua_type(state, t) != ffi::LUA_TTABLE {
            ffi::lua_pushnil(state);
            return None;
        }
        if ffi::lua_rawgetp(state, t, source_key()) != ffi::LUA_TUSERDATA {
            return None;
        }
        if ffi::lua_getmetatable(state, -1) != 0 {
            // A userdata with a metatable is not one of these.
            ffi::lua_pop(state, 1);
            return None;
        }
        let p = ffi::lua_touserdata(state, -1).cast::<Head>();
        let size = ffi::lua_rawlen(state, -1);
        // Only `push` makes these; the size check keeps anything else, put
        // under the key by a script, from being read as one.
        let fits = size >= std::mem::size_of::<Head>() && {
            let head = p.read();
            size == std::mem::size_of::<Head>()
                + head.fields as usize * std::mem::size_of::<Field>()
                + head.len as usize
        };
        fits.then_some(Source { head: p })
    }

    fn count(&self) -> usize {
        // SAFETY: `head` points at a userdata written by `push`.
        unsafe { (*self.head).fields as usize }
    }

    fn field(&self, i: usize) -> Field {
        // SAFETY: `i` < `count()`; the fields follow the head.
        unsafe { self.head.add(1).cast::<Field>().add(i).read() }
    }

    pub(crate) fn text(&self) -> &str {
        // SAFETY: the text follows the fields and was a `&str` when copied.
        unsafe {
            let len = (*self.head).len as usize;
            let at = self.head.add(1).cast::<Field>().add(self.count()).cast::<u8>();
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(at, len))
        }
    }

    /// Whether field `i` is still only in the text.
    fn here(&self, i: usize) -> bool {
        // SAFETY: as `count`.
        unsafe { (*self.head).gone & (1 << i) == 0 }
    }

    fn take(&self, i: usize) {
        // SAFETY: as `count`.
        unsafe { (*self.head).gone |= 1 << i }
    }

    /// [`Source::take`], for a field the script read or set; for the
    /// record under way, noted as one the next records have decoded up
    /// front (see [`push`]).
    ///
    /// # Safety
    /// `tape` is the scratch tape, used by nothing else meanwhile.
    unsafe fn taken(&self, i: usize, tape: *mut Tape) {
        self.take(i);
        if (*tape).current[1] == self.head as usize {
            (*tape).touched |= 1 << i;
        }
    }

    /// The name of each field still in the text, and where its value is
    /// in [`Source::text`].
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&str, (usize, usize))> + '_ {
        let text = self.text();
        (0..self.count()).filter(|&i| self.here(i)).map(move |i| {
            let [a, b, c, d] = self.field(i);
            (&text[a as usize..b as usize], (c as usize, d as usize))
        })
    }

    /// The record's shape, as it was handed over.
    pub(crate) fn shape(&self) -> Shape {
        // SAFETY: as `count`.
        unsafe { (*self.head).shape }
    }

    /// Whether the text may hold a line break.
    pub(crate) fn breaks(&self) -> bool {
        // SAFETY: as `count`.
        unsafe { (*self.head).breaks }
    }

    /// Which fields have left the text, one bit each.
    pub(crate) fn gone(&self) -> u64 {
        // SAFETY: as `count`.
        unsafe { (*self.head).gone }
    }

    /// Where the value of each field still in the text is, in
    /// [`Source::text`], in the order of [`Source::fields`].
    pub(crate) fn values(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.count()).filter(|&i| self.here(i)).map(move |i| {
            let [_, _, c, d] = self.field(i);
            (c as usize, d as usize)
        })
    }

    /// Whether no field is left in the text.
    pub(crate) fn is_empty(&self) -> bool {
        (0..self.count()).all(|i| !self.here(i))
    }

    /// The field still in the text with this name.
    fn find(&self, name: &[u8]) -> Option<usize> {
        // SAFETY: as `count`.
        let [low, high] = unsafe { (*self.head).names };
        if (u128::from(low) | u128::from(high) << 64) & name_bit(name) == 0 {
            return None;
        }
        let text = self.text().as_bytes();
        (0..self.count()).find(|&i| {
            let [a, b, ..] = self.field(i);
            let (a, b) = (a as usize, b as usize);
            b - a == name.len() && self.here(i) && &text[a..b] == name
        })
    }

    /// Pushes field `i`'s value, decoded as whole records are. False when
    /// the text is not a value Lua can hold (a number out of range, a lone
    /// surrogate), which fails the script as it would have failed the whole
    /// record; the caller then drops what was pushed.
    ///
    /// # Safety
    /// Room for three more values; `array_mt` is an absolute index; the
    /// tape is used by nothing else meanwhile.
    unsafe fn push_value(&self, state: *mut ffi::lua_State, i: usize, array_mt: c_int, tape: *mut Tape) -> bool {
        let [_, _, c, d] = self.field(i);
        let v = &self.text()[c as usize..d as usize];
        if let Some(plain) = Plain::of(v) {
            plain.push(state);
            return true;
        }
        // Escaped strings, objects, arrays and other numbers. The reader is
        // done with before Lua is touched. Nothing a script runs can come
        // back here while the tape is in use (no finalizers, no metamethods
        // on the tables made); the flag makes sure of it.
        let tape = &mut *tape;
        if tape.busy {
            return false;
        }
        let read = {
            let mut de = serde_json::Deserializer::from_str(v);
            tape.read(&mut de).is_ok()
        };
        tape.busy = true;
        let pushed = read && tape.push_value(state, array_mt);
        tape.busy = false;
        pushed
    }
}

/// The upvalues of the functions below: the array metatable and the tape
/// that decodes nested values.
unsafe fn upvalues(state: *mut ffi::lua_State) -> (c_int, *mut Tape) {
    let tape = ffi::lua_touserdata(state, ffi::lua_upvalueindex(2)).cast::<Tape>();
    (ffi::lua_upvalueindex(1), tape)
}

/// `__index`: a field still in the text, decoded.
unsafe extern "C-unwind" fn index(state: *mut ffi::lua_State) -> c_int {
    if ffi::lua_type(state, 2) != ffi::LUA_TSTRING {
        return 0;
    }
    if ffi::lua_checkstack(state, 6) == 0 {
        return too_deep(state);
    }
    let (array_mt, tape) = upvalues(state);
    // The text's userdata (nil for the record under way, which the caller
    // keeps) stays at index 3 until the end.
    let Some(src) = source_at(state, 1, tape) else {
        return 0;
    };
    let mut len = 0usize;
    let p = ffi::lua_tolstring(state, 2, &mut len);
    let Some(i) = src.find(std::slice::from_raw_parts(p.cast::<u8>(), len)) else {
        return 0;
    };
    ffi::lua_pushvalue(state, array_mt);
    let array_mt = ffi::lua_gettop(state);
    if !src.push_value(state, i, array_mt, tape) {
        ffi::lua_settop(state, array_mt);
        return not_a_value(state, 2);
    }
    // The table keeps what was read: a nested table must stay the same one,
    // and a field read is usually written next, which is then a plain
    // assignment.
    ffi::lua_pushvalue(state, 2);
    ffi::lua_pushvalue(state, -2);
    ffi::lua_rawset(state, 1);
    src.taken(i, tape);
    1
}

/// Raises the error of a record nested deeper than the Lua stack allows.
unsafe fn too_deep(state: *mut ffi::lua_State) -> c_int {
    ffi::lua_pushstring(state, c"the record is nested too deep for Lua".as_ptr());
    ffi::lua_error(state)
}

/// Raises the error of a field (its name at `name`) whose text Lua cannot
/// hold.
unsafe fn not_a_value(state: *mut ffi::lua_State, name: c_int) -> c_int {
    let name = ffi::lua_absindex(state, name);
    ffi::lua_pushstring(state, c"field `".as_ptr());
    ffi::lua_pushvalue(state, name);
    ffi::lua_pushstring(state, c"` of the record is not a JSON value Lua can hold".as_ptr());
    ffi::lua_concat(state, 3);
    ffi::lua_error(state)
}

/// `__newindex`: the field leaves the text and is the table's.
unsafe extern "C-unwind" fn new_index(state: *mut ffi::lua_State) -> c_int {
    if ffi::lua_type(state, 1) != ffi::LUA_TTABLE {
        return 0;
    }
    // The table holds the text's userdata throughout: the key it is under
    // is not the one being set.
    let (_, tape) = upvalues(state);
    let mut found = None;
    if ffi::lua_type(state, 2) == ffi::LUA_TSTRING {
        let src = source_at(state, 1, tape);
        ffi::lua_pop(state, 1);
        if let Some(src) = src {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(state, 2, &mut len);
            found = src
                .find(std::slice::from_raw_parts(p.cast::<u8>(), len))
                .map(|i| (src, i));
        }
    }
    ffi::lua_settop(state, 3);
    let set = ffi::lua_type(state, 3) != ffi::LUA_TNIL;
    ffi::lua_rawset(state, 1);
    if let Some((src, i)) = found {
        src.taken(i, tape);
    } else if set && (*tape).current[0] == ffi::lua_topointer(state, 1) as usize {
        (*tape).added += 1;
    }
    0
}

/// Decodes every field still in the text of the table at `t` (if it keeps
/// one) into it, and makes it a plain table.
///
/// # Safety
/// `t` is an absolute index; called from a function with the upvalues above.
unsafe fn settle(state: *mut ffi::lua_State, t: c_int) {
    if ffi::lua_checkstack(state, 6) == 0 {
        too_deep(state);
        return;
    }
    let Some(src) = Source::anchored(state, t) else {
        ffi::lua_pop(state, 1);
        return;
    };
    let (array_mt, tape) = upvalues(state);
    ffi::lua_pushvalue(state, array_mt);
    let array_mt = ffi::lua_gettop(state);
    for i in 0..src.count() {
        if !src.here(i) {
            continue;
        }
        let [a, b, ..] = src.field(i);
        let name = &src.text()[a as usize..b as usize];
        ffi::lua_pushlstring(state, name.as_ptr().cast(), name.len());
        let name = ffi::lua_gettop(state);
        if !src.push_value(state, i, array_mt, tape) {
            ffi::lua_settop(state, name);
            not_a_value(state, name);
            return;
        }
        ffi::lua_rawset(state, t);
        src.take(i);
    }
    // The metatable, then the userdata.
    ffi::lua_pop(state, 2);
    if (*tape).current[0] == ffi::lua_topointer(state, t) as usize {
        (*tape).current = [0, 0];
    }
    ffi::lua_pushnil(state);
    ffi::lua_rawsetp(state, t, source_key());
    ffi::lua_pushnil(state);
    ffi::lua_setmetatable(state, t);
}

/// `__pairs`: the record made a plain table, then `next, t, nil`.
unsafe extern "C-unwind" fn pairs(state: *mut ffi::lua_State) -> c_int {
    settle(state, 1);
    ffi::lua_settop(state, 1);
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(3));
    ffi::lua_insert(state, 1);
    ffi::lua_pushnil(state);
    3
}

/// Makes arguments 1 and 2, if records kept as text, plain tables.
unsafe fn settle_args(state: *mut ffi::lua_State) {
    for arg in [1, 2] {
        if ffi::lua_type(state, arg) == ffi::LUA_TTABLE {
            settle(state, arg);
        }
    }
}

/// Calls upvalue `up` with the arguments, leaving what it returns; a
/// coroutine may yield inside it, and `then` finishes the caller's work.
unsafe fn call_upvalue(state: *mut ffi::lua_State, up: c_int, then: ffi::lua_KFunction) {
    ffi::lua_pushvalue(state, ffi::lua_upvalueindex(up));
    ffi::lua_insert(state, 1);
    ffi::lua_callk(state, ffi::lua_gettop(state) - 1, ffi::LUA_MULTRET, 0, Some(then));
}

/// Calls upvalue 3 with the arguments, returning what it returns.
unsafe fn call_original(state: *mut ffi::lua_State) -> c_int {
    call_upvalue(state, 3, all_results);
    ffi::lua_gettop(state)
}

unsafe extern "C-unwind" fn all_results(state: *mut ffi::lua_State, _status: c_int, _ctx: ffi::lua_KContext) -> c_int {
    ffi::lua_gettop(state)
}

/// A library function (upvalue 3) that sees tables as they are: its first
/// two arguments, if records kept as text, are made plain tables first.
unsafe extern "C-unwind" fn settled_first(state: *mut ffi::lua_State) -> c_int {
    settle_args(state);
    call_original(state)
}

/// `next`, for which a record kept as text is first made a plain table.
/// Called at every step of a `pairs` loop, so it calls `lua_next` itself.
unsafe extern "C-unwind" fn next_global(state: *mut ffi::lua_State) -> c_int {
    ffi::luaL_checktype(state, 1, ffi::LUA_TTABLE);
    settle(state, 1);
    ffi::lua_settop(state, 2);
    if ffi::lua_next(state, 1) != 0 {
        2
    } else {
        ffi::lua_pushnil(state);
        1
    }
}

/// `setmetatable`, as [`settled_first`], refusing finalizers: Lua would
/// run a `__gc` in the middle of whatever allocates, which the functions
/// here do not expect, and scripts have no use for them.
unsafe extern "C-unwind" fn set_metatable(state: *mut ffi::lua_State) -> c_int {
    // Decoded first: a record's text may hold a `__gc` field.
    settle_args(state);
    if ffi::lua_type(state, 2) == ffi::LUA_TTABLE {
        ffi::lua_pushstring(state, c"__gc".as_ptr());
        let finalizer = ffi::lua_rawget(state, 2) != ffi::LUA_TNIL;
        ffi::lua_pop(state, 1);
        if finalizer {
            ffi::lua_pushstring(
                state,
                c"setmetatable: finalizers (`__gc`) are not available to scripts".as_ptr(),
            );
            ffi::lua_error(state);
        }
    }
    call_original(state)
}

/// `pairs`, handing out the `next` scripts see (upvalue 3) where Lua's own
/// (upvalue 2) would come back: that one would show a record's text.
unsafe extern "C-unwind" fn pairs_global(state: *mut ffi::lua_State) -> c_int {
    call_upvalue(state, 1, pairs_results);
    pairs_results(state, ffi::LUA_OK, 0)
}

unsafe extern "C-unwind" fn pairs_results(
    state: *mut ffi::lua_State,
    _status: c_int,
    _ctx: ffi::lua_KContext,
) -> c_int {
    if ffi::lua_gettop(state) >= 1 && ffi::lua_rawequal(state, 1, ffi::lua_upvalueindex(2)) != 0 {
        ffi::lua_pushvalue(state, ffi::lua_upvalueindex(3));
        ffi::lua_replace(state, 1);
    }
    ffi::lua_gettop(state)
}

/// Makes the metatable of records kept as text and wraps the library
/// functions that must see them whole. Leaves the metatable on the stack.
/// Runs before the script's top level, so that the script never holds the
/// functions it replaces.
///
/// # Safety
/// Inside a protected call, with the array metatable at `array_mt`;
/// `tape` outlives the state.
pub(crate) unsafe fn install(state: *mut ffi::lua_State, array_mt: c_int, tape: *mut Tape) {
    let array_mt = ffi::lua_absindex(state, array_mt);
    if ffi::lua_checkstack(state, 12) == 0 {
        too_deep(state);
        return;
    }
    ffi::lua_rawgeti(state, ffi::LUA_REGISTRYINDEX, ffi::LUA_RIDX_GLOBALS);
    let globals = ffi::lua_gettop(state);
    let global = |name: &std::ffi::CStr| {
        ffi::lua_pushstring(state, name.as_ptr());
        ffi::lua_rawget(state, globals);
    };
    // A closure over the array metatable, the tape and the value on top.
    let closure = |f: ffi::lua_CFunction| {
        ffi::lua_pushvalue(state, array_mt);
        ffi::lua_insert(state, -2);
        ffi::lua_pushlightuserdata(state, tape.cast());
        ffi::lua_insert(state, -2);
        ffi::lua_pushcclosure(state, f, 3);
    };
    let set_global = |name: &std::ffi::CStr| {
        ffi::lua_pushstring(state, name.as_ptr());
        ffi::lua_insert(state, -2);
        ffi::lua_rawset(state, globals);
    };
    global(c"next");
    let raw_next = ffi::lua_gettop(state);
    for name in [c"rawget", c"rawset", c"getmetatable"] {
        global(name);
        closure(settled_first);
        set_global(name);
    }
    ffi::lua_pushnil(state);
    closure(next_global);
    set_global(c"next");
    global(c"setmetatable");
    closure(set_metatable);
    set_global(c"setmetatable");
    global(c"pairs");
    ffi::lua_pushvalue(state, raw_next);
    global(c"next");
    ffi::lua_pushcclosure(state, pairs_global, 3);
    set_global(c"pairs");

    ffi::lua_createtable(state, 0, 3);
    let mt = ffi::lua_gettop(state);
    for (name, f) in [
        (c"__index", index as ffi::lua_CFunction),
        (c"__newindex", new_index),
        (c"__pairs", pairs),
    ] {
        // `pairs` hands out the `next` scripts see.
        global(c"next");
        closure(f);
        ffi::lua_pushstring(state, name.as_ptr());
        ffi::lua_insert(state, -2);
        ffi::lua_rawset(state, mt);
    }
    ffi::lua_replace(state, globals);
    ffi::lua_settop(state, globals);
}

/// Whether the table at `idx` has no fields, in the table or in its text.
/// A record with fields left in its text is known not to be without a walk
/// over the table; `tape` is the scratch tape (see [`Source::of_record`]).
///
/// # Safety
/// `idx` is an absolute index of a table, with room for two more values;
/// the tape is used by nothing else meanwhile.
pub(crate) unsafe fn is_empty(state: *mut ffi::lua_State, idx: c_int, tape: *const Tape) -> bool {
    if Source::of_record(state, idx, tape).is_some_and(|src| !src.is_empty()) {
        return false;
    }
    ffi::lua_pushnil(state);
    while ffi::lua_next(state, idx) != 0 {
        if !is_source_key(state, -2) {
            ffi::lua_pop(state, 2);
            return false;
        }
        ffi::lua_pop(state, 1);
    }
    // Its text, if it keeps one, has no field left (see above).
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(text: &str) -> Option<Vec<(&str, &str)>> {
        let mut found = Vec::new();
        scan(text, &mut found).map(|_| {
            found
                .iter()
                .map(|f| (&text[f[0] as usize..f[1] as usize], &text[f[2] as usize..f[3] as usize]))
                .collect()
        })
    }

    #[test]
    fn scan_finds_each_field_and_its_value_text() {
        assert_eq!(
            fields(r#" { "a" : 1 , "b":"x\"}" ,"c" :{"d":[1,{"e":"]"}]}, "f": -2.5e3,"g":null } "#),
            Some(vec![
                ("a", "1"),
                ("b", r#""x\"}""#),
                ("c", r#"{"d":[1,{"e":"]"}]}"#),
                ("f", "-2.5e3"),
                ("g", "null"),
            ])
        );
        let mut found = Vec::new();
        let names = scan(r#"{"id":1,"name":"x","phone":"y"}"#, &mut found);
        assert_eq!(names, Some(name_bit(b"id") | name_bit(b"name") | name_bit(b"phone")));
    }

    #[test]
    fn scan_refuses_what_it_cannot_keep_as_text() {
        for text in [
            "{}",
            "[1]",
            "\"a\"",
            r#"{"a\n": 1}"#,
            r#"{"a": 1, "a": 2}"#,
            r#"{"a": 1"#,
            r#"{"a": "1}"#,
            r#"{"a": 1} x"#,
            r#"{"a" 1}"#,
        ] {
            assert_eq!(fields(text), None, "{text}");
        }
        let wide = |n: usize| {
            format!(
                "{{{}}}",
                (0..n).map(|i| format!("\"f{i}\":{i}")).collect::<Vec<_>>().join(",")
            )
        };
        assert!(fields(&wide(MAX_FIELDS)).is_some());
        assert_eq!(fields(&wide(MAX_FIELDS + 1)), None);
    }

    #[test]
    fn the_first_quote_or_backslash_is_found_at_any_position() {
        // Bytes next to the ones sought, in value and in bits, around them.
        let fillers = [b'a', b'!', b'#', b'[', b']', 0x01, 0xA2, 0xDC, 0xFF];
        for len in 0..24 {
            for &filler in &fillers {
                let plain = vec![filler; len];
                assert_eq!(quote_or_backslash(&plain, 0), None);
                for at in 0..len {
                    for sought in [b'"', b'\\'] {
                        let mut text = plain.clone();
                        text[at] = sought;
                        // A second one further on must not be taken instead.
                        if at + 3 < len {
                            text[at + 3] = b'"';
                        }
                        for from in 0..=at {
                            assert_eq!(quote_or_backslash(&text, from), Some(at), "{text:?} from {from}");
                        }
                    }
                }
            }
        }
        assert_eq!(quote_or_backslash(b"ab", 5), None);
    }

    #[test]
    fn integers_are_read_as_json_readers_read_them() {
        for (text, want) in [
            ("0", Some(0)),
            ("-7", Some(-7)),
            ("123456789012345678", Some(123_456_789_012_345_678)),
            ("9223372036854775807", Some(i64::MAX)),
            ("-9223372036854775808", Some(i64::MIN)),
            ("9223372036854775808", None),
            ("-0", None),
            ("1.0", None),
            ("1e2", None),
            ("-", None),
            ("1-", None),
        ] {
            assert_eq!(integer(text), want, "{text}");
        }
    }
}

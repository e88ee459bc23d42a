//! Records into Lua tables and back, without a JSON value in between.
//!
//! A record arrives as JSON text or as a value and becomes a Lua table in
//! one pass; the table a script returns is written straight out as JSON
//! text. Both follow the rules scripts rely on: JSON `null` is `flow.null`,
//! JSON arrays are tables marked as arrays, and a table is written as an
//! array when it is marked so or has elements `1..n`, as an object
//! otherwise, with its keys in sorted order so that output is the same from
//! run to run.

use mlua::{Lua, LuaSerdeExt, Table, Value as LuaValue};
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use std::fmt;
use std::fmt::Write as _;

/// How deep tables may nest in a record (a table that contains itself
/// would otherwise never end).
const MAX_DEPTH: usize = 128;

/// Builds the Lua value of whatever it deserializes.
pub(crate) struct ToLua<'l> {
    pub lua: &'l Lua,
    pub array_mt: &'l Table,
}

impl<'de> DeserializeSeed<'de> for ToLua<'_> {
    type Value = LuaValue;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<LuaValue, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ToLua<'_> {
    type Value = LuaValue;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<LuaValue, E> {
        Ok(LuaValue::Boolean(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<LuaValue, E> {
        Ok(LuaValue::Integer(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<LuaValue, E> {
        Ok(match i64::try_from(v) {
            Ok(i) => LuaValue::Integer(i),
            Err(_) => LuaValue::Number(v as f64),
        })
    }

    fn visit_f64<E>(self, v: f64) -> Result<LuaValue, E> {
        Ok(LuaValue::Number(v))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<LuaValue, E> {
        self.lua.create_string(v).map(LuaValue::String).map_err(E::custom)
    }

    fn visit_unit<E>(self) -> Result<LuaValue, E> {
        Ok(self.lua.null())
    }

    fn visit_none<E>(self) -> Result<LuaValue, E> {
        Ok(self.lua.null())
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<LuaValue, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LuaValue, A::Error> {
        let t = self
            .lua
            .create_table_with_capacity(seq.size_hint().unwrap_or(0), 0)
            .map_err(A::Error::custom)?;
        let mut i = 1i64;
        while let Some(v) = seq.next_element_seed(ToLua {
            lua: self.lua,
            array_mt: self.array_mt,
        })? {
            t.raw_set(i, v).map_err(A::Error::custom)?;
            i += 1;
        }
        t.set_metatable(Some(self.array_mt.clone())).map_err(A::Error::custom)?;
        Ok(LuaValue::Table(t))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LuaValue, A::Error> {
        let t = self
            .lua
            .create_table_with_capacity(0, map.size_hint().unwrap_or(16))
            .map_err(A::Error::custom)?;
        while let Some(key) = map.next_key_seed(Key)? {
            let v = map.next_value_seed(ToLua {
                lua: self.lua,
                array_mt: self.array_mt,
            })?;
            t.raw_set(key.as_str(), v).map_err(A::Error::custom)?;
        }
        Ok(LuaValue::Table(t))
    }
}

/// A field name: borrowed from the JSON text unless it holds escapes.
enum KeyText<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl KeyText<'_> {
    fn as_str(&self) -> &str {
        match self {
            KeyText::Borrowed(s) => s,
            KeyText::Owned(s) => s,
        }
    }
}

struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = KeyText<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<KeyText<'de>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = KeyText<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<KeyText<'de>, E> {
        Ok(KeyText::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<KeyText<'de>, E> {
        Ok(KeyText::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<KeyText<'de>, E> {
        Ok(KeyText::Owned(v))
    }
}

/// Writes a Lua value as JSON. `array_mt` is the state's array metatable
/// (compared by address only). Errors say what cannot be JSON.
pub(crate) fn write_json(
    out: &mut String,
    v: &LuaValue,
    array_mt: *const std::ffi::c_void,
    depth: usize,
) -> Result<(), String> {
    match v {
        LuaValue::Nil => out.push_str("null"),
        LuaValue::LightUserData(ud) if ud.0.is_null() => out.push_str("null"),
        LuaValue::Boolean(b) => out.push_str(if *b { "true" } else { "false" }),
        LuaValue::Integer(i) => {
            let _ = write!(out, "{i}");
        }
        LuaValue::Number(n) if n.is_finite() => {
            out.push_str(&serde_json::to_string(n).map_err(|e| e.to_string())?);
        }
        LuaValue::Number(_) => out.push_str("null"),
        LuaValue::String(s) => {
            let s = s
                .to_str()
                .map_err(|_| "a string that is not valid UTF-8 text".to_owned())?;
            push_string(out, &s);
        }
        LuaValue::Table(t) => {
            if depth >= MAX_DEPTH {
                return Err(format!(
                    "tables nested more than {MAX_DEPTH} deep (does a table contain itself?)"
                ));
            }
            write_table(out, t, array_mt, depth + 1)?;
        }
        other => return Err(format!("a {}, which has no JSON form", other.type_name())),
    }
    Ok(())
}

fn write_table(out: &mut String, t: &Table, array_mt: *const std::ffi::c_void, depth: usize) -> Result<(), String> {
    let len = t.raw_len();
    let is_array = len > 0 || t.metatable().is_some_and(|mt| mt.to_pointer() == array_mt);
    if is_array {
        out.push('[');
        for i in 1..=len {
            if i > 1 {
                out.push(',');
            }
            let v: LuaValue = t.raw_get(i).map_err(|e| e.to_string())?;
            write_json(out, &v, array_mt, depth)?;
        }
        out.push(']');
        return Ok(());
    }
    // The names go into one buffer, each field noting where its name is.
    let mut names = String::new();
    let mut fields: Vec<(usize, usize, LuaValue)> = Vec::with_capacity(16);
    for pair in t.pairs::<LuaValue, LuaValue>() {
        let (k, v) = pair.map_err(|e| e.to_string())?;
        let start = names.len();
        match k {
            LuaValue::String(s) => names.push_str(
                &s.to_str()
                    .map_err(|_| "a field name that is not valid UTF-8 text".to_owned())?,
            ),
            LuaValue::Integer(i) => {
                let _ = write!(names, "{i}");
            }
            LuaValue::Number(n) => {
                let _ = write!(names, "{n}");
            }
            other => return Err(format!("a field named by a {}", other.type_name())),
        }
        fields.push((start, names.len(), v));
    }
    fields.sort_unstable_by(|a, b| names[a.0..a.1].cmp(&names[b.0..b.1]));
    out.push('{');
    for (i, (a, b, v)) in fields.iter().enumerate() {
        let k = &names[*a..*b];
        if i > 0 {
            out.push(',');
        }
        push_string(out, k);
        out.push(':');
        write_json(out, v, array_mt, depth).map_err(|e| format!("field `{k}`: {e}"))?;
    }
    out.push('}');
    Ok(())
}

/// A JSON string: quotes, backslashes and control characters escaped,
/// everything else as it is.
pub(crate) fn push_string(out: &mut String, s: &str) {
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0..=0x1f => "",
            _ => continue,
        };
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_json() {
        let mut out = String::new();
        push_string(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        assert_eq!(serde_json::from_str::<String>(&out).unwrap(), "a\"b\\c\nd\u{1}é");
    }
}

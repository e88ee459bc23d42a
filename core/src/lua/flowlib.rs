//! The `flow` module inside Lua: `flow.json`, `flow.md5`, `flow.date`,
//! `flow.phone`, `flow.log` and `flow.null`.

use md5::{Digest, Md5};
use mlua::{ffi, Lua, LuaSerdeExt, Table, Value as LuaValue};
use serde_json::Value;
use std::ffi::c_int;

/// `flow.phone(text)`: the number as `+7XXXXXXXXXX`, or nil when it is not
/// a Russian phone number. Numbers are read as their digits.
///
/// # Safety
/// Called by Lua with its arguments on the stack. Owns nothing that needs
/// dropping when pushing the result raises a memory error.
unsafe extern "C-unwind" fn phone(state: *mut ffi::lua_State) -> c_int {
    let found = match ffi::lua_type(state, 1) {
        ffi::LUA_TSTRING => {
            let mut len = 0usize;
            let p = ffi::lua_tolstring(state, 1, &mut len);
            let bytes = std::slice::from_raw_parts(p.cast::<u8>(), len);
            std::str::from_utf8(bytes).ok().and_then(crate::phone::normalized)
        }
        ffi::LUA_TNUMBER => {
            let n = if ffi::lua_isinteger(state, 1) != 0 {
                Some(ffi::lua_tointegerx(state, 1, std::ptr::null_mut()))
            } else {
                // A number with a fraction is no phone number.
                let f = ffi::lua_tonumberx(state, 1, std::ptr::null_mut());
                (f.fract() == 0.0 && f.abs() < 1e15).then_some(f as i64)
            };
            n.and_then(|n| crate::phone::normalized(itoa::Buffer::new().format(n)))
        }
        _ => None,
    };
    match found {
        Some(text) => {
            ffi::lua_pushlstring(state, text.as_ptr().cast(), text.len());
        }
        None => ffi::lua_pushnil(state),
    }
    1
}

/// Lower-case hex md5 of bytes.
pub fn md5_hex(bytes: &[u8]) -> String {
    let digest = Md5::digest(bytes);
    let mut out = String::with_capacity(32);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

fn log_table(lua: &Lua, step: &str) -> mlua::Result<Table> {
    let log = lua.create_table()?;
    macro_rules! level {
        ($name:literal, $mac:ident) => {{
            let step = step.to_owned();
            log.set(
                $name,
                lua.create_function(move |_, msg: LuaValue| {
                    let text = match &msg {
                        LuaValue::String(s) => s.to_string_lossy(),
                        other => other.to_string().unwrap_or_else(|_| other.type_name().to_owned()),
                    };
                    tracing::$mac!(target: "flow::script", step = %step, "{}", crate::secrets::mask(&text));
                    Ok(())
                })?,
            )?;
        }};
    }
    level!("debug", debug);
    level!("info", info);
    level!("warn", warn);
    level!("error", error);
    Ok(log)
}

/// Installs the `flow` global.
pub fn install(lua: &Lua, step: &str) -> mlua::Result<()> {
    let flow = lua.create_table()?;

    let json = lua.create_table()?;
    // The functions that can fail return `false, message` to the Lua
    // wrappers `raising` puts around them, which raise the message as a
    // string at the script's line (see there).
    json.set(
        "decode",
        lua.create_function(|lua, text: LuaValue| {
            let LuaValue::String(text) = text else {
                return failed(
                    lua,
                    format!("flow.json.decode: expects JSON text, got {}", type_of(&text)),
                );
            };
            match serde_json::from_slice::<Value>(&text.as_bytes()) {
                Ok(value) => Ok((true, lua.to_value(&value)?)),
                Err(e) => failed(lua, format!("flow.json.decode: {e}")),
            }
        })?,
    )?;
    flow.set("json", json)?;

    flow.set(
        "md5",
        lua.create_function(|lua, text: LuaValue| {
            let digest = match &text {
                LuaValue::String(s) => md5_hex(&s.as_bytes()),
                LuaValue::Integer(_) | LuaValue::Number(_) => md5_hex(text.to_string()?.as_bytes()),
                other => return failed(lua, format!("flow.md5: expects text, got {}", type_of(other))),
            };
            Ok((true, LuaValue::String(lua.create_string(digest)?)))
        })?,
    )?;

    // Called once per record by most mappings: a plain C function, without
    // the cost of a Rust callback's argument conversions.
    // SAFETY: `phone` follows the C function protocol (see there).
    flow.set("phone", unsafe { lua.create_c_function(phone)? })?;

    let date = lua.create_table()?;
    date.set(
        "parse",
        lua.create_function(|_, text: LuaValue| {
            let text = match text {
                LuaValue::String(s) => s.to_string_lossy(),
                LuaValue::Integer(n) => n.to_string(),
                _ => return Ok(None),
            };
            Ok(crate::dates::parse(&text).map(|d| d.timestamp()))
        })?,
    )?;
    date.set(
        "format",
        lua.create_function(|lua, (v, fmt): (LuaValue, LuaValue)| {
            let fmt = match fmt {
                LuaValue::Nil => "%Y-%m-%d %H:%M:%S".to_owned(),
                LuaValue::String(s) => s.to_string_lossy(),
                other => {
                    return failed(
                        lua,
                        format!("flow.date.format: the format must be text, got {}", type_of(&other)),
                    )
                }
            };
            let d = match v {
                LuaValue::Integer(n) => chrono::DateTime::from_timestamp(n, 0),
                LuaValue::Number(n) => chrono::DateTime::from_timestamp(n as i64, 0),
                LuaValue::String(s) => crate::dates::parse(&s.to_string_lossy()),
                _ => None,
            };
            let Some(d) = d else { return Ok((true, LuaValue::Nil)) };
            match crate::dates::format(&d, &fmt) {
                Some(text) => Ok((true, LuaValue::String(lua.create_string(text)?))),
                None => failed(lua, format!("flow.date.format: bad format `{fmt}`")),
            }
        })?,
    )?;
    date.set("now", lua.create_function(|_, ()| Ok(chrono::Utc::now().timestamp()))?)?;
    flow.set("date", date)?;

    flow.set("log", log_table(lua, step)?)?;
    flow.set("null", lua.null())?;
    lua.globals().set("flow", flow)?;

    // `print` goes to the log instead of stdout, which belongs to flow.
    let print_step = step.to_owned();
    lua.globals().set(
        "print",
        lua.create_function(move |_, args: mlua::Variadic<LuaValue>| {
            let parts: Vec<String> = args
                .iter()
                .map(|v| v.to_string().unwrap_or_else(|_| v.type_name().to_owned()))
                .collect();
            tracing::info!(target: "flow::script", step = %print_step, "{}", crate::secrets::mask(&parts.join("\t")));
            Ok(())
        })?,
    )?;
    Ok(())
}

/// `flow.json.encode(value)`, written as records are: arrays as arrays,
/// fields in name order, `flow.null` as null. `array_mt` and `lazy_mt` are
/// the addresses of the array metatable and of the metatable of records
/// kept as text.
pub fn install_encode(
    lua: &Lua,
    array_mt: *const std::ffi::c_void,
    lazy_mt: *const std::ffi::c_void,
    max_len: usize,
) -> mlua::Result<()> {
    let (array_mt, lazy_mt) = (array_mt as usize, lazy_mt as usize);
    let encode = lua.create_function(move |lua, v: LuaValue| {
        let mut writer = super::convert::Writer::new(array_mt as *const _, lazy_mt as *const _, max_len);
        let mut out = String::new();
        let mut written = Ok(());
        // SAFETY: the value is at the top of the stack in a protected call;
        // the writer raises no Lua error, and what it owns is this frame's.
        unsafe { lua.exec_raw::<()>(&v, |state| written = writer.write(state, -1, &mut out))? };
        match written {
            Ok(()) => Ok((true, LuaValue::String(lua.create_string(out)?))),
            Err(e) => failed(lua, format!("flow.json.encode: {e}")),
        }
    })?;
    let flow: Table = lua.globals().get("flow")?;
    let json: Table = flow.get("json")?;
    json.set("encode", encode)?;
    raising(lua)
}

/// What a function that can fail returns when it does: `false` and the
/// message, for its wrapper to raise, after the file and line of the
/// script's code that called it.
fn failed(lua: &Lua, message: String) -> mlua::Result<(bool, LuaValue)> {
    let at = script_line(lua).unwrap_or_default();
    Ok((false, LuaValue::String(lua.create_string(format!("{at}{message}"))?)))
}

/// `file:line: ` of the innermost script code on the stack (a call in tail
/// position leaves no frame of its own: the line that led to it is the
/// nearest one there is).
fn script_line(lua: &Lua) -> Option<String> {
    for level in 1..100 {
        let at = lua.inspect_stack(level, |d| {
            let src = d.source();
            if src.what == "C" || src.source.as_deref() == Some("=flow") {
                return None;
            }
            let line = d.current_line()?;
            Some(format!("{}:{line}: ", src.short_src.as_deref().unwrap_or("?")))
        })?;
        if at.is_some() {
            return at;
        }
    }
    None
}

fn type_of(v: &LuaValue) -> &'static str {
    match v {
        LuaValue::Nil => "nil",
        LuaValue::LightUserData(p) if p.0.is_null() => "flow.null",
        other => other.type_name(),
    }
}

/// Puts a Lua wrapper around each `flow` function that can fail, which
/// raises the failure as a plain string that starts with the script's file
/// and line (see [`failed`]), as Lua's own functions do: `pcall` then gets a message a script
/// can match and keep, not an opaque error object with a Rust stack trace.
fn raising(lua: &Lua) -> mlua::Result<()> {
    lua.load(
        r#"
        local error = error
        local function raising(raw)
          return function(...)
            local ok, v = raw(...)
            if not ok then error(v, 0) end
            return v
          end
        end
        flow.json.decode = raising(flow.json.decode)
        flow.json.encode = raising(flow.json.encode)
        flow.md5 = raising(flow.md5)
        flow.date.format = raising(flow.date.format)
        "#,
    )
    .set_name("=flow")
    .exec()
}

/// The `ctx` table passed to every call: the values given (`inputs`, `item`,
/// ...), the step id and a logger.
pub fn context(lua: &Lua, step: &str, values: &Value) -> mlua::Result<Table> {
    let ctx = lua.create_table()?;
    if let Value::Object(map) = values {
        for (k, v) in map {
            ctx.set(k.as_str(), lua.to_value(v)?)?;
        }
    }
    ctx.set("step", step)?;
    ctx.set("log", log_table(lua, step)?)?;
    Ok(ctx)
}

#[cfg(test)]
mod tests {
    use crate::lua::{Limits, Script};
    use serde_json::json;

    #[test]
    fn flow_module_helpers() {
        let s = Script::load(
            r#"function transform(r)
                 return {
                   phone = flow.phone(r.phone),
                   bad = flow.phone("nope") == nil and flow.phone(79123456789.5) == nil,
                   float = flow.phone(79123456789.0),
                   md5 = flow.md5("abc"),
                   json = flow.json.encode({a = 1}),
                   back = flow.json.decode('{"x": [1, 2]}').x[2],
                   ts = flow.date.parse("2024-05-01 10:00:00"),
                   day = flow.date.format("2024-05-01T10:00:00Z", "%d.%m.%Y"),
                   isnull = r.gone == flow.null,
                   bad_json = select(2, pcall(function() return flow.json.decode("{bad") end)),
                   bad_md5 = select(2, pcall(function() return flow.md5(nil) end)),
                   bad_fmt = select(2, pcall(function() return flow.date.format(0, 5) end)),
                   bad_encode = select(2, pcall(function() return flow.json.encode({f = print}) end)),
                 }
               end"#,
            "f.lua",
            Limits::default(),
            "t",
            &json!({}),
        )
        .unwrap();
        let out = s
            .transform(&json!({"phone": "8 (912) 345-67-89", "gone": null}))
            .unwrap();
        assert_eq!(
            out[0],
            json!({"phone": "+79123456789", "bad": true, "float": "+79123456789", "md5": "900150983cd24fb0d6963f7d28e17f72",
                   "json": "{\"a\":1}", "back": 2, "ts": 1714557600, "day": "01.05.2024", "isnull": true,
                   "bad_json": "f.lua:12: flow.json.decode: key must be a string at line 1 column 2",
                   "bad_md5": "f.lua:13: flow.md5: expects text, got nil",
                   "bad_fmt": "f.lua:14: flow.date.format: the format must be text, got integer",
                   "bad_encode": "f.lua:15: flow.json.encode: field `f`: a function, which has no JSON form"})
        );
        // Without pcall the step fails with the script's line.
        let s = Script::load(
            "function transform(r)\n  local v = flow.json.decode(r.text)\n  return v\nend",
            "g.lua",
            Limits::default(),
            "t",
            &json!({}),
        )
        .unwrap();
        let err = s.transform(&json!({"text": "[1,"})).unwrap_err();
        assert!(
            err.message.starts_with("g.lua:2: flow.json.decode: "),
            "{}",
            err.message
        );
    }
}

//! PHP's `http_build_query`, byte for byte: the encoding PHP APIs sign.
//!
//! RFC 1738 encoding (letters, digits and `-_.` kept, space as `+`, all else
//! `%XX` in upper case, `~` included); nested maps and lists as
//! `site%5Burl%5D=...` and `managers%5B0%5D%5Bname%5D=...`; `true` as `1`,
//! `false` as `0`; nulls left out; floats as PHP prints them.

use serde_json::{Map, Value};

/// PHP's `urlencode`.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A scalar as PHP turns it into text, or None for null (left out).
fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(true) => Some("1".into()),
        Value::Bool(false) => Some("0".into()),
        Value::Number(n) => Some(match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.to_string(),
            (_, Some(u), _) => u.to_string(),
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => {
                format!("{f:.1}").trim_end_matches(".0").to_owned()
            }
            (_, _, Some(f)) => f.to_string(),
            _ => n.to_string(),
        }),
        Value::String(s) => Some(s.clone()),
        Value::Array(_) | Value::Object(_) => None,
    }
}

fn pairs(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => {
            for (k, child) in m {
                pairs(&format!("{prefix}[{k}]"), child, out);
            }
        }
        Value::Array(a) => {
            for (i, child) in a.iter().enumerate() {
                pairs(&format!("{prefix}[{i}]"), child, out);
            }
        }
        other => {
            if let Some(s) = scalar(other) {
                out.push((prefix.to_owned(), s));
            }
        }
    }
}

/// The parameters as `key=value` pairs in PHP's order and spelling (keys not
/// yet encoded), for a form body.
pub fn flatten(params: &Map<String, Value>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (k, v) in params {
        pairs(k, v, &mut out);
    }
    out
}

/// `http_build_query($params)`.
pub fn build_query(params: &Map<String, Value>) -> String {
    flatten(params)
        .iter()
        .map(|(k, v)| format!("{}={}", urlencode(k), urlencode(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The top-level name of a key: `site` for `site[url]`.
fn top_level(key: &str) -> &str {
    key.split('[').next().unwrap_or(key)
}

/// The parameters in `ksort` order: by top-level name, PHP 8's byte order.
/// Keys written flat (`site[url]`, `site[name]`) belong to one top-level
/// array on the server and keep their order within it, as PHP's nested
/// arrays do, so the request must be sent in this same order.
pub fn ksort(params: &Map<String, Value>) -> Map<String, Value> {
    let mut entries: Vec<(&String, &Value)> = params.iter().collect();
    entries.sort_by(|a, b| top_level(a.0).cmp(top_level(b.0)));
    entries.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `ksort($params); http_build_query($params)`.
pub fn build_sorted_query(params: &Map<String, Value>) -> String {
    build_query(&ksort(params))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn encodes_like_php() {
        let p = map(
            json!({"uid": 15, "b": "a b~c", "site": {"url": "http://x.ru/?a=1", "z": true}, "n": null, "f": false}),
        );
        assert_eq!(
            build_sorted_query(&p),
            "b=a+b%7Ec&f=0&site%5Burl%5D=http%3A%2F%2Fx.ru%2F%3Fa%3D1&site%5Bz%5D=1&uid=15"
        );
        // Flat nested keys keep their order inside their top-level group.
        let p = map(json!({"uid": 1, "site[url]": "u", "site[name]": "n", "a": 2}));
        assert_eq!(build_sorted_query(&p), "a=2&site%5Burl%5D=u&site%5Bname%5D=n&uid=1");
        let p = map(json!({"managers": [{"name": "Иван"}], "price": 1.5}));
        assert_eq!(
            build_query(&p),
            "managers%5B0%5D%5Bname%5D=%D0%98%D0%B2%D0%B0%D0%BD&price=1.5"
        );
    }
}

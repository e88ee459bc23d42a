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
            (_, _, Some(f)) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{f:.1}").trim_end_matches(".0").to_owned(),
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

/// `ksort($params); http_build_query($params)`: only the top-level keys are
/// sorted, in PHP 8's byte order.
pub fn build_sorted_query(params: &Map<String, Value>) -> String {
    let mut keys: Vec<&String> = params.keys().collect();
    keys.sort();
    let mut sorted = Map::new();
    for k in keys {
        sorted.insert(k.clone(), params[k].clone());
    }
    build_query(&sorted)
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
        let p = map(json!({"uid": 15, "b": "a b~c", "site": {"url": "http://x.ru/?a=1", "z": true}, "n": null, "f": false}));
        assert_eq!(
            build_sorted_query(&p),
            "b=a+b%7Ec&f=0&site%5Burl%5D=http%3A%2F%2Fx.ru%2F%3Fa%3D1&site%5Bz%5D=1&uid=15"
        );
        let p = map(json!({"managers": [{"name": "Иван"}], "price": 1.5}));
        assert_eq!(build_query(&p), "managers%5B0%5D%5Bname%5D=%D0%98%D0%B2%D0%B0%D0%BD&price=1.5");
    }
}

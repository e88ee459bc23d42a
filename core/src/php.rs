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

/// The names a flat key nests under, as PHP's `parse_str` reads it:
/// `widget[schelude][monday]` is `widget`, `schelude`, `monday`; an empty
/// `[]` appends.
fn segments(key: &str) -> Vec<&str> {
    let Some(open) = key.find('[') else {
        return vec![key];
    };
    let mut segs = vec![&key[..open]];
    let mut rest = &key[open..];
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(close) = inner.find(']') else { break };
        segs.push(&inner[..close]);
        rest = &inner[close + 1..];
    }
    segs
}

/// The keys of one level of the arrays PHP builds from the parameters, in
/// the order they first appear, and the parameter each one that holds a
/// value came from.
#[derive(Default)]
struct Level {
    value: Option<usize>,
    under: Vec<(String, Level)>,
    /// The key an appended (`[]`) value gets: one past the largest whole
    /// number key so far.
    next: u64,
}

impl Level {
    fn insert(&mut self, segs: &[&str], i: usize) {
        let Some((first, rest)) = segs.split_first() else {
            // A name given twice keeps its first place and its last value.
            self.value = Some(i);
            return;
        };
        let name = if first.is_empty() {
            self.next.to_string()
        } else {
            (*first).to_owned()
        };
        if let Some(n) = name.parse::<u64>().ok().filter(|n| n.to_string() == name) {
            self.next = self.next.max(n.saturating_add(1));
        }
        let at = match self.under.iter().position(|(n, _)| *n == name) {
            Some(at) => at,
            None => {
                self.under.push((name, Level::default()));
                self.under.len() - 1
            }
        };
        self.under[at].1.insert(rest, i);
    }

    /// The parameters under this level in order, each with its key written
    /// out as PHP writes it (`[]` numbered).
    fn order(&self, key: &str, out: &mut Vec<(String, usize)>) {
        out.extend(self.value.map(|i| (key.to_owned(), i)));
        for (name, level) in &self.under {
            let key = if key.is_empty() {
                name.clone()
            } else {
                format!("{key}[{name}]")
            };
            level.order(&key, out);
        }
    }
}

/// The parameters as a PHP server holds them once it has read and sorted
/// them (`parse_str`, then `ksort`), written flat (`site[url]` = text) in
/// the order `http_build_query` writes them. `ksort` sorts top-level names
/// only (PHP 8's byte order). Below them PHP keeps the order in which each
/// key first appeared, at every level: the keys under one name stay
/// together, wherever they were given; an appended `ids[]` is numbered. So `widget[schelude][monday][to]`,
/// `widget[period]`, `widget[schelude][friday][to]` are signed (and must be
/// sent) with both schedule keys first.
pub fn ksort(params: &Map<String, Value>) -> Map<String, Value> {
    let flat = flatten(params);
    let mut top = Level::default();
    for (i, (k, _)) in flat.iter().enumerate() {
        top.insert(&segments(k), i);
    }
    top.under.sort_by(|a, b| a.0.cmp(&b.0));
    let mut order = Vec::with_capacity(flat.len());
    top.order("", &mut order);
    order
        .into_iter()
        .map(|(key, i)| (key, Value::String(flat[i].1.clone())))
        .collect()
}

/// A JSON body in `ksort` order: top-level names sorted, values as they are
/// (PHP's `json_decode` keeps the order of nested objects).
pub fn ksort_json(params: &Map<String, Value>) -> Map<String, Value> {
    let mut entries: Vec<(&String, &Value)> = params.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries.into_iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// `ksort($params); http_build_query($params)` as the server computes it
/// (see [`ksort`]).
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
        // ... and at every level below it: PHP's parse_str puts a key with
        // the others of its name, where the first of them came. Checked
        // against PHP 8.2: parse_str, ksort, http_build_query.
        let p = map(json!({
            "widget[schelude][saturday][enable]": 0,
            "site[url]": "u",
            "widget[mobile_enable]": 1,
            "widget[schelude][monday][from]": 9,
            "widget[schelude][saturday][from]": 10,
            "managers": [{"phone": "+7"}],
            "ids[]": 1,
            "widget[algoritms][onenter][time]": 30,
            "ids[]": 2,
        }));
        let php = "ids%5B0%5D=2&managers%5B0%5D%5Bphone%5D=%2B7&site%5Burl%5D=u\
                   &widget%5Bschelude%5D%5Bsaturday%5D%5Benable%5D=0&widget%5Bschelude%5D%5Bsaturday%5D%5Bfrom%5D=10\
                   &widget%5Bschelude%5D%5Bmonday%5D%5Bfrom%5D=9&widget%5Bmobile_enable%5D=1\
                   &widget%5Balgoritms%5D%5Bonenter%5D%5Btime%5D=30";
        assert_eq!(build_sorted_query(&p), php);
        let p = map(json!({"managers": [{"name": "Иван"}], "price": 1.5}));
        assert_eq!(
            build_query(&p),
            "managers%5B0%5D%5Bname%5D=%D0%98%D0%B2%D0%B0%D0%BD&price=1.5"
        );
    }
}

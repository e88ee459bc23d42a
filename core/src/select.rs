//! Record selection with JSONPath (RFC 9535). Simple paths such as
//! `$.data.projects[*]` take a fast route that walks the keys directly;
//! anything else goes through `jsonpath-rust`.

use jsonpath_rust::parser::model::JpQuery;
use serde_json::Value;

/// A compiled JSONPath.
#[derive(Debug, Clone)]
pub struct Selector {
    text: String,
    route: Route,
}

#[derive(Debug, Clone)]
enum Route {
    /// Keys to walk, and whether the end is a list to spread (`[*]`).
    Simple(Vec<String>, bool),
    Full(Box<JpQuery>),
}

impl Selector {
    /// Compiles a path; the error says what is wrong with it.
    pub fn new(text: &str) -> Result<Self, String> {
        if let Some(route) = simple(text) {
            return Ok(Selector {
                text: text.to_owned(),
                route,
            });
        }
        let q = jsonpath_rust::parser::parse_json_path(text).map_err(|e| {
            // The parser draws a picture over several lines; its last
            // line says what it expected.
            let detail = e.to_string();
            let said = detail
                .lines()
                .rev()
                .map(|l| l.trim().trim_start_matches('=').trim())
                .find(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with('^'))
                .unwrap_or("")
                .to_owned();
            format!("`{text}` is not a valid JSONPath ({said})")
        })?;
        Ok(Selector {
            text: text.to_owned(),
            route: Route::Full(Box::new(q)),
        })
    }

    /// The path as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Every value the path selects.
    pub fn select<'a>(&self, v: &'a Value) -> Vec<&'a Value> {
        match &self.route {
            Route::Simple(keys, spread) => {
                let mut cur = v;
                for k in keys {
                    match cur.get(k.as_str()) {
                        Some(next) => cur = next,
                        None => return Vec::new(),
                    }
                }
                match (spread, cur) {
                    (true, Value::Array(a)) => a.iter().collect(),
                    (true, Value::Object(o)) => o.values().collect(),
                    (true, _) => Vec::new(),
                    (false, v) => vec![v],
                }
            }
            Route::Full(q) => jsonpath_rust::query::js_path_process(q, v)
                .map(|refs| refs.into_iter().map(|r| r.val()).collect())
                .unwrap_or_default(),
        }
    }

    /// The keys to a list whose items are the records, when the path is a
    /// plain walk such as `$.data.projects[*]`.
    pub fn spread_keys(&self) -> Option<&[String]> {
        match &self.route {
            Route::Simple(keys, true) => Some(keys),
            _ => None,
        }
    }

    /// The first value selected, if any.
    pub fn first<'a>(&self, v: &'a Value) -> Option<&'a Value> {
        self.select(v).into_iter().next()
    }

    /// Takes the selected values out of an owned document without copying.
    pub fn take(&self, v: Value) -> Vec<Value> {
        if let Route::Simple(keys, spread) = &self.route {
            let mut cur = v;
            for k in keys {
                match cur {
                    Value::Object(mut m) => match m.swap_remove(k.as_str()) {
                        Some(next) => cur = next,
                        None => return Vec::new(),
                    },
                    _ => return Vec::new(),
                }
            }
            return match (spread, cur) {
                (true, Value::Array(a)) => a,
                (true, Value::Object(o)) => o.into_iter().map(|(_, v)| v).collect(),
                (true, _) => Vec::new(),
                (false, v) => vec![v],
            };
        }
        self.select(&v).into_iter().cloned().collect()
    }
}

fn simple(text: &str) -> Option<Route> {
    let rest = text.strip_prefix('$')?;
    let (rest, spread) = match rest.strip_suffix("[*]") {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let mut keys = Vec::new();
    if !rest.is_empty() {
        for part in rest.strip_prefix('.')?.split('.') {
            if part.is_empty() || !part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return None;
            }
            keys.push(part.to_owned());
        }
    }
    Some(Route::Simple(keys, spread))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn simple_and_full_paths_agree() {
        let doc = json!({"data": {"projects": [{"id": 1}, {"id": 2}]}, "total": 2});
        let fast = Selector::new("$.data.projects[*]").unwrap();
        assert!(matches!(fast.route, Route::Simple(..)));
        assert_eq!(fast.select(&doc).len(), 2);
        assert_eq!(fast.take(doc.clone()), vec![json!({"id": 1}), json!({"id": 2})]);
        let full = Selector::new("$.data.projects[?@.id > 1]").unwrap();
        assert_eq!(full.select(&doc), vec![&json!({"id": 2})]);
        assert_eq!(Selector::new("$.total").unwrap().first(&doc), Some(&json!(2)));
        assert!(Selector::new("$.missing[*]").unwrap().select(&doc).is_empty());
        assert!(Selector::new("$[").is_err());
    }
}

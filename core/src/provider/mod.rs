//! Providers: descriptors of HTTP APIs, checked when loaded, bundled in the
//! binary and extendable from a user folder.

pub mod model;
mod registry;

pub use model::Descriptor;
pub use registry::{Registry, BUNDLED};

use crate::diagnostic::{Diagnostic, Diagnostics};
use crate::select::Selector;
use crate::template::Templates;
use crate::workflow::{parse_yaml, Positions};
use model::{ActionPagination, Auth, Location, Pagination};
use std::path::Path;

/// Parses and checks a descriptor's text. `file` names it in messages.
pub fn parse_descriptor(file: &Path, text: &str) -> Result<Descriptor, Diagnostics> {
    let d: Descriptor = parse_yaml(file, text)?;
    let positions = Positions::parse(text);
    let diags = check(&d, file, &positions);
    if diags.is_empty() {
        Ok(d)
    } else {
        Err(diags)
    }
}

/// Reads and checks a descriptor file.
pub fn load_descriptor(path: &Path) -> Result<Descriptor, Diagnostics> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Diagnostics::from(Diagnostic::new(path, format!("cannot read the file: {e}"))))?;
    parse_descriptor(path, &text)
}

struct Checker<'a> {
    file: &'a Path,
    positions: &'a Positions,
    templates: Templates,
    diags: Diagnostics,
}

impl Checker<'_> {
    fn error(&mut self, path: &str, msg: impl Into<String>) {
        let d = Diagnostic::new(self.file, msg).at(path);
        self.diags.push(crate::workflow::load::place(d, self.positions));
    }

    fn jsonpath(&mut self, path: &str, text: &str) {
        if let Err(e) = Selector::new(text) {
            self.error(path, e);
        }
    }

    /// A template may read only the names given.
    fn template(&mut self, path: &str, text: &str, allowed: &[&str]) {
        match self.templates.references(text) {
            Err(e) => self.error(path, e.to_string()),
            Ok(refs) => {
                for r in refs {
                    let root = r.split('.').next().unwrap_or("");
                    if !allowed.contains(&root) && !crate::template::GLOBAL_NAMES.contains(&root) {
                        self.error(
                            path,
                            format!(
                                "`{r}` is not defined here; this template can use {}",
                                allowed.join(", ")
                            ),
                        );
                    }
                }
            }
        }
    }
}

fn check(d: &Descriptor, file: &Path, positions: &Positions) -> Diagnostics {
    let mut c = Checker {
        file,
        positions,
        templates: Templates::new(),
        diags: Diagnostics::default(),
    };
    if d.name.is_empty()
        || !d
            .name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '_' || ch == '-')
    {
        c.error(
            "name",
            format!(
                "`{}` is not a valid provider name; use lower-case letters, digits, `-` and `_`",
                d.name
            ),
        );
    }
    c.template("base_url", &d.base_url, &["config"]);
    for (k, v) in &d.headers {
        c.template(&format!("headers.{k}"), v, &["config"]);
    }
    match &d.auth {
        Auth::None => {}
        Auth::Static { headers, query, params } => {
            for (k, v) in headers.iter().chain(query).chain(params) {
                c.template(&format!("auth.{k}"), v, &["config"]);
            }
        }
        Auth::Session {
            login,
            token,
            headers,
            query,
            ..
        } => {
            c.jsonpath("auth.token", token);
            for (k, v) in login.query.iter().chain(&login.body) {
                c.template(&format!("auth.login.{k}"), v, &["config"]);
            }
            for (k, v) in headers.iter().chain(query) {
                c.template(&format!("auth.{k}"), v, &["config", "token"]);
            }
            if headers.is_empty() && query.is_empty() {
                c.error("auth", "a session must say where the token goes: `headers` or `query`");
            }
        }
        Auth::Signed {
            login,
            login_secret,
            token,
            params,
            sign,
            ..
        } => {
            c.jsonpath("auth.token", token);
            c.template("auth.login_secret", login_secret, &["config"]);
            c.template("auth.sign", sign, &["secret", "query", "config"]);
            for (k, v) in login.query.iter().chain(&login.body).chain(params) {
                c.template(&format!("auth.{k}"), v, &["config"]);
            }
        }
    }
    if let Some(p) = &d.pagination {
        check_pagination(&mut c, "pagination", p);
    }
    for (i, rule) in d.errors.in_body.iter().enumerate() {
        c.jsonpath(&format!("errors.in_body[{i}].path"), &rule.path);
        for (j, m) in rule.message.iter().flat_map(|m| m.as_slice()).enumerate() {
            c.jsonpath(&format!("errors.in_body[{i}].message[{j}]"), m);
        }
    }
    for (i, m) in d.errors.message.iter().enumerate() {
        c.jsonpath(&format!("errors.message[{i}]"), m);
    }
    if d.rate_limit.as_ref().is_some_and(|r| r.requests == 0) {
        c.error("rate_limit.requests", "the rate limit must allow at least one request");
    }
    if d.retry.attempts == 0 {
        c.error(
            "retry.attempts",
            "`attempts` counts the first try, so it must be at least 1",
        );
    }
    if d.actions.is_empty() {
        c.error("actions", "the provider has no actions");
    }
    for (name, a) in &d.actions {
        let path = format!("actions.{name}");
        if d.envelope.is_some() && a.rpc.is_none() {
            c.error(&path, "with an `envelope`, every action needs `rpc:`, its method name");
        }
        if d.envelope.is_none() && a.path.is_empty() {
            c.error(&path, "the action needs a `path`");
        }
        c.template(&format!("{path}.path"), &a.path, &["params", "config"]);
        for r in c.templates.references(&a.path).unwrap_or_default() {
            let mut parts = r.split('.');
            if parts.next() == Some("params") {
                if let Some(p) = parts.next() {
                    match a.params.get(p) {
                        None => c.error(
                            &format!("{path}.path"),
                            format!("the path uses `params.{p}`, which the action does not declare"),
                        ),
                        Some(param) if a.location_of(param) != Location::Path => c.error(
                            &format!("{path}.params.{p}"),
                            format!("`{p}` is used in the path, so it needs `in: path`"),
                        ),
                        Some(_) => {}
                    }
                }
            }
        }
        for (pname, p) in &a.params {
            if p.location == Some(Location::Path) && !a.path.contains(pname.as_str()) {
                c.error(
                    &format!("{path}.params.{pname}"),
                    format!("`{pname}` is `in: path` but the path does not use `{{{{ params.{pname} }}}}`"),
                );
            }
        }
        if let Some(r) = &a.records {
            c.jsonpath(&format!("{path}.records"), r);
        }
        if let Some(ActionPagination::Custom(p)) = &a.pagination {
            check_pagination(&mut c, &format!("{path}.pagination"), p);
        }
    }
    c.diags
}

fn check_pagination(c: &mut Checker, path: &str, p: &Pagination) {
    match p {
        Pagination::PageNumber {
            last_page,
            total,
            size_param,
            size,
            parallel,
            ..
        } => {
            if let Some(e) = parallel.and_then(model::check_parallel) {
                c.error(&format!("{path}.parallel"), &e);
            }
            for (k, v) in [("last_page", last_page), ("total", total)] {
                if let Some(v) = v {
                    c.jsonpath(&format!("{path}.{k}"), v);
                }
            }
            if size_param.is_some() != size.is_some() {
                c.error(path, "give `size_param` and `size` together");
            }
        }
        Pagination::Offset {
            total, limit, parallel, ..
        } => {
            if let Some(e) = parallel.and_then(model::check_parallel) {
                c.error(&format!("{path}.parallel"), &e);
            }
            if let Some(t) = total {
                c.jsonpath(&format!("{path}.total"), t);
            }
            if *limit == 0 {
                c.error(&format!("{path}.limit"), "the page size must be at least 1");
            }
        }
        Pagination::Cursor { next, .. } => c.jsonpath(&format!("{path}.next"), next),
        Pagination::NextLink { next } => {
            if let Some(n) = next {
                c.jsonpath(&format!("{path}.next"), n);
            }
        }
    }
}

/// The JSON Schema of the descriptor format.
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Descriptor)).unwrap_or(serde_json::Value::Null)
}

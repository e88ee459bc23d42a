//! `{{ ... }}` templates in workflow values, rendered with minijinja.
//!
//! A value that is exactly one expression (`"{{ steps.out.count > 0 }}"`)
//! keeps its type (a number, a list, a boolean); anything else renders to
//! text. Undefined names are errors that name what was undefined, never an
//! empty string.

use minijinja::value::Value;
use minijinja::{Environment, ErrorKind, UndefinedBehavior};
use std::collections::BTreeSet;
use std::sync::RwLock;

/// Why a template could not be rendered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum TemplateError {
    /// The template is not valid Jinja.
    #[error("template syntax error: {0}")]
    Syntax(String),
    /// The template uses a name that has no value.
    #[error("`{name}` is undefined")]
    Undefined {
        /// The dotted name, such as `env.OUT_DIR`.
        name: String,
    },
    /// Rendering failed for another reason (a filter got a bad value).
    #[error("{0}")]
    Render(String),
}

/// The template engine: one minijinja environment with flow's functions and
/// filters, and a cache of compiled templates.
pub struct Templates {
    env: RwLock<Environment<'static>>,
}

impl Default for Templates {
    fn default() -> Self {
        Self::new()
    }
}

/// True when a string contains template syntax.
pub fn is_template(text: &str) -> bool {
    text.contains("{{") || text.contains("{%")
}

/// The expression inside a string that is exactly one `{{ ... }}`.
fn single_expression(text: &str) -> Option<&str> {
    let t = text.trim();
    let inner = t.strip_prefix("{{")?.strip_suffix("}}")?;
    if inner.contains("{{") || inner.contains("}}") || inner.contains("{%") {
        return None;
    }
    Some(inner.trim().trim_start_matches('-').trim_end_matches('-'))
}

/// The expressions of a template's `{{ ... }}` parts, in order.
pub fn expressions(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else { break };
        out.push(after[..end].trim().trim_start_matches('-').trim_end_matches('-').trim());
        rest = &after[end + 2..];
    }
    out
}

/// Names every template may use, besides the workflow's own values.
pub const GLOBAL_NAMES: &[&str] = &["now", "range", "dict", "namespace", "debug", "true", "false", "none"];

/// The filter a single expression goes through: an undefined value is an
/// error there too, as it is in text.
const DEFINED: &str = "__flow_defined";

impl Templates {
    /// The engine with strict undefined handling and flow's helpers:
    /// `now(fmt?)`, and the filters `date(fmt)`, `add_days(n)`,
    /// `add_seconds(n)`, `phone`, `md5`.
    pub fn new() -> Self {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.add_function("now", now);
        env.add_filter("date", date_filter);
        env.add_filter("add_days", |v: Value, n: f64| shift(v, n * 86400.0));
        env.add_filter("add_seconds", |v: Value, n: f64| shift(v, n));
        env.add_filter("phone", |v: Value| -> Value {
            match v.as_str().and_then(crate::phone::normalize) {
                Some(p) => Value::from(p),
                None => Value::from(()),
            }
        });
        // What a single expression is passed through (see `render`): strict
        // undefined handling lets an undefined value reach a filter, and
        // `tojson` would make it `null`.
        env.add_filter(DEFINED, |v: Value| -> Result<Value, minijinja::Error> {
            if v.is_undefined() {
                return Err(minijinja::Error::new(ErrorKind::UndefinedError, "undefined value"));
            }
            Ok(v)
        });
        env.add_filter("md5", |v: Value| -> String {
            let text = v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string());
            crate::lua::md5_hex(text.as_bytes())
        });
        Templates { env: RwLock::new(env) }
    }

    /// Checks the syntax of a template and returns the dotted names it reads
    /// from outside (`steps.out.count`, `inputs.source`).
    pub fn references(&self, text: &str) -> Result<BTreeSet<String>, TemplateError> {
        if !is_template(text) {
            return Ok(BTreeSet::new());
        }
        let env = self
            .env
            .read()
            .map_err(|_| TemplateError::Render("template engine poisoned".into()))?;
        let tmpl = env
            .template_from_str(text)
            .map_err(|e| TemplateError::Syntax(describe(&e)))?;
        // minijinja finds a filter only when it renders; a misspelt one is
        // found here, before a run reaches it.
        for name in filter_names(text) {
            let probe = format!("{{{{ none | {name} }}}}");
            let unknown = env
                .render_str(&probe, minijinja::context! {})
                .is_err_and(|e| e.kind() == ErrorKind::UnknownFilter);
            if unknown {
                return Err(TemplateError::Syntax(format!("there is no filter `{name}`")));
            }
        }
        Ok(tmpl.undeclared_variables(true).into_iter().collect())
    }

    /// Renders a value: a single expression keeps its type, other templates
    /// render to text, plain strings are returned as they are.
    pub fn render(&self, text: &str, ctx: &Value) -> Result<serde_json::Value, TemplateError> {
        if !is_template(text) {
            return Ok(serde_json::Value::String(text.to_owned()));
        }
        if let Some(expr) = single_expression(text) {
            let src = format!("{{{{ ({expr}) | {DEFINED} | tojson }}}}");
            let json = match self.render_cached(&src, text, ctx) {
                Ok(json) => json,
                // A field a record does not have is `null` (a parameter
                // left out, a condition that is false); anything else that
                // is undefined (a secret, an input, a step) is an error.
                Err(TemplateError::Undefined { .. }) if self.only_record_fields_missing(text, ctx) => {
                    return Ok(serde_json::Value::Null)
                }
                Err(e) => return Err(e),
            };
            return serde_json::from_str(&json).map_err(|e| TemplateError::Render(e.to_string()));
        }
        self.render_cached(text, text, ctx).map(serde_json::Value::String)
    }

    /// Renders a template to text.
    pub fn render_str(&self, text: &str, ctx: &Value) -> Result<String, TemplateError> {
        if !is_template(text) {
            return Ok(text.to_owned());
        }
        self.render_cached(text, text, ctx)
    }

    fn render_cached(&self, src: &str, original: &str, ctx: &Value) -> Result<String, TemplateError> {
        let rendered = {
            let poisoned = || TemplateError::Render("template engine poisoned".into());
            let cached = {
                let env = self.env.read().map_err(|_| poisoned())?;
                env.get_template(src).ok().map(|t| t.render(ctx))
            };
            match cached {
                Some(r) => r,
                None => {
                    let mut env = self.env.write().map_err(|_| poisoned())?;
                    env.add_template_owned(src.to_owned(), src.to_owned())
                        .map_err(|e| TemplateError::Syntax(describe(&e)))?;
                    let t = env.get_template(src).map_err(|e| TemplateError::Syntax(describe(&e)))?;
                    t.render(ctx)
                }
            }
        };
        // The engine's lock is released here: explaining reads it again.
        rendered.map_err(|e| self.explain(&e, original, ctx))
    }

    /// Whether every name `text` reads that has no value is a field of a
    /// record: of the `item`, or of a step's `first` record (which may be
    /// none). A secret, input or step that is not there is never one.
    fn only_record_fields_missing(&self, text: &str, ctx: &Value) -> bool {
        let Ok(names) = self.references(text) else {
            return false;
        };
        let mut missing = names.iter().filter_map(|n| first_undefined(ctx, n)).peekable();
        missing.peek().is_some() && missing.all(|n| is_record_field(&n))
    }

    /// Turns a render error into one that names the undefined value.
    fn explain(&self, err: &minijinja::Error, original: &str, ctx: &Value) -> TemplateError {
        if err.kind() == ErrorKind::UndefinedError {
            if let Ok(names) = self.references(original) {
                // A missing secret or input is named before a record's
                // missing field, which a `default` may have been meant for.
                let missing: Vec<String> = names.iter().filter_map(|n| first_undefined(ctx, n)).collect();
                if let Some(name) = missing.iter().find(|n| !is_record_field(n)).or(missing.first()) {
                    return TemplateError::Undefined { name: name.clone() };
                }
            }
            return TemplateError::Undefined { name: "a value".into() };
        }
        TemplateError::Render(describe(err))
    }
}

/// A name that reads a field of a record: `item.<field>...` or
/// `steps.<id>.first.<field>...`.
/// The names after `|` in the `{{ }}` and `{% %}` blocks of a template,
/// outside string literals: the filters it applies.
fn filter_names(text: &str) -> BTreeSet<&str> {
    let mut names = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while i + 1 < b.len() {
        let close: &[u8] = match &b[i..i + 2] {
            b"{{" => b"}}",
            b"{%" => b"%}",
            _ => {
                i += 1;
                continue;
            }
        };
        i += 2;
        let mut quote = None;
        while i < b.len() {
            let c = b[i];
            match quote {
                Some(_) if c == b'\\' => i += 1,
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == b'"' || c == b'\'' => quote = Some(c),
                None if b[i..].starts_with(close) => break,
                None if c == b'|' => {
                    let start = i + 1 + b[i + 1..].iter().take_while(|c| c.is_ascii_whitespace()).count();
                    let len = b[start..]
                        .iter()
                        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'_')
                        .count();
                    if len > 0 && !b[start].is_ascii_digit() {
                        names.insert(&text[start..start + len]);
                    }
                }
                None => {}
            }
            i += 1;
        }
        i += 2;
    }
    names
}

fn is_record_field(name: &str) -> bool {
    let parts: Vec<&str> = name.split('.').collect();
    matches!(parts.as_slice(), ["item", _, ..] | ["steps", _, "first", _, ..])
}

/// The shortest prefix of a dotted name that has no value in `ctx`.
fn first_undefined(ctx: &Value, dotted: &str) -> Option<String> {
    let mut cur = ctx.clone();
    let mut seen = Vec::new();
    for part in dotted.split('.') {
        seen.push(part);
        if GLOBAL_NAMES.contains(&part) && seen.len() == 1 {
            return None;
        }
        match cur.get_attr(part) {
            Ok(v) if !v.is_undefined() => cur = v,
            _ => return Some(seen.join(".")),
        }
    }
    None
}

fn describe(e: &minijinja::Error) -> String {
    let mut msg = e.detail().map(str::to_owned).unwrap_or_else(|| e.kind().to_string());
    if let Some(line) = e.line() {
        if line > 1 {
            msg.push_str(&format!(" (template line {line})"));
        }
    }
    msg
}

fn now(fmt: Option<String>) -> Result<Value, minijinja::Error> {
    let t = chrono::Utc::now();
    match fmt {
        Some(f) => crate::dates::format(&t, &f)
            .map(Value::from)
            .ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, format!("bad date format `{f}`"))),
        None => Ok(Value::from(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))),
    }
}

fn to_date(v: &Value) -> Result<chrono::DateTime<chrono::Utc>, minijinja::Error> {
    let parsed = match v.as_str() {
        Some(s) => crate::dates::parse(s),
        None => i64::try_from(v.clone())
            .ok()
            .and_then(|n| chrono::DateTime::from_timestamp(n, 0)),
    };
    parsed.ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, format!("`{v}` is not a date")))
}

fn date_filter(v: Value, fmt: Option<String>) -> Result<String, minijinja::Error> {
    let d = to_date(&v)?;
    let f = fmt.unwrap_or_else(|| "%Y-%m-%d".into());
    crate::dates::format(&d, &f)
        .ok_or_else(|| minijinja::Error::new(ErrorKind::InvalidOperation, format!("bad date format `{f}`")))
}

fn shift(v: Value, secs: f64) -> Result<String, minijinja::Error> {
    let d = to_date(&v)? + chrono::Duration::milliseconds((secs * 1000.0) as i64);
    Ok(d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use minijinja::context;

    fn ctx() -> Value {
        context! {
            inputs => context! { source => "expo", n => 3 },
            env => context! { HOME => "/home/u" },
            steps => context! { out => context! { count => 5 } },
        }
    }

    #[test]
    fn single_expression_keeps_type() {
        let t = Templates::new();
        assert_eq!(
            t.render("{{ steps.out.count > 0 }}", &ctx()).unwrap(),
            serde_json::json!(true)
        );
        assert_eq!(t.render("{{ inputs.n * 2 }}", &ctx()).unwrap(), serde_json::json!(6));
        assert_eq!(t.render("{{ [1, 2] }}", &ctx()).unwrap(), serde_json::json!([1, 2]));
        assert_eq!(t.render("n={{ inputs.n }}", &ctx()).unwrap(), serde_json::json!("n=3"));
        assert_eq!(t.render("plain", &ctx()).unwrap(), serde_json::json!("plain"));
    }

    #[test]
    fn default_filter_covers_missing_keys() {
        let t = Templates::new();
        assert_eq!(
            t.render_str("{{ env.OUT_DIR | default('.') }}/x", &ctx()).unwrap(),
            "./x"
        );
    }

    #[test]
    fn undefined_names_are_named() {
        let t = Templates::new();
        let err = t.render_str("{{ env.OUT_DIR }}/x", &ctx()).unwrap_err();
        assert_eq!(err.to_string(), "`env.OUT_DIR` is undefined");
        let err = t.render("{{ steps.nope.count }}", &ctx()).unwrap_err();
        assert_eq!(err.to_string(), "`steps.nope` is undefined");
        // A single expression keeps its type, but undefined is not `null`.
        let err = t.render("{{ env.API_KEY }}", &ctx()).unwrap_err();
        assert_eq!(err.to_string(), "`env.API_KEY` is undefined");
        assert_eq!(
            t.render("{{ env.API_KEY | default(none) }}", &ctx()).unwrap(),
            serde_json::Value::Null
        );
        assert_eq!(t.render("{{ inputs.n }}", &ctx()).unwrap(), serde_json::json!(3));
        // A record's missing field is null: an optional parameter left out.
        let with_item = context! { item => context! { name => "Ann" } };
        assert_eq!(
            t.render("{{ item.email }}", &with_item).unwrap(),
            serde_json::Value::Null
        );
        assert_eq!(
            t.render("{{ item.name }}", &with_item).unwrap(),
            serde_json::json!("Ann")
        );
        // ... but not when a secret is missing too, whatever the order.
        let err = t
            .render("{{ item.email | default(secrets.DEFAULT_EMAIL) }}", &with_item)
            .unwrap_err();
        assert!(err.to_string().contains("secrets"), "{err}");
        // A field of a step's first record, which may be none.
        let steps = context! { steps => context! { lookup => context! { first => () } } };
        assert_eq!(
            t.render("{{ steps.lookup.first.id }}", &steps).unwrap(),
            serde_json::Value::Null
        );
    }

    #[test]
    fn references_and_syntax() {
        let t = Templates::new();
        let refs = t
            .references("{{ steps.out.count }} {{ inputs.source | upper }}")
            .unwrap();
        assert!(
            refs.contains("steps.out.count") && refs.contains("inputs.source"),
            "{refs:?}"
        );
        assert!(matches!(t.references("{{ oops("), Err(TemplateError::Syntax(_))));
    }

    #[test]
    fn a_filter_that_does_not_exist_is_found_before_rendering() {
        let t = Templates::new();
        for good in [
            "{{ item.phone | phone }}",
            "{{ x | default('a|b') | upper }}",
            "{% if a | length > 0 %}{{ a | join(', ') }}{% endif %}",
            "{{ now() | date('%Y') }} | plain text | not a filter",
        ] {
            assert!(t.references(good).is_ok(), "{good}");
        }
        match t.references("{{ item.name | uper }}") {
            Err(TemplateError::Syntax(e)) => assert!(e.contains("no filter `uper`"), "{e}"),
            other => panic!("{other:?}"),
        }
        assert!(t.references("{% for x in xs | srot %}{% endfor %}").is_err());
    }

    #[test]
    fn dates_and_phones() {
        let t = Templates::new();
        let c = ctx();
        assert_eq!(
            t.render_str("{{ '2024-05-01 10:00:00' | date('%d.%m.%Y') }}", &c)
                .unwrap(),
            "01.05.2024"
        );
        assert_eq!(
            t.render_str("{{ '2024-05-01' | add_days(-1) | date }}", &c).unwrap(),
            "2024-04-30"
        );
        assert_eq!(
            t.render_str("{{ '8 912 345-67-89' | phone }}", &c).unwrap(),
            "+79123456789"
        );
        assert_eq!(
            t.render_str("{{ 'abc' | md5 }}", &c).unwrap(),
            "900150983cd24fb0d6963f7d28e17f72"
        );
        assert_eq!(t.render("{{ now('%Y') }}", &c).unwrap().as_str().map(str::len), Some(4));
    }
}

//! Offline checks of a parsed workflow: step kinds and references, script
//! files and their Lua syntax, file formats, and every template's syntax and
//! names. Nothing runs and nothing is sent.

use super::load::{LoadedWorkflow, ScriptSource};
use super::model::{Format, InputType, Step, STEP_KINDS};
use super::report::STEP_FIELDS;
use crate::diagnostic::{did_you_mean, Diagnostics};
use crate::template::{is_template, Templates, GLOBAL_NAMES};
use std::collections::{BTreeSet, HashSet};
use std::path::Path;

/// The names a template can start with.
const ROOTS: &[&str] = &["inputs", "env", "secrets", "steps", "item"];

/// The most Lua states one `lua` step may run at once.
const MAX_LUA_STATES: usize = 64;

/// Where a template is, and what it may see.
#[derive(Clone)]
struct Scope {
    /// Step ids visible (declared before, in this scope or outside it).
    steps: Vec<String>,
    /// Inside a `for_each`: `item` is defined.
    in_for_each: bool,
}

struct Checker<'a> {
    lw: &'a LoadedWorkflow,
    templates: Templates,
    diags: Diagnostics,
    ids: HashSet<String>,
    /// Steps seen so far, and whether they can reject records.
    rejecting: std::collections::HashMap<String, bool>,
    scripts: Vec<(String, ScriptSource)>,
    secrets: BTreeSet<String>,
    /// The files (and tables) `write` steps name as plain text, and the step
    /// of each.
    written: std::collections::HashMap<(std::path::PathBuf, Option<String>), String>,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a workflow; fills in its scripts and secret names.
pub fn validate(lw: &mut LoadedWorkflow) -> Diagnostics {
    let mut c = Checker {
        lw,
        templates: Templates::new(),
        diags: Diagnostics::default(),
        ids: HashSet::new(),
        rejecting: std::collections::HashMap::new(),
        scripts: Vec::new(),
        secrets: BTreeSet::new(),
        written: std::collections::HashMap::new(),
    };
    c.check_inputs();
    let top = Scope {
        steps: Vec::new(),
        in_for_each: false,
    };
    for (name, conn) in &c.lw.workflow.connections {
        let path = format!("connections.{name}");
        c.check_connection(name, conn, &path);
        if let Some(url) = &conn.base_url {
            c.template(&format!("{path}.base_url"), url, &top);
        }
        for (key, value) in &conn.config {
            c.json_templates(&format!("{path}.config.{key}"), value, &top);
        }
    }
    let steps = &c.lw.workflow.steps;
    if steps.is_empty() {
        c.error(
            "steps",
            "the workflow has no steps",
            Some("add at least one step under `steps:`"),
        );
    }
    let all = c.check_steps(steps, "steps", top);
    let out_scope = Scope {
        steps: all,
        in_for_each: false,
    };
    for (name, tmpl) in &c.lw.workflow.outputs {
        c.template(&format!("outputs.{name}"), tmpl, &out_scope);
    }
    let Checker {
        diags,
        scripts,
        secrets,
        ..
    } = c;
    lw.scripts = scripts.into_iter().collect();
    lw.secret_names = secrets;
    diags
}

impl Checker<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>, hint: Option<&str>) {
        let mut d = self.lw.diagnostic(path, message);
        if let Some(h) = hint {
            d = d.hint(h);
        }
        self.diags.push(d);
    }

    fn check_inputs(&mut self) {
        for (name, input) in &self.lw.workflow.inputs {
            let path = format!("inputs.{name}");
            if !is_identifier(name) {
                self.error(
                    &path,
                    format!("`{name}` is not a valid input name"),
                    Some("use letters, digits and `_`, starting with a letter"),
                );
            }
            if let Some(default) = &input.default {
                if let Err(e) = super::execute::coerce_value(input.kind, default) {
                    self.error(&format!("{path}.default"), e, None);
                }
            }
        }
    }

    /// Checks a list of steps; returns the ids visible after them.
    fn check_steps(&mut self, steps: &[Step], base: &str, mut scope: Scope) -> Vec<String> {
        for (i, step) in steps.iter().enumerate() {
            let path = format!("{base}[{i}]");
            self.check_step(step, &path, &scope);
            let kind = step.kinds().first().copied().unwrap_or_default();
            let can_reject =
                step.on_error == super::model::OnError::Continue && matches!(kind, "lua" | "run" | "for_each");
            self.rejecting.insert(step.id.clone(), can_reject);
            scope.steps.push(step.id.clone());
        }
        scope.steps
    }

    fn check_step(&mut self, step: &Step, path: &str, scope: &Scope) {
        if !is_identifier(&step.id) {
            self.error(
                &format!("{path}.id"),
                format!("`{}` is not a valid step id", step.id),
                Some("use letters, digits and `_`, starting with a letter, so templates can say `steps.<id>`"),
            );
        } else if ["item", "steps", "inputs", "env", "secrets"].contains(&step.id.as_str()) {
            self.error(
                &format!("{path}.id"),
                format!("`{}` is a reserved name", step.id),
                Some("choose another id"),
            );
        } else if !self.ids.insert(step.id.clone()) {
            self.error(
                &format!("{path}.id"),
                format!("the step id `{}` is used twice", step.id),
                Some("step ids must be unique in the workflow"),
            );
        }

        let kinds = step.kinds();
        let kind = match kinds.as_slice() {
            [] => {
                self.error(
                    path,
                    format!("the step `{}` does nothing", step.id),
                    Some(&format!("give it one of: {}", STEP_KINDS.join(", "))),
                );
                return;
            }
            [k] => *k,
            many => {
                self.error(
                    path,
                    format!(
                        "the step `{}` has {}; a step does one thing",
                        step.id,
                        many.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(" and ")
                    ),
                    Some("split it into several steps"),
                );
                return;
            }
        };

        let needs_from = matches!(kind, "lua" | "run" | "write");
        if kind == "call" && step.from.is_some() {
            self.error(
                &format!("{path}.from"),
                "a `call` step takes no `from:`",
                Some("to call an action once per record, put the `call` inside a `for_each`"),
            );
        }
        match (&step.from, needs_from) {
            (None, true) => self.error(
                path,
                format!("a `{kind}` step needs `from:`, the step whose records it takes"),
                None,
            ),
            (Some(_), false) => self.error(
                &format!("{path}.from"),
                format!("a `{kind}` step takes no `from:`"),
                None,
            ),
            (Some(from), true) => {
                let names = from.names();
                if names.is_empty() {
                    self.error(&format!("{path}.from"), "`from` lists no steps", None);
                }
                if names.len() > 1 && names.contains(&"item") {
                    self.error(
                        &format!("{path}.from"),
                        "`item` cannot be merged with other steps",
                        None,
                    );
                }
                for (i, name) in names.iter().enumerate() {
                    let at = if names.len() > 1 {
                        format!("{path}.from[{i}]")
                    } else {
                        format!("{path}.from")
                    };
                    self.check_step_ref(&at, name, scope, "from");
                }
            }
            (None, false) => {}
        }
        if kind != "for_each" {
            if step.steps.is_some() {
                self.error(
                    &format!("{path}.steps"),
                    "only a `for_each` step has nested `steps`",
                    None,
                );
            }
            if step.concurrency.is_some() {
                self.error(
                    &format!("{path}.concurrency"),
                    "only a `for_each` step has `concurrency`",
                    None,
                );
            }
        }
        if step.retry.is_some() && matches!(kind, "lua" | "run" | "write") {
            let shown = if kind == "run" { "lua" } else { kind };
            self.error(
                &format!("{path}.retry"),
                format!("a `{shown}` step cannot be retried: the records it took are gone"),
                Some("retry the step that fetches the data, or use `on_error: continue`"),
            );
        }
        if let Some(r) = &step.retry {
            if r.attempts == 0 {
                self.error(
                    &format!("{path}.retry.attempts"),
                    "`attempts` counts the first try too, so it must be at least 1",
                    None,
                );
            }
        }
        if let Some(cond) = &step.condition {
            self.template(&format!("{path}.if"), cond, scope);
        }

        match kind {
            "read" => {
                if let Some(spec) = &step.read {
                    let o = spec.options();
                    let p = format!("{path}.read");
                    self.template(&p, &o.path, scope);
                    self.check_format(&p, &o.path, o.format, false);
                }
            }
            "write" => {
                if let Some(spec) = &step.write {
                    let o = spec.options();
                    let p = format!("{path}.write");
                    self.template(&p, &o.path, scope);
                    let f = self.check_format(&p, &o.path, o.format, true);
                    if o.table.is_some() && f.is_some_and(|f| f != Format::Sqlite) {
                        self.error(
                            &format!("{p}.table"),
                            "`table` is for SQLite files only",
                            Some("name the file `.db` or add `format: sqlite`"),
                        );
                    }
                    if o.columns.is_some() && f.is_some_and(|f| f != Format::Csv) {
                        self.error(&format!("{p}.columns"), "`columns` is for CSV files only", None);
                    }
                    let special = std::fs::metadata(self.lw.resolve(&o.path)).is_ok_and(|m| !m.is_file());
                    if !crate::template::is_template(&o.path) && !special {
                        let file = super::load::normalize(std::path::Path::new(&o.path));
                        // Tables of one SQLite file are apart, but SQLite takes
                        // one writer at a time: a step that writes to the file
                        // after another must wait for it (`if:` on its status).
                        let table = (f == Some(Format::Sqlite) || o.table.is_some())
                            .then(|| o.table.as_deref().unwrap_or("records").to_lowercase());
                        if table.is_some() {
                            let before = self
                                .written
                                .iter()
                                .find(|((other_file, t), _)| *other_file == file && t.is_some() && *t != table)
                                .map(|(_, id)| id.clone());
                            let waits = |other: &str| {
                                step.condition.as_deref().is_some_and(|c| {
                                    self.templates.references(c).is_ok_and(|r| {
                                        r.iter().any(|n| {
                                            n == &format!("steps.{other}") || n.starts_with(&format!("steps.{other}."))
                                        })
                                    })
                                })
                            };
                            if let Some(other) = before.filter(|o| !waits(o)) {
                                self.error(
                                    &format!("{p}.path"),
                                    format!(
                                        "the steps `{other}` and `{}` both write to `{}` at once, and SQLite takes one writer at a time",
                                        step.id, o.path
                                    ),
                                    Some(&format!("let `{}` wait for `{other}` with `if: \"{{{{ steps.{other}.status == 'succeeded' }}}}\"`, or give it a file of its own", step.id)),
                                );
                            }
                        }
                        if let Some(other) = self.written.insert((file, table), step.id.clone()) {
                            self.error(
                                &format!("{p}.path"),
                                format!(
                                    "the steps `{other}` and `{}` both write `{}`: one would replace or mix into the other's records",
                                    step.id, o.path
                                ),
                                Some("give each step a file of its own"),
                            );
                        }
                    }
                    if o.append && f == Some(Format::Json) {
                        self.error(
                            &format!("{p}.append"),
                            "a JSON array file cannot be added to, only replaced",
                            Some("write JSON Lines (`.jsonl`) to add records to a file, or leave `append` out"),
                        );
                    }
                }
            }
            "lua" | "run" => self.check_lua(step, path, kind),
            "for_each" => self.check_for_each(step, path, scope),
            "call" => self.check_call(step, path, scope),
            _ => {}
        }
        if kind != "call" && step.with.is_some() {
            self.error(&format!("{path}.with"), "only a `call` step has `with`", None);
        }
        if kind != "call" && step.key.is_some() {
            self.error(&format!("{path}.key"), "only a `call` step has `key`", None);
        }
        if kind != "call" && step.cursor.is_some() {
            self.error(&format!("{path}.cursor"), "only a `call` step has `cursor`", None);
        }
        if let Some(key) = &step.key {
            self.template(&format!("{path}.key"), key, scope);
        }
        if let Some(c) = &step.cursor {
            if scope.in_for_each {
                self.error(
                    &format!("{path}.cursor"),
                    "a `cursor` belongs on a top-level `call` step, not inside a `for_each`",
                    None,
                );
            }
            if let Some(initial) = &c.initial {
                self.template(&format!("{path}.cursor.initial"), initial, scope);
            }
            if c.field.trim().is_empty() || c.param.trim().is_empty() {
                self.error(
                    &format!("{path}.cursor"),
                    "`field` and `param` must name something",
                    None,
                );
            }
        }
    }

    fn check_connection(&mut self, name: &str, conn: &super::model::Connection, path: &str) {
        if let Some(e) = conn.parallel.and_then(crate::provider::model::check_parallel) {
            self.error(&format!("{path}.parallel"), e, None);
        }
        if conn
            .rate_limit
            .as_ref()
            .is_some_and(|r| r.requests == 0 || r.per.0.is_zero())
        {
            self.error(
                &format!("{path}.rate_limit"),
                "a rate limit needs at least one request per a period longer than zero",
                None,
            );
        }
        if !is_identifier(name) {
            self.error(
                path,
                format!("`{name}` is not a valid connection name"),
                Some("use letters, digits and `_`"),
            );
        }
        let registry = std::sync::Arc::clone(&self.lw.registry);
        let d = match registry.require(&conn.provider) {
            Ok(d) => d,
            Err(e) => {
                self.error(
                    &format!("{path}.provider"),
                    e,
                    Some("bundled providers are listed by `flow providers`; add your own with --providers DIR"),
                );
                return;
            }
        };
        let given: serde_json::Map<String, serde_json::Value> =
            conn.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        if let Err(errors) = crate::connection::resolve_config(d, &given) {
            for e in errors {
                self.error(&format!("{path}.config"), e, None);
            }
        }
    }

    fn check_call(&mut self, step: &Step, path: &str, scope: &Scope) {
        let Some(target) = &step.call else { return };
        let p = format!("{path}.call");
        let Some((conn_name, action_name)) = target.split_once('.') else {
            self.error(&p, format!("`{target}` should be `<connection>.<action>`"), None);
            return;
        };
        let Some(conn) = self.lw.workflow.connections.get(conn_name) else {
            let hint = did_you_mean(conn_name, self.lw.workflow.connections.keys().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| "declare it under `connections:`".into());
            self.error(&p, format!("there is no connection `{conn_name}`"), Some(&hint));
            return;
        };
        let registry = std::sync::Arc::clone(&self.lw.registry);
        let Some(d) = registry.get(&conn.provider) else { return };
        let Some(action) = d.actions.get(action_name) else {
            let hint = did_you_mean(action_name, d.actions.keys().map(String::as_str))
                .map(|s| format!("did you mean `{s}`?"))
                .unwrap_or_else(|| format!("see `flow providers show {}`", d.name));
            self.error(
                &p,
                format!("the provider `{}` has no action `{action_name}`", d.name),
                Some(&hint),
            );
            return;
        };
        if step.key.is_some() && !action.is_write() {
            self.error(
                &format!("{path}.key"),
                format!("`{}.{action_name}` only reads; `key` is for writes", d.name),
                Some("remove `key`, or call a create/update/delete action"),
            );
        }
        if let Some(c) = &step.cursor {
            if action.is_write() {
                self.error(
                    &format!("{path}.cursor"),
                    format!("`{}.{action_name}` writes; a `cursor` is for reads", d.name),
                    None,
                );
            }
            let top = c.param.split('.').next().unwrap_or_default();
            if !action.params.contains_key(top) {
                let hint =
                    crate::diagnostic::suggest(top, action.params.keys().map(String::as_str), "its parameters are");
                self.error(
                    &format!("{path}.cursor.param"),
                    format!("`{}.{action_name}` has no parameter `{top}`", d.name),
                    Some(&hint),
                );
            }
        }
        let with = step.with.clone().unwrap_or_default();
        for (k, v) in &with {
            let wp = format!("{path}.with.{k}");
            if !action.params.contains_key(k) {
                let hint =
                    crate::diagnostic::suggest(k, action.params.keys().map(String::as_str), "its parameters are");
                self.error(
                    &wp,
                    format!("`{}.{action_name}` has no parameter `{k}`", d.name),
                    Some(&hint),
                );
            }
            self.json_templates(&wp, v, scope);
        }
        for (k, param) in &action.params {
            let from_cursor = step
                .cursor
                .as_ref()
                .is_some_and(|c| c.param.split('.').next() == Some(k.as_str()));
            if param.required && param.default.is_none() && !with.contains_key(k) && !from_cursor {
                self.error(
                    path,
                    format!("`{}.{action_name}` needs the parameter `{k}`", d.name),
                    Some("add it under `with:`"),
                );
            }
        }
    }

    fn check_step_ref(&mut self, path: &str, name: &str, scope: &Scope, key: &str) {
        if let Some(base) = name.strip_suffix(super::execute::REJECTED_SUFFIX) {
            if key == "from" {
                match self.rejecting.get(base) {
                    Some(true) => {}
                    Some(false) => self.error(
                        path,
                        format!("`{base}` rejects nothing: only a `lua` or `for_each` step with `on_error: continue` has `.rejected` records"),
                        None,
                    ),
                    None => self.check_step_ref(path, base, scope, key),
                }
                return;
            }
        }
        if name == "item" {
            if !scope.in_for_each {
                self.error(path, format!("`{key}: item` is only valid inside a `for_each`"), None);
            }
            return;
        }
        if !scope.steps.iter().any(|s| s == name) {
            let mut candidates: Vec<&str> = scope.steps.iter().map(String::as_str).collect();
            if scope.in_for_each {
                candidates.push("item");
            }
            let hint = match did_you_mean(name, candidates.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None if self.ids.contains(name) => {
                    "a step can only take records from a step declared before it".to_owned()
                }
                None => format!(
                    "the steps before this one are: {}",
                    if candidates.is_empty() {
                        "none".to_owned()
                    } else {
                        candidates.join(", ")
                    }
                ),
            };
            self.error(
                path,
                format!("`{key}` names the step `{name}`, which is not declared before this step"),
                Some(&hint),
            );
        }
    }

    fn check_format(&mut self, path: &str, file: &str, format: Option<Format>, writing: bool) -> Option<Format> {
        let f = format.or_else(|| {
            // A templated path still usually ends in a literal extension,
            // which may follow the template at once (`{{ inputs.day }}.csv`).
            let tail = file.rsplit("}}").next().unwrap_or(file);
            crate::source::format_of(Path::new(&format!("x{tail}")))
        });
        match f {
            None => {
                self.error(
                    path,
                    format!("cannot tell the format of `{file}` from its extension"),
                    Some("add `format:` with one of jsonl, csv, json, sqlite"),
                );
                None
            }
            Some(Format::Sqlite) if !writing => {
                self.error(
                    path,
                    "a `read` step cannot read SQLite files",
                    Some("read a CSV, JSON Lines or JSON file"),
                );
                None
            }
            Some(f) => Some(f),
        }
    }

    fn check_lua(&mut self, step: &Step, path: &str, kind: &str) {
        let (opts, p) = match (&step.lua, &step.run) {
            (Some(spec), _) => (spec.options(), format!("{path}.lua")),
            (None, Some(code)) => (
                super::model::LuaOptions {
                    inline: Some(code.clone()),
                    ..Default::default()
                },
                format!("{path}.run"),
            ),
            _ => return,
        };
        let source = match (&opts.path, &opts.inline) {
            (Some(_), Some(_)) => {
                self.error(&p, "give either `path` or `inline`, not both", None);
                return;
            }
            (None, None) => {
                self.error(
                    &p,
                    "the script is missing",
                    Some("give `path:` (a file) or `inline:` (the code)"),
                );
                return;
            }
            (Some(rel), None) => {
                let file = self.lw.resolve(rel);
                match std::fs::read_to_string(&file) {
                    Ok(code) => ScriptSource {
                        name: file.display().to_string(),
                        code,
                    },
                    Err(e) => {
                        let why = if e.kind() == std::io::ErrorKind::NotFound {
                            "does not exist".to_owned()
                        } else if file.is_dir() {
                            "is a folder, not a file".to_owned()
                        } else {
                            format!("cannot be read: {}", crate::diagnostic::io_reason(&e))
                        };
                        self.error(
                            &p,
                            format!("the script {} {why}", file.display()),
                            Some("script paths are relative to the workflow file"),
                        );
                        return;
                    }
                }
            }
            (None, Some(code)) => ScriptSource {
                name: format!("{} {p}", self.lw.path.display()),
                code: code.clone(),
            },
        };
        if opts.memory_limit.is_some_and(|m| m.0 < 1024 * 1024) {
            self.error(
                &format!("{p}.memory_limit"),
                "the memory limit must be at least 1MiB",
                None,
            );
        }
        if opts.instruction_limit == Some(0) {
            self.error(
                &format!("{p}.instruction_limit"),
                "the instruction limit must be above 0",
                None,
            );
        }
        match opts.parallel {
            Some(0) => self.error(
                &format!("{p}.parallel"),
                "`parallel` must be at least 1",
                Some("1 runs the script in one Lua state, as when `parallel` is left out"),
            ),
            Some(n) if n > MAX_LUA_STATES => self.error(
                &format!("{p}.parallel"),
                format!("`parallel` is {n}, more Lua states than flow runs at once ({MAX_LUA_STATES})"),
                Some("more states than cores only adds threads; use about as many as the machine has cores"),
            ),
            _ => {}
        }
        match crate::lua::check(&source.code, &source.name) {
            Err(e) => self.error(&p, format!("Lua: {}", e.message), None),
            Ok(true) if opts.parallel.is_some_and(|n| n > 1) => self.error(
                &format!("{p}.parallel"),
                "the script has `finish`, which must see every record, so it cannot run in several Lua states",
                Some("remove `parallel`, or move the work of `finish` to a step of its own"),
            ),
            Ok(_) => {}
        }
        let _ = kind;
        self.scripts.push((step.id.clone(), source));
    }

    fn check_for_each(&mut self, step: &Step, path: &str, scope: &Scope) {
        let Some(over) = &step.for_each else { return };
        let p = format!("{path}.for_each");
        if is_template(over) {
            self.template(&p, over, scope);
        } else {
            self.check_step_ref(&p, over, scope, "for_each");
        }
        if step.concurrency == Some(0) {
            self.error(&format!("{path}.concurrency"), "`concurrency` must be at least 1", None);
        }
        match &step.steps {
            None => self.error(path, "a `for_each` needs nested `steps` to run for every item", None),
            Some(nested) if nested.is_empty() => {
                self.error(&format!("{path}.steps"), "the nested steps are empty", None)
            }
            Some(nested) => {
                let inner = Scope {
                    steps: scope.steps.clone(),
                    in_for_each: true,
                };
                self.check_steps(nested, &format!("{path}.steps"), inner);
            }
        }
    }

    fn json_templates(&mut self, path: &str, value: &serde_json::Value, scope: &Scope) {
        match value {
            serde_json::Value::String(s) => self.template(path, s, scope),
            serde_json::Value::Array(a) => {
                for (i, v) in a.iter().enumerate() {
                    self.json_templates(&format!("{path}[{i}]"), v, scope);
                }
            }
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    self.json_templates(&format!("{path}.{k}"), v, scope);
                }
            }
            _ => {}
        }
    }

    fn template(&mut self, path: &str, text: &str, scope: &Scope) {
        let refs = match self.templates.references(text) {
            Ok(r) => r,
            Err(e) => {
                self.error(path, e.to_string(), None);
                return;
            }
        };
        for name in refs {
            let parts: Vec<&str> = name.split('.').collect();
            let root = parts[0];
            match root {
                "inputs" => {
                    if let Some(key) = parts.get(1) {
                        if !self.lw.workflow.inputs.contains_key(*key) {
                            let hint = did_you_mean(key, self.lw.workflow.inputs.keys().map(String::as_str))
                                .map(|s| format!("did you mean `inputs.{s}`?"))
                                .unwrap_or_else(|| "declare it under `inputs:`".into());
                            self.error(path, format!("`inputs.{key}` is not a declared input"), Some(&hint));
                        }
                    }
                }
                "steps" => {
                    let Some(id) = parts.get(1) else { continue };
                    if !scope.steps.iter().any(|s| s == id) {
                        let hint = did_you_mean(id, scope.steps.iter().map(String::as_str))
                            .map(|s| format!("did you mean `steps.{s}`?"))
                            .unwrap_or_else(|| "a template can read the results of steps declared before it".into());
                        self.error(
                            path,
                            format!("`steps.{id}` is not a step declared before this point"),
                            Some(&hint),
                        );
                    } else if let Some(field) = parts.get(2) {
                        if !STEP_FIELDS.contains(field) {
                            let hint = did_you_mean(field, STEP_FIELDS.iter().copied())
                                .map(|s| format!("did you mean `steps.{id}.{s}`?"))
                                .unwrap_or_else(|| format!("a step has: {}", STEP_FIELDS.join(", ")));
                            self.error(path, format!("steps have no field `{field}`"), Some(&hint));
                        }
                    }
                }
                "item" if !scope.in_for_each => {
                    self.error(path, "`item` is only defined inside a `for_each`", None);
                }
                "secrets" => {
                    if let Some(key) = parts.get(1) {
                        self.secrets.insert((*key).to_owned());
                    }
                }
                "env" | "item" => {}
                other if GLOBAL_NAMES.contains(&other) => {}
                other => {
                    let hint = did_you_mean(other, ROOTS.iter().copied())
                        .map(|s| format!("did you mean `{s}`?"))
                        .unwrap_or_else(|| format!("templates can use {}", ROOTS.join(", ")));
                    self.error(path, format!("`{other}` is not defined"), Some(&hint));
                }
            }
        }
    }
}

/// Checks an input value given on the command line or as a default.
pub(crate) fn input_type_name(t: InputType) -> &'static str {
    match t {
        InputType::String => "string",
        InputType::Integer => "integer",
        InputType::Number => "number",
        InputType::Boolean => "boolean",
        InputType::Date => "date",
        InputType::List => "list",
        InputType::Object => "object",
    }
}

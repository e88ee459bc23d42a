//! Loading a workflow file: YAML parsing with errors that point at the line,
//! the path and the likely fix, then validation.

use super::model::Workflow;
use super::positions::Positions;
use crate::diagnostic::{did_you_mean, Diagnostic, Diagnostics};
use crate::provider::Registry;
use serde::de::DeserializeOwned;
use std::collections::{BTreeSet, HashMap};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

/// A Lua script a step runs, read when the workflow was loaded.
#[derive(Debug, Clone)]
pub struct ScriptSource {
    /// How messages name the script (its path, or the step for inline code).
    pub name: String,
    /// The code.
    pub code: String,
}

/// A parsed and validated workflow with what it needs from disk.
#[derive(Debug, Clone)]
pub struct LoadedWorkflow {
    /// The workflow file as given.
    pub path: PathBuf,
    /// The folder relative paths in the workflow start from.
    pub dir: PathBuf,
    /// The parsed workflow.
    pub workflow: Workflow,
    /// Where each path of the file is.
    pub positions: Positions,
    /// The Lua scripts, by step id.
    pub scripts: HashMap<String, ScriptSource>,
    /// The names read as `secrets.NAME` anywhere in the workflow.
    pub secret_names: BTreeSet<String>,
    /// The providers the workflow's connections use.
    pub registry: Arc<Registry>,
}

impl LoadedWorkflow {
    /// A problem at a path of this workflow, placed at its line.
    pub fn diagnostic(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        place(Diagnostic::new(&self.path, message).at(path), &self.positions)
    }

    /// A path in the workflow, resolved against the workflow's folder.
    pub fn resolve(&self, rel: &str) -> PathBuf {
        normalize(&self.dir.join(rel))
    }

    /// How many threads the run's async runtime should have on a machine
    /// with `cores` cores: the cores the Lua states leave (each state's
    /// thread would otherwise share a core with a runtime thread that keeps
    /// waking, slowing the script that is usually the slowest step), and
    /// at least one.
    pub fn runtime_threads(&self, cores: usize) -> usize {
        cores.saturating_sub(lua_states(&self.workflow.steps)).max(1)
    }
}

/// How many Lua states `steps` keep busy at once while records flow: each
/// `lua` or `run` step has its own, one per `parallel` (a `lua` step inside
/// a `for_each` runs one state at a time). Each runs on a thread of its own,
/// and a script over many records keeps a core busy.
fn lua_states(steps: &[super::model::Step]) -> usize {
    fn count(steps: &[super::model::Step], top: bool) -> usize {
        steps
            .iter()
            .map(|step| {
                let own = match (&step.lua, &step.run) {
                    (Some(spec), _) if top => spec.options().parallel.unwrap_or(1).max(1),
                    (Some(_), _) | (None, Some(_)) => 1,
                    (None, None) => 0,
                };
                own + step.steps.as_deref().map_or(0, |nested| count(nested, false))
            })
            .sum()
    }
    count(steps, true)
}

pub(crate) fn place(d: Diagnostic, positions: &Positions) -> Diagnostic {
    match d.path.as_deref().and_then(|p| positions.find(p)) {
        Some((line, col)) => d.line_col(line, col),
        None => d,
    }
}

/// Removes `.` and `..` parts without touching the disk.
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => match out.components().next_back() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(".."),
            },
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// Reads and validates a workflow file, with the bundled providers and those
/// in `FLOW_PROVIDERS_PATH`.
pub fn load_workflow(path: &Path) -> Result<LoadedWorkflow, Diagnostics> {
    let registry = Registry::load(&Registry::dirs_from_env())?;
    load_workflow_with(path, Arc::new(registry))
}

/// Reads and validates a workflow file against the given providers.
pub fn load_workflow_with(path: &Path, registry: Arc<Registry>) -> Result<LoadedWorkflow, Diagnostics> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        let msg = match e.kind() {
            std::io::ErrorKind::NotFound => "the file does not exist".to_owned(),
            _ => format!("cannot read the file: {e}"),
        };
        Diagnostics::from(Diagnostic::new(path, msg))
    })?;
    let workflow: Workflow = parse_yaml(path, &text)?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let mut lw = LoadedWorkflow {
        path: path.to_path_buf(),
        dir,
        workflow,
        positions: Positions::parse(&text),
        scripts: HashMap::new(),
        secret_names: BTreeSet::new(),
        registry,
    };
    let diags = super::validate::validate(&mut lw);
    if diags.is_empty() {
        Ok(lw)
    } else {
        Err(diags)
    }
}

/// Parses a YAML document into `T`, turning serde's messages into a
/// diagnostic with the line, the path and a suggestion for mistyped keys.
pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, Diagnostics> {
    if text.trim().is_empty() {
        return Err(Diagnostic::new(file, "the file is empty").into());
    }
    // Read as plain YAML first: a key written twice in a map (two actions,
    // two connections of one name) is an error there, where reading into
    // the file's types would keep the last one without a word. The text is
    // parsed once: the file's types are read from that value, and only
    // when that fails is the text read again, for the error's place (or
    // for a scalar the value gives another type than the text does).
    let value = match serde_yaml::from_str::<serde_yaml::Value>(text) {
        Ok(value) => value,
        Err(e) if e.to_string().contains("duplicate entry") => return Err(yaml_error(file, text, &e).into()),
        Err(_) => serde_yaml::Value::Null,
    };
    if !value.is_null() {
        if let Ok(parsed) = T::deserialize(value) {
            return Ok(parsed);
        }
    }
    serde_yaml::from_str(text).map_err(|e| yaml_error(file, text, &e).into())
}

fn yaml_error(file: &Path, text: &str, e: &serde_yaml::Error) -> Diagnostic {
    let mut msg = e.to_string();
    if let Some(i) = msg.rfind(" at line ") {
        msg.truncate(i);
    }
    let mut d = Diagnostic::new(file, "");
    if let Some(loc) = e.location() {
        d = d.line_col(loc.line(), loc.column());
    }
    // serde_yaml puts the path first: `steps[1]: unknown field ...`.
    if let Some((head, rest)) = msg.split_once(": ") {
        if !head.contains(' ') && head != "." {
            d = d.at(head);
            msg = rest.to_owned();
        }
    }
    if let Some(rest) = msg.strip_prefix("unknown field ") {
        let (word, expected) = split_expected(rest);
        if d.path.is_none() && e.location().is_none_or(|l| l.line() <= 1) {
            // Inside a map picked by its `type` (auth, pagination), YAML's
            // reader knows neither the place nor the path: the key's first
            // use in the text is the best guess.
            if let Some((line, column)) = key_position(text, &word) {
                d = d.line_col(line, column);
            }
        }
        d.message = format!("unknown key `{word}`");
        d.hint = Some(match did_you_mean(&word, expected.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("the keys allowed here are: {}", expected.join(", ")),
        });
    } else if let Some(rest) = msg.strip_prefix("unknown variant ") {
        let (word, expected) = split_expected(rest);
        d.message = format!("`{word}` is not one of {}", expected.join(", "));
        if let Some(s) = did_you_mean(&word, expected.iter().map(String::as_str)) {
            d.hint = Some(format!("did you mean `{s}`?"));
        }
    } else if let Some(key) = msg
        .strip_prefix("duplicate entry with key ")
        .or_else(|| msg.strip_prefix("duplicate field "))
    {
        let key = key.trim_matches(|c| c == '"' || c == '`');
        d.message = format!("the key `{key}` is written twice here");
        d.hint = Some("keep one of them".into());
    } else if let Some(field) = msg.strip_prefix("missing field ") {
        d.message = format!("the key {field} is required here");
    } else {
        d.message = plain_types(&msg);
    }
    d
}

/// A serde message with Rust's type names said as a user reads them:
/// "expected u32" is "expected a whole number, 0 or more".
fn plain_types(msg: &str) -> String {
    // A number past what the key takes: "invalid value: integer `N`,
    // expected u32", or past 64 bits: "invalid type: integer `N` as u128".
    let out_of_range = msg.strip_prefix("invalid value: integer `").or_else(|| {
        msg.strip_prefix("invalid type: integer `")
            .filter(|r| r.contains("` as u128") || r.contains("` as i128"))
    });
    if let Some(rest) = out_of_range.filter(|r| !r.starts_with('-')) {
        if let Some((n, expected)) = rest.split_once('`') {
            let most = match expected.rsplit(' ').next() {
                Some("u8") => Some(u64::from(u8::MAX)),
                Some("u16") => Some(u64::from(u16::MAX)),
                Some("u32") => Some(u64::from(u32::MAX)),
                _ => None,
            };
            if expected.contains(" as u128") || expected.contains(" as i128") || most.is_some() {
                return match most {
                    Some(most) => format!("`{n}` is too large here: at most {most}"),
                    None => format!("`{n}` is too large here"),
                };
            }
        }
    }
    let mut out = msg
        .replace(
            "expected struct Workflow",
            "expected a workflow: a map with `name:` and `steps:`",
        )
        .replace(
            "expected struct Descriptor",
            "expected a provider descriptor: a map with `name:` and `actions:`",
        );
    for (rust, plain) in [
        ("expected u8", "expected a whole number from 0 to 255"),
        ("expected u16", "expected a whole number from 0 to 65535"),
        ("expected u32", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected i32", "expected a whole number"),
        ("expected i64", "expected a whole number"),
        ("expected f32", "expected a number"),
        ("expected f64", "expected a number"),
    ] {
        if let Some(rest) = out.strip_suffix(rust) {
            out = format!("{rest}{plain}");
            break;
        }
    }
    out
}

/// Where `key` is first written as a key (`key:` at the start of a line or
/// after `{` or `,`), as 1-based line and column.
fn key_position(text: &str, key: &str) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate() {
        let mut from = 0;
        while let Some(at) = line[from..].find(key).map(|a| a + from) {
            let before = line[..at].trim_end();
            let after = line[at + key.len()..].trim_start();
            let starts = before.is_empty() || before.ends_with('{') || before.ends_with(',') || before.ends_with('-');
            if starts && after.starts_with(':') {
                return Some((i + 1, line[..at].chars().count() + 1));
            }
            from = at + key.len();
        }
    }
    None
}

/// Splits "`lue`, expected one of `a`, `b`" into the word and the choices.
fn split_expected(rest: &str) -> (String, Vec<String>) {
    let ticks: Vec<&str> = rest.split('`').collect();
    let word = ticks.get(1).copied().unwrap_or("").to_owned();
    let expected = ticks.iter().skip(3).step_by(2).map(|s| (*s).to_owned()).collect();
    (word, expected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workflow::model::Workflow;

    fn err(text: &str) -> Diagnostic {
        parse_yaml::<Workflow>(Path::new("wf.yaml"), text)
            .err()
            .unwrap()
            .0
            .remove(0)
    }

    #[test]
    fn unknown_key_has_path_line_and_suggestion() {
        let d = err("name: x\nsteps:\n  - id: a\n    read: a.csv\n  - id: b\n    from: a\n    lue: s.lua\n");
        assert_eq!(d.path.as_deref(), Some("steps[1]"));
        assert_eq!(d.line, Some(7));
        assert_eq!(d.message, "unknown key `lue`");
        assert_eq!(d.hint.as_deref(), Some("did you mean `lua`?"));
    }

    #[test]
    fn numbers_too_large_and_a_file_that_is_no_map_are_said_plainly() {
        let big = err("name: x\nsteps:\n  - id: a\n    read: a.csv\n    retry: { attempts: 99999999999 }\n");
        assert_eq!(big.message, "`99999999999` is too large here: at most 4294967295");
        let huge =
            err("name: x\nsteps:\n  - id: a\n    read: a.csv\n    retry: { attempts: 99999999999999999999999 }\n");
        assert_eq!(
            huge.message,
            "`99999999999999999999999` is too large here: at most 4294967295"
        );
        let list = err("- a\n- b\n");
        assert!(
            list.message
                .ends_with("expected a workflow: a map with `name:` and `steps:`"),
            "{list}"
        );
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let d = err("name: x\nsteps:\n  - id: a\n   read: [\n");
        assert!(d.line.is_some(), "{d}");
    }

    #[test]
    fn missing_and_bad_values() {
        assert_eq!(err("steps: []\n").message, "the key `name` is required here");
        let d = err("name: x\nsteps:\n  - id: a\n    on_error: contine\n");
        assert!(d.message.contains("`contine` is not one of"), "{d}");
        assert_eq!(d.hint.as_deref(), Some("did you mean `continue`?"));
        let d = err("name: x\nsteps:\n  - id: a\n    read: { pth: a.csv }\n");
        assert_eq!(d.path.as_deref(), Some("steps[0].read"), "{d}");
        assert_eq!(d.hint.as_deref(), Some("did you mean `path`?"));
        assert_eq!(err("").message, "the file is empty");
    }

    #[test]
    fn lua_states_count_each_state_a_script_may_keep_busy() {
        let wf = |text: &str| parse_yaml::<Workflow>(Path::new("wf.yaml"), text).unwrap().steps;
        assert_eq!(lua_states(&wf("name: x\nsteps:\n  - id: a\n    read: a.csv\n")), 0);
        let steps = wf("name: x
steps:
  - id: a
    read: a.csv
  - id: b
    from: a
    lua: { path: m.lua, parallel: 2 }
  - id: c
    from: b
    lua: n.lua
  - id: d
    from: c
    for_each: \"{{ inputs.items }}\"
    steps:
      - id: e
        lua: { path: m.lua, parallel: 4 }
      - id: f
        from: e
        run: return r
");
        // 2 + 1, and one for each nested step whatever its `parallel`.
        assert_eq!(lua_states(&steps), 5);
    }

    #[test]
    fn normalizes_paths() {
        assert_eq!(
            normalize(Path::new("workflows/../scripts/a.lua")),
            PathBuf::from("scripts/a.lua")
        );
        assert_eq!(normalize(Path::new("./a/./b")), PathBuf::from("a/b"));
        assert_eq!(normalize(Path::new("../x")), PathBuf::from("../x"));
    }
}

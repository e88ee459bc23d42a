//! The workflow file format: the structs the parser fills and the JSON
//! Schema is generated from. Every field's doc comment is user documentation.

use crate::units::{ByteSize, Duration};
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::de::{self, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use std::fmt;

/// A workflow: inputs, connections to providers, steps and outputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Short name of the workflow, used in run history and logs.
    pub name: String,
    /// What the workflow does, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// Values the workflow takes; set with `--input key=value`.
    #[serde(default)]
    pub inputs: IndexMap<String, Input>,
    /// Connections to HTTP API providers, by name; `call` steps use them.
    #[serde(default)]
    pub connections: IndexMap<String, Connection>,
    /// The steps, run as soon as what they depend on is ready.
    pub steps: Vec<Step>,
    /// Values printed when the run ends: templates over inputs and step results.
    #[serde(default)]
    pub outputs: IndexMap<String, String>,
}

/// The type of an input value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    /// Text.
    #[default]
    String,
    /// A whole number.
    Integer,
    /// Any number.
    Number,
    /// `true` or `false`.
    Boolean,
    /// A date or date-time (`2024-05-01`, `2024-05-01T10:00:00Z`), kept as text.
    Date,
    /// A list, written as JSON on the command line.
    List,
    /// A map, written as JSON on the command line.
    Object,
}

/// One input of a workflow.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Input {
    /// The type the value must have.
    #[serde(default, rename = "type")]
    pub kind: InputType,
    /// The value used when none is given; an input without a default is required.
    #[serde(default)]
    pub default: Option<serde_json::Value>,
    /// What the input means, for people.
    #[serde(default)]
    pub description: Option<String>,
}

/// A connection to an HTTP API provider.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    /// The provider's name, such as `roistat` or `neiros`.
    pub provider: String,
    /// Overrides the provider's base URL (templated).
    #[serde(default)]
    pub base_url: Option<String>,
    /// The provider's configuration: credentials and account settings (templated,
    /// usually `{{ secrets.NAME }}`).
    #[serde(default)]
    pub config: IndexMap<String, serde_json::Value>,
    /// Replaces the provider's request budget for this account (a plan with
    /// a lower or higher limit): `{ requests: 5, per: 1s }`.
    #[serde(default)]
    pub rate_limit: Option<crate::provider::model::RateLimit>,
    /// How many pages of a list may be fetched at once once the last page is
    /// known, instead of the provider's setting (1: one after another).
    #[serde(default)]
    pub parallel: Option<usize>,
}

/// What to do when a step fails.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Stop the run (the default).
    #[default]
    Fail,
    /// Record the failure and go on: a record a script rejects is skipped and
    /// counted, a failed `for_each` item is counted, a failed step ends quietly.
    Continue,
}

/// How a step is tried again when it fails.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Retry {
    /// How many attempts in all, the first one included.
    #[serde(default = "default_attempts")]
    pub attempts: u32,
    /// The wait before the second attempt; it doubles for every attempt after.
    #[serde(default = "default_backoff")]
    pub backoff: Duration,
    /// The longest wait between two attempts.
    #[serde(default)]
    pub max_backoff: Option<Duration>,
}

fn default_attempts() -> u32 {
    3
}

fn default_backoff() -> Duration {
    Duration(std::time::Duration::from_secs(1))
}

/// A step of a workflow. Each step has an `id` and exactly one kind:
/// `read`, `lua`/`run`, `write`, `for_each` or `call`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The step's name; other steps refer to it as `steps.<id>` and in `from:`.
    pub id: String,
    /// What the step does, for people.
    #[serde(default)]
    pub description: Option<String>,
    /// The step whose records this step takes (`item` inside `for_each`), or
    /// a list of steps whose records are merged as they come.
    #[serde(default)]
    pub from: Option<Sources>,
    /// A condition (template); the step is skipped when it is false.
    #[serde(default, rename = "if")]
    pub condition: Option<String>,
    /// Try the step again when it fails (for `for_each`, each item is retried).
    #[serde(default)]
    pub retry: Option<Retry>,
    /// The longest an attempt of the step may take (for `for_each`, each item).
    #[serde(default)]
    pub timeout: Option<Duration>,
    /// What to do when the step fails: `fail` (the default) or `continue`.
    #[serde(default)]
    pub on_error: OnError,

    /// Read records from a file: JSON Lines, CSV with a header row, or a JSON array.
    #[serde(default)]
    pub read: Option<ReadSpec>,
    /// Transform every record of `from` with a Lua script file (relative to the
    /// workflow file), or a map with `path` or `inline` and limits.
    #[serde(default)]
    pub lua: Option<LuaSpec>,
    /// Transform every record of `from` with inline Lua (same as `lua: { inline: ... }`).
    #[serde(default)]
    pub run: Option<String>,
    /// Write the records of `from` to a JSON Lines, CSV or JSON file, or a SQLite table.
    #[serde(default)]
    pub write: Option<WriteSpec>,
    /// Run the nested `steps` once per record of this step, or per item of this
    /// list (a template), with the record as `item`.
    #[serde(default)]
    pub for_each: Option<String>,
    /// How many `for_each` items run at once.
    #[serde(default)]
    pub concurrency: Option<usize>,
    /// The steps `for_each` runs for every item.
    #[serde(default)]
    pub steps: Option<Vec<Step>>,
    /// Call a provider action: `<connection>.<action>`. A list action gives
    /// its records (every page), any other action its response.
    #[serde(default)]
    pub call: Option<String>,
    /// The action's parameters (templates).
    #[serde(default)]
    pub with: Option<IndexMap<String, serde_json::Value>>,
    /// The idempotency key of a write (a template such as
    /// `"{{ item.phone }}-{{ item.date }}"`): a write whose key has
    /// completed before, in this run or an earlier one, is skipped.
    #[serde(default)]
    pub key: Option<String>,
    /// Read incrementally: each run asks only for what is newer than the
    /// last value the previous successful run saw.
    #[serde(default)]
    pub cursor: Option<CursorSpec>,
}

/// An incremental cursor of a `call` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CursorSpec {
    /// The record field to track, a dotted path (`created_at`, `data.updated`).
    pub field: String,
    /// The parameter that receives the last value on the next run, a dotted
    /// path into `with` (`start_at`, `period.from`).
    pub param: String,
    /// The value for the first run (a template).
    #[serde(default)]
    pub initial: Option<String>,
    /// Start this much before the last value (`10m`, `1d`), for records that
    /// arrive late; dates only.
    #[serde(default)]
    pub lookback: Option<Duration>,
}

/// The step or steps a step takes records from.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Sources {
    /// One step.
    One(String),
    /// Several steps, merged.
    Many(Vec<String>),
}

impl Sources {
    /// The step ids.
    pub fn names(&self) -> Vec<&str> {
        match self {
            Sources::One(s) => vec![s.as_str()],
            Sources::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }

    /// True for `from: item`.
    pub fn is_item(&self) -> bool {
        self.names() == ["item"]
    }
}

/// The kinds a step can be, in the order they are documented.
pub const STEP_KINDS: &[&str] = &["read", "lua", "run", "write", "for_each", "call"];

/// File formats for `read` and `write`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line.
    Jsonl,
    /// Comma-separated values with a header row.
    Csv,
    /// One JSON array of objects.
    Json,
    /// A table in a SQLite database file (`write` only).
    Sqlite,
}

/// Where a `read` step takes its records from.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum ReadSpec {
    /// A file path (templated), relative to the workflow file.
    Path(String),
    /// A file with options.
    Full(ReadOptions),
}

/// Options of a `read` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ReadOptions {
    /// The file (templated), relative to the workflow file.
    pub path: String,
    /// The format; by default taken from the file's extension
    /// (`.jsonl`/`.ndjson`, `.csv`, `.json`).
    #[serde(default)]
    pub format: Option<Format>,
    /// The CSV field separator, one character (default `,`).
    #[serde(default)]
    pub delimiter: Option<char>,
}

impl ReadSpec {
    /// The options, with the short form expanded.
    pub fn options(&self) -> ReadOptions {
        match self {
            ReadSpec::Path(p) => ReadOptions {
                path: p.clone(),
                format: None,
                delimiter: None,
            },
            ReadSpec::Full(o) => o.clone(),
        }
    }
}

/// Where a `write` step puts records.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum WriteSpec {
    /// A file path (templated), relative to the workflow file.
    Path(String),
    /// A file with options.
    Full(WriteOptions),
}

/// Options of a `write` step.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteOptions {
    /// The file (templated), relative to the workflow file. Folders are created.
    pub path: String,
    /// The format; by default taken from the file's extension (`.jsonl`,
    /// `.csv`, `.json`, `.db`/`.sqlite`).
    #[serde(default)]
    pub format: Option<Format>,
    /// The SQLite table (created if missing, columns from the records).
    #[serde(default)]
    pub table: Option<String>,
    /// Add to an existing file or table instead of replacing it.
    #[serde(default)]
    pub append: bool,
    /// The CSV columns in order; by default the fields of the first record.
    #[serde(default)]
    pub columns: Option<Vec<String>>,
}

impl WriteSpec {
    /// The options, with the short form expanded.
    pub fn options(&self) -> WriteOptions {
        match self {
            WriteSpec::Path(p) => WriteOptions {
                path: p.clone(),
                format: None,
                table: None,
                append: false,
                columns: None,
            },
            WriteSpec::Full(o) => o.clone(),
        }
    }
}

/// The Lua script of a `lua` step.
#[derive(Debug, Clone, JsonSchema)]
#[serde(untagged)]
pub enum LuaSpec {
    /// A script file, relative to the workflow file.
    Path(String),
    /// A script with options.
    Full(LuaOptions),
}

/// Options of a `lua` step.
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LuaOptions {
    /// A script file, relative to the workflow file.
    #[serde(default)]
    pub path: Option<String>,
    /// The script itself.
    #[serde(default)]
    pub inline: Option<String>,
    /// The most memory the script's Lua state may use (default `64MiB`).
    #[serde(default)]
    pub memory_limit: Option<ByteSize>,
    /// The most Lua instructions one call may run (default 100 000 000,
    /// about a second of work).
    #[serde(default)]
    pub instruction_limit: Option<u64>,
    /// How many Lua states map records at once (default 1). Each state has
    /// its own globals, so this is for scripts that map each record on its
    /// own: no `finish`, nothing remembered from one record to the next.
    /// Records come out in the order they came in.
    #[serde(default)]
    pub parallel: Option<usize>,
}

impl LuaSpec {
    /// The options, with the short form expanded.
    pub fn options(&self) -> LuaOptions {
        match self {
            LuaSpec::Path(p) => LuaOptions {
                path: Some(p.clone()),
                ..LuaOptions::default()
            },
            LuaSpec::Full(o) => o.clone(),
        }
    }
}

/// Implements `Deserialize` for an enum that is written either as a string or
/// as a map of options, keeping the map's precise error messages (unknown keys
/// and their paths) that `#[serde(untagged)]` would lose.
macro_rules! string_or_map {
    ($ty:ident, $opts:ident, $what:literal) => {
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                        f.write_str($what)
                    }
                    fn visit_str<E: de::Error>(self, s: &str) -> Result<$ty, E> {
                        Ok($ty::Path(s.to_owned()))
                    }
                    fn visit_map<M: MapAccess<'de>>(self, m: M) -> Result<$ty, M::Error> {
                        $opts::deserialize(de::value::MapAccessDeserializer::new(m)).map($ty::Full)
                    }
                }
                d.deserialize_any(V)
            }
        }
    };
}

string_or_map!(ReadSpec, ReadOptions, "a file path or a map with `path`");
string_or_map!(WriteSpec, WriteOptions, "a file path or a map with `path`");
string_or_map!(LuaSpec, LuaOptions, "a script path or a map with `path` or `inline`");

impl Step {
    /// The kinds this step declares (a valid step declares exactly one).
    pub fn kinds(&self) -> Vec<&'static str> {
        let mut k = Vec::new();
        if self.read.is_some() {
            k.push("read");
        }
        if self.lua.is_some() {
            k.push("lua");
        }
        if self.run.is_some() {
            k.push("run");
        }
        if self.write.is_some() {
            k.push("write");
        }
        if self.for_each.is_some() {
            k.push("for_each");
        }
        if self.call.is_some() {
            k.push("call");
        }
        k
    }
}

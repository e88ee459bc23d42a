//! `flow runs` and `flow state`: the run history and the incremental state
//! of workflows, and where the state store is.

use anyhow::Result;
use flow_core::state::{SqliteStore, StateStore};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Where the state store is: `--state`, else `FLOW_STATE`, else
/// `.flow/state.db` beside the workflow (`.flow/sandbox.db` for sandbox
/// runs), else `.flow/state.db` in the current folder.
pub fn path(explicit: Option<&Path>, workflow: Option<&Path>, sandbox: bool) -> PathBuf {
    if let Some(p) = explicit {
        return p.to_owned();
    }
    if let Some(p) = std::env::var_os("FLOW_STATE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    match workflow {
        Some(w) => flow_core::state::default_path(w, sandbox),
        None => PathBuf::from(".flow").join("state.db"),
    }
}

/// Opens an existing store for reading history and state; a store that
/// does not exist yet is not created (nothing has run there).
pub fn open_existing(path: &Path) -> Result<SqliteStore, ExitCode> {
    if !path.exists() {
        eprintln!(
            "error: no runs recorded: {} does not exist; run a workflow first, or point at its store with --state (runs with --sandbox keep theirs in .flow/sandbox.db beside the workflow)",
            path.display()
        );
        return Err(ExitCode::from(2));
    }
    let store = open(path)?;
    // A run whose process died is `interrupted`, and its writes left
    // `sending` count, and reset, as the uncertain ones they are.
    if let Err(e) = flow_core::state::StateStore::mark_interrupted(&store) {
        eprintln!("error: {e}");
        return Err(ExitCode::from(1));
    }
    Ok(store)
}

/// Opens the store, or says on stderr why it cannot be opened (see
/// [`try_open`]).
pub fn open(path: &Path) -> Result<SqliteStore, ExitCode> {
    try_open(path).map_err(|(code, message)| {
        eprintln!("error: {message}");
        code
    })
}

/// Opens the store, or gives why it cannot be opened: a file that is no
/// store is a usage error, anything else a failure.
pub fn try_open(path: &Path) -> Result<SqliteStore, (ExitCode, String)> {
    use std::io::Read;
    let mut head = [0u8; 16];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut head));
    if matches!(read, Ok(n) if n > 0 && head[..n] != b"SQLite format 3\0"[..n]) || path.is_dir() {
        return Err((
            ExitCode::from(2),
            format!(
                "{} is not a flow state store (an SQLite file); give --state a new file or an existing store",
                path.display()
            ),
        ));
    }
    if let Some(tables) = path.is_file().then(|| SqliteStore::foreign_tables(path)).flatten() {
        return Err((
            ExitCode::from(2),
            format!(
                "{} is an SQLite database but not a flow state store (it holds {}); give --state a new file or an existing store",
                path.display(),
                tables.iter().take(5).map(|t| format!("`{t}`")).collect::<Vec<_>>().join(", ")
            ),
        ));
    }
    SqliteStore::open(path).map_err(|e| (ExitCode::from(1), e.to_string()))
}

/// The ids of a workflow file's steps, nested ones included, without
/// validating the rest.
pub fn step_ids(file: &Path) -> Vec<String> {
    fn walk(steps: Option<&serde_yaml::Value>, out: &mut Vec<String>) {
        for step in steps.and_then(serde_yaml::Value::as_sequence).into_iter().flatten() {
            if let Some(id) = step.get("id").and_then(serde_yaml::Value::as_str) {
                out.push(id.to_owned());
            }
            walk(step.get("steps"), out);
        }
    }
    let doc: Option<serde_yaml::Value> = std::fs::read_to_string(file)
        .ok()
        .and_then(|t| serde_yaml::from_str(&t).ok());
    let mut out = Vec::new();
    walk(doc.as_ref().and_then(|d| d.get("steps")), &mut out);
    out
}

/// The `name:` of a workflow file, without validating the rest.
pub fn workflow_name(file: &Path) -> Result<String, ExitCode> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        eprintln!("error: {}: {e}", file.display());
        ExitCode::from(2)
    })?;
    let doc: serde_yaml::Value = serde_yaml::from_str(&text).map_err(|e| {
        eprintln!("error: {}: {e}", file.display());
        ExitCode::from(2)
    })?;
    doc.get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .ok_or_else(|| {
            eprintln!("error: {}: the workflow has no `name`", file.display());
            ExitCode::from(2)
        })
}

/// `flow runs`: the latest runs, newest first.
pub fn list(store: &dyn StateStore, workflow: Option<&str>, limit: usize, json: bool) -> Result<ExitCode> {
    let runs = match store.runs(workflow, limit) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        outln!("{}", serde_json::to_string_pretty(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        outln!("no runs yet");
    }
    for r in &runs {
        let duration = r
            .report
            .as_ref()
            .and_then(|rep| rep["duration_ms"].as_u64())
            .map(|ms| format!("{:.2}s", ms as f64 / 1000.0))
            .unwrap_or_else(|| "-".into());
        outln!(
            "{:<22} {:<12} {:<24} {:<25} {:>9}{}",
            r.id,
            r.status,
            r.workflow,
            r.started_at,
            duration,
            r.resumed_from
                .as_deref()
                .map(|f| format!("  (resumes {f})"))
                .unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `flow runs show <id>`: one run's steps, counts, durations and errors.
pub fn show(store: &dyn StateStore, id: &str, json: bool) -> Result<ExitCode> {
    let run = match store.run(id) {
        Ok(Some(r)) => r,
        Ok(None) => {
            eprintln!("error: no run `{id}`; `flow runs` lists them");
            return Ok(ExitCode::from(2));
        }
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let checkpoints = store.checkpoints(id).unwrap_or_default();
    if json {
        let mut shown = serde_json::to_value(&run)?;
        shown["checkpoints"] = serde_json::to_value(&checkpoints)?;
        outln!("{}", serde_json::to_string_pretty(&shown)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("run       {}", run.id);
    outln!("workflow  {} ({})", run.workflow, run.file);
    outln!("status    {}", run.status);
    outln!("started   {}", run.started_at);
    if let Some(end) = &run.ended_at {
        outln!("ended     {end}");
    }
    if let Some(from) = &run.resumed_from {
        outln!("resumes   {from}");
    }
    if run.inputs.as_object().is_some_and(|o| !o.is_empty()) {
        outln!("inputs    {}", run.inputs);
    }
    if let Some(steps) = run.report.as_ref().and_then(|r| r["steps"].as_object()) {
        outln!("steps:");
        for (name, s) in steps {
            let mut extra = Vec::new();
            for field in ["rejected", "failed", "skipped", "uncertain"] {
                if let Some(n) = s[field].as_u64().filter(|n| *n > 0) {
                    extra.push(format!("{n} {field}"));
                }
            }
            outln!(
                "  {:<10} {:<20} {:>8}  {:>7.2}s{}",
                s["status"].as_str().unwrap_or("?"),
                name,
                s["count"].as_u64().unwrap_or(0),
                s["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0,
                if extra.is_empty() {
                    String::new()
                } else {
                    format!("  ({})", extra.join(", "))
                }
            );
            if let Some(e) = s["error"].as_str() {
                outln!("             {e}");
            }
        }
    }
    if let Some(e) = &run.error {
        outln!("error     {e}");
    }
    if run.status != "succeeded" && !checkpoints.is_empty() {
        outln!("checkpoints (a resumed run reads on after these pages):");
        for c in &checkpoints {
            outln!("  {:<20} {} page(s) handled", c.step, c.pages);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `flow state show <workflow>`: cursors and write keys.
pub fn show_state(store: &dyn StateStore, workflow: &str, json: bool) -> Result<ExitCode> {
    let (cursors, keys) = match (store.cursors(workflow), store.key_counts(workflow)) {
        (Ok(c), Ok(k)) => (c, k),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::from(1));
        }
    };
    if json {
        let doc = serde_json::json!({"workflow": workflow, "cursors": cursors, "writes": keys});
        outln!("{}", serde_json::to_string_pretty(&doc)?);
        return Ok(ExitCode::SUCCESS);
    }
    outln!("workflow {workflow}");
    if cursors.is_empty() && keys.is_empty() {
        outln!("  nothing remembered yet");
    }
    for c in &cursors {
        outln!("  cursor  {:<20} {}  (moved {})", c.step, c.value, c.updated_at);
    }
    for k in &keys {
        outln!("  writes  {:<20} {} done, {} uncertain", k.step, k.done, k.uncertain);
    }
    Ok(ExitCode::SUCCESS)
}

/// `flow state reset <workflow>`: rewinds cursors and forgets the write
/// keys `keys` names.
pub fn reset(
    store: &dyn StateStore,
    workflow: &str,
    step: Option<&str>,
    keys: flow_core::state::ForgetKeys,
) -> Result<ExitCode> {
    match store.reset(workflow, step, keys) {
        Ok((c, k)) => {
            outln!("reset {workflow}: {c} cursor(s) rewound, {k} write key(s) forgotten");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

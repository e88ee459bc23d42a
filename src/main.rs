//! The `flow` command: a thin layer over the `flow-core` engine that parses
//! arguments, sets up logging, prints results and maps them to exit codes
//! (0 success, 1 the run failed, 2 bad usage or an invalid file, 130 or 143
//! a run stopped by Ctrl-C or SIGTERM).

/// `println!` for what flow prints on stdout: when the reader has gone
/// (`flow runs | head`), the rest is dropped instead of failing in a print.
/// SIGPIPE stays ignored, so a server that hangs up is an error flow
/// reports rather than a signal that ends it.
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::print_line(format_args!($($arg)*))
    };
}

mod output;
mod providers;
mod sandbox;
mod state;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use flow_core::provider::Registry;
use flow_core::state::StateStore;
use flow_core::{Diagnostics, RunOptions, RunStatus};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

/// Run declarative integration workflows: YAML steps that call HTTP APIs,
/// map records with sandboxed Lua, and write them out.
#[derive(Parser)]
#[command(name = "flow", version, about, propagate_version = true)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    /// A folder of provider descriptors that add to or replace the bundled
    /// ones (also FLOW_PROVIDERS_PATH).
    #[arg(long, global = true, value_name = "DIR")]
    providers: Vec<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a workflow.
    Run(RunArgs),
    /// Check workflow and provider files offline, without running anything.
    Validate {
        /// The files to check.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List providers and their actions.
    Providers {
        #[command(subcommand)]
        show: Option<ProvidersCommand>,
        /// How to print.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Call one provider action and print its records as JSON lines.
    Call(CallArgs),
    /// Run strict local simulators of the bundled providers' APIs.
    Sandbox(sandbox::SandboxArgs),
    /// List past runs, or show one.
    Runs {
        #[command(subcommand)]
        show: Option<RunsCommand>,
        /// Only the runs of this workflow file (and its state store).
        #[arg(long, value_name = "FILE")]
        workflow: Option<PathBuf>,
        /// How many runs to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
        /// The state store (default: `.flow/state.db` beside the workflow, or here).
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
        /// How to print.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Inspect or rewind what a workflow remembers: cursors and write keys.
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Print the JSON Schema of the workflow file format (for editors).
    Schema {
        /// The schema of provider descriptors instead.
        #[arg(long)]
        descriptor: bool,
    },
    /// Print shell completions.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum ProvidersCommand {
    /// A provider's config and actions with their parameters.
    Show {
        /// The provider.
        name: String,
        /// How to print.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
}

#[derive(Subcommand)]
enum RunsCommand {
    /// One run's steps, counts, durations and errors.
    Show {
        /// The run's ID (or a unique start of it).
        id: String,
        /// The state store (default: `.flow/state.db` here).
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
        /// How to print.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
}

#[derive(Subcommand)]
enum StateCommand {
    /// The cursors and completed writes of a workflow.
    Show {
        /// The workflow file.
        workflow: PathBuf,
        /// The state store (default: `.flow/state.db` beside the workflow).
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
        /// How to print.
        #[arg(short, long, value_enum, default_value_t = OutputFormat::Human)]
        output: OutputFormat,
    },
    /// Rewind cursors (the next run reads from the start again) and, with
    /// `--uncertain`, forget uncertain writes (the next run sends them) or,
    /// with `--keys`, all writes (the next run sends every one again).
    Reset {
        /// The workflow file.
        workflow: PathBuf,
        /// Only this step.
        #[arg(long)]
        step: Option<String>,
        /// Forget the idempotency keys of completed and uncertain writes too:
        /// the next run sends every write again.
        #[arg(long, conflicts_with = "uncertain")]
        keys: bool,
        /// Forget only the keys of uncertain writes (checked in the API and
        /// found missing): the next run sends those, and skips completed ones.
        #[arg(long)]
        uncertain: bool,
        /// The state store (default: `.flow/state.db` beside the workflow).
        #[arg(long, value_name = "PATH")]
        state: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct CallArgs {
    /// `<provider>.<action>`.
    target: String,
    /// A parameter: `--param key=value` (a value that parses as JSON is sent as JSON;
    /// a text parameter takes it as typed, unless it is a quoted JSON string).
    #[arg(short, long = "param", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    params: Vec<(String, String)>,
    /// A config value: `--config key=value`; otherwise FLOW_<PROVIDER>_<KEY> from the environment.
    #[arg(short, long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// The base URL (otherwise FLOW_<PROVIDER>_BASE_URL, otherwise the provider's).
    #[arg(long)]
    base_url: Option<String>,
}

#[derive(clap::Args)]
struct RunArgs {
    /// The workflow file.
    file: PathBuf,
    /// Set an input: `--input key=value` (repeatable).
    #[arg(short, long = "input", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    inputs: Vec<(String, String)>,
    /// Read variables and secrets from this file instead of the `.env` next to the workflow.
    #[arg(long, value_name = "FILE")]
    env_file: Option<PathBuf>,
    /// How to print the result.
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Human)]
    output: OutputFormat,
    /// Print the first request each `call` step would send, send nothing and
    /// write no files.
    #[arg(long)]
    dry_run: bool,
    /// Start the bundled simulators in-process and point every connection
    /// of a bundled provider at them, with their credentials.
    #[arg(long)]
    sandbox: bool,
    /// The state store: run history, cursors, completed writes (also
    /// FLOW_STATE; default `.flow/state.db` beside the workflow).
    #[arg(long, value_name = "PATH")]
    state: Option<PathBuf>,
    /// Remember nothing: no history, cursors or write keys.
    #[arg(long, conflicts_with_all = ["state", "resume"])]
    no_state: bool,
    /// Continue the last failed or interrupted run (or the one given as
    /// `--resume=RUN_ID`) with its inputs: completed writes with a `key` are
    /// skipped, cursors start where it did.
    #[arg(long, value_name = "RUN_ID", num_args = 0..=1, default_missing_value = "", require_equals = true)]
    resume: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum OutputFormat {
    /// A line per step, for people.
    Human,
    /// One JSON document at the end.
    Json,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("`{s}` should look like key=value")),
    }
}

/// Keeps glibc's allocator compact: few arenas (flow's threads mostly pass
/// buffers to one another) and page-sized buffers (an API answer, a batch of
/// records) mapped and returned whole, so that memory stays flat however
/// many pages pass instead of fragmenting the heap.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only changes allocator settings; it is called once, at
    // start, before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    output::init_logging(cli.verbose, cli.quiet);
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("error: {}", flow_core::secrets::mask(&format!("{e:#}")));
            ExitCode::from(1)
        }
    }
}

fn invalid(d: &Diagnostics) -> ExitCode {
    eprintln!("{}", flow_core::secrets::mask(&d.to_string()));
    ExitCode::from(2)
}

/// [`invalid`] for `-o json`: the problems also go to stdout as a report,
/// so that a caller reading JSON learns why there is no run.
fn invalid_json(file: &std::path::Path, d: &Diagnostics) -> ExitCode {
    let errors: Vec<serde_json::Value> =
        d.0.iter()
            .map(|e| {
                serde_json::json!({
                    "file": e.file.display().to_string(),
                    "line": e.line,
                    "column": e.column,
                    "path": e.path,
                    "message": e.message,
                    "hint": e.hint,
                })
            })
            .collect();
    let doc = serde_json::json!({"file": file.display().to_string(), "status": "invalid", "errors": errors});
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    outln!("{}", flow_core::secrets::mask(&text));
    invalid(d)
}

fn registry(extra: &[PathBuf]) -> Result<Arc<Registry>, Diagnostics> {
    let mut dirs = Registry::dirs_from_env();
    dirs.extend(extra.iter().cloned());
    Registry::load(&dirs).map(Arc::new)
}

/// True when a YAML file is a provider descriptor rather than a workflow:
/// it has `actions` and no `steps`. A file YAML cannot read is told by its
/// top-level keys as written, so that its errors are a descriptor's.
fn is_descriptor(path: &std::path::Path) -> bool {
    let Ok(text) = std::fs::read_to_string(path) else {
        return false;
    };
    match serde_yaml::from_str::<serde_yaml::Value>(&text) {
        Ok(v) => v.get("actions").is_some() && v.get("steps").is_none(),
        Err(_) => {
            let top = |key: &str| {
                text.lines()
                    .any(|l| l.strip_prefix(key).is_some_and(|r| r.trim_start().starts_with(':')))
            };
            top("actions") && !top("steps")
        }
    }
}

fn dispatch(cli: Cli) -> Result<ExitCode> {
    let registry = match registry(&cli.providers) {
        Ok(r) => r,
        Err(d) => return Ok(invalid(&d)),
    };
    match cli.command {
        Command::Run(args) => run(args, registry),
        Command::Validate { files } => {
            let mut ok = true;
            for file in &files {
                let result = if is_descriptor(file) {
                    flow_core::provider::load_descriptor(file).map(|_| ())
                } else {
                    flow_core::workflow::load_workflow_with(file, Arc::clone(&registry)).map(|_| ())
                };
                match result {
                    Ok(()) => outln!("ok: {}", file.display()),
                    Err(d) => {
                        ok = false;
                        eprintln!("{d}");
                    }
                }
            }
            Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(2) })
        }
        Command::Providers { show: None, output } => {
            providers::list(&registry, output == OutputFormat::Json)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Providers {
            show: Some(ProvidersCommand::Show { name, output }),
            ..
        } => {
            match registry.require(&name) {
                Ok(d) => providers::show(d, output == OutputFormat::Json)?,
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sandbox(args) => sandbox::serve(args),
        Command::Runs {
            show: Some(RunsCommand::Show { id, state, output }),
            ..
        } => {
            let store = match state::open_existing(&state::path(state.as_deref(), None, false)) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            state::show(&store, &id, output == OutputFormat::Json)
        }
        Command::Runs {
            show: None,
            workflow,
            limit,
            state,
            output,
        } => {
            let name = match workflow.as_deref().map(state::workflow_name).transpose() {
                Ok(n) => n,
                Err(code) => return Ok(code),
            };
            let store = match state::open_existing(&state::path(state.as_deref(), workflow.as_deref(), false)) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            state::list(&store, name.as_deref(), limit, output == OutputFormat::Json)
        }
        Command::State { command } => {
            let (file, explicit) = match &command {
                StateCommand::Show { workflow, state, .. } | StateCommand::Reset { workflow, state, .. } => {
                    (workflow.clone(), state.clone())
                }
            };
            let name = match state::workflow_name(&file) {
                Ok(n) => n,
                Err(code) => return Ok(code),
            };
            let store = match state::open_existing(&state::path(explicit.as_deref(), Some(&file), false)) {
                Ok(s) => s,
                Err(code) => return Ok(code),
            };
            match command {
                StateCommand::Show { output, .. } => state::show_state(&store, &name, output == OutputFormat::Json),
                StateCommand::Reset {
                    step, keys, uncertain, ..
                } => {
                    use flow_core::state::ForgetKeys;
                    if let Some(step) = &step {
                        let ids = state::step_ids(&file);
                        if !ids.iter().any(|id| id == step) {
                            eprintln!(
                                "error: {} has no step `{step}`; its steps are {}",
                                file.display(),
                                ids.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
                            );
                            return Ok(ExitCode::from(2));
                        }
                    }
                    let forget = match (keys, uncertain) {
                        (true, _) => ForgetKeys::All,
                        (false, true) => ForgetKeys::Uncertain,
                        (false, false) => ForgetKeys::None,
                    };
                    state::reset(&store, &name, step.as_deref(), forget)
                }
            }
        }
        Command::Call(args) => providers::call(&registry, args.target, args.params, args.config, args.base_url),
        Command::Schema { descriptor } => {
            let schema = if descriptor {
                flow_core::provider::schema()
            } else {
                flow_core::workflow::schema()
            };
            outln!("{}", serde_json::to_string_pretty(&schema)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "flow", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn run(args: RunArgs, registry: Arc<Registry>) -> Result<ExitCode> {
    let human = args.output == OutputFormat::Human;
    let refused = |d: &Diagnostics| {
        if human {
            invalid(d)
        } else {
            invalid_json(&args.file, d)
        }
    };
    let lw = match flow_core::workflow::load_workflow_with(&args.file, registry) {
        Ok(lw) => Arc::new(lw),
        Err(d) => return Ok(refused(&d)),
    };
    let display = Arc::new(output::Display::new(human));
    let mut inputs = args.inputs;
    let mut store: Option<Arc<dyn flow_core::state::StateStore>> = None;
    let mut resumed_from = None;
    if !args.no_state && !args.dry_run {
        let path = state::path(args.state.as_deref(), Some(&args.file), args.sandbox);
        let opened = match state::try_open(&path) {
            Ok(s) => s,
            Err((code, message)) => {
                let hint = "keep the store elsewhere with --state <file>, or run without one with --no-state (no history, cursors or write keys)";
                eprintln!("error: {message}\n  hint: {hint}");
                if !human {
                    // A caller reading JSON learns why there is no run.
                    let doc = serde_json::json!({
                        "file": args.file.display().to_string(),
                        "status": "error",
                        "errors": [{"message": message, "hint": hint}],
                    });
                    outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
                }
                return Ok(code);
            }
        };
        if let Some(wanted) = &args.resume {
            // A run whose process died is resumable.
            if let Err(e) = opened.mark_interrupted() {
                eprintln!("error: {e}");
                return Ok(ExitCode::from(1));
            }
            let found = if wanted.is_empty() {
                opened.resumable(&lw.workflow.name)
            } else {
                opened.run(wanted)
            };
            let previous = match found {
                Ok(Some(r)) if r.workflow == lw.workflow.name => r,
                Ok(Some(r)) => {
                    eprintln!(
                        "error: run {} belongs to workflow `{}`, not `{}`",
                        r.id, r.workflow, lw.workflow.name
                    );
                    return Ok(ExitCode::from(2));
                }
                Ok(None) if wanted.is_empty() => {
                    use flow_core::state::StateStore;
                    let last = opened
                        .runs(Some(&lw.workflow.name), 1)
                        .ok()
                        .and_then(|r| r.into_iter().next());
                    match last.filter(|r| r.status == "running") {
                        Some(r) => eprintln!(
                            "error: nothing to resume: the last run of `{}` ({}) is still running, as far as its process can be seen; wait for it to end (a process just killed may take a moment to go), or see `flow runs`",
                            lw.workflow.name, r.id
                        ),
                        None => eprintln!(
                            "error: nothing to resume: the last run of `{}` did not fail (see `flow runs`)",
                            lw.workflow.name
                        ),
                    }
                    return Ok(ExitCode::from(2));
                }
                Ok(None) => {
                    eprintln!("error: no run `{wanted}`; `flow runs` lists them");
                    return Ok(ExitCode::from(2));
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            // Its inputs, unless given again on the command line.
            for (k, v) in previous.inputs.as_object().into_iter().flatten() {
                if inputs.iter().any(|(name, _)| name == k) {
                    continue;
                }
                let text = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if text.contains(flow_core::secrets::MASK) {
                    eprintln!("error: input `{k}` of run {} held a secret, which is never stored; give it again with -i {k}=...", previous.id);
                    return Ok(ExitCode::from(2));
                }
                inputs.push((k.clone(), text));
            }
            resumed_from = Some(previous.id);
        }
        store = Some(Arc::new(opened));
    }
    let opts = RunOptions {
        inputs,
        env_file: args.env_file,
        observer: display.clone(),
        dry_run: args.dry_run,
        overrides: Default::default(),
        state: store,
        resumed_from,
        stop: Some(Box::pin(stop_requested())),
    };
    let cores = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(lw.runtime_threads(cores))
        .enable_all()
        .build()?;
    let mut opts = opts;
    if args.sandbox {
        let sims = runtime.block_on(flow_sandbox::start(
            &sandbox::SandboxArgs::default().options().unwrap_or_default(),
        ));
        match sims {
            Ok(sims) => opts.overrides = sandbox::overrides(&sims),
            Err(e) => anyhow::bail!("cannot start the simulators: {e}"),
        }
    }
    let result = runtime.block_on(flow_core::workflow::run(lw, opts));
    // The run has kept what it keeps (files, state, its history) by the
    // time it returns. What is left (idle threads, work a failed run left
    // behind) ends with the process, which is not kept waiting for it.
    runtime.shutdown_background();
    let report = match result {
        Ok(r) => r,
        Err(d) => return Ok(refused(&d)),
    };
    display.finish();
    if human {
        output::print_human(&report);
    } else {
        let text = serde_json::to_string_pretty(&report)?;
        outln!("{}", flow_core::secrets::mask(&text));
        if let Some(e) = &report.error {
            eprintln!("error: {}: {}", report.file, flow_core::secrets::mask(e));
        }
    }
    Ok(match report.status {
        RunStatus::Succeeded => ExitCode::SUCCESS,
        RunStatus::Failed => ExitCode::from(1),
        RunStatus::Interrupted => ExitCode::from(STOPPED_BY.load(std::sync::atomic::Ordering::Relaxed)),
    })
}

/// The exit code of a run stopped by a signal: 128 and its number.
static STOPPED_BY: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(130);

/// Resolves, naming the signal, when the process is asked to stop (Ctrl-C
/// or SIGTERM); a second such request ends it at once.
async fn stop_requested() -> String {
    let (why, code) = next_stop_signal().await;
    STOPPED_BY.store(code, std::sync::atomic::Ordering::Relaxed);
    tokio::spawn(async {
        let (again, code) = next_stop_signal().await;
        eprintln!("{again} again: stopping now, without waiting for the requests under way");
        std::process::exit(i32::from(code));
    });
    why
}

async fn next_stop_signal() -> (String, u8) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            return tokio::select! {
                _ = tokio::signal::ctrl_c() => ("Ctrl-C".to_owned(), 130),
                _ = term.recv() => ("SIGTERM".to_owned(), 143),
            };
        }
    }
    match tokio::signal::ctrl_c().await {
        Ok(()) => ("Ctrl-C".to_owned(), 130),
        // No way to hear signals: never asked to stop.
        Err(_) => std::future::pending().await,
    }
}

//! What `flow` prints: log lines on stderr with secrets masked, progress
//! bars on a terminal, one line per step and a summary for people.

use flow_core::workflow::{Observer, RunReport, StepReport, StepStatus};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

/// Stderr with every registered secret masked.
struct MaskedStderr;

impl Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        std::io::stderr().write_all(flow_core::secrets::mask(&text).as_bytes())?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Logs to stderr: warnings and script logs by default, more with -v.
pub fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (_, 0) => "warn,flow::script=info",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    let from_env = std::env::var("RUST_LOG").ok().filter(|v| !v.trim().is_empty());
    let filter = from_env
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| MaskedStderr)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Shows steps as they run.
pub struct Display {
    bars: Option<(MultiProgress, Mutex<HashMap<String, ProgressBar>>)>,
    human: bool,
}

impl Display {
    pub fn new(human: bool) -> Self {
        let bars = (human && std::io::stdout().is_terminal()).then(|| {
            (
                MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
                Mutex::new(HashMap::new()),
            )
        });
        Display { bars, human }
    }

    pub fn finish(&self) {
        if let Some((mp, _)) = &self.bars {
            let _ = mp.clear();
        }
    }

    fn line(&self, text: String) {
        match &self.bars {
            Some((mp, _)) => {
                let _ = mp.println(text);
            }
            None => outln!("{text}"),
        }
    }
}

fn symbol(status: StepStatus) -> &'static str {
    match status {
        StepStatus::Succeeded => "ok",
        StepStatus::Failed => "FAILED",
        StepStatus::Skipped => "skipped",
        StepStatus::Cancelled => "cancelled",
        StepStatus::Pending | StepStatus::Running => "...",
    }
}

fn seconds(ms: u64) -> String {
    format!("{:.2}s", ms as f64 / 1000.0)
}

fn step_line(id: &str, r: &StepReport) -> String {
    let what = match r.kind {
        "for_each" => format!("{} items", r.count),
        _ => format!("{} records", r.count),
    };
    let mut line = format!(
        "{:<9} {:<16} {:<8} {:>16}  {}",
        symbol(r.status),
        id,
        r.kind,
        what,
        seconds(r.duration_ms)
    );
    if r.rejected > 0 {
        line.push_str(&format!("  ({} rejected)", r.rejected));
    }
    if r.failed > 0 {
        line.push_str(&format!("  ({} failed)", r.failed));
    }
    if r.skipped > 0 {
        line.push_str(&format!("  ({} already done, skipped)", r.skipped));
    }
    if r.uncertain > 0 {
        line.push_str(&format!(
            "  ({} uncertain: may have been applied, not sent again)",
            r.uncertain
        ));
    }
    if let Some(e) = &r.error {
        line.push_str(&format!("\n          {}", flow_core::secrets::mask(e)));
    }
    line
}

impl Observer for Display {
    fn step_started(&self, id: &str, kind: &str) {
        if let Some((mp, bars)) = &self.bars {
            let bar = mp.add(ProgressBar::new_spinner());
            let style =
                ProgressStyle::with_template("{spinner} {prefix:<16} {msg:<8} {human_pos:>10} records  {per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner());
            bar.set_style(style);
            bar.set_prefix(id.to_owned());
            bar.set_message(kind.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            if let Ok(mut b) = bars.lock() {
                b.insert(id.to_owned(), bar);
            }
        }
    }

    fn step_progress(&self, id: &str, count: u64) {
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.lock().ok().and_then(|b| b.get(id).cloned()) {
                bar.set_position(count);
            }
        }
    }

    fn step_finished(&self, id: &str, report: &StepReport) {
        if let Some((_, bars)) = &self.bars {
            if let Some(bar) = bars.lock().ok().and_then(|mut b| b.remove(id)) {
                bar.finish_and_clear();
            }
        }
        if self.human {
            self.line(step_line(id, report));
        }
    }
}

/// The end of a run, for people.
pub fn print_human(report: &RunReport) {
    // Steps that never started were not printed as they finished.
    for (id, r) in &report.steps {
        if matches!(r.status, StepStatus::Pending) {
            outln!("{}", step_line(id, r));
        }
    }
    if !report.outputs.is_empty() {
        outln!("outputs:");
        for (k, v) in &report.outputs {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            outln!("  {k}: {}", flow_core::secrets::mask(&text));
        }
    }
    let id = report
        .run_id
        .as_deref()
        .map(|id| format!(" (run {id})"))
        .unwrap_or_default();
    match &report.error {
        None => outln!("run succeeded in {}{id}", seconds(report.duration_ms)),
        Some(e) if report.status == flow_core::RunStatus::Interrupted => {
            outln!("run interrupted after {}{id}", seconds(report.duration_ms));
            let resume = if report.run_id.is_some() {
                "; `flow run <file> --resume` goes on from here"
            } else {
                ""
            };
            eprintln!("{}: {}{resume}", report.file, flow_core::secrets::mask(e));
        }
        Some(e) => {
            outln!("run failed in {}{id}", seconds(report.duration_ms));
            eprintln!("error: {}: {}", report.file, flow_core::secrets::mask(e));
        }
    }
}

/// Prints a line on stdout for [`outln!`]. A reader that has gone
/// (`flow run ... | head -1`) gets nothing more, and whatever runs goes on
/// to its end: a run is not cut short, its writes half done, for want of
/// someone reading its progress.
pub fn print_line(args: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{args}");
}

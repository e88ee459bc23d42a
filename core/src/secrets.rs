//! Environment variables and secrets, and the masking that keeps secret
//! values out of logs, errors, summaries and state.
//!
//! Values come from the process environment and from a `.env` file (next to
//! the workflow, or named with `--env-file`); the process environment wins.
//! Every value a workflow reads through `secrets.NAME` is registered here and
//! replaced by `***` wherever flow prints text.

use crate::{Diagnostic, Diagnostics};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::RwLock;

static MASKED: RwLock<Vec<String>> = RwLock::new(Vec::new());

/// The shortest value that is masked; shorter ones would mask ordinary text.
const MIN_MASKED_LEN: usize = 4;

/// Registers a secret value so that it is masked from now on, in the forms
/// it takes on its way to a server and back: as it is, in a query string or
/// form body (`+` or `%20` for a space), in a URL path, and inside a JSON
/// string (as serde and as PHP's `json_encode` escape it).
pub fn register(value: &str) {
    if value.len() < MIN_MASKED_LEN {
        return;
    }
    if let Ok(mut list) = MASKED.write() {
        for form in forms(value) {
            if !list.contains(&form) {
                list.push(form);
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        list.sort_by_key(|v| std::cmp::Reverse(v.len()));
    }
}

/// `value` and the texts it becomes once encoded, each once.
fn forms(value: &str) -> Vec<String> {
    let query = crate::php::urlencode(value);
    // A `+` in the value is `%2B` in `query`: only spaces are `+`.
    let raw = query.replace('+', "%20");
    let mut path = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b' ' | b'"' | b'#' | b'<' | b'>' | b'?' | b'`' | b'{' | b'}' | 0..=0x1f | 0x7f.. => {
                path.push_str(&format!("%{b:02X}"));
            }
            _ => path.push(b as char),
        }
    }
    let json = serde_json::to_string(value).unwrap_or_default();
    let json = json.get(1..json.len().saturating_sub(1)).unwrap_or_default().to_owned();
    let mut php_json = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '/' => php_json.push_str("\\/"),
            c if c.is_ascii() => php_json.push(c),
            c => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    php_json.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    let mut all: Vec<String> = Vec::with_capacity(6);
    for form in [value.to_owned(), query, raw, path, json, php_json] {
        if !form.is_empty() && !all.contains(&form) {
            all.push(form);
        }
    }
    all
}

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Text with every registered secret replaced by [`MASK`].
pub fn mask(text: &str) -> String {
    let Ok(list) = MASKED.read() else {
        return text.to_owned();
    };
    let mut out = text.to_owned();
    for secret in list.iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), MASK);
        }
    }
    out
}

/// Loads the variables a workflow sees: the `.env` file (the one given, or
/// `.env` in `dir` if present) overlaid by the process environment.
pub fn load_env(env_file: Option<&Path>, dir: &Path) -> Result<BTreeMap<String, String>, Diagnostics> {
    let mut vars = BTreeMap::new();
    let file = match env_file {
        Some(f) => Some(f.to_path_buf()),
        None => Some(dir.join(".env")).filter(|p| p.is_file()),
    };
    if let Some(file) = file {
        let iter = dotenvy::from_path_iter(&file).map_err(|e| {
            Diagnostic::new(&file, format!("cannot read the env file: {}", plain_dotenv_error(&e)))
                .hint("pass an existing file with --env-file, or remove the option")
        })?;
        for item in iter {
            let (k, v) = item.map_err(|e| match &e {
                dotenvy::Error::LineParse(text, _) => unparsed_line(&file, text),
                _ => Diagnostic::new(&file, plain_dotenv_error(&e)),
            })?;
            vars.insert(k, v);
        }
    }
    for (k, v) in std::env::vars() {
        vars.insert(k, v);
    }
    Ok(vars)
}

/// A line of an env file that is not `KEY=value`, placed by its line number
/// and named by its key: the rest of it is not shown, as it may be a secret
/// (or, after a quote left open, every line to the end of the file).
fn unparsed_line(file: &Path, text: &str) -> Diagnostic {
    let whole = std::fs::read_to_string(file).unwrap_or_default();
    // The line that is the text the reader gave, or else the first that
    // holds it (the text may start at the value).
    let first_line = text.lines().next().unwrap_or("").trim();
    let line = whole
        .lines()
        .position(|l| !first_line.is_empty() && l.trim() == first_line)
        .map(|i| i + 1)
        .or_else(|| whole.find(text).map(|at| whole[..at].matches('\n').count() + 1));
    let d = Diagnostic::new(
        file,
        "a line is not `KEY=value`; its text is not shown, as it may hold a secret",
    )
    .hint("write KEY=value, quote a value that has spaces or `#`, and close every quote");
    match line {
        Some(n) => d.line_col(n, 1),
        None => d,
    }
}

fn plain_dotenv_error(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(_, _) => "a line is not `KEY=value`".to_owned(),
        dotenvy::Error::Io(io) => io.to_string(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_env_line_that_does_not_parse_is_placed_but_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        for (text, line) in [
            ("FOO=1\nROISTAT_API_KEY: sk-live-abcdef123456\n", 2),
            ("A=1\n\nSEC=\"sk-live-abcdef123456\nB=2\n", 3),
            ("A=1\nAPI_KEY=sk-live-abcdef123456${X\n", 2),
            ("A=1\nsk-live-abcdef123456\n", 2),
            ("X=sk-live-abcdef123456\nsk-live-abcdef123456\n", 2),
        ] {
            let file = dir.path().join(".env");
            std::fs::write(&file, text).unwrap();
            let err = load_env(Some(&file), dir.path()).unwrap_err().to_string();
            assert!(!err.contains("sk-live"), "{err}");
            assert!(err.contains(&format!(".env:{line}:")), "{text:?}: {err}");
        }
    }

    #[test]
    fn a_secret_is_masked_in_the_forms_it_is_sent_and_echoed_in() {
        register("pa ss+w/\"rd-Жж");
        for text in [
            "pa ss+w/\"rd-Жж",
            "?key=pa+ss%2Bw%2F%22rd-%D0%96%D0%B6&x=1",
            "?key=pa%20ss%2Bw%2F%22rd-%D0%96%D0%B6&x=1",
            "/v1/pa%20ss+w/%22rd-%D0%96%D0%B6/items",
            r#"{"key":"pa ss+w/\"rd-Жж"}"#,
            r#"{"key":"pa ss+w\/\"rd-\u0416\u0436"}"#,
        ] {
            let masked = mask(text);
            assert!(masked.contains(MASK), "{text} -> {masked}");
            for part in ["ss", "rd-"] {
                assert!(!masked.contains(part), "{text} -> {masked}");
            }
        }
    }

    #[test]
    fn masks_registered_values_only() {
        register("s3cr3t-value");
        register("abc"); // too short to mask
        assert_eq!(mask("token=s3cr3t-value&x=abc"), "token=***&x=abc");
    }

    #[test]
    fn env_file_is_read_and_environment_wins() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".env"), "FLOW_TEST_ONLY_IN_FILE=from-file\nPATH=nope\n").unwrap();
        let vars = load_env(None, dir.path()).unwrap();
        assert_eq!(
            vars.get("FLOW_TEST_ONLY_IN_FILE").map(String::as_str),
            Some("from-file")
        );
        assert_ne!(vars.get("PATH").map(String::as_str), Some("nope"));
        let err = load_env(Some(&dir.path().join("missing.env")), dir.path()).unwrap_err();
        assert!(err.to_string().contains("missing.env"), "{err}");
    }
}

//! Problems found in a user's file, reported the way a compiler would:
//! the file, the line and column where known, the path inside the document
//! (`steps[2].lua`), what is wrong and what to do about it.

use std::fmt;
use std::path::{Path, PathBuf};

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file the problem is in.
    pub file: PathBuf,
    /// 1-based line, when the problem can be placed.
    pub line: Option<usize>,
    /// 1-based column, when the problem can be placed.
    pub column: Option<usize>,
    /// Path inside the document, such as `steps[2].with.phone`.
    pub path: Option<String>,
    /// What is wrong, as a sentence.
    pub message: String,
    /// What to do about it, when there is something to suggest.
    pub hint: Option<String>,
}

impl Diagnostic {
    /// A problem with the file as a whole.
    pub fn new(file: &Path, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line: None,
            column: None,
            path: None,
            message: message.into(),
            hint: None,
        }
    }

    /// Places the problem at a path inside the document.
    pub fn at(mut self, path: impl Into<String>) -> Self {
        let path = path.into();
        if !path.is_empty() {
            self.path = Some(path);
        }
        self
    }

    /// Places the problem at a line and column.
    pub fn line_col(mut self, line: usize, column: usize) -> Self {
        self.line = Some(line);
        self.column = Some(column);
        self
    }

    /// Adds a suggestion.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        write!(f, ": ")?;
        if let Some(path) = &self.path {
            write!(f, "{path}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// Every problem found in one check, in the order found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds a problem.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl From<Diagnostic> for Diagnostics {
    fn from(d: Diagnostic) -> Self {
        Diagnostics(vec![d])
    }
}

/// An I/O error as a clause of a sentence: "permission denied", without
/// the operating system's error number.
pub fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// The closest of `candidates` to a mistyped `word`, if one is close enough
/// to be worth suggesting.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.78)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// A hint for a name that is not one of `candidates`: the closest one, or
/// else the whole list (`what` names it: "the steps are").
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str> + Clone, what: &str) -> String {
    match did_you_mean(word, candidates.clone()) {
        Some(s) => format!("did you mean `{s}`?"),
        None => {
            let all: Vec<&str> = candidates.into_iter().collect();
            if all.is_empty() {
                format!("{what}: none")
            } else {
                format!("{what}: {}", all.join(", "))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_words_only() {
        let keys = ["read", "lua", "write", "for_each"];
        assert_eq!(did_you_mean("wrte", keys), Some("write"));
        assert_eq!(did_you_mean("foreach", keys), Some("for_each"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }

    #[test]
    fn renders_file_line_path_and_hint() {
        let d = Diagnostic::new(Path::new("wf.yaml"), "unknown key `lue`")
            .at("steps[1]")
            .line_col(7, 5)
            .hint("did you mean `lua`?");
        assert_eq!(
            d.to_string(),
            "wf.yaml:7:5: steps[1]: unknown key `lue`\n  hint: did you mean `lua`?"
        );
    }
}

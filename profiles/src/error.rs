//! Errors for people: every problem names the file, the line and the field, and
//! says how to fix it.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One thing wrong with a cluster or secrets file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line and column; `None` when the problem is about the file as a whole.
    pub line: Option<(usize, usize)>,
    /// Dotted path of the field, e.g. `nodes[1].ip`.
    pub field: String,
    pub message: String,
    /// How to fix it, when there is something better to say than the message.
    pub hint: Option<String>,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((line, col)) = self.line {
            write!(f, ":{line}:{col}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)?;
        } else {
            write!(f, ": {}: {}", self.field, self.message)?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\n  fix: {hint}")?;
        }
        Ok(())
    }
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read at all.
    #[error("cannot read {}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file was read and has one or more problems, all reported together.
    #[error("{}", Problems(.0))]
    Invalid(Vec<Problem>),
    /// Writing a generated file failed.
    #[error("cannot write {}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Refusing to overwrite a file the user owns.
    #[error("{} already exists; picluster never overwrites it (move it away first)", .0.display())]
    Exists(PathBuf),
    /// The operating system's random source failed.
    #[error("cannot obtain random bytes for secrets: {0}")]
    Random(String),
}

impl Error {
    /// The problems, when this is a validation error.
    pub fn problems(&self) -> &[Problem] {
        match self {
            Error::Invalid(p) => p,
            _ => &[],
        }
    }
}

struct Problems<'a>(&'a [Problem]);

impl fmt::Display for Problems<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        if n > 1 {
            writeln!(f, "{n} problems found:")?;
        }
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// A text file being checked: turns byte spans into line/column and collects problems.
pub struct Source<'a> {
    pub path: &'a Path,
    pub text: &'a str,
    pub problems: Vec<Problem>,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Source {
            path,
            text,
            problems: Vec::new(),
        }
    }

    /// 1-based line and column of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
        (line, col)
    }

    /// Record a problem at a span (or for the whole file when `span` is `None`).
    pub fn report(
        &mut self,
        span: Option<Range<usize>>,
        field: impl Into<String>,
        message: impl Into<String>,
        hint: Option<String>,
    ) {
        let line = span.map(|s| self.line_col(s.start));
        self.problems.push(Problem {
            file: self.path.to_path_buf(),
            line,
            field: field.into(),
            message: message.into(),
            hint,
        });
    }

    /// Ok when nothing was reported, else all problems, sorted by position.
    pub fn finish(mut self) -> Result<(), Error> {
        if self.problems.is_empty() {
            return Ok(());
        }
        self.problems.sort_by_key(|p| p.line);
        Err(Error::Invalid(self.problems))
    }

    /// Convert a TOML syntax or type error into a problem with its position.
    pub fn toml_problem(&mut self, err: &toml::de::Error) {
        self.toml_problem_as(err, err.message().trim().to_string());
    }

    /// Like [`Source::toml_problem`] for files that hold secrets: the parser's
    /// message is kept only when it names keys alone, never a value.
    pub fn toml_problem_redacted(&mut self, err: &toml::de::Error) {
        self.toml_problem_as(err, redact(err.message().trim()));
    }

    fn toml_problem_as(&mut self, err: &toml::de::Error, message: String) {
        let span = err.span();
        let field = span
            .clone()
            .map(|s| key_before(self.text, s.start))
            .unwrap_or_default();
        let hint = if message.starts_with("unknown field") {
            Some("remove the key or fix its spelling; the keys this table accepts are listed in the message".to_string())
        } else {
            None
        };
        self.report(span, field, message, hint);
    }
}

/// A parser message about a file that holds secrets, with any value left out.
/// serde's "invalid type: string \"…\"" and "invalid value" messages quote the
/// value, and the value may be a token; messages about keys do not.
pub fn redact(message: &str) -> String {
    let names_keys_only = [
        "missing field",
        "unknown field",
        "duplicate key",
        "duplicate field",
    ]
    .iter()
    .any(|p| message.starts_with(p));
    if names_keys_only {
        message.to_string()
    } else {
        "this is not a valid value here (the parser's message is not shown: this file holds secrets)".to_string()
    }
}

/// A JSON parse error of a file that holds secrets: its position and what kind
/// of error it is, never the content (serde_json quotes offending values).
pub fn json_error_redacted(err: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match err.classify() {
        Category::Io => "cannot be read".to_string(),
        Category::Syntax => "is not valid JSON".to_string(),
        Category::Eof => "ends too early".to_string(),
        Category::Data => redact(&err.to_string()),
    };
    format!("line {}, column {}: {what}", err.line(), err.column())
}

/// The dotted field path (`network.prefx`, `nodes[2].ip`) of the key on the line
/// holding `offset`, for errors toml reports with a position but no path.
fn key_before(text: &str, offset: usize) -> String {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let end = text[offset..].find('\n').map_or(text.len(), |i| offset + i);
    let line = text[start..end].trim();
    let mut table = String::new();
    let mut arrays: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for l in text[..start].lines().map(str::trim) {
        if let Some(name) = l
            .strip_prefix("[[")
            .and_then(|r| r.split_once("]]"))
            .map(|(n, _)| n.trim())
        {
            let n = arrays
                .entry(name.to_string())
                .and_modify(|i| *i += 1)
                .or_insert(0);
            table = format!("{name}[{n}]");
        } else if let Some(name) = l
            .strip_prefix('[')
            .and_then(|r| r.split_once(']'))
            .map(|(n, _)| n.trim())
        {
            table = name.to_string();
        }
    }
    match line.split_once('=') {
        Some((key, _)) if !line.starts_with('[') => {
            let key = key.trim().trim_matches('"');
            if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            }
        }
        _ => table,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacted_errors_name_keys_but_never_values() {
        let e = serde_json::from_str::<std::collections::BTreeMap<String, u32>>(
            r#"{"token": "K10sekrit-value"}"#,
        )
        .unwrap_err();
        assert!(e.to_string().contains("sekrit"), "serde_json quotes values");
        let shown = json_error_redacted(&e);
        assert!(
            !shown.contains("sekrit") && shown.starts_with("line 1, column"),
            "{shown}"
        );
        #[derive(Debug, serde::Deserialize)]
        #[allow(dead_code)]
        struct T {
            k3s_token: u32,
        }
        let e = toml::from_str::<T>("k3s_token = \"sekrit-value\"\n").unwrap_err();
        assert!(e.message().contains("sekrit"), "toml quotes values");
        assert!(!redact(e.message()).contains("sekrit"));
        let e = toml::from_str::<T>("other = 1\n").unwrap_err();
        assert!(redact(e.message()).contains("k3s_token"), "keys are named");
    }

    #[test]
    fn line_col_counts_from_one() {
        let text = "a = 1\nbb = 2\n";
        let s = Source::new(Path::new("x.toml"), text);
        assert_eq!(s.line_col(0), (1, 1));
        assert_eq!(s.line_col(6), (2, 1));
        assert_eq!(s.line_col(11), (2, 6));
    }

    #[test]
    fn key_paths_follow_tables() {
        let text = "[cluster]\nname = 1\n[[nodes]]\nip = 1\n[[nodes]]\nipp = 2\n";
        assert_eq!(key_before(text, text.find("ipp").unwrap()), "nodes[1].ipp");
        assert_eq!(key_before(text, text.find("name").unwrap()), "cluster.name");
    }

    #[test]
    fn display_names_file_line_field_and_fix() {
        let p = Problem {
            file: "c.toml".into(),
            line: Some((3, 7)),
            field: "nodes[0].ip".into(),
            message: "bad".into(),
            hint: Some("use another".into()),
        };
        assert_eq!(
            p.to_string(),
            "c.toml:3:7: nodes[0].ip: bad\n  fix: use another"
        );
    }
}

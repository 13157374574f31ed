//! How a problem with the configuration is told: at which file, line and column, in one format,
//! `FILE:LINE:COLUMN: message`, whoever found it and wherever it is shown (stderr at start and for
//! `--check-config`, one log line on SIGHUP).
//!
//! [`render`] is the one place that format is written. This file finds no problem itself: the
//! schema check and `validate` find them, `load` gathers them.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};

/// One thing wrong with a configuration, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Problem {
    /// The problem `message` about the byte at `offset` of `text`.
    pub(super) fn at(text: &str, offset: usize, message: String) -> Problem {
        let (line, column) = line_column(text, offset);
        Problem {
            line,
            column,
            message,
        }
    }
}

/// A configuration file that could not be used: every problem found, each with its location.
#[derive(Debug)]
pub enum ConfigError {
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// Each problem as one `FILE:LINE:COLUMN: message` line, in file order.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Read { path, source } => {
                vec![render(path, None, format_args!("cannot read: {source}"))]
            }
            ConfigError::Invalid { path, problems } => problems
                .iter()
                .map(|p| render(path, Some((p.line, p.column)), &p.message))
                .collect(),
        }
    }

    /// Every problem on one line, `; ` between them: for a log, where one event is one line.
    pub fn one_line(&self) -> String {
        self.lines().join("; ")
    }
}

/// One problem a line, for a terminal.
impl Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.lines().join("\n"))
    }
}

impl std::error::Error for ConfigError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ConfigError::Read { source, .. } => Some(source),
            ConfigError::Invalid { .. } => None,
        }
    }
}

/// Where a loaded configuration came from: the file, and the line and column of each key's value,
/// so a problem found after validation (a certificate that does not load) still points at its line.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file given to [`Config::load`](super::Config::load); `None` for
    /// [`Config::from_toml`](super::Config::from_toml).
    pub path: Option<PathBuf>,
    /// `section.key` to (line, column), for the keys written in the file.
    pub(super) keys: BTreeMap<String, (usize, usize)>,
}

impl Origin {
    /// `FILE:LINE:COLUMN: message` when the key was written in the file, `FILE: message` when it
    /// took its default, `message` alone for a configuration not read from a file.
    pub fn describe(&self, key: &str, message: impl Display) -> String {
        match &self.path {
            Some(path) => render(path, self.keys.get(key).copied(), message),
            None => message.to_string(),
        }
    }
}

/// The one format of a problem: `FILE:LINE:COLUMN: message`, or `FILE: message` without a place.
fn render(path: &Path, at: Option<(usize, usize)>, message: impl Display) -> String {
    match at {
        Some((line, column)) => format!("{}:{line}:{column}: {message}", path.display()),
        None => format!("{}: {message}", path.display()),
    }
}

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Whether `message` names the dotted `key` (`relay.history`, but not within `relay.history_bytes`).
pub(super) fn mentions(message: &str, key: &str) -> bool {
    message.match_indices(key).any(|(at, _)| {
        !message[at + key.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

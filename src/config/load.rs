//! Loading: text → raw → validated, in one direction.
//!
//! A file is read, parsed into a spanned TOML document, checked key by key against the schema,
//! deserialised into a raw configuration, completed (the node id, paths relative to the file) and
//! only then validated, so a [`Config`] is never changed after its checks. Every problem found on
//! the way is located in the text. This file holds no rule (that is `validate`) and writes no
//! problem text of its own.

use std::path::Path;

use serde::Deserialize;

use super::problems::mentions;
use super::raw::RawConfig;
use super::validate::validate;
use super::{Config, ConfigError, Origin, Problem, schema};

impl Config {
    /// Reads, parses and validates the file at `path`. Relative `tls.cert`, `tls.key` and
    /// `security.jwt.public_key` paths are taken from the directory of the file, so a config and
    /// its certificate can move together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        read(&text, Some(path)).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })
    }

    /// Parses and validates TOML text; on failure, every problem found, in file order.
    ///
    /// A syntax error stops there (what follows it cannot be trusted). Otherwise every key is
    /// checked on its own against the schema: unknown keys and values of the wrong type are
    /// problems, and the keys that did parse are then validated, leaving out complaints about
    /// keys that already have a problem (or that mention one).
    pub fn from_toml(text: &str) -> Result<Config, Vec<Problem>> {
        read(text, None)
    }
}

/// [`Config::from_toml`] for the text of `file` (when it came from one).
fn read(text: &str, file: Option<&Path>) -> Result<Config, Vec<Problem>> {
    let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
    if !syntax.is_empty() {
        return Err(syntax
            .iter()
            .map(|e| {
                let offset = e.span().map_or(0, |s| s.start);
                Problem::at(text, offset, e.message().trim_end().to_owned())
            })
            .collect());
    }
    let checked = schema::check(text, &doc);
    let mut problems = checked.problems;
    let mut raw = match RawConfig::deserialize(toml::de::Deserializer::from(checked.parsed)) {
        Ok(raw) => raw,
        // Every key deserialised on its own above; this is a backstop, not an expected path.
        Err(e) => {
            let offset = e.span().map_or(0, |s| s.start);
            problems.push(Problem::at(text, offset, e.message().trim_end().to_owned()));
            return Err(problems);
        }
    };
    complete(&mut raw, file);
    let origin = Origin {
        path: file.map(Path::to_owned),
        keys: checked.keys,
    };
    let complaints = match validate(raw, origin) {
        Ok(config) if problems.is_empty() => return Ok(config),
        Ok(_) => Vec::new(),
        Err(complaints) => complaints,
    };
    let rejected = &checked.rejected;
    for complaint in complaints {
        let (key, message) = (complaint.key, &complaint.message);
        match &complaint.entry {
            None => {
                let about_rejected = rejected.iter().any(|r| r == key || mentions(message, r));
                if !about_rejected {
                    let offset = schema::locate(&doc, key);
                    problems.push(Problem::at(text, offset, complaint.to_string()));
                }
            }
            Some((i, _)) => {
                let entry = format!("rooms.{i}.");
                let about_rejected = rejected
                    .iter()
                    .filter_map(|r| r.strip_prefix(&entry))
                    .any(|r| r == key || mentions(message, r));
                if !about_rejected {
                    let offset = schema::locate_room(&doc, *i, key);
                    problems.push(Problem::at(text, offset, complaint.to_string()));
                }
            }
        }
    }
    problems.sort_by_key(|p| (p.line, p.column));
    Err(problems)
}

/// Fills in what the file leaves to the machine, before validation: the node id (`""` = the host
/// name) and, for a configuration read from `file`, the paths relative to its directory.
fn complete(raw: &mut RawConfig, file: Option<&Path>) {
    if raw.cluster.node_id.is_empty() {
        raw.cluster.node_id = hostname();
    }
    let Some(path) = file else {
        return;
    };
    let dir = path.parent().unwrap_or(Path::new(""));
    let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    let files = [
        &mut raw.tls.cert,
        &mut raw.tls.key,
        &mut raw.security.jwt.public_key,
    ];
    for file in files {
        if !file.as_os_str().is_empty() && file.is_relative() {
            *file = dir.join(&*file);
        }
    }
}

/// The machine's host name from `uname(2)` (what `gethostname()` returns). Not
/// `/proc/sys/kernel/hostname`: the shipped unit's `ProcSubset=pid` hides it, which made every
/// node of a cluster `wsline`. That fallback stays for a name that is empty or not UTF-8.
fn hostname() -> String {
    let uname = rustix::system::uname();
    uname
        .nodename()
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map_or_else(|| "wsline".into(), str::to_owned)
}

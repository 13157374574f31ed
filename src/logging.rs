//! Logs: tracing to stderr (journald keeps them), as text or JSON lines.
//!
//! `RUST_LOG`, when set, overrides `log.level`. Message contents are never logged at `info`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::{Log, LogFormat};

/// Installs the global subscriber. Call once, after the configuration is loaded.
pub fn init(log: &Log) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, never into journald or a file.
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

//! Logs: tracing to stderr (journald keeps them), as text or JSON lines.
//!
//! `RUST_LOG`, when set, overrides `log.level`. The filter sits behind a reload handle so a SIGHUP
//! can change `log.level` live. Message contents are never logged at `info`.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, fmt, reload};

use crate::config::{Log, LogFormat};

/// The live filter's handle; unset when `RUST_LOG` rules (or logging was never initialised).
static LEVEL: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber. Call once, after the configuration is loaded.
pub fn init(log: &Log) {
    let from_env = EnvFilter::try_from_default_env().ok();
    let overridden = from_env.is_some();
    let filter = from_env.unwrap_or_else(|| EnvFilter::new(&log.level));
    let (filter, handle) = reload::Layer::new(filter);
    // Colour codes only for a person at a terminal, never into journald or a file.
    let ansi = std::io::stderr().is_terminal();
    let layer = fmt::layer().with_writer(std::io::stderr).with_ansi(ansi);
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match log.format {
        LogFormat::Text => registry.with(layer).try_init(),
        LogFormat::Json => registry.with(layer.json().flatten_event(true)).try_init(),
    };
    if installed.is_ok() && !overridden {
        let _ = LEVEL.set(handle);
    }
}

/// Applies a new `log.level` (already validated); does nothing when `RUST_LOG` rules.
pub fn set_level(level: &str) {
    if let Some(handle) = LEVEL.get() {
        let _ = handle.reload(EnvFilter::new(level));
    }
}

//! Logs: tracing to stderr (journald keeps them), as text or JSON lines.
//!
//! `RUST_LOG`, when set, overrides `log.level`. The filter sits behind a reload handle so a SIGHUP
//! can change `log.level` live. Message contents are never logged at `info`.
//!
//! When stderr is the journal (systemd's `JOURNAL_STREAM` names it), lines carry no timestamp of
//! their own: journald stamps each line already, and two timestamps per line only cost width.

use std::io::IsTerminal;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt, reload};

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
    let layer = match (log.format, stderr_is_journal()) {
        (LogFormat::Text, false) => layer.boxed(),
        (LogFormat::Text, true) => layer.without_time().boxed(),
        (LogFormat::Json, false) => layer.json().flatten_event(true).boxed(),
        (LogFormat::Json, true) => layer.json().flatten_event(true).without_time().boxed(),
    };
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(layer)
        .try_init();
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

/// Whether stderr is a stream to the journal. systemd sets `JOURNAL_STREAM=DEV:INODE` for the
/// stream it connects; a child whose stderr was redirected elsewhere (`2>file` in a script run by
/// the service) inherits the variable, so it counts only when it names stderr itself.
pub fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let stderr = std::io::stderr()
        .as_fd()
        .try_clone_to_owned()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata());
    match (value.to_str(), stderr) {
        (Some(value), Ok(meta)) => names_stream(value, meta.dev(), meta.ino()),
        _ => false,
    }
}

/// `JOURNAL_STREAM`'s format: the device and inode numbers in decimal, joined by a colon.
fn names_stream(journal_stream: &str, dev: u64, ino: u64) -> bool {
    journal_stream
        .split_once(':')
        .is_some_and(|(d, i)| d.parse() == Ok(dev) && i.parse() == Ok(ino))
}

#[cfg(test)]
mod tests {
    use super::names_stream;

    #[test]
    fn journal_stream_is_device_colon_inode_in_decimal() {
        assert!(names_stream("8:123456", 8, 123456));
        assert!(!names_stream("8:123457", 8, 123456));
        assert!(!names_stream("9:123456", 8, 123456));
        for bad in [
            "",
            "8",
            "8:",
            ":123456",
            "8:123456:1",
            "0x8:123456",
            "8:123456 ",
        ] {
            assert!(!names_stream(bad, 8, 123456), "{bad:?}");
        }
    }
}

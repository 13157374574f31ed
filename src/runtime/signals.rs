//! Signals: SIGTERM and SIGINT start the drain; SIGHUP re-reads the configuration file and the
//! certificate (certbot renewals) and applies them without dropping anyone. A file or certificate
//! that does not load changes nothing and is logged as one error line. A second SIGTERM or SIGINT
//! during the drain exits at once (status 1): the operator has decided not to wait.
//!
//! It must not spawn: its handler runs as the task `runtime::tasks::signals` starts.

use std::path::{Path, PathBuf};

use tokio::signal::unix::{SignalKind, signal};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::runtime::server::Handle;
use crate::runtime::{systemd, tasks};

/// Installs the handlers; they run until the process exits (a task of `tasks::signals`).
pub fn spawn(handle: Handle, config_path: PathBuf) -> std::io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    tasks::signals(async move {
        let mut draining = false;
        loop {
            tokio::select! {
                _ = term.recv() => drain(&handle, "SIGTERM", &mut draining),
                _ = int.recv() => drain(&handle, "SIGINT", &mut draining),
                _ = hup.recv() => reload(&handle, &config_path),
            }
        }
    });
    Ok(())
}

/// Exit status when a second signal cuts the drain short.
pub const EXIT_FORCED: i32 = 1;

fn drain(handle: &Handle, signal: &str, draining: &mut bool) {
    if *draining {
        warn!(signal, "second signal during the drain: exiting now");
        std::process::exit(EXIT_FORCED);
    }
    *draining = true;
    info!(
        signal,
        "shutting down: draining connections (send it again to exit at once)"
    );
    handle.shutdown();
}

fn reload(handle: &Handle, path: &Path) {
    info!(path = %path.display(), "SIGHUP: reloading configuration and certificate");
    systemd::reloading();
    let result = match Config::load(path) {
        Ok(config) => {
            let origin = config.origin.clone();
            handle
                .reload(config)
                .map_err(|e| origin.describe(e.key(), &e))
        }
        Err(e) => Err(e.one_line()),
    };
    if let Err(e) = result {
        error!(error = %e, "reload failed; nothing changed");
    }
    systemd::ready(handle.state());
}

//! systemd integration over `NOTIFY_SOCKET`: readiness, reloads, stopping, and the watchdog.
//!
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), so the daemon and the tests run the
//! same code. Failures to notify are logged and otherwise ignored: they must never stop the relay.

use sd_notify::NotifyState;
use tracing::debug;

use crate::shutdown::Shutdown;

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// Every listener is bound and accepting.
pub fn ready() {
    notify(&[NotifyState::Ready]);
}

/// A SIGHUP reload has started; [`ready`] ends it.
pub fn reloading() {
    notify(&[NotifyState::Reloading]);
}

/// The drain has started.
pub fn stopping() {
    notify(&[NotifyState::Stopping]);
}

/// When systemd asks for a watchdog (`WatchdogSec=`), pings it at half the period from a task
/// on the runtime, so a wedged runtime stops pinging and gets restarted.
pub fn spawn_watchdog(shutdown: Shutdown) {
    let Some(period) = sd_notify::watchdog_enabled() else {
        return;
    };
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period / 2);
        loop {
            tokio::select! {
                _ = tick.tick() => notify(&[NotifyState::Watchdog]),
                _ = shutdown.stopped() => return,
            }
        }
    });
}

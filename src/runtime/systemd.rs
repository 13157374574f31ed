//! systemd integration over `NOTIFY_SOCKET`: readiness, reloads, stopping, the watchdog, and the
//! `STATUS=` line that `systemctl status` shows ("serving 12 connections in 3 rooms").
//!
//! Every call is a no-op outside systemd (no `NOTIFY_SOCKET`), so the daemon and the tests run the
//! same code. Failures to notify are logged and otherwise ignored: they must never stop the relay.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use tracing::debug;

use crate::net::state::State;

/// How often the `STATUS=` line is refreshed while running (more often when the watchdog's half
/// period is shorter: both go out on the same tick).
pub const STATUS_EVERY: Duration = Duration::from_secs(5);

fn notify(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(state) {
        debug!(error = %e, "sd_notify failed");
    }
}

/// The `STATUS=` text for these figures: "serving 1 connection in 1 room", "draining 3
/// connections in 2 rooms".
pub fn status_line(connections: usize, rooms: usize, draining: bool) -> String {
    let verb = if draining { "draining" } else { "serving" };
    let plural =
        |n: usize, one: &str, many: &str| format!("{n} {}", if n == 1 { one } else { many });
    format!(
        "{verb} {} in {}",
        plural(connections, "connection", "connections"),
        plural(rooms, "room", "rooms")
    )
}

/// The live figures of this node, as [`status_line`] puts them.
fn status(state: &State) -> String {
    status_line(
        state.hub.total(),
        state.hub.room_count(),
        state.shutdown.is_draining(),
    )
}

/// Every listener is bound and accepting (also the end of a reload).
pub fn ready(state: &State) {
    notify(&[NotifyState::Ready, NotifyState::Status(&status(state))]);
}

/// A SIGHUP reload has started; [`ready`] ends it.
pub fn reloading() {
    notify(&[NotifyState::Reloading]);
}

/// The drain has started.
pub fn stopping(state: &State) {
    notify(&[NotifyState::Stopping, NotifyState::Status(&status(state))]);
}

/// Under systemd, the notifier's period: `STATUS=` every [`STATUS_EVERY`] and, when systemd asks
/// for a watchdog (`WatchdogSec=`), pings at half its period on the same tick. `None` outside
/// systemd (no notifier then).
pub fn notifier_period() -> Option<(Duration, bool)> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(STATUS_EVERY, |w| (w / 2).min(STATUS_EVERY));
    Some((period, watchdog.is_some()))
}

/// The notifier (spawned by `runtime::tasks::systemd_notifier`): refreshes `STATUS=` and pings the
/// watchdog every `period`. It runs on the runtime, so a wedged runtime stops pinging and gets
/// restarted. It ends when the drain is over.
pub async fn notifier(state: Arc<State>, period: Duration, watchdog: bool) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let status = status(&state);
                if watchdog {
                    notify(&[NotifyState::Watchdog, NotifyState::Status(&status)]);
                } else {
                    notify(&[NotifyState::Status(&status)]);
                }
            }
            _ = state.shutdown.stopped() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::status_line;

    #[test]
    fn the_status_line_counts_in_words() {
        assert_eq!(status_line(0, 0, false), "serving 0 connections in 0 rooms");
        assert_eq!(status_line(1, 1, false), "serving 1 connection in 1 room");
        assert_eq!(
            status_line(1234, 56, true),
            "draining 1234 connections in 56 rooms"
        );
    }
}

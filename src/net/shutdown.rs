//! Shutdown: one trigger and a bounded drain.
//!
//! Two tokens mark the two phases. `draining` is cancelled by SIGTERM/SIGINT (or a test): `/healthz`
//! answers 503, upgrades are refused with 503, and every WebSocket connection (whose close token is a
//! child of `draining`) sends close 1001. `stopped` is cancelled when the drain is over, because every
//! WebSocket task in `tracker` has ended or `server.drain_timeout` has passed: listeners and plain
//! HTTP connections end with it, and `Server::run` returns.
//!
//! It must not spawn or wait itself: `Server::run` drives the drain.

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A handle on the server's lifecycle; clones share it.
#[derive(Clone, Default)]
pub struct Shutdown {
    draining: CancellationToken,
    stopped: CancellationToken,
    /// Every WebSocket connection task; the drain waits for these.
    tracker: TaskTracker,
}

impl Shutdown {
    /// Starts the drain. Idempotent.
    pub fn trigger(&self) {
        self.draining.cancel();
    }

    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    pub async fn draining(&self) {
        self.draining.cancelled().await
    }

    /// The drain's own token, for a connection to tell a drain from an eviction. Only
    /// [`Shutdown::trigger`] cancels it.
    pub fn draining_token(&self) -> CancellationToken {
        self.draining.clone()
    }

    /// A token for one connection: cancelled by the drain, or on its own by the hub.
    pub fn connection_token(&self) -> CancellationToken {
        self.draining.child_token()
    }

    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// Ends the drain: listeners and plain HTTP connections close.
    pub(crate) fn stop(&self) {
        self.stopped.cancel();
    }

    /// The token [`Shutdown::stopped`] waits for, for a closing connection to be cut by.
    pub fn stopped_token(&self) -> CancellationToken {
        self.stopped.clone()
    }

    pub async fn stopped(&self) {
        self.stopped.cancelled().await
    }
}

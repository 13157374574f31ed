//! Every long-lived task of the process is spawned here (the cluster's own subtree is spawned by
//! `cluster::redis::spawn`, called from here), so the task tree reads in one file; the tree itself
//! is drawn in [`crate::runtime`]'s module doc. Each function says what its task owns and how
//! shutdown reaches it. This module only spawns: what a task does lives with its layer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpStream};

use crate::net::http::Spawn;
use crate::net::limits::Admission;
use crate::net::state::State;
use crate::net::upgrade::Upgrade;
use crate::runtime::{accept, systemd};

/// One accept loop per listener (untracked): owns the listener; ends when the server stops.
pub(crate) fn accept_loop(listener: TcpListener, state: Arc<State>) {
    tokio::spawn(accept::accept_loop(listener, state, connection));
}

/// One task per accepted socket (untracked): owns the socket and its slot in the connection
/// limits through TLS and HTTP; ends when the peer closes, at the handshake or keep-alive deadline,
/// or when the server stops. An upgrade hands the socket to a [`websocket`] task.
fn connection(tcp: TcpStream, peer: SocketAddr, state: Arc<State>, slot: Admission) {
    let spawn = websocket_spawner(&state);
    tokio::spawn(accept::handle(tcp, peer, state, slot, spawn));
}

/// What HTTP is given to start a WebSocket's task with: [`websocket`] on the drain's tracker.
fn websocket_spawner(state: &State) -> impl Spawn {
    let tracker = state.shutdown.tracker().clone();
    move |upgrade: Upgrade| websocket(&tracker, upgrade)
}

/// One task per WebSocket (tracked: the drain waits for it): owns the stream, the membership, the
/// outbox's receiving end and the socket's slot. The drain's token closes it with `1001`; at the
/// drain timeout the server's stop cuts it.
fn websocket(tracker: &tokio_util::task::TaskTracker, upgrade: Upgrade) {
    tracker.spawn(upgrade.run());
}

/// The presence ticker (tracked): one for every room, owns nothing but a hub handle; ends when
/// the drain starts.
pub(crate) fn presence_ticker(state: &State) {
    let (hub, shutdown) = (state.hub.clone(), state.shutdown.clone());
    state
        .shutdown
        .tracker()
        .spawn(async move { hub.run_presence(shutdown.draining()).await });
}

/// The cluster's tasks (tracked), when `cluster.redis` is set: the worker, the publisher and the
/// liveness task, each ending when the drain starts (see `cluster::redis::spawn`).
pub(crate) fn cluster(state: &State) {
    if let Some(cluster) = state.hub.cluster() {
        crate::cluster::redis::spawn(
            cluster,
            Arc::new(state.hub.clone()),
            state.shutdown.tracker(),
            state.shutdown.draining_token(),
        );
    }
}

/// The systemd notifier (untracked), under systemd only: `STATUS=` and the watchdog; ends when the
/// server stops.
pub(crate) fn systemd_notifier(state: Arc<State>) {
    if let Some((period, watchdog)) = systemd::notifier_period() {
        tokio::spawn(systemd::notifier(state, period, watchdog));
    }
}

/// The signal handler (untracked): owns the signal streams and a server handle; runs until the
/// process exits (a second SIGTERM or SIGINT exits at once).
pub(crate) fn signals(handler: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(handler);
}

//! The process: binding and accept loops, the drain, signals, systemd notifications and logging.
//! Every long-lived task is spawned in [`tasks`]; nothing below this layer spawns one (but the
//! cluster's own subtree, which `cluster::redis::spawn` starts when [`tasks`] asks it to).
//!
//! # The task tree
//!
//! Two tokens in [`crate::net::shutdown::Shutdown`] reach every task: `draining` (SIGTERM, SIGINT or
//! `Handle::shutdown`) and `stopped` (the drain is over: every tracked task ended, or
//! `server.drain_timeout` passed). "Tracked" tasks are in the shutdown's `TaskTracker`, which the
//! drain waits for.
//!
//! ```text
//! main (the runtime's block_on)
//! ├── signal handler        tasks::signals          untracked  owns the signal streams, a Handle;
//! │                                                            lives until the process exits
//! └── Server::run           (not a task: the main future)      waits for `draining`, then the drain
//!     ├── accept loop ×listener  tasks::accept_loop  untracked  owns the listener; ends at `stopped`
//!     │   └── connection ×socket tasks::connection   untracked  owns the socket and its slot through
//!     │       │                                                 TLS and HTTP; ends at close, at the
//!     │       │                                                 head deadline, or at `stopped`
//!     │       └── websocket ×upgrade tasks::websocket tracked  owns the stream, the membership, the
//!     │                                                        outbox's receiver and the slot; closes
//!     │                                                        with 1001 at `draining` (the outbox's
//!     │                                                        token is its child), cut at `stopped`
//!     │                                                        (watched in its close phase only)
//!     ├── presence ticker   tasks::presence_ticker  tracked    a hub handle; ends at `draining`
//!     ├── systemd notifier  tasks::systemd_notifier untracked  STATUS= and the watchdog, under
//!     │                                                        systemd only; ends at `stopped`
//!     └── cluster (cluster.redis set)  tasks::cluster → cluster::redis::spawn
//!         ├── worker        tracked  owns the Redis sessions; ends at `draining`
//!         │   └── per Redis session, in the session's JoinSet (end with the session):
//!         │       ├── receive drain   takes pub/sub messages off the library's channel
//!         │       └── deliver         hands them to the rooms (the hub)
//!         ├── publisher     tracked  owns the outgoing queue's receiver; ends at `draining`
//!         └── liveness      tracked  this node's heartbeat key; ends at `draining`
//! ```
//!
//! The drain ([`server::Server::run`]): `draining` is cancelled, the tracker is closed and waited
//! for up to `server.drain_timeout`, then `stopped` is cancelled (listeners, plain HTTP
//! connections, the notifier and any WebSocket still open end), and the connections cut get a
//! short grace to log it.
pub mod accept;
pub mod logging;
pub mod server;
pub mod signals;
pub mod systemd;
pub mod tasks;

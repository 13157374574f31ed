//! wsline: a TLS-terminating WebSocket relay. One binary, one TOML file.
//!
//! HTTPS on one port answers health checks and stats, upgrades to `wss`, relays every message a
//! client sends to everyone in its room, and tells each room who is in it.
//!
//! Map of the crate:
//! - [`config`]: the TOML file to a typed, validated [`Config`], problems with line and column.
//! - [`tls`]: PEM files (or a self-signed certificate) to a rustls acceptor whose certificate can swap.
//! - [`server`]: binding, accept loops, TLS under the handshake deadline, the drain.
//! - [`http`]: routing of `/healthz`, `/stats`, `/`, and the answer to a refused upgrade.
//! - [`api`]: the backend API under `/api/`: publish, presence, room pages, kick.
//! - [`admit`]: every reason an upgrade is refused, decided in one place, and the room join.
//! - [`cluster`]: several nodes through Redis: relay, presence, names, liveness, degraded mode.
//! - [`request`]: the room, name, session and token of an upgrade request (pure, fuzzable).
//! - [`jwt`]: `[security.jwt]`: signed per-user tokens verified before the upgrade.
//! - [`conn`]: one WebSocket connection: read, write, ping, idle, close codes.
//! - [`envelope`]: `relay.envelope = "json"`: text wrapped with the sender's checked name.
//! - [`frame`]: RFC 6455 frame headers, written and checked (pure).
//! - [`hub`]: the room registry, membership guards, fan-out into outboxes, the presence ticker.
//! - [`history`]: a room's last messages, bounded in count and bytes.
//! - [`outbox`]: the bounded per-connection outbound queue and its eviction rule.
//! - [`limits`]: connection counts per server and client address, message rate, real client address.
//! - [`nginx`]: `--check-config`'s nginx advice: the matching location block, heartbeat warning.
//! - [`recovery`]: `?since=EPOCH:SEQ`: message numbers, epochs and the gap notice (pure).
//! - [`presence`]: presence as state + changes: pure rules for rosters, messages, windows, sizes.
//! - [`shutdown`]: the drain trigger and the tracked connection tasks.
//! - [`signals`]: SIGTERM/SIGINT drain, SIGHUP reloads the configuration and certificate.
//! - [`stats`], [`metrics`]: counters behind `/stats` and `/metrics`.
//! - [`systemd`]: readiness, reload, stopping and watchdog notifications.
//! - [`logging`]: tracing to stderr, text or JSON.
//! - [`web`]: the browser client module (`web.client`) and the demo page (`web.enabled`).
#![forbid(unsafe_code)]

pub mod admit;
pub mod api;
pub mod cluster;
pub mod config;
pub mod conn;
pub mod envelope;
pub mod frame;
pub mod history;
pub mod http;
pub mod hub;
pub mod jwt;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod nginx;
pub mod outbox;
pub mod presence;
pub mod recovery;
pub mod request;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod stats;
pub mod systemd;
pub mod tls;
pub mod web;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use config::Config;
pub use server::{Handle, Server};
pub use shutdown::Shutdown;

/// What every connection task shares with the server.
pub struct State {
    /// The configuration in force; connections take a snapshot when they are admitted.
    pub config: ArcSwap<Config>,
    pub hub: hub::Hub,
    /// Connection counts for `limits.max_connections` and `max_connections_per_ip`.
    pub gate: limits::Gate,
    pub stats: Arc<stats::Stats>,
    pub shutdown: Shutdown,
    /// The TLS acceptor and its swappable certificate; `None` when `tls.enabled = false`.
    pub tls: Option<tls::Tls>,
    /// The backend API's request budget (`api.requests_per_second`).
    pub api: api::Budget,
    /// The signed-token verifier of `[security.jwt]` (`None`: off); rebuilt on SIGHUP.
    pub jwt: arc_swap::ArcSwapOption<jwt::Verifier>,
}

/// Makes aws-lc-rs the process's rustls crypto provider; call once before any TLS.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

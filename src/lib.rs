//! wsline: a TLS-terminating WebSocket relay. One binary, one TOML file.
//!
//! HTTPS on one port answers health checks and stats, upgrades to `wss`, relays every message a
//! client sends to everyone in its room, and tells each room who is in it.
//!
//! Map of the crate, one folder per layer; a folder imports only from the ones listed above it:
//! - [`proto`]: the message type and the rules for room and member names (imports nothing).
//! - [`config`]: the TOML file to a typed, validated [`Config`], problems with line and column.
//! - [`cluster`]: several nodes through Redis: relay, presence, names, liveness, degraded mode.
//! - [`web`]: the browser client module (`web.client`) and the demo page (`web.enabled`).
//! - [`observe`]: the counters, and the snapshot behind `/stats` and `/metrics`, built from parts.
//! - [`relay`]: rooms: registry, fan-out into outboxes, presence, history, recovery, envelope.
//! - [`ws`]: frame headers and the connection task (read, write, heartbeat, close).
//! - [`net`]: TLS, HTTP routing, the backend API, request parsing, tokens, admission, limits.
//! - [`runtime`]: binding, accept loops, the drain, signals, systemd, logging.
//!
//! This file only names the layers and the state the HTTP side shares; it holds no logic but
//! choosing the process's crypto provider.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod config;
pub mod net;
pub mod observe;
pub mod proto;
pub mod relay;
pub mod runtime;
pub mod web;
pub mod ws;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use config::Config;
pub use runtime::server::{Handle, Server};
pub use runtime::shutdown::Shutdown;

/// What every connection task shares with the server.
pub struct State {
    /// The configuration in force; connections take a snapshot when they are admitted.
    pub config: ArcSwap<Config>,
    pub hub: relay::hub::Hub,
    /// Connection counts for `limits.max_connections` and `max_connections_per_ip`.
    pub gate: net::limits::Gate,
    pub stats: Arc<observe::stats::Stats>,
    pub shutdown: Shutdown,
    /// The TLS acceptor and its swappable certificate; `None` when `tls.enabled = false`.
    pub tls: Option<net::tls::Tls>,
    /// The backend API's request budget (`api.requests_per_second`).
    pub api: net::api::Budget,
    /// The signed-token verifier of `[security.jwt]` (`None`: off); rebuilt on SIGHUP.
    pub jwt: arc_swap::ArcSwapOption<net::jwt::Verifier>,
}

/// Makes aws-lc-rs the process's rustls crypto provider; call once before any TLS.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

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
//! - [`net`]: TLS, HTTP routing, the backend API, request parsing, tokens, admission, limits; the
//!   [`State`] connections share and the drain's [`Shutdown`] tokens.
//! - [`runtime`]: binding, accept loops, the drain, signals, systemd, logging.
//!
//! This file only names the layers; it holds no logic but choosing the process's crypto provider.
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

pub use config::Config;
pub use net::shutdown::Shutdown;
pub use net::state::State;
pub use runtime::server::{Handle, Server};

/// Makes aws-lc-rs the process's rustls crypto provider; call once before any TLS.
pub fn install_crypto_provider() {
    // Err means a provider is installed already, which is what we want.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

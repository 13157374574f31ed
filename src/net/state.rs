//! The state every connection shares with the server: the configuration in force, the rooms,
//! the connection gate, the counters, the drain, TLS, the API's budget and the token verifier.
//! It lives here, the highest layer below `runtime/`, so that both the HTTP side and the runtime
//! reach it without an import that runs back up.
//!
//! Plain data: this file must not spawn or hold logic.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::Config;
use crate::net::shutdown::Shutdown;
use crate::{net, observe, relay};

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
    pub api: net::limits::Budget,
    /// The signed-token verifier of `[security.jwt]` (`None`: off); rebuilt on SIGHUP.
    pub jwt: arc_swap::ArcSwapOption<net::jwt::Verifier>,
}

//! The sections of the TOML file (`[server]`, `[tls]`, ...): the serde shape of each, with every
//! key's default. Plain data, as the file says it.
//!
//! The raw and the validated configuration are made of these same structs, so a validated
//! configuration reads `config.relay.history` like the file wrote it. This file holds no rule
//! (ranges and relations are in `validate`) and parses no value by hand (that is `values`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::values::{cidrs, duration, one_or_many, size};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Server {
    /// Addresses to listen on: one string or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub listen: Vec<SocketAddr>,
    /// On SIGTERM: how long clients get to go before the process exits.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// The listen queue length: a reconnect storm must not overflow the OS default of 128.
    pub backlog: u32,
}

impl Default for Server {
    fn default() -> Self {
        Server {
            listen: vec![SocketAddr::from(([0, 0, 0, 0], 3456))],
            drain_timeout: Duration::from_secs(10),
            backlog: 1024,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// `false`: plain HTTP and `ws`, for use behind a TLS-terminating proxy.
    pub enabled: bool,
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Development only: an ephemeral certificate for localhost.
    pub self_signed: bool,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            enabled: true,
            cert: PathBuf::new(),
            key: PathBuf::new(),
            self_signed: false,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Relay {
    /// The room of `/`.
    pub default_room: String,
    /// The sender gets its own messages too.
    pub echo: bool,
    #[serde(deserialize_with = "size")]
    pub max_message_size: u64,
    pub max_rooms: usize,
    /// The last N messages of a room, replayed to a new member ...
    pub history: usize,
    /// ... and at most this many bytes of them per room.
    #[serde(deserialize_with = "size")]
    pub history_bytes: u64,
    /// `json`: text is relayed wrapped with the sender's checked name.
    pub envelope: Envelope,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Envelope {
    /// Raw relay: nothing wrapped.
    None,
    /// `{"type":"message","room":..,"from":..,"data":..}` for text; binary refused with 1003.
    Json,
}

impl Default for Relay {
    fn default() -> Self {
        Relay {
            default_room: "lobby".into(),
            echo: true,
            max_message_size: 64 * 1024,
            max_rooms: 10_000,
            history: 0,
            history_bytes: 256 * 1024,
            envelope: Envelope::None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceFormat {
    Json,
    Plain,
    Off,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Presence {
    pub format: PresenceFormat,
    /// Coalescing window: at most one presence message per room per interval.
    #[serde(deserialize_with = "duration")]
    pub interval: Duration,
    pub unique_names: bool,
    /// A member without a name (`?name=`) is refused with `400`.
    pub require_name: bool,
    /// Names listed in one presence state; beyond it they are counted (`more`).
    pub max_names: usize,
}

impl Default for Presence {
    fn default() -> Self {
        Presence {
            format: PresenceFormat::Json,
            interval: Duration::from_millis(100),
            unique_names: true,
            require_name: false,
            max_names: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Heartbeat {
    #[serde(deserialize_with = "duration")]
    pub ping_interval: Duration,
    #[serde(deserialize_with = "duration")]
    pub idle_timeout: Duration,
    /// A text message byte-equal to this is answered with `app_pong` to its sender alone; "" = off.
    pub app_ping: String,
    pub app_pong: String,
}

impl Default for Heartbeat {
    fn default() -> Self {
        Heartbeat {
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            app_ping: String::new(),
            app_pong: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub messages_per_second: u32,
    pub burst: u32,
    /// Outbound queue bound per connection, in messages ...
    pub queue_messages: usize,
    /// ... and in bytes. A client over either is closed with 1013.
    #[serde(deserialize_with = "size")]
    pub queue_bytes: u64,
    #[serde(deserialize_with = "duration")]
    pub handshake_timeout: Duration,
    /// A kept-alive HTTP connection whose next request head is not complete this long after the
    /// last response is closed (idle time included).
    #[serde(deserialize_with = "duration")]
    pub keepalive_timeout: Duration,
    /// Requests one HTTP connection may carry; the last one's response says `Connection: close`.
    pub keepalive_requests: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 50_000,
            max_connections_per_ip: 200,
            messages_per_second: 100,
            burst: 200,
            queue_messages: 1024,
            queue_bytes: 4 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(10),
            keepalive_requests: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Security {
    /// Exact `scheme://host[:port]` origins; empty = any Origin.
    pub allowed_origins: Vec<String>,
    #[serde(deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<IpNet>,
    /// When set, `?token=` or `Authorization: Bearer` must carry it.
    pub token: String,
    /// `[security.jwt]`: signed per-user tokens (`net::jwt`).
    pub jwt: Jwt,
}

/// `[security.jwt]`: off while both `secret` and `public_key` are empty.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Jwt {
    /// HS256 secret (never in `Debug`, logs or errors) ...
    pub secret: String,
    /// ... or a PEM public key file: Ed25519 (EdDSA), P-256 (ES256) or RSA (RS256).
    pub public_key: PathBuf,
    /// The claim that becomes the member's checked name.
    pub name_claim: String,
    /// The claim listing the rooms (names, `prefix*`) a token may join; absent = any.
    pub rooms_claim: String,
    pub issuer: String,
    pub audience: String,
    #[serde(deserialize_with = "duration")]
    pub leeway: Duration,
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt {
            secret: String::new(),
            public_key: PathBuf::new(),
            name_claim: "sub".into(),
            rooms_claim: "rooms".into(),
            issuer: String::new(),
            audience: String::new(),
            leeway: Duration::from_secs(30),
        }
    }
}

impl Jwt {
    /// Whether signed tokens are on.
    pub fn enabled(&self) -> bool {
        !self.secret.is_empty() || !self.public_key.as_os_str().is_empty()
    }
}

/// Written by hand so that a `{:?}` of the configuration never shows the secret.
impl std::fmt::Debug for Jwt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwt")
            .field(
                "secret",
                &if self.secret.is_empty() {
                    ""
                } else {
                    "redacted"
                },
            )
            .field("public_key", &self.public_key)
            .field("name_claim", &self.name_claim)
            .field("rooms_claim", &self.rooms_claim)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway", &self.leeway)
            .finish()
    }
}

impl Default for Security {
    fn default() -> Self {
        Security {
            allowed_origins: Vec::new(),
            trusted_proxies: loopback(),
            token: String::new(),
            jwt: Jwt::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// A tracing filter (`info`, `wsline=debug,warn`); `RUST_LOG` overrides it.
    pub level: String,
    pub format: LogFormat,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            level: "info".into(),
            format: LogFormat::Text,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Metrics {
    pub enabled: bool,
    /// Who may GET /metrics.
    #[serde(deserialize_with = "cidrs")]
    pub allow: Vec<IpNet>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            enabled: true,
            allow: loopback(),
        }
    }
}

/// `[api]`: the backend API under `/api/` (`net::api`); off while `keys` is empty.
#[derive(Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Api {
    /// Bearer keys, several so they can be rotated; secrets (never in `Debug`, logs or errors).
    pub keys: Vec<String>,
    /// Who may call `/api/`, by real client address.
    #[serde(deserialize_with = "cidrs")]
    pub allow: Vec<IpNet>,
    /// Requests a second the whole API answers (a token bucket of as many); beyond: `429`.
    pub requests_per_second: u32,
}

impl Default for Api {
    fn default() -> Self {
        Api {
            keys: Vec::new(),
            allow: loopback(),
            requests_per_second: 1000,
        }
    }
}

/// Written by hand so that a `{:?}` of the configuration never shows a key.
impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("keys", &format_args!("[{} redacted]", self.keys.len()))
            .field("allow", &self.allow)
            .field("requests_per_second", &self.requests_per_second)
            .finish()
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Web {
    /// The demo chat page at `/` and `/ROOM` (and its script).
    pub enabled: bool,
    /// The browser client module at `/client.js`, with CORS for `security.allowed_origins`.
    pub client: bool,
}

impl Default for Web {
    fn default() -> Self {
        Web {
            enabled: false,
            client: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Cluster {
    /// e.g. `redis://127.0.0.1:6379`; "" = single node.
    pub redis: String,
    /// "" = the host name.
    pub node_id: String,
    /// Prefix of every Redis key and channel, so deployments can share one Redis.
    pub prefix: String,
    /// A node silent this long is dead: its members leave every count.
    #[serde(deserialize_with = "duration")]
    pub node_timeout: Duration,
    /// A room's history stream in Redis outlives the room's last member (on any node) this long.
    #[serde(deserialize_with = "duration")]
    pub history_ttl: Duration,
}

impl Default for Cluster {
    fn default() -> Self {
        Cluster {
            redis: String::new(),
            node_id: String::new(),
            prefix: "wsline".into(),
            node_timeout: Duration::from_secs(5),
            history_ttl: Duration::from_secs(3600),
        }
    }
}

fn loopback() -> Vec<IpNet> {
    vec![
        "127.0.0.1/32".parse().expect("valid CIDR"),
        "::1/128".parse().expect("valid CIDR"),
    ]
}

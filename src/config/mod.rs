//! The TOML configuration: every key of the product contract, its default, and its checks.
//!
//! Loading finds every problem of a file in one run, each at its line and column. The text is
//! parsed into a spanned TOML document; `schema` checks each key against the sections of
//! [`Config`] and deserialises each value on its own (unknown keys and values of the wrong type
//! are problems, those keys keep their defaults); the rest becomes a `Config`, and
//! `Config::validate` checks what serde cannot: ranges, upper bounds and relations between keys.
//! `--check-config` runs exactly [`Config::load`], the same as start-up and SIGHUP.
//!
//! Every duration and size has an upper bound, so that no arithmetic on a configured value (an
//! `Instant` plus a timeout, a buffer of a configured size) can overflow or panic at run time.
//! Errors about secret keys (`schema::SECRET_KEYS`) never contain their values.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer};

pub mod nginx;
mod schema;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wsline/wsline.toml";

const MIB: u64 = 1024 * 1024;
const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(60 * 60);

/// The largest `relay.max_message_size` accepted; beyond it one message could hold a worker hostage.
const MAX_MESSAGE_SIZE_CEILING: u64 = 64 * MIB;
/// The largest `limits.queue_bytes`: one slow client may pin at most this much.
const MAX_QUEUE_BYTES: u64 = 1024 * MIB;
/// The largest `relay.history_bytes` per room (times `relay.max_rooms` in the worst case).
const MAX_HISTORY_BYTES: u64 = 64 * MIB;
/// The upper bound of each duration: far beyond any sensible value, far below an overflow.
const MAX_DRAIN_TIMEOUT: Duration = HOUR;
const MAX_PRESENCE_INTERVAL: Duration = MINUTE;
const MAX_PING_INTERVAL: Duration = HOUR;
const MAX_IDLE_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
/// `cluster.node_id`: 255 bytes of instance id in the envelope, less the per-process suffix.
const MAX_NODE_ID_BYTES: usize = 200;
/// `cluster.prefix`: a key prefix, short enough to leave room for the rest of every key.
const MAX_PREFIX_BYTES: usize = 64;
const MAX_NODE_TIMEOUT: Duration = HOUR;
/// Longest `cluster.history_ttl`: a month.
const MAX_HISTORY_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
const MAX_JWT_LEEWAY: Duration = HOUR;
/// `server.backlog` above this is cut by the kernel (`net.core.somaxconn`) anyway.
const MAX_BACKLOG: u32 = 65_535;

/// The whole configuration, typed. Field names are the contract: a user's file must keep working.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: Server,
    pub tls: Tls,
    pub relay: Relay,
    pub presence: Presence,
    pub heartbeat: Heartbeat,
    pub limits: Limits,
    pub security: Security,
    pub log: Log,
    pub metrics: Metrics,
    pub web: Web,
    pub cluster: Cluster,
    pub api: Api,
    /// `[[rooms]]`: per-room settings, the first entry whose `match` fits a room wins.
    pub rooms: Vec<RoomRule>,
    /// The configuration each `rooms` entry makes, built once on first use ([`Config::for_room`]),
    /// so connections of a room share one copy; not a key of the file.
    #[serde(skip)]
    resolved: Resolved,
    /// Where the file was and where each key sits in it; not a key of the file.
    #[serde(skip)]
    pub origin: Origin,
}

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
    /// `[security.jwt]`: signed per-user tokens ([`crate::net::jwt`]).
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

/// `[api]`: the backend API under `/api/` ([`crate::net::api`]); off while `keys` is empty.
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

/// `redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]/MASTER_NAME`: the Sentinels to ask for
/// the primary of `MASTER_NAME` (the password is the primary's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub hosts: Vec<String>,
    pub master: String,
    pub password: Option<String>,
}

impl SentinelUrl {
    /// `None` when `url` is not a well-formed `redis+sentinel://` URL.
    pub fn parse(url: &str) -> Option<SentinelUrl> {
        let rest = url.strip_prefix("redis+sentinel://")?;
        let (auth, rest) = match rest.rsplit_once('@') {
            Some((auth, rest)) => (Some(auth), rest),
            None => (None, rest),
        };
        let password = auth.map(|a| a.split_once(':').map_or(a, |(_, p)| p).to_owned());
        let (hosts, master) = rest.split_once('/')?;
        let hosts: Vec<String> = hosts.split(',').map(str::to_owned).collect();
        let valid_host = |h: &String| {
            h.rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
        };
        let master = master.trim_end_matches('/');
        (hosts.iter().all(valid_host) && !master.is_empty() && !master.contains('/')).then(|| {
            SentinelUrl {
                hosts,
                master: master.to_owned(),
                password,
            }
        })
    }
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

/// One `[[rooms]]` entry: which rooms it is for, and the settings it overrides for them (any key
/// it leaves out keeps the value of its section). Only settings that belong to a room, rather
/// than to the server or a socket's limits, can be overridden.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomRule {
    /// A room name (exact), or a prefix ending in `*` (`"chat-*"`; `"*"` is every room).
    #[serde(rename = "match")]
    pub pattern: String,
    pub relay: RelayOverride,
    pub presence: PresenceOverride,
    pub heartbeat: HeartbeatOverride,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayOverride {
    pub echo: Option<bool>,
    pub envelope: Option<Envelope>,
    pub history: Option<usize>,
    #[serde(deserialize_with = "some_size")]
    pub history_bytes: Option<u64>,
    #[serde(deserialize_with = "some_size")]
    pub max_message_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceOverride {
    pub format: Option<PresenceFormat>,
    pub unique_names: Option<bool>,
    pub require_name: Option<bool>,
    pub max_names: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatOverride {
    pub app_ping: Option<String>,
    pub app_pong: Option<String>,
}

impl RoomRule {
    /// Whether this entry is for `room`: equal to `match`, or starting with its prefix before `*`.
    pub fn matches(&self, room: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => room == self.pattern,
        }
    }

    /// Whether `match` is a room name, or a prefix of room names followed by `*`.
    fn pattern_ok(&self) -> bool {
        match self.pattern.strip_suffix('*') {
            // A prefix is a room name cut short: check it with a letter standing for the rest.
            Some("") => true,
            Some(prefix) => {
                crate::proto::names::is_room_name(&format!("{prefix}a")) && !prefix.contains('*')
            }
            None => crate::proto::names::is_room_name(&self.pattern),
        }
    }

    /// Writes this entry's overrides into `config`.
    pub(crate) fn apply(&self, config: &mut Config) {
        fn set<T: Clone>(to: &mut T, from: &Option<T>) {
            if let Some(v) = from {
                *to = v.clone();
            }
        }
        let (r, p, h) = (&self.relay, &self.presence, &self.heartbeat);
        set(&mut config.relay.echo, &r.echo);
        set(&mut config.relay.envelope, &r.envelope);
        set(&mut config.relay.history, &r.history);
        set(&mut config.relay.history_bytes, &r.history_bytes);
        set(&mut config.relay.max_message_size, &r.max_message_size);
        set(&mut config.presence.format, &p.format);
        set(&mut config.presence.unique_names, &p.unique_names);
        set(&mut config.presence.require_name, &p.require_name);
        set(&mut config.presence.max_names, &p.max_names);
        set(&mut config.heartbeat.app_ping, &h.app_ping);
        set(&mut config.heartbeat.app_pong, &h.app_pong);
    }

    /// The dotted keys (`relay.history`, ...) this entry sets.
    fn keys(&self) -> Vec<&'static str> {
        let (r, p, h) = (&self.relay, &self.presence, &self.heartbeat);
        [
            ("relay.echo", r.echo.is_some()),
            ("relay.envelope", r.envelope.is_some()),
            ("relay.history", r.history.is_some()),
            ("relay.history_bytes", r.history_bytes.is_some()),
            ("relay.max_message_size", r.max_message_size.is_some()),
            ("presence.format", p.format.is_some()),
            ("presence.unique_names", p.unique_names.is_some()),
            ("presence.require_name", p.require_name.is_some()),
            ("presence.max_names", p.max_names.is_some()),
            ("heartbeat.app_ping", h.app_ping.is_some()),
            ("heartbeat.app_pong", h.app_pong.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}

fn loopback() -> Vec<IpNet> {
    vec![
        "127.0.0.1/32".parse().expect("valid CIDR"),
        "::1/128".parse().expect("valid CIDR"),
    ]
}

/// A configuration file that could not be used: every problem found, each with its location.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", render_problems(path, problems))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

/// One thing wrong with a configuration, at a 1-based line and column.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl Problem {
    fn at(text: &str, offset: usize, message: String) -> Problem {
        let (line, column) = line_column(text, offset);
        Problem {
            line,
            column,
            message,
        }
    }
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let lines: Vec<String> = problems
        .iter()
        .map(|p| format!("{}:{}:{}: {}", path.display(), p.line, p.column, p.message))
        .collect();
    lines.join("\n")
}

/// Where a loaded configuration came from: the file, and the line and column of each key's value,
/// so a problem found after parsing (a certificate that does not load) still points at its line.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    /// The file given to [`Config::load`]; `None` for [`Config::from_toml`].
    pub path: Option<PathBuf>,
    /// `section.key` to (line, column), for the keys written in the file.
    keys: std::collections::BTreeMap<String, (usize, usize)>,
}

impl Origin {
    /// `FILE:LINE:COLUMN: message` when the key was written in the file, `FILE: message` when it
    /// took its default, `message` alone for a configuration not read from a file.
    pub fn describe(&self, key: &str, message: impl std::fmt::Display) -> String {
        match (&self.path, self.keys.get(key)) {
            (Some(path), Some((line, column))) => {
                format!("{}:{line}:{column}: {message}", path.display())
            }
            (Some(path), None) => format!("{}: {message}", path.display()),
            (None, _) => message.to_string(),
        }
    }
}

/// [`Config::for_room`]'s copies, one per `[[rooms]]` entry. A clone of the configuration starts
/// without them, so a clone whose entries are then changed never serves stale copies.
#[derive(Debug, Default)]
struct Resolved(std::sync::OnceLock<Vec<std::sync::Arc<Config>>>);

impl Clone for Resolved {
    fn clone(&self) -> Self {
        Resolved::default()
    }
}

impl Config {
    /// The configuration as it applies to `room`: this one with the first matching `[[rooms]]`
    /// entry's overrides written in (the same `Arc` when no entry matches, so rooms without one
    /// cost nothing). Its own `rooms` list is empty: it is already resolved.
    pub fn for_room(self: &std::sync::Arc<Config>, room: &str) -> std::sync::Arc<Config> {
        let Some(i) = self.rooms.iter().position(|rule| rule.matches(room)) else {
            return self.clone();
        };
        let resolved = self.resolved.0.get_or_init(|| {
            self.rooms
                .iter()
                .map(|rule| {
                    let mut config = Config {
                        rooms: Vec::new(),
                        resolved: Resolved::default(),
                        ..(**self).clone()
                    };
                    rule.apply(&mut config);
                    std::sync::Arc::new(config)
                })
                .collect()
        });
        resolved[i].clone()
    }

    /// Reads, parses and validates the file at `path`. Relative `tls.cert` / `tls.key` paths are
    /// taken from the directory of the file, so a config and its certificate can move together.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::from_toml(&text).map_err(|problems| ConfigError::Invalid {
            path: path.to_owned(),
            problems,
        })?;
        let dir = path.parent().unwrap_or(Path::new(""));
        let dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
        let files = [
            &mut config.tls.cert,
            &mut config.tls.key,
            &mut config.security.jwt.public_key,
        ];
        for file in files {
            if !file.as_os_str().is_empty() && file.is_relative() {
                *file = dir.join(&*file);
            }
        }
        config.origin.path = Some(path.to_owned());
        Ok(config)
    }

    /// Parses and validates TOML text; on failure, every problem found, in file order.
    ///
    /// A syntax error stops there (what follows it cannot be trusted). Otherwise every key is
    /// checked on its own against the schema: unknown keys and values of the wrong type are
    /// problems, and the keys that did parse are then checked by `validate`, leaving
    /// out its complaints about keys that already have a problem (or that mention one).
    pub fn from_toml(text: &str) -> Result<Config, Vec<Problem>> {
        let (doc, syntax) = toml::de::DeTable::parse_recoverable(text);
        if !syntax.is_empty() {
            return Err(syntax
                .iter()
                .map(|e| {
                    let offset = e.span().map_or(0, |s| s.start);
                    Problem::at(text, offset, e.message().trim_end().to_owned())
                })
                .collect());
        }
        let mut checked = schema::check(text, &doc);
        let config = Config::deserialize(toml::de::Deserializer::from(checked.parsed));
        let mut config = match config {
            Ok(config) => config,
            // Every key deserialised on its own above; this is a backstop, not an expected path.
            Err(e) => {
                let offset = e.span().map_or(0, |s| s.start);
                checked
                    .problems
                    .push(Problem::at(text, offset, e.message().trim_end().to_owned()));
                return Err(checked.problems);
            }
        };
        let rejected = &checked.rejected;
        let mut problems = checked.problems;
        let global = config.validate();
        for (key, message) in &global {
            let about_rejected = rejected.iter().any(|r| r == key || mentions(message, r));
            if !about_rejected {
                let offset = schema::locate(&doc, key);
                problems.push(Problem::at(text, offset, format!("{key}: {message}")));
            }
        }
        for (i, key, message) in config.validate_rooms(&global) {
            let entry = format!("rooms.{i}.");
            let about_rejected = rejected
                .iter()
                .filter_map(|r| r.strip_prefix(&entry))
                .any(|r| r == key || mentions(&message, r));
            if !about_rejected {
                let offset = schema::locate_room(&doc, i, key);
                let rule = &config.rooms[i];
                problems.push(Problem::at(
                    text,
                    offset,
                    format!(
                        "[[rooms]] #{} (match = {:?}): {key}: {message}",
                        i + 1,
                        rule.pattern
                    ),
                ));
            }
        }
        if !problems.is_empty() {
            problems.sort_by_key(|p| (p.line, p.column));
            return Err(problems);
        }
        config.origin = Origin {
            path: None,
            keys: checked.keys,
        };
        if config.cluster.node_id.is_empty() {
            config.cluster.node_id = hostname();
        }
        Ok(config)
    }

    /// Checks each `[[rooms]]` entry: its `match`, and the configuration it makes for its rooms
    /// by exactly the checks of [`Config::validate`] (a replay must fit the queue, app ping and
    /// pong together, ...). A problem the global settings already have is not repeated for each
    /// entry. Each problem: the entry's index, the key it is about (one the entry sets, else
    /// `match`), the message.
    fn validate_rooms(
        &self,
        global: &[(&'static str, String)],
    ) -> Vec<(usize, &'static str, String)> {
        let mut problems = Vec::new();
        for (i, rule) in self.rooms.iter().enumerate() {
            if rule.pattern.is_empty() {
                problems.push((
                    i,
                    "match",
                    "is required: a room name, or a prefix followed by \"*\"".into(),
                ));
                continue;
            }
            if !rule.pattern_ok() {
                problems.push((
                    i,
                    "match",
                    format!(
                        "{:?} is neither a room name nor a prefix of one followed by \"*\" \
                         (1-64 letters or digits of any script and . _ -)",
                        rule.pattern
                    ),
                ));
                continue;
            }
            let mut config = Config {
                rooms: Vec::new(),
                resolved: Resolved::default(),
                ..self.clone()
            };
            rule.apply(&mut config);
            let keys = rule.keys();
            for (key, message) in config.validate() {
                if global.iter().any(|(k, m)| *k == key && *m == message) {
                    continue;
                }
                let key = keys
                    .iter()
                    .copied()
                    .find(|k| *k == key)
                    .or_else(|| keys.iter().copied().find(|k| mentions(&message, k)))
                    .unwrap_or("match");
                problems.push((i, key, message));
            }
            for earlier in &self.rooms[..i] {
                let shadowed = match rule.pattern.strip_suffix('*') {
                    Some(prefix) => earlier
                        .pattern
                        .strip_suffix('*')
                        .is_some_and(|e| prefix.starts_with(e)),
                    None => earlier.matches(&rule.pattern),
                };
                if shadowed {
                    problems.push((
                        i,
                        "match",
                        format!(
                            "every room it matches is matched by the earlier entry {:?} first, \
                             so this one never applies",
                            earlier.pattern
                        ),
                    ));
                    break;
                }
            }
        }
        problems
    }

    /// Checks ranges and relations serde cannot; each problem names the key it is about.
    fn validate(&self) -> Vec<(&'static str, String)> {
        let mut problems = Vec::new();
        let mut check = |ok: bool, key: &'static str, message: String| {
            if !ok {
                problems.push((key, message));
            }
        };
        let (server, tls, relay, heartbeat, limits) = (
            &self.server,
            &self.tls,
            &self.relay,
            &self.heartbeat,
            &self.limits,
        );

        let jwt = &self.security.jwt;
        check(
            jwt.secret.is_empty() || jwt.public_key.as_os_str().is_empty(),
            "security.jwt",
            "set secret (HS256) or public_key (EdDSA, ES256, RS256), not both".into(),
        );
        check(
            !jwt.name_claim.is_empty() && !jwt.rooms_claim.is_empty(),
            "security.jwt",
            "name_claim and rooms_claim must not be empty".into(),
        );
        check(
            jwt.leeway <= MAX_JWT_LEEWAY,
            "security.jwt",
            "leeway must be at most 1h".into(),
        );
        check(
            jwt.secret.is_empty() || jwt.secret.len() >= 32,
            "security.jwt",
            "secret must be at least 32 bytes (HS256 needs a long random secret)".into(),
        );

        check(
            self.api.keys.iter().all(|k| k.len() >= 16),
            "api.keys",
            "each key must be at least 16 characters (a random secret)".into(),
        );
        check(
            self.api.requests_per_second >= 1,
            "api.requests_per_second",
            "must be at least 1".into(),
        );

        check(
            !server.listen.is_empty(),
            "server.listen",
            "needs at least one address".into(),
        );

        check(
            (1..=MAX_BACKLOG).contains(&server.backlog),
            "server.backlog",
            format!(
                "must be between 1 and {MAX_BACKLOG}, not {}",
                server.backlog
            ),
        );

        // Upper bounds: far above any sensible setting, far below an overflow of the arithmetic
        // done with them (an `Instant` plus a timeout, a buffer of a configured size).
        let durations = [
            (
                "server.drain_timeout",
                server.drain_timeout,
                MAX_DRAIN_TIMEOUT,
            ),
            (
                "presence.interval",
                self.presence.interval,
                MAX_PRESENCE_INTERVAL,
            ),
            (
                "heartbeat.ping_interval",
                heartbeat.ping_interval,
                MAX_PING_INTERVAL,
            ),
            (
                "heartbeat.idle_timeout",
                heartbeat.idle_timeout,
                MAX_IDLE_TIMEOUT,
            ),
            (
                "limits.handshake_timeout",
                limits.handshake_timeout,
                MAX_HANDSHAKE_TIMEOUT,
            ),
            (
                "limits.keepalive_timeout",
                limits.keepalive_timeout,
                MAX_HANDSHAKE_TIMEOUT,
            ),
            (
                "cluster.node_timeout",
                self.cluster.node_timeout,
                MAX_NODE_TIMEOUT,
            ),
            (
                "cluster.history_ttl",
                self.cluster.history_ttl,
                MAX_HISTORY_TTL,
            ),
        ];
        for (key, value, max) in durations {
            check(
                value <= max,
                key,
                format!(
                    "must be at most {}, not {}",
                    humantime::format_duration(max),
                    humantime::format_duration(value)
                ),
            );
        }
        let sizes = [
            (
                "relay.history_bytes",
                relay.history_bytes,
                MAX_HISTORY_BYTES,
            ),
            ("limits.queue_bytes", limits.queue_bytes, MAX_QUEUE_BYTES),
        ];
        for (key, value, max) in sizes {
            check(
                value <= max,
                key,
                format!("must be at most {}MiB, not {value} bytes", max / MIB),
            );
        }

        if tls.enabled && tls.self_signed {
            let given = !tls.cert.as_os_str().is_empty() || !tls.key.as_os_str().is_empty();
            check(
                !given,
                "tls.self_signed",
                "cannot be combined with tls.cert / tls.key: choose one".into(),
            );
        } else if tls.enabled {
            check(
                !tls.cert.as_os_str().is_empty(),
                "tls.cert",
                "is required when tls.enabled = true (or set tls.self_signed = true for development)"
                    .into(),
            );
            check(
                !tls.key.as_os_str().is_empty(),
                "tls.key",
                "is required when tls.enabled = true (or set tls.self_signed = true for development)"
                    .into(),
            );
        }

        check(
            crate::proto::names::is_room_name(&relay.default_room),
            "relay.default_room",
            format!(
                "{:?} is not a room name (1-64 letters or digits of any script and . _ -, in NFC)",
                relay.default_room
            ),
        );
        check(
            (1..=MAX_MESSAGE_SIZE_CEILING).contains(&relay.max_message_size),
            "relay.max_message_size",
            format!(
                "must be between 1 byte and 64MiB, not {}",
                relay.max_message_size
            ),
        );
        check(
            relay.max_rooms >= 1,
            "relay.max_rooms",
            "must be at least 1".into(),
        );
        check(
            relay.history < limits.queue_messages,
            "relay.history",
            format!(
                "must be below limits.queue_messages ({}): a new member receives the history through its queue",
                limits.queue_messages
            ),
        );

        check(
            !self.presence.interval.is_zero(),
            "presence.interval",
            "must be longer than 0".into(),
        );

        check(
            !heartbeat.ping_interval.is_zero(),
            "heartbeat.ping_interval",
            "must be longer than 0".into(),
        );
        check(
            heartbeat.idle_timeout > heartbeat.ping_interval,
            "heartbeat.idle_timeout",
            format!(
                "must be longer than heartbeat.ping_interval ({}), or live clients are closed between pings",
                humantime::format_duration(heartbeat.ping_interval)
            ),
        );
        check(
            heartbeat.app_ping.is_empty() == heartbeat.app_pong.is_empty(),
            "heartbeat.app_pong",
            "heartbeat.app_ping and heartbeat.app_pong must be set together".into(),
        );

        check(
            !self.cluster.node_timeout.is_zero(),
            "cluster.node_timeout",
            "must be longer than 0".into(),
        );
        // The node id names this node's Redis keys and, with a per-process suffix of up to 24
        // bytes, is the instance id every message carries, which the envelope holds in 255 bytes:
        // a longer one would be cut, and the node would take its own messages for another's.
        let printable = |s: &str| !s.chars().any(|c| c.is_control() || c.is_whitespace());
        let node_id = &self.cluster.node_id;
        check(
            node_id.len() <= MAX_NODE_ID_BYTES && printable(node_id),
            "cluster.node_id",
            format!(
                "must be at most {MAX_NODE_ID_BYTES} bytes without spaces or control characters \
                 (\"\" = the host name)"
            ),
        );
        let prefix = &self.cluster.prefix;
        check(
            !prefix.is_empty() && prefix.len() <= MAX_PREFIX_BYTES && printable(prefix),
            "cluster.prefix",
            format!("must be 1-{MAX_PREFIX_BYTES} bytes without spaces or control characters"),
        );
        check(
            !self.cluster.history_ttl.is_zero(),
            "cluster.history_ttl",
            "must be longer than 0".into(),
        );

        check(
            limits.max_connections >= 1,
            "limits.max_connections",
            "must be at least 1".into(),
        );
        check(
            limits.max_connections_per_ip >= 1,
            "limits.max_connections_per_ip",
            "must be at least 1".into(),
        );
        check(
            limits.messages_per_second >= 1,
            "limits.messages_per_second",
            "must be at least 1".into(),
        );
        check(
            limits.burst >= 1,
            "limits.burst",
            "must be at least 1".into(),
        );
        check(
            limits.queue_messages >= 1,
            "limits.queue_messages",
            "must be at least 1".into(),
        );
        check(
            limits.queue_bytes >= relay.max_message_size,
            "limits.queue_bytes",
            format!(
                "must hold at least one message of relay.max_message_size ({} bytes)",
                relay.max_message_size
            ),
        );
        check(
            !limits.handshake_timeout.is_zero(),
            "limits.handshake_timeout",
            "must be longer than 0".into(),
        );
        check(
            !limits.keepalive_timeout.is_zero(),
            "limits.keepalive_timeout",
            "must be longer than 0".into(),
        );
        check(
            limits.keepalive_requests > 0,
            "limits.keepalive_requests",
            "must be at least 1".into(),
        );

        for origin in &self.security.allowed_origins {
            check(
                is_origin(origin),
                "security.allowed_origins",
                format!(
                    "{origin:?} is not an origin like \"https://chat.example.com\" (scheme://host[:port], no path)"
                ),
            );
        }

        check(
            is_log_filter(&self.log.level),
            "log.level",
            format!(
                "{:?} is not a level or filter (error, warn, info, debug, trace, or target=level,...)",
                self.log.level
            ),
        );

        let redis = &self.cluster.redis;
        check(
            redis.is_empty()
                || (redis.starts_with("redis://") || redis.starts_with("rediss://"))
                    && ::redis::Client::open(redis.as_str()).is_ok()
                || SentinelUrl::parse(redis).is_some(),
            "cluster.redis",
            "must be a redis://, rediss:// or redis+sentinel:// URL (the value is secret and not shown)".into(),
        );
        // The JSON envelope makes a message larger than what was sent (escaping, at most 6x).
        let wrapped = crate::relay::envelope::max_relayed_bytes(self);
        check(
            relay.envelope == Envelope::None || limits.queue_bytes >= wrapped,
            "limits.queue_bytes",
            format!(
                "must hold one wrapped message with relay.envelope = \"json\" ({wrapped} bytes: \
                 6 x relay.max_message_size + 736 for the envelope)"
            ),
        );
        // Presence state and history replay vs the outbound queue (rooms own these rules).
        problems.extend(crate::relay::hub::check_config(self));
        problems
    }
}

/// Whether `message` names the dotted `key` (`relay.history`, but not within `relay.history_bytes`).
fn mentions(message: &str, key: &str) -> bool {
    message.match_indices(key).any(|(at, _)| {
        !message[at + key.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// `scheme://host[:port]` as a browser sends it in `Origin`.
fn is_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    matches!(scheme, "http" | "https")
        && !rest.is_empty()
        && !rest.contains(['/', '?', '#', '@', ' '])
}

/// A level (`info`) or a list of `target=level` directives; a bare word that is not a level would
/// be read by tracing as a target name, which is never what a user means.
fn is_log_filter(filter: &str) -> bool {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    filter.split(',').all(|d| {
        let d = d.trim();
        d.contains('=') || LEVELS.iter().any(|l| l.eq_ignore_ascii_case(d))
    }) && tracing_subscriber::EnvFilter::try_new(filter).is_ok()
}

/// The machine's host name from `uname(2)` (what `gethostname()` returns). Not
/// `/proc/sys/kernel/hostname`: the shipped unit's `ProcSubset=pid` hides it, which made every
/// node of a cluster `wsline`. That fallback stays for a name that is empty or not UTF-8.
fn hostname() -> String {
    let uname = rustix::system::uname();
    uname
        .nodename()
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map_or_else(|| "wsline".into(), str::to_owned)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Other(serde::de::IgnoredAny),
    }
    let Raw::Text(text) = Raw::deserialize(de)? else {
        return Err(serde::de::Error::custom(
            "a duration is a string with a unit, like \"30s\", \"250ms\" or \"2m\"",
        ));
    };
    humantime::parse_duration(&text).map_err(|e| {
        serde::de::Error::custom(format!(
            "invalid duration {text:?} ({e}): write it like \"30s\", \"250ms\" or \"2m\""
        ))
    })
}

fn size<'de, D: Deserializer<'de>>(de: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Bytes(u64),
        Text(String),
    }
    let invalid = |shown: String| {
        serde::de::Error::custom(format!(
            "invalid size {shown}: write a number of bytes or a string like \"64KiB\" or \"4MiB\""
        ))
    };
    match Raw::deserialize(de).map_err(|_| invalid("(not a number or string)".into()))? {
        Raw::Bytes(n) => Ok(n),
        Raw::Text(text) => text
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|_| invalid(format!("{text:?}"))),
    }
}

/// [`size`] for an override that may be absent.
fn some_size<'de, D: Deserializer<'de>>(de: D) -> Result<Option<u64>, D::Error> {
    size(de).map(Some)
}

fn one_or_many<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<SocketAddr>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        One(String),
        Many(Vec<String>),
    }
    let list = match Raw::deserialize(de)
        .map_err(|_| serde::de::Error::custom("expected an address string or a list of them"))?
    {
        Raw::One(a) => vec![a],
        Raw::Many(v) => v,
    };
    list.iter()
        .map(|a| {
            a.parse().map_err(|_| {
                serde::de::Error::custom(format!(
                    "invalid listen address {a:?}: write IP:PORT, like \"0.0.0.0:3456\" or \"[::]:3456\""
                ))
            })
        })
        .collect()
}

/// CIDR blocks; a bare address means that one host. Every invalid entry is named at once.
fn cidrs<'de, D: Deserializer<'de>>(de: D) -> Result<Vec<IpNet>, D::Error> {
    let list = Vec::<String>::deserialize(de)?;
    let parse = |s: &String| {
        s.parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
    };
    let invalid: Vec<String> = list
        .iter()
        .filter(|s| parse(s).is_err())
        .map(|s| format!("{s:?}"))
        .collect();
    if !invalid.is_empty() {
        return Err(serde::de::Error::custom(format!(
            "invalid address block {}: write it like \"10.0.0.0/8\" or \"::1\"",
            invalid.join(", ")
        )));
    }
    Ok(list.iter().filter_map(|s| parse(s).ok()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<Problem> {
        Config::from_toml(text).expect_err("config should be rejected")
    }

    #[test]
    fn minimal_file_gets_every_default() {
        let c = Config::from_toml(
            "[server]\nlisten = \"0.0.0.0:3456\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
        )
        .unwrap();
        assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
        assert_eq!(c.relay.default_room, "lobby");
        assert_eq!(c.relay.max_message_size, 65536);
        assert_eq!(c.limits.queue_bytes, 4 << 20);
        assert_eq!(c.presence.interval, Duration::from_millis(100));
        assert_eq!(c.presence.format, PresenceFormat::Json);
        assert_eq!(c.heartbeat.idle_timeout, Duration::from_secs(75));
        assert_eq!(c.security.trusted_proxies.len(), 2);
        assert!(!c.cluster.node_id.is_empty());
    }

    /// The default node id is the kernel's host name, read with `uname(2)` (which works where
    /// `ProcSubset=pid` hides `/proc/sys`; here /proc is whole, so the two must agree).
    #[test]
    fn the_default_node_id_is_the_host_name() {
        let c = Config::from_toml("[tls]\nenabled = false\n").unwrap();
        let proc = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
        assert_eq!(c.cluster.node_id, proc.trim());
    }

    #[test]
    fn listen_takes_one_address_or_a_list() {
        let c = Config::from_toml(
            "[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n[tls]\nenabled = false\n",
        )
        .unwrap();
        assert_eq!(c.server.listen.len(), 2);
        assert!(c.server.listen[1].is_ipv6());
    }

    #[test]
    fn sizes_take_integers_and_units() {
        let c = Config::from_toml(
            "[tls]\nenabled = false\n[relay]\nmax_message_size = 1000\n[limits]\nqueue_bytes = \"1MiB\"\n",
        )
        .unwrap();
        assert_eq!(c.relay.max_message_size, 1000);
        assert_eq!(c.limits.queue_bytes, 1 << 20);
    }

    #[test]
    fn unknown_key_is_reported_at_its_line_and_column() {
        let p = problems("[tls]\nenabled = false\n[relay]\n  echoo = true\n");
        assert_eq!((p[0].line, p[0].column), (4, 3), "{p:?}");
        assert!(p[0].message.contains("echoo"), "{p:?}");
    }

    #[test]
    fn bad_duration_is_reported_at_its_value() {
        let p = problems("[tls]\nenabled = false\n[heartbeat]\nping_interval = \"30 parsecs\"\n");
        assert_eq!((p[0].line, p[0].column), (4, 17), "{p:?}");
        assert!(p[0].message.contains("invalid duration"), "{p:?}");
    }

    #[test]
    fn bad_size_is_reported_at_its_value() {
        let p = problems("[tls]\nenabled = false\n[limits]\nqueue_bytes = \"lots\"\n");
        assert_eq!((p[0].line, p[0].column), (4, 15), "{p:?}");
        assert!(p[0].message.contains("invalid size"), "{p:?}");
    }

    #[test]
    fn bad_enum_and_bad_address_are_reported() {
        let p = problems("[tls]\nenabled = false\n[presence]\nformat = \"xml\"\n");
        assert_eq!(p[0].line, 4);
        assert!(p[0].message.contains("xml"), "{p:?}");
        let p = problems("[server]\nlisten = \"localhost\"\n[tls]\nenabled = false\n");
        assert_eq!(p[0].line, 2);
        assert!(p[0].message.contains("invalid listen address"), "{p:?}");
    }

    #[test]
    fn syntax_error_has_a_location() {
        let p = problems("[server\nlisten = 1\n");
        assert_eq!(p[0].line, 1, "{p:?}");
    }

    #[test]
    fn every_semantic_problem_is_reported_with_its_key_location() {
        let p = problems(concat!(
            "[tls]\n",
            "enabled = true\n",
            "[relay]\n",
            "default_room = \"no/slash\"\n",
            "[heartbeat]\n",
            "ping_interval = \"30s\"\n",
            "idle_timeout = \"10s\"\n",
            "[security]\n",
            "allowed_origins = [\"example.com\"]\n",
        ));
        let found: Vec<(usize, &str)> = p
            .iter()
            .map(|p| (p.line, p.message.split(':').next().unwrap()))
            .collect();
        assert!(found.contains(&(1, "tls.cert")), "{found:?}");
        assert!(found.contains(&(1, "tls.key")), "{found:?}");
        assert!(found.contains(&(4, "relay.default_room")), "{found:?}");
        assert!(found.contains(&(7, "heartbeat.idle_timeout")), "{found:?}");
        assert!(
            found.contains(&(9, "security.allowed_origins")),
            "{found:?}"
        );
        assert_eq!(p.len(), 5, "{p:?}");
    }

    #[test]
    fn zero_and_inverted_limits_are_rejected() {
        let p = problems(concat!(
            "[tls]\nenabled = false\n",
            "[limits]\nburst = 0\nqueue_bytes = 100\n",
            "[relay]\nhistory = 5000\n",
            "[log]\nlevel = \"loud\"\n",
        ));
        let keys: Vec<&str> = p
            .iter()
            .map(|p| p.message.split(':').next().unwrap())
            .collect();
        // In file order, whatever check found them.
        assert_eq!(
            keys,
            [
                "presence.max_names",
                "limits.burst",
                "limits.queue_bytes",
                "relay.history",
                "log.level"
            ],
            "{p:?}"
        );
    }

    #[test]
    fn sentinel_urls_name_their_sentinels_master_and_password() {
        let u =
            SentinelUrl::parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/relay").unwrap();
        assert_eq!(u.hosts, ["10.0.0.1:26379", "10.0.0.2:26380"]);
        assert_eq!(
            (u.master.as_str(), u.password.as_deref()),
            ("relay", Some("pw"))
        );
        let u = SentinelUrl::parse("redis+sentinel://127.0.0.1:26379/m").unwrap();
        assert_eq!(u.password, None);
        for bad in [
            "redis://127.0.0.1:6379",
            "redis+sentinel://127.0.0.1:26379",
            "redis+sentinel://127.0.0.1:26379/",
            "redis+sentinel://127.0.0.1/m",
            "redis+sentinel://:26379/m",
            "redis+sentinel://h:1/m/extra",
        ] {
            assert_eq!(SentinelUrl::parse(bad), None, "{bad}");
        }
        let file = |url: &str| {
            format!(
                "[server]\nlisten = \"0.0.0.0:3456\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n\
                 [cluster]\nredis = \"{url}\"\n"
            )
        };
        let c = Config::from_toml(&file("redis+sentinel://127.0.0.1:26379/relay")).unwrap();
        assert_eq!(c.cluster.history_ttl, Duration::from_secs(3600));
        let p = problems(&file("redis+sentinel://127.0.0.1/relay"));
        assert!(
            p.iter().any(|p| p.message.contains("cluster.redis")),
            "{p:?}"
        );
    }

    /// What the fuzz target (fuzz/fuzz_targets/config.rs) checks, on a fixed set of edits of the
    /// sample file, so that it runs with every `cargo test`.
    #[test]
    fn hostile_edits_of_the_sample_are_problems_not_panics() {
        let sample = include_str!("../../config/wsline.toml");
        let inserts = [
            "\"",
            "'",
            "[",
            "]]",
            " = ",
            "\n",
            "é",
            "\u{200b}",
            "[[server]]\n",
            "= -1",
            "\"\"\"",
            "#",
            "{",
            "}",
            ".",
            "x.y = 1\n",
            "[limits]\n",
            "\\u",
            "99999999999999999999",
        ];
        let assert_located = |text: &str| {
            if let Err(problems) = Config::from_toml(text) {
                let lines = text.lines().count().max(1) + 1;
                assert!(!problems.is_empty());
                for p in problems {
                    assert!((1..=lines).contains(&p.line) && p.column >= 1, "{p:?}");
                }
            }
        };
        let boundaries = (0..=sample.len()).filter(|&i| sample.is_char_boundary(i));
        for (n, i) in boundaries.step_by(3).enumerate() {
            let mut edited = sample.to_owned();
            edited.insert_str(i, inserts[n % inserts.len()]);
            assert_located(&edited);
            assert_located(&sample[..i]);
        }
    }

    #[test]
    fn a_key_is_mentioned_only_by_its_whole_name() {
        assert!(mentions("below relay.history (5)", "relay.history"));
        assert!(!mentions("below relay.history_bytes", "relay.history"));
    }

    #[test]
    fn self_signed_excludes_cert_and_key() {
        let p = problems("[tls]\nself_signed = true\ncert = \"/c.pem\"\n");
        assert!(p[0].message.starts_with("tls.self_signed"), "{p:?}");
    }

    #[test]
    fn cidrs_accept_bare_addresses() {
        let c = Config::from_toml(
            "[tls]\nenabled = false\n[security]\ntrusted_proxies = [\"10.0.0.1\", \"fd00::/8\"]\n",
        )
        .unwrap();
        assert_eq!(c.security.trusted_proxies[0].prefix_len(), 32);
        let p = problems(
            "[tls]\nenabled = false\n[metrics]\nallow = [\"10.0.0.0/8\", \"nope\", \"300.1.1.1\"]\n",
        );
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].message.contains("\"nope\", \"300.1.1.1\""), "{p:?}");
    }

    fn keys_and_lines(p: &[Problem]) -> Vec<(usize, usize, &str)> {
        p.iter()
            .map(|p| (p.line, p.column, p.message.split(':').next().unwrap()))
            .collect()
    }

    const ROOMS: &str = "[tls]\nenabled = false\n\
        [[rooms]]\nmatch = \"count-*\"\npresence = { format = \"plain\" }\n\
        [[rooms]]\nmatch = \"chat-*\"\nrelay = { envelope = \"json\", history = 50 }\n\
        presence = { require_name = true }\n\
        [[rooms]]\nmatch = \"我的房间\"\nheartbeat = { app_ping = \"p\", app_pong = \"q\" }\n";

    #[test]
    fn rooms_by_pattern_first_match_wins_and_the_rest_use_the_globals() {
        let config = std::sync::Arc::new(Config::from_toml(ROOMS).unwrap());
        let count = config.for_room("count-1");
        assert_eq!(count.presence.format, PresenceFormat::Plain);
        assert_eq!(count.relay.envelope, Envelope::None);
        let chat = config.for_room("chat-general");
        assert_eq!(chat.relay.envelope, Envelope::Json);
        assert_eq!(chat.relay.history, 50);
        assert!(chat.presence.require_name);
        assert_eq!(chat.presence.format, PresenceFormat::Json, "not overridden");
        assert_eq!(config.for_room("我的房间").heartbeat.app_ping, "p");
        assert_eq!(
            config.for_room("我的房间2").heartbeat.app_ping,
            "",
            "exact match only"
        );
        assert!(
            std::sync::Arc::ptr_eq(&count, &config.for_room("count-2")),
            "one copy per entry, shared by its rooms"
        );
        let other = config.for_room("lobby");
        assert!(
            std::sync::Arc::ptr_eq(&other, &config),
            "no entry: the same configuration"
        );
        // "chat" alone is not "chat-*".
        assert_eq!(config.for_room("chat").relay.envelope, Envelope::None);
    }

    #[test]
    fn room_entries_are_checked_like_the_globals_at_their_line() {
        let p = problems(concat!(
            "[tls]\nenabled = false\n",
            "[limits]\nqueue_messages = 10\n",
            "[[rooms]]\n",
            "match = \"a-*\"\n",
            "relay = { history = 20, colour = 1 }\n",
            "[[rooms]]\n",
            "match = \"b b\"\n",
            "[[rooms]]\n",
            "match = \"c\"\n",
            "heartbeat = { app_ping = \"x\" }\n",
            "presence = { format = \"loud\" }\n",
            "volume = 11\n",
            "[[rooms]]\n",
            "relay = { echo = false }\n",
            "[[rooms]]\n",
            "match = \"a-b*\"\n",
        ));
        let got: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.message.as_str())).collect();
        let has = |line: usize, needle: &str| {
            assert!(
                got.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "line {line}: {needle:?} in {got:#?}"
            )
        };
        has(
            7,
            "[[rooms]] #1: relay.colour: unknown key; [[rooms]] may set relay.{echo, envelope",
        );
        has(
            7,
            "[[rooms]] #1 (match = \"a-*\"): relay.history: must be below limits.queue_messages",
        );
        has(
            9,
            "[[rooms]] #2 (match = \"b b\"): match: \"b b\" is neither a room name",
        );
        has(
            12,
            "heartbeat.app_ping: heartbeat.app_ping and heartbeat.app_pong must be set together",
        );
        has(13, "[[rooms]] #3: presence.format: unknown variant `loud`");
        has(
            14,
            "[[rooms]] #3: volume: unknown key; an entry has match, relay, presence, heartbeat",
        );
        has(15, "[[rooms]] #4 (match = \"\"): match: is required");
        has(
            18,
            "[[rooms]] #5 (match = \"a-b*\"): match: every room it matches is matched by the earlier entry \"a-*\"",
        );
        assert_eq!(p.len(), 8, "{got:#?}");
        // The globals' own problems are not repeated for each entry.
        let p =
            problems("[tls]\nenabled = false\n[server]\nbacklog = 0\n[[rooms]]\nmatch = \"x\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        // A replay must fit the queue in a room that turns history on.
        let p = problems(concat!(
            "[tls]\nenabled = false\n[limits]\nqueue_bytes = \"1MiB\"\n",
            "[[rooms]]\nmatch = \"h-*\"\nrelay = { history = 10, history_bytes = \"900KiB\" }\n",
        ));
        assert!(
            p[0].message.contains("relay.history_bytes: a replay of"),
            "{p:?}"
        );
        assert!(
            problems("rooms = 3\n[tls]\nenabled = false\n")[0]
                .message
                .contains("written [[rooms]]")
        );
    }

    #[test]
    fn every_unknown_key_type_error_and_range_problem_in_one_run() {
        let p = problems(concat!(
            "[tls]\n",
            "enabled = false\n",
            "[relay]\n",
            "echoo = true\n",
            "[limits]\n",
            "max_connections = -5\n",
            "burst = \"x\"\n",
            "handshake_timeout = \"0s\"\n",
            "[heartbeat]\n",
            "pingg = \"1s\"\n",
            "[sever]\n",
            "listen = \"127.0.0.1:1\"\n",
        ));
        assert_eq!(
            keys_and_lines(&p),
            [
                (4, 1, "relay.echoo"),
                (6, 19, "limits.max_connections"),
                (7, 9, "limits.burst"),
                (8, 21, "limits.handshake_timeout"),
                (10, 1, "heartbeat.pingg"),
                (11, 2, "[sever]"),
            ],
            "{p:#?}"
        );
        assert!(p[0].message.contains("unknown key"), "{p:?}");
        assert!(p[0].message.contains("echo, "), "lists the keys: {p:?}");
        assert!(p[1].message.contains("-5"), "{p:?}");
        assert!(p[3].message.contains("longer than 0"), "{p:?}");
        assert!(p[5].message.contains("unknown section"), "{p:?}");
    }

    #[test]
    fn a_key_that_did_not_parse_raises_no_second_complaint() {
        // ping_interval is not a duration: idle_timeout's comparison with it would be about a
        // default the user never wrote, so only the type error is reported.
        let p = problems(concat!(
            "[tls]\nenabled = false\n",
            "[heartbeat]\nping_interval = 90\nidle_timeout = \"60s\"\n",
        ));
        assert_eq!(keys_and_lines(&p), [(4, 17, "heartbeat.ping_interval")]);
        assert!(p[0].message.contains("like \"30s\""), "{p:?}");
        let p = problems("limits = 5\n[tls]\nenabled = false\n");
        assert_eq!(keys_and_lines(&p), [(1, 10, "limits")]);
        assert!(p[0].message.contains("must be a table"), "{p:?}");
    }

    #[test]
    fn a_huge_duration_is_refused_at_its_line_not_a_panic_later() {
        let p = problems("[tls]\nenabled = false\n[heartbeat]\nidle_timeout = \"300000000000y\"\n");
        assert_eq!(keys_and_lines(&p), [(4, 16, "heartbeat.idle_timeout")]);
        assert!(p[0].message.contains("must be at most 1day"), "{p:?}");
        // Every duration has its bound.
        for (section, key) in [
            ("server", "drain_timeout"),
            ("presence", "interval"),
            ("heartbeat", "ping_interval"),
            ("limits", "handshake_timeout"),
            ("limits", "keepalive_timeout"),
            ("cluster", "node_timeout"),
        ] {
            let text = format!("[tls]\nenabled = false\n[{section}]\n{key} = \"300000000000y\"\n");
            let p = problems(&text);
            let dotted = format!("{section}.{key}: must be at most");
            assert!(
                p.iter()
                    .any(|p| p.line == 4 && p.message.starts_with(&dotted)),
                "{p:?}"
            );
        }
    }

    #[test]
    fn every_size_has_a_ceiling() {
        let p = problems(concat!(
            "[tls]\nenabled = false\n",
            "[relay]\nmax_message_size = \"1GiB\"\nhistory_bytes = \"1TiB\"\n",
            "[limits]\nqueue_bytes = \"2GiB\"\n",
            "[server]\nbacklog = 4294967295\n",
        ));
        assert_eq!(
            keys_and_lines(&p),
            [
                (4, 20, "relay.max_message_size"),
                (5, 17, "relay.history_bytes"),
                (7, 15, "limits.queue_bytes"),
                (9, 11, "server.backlog"),
            ],
            "{p:#?}"
        );
    }

    #[test]
    fn cluster_node_id_and_prefix_are_checked() {
        let long = "n".repeat(201);
        let p = problems(&format!(
            "[tls]\nenabled = false\n[cluster]\nnode_id = \"{long}\"\nprefix = \"\"\n"
        ));
        assert_eq!(
            keys_and_lines(&p),
            [(4, 11, "cluster.node_id"), (5, 10, "cluster.prefix")],
            "{p:#?}"
        );
        let p = problems("[tls]\nenabled = false\n[cluster]\nnode_id = \"a b\"\n");
        assert_eq!(keys_and_lines(&p), [(4, 11, "cluster.node_id")]);
        let ok =
            "[tls]\nenabled = false\n[cluster]\nnode_id = \"node-1.eu\"\nprefix = \"app:ws\"\n";
        assert!(Config::from_toml(ok).is_ok());
    }

    #[test]
    fn errors_about_secrets_never_show_them() {
        let p = problems(concat!(
            "[tls]\nenabled = false\n",
            "[security]\ntoken = 123456789\n",
            "[cluster]\nredis = \"http://admin:hunter2@10.0.0.5:6379\"\n",
        ));
        assert_eq!(
            keys_and_lines(&p),
            [(4, 9, "security.token"), (6, 9, "cluster.redis")]
        );
        assert_eq!(
            p[0].message,
            "security.token: must be a string (the value is secret and not shown)"
        );
        let all = format!("{p:?}");
        for secret in ["123456789", "hunter2", "admin", "10.0.0.5"] {
            assert!(!all.contains(secret), "{secret} in {all}");
        }
        let p = problems("[tls]\nenabled = false\n[cluster]\nredis = [\"pw-in-a-list\"]\n");
        assert!(!format!("{p:?}").contains("pw-in-a-list"), "{p:?}");
    }

    #[test]
    fn relative_certificate_paths_are_taken_from_the_config_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("wsline.toml");
        std::fs::write(
            &path,
            "[tls]\ncert = \"certs/fullchain.pem\"\nkey = \"/abs/privkey.pem\"\n",
        )
        .unwrap();
        let c = Config::load(&path).unwrap();
        assert_eq!(c.tls.cert, dir.path().join("certs/fullchain.pem"));
        assert_eq!(c.tls.key, Path::new("/abs/privkey.pem"));
        // A later problem with a key still points at its line.
        assert_eq!(
            c.origin.describe("tls.cert", "cannot read"),
            format!("{}:2:8: cannot read", path.display())
        );
        assert_eq!(
            c.origin.describe("tls.self_signed", "x"),
            format!("{}: x", path.display())
        );
    }
}

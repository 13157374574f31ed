//! Every rule a configuration must meet beyond its shape: ranges, upper bounds and relations
//! between keys, the `[[rooms]]` entries (`rooms`), and what must fit a member's queue (`queue`).
//! [`validate`] is the only maker of a [`Config`].
//!
//! A rule says which key it is about and what is wrong, as plain text: where that key sits in the
//! file and how the problem is shown is `load`'s and `problems`' job, not this module's.

use std::time::Duration;

use super::raw::RawConfig;
use super::values::SentinelUrl;
use super::{Config, Origin, Resolved};

mod queue;
mod rooms;

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

/// What a rule says is wrong: the key it is about and why, and for a `[[rooms]]` entry, which one
/// (its index and `match`).
#[derive(Debug)]
pub(super) struct Complaint {
    pub entry: Option<(usize, String)>,
    pub key: &'static str,
    pub message: String,
}

/// `key: message`, after the entry it is in: `[[rooms]] #2 (match = "chat-*"): key: message`.
impl std::fmt::Display for Complaint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some((i, pattern)) = &self.entry {
            write!(f, "[[rooms]] #{} (match = {pattern:?}): ", i + 1)?;
        }
        write!(f, "{}: {}", self.key, self.message)
    }
}

/// Checks `raw` by every rule; if it meets them all, it becomes the [`Config`] (with `origin`,
/// where its keys were written).
pub(super) fn validate(raw: RawConfig, origin: Origin) -> Result<Config, Vec<Complaint>> {
    let complaints = complaints(&raw);
    if !complaints.is_empty() {
        return Err(complaints);
    }
    Ok(Config {
        server: raw.server,
        tls: raw.tls,
        relay: raw.relay,
        presence: raw.presence,
        heartbeat: raw.heartbeat,
        limits: raw.limits,
        security: raw.security,
        log: raw.log,
        metrics: raw.metrics,
        web: raw.web,
        cluster: raw.cluster,
        api: raw.api,
        rooms: raw.rooms,
        origin,
        resolved: Resolved::default(),
    })
}

impl Config {
    /// What the rules say of this configuration as it now stands, changed in code after it was
    /// validated (as tests do): one `key: message` each, none when it still meets them all.
    pub fn problems(&self) -> Vec<String> {
        let raw = RawConfig {
            server: self.server.clone(),
            tls: self.tls.clone(),
            relay: self.relay.clone(),
            presence: self.presence.clone(),
            heartbeat: self.heartbeat.clone(),
            limits: self.limits.clone(),
            security: self.security.clone(),
            log: self.log.clone(),
            metrics: self.metrics.clone(),
            web: self.web.clone(),
            cluster: self.cluster.clone(),
            api: self.api.clone(),
            rooms: self.rooms.clone(),
        };
        complaints(&raw).iter().map(ToString::to_string).collect()
    }
}

/// Every rule's complaint about `raw`: the global settings', then each `[[rooms]]` entry's.
fn complaints(raw: &RawConfig) -> Vec<Complaint> {
    let global = check(raw);
    let entries = rooms::check(raw, &global);
    let global = global.into_iter().map(|(key, message)| Complaint {
        entry: None,
        key,
        message,
    });
    let entries = entries.into_iter().map(|(i, key, message)| Complaint {
        entry: Some((i, raw.rooms[i].pattern.clone())),
        key,
        message,
    });
    global.chain(entries).collect()
}

/// Checks ranges and relations serde cannot; each problem names the key it is about.
fn check(raw: &RawConfig) -> Vec<(&'static str, String)> {
    let mut problems = Vec::new();
    let mut check = |ok: bool, key: &'static str, message: String| {
        if !ok {
            problems.push((key, message));
        }
    };
    let (server, tls, relay, heartbeat, limits) = (
        &raw.server,
        &raw.tls,
        &raw.relay,
        &raw.heartbeat,
        &raw.limits,
    );

    let jwt = &raw.security.jwt;
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
        raw.api.keys.iter().all(|k| k.len() >= 16),
        "api.keys",
        "each key must be at least 16 characters (a random secret)".into(),
    );
    check(
        raw.api.requests_per_second >= 1,
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
            raw.presence.interval,
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
            raw.cluster.node_timeout,
            MAX_NODE_TIMEOUT,
        ),
        (
            "cluster.history_ttl",
            raw.cluster.history_ttl,
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
        !raw.presence.interval.is_zero(),
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
        !raw.cluster.node_timeout.is_zero(),
        "cluster.node_timeout",
        "must be longer than 0".into(),
    );
    // The node id names this node's Redis keys and, with a per-process suffix of up to 24
    // bytes, is the instance id every message carries, which the envelope holds in 255 bytes:
    // a longer one would be cut, and the node would take its own messages for another's.
    let printable = |s: &str| !s.chars().any(|c| c.is_control() || c.is_whitespace());
    let node_id = &raw.cluster.node_id;
    check(
        node_id.len() <= MAX_NODE_ID_BYTES && printable(node_id),
        "cluster.node_id",
        format!(
            "must be at most {MAX_NODE_ID_BYTES} bytes without spaces or control characters \
                 (\"\" = the host name)"
        ),
    );
    let prefix = &raw.cluster.prefix;
    check(
        !prefix.is_empty() && prefix.len() <= MAX_PREFIX_BYTES && printable(prefix),
        "cluster.prefix",
        format!("must be 1-{MAX_PREFIX_BYTES} bytes without spaces or control characters"),
    );
    check(
        !raw.cluster.history_ttl.is_zero(),
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

    for origin in &raw.security.allowed_origins {
        check(
            is_origin(origin),
            "security.allowed_origins",
            format!(
                "{origin:?} is not an origin like \"https://chat.example.com\" (scheme://host[:port], no path)"
            ),
        );
    }

    check(
        is_log_filter(&raw.log.level),
        "log.level",
        format!(
            "{:?} is not a level or filter (error, warn, info, debug, trace, or target=level,...)",
            raw.log.level
        ),
    );

    let redis = &raw.cluster.redis;
    check(
            redis.is_empty()
                || (redis.starts_with("redis://") || redis.starts_with("rediss://"))
                    && ::redis::Client::open(redis.as_str()).is_ok()
                || SentinelUrl::parse(redis).is_some(),
            "cluster.redis",
            "must be a redis://, rediss:// or redis+sentinel:// URL (the value is secret and not shown)".into(),
        );
    // What must fit a member's outbound queue: a wrapped message, a presence state, a replay.
    problems.extend(queue::check(raw));
    problems
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

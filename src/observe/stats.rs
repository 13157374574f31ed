//! Counters shared by the connection tasks, and the one [`Snapshot`] of them that both `/stats`
//! (as JSON) and `/metrics` (as OpenMetrics text) report, so the two cannot drift apart.
//!
//! Plain relaxed atomics: each is a monotonic count read for reporting only, so no ordering between
//! them is promised. Fan-out adds its deliveries once per message, not once per receiver.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    /// Text and binary messages received from clients and relayed.
    pub messages_in: AtomicU64,
    /// Relayed messages queued to receivers (one per receiver).
    pub messages_out: AtomicU64,
    /// Presence messages queued to receivers.
    pub presence_out: AtomicU64,
    /// Connections closed because they could not keep up (1013).
    pub slow_consumers: AtomicU64,
    /// Connections accepted since start (upgraded to WebSocket).
    pub connections_total: AtomicU64,
    /// Sockets closed at `accept()` because a connection limit was reached.
    pub sockets_refused: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            presence_out: AtomicU64::new(0),
            slow_consumers: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            sockets_refused: AtomicU64::new(0),
        }
    }
}

/// The server's counters at one moment: the JSON body of `GET /stats`, and what `/metrics`
/// renders.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub node_id: String,
    pub uptime_seconds: u64,
    pub draining: bool,
    pub connections: usize,
    pub connections_total: u64,
    /// Accepted sockets open now, whatever they are doing (TLS handshake, HTTP, WebSocket).
    pub sockets: usize,
    /// How many rooms have members.
    pub room_count: usize,
    /// Every room and its member count; taken for `/stats` only (`/metrics` has the count).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rooms: Option<std::collections::BTreeMap<String, usize>>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub presence_out: u64,
    pub drops: Drops,
    /// The certificate in use; absent when TLS is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
    /// `"single"` without `cluster.redis`, else `"up"` or `"degraded"` (Redis unreachable).
    pub cluster_state: &'static str,
    /// Details of the cluster side; absent on a single node.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::Status>,
}

#[derive(Debug, Serialize)]
pub struct Certificate {
    /// notAfter, RFC 3339 (UTC).
    pub not_after: String,
    pub not_after_unix: i64,
    /// Whole days until notAfter; negative once expired.
    pub days_left: i64,
}

impl Certificate {
    pub fn new(not_after_unix: i64) -> Certificate {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let when =
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(not_after_unix.max(0) as u64);
        Certificate {
            not_after: humantime::format_rfc3339_seconds(when).to_string(),
            not_after_unix,
            days_left: (not_after_unix - now).div_euclid(86_400),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Drops {
    /// Connections closed with 1013 because their outbound queue was full.
    pub slow_consumers: u64,
    /// Sockets closed at `accept()` because a connection limit was reached.
    pub sockets_refused: u64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Whether a snapshot lists every room (for `/stats`) or only counts them (for `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rooms {
    Listed,
    Counted,
}

impl Snapshot {
    pub fn take(state: &crate::State, rooms: Rooms) -> Snapshot {
        let s: &Stats = &state.stats;
        let listed = (rooms == Rooms::Listed).then(|| {
            state
                .hub
                .room_counts()
                .into_iter()
                .map(|(name, n)| (name.to_string(), n))
                .collect::<std::collections::BTreeMap<_, _>>()
        });
        Snapshot {
            node_id: state.config.load().cluster.node_id.clone(),
            uptime_seconds: s.started.elapsed().as_secs(),
            draining: state.shutdown.is_draining(),
            connections: state.hub.total(),
            connections_total: Stats::get(&s.connections_total),
            sockets: state.gate.sockets(),
            room_count: listed
                .as_ref()
                .map_or_else(|| state.hub.room_count(), |r| r.len()),
            rooms: listed,
            messages_in: Stats::get(&s.messages_in),
            messages_out: Stats::get(&s.messages_out),
            presence_out: Stats::get(&s.presence_out),
            drops: Drops {
                slow_consumers: Stats::get(&s.slow_consumers),
                sockets_refused: Stats::get(&s.sockets_refused),
            },
            certificate: state
                .tls
                .as_ref()
                .map(|tls| Certificate::new(tls.not_after())),
            cluster_state: match state.hub.cluster() {
                None => "single",
                Some(c) if c.is_up() => "up",
                Some(_) => "degraded",
            },
            cluster: state.hub.cluster().map(crate::cluster::Cluster::status),
        }
    }
}

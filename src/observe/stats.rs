//! Counters shared by the relay, the connection tasks and the accept loop, and the one
//! [`Snapshot`] of them that both `/stats` (as JSON) and `/metrics` (as OpenMetrics text) report,
//! so the two cannot drift apart.
//!
//! Plain relaxed atomics: each is a monotonic count read for reporting only, so no ordering between
//! them is promised. Fan-out adds what it queued once per message, not once per receiver.
//!
//! This folder sits just above `cluster/` and below everything that counts: it must not import
//! the relay, the connection, the network or the runtime layers. A snapshot is built from
//! explicit [`Parts`] that the HTTP side gathers (the hub's counts, the gate's sockets, the
//! certificate, the cluster's status), never from the server's shared state.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::Serialize;

#[derive(Debug)]
pub struct Stats {
    pub started: Instant,
    /// Text and binary messages received from clients and relayed.
    pub messages_in: AtomicU64,
    /// Relayed messages queued to receivers (one per receiver): pushes into outboxes, not
    /// deliveries; a slow receiver may still be evicted before it writes them.
    pub messages_queued: AtomicU64,
    /// Presence messages queued to receivers (one per receiver).
    pub presence_queued: AtomicU64,
    /// Connections closed with 1013 because they fell behind: their outbound queue was full, or
    /// a write to them stalled.
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
            messages_queued: AtomicU64::new(0),
            presence_queued: AtomicU64::new(0),
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
    pub messages_queued: u64,
    pub presence_queued: u64,
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
    /// Connections closed with 1013 because they fell behind (outbound queue full or a write
    /// stalled).
    pub slow_consumers: u64,
    /// Sockets closed at `accept()` because a connection limit was reached.
    pub sockets_refused: u64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// Every room and its member count for `/stats`, or only how many there are for `/metrics`.
#[derive(Debug)]
pub enum Rooms {
    Listed(Vec<(std::sync::Arc<str>, usize)>),
    Counted(usize),
}

/// What a snapshot is made of besides the counters, gathered by the caller from the layers that
/// own each part.
#[derive(Debug)]
pub struct Parts {
    /// `cluster.node_id` in force.
    pub node_id: String,
    pub draining: bool,
    /// WebSocket connections in all rooms of this node.
    pub connections: usize,
    /// Accepted sockets open now.
    pub sockets: usize,
    pub rooms: Rooms,
    /// The certificate's notAfter (Unix seconds); `None` when TLS is off.
    pub not_after_unix: Option<i64>,
    /// The cluster's status; `None` on a single node.
    pub cluster: Option<crate::cluster::Status>,
}

impl Snapshot {
    /// The counters of `stats` at this moment, with `parts`.
    pub fn take(stats: &Stats, parts: Parts) -> Snapshot {
        let (room_count, rooms) = match parts.rooms {
            Rooms::Counted(n) => (n, None),
            Rooms::Listed(list) => {
                let listed: std::collections::BTreeMap<String, usize> = list
                    .into_iter()
                    .map(|(name, n)| (name.to_string(), n))
                    .collect();
                (listed.len(), Some(listed))
            }
        };
        Snapshot {
            node_id: parts.node_id,
            uptime_seconds: stats.started.elapsed().as_secs(),
            draining: parts.draining,
            connections: parts.connections,
            connections_total: Stats::get(&stats.connections_total),
            sockets: parts.sockets,
            room_count,
            rooms,
            messages_in: Stats::get(&stats.messages_in),
            messages_queued: Stats::get(&stats.messages_queued),
            presence_queued: Stats::get(&stats.presence_queued),
            drops: Drops {
                slow_consumers: Stats::get(&stats.slow_consumers),
                sockets_refused: Stats::get(&stats.sockets_refused),
            },
            certificate: parts.not_after_unix.map(Certificate::new),
            cluster_state: parts.cluster.as_ref().map_or("single", |c| c.state),
            cluster: parts.cluster,
        }
    }
}

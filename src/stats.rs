//! Counters shared by the connection tasks and reported by `/stats`.
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
        }
    }
}

/// The JSON body of `GET /stats`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub node_id: String,
    pub uptime_seconds: u64,
    pub draining: bool,
    pub connections: usize,
    pub connections_total: u64,
    pub rooms: std::collections::BTreeMap<String, usize>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub presence_out: u64,
    pub drops: Drops,
    /// The certificate in use; absent when TLS is off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub certificate: Option<Certificate>,
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
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

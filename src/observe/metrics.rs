//! `GET /metrics`: the [`Snapshot`] that `/stats` reports too (counters and the certificate's
//! expiry), in the OpenMetrics text format that Prometheus scrapes, encoded by `prometheus-client`.
//!
//! A scrape builds a small registry of constant metrics from the live counters: nothing is kept
//! between scrapes, and the hot path only ever touches the atomics in `Stats`. This file renders
//! only: it must not gather what it reports.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::observe::stats::Snapshot;

/// The `Content-Type` of the body [`render`] returns.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn gauge(n: usize) -> ConstGauge {
    ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX))
}

/// The metrics text for `s`.
pub fn render(s: &Snapshot) -> String {
    let mut r = Registry::with_prefix("wsline");
    r.register(
        "connections",
        "Open WebSocket connections",
        gauge(s.connections),
    );
    r.register(
        "rooms",
        "Rooms with at least one member",
        gauge(s.room_count),
    );
    r.register(
        "connections_accepted",
        "WebSocket connections accepted since start",
        ConstCounter::new(s.connections_total),
    );
    r.register(
        "messages_received",
        "Text and binary messages received from clients and relayed",
        ConstCounter::new(s.messages_in),
    );
    r.register(
        "messages_queued",
        "Relayed messages queued to receivers, one per receiver (queued, not yet written)",
        ConstCounter::new(s.messages_queued),
    );
    r.register(
        "presence_messages_queued",
        "Presence messages queued to receivers, one per receiver (queued, not yet written)",
        ConstCounter::new(s.presence_queued),
    );
    r.register(
        "slow_consumer_disconnects",
        "Connections closed with 1013 because they fell behind: their outbound queue was full or a write to them stalled",
        ConstCounter::new(s.drops.slow_consumers),
    );
    r.register(
        "sockets",
        "Accepted sockets open now: TLS handshakes, HTTP keep-alive and WebSocket connections",
        gauge(s.sockets),
    );
    r.register(
        "sockets_refused",
        "Sockets closed at accept because limits.max_connections or max_connections_per_ip was reached",
        ConstCounter::new(s.drops.sockets_refused),
    );
    r.register(
        "draining",
        "1 while the server is shutting down",
        gauge(usize::from(s.draining)),
    );
    r.register_with_unit(
        "uptime",
        "Time since the server started",
        Unit::Seconds,
        ConstGauge::new(i64::try_from(s.uptime_seconds).unwrap_or(i64::MAX)),
    );
    if let Some(cluster) = &s.cluster {
        r.register(
            "cluster_up",
            "1 while Redis is reachable (several nodes), 0 while degraded",
            gauge(usize::from(cluster.state == "up")),
        );
        r.register(
            "cluster_remote_connections",
            "Connections on the other live nodes of the cluster",
            gauge(cluster.remote_connections),
        );
        r.register(
            "cluster_published_messages",
            "Messages sent to the other nodes through Redis",
            ConstCounter::new(cluster.published),
        );
        r.register(
            "cluster_received_messages",
            "Messages received from the other nodes through Redis",
            ConstCounter::new(cluster.received),
        );
        r.register(
            "cluster_dropped_messages",
            "Messages not sent to the other nodes because Redis was unreachable or slow",
            ConstCounter::new(cluster.dropped),
        );
        r.register(
            "cluster_receive_dropped_messages",
            "Messages from the other nodes dropped because this node's receive queue was full",
            ConstCounter::new(cluster.receive_dropped),
        );
        r.register(
            "cluster_unnumbered_messages",
            "Messages of numbered rooms delivered to this node's members only, without a number \
             (no `since` recovers them), because Redis was unreachable or the publish queue full",
            ConstCounter::new(cluster.unnumbered),
        );
        r.register(
            "cluster_reconnects",
            "Times the connection to Redis was made again after a loss",
            ConstCounter::new(cluster.reconnects),
        );
    }
    if let Some(cert) = &s.certificate {
        r.register_with_unit(
            "certificate_expiry_timestamp",
            "When the certificate in use expires (notAfter), as a Unix time",
            Unit::Seconds,
            ConstGauge::new(cert.not_after_unix),
        );
    }
    let mut text = String::new();
    encode(&mut text, &r).expect("writing to a String cannot fail");
    text
}

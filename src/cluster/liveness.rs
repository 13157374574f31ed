//! The heartbeat, on its own task and its own connection: every `node_timeout / 4` (at most
//! every 500 ms) it refreshes this instance's liveness key (TTL `node_timeout`), sweeps instances
//! whose key expired and reads the other nodes' connection totals. Nothing else runs on this
//! connection, so no sync, publish or fan-out can delay it; each beat is bounded by
//! `node_timeout / 4`, so a beat is never later than `node_timeout / 2`.
//!
//! It tells the worker two things through flags: this instance's key had expired (it was swept,
//! or Redis restarted empty): write every entry and name again (`Shared::rewrite`); no beat got
//! through for `node_timeout`: the others have swept this node, so the worker starts a fresh
//! session (`Shared::liveness_lost`).
//!
//! This task must not share its connection or wait on the worker: a beat is never late because of
//! other work.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::AsyncConnectionConfig;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::Shared;
use super::presence::heartbeat;
use super::source::Source;
use super::wire;
use tokio_util::sync::CancellationToken;

/// The longest wait between two heartbeats.
const EVERY_MAX: Duration = Duration::from_millis(500);

/// How often the heartbeat runs for a given `node_timeout`.
pub fn every(node_timeout: Duration) -> Duration {
    (node_timeout / 4)
        .min(EVERY_MAX)
        .max(Duration::from_millis(10))
}

async fn connect(source: &Source, timeout: Duration) -> redis::RedisResult<MultiplexedConnection> {
    let client = source.client().await?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
}

/// Runs until the drain starts.
pub async fn run(s: Arc<Shared>, source: Arc<Source>, stop: CancellationToken) {
    let every = every(s.node_timeout);
    let bound = (s.node_timeout / 4).max(Duration::from_millis(10));
    let mut beats = 0u64;
    let mut last_ok = Instant::now();
    let mut attempt = 0u32;
    let mut seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => return,
            c = tokio::time::timeout(bound, connect(&source, bound)) => c,
        };
        let Ok(Ok(mut conn)) = connected else {
            lost_for(&s, &mut last_ok);
            let wait = wire::backoff(attempt, wire::jitter(&mut seed)).min(every);
            attempt = attempt.saturating_add(1);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(wait) => continue,
            }
        };
        attempt = 0;
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match tokio::time::timeout(bound, heartbeat(&s, &mut conn)).await {
                Ok(Ok(expired)) => {
                    last_ok = Instant::now();
                    if expired && beats > 0 {
                        warn!(instance = %s.instance, "this node's liveness key had expired (late heartbeat or redis restarted); writing its presence and names again");
                        s.rewrite.store(true, Ordering::Relaxed);
                        s.wake.notify_one();
                    }
                    beats += 1;
                }
                failed => {
                    debug!(error = ?failed.map(|r| r.err()), "heartbeat failed; reconnecting its connection");
                    lost_for(&s, &mut last_ok);
                    break;
                }
            }
        }
    }
}

/// No beat since `last_ok`: past `node_timeout`, the worker is told to start over (once per
/// `node_timeout` while it lasts).
fn lost_for(s: &Shared, last_ok: &mut Instant) {
    if last_ok.elapsed() >= s.node_timeout {
        *last_ok = Instant::now();
        s.liveness_lost.store(true, Ordering::Relaxed);
        s.wake.notify_one();
    }
}

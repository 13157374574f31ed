//! The cluster's I/O: one subscriber connection and one command connection per node, the worker
//! that keeps subscriptions, presence entries and liveness in step, and the publisher.
//!
//! The worker (`worker`) owns the subscriber connection. Each turn it reconciles its channel
//! subscriptions with the rooms that have local members (subscribe on the first local member,
//! unsubscribe after the last), writes the presence entries of rooms whose local members changed
//! (then publishes a `P` notice on the room's channel, so the other nodes re-read that one hash:
//! no request fans out to every node), and re-reads rooms another node announced. Every
//! `node_timeout / 4` (at most 500 ms) it refreshes this instance's liveness key (TTL
//! `node_timeout`) and sweeps
//! instances whose key expired: their presence entries, names and connection count go, and their
//! rooms get a notice. On SIGTERM it sweeps itself, so its members leave every count at once.
//!
//! When the subscriber connection drops or a command fails, the node is degraded: it keeps relaying
//! to local members, drops what it would publish, and reconnects with jittered, capped backoff
//! ([`wire::backoff`]); once back it resubscribes, rewrites all its entries and re-claims its names.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{FutureExt, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{Client, RedisResult};
use tracing::{debug, info, warn};

use super::history::{PUBLISH_KEPT, replay_history};
use super::presence::{RELEASE, heartbeat, reclaim_names, store_remote_total, sweep};
use super::wire::{self, Payload};
use super::{Cluster, Out, Shared};
use crate::hub::Hub;
use crate::shutdown::Shutdown;

/// How long one connection attempt or one round of commands may take.
const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// The longest wait between two heartbeats (liveness refresh and sweep check).
const LIVENESS_EVERY_MAX: Duration = Duration::from_millis(500);
/// Messages sent to Redis in one pipeline, at most.
const PUBLISH_BATCH: usize = 512;
/// Pub/sub messages handled before the worker looks at its other duties.
const RECEIVE_BATCH: usize = 1024;

/// Starts the worker and the publisher, tracked by the shutdown's `TaskTracker`.
pub fn spawn(cluster: &Cluster, hub: Hub, shutdown: &Shutdown) {
    let s = cluster.shared().clone();
    let client = match Client::open(s.url.as_str()) {
        Ok(client) => client,
        Err(e) => {
            // Validation parses the URL, so this is rare; the node runs degraded.
            warn!(redis = %wire::redact(&s.url), error = %e, "cluster.redis cannot be used; running alone");
            return;
        }
    };
    let rx = crate::hub::lock(&s.out_rx).take();
    if let Some(rx) = rx {
        let (s, stop) = (s.clone(), shutdown.clone());
        shutdown
            .tracker()
            .spawn(async move { publisher(s, rx, stop).await });
    }
    let stop = shutdown.clone();
    shutdown
        .tracker()
        .spawn(async move { worker(s, client, hub, stop).await });
}

/// A cheap random number in [0, 1) for the backoff jitter (no need for a crypto source).
fn jitter(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

async fn connect(client: &Client) -> RedisResult<(redis::aio::PubSub, ConnectionManager)> {
    let pubsub = client.get_async_pubsub().await?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT))
        .set_number_of_retries(1)
        .set_max_delay(wire::BACKOFF_CAP);
    let commands = client.get_connection_manager_with_config(config).await?;
    Ok((pubsub, commands))
}

/// Why a session with Redis ended.
enum Ended {
    Draining,
    Lost(String),
}

async fn worker(s: Arc<Shared>, client: Client, hub: Hub, shutdown: Shutdown) {
    let mut seed = u64::from(std::process::id()) | 1;
    seed ^= (s.instance.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut attempt = 0u32;
    let mut sessions = 0u64;
    let redis = wire::redact(&s.url);
    loop {
        let connected = tokio::select! {
            _ = shutdown.draining() => break,
            r = tokio::time::timeout(IO_TIMEOUT, connect(&client)) => r,
        };
        let (pubsub, commands) = match connected {
            Ok(Ok(c)) => c,
            failed => {
                let error = match failed {
                    Ok(Err(e)) => e.to_string(),
                    _ => "timed out".to_owned(),
                };
                if attempt == 0 {
                    warn!(%redis, %error, "cluster degraded: redis unreachable; relaying to local members only, retrying");
                }
                let wait = wire::backoff(attempt, jitter(&mut seed));
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = shutdown.draining() => break,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
        };
        if sessions > 0 {
            s.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        sessions += 1;
        attempt = 0;
        s.commands.store(Some(Arc::new(commands.clone())));
        info!(%redis, instance = %s.instance, "cluster connected");
        let ended = session(&s, &hub, pubsub, commands, &shutdown).await;
        s.up.store(false, Ordering::Relaxed);
        match ended {
            Ended::Draining => break,
            Ended::Lost(error) => {
                warn!(%redis, %error, "cluster degraded: redis unreachable; relaying to local members only, reconnecting");
                // Counts from other nodes can no longer be kept right: show this node alone.
                s.remote_total.store(0, Ordering::Relaxed);
                hub.clear_remote();
            }
        }
    }
    s.up.store(false, Ordering::Relaxed);
    // Leave every count at once rather than after node_timeout.
    if let Some(conn) = s.commands.load_full() {
        let mut conn = (*conn).clone();
        match tokio::time::timeout(IO_TIMEOUT, sweep(&s, &mut conn, &s.instance)).await {
            Ok(Ok(())) => info!(instance = %s.instance, "left the cluster"),
            _ => debug!(
                "could not leave the cluster cleanly; the others sweep this node after node_timeout"
            ),
        }
    }
}

/// One connected stretch: returns when the connection is lost or the drain starts.
async fn session(
    s: &Arc<Shared>,
    hub: &Hub,
    pubsub: redis::aio::PubSub,
    mut conn: ConnectionManager,
    shutdown: &Shutdown,
) -> Ended {
    let (mut sink, mut stream) = pubsub.split();
    let mut subscribed: HashSet<Arc<str>> = HashSet::new();
    let mut stale: HashSet<Arc<str>> = HashSet::new();
    // Per subscribed room: the newest stream id replayed or delivered (history's seam).
    let mut seen: HashMap<Arc<str>, wire::StreamId> = HashMap::new();
    let lost = |e: redis::RedisError| Ended::Lost(e.to_string());
    // A fresh session (first start, or Redis came back possibly empty): write everything again.
    if let Err(e) = heartbeat(s, &mut conn).await {
        return lost(e);
    }
    if let Err(e) = reclaim_names(s, hub, &mut conn).await {
        return lost(e);
    }
    {
        let mut dirty = crate::hub::lock(&s.dirty);
        dirty.extend(hub.room_names());
    }
    s.up.store(true, Ordering::Relaxed);
    // Refresh and check often enough that a dead node is swept within node_timeout + 0.5 s.
    let every = (s.node_timeout / 4)
        .min(LIVENESS_EVERY_MAX)
        .max(Duration::from_millis(10));
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let synced = tokio::time::timeout(
            IO_TIMEOUT * 4,
            sync(
                s,
                hub,
                &mut sink,
                &mut conn,
                &mut subscribed,
                &mut stale,
                &mut seen,
            ),
        )
        .await;
        match synced {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return lost(e),
            Err(_) => return Ended::Lost("redis did not answer in time".into()),
        }
        tokio::select! {
            biased;
            _ = shutdown.draining() => return Ended::Draining,
            // Liveness first: a flood of messages must never delay the heartbeat past
            // node_timeout, or the other nodes would sweep this live one.
            _ = tick.tick() => {
                match tokio::time::timeout(IO_TIMEOUT, heartbeat(s, &mut conn)).await {
                    Ok(Ok(false)) => {}
                    Ok(Ok(true)) => {
                        warn!(instance = %s.instance, "this node's liveness key had expired (late heartbeat); writing its presence and names again");
                        if let Err(e) = reclaim_names(s, hub, &mut conn).await {
                            return lost(e);
                        }
                        crate::hub::lock(&s.dirty).extend(hub.room_names());
                    }
                    Ok(Err(e)) => return lost(e),
                    Err(_) => return Ended::Lost("redis did not answer in time".into()),
                }
            }
            _ = s.wake.notified() => {}
            msg = stream.next() => {
                let Some(msg) = msg else {
                    return Ended::Lost("subscriber connection closed".into());
                };
                receive(s, hub, msg, &mut stale, &mut seen);
                for _ in 0..RECEIVE_BATCH {
                    match stream.next().now_or_never() {
                        Some(Some(msg)) => receive(s, hub, msg, &mut stale, &mut seen),
                        Some(None) => return Ended::Lost("subscriber connection closed".into()),
                        None => break,
                    }
                }
            }
        }
    }
}

/// One pub/sub message: a relayed message for local members, or a notice to re-read presence.
fn receive(
    s: &Shared,
    hub: &Hub,
    msg: redis::Msg,
    stale: &mut HashSet<Arc<str>>,
    seen: &mut HashMap<Arc<str>, wire::StreamId>,
) {
    let channel = msg.get_channel_name();
    let Some(room) = s.keys.room_of(channel) else {
        return;
    };
    let raw = bytes::Bytes::copy_from_slice(msg.get_payload_bytes());
    let (id, from, payload) = match wire::decode_stamped(raw) {
        Ok(decoded) => decoded,
        Err(e) => return debug!(channel, error = %e, "ignored a message not in wsline's envelope"),
    };
    if let Some(id) = id
        && let Some(last) = seen.get_mut(room)
    {
        // Already in the replay this node read after subscribing.
        if id <= *last {
            return;
        }
        *last = id;
    }
    if &from[..] == s.instance.as_bytes() {
        return;
    }
    match payload {
        Payload::Message(m) => {
            s.received.fetch_add(1, Ordering::Relaxed);
            hub.deliver_remote(room, m);
        }
        Payload::Presence => {
            stale.insert(room.into());
        }
        Payload::Kick(key) => {
            hub.kick_key(room, &key);
        }
    }
}

/// Subscriptions follow the local rooms; changed entries are written; announced rooms re-read.
async fn sync(
    s: &Shared,
    hub: &Hub,
    sink: &mut PubSubSink,
    conn: &mut ConnectionManager,
    subscribed: &mut HashSet<Arc<str>>,
    stale: &mut HashSet<Arc<str>>,
    seen: &mut HashMap<Arc<str>, wire::StreamId>,
) -> RedisResult<()> {
    // Rooms open or close only with a join or leave, and those mark a room dirty: with nothing
    // dirty, the subscriptions are in step and a turn after a received message costs nothing.
    if crate::hub::lock(&s.dirty).is_empty() {
        return read_stale(s, hub, conn, subscribed, stale).await;
    }
    let wanted: HashSet<Arc<str>> = hub.room_names().into_iter().collect();
    for room in wanted.difference(subscribed).cloned().collect::<Vec<_>>() {
        sink.subscribe(s.keys.channel(&room)).await?;
        subscribed.insert(room.clone());
        // Subscribed first, then the replay: a live message is either in it or after it.
        let last = replay_history(s, hub, conn, &room).await?;
        seen.insert(room.clone(), last);
        // What the others have: read after subscribing, so no notice falls in between.
        stale.insert(room.clone());
        crate::hub::lock(&s.dirty).insert(room);
    }
    for room in subscribed.difference(&wanted).cloned().collect::<Vec<_>>() {
        sink.unsubscribe(s.keys.channel(&room)).await?;
        subscribed.remove(&room);
        seen.remove(&room);
        crate::hub::lock(&s.dirty).insert(room);
    }
    let dirty: Vec<Arc<str>> = {
        // Taken out first: `local_presence` locks rooms, and a leave takes `dirty` under its
        // room's lock, so `dirty` is never held while a room is locked.
        let pending = std::mem::take(&mut *crate::hub::lock(&s.dirty));
        // A room joined since `wanted` was taken waits for its subscription (next turn).
        let (ready, waiting): (Vec<Arc<str>>, Vec<Arc<str>>) = pending.into_iter().partition(|r| {
            subscribed.contains(r) || !wanted.contains(r) && hub.local_presence(r).is_none()
        });
        if !waiting.is_empty() {
            crate::hub::lock(&s.dirty).extend(waiting);
            s.wake.notify_one();
        }
        ready
    };
    if !dirty.is_empty() {
        let mut pipe = redis::pipe();
        for room in &dirty {
            let presence = s.keys.presence(room);
            let index = s.keys.node_rooms(&s.instance);
            match hub.local_presence(room) {
                Some((count, names)) if count > 0 => {
                    pipe.hset(&presence, &s.instance, wire::entry(count, &names))
                        .ignore()
                        .sadd(&index, &**room)
                        .ignore();
                }
                _ => {
                    pipe.hdel(&presence, &s.instance)
                        .ignore()
                        .srem(&index, &**room)
                        .ignore();
                }
            }
            pipe.publish(
                s.keys.channel(room),
                &wire::encode(&s.instance, &Payload::Presence)[..],
            )
            .ignore();
        }
        pipe.hset(s.keys.total(), &s.instance, hub.total()).ignore();
        pipe.sadd(s.keys.nodes(), &s.instance).ignore();
        pipe.query_async::<()>(conn).await?;
    }
    read_stale(s, hub, conn, subscribed, stale).await
}

/// Re-reads the presence of the rooms another node announced a change in.
async fn read_stale(
    s: &Shared,
    hub: &Hub,
    conn: &mut ConnectionManager,
    subscribed: &HashSet<Arc<str>>,
    stale: &mut HashSet<Arc<str>>,
) -> RedisResult<()> {
    let stale_rooms: Vec<Arc<str>> = stale.drain().filter(|r| subscribed.contains(r)).collect();
    if !stale_rooms.is_empty() {
        let mut pipe = redis::pipe();
        for room in &stale_rooms {
            pipe.hgetall(s.keys.presence(room));
        }
        // The totals in the same round trip, stored before the rooms are scheduled, so the
        // presence messages these reads cause carry a `total` as fresh as their `count`.
        pipe.hgetall(s.keys.total());
        let mut entries: Vec<Vec<(String, String)>> = pipe.query_async(conn).await?;
        store_remote_total(s, &entries.pop().unwrap_or_default());
        for (room, entries) in stale_rooms.iter().zip(entries) {
            let (count, names) = wire::remote(
                &s.instance,
                entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            );
            hub.set_remote(room, count, names);
        }
    }
    Ok(())
}

/// Sends queued messages and name releases to Redis in order, in pipelines of at most
/// [`PUBLISH_BATCH`]; what fails is dropped (counted), never retried later.
async fn publisher(s: Arc<Shared>, mut rx: tokio::sync::mpsc::Receiver<Out>, shutdown: Shutdown) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let first = tokio::select! {
            _ = shutdown.draining() => return,
            out = rx.recv() => match out {
                Some(out) => out,
                None => return,
            },
        };
        batch.push(first);
        while batch.len() < PUBLISH_BATCH {
            match rx.try_recv() {
                Ok(out) => batch.push(out),
                Err(_) => break,
            }
        }
        let (mut messages, mut bytes) = (0u64, 0usize);
        for out in &batch {
            if let Out::Publish { data, .. } = out {
                messages += 1;
                bytes += data.len();
            }
        }
        s.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        let Some(conn) = s.commands.load_full() else {
            s.dropped.fetch_add(messages, Ordering::Relaxed);
            batch.clear();
            continue;
        };
        let mut conn = (*conn).clone();
        let mut pipe = redis::pipe();
        for out in batch.drain(..) {
            match out {
                Out::Publish {
                    room,
                    data,
                    history: 0,
                } => {
                    pipe.publish(s.keys.channel(&room), &data[..]).ignore();
                }
                Out::Publish {
                    room,
                    data,
                    history,
                } => {
                    pipe.cmd("EVAL")
                        .arg(PUBLISH_KEPT)
                        .arg(2)
                        .arg(s.keys.history(&room))
                        .arg(s.keys.channel(&room))
                        .arg(history)
                        .arg(&data[..])
                        .ignore();
                }
                Out::Release { room, key } => {
                    pipe.cmd("EVAL")
                        .arg(RELEASE)
                        .arg(2)
                        .arg(s.keys.names(&room))
                        .arg(s.keys.node_names(&s.instance))
                        .arg(&*key)
                        .arg(&s.instance)
                        .arg(format!("{room}\n{key}"))
                        .ignore();
                }
            }
        }
        match tokio::time::timeout(IO_TIMEOUT, pipe.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {
                s.published.fetch_add(messages, Ordering::Relaxed);
            }
            failed => {
                s.dropped.fetch_add(messages, Ordering::Relaxed);
                debug!(failed = ?failed.err().map(|_| "timeout"), "publish to redis failed; dropped");
            }
        }
    }
}

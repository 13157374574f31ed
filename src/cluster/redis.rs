//! The cluster's I/O: the worker that keeps subscriptions, presence entries and names in step on
//! one subscriber and one command connection; it also starts the publisher (`super::publisher`).
//! The heartbeat has its own task and connection (`super::liveness`), the receive path its own
//! tasks (`super::receive`).
//!
//! Each turn the worker reconciles its channel subscriptions with the rooms that have local
//! members (subscribe on the first local member, unsubscribe after the last), reads the history
//! of the rooms it opened, writes the presence entries of rooms whose local members changed (then
//! publishes a `P` notice on the room's channel, so the other nodes re-read that one hash: no
//! request fans out to every node), re-reads rooms another node announced, and runs the pending
//! name releases. All of it in batches: one `SUBSCRIBE` names up to [`SYNC_BATCH`] channels, and
//! the history reads, presence writes and presence reads of as many rooms go in one pipeline, so
//! a node with 10 000 rooms syncs in a few dozen round trips, not 10 000. What a batch achieved is
//! kept; a batch that fails or times out is retried at the next turn (after a backoff), and the
//! session goes on: only a lost subscriber connection, or a heartbeat that could not reach Redis
//! for `node_timeout`, ends it.
//!
//! When the session ends, the node is degraded: it keeps relaying to local members, drops what it
//! would publish, and reconnects with jittered, capped backoff ([`wire::backoff`]); once back it
//! resubscribes, rewrites all its entries and reconciles its names (`super::names`). On SIGTERM
//! it sweeps itself, so its members leave every count at once.
//!
//! This file must not name the hub: rooms are reached through [`super::Rooms`], and the tasks end
//! with the `CancellationToken` they were given.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig, PubSubSink};
use redis::{Client, RedisResult};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::history::replay_history;
use super::presence::{store_remote_total, sweep, ttl_ms};
use super::publisher::publisher;
use super::receive::{self, SharedReceipts};
use super::scripts::{self, Call, Op};
use super::source::Source;
use super::wire::{self, Payload};
use super::{Cluster, IO_TIMEOUT, Rooms, Shared, liveness, names};

/// Rooms per `SUBSCRIBE` and per pipeline of a sync.
pub const SYNC_BATCH: usize = 1000;
/// The worker looks at its duties at least this often (retries, a reload of the room settings).
const TURN_EVERY: Duration = Duration::from_millis(500);

/// Starts the worker, the liveness task and the publisher on `tracker` (the shutdown's); each
/// ends once `stop` (the drain) is cancelled. The worker reaches this node's rooms through `rooms`.
pub fn spawn(
    cluster: &Cluster,
    rooms: Arc<dyn Rooms>,
    tracker: &TaskTracker,
    stop: CancellationToken,
) {
    let s = cluster.shared().clone();
    let source = match Source::open(s.url.as_str()) {
        Ok(source) => Arc::new(source),
        Err(e) => {
            // Validation parses the URL, so this is rare; the node runs degraded.
            warn!(redis = %wire::redact(&s.url), error = %e, "cluster.redis cannot be used; running alone");
            return;
        }
    };
    let rx = s.out_rx.lock().take();
    if let Some(rx) = rx {
        tracker.spawn(publisher(s.clone(), rx, stop.clone()));
    }
    tracker.spawn(liveness::run(s.clone(), source.clone(), stop.clone()));
    tracker.spawn(worker(s, source, rooms, stop));
}

/// `f` bounded by [`IO_TIMEOUT`]; running out of time is an error like any other.
async fn timed<T>(f: impl Future<Output = RedisResult<T>>) -> RedisResult<T> {
    tokio::time::timeout(IO_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(std::io::Error::from(std::io::ErrorKind::TimedOut).into()))
}

async fn connect(source: &Source) -> RedisResult<(redis::aio::PubSub, ConnectionManager)> {
    let client: Client = source.client().await?;
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

async fn worker(
    s: Arc<Shared>,
    source: Arc<Source>,
    rooms: Arc<dyn Rooms>,
    stop: CancellationToken,
) {
    let mut seed = u64::from(std::process::id()) | 1;
    seed ^= (s.instance.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut attempt = 0u32;
    let mut sessions = 0u64;
    let redis = wire::redact(&s.url);
    loop {
        let connected = tokio::select! {
            _ = stop.cancelled() => break,
            r = tokio::time::timeout(IO_TIMEOUT, connect(&source)) => r,
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
                let wait = wire::backoff(attempt, wire::jitter(&mut seed));
                attempt = attempt.saturating_add(1);
                tokio::select! {
                    _ = stop.cancelled() => break,
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
        let ended = session(&s, &rooms, pubsub, commands, &stop).await;
        s.up.store(false, Ordering::Relaxed);
        match ended {
            Ended::Draining => break,
            Ended::Lost(error) => {
                warn!(%redis, %error, "cluster degraded: redis unreachable; relaying to local members only, reconnecting");
                // Counts from other nodes can no longer be kept right: show this node alone.
                s.remote_total.store(0, Ordering::Relaxed);
                rooms.clear_remote();
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

/// One connected stretch: returns when the subscriber connection is lost, the heartbeat could not
/// reach Redis for `node_timeout`, or the drain starts.
async fn session(
    s: &Arc<Shared>,
    rooms: &Arc<dyn Rooms>,
    pubsub: redis::aio::PubSub,
    conn: ConnectionManager,
    stop: &CancellationToken,
) -> Ended {
    let (sink, stream) = pubsub.split();
    let receipts = SharedReceipts::default();
    // The drain and delivery tasks of this connection: aborted when the session ends.
    let mut tasks = JoinSet::new();
    receive::start(s, rooms, stream, &receipts, &mut tasks);
    s.liveness_lost.store(false, Ordering::Relaxed);
    s.rewrite.store(false, Ordering::Relaxed);
    let mut sync = Sync {
        s,
        rooms: &**rooms,
        sink,
        conn,
        receipts,
        subscribed: HashSet::new(),
        unreplayed: Vec::new(),
    };
    // A fresh session (first start, or Redis came back possibly empty): write everything again.
    s.changed_rooms.lock().extend(rooms.room_names());
    let mut reconcile = true;
    // The room settings this session last reconciled names with: a reload (which may turn
    // `presence.unique_names` off, for every room or some) reconciles again.
    let mut rules = rooms.rules();
    s.up.store(true, Ordering::Relaxed);
    let mut tick = tokio::time::interval(TURN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seed = u64::from(std::process::id()).rotate_left(17) | 1;
    let mut failures = 0u32;
    loop {
        if s.rewrite.swap(false, Ordering::Relaxed) {
            reconcile = true;
            s.changed_rooms.lock().extend(rooms.room_names());
        }
        let now = rooms.rules();
        if !Arc::ptr_eq(&now, &rules) || s.releases.lock().overflowed {
            rules = now;
            reconcile = true;
        }
        let turn = sync.turn(&mut reconcile);
        let done = tokio::select! {
            _ = stop.cancelled() => return Ended::Draining,
            done = turn => done,
        };
        let retry = match done {
            Ok(()) => {
                failures = 0;
                None
            }
            Err(e) => {
                if failures == 0 {
                    warn!(error = %e, "cluster sync incomplete; keeping what it did and retrying");
                }
                failures = failures.saturating_add(1);
                Some(wire::backoff(failures - 1, wire::jitter(&mut seed)))
            }
        };
        let backoff = async {
            match retry {
                Some(wait) => tokio::time::sleep(wait).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = stop.cancelled() => return Ended::Draining,
            _ = tasks.join_next() => return Ended::Lost("subscriber connection closed".into()),
            _ = s.wake.notified(), if retry.is_none() => {}
            _ = backoff => {}
            _ = tick.tick() => {}
        }
        if s.liveness_lost.swap(false, Ordering::Relaxed) {
            return Ended::Lost("heartbeats did not reach redis for node_timeout".into());
        }
    }
}

/// The worker's view of one session: its subscriptions and what is left to do.
struct Sync<'a> {
    s: &'a Arc<Shared>,
    rooms: &'a dyn Rooms,
    sink: PubSubSink,
    conn: ConnectionManager,
    receipts: SharedReceipts,
    subscribed: HashSet<Arc<str>>,
    /// Subscribed rooms whose history read failed: read at the next turn.
    unreplayed: Vec<Arc<str>>,
}

impl Sync<'_> {
    /// One turn: names, subscriptions, history, presence. Stops at the first failure, keeping
    /// what was done.
    async fn turn(&mut self, reconcile: &mut bool) -> RedisResult<()> {
        let (s, rooms) = (self.s, self.rooms);
        if *reconcile {
            timed(names::reconcile(s, rooms, &mut self.conn)).await?;
            *reconcile = false;
        }
        if !s.releases.lock().is_idle() {
            timed(names::release_pending(s, rooms, &mut self.conn)).await?;
        }
        let unreplayed = std::mem::take(&mut self.unreplayed);
        self.replay(unreplayed).await?;
        // Rooms open or close only with a join or leave, and those put the room in the changed
        // rooms: with none, the subscriptions are in step.
        if !s.changed_rooms.lock().is_empty() {
            let wanted: HashSet<Arc<str>> = rooms.room_names().into_iter().collect();
            self.subscribe(&wanted).await?;
            self.unsubscribe(&wanted).await?;
            self.write_presence(&wanted).await?;
        }
        self.read_stale().await
    }

    /// Subscribes to the rooms opened here, [`SYNC_BATCH`] channels per command, each batch
    /// followed by its history read (subscribed first: a live message is in the replay or after).
    async fn subscribe(&mut self, wanted: &HashSet<Arc<str>>) -> RedisResult<()> {
        let s = self.s;
        let opening: Vec<Arc<str>> = wanted.difference(&self.subscribed).cloned().collect();
        let rules = self.rooms.rules();
        for chunk in opening.chunks(SYNC_BATCH) {
            // Rooms with history (their own `relay.history`) hold their live messages until
            // their replay is seeded.
            let kept: Vec<Arc<str>> = chunk
                .iter()
                .filter(|r| rules.history(r) > 0)
                .cloned()
                .collect();
            self.receipts.lock().start_replay(&kept);
            let channels: Vec<String> = chunk.iter().map(|r| s.keys.channel(r)).collect();
            if let Err(e) = timed(self.sink.subscribe(&channels)).await {
                let mut r = self.receipts.lock();
                chunk.iter().for_each(|room| r.forget(room));
                return Err(e);
            }
            self.subscribed.extend(chunk.iter().cloned());
            // What the others have: read after subscribing, so no notice falls in between.
            self.receipts.lock().mark_stale(chunk.iter().cloned());
            s.changed_rooms.lock().extend(chunk.iter().cloned());
            if !kept.is_empty() {
                self.replay(kept).await?;
            }
        }
        Ok(())
    }

    /// Reads the history of subscribed rooms, a pipeline per [`SYNC_BATCH`] rooms; the rooms of a
    /// failed read wait for the next turn.
    async fn replay(&mut self, rooms: Vec<Arc<str>>) -> RedisResult<()> {
        let rooms: Vec<Arc<str>> = rooms
            .into_iter()
            .filter(|r| self.subscribed.contains(r))
            .collect();
        for (i, chunk) in rooms.chunks(SYNC_BATCH).enumerate() {
            match timed(replay_history(self.s, self.rooms, &mut self.conn, chunk)).await {
                Ok(lasts) => {
                    let mut r = self.receipts.lock();
                    for (room, last) in chunk.iter().zip(lasts) {
                        r.finish_replay(self.s, self.rooms, room, last);
                    }
                }
                Err(e) => {
                    self.unreplayed
                        .extend(rooms[i * SYNC_BATCH..].iter().cloned());
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Unsubscribes from the rooms closed here, [`SYNC_BATCH`] channels per command.
    async fn unsubscribe(&mut self, wanted: &HashSet<Arc<str>>) -> RedisResult<()> {
        let s = self.s;
        let closing: Vec<Arc<str>> = self.subscribed.difference(wanted).cloned().collect();
        for chunk in closing.chunks(SYNC_BATCH) {
            let channels: Vec<String> = chunk.iter().map(|r| s.keys.channel(r)).collect();
            timed(self.sink.unsubscribe(&channels)).await?;
            let mut r = self.receipts.lock();
            for room in chunk {
                self.subscribed.remove(room);
                r.forget(room);
            }
            drop(r);
            s.changed_rooms.lock().extend(chunk.iter().cloned());
        }
        Ok(())
    }

    /// Writes this node's presence entries of the changed rooms, a pipeline per [`SYNC_BATCH`]
    /// rooms; the rooms of a failed write stay changed.
    async fn write_presence(&mut self, wanted: &HashSet<Arc<str>>) -> RedisResult<()> {
        let (s, rooms) = (self.s, self.rooms);
        let ready: Vec<Arc<str>> = {
            // Taken out first: `local_presence` locks rooms, and a leave takes the changed rooms
            // under its room's lock, so they are never held while a room is locked.
            let pending = std::mem::take(&mut *s.changed_rooms.lock());
            // A room joined since `wanted` was taken waits for its subscription (next turn).
            let (ready, waiting): (Vec<Arc<str>>, Vec<Arc<str>>) =
                pending.into_iter().partition(|r| {
                    self.subscribed.contains(r)
                        || !wanted.contains(r) && rooms.local_presence(r).is_none()
                });
            if !waiting.is_empty() {
                s.changed_rooms.lock().extend(waiting);
                s.wake.notify_one();
            }
            ready
        };
        let ttl = ttl_ms(s.history_ttl);
        let notice = wire::encode(&s.instance, &Payload::Presence);
        let index = s.keys.node_rooms(&s.instance);
        for (i, chunk) in ready.chunks(SYNC_BATCH).enumerate() {
            let mut ops = Vec::with_capacity(chunk.len() * 5 + 2);
            for room in chunk {
                let presence = s.keys.presence(room);
                match rooms.local_presence(room) {
                    Some((count, names)) if count > 0 => {
                        let mut hset = redis::cmd("HSET");
                        hset.arg(&presence)
                            .arg(&s.instance)
                            .arg(wire::entry(count, &names));
                        // After the entry: a CLOSE of the room's last other entry in between
                        // sees this one and leaves the room indexed.
                        let mut zadd = redis::cmd("ZADD");
                        zadd.arg(s.keys.rooms()).arg(0).arg(&**room);
                        let mut sadd = redis::cmd("SADD");
                        sadd.arg(&index).arg(&**room);
                        let mut persist = redis::cmd("PERSIST");
                        persist.arg(s.keys.history(room));
                        let mut persist_seq = redis::cmd("PERSIST");
                        persist_seq.arg(s.keys.seq(room));
                        ops.extend([hset, zadd, sadd, persist, persist_seq].map(Op::Cmd));
                    }
                    _ => ops.push(Op::Call(Call::new(
                        &scripts::CLOSE,
                        (
                            &presence,
                            &index,
                            s.keys.history(room),
                            s.keys.rooms(),
                            s.keys.seq(room),
                        ),
                        (&s.instance, &**room, ttl),
                    ))),
                }
                let mut publish = redis::cmd("PUBLISH");
                publish.arg(s.keys.channel(room)).arg(&notice[..]);
                ops.push(Op::Cmd(publish));
            }
            let mut total = redis::cmd("HSET");
            total
                .arg(s.keys.total())
                .arg(&s.instance)
                .arg(rooms.total());
            let mut nodes = redis::cmd("SADD");
            nodes.arg(s.keys.nodes()).arg(&s.instance);
            ops.extend([Op::Cmd(total), Op::Cmd(nodes)]);
            if let Err(e) = timed(scripts::run_all(&mut self.conn, ops)).await {
                s.changed_rooms
                    .lock()
                    .extend(ready[i * SYNC_BATCH..].iter().cloned());
                return Err(e);
            }
        }
        Ok(())
    }

    /// Re-reads the presence of the rooms another node announced a change in (or this node just
    /// opened), a pipeline per [`SYNC_BATCH`] rooms.
    async fn read_stale(&mut self) -> RedisResult<()> {
        let (s, rooms) = (self.s, self.rooms);
        let stale: Vec<Arc<str>> = self
            .receipts
            .lock()
            .take_stale()
            .into_iter()
            .filter(|r| self.subscribed.contains(r))
            .collect();
        for (i, chunk) in stale.chunks(SYNC_BATCH).enumerate() {
            let mut pipe = redis::pipe();
            for room in chunk {
                pipe.hgetall(s.keys.presence(room));
            }
            // The totals in the same round trip, stored before the rooms are scheduled, so the
            // presence messages these reads cause carry a `total` as fresh as their `count`.
            pipe.hgetall(s.keys.total());
            let read: RedisResult<Vec<Vec<(String, String)>>> =
                timed(pipe.query_async(&mut self.conn)).await;
            let mut entries = match read {
                Ok(entries) => entries,
                Err(e) => {
                    self.receipts
                        .lock()
                        .mark_stale(stale[i * SYNC_BATCH..].iter().cloned());
                    return Err(e);
                }
            };
            store_remote_total(s, &entries.pop().unwrap_or_default());
            for (room, entries) in chunk.iter().zip(entries) {
                let (count, names) = wire::remote(
                    &s.instance,
                    entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                );
                rooms.set_remote(room, count, names);
            }
        }
        Ok(())
    }
}

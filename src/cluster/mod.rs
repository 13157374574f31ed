//! Several nodes joined by Redis (`[cluster] redis`): the handle the hub talks to.
//!
//! A single node has no [`Cluster`] at all (the hub holds an `Option`), so it pays one branch per
//! message. With one, the hub tells it three things, none of which waits for Redis:
//! - a message was relayed locally ([`Cluster::publish`]): it is queued, bounded, for the publisher
//!   task, which sends it once to the room's channel (not once per receiver); while Redis is down it
//!   is dropped on the spot, so nothing is buffered for later and memory stays flat;
//! - a room's local members changed ([`Cluster::room_changed`]): the room joins the changed rooms,
//!   and the worker task reconciles its channel subscriptions with the rooms that have local
//!   members, then writes this node's presence entry of each changed room;
//! - a member with a claimed name left ([`Cluster::release`]): the name goes into a set of pending
//!   releases that the worker empties (never dropped; see `names`).
//!
//! Before a join, two bounded waits for Redis: the name claim ([`Cluster::claim`]) and, for the
//! first member of a room on this node, the first read of the room's remote presence
//! ([`Cluster::first_read`]), both bounded by [`CLAIM_TIMEOUT`]; and, for the backend API, the read
//! of a room this node has no member of ([`Cluster::read_presence`]) and of a page of the
//! cluster's rooms ([`Cluster::rooms_after`]), both bounded by [`PRESENCE_READ_TIMEOUT`]. The
//! connections and worker live in [`redis`], the publisher in `publisher`, the receive path in
//! `receive`, the heartbeat task in `liveness`, sweep, totals and claims in
//! [`presence`], releases and their reconciliation in `names`, the history stream in [`history`],
//! the backend API's kick and its count across the nodes in [`kick`],
//! the Lua scripts in `scripts`, the way to the primary (a URL or Sentinel) in `source`; the pure
//! rules (keys, envelope, entries, backoff) in [`wire`]. The worker reaches this node's rooms only
//! through the [`Rooms`] trait, which the hub implements: nothing here names the hub, and this
//! folder imports only `proto` and `config`.

pub mod history;
pub mod kick;
pub(crate) mod liveness;
pub(crate) mod names;
pub mod presence;
pub(crate) mod publisher;
pub(crate) mod receive;
pub mod redis;
pub mod rooms;
pub(crate) mod scripts;
pub(crate) mod source;
pub mod wire;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use std::time::Duration;

use crate::proto::message::Message;
use bytes::Bytes;
use tokio::sync::{Notify, mpsc};

use crate::config;
use publisher::Out;
pub use rooms::{RoomRules, Rooms};
use wire::{Keys, Payload};

/// How long a join waits for Redis to claim a name before it falls back to this node's own rule.
pub const CLAIM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long one connection attempt or one round of commands to Redis may take.
pub(crate) const IO_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the backend API waits for Redis to read a room's presence ([`Cluster::read_presence`])
/// or a page of rooms ([`Cluster::rooms_after`]).
pub const PRESENCE_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Messages waiting for the publisher task, and their bytes: past either bound (Redis slower than
/// the senders), further messages are dropped and counted, never buffered without bound.
const PUBLISH_QUEUE: usize = 65_536;
pub(crate) const PUBLISH_QUEUE_BYTES: usize = 64 << 20;

/// The cluster side of a node. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) url: String,
    pub(crate) node_id: String,
    /// `node_id:pid-epoch`: unique per process, so a restarted node is never its predecessor.
    pub(crate) instance: String,
    pub(crate) keys: Keys,
    pub(crate) node_timeout: Duration,
    /// How long a room's history stream outlives the room's last member on any node.
    pub(crate) history_ttl: Duration,
    /// Whether the worker holds a live subscriber connection and commands succeed.
    pub(crate) up: AtomicBool,
    /// Connections on the other live nodes (the rest of presence's `total`).
    pub(crate) remote_total: AtomicUsize,
    /// The changed rooms: rooms whose local members changed (a join or a leave) or whose
    /// subscription changed, since the worker last wrote their presence entry. Taken under a room
    /// lock (a leave), so never held while a room is locked.
    pub(crate) changed_rooms: Mutex<HashSet<Arc<str>>>,
    /// Wakes the worker when `changed_rooms` gets a room, or another duty comes up.
    pub(crate) wake: Notify,
    /// To the publisher task (the receiver is taken by `redis::spawn`).
    out_tx: mpsc::Sender<Out>,
    pub(crate) out_rx: Mutex<Option<mpsc::Receiver<Out>>>,
    pub(crate) published: AtomicU64,
    pub(crate) received: AtomicU64,
    /// Messages not sent to Redis because it was down or the queue was full.
    pub(crate) dropped: AtomicU64,
    /// Bytes of the envelopes in the publisher's queue (see [`PUBLISH_QUEUE_BYTES`]).
    pub(crate) queued_bytes: AtomicUsize,
    pub(crate) reconnects: AtomicU64,
    /// Messages from Redis dropped because the receive queue was full ([`receive`]).
    pub(crate) receive_dropped: AtomicU64,
    /// Messages of numbered rooms delivered to this node's members only, without a number,
    /// because Redis was down or the publish queue full ([`Cluster::publish_numbered`]).
    pub(crate) unnumbered: AtomicU64,
    /// This process's start (ms, hex) and pid (hex): with [`Shared::epochs`], the candidate epochs
    /// this node offers Redis for a room that has none (`epoch_base-COUNTER`).
    epoch_base: String,
    epochs: AtomicU64,
    /// The command connection, once made (it reconnects by itself).
    pub(crate) commands: arc_swap::ArcSwapOption<::redis::aio::ConnectionManager>,
    /// Names given back but not yet released in Redis; claims consult it ([`names`]).
    pub(crate) releases: Mutex<names::Releases>,
    /// Wakes claims waiting for a release of their name to finish.
    pub(crate) released: Notify,
    /// Numbers this instance's kicks, so each has its own reply hash ([`kick`]).
    pub(crate) kicks: AtomicU64,
    /// Set by the liveness task: this instance's key had expired (it may have been swept), so
    /// the worker writes all its entries and names again.
    pub(crate) rewrite: AtomicBool,
    /// Set by the liveness task: no heartbeat got through for `node_timeout`; the worker ends the
    /// session (the others have swept this node) and starts a fresh one.
    pub(crate) liveness_lost: AtomicBool,
    /// Remote presence read for a room's first local member before its join
    /// ([`Cluster::first_read`]), taken by the join; at most [`FIRST_READS`] entries.
    first_reads: Mutex<HashMap<Arc<str>, FirstRead>>,
}

impl Shared {
    /// A new candidate epoch for a room that has none in Redis yet: unique to this process and
    /// call, so a room that starts over never gets an epoch it had before. At most 32 characters
    /// of `0-9 a-f -`, what `?since=` accepts.
    pub(crate) fn candidate_epoch(&self) -> String {
        let n = self.epochs.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n:x}", self.epoch_base)
    }
}

/// Bound of [`Shared::first_reads`]: reads whose join never came (refused) are forgotten past it.
const FIRST_READS: usize = 1024;

/// A room's remote members as read before its first local join, and when.
struct FirstRead {
    at: std::time::Instant,
    count: usize,
    names: Vec<Arc<str>>,
}

/// The line `--check-config` prints about the cluster (the URL without its password).
pub fn check_note(config: &config::Cluster) -> Option<String> {
    (!config.redis.is_empty()).then(|| {
        format!(
            "cluster: {} as node {:?}, prefix {:?}, node_timeout {}",
            wire::redact(&config.redis),
            config.node_id,
            config.prefix,
            humantime::format_duration(config.node_timeout)
        )
    })
}

/// The answer to a name claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// This member now holds the name cluster-wide.
    Won,
    /// Another member holds it (on some node).
    Taken,
    /// Redis did not answer: only this node's rule applies.
    Unavailable,
}

/// Redis is down or did not answer in time: what it holds is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unavailable;

/// The cluster state shown in `/stats`.
#[derive(Debug, serde::Serialize)]
pub struct Status {
    pub state: &'static str,
    pub instance: String,
    pub prefix: String,
    pub remote_connections: usize,
    pub published: u64,
    pub received: u64,
    pub dropped: u64,
    pub receive_dropped: u64,
    pub unnumbered: u64,
    pub reconnects: u64,
}

impl Cluster {
    /// The cluster of `config`, or `None` on a single node (`cluster.redis` empty).
    pub fn new(config: &config::Cluster) -> Option<Cluster> {
        if config.redis.is_empty() {
            return None;
        }
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let instance = format!(
            "{}:{}-{:x}",
            config.node_id,
            std::process::id(),
            epoch & 0xffff_ffff_ffff
        );
        let (out_tx, out_rx) = mpsc::channel(PUBLISH_QUEUE);
        Some(Cluster {
            shared: Arc::new(Shared {
                url: config.redis.clone(),
                node_id: config.node_id.clone(),
                instance,
                keys: Keys::new(&config.prefix),
                node_timeout: config.node_timeout,
                history_ttl: config.history_ttl,
                up: AtomicBool::new(false),
                remote_total: AtomicUsize::new(0),
                changed_rooms: Mutex::new(HashSet::new()),
                wake: Notify::new(),
                out_tx,
                out_rx: Mutex::new(Some(out_rx)),
                published: AtomicU64::new(0),
                received: AtomicU64::new(0),
                dropped: AtomicU64::new(0),
                queued_bytes: AtomicUsize::new(0),
                reconnects: AtomicU64::new(0),
                receive_dropped: AtomicU64::new(0),
                unnumbered: AtomicU64::new(0),
                epoch_base: format!("{:x}-{:x}", epoch / 1_000_000, std::process::id()),
                epochs: AtomicU64::new(1),
                commands: arc_swap::ArcSwapOption::empty(),
                releases: Mutex::new(names::Releases::default()),
                released: Notify::new(),
                kicks: AtomicU64::new(0),
                rewrite: AtomicBool::new(false),
                liveness_lost: AtomicBool::new(false),
                first_reads: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Whether Redis is reachable (false: degraded, relaying to local members only).
    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }

    /// Connections on the other nodes.
    pub fn remote_total(&self) -> usize {
        self.shared.remote_total.load(Ordering::Relaxed)
    }

    /// A locally relayed message in the envelope the other nodes read; `None` (counted as
    /// dropped) while Redis is down. Made before the room lock is taken: only [`Cluster::publish`]
    /// needs it, for the order.
    pub fn encode(&self, msg: &Message) -> Option<Bytes> {
        if !self.is_up() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        Some(wire::encode(
            &self.shared.instance,
            &Payload::Message(msg.clone()),
        ))
    }

    /// Queues an [`Cluster::encode`]d message for the other nodes; dropped when the queue is full.
    pub fn publish(&self, room: &Arc<str>, data: Bytes, history: usize) {
        self.shared.queue(Out::Message {
            room: room.clone(),
            data,
            history,
            numbered: None,
        });
    }

    /// Queues an [`Cluster::encode`]d message of a numbered room: Redis numbers it and every node,
    /// this one included, delivers it when it comes back on the room's channel (to every local
    /// member but `sender`, when given). `false` when the queue is full: the caller delivers it
    /// locally, unnumbered ([`Cluster::unnumbered`]).
    pub fn publish_numbered(
        &self,
        room: &Arc<str>,
        data: Bytes,
        history: usize,
        sender: Option<u64>,
    ) -> bool {
        self.shared.queue(Out::Message {
            room: room.clone(),
            data,
            history,
            numbered: Some(sender),
        })
    }

    /// Counts a numbered room's message delivered to this node's members alone, without a number
    /// (Redis down or the queue full): it cannot be recovered with `since`.
    pub fn unnumbered(&self) {
        self.shared.unnumbered.fetch_add(1, Ordering::Relaxed);
    }

    /// Asks the other nodes to kick the members of `room` whose name has `key` (the backend API),
    /// and waits, at most [`kick::KICK_WAIT`], for what each closed (`kick::ask`). The caller has
    /// kicked this node's members already. `Err` while Redis is down or does not take the kick:
    /// then no other node heard it.
    pub async fn kick(&self, room: &str, key: &str) -> Result<kick::Kicked, Unavailable> {
        if !self.is_up() {
            return Err(Unavailable);
        }
        let conn = self.shared.commands.load_full().ok_or(Unavailable)?;
        kick::ask(&self.shared, (*conn).clone(), room, key)
            .await
            .map_err(|e| {
                tracing::debug!(error = %e, "kick not sent to the other nodes");
                Unavailable
            })
    }

    /// Puts a room in the changed rooms: its local members changed (a join or a leave).
    pub fn room_changed(&self, room: &Arc<str>) {
        self.shared.changed_rooms.lock().insert(room.clone());
        self.shared.wake.notify_one();
    }

    /// Gives back a name this node claimed for a member who left: never dropped, it waits in the
    /// pending releases until Redis has it (see `names`).
    pub fn release(&self, room: &Arc<str>, key: &str) {
        names::give_back(&self.shared, room, key);
    }

    /// Claims `key` in `room` for a joining member, atomically across the cluster. A claim whose
    /// caller goes away while it is in flight (the client disconnected) is given back.
    pub async fn claim(&self, room: &str, key: &str) -> Claim {
        if !self.is_up() {
            return Claim::Unavailable;
        }
        let Some(conn) = self.shared.commands.load_full() else {
            return Claim::Unavailable;
        };
        let room: Arc<str> = Arc::from(room);
        let guard = names::InFlight::new(&self.shared, &room, key);
        let attempt = async {
            names::settled(&self.shared, &room, key).await;
            presence::claim(&self.shared, (*conn).clone(), &room, key).await
        };
        let claim = match tokio::time::timeout(CLAIM_TIMEOUT, attempt).await {
            Ok(Ok(true)) => Claim::Won,
            Ok(Ok(false)) => Claim::Taken,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "name claim failed; this node's rule applies");
                Claim::Unavailable
            }
            Err(_) => Claim::Unavailable,
        };
        // Won: the caller joins or gives it back; Taken: another instance holds it. Unavailable:
        // a claim that reached Redis late would hold the name for nobody, so it is given back
        // (a name a local member holds is never released: see `names`).
        guard.settle(claim == Claim::Unavailable);
        claim
    }

    /// For the first member of `room` on this node: reads the other nodes' members of the room
    /// (bounded by [`CLAIM_TIMEOUT`]), so the join's first presence state is already cluster-wide.
    /// Nothing to read when the room is open here already, or Redis is down or slower than the
    /// bound: the state then counts this node's members and a change corrects it once the worker
    /// has read the room.
    pub async fn first_read(&self, room: &str, open_here: bool) {
        if open_here || !self.is_up() {
            return;
        }
        let Some(conn) = self.shared.commands.load_full() else {
            return;
        };
        let read = presence::read_room(&self.shared, (*conn).clone(), room);
        if let Ok(Ok((count, names))) = tokio::time::timeout(CLAIM_TIMEOUT, read).await {
            let mut reads = self.shared.first_reads.lock();
            if reads.len() >= FIRST_READS {
                reads.clear();
            }
            let at = std::time::Instant::now();
            reads.insert(Arc::from(room), FirstRead { at, count, names });
        }
    }

    /// The read [`Cluster::first_read`] made for `room`, taken by the join that opens the room
    /// (a read older than [`CLAIM_TIMEOUT`], left by a join that never came, is not used).
    pub fn take_first_read(&self, room: &str) -> Option<(usize, Vec<Arc<str>>)> {
        let read = self.shared.first_reads.lock().remove(room)?;
        (read.at.elapsed() < CLAIM_TIMEOUT).then_some((read.count, read.names))
    }

    /// The members of `room` on the other nodes (count, sorted names), read from Redis for the
    /// backend API on a node without local members of the room: the room's presence hash as it
    /// is (dead instances' entries are swept by liveness). `Err` while Redis is down or slower
    /// than [`PRESENCE_READ_TIMEOUT`]: the caller cannot know the room, and says so.
    pub async fn read_presence(&self, room: &str) -> Result<(usize, Vec<Arc<str>>), Unavailable> {
        self.read("presence", |conn| {
            presence::read_room(&self.shared, conn, room)
        })
        .await
    }

    /// A page of the rooms with members on any node (`presence::read_rooms`), for the backend
    /// API on any node: up to `limit` rooms named after `after`, each with its members on every
    /// node as their presence entries say. `Err` while Redis is down or slower than
    /// [`PRESENCE_READ_TIMEOUT`], like [`Cluster::read_presence`].
    pub async fn rooms_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<presence::RoomPage, Unavailable> {
        self.read("room list", |conn| {
            presence::read_rooms(&self.shared, conn, after, limit)
        })
        .await
    }

    /// Runs one read of the backend API on the command connection, bounded by
    /// [`PRESENCE_READ_TIMEOUT`]; `Err` while Redis is down, failing or slower.
    async fn read<T, F>(
        &self,
        what: &'static str,
        read: impl FnOnce(::redis::aio::ConnectionManager) -> F,
    ) -> Result<T, Unavailable>
    where
        F: std::future::Future<Output = ::redis::RedisResult<T>>,
    {
        if !self.is_up() {
            return Err(Unavailable);
        }
        let conn = self.shared.commands.load_full().ok_or(Unavailable)?;
        match tokio::time::timeout(PRESENCE_READ_TIMEOUT, read((*conn).clone())).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, what, "read from redis failed");
                Err(Unavailable)
            }
            Err(_) => Err(Unavailable),
        }
    }

    pub fn status(&self) -> Status {
        let s = &self.shared;
        Status {
            state: if self.is_up() { "up" } else { "degraded" },
            instance: s.instance.clone(),
            prefix: s.keys.prefix().to_owned(),
            remote_connections: self.remote_total(),
            published: s.published.load(Ordering::Relaxed),
            received: s.received.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            receive_dropped: s.receive_dropped.load(Ordering::Relaxed),
            unnumbered: s.unnumbered.load(Ordering::Relaxed),
            reconnects: s.reconnects.load(Ordering::Relaxed),
        }
    }
}

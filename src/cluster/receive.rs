//! The receive path: what Redis sends on the subscriber connection, bounded in memory.
//!
//! The client library hands every pub/sub message to an unbounded channel; so that channel never
//! grows, a drain task takes each message the moment it arrives and does nothing else: it puts it
//! into a bounded queue ([`RECEIVE_QUEUE`] messages, [`RECEIVE_QUEUE_BYTES`] bytes of payload) or,
//! when the queue is full, drops it and counts it (`wsline_cluster_receive_dropped_messages_total`).
//! A delivery task takes messages from the queue and fans them out to local members (non-blocking
//! pushes into their bounded outboxes), independently of the worker's sync, so a burst from other
//! nodes while this one syncs costs at most the bounds above.
//!
//! [`Receipts`] holds the history seam: a room whose stream is being read (subscribed, not yet
//! replayed) holds its live messages (at most [`HELD_BYTES`] in all) until the replay is seeded,
//! then they are delivered unless the replay held them already. This hold is also what keeps a
//! numbered room's `?since=` exact on a node that opens the room: nothing live reaches the room
//! before its seed has set its epoch and last number.
//!
//! This file must not wait on the worker's sync or let any queue grow without a bound.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::PubSubStream;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::debug;

use super::wire::{self, Payload};
use super::{Rooms, Shared, kick};

/// Messages from Redis waiting for delivery, at most.
pub const RECEIVE_QUEUE: usize = 16_384;
/// Payload bytes from Redis waiting for delivery, at most.
pub const RECEIVE_QUEUE_BYTES: usize = 16 << 20;
/// Payload bytes held for rooms whose history is being read, at most.
pub const HELD_BYTES: usize = 16 << 20;
/// Messages the delivery task takes from the queue at once.
const DELIVERY_BATCH: usize = 256;

/// Per subscribed room, what the receive path has seen (shared by the worker and the delivery task).
#[derive(Default)]
pub struct Receipts {
    /// The newest stream id replayed or delivered (history's seam).
    seen: HashMap<Arc<str>, wire::StreamId>,
    /// Rooms another node announced a presence change in, to be re-read.
    stale: HashSet<Arc<str>>,
    /// Rooms subscribed whose history is being read: their live messages, held.
    replaying: HashMap<Arc<str>, Vec<Bytes>>,
    held_bytes: usize,
}

pub type SharedReceipts = Arc<Mutex<Receipts>>;

impl Receipts {
    /// One message from a room's channel: a relayed message for local members, a notice to
    /// re-read presence, or a kick of the backend API (answered when its asker waits for it).
    fn receive(&mut self, s: &Shared, rooms: &dyn Rooms, room: Arc<str>, raw: Bytes) {
        if let Some(held) = self.replaying.get_mut(&room) {
            if self.held_bytes + raw.len() <= HELD_BYTES {
                self.held_bytes += raw.len();
                held.push(raw);
            } else {
                s.receive_dropped.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        let stamped = match wire::decode_stamped(raw) {
            Ok(decoded) => decoded,
            Err(e) => {
                return debug!(%room, error = %e, "ignored a message not in wsline's envelope");
            }
        };
        if let Some(id) = stamped.id
            && let Some(last) = self.seen.get_mut(&room)
        {
            // Already in the replay this node read after subscribing.
            if id <= *last {
                return;
            }
            *last = id;
        }
        let own = &stamped.from[..] == s.instance.as_bytes();
        match (stamped.payload, stamped.numbered) {
            // A numbered room's message comes back to its own node too: Redis gave it its place.
            (Payload::Message(m), Some(numbered)) => {
                if !own {
                    s.received.fetch_add(1, Ordering::Relaxed);
                }
                let sender = numbered.sender.filter(|_| own);
                rooms.deliver_numbered(&room, m, &numbered.epoch, sender);
            }
            // This node's own kick: its closes were counted when it asked; it answers only
            // that it heard it, as the asker waits for every subscriber `PUBLISH` counted.
            (Payload::Kick { reply, .. }, _) if own => {
                if let Some(id) = reply {
                    kick::answer(s, id, 0, true);
                }
            }
            _ if own => {}
            (Payload::Message(m), None) => {
                s.received.fetch_add(1, Ordering::Relaxed);
                rooms.deliver_remote(&room, m);
            }
            (Payload::Presence, _) => {
                if self.stale.insert(room) {
                    s.wake.notify_one();
                }
            }
            (Payload::Kick { key, reply }, _) => {
                let closed = rooms.kick_key(&room, &key);
                if let Some(id) = reply {
                    kick::answer(s, id, closed, false);
                }
            }
        }
    }

    /// Rooms about to be subscribed whose history will be read: hold their live messages.
    pub fn start_replay(&mut self, rooms: &[Arc<str>]) {
        for room in rooms {
            self.replaying.entry(room.clone()).or_default();
        }
    }

    /// The replay of `room` is seeded up to `last`: the held messages go out, minus those it had.
    pub fn finish_replay(
        &mut self,
        s: &Shared,
        rooms: &dyn Rooms,
        room: &Arc<str>,
        last: wire::StreamId,
    ) {
        self.seen.insert(room.clone(), last);
        for raw in self.replaying.remove(room).unwrap_or_default() {
            self.held_bytes -= raw.len();
            self.receive(s, rooms, room.clone(), raw);
        }
    }

    /// This node stopped listening to `room`.
    pub fn forget(&mut self, room: &Arc<str>) {
        self.seen.remove(room);
        self.stale.remove(room);
        if let Some(held) = self.replaying.remove(room) {
            self.held_bytes -= held.iter().map(Bytes::len).sum::<usize>();
        }
    }

    pub fn mark_stale(&mut self, rooms: impl IntoIterator<Item = Arc<str>>) {
        self.stale.extend(rooms);
    }

    pub fn take_stale(&mut self) -> Vec<Arc<str>> {
        self.stale.drain().collect()
    }
}

/// Starts the drain and delivery tasks of one subscriber connection in `tasks` (which the
/// session owns: they end with it); either ending means the connection is gone.
pub fn start(
    s: &Arc<Shared>,
    rooms: &Arc<dyn Rooms>,
    stream: PubSubStream,
    receipts: &SharedReceipts,
    tasks: &mut JoinSet<()>,
) {
    let (tx, rx) = mpsc::channel(RECEIVE_QUEUE);
    let queued = Arc::new(AtomicUsize::new(0));
    tasks.spawn(drain(s.clone(), stream, tx, queued.clone()));
    tasks.spawn(deliver(
        s.clone(),
        rooms.clone(),
        rx,
        receipts.clone(),
        queued,
    ));
}

/// Takes each message off the library's unbounded channel at once: queued, or dropped and counted.
async fn drain(
    s: Arc<Shared>,
    mut stream: PubSubStream,
    tx: mpsc::Sender<(Arc<str>, Bytes)>,
    queued: Arc<AtomicUsize>,
) {
    while let Some(msg) = stream.next().await {
        let Some(room) = s.keys.room_of(msg.get_channel_name()) else {
            continue;
        };
        let payload = msg.get_payload_bytes();
        let size = payload.len();
        if queued.fetch_add(size, Ordering::Relaxed) + size > RECEIVE_QUEUE_BYTES {
            queued.fetch_sub(size, Ordering::Relaxed);
            s.receive_dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let raw = Bytes::copy_from_slice(payload);
        if tx.try_send((Arc::from(room), raw)).is_err() {
            queued.fetch_sub(size, Ordering::Relaxed);
            s.receive_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Fans queued messages out to local members, a batch per lock of the receipts.
async fn deliver(
    s: Arc<Shared>,
    rooms: Arc<dyn Rooms>,
    mut rx: mpsc::Receiver<(Arc<str>, Bytes)>,
    receipts: SharedReceipts,
    queued: Arc<AtomicUsize>,
) {
    let mut batch = Vec::with_capacity(DELIVERY_BATCH);
    while rx.recv_many(&mut batch, DELIVERY_BATCH).await > 0 {
        let bytes: usize = batch
            .iter()
            .map(|(_, raw): &(Arc<str>, Bytes)| raw.len())
            .sum();
        let mut r = receipts.lock();
        for (room, raw) in batch.drain(..) {
            r.receive(&s, &*rooms, room, raw);
        }
        drop(r);
        queued.fetch_sub(bytes, Ordering::Relaxed);
    }
}

//! One connection's bounded outbound queue: the hub's rooms push into it, the connection's writer
//! drains it. Bounded in messages and bytes; a push over either bound evicts the receiver.
//!
//! The accounting counts what a receiver really pins: a message stays counted from the push until
//! the writer has handed its last byte to TLS (not merely until the writer took it off the queue),
//! and each costs its payload plus [`SLOT_BYTES`] for its queue slot. The payload is a refcount on
//! the one buffer every receiver shares, so the bound is a worst case: the receiver that holds the
//! last reference pins the whole payload.
//!
//! A message may also skip the writer: when the writer is idle (it waits with nothing queued and
//! nothing left to send), the fan-out *claims* the outbox ([`Outbox::offer`]) and, once it has let
//! go of the room lock, writes what is queued to the socket itself through the connection's
//! [`Direct`] handle ([`Claim::write`]): no wake-up of the connection's task. While claimed, the
//! writer takes nothing, and messages offered meanwhile queue for the claim's holder (a sender
//! that read several messages at once writes them to each receiver as one record, as the writer
//! would). What the socket does not take at once goes back to the writer: the messages to the
//! front of the queue, the rest of a record to the next flush. The close phase ends claims
//! ([`OutboxRx::end_direct`]) before it writes anything, so no direct write follows a close frame.
//!
//! This file owns the queue and its wake rule only: it must not know rooms, frames or sockets
//! (the socket side of a direct write is behind the [`Direct`] trait).

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use crate::proto::message::Message;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use crate::config::bounds::SLOT_BYTES;
// 40 bytes (docs/security.md, "Memory bounds"); a bigger slot would need the docs updated.
const _: () = assert!(SLOT_BYTES <= 40);

/// What a message of `len` payload bytes counts against `limits.queue_bytes`.
pub fn cost(len: usize) -> usize {
    len + SLOT_BYTES
}

/// The sending side of one connection's bounded outbound queue. The hub's room holds it; the
/// connection task holds the [`OutboxRx`] and writes what arrives to the socket.
///
/// The queue is a `VecDeque` under a short lock rather than a channel: the writer takes everything
/// queued in one swap, a producer wakes it only when the queue goes from empty to non-empty, and
/// an idle connection's queue holds no allocation at all.
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<OutboxShared>,
}

/// Pings answered one pong each while the writer has not caught up (Autobahn 2.10 sends ten in
/// one go); a client that gets further ahead gets a pong for its latest ping only.
pub const MAX_PENDING_PONGS: usize = 16;

/// Writes one message to a connection's socket now, without waiting, for a writer that is not the
/// connection's task (the fan-out): implemented where frames and the TLS stream meet
/// (`net::upgrade`).
pub trait Direct: Send + Sync {
    /// Frames the first messages of `batch` (whole frames, as many as fit one TLS record) and
    /// hands them to the socket if that is possible without waiting; returns how many it took
    /// (none with [`Sent::No`]) and how far the socket took them.
    fn try_send(&self, batch: &VecDeque<Message>) -> (usize, Sent);
}

/// How far a [`Direct::try_send`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// The socket took the whole record.
    All,
    /// The record is encrypted and part of it is in the socket; the rest waits for the writer's
    /// next flush (which also finds a broken socket).
    Part,
    /// Nothing was done (the stream was busy or had bytes waiting, or the first message needs more
    /// than one record): the messages go to the writer.
    No,
}

/// Queue slots a direct write hands back to the queue for the next message rather than freeing
/// them (the writer keeps as many between its batches).
const RECYCLE_SLOTS: usize = 64;

/// What [`Outbox::offer`] did with a message.
pub enum Offer {
    /// Queued for the writer.
    Queued,
    /// Not queued: the receiver is evicted (its queue is full).
    Refused,
    /// Queued, and the outbox claimed for a direct write: the caller writes the queue with
    /// [`Claim::write`] once it holds no lock.
    Claimed(Claim),
}

/// The right to write an idle connection's queue straight to its socket, given by
/// [`Outbox::offer`]. Until [`Claim::write`] the writer takes nothing from this outbox, and
/// messages offered meanwhile wait for the claim: so the holder writes it soon, holding no lock
/// and before it waits for anything. A claim dropped unwritten leaves its messages to the writer.
#[must_use = "a claimed outbox waits until its claim is written"]
pub struct Claim {
    outbox: Outbox,
    /// The socket; `None` once written.
    to: Option<Arc<dyn Direct>>,
}

/// What both ends of an outbox see.
struct OutboxShared {
    queue: Mutex<Queue>,
    /// Wakes the writer; a wake sent while it is busy is kept for its next wait.
    ready: Notify,
    max_messages: usize,
    max_bytes: usize,
    /// Cancelled to make the connection close: by the hub when the queue is full or the member
    /// was replaced, or by the drain, whose child token it is. Which one is told by whether the
    /// server is draining and by `replaced`.
    close: CancellationToken,
    /// Set (before `close` is cancelled) when a reconnect of the same client took this member's
    /// place: the connection closes with `hub::REPLACED`, not as a slow consumer.
    replaced: std::sync::atomic::AtomicBool,
    /// Set (before `close` is cancelled) when the backend API kicked this member: the connection
    /// closes with `hub::KICKED`.
    kicked: std::sync::atomic::AtomicBool,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    /// Messages pushed and not yet written: those in `messages` and those the writer took.
    pinned: usize,
    /// The [`cost`] of those messages.
    bytes: usize,
    /// The payloads of the pings still to answer, oldest first: one pong per ping, up to
    /// [`MAX_PENDING_PONGS`]; past that only the latest is answered (RFC 6455 §5.5.3 allows it),
    /// so a ping flood costs at most `MAX_PENDING_PONGS` × 125 bytes here.
    pongs: VecDeque<Bytes>,
    /// The heartbeat asked for a ping.
    ping: bool,
    /// The connection's socket for direct writes (TLS connections only), from the upgrade until
    /// the close phase ([`OutboxRx::end_direct`] drops it, so a member still listed somewhere
    /// does not keep the socket open).
    direct: Option<Arc<dyn Direct>>,
    /// The writer waits in [`OutboxRx::recv_all`] with nothing queued and nothing unsent: a
    /// message may be written directly.
    idle: bool,
    /// A [`Claim`] is out: the writer takes nothing until it is written.
    claimed: bool,
    /// Someone waits for the claim to end (the writer, or the close phase): wake it then.
    waiting: bool,
    /// A direct write left part of its record unsent: the writer must flush.
    flush: bool,
}

/// The receiving side of an outbox, owned by the connection task.
pub struct OutboxRx {
    shared: Arc<OutboxShared>,
}

/// Makes an outbox bounded by `max_messages` and `max_bytes`; `close` ends the connection.
pub fn outbox(
    max_messages: usize,
    max_bytes: usize,
    close: CancellationToken,
) -> (Outbox, OutboxRx) {
    let shared = Arc::new(OutboxShared {
        queue: Mutex::new(Queue::default()),
        ready: Notify::new(),
        max_messages,
        max_bytes,
        close,
        replaced: std::sync::atomic::AtomicBool::new(false),
        kicked: std::sync::atomic::AtomicBool::new(false),
    });
    (
        Outbox {
            shared: shared.clone(),
        },
        OutboxRx { shared },
    )
}

impl Outbox {
    /// Queues a message without waiting; a full queue evicts the receiver. `false` if not queued.
    pub fn push(&self, msg: Message) -> bool {
        let mut queue = self.shared.queue.lock();
        if !self.push_locked_quiet(&mut queue, msg) {
            return false;
        }
        // A claimed outbox's messages are written by the claim's holder, or handed to the
        // writer when the claim ends.
        let wake = queue.messages.len() == 1 && !queue.claimed;
        drop(queue);
        if wake {
            self.shared.ready.notify_one();
        }
        true
    }

    /// Queues `msg` with the queue's lock held, without waking anyone; `false` (and the
    /// receiver evicted) if it does not fit.
    fn push_locked_quiet(&self, queue: &mut Queue, msg: Message) -> bool {
        let cost = cost(msg.len());
        // An empty queue takes any one message, so `queue_bytes = max_message_size` still works.
        let full = queue.pinned >= self.shared.max_messages
            || (queue.pinned > 0 && queue.bytes + cost > self.shared.max_bytes);
        if full {
            // A slow consumer: its connection closes with 1013.
            self.shared.close.cancel();
            return false;
        }
        queue.messages.push_back(msg);
        queue.pinned += 1;
        queue.bytes += cost;
        true
    }
}

impl Outbox {
    /// Offers `msg` from the fan-out: queued like [`Outbox::push`]; and when `direct` is allowed
    /// and the writer idle, the outbox is claimed for the caller, who writes what is queued with
    /// [`Claim::write`]. An outbox claimed already (by this caller's earlier message, or another's)
    /// queues the message for that claim without waking the writer.
    pub fn offer(&self, msg: &Message, direct: bool) -> Offer {
        let mut queue = self.shared.queue.lock();
        let claim = direct && queue.idle && queue.direct.is_some();
        if !self.push_locked_quiet(&mut queue, msg.clone()) {
            return Offer::Refused;
        }
        if claim {
            queue.idle = false;
            queue.claimed = true;
            let to = queue.direct.clone();
            return Offer::Claimed(Claim {
                outbox: self.clone(),
                to,
            });
        }
        let wake = queue.messages.len() == 1 && !queue.claimed;
        drop(queue);
        if wake {
            self.shared.ready.notify_one();
        }
        Offer::Queued
    }
}

impl Claim {
    /// Writes what the outbox holds (at most one TLS record's worth of whole frames) to the
    /// socket, then gives the outbox back to its writer with whatever is left.
    pub fn write(mut self) {
        let Some(to) = self.to.take() else { return };
        let shared = &self.outbox.shared;
        let mut batch = std::mem::take(&mut shared.queue.lock().messages);
        let (taken, sent) = to.try_send(&batch);
        drop(to);
        let bytes = batch.drain(..taken).map(|m| m.len()).sum::<usize>();
        let mut queue = shared.queue.lock();
        queue.pinned = queue.pinned.saturating_sub(taken);
        queue.bytes = queue.bytes.saturating_sub(bytes + taken * SLOT_BYTES);
        if !batch.is_empty() {
            // Ahead of whatever arrived during the write, in order.
            batch.append(&mut queue.messages);
            queue.messages = batch;
        } else if queue.messages.is_empty() && batch.capacity() <= RECYCLE_SLOTS {
            // The queue keeps its slots for the next message, as the writer's swaps do.
            queue.messages = batch;
        }
        queue.flush |= sent == Sent::Part;
        self.release(queue);
    }

    /// Ends the claim, and wakes the writer if it has work or someone waits for the claim.
    fn release(&self, mut queue: MutexGuard<'_, Queue>) {
        queue.claimed = false;
        let quiet = queue.messages.is_empty()
            && !queue.flush
            && !queue.ping
            && queue.pongs.is_empty()
            && !std::mem::take(&mut queue.waiting);
        // The writer is still waiting in `recv_all` (a claim is only given to an idle writer,
        // which takes nothing while claimed), so the next message may be claimed too.
        queue.idle = quiet && queue.direct.is_some();
        drop(queue);
        if !quiet {
            self.outbox.shared.ready.notify_one();
        }
    }
}

impl Drop for Claim {
    /// A claim not written (a panic on the way) leaves its messages to the writer.
    fn drop(&mut self) {
        if self.to.take().is_some() {
            self.release(self.outbox.shared.queue.lock());
        }
    }
}

impl Outbox {
    /// Closes the connection because a reconnect of the same client took its place.
    pub fn replace(&self) {
        use std::sync::atomic::Ordering;
        self.shared.replaced.store(true, Ordering::Release);
        self.shared.close.cancel();
    }
}

impl Outbox {
    /// Closes the connection because the backend API kicked its member.
    pub fn kick(&self) {
        use std::sync::atomic::Ordering;
        self.shared.kicked.store(true, Ordering::Release);
        self.shared.close.cancel();
    }
}

impl OutboxRx {
    /// Whether the connection was closed by [`Outbox::kick`].
    pub fn kicked(&self) -> bool {
        self.shared
            .kicked
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Whether the connection was closed by [`Outbox::replace`].
    pub fn replaced(&self) -> bool {
        self.shared
            .replaced
            .load(std::sync::atomic::Ordering::Acquire)
    }

    /// Gives the fan-out the connection's socket for direct writes (see the module doc).
    pub fn attach_direct(&self, to: Arc<dyn Direct>) {
        self.shared.queue.lock().direct = Some(to);
    }

    /// Ends direct writes for good (the close phase): waits for a claim still out to be written,
    /// and drops the socket handle. After it, everything goes through the queue and the writer.
    pub async fn end_direct(&self) {
        loop {
            {
                let mut queue = self.shared.queue.lock();
                queue.idle = false;
                if !queue.claimed {
                    queue.direct = None;
                    return;
                }
                queue.waiting = true;
            }
            self.shared.ready.notified().await;
        }
    }

    /// Waits until something is queued, then moves all of it into `batch` (which must be empty),
    /// in order, a pong first. What is moved stays counted until [`OutboxRx::written`]. `true`:
    /// a direct write left bytes unsent, and the writer must flush them (`batch` may be empty).
    /// While it waits with nothing to do the fan-out may write directly.
    pub async fn recv_all(&self, batch: &mut VecDeque<Message>) -> bool {
        loop {
            {
                let mut queue = self.shared.queue.lock();
                if queue.claimed {
                    queue.waiting = true;
                } else {
                    if !queue.messages.is_empty() {
                        std::mem::swap(&mut queue.messages, batch);
                    }
                    take_control(&mut queue, batch);
                    let flush = std::mem::take(&mut queue.flush);
                    if !batch.is_empty() || flush {
                        queue.idle = false;
                        return flush;
                    }
                    queue.idle = queue.direct.is_some();
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Moves whatever is queued now into `batch` without waiting; `false` if there was nothing.
    pub fn try_recv_all(&self, batch: &mut VecDeque<Message>) -> bool {
        let mut queue = self.shared.queue.lock();
        if !queue.messages.is_empty() {
            std::mem::swap(&mut queue.messages, batch);
        }
        take_control(&mut queue, batch);
        !batch.is_empty()
    }

    /// Tells the queue that `messages` taken by [`OutboxRx::recv_all`], of `bytes` payload in
    /// all, are written: they no longer count against the bounds.
    pub fn written(&self, messages: usize, bytes: usize) {
        if messages == 0 {
            return;
        }
        let mut queue = self.shared.queue.lock();
        queue.pinned = queue.pinned.saturating_sub(messages);
        queue.bytes = queue.bytes.saturating_sub(bytes + messages * SLOT_BYTES);
    }

    /// Answers a client's ping with a pong carrying `payload`, ahead of queued messages (see
    /// [`MAX_PENDING_PONGS`]).
    pub fn pong(&self, payload: Bytes) {
        let mut queue = self.shared.queue.lock();
        if queue.pongs.len() >= MAX_PENDING_PONGS {
            queue.pongs.clear();
        }
        queue.pongs.push_back(payload);
        drop(queue);
        self.shared.ready.notify_one();
    }

    /// Asks the writer for a ping frame, ahead of queued messages.
    pub fn ping(&self) {
        self.shared.queue.lock().ping = true;
        self.shared.ready.notify_one();
    }

    /// Drops everything still queued (an evicted connection will not get it) and returns how many
    /// messages that was.
    pub fn discard(&self) -> usize {
        let mut queue = self.shared.queue.lock();
        let dropped = std::mem::take(&mut queue.messages);
        queue.pinned -= dropped.len().min(queue.pinned);
        queue.bytes = queue
            .bytes
            .saturating_sub(dropped.iter().map(|m| cost(m.len())).sum());
        dropped.len()
    }

    /// Cancelled when the connection must close (evicted or shutting down).
    pub fn closing(&self) -> CancellationToken {
        self.shared.close.clone()
    }
}

/// Puts the pending ping and pongs (the connection's own control frames, never counted) at the
/// front of `batch`.
fn take_control(queue: &mut Queue, batch: &mut VecDeque<Message>) {
    if std::mem::take(&mut queue.ping) {
        batch.push_front(Message::Ping(Bytes::new()));
    }
    // Freed once taken: an idle connection keeps no slot for pongs.
    for pong in std::mem::take(&mut queue.pongs).into_iter().rev() {
        batch.push_front(Message::Pong(pong));
    }
}

#[cfg(test)]
mod tests;

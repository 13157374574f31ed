//! One connection's bounded outbound queue: the hub's rooms push into it, the connection's writer
//! drains it. Bounded in messages and bytes; a push over either bound evicts the receiver.
//!
//! The accounting counts what a receiver really pins: a message stays counted from the push until
//! the writer has handed its last byte to TLS (not merely until the writer took it off the queue),
//! and each costs its payload plus [`SLOT_BYTES`] for its queue slot. The payload is a refcount on
//! the one buffer every receiver shares, so the bound is a worst case: the receiver that holds the
//! last reference pins the whole payload.
//!
//! This file owns the queue and its wake rule only: it must not know rooms, frames or sockets.

use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::Mutex;

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
        let cost = cost(msg.len());
        let mut queue = self.shared.queue.lock();
        // An empty queue takes any one message, so `queue_bytes = max_message_size` still works.
        let full = queue.pinned >= self.shared.max_messages
            || (queue.pinned > 0 && queue.bytes + cost > self.shared.max_bytes);
        if full {
            drop(queue);
            // A slow consumer: its connection closes with 1013.
            self.shared.close.cancel();
            return false;
        }
        queue.messages.push_back(msg);
        queue.pinned += 1;
        queue.bytes += cost;
        let first = queue.messages.len() == 1;
        drop(queue);
        if first {
            self.shared.ready.notify_one();
        }
        true
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

    /// Waits until something is queued, then moves all of it into `batch` (which must be empty),
    /// in order, a pong first. What is moved stays counted until [`OutboxRx::written`].
    pub async fn recv_all(&self, batch: &mut VecDeque<Message>) {
        loop {
            {
                let mut queue = self.shared.queue.lock();
                if !queue.messages.is_empty() {
                    std::mem::swap(&mut queue.messages, batch);
                }
                take_control(&mut queue, batch);
                if !batch.is_empty() {
                    return;
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
mod tests {
    use super::*;

    fn text(n: usize) -> Message {
        Message::text("x".repeat(n))
    }

    #[tokio::test]
    async fn taken_messages_stay_counted_until_written() {
        let (tx, rx) = outbox(10, 3 * cost(100), CancellationToken::new());
        assert!(tx.push(text(100)));
        assert!(tx.push(text(100)));
        let mut batch = VecDeque::new();
        rx.recv_all(&mut batch).await;
        assert_eq!(batch.len(), 2);
        // The writer holds two; one more fits, a fourth does not.
        assert!(tx.push(text(100)));
        assert!(!tx.push(text(100)));
        assert!(rx.closing().is_cancelled());
    }

    #[tokio::test]
    async fn written_messages_free_their_share() {
        let (tx, rx) = outbox(2, 1 << 20, CancellationToken::new());
        assert!(tx.push(text(1)));
        assert!(tx.push(text(1)));
        let mut batch = VecDeque::new();
        rx.recv_all(&mut batch).await;
        rx.written(2, 2);
        batch.clear();
        assert!(tx.push(text(1)));
        assert!(tx.push(text(1)));
        assert!(!rx.closing().is_cancelled());
    }

    #[tokio::test]
    async fn pongs_go_first_one_per_ping_and_past_the_bound_only_the_latest() {
        let (tx, rx) = outbox(10, 1 << 20, CancellationToken::new());
        assert!(tx.push(text(3)));
        rx.pong(Bytes::from_static(b"one"));
        rx.pong(Bytes::from_static(b"two"));
        let mut batch = VecDeque::new();
        rx.recv_all(&mut batch).await;
        assert_eq!(batch[0], Message::Pong(Bytes::from_static(b"one")));
        assert_eq!(batch[1], Message::Pong(Bytes::from_static(b"two")));
        assert_eq!(batch.len(), 3);
        batch.clear();
        for i in 0..=MAX_PENDING_PONGS {
            rx.pong(Bytes::from(i.to_string()));
        }
        rx.recv_all(&mut batch).await;
        let latest = Bytes::from(MAX_PENDING_PONGS.to_string());
        assert_eq!(batch, [Message::Pong(latest)]);
    }

    #[test]
    fn an_empty_queue_takes_one_message_of_the_byte_bound() {
        let (tx, rx) = outbox(10, 100, CancellationToken::new());
        assert!(tx.push(text(100)));
        assert!(!tx.push(text(1)));
        assert!(rx.closing().is_cancelled());
    }

    #[test]
    fn discard_frees_the_queue() {
        let (tx, rx) = outbox(2, 1 << 20, CancellationToken::new());
        assert!(tx.push(text(5)));
        assert!(tx.push(text(5)));
        assert_eq!(rx.discard(), 2);
        assert!(tx.push(text(5)));
        assert!(!rx.closing().is_cancelled());
    }
}

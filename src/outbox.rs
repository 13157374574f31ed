//! One connection's bounded outbound queue: the hub's rooms push into it, the connection's writer
//! drains it. Bounded in messages and bytes; a push over either bound evicts the receiver.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use crate::hub::lock;

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

/// What both ends of an outbox see.
struct OutboxShared {
    queue: Mutex<Queue>,
    /// Wakes the writer; a wake sent while it is busy is kept for its next wait.
    ready: Notify,
    max_messages: usize,
    max_bytes: usize,
    /// Cancelled to make the connection close: by the hub when the queue is full, or by the
    /// drain, whose child token it is. Which one is told by whether the server is draining.
    close: CancellationToken,
}

#[derive(Default)]
struct Queue {
    messages: VecDeque<Message>,
    /// Bytes of `messages`.
    bytes: usize,
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
        let len = msg.len();
        let mut queue = lock(&self.shared.queue);
        if queue.messages.len() >= self.shared.max_messages
            || queue.bytes + len > self.shared.max_bytes
        {
            drop(queue);
            // A slow consumer: its connection closes with 1013.
            self.shared.close.cancel();
            return false;
        }
        queue.messages.push_back(msg);
        queue.bytes += len;
        let first = queue.messages.len() == 1;
        drop(queue);
        if first {
            self.shared.ready.notify_one();
        }
        true
    }
}

impl OutboxRx {
    /// Waits until something is queued, then moves all of it into `batch` (which must be empty),
    /// in order.
    pub async fn recv_all(&self, batch: &mut VecDeque<Message>) {
        loop {
            {
                let mut queue = lock(&self.shared.queue);
                if !queue.messages.is_empty() {
                    std::mem::swap(&mut queue.messages, batch);
                    queue.bytes = 0;
                    return;
                }
            }
            self.shared.ready.notified().await;
        }
    }

    /// Cancelled when the connection must close (evicted or shutting down).
    pub fn closing(&self) -> CancellationToken {
        self.shared.close.clone()
    }
}

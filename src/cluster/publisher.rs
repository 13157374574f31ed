//! The publisher: the one task that sends this node's messages to Redis, in the order the rooms
//! queued them (under their locks), in pipelines. A message kept in history goes through the
//! `PUBLISH_KEPT` script (stream entry and publish in one atomic step), and so does a numbered
//! room's message (the script numbers it), any other as a plain `PUBLISH`; this node's answers to
//! kicks ([`super::kick`]) go the same way. What fails is dropped and counted, never retried: a
//! late message would arrive out of order. What it sends ([`Out`]) and the bounded queue the rooms
//! fill ([`Shared::queue`]) are here too. It must not read rooms or touch the subscriber connection.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::presence::ttl_ms;
use super::scripts::{self, Call, Op};
use bytes::Bytes;

use super::{IO_TIMEOUT, PUBLISH_QUEUE_BYTES, Shared, kick};

/// What the publisher task sends.
pub(crate) enum Out {
    /// A message for a room's channel.
    Message {
        room: Arc<str>,
        data: Bytes,
        /// The room keeps this many messages in its stream (0: none).
        history: usize,
        /// A numbered room's message: Redis numbers it, and every node (this one too) delivers
        /// it when it comes back, but to this member of this node (the sender, no echo).
        numbered: Option<Option<u64>>,
    },
    /// This node's answer to a kick of the backend API ([`kick`]).
    KickReply(kick::Reply),
}

impl Out {
    /// What it weighs in the queue's byte bound ([`PUBLISH_QUEUE_BYTES`]).
    fn size(&self) -> usize {
        match self {
            Out::Message { data, .. } => data.len(),
            Out::KickReply(reply) => reply.size(),
        }
    }
}

impl From<kick::Reply> for Out {
    fn from(reply: kick::Reply) -> Out {
        Out::KickReply(reply)
    }
}

impl Shared {
    /// Queues `out` for the publisher task; `false` (counted as dropped) when either of the
    /// queue's bounds is reached.
    pub(crate) fn queue(&self, out: impl Into<Out>) -> bool {
        let out = out.into();
        let size = out.size();
        if self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size > PUBLISH_QUEUE_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        if self.out_tx.try_send(out).is_err() {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        true
    }
}

/// Messages sent to Redis in one pipeline, at most.
const PUBLISH_BATCH: usize = 512;

/// Sends queued messages to Redis in order, in pipelines of at most [`PUBLISH_BATCH`]; what
/// fails is dropped (counted), never retried later.
pub(super) async fn publisher(
    s: Arc<Shared>,
    mut rx: tokio::sync::mpsc::Receiver<Out>,
    stop: CancellationToken,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    loop {
        let received = tokio::select! {
            _ = stop.cancelled() => return,
            n = rx.recv_many(&mut batch, PUBLISH_BATCH) => n,
        };
        if received == 0 {
            return;
        }
        // The counters are of messages: a kick's answer that fails only leaves its asker waiting.
        let is_message: Vec<bool> = batch
            .iter()
            .map(|out| matches!(out, Out::Message { .. }))
            .collect();
        let messages = is_message.iter().filter(|m| **m).count() as u64;
        let bytes: usize = batch.iter().map(Out::size).sum();
        s.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        let Some(conn) = s.commands.load_full() else {
            s.dropped.fetch_add(messages, Ordering::Relaxed);
            batch.clear();
            continue;
        };
        let mut conn = (*conn).clone();
        let ttl = ttl_ms(s.history_ttl);
        let ops: Vec<Op> = batch
            .drain(..)
            .map(|out| match out {
                Out::Message {
                    room,
                    data,
                    history: 0,
                    numbered: None,
                } => {
                    let mut publish = redis::cmd("PUBLISH");
                    publish.arg(s.keys.channel(&room)).arg(&data[..]);
                    Op::Cmd(publish)
                }
                Out::Message {
                    room,
                    data,
                    history,
                    numbered,
                } => {
                    // A numbered room's candidate epoch (used if the room has none in Redis) and
                    // sender; empty for a room kept unnumbered.
                    let (epoch, sender) = match numbered {
                        None => (String::new(), String::new()),
                        Some(sender) => (
                            s.candidate_epoch(),
                            sender.map(|id| id.to_string()).unwrap_or_default(),
                        ),
                    };
                    Op::Call(Call::new(
                        &scripts::PUBLISH_KEPT,
                        (
                            s.keys.history(&room),
                            s.keys.channel(&room),
                            s.keys.presence(&room),
                            s.keys.seq(&room),
                        ),
                        (history, &data[..], ttl, epoch, sender),
                    ))
                }
                Out::KickReply(reply) => Op::Call(reply.call(&s.keys)),
            })
            .collect();
        match tokio::time::timeout(IO_TIMEOUT, scripts::run(&mut conn, ops)).await {
            Ok(Ok(results)) => {
                let sent = results
                    .iter()
                    .zip(&is_message)
                    .filter(|(r, message)| **message && r.is_ok())
                    .count() as u64;
                s.published.fetch_add(sent, Ordering::Relaxed);
                s.dropped.fetch_add(messages - sent, Ordering::Relaxed);
            }
            failed => {
                s.dropped.fetch_add(messages, Ordering::Relaxed);
                debug!(failed = ?failed.err().map(|_| "timeout"), "publish to redis failed; dropped");
            }
        }
    }
}

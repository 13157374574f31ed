//! The writing half of a connection: queued messages to frames, written straight into TLS.
//!
//! Each frame is its header (at most 10 bytes, built on the stack by [`frame::header`]) followed by
//! the payload the message shares with every other receiver; both go to TLS as one vectored write
//! per batch piece (up to [`MAX_FRAMES_PER_WRITE`] frames, at most one TLS record's worth), so what
//! is made for this connection alone is that record: the slices gathered into one plaintext record
//! (at most 16 KiB) and its ciphertext (see `tls::stream`), sent and freed at once. Nothing here
//! grows with the largest message.
//!
//! State lives in [`Writer`] (the batch and how much of its first frame is written), so writing can
//! stop at any await and resume in the close phase: a frame is always finished before another
//! (the close frame included) starts.
//!
//! It must not decide when a connection closes, only report how writing ended.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use crate::proto::message::Message;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::time::Sleep;

use crate::relay::outbox::OutboxRx;
use crate::ws::frame::{self, OpCode};

/// The most plaintext one TLS record carries (2^14 bytes, RFC 8446 §5.1): one write gathers no
/// more, since the TLS stream takes one record per write (`net::tls` asserts it agrees).
pub const MAX_RECORD_PLAINTEXT: usize = 16 * 1024;
/// Frames gathered into one vectored write; the TLS stream takes what fits one record.
pub const MAX_FRAMES_PER_WRITE: usize = 32;
/// A socket that takes no byte for this long while data waits belongs to a reader that stopped:
/// the connection is evicted as a slow consumer (1013).
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(3);
/// Queue capacity (in messages) above which a drained batch buffer is freed rather than kept.
const SHRINK_ABOVE: usize = 64;

/// Why writing stopped.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteEnd {
    /// The socket failed or closed.
    Gone,
    /// The socket took nothing for [`WRITE_STALL_TIMEOUT`].
    Stalled,
}

/// Writes frames to `io`.
pub struct Writer<W> {
    io: W,
    /// Messages taken from the outbox, oldest first; the first may be partly written.
    batch: VecDeque<Message>,
    /// Bytes of the first message's frame (header and payload) already handed to TLS.
    sent: usize,
    /// The stall timer ([`WRITE_STALL_TIMEOUT`]), made the first time a write has to wait and
    /// kept for the next: a connection whose socket never fills keeps none, and the connection's
    /// future (which lives as long as the connection) holds a pointer instead of a timer.
    stall: Option<Pin<Box<Sleep>>>,
}

/// A message's opcode and payload.
fn parts(msg: &Message) -> (OpCode, &[u8]) {
    let opcode = match msg {
        Message::Text(_) => OpCode::Text,
        Message::Binary(_) => OpCode::Binary,
        Message::Ping(_) => OpCode::Ping,
        Message::Pong(_) => OpCode::Pong,
    };
    (opcode, msg.payload())
}

/// Hands the first messages of `batch` (at most `take`) to `send` as frames, headers and shared
/// payloads, skipping the `sent` bytes an earlier write took, and stops once one TLS record's
/// worth is gathered: the writer's vectored write and the fan-out's direct write (`net::upgrade`)
/// frame here. With `whole`, a frame that would not fit the record whole is left out (a direct
/// write takes whole frames only); without, TLS cuts the last frame where the record ends.
/// Returns how many frames it gathered and what `send` said. The headers and the slice list are
/// on the stack, so they take no room in a connection's future.
pub fn with_frames<R>(
    batch: &VecDeque<Message>,
    take: usize,
    sent: usize,
    whole: bool,
    send: impl FnOnce(&[IoSlice<'_>]) -> R,
) -> (usize, R) {
    let mut heads = [frame::header(OpCode::Binary, 0); MAX_FRAMES_PER_WRITE];
    let mut payloads: [&[u8]; MAX_FRAMES_PER_WRITE] = [&[]; MAX_FRAMES_PER_WRITE];
    let (mut frames, mut gathered) = (0, 0);
    for msg in batch.iter().take(take.min(MAX_FRAMES_PER_WRITE)) {
        let (opcode, payload) = parts(msg);
        let head = frame::header(opcode, payload.len());
        let len = head.len() + payload.len();
        if whole && gathered + len - sent > MAX_RECORD_PLAINTEXT {
            break;
        }
        heads[frames] = head;
        payloads[frames] = payload;
        frames += 1;
        gathered += len;
        // One write takes at most one TLS record: frames past it would wait anyway.
        if gathered - sent >= MAX_RECORD_PLAINTEXT {
            break;
        }
    }
    let mut iov = [IoSlice::new(&[]); 2 * MAX_FRAMES_PER_WRITE];
    let mut n = 0;
    for (i, (head, payload)) in heads.iter().zip(payloads).take(frames).enumerate() {
        let (mut head, mut payload) = (head.as_bytes(), payload);
        if i == 0 {
            // Skip what an earlier write took.
            let skip_head = sent.min(head.len());
            head = &head[skip_head..];
            payload = &payload[sent - skip_head..];
        }
        for part in [head, payload] {
            if !part.is_empty() {
                iov[n] = IoSlice::new(part);
                n += 1;
            }
        }
    }
    (frames, send(&iov[..n]))
}

/// Whether a message was pushed through the outbox (so counted there); pings and pongs are the
/// connection's own.
fn counted(msg: &Message) -> bool {
    !matches!(msg, Message::Ping(_) | Message::Pong(_))
}

impl<W: AsyncWrite + Unpin> Writer<W> {
    pub fn new(io: W) -> Writer<W> {
        Writer {
            io,
            batch: VecDeque::new(),
            sent: 0,
            stall: None,
        }
    }

    /// The outbox (and the heartbeat's pings, the reader's pongs) to the socket, until the socket
    /// fails or stalls.
    pub async fn run(&mut self, outbox: &OutboxRx) -> WriteEnd {
        loop {
            if self.batch.is_empty() {
                // A burst can leave a large slot buffer behind; an idle connection should not keep it.
                if self.batch.capacity() > SHRINK_ABOVE {
                    self.batch = VecDeque::new();
                }
                // A direct write that left bytes unsent comes back with an empty batch: the
                // write below is then only the flush.
                outbox.recv_all(&mut self.batch).await;
            }
            if let Err(end) = self.write_batch(outbox, false).await {
                return end;
            }
        }
    }

    /// Writes what the outbox still holds, then flushes (the close phase: the queue gets no more).
    pub async fn drain(&mut self, outbox: &OutboxRx) -> Result<(), WriteEnd> {
        loop {
            if self.batch.is_empty() && !outbox.try_recv_all(&mut self.batch) {
                return self.flush().await;
            }
            self.write_batch(outbox, false).await?;
        }
    }

    /// Finishes the frame in progress, if any, and flushes; the rest of the batch is dropped.
    pub async fn finish_frame(&mut self, outbox: &OutboxRx) -> Result<(), WriteEnd> {
        if self.sent > 0 {
            self.write_batch(outbox, true).await?;
        }
        let dropped = std::mem::take(&mut self.batch);
        outbox.written(
            dropped.iter().filter(|m| counted(m)).count(),
            dropped
                .iter()
                .filter(|m| counted(m))
                .map(Message::len)
                .sum(),
        );
        self.flush().await
    }

    /// Writes a close frame and flushes; the caller finishes the frame in progress first
    /// ([`Writer::drain`] or [`Writer::finish_frame`]).
    pub async fn close_frame(&mut self, code: Option<u16>, reason: &str) -> Result<(), WriteEnd> {
        let payload = code
            .map(|c| frame::close_payload(c, reason))
            .unwrap_or_default();
        let head = frame::header(OpCode::Close, payload.len());
        let mut out = head.as_bytes().to_vec();
        out.extend_from_slice(&payload);
        stall_bound(&mut self.stall, self.io.write_all(&out)).await?;
        self.flush().await
    }

    /// Ends the stream: TLS close_notify, then the TCP write side.
    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }

    /// Writes the batch (or only its first frame, if `first_only`), then flushes.
    async fn write_batch(&mut self, outbox: &OutboxRx, first_only: bool) -> Result<(), WriteEnd> {
        loop {
            if self.batch.is_empty() {
                return self.flush().await;
            }
            let Writer {
                io,
                batch,
                sent,
                stall,
            } = self;
            let n = stall_bound(stall, write_some(io, batch, *sent, first_only)).await?;
            let first_done = self.advance(n, outbox);
            if first_only && first_done {
                return self.flush().await;
            }
        }
    }

    /// Moves past `n` written bytes; returns whether the first frame is now complete. Completed
    /// messages stop counting against the outbox.
    fn advance(&mut self, mut n: usize, outbox: &OutboxRx) -> bool {
        let (mut messages, mut bytes, mut first_done) = (0, 0, false);
        while n > 0 {
            let Some((opcode, payload)) = self.batch.front().map(parts) else {
                break;
            };
            let total = frame::header(opcode, payload.len()).len() + payload.len();
            let left = total - self.sent;
            if n < left {
                self.sent += n;
                break;
            }
            n -= left;
            self.sent = 0;
            first_done = true;
            let msg = self.batch.pop_front().expect("front exists");
            if counted(&msg) {
                messages += 1;
                bytes += msg.len();
            }
        }
        outbox.written(messages, bytes);
        first_done
    }

    async fn flush(&mut self) -> Result<(), WriteEnd> {
        stall_bound(&mut self.stall, self.io.flush()).await
    }
}

/// One vectored write of up to [`MAX_FRAMES_PER_WRITE`] frames from the front of the batch
/// ([`with_frames`], inside each poll).
async fn write_some<W: AsyncWrite + Unpin>(
    io: &mut W,
    batch: &VecDeque<Message>,
    sent: usize,
    first_only: bool,
) -> io::Result<usize> {
    let take = if first_only { 1 } else { MAX_FRAMES_PER_WRITE };
    let written = std::future::poll_fn(|cx| {
        let write = |iov: &[IoSlice<'_>]| Pin::new(&mut *io).poll_write_vectored(cx, iov);
        with_frames(batch, take, sent, false, write).1
    })
    .await?;
    if written == 0 {
        return Err(io::ErrorKind::WriteZero.into());
    }
    Ok(written)
}

/// Runs one write step, which must make progress within [`WRITE_STALL_TIMEOUT`]. The timer is
/// armed only if the step has to wait (`stall` keeps it for the next time).
async fn stall_bound<T>(
    stall: &mut Option<Pin<Box<Sleep>>>,
    step: impl Future<Output = io::Result<T>>,
) -> Result<T, WriteEnd> {
    let mut step = std::pin::pin!(step);
    let mut armed = false;
    std::future::poll_fn(|cx| {
        if let Poll::Ready(done) = step.as_mut().poll(cx) {
            return Poll::Ready(done.map_err(|_| WriteEnd::Gone));
        }
        let deadline = || tokio::time::Instant::now() + WRITE_STALL_TIMEOUT;
        let timer = match stall {
            Some(timer) if armed => timer,
            Some(timer) => {
                timer.as_mut().reset(deadline());
                timer
            }
            None => stall.insert(Box::pin(tokio::time::sleep_until(deadline()))),
        };
        armed = true;
        timer.as_mut().poll(cx).map(|()| Err(WriteEnd::Stalled))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::outbox::{self, SLOT_BYTES};
    use bytes::Bytes;
    use tokio::io::AsyncReadExt;
    use tokio_util::sync::CancellationToken;

    /// Server frames as (opcode, payload), parsed from `wire`.
    fn frames(mut wire: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        while !wire.is_empty() {
            let (len, start) = match wire[1] {
                126 => (u16::from_be_bytes([wire[2], wire[3]]) as usize, 4),
                127 => (
                    u64::from_be_bytes(wire[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                n => (n as usize, 2),
            };
            assert_eq!(wire[0] & 0xf0, 0x80, "FIN set, no reserved bits");
            out.push((wire[0] & 0x0f, wire[start..start + len].to_vec()));
            wire = &wire[start + len..];
        }
        out
    }

    #[tokio::test]
    async fn frames_survive_a_socket_that_takes_seven_bytes_at_a_time() {
        // A pipe of 7 bytes: every write is partial, headers are split, payloads are split.
        let (client, server) = tokio::io::duplex(7);
        let (tx, rx) = outbox::outbox(100, 1 << 20, CancellationToken::new());
        let big = Bytes::from((0..70_000).map(|i| (i % 251) as u8).collect::<Vec<_>>());
        assert!(tx.push(Message::text("hello")));
        assert!(tx.push(Message::Binary(big.clone())));
        assert!(tx.push(Message::Binary(Bytes::from_static(&[9; 300]))));
        rx.pong(Bytes::from_static(b"p"));
        let mut writer = Writer::new(server);
        let read = tokio::spawn(async move {
            let mut client = client;
            let mut wire = Vec::new();
            client.read_to_end(&mut wire).await.unwrap();
            wire
        });
        writer.drain(&rx).await.unwrap();
        writer.shutdown().await;
        drop(writer);
        let wire = read.await.unwrap();
        assert_eq!(
            frames(&wire),
            vec![
                (0xA, b"p".to_vec()),
                (0x1, b"hello".to_vec()),
                (0x2, big.to_vec()),
                (0x2, vec![9; 300]),
            ]
        );
        // Everything written: the queue's whole byte budget is free again.
        let budget = (1 << 20) / (300 + SLOT_BYTES);
        for _ in 0..budget.min(99) {
            assert!(tx.push(Message::Binary(Bytes::from_static(&[9; 300]))));
        }
        assert!(!rx.closing().is_cancelled());
    }

    #[tokio::test]
    async fn finishing_the_frame_in_progress_drops_the_rest_and_the_close_frame_follows() {
        let (client, server) = tokio::io::duplex(1 << 20);
        let (tx, rx) = outbox::outbox(100, 1 << 20, CancellationToken::new());
        assert!(tx.push(Message::text("first")));
        assert!(tx.push(Message::text("second")));
        let mut writer = Writer::new(server);
        assert!(rx.try_recv_all(&mut writer.batch));
        // As if an earlier write had taken three bytes of the first frame.
        let head = frame::header(OpCode::Text, 5);
        let mut wire = head.as_bytes()[..2].to_vec();
        wire.push(b'f');
        writer.sent = 3;
        writer.finish_frame(&rx).await.unwrap();
        writer
            .close_frame(Some(1013), "slow consumer")
            .await
            .unwrap();
        drop(writer);
        let mut client = client;
        client.read_to_end(&mut wire).await.unwrap();
        assert_eq!(
            frames(&wire),
            vec![
                (0x1, b"first".to_vec()),
                (0x8, frame::close_payload(1013, "slow consumer")),
            ]
        );
    }
}

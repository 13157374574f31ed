//! One WebSocket connection, from the upgraded stream to the close frame.
//!
//! wsline owns both directions of the protocol (RFC 6455 framing is in [`crate::ws::frame`]): the
//! [`read`] half turns client frames into whole messages under the size limit, the [`write`](mod@write) half
//! writes queued messages as a header plus the shared payload straight into TLS. The task runs
//! three loops at once and ends with the first to finish: the reader (client messages -> the
//! room), the writer (the outbox -> the socket) and the heartbeat (one timer: pings, idle, the
//! token's expiry). The outbox's close token ends all three when the hub evicts the connection
//! (1013) or the server drains (1001). The drain's end (`stopped`) is watched in the close phase
//! only, so no token shared by every connection is polled on each wake-up.
//!
//! While the writer waits with nothing to do, the fan-out may write a message to the socket itself
//! (see [`crate::relay::outbox`]): the writer then has nothing to wake up for.
//!
//! Then the close phase, under [`CLOSE_TIMEOUT`] whatever the reason: direct writes end, what was queued is written
//! first (echoes, presence: except for an evicted slow consumer, which only finishes the frame in
//! progress), then the close frame, then the client's close reply is awaited while whatever it
//! still sends is read and discarded (at most [`LINGER_BYTES`]: the lingering close), so the
//! client reads the close code instead of a reset.
//!
//! It must not admit, parse HTTP or know the server's state: it gets the counters and the drain's
//! token, nothing more.

pub mod read;
pub mod write;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crate::proto::message::{Message, Utf8Bytes};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::observe::stats::Stats;
use crate::proto::close;
use crate::relay::envelope::{self, Envelope};
use crate::relay::hub::{Cork, Membership};
use crate::relay::outbox::OutboxRx;
use crate::ws::rate::TokenBucket;
use read::{Incoming, ReadEnd, Reader};
use write::{WriteEnd, Writer};

/// How long a closing connection may take to write what was queued, its close frame, and hear
/// the reply.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// The most a closing connection reads and discards after its close frame while it waits for the
/// client's close (within [`CLOSE_TIMEOUT`]): a client still streaming a refused message (a 1 MiB
/// one over a 64 KiB limit, say) gets to its close reply and so reads the code and the reason.
pub const LINGER_BYTES: u64 = 4 * 1024 * 1024;
/// `SO_SNDBUF` on every accepted socket (the kernel doubles it for its bookkeeping): everything a
/// connection may have in the kernel's send queue, unsent or unacknowledged. It replaces the
/// kernel's autotuning (up to `tcp_wmem`'s 4 MiB), so a stalled reader pins little and its writer
/// sees the stall at once; it caps one connection at about 128 KiB per round trip (~2.5 MB/s at
/// 50 ms), plenty for a relay of chat-sized messages.
pub const SEND_BUFFER_BYTES: usize = 64 * 1024;
/// `TCP_NOTSENT_LOWAT`: the socket is writable only while less than this is unsent, so queued
/// messages wait in the outbox (where they are counted and shared) rather than in the kernel.
pub const NOTSENT_LOWAT_BYTES: u32 = 16 * 1024;

/// Bounds what the kernel keeps for this socket (see [`SEND_BUFFER_BYTES`],
/// [`NOTSENT_LOWAT_BYTES`]).
pub fn tune_socket(tcp: &TcpStream) {
    let socket = socket2::SockRef::from(tcp);
    if let Err(e) = socket.set_send_buffer_size(SEND_BUFFER_BYTES) {
        debug!(error = %e, "cannot set SO_SNDBUF");
    }
    if let Err(e) = socket.set_tcp_notsent_lowat(NOTSENT_LOWAT_BYTES) {
        debug!(error = %e, "cannot set TCP_NOTSENT_LOWAT");
    }
}

/// How a connection ends, and so what the close phase sends.
#[derive(Debug)]
enum End {
    /// The peer sent a close frame (with this code): answer it after what was queued.
    PeerClosed(Option<u16>),
    /// The transport is gone (reset, EOF, write error): nothing more can be sent.
    Gone,
    /// The server closes with this code and reason, after writing what was queued.
    Close(u16, &'static str),
    /// A slow consumer: its queue is dropped, the frame in progress finished, then `1013`.
    Evicted,
}

impl End {
    fn code(&self) -> Option<u16> {
        match self {
            End::Close(code, _) => Some(*code),
            End::Evicted => Some(1013),
            _ => None,
        }
    }
}

/// Everything a connection needs, prepared before the upgrade.
///
/// It gets only what a connection uses (the counters and the drain's tokens), not the server's
/// state: the connection task knows nothing of listeners, TLS or admission. The task's future owns
/// it once and lends it to [`drive`] (see `net::upgrade`: a value passed down by value would be
/// held again by every level's future).
pub struct Conn {
    /// The counters the connection bumps (opened, messages in, slow consumers).
    pub stats: Arc<Stats>,
    /// Cancelled when the server drains: tells a drain (close `1001`) from an eviction.
    pub draining: CancellationToken,
    /// Cancelled when the drain is over: a connection still closing is cut.
    pub stopped: CancellationToken,
    pub config: Arc<Config>,
    /// The TCP peer (a proxy, when there is one).
    pub peer: SocketAddr,
    /// The client's address (from `X-Forwarded-For` when `peer` is a trusted proxy).
    pub client: IpAddr,
    /// The room's name, for the log lines (the membership is gone by the close phase).
    pub room: Arc<str>,
    /// Taken (the member leaves the room) when the connection starts to close.
    pub membership: Option<Membership>,
    pub outbox: OutboxRx,
    /// Wraps this sender's text messages (`relay.envelope = "json"`); `None` for raw relay.
    pub envelope: Option<Envelope>,
    /// When the member's signed token expires: the connection closes then with
    /// [`close::EXPIRED`].
    pub expires: Option<std::time::SystemTime>,
}

/// What to do with an upgraded stream.
pub enum Next {
    /// Serve the admitted connection.
    Run(Conn),
    /// Close at once with this code and reason (e.g. `1008` name taken); the token is the drain's
    /// end (see [`Conn::stopped`]).
    Refuse(u16, &'static str, OutboxRx, CancellationToken),
}

/// Serves an upgraded stream, given as its two halves and the bytes read past the request head
/// (`early`), until it closes: the admitted connection, or a refusal's close frame.
pub async fn drive<R, W>(rd: R, wr: W, early: Bytes, max_message: u64, next: &mut Next)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut reader = Reader::new(rd, early, max_message);
    let mut writer = Writer::new(wr);
    match next {
        Next::Run(conn) => conn.run(&mut reader, &mut writer).await,
        Next::Refuse(code, reason, outbox, stopped) => {
            let end = End::Close(*code, reason);
            close(&mut reader, &mut writer, outbox, end, stopped).await;
        }
    }
}

impl Conn {
    async fn run<R, W>(&mut self, reader: &mut Reader<R>, writer: &mut Writer<W>)
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let opened = Instant::now();
        let (peer, client, room) = (self.peer, self.client, &self.room);
        info!(%client, %peer, %room, "connection opened");
        self.stats.connections_total.fetch_add(1, Ordering::Relaxed);

        let Some(membership) = &self.membership else {
            return;
        };
        let (stats, outbox, config) = (&self.stats, &self.outbox, &self.config);
        let seen = Seen::since(opened);
        let closing = outbox.closing();
        let end = tokio::select! {
            biased;
            _ = closing.cancelled() => if self.draining.is_cancelled() {
                End::Close(1001, "server shutting down")
            } else if outbox.replaced() {
                End::Close(crate::relay::hub::REPLACED.0, crate::relay::hub::REPLACED.1)
            } else if outbox.kicked() {
                End::Close(crate::relay::hub::KICKED.0, crate::relay::hub::KICKED.1)
            } else {
                End::Evicted
            },
            end = read_loop(reader, membership, outbox, stats, config, &seen, self.envelope.as_ref()) => end,
            end = writer.run(outbox) => match end {
                WriteEnd::Gone => End::Gone,
                WriteEnd::Stalled => End::Evicted,
            },
            end = heartbeat(outbox, &seen, config, self.expires) => end,
        };
        if matches!(end, End::Evicted) {
            stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        self.membership = None;
        // The close code whoever closed: ours, the client's (1005: it gave none), or none at all.
        let (code, closed_by) = match &end {
            End::PeerClosed(code) => (Some(code.unwrap_or(1005)), "client"),
            End::Gone => (None, "transport"),
            _ => (end.code(), "server"),
        };
        let duration_ms = opened.elapsed().as_millis() as u64;
        if close(reader, writer, outbox, end, &self.stopped).await {
            info!(%client, %peer, %room, duration_ms, code, closed_by, "connection closed");
        } else {
            warn!(%client, %peer, %room, duration_ms, "connection cut at drain timeout");
        }
    }
}

/// When the connection opened and when the client was last heard from (any bytes, so a large
/// message trickling in keeps its sender alive): the reader records, the heartbeat reads (milliseconds since `opened` in an atomic, so neither waits for the other).
struct Seen {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Seen {
    fn since(opened: Instant) -> Seen {
        Seen {
            opened,
            last_ms: AtomicU64::new(0),
        }
    }

    fn record(&self, now: Instant) {
        let ms = now.saturating_duration_since(self.opened).as_millis();
        self.last_ms.store(ms as u64, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Client messages to the room, until the client closes or breaks the protocol.
async fn read_loop<R: AsyncRead + Unpin>(
    reader: &mut Reader<R>,
    membership: &Membership,
    outbox: &OutboxRx,
    stats: &Stats,
    config: &Config,
    seen: &Seen,
    envelope: Option<&Envelope>,
) -> End {
    // The app-level ping and pong are read from the config where used, not kept in this future.
    let heartbeat = &config.heartbeat;
    let echo = config.relay.echo;
    let mut bucket = TokenBucket::new(config.limits.messages_per_second, config.limits.burst);
    // Members this connection's messages claimed for a direct write (see `relay::hub::Cork`):
    // written as soon as the reader has to wait for more, or after `Cork::FULL` messages, and
    // given back to their writers if this future is dropped first.
    let mut cork = Cork::default();
    loop {
        if cork.full() {
            cork.write();
        }
        let next = reader.next_heard(|| seen.record(Instant::now()));
        let incoming = match written_before_waiting(next, &mut cork).await {
            Ok(incoming) => incoming,
            Err(ReadEnd::Gone) => return End::Gone,
            Err(ReadEnd::Refused(e)) => {
                debug!(error = %e, "read refused");
                return End::Close(e.close_code(), e.reason());
            }
        };
        let now = Instant::now();
        seen.record(now);
        let msg = match incoming {
            Incoming::Message(msg) => msg,
            Incoming::Ping(payload) => {
                outbox.pong(payload);
                continue;
            }
            // A pong only proves the client is alive.
            Incoming::Pong => continue,
            Incoming::Close(code) => return End::PeerClosed(code),
        };
        if !bucket.take(now) {
            return End::Close(1008, "rate limit");
        }
        match msg {
            Message::Text(text)
                if !heartbeat.app_ping.is_empty()
                    && text.as_bytes() == heartbeat.app_ping.as_bytes() =>
            {
                membership.reply(Message::Text(Utf8Bytes::from(heartbeat.app_pong.clone())));
            }
            msg => {
                let Some(msg) = envelope::apply(envelope, msg) else {
                    return End::Close(1003, envelope::BINARY_REFUSED);
                };
                stats.messages_in.fetch_add(1, Ordering::Relaxed);
                membership.publish(msg, echo, &mut cork);
            }
        }
    }
}

/// `next`, with `cork` written whenever it has to wait: a sender's claims are written before it
/// waits for anything, and only then (so the messages it reads in one go reach each receiver
/// together).
async fn written_before_waiting<T>(next: impl Future<Output = T>, cork: &mut Cork) -> T {
    let mut next = std::pin::pin!(next);
    std::future::poll_fn(|cx| {
        let polled = next.as_mut().poll(cx);
        if polled.is_pending() {
            cork.write();
        }
        polled
    })
    .await
}

/// The connection's one timer: asks the writer for a ping every `heartbeat.ping_interval`,
/// resolves once nothing has arrived from the client for `heartbeat.idle_timeout`, or when the
/// member's token expires (`expires`). The timer is set for whichever comes first and re-armed
/// from the last arrival, not once per message.
async fn heartbeat(
    outbox: &OutboxRx,
    seen: &Seen,
    config: &Config,
    expires: Option<std::time::SystemTime>,
) -> End {
    let (ping_interval, idle_timeout) = (
        config.heartbeat.ping_interval,
        config.heartbeat.idle_timeout,
    );
    // A wall-clock instant as a deadline on the monotonic clock; none: never.
    let expiry = expires.map(|at| {
        let left = at
            .duration_since(std::time::SystemTime::now())
            .unwrap_or_default();
        Instant::now() + left
    });
    let mut next_ping = seen.opened + ping_interval;
    loop {
        let mut due = next_ping.min(seen.last() + idle_timeout);
        if let Some(expiry) = expiry {
            due = due.min(expiry);
        }
        tokio::time::sleep_until(on_tick(due).into()).await;
        let now = Instant::now();
        if expiry.is_some_and(|at| at <= now) {
            return End::Close(close::EXPIRED.0, close::EXPIRED.1);
        }
        if seen.last() + idle_timeout <= now {
            return End::Close(1000, "idle timeout");
        }
        if next_ping <= now {
            outbox.ping();
            next_ping = now + ping_interval;
        }
    }
}

/// Heartbeat deadlines are rounded up to this grid, shared by every connection in the process, so
/// that the timers of many connections fire together: one wake-up of the runtime per tick serves
/// every ping and idle check due in it, instead of one wake-up per connection.
pub const HEARTBEAT_TICK: Duration = Duration::from_millis(100);

/// `t` rounded up to the next [`HEARTBEAT_TICK`] of the process-wide grid.
fn on_tick(t: Instant) -> Instant {
    static GRID: OnceLock<Instant> = OnceLock::new();
    let origin = *GRID.get_or_init(Instant::now);
    let tick = HEARTBEAT_TICK.as_nanos();
    let since = t.saturating_duration_since(origin).as_nanos();
    let rounded = since.div_ceil(tick) * tick;
    origin + Duration::from_nanos(u64::try_from(rounded).unwrap_or(u64::MAX))
}

/// The close phase, bounded by [`CLOSE_TIMEOUT`]: what was queued, the close frame `end` calls
/// for, the peer's close reply, then the end of the TLS stream. `false` when the drain's end
/// (`stopped`) cut it first.
async fn close<R, W>(
    reader: &mut Reader<R>,
    writer: &mut Writer<W>,
    outbox: &OutboxRx,
    end: End,
    stopped: &CancellationToken,
) -> bool
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let finish = async {
        // No direct write from the fan-out after this (nor after the close frame below).
        outbox.end_direct().await;
        let (code, reason) = match end {
            End::Gone => return,
            End::PeerClosed(code) => {
                if writer.drain(outbox).await.is_ok() && writer.close_frame(code, "").await.is_ok()
                {
                    writer.shutdown().await;
                }
                return;
            }
            End::Close(code, reason) => {
                if writer.drain(outbox).await.is_err() {
                    return;
                }
                (code, reason)
            }
            End::Evicted => {
                outbox.discard();
                if writer.finish_frame(outbox).await.is_err() {
                    return;
                }
                (1013, "slow consumer")
            }
        };
        if writer.close_frame(Some(code), reason).await.is_err() {
            return;
        }
        // The lingering close: whatever arrives until the client's close reply (or its end of
        // stream) is read and discarded, never relayed, so the socket is not closed on unread
        // bytes (a reset that would cost the client our close frame).
        reader.linger(LINGER_BYTES).await;
        writer.shutdown().await;
    };
    tokio::select! {
        biased;
        _ = tokio::time::timeout(CLOSE_TIMEOUT, finish) => true,
        () = stopped.cancelled() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heartbeat_deadlines_share_one_grid() {
        let line = on_tick(Instant::now());
        assert_eq!(on_tick(line), line, "a grid line stays");
        let a = on_tick(line + Duration::from_millis(1));
        let b = on_tick(line + HEARTBEAT_TICK - Duration::from_millis(1));
        assert_eq!(a, line + HEARTBEAT_TICK, "rounded up, never early");
        assert_eq!(a, b, "deadlines within one tick fire together");
    }
}

//! One WebSocket connection, from the upgraded stream to the close frame.
//!
//! The task runs three loops at once and ends with the first to finish: the reader (client
//! messages -> the room), the writer (the outbox -> the socket, then one flush, plus the server's
//! pings), and the idle watch. The outbox's close token ends all three when the hub evicts the
//! connection (1013) or the server drains (1001). Then the task sends its close frame under a short
//! deadline, so a client that stopped reading cannot hold it, and the [`Membership`] guard drops.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::{Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tracing::{debug, info};

use crate::State;
use crate::config::Config;
use crate::envelope::{self, Envelope};
use crate::hub::Membership;
use crate::limits::{Admission, TokenBucket};
use crate::outbox::OutboxRx;

type Ws = WebSocketStream<TokioIo<Upgraded>>;

/// Bytes tungstenite reads at a time from the TLS layer (which reads the socket in 4 KiB steps).
/// tungstenite's default, 128 KiB, is allocated up front for every connection; a small buffer keeps
/// idle connections cheap and grows only for a large message.
const READ_BUFFER_BYTES: usize = 512;
/// Frames are gathered up to this size before a write: one TLS record's worth.
const WRITE_BUFFER_BYTES: usize = 16 * 1024;
/// How long a closing connection may take to get its close frame out and hear the reply.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(3);
/// Queue capacity (in messages) above which a drained batch buffer is freed rather than kept.
const SHRINK_ABOVE: usize = 64;

/// The WebSocket limits of a connection: message and frame size capped at `relay.max_message_size`
/// (checked against the frame header, before any payload is buffered).
pub fn ws_config(config: &Config) -> WebSocketConfig {
    let max = config.relay.max_message_size as usize;
    WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .write_buffer_size(WRITE_BUFFER_BYTES)
        .max_write_buffer_size(
            WRITE_BUFFER_BYTES + 2 * envelope::max_relayed_bytes(config) as usize + 1024,
        )
        .max_message_size(Some(max))
        .max_frame_size(Some(max))
}

/// How a connection ends, and so which close frame (if any) the server sends.
#[derive(Debug)]
enum End {
    /// The peer sent a close frame (with this code, if any); tungstenite answers it.
    PeerClosed(Option<u16>),
    /// The transport is gone (reset, EOF, write error): nothing more can be sent.
    Gone,
    /// The server closes with this code and reason.
    Close(CloseCode, &'static str),
}

/// Everything a connection needs, prepared before the upgrade.
pub struct Conn {
    pub state: Arc<State>,
    pub config: Arc<Config>,
    /// The TCP peer (a proxy, when there is one).
    pub peer: SocketAddr,
    /// The client's address (from `X-Forwarded-For` when `peer` is a trusted proxy).
    pub client: IpAddr,
    pub membership: Membership,
    pub outbox: OutboxRx,
    /// This connection's slot in the connection limits, freed when the task ends.
    pub admission: Admission,
    /// Wraps this sender's text messages (`relay.envelope = "json"`); `None` for raw relay.
    pub envelope: Option<Envelope>,
}

/// Closes a connection that was admitted only to be told why it cannot stay (e.g. name taken).
pub async fn refuse(ws: Ws, code: CloseCode, reason: &'static str) {
    let (mut sink, mut stream) = ws.split();
    close(&mut sink, &mut stream, End::Close(code, reason)).await;
}

impl Conn {
    pub async fn run(self, ws: Ws) {
        let opened = Instant::now();
        let room = self.membership.room().to_owned();
        let (peer, client) = (self.peer, self.client);
        info!(%client, %peer, %room, "connection opened");
        self.state
            .stats
            .connections_total
            .fetch_add(1, Ordering::Relaxed);

        let (mut sink, mut stream) = ws.split();
        let Conn {
            state,
            config,
            membership,
            outbox,
            admission,
            envelope,
            ..
        } = self;
        let last_seen = AtomicU64::new(0);
        let closing = outbox.closing();
        let end = tokio::select! {
            biased;
            _ = closing.cancelled() => if state.shutdown.is_draining() {
                End::Close(CloseCode::Away, "server shutting down")
            } else {
                state.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                End::Close(CloseCode::Again, "slow consumer")
            },
            end = read(&mut stream, &membership, &state, &config, opened, &last_seen, envelope.as_ref()) => end,
            end = write(&mut sink, &outbox, config.heartbeat.ping_interval) => end,
            end = idle(&last_seen, opened, config.heartbeat.idle_timeout) => end,
        };
        drop(membership);
        // The close code whoever closed: ours, the client's (1005: it gave none), or none at all.
        let (code, closed_by) = match &end {
            End::Close(code, _) => (Some(u16::from(*code)), "server"),
            End::PeerClosed(code) => (Some(code.unwrap_or(1005)), "client"),
            End::Gone => (None, "transport"),
        };
        close(&mut sink, &mut stream, end).await;
        drop(admission);
        info!(
            %client,
            %peer,
            %room,
            duration_ms = opened.elapsed().as_millis() as u64,
            code,
            closed_by,
            "connection closed"
        );
    }
}

/// Client messages to the room, until the client closes or breaks the protocol.
async fn read(
    stream: &mut SplitStream<Ws>,
    membership: &Membership,
    state: &State,
    config: &Config,
    opened: Instant,
    last_seen: &AtomicU64,
    envelope: Option<&Envelope>,
) -> End {
    let app_ping = config.heartbeat.app_ping.as_bytes();
    let app_pong = Utf8Bytes::from(config.heartbeat.app_pong.clone());
    let echo = config.relay.echo;
    let mut bucket = TokenBucket::new(config.limits.messages_per_second, config.limits.burst);
    loop {
        let msg = match stream.next().await {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => return end_for(e),
            None => return End::Gone,
        };
        let now = Instant::now();
        last_seen.store((now - opened).as_millis() as u64, Ordering::Relaxed);
        if (msg.is_text() || msg.is_binary()) && !bucket.take(now) {
            return End::Close(CloseCode::Policy, "rate limit");
        }
        match msg {
            Message::Text(text) if !app_ping.is_empty() && text.as_bytes() == app_ping => {
                membership.reply(Message::Text(app_pong.clone()));
            }
            Message::Text(_) | Message::Binary(_) => {
                let Some(msg) = envelope::apply(envelope, msg) else {
                    return End::Close(CloseCode::Unsupported, envelope::BINARY_REFUSED);
                };
                state.stats.messages_in.fetch_add(1, Ordering::Relaxed);
                membership.publish(msg, echo);
            }
            Message::Close(frame) => return End::PeerClosed(frame.map(|f| u16::from(f.code))),
            // tungstenite answers pings itself; pongs only prove the client is alive.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
        }
    }
}

/// The close code for an error reading from the client.
fn end_for(e: WsError) -> End {
    debug!(error = %e, "read failed");
    match e {
        WsError::Capacity(_) => End::Close(CloseCode::Size, "message too big"),
        WsError::Utf8(_) => End::Close(CloseCode::Invalid, "invalid UTF-8"),
        WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => End::Gone,
        WsError::Protocol(_) => End::Close(CloseCode::Protocol, "protocol error"),
        WsError::ConnectionClosed | WsError::AlreadyClosed | WsError::Io(_) => End::Gone,
        _ => End::Close(CloseCode::Protocol, "protocol error"),
    }
}

/// The outbox to the socket: everything queued, then one flush; and a ping every `ping_interval`.
async fn write(
    sink: &mut SplitSink<Ws, Message>,
    outbox: &OutboxRx,
    ping_interval: Duration,
) -> End {
    let mut ping =
        tokio::time::interval_at(tokio::time::Instant::now() + ping_interval, ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Swapped with the outbox's queue on every batch, so the two share their capacity.
    let mut batch = VecDeque::new();
    loop {
        tokio::select! {
            _ = outbox.recv_all(&mut batch) => {}
            _ = ping.tick() => batch.push_back(Message::Ping(Default::default())),
        }
        while let Some(msg) = batch.pop_front() {
            if sink.feed(msg).await.is_err() {
                return End::Gone;
            }
        }
        if sink.flush().await.is_err() {
            return End::Gone;
        }
        // A burst can leave a large buffer behind; an idle connection should not keep it.
        if batch.capacity() > SHRINK_ABOVE {
            batch = VecDeque::new();
        }
    }
}

/// Resolves once nothing has arrived from the client for `idle_timeout`. One timer per period,
/// re-armed from the last arrival, rather than one timer per message.
async fn idle(last_seen: &AtomicU64, opened: Instant, idle_timeout: Duration) -> End {
    let mut deadline = opened + idle_timeout;
    loop {
        tokio::time::sleep_until(deadline.into()).await;
        let seen = opened + Duration::from_millis(last_seen.load(Ordering::Relaxed));
        if seen + idle_timeout <= Instant::now() {
            return End::Close(CloseCode::Normal, "idle timeout");
        }
        deadline = seen + idle_timeout;
    }
}

/// Sends the close frame `end` calls for and waits briefly for the peer's reply.
async fn close(sink: &mut SplitSink<Ws, Message>, stream: &mut SplitStream<Ws>, end: End) {
    let finish = async {
        match end {
            End::Gone => {}
            // tungstenite queued the reply to the peer's close; get it out.
            End::PeerClosed(_) => {
                let _ = sink.flush().await;
            }
            End::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: Utf8Bytes::from_static(reason),
                };
                if sink.send(Message::Close(Some(frame))).await.is_ok() {
                    // Read until the peer's close arrives (or the stream ends).
                    while let Some(Ok(msg)) = stream.next().await {
                        if msg.is_close() {
                            break;
                        }
                    }
                }
            }
        }
    };
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, finish).await;
}

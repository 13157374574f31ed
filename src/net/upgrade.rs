//! An admitted upgrade as the task that runs it: waits for hyper to hand over the stream after
//! the `101`, unwraps wsline's TLS stream from hyper's box, and serves the WebSocket
//! ([`crate::ws::conn`]) until it closes or the drain timeout cuts it. It holds the socket's slot
//! in the connection limits (and the real client's, behind a trusted proxy) for as long as it runs.
//!
//! It is a value, not a spawn: HTTP routing builds it and hands it to the spawner the runtime gave
//! [`crate::net::http::serve`], so the task tree is spawned in one place (`runtime::tasks`). It must
//! not admit, route or answer HTTP.

use std::collections::VecDeque;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{ReadHalf, WriteHalf};
use tracing::debug;

use crate::config::Config;
use crate::net::limits::Admission;
use crate::net::state::State;
use crate::net::tls::{self, Half, SharedTls, TlsStream};
use crate::proto::message::Message;
use crate::relay::envelope::Envelope;
use crate::relay::hub::Membership;
use crate::relay::outbox::{Direct, OutboxRx, Sent};
use crate::ws::conn::write::{MAX_FRAMES_PER_WRITE, with_frames};
use crate::ws::conn::{self, Conn};

/// One admitted upgrade, ready to run as its own task ([`Upgrade::run`]).
pub struct Upgrade {
    pub(crate) on_upgrade: OnUpgrade,
    pub(crate) state: Arc<State>,
    /// The socket's slot, taken over from its HTTP task: the socket counts until it closes.
    pub(crate) socket: Option<Admission>,
    /// The real client's slot under its address behind a trusted proxy.
    pub(crate) admission: Option<Admission>,
    pub(crate) config: Arc<Config>,
    pub(crate) peer: SocketAddr,
    pub(crate) client: IpAddr,
    /// `None`: the name is taken, and the connection is closed with `1008` at once.
    pub(crate) membership: Option<Membership>,
    pub(crate) outbox: OutboxRx,
    pub(crate) envelope: Option<Envelope>,
    pub(crate) expires: Option<SystemTime>,
}

impl Upgrade {
    /// Serves the WebSocket until it closes, or until the drain is over and the server stops.
    ///
    /// Not an `async fn`: everything the connection keeps is moved into one [`conn::Next`] here,
    /// before the future exists, and the future holds it once and lends it to the layers below
    /// (an `async fn`'s arguments stay in its future for its whole life, so a value passed down
    /// by value would be held once per level: about 1.5 KiB per connection).
    pub fn run(self) -> impl Future<Output = ()> + Send + 'static {
        let Upgrade {
            on_upgrade,
            state,
            socket,
            admission,
            config,
            peer,
            client,
            membership,
            outbox,
            envelope,
            expires,
        } = self;
        let max_message = config.relay.max_message_size;
        let stopped = state.shutdown.stopped_token();
        let mut next = match membership {
            Some(membership) => conn::Next::Run(Conn {
                stats: state.stats.clone(),
                draining: state.shutdown.draining_token(),
                stopped: stopped.clone(),
                config,
                peer,
                client,
                room: membership.room_name(),
                membership: Some(membership),
                outbox,
                envelope,
                expires,
            }),
            None => conn::Next::Refuse(1008, "name taken", outbox, stopped.clone()),
        };
        drop(state);
        async move {
            // The slots are held for as long as this future lives.
            let _held = (&socket, &admission);
            let upgraded = tokio::select! {
                upgraded = on_upgrade => match upgraded {
                    Ok(u) => u,
                    Err(e) => return debug!(%peer, error = %e, "upgrade failed"),
                },
                () = stopped.cancelled() => return,
            };
            match split(upgraded) {
                (Halves::Tls(rd, wr, direct), early) => {
                    if let conn::Next::Run(conn) = &next {
                        conn.outbox.attach_direct(direct);
                    }
                    conn::drive(rd, wr, early, max_message, &mut next).await;
                }
                (Halves::Other(rd, wr), early) => {
                    conn::drive(rd, wr, early, max_message, &mut next).await;
                }
            }
        }
    }
}

/// The two halves of an upgraded stream, by the stream's type.
enum Halves {
    /// The TLS stream itself, unwrapped from hyper's box, shared with the fan-out's direct
    /// writes (the third part).
    Tls(Half, Half, Arc<dyn Direct>),
    /// Anything else (plain TCP when `tls.enabled = false`), through hyper's box.
    Other(ReadHalf<TokioIo<Upgraded>>, WriteHalf<TokioIo<Upgraded>>),
}

/// Moves the stream (about 1 KiB of TLS state) to the heap behind its two halves; the TLS stream
/// is unwrapped from hyper's box (bytes hyper read past the request head come along), so the
/// connection reads and writes wsline's TLS stream directly. Not `async`, so that no copy of the
/// stream stays in the connection's future for the connection's lifetime.
fn split(upgraded: Upgraded) -> (Halves, Bytes) {
    match upgraded.downcast::<TokioIo<TlsStream>>() {
        Ok(parts) => {
            // `read_buf` is a view into hyper's 8 KiB read buffer: keeping it would keep that.
            let early = match parts.read_buf.is_empty() {
                true => Bytes::new(),
                false => Bytes::copy_from_slice(&parts.read_buf),
            };
            let (rd, wr, direct) = tls::share(parts.io.into_inner());
            (Halves::Tls(rd, wr, direct), early)
        }
        Err(upgraded) => {
            let (rd, wr) = tokio::io::split(TokioIo::new(upgraded));
            (Halves::Other(rd, wr), Bytes::new())
        }
    }
}

/// The fan-out's direct write: the first messages framed as the writer frames them, into one TLS
/// record if the stream is at rest and free.
impl Direct for SharedTls {
    fn try_send(&self, batch: &VecDeque<Message>) -> (usize, Sent) {
        match with_frames(batch, MAX_FRAMES_PER_WRITE, 0, true, |bufs| {
            self.try_write_now(bufs)
        }) {
            (_, None) | (0, _) => (0, Sent::No),
            (taken, Some(true)) => (taken, Sent::All),
            (taken, Some(false)) => (taken, Sent::Part),
        }
    }
}

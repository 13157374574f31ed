//! The accept side: one loop per listener, the socket's slot in the connection limits before any
//! TLS work, then one connection's TLS handshake and HTTP under the handshake deadline. The tasks
//! themselves are spawned by [`crate::runtime::tasks`], whose spawners are passed in; this module
//! must not spawn, bind or drain.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::net::http::{SocketSlot, Spawn};
use crate::net::limits::{self, Admission};
use crate::net::state::State;

/// How long the accept loop rests after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one "accept failed" line per this period; the line counts the failures since the last.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);

/// Paces the log of failed accepts: at most one line per period, counting what it stands for.
#[derive(Debug)]
struct AcceptErrors {
    every: Duration,
    last_line: Option<Instant>,
    /// Failures since the last line.
    unlogged: u64,
    /// Failures since accepting last worked.
    in_a_row: u64,
}

impl AcceptErrors {
    fn new(every: Duration) -> AcceptErrors {
        AcceptErrors {
            every,
            last_line: None,
            unlogged: 0,
            in_a_row: 0,
        }
    }

    /// Records a failure at `now`; `Some(n)` when a line is due, for `n` failures.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        self.unlogged += 1;
        self.in_a_row += 1;
        let due = self
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= self.every);
        due.then(|| {
            self.last_line = Some(now);
            std::mem::take(&mut self.unlogged)
        })
    }

    /// Records a success; `Some(n)` when it ends a run of `n` failures.
    fn accepted(&mut self) -> Option<u64> {
        if self.in_a_row == 0 {
            return None;
        }
        self.unlogged = 0;
        self.last_line = None;
        Some(std::mem::take(&mut self.in_a_row))
    }
}

/// The spawner of one task per admitted socket (`runtime::tasks::connection`).
pub(crate) type SpawnConnection = fn(TcpStream, SocketAddr, Arc<State>, Admission);

/// Accepts until the server stops; each admitted socket goes to `spawn`, which gives it its own task.
pub(crate) async fn accept_loop(listener: TcpListener, state: Arc<State>, spawn: SpawnConnection) {
    let mut errors = AcceptErrors::new(ACCEPT_ERROR_LOG_EVERY);
    let mut refusals = AcceptErrors::new(ACCEPT_ERROR_LOG_EVERY);
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.stopped() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                if let Some(failed) = errors.accepted() {
                    info!(failed, "accepting again");
                }
                // The socket's slot, before any TLS work; over a limit it is closed at once.
                let slot = match admit_socket(&state, peer) {
                    Ok(slot) => slot,
                    Err(why) => {
                        drop(tcp);
                        state.stats.sockets_refused.fetch_add(1, Ordering::Relaxed);
                        if let Some(count) = refusals.failed(Instant::now()) {
                            warn!(
                                %peer,
                                limit = match why {
                                    limits::Refusal::ServerFull => "limits.max_connections",
                                    limits::Refusal::AddressFull => "limits.max_connections_per_ip",
                                },
                                count,
                                "connection refused at accept (at most one line a second)"
                            );
                        }
                        continue;
                    }
                };
                let _ = refusals.accepted();
                spawn(tcp, peer, state.clone(), slot);
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: the listener is fine, the process is out of something.
                if let Some(count) = errors.failed(Instant::now()) {
                    warn!(
                        error = %e,
                        count,
                        "accept failed; pausing accepts briefly (at most one line a second)"
                    );
                }
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// Takes a just-accepted socket's slot in the connection limits: counted in the total, and under
/// its peer's address unless the peer is a trusted proxy (whose clients are counted by their real
/// address when they upgrade, see [`crate::net::admit`]).
fn admit_socket(state: &State, peer: SocketAddr) -> Result<Admission, limits::Refusal> {
    let config = state.config.load();
    let per_address = !limits::is_trusted(peer, &config.security.trusted_proxies);
    state.gate.admit_socket(
        peer.ip(),
        per_address,
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
    )
}

/// One TCP connection: TLS (if on) and the first request head must both arrive within
/// `limits.handshake_timeout`; later heads within `limits.keepalive_timeout` of the last response.
/// The socket's slot is held here, or by the WebSocket's task once it upgrades.
/// An upgrade goes to `spawn`, which runs it as its own task.
pub(crate) async fn handle(
    tcp: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    slot: Admission,
    spawn: impl Spawn,
) {
    let slot: SocketSlot = Arc::new(std::sync::Mutex::new(Some(slot)));
    let _ = tcp.set_nodelay(true);
    crate::ws::conn::tune_socket(&tcp);
    let timeout = state.config.load().limits.handshake_timeout;
    let started = tokio::time::Instant::now();
    // A timeout too large to add is no deadline at all (validation bounds it anyway).
    let first_head_by = started
        .checked_add(timeout)
        .unwrap_or_else(|| started + Duration::from_secs(86_400 * 365));
    match state.tls.clone() {
        None => {
            crate::net::http::serve(TokioIo::new(tcp), peer, state, first_head_by, slot, spawn)
                .await
        }
        Some(tls) => {
            let accepted = tokio::time::timeout_at(
                first_head_by,
                crate::net::tls::accept(tls.server_config(), tcp),
            )
            .await;
            let stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => return debug!(%peer, "tls handshake timed out"),
            };
            crate::net::http::serve(
                TokioIo::new(stream),
                peer,
                state,
                first_head_by,
                slot,
                spawn,
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_logged_at_most_once_a_period_with_a_count() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut e = AcceptErrors::new(Duration::from_secs(1));
        assert_eq!(e.failed(t0), Some(1), "the first failure is logged");
        for i in 1..10 {
            assert_eq!(e.failed(t0 + ms(i * 100 - 1)), None, "failure {i}");
        }
        assert_eq!(
            e.failed(t0 + ms(1000)),
            Some(10),
            "nine silent ones and this one"
        );
        assert_eq!(e.accepted(), Some(11), "a success ends the run of 11");
        assert_eq!(e.accepted(), None);
        assert_eq!(e.failed(t0 + ms(1100)), Some(1), "a new run logs at once");
    }
}

//! The server: accept loops, the TLS handshake under a deadline, and the drain at the end.
//!
//! [`Server::run`] takes listeners that are already bound, so `main` and the tests share one entry
//! point and tests bind port 0. Each accepted connection gets its own task; nothing one connection
//! does can end an accept loop.
//!
//! Listeners are bound with `server.backlog` (through `socket2`; the kernel caps it at
//! `net.core.somaxconn`), so the reconnect storm after a restart waits in the queue instead of
//! waiting a second for a SYN retransmit. An accept that fails (out of descriptors, out of memory)
//! pauses the loop briefly and is logged at most once a second with a count; it resumes by itself.
//! TLS and the first request head share `limits.handshake_timeout`; later heads get
//! `limits.keepalive_timeout`. Every accepted socket takes its slot in the connection limits
//! before any TLS work (closed at once over a limit, counted, logged at most once a second).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::net::http::SocketSlot;
use crate::net::limits::{self, Admission, Descriptors};

use crate::State;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::net::tls::{Tls, TlsError};
use crate::observe::stats::Stats;
use crate::relay::hub::{Hub, RoomSettings};
use crate::runtime::shutdown::Shutdown;
use crate::runtime::systemd;

/// How long the accept loop rests after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one "accept failed" line per this period; the line counts the failures since the last.
const ACCEPT_ERROR_LOG_EVERY: Duration = Duration::from_secs(1);
/// After the drain timeout, how long the connections still open get to log that they were cut.
const CUT_LOG_GRACE: Duration = Duration::from_millis(500);

/// A configured server, ready to run on bound listeners.
pub struct Server {
    state: Arc<State>,
    /// The open-files limit after raising it (`None` if it could not be read).
    descriptors: Option<Descriptors>,
}

/// What a running server can be asked to do from outside: drain, or reload its configuration.
#[derive(Clone)]
pub struct Handle {
    state: Arc<State>,
}

impl Server {
    /// Prepares the server: loads the certificate (or makes a self-signed one), raises the soft
    /// open-files limit to the hard one and caps connections below it (logged once).
    pub fn new(config: Config) -> Result<Server, TlsError> {
        let tls = Tls::from_config(&config.tls)?;
        let jwt = crate::net::jwt::Verifier::new(&config.security.jwt)?;
        let descriptors = match limits::raise_descriptor_limit() {
            Ok(d) => Some(d),
            Err(e) => {
                warn!(error = %e, "cannot read or raise the open-files limit (RLIMIT_NOFILE)");
                None
            }
        };
        let gate = limits::Gate::default();
        if let Some(d) = descriptors {
            if let Some(before) = d.raised_from {
                info!(
                    from = before,
                    to = d.soft,
                    "raised the open-files limit to the hard limit"
                );
            }
            let cap = limits::connection_cap(d.soft);
            gate.set_cap(cap);
            let configured = config.limits.max_connections;
            if cap < configured {
                warn!(
                    soft = d.soft,
                    hard = d.hard,
                    max_connections = configured,
                    clamped_to = cap,
                    "the open-files limit is below limits.max_connections: at most {cap} \
                     connections (the limit {} minus {} held back); raise LimitNOFILE",
                    d.soft,
                    limits::reserve(d.soft)
                );
            }
        }
        let stats = Arc::new(Stats::default());
        let rooms = RoomSettings::new(&config);
        if !config.cluster.redis.is_empty() {
            info!(
                redis = %crate::cluster::wire::redact(&config.cluster.redis),
                node_id = %config.cluster.node_id,
                prefix = %config.cluster.prefix,
                "cluster mode"
            );
        }
        let cluster = Cluster::new(&config.cluster);
        let state = Arc::new(State {
            config: ArcSwap::from_pointee(config),
            hub: Hub::with_cluster(stats.clone(), rooms, cluster),
            gate,
            stats,
            shutdown: Shutdown::default(),
            tls,
            api: Default::default(),
            jwt: arc_swap::ArcSwapOption::from(jwt.map(Arc::new)),
        });
        Ok(Server { state, descriptors })
    }

    /// The open-files limit in force, when it could be read.
    pub fn descriptors(&self) -> Option<Descriptors> {
        self.descriptors
    }

    /// What `--check-config` prints about descriptors: the limits and the connection cap.
    pub fn descriptor_summary(&self) -> Option<String> {
        let d = self.descriptors?;
        let configured = self.state.config.load().limits.max_connections;
        let cap = self.state.gate.cap();
        Some(if cap < configured {
            format!(
                "warning: open files limit {} (hard {}) is below limits.max_connections = {configured}: \
                 at most {cap} connections (raise LimitNOFILE)",
                d.soft, d.hard
            )
        } else {
            format!(
                "open files limit {} (hard {}): room for limits.max_connections = {configured} (cap {cap})",
                d.soft, d.hard
            )
        })
    }

    /// The handle that starts the drain; clone it before `run`.
    pub fn shutdown(&self) -> Shutdown {
        self.state.shutdown.clone()
    }

    pub fn handle(&self) -> Handle {
        Handle {
            state: self.state.clone(),
        }
    }

    /// Serves until the shutdown is triggered and the drain is over.
    pub async fn run(self, listeners: Vec<TcpListener>) {
        let state = self.state;
        for listener in listeners {
            if let Ok(addr) = listener.local_addr() {
                info!(%addr, tls = state.tls.is_some(), "listening");
            }
            tokio::spawn(accept_loop(listener, state.clone()));
        }
        // One presence ticker for every room, until the drain starts.
        let (hub, shutdown) = (state.hub.clone(), state.shutdown.clone());
        state
            .shutdown
            .tracker()
            .spawn(async move { hub.run_presence(shutdown.draining()).await });
        // The cluster's worker and publisher (several nodes), tracked like the ticker.
        if let Some(cluster) = state.hub.cluster() {
            crate::cluster::redis::spawn(
                cluster,
                Arc::new(state.hub.clone()),
                state.shutdown.tracker(),
                state.shutdown.connection_token(),
            );
        }
        systemd::ready(&state);
        systemd::spawn_notifier(state.clone());

        let shutdown = &state.shutdown;
        shutdown.draining().await;
        systemd::stopping(&state);
        let drain = state.config.load().server.drain_timeout;
        let started = Instant::now();
        shutdown.tracker().close();
        let drained = tokio::time::timeout(drain, shutdown.tracker().wait()).await;
        match drained {
            Ok(()) => info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained"),
            Err(_) => {
                warn!(
                    remaining = shutdown.tracker().len(),
                    "drain timeout: closing the remaining connections"
                );
            }
        }
        shutdown.stop();
        // Each connection still open logs its own "connection cut at drain timeout" line.
        let _ = tokio::time::timeout(CUT_LOG_GRACE, shutdown.tracker().wait()).await;
    }
}

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

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
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
                tokio::spawn(handle(tcp, peer, state.clone(), slot));
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
async fn handle(tcp: TcpStream, peer: SocketAddr, state: Arc<State>, slot: Admission) {
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
        None => crate::net::http::serve(TokioIo::new(tcp), peer, state, first_head_by, slot).await,
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
            crate::net::http::serve(TokioIo::new(stream), peer, state, first_head_by, slot).await
        }
    }
}

impl Handle {
    /// The shared state, for the signal handlers' systemd notifications.
    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// The rooms (for tests that must reach inside, such as the room lock test).
    #[doc(hidden)]
    pub fn hub(&self) -> &Hub {
        &self.state.hub
    }

    /// Starts the drain.
    pub fn shutdown(&self) {
        self.state.shutdown.trigger();
    }

    /// Applies a new, already validated configuration: the certificate and key are loaded first,
    /// and if they fail nothing changes. Admission limits, origins, token, rate, queue, presence and
    /// heartbeat settings apply to connections admitted from now on; `log.level` at once.
    ///
    /// Keys that need a restart (`server.listen`, `server.backlog`, `tls.enabled`,
    /// `tls.self_signed`, every `cluster.*` key) keep their running value, and the log says so: the
    /// configuration in force keeps them too, so what is served and what is logged agree. While
    /// `tls.enabled` or `tls.self_signed` waits for a restart, the certificate in use is kept.
    pub fn reload(&self, mut new: Config) -> Result<(), TlsError> {
        let old = self.state.config.load_full();
        let restart_only = [
            ("server.listen", old.server.listen != new.server.listen),
            ("server.backlog", old.server.backlog != new.server.backlog),
            ("tls.enabled", old.tls.enabled != new.tls.enabled),
            (
                "tls.self_signed",
                old.tls.self_signed != new.tls.self_signed,
            ),
            ("cluster.redis", old.cluster.redis != new.cluster.redis),
            (
                "cluster.node_id",
                old.cluster.node_id != new.cluster.node_id,
            ),
            ("cluster.prefix", old.cluster.prefix != new.cluster.prefix),
            (
                "cluster.node_timeout",
                old.cluster.node_timeout != new.cluster.node_timeout,
            ),
        ];
        // The token key file is read again (a rotated key); a broken one changes nothing.
        let jwt = crate::net::jwt::Verifier::new(&new.security.jwt)?;
        let tls_waits =
            old.tls.enabled != new.tls.enabled || old.tls.self_signed != new.tls.self_signed;
        if let Some(tls) = &self.state.tls
            && !tls_waits
        {
            tls.reload(&new.tls)?;
        }
        for (key, changed) in restart_only {
            if changed {
                warn!(
                    key,
                    "changed in the configuration file; takes effect after a restart \
                     (until then the running value is kept)"
                );
            }
        }
        new.server.listen = old.server.listen.clone();
        new.server.backlog = old.server.backlog;
        new.cluster = old.cluster.clone();
        if tls_waits {
            new.tls = old.tls.clone();
            warn!("the certificate in use is kept until the restart");
        }
        let cap = self.state.gate.cap();
        if new.limits.max_connections > cap
            && new.limits.max_connections != old.limits.max_connections
        {
            warn!(
                max_connections = new.limits.max_connections,
                clamped_to = cap,
                "limits.max_connections is above what the open-files limit allows; the cap holds"
            );
        }
        crate::runtime::logging::set_level(&new.log.level);
        self.state.hub.configure(RoomSettings::new(&new));
        self.state.jwt.store(jwt.map(Arc::new));
        self.state.config.store(Arc::new(new));
        info!("configuration reloaded");
        Ok(())
    }
}

/// Binds every configured address with the default backlog (see [`bind_with_backlog`]).
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, BindError> {
    bind_with_backlog(addrs, crate::config::Server::default().backlog)
}

/// Binds every configured address with `backlog` as its listen queue, naming the one that failed.
pub fn bind_with_backlog(
    addrs: &[SocketAddr],
    backlog: u32,
) -> Result<Vec<TcpListener>, BindError> {
    addrs
        .iter()
        .map(|&addr| listen(addr, backlog).map_err(|source| BindError { addr, source }))
        .collect()
}

/// One listening socket: `SO_REUSEADDR` (a restart need not wait for TIME_WAIT), IPv6 only for an
/// IPv6 address (so `[::]` and `0.0.0.0` can both be listed), non-blocking, then `listen(backlog)`.
fn listen(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    TcpListener::from_std(socket.into())
}

#[derive(Debug, thiserror::Error)]
#[error("server.listen {addr}: cannot listen: {source}{}", hint(.source, .addr))]
pub struct BindError {
    pub addr: SocketAddr,
    pub source: io::Error,
}

fn hint(e: &io::Error, addr: &SocketAddr) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied if addr.port() < 1024 => {
            " (ports below 1024 need CAP_NET_BIND_SERVICE; see systemd/wsline.service)"
        }
        io::ErrorKind::AddrInUse => " (another process has this port; see `ss -ltnp`)",
        _ => "",
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

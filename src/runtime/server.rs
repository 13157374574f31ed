//! The server: the shared state built from a configuration, binding, starting the task tree
//! ([`crate::runtime::tasks`]), the drain at the end, and reloads through the [`Handle`]. The
//! accept loops and the per-connection work are in [`crate::runtime::accept`].
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
//!
//! It must not accept or serve connections itself (`runtime::accept`) nor spawn (`runtime::tasks`).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::net::limits::{self, Descriptors};

use crate::cluster::Cluster;
use crate::config::Config;
use crate::net::shutdown::Shutdown;
use crate::net::state::State;
use crate::net::tls::{Tls, TlsError};
use crate::observe::stats::Stats;
use crate::relay::hub::{Hub, RoomSettings};
use crate::runtime::{systemd, tasks};

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
            tasks::accept_loop(listener, state.clone());
        }
        tasks::presence_ticker(&state);
        tasks::cluster(&state);
        systemd::ready(&state);
        tasks::systemd_notifier(state.clone());

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

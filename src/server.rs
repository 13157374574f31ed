//! The server: accept loops, the TLS handshake under a deadline, and the drain at the end.
//!
//! [`Server::run`] takes listeners that are already bound, so `main` and the tests share one entry
//! point and tests bind port 0. Each accepted connection gets its own task; nothing one connection
//! does can end an accept loop.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info, warn};

use crate::State;
use crate::config::Config;
use crate::hub::Hub;
use crate::shutdown::Shutdown;
use crate::stats::Stats;
use crate::systemd;
use crate::tls::{Tls, TlsError};

/// Ciphertext rustls may hold per connection before a write waits for the socket.
const TLS_BUFFER_BYTES: usize = 16 * 1024 + 512;
/// How long the accept loop rests after an error such as running out of file descriptors.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// A configured server, ready to run on bound listeners.
pub struct Server {
    state: Arc<State>,
}

/// What a running server can be asked to do from outside: drain, or reload its configuration.
#[derive(Clone)]
pub struct Handle {
    state: Arc<State>,
}

impl Server {
    /// Prepares the server: loads the certificate (or makes a self-signed one).
    pub fn new(config: Config) -> Result<Server, TlsError> {
        let tls = Tls::from_config(&config.tls)?;
        let stats = Arc::new(Stats::default());
        let state = Arc::new(State {
            config: ArcSwap::from_pointee(config),
            hub: Hub::new(stats.clone()),
            gate: Default::default(),
            stats,
            shutdown: Shutdown::default(),
            tls,
        });
        Ok(Server { state })
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
        systemd::ready();
        systemd::spawn_watchdog(state.shutdown.clone());

        let shutdown = &state.shutdown;
        shutdown.draining().await;
        systemd::stopping();
        let drain = state.config.load().server.drain_timeout;
        let started = Instant::now();
        shutdown.tracker().close();
        let drained = tokio::time::timeout(drain, shutdown.tracker().wait()).await;
        match drained {
            Ok(()) => info!(elapsed_ms = started.elapsed().as_millis() as u64, "drained"),
            Err(_) => warn!(
                remaining = shutdown.tracker().len(),
                "drain timeout: closing the remaining connections"
            ),
        }
        shutdown.stop();
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let accepted = tokio::select! {
            _ = state.shutdown.stopped() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, peer)) => {
                tokio::spawn(handle(tcp, peer, state.clone()));
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS...: the listener is fine, the process is out of something.
                warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
            }
        }
    }
}

/// One TCP connection: TLS (if on) and the request head must both arrive within
/// `limits.handshake_timeout`.
async fn handle(tcp: TcpStream, peer: SocketAddr, state: Arc<State>) {
    let _ = tcp.set_nodelay(true);
    crate::conn::tune_socket(&tcp);
    let deadline = state.config.load().limits.handshake_timeout;
    let started = Instant::now();
    match state.tls.clone() {
        None => crate::http::serve(TokioIo::new(tcp), peer, state, deadline).await,
        Some(tls) => {
            let accepted = tokio::time::timeout(deadline, tls.acceptor().accept(tcp)).await;
            let mut stream = match accepted {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => return debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => return debug!(%peer, "tls handshake timed out"),
            };
            // rustls buffers up to 64 KiB of ciphertext per connection by default; for a client
            // that stopped reading that is memory held until it is closed. One record is enough.
            stream.get_mut().1.set_buffer_limit(Some(TLS_BUFFER_BYTES));
            let left = deadline
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(1));
            crate::http::serve(TokioIo::new(stream), peer, state, left).await
        }
    }
}

impl Handle {
    /// Starts the drain.
    pub fn shutdown(&self) {
        self.state.shutdown.trigger();
    }

    /// Applies a new, already validated configuration: the certificate and key are loaded first,
    /// and if they fail nothing changes. Admission limits, origins, token, rate, queue, presence and
    /// heartbeat settings apply to connections admitted from now on; `log.level` at once. Keys
    /// that need a restart are logged as such and keep their old effect.
    pub fn reload(&self, new: Config) -> Result<(), TlsError> {
        let old = self.state.config.load_full();
        if let Some(tls) = &self.state.tls
            && new.tls.enabled
        {
            tls.reload(&new.tls)?;
        }
        let restart_only = [
            ("server.listen", old.server.listen != new.server.listen),
            ("tls.enabled", old.tls.enabled != new.tls.enabled),
            (
                "tls.self_signed",
                old.tls.self_signed != new.tls.self_signed,
            ),
            ("cluster.redis", old.cluster.redis != new.cluster.redis),
        ];
        for (key, changed) in restart_only {
            if changed {
                warn!(
                    key,
                    "changed in the configuration file; takes effect after a restart"
                );
            }
        }
        crate::logging::set_level(&new.log.level);
        self.state.config.store(Arc::new(new));
        info!("configuration reloaded");
        Ok(())
    }
}

/// Binds every configured address, naming the one that failed.
pub async fn bind(addrs: &[SocketAddr]) -> Result<Vec<TcpListener>, BindError> {
    let mut listeners = Vec::with_capacity(addrs.len());
    for &addr in addrs {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| BindError { addr, source })?;
        listeners.push(listener);
    }
    Ok(listeners)
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

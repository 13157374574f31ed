//! A delaying TCP proxy for the cluster tests: puts a service "one hop away" on loopback (the
//! kernel's netem is not available everywhere). Each direction of each connection holds every
//! chunk for the configured delay before writing it, in order. The proxy can also be told to
//! stop forwarding (bytes are held, as by a stalled network) and to cut every connection (as by
//! a lost route), and be restored.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Chunks held per direction of a connection before the reader waits (so a stalled proxy holds a
/// bounded amount).
const HELD_CHUNKS: usize = 1024;
const CHUNK: usize = 64 * 1024;

pub struct Proxy {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
}

struct Shared {
    target: std::sync::Mutex<SocketAddr>,
    delay_us: AtomicU64,
    /// `false`: stop forwarding (chunks are held until it is `true` again).
    forwarding: watch::Sender<bool>,
    /// Bumped by `cut`: every connection of an older generation closes.
    generation: watch::Sender<u64>,
    refusing: AtomicBool,
}

impl Proxy {
    /// A proxy to `target` delaying each direction by `delay`.
    pub async fn start(target: SocketAddr, delay: Duration) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            target: std::sync::Mutex::new(target),
            delay_us: AtomicU64::new(delay.as_micros() as u64),
            forwarding: watch::channel(true).0,
            generation: watch::channel(0).0,
            refusing: AtomicBool::new(false),
        });
        let mut tasks = JoinSet::new();
        let s = shared.clone();
        tasks.spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((down, _)) = listener.accept().await else {
                    continue;
                };
                if s.refusing.load(Ordering::Relaxed) {
                    continue;
                }
                let s = s.clone();
                conns.spawn(async move {
                    let target = *s.target.lock().unwrap();
                    if let Ok(up) = TcpStream::connect(target).await {
                        connection(s, down, up).await;
                    }
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Proxy {
            addr,
            shared,
            tasks,
        }
    }

    /// `redis://` through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.shared
            .delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// New connections go to `target` (existing ones are not moved).
    pub fn set_target(&self, target: SocketAddr) {
        *self.shared.target.lock().unwrap() = target;
    }

    /// Stops (`false`) or resumes (`true`) forwarding; held bytes are forwarded on resume.
    pub fn forward(&self, on: bool) {
        self.shared.forwarding.send_replace(on);
    }

    /// Closes every connection and refuses new ones (until `restore`).
    pub fn cut(&self) {
        self.shared.refusing.store(true, Ordering::Relaxed);
        self.shared.generation.send_modify(|g| *g += 1);
    }

    pub fn restore(&self) {
        self.shared.refusing.store(false, Ordering::Relaxed);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn connection(s: Arc<Shared>, down: TcpStream, up: TcpStream) {
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let mut generation = s.generation.subscribe();
    generation.mark_unchanged();
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    let both = async { tokio::join!(direction(&s, down_r, up_w), direction(&s, up_r, down_w)) };
    tokio::select! {
        _ = both => {}
        _ = generation.changed() => {}
    }
}

/// Copies one direction: a reader stamps each chunk with when it may go, a writer waits for that
/// moment (and for forwarding to be on), then writes it; order is kept by the channel.
async fn direction(
    s: &Shared,
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
) {
    let (tx, mut rx) = mpsc::channel::<(Instant, Vec<u8>)>(HELD_CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let delay = Duration::from_micros(s.delay_us.load(Ordering::Relaxed));
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    };
    let write = async move {
        let mut forwarding = s.forwarding.subscribe();
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if forwarding.wait_for(|on| *on).await.is_err() {
                return;
            }
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

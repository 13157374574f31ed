//! Helpers for the cluster-at-scale run of `bench/run.sh` (not scenarios: they print no result
//! line): `proxy` puts Redis one hop away (each direction of each connection held for a delay,
//! order kept: the kernel's netem is not available everywhere), `rooms` opens one connection in
//! each of N rooms and holds them until killed.

use std::time::{Duration, Instant};

use clap::Args;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::client::Target;

#[derive(Args, Clone)]
pub struct ProxyOpts {
    /// Where to listen, e.g. 127.0.0.1:4461.
    #[arg(long)]
    listen: String,
    /// Where to forward, e.g. 127.0.0.1:4460.
    #[arg(long)]
    to: String,
    /// Delay of each direction, in microseconds.
    #[arg(long, default_value_t = 1000)]
    delay_us: u64,
}

/// Chunks held per direction of a connection before its reader waits.
const HELD_CHUNKS: usize = 1024;

pub async fn proxy(o: &ProxyOpts) -> Result<(), String> {
    let listener = TcpListener::bind(&o.listen)
        .await
        .map_err(|e| format!("listen on {}: {e}", o.listen))?;
    let delay = Duration::from_micros(o.delay_us);
    loop {
        let Ok((down, _)) = listener.accept().await else {
            continue;
        };
        let to = o.to.clone();
        tokio::spawn(async move {
            // Redis down (restarting): the client's connection just closes.
            let Ok(up) = TcpStream::connect(&to).await else {
                return;
            };
            let _ = (down.set_nodelay(true), up.set_nodelay(true));
            let (down_r, down_w) = down.into_split();
            let (up_r, up_w) = up.into_split();
            tokio::join!(
                direction(down_r, up_w, delay),
                direction(up_r, down_w, delay)
            );
        });
    }
}

async fn direction(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: Duration,
) {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(tokio::time::Instant, Vec<u8>)>(HELD_CHUNKS);
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n @ 1..) = from.read(&mut buf).await {
            let due = tokio::time::Instant::now() + delay;
            if tx.send((due, buf[..n].to_vec())).await.is_err() {
                return;
            }
        }
    };
    let write = async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

#[derive(Args, Clone)]
pub struct RoomsOpts {
    /// Connections, one per room: PATH0, PATH1, ... (PATH is the URL's path).
    #[arg(long, short = 'n', default_value_t = 10_000)]
    rooms: usize,
    /// Connections opened at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Opens the rooms, says so on stderr, then holds them until the process is killed.
pub async fn rooms(target: &Target, path: &str, o: &RoomsOpts) -> Result<(), String> {
    use futures_util::StreamExt;
    let t0 = Instant::now();
    let held: Vec<Result<_, String>> = futures_util::stream::iter(0..o.rooms)
        .map(|i| async move {
            let room = format!("{path}{i}");
            target.connect(Some(&room), 4096).await
        })
        .buffer_unordered(o.concurrency)
        .collect()
        .await;
    let held: Vec<_> = held.into_iter().collect::<Result<_, _>>()?;
    eprintln!(
        "rooms: {} connections open, one per room, in {:.1} s",
        held.len(),
        t0.elapsed().as_secs_f64()
    );
    std::future::pending::<()>().await;
    drop(held);
    Ok(())
}

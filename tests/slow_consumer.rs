//! Slow consumers: a client that stops reading is closed with 1013 and costs the others nothing.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, start, within};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_with_1013_while_a_fast_reader_gets_everything() {
    const N: usize = 2000;
    const SIZE: usize = 16 * 1024;
    /// How far the publisher runs ahead of the fast reader.
    const WINDOW: usize = 8;
    let server = start(|c| {
        c.relay.echo = false;
        c.relay.max_message_size = SIZE as u64;
        c.limits.queue_messages = 64;
        c.limits.queue_bytes = 16 * SIZE as u64;
        c.limits.messages_per_second = 1_000_000;
        c.limits.burst = 1_000_000;
    })
    .await;
    let mut slow = RawClient::connect(&server, "/flood").await;
    let mut fast = server.connect("/flood").await;
    let mut publisher = server.connect("/flood").await;
    server
        .wait_stats("three members", |s| s["rooms"]["flood"] == 3)
        .await;

    // 2000 x 16 KiB = 32 MiB: far more than the socket buffers can hide from the server. While
    // the flood runs, a watcher starts reading the stalled client as soon as it is dropped, within
    // the few seconds the server gives a closing connection to take its close frame.
    let flood = common::flood_in_step(&mut publisher, &mut fast, N, SIZE, WINDOW);
    let watch = async {
        server
            .wait_stats("the slow consumer to be dropped", |s| {
                s["drops"]["slow_consumers"] == 1
            })
            .await;
        slow.close_code().await
    };
    let ((), code) = tokio::join!(flood, watch);
    assert_eq!(code, Some(1013));
    let stats = server.stats().await;
    assert_eq!(stats["rooms"]["flood"], 2, "{stats}");
    server.stop().await;
}

/// The unsent-and-unacknowledged bytes (`tx_queue`) the kernel holds for the server's end of the
/// loopback connection between `server_port` and `client_port`, from /proc/net/tcp.
fn server_tx_queue(server_port: u16, client_port: u16) -> Option<u64> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let local = format!(":{server_port:04X}");
    let remote = format!(":{client_port:04X}");
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() > 4 && fields[1].ends_with(&local) && fields[2].ends_with(&remote) {
            let tx = fields[4].split(':').next()?;
            u64::from_str_radix(tx, 16).ok()
        } else {
            None
        }
    })
}

/// What the kernel may hold for a stalled socket: `SO_SNDBUF` as the kernel doubles it (2 x 64 KiB)
/// plus the one 64 KiB segment being filled when the buffer ran full (docs/security.md). Without
/// the bound, Linux autotunes a socket's send buffer up to 4 MiB.
const KERNEL_QUEUE_BOUND: u64 = 192 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_that_stalls_mid_flood_is_closed_within_5_s_holding_little_in_the_kernel() {
    const N: usize = 4000;
    const SIZE: usize = 8 * 1024;
    const WINDOW: usize = 8;
    let server = start(|c| {
        c.relay.echo = false;
        c.presence.format = wsline::config::PresenceFormat::Off;
        c.limits.messages_per_second = 1_000_000;
        c.limits.burst = 1_000_000;
    })
    .await;
    let mut stalling = RawClient::connect(&server, "/flood").await;
    let mut fast = server.connect("/flood").await;
    let mut publisher = server.connect("/flood").await;
    server
        .wait_stats("three members", |s| s["rooms"]["flood"] == 3)
        .await;
    let client_port = stalling.stream.get_ref().0.local_addr().unwrap().port();

    // 4000 x 8 KiB = 32 MiB. The stalling member reads the first messages, then stops reading.
    let flood = common::flood_in_step(&mut publisher, &mut fast, N, SIZE, WINDOW);
    let watch = async {
        for _ in 0..10 {
            assert!(stalling.frame().await.is_some(), "the first messages");
        }
        let stalled_at = Instant::now();
        let mut max_tx_queue = 0;
        within("the stalled member to be evicted", async {
            loop {
                if let Some(tx) = server_tx_queue(server.addr.port(), client_port) {
                    max_tx_queue = max_tx_queue.max(tx);
                }
                if server.stats().await["drops"]["slow_consumers"] == 1 {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        let evicted_after = stalled_at.elapsed();
        // It reads again: what the kernel held, the rest of the frame in progress, then 1013.
        (evicted_after, max_tx_queue, stalling.close_code().await)
    };
    let ((), (evicted_after, max_tx_queue, code)) = tokio::join!(flood, watch);
    eprintln!("evicted {evicted_after:?} after stalling; kernel tx_queue at most {max_tx_queue} B");
    assert!(
        evicted_after < Duration::from_secs(5),
        "evicted {evicted_after:?} after stalling"
    );
    assert!(
        max_tx_queue < KERNEL_QUEUE_BOUND,
        "the kernel held {max_tx_queue} B for the stalled socket"
    );
    assert_eq!(code, Some(1013));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_reader_of_a_trickle_is_evicted_by_the_write_stall_rule_not_its_queue() {
    const SIZE: usize = 32 * 1024;
    let server = start(|c| {
        c.relay.echo = false;
        c.presence.format = wsline::config::PresenceFormat::Off;
        // A queue this large would take the trickle below 40 s to fill.
        c.limits.queue_messages = 100_000;
        c.limits.queue_bytes = 64 << 20;
        c.limits.messages_per_second = 1_000;
        c.limits.burst = 1_000;
    })
    .await;
    let mut stalled = RawClient::connect(&server, "/trickle").await;
    let mut publisher = server.connect("/trickle").await;
    server
        .wait_stats("two members", |s| s["rooms"]["trickle"] == 2)
        .await;
    let started = Instant::now();
    // 32 KiB every 20 ms (1.6 MB/s) for at most 8 s; the stalled member never reads.
    let trickle = async {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        for i in 0..400 {
            pace.tick().await;
            publisher.send(common::numbered(i, SIZE)).await;
        }
    };
    tokio::select! {
        _ = server.wait_stats("the stalled member to be evicted", |s| s["drops"]["slow_consumers"] == 1) => {}
        _ = trickle => panic!("the stalled member outlived the trickle"),
    }
    let evicted_after = started.elapsed();
    eprintln!("evicted {evicted_after:?} after the trickle started");
    // Its receive window and our kernel bound fill within a fraction of a second, then 3 s of no
    // progress.
    assert!(
        evicted_after < Duration::from_secs(5),
        "evicted {evicted_after:?} after the trickle started"
    );
    assert_eq!(stalled.close_code().await, Some(1013));
    server.stop().await;
}

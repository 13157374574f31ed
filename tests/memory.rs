//! Memory under abuse: a thousand clients that never read while a publisher floods their room.
//! The daemon's peak RSS stays under a stated bound, each reader that stops is closed with 1013,
//! and a fast reader in the same room receives every message.

mod common;

use std::time::Instant;

use common::daemon::Daemon;
use common::{RawClient, within};

/// Clients that connect and never read.
const STALLED: usize = 1000;
/// Messages the publisher sends, each of SIZE bytes: 24 MiB, far beyond what socket buffers hide.
const MESSAGES: usize = 3000;
const SIZE: usize = 8 * 1024;
/// How far the publisher may run ahead of the fast reader.
const WINDOW: usize = 32;
/// The bound on the daemon's peak resident memory (README, "Security").
const PEAK_RSS_BOUND_MIB: u64 = 160;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_stalled_readers_cost_bounded_memory_and_a_fast_reader_gets_everything() {
    let daemon = Daemon::start(
        "[limits]\nmax_connections_per_ip = 5000\nmessages_per_second = 100000\nburst = 100000\n\
         [relay]\necho = false\n[presence]\nformat = \"off\"\n",
        &[],
    )
    .await;
    let started = Instant::now();
    let mut stalled = Vec::with_capacity(STALLED);
    for _ in 0..STALLED / 50 {
        let batch =
            (0..50).map(|_| async { RawClient::upgrade(daemon.tls().await, "/flood").await });
        stalled.extend(futures_util::future::join_all(batch).await);
    }
    let mut fast = daemon.connect("/flood").await;
    let mut publisher = daemon.connect("/flood").await;
    let (rss_connected, _) = daemon.rss_kib();
    eprintln!(
        "{STALLED} stalled clients connected in {:?}, RSS {rss_connected} KiB",
        started.elapsed()
    );

    common::flood_in_step(&mut publisher, &mut fast, MESSAGES, SIZE, WINDOW).await;
    let (rss_after, peak) = daemon.rss_kib();
    eprintln!(
        "flood of {MESSAGES} x {SIZE} B done in {:?}: RSS {rss_after} KiB, peak {peak} KiB",
        started.elapsed()
    );

    // Every stalled client was closed as a slow consumer (tests/slow_consumer.rs shows that a
    // client reading then receives the 1013 frame; here nobody reads, so the log tells).
    let closed = within("every stalled client closed with 1013", async {
        loop {
            let log = daemon.log();
            let n = log
                .lines()
                .filter(|l| l.contains("connection closed") && l.contains("code=1013"))
                .count();
            if n == STALLED {
                return n;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(closed, STALLED);
    assert!(
        peak < PEAK_RSS_BOUND_MIB * 1024,
        "peak RSS {peak} KiB over the {PEAK_RSS_BOUND_MIB} MiB bound"
    );
}

//! Memory under abuse: a thousand clients that never read while a publisher floods their room.
//! The daemon's peak RSS stays under a stated bound, each reader that stops is closed with 1013,
//! and a fast reader in the same room receives every message.

mod common;

use std::time::Instant;

use common::daemon::Daemon;
use common::{RawClient, within};
use tokio_tungstenite::tungstenite::Message;

/// Clients that connect and never read.
const STALLED: usize = 1000;
/// Messages the publisher sends, each of SIZE bytes: 24 MiB, far beyond what socket buffers hide.
const MESSAGES: usize = 3000;
const SIZE: usize = 8 * 1024;
/// How far the publisher may run ahead of the fast reader.
const WINDOW: usize = 32;
/// The bound on the daemon's peak resident memory (docs/security.md).
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

/// Opens `n` raw members of `room` on the daemon, 50 at a time.
async fn members(daemon: &Daemon, room: &str, n: usize) -> Vec<RawClient> {
    let mut all = Vec::with_capacity(n);
    while all.len() < n {
        let batch = (0..50.min(n - all.len()))
            .map(|_| async { RawClient::upgrade(daemon.tls().await, room).await });
        all.extend(futures_util::future::join_all(batch).await);
    }
    all
}

/// Every member reads one binary frame and compares it with `expected` as it streams in; `false`
/// if any member got something else or was closed.
async fn all_receive(members: &mut [RawClient], expected: &[u8]) -> bool {
    let reads = members.iter_mut().map(|m| m.frame_equals(0x2, expected));
    let results = within(
        "every member to receive",
        futures_util::future::join_all(reads),
    )
    .await;
    results.into_iter().all(|ok| ok)
}

/// Members idle in the one-message test.
const IDLE_MEMBERS: usize = 1000;
/// What delivering one message may add at its peak, per member: at most one TLS record of
/// ciphertext (rustls' buffer limit, 16.5 KiB) while that member's socket is full, plus allocator
/// slack. The old write path copied the whole 64 KiB into every member's buffer (and kept it).
const PEAK_PER_MEMBER_KIB: u64 = 24;
/// What may remain per member once the message is delivered (a few queue slots, allocator slack).
const AFTER_PER_MEMBER_KIB: u64 = 2;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_max_size_message_to_a_thousand_members_leaves_no_buffer_behind() {
    const SIZE: usize = 64 * 1024;
    let daemon = Daemon::start(
        "[limits]\nmax_connections_per_ip = 5000\n\
         [relay]\necho = false\n[presence]\nformat = \"off\"\n",
        &[],
    )
    .await;
    let mut idle = members(&daemon, "/big", IDLE_MEMBERS).await;
    let mut publisher = daemon.connect("/big").await;
    // One small message first, so that what every member's first delivery sets up once is in the
    // baseline.
    publisher.send(Message::binary(vec![1u8; 16])).await;
    assert!(all_receive(&mut idle, &[1u8; 16]).await, "delivered");
    let (before, _) = daemon.rss_kib();

    let big: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    publisher.send(Message::binary(big.clone())).await;
    assert!(all_receive(&mut idle, &big).await, "delivered");
    // Every member has its frame; the writers finish their flush at once after.
    publisher.send(Message::binary(vec![2u8; 16])).await;
    assert!(all_receive(&mut idle, &[2u8; 16]).await, "delivered");
    let (after, peak) = daemon.rss_kib();
    let n = IDLE_MEMBERS as u64;
    eprintln!(
        "{IDLE_MEMBERS} members, one {SIZE} B message: RSS {before} KiB -> peak {peak} KiB -> \
         {after} KiB ({:+.2} KiB per member after, {:.2} KiB per member at the peak)",
        (after as f64 - before as f64) / n as f64,
        (peak as f64 - before as f64) / n as f64,
    );
    assert!(
        peak.saturating_sub(before) < n * PEAK_PER_MEMBER_KIB,
        "peak growth {} KiB over {} KiB ({PEAK_PER_MEMBER_KIB} KiB per member)",
        peak - before,
        n * PEAK_PER_MEMBER_KIB
    );
    assert!(
        after.saturating_sub(before) < n * AFTER_PER_MEMBER_KIB,
        "RSS {after} KiB not back within {AFTER_PER_MEMBER_KIB} KiB per member of {before} KiB"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_16_mib_message_to_100_members_is_held_once() {
    const SIZE: usize = 16 << 20;
    const MEMBERS: usize = 100;
    let daemon = Daemon::start(
        "[limits]\nmax_connections_per_ip = 5000\nqueue_bytes = \"32MiB\"\n\
         [relay]\necho = false\nmax_message_size = \"16MiB\"\n[presence]\nformat = \"off\"\n",
        &[],
    )
    .await;
    let mut idle = members(&daemon, "/huge", MEMBERS).await;
    let mut publisher = daemon.connect("/huge").await;
    let (before, _) = daemon.rss_kib();
    let huge: Vec<u8> = (0..SIZE).map(|i| (i % 251) as u8).collect();
    publisher.send(Message::binary(huge.clone())).await;
    if !all_receive(&mut idle, &huge).await {
        panic!("not delivered; log:\n{}", daemon.log());
    }
    let (after, peak) = daemon.rss_kib();
    eprintln!(
        "{MEMBERS} members, one {SIZE} B message: RSS {before} KiB -> peak {peak} KiB -> {after} KiB"
    );
    // The message once as received, once more for slack, and a record of ciphertext per member:
    // a few times 16 MiB, where one copy per member would be 1.6 GiB.
    let bound_kib = 3 * (SIZE as u64 / 1024);
    assert!(
        peak.saturating_sub(before) < bound_kib,
        "peak growth {} KiB over {bound_kib} KiB",
        peak - before
    );
}

/// Idle members in the idle-memory test.
const IDLE_WSS: usize = 2000;
/// What one idle wss connection may hold (docs/performance.md): the connection's task, rustls'
/// keys and state, the socket. No TLS buffer stays allocated while nothing is in flight. Release
/// builds measure about 6.5 KiB (`wsline-bench idle`, 10 000 connections; a debug build 6.6 KiB
/// here); this bound leaves room for the allocator's slack.
const IDLE_PER_CONNECTION_KIB: f64 = 7.0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_wss_connection_holds_no_tls_buffer() {
    let daemon = Daemon::start(
        "[limits]\nmax_connections_per_ip = 5000\n[presence]\nformat = \"off\"\n",
        &[],
    )
    .await;
    // A few connections first, so that what the first ones set up once (room, worker state) is
    // in the baseline.
    let warm = members(&daemon, "/idle", 50).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let (before, _) = daemon.rss_kib();
    let idle = members(&daemon, "/idle", IDLE_WSS).await;
    // Each member has been answered; let the last handshakes' buffers go.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (after, _) = daemon.rss_kib();
    let per = (after as f64 - before as f64) / IDLE_WSS as f64;
    eprintln!(
        "{IDLE_WSS} idle wss connections: RSS {before} KiB -> {after} KiB, {per:.2} KiB each"
    );
    assert!(
        per <= IDLE_PER_CONNECTION_KIB,
        "{per:.2} KiB per idle connection, over {IDLE_PER_CONNECTION_KIB} KiB"
    );
    drop((warm, idle));
}

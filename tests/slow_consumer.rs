//! Slow consumers: a client that stops reading is closed with 1013 and costs the others nothing.

mod common;

use common::{RawClient, start};

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

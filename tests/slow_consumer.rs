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

    // 2000 x 16 KiB = 32 MiB: far more than the socket buffers can hide from the server.
    common::flood_in_step(&mut publisher, &mut fast, N, SIZE, WINDOW).await;

    let stats = server
        .wait_stats("the slow consumer to be dropped", |s| {
            s["drops"]["slow_consumers"] == 1
        })
        .await;
    assert_eq!(stats["rooms"]["flood"], 2, "{stats}");
    // Reading now lets the server's queued bytes and then its close frame through.
    assert_eq!(slow.close_code().await, Some(1013));
    server.stop().await;
}

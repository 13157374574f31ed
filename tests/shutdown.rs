//! Shutdown: every client gets 1001, /healthz turns 503 during the drain, and the drain is bounded.

mod common;

use std::time::Duration;

use common::{RawClient, start};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_gets_1001_and_run_returns_promptly() {
    let server = start(|c| c.server.drain_timeout = Duration::from_secs(5)).await;
    let mut clients = Vec::new();
    for room in ["/a", "/a", "/b"] {
        clients.push(server.connect(room).await);
    }
    server
        .wait_stats("three connections", |s| s["connections"] == 3)
        .await;
    let closes = clients.into_iter().map(|mut c| {
        tokio::spawn(async move {
            let frame = c.closed().await;
            // Finish the close handshake as a well-behaved client does.
            let _ = futures_util::SinkExt::close(&mut c.ws).await;
            frame
        })
    });
    let closes: Vec<_> = closes.collect();
    let took = server.stop().await;
    for c in closes {
        assert_eq!(c.await.unwrap().code, CloseCode::Away);
    }
    assert!(
        took < Duration::from_secs(2),
        "clients that answer should not wait the drain out: {took:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_503_and_upgrades_are_refused_while_draining_within_the_timeout() {
    let drain = Duration::from_millis(1500);
    let server = start(|c| c.server.drain_timeout = drain).await;
    // A client that never reads holds the drain open until the drain timeout.
    let _stuck = RawClient::connect(&server, "/x").await;
    server
        .wait_stats("one connection", |s| s["connections"] == 1)
        .await;

    server.shutdown.trigger();
    let started = std::time::Instant::now();
    let (status, head, body) = server.get("/healthz").await;
    assert_eq!((status, body.as_str()), (503, "draining\n"), "{head}");
    assert_eq!(server.try_connect("/x").await.err(), Some(503));

    common::within("run to return", server.task).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < drain + Duration::from_millis(700),
        "drain took {took:?}"
    );
}

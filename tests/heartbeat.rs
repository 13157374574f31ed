//! Heartbeats: server pings, the idle timeout, and the app-level ping for browsers.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, start};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_every_interval() {
    let server = start(|c| {
        c.heartbeat.ping_interval = Duration::from_millis(200);
        c.heartbeat.idle_timeout = Duration::from_secs(5);
    })
    .await;
    let mut raw = RawClient::connect(&server, "/hb").await;
    let started = Instant::now();
    let mut pings = 0;
    while pings < 2 {
        let (opcode, _) = raw.frame().await.expect("connection open");
        if opcode == 0x9 {
            pings += 1;
        }
    }
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(350),
        "two pings in {elapsed:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_closed_after_the_idle_timeout() {
    let server = start(|c| {
        c.heartbeat.ping_interval = Duration::from_millis(100);
        c.heartbeat.idle_timeout = Duration::from_millis(500);
    })
    .await;
    // The raw client reads the pings but never answers them.
    let mut raw = RawClient::connect(&server, "/idle").await;
    let started = Instant::now();
    assert_eq!(raw.close_code().await, Some(1000));
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(450),
        "closed after {elapsed:?}"
    );
    server
        .wait_stats("idle client gone", |s| s["connections"] == 0)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_answering_pings_stays() {
    let server = start(|c| {
        c.heartbeat.ping_interval = Duration::from_millis(100);
        c.heartbeat.idle_timeout = Duration::from_millis(300);
    })
    .await;
    let mut a = server.connect("/alive").await;
    // Reading lets tungstenite answer each ping; three idle timeouts pass meanwhile.
    let until = Instant::now() + Duration::from_millis(1000);
    while Instant::now() < until {
        if let Ok(Some(Ok(Message::Close(c)))) = tokio::time::timeout(
            Duration::from_millis(50),
            futures_util::StreamExt::next(&mut a.ws),
        )
        .await
        {
            panic!("closed although answering pings: {c:?}");
        }
    }
    a.send_text("still here").await;
    assert_eq!(a.recv_relayed().await, Message::text("still here"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_ping_is_answered_to_its_sender_alone() {
    let server = start(|c| {
        c.heartbeat.app_ping = r#"{"type":"ping"}"#.into();
        c.heartbeat.app_pong = r#"{"type":"pong"}"#.into();
    })
    .await;
    let mut a = server.connect("/app").await;
    let mut b = server.connect("/app").await;
    server
        .wait_stats("two members", |s| s["rooms"]["app"] == 2)
        .await;
    a.send_text(r#"{"type":"ping"}"#).await;
    assert_eq!(a.recv_relayed().await, Message::text(r#"{"type":"pong"}"#));
    a.send_text("after the ping").await;
    // B's first relayed message is the one after the ping: the ping was not relayed.
    assert_eq!(b.recv_relayed().await, Message::text("after the ping"));
    // Not byte-equal (extra space): relayed like any message.
    a.send_text(r#"{"type": "ping"}"#).await;
    assert_eq!(b.recv_relayed().await, Message::text(r#"{"type": "ping"}"#));
    let stats = server.stats().await;
    assert_eq!(
        stats["messages_in"], 2,
        "the app ping is not counted as relayed"
    );
    server.stop().await;
}

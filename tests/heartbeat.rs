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

/// A client still sending is not idle: a message trickling in for four idle timeouts (a frame
/// cut into pieces, so no pong can be sent meanwhile) is relayed, not closed as idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_trickling_in_keeps_its_sender_alive() {
    let server = start(|c| {
        c.heartbeat.ping_interval = Duration::from_millis(200);
        c.heartbeat.idle_timeout = Duration::from_millis(500);
        c.presence.format = wsline::config::PresenceFormat::Off;
    })
    .await;
    let mut raw = RawClient::connect(&server, "/trickle").await;
    let text = "slow ".repeat(4000);
    let frame = common::encode_frame(true, 0x1, text.as_bytes(), true);
    let started = Instant::now();
    // 20 pieces, 100 ms apart (a stand-in for a slow uplink, not a wait for an event).
    for piece in frame.chunks(frame.len().div_ceil(20)) {
        raw.send_raw(piece).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(1900));
    loop {
        match raw.frame().await.expect("the echo, not the end") {
            (0x1, payload) => break assert_eq!(payload, text.as_bytes()),
            (0x9, _) => {}
            (0x8, payload) => panic!("closed while sending: {payload:?}"),
            other => panic!("{other:?}"),
        }
    }
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

//! Presence: every member hears of joins and leaves, bursts are coalesced, names are unique.

mod common;

use std::time::Duration;

use common::{is_presence, start, within};
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsline::config::PresenceFormat;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_and_leave_are_announced_with_count_and_total() {
    let server = start(|_| {}).await;
    let mut a = server.connect("/p1").await;
    let p = a.recv_presence().await;
    assert_eq!(p["room"], "p1");
    assert_eq!(p["count"], 1);
    assert_eq!(p["total"], 1);
    assert!(p.get("names").is_none(), "no names in use: {p}");

    let _other_room = server.connect("/elsewhere").await;
    let b = server.connect("/p1").await;
    // Coalescing may merge steps, but the state settles at 2 members of 3 connections.
    let mut p = a.recv_presence().await;
    while p["count"] != 2 || p["total"] != 3 {
        p = a.recv_presence().await;
    }
    b.close().await;
    let mut p = a.recv_presence().await;
    while p["count"] != 1 {
        p = a.recv_presence().await;
    }
    assert_eq!(p["total"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_are_listed_and_a_taken_name_is_refused_with_1008() {
    let server = start(|_| {}).await;
    let mut alice = server.connect("/n?name=alice").await;
    let _bob = server.connect("/n?name=bob").await;
    let mut p = alice.recv_presence().await;
    while p["count"] != 2 {
        p = alice.recv_presence().await;
    }
    assert_eq!(p["names"], serde_json::json!(["alice", "bob"]));

    let mut second_alice = server.connect("/n?name=alice").await;
    let close = second_alice.closed().await;
    assert_eq!(close.code, CloseCode::Policy);
    assert_eq!(close.reason.as_str(), "name taken");
    // The same name is fine in another room, and the room still has two members.
    let _elsewhere = server.connect("/other?name=alice").await;
    let s = server.stats().await;
    assert_eq!(s["rooms"]["n"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_are_allowed_when_unique_names_is_off() {
    let server = start(|c| c.presence.unique_names = false).await;
    let _a = server.connect("/d?name=sam").await;
    let mut b = server.connect("/d?name=sam").await;
    let mut p = b.recv_presence().await;
    while p["count"] != 2 {
        p = b.recv_presence().await;
    }
    assert_eq!(p["names"], serde_json::json!(["sam", "sam"]));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_format_sends_the_count_alone() {
    let server = start(|c| c.presence.format = PresenceFormat::Plain).await;
    let mut a = server.connect("/plain").await;
    assert_eq!(a.recv().await, Message::text("1"));
    let _b = server.connect("/plain").await;
    assert_eq!(a.recv().await, Message::text("2"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_format_sends_nothing() {
    let server = start(|c| c.presence.format = PresenceFormat::Off).await;
    let mut a = server.connect("/quiet").await;
    let _b = server.connect("/quiet").await;
    server
        .wait_stats("two members", |s| s["rooms"]["quiet"] == 2)
        .await;
    a.send_text("first").await;
    // The first thing A receives is its own echo: no presence came before it.
    assert_eq!(a.recv().await, Message::text("first"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_500_joins_costs_a_watcher_a_few_dozen_messages_ending_exact() {
    const JOINERS: usize = 500;
    let server = start(|c| {
        c.presence.interval = Duration::from_millis(100);
        // Every joiner comes from 127.0.0.1.
        c.limits.max_connections_per_ip = 1000;
    })
    .await;
    let mut watcher = server.connect("/burst").await;
    assert_eq!(watcher.recv_presence().await["count"], 1);

    let started = std::time::Instant::now();
    let joins = (0..JOINERS).map(|_| server.connect("/burst"));
    let joined = within("500 joins", futures_util::future::join_all(joins)).await;
    server
        .wait_stats("all joined", |s| s["rooms"]["burst"] == JOINERS + 1)
        .await;

    // Everything the watcher receives until the final count arrives, then a quiet window.
    let mut messages = 0;
    let mut last = serde_json::Value::Null;
    while last["count"] != JOINERS + 1 {
        last = watcher.recv_presence().await;
        messages += 1;
    }
    let quiet = tokio::time::timeout(Duration::from_millis(400), watcher.ws.next()).await;
    if let Ok(Some(Ok(m))) = &quiet {
        assert!(!is_presence(m), "presence after the final state: {m:?}");
    }
    assert_eq!(last["total"], JOINERS + 1);
    // At most one per 100 ms window while the joins lasted, plus the first and the final one;
    // on this machine the joins take about a second, so a dozen or two.
    let windows = (started.elapsed().as_millis() / 100) as usize + 2;
    assert!(
        messages <= windows && messages < 100,
        "{messages} presence messages for {JOINERS} joins in {:?}",
        started.elapsed()
    );
    drop(joined);
    server.stop().await;
}

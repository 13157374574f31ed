//! `relay.envelope = "json"` on the wire: text relayed wrapped with the sender's checked name,
//! binary refused with 1003, the wrapped form echoed and kept in history, the app ping unwrapped.

mod common;

use common::{Client, start};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use wsline::config::Envelope;

async fn next_json(c: &mut Client) -> Value {
    let m = c.recv_relayed().await;
    serde_json::from_str(m.to_text().expect("text")).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_is_wrapped_with_the_checked_name_for_everyone_the_sender_too() {
    let server = start(|c| c.relay.envelope = Envelope::Json).await;
    let mut alice = server.connect("/r?name=al%22ice").await;
    let mut anon = server.connect("/r").await;
    server
        .wait_stats("both joined", |s| s["rooms"]["r"] == 2)
        .await;
    let text = "bob: \"quoted\" \\ and a\nnewline 🎉";
    alice.send_text(text).await;
    let expected = json!({"type": "message", "room": "r", "from": "al\"ice", "data": text});
    assert_eq!(next_json(&mut anon).await, expected);
    assert_eq!(
        next_json(&mut alice).await,
        expected,
        "the echo is wrapped too"
    );
    anon.send_text("who am i").await;
    assert_eq!(
        next_json(&mut alice).await,
        json!({"type": "message", "room": "r", "from": null, "data": "who am i"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_is_refused_with_1003_and_the_room_keeps_relaying() {
    let server = start(|c| c.relay.envelope = Envelope::Json).await;
    let mut sender = server.connect("/r?name=bin").await;
    let mut other = server.connect("/r?name=other").await;
    server
        .wait_stats("both joined", |s| s["rooms"]["r"] == 2)
        .await;
    sender.send(Message::binary(vec![1u8, 2, 3])).await;
    let frame = sender.closed().await;
    assert_eq!(u16::from(frame.code), 1003);
    assert!(frame.reason.contains("envelope"), "{}", frame.reason);
    other.send_text("still here").await;
    assert_eq!(next_json(&mut other).await["data"], "still here");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replays_the_wrapped_form_and_the_app_ping_is_answered_unwrapped() {
    let server = start(|c| {
        c.relay.envelope = Envelope::Json;
        c.relay.history = 5;
        c.heartbeat.app_ping = "ping".into();
        c.heartbeat.app_pong = "pong".into();
    })
    .await;
    let mut first = server.connect("/h?name=first").await;
    first.send_text("ping").await;
    assert_eq!(first.recv_relayed().await, Message::text("pong"));
    first.send_text("kept").await;
    next_json(&mut first).await;
    let mut late = server.connect("/h?name=late").await;
    assert_eq!(
        next_json(&mut late).await,
        json!({"type": "message", "room": "h", "from": "first", "data": "kept", "seq": 1}),
        "with history, messages are numbered for recovery"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_envelope_nothing_is_wrapped() {
    let server = start(|_| {}).await;
    let mut a = server.connect("/raw?name=a").await;
    a.send_text("as sent").await;
    assert_eq!(a.recv_relayed().await, Message::text("as sent"));
    a.send(Message::binary(vec![0u8, 255])).await;
    assert_eq!(a.recv_relayed().await, Message::binary(vec![0u8, 255]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_largest_message_of_control_characters_is_relayed_six_times_larger() {
    let server = start(|c| {
        c.relay.envelope = Envelope::Json;
        c.relay.max_message_size = 20_000;
    })
    .await;
    let mut a = server.connect("/big?name=a").await;
    let text = "\u{1}".repeat(20_000);
    a.send_text(&text).await;
    let m = a.recv_relayed().await;
    assert!(m.len() > 6 * 20_000, "{}", m.len());
    let v: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
    assert_eq!(v["data"], text.as_str());
}

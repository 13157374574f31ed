//! Recovery across a reconnect (SPEC §4 "Recovery", single node): numbered messages, the room's
//! epoch in its presence state, `?since=EPOCH:SEQ` replaying exactly what was missed, and the gap
//! notice when that cannot be promised, against the real server over TLS.

mod common;

use common::{Client, TestServer, start, within};
use serde_json::{Value, json};
use wsline::config::Envelope;

async fn server(history: usize, envelope: Envelope) -> TestServer {
    start(|c| {
        c.relay.history = history;
        c.relay.envelope = envelope;
    })
    .await
}

/// The room's epoch, from a member's first presence state.
async fn epoch(c: &mut Client) -> String {
    let state = c.recv_presence().await;
    state["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("no epoch in {state}"))
        .to_owned()
}

async fn next(c: &mut Client) -> Value {
    serde_json::from_str(c.recv_relayed().await.to_text().unwrap()).unwrap()
}

/// Ann joins `room`, says m1..=m`n` and reads her echoes; returns her and the room's epoch.
async fn ann_says(server: &TestServer, room: &str, n: u64) -> (Client, String) {
    let mut ann = server.connect(&format!("/{room}?name=ann")).await;
    let epoch = epoch(&mut ann).await;
    for i in 1..=n {
        ann.send_text(&format!("m{i}")).await;
    }
    for i in 1..=n {
        let echo = next(&mut ann).await;
        assert_eq!(
            (echo["data"].clone(), echo["seq"].clone()),
            (json!(format!("m{i}")), json!(i))
        );
    }
    (ann, epoch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_replays_exactly_the_missed_messages_then_live_traffic() {
    let server = server(20, Envelope::Json).await;
    let (mut ann, e) = ann_says(&server, "r", 10).await;
    let mut bob = server.connect(&format!("/r?name=bob&since={e}:4")).await;
    for i in 5..=10 {
        let m = next(&mut bob).await;
        assert_eq!(
            (m["data"].clone(), m["seq"].clone()),
            (json!(format!("m{i}")), json!(i))
        );
    }
    assert_eq!(epoch(&mut bob).await, e, "one epoch for the room");
    ann.send_text("live").await;
    let m = next(&mut bob).await;
    assert_eq!(
        (m["data"].clone(), m["seq"].clone()),
        (json!("live"), json!(11))
    );
    // Up to date: nothing replayed at all.
    let mut cid = server.connect(&format!("/r?since={e}:11")).await;
    ann.send_text("after").await;
    assert_eq!(next(&mut cid).await["seq"], 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_older_than_history_or_of_another_epoch_gets_the_gap_notice_first() {
    let server = server(5, Envelope::Json).await;
    let (_ann, e) = ann_says(&server, "r", 10).await;
    let mut old = server.connect(&format!("/r?since={e}:2")).await;
    assert_eq!(
        next(&mut old).await,
        json!({"type":"gap","room":"r","epoch":e,"since":format!("{e}:2"),"reason":"history"})
    );
    for i in 6..=10 {
        assert_eq!(next(&mut old).await["seq"], i, "then what history has");
    }
    let mut other = server.connect("/r?since=0-0:7").await;
    let notice = next(&mut other).await;
    assert_eq!(
        (notice["type"].clone(), notice["reason"].clone()),
        (json!("gap"), json!("epoch"))
    );
    assert_eq!(next(&mut other).await["seq"], 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_made_anew_starts_over_under_a_new_epoch() {
    let server = server(20, Envelope::Json).await;
    let (ann, first) = ann_says(&server, "r", 3).await;
    ann.close().await;
    server
        .wait_stats("the room to empty", |s| s["rooms"].get("r").is_none())
        .await;
    let (_ann, second) = ann_says(&server, "r", 1).await;
    assert_ne!(first, second);
    let mut late = server.connect(&format!("/r?since={first}:3")).await;
    assert_eq!(next(&mut late).await["reason"], "epoch");
    assert_eq!(next(&mut late).await["seq"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_relay_numbers_nothing_and_says_so() {
    let server = server(20, Envelope::None).await;
    let mut ann = server.connect("/r").await;
    let state = ann.recv_presence().await;
    assert!(state.get("epoch").is_none(), "{state}");
    ann.send_text("raw").await;
    assert_eq!(
        ann.recv_relayed().await,
        tokio_tungstenite::tungstenite::Message::text("raw")
    );
    let mut bob = server.connect("/r?since=x:1").await;
    let notice = next(&mut bob).await;
    assert_eq!(
        (notice["reason"].clone(), notice["epoch"].clone()),
        (json!("off"), Value::Null)
    );
    assert_eq!(
        bob.recv_relayed().await,
        tokio_tungstenite::tungstenite::Message::text("raw")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_since_is_a_400() {
    let server = server(20, Envelope::Json).await;
    for since in ["nope", "e:-1", "e:1&since=e:2", "%22:1"] {
        let got = within("refusal", server.try_connect(&format!("/r?since={since}"))).await;
        assert_eq!(got.err(), Some(400), "{since}");
    }
    // The server goes on serving, numbering from 1.
    let (_ann, _) = ann_says(&server, "r", 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_restart_of_the_node_a_since_gets_the_epoch_gap() {
    let extra = "[relay]\nenvelope = \"json\"\nhistory = 20\n";
    let mut first = common::daemon::Daemon::start(extra, &[]).await;
    let mut ann = first.connect("/r?name=ann").await;
    let e = epoch(&mut ann).await;
    ann.send_text("before").await;
    assert_eq!(next(&mut ann).await["seq"], 1);
    first.child.kill().await.unwrap();
    let second = common::daemon::Daemon::start(extra, &[]).await;
    let mut back = second.connect(&format!("/r?name=ann&since={e}:1")).await;
    let notice = next(&mut back).await;
    assert_eq!(
        (notice["type"].clone(), notice["reason"].clone()),
        (json!("gap"), json!("epoch"))
    );
    let now = epoch(&mut back).await;
    assert_ne!(
        now, e,
        "a restarted node starts its rooms over under new epochs"
    );
    back.send_text("after").await;
    assert_eq!(next(&mut back).await["seq"], 1);
}

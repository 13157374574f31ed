//! Rooms lock alone: while one room is busy (here: its lock held on purpose, as a long fan-out or
//! presence render would hold it), joins and leaves in other rooms go on, even with a join waiting
//! for the busy room. Proved by events, not by timing: room B's join completes while room A's lock
//! is still held and a join into A is known to be waiting for it.

mod common;

use std::time::Duration;

use common::{RawClient, start_with_handle, within};
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn joins_and_leaves_elsewhere_proceed_while_a_join_waits_for_a_busy_room() {
    let (server, handle) = start_with_handle(|_| {}).await;
    let mut a1 = server.connect("/a").await;
    // A's presence has gone out, so nothing of the server needs room A until the hold ends.
    assert_eq!(a1.recv_presence().await["count"], 1);
    let _c1 = server.connect("/c").await;
    let c2 = server.connect("/c").await;

    let hold = handle.hub().hold_room("a").expect("room a exists");
    let before = hold.waiters();
    let tls = server.tls().await;
    let stuck = tokio::spawn(RawClient::upgrade(tls, "/a"));
    within("a join into room a to wait for its lock", async {
        while hold.waiters() == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Room A is locked and a join is waiting for it: B and C do not care.
    let mut b = server.connect("/b?name=bee").await;
    let state = b.recv_presence().await;
    assert_eq!(state["names"], serde_json::json!(["bee"]), "{state}");
    b.send_text("hello b").await;
    assert_eq!(b.recv_relayed().await, Message::text("hello b"));
    c2.close().await;
    let _b2 = server.connect("/b").await;
    assert_eq!(b.recv_presence().await["count"], 2);
    assert!(!stuck.is_finished(), "the join into room a went through a held lock");

    drop(hold);
    let _a2 = within("the waiting join to finish", stuck).await.unwrap();
    assert_eq!(a1.recv_presence().await["count"], 2);
    server.stop().await;
}

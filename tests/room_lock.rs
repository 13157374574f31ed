//! Rooms lock alone: while one room is busy (here: its lock held on purpose, as a long fan-out or
//! presence render would hold it), joins and leaves in other rooms go on, even with a join waiting
//! for the busy room. Proved by events, not by timing: room B's joins and leaves complete while
//! room A's lock is still held and a join into A is known to be waiting for it.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{WAIT, start_with_handle, within};
use tokio_tungstenite::tungstenite::Message;
use wsline::relay::hub::Hub;
use wsline::relay::outbox::Outbox;

fn outbox() -> Outbox {
    wsline::relay::outbox::outbox(16, 1 << 20, tokio_util::sync::CancellationToken::new()).0
}

/// Joins `room` and leaves it again on a thread of its own (not a runtime worker, so a join that
/// blocks cannot stall the test's runtime); the receiver hears when it is done.
fn join_and_leave(hub: &Hub, room: &'static str) -> mpsc::Receiver<()> {
    let (done_tx, done_rx) = mpsc::channel();
    let hub = hub.clone();
    std::thread::spawn(move || {
        drop(hub.join(room, None, outbox()).expect("join"));
        let _ = done_tx.send(());
    });
    done_rx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_and_leaves_elsewhere_proceed_while_a_join_waits_for_a_busy_room() {
    let (server, handle) = start_with_handle(|_| {}).await;
    let hub = handle.hub().clone();
    let mut a1 = server.connect("/a").await;
    // A's presence has gone out, so nothing of the server needs room A until the hold ends.
    assert_eq!(a1.recv_presence().await["count"], 1);
    let _c1 = server.connect("/c").await;
    let c2 = server.connect("/c").await;

    let hold = hub.hold_room("a").expect("room a exists");
    let before = hold.waiters();
    let waiting_in_a = join_and_leave(&hub, "a");
    within("a join into room a to wait for its lock", async {
        while hold.waiters() == before {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;

    // Room A is locked and a join is waiting for it: a join and leave in B do not care.
    let in_b = join_and_leave(&hub, "b");
    tokio::task::spawn_blocking(move || in_b.recv_timeout(WAIT))
        .await
        .unwrap()
        .expect("a join and leave in room b finish while room a is held");
    // Nor do clients over TLS: a join, a message and a leave elsewhere.
    let mut b = server.connect("/b?name=bee").await;
    let state = b.recv_presence().await;
    assert_eq!(state["names"], serde_json::json!(["bee"]), "{state}");
    b.send_text("hello b").await;
    assert_eq!(b.recv_relayed().await, Message::text("hello b"));
    c2.close().await;
    let _b2 = server.connect("/b").await;
    assert_eq!(b.recv_presence().await["count"], 2);
    assert!(
        waiting_in_a.try_recv().is_err(),
        "the join into room a went through a held lock"
    );

    drop(hold);
    tokio::task::spawn_blocking(move || waiting_in_a.recv_timeout(WAIT))
        .await
        .unwrap()
        .expect("the waiting join finishes once room a is free");
    server.stop().await;
}

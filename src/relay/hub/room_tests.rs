//! The hub's behaviour, room by room: lifetimes, presence windows, remote members, history
//! seeding, sessions and `[[rooms]]` settings, driven through the hub's own functions.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Rooms;
use crate::config::{Config, PresenceFormat};
use crate::proto::message::Message;
use crate::relay::outbox::Outbox;

use super::*;

fn hub() -> Hub {
    let config = Config::from_toml("[tls]\nenabled = false\n[relay]\nhistory = 3\n").unwrap();
    Hub::new(Arc::default(), RoomSettings::new(&config))
}

fn outbox() -> Outbox {
    crate::relay::outbox::outbox(100, 1 << 20, tokio_util::sync::CancellationToken::new()).0
}

#[test]
fn a_room_lives_while_someone_is_in_it_and_a_new_one_replaces_it() {
    let hub = hub();
    let a = hub.join("r", Some("ann"), outbox()).unwrap();
    let first = a.room.clone();
    drop(a);
    assert_eq!(hub.room_count(), 0);
    assert!(first.state.lock().closed);
    let b = hub.join("r", None, outbox()).unwrap();
    assert!(
        !Arc::ptr_eq(&first, &b.room),
        "a closed room is never joined again"
    );
    assert_eq!(hub.room_counts(), vec![(Arc::from("r"), 1)]);
}

#[test]
fn a_join_that_finds_a_closed_room_in_the_map_replaces_it() {
    let hub = hub();
    let a = hub.join("r", None, outbox()).unwrap();
    let old = a.room.clone();
    // The leave's state change without its removal from the map: the race a join can meet.
    old.state.lock().closed = true;
    let b = hub.join("r", None, outbox()).unwrap();
    assert!(!Arc::ptr_eq(&old, &b.room));
    assert_eq!(hub.room_count(), 1);
    // The old room's last member leaving does not prune its successor.
    drop(a);
    assert_eq!(hub.room_counts(), vec![(Arc::from("r"), 1)]);
}

/// Everything queued for one member so far, as text.
async fn drained(rx: &crate::relay::outbox::OutboxRx) -> Vec<String> {
    let mut batch = std::collections::VecDeque::new();
    tokio::time::timeout(Duration::from_secs(5), rx.recv_all(&mut batch))
        .await
        .expect("something queued");
    batch
        .iter()
        .map(|m| m.to_text().unwrap().to_owned())
        .collect()
}

fn pair() -> (Outbox, crate::relay::outbox::OutboxRx) {
    crate::relay::outbox::outbox(100, 1 << 20, tokio_util::sync::CancellationToken::new())
}

#[tokio::test]
async fn one_presence_message_is_made_once_and_shared_by_its_receivers() {
    let hub = hub();
    let (ann_tx, ann) = pair();
    let (bob_tx, bob) = pair();
    let a = hub.join("r", Some("ann"), ann_tx).unwrap();
    let _b = hub.join("r", Some("bob"), bob_tx).unwrap();
    hub.send_presence(&a.room);
    let first = |rx: &crate::relay::outbox::OutboxRx| {
        let mut batch = std::collections::VecDeque::new();
        assert!(rx.try_recv_all(&mut batch));
        match batch.pop_front() {
            Some(Message::Text(t)) => t,
            other => panic!("{other:?}"),
        }
    };
    let (to_ann, to_bob) = (first(&ann), first(&bob));
    assert_eq!(to_ann, to_bob);
    assert_eq!(
        to_ann.as_str().as_ptr(),
        to_bob.as_str().as_ptr(),
        "one buffer, not a copy per receiver"
    );
}

#[tokio::test]
async fn a_window_sends_the_state_to_joiners_and_the_change_to_the_others() {
    let hub = hub();
    let (ann_tx, ann) = pair();
    let a = hub.join("r", Some("ann"), ann_tx).unwrap();
    hub.send_presence(&a.room);
    assert_eq!(
        drained(&ann).await,
        [r#"{"type":"presence","room":"r","count":1,"total":1,"names":["ann"]}"#]
    );
    let (bob_tx, bob) = pair();
    let b = hub.join("r", Some("bob"), bob_tx).unwrap();
    let (cid_tx, cid) = pair();
    let c = hub.join("r", Some("cid"), cid_tx).unwrap();
    drop(c);
    hub.send_presence(&a.room);
    // Cid came and went within the window: nobody hears of it.
    assert_eq!(
        drained(&ann).await,
        [r#"{"type":"presence","room":"r","count":2,"total":2,"joined":["bob"],"left":[]}"#]
    );
    assert_eq!(
        drained(&bob).await,
        [r#"{"type":"presence","room":"r","count":2,"total":2,"names":["ann","bob"]}"#]
    );
    drop(b);
    hub.send_presence(&a.room);
    assert_eq!(
        drained(&ann).await,
        [r#"{"type":"presence","room":"r","count":1,"total":1,"joined":[],"left":["bob"]}"#]
    );
    drop(cid);
}

#[tokio::test]
async fn other_nodes_members_join_the_count_the_names_and_uniqueness() {
    let hub = hub();
    let (ann_tx, ann) = pair();
    let a = hub.join("r", Some("ann"), ann_tx).unwrap();
    hub.send_presence(&a.room);
    drained(&ann).await;
    let names = |v: &[&str]| v.iter().map(|n| Arc::from(*n)).collect::<Vec<_>>();
    // Two members elsewhere, one named.
    hub.set_remote("r", 2, names(&["bob"]));
    hub.send_presence(&a.room);
    assert_eq!(
        drained(&ann).await,
        [r#"{"type":"presence","room":"r","count":3,"total":1,"joined":["bob"],"left":[]}"#]
    );
    // A name held on another node is taken here (by its key).
    assert_eq!(
        hub.join("r", Some("BOB"), outbox()).err(),
        Some(JoinError::NameTaken)
    );
    // This node's own presence leaves the others out.
    assert_eq!(hub.local_presence("r"), Some((1, names(&["ann"]))));
    // Bob leaves, cid arrives elsewhere; then Redis is lost: the others vanish.
    hub.set_remote("r", 2, names(&["cid"]));
    hub.send_presence(&a.room);
    assert_eq!(
        drained(&ann).await,
        [r#"{"type":"presence","room":"r","count":3,"total":1,"joined":["cid"],"left":["bob"]}"#]
    );
    hub.clear_remote();
    hub.send_presence(&a.room);
    assert_eq!(
        drained(&ann).await,
        [r#"{"type":"presence","room":"r","count":1,"total":1,"joined":[],"left":["cid"]}"#]
    );
    // Nothing for a room with no member here.
    hub.set_remote("nowhere", 5, names(&["x"]));
    assert_eq!(hub.room_count(), 1);
}

#[tokio::test]
async fn a_message_from_another_node_reaches_every_local_member_and_the_history() {
    let hub = hub();
    let (ann_tx, ann) = pair();
    let a = hub.join("r", None, ann_tx).unwrap();
    hub.deliver_remote("r", Message::text("m1"));
    hub.deliver_remote("absent", Message::text("lost"));
    assert_eq!(drained(&ann).await, ["m1"]);
    let (bob_tx, bob) = pair();
    let _b = hub.join("r", None, bob_tx).unwrap();
    assert_eq!(
        drained(&bob).await,
        ["m1"],
        "replayed from the room's history"
    );
    // Once something live has been relayed, a late history read from Redis is not replayed.
    hub.seed_history("r", vec![Message::text("old")], None);
    a.publish(Message::text("m2"), true, &mut Cork::default());
    assert_eq!(drained(&ann).await, ["m2"]);
}

#[tokio::test]
async fn a_history_read_from_redis_is_replayed_once_to_the_first_members() {
    let hub = hub();
    let (ann_tx, ann) = pair();
    let _a = hub.join("r", None, ann_tx).unwrap();
    hub.seed_history(
        "r",
        ["h1", "h2", "h3", "h4"].map(Message::text).to_vec(),
        None,
    );
    assert_eq!(drained(&ann).await, ["h2", "h3", "h4"], "history = 3");
    hub.seed_history("r", vec![Message::text("again")], None);
    hub.deliver_remote("r", Message::text("live"));
    assert_eq!(drained(&ann).await, ["live"]);
}

/// A member's idea of the room, rebuilt from its presence messages as a client would.
#[derive(Debug, Default)]
struct View {
    known: Vec<String>,
    unnamed: usize,
    count: u64,
}

impl View {
    fn apply(&mut self, text: &str) {
        let p: serde_json::Value = serde_json::from_str(text).unwrap();
        let list = |key: &str| -> Vec<String> {
            p.get(key)
                .and_then(|v| v.as_array())
                .map_or(Vec::new(), |a| {
                    a.iter().map(|n| n.as_str().unwrap().to_owned()).collect()
                })
        };
        self.count = p["count"].as_u64().unwrap();
        if p.get("names").is_some() || p.get("more").is_some() {
            self.known = list("names");
            self.unnamed = p.get("more").map_or(0, |m| m.as_u64().unwrap() as usize);
            return;
        }
        self.known.extend(list("joined"));
        for gone in list("left") {
            match self.known.iter().position(|n| *n == gone) {
                Some(i) => drop(self.known.swap_remove(i)),
                None => self.unnamed -= 1,
            }
        }
    }
}

#[tokio::test]
async fn views_rebuilt_from_states_and_changes_match_the_room_through_random_churn() {
    use futures_util::FutureExt;
    const POOL: [&str; 6] = ["ann", "bob", "cid", "dee", "eve", "fay"];
    for (unique_names, max_names) in [(true, 1000), (false, 1000), (false, 3), (true, 0)] {
        let config = Config::from_toml("[tls]\nenabled = false\n").unwrap();
        let mut settings = RoomSettings::new(&config);
        (settings.unique_names, settings.max_names) = (unique_names, max_names);
        let hub = Hub::new(Arc::default(), settings);
        // xorshift64: the same churn on every run.
        let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
        let mut random = move |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n) as usize
        };
        let mut members: Vec<(
            Membership,
            Option<&str>,
            crate::relay::outbox::OutboxRx,
            View,
        )> = Vec::new();
        for step in 0..1500 {
            match random(10) {
                0..=4 => {
                    let name = (random(5) > 0).then(|| POOL[random(POOL.len() as u64)]);
                    let (tx, rx) = pair();
                    if let Ok(m) = hub.join("r", name, tx) {
                        members.push((m, name, rx, View::default()));
                    }
                }
                5..=7 if !members.is_empty() => {
                    drop(members.swap_remove(random(members.len() as u64)));
                }
                _ => {
                    let room = hub.shared.rooms.lock().get("r").cloned();
                    if let Some(room) = room {
                        hub.send_presence(&room);
                    }
                    for (_, _, rx, view) in &mut members {
                        let mut batch = std::collections::VecDeque::new();
                        if rx.recv_all(&mut batch).now_or_never().is_some() {
                            for m in &batch {
                                view.apply(m.to_text().unwrap());
                            }
                            // As the writer does once a batch is on the wire.
                            let bytes = batch.iter().map(Message::len).sum();
                            rx.written(batch.len(), bytes);
                        }
                    }
                    let mut names: Vec<String> = members
                        .iter()
                        .filter_map(|(_, n, _, _)| n.map(str::to_owned))
                        .collect();
                    names.sort();
                    for (_, _, _, view) in &members {
                        assert_eq!(view.count, members.len() as u64, "step {step}");
                        let mut known = view.known.clone();
                        known.sort();
                        assert_eq!(known.len() + view.unnamed, names.len(), "step {step}");
                        if view.unnamed == 0 {
                            assert_eq!(known, names, "step {step}");
                        } else {
                            assert!(known.iter().all(|n| names.contains(n)), "step {step}");
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_reconnect_with_the_same_session_takes_its_name_over_at_once() {
    let hub = hub();
    let (old_tx, old_rx) = pair();
    let old = hub
        .join_session("r", Some("sam"), Some("tab-0123456789abcdef"), old_tx)
        .unwrap();
    // Someone else, or the same name without the session, is refused as before.
    for session in [None, Some("tab-fedcba9876543210")] {
        assert_eq!(
            hub.join_session("r", Some("SAM"), session, outbox()).err(),
            Some(JoinError::NameTaken)
        );
    }
    assert!(!old_rx.replaced());
    let new = hub
        .join_session("r", Some("sam"), Some("tab-0123456789abcdef"), outbox())
        .unwrap();
    assert!(old_rx.replaced(), "the old connection is told to close");
    assert_eq!(hub.total(), 1);
    assert_eq!(hub.local_presence("r"), Some((1, vec![Arc::from("sam")])));
    // The old guard's leave finds nothing: the name stays with the new member.
    drop(old);
    assert_eq!(hub.local_presence("r"), Some((1, vec![Arc::from("sam")])));
    assert_eq!(
        new.room.state.lock().changes.len(),
        1,
        "one join in all, no leave"
    );
    drop(new);
    assert_eq!(hub.room_count(), 0);
}

#[tokio::test]
async fn a_room_pattern_gives_its_rooms_their_own_presence_and_history() {
    let config = Config::from_toml(
        "[tls]\nenabled = false\n[[rooms]]\nmatch = \"count-*\"\n\
             presence = { format = \"plain\" }\nrelay = { history = 2 }\n",
    )
    .unwrap();
    let settings = RoomSettings::new(&config);
    let count = settings.for_room("count-1");
    assert_eq!((count.presence, count.history), (PresenceFormat::Plain, 2));
    let other = settings.for_room("chat-1");
    assert_eq!((other.presence, other.history), (PresenceFormat::Json, 0));
    let hub = Hub::new(Arc::default(), settings);
    let a = hub.join("count-1", None, outbox()).unwrap();
    for m in ["1", "2", "3"] {
        a.publish(Message::text(m), false, &mut Cork::default());
    }
    let (tx, rx) = pair();
    let b = hub.join("count-1", None, tx).unwrap();
    hub.send_presence(&b.room);
    let got = drained(&rx).await;
    assert_eq!(
        got,
        ["2", "3", "2"],
        "two messages of history, then the plain count"
    );
    let c = hub.join("chat-1", None, outbox()).unwrap();
    c.publish(Message::text("x"), false, &mut Cork::default());
    let (tx, rx) = pair();
    let d = hub.join("chat-1", None, tx).unwrap();
    hub.send_presence(&d.room);
    let got = drained(&rx).await;
    assert_eq!(got.len(), 1, "no history here: {got:?}");
    assert!(got[0].starts_with(r#"{"type":"presence""#), "{got:?}");
}

#[test]
fn names_are_unique_by_key_unless_unique_names_is_off() {
    let hub = hub();
    let _a = hub.join("r", Some("sam"), outbox()).unwrap();
    assert_eq!(
        hub.join("r", Some("sam"), outbox()).err(),
        Some(JoinError::NameTaken)
    );
    let mut settings = (*hub.settings()).clone();
    settings.unique_names = false;
    hub.configure(settings);
    let b = hub.join("r", Some("sam"), outbox()).unwrap();
    drop(b);
    assert_eq!(_a.room.state.lock().roster.listed(10), ["sam"]);
}

/// A hub of a cluster (Redis is never reached here) whose rooms are numbered.
fn cluster_hub() -> Hub {
    let config = Config::from_toml(
        "[tls]\nenabled = false\n[relay]\nhistory = 3\nenvelope = \"json\"\n\
         [cluster]\nredis = \"redis://127.0.0.1:1\"\n",
    )
    .unwrap();
    let cluster = crate::cluster::Cluster::new(&config.cluster);
    Hub::with_cluster(Arc::default(), RoomSettings::new(&config), cluster)
}

fn seq_msg(i: u64) -> Message {
    Message::Text(crate::relay::recovery::with_seq(
        &format!("{{\"m\":{i}}}"),
        i,
    ))
}

fn seq_texts(range: std::ops::RangeInclusive<u64>) -> Vec<String> {
    range
        .map(|i| format!("{{\"m\":{i},\"seq\":{i}}}"))
        .collect()
}

#[tokio::test]
async fn a_cluster_room_plans_since_at_its_seed_then_follows_the_numbers_of_redis() {
    let hub = cluster_hub();
    // Joined before the node read the room: the plan waits for the seed.
    let (tx, ann) = pair();
    let _a = hub
        .join_since("r", None, None, Some(("e1", 5)), tx)
        .unwrap();
    let (tx, bob) = pair();
    let _b = hub.join("r", None, tx).unwrap();
    assert!(hub.seed_history("r", (5..=7).map(seq_msg).collect(), Some(("e1", 7))));
    assert_eq!(drained(&ann).await, seq_texts(6..=7));
    assert_eq!(drained(&bob).await, seq_texts(5..=7));
    assert!(
        !hub.seed_history("r", vec![seq_msg(9)], Some(("e1", 9))),
        "seeded once"
    );
    // Read: a later joiner is planned at once, against the room's copy.
    let (tx, cid) = pair();
    let c = hub
        .join_since("r", None, None, Some(("e1", 3)), tx)
        .unwrap();
    let got = drained(&cid).await;
    assert!(got[0].contains(r#""reason":"history""#), "{got:?}");
    assert_eq!(got[1..], seq_texts(5..=7));
    // Live, as Redis numbered it: the sender (echo off) is left out.
    hub.deliver_numbered("r", seq_msg(8), "e1", Some(c.id));
    assert_eq!(drained(&ann).await, seq_texts(8..=8));
    assert_eq!(drained(&bob).await, seq_texts(8..=8));
    // Redis started the room over: new epoch, old history gone.
    hub.deliver_numbered("r", seq_msg(1), "e2", None);
    assert_eq!(
        drained(&cid).await,
        seq_texts(1..=1),
        "nothing of 8 for its sender"
    );
    let (tx, dan) = pair();
    let _d = hub
        .join_since("r", None, None, Some(("e1", 8)), tx)
        .unwrap();
    let got = drained(&dan).await;
    assert!(
        got[0].contains(r#""reason":"epoch""#) && got[0].contains("e2"),
        "{got:?}"
    );
    assert_eq!(got[1..], seq_texts(1..=1));
}

//! Presence: a joiner gets the room's state, every member the changes after it; bursts are
//! coalesced, names are unique (or counted), and no presence message outgrows a member's queue.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Client, is_presence, start, start_with_handle, within};
use futures_util::StreamExt;
use serde_json::Value;
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
    let mut alice_view = View::default();
    alice_view.apply(&alice.recv_presence().await);
    let mut bob = server.connect("/n?name=bob").await;
    while alice_view.count != 2 {
        alice_view.apply(&alice.recv_presence().await);
    }
    assert_eq!(alice_view.names(), ["alice", "bob"]);
    // Bob's first presence message is the whole state.
    let state = bob.recv_presence().await;
    assert_eq!(
        state["names"],
        serde_json::json!(["alice", "bob"]),
        "{state}"
    );

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
async fn a_joiner_gets_the_state_first_and_members_get_only_the_changes() {
    let server = start(|_| {}).await;
    let mut alice = server.connect("/c?name=alice").await;
    let first = alice.recv_presence().await;
    assert_eq!(first["names"], serde_json::json!(["alice"]), "{first}");
    let bob = server.connect("/c?name=bob").await;
    let change = alice.recv_presence().await;
    assert_eq!(change["joined"], serde_json::json!(["bob"]), "{change}");
    assert_eq!(change["left"], serde_json::json!([]), "{change}");
    assert!(
        change.get("names").is_none(),
        "a change carries no names: {change}"
    );
    assert_eq!(
        (change["count"].clone(), change["total"].clone()),
        (2.into(), 2.into())
    );

    // A member without a name: a count-only change, still told apart from a state.
    let mut anon = server.connect("/c").await;
    let change = alice.recv_presence().await;
    assert_eq!(change["count"], 3);
    assert_eq!(change["joined"], serde_json::json!([]), "{change}");
    let state = anon.recv_presence().await;
    assert_eq!(
        state["names"],
        serde_json::json!(["alice", "bob"]),
        "{state}"
    );
    assert_eq!(state["count"], 3);

    bob.close().await;
    let change = alice.recv_presence().await;
    assert_eq!(change["left"], serde_json::json!(["bob"]), "{change}");
    assert_eq!(change["count"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_lists_at_most_max_names_and_counts_the_rest() {
    let server = start(|c| c.presence.max_names = 2).await;
    let mut members = Vec::new();
    for name in ["dan", "ann", "cat"] {
        let mut m = server.connect(&format!("/m?name={name}")).await;
        m.recv_presence().await;
        members.push(m);
    }
    let mut late = server.connect("/m?name=bea").await;
    let state = late.recv_presence().await;
    assert_eq!(state["names"], serde_json::json!(["ann", "bea"]), "{state}");
    assert_eq!(state["more"], 2, "{state}");
    assert_eq!(state["count"], 4);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_names_are_counted_when_unique_names_is_off() {
    let server = start(|c| c.presence.unique_names = false).await;
    let a = server.connect("/d?name=sam").await;
    let mut b = server.connect("/d?name=sam").await;
    let mut view = View::default();
    while view.count != 2 {
        view.apply(&b.recv_presence().await);
    }
    assert_eq!(view.names(), ["sam", "sam"]);
    // One sam leaving leaves the other in the list.
    a.close().await;
    while view.count != 1 {
        view.apply(&b.recv_presence().await);
    }
    assert_eq!(view.names(), ["sam"]);
    let mut c = server.connect("/d?name=other").await;
    assert_eq!(
        c.recv_presence().await["names"],
        serde_json::json!(["other", "sam"])
    );
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

/// A member's idea of its room, rebuilt from a state and the changes after it, as a client would:
/// a message with `names` or `more` is a state, one with `joined`/`left` a change.
#[derive(Debug, Default)]
struct View {
    /// Names known to be present (a multiset).
    known: BTreeMap<String, usize>,
    /// Members counted but not named (a state's `more`, less those that left since).
    unnamed: usize,
    count: u64,
}

impl View {
    fn apply(&mut self, p: &Value) {
        self.count = p["count"].as_u64().expect("count");
        let strings = |key: &str| -> Vec<String> {
            p.get(key)
                .and_then(Value::as_array)
                .map(|a| a.iter().map(|n| n.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default()
        };
        if p.get("names").is_some() || p.get("more").is_some() {
            self.known.clear();
            for n in strings("names") {
                *self.known.entry(n).or_default() += 1;
            }
            self.unnamed = p.get("more").map_or(0, |m| m.as_u64().unwrap() as usize);
            return;
        }
        for n in strings("joined") {
            *self.known.entry(n).or_default() += 1;
        }
        for n in strings("left") {
            match self.known.get_mut(&n) {
                Some(1) => {
                    self.known.remove(&n);
                }
                Some(k) => *k -= 1,
                // Not listed in our state: one of the `more`.
                None => self.unnamed = self.unnamed.checked_sub(1).expect("left unknown name"),
            }
        }
    }

    fn names(&self) -> Vec<&str> {
        self.known
            .iter()
            .flat_map(|(n, &k)| std::iter::repeat_n(n.as_str(), k))
            .collect()
    }
}

/// The longest this file's big-room test waits for anything (500 TLS clients on a shared machine).
const BIG_WAIT: Duration = Duration::from_secs(90);

/// Reads presence until the view names `marker` (the last member to join, so the view is then
/// final), and returns it with the client (kept open). A close frame means the member was evicted.
async fn follow_until(mut client: Client, marker: String) -> Result<(View, Client), String> {
    let mut view = View::default();
    loop {
        match client.ws.next().await {
            Some(Ok(Message::Text(text))) => {
                view.apply(&serde_json::from_str(&text).map_err(|e| e.to_string())?);
                if view.known.contains_key(&marker) {
                    return Ok((view, client));
                }
            }
            Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
            Some(Ok(_)) => {}
            other => return Err(format!("connection ended: {other:?}")),
        }
    }
}

/// Reads (and drops) whatever arrives until told to go; then returns the open client.
async fn read_until_told(
    mut client: Client,
    mut go: tokio::sync::watch::Receiver<bool>,
) -> Result<Client, String> {
    loop {
        tokio::select! {
            _ = go.wait_for(|go| *go) => return Ok(client),
            m = client.ws.next() => match m {
                Some(Ok(Message::Close(frame))) => return Err(format!("closed: {frame:?}")),
                Some(Ok(_)) => {}
                other => return Err(format!("connection ended: {other:?}")),
            },
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_long_names_in_a_64kib_queue_evict_nobody_and_every_view_ends_exact() {
    const MEMBERS: usize = 500;
    // The members who stay to the end: the 180 lowest names. With the marker they are 181, under
    // max_names, and at any moment they are among the first 200 names present, so every state lists
    // every stayer present and whatever a view cannot name is a leaver. Once the leavers are gone,
    // every view must be complete and exact, however the joins fell into windows.
    const STAYERS: usize = 180;
    let server = start(|c| {
        c.limits.queue_bytes = 64 * 1024;
        // 200 x 259 + 512 = 52 312 bytes: a full state fits the queue, as the config check demands.
        c.presence.max_names = 200;
        c.limits.max_connections_per_ip = 1000;
        assert_eq!(c.problems(), Vec::<String>::new());
    })
    .await;
    let name = |i: usize| format!("member-{i:03}-{}", "x".repeat(53));
    // Sorts before every member, so it is listed even in a truncated state.
    let marker = format!("0000-final-{}", "x".repeat(53));
    assert_eq!((name(0).len(), marker.len()), (64, 64));

    let (go_tx, go_rx) = tokio::sync::watch::channel(false);
    let server = &server;
    let joins = (0..MEMBERS).map(|i| {
        let (marker, go) = (marker.clone(), go_rx.clone());
        async move {
            let client = server.connect(&format!("/big?name={}", name(i))).await;
            // The leavers read until told to go; the stayers watch until the marker joins.
            if i >= STAYERS {
                (None, Some(tokio::spawn(read_until_told(client, go))))
            } else {
                (Some(tokio::spawn(follow_until(client, marker))), None)
            }
        }
    });
    let joined = tokio::time::timeout(BIG_WAIT, futures_util::future::join_all(joins))
        .await
        .expect("500 joins in time");
    let (stayers, leavers): (Vec<_>, Vec<_>) = joined.into_iter().unzip();
    let stayers: Vec<_> = stayers.into_iter().flatten().collect();
    let leavers: Vec<_> = leavers.into_iter().flatten().collect();
    server
        .wait_stats("all 500 joined", |s| s["rooms"]["big"] == MEMBERS)
        .await;

    go_tx.send(true).unwrap();
    for leaver in leavers {
        let client = within("a leaver", leaver).await.unwrap();
        client.expect("leaver still connected").close().await;
    }
    let remaining = STAYERS;
    server
        .wait_stats("the leavers gone", |s| s["rooms"]["big"] == remaining)
        .await;

    let mut last = server.connect(&format!("/big?name={marker}")).await;
    let state = last.recv_presence().await;
    assert_eq!(state["count"], remaining + 1, "{state}");
    assert_eq!(state["names"].as_array().unwrap().len(), remaining + 1);
    assert_eq!(state["names"][0], marker.as_str());
    assert!(state.get("more").is_none(), "{state}");

    let real: std::collections::HashSet<String> = (0..MEMBERS)
        .filter(|i| *i < STAYERS)
        .map(name)
        .chain([marker.clone()])
        .collect();
    let mut exact = 0;
    let mut still_here = Vec::new();
    for stayer in stayers {
        let (view, client) = tokio::time::timeout(BIG_WAIT, stayer)
            .await
            .expect("every member sees the last join")
            .unwrap()
            .unwrap_or_else(|e| panic!("a member was lost: {e}"));
        still_here.push(client);
        assert_eq!(view.count, remaining as u64 + 1, "{view:?}");
        let known = view.names();
        assert_eq!(known.len() + view.unnamed, remaining + 1, "{view:?}");
        let strangers: Vec<&&str> = known.iter().filter(|n| !real.contains(**n)).collect();
        assert!(
            strangers.is_empty(),
            "a view names someone not in the room: {strangers:?}"
        );
        if view.unnamed == 0 {
            assert_eq!(known.len(), real.len(), "a complete view has everyone once");
            exact += 1;
        }
    }
    assert_eq!(exact, remaining, "every view ends complete");
    let s = server.stats().await;
    assert_eq!(s["drops"]["slow_consumers"], 0, "{s}");
    assert_eq!(s["rooms"]["big"], remaining + 1);
    drop(still_here);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_changes_the_presence_format_of_every_room_at_once_and_joins_keep_it() {
    let (server, handle) = start_with_handle(|_| {}).await;
    let mut ann = server.connect("/f?name=ann").await;
    assert_eq!(
        ann.recv_presence().await["names"],
        serde_json::json!(["ann"])
    );

    let mut plain = common::test_config(&server.cert);
    plain.presence.format = PresenceFormat::Plain;
    handle.reload(plain).unwrap();
    // The room switches at once, with no join needed.
    assert_eq!(ann.recv().await, Message::text("1"));
    let _bob = server.connect("/f?name=bob").await;
    assert_eq!(ann.recv().await, Message::text("2"));

    // Back to JSON: everyone gets the state again, not a change against a state they never had.
    handle.reload(common::test_config(&server.cert)).unwrap();
    let state = ann.recv_presence().await;
    assert_eq!(state["names"], serde_json::json!(["ann", "bob"]), "{state}");
    server.stop().await;
}

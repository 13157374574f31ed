//! Recovery across the cluster (SPEC §4 "Recovery"): a numbered room (history and the JSON
//! envelope) takes its numbers and epoch from Redis, so every node shows the same number for the
//! same message, and `?since=` replays exactly what was missed on any node, a restarted one too.
//! Real `wsline` processes, a real `redis-server`, real TLS.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::collections::HashMap;
use std::time::Duration;

use common::daemon::Daemon;
use common::{Client, within};
use redis_server::{Redis, integer};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const KEY: &str = "recovery-test-key-0123456789abcdef";

/// A node of a numbered cluster: the JSON envelope, `history` messages kept, the backend API on,
/// and `relay`/`cluster` lines added.
fn node(redis: &Redis, id: &str, history: usize, relay: &str, cluster: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nnode_timeout = \"2s\"\n{cluster}\n\
         [relay]\nenvelope = \"json\"\nhistory = {history}\n{relay}\n\
         [limits]\nmessages_per_second = 100000\nburst = 100000\n\
         [api]\nkeys = [\"{KEY}\"]\n",
        redis.url()
    )
}

async fn start(config: &str) -> Daemon {
    let d = Daemon::start(config, &[]).await;
    d.wait_log("cluster connected").await;
    d
}

/// Reads presence until the member has seen the room's epoch and a count of `count`; the epoch.
async fn ready(c: &mut Client, count: u64) -> String {
    within(&format!("an epoch and count {count}"), async {
        let mut epoch = None;
        loop {
            let p = c.recv_presence().await;
            if let Some(e) = p["epoch"].as_str() {
                epoch = Some(e.to_owned());
            }
            if p["count"] == count
                && let Some(e) = &epoch
            {
                return e.clone();
            }
        }
    })
    .await
}

/// The next relayed message, parsed.
async fn next(c: &mut Client) -> Value {
    serde_json::from_str(c.recv_relayed().await.to_text().unwrap()).unwrap()
}

/// The next `n` relayed messages as (data, seq).
async fn take(c: &mut Client, n: usize) -> Vec<(String, u64)> {
    let mut got = Vec::with_capacity(n);
    let all = async {
        while got.len() < n {
            let m = c.recv_relayed().await;
            let text = m.to_text().unwrap();
            let m: Value =
                serde_json::from_str(text).unwrap_or_else(|_| panic!("not JSON: {text}"));
            let seq = m["seq"].as_u64().unwrap_or_else(|| panic!("no seq in {m}"));
            got.push((m["data"].as_str().unwrap().to_owned(), seq));
        }
    };
    if tokio::time::timeout(common::WAIT, all).await.is_err() {
        panic!("{n} messages, only got {}: {got:?}", got.len());
    }
    got
}

/// POSTs `text` to `room` through the backend API of `d`.
async fn api_publish(d: &Daemon, room: &str, text: &str) {
    let mut tls = d.tls().await;
    let request = format!(
        "POST /api/rooms/{room}/messages HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         Authorization: Bearer {KEY}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\n\r\n{text}",
        text.len()
    );
    tls.write_all(request.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let (status, _, body) = common::read_response(&mut tls).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_member_on_every_node_sees_one_number_per_message_with_no_hole() {
    let redis = Redis::start().await;
    let config = |id| node(&redis, id, 100, "echo = false", "");
    let (a, b) = (start(&config("a")).await, start(&config("b")).await);
    let mut a1 = a.connect("/r?name=a1").await;
    let mut a2 = a.connect("/r?name=a2").await;
    let mut b1 = b.connect("/r?name=b1").await;
    let epoch = ready(&mut a1, 3).await;
    assert_eq!(ready(&mut a2, 3).await, epoch, "one epoch on a node");
    assert_eq!(ready(&mut b1, 3).await, epoch, "one epoch across nodes");

    // Members on both nodes and the API through both nodes, all at once.
    const EACH: usize = 20;
    let sender = |mut c: Client, who: &'static str| {
        tokio::spawn(async move {
            for i in 0..EACH {
                c.send_text(&format!("{who} {i}")).await;
            }
            c
        })
    };
    let (ta, tb) = (sender(a1, "a1"), sender(b1, "b1"));
    for i in 0..EACH / 2 {
        api_publish(&a, "r", &format!("api-a {i}")).await;
        api_publish(&b, "r", &format!("api-b {i}")).await;
    }
    let (mut a1, mut b1) = (
        within("a1", ta).await.unwrap(),
        within("b1", tb).await.unwrap(),
    );
    // Two members and two halves of the API's share.
    let total = 3 * EACH;
    // a2 sent nothing: it sees every message, numbered 1..=total in order.
    let all = take(&mut a2, total).await;
    let seqs: Vec<u64> = all.iter().map(|(_, s)| *s).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>(), "{all:?}");
    let by_data: HashMap<&str, u64> = all.iter().map(|(d, s)| (d.as_str(), *s)).collect();
    for (c, who) in [(&mut a1, "a1"), (&mut b1, "b1")] {
        // Echo off: every message but its own, with the numbers a2 saw, in order.
        let got = take(c, total - EACH).await;
        assert!(
            got.iter().all(|(d, _)| !d.starts_with(who)),
            "{who}: {got:?}"
        );
        for (d, s) in &got {
            assert_eq!(by_data.get(d.as_str()), Some(s), "{who}: {d}");
        }
        assert!(got.windows(2).all(|w| w[0].1 < w[1].1), "{who}: {got:?}");
    }
    // Each sender's own order holds in the common order.
    for who in ["a1 ", "b1 ", "api-a ", "api-b "] {
        let mine: Vec<&str> = all
            .iter()
            .filter(|(d, _)| d.starts_with(who))
            .map(|(d, _)| &d[who.len()..])
            .collect();
        let expected: Vec<String> = (0..mine.len()).map(|i| i.to_string()).collect();
        assert_eq!(mine, expected, "{who}");
    }
    // The number is the last key of the envelope, as on one node.
    a1.send_text("last").await;
    let text = a2.recv_relayed().await.to_text().unwrap().to_owned();
    assert!(
        text.starts_with(r#"{"type":"message","room":"r","from":"a1","data":"last""#)
            && text.ends_with(&format!(r#","seq":{}}}"#, total + 1)),
        "{text}"
    );
}

/// Ann on `from` sees `first` messages from Sam on `b`, leaves; Sam sends 50 more. Returns Sam,
/// the epoch and the last number Ann saw.
async fn ann_leaves_then_sam_sends_fifty(from: &Daemon, b: &Daemon) -> (Client, String, u64) {
    let mut ann = from.connect("/r?name=ann").await;
    let mut sam = b.connect("/r?name=sam").await;
    let epoch = ready(&mut ann, 2).await;
    ready(&mut sam, 2).await;
    for i in 1..=5 {
        sam.send_text(&format!("m{i}")).await;
    }
    let seen = take(&mut ann, 5).await;
    assert_eq!(seen.last().unwrap().1, 5, "{seen:?}");
    ann.close().await;
    (sam, epoch, 5)
}

/// Sam sends m6..=m55 and reads his echoes (so every node has numbered them).
async fn sam_sends_fifty(sam: &mut Client) {
    for i in 6..=55 {
        sam.send_text(&format!("m{i}")).await;
    }
    let echoes = take(sam, 55).await;
    assert_eq!(echoes.last().unwrap(), &("m55".to_owned(), 55));
}

/// After `since`, exactly m6..=m55 in order, no notice, then the live marker next.
async fn exactly_the_fifty(back: &mut Client, sam: &mut Client) {
    let got = take(back, 50).await;
    let expected: Vec<(String, u64)> = (6..=55).map(|i| (format!("m{i}"), i)).collect();
    assert_eq!(got, expected);
    sam.send_text("marker").await;
    assert_eq!(
        take(back, 1).await,
        [("marker".to_owned(), 56)],
        "nothing twice"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_moving_to_another_node_with_since_gets_exactly_what_it_missed() {
    let redis = Redis::start().await;
    let config = |id| node(&redis, id, 100, "", "");
    let (a, b) = (start(&config("a")).await, start(&config("b")).await);
    let (mut sam, epoch, last) = ann_leaves_then_sam_sends_fifty(&a, &b).await;
    sam_sends_fifty(&mut sam).await;
    // Back through the other node, which has the room open (Sam is there). (Under another name:
    // node a's release of Ann's may not have reached Redis yet.)
    let mut back = b
        .connect(&format!("/r?name=anna&since={epoch}:{last}"))
        .await;
    exactly_the_fifty(&mut back, &mut sam).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_node_restart_since_gets_exactly_what_was_sent_meanwhile() {
    let redis = Redis::start().await;
    let config_a = node(&redis, "a", 100, "", "");
    let b = start(&node(&redis, "b", 100, "", "")).await;
    let mut a = start(&config_a).await;
    let (mut sam, epoch, last) = ann_leaves_then_sam_sends_fifty(&a, &b).await;
    // Node a dies; the fifty are sent while it is away; it comes back on the same address.
    let addr = a.addr;
    a.child.kill().await.unwrap();
    sam_sends_fifty(&mut sam).await;
    let a = Daemon::start_on(addr, &config_a).await;
    a.wait_log("cluster connected").await;
    // The restarted node has not read the room: the plan waits for its seed from Redis. (Under
    // another name: the dead instance may hold Ann's until it is swept, `node_timeout`.)
    let mut back = a
        .connect(&format!("/r?name=anna&since={epoch}:{last}"))
        .await;
    exactly_the_fifty(&mut back, &mut sam).await;
    // The room's epoch as the restarted node shows it is the cluster's.
    let mut cid = a.connect("/r").await;
    assert_eq!(ready(&mut cid, 3).await, epoch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_since_beyond_history_gets_the_history_notice_and_after_expiry_the_epoch_notice() {
    let redis = Redis::start().await;
    let config = |id| node(&redis, id, 5, "", "history_ttl = \"1s\"");
    let (a, b) = (start(&config("a")).await, start(&config("b")).await);
    let (mut sam, epoch, last) = ann_leaves_then_sam_sends_fifty(&a, &b).await;
    sam_sends_fifty(&mut sam).await;
    // The room reopens on a: history keeps 5 of the 50.
    let mut back = a
        .connect(&format!("/r?name=ann&since={epoch}:{last}"))
        .await;
    assert_eq!(
        next(&mut back).await,
        json!({"type":"gap","room":"r","epoch":epoch,"since":format!("{epoch}:{last}"),"reason":"history"})
    );
    let got: Vec<u64> = take(&mut back, 5).await.iter().map(|(_, s)| *s).collect();
    assert_eq!(got, [51, 52, 53, 54, 55], "then what history has");
    // Everyone leaves: the room's numbers expire with its history.
    back.close().await;
    sam.close().await;
    within("the seq hash to expire", async {
        while integer(&redis.command(&["EXISTS", "wsline:seq:r"]).await) != 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let mut late = b.connect(&format!("/r?name=ann&since={epoch}:55")).await;
    let notice = next(&mut late).await;
    assert_eq!(
        (notice["type"].clone(), notice["reason"].clone()),
        (json!("gap"), json!("epoch")),
        "{notice}"
    );
    let fresh = notice["epoch"].as_str().unwrap().to_owned();
    assert_ne!(fresh, epoch);
    assert_eq!(
        ready(&mut late, 1).await,
        fresh,
        "the notice names the new epoch"
    );
    late.send_text("anew").await;
    assert_eq!(take(&mut late, 1).await, [("anew".to_owned(), 1)]);
}

async fn health(d: &Daemon) -> String {
    d.http("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_redis_down_messages_stay_local_unnumbered_and_an_emptied_redis_starts_the_room_over()
{
    let mut redis = Redis::start().await;
    let a = start(&node(&redis, "a", 100, "", "")).await;
    let mut ann = a.connect("/r?name=ann").await;
    let mut bob = a.connect("/r?name=bob").await;
    let epoch = ready(&mut ann, 2).await;
    assert_eq!(ready(&mut bob, 2).await, epoch);
    ann.send_text("one").await;
    assert_eq!(take(&mut bob, 1).await, [("one".to_owned(), 1)]);

    redis.stop().await;
    within("a to notice redis is gone", async {
        while !health(&a).await.contains("degraded") {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Not lost: delivered here, without a number (no `since` can recover it), and counted.
    ann.send_text("down").await;
    let m = next(&mut bob).await;
    assert_eq!((&m["data"], m.get("seq")), (&json!("down"), None), "{m}");
    let (_, _, stats) = a
        .http("GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    let stats: Value = serde_json::from_str(&stats).unwrap();
    assert!(
        stats["cluster"]["unnumbered"].as_u64() >= Some(1),
        "{stats}"
    );
    let (_, _, metrics) = a
        .http("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert!(
        metrics.contains("wsline_cluster_unnumbered_messages_total 1"),
        "{metrics}"
    );

    // Redis comes back empty: the room's numbers start over under a new epoch, which the members
    // are told in a new presence state.
    redis.restart().await;
    within("a to reconnect", async {
        while health(&a).await != "ok\n" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let fresh = ready(&mut bob, 2).await;
    assert_ne!(fresh, epoch);
    ann.send_text("two").await;
    assert_eq!(take(&mut bob, 1).await, [("two".to_owned(), 1)]);
    // And a since from the old run is told so.
    let mut cid = a.connect(&format!("/r?since={epoch}:1")).await;
    assert_eq!(next(&mut cid).await["reason"], "epoch");
}

//! The cluster at production scale and under Redis faults (SPEC §6, "At scale"): real
//! `redis-server` processes reached through a delaying TCP proxy (one hop away), real `wsline`
//! nodes, thousands of rooms. The bulk members of the 10 000 rooms are bare WebSocket upgrades on
//! plain TCP (node A runs with `tls.enabled = false`): 10 000 TLS handshakes would take most of
//! the test's time on two cores and prove nothing about the cluster. The members the test talks
//! to on node B use real TLS.

mod common;
#[path = "common/proxy.rs"]
#[allow(dead_code)]
mod proxy;
#[path = "common/redis.rs"]
mod redis_server;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{Client, TestCert, within};
use futures_util::{SinkExt, StreamExt};
use proxy::Proxy;
use redis_server::{Redis, Sentinel};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

/// One hop: each direction of every connection to Redis is held this long.
const HOP: Duration = Duration::from_millis(1);

/// The per-connection queue of the nodes (loose: floods are read by the test's clients).
const QUEUE: &str = "queue_messages = 20000\nqueue_bytes = \"16MiB\"";

/// A node's whole configuration file: cluster on `redis`, TLS on or off, loose limits but the
/// per-connection `queue`, and `extra` keys of `[relay]`.
fn config(
    redis: &str,
    id: &str,
    tls: bool,
    node_timeout: &str,
    queue: &str,
    extra: &str,
) -> impl FnOnce(&TestCert) -> String {
    let (queue, node_timeout) = (queue.to_owned(), node_timeout.to_owned());
    let (redis, id, extra) = (redis.to_owned(), id.to_owned(), extra.to_owned());
    move |cert: &TestCert| {
        let tls = if tls {
            format!("cert = {:?}\nkey = {:?}", cert.cert_path, cert.key_path)
        } else {
            "enabled = false".to_owned()
        };
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"5s\"\n[tls]\n{tls}\n\
             [cluster]\nredis = \"{redis}\"\nnode_id = \"{id}\"\nnode_timeout = \"{node_timeout}\"\n\
             [limits]\nmax_connections_per_ip = 20000\nmessages_per_second = 100000\n\
             burst = 100000\n{queue}\n\
             [relay]\nmax_rooms = 20000\n{extra}"
        )
    }
}

async fn start(redis: &str, id: &str, tls: bool, extra: &str) -> Daemon {
    start_queued(redis, id, tls, QUEUE, extra).await
}

async fn start_queued(redis: &str, id: &str, tls: bool, queue: &str, extra: &str) -> Daemon {
    start_timed(redis, id, tls, "5s", queue, extra).await
}

/// A node with its own `node_timeout` (the fault tests keep Redis away for seconds without the
/// node being swept: what they prove must not be the sweep's doing).
async fn start_timed(
    redis: &str,
    id: &str,
    tls: bool,
    node_timeout: &str,
    queue: &str,
    extra: &str,
) -> Daemon {
    let d =
        Daemon::start_custom(config(redis, id, tls, node_timeout, queue, extra), &[], &[]).await;
    d.wait_log("cluster connected").await;
    d
}

/// The instance id a node logged when it connected (`instance=ID`).
fn instance(d: &Daemon) -> String {
    let log = d.log();
    let at = log.find("instance=").expect("an instance in the log") + "instance=".len();
    log[at..].split_whitespace().next().unwrap().to_owned()
}

/// Raises this process's soft open-files limit (inherited by the daemons it starts).
fn raise_open_files(needed: u64) {
    let got = rlimit::increase_nofile_limit(needed).unwrap();
    assert!(
        got >= needed,
        "{needed} open files are needed, the hard limit allows {got}"
    );
}

/// The daemon's own soft open-files limit, from /proc.
fn daemon_open_files(d: &Daemon) -> u64 {
    let pid = d.child.id().unwrap();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

/// A bare member: the upgrade on plain TCP, then the socket is only held (never read).
async fn bare_member(addr: SocketAddr, room: &str) -> TcpStream {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "GET /{room} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 256];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(n > 0, "upgrade of /{room} closed");
        head.extend_from_slice(&buf[..n]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "upgrade of /{room} refused"
    );
    tcp
}

/// `count` bare members, one per room `r0`..; `skip` rooms get none (the test puts real
/// clients there). Many at once, but bounded.
async fn bare_members(addr: SocketAddr, count: usize, skip: &[usize]) -> Vec<TcpStream> {
    let rooms: Vec<usize> = (0..count).filter(|i| !skip.contains(i)).collect();
    tokio::time::timeout(
        Duration::from_secs(60),
        futures_util::stream::iter(rooms)
            .map(|i| async move { bare_member(addr, &format!("r{i}")).await })
            .buffer_unordered(64)
            .collect::<Vec<_>>(),
    )
    .await
    .expect("bare members connected within 60 s")
}

/// A WebSocket on plain TCP (node A has no TLS).
struct Plain {
    ws: tokio_tungstenite::WebSocketStream<TcpStream>,
}

impl Plain {
    async fn connect(addr: SocketAddr, path: &str) -> Plain {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let url = format!("ws://{addr}{path}");
        let (ws, _) = within("a plain upgrade", tokio_tungstenite::client_async(url, tcp))
            .await
            .unwrap();
        Plain { ws }
    }

    async fn recv(&mut self) -> Message {
        within("a message", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(m)) if m.is_text() || m.is_binary() => return m,
                    Some(Ok(_)) => {}
                    other => panic!("connection ended: {other:?}"),
                }
            }
        })
        .await
    }

    async fn send_text(&mut self, text: &str) {
        within("send", self.ws.send(Message::text(text)))
            .await
            .unwrap();
    }
}

/// The body of a GET on a node without TLS.
async fn plain_get(addr: SocketAddr, path: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    within("an HTTP response", tcp.read_to_end(&mut response))
        .await
        .unwrap();
    let response = String::from_utf8(response).unwrap();
    let (_, body) = response.split_once("\r\n\r\n").unwrap();
    body.to_owned()
}

fn presence(m: &Message) -> Option<Value> {
    common::is_presence(m).then(|| serde_json::from_str(m.to_text().unwrap()).unwrap())
}

/// Redis's answer to `SCARD key`, through a direct connection (not the proxy).
async fn scard(redis: &Redis, key: &str) -> u64 {
    card(redis, "SCARD", key).await
}

/// Redis's answer to a cardinality command (`SCARD`, `ZCARD`) on `key`.
async fn card(redis: &Redis, command: &str, key: &str) -> u64 {
    let reply = redis.command(&[command, key]).await;
    reply
        .trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Waits (bounded by `limit`) until node `instance` has a presence entry in `rooms` rooms;
/// returns how long it took.
async fn synced(redis: &Redis, instance: &str, rooms: u64, limit: Duration) -> Duration {
    let key = format!("wsline:node:{instance}:rooms");
    let t0 = Instant::now();
    tokio::time::timeout(limit, async {
        while scard(redis, &key).await < rooms {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{instance} did not write {rooms} rooms within {limit:?}"));
    t0.elapsed()
}

/// Sends from `from` (on B) until `to` (on A) gets it: cross-node relay works; bounded.
async fn relay_works(from: &mut Client, to: &mut Plain, tag: &str, limit: Duration) {
    let t0 = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let text = format!("{tag} {n}");
        from.send_text(&text).await;
        let got = tokio::time::timeout(Duration::from_millis(500), async {
            loop {
                let m = to.recv().await;
                if m.to_text().is_ok_and(|t| t.starts_with(tag)) {
                    return;
                }
            }
        })
        .await;
        if got.is_ok() {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "relay {tag:?} from B to A did not resume within {limit:?}"
        );
    }
}

/// Reads presence on `c` until its count is `n` (bounded).
async fn plain_count(c: &mut Plain, n: u64) {
    within(&format!("count {n} on A"), async {
        loop {
            if let Some(p) = presence(&c.recv().await)
                && p["count"] == n
            {
                return;
            }
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rooms_with_redis_one_hop_away_sync_relay_and_survive_a_restart() {
    const ROOMS: usize = 10_000;
    let checked = [0, ROOMS / 2, ROOMS - 1];
    raise_open_files(ROOMS as u64 + 2_000);
    let mut redis = Redis::start().await;
    let hop = Proxy::start(([127, 0, 0, 1], redis.port).into(), HOP).await;
    let a = start(&hop.url(), "a", false, "history = 10").await;
    let b = start(&hop.url(), "b", true, "history = 10").await;
    assert!(daemon_open_files(&a) >= ROOMS as u64 + 1_000);
    let a_id = instance(&a);

    // The checked rooms: a real client on A first, then 10 000 rooms in all.
    let mut on_a = Vec::new();
    for i in checked {
        on_a.push(Plain::connect(a.addr, &format!("/r{i}")).await);
    }
    let t0 = Instant::now();
    let _bulk = bare_members(a.addr, ROOMS, &checked).await;
    let opened = t0.elapsed();
    let sync = synced(&redis, &a_id, ROOMS as u64, Duration::from_secs(20)).await;
    eprintln!(
        "{ROOMS} rooms opened on A in {opened:?}; A's presence in all of them {sync:?} later (Redis {HOP:?} away each way)"
    );
    // The index of rooms (the backend API's room list) holds each of them once.
    assert_eq!(card(&redis, "ZCARD", "wsline:rooms").await, ROOMS as u64);

    // A joiner on B sees the cluster-wide count in its first state; relay crosses both ways.
    let mut on_b = Vec::new();
    for (k, i) in checked.into_iter().enumerate() {
        let mut c = b.connect(&format!("/r{i}")).await;
        let first = c.recv_presence().await;
        assert_eq!(first["count"], 2, "first state of r{i} on B: {first}");
        plain_count(&mut on_a[k], 2).await;
        c.send_text(&format!("from b to r{i}")).await;
        assert_eq!(
            on_a[k].recv().await,
            Message::text(format!("from b to r{i}"))
        );
        // Echo is on: B's client gets its own message back first.
        assert_eq!(
            c.recv_relayed().await,
            Message::text(format!("from b to r{i}"))
        );
        on_a[k].send_text(&format!("from a to r{i}")).await;
        assert_eq!(
            c.recv_relayed().await,
            Message::text(format!("from a to r{i}"))
        );
        on_b.push(c);
    }
    // Alive all along: never swept, its liveness never late.
    assert!(!b.log().contains("cluster node timed out"), "{}", b.log());
    assert!(!a.log().contains("liveness key had expired"), "{}", a.log());
    assert!(!a.log().contains("cluster degraded"), "{}", a.log());

    // Redis restarts empty: within 20 s, A is in every room again and relay works in all three.
    let t0 = Instant::now();
    redis.restart().await;
    let resync = synced(&redis, &a_id, ROOMS as u64, Duration::from_secs(20)).await;
    assert_eq!(
        card(&redis, "ZCARD", "wsline:rooms").await,
        ROOMS as u64,
        "the index of rooms is written again with the entries"
    );
    for (k, i) in checked.into_iter().enumerate() {
        let left = Duration::from_secs(20).saturating_sub(t0.elapsed());
        relay_works(&mut on_b[k], &mut on_a[k], &format!("again r{i}"), left).await;
    }
    let back = t0.elapsed();
    eprintln!(
        "after a Redis restart: A's presence in all {ROOMS} rooms after {resync:?}, relay in the checked rooms after {back:?}"
    );
    assert!(back < Duration::from_secs(20), "{back:?}");
    for (k, i) in checked.into_iter().enumerate() {
        let p = within("B's count back to 2", async {
            loop {
                let p = on_b[k].recv_presence().await;
                if p["count"] == 2 {
                    return p;
                }
            }
        })
        .await;
        assert_eq!(p["count"], 2, "r{i}");
    }
    assert!(!b.log().contains("cluster node timed out"), "{}", b.log());
}

/// Whether a member named `name` gets into `room` on `d`: its first message is presence (in),
/// or a close `name taken` (out).
async fn name_free(d: &Daemon, room: &str, name: &str) -> Option<Client> {
    let mut c = d.connect(&format!("/{room}?name={name}")).await;
    match c.recv().await {
        Message::Text(t) if t.starts_with("{\"type\":\"presence\"") => Some(c),
        Message::Close(Some(f)) => {
            assert_eq!(&*f.reason, "name taken");
            None
        }
        other => panic!("unexpected {other:?}"),
    }
}

/// Tries the name on `d` until it is free; fails past `limit`.
async fn free_within(d: &Daemon, room: &str, name: &str, limit: Duration) -> Duration {
    let t0 = Instant::now();
    loop {
        if name_free(d, room, name).await.is_some() {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < limit,
            "{name:?} in {room:?} still taken {limit:?} after Redis came back; the node's log:\n{}",
            d.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The field's value of a hash, through a direct connection (`$-1` when absent).
async fn hget(redis: &Redis, key: &str, field: &str) -> String {
    redis.command(&["HGET", key, field]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_released_while_redis_is_unreachable_is_free_again_once_it_is_back() {
    let redis = Redis::start().await;
    let hop = Proxy::start(([127, 0, 0, 1], redis.port).into(), HOP).await;
    let a = start_timed(&hop.url(), "a", true, "20s", QUEUE, "").await;
    let b = start_timed(&hop.url(), "b", true, "20s", QUEUE, "").await;
    let alice = name_free(&a, "n", "alice")
        .await
        .expect("alice gets in on A");
    assert!(name_free(&b, "n", "alice").await.is_none(), "held on A");
    assert!(
        hget(&redis, "wsline:names:n", "alice")
            .await
            .contains(&instance(&a))
    );

    // The route to Redis is lost for 4 s (Redis keeps its data: longer than any one attempt to
    // reach it, shorter than node_timeout); alice leaves meanwhile.
    hop.cut();
    a.wait_log("cluster degraded").await;
    alice.close().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    hop.restore();
    let freed = free_within(&b, "n", "alice", Duration::from_secs(10)).await;
    eprintln!(
        "a name released while Redis was unreachable: free on B {freed:?} after the route came back"
    );
    // Freed by A's release, not by a sweep of A.
    assert!(!b.log().contains("cluster node timed out"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_released_behind_a_full_publish_queue_is_free_again() {
    const FLOODERS: usize = 4;
    const MESSAGES: usize = 25_000;
    let redis = Redis::start().await;
    let hop = Proxy::start(([127, 0, 0, 1], redis.port).into(), HOP).await;
    let a = start_timed(&hop.url(), "a", true, "20s", QUEUE, "echo = false").await;
    let b = start_timed(&hop.url(), "b", true, "20s", QUEUE, "echo = false").await;
    let alice = name_free(&a, "n", "alice")
        .await
        .expect("alice gets in on A");
    let mut flooders = Vec::new();
    for i in 0..FLOODERS {
        let mut c = a.connect(&format!("/f{i}")).await;
        c.recv_presence().await;
        flooders.push(c);
    }

    // Redis stalls (nothing forwarded) while 100 000 messages are published on A: its publish
    // queue (65 536 messages) fills and drops; alice leaves behind the burst.
    hop.forward(false);
    let sent: Vec<_> = flooders
        .into_iter()
        .map(|mut c| {
            tokio::spawn(async move {
                for n in 0..MESSAGES {
                    c.send_text(&n.to_string()).await;
                }
                c
            })
        })
        .collect();
    let mut flooders = Vec::new();
    for s in sent {
        flooders.push(within("a flood sent", s).await.unwrap());
    }
    within("dropped messages in /stats", async {
        loop {
            let (_, _, body) = a
                .http("GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await;
            let stats: Value = serde_json::from_str(&body).unwrap();
            if stats["cluster"]["dropped"].as_u64() > Some(0) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    alice.close().await;
    hop.forward(true);
    let freed = free_within(&b, "n", "alice", Duration::from_secs(10)).await;
    eprintln!(
        "a name released behind a full publish queue: free on B {freed:?} after Redis answered again"
    );
    assert!(!b.log().contains("cluster node timed out"), "{}", b.log());
    drop(flooders);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_during_traffic_resumes_relay_with_nothing_delivered_twice() {
    let mut primary = Redis::start().await;
    let replica = Redis::start_replica(&primary).await;
    let sentinel = Sentinel::start("relay", &primary).await;
    // The sentinel has found the replica (through the primary) before the primary dies.
    within("the sentinel to know the replica", async {
        let port = replica.port.to_string();
        while !sentinel
            .command(&["SENTINEL", "REPLICAS", "relay"])
            .await
            .contains(&port)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let url = format!("redis+sentinel://127.0.0.1:{}/relay", sentinel.port);
    let a = start(&url, "a", true, "").await;
    let b = start(&url, "b", true, "").await;
    let mut sender = a.connect("/s").await;
    let mut receiver = b.connect("/s").await;
    within("both in the room", async {
        while receiver.recv_presence().await["count"] != 2 {}
    })
    .await;

    // Numbered messages every 20 ms from A while the primary is killed; B notes what arrives.
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let sending = tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            sender.send_text(&n.to_string()).await;
            n += 1;
            tokio::select! {
                _ = &mut stop_rx => return (sender, n),
                _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    });
    let first: u64 = receiver
        .recv_relayed()
        .await
        .to_text()
        .unwrap()
        .parse()
        .unwrap();
    let t0 = Instant::now();
    primary.stop().await;
    let mut got: Vec<u64> = vec![first];
    let mut resumed = None;
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = receiver.recv_relayed().await;
            let n: u64 = m.to_text().unwrap().parse().unwrap();
            // A message sent after the kill arrived: relay resumed through the new primary.
            if resumed.is_none() && got.last().is_some_and(|&last| n > last + 10) {
                resumed = Some(t0.elapsed());
            }
            got.push(n);
            if resumed.is_some_and(|r| t0.elapsed() > r + Duration::from_secs(1)) {
                return;
            }
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "relay did not resume within 30 s of the primary's death; received {got:?}\nA: {}\nB: {}",
            a.log(),
            b.log()
        )
    });
    let _ = stop_tx.send(());
    let _ = sending.await;
    let resumed = resumed.unwrap();
    eprintln!(
        "failover: relay across nodes resumed {resumed:?} after the primary was killed (sentinel down-after 1 s); {} messages received",
        got.len()
    );
    assert!(
        got.windows(2).all(|w| w[0] < w[1]),
        "in order and never twice: {got:?}"
    );
    assert!(
        sentinel
            .command(&["SENTINEL", "GET-MASTER-ADDR-BY-NAME", "relay"])
            .await
            .contains(&replica.port.to_string()),
        "the replica is the primary now"
    );
}

/// What node A may grow by in the burst test: the receive path's documented bounds (docs/cluster.md: the receive queue, 16 MiB of payload, and the messages held for rooms whose
/// history is being read, 16 MiB), the outboxes of the 20 flooded members (4 MiB each), and
/// 16 MiB of slack for the allocator and the connections' buffers.
const BURST_BOUND_KIB: u64 = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_from_another_node_while_this_one_syncs_stays_within_the_receive_bound() {
    const ROOMS: usize = 2_000;
    const SENDERS: usize = 20;
    const MESSAGES: usize = 2_000;
    const SIZE: usize = 4 * 1024;
    raise_open_files(ROOMS as u64 + 2_000);
    let redis = Redis::start().await;
    let hop = Proxy::start(([127, 0, 0, 1], redis.port).into(), HOP).await;
    // A's members never read: their outboxes are kept small, so what A holds is the receive path.
    let a = start_queued(
        &hop.url(),
        "a",
        false,
        "queue_messages = 20000\nqueue_bytes = \"4MiB\"",
        "history = 10",
    )
    .await;
    let b = start(&hop.url(), "b", true, "echo = false\nhistory = 10").await;
    let (rss_before, _) = a.rss_kib();

    // B's senders flood rooms r0..r19 while A opens 2 000 rooms, those among them (their
    // members on A read what they can; one that falls 4 MiB behind is evicted, as on one node).
    let flooded: Vec<usize> = (0..SENDERS).collect();
    let (stop_readers, stop) = tokio::sync::watch::channel(false);
    let mut readers = Vec::new();
    for i in 0..SENDERS {
        let mut c = Plain::connect(a.addr, &format!("/r{i}")).await;
        let mut stop = stop.clone();
        readers.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                tokio::select! {
                    _ = stop.changed() => return n,
                    m = c.ws.next() => match m {
                        Some(Ok(m)) => n += u64::from(m.is_binary()),
                        _ => return n,
                    },
                }
            }
        }));
    }
    let mut senders = Vec::new();
    for i in 0..SENDERS {
        let mut c = b.connect(&format!("/r{i}")).await;
        c.recv_presence().await;
        senders.push(tokio::spawn(async move {
            let payload = Message::binary(vec![b'x'; SIZE]);
            for _ in 0..MESSAGES {
                c.send(payload.clone()).await;
            }
            c
        }));
    }
    let _bulk = bare_members(a.addr, ROOMS, &flooded).await;
    for s in senders {
        tokio::time::timeout(Duration::from_secs(60), s)
            .await
            .expect("the burst is sent within 60 s")
            .unwrap();
    }
    let bulk_rooms = (ROOMS - SENDERS) as u64;
    synced(&redis, &instance(&a), bulk_rooms, Duration::from_secs(20)).await;
    let (rss_after, peak) = a.rss_kib();
    let metrics = plain_get(a.addr, "/metrics").await;
    let metric = |name: &str| -> u64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in /metrics:\n{metrics}"))
    };
    let received = metric("wsline_cluster_received_messages_total");
    let dropped = metric("wsline_cluster_receive_dropped_messages_total");
    eprintln!(
        "burst of {} x {SIZE} B from B into A's rooms while A opened {ROOMS}: A received {received}, dropped {dropped} at its receive queue; RSS {rss_before} KiB -> {rss_after} KiB, peak {peak} KiB",
        SENDERS * MESSAGES
    );
    assert!(
        received + dropped > 0,
        "the burst reached A (received {received}, dropped {dropped})"
    );
    assert!(
        peak < rss_before + BURST_BOUND_KIB,
        "A's peak RSS {peak} KiB is over {rss_before} KiB + {BURST_BOUND_KIB} KiB"
    );
    stop_readers.send_replace(true);
    let mut delivered = 0;
    for r in readers {
        delivered += within("a reader to finish", r).await.unwrap();
    }
    eprintln!("delivered to A's members: {delivered}");
    assert!(delivered > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_gone_while_its_name_claim_is_in_flight_leaves_no_claim() {
    let redis = Redis::start().await;
    // Redis slow enough that the claim is still on its way when the client goes.
    let hop = Proxy::start(
        ([127, 0, 0, 1], redis.port).into(),
        Duration::from_millis(150),
    )
    .await;
    let a = start(&hop.url(), "a", true, "").await;
    let b = start(&hop.url(), "b", true, "").await;
    for i in 0..5 {
        let mut tls = a.tls().await;
        let request = common::upgrade_request(&format!("/d?name=dan{i}"), "");
        tls.write_all(request.as_bytes()).await.unwrap();
        tls.flush().await.unwrap();
        drop(tls);
    }
    for i in 0..5 {
        free_within(&b, "d", &format!("dan{i}"), Duration::from_secs(10)).await;
    }
    let claims = redis.command(&["HGETALL", "wsline:names:d"]).await;
    assert!(
        !claims.contains(&instance(&a)),
        "a claim of A left: {claims}"
    );
}

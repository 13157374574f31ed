//! Several nodes joined by a real Redis (SPEC §6): each test starts its own `redis-server` on a
//! free loopback port and real `wsline` processes, so SIGKILL and SIGTERM are real.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{Client, within};
use futures_util::SinkExt;
use redis_server::{Redis, integer};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// A node's configuration: the cluster on `redis`, a short node timeout, and limits loose enough
/// for floods.
fn node(redis: &str, id: &str, prefix: &str, timeout: &str, extra: &str) -> String {
    format!(
        "[cluster]\nredis = \"{redis}\"\nnode_id = \"{id}\"\nprefix = \"{prefix}\"\n\
         node_timeout = \"{timeout}\"\n\
         [limits]\nmessages_per_second = 100000\nburst = 100000\nqueue_messages = 20000\n\
         queue_bytes = \"16MiB\"\n{extra}"
    )
}

async fn start_node(redis: &Redis, id: &str) -> Daemon {
    let d = Daemon::start(&node(&redis.url(), id, "wsline", "2s", ""), &[]).await;
    d.wait_log("cluster connected").await;
    d
}

/// Reads presence until `pred` holds; returns that message.
async fn presence_until(c: &mut Client, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
    within(what, async {
        loop {
            let p = c.recv_presence().await;
            if pred(&p) {
                return p;
            }
        }
    })
    .await
}

async fn count_is(c: &mut Client, n: u64) -> Value {
    presence_until(c, &format!("count {n}"), |p| p["count"] == n).await
}

async fn health(d: &Daemon) -> (u16, String) {
    let (status, _, body) = d
        .http("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    (status, body)
}

async fn stats(d: &Daemon) -> Value {
    let (_, _, body) = d
        .http("GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    serde_json::from_str(&body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_cross_nodes_with_opcode_and_bytes_once_each() {
    let redis = Redis::start().await;
    let (a, b) = (start_node(&redis, "a").await, start_node(&redis, "b").await);
    let mut on_a = a.connect("/r1").await;
    let mut on_b = b.connect("/r1").await;
    count_is(&mut on_a, 2).await;
    count_is(&mut on_b, 2).await;

    let binary = Message::binary(vec![0u8, 255, 10, 13, 0, 128]);
    on_a.send(binary.clone()).await;
    on_a.send_text("héllo from a").await;
    assert_eq!(on_b.recv_relayed().await, binary);
    assert_eq!(on_b.recv_relayed().await, Message::text("héllo from a"));
    // Echo as on one node: the sender gets its own messages once, from its own node.
    assert_eq!(on_a.recv_relayed().await, binary);
    assert_eq!(on_a.recv_relayed().await, Message::text("héllo from a"));
    on_b.send_text("from b").await;
    assert_eq!(on_a.recv_relayed().await, Message::text("from b"));
    assert_eq!(on_b.recv_relayed().await, Message::text("from b"));
    // Nothing twice: the next thing each sees is a fresh marker.
    on_b.send_text("marker").await;
    assert_eq!(on_a.recv_relayed().await, Message::text("marker"));
    assert_eq!(on_b.recv_relayed().await, Message::text("marker"));

    // Foreign or broken payloads on a room's channel are ignored, not relayed, not fatal.
    for junk in [
        "hello",
        "\u{1}T\u{9}ab",
        "\u{2}Tx",
        "\u{1}Z\u{0}x",
        "\u{1}H\u{3}x-y",
    ] {
        let receivers = redis.command(&["PUBLISH", "wsline:room:r1", junk]).await;
        assert_eq!(receivers.trim(), ":2", "both nodes subscribed: {receivers}");
    }
    on_a.send_text("after junk").await;
    assert_eq!(on_b.recv_relayed().await, Message::text("after junk"));
    assert_eq!(on_a.recv_relayed().await, Message::text("after junk"));

    // A room with no member on a node costs that node nothing.
    let _elsewhere = a.connect("/r2").await;
    let mut other = b.connect("/r3").await;
    other.send_text("r3 only").await;
    assert_eq!(other.recv_relayed().await, Message::text("r3 only"));
    let s = stats(&a).await;
    assert_eq!(s["cluster_state"], "up", "{s}");
    assert!(
        s["cluster"]["received"].as_u64().unwrap() == 2,
        "node a received only r1's two messages from b: {s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_sender_order_holds_for_10000_messages_across_nodes() {
    let redis = Redis::start().await;
    let (a, b) = (start_node(&redis, "a").await, start_node(&redis, "b").await);
    let mut rx = b.connect("/order").await;
    let mut tx = a.connect("/order").await;
    count_is(&mut tx, 2).await;
    count_is(&mut rx, 2).await;
    const N: usize = 10_000;
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let m = rx.recv_relayed().await;
            assert_eq!(
                m.to_text().unwrap(),
                i.to_string(),
                "message {i} out of order"
            );
        }
    });
    let started = Instant::now();
    for i in 0..N {
        tx.ws.feed(Message::text(i.to_string())).await.unwrap();
    }
    tx.ws.flush().await.unwrap();
    within("10 000 messages across nodes", reader)
        .await
        .unwrap();
    eprintln!(
        "10 000 messages across two nodes in {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_totals_and_names_span_three_nodes() {
    let redis = Redis::start().await;
    let nodes = [
        start_node(&redis, "n1").await,
        start_node(&redis, "n2").await,
        start_node(&redis, "n3").await,
    ];
    // Written with n3's count before the members below join, so their messages carry it.
    let mut elsewhere = nodes[2].connect("/other").await;
    elsewhere.recv_presence().await;
    let mut alice = nodes[0].connect("/c?name=alice").await;
    let mut bob = nodes[1].connect("/c?name=bob").await;
    let mut carol = nodes[2].connect("/c?name=carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        let p = presence_until(c, "3 members of 4 connections", |p| {
            p["count"] == 3 && p["total"] == 4
        })
        .await;
        let _ = p;
    }
    // A new member's state names everyone, wherever they are.
    let mut dave = nodes[1].connect("/c?name=dave").await;
    let state = presence_until(&mut dave, "dave's state", |p| p["count"] == 4).await;
    assert_eq!(
        state["names"],
        serde_json::json!(["alice", "bob", "carol", "dave"]),
        "{state}"
    );
    assert_eq!(state["total"], 5);
    // A name held on another node is taken here too (NFKC case-folded).
    let mut again = nodes[2].connect("/c?name=ALICE").await;
    let close = again.closed().await;
    assert_eq!(
        (close.code, &*close.reason),
        (CloseCode::Policy, "name taken")
    );
    // A leave on one node is a change on the others.
    bob.close().await;
    let p = presence_until(&mut alice, "bob left", |p| p["count"] == 3).await;
    assert_eq!(p["left"], serde_json::json!(["bob"]), "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_raced_on_two_nodes_has_exactly_one_winner() {
    let redis = Redis::start().await;
    let (a, b) = (start_node(&redis, "a").await, start_node(&redis, "b").await);
    for i in 0..100 {
        let path = format!("/race?name=racer{i}");
        let (x, y) = tokio::join!(a.connect(&path), b.connect(&path));
        let mut outcomes = Vec::new();
        for mut c in [x, y] {
            let first = c.recv().await;
            let won = match first {
                Message::Text(t) if t.starts_with("{\"type\":\"presence\"") => true,
                Message::Close(Some(f)) => {
                    assert_eq!((f.code, &*f.reason), (CloseCode::Policy, "name taken"));
                    false
                }
                other => panic!("try {i}: unexpected {other:?}"),
            };
            outcomes.push((won, c));
        }
        let winners = outcomes.iter().filter(|(w, _)| *w).count();
        assert_eq!(
            winners, 1,
            "try {i}: exactly one of two racers gets the name"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_leaves_every_count_within_node_timeout_and_a_restart_leaves_no_phantoms() {
    let redis = Redis::start().await;
    let a = start_node(&redis, "a").await;
    let mut b = start_node(&redis, "b").await;
    let mut watcher = a.connect("/k?name=watcher").await;
    let _b1 = b.connect("/k?name=b1").await;
    let _b2 = b.connect("/k").await;
    presence_until(&mut watcher, "3 members", |p| p["count"] == 3).await;

    let killed = Instant::now();
    b.signal("-KILL");
    let _ = b.child.wait().await;
    let p = presence_until(&mut watcher, "b's members to go", |p| p["count"] == 1).await;
    let took = killed.elapsed();
    eprintln!("members of the killed node gone after {took:?} (node_timeout 2s)");
    assert!(
        took <= Duration::from_secs(3),
        "node_timeout 2s + 1s, took {took:?}"
    );
    assert_eq!(p["total"], 1, "{p}");
    assert_eq!(p["left"], serde_json::json!(["b1"]), "{p}");
    // b1's name was freed by the sweep.
    let b_again = start_node(&redis, "b").await;
    let mut b1 = b_again.connect("/k?name=b1").await;
    let p = presence_until(&mut b1, "the restarted node's view", |p| p["count"] == 2).await;
    assert_eq!(p["total"], 2, "no phantom from the killed instance: {p}");
    presence_until(&mut watcher, "b1 back", |p| {
        p["count"] == 2 && p["total"] == 2
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_leaves_every_count_at_once() {
    let redis = Redis::start().await;
    // A long node timeout: only an explicit leave can be this fast.
    let a = Daemon::start(&node(&redis.url(), "a", "wsline", "30s", ""), &[]).await;
    let mut b = Daemon::start(&node(&redis.url(), "b", "wsline", "30s", ""), &[]).await;
    a.wait_log("cluster connected").await;
    b.wait_log("cluster connected").await;
    let mut watcher = a.connect("/t").await;
    let _on_b = b.connect("/t?name=leaving").await;
    presence_until(&mut watcher, "2 members", |p| p["count"] == 2).await;
    let stopped = Instant::now();
    b.signal("-TERM");
    let p = presence_until(&mut watcher, "b's member to go", |p| p["count"] == 1).await;
    eprintln!(
        "member of the stopped node gone after {:?}",
        stopped.elapsed()
    );
    assert!(
        stopped.elapsed() < Duration::from_secs(2),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(p["total"], 1);
    let status = within("b to exit", b.child.wait()).await.unwrap();
    assert!(status.success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_keeps_local_relay_and_flat_memory_then_cross_node_relay_resumes() {
    let mut redis = Redis::start().await;
    // No echo: the flooding client never reads.
    let config = |id| node(&redis.url(), id, "wsline", "2s", "[relay]\necho = false\n");
    let (a, b) = (
        Daemon::start(&config("a"), &[]).await,
        Daemon::start(&config("b"), &[]).await,
    );
    a.wait_log("cluster connected").await;
    b.wait_log("cluster connected").await;
    assert_eq!(health(&a).await, (200, "ok\n".into()));
    let mut a1 = a.connect("/d").await;
    let mut a2 = a.connect("/d").await;
    let mut on_b = b.connect("/d").await;
    count_is(&mut on_b, 3).await;
    count_is(&mut a1, 3).await;

    redis.stop().await;
    within("a to notice redis is gone", async {
        while health(&a).await.1 != "ok (cluster degraded: redis unreachable)\n" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let (status, body) = health(&a).await;
    assert_eq!(status, 200, "{body}");
    let s = stats(&a).await;
    assert_eq!(s["cluster_state"], "degraded", "{s}");
    let (_, _, metrics) = a
        .http("GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert!(metrics.contains("cluster_up 0"), "{metrics}");

    // Local relay goes on; a flood is not kept for later.
    a2.send_text("still here").await;
    assert_eq!(a1.recv_relayed().await, Message::text("still here"));
    let (rss_before, _) = a.rss_kib();
    let payload = "x".repeat(4096);
    for round in 0..10 {
        for _ in 0..1000 {
            a2.ws.feed(Message::text(payload.clone())).await.unwrap();
        }
        a2.ws.flush().await.unwrap();
        a2.send_text(&format!("end {round}")).await;
        while a1.recv_relayed().await != Message::text(format!("end {round}")) {}
    }
    let (rss_after, _) = a.rss_kib();
    assert!(
        rss_after < rss_before + 8 * 1024,
        "40 MB published while redis was down must not be kept: {rss_before} KiB -> {rss_after} KiB"
    );

    redis.restart().await;
    within("a to reconnect", async {
        while health(&a).await.1 != "ok\n" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    // Counts are right again (republished presence), then messages cross again.
    count_is(&mut on_b, 3).await;
    a1.send_text("back").await;
    assert_eq!(on_b.recv_relayed().await, Message::text("back"));
    let s = stats(&a).await;
    assert!(s["cluster"]["reconnects"].as_u64().unwrap() >= 1, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_prefixes_on_one_redis_do_not_see_each_other() {
    let redis = Redis::start().await;
    let blue = Daemon::start(&node(&redis.url(), "x", "blue", "2s", ""), &[]).await;
    let green = Daemon::start(&node(&redis.url(), "x", "green", "2s", ""), &[]).await;
    blue.wait_log("cluster connected").await;
    green.wait_log("cluster connected").await;
    let mut on_blue = blue.connect("/p?name=sam").await;
    let mut on_green = green.connect("/p?name=sam").await;
    let p = on_green.recv_presence().await;
    assert_eq!(
        (p["count"].clone(), p["total"].clone()),
        (1.into(), 1.into()),
        "{p}"
    );
    on_green.send_text("green").await;
    on_blue.send_text("blue").await;
    assert_eq!(on_blue.recv_relayed().await, Message::text("blue"));
    assert_eq!(on_green.recv_relayed().await, Message::text("green"));
    let keys = redis.command(&["KEYS", "*"]).await;
    assert!(keys.contains("blue:") && keys.contains("green:"), "{keys}");
    let s = stats(&blue).await;
    assert_eq!(s["cluster"]["received"], 0, "{s}");
}

/// Each sender's numbers as one receiver saw them, until both reached `last`.
async fn sequences(c: &mut Client, last: usize) -> (Vec<usize>, Vec<usize>) {
    let (mut a, mut b) = (Vec::new(), Vec::new());
    within("both senders' last message", async {
        while a.last() != Some(&last) || b.last() != Some(&last) {
            let m = c.recv_relayed().await;
            let text = m.to_text().unwrap();
            let (who, n) = text.split_once(':').unwrap();
            let n = n.parse().unwrap();
            if who == "a" { a.push(n) } else { b.push(n) }
        }
    })
    .await;
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_spans_nodes_with_an_exact_seam_under_concurrent_publishers() {
    let redis = Redis::start().await;
    let config = |id| {
        node(
            &redis.url(),
            id,
            "wsline",
            "2s",
            "[relay]\nhistory = 1000\nhistory_bytes = \"1MiB\"\n",
        )
    };
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let d = Daemon::start(&config(id), &[]).await;
        d.wait_log("cluster connected").await;
        nodes.push(d);
    }
    let mut pa = nodes[0].connect("/h").await;
    let mut pb = nodes[1].connect("/h").await;
    count_is(&mut pa, 2).await;
    count_is(&mut pb, 2).await;
    const N: usize = 400;
    let (half_a, half_a_rx) = tokio::sync::oneshot::channel();
    let (half_b, half_b_rx) = tokio::sync::oneshot::channel();
    let sender = |mut c: Client, who: &'static str, half: tokio::sync::oneshot::Sender<()>| {
        tokio::spawn(async move {
            let mut half = Some(half);
            for i in 0..N {
                if i == N / 2 {
                    let _ = half.take().unwrap().send(());
                }
                c.ws.send(Message::text(format!("{who}:{i}")))
                    .await
                    .unwrap();
            }
            c
        })
    };
    let ta = sender(pa, "a", half_a);
    let tb = sender(pb, "b", half_b);
    within("both halfway", async {
        half_a_rx.await.unwrap();
        half_b_rx.await.unwrap();
    })
    .await;
    // The first member on node c joins mid-flight: replay from Redis, then live, nothing lost
    // or doubled at the seam.
    let mut joiner = nodes[2].connect("/h").await;
    let (a, b) = sequences(&mut joiner, N - 1).await;
    let all: Vec<usize> = (0..N).collect();
    assert_eq!(a, all, "sender a as seen by the mid-flight joiner on c");
    assert_eq!(b, all, "sender b as seen by the mid-flight joiner on c");
    let (_pa, _pb) = (
        within("a done", ta).await.unwrap(),
        within("b done", tb).await.unwrap(),
    );
    // A later joiner on a node already in the room gets the same history from its own copy.
    let mut late = nodes[1].connect("/h").await;
    let (a, b) = sequences(&mut late, N - 1).await;
    assert_eq!((a.len(), b.len()), (N, N));
    assert_eq!((a, b), (all.clone(), all));
}

/// The cluster replay keeps what one oversized message would have erased: a message larger than
/// `history_bytes` is relayed to the other node but not kept in the room's stream, so the first
/// member on a third node still gets the history before it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_history_budget_evicts_nothing_from_the_cluster_replay() {
    let redis = Redis::start().await;
    let config = |id| {
        node(
            &redis.url(),
            id,
            "wsline",
            "2s",
            "[relay]\nhistory = 5\nhistory_bytes = \"16KiB\"\n",
        )
    };
    let mut nodes = Vec::new();
    for id in ["a", "b", "c"] {
        let d = Daemon::start(&config(id), &[]).await;
        d.wait_log("cluster connected").await;
        nodes.push(d);
    }
    let mut sender = nodes[0].connect("/keep").await;
    let mut other = nodes[1].connect("/keep").await;
    count_is(&mut sender, 2).await;
    for i in 1..=4 {
        sender.send_text(&format!("m{i}")).await;
    }
    let huge = "x".repeat(20_000);
    sender.send_text(&huge).await;
    for i in 1..=4 {
        assert_eq!(other.recv_relayed().await, Message::text(format!("m{i}")));
    }
    assert_eq!(
        other.recv_relayed().await,
        Message::text(huge),
        "relayed all the same"
    );
    // A node with no member yet replays the room from Redis.
    let mut joiner = nodes[2].connect("/keep").await;
    for i in 1..=4 {
        assert_eq!(joiner.recv_relayed().await, Message::text(format!("m{i}")));
    }
    sender.send_text("live").await;
    assert_eq!(joiner.recv_relayed().await, Message::text("live"));
}

/// nginx from the shipped files with an `upstream` of two wsline nodes; stopped on drop.
struct Nginx {
    child: std::process::Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(upstreams: &[std::net::SocketAddr]) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("nginx is required for this test: install it with `apt-get install nginx` (scripts/test does)");
        let repo = |f: &str| format!("{}/{f}", env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let servers: String = upstreams.iter().map(|a| format!("server {a}; ")).collect();
        let conf = format!(
            "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n access_log {d}/access.log;\n\
             client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
             fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
             include {map};\n upstream wsline {{ {servers} }}\n\
             server {{ listen 127.0.0.1:{port}; include {location}; }}\n}}\n",
            map = repo("nginx/wsline.conf"),
            location = repo("nginx/wsline-location.conf"),
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&path)
            .args(["-g", "daemon off;"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        within("nginx to listen", async {
            while tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }

    async fn ws(&self, path: &str) -> Plain {
        let url = format!("ws://127.0.0.1:{}{path}", self.port);
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
            .await
            .unwrap();
        let (ws, _) = within(
            "upgrade through nginx",
            tokio_tungstenite::client_async(url, tcp),
        )
        .await
        .unwrap();
        Plain { ws }
    }
}

/// A WebSocket through nginx (plain on loopback; nginx speaks TLS to the nodes).
struct Plain {
    ws: tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
}

impl Plain {
    async fn recv_data(&mut self) -> Message {
        use futures_util::StreamExt;
        within("a message through nginx", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(m)) if m.is_text() || m.is_binary() => return m,
                    Some(Ok(_)) => {}
                    other => panic!("connection through nginx ended: {other:?}"),
                }
            }
        })
        .await
    }

    async fn presence_count(&mut self, n: u64) {
        within("a presence count through nginx", async {
            loop {
                let m = self.recv_data().await;
                if common::is_presence(&m) {
                    let p: Value = serde_json::from_str(m.to_text().unwrap()).unwrap();
                    if p["count"] == n {
                        return;
                    }
                }
            }
        })
        .await
    }

    async fn recv_relayed(&mut self) -> Message {
        loop {
            let m = self.recv_data().await;
            if !common::is_presence(&m) {
                return m;
            }
        }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-QUIT")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_behind_one_nginx_upstream_chat_across_two_nodes() {
    let redis = Redis::start().await;
    let (a, b) = (start_node(&redis, "a").await, start_node(&redis, "b").await);
    let nginx = Nginx::start(&[a.addr, b.addr]).await;
    // Round robin: two connections land on the two nodes.
    let mut first = nginx.ws("/wsline/lobby2?name=ann").await;
    let mut second = nginx.ws("/wsline/lobby2?name=ben").await;
    first.presence_count(2).await;
    second.presence_count(2).await;
    let (sa, sb) = (stats(&a).await, stats(&b).await);
    assert_eq!(
        (sa["connections"].clone(), sb["connections"].clone()),
        (1.into(), 1.into()),
        "one client on each node: {sa} {sb}"
    );
    first.ws.send(Message::text("hi ben")).await.unwrap();
    assert_eq!(second.recv_relayed().await, Message::text("hi ben"));
    assert_eq!(
        first.recv_relayed().await,
        Message::text("hi ben"),
        "its echo"
    );
    second
        .ws
        .send(Message::binary(vec![1u8, 2, 3]))
        .await
        .unwrap();
    assert_eq!(first.recv_relayed().await, Message::binary(vec![1u8, 2, 3]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_works_is_never_logged_and_cluster_changes_on_sighup_need_a_restart() {
    let redis = Redis::start_with(&["--requirepass", "hunter2secret"]).await;
    let url = format!("redis://:hunter2secret@127.0.0.1:{}", redis.port);
    let (a, b) = (
        Daemon::start(&node(&url, "a", "wsline", "2s", ""), &[]).await,
        Daemon::start(&node(&url, "b", "wsline", "2s", ""), &[]).await,
    );
    a.wait_log("cluster connected").await;
    b.wait_log("cluster connected").await;
    let mut on_a = a.connect("/pw").await;
    let mut on_b = b.connect("/pw").await;
    count_is(&mut on_a, 2).await;
    on_b.send_text("through an authenticated redis").await;
    assert_eq!(
        on_a.recv_relayed().await,
        Message::text("through an authenticated redis")
    );

    // Every cluster.* key changed: each is reported as waiting for a restart; nothing else moves.
    let changed = node(
        "redis://:other-password@127.0.0.1:1",
        "renamed",
        "elsewhere",
        "9s",
        "",
    );
    let original = std::fs::read_to_string(a.config_path()).unwrap();
    let cluster_at = original.find("[cluster]").unwrap();
    std::fs::write(
        a.config_path(),
        format!("{}{changed}", &original[..cluster_at]),
    )
    .unwrap();
    a.signal("-HUP");
    let log = a.wait_log("configuration reloaded").await;
    for key in [
        "cluster.redis",
        "cluster.node_id",
        "cluster.prefix",
        "cluster.node_timeout",
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains("takes effect after a restart") && l.contains(key)),
            "{key} reported as needing a restart:\n{log}"
        );
    }
    on_b.send_text("still clustered").await;
    assert_eq!(on_a.recv_relayed().await, Message::text("still clustered"));
    for d in [&a, &b] {
        let log = d.log();
        assert!(
            !log.contains("hunter2secret"),
            "password in the log:\n{log}"
        );
        assert!(
            !log.contains("other-password"),
            "password in the log:\n{log}"
        );
        assert!(log.contains("redis://:***@127.0.0.1"), "{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_connects_over_tls() {
    let cert = common::TestCert::new();
    let (cert_path, key_path) = (
        cert.cert_path.to_str().unwrap().to_owned(),
        cert.key_path.to_str().unwrap().to_owned(),
    );
    let redis = Redis::start_tls(&cert_path, &key_path).await;
    let url = format!("rediss://localhost:{}", redis.port);
    // The nodes trust the test certificate through the system roots' standard override.
    let env = [("SSL_CERT_FILE", cert_path.as_str())];
    let (a, b) = (
        Daemon::start(&node(&url, "a", "wsline", "2s", ""), &env).await,
        Daemon::start(&node(&url, "b", "wsline", "2s", ""), &env).await,
    );
    a.wait_log("cluster connected").await;
    b.wait_log("cluster connected").await;
    let mut on_a = a.connect("/tls").await;
    let mut on_b = b.connect("/tls").await;
    count_is(&mut on_a, 2).await;
    on_b.send(Message::binary(vec![7u8; 100])).await;
    assert_eq!(on_a.recv_relayed().await, Message::binary(vec![7u8; 100]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_describes_the_cluster_without_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsline.toml");
    let write = |redis: &str| {
        std::fs::write(
            &path,
            format!(
                "[tls]\nenabled = false\n[cluster]\nredis = \"{redis}\"\nnode_id = \"n1\"\n\
                 prefix = \"blue\"\nnode_timeout = \"3s\"\n"
            ),
        )
        .unwrap()
    };
    let check = || {
        std::process::Command::new(common::daemon::BIN)
            .arg("--check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    write("rediss://:s3cret-pw@redis.internal:6380/0");
    let out = check();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "cluster: rediss://:***@redis.internal:6380/0 as node \"n1\", prefix \"blue\", node_timeout 3s"
        ),
        "{text}"
    );
    assert!(!text.contains("s3cret-pw"), "{text}");
    // Not a Redis URL: refused with exit 78, still without the secret.
    write("redis://:s3cret-pw@[bad");
    let out = check();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("cluster.redis"), "{text}");
    assert!(!text.contains("s3cret-pw"), "{text}");
}

/// A node with `relay.history` and a short `cluster.history_ttl`, and the `[presence]` keys given.
fn kept(redis: &Redis, id: &str, presence: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nnode_timeout = \"2s\"\nhistory_ttl = \"30s\"\n\
         [relay]\nhistory = 5\n[presence]\n{presence}\n",
        redis.url()
    )
}

/// Waits until `check` holds for Redis's reply to `args`; returns that reply.
async fn redis_until(
    redis: &Redis,
    args: &[&str],
    what: &str,
    check: impl Fn(&str) -> bool,
) -> String {
    within(what, async {
        loop {
            let reply = redis.command(args).await;
            if check(&reply) {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_of_an_empty_room_expires_after_history_ttl_and_scripts_survive_a_flush() {
    let redis = Redis::start().await;
    let a = Daemon::start(&kept(&redis, "a", ""), &[]).await;
    let b = Daemon::start(&kept(&redis, "b", ""), &[]).await;
    a.wait_log("cluster connected").await;
    b.wait_log("cluster connected").await;
    let mut on_a = a.connect("/kept").await;
    let mut on_b = b.connect("/kept").await;
    count_is(&mut on_a, 2).await;
    on_a.send_text("one").await;
    assert_eq!(on_b.recv_relayed().await, Message::text("one"));
    // While the room has members, its stream does not expire.
    assert_eq!(
        integer(&redis.command(&["PTTL", "wsline:history:kept"]).await),
        -1
    );

    // Redis forgets its scripts: the next message still crosses (EVALSHA, then EVAL once).
    assert!(redis.command(&["SCRIPT", "FLUSH"]).await.starts_with("+OK"));
    on_a.send_text("two").await;
    assert_eq!(on_b.recv_relayed().await, Message::text("two"));
    let stats = redis.command(&["INFO", "commandstats"]).await;
    assert!(stats.contains("cmdstat_evalsha:"), "{stats}");

    // The last members leave: the stream expires within history_ttl, and is kept again when the
    // room reopens.
    on_a.close().await;
    on_b.close().await;
    let ttl = redis_until(
        &redis,
        &["PTTL", "wsline:history:kept"],
        "a TTL on the stream",
        |r| integer(r) > 0,
    )
    .await;
    assert!(integer(&ttl) <= 30_000, "{ttl}");
    let mut again = a.connect("/kept").await;
    assert_eq!(again.recv_relayed().await, Message::text("one"));
    redis_until(
        &redis,
        &["PTTL", "wsline:history:kept"],
        "the TTL cleared",
        |r| integer(r) == -1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_turning_unique_names_off_releases_the_nodes_claims() {
    let redis = Redis::start().await;
    let a = Daemon::start(&kept(&redis, "a", "unique_names = true"), &[]).await;
    a.wait_log("cluster connected").await;
    let mut alice = a.connect("/u?name=alice").await;
    alice.recv_presence().await;
    redis_until(
        &redis,
        &["HGET", "wsline:names:u", "alice"],
        "alice's claim",
        |r| r.contains("a:"),
    )
    .await;
    let config = std::fs::read_to_string(a.config_path()).unwrap();
    std::fs::write(
        a.config_path(),
        config.replace("unique_names = true", "unique_names = false"),
    )
    .unwrap();
    a.signal("-HUP");
    a.wait_log("configuration reloaded").await;
    redis_until(
        &redis,
        &["HGET", "wsline:names:u", "alice"],
        "alice's claim released",
        |r| r.starts_with("$-1"),
    )
    .await;
    // alice is still in the room; only the cluster-wide claim went.
    alice.send_text("still here").await;
    assert_eq!(alice.recv_relayed().await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_takes_its_name_over_on_its_node_while_names_and_unicode_rooms_span_nodes() {
    const SESSION: &str = "0123456789abcdef0123456789abcdef";
    let redis = Redis::start().await;
    let (a, b) = (start_node(&redis, "a").await, start_node(&redis, "b").await);
    let room = "/%E6%88%91%E7%9A%84%E6%88%BF%E9%97%B4"; // 我的房间
    let mut watcher = b.connect(&format!("{room}?name=watcher")).await;
    let mut ghost = a
        .connect(&format!("{room}?name=sam&session={SESSION}"))
        .await;
    let listed = presence_until(&mut watcher, "sam listed on the other node", |p| {
        p.to_string().contains("\"sam\"")
    })
    .await;
    assert_eq!(listed["room"], "我的房间", "{listed}");
    // The same client reaching the other node: the name is held there by the ghost's node.
    let mut elsewhere = b
        .connect(&format!("{room}?name=sam&session={SESSION}"))
        .await;
    let close = elsewhere.closed().await;
    assert_eq!(
        (close.code, &*close.reason),
        (CloseCode::Policy, "name taken")
    );
    // A confusable of a name held on another node is taken too.
    let mut spoof = a.connect(&format!("{room}?name=%D1%95am")).await; // Cyrillic ѕ
    assert_eq!(spoof.closed().await.reason.as_str(), "name taken");
    // Back on its own node: it takes the name over at once.
    let mut back = a
        .connect(&format!("{room}?name=sam&session={SESSION}"))
        .await;
    let close = ghost.closed().await;
    assert_eq!(
        (u16::from(close.code), &*close.reason),
        (4001, "replaced by a new connection")
    );
    back.send_text("你好").await;
    assert_eq!(watcher.recv_relayed().await, Message::text("你好"));
    // Still one sam: someone else on either node is refused.
    for node in [&a, &b] {
        let mut other = node.connect(&format!("{room}?name=sam")).await;
        assert_eq!(other.closed().await.reason.as_str(), "name taken");
    }
    let s = stats(&b).await;
    assert_eq!(s["rooms"]["我的房间"], 1, "{s}");
}

//! The backend API under `/api/` (SPEC §7): publish, presence, room pages, kick, and every refusal,
//! against the real server over TLS; across two nodes through a real Redis; and the keys kept out
//! of the log of the real binary.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use common::daemon::Daemon;
use common::{Client, TestServer, read_response, start, start_with_handle, within};
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "test-api-key-0123456789abcdef";
const OLD_KEY: &str = "rotated-api-key-fedcba9876543210";

/// A server with the API on for loopback and both keys.
async fn api_server(tune: impl FnOnce(&mut wsline::Config)) -> TestServer {
    start(|c| {
        c.api.keys = vec![KEY.into(), OLD_KEY.into()];
        tune(c);
    })
    .await
}

/// One request on `stream`: (status, head, body). `key` goes into `Authorization: Bearer`.
async fn call_on(
    mut stream: TlsStream<TcpStream>,
    method: &str,
    path: &str,
    key: Option<&str>,
    content_type: &str,
    body: &[u8],
) -> (u16, String, String) {
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    stream.flush().await.unwrap();
    read_response(&mut stream).await
}

async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String, String) {
    call_on(
        server.tls().await,
        method,
        path,
        key,
        "text/plain; charset=utf-8",
        body.as_bytes(),
    )
    .await
}

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"))
}

/// Reads relayed messages (presence skipped) until `n` have arrived.
async fn relayed(c: &mut Client, n: usize) -> Vec<Message> {
    let mut got = Vec::new();
    while got.len() < n {
        got.push(c.recv_relayed().await);
    }
    got
}

/// Waits until the API sees `count` members in `room`.
async fn api_count_is(server: &TestServer, room: &str, count: u64) -> Value {
    within(&format!("{room} to have {count} members"), async {
        loop {
            let (status, _, body) =
                call(server, "GET", &format!("/api/rooms/{room}"), Some(KEY), "").await;
            assert_eq!(status, 200, "{body}");
            let v = json(&body);
            if v["count"] == count {
                return v;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_text_and_binary_reach_every_member_once_in_order_with_members_messages() {
    let server = api_server(|_| {}).await;
    let mut ann = server.connect("/chat?name=ann").await;
    let mut bob = server.connect("/chat?name=bob").await;
    api_count_is(&server, "chat", 2).await;

    // Ann sends 100 messages while the backend publishes 20 texts and a binary.
    let sender = tokio::spawn(async move {
        for i in 0..100 {
            ann.send_text(&format!("ann {i}")).await;
        }
        ann
    });
    for i in 0..20 {
        let (status, _, body) = call(
            &server,
            "POST",
            "/api/rooms/chat/messages",
            Some(if i % 2 == 0 { KEY } else { OLD_KEY }),
            &format!("api {i}"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let v = json(&body);
        assert_eq!(v["room"], "chat");
        assert_eq!(v["queued"], 2, "both members: {v}");
    }
    let binary = [0u8, 255, 10, 13, 0, 128];
    let (status, _, body) = call_on(
        server.tls().await,
        "POST",
        "/api/rooms/chat/messages",
        Some(KEY),
        "application/octet-stream",
        &binary,
    )
    .await;
    assert_eq!(
        (status, json(&body)["queued"].clone()),
        (200, Value::from(2))
    );
    let mut ann = within("ann's sends", sender).await.unwrap();

    for member in [&mut ann, &mut bob] {
        let got = within("121 messages", relayed(member, 121)).await;
        let texts: Vec<String> = got
            .iter()
            .filter_map(|m| m.to_text().ok().map(str::to_owned))
            .filter(|t| !t.is_empty() && t.is_ascii())
            .collect();
        let from = |prefix: &str| -> Vec<String> {
            texts
                .iter()
                .filter(|t| t.starts_with(prefix))
                .cloned()
                .collect()
        };
        assert_eq!(
            from("ann "),
            (0..100).map(|i| format!("ann {i}")).collect::<Vec<_>>()
        );
        assert_eq!(
            from("api "),
            (0..20).map(|i| format!("api {i}")).collect::<Vec<_>>()
        );
        // The binary arrives once, after the API's texts (one publisher's order).
        let at = got
            .iter()
            .position(|m| *m == Message::binary(binary.to_vec()));
        let last_api = got.iter().position(|m| *m == Message::text("api 19"));
        assert!(at > last_api, "binary at {at:?}, last text at {last_api:?}");
        assert_eq!(got.iter().filter(|m| m.is_binary()).count(), 1);
    }
    // Nothing more: each message arrived once.
    ann.send_text("end").await;
    assert_eq!(bob.recv_relayed().await, Message::text("end"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_envelope_an_api_message_says_so_and_no_member_can_forge_it() {
    let server = api_server(|c| {
        c.relay.envelope = wsline::config::Envelope::Json;
    })
    .await;
    let mut ann = server.connect("/news?name=ann").await;
    api_count_is(&server, "news", 1).await;
    let (status, _, body) = call(
        &server,
        "POST",
        "/api/rooms/news/messages",
        Some(KEY),
        "hi \"all\"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let got = json(ann.recv_relayed().await.to_text().unwrap());
    assert_eq!(
        got,
        serde_json::json!({"type":"message","room":"news","from":null,"source":"api","data":"hi \"all\""})
    );
    // A member's attempt at the same is wrapped as its own data.
    ann.send_text(r#"","source":"api"#).await;
    let forged = json(ann.recv_relayed().await.to_text().unwrap());
    assert_eq!(forged["from"], "ann");
    assert!(forged.get("source").is_none(), "{forged}");
    // Binary cannot be wrapped: 415.
    let (status, _, _) = call_on(
        server.tls().await,
        "POST",
        "/api/rooms/news/messages",
        Some(KEY),
        "application/octet-stream",
        b"\x00",
    )
    .await;
    assert_eq!(status, 415);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_documented_status() {
    let server = api_server(|c| c.relay.max_message_size = 1024).await;
    let post = |path: &'static str, key: Option<&'static str>, body: String| {
        let server = &server;
        async move { call(server, "POST", path, key, &body).await }
    };
    // 401: no key, a wrong key, a key's prefix, another scheme.
    for key in [None, Some("wrong-key-0123456789abcdef"), Some(&KEY[..10])] {
        let (status, head, body) = post("/api/rooms/r/messages", key, "x".into()).await;
        assert_eq!((status, body.as_str()), (401, "api key required\n"));
        assert!(
            head.to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{head}"
        );
    }
    let (status, _, _) = server
        .http(&format!(
            "GET /api/rooms HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Basic {KEY}\r\n\r\n"
        ))
        .await;
    assert_eq!(status, 401);
    // 404: an unknown path under /api/.
    let (status, _, body) = call(&server, "GET", "/api/nothing", Some(KEY), "").await;
    assert_eq!((status, body.as_str()), (404, "not found\n"));
    // 405 with Allow.
    let (status, head, _) = call(&server, "GET", "/api/rooms/r/messages", Some(KEY), "").await;
    assert_eq!(status, 405);
    assert!(
        head.contains("allow: POST") || head.contains("Allow: POST"),
        "{head}"
    );
    let (status, _, _) = call(&server, "DELETE", "/api/rooms", Some(KEY), "").await;
    assert_eq!(status, 405);
    // 413 over relay.max_message_size, by Content-Length.
    let (status, _, body) = post("/api/rooms/r/messages", Some(KEY), "x".repeat(1025)).await;
    assert_eq!(
        (status, body.as_str()),
        (413, "message larger than relay.max_message_size\n")
    );
    let (status, _, _) = post("/api/rooms/r/messages", Some(KEY), "x".repeat(1024)).await;
    assert_eq!(status, 200, "exactly the limit is fine");
    // 415: another content type; 400: a bad room, bad UTF-8, a bad page size or kick name.
    let (status, _, _) = call_on(
        server.tls().await,
        "POST",
        "/api/rooms/r/messages",
        Some(KEY),
        "application/json",
        b"{}",
    )
    .await;
    assert_eq!(status, 415);
    let (status, _, _) = call_on(
        server.tls().await,
        "POST",
        "/api/rooms/r/messages",
        Some(KEY),
        "text/plain",
        b"\xff\xfe",
    )
    .await;
    assert_eq!(status, 400);
    let (status, _, _) = post("/api/rooms/a%2Fb/messages", Some(KEY), "x".into()).await;
    assert_eq!(status, 400);
    let (status, _, _) = call(&server, "GET", "/api/rooms?limit=100000", Some(KEY), "").await;
    assert_eq!(status, 400);
    let (status, _, _) = call(&server, "POST", "/api/rooms/r/kick", Some(KEY), "").await;
    assert_eq!(status, 400);
    server.assert_still_relays().await;

    // 403: a valid key from an address outside api.allow.
    let elsewhere = api_server(|c| c.api.allow = vec!["10.0.0.0/8".parse().unwrap()]).await;
    let (status, _, body) = call(&elsewhere, "GET", "/api/rooms", Some(KEY), "").await;
    assert_eq!(
        (status, body.as_str()),
        (403, "the api is not for your address\n")
    );

    // 404 for everything while api.keys is empty (the default).
    let off = start(|_| {}).await;
    let (status, _, _) = call(&off, "GET", "/api/rooms", Some(KEY), "").await;
    assert_eq!(status, 404);

    // 429 past api.requests_per_second, with Retry-After: one a second, so of five requests in a
    // row (each well under a second, even on a busy machine) the first passes and some do not.
    let slow = api_server(|c| c.api.requests_per_second = 1).await;
    let mut statuses = Vec::new();
    let mut retry = String::new();
    for _ in 0..5 {
        let (status, head, _) = call(&slow, "GET", "/api/rooms", Some(KEY), "").await;
        if status == 429 {
            retry = head;
        }
        statuses.push(status);
    }
    assert_eq!(statuses[0], 200, "{statuses:?}");
    assert!(statuses[1..].contains(&429), "{statuses:?}");
    assert!(
        retry.to_ascii_lowercase().contains("retry-after: 1"),
        "{retry}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_s_presence_and_a_kick_that_closes_that_member_with_4003() {
    let server = api_server(|_| {}).await;
    let mut ann = server.connect("/team?name=ann").await;
    let mut bob = server.connect("/team?name=Bob").await;
    let _anon = server.connect("/team").await;
    let state = api_count_is(&server, "team", 3).await;
    assert_eq!(
        state,
        serde_json::json!({"room":"team","count":3,"names":["Bob","ann"]})
    );
    // An empty room is count 0.
    let (_, _, body) = call(&server, "GET", "/api/rooms/empty", Some(KEY), "").await;
    assert_eq!(
        json(&body),
        serde_json::json!({"room":"empty","count":0,"names":[]})
    );

    // By the name's key: "bob" kicks "Bob".
    let (status, _, body) = call(
        &server,
        "POST",
        "/api/rooms/team/kick?name=bob",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(
        (status, json(&body)),
        (200, serde_json::json!({"closed":1}))
    );
    let frame = bob.closed().await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4003, "kicked")
    );
    api_count_is(&server, "team", 2).await;
    let (_, _, body) = call(
        &server,
        "POST",
        "/api/rooms/team/kick?name=nobody",
        Some(KEY),
        "",
    )
    .await;
    assert_eq!(json(&body)["closed"], 0);
    // Ann is still served.
    ann.send_text("still here").await;
    assert_eq!(ann.recv_relayed().await, Message::text("still here"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rooms_page_correctly_a_bounded_page_at_a_time() {
    ten_thousand_rooms_page_correctly(None).await;
}

/// The same through a cluster: the pages come from Redis's index of rooms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_rooms_page_correctly_through_redis_too() {
    let redis = redis_server::Redis::start().await;
    ten_thousand_rooms_page_correctly(Some(redis.url())).await;
}

/// Pages through 10 000 rooms, 1 000 at a time, on a single node or (`redis`) a one-node cluster.
async fn ten_thousand_rooms_page_correctly(redis: Option<String>) {
    let cluster = redis.is_some();
    let (server, handle) = start_with_handle(|c| {
        c.api.keys = vec![KEY.into()];
        if let Some(url) = redis {
            c.cluster.redis = url;
        }
    })
    .await;
    // 10 000 rooms held through the hub (10 000 TLS clients would test the machine, not paging);
    // one of them also has a real member.
    let hub = handle.hub();
    let mut held = Vec::new();
    for i in 0..9_999 {
        let (tx, rx) = wsline::relay::outbox::outbox(16, 1 << 16, Default::default());
        held.push((hub.join(&format!("room{i:05}"), None, tx).unwrap(), rx));
    }
    let _real = server.connect("/room09999").await;
    let _second = server.connect("/room00042").await;
    api_count_is(&server, "room09999", 1).await;

    // Every room once, sorted by name, with its count.
    let expected: Vec<(String, u64)> = (0..10_000)
        .map(|i| (format!("room{i:05}"), if i == 42 { 2 } else { 1 }))
        .collect();
    let all_pages = || async {
        let (mut seen, mut after, mut calls) = (Vec::new(), String::new(), 0);
        loop {
            let path = format!("/api/rooms?limit=1000&after={after}");
            let (status, _, body) = call(&server, "GET", &path, Some(KEY), "").await;
            assert_eq!(status, 200, "{body}");
            let page = json(&body);
            let rooms = page["rooms"].as_array().unwrap();
            assert!(rooms.len() <= 1000);
            calls += 1;
            for r in rooms {
                let name = r["room"].as_str().unwrap().to_owned();
                seen.push((name, r["count"].as_u64().unwrap()));
            }
            match page["next"].as_str() {
                Some(next) => {
                    assert_eq!(next, seen.last().unwrap().0);
                    after = next.to_owned();
                }
                None => return (seen, calls),
            }
        }
    };
    // A single node lists its rooms at once; a cluster once the worker has written them all.
    let (seen, calls) = within("every room listed with its count", async {
        loop {
            let (seen, calls) = all_pages().await;
            if !cluster || seen == expected {
                return (seen, calls);
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(calls, 10, "1000 a page");
    assert!(
        seen == expected,
        "every room once, sorted by name, with its count"
    );
    // The default page is 100.
    let (_, _, body) = call(&server, "GET", "/api/rooms", Some(KEY), "").await;
    let page = json(&body);
    assert_eq!(page["rooms"].as_array().unwrap().len(), 100);
    assert_eq!(page["next"], "room00099");
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_never_appear_in_the_log() {
    let extra =
        format!("[log]\nlevel = \"trace\"\n[api]\nkeys = [\"{KEY}\"]\nallow = [\"10.9.9.9/32\"]\n");
    let mut daemon = Daemon::start(&extra, &[]).await;
    // A refused address with the right key, then the right address (after a reload) with a
    // wrong and a right key.
    let (status, _, _) = call_on(
        daemon.tls().await,
        "GET",
        "/api/rooms",
        Some(KEY),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(status, 403);
    let config = std::fs::read_to_string(daemon.config_path()).unwrap();
    std::fs::write(
        daemon.config_path(),
        config.replace("10.9.9.9/32", "127.0.0.1/32"),
    )
    .unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("configuration reloaded").await;
    let (status, _, _) = call_on(
        daemon.tls().await,
        "GET",
        "/api/rooms",
        Some("guessed-key-0000000000000"),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(status, 401);
    let (status, _, _) = call_on(
        daemon.tls().await,
        "POST",
        "/api/rooms/r/messages",
        Some(KEY),
        "text/plain",
        b"hello",
    )
    .await;
    assert_eq!(status, 200);
    daemon.signal("-TERM");
    within("exit", daemon.child.wait()).await.unwrap();
    let log = daemon.log();
    assert!(log.contains("api request refused"), "{log}");
    for secret in [KEY, "guessed-key-0000000000000"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_on_one_node_reaches_members_on_both_once_in_order() {
    let redis = redis_server::Redis::start().await;
    let node = |id: &str| {
        format!(
            "[cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nnode_timeout = \"2s\"\n\
             [limits]\nmessages_per_second = 100000\nburst = 100000\n\
             [api]\nkeys = [\"{KEY}\"]\n",
            redis.url()
        )
    };
    let a = Daemon::start(&node("a"), &[]).await;
    a.wait_log("cluster connected").await;
    let b = Daemon::start(&node("b"), &[]).await;
    b.wait_log("cluster connected").await;
    let mut on_a = a.connect("/r?name=ann").await;
    let mut on_b = b.connect("/r?name=bob").await;
    within("both nodes see both members", async {
        for c in [&mut on_a, &mut on_b] {
            while c.recv_presence().await["count"] != 2 {}
        }
    })
    .await;

    // A room with members here: its presence and count include the other node's members.
    let (status, _, body) = call_on(
        a.tls().await,
        "GET",
        "/api/rooms/r",
        Some(KEY),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        json(&body),
        serde_json::json!({"room":"r","count":2,"names":["ann","bob"]})
    );
    let (_, _, body) = call_on(
        b.tls().await,
        "GET",
        "/api/rooms",
        Some(KEY),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(
        json(&body),
        serde_json::json!({"rooms":[{"room":"r","count":2}],"next":null})
    );

    // Ann (on a) sends while the backend publishes through a.
    let sender = tokio::spawn(async move {
        for i in 0..50 {
            on_a.send_text(&format!("ann {i}")).await;
        }
        on_a
    });
    for i in 0..20 {
        let (status, _, body) = call_on(
            a.tls().await,
            "POST",
            "/api/rooms/r/messages",
            Some(KEY),
            "text/plain; charset=utf-8",
            format!("api {i}").as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(json(&body)["queued"], 1, "one member on this node");
    }
    let (status, _, body) = call_on(
        b.tls().await,
        "POST",
        "/api/rooms/r/messages",
        Some(KEY),
        "application/octet-stream",
        &[1, 2, 3],
    )
    .await;
    assert_eq!(
        (status, json(&body)["queued"].clone()),
        (200, Value::from(1))
    );
    let mut on_a = within("ann's sends", sender).await.unwrap();

    for member in [&mut on_a, &mut on_b] {
        let got = within("71 messages", relayed(member, 71)).await;
        let texts: Vec<&str> = got.iter().filter_map(|m| m.to_text().ok()).collect();
        let from = |prefix: &str| -> Vec<String> {
            texts
                .iter()
                .filter(|t| t.starts_with(prefix))
                .map(|t| t.to_string())
                .collect()
        };
        assert_eq!(
            from("ann "),
            (0..50).map(|i| format!("ann {i}")).collect::<Vec<_>>()
        );
        assert_eq!(
            from("api "),
            (0..20).map(|i| format!("api {i}")).collect::<Vec<_>>()
        );
        assert_eq!(
            got.iter()
                .filter(|m| **m == Message::binary(vec![1u8, 2, 3]))
                .count(),
            1
        );
    }
    on_a.send_text("end").await;
    assert_eq!(on_b.recv_relayed().await, Message::text("end"));

    // A kick through node a closes bob on node b with 4003.
    let (status, _, body) = call_on(
        a.tls().await,
        "POST",
        "/api/rooms/r/kick?name=BOB",
        Some(KEY),
        "text/plain",
        b"",
    )
    .await;
    assert_eq!(
        (status, json(&body)),
        (
            200,
            serde_json::json!({"closed":1,"nodes":1,"unanswered":0})
        ),
        "none on a, one on b, which answered"
    );
    let frame = on_b.closed().await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4003, "kicked")
    );
    within("ann to see bob go", async {
        while on_a.recv_presence().await["count"] != 1 {}
    })
    .await;
}

/// An API message too large for the room's history is relayed but kept out of the room's Redis
/// stream, as a member's is, so it evicts none of the messages before it from another node's
/// replay: with members on the publishing node (the fan-out) and without any (straight to Redis).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_message_larger_than_the_history_budget_evicts_nothing_from_the_cluster_replay() {
    let redis = redis_server::Redis::start().await;
    let node = |id: &str| {
        format!(
            "[cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nnode_timeout = \"2s\"\n\
             [relay]\nhistory = 5\nhistory_bytes = \"16KiB\"\n[api]\nkeys = [\"{KEY}\"]\n",
            redis.url()
        )
    };
    let a = Daemon::start(&node("a"), &[]).await;
    a.wait_log("cluster connected").await;
    let b = Daemon::start(&node("b"), &[]).await;
    b.wait_log("cluster connected").await;
    let mut here = a.connect("/kept").await;
    let huge = "x".repeat(20_000);
    for room in ["kept", "nobody"] {
        for body in ["m1", "m2", "m3", "m4", "m5", huge.as_str()] {
            let (status, _, answer) = call_on(
                a.tls().await,
                "POST",
                &format!("/api/rooms/{room}/messages"),
                Some(KEY),
                "text/plain; charset=utf-8",
                body.as_bytes(),
            )
            .await;
            assert_eq!(status, 200, "{room}: {answer}");
        }
    }
    let got = within("the member on a gets all six", relayed(&mut here, 6)).await;
    assert_eq!(got[5], Message::text(huge.clone()), "relayed all the same");
    // A member joining on the other node replays each room from Redis: the five before it, all
    // `history` places (the large one took none).
    for room in ["kept", "nobody"] {
        let mut joiner = b.connect(&format!("/{room}")).await;
        let replay = within("the replay", relayed(&mut joiner, 5)).await;
        let want: Vec<Message> = ["m1", "m2", "m3", "m4", "m5"].map(Message::text).to_vec();
        assert_eq!(replay, want, "{room}");
    }
}

/// `GET /api/rooms/ROOM` on `node`, as (status, body).
async fn presence_on(node: &Daemon, room: &str) -> (u16, String) {
    let path = format!("/api/rooms/{room}");
    let (status, _, body) =
        call_on(node.tls().await, "GET", &path, Some(KEY), "text/plain", b"").await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rooms_presence_is_read_from_redis_on_a_node_without_its_members() {
    let mut redis = redis_server::Redis::start().await;
    // Each node lists at most its own `presence.max_names` names: 2 on node a, 1 on node b.
    let node = |id: &str, max_names: usize| {
        format!(
            "[cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nnode_timeout = \"2s\"\n\
             [presence]\nmax_names = {max_names}\n[api]\nkeys = [\"{KEY}\"]\n",
            redis.url()
        )
    };
    let a = Daemon::start(&node("a", 2), &[]).await;
    a.wait_log("cluster connected").await;
    let b = Daemon::start(&node("b", 1), &[]).await;
    b.wait_log("cluster connected").await;

    // Ann, Bob and Cy are on node b only; node a has no member of the room.
    let ann = b.connect("/far?name=ann").await;
    let mut bob = b.connect("/far?name=bob").await;
    let cy = b.connect("/far?name=cy").await;
    within("bob sees all three", async {
        while bob.recv_presence().await["count"] != 3 {}
    })
    .await;
    // Node b answers from its own view of the room, capped at its own max_names ...
    let (status, body) = presence_on(&b, "far").await;
    assert_eq!(
        (status, json(&body)),
        (
            200,
            serde_json::json!({"room":"far","count":3,"names":["ann"],"more":2})
        )
    );
    // ... node a from Redis, where node b's entry holds every name, capped at node a's.
    let want = serde_json::json!({"room":"far","count":3,"names":["ann","bob"],"more":1});
    within(
        "node a to read both members of the room from redis",
        async {
            loop {
                let (status, body) = presence_on(&a, "far").await;
                assert_eq!(status, 200, "{body}");
                if json(&body) == want {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        },
    )
    .await;

    // Once they leave, node a reads an empty room.
    ann.close().await;
    bob.close().await;
    cy.close().await;
    let empty = serde_json::json!({"room":"far","count":0,"names":[]});
    within("node a to read the room empty", async {
        loop {
            let (status, body) = presence_on(&a, "far").await;
            assert_eq!(status, 200, "{body}");
            if json(&body) == empty {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;

    // Without Redis node a cannot know: 503, never a count it made up.
    redis.stop().await;
    let (status, body) = within("the answer without redis", presence_on(&a, "far")).await;
    assert_eq!((status, body.as_str()), (503, "cluster unavailable\n"));
}

/// A node of a two-node cluster on `redis` with the API on.
fn api_node(redis: &redis_server::Redis, id: &str) -> String {
    format!(
        "[cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nnode_timeout = \"2s\"\n\
         [api]\nkeys = [\"{KEY}\"]\n",
        redis.url()
    )
}

/// Every page of `GET /api/rooms?limit=LIMIT` on `node` from the first: the rooms with their
/// counts, and how many pages it took. Each page is checked: at most `limit` rooms, `next` the
/// last of a full page while more follow.
async fn all_pages(node: &Daemon, limit: usize) -> (Vec<(String, u64)>, usize) {
    let (mut rooms, mut after, mut pages) = (Vec::new(), String::new(), 0);
    loop {
        let path = format!("/api/rooms?limit={limit}&after={after}");
        let (status, _, body) =
            call_on(node.tls().await, "GET", &path, Some(KEY), "text/plain", b"").await;
        assert_eq!(status, 200, "{body}");
        let page = json(&body);
        let listed = page["rooms"].as_array().unwrap();
        assert!(listed.len() <= limit, "{body}");
        pages += 1;
        assert!(pages <= 100, "paging never ends: {body}");
        for r in listed {
            let count = r["count"].as_u64().unwrap();
            rooms.push((r["room"].as_str().unwrap().to_owned(), count));
        }
        match page["next"].as_str() {
            Some(next) => {
                let last = rooms.last().map(|(r, _)| r.as_str());
                if listed.len() == limit {
                    assert_eq!(Some(next), last, "{body}");
                } else {
                    // A room emptied between the page's two reads: left out, `next` past it.
                    assert!(last.is_none_or(|last| last < next), "{body}");
                }
                after = next.to_owned();
            }
            None => return (rooms, pages),
        }
    }
}

/// How many rooms Redis's index of rooms holds (`ZCARD`).
async fn indexed(redis: &redis_server::Redis) -> u64 {
    let reply = redis.command(&["ZCARD", "wsline:rooms"]).await;
    reply.trim().trim_start_matches(':').parse().unwrap()
}

/// Waits until every page of node's room list, at `limit`, is `want`.
async fn list_becomes(node: &Daemon, limit: usize, want: &[(String, u64)]) {
    within("the room list", async {
        while all_pages(node, limit).await.0 != want {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_room_list_pages_through_every_node_s_rooms_from_any_node() {
    let mut redis = redis_server::Redis::start().await;
    let a = Daemon::start(&api_node(&redis, "a"), &[]).await;
    a.wait_log("cluster connected").await;
    let b = Daemon::start(&api_node(&redis, "b"), &[]).await;
    b.wait_log("cluster connected").await;
    // Rooms only on a, only on b, and on both (names in byte order: `Z` < `a`, `-` < `r`).
    let mut members = Vec::new();
    for path in ["/alpha", "/Zulu", "/charlie", "/echo"] {
        members.push(a.connect(path).await);
    }
    let mut bravo = Vec::new();
    for _ in 0..2 {
        bravo.push(b.connect("/bravo").await);
    }
    for path in ["/b-team", "/delta", "/charlie", "/charlie", "/echo"] {
        members.push(b.connect(path).await);
    }
    let room = |name: &str, count: u64| (name.to_owned(), count);
    let mut want = vec![
        room("Zulu", 1),
        room("alpha", 1),
        room("b-team", 1),
        room("bravo", 2),
        room("charlie", 3),
        room("delta", 1),
        room("echo", 2),
    ];
    list_becomes(&a, 1000, &want).await;
    // Every room exactly once, in order, with its count, at every page size, from either node.
    for limit in [1, 2, 3, 7] {
        let (rooms, pages) = all_pages(&a, limit).await;
        assert_eq!(rooms, want, "limit {limit}");
        assert_eq!(pages, want.len().div_ceil(limit), "limit {limit}");
    }
    assert_eq!(all_pages(&b, 2).await.0, want);

    // A room whose last member leaves (on node b) leaves the list.
    for c in bravo {
        c.close().await;
    }
    want.retain(|(r, _)| r != "bravo");
    list_becomes(&a, 2, &want).await;
    assert_eq!(
        indexed(&redis).await,
        6,
        "the index holds no room without members"
    );
    // A node killed outright: once liveness sweeps it (node_timeout 2 s), its rooms leave too.
    b.signal("-KILL");
    let want = [
        room("Zulu", 1),
        room("alpha", 1),
        room("charlie", 1),
        room("echo", 1),
    ];
    list_becomes(&a, 2, &want).await;
    assert_eq!(indexed(&redis).await, 4);

    // Without Redis no node can know the cluster's rooms: 503, never a partial list.
    redis.stop().await;
    let (status, _, body) = within(
        "the answer without redis",
        call_on(
            a.tls().await,
            "GET",
            "/api/rooms",
            Some(KEY),
            "text/plain",
            b"",
        ),
    )
    .await;
    assert_eq!((status, body.as_str()), (503, "cluster unavailable\n"));
    drop(members);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kick_through_a_node_without_the_member_counts_what_the_other_node_closed() {
    let mut redis = redis_server::Redis::start().await;
    let a = Daemon::start(&api_node(&redis, "a"), &[]).await;
    a.wait_log("cluster connected").await;
    let b = Daemon::start(&api_node(&redis, "b"), &[]).await;
    b.wait_log("cluster connected").await;
    // Ann is on node b only; node a has nobody in the room.
    let mut ann = b.connect("/team?name=ann").await;
    let mut bob = b.connect("/team?name=bob").await;
    within("node a to read both from redis", async {
        while json(&presence_on(&a, "team").await.1)["count"] != 2 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    let kick = |name: &'static str| {
        let a = &a;
        async move {
            let path = format!("/api/rooms/team/kick?name={name}");
            call_on(a.tls().await, "POST", &path, Some(KEY), "text/plain", b"").await
        }
    };
    let (status, _, body) = kick("Ann").await;
    assert_eq!(
        (status, json(&body)),
        (
            200,
            serde_json::json!({"closed":1,"nodes":1,"unanswered":0})
        )
    );
    let frame = ann.closed().await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4003, "kicked")
    );
    // A name nobody has: node b heard it and closed nothing.
    let (_, _, body) = kick("nobody").await;
    assert_eq!(
        json(&body),
        serde_json::json!({"closed":0,"nodes":1,"unanswered":0})
    );

    // A subscriber that is no node (here a bare Redis client on the room's channel) never
    // answers: after the bounded wait, the answer counts it as unanswered.
    let mut foreign = TcpStream::connect(("127.0.0.1", redis.port)).await.unwrap();
    let channel = "wsline:room:team";
    let subscribe = format!(
        "*2\r\n$9\r\nSUBSCRIBE\r\n${}\r\n{channel}\r\n",
        channel.len()
    );
    foreign.write_all(subscribe.as_bytes()).await.unwrap();
    within("the subscription", async {
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains(":1\r\n") {
            let mut buf = [0u8; 256];
            let n = tokio::io::AsyncReadExt::read(&mut foreign, &mut buf)
                .await
                .unwrap();
            assert!(n > 0, "redis closed the subscriber");
            got.extend_from_slice(&buf[..n]);
        }
    })
    .await;
    let t0 = std::time::Instant::now();
    let (status, _, body) = kick("nobody").await;
    let waited = t0.elapsed();
    assert_eq!(
        (status, json(&body)),
        (
            200,
            serde_json::json!({"closed":0,"nodes":2,"unanswered":1})
        )
    );
    assert!(
        waited >= std::time::Duration::from_millis(900)
            && waited < std::time::Duration::from_secs(3),
        "the wait for answers is bounded by 1 s: {waited:?}"
    );
    drop(foreign);

    // Without Redis the kick reaches this node only, and the answer says so.
    redis.stop().await;
    let (status, _, body) = within("the kick without redis", kick("bob")).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.starts_with("cluster unavailable"), "{body}");
    bob.send_text("still here").await;
    assert_eq!(bob.recv_relayed().await, Message::text("still here"));
}

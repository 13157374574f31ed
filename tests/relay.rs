//! The relay: messages reach everyone in the same room, unchanged and in order, and nobody else.

mod common;

use bytes::Bytes;
use common::{Client, RawClient, numbered, start, start_with_handle, within};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_the_same_room_and_not_another() {
    let server = start(|_| {}).await;
    let mut a = server.connect("/room1").await;
    let mut b = server.connect("/room1").await;
    let mut c = server.connect("/room2").await;
    server
        .wait_stats("both rooms", |s| {
            s["rooms"]["room1"] == 2 && s["rooms"]["room2"] == 1
        })
        .await;

    a.send_text("hello room1").await;
    assert_eq!(b.recv_relayed().await, Message::text("hello room1"));
    assert_eq!(
        a.recv_relayed().await,
        Message::text("hello room1"),
        "echo is on by default"
    );

    // C sees only its own room's traffic: the next relayed message it gets is its own.
    c.send_text("only room2").await;
    assert_eq!(c.recv_relayed().await, Message::text("only room2"));
    b.send_text("after").await;
    assert_eq!(a.recv_relayed().await, Message::text("after"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_is_the_default_room() {
    let server = start(|c| c.relay.default_room = "hall".into()).await;
    let _a = server.connect("/").await;
    let _b = server.connect("/hall").await;
    server
        .wait_stats("two in hall", |s| s["rooms"]["hall"] == 2)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_stays_binary_with_the_same_bytes() {
    let server = start(|_| {}).await;
    let mut a = server.connect("/bin").await;
    let mut b = server.connect("/bin").await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    a.send(Message::Binary(Bytes::from(payload.clone()))).await;
    assert_eq!(
        b.recv_relayed().await,
        Message::Binary(Bytes::from(payload))
    );
    // A text message with the same bytes as JSON would still be text.
    a.send_text("{\"type\":\"x\"}").await;
    assert_eq!(b.recv_relayed().await, Message::text("{\"type\":\"x\"}"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_messages_arrive_in_order_at_every_receiver() {
    const N: usize = 10_000;
    // The burst is not rate limited and every receiver may fall the whole burst behind: this test
    // is about order, not about slow consumers.
    let server = start(|c| {
        c.relay.echo = false;
        c.limits.messages_per_second = 1_000_000;
        c.limits.burst = 1_000_000;
        c.limits.queue_messages = 2 * N;
        c.limits.queue_bytes = 64 << 20;
    })
    .await;
    let mut sender = server.connect("/order").await;
    let mut receivers = Vec::new();
    for _ in 0..3 {
        receivers.push(server.connect("/order").await);
    }
    server
        .wait_stats("4 members", |s| s["rooms"]["order"] == 4)
        .await;
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|mut r| {
            tokio::spawn(async move {
                for i in 0..N {
                    let m = r.recv_relayed().await;
                    assert_eq!(
                        m.to_text().unwrap(),
                        i.to_string(),
                        "message {i} out of order"
                    );
                }
            })
        })
        .collect();
    for i in 0..N {
        sender.ws.feed(Message::text(i.to_string())).await.unwrap();
    }
    sender.ws.flush().await.unwrap();
    for r in readers {
        within("receivers to get all messages", r).await.unwrap();
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_off_spares_the_sender() {
    let server = start(|c| c.relay.echo = false).await;
    let mut a = server.connect("/e").await;
    let mut b = server.connect("/e").await;
    a.send_text("one").await;
    assert_eq!(b.recv_relayed().await, Message::text("one"));
    b.send_text("two").await;
    // A's first relayed message is B's, not its own.
    assert_eq!(a.recv_relayed().await, Message::text("two"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_replays_the_last_n_in_order() {
    let server = start(|c| c.relay.history = 3).await;
    let mut a = server.connect("/h").await;
    for i in 1..=5 {
        a.send_text(&format!("m{i}")).await;
    }
    for i in 1..=5 {
        assert_eq!(a.recv_relayed().await, Message::text(format!("m{i}")));
    }
    let mut late = server.connect("/h").await;
    for i in 3..=5 {
        assert_eq!(late.recv_relayed().await, Message::text(format!("m{i}")));
    }
    a.send_text("live").await;
    assert_eq!(late.recv_relayed().await, Message::text("live"));
    server.stop().await;
}

/// Sends `messages` from `client` and reads its echoes, never more than a few ahead, so the sender
/// is never a slow consumer of its own echoes.
async fn send_all(client: &mut Client, messages: &[Message]) {
    let mut echoed = 0;
    for (i, msg) in messages.iter().enumerate() {
        client.send(msg.clone()).await;
        while echoed + 4 <= i {
            assert_eq!(&client.recv_relayed().await, &messages[echoed]);
            echoed += 1;
        }
    }
    for msg in &messages[echoed..] {
        assert_eq!(&client.recv_relayed().await, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_of_big_messages_is_replayed_within_its_byte_bound_and_the_joiner_stays() {
    // history_bytes (256 KiB) and queue_bytes (4 MiB) are the defaults.
    let server = start(|c| c.relay.history = 100).await;
    let mut sender = server.connect("/big").await;
    let sent: Vec<Message> = (0..70).map(|i| numbered(i, 64_000)).collect();
    send_all(&mut sender, &sent).await;

    let mut joiner = server.connect("/big").await;
    // 256 KiB holds the last four 64 000-byte messages (256 000 bytes); five would be 320 000.
    for i in 66..70 {
        assert_eq!(
            joiner.recv_relayed().await,
            numbered(i, 64_000),
            "message {i}"
        );
    }
    sender.send_text("live").await;
    assert_eq!(
        joiner.recv_relayed().await,
        Message::text("live"),
        "nothing more was replayed"
    );
    let s = server.stats().await;
    assert_eq!(s["rooms"]["big"], 2, "{s}");
    assert_eq!(s["drops"]["slow_consumers"], 0, "{s}");
    server.stop().await;
}

/// A message larger than the whole history budget is relayed but not kept, and evicts nothing:
/// one member cannot erase a room's history (with the envelope, a text of `\x01` characters is
/// escaped to six times its size).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_larger_than_the_history_budget_evicts_nothing() {
    let server = start(|c| {
        c.relay.history = 20;
        c.relay.envelope = wsline::config::Envelope::Json;
    })
    .await;
    let mut a = server.connect("/keep").await;
    for i in 1..=5 {
        a.send_text(&format!("m{i}")).await;
        a.recv_relayed().await;
    }
    let huge = "\u{1}".repeat(44_000);
    a.send_text(&huge).await;
    let relayed = a.recv_relayed().await;
    assert!(
        relayed.len() > 256 * 1024,
        "escaped to {} bytes",
        relayed.len()
    );
    let mut joiner = server.connect("/keep").await;
    for i in 1..=5 {
        let got = joiner.recv_relayed().await;
        let text = got.to_text().unwrap();
        assert!(
            text.contains(&format!("\"data\":\"m{i}\"")),
            "replay {i}: {text}"
        );
    }
    a.send_text("live").await;
    let got = joiner.recv_relayed().await;
    assert!(
        got.to_text().unwrap().contains("\"data\":\"live\""),
        "the oversized message was not replayed: {got:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_lowering_history_applies_to_the_room_at_once_whatever_the_senders_snapshot() {
    let (server, handle) = start_with_handle(|c| c.relay.history = 10).await;
    // Admitted with history = 10 in its configuration snapshot.
    let mut old = server.connect("/h").await;
    let texts = |prefix: &str, n: usize| -> Vec<Message> {
        (1..=n)
            .map(|i| Message::text(format!("{prefix}{i}")))
            .collect()
    };
    send_all(&mut old, &texts("m", 8)).await;

    let mut lower = common::test_config(&server.cert);
    lower.relay.history = 3;
    handle.reload(lower).unwrap();
    let mut late = server.connect("/h").await;
    for i in 6..=8 {
        assert_eq!(late.recv_relayed().await, Message::text(format!("m{i}")));
    }
    // The old connection's messages are kept to the new bound too, not to its snapshot's 10.
    send_all(&mut old, &texts("n", 5)).await;
    for i in 1..=5 {
        assert_eq!(late.recv_relayed().await, Message::text(format!("n{i}")));
    }
    let mut later = server.connect("/h").await;
    for i in 3..=5 {
        assert_eq!(later.recv_relayed().await, Message::text(format!("n{i}")));
    }
    old.send_text("live").await;
    assert_eq!(later.recv_relayed().await, Message::text("live"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_message_is_closed_with_1009_and_others_go_on() {
    let server = start(|c| c.relay.max_message_size = 1024).await;
    let mut big = server.connect("/s").await;
    let mut other = server.connect("/s").await;
    big.send(Message::Binary(Bytes::from(vec![7u8; 1025])))
        .await;
    assert_eq!(big.closed().await.code, CloseCode::Size);
    other.send_text("still here").await;
    assert_eq!(other.recv_relayed().await, Message::text("still here"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_huge_length_is_refused_from_the_header() {
    let server = start(|_| {}).await;
    let mut raw = RawClient::connect(&server, "/s").await;
    // A binary frame header declaring 2^62 bytes, followed by nothing: judged on the header alone.
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&(1u64 << 62).to_be_bytes());
    header.extend_from_slice(&[1, 2, 3, 4]);
    raw.send_raw(&header).await;
    assert_eq!(raw.close_code().await, Some(1009));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_text_is_closed_with_1007() {
    let server = start(|_| {}).await;
    let mut raw = RawClient::connect(&server, "/u").await;
    let mut other = server.connect("/u").await;
    raw.send_frame(true, 0x1, &[b'o', b'k', 0xff, 0xfe], true)
        .await;
    assert_eq!(raw.close_code().await, Some(1007));
    other.send_text("fine").await;
    assert_eq!(other.recv_relayed().await, Message::text("fine"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_split_across_fragments_is_closed_with_1007() {
    let server = start(|_| {}).await;
    let mut raw = RawClient::connect(&server, "/u").await;
    raw.send_frame(false, 0x1, b"abc", true).await;
    raw.send_frame(true, 0x0, &[0xc3, 0x28], true).await;
    assert_eq!(raw.close_code().await, Some(1007));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_message_is_relayed_whole() {
    let server = start(|_| {}).await;
    let mut raw = RawClient::connect(&server, "/f").await;
    let mut b = server.connect("/f").await;
    server
        .wait_stats("two members", |s| s["rooms"]["f"] == 2)
        .await;
    raw.send_frame(false, 0x1, b"hel", true).await;
    raw.send_frame(true, 0x0, b"lo", true).await;
    assert_eq!(b.recv_relayed().await, Message::text("hello"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unmasked_client_frame_is_a_protocol_error() {
    let server = start(|_| {}).await;
    let mut raw = RawClient::connect(&server, "/p").await;
    raw.send_frame(true, 0x1, b"naked", false).await;
    assert_eq!(raw.close_code().await, Some(1002));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_rooms_is_503_before_the_upgrade() {
    let server = start(|c| c.relay.max_rooms = 2).await;
    let _a = server.connect("/r1").await;
    let _b = server.connect("/r2").await;
    assert_eq!(server.try_connect("/r3").await.err(), Some(503));
    // An existing room still admits.
    let _c = server.connect("/r1").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_rooms_disappear() {
    let server = start(|_| {}).await;
    let a = server.connect("/gone").await;
    server
        .wait_stats("room exists", |s| s["rooms"]["gone"] == 1)
        .await;
    a.close().await;
    let s = server
        .wait_stats("room pruned", |s| s["rooms"].get("gone").is_none())
        .await;
    assert_eq!(s["connections"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_prints_the_worst_case_history_memory_and_refuses_a_replay_that_cannot_fit() {
    let cert = common::TestCert::new();
    let path = cert.dir.path().join("wsline.toml");
    let check = |extra: &str| {
        std::fs::write(
            &path,
            format!(
                "[tls]\ncert = {:?}\nkey = {:?}\n{extra}",
                cert.cert_path, cert.key_path
            ),
        )
        .unwrap();
        std::process::Command::new(env!("CARGO_BIN_EXE_wsline"))
            .arg("--check-config")
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap()
    };
    let out = check("[relay]\nhistory = 50\n");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        stdout.contains("history: at most 2.4 GiB (10000 rooms x 256.0 KiB per room"),
        "{stdout}"
    );
    // 3 900 KiB of history and a presence state of up to 253 KiB do not fit a 4 MiB queue.
    let out = check("[relay]\nhistory = 50\nhistory_bytes = \"3900KiB\"\n");
    assert_eq!(out.status.code(), Some(78), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("relay.history_bytes"), "{stderr}");
}

//! Hostile input sent as raw bytes over TLS: each gets its close code or status, and a bystander
//! pair in the same room keeps relaying throughout.

mod common;

use common::{Client, RawClient, TestServer, start, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const ROOM: &str = "/arena";

struct Bystanders {
    a: Client,
    b: Client,
    n: usize,
}

impl Bystanders {
    async fn join(server: &TestServer) -> Bystanders {
        let a = server.connect(ROOM).await;
        let b = server.connect(ROOM).await;
        Bystanders { a, b, n: 0 }
    }

    /// A message from A reaches B, and it is the next relayed message B sees.
    async fn still_relay(&mut self) {
        self.n += 1;
        let text = format!("bystander {}", self.n);
        self.a.send_text(&text).await;
        assert_eq!(self.b.recv_relayed().await, Message::text(text));
    }
}

/// Sends `frames` from a fresh raw client in the bystanders' room and returns the close code.
async fn close_code_for(server: &TestServer, frames: &[Vec<u8>]) -> Option<u16> {
    let mut raw = RawClient::connect(server, ROOM).await;
    for f in frames {
        raw.send_raw(f).await;
    }
    raw.close_code().await
}

fn frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    common::encode_frame(fin, opcode, payload, true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_1002_and_bystanders_keep_relaying() {
    let server = start(|_| {}).await;
    let mut by = Bystanders::join(&server).await;
    let mut reserved_bits = frame(true, 0x1, b"rsv");
    reserved_bits[0] |= 0x40;
    let cases: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("reserved bits", vec![reserved_bits]),
        ("unknown data opcode", vec![frame(true, 0x3, b"x")]),
        ("unknown control opcode", vec![frame(true, 0xB, b"x")]),
        ("fragmented ping", vec![frame(false, 0x9, b"p")]),
        ("ping over 125 bytes", vec![frame(true, 0x9, &[0u8; 126])]),
        (
            "continuation without a start",
            vec![frame(true, 0x0, b"orphan")],
        ),
        (
            "interleaved data frames",
            vec![frame(false, 0x1, b"half"), frame(true, 0x2, b"other")],
        ),
        (
            "unmasked frame",
            vec![common::encode_frame(true, 0x1, b"bare", false)],
        ),
        (
            "close with a reserved code",
            vec![frame(true, 0x8, &[0x03, 0xEC])],
        ),
    ];
    for (what, frames) in cases {
        let code = close_code_for(&server, &frames).await;
        assert_eq!(code, Some(1002), "{what}");
        by.still_relay().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn size_and_encoding_violations_get_their_codes() {
    let server = start(|c| c.relay.max_message_size = 4096).await;
    let mut by = Bystanders::join(&server).await;
    let mut absurd = vec![0x82, 0x80 | 127];
    absurd.extend_from_slice(
        &u64::MAX.to_be_bytes()[..]
            .iter()
            .map(|b| b & 0x7f)
            .collect::<Vec<_>>(),
    );
    absurd.extend_from_slice(&[0, 0, 0, 0]);
    let cases: Vec<(&str, Vec<Vec<u8>>, u16)> = vec![
        ("declared length near 2^63", vec![absurd], 1009),
        (
            "one frame over the limit",
            vec![frame(true, 0x2, &[1u8; 4097])],
            1009,
        ),
        (
            "fragments adding up over the limit",
            vec![
                frame(false, 0x2, &[1u8; 3000]),
                frame(true, 0x0, &[1u8; 3000]),
            ],
            1009,
        ),
        ("invalid UTF-8", vec![frame(true, 0x1, &[0xff])], 1007),
        (
            "UTF-8 broken across fragments",
            vec![frame(false, 0x1, &[0xe2, 0x82]), frame(true, 0x0, &[0x41])],
            1007,
        ),
    ];
    for (what, frames, expected) in cases {
        assert_eq!(
            close_code_for(&server, &frames).await,
            Some(expected),
            "{what}"
        );
        by.still_relay().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_and_plain_http_on_the_tls_port_are_dropped() {
    let server = start(|_| {}).await;
    let mut by = Bystanders::join(&server).await;
    for junk in [
        &b"\x00\x01\x02garbage that is not a TLS record\r\n\r\n"[..],
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"\x16\x03\x01\xff\xff",
    ] {
        let mut tcp = TcpStream::connect(server.addr).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut sink = Vec::new();
        // The server answers at most a TLS alert, then hangs up.
        let _ = within("the server to hang up", tcp.read_to_end(&mut sink)).await;
        assert!(
            !String::from_utf8_lossy(&sink).contains("HTTP/1.1"),
            "{sink:?}"
        );
        by.still_relay().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tcp_reset_mid_frame_frees_the_connection() {
    let server = start(|_| {}).await;
    let mut by = Bystanders::join(&server).await;
    let mut raw = RawClient::connect(&server, ROOM).await;
    server
        .wait_stats("three members", |s| s["rooms"]["arena"] == 3)
        .await;
    // Half a frame: a header announcing 1000 bytes and only 10 of them.
    let whole = frame(true, 0x2, &[9u8; 1000]);
    raw.send_raw(&whole[..18]).await;
    let tcp = raw.stream.into_inner().0;
    tcp.set_zero_linger().unwrap();
    drop(tcp); // SO_LINGER 0: the kernel sends RST
    server
        .wait_stats("the reset client to leave", |s| s["rooms"]["arena"] == 2)
        .await;
    by.still_relay().await;
    server.stop().await;
}

/// Reads frames up to and including the close frame: (opcode, payload) of each, in order.
async fn frames_until_close(raw: &mut RawClient) -> Vec<(u8, Vec<u8>)> {
    let mut seen = Vec::new();
    while let Some((opcode, payload)) = raw.frame().await {
        seen.push((opcode, payload));
        if opcode == 0x8 {
            break;
        }
    }
    seen
}

fn close_code_of(frames: &[(u8, Vec<u8>)]) -> Option<u16> {
    frames
        .last()
        .filter(|(opcode, _)| *opcode == 0x8)
        .map(|(_, p)| u16::from_be_bytes([p[0], p[1]]))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_queued_is_written_before_a_protocol_error_close() {
    let server = start(|c| c.presence.format = wsline::config::PresenceFormat::Off).await;
    let mut by = Bystanders::join(&server).await;
    let mut reserved_bits = frame(true, 0x1, b"rsv");
    reserved_bits[0] |= 0x40;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("reserved bits", reserved_bits),
        ("unknown opcode", frame(true, 0x3, b"x")),
        ("orphan continuation", frame(true, 0x0, b"orphan")),
    ];
    for (what, bad) in cases {
        let mut raw = RawClient::connect(&server, ROOM).await;
        // The valid message and the bad frame in one write: the echo is queued when the bad
        // frame is read.
        let mut bytes = frame(true, 0x1, what.as_bytes());
        bytes.extend_from_slice(&bad);
        raw.send_raw(&bytes).await;
        let frames = frames_until_close(&mut raw).await;
        let relayed: Vec<_> = frames.iter().filter(|(op, _)| *op != 0x8).collect();
        assert_eq!(
            relayed,
            vec![&(0x1, what.as_bytes().to_vec())],
            "{what}: the echo"
        );
        assert_eq!(close_code_of(&frames), Some(1002), "{what}: then 1002");
        assert_eq!(
            by.b.recv_relayed().await,
            Message::text(what),
            "{what}: relayed"
        );
        by.still_relay().await;
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_and_a_short_message_then_close_get_both_echoes_then_the_close_reply() {
    const BIG: usize = 256 * 1024;
    let server = start(|c| {
        c.relay.max_message_size = BIG as u64;
        c.presence.format = wsline::config::PresenceFormat::Off;
    })
    .await;
    let mut raw = RawClient::connect(&server, ROOM).await;
    let big: Vec<u8> = (0..BIG).map(|i| (i % 253) as u8).collect();
    let mut bytes = frame(true, 0x2, &big);
    bytes.extend_from_slice(&frame(true, 0x1, b"short"));
    bytes.extend_from_slice(&frame(true, 0x8, &1000u16.to_be_bytes()));
    raw.send_raw(&bytes).await;
    let frames = frames_until_close(&mut raw).await;
    assert_eq!(frames.len(), 3, "two echoes and the close reply");
    assert!(frames[0] == (0x2, big), "the 256 KiB echo, intact");
    assert_eq!(frames[1], (0x1, b"short".to_vec()));
    assert_eq!(close_code_of(&frames), Some(1000));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_sent_with_the_upgrade_request_are_read() {
    let server = start(|c| c.presence.format = wsline::config::PresenceFormat::Off).await;
    // The frames arrive with the request head, so the HTTP layer has read them already.
    let mut first = frame(true, 0x1, b"eager");
    first.extend_from_slice(&frame(true, 0x2, &[7u8; 300]));
    let mut raw = RawClient::upgrade_sending(server.tls().await, ROOM, &first).await;
    assert_eq!(raw.frame().await, Some((0x1, b"eager".to_vec())));
    assert_eq!(raw.frame().await, Some((0x2, vec![7u8; 300])));
    server.stop().await;
}

//! Every close code reaches the client: after wsline's close frame the connection keeps reading
//! and discarding until the client's close (the lingering close), so a client still sending sees
//! the code instead of a reset; every ping gets its pong; invalid UTF-8 fails a text message as
//! soon as it arrives (Autobahn|Testsuite cases 2.10 and 6.4.1-6.4.4, by our own tests).

mod common;

use std::time::Duration;

use common::{RawClient, encode_frame, start};
use tokio::io::AsyncWriteExt;

/// How long a client waits for a close frame that must come before it sends anything more.
const PROMPT: Duration = Duration::from_secs(3);

/// Reads frames until a close frame (its code) or the end of the stream (`None`), within `PROMPT`.
async fn close_code_within(raw: &mut RawClient) -> Option<u16> {
    tokio::time::timeout(PROMPT, raw.close_code())
        .await
        .unwrap_or(None)
}

/// Writes `bytes` in 16 KiB pieces, as a client streaming a message does, within `PROMPT`;
/// `false` when a write failed (a reset: a browser gives up there and reports 1006).
async fn stream_out(raw: &mut RawClient, bytes: &[u8]) -> bool {
    let write = async {
        for piece in bytes.chunks(16 * 1024) {
            raw.stream.write_all(piece).await?;
            raw.stream.flush().await?;
        }
        Ok::<_, std::io::Error>(())
    };
    matches!(tokio::time::timeout(PROMPT, write).await, Ok(Ok(())))
}

/// Whether the server ends the stream (EOF or reset) within `PROMPT`, sending no more frames.
async fn ends(raw: &mut RawClient) -> bool {
    matches!(tokio::time::timeout(PROMPT, raw.frame()).await, Ok(None))
}

/// The close handshake the server starts ends cleanly and at once: after its close frame and the
/// client's reply, it closes the TCP connection (Autobahn's "the server should close the TCP
/// connection"), whether it refused a whole frame, a frame in the middle, or a bad close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_its_close_and_the_reply_the_server_closes_the_connection_at_once() {
    let server = start(|c| c.presence.format = wsline::config::PresenceFormat::Off).await;
    let invalid_text = encode_frame(true, 0x1, b"\xce\xba\xed\xa0\x80edited", true);
    let invalid_then_more = encode_frame(true, 0x1, &[&[0xffu8][..], &[b'x'; 300]].concat(), true);
    for (what, frames, code) in [
        ("invalid UTF-8", invalid_text, 1007),
        (
            "invalid UTF-8 first, 300 bytes after",
            invalid_then_more,
            1007,
        ),
        (
            "reserved bits",
            {
                let mut f = encode_frame(true, 0x1, b"rsv", true);
                f[0] |= 0x20;
                f
            },
            1002,
        ),
    ] {
        let mut raw = RawClient::connect(&server, "/clean").await;
        raw.send_raw(&frames).await;
        assert_eq!(close_code_within(&mut raw).await, Some(code), "{what}");
        let started = std::time::Instant::now();
        stream_out(
            &mut raw,
            &encode_frame(true, 0x8, &1000u16.to_be_bytes(), true),
        )
        .await;
        assert!(
            ends(&mut raw).await,
            "{what}: the server kept the connection"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    // A bad close frame (too long for a control frame, or a code that may not be sent) is the
    // client's close all the same: the server answers 1002 and closes without waiting for another.
    let too_long = encode_frame(
        true,
        0x8,
        &[&1000u16.to_be_bytes()[..], &[b'r'; 124]].concat(),
        true,
    );
    let bad_code = encode_frame(true, 0x8, &1005u16.to_be_bytes(), true);
    for (what, frame) in [
        ("a 126-byte close", too_long),
        ("close code 1005", bad_code),
    ] {
        let mut raw = RawClient::connect(&server, "/clean").await;
        let started = std::time::Instant::now();
        raw.send_raw(&frame).await;
        assert_eq!(close_code_within(&mut raw).await, Some(1002), "{what}");
        assert!(
            ends(&mut raw).await,
            "{what}: the server kept the connection"
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{what}: {:?}",
            started.elapsed()
        );
    }
    server.stop().await;
}

/// A 1 MiB message over a 64 KiB limit: the server refuses it at its header, then reads and
/// discards the rest, so the client, still writing, reads `1009` every time (it used to read a
/// reset most of the time: 1 of 20 at 1 MiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_streaming_a_message_over_the_limit_reads_1009_every_time() {
    let server = start(|c| c.presence.format = wsline::config::PresenceFormat::Off).await;
    let frame = encode_frame(true, 0x2, &vec![7u8; 1024 * 1024], true);
    let mut seen = 0;
    for _ in 0..20 {
        let mut raw = RawClient::connect(&server, "/big").await;
        // The whole frame is written, as a browser would: the server must keep reading, or the
        // client's writes meet a reset.
        let wrote = stream_out(&mut raw, &frame).await;
        if close_code_within(&mut raw).await == Some(1009) && wrote {
            seen += 1;
        }
        let reply = encode_frame(true, 0x8, &1009u16.to_be_bytes(), true);
        stream_out(&mut raw, &reply).await;
    }
    assert_eq!(seen, 20, "close 1009 read {seen} times of 20");
    server.assert_still_relays().await;
    server.stop().await;
}

/// A protocol error (reserved bits) in the header of a large frame whose payload is still on its
/// way: the client reads `1002`, every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_protocol_error_reaches_a_client_still_streaming_a_large_frame() {
    let server = start(|c| {
        c.presence.format = wsline::config::PresenceFormat::Off;
        c.relay.max_message_size = 2 * 1024 * 1024;
        c.limits.queue_bytes = 4 * 1024 * 1024;
    })
    .await;
    let mut frame = encode_frame(true, 0x2, &vec![7u8; 1024 * 1024], true);
    frame[0] |= 0x40;
    let mut seen = 0;
    for _ in 0..20 {
        let mut raw = RawClient::connect(&server, "/rsv").await;
        let wrote = stream_out(&mut raw, &frame).await;
        if close_code_within(&mut raw).await == Some(1002) && wrote {
            seen += 1;
        }
    }
    assert_eq!(seen, 20, "close 1002 read {seen} times of 20");
    server.stop().await;
}

/// Autobahn 2.10: ten pings with payloads in one write get ten pongs, payloads in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_pings_in_one_write_get_ten_pongs_in_order() {
    let server = start(|c| c.presence.format = wsline::config::PresenceFormat::Off).await;
    let mut raw = RawClient::connect(&server, "/ping").await;
    let payloads: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("payload {i}").into_bytes())
        .collect();
    let pings: Vec<u8> = payloads
        .iter()
        .flat_map(|p| encode_frame(true, 0x9, p, true))
        .collect();
    raw.send_raw(&pings).await;
    let mut pongs = Vec::new();
    while pongs.len() < 10 {
        let (opcode, payload) = raw.frame().await.expect("a pong");
        assert_eq!(opcode, 0xA, "only pongs were asked for");
        pongs.push(payload);
    }
    assert_eq!(pongs, payloads);
    server.stop().await;
}

/// A text message sent in three fragments, the second making it invalid UTF-8: `1007` comes
/// before the third is sent (Autobahn 6.4.1, 6.4.2: a code point over U+10FFFF, whole or cut).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_fragment_fails_before_the_last_fragment() {
    let server = start(|c| c.presence.format = wsline::config::PresenceFormat::Off).await;
    let kosme = "κόσμε".as_bytes();
    for (second, third) in [
        (&[0xf4, 0x90, 0x80, 0x80][..], &b"edited"[..]),
        (&[0xf4, 0x90][..], &[0x80, 0x80, b'e', b'd', b'i', b't'][..]),
    ] {
        let mut raw = RawClient::connect(&server, "/utf8").await;
        raw.send_frame(false, 0x1, kosme, true).await;
        raw.send_frame(false, 0x0, second, true).await;
        assert_eq!(
            close_code_within(&mut raw).await,
            Some(1007),
            "before the last fragment ({second:02x?})"
        );
        // Sent late, the last fragment changes nothing (it may find the stream closed).
        stream_out(&mut raw, &encode_frame(true, 0x0, third, true)).await;
    }
    server.stop().await;
}

/// One text frame sent in chops, invalid UTF-8 in the second chop: `1007` comes before the rest
/// of the frame is sent (Autobahn 6.4.3, 6.4.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_utf8_in_a_chop_of_a_frame_fails_before_the_frame_ends() {
    let server = start(|c| c.presence.format = wsline::config::PresenceFormat::Off).await;
    let mut payload = "κόσμε".as_bytes().to_vec();
    let first = payload.len();
    payload.extend_from_slice(&[0xf4, 0x90, 0x80, 0x80]);
    payload.extend_from_slice(b"edited");
    let frame = encode_frame(true, 0x1, &payload, true);
    let header = frame.len() - payload.len();
    for cut in [header + first + 4, header + first + 2] {
        let mut raw = RawClient::connect(&server, "/chops").await;
        raw.send_raw(&frame[..header + first]).await;
        raw.send_raw(&frame[header + first..cut]).await;
        assert_eq!(
            close_code_within(&mut raw).await,
            Some(1007),
            "before the frame's end (cut at {cut})"
        );
    }
    // A character cut at a chop boundary is fine: only invalid bytes fail.
    let mut raw = RawClient::connect(&server, "/chops").await;
    let text = "ünïcödé ✓".repeat(50);
    let frame = encode_frame(true, 0x1, text.as_bytes(), true);
    for chop in frame.chunks(7) {
        raw.send_raw(chop).await;
    }
    assert_eq!(raw.frame().await, Some((0x1, text.into_bytes())));
    server.stop().await;
}

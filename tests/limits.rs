//! Admission limits and per-connection limits: each refusal has its status or close code, and the
//! server goes on serving everyone else.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, start, upgrade_request, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_answers_503_with_retry_after() {
    let server = start(|c| c.limits.max_connections = 2).await;
    let a = server.connect("/full").await;
    let _b = server.connect("/full").await;
    let (status, head, _) = server.http(&upgrade_request("/full", "")).await;
    assert_eq!(status, 503);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    // A slot frees when a client leaves.
    a.close().await;
    within("a slot to free", async {
        while server.try_connect("/full").await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_address_limit_is_429_and_counts_the_forwarded_client() {
    let server = start(|c| c.limits.max_connections_per_ip = 2).await;
    // The test connects from 127.0.0.1, a trusted proxy by default: X-Forwarded-For names the client.
    let from = |ip: &str| format!("X-Forwarded-For: {ip}\r\n");
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut raw = server.tls().await;
        raw.write_all(upgrade_request("/ip", &from("203.0.113.5")).as_bytes())
            .await
            .unwrap();
        let (status, _, _) = common::read_response(&mut raw).await;
        assert_eq!(status, 101);
        held.push(raw);
    }
    let (status, head, _) = server
        .http(&upgrade_request("/ip", &from("203.0.113.5")))
        .await;
    assert_eq!(status, 429);
    assert!(
        head.to_ascii_lowercase().contains("retry-after: "),
        "{head}"
    );
    // Another client behind the same proxy has its own quota; so does a spoofed left-most entry.
    assert_eq!(
        server
            .http(&upgrade_request("/ip", &from("203.0.113.6")))
            .await
            .0,
        101
    );
    assert_eq!(
        server
            .http(&upgrade_request("/ip", &from("203.0.113.5, 203.0.113.7")))
            .await
            .0,
        101
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_from_an_untrusted_peer_is_ignored() {
    let server = start(|c| {
        c.limits.max_connections_per_ip = 1;
        c.security.trusted_proxies = vec![];
    })
    .await;
    let _first = RawClient::connect(&server, "/u").await;
    // Claiming another address does not help: the peer (127.0.0.1) is not a trusted proxy.
    let spoofed = upgrade_request("/u", "X-Forwarded-For: 198.51.100.1\r\n");
    assert_eq!(server.http(&spoofed).await.0, 429);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_is_required_by_query_or_bearer() {
    let server = start(|c| c.security.token = "s3cret-token".into()).await;
    let (status, head, _) = server.http(&upgrade_request("/t", "")).await;
    assert_eq!(status, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{head}"
    );
    assert_eq!(
        server.http(&upgrade_request("/t?token=wrong", "")).await.0,
        401
    );
    assert_eq!(
        server
            .http(&upgrade_request("/t?token=s3cret-token", ""))
            .await
            .0,
        101
    );
    let bearer = upgrade_request("/t", "Authorization: Bearer s3cret-token\r\n");
    assert_eq!(server.http(&bearer).await.0, 101);
    let wrong_bearer = upgrade_request("/t", "Authorization: Bearer s3cret-tokeN\r\n");
    assert_eq!(server.http(&wrong_bearer).await.0, 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_request_head_is_431() {
    let server = start(|_| {}).await;
    let huge = format!("X-Filler: {}\r\n", "a".repeat(20 * 1024));
    let (status, _, _) = server.http(&upgrade_request("/", &huge)).await;
    assert_eq!(status, 431);
    server.assert_still_relays().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tcp_connection_is_dropped_at_the_handshake_timeout() {
    let timeout = Duration::from_millis(500);
    let server = start(|c| c.limits.handshake_timeout = timeout).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = within("the server to hang up", tcp.read(&mut buf))
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "expected EOF");
    let took = started.elapsed();
    assert!(
        took >= timeout - Duration::from_millis(50) && took < timeout * 4,
        "{took:?}"
    );
    server.assert_still_relays().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_request_head_is_dropped_at_the_handshake_timeout() {
    let timeout = Duration::from_millis(800);
    let server = start(|c| c.limits.handshake_timeout = timeout).await;
    let mut tls = server.tls().await;
    let started = Instant::now();
    // One header byte every 100 ms: the head never completes.
    let closed = within("the server to hang up", async {
        for b in
            b"GET / HTTP/1.1\r\nHost: localhost\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".iter()
        {
            if tls.write_all(&[*b]).await.is_err() || tls.flush().await.is_err() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            let mut probe = [0u8; 256];
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(1), tls.read(&mut probe)).await
            {
                // EOF, or hyper's 408 before closing.
                if n == 0 || probe.starts_with(b"HTTP/1.1 408") {
                    return true;
                }
            }
        }
        false
    })
    .await;
    assert!(closed, "the slow head was never cut off");
    assert!(started.elapsed() < timeout * 3, "{:?}", started.elapsed());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_over_its_message_rate_is_closed_with_1008() {
    let server = start(|c| {
        c.limits.messages_per_second = 5;
        c.limits.burst = 10;
    })
    .await;
    let mut flooder = RawClient::connect(&server, "/rate").await;
    for i in 0..20 {
        flooder
            .send_frame(true, 0x1, format!("m{i}").as_bytes(), true)
            .await;
    }
    let mut code = None;
    while let Some((opcode, payload)) = flooder.frame().await {
        if opcode == 0x8 {
            code = Some(u16::from_be_bytes([payload[0], payload[1]]));
            assert_eq!(&payload[2..], b"rate limit");
            break;
        }
    }
    assert_eq!(code, Some(1008));
    let stats = server.stats().await;
    assert_eq!(
        stats["messages_in"], 10,
        "the burst passed, nothing after it"
    );
    server.assert_still_relays().await;
    server.stop().await;
}

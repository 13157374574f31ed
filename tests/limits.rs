//! Admission limits and per-connection limits: every socket counts from accept() (over a limit it
//! is closed at once), each refusal has its status or close code, and the server goes on serving
//! everyone else.

mod common;

use std::time::{Duration, Instant};

use common::{RawClient, TestServer, start, upgrade_request, within};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

/// A TCP connection to the server from `local` (any 127.0.0.0/8 address is this host).
async fn tcp_from(local: &str, server: &TestServer) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{local}:0").parse().unwrap()).unwrap();
    socket.connect(server.addr).await.unwrap()
}

/// A TLS connection from `local`; `None` when the server closed the socket instead.
async fn tls_from(local: &str, server: &TestServer) -> Option<TlsStream<TcpStream>> {
    let tcp = tcp_from(local, server).await;
    let connector = tokio_rustls::TlsConnector::from(server.cert.client_config());
    within(
        "the handshake or the close",
        connector.connect(ServerName::try_from("localhost").unwrap(), tcp),
    )
    .await
    .ok()
}

/// Whether the server closes `tcp` at once (end of file or reset within a second), having sent
/// nothing: no TLS work was done for it.
async fn closed_at_once(tcp: &mut TcpStream) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";

/// Sockets count from accept(): 60 keep-alive HTTPS connections from one address with
/// `max_connections_per_ip = 5`: five are served and stay, the others are closed at once (before
/// any TLS), and a member from another address is not affected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_count_against_the_address_limit_from_accept() {
    let server = start(|c| {
        c.limits.max_connections_per_ip = 5;
        c.limits.handshake_timeout = Duration::from_secs(30);
        c.security.trusted_proxies = vec![];
        c.metrics.allow = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await;
    let mut served = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let started = Instant::now();
        match tls_from("127.0.0.1", &server).await {
            Some(mut tls) => {
                tls.write_all(HEALTHZ.as_bytes()).await.unwrap();
                assert_eq!(common::read_response(&mut tls).await.0, 200);
                served.push(tls);
            }
            None => {
                refused += 1;
                assert!(started.elapsed() < Duration::from_secs(1), "not at once");
            }
        }
    }
    assert_eq!((served.len(), refused), (5, 55));
    // The five kept-alive connections are still served.
    for tls in &mut served {
        tls.write_all(HEALTHZ.as_bytes()).await.unwrap();
        assert_eq!(common::read_response(tls).await.0, 200);
    }
    // Another address: a member joins and relays, and sees the refusals counted.
    let tls = tls_from("127.0.0.2", &server)
        .await
        .expect("another address");
    let mut other = RawClient::upgrade(tls, "/other").await;
    other.send_frame(true, 0x1, b"still here", true).await;
    // The presence state comes first, then the echo.
    while other.frame().await.expect("the echo") != (0x1, b"still here".to_vec()) {}
    let tls = tls_from("127.0.0.3", &server)
        .await
        .expect("a third address");
    let (status, _, metrics) = common::exchange(
        tls,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        metrics.contains("wsline_sockets_refused_total 55"),
        "{metrics}"
    );
    // One leaves: its slot is free again.
    drop(served.pop());
    within("a slot to free", async {
        loop {
            if let Some(mut tls) = tls_from("127.0.0.1", &server).await {
                tls.write_all(HEALTHZ.as_bytes()).await.unwrap();
                if common::read_response(&mut tls).await.0 == 200 {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}

/// The same for TLS handshakes left unfinished: five sockets that never finish their handshake
/// hold the address's five slots; the sixth is closed at once, not at the handshake timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_handshakes_count_against_the_address_limit() {
    let server = start(|c| {
        c.limits.max_connections_per_ip = 5;
        c.limits.handshake_timeout = Duration::from_secs(30);
        c.security.trusted_proxies = vec![];
    })
    .await;
    let mut pending = Vec::new();
    let mut refused = 0;
    for _ in 0..60 {
        let mut tcp = tcp_from("127.0.0.1", &server).await;
        // Half a record header: the handshake never completes.
        tcp.write_all(&[0x16, 0x03]).await.unwrap();
        if closed_at_once(&mut tcp).await {
            refused += 1;
        } else {
            pending.push(tcp);
        }
    }
    assert_eq!((pending.len(), refused), (5, 55));
    let tls = tls_from("127.0.0.2", &server)
        .await
        .expect("another address");
    let (status, _, _) = common::exchange(tls, HEALTHZ).await;
    assert_eq!(status, 200);
    server.stop().await;
}

/// The total counts every socket too: with `max_connections = 2` and two members, a third socket
/// is closed at once, whatever its address; a slot frees when a member leaves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_server_closes_new_sockets_at_once() {
    let server = start(|c| c.limits.max_connections = 2).await;
    let a = server.connect("/full").await;
    let _b = server.connect("/full").await;
    let mut third = tcp_from("127.0.0.9", &server).await;
    assert!(closed_at_once(&mut third).await);
    a.close().await;
    within("a slot to free", async {
        loop {
            if let Some(tls) = tls_from("127.0.0.1", &server).await {
                let url = format!("wss://localhost:{}/full", server.addr.port());
                if tokio_tungstenite::client_async(url, tls).await.is_ok() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    server.stop().await;
}

/// Behind a trusted proxy the proxy's sockets are not limited per address (they carry many
/// clients), but each upgrade counts under its real client's address, together with that
/// client's direct sockets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_proxy_the_real_client_is_limited_and_the_proxy_is_not() {
    let server = start(|c| {
        c.limits.max_connections_per_ip = 2;
        c.security.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    // Ten kept-alive sockets from the proxy: all served.
    let mut proxy = Vec::new();
    for _ in 0..10 {
        let mut tls = tls_from("127.0.0.1", &server).await.expect("the proxy");
        tls.write_all(HEALTHZ.as_bytes()).await.unwrap();
        assert_eq!(common::read_response(&mut tls).await.0, 200);
        proxy.push(tls);
    }
    // The client 127.0.0.2 connects once directly and once through the proxy: its two slots.
    let direct = tls_from("127.0.0.2", &server).await.expect("direct");
    let _direct = RawClient::upgrade(direct, "/p").await;
    let forwarded = |ip: &str| upgrade_request("/p", &format!("X-Forwarded-For: {ip}\r\n"));
    let mut via = tls_from("127.0.0.1", &server).await.unwrap();
    via.write_all(forwarded("127.0.0.2").as_bytes())
        .await
        .unwrap();
    assert_eq!(common::read_response(&mut via).await.0, 101);
    // A third, either way, is over its limit.
    let again = tls_from("127.0.0.1", &server).await.unwrap();
    assert_eq!(
        common::exchange(again, &forwarded("127.0.0.2")).await.0,
        429
    );
    let mut third = tcp_from("127.0.0.2", &server).await;
    assert!(closed_at_once(&mut third).await);
    // Another client through the same proxy has its own quota.
    let other = tls_from("127.0.0.1", &server).await.unwrap();
    assert_eq!(
        common::exchange(other, &forwarded("203.0.113.9")).await.0,
        101
    );
    server.stop().await;
}

/// A kept-alive HTTP connection is closed `limits.keepalive_timeout` after its last response,
/// and one carries at most `limits.keepalive_requests` requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_connections_have_an_idle_timeout_and_a_request_cap() {
    let idle = Duration::from_millis(600);
    let server = start(|c| {
        c.limits.keepalive_timeout = idle;
        c.limits.keepalive_requests = 3;
    })
    .await;
    let mut tls = server.tls().await;
    tls.write_all(HEALTHZ.as_bytes()).await.unwrap();
    assert_eq!(common::read_response(&mut tls).await.0, 200);
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let n = within("the idle connection to be closed", tls.read(&mut buf)).await;
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
    let took = started.elapsed();
    assert!(
        took >= idle - Duration::from_millis(50) && took < idle * 4,
        "{took:?}"
    );

    let mut tls = server.tls().await;
    for i in 1..=3 {
        tls.write_all(HEALTHZ.as_bytes()).await.unwrap();
        let (status, head, _) = common::read_response(&mut tls).await;
        assert_eq!(status, 200);
        let closes = head.to_ascii_lowercase().contains("connection: close");
        assert_eq!(closes, i == 3, "request {i}: {head}");
    }
    let n = within(
        "the connection to end after its last request",
        tls.read(&mut buf),
    )
    .await;
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
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
        c.limits.max_connections_per_ip = 2;
        c.security.trusted_proxies = vec![];
    })
    .await;
    let _first = RawClient::connect(&server, "/u").await;
    // Claiming another address does not help: the peer (127.0.0.1) is not a trusted proxy, so its
    // upgrade is not counted again under the claimed address, and its third socket is refused.
    let spoofed = upgrade_request("/u", "X-Forwarded-For: 198.51.100.1\r\n");
    let mut second = server.tls().await;
    second.write_all(spoofed.as_bytes()).await.unwrap();
    assert_eq!(common::read_response(&mut second).await.0, 101);
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    assert!(closed_at_once(&mut third).await);
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

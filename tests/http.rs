//! HTTP on the relay's port: health, stats, the banner, errors, and refusals before the upgrade.

mod common;

use common::{start, upgrade_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_ok_in_plain_text() {
    let server = start(|_| {}).await;
    let (status, head, body) = server.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(body, "ok\n");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    let (status, _, body) = server
        .http("HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!((status, body.as_str()), (200, ""));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_reports_connections_rooms_and_messages() {
    let server = start(|_| {}).await;
    let mut a = server.connect("/s1").await;
    let _b = server.connect("/s1").await;
    let _c = server.connect("/s2").await;
    a.send_text("x").await;
    let s = server
        .wait_stats("counts", |s| {
            s["messages_in"] == 1 && s["messages_out"] == 2
        })
        .await;
    assert_eq!(s["connections"], 3);
    assert_eq!(s["rooms"], serde_json::json!({"s1": 2, "s2": 1}));
    assert!(s["uptime_seconds"].is_u64());
    assert!(s["node_id"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(s["drops"]["slow_consumers"], 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_without_upgrade_is_a_one_line_banner() {
    let server = start(|_| {}).await;
    let (status, head, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain"),
        "{head}"
    );
    assert_eq!(body.lines().count(), 1, "{body:?}");
    assert!(body.starts_with("wsline"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_path_is_404_and_other_methods_are_405() {
    let server = start(|_| {}).await;
    assert_eq!(server.get("/nope").await.0, 404);
    let (status, head, _) = server
        .http("POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 405);
    assert!(
        head.to_ascii_lowercase().contains("allow: get, head"),
        "{head}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_room_or_name_is_400_before_the_upgrade() {
    let server = start(|_| {}).await;
    for path in [
        "/a/b",
        "/bad%20room",
        &format!("/{}", "x".repeat(65)),
        "/ok?name=",
    ] {
        let (status, _, body) = server.http(&upgrade_request(path, "")).await;
        assert_eq!(status, 400, "{path}: {body}");
    }
    let (_, _, body) = server.http(&upgrade_request("/a/b", "")).await;
    assert!(body.contains("room"), "{body}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_upgrades_get_their_status() {
    let server = start(|_| {}).await;
    let wrong_version = upgrade_request("/", "").replace("Version: 13", "Version: 8");
    let (status, head, _) = server.http(&wrong_version).await;
    assert_eq!(status, 426);
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-version: 13"),
        "{head}"
    );
    let no_connection =
        upgrade_request("/", "").replace("Connection: Upgrade", "Connection: keep-alive");
    assert_eq!(server.http(&no_connection).await.0, 400);
    let bad_key = upgrade_request("/", "").replace("dGhlIHNhbXBsZSBub25jZQ==", "short");
    assert_eq!(server.http(&bad_key).await.0, 400);
    let post = upgrade_request("/", "").replace("GET", "POST");
    assert_eq!(server.http(&post).await.0, 405);
    // The server goes on serving.
    let mut a = server.connect("/after").await;
    a.send_text("fine").await;
    assert_eq!(a.recv_relayed().await, Message::text("fine"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_origin_is_403_when_origins_are_listed() {
    let server =
        start(|c| c.security.allowed_origins = vec!["https://chat.example.com".into()]).await;
    let evil = upgrade_request("/", "Origin: https://evil.example.com\r\n");
    assert_eq!(server.http(&evil).await.0, 403);
    let missing = upgrade_request("/", "");
    assert_eq!(server.http(&missing).await.0, 403);
    let good = upgrade_request("/", "Origin: https://chat.example.com\r\n");
    assert_eq!(server.http(&good).await.0, 101);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_disabled_serves_plain_http_and_ws() {
    let server = start(|c| c.tls.enabled = false).await;
    let mut tcp = TcpStream::connect(server.addr).await.unwrap();
    tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).await.unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.ends_with("\r\n\r\nok\n"), "{response}");

    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let url = format!("ws://127.0.0.1:{}/plain", server.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tcp).await.unwrap();
    futures_util::SinkExt::send(&mut ws, Message::text("clear"))
        .await
        .unwrap();
    let echoed = common::within("echo", async {
        loop {
            let m = futures_util::StreamExt::next(&mut ws)
                .await
                .unwrap()
                .unwrap();
            if !common::is_presence(&m) {
                return m;
            }
        }
    })
    .await;
    assert_eq!(echoed, Message::text("clear"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_enabled_serves_the_demo_page_with_a_relative_socket_url() {
    let server = start(|c| c.web.enabled = true).await;
    let (status, head, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html"),
        "{head}"
    );
    assert!(
        // The page's script (and through it client.js and the socket) is loaded relative to it.
        body.contains(r#"<script type="module" src="demo.js">"#),
        "{body}"
    );
    assert!(
        !body.contains("wss://"),
        "the page must not hard-code an absolute socket URL"
    );
    server.stop().await;
}

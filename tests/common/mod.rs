//! Test harness: the real server on 127.0.0.1:0 with a certificate made for the test, and clients
//! that speak real TLS and WebSocket to it. Every wait is bounded by [`WAIT`].
#![allow(dead_code)]

pub mod browser;
pub mod daemon;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::RootCertStore;
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use wsline::{Config, Server, Shutdown};

/// The longest any single expected event may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(10);

/// Awaits `f`, failing the test with `what` if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f)
        .await
        .unwrap_or_else(|_| panic!("timed out after {WAIT:?} waiting for {what}"))
}

/// A certificate and key for `localhost` / 127.0.0.1, written as PEM files in a temporary folder.
pub struct TestCert {
    pub dir: tempfile::TempDir,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: CertificateDer<'static>,
}

impl TestCert {
    pub fn new() -> TestCert {
        let dir = tempfile::tempdir().expect("temp dir");
        Self::new_in(dir)
    }

    pub fn new_in(dir: tempfile::TempDir) -> TestCert {
        Self::expiring(dir, 2040)
    }

    /// A certificate valid until January 1st of `year`.
    pub fn expiring(dir: tempfile::TempDir, year: i32) -> TestCert {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = rcgen::CertificateParams::new(names).expect("names");
        params.not_after = rcgen::date_time_ymd(year, 1, 1);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("certificate");
        let cert_path = dir.path().join("cert.pem");
        let key_path = dir.path().join("key.pem");
        std::fs::write(&cert_path, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        TestCert {
            dir,
            cert_path,
            key_path,
            der: cert.der().clone(),
        }
    }

    /// A client config trusting only this certificate, without session resumption.
    pub fn client_config(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.resumption = rustls::client::Resumption::disabled();
        Arc::new(config)
    }
}

/// A configuration for tests: TLS with a fresh certificate, listening on an ephemeral port.
pub fn test_config(cert: &TestCert) -> Config {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n\
         [tls]\ncert = {:?}\nkey = {:?}\n",
        cert.cert_path, cert.key_path
    );
    Config::from_toml(&text).expect("test config")
}

/// A server running in this test's runtime.
pub struct TestServer {
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub task: JoinHandle<()>,
    pub cert: TestCert,
}

/// Starts the server with the default test configuration changed by `tune`.
pub async fn start(tune: impl FnOnce(&mut Config)) -> TestServer {
    wsline::install_crypto_provider();
    let cert = TestCert::new();
    let mut config = test_config(&cert);
    tune(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(config).expect("server starts");
    let shutdown = server.shutdown();
    let task = tokio::spawn(server.run(vec![listener]));
    TestServer {
        addr,
        shutdown,
        task,
        cert,
    }
}

pub type Ws = WebSocketStream<TlsStream<TcpStream>>;

impl TestServer {
    pub async fn tls(&self) -> TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.expect("tcp connect");
        TlsConnector::from(self.cert.client_config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .expect("tls handshake")
    }

    /// Opens a WebSocket to `path` (with its query), failing the test if the server refuses.
    pub async fn connect(&self, path: &str) -> Client {
        self.try_connect(path)
            .await
            .unwrap_or_else(|e| panic!("connect to {path}: {e}"))
    }

    /// Opens a WebSocket to `path`; an HTTP refusal comes back as `Err(status)`.
    pub async fn try_connect(&self, path: &str) -> Result<Client, u16> {
        let url = format!("wss://localhost:{}{path}", self.addr.port());
        let stream = self.tls().await;
        match within(
            "websocket handshake",
            tokio_tungstenite::client_async_with_config(url, stream, None),
        )
        .await
        {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("handshake with {path} failed: {e}"),
        }
    }

    /// Sends a raw HTTP/1.1 request over TLS and returns status, head and body.
    pub async fn http(&self, request: &str) -> (u16, String, String) {
        exchange(self.tls().await, request).await
    }

    /// `GET path` with `Connection: close`.
    pub async fn get(&self, path: &str) -> (u16, String, String) {
        self.http(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
        ))
        .await
    }

    pub async fn stats(&self) -> Value {
        let (status, _, body) = self.get("/stats").await;
        assert_eq!(status, 200);
        serde_json::from_str(&body).expect("stats JSON")
    }

    /// Polls /stats until `pred` holds.
    pub async fn wait_stats(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        within(what, async {
            loop {
                let s = self.stats().await;
                if pred(&s) {
                    return s;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
    }

    /// Proves the server still serves: two fresh clients in a fresh room exchange a message.
    pub async fn assert_still_relays(&self) {
        let room = format!("/check{}", rand_suffix());
        let mut a = self.connect(&room).await;
        let mut b = self.connect(&room).await;
        self.wait_stats("both checkers joined", |s| s["rooms"][&room[1..]] == 2)
            .await;
        a.send_text("still relaying").await;
        assert_eq!(b.recv_relayed().await, Message::text("still relaying"));
    }

    /// Starts the drain and waits for `run` to return; returns how long that took.
    pub async fn stop(self) -> Duration {
        let started = std::time::Instant::now();
        self.shutdown.trigger();
        within("server to stop", self.task).await.unwrap();
        started.elapsed()
    }
}

/// Writes `request` on `stream` and reads one response: (status, head, body), read by
/// Content-Length, so keep-alive and 101 responses are fine.
pub async fn exchange(mut stream: TlsStream<TcpStream>, request: &str) -> (u16, String, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();
    read_response(&mut stream).await
}

/// Reads one HTTP/1.1 response: (status, head, body).
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
) -> (u16, String, String) {
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    within("http response", async {
        loop {
            if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&raw[..end]).into_owned();
                let length = head
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                let is_head_request_or_101 = head.starts_with("HTTP/1.1 101");
                if is_head_request_or_101 || raw.len() >= end + 4 + length {
                    let body_end = (end + 4 + length).min(raw.len());
                    let body = String::from_utf8_lossy(&raw[end + 4..body_end]).into_owned();
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("no status line in {head:?}"));
                    return (status, head, body);
                }
            }
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    let head = String::from_utf8_lossy(&raw).into_owned();
                    // A HEAD response has a Content-Length but no body: the connection closes.
                    let status = head
                        .split_whitespace()
                        .nth(1)
                        .and_then(|s| s.parse().ok())
                        .unwrap_or_else(|| panic!("no status line in {head:?}"));
                    let head = head.split("\r\n\r\n").next().unwrap_or("").to_owned();
                    return (status, head, String::new());
                }
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
            }
        }
    })
    .await
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A numbered binary payload of `size` bytes (the number in its first 8 bytes).
pub fn numbered(i: usize, size: usize) -> Message {
    let mut p = vec![(i % 251) as u8; size];
    p[..8].copy_from_slice(&(i as u64).to_be_bytes());
    Message::Binary(bytes::Bytes::from(p))
}

/// Publishes `count` numbered messages of `size` bytes, never more than `window` ahead of
/// `reader`, and checks that the reader receives every one, in order.
pub async fn flood_in_step(
    publisher: &mut Client,
    reader: &mut Client,
    count: usize,
    size: usize,
    window: usize,
) {
    let mut received = 0;
    for i in 0..count {
        publisher.send(numbered(i, size)).await;
        while received + window <= i {
            assert_eq!(
                reader.recv_relayed().await,
                numbered(received, size),
                "message {received}"
            );
            received += 1;
        }
    }
    while received < count {
        assert_eq!(
            reader.recv_relayed().await,
            numbered(received, size),
            "message {received}"
        );
        received += 1;
    }
}

/// A raw WebSocket upgrade request for `path`, with `extra` header lines.
pub fn upgrade_request(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

/// A WebSocket client over real TLS.
pub struct Client {
    pub ws: Ws,
}

pub fn is_presence(msg: &Message) -> bool {
    msg.to_text()
        .is_ok_and(|t| t.starts_with("{\"type\":\"presence\""))
}

impl Client {
    pub async fn send(&mut self, msg: Message) {
        within("send", self.ws.send(msg)).await.expect("send");
    }

    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text)).await;
    }

    /// The next message of any kind (pings are answered by tungstenite and skipped).
    pub async fn recv(&mut self) -> Message {
        within("a message", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(m)) => return m,
                    other => panic!("connection ended while waiting for a message: {other:?}"),
                }
            }
        })
        .await
    }

    /// The next message that is not presence.
    pub async fn recv_relayed(&mut self) -> Message {
        loop {
            let m = self.recv().await;
            if !is_presence(&m) {
                return m;
            }
        }
    }

    /// The next presence message, parsed.
    pub async fn recv_presence(&mut self) -> Value {
        loop {
            let m = self.recv().await;
            if is_presence(&m) {
                return serde_json::from_str(m.to_text().unwrap()).unwrap();
            }
        }
    }

    /// Reads until the server's close frame and returns it.
    pub async fn closed(&mut self) -> CloseFrame {
        within("a close frame", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Close(Some(frame)))) => return frame,
                    Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
                    Some(Ok(_)) => continue,
                    other => panic!("connection ended without a close frame: {other:?}"),
                }
            }
        })
        .await
    }

    /// Sends a client close and waits for the server to finish the close handshake.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        within("close handshake", async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
    }
}

/// A WebSocket client that writes frames byte by byte: for frames a polite library will not send,
/// and for a client that never reads.
pub struct RawClient {
    pub stream: TlsStream<TcpStream>,
    /// Bytes read but not yet parsed.
    buf: Vec<u8>,
}

impl RawClient {
    /// Opens a TLS connection and upgrades it to a WebSocket on `path`.
    pub async fn connect(server: &TestServer, path: &str) -> RawClient {
        Self::upgrade(server.tls().await, path).await
    }

    /// Upgrades an open TLS connection to a WebSocket on `path`.
    pub async fn upgrade(stream: TlsStream<TcpStream>, path: &str) -> RawClient {
        Self::upgrade_sending(stream, path, &[]).await
    }

    /// Upgrades an open TLS connection to a WebSocket on `path`, with `first` (frames, say) sent
    /// in the same write as the request, before any answer.
    pub async fn upgrade_sending(
        mut stream: TlsStream<TcpStream>,
        path: &str,
        first: &[u8],
    ) -> RawClient {
        let mut request = upgrade_request(path, "").into_bytes();
        request.extend_from_slice(first);
        stream.write_all(&request).await.unwrap();
        stream.flush().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        let head_end = within("101 response", async {
            loop {
                if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    return i + 4;
                }
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed during the upgrade");
                buf.extend_from_slice(&chunk[..n]);
            }
        })
        .await;
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        buf.drain(..head_end);
        RawClient { stream, buf }
    }

    /// Writes one frame, masked as a client must unless `masked` is false.
    pub async fn send_frame(&mut self, fin: bool, opcode: u8, payload: &[u8], masked: bool) {
        let frame = encode_frame(fin, opcode, payload, masked);
        self.stream.write_all(&frame).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next frame from the server as (opcode, payload); `None` at end of stream.
    pub async fn frame(&mut self) -> Option<(u8, Vec<u8>)> {
        within("a frame", async {
            loop {
                if let Some((frame, used)) = decode_frame(&self.buf) {
                    self.buf.drain(..used);
                    return Some(frame);
                }
                let mut chunk = vec![0u8; 64 * 1024];
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return None,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads one frame and compares it with `opcode` and `expected` as it streams in, never holding
    /// the whole payload (for very large messages). `false` on any difference or end of stream.
    pub async fn frame_equals(&mut self, opcode: u8, expected: &[u8]) -> bool {
        within("a frame to compare", async {
            let mut chunk = vec![0u8; 64 * 1024];
            // The header: up to 10 bytes for a server frame.
            let (len, start) = loop {
                if self.buf.len() >= 2 {
                    let need = match self.buf[1] & 0x7f {
                        126 => 4,
                        127 => 10,
                        _ => 2,
                    };
                    if self.buf.len() >= need {
                        let len = match need {
                            4 => u16::from_be_bytes([self.buf[2], self.buf[3]]) as usize,
                            10 => u64::from_be_bytes(self.buf[2..10].try_into().unwrap()) as usize,
                            _ => (self.buf[1] & 0x7f) as usize,
                        };
                        break (len, need);
                    }
                }
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            };
            if self.buf[0] & 0x0f != opcode || len != expected.len() {
                return false;
            }
            self.buf.drain(..start);
            let mut matched = 0;
            loop {
                let take = self.buf.len().min(len - matched);
                if self.buf[..take] != expected[matched..matched + take] {
                    return false;
                }
                matched += take;
                self.buf.drain(..take);
                if matched == len {
                    return true;
                }
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return false,
                    Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await
    }

    /// Reads frames until a close frame and returns its code; `None` if the stream ends first.
    pub async fn close_code(&mut self) -> Option<u16> {
        while let Some((opcode, payload)) = self.frame().await {
            if opcode == 0x8 {
                return Some(u16::from_be_bytes([payload[0], payload[1]]));
            }
        }
        None
    }
}

pub fn encode_frame(fin: bool, opcode: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![(u8::from(fin) << 7) | opcode];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n <= 0xffff => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x12, 0x34, 0x56, 0x78];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Parses one unmasked server frame from the front of `buf`: ((opcode, payload), bytes used).
fn decode_frame(buf: &[u8]) -> Option<((u8, Vec<u8>), usize)> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, start) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < start + len {
        return None;
    }
    Some(((opcode, buf[start..start + len].to_vec()), start + len))
}

/// Like [`start`], and also returns the server's [`wsline::Handle`], for tests that reload the
/// configuration or reach the hub's test hooks.
pub async fn start_with_handle(tune: impl FnOnce(&mut Config)) -> (TestServer, wsline::Handle) {
    wsline::install_crypto_provider();
    let cert = TestCert::new();
    let mut config = test_config(&cert);
    tune(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::new(config).expect("server starts");
    let (shutdown, handle) = (server.shutdown(), server.handle());
    let task = tokio::spawn(server.run(vec![listener]));
    let server = TestServer {
        addr,
        shutdown,
        task,
        cert,
    };
    (server, handle)
}

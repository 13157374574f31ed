//! wsline behind a real nginx, configured from the shipped `nginx/wsline.conf` and
//! `nginx/wsline-location.conf` (included, not copied), both started by the test on loopback.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::daemon::Daemon;
use common::within;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};

fn nginx_binary() -> PathBuf {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("nginx is required for this test: install it with `apt-get install nginx` (scripts/test does)")
}

fn repo_file(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(name)
        .to_str()
        .unwrap()
        .to_owned()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx in the foreground with its own prefix, stopped (with its workers) on drop.
struct Nginx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Nginx {
    fn config(dir: &Path, port: u16, upstream: std::net::SocketAddr) -> String {
        let d = dir.display();
        format!(
            "worker_processes 1;\n\
             pid {d}/nginx.pid;\n\
             error_log {d}/error.log info;\n\
             events {{ worker_connections 256; }}\n\
             http {{\n\
               access_log {d}/access.log;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               include {map};\n\
               upstream wsline {{ server {upstream}; }}\n\
               server {{\n\
                 listen 127.0.0.1:{port};\n\
                 access_log {d}/noquery.log wsline_noquery;\n\
                 include {location};\n\
               }}\n\
             }}\n",
            map = repo_file("nginx/wsline.conf"),
            location = repo_file("nginx/wsline-location.conf"),
        )
    }

    /// `nginx -t` on the configuration: (success, output).
    fn check(upstream: std::net::SocketAddr) -> (bool, String) {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, Self::config(dir.path(), free_port(), upstream)).unwrap();
        let out = Command::new(nginx_binary())
            .arg("-t")
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr).into_owned();
        (out.status.success(), text)
    }

    async fn start(upstream: std::net::SocketAddr) -> Nginx {
        let dir = tempfile::tempdir().unwrap();
        // nginx's workers run as an unprivileged user and need to reach the temp paths.
        std::fs::set_permissions(
            dir.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let port = free_port();
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, Self::config(dir.path(), port, upstream)).unwrap();
        let child = Command::new(nginx_binary())
            .arg("-p")
            .arg(dir.path())
            .arg("-c")
            .arg(&conf)
            .arg("-g")
            .arg("daemon off;")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let nginx = Nginx { child, port, dir };
        within("nginx to listen", async {
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        nginx
    }

    /// An HTTP GET through nginx from the loopback address `from`.
    async fn get(&self, from: &str, path: &str) -> (u16, String) {
        let mut tcp = self.tcp(from).await;
        let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        within("nginx response", tcp.read_to_string(&mut raw))
            .await
            .unwrap();
        let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
        let body = raw
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// A TCP connection to nginx from the loopback address `from` (e.g. 127.0.0.2).
    async fn tcp(&self, from: &str) -> TcpStream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
        socket
            .connect(format!("127.0.0.1:{}", self.port).parse().unwrap())
            .await
            .unwrap()
    }

    /// A WebSocket through nginx at `path`, from the loopback address `from`.
    async fn ws(&self, from: &str, path: &str) -> Result<WebSocketStream<TcpStream>, u16> {
        let url = format!("ws://127.0.0.1:{}{path}", self.port);
        match within(
            "upgrade through nginx",
            tokio_tungstenite::client_async(url, self.tcp(from).await),
        )
        .await
        {
            Ok((ws, _)) => Ok(ws),
            Err(tungstenite::Error::Http(r)) => Err(r.status().as_u16()),
            Err(e) => panic!("websocket through nginx: {e}"),
        }
    }

    /// The server block's access log, in the shipped `wsline_noquery` format.
    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("noquery.log")).unwrap_or_default()
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: the master stops its workers, then exits.
        let _ = Command::new("kill")
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

async fn next_relayed(ws: &mut WebSocketStream<TcpStream>) -> Message {
    within("a relayed message", async {
        loop {
            match ws.next().await {
                Some(Ok(m)) if m.is_text() || m.is_binary() => {
                    if !common::is_presence(&m) {
                        return m;
                    }
                }
                Some(Ok(_)) => {}
                other => panic!("connection ended: {other:?}"),
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_accepts_the_shipped_files() {
    let (ok, output) = Nginx::check("127.0.0.1:3456".parse().unwrap());
    assert!(ok, "nginx -t failed:\n{output}");
    assert!(
        output.contains("syntax is ok") && output.contains("test is successful"),
        "{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_chat_through_nginx_with_the_real_client_address() {
    let daemon = Daemon::start("[limits]\nmax_connections_per_ip = 2\n", &[]).await;
    let nginx = Nginx::start(daemon.addr).await;

    let (status, body) = nginx.get("127.0.0.2", "/wsline/healthz").await;
    assert_eq!(
        (status, body.as_str()),
        (200, "ok\n"),
        "{}",
        nginx.error_log()
    );

    // Two clients from 127.0.0.2 (not a trusted proxy) chat in room1 through nginx.
    let mut a = nginx
        .ws("127.0.0.2", "/wsline/room1")
        .await
        .expect("upgrade through nginx");
    let mut b = nginx
        .ws("127.0.0.2", "/wsline/room1?name=bob")
        .await
        .expect("upgrade");
    a.send(Message::text("hello through nginx")).await.unwrap();
    assert_eq!(
        next_relayed(&mut b).await,
        Message::text("hello through nginx")
    );

    // wsline counts them by the address nginx saw: a third from 127.0.0.2 is over the limit of 2,
    // while 127.0.0.3 is another client.
    assert_eq!(
        nginx.ws("127.0.0.2", "/wsline/room1").await.err(),
        Some(429)
    );
    let _c = nginx
        .ws("127.0.0.3", "/wsline/room1")
        .await
        .expect("another address");

    // The daemon's log names the real client, and the proxy as the peer.
    let log = daemon.wait_log("client=127.0.0.3").await;
    let opened: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection opened"))
        .collect();
    assert!(
        opened
            .iter()
            .filter(|l| l.contains("client=127.0.0.2"))
            .count()
            == 2,
        "{log}"
    );
    assert!(
        opened.iter().any(|l| l.contains("client=127.0.0.3")),
        "{log}"
    );
    assert!(
        opened.iter().all(|l| l.contains("peer=127.0.0.1:")),
        "{log}"
    );

    // A spoofed X-Forwarded-For sent straight to the daemon from an untrusted peer is ignored.
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.4:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(daemon.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(daemon.cert.client_config())
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(format!(
            "wss://localhost:{}/room1",
            daemon.addr.port()
        ))
        .unwrap();
    request
        .headers_mut()
        .insert("x-forwarded-for", "203.0.113.99".parse().unwrap());
    let (_direct, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    let log = daemon.wait_log("client=127.0.0.4").await;
    assert!(!log.contains("203.0.113.99"), "spoofed address believed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_and_the_demo_page_work_under_the_prefix() {
    // The operator's own address may read /stats (and /metrics) through nginx; others may not.
    let daemon = Daemon::start(
        "[web]\nenabled = true\n[metrics]\nallow = [\"127.0.0.2/32\"]\n",
        &[],
    )
    .await;
    let nginx = Nginx::start(daemon.addr).await;
    assert_eq!(nginx.get("127.0.0.3", "/wsline/stats").await.0, 403);
    let (status, body) = nginx.get("127.0.0.2", "/wsline/stats").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        stats["certificate"]["days_left"].as_i64().unwrap() > 0,
        "{stats}"
    );
    let (status, page) = nginx.get("127.0.0.2", "/wsline/").await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"src="demo.js""#), "the demo page");
    // /metrics is for metrics.allow only: through nginx the client is judged, not nginx.
    assert_eq!(nginx.get("127.0.0.3", "/wsline/metrics").await.0, 403);
    assert_eq!(nginx.get("127.0.0.2", "/wsline/metrics").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backend_api_is_not_reachable_through_nginx() {
    let key = "nginx-test-api-key-0123456789";
    let daemon = Daemon::start(&format!("[api]\nkeys = [\"{key}\"]\n"), &[]).await;
    let nginx = Nginx::start(daemon.addr).await;
    // Directly, from loopback with the key, the API answers.
    let (status, _, _) = daemon
        .http(&format!(
            "GET /api/rooms HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\r\n"
        ))
        .await;
    assert_eq!(status, 200);
    // Through nginx (whose own address is in api.allow) it is a 404, key or not.
    for path in ["/wsline/api/rooms", "/wsline/api/rooms/r/messages"] {
        let mut tcp = nginx.tcp("127.0.0.1").await;
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nAuthorization: Bearer {key}\r\n\r\n"
        );
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut raw = String::new();
        within("nginx response", tcp.read_to_string(&mut raw))
            .await
            .unwrap();
        assert!(raw.starts_with("HTTP/1.1 404"), "{path}: {raw}");
    }
    // The rest of the prefix is still proxied.
    assert_eq!(nginx.get("127.0.0.1", "/wsline/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shipped_log_format_keeps_tokens_out_of_the_access_log() {
    let daemon = Daemon::start("[security]\ntoken = \"secret-in-the-query\"\n", &[]).await;
    let nginx = Nginx::start(daemon.addr).await;
    let ws = nginx
        .ws("127.0.0.1", "/wsline/room7?token=secret-in-the-query")
        .await
        .expect("upgrade with the token");
    drop(ws);
    assert_eq!(
        nginx
            .get("127.0.0.1", "/wsline/healthz?token=secret-in-the-query")
            .await
            .0,
        200
    );
    // nginx writes a request's line when it ends: the health check's comes last.
    let log = within("the access log lines", async {
        loop {
            let log = nginx.access_log();
            if log.contains("/wsline/healthz") && log.contains("/wsline/room7") {
                return log;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(!log.contains("secret-in-the-query"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_behind_nginx_is_1001_then_502_then_back() {
    let mut daemon = Daemon::start("", &[]).await;
    let addr = daemon.addr;
    let nginx = Nginx::start(addr).await;
    let mut ws = nginx.ws("127.0.0.2", "/wsline/r").await.expect("upgrade");

    daemon.signal("-TERM");
    let close = within("the close frame through nginx", async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => return frame,
                Some(Ok(_)) => {}
                other => panic!("no close frame through nginx: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    let _ = ws.close(None).await;
    within("the daemon to exit", daemon.child.wait())
        .await
        .unwrap();

    // While no daemon listens, nginx answers reconnects with 502.
    assert_eq!(nginx.ws("127.0.0.2", "/wsline/r").await.err(), Some(502));

    // The new daemon on the same address takes the reconnect.
    let _again = Daemon::start_on(addr, "").await;
    let mut ws = nginx
        .ws("127.0.0.2", "/wsline/r")
        .await
        .expect("reconnect after restart");
    ws.send(Message::text("back")).await.unwrap();
    assert_eq!(next_relayed(&mut ws).await, Message::text("back"));
}

//! A real `redis-server` for the cluster tests: on a free loopback port, with its own throwaway
//! configuration (no snapshots, no append-only file), stopped when dropped; and a
//! `redis-sentinel` watching one for the failover test. Each test file uses part of it.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use super::within;

const BINARIES: [&str; 2] = ["/usr/bin/redis-server", "/usr/local/bin/redis-server"];

pub struct Redis {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// Extra arguments (a password, TLS); PING is then not how readiness is checked.
    extra: Vec<String>,
}

fn binary() -> &'static str {
    BINARIES
        .iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("redis-server is required for the cluster tests: install it with `apt-get install redis-server` (scripts/test does)")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Redis {
    pub async fn start() -> Redis {
        Redis::start_with(&[]).await
    }

    /// A server with extra arguments, e.g. `["--requirepass", "secret"]`.
    pub async fn start_with(extra: &[&str]) -> Redis {
        let mut redis = Redis {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        redis.run().await;
        redis
    }

    /// A server that speaks only TLS (`rediss://`) with this certificate, not asking for client
    /// certificates.
    pub async fn start_tls(cert: &str, key: &str) -> Redis {
        let port = free_port();
        let extra = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            cert,
            "--tls-auth-clients",
            "no",
        ]
        .map(str::to_owned);
        let mut redis = Redis {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: extra.to_vec(),
        };
        redis.run().await;
        redis
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    async fn run(&mut self) {
        let child = Command::new(binary())
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let port = self.port;
        let this = &*self;
        within("redis-server to answer PING", async {
            loop {
                if let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", port)).await {
                    let mut buf = [0u8; 7];
                    // With a password or TLS, accepting a connection is as far as we can see.
                    if !this.extra.is_empty()
                        || tcp.write_all(b"PING\r\n").await.is_ok()
                            && tcp.read_exact(&mut buf).await.is_ok()
                            && &buf == b"+PONG\r\n"
                    {
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
    }

    /// Kills the server (its data goes with it) and waits for it to exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// Starts the server again, empty, on the same port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.run().await;
    }

    /// One command over RESP, for checks: the raw reply.
    pub async fn command(&self, args: &[&str]) -> String {
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        let mut tcp = TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        tcp.write_all(req.as_bytes()).await.unwrap();
        let mut buf = vec![0u8; 64 * 1024];
        let n = within("a redis reply", tcp.read(&mut buf)).await.unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

const SENTINELS: [&str; 2] = ["/usr/bin/redis-sentinel", "/usr/local/bin/redis-sentinel"];

/// A real `redis-sentinel` watching one primary as `master`, with short failure detection
/// (1 s) so a test's failover takes seconds; stopped when dropped.
pub struct Sentinel {
    _child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Sentinel {
    pub async fn start(master: &str, primary: &Redis) -> Sentinel {
        let binary = SENTINELS
            .iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("redis-sentinel is required for the failover test: install it with `apt-get install redis-sentinel` (scripts/test does)");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        // Sentinel rewrites its configuration file, so it lives in the test's own folder.
        let conf = dir.path().join("sentinel.conf");
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {dir}\n\
                 sentinel monitor {master} 127.0.0.1 {primary} 1\n\
                 sentinel down-after-milliseconds {master} 1000\n\
                 sentinel failover-timeout {master} 10000\n\
                 sentinel parallel-syncs {master} 1\n",
                dir = dir.path().display(),
                primary = primary.port,
            ),
        )
        .unwrap();
        let child = Command::new(binary)
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start redis-sentinel");
        let sentinel = Sentinel {
            _child: child,
            port,
            _dir: dir,
        };
        within("redis-sentinel to answer PING", async {
            while !sentinel.command(&["PING"]).await.starts_with("+PONG") {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        sentinel
    }

    /// One command over RESP (an empty reply if the sentinel is not answering yet).
    pub async fn command(&self, args: &[&str]) -> String {
        let Ok(mut tcp) = TcpStream::connect(("127.0.0.1", self.port)).await else {
            return String::new();
        };
        let mut req = format!("*{}\r\n", args.len());
        for a in args {
            req.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        if tcp.write_all(req.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut buf = vec![0u8; 64 * 1024];
        let n = within("a sentinel reply", tcp.read(&mut buf))
            .await
            .unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Redis {
    /// A replica of `primary` (its data follows the primary's).
    pub async fn start_replica(primary: &Redis) -> Redis {
        Redis::start_with(&["--replicaof", "127.0.0.1", &primary.port.to_string()]).await
    }
}

/// `:N\r\n` (an integer reply as [`Redis::command`] gives it) -> N; `i64::MIN` for anything else.
pub fn integer(reply: &str) -> i64 {
    reply
        .trim()
        .trim_start_matches(':')
        .parse()
        .unwrap_or(i64::MIN)
}

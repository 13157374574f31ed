//! The real `wsline` binary as a child process: started on 127.0.0.1:0 with a generated
//! certificate, its stderr collected, its address read from the "listening" log line.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_rustls::TlsConnector;

use super::{Client, TestCert, within};

pub const BIN: &str = env!("CARGO_BIN_EXE_wsline");

/// The daemon as a child process, with its stderr collected.
pub struct Daemon {
    pub child: Child,
    pub addr: std::net::SocketAddr,
    pub log: Arc<Mutex<String>>,
    pub cert: TestCert,
}

impl Daemon {
    /// Starts the daemon with `extra` TOML appended to its listen and TLS sections.
    pub async fn start(extra: &str, env: &[(&str, &str)]) -> Daemon {
        Self::start_with("127.0.0.1:0".parse().unwrap(), extra, env).await
    }

    /// Starts the daemon on a given address (to stand in for one that stopped).
    pub async fn start_on(addr: std::net::SocketAddr, extra: &str) -> Daemon {
        Self::start_with(addr, extra, &[]).await
    }

    async fn start_with(listen: std::net::SocketAddr, extra: &str, env: &[(&str, &str)]) -> Daemon {
        let config = |cert: &TestCert| {
            format!(
                "[server]\nlisten = \"{listen}\"\ndrain_timeout = \"5s\"\n\
                 [tls]\ncert = {:?}\nkey = {:?}\n{extra}",
                cert.cert_path, cert.key_path
            )
        };
        Self::start_custom(config, &[], env).await
    }

    /// Starts the daemon with the whole configuration file from `config` (given the test's
    /// certificate), run through `wrapper` when it is not empty (e.g. `["prlimit", "--nofile=256"]`).
    /// The file is [`Daemon::config_path`], so a test can rewrite it before a SIGHUP.
    pub async fn start_custom(
        config: impl FnOnce(&TestCert) -> String,
        wrapper: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let cert = TestCert::new();
        let path = cert.dir.path().join("wsline.toml");
        std::fs::write(&path, config(&cert)).unwrap();
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
            .arg("--config")
            .arg(&path)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (addr_tx, addr_rx) = tokio::sync::oneshot::channel();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut addr_tx = Some(addr_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                // Into the log first, so a test woken by the address sees its line too.
                {
                    let mut log = sink.lock().unwrap();
                    log.push_str(&line);
                    log.push('\n');
                }
                // Text: `listening addr=127.0.0.1:PORT`; JSON: `"addr":"127.0.0.1:PORT"`.
                if let Some(i) = line
                    .find("127.0.0.1:")
                    .filter(|_| line.contains("listening"))
                {
                    let port: String = line[i + 10..]
                        .chars()
                        .take_while(char::is_ascii_digit)
                        .collect();
                    if let Some(tx) = addr_tx.take() {
                        let _ = tx.send(format!("127.0.0.1:{port}").parse().unwrap());
                    }
                }
            }
        });
        let addr = within("the daemon to listen", addr_rx)
            .await
            .expect("daemon listening line");
        Daemon {
            child,
            addr,
            log,
            cert,
        }
    }

    pub async fn tls(&self) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(self.addr).await.unwrap();
        TlsConnector::from(self.cert.client_config())
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// Sends a raw HTTP/1.1 request over TLS and returns status, head and body.
    pub async fn http(&self, request: &str) -> (u16, String, String) {
        super::exchange(self.tls().await, request).await
    }

    pub async fn connect(&self, path: &str) -> Client {
        let tls = self.tls().await;
        let url = format!("wss://localhost:{}{path}", self.addr.port());
        let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
        Client { ws }
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().unwrap().to_string();
        let status = std::process::Command::new("kill")
            .args([signal, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The configuration file the daemon was started with.
    pub fn config_path(&self) -> std::path::PathBuf {
        self.cert.dir.path().join("wsline.toml")
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Waits until the log contains `needle`; returns the whole log.
    pub async fn wait_log(&self, needle: &str) -> String {
        self.wait_log_times(needle, 1).await
    }

    /// Waits until `times` lines of the log contain `needle`; returns the whole log.
    pub async fn wait_log_times(&self, needle: &str, times: usize) -> String {
        within(
            &format!("{times} x {needle:?} in the daemon's log"),
            async {
                loop {
                    let log = self.log();
                    if log.lines().filter(|l| l.contains(needle)).count() >= times {
                        return log;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            },
        )
        .await
    }

    /// (current, peak) resident memory of the daemon in KiB, from /proc.
    pub fn rss_kib(&self) -> (u64, u64) {
        let pid = self.child.id().expect("daemon running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

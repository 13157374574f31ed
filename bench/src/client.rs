//! Connecting (ws or wss, optionally trusting any certificate), the payload format, and reading
//! a server process's CPU time and memory from /proc.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpSocket;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Ws = WebSocketStream<Box<dyn Io>>;

/// Where and how to connect.
#[derive(Clone)]
pub struct Target {
    pub uri: Uri,
    tls: Option<TlsConnector>,
    /// Speak socket.io over the WebSocket: join with its handshake, send payloads as `m` events.
    socketio: bool,
}

impl Target {
    pub fn new(url: &str, insecure: bool) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad --url {url}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("wss") => Some(TlsConnector::from(client_config(insecure))),
            Some("ws") => None,
            _ => return Err(format!("--url {url}: use ws:// or wss://")),
        };
        Ok(Target {
            uri,
            tls,
            socketio: false,
        })
    }

    /// This target speaking socket.io (Engine.IO 4, the WebSocket transport from the start, the
    /// main namespace): every connection is ready once the server acknowledged the namespace, and
    /// [`payload`](Self::payload) wraps payloads as `42["m","…"]` events. The URL names the
    /// Engine.IO endpoint, e.g. `wss://127.0.0.1:4457/socket.io/?EIO=4&transport=websocket&room=bench`.
    pub fn socketio(mut self) -> Target {
        self.socketio = true;
        self
    }

    /// A benchmark payload ([`payload`]) as this target's protocol sends it.
    pub fn payload(&self, seq: u64, size: usize) -> Message {
        let message = payload(seq, size);
        if self.socketio {
            // Payloads are hex digits and `x`: nothing to escape in a JSON string.
            Message::text(format!(
                "{SOCKETIO_EVENT}{}\"]",
                message.to_text().unwrap_or_default()
            ))
        } else {
            message
        }
    }

    /// Opens a WebSocket to this target's URL with `path` instead of its own, if given.
    pub async fn connect(&self, path: Option<&str>, read_buffer: usize) -> Result<Ws, String> {
        self.connect_from(None, path, read_buffer).await
    }

    /// [`connect`](Self::connect) from the local address `local` (bind before connect), so that
    /// many connections can come from several loopback addresses.
    pub async fn connect_from(
        &self,
        local: Option<IpAddr>,
        path: Option<&str>,
        read_buffer: usize,
    ) -> Result<Ws, String> {
        let io = self.open(local).await?;
        self.upgrade(io, path, read_buffer).await
    }

    fn host_port(&self) -> (&str, u16) {
        let host = self.uri.host().unwrap_or("127.0.0.1");
        let port = self
            .uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        (host, port)
    }

    /// The TCP connection (from `local`, if given) and, for wss, the TLS session: everything
    /// before the HTTP upgrade, so that a caller can hold many of these and upgrade them at once.
    pub async fn open(&self, local: Option<IpAddr>) -> Result<Box<dyn Io>, String> {
        let (host, port) = self.host_port();
        let addr = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("resolve {host}: no address"))?;
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()
        } else {
            TcpSocket::new_v6()
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = local {
            // A port of this address still in TIME_WAIT from an earlier run may be bound again
            // (the kernel still refuses a clashing 4-tuple at connect).
            let _ = socket.set_reuseaddr(true);
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let tcp = socket
            .connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        Ok(match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
                Box::new(
                    tls.connect(name, tcp)
                        .await
                        .map_err(|e| format!("tls: {e}"))?,
                )
            }
            None => Box::new(tcp),
        })
    }

    /// The WebSocket upgrade over a stream from [`open`](Self::open).
    pub async fn upgrade(
        &self,
        io: Box<dyn Io>,
        path: Option<&str>,
        read_buffer: usize,
    ) -> Result<Ws, String> {
        let (host, port) = self.host_port();
        let url = match path {
            Some(p) => format!(
                "{}://{host}:{port}{p}",
                self.uri.scheme_str().unwrap_or("ws")
            ),
            None => self.uri.to_string(),
        };
        let config = WebSocketConfig::default()
            .read_buffer_size(read_buffer)
            .max_message_size(Some(16 << 20));
        let (mut ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(config))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        if self.socketio {
            socketio_handshake(&mut ws).await?;
        }
        Ok(ws)
    }

    /// One plain HTTP GET of `path` on a fresh connection (`Connection: close`): the status, the
    /// body's length, and the time from writing the request to the end of the response (the
    /// TCP and TLS handshakes are not counted).
    pub async fn get(&self, path: &str) -> Result<(u16, usize, Duration), String> {
        let mut io = self.open(None).await?;
        let (host, port) = self.host_port();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n");
        let started = Instant::now();
        io.write_all(request.as_bytes())
            .await
            .map_err(|e| format!("GET {path}: {e}"))?;
        let mut response = Vec::new();
        match tokio::time::timeout(HTTP_TIMEOUT, io.read_to_end(&mut response)).await {
            Err(_) => return Err(format!("GET {path}: no answer in {HTTP_TIMEOUT:?}")),
            // A server may close without TLS close_notify; what arrived is the response.
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Ok(Err(e)) => return Err(format!("GET {path}: {e}")),
            Ok(Ok(_)) => {}
        }
        let elapsed = started.elapsed();
        let (status, body) =
            parse_response(&response).ok_or_else(|| format!("GET {path}: not an HTTP response"))?;
        Ok((status, body, elapsed))
    }
}

/// The start of a socket.io `m` event with a string argument: `42["m","`, the payload, `"]`.
const SOCKETIO_EVENT: &str = "42[\"m\",\"";

/// How long a socket.io handshake may take, packet by packet.
const SOCKETIO_TIMEOUT: Duration = Duration::from_secs(30);

/// After the WebSocket upgrade: Engine.IO's open packet (`0{"sid":…}`), then the connect to the
/// main namespace (`40`) and its acknowledgement (`40{"sid":…}`), after which the server has run
/// its `connection` handler (the room is joined).
async fn socketio_handshake(ws: &mut Ws) -> Result<(), String> {
    use futures_util::SinkExt;
    let open = next_text(ws, "open packet").await?;
    if !open.starts_with('0') {
        return Err(format!(
            "socket.io: expected the open packet, got {open:.40}"
        ));
    }
    ws.send(Message::text("40"))
        .await
        .map_err(|e| format!("socket.io: {e}"))?;
    let ack = next_text(ws, "namespace acknowledgement").await?;
    if !ack.starts_with("40") {
        return Err(format!("socket.io: connect refused: {ack:.80}"));
    }
    Ok(())
}

/// The next text message of a socket.io handshake (`what`), within [`SOCKETIO_TIMEOUT`].
async fn next_text(ws: &mut Ws, what: &str) -> Result<String, String> {
    use futures_util::StreamExt;
    loop {
        match tokio::time::timeout(SOCKETIO_TIMEOUT, ws.next()).await {
            Err(_) => return Err(format!("socket.io: no {what} in {SOCKETIO_TIMEOUT:?}")),
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("socket.io: {e}")),
            Ok(None) => return Err(format!("socket.io: closed before the {what}")),
        }
    }
}

/// How long [`Target::get`] waits for a whole response.
const HTTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The status code and body length of a whole HTTP/1.1 response (read until the server closed).
fn parse_response(response: &[u8]) -> Option<(u16, usize)> {
    let head_end = response.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let status_line = response.split(|&b| b == b'\r').next()?;
    let status = std::str::from_utf8(status_line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    Some((status, response.len() - head_end))
}

fn client_config(insecure: bool) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions");
    let mut config = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
            .with_no_client_auth()
    } else {
        builder
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth()
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// `--insecure`: any certificate is accepted (signatures are still checked).
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The clock all payload timestamps are taken from.
pub fn now_ns() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_nanos() as u64
}

/// A benchmark payload: `B`, 16 hex digits of sequence number, 16 of send time (ns), then
/// padding to `size` bytes. Text, so it is relayed the same by every server.
pub fn payload(seq: u64, size: usize) -> Message {
    let mut text = format!("B{seq:016x}{:016x}", now_ns());
    let len = text.len();
    text.extend(std::iter::repeat_n('x', size.saturating_sub(len)));
    Message::text(text)
}

/// (sequence, send time) of one of our payloads, bare or in a socket.io `m` event; `None` for
/// anything else (presence, counts).
pub fn parse(msg: &Message) -> Option<(u64, u64)> {
    let bytes: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return None,
    };
    let bytes = bytes
        .strip_prefix(SOCKETIO_EVENT.as_bytes())
        .unwrap_or(bytes);
    if bytes.len() < 33 || bytes[0] != b'B' {
        return None;
    }
    let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    Some((hex(&bytes[1..17])?, hex(&bytes[17..33])?))
}

/// A server process's CPU seconds (user + system) and resident memory, from /proc.
#[derive(Clone, Copy)]
pub struct ProcSample {
    /// From `/proc/PID/stat`: the whole process, exited threads included, in 10 ms ticks.
    pub cpu_seconds: f64,
    /// The sum of `se.sum_exec_runtime` over the live threads (`/proc/PID/task/*/sched`):
    /// nanosecond precision, for phases too short for ticks; absent where the kernel lacks it.
    pub threads_cpu_seconds: Option<f64>,
    pub rss_kib: u64,
}

impl ProcSample {
    /// CPU seconds from `self` to `later`: the precise per-thread sums when both samples have
    /// them and no thread's time went missing in between (a thread that exited takes its time
    /// out of the sum, which the ticks still count), else the ticks.
    pub fn cpu_until(&self, later: &ProcSample) -> f64 {
        let ticks = later.cpu_seconds - self.cpu_seconds;
        match (self.threads_cpu_seconds, later.threads_cpu_seconds) {
            (Some(a), Some(b)) if b - a >= ticks - TICK_SLACK => b - a,
            _ => ticks,
        }
    }
}

/// Two ticks of `/proc/PID/stat` (USER_HZ 100): how far the tick count may run ahead of the
/// precise sum by rounding alone.
const TICK_SLACK: f64 = 0.02;

pub fn sample(pid: Option<u32>) -> Option<ProcSample> {
    let pid = pid?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, in clock ticks (USER_HZ, 100 on Linux).
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(ProcSample {
        cpu_seconds: ticks as f64 / 100.0,
        threads_cpu_seconds: threads_cpu_seconds(pid),
        rss_kib,
    })
}

/// The sum of the live threads' `se.sum_exec_runtime` (milliseconds in `/proc/PID/task/TID/sched`).
fn threads_cpu_seconds(pid: u32) -> Option<f64> {
    let mut ms = 0.0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(sched) = std::fs::read_to_string(task.ok()?.path().join("sched")) else {
            continue; // the thread exited since the directory was read
        };
        ms += sum_exec_runtime_ms(&sched)?;
    }
    Some(ms / 1000.0)
}

fn sum_exec_runtime_ms(sched: &str) -> Option<f64> {
    sched
        .lines()
        .find_map(|l| l.strip_prefix("se.sum_exec_runtime"))?
        .trim_start_matches([' ', ':'])
        .trim()
        .parse()
        .ok()
}

/// Opens `n` connections, `concurrency` at a time.
pub async fn connect_many(
    target: &Target,
    n: usize,
    concurrency: usize,
    read_buffer: usize,
) -> Result<Vec<Ws>, String> {
    use futures_util::StreamExt;
    let results: Vec<Result<Ws, String>> = futures_util::stream::iter(0..n)
        .map(|_| async move { target.connect(None, read_buffer).await })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Sleeps until `deadline` or returns at once if it has passed.
pub async fn until(deadline: Instant) {
    tokio::time::sleep_until(deadline.into()).await
}

pub const SETTLE: Duration = Duration::from_millis(1500);

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ticks: f64, threads: Option<f64>) -> ProcSample {
        ProcSample {
            cpu_seconds: ticks,
            threads_cpu_seconds: threads,
            rss_kib: 0,
        }
    }

    #[test]
    fn cpu_prefers_the_precise_thread_sums() {
        let d = at(1.00, Some(1.003)).cpu_until(&at(1.01, Some(1.0185)));
        assert!((d - 0.0155).abs() < 1e-9);
    }

    #[test]
    fn cpu_falls_back_to_ticks_when_a_thread_took_its_time_away() {
        // A thread with 0.5 s of CPU exited in between: the live sum lost it, the ticks did not.
        let d = at(2.0, Some(2.0)).cpu_until(&at(2.6, Some(2.1)));
        assert!((d - 0.6).abs() < 1e-9);
        assert_eq!(at(2.0, None).cpu_until(&at(2.5, Some(9.0))), 0.5);
    }

    #[test]
    fn sched_lines_are_read_in_milliseconds() {
        let sched = "cat (26302, #threads: 1)\n---\nse.exec_start   :   696833.388008\nse.sum_exec_runtime                          :             0.258794\n";
        assert_eq!(sum_exec_runtime_ms(sched), Some(0.258794));
        assert_eq!(sum_exec_runtime_ms("nothing here"), None);
    }

    #[test]
    fn payloads_parse_bare_and_as_socketio_events() {
        let plain = Target::new("wss://127.0.0.1:4456/bench", true).unwrap();
        let sio = Target::new(
            "wss://127.0.0.1:4457/socket.io/?EIO=4&transport=websocket&room=bench",
            true,
        )
        .unwrap()
        .socketio();
        let bare = plain.payload(7, 64);
        assert_eq!(bare.len(), 64);
        assert_eq!(parse(&bare).map(|(seq, _)| seq), Some(7));
        let event = sio.payload(9, 64);
        let text = event.to_text().unwrap();
        assert!(text.starts_with("42[\"m\",\"B") && text.ends_with("xx\"]"));
        assert_eq!(text.len(), 64 + 10);
        assert_eq!(parse(&event).map(|(seq, _)| seq), Some(9));
        // Engine.IO pings and other events are not payloads.
        assert_eq!(parse(&Message::text("2")), None);
        assert_eq!(parse(&Message::text("42[\"n\",\"B\"]")), None);
    }

    #[test]
    fn responses_give_status_and_body_length() {
        let r = b"HTTP/1.1 403 Forbidden\r\ncontent-length: 5\r\n\r\nnope\n";
        assert_eq!(parse_response(r), Some((403, 5)));
        assert_eq!(parse_response(b"garbage"), None);
    }
}

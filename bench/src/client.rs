//! Connecting (ws or wss, optionally trusting any certificate), the payload format, and reading
//! a server process's CPU time and memory from /proc.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
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
}

impl Target {
    pub fn new(url: &str, insecure: bool) -> Result<Target, String> {
        let uri: Uri = url.parse().map_err(|e| format!("bad --url {url}: {e}"))?;
        let tls = match uri.scheme_str() {
            Some("wss") => Some(TlsConnector::from(client_config(insecure))),
            Some("ws") => None,
            _ => return Err(format!("--url {url}: use ws:// or wss://")),
        };
        Ok(Target { uri, tls })
    }

    /// Opens a WebSocket to this target's URL with `path` instead of its own, if given.
    pub async fn connect(&self, path: Option<&str>, read_buffer: usize) -> Result<Ws, String> {
        let host = self.uri.host().unwrap_or("127.0.0.1");
        let port = self
            .uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect {host}:{port}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
                Box::new(
                    tls.connect(name, tcp)
                        .await
                        .map_err(|e| format!("tls: {e}"))?,
                )
            }
            None => Box::new(tcp),
        };
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
        let (ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(config))
            .await
            .map_err(|e| format!("upgrade: {e}"))?;
        Ok(ws)
    }
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

/// (sequence, send time) of one of our payloads; `None` for anything else (presence, counts).
pub fn parse(msg: &Message) -> Option<(u64, u64)> {
    let bytes: &[u8] = match msg {
        Message::Text(t) => t.as_bytes(),
        Message::Binary(b) => b,
        _ => return None,
    };
    if bytes.len() < 33 || bytes[0] != b'B' {
        return None;
    }
    let hex = |b: &[u8]| u64::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    Some((hex(&bytes[1..17])?, hex(&bytes[17..33])?))
}

/// A server process's CPU seconds (user + system) and resident memory, from /proc.
#[derive(Clone, Copy)]
pub struct ProcSample {
    pub cpu_seconds: f64,
    pub rss_kib: u64,
}

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
        rss_kib,
    })
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

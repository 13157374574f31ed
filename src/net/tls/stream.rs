//! A server TLS stream over rustls' unbuffered API that holds no buffer while a connection idles.
//!
//! rustls' buffered `ServerConnection` keeps a 4 KiB read buffer allocated for as long as a read is
//! pending, which for a WebSocket relay is always: most of what an idle wss connection costs. Here
//! wsline owns the buffers instead:
//! - `incoming` (ciphertext) is allocated only once the socket is readable and freed as soon as the
//!   records in it are processed; it outlives a read only while a record is partly received;
//! - `plain` holds decrypted bytes the reader has not taken yet, and is freed when drained;
//! - `outgoing` holds ciphertext the socket has not taken yet (at most one write's records: a
//!   write waits until the socket took the previous one), and is freed when sent.
//!
//! A vectored write is gathered into records of up to 16 KiB, encrypted into `outgoing` and
//! written to the socket with one `write`. Handshake and alert output (session tickets, key update
//! answers) is sent from whichever half is polling, since both halves share this one struct.
//!
//! This file is the state machine (records in, plaintext out, records of plaintext); its tokio
//! faces are in `faces.rs`, the buffer and socket helpers in `buffers.rs`. It knows nothing of
//! HTTP or WebSocket: bytes in, bytes out.

use std::io::{self, IoSlice};
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError};
use tokio::net::TcpStream;

mod buffers;
mod faces;

use buffers::{
    ceiling_error, discard_front, grow_within, poll_write_all, try_write_all, zero_extend,
};

/// Largest plaintext in one TLS record.
pub const MAX_FRAGMENT: usize = 16 * 1024;
// The WebSocket writer gathers at most one record per write.
const _: () = assert!(crate::ws::conn::write::MAX_RECORD_PLAINTEXT == MAX_FRAGMENT);
/// How much the socket is offered per read when no record length is known yet.
const READ_CHUNK: usize = 4 * 1024;
/// A TLS record header: type, version, length.
const HEADER: usize = 5;
/// What a record adds to its plaintext, at most: header, explicit nonce (TLS 1.2), content type
/// (TLS 1.3) and tag, rounded up. rustls says so if it needs more.
const RECORD_OVERHEAD: usize = 64;
/// The most a record's ciphertext may exceed its plaintext by (TLS 1.2 allows 2 KiB; TLS 1.3 256
/// bytes): rustls refuses longer records.
const MAX_EXPANSION: usize = 2048;
/// The largest handshake message rustls accepts: a 4-byte header and a body of up to 0xffff bytes.
const MAX_HANDSHAKE_MESSAGE: usize = 4 + 0xffff;
/// The ceiling of `incoming`, the one buffer whose content the peer decides: one maximal record
/// plus the largest handshake message rustls accepts (83 976 bytes, 82 KiB). rustls' unbuffered
/// API joins the fragments of a handshake message in place, so every record of an unfinished
/// message stays in `incoming` (header and encryption overhead included: a message sent in
/// 1-byte records takes 6 bytes a byte in plaintext, 23 encrypted); a peer that needs more
/// than this to finish a message gets a fatal alert where one can be sent, and is closed.
pub const MAX_INCOMING: usize = HEADER + MAX_FRAGMENT + MAX_EXPANSION + MAX_HANDSHAKE_MESSAGE;
/// A plaintext fatal `decode_error` alert record (level 2, description 50).
const FATAL_DECODE_ERROR: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x32];

/// A TLS connection accepted by wsline: the socket and rustls' state, with buffers that exist only
/// while bytes are in flight.
pub struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet processed; empty and unallocated between records.
    incoming: Vec<u8>,
    /// Decrypted bytes not yet read, from `plain_at` on.
    plain: Vec<u8>,
    plain_at: usize,
    /// Ciphertext not yet written, from `out_at` on.
    outgoing: Vec<u8>,
    out_at: usize,
    /// The peer's close_notify was seen, or its side of the socket reached end of file.
    read_closed: bool,
    /// Our close_notify is queued.
    close_queued: bool,
    /// rustls has sent something (from the ServerHello on, the peer expects it to send alerts).
    spoke: bool,
    /// rustls refused the peer's input, or the peer went past [`MAX_INCOMING`] (and `incoming`
    /// was dropped while rustls still counted on its bytes): rustls is never called again, since
    /// it would process the same input a second time (and assert on a second fatal alert) or
    /// index past the empty buffer.
    failed: bool,
}

/// Why processing stopped: rustls refused the peer's input (an alert may be due), or something
/// local failed.
enum Failure {
    Tls(rustls::Error),
    Io(io::Error),
}

/// Where rustls stopped once everything it had to send is on its way.
enum Rest {
    /// It needs more input (during the handshake) before anything can be written.
    Blocked,
    /// Application data may be written; more input is welcome.
    Writable,
    /// Both sides have closed.
    Closed,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Accepts a TLS connection on `tcp`: runs the handshake until application data may flow both ways.
/// The caller bounds it with the handshake deadline.
pub async fn accept(config: Arc<ServerConfig>, tcp: TcpStream) -> io::Result<TlsStream> {
    let conn = UnbufferedServerConnection::new(config).map_err(tls_error)?;
    let mut stream = TlsStream {
        tcp,
        conn,
        incoming: Vec::new(),
        plain: Vec::new(),
        plain_at: 0,
        outgoing: Vec::new(),
        out_at: 0,
        read_closed: false,
        close_queued: false,
        spoke: false,
        failed: false,
    };
    std::future::poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl TlsStream {
    /// The protocol agreed by ALPN, if any.
    #[cfg(test)]
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// What the buffers hold now: (`incoming`'s capacity, plaintext not yet read, ciphertext not
    /// yet written). For the fuzz target, which checks them against [`MAX_INCOMING`].
    #[doc(hidden)]
    pub fn buffered(&self) -> (usize, usize, usize) {
        (
            self.incoming.capacity(),
            self.plain.len() - self.plain_at,
            self.outgoing.len() - self.out_at,
        )
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            let rest = self.process()?;
            // Our flight goes out before we wait for the client's answer to it.
            ready!(self.poll_send(cx))?;
            if !self.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if matches!(rest, Rest::Closed) || self.read_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            ready!(self.poll_fill(cx))?;
        }
    }

    /// Lets rustls process the complete records in `incoming`: application data goes to `plain`,
    /// handshake and alert output to `outgoing` and, as far as the socket takes it at once, out.
    ///
    /// It never waits for the socket: the read half must not register for writability (the
    /// socket keeps one waker per direction, and the write half's would be lost). What is left
    /// goes with the next write or flush, which every writer does before encrypting more.
    ///
    /// Every call's `discard` (and each record's) is applied before anything else, on every path,
    /// errors included: rustls counts those bytes as gone, and keeps offsets into what follows
    /// them (the fragments of a handshake message it is joining in place), so a buffer that
    /// disagrees with its progress would make it index past the end.
    fn process(&mut self) -> io::Result<Rest> {
        if self.failed {
            return Err(ceiling_error());
        }
        loop {
            let Self {
                tcp,
                conn,
                incoming,
                plain,
                outgoing,
                out_at,
                read_closed,
                spoke,
                ..
            } = self;
            let status = conn.process_tls_records(incoming);
            let mut discard = status.discard;
            let step: Result<Option<Rest>, Failure> = match status.state {
                Err(e) => Err(Failure::Tls(e)),
                Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                    let mut failed = Ok(None);
                    while let Some(record) = traffic.next_record() {
                        match record {
                            Ok(record) => {
                                discard += record.discard;
                                plain.extend_from_slice(record.payload);
                            }
                            Err(e) => {
                                failed = Err(Failure::Tls(e));
                                break;
                            }
                        }
                    }
                    failed
                }
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    let start = outgoing.len();
                    let mut need = READ_CHUNK;
                    loop {
                        zero_extend(outgoing, start + need);
                        match data.encode(&mut outgoing[start..]) {
                            Ok(n) => {
                                outgoing.truncate(start + n);
                                break Ok(None);
                            }
                            Err(EncodeError::InsufficientSize(e)) => need = e.required_size,
                            Err(e) => {
                                outgoing.truncate(start);
                                break Err(Failure::Io(io::Error::other(e.to_string())));
                            }
                        }
                    }
                }
                Ok(ConnectionState::TransmitTlsData(data)) => {
                    // Ours to send from here on, whatever the socket takes now.
                    *spoke = true;
                    let sent = try_write_all(tcp, outgoing, out_at);
                    data.done();
                    sent.map(|()| None).map_err(Failure::Io)
                }
                Ok(ConnectionState::PeerClosed) => {
                    *read_closed = true;
                    Ok(None)
                }
                Ok(ConnectionState::Closed) => {
                    *read_closed = true;
                    Ok(Some(Rest::Closed))
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Some(Rest::Blocked)),
                Ok(ConnectionState::WriteTraffic(_)) => Ok(Some(Rest::Writable)),
                // wsline enables no early data; anything new is not something it can serve.
                Ok(_) => Err(Failure::Io(io::Error::other(
                    "unexpected tls connection state",
                ))),
            };
            discard_front(incoming, discard);
            match step {
                Ok(None) => {}
                Ok(Some(rest)) => return Ok(rest),
                Err(Failure::Io(e)) => return Err(e),
                Err(Failure::Tls(e)) => {
                    self.send_alert();
                    return Err(tls_error(e));
                }
            }
        }
    }

    /// After an error, sends the alert rustls queued (e.g. `protocol_version` to a TLS 1.0 hello)
    /// if the socket takes it now; the connection is over either way, and rustls is not called
    /// again (a second call would process the same input again and queue a second fatal alert).
    /// rustls is handed the same buffer as before (its `discard` applied), never a stand-in.
    /// Where rustls queued no alert (it refuses a handshake message over its size limit without
    /// one) and nothing of ours has been sent yet, a plaintext fatal `decode_error` goes instead.
    fn send_alert(&mut self) {
        self.failed = true;
        let Self {
            tcp,
            conn,
            incoming,
            outgoing,
            out_at,
            spoke,
            ..
        } = self;
        // rustls answers from its queue (the alert) before it looks at the input again.
        let status = conn.process_tls_records(incoming);
        let discard = status.discard;
        let alerted = match status.state {
            Ok(ConnectionState::EncodeTlsData(mut data)) => {
                let start = outgoing.len();
                zero_extend(outgoing, start + READ_CHUNK);
                let n = data.encode(&mut outgoing[start..]).unwrap_or(0);
                outgoing.truncate(start + n);
                n > 0
            }
            _ => false,
        };
        discard_front(incoming, discard);
        if alerted {
            let _ = try_write_all(tcp, outgoing, out_at);
        } else if !*spoke {
            let _ = try_write_all(tcp, &mut FATAL_DECODE_ERROR.to_vec(), &mut 0);
        }
    }

    /// The peer sent more than [`MAX_INCOMING`] without completing what it started: a plaintext
    /// fatal `decode_error` alert while nothing of ours has been sent (the ClientHello phase, when
    /// the peer expects plaintext), then the error that closes the connection.
    fn over_ceiling(&mut self) -> io::Error {
        if !self.spoke {
            let _ = try_write_all(&self.tcp, &mut FATAL_DECODE_ERROR.to_vec(), &mut 0);
        }
        self.incoming = Vec::new();
        self.failed = true;
        ceiling_error()
    }

    /// Reads from the socket into `incoming`, allocating it only once the socket is readable, and
    /// never past [`MAX_INCOMING`]: called only when rustls needs more than `incoming` holds, so
    /// a full buffer means the peer is over the ceiling. Ready(Ok(0)) is end of file.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.failed {
            return Poll::Ready(Err(ceiling_error()));
        }
        loop {
            let used = self.incoming.len();
            if used >= MAX_INCOMING {
                return Poll::Ready(Err(self.over_ceiling()));
            }
            ready!(self.tcp.poll_read_ready(cx))?;
            // Enough for the record in progress, if its header is here.
            let record = match used >= HEADER {
                true => {
                    HEADER + usize::from(u16::from_be_bytes([self.incoming[3], self.incoming[4]]))
                }
                false => 0,
            };
            let want = record.max(used + READ_CHUNK).min(MAX_INCOMING);
            grow_within(&mut self.incoming, want, MAX_INCOMING);
            let read = self.tcp.try_read(&mut self.incoming[used..]);
            self.incoming.truncate(used + *read.as_ref().unwrap_or(&0));
            if self.incoming.is_empty() {
                self.incoming = Vec::new();
            }
            match read {
                Ok(0) => {
                    self.read_closed = true;
                    return Poll::Ready(Ok(0));
                }
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Writes all of `outgoing` to the socket.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        poll_write_all(&self.tcp, &mut self.outgoing, &mut self.out_at, cx)
    }

    /// Encrypts `bufs` (one record's worth at most, all of it) and hands it to the socket without
    /// waiting, for a writer that is not the connection's task (the fan-out's direct write).
    /// `None`: nothing was done, since the stream is not at rest (input being read, output
    /// waiting, closing or failed) or `bufs` is empty or needs more than one record. `Some(true)`: the
    /// socket took it all. `Some(false)`: the rest waits in `outgoing` for the owner's next flush
    /// (which also reports a broken socket).
    ///
    /// It never registers for readiness: the socket keeps one waker per direction, and it is the
    /// writer's.
    pub fn try_write_now(&mut self, bufs: &[IoSlice<'_>]) -> Option<bool> {
        let at_rest = !self.failed
            && !self.close_queued
            && self.incoming.is_empty()
            && self.outgoing.is_empty();
        let total = bufs.iter().map(|b| b.len()).sum::<usize>();
        if !at_rest || total == 0 || total > MAX_FRAGMENT {
            return None;
        }
        // With no input, rustls has nothing to read: only its own output (a session ticket) can
        // stand before the write, and `process` sends it.
        if !matches!(self.process(), Ok(Rest::Writable)) || !self.outgoing.is_empty() {
            return None;
        }
        self.encrypt(bufs).ok()?;
        let _ = try_write_all(&self.tcp, &mut self.outgoing, &mut self.out_at);
        Some(self.outgoing.is_empty())
    }

    /// Encrypts up to one record of `bufs` into `outgoing`; returns the plaintext bytes taken.
    fn encrypt(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        if self.failed {
            return Err(ceiling_error());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let take = total.min(MAX_FRAGMENT);
        let first: &[u8] = bufs.iter().find(|b| !b.is_empty()).map_or(&[], |b| &b[..]);
        // One slice (or a first one that fills the record) is encrypted from where it is; several
        // are gathered behind the room for the ciphertext, in `outgoing` itself.
        let gather = first.len() < take;
        let Self {
            conn,
            incoming,
            outgoing,
            failed,
            ..
        } = self;
        let status = conn.process_tls_records(incoming);
        let discard = status.discard;
        let mut traffic = match status.state {
            Ok(ConnectionState::WriteTraffic(traffic)) => traffic,
            other => {
                let e = match other {
                    Err(e) => {
                        *failed = true;
                        tls_error(e)
                    }
                    Ok(_) => io::Error::other("tls stream not writable"),
                };
                discard_front(incoming, discard);
                return Err(e);
            }
        };
        let start = outgoing.len();
        let mut need = take + RECORD_OVERHEAD;
        loop {
            outgoing.truncate(start);
            outgoing.reserve(need + if gather { take } else { 0 });
            zero_extend(outgoing, start + need);
            if gather {
                let mut left = take;
                for buf in bufs {
                    let n = buf.len().min(left);
                    outgoing.extend_from_slice(&buf[..n]);
                    left -= n;
                    if left == 0 {
                        break;
                    }
                }
            }
            let (room, gathered) = outgoing.split_at_mut(start + need);
            let plaintext = if gather { &*gathered } else { &first[..take] };
            match traffic.encrypt(plaintext, &mut room[start..]) {
                Ok(n) => {
                    outgoing.truncate(start + n);
                    break;
                }
                Err(EncryptError::InsufficientSize(e)) => need = e.required_size,
                Err(e) => {
                    outgoing.truncate(start);
                    discard_front(incoming, discard);
                    return Err(io::Error::other(e.to_string()));
                }
            }
        }
        discard_front(incoming, discard);
        Ok(take)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// A server config for `localhost` and a client config that trusts it, for `version` only.
    fn configs(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[version])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::clone(&cert)).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[version])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![b"http/1.1".to_vec()];
        (Arc::new(server), Arc::new(client))
    }

    async fn pair(
        version: &'static rustls::SupportedProtocolVersion,
    ) -> (TlsStream, tokio_rustls::client::TlsStream<TcpStream>) {
        let (server, client) = configs(version);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connect = async {
            let tcp = TcpStream::connect(addr).await.unwrap();
            tokio_rustls::TlsConnector::from(client)
                .connect(ServerName::try_from("localhost").unwrap(), tcp)
                .await
                .unwrap()
        };
        let accept = async {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(server, tcp).await.unwrap()
        };
        tokio::join!(accept, connect)
    }

    fn idle(stream: &TlsStream) -> bool {
        stream.incoming.capacity() == 0
            && stream.plain.capacity() == 0
            && stream.outgoing.capacity() == 0
    }

    #[tokio::test]
    async fn both_versions_carry_records_both_ways_and_hold_no_buffer_at_rest() {
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let (mut server, mut client) = pair(version).await;
            assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
            assert!(idle(&server), "{version:?}: buffers after the handshake");

            // Several records each way; the server writes 300 slices of 1 000 bytes vectored.
            let big: Vec<u8> = (0..300_000).map(|i| (i % 251) as u8).collect();
            client.write_all(&big).await.unwrap();
            client.flush().await.unwrap();
            let mut got = vec![0; big.len()];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, big);
            let slices: Vec<IoSlice<'_>> = big.chunks(1000).map(IoSlice::new).collect();
            let writing = async {
                let mut sent = 0;
                while sent < big.len() {
                    let skip = sent / 1000;
                    let mut iov = slices[skip..].to_vec();
                    iov[0] = IoSlice::new(&big[sent..(skip + 1) * 1000]);
                    let n = server.write_vectored(&iov).await.unwrap();
                    // Each call is one record: up to 16 KiB of the gathered slices.
                    assert!(n <= MAX_FRAGMENT);
                    sent += n;
                }
                server.flush().await.unwrap();
            };
            let mut back = vec![0; big.len()];
            tokio::join!(writing, async {
                client.read_exact(&mut back).await.unwrap()
            });
            assert_eq!(back, big);
            assert!(idle(&server), "{version:?}: buffers after the exchange");

            // close_notify: the client sees a clean end, not a truncation.
            server.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn a_key_update_from_the_client_is_answered_and_traffic_goes_on() {
        let (mut server, mut client) = pair(&rustls::version::TLS13).await;
        client.get_mut().1.refresh_traffic_keys().unwrap();
        client.write_all(b"after the update").await.unwrap();
        client.flush().await.unwrap();
        let mut got = [0; 16];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"after the update");
        server.write_all(b"still here").await.unwrap();
        server.flush().await.unwrap();
        let mut back = [0; 10];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"still here");
        assert!(idle(&server));
    }

    #[tokio::test]
    async fn a_write_now_goes_out_at_rest_and_leaves_the_rest_of_a_full_socket_to_the_flush() {
        let (mut server, mut client) = pair(&rustls::version::TLS13).await;
        let head = [0x82u8, 5];
        assert_eq!(
            server.try_write_now(&[IoSlice::new(&head), IoSlice::new(b"hello")]),
            Some(true)
        );
        assert!(idle(&server), "nothing kept once the socket took it");
        let mut got = [0; 7];
        client.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"\x82\x05hello");

        // More than one record's worth is not written now.
        let big = vec![7u8; MAX_FRAGMENT + 1];
        assert_eq!(server.try_write_now(&[IoSlice::new(&big)]), None);

        // A client that does not read: the socket fills, the last record is left for the flush,
        // and nothing more is written now while it waits.
        let chunk = vec![1u8; MAX_FRAGMENT];
        let mut sent = 0;
        let mut full = false;
        for _ in 0..10_000 {
            match server.try_write_now(&[IoSlice::new(&chunk)]) {
                Some(true) => sent += chunk.len(),
                Some(false) => {
                    sent += chunk.len();
                    full = true;
                    break;
                }
                None => panic!("refused at rest"),
            }
        }
        assert!(full, "the socket never filled");
        assert_eq!(server.try_write_now(&[IoSlice::new(b"x")]), None);
        let mut back = vec![0; sent];
        let flush = async { server.flush().await.unwrap() };
        tokio::join!(flush, async { client.read_exact(&mut back).await.unwrap() });
        assert!(back.iter().all(|&b| b == 1));
        assert!(idle(&server));

        // After close_notify nothing is written now.
        server.shutdown().await.unwrap();
        assert_eq!(server.try_write_now(&[IoSlice::new(b"late")]), None);
    }

    #[tokio::test]
    async fn a_client_that_closes_ends_the_read_with_eof() {
        let (mut server, mut client) = pair(&rustls::version::TLS13).await;
        client.shutdown().await.unwrap();
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
        assert!(idle(&server));
    }
}

//! Arbitrary client bytes into wsline's TLS stream, before and after the handshake, cut into
//! writes at arbitrary points: the stream ends in data, an error or the end of the stream, never
//! a panic, and no buffer of it grows past its ceiling (`tls::MAX_INCOMING`).
//!
//! Before the handshake the bytes go to the socket as they are. After it (a real TLS 1.3
//! handshake with rustls, whose traffic key is then taken out of it) they are records of any
//! content type, encrypted with the client's key, so that handshake messages, alerts and data
//! the server must decrypt reach it in any order and any fragmentation.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use rustls::crypto::aws_lc_rs as provider;
use rustls::crypto::cipher::{OutboundChunks, OutboundPlainMessage};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use wsline::net::tls::MAX_INCOMING;

#[derive(Arbitrary, Debug)]
struct Input {
    after_handshake: bool,
    /// Before the handshake: the bytes themselves.
    raw: Vec<u8>,
    /// After it: (content type selector, payload) of each record.
    records: Vec<(u8, Vec<u8>)>,
    /// Where the bytes are cut into separate writes.
    cuts: Vec<u16>,
}

struct World {
    runtime: tokio::runtime::Runtime,
    listener: TcpListener,
    server: Arc<rustls::ServerConfig>,
    client: Arc<rustls::ClientConfig>,
}

fn world() -> &'static World {
    static WORLD: OnceLock<World> = OnceLock::new();
    WORLD.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let generated = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let cert = generated.cert.der().clone();
        let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der()).unwrap();
        let server = rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::clone(&cert)).unwrap();
        let mut crypto = provider::default_provider();
        crypto.cipher_suites = vec![provider::cipher_suite::TLS13_AES_128_GCM_SHA256];
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(crypto))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.enable_secret_extraction = true;
        World {
            runtime,
            listener,
            server: Arc::new(server),
            client: Arc::new(client),
        }
    })
}

/// The server side: accept, then read until the stream ends, checking the buffers' ceilings.
async fn serve(tcp: TcpStream, config: Arc<rustls::ServerConfig>) {
    let Ok(mut stream) = wsline::net::tls::accept(config, tcp).await else {
        return;
    };
    let mut buf = vec![0u8; 4096];
    loop {
        let read = stream.read(&mut buf).await;
        let (incoming, plain, _) = stream.buffered();
        assert!(incoming <= MAX_INCOMING, "incoming buffer of {incoming} bytes");
        assert!(plain <= MAX_INCOMING, "{plain} bytes of plaintext waiting");
        match read {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    // Writing and closing after whatever happened must not panic either.
    let _ = stream.write_all(b"bye").await;
    let _ = stream.shutdown().await;
}

/// A TLS 1.3 handshake driven by hand; then `records` encrypted with the client's key.
async fn after_handshake(tcp: &mut TcpStream, records: &[(u8, Vec<u8>)]) -> Option<Vec<u8>> {
    let w = world();
    let mut conn =
        rustls::ClientConnection::new(w.client.clone(), ServerName::try_from("localhost").unwrap())
            .unwrap();
    loop {
        let mut out = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut out).ok()?;
        }
        tcp.write_all(&out).await.ok()?;
        if !conn.is_handshaking() {
            break;
        }
        let mut buf = vec![0u8; 16 * 1024];
        let n = tcp.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        conn.read_tls(&mut &buf[..n]).ok()?;
        conn.process_new_packets().ok()?;
    }
    let secrets = conn.dangerous_extract_secrets().ok()?;
    let (mut seq, rustls::ConnectionTrafficSecrets::Aes128Gcm { key, iv }) = secrets.tx else {
        return None;
    };
    let suite = provider::cipher_suite::TLS13_AES_128_GCM_SHA256.tls13()?;
    let mut encrypter = suite.aead_alg.encrypter(key, iv);
    let mut wire = Vec::new();
    for (typ, payload) in records {
        let typ = match typ % 4 {
            0 => rustls::ContentType::Handshake,
            1 => rustls::ContentType::ApplicationData,
            2 => rustls::ContentType::Alert,
            _ => rustls::ContentType::ChangeCipherSpec,
        };
        let payload = &payload[..payload.len().min(16 * 1024)];
        let record = OutboundPlainMessage {
            typ,
            version: rustls::ProtocolVersion::TLSv1_2,
            payload: OutboundChunks::Single(payload),
        };
        wire.extend(encrypter.encrypt(record, seq).ok()?.encode());
        seq += 1;
    }
    Some(wire)
}

fuzz_target!(|input: Input| {
    let w = world();
    w.runtime.block_on(async {
        let connect = TcpStream::connect(w.listener.local_addr().unwrap());
        let (client, accepted) = tokio::join!(connect, w.listener.accept());
        let (mut client, (server_tcp, _)) = (client.unwrap(), accepted.unwrap());
        let server = tokio::spawn(serve(server_tcp, w.server.clone()));
        let wire = match input.after_handshake {
            false => Some(input.raw),
            true => after_handshake(&mut client, &input.records).await,
        };
        if let Some(wire) = wire {
            let mut at = 0;
            let mut cuts: Vec<usize> = input.cuts.iter().map(|c| usize::from(*c)).collect();
            cuts.push(wire.len());
            for cut in cuts {
                let end = cut.clamp(at, wire.len());
                if client.write_all(&wire[at..end]).await.is_err() {
                    break;
                }
                at = end;
                // Let the server take this piece before the next arrives.
                tokio::task::yield_now().await;
            }
        }
        let _ = client.shutdown().await;
        drop(client);
        // The server must finish on its own once the client is gone.
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the server side ended")
            .expect("the server side did not panic");
    });
});

//! TLS posture: TLS 1.2 and 1.3 only, ALPN http/1.1, and old protocol versions refused.

mod common;

use std::sync::Arc;

use common::{start, within};
use rustls_pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A ClientHello record with legacy version `version` and no supported_versions extension, the
/// way a TLS 1.0/1.1/1.2 client sends it. Apart from the version it is a hello the server accepts:
/// TLS 1.2 AEAD suites, x25519, ECDSA/RSA signatures.
fn client_hello(version: [u8; 2]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    // ECDHE-ECDSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-GCM-SHA256, ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x00, 0x08, 0xc0, 0x2b, 0xc0, 0x2f, 0xc0, 0x13, 0x00, 0x2f]);
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x1d, // supported_groups: x25519
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats: uncompressed
        0x00, 0x0d, 0x00, 0x08, 0x00, 0x06, 0x04, 0x03, 0x08, 0x04, 0x04,
        0x01, // signature_algorithms
    ];
    body.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![0x01, 0, (body.len() >> 8) as u8, body.len() as u8];
    handshake.extend_from_slice(&body);
    let mut record = vec![
        0x16,
        0x03,
        0x01,
        (handshake.len() >> 8) as u8,
        handshake.len() as u8,
    ];
    record.extend_from_slice(&handshake);
    record
}

/// The first record the server answers `hello` with: (content type, its first bytes).
async fn first_reply(addr: std::net::SocketAddr, hello: &[u8]) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(hello).await.unwrap();
    let mut reply = vec![0u8; 7];
    within("the server to answer", tcp.read_exact(&mut reply))
        .await
        .unwrap();
    reply
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_0_and_1_1_handshakes_are_refused_with_an_alert() {
    let server = start(|_| {}).await;
    // The control: the same hello as TLS 1.2 gets a ServerHello (a handshake record, type 22).
    assert_eq!(
        first_reply(server.addr, &client_hello([3, 3])).await[0],
        0x16
    );
    for (name, version) in [("TLS 1.0", [3, 1]), ("TLS 1.1", [3, 2])] {
        let reply = first_reply(server.addr, &client_hello(version)).await;
        assert_eq!(
            reply[0], 0x15,
            "{name}: expected an alert record, got {reply:?}"
        );
        assert_eq!(reply[5], 2, "{name}: the alert must be fatal");
        assert_eq!(
            reply[6], 70,
            "{name}: expected protocol_version (70), got {}",
            reply[6]
        );
    }
    server.assert_still_relays().await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_1_2_and_1_3_clients_connect_with_alpn_http_1_1() {
    let server = start(|_| {}).await;
    for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(server.cert.der.clone()).unwrap();
        let mut config = rustls::ClientConfig::builder_with_protocol_versions(&[version])
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let tcp = TcpStream::connect(server.addr).await.unwrap();
        let tls = TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap_or_else(|e| panic!("{version:?}: {e}"));
        let (_, session) = tls.get_ref();
        assert_eq!(session.protocol_version(), Some(version.version));
        assert_eq!(
            session.alpn_protocol(),
            Some(&b"http/1.1"[..]),
            "h2 must not be chosen"
        );
        let suite = session.negotiated_cipher_suite().unwrap();
        let name = format!("{:?}", suite.suite());
        assert!(
            name.contains("GCM") || name.contains("CHACHA20_POLY1305"),
            "not an AEAD suite: {name}"
        );
        assert!(
            version == &rustls::version::TLS13 || name.contains("ECDHE"),
            "not forward secret: {name}"
        );
    }
    server.stop().await;
}

//! SIGHUP: the certificate (certbot renewals) and the live settings are reloaded without dropping
//! a connection; a broken file changes nothing and is logged as one error line.

mod common;

use std::sync::Arc;

use common::daemon::Daemon;
use common::{Client, TestCert, within};
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

/// A TLS client trusting only `root`, without session resumption (a resumed session would not
/// show the new certificate at all).
fn trusting(root: &CertificateDer<'static>) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// The certificate the daemon presents to a new handshake, if a client trusting `root` accepts it.
async fn presented(
    daemon: &Daemon,
    root: &CertificateDer<'static>,
) -> Option<CertificateDer<'static>> {
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let tls = TlsConnector::from(trusting(root))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .ok()?;
    Some(
        tls.get_ref().1.peer_certificates().unwrap()[0]
            .clone()
            .into_owned(),
    )
}

async fn stats(daemon: &Daemon, root: &CertificateDer<'static>) -> serde_json::Value {
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let mut tls = TlsConnector::from(trusting(root))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(
        &mut tls,
        b"GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let (status, _, body) = common::read_response(&mut tls).await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// A's message reaches B (B may first see echoes of its own earlier messages).
async fn chat(a: &mut Client, b: &mut Client, text: &str) {
    a.send_text(text).await;
    while b.recv_relayed().await != Message::text(text) {}
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_is_served_to_new_handshakes_while_old_connections_stay() {
    let daemon = Daemon::start("", &[]).await;
    let old = daemon.cert.der.clone();
    let mut before = daemon.connect("/renew").await;
    let year_before = stats(&daemon, &old).await["certificate"]["not_after"].clone();

    // certbot renews: new files at the same paths, then `systemctl reload wsline`.
    let renewed = TestCert::expiring(tempfile::tempdir().unwrap(), 2031);
    std::fs::copy(&renewed.cert_path, &daemon.cert.cert_path).unwrap();
    std::fs::copy(&renewed.key_path, &daemon.cert.key_path).unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("configuration reloaded").await;

    assert_eq!(
        presented(&daemon, &renewed.der).await,
        Some(renewed.der.clone())
    );
    assert_eq!(
        presented(&daemon, &old).await,
        None,
        "the old certificate is still served"
    );
    let s = stats(&daemon, &renewed.der).await;
    assert_eq!(
        s["certificate"]["not_after"], "2031-01-01T00:00:00Z",
        "was {year_before}"
    );

    // The connection made before the renewal still relays, to a client made after it.
    let tcp = TcpStream::connect(daemon.addr).await.unwrap();
    let tls = TlsConnector::from(trusting(&renewed.der))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    let url = format!("wss://localhost:{}/renew", daemon.addr.port());
    let (ws, _) = tokio_tungstenite::client_async(url, tls).await.unwrap();
    let mut after = Client { ws };
    chat(&mut before, &mut after, "old to new").await;
    chat(&mut after, &mut before, "new to old").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_certificate_keeps_the_old_one_and_logs_one_error() {
    let daemon = Daemon::start("", &[]).await;
    let current = daemon.cert.der.clone();
    let mut a = daemon.connect("/c").await;
    let mut b = daemon.connect("/c").await;
    std::fs::write(
        &daemon.cert.cert_path,
        "-----BEGIN CERTIFICATE-----\nnot base64 at all\n",
    )
    .unwrap();
    daemon.signal("-HUP");
    let log = daemon.wait_log("reload failed").await;
    let errors: Vec<&str> = log.lines().filter(|l| l.contains("ERROR")).collect();
    assert_eq!(errors.len(), 1, "{log}");
    assert!(
        errors[0].contains("tls.cert") && errors[0].contains("nothing changed"),
        "{}",
        errors[0]
    );
    assert_eq!(presented(&daemon, &current).await, Some(current.clone()));
    chat(&mut a, &mut b, "still here").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_settings_apply_and_an_invalid_file_changes_nothing() {
    let daemon = Daemon::start("", &[]).await;
    let config_path = daemon.cert.dir.path().join("wsline.toml");
    let base = std::fs::read_to_string(&config_path).unwrap();
    let live = common::upgrade_request("/live", "");
    assert_eq!(daemon.http(&live).await.0, 101);
    let mut a = daemon.connect("/stay").await;
    let mut b = daemon.connect("/stay").await;

    // A token is now required: new upgrades without it get 401; open connections stay.
    std::fs::write(
        &config_path,
        format!("{base}[security]\ntoken = \"t0k3n\"\n"),
    )
    .unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("configuration reloaded").await;
    assert_eq!(daemon.http(&live).await.0, 401);
    chat(&mut a, &mut b, "unaffected").await;

    // An invalid file (unknown key) changes nothing: the token stays required.
    std::fs::write(&config_path, format!("{base}[security]\ntokn = \"\"\n")).unwrap();
    daemon.signal("-HUP");
    let log = daemon.wait_log("reload failed").await;
    assert!(
        log.contains("wsline.toml:") && log.contains("tokn"),
        "{log}"
    );
    assert_eq!(daemon.http(&live).await.0, 401);

    // A new listen address is logged as needing a restart; the rest applies.
    let moved = base.replace("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"");
    assert_ne!(moved, base);
    std::fs::write(&config_path, moved).unwrap();
    daemon.signal("-HUP");
    let log = within(
        "the restart warning",
        daemon.wait_log("takes effect after a restart"),
    )
    .await;
    assert!(log.contains("server.listen"), "{log}");
    daemon.wait_log_times("configuration reloaded", 2).await;
    assert_eq!(daemon.http(&live).await.0, 101, "token no longer required");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_applies_rooms_entries_to_open_rooms_and_new_connections() {
    let daemon = Daemon::start("", &[]).await;
    let config_path = daemon.config_path();
    let base = std::fs::read_to_string(&config_path).unwrap();
    let mut member = daemon.connect("/count-1").await;
    assert!(member.recv_presence().await["count"] == 1);
    std::fs::write(
        &config_path,
        format!(
            "{base}[[rooms]]\nmatch = \"count-*\"\npresence = {{ format = \"plain\" }}\n\
             relay = {{ envelope = \"json\" }}\n"
        ),
    )
    .unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("configuration reloaded").await;
    // The open room's presence switches format at once: its member gets the count again, plain.
    assert_eq!(member.recv().await, Message::text("1"));
    // A connection admitted from now on gets the entry's envelope; the open one keeps raw relay.
    let mut newcomer = daemon.connect("/count-1?name=nia").await;
    newcomer.send_text("hi").await;
    let wrapped = r#"{"type":"message","room":"count-1","from":"nia","data":"hi"}"#;
    while member.recv().await != Message::text(wrapped) {}
    member.send_text("raw").await;
    while newcomer.recv().await != Message::text("raw") {}
    // Other rooms keep the global settings.
    let mut other = daemon.connect("/lobby").await;
    assert!(common::is_presence(&other.recv().await));
}

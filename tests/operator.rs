//! What an operator greps for and relies on, read from the real daemon's log (issue 9 items 9,
//! 10a and 11c): refused upgrades and closes are logged with their status or code, connections cut
//! at the drain timeout are named, a second SIGTERM exits at once, and a reload that cannot apply a
//! key says so and keeps serving what it served.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{RawClient, TestCert, upgrade_request, within};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The log line that contains all of `needles`, if any.
fn line_with<'a>(log: &'a str, needles: &[&str]) -> Option<&'a str> {
    log.lines().find(|l| needles.iter().all(|n| l.contains(n)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_and_client_closes_are_logged_with_status_and_code() {
    let daemon = Daemon::start("[security]\ntoken = \"s3cret\"\n", &[]).await;
    let mut alice = daemon.connect("/logs?name=alice&token=s3cret").await;

    // Name taken: upgraded, then closed 1008, and one line says so.
    let mut again = daemon.connect("/logs?name=alice&token=s3cret").await;
    let frame = within("the 1008", async {
        loop {
            match futures_util::StreamExt::next(&mut again.ws).await {
                Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(f)))) => return f,
                Some(Ok(_)) => continue,
                other => panic!("no close frame: {other:?}"),
            }
        }
    })
    .await;
    assert_eq!(frame.code, CloseCode::Policy);
    let log = daemon.wait_log("name taken").await;
    let line = line_with(&log, &["upgrade refused", "name taken"]).unwrap();
    assert!(
        line.contains("status=101") && line.contains("code=1008"),
        "{line}"
    );
    assert!(line.contains("room=logs"), "{line}");

    // HTTP refusals: one line each, with status and reason, never the token.
    let tls = daemon.tls().await;
    let (status, _, _) = common::exchange(tls, &upgrade_request("/logs?token=wrong", "")).await;
    assert_eq!(status, 401);
    let tls = daemon.tls().await;
    let (status, _, _) = common::exchange(tls, &upgrade_request("/..", "")).await;
    assert_eq!(status, 400);
    let log = daemon.wait_log_times("upgrade refused", 3).await;
    let line = line_with(&log, &["upgrade refused", "status=401"]).unwrap();
    assert!(
        line.contains("token required") && line.contains("client=127.0.0.1"),
        "{line}"
    );
    let line = line_with(&log, &["upgrade refused", "status=400"]).unwrap();
    assert!(line.contains("bad room name"), "{line}");
    assert!(
        !log.contains("wrong") && !log.contains("s3cret"),
        "a token was logged:\n{log}"
    );

    // The client closes with its own code: the close line carries it.
    let frame = CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    };
    within("client close", alice.ws.close(Some(frame)))
        .await
        .unwrap();
    let log = daemon.wait_log("closed_by=\"client\"").await;
    let line = line_with(&log, &["connection closed", "closed_by=\"client\""]).unwrap();
    assert!(
        line.contains("code=4001") && line.contains("room=logs"),
        "{line}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_cut_at_the_drain_timeout_are_logged_each() {
    let daemon = Daemon::start_custom(
        |cert| {
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"500ms\"\n\
                 [tls]\ncert = {:?}\nkey = {:?}\n",
                cert.cert_path, cert.key_path
            )
        },
        &[],
        &[],
    )
    .await;
    // Never reads, never answers the 1001: it holds the drain until the timeout.
    let _stuck = RawClient::upgrade(daemon.tls().await, "/stuck").await;
    daemon.wait_log("connection opened").await;
    daemon.signal("-TERM");
    let log = daemon.wait_log("connection cut at drain timeout").await;
    let line = line_with(&log, &["connection cut at drain timeout"]).unwrap();
    assert!(
        line.contains("room=stuck") && line.contains("client=127.0.0.1"),
        "{line}"
    );
    let mut daemon = daemon;
    let status = within("the daemon to exit", daemon.child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigterm_during_the_drain_exits_at_once() {
    let daemon = Daemon::start_custom(
        |cert| {
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"60s\"\n\
                 [tls]\ncert = {:?}\nkey = {:?}\n",
                cert.cert_path, cert.key_path
            )
        },
        &[],
        &[],
    )
    .await;
    let _stuck = RawClient::upgrade(daemon.tls().await, "/stuck").await;
    daemon.wait_log("connection opened").await;
    daemon.signal("-TERM");
    daemon.wait_log("shutting down").await;
    let started = Instant::now();
    daemon.signal("-TERM");
    let mut daemon = daemon;
    let status = within("the daemon to exit", daemon.child.wait())
        .await
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(status.code(), Some(1), "{status:?}");
    let log = daemon.log();
    assert!(log.contains("second signal during the drain"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turning_self_signed_off_on_sighup_waits_for_a_restart_as_the_log_says() {
    let daemon = Daemon::start_custom(
        |_| "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nself_signed = true\n".to_string(),
        &[],
        &[],
    )
    .await;
    let real_cert = TestCert::new();
    let trusting_it = || async {
        let tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(real_cert.client_config())
            .connect(
                rustls_pki_types::ServerName::try_from("localhost").unwrap(),
                tcp,
            )
            .await
            .is_ok()
    };
    assert!(
        !trusting_it().await,
        "the self-signed certificate is served"
    );
    std::fs::write(
        daemon.config_path(),
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\n\
             [relay]\nmax_message_size = \"32KiB\"\n",
            real_cert.cert_path, real_cert.key_path
        ),
    )
    .unwrap();
    daemon.signal("-HUP");
    let log = daemon.wait_log("configuration reloaded").await;
    let line =
        line_with(&log, &["tls.self_signed", "after a restart"]).unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("WARN"), "{line}");
    // What is served agrees with the log: still the self-signed certificate.
    assert!(
        !trusting_it().await,
        "the new certificate was applied although the log said restart"
    );
    // A second SIGHUP still knows the key waits for a restart.
    daemon.signal("-HUP");
    daemon.wait_log_times("configuration reloaded", 2).await;
    let log = daemon.log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("tls.self_signed") && l.contains("after a restart"))
            .count(),
        2,
        "{log}"
    );
    assert!(!trusting_it().await);
}

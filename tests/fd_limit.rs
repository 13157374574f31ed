//! The open-files limit made graceful (issue 9 item 6, issue 12 "make the limit graceful"): the
//! real daemon under `prlimit --nofile=256:256` caps its connections below the limit and says so,
//! answers the connection over the cap with a fast `503`, keeps relaying for its members, paces
//! its "accept failed" lines when descriptors do run out, and accepts again by itself.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{Client, upgrade_request, within};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// The limit the daemon runs under, and the cap it must derive: 256 - (64 + 256 / 16).
const NOFILE: u64 = 256;
const CAP: usize = 176;

fn config(cert: &common::TestCert) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\ndrain_timeout = \"1s\"\n\
         [tls]\ncert = {:?}\nkey = {:?}\n[presence]\nformat = \"off\"\n",
        cert.cert_path, cert.key_path
    )
}

/// Sends a raw upgrade; returns (status, head, how long the answer took, whether the server
/// closed the connection right after it).
async fn upgrade_once(daemon: &Daemon, path: &str) -> (u16, String, Duration, bool) {
    let mut tls = daemon.tls().await;
    let started = Instant::now();
    tls.write_all(upgrade_request(path, "").as_bytes())
        .await
        .unwrap();
    let (status, head, _) = common::read_response(&mut tls).await;
    let took = started.elapsed();
    let mut rest = [0u8; 16];
    let closed = matches!(
        tokio::time::timeout(Duration::from_secs(2), tls.read(&mut rest)).await,
        Ok(Ok(0) | Err(_))
    );
    (status, head, took, closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_descriptor_limit_the_extra_connection_gets_a_fast_503_and_service_recovers() {
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    let daemon = Daemon::start_custom(config, &["prlimit", &limit, "--"], &[]).await;

    // Logged once, with the limit, the configured maximum and the cap.
    let log = daemon.wait_log("clamped_to").await;
    let line = log.lines().find(|l| l.contains("clamped_to")).unwrap();
    for field in [
        format!("soft={NOFILE}"),
        format!("hard={NOFILE}"),
        "max_connections=50000".to_string(),
        format!("clamped_to={CAP}"),
    ] {
        assert!(line.contains(&field), "{field} missing: {line}");
    }
    assert_eq!(log.matches("clamped_to").count(), 1, "{log}");

    // Fill the server to its cap.
    let mut members: Vec<Client> = Vec::with_capacity(CAP);
    for _ in 0..CAP {
        members.push(daemon.connect("/fd").await);
    }

    // One more: a fast 503 with Retry-After, and the connection closed at once.
    let (status, head, took, closed) = upgrade_once(&daemon, "/fd").await;
    assert_eq!(status, 503, "{head}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(took < Duration::from_secs(1), "the 503 took {took:?}");
    assert!(closed, "the refused connection stayed open");

    // The members keep relaying.
    let (first, rest) = members.split_at_mut(1);
    first[0].send_text("still here").await;
    assert_eq!(rest[0].recv_relayed().await, Message::text("still here"));

    // Now run the process out of descriptors for real: silent TCP connections it must accept.
    let mut silent = Vec::new();
    for _ in 0..120 {
        silent.push(tokio::net::TcpStream::connect(daemon.addr).await.unwrap());
    }
    daemon.wait_log("accept failed").await;
    let first_failure = Instant::now();
    // While descriptors stay exhausted, a second line comes no sooner than a second later, with a
    // count of the failures it stands for.
    let log = daemon.wait_log_times("accept failed", 2).await;
    let paced = first_failure.elapsed();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("accept failed"))
        .collect();
    assert!(
        paced >= Duration::from_millis(800),
        "two lines within {paced:?}"
    );
    let count: u64 = lines[1]
        .split("count=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count in {}", lines[1]));
    assert!(
        count >= 2,
        "the second line stands for several failures: {}",
        lines[1]
    );

    // Members leave and the silent connections go: the daemon accepts again by itself.
    drop(silent);
    for member in members.drain(..10) {
        member.close().await;
    }
    daemon.wait_log("accepting again").await;
    within("a new member to be admitted", async {
        loop {
            let (status, _, _, _) = upgrade_once(&daemon, "/fd").await;
            if status == 101 {
                return;
            }
            assert_eq!(status, 503);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut newcomer = daemon.connect("/fd2").await;
    let mut other = daemon.connect("/fd2").await;
    newcomer.send_text("after the storm").await;
    assert_eq!(other.recv_relayed().await, Message::text("after the storm"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_shows_the_cap_below_the_descriptor_limit() {
    let cert = common::TestCert::new();
    let path = cert.dir.path().join("wsline.toml");
    std::fs::write(&path, config(&cert)).unwrap();
    let limit = format!("--nofile={NOFILE}:{NOFILE}");
    let out = within(
        "--check-config",
        tokio::process::Command::new("prlimit")
            .args([
                limit.as_str(),
                "--",
                common::daemon::BIN,
                "--check-config",
                "--config",
            ])
            .arg(&path)
            .env_remove("RUST_LOG")
            .output(),
    )
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("config OK"));
    let line = stderr
        .lines()
        .find(|l| l.starts_with("warning: open files limit"))
        .unwrap_or_else(|| panic!("no descriptor line in {stderr}"));
    assert!(
        line.contains(&format!("limit {NOFILE} (hard {NOFILE})"))
            && line.contains("max_connections = 50000")
            && line.contains(&format!("at most {CAP} connections")),
        "{line}"
    );
}

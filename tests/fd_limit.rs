//! The open-files limit made graceful (issue 9 item 6, issue 12 "make the limit graceful"): the
//! real daemon under `prlimit --nofile=256:256` caps its sockets below the limit and says so,
//! closes every socket over the cap at once (so descriptors do not run out), keeps relaying for
//! its members, paces its "connection refused at accept" lines, and admits again once members go.

mod common;

use std::time::{Duration, Instant};

use common::daemon::Daemon;
use common::{Client, within};
use tokio::io::AsyncReadExt;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_descriptor_limit_sockets_over_the_cap_are_closed_at_once_and_service_recovers()
{
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

    // One more socket: closed at once, before any TLS work.
    let started = Instant::now();
    let mut extra = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
    assert!(
        closed_at_once(&mut extra).await,
        "the extra socket stayed open"
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    // The members keep relaying.
    let (first, rest) = members.split_at_mut(1);
    first[0].send_text("still here").await;
    assert_eq!(rest[0].recv_relayed().await, Message::text("still here"));

    // A storm of sockets over the cap: each is closed at once, so descriptors never run out, and
    // the refusals are logged at most once a second, each line with the count it stands for. The
    // storm goes on until the second line comes (bounded in sockets and time).
    let storm = Instant::now();
    let mut sockets = 0;
    let refused = |log: &str| {
        log.lines()
            .filter(|l| l.contains("connection refused at accept"))
            .count()
    };
    within("a second refusal line", async {
        while refused(&daemon.log()) < 2 && sockets < 20_000 {
            let mut tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
            assert!(
                closed_at_once(&mut tcp).await,
                "socket {sockets} stayed open"
            );
            sockets += 1;
        }
    })
    .await;
    let took = storm.elapsed();
    let log = daemon.log();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection refused at accept"))
        .collect();
    assert!(
        lines.len() >= 2,
        "{sockets} refusals, {} lines",
        lines.len()
    );
    // At most one line a second: the extra socket's, then one per second of the storm.
    assert!(
        lines.len() as f64 <= took.as_secs_f64() + 2.0,
        "{} lines for {sockets} refusals in {took:?}",
        lines.len()
    );
    assert!(lines[0].contains("limits.max_connections"), "{}", lines[0]);
    let count: u64 = lines[1]
        .split("count=")
        .nth(1)
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no count in {}", lines[1]));
    assert!(
        count >= 2,
        "the second line stands for several refusals: {}",
        lines[1]
    );
    assert!(
        !log.contains("accept failed"),
        "descriptors ran out:\n{log}"
    );

    // Members leave: new ones are admitted.
    for member in members.drain(..10) {
        member.close().await;
    }
    within("a new member to be admitted", async {
        loop {
            let mut tcp = tokio::net::TcpStream::connect(daemon.addr).await.unwrap();
            if !closed_at_once(&mut tcp).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let mut newcomer = daemon.connect("/fd2").await;
    let mut other = daemon.connect("/fd2").await;
    newcomer.send_text("after the storm").await;
    assert_eq!(other.recv_relayed().await, Message::text("after the storm"));
}

/// Whether the daemon closes `tcp` at once (end of file or reset within a second), having sent
/// nothing.
async fn closed_at_once(tcp: &mut tokio::net::TcpStream) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
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

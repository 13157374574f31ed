//! systemd: the shipped unit passes `systemd-analyze verify`, and the daemon speaks the notify
//! protocol (READY, RELOADING, WATCHDOG, STOPPING, and STATUS= with live figures) at the right
//! moments; its log lines carry no timestamp of their own when stderr is the journal.

mod common;

use std::path::Path;
use std::process::Command;

use common::daemon::{BIN, Daemon};
use common::within;
use tokio::net::UnixDatagram;

/// A scratch root holding the system's own units, the unit under test and the binaries it names,
/// so `verify` can resolve everything without installing anything on this machine.
fn scratch_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    for dir in [
        "usr/bin",
        "usr/lib/systemd",
        "etc/systemd/system/wsline.service.d",
        "bin",
    ] {
        std::fs::create_dir_all(r.join(dir)).unwrap();
    }
    let status = Command::new("cp")
        .args(["-a", "/usr/lib/systemd/system"])
        .arg(r.join("usr/lib/systemd/"))
        .status()
        .unwrap();
    assert!(status.success(), "copy the system's units");
    std::fs::copy(BIN, r.join("usr/bin/wsline")).unwrap();
    std::fs::copy("/bin/kill", r.join("bin/kill")).unwrap();
    std::fs::copy(
        "systemd/wsline.service",
        r.join("etc/systemd/system/wsline.service"),
    )
    .unwrap();
    root
}

fn verify(root: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .arg("wsline.service")
        .output()
        .expect("systemd-analyze is required for this test: install systemd (scripts/test does)");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

#[test]
fn the_unit_and_its_low_port_drop_in_pass_systemd_analyze_verify() {
    let root = scratch_root();
    let (ok, output) = verify(root.path());
    assert!(
        ok && output.trim().is_empty(),
        "systemd-analyze verify:\n{output}"
    );

    std::fs::copy(
        "systemd/low-port.conf",
        root.path()
            .join("etc/systemd/system/wsline.service.d/low-port.conf"),
    )
    .unwrap();
    let (ok, output) = verify(root.path());
    assert!(
        ok && output.trim().is_empty(),
        "with low-port.conf:\n{output}"
    );

    // The check catches mistakes: a misspelt key is reported.
    let unit = root.path().join("etc/systemd/system/wsline.service");
    let text = std::fs::read_to_string(&unit)
        .unwrap()
        .replace("NoNewPrivileges", "NoNewPrivilege");
    std::fs::write(&unit, text).unwrap();
    let (_, output) = verify(root.path());
    assert!(
        output.contains("NoNewPrivilege"),
        "a broken unit passed: {output}"
    );
}

#[test]
fn the_unit_is_hardened_as_documented() {
    let unit = std::fs::read_to_string("systemd/wsline.service").unwrap();
    for line in [
        "Type=notify",
        "ExecStartPre=/usr/bin/wsline --check-config --quiet --config /etc/wsline/wsline.toml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "DynamicUser=yes",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "PrivateDevices=yes",
        "CapabilityBoundingSet=\n",
        "SystemCallFilter=@system-service",
        "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
        "LimitNOFILE=1048576",
        "#LoadCredential=privkey.pem:",
    ] {
        assert!(unit.contains(line), "missing {line:?}");
    }
    // TimeoutStopSec must exceed the default drain_timeout (10s).
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.trim_end_matches('s').parse().ok())
        .unwrap();
    assert!(stop > 10, "TimeoutStopSec={stop}s");
}

/// Receives the next notify message (one datagram may hold several lines).
async fn notification(socket: &UnixDatagram) -> String {
    let mut buf = vec![0u8; 4096];
    let n = within("a notify message", socket.recv(&mut buf))
        .await
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

async fn expect(socket: &UnixDatagram, wanted: &str) {
    within(&format!("{wanted} on NOTIFY_SOCKET"), async {
        loop {
            if notification(socket).await.lines().any(|l| l == wanted) {
                return;
            }
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_reloading_watchdog_and_stopping_arrive_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).unwrap();
    let mut daemon = Daemon::start(
        "",
        &[
            ("NOTIFY_SOCKET", path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    )
    .await;

    let first = notification(&socket).await;
    assert_eq!(
        first.lines().collect::<Vec<_>>(),
        ["READY=1", "STATUS=serving 0 connections in 0 rooms"],
        "READY first, with the status line"
    );
    // READY means listening: a client gets in at once.
    let client = daemon.connect("/ready").await;

    // Watchdog pings at half the 200 ms period, each with the live figures.
    for _ in 0..3 {
        expect(&socket, "WATCHDOG=1").await;
    }
    expect(&socket, "STATUS=serving 1 connection in 1 room").await;

    daemon.signal("-HUP");
    expect(&socket, "RELOADING=1").await;
    let ready = within("READY after the reload", async {
        loop {
            let message = notification(&socket).await;
            if message.lines().any(|l| l == "READY=1") {
                return message;
            }
        }
    })
    .await;
    assert!(
        ready
            .lines()
            .any(|l| l == "STATUS=serving 1 connection in 1 room"),
        "{ready}"
    );

    let second = daemon.connect("/other").await;
    expect(&socket, "STATUS=serving 2 connections in 2 rooms").await;
    daemon.signal("-TERM");
    let stopping = within("STOPPING", async {
        loop {
            let message = notification(&socket).await;
            if message.lines().any(|l| l == "STOPPING=1") {
                return message;
            }
        }
    })
    .await;
    assert!(
        stopping.lines().any(|l| l.starts_with("STATUS=draining ")),
        "{stopping}"
    );
    drop((client, second));
    let status = within("exit", daemon.child.wait()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Starts the daemon with stderr into a file, `JOURNAL_STREAM` set by `journal_stream` from that
/// file's (device, inode), and returns its first log line (`listening ...`).
async fn first_log_line(journal_stream: impl Fn(u64, u64) -> String) -> String {
    use std::os::unix::fs::MetadataExt;
    let cert = common::TestCert::new();
    let config = cert.dir.path().join("wsline.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = {:?}\nkey = {:?}\n",
            cert.cert_path, cert.key_path
        ),
    )
    .unwrap();
    let log_path = cert.dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let mut child = tokio::process::Command::new(BIN)
        .arg("--config")
        .arg(&config)
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", journal_stream(meta.dev(), meta.ino()))
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let line = within("the listening line", async {
        loop {
            let text = std::fs::read_to_string(&log_path).unwrap();
            if let Some(line) = text.lines().find(|l| l.contains("listening")) {
                return line.to_owned();
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await;
    child.kill().await.unwrap();
    line
}

#[tokio::test]
async fn log_lines_carry_no_timestamp_when_stderr_is_the_journal() {
    // JOURNAL_STREAM names stderr itself: journald stamps the lines, wsline does not.
    let line = first_log_line(|dev, ino| format!("{dev}:{ino}")).await;
    assert!(line.trim_start().starts_with("INFO"), "{line}");
    // Inherited from a parent but naming another stream (stderr was redirected): timestamps stay.
    let line = first_log_line(|dev, ino| format!("{dev}:{}", ino + 1)).await;
    assert!(line.starts_with(|c: char| c.is_ascii_digit()), "{line}");
}

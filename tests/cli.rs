//! The `wsline` binary as a user runs it: flags, config check, start-up errors, logs, SIGTERM.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::daemon::Daemon;
use common::{TestCert, within};
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::daemon::BIN;

async fn wsline(args: &[&str]) -> Output {
    within(
        "wsline to exit",
        Command::new(BIN).args(args).kill_on_drop(true).output(),
    )
    .await
    .expect("run wsline")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn write(dir: &Path, name: &str, contents: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, contents).unwrap();
    path.to_str().unwrap().to_owned()
}

#[tokio::test]
async fn version_and_help() {
    let out = wsline(&["--version"]).await;
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("wsline {}", env!("CARGO_PKG_VERSION"))
    );
    let out = wsline(&["--help"]).await;
    let help = text(&out.stdout);
    assert!(out.status.success());
    for flag in ["--config", "--check-config", "--version"] {
        assert!(help.contains(flag), "{help}");
    }
}

#[tokio::test]
async fn check_config_accepts_the_shipped_configs() {
    let out = wsline(&["--check-config", "--config", "config/dev.toml"]).await;
    assert!(
        text(&out.stdout).starts_with("config OK\n"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.status.success());

    // The production sample, with its certificate paths pointed at a real pair.
    let cert = TestCert::new();
    let sample = std::fs::read_to_string("config/wsline.toml").unwrap();
    let sample = sample
        .replace(
            "/etc/letsencrypt/live/chat.example.com/fullchain.pem",
            cert.cert_path.to_str().unwrap(),
        )
        .replace(
            "/etc/letsencrypt/live/chat.example.com/privkey.pem",
            cert.key_path.to_str().unwrap(),
        );
    let path = write(cert.dir.path(), "wsline.toml", &sample);
    let out = wsline(&["--check-config", "--config", &path]).await;
    assert!(
        text(&out.stdout).starts_with("config OK\n"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn check_config_prints_the_nginx_block_and_warns_about_a_slow_heartbeat() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        "[server]\nlisten = \"[::]:4567\"\n[tls]\nself_signed = true\n\
         [heartbeat]\nping_interval = \"90s\"\nidle_timeout = \"200s\"\n",
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(stdout.contains("server [::1]:4567;"), "{stdout}");
    assert!(stdout.contains("location /wsline/ {"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("warning: heartbeat.ping_interval (1m 30s)"),
        "{stderr}"
    );
}

#[tokio::test]
async fn check_config_prints_every_problem_with_line_and_column_and_exits_78() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "bad.toml",
        "[tls]\nself_signed = true\n[relay]\ndefault_room = \"a b\"\n[limits]\nburst = 0\n",
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{path}:4:16: relay.default_room")),
        "{err}"
    );
    assert!(err.contains(&format!("{path}:6:9: limits.burst")), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let path = write(
        dir.path(),
        "typo.toml",
        "[tls]\nself_signed = true\n[heartbeat]\nping_intervall = \"5s\"\n",
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(err.starts_with(&format!("{path}:4:1: ")), "{err}");
    assert!(err.contains("ping_intervall"), "{err}");
}

#[tokio::test]
async fn a_missing_config_file_is_one_clear_line() {
    let out = wsline(&["--config", "/nonexistent/wsline.toml"]).await;
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("/nonexistent/wsline.toml: cannot read"),
        "{err}"
    );
}

#[tokio::test]
async fn certificate_problems_name_the_file_and_exit_78() {
    let good = TestCert::new();
    let other = TestCert::new();
    let dir = good.dir.path();
    let empty = write(dir, "empty.pem", "no pem here\n");
    let cases = [
        (
            "/nonexistent/cert.pem".to_owned(),
            good.key_path.to_str().unwrap().to_owned(),
            "tls.cert /nonexistent/cert.pem: cannot read",
        ),
        (
            good.cert_path.to_str().unwrap().to_owned(),
            "/nonexistent/key.pem".to_owned(),
            "tls.key /nonexistent/key.pem: cannot read",
        ),
        (
            empty.clone(),
            good.key_path.to_str().unwrap().to_owned(),
            "no PEM certificate",
        ),
        (
            good.cert_path.to_str().unwrap().to_owned(),
            empty.clone(),
            "no PEM private key",
        ),
        (
            good.cert_path.to_str().unwrap().to_owned(),
            other.key_path.to_str().unwrap().to_owned(),
            "does not belong to tls.cert",
        ),
    ];
    for (i, (cert, key, expected)) in cases.iter().enumerate() {
        let config =
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = {cert:?}\nkey = {key:?}\n");
        let path = write(dir, &format!("c{i}.toml"), &config);
        for check in [true, false] {
            let args: Vec<&str> = if check {
                vec!["--check-config", "--config", &path]
            } else {
                vec!["--config", &path]
            };
            let out = wsline(&args).await;
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(78), "{err}");
            assert!(err.contains(expected), "expected {expected:?} in {err}");
            assert!(!err.contains("panicked"), "{err}");
        }
    }
}

#[tokio::test]
async fn a_port_in_use_is_one_clear_line() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        &format!("[server]\nlisten = \"127.0.0.1:{port}\"\n[tls]\nself_signed = true\n"),
    );
    let out = wsline(&["--config", &path]).await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("server.listen 127.0.0.1:{port}: cannot listen")),
        "{err}"
    );
    assert!(err.contains("in use"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_closes_every_client_with_1001_and_exits_0() {
    let mut daemon = Daemon::start("", &[]).await;
    let mut a = daemon.connect("/chat").await;
    let mut b = daemon.connect("/chat?name=bob").await;
    a.send_text("secret-payload").await;
    assert_eq!(b.recv_relayed().await, Message::text("secret-payload"));

    daemon.signal("-TERM");
    assert_eq!(a.closed().await.code, CloseCode::Away);
    assert_eq!(b.closed().await.code, CloseCode::Away);
    drop((a, b));
    let status = within("the daemon to exit", daemon.child.wait())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));

    let log = daemon.wait_log_times("connection closed", 2).await;
    assert!(log.contains("SIGTERM"), "{log}");
    let opened: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection opened"))
        .collect();
    let closed: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("connection closed"))
        .collect();
    assert_eq!((opened.len(), closed.len()), (2, 2), "{log}");
    for line in opened.iter().chain(&closed) {
        assert!(
            line.contains("room=chat") && line.contains("peer=127.0.0.1:"),
            "{line}"
        );
    }
    assert!(
        closed
            .iter()
            .all(|l| l.contains("duration_ms=") && l.contains("code=1001")),
        "{log}"
    );
    assert!(
        !log.contains("secret-payload"),
        "message contents logged at info: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line() {
    let mut daemon = Daemon::start("[log]\nformat = \"json\"\n", &[]).await;
    let c = daemon.connect("/j").await;
    c.close().await;
    daemon.signal("-INT");
    assert_eq!(
        within("exit", daemon.child.wait()).await.unwrap().code(),
        Some(0)
    );
    let log = daemon.wait_log("connection closed").await;
    let mut closed = 0;
    for line in log.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if v["message"] == "connection closed" {
            assert_eq!(v["room"], "j");
            assert!(v["duration_ms"].is_u64());
            closed += 1;
        }
    }
    assert_eq!(closed, 1, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_log_overrides_the_configured_level() {
    // log.level = "error" would hide the "listening" line; RUST_LOG brings it back.
    let mut daemon = Daemon::start("[log]\nlevel = \"error\"\n", &[("RUST_LOG", "info")]).await;
    assert!(daemon.log().contains("listening"));
    daemon.signal("-TERM");
    assert_eq!(
        within("exit", daemon.child.wait()).await.unwrap().code(),
        Some(0)
    );
    let quiet = Daemon::start("[log]\nlevel = \"error\"\n", &[]);
    // Without RUST_LOG nothing announces the address, so the start helper must time out.
    let result = tokio::time::timeout(Duration::from_secs(2), quiet).await;
    assert!(
        result.is_err(),
        "info line printed although log.level = error"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_never_logged_even_at_debug() {
    let daemon = Daemon::start(
        "[security]\ntoken = \"s3cret-tok\"\n",
        &[("RUST_LOG", "debug")],
    )
    .await;
    // A bad room with the token in the query (logged as a refused upgrade), a wrong token, and a
    // right one by query and by header.
    for (path, header) in [
        ("/bad%20room?token=s3cret-tok", ""),
        ("/r?token=wrong-tok-9", ""),
        ("/r?token=s3cret-tok", ""),
        ("/r", "Authorization: Bearer s3cret-tok\r\n"),
    ] {
        let mut tls = daemon.tls().await;
        let request = common::upgrade_request(path, header);
        tokio::io::AsyncWriteExt::write_all(&mut tls, request.as_bytes())
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::flush(&mut tls).await.unwrap();
        common::read_response(&mut tls).await;
    }
    daemon.wait_log("bad room name").await;
    let log = daemon.wait_log_times("connection opened", 2).await;
    assert!(!log.contains("s3cret-tok"), "token in the log:\n{log}");
    assert!(
        !log.contains("wrong-tok-9"),
        "a presented token in the log:\n{log}"
    );
}

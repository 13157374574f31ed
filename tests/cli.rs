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
async fn a_quiet_check_prints_nothing_on_success_and_only_problems_otherwise() {
    let cert = TestCert::new();
    let config = |extra: &str| {
        format!(
            "[server]\nlisten = \"127.0.0.1:3456\"\n[tls]\ncert = {:?}\nkey = {:?}\n{extra}",
            cert.cert_path, cert.key_path
        )
    };
    // What ExecStartPre= writes to the journal at every start: nothing.
    let path = write(
        cert.dir.path(),
        "ok.toml",
        &config("[limits]\nmax_connections = 100\n"),
    );
    let out = wsline(&["--check-config", "--quiet", "--config", &path]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        (text(&out.stdout), text(&out.stderr)),
        (String::new(), String::new())
    );

    // A warning is still one line each (here: more connections than descriptors).
    let path = write(
        cert.dir.path(),
        "warn.toml",
        &config(
            "[limits]\nmax_connections = 100000000\n[heartbeat]\nping_interval = \"90s\"\nidle_timeout = \"200s\"\n",
        ),
    );
    let out = wsline(&["--check-config", "-q", "--config", &path]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(lines.iter().all(|l| l.starts_with("warning: ")), "{stderr}");

    // A problem: the same lines and exit status as without --quiet.
    let path = write(
        cert.dir.path(),
        "bad.toml",
        &config("[limits]\nburst = 0\n"),
    );
    let out = wsline(&["--check-config", "--quiet", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(78));
    assert!(
        text(&out.stderr).contains(&format!("{path}:")),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(text(&out.stdout), "");

    // --quiet means nothing without --check-config: a usage error, not a silent daemon.
    let out = wsline(&["--quiet", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(2));
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

/// Runs wsline with stdout going to `stdout`, returning its exit code and stderr.
async fn wsline_to(stdout: std::process::Stdio, args: &[&str]) -> (Option<i32>, String) {
    // Not `Command::output()`: tokio's replaces stdout with a pipe of its own.
    let child = Command::new(BIN)
        .args(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run wsline");
    let out = within("wsline to exit", child.wait_with_output())
        .await
        .expect("wsline's stderr");
    (out.status.code(), text(&out.stderr))
}

#[tokio::test]
async fn check_config_reports_every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        concat!(
            "[tls]\n",
            "self_signed = true\n",
            "[limits]\n",
            "max_connections = -5\n",
            "burst = \"x\"\n",
            "handshake_timeout = \"0s\"\n",
            "max_conections = 10\n",
            "[relay]\n",
            "ecoh = false\n",
        ),
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    let expected = [
        "4:19: limits.max_connections: invalid value: integer `-5`",
        "5:9: limits.burst: invalid type: string \"x\"",
        "6:21: limits.handshake_timeout: must be longer than 0",
        "7:1: limits.max_conections: unknown key",
        "9:1: relay.ecoh: unknown key",
    ];
    assert_eq!(lines.len(), expected.len(), "{err}");
    for (line, want) in lines.iter().zip(expected) {
        assert!(
            line.starts_with(&format!("{path}:{want}")),
            "{want:?} in {err}"
        );
    }
}

#[tokio::test]
async fn a_huge_duration_is_one_line_at_its_key_not_a_panic_per_connection() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\nself_signed = true\n\
         [heartbeat]\nidle_timeout = \"300000000000y\"\n",
    );
    for args in [
        vec!["--check-config", "--config", &path],
        vec!["--config", &path],
    ] {
        let out = wsline(&args).await;
        assert_eq!(out.status.code(), Some(78));
        let err = text(&out.stderr);
        assert_eq!(
            err.trim_end(),
            format!(
                "{path}:6:16: heartbeat.idle_timeout: must be at most 1day, not 300000000000years"
            )
        );
    }
}

#[tokio::test]
async fn errors_about_the_token_and_the_redis_url_never_show_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "c.toml",
        "[tls]\nself_signed = true\n[security]\ntoken = 123456789\n\
         [cluster]\nredis = \"https://admin:hunter2@redis.internal:6379\"\n",
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(78));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{path}:4:9: security.token: must be a string")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{path}:6:9: cluster.redis: must be a redis://")),
        "{err}"
    );
    for secret in ["123456789", "hunter2", "admin", "redis.internal"] {
        assert!(!err.contains(secret), "{secret:?} in {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_with_a_bad_secret_keeps_it_out_of_the_journal() {
    let daemon = Daemon::start("", &[]).await;
    let path = daemon.cert.dir.path().join("wsline.toml");
    let mut config = std::fs::read_to_string(&path).unwrap();
    config.push_str("[security]\ntoken = 987654321\n[cluster]\nredis = \"http://u:pa55w0rd@h\"\n");
    std::fs::write(&path, config).unwrap();
    daemon.signal("-HUP");
    let log = daemon.wait_log("reload failed").await;
    assert!(log.contains("security.token: must be a string"), "{log}");
    assert!(log.contains("cluster.redis: must be a redis://"), "{log}");
    assert!(
        !log.contains("987654321") && !log.contains("pa55w0rd"),
        "{log}"
    );
}

#[tokio::test]
async fn certificate_errors_point_at_the_line_of_their_key() {
    let good = TestCert::new();
    let other = TestCert::new();
    let dir = good.dir.path();
    // The cert key on line 4, the key key on line 5.
    let cases = [
        (
            "/nonexistent/cert.pem",
            good.key_path.to_str().unwrap(),
            "4:8: tls.cert /nonexistent/cert.pem: cannot read",
        ),
        (
            good.cert_path.to_str().unwrap(),
            "/nonexistent/key.pem",
            "5:7: tls.key /nonexistent/key.pem: cannot read",
        ),
        (
            good.cert_path.to_str().unwrap(),
            other.key_path.to_str().unwrap(),
            "5:7: tls.key ",
        ),
    ];
    for (i, (cert, key, expected)) in cases.into_iter().enumerate() {
        let config =
            format!("[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = {cert:?}\nkey = {key:?}\n");
        let path = write(dir, &format!("c{i}.toml"), &config);
        let out = wsline(&["--check-config", "--config", &path]).await;
        assert_eq!(out.status.code(), Some(78));
        let err = text(&out.stderr);
        assert!(
            err.starts_with(&format!("{path}:{expected}")),
            "{expected:?} in {err}"
        );
    }
}

#[tokio::test]
async fn relative_certificate_paths_are_found_next_to_the_config_file() {
    let cert = TestCert::new();
    let dir = cert.dir.path();
    write(
        dir,
        "wsline.toml",
        "[server]\nlisten = \"127.0.0.1:0\"\n[tls]\ncert = \"cert.pem\"\nkey = \"./key.pem\"\n",
    );
    // Run from elsewhere, with the config path itself relative to that directory.
    let parent = dir.parent().unwrap();
    let relative = dir.strip_prefix(parent).unwrap().join("wsline.toml");
    let out = within(
        "wsline to exit",
        Command::new(BIN)
            .args(["--check-config", "--config"])
            .arg(&relative)
            .current_dir(parent)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .unwrap();
    assert!(
        text(&out.stdout).starts_with("config OK\n"),
        "{}",
        text(&out.stderr)
    );

    // A relative path that does not exist is reported as the resolved, absolute path.
    let path = write(
        dir,
        "missing.toml",
        "[tls]\ncert = \"nope.pem\"\nkey = \"key.pem\"\n",
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "tls.cert {}: cannot read",
            dir.join("nope.pem").display()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn output_to_a_full_disk_is_an_error_line_and_exit_74() {
    for args in [
        &["--check-config", "--config", "config/dev.toml"][..],
        &["--version"][..],
    ] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let (code, err) = wsline_to(full.into(), args).await;
        assert_eq!(code, Some(74), "{args:?}: {err}");
        assert!(
            err.contains("wsline: cannot write to stdout: No space left on device"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

#[tokio::test]
async fn output_to_a_closed_pipe_is_quiet_and_keeps_the_verdict() {
    // The reading end is closed before wsline starts: every write gets EPIPE, as with `| head -1`
    // once head has its line.
    for (args, verdict) in [
        (&["--check-config", "--config", "config/dev.toml"][..], 0),
        (&["--version"][..], 0),
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let (code, err) = wsline_to(writer.into(), args).await;
        assert_eq!(code, Some(verdict), "{args:?}: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("failed printing"),
            "{err}"
        );
        assert!(!err.contains("cannot write"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_whose_certificate_does_not_load_names_the_line() {
    let daemon = Daemon::start("", &[]).await;
    let path = daemon.cert.dir.path().join("wsline.toml");
    // Line 5 is `cert = ...` in the daemon's file; point it at a file that is not there.
    let config = std::fs::read_to_string(&path).unwrap();
    let config: Vec<String> = config
        .lines()
        .map(|l| {
            if l.starts_with("cert = ") {
                "cert = \"missing.pem\"".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect();
    std::fs::write(&path, config.join("\n") + "\n").unwrap();
    daemon.signal("-HUP");
    let log = daemon.wait_log("reload failed").await;
    let missing = daemon.cert.dir.path().join("missing.pem");
    assert!(
        log.contains(&format!(
            "{}:5:8: tls.cert {}: cannot read",
            path.display(),
            missing.display()
        )),
        "{log}"
    );
}

#[tokio::test]
async fn check_config_checks_each_rooms_entry_at_its_line_and_accepts_the_guides() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "rooms.toml",
        "[tls]\nself_signed = true\n[limits]\nqueue_messages = 10\n\
         [[rooms]]\nmatch = \"chat-*\"\nrelay = { history = 20 }\n\
         [[rooms]]\nmatch = \"count-*\"\npresence = { format = \"plain\", colour = 1 }\n",
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    assert_eq!(out.status.code(), Some(78));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(":7:21: [[rooms]] #1 (match = \"chat-*\"): relay.history: must be below limits.queue_messages (10)"),
        "{stderr}"
    );
    assert!(
        stderr.contains(":10:32: [[rooms]] #2: presence.colour: unknown key"),
        "{stderr}"
    );
    // The browser guide's configuration for the four examples is a valid file, and its history line
    // names the largest per-room history.
    let readme = std::fs::read_to_string("docs/browser.md").unwrap();
    let (_, after) = readme
        .split_once("<!-- config: examples -->\n```toml\n")
        .unwrap();
    let rooms = after.split_once("```").unwrap().0;
    let path = write(
        dir.path(),
        "guide.toml",
        &format!(
            "[tls]\nself_signed = true\n{rooms}[[rooms]]\nmatch = \"h\"\nrelay = {{ history = 5, history_bytes = \"1KiB\" }}\n"
        ),
    );
    let out = wsline(&["--check-config", "--config", &path]).await;
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("config OK\n"),
        "{stdout}{}",
        text(&out.stderr)
    );
    assert!(
        stdout.contains("10000 rooms x 1.0 KiB per room"),
        "{stdout}"
    );
}

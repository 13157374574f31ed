//! The unit tests of the configuration: loading, every rule, the problems and their places.

use std::path::Path;
use std::time::Duration;

use super::problems::mentions;
use super::*;

/// The problems of `text`, located (also used by the rule files' own tests).
pub(crate) fn problems(text: &str) -> Vec<Problem> {
    Config::from_toml(text).expect_err("config should be rejected")
}

#[test]
fn minimal_file_gets_every_default() {
    let c = Config::from_toml(
        "[server]\nlisten = \"0.0.0.0:3456\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n",
    )
    .unwrap();
    assert_eq!(c.server.drain_timeout, Duration::from_secs(10));
    assert_eq!(c.relay.default_room, "lobby");
    assert_eq!(c.relay.max_message_size, 65536);
    assert_eq!(c.limits.queue_bytes, 4 << 20);
    assert_eq!(c.presence.interval, Duration::from_millis(100));
    assert_eq!(c.presence.format, PresenceFormat::Json);
    assert_eq!(c.heartbeat.idle_timeout, Duration::from_secs(75));
    assert_eq!(c.security.trusted_proxies.len(), 2);
    assert!(!c.cluster.node_id.is_empty());
}

/// The default node id is the kernel's host name, read with `uname(2)` (which works where
/// `ProcSubset=pid` hides `/proc/sys`; here /proc is whole, so the two must agree).
#[test]
fn the_default_node_id_is_the_host_name() {
    let c = Config::from_toml("[tls]\nenabled = false\n").unwrap();
    let proc = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(c.cluster.node_id, proc.trim());
}

#[test]
fn listen_takes_one_address_or_a_list() {
    let c = Config::from_toml(
        "[server]\nlisten = [\"127.0.0.1:1\", \"[::1]:2\"]\n[tls]\nenabled = false\n",
    )
    .unwrap();
    assert_eq!(c.server.listen.len(), 2);
    assert!(c.server.listen[1].is_ipv6());
}

#[test]
fn sizes_take_integers_and_units() {
    let c = Config::from_toml(
        "[tls]\nenabled = false\n[relay]\nmax_message_size = 1000\n[limits]\nqueue_bytes = \"1MiB\"\n",
    )
    .unwrap();
    assert_eq!(c.relay.max_message_size, 1000);
    assert_eq!(c.limits.queue_bytes, 1 << 20);
}

#[test]
fn unknown_key_is_reported_at_its_line_and_column() {
    let p = problems("[tls]\nenabled = false\n[relay]\n  echoo = true\n");
    assert_eq!((p[0].line, p[0].column), (4, 3), "{p:?}");
    assert!(p[0].message.contains("echoo"), "{p:?}");
}

#[test]
fn bad_duration_is_reported_at_its_value() {
    let p = problems("[tls]\nenabled = false\n[heartbeat]\nping_interval = \"30 parsecs\"\n");
    assert_eq!((p[0].line, p[0].column), (4, 17), "{p:?}");
    assert!(p[0].message.contains("invalid duration"), "{p:?}");
}

#[test]
fn bad_size_is_reported_at_its_value() {
    let p = problems("[tls]\nenabled = false\n[limits]\nqueue_bytes = \"lots\"\n");
    assert_eq!((p[0].line, p[0].column), (4, 15), "{p:?}");
    assert!(p[0].message.contains("invalid size"), "{p:?}");
}

#[test]
fn bad_enum_and_bad_address_are_reported() {
    let p = problems("[tls]\nenabled = false\n[presence]\nformat = \"xml\"\n");
    assert_eq!(p[0].line, 4);
    assert!(p[0].message.contains("xml"), "{p:?}");
    let p = problems("[server]\nlisten = \"localhost\"\n[tls]\nenabled = false\n");
    assert_eq!(p[0].line, 2);
    assert!(p[0].message.contains("invalid listen address"), "{p:?}");
}

#[test]
fn syntax_error_has_a_location() {
    let p = problems("[server\nlisten = 1\n");
    assert_eq!(p[0].line, 1, "{p:?}");
}

#[test]
fn every_semantic_problem_is_reported_with_its_key_location() {
    let p = problems(concat!(
        "[tls]\n",
        "enabled = true\n",
        "[relay]\n",
        "default_room = \"no/slash\"\n",
        "[heartbeat]\n",
        "ping_interval = \"30s\"\n",
        "idle_timeout = \"10s\"\n",
        "[security]\n",
        "allowed_origins = [\"example.com\"]\n",
    ));
    let found: Vec<(usize, &str)> = p
        .iter()
        .map(|p| (p.line, p.message.split(':').next().unwrap()))
        .collect();
    assert!(found.contains(&(1, "tls.cert")), "{found:?}");
    assert!(found.contains(&(1, "tls.key")), "{found:?}");
    assert!(found.contains(&(4, "relay.default_room")), "{found:?}");
    assert!(found.contains(&(7, "heartbeat.idle_timeout")), "{found:?}");
    assert!(
        found.contains(&(9, "security.allowed_origins")),
        "{found:?}"
    );
    assert_eq!(p.len(), 5, "{p:?}");
}

#[test]
fn zero_and_inverted_limits_are_rejected() {
    let p = problems(concat!(
        "[tls]\nenabled = false\n",
        "[limits]\nburst = 0\nqueue_bytes = 100\n",
        "[relay]\nhistory = 5000\n",
        "[log]\nlevel = \"loud\"\n",
    ));
    let keys: Vec<&str> = p
        .iter()
        .map(|p| p.message.split(':').next().unwrap())
        .collect();
    // In file order, whatever check found them.
    assert_eq!(
        keys,
        [
            "presence.max_names",
            "limits.burst",
            "limits.queue_bytes",
            "relay.history",
            "log.level"
        ],
        "{p:?}"
    );
}

#[test]
fn sentinel_urls_name_their_sentinels_master_and_password() {
    let u = SentinelUrl::parse("redis+sentinel://:pw@10.0.0.1:26379,10.0.0.2:26380/relay").unwrap();
    assert_eq!(u.hosts, ["10.0.0.1:26379", "10.0.0.2:26380"]);
    assert_eq!(
        (u.master.as_str(), u.password.as_deref()),
        ("relay", Some("pw"))
    );
    let u = SentinelUrl::parse("redis+sentinel://127.0.0.1:26379/m").unwrap();
    assert_eq!(u.password, None);
    for bad in [
        "redis://127.0.0.1:6379",
        "redis+sentinel://127.0.0.1:26379",
        "redis+sentinel://127.0.0.1:26379/",
        "redis+sentinel://127.0.0.1/m",
        "redis+sentinel://:26379/m",
        "redis+sentinel://h:1/m/extra",
    ] {
        assert_eq!(SentinelUrl::parse(bad), None, "{bad}");
    }
    let file = |url: &str| {
        format!(
            "[server]\nlisten = \"0.0.0.0:3456\"\n[tls]\ncert = \"/c.pem\"\nkey = \"/k.pem\"\n\
             [cluster]\nredis = \"{url}\"\n"
        )
    };
    let c = Config::from_toml(&file("redis+sentinel://127.0.0.1:26379/relay")).unwrap();
    assert_eq!(c.cluster.history_ttl, Duration::from_secs(3600));
    let p = problems(&file("redis+sentinel://127.0.0.1/relay"));
    assert!(
        p.iter().any(|p| p.message.contains("cluster.redis")),
        "{p:?}"
    );
}

/// What the fuzz target (fuzz/fuzz_targets/config.rs) checks, on a fixed set of edits of the
/// sample file, so that it runs with every `cargo test`.
#[test]
fn hostile_edits_of_the_sample_are_problems_not_panics() {
    let sample = include_str!("../../config/wsline.toml");
    let inserts = [
        "\"",
        "'",
        "[",
        "]]",
        " = ",
        "\n",
        "é",
        "\u{200b}",
        "[[server]]\n",
        "= -1",
        "\"\"\"",
        "#",
        "{",
        "}",
        ".",
        "x.y = 1\n",
        "[limits]\n",
        "\\u",
        "99999999999999999999",
    ];
    let assert_located = |text: &str| {
        if let Err(problems) = Config::from_toml(text) {
            let lines = text.lines().count().max(1) + 1;
            assert!(!problems.is_empty());
            for p in problems {
                assert!((1..=lines).contains(&p.line) && p.column >= 1, "{p:?}");
            }
        }
    };
    let boundaries = (0..=sample.len()).filter(|&i| sample.is_char_boundary(i));
    for (n, i) in boundaries.step_by(3).enumerate() {
        let mut edited = sample.to_owned();
        edited.insert_str(i, inserts[n % inserts.len()]);
        assert_located(&edited);
        assert_located(&sample[..i]);
    }
}

#[test]
fn a_key_is_mentioned_only_by_its_whole_name() {
    assert!(mentions("below relay.history (5)", "relay.history"));
    assert!(!mentions("below relay.history_bytes", "relay.history"));
}

#[test]
fn self_signed_excludes_cert_and_key() {
    let p = problems("[tls]\nself_signed = true\ncert = \"/c.pem\"\n");
    assert!(p[0].message.starts_with("tls.self_signed"), "{p:?}");
}

#[test]
fn cidrs_accept_bare_addresses() {
    let c = Config::from_toml(
        "[tls]\nenabled = false\n[security]\ntrusted_proxies = [\"10.0.0.1\", \"fd00::/8\"]\n",
    )
    .unwrap();
    assert_eq!(c.security.trusted_proxies[0].prefix_len(), 32);
    let p = problems(
        "[tls]\nenabled = false\n[metrics]\nallow = [\"10.0.0.0/8\", \"nope\", \"300.1.1.1\"]\n",
    );
    assert_eq!(p.len(), 1, "{p:?}");
    assert!(p[0].message.contains("\"nope\", \"300.1.1.1\""), "{p:?}");
}

fn keys_and_lines(p: &[Problem]) -> Vec<(usize, usize, &str)> {
    p.iter()
        .map(|p| (p.line, p.column, p.message.split(':').next().unwrap()))
        .collect()
}

#[test]
fn every_unknown_key_type_error_and_range_problem_in_one_run() {
    let p = problems(concat!(
        "[tls]\n",
        "enabled = false\n",
        "[relay]\n",
        "echoo = true\n",
        "[limits]\n",
        "max_connections = -5\n",
        "burst = \"x\"\n",
        "handshake_timeout = \"0s\"\n",
        "[heartbeat]\n",
        "pingg = \"1s\"\n",
        "[sever]\n",
        "listen = \"127.0.0.1:1\"\n",
    ));
    assert_eq!(
        keys_and_lines(&p),
        [
            (4, 1, "relay.echoo"),
            (6, 19, "limits.max_connections"),
            (7, 9, "limits.burst"),
            (8, 21, "limits.handshake_timeout"),
            (10, 1, "heartbeat.pingg"),
            (11, 2, "[sever]"),
        ],
        "{p:#?}"
    );
    assert!(p[0].message.contains("unknown key"), "{p:?}");
    assert!(p[0].message.contains("echo, "), "lists the keys: {p:?}");
    assert!(p[1].message.contains("-5"), "{p:?}");
    assert!(p[3].message.contains("longer than 0"), "{p:?}");
    assert!(p[5].message.contains("unknown section"), "{p:?}");
}

#[test]
fn a_key_that_did_not_parse_raises_no_second_complaint() {
    // ping_interval is not a duration: idle_timeout's comparison with it would be about a
    // default the user never wrote, so only the type error is reported.
    let p = problems(concat!(
        "[tls]\nenabled = false\n",
        "[heartbeat]\nping_interval = 90\nidle_timeout = \"60s\"\n",
    ));
    assert_eq!(keys_and_lines(&p), [(4, 17, "heartbeat.ping_interval")]);
    assert!(p[0].message.contains("like \"30s\""), "{p:?}");
    let p = problems("limits = 5\n[tls]\nenabled = false\n");
    assert_eq!(keys_and_lines(&p), [(1, 10, "limits")]);
    assert!(p[0].message.contains("must be a table"), "{p:?}");
}

#[test]
fn a_huge_duration_is_refused_at_its_line_not_a_panic_later() {
    let p = problems("[tls]\nenabled = false\n[heartbeat]\nidle_timeout = \"300000000000y\"\n");
    assert_eq!(keys_and_lines(&p), [(4, 16, "heartbeat.idle_timeout")]);
    assert!(p[0].message.contains("must be at most 1day"), "{p:?}");
    // Every duration has its bound.
    for (section, key) in [
        ("server", "drain_timeout"),
        ("presence", "interval"),
        ("heartbeat", "ping_interval"),
        ("limits", "handshake_timeout"),
        ("limits", "keepalive_timeout"),
        ("cluster", "node_timeout"),
    ] {
        let text = format!("[tls]\nenabled = false\n[{section}]\n{key} = \"300000000000y\"\n");
        let p = problems(&text);
        let dotted = format!("{section}.{key}: must be at most");
        assert!(
            p.iter()
                .any(|p| p.line == 4 && p.message.starts_with(&dotted)),
            "{p:?}"
        );
    }
}

#[test]
fn every_size_has_a_ceiling() {
    let p = problems(concat!(
        "[tls]\nenabled = false\n",
        "[relay]\nmax_message_size = \"1GiB\"\nhistory_bytes = \"1TiB\"\n",
        "[limits]\nqueue_bytes = \"2GiB\"\n",
        "[server]\nbacklog = 4294967295\n",
    ));
    assert_eq!(
        keys_and_lines(&p),
        [
            (4, 20, "relay.max_message_size"),
            (5, 17, "relay.history_bytes"),
            (7, 15, "limits.queue_bytes"),
            (9, 11, "server.backlog"),
        ],
        "{p:#?}"
    );
}

#[test]
fn cluster_node_id_and_prefix_are_checked() {
    let long = "n".repeat(201);
    let p = problems(&format!(
        "[tls]\nenabled = false\n[cluster]\nnode_id = \"{long}\"\nprefix = \"\"\n"
    ));
    assert_eq!(
        keys_and_lines(&p),
        [(4, 11, "cluster.node_id"), (5, 10, "cluster.prefix")],
        "{p:#?}"
    );
    let p = problems("[tls]\nenabled = false\n[cluster]\nnode_id = \"a b\"\n");
    assert_eq!(keys_and_lines(&p), [(4, 11, "cluster.node_id")]);
    let ok = "[tls]\nenabled = false\n[cluster]\nnode_id = \"node-1.eu\"\nprefix = \"app:ws\"\n";
    assert!(Config::from_toml(ok).is_ok());
}

#[test]
fn errors_about_secrets_never_show_them() {
    let p = problems(concat!(
        "[tls]\nenabled = false\n",
        "[security]\ntoken = 123456789\n",
        "[cluster]\nredis = \"http://admin:hunter2@10.0.0.5:6379\"\n",
    ));
    assert_eq!(
        keys_and_lines(&p),
        [(4, 9, "security.token"), (6, 9, "cluster.redis")]
    );
    assert_eq!(
        p[0].message,
        "security.token: must be a string (the value is secret and not shown)"
    );
    let all = format!("{p:?}");
    for secret in ["123456789", "hunter2", "admin", "10.0.0.5"] {
        assert!(!all.contains(secret), "{secret} in {all}");
    }
    let p = problems("[tls]\nenabled = false\n[cluster]\nredis = [\"pw-in-a-list\"]\n");
    assert!(!format!("{p:?}").contains("pw-in-a-list"), "{p:?}");
}

#[test]
fn relative_certificate_paths_are_taken_from_the_config_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wsline.toml");
    std::fs::write(
        &path,
        "[tls]\ncert = \"certs/fullchain.pem\"\nkey = \"/abs/privkey.pem\"\n",
    )
    .unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.tls.cert, dir.path().join("certs/fullchain.pem"));
    assert_eq!(c.tls.key, Path::new("/abs/privkey.pem"));
    // A later problem with a key still points at its line.
    assert_eq!(
        c.origin.describe("tls.cert", "cannot read"),
        format!("{}:2:8: cannot read", path.display())
    );
    assert_eq!(
        c.origin.describe("tls.self_signed", "x"),
        format!("{}: x", path.display())
    );
}

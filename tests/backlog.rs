//! The listen queue (issue 9 item 7): `server.backlog` reaches `listen(2)`, and a reconnect storm
//! of 3 000 simultaneous connects (what every client does after a restart) is queued, with no
//! connect waiting for a SYN retransmit (the first comes after one second).

mod common;

use std::time::Duration;

use common::daemon::Daemon;

const STORM: usize = 3000;

/// `ListenOverflows` and `TCPReqQFullDrop` from `/proc/net/netstat` (machine-wide counters).
fn listen_drops() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(names), Some(values)) = (lines.next(), lines.next()) {
        if !names.starts_with("TcpExt:") {
            continue;
        }
        let pairs: Vec<(&str, u64)> = names
            .split_whitespace()
            .zip(values.split_whitespace())
            .filter_map(|(n, v)| Some((n, v.parse().ok()?)))
            .collect();
        let get = |key: &str| pairs.iter().find(|(n, _)| *n == key).map_or(0, |(_, v)| *v);
        return (get("ListenOverflows"), get("TCPReqQFullDrop"));
    }
    (0, 0)
}

/// The listen queue length the kernel gives a listening socket: `ss`'s Send-Q column.
fn listen_queue(port: u16) -> u64 {
    let out = std::process::Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no listener on {port}: {text}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

fn somaxconn() -> u64 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_3000_connects_is_queued_without_a_syn_retransmit() {
    // The test holds 3 000 sockets itself.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let backlog = 3000u64;
    let daemon = Daemon::start_custom(
        |cert| {
            format!(
                "[server]\nlisten = \"127.0.0.1:0\"\nbacklog = {backlog}\n\
                 [tls]\ncert = {:?}\nkey = {:?}\n[limits]\nhandshake_timeout = \"60s\"\n",
                cert.cert_path, cert.key_path
            )
        },
        &[],
        &[],
    )
    .await;
    // The kernel caps the backlog at net.core.somaxconn.
    assert_eq!(listen_queue(daemon.addr.port()), backlog.min(somaxconn()));

    let before = listen_drops();
    let addr = daemon.addr;
    let connects: Vec<_> = (0..STORM)
        .map(|_| {
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let tcp = tokio::net::TcpStream::connect(addr).await;
                (started.elapsed(), tcp)
            })
        })
        .collect();
    let mut slowest = Duration::ZERO;
    let mut waited = 0;
    let mut held = Vec::with_capacity(STORM);
    for c in connects {
        let (took, tcp) = common::within("a connect", c).await.unwrap();
        held.push(tcp.expect("connect"));
        slowest = slowest.max(took);
        if took >= Duration::from_secs(1) {
            waited += 1;
        }
    }
    let after = listen_drops();
    eprintln!(
        "{STORM} connects: slowest {slowest:?}; ListenOverflows +{}, TCPReqQFullDrop +{} \
         (machine-wide)",
        after.0 - before.0,
        after.1 - before.1
    );
    assert_eq!(waited, 0, "{waited} connects waited for a SYN retransmit");
    drop(held);
}

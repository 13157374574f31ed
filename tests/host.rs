//! The used-by line on a real host: the `.deb` under systemd as PID 1, behind nginx.
//!
//! A Debian bookworm root made with `debootstrap` (Debian's packages only, from the mirror this
//! machine's apt uses; cached under [`CACHE`], outside the checkout, keyed by suite, mirror and
//! package list) is copied and booted with `systemd-nspawn` on a private network, and driven with
//! `nsenter`. The package built from this checkout is installed, and the deployment guide's
//! (docs/deployment.md) blocks marked `<!-- host-test: NAME -->` run as written (with `YOUR.NAME` filled in and certbot
//! emulated by `tests/host/prelude.sh`), so the docs a user follows are the ones tested. Then the
//! checks: health direct and through nginx, a WebSocket message through nginx, `STATUS=`, the node
//! id, the journal at start, reload, renewal, the watchdog, stop, restart and `apt remove`.
//!
//! Needs root, `debootstrap` and `systemd-nspawn` (scripts/test installs them) and Debian's
//! mirror; without them the test fails and says why.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the debootstrap roots are kept between runs.
const CACHE: &str = "/var/cache/wsline-host-test";
const SUITE: &str = "bookworm";
/// What the host has besides a minimal Debian: systemd as init, what a cloud image has (procps),
/// the deployment guide's `apt install` lines (nginx, certbot, ssl-cert: they run offline, the packages are
/// here already), curl and openssl.
const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "dbus",
    "procps",
    "nginx",
    "certbot",
    "python3-cffi-backend",
    "ssl-cert",
    "curl",
    "ca-certificates",
    "openssl",
];
/// The public name, for `YOUR.NAME` in the deployment guide (resolved to the host's loopback).
const NAME: &str = "chat.example.test";
const HOSTNAME: &str = "wsline-host";
/// Bound on one command run inside the host.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);
/// Bound on waiting for a state of the host (booted, active, restarted).
const WAIT: Duration = Duration::from_secs(30);

/// A program this test needs on this machine, with the Debian package that has it.
fn require(program: &str, package: &str) {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program}"))
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "{program} is required for the host test: apt-get install {package} (scripts/test does)"
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The Debian mirror this machine's apt uses for `SUITE` (deb822 `.sources` or one-line lists).
fn mirror() -> String {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.flatten().map(|e| e.path()));
    }
    for file in files {
        let name = file.to_string_lossy().into_owned();
        if !(name.ends_with(".list") || name.ends_with(".sources")) {
            continue;
        }
        let Ok(content) = std::fs::read_to_string(&file) else {
            continue;
        };
        // deb822: a stanza with `URIs:` and `Suites:` naming the suite itself.
        for stanza in content.split("\n\n") {
            let field = |key: &str| {
                stanza
                    .lines()
                    .find_map(|l| l.strip_prefix(key))
                    .map(str::trim)
            };
            if let (Some(uris), Some(suites)) = (field("URIs:"), field("Suites:"))
                && suites.split_whitespace().any(|s| s == SUITE)
                && let Some(uri) = uris.split_whitespace().next()
            {
                return uri.to_owned();
            }
        }
        // One-line: `deb [options] URI SUITE COMPONENTS`.
        for line in content.lines() {
            let words: Vec<_> = line
                .split_whitespace()
                .filter(|w| !w.starts_with('['))
                .collect();
            if words.len() >= 3 && words[0] == "deb" && words[2] == SUITE {
                return words[1].to_owned();
            }
        }
    }
    panic!(
        "the host test needs a Debian {SUITE} mirror, and no apt source on this machine names one \
         (/etc/apt/sources.list, /etc/apt/sources.list.d/)"
    );
}

/// FNV-1a: a cache key that stays the same across Rust versions (std's hasher may not).
fn fnv(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The cached root for this suite, mirror and package list: made by `debootstrap` the first time
/// (about two minutes), reused after. A root is kept only once debootstrap finished.
fn cached_root() -> PathBuf {
    let mirror = mirror();
    let key = format!(
        "{SUITE}-{:016x}",
        fnv(&format!("{SUITE} {mirror} {}", PACKAGES.join(",")))
    );
    let dir = Path::new(CACHE).join(&key);
    if dir.join("root/etc/os-release").exists() {
        return dir.join("root");
    }
    std::fs::create_dir_all(CACHE).unwrap_or_else(|e| panic!("cannot create {CACHE}: {e}"));
    let building = Path::new(CACHE).join(format!("{key}.building-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&building);
    let started = Instant::now();
    let out = Command::new("debootstrap")
        .arg("--variant=minbase")
        .arg(format!("--include={}", PACKAGES.join(",")))
        .arg(SUITE)
        .arg(building.join("root"))
        .arg(&mirror)
        .output()
        .expect("run debootstrap");
    assert!(
        out.status.success(),
        "debootstrap {SUITE} from {mirror} failed; the host test cannot build its host:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    eprintln!(
        "host: debootstrap {SUITE} from {mirror} took {:.0?}",
        started.elapsed()
    );
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::rename(&building, &dir).unwrap();
    dir.join("root")
}

/// The `.deb` of this checkout: cargo-deb packages the test suite's own build of the binary
/// (tests/package.rs checks the release package and its size).
fn build_deb(out: &Path) -> PathBuf {
    let _ = env!("CARGO_BIN_EXE_wsline");
    require("cargo-deb", "cargo-deb (cargo install cargo-deb)");
    let status = Command::new("cargo")
        .args(["deb", "--profile", "dev", "--no-build", "--fast", "-o"])
        .arg(out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .status()
        .expect("cargo deb (scripts/test installs cargo-deb)");
    assert!(status.success(), "cargo deb failed");
    std::fs::read_dir(out)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("cargo deb wrote a .deb")
}

/// The deployment guide's blocks marked `<!-- host-test: NAME -->`, in order: (NAME, shell text).
fn readme_blocks() -> Vec<(String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/deployment.md"))
            .unwrap();
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .trim()
            .strip_prefix("<!-- host-test: ")
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().map(str::trim).unwrap_or_default();
        assert_eq!(fence, "```sh", "the block after host-test: {name}");
        let mut body = String::new();
        for line in lines.by_ref() {
            if line.trim() == "```" {
                break;
            }
            body.push_str(line.trim_start());
            body.push('\n');
        }
        blocks.push((name.to_owned(), body.replace("YOUR.NAME", NAME)));
    }
    blocks
}

/// A booted host: `systemd-nspawn` and the container's PID 1, stopped (and its copy of the root
/// removed) on drop.
struct Host {
    nspawn: Child,
    pid1: u32,
    /// The copy of the cached root that this boot may change.
    dir: tempfile::TempDir,
    root: PathBuf,
}

impl Host {
    fn boot(cached: &Path) -> Host {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let root = dir.path().join("root");
        let out = Command::new("cp")
            .arg("-a")
            .arg(cached)
            .arg(&root)
            .output()
            .unwrap();
        assert!(out.status.success(), "copy the root: {}", text(&out.stderr));
        std::fs::write(root.join("etc/hostname"), format!("{HOSTNAME}\n")).unwrap();
        std::fs::write(
            root.join("etc/hosts"),
            format!("127.0.0.1 localhost {HOSTNAME} {NAME}\n::1 localhost ip6-localhost\n"),
        )
        .unwrap();
        // The user answers apt's "Do you want to continue? [Y/n]".
        std::fs::write(
            root.join("etc/apt/apt.conf.d/90host-test"),
            "APT::Get::Assume-Yes \"true\";\n",
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("boot.log")).unwrap();
        let nspawn = Command::new("systemd-nspawn")
            .arg("-D")
            .arg(&root)
            .args([
                "-b",
                "--register=no",
                "--keep-unit",
                "--private-network",
                "--console=pipe",
                &format!("--machine={HOSTNAME}"),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("systemd-nspawn (scripts/test installs systemd-container)");
        let started = Instant::now();
        let mut host = Host {
            pid1: 0,
            nspawn,
            dir,
            root,
        };
        // The container's init is systemd-nspawn's child. Where nspawn may not boot a container
        // (no permission for namespaces or mounts), it exits: say why.
        let deadline = Instant::now() + WAIT;
        host.pid1 = loop {
            if let Some(pid) = init_of(host.nspawn.id()) {
                break pid;
            }
            if let Ok(Some(status)) = host.nspawn.try_wait() {
                panic!(
                    "systemd-nspawn could not boot the host ({status}):\n{}",
                    std::fs::read_to_string(host.dir.path().join("boot.log")).unwrap_or_default()
                );
            }
            assert!(
                Instant::now() < deadline,
                "no systemd in the container after {WAIT:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        // systemctl answers once systemd's private socket is up; then it waits for the boot.
        host.wait_for("systemd in the container to listen", || {
            host.sh("test -S /run/systemd/private")
                .status
                .success()
                .then_some(())
        });
        let out = host.sh("systemctl is-system-running --wait");
        let state = text(&out.stdout);
        assert!(
            matches!(state.trim(), "running" | "degraded"),
            "the host did not boot: {state}{}\n{}\nlog: {}",
            text(&out.stderr),
            text(&host.sh("systemctl --failed --no-pager").stdout),
            std::fs::read_to_string(host.dir.path().join("boot.log")).unwrap_or_default()
        );
        eprintln!("host: booted in {:.1?}", started.elapsed());
        host
    }

    /// Polls `probe` until it gives a value, at most [`WAIT`].
    fn wait_for<T>(&self, what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = probe() {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn command(&self, script: &str) -> Command {
        let mut c = Command::new("timeout");
        c.arg(COMMAND_TIMEOUT.as_secs().to_string())
            .arg("nsenter")
            .arg("-t")
            .arg(self.pid1.to_string())
            .arg("-a")
            .args([
                "env",
                "-i",
                "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root",
                "LANG=C.UTF-8",
                // No debconf questions: nobody is at this terminal.
                "DEBIAN_FRONTEND=noninteractive",
            ])
            .args(["bash", "-c", script]);
        c
    }

    /// Runs `script` with bash inside the host, as root.
    fn sh(&self, script: &str) -> Output {
        self.command(script).output().unwrap()
    }

    /// Runs `script` and returns its stdout; fails the test if it fails.
    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        if !out.status.success() {
            let journal = self.sh("journalctl -u wsline -u nginx --no-pager -n 40");
            panic!(
                "in the host: {script}\nexit {:?}\n{}{}\nthe journal:\n{}",
                out.status.code(),
                text(&out.stdout),
                text(&out.stderr),
                text(&journal.stdout)
            );
        }
        text(&out.stdout)
    }

    /// Runs a deployment guide block as a user would paste it into a root shell: `set -e`, so the first
    /// failing line fails the step.
    fn step(&self, name: &str, body: &str) -> String {
        let started = Instant::now();
        let out = self.ok(&format!(
            "set -e\n. /root/host-test/prelude.sh\ncd /root\n{body}"
        ));
        eprintln!(
            "host: deployment step {name:?} took {:.1?}",
            started.elapsed()
        );
        out
    }

    fn show(&self, property: &str) -> String {
        self.ok(&format!("systemctl show --value -p {property} wsline"))
            .trim()
            .to_owned()
    }

    fn main_pid(&self) -> String {
        self.show("MainPID")
    }

    /// A WebSocket client inside the host (tests/host/ws_client.py), at `url`.
    fn client(&self, url: &str) -> WsClient {
        let mut child = self
            .command(&format!("exec python3 /root/host-test/ws_client.py {url}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let client = WsClient {
            child,
            stdin,
            lines: rx,
        };
        assert_eq!(client.line(), "open", "{url}");
        client
    }

    /// The SHA-256 fingerprint of the certificate served at `addr` for [`NAME`]; empty when no
    /// handshake succeeded (callers compare it with a file's).
    fn served_certificate(&self, addr: &str) -> String {
        let out = self.sh(&format!(
            "openssl s_client -connect {addr} -servername {NAME} </dev/null 2>/dev/null \
             | openssl x509 -noout -fingerprint -sha256"
        ));
        text(&out.stdout).trim().to_owned()
    }

    fn file_certificate(&self, path: &str) -> String {
        self.ok(&format!(
            "openssl x509 -noout -fingerprint -sha256 -in {path}"
        ))
        .trim()
        .to_owned()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // SIGTERM: systemd-nspawn powers the container off; then make sure it is gone.
        let _ = Command::new("kill")
            .arg(self.nspawn.id().to_string())
            .status();
        let started = Instant::now();
        let deadline = started + Duration::from_secs(15);
        while !matches!(self.nspawn.try_wait(), Ok(Some(_))) {
            if Instant::now() >= deadline {
                let _ = self.nspawn.kill();
                let _ = self.nspawn.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("host: powered off in {:.1?}", started.elapsed());
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(self.dir.path());
        eprintln!("host: its root removed in {:.1?}", started.elapsed());
    }
}

/// The container's init: the child of `parent` (systemd-nspawn) that runs systemd. nspawn forks
/// helpers first, and the init is nspawn's own code until it execs systemd.
fn init_of(parent: u32) -> Option<u32> {
    let children =
        std::fs::read_to_string(format!("/proc/{parent}/task/{parent}/children")).ok()?;
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "systemd")
        })
}

/// One client connection (tests/host/ws_client.py): commands in, answer lines out.
struct WsClient {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl WsClient {
    fn line(&self) -> String {
        self.lines
            .recv_timeout(WAIT)
            .unwrap_or_else(|_| panic!("no answer from the WebSocket client in {WAIT:?}"))
    }

    fn command(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        self.line()
    }
}

impl Drop for WsClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn the_deb_under_systemd_behind_nginx_follows_the_readme() {
    let started = Instant::now();
    let uid = text(&Command::new("id").arg("-u").output().unwrap().stdout);
    assert_eq!(
        uid.trim(),
        "0",
        "the host test boots a container: run it as root"
    );
    require("debootstrap", "debootstrap");
    require("systemd-nspawn", "systemd-container");
    require("nsenter", "util-linux");

    let blocks = readme_blocks();
    let names: Vec<_> = blocks.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "install",
            "nginx",
            "hand-off",
            "credentials-check",
            "start",
            "check",
            "renew"
        ],
        "the deployment guide's host-test blocks"
    );
    let block = |name: &str| {
        blocks
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_str())
            .unwrap()
    };

    let cached = cached_root();
    let deb_dir = tempfile::tempdir().unwrap();
    let deb = build_deb(deb_dir.path());
    let host = Host::boot(&cached);

    // The package where the deployment guide's `apt install ./target/debian/wsline_*.deb` finds it.
    let debian = host.root.join("root/target/debian");
    std::fs::create_dir_all(&debian).unwrap();
    std::fs::copy(&deb, debian.join(deb.file_name().unwrap())).unwrap();
    let files = host.root.join("root/host-test");
    std::fs::create_dir_all(&files).unwrap();
    for file in ["prelude.sh", "ws_client.py"] {
        std::fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/host")
                .join(file),
            files.join(file),
        )
        .unwrap();
    }

    // 1. Install: the unit is there, not enabled.
    host.step("install", block("install"));
    assert_eq!(
        host.ok("dpkg-query -W -f '${Status}' wsline"),
        "install ok installed"
    );
    assert_eq!(host.sh("systemctl is-enabled wsline").stdout, b"disabled\n");

    // 2. nginx and the certificate; the guide's `nginx -t` is part of the block.
    host.step("nginx", block("nginx"));
    assert!(host.ok("ls /etc/letsencrypt/live/").contains(NAME));

    // 3. The hand-off: the hook copied the files (wsline not running yet: nothing reloaded).
    host.step("hand-off", block("hand-off"));
    host.ok("test -r /etc/wsline/tls/fullchain.pem && test -r /etc/wsline/tls/privkey.pem");
    assert_eq!(
        host.ok("stat -c '%a %G' /etc/wsline/tls/privkey.pem")
            .trim(),
        "640 ssl-cert"
    );

    // 4. Start: `enable --now` returns once READY=1 arrived (Type=notify).
    let output = host.step("start", block("start"));
    assert!(output.starts_with("config OK\n"), "{output}");
    assert_eq!(host.show("ActiveState"), "active");
    assert_eq!(host.show("SubState"), "running");
    assert_eq!(host.ok("systemctl is-enabled wsline").trim(), "enabled");
    let pid = host.main_pid();

    // 5. Check: health through nginx (a trusted certificate for NAME), metrics direct, status.
    let output = host.step("check", block("check"));
    assert!(output.starts_with("ok\n"), "{output}");
    assert!(output.contains("wsline_"), "{output}");
    assert!(
        output.contains("Status: \"serving 0 connections in 0 rooms\""),
        "{output}"
    );
    assert_eq!(
        host.ok("curl -sS --fail -k https://127.0.0.1:3456/healthz"),
        "ok\n"
    );

    // The node id is the host name, under the hardened unit (ProcSubset=pid).
    let stats = host.ok("curl -sS --fail -k https://127.0.0.1:3456/stats");
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    assert_eq!(stats["node_id"], HOSTNAME, "{stats}");
    assert_eq!(host.ok("hostname").trim(), HOSTNAME);

    // The journal at start: the quiet check and a few lines, without wsline's own timestamps.
    let journal = host.ok("journalctl _SYSTEMD_UNIT=wsline.service -o cat --no-pager");
    eprintln!("host: the journal after the start:\n{journal}");
    let lines: Vec<_> = journal.lines().collect();
    assert!(
        (1..=5).contains(&lines.len()),
        "{} lines at start:\n{journal}",
        lines.len()
    );
    assert!(
        lines
            .iter()
            .all(|l| !l.starts_with(|c: char| c.is_ascii_digit())),
        "a line with its own timestamp:\n{journal}"
    );
    assert!(lines.iter().any(|l| l.contains("listening")), "{journal}");

    // A WebSocket message through nginx, from one member of a room to another.
    let url = format!("wss://{NAME}/wsline/room1");
    let mut alice = host.client(&url);
    let mut bob = host.client(&url);
    assert_eq!(alice.command("send hello"), "got hello");
    assert_eq!(bob.command("wait hello"), "got hello");
    // STATUS= refreshed with the live figures (every 5 s at most).
    host.wait_for("STATUS= with two connections", || {
        (host.show("StatusText") == "serving 2 connections in 1 room").then_some(())
    });

    // Reload: same process, the connection kept, READY again.
    host.ok("systemctl reload wsline");
    assert_eq!(host.main_pid(), pid);
    assert_eq!(host.show("ActiveState"), "active");
    assert_eq!(alice.command("send after reload"), "got after reload");
    assert_eq!(bob.command("wait after reload"), "got after reload");

    // Renewal through the deploy hook: wsline (same process, connections kept) and nginx serve
    // the new certificate.
    let old = host.served_certificate("127.0.0.1:443");
    assert!(
        old.contains("Fingerprint="),
        "nginx serves no certificate: {old:?}"
    );
    assert_eq!(old, host.served_certificate("127.0.0.1:3456"));
    host.step("renew", block("renew"));
    let new = host.file_certificate(&format!("/etc/letsencrypt/live/{NAME}/fullchain.pem"));
    assert_ne!(new, old, "the renewal made a new certificate");
    assert_eq!(host.file_certificate("/etc/wsline/tls/fullchain.pem"), new);
    // Both reloads are signals: `systemctl reload` returns once they are sent, and the new
    // certificate is served a moment later.
    host.wait_for("wsline to serve the renewed certificate", || {
        (host.served_certificate("127.0.0.1:3456") == new).then_some(())
    });
    host.wait_for("nginx to serve the renewed certificate", || {
        (host.served_certificate("127.0.0.1:443") == new).then_some(())
    });
    assert_eq!(host.main_pid(), pid);
    assert_eq!(alice.command("send after renewal"), "got after renewal");
    assert_eq!(bob.command("wait after renewal"), "got after renewal");
    assert_eq!(
        host.ok(&format!("curl -sS --fail https://{NAME}/wsline/healthz")),
        "ok\n"
    );

    // The hardening as systemd rates it (docs/deployment.md).
    let security = host.ok("systemd-analyze security --no-pager wsline 2>&1");
    let score = security
        .lines()
        .find_map(|l| l.strip_prefix("→ Overall exposure level for wsline.service: "))
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{security}"));
    eprintln!("host: systemd-analyze security wsline: {score}");
    let value: f64 = score.split_whitespace().next().unwrap().parse().unwrap();
    assert!(value <= 1.5, "exposure {score}");

    // Stop: every client gets 1001, the process exits 0.
    host.ok("systemctl stop wsline");
    assert_eq!(alice.command("wait-close"), "closed 1001");
    assert_eq!(bob.command("wait-close"), "closed 1001");
    assert_eq!(host.show("ActiveState"), "inactive");
    assert_eq!(host.show("Result"), "success");
    assert_eq!(host.show("ExecMainStatus"), "0");
    drop((alice, bob));

    // The other hand-off, LoadCredential=: the unit's own commented lines, switched on in a
    // drop-in, and the config pointed at the credentials directory.
    host.ok(&format!(
        "{{ echo '[Service]'; sed -n 's/^#LoadCredential=/LoadCredential=/p' \
             /usr/lib/systemd/system/wsline.service | sed 's/chat.example.com/{NAME}/'; }} \
             > /etc/systemd/system/wsline.service.d/credentials.conf && \
         cp /etc/wsline/wsline.toml /root/wsline.toml.tls && \
         sed -i -e 's|^cert = .*|cert = \"/run/credentials/wsline.service/fullchain.pem\"|' \
                -e 's|^key = .*|key = \"/run/credentials/wsline.service/privkey.pem\"|' \
                /etc/wsline/wsline.toml"
    ));
    // By hand the files are not there (exit 78, EX_CONFIG); the deployment guide's command checks the sources.
    let plain = host.sh("wsline --check-config --config /etc/wsline/wsline.toml");
    assert_eq!(plain.status.code(), Some(78), "{}", text(&plain.stderr));
    let output = host.step("credentials-check", block("credentials-check"));
    assert!(output.starts_with("config OK\n"), "{output}");
    host.ok("systemctl daemon-reload && systemctl start wsline");
    assert_eq!(
        host.served_certificate("127.0.0.1:3456"),
        host.file_certificate(&format!("/etc/letsencrypt/live/{NAME}/fullchain.pem"))
    );
    assert_eq!(
        host.ok(&format!("curl -sS --fail https://{NAME}/wsline/healthz")),
        "ok\n"
    );
    host.ok(
        "rm /etc/systemd/system/wsline.service.d/credentials.conf && \
         cp /root/wsline.toml.tls /etc/wsline/wsline.toml && systemctl daemon-reload",
    );

    // The watchdog, with a short period: alive past twice the period, restarted when stopped.
    host.ok(
        "mkdir -p /run/systemd/system/wsline.service.d && \
         printf '[Service]\\nWatchdogSec=2s\\nTimeoutAbortSec=5s\\n' > /run/systemd/system/wsline.service.d/watchdog.conf && \
         systemctl daemon-reload && systemctl restart wsline",
    );
    let pid = host.main_pid();
    let restarts = host.show("NRestarts");
    // Waiting is the check here: the process must still be the same after 2 × WatchdogSec.
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(host.main_pid(), pid, "restarted while healthy");
    assert_eq!(host.show("NRestarts"), restarts);
    host.ok(&format!("kill -STOP {pid}"));
    host.wait_for("the watchdog to restart a stopped wsline", || {
        let now = host.main_pid();
        (now != pid && now != "0" && host.show("ActiveState") == "active").then_some(())
    });
    assert_ne!(host.show("NRestarts"), restarts);
    let journal = host.ok("journalctl -u wsline --no-pager -o cat");
    assert!(journal.contains("Watchdog timeout"), "{journal}");
    host.ok("rm /run/systemd/system/wsline.service.d/watchdog.conf && systemctl daemon-reload");

    // Restart: a new process, serving again.
    let pid = host.main_pid();
    host.ok("systemctl restart wsline");
    assert_ne!(host.main_pid(), pid);
    assert_eq!(
        host.ok(&format!("curl -sS --fail https://{NAME}/wsline/healthz")),
        "ok\n"
    );

    // apt remove: the service stops and the binary goes; the edited conffile stays.
    host.ok("apt-get remove -y -q wsline >/dev/null");
    host.ok("test ! -e /usr/bin/wsline && test -e /etc/wsline/wsline.toml");
    assert_ne!(host.sh("systemctl is-active wsline").stdout, b"active\n");

    eprintln!("host: the whole test took {:.1?}", started.elapsed());
}

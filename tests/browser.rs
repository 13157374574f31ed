//! The demo page, `/client.js` and the `examples/` pages in a real browser: Debian's chromium,
//! headless, driven by `playwright-core` (see `tests/common/browser.rs`), against the real daemon
//! (and real nginx where a prefix is tested). Every test also checks that no page logged a console
//! error; a failing test leaves a screenshot of each of its pages in its temporary folder.

mod common;
#[path = "common/redis.rs"]
mod redis_server;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::browser::{Page, Session};
use common::daemon::Daemon;
use common::{Client, within};
use futures_util::SinkExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

const DESKTOP: (u32, u32) = (1024, 768);
const PHONE: (u32, u32) = (380, 740);

fn url(daemon: &Daemon, path: &str) -> String {
    format!("https://127.0.0.1:{}{path}", daemon.addr.port())
}

async fn open<'s>(s: &'s Session, tag: &str, url: &str) -> Page<'s> {
    s.open(tag, url, DESKTOP.0, DESKTOP.1).await
}

async fn stats(daemon: &Daemon) -> serde_json::Value {
    let (status, _, body) = daemon
        .http("GET /stats HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 200);
    serde_json::from_str(&body).unwrap()
}

/// Polls /stats (loopback, so allowed) until `pred` holds.
async fn wait_stats(daemon: &Daemon, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    within(what, async {
        loop {
            if pred(&stats(daemon).await) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    })
    .await
}

/// The page's status line says it is connected.
async fn connected(page: &Page<'_>) {
    page.wait_text("#status", "connected to").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pages_chat_both_ways_with_join_and_leave_lines_and_matching_presence() {
    let daemon = Daemon::start("[web]\nenabled = true\n", &[]).await;
    let s = Session::new("chat");
    let alice = open(&s, "alice", &url(&daemon, "/room1?name=alice")).await;
    connected(&alice).await;
    let bob = open(&s, "bob", &url(&daemon, "/room1?name=bob")).await;
    connected(&bob).await;

    // The presence list matches on both pages, and alice saw bob arrive.
    for page in [&alice, &bob] {
        page.wait_text("#members", "2 here (2 on the server): alice, bob")
            .await;
    }
    alice.wait_text("#log", "bob joined").await;
    wait_stats(&daemon, "two members in room1", |s| {
        s["rooms"]["room1"] == 2
    })
    .await;

    alice.say("#text", "#send", "hello bob").await;
    bob.wait_text("#log .msg", "hello bob").await;
    bob.say("#text", "#send", "hi alice").await;
    alice.wait_text("#log .msg", "hi alice").await;
    // Own messages are marked, others' are not.
    alice.wait_text("#log .own", "hello bob").await;
    assert_eq!(
        alice
            .eval("[...document.querySelectorAll('#log .own')].map(e => e.textContent).join('|')")
            .await,
        "alice: hello bob",
    );
    // The name is fixed once joined.
    assert_eq!(
        alice.eval("document.getElementById('name').disabled").await,
        true
    );

    // Switching rooms draws a separator; leaving shows a leave line to the others.
    bob.fill("#room", "room2").await;
    bob.click("#go").await;
    bob.wait_text("#log .sep", "room2").await;
    bob.wait_text("#status", "connected to room2 as bob").await;
    alice.wait_text("#log", "bob left").await;
    alice.wait_text("#members", "1 here").await;
    assert_eq!(bob.eval("location.pathname").await, "/room2");

    for page in [&alice, &bob] {
        page.assert_no_errors(|_| false).await;
        let (_, _, max) = page.sockets().await;
        assert_eq!(max, 1, "never two sockets at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_shows_the_1008_refusal_and_does_not_reconnect() {
    let daemon = Daemon::start("[web]\nenabled = true\n", &[]).await;
    let s = Session::new("taken");
    let first = open(&s, "first", &url(&daemon, "/r?name=carol")).await;
    connected(&first).await;
    let second = open(&s, "second", &url(&daemon, "/r?name=carol")).await;
    second
        .wait_text("#status", "refused: name taken (1008)")
        .await;
    second
        .wait_text("#log", "refused by the server: name taken (1008)")
        .await;
    // The first reconnect would come after at most 500 ms: wait three times that, in the page.
    let made = second
        .wait(
            "1.5 s after the refusal",
            "new Promise(r => setTimeout(() => r(window.__sockets.made), 1500))",
        )
        .await;
    assert_eq!(made, 1, "a refused page must not reconnect");
    assert_eq!(stats(&daemon).await["connections"], 1);
    assert_eq!(
        second
            .eval("document.getElementById('name').disabled")
            .await,
        false
    );
    for page in [&first, &second] {
        page.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_reconnect_after_a_daemon_restart_with_one_socket_each() {
    let config = "[web]\nenabled = true\n";
    let mut daemon = Daemon::start(config, &[]).await;
    let addr = daemon.addr;
    let s = Session::new("restart");
    let a = open(&s, "a", &url(&daemon, "/r?name=a")).await;
    let b = open(&s, "b", &url(&daemon, "/r?name=b")).await;
    connected(&a).await;
    connected(&b).await;
    wait_stats(&daemon, "both pages joined", |s| s["connections"] == 2).await;

    daemon.signal("-TERM");
    within("the daemon to exit", daemon.child.wait())
        .await
        .unwrap();
    // The pages show the loss and that they are reconnecting.
    for page in [&a, &b] {
        page.wait_text("#status", "reconnecting in").await;
    }
    let daemon = Daemon::start_on(addr, config).await;
    for page in [&a, &b] {
        connected(page).await;
        page.wait_text("#members", "2 here").await;
    }
    // Exactly one socket per page on the new daemon, and no page ever held two at once.
    wait_stats(&daemon, "both pages back", |s| s["connections"] == 2).await;
    a.say("#text", "#send", "after the restart").await;
    b.wait_text("#log .msg", "after the restart").await;
    let s2 = stats(&daemon).await;
    assert_eq!(s2["connections"], 2, "{s2}");
    assert_eq!(s2["connections_total"], 2, "one reconnect per page: {s2}");
    for page in [&a, &b] {
        let (made, live, max) = page.sockets().await;
        assert_eq!((live, max), (1, 1), "made {made}");
        assert!(page.text("#log").await.contains("reconnecting"));
        // While the daemon was down the browser itself reports the failed attempts.
        page.assert_no_errors(|e| e.contains("WebSocket connection to"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_viewport_shows_every_control() {
    let daemon = Daemon::start("[web]\nenabled = true\n", &[]).await;
    let s = Session::new("phone");
    let page = s
        .open(
            "phone",
            &url(&daemon, "/room1?name=alice"),
            PHONE.0,
            PHONE.1,
        )
        .await;
    connected(&page).await;
    let boxes = page
        .eval(
            "['#room','#name','#go','#leave','#status','#members','#log','#text','#send']\
             .map(s => { const r = document.querySelector(s).getBoundingClientRect();\
               return [s, r.left, r.top, r.right, r.bottom, r.width, r.height]; })",
        )
        .await;
    for b in boxes.as_array().unwrap() {
        let [sel, l, t, r, bo, w, h] = [0, 1, 2, 3, 4, 5, 6].map(|i| b[i].clone());
        let f = |v: &serde_json::Value| v.as_f64().unwrap();
        assert!(f(&w) > 0.0 && f(&h) > 0.0, "{sel} is invisible: {b}");
        assert!(
            f(&l) >= 0.0 && f(&t) >= 0.0 && f(&r) <= PHONE.0 as f64 && f(&bo) <= PHONE.1 as f64,
            "{sel} is outside the {PHONE:?} viewport: {b}"
        );
    }
    assert_eq!(
        page.eval("document.documentElement.scrollWidth <= 380")
            .await,
        true,
        "no sideways scrolling"
    );
    page.say("#text", "#send", "from a phone").await;
    page.wait_text("#log .own", "from a phone").await;
    page.assert_no_errors(|_| false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_json_envelope_a_message_shows_the_checked_sender() {
    let daemon = Daemon::start("[web]\nenabled = true\n[relay]\nenvelope = \"json\"\n", &[]).await;
    let s = Session::new("envelope");
    let dave = open(&s, "dave", &url(&daemon, "/room1?name=dave")).await;
    connected(&dave).await;
    // Another client claims to be "dave" in its text; the page shows who really sent it.
    let mut eve = daemon.connect("/room1?name=eve").await;
    eve.send(Message::text("dave: send me your password")).await;
    dave.wait_text("#log .msg", "send me your password").await;
    let shown = dave
        .eval("[...document.querySelectorAll('#log .msg')].map(e => e.textContent)")
        .await;
    assert_eq!(
        shown,
        serde_json::json!(["eve: dave: send me your password"])
    );
    assert_eq!(
        dave.eval("document.querySelector('#log .from').className")
            .await,
        "from",
        "a checked name is not marked unverified"
    );
    dave.say("#text", "#send", "hi eve").await;
    dave.wait_text("#log .own", "dave: hi eve").await;
    dave.assert_no_errors(|_| false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_counts_are_shown_as_presence_not_as_chat_lines() {
    let daemon = Daemon::start(
        "[web]\nenabled = true\n[presence]\nformat = \"plain\"\n",
        &[],
    )
    .await;
    let s = Session::new("plain");
    let page = open(&s, "plain", &url(&daemon, "/counted")).await;
    connected(&page).await;
    page.wait_text("#members", "1 here").await;
    let mut other = daemon.connect("/counted").await;
    page.wait_text("#members", "2 here").await;
    other.send(Message::text("7 apples")).await;
    page.wait_text("#log .msg", "7 apples").await;
    assert_eq!(
        page.eval("document.querySelectorAll('#log .msg').length")
            .await,
        1
    );
    page.assert_no_errors(|_| false).await;
}

/// nginx in the foreground with the shipped `nginx/wsline.conf` and `wsline-location.conf`
/// (wsline at `/wsline/`) and `root` serving the rest; stopped on drop.
struct Nginx {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Nginx {
    async fn start(upstream: std::net::SocketAddr, root: &Path) -> Nginx {
        let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("nginx is required for this test: `apt-get install nginx` (scripts/test does)");
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let d = dir.path().display();
        let conf = format!(
            "worker_processes 1; pid {d}/nginx.pid; error_log {d}/error.log;\n\
             events {{ worker_connections 256; }}\n\
             http {{ access_log off; include /etc/nginx/mime.types;\n\
               client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
               fastcgi_temp_path {d}/fastcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
               include {map};\n\
               upstream wsline {{ server {upstream}; }}\n\
               server {{ listen 127.0.0.1:{port};\n\
                 location / {{ root {root}; }}\n\
                 include {location}; }}\n\
             }}\n",
            map = repo.join("nginx/wsline.conf").display(),
            location = repo.join("nginx/wsline-location.conf").display(),
            root = root.display(),
        );
        let path = dir.path().join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(nginx)
            .args([
                "-p",
                &d.to_string(),
                "-c",
                path.to_str().unwrap(),
                "-g",
                "daemon off;",
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        within("nginx to listen", async {
            while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await;
        Nginx {
            child,
            port,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-QUIT", &self.child.id().to_string()])
            .status();
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
    }
}

/// The `examples/` pages copied where nginx's workers can read them.
fn site() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    for entry in std::fs::read_dir(examples).unwrap() {
        let path = entry.unwrap().path();
        let to = dir.path().join(path.file_name().unwrap());
        std::fs::copy(&path, &to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_works_through_nginx_under_a_prefix() {
    let daemon = Daemon::start("[web]\nenabled = true\n", &[]).await;
    let root = site();
    let nginx = Nginx::start(daemon.addr, root.path()).await;
    let s = Session::new("nginx");
    let a = open(&s, "a", &nginx.url("/wsline/room1?name=ann")).await;
    connected(&a).await;
    let b = open(&s, "b", &nginx.url("/wsline/?name=ben")).await;
    // /wsline/ is the landing page: join room1 from the form.
    b.fill("#room", "room1").await;
    b.fill("#name", "ben").await;
    b.click("#go").await;
    connected(&b).await;
    assert_eq!(b.eval("location.pathname").await, "/wsline/room1");
    a.wait_text("#members", "ann, ben").await;
    b.say("#text", "#send", "through nginx").await;
    a.wait_text("#log .msg", "ben: through nginx").await;
    a.say("#text", "#send", "and back").await;
    b.wait_text("#log .msg", "ann: and back").await;
    for page in [&a, &b] {
        page.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_count_only_example_works() {
    let daemon = Daemon::start("[presence]\nformat = \"plain\"\n", &[]).await;
    let root = site();
    let nginx = Nginx::start(daemon.addr, root.path()).await;
    let s = Session::new("count-only");
    let a = open(&s, "a", &nginx.url("/count-only.html")).await;
    a.wait_text("#count", "1").await;
    let b = open(&s, "b", &nginx.url("/count-only.html")).await;
    a.wait_text("#count", "2").await;
    b.wait_text("#count", "2").await;
    b.say("#input", "button", "hello everyone").await;
    a.wait_text("#messages", "hello everyone").await;
    assert_eq!(
        a.eval("document.querySelectorAll('#messages li').length")
            .await,
        1
    );
    for page in [&a, &b] {
        page.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_usernames_example_works() {
    let daemon = Daemon::start("[relay]\nenvelope = \"json\"\n[web]\nenabled = true\n", &[]).await;
    let root = site();
    let nginx = Nginx::start(daemon.addr, root.path()).await;
    let s = Session::new("usernames");
    let a = open(&s, "a", &nginx.url("/usernames.html?username=amy")).await;
    a.wait_text("#status", "open").await;
    let b = open(&s, "b", &nginx.url("/usernames.html?username=bo")).await;
    a.wait_text("#users", "amy, bo").await;
    b.wait_text("#users", "amy, bo").await;
    b.say("#input", "button", "hi amy").await;
    a.wait_text("#messages", "bo: hi amy").await;
    let c = open(&s, "c", &nginx.url("/usernames.html?username=amy")).await;
    c.wait_text("#status", "refused: name taken (1008)").await;
    for page in [&a, &b, &c] {
        page.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rooms_example_works() {
    let daemon = Daemon::start("[web]\nenabled = true\n", &[]).await;
    let root = site();
    let nginx = Nginx::start(daemon.addr, root.path()).await;
    let s = Session::new("rooms");
    let a = open(&s, "a", &nginx.url("/rooms.html")).await;
    let b = open(&s, "b", &nginx.url("/rooms.html")).await;
    for page in [&a, &b] {
        page.fill("#room", "games").await;
        page.click("#join button").await;
        page.wait_text("#current", "games").await;
    }
    a.wait_text("#count", "2 here").await;
    b.say("#input", "#form button", "gg").await;
    a.wait_text("#messages", "[games] gg").await;
    // b moves to another room: a hears nothing more from it.
    b.fill("#room", "music").await;
    b.click("#join button").await;
    b.wait_text("#current", "music").await;
    a.wait_text("#count", "1 here").await;
    wait_stats(&daemon, "one member in each room", |s| {
        s["rooms"]["games"] == 1 && s["rooms"]["music"] == 1
    })
    .await;
    for page in [&a, &b] {
        page.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_example_pings_and_reconnects_once() {
    let config =
        "[heartbeat]\napp_ping = '{\"type\":\"ping\"}'\napp_pong = '{\"type\":\"pong\"}'\n";
    let mut daemon = Daemon::start(config, &[]).await;
    let addr = daemon.addr;
    let root = site();
    let nginx = Nginx::start(addr, root.path()).await;
    let s = Session::new("heartbeat");
    let page = open(&s, "a", &nginx.url("/heartbeat.html?ping_ms=1000")).await;
    page.wait_text("#status", "open").await;
    page.wait(
        "two pongs",
        "Number(document.getElementById('pongs').textContent) >= 2",
    )
    .await;
    // A raw client in the room never sees the pings: they are answered, not relayed.
    let mut other = daemon.connect("/heartbeat").await;
    other.send(Message::text("relayed")).await;
    page.wait_text("#messages", "relayed").await;
    assert_eq!(
        page.eval("document.querySelectorAll('#messages li').length")
            .await,
        1
    );
    drop(other);

    daemon.signal("-TERM");
    within("the daemon to exit", daemon.child.wait())
        .await
        .unwrap();
    page.wait_text("#status", "reconnecting").await;
    let daemon = Daemon::start_on(addr, config).await;
    page.wait_text("#status", "open").await;
    wait_stats(&daemon, "the page back", |s| s["connections"] == 1).await;
    let (_, live, max) = page.sockets().await;
    assert_eq!((live, max), (1, 1));
    page.assert_no_errors(|e| e.contains("WebSocket connection to"))
        .await;
    let mut sink = daemon.connect("/heartbeat").await;
    sink.ws.send(Message::text("back")).await.unwrap();
    page.wait_text("#messages", "back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_applies_presence_states_and_changes() {
    let daemon = Daemon::start("[web]\nenabled = true\n", &[]).await;
    let s = Session::new("presence-model");
    let page = open(&s, "p", &url(&daemon, "/")).await;
    // SPEC §4: a state (names) replaces the list, a change (joined/left) is applied to it, and a
    // later state is diffed against the list; "more" and the counts pass through.
    let events = page
        .eval(
            r#"import("./client.js").then((m) => {
                 const r = Object.create(m.Room.prototype);
                 r.presenceFormat = "json";
                 r.members = new Set();
                 const seen = [];
                 r.emit = (type, detail) => seen.push(detail);
                 r.applyPresence({count: 2, total: 9, names: ["bob", "alice"], more: 1}, true);
                 r.applyPresence({count: 3, total: 10, joined: ["carol"], left: []}, false);
                 r.applyPresence({count: 2, total: 9, joined: [], left: ["alice"]}, false);
                 r.applyPresence({count: 2, total: 9, names: ["bob", "dave"]}, false);
                 r.applyPresence({count: 1, total: 5}, false);
                 return seen.map((e) => [e.count, e.total, e.members.join(","), e.joined.join(","),
                                         e.left.join(","), e.more, e.initial]);
               })"#,
        )
        .await;
    assert_eq!(
        events,
        serde_json::json!([
            [2, 9, "alice,bob", "", "", 1, true],
            [3, 10, "alice,bob,carol", "carol", "", 0, false],
            [2, 9, "bob,carol", "", "alice", 0, false],
            [2, 9, "bob,dave", "dave", "carol", 0, false],
            [1, 5, "", "", "bob,dave", 0, false],
        ])
    );
    page.assert_no_errors(|_| false).await;
}

/// The `[[rooms]]` configuration the browser guide (docs/browser.md) gives for running the four examples on one
/// daemon (the ```toml block after `<!-- config: examples -->`), so the guide is what is tested.
fn guide_config() -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/browser.md"))
            .unwrap();
    let (_, after) = readme
        .split_once("<!-- config: examples -->\n```toml\n")
        .expect("the browser guide's examples configuration");
    after.split_once("```").unwrap().0.to_owned()
}

/// The two pages of one example, and how to chat on them.
struct Pair<'s> {
    name: &'static str,
    a: Page<'s>,
    b: Page<'s>,
    input: &'static str,
    button: &'static str,
    /// Where received messages show, and how a message from a or b shows there.
    log: &'static str,
    shown: fn(&str, bool) -> String,
}

impl Pair<'_> {
    /// a says something b sees, then b says something a sees; `tag` makes the texts unique.
    async fn chat_both_ways(&self, tag: &str) {
        let (from_a, from_b) = (format!("{tag} from a"), format!("{tag} from b"));
        self.a.say(self.input, self.button, &from_a).await;
        self.b
            .wait_text(self.log, &(self.shown)(&from_a, true))
            .await;
        self.b.say(self.input, self.button, &from_b).await;
        self.a
            .wait_text(self.log, &(self.shown)(&from_b, false))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_four_examples_share_one_daemon_and_chat_across_a_restart_with_one_socket_per_tab() {
    let config = guide_config();
    let mut daemon = Daemon::start(&config, &[]).await;
    let addr = daemon.addr;
    let root = site();
    let nginx = Nginx::start(addr, root.path()).await;
    let s = Session::new("examples");
    let page = |tag: &'static str, path: &str| {
        let url = nginx.url(path);
        let s = &s;
        async move { open(s, tag, &url).await }
    };
    let count = Pair {
        name: "count-only",
        a: page("count-a", "/count-only.html").await,
        b: page("count-b", "/count-only.html").await,
        input: "#input",
        button: "button",
        log: "#messages",
        shown: |text, _| text.to_owned(),
    };
    let users = Pair {
        name: "usernames",
        a: page("users-a", "/usernames.html?username=amy").await,
        b: page("users-b", "/usernames.html?username=bo").await,
        input: "#input",
        button: "button",
        log: "#messages",
        shown: |text, from_a| format!("{}: {text}", if from_a { "amy" } else { "bo" }),
    };
    let rooms = Pair {
        name: "rooms",
        a: page("rooms-a", "/rooms.html").await,
        b: page("rooms-b", "/rooms.html").await,
        input: "#input",
        button: "#form button",
        log: "#messages",
        shown: |text, _| format!("[我的房间] {text}"),
    };
    let beat = Pair {
        name: "heartbeat",
        a: page("beat-a", "/heartbeat.html?ping_ms=1000").await,
        b: page("beat-b", "/heartbeat.html?ping_ms=1000").await,
        input: "#input",
        button: "button",
        log: "#messages",
        shown: |text, _| text.to_owned(),
    };
    for p in [&rooms.a, &rooms.b] {
        p.fill("#room", "我的房间").await;
        p.click("#join button").await;
        p.wait_text("#current", "我的房间").await;
    }
    // Plain counts in count-*, the checked names and envelope in chat-*, presence in a room
    // named in Chinese, and pongs in the heartbeat room, all at once.
    count.b.wait_text("#count", "2").await;
    users.a.wait_text("#users", "amy, bo").await;
    rooms.a.wait_text("#count", "2 here").await;
    beat.a
        .wait(
            "two pongs",
            "Number(document.getElementById('pongs').textContent) >= 2",
        )
        .await;
    let pairs = [&count, &users, &rooms, &beat];
    for pair in pairs {
        pair.chat_both_ways("before").await;
    }
    // A chat line of digits stays a chat line in the count-only chat (sent as binary).
    count.a.say("#input", "button", "42").await;
    count.b.wait_text("#messages li", "42").await;
    assert_eq!(count.b.text("#count").await, "2");
    wait_stats(&daemon, "the rooms of all four", |s| {
        s["connections"] == 8
            && s["rooms"]["count-lobby"] == 2
            && s["rooms"]["chat-main"] == 2
            && s["rooms"]["我的房间"] == 2
            && s["rooms"]["heartbeat"] == 2
    })
    .await;

    daemon.signal("-TERM");
    within("the daemon to exit", daemon.child.wait())
        .await
        .unwrap();
    count.a.wait_text("#status", "reconnecting").await;
    let daemon = Daemon::start_on(addr, &config).await;
    wait_stats(&daemon, "every tab back", |s| s["connections"] == 8).await;
    for pair in pairs {
        pair.chat_both_ways("after").await;
    }
    let s2 = stats(&daemon).await;
    assert_eq!(s2["connections_total"], 8, "one reconnect per tab: {s2}");
    for pair in pairs {
        for page in [&pair.a, &pair.b] {
            let (made, live, max) = page.sockets().await;
            assert_eq!((live, max), (1, 1), "{}: made {made}", pair.name);
            page.assert_no_errors(|e| e.contains("WebSocket connection to"))
                .await;
        }
    }
}

/// A TCP proxy for one test: forwards every connection to `upstream` until [`Proxy::cut`], which
/// stops forwarding on every connection open at that moment without closing it (a network
/// switch: the peers' sockets stay open and hear nothing). Later connections are forwarded.
struct Proxy {
    port: u16,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

/// A connection to `upstream`; with `wait`, an upstream that is down (a node restarting) is
/// waited for, up to 15 s, so the client's connection completes as soon as it is back.
async fn connect(upstream: std::net::SocketAddr, wait: bool) -> Option<TcpStream> {
    if !wait {
        return TcpStream::connect(upstream).await.ok();
    }
    let retry = async {
        loop {
            match TcpStream::connect(upstream).await {
                Ok(server) => return server,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), retry)
        .await
        .ok()
}

impl Proxy {
    async fn start(upstream: std::net::SocketAddr) -> Proxy {
        Proxy::start_with(upstream, false).await
    }

    /// A proxy whose new connections wait for an upstream that is down ([`connect`]).
    async fn start_waiting(upstream: std::net::SocketAddr) -> Proxy {
        Proxy::start_with(upstream, true).await
    }

    async fn start_with(upstream: std::net::SocketAddr, wait: bool) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (cut, cut_rx) = tokio::sync::watch::channel(0u64);
        let task = tokio::spawn(async move {
            loop {
                let Ok((client, _)) = listener.accept().await else {
                    return;
                };
                let generation = *cut_rx.borrow();
                let cut_rx = cut_rx.clone();
                tokio::spawn(async move {
                    let Some(server) = connect(upstream, wait).await else {
                        return;
                    };
                    let (mut cr, mut cw) = client.into_split();
                    let (mut sr, mut sw) = server.into_split();
                    let forward = async {
                        tokio::select! {
                            _ = tokio::io::copy(&mut cr, &mut sw) => {}
                            _ = tokio::io::copy(&mut sr, &mut cw) => {}
                        }
                    };
                    let mut cut_rx = cut_rx;
                    tokio::select! {
                        // The cut first: a poll woken by data that arrived after the cut must not
                        // forward it (unbiased, it would half the time, under load).
                        biased;
                        _ = async { drop(cut_rx.wait_for(|g| *g > generation).await) } => {
                            // Half-open from here on: hold both sockets, forward nothing.
                            std::future::pending::<()>().await;
                        }
                        () = forward => {}
                    }
                });
            }
        });
        Proxy { port, cut, task }
    }

    fn cut(&self) {
        self.cut.send_modify(|g| *g += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_cut_half_open_reconnects_takes_its_name_over_and_is_listed_once() {
    let config = "[web]\nenabled = true\n\
                  [heartbeat]\napp_ping = '{\"type\":\"ping\"}'\napp_pong = '{\"type\":\"pong\"}'\n";
    let daemon = Daemon::start(config, &[]).await;
    let proxy = Proxy::start(daemon.addr).await;
    let s = Session::new("half-open");
    let sam = open(
        &s,
        "sam",
        &format!("https://127.0.0.1:{}/r?name=sam&ping_ms=500", proxy.port),
    )
    .await;
    connected(&sam).await;
    let watcher = open(&s, "watcher", &url(&daemon, "/r?name=watcher")).await;
    connected(&watcher).await;
    watcher
        .wait_text("#members", "2 here (2 on the server): sam, watcher")
        .await;

    // The network switch: sam's socket stays open at both ends and carries nothing.
    let (made, _, _) = sam.sockets().await;
    let replaced_before = daemon.log().matches("code=4001").count();
    proxy.cut();
    // client.js notices the missing pongs, abandons the socket and reconnects with its session;
    // the server hands the name over at once and closes the ghost with 4001.
    sam.wait(
        "a new socket after the cut",
        &format!("window.__sockets.made > {made}"),
    )
    .await;
    sam.wait_text("#status", "connected to r as sam").await;
    daemon
        .wait_log_times("code=4001", replaced_before + 1)
        .await;
    assert!(sam.text("#log").await.contains("reconnecting"));
    wait_stats(&daemon, "sam once, the ghost gone", |s| {
        s["connections"] == 2 && s["rooms"]["r"] == 2
    })
    .await;
    watcher
        .wait_text("#members", "2 here (2 on the server): sam, watcher")
        .await;
    assert!(
        !watcher.text("#log").await.contains("sam left"),
        "the name never left the room"
    );
    // The chat goes on both ways on the new connection.
    sam.say("#text", "#send", "back again").await;
    watcher.wait_text("#log .msg", "back again").await;
    watcher.say("#text", "#send", "welcome back").await;
    sam.wait_text("#log .msg", "welcome back").await;
    // Anyone else asking for the name still gets name taken.
    let mut other = daemon.connect("/r?name=sam").await;
    let close = other.closed().await;
    assert_eq!(close.reason.as_str(), "name taken");
    for page in [&sam, &watcher] {
        page.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_js_refuses_a_bad_room_at_once_and_a_confusable_name_is_taken() {
    let daemon = Daemon::start(
        "[web]\nenabled = true\n[[rooms]]\nmatch = \"named-*\"\npresence = { require_name = true }\n",
        &[],
    )
    .await;
    let s = Session::new("refusals");
    let page = open(&s, "p", &url(&daemon, "/")).await;
    // A bad room name, and a nameless member of a room that requires names: reported by
    // client.js without a socket (the server's 400 would reach the page only as 1006).
    let reasons = page
        .eval(
            r#"import("./client.js").then(async (m) => {
                 const why = (options) => new Promise((resolve) => {
                   m.connect(options).addEventListener("status", (e) =>
                     resolve([e.detail.state, e.detail.reason]));
                 });
                 return [await why({ room: "a/b" }), await why({ room: "named-1" }),
                         window.__sockets.made];
               })"#,
        )
        .await;
    assert_eq!(reasons[0][0], "refused");
    assert!(
        reasons[0][1].as_str().unwrap().starts_with("bad room name"),
        "{reasons}"
    );
    assert!(
        reasons[1][1].as_str().unwrap().starts_with("name required"),
        "{reasons}"
    );
    assert_eq!(reasons[2], 0, "no socket was opened");
    // Cyrillic а next to Latin alice: one name, refused with 1008 like any taken name.
    let alice = open(&s, "alice", &url(&daemon, "/c?name=alice")).await;
    connected(&alice).await;
    let spoof = open(&s, "spoof", &url(&daemon, "/c?name=%D0%B0lice")).await;
    spoof
        .wait_text("#status", "refused: name taken (1008)")
        .await;
    // A Chinese room through the demo page: its address, presence and messages.
    let a = open(
        &s,
        "zh-a",
        &url(&daemon, "/%E6%88%91%E7%9A%84%E6%88%BF%E9%97%B4?name=a"),
    )
    .await;
    let b = open(&s, "zh-b", &url(&daemon, "/我的房间?name=b")).await;
    for p in [&a, &b] {
        p.wait_text("#status", "connected to 我的房间").await;
        p.wait_text("#members", "2 here").await;
    }
    a.say("#text", "#send", "你好").await;
    b.wait_text("#log .msg", "你好").await;
    for p in [&page, &alice, &spoof, &a, &b] {
        p.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quick_start_page_imports_client_js_across_origins_without_the_demo() {
    // web.enabled is off: /client.js is served on its own, with CORS for the page's origin.
    let daemon = Daemon::start("", &[]).await;
    let root = site();
    let nginx = Nginx::start(daemon.addr, root.path()).await;
    let wsline = url(&daemon, "/");
    let s = Session::new("quick-start");
    let a = open(
        &s,
        "a",
        &nginx.url(&format!("/quick-start.html?name=ann&wsline={wsline}")),
    )
    .await;
    let b = open(
        &s,
        "b",
        &nginx.url(&format!("/quick-start.html?name=ben&wsline={wsline}")),
    )
    .await;
    for p in [&a, &b] {
        p.wait_text("#status", "open").await;
        p.wait_text("#who", "2 here: ann, ben").await;
    }
    a.say("#text", "button", "across origins").await;
    b.wait_text("#log", "across origins").await;
    b.say("#text", "button", "and back").await;
    a.wait_text("#log", "and back").await;
    for p in [&a, &b] {
        p.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tab_whose_session_is_taken_over_says_so_and_stops() {
    let daemon = Daemon::start("[web]\nenabled = true\n", &[]).await;
    let s = Session::new("replaced");
    let first = open(&s, "first", &url(&daemon, "/r?name=sam")).await;
    connected(&first).await;
    // A duplicated tab carries the same sessionStorage, hence the same session.
    let session = first.eval("sessionStorage.getItem('wsline-session')").await;
    assert!(session.as_str().is_some_and(|s| s.len() == 32), "{session}");
    let second = open(&s, "second", &url(&daemon, "/")).await;
    second
        .eval(&format!(
            "sessionStorage.setItem('wsline-session', {session}); location.href = 'r?name=sam'; true"
        ))
        .await;
    connected(&second).await;
    first.wait_text("#status", "replaced: ").await;
    first
        .wait_text("#log", "your name was taken over by another tab")
        .await;
    let made = first
        .wait(
            "1.5 s after the takeover",
            "new Promise(r => setTimeout(() => r(window.__sockets.made), 1500))",
        )
        .await;
    assert_eq!(
        made, 1,
        "a replaced tab does not reconnect (it would take the name back)"
    );
    wait_stats(&daemon, "one sam", |s| s["connections"] == 1).await;
    for page in [&first, &second] {
        page.assert_no_errors(|_| false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_function_is_asked_again_for_every_reconnect() {
    const SECRET: &str = "a-browser-test-secret-of-32-bytes-or-more";
    let daemon = Daemon::start(&format!("[security.jwt]\nsecret = \"{SECRET}\"\n"), &[]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let sign = |name: &str, exp: u64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &serde_json::json!({"sub": name, "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
        )
        .unwrap()
    };
    // The first token expires in 2 s: the server closes with 4002 and the client asks again.
    let tokens = [sign("first", now + 2), sign("second", now + 600)];
    let s = Session::new("token-function");
    let page = open(&s, "p", &url(&daemon, "/")).await;
    page.eval(&format!(
        "import('/client.js').then((m) => {{
           const tokens = {tokens};
           window.asked = 0;
           window.codes = [];
           const room = m.connect({{ room: 'r', minDelay: 50, token: async () => tokens[Math.min(window.asked++, 1)] }});
           room.addEventListener('status', (e) => {{ if (e.detail.code) window.codes.push(e.detail.code); }});
           room.addEventListener('presence', (e) => {{ window.members = e.detail.members; }});
           return true;
         }})",
        tokens = serde_json::to_string(&tokens).unwrap()
    ))
    .await;
    page.wait(
        "the first token's name",
        "window.members && window.members.join() === 'first'",
    )
    .await;
    let asked = within("the reconnect with the second token", async {
        loop {
            let v = page
                .eval("window.members && window.members.join() === 'second' ? window.asked : 0")
                .await;
            if v.as_u64().unwrap_or(0) > 0 {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(asked, 2, "one fresh token per socket");
    assert_eq!(page.eval("window.codes").await, serde_json::json!([4002]));
    // The banner page has no favicon: Chromium's request for one is the only 404.
    page.assert_no_errors(|e| e.contains("404 (Not Found)"))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_cut_while_fifty_messages_are_sent_shows_each_once_in_order_after_reconnecting() {
    let config = "[web]\nenabled = true\n[relay]\nenvelope = \"json\"\nhistory = 100\n\
                  [heartbeat]\napp_ping = '{\"type\":\"ping\"}'\napp_pong = '{\"type\":\"pong\"}'\n";
    let daemon = Daemon::start(config, &[]).await;
    let proxy = Proxy::start(daemon.addr).await;
    let s = Session::new("recovery");
    let sam = open(
        &s,
        "sam",
        &format!("https://127.0.0.1:{}/r?name=sam&ping_ms=500", proxy.port),
    )
    .await;
    connected(&sam).await;
    let mut bot = daemon.connect("/r?name=bot").await;
    bot.send_text("before the cut").await;
    sam.wait_text("#log .msg", "before the cut").await;

    let (made, _, _) = sam.sockets().await;
    proxy.cut();
    for i in 0..50 {
        bot.send_text(&format!("missed {i:02}")).await;
    }
    // client.js notices the missing pongs and reconnects with ?since=: the 50 are replayed.
    sam.wait(
        "a new socket after the cut",
        &format!("window.__sockets.made > {made}"),
    )
    .await;
    shows_the_fifty_once_in_order(&sam, &mut bot, "before the cut").await;
    sam.assert_no_errors(|_| false).await;
}

/// The same across a node restart in a cluster: the page's socket goes through node a, the
/// sender is on node b, and node a is killed and started again (same address) while the page is
/// away; the 50 sent meanwhile are numbered by Redis and recovered from it by the new node a.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_away_while_its_node_restarts_shows_the_fifty_sent_on_another_node_once_in_order() {
    let redis = redis_server::Redis::start().await;
    let config = |id: &str| {
        format!(
            "[web]\nenabled = true\n[relay]\nenvelope = \"json\"\nhistory = 100\n\
             [heartbeat]\napp_ping = '{{\"type\":\"ping\"}}'\napp_pong = '{{\"type\":\"pong\"}}'\n\
             [cluster]\nredis = \"{}\"\nnode_id = \"{id}\"\nnode_timeout = \"2s\"\n",
            redis.url()
        )
    };
    let mut a = Daemon::start(&config("a"), &[]).await;
    let b = Daemon::start(&config("b"), &[]).await;
    a.wait_log("cluster connected").await;
    b.wait_log("cluster connected").await;
    let proxy = Proxy::start_waiting(a.addr).await;
    let s = Session::new("cluster-recovery");
    let sam = open(
        &s,
        "sam",
        &format!("https://127.0.0.1:{}/r?name=sam&ping_ms=500", proxy.port),
    )
    .await;
    connected(&sam).await;
    let mut bot = b.connect("/r?name=bot").await;
    sam.wait_text("#members", "2 here").await;
    bot.send_text("before the restart").await;
    sam.wait_text("#log .msg", "before the restart").await;

    let (made, _, _) = sam.sockets().await;
    let addr = a.addr;
    a.child.kill().await.unwrap();
    // Node b sees sam leave once node a is swept: its name is free again.
    within("node a swept", async {
        while bot.recv_presence().await["count"] != 1 {}
    })
    .await;
    for i in 0..50 {
        bot.send_text(&format!("missed {i:02}")).await;
    }
    let a = Daemon::start_on(addr, &config("a")).await;
    a.wait_log("cluster connected").await;
    sam.wait(
        "a new socket after the restart",
        &format!("window.__sockets.made > {made}"),
    )
    .await;
    shows_the_fifty_once_in_order(&sam, &mut bot, "before the restart").await;
    // The page's failed connects while node a was down are expected console noise.
    sam.assert_no_errors(|e| e.contains("WebSocket") || e.contains("ERR_CONNECTION"))
        .await;
    drop(a);
}

/// After a reconnect: the page says it recovered 50 messages, then, once `bot`'s live marker
/// arrived, shows `before` and `missed 00`..`missed 49` each once and in order.
async fn shows_the_fifty_once_in_order(sam: &Page<'_>, bot: &mut Client, before: &str) {
    sam.wait_text("#log .sys", "reconnected, 50 missed messages recovered")
        .await;
    bot.send_text("after").await;
    sam.wait_text("#log .msg", "after").await;
    let shown = sam
        .eval(&format!(
            "[...document.querySelectorAll('#log .msg')].map(e => e.textContent)\
             .filter(t => t.includes('missed ') || t.includes('{before}'))"
        ))
        .await;
    let mut expected = vec![format!("bot: {before}")];
    expected.extend((0..50).map(|i| format!("bot: missed {i:02}")));
    assert_eq!(shown, serde_json::json!(expected), "each once, in order");
}

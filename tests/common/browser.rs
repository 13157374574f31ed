//! Headless chromium (Debian's `/usr/bin/chromium`) driven through `tests/browser/driver.mjs`
//! (`playwright-core` from npm, no browser download): one browser per test binary, one isolated
//! context per page. Every call is bounded by [`WAIT`](super::WAIT).
//!
//! A test holds a [`Session`]: its pages, and a temporary folder that receives a screenshot of each
//! page if the test fails (kept, and named on stderr) or when `WSLINE_SCREENSHOTS` names a folder.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde_json::{Value, json};

use super::WAIT;

/// Counts the page's WebSockets before any page script runs: `made` in all, `live` not yet
/// closed, `max` the most live at once.
pub const SOCKET_COUNTER: &str = r#"(() => {
  const W = window.WebSocket;
  const s = (window.__sockets = { made: 0, live: 0, max: 0 });
  window.WebSocket = class extends W {
    constructor(...args) {
      super(...args);
      s.made++; s.live++; s.max = Math.max(s.max, s.live);
      this.addEventListener("close", () => { s.live--; });
    }
  };
})();"#;

/// Requests in flight: id -> where its answer goes.
type Waiting = Arc<Mutex<HashMap<u64, mpsc::Sender<Result<Value, String>>>>>;

struct Driver {
    stdin: Mutex<ChildStdin>,
    waiting: Waiting,
    next: AtomicU64,
    _child: Child,
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn require(program: &str, hint: &str) -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(program))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| panic!("`{program}` is required for the browser tests: {hint}"))
}

fn driver() -> &'static Driver {
    static DRIVER: OnceLock<Driver> = OnceLock::new();
    DRIVER.get_or_init(|| {
        let chromium = std::env::var("CHROMIUM").map(PathBuf::from).unwrap_or_else(|_| {
            require("chromium", "install it with `apt-get install chromium` (scripts/test does)")
        });
        let node = require(
            "node",
            "install Node.js 20 or newer (`apt-get install nodejs npm` on Debian 13)",
        );
        let version = Command::new(&node)
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let major: u32 = version
            .trim()
            .trim_start_matches('v')
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0);
        assert!(
            major >= 20,
            "the browser tests need Node.js 20 or newer (playwright-core's minimum), found {version:?}"
        );
        let dir = repo("tests/browser");
        if !dir.join("node_modules/playwright-core").is_dir() {
            let npm = require("npm", "install npm (`apt-get install npm`)");
            let status = Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund", "--silent"])
                .current_dir(&dir)
                .status()
                .expect("npm ci in tests/browser");
            assert!(
                status.success(),
                "`npm ci` in tests/browser failed (it needs the npm registry)"
            );
        }
        let mut child = Command::new(node)
            .arg(dir.join("driver.mjs"))
            .env("CHROMIUM", &chromium)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tests/browser/driver.mjs");
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let waiting: Waiting = Arc::default();
        let (ready_tx, ready_rx) = mpsc::channel();
        waiting.lock().unwrap().insert(0, ready_tx);
        let table = waiting.clone();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                let id = v["id"].as_u64().unwrap_or(u64::MAX);
                let answer = if v["ok"] == true {
                    Ok(v["value"].clone())
                } else {
                    Err(v["error"].as_str().unwrap_or("?").to_owned())
                };
                if let Some(tx) = table.lock().unwrap().remove(&id) {
                    let _ = tx.send(answer);
                }
            }
        });
        let version = ready_rx
            .recv_timeout(Duration::from_secs(30))
            .expect("chromium to start under playwright-core")
            .expect("chromium started");
        eprintln!("browser tests: chromium {version}");
        Driver {
            stdin: Mutex::new(stdin),
            waiting,
            next: AtomicU64::new(1),
            _child: child,
        }
    })
}

/// Sends one request and waits (blocking) for its answer.
fn call_blocking(mut request: Value) -> Result<Value, String> {
    let d = driver();
    let id = d.next.fetch_add(1, Ordering::Relaxed);
    request["id"] = id.into();
    let (tx, rx) = mpsc::channel();
    d.waiting.lock().unwrap().insert(id, tx);
    {
        let mut stdin = d.stdin.lock().unwrap();
        writeln!(stdin, "{request}").expect("write to the browser driver");
        stdin.flush().unwrap();
    }
    rx.recv_timeout(WAIT)
        .unwrap_or_else(|_| Err(format!("no answer within {WAIT:?} to {request}")))
}

async fn call(request: Value) -> Result<Value, String> {
    tokio::task::spawn_blocking(move || call_blocking(request))
        .await
        .unwrap()
}

/// One test's pages and its screenshot folder.
pub struct Session {
    name: String,
    dir: Option<tempfile::TempDir>,
    pages: Mutex<Vec<String>>,
}

/// A page in its own browser context.
pub struct Page<'s> {
    session: &'s Session,
    id: String,
}

impl Session {
    pub fn new(name: &str) -> Session {
        let dir = tempfile::Builder::new()
            .prefix(&format!("wsline-browser-{name}-"))
            .tempdir()
            .unwrap();
        Session {
            name: name.to_owned(),
            dir: Some(dir),
            pages: Mutex::default(),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().unwrap().path()
    }

    /// Opens `url` at `width` x `height` with the socket counter installed.
    pub async fn open(&self, tag: &str, url: &str, width: u32, height: u32) -> Page<'_> {
        let id = format!("{}/{tag}", self.name);
        self.pages.lock().unwrap().push(id.clone());
        call(
            json!({"op": "open", "page": id, "url": url, "width": width, "height": height,
                    "init": SOCKET_COUNTER}),
        )
        .await
        .unwrap_or_else(|e| panic!("open {url}: {e}"));
        Page { session: self, id }
    }

    fn screenshots(&self, into: &Path) {
        for id in self.pages.lock().unwrap().iter() {
            let file = into.join(format!("{}.png", id.replace('/', "-")));
            let _ = call_blocking(json!({"op": "screenshot", "page": id, "path": file}));
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(dir) = std::env::var_os("WSLINE_SCREENSHOTS") {
            let _ = std::fs::create_dir_all(&dir);
            self.screenshots(Path::new(&dir));
        }
        if std::thread::panicking() {
            let dir = self.dir.take().unwrap().keep();
            self.screenshots(&dir);
            eprintln!(
                "browser test {}: screenshots in {}",
                self.name,
                dir.display()
            );
        }
        for id in self.pages.lock().unwrap().iter() {
            let _ = call_blocking(json!({"op": "close", "page": id}));
        }
    }
}

impl Page<'_> {
    async fn op(&self, op: &str, mut args: Value) -> Value {
        args["op"] = op.into();
        args["page"] = self.id.clone().into();
        call(args.clone())
            .await
            .unwrap_or_else(|e| panic!("{} {op} {args}: {e}", self.id))
    }

    /// Evaluates a JavaScript expression in the page.
    pub async fn eval(&self, js: &str) -> Value {
        self.op("eval", json!({ "js": js })).await
    }

    /// Waits until the expression is truthy (polling), and returns its value.
    pub async fn wait(&self, what: &str, js: &str) -> Value {
        let args = json!({"op": "wait", "page": self.id, "js": js, "timeout": 8000});
        match call(args).await {
            Ok(v) => v,
            Err(e) => {
                let log = self.text("#log").await;
                let status = self.text("#status").await;
                panic!(
                    "{}: waiting for {what} ({js}): {e}\nstatus: {status}\nlog: {log}",
                    self.id
                )
            }
        }
    }

    /// Waits until the text of an element matching `selector` contains `needle`.
    pub async fn wait_text(&self, selector: &str, needle: &str) {
        let js = format!(
            "[...document.querySelectorAll({s})].some(e => e.textContent.includes({n}))",
            s = serde_json::to_string(selector).unwrap(),
            n = serde_json::to_string(needle).unwrap()
        );
        self.wait(&format!("{selector} to contain {needle:?}"), &js)
            .await;
    }

    /// The element's text ("" if absent).
    pub async fn text(&self, selector: &str) -> String {
        let js = format!(
            "(document.querySelector({}) || {{}}).textContent || ''",
            serde_json::to_string(selector).unwrap()
        );
        call(json!({"op": "eval", "page": self.id, "js": js}))
            .await
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    pub async fn fill(&self, selector: &str, value: &str) {
        self.op("fill", json!({"selector": selector, "value": value}))
            .await;
    }

    pub async fn click(&self, selector: &str) {
        self.op("click", json!({ "selector": selector })).await;
    }

    /// Types `text` into `input` and clicks `button`.
    pub async fn say(&self, input: &str, button: &str, text: &str) {
        self.fill(input, text).await;
        self.click(button).await;
    }

    /// The page's socket counts: (made, live, most live at once).
    pub async fn sockets(&self) -> (u64, u64, u64) {
        let v = self.eval("window.__sockets").await;
        let n = |k: &str| v[k].as_u64().unwrap();
        (n("made"), n("live"), n("max"))
    }

    /// Console errors and uncaught exceptions so far.
    pub async fn errors(&self) -> Vec<String> {
        let v = self.op("errors", json!({})).await;
        serde_json::from_value(v).unwrap()
    }

    /// Fails the test if the page logged an error other than those `allowed` matches.
    pub async fn assert_no_errors(&self, allowed: impl Fn(&str) -> bool) {
        let errors: Vec<String> = self
            .errors()
            .await
            .into_iter()
            .filter(|e| !allowed(e))
            .collect();
        assert!(
            errors.is_empty(),
            "{}: console errors: {errors:#?}",
            self.id
        );
    }

    pub fn session(&self) -> &Session {
        self.session
    }
}

//! The `scale` scenario: as many connections as the machine allows, and what holding them costs.
//!
//! Sizing a relay for 100 000 connections needs slopes, not one figure: handshakes per second,
//! memory per connection, CPU per connection at rest (heartbeats), CPU per delivery when one
//! message goes to everyone, and what a burst of joins costs in presence traffic. Each is its own
//! phase (`--phases`, run in this order), so one run gives every slope:
//!
//! - `open`: N connections into the URL's room, spread over the source addresses 127.0.0.1 …
//!   127.0.0.K (bind before connect: servers limit connections per address, and one source
//!   address has only the ephemeral port range, ~28 000 ports, per destination). Handshakes/s and
//!   RSS per connection.
//! - `hold`: nothing sent for `--hold` seconds, which must span a heartbeat round (wsline pings
//!   every 30 s by default): server CPU at rest, and the pings the members saw and answered.
//! - `broadcast`: one member sends one message, K times; every member's latency and the server's
//!   CPU per delivery.
//! - `storm`: M members finish TCP and TLS first, then all send their upgrade at once, so the joins
//!   land within about a second (a loopback load generator does not do 10 000 TLS handshakes a
//!   second): the presence messages and bytes each member gets, and the time until every member
//!   holds the exact final count.
//! - `rooms`: R connections each in its own room, then `/stats` and `/metrics` timed.
//!
//! `open`, `hold` and `broadcast` hold the N connections; `storm` and `rooms` open their own after
//! those are closed (N plus 10 000 would not fit in the load generator's own descriptors). Every
//! wait has a deadline: a server that sends the count to everyone on every join does quadratic
//! work, and the run reports how far it got instead of waiting for it.
//!
//! Presence traffic is read as a count whichever form it takes: a bare number (`presence.format =
//! "plain"`, the Node tutorial server's count message) or the `count` field of a JSON presence
//! message (a full state or a change, in wsline's old and new formats alike).

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, Stream, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, ProcSample, SETTLE, Target, Ws, now_ns, parse, payload};
use crate::scenarios::{histogram, latency, round};

/// The default N never goes above this: the size the README sizes a VM for.
const MAX_CONNECTIONS: usize = 100_000;
/// Descriptors the default N leaves free below the open-files limit (stdio, the runtime, requests).
const FD_MARGIN: u64 = 1_000;
/// The default N when the open-files limit cannot be read.
const FALLBACK_CONNECTIONS: usize = 10_000;
/// The load generator's read buffer per connection: every message here is small.
const READ_BUFFER: usize = 4 * 1024;
/// How long one broadcast may take to reach everyone before the round counts as incomplete.
const BROADCAST_TIMEOUT: Duration = Duration::from_secs(30);
/// Rest between broadcasts, so that one round's tail is not the next round's CPU.
const BROADCAST_GAP: Duration = Duration::from_millis(500);
/// After every storm member holds the final count: how long to keep counting late messages.
const STORM_QUIET: Duration = Duration::from_secs(1);
/// How often the storm checks whether every member holds the final count.
const STORM_POLL: Duration = Duration::from_millis(10);
/// `last_count` before any count arrived.
const NO_COUNT: u64 = u64::MAX;

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// The server sends nothing on joins and leaves (wsline `presence.format = "off"`, node COUNT=0).
    Off,
    /// The server sends the count (wsline `presence.format = "plain"`, node COUNT=1).
    Count,
}

#[derive(clap::ValueEnum, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Open,
    Hold,
    Broadcast,
    Storm,
    Rooms,
}

#[derive(clap::Args)]
#[group(id = "scale_options")] // the subcommand is also called `scale`
pub struct Scale {
    /// Connections to hold [default: this process's open-files limit minus 1000, at most 100 000;
    /// raise the soft limit first: `ulimit -n "$(ulimit -Hn)"`].
    #[arg(short = 'n', long)]
    pub connections: Option<usize>,
    /// Spread connections over the source addresses 127.0.0.1 … 127.0.0.K (0: the OS chooses;
    /// only for a target on 127.0.0.0/8).
    #[arg(long, default_value_t = 8)]
    pub sources: u8,
    /// Handshakes in flight at once while opening.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// What the server was started to send on joins and leaves; names the result line
    /// (`scale` or `scale-count`), the figures are measured the same way.
    #[arg(long, value_enum, default_value_t = Presence::Off)]
    pub presence: Presence,
    /// Phases to run, comma-separated; `hold` and `broadcast` need `open`.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "open,hold,broadcast"
    )]
    pub phases: Vec<Phase>,
    /// Give up opening (N connections, or the storm's TLS sessions) after this many seconds.
    #[arg(long, default_value_t = 120)]
    pub open_timeout: u64,
    /// Seconds of rest; at least the server's ping interval (wsline's default is 30 s).
    #[arg(long, default_value_t = 35)]
    pub hold: u64,
    /// One-to-all broadcasts, one message each.
    #[arg(long, default_value_t = 3)]
    pub broadcasts: u32,
    /// Bytes per broadcast message.
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    /// Members joining one room at once in the storm. They finish TLS first and then upgrade
    /// together, so the server's handshake deadline (wsline `limits.handshake_timeout`) must
    /// outlast the TLS phase (about 4 s for 10 000 here).
    #[arg(long, default_value_t = 10_000)]
    pub storm: usize,
    /// Seconds the storm may take until every member holds the final count.
    #[arg(long, default_value_t = 60)]
    pub storm_timeout: u64,
    /// Rooms (one connection each) open while /stats and /metrics are timed.
    #[arg(long, default_value_t = 10_000)]
    pub rooms: usize,
    /// Requests each to /stats and /metrics.
    #[arg(long, default_value_t = 20)]
    pub requests: usize,
}

pub async fn scale(target: &Target, o: &Scale, pid: Option<u32>) -> Result<Value, String> {
    let n = o
        .connections
        .unwrap_or_else(|| default_connections(open_files_limit()));
    let sources = sources(target.uri.host().unwrap_or(""), o.sources);
    let base = room_base(target.uri.path());
    let mut out = json!({
        "scenario": match o.presence { Presence::Off => "scale", Presence::Count => "scale-count" },
        "sources": sources.len(), "concurrency": o.concurrency,
    });
    let has = |p: Phase| o.phases.contains(&p);
    if has(Phase::Open) {
        let figures = hold_and_broadcast(target, o, n, &sources, pid).await?;
        merge(&mut out, figures);
    }
    if has(Phase::Storm) && o.storm > 0 {
        if o.presence == Presence::Off {
            return Err("the storm measures presence counts: give --presence count".into());
        }
        if has(Phase::Open) {
            tokio::time::sleep(SETTLE).await; // the server closes the N connections first
        }
        out["storm"] = storm(target, o, &sources, &format!("{base}-storm"), pid).await;
    }
    if has(Phase::Rooms) && o.rooms > 0 {
        tokio::time::sleep(SETTLE).await;
        out["rooms"] = rooms(target, o, &sources, &base).await;
    }
    Ok(out)
}

/// The `open`, `hold` and `broadcast` phases over the same N connections.
async fn hold_and_broadcast(
    target: &Target,
    o: &Scale,
    n: usize,
    sources: &[Option<IpAddr>],
    pid: Option<u32>,
) -> Result<Value, String> {
    let me = Some(std::process::id());
    let deliveries = Arc::new(Deliveries::default());
    let (server0, loadgen0) = (client::sample(pid), client::sample(me));
    let deadline = Instant::now() + Duration::from_secs(o.open_timeout);
    let mut opened = open(target, o, n, sources, deadline, &|_| None, &deliveries).await;
    let (server1, loadgen1) = (client::sample(pid), client::sample(me));
    let count = opened.tracks.len();
    let mut out = json!({
        "connections": n, "opened": count,
        "open": {
            "seconds": round(opened.seconds), "complete": opened.complete,
            "failed": opened.failed, "first_error": opened.first_error,
            "handshakes_per_s": (count as f64 / opened.seconds.max(1e-9)).round(),
            "handshake_ms": latency(&opened.handshakes),
            "server_cpu_pct": cpu_pct(server0, server1, opened.seconds),
            "server_us_per_handshake": match (server0, server1) {
                (Some(a), Some(b)) if count > 0 => json!(round(a.cpu_until(&b) / count as f64 * 1e6)),
                _ => Value::Null,
            },
            "loadgen_cpu_pct": cpu_pct(loadgen0, loadgen1, opened.seconds),
        },
    });
    tokio::time::sleep(SETTLE).await;
    let server2 = client::sample(pid);
    if let (Some(before), Some(after)) = (server0, server2) {
        out["rss"] = json!({
            "before_kib": before.rss_kib, "after_kib": after.rss_kib,
            "per_connection_kib": round(
                after.rss_kib.saturating_sub(before.rss_kib) as f64 / count.max(1) as f64),
        });
    }
    if !opened.complete || count == 0 {
        out["skipped"] = json!("hold and broadcast: not every connection opened in time");
        return Ok(out);
    }
    if o.phases.contains(&Phase::Hold) {
        out["hold"] = hold(o, &opened, pid).await;
    }
    if o.phases.contains(&Phase::Broadcast) && o.broadcasts > 0 {
        out["broadcast"] = broadcast(o, &mut opened, &deliveries, pid).await?;
    }
    Ok(out)
}

async fn hold(o: &Scale, opened: &Opened, pid: Option<u32>) -> Value {
    let me = Some(std::process::id());
    let pings = || -> u64 {
        opened
            .tracks
            .iter()
            .map(|t| t.pings.load(Ordering::Relaxed))
            .sum()
    };
    let (pings0, server0, loadgen0) = (pings(), client::sample(pid), client::sample(me));
    let seconds = o.hold as f64;
    tokio::time::sleep(Duration::from_secs(o.hold)).await;
    let (pings1, server1, loadgen1) = (pings(), client::sample(pid), client::sample(me));
    let count = opened.tracks.len() as f64;
    let seen = pings1 - pings0;
    let closed = opened
        .tracks
        .iter()
        .filter(|t| t.closed.load(Ordering::Relaxed))
        .count();
    let mut out = json!({
        "seconds": o.hold, "pings": seen, "ping_rounds": round(seen as f64 / count),
        "closed": closed, "loadgen_cpu_pct": cpu_pct(loadgen0, loadgen1, seconds),
    });
    if let (Some(a), Some(b)) = (server0, server1) {
        let cpu = a.cpu_until(&b);
        let pct = cpu / seconds * 100.0;
        merge(
            &mut out,
            json!({
                "server_cpu_s": round(cpu), "server_cpu_pct": round(pct),
                "server_cpu_pct_per_10k": round(pct * 10_000.0 / count),
                "server_us_per_ping": if seen > 0 { json!(round(cpu / seen as f64 * 1e6)) } else { Value::Null },
                "rss_after_kib": b.rss_kib,
            }),
        );
    }
    out
}

async fn broadcast(
    o: &Scale,
    opened: &mut Opened,
    deliveries: &Deliveries,
    pid: Option<u32>,
) -> Result<Value, String> {
    let me = Some(std::process::id());
    let (mut server_cpu, mut loadgen_cpu) = (0.0, 0.0);
    let (mut expected, mut complete) = (0u64, true);
    let delivered0 = deliveries.count.load(Ordering::Acquire);
    for seq in 0..u64::from(o.broadcasts) {
        // Every open member gets it, the sender included (wsline echoes, so does Node's forEach).
        let live = opened
            .tracks
            .iter()
            .filter(|t| !t.closed.load(Ordering::Relaxed))
            .count() as u64;
        let goal = deliveries.count.load(Ordering::Acquire) + live;
        deliveries.goal.store(goal, Ordering::Release);
        expected += live;
        let (server0, loadgen0) = (client::sample(pid), client::sample(me));
        let sender = opened
            .sinks
            .first_mut()
            .ok_or("no connection to send from")?;
        sender
            .send(payload(seq, o.size))
            .await
            .map_err(|e| format!("broadcast: {e}"))?;
        let deadline = Instant::now() + BROADCAST_TIMEOUT;
        while deliveries.count.load(Ordering::Acquire) < goal {
            let reached = deliveries.reached.notified();
            if tokio::time::timeout_at(deadline.into(), reached)
                .await
                .is_err()
            {
                complete = false;
                break;
            }
        }
        let (server1, loadgen1) = (client::sample(pid), client::sample(me));
        if let (Some(a), Some(b)) = (server0, server1) {
            server_cpu += a.cpu_until(&b);
        }
        if let (Some(a), Some(b)) = (loadgen0, loadgen1) {
            loadgen_cpu += a.cpu_until(&b);
        }
        tokio::time::sleep(BROADCAST_GAP).await;
    }
    let delivered = deliveries.count.load(Ordering::Acquire) - delivered0;
    let per = |cpu: f64| round(cpu / delivered.max(1) as f64 * 1e6);
    let latencies = deliveries
        .latencies
        .lock()
        .map_err(|_| "latency histogram poisoned")?;
    Ok(json!({
        "rounds": o.broadcasts, "size": o.size, "expected": expected, "delivered": delivered,
        "complete": complete, "latency_ms": latency(&latencies),
        "server_cpu_s": round(server_cpu), "server_us_per_delivery": per(server_cpu),
        "loadgen_us_per_delivery": per(loadgen_cpu),
    }))
}

/// The `storm` phase: TLS first, then every upgrade at once into the room `path`.
async fn storm(
    target: &Target,
    o: &Scale,
    sources: &[Option<IpAddr>],
    path: &str,
    pid: Option<u32>,
) -> Value {
    let members = o.storm;
    let started = Instant::now();
    let deadline = started + Duration::from_secs(o.open_timeout);
    let mut sessions = futures_util::stream::iter(0..members)
        .map(|i| target.open(sources[i % sources.len()]))
        .buffer_unordered(o.concurrency.max(1));
    let (mut ios, mut failed_tls) = (Vec::with_capacity(members), 0u64);
    while let Ok(Some(r)) = tokio::time::timeout_at(deadline.into(), sessions.next()).await {
        match r {
            Ok(io) => ios.push(io),
            Err(_) => failed_tls += 1,
        }
    }
    drop(sessions);
    let tls_seconds = started.elapsed().as_secs_f64();

    let target = Arc::new(target.clone());
    let path: Arc<str> = Arc::from(path);
    let deliveries = Arc::new(Deliveries::default());
    let joins = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let last_join_ns = Arc::new(AtomicU64::new(0));
    let sessions = ios.len() as u64;
    let server0 = client::sample(pid);
    let t0 = now_ns();
    let started = Instant::now();
    let mut tracks = Vec::with_capacity(ios.len());
    let mut members_tasks = JoinSet::new();
    for io in ios {
        let track = Arc::new(Track::default());
        tracks.push(track.clone());
        let (target, path, deliveries) = (target.clone(), path.clone(), deliveries.clone());
        let (joins, refused, last_join_ns) = (joins.clone(), refused.clone(), last_join_ns.clone());
        members_tasks.spawn(async move {
            match target.upgrade(io, Some(&path), READ_BUFFER).await {
                Ok(ws) => {
                    track.joined.store(true, Ordering::Release);
                    last_join_ns.fetch_max(now_ns(), Ordering::Relaxed);
                    joins.fetch_add(1, Ordering::Release);
                    read(ws, &track, &deliveries).await;
                }
                Err(_) => {
                    refused.fetch_add(1, Ordering::Release);
                }
            }
        });
    }
    // Until every member holds the final count (the number that joined), or the deadline.
    let deadline = started + Duration::from_secs(o.storm_timeout);
    let converged = loop {
        let joined = joins.load(Ordering::Acquire);
        let settled = joined + refused.load(Ordering::Acquire) == sessions;
        if settled && exact(&tracks, joined) == joined as usize {
            break true;
        }
        if Instant::now() >= deadline {
            break false;
        }
        tokio::time::sleep(STORM_POLL).await;
    };
    let waited = started.elapsed().as_secs_f64();
    let server1 = client::sample(pid);
    if converged {
        tokio::time::sleep(STORM_QUIET).await; // late messages still count against the storm
    }
    let joined = joins.load(Ordering::Acquire);
    let members: Vec<&Track> = tracks
        .iter()
        .map(Arc::as_ref)
        .filter(|t| t.joined.load(Ordering::Acquire))
        .collect();
    let messages: Vec<u64> = members
        .iter()
        .map(|t| t.counts.load(Ordering::Relaxed))
        .collect();
    let bytes: Vec<u64> = members
        .iter()
        .map(|t| t.count_bytes.load(Ordering::Relaxed))
        .collect();
    let exact_members = exact(&tracks, joined);
    let secs = |ns: u64| round(ns.saturating_sub(t0) as f64 / 1e9);
    let last_join = last_join_ns.load(Ordering::Relaxed);
    let exact_at = members
        .iter()
        .map(|t| t.count_since_ns.load(Ordering::Relaxed))
        .max()
        .unwrap_or(t0);
    drop(members_tasks);
    let mut out = json!({
        "members": o.storm, "tls_seconds": round(tls_seconds), "tls_failed": failed_tls,
        "joined": joined, "refused": refused.load(Ordering::Acquire),
        "join_spread_s": secs(last_join),
        "converged": converged, "waited_s": round(waited),
        "exact_members": exact_members,
        "exact_pct": round(exact_members as f64 * 100.0 / joined.max(1) as f64),
        // From the first upgrade sent, and from the last join answered.
        "exact_s": if converged { json!(secs(exact_at)) } else { Value::Null },
        "exact_after_last_join_s": if converged {
            json!(round(exact_at.saturating_sub(last_join) as f64 / 1e9))
        } else { Value::Null },
        "messages_per_member": spread(&messages),
        "bytes_per_member": spread(&bytes),
    });
    if let (Some(a), Some(b)) = (server0, server1) {
        out["server_cpu_s"] = json!(round(a.cpu_until(&b)));
    }
    out
}

/// Members (of those that joined) whose last count is `joined`.
fn exact(tracks: &[Arc<Track>], joined: u64) -> usize {
    tracks
        .iter()
        .filter(|t| {
            t.joined.load(Ordering::Acquire) && t.last_count.load(Ordering::Acquire) == joined
        })
        .count()
}

/// The `rooms` phase: R rooms of one member each, then /stats and /metrics timed.
async fn rooms(target: &Target, o: &Scale, sources: &[Option<IpAddr>], base: &str) -> Value {
    let deliveries = Arc::new(Deliveries::default());
    let deadline = Instant::now() + Duration::from_secs(o.open_timeout);
    let room = |i: usize| Some(format!("{base}-r{i}"));
    let opened = open(target, o, o.rooms, sources, deadline, &room, &deliveries).await;
    tokio::time::sleep(SETTLE).await;
    let out = json!({
        "rooms": opened.tracks.len(), "failed": opened.failed,
        "stats": time_requests(target, "/stats", o.requests).await,
        "metrics": time_requests(target, "/metrics", o.requests).await,
    });
    drop(opened);
    out
}

/// `k` GETs of `path`, one after another: time per request, status and size of the last.
async fn time_requests(target: &Target, path: &str, k: usize) -> Value {
    let mut h = histogram();
    let (mut status, mut bytes, mut error) = (None, None, None);
    for _ in 0..k {
        match target.get(path).await {
            Ok((s, b, took)) => {
                let _ = h.record(took.as_micros() as u64);
                (status, bytes) = (Some(s), Some(b));
            }
            Err(e) => error = Some(e),
        }
    }
    json!({"requests": h.len(), "status": status, "bytes": bytes, "error": error, "ms": latency(&h)})
}

/// Connections open, each with a task reading it.
struct Opened {
    /// The write halves, so that a member can send; the read halves are in `readers`.
    sinks: Vec<SplitSink<Ws, Message>>,
    tracks: Vec<Arc<Track>>,
    /// Dropped with `Opened`: aborting the readers closes the connections.
    readers: JoinSet<()>,
    failed: u64,
    first_error: Option<String>,
    handshakes: Histogram<u64>,
    seconds: f64,
    /// Every attempt finished before the deadline.
    complete: bool,
}

/// Opens `n` connections (`o.concurrency` at a time, until `deadline`) to the rooms `room(i)`
/// names (`None`: the URL's room), each read from the moment it is open.
async fn open(
    target: &Target,
    o: &Scale,
    n: usize,
    sources: &[Option<IpAddr>],
    deadline: Instant,
    room: &(dyn Fn(usize) -> Option<String> + Sync),
    deliveries: &Arc<Deliveries>,
) -> Opened {
    let started = Instant::now();
    let mut attempts = futures_util::stream::iter(0..n)
        .map(|i| async move {
            let t0 = Instant::now();
            let path = room(i);
            let ws = target
                .connect_from(sources[i % sources.len()], path.as_deref(), READ_BUFFER)
                .await;
            (ws, t0.elapsed())
        })
        .buffer_unordered(o.concurrency.max(1));
    let mut opened = Opened {
        sinks: Vec::with_capacity(n),
        tracks: Vec::with_capacity(n),
        readers: JoinSet::new(),
        failed: 0,
        first_error: None,
        handshakes: histogram(),
        seconds: 0.0,
        complete: false,
    };
    loop {
        match tokio::time::timeout_at(deadline.into(), attempts.next()).await {
            Err(_) => break,
            Ok(None) => {
                opened.complete = true;
                break;
            }
            Ok(Some((Ok(ws), took))) => {
                let _ = opened.handshakes.record(took.as_micros() as u64);
                let (sink, stream) = ws.split();
                let track = Arc::new(Track::default());
                let (t, d) = (track.clone(), deliveries.clone());
                opened
                    .readers
                    .spawn(async move { read(stream, &t, &d).await });
                opened.sinks.push(sink);
                opened.tracks.push(track);
            }
            Ok(Some((Err(e), _))) => {
                opened.failed += 1;
                opened.first_error.get_or_insert(e);
            }
        }
    }
    opened.seconds = started.elapsed().as_secs_f64();
    opened
}

/// What one connection saw; written by its reader, read by the phases.
struct Track {
    /// WebSocket pings received (tungstenite answers each with a pong on the next read).
    pings: AtomicU64,
    /// Presence messages (bare counts or JSON with a `count`) and their bytes.
    counts: AtomicU64,
    count_bytes: AtomicU64,
    /// The count in the last presence message, `NO_COUNT` before the first.
    last_count: AtomicU64,
    /// `now_ns()` when `last_count` took its present value.
    count_since_ns: AtomicU64,
    /// Storm members: the upgrade was answered.
    joined: AtomicBool,
    /// The server closed the connection (or it broke).
    closed: AtomicBool,
}

impl Default for Track {
    fn default() -> Track {
        Track {
            pings: AtomicU64::new(0),
            counts: AtomicU64::new(0),
            count_bytes: AtomicU64::new(0),
            last_count: AtomicU64::new(NO_COUNT),
            count_since_ns: AtomicU64::new(0),
            joined: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        }
    }
}

impl Track {
    fn saw_count(&self, count: u64, bytes: usize) {
        self.counts.fetch_add(1, Ordering::Relaxed);
        self.count_bytes.fetch_add(bytes as u64, Ordering::Relaxed);
        if self.last_count.load(Ordering::Acquire) != count {
            self.count_since_ns.store(now_ns(), Ordering::Relaxed);
            self.last_count.store(count, Ordering::Release);
        }
    }
}

/// Broadcast payloads received, by every connection of a phase.
struct Deliveries {
    /// Microseconds from send to receipt.
    latencies: Mutex<Histogram<u64>>,
    count: AtomicU64,
    /// When `count` reaches this, `reached` is notified (the broadcast waits on it).
    goal: AtomicU64,
    reached: Notify,
}

impl Default for Deliveries {
    fn default() -> Deliveries {
        Deliveries {
            latencies: Mutex::new(histogram()),
            count: AtomicU64::new(0),
            goal: AtomicU64::new(u64::MAX),
            reached: Notify::new(),
        }
    }
}

impl Deliveries {
    fn record(&self, micros: u64) {
        if let Ok(mut h) = self.latencies.lock() {
            let _ = h.record(micros).or_else(|_| {
                let high = h.high();
                h.record(high)
            });
        }
        let n = self.count.fetch_add(1, Ordering::AcqRel) + 1;
        if n == self.goal.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
    }
}

/// Reads one connection until it ends: pings, broadcast payloads and presence counts.
async fn read<S, E>(mut stream: S, track: &Track, deliveries: &Deliveries)
where
    S: Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(Ok(msg)) = stream.next().await {
        if msg.is_ping() {
            track.pings.fetch_add(1, Ordering::Relaxed);
        } else if let Some((_, sent_ns)) = parse(&msg) {
            deliveries.record(now_ns().saturating_sub(sent_ns) / 1000);
        } else if let Some(bytes) = data(&msg)
            && let Some(count) = presence_count(bytes)
        {
            track.saw_count(count, bytes.len());
        }
    }
    track.closed.store(true, Ordering::Release);
}

fn data(msg: &Message) -> Option<&[u8]> {
    match msg {
        Message::Text(t) => Some(t.as_bytes()),
        Message::Binary(b) => Some(b),
        _ => None,
    }
}

/// The room count a presence message carries: a bare decimal number (`presence.format =
/// "plain"`, the tutorial's count), or the `count` of a JSON presence message.
pub fn presence_count(bytes: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().ok();
    }
    if !text.starts_with('{') {
        return None;
    }
    let v: Value = serde_json::from_str(text).ok()?;
    match v.get("type") {
        Some(t) if t != "presence" => None,
        _ => v.get("count")?.as_u64(),
    }
}

/// N when `-n` is not given: the open-files limit less a margin, at most `MAX_CONNECTIONS`.
pub fn default_connections(open_files: Option<u64>) -> usize {
    match open_files {
        Some(limit) => (limit.saturating_sub(FD_MARGIN).max(1) as usize).min(MAX_CONNECTIONS),
        None => FALLBACK_CONNECTIONS,
    }
}

/// This process's soft open-files limit, from /proc/self/limits (`None`: unreadable; unlimited
/// reads as `u64::MAX`).
fn open_files_limit() -> Option<u64> {
    parse_open_files(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

fn parse_open_files(limits: &str) -> Option<u64> {
    let soft = limits
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?
        .split_whitespace()
        .next()?;
    if soft == "unlimited" {
        return Some(u64::MAX);
    }
    soft.parse().ok()
}

/// Local addresses to bind before connecting, used round-robin: 127.0.0.1 … 127.0.0.k for a
/// target on 127.0.0.0/8, else (or with k = 0) one unbound entry.
pub fn sources(host: &str, k: u8) -> Vec<Option<IpAddr>> {
    match host.parse::<Ipv4Addr>() {
        Ok(ip) if ip.is_loopback() && k > 0 => (1..=k)
            .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i))))
            .collect(),
        _ => vec![None],
    }
}

/// The prefix of the rooms `storm` and `rooms` create: the URL's room, or `/scale` for `/`.
fn room_base(path: &str) -> String {
    match path.trim_end_matches('/') {
        "" => "/scale".to_owned(),
        p => p.to_owned(),
    }
}

/// Mean, median and max of a per-member figure.
fn spread(values: &[u64]) -> Value {
    if values.is_empty() {
        return Value::Null;
    }
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let mean = sorted.iter().sum::<u64>() as f64 / sorted.len() as f64;
    json!({"mean": round(mean), "p50": sorted[sorted.len() / 2], "max": sorted[sorted.len() - 1]})
}

/// CPU of a process between two samples, as a percentage of one core over `seconds`.
fn cpu_pct(a: Option<ProcSample>, b: Option<ProcSample>, seconds: f64) -> Value {
    match (a, b) {
        (Some(a), Some(b)) if seconds > 0.0 => json!(round(a.cpu_until(&b) / seconds * 100.0)),
        _ => Value::Null,
    }
}

fn merge(into: &mut Value, more: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_read_from_plain_and_json_presence() {
        assert_eq!(presence_count(b"19000"), Some(19000));
        assert_eq!(presence_count(b" 7\n"), Some(7));
        let state = br#"{"type":"presence","room":"r","count":3,"total":57,"names":["a","b","c"]}"#;
        assert_eq!(presence_count(state), Some(3));
        let change = br#"{"type":"presence","room":"r","count":4,"total":58,"joined":["d"]}"#;
        assert_eq!(presence_count(change), Some(4));
        assert_eq!(presence_count(br#"{"room":"r","count":5}"#), Some(5));
    }

    #[test]
    fn other_messages_are_not_counts() {
        assert_eq!(presence_count(b""), None);
        assert_eq!(presence_count(b"B0000000000000001"), None);
        assert_eq!(presence_count(b"-3"), None);
        assert_eq!(presence_count(br#"{"type":"message","count":2}"#), None);
        assert_eq!(presence_count(br#"{"type":"presence","count":-1}"#), None);
        assert_eq!(presence_count(b"{not json"), None);
        assert_eq!(presence_count(&[0xff, 0xfe]), None);
        assert_eq!(presence_count(b"99999999999999999999999"), None);
    }

    #[test]
    fn default_n_is_the_limit_less_a_margin_capped_at_100k() {
        assert_eq!(default_connections(Some(20_000)), 19_000);
        assert_eq!(default_connections(Some(1_048_576)), 100_000);
        assert_eq!(default_connections(Some(u64::MAX)), 100_000);
        assert_eq!(default_connections(Some(500)), 1);
        assert_eq!(default_connections(None), 10_000);
    }

    #[test]
    fn the_soft_open_files_limit_is_read_from_proc() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max processes             95793                95793                processes \n\
                      Max open files            1024                 20000                files     \n";
        assert_eq!(parse_open_files(limits), Some(1024));
        assert_eq!(
            parse_open_files("Max open files  unlimited  unlimited  files"),
            Some(u64::MAX)
        );
        assert_eq!(parse_open_files("Max processes 1 1"), None);
    }

    #[test]
    fn sources_spread_over_loopback_only() {
        let s = sources("127.0.0.1", 8);
        assert_eq!(s.len(), 8);
        assert_eq!(s[0], Some("127.0.0.1".parse().unwrap()));
        assert_eq!(s[7], Some("127.0.0.8".parse().unwrap()));
        assert_eq!(sources("127.0.0.1", 0), vec![None]);
        assert_eq!(sources("localhost", 8), vec![None]);
        assert_eq!(sources("[::1]", 8), vec![None]);
        assert_eq!(sources("10.0.0.1", 8), vec![None]);
    }

    #[test]
    fn storm_and_rooms_are_named_after_the_urls_room() {
        assert_eq!(room_base("/bench"), "/bench");
        assert_eq!(room_base("/"), "/scale");
        assert_eq!(room_base(""), "/scale");
    }

    #[test]
    fn a_count_changes_its_time_only_when_it_changes() {
        let t = Track::default();
        t.saw_count(3, 1);
        let first = t.count_since_ns.load(Ordering::Relaxed);
        t.saw_count(3, 1);
        assert_eq!(t.count_since_ns.load(Ordering::Relaxed), first);
        assert_eq!(t.counts.load(Ordering::Relaxed), 2);
        assert_eq!(t.count_bytes.load(Ordering::Relaxed), 2);
        t.saw_count(4, 1);
        assert_eq!(t.last_count.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn spread_gives_mean_median_and_max() {
        assert_eq!(spread(&[1, 9, 2]), json!({"mean": 4.0, "p50": 2, "max": 9}));
        assert_eq!(spread(&[]), Value::Null);
    }
}

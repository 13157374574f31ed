//! The scenarios. Each returns one JSON object; figures a scenario cannot know are left out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, ProcSample, SETTLE, Target, Ws, now_ns, parse, payload};

/// How long receivers keep reading after the senders stop, for messages still in flight.
const GRACE: Duration = Duration::from_secs(3);

pub(crate) fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

pub(crate) fn latency(h: &Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "p50": ms(h.value_at_quantile(0.50)),
        "p99": ms(h.value_at_quantile(0.99)),
        "p999": ms(h.value_at_quantile(0.999)),
        "max": ms(h.max()),
    })
}

pub(crate) fn cpu(before: Option<ProcSample>, after: Option<ProcSample>, deliveries: u64) -> Value {
    match (before, after) {
        (Some(b), Some(a)) => {
            let seconds = a.cpu_seconds - b.cpu_seconds;
            let per_million = if deliveries > 0 {
                seconds / deliveries as f64 * 1e6
            } else {
                0.0
            };
            json!({"server_cpu_s": round(seconds), "server_cpu_s_per_million": round(per_million),
                   "server_rss_kib": a.rss_kib})
        }
        _ => json!({}),
    }
}

pub(crate) fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

pub(crate) fn merge(into: &mut Value, more: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}

/// What one receiving connection saw.
pub(crate) struct Received {
    pub payloads: u64,
    pub others: u64,
    pub histogram: Histogram<u64>,
    pub last_at: Option<Instant>,
}

/// Reads `ws` until the senders are done and either everything sent has arrived or the grace
/// period has passed. `progress` is set to the highest sequence number seen plus one.
pub(crate) async fn receive(
    mut ws: futures_util::stream::SplitStream<Ws>,
    expected: Arc<AtomicU64>,
    done: Arc<AtomicBool>,
    progress: Option<Arc<AtomicU64>>,
) -> Received {
    let mut r = Received {
        payloads: 0,
        others: 0,
        histogram: histogram(),
        last_at: None,
    };
    let mut grace_until: Option<Instant> = None;
    loop {
        if done.load(Ordering::Acquire) {
            let deadline = *grace_until.get_or_insert_with(|| Instant::now() + GRACE);
            if r.payloads >= expected.load(Ordering::Acquire) || Instant::now() >= deadline {
                break;
            }
        }
        let msg = match tokio::time::timeout(Duration::from_millis(100), ws.next()).await {
            Err(_) => continue,
            Ok(Some(Ok(m))) => m,
            Ok(_) => break,
        };
        match parse(&msg) {
            Some((seq, sent_ns)) => {
                r.payloads += 1;
                r.last_at = Some(Instant::now());
                let _ = r
                    .histogram
                    .record(now_ns().saturating_sub(sent_ns) / 1000)
                    .or_else(|_| r.histogram.record(r.histogram.high()));
                if let Some(p) = &progress {
                    p.fetch_max(seq + 1, Ordering::Relaxed);
                }
            }
            None if msg.is_text() || msg.is_binary() => r.others += 1,
            None => {}
        }
    }
    r
}

#[derive(clap::Args)]
#[group(id = "fanout_options")] // not the subcommand's own name: clap refuses the clash
pub struct Fanout {
    #[arg(short = 'n', long, default_value_t = 1000)]
    pub subscribers: usize,
    #[arg(short = 'r', long, default_value_t = 1000)]
    pub rate: u64,
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    #[arg(short = 't', long, default_value_t = 10)]
    pub seconds: u64,
    /// Send as fast as delivery keeps up (saturated fan-out) instead of at R msg/s.
    #[arg(long)]
    pub max: bool,
    /// With --max: how many messages the publisher may run ahead of the slowest subscriber.
    #[arg(long, default_value_t = 256)]
    pub window: u64,
}

pub async fn fanout(target: &Target, o: &Fanout, pid: Option<u32>) -> Result<Value, String> {
    let subscribers = client::connect_many(target, o.subscribers, 64, 64 * 1024).await?;
    let publisher = target.connect(None, 64 * 1024).await?;
    let (mut tx, mut rx) = publisher.split();
    // The publisher's own copies (servers that echo) and counts are read and thrown away.
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });

    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<AtomicU64>> = (0..o.subscribers).map(|_| Arc::default()).collect();
    let mut tasks = JoinSet::new();
    for (ws, p) in subscribers.into_iter().zip(&progress) {
        let (_sink, stream) = ws.split();
        tasks.spawn(receive(
            stream,
            expected.clone(),
            done.clone(),
            Some(p.clone()),
        ));
    }
    tokio::time::sleep(SETTLE).await;

    let before = client::sample(pid);
    let (start, seq) = publish(target, &mut tx, o, &progress).await?;
    expected.store(seq, Ordering::Release);
    done.store(true, Ordering::Release);

    let mut all = histogram();
    let (mut delivered, mut others, mut last) = (0u64, 0u64, start);
    while let Some(r) = tasks.join_next().await {
        let r = r.map_err(|e| e.to_string())?;
        delivered += r.payloads;
        others += r.others;
        all.add(&r.histogram).ok();
        last = last.max(r.last_at.unwrap_or(start));
    }
    let after = client::sample(pid);
    let elapsed = (last - start).as_secs_f64().max(1e-9);
    let mut out = json!({
        "scenario": if o.max { "fanout-max" } else { "fanout" },
        "subscribers": o.subscribers, "rate": if o.max { Value::Null } else { json!(o.rate) },
        "size": o.size, "seconds": o.seconds, "sent": seq,
        "delivered": delivered, "lost": (seq * o.subscribers as u64).saturating_sub(delivered),
        "delivered_per_s": (delivered as f64 / elapsed).round(),
        "latency_ms": latency(&all), "other_messages": others,
    });
    merge(&mut out, cpu(before, after, delivered));
    Ok(out)
}

/// The fan-out publisher: sends `o.seconds` of payloads from `tx` at `o.rate`, or with `o.max`
/// as fast as the slowest subscriber's `progress` lets it. Returns when it started and how many
/// it sent.
pub(crate) async fn publish(
    target: &Target,
    tx: &mut SplitSink<Ws, Message>,
    o: &Fanout,
    progress: &[Arc<AtomicU64>],
) -> Result<(Instant, u64), String> {
    let start = Instant::now();
    let end = start + Duration::from_secs(o.seconds);
    let mut seq = 0u64;
    if o.max {
        while Instant::now() < end {
            let slowest = progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .min()
                .unwrap_or(seq);
            let mut batch = 0;
            while seq < slowest + o.window && batch < 64 {
                tx.feed(target.payload(seq, o.size))
                    .await
                    .map_err(|e| e.to_string())?;
                seq += 1;
                batch += 1;
            }
            if batch > 0 {
                tx.flush().await.map_err(|e| e.to_string())?;
            } else {
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    } else {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        while Instant::now() < end {
            tick.tick().await;
            let due = (start.elapsed().as_secs_f64() * o.rate as f64) as u64;
            let due = due.min(o.rate * o.seconds);
            while seq < due {
                tx.feed(target.payload(seq, o.size))
                    .await
                    .map_err(|e| e.to_string())?;
                seq += 1;
            }
            tx.flush().await.map_err(|e| e.to_string())?;
        }
    }
    Ok((start, seq))
}

#[derive(clap::Args)]
#[group(id = "chat_options")] // not the subcommand's own name: clap refuses the clash
pub struct Chat {
    #[arg(short = 'n', long, default_value_t = 200)]
    pub clients: usize,
    #[arg(short = 'p', long, default_value_t = 1000)]
    pub period_ms: u64,
    #[arg(short = 's', long, default_value_t = 64)]
    pub size: usize,
    #[arg(short = 't', long, default_value_t = 10)]
    pub seconds: u64,
}

#[derive(clap::Args)]
#[group(id = "idle_options")] // not the subcommand's own name: clap refuses the clash
pub struct Idle {
    #[arg(short = 'n', long, default_value_t = 10_000)]
    pub connections: usize,
}

#[derive(clap::Args)]
#[group(id = "connect_options")] // not the subcommand's own name: clap refuses the clash
pub struct Connect {
    #[arg(short = 'w', long, default_value_t = 32)]
    pub workers: usize,
    #[arg(short = 't', long, default_value_t = 10)]
    pub seconds: u64,
}

pub async fn chat(target: &Target, o: &Chat, pid: Option<u32>) -> Result<Value, String> {
    let clients = client::connect_many(target, o.clients, 64, 16 * 1024).await?;
    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut readers = JoinSet::new();
    let mut writers = JoinSet::new();
    let start = Instant::now() + SETTLE;
    let end = start + Duration::from_secs(o.seconds);
    for (i, ws) in clients.into_iter().enumerate() {
        let (mut tx, rx) = ws.split();
        readers.spawn(receive(rx, expected.clone(), done.clone(), None));
        let (sent, period, size) = (sent.clone(), Duration::from_millis(o.period_ms), o.size);
        // Spread the senders evenly over one period.
        let first = start + period * i as u32 / o.clients as u32;
        writers.spawn(async move {
            let mut tick = tokio::time::interval_at(first.into(), period);
            while Instant::now() < end {
                tick.tick().await;
                let seq = sent.fetch_add(1, Ordering::Relaxed);
                if tx.send(payload(seq, size)).await.is_err() {
                    break;
                }
            }
        });
    }
    client::until(start).await;
    let before = client::sample(pid);
    while writers.join_next().await.is_some() {}
    let total_sent = sent.load(Ordering::Relaxed);
    // Each reader expects every message, its own included (the servers echo).
    expected.store(total_sent, Ordering::Release);
    done.store(true, Ordering::Release);
    let mut all = histogram();
    let (mut delivered, mut others) = (0u64, 0u64);
    while let Some(r) = readers.join_next().await {
        let r = r.map_err(|e| e.to_string())?;
        delivered += r.payloads;
        others += r.others;
        all.add(&r.histogram).ok();
    }
    let after = client::sample(pid);
    let mut out = json!({
        "scenario": "chat", "clients": o.clients, "period_ms": o.period_ms, "size": o.size,
        "seconds": o.seconds, "sent": total_sent, "delivered": delivered,
        "lost": (total_sent * o.clients as u64).saturating_sub(delivered),
        "delivered_per_s": (delivered as f64 / o.seconds as f64).round(),
        "latency_ms": latency(&all), "other_messages": others,
    });
    merge(&mut out, cpu(before, after, delivered));
    Ok(out)
}

pub async fn idle(target: &Target, o: &Idle, pid: Option<u32>) -> Result<Value, String> {
    let n = o.connections;
    let before = client::sample(pid).ok_or("idle needs --server-pid")?;
    let started = Instant::now();
    let conns = client::connect_many(target, n, 100, 4 * 1024).await?;
    let connect_s = started.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let after = client::sample(pid).ok_or("server gone")?;
    let per_conn = (after.rss_kib.saturating_sub(before.rss_kib)) as f64 / n as f64;
    drop(conns);
    Ok(json!({
        "scenario": "idle", "connections": n, "connect_s": round(connect_s),
        "server_rss_before_kib": before.rss_kib, "server_rss_after_kib": after.rss_kib,
        "rss_per_connection_kib": round(per_conn),
    }))
}

pub async fn connect(target: &Target, o: &Connect, pid: Option<u32>) -> Result<Value, String> {
    let (workers, seconds) = (o.workers, o.seconds);
    let before = client::sample(pid);
    let end = Instant::now() + Duration::from_secs(seconds);
    let mut tasks = JoinSet::new();
    for _ in 0..workers {
        let target = target.clone();
        tasks.spawn(async move {
            let (mut h, mut ok, mut failed) = (histogram(), 0u64, 0u64);
            while Instant::now() < end {
                let t0 = Instant::now();
                match target.connect(None, 4 * 1024).await {
                    Ok(mut ws) => {
                        let _ = h.record(t0.elapsed().as_micros() as u64);
                        ok += 1;
                        let _ = ws.close(None).await;
                    }
                    Err(_) => failed += 1,
                }
            }
            (h, ok, failed)
        });
    }
    let mut all = histogram();
    let (mut ok, mut failed) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        let (h, o, f) = r.map_err(|e| e.to_string())?;
        all.add(&h).ok();
        ok += o;
        failed += f;
    }
    let after = client::sample(pid);
    let mut out = json!({
        "scenario": "connect", "workers": workers, "seconds": seconds, "handshakes": ok,
        "failed": failed, "handshakes_per_s": (ok as f64 / seconds as f64).round(),
        "latency_ms": latency(&all),
    });
    merge(&mut out, cpu(before, after, ok));
    Ok(out)
}

//! `wsline-bench cluster`: the fan-out of [`scenarios::fanout`] with the subscribers spread over
//! several nodes of one cluster (`--url` and each `--node`, evenly) and the publisher on
//! `--url`'s node, so that deliveries on the publisher's node and across nodes (through Redis) are
//! measured apart. With no `--node` it is the same fan-out on one node, for the side-by-side row.
//! `--socketio` speaks socket.io to the nodes instead (see [`Target::socketio`]).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::task::JoinSet;

use crate::client::{self, ProcSample, SETTLE, Target};
use crate::scenarios::{self, Fanout, Received, histogram, latency, round};

#[derive(clap::Args)]
#[group(id = "cluster_options")] // not the subcommand's own name: clap refuses the clash
pub struct Cluster {
    #[command(flatten)]
    pub fanout: Fanout,
    /// Another node of the cluster, e.g. wss://127.0.0.1:4458/bench (repeat for more): the
    /// subscribers are spread evenly over --url and these; the publisher is on --url.
    #[arg(long = "node")]
    pub nodes: Vec<String>,
    /// The PID of another node (repeat, in any order), for its CPU seconds and memory.
    #[arg(long = "node-pid")]
    pub node_pids: Vec<u32>,
    /// The PID of redis-server, for its CPU seconds.
    #[arg(long)]
    pub redis_pid: Option<u32>,
    /// Speak socket.io (Engine.IO 4 over the WebSocket transport) to every node: the URLs name
    /// the Engine.IO endpoint with the room in the query, e.g.
    /// wss://127.0.0.1:4457/socket.io/?EIO=4&transport=websocket&room=bench
    #[arg(long)]
    pub socketio: bool,
}

/// What the subscribers of one group (on the publisher's node, or on the others) received.
struct Group {
    subscribers: usize,
    received: Received,
}

impl Group {
    fn new() -> Group {
        Group {
            subscribers: 0,
            received: Received {
                payloads: 0,
                others: 0,
                histogram: histogram(),
                last_at: None,
            },
        }
    }

    fn add(&mut self, r: Received) {
        self.subscribers += 1;
        self.received.payloads += r.payloads;
        self.received.others += r.others;
        self.received.histogram.add(&r.histogram).ok();
        self.received.last_at = self.received.last_at.max(r.last_at);
    }

    /// Deliveries, losses, rate and latency of this group, for `sent` messages from `start`.
    fn figures(&self, sent: u64, start: Instant) -> Value {
        let r = &self.received;
        let elapsed = (r.last_at.unwrap_or(start) - start).as_secs_f64().max(1e-9);
        json!({
            "subscribers": self.subscribers, "delivered": r.payloads,
            "lost": (sent * self.subscribers as u64).saturating_sub(r.payloads),
            "delivered_per_s": (r.payloads as f64 / elapsed).round(),
            // No latency where nothing arrived (an empty histogram would say 0 ms).
            "latency_ms": if r.payloads > 0 { latency(&r.histogram) } else { Value::Null },
        })
    }
}

pub async fn cluster(
    target: &Target,
    o: &Cluster,
    pid: Option<u32>,
    insecure: bool,
) -> Result<Value, String> {
    let protocol = |t: Target| if o.socketio { t.socketio() } else { t };
    let mut targets = vec![protocol(target.clone())];
    for url in &o.nodes {
        targets.push(protocol(Target::new(url, insecure)?));
    }
    let f = &o.fanout;

    // An even share of the subscribers on each node (the first nodes take the remainder), opened
    // node by node, 64 handshakes in flight.
    let mut subscribers = Vec::with_capacity(f.subscribers);
    for (node, t) in targets.iter().enumerate() {
        let n = (f.subscribers + targets.len() - 1 - node) / targets.len();
        for ws in client::connect_many(t, n, 64, 64 * 1024).await? {
            subscribers.push((node, ws));
        }
    }
    let publisher = targets[0].connect(None, 64 * 1024).await?;
    let (mut tx, mut rx) = publisher.split();
    // The publisher's own copies (servers that echo) and presence are read and thrown away.
    tokio::spawn(async move { while let Some(Ok(_)) = rx.next().await {} });

    let expected = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<AtomicU64>> = subscribers.iter().map(|_| Arc::default()).collect();
    let mut tasks = JoinSet::new();
    for ((node, ws), p) in subscribers.into_iter().zip(&progress) {
        let (_sink, stream) = ws.split();
        let receiving = scenarios::receive(stream, expected.clone(), done.clone(), Some(p.clone()));
        tasks.spawn(async move { (node, receiving.await) });
    }
    tokio::time::sleep(SETTLE).await;

    // Every node's process (--server-pid is --url's), then Redis.
    let pids: Vec<u32> = pid.into_iter().chain(o.node_pids.iter().copied()).collect();
    let samples = || -> (Vec<Option<ProcSample>>, Option<ProcSample>) {
        (
            pids.iter().map(|&p| client::sample(Some(p))).collect(),
            client::sample(o.redis_pid),
        )
    };
    let (nodes_before, redis_before) = samples();
    let (start, sent) = scenarios::publish(&targets[0], &mut tx, f, &progress).await?;
    expected.store(sent, Ordering::Release);
    done.store(true, Ordering::Release);

    let (mut same, mut cross) = (Group::new(), Group::new());
    while let Some(r) = tasks.join_next().await {
        let (node, received) = r.map_err(|e| e.to_string())?;
        if node == 0 { &mut same } else { &mut cross }.add(received);
    }
    let (nodes_after, redis_after) = samples();

    let mut all = Group::new();
    for g in [&same, &cross] {
        all.subscribers += g.subscribers;
        all.received.payloads += g.received.payloads;
        all.received.others += g.received.others;
        all.received.histogram.add(&g.received.histogram).ok();
        all.received.last_at = all.received.last_at.max(g.received.last_at);
    }
    let delivered = all.received.payloads;
    let mut out = json!({
        "scenario": if f.max { "cluster-max" } else { "cluster" },
        "nodes": targets.len(), "protocol": if o.socketio { "socket.io" } else { "websocket" },
        "rate": if f.max { Value::Null } else { json!(f.rate) },
        "size": f.size, "seconds": f.seconds, "sent": sent,
        "other_messages": all.received.others,
        "same_node": same.figures(sent, start),
    });
    scenarios::merge(&mut out, all.figures(sent, start));
    if targets.len() > 1 {
        out["cross_node"] = cross.figures(sent, start);
    }
    // CPU seconds and memory summed over the nodes whose every sample was read.
    let nodes: Option<Vec<(ProcSample, ProcSample)>> = nodes_before
        .into_iter()
        .zip(nodes_after)
        .map(|(b, a)| Some((b?, a?)))
        .collect();
    if let Some(nodes) = nodes.filter(|n| !n.is_empty()) {
        let seconds: f64 = nodes.iter().map(|(b, a)| b.cpu_until(a)).sum();
        let rss: u64 = nodes.iter().map(|(_, a)| a.rss_kib).sum();
        scenarios::merge(
            &mut out,
            json!({"server_processes": nodes.len(), "server_cpu_s": round(seconds),
                   "server_cpu_s_per_million": round(per_million(seconds, delivered)),
                   "server_rss_kib": rss}),
        );
    }
    if let (Some(b), Some(a)) = (redis_before, redis_after) {
        let seconds = b.cpu_until(&a);
        scenarios::merge(
            &mut out,
            json!({"redis_cpu_s": round(seconds),
                   "redis_cpu_s_per_million": round(per_million(seconds, delivered))}),
        );
    }
    Ok(out)
}

fn per_million(seconds: f64, deliveries: u64) -> f64 {
    if deliveries > 0 {
        seconds / deliveries as f64 * 1e6
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_counts_what_its_subscribers_missed() {
        let mut g = Group::new();
        for payloads in [10, 7] {
            let mut r = Group::new().received;
            r.payloads = payloads;
            g.add(r);
        }
        let start = Instant::now();
        let v = g.figures(10, start);
        assert_eq!(v["subscribers"], 2);
        assert_eq!(v["delivered"], 17);
        assert_eq!(v["lost"], 3);
        assert_eq!(Group::new().figures(10, start)["latency_ms"], Value::Null);
    }
}

//! `wsline-bench report`: result lines of several servers as side-by-side tables (one per set of
//! servers that ran the same scenarios), with the ratio of each table's first server's figure to
//! each other server's.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

/// (scenario, figure as a JSON pointer, label, higher is better)
type Figure = (&'static str, &'static str, &'static str, bool);

const FIGURES: &[Figure] = &[
    ("fanout", "/delivered_per_s", "delivered msg/s", true),
    ("fanout", "/lost", "lost", false),
    ("fanout", "/latency_ms/p50", "latency p50 ms", false),
    ("fanout", "/latency_ms/p99", "latency p99 ms", false),
    ("fanout", "/latency_ms/p999", "latency p99.9 ms", false),
    (
        "fanout",
        "/server_cpu_s_per_million",
        "server CPU s / M deliveries",
        false,
    ),
    ("fanout-max", "/delivered_per_s", "delivered msg/s", true),
    ("fanout-max", "/latency_ms/p99", "latency p99 ms", false),
    (
        "fanout-max",
        "/server_cpu_s_per_million",
        "server CPU s / M deliveries",
        false,
    ),
    ("chat", "/delivered_per_s", "delivered msg/s", true),
    ("chat", "/lost", "lost", false),
    ("chat", "/latency_ms/p50", "latency p50 ms", false),
    ("chat", "/latency_ms/p99", "latency p99 ms", false),
    (
        "chat",
        "/server_cpu_s_per_million",
        "server CPU s / M deliveries",
        false,
    ),
    (
        "idle",
        "/rss_per_connection_kib",
        "RSS KiB per connection",
        false,
    ),
    ("connect", "/handshakes_per_s", "handshakes/s", true),
    ("connect", "/latency_ms/p99", "handshake p99 ms", false),
];

/// `scale` (presence off) and `scale-count` (counts on): (figure, label, higher is better).
const SCALE: &[(&str, &str, bool)] = &[
    ("/opened", "connections open", true),
    ("/open/handshakes_per_s", "handshakes/s", true),
    ("/open/handshake_ms/p99", "handshake p99 ms", false),
    (
        "/open/server_us_per_handshake",
        "server us per handshake",
        false,
    ),
    ("/open/loadgen_cpu_pct", "loadgen CPU % opening", false),
    ("/rss/per_connection_kib", "RSS KiB per connection", false),
    ("/hold/ping_rounds", "ping rounds in hold", true),
    (
        "/hold/server_cpu_pct_per_10k",
        "idle CPU % per 10k conns",
        false,
    ),
    ("/hold/server_us_per_ping", "idle server us per ping", false),
    ("/broadcast/latency_ms/p50", "1-to-all p50 ms", false),
    ("/broadcast/latency_ms/p99", "1-to-all p99 ms", false),
    (
        "/broadcast/server_us_per_delivery",
        "server us per delivery",
        false,
    ),
    (
        "/broadcast/loadgen_us_per_delivery",
        "loadgen us per delivery",
        false,
    ),
];

/// `scale-count` only: the presence storm and the monitoring endpoints at many rooms.
const SCALE_COUNT: &[(&str, &str, bool)] = &[
    ("/storm/joined", "storm members joined", true),
    ("/storm/join_spread_s", "storm joins spread s", false),
    (
        "/storm/messages_per_member/mean",
        "storm msgs per member",
        false,
    ),
    (
        "/storm/bytes_per_member/mean",
        "storm bytes per member",
        false,
    ),
    ("/storm/exact_pct", "storm members exact %", true),
    ("/storm/exact_s", "storm s to exact count", false),
    ("/rooms/rooms", "rooms open", true),
    ("/rooms/stats/ms/p50", "/stats ms p50", false),
    ("/rooms/stats/bytes", "/stats bytes", false),
    ("/rooms/metrics/ms/p50", "/metrics ms p50", false),
    ("/rooms/metrics/bytes", "/metrics bytes", false),
];

/// `cluster` (at a rate) and `cluster-max` (saturated): fan-out over two nodes, single-node runs
/// beside them. "same" is the publisher's node, "cross" the other (through Redis).
const CLUSTER: &[(&str, &str, bool)] = &[
    ("/delivered_per_s", "delivered msg/s", true),
    ("/lost", "lost", false),
    ("/latency_ms/p50", "latency p50 ms", false),
    ("/latency_ms/p99", "latency p99 ms", false),
    (
        "/same_node/delivered_per_s",
        "same-node delivered msg/s",
        true,
    ),
    ("/same_node/latency_ms/p50", "same-node p50 ms", false),
    ("/same_node/latency_ms/p99", "same-node p99 ms", false),
    (
        "/cross_node/delivered_per_s",
        "cross-node delivered msg/s",
        true,
    ),
    ("/cross_node/lost", "cross-node lost", false),
    ("/cross_node/latency_ms/p50", "cross-node p50 ms", false),
    ("/cross_node/latency_ms/p99", "cross-node p99 ms", false),
    (
        "/server_cpu_s_per_million",
        "nodes CPU s / M deliveries",
        false,
    ),
    (
        "/redis_cpu_s_per_million",
        "redis CPU s / M deliveries",
        false,
    ),
    ("/server_rss_kib", "nodes RSS KiB", false),
];

/// Every row of the tables, in order.
fn figures() -> Vec<Figure> {
    let scale = |scenario: &'static str, rows: &[(&'static str, &'static str, bool)]| {
        rows.iter()
            .map(move |&(pointer, label, higher)| (scenario, pointer, label, higher))
            .collect::<Vec<_>>()
    };
    let mut all = FIGURES.to_vec();
    all.extend(scale("scale", SCALE));
    all.extend(scale("scale-count", SCALE));
    all.extend(scale("scale-count", SCALE_COUNT));
    all.extend(scale("cluster", CLUSTER));
    all.extend(scale("cluster-max", CLUSTER));
    all
}

pub fn print(files: &[PathBuf]) -> ExitCode {
    let mut lines: Vec<Value> = Vec::new();
    let mut read = |reader: &mut dyn BufRead| {
        for line in reader.lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                lines.push(v);
            }
        }
    };
    if files.is_empty() {
        read(&mut std::io::stdin().lock());
    }
    for f in files {
        match std::fs::File::open(f) {
            Ok(file) => read(&mut std::io::BufReader::new(file)),
            Err(e) => {
                eprintln!("wsline-bench report: {}: {e}", f.display());
                return ExitCode::FAILURE;
            }
        }
    }
    // Servers in order of first appearance; the first is the one the ratios are of.
    let mut servers: Vec<String> = Vec::new();
    // Lines of one scenario and server are merged (a later figure wins): `scale` measures some
    // phases against a fresh server process each, one line per process.
    let mut results: BTreeMap<(String, String), Value> = BTreeMap::new();
    for v in lines {
        let server = v["server"].as_str().unwrap_or("server").to_owned();
        if !servers.contains(&server) {
            servers.push(server.clone());
        }
        let key = (v["scenario"].as_str().unwrap_or("?").to_owned(), server);
        merge(
            results
                .entry(key)
                .or_insert_with(|| Value::Object(Default::default())),
            v,
        );
    }
    if servers.is_empty() {
        eprintln!("wsline-bench report: no result lines");
        return ExitCode::FAILURE;
    }
    for (i, (servers, rows)) in tables(&servers, &results).into_iter().enumerate() {
        if i > 0 {
            println!();
        }
        print_table(&servers, &rows, &results);
    }
    ExitCode::SUCCESS
}

/// The rows of every scenario some server has lines for, grouped into tables by the servers
/// that ran the scenario (in order of first appearance): `cluster` runs other servers (two nodes,
/// one node, socket.io) than the single-node scenarios, and its ratios are of its own first one.
fn tables(
    servers: &[String],
    results: &BTreeMap<(String, String), Value>,
) -> Vec<(Vec<String>, Vec<Figure>)> {
    let mut tables: Vec<(Vec<String>, Vec<Figure>)> = Vec::new();
    for figure in figures() {
        let ran: Vec<String> = servers
            .iter()
            .filter(|s| results.contains_key(&(figure.0.to_string(), (*s).clone())))
            .cloned()
            .collect();
        if ran.is_empty() {
            continue;
        }
        match tables.iter_mut().find(|(s, _)| *s == ran) {
            Some((_, rows)) => rows.push(figure),
            None => tables.push((ran, vec![figure])),
        }
    }
    tables
}

/// One table: a column per server, then the ratio of the first server's figure to each other's.
fn print_table(servers: &[String], rows: &[Figure], results: &BTreeMap<(String, String), Value>) {
    let base = &servers[0];
    let ratio_names: Vec<String> = servers
        .iter()
        .skip(1)
        .map(|s| format!("{base}/{s}"))
        .collect();
    // The ratio columns are 14 wide, or as wide as their names.
    let width = ratio_names
        .iter()
        .map(String::len)
        .max()
        .unwrap_or(0)
        .max(14);
    let mut header = format!("| {:<11} | {:<28} |", "scenario", "figure");
    for s in servers {
        header += &format!(" {s:>12} |");
    }
    for name in &ratio_names {
        header += &format!(" {name:>width$} |");
    }
    println!("{header}");
    println!(
        "{}",
        header
            .chars()
            .map(|c| if c == '|' { '|' } else { '-' })
            .collect::<String>()
    );
    for &(scenario, pointer, label, _higher_better) in rows {
        let values: Vec<Option<f64>> = servers
            .iter()
            .map(|s| {
                results
                    .get(&(scenario.to_string(), s.clone()))
                    .and_then(|v| v.pointer(pointer))
                    .and_then(Value::as_f64)
            })
            .collect();
        if values.iter().all(Option::is_none) {
            continue;
        }
        let mut row = format!("| {scenario:<11} | {label:<28} |");
        for v in &values {
            row += &format!(" {:>12} |", v.map_or("-".into(), fmt));
        }
        for v in values.iter().skip(1) {
            let ratio = match (values[0], v) {
                (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            row += &format!(" {ratio:>width$} |");
        }
        println!("{row}");
    }
}

fn merge(into: &mut Value, more: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), more) {
        a.extend(b);
    }
}

fn fmt(x: f64) -> String {
    if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_one_figure_of_one_scenario() {
        let all = figures();
        let mut keys: Vec<_> = all.iter().map(|(s, p, _, _)| (*s, *p)).collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), all.len());
        assert!(all.iter().all(|(_, _, label, _)| label.len() <= 28));
    }

    #[test]
    fn scenarios_run_by_other_servers_get_their_own_table() {
        let mut results = BTreeMap::new();
        for (scenario, server) in [
            ("fanout", "wsline"),
            ("fanout", "node"),
            ("chat", "wsline"),
            ("chat", "node"),
            ("cluster", "wsline-2"),
            ("cluster", "wsline-1"),
            ("cluster", "sio-2"),
        ] {
            results.insert(
                (scenario.to_string(), server.to_string()),
                serde_json::json!({}),
            );
        }
        let servers: Vec<String> = ["wsline", "node", "wsline-2", "wsline-1", "sio-2"]
            .map(String::from)
            .to_vec();
        let tables = tables(&servers, &results);
        assert_eq!(tables.len(), 2);
        assert_eq!(tables[0].0, ["wsline", "node"]);
        assert!(
            tables[0]
                .1
                .iter()
                .all(|f| ["fanout", "chat"].contains(&f.0))
        );
        assert_eq!(tables[1].0, ["wsline-2", "wsline-1", "sio-2"]);
        assert!(tables[1].1.iter().all(|f| f.0 == "cluster"));
    }

    #[test]
    fn lines_of_one_scenario_and_server_merge() {
        let mut v =
            serde_json::json!({"scenario": "scale-count", "open": {"handshakes_per_s": 1.0}});
        merge(
            &mut v,
            serde_json::json!({"scenario": "scale-count", "storm": {"joined": 2}}),
        );
        assert_eq!(
            v.pointer("/open/handshakes_per_s"),
            Some(&serde_json::json!(1.0))
        );
        assert_eq!(v.pointer("/storm/joined"), Some(&serde_json::json!(2)));
    }
}

//! `wsline-bench report`: result lines of several servers as one table, with the ratio of the
//! first server's figure to each other server's.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::Value;

/// (scenario, figure as a JSON pointer, label, higher is better)
const FIGURES: &[(&str, &str, &str, bool)] = &[
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
    let mut results: BTreeMap<(String, String), &Value> = BTreeMap::new();
    for v in &lines {
        let server = v["server"].as_str().unwrap_or("server").to_owned();
        if !servers.contains(&server) {
            servers.push(server.clone());
        }
        results.insert(
            (v["scenario"].as_str().unwrap_or("?").to_owned(), server),
            v,
        );
    }
    let Some(base) = servers.first().cloned() else {
        eprintln!("wsline-bench report: no result lines");
        return ExitCode::FAILURE;
    };
    let mut header = format!("| {:<10} | {:<28} |", "scenario", "figure");
    for s in &servers {
        header += &format!(" {s:>12} |");
    }
    for s in servers.iter().skip(1) {
        header += &format!(" {:>14} |", format!("{base}/{s}"));
    }
    println!("{header}");
    println!(
        "{}",
        header
            .chars()
            .map(|c| if c == '|' { '|' } else { '-' })
            .collect::<String>()
    );
    for (scenario, pointer, label, _higher_better) in FIGURES {
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
        let mut row = format!("| {scenario:<10} | {label:<28} |");
        for v in &values {
            row += &format!(" {:>12} |", v.map_or("-".into(), fmt));
        }
        for v in values.iter().skip(1) {
            let ratio = match (values[0], v) {
                (Some(a), Some(b)) if *b != 0.0 => format!("{:.2}x", a / b),
                _ => "-".into(),
            };
            row += &format!(" {ratio:>14} |");
        }
        println!("{row}");
    }
    ExitCode::SUCCESS
}

fn fmt(x: f64) -> String {
    if x.fract() == 0.0 || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.3}")
    }
}

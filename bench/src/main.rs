//! `wsline-bench`: a load generator for WebSocket relays (wsline, or any server that relays every
//! message to everyone connected to the same URL; `cluster` also speaks socket.io). Each run prints
//! one JSON line; `report` turns the lines of several servers into side-by-side tables with ratios.

mod client;
mod cluster;
mod hop;
mod report;
mod scale;
mod scenarios;

use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Common {
    /// The room to use, e.g. wss://127.0.0.1:3456/bench.
    #[arg(long)]
    url: String,
    /// Accept any server certificate (self-signed ones).
    #[arg(long, short = 'k')]
    insecure: bool,
    /// The server's PID, for its CPU seconds and memory from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// A name for the server in the result line.
    #[arg(long, default_value = "server")]
    label: String,
}

#[derive(Subcommand)]
enum Command {
    /// N subscribers in one room, one publisher at R msg/s of S bytes for T s.
    Fanout {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenarios::Fanout,
    },
    /// N clients each sending every P ms: N² deliveries.
    Chat {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenarios::Chat,
    },
    /// N idle connections: the server's RSS per connection (needs --server-pid).
    Idle {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenarios::Idle,
    },
    /// K workers opening, upgrading and closing connections for T s.
    Connect {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scenarios::Connect,
    },
    /// N connections (default: the open-files limit less a margin) over several source addresses:
    /// handshakes/s, RSS per connection, idle CPU with heartbeats, one-to-all broadcast; a presence
    /// storm; /stats and /metrics at many rooms.
    Scale {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: scale::Scale,
    },
    /// Fan-out over a cluster: N subscribers spread over --url and each --node, the publisher on
    /// --url; deliveries and latency on the publisher's node and across nodes, apart.
    Cluster {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: cluster::Cluster,
    },
    /// A delaying TCP proxy (Redis one hop away); runs until killed, prints nothing.
    Proxy {
        #[command(flatten)]
        opts: hop::ProxyOpts,
    },
    /// One connection in each of N rooms (the URL's path plus 0, 1, ...), held until killed.
    Rooms {
        #[command(flatten)]
        common: Common,
        #[command(flatten)]
        opts: hop::RoomsOpts,
    },
    /// A table of JSON result lines (from files, or stdin), each scenario's figures side by side.
    Report {
        /// Files of result lines; the first server named is the one the ratios are of.
        files: Vec<std::path::PathBuf>,
    },
}

/// One scenario with its options, whichever subcommand named it.
enum Scenario {
    Fanout(scenarios::Fanout),
    Chat(scenarios::Chat),
    Idle(scenarios::Idle),
    Connect(scenarios::Connect),
    Scale(scale::Scale),
    Cluster(cluster::Cluster),
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let (common, scenario) = match Cli::parse().command {
        Command::Report { files } => return report::print(&files),
        Command::Proxy { opts } => return exit(hop::proxy(&opts).await),
        Command::Rooms { common, opts } => {
            let opened = client::Target::new(&common.url, common.insecure);
            let path = common.url.rsplit_once('/').map_or("/", |(_, p)| p);
            let path = format!("/{path}");
            return exit(match opened {
                Ok(target) => hop::rooms(&target, &path, &opts).await,
                Err(e) => Err(e),
            });
        }
        Command::Fanout { common, opts } => (common, Scenario::Fanout(opts)),
        Command::Chat { common, opts } => (common, Scenario::Chat(opts)),
        Command::Idle { common, opts } => (common, Scenario::Idle(opts)),
        Command::Connect { common, opts } => (common, Scenario::Connect(opts)),
        Command::Scale { common, opts } => (common, Scenario::Scale(opts)),
        Command::Cluster { common, opts } => (common, Scenario::Cluster(opts)),
    };
    match run(&common, &scenario).await {
        Ok(mut line) => {
            line["server"] = serde_json::Value::String(common.label);
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wsline-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

fn exit(r: Result<(), String>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wsline-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs a scenario against `--url`, with the server's PID if given.
async fn run(common: &Common, scenario: &Scenario) -> Result<serde_json::Value, String> {
    let target = client::Target::new(&common.url, common.insecure)?;
    let pid = common.server_pid;
    match scenario {
        Scenario::Fanout(o) => scenarios::fanout(&target, o, pid).await,
        Scenario::Chat(o) => scenarios::chat(&target, o, pid).await,
        Scenario::Idle(o) => scenarios::idle(&target, o, pid).await,
        Scenario::Connect(o) => scenarios::connect(&target, o, pid).await,
        Scenario::Scale(o) => scale::scale(&target, o, pid).await,
        Scenario::Cluster(o) => cluster::cluster(&target, o, pid, common.insecure).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}

//! `wsline-bench`: a load generator for WebSocket relays (wsline, or any server that relays every
//! message to everyone connected to the same URL). Each run prints one JSON line; `report` turns
//! the lines of several servers into a side-by-side table with ratios.

mod client;
mod report;
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
        #[arg(short = 'n', long, default_value_t = 1000)]
        subscribers: usize,
        #[arg(short = 'r', long, default_value_t = 1000)]
        rate: u64,
        #[arg(short = 's', long, default_value_t = 64)]
        size: usize,
        #[arg(short = 't', long, default_value_t = 10)]
        seconds: u64,
        /// Send as fast as delivery keeps up (saturated fan-out) instead of at R msg/s.
        #[arg(long)]
        max: bool,
        /// With --max: how many messages the publisher may run ahead of the slowest subscriber.
        #[arg(long, default_value_t = 256)]
        window: u64,
    },
    /// N clients each sending every P ms: N² deliveries.
    Chat {
        #[command(flatten)]
        common: Common,
        #[arg(short = 'n', long, default_value_t = 200)]
        clients: usize,
        #[arg(short = 'p', long, default_value_t = 1000)]
        period_ms: u64,
        #[arg(short = 's', long, default_value_t = 64)]
        size: usize,
        #[arg(short = 't', long, default_value_t = 10)]
        seconds: u64,
    },
    /// N idle connections: the server's RSS per connection (needs --server-pid).
    Idle {
        #[command(flatten)]
        common: Common,
        #[arg(short = 'n', long, default_value_t = 10_000)]
        connections: usize,
    },
    /// K workers opening, upgrading and closing connections for T s.
    Connect {
        #[command(flatten)]
        common: Common,
        #[arg(short = 'w', long, default_value_t = 32)]
        workers: usize,
        #[arg(short = 't', long, default_value_t = 10)]
        seconds: u64,
    },
    /// A table of JSON result lines (from files, or stdin), each scenario's figures side by side.
    Report {
        /// Files of result lines; the first server named is the one the ratios are of.
        files: Vec<std::path::PathBuf>,
    },
}

#[tokio::main]
async fn main() -> ExitCode {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = Cli::parse();
    let (common, result) = match cli.command {
        Command::Report { files } => return report::print(&files),
        Command::Fanout {
            common,
            subscribers,
            rate,
            size,
            seconds,
            max,
            window,
        } => {
            let o = scenarios::Fanout {
                subscribers,
                rate,
                size,
                seconds,
                max,
                window,
            };
            let r = run(&common, |t| async move {
                scenarios::fanout(&t, &o, common.server_pid).await
            })
            .await;
            (common, r)
        }
        Command::Chat {
            common,
            clients,
            period_ms,
            size,
            seconds,
        } => {
            let o = scenarios::Chat {
                clients,
                period_ms,
                size,
                seconds,
            };
            let r = run(&common, |t| async move {
                scenarios::chat(&t, &o, common.server_pid).await
            })
            .await;
            (common, r)
        }
        Command::Idle {
            common,
            connections,
        } => {
            let r = run(&common, |t| async move {
                scenarios::idle(&t, connections, common.server_pid).await
            })
            .await;
            (common, r)
        }
        Command::Connect {
            common,
            workers,
            seconds,
        } => {
            let r = run(&common, |t| async move {
                scenarios::connect(&t, workers, seconds, common.server_pid).await
            })
            .await;
            (common, r)
        }
    };
    match result {
        Ok(mut line) => {
            line["server"] = serde_json::Value::String(common.label.clone());
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("wsline-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run<F, Fut>(common: &Common, scenario: F) -> Result<serde_json::Value, String>
where
    F: FnOnce(client::Target) -> Fut,
    Fut: std::future::Future<Output = Result<serde_json::Value, String>>,
{
    let target = client::Target::new(&common.url, common.insecure)?;
    scenario(target).await
}

//! The `wsline` binary: parses the command line, loads the configuration, binds, and runs.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wsline::{Config, Server, config::DEFAULT_CONFIG_PATH};

/// Exit status for a configuration or certificate problem (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

/// TLS-terminating WebSocket relay: rooms, presence, health checks, one TOML file.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// The configuration file.
    #[arg(short, long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Check the configuration, certificate and key, print `config OK` or every problem, and exit.
    #[arg(long)]
    check_config: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    wsline::install_crypto_provider();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // --check-config's nginx advice, worked out before the server takes the configuration.
    let nginx_advice = args.check_config.then(|| {
        (
            wsline::nginx::warnings(&config),
            wsline::nginx::snippet(&config),
        )
    });
    let room_notes = wsline::hub::check_notes(&config);
    wsline::logging::init(&config.log);
    let listen = config.server.listen.clone();
    let server = match Server::new(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("{}: {e}", args.config.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some((warnings, snippet)) = nginx_advice {
        for warning in warnings {
            eprintln!("warning: {warning}");
        }
        println!("config OK\n{}\n\n{snippet}", room_notes.join("\n"));
        return ExitCode::SUCCESS;
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listeners = match wsline::server::bind(&listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("{}: {e}", args.config.display());
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = wsline::signals::spawn(server.handle(), args.config.clone()) {
            eprintln!("cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
        server.run(listeners).await;
        ExitCode::SUCCESS
    })
}

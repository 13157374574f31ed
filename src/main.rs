//! The `wsline` binary: parses the command line, loads the configuration, binds, and runs.
//!
//! It also owns what the user sees of a failure: each problem is one line on stderr and the exit
//! status says which kind it was. Writing that output can fail too (`> /dev/full`, a closed pipe);
//! that is never a panic. A reader that went away (`| head -1`, EPIPE) has seen what it wanted, so
//! the exit status stays the verdict of the run; any other write error is one line on stderr and
//! exit 74 (EX_IOERR).

use std::fmt::Display;
use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wsline::{Config, Server, config::DEFAULT_CONFIG_PATH};

/// Exit status for a configuration or certificate problem (sysexits EX_CONFIG).
const EXIT_CONFIG: u8 = 78;
/// Exit status when stdout cannot be written (sysexits EX_IOERR).
const EXIT_OUTPUT: u8 = 74;

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
    /// With --check-config: print problems and warnings only, nothing on success (for the unit's
    /// ExecStartPre=, whose output goes to the journal at every start).
    #[arg(short, long, requires = "check_config")]
    quiet: bool,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        // --help and --version arrive here too, with exit code 0.
        Err(e) => {
            let code = ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
            return match e.print() {
                Err(io) if !e.use_stderr() => output_failed(io, code),
                _ => code,
            };
        }
    };
    wsline::install_crypto_provider();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(e) => {
            report(e);
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    // --check-config's nginx advice, worked out before the server takes the configuration.
    let nginx_advice = args.check_config.then(|| {
        (
            wsline::config::nginx::warnings(&config),
            wsline::config::nginx::snippet(&config),
        )
    });
    let mut room_notes = wsline::relay::hub::check_notes(&config);
    room_notes.extend(wsline::cluster::check_note(&config.cluster));
    room_notes.extend(wsline::net::jwt::check_note(&config.security.jwt));
    // A quiet check says nothing but problems: not even the start-up log lines of Server::new.
    if !args.quiet {
        wsline::runtime::logging::init(&config.log);
    }
    let (listen, backlog) = (config.server.listen.clone(), config.server.backlog);
    let origin = config.origin.clone();
    let server = match Server::new(config) {
        Ok(server) => server,
        Err(e) => {
            report(origin.describe(e.key(), &e));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if let Some((warnings, snippet)) = nginx_advice {
        for warning in warnings {
            report(format_args!("warning: {warning}"));
        }
        if let Some(descriptors) = server.descriptor_summary()
            && (!args.quiet || descriptors.starts_with("warning:"))
        {
            report(format_args!("{descriptors}"));
        }
        if args.quiet {
            return ExitCode::SUCCESS;
        }
        return match print(&format!(
            "config OK\n{}\n\n{snippet}\n",
            room_notes.join("\n")
        )) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => output_failed(e, ExitCode::SUCCESS),
        };
    }

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            report(format_args!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listeners = match wsline::runtime::server::bind_with_backlog(&listen, backlog) {
            Ok(l) => l,
            Err(e) => {
                report(format_args!("{}: {e}", args.config.display()));
                return ExitCode::FAILURE;
            }
        };
        if let Err(e) = wsline::runtime::signals::spawn(server.handle(), args.config.clone()) {
            report(format_args!("cannot install signal handlers: {e}"));
            return ExitCode::FAILURE;
        }
        server.run(listeners).await;
        ExitCode::SUCCESS
    })
}

/// Writes `text` to stdout and flushes it.
fn print(text: &str) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()
}

/// One line on stderr. If stderr itself cannot be written there is nowhere left to say so: the
/// exit status still carries the verdict.
fn report(message: impl Display) {
    let _ = writeln!(io::stderr().lock(), "{message}");
}

/// The exit status after stdout failed: `verdict` when the reader went away (EPIPE), else a
/// line on stderr and [`EXIT_OUTPUT`].
fn output_failed(error: io::Error, verdict: ExitCode) -> ExitCode {
    if error.kind() == io::ErrorKind::BrokenPipe {
        return verdict;
    }
    report(format_args!("wsline: cannot write to stdout: {error}"));
    ExitCode::from(EXIT_OUTPUT)
}

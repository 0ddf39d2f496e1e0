//! The `pgquorum` binary: parse the command line, set up logging and signals, dispatch.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use pgquorum::cli::{self, Cli, Command};
use pgquorum::config::{LogFormat, NodeConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Fence) {
        // A plain process: no runtime, no config, default signal handling.
        pgquorum::fence::run();
        return ExitCode::SUCCESS;
    }
    init_logging(&cli);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgquorum: starting the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(on_signal(shutdown.clone()));
        match cli::run(cli, shutdown).await {
            Ok(code) => code,
            Err(failure) => {
                eprintln!("pgquorum: {:#}", failure.error);
                ExitCode::from(failure.code)
            }
        }
    })
}

/// Cancels `shutdown` on SIGTERM or SIGINT.
async fn on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}

/// The daemon logs at the configured level and format; other commands only warnings, so
/// their output stays readable. `RUST_LOG` overrides both.
fn init_logging(cli: &Cli) {
    let (level, format) = match (&cli.command, NodeConfig::load(&cli.config)) {
        (Command::Run, Ok(config)) => (config.log_level, config.log_format),
        _ => ("warn".to_string(), LogFormat::Human),
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

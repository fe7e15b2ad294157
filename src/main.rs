//! The `recwatch` binary: parses the command line and runs a subcommand.
//! Errors reach the user as one line `recwatch: …` and a non-zero exit, never a panic trace.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RECWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("recwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

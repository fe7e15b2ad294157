//! The `recwatch` binary: parses the command line and runs a subcommand.
//! Errors reach the user as one line `recwatch: …` and a non-zero exit, never a panic trace.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("recwatch: {e:#}");
            ExitCode::FAILURE
        }
    }
}

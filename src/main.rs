//! The `recwatch` binary: parses the command line and runs a subcommand.
//! Errors reach the user as one line `recwatch: <what failed>: <why>` ([`cli::error_line`]) and
//! a non-zero exit, never a panic trace or Debug output. Owns the log setup: plain text off a
//! terminal or with `NO_COLOR`. Never implements a subcommand itself.

mod cli;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(log_colours(std::io::stderr().is_terminal(), std::env::var_os("NO_COLOR")))
        .with_env_filter(tracing_subscriber::EnvFilter::new(log_filter(std::env::var("RECWATCH_LOG").ok())))
        .init();
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("recwatch: {}", cli::error_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// Colour codes only on a terminal, and never when `NO_COLOR` is set to anything non-empty
/// (no-color.org): a log file or the journal gets plain text.
fn log_colours(stderr_is_terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
}

/// The log filter: `RECWATCH_LOG` (tracing syntax), else `info`. sled's own debug and trace
/// records (page cache internals, thousands a second) stay out unless the filter names sled.
fn log_filter(env: Option<String>) -> String {
    let filter = env.filter(|f| !f.trim().is_empty()).unwrap_or_else(|| "info".to_string());
    if filter.contains("sled") {
        filter
    } else {
        format!("{filter},sled=info")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_plain_off_a_terminal_and_with_no_color() {
        assert!(log_colours(true, None));
        assert!(!log_colours(false, None), "a pipe or the journal gets no colour codes");
        assert!(!log_colours(true, Some("1".into())), "NO_COLOR is honoured");
        assert!(log_colours(true, Some("".into())), "an empty NO_COLOR is unset");
    }

    #[test]
    fn debug_logging_leaves_out_sled_internals_unless_asked() {
        assert_eq!(log_filter(None), "info,sled=info");
        assert_eq!(log_filter(Some("debug".into())), "debug,sled=info");
        assert_eq!(log_filter(Some("debug,sled=trace".into())), "debug,sled=trace");
    }
}

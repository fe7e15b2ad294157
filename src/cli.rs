//! Command-line interface: argument definitions and the glue that runs each subcommand.
//! Owns exit codes and what is printed to the terminal. Never implements a stage itself.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use recwatch::config::Config;
use recwatch::detect::alert::AlertStatus;
use recwatch::detect::scope::ScopeSettings;
use recwatch::escape;
use recwatch::parse::{LineFormat, LogFormat, MAX_LINE_LEN};
use recwatch::pipeline::replay::{self, ReplayOptions, ReplayOutcome};
use recwatch::privacy::Pseudonymizer;
use recwatch::report::ledger::LedgerQuery;
use recwatch::report::period::parse_period;
use recwatch::report::{skipped_lines_warning, AlertRow, LineCounts, Report, ReportContext, ReportFormat, ScopeRows};
use recwatch::source::replay::{open, Input};
use recwatch::store::{AlertFilter, Store, StoreError};
use recwatch::telemetry::Telemetry;

pub const DEFAULT_CONFIG: &str = "/etc/recwatch/recwatch.toml";

/// Exit code when no input could be read at all.
const EXIT_NOTHING_READ: u8 = 2;

#[derive(Parser)]
#[command(
    name = "recwatch",
    version,
    about = "Watches access logs and alerts when unknown clients fetch call recordings",
    long_about = "recwatch reads web-server and storage access logs (files followed live across rotation, Kafka \
topics in a consumer group, or finished logs replayed) and raises an alert when a client outside the known \
networks fetches call-recording audio: one request by an unknown client (R1), many distinct recordings in a \
minute (R2), unauthenticated exposure, probing and listings. Alerts are kept in an embedded sled database \
under the state directory, served with Prometheus metrics over HTTP, and sent to Alertmanager or signed \
webhooks; personnummer and phone numbers in paths are replaced by keyed pseudonyms.",
    after_help = "Environment:\n  RECWATCH_LOG  log filter for stderr (tracing syntax, default \"info\"; e.g. \"debug\", \"recwatch=trace\")\n\n\
Exit status:\n  0  success\n  1  error (the reason is printed as one line \"recwatch: ...\")\n  \
2  replay: none of the inputs could be read\n\n\
Files:\n  /etc/recwatch/recwatch.toml  configuration (see `recwatch check`)\n  \
/var/lib/recwatch            state directory: the alert store (sled) and checkpoints\n\n\
Examples:\n  recwatch check --config /etc/recwatch/recwatch.toml\n  \
recwatch run --config /etc/recwatch/recwatch.toml\n  \
recwatch replay --state-dir /tmp/case --report md access.log access.log.1 access.log.*.gz > scope.md\n  \
recwatch report --since 7d --format html --output scope.html\n  \
recwatch alerts list --status open\n  \
recwatch pseudonym 19121212-1212"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the daemon: follow the configured log files across rotation and consume the Kafka
    /// sources, raise and store alerts, notify the receivers, serve /metrics, /healthz,
    /// /readyz and the alert API. SIGHUP reloads, SIGTERM stops.
    Run {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// Also follow this log file (format detected from its first line, else combined).
        #[arg(long)]
        watch: Vec<PathBuf>,
        /// Listen address for HTTP (overrides http.listen).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// State directory (alert store, checkpoints); overrides store.path.
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Detection worker threads (overrides engine.workers).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Validate a config file and print the effective settings and rules; with --sample,
    /// guess a log's format instead.
    Check {
        /// Configuration file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
        /// A log file: try every known format on its first 1000 lines, print the share each
        /// parses and a [[source]] snippet for the best one (no config is read).
        #[arg(long, value_name = "FILE")]
        sample: Option<PathBuf>,
    },
    /// Read access logs (plain, .gz or stdin), store the alerts they raise, print a scope report.
    Replay(ReplayArgs),
    /// Print a scope report from the store's evidence ledger (the daemon may be running: the
    /// store is read from a private copy): calls and files each client outside the internal
    /// networks took, partial transfers, alerts, and the Art. 33 section.
    Report(ReportArgs),
    /// List, show, acknowledge or resolve stored alerts. Uses the store directly, or the running
    /// daemon's alert API (http.listen + http.token_file) while the daemon holds the store.
    Alerts {
        #[command(subcommand)]
        action: AlertsAction,
    },
    /// Print TEXT with personnummer and phone numbers replaced by their pseudonyms under the
    /// configured key (privacy.pseudonym_key_file, else the state directory's), to find a
    /// known person's alerts: `recwatch pseudonym 19121212-1212` → `pnr-…`.
    Pseudonym {
        #[command(flatten)]
        store: StoreArgs,
        /// Text to pseudonymise, e.g. a personnummer, a phone number or a whole path.
        #[arg(required = true)]
        text: Vec<String>,
    },
    /// Print the Kafka message key of log lines (their client address), one per line (`-`
    /// when a line has none), or a shipper snippet that sets it. Keying the topic by client
    /// keeps each client's windows in one recwatch instance.
    KafkaKey(KafkaKeyArgs),
    /// Write the manual pages (recwatch.1, recwatch-run.1, ...) generated from this command line into a directory.
    #[command(hide = true)]
    Manpages {
        /// Output directory (created when missing).
        out_dir: PathBuf,
    },
}

#[derive(Args)]
pub struct KafkaKeyArgs {
    /// Log format of the lines: combined, common, vhost_combined, vhost_common.
    #[arg(long, default_value = "combined")]
    pub format: String,
    /// Print a configuration snippet that sets the key in a shipper instead: vector or filebeat.
    #[arg(long)]
    pub snippet: Option<String>,
    /// Log lines; without any, lines are read from standard input.
    pub lines: Vec<String>,
}

#[derive(Args)]
pub struct ReplayArgs {
    /// Configuration file (networks, sensitive paths, rules).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// State directory (alert store); overrides `store.path` of the config.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
    /// Report format: json, csv (per-client table), md or html (one self-contained page).
    #[arg(long, default_value = "json")]
    pub report: String,
    /// Count only requests at or after this time in the report: RFC 3339
    /// (2019-02-18T09:00:00Z) or a span back from now (7d, 12h, 30m, 2w). Detection still
    /// reads every line.
    #[arg(long)]
    pub since: Option<String>,
    /// Count only requests before this time in the report (RFC 3339 or a span back from now).
    #[arg(long)]
    pub until: Option<String>,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// Detection worker threads (default: the config's engine.workers, 0 there = cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Parser threads (default: one per core, at most 8).
    #[arg(long)]
    pub parsers: Option<usize>,
    /// Log format of the inputs (default: the first configured source's, else combined).
    #[arg(long)]
    pub format: Option<String>,
    /// Source name alerts carry (default "replay").
    #[arg(long, default_value = "replay")]
    pub source_name: String,
    /// Never draw a progress bar.
    #[arg(long)]
    pub no_progress: bool,
    /// Also write the evidence ledger (every fetch by a client outside the known networks)
    /// into the store, so `recwatch report` can answer from it later. Off by default: the
    /// replay's own report has the same numbers, and the ledger costs a store write per
    /// client and file.
    #[arg(long)]
    pub ledger: bool,
    /// Log files (plain or gzip), `-` for stdin.
    pub files: Vec<String>,
}

#[derive(Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Only requests at or after this time: RFC 3339 (2019-02-18T09:00:00Z) or a span back
    /// from now (7d, 12h, 30m, 2w); applied to whole hours.
    #[arg(long)]
    pub since: Option<String>,
    /// Only requests before this time (RFC 3339 or a span back from now).
    #[arg(long)]
    pub until: Option<String>,
    /// Only this client (address or host name, as alerts show it).
    #[arg(long)]
    pub client: Option<String>,
    /// Only evidence first seen on this source (its configured name).
    #[arg(long)]
    pub source: Option<String>,
    /// Only clients with an alert of this rule (id or name), and only those alerts.
    #[arg(long)]
    pub rule: Option<String>,
    /// Report format: json, csv, md or html.
    #[arg(long, default_value = "json")]
    pub format: String,
    /// Write the report here instead of stdout.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Clone)]
pub struct StoreArgs {
    /// Configuration file (for the store path, or the API address and token while a daemon runs).
    #[arg(long, short, default_value = DEFAULT_CONFIG)]
    pub config: PathBuf,
    /// State directory (alert store); overrides the config's `store.path`.
    #[arg(long)]
    pub state_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
pub enum AlertsAction {
    /// List alerts, oldest first.
    List {
        #[command(flatten)]
        store: StoreArgs,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Only this rule (name or id).
        #[arg(long)]
        rule: Option<String>,
        /// Only this client address.
        #[arg(long)]
        client: Option<String>,
        /// Only this status: open, acked, resolved.
        #[arg(long)]
        status: Option<String>,
    },
    /// Show one alert as JSON.
    Show {
        /// Alert id (first column of `recwatch alerts list`).
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Mark an alert as acknowledged.
    Ack {
        /// Alert id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Mark an alert as resolved.
    Resolve {
        /// Alert id.
        id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run { config, watch, listen, state_dir, workers } => {
            recwatch::daemon::run(recwatch::daemon::RunOptions { config, watch, listen, state_dir, workers })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { sample: Some(file), .. } => check_sample(&file),
        Command::Check { config, sample: None } => {
            let c = load_config(&config)?;
            // What `run` refuses, `check` refuses: the same loader for the API token.
            if let Some(token_file) = &c.http.token_file {
                recwatch::http::load_api_token(token_file)
                    .with_context(|| format!("{}: http.token_file", config.display()))?;
                if let Some(why) = service_user_cannot_read(token_file) {
                    eprintln!("recwatch: warning: {}: http.token_file: {why}", config.display());
                }
            }
            print!("{}", escape::lines(&c.describe()));
            println!("ok");
            Ok(ExitCode::SUCCESS)
        }
        Command::Replay(args) => replay(args),
        Command::Report(args) => report(args),
        Command::Alerts { action } => alerts(action),
        Command::Pseudonym { store, text } => pseudonym(&store, &text),
        Command::KafkaKey(args) => kafka_key(args),
        Command::Manpages { out_dir } => {
            std::fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
            let mut command = <Cli as clap::CommandFactory>::command();
            command.build();
            write_manpages(&command, "recwatch", &out_dir)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `recwatch check --sample FILE`: each format's share of the first lines, and a snippet.
fn check_sample(file: &Path) -> anyhow::Result<ExitCode> {
    const SAMPLE_LINES: usize = 1000;
    let text = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
    let lines: Vec<&[u8]> =
        text.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).take(SAMPLE_LINES).collect();
    if lines.is_empty() {
        bail!("{}: no lines to sample", file.display());
    }
    let ranked = recwatch::parse::sample::rank(&lines);
    println!("{} lines sampled from {}", lines.len(), file.display());
    for c in &ranked {
        println!("{:>5.1}%  {}", 100.0 * c.complete as f64 / lines.len() as f64, c.config_line);
    }
    match ranked.first().filter(|c| c.complete > 0) {
        Some(best) => {
            println!("\n[[source]]\npath = {:?}\n{}", file.display().to_string(), best.config_line);
            Ok(ExitCode::SUCCESS)
        }
        None => {
            println!(
                "\nno known format fits: give the server's own format string as nginx_log_format or apache_log_format (README \"Your own log format\")"
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// The configured pseudonym key, else the state directory's; never creates one (a key made
/// now could not match anything stored).
fn existing_pseudonyms(config: &Config, state_dir: &Path) -> anyhow::Result<Pseudonymizer> {
    match &config.pseudonyms {
        Some(p) => Ok(p.clone()),
        None => {
            let key = state_dir.join(recwatch::privacy::STATE_KEY_FILE);
            Pseudonymizer::load(&key).with_context(|| {
                format!("no pseudonym key yet ({} is created by the first `recwatch run` or `replay`)", key.display())
            })
        }
    }
}

fn pseudonym(args: &StoreArgs, texts: &[String]) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let dir = args.state_dir.clone().unwrap_or(config.store.dir.clone());
    let pseudonyms = existing_pseudonyms(&config, &dir)?;
    let mut out = std::io::stdout().lock();
    for text in texts {
        writeln!(out, "{}", pseudonyms.pseudonymize(text))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn kafka_key(args: KafkaKeyArgs) -> anyhow::Result<ExitCode> {
    let format = LogFormat::from_name(&args.format).with_context(|| {
        format!("--format {:?}: expected one of {}", args.format, LogFormat::ALL.map(|f| f.as_str()).join(", "))
    })?;
    let mut out = std::io::stdout().lock();
    if let Some(shipper) = &args.snippet {
        let vhost = matches!(format, LogFormat::VhostCombined | LogFormat::VhostCommon);
        let text = match shipper.as_str() {
            "vector" => vector_snippet(vhost),
            "filebeat" => filebeat_snippet(vhost),
            other => bail!("--snippet {other:?}: expected vector or filebeat"),
        };
        out.write_all(text.as_bytes())?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut print = |line: &[u8]| -> std::io::Result<()> {
        let key = recwatch::parse::client_key(format, line);
        writeln!(out, "{}", key.as_deref().unwrap_or("-"))
    };
    if args.lines.is_empty() {
        recwatch::source::framing::for_each_line(std::io::stdin().lock(), MAX_LINE_LEN, 1 << 16, |frame| {
            let line = match frame {
                recwatch::source::framing::Frame::Line(line) => line,
                recwatch::source::framing::Frame::Truncated(head) => head,
            };
            // A closed stdout (| head) ends the output, not the program with a panic.
            let _ = print(line);
        })?;
    } else {
        for line in &args.lines {
            print(line.as_bytes())?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One page per command (`recwatch.1`, `recwatch-alerts-list.1`, ...), skipping `help` and hidden ones.
fn write_manpages(command: &clap::Command, page: &str, out_dir: &Path) -> anyhow::Result<()> {
    let file = out_dir.join(format!("{page}.1"));
    let mut text = Vec::new();
    clap_mangen::Man::new(command.clone().name(page.to_string())).render(&mut text)?;
    std::fs::write(&file, text).with_context(|| format!("cannot write {}", file.display()))?;
    for sub in command.get_subcommands().filter(|c| c.get_name() != "help" && !c.is_hide_set()) {
        write_manpages(sub, &format!("{page}-{}", sub.get_name()), out_dir)?;
    }
    Ok(())
}

/// Vector: a remap that copies the client token into `client_key`, and a Kafka sink keyed by it.
fn vector_snippet(vhost: bool) -> String {
    let index = if vhost {
        "split(string!(.message), \" \", limit: 3)[1]"
    } else {
        "split(string!(.message), \" \", limit: 2)[0]"
    };
    format!(
        r#"# Vector: key access-log events by client address for recwatch (recwatch kafka-key --snippet vector)
[transforms.recwatch_key]
type = "remap"
inputs = ["access_logs"]            # your file source
source = '''
.client_key = {index}
'''

[sinks.recwatch]
type = "kafka"
inputs = ["recwatch_key"]
bootstrap_servers = "kafka1:9092"
topic = "access-logs"
key_field = "client_key"            # every line of a client goes to one partition
encoding.codec = "json"             # recwatch reads `message`, `host` and `file`
librdkafka_options."partitioner" = "murmur2_random"   # the same partitioner for every producer
"#
    )
}

/// Filebeat: a dissect processor that extracts the client token, and a Kafka output keyed by it.
fn filebeat_snippet(vhost: bool) -> String {
    let tokenizer = if vhost { "%{?vhost} %{client_key} %{?rest}" } else { "%{client_key} %{?rest}" };
    format!(
        r#"# Filebeat: key access-log events by client address for recwatch (recwatch kafka-key --snippet filebeat)
processors:
  - dissect:
      tokenizer: "{tokenizer}"
      field: "message"
      target_prefix: ""
output.kafka:
  hosts: ["kafka1:9092"]
  topic: "access-logs"
  key: '%{{[client_key]}}'            # every line of a client goes to one partition
  partition.hash:
    reachable_only: false             # a client's partition never changes while a broker is down
  codec.json:
    pretty: false                     # recwatch reads `message`, `host.name` and `log.file.path`
"#
    )
}

/// The wall clock, Unix seconds (for spans like `--since 7d`).
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

fn load_config(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).map_err(|e| anyhow::anyhow!("{e}"))
}

/// The state directory: `--state-dir` if given, else the config's store path.
fn state_dir(args: &StoreArgs) -> anyhow::Result<PathBuf> {
    match &args.state_dir {
        Some(d) => Ok(d.clone()),
        None => Ok(load_config(&args.config)?.store.dir),
    }
}

fn open_store(state_dir: &Path) -> anyhow::Result<Store> {
    std::fs::create_dir_all(state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    Ok(Store::open_state_dir(state_dir)?)
}

fn replay(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.config)?;
    let report_format = ReportFormat::from_name(&args.report)
        .with_context(|| format!("--report {:?}: expected {}", args.report, ReportFormat::NAMES))?;
    let period = parse_period(args.since.as_deref(), args.until.as_deref(), unix_now())?;
    let format = match &args.format {
        Some(f) => LineFormat::Named(LogFormat::from_name(f).with_context(|| {
            format!("--format {f:?}: expected one of {}", LogFormat::ALL.map(|f| f.as_str()).join(", "))
        })?),
        None => config.sources.first().map_or(LineFormat::Named(LogFormat::Combined), |s| s.format.clone()),
    };
    let inputs: Vec<Input> = if args.files.is_empty() {
        if std::io::stdin().is_terminal() {
            bail!("no input: give log files, or `-` to read standard input");
        }
        vec![Input::Stdin]
    } else {
        args.files.iter().map(|f| Input::from_arg(f)).collect()
    };
    let state_dir = args.state_dir.clone().unwrap_or_else(|| config.store.dir.clone());
    let store = open_store(&state_dir)?;
    let workers = args.workers.unwrap_or(config.engine.workers).max(1);
    // Parsing is split over the cores too; events still reach the workers in input order.
    let parsers = args.parsers.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()).min(8));
    let telemetry = Arc::new(Telemetry::default());
    let options = ReplayOptions {
        source_name: args.source_name.clone(),
        format: format.clone(),
        path_semantics: config.sources.first().map(|s| s.path_semantics).unwrap_or_default(),
        // Zone-less timestamps are read in the first configured source's time zone.
        timezone: config.sources.first().map(|s| s.timezone).unwrap_or_default(),
        workers,
        parsers,
        pseudonyms: Pseudonymizer::resolve(config.pseudonyms.as_ref(), &state_dir)?,
        scope: ScopeSettings { call_ids: config.classify.call_ids.clone(), period },
        ledger: args.ledger,
    };
    let progress = progress_bar(&inputs, args.no_progress);
    let (pb, progress_errors) = (progress.clone(), progress.clone());
    let replayed = replay::run(
        &config,
        &inputs,
        options,
        store,
        telemetry.clone(),
        move |n| pb.inc(n),
        |e| progress_errors.suspend(|| eprintln!("recwatch: {}", escape::text(e))),
    );
    progress.finish_and_clear();
    let ReplayOutcome { inputs: mut summaries, run: outcome, rows } = replayed?;
    for (summary, input) in summaries.iter_mut().zip(&inputs) {
        if summary.skipped * 2 > summary.lines {
            let sample = first_lines(input, 200);
            summary.warning = match &format {
                LineFormat::Named(named) => skipped_lines_warning(*named, summary.lines, summary.skipped, &sample),
                // A format string or JSON map is the operator's own: `check --sample` compares.
                other => Some(format!(
                    "{} of {} lines were skipped as not {} (recwatch check --sample FILE tries every known format)",
                    summary.skipped,
                    summary.lines,
                    other.describe()
                )),
            };
            if let Some(w) = &summary.warning {
                eprintln!("recwatch: warning: {}: {}", escape::text(&summary.input), escape::text(w));
            }
        }
    }
    let nothing_read = summaries.iter().all(|s| s.error.is_some() && s.lines == 0);
    let context = ReportContext {
        origin: "replay",
        period,
        call_ids_configured: config.classify.call_ids.pattern().is_some(),
        partner_names: config.classify.partner_names(),
    };
    let report = Report::build(&telemetry, summaries, &outcome.alerts, rows, context);
    write_report(report, report_format, args.output.as_deref(), outcome)?;
    if nothing_read {
        eprintln!("recwatch: nothing could be read");
        return Ok(ExitCode::from(EXIT_NOTHING_READ));
    }
    Ok(ExitCode::SUCCESS)
}

/// `recwatch report`: the scope report from the evidence ledger of a store, read from a
/// private copy (a running daemon keeps the store).
fn report(args: ReportArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(&args.store.config)?;
    let format = ReportFormat::from_name(&args.format)
        .with_context(|| format!("--format {:?}: expected {}", args.format, ReportFormat::NAMES))?;
    let period = parse_period(args.since.as_deref(), args.until.as_deref(), unix_now())?;
    let state_dir = args.store.state_dir.clone().unwrap_or_else(|| config.store.dir.clone());
    // A copy, also while the daemon runs; a copy taken in the middle of a write may need a
    // second try.
    let mut attempt = 0;
    let store = loop {
        match Store::open_state_dir_copy(&state_dir) {
            Err(StoreError::Unreadable { .. }) if attempt < 3 => attempt += 1,
            other => break other.with_context(|| format!("cannot read the store in {}", state_dir.display()))?,
        }
    };
    let pseudonyms = existing_pseudonyms(&config, &state_dir)?;
    let filter = AlertFilter { rule: args.rule.clone(), client: args.client.clone(), ..AlertFilter::default() };
    let alerts: Vec<_> =
        store.list(&filter)?.into_iter().filter(|a| args.source.as_ref().is_none_or(|s| *s == a.source)).collect();
    let mut query = LedgerQuery { period, client: args.client.clone(), source: args.source.clone(), clients: None };
    if args.rule.is_some() {
        query.clients = Some(alerts.iter().map(|a| a.client.clone()).collect());
    }
    let entries = store.ledger_entries(None, 0)?;
    let (since_hour, until_hour) = query.hours();
    let hours = store.ledger_hours(since_hour, until_hour)?;
    let mut partner_names = config.classify.partner_names();
    let (scopes, inputs) = recwatch::report::ledger::scopes(
        entries,
        &hours,
        &query,
        &config.classify.call_ids,
        &pseudonyms,
        &alerts,
        &mut partner_names,
    );
    let context = ReportContext {
        origin: "store",
        period,
        call_ids_configured: config.classify.call_ids.pattern().is_some(),
        partner_names,
    };
    let rows = ScopeRows::build(&scopes, &context.partner_names);
    let report = Report::from_rows(LineCounts::default(), inputs, &alerts, rows, context);
    write_report(report, format, args.output.as_deref(), (scopes, alerts))?;
    Ok(ExitCode::SUCCESS)
}

/// Writes `report` to `output` (standard output if none). The report and `sources` (what it
/// was built from) are left for the process's exit to give back at once: freeing a large
/// replay's hundreds of thousands of allocations one by one took a third of its tail.
fn write_report<T>(mut report: Report, format: ReportFormat, output: Option<&Path>, sources: T) -> anyhow::Result<()> {
    match output {
        Some(path) => std::fs::File::create(path)
            .map(std::io::BufWriter::new)
            .and_then(|mut file| {
                report.write_to(format, &mut file)?;
                file.flush()
            })
            .with_context(|| format!("cannot write {}", path.display()))?,
        None => report.write_to(format, &mut std::io::stdout().lock())?,
    }
    std::mem::forget((report, sources));
    Ok(())
}

/// Up to `n` first lines of a replayed file, read again to name the format it seems to be in;
/// none for stdin (already consumed) or a file that cannot be opened again.
fn first_lines(input: &Input, n: usize) -> Vec<Vec<u8>> {
    use std::io::BufRead;
    if matches!(input, Input::Stdin) {
        return Vec::new();
    }
    let Ok(opened) = open(input, Box::new(|_| {})) else { return Vec::new() };
    std::io::BufReader::new(opened.reader)
        .split(b'\n')
        .take(n)
        .map_while(Result::ok)
        .map(|mut l| {
            l.truncate(MAX_LINE_LEN);
            l
        })
        .collect()
}

fn progress_bar(inputs: &[Input], disabled: bool) -> indicatif::ProgressBar {
    if disabled || !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let total: u64 = inputs.iter().filter_map(Input::size).sum();
    let pb = indicatif::ProgressBar::new(total);
    pb.set_style(
        // wide_bar takes what the terminal has left: the line never wraps, at 80 columns or fewer.
        indicatif::ProgressStyle::with_template("{wide_bar} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    pb
}

/// Where `recwatch alerts` reads and writes: the store itself, or (while a daemon holds the
/// store) the daemon's alert API with the configured token.
enum AlertsBackend {
    Store(Store),
    Api { base: String, token: String },
}

impl AlertsBackend {
    /// The store itself when no daemon holds it (a private read-only copy unless `write`);
    /// the daemon's API when one does. Any other failure to open is an error: a damaged store
    /// is never written, and never mistaken for a running daemon.
    fn open(args: &StoreArgs, write: bool) -> anyhow::Result<AlertsBackend> {
        let dir = state_dir(args)?;
        let opened = if write { Store::open_state_dir(&dir) } else { Store::open_state_dir_read_only(&dir) };
        let held = match opened {
            Ok(store) => return Ok(AlertsBackend::Store(store)),
            Err(e @ StoreError::Locked { .. }) => e.to_string(),
            Err(e) => {
                return Err(anyhow::Error::from(e))
                    .with_context(|| format!("cannot open the alert store in {}", dir.display()))
            }
        };
        // A running daemon holds the store's lock: ask it instead.
        let config = load_config(&args.config).with_context(|| format!("{held}, and its config names no alert API"))?;
        let token_file = config.http.token_file.as_ref().with_context(|| {
            format!("{held}, and {} sets no http.token_file for its alert API", args.config.display())
        })?;
        let token = recwatch::http::load_api_token(token_file).with_context(|| format!("{held}; its alert API"))?;
        // Where the daemon says it listens (it may have bound port 0), else the configured address.
        let listen = recwatch::http::reported_addr(&dir).unwrap_or(config.http.listen);
        Ok(AlertsBackend::Api { base: format!("http://{listen}/api/v1/alerts"), token: token.to_string() })
    }

    /// One API request; `what` names its object in messages (`alert 0123abcd`, `alerts`).
    fn call(&self, request: ureq::Request, what: &str) -> anyhow::Result<serde_json::Value> {
        let AlertsBackend::Api { token, base } = self else { unreachable!("only for the API backend") };
        let response = request
            .set("Authorization", &format!("Bearer {token}"))
            .timeout(std::time::Duration::from_secs(10))
            .call()
            .map_err(|e| match e {
                ureq::Error::Status(404, _) => anyhow::anyhow!("{what}: no such alert"),
                ureq::Error::Status(401, _) => {
                    anyhow::anyhow!("{what}: the alert API at {base} refused the token of http.token_file (401)")
                }
                ureq::Error::Status(code, r) => {
                    let body = r.into_string().unwrap_or_default();
                    let why = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["error"].as_str().map(str::to_string))
                        .unwrap_or_else(|| format!("HTTP status {code}"));
                    anyhow::anyhow!("{what}: the alert API answered {code}: {why}")
                }
                ureq::Error::Transport(t) => {
                    anyhow::anyhow!(
                        "{what}: the store is held by a running recwatch but its alert API at {base} is unreachable: {}",
                        t.kind()
                    )
                }
            })?;
        response
            .into_json()
            .with_context(|| format!("{what}: the alert API at {base} answered something that is not JSON"))
    }

    fn list(&self, filter: AlertFilter) -> anyhow::Result<serde_json::Value> {
        match self {
            AlertsBackend::Store(store) => {
                let rows: Vec<AlertRow> = store.list(&filter)?.iter().map(AlertRow::from).collect();
                Ok(serde_json::to_value(rows)?)
            }
            AlertsBackend::Api { base, .. } => {
                let mut request = ureq::get(base);
                for (key, value) in [("rule", &filter.rule), ("client", &filter.client)] {
                    if let Some(v) = value {
                        request = request.query(key, v);
                    }
                }
                if let Some(s) = filter.status {
                    request = request.query("status", s.as_str());
                }
                self.call(request.query("limit", "10000"), "alerts")
            }
        }
    }

    fn show(&self, id: &str) -> anyhow::Result<serde_json::Value> {
        match self {
            AlertsBackend::Store(store) => {
                let a = store.get(id)?.with_context(|| format!("alert {}: no such alert", escape::text(id)))?;
                Ok(serde_json::to_value(AlertRow::from(&a))?)
            }
            AlertsBackend::Api { base, .. } => {
                self.call(ureq::get(&format!("{base}/{}", url_segment(id))), &format!("alert {}", escape::text(id)))
            }
        }
    }

    fn set_status(&self, id: &str, status: AlertStatus) -> anyhow::Result<serde_json::Value> {
        match self {
            AlertsBackend::Store(store) => match store.set_status(id, status) {
                Ok(a) => Ok(serde_json::to_value(AlertRow::from(&a))?),
                Err(StoreError::NotFound(_)) => bail!("alert {}: no such alert", escape::text(id)),
                Err(e) => Err(e.into()),
            },
            AlertsBackend::Api { base, .. } => {
                let verb = if status == AlertStatus::Resolved { "resolve" } else { "ack" };
                let what = format!("alert {}", escape::text(id));
                self.call(ureq::post(&format!("{base}/{}/{verb}", url_segment(id))), &what)
            }
        }
    }
}

fn alerts(action: AlertsAction) -> anyhow::Result<ExitCode> {
    // Every field may hold log-derived text: escaped by the one rule, like every output.
    let text = |v: &serde_json::Value, key: &str| escape::text(v[key].as_str().unwrap_or_default()).into_owned();
    match action {
        AlertsAction::List { store, json, rule, client, status } => {
            let status = match status.as_deref() {
                None => None,
                Some(s) => Some(
                    AlertStatus::from_name(s)
                        .with_context(|| format!("--status {s:?}: expected open, acked or resolved"))?,
                ),
            };
            let rows = AlertsBackend::open(&store, false)?.list(AlertFilter { rule, client, status, since: None })?;
            let mut out = std::io::stdout().lock();
            if json {
                writeln!(out, "{}", escape::json_pretty(&rows)?)?;
            } else {
                writeln!(
                    out,
                    "{:<24}  {:<26}  {:<8}  {:<8}  {:<39}  {:<20}  {:>8}  {:>8}",
                    "ID", "RULE", "SEVERITY", "STATUS", "CLIENT", "FIRST SEEN", "REQUESTS", "DISTINCT"
                )?;
                for r in rows.as_array().into_iter().flatten() {
                    writeln!(
                        out,
                        "{:<24}  {:<26}  {:<8}  {:<8}  {:<39}  {:<20}  {:>8}  {:>8}",
                        text(r, "id"),
                        text(r, "rule"),
                        text(r, "severity"),
                        text(r, "status"),
                        text(r, "client"),
                        text(r, "first_seen"),
                        r["requests"].as_u64().unwrap_or(0),
                        r["distinct_resources"].as_u64().unwrap_or(0)
                    )?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        AlertsAction::Show { id, store } => {
            println!("{}", escape::json_pretty(&AlertsBackend::open(&store, false)?.show(&id)?)?);
            Ok(ExitCode::SUCCESS)
        }
        AlertsAction::Ack { id, store } => set_status(&id, &store, AlertStatus::Acked),
        AlertsAction::Resolve { id, store } => set_status(&id, &store, AlertStatus::Resolved),
    }
}

fn set_status(id: &str, args: &StoreArgs, status: AlertStatus) -> anyhow::Result<ExitCode> {
    let a = AlertsBackend::open(args, true)?.set_status(id, status)?;
    println!(
        "{} {}",
        escape::text(a["id"].as_str().unwrap_or(id)),
        escape::text(a["status"].as_str().unwrap_or(status.as_str()))
    );
    Ok(ExitCode::SUCCESS)
}

/// An alert id as one URL path segment: ids are hex, but a typo must not change the route.
fn url_segment(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// When the `recwatch` service account exists and is not the current user: why it could not
/// read `path` (by owner, group and mode bits), or `None` when it can or nobody can tell.
fn service_user_cannot_read(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    let account = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == "recwatch").then(|| Some((f[2].parse::<u32>().ok()?, f[3].parse::<u32>().ok()?)))?
    });
    let (uid, gid) = account?;
    let meta = std::fs::metadata(path).ok()?;
    if meta.uid() == std::fs::metadata("/proc/self").ok()?.uid() && meta.uid() == uid {
        return None;
    }
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    let in_group = meta.gid() == gid
        || groups.lines().any(|l| {
            let f: Vec<&str> = l.split(':').collect();
            f.len() > 3 && f[2].parse::<u32>().ok() == Some(meta.gid()) && f[3].split(',').any(|m| m == "recwatch")
        });
    let mode = meta.mode();
    let readable = if meta.uid() == uid {
        mode & 0o400 != 0
    } else if in_group {
        mode & 0o040 != 0
    } else {
        mode & 0o004 != 0
    };
    (!readable).then(|| {
        format!(
            "{} is not readable by the service user recwatch (owner uid {}, group gid {}, mode {:04o}): \
             `chown recwatch {}` or `chgrp recwatch` it with mode 0640",
            path.display(),
            meta.uid(),
            meta.gid(),
            mode & 0o7777,
            path.display()
        )
    })
}

/// An error as the one line `main` prints after `recwatch: `: each cause once (a cause whose
/// text the line already holds is not repeated), multi-line texts (regex syntax errors) folded
/// onto the line, unsafe characters escaped.
pub fn error_line(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = one_line(&cause.to_string());
        if text.is_empty() || line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    escape::text(&line).into_owned()
}

/// A multi-line message on one line. A regex syntax error (`regex parse error:`, the pattern,
/// a caret line, `error: why`) becomes `regex parse error: why, in PATTERN at column N`.
fn one_line(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    match lines.as_slice() {
        [] => String::new(),
        [one] => one.to_string(),
        [head, pattern, caret, .., why]
            if head.ends_with("regex parse error:") && caret.trim_start().starts_with('^') =>
        {
            let indent = pattern.len() - pattern.trim_start().len();
            let column = caret.find('^').unwrap_or(indent).saturating_sub(indent) + 1;
            let why = why.strip_prefix("error: ").unwrap_or(why);
            format!("{head} {why}, in {} at column {column}", pattern.trim_start())
        }
        _ => lines.iter().map(|l| l.trim()).filter(|l| !l.is_empty()).collect::<Vec<_>>().join(" "),
    }
}

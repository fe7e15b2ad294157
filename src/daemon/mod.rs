//! `recwatch run`: the long-running process. Owns the runtime and the lifecycle: start (config,
//! state directory, the store or its quarantine), the HTTP server, signals (SIGTERM/SIGINT
//! cancel the one shutdown token every loop watches, then a final flush within
//! [`DRAIN_GRACE`]; SIGHUP reloads), systemd notifications (READY, WATCHDOG,
//! STOPPING) and the notifier threads. The loops live beside it: [`files`] (the tail loop and
//! its checkpoints), [`kafka`] (one consumer loop per Kafka source), [`reload`] and
//! [`retention`]. Never parses, detects or stores by itself.
//!
//! File sources and Kafka sources run side by side: the main thread follows the files into
//! one pipeline whose barriers carry the file checkpoint; each Kafka source is a thread with
//! a pipeline of its own whose barriers carry no checkpoint (Kafka keeps the offsets) and
//! only say when offsets may be stored. All pipelines write to the one store; alert ids do
//! not depend on the pipeline, so the same client seen in two places updates one alert.

mod files;
mod kafka;
mod reload;
mod retention;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::alerting::Notifier;
use crate::config::{Config, Overrides};
use crate::detect::alert::Alert;
use crate::http::{self, HttpState, Readiness};
use crate::parse::{parse_line, LineFormat, LogFormat};
use crate::pipeline::{OnStoreError, Pipeline, PipelineOptions, SourceSpec};
use crate::privacy::Pseudonymizer;
use crate::source::{SourceInput, SourceSettings};
use crate::store::{Notify, Store};
use crate::telemetry::Telemetry;

use files::{load_checkpoint, RewindHistory, Running};
use kafka::stop_kafka_loops;

pub use kafka::run_kafka_source;

/// Command-line overrides of the config, for quick starts and tests.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    pub config: PathBuf,
    /// Extra file sources (format detected from the first line, else combined).
    pub watch: Vec<PathBuf>,
    pub listen: Option<SocketAddr>,
    pub state_dir: Option<PathBuf>,
    pub workers: Option<usize>,
}

/// Bytes read per tail poll, and at most between two barriers: bounds the work a checkpoint
/// covers. Lines that go to detection bound it too: reads are sized to make a barrier due
/// (`Ingest::read_hint`), and a poll ends after the read that did (`Ingest::barrier_due`).
const POLL_BUDGET: usize = 64 << 10;
/// A barrier at most this often while lines keep arriving (and after every quiet poll).
pub(super) const BARRIER_EVERY: Duration = Duration::from_millis(10);
/// Grace for the HTTP server to finish in-flight requests at shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(2);

/// How long the drain after SIGTERM/SIGINT may take before the process exits anyway (below
/// systemd's `TimeoutStopSec=30s`): lines after the last durable checkpoint are read again at
/// the next start, so leaving late costs re-reading, never loss.
pub const DRAIN_GRACE: Duration = Duration::from_secs(25);

/// What the signal task sets. `shutdown` is the one stop value: every loop (tail loop, Kafka
/// loops through child tokens, store writers' retries, retention) watches it.
#[derive(Default)]
struct Control {
    shutdown: CancellationToken,
    reload: AtomicBool,
}

pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    // Read before the config is built: a change in between makes the next reload restart more,
    // never less.
    let fingerprint = reload::Fingerprint::read(&opts.config);
    let mut config = load_config(&opts)?;
    let state_dir = config.store.dir.clone();
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("cannot create state directory {}", state_dir.display()))?;
    let telemetry = Arc::new(Telemetry::default());
    let store = open_or_quarantine(&state_dir, &telemetry)?;
    let api_token = match &config.http.token_file {
        None => {
            tracing::warn!("no http.token_file configured: the alert API answers 401 to every request");
            None
        }
        Some(f) => Some(http::load_api_token(f)?),
    };
    let ready = Arc::new(Readiness::default());
    let control = Arc::new(Control::default());

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("http")
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind(config.http.listen))
        .with_context(|| format!("cannot listen on {}", config.http.listen))?;
    let bound = listener.local_addr()?;
    let _bound = http::announce(bound, &state_dir)
        .with_context(|| format!("cannot report the HTTP address in {}", state_dir.display()))?;
    // From here on the config names the address bound (`listen` may ask for port 0), and so
    // does the alerts' default link, also in configs reloaded later.
    config.bound_to(bound);
    let opts = RunOptions { listen: Some(bound), ..opts };
    // The server keeps answering (/readyz says draining) until the drain is over.
    let http_stop = CancellationToken::new();
    let state = HttpState { store: store.clone(), telemetry: telemetry.clone(), api_token, ready: ready.clone() };
    let limits = http::Limits { max_connections: config.http.max_connections, ..http::Limits::default() };
    let server = runtime.spawn(http::serve_with(listener, state, limits, http_stop.clone().cancelled_owned()));
    runtime.spawn(watch_signals(control.clone()));
    let drained = CancellationToken::new();
    runtime.spawn(drain_deadline(control.shutdown.clone(), drained.clone()));
    runtime.spawn(retention::retention_sweeps(
        store.clone(),
        config.store.retention_days,
        telemetry.clone(),
        control.shutdown.clone(),
    ));
    // Pending deliveries from before a restart start going out at once.
    let mut notifier = Notifier::start(&config.alerting, &config.rules, store.clone(), telemetry.clone());

    let result = tail_loop(Arc::new(config), fingerprint, &opts, store, telemetry, &ready, &control, &mut notifier);
    drained.cancel();
    ready.set_draining();
    notifier.stop();

    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    http_stop.cancel();
    let _ = runtime.block_on(async { tokio::time::timeout(HTTP_GRACE, server).await });
    runtime.shutdown_timeout(HTTP_GRACE);
    result
}

fn load_config(opts: &RunOptions) -> anyhow::Result<Config> {
    let overrides = Overrides {
        listen: opts.listen,
        store_dir: opts.state_dir.clone(),
        workers: opts.workers,
        sources: opts
            .watch
            .iter()
            .map(|path| SourceSettings {
                name: path.display().to_string(),
                format: LineFormat::Named(detect_format(path)),
                path_semantics: Default::default(),
                timezone: Default::default(),
                input: SourceInput::File { path: path.display().to_string() },
            })
            .collect(),
    };
    let config = Config::load_with(&opts.config, &overrides).map_err(|e| anyhow::anyhow!("{e}"))?;
    anyhow::ensure!(
        !config.sources.is_empty(),
        "{}: no [[source]] configured and no --watch given",
        opts.config.display()
    );
    Ok(config)
}

/// The format whose parser accepts the file's first line; combined when unknown.
fn detect_format(path: &Path) -> LogFormat {
    let Ok(text) = std::fs::read(path) else { return LogFormat::Combined };
    let first = text.split(|&b| b == b'\n').next().unwrap_or(&[]);
    let fits = |f: LogFormat| parse_line(f, first).is_ok_and(|l| f == LogFormat::Common || l.user_agent().is_some());
    [LogFormat::Combined, LogFormat::VhostCombined, LogFormat::Common, LogFormat::VhostCommon]
        .into_iter()
        .find(|f| fits(*f))
        .unwrap_or(LogFormat::Combined)
}

/// Opens the store; only a corrupt one ([`crate::store::StoreError::is_corruption`]) is
/// renamed aside (kept for inspection), counted, and replaced by a fresh store. A store held
/// by another recwatch, owned by another user or not ours to write is an error: the daemon
/// exits at once and touches nothing.
fn open_or_quarantine(state_dir: &Path, telemetry: &Telemetry) -> anyhow::Result<Store> {
    let failure = match Store::open_state_dir(state_dir) {
        Ok(store) => return Ok(store),
        Err(e) if e.is_corruption() => e.to_string(),
        Err(e) => return Err(e.into()),
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let quarantine = state_dir.join(format!("db.corrupt-{now}"));
    std::fs::rename(state_dir.join("db"), &quarantine)
        .with_context(|| format!("cannot move the unreadable store aside ({failure})"))?;
    telemetry.store_quarantined(&failure, &quarantine);
    Ok(Store::open_state_dir(state_dir)?)
}

async fn watch_signals(control: Arc<Control>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) =
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()), signal(SignalKind::hangup()))
    else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM: stopping after a final flush"); control.request_stop(); }
            _ = int.recv() => { tracing::info!("SIGINT: stopping after a final flush"); control.request_stop(); }
            _ = hup.recv() => { tracing::info!("SIGHUP: reloading the configuration"); control.reload.store(true, Relaxed); }
        }
    }
}

impl Control {
    fn request_stop(&self) {
        self.shutdown.cancel();
    }
}

/// Once shutdown is asked for, gives the drain [`DRAIN_GRACE`]; past it the process exits.
async fn drain_deadline(shutdown: CancellationToken, drained: CancellationToken) {
    shutdown.cancelled().await;
    tokio::select! {
        _ = drained.cancelled() => {}
        _ = tokio::time::sleep(DRAIN_GRACE) => {
            tracing::error!(grace = ?DRAIN_GRACE, "the final flush did not finish in time: exiting; lines after the last durable checkpoint are read again at the next start");
            std::process::exit(1);
        }
    }
}

fn start_pipeline(
    config: &Config,
    sources: Vec<SourceSpec>,
    store: &Store,
    telemetry: &Arc<Telemetry>,
    control: &Control,
    pseudonyms: &Pseudonymizer,
) -> Pipeline {
    let options = PipelineOptions {
        workers: config.engine.workers,
        keep_scope: false,
        scope: Default::default(),
        on_store_error: OnStoreError::Retry,
        shutdown: control.shutdown.clone(),
        notify: Notify::Queue,
        pseudonyms: pseudonyms.clone(),
        ledger: true,
    };
    telemetry.register_rules(config.rules.iter().map(|r| (r.name.as_str(), r.severity.as_str())));
    Pipeline::start(config, sources, options, store.clone(), telemetry.clone())
}

/// Stored alerts whose episodes may continue: last seen within the rules' memory of the
/// newest stored alert (event time), at most as many as the workers track groups (the most
/// recently seen: more would be evicted at once), read without loading every alert.
/// Resolved ones are included: they come back closed, so re-read lines stay counted in them
/// and the next match opens a new alert.
fn open_episodes(store: &Store, config: &Config, memory_secs: i64) -> Vec<Alert> {
    let limit = config.engine.max_clients_per_worker.saturating_mul(config.engine.workers.max(1));
    store.recent(memory_secs, limit).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot read stored alerts to resume their episodes");
        Vec::new()
    })
}

/// The main loop: polls the files and sends barriers, watches the Kafka loops, reloads on
/// SIGHUP, pings the watchdog; at stop, a final checkpoint and the drain.
#[allow(clippy::too_many_arguments)]
fn tail_loop(
    config: Arc<Config>,
    mut fingerprint: Option<reload::Fingerprint>,
    opts: &RunOptions,
    store: Store,
    telemetry: Arc<Telemetry>,
    ready: &Readiness,
    control: &Arc<Control>,
    notifier: &mut Notifier,
) -> anyhow::Result<()> {
    let start = load_checkpoint(&store);
    let mut history = RewindHistory::new(&start);
    let pseudonyms = Pseudonymizer::resolve(config.pseudonyms.as_ref(), &config.store.dir)?;
    let mut running = Running::start(config, pseudonyms, start, &store, &telemetry, control);
    // Ready once state is loaded, the files were scanned (first poll: until then the lag
    // gauge knows no file and would say 0) and every Kafka consumer has joined its group.
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    tracing::info!(sources = running.config.sources.len(), workers = running.config.engine.workers, "running");
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0;
    let watchdog_every = Duration::from_micros(watchdog_usec / 2);
    let mut last_ping = Instant::now();
    let mut last_barrier = Instant::now();
    let mut sent_barrier = 0u64;
    let mut unsent = false;
    let mut unsent_bytes = 0usize;

    while !control.shutdown.is_cancelled() {
        for k in &mut running.kafka_loops {
            if k.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = k.join();
                // A consumer loop ends early only on an error (it stops when told to).
                return Err(result.err().unwrap_or_else(|| anyhow::anyhow!("Kafka source {} stopped", k.name)))
                    .with_context(|| format!("Kafka source {}", k.name));
            }
        }
        if control.reload.swap(false, Relaxed) {
            let (next, reloaded) =
                reload::reload(running, &mut fingerprint, &mut history, opts, &store, &telemetry, control, notifier)?;
            running = next;
            if reloaded {
                sent_barrier = 0;
            }
        }
        let Running { config, tailer, pipeline, kafka_loops, .. } = &mut running;
        let read_at = Instant::now();
        let polled = tailer.poll(&mut pipeline.ingest, POLL_BUDGET);
        ready.set_started(kafka_loops.iter().all(|k| k.status.joined.load(Relaxed)));
        unsent |= polled.bytes_read > 0;
        unsent_bytes = unsent_bytes.saturating_add(usize::try_from(polled.bytes_read).unwrap_or(usize::MAX));
        let barrier_due = last_barrier.elapsed() >= BARRIER_EVERY
            || !polled.more_pending
            || unsent_bytes >= POLL_BUDGET
            || pipeline.ingest.barrier_due();
        if unsent && barrier_due {
            let checkpoint = history.record(
                tailer.checkpoints(),
                pipeline.ingest.latest_event_time(),
                pipeline.longest_window_secs(),
            );
            sent_barrier = pipeline.ingest.barrier(serde_json::to_vec(&checkpoint)?, read_at);
            last_barrier = Instant::now();
            unsent = false;
            unsent_bytes = 0;
        }
        // /readyz and the watchdog ask the same question (Readiness::live): the store neither
        // failed nor stuck, every stage alive, handed-out work durable within its deadline.
        ready.work_pending(pipeline.durable_barrier() < sent_barrier);
        ready.stage_failure((!pipeline.is_alive()).then(|| "a pipeline stage has stopped".to_string()));
        if watchdog && last_ping.elapsed() >= watchdog_every {
            let kafka_alive = kafka_loops.iter_mut().all(|k| k.progressed());
            if kafka_alive && ready.live(&store).is_ok() {
                let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
                last_ping = Instant::now();
            }
        }
        if !polled.more_pending {
            tailer.wait(config.tail.poll_interval);
        }
    }
    let checkpoint = running.checkpoint(&mut history);
    running.pipeline.ingest.barrier(serde_json::to_vec(&checkpoint)?, Instant::now());
    let files = running
        .pipeline
        .finish()
        .context("final flush failed (lines after the last durable checkpoint are read again at the next start)");
    let kafka = stop_kafka_loops(running.kafka_loops);
    files?;
    kafka?;
    tracing::info!("stopped: alerts, checkpoints and offsets flushed");
    Ok(())
}

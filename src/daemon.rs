//! `recwatch run`: the long-running process. Owns the threads and their lifecycle: the
//! tail loop (tailer → pipeline → barriers), one consumer loop per Kafka source (consumer →
//! its own pipeline → barriers → offsets stored once durable), the HTTP server, signals
//! (SIGTERM/SIGINT stop with a final flush, SIGHUP reloads), systemd notifications (READY,
//! WATCHDOG, STOPPING), the notifier threads (restarted with a reloaded config), and the
//! quarantine of an unreadable store. Never parses, detects or stores by itself.
//!
//! File sources and Kafka sources run side by side: the main thread follows the files into
//! one pipeline whose barriers carry the file checkpoint; each Kafka source is a thread with
//! a pipeline of its own whose barriers carry no checkpoint (Kafka keeps the offsets) and
//! only say when offsets may be stored. All pipelines write to the one store; alert ids do
//! not depend on the pipeline, so the same client seen in two places updates one alert.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;

use crate::alerting::Notifier;
use crate::config::{Config, Overrides};
use crate::http::{self, HttpState, Readiness};
use crate::parse::{parse_line, LogFormat, MAX_LINE_LEN};
use crate::pipeline::{Ingest, OnStoreError, Pipeline, PipelineOptions, SourceSpec};
use crate::privacy::Pseudonymizer;
use crate::source::kafka::{KafkaSink, KafkaSource, Rebalance};
use crate::source::tail::{FileCheckpoint, LineSink, TailOptions, TailSource, Tailer};
use crate::source::{SourceInput, SourceSettings};
use crate::store::{Notify, Store};
use crate::telemetry::Telemetry;

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

/// Bytes read per tail poll before a barrier is sent: bounds the work a checkpoint covers.
const POLL_BUDGET: usize = 4 << 20;
/// A barrier at most this often while lines keep arriving (and after every quiet poll).
const BARRIER_EVERY: Duration = Duration::from_millis(10);
/// Grace for the HTTP server to finish in-flight requests at shutdown.
const HTTP_GRACE: Duration = Duration::from_secs(2);
/// Kafka: messages handed to the pipeline per poll round before a barrier is considered.
const KAFKA_POLL_BUDGET: usize = 65_536;
/// Kafka: how long one poll waits for a message when the topic is quiet.
const KAFKA_POLL_WAIT: Duration = Duration::from_millis(100);
/// Kafka: how long a revoke waits for the revoked partitions' work to become durable (so
/// their offsets can be committed before the next owner starts) before dropping it.
const KAFKA_REVOKE_DRAIN: Duration = Duration::from_secs(5);

/// Flags set by the signal task, read by the tail loop and the store stage.
#[derive(Default)]
struct Control {
    stop: AtomicBool,
    reload: AtomicBool,
    /// Shared with every pipeline's store stage: set with `stop`, so a store that cannot
    /// write (full disk) gives up instead of blocking the shutdown.
    stop_retrying: Arc<AtomicBool>,
}

pub fn run(opts: RunOptions) -> anyhow::Result<()> {
    let config = load_config(&opts)?;
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
        Some(f) => {
            let t =
                std::fs::read_to_string(f).with_context(|| format!("cannot read API token file {}", f.display()))?;
            let t = t.trim();
            anyhow::ensure!(t.len() >= 16, "API token in {} is shorter than 16 characters", f.display());
            Some(Arc::<str>::from(t))
        }
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
    tracing::info!(listen = %listener.local_addr()?, "serving /metrics, /healthz, /readyz, /api/v1/alerts");
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let state = HttpState { store: store.clone(), telemetry: telemetry.clone(), api_token, ready: ready.clone() };
    let limits = http::Limits { max_connections: config.http.max_connections, ..http::Limits::default() };
    let server = runtime.spawn(http::serve_with(listener, state, limits, async move {
        let _ = http_stopped.await;
    }));
    runtime.spawn(watch_signals(control.clone()));
    runtime.spawn(retention_sweeps(store.clone(), config.store.retention_days, telemetry.clone()));
    // Pending deliveries from before a restart start going out at once.
    let mut notifier = Notifier::start(&config.alerting, &config.rules, store.clone(), telemetry.clone());

    let result = tail_loop(Arc::new(config), &opts, store, telemetry, &ready, &control, &mut notifier);
    ready.set_draining();
    notifier.stop();

    let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    let _ = stop_http.send(());
    let _ = runtime.block_on(async { tokio::time::timeout(HTTP_GRACE, server).await });
    runtime.shutdown_timeout(HTTP_GRACE);
    result
}

/// The retention sweep runs each time its clock has advanced this much.
const RETENTION_SWEEP_EVERY_SECS: i64 = 3600;

/// Removes alerts last seen more than `retention_days` ago. Its clock is the wall clock, but
/// never later than the newest log event read (so replaying old logs into a store does not
/// expire them on the spot); it sweeps whenever that clock has moved an hour since the last
/// sweep (hourly when live; at once when logs jump ahead).
async fn retention_sweeps(store: Store, retention_days: u32, telemetry: Arc<Telemetry>) {
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut last_sweep = i64::MIN;
    loop {
        check.tick().await;
        let newest_event = telemetry.newest_event_unix.load(Relaxed);
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let clock = wall.min(newest_event);
        if newest_event == 0 || clock < last_sweep.saturating_add(RETENTION_SWEEP_EVERY_SECS) {
            continue;
        }
        last_sweep = clock;
        let cutoff = clock - i64::from(retention_days) * 86_400;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.remove_last_seen_before(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                telemetry.alerts_expired.fetch_add(n as u64, Relaxed);
                tracing::info!(removed = n, retention_days, "retention sweep removed expired alerts");
            }
            Ok(Err(e)) => {
                telemetry.store_errors.fetch_add(1, Relaxed);
                tracing::warn!(error = %e, "retention sweep failed; retried in an hour");
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep task failed"),
        }
    }
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
                format: detect_format(path),
                path_semantics: Default::default(),
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
    telemetry.store_quarantines.fetch_add(1, Relaxed);
    tracing::error!(error = %failure, moved_to = %quarantine.display(), "alert store unreadable: quarantined it and started a fresh one; sources are read again from the start");
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
        self.stop.store(true, Relaxed);
        self.stop_retrying.store(true, Relaxed);
    }
}

impl LineSink for Ingest {
    fn line(&mut self, source: u16, line: &[u8]) {
        Ingest::line(self, source, line);
    }
    fn too_long(&mut self, _source: u16) {
        Ingest::too_long(self);
    }
    fn partial_line(&mut self, source: u16, line: &[u8]) {
        // Flagged and counted by the tailer; still parsed: a cut line may hold a real fetch.
        Ingest::line(self, source, line);
    }
}

/// The file sources, indexed (in tail checkpoints and events) by their position among file
/// sources: adding a Kafka source does not move them.
fn file_sources(config: &Config) -> Vec<(&SourceSettings, &str)> {
    config.sources.iter().filter_map(|s| s.path().map(|p| (s, p))).collect()
}

fn tail_sources(config: &Config) -> Vec<TailSource> {
    file_sources(config)
        .into_iter()
        .enumerate()
        .map(|(i, (_, path))| TailSource { index: i as u16, pattern: path.to_string() })
        .collect()
}

fn tail_options(config: &Config) -> TailOptions {
    TailOptions {
        poll_interval: config.tail.poll_interval,
        use_inotify: config.tail.inotify,
        max_line_len: MAX_LINE_LEN,
        read_chunk: 256 << 10,
        rotated_drain: config.tail.rotated_drain,
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
        on_store_error: OnStoreError::Retry,
        stop_retrying: control.stop_retrying.clone(),
        notify: Notify::Queue,
        pseudonyms: pseudonyms.clone(),
    };
    telemetry.register_rules(&config.rules);
    Pipeline::start(config, sources, options, store.clone(), telemetry.clone())
}

/// What the daemon persists with every barrier.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
struct DaemonCheckpoint {
    /// Where every followed file was when the barrier was sent: all lines before are done.
    files: Vec<FileCheckpoint>,
    /// Where a restart resumes: far enough back (event time) that every rule window is
    /// rebuilt. Lines between `rewind` and `files` are read twice; their alerts have the same
    /// ids (episodes are resumed from the store), so this costs counts, not duplicates.
    rewind: Vec<FileCheckpoint>,
    /// Newest sensitive event time at `files`.
    event_time: i64,
}

fn load_checkpoint(store: &Store) -> DaemonCheckpoint {
    match store.load_checkpoint() {
        Ok(None) => DaemonCheckpoint::default(),
        Ok(Some(bytes)) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::error!(error = %e, "source checkpoint unreadable: sources are read again from the start (alerts are idempotent)");
            DaemonCheckpoint::default()
        }),
        Err(e) => {
            tracing::error!(error = %e, "cannot read the source checkpoint: sources are read again from the start");
            DaemonCheckpoint::default()
        }
    }
}

/// Recent checkpoints, to pick the rewind point of the next one.
struct RewindHistory {
    /// (newest event time, wall-clock time, files), oldest first; the front is the current
    /// rewind point.
    entries: std::collections::VecDeque<(i64, Instant, Vec<FileCheckpoint>)>,
}

impl RewindHistory {
    fn new(start: &DaemonCheckpoint) -> RewindHistory {
        let mut entries = std::collections::VecDeque::new();
        entries.push_back((i64::MIN, Instant::now(), start.rewind.clone()));
        RewindHistory { entries }
    }

    /// Records a checkpoint and returns the persisted form with its rewind point: the newest
    /// recorded position whose event time is at least `window` before `event_time`, or that
    /// was recorded over two windows ago by the wall clock (quiet live logs).
    fn record(&mut self, files: Vec<FileCheckpoint>, event_time: i64, window: i64) -> DaemonCheckpoint {
        let wall_window = Duration::from_secs(2 * window.max(1) as u64);
        let qualifies = |(t, at, _): &(i64, Instant, Vec<FileCheckpoint>)| {
            *t <= event_time.saturating_sub(window) || at.elapsed() >= wall_window
        };
        while self.entries.len() > 1 && qualifies(&self.entries[1]) {
            self.entries.pop_front();
        }
        // Bound the history: at most one entry per 100 ms of wall time is kept.
        let recent = self.entries.back().is_some_and(|(_, at, _)| at.elapsed() < Duration::from_millis(100));
        if !recent || self.entries.len() == 1 {
            self.entries.push_back((event_time, Instant::now(), files.clone()));
        }
        // Files the rewind point does not know appeared after it: they rewind to their start.
        let mut rewind = self.entries[0].2.clone();
        for f in &files {
            if !rewind.iter().any(|r| (r.source, r.dev, r.ino) == (f.source, f.dev, f.ino)) {
                rewind.push(FileCheckpoint { offset: 0, ..f.clone() });
            }
        }
        DaemonCheckpoint { rewind, files, event_time }
    }
}

/// Stored alerts whose episodes may continue: last seen within the rules' memory of the
/// newest stored alert (event time). Resolved ones are included: they come back closed, so
/// re-read lines stay counted in them and the next match opens a new alert.
fn open_episodes(store: &Store, memory_secs: i64) -> Vec<crate::detect::alert::Alert> {
    let all = store.list(&crate::store::AlertFilter::default()).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot list stored alerts to resume their episodes");
        Vec::new()
    });
    let newest = all.iter().map(|a| a.last_seen).max().unwrap_or(0);
    all.into_iter().filter(|a| a.last_seen >= newest.saturating_sub(memory_secs)).collect()
}

fn file_pipeline(
    config: &Config,
    store: &Store,
    telemetry: &Arc<Telemetry>,
    control: &Control,
    pseudonyms: &Pseudonymizer,
) -> Pipeline {
    let specs = file_sources(config)
        .iter()
        .map(|(s, _)| SourceSpec { name: s.name.clone(), format: s.format, path_semantics: s.path_semantics })
        .collect();
    start_pipeline(config, specs, store, telemetry, control, pseudonyms)
}

fn tail_loop(
    mut config: Arc<Config>,
    opts: &RunOptions,
    store: Store,
    telemetry: Arc<Telemetry>,
    ready: &Readiness,
    control: &Arc<Control>,
    notifier: &mut Notifier,
) -> anyhow::Result<()> {
    let start = load_checkpoint(&store);
    let mut history = RewindHistory::new(&start);
    let mut tailer = Tailer::new(tail_sources(&config), tail_options(&config), start.rewind.clone(), telemetry.clone());
    let mut pseudonyms = Pseudonymizer::resolve(config.pseudonyms.as_ref(), &config.store.dir)?;
    let mut pipeline = file_pipeline(&config, &store, &telemetry, control, &pseudonyms);
    pipeline.resume(open_episodes(&store, pipeline.memory_secs()));
    pipeline.ingest.seed_latest_event_time(start.event_time);
    let mut kafka_loops = start_kafka_loops(&config, &store, &telemetry, control, &pseudonyms);
    // Ready once state is loaded and every Kafka consumer has joined its group.
    ready.set_started(kafka_loops.is_empty());
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    tracing::info!(sources = config.sources.len(), workers = config.engine.workers, "running");
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0;
    let watchdog_every = Duration::from_micros(watchdog_usec / 2);
    let mut last_ping = Instant::now();
    let mut last_barrier = Instant::now();
    let mut sent_barrier = 0u64;
    let mut unsent = false;

    while !control.stop.load(Relaxed) {
        for k in &mut kafka_loops {
            if k.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = k.join();
                // A consumer loop ends early only on an error (it stops when told to).
                return Err(result.err().unwrap_or_else(|| anyhow::anyhow!("Kafka source {} stopped", k.name)))
                    .with_context(|| format!("Kafka source {}", k.name));
            }
        }
        ready.set_started(kafka_loops.iter().all(|k| k.status.joined.load(Relaxed)));
        if control.reload.swap(false, Relaxed) {
            let reloaded = load_config(opts).and_then(|new| {
                let key = Pseudonymizer::resolve(new.pseudonyms.as_ref(), &new.store.dir)?;
                Ok((new, key))
            });
            match reloaded {
                Err(e) => {
                    telemetry.config_reload_failures.fetch_add(1, Relaxed);
                    tracing::error!(error = %e, "reload failed: keeping the running configuration");
                }
                Ok((new, key)) => {
                    let event_time = pipeline.ingest.latest_event_time();
                    let checkpoint = history.record(tailer.checkpoints(), event_time, pipeline.longest_window_secs());
                    pipeline.ingest.barrier(serde_json::to_vec(&checkpoint)?, Instant::now());
                    pipeline.finish().context("draining the pipeline for a reload")?;
                    // Kafka consumers stop with a final commit and rejoin with the new config.
                    stop_kafka_loops(std::mem::take(&mut kafka_loops))?;
                    config = Arc::new(new);
                    notifier.stop();
                    *notifier = Notifier::start(&config.alerting, &config.rules, store.clone(), telemetry.clone());
                    pseudonyms = key;
                    // Like a restart: re-read from the rewind point so the new workers rebuild
                    // every window; resumed episodes keep re-read lines from counting twice.
                    tailer =
                        Tailer::new(tail_sources(&config), tail_options(&config), checkpoint.rewind, telemetry.clone());
                    pipeline = file_pipeline(&config, &store, &telemetry, control, &pseudonyms);
                    pipeline.resume(open_episodes(&store, pipeline.memory_secs()));
                    pipeline.ingest.seed_latest_event_time(event_time);
                    kafka_loops = start_kafka_loops(&config, &store, &telemetry, control, &pseudonyms);
                    sent_barrier = 0;
                    telemetry.config_reloads.fetch_add(1, Relaxed);
                    tracing::info!(
                        rules = config.rules.len(),
                        sources = config.sources.len(),
                        "configuration reloaded"
                    );
                }
            }
        }
        let read_at = Instant::now();
        let polled = tailer.poll(&mut pipeline.ingest, POLL_BUDGET);
        unsent |= polled.bytes_read > 0;
        if unsent && (last_barrier.elapsed() >= BARRIER_EVERY || !polled.more_pending) {
            let checkpoint = history.record(
                tailer.checkpoints(),
                pipeline.ingest.latest_event_time(),
                pipeline.longest_window_secs(),
            );
            sent_barrier = pipeline.ingest.barrier(serde_json::to_vec(&checkpoint)?, read_at);
            last_barrier = Instant::now();
            unsent = false;
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
    let checkpoint =
        history.record(tailer.checkpoints(), pipeline.ingest.latest_event_time(), pipeline.longest_window_secs());
    pipeline.ingest.barrier(serde_json::to_vec(&checkpoint)?, Instant::now());
    let files = pipeline
        .finish()
        .context("final flush failed (lines after the last durable checkpoint are read again at the next start)");
    let kafka = stop_kafka_loops(kafka_loops);
    files?;
    kafka?;
    tracing::info!("stopped: alerts, checkpoints and offsets flushed");
    Ok(())
}

/// What a Kafka consumer loop shares with the main loop.
#[derive(Default)]
struct KafkaStatus {
    /// The consumer has joined its group (first assignment received).
    joined: AtomicBool,
    /// Loop iterations, for the watchdog: a loop that stops counting is wedged.
    beats: std::sync::atomic::AtomicU64,
}

/// A running Kafka consumer loop (one per Kafka source).
struct KafkaLoop {
    name: String,
    stop: Arc<AtomicBool>,
    status: Arc<KafkaStatus>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    beats_seen: u64,
}

impl KafkaLoop {
    /// Waits for the thread; its error, if it failed.
    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            None => Ok(()),
            Some(t) => t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the consumer thread panicked"))),
        }
    }

    /// Whether the loop went round since the last call (and its thread is still there).
    fn progressed(&mut self) -> bool {
        let beats = self.status.beats.load(Relaxed);
        let moved = beats != self.beats_seen;
        self.beats_seen = beats;
        moved && self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

fn start_kafka_loops(
    config: &Arc<Config>,
    store: &Store,
    telemetry: &Arc<Telemetry>,
    control: &Arc<Control>,
    pseudonyms: &Pseudonymizer,
) -> Vec<KafkaLoop> {
    let mut loops = Vec::new();
    for source in config.sources.iter().filter(|s| matches!(s.input, SourceInput::Kafka(_))) {
        let stop = Arc::new(AtomicBool::new(false));
        let status = Arc::new(KafkaStatus::default());
        let (config, source_config, store, telemetry, control, stop_flag, status_flag, pseudonyms) = (
            config.clone(),
            source.clone(),
            store.clone(),
            telemetry.clone(),
            control.clone(),
            stop.clone(),
            status.clone(),
            pseudonyms.clone(),
        );
        let thread = std::thread::Builder::new()
            .name(format!("kafka-{}", loops.len()))
            .spawn(move || {
                let io =
                    KafkaLoopIo { store: &store, telemetry: &telemetry, control: &control, pseudonyms: &pseudonyms };
                kafka_loop(&source_config, &config, io, &stop_flag, &status_flag)
            })
            .expect("spawning a Kafka consumer thread");
        loops.push(KafkaLoop { name: source.name.clone(), stop, status, thread: Some(thread), beats_seen: 0 });
    }
    loops
}

/// Tells every loop to stop, waits for their final commits; the first error, if any.
fn stop_kafka_loops(mut loops: Vec<KafkaLoop>) -> anyhow::Result<()> {
    for k in &loops {
        k.stop.store(true, Relaxed);
    }
    let mut first_error = None;
    for k in &mut loops {
        if let Err(e) = k.join() {
            tracing::error!(source = %k.name, error = %format!("{e:#}"), "Kafka source failed");
            first_error.get_or_insert(e.context(format!("Kafka source {}", k.name)));
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Runs the consumer loop of the Kafka source `source_name` of `config` until `stop` is set,
/// then flushes and commits: exactly what `recwatch run` runs per Kafka source, without the
/// rest of the daemon (for benchmarks, and for embedding).
pub fn run_kafka_source(
    config: &Config,
    source_name: &str,
    store: &Store,
    telemetry: &Arc<Telemetry>,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let source = config
        .sources
        .iter()
        .find(|s| s.name == source_name && matches!(s.input, SourceInput::Kafka(_)))
        .with_context(|| format!("no Kafka source named {source_name:?} in {}", config.file.display()))?;
    let pseudonyms = Pseudonymizer::resolve(config.pseudonyms.as_ref(), &config.store.dir)?;
    let io = KafkaLoopIo { store, telemetry, control: &Control::default(), pseudonyms: &pseudonyms };
    kafka_loop(source, config, io, stop, &KafkaStatus::default())
}

/// Lines of consumed messages into a pipeline. An envelope's `host:file` becomes the
/// alert's source (registered on first sight, bounded); otherwise the Kafka source's name.
struct KafkaIngest<'a> {
    ingest: &'a mut Ingest,
    format: LogFormat,
}

impl KafkaSink for KafkaIngest<'_> {
    fn line(&mut self, origin: &str, line: &[u8]) {
        let source = if origin.is_empty() { 0 } else { self.ingest.source_named(origin, self.format).unwrap_or(0) };
        self.ingest.line(source, line);
    }
    fn too_long(&mut self) {
        self.ingest.too_long();
    }
}

/// One Kafka source: consume → pipeline → barrier → store offsets once durable; rebalances
/// drain the revoked partitions' work first. Returns after a final synchronous commit when
/// `stop` (or the daemon's stop) is set; an error only when the consumer cannot be created.
/// What a consumer loop shares with the rest of the daemon.
struct KafkaLoopIo<'a> {
    store: &'a Store,
    telemetry: &'a Arc<Telemetry>,
    control: &'a Control,
    pseudonyms: &'a Pseudonymizer,
}

fn kafka_loop(
    source: &SourceSettings,
    config: &Config,
    io: KafkaLoopIo<'_>,
    stop: &AtomicBool,
    status: &KafkaStatus,
) -> anyhow::Result<()> {
    let KafkaLoopIo { store, telemetry, control, pseudonyms } = io;
    let SourceInput::Kafka(kafka) = &source.input else { anyhow::bail!("{} is not a Kafka source", source.name) };
    let mut consumer = KafkaSource::connect(kafka, telemetry.kafka_source(&source.name))?;
    let spec = SourceSpec { name: source.name.clone(), format: source.format, path_semantics: source.path_semantics };
    let mut pipeline = start_pipeline(config, vec![spec], store, telemetry, control, pseudonyms);
    pipeline.resume(open_episodes(store, pipeline.memory_secs()));
    tracing::info!(source = %source.name, topics = ?kafka.topics, group = %kafka.group_id, "consuming");
    let mut last_marker = Instant::now();
    // When the oldest message not yet under a barrier was read (detection latency).
    let mut unsealed_since: Option<Instant> = None;
    while !stop.load(Relaxed) && !control.stop.load(Relaxed) {
        status.beats.fetch_add(1, Relaxed);
        while let Some(rebalance) = consumer.take_rebalance() {
            match rebalance {
                Rebalance::Assign(partitions) => consumer.assign(partitions),
                Rebalance::Revoke(partitions) => {
                    drain_for_revoke(&mut consumer, &mut pipeline, unsealed_since.take());
                    consumer.revoke(partitions);
                }
            }
            status.joined.store(consumer.joined(), Relaxed);
        }
        let polled_at = Instant::now();
        let mut sink = KafkaIngest { ingest: &mut pipeline.ingest, format: source.format };
        let handed = consumer.poll(&mut sink, KAFKA_POLL_WAIT, KAFKA_POLL_BUDGET);
        if handed > 0 {
            unsealed_since.get_or_insert(polled_at);
        }
        let quiet = handed < KAFKA_POLL_BUDGET;
        if consumer.has_unsealed() && (quiet || last_marker.elapsed() >= BARRIER_EVERY) {
            let seq = pipeline.ingest.durable_marker(unsealed_since.take().unwrap_or(polled_at));
            consumer.seal(seq);
            last_marker = Instant::now();
        }
        consumer.store_durable(pipeline.durable_barrier());
    }
    if consumer.has_unsealed() {
        let seq = pipeline.ingest.durable_marker(unsealed_since.unwrap_or_else(Instant::now));
        consumer.seal(seq);
    }
    pipeline.finish().with_context(|| {
        format!("final flush of Kafka source {} failed (its uncommitted messages are read again)", source.name)
    })?;
    // Everything handed out is durable now: store it all and commit before leaving the group.
    consumer.store_durable(u64::MAX);
    if let Err(e) = consumer.commit_sync() {
        tracing::warn!(source = %source.name, error = %e, "final offset commit failed: messages since the last commit are read again");
    }
    consumer.close();
    tracing::info!(source = %source.name, "Kafka consumer stopped after a final commit");
    Ok(())
}

/// Before partitions are given up: puts everything read under a barrier, waits (bounded) for
/// it to be durable, stores and commits those offsets, so the next owner starts right after
/// our work. What is not durable in time stays uncommitted and is read again by that owner.
fn drain_for_revoke(consumer: &mut KafkaSource, pipeline: &mut Pipeline, unsealed_since: Option<Instant>) {
    if consumer.has_unsealed() {
        let seq = pipeline.ingest.durable_marker(unsealed_since.unwrap_or_else(Instant::now));
        consumer.seal(seq);
    }
    let target = consumer.newest_sealed();
    let deadline = Instant::now() + KAFKA_REVOKE_DRAIN;
    while pipeline.durable_barrier() < target && Instant::now() < deadline && pipeline.is_alive() {
        std::thread::sleep(Duration::from_millis(1));
    }
    consumer.store_durable(pipeline.durable_barrier());
    if !consumer.assignment_lost() {
        if let Err(e) = consumer.commit_sync() {
            tracing::warn!(error = %e, "offset commit before a revoke failed: the next owner re-reads from the last commit");
        }
    }
}

//! Wires the stages: lines → parse → classify → route by group hash → detection workers →
//! store. Owns the threads, the bounded queues between them, batch recycling and barriers.
//! The per-line path (`Ingest::line`) takes no lock, makes no syscall and allocates nothing
//! once warm: events go into recycled per-worker batches; queues are bounded, so a slow
//! store pauses reading instead of growing memory.
//!
//! Durability: [`Ingest::barrier`] sends a marker with an opaque checkpoint through every
//! worker; the store stage writes the checkpoint in the same flush as every alert caused by
//! the lines before the marker, and only then reports it durable. So a checkpoint never
//! runs ahead of the alerts it covers. In the daemon the same write queues each changed
//! alert for the notifiers ([`Notify::Queue`]).

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::classify::client::{unified, Networks};
use crate::classify::path::{PathSemantics, SensitivePaths};
use crate::config::Config;
use crate::detect::alert::Alert;
use crate::detect::event::{Event, EventBatch, Route};
use crate::detect::worker::{ClientScope, DetectConfig, Worker, WorkerStats};
use crate::parse::{self, LogFormat, SkipReason};
use crate::privacy::Pseudonymizer;
use crate::source::framing::{frame_lines, Frame, LineChunks};
use crate::store::{Notify, Store, StoreError};
use crate::telemetry::{LineTally, Telemetry};

/// Batches queued per worker before reading pauses.
const WORKER_QUEUE: usize = 64;
/// Messages queued for the store before workers pause.
const STORE_QUEUE: usize = 256;

/// One input stream the pipeline reads: its name (what alerts show as `source`), format and
/// how its server resolves paths.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: String,
    pub format: LogFormat,
    pub path_semantics: PathSemantics,
}

/// What the store stage does when a write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStoreError {
    /// Stop and report the error (replay: the user sees it at once).
    Fail,
    /// Count it, wait, and retry the same write; meanwhile queues fill and reading pauses
    /// (daemon: a full disk must not lose alerts or corrupt state).
    Retry,
}

/// A marker through the pipeline; `checkpoint` is written once everything before it is.
pub struct Barrier {
    pub seq: u64,
    /// When the lines before it were read: the start of the detection-latency measurement.
    pub read_at: Instant,
    /// None for a source that keeps its position elsewhere (Kafka offsets live in the
    /// broker): the barrier then only says when the alerts before it are durable.
    pub checkpoint: Option<Vec<u8>>,
}

/// Sources a pipeline accepts in all, configured ones included: registered names (Kafka
/// envelopes' host and file) beyond it fall back to the reading source's own name.
pub const MAX_SOURCES: usize = 1024;

enum WorkerMsg {
    Events(EventBatch),
    Barrier(Arc<Barrier>),
    /// Stored alerts whose episodes continue (after a restart).
    Resume(Vec<Alert>),
    /// A source registered after the start, next index (sent before any of its events).
    AddSource(String),
}

enum StoreMsg {
    Alerts(Vec<Alert>),
    Barrier(Arc<Barrier>),
}

/// What a finished run produced.
pub struct RunOutcome {
    /// Latest state of every alert opened or updated in this run, as stored.
    pub alerts: Vec<Alert>,
    /// Per-client totals (only when the scope was kept).
    pub clients: Vec<(IpAddr, ClientScope)>,
    pub workers: Vec<WorkerStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a pipeline thread stopped unexpectedly: {0}")]
    Thread(String),
}

/// The parsing side: owned by the reading thread.
pub struct Ingest {
    paths: Arc<SensitivePaths>,
    networks: Arc<Networks>,
    sources: Vec<SourceSpec>,
    /// Index of every source by name, for [`Ingest::source_named`].
    source_index: HashMap<String, u16, ahash::RandomState>,
    /// Reused buffer for the normalised path of the current line.
    path_scratch: Vec<u8>,
    /// Reused buffer for the unescaped user agent of the current line.
    ua_scratch: Vec<u8>,
    /// Last timestamp text and its value: consecutive lines mostly share a second.
    time_cache: ([u8; 32], usize, i64),
    /// Keys the distinct-path hash per process, so crafted paths cannot aim for collisions.
    path_seed: u64,
    batches: Vec<EventBatch>,
    to_workers: Vec<Sender<WorkerMsg>>,
    recycled: Receiver<EventBatch>,
    has_source_rules: bool,
    tally: LineTally,
    telemetry: Arc<Telemetry>,
    next_barrier: u64,
    /// Newest event time of a sensitive line so far (Unix seconds; 0 = none yet).
    latest_event_time: i64,
    /// Set when a downstream stage has gone away; lines are then counted but not routed.
    downstream_failed: bool,
    /// Parser threads of [`Pipeline::ingest_parallel`] collect full batches here (with their
    /// worker) instead of sending them, so the batches can be forwarded in input order.
    collected: Option<Vec<(usize, EventBatch)>>,
}

/// One chunk parsed by a parser thread, waiting to be forwarded in input order.
struct ParsedChunk {
    seq: u64,
    /// The chunk's buffer, returned for reuse.
    chunk: Vec<u8>,
    batches: Vec<(usize, EventBatch)>,
    lines: u64,
    latest: i64,
}

/// What a worker thread hands back when its queue closes.
type WorkerResult = (WorkerStats, HashMap<IpAddr, ClientScope, ahash::RandomState>);

pub struct Pipeline {
    pub ingest: Ingest,
    workers: Vec<JoinHandle<WorkerResult>>,
    store: JoinHandle<Result<Vec<Alert>, StoreError>>,
    /// Sequence number of the last barrier made durable (0 = none).
    durable: Arc<AtomicU64>,
    detect: Arc<DetectConfig>,
}

/// How a pipeline runs.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub workers: usize,
    /// Keep per-client totals for the scope report (replay).
    pub keep_scope: bool,
    pub on_store_error: OnStoreError,
    /// Set at shutdown: a failing store stops retrying, so a full disk cannot hold the
    /// process past its stop timeout (unflushed lines are read again at the next start).
    pub stop_retrying: Arc<std::sync::atomic::AtomicBool>,
    /// Whether stored alert changes are queued for the notifiers (daemon) or not (replay).
    pub notify: Notify,
    /// Keys the pseudonyms of personnummer and phone numbers in alert samples.
    pub pseudonyms: Pseudonymizer,
}

impl Pipeline {
    /// Starts the worker and store threads. `config` gives rules and tables; `sources` are
    /// indexed by the `source` argument of [`Ingest::line`].
    pub fn start(
        config: &Config,
        sources: Vec<SourceSpec>,
        options: PipelineOptions,
        store: Store,
        telemetry: Arc<Telemetry>,
    ) -> Pipeline {
        let workers = options.workers.max(1);
        let detect = Arc::new(DetectConfig::new(
            config.rules.clone(),
            config.classify.partner_names(),
            sources.iter().map(|s| s.name.clone()).collect(),
            config.engine.client_idle_secs,
            config.engine.max_clients_per_worker,
            options.keep_scope,
            options.pseudonyms.clone(),
        ));
        let (to_store, store_rx) = bounded::<StoreMsg>(STORE_QUEUE);
        let (recycle_tx, recycled) = unbounded::<EventBatch>();
        let mut to_workers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = bounded::<WorkerMsg>(WORKER_QUEUE);
            to_workers.push(tx);
            let (detect, to_store, recycle_tx, telemetry) =
                (detect.clone(), to_store.clone(), recycle_tx.clone(), telemetry.clone());
            let resolved = store.resolved_feed().subscribe();
            let handle = std::thread::Builder::new()
                .name(format!("detect-{i}"))
                .spawn(move || run_worker(detect, rx, resolved, to_store, recycle_tx, telemetry))
                .expect("spawning a detection thread");
            handles.push(handle);
        }
        drop(to_store);
        let durable = Arc::new(AtomicU64::new(0));
        let store_stage = StoreStage {
            store,
            workers,
            on_error: options.on_store_error,
            stop_retrying: options.stop_retrying.clone(),
            notify: options.notify,
            telemetry: telemetry.clone(),
            durable: durable.clone(),
        };
        let store_handle = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || store_stage.run(store_rx))
            .expect("spawning the store thread");
        let source_index = sources.iter().enumerate().map(|(i, s)| (s.name.clone(), i as u16)).collect();
        let ingest = Ingest {
            paths: config.classify.paths.clone(),
            networks: config.classify.networks.clone(),
            sources,
            source_index,
            path_scratch: Vec::with_capacity(4096),
            ua_scratch: Vec::with_capacity(1024),
            time_cache: ([0; 32], 0, 0),
            path_seed: std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8),
            batches: (0..workers).map(|_| EventBatch::with_capacity()).collect(),
            to_workers,
            recycled,
            has_source_rules: detect.has_source_rules(),
            tally: LineTally::default(),
            telemetry,
            next_barrier: 1,
            latest_event_time: 0,
            downstream_failed: false,
            collected: None,
        };
        Pipeline { ingest, workers: handles, store: store_handle, durable, detect }
    }

    /// Reads `chunks` (whole lines, see [`LineChunks`]) to their end, parsing them on
    /// `parsers` threads while this thread reads; each chunk's events reach the workers in
    /// input order, so every window sees exactly what a single parser would give it.
    /// Returns the lines read; on a read error, the lines before it were processed.
    pub fn ingest_parallel<R: std::io::Read>(
        &mut self,
        source: u16,
        chunks: &mut LineChunks<R>,
        parsers: usize,
    ) -> (u64, std::io::Result<()>) {
        let parsers = parsers.max(1);
        // Chunks in flight: enough to keep every parser busy while results wait for order.
        let in_flight_max = 2 * parsers;
        let (job_tx, job_rx) = bounded::<(u64, Vec<u8>, u64)>(in_flight_max);
        let (done_tx, done_rx) = bounded::<ParsedChunk>(in_flight_max);
        let mut lines = 0u64;
        let mut result = Ok(());
        std::thread::scope(|scope| {
            for _ in 0..parsers {
                let (job_rx, done_tx, mut parser) = (job_rx.clone(), done_tx.clone(), self.ingest.parser());
                scope.spawn(move || {
                    for (seq, chunk, too_long) in job_rx {
                        let before = parser.tally.lines;
                        for _ in 0..too_long {
                            parser.too_long();
                        }
                        frame_lines(&chunk, parse::MAX_LINE_LEN, |frame| match frame {
                            Frame::Line(line) => parser.line(source, line),
                            Frame::TooLong => parser.too_long(),
                        });
                        let lines = parser.tally.lines - before;
                        parser.flush();
                        let batches = parser.collected.replace(Vec::new()).unwrap_or_default();
                        let latest = parser.latest_event_time;
                        if done_tx.send(ParsedChunk { seq, chunk, batches, lines, latest }).is_err() {
                            break;
                        }
                    }
                });
            }
            drop((job_rx, done_tx));
            let mut next_to_send = 0u64;
            let mut next_to_forward = 0u64;
            let mut waiting: BTreeMap<u64, ParsedChunk> = BTreeMap::new();
            let mut spare: Vec<Vec<u8>> = Vec::new();
            let mut reading = true;
            loop {
                // Read and hand out chunks while there is room, else take a parsed one back.
                if reading && next_to_send - next_to_forward < in_flight_max as u64 {
                    let mut buf = spare.pop().unwrap_or_default();
                    match chunks.next_chunk(&mut buf) {
                        Ok(Some(too_long)) => {
                            let _ = job_tx.send((next_to_send, buf, too_long));
                            next_to_send += 1;
                        }
                        Ok(None) => reading = false,
                        Err(e) => {
                            result = Err(e);
                            reading = false;
                        }
                    }
                    continue;
                }
                if next_to_forward == next_to_send {
                    break;
                }
                let Ok(parsed) = done_rx.recv() else { break };
                waiting.insert(parsed.seq, parsed);
                while let Some(parsed) = waiting.remove(&next_to_forward) {
                    lines += parsed.lines;
                    self.ingest.latest_event_time = self.ingest.latest_event_time.max(parsed.latest);
                    for (worker, batch) in parsed.batches {
                        if self.ingest.to_workers[worker].send(WorkerMsg::Events(batch)).is_err() {
                            self.ingest.downstream_failed = true;
                        }
                    }
                    spare.push(parsed.chunk);
                    next_to_forward += 1;
                }
            }
            drop(job_tx);
        });
        (lines, result)
    }

    /// Re-opens the episodes of stored alerts that may still be running, so events after a
    /// restart update them instead of opening second alerts. Call before the first line.
    /// A source-grouped alert of a source not configured (a Kafka envelope's host and file)
    /// registers that source first, so its episode is found again.
    pub fn resume(&mut self, alerts: Vec<Alert>) {
        let n = self.ingest.to_workers.len();
        let format = self.ingest.sources.first().map_or(LogFormat::Combined, |s| s.format);
        for a in alerts.iter().filter(|a| a.group_by == "source") {
            self.ingest.source_named(&a.source, format);
        }
        let names: Vec<String> = self.ingest.sources.iter().map(|s| s.name.clone()).collect();
        let mut per_worker: Vec<Vec<Alert>> = (0..n).map(|_| Vec::new()).collect();
        for a in alerts {
            if let Some(w) = Worker::owner_of(&a, &names, n, |ip| worker_for(ip, n)) {
                per_worker[w].push(a);
            }
        }
        for (tx, alerts) in self.ingest.to_workers.iter().zip(per_worker) {
            if !alerts.is_empty() && tx.send(WorkerMsg::Resume(alerts)).is_err() {
                self.ingest.downstream_failed = true;
            }
        }
    }

    /// The longest window or suppression time of the rules: how far back (event time) a
    /// restart must re-read, and which stored alerts may still be open.
    pub fn memory_secs(&self) -> i64 {
        self.detect.memory_secs
    }

    /// The longest rule window (event time): how far back a restart re-reads.
    pub fn longest_window_secs(&self) -> i64 {
        self.detect.rules.iter().filter(|r| r.is_windowed()).map(|r| r.window_secs).max().unwrap_or(0)
    }

    /// Sequence number of the last barrier whose checkpoint is durable.
    pub fn durable_barrier(&self) -> u64 {
        self.durable.load(Relaxed)
    }

    /// Whether every stage is still running (for the watchdog).
    pub fn is_alive(&self) -> bool {
        !self.ingest.downstream_failed && !self.store.is_finished() && self.workers.iter().all(|w| !w.is_finished())
    }

    /// Sends what is buffered, waits for workers and the store to drain, flushes the store.
    pub fn finish(mut self) -> Result<RunOutcome, PipelineError> {
        self.ingest.flush();
        let Ingest { to_workers, .. } = self.ingest;
        drop(to_workers);
        let mut stats = Vec::new();
        let mut clients = Vec::new();
        for h in self.workers {
            let (s, scope) = h.join().map_err(|_| PipelineError::Thread("a detection worker panicked".into()))?;
            stats.push(s);
            clients.extend(scope);
        }
        let alerts = self.store.join().map_err(|_| PipelineError::Thread("the store thread panicked".into()))??;
        Ok(RunOutcome { alerts, clients, workers: stats })
    }
}

fn run_worker(
    cfg: Arc<DetectConfig>,
    rx: Receiver<WorkerMsg>,
    resolved: Receiver<Alert>,
    to_store: Sender<StoreMsg>,
    recycle: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
) -> WorkerResult {
    let mut worker = Worker::new(cfg);
    let mut changed = Vec::new();
    let mut published = WorkerStats::default();
    for msg in rx {
        // Resolves made before this message was queued close their episodes before it is
        // applied: a line read after the API answered opens a new alert.
        for a in resolved.try_iter() {
            worker.close(&a);
        }
        let mut batch = match msg {
            WorkerMsg::Events(batch) => batch,
            WorkerMsg::Barrier(b) => {
                // The alerts changed before the marker go first; the marker follows them.
                worker.take_changed(&mut changed);
                if !changed.is_empty() && to_store.send(StoreMsg::Alerts(std::mem::take(&mut changed))).is_err() {
                    break;
                }
                if to_store.send(StoreMsg::Barrier(b)).is_err() {
                    break;
                }
                continue;
            }
            WorkerMsg::Resume(alerts) => {
                for a in alerts {
                    worker.resume(a);
                }
                continue;
            }
            WorkerMsg::AddSource(name) => {
                worker.add_source(name);
                continue;
            }
        };
        worker.process_batch(&batch);
        batch.clear();
        let _ = recycle.send(batch);
        let s = worker.stats;
        telemetry.alerts_opened.fetch_add(s.alerts_opened - published.alerts_opened, Relaxed);
        telemetry.groups_evicted.fetch_add(s.groups_evicted - published.groups_evicted, Relaxed);
        telemetry.groups_tracked.fetch_add(s.groups_tracked as i64 - published.groups_tracked as i64, Relaxed);
        published = s;
    }
    // The queue closed: hand out what changed since the last barrier (the store is still
    // listening: it stops only when every worker has dropped its sender).
    worker.take_changed(&mut changed);
    if !changed.is_empty() {
        let _ = to_store.send(StoreMsg::Alerts(changed));
    }
    telemetry.groups_tracked.fetch_sub(published.groups_tracked as i64, Relaxed);
    (worker.stats, worker.take_scope())
}

/// The store stage: the single writer of alerts and checkpoints.
struct StoreStage {
    store: Store,
    workers: usize,
    on_error: OnStoreError,
    stop_retrying: Arc<std::sync::atomic::AtomicBool>,
    notify: Notify,
    telemetry: Arc<Telemetry>,
    durable: Arc<AtomicU64>,
}

impl StoreStage {
    /// Back-off between retries of a failed write.
    const RETRY_DELAY: Duration = Duration::from_millis(500);

    fn run(self, rx: Receiver<StoreMsg>) -> Result<Vec<Alert>, StoreError> {
        // Every alert of this run in its latest state; and the coalescing buffer: whatever
        // queued up while the last write ran is merged by id and written once.
        let mut latest: HashMap<String, Alert> = HashMap::new();
        let mut pending: HashMap<String, Alert> = HashMap::new();
        // Barrier seq → workers that passed it.
        let mut arrivals: BTreeMap<u64, usize> = BTreeMap::new();
        while let Ok(first) = rx.recv() {
            let mut complete: Option<Arc<Barrier>> = None;
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                match msg {
                    StoreMsg::Alerts(alerts) => {
                        for a in alerts {
                            merge_into(&mut pending, a);
                        }
                    }
                    StoreMsg::Barrier(b) => {
                        let n = arrivals.entry(b.seq).or_insert(0);
                        *n += 1;
                        if *n == self.workers {
                            arrivals.remove(&b.seq);
                            complete = Some(b);
                            // Alerts after this marker are written in this flush too, which
                            // is harmless: durability only runs ahead of the checkpoint.
                        }
                    }
                }
            }
            if pending.is_empty() && complete.is_none() {
                continue;
            }
            let batch: Vec<Alert> = pending.drain().map(|(_, a)| a).collect();
            self.write(&batch, complete.as_deref())?;
            for a in batch {
                merge_into(&mut latest, a);
            }
            if let Some(b) = complete {
                self.telemetry.detection_latency_seconds.observe(b.read_at.elapsed().as_secs_f64());
                self.durable.store(b.seq, Relaxed);
            }
        }
        self.write(&[], None)?;
        // Report what the store holds (it may carry an ack or counts from an earlier run).
        let mut out = Vec::with_capacity(latest.len());
        for id in latest.keys() {
            if let Some(a) = self.store.get(id)? {
                out.push(a);
            }
        }
        out.sort_by(|a, b| (a.first_seen, &a.rule_id, &a.client).cmp(&(b.first_seen, &b.rule_id, &b.client)));
        Ok(out)
    }

    /// Writes alerts and (if any) a checkpoint, then flushes: retried per `on_error`.
    fn write(&self, alerts: &[Alert], barrier: Option<&Barrier>) -> Result<(), StoreError> {
        loop {
            let started = Instant::now();
            let result = (|| {
                let created = self.store.upsert(alerts, self.notify)?;
                if let Some(checkpoint) = barrier.and_then(|b| b.checkpoint.as_ref()) {
                    self.store.save_checkpoint(checkpoint)?;
                }
                self.store.flush()?;
                Ok::<Vec<usize>, StoreError>(created)
            })();
            match result {
                Ok(created) => {
                    self.telemetry.store_write_seconds.observe(started.elapsed().as_secs_f64());
                    self.telemetry.alert_writes.fetch_add(alerts.len() as u64, Relaxed);
                    if barrier.is_some_and(|b| b.checkpoint.is_some()) {
                        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                        self.telemetry.last_checkpoint_unix.store(now.map_or(0, |d| d.as_secs() as i64), Relaxed);
                    }
                    for i in created {
                        self.telemetry.alert_opened(&alerts[i].rule, alerts[i].severity.as_str());
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.telemetry.store_errors.fetch_add(1, Relaxed);
                    if self.on_error == OnStoreError::Fail || self.stop_retrying.load(Relaxed) {
                        return Err(e);
                    }
                    tracing::error!(error = %e, "alert store write failed; reading pauses, retrying");
                    std::thread::sleep(Self::RETRY_DELAY);
                }
            }
        }
    }
}

fn merge_into(map: &mut HashMap<String, Alert>, a: Alert) {
    match map.get_mut(&a.id) {
        Some(prev) => prev.merge_from(&a),
        None => {
            map.insert(a.id.clone(), a);
        }
    }
}

/// Which worker owns a client: a multiplicative hash of its address.
fn worker_for(ip: IpAddr, workers: usize) -> usize {
    let a = unified(ip);
    let x = (a as u64) ^ ((a >> 64) as u64);
    ((x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % workers as u64) as usize
}

impl Ingest {
    /// One framed line from source `source`. The hot path.
    #[inline]
    pub fn line(&mut self, source: u16, line: &[u8]) {
        self.tally.lines += 1;
        self.tally.bytes += line.len() as u64 + 1;
        let (format, path_semantics) = match self.sources.get(usize::from(source)) {
            Some(s) => (s.format, s.path_semantics),
            None => (LogFormat::Combined, PathSemantics::default()),
        };
        let access = match parse::parse_line(format, line) {
            Ok(a) => a,
            Err(reason) => return self.tally.skip(reason),
        };
        let Some(path_class) = self.paths.classify(access.target, path_semantics, &mut self.path_scratch) else {
            self.tally.parsed += 1;
            return;
        };
        let Some(time) = self.event_time(access.time) else {
            return self.tally.skip(SkipReason::BadTimestamp);
        };
        let Some(client) = parse::parse_client_ip(access.client) else {
            return self.tally.skip(SkipReason::BadClient);
        };
        self.tally.parsed += 1;
        self.tally.sensitive(path_class, access.status);
        self.latest_event_time = self.latest_event_time.max(time);
        if self.downstream_failed {
            return;
        }
        let client_class = self.networks.classify(client);
        let path_key = xxh3_128_with_seed(&self.path_scratch, self.path_seed);
        let user_agent = access.user_agent().unwrap_or(b"");
        let user_agent: &[u8] = if memchr::memchr(b'\\', user_agent).is_some() {
            self.ua_scratch.clear();
            parse::unescape_log_field(user_agent, &mut self.ua_scratch);
            &self.ua_scratch
        } else {
            user_agent
        };
        let n = self.batches.len();
        let client_worker = worker_for(client, n);
        let source_worker = usize::from(source) % n;
        let push = |worker: usize, route: Route, batches: &mut Vec<EventBatch>| {
            let batch = &mut batches[worker];
            let path = batch.push_bytes(&self.path_scratch);
            let method = batch.push_bytes(access.method);
            let user_agent = batch.push_bytes(user_agent);
            batch.events.push(Event {
                client,
                client_class,
                time,
                status: access.status,
                body_bytes: access.body_bytes(),
                path_class,
                user_present: access.user.is_some(),
                source,
                path_key,
                path,
                method,
                user_agent,
                route,
            });
        };
        let both = self.has_source_rules && source_worker == client_worker;
        push(client_worker, Route { client_rules: true, source_rules: both }, &mut self.batches);
        if self.has_source_rules && !both {
            push(source_worker, Route { client_rules: false, source_rules: true }, &mut self.batches);
            if self.batches[source_worker].is_full() {
                self.send(source_worker);
            }
        }
        if self.batches[client_worker].is_full() {
            self.send(client_worker);
        }
    }

    /// A line over the length bound was skipped by the framer.
    pub fn too_long(&mut self) {
        self.tally.lines += 1;
        self.tally.skip(SkipReason::TooLong);
    }

    fn event_time(&mut self, text: &[u8]) -> Option<i64> {
        let (cached, len, value) = &mut self.time_cache;
        if text.len() == *len && &cached[..*len] == text {
            return Some(*value);
        }
        let t = parse::time::parse_clf_time(text)?;
        if text.len() <= cached.len() {
            cached[..text.len()].copy_from_slice(text);
            *len = text.len();
            *value = t;
        }
        Some(t)
    }

    fn send(&mut self, worker: usize) {
        let fresh = self.recycled.try_recv().unwrap_or_else(|_| EventBatch::with_capacity());
        let full = std::mem::replace(&mut self.batches[worker], fresh);
        if let Some(collected) = &mut self.collected {
            collected.push((worker, full));
        } else if self.to_workers[worker].send(WorkerMsg::Events(full)).is_err() {
            self.downstream_failed = true;
        }
    }

    /// A parser for another thread: same tables, same path-hash seed (distinct counts must
    /// agree), collecting its batches instead of sending them.
    fn parser(&self) -> Ingest {
        Ingest {
            paths: self.paths.clone(),
            networks: self.networks.clone(),
            sources: self.sources.clone(),
            source_index: self.source_index.clone(),
            path_scratch: Vec::with_capacity(4096),
            ua_scratch: Vec::with_capacity(1024),
            time_cache: ([0; 32], 0, 0),
            path_seed: self.path_seed,
            batches: (0..self.batches.len()).map(|_| EventBatch::with_capacity()).collect(),
            to_workers: Vec::new(),
            recycled: self.recycled.clone(),
            has_source_rules: self.has_source_rules,
            tally: LineTally::default(),
            telemetry: self.telemetry.clone(),
            next_barrier: 1,
            latest_event_time: 0,
            downstream_failed: false,
            collected: Some(Vec::new()),
        }
    }

    /// Sends every partly filled batch and publishes the line tally. Call at the end of a
    /// chunk of input, so events never wait behind a quiet source.
    pub fn flush(&mut self) {
        for w in 0..self.batches.len() {
            if !self.batches[w].events.is_empty() {
                self.send(w);
            }
        }
        self.telemetry.publish(&mut self.tally);
    }

    /// Flushes, then sends a barrier carrying `checkpoint` through every worker. Returns its
    /// sequence number; [`Pipeline::durable_barrier`] reaches it once the checkpoint and every
    /// alert caused by earlier lines are durable.
    pub fn barrier(&mut self, checkpoint: Vec<u8>, read_at: Instant) -> u64 {
        self.send_barrier(Some(checkpoint), read_at)
    }

    /// A barrier without a checkpoint, for sources whose position is kept elsewhere (Kafka):
    /// [`Pipeline::durable_barrier`] reaching the returned number says every alert caused by
    /// earlier lines is durable, so their offsets may be stored.
    pub fn durable_marker(&mut self, read_at: Instant) -> u64 {
        self.send_barrier(None, read_at)
    }

    fn send_barrier(&mut self, checkpoint: Option<Vec<u8>>, read_at: Instant) -> u64 {
        self.flush();
        self.telemetry.newest_event_unix.fetch_max(self.latest_event_time, Relaxed);
        let seq = self.next_barrier;
        self.next_barrier += 1;
        let b = Arc::new(Barrier { seq, read_at, checkpoint });
        for tx in &self.to_workers {
            if tx.send(WorkerMsg::Barrier(b.clone())).is_err() {
                self.downstream_failed = true;
            }
        }
        seq
    }

    /// The index of the source called `name`, registering it (with `format`) when it is new;
    /// None once [`MAX_SOURCES`] are known. A registered source reaches every worker before
    /// any event of it (queues are FIFO), so alerts can name it.
    pub fn source_named(&mut self, name: &str, format: LogFormat) -> Option<u16> {
        if let Some(&i) = self.source_index.get(name) {
            return Some(i);
        }
        if self.sources.len() >= MAX_SOURCES {
            return None;
        }
        let index = self.sources.len() as u16;
        // A source named by a Kafka envelope is a host behind the configured source: same
        // kind of server.
        let path_semantics = self.sources.first().map_or_else(PathSemantics::default, |s| s.path_semantics);
        self.sources.push(SourceSpec { name: name.to_string(), format, path_semantics });
        self.source_index.insert(name.to_string(), index);
        for tx in &self.to_workers {
            if tx.send(WorkerMsg::AddSource(name.to_string())).is_err() {
                self.downstream_failed = true;
            }
        }
        Some(index)
    }

    /// Newest event time seen on a sensitive line (0 before the first).
    pub fn latest_event_time(&self) -> i64 {
        self.latest_event_time
    }

    /// Carries the newest event time over a restart or reload (it only moves forward).
    pub fn seed_latest_event_time(&mut self, t: i64) {
        self.latest_event_time = self.latest_event_time.max(t);
    }
}

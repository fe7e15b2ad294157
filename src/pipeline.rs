//! Wires the stages: lines → parse → classify → route by group hash → detection workers →
//! store. Owns the threads, the bounded queues between them and batch recycling.
//! The per-line path (`Ingest::line`) takes no lock, makes no syscall and allocates nothing
//! once warm: events go into recycled per-worker batches; queues are bounded, so a slow
//! store pauses reading instead of growing memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Receiver, Sender};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use crate::classify::client::{unified, Networks};
use crate::classify::path::{PathClass, SensitivePaths};
use crate::config::Config;
use crate::detect::alert::Alert;
use crate::detect::event::{Event, EventBatch, Route};
use crate::detect::worker::{ClientScope, DetectConfig, Worker, WorkerStats};
use crate::parse::{self, LogFormat, SkipReason};
use crate::store::{Store, StoreError};
use crate::telemetry::{LineTally, Telemetry};

/// Batches queued per worker before reading pauses.
const WORKER_QUEUE: usize = 64;
/// Alert batches queued for the store before workers pause.
const STORE_QUEUE: usize = 256;

/// One input stream the pipeline reads: its name (what alerts show as `source`) and format.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: String,
    pub format: LogFormat,
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
    /// Reused buffer for the normalised path of the current line.
    path_scratch: Vec<u8>,
    /// Reused buffer for the unescaped user agent of the current line.
    ua_scratch: Vec<u8>,
    /// Last timestamp text and its value: consecutive lines mostly share a second.
    time_cache: ([u8; 32], usize, i64),
    /// Keys the distinct-path hash per process, so crafted paths cannot aim for collisions.
    path_seed: u64,
    batches: Vec<EventBatch>,
    to_workers: Vec<Sender<EventBatch>>,
    recycled: Receiver<EventBatch>,
    has_source_rules: bool,
    tally: LineTally,
    telemetry: Arc<Telemetry>,
    /// Set when a downstream stage has gone away; lines are then counted but not routed.
    downstream_failed: bool,
}

/// What a worker thread hands back when its queue closes.
type WorkerResult = (WorkerStats, HashMap<IpAddr, ClientScope, ahash::RandomState>);

pub struct Pipeline {
    pub ingest: Ingest,
    workers: Vec<JoinHandle<WorkerResult>>,
    store: JoinHandle<Result<Vec<Alert>, StoreError>>,
}

impl Pipeline {
    /// Starts the worker and store threads. `config` gives rules and tables; `sources` are
    /// indexed by the `source` argument of [`Ingest::line`].
    pub fn start(
        config: &Config,
        sources: Vec<SourceSpec>,
        workers: usize,
        store: Store,
        keep_scope: bool,
        telemetry: Arc<Telemetry>,
    ) -> Pipeline {
        let workers = workers.max(1);
        let detect = Arc::new(DetectConfig::new(
            config.rules.clone(),
            config.partners.iter().map(|(n, _)| n.clone()).collect(),
            sources.iter().map(|s| s.name.clone()).collect(),
            config.client_idle_secs,
            config.max_clients_per_worker,
            keep_scope,
        ));
        let (to_store, store_rx) = bounded::<Vec<Alert>>(STORE_QUEUE);
        let (recycle_tx, recycled) = unbounded::<EventBatch>();
        let mut to_workers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for i in 0..workers {
            let (tx, rx) = bounded::<EventBatch>(WORKER_QUEUE);
            to_workers.push(tx);
            let (detect, to_store, recycle_tx, telemetry) =
                (detect.clone(), to_store.clone(), recycle_tx.clone(), telemetry.clone());
            let handle = std::thread::Builder::new()
                .name(format!("detect-{i}"))
                .spawn(move || run_worker(detect, rx, to_store, recycle_tx, telemetry))
                .expect("spawning a detection thread");
            handles.push(handle);
        }
        drop(to_store);
        let store_handle = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || run_store(store, store_rx))
            .expect("spawning the store thread");
        let ingest = Ingest {
            paths: config.sensitive.clone(),
            networks: config.networks.clone(),
            sources,
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
            downstream_failed: false,
        };
        Pipeline { ingest, workers: handles, store: store_handle }
    }

    /// Sends what is buffered, waits for workers and the store to drain, flushes the store.
    pub fn finish(mut self, keep_scope: bool) -> Result<RunOutcome, PipelineError> {
        self.ingest.flush();
        let Ingest { to_workers, .. } = self.ingest;
        drop(to_workers);
        let mut stats = Vec::new();
        let mut clients = Vec::new();
        for h in self.workers {
            let (s, scope) = h.join().map_err(|_| PipelineError::Thread("a detection worker panicked".into()))?;
            stats.push(s);
            if keep_scope {
                clients.extend(scope);
            }
        }
        let alerts = self.store.join().map_err(|_| PipelineError::Thread("the store thread panicked".into()))??;
        Ok(RunOutcome { alerts, clients, workers: stats })
    }
}

fn run_worker(
    cfg: Arc<DetectConfig>,
    rx: Receiver<EventBatch>,
    to_store: Sender<Vec<Alert>>,
    recycle: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
) -> WorkerResult {
    use std::sync::atomic::Ordering::Relaxed;
    let mut worker = Worker::new(cfg);
    let mut changed = Vec::new();
    let mut published = WorkerStats::default();
    for mut batch in rx {
        worker.process_batch(&batch, &mut changed);
        if !changed.is_empty() && to_store.send(std::mem::take(&mut changed)).is_err() {
            break; // the store failed; finish() reports its error
        }
        batch.clear();
        let _ = recycle.send(batch);
        let s = worker.stats;
        telemetry.alerts_opened.fetch_add(s.alerts_opened - published.alerts_opened, Relaxed);
        telemetry.groups_evicted.fetch_add(s.groups_evicted - published.groups_evicted, Relaxed);
        published = s;
    }
    (worker.stats, worker.take_scope())
}

fn run_store(store: Store, rx: Receiver<Vec<Alert>>) -> Result<Vec<Alert>, StoreError> {
    // Every alert of this run in its latest state; also the coalescing buffer: whatever
    // queued up while the last write ran is merged by id and written once.
    let mut latest: HashMap<String, Alert> = HashMap::new();
    let mut pending: HashMap<String, Alert> = HashMap::new();
    while let Ok(first) = rx.recv() {
        for alerts in std::iter::once(first).chain(rx.try_iter()) {
            for a in alerts {
                match pending.get_mut(&a.id) {
                    Some(prev) => prev.merge_from(&a),
                    None => {
                        pending.insert(a.id.clone(), a);
                    }
                }
            }
        }
        let batch: Vec<Alert> = pending.drain().map(|(_, a)| a).collect();
        store.upsert(&batch)?;
        for a in batch {
            match latest.get_mut(&a.id) {
                Some(prev) => prev.merge_from(&a),
                None => {
                    latest.insert(a.id.clone(), a);
                }
            }
        }
    }
    store.flush()?;
    // Report what the store holds (it may carry an ack or counts from an earlier run).
    let mut out = Vec::with_capacity(latest.len());
    for id in latest.keys() {
        if let Some(a) = store.get(id)? {
            out.push(a);
        }
    }
    out.sort_by(|a, b| (a.first_seen, &a.rule_id, &a.client).cmp(&(b.first_seen, &b.rule_id, &b.client)));
    Ok(out)
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
        let format = match self.sources.get(usize::from(source)) {
            Some(s) => s.format,
            None => LogFormat::Combined,
        };
        let access = match parse::parse_line(format, line) {
            Ok(a) => a,
            Err(reason) => return self.tally.skip(reason),
        };
        let Some(path_class) = self.paths.classify(access.target, &mut self.path_scratch) else {
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
        self.tally.sensitive += 1;
        if path_class == PathClass::Recording {
            self.tally.recordings += 1;
        }
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
        if self.to_workers[worker].send(full).is_err() {
            self.downstream_failed = true;
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

    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }
}

//! Wires the stages: lines → parse → classify → route by group hash → detection workers →
//! store writer. Owns the threads, the bounded queues between them, batch recycling and
//! barriers. Never parses a line ([`ingest`] does), never detects ([`crate::detect::thread`])
//! and never writes to sled itself ([`crate::store::writer`]). Queues are bounded, so a slow
//! store pauses reading instead of growing memory.
//!
//! Durability: [`Ingest::barrier`] sends a marker with an opaque checkpoint through every
//! worker; the store writer writes the checkpoint in the same flush as every alert caused by
//! the lines before the marker, and only then reports it durable. So a checkpoint never
//! runs ahead of the alerts it covers. In the daemon the same write queues each changed
//! alert for the notifiers ([`Notify::Queue`]).

mod ingest;
pub mod replay;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded};
use tokio_util::sync::CancellationToken;

use crate::classify::client::{unified, ClientId};
use crate::classify::path::PathSemantics;
use crate::config::Config;
use crate::detect::alert::Alert;
use crate::detect::event::EventBatch;
use crate::detect::scope::ScopeSettings;
use crate::detect::thread::{run_worker, WorkerMsg, WorkerOutput, WorkerResult};
use crate::detect::worker::{ClientScope, DetectConfig, Worker, WorkerStats};
use crate::parse::time::UtcOffset;
use crate::parse::{LineFormat, LogFormat};
use crate::privacy::Pseudonymizer;
use crate::store::writer::StoreWriter;
use crate::store::{Notify, Store, StoreError};
use crate::telemetry::Telemetry;

pub use crate::detect::thread::Barrier;
pub use crate::store::writer::OnStoreError;
pub use ingest::Ingest;

/// Batches queued per worker before reading pauses, and messages queued for the store before
/// workers pause. Both are short: while the store is the bottleneck (a mass fetch) they stay
/// full, and what they hold is memory (issue 13: at 64 batches and 256 messages of up to 64
/// alert changes each they were ~25 MiB of a 100 k-client mass fetch's peak RSS, ~25 MiB at
/// 1 M). At 16 and 32 the store still finds a full write waiting, and a replay on all cores
/// is as fast.
const WORKER_QUEUE: usize = 16;
const STORE_QUEUE: usize = 32;

/// One input stream the pipeline reads: its name (what alerts show as `source`), format and
/// how its server resolves paths.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: String,
    pub format: LineFormat,
    pub path_semantics: PathSemantics,
    /// The offset of timestamps written without a zone (`[27/Jun/2013:11:55:44]`).
    pub timezone: UtcOffset,
}

/// Sources a pipeline accepts in all, configured ones included: registered names (Kafka
/// envelopes' host and file) beyond it fall back to the reading source's own name.
pub const MAX_SOURCES: usize = 1024;

/// What a finished run produced.
pub struct RunOutcome {
    /// Latest state of every alert opened or updated in this run, as stored (only with
    /// `keep_scope`: the daemon's alerts live in the store, not in memory).
    pub alerts: Vec<Alert>,
    /// Per-client totals (only when the scope was kept).
    pub clients: Vec<ClientScope>,
    pub workers: Vec<WorkerStats>,
}

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("a pipeline thread stopped unexpectedly: {0}")]
    Thread(String),
}

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
    /// Keep per-client totals and the run's alert ids for the scope report (replay).
    pub keep_scope: bool,
    pub on_store_error: OnStoreError,
    /// The daemon's shutdown: once cancelled, a failing store stops retrying, so a full disk
    /// cannot hold the process past its stop timeout (unflushed lines are read again at the
    /// next start).
    pub shutdown: CancellationToken,
    /// Whether stored alert changes are queued for the notifiers (daemon) or not (replay).
    pub notify: Notify,
    /// Keys the pseudonyms of personnummer and phone numbers in alert samples.
    pub pseudonyms: Pseudonymizer,
    /// What the scope counts as a call, and its period (with `keep_scope`).
    pub scope: ScopeSettings,
    /// Hand the evidence ledger's deltas to the store (the daemon; a replay on request).
    pub ledger: bool,
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
        let mut detect = DetectConfig::new(
            config.rules.clone(),
            config.classify.partner_names(),
            sources.iter().map(|s| s.name.clone()).collect(),
            config.engine.client_idle_secs,
            config.engine.max_clients_per_worker,
            options.keep_scope,
            options.pseudonyms.clone(),
        );
        detect.scope = options.scope.clone();
        // A replay keeps every client's files for its scope: its episodes may as well keep
        // every path key, and its store writes no distinct sets.
        detect.keeps_every_path = options.keep_scope;
        detect.ledger = options.ledger;
        let detect = Arc::new(detect);
        telemetry.register_sources(sources.iter().map(|s| s.name.as_str()));
        let (to_store, store_rx) = bounded::<WorkerOutput>(STORE_QUEUE);
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
        let store_writer = StoreWriter {
            store,
            workers,
            on_error: options.on_store_error,
            shutdown: options.shutdown.clone(),
            notify: options.notify,
            telemetry: telemetry.clone(),
            durable: durable.clone(),
            report: options.keep_scope,
            // The daemon (which keeps no scope) resumes from checkpoints: its counts must
            // agree with them. A replay has none.
            hold_until_barrier: !options.keep_scope,
            rollup: config.store.rollup,
        };
        let store_handle = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || store_writer.run(store_rx))
            .expect("spawning the store thread");
        let mut ingest = Ingest::new(
            config.classify.paths.clone(),
            config.classify.networks.clone(),
            sources,
            to_workers,
            recycled,
            detect.clone(),
            telemetry,
        );
        ingest.future_tolerance = config.engine.future_tolerance_secs;
        // Path keys agree across restarts: the store keeps them (alerts' distinct sets, ledger).
        ingest.path_seed = options.pseudonyms.stable_seed();
        Pipeline { ingest, workers: handles, store: store_handle, durable, detect }
    }

    /// Swaps in the rules, sensitive paths and networks of `config` (a reload) without
    /// stopping anything: what is buffered is sent first, then every worker gets the new
    /// rules in its queue, so each line read before this call is judged by the old config and
    /// each line after it by the new one; none is lost or read twice. Sources, engine and
    /// pseudonym key are the running ones (a change of those rebuilds the pipeline instead).
    pub fn reconfigure(&mut self, config: &Config) {
        self.ingest.flush();
        let old = &self.detect;
        let mut detect = DetectConfig::new(
            config.rules.clone(),
            config.classify.partner_names(),
            old.source_names.clone(),
            config.engine.client_idle_secs,
            config.engine.max_clients_per_worker,
            old.keep_scope,
            old.pseudonyms.clone(),
        );
        detect.scope = old.scope.clone();
        let detect = Arc::new(detect);
        for tx in &self.ingest.to_workers {
            if tx.send(WorkerMsg::Reconfigure(detect.clone())).is_err() {
                self.ingest.downstream_failed = true;
            }
        }
        self.ingest.paths = config.classify.paths.clone();
        self.ingest.networks = config.classify.networks.clone();
        self.ingest.detect = detect.clone();
        self.detect = detect;
    }

    /// Re-opens the episodes of stored alerts that may still be running, so events after a
    /// restart update them instead of opening second alerts. Call before the first line.
    /// A source-grouped alert of a source not configured (a Kafka envelope's host and file)
    /// registers that source first, so its episode is found again.
    pub fn resume(&mut self, alerts: Vec<Alert>) {
        let n = self.ingest.to_workers.len();
        let format = self.ingest.sources.first().map_or(LineFormat::Named(LogFormat::Combined), |s| s.format.clone());
        for a in alerts.iter().filter(|a| a.group_by == "source") {
            self.ingest.source_named(&a.source, &format);
        }
        let names: Vec<String> = self.ingest.sources.iter().map(|s| s.name.clone()).collect();
        let mut per_worker: Vec<Vec<Alert>> = (0..n).map(|_| Vec::new()).collect();
        for a in alerts {
            if let Some(w) = Worker::owner_of(&a, &names, n, |client| worker_for(client, n)) {
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
    pub fn finish(self) -> Result<RunOutcome, PipelineError> {
        self.finish_with(|_| ()).map(|(run, ())| run)
    }

    /// [`Pipeline::finish`], which calls `while_storing` with the clients' scopes once every
    /// worker has stopped, while the store still writes and flushes the last changes.
    pub fn finish_with<R>(
        mut self,
        while_storing: impl FnOnce(&[ClientScope]) -> R,
    ) -> Result<(RunOutcome, R), PipelineError> {
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
        let prepared = while_storing(&clients);
        let alerts = self.store.join().map_err(|_| PipelineError::Thread("the store thread panicked".into()))??;
        Ok((RunOutcome { alerts, clients, workers: stats }, prepared))
    }
}

/// Which worker owns a client: a multiplicative hash of its address (or name hash).
fn worker_for(client: ClientId, workers: usize) -> usize {
    let a = match client {
        ClientId::Ip(ip) => unified(ip),
        ClientId::Name(hash) => u128::from_le_bytes(hash),
    };
    let x = (a as u64) ^ ((a >> 64) as u64);
    ((x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) % workers as u64) as usize
}

//! The Kafka consumer loops, one thread per Kafka source: consumer → a pipeline of its own →
//! barriers without a checkpoint → offsets stored once the alerts before them are durable;
//! a revoke drains the revoked partitions' work first; a reload's new rules are swapped in
//! between two polls. Never frames or parses messages (the
//! source does) and never writes checkpoints: Kafka keeps the offsets.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::{open_episodes, start_pipeline, Control, BARRIER_EVERY};
use crate::config::Config;
use crate::parse::LineFormat;
use crate::pipeline::{Ingest, Pipeline, SourceSpec};
use crate::privacy::Pseudonymizer;
use crate::source::kafka::{KafkaSink, KafkaSource, Rebalance};
use crate::source::{SourceInput, SourceSettings};
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Kafka: messages handed to the pipeline per poll round before a barrier is considered.
const KAFKA_POLL_BUDGET: usize = 65_536;
/// Kafka: how long one poll waits for a message when the topic is quiet.
const KAFKA_POLL_WAIT: Duration = Duration::from_millis(100);
/// Kafka: how long a revoke waits for the revoked partitions' work to become durable (so
/// their offsets can be committed before the next owner starts) before dropping it.
const KAFKA_REVOKE_DRAIN: Duration = Duration::from_secs(5);

/// What a Kafka consumer loop shares with the main loop.
#[derive(Default)]
pub(super) struct KafkaStatus {
    /// The consumer has joined its group (first assignment received).
    pub(super) joined: AtomicBool,
    /// Loop iterations, for the watchdog: a loop that stops counting is wedged.
    beats: AtomicU64,
    /// New rules, sensitive paths and networks from a reload, taken by the loop between two
    /// polls ([`Pipeline::reconfigure`]): the consumer and its group membership stay.
    new_config: Mutex<Option<Arc<Config>>>,
}

/// A running Kafka consumer loop (one per Kafka source).
pub(super) struct KafkaLoop {
    pub(super) name: String,
    stop: CancellationToken,
    pub(super) status: Arc<KafkaStatus>,
    pub(super) thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    beats_seen: u64,
}

impl KafkaLoop {
    /// Waits for the thread; its error, if it failed.
    pub(super) fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            None => Ok(()),
            Some(t) => t.join().unwrap_or_else(|_| Err(anyhow::anyhow!("the consumer thread panicked"))),
        }
    }

    /// Hands the loop the rules, sensitive paths and networks of `config`; it switches to them
    /// between two polls, keeping its consumer (no rebalance).
    pub(super) fn reconfigure(&self, config: Arc<Config>) {
        *self.status.new_config.lock().unwrap_or_else(PoisonError::into_inner) = Some(config);
    }

    /// Whether the loop went round since the last call (and its thread is still there).
    pub(super) fn progressed(&mut self) -> bool {
        let beats = self.status.beats.load(Relaxed);
        let moved = beats != self.beats_seen;
        self.beats_seen = beats;
        moved && self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

pub(super) fn start_kafka_loops(
    config: &Arc<Config>,
    store: &Store,
    telemetry: &Arc<Telemetry>,
    control: &Arc<Control>,
    pseudonyms: &Pseudonymizer,
) -> Vec<KafkaLoop> {
    let mut loops = Vec::new();
    for source in config.sources.iter().filter(|s| matches!(s.input, SourceInput::Kafka(_))) {
        // Cancelled with the daemon, or alone when a reload restarts the loops.
        let stop = control.shutdown.child_token();
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
pub(super) fn stop_kafka_loops(mut loops: Vec<KafkaLoop>) -> anyhow::Result<()> {
    for k in &loops {
        k.stop.cancel();
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
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let source = config
        .sources
        .iter()
        .find(|s| s.name == source_name && matches!(s.input, SourceInput::Kafka(_)))
        .with_context(|| format!("no Kafka source named {source_name:?} in {}", config.file.display()))?;
    let pseudonyms = Pseudonymizer::resolve(config.pseudonyms.as_ref(), &config.store.dir)?;
    let control = Control { shutdown: stop.clone(), ..Control::default() };
    let io = KafkaLoopIo { store, telemetry, control: &control, pseudonyms: &pseudonyms };
    kafka_loop(source, config, io, stop, &KafkaStatus::default())
}

/// Lines of consumed messages into a pipeline. An envelope's `host:file` becomes the
/// alert's source (registered on first sight, bounded); otherwise the Kafka source's name.
struct KafkaIngest<'a> {
    ingest: &'a mut Ingest,
    format: LineFormat,
}

impl KafkaIngest<'_> {
    fn source(&mut self, origin: &str) -> u16 {
        if origin.is_empty() {
            0
        } else {
            self.ingest.source_named(origin, &self.format).unwrap_or(0)
        }
    }
}

impl KafkaSink for KafkaIngest<'_> {
    fn line(&mut self, origin: &str, line: &[u8]) {
        let source = self.source(origin);
        self.ingest.line(source, line);
    }
    fn truncated(&mut self, origin: &str, head: &[u8]) {
        let source = self.source(origin);
        self.ingest.truncated(source, head);
    }
    fn rereading(&mut self, rereading: bool) {
        crate::source::tail::LineSink::rereading(self.ingest, 0, rereading);
    }
    fn barrier_due(&self) -> bool {
        self.ingest.barrier_due()
    }
}

/// What a consumer loop shares with the rest of the daemon.
struct KafkaLoopIo<'a> {
    store: &'a Store,
    telemetry: &'a Arc<Telemetry>,
    control: &'a Control,
    pseudonyms: &'a Pseudonymizer,
}

/// One Kafka source: consume → pipeline → barrier → store offsets once durable; rebalances
/// drain the revoked partitions' work first. Returns after a final synchronous commit when
/// `stop` (or the daemon's stop) is set; an error only when the consumer cannot be created.
fn kafka_loop(
    source: &SourceSettings,
    config: &Config,
    io: KafkaLoopIo<'_>,
    stop: &CancellationToken,
    status: &KafkaStatus,
) -> anyhow::Result<()> {
    let KafkaLoopIo { store, telemetry, control, pseudonyms } = io;
    let SourceInput::Kafka(kafka) = &source.input else { anyhow::bail!("{} is not a Kafka source", source.name) };
    let mut consumer = KafkaSource::connect(kafka, telemetry.kafka_source(&source.name))?;
    let spec = SourceSpec {
        name: source.name.clone(),
        format: source.format.clone(),
        path_semantics: source.path_semantics,
        timezone: source.timezone,
    };
    let mut pipeline = start_pipeline(config, vec![spec], store, telemetry, control, pseudonyms);
    pipeline.resume(open_episodes(store, config, pipeline.memory_secs()));
    // Messages re-delivered at or below what the store counted are re-reads (count nowhere).
    match store.kafka_positions(&source.name) {
        Ok(counted) => consumer.counted_through(counted),
        Err(e) => {
            tracing::error!(source = %source.name, error = %e, "cannot read the counted Kafka offsets: re-delivered messages may be counted twice")
        }
    }
    tracing::info!(source = %source.name, topics = ?kafka.topics, group = %kafka.group_id, "consuming");
    let mut last_marker = Instant::now();
    // When the oldest message not yet under a barrier was read (detection latency).
    let mut unsealed_since: Option<Instant> = None;
    while !stop.is_cancelled() {
        status.beats.fetch_add(1, Relaxed);
        if let Some(new) = status.new_config.lock().unwrap_or_else(PoisonError::into_inner).take() {
            pipeline.reconfigure(&new);
            tracing::info!(source = %source.name, rules = new.rules.len(), "rules swapped; consumer kept");
        }
        while let Some(rebalance) = consumer.take_rebalance() {
            match rebalance {
                Rebalance::Assign(partitions) => consumer.assign(partitions),
                Rebalance::Revoke(partitions) => {
                    drain_for_revoke(&mut consumer, &mut pipeline, &source.name, unsealed_since.take());
                    consumer.revoke(partitions);
                }
            }
            status.joined.store(consumer.joined(), Relaxed);
        }
        let polled_at = Instant::now();
        let mut sink = KafkaIngest { ingest: &mut pipeline.ingest, format: source.format.clone() };
        let handed = consumer.poll(&mut sink, KAFKA_POLL_WAIT, KAFKA_POLL_BUDGET);
        if handed > 0 {
            unsealed_since.get_or_insert(polled_at);
        }
        // Fewer messages than the budget: the topic is quiet, or the lines handed out are
        // enough for a barrier (`Ingest::barrier_due`).
        let quiet = handed < KAFKA_POLL_BUDGET;
        if consumer.has_unsealed() && (quiet || last_marker.elapsed() >= BARRIER_EVERY) {
            seal(&mut consumer, &mut pipeline, &source.name, unsealed_since.take().unwrap_or(polled_at));
            last_marker = Instant::now();
        }
        consumer.store_durable(pipeline.durable_barrier());
    }
    if consumer.has_unsealed() {
        seal(&mut consumer, &mut pipeline, &source.name, unsealed_since.unwrap_or_else(Instant::now));
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

/// Puts everything handed out since the last barrier under a new one, which carries the
/// highest offset per partition so the store keeps it with their counts.
fn seal(consumer: &mut KafkaSource, pipeline: &mut Pipeline, source: &str, read_at: Instant) {
    let positions = consumer
        .unsealed_positions()
        .into_iter()
        .map(|(topic, partition, last)| (Store::kafka_position_key(source, &topic, partition), last))
        .collect();
    let seq = pipeline.ingest.durable_marker_at(read_at, positions);
    consumer.seal(seq);
}

/// Before partitions are given up: puts everything read under a barrier, waits (bounded) for
/// it to be durable, stores and commits those offsets, so the next owner starts right after
/// our work. What is not durable in time stays uncommitted and is read again by that owner.
fn drain_for_revoke(
    consumer: &mut KafkaSource,
    pipeline: &mut Pipeline,
    source: &str,
    unsealed_since: Option<Instant>,
) {
    if consumer.has_unsealed() {
        seal(consumer, pipeline, source, unsealed_since.unwrap_or_else(Instant::now));
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

//! The tail loop: follows the file sources into one pipeline and sends barriers carrying the
//! file checkpoint. Owns the checkpoint format ([`DaemonCheckpoint`]), its loading, and the
//! rewind history (how far back a restart re-reads so every window is rebuilt). Never
//! touches Kafka offsets and never writes to the store itself: checkpoints are written by the
//! store writer when their barrier is durable.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use sd_notify::NotifyState;

use super::kafka::{start_kafka_loops, stop_kafka_loops, KafkaLoop};
use super::{open_episodes, reload, start_pipeline, Control, RunOptions, BARRIER_EVERY};
use crate::alerting::Notifier;
use crate::config::Config;
use crate::http::Readiness;
use crate::parse::MAX_LINE_LEN;
use crate::pipeline::{Pipeline, SourceSpec};
use crate::privacy::Pseudonymizer;
use crate::source::tail::{FileCheckpoint, TailOptions, TailSource, Tailer};
use crate::source::SourceSettings;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Bytes read per tail poll before a barrier is sent: bounds the work a checkpoint covers.
const POLL_BUDGET: usize = 4 << 20;

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

/// What the daemon persists with every barrier.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct DaemonCheckpoint {
    /// Where every followed file was when the barrier was sent: all lines before are done.
    files: Vec<FileCheckpoint>,
    /// Where a restart resumes: far enough back (event time) that every rule window is
    /// rebuilt. Lines between `rewind` and `files` are read twice; their alerts have the same
    /// ids (episodes are resumed from the store), so this costs counts, not duplicates.
    pub(super) rewind: Vec<FileCheckpoint>,
    /// Newest sensitive event time at `files`.
    pub(super) event_time: i64,
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
pub(super) struct RewindHistory {
    /// (newest event time, wall-clock time, files), oldest first; the front is the current
    /// rewind point.
    entries: VecDeque<(i64, Instant, Vec<FileCheckpoint>)>,
}

impl RewindHistory {
    fn new(start: &DaemonCheckpoint) -> RewindHistory {
        let mut entries = VecDeque::new();
        entries.push_back((i64::MIN, Instant::now(), start.rewind.clone()));
        RewindHistory { entries }
    }

    /// Records a checkpoint and returns the persisted form with its rewind point: the newest
    /// recorded position whose event time is at least `window` before `event_time`, or that
    /// was recorded over two windows ago by the wall clock (quiet live logs).
    pub(super) fn record(&mut self, files: Vec<FileCheckpoint>, event_time: i64, window: i64) -> DaemonCheckpoint {
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

/// What the tail loop runs with; a reload replaces it as a whole (keeping the history).
pub(super) struct Running {
    pub(super) config: Arc<Config>,
    pub(super) tailer: Tailer,
    pub(super) pipeline: Pipeline,
    pub(super) kafka_loops: Vec<KafkaLoop>,
}

impl Running {
    /// Starts the file pipeline (tailer at `rewind`, stored episodes resumed, the newest event
    /// time seeded) and one consumer loop per Kafka source: like a restart, so new workers
    /// rebuild every window; resumed episodes keep re-read lines from counting twice.
    pub(super) fn start(
        config: Arc<Config>,
        pseudonyms: Pseudonymizer,
        rewind: Vec<FileCheckpoint>,
        event_time: i64,
        store: &Store,
        telemetry: &Arc<Telemetry>,
        control: &Arc<Control>,
    ) -> Running {
        let tailer = Tailer::new(tail_sources(&config), tail_options(&config), rewind, telemetry.clone());
        let mut pipeline = file_pipeline(&config, store, telemetry, control, &pseudonyms);
        pipeline.resume(open_episodes(store, pipeline.memory_secs()));
        pipeline.ingest.seed_latest_event_time(event_time);
        let kafka_loops = start_kafka_loops(&config, store, telemetry, control, &pseudonyms);
        Running { config, tailer, pipeline, kafka_loops }
    }

    /// The checkpoint of everything read so far, recorded in `history`.
    pub(super) fn checkpoint(&self, history: &mut RewindHistory) -> DaemonCheckpoint {
        history.record(
            self.tailer.checkpoints(),
            self.pipeline.ingest.latest_event_time(),
            self.pipeline.longest_window_secs(),
        )
    }
}

pub(super) fn tail_loop(
    config: Arc<Config>,
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
    let mut running = Running::start(config, pseudonyms, start.rewind, start.event_time, &store, &telemetry, control);
    // Ready once state is loaded and every Kafka consumer has joined its group.
    ready.set_started(running.kafka_loops.is_empty());
    let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    tracing::info!(sources = running.config.sources.len(), workers = running.config.engine.workers, "running");
    let mut watchdog_usec = 0u64;
    let watchdog = sd_notify::watchdog_enabled(false, &mut watchdog_usec) && watchdog_usec > 0;
    let watchdog_every = Duration::from_micros(watchdog_usec / 2);
    let mut last_ping = Instant::now();
    let mut last_barrier = Instant::now();
    let mut sent_barrier = 0u64;
    let mut unsent = false;

    while !control.stop.load(Relaxed) {
        for k in &mut running.kafka_loops {
            if k.thread.as_ref().is_some_and(|t| t.is_finished()) {
                let result = k.join();
                // A consumer loop ends early only on an error (it stops when told to).
                return Err(result.err().unwrap_or_else(|| anyhow::anyhow!("Kafka source {} stopped", k.name)))
                    .with_context(|| format!("Kafka source {}", k.name));
            }
        }
        ready.set_started(running.kafka_loops.iter().all(|k| k.status.joined.load(Relaxed)));
        if control.reload.swap(false, Relaxed) {
            let (next, reloaded) = reload::reload(running, &mut history, opts, &store, &telemetry, control, notifier)?;
            running = next;
            if reloaded {
                sent_barrier = 0;
            }
        }
        let Running { config, tailer, pipeline, kafka_loops, .. } = &mut running;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ino: u64, offset: u64) -> FileCheckpoint {
        FileCheckpoint {
            source: 0,
            path: "/var/log/nginx/access.log".into(),
            dev: 1,
            ino,
            fingerprint_len: 0,
            fingerprint: 0,
            offset,
        }
    }

    fn offsets(files: &[FileCheckpoint]) -> Vec<(u64, u64)> {
        files.iter().map(|f| (f.ino, f.offset)).collect()
    }

    #[test]
    fn the_rewind_point_stays_until_a_whole_window_of_event_time_has_passed() {
        let start = DaemonCheckpoint { files: vec![at(7, 100)], rewind: vec![at(7, 10)], event_time: 0 };
        let mut history = RewindHistory::new(&start);
        let first = history.record(vec![at(7, 500)], 1_000, 60);
        assert_eq!(offsets(&first.rewind), [(7, 10)]);
        assert_eq!(offsets(&first.files), [(7, 500)]);
        assert_eq!(first.event_time, 1_000);
        // 30 s of events later the position at 1 000 is not a full window back yet.
        let second = history.record(vec![at(7, 900)], 1_030, 60);
        assert_eq!(offsets(&second.rewind), [(7, 10)]);
        // A full window after 1 000, the rewind point moves up to it.
        let third = history.record(vec![at(7, 1_200)], 1_060, 60);
        assert_eq!(offsets(&third.rewind), [(7, 500)]);
    }

    #[test]
    fn a_file_the_rewind_point_does_not_know_rewinds_to_its_start() {
        let start = DaemonCheckpoint { files: vec![at(7, 100)], rewind: vec![at(7, 10)], event_time: 0 };
        let mut history = RewindHistory::new(&start);
        let cp = history.record(vec![at(7, 500), at(8, 42)], 1_000, 60);
        assert_eq!(offsets(&cp.rewind), [(7, 10), (8, 0)]);
        assert_eq!(offsets(&cp.files), [(7, 500), (8, 42)]);
    }

    #[test]
    fn a_checkpoint_round_trips_through_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_state_dir(dir.path()).unwrap();
        assert!(load_checkpoint(&store).files.is_empty());
        let cp = DaemonCheckpoint { files: vec![at(7, 100)], rewind: vec![at(7, 10)], event_time: 1_234 };
        store.save_checkpoint(&serde_json::to_vec(&cp).unwrap()).unwrap();
        let loaded = load_checkpoint(&store);
        assert_eq!(offsets(&loaded.files), [(7, 100)]);
        assert_eq!(offsets(&loaded.rewind), [(7, 10)]);
        assert_eq!(loaded.event_time, 1_234);
    }

    #[test]
    fn an_unreadable_checkpoint_starts_from_the_beginning_instead_of_failing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_state_dir(dir.path()).unwrap();
        store.save_checkpoint(b"\0\0\0 not json").unwrap();
        let loaded = load_checkpoint(&store);
        assert!(loaded.files.is_empty() && loaded.rewind.is_empty());
        assert_eq!(loaded.event_time, 0);
    }
}

//! The file side of the daemon: the file sources followed into one pipeline whose barriers
//! carry the file checkpoint, and what the main loop runs ([`Running`]: that pipeline and the
//! Kafka loops, started like a restart). Owns the checkpoint format ([`DaemonCheckpoint`]),
//! its loading, and the rewind history (how far back a restart re-reads so every window is
//! rebuilt). Never touches Kafka offsets and never writes to the store itself: checkpoints
//! are written by the store writer when their barrier is durable.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::kafka::{start_kafka_loops, KafkaLoop};
use super::{open_episodes, start_pipeline, Control};
use crate::config::Config;
use crate::parse::MAX_LINE_LEN;
use crate::pipeline::{Pipeline, SourceSpec};
use crate::privacy::Pseudonymizer;
use crate::source::tail::{FileCheckpoint, TailOptions, TailSource, Tailer};
use crate::source::SourceSettings;
use crate::store::Store;
use crate::telemetry::Telemetry;

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
        // No read is longer than a poll's budget: a larger buffer would never be filled.
        read_chunk: super::POLL_BUDGET,
        rotated_drain: config.tail.rotated_drain,
    }
}

/// What the daemon persists with every barrier.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub(super) struct DaemonCheckpoint {
    /// Where every followed file was when the barrier was sent: all lines before are done,
    /// and counted (alerts and evidence ledger) in the same store transaction as this.
    pub(super) files: Vec<FileCheckpoint>,
    /// Where a restart resumes: far enough back (event time) that every rule window is
    /// rebuilt. Lines between `rewind` and `files` are read twice, flagged as re-reads by
    /// position ([`Tailer::counted_through`]): they rebuild windows and count nowhere.
    pub(super) rewind: Vec<FileCheckpoint>,
    /// Newest sensitive event time at `files`.
    pub(super) event_time: i64,
}

pub(super) fn load_checkpoint(store: &Store) -> DaemonCheckpoint {
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
    pub(super) fn new(start: &DaemonCheckpoint) -> RewindHistory {
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
        .map(|(s, _)| SourceSpec {
            name: s.name.clone(),
            format: s.format.clone(),
            path_semantics: s.path_semantics,
            timezone: s.timezone,
        })
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
    /// Starts the file pipeline (tailer at the checkpoint's `rewind`, lines up to its `files`
    /// flagged as re-reads, stored episodes resumed, the newest event time seeded) and one
    /// consumer loop per Kafka source: like a restart, so new workers rebuild every window;
    /// re-read lines count nowhere, so nothing is counted twice.
    pub(super) fn start(
        config: Arc<Config>,
        pseudonyms: Pseudonymizer,
        checkpoint: DaemonCheckpoint,
        store: &Store,
        telemetry: &Arc<Telemetry>,
        control: &Arc<Control>,
    ) -> Running {
        let DaemonCheckpoint { files, rewind, event_time } = checkpoint;
        let mut tailer = Tailer::new(tail_sources(&config), tail_options(&config), rewind, telemetry.clone());
        tailer.counted_through(files);
        let mut pipeline = file_pipeline(&config, store, telemetry, control, &pseudonyms);
        pipeline.resume(open_episodes(store, &config, pipeline.memory_secs()));
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

//! The detection thread: one per worker. Owns its [`Worker`] (the per-client windows) and
//! drains the worker's bounded inbox in order: events, barriers, resumed episodes, new
//! sources, new rules (a reload). Passes changed alerts and then each barrier on to the store writer, so a barrier
//! never overtakes an alert caused before it. Never parses and never writes to the store.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};

use crate::detect::alert::Alert;
use crate::detect::event::EventBatch;
use crate::detect::evidence::{AlertChange, Evidence};
use crate::detect::worker::{ClientScope, DetectConfig, Worker, WorkerStats};
use crate::telemetry::Telemetry;

/// A marker through the pipeline; `checkpoint` is written once everything before it is.
pub struct Barrier {
    pub seq: u64,
    /// When the lines before it were read: the start of the detection-latency measurement.
    pub read_at: Instant,
    /// None for a source that keeps its position elsewhere (Kafka offsets live in the
    /// broker): the barrier then only says when the alerts before it are durable.
    pub checkpoint: Option<Vec<u8>>,
    /// Positions kept next to the counts (Kafka: per partition the highest offset before the
    /// barrier), as (store key, offset): written in the same transaction as the counts of the
    /// lines before it, so re-delivered messages are known as re-reads
    /// ([`crate::store::Store::kafka_positions`]).
    pub positions: Vec<(Vec<u8>, i64)>,
}

/// What a detection thread passes on to the store writer, in order.
pub(crate) enum WorkerOutput {
    Changes(Changes),
    Barrier(Arc<Barrier>),
}

/// What one worker counted between two of its barriers.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// The sequence number of the next barrier this worker passes (the last one + 1): the
    /// changes belong in that barrier's write, with its checkpoint, and in no earlier one.
    pub(crate) epoch: u64,
    pub(crate) alerts: Vec<AlertChange>,
    pub(crate) evidence: Vec<Evidence>,
}

impl Changes {
    fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.evidence.is_empty()
    }
}

/// What a detection thread receives, in order.
pub(crate) enum WorkerMsg {
    Events(EventBatch),
    Barrier(Arc<Barrier>),
    /// Stored alerts whose episodes continue (after a restart).
    Resume(Vec<Alert>),
    /// A source registered after the start, next index (sent before any of its events).
    AddSource(String),
    /// New rules (a reload): events queued before it are judged by the old ones, events
    /// after it by these. What changed before it is handed to the store first.
    Reconfigure(Arc<DetectConfig>),
}

/// Alert changes (and, apart, evidence deltas) per message to the store writer.
const CHANGES_PER_MESSAGE: usize = 64;
/// Path keys per message (unless one alert change alone has more): the store adds an alert's
/// keys one by one to its distinct set, and a sled transaction keeps every tree node it
/// replaces until it commits (a replay's 64 alerts with 14 k keys in one write: +17 MiB RSS).
const PATHS_PER_MESSAGE: usize = 1024;

/// Where the last message's alert changes start: at most CHANGES_PER_MESSAGE of them, with at
/// most PATHS_PER_MESSAGE path keys together (or one change with more).
fn chunk_start(alerts: &[AlertChange]) -> usize {
    let mut start = alerts.len();
    let mut paths = 0;
    while start > 0 && alerts.len() - start < CHANGES_PER_MESSAGE {
        let next = alerts[start - 1].paths.len();
        if start < alerts.len() && paths + next > PATHS_PER_MESSAGE {
            break;
        }
        paths += next;
        start -= 1;
    }
    start
}

/// What a worker thread hands back when its queue closes.
pub(crate) type WorkerResult = (WorkerStats, Vec<ClientScope>);

/// Runs one detection worker until its inbox closes; returns its totals and (when kept) the per-client scope.
pub(crate) fn run_worker(
    cfg: Arc<DetectConfig>,
    rx: Receiver<WorkerMsg>,
    resolved: Receiver<Box<Alert>>,
    to_store: Sender<WorkerOutput>,
    recycle: Sender<EventBatch>,
    telemetry: Arc<Telemetry>,
) -> WorkerResult {
    let keep_evidence_until_end = cfg.keep_scope;
    let mut worker = Worker::new(cfg);
    let mut changed = Changes { epoch: 1, ..Changes::default() };
    let mut published = WorkerStats::default();
    // Hands out what changed (if anything) as the current epoch's changes, in messages of at
    // most CHANGES_PER_MESSAGE changes and PATHS_PER_MESSAGE path keys each: the store queue is
    // bounded in messages, so this bounds what waits for a slow store, and a slow store blocks
    // this thread (then reading pauses).
    // A replay (which keeps the scope) folds its ledger deltas as maxima: it hands them out
    // once, at its end; its alert changes (running totals, path keys) at every barrier too.
    let hand_out = |worker: &mut Worker, changed: &mut Changes, end: bool| -> bool {
        worker.take_changed(&mut changed.alerts);
        if end || !keep_evidence_until_end {
            worker.take_evidence(&mut changed.evidence);
        }
        let epoch = changed.epoch;
        while !changed.is_empty() {
            let alerts = chunk_start(&changed.alerts);
            let evidence = changed.evidence.len().saturating_sub(CHANGES_PER_MESSAGE);
            let chunk = Changes {
                epoch,
                alerts: changed.alerts.split_off(alerts),
                evidence: changed.evidence.split_off(evidence),
            };
            if to_store.send(WorkerOutput::Changes(chunk)).is_err() {
                return false;
            }
        }
        true
    };
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
                if !hand_out(&mut worker, &mut changed, false) {
                    break;
                }
                changed.epoch = b.seq + 1;
                if to_store.send(WorkerOutput::Barrier(b)).is_err() {
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
            WorkerMsg::Reconfigure(cfg) => {
                if !hand_out(&mut worker, &mut changed, false) {
                    break;
                }
                worker.reconfigure(cfg);
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
    let _ = hand_out(&mut worker, &mut changed, true);
    telemetry.groups_tracked.fetch_sub(published.groups_tracked as i64, Relaxed);
    (worker.stats, worker.take_scope())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::alert::tests::alert;

    fn changes(paths: &[usize]) -> Vec<AlertChange> {
        let change = |n: usize| AlertChange { alert: alert(1), requests: 1, bytes: 0, paths: vec![0; n] };
        paths.iter().map(|&n| change(n)).collect()
    }

    #[test]
    fn a_message_holds_at_most_64_changes_and_1024_paths_or_one_larger_change() {
        assert_eq!(chunk_start(&[]), 0);
        assert_eq!(chunk_start(&changes(&[0; 100])), 100 - CHANGES_PER_MESSAGE);
        assert_eq!(chunk_start(&changes(&[1, 2000])), 1, "a large change goes alone");
        assert_eq!(chunk_start(&changes(&[500, 600])), 1);
        assert_eq!(chunk_start(&changes(&[400, 500, 524])), 1, "exactly 1024 fit together");
        assert_eq!(chunk_start(&changes(&[2000, 3])), 1);
    }
}

//! The store writer: the single thread that writes alerts, the evidence ledger and
//! checkpoints. Owns the barrier counting (a checkpoint is written only once every worker has
//! passed its barrier, in the same transaction as the counts of the lines before it) and the
//! coalescing of deltas by alert id and by (client, resource). Never detects; what a write
//! failure means (stop, or wait and retry) is the caller's choice. Keeps no alert beyond the
//! write it is in, except the ids a replay reports at its end.
//!
//! In the daemon (`hold_until_barrier`) a worker's changes made after its barrier `n` wait
//! for barrier `n + 1`, even when other workers' changes are written earlier: so the store
//! holds exactly the counts of the lines before its checkpoint, which is what makes counts
//! exact across a crash (see [`crate::store::ledger`]). A replay has no checkpoint to agree
//! with and writes whatever has arrived.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tokio_util::sync::CancellationToken;

use crate::detect::alert::Alert;
use crate::detect::evidence::{AlertChange, Evidence};
use crate::detect::thread::{Barrier, Changes, WorkerOutput};
use crate::store::{Counts, Notify, Rollup, Store, StoreError, StoreWrite};
use crate::telemetry::Telemetry;

/// What the store stage does when a write fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnStoreError {
    /// Stop and report the error (replay: the user sees it at once).
    Fail,
    /// Count it, wait, and retry the same write; meanwhile queues fill and reading pauses
    /// (daemon: a full disk must not lose alerts or corrupt state).
    Retry,
}

/// The store writer: the single writer of alerts and checkpoints.
/// What the writer writes to: the alert store. A trait only so that the writer's handling of
/// failed writes can be tested against a store that fails on demand.
pub(crate) trait AlertStore: Send + 'static {
    fn apply(&self, write: Arc<StoreWrite>, notify: Notify) -> Result<Vec<usize>, StoreError>;
    fn flush(&self) -> Result<usize, StoreError>;
    fn get(&self, id: &str) -> Result<Option<Alert>, StoreError>;
}

impl AlertStore for Store {
    fn apply(&self, write: Arc<StoreWrite>, notify: Notify) -> Result<Vec<usize>, StoreError> {
        Store::apply(self, write, notify)
    }
    fn flush(&self) -> Result<usize, StoreError> {
        Store::flush(self)
    }
    fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        Store::get(self, id)
    }
}

pub(crate) struct StoreWriter<S: AlertStore = Store> {
    pub(crate) store: S,
    pub(crate) workers: usize,
    pub(crate) on_error: OnStoreError,
    /// Once cancelled, a failed write is not retried (the daemon is stopping).
    pub(crate) shutdown: CancellationToken,
    pub(crate) notify: Notify,
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) durable: Arc<AtomicU64>,
    /// Whether [`StoreWriter::run`] returns the run's alerts (replay's report). Off in the
    /// daemon, whose alerts live in the store only: memory does not grow with them.
    pub(crate) report: bool,
    /// Write a worker's changes only with the barrier that follows them (the daemon: counts
    /// and checkpoints agree); else as they arrive (replay).
    pub(crate) hold_until_barrier: bool,
    /// How a storm of new alerts is paged ([`Rollup`]).
    pub(crate) rollup: Rollup,
}

/// Changes waiting for their write, coalesced.
#[derive(Default)]
struct Pending {
    alerts: HashMap<String, AlertChange>,
    evidence: HashMap<(u128, u128), Evidence>,
}

impl Pending {
    fn add(&mut self, changes: Changes) {
        for c in changes.alerts {
            match self.alerts.get_mut(&c.alert.id) {
                Some(prev) => prev.fold(c),
                None => {
                    self.alerts.insert(c.alert.id.clone(), c);
                }
            }
        }
        for e in changes.evidence {
            match self.evidence.get_mut(&e.key) {
                Some(prev) => prev.fold(&e),
                None => {
                    self.evidence.insert(e.key, e);
                }
            }
        }
    }

    fn absorb(&mut self, other: Pending) {
        self.add(Changes {
            epoch: 0,
            alerts: other.alerts.into_values().collect(),
            evidence: other.evidence.into_values().collect(),
        });
    }

    fn is_empty(&self) -> bool {
        self.alerts.is_empty() && self.evidence.is_empty()
    }

    /// Changes held (alerts and ledger entries).
    fn len(&self) -> usize {
        self.alerts.len() + self.evidence.len()
    }
}

impl<S: AlertStore> StoreWriter<S> {
    /// Messages taken from the queue before a write.
    const DRAIN_PER_WRITE: usize = 1024;
    /// Changes (alerts and ledger entries) per write, unless one barrier's lines made more:
    /// a sled transaction keeps every tree node it replaces until it commits, so its memory
    /// grows with its size (issue 13: 65 k changes in one write peaked above 1 GiB; a mass
    /// fetch of 100 k clients peaked at 71 MiB with 512, 68 with 256, at the same lines/s).
    const MAX_WRITE_ITEMS: usize = 256;
    /// Back-off between retries of a failed write.
    const RETRY_DELAY: Duration = Duration::from_millis(500);

    pub(crate) fn run(self, rx: Receiver<WorkerOutput>) -> Result<Vec<Alert>, StoreError> {
        // The ids of this run's alerts (only when reporting them); and the coalescing buffer
        // by epoch (the barrier the changes belong before; all 0 without holding): whatever
        // queued up while the last write ran is merged and written, at most
        // MAX_WRITE_ITEMS changes (and whole barriers) per write.
        let mut reported: Option<HashSet<String>> = self.report.then(HashSet::new);
        let mut pending: BTreeMap<u64, Pending> = BTreeMap::new();
        let mut pending_items = 0usize;
        // Barrier seq → workers that passed it; and the barriers every worker has passed,
        // oldest first, not yet written.
        let mut arrivals: BTreeMap<u64, usize> = BTreeMap::new();
        let mut complete: VecDeque<Arc<Barrier>> = VecDeque::new();
        let nonce = std::collections::hash_map::RandomState::new().hash_one(std::process::id());
        let mut writes = 0u64;
        let mut next_id = || {
            writes += 1;
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&nonce.to_be_bytes());
            id[8..].copy_from_slice(&writes.to_be_bytes());
            id
        };
        // The last barrier written but not flushed yet (a replay flushes at its end).
        let mut unflushed_through = None;
        let mut open = true;
        while open || !complete.is_empty() {
            // Wait for work only when nothing is ready to write.
            let first = if complete.is_empty() && open {
                match rx.recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            } else {
                None
            };
            // A bounded batch per round: the buffer stays bounded by MAX_WRITE_ITEMS (plus
            // the changes of one barrier, whose lines the ingest bounds), so one slow write
            // cannot make the next one larger, and the next larger still (issue 13: sled keeps
            // every node a transaction replaced until it ends).
            // A replay writes each message alone (bounded in changes and path keys by the
            // worker): one transaction over many holds every version of every node it touches.
            let drain = if self.hold_until_barrier { Self::DRAIN_PER_WRITE } else { 1 };
            let mut taken = 0;
            let mut queue = first.into_iter().map(Ok).chain(std::iter::from_fn(|| match rx.try_recv() {
                Ok(m) => Some(Ok(m)),
                Err(crossbeam_channel::TryRecvError::Empty) => None,
                Err(crossbeam_channel::TryRecvError::Disconnected) => Some(Err(())),
            }));
            while open && (taken == 0 || (taken < drain && pending_items < Self::MAX_WRITE_ITEMS)) {
                let msg = match queue.next() {
                    Some(Ok(msg)) => msg,
                    Some(Err(())) => {
                        open = false;
                        break;
                    }
                    None => break,
                };
                taken += 1;
                match msg {
                    WorkerOutput::Changes(changes) => {
                        let epoch = if self.hold_until_barrier { changes.epoch } else { 0 };
                        pending_items += changes.alerts.len() + changes.evidence.len();
                        pending.entry(epoch).or_default().add(changes);
                    }
                    WorkerOutput::Barrier(b) => {
                        let n = arrivals.entry(b.seq).or_insert(0);
                        *n += 1;
                        if *n == self.workers {
                            arrivals.remove(&b.seq);
                            complete.push_back(b);
                        }
                    }
                }
            }
            drop(queue);
            // What may be written now: without holding, everything (the barriers only report
            // durability); else the epochs up to the barriers every worker has passed, as
            // many whole barriers as fit in one write.
            let mut changes = Pending::default();
            let mut through: Option<Arc<Barrier>> = None;
            if self.hold_until_barrier {
                while let Some(b) = complete.pop_front() {
                    let later = pending.split_off(&(b.seq + 1));
                    for (_, p) in std::mem::replace(&mut pending, later) {
                        changes.absorb(p);
                    }
                    through = Some(b);
                    if changes.len() >= Self::MAX_WRITE_ITEMS {
                        break;
                    }
                }
                if through.is_none() {
                    continue;
                }
            } else {
                for (_, p) in std::mem::take(&mut pending) {
                    changes.absorb(p);
                }
                through = complete.drain(..).next_back();
            }
            pending_items = pending.values().map(Pending::len).sum();
            if changes.is_empty() && through.is_none() {
                continue;
            }
            let write = into_write(next_id(), changes, through.as_deref(), self.counts(), self.rollup);
            self.write(&write)?;
            if let Some(ids) = &mut reported {
                ids.extend(write.alerts.iter().map(|c| c.alert.id.clone()));
            }
            if let Some(b) = through {
                self.telemetry.detection_latency_seconds.observe(b.read_at.elapsed().as_secs_f64());
                if self.flushes_each_write() {
                    self.durable.store(b.seq, Relaxed);
                } else {
                    unflushed_through = Some(b.seq);
                }
            }
        }
        // Every worker has stopped: what is left (the daemon's last barrier came after its
        // last line, so nothing counted is left but what no line caused).
        let mut changes = Pending::default();
        for (_, p) in std::mem::take(&mut pending) {
            changes.absorb(p);
        }
        let write = into_write(next_id(), changes, None, self.counts(), self.rollup);
        self.write(&write)?;
        if let Some(ids) = &mut reported {
            ids.extend(write.alerts.iter().map(|c| c.alert.id.clone()));
        }
        if !self.flushes_each_write() {
            self.retrying(|| self.store.flush().map(drop))?;
            if let Some(seq) = unflushed_through {
                self.durable.store(seq, Relaxed);
            }
        }
        // Report what the store holds (it may carry an ack or counts from an earlier run).
        let ids = reported.unwrap_or_default();
        let mut out = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(a) = self.store.get(id)? {
                out.push(a);
            }
        }
        out.sort_by(|a, b| (a.first_seen, &a.rule_id, &a.client).cmp(&(b.first_seen, &b.rule_id, &b.client)));
        Ok(out)
    }

    /// Deltas exactly once by position (the daemon), or one run's totals kept as maxima (a
    /// replay, whose alert changes are running totals and whose ledger entries are handed out
    /// once, at its end).
    fn counts(&self) -> Counts {
        if self.hold_until_barrier {
            Counts::Add
        } else {
            Counts::Max
        }
    }

    /// Whether each write is flushed at once: in the daemon a checkpoint (or a barrier
    /// reported durable) must never be ahead of the disk. A replay has no checkpoint and
    /// flushes once, at its end (a flush per write waited for the disk ~30 times per 1 M
    /// lines).
    fn flushes_each_write(&self) -> bool {
        self.hold_until_barrier
    }

    /// Writes changes and (if any) a checkpoint in one transaction, then flushes (see
    /// [`StoreWriter::flushes_each_write`]): retried per `on_error` (with the same write id, so
    /// a write that reached the disk is not added twice).
    fn write(&self, write: &Arc<StoreWrite>) -> Result<(), StoreError> {
        if write.alerts.is_empty()
            && write.evidence.is_empty()
            && write.checkpoint.is_none()
            && write.positions.is_empty()
        {
            return Ok(());
        }
        let flush = self.flushes_each_write() || write.checkpoint.is_some() || !write.positions.is_empty();
        self.retrying(|| {
            let started = Instant::now();
            let created = self.store.apply(write.clone(), self.notify)?;
            if flush {
                self.store.flush()?;
            }
            self.telemetry.store_write_seconds.observe(started.elapsed().as_secs_f64());
            self.telemetry.store_write_changes.observe((write.alerts.len() + write.evidence.len()) as f64);
            self.telemetry.alert_writes.fetch_add(write.alerts.len() as u64, Relaxed);
            if write.checkpoint.is_some() {
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
                self.telemetry.last_checkpoint_unix.store(now.map_or(0, |d| d.as_secs() as i64), Relaxed);
            }
            for i in created {
                let a = &write.alerts[i].alert;
                self.telemetry.alert_opened(&a.rule, a.severity.as_str());
            }
            Ok(())
        })
    }

    /// Runs `attempt` until it succeeds, or fails where `on_error` says not to retry.
    fn retrying(&self, mut attempt: impl FnMut() -> Result<(), StoreError>) -> Result<(), StoreError> {
        loop {
            match attempt() {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let retrying = self.on_error != OnStoreError::Fail && !self.shutdown.is_cancelled();
                    self.telemetry.store_write_failed(&e, retrying);
                    if !retrying {
                        return Err(e);
                    }
                    std::thread::sleep(Self::RETRY_DELAY);
                }
            }
        }
    }
}

/// One write of `changes` (with what `barrier` says where the lines before it end): each
/// alert's path keys sorted and deduplicated.
fn into_write(
    id: [u8; 16],
    changes: Pending,
    barrier: Option<&Barrier>,
    counts: Counts,
    rollup: Rollup,
) -> Arc<StoreWrite> {
    let mut alerts: Vec<AlertChange> = changes.alerts.into_values().collect();
    for c in &mut alerts {
        c.paths.sort_unstable();
        c.paths.dedup();
    }
    Arc::new(StoreWrite {
        id,
        alerts,
        evidence: changes.evidence.into_values().collect(),
        checkpoint: barrier.and_then(|b| b.checkpoint.clone()),
        rollup,
        positions: barrier.map(|b| b.positions.clone()).unwrap_or_default(),
        counts,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use crossbeam_channel::unbounded;

    use super::*;
    use crate::detect::alert::tests::alert;

    /// The real store whose flush fails (like a full disk) the first `failures` times.
    struct FailingFlush {
        store: Store,
        failures: AtomicU32,
    }

    impl AlertStore for FailingFlush {
        fn apply(&self, write: Arc<StoreWrite>, notify: Notify) -> Result<Vec<usize>, StoreError> {
            self.store.apply(write, notify)
        }
        fn flush(&self) -> Result<usize, StoreError> {
            if self.failures.load(Relaxed) > 0 {
                self.failures.fetch_sub(1, Relaxed);
                return Err(StoreError::Db(sled::Error::Io(std::io::Error::other("no space left on device"))));
            }
            self.store.flush()
        }
        fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
            self.store.get(id)
        }
    }

    /// The real store, counting its flushes.
    struct CountingFlush {
        store: Store,
        flushes: Arc<AtomicU32>,
    }

    impl AlertStore for CountingFlush {
        fn apply(&self, write: Arc<StoreWrite>, notify: Notify) -> Result<Vec<usize>, StoreError> {
            self.store.apply(write, notify)
        }
        fn flush(&self) -> Result<usize, StoreError> {
            self.flushes.fetch_add(1, Relaxed);
            self.store.flush()
        }
        fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
            self.store.get(id)
        }
    }

    #[test]
    fn a_replay_flushes_once_at_its_end_and_reports_its_last_barrier_durable_then() {
        // Queued together, the daemon's three barriers make one write; a replay writes each
        // message alone (three writes), and flushes once.
        for (hold, expected) in [(false, 1), (true, 1)] {
            let (_dir, store) = store();
            let flushes = Arc::new(AtomicU32::new(0));
            let counting = CountingFlush { store: store.clone(), flushes: flushes.clone() };
            let w = StoreWriter { hold_until_barrier: hold, ..writer(counting, 1, OnStoreError::Fail) };
            let msgs = vec![
                counted(0, 2),
                WorkerOutput::Barrier(barrier(0, None)),
                counted(1, 3),
                WorkerOutput::Barrier(barrier(1, None)),
                counted(2, 4),
                WorkerOutput::Barrier(barrier(2, None)),
            ];
            let (result, durable, _) = run(w, msgs);
            result.unwrap();
            assert_eq!(flushes.load(Relaxed), expected, "hold {hold}");
            assert_eq!(durable, 2, "hold {hold}");
            assert!(store.get(&alert(0).id).unwrap().is_some());
        }
    }

    pub(super) fn writer<S: AlertStore>(store: S, workers: usize, on_error: OnStoreError) -> StoreWriter<S> {
        StoreWriter {
            store,
            workers,
            on_error,
            shutdown: CancellationToken::new(),
            notify: Notify::Skip,
            telemetry: Arc::new(Telemetry::default()),
            durable: Arc::new(AtomicU64::new(0)),
            report: true,
            hold_until_barrier: true,
            rollup: Rollup::default(),
        }
    }

    /// Worker output: `alert` counted `requests` more requests (of paths 0..requests) in `epoch`.
    fn counted(epoch: u64, requests: u64) -> WorkerOutput {
        let a = alert(requests);
        WorkerOutput::Changes(Changes {
            epoch,
            alerts: vec![AlertChange {
                requests,
                bytes: a.bytes,
                paths: (0..u128::from(requests)).collect(),
                alert: a,
            }],
            evidence: Vec::new(),
        })
    }

    fn barrier(seq: u64, checkpoint: Option<&str>) -> Arc<Barrier> {
        Arc::new(Barrier {
            seq,
            read_at: Instant::now(),
            checkpoint: checkpoint.map(|c| c.as_bytes().to_vec()),
            positions: Vec::new(),
        })
    }

    /// Runs `writer` over `msgs` (all queued, then the queue closed): its result, the
    /// durable barrier it reported, and the checkpoint the store holds afterwards.
    fn run<S: AlertStore>(
        writer: StoreWriter<S>,
        msgs: Vec<WorkerOutput>,
    ) -> (Result<Vec<Alert>, StoreError>, u64, Arc<Telemetry>) {
        let (tx, rx) = unbounded();
        for m in msgs {
            tx.send(m).unwrap();
        }
        drop(tx);
        let (durable, telemetry) = (writer.durable.clone(), writer.telemetry.clone());
        let result = writer.run(rx);
        (result, durable.load(Relaxed), telemetry)
    }

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_state_dir(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn barriers_from_every_worker_in_any_order_make_the_checkpoint_durable() {
        let (_dir, store) = store();
        // Three workers pass barriers 1 and 2; their markers interleave arbitrarily.
        let (b1, b2) = (barrier(1, Some("one")), barrier(2, Some("two")));
        let msgs = vec![
            WorkerOutput::Barrier(b1.clone()),
            WorkerOutput::Barrier(b1.clone()),
            WorkerOutput::Barrier(b2.clone()),
            WorkerOutput::Barrier(b2.clone()),
            WorkerOutput::Barrier(b1.clone()),
            WorkerOutput::Barrier(b2.clone()),
        ];
        let (result, durable, _) = run(writer(store.clone(), 3, OnStoreError::Fail), msgs);
        assert!(result.unwrap().is_empty());
        assert_eq!(durable, 2);
        assert_eq!(store.load_checkpoint().unwrap().as_deref(), Some(&b"two"[..]));
    }

    #[test]
    fn a_checkpoint_is_not_written_until_the_last_worker_has_passed_it() {
        let (_dir, store) = store();
        let (b1, b2) = (barrier(1, Some("one")), barrier(2, Some("two")));
        let msgs = vec![
            WorkerOutput::Barrier(b1.clone()),
            WorkerOutput::Barrier(b1.clone()),
            WorkerOutput::Barrier(b1.clone()),
            // Two of three workers passed barrier 2: its checkpoint must not be written.
            WorkerOutput::Barrier(b2.clone()),
            WorkerOutput::Barrier(b2.clone()),
            counted(3, 3),
        ];
        let (result, durable, _) = run(writer(store.clone(), 3, OnStoreError::Fail), msgs);
        assert_eq!(result.unwrap().len(), 1, "the alert after the markers is still written");
        assert_eq!(durable, 1);
        assert_eq!(store.load_checkpoint().unwrap().as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn alerts_before_a_barrier_are_durable_with_it_and_merged_by_id() {
        let (_dir, store) = store();
        let b1 = barrier(1, Some("one"));
        let msgs =
            vec![counted(1, 2), WorkerOutput::Barrier(b1.clone()), counted(1, 3), WorkerOutput::Barrier(b1.clone())];
        let (result, durable, telemetry) = run(writer(store.clone(), 2, OnStoreError::Fail), msgs);
        let alerts = result.unwrap();
        assert_eq!(alerts.len(), 1, "two changes of one alert are one alert");
        assert_eq!((alerts[0].requests, alerts[0].distinct_resources), (5, 3), "2 + 3 requests of paths 0..3");
        assert_eq!(durable, 1);
        assert_eq!(store.get(&alert(0).id).unwrap().map(|a| a.requests), Some(5));
        assert_eq!(telemetry.alert_writes.load(Relaxed), 1, "coalesced into one write");
    }

    #[test]
    fn the_daemons_writer_keeps_no_alert_once_written() {
        let (_dir, store) = store();
        let msgs = vec![counted(1, 2), counted(1, 2)];
        let (result, _, _) = run(StoreWriter { report: false, ..writer(store.clone(), 1, OnStoreError::Fail) }, msgs);
        assert!(result.unwrap().is_empty(), "nothing held for a report");
        assert_eq!(store.get(&alert(0).id).unwrap().map(|a| a.requests), Some(4), "but everything stored");
    }

    #[test]
    fn a_replay_written_twice_into_one_store_counts_its_lines_once() {
        let (_dir, store) = store();
        for _ in 0..2 {
            let replay = StoreWriter { hold_until_barrier: false, ..writer(store.clone(), 1, OnStoreError::Fail) };
            let (result, _, _) = run(replay, vec![counted(1, 4)]);
            assert_eq!(
                result.unwrap().iter().map(|a| (a.requests, a.distinct_resources)).collect::<Vec<_>>(),
                [(4, 4)]
            );
        }
    }

    #[test]
    fn a_barrier_without_a_checkpoint_reports_durability_and_keeps_the_stored_checkpoint() {
        let (_dir, store) = store();
        store.save_checkpoint(b"files").unwrap();
        let b1 = barrier(1, None);
        let msgs = vec![WorkerOutput::Barrier(b1.clone()), WorkerOutput::Barrier(b1)];
        let (result, durable, _) = run(writer(store.clone(), 2, OnStoreError::Fail), msgs);
        result.unwrap();
        assert_eq!(durable, 1);
        assert_eq!(store.load_checkpoint().unwrap().as_deref(), Some(&b"files"[..]));
    }

    #[test]
    fn a_failed_write_in_fail_mode_stops_without_reporting_the_barrier_durable() {
        let (_dir, store) = store();
        let failing = FailingFlush { store: store.clone(), failures: AtomicU32::new(1) };
        let msgs = vec![counted(1, 1), WorkerOutput::Barrier(barrier(1, Some("one")))];
        let (result, durable, telemetry) = run(writer(failing, 1, OnStoreError::Fail), msgs);
        assert!(matches!(result, Err(StoreError::Db(_))));
        assert_eq!(durable, 0);
        assert_eq!(telemetry.store_errors.load(Relaxed), 1);
    }

    #[test]
    fn a_failed_write_in_retry_mode_is_retried_until_the_store_recovers() {
        let (_dir, store) = store();
        let failing = FailingFlush { store: store.clone(), failures: AtomicU32::new(2) };
        let msgs = vec![counted(1, 1), WorkerOutput::Barrier(barrier(1, Some("one")))];
        let (result, durable, telemetry) = run(writer(failing, 1, OnStoreError::Retry), msgs);
        assert_eq!(result.unwrap().len(), 1);
        assert_eq!(durable, 1);
        assert_eq!(telemetry.store_errors.load(Relaxed), 2);
        assert_eq!(store.load_checkpoint().unwrap().as_deref(), Some(&b"one"[..]));
    }

    #[test]
    fn a_failing_store_gives_up_retrying_once_the_daemon_stops() {
        let (_dir, store) = store();
        let failing = FailingFlush { store: store.clone(), failures: AtomicU32::new(u32::MAX) };
        let w = writer(failing, 1, OnStoreError::Retry);
        w.shutdown.cancel();
        let msgs = vec![WorkerOutput::Barrier(barrier(1, Some("one")))];
        let (result, durable, _) = run(w, msgs);
        assert!(result.is_err());
        assert_eq!(durable, 0);
    }
}

#[cfg(test)]
mod exactly_once {
    use std::sync::atomic::AtomicU32;

    use crossbeam_channel::unbounded;

    use super::tests::writer;
    use super::*;
    use crate::detect::alert::tests::alert;

    fn change(requests: u64, paths: std::ops::Range<u128>) -> AlertChange {
        AlertChange { alert: alert(1), requests, bytes: 10 * requests, paths: paths.collect() }
    }

    fn daemon_writer(store: Store, workers: usize) -> StoreWriter {
        StoreWriter { report: false, ..writer(store, workers, OnStoreError::Fail) }
    }

    #[test]
    fn changes_after_a_workers_barrier_wait_for_the_next_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_state_dir(dir.path()).unwrap();
        let b1 = Arc::new(Barrier {
            seq: 1,
            read_at: Instant::now(),
            checkpoint: Some(b"one".to_vec()),
            positions: vec![(b"kafka_counted-test".to_vec(), 7)],
        });
        let (tx, rx) = unbounded();
        // Worker A passes barrier 1 and counts more (epoch 2) before worker B reaches it.
        tx.send(WorkerOutput::Changes(Changes { epoch: 1, alerts: vec![change(2, 0..2)], evidence: vec![] })).unwrap();
        tx.send(WorkerOutput::Barrier(b1.clone())).unwrap();
        tx.send(WorkerOutput::Changes(Changes { epoch: 2, alerts: vec![change(5, 2..7)], evidence: vec![] })).unwrap();
        tx.send(WorkerOutput::Barrier(b1)).unwrap();
        let w = daemon_writer(store.clone(), 2);
        let durable = w.durable.clone();
        let handle = std::thread::spawn(move || w.run(rx));
        wait_for(|| durable.load(Relaxed) == 1);
        let stored = store.get(&alert(1).id).unwrap().unwrap();
        assert_eq!((stored.requests, stored.distinct_resources), (2, 2), "only what came before checkpoint one");
        assert_eq!(store.load_checkpoint().unwrap().as_deref(), Some(&b"one"[..]));
        drop(tx);
        handle.join().unwrap().unwrap();
        let stored = store.get(&alert(1).id).unwrap().unwrap();
        assert_eq!((stored.requests, stored.distinct_resources), (7, 7));
    }

    fn wait_for(done: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Applies, then fails the first flush: the retry must not add the counts again.
    struct FlushFailsOnce {
        store: Store,
        failures: AtomicU32,
    }

    impl AlertStore for FlushFailsOnce {
        fn apply(&self, write: Arc<StoreWrite>, notify: Notify) -> Result<Vec<usize>, StoreError> {
            self.store.apply(write, notify)
        }
        fn flush(&self) -> Result<usize, StoreError> {
            if self.failures.load(Relaxed) > 0 {
                self.failures.fetch_sub(1, Relaxed);
                return Err(StoreError::Db(sled::Error::Io(std::io::Error::other("no space left on device"))));
            }
            self.store.flush()
        }
        fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
            self.store.get(id)
        }
    }

    /// Records the size of every write it applies.
    struct Recording {
        store: Store,
        sizes: std::sync::Mutex<Vec<usize>>,
    }

    impl AlertStore for Arc<Recording> {
        fn apply(&self, write: Arc<StoreWrite>, notify: Notify) -> Result<Vec<usize>, StoreError> {
            self.sizes.lock().unwrap().push(write.alerts.len() + write.evidence.len());
            self.store.apply(write, notify)
        }
        fn flush(&self) -> Result<usize, StoreError> {
            self.store.flush()
        }
        fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
            self.store.get(id)
        }
    }

    /// Issue 13: the writer merged everything queued while its last write ran into the next
    /// one (65 k changes in one sled transaction, RSS above 1 GiB). Now a write holds at most
    /// MAX_WRITE_ITEMS changes plus the rest of the barrier that crossed it, whatever queued.
    #[test]
    fn a_backlog_is_written_in_bounded_writes_of_whole_barriers() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_state_dir(dir.path()).unwrap();
        let recording = Arc::new(Recording { store: store.clone(), sizes: Default::default() });
        let w = StoreWriter { report: false, ..writer(recording.clone(), 1, OnStoreError::Fail) };
        let per_barrier = StoreWriter::<Store>::MAX_WRITE_ITEMS / 2 + 1;
        let barriers = 8u64;
        let (tx, rx) = unbounded();
        for seq in 1..=barriers {
            let alerts = (0..per_barrier)
                .map(|i| {
                    let mut a = alert(1);
                    a.id = format!("{:08x}{:08x}", seq, i);
                    AlertChange { alert: a, requests: 1, bytes: 10, paths: vec![i as u128] }
                })
                .collect();
            tx.send(WorkerOutput::Changes(Changes { epoch: seq, alerts, evidence: vec![] })).unwrap();
            let checkpoint = Some(format!("through {seq}").into_bytes());
            tx.send(WorkerOutput::Barrier(Arc::new(Barrier {
                seq,
                read_at: Instant::now(),
                checkpoint,
                positions: Vec::new(),
            })))
            .unwrap();
        }
        drop(tx);
        let durable = w.durable.clone();
        w.run(rx).unwrap();
        let sizes = recording.sizes.lock().unwrap().clone();
        assert!(sizes.len() >= 4, "a backlog of {barriers} barriers is not one write: {sizes:?}");
        assert!(sizes.iter().all(|&n| n <= 2 * per_barrier), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), barriers as usize * per_barrier, "every change written once");
        assert_eq!(durable.load(Relaxed), barriers);
        assert_eq!(store.load_checkpoint().unwrap().as_deref(), Some(&format!("through {barriers}").into_bytes()[..]));
        assert_eq!(store.len(), barriers as usize * per_barrier);
    }

    #[test]
    fn a_write_retried_after_a_failed_flush_is_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_state_dir(dir.path()).unwrap();
        let failing = FlushFailsOnce { store: store.clone(), failures: AtomicU32::new(1) };
        let w = StoreWriter { report: false, ..writer(failing, 1, OnStoreError::Retry) };
        let (tx, rx) = unbounded();
        tx.send(WorkerOutput::Changes(Changes { epoch: 1, alerts: vec![change(4, 0..3)], evidence: vec![] })).unwrap();
        tx.send(WorkerOutput::Barrier(Arc::new(Barrier {
            seq: 1,
            read_at: Instant::now(),
            checkpoint: None,
            positions: Vec::new(),
        })))
        .unwrap();
        drop(tx);
        w.run(rx).unwrap();
        let stored = store.get(&alert(1).id).unwrap().unwrap();
        assert_eq!((stored.requests, stored.distinct_resources, stored.bytes), (4, 3, 40));
    }
}

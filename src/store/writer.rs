//! The store writer: the single thread that writes alerts and checkpoints. Owns the barrier
//! counting (a checkpoint is written only once every worker has passed its barrier, in the
//! same flush as the alerts before it) and the coalescing of alert updates by id. Never
//! detects; what a write failure means (stop, or wait and retry) is the caller's choice.
//! Keeps no alert beyond the write it is in, except the ids a replay reports at its end.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use tokio_util::sync::CancellationToken;

use crate::detect::alert::Alert;
use crate::detect::thread::{Barrier, WorkerOutput};
use crate::store::{Notify, Store, StoreError};
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
    fn upsert(&self, alerts: &[Alert], notify: Notify) -> Result<Vec<usize>, StoreError>;
    fn save_checkpoint(&self, checkpoint: &[u8]) -> Result<(), StoreError>;
    fn flush(&self) -> Result<usize, StoreError>;
    fn get(&self, id: &str) -> Result<Option<Alert>, StoreError>;
}

impl AlertStore for Store {
    fn upsert(&self, alerts: &[Alert], notify: Notify) -> Result<Vec<usize>, StoreError> {
        Store::upsert(self, alerts, notify)
    }
    fn save_checkpoint(&self, checkpoint: &[u8]) -> Result<(), StoreError> {
        Store::save_checkpoint(self, checkpoint)
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
}

impl<S: AlertStore> StoreWriter<S> {
    /// Back-off between retries of a failed write.
    const RETRY_DELAY: Duration = Duration::from_millis(500);

    pub(crate) fn run(self, rx: Receiver<WorkerOutput>) -> Result<Vec<Alert>, StoreError> {
        // The ids of this run's alerts (only when reporting them); and the coalescing buffer:
        // whatever queued up while the last write ran is merged by id and written once.
        let mut reported: Option<HashSet<String>> = self.report.then(HashSet::new);
        let mut pending: HashMap<String, Alert> = HashMap::new();
        // Barrier seq → workers that passed it.
        let mut arrivals: BTreeMap<u64, usize> = BTreeMap::new();
        while let Ok(first) = rx.recv() {
            let mut complete: Option<Arc<Barrier>> = None;
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                match msg {
                    WorkerOutput::Alerts(alerts) => {
                        for a in alerts {
                            merge_into(&mut pending, a);
                        }
                    }
                    WorkerOutput::Barrier(b) => {
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
            if let Some(ids) = &mut reported {
                ids.extend(batch.into_iter().map(|a| a.id));
            }
            if let Some(b) = complete {
                self.telemetry.detection_latency_seconds.observe(b.read_at.elapsed().as_secs_f64());
                self.durable.store(b.seq, Relaxed);
            }
        }
        self.write(&[], None)?;
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

fn merge_into(map: &mut HashMap<String, Alert>, a: Alert) {
    match map.get_mut(&a.id) {
        Some(prev) => prev.merge_from(&a),
        None => {
            map.insert(a.id.clone(), a);
        }
    }
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
        fn upsert(&self, alerts: &[Alert], notify: Notify) -> Result<Vec<usize>, StoreError> {
            self.store.upsert(alerts, notify)
        }
        fn save_checkpoint(&self, checkpoint: &[u8]) -> Result<(), StoreError> {
            self.store.save_checkpoint(checkpoint)
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

    fn writer<S: AlertStore>(store: S, workers: usize, on_error: OnStoreError) -> StoreWriter<S> {
        StoreWriter {
            store,
            workers,
            on_error,
            shutdown: CancellationToken::new(),
            notify: Notify::Skip,
            telemetry: Arc::new(Telemetry::default()),
            durable: Arc::new(AtomicU64::new(0)),
            report: true,
        }
    }

    fn barrier(seq: u64, checkpoint: Option<&str>) -> Arc<Barrier> {
        Arc::new(Barrier { seq, read_at: Instant::now(), checkpoint: checkpoint.map(|c| c.as_bytes().to_vec()) })
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
            WorkerOutput::Alerts(vec![alert(3)]),
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
        let msgs = vec![
            WorkerOutput::Alerts(vec![alert(2)]),
            WorkerOutput::Barrier(b1.clone()),
            WorkerOutput::Alerts(vec![alert(5)]),
            WorkerOutput::Barrier(b1.clone()),
        ];
        let (result, durable, telemetry) = run(writer(store.clone(), 2, OnStoreError::Fail), msgs);
        let alerts = result.unwrap();
        assert_eq!(alerts.len(), 1, "two snapshots of one alert are one alert");
        assert_eq!(alerts[0].requests, 5);
        assert_eq!(durable, 1);
        assert_eq!(store.get(&alert(0).id).unwrap().map(|a| a.requests), Some(5));
        assert_eq!(telemetry.alert_writes.load(Relaxed), 1, "coalesced into one write");
    }

    #[test]
    fn the_daemons_writer_keeps_no_alert_once_written() {
        let (_dir, store) = store();
        let msgs = vec![WorkerOutput::Alerts(vec![alert(2)]), WorkerOutput::Alerts(vec![alert(4)])];
        let (result, _, _) = run(StoreWriter { report: false, ..writer(store.clone(), 1, OnStoreError::Fail) }, msgs);
        assert!(result.unwrap().is_empty(), "nothing held for a report");
        assert_eq!(store.get(&alert(0).id).unwrap().map(|a| a.requests), Some(4), "but everything stored");
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
        let msgs = vec![WorkerOutput::Alerts(vec![alert(1)]), WorkerOutput::Barrier(barrier(1, Some("one")))];
        let (result, durable, telemetry) = run(writer(failing, 1, OnStoreError::Fail), msgs);
        assert!(matches!(result, Err(StoreError::Db(_))));
        assert_eq!(durable, 0);
        assert_eq!(telemetry.store_errors.load(Relaxed), 1);
    }

    #[test]
    fn a_failed_write_in_retry_mode_is_retried_until_the_store_recovers() {
        let (_dir, store) = store();
        let failing = FailingFlush { store: store.clone(), failures: AtomicU32::new(2) };
        let msgs = vec![WorkerOutput::Alerts(vec![alert(1)]), WorkerOutput::Barrier(barrier(1, Some("one")))];
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

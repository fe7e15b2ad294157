//! Durable alert storage on sled: the only module that talks to the database, so the engine
//! could be swapped. Owns the trees `alerts` (id → JSON), `alerts_by_time` (first_seen ‖ id),
//! `meta` (checkpoints) and the notifier outbox: `outbox` (alert id → [`OutboxMarker`]: the
//! alert changed and its receivers have not been told) and `deliveries` (receiver ‖ 0 ‖ alert
//! id → [`Delivery`]: what one receiver was told and what it still has to be told).
//! Never decides what an alert is (it merges snapshots with [`Alert::merge_from`]) nor whom to
//! tell or when (that is `alerting`'s job): it keeps the records atomic and durable.
//!
//! An alert change and its outbox marker are written in one sled transaction, so an alert is
//! never durable without its marker: a crash loses both or neither. Owns its settings
//! ([`StoreSettings`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use crate::detect::alert::{Alert, AlertStatus};

/// Where the store lives and how long it keeps alerts (`[store]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// The state directory: the sled database, the pseudonym key, quarantined databases.
    pub dir: PathBuf,
    /// Alerts last seen longer ago are removed by the retention sweep; at least 1 (0 would
    /// delete all evidence within the hour).
    pub retention_days: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the alert store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },
    #[error("alert store I/O error: {0}")]
    Db(#[from] sled::Error),
    #[error("stored alert {id} is not readable: {source}")]
    Corrupt { id: String, source: serde_json::Error },
    #[error("no alert with id {0}")]
    NotFound(String),
}

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> StoreError {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Db(e),
        }
    }
}

/// Whether [`Store::upsert`] queues changed alerts for the notifiers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Notify {
    /// The daemon: every stored change gets an outbox marker in the same write.
    Queue,
    /// Replay: alerts are for the report and the API, nobody is paged.
    Skip,
}

/// An alert changed and its receivers have not been told yet. One per alert: later changes
/// fold into it (coalescing), so a busy alert never queues more than one marker.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxMarker {
    /// Wall-clock time of the oldest change folded in (Unix ms).
    pub queued_ms: i64,
    /// A new alert or a status change (ack, resolve): not held back by update throttling.
    pub urgent: bool,
}

/// What one receiver was last told about one alert, and what it still has to be told.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// When the alert was first queued for this receiver (Unix ms, wall clock).
    pub queued_first_ms: i64,
    /// The oldest change the receiver has not been told about (Unix ms); None: up to date.
    pub pending_since_ms: Option<i64>,
    /// The waiting change is a new alert or a status change.
    pub urgent: bool,
    /// Bumped by every change queued, so a delivery only clears the changes it carried.
    pub changes: u64,
    /// Failed attempts since the last success.
    pub failures: u32,
    /// No attempt before this (Unix ms): the back-off after a failure.
    pub retry_at_ms: i64,
    /// What the receiver was last told (successfully), and when (Unix ms).
    pub told: Told,
    pub told_ms: i64,
    /// When the alert ended (Unix ms), fixed once known so every retry says the same.
    pub ends_ms: Option<i64>,
}

/// What a receiver knows about an alert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Told {
    #[default]
    Nothing,
    /// Firing.
    Active,
    /// Resolved or ended: nothing more will be told.
    Over,
}

/// Pending deliveries of one receiver, for its metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingStats {
    pub pending: u64,
    /// pending_since of the oldest pending delivery (Unix ms); None when nothing is pending.
    pub oldest_ms: Option<i64>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn delivery_key(receiver: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(receiver.len() + 1 + id.len());
    k.extend_from_slice(receiver.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn delivery_prefix(receiver: &str) -> Vec<u8> {
    let mut k = receiver.as_bytes().to_vec();
    k.push(0);
    k
}

/// Folds a change into the marker already queued for the alert (if any).
fn fold_marker(old: Option<&[u8]>, urgent: bool, now: i64) -> Vec<u8> {
    let marker = match old.and_then(|b| serde_json::from_slice::<OutboxMarker>(b).ok()) {
        Some(m) => OutboxMarker { queued_ms: m.queued_ms, urgent: m.urgent || urgent },
        None => OutboxMarker { queued_ms: now, urgent },
    };
    serde_json::to_vec(&marker).expect("a marker always serialises")
}

fn abort<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

/// Wakes the notifier's dispatcher when a marker is queued (lost wake-ups are harmless: it
/// also looks every half second).
struct OutboxSignal {
    tx: crossbeam_channel::Sender<()>,
    rx: crossbeam_channel::Receiver<()>,
}

impl OutboxSignal {
    fn new() -> OutboxSignal {
        let (tx, rx) = crossbeam_channel::bounded(1);
        OutboxSignal { tx, rx }
    }

    fn ring(&self) {
        let _ = self.tx.try_send(());
    }
}

/// Which alerts [`Store::list`] returns.
#[derive(Clone, Debug, Default)]
pub struct AlertFilter {
    pub rule: Option<String>,
    pub client: Option<String>,
    pub status: Option<AlertStatus>,
    /// Only alerts whose last_seen is at or after this (Unix seconds).
    pub since: Option<i64>,
}

impl AlertFilter {
    fn accepts(&self, a: &Alert) -> bool {
        self.rule.as_ref().is_none_or(|r| *r == a.rule || *r == a.rule_id)
            && self.client.as_ref().is_none_or(|c| *c == a.client)
            && self.status.is_none_or(|s| s == a.status)
            && self.since.is_none_or(|t| a.last_seen >= t)
    }
}

/// Cheap to clone: every clone is a handle on the same database.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    alerts: sled::Tree,
    by_time: sled::Tree,
    /// Small records of the daemon itself: source checkpoints.
    meta: sled::Tree,
    outbox: sled::Tree,
    deliveries: sled::Tree,
    signal: Arc<OutboxSignal>,
}

const CHECKPOINT_KEY: &[u8] = b"source_checkpoint";

/// Index key: first_seen with the sign bit flipped (so byte order is time order), then the id.
fn time_key(a: &Alert) -> Vec<u8> {
    let mut k = ((a.first_seen as u64) ^ (1 << 63)).to_be_bytes().to_vec();
    k.extend_from_slice(a.id.as_bytes());
    k
}

impl Store {
    /// Opens the store kept in a state directory (the database is its `db` subdirectory).
    pub fn open_state_dir(state_dir: &Path) -> Result<Store, StoreError> {
        Store::open(&state_dir.join("db"))
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .open()
            .map_err(|source| StoreError::Open { path: dir.to_path_buf(), source })?;
        let alerts = db.open_tree("alerts")?;
        let by_time = db.open_tree("alerts_by_time")?;
        let meta = db.open_tree("meta")?;
        let outbox = db.open_tree("outbox")?;
        let deliveries = db.open_tree("deliveries")?;
        Ok(Store { db, alerts, by_time, meta, outbox, deliveries, signal: Arc::new(OutboxSignal::new()) })
    }

    /// Inserts or merges each alert (same id → one record; counters never go down), in one
    /// transaction, so a concurrent ack from the API is never lost. With [`Notify::Queue`],
    /// every alert whose stored record changed gets its outbox marker in the same transaction
    /// (urgent when the alert is new); re-reading lines that change nothing queues nothing.
    /// Returns the indices of the alerts whose id was new. Not durable until [`Store::flush`]
    /// returns.
    pub fn upsert(&self, alerts: &[Alert], notify: Notify) -> Result<Vec<usize>, StoreError> {
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let created = (&self.alerts, &self.by_time, &self.outbox).transaction(|(tx_alerts, tx_index, tx_outbox)| {
            let mut created = Vec::new();
            for (i, newer) in alerts.iter().enumerate() {
                let id = newer.id.as_bytes();
                let old = tx_alerts.get(id)?;
                let stored = old.as_ref().and_then(|bytes| serde_json::from_slice::<Alert>(bytes).ok());
                // New, or an unreadable record: the live snapshot replaces it.
                let merged = match &stored {
                    Some(stored) => {
                        let mut merged = stored.clone();
                        merged.merge_from(newer);
                        merged
                    }
                    None => newer.clone(),
                };
                if old.is_none() {
                    created.push(i);
                }
                let bytes = match serde_json::to_vec(&merged) {
                    Ok(b) => b,
                    Err(source) => return abort(StoreError::Corrupt { id: newer.id.clone(), source }),
                };
                if old.as_deref() == Some(bytes.as_slice()) {
                    continue;
                }
                if let Some(stored) = &stored {
                    if stored.first_seen != merged.first_seen {
                        tx_index.remove(time_key(stored))?;
                    }
                }
                tx_alerts.insert(id, bytes)?;
                tx_index.insert(time_key(&merged), &[])?;
                if notify == Notify::Queue {
                    let marker = fold_marker(tx_outbox.get(id)?.as_deref(), old.is_none(), now);
                    tx_outbox.insert(id, marker)?;
                }
            }
            Ok(created)
        })?;
        if notify == Notify::Queue {
            self.signal.ring();
        }
        Ok(created)
    }

    /// Replaces the source checkpoint (opaque to the store: the tailer's serialised
    /// positions). Durable with the next [`Store::flush`], together with alerts written before.
    pub fn save_checkpoint(&self, checkpoint: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(CHECKPOINT_KEY, checkpoint)?;
        Ok(())
    }

    pub fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(CHECKPOINT_KEY)?.map(|v| v.to_vec()))
    }

    /// Makes every write so far durable; returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    pub fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        match self.alerts.get(id.as_bytes())? {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { id: id.to_string(), source }),
        }
    }

    /// Alerts in first-seen order.
    pub fn list(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let mut out = Vec::new();
        for item in self.by_time.iter() {
            let (key, _) = item?;
            let id = String::from_utf8_lossy(&key[8..]).into_owned();
            if let Some(a) = self.get(&id)? {
                if filter.accepts(&a) {
                    out.push(a);
                }
            }
        }
        Ok(out)
    }

    /// Sets an alert's status (ack, resolve) durably; a change is queued for the notifiers
    /// (urgent) in the same transaction.
    pub fn set_status(&self, id: &str, status: AlertStatus) -> Result<Alert, StoreError> {
        let now = now_ms();
        let updated = (&self.alerts, &self.outbox).transaction(|(tx_alerts, tx_outbox)| {
            let Some(bytes) = tx_alerts.get(id.as_bytes())? else {
                return abort(StoreError::NotFound(id.to_string()));
            };
            let mut a: Alert = match serde_json::from_slice(&bytes) {
                Ok(a) => a,
                Err(source) => return abort(StoreError::Corrupt { id: id.to_string(), source }),
            };
            if a.status != status {
                a.status = status;
                let bytes = serde_json::to_vec(&a).expect("an alert always serialises");
                tx_alerts.insert(id.as_bytes(), bytes)?;
                tx_outbox.insert(id.as_bytes(), fold_marker(tx_outbox.get(id.as_bytes())?.as_deref(), true, now))?;
            }
            Ok(a)
        })?;
        self.flush()?;
        self.signal.ring();
        Ok(updated)
    }

    // --- the notifier outbox

    /// Up to `limit` queued markers, by alert id.
    pub fn outbox_markers(&self, limit: usize) -> Result<Vec<(String, OutboxMarker)>, StoreError> {
        let mut out = Vec::new();
        for item in self.outbox.iter().take(limit) {
            let (key, value) = item?;
            let id = String::from_utf8_lossy(&key).into_owned();
            // An unreadable marker still says "this alert changed".
            let marker = serde_json::from_slice(&value).unwrap_or(OutboxMarker { queued_ms: now_ms(), urgent: true });
            out.push((id, marker));
        }
        Ok(out)
    }

    /// Moves the marker of alert `id` into the deliveries of `receivers`, atomically: each
    /// receiver's record becomes `update(receiver, marker, existing record)` (None removes
    /// or skips it), and the marker is removed. `update` may run more than once.
    pub fn fan_out(
        &self,
        id: &str,
        receivers: &[&str],
        update: impl Fn(&str, &OutboxMarker, Option<Delivery>) -> Option<Delivery>,
    ) -> Result<(), StoreError> {
        (&self.outbox, &self.deliveries).transaction(|(tx_outbox, tx_deliveries)| {
            let Some(bytes) = tx_outbox.remove(id.as_bytes())? else { return Ok(()) };
            let marker = serde_json::from_slice(&bytes).unwrap_or(OutboxMarker { queued_ms: now_ms(), urgent: true });
            for receiver in receivers {
                let key = delivery_key(receiver, id);
                let existing = tx_deliveries.get(&key)?.and_then(|b| serde_json::from_slice::<Delivery>(&b).ok());
                match update(receiver, &marker, existing) {
                    Some(d) => {
                        tx_deliveries.insert(key, serde_json::to_vec(&d).expect("a delivery always serialises"))?;
                    }
                    None => {
                        tx_deliveries.remove(key)?;
                    }
                }
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Waits until a marker may have been queued, at most `timeout`.
    pub fn wait_for_outbox(&self, timeout: Duration) {
        let _ = self.signal.rx.recv_timeout(timeout);
    }

    /// Ends a [`Store::wait_for_outbox`] early (at shutdown).
    pub fn interrupt_outbox_wait(&self) {
        self.signal.ring();
    }

    /// Every delivery record of one receiver, by alert id. An unreadable record is returned
    /// as a fresh one (the receiver is told again: at least once).
    pub fn deliveries(&self, receiver: &str) -> Result<Vec<(String, Delivery)>, StoreError> {
        let prefix = delivery_prefix(receiver);
        let mut out = Vec::new();
        for item in self.deliveries.scan_prefix(&prefix) {
            let (key, value) = item?;
            let id = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
            let d = serde_json::from_slice(&value).unwrap_or(Delivery {
                queued_first_ms: now_ms(),
                pending_since_ms: Some(now_ms()),
                ..Delivery::default()
            });
            out.push((id, d));
        }
        Ok(out)
    }

    /// Replaces one delivery record with `update(current)` atomically (None removes it);
    /// returns what was written.
    pub fn update_delivery(
        &self,
        receiver: &str,
        id: &str,
        mut update: impl FnMut(Option<Delivery>) -> Option<Delivery>,
    ) -> Result<Option<Delivery>, StoreError> {
        let written = self.deliveries.update_and_fetch(delivery_key(receiver, id), |old| {
            let current = old.and_then(|b| serde_json::from_slice::<Delivery>(b).ok());
            update(current).map(|d| serde_json::to_vec(&d).expect("a delivery always serialises"))
        })?;
        Ok(written.and_then(|b| serde_json::from_slice(&b).ok()))
    }

    /// Removes the delivery records of receivers not in `keep` (removed from the config);
    /// returns how many were removed, by receiver.
    pub fn drop_deliveries_except(&self, keep: &[&str]) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut dropped = BTreeMap::new();
        for item in self.deliveries.iter() {
            let (key, _) = item?;
            let receiver = key.split(|&b| b == 0).next().unwrap_or(&[]);
            let receiver = String::from_utf8_lossy(receiver).into_owned();
            if !keep.contains(&receiver.as_str()) {
                self.deliveries.remove(&key)?;
                *dropped.entry(receiver).or_insert(0) += 1;
            }
        }
        Ok(dropped)
    }

    /// Pending deliveries per receiver (receivers with none are absent).
    pub fn pending_deliveries(&self) -> Result<BTreeMap<String, PendingStats>, StoreError> {
        let mut out: BTreeMap<String, PendingStats> = BTreeMap::new();
        for item in self.deliveries.iter() {
            let (key, value) = item?;
            let Ok(d) = serde_json::from_slice::<Delivery>(&value) else { continue };
            let Some(since) = d.pending_since_ms else { continue };
            let receiver = key.split(|&b| b == 0).next().unwrap_or(&[]);
            let stats = out.entry(String::from_utf8_lossy(receiver).into_owned()).or_default();
            stats.pending += 1;
            stats.oldest_ms = Some(stats.oldest_ms.map_or(since, |o| o.min(since)));
        }
        Ok(out)
    }

    /// Markers not yet moved into deliveries.
    pub fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    /// Alerts not resolved, by (rule name, severity): for the open-alerts gauge.
    pub fn count_unresolved(&self) -> Result<BTreeMap<(String, String), u64>, StoreError> {
        let mut out = BTreeMap::new();
        for item in self.alerts.iter() {
            let (_, bytes) = item?;
            if let Ok(a) = serde_json::from_slice::<Alert>(&bytes) {
                if a.status != AlertStatus::Resolved {
                    *out.entry((a.rule, a.severity.as_str().to_string())).or_insert(0) += 1;
                }
            }
        }
        Ok(out)
    }

    /// The retention sweep: removes alerts whose last request is before `cutoff` (Unix
    /// seconds), with their index entries and anything still queued for them, durably.
    /// Returns how many were removed.
    pub fn remove_last_seen_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        // An alert first seen at or after the cutoff was also last seen after it: scan the
        // time index only up to there.
        let end = ((cutoff as u64) ^ (1 << 63)).to_be_bytes();
        let mut removed_ids = std::collections::HashSet::new();
        for item in self.by_time.range(..end.as_slice()) {
            let (key, _) = item?;
            let id = &key[8..];
            let expired = match self.alerts.get(id)? {
                None => true,
                Some(bytes) => serde_json::from_slice::<Alert>(&bytes).map_or(true, |a| a.last_seen < cutoff),
            };
            if expired {
                self.alerts.remove(id)?;
                self.by_time.remove(&key)?;
                self.outbox.remove(id)?;
                removed_ids.insert(id.to_vec());
            }
        }
        if removed_ids.is_empty() {
            return Ok(0);
        }
        for item in self.deliveries.iter() {
            let (key, _) = item?;
            let id = key.iter().position(|&b| b == 0).map_or(&key[..0], |i| &key[i + 1..]);
            if removed_ids.contains(id) {
                self.deliveries.remove(&key)?;
            }
        }
        self.flush()?;
        Ok(removed_ids.len())
    }

    pub fn len(&self) -> usize {
        self.alerts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.alerts.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rule::Severity;

    fn alert(client: &str, first_seen: i64, requests: u64) -> Alert {
        Alert {
            id: Alert::make_id("R1", client, first_seen),
            rule_id: "R1".into(),
            rule: "unknown-client-fetch".into(),
            severity: Severity::Critical,
            group_by: "client".into(),
            client: client.into(),
            client_kind: "unknown".into(),
            partner: None,
            source: "test".into(),
            first_seen,
            last_seen: first_seen + 5,
            requests,
            distinct_resources: 1,
            bytes: 10,
            sample: vec!["/recordings/a.wav".into()],
            user_agents: vec![],
            status: AlertStatus::Open,
        }
    }

    #[test]
    fn upsert_is_idempotent_and_listing_is_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b) = (alert("1.1.1.1", 200, 3), alert("2.2.2.2", 100, 1));
        store.upsert(&[a.clone(), b.clone()], Notify::Skip).unwrap();
        store.upsert(std::slice::from_ref(&a), Notify::Skip).unwrap();
        store.flush().unwrap();
        assert_eq!(store.len(), 2);
        let listed = store.list(&AlertFilter::default()).unwrap();
        assert_eq!(listed.iter().map(|x| x.client.as_str()).collect::<Vec<_>>(), ["2.2.2.2", "1.1.1.1"]);
        let only = store.list(&AlertFilter { client: Some("1.1.1.1".into()), ..Default::default() }).unwrap();
        assert_eq!(only, vec![a]);
    }

    #[test]
    fn ack_survives_a_reopen_and_a_later_update() {
        let dir = tempfile::tempdir().unwrap();
        let a = alert("3.3.3.3", 50, 2);
        {
            let store = Store::open(dir.path()).unwrap();
            store.upsert(std::slice::from_ref(&a), Notify::Skip).unwrap();
            store.set_status(&a.id, AlertStatus::Acked).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        store.upsert(&[alert("3.3.3.3", 50, 9)], Notify::Skip).unwrap();
        let got = store.get(&a.id).unwrap().unwrap();
        assert_eq!((got.status, got.requests), (AlertStatus::Acked, 9));
        assert!(matches!(store.set_status("nope", AlertStatus::Resolved), Err(StoreError::NotFound(_))));
    }

    #[test]
    fn retention_sweep_removes_only_alerts_last_seen_before_the_cutoff() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        // last_seen = first_seen + 5: 105, 995 (first seen before the cutoff, still active), 2005
        let (old, active, new) = (alert("1.1.1.1", 100, 1), alert("2.2.2.2", 990, 1), alert("3.3.3.3", 2000, 1));
        store.upsert(&[old.clone(), active.clone(), new.clone()], Notify::Skip).unwrap();
        assert_eq!(store.remove_last_seen_before(993).unwrap(), 1);
        assert_eq!(store.get(&old.id).unwrap(), None);
        let left: Vec<String> = store.list(&AlertFilter::default()).unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(left, [active.id, new.id]);
        assert_eq!(store.remove_last_seen_before(993).unwrap(), 0, "a second sweep finds nothing");
        // what is still queued for an expired alert goes with it
        let queued = alert("6.6.6.6", 300, 1);
        store.upsert(std::slice::from_ref(&queued), Notify::Queue).unwrap();
        store
            .fan_out(&queued.id, &["am"], |_, m, _| {
                Some(Delivery { queued_first_ms: m.queued_ms, ..Delivery::default() })
            })
            .unwrap();
        store.upsert(&[alert("6.6.6.6", 300, 2)], Notify::Queue).unwrap();
        assert_eq!((store.outbox_len(), store.deliveries("am").unwrap().len()), (1, 1));
        assert_eq!(store.remove_last_seen_before(993).unwrap(), 1);
        assert_eq!((store.outbox_len(), store.deliveries("am").unwrap().len()), (0, 0));
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().len(), 2, "the removal is durable");
    }

    #[test]
    fn a_change_and_its_outbox_marker_are_one_write_and_an_unchanged_alert_queues_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = alert("4.4.4.4", 70, 1);
        store.upsert(std::slice::from_ref(&a), Notify::Skip).unwrap();
        assert_eq!(store.outbox_len(), 0, "replay queues nothing");
        let b = alert("5.5.5.5", 80, 1);
        store.upsert(std::slice::from_ref(&b), Notify::Queue).unwrap();
        let markers = store.outbox_markers(10).unwrap();
        assert_eq!(markers.len(), 1);
        assert_eq!(markers[0].0, b.id);
        assert!(markers[0].1.urgent, "a new alert is urgent");
        // moved into two receivers' deliveries, atomically with the marker's removal
        store
            .fan_out(&b.id, &["am", "hook"], |receiver, marker, existing| {
                assert!(existing.is_none());
                (receiver == "am" || receiver == "hook").then(|| Delivery {
                    queued_first_ms: marker.queued_ms,
                    pending_since_ms: Some(marker.queued_ms),
                    ..Delivery::default()
                })
            })
            .unwrap();
        assert_eq!(store.outbox_len(), 0);
        assert_eq!(store.deliveries("am").unwrap().len(), 1);
        let pending = store.pending_deliveries().unwrap();
        assert_eq!(pending["hook"].pending, 1);
        // the same snapshot again (a re-read after a restart) changes nothing: no marker
        store.upsert(std::slice::from_ref(&b), Notify::Queue).unwrap();
        assert_eq!(store.outbox_len(), 0);
        // more requests: one coalesced, non-urgent marker however many updates
        store.upsert(&[alert("5.5.5.5", 80, 2)], Notify::Queue).unwrap();
        store.upsert(&[alert("5.5.5.5", 80, 3)], Notify::Queue).unwrap();
        let markers = store.outbox_markers(10).unwrap();
        assert_eq!(markers.len(), 1);
        assert!(!markers[0].1.urgent);
        // an ack folds in and makes it urgent; acking again changes nothing
        store.set_status(&b.id, AlertStatus::Acked).unwrap();
        store.set_status(&b.id, AlertStatus::Acked).unwrap();
        let markers = store.outbox_markers(10).unwrap();
        assert_eq!(markers.len(), 1);
        assert!(markers[0].1.urgent);
        // all of it durable across a reopen
        store.flush().unwrap();
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.outbox_len(), 1);
        assert_eq!(store.deliveries("hook").unwrap().len(), 1);
        let dropped = store.drop_deliveries_except(&["am"]).unwrap();
        assert_eq!(dropped.get("hook"), Some(&1));
        assert!(store.deliveries("hook").unwrap().is_empty());
        assert_eq!(store.deliveries("am").unwrap().len(), 1);
    }

    #[test]
    fn delivery_updates_are_atomic_read_modify_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let written = store
            .update_delivery("am", "x", |cur| {
                assert!(cur.is_none());
                Some(Delivery { changes: 1, ..Delivery::default() })
            })
            .unwrap();
        assert_eq!(written.map(|d| d.changes), Some(1));
        store.update_delivery("am", "x", |cur| cur.map(|d| Delivery { changes: d.changes + 1, ..d })).unwrap();
        assert_eq!(store.deliveries("am").unwrap()[0].1.changes, 2);
        assert!(store.deliveries("a").unwrap().is_empty(), "receiver names are not prefixes of each other");
        store.update_delivery("am", "x", |_| None).unwrap();
        assert!(store.deliveries("am").unwrap().is_empty());
        assert!(matches!(store.set_status("nope", AlertStatus::Acked), Err(StoreError::NotFound(_))));
    }
}

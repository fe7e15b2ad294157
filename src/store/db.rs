//! The sled engine behind the store owner: the trees and every read and write of them. Owned
//! by the owner thread ([`super::owner`]) and used by nobody else, so sled is only ever entered
//! from one thread (sled 0.34.7 can deadlock under concurrent use from several threads, see
//! issue 14). Never waits for anything but the disk and never decides what to store: the
//! methods are the records' shapes and their atomicity, nothing more.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError, Transactional};

use super::ledger::{self, add_alert_paths, add_evidence, InlinePaths, Spill};
use super::{
    now_ms, AlertFilter, Counts, Delivery, Notify, OutboxMarker, PendingStats, Rollup, StoreError, StoreWrite,
};
use crate::detect::alert::{Alert, AlertStatus};
use crate::detect::evidence::Evidence;

const CHECKPOINT_KEY: &[u8] = b"source_checkpoint";
/// The tree of ledger hours of stores written before entries kept their own (see
/// [`ledger::migrate_hour_rows`]).
const LEGACY_HOUR_ROWS: &str = "ledger_by_hour";
/// sled's page cache (its default is 1 GiB): the store may hold millions of alerts and ledger
/// entries, the daemon's memory must not grow with them (issue 13: ≤ 64 MiB at 100 k clients).
/// sled counts pages by their size on disk; in memory they take about twice that. A mass
/// fetch of 100 k clients peaked at 83 MiB with 16 MiB, 77 with 8 and 74 with 4 (4 cost a
/// quarter of its lines/s, 8 nothing measurable).
const CACHE_BYTES: u64 = 8 << 20;
/// The id of the last write applied: a write retried after a failed flush is not added twice.
const LAST_WRITE_KEY: &[u8] = b"last_write";
/// Written once when a store is created and flushed with it: a store whose `db` file exists
/// but holds no marker and no data was not written by recwatch (or was zeroed).
pub(super) const FORMAT_KEY: &[u8] = b"store_format";
const FORMAT_VALUE: &[u8] = b"recwatch-store-1";

impl From<TransactionError<StoreError>> for StoreError {
    fn from(e: TransactionError<StoreError>) -> StoreError {
        match e {
            TransactionError::Abort(e) => e,
            TransactionError::Storage(e) => StoreError::Db(e),
        }
    }
}

fn abort<T>(e: StoreError) -> Result<T, ConflictableTransactionError<StoreError>> {
    Err(ConflictableTransactionError::Abort(e))
}

pub(super) fn delivery_key(receiver: &str, id: &str) -> Vec<u8> {
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

/// An unreadable marker still says "this alert changed".
pub(super) fn decode_marker(bytes: &[u8]) -> OutboxMarker {
    serde_json::from_slice(bytes).unwrap_or(OutboxMarker { queued_ms: now_ms(), urgent: true })
}

/// Index key: first_seen with the sign bit flipped (so byte order is time order), then the id.
fn time_key(a: &Alert) -> Vec<u8> {
    keyed_by_time(a.first_seen, &a.id)
}

/// `time` (offset so negative times sort first) then `id`: the shape of the time index's keys
/// and of the records' keys of ids that lead with their time.
fn keyed_by_time(time: i64, id: &str) -> Vec<u8> {
    let mut k = ledger::ordered(time).to_vec();
    k.extend_from_slice(id.as_bytes());
    k
}

/// The key of `id`'s record in `alerts`: an id that leads with the second its alert opened is
/// keyed by that time, so records are inserted and kept in time order and need no time-index
/// entry (issue 13: sled's memory follows its entries, and inserts spread over a tree cost
/// it far more than inserts at its end); an id made before is keyed by its text (and indexed
/// by [`time_key`]).
fn record_key(id: &str) -> Vec<u8> {
    match Alert::parse_id(id).and_then(|key| key.opened) {
        Some(opened) => keyed_by_time(i64::from(opened), id),
        None => id.as_bytes().to_vec(),
    }
}

/// Whether an alert's record is found through the time index (its id does not lead with its
/// time).
fn is_indexed(id: &str) -> bool {
    Alert::parse_id(id).is_none_or(|key| key.opened.is_none())
}

/// The keys in `alerts` of records keyed by time: the opening second is below 2^32, so their
/// first byte is 0x80; an id's text (hex digits) starts below it.
const TIMED_RECORDS: std::ops::Range<&[u8]> = &[0x80]..&[0x81];

/// The id in a key [`keyed_by_time`] made.
fn id_of_time_key(key: &[u8]) -> String {
    String::from_utf8_lossy(key.get(8..).unwrap_or_default()).into_owned()
}

/// The id in a key of `alerts` ([`record_key`]).
fn id_in_record_key(key: &[u8]) -> &[u8] {
    if TIMED_RECORDS.contains(&key) {
        key.get(8..).unwrap_or_default()
    } else {
        key
    }
}

/// One row of the ledger's time index: hour, client key, path key, counts.
pub type LedgerHour = (i64, u128, u128, crate::detect::evidence::HourCounts);

/// The (client, path) keys of a ledger key (zeros where it is short).
fn key_pair(key: &[u8]) -> (u128, u128) {
    let at = |i: usize| key.get(i..i + 16).and_then(|b| b.try_into().ok()).map_or(0, u128::from_be_bytes);
    (at(0), at(16))
}

/// What the owner read for a fan-out: the marker's bytes and each receiver's record's bytes.
pub(super) type FanOutRead = Option<(Vec<u8>, Vec<Option<Vec<u8>>>)>;

/// What an alert record holds besides the alert (the API and every reader decode only the
/// [`Alert`], whose decoding skips these fields).
/// A record without them was written before records carried them: its distinct set is all in
/// `alert_paths`, and its roll-up (if any) in `alerts_rolled_up`.
#[derive(serde::Serialize, serde::Deserialize, Default, Clone)]
struct RecordExtras {
    /// The first distinct path keys ([`InlinePaths`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_keys: InlinePaths,
    /// The roll-up alert it was paged through, in a storm (one sled entry less per alert of
    /// a mass fetch than a tree of its own: sled's memory follows its number of entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollup: Option<String>,
    /// Its keys past the inline ones are kept in buckets ([`Spill::Buckets`]); a record
    /// written before buckets has them one entry per key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    buckets: bool,
}

impl RecordExtras {
    /// What a new record carries: no keys yet, kept in buckets past the inline ones.
    fn new() -> RecordExtras {
        RecordExtras { path_keys: Some(Vec::new()), rollup: None, buckets: true }
    }

    /// Written by a version that kept the roll-up in the record (it always carries its keys,
    /// if none yet).
    fn is_current(&self) -> bool {
        self.path_keys.is_some()
    }

    fn spill(&self) -> Spill {
        if self.buckets {
            Spill::Buckets
        } else {
            Spill::Keys
        }
    }
}

#[derive(serde::Serialize)]
struct RecordOut<'a> {
    #[serde(flatten)]
    alert: &'a Alert,
    #[serde(flatten)]
    extras: &'a RecordExtras,
}

/// A stored alert record: the alert and what only the store reads of it.
fn decode_record(bytes: &[u8]) -> Option<(Alert, RecordExtras)> {
    let alert = serde_json::from_slice::<Alert>(bytes).ok()?;
    Some((alert, decode_extras(bytes)))
}

fn decode_extras(bytes: &[u8]) -> RecordExtras {
    serde_json::from_slice::<RecordExtras>(bytes).unwrap_or_default()
}

fn encode_record(alert: &Alert, extras: &RecordExtras) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(&RecordOut { alert, extras })
}

/// What a tally needs of a stored alert.
#[derive(serde::Deserialize)]
struct AlertHead {
    rule: String,
    severity: crate::detect::rule::Severity,
    status: AlertStatus,
}

/// The numbers every `/metrics` scrape reads, kept current by each write instead of a scan
/// per scrape (a scan of every alert on every scrape would hold the owner as the store grows).
#[derive(Default)]
struct Tallies {
    /// Alert records stored (the unfiltered list's total, without counting keys).
    total: u64,
    /// Unresolved alerts by (rule name, severity).
    unresolved: BTreeMap<(String, String), u64>,
    /// Pending deliveries per receiver: pending_since_ms → how many.
    pending: BTreeMap<String, BTreeMap<i64, u64>>,
}

/// What `/metrics` and the unfiltered alert count read, published by the owner after every
/// request that changed it ([`super::Published`]): scrapes never queue behind a busy owner.
#[derive(Clone, Debug, Default)]
pub(super) struct TallySnapshot {
    pub(super) total: u64,
    pub(super) unresolved: BTreeMap<(String, String), u64>,
    pub(super) pending: BTreeMap<String, PendingStats>,
}

fn add(count: &mut u64, up: bool) {
    *count = if up { *count + 1 } else { count.saturating_sub(1) };
}

impl Tallies {
    /// An alert record appears (`up`) or goes away.
    fn alert(&mut self, bytes: Option<&[u8]>, up: bool) {
        let Some(bytes) = bytes else { return };
        add(&mut self.total, up);
        let Ok(a) = serde_json::from_slice::<AlertHead>(bytes) else { return };
        if a.status == AlertStatus::Resolved {
            return;
        }
        let key = (a.rule, a.severity.as_str().to_string());
        let count = self.unresolved.entry(key.clone()).or_insert(0);
        add(count, up);
        if *count == 0 {
            self.unresolved.remove(&key);
        }
    }

    fn alert_changed(&mut self, old: Option<&[u8]>, new: Option<&[u8]>) {
        self.alert(old, false);
        self.alert(new, true);
    }

    /// A delivery record appears (`up`) or goes away.
    fn delivery(&mut self, key: &[u8], bytes: Option<&[u8]>, up: bool) {
        let Some(since) =
            bytes.and_then(|b| serde_json::from_slice::<Delivery>(b).ok()).and_then(|d| d.pending_since_ms)
        else {
            return;
        };
        let receiver = String::from_utf8_lossy(key.split(|&b| b == 0).next().unwrap_or(&[])).into_owned();
        let by_time = self.pending.entry(receiver.clone()).or_default();
        let count = by_time.entry(since).or_insert(0);
        add(count, up);
        if *count == 0 {
            by_time.remove(&since);
        }
        if by_time.is_empty() {
            self.pending.remove(&receiver);
        }
    }

    fn delivery_changed(&mut self, key: &[u8], old: Option<&[u8]>, new: Option<&[u8]>) {
        self.delivery(key, old, false);
        self.delivery(key, new, true);
    }
}

/// The open database and its trees.
pub(super) struct Db {
    db: sled::Db,
    /// Alert records under [`record_key`]: in the order their alerts opened, then the records of
    /// ids made before ids led with their time.
    alerts: sled::Tree,
    /// The time index of records whose ids do not lead with their time ([`time_key`]).
    by_time: sled::Tree,
    /// Small records of the daemon itself: source checkpoints, the format marker.
    meta: sled::Tree,
    outbox: sled::Tree,
    deliveries: sled::Tree,
    /// The evidence ledger and the alerts' distinct sets ([`super::ledger`]).
    ledger: sled::Tree,
    alert_paths: sled::Tree,
    /// Alert id → the id of the roll-up alert receivers are told about instead: read only for
    /// records written before a record carried its roll-up ([`RecordExtras`]); retention
    /// still clears it.
    rolled_up: sled::Tree,
    /// Roll-up alerts by id: what receivers are told in a storm. Read like alerts by id
    /// ([`Db::get`]), never listed or counted as alerts of their own.
    rollups: sled::Tree,
    /// Storms of new alerts per (rule id, source), for roll-up paging (in memory: a restart
    /// starts afresh).
    storms: RefCell<HashMap<(String, String), Storm>>,
    tallies: RefCell<Tallies>,
    /// The tallies changed since [`Db::changed_tallies`] last looked.
    tallies_changed: std::cell::Cell<bool>,
}

/// New alerts of one rule for one source since `start` (event time).
#[derive(Clone, Default)]
struct Storm {
    start: i64,
    opened: u64,
    /// The roll-up alert of this window, once there is one.
    rollup: Option<String>,
    /// The clients with the most requests, at most [`TOP_CLIENTS`], most first.
    top: Vec<(String, u64)>,
}

/// Counts a new alert into its (rule, source) storm; the id of the roll-up alert it is paged
/// through, once more than `rollup.after` opened within the storm's window.
fn storm_rollup(storms: &mut HashMap<(String, String), Storm>, rollup: Rollup, a: &Alert) -> Option<String> {
    if rollup.after == 0 {
        return None;
    }
    let storm = storms.entry((a.rule_id.clone(), a.source.clone())).or_default();
    if storm.opened == 0 || a.first_seen > storm.start.saturating_add(rollup.window_secs) {
        *storm = Storm { start: a.first_seen, ..Storm::default() };
    }
    storm.opened += 1;
    if storm.opened <= rollup.after {
        return None;
    }
    let start = storm.start;
    Some(
        storm.rollup.get_or_insert_with(|| Alert::make_id(&a.rule_id, &format!("rollup\0{}", a.source), start)).clone(),
    )
}

/// Clients a roll-up alert names (in its `sample`).
const TOP_CLIENTS: usize = 20;

impl Storm {
    /// Notes `client`'s request total; keeps the top [`TOP_CLIENTS`].
    fn note(&mut self, client: &str, requests: u64) {
        if let Some((_, n)) = self.top.iter_mut().find(|(c, _)| c == client) {
            *n = requests;
        } else if self.top.len() < TOP_CLIENTS {
            self.top.push((client.to_string(), requests));
        } else if let Some(last) = self.top.last_mut().filter(|(_, n)| *n < requests) {
            *last = (client.to_string(), requests);
        }
        self.top.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    }
}

impl Db {
    /// Opens (creating if needed) the database in `dir`. sled's own flusher is off: nothing
    /// touches sled behind the owner's back; flushes are explicit.
    pub(super) fn open(dir: &Path) -> Result<Db, sled::Error> {
        let db = sled::Config::new().path(dir).flush_every_ms(None).cache_capacity(CACHE_BYTES).open()?;
        let alerts = db.open_tree("alerts")?;
        let by_time = db.open_tree("alerts_by_time")?;
        let meta = db.open_tree("meta")?;
        let outbox = db.open_tree("outbox")?;
        let deliveries = db.open_tree("deliveries")?;
        let ledger = db.open_tree("ledger")?;
        if db.tree_names().iter().any(|name| name.as_ref() == LEGACY_HOUR_ROWS.as_bytes()) {
            let rows = db.open_tree(LEGACY_HOUR_ROWS)?;
            let migrated = ledger::migrate_hour_rows(&ledger, &rows).map_err(|e| match e {
                StoreError::Db(e) => e,
                other => sled::Error::Unsupported(other.to_string()),
            })?;
            drop(rows);
            db.drop_tree(LEGACY_HOUR_ROWS)?;
            db.flush()?;
            tracing::info!(migrated, "ledger hours moved into their entries");
        }
        let alert_paths = db.open_tree("alert_paths")?;
        let rolled_up = db.open_tree("alerts_rolled_up")?;
        let rollups = db.open_tree("rollups")?;
        let mut tallies = Tallies::default();
        for item in alerts.iter() {
            tallies.alert(Some(&item?.1), true);
        }
        for item in deliveries.iter() {
            let (key, value) = item?;
            tallies.delivery(&key, Some(&value), true);
        }
        Ok(Db {
            db,
            alerts,
            by_time,
            meta,
            outbox,
            deliveries,
            ledger,
            alert_paths,
            rolled_up,
            rollups,
            storms: RefCell::default(),
            tallies: RefCell::new(tallies),
            tallies_changed: std::cell::Cell::new(true),
        })
    }

    /// Whether the store carries the format marker or any record (a store from before the
    /// marker existed).
    pub(super) fn looks_written(&self) -> Result<bool, sled::Error> {
        Ok(self.meta.get(FORMAT_KEY)?.is_some() || !self.alerts.is_empty() || !self.meta.is_empty())
    }

    /// Writes the format marker (durably) if it is missing.
    pub(super) fn mark_format(&self) -> Result<(), sled::Error> {
        if self.meta.get(FORMAT_KEY)?.is_none() {
            self.meta.insert(FORMAT_KEY, FORMAT_VALUE)?;
            self.db.flush()?;
        }
        Ok(())
    }

    pub(super) fn upsert(&self, alerts: &[Alert], notify: Notify) -> Result<Vec<usize>, StoreError> {
        if alerts.is_empty() {
            return Ok(Vec::new());
        }
        let now = now_ms();
        let (created, changes) =
            (&self.alerts, &self.by_time, &self.outbox).transaction(|(tx_alerts, tx_index, tx_outbox)| {
                let mut created = Vec::new();
                let mut changes = Vec::new();
                for (i, newer) in alerts.iter().enumerate() {
                    let id = newer.id.as_bytes();
                    let key = record_key(&newer.id);
                    let old = tx_alerts.get(&key)?;
                    let record = old.as_ref().and_then(|bytes| decode_record(bytes));
                    let (stored, extras) = match record {
                        Some((alert, extras)) => (Some(alert), extras),
                        None => (None, RecordExtras::default()),
                    };
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
                    let bytes = match encode_record(&merged, &extras) {
                        Ok(b) => b,
                        Err(source) => return abort(StoreError::Corrupt { id: newer.id.clone(), source }),
                    };
                    if old.as_deref() == Some(bytes.as_slice()) {
                        continue;
                    }
                    if is_indexed(&merged.id) {
                        if let Some(stored) = stored.as_ref().filter(|s| s.first_seen != merged.first_seen) {
                            tx_index.remove(time_key(stored))?;
                        }
                        tx_index.insert(time_key(&merged), &[])?;
                    }
                    tx_alerts.insert(key, bytes.as_slice())?;
                    changes.push((old.clone(), bytes));
                    if notify == Notify::Queue {
                        let marker = fold_marker(tx_outbox.get(id)?.as_deref(), old.is_none(), now);
                        tx_outbox.insert(id, marker)?;
                    }
                }
                Ok((created, changes))
            })?;
        let mut tallies = self.tallies_mut();
        for (old, new) in &changes {
            tallies.alert_changed(old.as_deref(), Some(new));
        }
        Ok(created)
    }

    /// Adds one write of the store writer in one transaction: each alert's deltas (its
    /// distinct set grows by the path keys not in it yet), the evidence deltas, and the
    /// checkpoint of the lines they came from. Nothing is added when the last write applied
    /// has the same id (a retry after a failed flush). Returns the indices of new alerts.
    pub(super) fn apply(&self, write: &StoreWrite, notify: Notify) -> Result<Vec<usize>, StoreError> {
        let now = now_ms();
        let trees = (
            &self.alerts,
            &self.by_time,
            &self.outbox,
            &self.alert_paths,
            &self.ledger,
            &self.meta,
            &self.rolled_up,
            &self.rollups,
        );
        let storms = RefCell::new(HashMap::new());
        let (created, changes) = trees.transaction(
            |(tx_alerts, tx_index, tx_outbox, tx_paths, tx_ledger, tx_meta, tx_rolled, tx_rollups)| {
                let mut created = Vec::new();
                let mut changes = Vec::new();
                if tx_meta.get(LAST_WRITE_KEY)?.as_deref() == Some(&write.id[..]) {
                    return Ok((created, changes));
                }
                // A retried transaction starts again from the storms as they were.
                let mut storms = storms.borrow_mut();
                storms.clone_from(&self.storms.borrow());
                for (i, change) in write.alerts.iter().enumerate() {
                    let id = change.alert.id.as_bytes();
                    let key = record_key(&change.alert.id);
                    let old = tx_alerts.get(&key)?;
                    let record = old.as_ref().and_then(|bytes| decode_record(bytes));
                    // A new record keeps its first keys itself; one written before that (or
                    // unreadable) keeps its set in `alert_paths` only.
                    let (stored, mut extras) = match record {
                        Some((alert, extras)) => (Some(alert), extras),
                        None if old.is_none() => (None, RecordExtras::new()),
                        None => (None, RecordExtras::default()),
                    };
                    let mut merged = match &stored {
                        Some(stored) => {
                            let mut merged = stored.clone();
                            merged.merge_meta_from(&change.alert);
                            merged
                        }
                        // New, or an unreadable record: counted from here.
                        None => Alert { requests: 0, bytes: 0, distinct_resources: 0, ..change.alert.clone() },
                    };
                    match write.counts {
                        Counts::Add => {
                            merged.requests = merged.requests.saturating_add(change.requests);
                            merged.bytes = merged.bytes.saturating_add(change.bytes);
                        }
                        Counts::Max => {
                            merged.requests = merged.requests.max(change.alert.requests);
                            merged.bytes = merged.bytes.max(change.alert.bytes);
                        }
                    }
                    let spill = extras.spill();
                    let added =
                        add_alert_paths(tx_paths, &mut extras.path_keys, spill, &change.alert.id, &change.paths)?;
                    merged.distinct_resources = merged.distinct_resources.saturating_add(added);
                    if write.counts == Counts::Max {
                        // A replay's episodes keep every path key (and send none): their count
                        // is exact.
                        merged.distinct_resources = merged.distinct_resources.max(change.alert.distinct_resources);
                    }
                    if old.is_none() {
                        created.push(i);
                    }
                    // The roll-up it is paged through: decided when it is new (a storm of new
                    // alerts), kept in its record after that.
                    if notify == Notify::Queue {
                        if stored.is_none() {
                            extras.rollup = storm_rollup(&mut storms, write.rollup, &merged);
                        } else if !extras.is_current() && extras.rollup.is_none() {
                            extras.rollup = tx_rolled.get(id)?.map(|v| String::from_utf8_lossy(&v).into_owned());
                        }
                    }
                    let bytes = match encode_record(&merged, &extras) {
                        Ok(b) => b,
                        Err(source) => return abort(StoreError::Corrupt { id: change.alert.id.clone(), source }),
                    };
                    if old.as_deref() == Some(bytes.as_slice()) {
                        continue;
                    }
                    if is_indexed(&merged.id) {
                        if let Some(stored) = stored.as_ref().filter(|s| s.first_seen != merged.first_seen) {
                            tx_index.remove(time_key(stored))?;
                        }
                        tx_index.insert(time_key(&merged), &[])?;
                    }
                    tx_alerts.insert(key, bytes.as_slice())?;
                    changes.push((old.clone(), bytes));
                    if notify == Notify::Queue {
                        let before = stored.as_ref();
                        match extras.rollup.clone() {
                            None => {
                                let marker = fold_marker(tx_outbox.get(id)?.as_deref(), old.is_none(), now);
                                tx_outbox.insert(id, marker)?;
                            }
                            Some(rollup_id) => {
                                let storm = storms.get_mut(&(merged.rule_id.clone(), merged.source.clone()));
                                if let Some(storm) = storm.filter(|s| s.rollup.as_deref() == Some(rollup_id.as_str())) {
                                    storm.note(&merged.client, merged.requests);
                                }
                                let top = storms
                                    .get(&(merged.rule_id.clone(), merged.source.clone()))
                                    .filter(|s| s.rollup.as_deref() == Some(rollup_id.as_str()))
                                    .map(|s| s.top.clone());
                                let old_rollup = tx_rollups.get(rollup_id.as_bytes())?;
                                let mut r =
                                    match old_rollup.as_ref().and_then(|b| serde_json::from_slice::<Alert>(b).ok()) {
                                        Some(r) => r,
                                        None => Alert {
                                            id: rollup_id.clone(),
                                            rule: format!("{}-rollup", merged.rule),
                                            group_by: "rollup".into(),
                                            partner: None,
                                            requests: 0,
                                            distinct_resources: 0,
                                            bytes: 0,
                                            sample: Vec::new(),
                                            user_agents: Vec::new(),
                                            ..merged.clone()
                                        },
                                    };
                                let (req_before, bytes_before) = before.map_or((0, 0), |b| (b.requests, b.bytes));
                                if before.is_none() {
                                    r.distinct_resources += 1;
                                }
                                r.requests = r.requests.saturating_add(merged.requests.saturating_sub(req_before));
                                r.bytes = r.bytes.saturating_add(merged.bytes.saturating_sub(bytes_before));
                                r.client = format!("{} clients", r.distinct_resources);
                                r.first_seen = r.first_seen.min(merged.first_seen);
                                r.last_seen = r.last_seen.max(merged.last_seen);
                                if let Some(top) = top {
                                    r.sample = top.iter().map(|(c, n)| format!("{c} ({n} requests)")).collect();
                                }
                                let rbytes = match serde_json::to_vec(&r) {
                                    Ok(b) => b,
                                    Err(source) => return abort(StoreError::Corrupt { id: rollup_id, source }),
                                };
                                tx_rollups.insert(rollup_id.as_bytes(), rbytes.as_slice())?;
                                let marker = fold_marker(
                                    tx_outbox.get(rollup_id.as_bytes())?.as_deref(),
                                    old_rollup.is_none(),
                                    now,
                                );
                                tx_outbox.insert(rollup_id.as_bytes(), marker)?;
                            }
                        }
                    }
                }
                for e in &write.evidence {
                    add_evidence(tx_ledger, e, write.counts)?;
                }
                if let Some(checkpoint) = &write.checkpoint {
                    tx_meta.insert(CHECKPOINT_KEY, checkpoint.as_slice())?;
                }
                for (key, offset) in &write.positions {
                    let stored = tx_meta.get(key)?.and_then(|v| v.as_ref().try_into().ok()).map(i64::from_be_bytes);
                    if stored.is_none_or(|s| s < *offset) {
                        tx_meta.insert(key.as_slice(), &offset.to_be_bytes()[..])?;
                    }
                }
                tx_meta.insert(LAST_WRITE_KEY, &write.id[..])?;
                Ok((created, changes))
            },
        )?;
        if notify == Notify::Queue {
            *self.storms.borrow_mut() = storms.into_inner();
        }
        let mut tallies = self.tallies_mut();
        for (old, new) in &changes {
            tallies.alert_changed(old.as_deref(), Some(new));
        }
        Ok(created)
    }

    /// Ledger entries of one client (all when `client` is None), in key order.
    pub(super) fn ledger_entries(&self, client: Option<u128>) -> Result<Vec<Evidence>, StoreError> {
        let prefix = client.map(|c| c.to_be_bytes().to_vec()).unwrap_or_default();
        let mut out = Vec::new();
        for item in self.ledger.scan_prefix(prefix) {
            let (key, value) = item?;
            if let Some(mut e) = ledger::decode_entry(&value) {
                e.key = key_pair(&key);
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Hourly counts of every (client, resource) between hours `since` and `until` (exclusive):
    /// (hour, client key, path key, counts), in time order. Reads the whole ledger (reports
    /// are offline).
    pub(super) fn ledger_hours(&self, since: i64, until: i64) -> Result<Vec<LedgerHour>, StoreError> {
        let mut out = Vec::new();
        for item in self.ledger.iter() {
            let (key, value) = item?;
            let Some(e) = ledger::decode_entry(&value) else { continue };
            let (client, path) = key_pair(&key);
            let within = e.hours.iter().filter(|(hour, _)| (since..until).contains(hour));
            out.extend(within.map(|&(hour, counts)| (hour, client, path, counts)));
        }
        out.sort_unstable_by_key(|&(hour, client, path, _)| (hour, client, path));
        Ok(out)
    }

    /// Positions kept under `prefix` in the meta tree: (key after the prefix, offset).
    pub(super) fn positions(&self, prefix: &[u8]) -> Result<Vec<(Vec<u8>, i64)>, StoreError> {
        let mut out = Vec::new();
        for item in self.meta.scan_prefix(prefix) {
            let (key, value) = item?;
            if let Ok(bytes) = value.as_ref().try_into() {
                out.push((key[prefix.len()..].to_vec(), i64::from_be_bytes(bytes)));
            }
        }
        Ok(out)
    }

    pub(super) fn save_checkpoint(&self, checkpoint: &[u8]) -> Result<(), StoreError> {
        self.meta.insert(CHECKPOINT_KEY, checkpoint)?;
        Ok(())
    }

    pub(super) fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.meta.get(CHECKPOINT_KEY)?.map(|v| v.to_vec()))
    }

    pub(super) fn flush(&self) -> Result<usize, StoreError> {
        Ok(self.db.flush()?)
    }

    pub(super) fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let stored = match self.alerts.get(record_key(id))? {
            Some(bytes) => Some(bytes),
            None => self.rollups.get(id.as_bytes())?,
        };
        match stored {
            None => Ok(None),
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { id: id.to_string(), source }),
        }
    }

    /// Every alert matching `filter`, oldest first.
    pub(super) fn list(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        Ok(self.list_page(filter, None, usize::MAX)?.0)
    }

    /// The newest `limit` alerts matching `filter` whose time key is before `before` (all when
    /// None), oldest first, and the time key of the oldest one returned when more match
    /// before it. Reads only as far back as the page needs.
    pub(super) fn list_page(
        &self,
        filter: &AlertFilter,
        before: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Alert>, Option<Vec<u8>>), StoreError> {
        let mut page = Vec::new();
        let mut oldest_key = None;
        let mut more = false;
        for item in self.newest_first(before) {
            let (key, record) = item?;
            let id = id_of_time_key(&key);
            let record = match record {
                Some(record) => record,
                None => match self.alerts.get(id.as_bytes())? {
                    Some(record) => record,
                    None => continue,
                },
            };
            let a: Alert = serde_json::from_slice(&record).map_err(|source| StoreError::Corrupt { id, source })?;
            if !filter.accepts(&a) {
                continue;
            }
            if page.len() == limit {
                more = true;
                break;
            }
            page.push(a);
            oldest_key = Some(key.to_vec());
        }
        page.reverse();
        Ok((page, oldest_key.filter(|_| more)))
    }

    /// The time keys of all alerts before `before` (all when None), newest first: the records
    /// keyed by time (with the record) merged with the time index of the others (without).
    fn newest_first(
        &self,
        before: Option<&[u8]>,
    ) -> impl Iterator<Item = Result<(sled::IVec, Option<sled::IVec>), sled::Error>> {
        let timed_end = before.map_or(TIMED_RECORDS.end, |before| before.clamp(TIMED_RECORDS.start, TIMED_RECORDS.end));
        let mut timed = self.alerts.range(TIMED_RECORDS.start..timed_end).rev().peekable();
        let mut indexed = match before {
            Some(before) => self.by_time.range(..before),
            None => self.by_time.iter(),
        }
        .rev()
        .peekable();
        std::iter::from_fn(move || {
            let from_timed = match (timed.peek(), indexed.peek()) {
                (None, None) => return None,
                (Some(Ok((a, _))), Some(Ok((b, _)))) => a >= b,
                (Some(_), _) => true,
                (None, Some(_)) => false,
            };
            if from_timed {
                timed.next().map(|item| item.map(|(key, record)| (key, Some(record))))
            } else {
                indexed.next().map(|item| item.map(|(key, _)| (key, None)))
            }
        })
    }

    /// How many alerts match `filter`; without a filter, the total the tallies keep.
    pub(super) fn count(&self, filter: &AlertFilter) -> Result<usize, StoreError> {
        if filter.is_empty() {
            return Ok(self.tallies.borrow().total as usize);
        }
        Ok(self.list(filter)?.len())
    }

    pub(super) fn set_status(&self, id: &str, status: AlertStatus) -> Result<(Alert, bool), StoreError> {
        let now = now_ms();
        let (updated, changed) = (&self.alerts, &self.outbox).transaction(|(tx_alerts, tx_outbox)| {
            let key = record_key(id);
            let Some(bytes) = tx_alerts.get(&key)? else {
                return abort(StoreError::NotFound(id.to_string()));
            };
            let mut a: Alert = match serde_json::from_slice(&bytes) {
                Ok(a) => a,
                Err(source) => return abort(StoreError::Corrupt { id: id.to_string(), source }),
            };
            if a.status == AlertStatus::Resolved && status != AlertStatus::Resolved {
                return abort(StoreError::AlertClosed { id: id.to_string(), wanted: status.as_str() });
            }
            let mut changed = None;
            if a.status != status {
                a.status = status;
                // What the store keeps in the record (distinct keys, roll-up) stays with it.
                let new = encode_record(&a, &decode_extras(&bytes)).expect("an alert always serialises");
                tx_alerts.insert(key.as_slice(), new.as_slice())?;
                tx_outbox.insert(id.as_bytes(), fold_marker(tx_outbox.get(id.as_bytes())?.as_deref(), true, now))?;
                changed = Some((bytes.to_vec(), new));
            }
            Ok((a, changed))
        })?;
        if let Some((old, new)) = &changed {
            self.tallies_mut().alert_changed(Some(old), Some(new));
        }
        let changed = changed.is_some();
        self.flush()?;
        Ok((updated, changed))
    }

    pub(super) fn outbox_markers(&self, limit: usize) -> Result<Vec<(String, OutboxMarker)>, StoreError> {
        let mut out = Vec::new();
        for item in self.outbox.iter().take(limit) {
            let (key, value) = item?;
            out.push((String::from_utf8_lossy(&key).into_owned(), decode_marker(&value)));
        }
        Ok(out)
    }

    /// The first half of a fan-out: the marker of `id` (None: nothing queued) and the
    /// current records of `receivers`, as bytes, for [`Db::commit_fan_out`] to compare.
    pub(super) fn read_fan_out(&self, id: &str, receivers: &[String]) -> Result<FanOutRead, StoreError> {
        let Some(marker) = self.outbox.get(id.as_bytes())? else { return Ok(None) };
        let mut existing = Vec::with_capacity(receivers.len());
        for receiver in receivers {
            existing.push(self.deliveries.get(delivery_key(receiver, id))?.map(|v| v.to_vec()));
        }
        Ok(Some((marker.to_vec(), existing)))
    }

    /// The second half: if the marker and every record are still what was read, removes the
    /// marker and writes the new records (None removes), in one transaction; false when
    /// something changed in between (the caller reads again).
    pub(super) fn commit_fan_out(
        &self,
        id: &str,
        read: &(Vec<u8>, Vec<Option<Vec<u8>>>),
        writes: &[(Vec<u8>, Option<Vec<u8>>)],
    ) -> Result<bool, StoreError> {
        let (marker, existing) = read;
        let committed = (&self.outbox, &self.deliveries).transaction(|(tx_outbox, tx_deliveries)| {
            if tx_outbox.get(id.as_bytes())?.as_deref() != Some(marker.as_slice()) {
                return Ok(false);
            }
            for ((key, _), old) in writes.iter().zip(existing) {
                if tx_deliveries.get(key)?.as_deref() != old.as_deref() {
                    return Ok(false);
                }
            }
            tx_outbox.remove(id.as_bytes())?;
            for (key, value) in writes {
                match value {
                    Some(v) => {
                        tx_deliveries.insert(key.as_slice(), v.as_slice())?;
                    }
                    None => {
                        tx_deliveries.remove(key.as_slice())?;
                    }
                }
            }
            Ok(true)
        })?;
        if committed {
            let mut tallies = self.tallies_mut();
            for ((key, new), old) in writes.iter().zip(existing) {
                tallies.delivery_changed(key, old.as_deref(), new.as_deref());
            }
        }
        Ok(committed)
    }

    pub(super) fn deliveries(&self, receiver: &str) -> Result<Vec<(String, Delivery)>, StoreError> {
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

    pub(super) fn get_raw_delivery(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.deliveries.get(key)?.map(|v| v.to_vec()))
    }

    /// Replaces a delivery record if it is still `old`; false when it changed in between.
    pub(super) fn swap_delivery(
        &self,
        key: &[u8],
        old: Option<&[u8]>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, StoreError> {
        let swapped = self.deliveries.compare_and_swap(key, old, new.as_deref())?.is_ok();
        if swapped {
            self.tallies_mut().delivery_changed(key, old, new.as_deref());
        }
        Ok(swapped)
    }

    pub(super) fn drop_deliveries_except(&self, keep: &[String]) -> Result<BTreeMap<String, u64>, StoreError> {
        let mut dropped = BTreeMap::new();
        for item in self.deliveries.iter() {
            let (key, value) = item?;
            let receiver = key.split(|&b| b == 0).next().unwrap_or(&[]);
            let receiver = String::from_utf8_lossy(receiver).into_owned();
            if !keep.contains(&receiver) {
                self.deliveries.remove(&key)?;
                self.tallies_mut().delivery(&key, Some(&value), false);
                *dropped.entry(receiver).or_insert(0) += 1;
            }
        }
        Ok(dropped)
    }

    pub(super) fn pending_deliveries(&self) -> Result<BTreeMap<String, PendingStats>, StoreError> {
        let tallies = self.tallies.borrow();
        Ok(tallies
            .pending
            .iter()
            .map(|(receiver, by_time)| {
                let stats = PendingStats { pending: by_time.values().sum(), oldest_ms: by_time.keys().next().copied() };
                (receiver.clone(), stats)
            })
            .collect())
    }

    fn tallies_mut(&self) -> std::cell::RefMut<'_, Tallies> {
        self.tallies_changed.set(true);
        self.tallies.borrow_mut()
    }

    /// The tallies, if they changed since the last call (for the owner to publish).
    pub(super) fn changed_tallies(&self) -> Option<TallySnapshot> {
        if !self.tallies_changed.replace(false) {
            return None;
        }
        let pending = self.pending_deliveries().unwrap_or_default();
        let tallies = self.tallies.borrow();
        Some(TallySnapshot { total: tallies.total, unresolved: tallies.unresolved.clone(), pending })
    }

    pub(super) fn outbox_len(&self) -> usize {
        self.outbox.len()
    }

    pub(super) fn count_unresolved(&self) -> Result<BTreeMap<(String, String), u64>, StoreError> {
        Ok(self.tallies.borrow().unresolved.clone())
    }

    /// Removes the alerts last seen before the cutoff, with their index entries, queued
    /// changes, roll-ups, distinct sets and deliveries, durably; returns how many alerts went.
    /// The ledger is swept apart, in bounded requests ([`Db::sweep_ledger`]).
    pub(super) fn remove_last_seen_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        // An alert first seen (or opened) at or after the cutoff was also last seen after it:
        // scan only up to there.
        let end = ledger::ordered(cutoff);
        let mut removed_ids = HashSet::new();
        let timed_end = end.as_slice().clamp(TIMED_RECORDS.start, TIMED_RECORDS.end);
        let timed = self.alerts.range(TIMED_RECORDS.start..timed_end).map(|item| item.map(|(key, _)| (key, None)));
        let indexed = self.by_time.range(..end.as_slice());
        let indexed = indexed.map(|item| item.map(|(key, _)| (sled::IVec::from(&key[8..]), Some(key))));
        // The record's key, and its time-index key if it has one.
        for item in timed.chain(indexed) {
            let (record_key, index_key) = item?;
            let id = id_in_record_key(&record_key);
            let stored = self.alerts.get(&record_key)?;
            let expired = match &stored {
                None => true,
                Some(bytes) => serde_json::from_slice::<Alert>(bytes).map_or(true, |a| a.last_seen < cutoff),
            };
            if expired {
                self.alerts.remove(&record_key)?;
                self.tallies_mut().alert(stored.as_deref(), false);
                if let Some(index_key) = &index_key {
                    self.by_time.remove(index_key)?;
                }
                self.outbox.remove(id)?;
                self.rolled_up.remove(id)?;
                for item in self.alert_paths.scan_prefix(id) {
                    self.alert_paths.remove(item?.0)?;
                }
                removed_ids.insert(id.to_vec());
            }
        }
        let alerts_removed = removed_ids.len();
        for item in self.rollups.iter() {
            let (id, bytes) = item?;
            if serde_json::from_slice::<Alert>(&bytes).map_or(true, |a| a.last_seen < cutoff) {
                self.rollups.remove(&id)?;
                self.outbox.remove(&id)?;
                removed_ids.insert(id.to_vec());
            }
        }
        if removed_ids.is_empty() {
            return Ok(0);
        }
        for item in self.deliveries.iter() {
            let (key, value) = item?;
            let id = key.iter().position(|&b| b == 0).map_or(&key[..0], |i| &key[i + 1..]);
            if removed_ids.contains(id) {
                self.deliveries.remove(&key)?;
                self.tallies_mut().delivery(&key, Some(&value), false);
            }
        }
        self.flush()?;
        Ok(alerts_removed)
    }

    /// Removes the ledger's entries last seen before the cutoff, and the hours before the
    /// cutoff's hour from the others, among at most `limit` entries from key `from`, durably.
    /// Returns the key to go on from, or None at the end. Reads every entry's first time;
    /// decodes only those first seen before the cutoff's hour.
    pub(super) fn sweep_ledger(&self, cutoff: i64, from: &[u8], limit: usize) -> Result<Option<Vec<u8>>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Seen {
            first_seen: i64,
        }
        let first_hour = cutoff.div_euclid(3600);
        let mut changed = false;
        let mut next = None;
        for (read, item) in self.ledger.range(from..).enumerate() {
            let (key, value) = item?;
            if read == limit {
                next = Some(key.to_vec());
                break;
            }
            let seen = serde_json::from_slice::<Seen>(&value).ok();
            if seen.as_ref().is_some_and(|s| s.first_seen.div_euclid(3600) >= first_hour) {
                continue;
            }
            match ledger::decode_entry(&value) {
                Some(mut e) if e.last_seen >= cutoff => {
                    let old_hours = e.hours.partition_point(|(hour, _)| *hour < first_hour);
                    if old_hours > 0 {
                        e.hours.drain(..old_hours);
                        self.ledger.insert(&key, ledger::encode_entry(&e)?)?;
                        changed = true;
                    }
                }
                // Expired, or unreadable.
                _ => {
                    self.ledger.remove(&key)?;
                    changed = true;
                }
            }
        }
        if changed {
            self.flush()?;
        }
        Ok(next)
    }

    pub(super) fn len(&self) -> usize {
        self.tallies.borrow().total as usize
    }

    /// The alerts whose episodes may still run: last seen within `memory_secs` of the newest
    /// last seen, at most `limit` of them (the most recently seen). Streams the store, so
    /// memory is bounded by `limit`, not by the number of alerts stored.
    pub(super) fn recent(&self, memory_secs: i64, limit: usize) -> Result<Vec<Alert>, StoreError> {
        #[derive(serde::Deserialize)]
        struct Seen {
            last_seen: i64,
        }
        let mut newest = i64::MIN;
        let mut heap = std::collections::BinaryHeap::new();
        for item in self.alerts.iter() {
            let (key, value) = item?;
            let Ok(seen) = serde_json::from_slice::<Seen>(&value) else { continue };
            newest = newest.max(seen.last_seen);
            heap.push(std::cmp::Reverse((seen.last_seen, key.to_vec())));
            if heap.len() > limit {
                heap.pop();
            }
        }
        let cutoff = newest.saturating_sub(memory_secs);
        let mut out = Vec::with_capacity(heap.len());
        for std::cmp::Reverse((last_seen, key)) in heap {
            if last_seen >= cutoff {
                if let Some(record) = self.alerts.get(&key)? {
                    let id = String::from_utf8_lossy(id_in_record_key(&key)).into_owned();
                    let a = serde_json::from_slice(&record).map_err(|source| StoreError::Corrupt { id, source })?;
                    out.push(a);
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::alert::tests::alert;
    use crate::detect::evidence::{self, AlertChange};

    fn write(n: u8, a: &Alert, keys: impl IntoIterator<Item = u128>) -> StoreWrite {
        let paths: Vec<u128> = keys.into_iter().collect();
        let change = AlertChange { alert: a.clone(), requests: paths.len() as u64, bytes: 0, paths };
        StoreWrite { id: [n; 16], alerts: vec![change], ..StoreWrite::default() }
    }

    fn distinct(db: &Db, a: &Alert) -> u64 {
        db.get(&a.id).unwrap().unwrap().distinct_resources
    }

    #[test]
    fn records_of_ids_that_lead_with_their_time_need_no_index_and_list_with_older_ones_in_time_order() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let at = |client: &str, t: i64| Alert {
            id: Alert::make_id("R1", client, t),
            client: client.into(),
            first_seen: t,
            last_seen: t + 10,
            ..alert(1)
        };
        // A record written before ids led with their time: keyed by its text, indexed by time.
        let older = Alert { id: format!("{:016x}", 0xfeed_u64), ..at("192.0.2.1", 100) };
        let alerts = [at("192.0.2.2", 250), older.clone(), at("192.0.2.3", 50), at("192.0.2.4", 150)];
        db.upsert(&alerts, Notify::Queue).unwrap();
        assert_eq!(db.by_time.len(), 1, "only the older id is indexed");
        assert_eq!(db.alerts.len(), 4);
        let times = |page: &[Alert]| page.iter().map(|a| a.first_seen).collect::<Vec<_>>();
        assert_eq!(times(&db.list(&AlertFilter::default()).unwrap()), [50, 100, 150, 250]);
        let (newest, cursor) = db.list_page(&AlertFilter::default(), None, 2).unwrap();
        assert_eq!(times(&newest), [150, 250]);
        let (rest, end) = db.list_page(&AlertFilter::default(), cursor.as_deref(), 2).unwrap();
        assert_eq!((times(&rest), end), (vec![50, 100], None));
        for a in &alerts {
            assert_eq!(db.get(&a.id).unwrap().map(|got| got.client), Some(a.client.clone()));
        }
        assert!(db.set_status(&older.id, AlertStatus::Acked).unwrap().1);
        assert!(db.set_status(&alerts[0].id, AlertStatus::Resolved).unwrap().1);
        // An update of either kind keeps one record and the older one's single index entry.
        db.upsert(&[Alert { requests: 5, ..older.clone() }, Alert { requests: 5, ..alerts[2].clone() }], Notify::Queue)
            .unwrap();
        assert_eq!((db.alerts.len(), db.by_time.len(), db.len()), (4, 1, 4));
        assert_eq!(db.recent(1000, 10).unwrap().len(), 4);
        // Retention finds both kinds by time.
        assert_eq!(db.remove_last_seen_before(200).unwrap(), 3);
        assert_eq!((db.alerts.len(), db.by_time.len(), db.len()), (1, 0, 1));
        assert_eq!(db.outbox.len(), 1, "the removed alerts' queued changes went with them");
        assert_eq!(times(&db.list(&AlertFilter::default()).unwrap()), [250]);
    }

    #[test]
    fn distinct_keys_inline_and_past_the_inline_ones_count_once_also_after_an_ack() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let a = alert(1);
        db.apply(&write(1, &a, 0..20), Notify::Skip).unwrap();
        assert_eq!(distinct(&db, &a), 20);
        // Crosses the inline bound; every key already counted comes again.
        db.apply(&write(2, &a, (10..40).chain(0..20)), Notify::Skip).unwrap();
        db.apply(&write(3, &a, (0..50).rev()), Notify::Skip).unwrap();
        assert_eq!(distinct(&db, &a), 50);
        assert_eq!(db.alert_paths.len(), 1, "the keys past the inline ones share one bucket (top bits 0)");
        // An ack re-writes the record: its keys stay with it.
        db.set_status(&a.id, AlertStatus::Acked).unwrap();
        db.apply(&write(4, &a, 0..60), Notify::Skip).unwrap();
        assert_eq!(distinct(&db, &a), 60);
        // Readers see the alert, not the store's keys.
        let raw = db.alerts.get(record_key(&a.id)).unwrap().unwrap();
        assert!(String::from_utf8_lossy(&raw).contains("\"path_keys\""));
        let listed = serde_json::to_string(&db.get(&a.id).unwrap().unwrap()).unwrap();
        assert!(!listed.contains("path_keys"), "{listed}");
    }

    #[test]
    fn a_large_distinct_set_takes_at_most_one_entry_per_bucket_and_counts_each_key_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let a = alert(1);
        // 100 buckets (the top 16 bits), 120 keys each past the 32 inline ones.
        let key = |i: u128| (i % 100) << 112 | i;
        db.apply(&write(1, &a, (0..6000).map(key)), Notify::Skip).unwrap();
        db.apply(&write(2, &a, (5000..12032).map(key)), Notify::Skip).unwrap();
        assert_eq!(distinct(&db, &a), 12032);
        assert_eq!(db.alert_paths.len(), 100, "one entry per bucket");
        db.apply(&write(3, &a, (0..12032).rev().map(key)), Notify::Skip).unwrap();
        assert_eq!(distinct(&db, &a), 12032, "every key again adds nothing");
        assert_eq!(db.remove_last_seen_before(i64::MAX).unwrap(), 1);
        assert_eq!(db.alert_paths.len(), 0, "retention removes the buckets with the alert");
    }

    /// A write of one new alert per client, all of one storm (rule R1, same source).
    fn storm_write(n: u8, clients: &[&str], requests: u64) -> StoreWrite {
        let alerts = clients
            .iter()
            .map(|c| {
                let a = Alert { id: Alert::make_id("R1", c, 1), client: c.to_string(), ..alert(1) };
                AlertChange { alert: a, requests, bytes: 0, paths: Vec::new() }
            })
            .collect();
        StoreWrite { id: [n; 16], alerts, rollup: Rollup { after: 2, window_secs: 3600 }, ..StoreWrite::default() }
    }

    fn rollup_requests(db: &Db) -> Vec<u64> {
        db.rollups.iter().map(|kv| serde_json::from_slice::<Alert>(&kv.unwrap().1).unwrap().requests).collect()
    }

    #[test]
    fn an_alert_paged_through_a_rollup_stays_in_it_through_updates_acks_and_older_records() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let clients = ["198.51.100.1", "198.51.100.2", "198.51.100.3", "198.51.100.4"];
        db.apply(&storm_write(1, &clients, 1), Notify::Queue).unwrap();
        let id = |c: &str| Alert::make_id("R1", c, 1);
        // The first two are paged one by one, the others through the roll-up.
        let queued: Vec<bool> = clients.iter().map(|c| db.outbox.get(id(c)).unwrap().is_some()).collect();
        assert_eq!(queued, [true, true, false, false]);
        assert_eq!(rollup_requests(&db), [2]);
        assert_eq!(db.rolled_up.len(), 0, "the record says which roll-up");
        // An update, an ack (which rewrites the record), another update: still the roll-up's.
        db.apply(&storm_write(2, &clients[3..], 5), Notify::Queue).unwrap();
        db.set_status(&id(clients[3]), AlertStatus::Acked).unwrap();
        db.outbox.remove(id(clients[3])).unwrap();
        db.apply(&storm_write(3, &clients[3..], 5), Notify::Queue).unwrap();
        assert!(db.outbox.get(id(clients[3])).unwrap().is_none());
        assert_eq!(rollup_requests(&db), [12]);
        // A record written before records carried it: its roll-up is in alerts_rolled_up.
        let older = Alert { id: id("198.51.100.9"), client: "198.51.100.9".into(), ..alert(1) };
        db.alerts.insert(record_key(&older.id), serde_json::to_vec(&older).unwrap()).unwrap();
        let rollup_id = db.rollups.iter().next().unwrap().unwrap().0;
        db.rolled_up.insert(older.id.as_bytes(), rollup_id).unwrap();
        db.apply(&storm_write(4, &["198.51.100.9"], 3), Notify::Queue).unwrap();
        assert!(db.outbox.get(older.id.as_bytes()).unwrap().is_none());
        assert_eq!(rollup_requests(&db), [15]);
    }

    #[test]
    fn a_record_written_before_records_kept_keys_counts_on_from_its_alert_paths() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        // As an older recwatch stored it: the alert alone, its set of 5 in alert_paths.
        let a = Alert { distinct_resources: 5, ..alert(1) };
        db.alerts.insert(record_key(&a.id), serde_json::to_vec(&a).unwrap()).unwrap();
        for k in 0..5u128 {
            db.alert_paths.insert(ledger::alert_path_key(&a.id, k), &[][..]).unwrap();
        }
        db.apply(&write(1, &a, 0..10), Notify::Skip).unwrap();
        assert_eq!(distinct(&db, &a), 10);
        db.apply(&write(2, &a, 8..12), Notify::Skip).unwrap();
        assert_eq!(distinct(&db, &a), 12);
    }

    /// A delta of (client 7, path `path`): `n` requests at each of `times`, answered 200.
    fn evidence(path: u128, times: &[i64], n: u64) -> Evidence {
        let mut e = Evidence { key: (7, path), path: format!("/r/{path}.wav"), ..evidence::tests::evidence() };
        for &t in times {
            for _ in 0..n {
                e.count(t, 200, 10, true);
            }
        }
        e
    }

    fn write_evidence(db: &Db, n: u8, evidence: Vec<Evidence>, counts: Counts) {
        db.apply(&StoreWrite { id: [n; 16], evidence, counts, ..StoreWrite::default() }, Notify::Skip).unwrap();
    }

    fn hours(db: &Db) -> Vec<(i64, u128, u64)> {
        let rows = db.ledger_hours(i64::MIN, i64::MAX).unwrap();
        rows.into_iter().map(|(hour, _, path, c)| (hour, path, c.requests)).collect()
    }

    #[test]
    fn ledger_hours_live_in_their_entries_added_or_as_a_replays_maxima() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        write_evidence(&db, 1, vec![evidence(1, &[7200, 3600], 1), evidence(2, &[3700], 2)], Counts::Add);
        write_evidence(&db, 2, vec![evidence(1, &[7300], 3)], Counts::Add);
        assert_eq!(hours(&db), [(1, 1, 1), (1, 2, 2), (2, 1, 4)], "in time order, added");
        assert_eq!(db.ledger.len(), 2, "one sled entry per (client, resource), hours inside");
        assert!(!db.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_HOUR_ROWS.as_bytes()));
        // A replay's totals fold in as maxima: the same lines again change nothing.
        write_evidence(&db, 3, vec![evidence(1, &[7200], 4)], Counts::Max);
        write_evidence(&db, 4, vec![evidence(1, &[7200], 4)], Counts::Max);
        assert_eq!(hours(&db), [(1, 1, 1), (1, 2, 2), (2, 1, 4)]);
        write_evidence(&db, 5, vec![evidence(1, &[7200], 6)], Counts::Max);
        assert_eq!(hours(&db), [(1, 1, 1), (1, 2, 2), (2, 1, 6)]);
        assert_eq!(db.ledger_hours(2, 3).unwrap().len(), 1, "a range is exact to the hour");
    }

    #[test]
    fn a_store_with_hour_rows_moves_them_into_its_entries_once_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        {
            // As an older recwatch stored it: entries without hours, one row per hour.
            let db = sled::open(dir.path()).unwrap();
            let (ledger_tree, rows) = (db.open_tree("ledger").unwrap(), db.open_tree(LEGACY_HOUR_ROWS).unwrap());
            for path in [1u128, 2] {
                let e = Evidence { hours: Vec::new(), ..evidence(path, &[3600, 7200], 1) };
                ledger_tree.insert(ledger::entry_key(7, path), serde_json::to_vec(&e).unwrap()).unwrap();
                for hour in [1, 2] {
                    let counts = crate::detect::evidence::HourCounts { requests: 1, ok: 1, bytes: 10 };
                    rows.insert(ledger::hour_key(hour, 7, path), &ledger::encode_hour(&counts)[..]).unwrap();
                }
            }
            // A row whose entry is gone: dropped.
            rows.insert(ledger::hour_key(1, 9, 9), &[0u8; 24][..]).unwrap();
            db.flush().unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let moved = [(1, 1, 1), (1, 2, 1), (2, 1, 1), (2, 2, 1)];
        assert_eq!(hours(&db), moved);
        assert!(!db.db.tree_names().iter().any(|n| n.as_ref() == LEGACY_HOUR_ROWS.as_bytes()), "the tree is dropped");
        // New deltas add to the moved hours; opening again moves nothing twice.
        write_evidence(&db, 1, vec![evidence(1, &[3600], 2)], Counts::Add);
        drop(db);
        let db = Db::open(dir.path()).unwrap();
        assert_eq!(hours(&db), [(1, 1, 3), (1, 2, 1), (2, 1, 1), (2, 2, 1)]);
    }

    #[test]
    fn retention_drops_the_hours_before_its_cutoff_and_the_entries_last_seen_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let old = evidence(1, &[3600], 1);
        let spanning = evidence(2, &[3600, 3 * 3600, 5 * 3600], 1);
        let recent = evidence(3, &[5 * 3600], 1);
        write_evidence(&db, 1, vec![old, spanning, recent], Counts::Add);
        // In requests of one entry: each says where the next starts.
        let cutoff = 4 * 3600 + 10;
        let mut from = Vec::new();
        let mut requests = 0;
        while let Some(next) = db.sweep_ledger(cutoff, &from, 1).unwrap() {
            (from, requests) = (next, requests + 1);
        }
        assert_eq!(requests, 2);
        assert_eq!(db.ledger.len(), 2, "only the entry last seen before the cutoff went");
        assert_eq!(hours(&db), [(5, 2, 1), (5, 3, 1)]);
        let spanning = db.ledger_entries(Some(7)).unwrap().into_iter().find(|e| e.key.1 == 2).unwrap();
        assert_eq!(spanning.requests, 3, "an entry's totals stay while it is within retention");
        assert_eq!(db.sweep_ledger(cutoff, &[], 10).unwrap(), None);
        assert_eq!(hours(&db), [(5, 2, 1), (5, 3, 1)], "a second sweep changes nothing");
    }
}

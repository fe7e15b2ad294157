//! Durable alert storage on sled: the only module that talks to the database, so the engine
//! could be swapped. Owns the trees `alerts` (id → JSON), `alerts_by_time` (first_seen ‖ id),
//! `meta` (checkpoints) and the notifier outbox: `outbox` (alert id → [`OutboxMarker`]: the
//! alert changed and its receivers have not been told) and `deliveries` (receiver ‖ 0 ‖ alert
//! id → [`Delivery`]: what one receiver was told and what it still has to be told).
//! Never decides what an alert is (it merges snapshots with [`Alert::merge_from`]) nor whom to
//! tell or when (that is `alerting`'s job): it keeps the records atomic and durable.
//!
//! One owner: sled is entered only by the owner thread ([`owner`]); a [`Store`] is a cheap
//! handle whose methods queue a request (bounded queue) and wait for its answer, at most the
//! handle's deadline ([`StoreError::Stalled`] after). So no two threads are ever inside sled at
//! once (sled 0.34.7 deadlocks under concurrent use, issue 14), sled's own flusher is off and
//! every flush is explicit. [`Store::health`] says, without asking the owner, whether the
//! store has failed or a request is stuck. Opening: [`open`] (locks, ownership, permissions,
//! read-only copies).
//!
//! An alert change and its outbox marker are written in one sled transaction, so an alert is
//! never durable without its marker: a crash loses both or neither. A resolved alert is closed
//! for good (no status but `resolved` is accepted for it), and each resolve is announced to
//! the detection workers through [`ResolvedFeed`] once durable. Owns its settings
//! ([`StoreSettings`]).

mod db;
pub mod ledger;
pub mod open;
mod owner;
pub mod resolved;
pub mod writer;

pub use resolved::ResolvedFeed;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{RecvTimeoutError, SendTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::detect::alert::{Alert, AlertStatus};
use crate::detect::evidence::{AlertChange, Evidence};
use db::Db;
pub use db::LedgerHour;
use owner::{Health, Job, Owner};

/// Where the store lives and how long it keeps alerts (`[store]`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreSettings {
    /// The state directory: the sled database, the pseudonym key, quarantined databases.
    pub dir: PathBuf,
    /// Alerts last seen longer ago are removed by the retention sweep; at least 1 (0 would
    /// delete all evidence within the hour).
    pub retention_days: u32,
    /// When receivers get one roll-up alert instead of one per client (a storm).
    pub rollup: Rollup,
}

/// Storm-proof paging: once a rule has opened more than `after` alerts for one source within
/// `window_secs` (event time, from the first of them), each further new alert of that rule
/// and source is stored and listed but not queued for the receivers; one roll-up alert per
/// (rule, source, window) is queued instead, updated as it grows (alerts rolled up, their
/// requests, the first clients). 0 = never roll up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rollup {
    pub after: u64,
    pub window_secs: i64,
}

impl Default for Rollup {
    fn default() -> Self {
        Rollup { after: 20, window_secs: 3600 }
    }
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
    /// A resolved alert is closed for good: it cannot be acked or reopened (the client's next
    /// match opens a new alert).
    #[error(
        "alert {id} is resolved and closed for good; it cannot be set to {wanted} (a new match opens a new alert)"
    )]
    AlertClosed { id: String, wanted: &'static str },
    #[error("another recwatch ({}) holds the store at {}", .pid.map_or("pid unknown".to_string(), |p| format!("pid {p}")), .dir.display())]
    Locked { dir: PathBuf, pid: Option<u32> },
    #[error("permission denied on {} (owner {owner}, mode {mode:04o}); recwatch runs as {user}", .path.display())]
    Permission { path: PathBuf, owner: String, mode: u32, user: String },
    #[error("the store at {} belongs to {owner}; {user} does not write it (run the command as that user, e.g. with sudo -u)", .dir.display())]
    NotOwner { dir: PathBuf, owner: String, user: String },
    #[error("{}: {source}", .path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("the alert store at {} is unreadable: {reason}", .dir.display())]
    Unreadable { dir: PathBuf, reason: String },
    #[error("the alert store did not answer {op} within {waited:?}")]
    Stalled { op: &'static str, waited: Duration },
    #[error("the alert store has failed ({0}); it is being reopened")]
    Failed(String),
    #[error("the alert store is closed")]
    Closed,
}

impl StoreError {
    /// Only this is grounds for moving a store aside: the files are there, ours to read, not
    /// locked, and still not a readable store.
    pub fn is_corruption(&self) -> bool {
        matches!(self, StoreError::Unreadable { .. })
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
    /// Bumped by every urgent change queued, so a delivery only clears the urgency it carried.
    #[serde(default)]
    pub urgent_changes: u64,
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

/// Where a page of [`Store::list_page`] starts (exclusive): an alert's place in time order
/// (its time, then its id). Opaque outside the store; travels as hex.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PageCursor(Vec<u8>);

impl PageCursor {
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// None unless `s` is hex of a plausible place (8 bytes of time, then an id).
    pub fn from_hex(s: &str) -> Option<PageCursor> {
        if s.len() % 2 != 0 || s.len() < 18 || s.len() > 2 * (8 + 64) {
            return None;
        }
        let bytes: Option<Vec<u8>> =
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect();
        bytes.map(PageCursor)
    }
}

impl AlertFilter {
    fn is_empty(&self) -> bool {
        self.rule.is_none() && self.client.is_none() && self.status.is_none() && self.since.is_none()
    }

    fn accepts(&self, a: &Alert) -> bool {
        self.rule.as_ref().is_none_or(|r| *r == a.rule || *r == a.rule_id)
            && self.client.as_ref().is_none_or(|c| *c == a.client)
            && self.status.is_none_or(|s| s == a.status)
            && self.since.is_none_or(|t| a.last_seen >= t)
    }
}

/// Requests waiting for the owner before senders wait (bounded: a stuck owner shows up as
/// [`StoreError::Stalled`], not as memory).
const QUEUE: usize = 1024;
/// How long a handle waits for an answer by default. Generous: a flush of a large batch on
/// a slow disk is slow but not stuck; a request past this has lost its caller.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(60);
/// One request running longer than this means the store is stuck ([`Store::health`]).
pub const STALL_AFTER: Duration = Duration::from_secs(10);
/// Ledger entries one request of the retention sweep reads (~35 ms).
const LEDGER_SWEEP_CHUNK: usize = 10_000;

/// What every handle shares: the queue to the owner and what the owner reports.
struct Shared {
    tx: Option<Sender<Job>>,
    owner: Option<std::thread::JoinHandle<()>>,
    health: Arc<Health>,
    signal: OutboxSignal,
    /// Resolves, told to the detection workers so closed episodes stay closed.
    resolved: ResolvedFeed,
    /// The copy a read-only store was opened on, removed when the last handle goes.
    scratch: Option<PathBuf>,
    /// The tallies as of the last request that changed them.
    published: Arc<Published>,
}

/// The owner's tallies, readable without queueing a request: `/metrics` and the unfiltered
/// alert count answer at once however busy the owner is (issue 13: a scrape waited 2 s behind
/// the store writer during a mass fetch).
#[derive(Default)]
struct Published(std::sync::Mutex<Option<db::TallySnapshot>>);

impl Published {
    fn set(&self, tallies: Option<db::TallySnapshot>) {
        if let Some(t) = tallies {
            *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
        }
    }

    fn read<T>(&self, f: impl FnOnce(&db::TallySnapshot) -> T) -> Option<T> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ref().map(f)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing the queue ends the owner after a final flush; waiting for it releases the
        // database (and its lock) before a reopen in the same process.
        drop(self.tx.take());
        if let Some(owner) = self.owner.take() {
            let _ = owner.join();
        }
        if let Some(dir) = &self.scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// One write of the store writer: applied in one transaction by [`Store::apply`].
#[derive(Debug, Default)]
pub struct StoreWrite {
    /// Unique per write (a retry of the same write keeps it): see [`ledger`].
    pub id: [u8; 16],
    pub alerts: Vec<AlertChange>,
    pub evidence: Vec<Evidence>,
    /// The position of the lines these changes came from (None: keep the stored one).
    pub checkpoint: Option<Vec<u8>>,
    /// Source positions counted through, as (key, offset): each stored as the larger of the
    /// stored and the new offset (Kafka: [`Store::kafka_position_key`]).
    pub positions: Vec<(Vec<u8>, i64)>,
    /// How a storm of new alerts is paged (with [`Notify::Queue`]).
    pub rollup: Rollup,
    /// How counts combine with the stored ones: added (the daemon's deltas, exactly once by
    /// position; distinct resources from the alert's stored distinct set), or kept as the
    /// larger (a replay's running totals, distinct resources included, which its episodes
    /// count exactly: replaying a log again into the same store changes nothing).
    pub counts: Counts,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Counts {
    #[default]
    Add,
    Max,
}

fn kafka_position_prefix(source: &str) -> Vec<u8> {
    let mut k = b"kafka_counted\0".to_vec();
    k.extend_from_slice(source.as_bytes());
    k.push(0);
    k
}

/// Cheap to clone: every clone is a handle on the same owner.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
    /// How long each call waits for its answer.
    deadline: Duration,
}

/// Whether an error means the database itself failed (the owner then reopens it).
fn db_failure(e: &StoreError) -> Option<String> {
    match e {
        StoreError::Db(e) => Some(e.to_string()),
        _ => None,
    }
}

impl Store {
    /// Opens the store kept in a state directory (the database is its `db` subdirectory).
    pub fn open_state_dir(state_dir: &Path) -> Result<Store, StoreError> {
        Store::open(&state_dir.join("db"))
    }

    /// Opens (creating if needed) the store in `dir` for reading and writing: refused when
    /// another recwatch holds it ([`StoreError::Locked`]), when another user owns it
    /// ([`StoreError::NotOwner`]) or a file in it is not ours to write
    /// ([`StoreError::Permission`]); only [`StoreError::Unreadable`] means corruption.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let (db, lock) = open::open_writable(dir)?;
        Ok(Store::start(
            Owner { dir: dir.to_path_buf(), db: Some(db), _lock: Some(lock), health: Arc::default() },
            None,
        ))
    }

    /// Opens the store kept in a state directory for reading only: see [`Store::open_read_only`].
    pub fn open_state_dir_read_only(state_dir: &Path) -> Result<Store, StoreError> {
        Store::open_read_only(&state_dir.join("db"))
    }

    /// Opens a private copy of the store in `dir`: the store is never written, not even when
    /// it is damaged (then this fails with [`StoreError::Unreadable`] and leaves it as it is).
    /// A missing store reads as empty. Writes through this handle go to the copy and are lost.
    pub fn open_read_only(dir: &Path) -> Result<Store, StoreError> {
        let (db, scratch) = open::open_read_only(dir)?;
        let owner = Owner { dir: scratch.clone(), db: Some(db), _lock: None, health: Arc::default() };
        Ok(Store::start(owner, Some(scratch)))
    }

    /// [`Store::open_read_only`] of a state directory, also while a running daemon holds the
    /// store (for reports): the copy holds what the daemon had flushed, as after a crash.
    pub fn open_state_dir_copy(state_dir: &Path) -> Result<Store, StoreError> {
        let (db, scratch) = open::open_read_only_while_held(&state_dir.join("db"))?;
        let owner = Owner { dir: scratch.clone(), db: Some(db), _lock: None, health: Arc::default() };
        Ok(Store::start(owner, Some(scratch)))
    }

    fn start(owner: Owner, scratch: Option<PathBuf>) -> Store {
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        let health = owner.health.clone();
        let thread = std::thread::Builder::new()
            .name("store".into())
            .spawn(move || owner.run(rx))
            .expect("spawning the store owner thread");
        let shared = Shared {
            tx: Some(tx),
            owner: Some(thread),
            health,
            signal: OutboxSignal::new(),
            resolved: ResolvedFeed::default(),
            scratch,
            published: Arc::default(),
        };
        Store { shared: Arc::new(shared), deadline: DEFAULT_DEADLINE }
    }

    /// The same store, whose calls wait at most `deadline` for an answer (e.g. shorter than
    /// an HTTP request's own time limit).
    pub fn with_deadline(&self, deadline: Duration) -> Store {
        Store { shared: self.shared.clone(), deadline }
    }

    /// Why the store cannot serve right now (failed and not yet reopened, one request running
    /// longer than `stall_after`, or its owner gone); None when it can. Never waits.
    pub fn health(&self, stall_after: Duration) -> Option<String> {
        self.shared.health.problem(stall_after)
    }

    /// Sends `f` to the owner and waits for its answer (at most the handle's deadline).
    fn call<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Db) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let started = Instant::now();
        let deadline = started + self.deadline;
        let (reply_tx, reply_rx) = crossbeam_channel::bounded(1);
        let published = self.shared.published.clone();
        let work: owner::Work = Box::new(move |db| {
            let open = db.as_ref().ok().copied();
            let result = db.and_then(f);
            let failure = result.as_ref().err().and_then(db_failure);
            // Before the answer: whoever saw this request done sees its counts.
            if let Some(db) = open {
                published.set(db.changed_tallies());
            }
            let _ = reply_tx.send(result);
            failure
        });
        let tx = self.shared.tx.as_ref().ok_or(StoreError::Closed)?;
        match tx.send_deadline(Job { op, deadline, work }, deadline) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(StoreError::Stalled { op, waited: started.elapsed() }),
            Err(SendTimeoutError::Disconnected(_)) => return Err(StoreError::Closed),
        }
        match reply_rx.recv_deadline(deadline) {
            Ok(result) => result,
            Err(RecvTimeoutError::Timeout) => Err(StoreError::Stalled { op, waited: started.elapsed() }),
            // dropped unanswered: the request panicked in sled
            Err(RecvTimeoutError::Disconnected) => {
                Err(StoreError::Failed(self.health(Duration::MAX).unwrap_or_else(|| format!("{op} failed"))))
            }
        }
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
        let alerts = alerts.to_vec();
        let created = self.call("upsert", move |db| db.upsert(&alerts, notify))?;
        if notify == Notify::Queue {
            self.shared.signal.ring();
        }
        Ok(created)
    }

    /// Adds one write (alert deltas, evidence deltas, checkpoint) in one transaction, so the
    /// counts and the position of the lines they came from become durable together (with the
    /// next [`Store::flush`]). With [`Notify::Queue`] each changed alert is queued for the
    /// notifiers. Returns the indices (in `write.alerts`) of the alerts that were new.
    pub fn apply(&self, write: Arc<StoreWrite>, notify: Notify) -> Result<Vec<usize>, StoreError> {
        let created = self.call("apply", move |db| db.apply(&write, notify))?;
        if notify == Notify::Queue {
            self.shared.signal.ring();
        }
        Ok(created)
    }

    /// The key under which the highest offset of (`topic`, `partition`) counted by Kafka source
    /// `source` is kept.
    pub fn kafka_position_key(source: &str, topic: &str, partition: i32) -> Vec<u8> {
        let mut k = kafka_position_prefix(source);
        k.extend_from_slice(topic.as_bytes());
        k.push(0);
        k.extend_from_slice(&partition.to_be_bytes());
        k
    }

    /// Per (topic, partition) the highest offset whose lines Kafka source `source` counted
    /// (durably, with their counts): a message at or below it is a re-delivery.
    pub fn kafka_positions(&self, source: &str) -> Result<std::collections::HashMap<(String, i32), i64>, StoreError> {
        let prefix = kafka_position_prefix(source);
        let rows = self.call("kafka_positions", move |db| db.positions(&prefix))?;
        Ok(rows
            .into_iter()
            .filter_map(|(rest, offset)| {
                let cut = rest.len().checked_sub(5)?;
                let topic = String::from_utf8(rest[..cut].to_vec()).ok()?;
                let partition = i32::from_be_bytes(rest[cut + 1..].try_into().ok()?);
                Some(((topic, partition), offset))
            })
            .collect())
    }

    /// The evidence ledger's entries of `client` (as alerts show it; all clients when None),
    /// with their keys. `stable_seed` keys host-name clients
    /// ([`crate::privacy::Pseudonymizer::stable_seed`]).
    pub fn ledger_entries(&self, client: Option<&str>, stable_seed: u64) -> Result<Vec<Evidence>, StoreError> {
        let key = match client {
            None => None,
            Some(text) => match crate::classify::client::ClientId::from_text(text) {
                Some(id) => Some(crate::detect::worker::ledger_client_key(id, text.as_bytes(), stable_seed)),
                None => return Ok(Vec::new()),
            },
        };
        self.call("ledger_entries", move |db| db.ledger_entries(key))
    }

    /// The ledger's hourly counts from hour `since` to hour `until` (exclusive; hours are
    /// Unix seconds / 3600), in time order.
    pub fn ledger_hours(&self, since: i64, until: i64) -> Result<Vec<LedgerHour>, StoreError> {
        self.call("ledger_hours", move |db| db.ledger_hours(since, until))
    }

    /// Replaces the source checkpoint (opaque to the store: the tailer's serialised
    /// positions). Durable with the next [`Store::flush`], together with alerts written before.
    pub fn save_checkpoint(&self, checkpoint: &[u8]) -> Result<(), StoreError> {
        let checkpoint = checkpoint.to_vec();
        self.call("save_checkpoint", move |db| db.save_checkpoint(&checkpoint))
    }

    pub fn load_checkpoint(&self) -> Result<Option<Vec<u8>>, StoreError> {
        self.call("load_checkpoint", |db| db.load_checkpoint())
    }

    /// Makes every write so far durable; returns the bytes flushed.
    pub fn flush(&self) -> Result<usize, StoreError> {
        self.call("flush", |db| db.flush())
    }

    pub fn get(&self, id: &str) -> Result<Option<Alert>, StoreError> {
        let id = id.to_string();
        self.call("get", move |db| db.get(&id))
    }

    /// The alerts whose episodes may still run after a restart: last seen within
    /// `memory_secs` of the newest, at most `limit` (the most recently seen). Memory is
    /// bounded by `limit`, whatever the store holds.
    pub fn recent(&self, memory_secs: i64, limit: usize) -> Result<Vec<Alert>, StoreError> {
        self.call("recent", move |db| db.recent(memory_secs, limit))
    }

    /// Alerts in first-seen order.
    pub fn list(&self, filter: &AlertFilter) -> Result<Vec<Alert>, StoreError> {
        let filter = filter.clone();
        self.call("list", move |db| db.list(&filter))
    }

    /// One page of alerts in first-seen order: the newest `limit` matching `filter` before
    /// `cursor` (from the start: the newest of all). Costs the page, not the store. The
    /// returned cursor leads to the page before this one, if any.
    pub fn list_page(
        &self,
        filter: &AlertFilter,
        cursor: Option<&PageCursor>,
        limit: usize,
    ) -> Result<(Vec<Alert>, Option<PageCursor>), StoreError> {
        let (filter, before) = (filter.clone(), cursor.map(|c| c.0.clone()));
        let (page, next) = self.call("list_page", move |db| db.list_page(&filter, before.as_deref(), limit))?;
        Ok((page, next.map(PageCursor)))
    }

    /// How many alerts match `filter` (without a filter: the index length, no alert decoded).
    pub fn count(&self, filter: &AlertFilter) -> Result<usize, StoreError> {
        if filter.is_empty() {
            if let Some(total) = self.published(|t| t.total as usize)? {
                return Ok(total);
            }
        }
        let filter = filter.clone();
        self.call("count", move |db| db.count(&filter))
    }

    /// Sets an alert's status (ack, resolve) durably; a change is queued for the notifiers
    /// (urgent) in the same transaction. A resolved alert is closed for good: resolving it
    /// again changes nothing, anything else is refused with [`StoreError::AlertClosed`]. A
    /// resolve is told to the subscribed workers once durable (see [`Store::resolved_feed`]).
    pub fn set_status(&self, id: &str, status: AlertStatus) -> Result<Alert, StoreError> {
        let id = id.to_string();
        let (updated, changed) = self.call("set_status", move |db| db.set_status(&id, status))?;
        if changed {
            self.shared.signal.ring();
        }
        if updated.status == AlertStatus::Resolved {
            self.shared.resolved.publish(&updated);
        }
        Ok(updated)
    }

    /// Where resolves are announced: each detection worker subscribes when its pipeline
    /// starts, and closes the alert's episode when told.
    pub fn resolved_feed(&self) -> &ResolvedFeed {
        &self.shared.resolved
    }

    // --- the notifier outbox

    /// Up to `limit` queued markers, by alert id.
    pub fn outbox_markers(&self, limit: usize) -> Result<Vec<(String, OutboxMarker)>, StoreError> {
        self.call("outbox_markers", move |db| db.outbox_markers(limit))
    }

    /// Moves the marker of alert `id` into the deliveries of `receivers`, atomically: each
    /// receiver's record becomes `update(receiver, marker, existing record)` (None removes
    /// or skips it), and the marker is removed. `update` runs on the caller's thread, between
    /// a read and a compare-and-commit on the owner, so it may run more than once.
    pub fn fan_out(
        &self,
        id: &str,
        receivers: &[&str],
        update: impl Fn(&str, &OutboxMarker, Option<Delivery>) -> Option<Delivery>,
    ) -> Result<(), StoreError> {
        let names: Arc<Vec<String>> = Arc::new(receivers.iter().map(|r| r.to_string()).collect());
        let id: Arc<str> = Arc::from(id);
        loop {
            let (read_id, read_names) = (id.clone(), names.clone());
            let Some(read) = self.call("fan_out", move |db| db.read_fan_out(&read_id, &read_names))? else {
                return Ok(());
            };
            let marker = db::decode_marker(&read.0);
            let writes: Vec<(Vec<u8>, Option<Vec<u8>>)> = names
                .iter()
                .zip(&read.1)
                .map(|(receiver, old)| {
                    let existing = old.as_deref().and_then(|b| serde_json::from_slice::<Delivery>(b).ok());
                    let new = update(receiver, &marker, existing)
                        .map(|d| serde_json::to_vec(&d).expect("a delivery always serialises"));
                    (db::delivery_key(receiver, &id), new)
                })
                .collect();
            let commit_id = id.clone();
            if self.call("fan_out", move |db| db.commit_fan_out(&commit_id, &read, &writes))? {
                return Ok(());
            }
        }
    }

    /// Waits until a marker may have been queued, at most `timeout`.
    pub fn wait_for_outbox(&self, timeout: Duration) {
        let _ = self.shared.signal.rx.recv_timeout(timeout);
    }

    /// Ends a [`Store::wait_for_outbox`] early (at shutdown).
    pub fn interrupt_outbox_wait(&self) {
        self.shared.signal.ring();
    }

    /// Every delivery record of one receiver, by alert id. An unreadable record is returned
    /// as a fresh one (the receiver is told again: at least once).
    pub fn deliveries(&self, receiver: &str) -> Result<Vec<(String, Delivery)>, StoreError> {
        let receiver = receiver.to_string();
        self.call("deliveries", move |db| db.deliveries(&receiver))
    }

    /// Replaces one delivery record with `update(current)` atomically (None removes it);
    /// returns what was written. `update` runs on the caller's thread between a read and a
    /// compare-and-swap on the owner, so it may run more than once.
    pub fn update_delivery(
        &self,
        receiver: &str,
        id: &str,
        mut update: impl FnMut(Option<Delivery>) -> Option<Delivery>,
    ) -> Result<Option<Delivery>, StoreError> {
        let key: Arc<[u8]> = Arc::from(db::delivery_key(receiver, id));
        loop {
            let read_key = key.clone();
            let old = self.call("update_delivery", move |db| db.get_raw_delivery(&read_key))?;
            let current = old.as_deref().and_then(|b| serde_json::from_slice::<Delivery>(b).ok());
            let written = update(current);
            let new = written.as_ref().map(|d| serde_json::to_vec(d).expect("a delivery always serialises"));
            let swap_key = key.clone();
            if self.call("update_delivery", move |db| db.swap_delivery(&swap_key, old.as_deref(), new))? {
                return Ok(written);
            }
        }
    }

    /// Removes the delivery records of receivers not in `keep` (removed from the config);
    /// returns how many were removed, by receiver.
    pub fn drop_deliveries_except(&self, keep: &[&str]) -> Result<BTreeMap<String, u64>, StoreError> {
        let keep: Vec<String> = keep.iter().map(|k| k.to_string()).collect();
        self.call("drop_deliveries_except", move |db| db.drop_deliveries_except(&keep))
    }

    /// Pending deliveries per receiver (receivers with none are absent).
    pub fn pending_deliveries(&self) -> Result<BTreeMap<String, PendingStats>, StoreError> {
        if let Some(pending) = self.published(|t| t.pending.clone())? {
            return Ok(pending);
        }
        self.call("pending_deliveries", |db| db.pending_deliveries())
    }

    /// Markers not yet moved into deliveries (0 when the store cannot answer).
    pub fn outbox_len(&self) -> usize {
        self.call("outbox_len", |db| Ok(db.outbox_len())).unwrap_or(0)
    }

    /// Alerts not resolved, by (rule name, severity): for the open-alerts gauge.
    pub fn count_unresolved(&self) -> Result<BTreeMap<(String, String), u64>, StoreError> {
        if let Some(open) = self.published(|t| t.unresolved.clone())? {
            return Ok(open);
        }
        self.call("count_unresolved", |db| db.count_unresolved())
    }

    /// The retention sweep: removes alerts whose last request is before `cutoff` (Unix
    /// seconds), with their index entries and anything still queued for them, and the
    /// ledger's entries and hours before it, durably. Returns how many alerts were removed.
    /// The ledger is swept in requests of [`LEDGER_SWEEP_CHUNK`] entries, so writes go on
    /// between them (a million entries take seconds).
    pub fn remove_last_seen_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        let removed = self.call("remove_last_seen_before", move |db| db.remove_last_seen_before(cutoff))?;
        let mut from = Vec::new();
        loop {
            let start = std::mem::take(&mut from);
            match self.call("sweep_ledger", move |db| db.sweep_ledger(cutoff, &start, LEDGER_SWEEP_CHUNK))? {
                Some(next) => from = next,
                None => return Ok(removed),
            }
        }
    }

    /// Holds the owner for `duration`: every other request waits behind it. For a consistent
    /// copy of the files while nothing writes, and to prove that a stuck store is reported.
    pub fn pause(&self, duration: Duration) -> Result<(), StoreError> {
        self.with_deadline(duration + self.deadline).call("pause", move |_| {
            std::thread::sleep(duration);
            Ok(())
        })
    }

    /// Alerts stored (0 when the store cannot answer).
    pub fn len(&self) -> usize {
        match self.published(|t| t.total as usize) {
            Ok(Some(total)) => total,
            _ => self.call("len", |db| Ok(db.len())).unwrap_or(0),
        }
    }

    /// Reads the published tallies without asking the owner: an error when the store has
    /// failed (its tallies are those of a database that is gone), None before the first
    /// request published any.
    fn published<T>(&self, f: impl FnOnce(&db::TallySnapshot) -> T) -> Result<Option<T>, StoreError> {
        if let Some(problem) = self.shared.health.failed() {
            return Err(StoreError::Failed(problem));
        }
        Ok(self.shared.published.read(f))
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rule::Severity;
    use std::os::unix::fs::MetadataExt;

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
    fn a_resolved_alert_is_closed_for_good_and_its_resolve_is_announced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let heard = store.resolved_feed().subscribe();
        let a = alert("7.7.7.7", 60, 1);
        store.upsert(std::slice::from_ref(&a), Notify::Skip).unwrap();
        store.set_status(&a.id, AlertStatus::Acked).unwrap();
        assert!(heard.try_recv().is_err(), "an ack is not a resolve");
        store.set_status(&a.id, AlertStatus::Resolved).unwrap();
        assert_eq!(heard.try_recv().unwrap().id, a.id);
        let refused = store.set_status(&a.id, AlertStatus::Acked).unwrap_err();
        assert!(matches!(refused, StoreError::AlertClosed { .. }), "{refused:?}");
        assert!(refused.to_string().contains("closed for good"), "{refused}");
        assert_eq!(store.set_status(&a.id, AlertStatus::Resolved).unwrap().status, AlertStatus::Resolved);
        // a late snapshot of the old episode (in flight at the resolve) adds counts, not a reopening
        store.upsert(&[alert("7.7.7.7", 60, 4)], Notify::Skip).unwrap();
        let got = store.get(&a.id).unwrap().unwrap();
        assert_eq!((got.status, got.requests), (AlertStatus::Resolved, 4));
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

    /// Every file under `dir` with its bytes, for "touched nothing" checks.
    fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
        let mut out = BTreeMap::new();
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).unwrap());
                }
            }
        }
        out
    }

    #[test]
    fn a_second_open_is_refused_as_locked_with_the_holders_pid_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.upsert(&[alert("7.7.7.7", 10, 1)], Notify::Skip).unwrap();
        store.flush().unwrap();
        let before = snapshot(dir.path());
        let e = Store::open(dir.path()).err().expect("a second writer is refused");
        assert!(matches!(e, StoreError::Locked { pid: Some(p), .. } if p == std::process::id()), "{e}");
        assert!(!e.is_corruption());
        assert!(e
            .to_string()
            .starts_with(&format!("another recwatch (pid {}) holds the store at ", std::process::id())));
        assert!(matches!(Store::open_read_only(dir.path()), Err(StoreError::Locked { .. })));
        assert_eq!(snapshot(dir.path()), before);
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().len(), 1, "free again once the holder is gone");
    }

    #[test]
    fn a_read_only_open_of_a_zeroed_store_fails_and_leaves_it_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            store.upsert(&[alert("8.8.8.8", 10, 1)], Notify::Skip).unwrap();
            store.flush().unwrap();
        }
        let db = dir.path().join("db");
        let len = std::fs::metadata(&db).unwrap().len() as usize;
        std::fs::write(&db, vec![0u8; len]).unwrap();
        let before = snapshot(dir.path());
        let e = Store::open_read_only(dir.path()).err().expect("a zeroed store is not readable");
        assert!(e.is_corruption(), "{e}");
        assert_eq!(snapshot(dir.path()), before, "a read-only open never writes");
        // a healthy store opens read-only, and writes to the copy never reach it
        let healthy = tempfile::tempdir().unwrap();
        Store::open(healthy.path()).unwrap().upsert(&[alert("9.9.9.9", 10, 1)], Notify::Skip).unwrap();
        let before = snapshot(healthy.path());
        let copy = Store::open_read_only(healthy.path()).unwrap();
        assert_eq!(copy.len(), 1);
        copy.upsert(&[alert("9.9.9.10", 10, 1)], Notify::Skip).unwrap();
        copy.flush().unwrap();
        drop(copy);
        assert_eq!(snapshot(healthy.path()), before);
        let missing = healthy.path().join("none");
        assert!(Store::open_read_only(&missing).unwrap().is_empty());
        assert!(!missing.exists(), "reading a missing store creates nothing");
    }

    #[test]
    fn a_store_owned_by_another_user_is_not_opened_for_writing() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("db");
        drop(Store::open(&db).unwrap());
        let me = std::fs::metadata(&db).unwrap().uid();
        // nobody (65534) when we are root; else we cannot give the store away and there is
        // nothing to test here.
        if me != 0 {
            eprintln!("skipped: needs root to chown");
            return;
        }
        std::os::unix::fs::chown(&db, Some(65534), None).unwrap();
        let before = snapshot(&db);
        let e = Store::open(&db).err().expect("not the owner");
        assert!(matches!(e, StoreError::NotOwner { .. }), "{e}");
        assert!(!e.is_corruption());
        assert_eq!(snapshot(&db), before);
        assert_eq!(Store::open_read_only(&db).unwrap().len(), 0, "reading needs no ownership");
    }

    #[test]
    fn a_stuck_request_makes_the_store_report_a_stall_and_callers_get_their_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.health(Duration::from_millis(200)), None);
        let held = store.clone();
        let pause = std::thread::spawn(move || held.pause(Duration::from_secs(3)));
        let deadline = Instant::now() + Duration::from_secs(30);
        let problem = loop {
            if let Some(p) = store.health(Duration::from_millis(200)) {
                break p;
            }
            assert!(Instant::now() < deadline, "no stall reported");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(problem.contains("store stalled: pause"), "{problem}");
        let e = store.with_deadline(Duration::from_millis(100)).get("x").unwrap_err();
        assert!(matches!(e, StoreError::Stalled { op: "get", .. }), "{e}");
        pause.join().unwrap().unwrap();
        // the owner marks itself idle just after the answer went out
        while store.health(Duration::from_millis(200)).is_some() {
            assert!(Instant::now() < deadline, "the stall is still reported after the pause");
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(store.get("x").unwrap(), None);
    }

    /// Issue 13: `/metrics` queued behind the store writer and took 2 s during a mass fetch.
    /// The tallies a scrape reads are published by the owner and read without queueing: a
    /// caller that cannot wait at all for the owner still gets them while it is held.
    #[test]
    fn scrape_tallies_are_answered_while_the_owner_is_busy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.upsert(&[alert("198.51.100.9", 100, 2)], Notify::Skip).unwrap();
        let held = store.clone();
        let pause = std::thread::spawn(move || held.pause(Duration::from_secs(3)));
        let deadline = Instant::now() + Duration::from_secs(30);
        while store.health(Duration::from_millis(100)).is_none() {
            assert!(Instant::now() < deadline, "the pause never started");
            std::thread::sleep(Duration::from_millis(10));
        }
        let impatient = store.with_deadline(Duration::ZERO);
        assert!(matches!(impatient.get("x"), Err(StoreError::Stalled { .. })), "a queued request must wait");
        let open = impatient.count_unresolved().unwrap();
        assert_eq!(open.values().sum::<u64>(), 1, "{open:?}");
        assert!(impatient.pending_deliveries().unwrap().is_empty());
        assert_eq!(impatient.count(&AlertFilter::default()).unwrap(), 1);
        assert_eq!(impatient.len(), 1);
        pause.join().unwrap().unwrap();
    }

    #[test]
    fn the_scrape_tallies_kept_by_each_write_equal_a_full_scan_at_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let tallies = |s: &Store| (s.count_unresolved().unwrap(), s.pending_deliveries().unwrap());
        let (a, b, c) = (alert("1.0.0.1", 100, 1), alert("1.0.0.2", 200, 1), alert("1.0.0.3", 5000, 1));
        store.upsert(&[a.clone(), b.clone(), c.clone()], Notify::Queue).unwrap();
        store.upsert(&[alert("1.0.0.1", 100, 4)], Notify::Queue).unwrap();
        assert_eq!(store.count_unresolved().unwrap()[&("unknown-client-fetch".into(), "critical".into())], 3);
        store.set_status(&b.id, AlertStatus::Resolved).unwrap();
        store.set_status(&a.id, AlertStatus::Acked).unwrap();
        for (i, x) in [&a, &b, &c].into_iter().enumerate() {
            store
                .fan_out(&x.id, &["am", "hook"], |_, m, _| {
                    Some(Delivery { pending_since_ms: Some(m.queued_ms + i as i64), ..Delivery::default() })
                })
                .unwrap();
        }
        store.update_delivery("am", &c.id, |d| d.map(|d| Delivery { pending_since_ms: None, ..d })).unwrap();
        store.drop_deliveries_except(&["am"]).unwrap();
        store.remove_last_seen_before(1000).unwrap();
        let kept = tallies(&store);
        assert_eq!(kept.0[&("unknown-client-fetch".into(), "critical".into())], 1, "{kept:?}");
        assert!(!kept.1.contains_key("hook"));
        assert_eq!(kept.1.get("am"), None, "a's and b's records went with them, c's is up to date");
        store.flush().unwrap();
        drop(store);
        assert_eq!(tallies(&Store::open(dir.path()).unwrap()), kept);
    }
}

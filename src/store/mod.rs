//! Durable alert storage on sled: the only module that talks to the database, so the engine
//! could be swapped. Owns the trees `alerts` (id → JSON), `alerts_by_time` (first_seen ‖ id).
//! Never decides what an alert is: it merges snapshots with [`Alert::merge_from`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::detect::alert::{Alert, AlertStatus};

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
        Ok(Store { db, alerts, by_time, meta })
    }

    /// Inserts or merges each alert (same id → one record; counters never go down). Each
    /// record is updated atomically (compare-and-swap), so a concurrent ack from the API is
    /// never lost. Returns the indices of the alerts whose id was new. Not durable until
    /// [`Store::flush`] returns.
    pub fn upsert(&self, alerts: &[Alert]) -> Result<Vec<usize>, StoreError> {
        let mut created = Vec::new();
        let mut index_batch = sled::Batch::default();
        for (i, newer) in alerts.iter().enumerate() {
            let mut was_new = false;
            let merged = self.alerts.update_and_fetch(newer.id.as_bytes(), |old| {
                let merged = match old.and_then(|bytes| serde_json::from_slice::<Alert>(bytes).ok()) {
                    Some(mut stored) => {
                        stored.merge_from(newer);
                        was_new = false;
                        stored
                    }
                    // New, or an unreadable record: the live snapshot replaces it.
                    None => {
                        was_new = old.is_none();
                        newer.clone()
                    }
                };
                serde_json::to_vec(&merged).ok()
            })?;
            if was_new {
                created.push(i);
            }
            if let Some(bytes) = merged {
                if let Ok(a) = serde_json::from_slice::<Alert>(&bytes) {
                    index_batch.insert(time_key(&a), &[]);
                }
            }
        }
        self.by_time.apply_batch(index_batch)?;
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

    /// Sets an alert's status (ack, resolve) durably.
    pub fn set_status(&self, id: &str, status: AlertStatus) -> Result<Alert, StoreError> {
        let mut corrupt = None;
        let updated = self.alerts.update_and_fetch(id.as_bytes(), |old| {
            let bytes = old?;
            match serde_json::from_slice::<Alert>(bytes) {
                Ok(mut a) => {
                    a.status = status;
                    serde_json::to_vec(&a).ok()
                }
                Err(e) => {
                    corrupt = Some(e);
                    Some(bytes.to_vec())
                }
            }
        })?;
        if let Some(source) = corrupt {
            return Err(StoreError::Corrupt { id: id.to_string(), source });
        }
        let bytes = updated.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        self.flush()?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt { id: id.to_string(), source })
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
    /// seconds), with their index entries, durably. Returns how many were removed.
    pub fn remove_last_seen_before(&self, cutoff: i64) -> Result<usize, StoreError> {
        // An alert first seen at or after the cutoff was also last seen after it: scan the
        // time index only up to there.
        let end = ((cutoff as u64) ^ (1 << 63)).to_be_bytes();
        let mut removed = 0;
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
                removed += 1;
            }
        }
        if removed > 0 {
            self.flush()?;
        }
        Ok(removed)
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
        store.upsert(&[a.clone(), b.clone()]).unwrap();
        store.upsert(std::slice::from_ref(&a)).unwrap();
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
            store.upsert(std::slice::from_ref(&a)).unwrap();
            store.set_status(&a.id, AlertStatus::Acked).unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        store.upsert(&[alert("3.3.3.3", 50, 9)]).unwrap();
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
        store.upsert(&[old.clone(), active.clone(), new.clone()]).unwrap();
        assert_eq!(store.remove_last_seen_before(993).unwrap(), 1);
        assert_eq!(store.get(&old.id).unwrap(), None);
        let left: Vec<String> = store.list(&AlertFilter::default()).unwrap().into_iter().map(|a| a.id).collect();
        assert_eq!(left, [active.id, new.id]);
        assert_eq!(store.remove_last_seen_before(993).unwrap(), 0, "a second sweep finds nothing");
        drop(store);
        assert_eq!(Store::open(dir.path()).unwrap().len(), 2, "the removal is durable");
    }
}

//! Durable alert storage on sled: the only module that talks to the database, so the engine
//! could be swapped. Owns the trees `alerts` (id → JSON), `alerts_by_time` (first_seen ‖ id).
//! Never decides what an alert is: it merges snapshots with [`Alert::merge_from`].

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

pub struct Store {
    db: sled::Db,
    alerts: sled::Tree,
    by_time: sled::Tree,
}

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
        Ok(Store { db, alerts, by_time })
    }

    /// Inserts or merges each alert (same id → one record; counters never go down).
    /// One writer at a time (the store stage owns the store), so a read-merge-write per alert
    /// is safe; the alert and its index entry are written as one batch per tree.
    /// Not durable until [`Store::flush`] returns.
    pub fn upsert(&self, alerts: &[Alert]) -> Result<(), StoreError> {
        let mut alert_batch = sled::Batch::default();
        let mut index_batch = sled::Batch::default();
        for newer in alerts {
            let merged = match self.alerts.get(newer.id.as_bytes())? {
                // An unreadable record is replaced by the live one rather than blocking.
                Some(bytes) => match serde_json::from_slice::<Alert>(&bytes) {
                    Ok(mut stored) => {
                        stored.merge_from(newer);
                        stored
                    }
                    Err(_) => newer.clone(),
                },
                None => newer.clone(),
            };
            let json =
                serde_json::to_vec(&merged).map_err(|source| StoreError::Corrupt { id: merged.id.clone(), source })?;
            alert_batch.insert(merged.id.as_bytes(), json);
            index_batch.insert(time_key(&merged), &[]);
        }
        self.by_time.apply_batch(index_batch)?;
        self.alerts.apply_batch(alert_batch)?;
        Ok(())
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
        let mut a = self.get(id)?.ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        a.status = status;
        let json = serde_json::to_vec(&a).map_err(|source| StoreError::Corrupt { id: id.to_string(), source })?;
        self.alerts.insert(id.as_bytes(), json)?;
        self.flush()?;
        Ok(a)
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
}

//! What a detection worker hands the store at each barrier: for every alert it changed, what
//! the alert counted since the last hand-out (a delta, never a total), and the evidence
//! ledger's deltas per (client, resource). Owns these shapes and how two of them fold into
//! one. Never talks to storage: [`crate::store::ledger`] owns the keys and the records.
//!
//! Deltas, not totals, because the store adds them in the same transaction as the checkpoint
//! of the lines they came from: a line is counted exactly once, by its source position (before
//! the checkpoint: counted; after it: read again and counted then). Lines read again after a
//! restart to rebuild windows ([`super::event::Event::reread`]) make no delta at all.

use serde::{Deserialize, Serialize};

use super::alert::Alert;

/// Distinct status codes kept per ledger entry; the rest are counted under status 0.
pub const MAX_STATUSES: usize = 8;

/// One alert's change since it was last handed to the store.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertChange {
    /// The alert as the worker sees it: identity, rule, times, samples and user agents are
    /// merged into the stored record. Its counters are the worker's own view (exact only for
    /// a run that never restarted); the store's come from the deltas below.
    pub alert: Alert,
    /// Matching requests counted since the last hand-out.
    pub requests: u64,
    /// Their 2xx body bytes (saturating).
    pub bytes: u64,
    /// Keys of the paths counted since the last hand-out that the worker cannot rule out as
    /// already counted in this alert (its in-memory set is capped): the store keeps the
    /// alert's distinct set and adds only keys it has not seen.
    pub paths: Vec<u128>,
}

impl AlertChange {
    /// Folds a later change of the same alert into this one.
    pub fn fold(&mut self, later: AlertChange) {
        debug_assert_eq!(self.alert.id, later.alert.id);
        self.requests = self.requests.saturating_add(later.requests);
        self.bytes = self.bytes.saturating_add(later.bytes);
        self.paths.extend(later.paths);
        let mut alert = later.alert;
        alert.merge_meta_from(&self.alert);
        self.alert = alert;
    }
}

/// Per-hour counts of one (client, resource): what a report over a time range reads. A ledger
/// entry keeps its own, so that a (client, resource) is one sled entry (issue 13: sled's
/// memory follows its number of entries).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HourCounts {
    pub requests: u64,
    /// Requests answered 2xx.
    pub ok: u64,
    /// Body bytes of the 2xx answers (saturating).
    pub bytes: u64,
}

impl HourCounts {
    pub fn add(&mut self, other: &HourCounts) {
        self.requests = self.requests.saturating_add(other.requests);
        self.ok = self.ok.saturating_add(other.ok);
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    /// Each count the larger of the two.
    pub fn max(&mut self, other: &HourCounts) {
        self.requests = self.requests.max(other.requests);
        self.ok = self.ok.max(other.ok);
        self.bytes = self.bytes.max(other.bytes);
    }
}

/// What one client did to one sensitive resource: a ledger entry, or a delta of one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// The client as alerts show it (address or host name).
    pub client: String,
    /// "partner" or "unknown" (internal clients' routine fetches are not ledgered).
    pub client_kind: String,
    #[serde(default)]
    pub partner: Option<String>,
    /// The normalised path, pseudonymised.
    pub path: String,
    /// "recording", "listing" or "other".
    pub path_class: String,
    /// The source of the first request (log file or topic name).
    pub source: String,
    pub first_seen: i64,
    pub last_seen: i64,
    pub requests: u64,
    /// Requests answered 2xx with the file (not HEAD, OPTIONS, TRACE, CONNECT: see
    /// [`crate::detect::rule::NO_BODY_METHODS`]), and their body bytes (saturating).
    pub ok: u64,
    pub bytes: u64,
    /// (status, requests), at most [`MAX_STATUSES`]; status 0 holds the rest.
    pub statuses: Vec<(u16, u64)>,
    /// Stable keyed hashes of the client and the raw normalised path (the ledger's key).
    #[serde(skip)]
    pub key: (u128, u128),
    /// Counts by hour (Unix seconds / 3600), sorted by hour: of this delta, or of a stored
    /// entry (within retention). Stored as `[hour, requests, ok, bytes]` rows.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hour_rows")]
    pub hours: Vec<(i64, HourCounts)>,
}

pub fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

impl Evidence {
    /// Counts one request at `time` answered `status` with `body_bytes`; `carries_body` is
    /// false for a method whose answer never holds the file (HEAD, …): such a request is
    /// counted with its status, never as a transfer.
    pub fn count(&mut self, time: i64, status: u16, body_bytes: u64, carries_body: bool) {
        self.first_seen = self.first_seen.min(time);
        self.last_seen = self.last_seen.max(time);
        self.requests = self.requests.saturating_add(1);
        let ok = carries_body && is_success(status);
        let bytes = if ok { body_bytes } else { 0 };
        if ok {
            self.ok = self.ok.saturating_add(1);
            self.bytes = self.bytes.saturating_add(bytes);
        }
        add_status(&mut self.statuses, status, 1);
        let counts = HourCounts { requests: 1, ok: u64::from(ok), bytes };
        fold_hour(&mut self.hours, time.div_euclid(3600), &counts, HourCounts::add);
    }

    /// Folds another delta (or entry) of the same (client, resource) into this one.
    pub fn fold(&mut self, other: &Evidence) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.requests = self.requests.saturating_add(other.requests);
        self.ok = self.ok.saturating_add(other.ok);
        self.bytes = self.bytes.saturating_add(other.bytes);
        for &(status, n) in &other.statuses {
            add_status(&mut self.statuses, status, n);
        }
        for (hour, counts) in &other.hours {
            fold_hour(&mut self.hours, *hour, counts, HourCounts::add);
        }
        if self.partner.is_none() {
            self.partner.clone_from(&other.partner);
        }
    }
}

impl Evidence {
    /// Folds a whole run's totals of the same (client, resource) in as maxima: a replay of
    /// the same lines again changes nothing.
    pub fn fold_max(&mut self, other: &Evidence) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.requests = self.requests.max(other.requests);
        self.ok = self.ok.max(other.ok);
        self.bytes = self.bytes.max(other.bytes);
        for &(status, n) in &other.statuses {
            match self.statuses.iter_mut().find(|(s, _)| *s == status) {
                Some((_, c)) => *c = (*c).max(n),
                None => add_status(&mut self.statuses, status, n),
            }
        }
        for (hour, counts) in &other.hours {
            fold_hour(&mut self.hours, *hour, counts, HourCounts::max);
        }
        if self.partner.is_none() {
            self.partner.clone_from(&other.partner);
        }
    }
}

/// Folds `counts` into the row of `hour` with `combine`, keeping the rows sorted by hour.
pub fn fold_hour(
    hours: &mut Vec<(i64, HourCounts)>,
    hour: i64,
    counts: &HourCounts,
    combine: fn(&mut HourCounts, &HourCounts),
) {
    match hours.binary_search_by_key(&hour, |(h, _)| *h) {
        Ok(at) => combine(&mut hours[at].1, counts),
        Err(at) => hours.insert(at, (hour, *counts)),
    }
}

/// Hour rows as `[hour, requests, ok, bytes]` arrays: a third of the bytes of named fields,
/// in an entry rewritten at every delta.
mod hour_rows {
    use serde::{Deserialize, Deserializer, Serializer};

    use super::{fold_hour, HourCounts};

    pub fn serialize<S: Serializer>(hours: &[(i64, HourCounts)], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(hours.iter().map(|(h, c)| (h, c.requests, c.ok, c.bytes)))
    }

    /// Rows in any order, repeated hours added: the result is sorted and one row an hour.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(i64, HourCounts)>, D::Error> {
        let mut hours = Vec::new();
        for (hour, requests, ok, bytes) in Vec::<(i64, u64, u64, u64)>::deserialize(d)? {
            fold_hour(&mut hours, hour, &HourCounts { requests, ok, bytes }, HourCounts::add);
        }
        Ok(hours)
    }
}

fn add_status(statuses: &mut Vec<(u16, u64)>, status: u16, n: u64) {
    if let Some((_, c)) = statuses.iter_mut().find(|(s, _)| *s == status) {
        *c = c.saturating_add(n);
    } else if statuses.len() < MAX_STATUSES - 1 || status == 0 {
        statuses.push((status, n));
    } else {
        add_status(statuses, 0, n);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An empty delta of client key 1, path key 2 (a recording of source "web").
    pub(crate) fn evidence() -> Evidence {
        Evidence {
            client: "203.0.113.9".into(),
            client_kind: "unknown".into(),
            partner: None,
            path: "/r/a.wav".into(),
            path_class: "recording".into(),
            source: "web".into(),
            first_seen: i64::MAX,
            last_seen: i64::MIN,
            requests: 0,
            ok: 0,
            bytes: 0,
            statuses: Vec::new(),
            key: (1, 2),
            hours: Vec::new(),
        }
    }

    #[test]
    fn counts_fold_saturate_and_statuses_stay_bounded() {
        let mut a = evidence();
        a.count(7200, 200, u64::MAX, true);
        a.count(7300, 206, 5, true);
        let mut b = evidence();
        for s in 400..420 {
            b.count(3600, s, 1, true);
        }
        a.fold(&b);
        assert_eq!((a.requests, a.ok, a.bytes, a.first_seen, a.last_seen), (22, 2, u64::MAX, 3600, 7300));
        assert_eq!(a.statuses.len(), MAX_STATUSES);
        assert_eq!(a.statuses.iter().map(|s| s.1).sum::<u64>(), 22, "every request under some status");
        assert_eq!(a.hours.iter().map(|h| h.1.requests).sum::<u64>(), 22);
        assert_eq!(a.hours.iter().find(|h| h.0 == 2).map(|h| h.1.ok), Some(2));
    }

    #[test]
    fn a_head_answered_200_is_a_request_with_its_status_not_a_transfer() {
        let mut a = evidence();
        a.count(7200, 200, 0, false);
        a.count(7201, 200, 4800, true);
        assert_eq!((a.requests, a.ok, a.bytes), (2, 1, 4800));
        assert_eq!(a.statuses, [(200, 2)], "the ledger keeps what the server answered");
        assert_eq!(a.hours.iter().map(|h| h.1.ok).sum::<u64>(), 1);
    }
}

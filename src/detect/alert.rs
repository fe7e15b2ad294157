//! The alert record: identity, what fired, and what it has counted since.
//! Owns alert ids (deterministic: rule, group, start), the alert states and the merge of two
//! snapshots of one alert. Never talks to storage or the network.
//!
//! # States and transitions
//! - *(none)* → `Open`: a rule fires (a detection worker opens an episode).
//! - `Open` → `Acked`: a person acknowledges it; it keeps counting.
//! - `Open` | `Acked` → `Resolved`: a person resolves it. **Closed for good**: the store
//!   refuses any later status but `Resolved` ([`crate::store::StoreError::Closed`]), and the
//!   worker running its episode closes it, so the next match of the rule for that group opens
//!   a new alert with a new id (and is notified). Lines re-read after a restart that the
//!   resolved alert already counted stay in it.
//! - An episode that *ends* (no match for `suppress_secs`) keeps its status; the next match
//!   opens a new alert.

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::rule::Severity;

/// Bounded sample sizes, so one alert's size is bounded whatever the client does.
pub const MAX_SAMPLE_PATHS: usize = 20;
pub const MAX_USER_AGENTS: usize = 5;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    #[default]
    Open,
    Acked,
    Resolved,
}

impl AlertStatus {
    pub const ALL: [AlertStatus; 3] = [AlertStatus::Open, AlertStatus::Acked, AlertStatus::Resolved];

    pub fn from_name(s: &str) -> Option<AlertStatus> {
        AlertStatus::ALL.into_iter().find(|v| v.as_str() == s)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Acked => "acked",
            AlertStatus::Resolved => "resolved",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// 16 hex digits of a fixed hash of (rule id, group key, first_seen): re-reading the same
    /// lines after a crash or a rebalance yields the same id, so the alert is updated, not doubled.
    pub id: String,
    pub rule_id: String,
    /// Rule name, e.g. "unknown-client-fetch".
    pub rule: String,
    pub severity: Severity,
    /// "client" or "source".
    pub group_by: String,
    /// The client's address (for source-grouped alerts: the first client seen).
    pub client: String,
    /// "internal", "partner" or "unknown".
    pub client_kind: String,
    pub partner: Option<String>,
    /// The source (log file / topic) name.
    pub source: String,
    /// Event time of the first request counted, Unix seconds.
    pub first_seen: i64,
    pub last_seen: i64,
    /// Matching requests counted since (and, for windowed rules, in the window before) firing.
    pub requests: u64,
    pub distinct_resources: u64,
    /// Body bytes of matching requests answered 2xx.
    pub bytes: u64,
    /// First distinct normalised paths, at most [`MAX_SAMPLE_PATHS`].
    pub sample: Vec<String>,
    pub user_agents: Vec<String>,
    pub status: AlertStatus,
}

/// An alert id as numbers: the second its alert opened (`None` for an id made before ids led
/// with their time) and the hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct AlertKey {
    pub opened: Option<u32>,
    pub hash: u64,
}

impl Alert {
    pub fn make_id(rule_id: &str, group_key: &str, first_seen: i64) -> String {
        Alert::id_text(Alert::id_key(rule_id, group_key, first_seen))
    }

    /// The key an id is the hex form of (what a worker keeps instead of the text): the second
    /// the alert opened (clamped to 0..2^32), then a fixed hash of (rule id, group key, that
    /// time). Ids sort by the time their alerts opened, so the store keeps its records in that
    /// order and needs no time index of its own (issue 13: sled's memory follows its number
    /// of entries, and inserts in key order cost it far less than inserts spread over a tree).
    pub fn id_key(rule_id: &str, group_key: &str, first_seen: i64) -> AlertKey {
        let mut buf = Vec::with_capacity(rule_id.len() + group_key.len() + 24);
        buf.extend_from_slice(rule_id.as_bytes());
        buf.push(0);
        buf.extend_from_slice(group_key.as_bytes());
        buf.push(0);
        buf.extend_from_slice(&first_seen.to_be_bytes());
        let opened = first_seen.clamp(0, i64::from(u32::MAX)) as u32;
        AlertKey { opened: Some(opened), hash: xxh3_64(&buf) }
    }

    pub fn id_text(key: AlertKey) -> String {
        match key.opened {
            Some(opened) => format!("{opened:08x}{:016x}", key.hash),
            None => format!("{:016x}", key.hash),
        }
    }

    /// The key of an id [`Alert::make_id`] makes (24 lower-case hex digits) or made before ids
    /// led with their time (16); `None` for any other text.
    pub fn parse_id(id: &str) -> Option<AlertKey> {
        let lower_hex = |b: u8| b.is_ascii_digit() || (b'a'..=b'f').contains(&b);
        if !id.bytes().all(lower_hex) {
            return None;
        }
        match id.len() {
            24 => Some(AlertKey {
                opened: Some(u32::from_str_radix(&id[..8], 16).ok()?),
                hash: u64::from_str_radix(&id[8..], 16).ok()?,
            }),
            16 => Some(AlertKey { opened: None, hash: u64::from_str_radix(id, 16).ok()? }),
            _ => None,
        }
    }

    /// Folds a newer snapshot of the same alert into a stored one. Counters never go down
    /// (a re-read after a crash may see only part of an episode), samples are unioned within
    /// their bounds, and what a person did (ack, resolve) is kept.
    pub fn merge_from(&mut self, newer: &Alert) {
        self.merge_meta_from(newer);
        self.requests = self.requests.max(newer.requests);
        self.distinct_resources = self.distinct_resources.max(newer.distinct_resources);
        self.bytes = self.bytes.max(newer.bytes);
    }

    /// Folds what is not a count of another snapshot of the same alert into this one: times
    /// widen, samples are unioned within their bounds, the status stays. Counts are the
    /// caller's (the store adds deltas: [`super::evidence::AlertChange`]).
    pub fn merge_meta_from(&mut self, other: &Alert) {
        debug_assert_eq!(self.id, other.id);
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        union_bounded(&mut self.sample, &other.sample, MAX_SAMPLE_PATHS);
        union_bounded(&mut self.user_agents, &other.user_agents, MAX_USER_AGENTS);
    }
}

fn union_bounded(into: &mut Vec<String>, from: &[String], max: usize) {
    for s in from {
        if into.len() >= max {
            break;
        }
        if !into.contains(s) {
            into.push(s.clone());
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An R1 alert of 203.0.113.7 with `requests` requests: the fixture other modules' tests
    /// start from (`Alert { field: …, ..alert(0) }`).
    pub(crate) fn alert(requests: u64) -> Alert {
        Alert {
            id: Alert::make_id("R1", "203.0.113.7", 1550480401),
            rule_id: "R1".into(),
            rule: "unknown-client-fetch".into(),
            severity: Severity::Critical,
            group_by: "client".into(),
            client: "203.0.113.7".into(),
            client_kind: "unknown".into(),
            partner: None,
            source: "access.log".into(),
            first_seen: 1550480401,
            last_seen: 1550480401 + requests as i64,
            requests,
            distinct_resources: requests,
            bytes: 100 * requests,
            sample: (0..requests).map(|i| format!("/recordings/{i}.wav")).collect(),
            user_agents: vec!["curl/7.64.0".into()],
            status: AlertStatus::Open,
        }
    }

    #[test]
    fn ids_are_deterministic_and_distinguish_their_inputs() {
        let a = Alert::make_id("R1", "1.2.3.4", 10);
        assert_eq!(a, Alert::make_id("R1", "1.2.3.4", 10));
        assert_eq!(a.len(), 24);
        assert!(a.starts_with("0000000a"), "{a} leads with the second it opened");
        assert!(Alert::make_id("R1", "1.2.3.4", 1 << 20) > Alert::make_id("R1", "1.2.3.4", (1 << 20) - 1));
        // An id made before ids led with their time reads back as itself.
        let older = "00019fe4a00eeb29";
        assert_eq!(Alert::parse_id(older).map(Alert::id_text).as_deref(), Some(older));
        assert_eq!(Alert::parse_id(&a).map(Alert::id_text), Some(a.clone()));
        assert_eq!(Alert::parse_id("00019fe4a00eeb2"), None);
        assert_ne!(a, Alert::make_id("R1", "1.2.3.4", 11));
        assert_ne!(a, Alert::make_id("R2", "1.2.3.4", 10));
        assert_ne!(Alert::make_id("R1", "1.2.3.45", 10), Alert::make_id("R1", "1.2.3.4", 510));
    }

    #[test]
    fn merge_never_lowers_counts_and_keeps_the_ack() {
        let mut stored = alert(5);
        stored.status = AlertStatus::Acked;
        let partial_reread = alert(2);
        stored.merge_from(&partial_reread);
        assert_eq!(stored.requests, 5);
        assert_eq!(stored.status, AlertStatus::Acked);
        stored.merge_from(&alert(30));
        assert_eq!(stored.requests, 30);
        assert_eq!(stored.sample.len(), MAX_SAMPLE_PATHS);
    }
}

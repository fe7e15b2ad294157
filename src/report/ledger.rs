//! The scope report from the store's evidence ledger (`recwatch report`): turns ledger entries
//! (one per non-internal client and sensitive resource) and their hourly counts into the same
//! per-client scopes a replay keeps, so both reports are built and rendered by one code path.
//! Owns the query filters (period, client, source, clients of a rule) and how a ledger entry
//! counts as taken or partial. Never opens the store (the CLI hands entries in) and never sees
//! a raw path: ledger paths are pseudonymised, and the call id is read from that text.
//!
//! Differences from a replay's scope, stated in the report's "cannot know": internal clients
//! are not in the ledger; `--since/--until` are exact to the hour (the time index is hourly);
//! within a period, whether a file's 2xx answers were complete or 206 comes from the entry's
//! statuses over all time.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use crate::classify::call::CallIds;
use crate::classify::client::{ClientClass, ClientKind};
use crate::detect::alert::Alert;
use crate::detect::evidence::{Evidence, HourCounts};
use crate::detect::scope::{call_key, CallTaken, ClientScope, Period, Transfer, MAX_SCOPE_USER_AGENTS};
use crate::privacy::Pseudonymizer;

use super::InputSummary;

/// What a `recwatch report` asks for.
#[derive(Clone, Debug, Default)]
pub struct LedgerQuery {
    pub period: Period,
    /// Only this client (as alerts show it).
    pub client: Option<String>,
    /// Only evidence whose first request came from this source.
    pub source: Option<String>,
    /// Only these clients (those with an alert of the asked-for rule).
    pub clients: Option<BTreeSet<String>>,
}

impl LedgerQuery {
    /// The hours (Unix seconds / 3600) to read from the time index: `[since, until)` widened
    /// to whole hours; everything when open.
    pub fn hours(&self) -> (i64, i64) {
        let since = self.period.since.map_or(i64::MIN / 3_600, |s| s.div_euclid(3_600));
        let until = self.period.until.map_or(i64::MAX / 3_600, |u| u.div_euclid(3_600) + i64::from(u % 3_600 != 0));
        (since, until)
    }

    fn accepts(&self, e: &Evidence) -> bool {
        self.client.as_ref().is_none_or(|c| *c == e.client)
            && self.source.as_ref().is_none_or(|s| *s == e.source)
            && self.clients.as_ref().is_none_or(|set| set.contains(&e.client))
    }
}

/// One hour of one (client, resource): (hour, client key, path key, counts).
pub type HourRow = (i64, u128, u128, HourCounts);

/// One (client, resource) within the period: its counts, first and last hour, and the hours
/// with 2xx transfers (hour, count).
type InPeriod = (HourCounts, i64, i64, Vec<(i64, u64)>);

/// Per-client scopes and per-source summaries from ledger `entries` and the hourly rows of
/// the query's hours. `partner_names` maps partner names to indices (names not in it are
/// appended); user agents come from the clients' `alerts` (the ledger keeps none).
pub fn scopes(
    entries: Vec<Evidence>,
    hours: &[HourRow],
    query: &LedgerQuery,
    call_ids: &CallIds,
    pseudonyms: &Pseudonymizer,
    alerts: &[Alert],
    partner_names: &mut Vec<String>,
) -> (Vec<ClientScope>, Vec<InputSummary>) {
    // Per (client, path): the period's counts and hours with 2xx transfers.
    let mut in_period: HashMap<(u128, u128), InPeriod> = HashMap::new();
    for (hour, client, path, counts) in hours {
        let e = in_period.entry((*client, *path)).or_insert((HourCounts::default(), *hour, *hour, Vec::new()));
        e.0.add(counts);
        e.1 = e.1.min(*hour);
        e.2 = e.2.max(*hour);
        if counts.ok > 0 {
            e.3.push((*hour, counts.ok));
        }
    }
    let mut clients: BTreeMap<String, ClientScope> = BTreeMap::new();
    let mut sources: BTreeMap<String, (i64, i64)> = BTreeMap::new();
    for e in entries.into_iter().filter(|e| query.accepts(e)) {
        let Some((counts, first_hour, last_hour, fetch_hours)) = in_period.remove(&e.key) else { continue };
        if counts.requests == 0 {
            continue;
        }
        let first = e.first_seen.max(first_hour * 3_600);
        let last = e.last_seen.min(last_hour * 3_600 + 3_599);
        let span = sources.entry(e.source.clone()).or_insert((first, last));
        *span = (span.0.min(first), span.1.max(last));
        let s = clients.entry(e.client.clone()).or_insert_with(|| ClientScope {
            client: e.client.clone(),
            class: Some(class_of(&e, partner_names)),
            first_seen: first,
            last_seen: last,
            ..ClientScope::default()
        });
        s.requests = s.requests.saturating_add(counts.requests);
        s.first_seen = s.first_seen.min(first);
        s.last_seen = s.last_seen.max(last);
        if e.path_class != "recording" {
            continue;
        }
        let of = |t: Transfer| e.statuses.iter().filter(move |(st, _)| Transfer::of_status(*st) == t).map(|(_, n)| *n);
        // Over all time; within the period no more than its requests.
        let complete = of(Transfer::Complete).sum::<u64>().min(counts.ok);
        let partial = of(Transfer::Partial).sum::<u64>().min(counts.requests);
        s.bytes = s.bytes.saturating_add(counts.bytes);
        s.successful = s.successful.saturating_add(complete);
        s.partial_transfers = s.partial_transfers.saturating_add(partial);
        for (hour, n) in fetch_hours {
            s.fetch_hours.add(hour, n);
        }
        if complete == 0 && partial == 0 {
            continue;
        }
        let call = pseudonyms.pseudonymize_bytes(call_ids.call_of(e.path.as_bytes()));
        let path = e.key.1;
        if complete > 0 {
            s.files.push(path);
        }
        if partial > 0 {
            s.partial.push(path);
        }
        // One per file, merged per call by `normalise`.
        let taken = CallTaken {
            files: u64::from(complete > 0),
            partial_files: u64::from(complete == 0),
            name: Some(Arc::from(&*call)),
        };
        s.calls.push((call_key(call.as_bytes()), taken));
    }
    for a in alerts {
        if let Some(s) = clients.get_mut(&a.client) {
            for ua in &a.user_agents {
                if s.user_agents.len() < MAX_SCOPE_USER_AGENTS && !s.user_agents.contains(ua) {
                    s.user_agents.push(ua.clone());
                }
            }
        }
    }
    let inputs = sources
        .into_iter()
        .map(|(source, (first, last))| {
            let mut i = InputSummary::new(source);
            i.first_line = Some(first);
            i.last_line = Some(last);
            i
        })
        .collect();
    let clients = clients
        .into_values()
        .map(|mut s| {
            s.normalise();
            s
        })
        .collect();
    (clients, inputs)
}

fn class_of(e: &Evidence, partner_names: &mut Vec<String>) -> ClientClass {
    match (e.client_kind.as_str(), &e.partner) {
        ("partner", Some(name)) => {
            let index = partner_names.iter().position(|n| n == name).unwrap_or_else(|| {
                partner_names.push(name.clone());
                partner_names.len() - 1
            });
            ClientClass { kind: ClientKind::Partner, partner: index as u16 }
        }
        ("partner", None) => ClientClass { kind: ClientKind::Partner, partner: u16::MAX },
        _ => ClientClass::UNKNOWN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(client: &str, path: &str, key: (u128, u128), statuses: &[(u16, u64)]) -> Evidence {
        let requests = statuses.iter().map(|s| s.1).sum();
        let ok = statuses.iter().filter(|s| (200..300).contains(&s.0)).map(|s| s.1).sum();
        Evidence {
            client: client.into(),
            client_kind: "unknown".into(),
            partner: None,
            path: path.into(),
            path_class: "recording".into(),
            source: "web".into(),
            first_seen: 7_200,
            last_seen: 7_300,
            requests,
            ok,
            bytes: 10 * ok,
            statuses: statuses.to_vec(),
            key,
            hours: Vec::new(),
        }
    }

    #[test]
    fn ledger_entries_count_calls_files_and_partials_like_a_replay() {
        let ids = CallIds::new(r"call-(?P<call>\d+)-part").unwrap();
        let key = Pseudonymizer::new(b"0123456789abcdef0123");
        let entries = vec![
            entry("203.0.113.9", "/r/call-1-part1.wav", (9, 1), &[(200, 2)]),
            entry("203.0.113.9", "/r/call-1-part2.wav", (9, 2), &[(206, 1), (200, 1)]),
            entry("203.0.113.9", "/r/call-2-part1.wav", (9, 3), &[(206, 1)]),
            entry("203.0.113.9", "/r/call-3-part1.wav", (9, 4), &[(404, 3)]),
            entry("192.0.2.1", "/r/call-1-part1.wav", (7, 1), &[(200, 1)]),
        ];
        let hours: Vec<HourRow> = entries
            .iter()
            .map(|e| (2, e.key.0, e.key.1, HourCounts { requests: e.requests, ok: e.ok, bytes: e.bytes }))
            .collect();
        let (found, inputs) = scopes(entries, &hours, &LedgerQuery::default(), &ids, &key, &[], &mut Vec::new());
        let s = found.iter().find(|s| s.client == "203.0.113.9").unwrap();
        assert_eq!((s.requests, s.successful, s.partial_transfers), (8, 3, 2));
        assert_eq!((s.files.len(), s.partial_only().count()), (2, 1));
        assert_eq!(s.calls_taken().count(), 1);
        assert_eq!(s.call(call_key(b"2")).unwrap().partial_files, 1);
        assert_eq!(inputs.len(), 1);
        assert_eq!(inputs[0].first_line, Some(7_200));
        // A period that ends before hour 2 leaves nothing; the client filter keeps one client.
        let early = LedgerQuery { period: Period { since: None, until: Some(7_200) }, ..LedgerQuery::default() };
        assert_eq!(early.hours().1, 2);
        let only = LedgerQuery { client: Some("192.0.2.1".into()), ..LedgerQuery::default() };
        let entries = vec![entry("192.0.2.1", "/r/call-1-part1.wav", (7, 1), &[(200, 1)])];
        let (found, _) = scopes(entries, &hours, &only, &ids, &key, &[], &mut Vec::new());
        assert_eq!(found.len(), 1);
    }
}

//! The scope report: what a breach notification needs — which clients took which calls and
//! recordings, how many distinct, how many bytes, when, and what the report cannot know — as
//! JSON, CSV, Markdown or one self-contained HTML page. Owns the report's model
//! ([`Report`], built from per-client scopes and alerts) and its renderings ([`text`] for CSV
//! and Markdown, [`html`]). Never reads logs or the store itself. Paths, call ids and user
//! agents in it were pseudonymised where they were kept ([`crate::privacy`]); every rendering
//! writes log-derived text through [`crate::escape`]'s one rule, so a crafted path or user
//! agent cannot act on a terminal, leave its Markdown code span, become markup or a
//! spreadsheet formula.

pub mod html;
pub mod ledger;
pub mod period;
pub mod text;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::classify::client::ClientKind;
use crate::detect::alert::Alert;
use crate::detect::worker::ClientScope;
use crate::escape;
use crate::parse::time::format_rfc3339;
use crate::parse::{parse_line, LogFormat, SkipReason};
use crate::telemetry::Telemetry;
pub use period::{period_text, Period, PeriodText};

/// A silence of more than this (seconds) between two lines read is a gap in the report.
pub const GAP_SECS: i64 = 3_600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReportFormat {
    Json,
    Csv,
    Markdown,
    Html,
}

impl ReportFormat {
    pub const NAMES: &'static str = "json, csv, md or html";

    pub fn from_name(s: &str) -> Option<ReportFormat> {
        match s {
            "json" => Some(ReportFormat::Json),
            "csv" => Some(ReportFormat::Csv),
            "md" | "markdown" => Some(ReportFormat::Markdown),
            "html" => Some(ReportFormat::Html),
            _ => None,
        }
    }
}

/// The scope report. Counts are over the period (`--since/--until`); detection saw every line.
#[derive(Serialize)]
pub struct Report {
    /// What produced it: "replay" (finished logs) or "store" (the evidence ledger).
    pub origin: &'static str,
    /// The period asked for (open ends: null).
    pub period: PeriodText,
    pub lines: u64,
    pub parsed: u64,
    /// Skipped lines by reason (every reason listed, zeros included).
    pub skipped: BTreeMap<&'static str, u64>,
    /// Lines longer than the line bound, judged by their head (counted in `parsed` or
    /// `skipped` like any line).
    pub truncated: u64,
    /// Requests to any path under a sensitive prefix.
    pub sensitive_requests: u64,
    /// Of those, requests for recordings (prefix and extension).
    pub recording_requests: u64,
    /// The sources read, each with its coverage.
    pub inputs: Vec<InputSummary>,
    /// Over every client.
    pub totals: Totals,
    /// Unknown clients first, then partners, then internal; within each, most calls first.
    pub clients: Vec<ClientRow>,
    /// Calls taken (completely, at least one file) by more than one client, at least one of
    /// them outside the internal networks (internal clients' calls are counted, not named).
    pub shared_calls: Vec<SharedCall>,
    /// Alerts whose requests fall (at least partly) in the period.
    pub alerts: Vec<AlertRow>,
    /// What a GDPR Art. 33 notification needs.
    pub art33: Art33,
}

#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Clients with any request to a sensitive path.
    pub clients: u64,
    /// Of those, clients that took at least one recording completely.
    pub clients_taking: u64,
    /// Distinct calls with at least one file taken completely, by any client.
    pub calls: u64,
    /// Distinct recordings taken completely, by any client.
    pub files: u64,
    /// Partial transfers (206, 499) of recordings.
    pub partial_transfers: u64,
    /// Distinct recordings transferred only partially, never completely by anyone.
    pub partial_files: u64,
    /// Body bytes of recordings answered 2xx (saturating).
    pub bytes: u64,
    pub first_seen: Option<String>,
    pub last_seen: Option<String>,
}

#[derive(Serialize, Clone, Debug)]
pub struct InputSummary {
    pub input: String,
    /// Lines read from it (decompressed).
    pub lines: u64,
    /// Bytes read from it (decompressed); only known when it was read to the end.
    pub bytes: u64,
    /// Why reading stopped early, if it did (lines before the error were processed).
    pub error: Option<String>,
    /// Set when most of its lines were skipped: probably the wrong `--format`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
    /// Time of its first and last line that has a readable time (Unix seconds).
    #[serde(serialize_with = "time_text")]
    pub first_line: Option<i64>,
    #[serde(serialize_with = "time_text")]
    pub last_line: Option<i64>,
    /// Its skipped lines by reason (reasons with none left out).
    pub skipped_by_reason: BTreeMap<&'static str, u64>,
    /// Silences of more than [`GAP_SECS`] between two neighbouring lines of it.
    pub gaps: Vec<Gap>,
    /// Lines of it that did not parse (blank lines not counted); the report says it through
    /// `warning` when they are more than half.
    #[serde(skip)]
    pub skipped: u64,
}

/// A silence in a source: no line between `from` and `to`.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Gap {
    pub from: String,
    pub to: String,
    pub secs: i64,
}

fn time_text<S: serde::Serializer>(t: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format_rfc3339(*t)),
        None => s.serialize_none(),
    }
}

impl InputSummary {
    /// A summary of `input` before anything was read from it.
    pub fn new(input: String) -> InputSummary {
        InputSummary {
            input,
            lines: 0,
            bytes: 0,
            error: None,
            warning: None,
            first_line: None,
            last_line: None,
            skipped_by_reason: BTreeMap::new(),
            gaps: Vec::new(),
            skipped: 0,
        }
    }
}

/// Lines the parsers skipped so far, except blank ones and lines recording no access (neither
/// is a sign of a wrong format).
pub fn unparsed_lines(telemetry: &Telemetry) -> u64 {
    SkipReason::ALL.iter().filter(|r| r.is_unparsed()).map(|r| telemetry.skipped(*r)).sum()
}

/// The warning for an input of which `skipped` of `lines` (more than half) could not be parsed
/// as `format`; `sample` is the input's first lines (empty when it cannot be read again, like
/// stdin), used to name the format that fits better. `None` when at most half were skipped.
pub fn skipped_lines_warning(format: LogFormat, lines: u64, skipped: u64, sample: &[Vec<u8>]) -> Option<String> {
    if lines == 0 || skipped * 2 <= lines {
        return None;
    }
    let head = format!("{skipped} of {lines} lines were skipped as not {}", format.as_str());
    Some(match likely_format(sample) {
        Some(f) if f != format => format!("{head}: they look like {} (try --format {})", f.as_str(), f.as_str()),
        _ => {
            format!("{head}: no known format fits them (formats: {})", LogFormat::ALL.map(LogFormat::as_str).join(", "))
        }
    })
}

/// The format that parses the most of `sample`'s lines with a client address where it
/// expects one (ties: the richer format, one with a user agent, first); `None` when none
/// parses any.
pub fn likely_format(sample: &[Vec<u8>]) -> Option<LogFormat> {
    let fits = |f: LogFormat, line: &[u8]| {
        let rich = matches!(f, LogFormat::Combined | LogFormat::VhostCombined);
        parse_line(f, line).is_ok_and(|l| {
            crate::parse::parse_client_ip(l.client).is_some()
                && (!rich || l.user_agent().is_some() || l.referer().is_some())
        })
    };
    [LogFormat::Combined, LogFormat::VhostCombined, LogFormat::Common, LogFormat::VhostCommon]
        .into_iter()
        .map(|f| (sample.iter().filter(|l| fits(f, l)).count(), f))
        .filter(|(n, _)| *n > 0)
        .fold(None, |best: Option<(usize, LogFormat)>, (n, f)| match best {
            Some((b, _)) if b >= n => best,
            _ => Some((n, f)),
        })
        .map(|(_, f)| f)
}

#[derive(Serialize)]
pub struct AlertRow {
    pub id: String,
    pub rule: String,
    pub rule_id: String,
    pub severity: &'static str,
    pub client: String,
    pub client_kind: String,
    pub partner: Option<String>,
    pub source: String,
    pub first_seen: String,
    pub last_seen: String,
    pub requests: u64,
    pub distinct_resources: u64,
    pub bytes: u64,
    pub sample: Vec<String>,
    pub user_agents: Vec<String>,
    pub status: &'static str,
}

#[derive(Serialize, Clone, Debug)]
pub struct ClientRow {
    pub client: String,
    pub kind: &'static str,
    pub partner: Option<String>,
    /// Requests to sensitive paths (any status).
    pub requests: u64,
    /// Distinct calls of which it took at least one file completely.
    pub calls: u64,
    /// Distinct recordings it took completely (2xx but 206).
    pub files: u64,
    /// Complete transfers of recordings (a file taken twice counts twice).
    pub successful: u64,
    /// Partial transfers (206, 499) of recordings.
    pub partial_transfers: u64,
    /// Distinct recordings it got only partially.
    pub partial_files: u64,
    /// Body bytes of recordings answered 2xx.
    pub bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
    /// Distinct user agents (pseudonymised; at most 8 kept).
    pub user_agents: Vec<String>,
    /// Rule ids of the alerts raised for it, one per alert.
    pub alerts: Vec<String>,
    /// The calls it touched, by call id (pseudonymised); empty for an internal client, whose
    /// calls are counted only.
    pub call_list: Vec<CallRow>,
    /// Transfers of recordings by hour (hour start, Unix seconds), sorted: the timeline.
    #[serde(skip)]
    pub fetch_hours: Vec<(i64, u64)>,
    /// (first seen, rule id, severity) of its alerts: the timeline's marks.
    #[serde(skip)]
    pub alert_marks: Vec<(i64, String, &'static str)>,
}

/// One call as one client touched it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CallRow {
    /// Shared with the scope that named it: a large report has one row per (client, call).
    pub call: std::sync::Arc<str>,
    /// Distinct files of it taken completely.
    pub files: u64,
    /// Distinct files of it got only partially.
    pub partial_files: u64,
}

/// A call taken by more than one client.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SharedCall {
    pub call: String,
    pub clients: Vec<String>,
}

/// What a GDPR Art. 33 notification needs, as far as the logs tell it.
#[derive(Serialize, Clone, Debug)]
pub struct Art33 {
    /// From `--since` (else the first line read) to `--until` (else the last line read).
    pub period_examined: PeriodText,
    /// Approximate number of data subjects affected: distinct calls taken by clients outside
    /// the known networks (a call may concern more than one person, a person more calls).
    pub data_subjects_approx: u64,
    /// Records concerned: distinct recordings those clients took completely.
    pub records: u64,
    /// Distinct recordings those clients got only partially.
    pub partial_records: u64,
    /// Clients outside the internal and partner networks that requested sensitive paths.
    pub clients_outside_known_networks: Vec<String>,
    /// Silences between the sources read (one ends, the next starts later), besides each
    /// source's own `gaps`.
    pub gaps_between_sources: Vec<Gap>,
    /// What the report cannot know.
    pub cannot_know: Vec<String>,
}

/// What the report is built from besides scopes and alerts.
pub struct ReportContext {
    pub origin: &'static str,
    pub period: Period,
    /// Whether `[sensitive] call_id` is configured (else every file is its own call).
    pub call_ids_configured: bool,
    /// Partner names by index.
    pub partner_names: Vec<String>,
}

impl Report {
    /// Builds the report of a replay from its telemetry, inputs, alerts and the rows of its
    /// per-client scopes.
    pub fn build(
        telemetry: &Telemetry,
        inputs: Vec<InputSummary>,
        alerts: &[Alert],
        rows: ScopeRows,
        context: ReportContext,
    ) -> Report {
        use std::sync::atomic::Ordering::Relaxed;
        let lines = LineCounts {
            lines: telemetry.lines_read.load(Relaxed),
            parsed: telemetry.lines_parsed.load(Relaxed),
            skipped: SkipReason::ALL.iter().map(|r| (r.as_str(), telemetry.skipped(*r))).collect(),
            truncated: {
                let all = telemetry.lines_truncated.lock().unwrap_or_else(|e| e.into_inner());
                all.values().map(|c| c.load(Relaxed)).sum()
            },
            sensitive_requests: telemetry.sensitive_requests.load(Relaxed),
            recording_requests: telemetry.recording_requests.load(Relaxed),
        };
        Report::from_rows(lines, inputs, alerts, rows, context)
    }

    /// Builds the report from line counts, sources, alerts and the rows of the per-client
    /// scopes (whatever read them: a replay, or the evidence ledger).
    pub fn from_rows(
        lines: LineCounts,
        inputs: Vec<InputSummary>,
        alerts: &[Alert],
        rows: ScopeRows,
        context: ReportContext,
    ) -> Report {
        let period = context.period;
        let in_period =
            |a: &&Alert| period.since.is_none_or(|s| a.last_seen >= s) && period.until.is_none_or(|u| a.first_seen < u);
        let alerts: Vec<&Alert> = alerts.iter().filter(in_period).collect();
        let mut marks: HashMap<&str, Vec<(i64, String, &'static str)>> = HashMap::new();
        for a in alerts.iter().filter(|a| a.group_by != "source") {
            marks.entry(a.client.as_str()).or_default().push((a.first_seen, a.rule_id.clone(), a.severity.as_str()));
        }
        let ScopeRows { mut rows, tally } = rows;
        for (_, row) in &mut rows {
            if let Some(mut alert_marks) = marks.get(row.client.as_str()).cloned() {
                alert_marks.sort();
                row.alerts = alert_marks.iter().map(|(_, r, _)| r.clone()).collect();
                row.alerts.sort();
                row.alert_marks = alert_marks;
            }
        }
        let Tally {
            mut totals,
            mut shared_calls,
            outside_calls,
            outside_files,
            outside_partial,
            mut outside,
            first,
            last,
        } = tally;
        totals.first_seen = first.map(format_rfc3339);
        totals.last_seen = last.map(format_rfc3339);
        shared_calls.sort_by(|a, b| a.call.cmp(&b.call));
        outside.sort();
        let art33 = Art33 {
            period_examined: PeriodText {
                since: period.since.or(inputs.iter().filter_map(|i| i.first_line).min()).map(format_rfc3339),
                until: period.until.or(inputs.iter().filter_map(|i| i.last_line).max()).map(format_rfc3339),
            },
            data_subjects_approx: outside_calls,
            records: outside_files,
            partial_records: outside_partial,
            clients_outside_known_networks: outside,
            gaps_between_sources: gaps_between(&inputs),
            cannot_know: cannot_know(&context, &inputs),
        };
        // Unknown clients first, then partners, then internal; within each, most taken first.
        // By cached keys: a row is large, and sorting moves only indices.
        rows.sort_by_cached_key(|(o, r)| {
            let rank = (*o, std::cmp::Reverse(r.calls), std::cmp::Reverse(r.files), std::cmp::Reverse(r.requests));
            (rank, r.client.clone())
        });
        Report {
            origin: context.origin,
            period: period_text(&period),
            lines: lines.lines,
            parsed: lines.parsed,
            skipped: lines.skipped,
            truncated: lines.truncated,
            sensitive_requests: lines.sensitive_requests,
            recording_requests: lines.recording_requests,
            inputs,
            totals,
            clients: rows.into_iter().map(|(_, r)| r).collect(),
            shared_calls,
            alerts: alerts.into_iter().map(AlertRow::from).collect(),
            art33,
        }
    }

    /// Writes the report as `format` to `out`. (JSON takes the client rows out while it
    /// renders the rest, and puts them back.)
    pub fn write_to(&mut self, format: ReportFormat, out: &mut impl std::io::Write) -> std::io::Result<()> {
        match format {
            ReportFormat::Json => self.write_json(out),
            ReportFormat::Csv => out.write_all(text::csv(self).as_bytes()),
            ReportFormat::Markdown => out.write_all(text::markdown(self).as_bytes()),
            ReportFormat::Html => out.write_all(html::page(self).as_bytes()),
        }
    }

    /// Pretty JSON. The client rows (most of a large report) are rendered in parts on scoped
    /// threads and written between the rest's `"clients": [` and `]`: byte for byte what
    /// one pass would write.
    fn write_json(&mut self, out: &mut impl std::io::Write) -> std::io::Result<()> {
        let rows = std::mem::take(&mut self.clients);
        let head = escape::json_pretty(&*self).expect("report serialises");
        self.clients = rows;
        // The key sits one level deep, so a line break and two spaces precede it (a string
        // value cannot hold a raw line break).
        const EMPTY: &str = "\n  \"clients\": []";
        let at = head.find(EMPTY).expect("the report has its clients key") + EMPTY.len() - 1;
        let rows = &self.clients;
        let parts: Vec<Vec<u8>> = std::thread::scope(|scope| {
            let handles: Vec<_> = rows
                .chunks(rows.len().div_ceil(available_threads()).max(1))
                .enumerate()
                .map(|(i, part)| {
                    scope.spawn(move || {
                        // About 600 bytes a row and 110 a call it lists: grown once, not
                        // doubled and copied a dozen times.
                        let calls: usize = part.iter().map(|row| row.call_list.len()).sum();
                        let mut text = Vec::with_capacity(600 * part.len() + 110 * calls);
                        for (j, row) in part.iter().enumerate() {
                            text.extend_from_slice(if i == 0 && j == 0 { b"\n    " } else { b",\n    " });
                            escape::json_pretty_nested(row, 2, &mut text).expect("a client row serialises");
                        }
                        text
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))).collect()
        });
        out.write_all(&head.as_bytes()[..at])?;
        parts.iter().try_for_each(|part| out.write_all(part))?;
        if !rows.is_empty() {
            out.write_all(b"\n  ")?;
        }
        out.write_all(&head.as_bytes()[at..])?;
        out.write_all(b"\n")
    }

    /// Clients outside the internal networks.
    pub fn outside_clients(&self) -> impl Iterator<Item = &ClientRow> {
        self.clients.iter().filter(|c| c.kind != "internal")
    }
}

/// What a report takes from the per-client scopes alone: a row per client (its alerts not
/// yet marked) and the totals. A replay builds it while the store writes its last alerts.
pub struct ScopeRows {
    /// With each row, its rank group (unknown 0, partner 1, internal 2).
    rows: Vec<(u8, ClientRow)>,
    tally: Tally,
}

impl ScopeRows {
    /// Each scoped thread builds the rows of one part of the clients and tallies one shard of
    /// the calls and recordings of all of them (shards split by key, so counts add).
    pub fn build(clients: &[ClientScope], partner_names: &[String]) -> ScopeRows {
        let threads = available_threads();
        let part = clients.len().div_ceil(threads).max(1);
        std::thread::scope(|scope| {
            let handles: Vec<_> = (0..threads)
                .map(|shard| {
                    scope.spawn(move || {
                        let mine = clients.iter().skip(shard * part).take(part);
                        let rows: Vec<(u8, ClientRow)> = mine.map(|s| client_row(s, partner_names)).collect();
                        (rows, Tally::of(clients, shard, threads))
                    })
                })
                .collect();
            let mut all = ScopeRows { rows: Vec::with_capacity(clients.len()), tally: Tally::default() };
            for handle in handles {
                let (rows, tally) = handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
                all.rows.extend(rows);
                all.tally.add(tally);
            }
            all
        })
    }
}

/// What the report counts over all clients: one shard of it, or the sum of all shards.
#[derive(Default)]
struct Tally {
    totals: Totals,
    /// Calls taken by more than one client (not sorted).
    shared_calls: Vec<SharedCall>,
    /// Distinct calls, recordings and partial-only recordings of clients outside the known
    /// networks, and those clients (not sorted).
    outside_calls: u64,
    outside_files: u64,
    outside_partial: u64,
    outside: Vec<String>,
    first: Option<i64>,
    last: Option<i64>,
}

impl Tally {
    /// Shard `shard` of `shards`: the calls and recordings whose keys fall in it; the
    /// per-client sums go to shard 0.
    fn of(clients: &[ClientScope], shard: usize, shards: usize) -> Tally {
        let mine = |key: &u128| (*key as u64) % shards as u64 == shard as u64;
        let mut tally = Tally::default();
        // Sorted lists of keys, counted after one sort each: a replay's scope holds every file
        // each client took (tens of thousands), and hash sets of them took more time and
        // twice the memory. `_out`: those of clients outside the known networks.
        let (mut files, mut files_out, mut partial, mut partial_out) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        // (call, index of a client that took it), and the calls those outside took.
        let (mut calls, mut calls_out) = (Vec::new(), Vec::new());
        for (i, s) in clients.iter().enumerate() {
            let unknown = kind_of(s).kind == ClientKind::Unknown;
            if shard == 0 {
                let totals = &mut tally.totals;
                totals.clients += 1;
                totals.clients_taking += u64::from(!s.files.is_empty());
                totals.partial_transfers = totals.partial_transfers.saturating_add(s.partial_transfers);
                totals.bytes = totals.bytes.saturating_add(s.bytes);
                tally.first = Some(tally.first.map_or(s.first_seen, |f| f.min(s.first_seen)));
                tally.last = Some(tally.last.map_or(s.last_seen, |l| l.max(s.last_seen)));
                if unknown {
                    tally.outside.push(s.client.clone());
                }
            }
            let before = calls.len();
            calls.extend(s.calls_taken().map(|(call, _)| (*call, i)).filter(|(call, _)| mine(call)));
            let before_files = (files.len(), partial.len());
            files.extend(s.files.iter().filter(|k| mine(k)));
            partial.extend(s.partial.iter().filter(|k| mine(k)));
            if unknown {
                calls_out.extend(calls[before..].iter().map(|(call, _)| *call));
                files_out.extend_from_slice(&files[before_files.0..]);
                partial_out.extend_from_slice(&partial[before_files.1..]);
            }
        }
        for keys in [&mut files, &mut files_out, &mut partial, &mut partial_out, &mut calls_out] {
            keys.sort_unstable();
            keys.dedup();
        }
        calls.sort_unstable();
        tally.totals.files = files.len() as u64;
        tally.totals.partial_files = count_not_in(&partial, &files);
        tally.outside_files = files_out.len() as u64;
        tally.outside_partial = count_not_in(&partial_out, &files_out);
        tally.outside_calls = calls_out.len() as u64;
        for takers in calls.chunk_by(|a, b| a.0 == b.0) {
            tally.totals.calls += 1;
            if takers.len() < 2 {
                continue;
            }
            // Named when a client outside the internal networks took it.
            let key = takers[0].0;
            let name = takers.iter().find_map(|(_, i)| clients[*i].call(key)?.name.as_deref());
            if let Some(name) = name {
                let mut names: Vec<String> = takers.iter().map(|(_, i)| clients[*i].client.clone()).collect();
                names.sort_unstable();
                tally.shared_calls.push(SharedCall { call: name.to_string(), clients: names });
            }
        }
        tally
    }

    /// Adds another shard's counts (shards count disjoint keys).
    fn add(&mut self, other: Tally) {
        let (t, o) = (&mut self.totals, other.totals);
        t.clients += o.clients;
        t.clients_taking += o.clients_taking;
        t.calls += o.calls;
        t.files += o.files;
        t.partial_transfers = t.partial_transfers.saturating_add(o.partial_transfers);
        t.partial_files += o.partial_files;
        t.bytes = t.bytes.saturating_add(o.bytes);
        self.shared_calls.extend(other.shared_calls);
        self.outside_calls += other.outside_calls;
        self.outside_files += other.outside_files;
        self.outside_partial += other.outside_partial;
        self.outside.extend(other.outside);
        self.first = self.first.into_iter().chain(other.first).min();
        self.last = self.last.into_iter().chain(other.last).max();
    }
}

fn kind_of(s: &ClientScope) -> crate::classify::client::ClientClass {
    s.class.unwrap_or(crate::classify::client::ClientClass::UNKNOWN)
}

/// How many keys of sorted, distinct `keys` are not in sorted, distinct `other`.
fn count_not_in(keys: &[u128], other: &[u128]) -> u64 {
    let mut rest = other;
    let mut count = 0;
    for key in keys {
        let skip = rest.partition_point(|k| k < key);
        rest = &rest[skip..];
        count += u64::from(rest.first() != Some(key));
    }
    count
}

/// A client's row, with its rank group (unknown 0, partner 1, internal 2).
fn client_row(s: &ClientScope, partner_names: &[String]) -> (u8, ClientRow) {
    let class = kind_of(s);
    let order = match class.kind {
        ClientKind::Unknown => 0,
        ClientKind::Partner => 1,
        ClientKind::Internal => 2,
    };
    let partner = class.partner_name_in(partner_names).map(str::to_string);
    let mut call_list: Vec<CallRow> = s
        .calls
        .iter()
        .filter_map(|(_, c)| {
            let call = c.name.clone()?;
            Some(CallRow { call, files: c.files, partial_files: c.partial_files })
        })
        .collect();
    call_list.sort_unstable_by(|a, b| a.call.cmp(&b.call));
    let fetch_hours: Vec<(i64, u64)> = s.fetch_hours.sorted().into_iter().map(|(h, n)| (h * 3_600, n)).collect();
    let row = ClientRow {
        kind: class.kind.as_str(),
        partner,
        requests: s.requests,
        calls: s.calls_taken().count() as u64,
        files: s.files.len() as u64,
        successful: s.successful,
        partial_transfers: s.partial_transfers,
        partial_files: s.partial_only().count() as u64,
        bytes: s.bytes,
        first_seen: format_rfc3339(s.first_seen),
        last_seen: format_rfc3339(s.last_seen),
        user_agents: s.user_agents.clone(),
        alerts: Vec::new(),
        call_list,
        fetch_hours,
        alert_marks: Vec::new(),
        client: s.client.clone(),
    };
    (order, row)
}

/// Threads the process may run on (its CPU affinity: 1 under `taskset -c 0`).
fn available_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |t| t.get())
}
/// The line counts a report starts with.
#[derive(Clone, Debug, Default)]
pub struct LineCounts {
    pub lines: u64,
    pub parsed: u64,
    pub skipped: BTreeMap<&'static str, u64>,
    pub truncated: u64,
    pub sensitive_requests: u64,
    pub recording_requests: u64,
}

/// Silences between sources: sorted by their first line, a source that starts more than
/// [`GAP_SECS`] after the latest line of those before it.
fn gaps_between(inputs: &[InputSummary]) -> Vec<Gap> {
    let mut spans: Vec<(i64, i64)> = inputs.iter().filter_map(|i| Some((i.first_line?, i.last_line?))).collect();
    spans.sort_unstable();
    let mut gaps = Vec::new();
    let mut end: Option<i64> = None;
    for (first, last) in spans {
        if let Some(e) = end {
            if first - e > GAP_SECS {
                gaps.push(Gap { from: format_rfc3339(e), to: format_rfc3339(first), secs: first - e });
            }
        }
        end = Some(end.map_or(last, |e| e.max(last)));
    }
    gaps
}

/// What the logs cannot tell, for this report.
fn cannot_know(context: &ReportContext, inputs: &[InputSummary]) -> Vec<String> {
    let mut v = vec![
        "Requests in logs that were not given to recwatch (rotated away, deleted, lost before it started) or that the \
         server never wrote (a crash before its buffer was flushed, logging switched off)."
            .to_string(),
        "Who is behind a client address (NAT, VPN, a proxy not configured as trusted), and whether two addresses are \
         one actor."
            .to_string(),
        "What a partial transfer held, and whether a complete one reached the client intact or was kept.".to_string(),
        format!("Silences shorter than {} h within a source (only longer ones are listed as gaps).", GAP_SECS / 3_600),
        "The number of data subjects is approximate: one call may concern more than one person, one person more \
         than one call."
            .to_string(),
    ];
    if !context.call_ids_configured {
        v.push(
            "Which files belong to one call: no [sensitive] call_id is configured, so every file is counted as its \
             own call (calls are over-counted)."
                .to_string(),
        );
    }
    if context.origin == "replay" {
        v.push("When a daemon was down: a replay reads finished logs and has no checkpoints of its own.".to_string());
    } else {
        v.extend(
            [
                "Lines read and skipped per source, and a source's silences: the store keeps no line counts, so a \
                 source's first and last line here are its first and last request to a sensitive path.",
                "Internal clients: the evidence ledger keeps only clients outside the internal networks.",
                "Times inside an hour: --since and --until are applied to whole hours (the ledger's time index).",
                "When the daemon was down: the store keeps no record of its restarts.",
            ]
            .map(String::from),
        );
    }
    if inputs.iter().any(|i| i.error.is_some()) {
        v.push("The rest of inputs that stopped early (see their errors).".to_string());
    }
    v
}

impl From<&Alert> for AlertRow {
    fn from(a: &Alert) -> AlertRow {
        AlertRow {
            id: a.id.clone(),
            rule: a.rule.clone(),
            rule_id: a.rule_id.clone(),
            severity: a.severity.as_str(),
            client: a.client.clone(),
            client_kind: a.client_kind.clone(),
            partner: a.partner.clone(),
            source: a.source.clone(),
            first_seen: format_rfc3339(a.first_seen),
            last_seen: format_rfc3339(a.last_seen),
            requests: a.requests,
            distinct_resources: a.distinct_resources,
            bytes: a.bytes,
            sample: a.sample.clone(),
            user_agents: a.user_agents.clone(),
            status: a.status.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_likely_format_is_the_one_that_parses_most_lines() {
        let combined = br#"203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /r/a.wav HTTP/1.1" 200 5 "-" "curl/8""#;
        let vhost = br#"rec.example:443 203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /r/a.wav HTTP/1.1" 200 5 "-" "curl/8""#;
        let common = br#"203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] "GET /r/a.wav HTTP/1.1" 200 5"#;
        assert_eq!(likely_format(&[combined.to_vec(), combined.to_vec()]), Some(LogFormat::Combined));
        assert_eq!(likely_format(&[vhost.to_vec()]), Some(LogFormat::VhostCombined));
        assert_eq!(likely_format(&[common.to_vec()]), Some(LogFormat::Common));
        assert_eq!(likely_format(&[b"{\"json\": 1}".to_vec()]), None);
        let w = skipped_lines_warning(LogFormat::Combined, 10, 10, &[vhost.to_vec()]).unwrap();
        assert_eq!(
            w,
            "10 of 10 lines were skipped as not combined: they look like vhost_combined (try --format vhost_combined)"
        );
        assert_eq!(skipped_lines_warning(LogFormat::Combined, 10, 5, &[]), None, "half is not more than half");
        let none = skipped_lines_warning(LogFormat::Combined, 4, 3, &[]).unwrap();
        assert!(
            none.ends_with("no known format fits them (formats: combined, main, common, vhost_combined, vhost_common)"),
            "{none}"
        );
    }
    /// Clients of every kind that took overlapping calls (some shared), with names and user
    /// agents holding characters the JSON escapes.
    fn scopes(n: usize) -> Vec<ClientScope> {
        use crate::classify::client::ClientClass;
        use crate::detect::scope::CallTaken;
        (0..n)
            .map(|i| {
                let kind = [ClientKind::Unknown, ClientKind::Partner, ClientKind::Internal][i % 3];
                let calls = (0..i % 5 + 1)
                    .map(|c| {
                        let key = (i / 2 + c) as u128 * 0x9E37_79B9_7F4A_7C15;
                        let name = (kind != ClientKind::Internal).then(|| format!("call-{key}\u{7f}\"").into());
                        (key, CallTaken { files: (c % 2) as u64, partial_files: 1, name })
                    })
                    .collect();
                ClientScope {
                    client: format!("198.51.100.{i}"),
                    class: Some(ClientClass { kind, partner: 0 }),
                    requests: i as u64 + 1,
                    files: (0..i as u128).collect(),
                    partial: (i as u128 / 2..i as u128 + 3).collect(),
                    calls,
                    user_agents: vec![format!("agent {i} \u{1b}[2J")],
                    first_seen: 1_550_000_000 + i as i64,
                    last_seen: 1_550_000_100 + i as i64,
                    ..ClientScope::default()
                }
            })
            .collect()
    }

    fn report_of(clients: &[ClientScope]) -> Report {
        let context = ReportContext {
            origin: "replay",
            period: Period::default(),
            call_ids_configured: false,
            partner_names: vec!["acme".into()],
        };
        let rows = ScopeRows::build(clients, &context.partner_names);
        Report::from_rows(LineCounts::default(), Vec::new(), &[], rows, context)
    }

    #[test]
    fn json_with_rows_rendered_apart_is_one_pass_json_byte_for_byte() {
        for n in [0, 1, 2, 7, 40] {
            let mut report = report_of(&scopes(n));
            let one_pass = escape::json_pretty(&report).unwrap() + "\n";
            let mut spliced = Vec::new();
            report.write_to(ReportFormat::Json, &mut spliced).unwrap();
            assert_eq!(String::from_utf8(spliced).unwrap(), one_pass, "{n} clients");
            assert_eq!(report.clients.len(), n, "the rows are put back");
        }
    }

    #[test]
    fn shards_of_the_tally_add_up_to_the_whole() {
        let clients = scopes(40);
        let whole = Tally::of(&clients, 0, 1);
        for shards in [2, 3, 8] {
            let mut sum = Tally::default();
            (0..shards).for_each(|shard| sum.add(Tally::of(&clients, shard, shards)));
            assert_eq!(sum.totals, whole.totals, "{shards} shards");
            let sorted = |t: &Tally| {
                let mut calls = t.shared_calls.clone();
                calls.sort_by(|a, b| a.call.cmp(&b.call));
                calls
            };
            assert_eq!(sorted(&sum), sorted(&whole));
            assert!(!whole.shared_calls.is_empty(), "the clients share calls");
            let outside =
                |t: &Tally| (t.outside_calls, t.outside_files, t.outside_partial, t.outside.len(), t.first, t.last);
            assert_eq!(outside(&sum), outside(&whole));
        }
    }
}

//! Lock-free counters every stage adds to; the one place that knows what is counted. A counter
//! that goes with a log line is bumped only by its event method (`events`), never by hand.
//! Owns the counter set. Never blocks and never formats on the hot path: stages keep local
//! tallies and publish them here once per chunk or batch. Rendering to Prometheus text is
//! `http::metrics`' job; label values here come from closed enums or the config, never from
//! log content.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

mod events;

pub use events::{FileOp, RescanReason};

use crate::classify::path::PathClass;
use crate::parse::{SkipReason, Wrapper};

/// Status classes of responses to sensitive paths, as exported (`status_class` label).
pub const STATUS_CLASSES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "other"];

/// Index into [`STATUS_CLASSES`].
pub fn status_class(status: u16) -> usize {
    match status {
        200..=299 => 0,
        300..=399 => 1,
        400..=499 => 2,
        500..=599 => 3,
        _ => 4,
    }
}

/// Sensitive requests by path class (indexed like [`PathClass::ALL`]) and status class.
pub type OutcomeCounts<T> = [[T; STATUS_CLASSES.len()]; PathClass::ALL.len()];

/// A fixed-bucket histogram of seconds or of counts, lock-free (one atomic add per observation).
pub struct Histogram {
    /// Upper bounds, ascending; +Inf is implicit.
    pub bounds: &'static [f64],
    /// Non-cumulative counts per bucket; the last is +Inf.
    buckets: Vec<AtomicU64>,
    /// The sum of the observations, in units of `1 / scale` (microseconds for seconds).
    sum_units: AtomicU64,
    scale: f64,
}

impl Histogram {
    /// Of seconds.
    pub fn new(bounds: &'static [f64]) -> Histogram {
        Histogram::scaled(bounds, 1e6)
    }

    /// Of whole counts.
    pub fn of_counts(bounds: &'static [f64]) -> Histogram {
        Histogram::scaled(bounds, 1.0)
    }

    fn scaled(bounds: &'static [f64], scale: f64) -> Histogram {
        Histogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_units: AtomicU64::new(0),
            scale,
        }
    }

    pub fn observe(&self, value: f64) {
        let i = self.bounds.iter().position(|b| value <= *b).unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_units.fetch_add((value.max(0.0) * self.scale) as u64, Relaxed);
    }

    /// Cumulative counts per bound (the last is +Inf, i.e. the total), and the sum.
    pub fn snapshot(&self) -> (Vec<u64>, f64) {
        let mut acc = 0;
        let cumulative = self.buckets.iter().map(|b| {
            acc += b.load(Relaxed);
            acc
        });
        (cumulative.collect(), self.sum_units.load(Relaxed) as f64 / self.scale)
    }
}

pub const LATENCY_BOUNDS: &[f64] = &[0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];
/// Changes (alert records and ledger entries) in one store write.
pub const WRITE_CHANGES_BOUNDS: &[f64] = &[1.0, 16.0, 64.0, 256.0, 512.0, 1024.0, 4096.0, 16384.0, 65536.0];

pub struct Telemetry {
    // --- sources
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
    /// Files currently followed.
    pub files_open: AtomicI64,
    /// Configured paths/globs that currently match no file (the daemon waits for them).
    pub sources_waiting: AtomicI64,
    pub rotations: AtomicU64,
    pub truncations: AtomicU64,
    /// Incomplete last lines flushed at rotation or deletion, flagged and counted.
    pub partial_lines: AtomicU64,
    /// Bytes written to followed files and not read yet.
    pub source_lag_bytes: AtomicI64,
    /// Times the tailer fell back to a full stat scan (inotify overflow, rescan, watch limit).
    pub rescans: AtomicU64,
    pub read_errors: AtomicU64,
    // --- parse and classify
    pub lines_parsed: AtomicU64,
    /// Indexed like [`SkipReason::ALL`].
    pub lines_skipped: [AtomicU64; SkipReason::ALL.len()],
    /// Lines longer than the bound, judged by their head, by configured source name (see
    /// [`Telemetry::lines_truncated`]).
    pub lines_truncated: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    /// Lines that arrived behind a header (syslog) the parser removed; indexed like
    /// [`Wrapper::ALL`].
    pub lines_unwrapped: [AtomicU64; Wrapper::ALL.len()],
    /// Lines whose quoted request was no HTTP request (TLS handshakes on the plain port,
    /// scanners' binary probes): parsed for client, time and status, counted as probing.
    pub junk_requests: AtomicU64,
    /// Requests to any path under a sensitive prefix.
    pub sensitive_requests: AtomicU64,
    /// Requests classified as recordings (prefix and extension).
    pub recording_requests: AtomicU64,
    /// Responses to sensitive paths by path class and status class.
    pub sensitive_outcomes: OutcomeCounts<AtomicU64>,
    // --- detect
    pub alerts_opened: AtomicU64,
    /// New alerts by (rule name, severity); rules come from the config, so the set is bounded.
    pub alerts_by_rule: Mutex<BTreeMap<(String, &'static str), u64>>,
    pub groups_tracked: AtomicI64,
    pub groups_evicted: AtomicU64,
    /// Events whose time was too far ahead of the wall clock to move any clock, by source name
    /// (configured names, and names registered by Kafka envelopes: bounded by
    /// `pipeline::MAX_SOURCES`). Published per chunk of input, never per line.
    pub events_future: Mutex<BTreeMap<String, u64>>,
    // --- store
    pub alert_writes: AtomicU64,
    pub store_errors: AtomicU64,
    /// Alerts removed by the retention sweep.
    pub alerts_expired: AtomicU64,
    /// Newest event time (Unix seconds) of a sensitive line, published at every barrier:
    /// the retention sweep's clock never runs ahead of the logs.
    pub newest_event_unix: AtomicI64,
    /// Time of one durable write (alerts + checkpoints + flush).
    pub store_write_seconds: Histogram,
    /// Changes (alert records and ledger entries) in one store write: its sled transaction's
    /// memory grows with them.
    pub store_write_changes: Histogram,
    /// From a line being read to the alerts it caused (and its checkpoint) being durable.
    pub detection_latency_seconds: Histogram,
    /// Unix time of the last durable checkpoint (0 = none yet).
    pub last_checkpoint_unix: AtomicI64,
    /// Quarantined (corrupt) stores found at start.
    pub store_quarantines: AtomicU64,
    // --- reloads
    pub config_reloads: AtomicU64,
    pub config_reload_failures: AtomicU64,
    // --- notify
    /// Counters of each configured receiver, by name (names come from the config).
    pub receivers: Mutex<BTreeMap<String, Arc<ReceiverCounters>>>,
    // --- kafka
    /// One entry per configured Kafka source, registered by its consumer loop; kept across
    /// reloads (same name, same counters), so counters never go back.
    pub kafka: Mutex<Vec<Arc<KafkaTelemetry>>>,
}

/// What one notifier receiver did since the process started.
#[derive(Debug, Default)]
pub struct ReceiverCounters {
    /// Alert notifications the receiver accepted (an Alertmanager request of n alerts counts n).
    pub sent: AtomicU64,
    /// Alert notifications in failed attempts (and refused ones).
    pub failed: AtomicU64,
    /// Alert notifications attempted again after a failure.
    pub retries: AtomicU64,
}

/// Partitions per Kafka source whose lag is exported; more are left out of the lag family
/// (their messages still count): a partition label is bounded by this, whatever the topic.
pub const MAX_LAG_SERIES: usize = 512;

/// What one Kafka source's consumer counts. Labels: the source name (config) and, for the
/// lag, topic (subscribed) and partition (assigned, at most [`MAX_LAG_SERIES`]).
pub struct KafkaTelemetry {
    pub source: String,
    /// Messages handed to the pipeline (published per barrier).
    pub messages: AtomicU64,
    /// Payloads that are neither a log line nor an envelope with one (counted, skipped).
    pub bad_payloads: AtomicU64,
    /// Offset commits the broker refused or that failed in transit.
    pub commit_failures: AtomicU64,
    /// Offsets the client refused to store (the partition was no longer assigned).
    pub offset_store_errors: AtomicU64,
    pub rebalance_assigns: AtomicU64,
    pub rebalance_revokes: AtomicU64,
    /// Messages of revoked partitions whose alerts were not durable in time: their offsets
    /// were not stored, so the partition's next owner reads them again.
    pub dropped_in_flight: AtomicU64,
    /// Errors the consumer reported (broker down, transport); librdkafka retries them.
    pub consumer_errors: AtomicU64,
    pub assigned_partitions: AtomicI64,
    /// Consumer lag (messages) by (topic, partition), from the latest client statistics.
    pub lag: Mutex<BTreeMap<(String, i32), i64>>,
}

impl KafkaTelemetry {
    fn new(source: &str) -> KafkaTelemetry {
        KafkaTelemetry {
            source: source.to_string(),
            messages: AtomicU64::new(0),
            bad_payloads: AtomicU64::new(0),
            commit_failures: AtomicU64::new(0),
            offset_store_errors: AtomicU64::new(0),
            rebalance_assigns: AtomicU64::new(0),
            rebalance_revokes: AtomicU64::new(0),
            dropped_in_flight: AtomicU64::new(0),
            consumer_errors: AtomicU64::new(0),
            assigned_partitions: AtomicI64::new(0),
            lag: Mutex::new(BTreeMap::new()),
        }
    }

    /// Replaces the lag table with the latest statistics (bounded to [`MAX_LAG_SERIES`]).
    pub fn set_lag(&self, lag: impl IntoIterator<Item = ((String, i32), i64)>) {
        let table: BTreeMap<(String, i32), i64> = lag.into_iter().take(MAX_LAG_SERIES).collect();
        *self.lag.lock().unwrap_or_else(|e| e.into_inner()) = table;
    }
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry {
            lines_read: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            files_open: AtomicI64::new(0),
            sources_waiting: AtomicI64::new(0),
            rotations: AtomicU64::new(0),
            truncations: AtomicU64::new(0),
            partial_lines: AtomicU64::new(0),
            source_lag_bytes: AtomicI64::new(0),
            rescans: AtomicU64::new(0),
            read_errors: AtomicU64::new(0),
            lines_parsed: AtomicU64::new(0),
            lines_skipped: Default::default(),
            lines_unwrapped: Default::default(),
            junk_requests: AtomicU64::new(0),
            sensitive_requests: AtomicU64::new(0),
            recording_requests: AtomicU64::new(0),
            sensitive_outcomes: Default::default(),
            alerts_opened: AtomicU64::new(0),
            alerts_by_rule: Mutex::new(BTreeMap::new()),
            groups_tracked: AtomicI64::new(0),
            groups_evicted: AtomicU64::new(0),
            alert_writes: AtomicU64::new(0),
            store_errors: AtomicU64::new(0),
            alerts_expired: AtomicU64::new(0),
            newest_event_unix: AtomicI64::new(0),
            store_write_seconds: Histogram::new(LATENCY_BOUNDS),
            store_write_changes: Histogram::of_counts(WRITE_CHANGES_BOUNDS),
            detection_latency_seconds: Histogram::new(LATENCY_BOUNDS),
            last_checkpoint_unix: AtomicI64::new(0),
            store_quarantines: AtomicU64::new(0),
            config_reloads: AtomicU64::new(0),
            config_reload_failures: AtomicU64::new(0),
            receivers: Mutex::new(BTreeMap::new()),
            kafka: Mutex::new(Vec::new()),
            lines_truncated: Mutex::new(BTreeMap::new()),
            events_future: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A stage's local tally of line outcomes, published with one atomic add per field.
#[derive(Clone, Copy, Default, Debug)]
pub struct LineTally {
    pub lines: u64,
    pub bytes: u64,
    pub parsed: u64,
    pub skipped: [u64; SkipReason::ALL.len()],
    pub unwrapped: [u64; Wrapper::ALL.len()],
    pub junk_requests: u64,
    pub sensitive: u64,
    pub recordings: u64,
    pub outcomes: OutcomeCounts<u64>,
}

impl LineTally {
    pub fn skip(&mut self, reason: SkipReason) {
        self.skipped[reason as usize] += 1;
    }

    /// A request to a sensitive path and how it was answered.
    #[inline]
    pub fn sensitive(&mut self, class: PathClass, status: u16) {
        self.sensitive += 1;
        if class == PathClass::Recording {
            self.recordings += 1;
        }
        self.outcomes[class as usize][status_class(status)] += 1;
    }
}

impl Telemetry {
    pub fn publish(&self, t: &mut LineTally) {
        self.lines_read.fetch_add(t.lines, Relaxed);
        self.bytes_read.fetch_add(t.bytes, Relaxed);
        self.lines_parsed.fetch_add(t.parsed, Relaxed);
        for (counter, n) in self.lines_skipped.iter().zip(t.skipped) {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
        for (counter, n) in self.lines_unwrapped.iter().zip(t.unwrapped) {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
        if t.junk_requests > 0 {
            self.junk_requests.fetch_add(t.junk_requests, Relaxed);
        }
        self.sensitive_requests.fetch_add(t.sensitive, Relaxed);
        self.recording_requests.fetch_add(t.recordings, Relaxed);
        for (counters, counts) in self.sensitive_outcomes.iter().zip(t.outcomes) {
            for (counter, n) in counters.iter().zip(counts) {
                if n > 0 {
                    counter.fetch_add(n, Relaxed);
                }
            }
        }
        *t = LineTally::default();
    }

    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.lines_skipped[reason as usize].load(Relaxed)
    }

    pub fn unwrapped(&self, wrapper: Wrapper) -> u64 {
        self.lines_unwrapped[wrapper as usize].load(Relaxed)
    }

    /// Pre-registers every configured rule at 0 (alerts by rule, open alerts), so dashboards
    /// and alerting rules see each series from the start, not from its first alert. Rules
    /// removed by a reload keep their series (a counter must not vanish).
    /// Takes (rule name, severity) pairs.
    pub fn register_rules<'a>(&self, rules: impl IntoIterator<Item = (&'a str, &'static str)>) {
        let mut by_rule = self.alerts_by_rule.lock().unwrap_or_else(|e| e.into_inner());
        for (name, severity) in rules {
            by_rule.entry((name.to_string(), severity)).or_insert(0);
        }
    }

    /// The truncated-lines counter of the configured source `name`, registered (at 0) on
    /// first use: the pipeline registers its sources when it starts.
    pub fn lines_truncated(&self, name: &str) -> Arc<AtomicU64> {
        let mut all = self.lines_truncated.lock().unwrap_or_else(|e| e.into_inner());
        all.entry(name.to_string()).or_default().clone()
    }

    /// Pre-registers the future-event counter of each source at 0, so its series exists
    /// from the start.
    pub fn register_sources<'a>(&self, names: impl IntoIterator<Item = &'a str>) {
        let mut future = self.events_future.lock().unwrap_or_else(|e| e.into_inner());
        for name in names {
            future.entry(name.to_string()).or_insert(0);
        }
    }

    /// `n` events of `source` were dated more than the tolerance ahead of the wall clock: they
    /// were detected but moved no clock. Counts and logs in one call.
    pub fn events_future(&self, source: &str, n: u64) {
        *self.events_future.lock().unwrap_or_else(|e| e.into_inner()).entry(source.to_string()).or_insert(0) += n;
        tracing::warn!(source, events = n, "event time too far ahead of the wall clock: detected, but moves no clock");
    }

    /// The counters of the Kafka source `name`, registered on first use.
    pub fn kafka_source(&self, name: &str) -> Arc<KafkaTelemetry> {
        let mut all = self.kafka.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(k) = all.iter().find(|k| k.source == name) {
            return k.clone();
        }
        let k = Arc::new(KafkaTelemetry::new(name));
        all.push(k.clone());
        k
    }

    /// Counts a newly opened alert (called by the store stage, once per new alert id).
    pub fn alert_opened(&self, rule: &str, severity: &'static str) {
        let mut by_rule = self.alerts_by_rule.lock().unwrap_or_else(|e| e.into_inner());
        *by_rule.entry((rule.to_string(), severity)).or_insert(0) += 1;
    }

    /// Makes `names` the configured receivers: their counters exist (at 0 when new) from now
    /// on, a receiver kept across a reload keeps its counts, a removed one disappears.
    pub fn set_receivers(&self, names: &[&str]) {
        let mut receivers = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
        receivers.retain(|name, _| names.contains(&name.as_str()));
        for name in names {
            receivers.entry(name.to_string()).or_default();
        }
    }

    /// The counters of receiver `name` (registered if it was not).
    pub fn receiver(&self, name: &str) -> Arc<ReceiverCounters> {
        let mut receivers = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
        receivers.entry(name.to_string()).or_default().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_with_an_implicit_inf_bucket() {
        let h = Histogram::new(&[0.01, 0.1]);
        for s in [0.001, 0.05, 0.05, 3.0] {
            h.observe(s);
        }
        let (counts, sum) = h.snapshot();
        assert_eq!(counts, [1, 3, 4]);
        assert!((sum - 3.101).abs() < 1e-6);
    }
}

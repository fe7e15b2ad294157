//! Renders [`Telemetry`] and the open-alert gauge as Prometheus text exposition (0.0.4).
//! Owns metric names, types, help texts and label sets. Reads the atomics at scrape time and
//! builds fresh `MetricFamily`s, so nothing is registered globally and nothing is cached.
//! Never takes a label value from log content: labels are skip reasons (a closed enum), rule
//! names and severities, receiver names, source names (configured, or registered by Kafka
//! envelopes: bounded by `pipeline::MAX_SOURCES`), topics (subscribed)
//! and partitions (assigned, bounded by `telemetry::MAX_LAG_SERIES`), and the crate version.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use prometheus::proto::{Bucket, Counter, Gauge, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::TextEncoder;

use crate::classify::path::PathClass;
use crate::parse::{SkipReason, Wrapper};
use crate::store::{PendingStats, Store};
use crate::telemetry::{self, ReceiverCounters, Telemetry};

/// Content type of [`render_metrics`]' output.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Prometheus text exposition of everything in `telemetry`, plus `recwatch_alerts_open` and
/// the notifier's pending deliveries from the store. A store error drops those families (and
/// is logged); the rest is still served, so a broken store shows up as absent series rather
/// than as a failed scrape.
pub fn render_metrics(telemetry: &Telemetry, store: &Store) -> String {
    let open = match store.count_unresolved() {
        Ok(open) => Some(open),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count open alerts for /metrics");
            None
        }
    };
    let pending = match store.pending_deliveries() {
        Ok(pending) => Some(pending),
        Err(e) => {
            tracing::warn!(error = %e, "cannot count pending notifications for /metrics");
            None
        }
    };
    render(telemetry, open.as_ref(), pending.as_ref())
}

/// What the store says, read at scrape time: unresolved alerts by (rule, severity), and
/// pending deliveries by receiver. `None`: unknown, not exported.
pub type OpenAlerts = BTreeMap<(String, String), u64>;
pub type PendingDeliveries = BTreeMap<String, PendingStats>;

/// [`render_metrics`] with the store's numbers already read.
pub fn render(telemetry: &Telemetry, open_alerts: Option<&OpenAlerts>, pending: Option<&PendingDeliveries>) -> String {
    let families = families(telemetry, open_alerts, pending);
    TextEncoder::new().encode_to_string(&families).unwrap_or_else(|e| {
        // Unreachable by construction (every family has a name and at least one sample).
        tracing::error!(error = %e, "cannot encode metrics");
        String::new()
    })
}

/// Every metric family, sorted by name.
pub fn families(
    t: &Telemetry,
    open_alerts: Option<&OpenAlerts>,
    pending: Option<&PendingDeliveries>,
) -> Vec<MetricFamily> {
    let mut f = Families::default();
    let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
    let g = |a: &std::sync::atomic::AtomicI64| a.load(Relaxed) as f64;

    f.gauge_vec(
        "recwatch_build_info",
        "Build information; always 1, the labels carry the version.",
        &["version"],
        [(vec![env!("CARGO_PKG_VERSION").to_string()], 1.0)],
    );

    // --- sources
    f.counter("recwatch_lines_read_total", "Lines read from all sources.", n(&t.lines_read));
    f.counter("recwatch_bytes_read_total", "Bytes read from all sources (decompressed).", n(&t.bytes_read));
    f.gauge("recwatch_files_open", "Log files currently followed.", g(&t.files_open));
    f.gauge(
        "recwatch_sources_waiting",
        "Configured paths or globs that currently match no file (waited for).",
        g(&t.sources_waiting),
    );
    f.counter("recwatch_file_rotations_total", "Log file rotations followed.", n(&t.rotations));
    f.counter("recwatch_file_truncations_total", "Log file truncations detected.", n(&t.truncations));
    f.counter(
        "recwatch_partial_lines_total",
        "Incomplete last lines flushed at rotation or deletion.",
        n(&t.partial_lines),
    );
    f.gauge("recwatch_source_lag_bytes", "Bytes written to followed files and not read yet.", g(&t.source_lag_bytes));
    f.counter(
        "recwatch_tail_rescans_total",
        "Times the tailer fell back to a full stat scan (event overflow, rescan, watch limit).",
        n(&t.rescans),
    );
    f.counter("recwatch_read_errors_total", "Errors reading a source.", n(&t.read_errors));

    // --- parse and classify
    f.counter("recwatch_lines_parsed_total", "Lines parsed into access events.", n(&t.lines_parsed));
    f.counter_vec(
        "recwatch_lines_skipped_total",
        "Lines skipped as unparsable, by reason.",
        &["reason"],
        SkipReason::ALL.iter().map(|r| (vec![r.as_str().to_string()], t.skipped(*r) as f64)),
    );
    let truncated: Vec<(Vec<String>, f64)> = {
        let all = t.lines_truncated.lock().unwrap_or_else(|e| e.into_inner());
        all.iter().map(|(source, c)| (vec![source.clone()], n(c))).collect()
    };
    f.counter_vec(
        "recwatch_lines_truncated_total",
        "Lines longer than the line bound, judged by their head (the rest dropped), by source.",
        &["source"],
        truncated,
    );
    f.counter_vec(
        "recwatch_lines_unwrapped_total",
        "Lines that arrived behind a header the parser removed (syslog), by wrapper.",
        &["wrapper"],
        Wrapper::ALL.iter().map(|w| (vec![w.as_str().to_string()], t.unwrapped(*w) as f64)),
    );
    f.counter(
        "recwatch_junk_requests_total",
        "Lines whose request was no HTTP request (TLS handshakes, binary probes): a prober's traces.",
        n(&t.junk_requests),
    );
    f.counter(
        "recwatch_sensitive_requests_total",
        "Requests to any path under a sensitive prefix.",
        n(&t.sensitive_requests),
    );
    f.counter(
        "recwatch_recording_requests_total",
        "Requests classified as recordings (sensitive prefix and extension).",
        n(&t.recording_requests),
    );
    f.counter_vec(
        "recwatch_sensitive_responses_total",
        "Responses to sensitive paths, by path class (recording, listing, other) and status class.",
        &["path_class", "status_class"],
        PathClass::ALL.iter().flat_map(|class| {
            telemetry::STATUS_CLASSES.iter().enumerate().map(move |(i, status)| {
                (vec![class.as_str().to_string(), status.to_string()], n(&t.sensitive_outcomes[*class as usize][i]))
            })
        }),
    );

    // --- detect
    let future: Vec<(Vec<String>, f64)> = {
        let future = t.events_future.lock().unwrap_or_else(|e| e.into_inner());
        future.iter().map(|(source, n)| (vec![source.clone()], *n as f64)).collect()
    };
    f.counter_vec(
        "recwatch_events_future_total",
        "Events dated more than engine.future_tolerance_secs ahead of the wall clock: detected, but moving no clock, by source.",
        &["source"],
        future,
    );
    f.counter(
        "recwatch_alerts_fired_total",
        "Alerts opened by the detectors (per firing, before the store merges them by id).",
        n(&t.alerts_opened),
    );
    // Configured rules are pre-registered at 0 (Telemetry::register_rules).
    let by_rule: BTreeMap<(String, String), u64> = {
        let by_rule = t.alerts_by_rule.lock().unwrap_or_else(|e| e.into_inner());
        by_rule.iter().map(|((rule, severity), v)| ((rule.clone(), severity.to_string()), *v)).collect()
    };
    let series = |m: &BTreeMap<(String, String), u64>| {
        m.iter().map(|((rule, severity), v)| (vec![rule.clone(), severity.clone()], *v as f64)).collect::<Vec<_>>()
    };
    f.counter_vec(
        "recwatch_alerts_total",
        "New alerts stored, by rule and severity.",
        &["rule", "severity"],
        series(&by_rule),
    );
    if let Some(open) = open_alerts {
        let mut open = open.clone();
        for rule in by_rule.keys() {
            open.entry(rule.clone()).or_insert(0);
        }
        f.gauge_vec(
            "recwatch_alerts_open",
            "Alerts in the store not resolved (open or acknowledged), by rule and severity.",
            &["rule", "severity"],
            series(&open),
        );
    }
    f.gauge("recwatch_clients_tracked", "Groups (clients) with window state in the detectors.", g(&t.groups_tracked));
    f.counter(
        "recwatch_clients_evicted_total",
        "Groups (clients) whose window state was evicted (idle or over the cap).",
        n(&t.groups_evicted),
    );

    // --- store
    f.counter("recwatch_alert_writes_total", "Alert records written to the store.", n(&t.alert_writes));
    f.counter("recwatch_store_errors_total", "Failed store writes.", n(&t.store_errors));
    f.counter(
        "recwatch_alerts_expired_total",
        "Alerts removed by the retention sweep (store.retention_days).",
        n(&t.alerts_expired),
    );
    f.histogram(
        "recwatch_store_write_duration_seconds",
        "Time of one durable store write (alerts, checkpoints and flush).",
        &t.store_write_seconds,
    );
    f.histogram(
        "recwatch_store_write_changes",
        "Changes (alert records and ledger entries) in one store write.",
        &t.store_write_changes,
    );
    f.histogram(
        "recwatch_detection_latency_seconds",
        "Time from a line being read to the alerts it caused (and its checkpoint) being durable.",
        &t.detection_latency_seconds,
    );
    f.gauge(
        "recwatch_last_checkpoint_timestamp_seconds",
        "Unix time of the last durable checkpoint (0: none yet).",
        g(&t.last_checkpoint_unix),
    );
    f.counter(
        "recwatch_store_quarantines_total",
        "Corrupt stores found at start and moved aside.",
        n(&t.store_quarantines),
    );

    // --- reloads
    f.counter_vec(
        "recwatch_config_reloads_total",
        "Configuration reloads, by result.",
        &["result"],
        [
            (vec!["success".to_string()], n(&t.config_reloads)),
            (vec!["failure".to_string()], n(&t.config_reload_failures)),
        ],
    );

    // --- notify: one series per configured receiver, at 0 until something happens
    let receivers: Vec<(String, Arc<ReceiverCounters>)> = {
        let receivers = t.receivers.lock().unwrap_or_else(|e| e.into_inner());
        receivers.iter().map(|(name, c)| (name.clone(), c.clone())).collect()
    };
    let per_receiver = |value: &dyn Fn(&str, &ReceiverCounters) -> f64| {
        receivers.iter().map(|(name, c)| (vec![name.clone()], value(name, c))).collect::<Vec<_>>()
    };
    f.counter_vec(
        "recwatch_notify_sent_total",
        "Alert notifications accepted by the receiver (an Alertmanager request of n alerts counts n).",
        &["receiver"],
        per_receiver(&|_, c| n(&c.sent)),
    );
    f.counter_vec(
        "recwatch_notify_failed_total",
        "Alert notifications in failed delivery attempts (errors, timeouts, non-2xx answers).",
        &["receiver"],
        per_receiver(&|_, c| n(&c.failed)),
    );
    f.counter_vec(
        "recwatch_notify_retries_total",
        "Alert notifications attempted again after a failed attempt.",
        &["receiver"],
        per_receiver(&|_, c| n(&c.retries)),
    );
    if let Some(pending) = pending {
        let stats = |name: &str| pending.get(name).copied().unwrap_or_default();
        let now_ms =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        f.gauge_vec(
            "recwatch_notify_pending",
            "Alerts with a change the receiver has not been told yet (in the durable outbox).",
            &["receiver"],
            per_receiver(&|name, _| stats(name).pending as f64),
        );
        f.gauge_vec(
            "recwatch_notify_oldest_pending_age_seconds",
            "Age of the oldest change the receiver has not been told yet (0 when none).",
            &["receiver"],
            per_receiver(&|name, _| stats(name).oldest_ms.map_or(0.0, |t| (now_ms - t).max(0) as f64 / 1000.0)),
        );
    }
    // --- kafka (absent without Kafka sources)
    let kafka: Vec<_> = t.kafka.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let per_source = |get: &dyn Fn(&telemetry::KafkaTelemetry) -> f64| {
        kafka.iter().map(|k| (vec![k.source.clone()], get(k))).collect::<Vec<_>>()
    };
    type KafkaCounter = fn(&telemetry::KafkaTelemetry) -> &std::sync::atomic::AtomicU64;
    let kafka_counters: [(&str, &str, KafkaCounter); 6] = [
        ("recwatch_kafka_messages_total", "Kafka messages consumed and handed to the pipeline, by source.", |k| {
            &k.messages
        }),
        (
            "recwatch_kafka_bad_payloads_total",
            "Kafka messages skipped: no payload, or not an envelope where one was required.",
            |k| &k.bad_payloads,
        ),
        ("recwatch_kafka_commit_failures_total", "Offset commits that failed (retried with the next commit).", |k| {
            &k.commit_failures
        }),
        (
            "recwatch_kafka_offset_store_errors_total",
            "Offsets not stored because their partition was no longer assigned.",
            |k| &k.offset_store_errors,
        ),
        (
            "recwatch_kafka_dropped_in_flight_total",
            "Messages of revoked partitions not durable in time: read again by the next owner.",
            |k| &k.dropped_in_flight,
        ),
        (
            "recwatch_kafka_consumer_errors_total",
            "Errors reported by the Kafka client (broker down, transport); retried.",
            |k| &k.consumer_errors,
        ),
    ];
    for (name, help, counter) in kafka_counters {
        f.counter_vec(name, help, &["source"], per_source(&|k| n(counter(k))));
    }
    f.counter_vec(
        "recwatch_kafka_rebalances_total",
        "Consumer-group rebalances, by source and kind (assign, revoke).",
        &["source", "kind"],
        kafka.iter().flat_map(|k| {
            [
                (vec![k.source.clone(), "assign".to_string()], n(&k.rebalance_assigns)),
                (vec![k.source.clone(), "revoke".to_string()], n(&k.rebalance_revokes)),
            ]
        }),
    );
    f.gauge_vec(
        "recwatch_kafka_assigned_partitions",
        "Partitions currently assigned to this instance, by source.",
        &["source"],
        per_source(&|k| g(&k.assigned_partitions)),
    );
    let lag: Vec<_> = kafka
        .iter()
        .flat_map(|k| {
            let table = k.lag.lock().unwrap_or_else(|e| e.into_inner());
            table
                .iter()
                .map(|((topic, partition), lag)| {
                    (vec![k.source.clone(), topic.clone(), partition.to_string()], *lag as f64)
                })
                .collect::<Vec<_>>()
        })
        .collect();
    f.gauge_vec(
        "recwatch_kafka_consumer_lag",
        "Messages between the partition's end and this consumer's position (librdkafka statistics).",
        &["source", "topic", "partition"],
        lag,
    );

    let mut out = f.0;
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

#[derive(Default)]
struct Families(Vec<MetricFamily>);

impl Families {
    fn push(&mut self, name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) {
        // An empty family is not valid exposition; a labelled family with no series yet
        // (no alert so far) is simply absent.
        if metrics.is_empty() {
            return;
        }
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        family.set_metric(metrics);
        self.0.push(family);
    }

    fn counter(&mut self, name: &str, help: &str, value: f64) {
        self.counter_vec(name, help, &[], [(Vec::new(), value)]);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        self.gauge_vec(name, help, &[], [(Vec::new(), value)]);
    }

    fn counter_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<String>, f64)>,
    ) {
        let metrics = series
            .into_iter()
            .map(|(values, v)| {
                let mut m = Metric::from_label(label_pairs(labels, values));
                let mut c = Counter::default();
                c.set_value(v);
                m.set_counter(c);
                m
            })
            .collect();
        self.push(name, help, MetricType::COUNTER, metrics);
    }

    fn gauge_vec(
        &mut self,
        name: &str,
        help: &str,
        labels: &[&str],
        series: impl IntoIterator<Item = (Vec<String>, f64)>,
    ) {
        let metrics = series
            .into_iter()
            .map(|(values, v)| {
                let mut gauge = Gauge::default();
                gauge.set_value(v);
                let mut m = Metric::from_gauge(gauge);
                m.set_label(label_pairs(labels, values));
                m
            })
            .collect();
        self.push(name, help, MetricType::GAUGE, metrics);
    }

    fn histogram(&mut self, name: &str, help: &str, h: &telemetry::Histogram) {
        let (cumulative, sum) = h.snapshot();
        let total = cumulative.last().copied().unwrap_or(0);
        let buckets = h
            .bounds
            .iter()
            .zip(&cumulative)
            .map(|(bound, count)| {
                let mut b = Bucket::default();
                b.set_upper_bound(*bound);
                b.set_cumulative_count(*count);
                b
            })
            .collect();
        let mut hist = Histogram::default();
        hist.set_bucket(buckets);
        hist.set_sample_count(total);
        hist.set_sample_sum(sum);
        let mut m = Metric::default();
        m.set_histogram(hist);
        self.push(name, help, MetricType::HISTOGRAM, vec![m]);
    }
}

fn label_pairs(names: &[&str], values: Vec<String>) -> Vec<LabelPair> {
    debug_assert_eq!(names.len(), values.len());
    names
        .iter()
        .zip(values)
        .map(|(name, value)| {
            let mut p = LabelPair::default();
            p.set_name(name.to_string());
            p.set_value(value);
            p
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn every_skip_reason_and_both_reload_results_are_exported_even_at_zero() {
        let text = render(&Telemetry::default(), None, None);
        for r in SkipReason::ALL {
            assert!(text.contains(&format!("recwatch_lines_skipped_total{{reason=\"{}\"}} 0\n", r.as_str())), "{text}");
        }
        assert!(text.contains("recwatch_lines_unwrapped_total{wrapper=\"syslog\"} 0\n"), "{text}");
        assert!(text.contains("recwatch_junk_requests_total 0\n"), "{text}");
        assert!(text.contains("recwatch_config_reloads_total{result=\"failure\"} 0\n"), "{text}");
        assert!(text.contains("recwatch_build_info{version=\""), "{text}");
        // No alert yet: the labelled alert families are absent, not empty (which is invalid).
        assert!(!text.contains("recwatch_alerts_total"), "{text}");
        assert!(!text.contains("recwatch_alerts_open"), "{text}");
        // No receiver configured: no notifier series.
        assert!(!text.contains("recwatch_notify"), "{text}");
    }

    #[test]
    fn every_configured_receiver_has_every_notifier_series_from_the_start() {
        let t = Telemetry::default();
        t.set_receivers(&["oncall", "hook"]);
        t.receiver("hook").sent.fetch_add(2, Relaxed);
        let mut pending = BTreeMap::new();
        let long_ago =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64 - 90_000;
        pending.insert("hook".to_string(), PendingStats { pending: 3, oldest_ms: Some(long_ago) });
        let text = render(&t, None, Some(&pending));
        for name in ["oncall", "hook"] {
            for family in ["sent_total", "failed_total", "retries_total", "pending", "oldest_pending_age_seconds"] {
                assert!(text.contains(&format!("recwatch_notify_{family}{{receiver=\"{name}\"}} ")), "{text}");
            }
        }
        assert!(text.contains("recwatch_notify_sent_total{receiver=\"hook\"} 2\n"), "{text}");
        assert!(text.contains("recwatch_notify_pending{receiver=\"hook\"} 3\n"), "{text}");
        assert!(text.contains("recwatch_notify_oldest_pending_age_seconds{receiver=\"oncall\"} 0\n"), "{text}");
        let age = text
            .lines()
            .find_map(|l| l.strip_prefix("recwatch_notify_oldest_pending_age_seconds{receiver=\"hook\"} "))
            .unwrap();
        assert!((90.0..120.0).contains(&age.parse::<f64>().unwrap()), "{age}");
        // a receiver removed by a reload disappears; one kept keeps its count
        t.set_receivers(&["hook"]);
        let text = render(&t, None, Some(&pending));
        assert!(!text.contains("oncall"), "{text}");
        assert!(text.contains("recwatch_notify_sent_total{receiver=\"hook\"} 2\n"), "{text}");
    }

    #[test]
    fn configured_rules_and_sensitive_outcomes_are_exported_at_zero() {
        let t = Telemetry::default();
        use crate::detect::rule::{Rule, Severity};
        let rules = [
            Rule { severity: Severity::Critical, ..Rule::for_test("R1", "unknown-client-fetch") },
            Rule::for_test("R5", "probing"),
        ];
        t.register_rules(rules.iter().map(|r| (r.name.as_str(), r.severity.as_str())));
        let text = render(&t, Some(&BTreeMap::new()), None);
        for r in &rules {
            let labels = format!("{{rule=\"{}\",severity=\"{}\"}} 0\n", r.name, r.severity.as_str());
            assert!(text.contains(&format!("recwatch_alerts_total{labels}")), "{text}");
            assert!(text.contains(&format!("recwatch_alerts_open{labels}")), "{text}");
        }
        assert!(text.contains("recwatch_sensitive_responses_total{path_class=\"listing\",status_class=\"5xx\"} 0\n"));
        let mut tally = crate::telemetry::LineTally::default();
        tally.sensitive(PathClass::Recording, 206);
        tally.sensitive(PathClass::OtherUnderPrefix, 404);
        t.publish(&mut tally);
        let text = render(&t, None, None);
        assert!(text.contains("recwatch_sensitive_responses_total{path_class=\"recording\",status_class=\"2xx\"} 1\n"));
        assert!(text.contains("recwatch_sensitive_responses_total{path_class=\"other\",status_class=\"4xx\"} 1\n"));
        assert!(text.contains("recwatch_recording_requests_total 1\n"), "{text}");
    }

    #[test]
    fn kafka_families_appear_per_source_with_bounded_lag_labels() {
        let t = Telemetry::default();
        assert!(!render(&t, None, None).contains("recwatch_kafka"));
        let k = t.kafka_source("fleet");
        k.messages.fetch_add(7, Relaxed);
        k.rebalance_assigns.fetch_add(1, Relaxed);
        k.set_lag((0..2000).map(|p| (("logs".to_string(), p), 3)));
        let text = render(&t, None, None);
        assert!(text.contains("recwatch_kafka_messages_total{source=\"fleet\"} 7\n"), "{text}");
        assert!(text.contains("recwatch_kafka_rebalances_total{source=\"fleet\",kind=\"assign\"} 1\n"), "{text}");
        assert!(text.contains("recwatch_kafka_consumer_lag{source=\"fleet\",topic=\"logs\",partition=\"0\"} 3\n"));
        let series = text.lines().filter(|l| l.starts_with("recwatch_kafka_consumer_lag{")).count();
        assert_eq!(series, telemetry::MAX_LAG_SERIES);
        assert!(Arc::ptr_eq(&k, &t.kafka_source("fleet")), "one set of counters per source name");
    }

    #[test]
    fn histograms_are_cumulative_with_inf_count_and_sum() {
        let t = Telemetry::default();
        for s in [0.0005, 0.003, 20.0] {
            t.store_write_seconds.observe(s);
        }
        let text = render(&t, None, None);
        assert!(text.contains("recwatch_store_write_duration_seconds_bucket{le=\"0.001\"} 1\n"), "{text}");
        assert!(text.contains("recwatch_store_write_duration_seconds_bucket{le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("recwatch_store_write_duration_seconds_bucket{le=\"10\"} 2\n"), "{text}");
        assert!(text.contains("recwatch_store_write_duration_seconds_bucket{le=\"+Inf\"} 3\n"), "{text}");
        assert!(text.contains("recwatch_store_write_duration_seconds_count 3\n"), "{text}");
        assert!(text.contains("recwatch_store_write_duration_seconds_sum 20.0035"), "{text}");
    }

    #[test]
    fn rule_labels_are_escaped_and_families_sorted() {
        let t = Telemetry::default();
        t.alert_opened("we\"ird\\rule", "critical");
        let mut open = BTreeMap::new();
        open.insert(("unknown-client-fetch".to_string(), "critical".to_string()), 3);
        let text = render(&t, Some(&open), None);
        assert!(text.contains(r#"recwatch_alerts_total{rule="we\"ird\\rule",severity="critical"} 1"#), "{text}");
        assert!(text.contains("recwatch_alerts_open{rule=\"unknown-client-fetch\",severity=\"critical\"} 3\n"));
        let names: Vec<_> = families(&t, Some(&open), None).iter().map(|f| f.name().to_string()).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
    }

    fn series(text: &str) -> usize {
        text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).count()
    }

    #[test]
    fn a_file_event_is_exported_once_and_its_path_never_becomes_a_label() {
        let t = Telemetry::default();
        let before = render(&t, None, None);
        let error = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        let mut n = 0;
        for i in 0..1000u32 {
            let path = std::path::PathBuf::from(format!("/var/log/nginx/client-{i}.log"));
            let op = crate::telemetry::FileOp::ALL[i as usize % crate::telemetry::FileOp::ALL.len()];
            t.file_read_failed((i % 7) as u16, &path, op, &error);
            t.file_rotated((i % 7) as u16, &path);
            n += 1;
        }
        assert_eq!(t.read_errors.load(Relaxed), n);
        assert_eq!(t.rotations.load(Relaxed), n);
        let after = render(&t, None, None);
        assert_eq!(series(&before), series(&after), "a thousand paths added no series");
        assert!(!after.contains("client-"), "no path in any label");
        assert!(after.contains("\nrecwatch_read_errors_total 1000\n"), "{after}");
        assert!(after.contains("\nrecwatch_file_rotations_total 1000\n"), "{after}");
    }
}

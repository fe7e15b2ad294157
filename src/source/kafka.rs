//! Consumes access-log lines from Kafka topics as a member of a consumer group (librdkafka
//! through `rdkafka`). Owns its settings ([`KafkaSettings`], checked by librdkafka itself), the
//! consumer and its options, the unwrapping of JSON envelopes
//! (Vector, Filebeat), the offsets in flight per partition, storing offsets, applying
//! rebalances, and reading the client's statistics into [`KafkaTelemetry`]. Never parses a
//! log line: each line goes to a [`KafkaSink`] with the name of the host/file it came from.
//!
//! At-least-once, per partition in order: the caller seals the messages handed out so far
//! under a pipeline barrier ([`KafkaSource::seal`]); once that barrier is durable
//! ([`KafkaSource::store_durable`]) their offsets are *stored*, and librdkafka's auto-commit
//! commits stored offsets (`enable.auto.offset.store = false`, `enable.auto.commit = true`).
//! An offset is therefore never committed before the alerts its message caused are durable.
//!
//! Rebalances are not applied inside `poll`: they are queued ([`KafkaSource::take_rebalance`])
//! so the caller can first make the revoked partitions' work durable and commit it; what is
//! not durable in time is forgotten ([`KafkaSource::revoke`]) and read again by the next owner.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, RebalanceProtocol};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::TopicPartitionList;
use rdkafka::types::RDKafkaRespErr;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::parse::MAX_LINE_LEN;
use crate::source::framing::{frame_lines, Frame};
use crate::telemetry::KafkaTelemetry;

/// How message payloads are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PayloadFormat {
    /// A JSON object with a string `message` is an envelope; anything else is a raw line.
    Auto,
    /// The payload is the log line (or several, separated by `\n`).
    Line,
    /// The payload is a JSON envelope (Vector, Filebeat); other payloads are counted and skipped.
    Envelope,
}

impl PayloadFormat {
    pub const ALL: [PayloadFormat; 3] = [PayloadFormat::Auto, PayloadFormat::Line, PayloadFormat::Envelope];

    pub fn as_str(self) -> &'static str {
        match self {
            PayloadFormat::Auto => "auto",
            PayloadFormat::Line => "line",
            PayloadFormat::Envelope => "envelope",
        }
    }

    pub fn from_name(s: &str) -> Option<PayloadFormat> {
        PayloadFormat::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

/// A Kafka consumer-group membership: what `[source.kafka]` configures.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSettings {
    /// `host:port` of the bootstrap brokers.
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    pub group_id: String,
    pub payload: PayloadFormat,
    /// librdkafka properties passed through verbatim, each checked by [`check_client_option`].
    pub options: Vec<(String, String)>,
}

/// librdkafka properties recwatch sets itself; `[source.kafka.options]` may not override them
/// (the at-least-once promise depends on the last two).
pub const RESERVED_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use source.kafka.brokers"),
    ("metadata.broker.list", "use source.kafka.brokers"),
    ("group.id", "use source.kafka.group_id"),
    ("enable.auto.commit", "offsets are committed automatically once durable; not configurable"),
    ("enable.auto.offset.store", "offsets are stored only after their alerts are durable; not configurable"),
];

/// Whether one client property may be passed through: not one recwatch sets itself
/// ([`RESERVED_OPTIONS`]), and accepted by librdkafka's own check (unknown name, bad value),
/// done without creating a client. Returns why not.
pub fn check_client_option(name: &str, value: &str) -> Result<(), String> {
    if let Some((_, why)) = RESERVED_OPTIONS.iter().find(|(k, _)| *k == name) {
        return Err(format!("set by recwatch: {why}"));
    }
    match ClientConfig::new().set(name, value).create_native_config() {
        Ok(_) => Ok(()),
        Err(KafkaError::ClientConfig(_, description, _, _)) => Err(description),
        Err(e) => Err(e.to_string()),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KafkaSourceError {
    #[error("cannot create the Kafka consumer: {0}")]
    Create(KafkaError),
    #[error("cannot subscribe to topics {topics:?}: {error}")]
    Subscribe { topics: Vec<String>, error: KafkaError },
}

// ---------------------------------------------------------------------------------------------
// Envelopes

/// Why a payload was skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadPayload {
    /// No payload (a tombstone) or an empty one.
    Empty,
    /// `payload = "envelope"` and the payload is not a JSON object.
    NotJson,
    /// A JSON object without a string `message`.
    NoMessage,
}

/// The line(s) of one payload and the name of their origin.
#[derive(Debug, PartialEq, Eq)]
pub struct Unwrapped<'a> {
    pub lines: &'a [u8],
    /// `host:file` (or either alone) from an envelope; empty when the payload names none.
    pub origin: &'a str,
}

/// Longest origin name kept (longer host/file values are cut at a character boundary).
const MAX_ORIGIN_LEN: usize = 200;

/// Unwraps payloads into reused buffers: no allocation per message once warm.
#[derive(Default)]
pub struct Unwrapper {
    message: Vec<u8>,
    origin: String,
    scratch: Vec<u8>,
}

/// The fields of a Vector or Filebeat JSON event that matter; everything else is ignored.
/// Vector: `{"message": "…", "host": "web1", "file": "/var/log/nginx/access.log", …}`.
/// Filebeat: `{"message": "…", "host": {"name": "web1"}, "log": {"file": {"path": "…"}}, …}`.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    message: Option<&'a RawValue>,
    #[serde(borrow)]
    host: Option<&'a RawValue>,
    #[serde(borrow)]
    file: Option<&'a RawValue>,
    #[serde(borrow)]
    log: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct HostObject<'a> {
    #[serde(borrow)]
    name: Option<&'a RawValue>,
    #[serde(borrow)]
    hostname: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LogObject<'a> {
    #[serde(borrow)]
    file: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct LogFileObject<'a> {
    #[serde(borrow)]
    path: Option<&'a RawValue>,
}

impl Unwrapper {
    pub fn unwrap<'a>(&'a mut self, payload: &'a [u8], format: PayloadFormat) -> Result<Unwrapped<'a>, BadPayload> {
        if payload.is_empty() {
            return Err(BadPayload::Empty);
        }
        let looks_json = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
        match format {
            PayloadFormat::Line => Ok(Unwrapped { lines: payload, origin: "" }),
            PayloadFormat::Auto if !looks_json => Ok(Unwrapped { lines: payload, origin: "" }),
            PayloadFormat::Auto => match self.envelope(payload) {
                Ok(()) => Ok(Unwrapped { lines: &self.message, origin: &self.origin }),
                // A JSON log line (nginx escape=json) is a line, not an envelope.
                Err(_) => Ok(Unwrapped { lines: payload, origin: "" }),
            },
            PayloadFormat::Envelope => {
                self.envelope(payload)?;
                Ok(Unwrapped { lines: &self.message, origin: &self.origin })
            }
        }
    }

    fn envelope(&mut self, payload: &[u8]) -> Result<(), BadPayload> {
        let env: Envelope<'_> = serde_json::from_slice(payload).map_err(|_| BadPayload::NotJson)?;
        let message = env.message.ok_or(BadPayload::NoMessage)?;
        self.message.clear();
        if !unescape_json_string(message.get(), &mut self.message) {
            return Err(BadPayload::NoMessage);
        }
        let host = env.host.and_then(|h| {
            if h.get().starts_with('{') {
                let o: HostObject<'_> = serde_json::from_str(h.get()).ok()?;
                o.name.or(o.hostname)
            } else {
                Some(h)
            }
        });
        let file = env.file.or_else(|| {
            let log: LogObject<'_> = serde_json::from_str(env.log?.get()).ok()?;
            let file: LogFileObject<'_> = serde_json::from_str(log.file?.get()).ok()?;
            file.path
        });
        self.origin.clear();
        for (i, part) in [host, file].into_iter().enumerate() {
            let Some(raw) = part else { continue };
            self.scratch.clear();
            if !unescape_json_string(raw.get(), &mut self.scratch) || self.scratch.is_empty() {
                continue;
            }
            if i == 1 && !self.origin.is_empty() {
                self.origin.push(':');
            }
            // Names end up in alerts and logs: no control characters, bounded length.
            for c in String::from_utf8_lossy(&self.scratch).chars() {
                if self.origin.len() + c.len_utf8() > MAX_ORIGIN_LEN {
                    break;
                }
                self.origin.push(if c.is_control() { '?' } else { c });
            }
        }
        Ok(())
    }
}

/// Appends the decoded text of a JSON string literal (with its quotes) to `out`; false when
/// `raw` is not a string.
fn unescape_json_string(raw: &str, out: &mut Vec<u8>) -> bool {
    let Some(body) = raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) else { return false };
    let bytes = body.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let Some(esc) = memchr::memchr(b'\\', &bytes[i..]) else {
            out.extend_from_slice(&bytes[i..]);
            break;
        };
        out.extend_from_slice(&bytes[i..i + esc]);
        i += esc + 1;
        let Some(&kind) = bytes.get(i) else { return false };
        i += 1;
        let simple = match kind {
            b'"' => b'"',
            b'\\' => b'\\',
            b'/' => b'/',
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let Some(unit) = hex4(bytes, i) else { return false };
                i += 4;
                let c = if (0xD800..0xDC00).contains(&unit) {
                    let low = (bytes.get(i..i + 2) == Some(b"\\u")).then(|| hex4(bytes, i + 2)).flatten();
                    match low {
                        Some(low) if (0xDC00..0xE000).contains(&low) => {
                            i += 6;
                            char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                        }
                        _ => None,
                    }
                } else {
                    char::from_u32(unit)
                };
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.unwrap_or('\u{FFFD}').encode_utf8(&mut buf).as_bytes());
                continue;
            }
            _ => return false,
        };
        out.push(simple);
    }
    true
}

fn hex4(bytes: &[u8], at: usize) -> Option<u32> {
    let digits = std::str::from_utf8(bytes.get(at..at + 4)?).ok()?;
    u32::from_str_radix(digits, 16).ok()
}

// ---------------------------------------------------------------------------------------------
// Offsets in flight

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    topic: u16,
    partition: i32,
    /// Highest offset handed to the pipeline.
    last: i64,
    messages: u64,
}

/// Offsets handed to the pipeline and not stored yet, grouped by the barrier that covers
/// them. Per partition, messages arrive in offset order.
#[derive(Default)]
pub struct OffsetTracker {
    topics: Vec<String>,
    /// Since the last seal.
    open: Vec<Progress>,
    /// Index into `open` of the last partition recorded (consecutive messages mostly share it).
    last_hit: usize,
    /// (barrier seq, progress under it), oldest first.
    sealed: VecDeque<(u64, Vec<Progress>)>,
}

impl OffsetTracker {
    pub fn record(&mut self, topic: &str, partition: i32, offset: i64) {
        if let Some(p) = self.open.get_mut(self.last_hit) {
            if p.partition == partition && self.topics[usize::from(p.topic)] == topic {
                p.last = p.last.max(offset);
                p.messages += 1;
                return;
            }
        }
        let t = match self.topics.iter().position(|t| t == topic) {
            Some(t) => t,
            None => {
                self.topics.push(topic.to_string());
                self.topics.len() - 1
            }
        } as u16;
        match self.open.iter().position(|p| p.topic == t && p.partition == partition) {
            Some(i) => {
                let p = &mut self.open[i];
                p.last = p.last.max(offset);
                p.messages += 1;
                self.last_hit = i;
            }
            None => {
                self.open.push(Progress { topic: t, partition, last: offset, messages: 1 });
                self.last_hit = self.open.len() - 1;
            }
        }
    }

    /// Messages recorded since the last seal?
    pub fn has_open(&self) -> bool {
        !self.open.is_empty()
    }

    /// Puts everything recorded since the last seal under barrier `seq`.
    pub fn seal(&mut self, seq: u64) {
        if !self.open.is_empty() {
            self.sealed.push_back((seq, std::mem::take(&mut self.open)));
        }
    }

    /// Sequence of the newest sealed barrier still waiting (0 = none).
    pub fn newest_sealed(&self) -> u64 {
        self.sealed.back().map_or(0, |(seq, _)| *seq)
    }

    /// Takes out what barriers up to `durable` cover: per partition its highest offset.
    pub fn take_durable(&mut self, durable: u64) -> Vec<(String, i32, i64)> {
        let mut best: BTreeMap<(u16, i32), i64> = BTreeMap::new();
        while self.sealed.front().is_some_and(|(seq, _)| *seq <= durable) {
            let Some((_, progress)) = self.sealed.pop_front() else { break };
            for p in progress {
                let e = best.entry((p.topic, p.partition)).or_insert(p.last);
                *e = (*e).max(p.last);
            }
        }
        best.into_iter().map(|((t, partition), last)| (self.topics[usize::from(t)].clone(), partition, last)).collect()
    }

    /// Forgets everything in flight for `partitions` (no longer ours: their offsets will not
    /// be stored, the next owner reads them again). Returns how many messages that was.
    pub fn forget(&mut self, partitions: &BTreeSet<(String, i32)>) -> u64 {
        let topics = &self.topics;
        let ours = |p: &Progress| !partitions.contains(&(topics[usize::from(p.topic)].clone(), p.partition));
        let mut dropped = 0;
        let mut keep = |v: &mut Vec<Progress>| {
            v.retain(|p| {
                let keep = ours(p);
                if !keep {
                    dropped += p.messages;
                }
                keep
            })
        };
        keep(&mut self.open);
        for (_, v) in self.sealed.iter_mut() {
            keep(v);
        }
        self.sealed.retain(|(_, v)| !v.is_empty());
        self.last_hit = 0;
        dropped
    }
}

// ---------------------------------------------------------------------------------------------
// Client context: statistics, logs, commits, rebalances

/// A rebalance received in `poll`, applied by [`KafkaSource::assign`] or [`KafkaSource::revoke`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rebalance {
    Assign(BTreeSet<(String, i32)>),
    /// Partitions taken away (with the eager protocol: the whole assignment).
    Revoke(BTreeSet<(String, i32)>),
}

pub struct KafkaContext {
    telemetry: Arc<KafkaTelemetry>,
    rebalances: Mutex<VecDeque<Rebalance>>,
    /// Set when `rebalances` is not empty: checked per message without taking the lock.
    rebalance_pending: AtomicBool,
    /// Closing: rebalances are applied at once (the caller has drained everything).
    closing: AtomicBool,
}

/// The subset of librdkafka's statistics JSON we export.
#[derive(Deserialize)]
struct Statistics {
    #[serde(default)]
    topics: BTreeMap<String, TopicStatistics>,
}

#[derive(Deserialize)]
struct TopicStatistics {
    #[serde(default)]
    partitions: BTreeMap<String, PartitionStatistics>,
}

#[derive(Deserialize)]
struct PartitionStatistics {
    partition: i32,
    /// Messages between the log end and the consumer's position (-1: unknown).
    #[serde(default = "unknown_lag")]
    consumer_lag: i64,
    /// Part of the assignment.
    #[serde(default)]
    desired: bool,
}

fn unknown_lag() -> i64 {
    -1
}

/// A partition: (topic, partition number).
pub type TopicPartition = (String, i32);

/// Consumer lag per (topic, partition) of the assigned partitions in a statistics document.
pub fn lag_from_statistics(json: &[u8]) -> Result<Vec<(TopicPartition, i64)>, serde_json::Error> {
    let stats: Statistics = serde_json::from_slice(json)?;
    let mut lag = Vec::new();
    for (topic, t) in stats.topics {
        for p in t.partitions.into_values() {
            if p.partition >= 0 && p.desired && p.consumer_lag >= 0 {
                lag.push(((topic.clone(), p.partition), p.consumer_lag));
            }
        }
    }
    Ok(lag)
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        let source = &self.telemetry.source;
        match level {
            RDKafkaLogLevel::Emerg | RDKafkaLogLevel::Alert | RDKafkaLogLevel::Critical | RDKafkaLogLevel::Error => {
                tracing::error!(source = %source, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Warning => tracing::warn!(source = %source, facility = fac, "librdkafka: {message}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(source = %source, facility = fac, "librdkafka: {message}")
            }
            RDKafkaLogLevel::Debug => tracing::debug!(source = %source, facility = fac, "librdkafka: {message}"),
        }
    }

    fn stats_raw(&self, json: &[u8]) {
        match lag_from_statistics(json) {
            Ok(lag) => self.telemetry.set_lag(lag),
            Err(e) => tracing::warn!(source = %self.telemetry.source, error = %e, "unreadable librdkafka statistics"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.telemetry.client_error(&error, reason);
    }
}

impl ConsumerContext for KafkaContext {
    fn rebalance(&self, consumer: &BaseConsumer<Self>, err: RDKafkaRespErr, tpl: &mut TopicPartitionList) {
        let partitions: BTreeSet<(String, i32)> =
            tpl.elements().iter().map(|e| (e.topic().to_string(), e.partition())).collect();
        let event = match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => Rebalance::Assign(partitions),
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => Rebalance::Revoke(partitions),
            other => {
                // librdkafka's own handling of a failed rebalance: give up the assignment.
                tracing::warn!(source = %self.telemetry.source, error = ?other, "rebalance error: giving up the assignment");
                Rebalance::Revoke(partitions)
            }
        };
        if self.closing.load(Relaxed) {
            if let Err(e) = apply_rebalance(consumer, &event) {
                tracing::warn!(source = %self.telemetry.source, error = %e, "cannot apply a rebalance while closing");
            }
            return;
        }
        self.rebalances.lock().unwrap_or_else(|e| e.into_inner()).push_back(event);
        self.rebalance_pending.store(true, Relaxed);
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        let partition_failed = offsets.elements().iter().any(|e| e.error().is_err());
        match result {
            // Nothing new was stored since the last commit: not a failure.
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                self.telemetry.commit_failed(Some(&e));
            }
            Ok(()) if partition_failed => {
                self.telemetry.commit_failed(None);
            }
            Ok(()) => {}
        }
    }
}

fn partition_list(partitions: &BTreeSet<(String, i32)>) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::with_capacity(partitions.len());
    for (topic, partition) in partitions {
        tpl.add_partition(topic, *partition);
    }
    tpl
}

fn apply_rebalance(consumer: &BaseConsumer<KafkaContext>, event: &Rebalance) -> KafkaResult<()> {
    let cooperative = matches!(consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
    match event {
        Rebalance::Assign(p) if cooperative => consumer.incremental_assign(&partition_list(p)),
        Rebalance::Assign(p) => consumer.assign(&partition_list(p)),
        Rebalance::Revoke(p) if cooperative => consumer.incremental_unassign(&partition_list(p)),
        Rebalance::Revoke(_) => consumer.unassign(),
    }
}

// ---------------------------------------------------------------------------------------------
// The source

/// Receives the lines of consumed messages.
pub trait KafkaSink {
    /// One line (without `\n`); `origin` is the envelope's `host:file`, empty when none.
    fn line(&mut self, origin: &str, line: &[u8]);
    /// The first `MAX_LINE_LEN` bytes of a longer line (the rest of it is dropped).
    fn truncated(&mut self, origin: &str, head: &[u8]);
    /// The lines from now on were counted before (a re-delivered message at or below the
    /// offset counted through: [`KafkaSource::counted_through`]); `false` ends the run.
    fn rereading(&mut self, _rereading: bool) {}
    /// The lines handed out since the last barrier are enough for one: [`KafkaSource::poll`]
    /// stops after the current message.
    fn barrier_due(&self) -> bool {
        false
    }
}

pub struct KafkaSource {
    consumer: BaseConsumer<KafkaContext>,
    payload: PayloadFormat,
    unwrapper: Unwrapper,
    tracker: OffsetTracker,
    telemetry: Arc<KafkaTelemetry>,
    assigned: BTreeSet<(String, i32)>,
    /// A first assignment was received (the consumer has joined its group).
    joined: bool,
    /// Per (topic, partition) the highest offset whose lines are counted in the store: a
    /// message re-delivered at or below it is handed out flagged as a re-read.
    counted: HashMap<(String, i32), i64>,
}

impl KafkaSource {
    /// Creates the consumer and subscribes. Connecting happens in the background: a broker
    /// that is down is retried by librdkafka, never an error here.
    pub fn connect(cfg: &KafkaSettings, telemetry: Arc<KafkaTelemetry>) -> Result<KafkaSource, KafkaSourceError> {
        let mut client = ClientConfig::new();
        // Defaults an operator may override in [source.kafka.options] ...
        client
            .set("client.id", "recwatch")
            .set("auto.offset.reset", "earliest")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("statistics.interval.ms", "5000");
        for (name, value) in &cfg.options {
            client.set(name, value);
        }
        // ... and what the at-least-once promise rests on, which they may not.
        client
            .set("bootstrap.servers", cfg.brokers.join(","))
            .set("group.id", &cfg.group_id)
            .set("enable.auto.commit", "true")
            .set("enable.auto.offset.store", "false");
        let context = KafkaContext {
            telemetry: telemetry.clone(),
            rebalances: Mutex::new(VecDeque::new()),
            rebalance_pending: AtomicBool::new(false),
            closing: AtomicBool::new(false),
        };
        let consumer: BaseConsumer<KafkaContext> =
            client.create_with_context(context).map_err(KafkaSourceError::Create)?;
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&topics)
            .map_err(|error| KafkaSourceError::Subscribe { topics: cfg.topics.clone(), error })?;
        Ok(KafkaSource {
            consumer,
            payload: cfg.payload,
            unwrapper: Unwrapper::default(),
            tracker: OffsetTracker::default(),
            telemetry,
            assigned: BTreeSet::new(),
            joined: false,
            counted: HashMap::new(),
        })
    }

    /// Hands the lines of up to `budget` messages to `sink`, waiting up to `wait` for the
    /// first. Returns the messages handed out; stops early when a rebalance arrived (see
    /// [`KafkaSource::take_rebalance`]) or the sink's barrier is due ([`KafkaSink::barrier_due`]).
    pub fn poll<S: KafkaSink>(&mut self, sink: &mut S, wait: Duration, budget: usize) -> usize {
        let mut handed = 0;
        let mut bad = 0;
        let mut timeout = wait;
        while handed < budget && !sink.barrier_due() && !self.consumer.context().rebalance_pending.load(Relaxed) {
            let Some(result) = self.consumer.poll(timeout) else { break };
            timeout = Duration::ZERO;
            let m = match result {
                Ok(m) => m,
                Err(e) => {
                    self.telemetry.consumer_error(&e);
                    continue;
                }
            };
            let reread = self.counted.get(&(m.topic().to_string(), m.partition())).is_some_and(|&c| m.offset() <= c);
            if reread {
                sink.rereading(true);
            }
            match self.unwrapper.unwrap(m.payload().unwrap_or_default(), self.payload) {
                Ok(u) => frame_lines(u.lines, MAX_LINE_LEN, |f| match f {
                    Frame::Line(line) => sink.line(u.origin, line),
                    Frame::Truncated(head) => sink.truncated(u.origin, head),
                }),
                Err(_) => bad += 1,
            }
            if reread {
                sink.rereading(false);
            }
            self.tracker.record(m.topic(), m.partition(), m.offset());
            handed += 1;
        }
        self.telemetry.messages.fetch_add(handed as u64, Relaxed);
        if bad > 0 {
            self.telemetry.bad_payloads.fetch_add(bad, Relaxed);
        }
        handed
    }

    /// The next rebalance received in `poll`, if any. Apply it with [`KafkaSource::assign`]
    /// or [`KafkaSource::revoke`] before polling again.
    pub fn take_rebalance(&mut self) -> Option<Rebalance> {
        let ctx = self.consumer.context();
        let mut queue = ctx.rebalances.lock().unwrap_or_else(|e| e.into_inner());
        let next = queue.pop_front();
        if queue.is_empty() {
            ctx.rebalance_pending.store(false, Relaxed);
        }
        next
    }

    pub fn assign(&mut self, partitions: BTreeSet<(String, i32)>) {
        let event = Rebalance::Assign(partitions.clone());
        if let Err(e) = apply_rebalance(&self.consumer, &event) {
            tracing::error!(source = %self.telemetry.source, error = %e, "cannot apply the partition assignment");
        }
        self.telemetry.partitions_assigned(&partitions);
        self.assigned.extend(partitions);
        self.joined = true;
        self.telemetry.assigned_partitions.store(self.assigned.len() as i64, Relaxed);
    }

    /// Gives up `partitions`. Call after storing what became durable ([`store_durable`]) and
    /// committing ([`commit_sync`]): whatever is still in flight for them is forgotten and
    /// counted, and will be read again by their next owner.
    ///
    /// [`store_durable`]: KafkaSource::store_durable
    /// [`commit_sync`]: KafkaSource::commit_sync
    pub fn revoke(&mut self, partitions: BTreeSet<(String, i32)>) {
        let eager = !matches!(self.consumer.rebalance_protocol(), RebalanceProtocol::Cooperative);
        // The eager protocol takes the whole assignment, whatever the list says.
        let revoked = if eager { std::mem::take(&mut self.assigned) } else { partitions };
        let dropped = self.tracker.forget(&revoked);
        if dropped > 0 {
            self.telemetry.dropped_in_flight(dropped);
        }
        if let Err(e) = apply_rebalance(&self.consumer, &Rebalance::Revoke(revoked.clone())) {
            tracing::error!(source = %self.telemetry.source, error = %e, "cannot give up revoked partitions");
        }
        self.telemetry.partitions_revoked(&revoked);
        for p in &revoked {
            self.assigned.remove(p);
        }
        self.telemetry.assigned_partitions.store(self.assigned.len() as i64, Relaxed);
    }

    /// The group took the assignment away without a revoke handshake (session timeout):
    /// committing is pointless, the partitions already have a new owner.
    pub fn assignment_lost(&self) -> bool {
        self.consumer.assignment_lost()
    }

    /// Whether the consumer has joined its group (received a first assignment, possibly empty
    /// when there are more members than partitions).
    pub fn joined(&self) -> bool {
        self.joined
    }

    /// Messages handed out since the last seal?
    pub fn has_unsealed(&self) -> bool {
        self.tracker.has_open()
    }

    /// Offsets whose lines the store counted before this start (see the `counted` field).
    pub fn counted_through(&mut self, counted: HashMap<(String, i32), i64>) {
        self.counted = counted;
    }

    /// Per partition the highest offset handed out since the last seal: what the next
    /// barrier covers, for the store to keep with the counts ([`KafkaSource::counted_through`]).
    pub fn unsealed_positions(&self) -> Vec<(String, i32, i64)> {
        self.tracker
            .open
            .iter()
            .map(|p| (self.tracker.topics[usize::from(p.topic)].clone(), p.partition, p.last))
            .collect()
    }

    /// Puts the messages handed out so far under pipeline barrier `seq`.
    pub fn seal(&mut self, seq: u64) {
        self.tracker.seal(seq);
    }

    /// Newest barrier sealed (0 = none): everything handed out is covered once it is durable.
    pub fn newest_sealed(&self) -> u64 {
        self.tracker.newest_sealed()
    }

    /// Stores the offsets of every message whose barrier (≤ `durable`) is durable, for the
    /// auto-commit to pick up. A refused store (partition no longer assigned) is counted.
    pub fn store_durable(&mut self, durable: u64) {
        for (topic, partition, last) in self.tracker.take_durable(durable) {
            let counted = self.counted.entry((topic.clone(), partition)).or_insert(last);
            *counted = (*counted).max(last);
            // rd_kafka_offset_store stores last + 1: the next message to read.
            if let Err(e) = self.consumer.store_offset(&topic, partition, last) {
                self.telemetry.offset_not_stored(&topic, partition, &e);
            }
        }
    }

    /// Commits every stored offset now and waits for the broker's answer.
    pub fn commit_sync(&self) -> KafkaResult<()> {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => Ok(()),
            Err(e) => {
                self.telemetry.commit_sync_failed(&e);
                Err(e)
            }
            Ok(()) => Ok(()),
        }
    }

    /// Leaves the group. Call after the final [`KafkaSource::commit_sync`].
    pub fn close(self) {
        self.consumer.context().closing.store(true, Relaxed);
        self.consumer.unsubscribe();
        self.telemetry.assigned_partitions.store(0, Relaxed);
        self.telemetry.set_lag(std::iter::empty());
        // Dropping the consumer leaves the group (revokes are applied at once now).
        drop(self.consumer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unwrap(payload: &str, format: PayloadFormat) -> Result<(String, String), BadPayload> {
        let mut u = Unwrapper::default();
        let r = u.unwrap(payload.as_bytes(), format)?;
        Ok((String::from_utf8(r.lines.to_vec()).unwrap(), r.origin.to_string()))
    }

    const LINE: &str =
        r#"203.0.113.7 - - [18/Feb/2019:10:00:01 +0100] "GET /recordings/a.wav HTTP/1.1" 200 5 "-" "curl/8""#;

    #[test]
    fn raw_lines_pass_through() {
        assert_eq!(unwrap(LINE, PayloadFormat::Auto), Ok((LINE.to_string(), String::new())));
        assert_eq!(unwrap(LINE, PayloadFormat::Line), Ok((LINE.to_string(), String::new())));
        assert_eq!(unwrap(LINE, PayloadFormat::Envelope), Err(BadPayload::NotJson));
        assert_eq!(unwrap("", PayloadFormat::Auto), Err(BadPayload::Empty));
    }

    #[test]
    fn vector_envelope_gives_the_line_and_host_and_file() {
        let env = serde_json::json!({
            "message": LINE, "host": "web1", "file": "/var/log/nginx/access.log",
            "source_type": "file", "timestamp": "2019-02-18T09:00:01Z"
        })
        .to_string();
        let want = Ok((LINE.to_string(), "web1:/var/log/nginx/access.log".to_string()));
        assert_eq!(unwrap(&env, PayloadFormat::Auto), want);
        assert_eq!(unwrap(&env, PayloadFormat::Envelope), want);
    }

    #[test]
    fn filebeat_envelope_gives_the_line_and_host_and_file() {
        let env = serde_json::json!({
            "@timestamp": "2019-02-18T09:00:01.000Z", "message": LINE,
            "host": {"name": "web2", "hostname": "web2.example"},
            "log": {"offset": 12, "file": {"path": "/var/log/apache2/access.log"}},
            "agent": {"type": "filebeat"}
        })
        .to_string();
        assert_eq!(
            unwrap(&env, PayloadFormat::Auto),
            Ok((LINE.to_string(), "web2:/var/log/apache2/access.log".to_string()))
        );
    }

    #[test]
    fn envelope_without_host_or_file_has_no_origin_and_escapes_are_decoded() {
        let env = r#"{"message":"a \"q\" \\ \u00e9 \ud83d\ude00 \ud800x\tb"}"#;
        assert_eq!(
            unwrap(env, PayloadFormat::Envelope),
            Ok(("a \"q\" \\ é 😀 \u{FFFD}x\tb".to_string(), String::new()))
        );
        let env = r#"{"message":"m","host":"evil\u001b[31m"}"#;
        assert_eq!(unwrap(env, PayloadFormat::Auto), Ok(("m".to_string(), "evil?[31m".to_string())));
    }

    #[test]
    fn json_without_a_string_message_is_a_line_in_auto_and_skipped_in_envelope_mode() {
        let json_log = r#"{"remote_addr":"203.0.113.7","request":"GET /x HTTP/1.1"}"#;
        assert_eq!(unwrap(json_log, PayloadFormat::Auto), Ok((json_log.to_string(), String::new())));
        assert_eq!(unwrap(json_log, PayloadFormat::Envelope), Err(BadPayload::NoMessage));
        assert_eq!(unwrap(r#"{"message": 5}"#, PayloadFormat::Envelope), Err(BadPayload::NoMessage));
        assert_eq!(unwrap(r#"{"message": "x""#, PayloadFormat::Envelope), Err(BadPayload::NotJson));
    }

    #[test]
    fn origin_is_bounded() {
        let env = serde_json::json!({"message": "m", "host": "h".repeat(1000)}).to_string();
        let (_, origin) = unwrap(&env, PayloadFormat::Auto).unwrap();
        assert_eq!(origin.len(), MAX_ORIGIN_LEN);
    }

    #[test]
    fn tracker_stores_the_highest_durable_offset_per_partition() {
        let mut t = OffsetTracker::default();
        for o in 10..15 {
            t.record("logs", 0, o);
        }
        t.record("logs", 1, 7);
        t.record("other", 0, 3);
        t.seal(1);
        t.record("logs", 0, 15);
        t.seal(2);
        t.record("logs", 1, 8);
        assert!(t.has_open());
        assert_eq!(t.take_durable(0), []);
        assert_eq!(
            t.take_durable(1),
            [("logs".to_string(), 0, 14), ("logs".to_string(), 1, 7), ("other".to_string(), 0, 3)]
        );
        t.seal(3);
        assert_eq!(t.newest_sealed(), 3);
        assert_eq!(t.take_durable(3), [("logs".to_string(), 0, 15), ("logs".to_string(), 1, 8)]);
        assert_eq!(t.take_durable(3), []);
    }

    #[test]
    fn revoked_partitions_in_flight_are_forgotten_and_counted() {
        let mut t = OffsetTracker::default();
        for o in 0..5 {
            t.record("logs", 0, o);
            t.record("logs", 1, o);
        }
        t.seal(1);
        t.record("logs", 1, 5);
        t.record("logs", 2, 0);
        let revoked: BTreeSet<(String, i32)> = [("logs".to_string(), 1)].into();
        assert_eq!(t.forget(&revoked), 6);
        t.seal(2);
        assert_eq!(t.take_durable(2), [("logs".to_string(), 0, 4), ("logs".to_string(), 2, 0)]);
    }

    #[test]
    fn lag_comes_from_assigned_partitions_with_a_known_lag() {
        let json = br#"{"name":"recwatch#consumer-1","type":"consumer","topics":{"logs":{"topic":"logs",
            "partitions":{"0":{"partition":0,"desired":true,"consumer_lag":42,"consumer_lag_stored":50},
                          "1":{"partition":1,"desired":false,"consumer_lag":-1},
                          "2":{"partition":2,"desired":true,"consumer_lag":-1},
                          "-1":{"partition":-1,"desired":false,"consumer_lag":-1}}}},"brokers":{}}"#;
        assert_eq!(lag_from_statistics(json).unwrap(), [(("logs".to_string(), 0), 42)]);
        assert!(lag_from_statistics(b"not json").is_err());
    }

    #[test]
    fn client_options_are_checked_by_librdkafka() {
        assert!(check_client_option("security.protocol", "SASL_SSL").is_ok());
        assert!(check_client_option("session.timeout.ms", "6000").is_ok());
        assert!(check_client_option("no.such.option", "1").unwrap_err().contains("No such configuration property"));
        assert!(check_client_option("security.protocol", "carrier-pigeon").is_err());
        assert!(check_client_option("group.id", "other").unwrap_err().contains("group_id"));
        assert!(check_client_option("enable.auto.offset.store", "true").unwrap_err().contains("durable"));
    }
}

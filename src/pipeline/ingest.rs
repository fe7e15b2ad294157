//! The per-line path: frames in, events out. Parses, classifies and routes each line to the
//! worker that owns its client (and to its source's, when a source-grouped rule matches it),
//! in recycled per-worker batches. Owns the line tally and the barrier numbering of its
//! pipeline. Takes no lock, makes no syscall and allocates nothing per line once warm; never
//! keeps detection state and never touches the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use xxhash_rust::xxh3::xxh3_128_with_seed;

use super::{worker_for, SourceSpec, MAX_SOURCES};
use crate::classify::client::{Client, ClientId, Networks};
use crate::classify::path::{file_path_as_target, PathSemantics, SensitivePaths};
use crate::detect::event::{Event, EventBatch, Route};
use crate::detect::rule::Facts;
use crate::detect::thread::{Barrier, WorkerMsg};
use crate::detect::worker::DetectConfig;
use crate::parse::time::UtcOffset;
use crate::parse::{self, LineFormat, LogFormat, SkipReason, TimeKind};
use crate::source::tail::LineSink;
use crate::telemetry::{LineTally, Telemetry};

/// The parsing side: owned by the reading thread.
pub struct Ingest {
    pub(super) paths: Arc<SensitivePaths>,
    pub(super) networks: Arc<Networks>,
    pub(super) sources: Vec<SourceSpec>,
    /// Index of every source by name, for [`Ingest::source_named`].
    pub(super) source_index: HashMap<String, u16, ahash::RandomState>,
    /// Truncated-line counters of the sources the pipeline started with, by index; a source
    /// registered later by name (a Kafka envelope's `host:file`) counts under the first, the
    /// configured source it came through, so label values come from the config only.
    truncated_lines: Vec<Arc<AtomicU64>>,
    /// Reused buffer for the normalised path of the current line.
    path_scratch: Vec<u8>,
    /// A storage log's file path written as a request target ([`file_path_as_target`]).
    target_scratch: Vec<u8>,
    /// Reused buffer for the unescaped user agent of the current line.
    ua_scratch: Vec<u8>,
    /// Last timestamp text and its value: consecutive lines mostly share a second.
    time_cache: ([u8; 32], usize, TimeKind, i64),
    /// Keys the distinct-path hash with a secret, so crafted paths cannot aim for collisions;
    /// set from the pseudonym key by [`Pipeline::start`], so keys agree across restarts (the
    /// evidence ledger stores them).
    pub(super) path_seed: u64,
    /// Lines now coming in were counted before a restart (the tailer re-reads them to rebuild
    /// windows): their events fill windows but count nowhere ([`LineSink::rereading`]).
    rereading: bool,
    pub(super) batches: Vec<EventBatch>,
    pub(super) to_workers: Vec<Sender<WorkerMsg>>,
    pub(super) recycled: Receiver<EventBatch>,
    /// The rules: source-grouped ones are matched here, so only events they match go to the
    /// source's worker.
    pub(super) detect: Arc<DetectConfig>,
    pub(super) tally: LineTally,
    pub(super) telemetry: Arc<Telemetry>,
    next_barrier: u64,
    /// Bytes of input per sensitive line over the last barrier's lines ([`Ingest::read_hint`]).
    bytes_per_sensitive: u64,
    /// Newest trusted event time of a sensitive line so far (Unix seconds; 0 = none yet).
    /// A time too far ahead of the wall clock never moves it.
    pub(super) latest_event_time: i64,
    /// How far ahead of the wall clock an event time is still trusted (seconds;
    /// `engine.future_tolerance_secs`, set by [`Pipeline::start`]).
    pub(super) future_tolerance: i64,
    /// Wall clock + tolerance when last read: times up to it are trusted without reading the
    /// clock again (the real limit only grows, so a stale one errs towards a re-read).
    trusted_until: i64,
    /// Events too far in the future, by source index, not yet published.
    future_events: Vec<u64>,
    /// Set when a downstream stage has gone away; lines are then counted but not routed.
    pub(super) downstream_failed: bool,
    /// Parser threads of [`Pipeline::ingest_parallel`] collect full batches here (with their
    /// worker) instead of sending them, so the batches can be forwarded in input order.
    pub(super) collected: Option<Vec<(usize, EventBatch)>>,
}

impl Ingest {
    /// The reading side of a pipeline whose workers listen on `to_workers`; `sources` are
    /// indexed by the `source` argument of [`Ingest::line`].
    pub(super) fn new(
        paths: Arc<SensitivePaths>,
        networks: Arc<Networks>,
        sources: Vec<SourceSpec>,
        to_workers: Vec<Sender<WorkerMsg>>,
        recycled: Receiver<EventBatch>,
        detect: Arc<DetectConfig>,
        telemetry: Arc<Telemetry>,
    ) -> Ingest {
        let source_index = sources.iter().enumerate().map(|(i, s)| (s.name.clone(), i as u16)).collect();
        let truncated_lines = sources.iter().map(|s| telemetry.lines_truncated(&s.name)).collect();
        Ingest {
            paths,
            networks,
            sources,
            source_index,
            truncated_lines,
            path_scratch: Vec::with_capacity(4096),
            target_scratch: Vec::new(),
            ua_scratch: Vec::with_capacity(1024),
            time_cache: ([0; 32], 0, TimeKind::Clf, 0),
            path_seed: std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8),
            rereading: false,
            batches: (0..to_workers.len()).map(|_| EventBatch::with_capacity()).collect(),
            to_workers,
            recycled,
            detect,
            tally: LineTally::default(),
            telemetry,
            next_barrier: 1,
            bytes_per_sensitive: Self::FIRST_BYTES_PER_SENSITIVE,
            latest_event_time: 0,
            future_tolerance: 300,
            trusted_until: i64::MIN,
            future_events: Vec::new(),
            downstream_failed: false,
            collected: None,
        }
    }

    /// One framed line from source `source`. The hot path.
    #[inline]
    pub fn line(&mut self, source: u16, line: &[u8]) {
        self.judge(source, line, false);
    }

    /// Parses, classifies and routes one line; `is_head` for the head of an over-long line
    /// ([`parse::parse_line_head`]: judged when cut after its bytes field).
    #[inline]
    fn judge(&mut self, source: u16, line: &[u8], is_head: bool) {
        self.tally.lines += 1;
        self.tally.bytes += line.len() as u64 + 1;
        // Most lines are plain and request no sensitive path: they are passed over on their
        // target alone; a plain one that may be sensitive is not parsed again.
        let parsed = match (self.sources.get(usize::from(source)), is_head) {
            (Some(spec @ SourceSpec { format: LineFormat::Named(format), .. }), false) => {
                match parse::plain_line(*format, line) {
                    Some(plain) if !self.paths.may_be_sensitive(plain.target, spec.path_semantics) => {
                        self.tally.parsed += 1;
                        return;
                    }
                    Some(plain) => Ok(plain.access()),
                    None => parse::parse_line(*format, line),
                }
                .map(|access| (access, spec.path_semantics, spec.timezone, false))
            }
            (Some(s), _) => {
                let parsed = if is_head { s.format.parse_head(line) } else { s.format.parse(line) };
                let file_paths = s.format.targets_are_file_paths();
                parsed.map(|access| (access, s.path_semantics, s.timezone, file_paths))
            }
            (None, _) => {
                let format = LogFormat::Combined;
                let parsed =
                    if is_head { parse::parse_line_head(format, line) } else { parse::parse_line(format, line) };
                parsed.map(|access| (access, PathSemantics::default(), UtcOffset::UTC, false))
            }
        };
        let (access, path_semantics, timezone, file_paths) = match parsed {
            Ok(parsed) => parsed,
            Err(reason) => return self.tally.skip(reason),
        };
        if let Some(wrapper) = access.wrapper {
            self.tally.unwrapped[wrapper as usize] += 1;
        }
        if access.junk_request {
            self.tally.junk_requests += 1;
        }
        let target =
            if file_paths { file_path_as_target(access.target, &mut self.target_scratch) } else { access.target };
        let Some(path_class) = self.paths.classify(target, path_semantics, &mut self.path_scratch) else {
            self.tally.parsed += 1;
            return;
        };
        let Some(time) = self.event_time(access.time, access.time_kind(), timezone) else {
            return self.tally.skip(SkipReason::BadTimestamp);
        };
        let resolved = self.networks.resolve_client(access.client, access.client_is_list, || access.forwarded_for());
        let (client, client_name) = match resolved {
            Some(Client::Ip(ip)) => (ClientId::Ip(ip), &b""[..]),
            Some(Client::Name(name)) => (ClientId::of_name(name), name),
            None => return self.tally.skip(SkipReason::BadClient),
        };
        self.tally.parsed += 1;
        self.tally.sensitive(path_class, access.status);
        let (time, future) = self.trust(source, time);
        self.latest_event_time = self.latest_event_time.max(time);
        if self.downstream_failed {
            return;
        }
        let client_class = self.networks.classify_client(client);
        let path_key = xxh3_128_with_seed(&self.path_scratch, self.path_seed);
        let user_agent = access.user_agent().unwrap_or(b"");
        let user_agent: &[u8] = if memchr::memchr(b'\\', user_agent).is_some() {
            self.ua_scratch.clear();
            parse::unescape_log_field(user_agent, &mut self.ua_scratch);
            &self.ua_scratch
        } else {
            user_agent
        };
        let n = self.batches.len();
        let client_worker = worker_for(client, n);
        let source_worker = usize::from(source) % n;
        let facts = Facts {
            path_class,
            status: access.status,
            method: access.method,
            client_kind: client_class.kind,
            user_present: access.user.is_some(),
            user_agent,
            transport: access.transport(),
        };
        let body_bytes = access.body_bytes();
        let push = |worker: usize, route: Route, batches: &mut Vec<EventBatch>| {
            let batch = &mut batches[worker];
            let path = batch.push_bytes(&self.path_scratch);
            let method = batch.push_bytes(access.method);
            let user_agent = batch.push_bytes(user_agent);
            let client_name = batch.push_bytes(client_name);
            batch.arena[client_name.start as usize..client_name.end as usize].make_ascii_lowercase();
            batch.events.push(Event {
                client,
                client_name,
                client_class,
                time,
                future,
                status: facts.status,
                body_bytes,
                path_class,
                user_present: facts.user_present,
                transport: facts.transport,
                source,
                reread: self.rereading,
                path_key,
                path,
                method,
                user_agent,
                route,
            });
        };
        let source_rules = self.detect.source_rules_match(&facts);
        let both = source_rules && source_worker == client_worker;
        push(client_worker, Route { client_rules: true, source_rules: both }, &mut self.batches);
        if source_rules && !both {
            push(source_worker, Route { client_rules: false, source_rules: true }, &mut self.batches);
            if self.batches[source_worker].is_full() {
                self.send(source_worker);
            }
        }
        if self.batches[client_worker].is_full() {
            self.send(client_worker);
        }
    }

    /// The head of a line longer than the bound (the framer dropped the rest): counted as
    /// truncated, then judged by its head (skipped as `too_long` only when cut before the
    /// end of its bytes field).
    pub fn truncated(&mut self, source: u16, head: &[u8]) {
        let counter = self.truncated_lines.get(usize::from(source)).or(self.truncated_lines.first());
        if let Some(counter) = counter {
            counter.fetch_add(1, Relaxed);
        }
        self.judge(source, head, true);
    }

    /// A timestamp's Unix seconds, read as `kind` says; `timezone` applies only to a CLF one
    /// written without a zone.
    fn event_time(&mut self, text: &[u8], kind: TimeKind, timezone: UtcOffset) -> Option<i64> {
        let (cached, len, cached_kind, value) = &mut self.time_cache;
        if text.len() == *len && *cached_kind == kind && &cached[..*len] == text {
            return Some(*value);
        }
        let t = match kind {
            TimeKind::Clf => parse::time::parse_clf_time_in(text, timezone)?,
            // Local time without a zone: the source's offset applies.
            TimeKind::Ctime => parse::plan::parse_time(kind, text)? - i64::from(timezone.seconds()),
            other => parse::plan::parse_time(other, text)?,
        };
        // Only timestamps with their own offset are cached: a zone-less one means different
        // instants in sources of different time zones.
        let own_zone = match kind {
            TimeKind::Clf => text.len() == parse::time::CLF_TIME_LEN,
            TimeKind::Ctime => false,
            _ => true,
        };
        if own_zone && text.len() <= cached.len() {
            cached[..text.len()].copy_from_slice(text);
            *len = text.len();
            *cached_kind = kind;
            *value = t;
        }
        Some(t)
    }

    /// The time an event is placed at, and whether its own was too far in the future: such a
    /// time moves no clock, so the event is placed at the latest trusted time (the wall clock
    /// before any) and counted. Reads the wall clock only when a time passes the cached limit.
    #[inline]
    fn trust(&mut self, source: u16, time: i64) -> (i64, bool) {
        if time <= self.trusted_until {
            return (time, false);
        }
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.trusted_until = now.saturating_add(self.future_tolerance);
        if time <= self.trusted_until {
            return (time, false);
        }
        let i = usize::from(source);
        if self.future_events.len() <= i {
            self.future_events.resize(i + 1, 0);
        }
        self.future_events[i] += 1;
        (if self.latest_event_time > 0 { self.latest_event_time } else { now }, true)
    }

    fn send(&mut self, worker: usize) {
        let fresh = self.recycled.try_recv().unwrap_or_else(|_| EventBatch::with_capacity());
        let full = std::mem::replace(&mut self.batches[worker], fresh);
        if let Some(collected) = &mut self.collected {
            collected.push((worker, full));
        } else if self.to_workers[worker].send(WorkerMsg::Events(full)).is_err() {
            self.downstream_failed = true;
        }
    }

    /// A parser for another thread: same tables, same path-hash seed (distinct counts must
    /// agree), collecting its batches instead of sending them.
    pub(super) fn parser(&self) -> Ingest {
        Ingest {
            paths: self.paths.clone(),
            networks: self.networks.clone(),
            sources: self.sources.clone(),
            source_index: self.source_index.clone(),
            truncated_lines: self.truncated_lines.clone(),
            path_scratch: Vec::with_capacity(4096),
            target_scratch: Vec::new(),
            ua_scratch: Vec::with_capacity(1024),
            time_cache: ([0; 32], 0, TimeKind::Clf, 0),
            path_seed: self.path_seed,
            rereading: false,
            batches: (0..self.batches.len()).map(|_| EventBatch::with_capacity()).collect(),
            to_workers: Vec::new(),
            recycled: self.recycled.clone(),
            detect: self.detect.clone(),
            tally: LineTally::default(),
            telemetry: self.telemetry.clone(),
            next_barrier: 1,
            bytes_per_sensitive: Self::FIRST_BYTES_PER_SENSITIVE,
            latest_event_time: self.latest_event_time,
            future_tolerance: self.future_tolerance,
            trusted_until: self.trusted_until,
            future_events: Vec::new(),
            downstream_failed: false,
            collected: Some(Vec::new()),
        }
    }

    /// Sends every partly filled batch and publishes the line tally. Call at the end of a
    /// chunk of input, so events never wait behind a quiet source.
    pub fn flush(&mut self) {
        for w in 0..self.batches.len() {
            if !self.batches[w].events.is_empty() {
                self.send(w);
            }
        }
        self.telemetry.publish(&mut self.tally);
        for (i, n) in self.future_events.iter_mut().enumerate().filter(|(_, n)| **n > 0) {
            let name = self.sources.get(i).map_or("", |s| s.name.as_str());
            self.telemetry.events_future(name, std::mem::take(n));
        }
    }

    /// Flushes, then sends a barrier carrying `checkpoint` through every worker. Returns its
    /// sequence number; [`Pipeline::durable_barrier`] reaches it once the checkpoint and every
    /// alert caused by earlier lines are durable.
    pub fn barrier(&mut self, checkpoint: Vec<u8>, read_at: Instant) -> u64 {
        self.send_barrier(Some(checkpoint), Vec::new(), read_at)
    }

    /// A barrier without a checkpoint, for sources whose position is kept elsewhere (Kafka):
    /// [`Pipeline::durable_barrier`] reaching the returned number says every alert caused by
    /// earlier lines is durable, so their offsets may be stored.
    pub fn durable_marker(&mut self, read_at: Instant) -> u64 {
        self.send_barrier(None, Vec::new(), read_at)
    }

    /// [`Ingest::durable_marker`] that also carries the source positions it covers (Kafka
    /// offsets), written with the counts of the lines before it.
    pub fn durable_marker_at(&mut self, read_at: Instant, positions: Vec<(Vec<u8>, i64)>) -> u64 {
        self.send_barrier(None, positions, read_at)
    }

    /// Enough sensitive lines came since the last barrier that the next one should come now:
    /// every change they cause (an alert, a ledger entry, a source's alert: up to three each)
    /// is written in that barrier's one sled transaction, whose memory grows with its size
    /// (issue 13: a mass fetch, one new client per line, made ~1 000 alerts per barrier and
    /// ~30 MiB of peak memory at 100 k clients). Counted by the line tally, which every
    /// barrier publishes and so starts afresh.
    pub fn barrier_due(&self) -> bool {
        self.tally.sensitive >= Self::SENSITIVE_PER_BARRIER
    }

    /// [`Ingest::barrier_due`]'s bound.
    pub const SENSITIVE_PER_BARRIER: u64 = 64;
    /// Until a barrier's lines say otherwise, every line is taken to be sensitive, and short.
    const FIRST_BYTES_PER_SENSITIVE: u64 = 64;

    /// About how many more bytes of input make the barrier due, at the density of sensitive
    /// lines over the last barrier's lines: a reader sizes its reads by it, so a barrier covers
    /// about [`Ingest::SENSITIVE_PER_BARRIER`] of them even where every line is one (a mass
    /// fetch), while logs where few are keep large reads.
    pub fn read_hint(&self) -> usize {
        let left = Self::SENSITIVE_PER_BARRIER.saturating_sub(self.tally.sensitive);
        usize::try_from(left.saturating_mul(self.bytes_per_sensitive)).unwrap_or(usize::MAX)
    }

    fn send_barrier(&mut self, checkpoint: Option<Vec<u8>>, positions: Vec<(Vec<u8>, i64)>, read_at: Instant) -> u64 {
        if self.tally.bytes > 0 {
            // No sensitive line at all: as dense as one (the estimate errs towards small reads).
            self.bytes_per_sensitive = self.tally.bytes / self.tally.sensitive.max(1);
        }
        self.flush();
        self.telemetry.newest_event_unix.fetch_max(self.latest_event_time, Relaxed);
        let seq = self.next_barrier;
        self.next_barrier += 1;
        let b = Arc::new(Barrier { seq, read_at, checkpoint, positions });
        for tx in &self.to_workers {
            if tx.send(WorkerMsg::Barrier(b.clone())).is_err() {
                self.downstream_failed = true;
            }
        }
        seq
    }

    /// The index of the source called `name`, registering it (with `format`) when it is new;
    /// None once [`MAX_SOURCES`] are known. A registered source reaches every worker before
    /// any event of it (queues are FIFO), so alerts can name it.
    pub fn source_named(&mut self, name: &str, format: &LineFormat) -> Option<u16> {
        if let Some(&i) = self.source_index.get(name) {
            return Some(i);
        }
        if self.sources.len() >= MAX_SOURCES {
            return None;
        }
        let index = self.sources.len() as u16;
        // A source named by a Kafka envelope is a host behind the configured source: same
        // kind of server.
        let (path_semantics, timezone) =
            self.sources.first().map_or_else(Default::default, |s| (s.path_semantics, s.timezone));
        self.sources.push(SourceSpec { name: name.to_string(), format: format.clone(), path_semantics, timezone });
        self.source_index.insert(name.to_string(), index);
        for tx in &self.to_workers {
            if tx.send(WorkerMsg::AddSource(name.to_string())).is_err() {
                self.downstream_failed = true;
            }
        }
        Some(index)
    }

    /// Newest event time seen on a sensitive line (0 before the first).
    pub fn latest_event_time(&self) -> i64 {
        self.latest_event_time
    }

    /// Carries the newest event time over a restart or reload (it only moves forward).
    pub fn seed_latest_event_time(&mut self, t: i64) {
        self.latest_event_time = self.latest_event_time.max(t);
    }
}

impl LineSink for Ingest {
    fn line(&mut self, source: u16, line: &[u8]) {
        Ingest::line(self, source, line);
    }
    fn truncated(&mut self, source: u16, head: &[u8]) {
        Ingest::truncated(self, source, head);
    }
    fn partial_line(&mut self, source: u16, line: &[u8]) {
        // Flagged and counted by the tailer; still parsed: a cut line may hold a real fetch.
        Ingest::line(self, source, line);
    }
    fn rereading(&mut self, _source: u16, rereading: bool) {
        self.rereading = rereading;
    }
    fn barrier_due(&self) -> bool {
        Ingest::barrier_due(self)
    }
    fn read_hint(&self) -> usize {
        Ingest::read_hint(self)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crossbeam_channel::unbounded;

    use super::*;
    use crate::config::Config;
    use crate::privacy::Pseudonymizer;

    /// Every sensitive event of a source used to be copied to the source's worker when any
    /// rule was source-grouped, though most match none (the default R3 and R4 take 2xx
    /// fetches of recordings only): routing now asks the rules first.
    #[test]
    fn only_events_a_source_rule_matches_reach_the_sources_worker() {
        let config = Config::from_toml(Path::new("/etc/recwatch/recwatch.toml"), "").unwrap();
        let detect = DetectConfig::new(
            config.rules.clone(),
            Vec::new(),
            vec!["web".into()],
            config.engine.client_idle_secs,
            config.engine.max_clients_per_worker,
            false,
            Pseudonymizer::new(b"k"),
        );
        let (txs, rxs): (Vec<_>, Vec<_>) = (0..2).map(|_| unbounded()).unzip();
        let source = SourceSpec {
            name: "web".into(),
            format: LineFormat::Named(LogFormat::Combined),
            path_semantics: PathSemantics::default(),
            timezone: UtcOffset::UTC,
        };
        let mut ingest = Ingest::new(
            config.classify.paths.clone(),
            config.classify.networks.clone(),
            vec![source],
            txs,
            unbounded().1,
            Arc::new(detect),
            Arc::new(Telemetry::default()),
        );
        // Source 0 is judged on worker 0; clients 203.0.113.x land on either worker.
        let line = |client: u8, status: u16| {
            format!(
                "203.0.113.{client} - - [18/Feb/2019:10:00:01 +0000] \"GET /recordings/{client}.wav HTTP/1.1\" {status} 5 \"-\" \"ua\""
            )
        };
        for client in 1..=40u8 {
            ingest.line(0, line(client, 200).as_bytes());
            ingest.line(0, line(client, 404).as_bytes());
        }
        ingest.flush();
        let mut routed = Vec::new();
        for (worker, rx) in rxs.iter().enumerate() {
            while let Ok(WorkerMsg::Events(batch)) = rx.try_recv() {
                for ev in &batch.events {
                    routed.push((worker, ev.status, ev.route.client_rules, ev.route.source_rules));
                }
            }
        }
        let client_copies = routed.iter().filter(|r| r.2).count();
        assert_eq!(client_copies, 80, "every event reaches its client's worker once");
        let source_copies: Vec<_> = routed.iter().filter(|r| r.3).collect();
        assert_eq!(source_copies.len(), 40, "only the 200s match R3/R4: {routed:?}");
        assert!(source_copies.iter().all(|(worker, status, ..)| *worker == 0 && *status == 200));
    }
}

//! Replay: reads finished logs (plain, gzip, stdin) through a pipeline as fast as the disk
//! gives them. Owns the ordered parallel parse (chunks parsed on several threads, their
//! events forwarded in input order so every window sees what one parser would give it) and
//! the driver of `recwatch replay`. Never prints or renders: the CLI does.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::bounded;
use tokio_util::sync::CancellationToken;

use super::{OnStoreError, Pipeline, PipelineError, PipelineOptions, RunOutcome, SourceSpec};
use crate::classify::path::PathSemantics;
use crate::config::Config;
use crate::detect::event::EventBatch;
use crate::detect::scope::ScopeSettings;
use crate::detect::thread::WorkerMsg;
use crate::parse::time::{format_rfc3339, parse_clf_time_in, UtcOffset};
use crate::parse::{LineFormat, SkipReason, TimeKind, MAX_LINE_LEN};
use crate::privacy::Pseudonymizer;
use crate::report::{Gap, InputSummary, ScopeRows, GAP_SECS};
use crate::source::framing::{Chunk, ChunkSource, Frame, LineChunks};
use crate::source::mapped::{MappedChunks, WINDOW_BYTES};
use crate::source::replay::{open, Input};
use crate::store::{Notify, Store};
use crate::telemetry::Telemetry;

/// Bytes read per chunk handed to a parser thread.
const CHUNK_BYTES: usize = 1 << 20;

/// Every this many lines, a parser thread reads the line's time for the report's coverage
/// (first and last line, silences): the cost of one time parse per 64 lines.
const TIME_SAMPLE_EVERY: u64 = 64;

/// Every this many chunks (of about 1 MiB) forwarded, a marker makes the workers hand their
/// alert changes to the store: its writes overlap the reading instead of all following it.
/// (Changes are running totals kept as maxima, and path keys a union: handing them out more
/// than once changes no count.)
const HAND_OUT_EVERY_CHUNKS: u64 = 48;

/// How a replay runs (from `recwatch replay`'s arguments and the config).
pub struct ReplayOptions {
    /// The `source` its alerts carry.
    pub source_name: String,
    pub format: LineFormat,
    /// How the server that wrote the logs resolves paths.
    pub path_semantics: PathSemantics,
    /// The offset of timestamps written without a zone.
    pub timezone: UtcOffset,
    pub workers: usize,
    /// Parser threads; events still reach the workers in input order.
    pub parsers: usize,
    pub pseudonyms: Pseudonymizer,
    /// What the scope report counts as a call, and the period it covers.
    pub scope: ScopeSettings,
    /// Write the evidence ledger into the store (`replay --ledger`).
    pub ledger: bool,
}

/// What a replay read, and what its pipeline produced.
pub struct ReplayOutcome {
    /// One per input, in order.
    pub inputs: Vec<InputSummary>,
    pub run: RunOutcome,
    /// The report's rows of the clients' scopes, built while the store wrote the last alerts.
    pub rows: ScopeRows,
}

/// Reads every input in order through one pipeline into `store` and waits until every alert
/// is stored. An input that cannot be opened or read to its end is reported to `on_error`
/// as one line (the lines before a read error were processed) and the next one is read;
/// `on_bytes` is told the raw bytes read, for a progress bar. Replay alerts page nobody.
pub fn run(
    config: &Config,
    inputs: &[Input],
    options: ReplayOptions,
    store: Store,
    telemetry: Arc<Telemetry>,
    on_bytes: impl Fn(u64) + Clone + Send + 'static,
    mut on_error: impl FnMut(&str),
) -> Result<ReplayOutcome, PipelineError> {
    let sources = vec![SourceSpec {
        name: options.source_name,
        format: options.format,
        path_semantics: options.path_semantics,
        timezone: options.timezone,
    }];
    let pipeline_options = PipelineOptions {
        workers: options.workers,
        keep_scope: true,
        on_store_error: OnStoreError::Fail,
        // A replay stops when its input ends; a failing store fails it at once.
        shutdown: CancellationToken::new(),
        // A replay is read by the person who ran it: its alerts page nobody.
        notify: Notify::Skip,
        pseudonyms: options.pseudonyms,
        scope: options.scope,
        ledger: options.ledger,
    };
    let mut pipeline = Pipeline::start(config, sources, pipeline_options, store, telemetry.clone());
    let mut summaries = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = input.name();
        let on_bytes = on_bytes.clone();
        let mut summary = InputSummary::new(name.clone());
        let unparsed_before = crate::report::unparsed_lines(&telemetry);
        let skipped_before: Vec<u64> = SkipReason::ALL.iter().map(|r| telemetry.skipped(*r)).collect();
        // A quiet regular file is mapped; anything else (stdin, gzip, a file being written,
        // a file that cannot be opened: `open` says why) is read.
        let mapped = match input {
            Input::File(path) => std::fs::File::open(path)
                .ok()
                .and_then(|file| MappedChunks::new(file, MAX_LINE_LEN, WINDOW_BYTES, Box::new(on_bytes.clone()))),
            Input::Stdin => None,
        };
        let read = match mapped {
            Some(mut chunks) => {
                let read = pipeline.ingest_parallel(0, &mut chunks, options.parsers);
                Ok((read, chunks.bytes_read, false))
            }
            None => open(input, Box::new(on_bytes)).map(|opened| {
                let mut chunks = LineChunks::new(opened.reader, MAX_LINE_LEN, CHUNK_BYTES);
                let read = pipeline.ingest_parallel(0, &mut chunks, options.parsers);
                (read, chunks.bytes_read, opened.gzip)
            }),
        };
        match read {
            Err(e) => {
                on_error(&e.to_string());
                summary.error = Some(e.to_string());
            }
            Ok((read, bytes, gzip)) => {
                let (lines, result) = (read.lines, read.result);
                summary.lines = lines;
                summary.first_line = read.times.first().copied();
                summary.last_line = read.times.last().copied();
                summary.gaps = read
                    .times
                    .windows(2)
                    .filter(|w| w[1] - w[0] > GAP_SECS)
                    .map(|w| Gap { from: format_rfc3339(w[0]), to: format_rfc3339(w[1]), secs: w[1] - w[0] })
                    .collect();
                summary.bytes = bytes;
                if let Err(e) = result {
                    let what = if gzip { "gzip stream is truncated or corrupt" } else { "read error" };
                    on_error(&format!("{name}: {what}: {e} (lines before it were processed)"));
                    summary.error = Some(format!("{what}: {e}"));
                }
            }
        }
        // The parsers have published their counts once ingest_parallel returned.
        summary.skipped = crate::report::unparsed_lines(&telemetry) - unparsed_before;
        summary.skipped_by_reason = SkipReason::ALL
            .iter()
            .zip(skipped_before)
            .map(|(r, before)| (r.as_str(), telemetry.skipped(*r) - before))
            .filter(|(_, n)| *n > 0)
            .collect();
        summaries.push(summary);
    }
    let partner_names = config.classify.partner_names();
    let (run, rows) = pipeline.finish_with(|scopes| ScopeRows::build(scopes, &partner_names))?;
    Ok(ReplayOutcome { inputs: summaries, run, rows })
}

/// One chunk parsed by a parser thread, waiting to be forwarded in input order.
struct ParsedChunk {
    seq: u64,
    /// The chunk, returned for reuse.
    chunk: Chunk,
    batches: Vec<(usize, EventBatch)>,
    lines: u64,
    latest: i64,
    /// Times of sampled lines, in input order (see [`TIME_SAMPLE_EVERY`]).
    times: Vec<i64>,
}

/// What [`Pipeline::ingest_parallel`] read.
pub struct ParallelRead {
    pub lines: u64,
    /// Times of the first parseable line, of every [`TIME_SAMPLE_EVERY`]th line and of each
    /// chunk's last line, in input order (not sorted: logs may step back in time).
    pub times: Vec<i64>,
    /// On a read error, the lines before it were processed.
    pub result: std::io::Result<()>,
}

/// The time of `line` as `format` reads it (a zone-less one in `timezone`); `None` when it
/// does not parse.
fn line_time(format: &LineFormat, timezone: UtcOffset, line: &[u8]) -> Option<i64> {
    let access = format.parse(line).ok()?;
    match access.time_kind() {
        TimeKind::Clf => parse_clf_time_in(access.time, timezone),
        TimeKind::Ctime => access.unix_time().map(|t| t - i64::from(timezone.seconds())),
        _ => access.unix_time(),
    }
}

/// The times of `samples` (line index, time), plus those of every line between two samples
/// more than [`GAP_SECS`] apart: so a silence is found between two neighbouring lines, never
/// guessed from lines 64 apart (a second pass over the chunk, only where it is needed).
fn exact_around_gaps(chunk: &Chunk, mut samples: Vec<(u64, i64)>, format: &LineFormat, tz: UtcOffset) -> Vec<i64> {
    let wide: Vec<(u64, u64)> = samples
        .windows(2)
        .filter(|w| w[1].1 - w[0].1 > GAP_SECS && w[1].0 > w[0].0 + 1)
        .map(|w| (w[0].0, w[1].0))
        .collect();
    if !wide.is_empty() {
        let mut k = 0u64;
        chunk.frames(|frame| {
            if let Frame::Line(line) = frame {
                if wide.iter().any(|(a, b)| k > *a && k < *b) {
                    samples.extend(line_time(format, tz, line).map(|t| (k, t)));
                }
                k += 1;
            }
        });
        samples.sort_unstable_by_key(|(i, _)| *i);
    }
    samples.into_iter().map(|(_, t)| t).collect()
}

/// The last line of `bytes` (whole lines, each ending in `\n` but perhaps the last).
fn last_line(bytes: &[u8]) -> &[u8] {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    memchr::memrchr(b'\n', body).map_or(body, |i| &body[i + 1..])
}

impl Pipeline {
    /// Reads `chunks` (whole lines, see [`LineChunks`]) to their end, parsing them on
    /// `parsers` threads while this thread reads; each chunk's events reach the workers in
    /// input order, so every window sees exactly what a single parser would give it.
    /// Returns the lines read and the times of sampled lines; on a read error, the lines
    /// before it were processed.
    pub fn ingest_parallel(&mut self, source: u16, chunks: &mut impl ChunkSource, parsers: usize) -> ParallelRead {
        let clock = self.ingest.sources.get(usize::from(source)).map(|s| (s.format.clone(), s.timezone));
        let parsers = parsers.max(1);
        // Chunks in flight: enough to keep every parser busy while results wait for order.
        let in_flight_max = 2 * parsers;
        let (job_tx, job_rx) = bounded::<(u64, Chunk)>(in_flight_max);
        let (done_tx, done_rx) = bounded::<ParsedChunk>(in_flight_max);
        let mut lines = 0u64;
        let mut times = Vec::new();
        let mut result = Ok(());
        std::thread::scope(|scope| {
            for _ in 0..parsers {
                let (job_rx, done_tx, mut parser) = (job_rx.clone(), done_tx.clone(), self.ingest.parser());
                let clock = clock.as_ref();
                scope.spawn(move || {
                    for (seq, chunk) in job_rx {
                        let before = parser.tally.lines;
                        let mut samples: Vec<(u64, i64)> = Vec::new();
                        let mut n = 0u64;
                        chunk.frames(|frame| match frame {
                            Frame::Line(line) => {
                                // Until one line of the chunk parses, then every 64th.
                                if n % TIME_SAMPLE_EVERY == 0 || (samples.is_empty() && n < TIME_SAMPLE_EVERY) {
                                    samples.extend(clock.and_then(|(f, tz)| line_time(f, *tz, line)).map(|t| (n, t)));
                                }
                                n += 1;
                                parser.line(source, line)
                            }
                            Frame::Truncated(head) => parser.truncated(source, head),
                        });
                        if n > 0 && samples.last().is_none_or(|(i, _)| *i != n - 1) {
                            let last = clock.and_then(|(f, tz)| line_time(f, *tz, last_line(chunk.bytes())));
                            samples.extend(last.map(|t| (n - 1, t)));
                        }
                        let times = clock.map_or_else(Vec::new, |(f, tz)| exact_around_gaps(&chunk, samples, f, *tz));
                        let lines = parser.tally.lines - before;
                        parser.flush();
                        let batches = parser.collected.replace(Vec::new()).unwrap_or_default();
                        let latest = parser.latest_event_time;
                        if done_tx.send(ParsedChunk { seq, chunk, batches, lines, latest, times }).is_err() {
                            break;
                        }
                    }
                });
            }
            drop((job_rx, done_tx));
            let mut next_to_send = 0u64;
            let mut next_to_forward = 0u64;
            let mut waiting: BTreeMap<u64, ParsedChunk> = BTreeMap::new();
            let mut spare: Vec<Chunk> = Vec::new();
            let mut reading = true;
            loop {
                // Read and hand out chunks while there is room, else take a parsed one back.
                if reading && next_to_send - next_to_forward < in_flight_max as u64 {
                    let mut chunk = spare.pop().unwrap_or_default();
                    match chunks.next_chunk(&mut chunk) {
                        Ok(true) => {
                            let _ = job_tx.send((next_to_send, chunk));
                            next_to_send += 1;
                        }
                        Ok(false) => reading = false,
                        Err(e) => {
                            result = Err(e);
                            reading = false;
                        }
                    }
                    continue;
                }
                if next_to_forward == next_to_send {
                    break;
                }
                let Ok(parsed) = done_rx.recv() else { break };
                waiting.insert(parsed.seq, parsed);
                while let Some(parsed) = waiting.remove(&next_to_forward) {
                    lines += parsed.lines;
                    times.extend_from_slice(&parsed.times);
                    self.ingest.latest_event_time = self.ingest.latest_event_time.max(parsed.latest);
                    for (worker, batch) in parsed.batches {
                        if self.ingest.to_workers[worker].send(WorkerMsg::Events(batch)).is_err() {
                            self.ingest.downstream_failed = true;
                        }
                    }
                    spare.push(parsed.chunk);
                    next_to_forward += 1;
                    if next_to_forward % HAND_OUT_EVERY_CHUNKS == 0 {
                        // The workers hand their alert changes to the store now, so the store
                        // writes while the rest is read, not all at the end.
                        self.ingest.durable_marker(Instant::now());
                    }
                }
            }
            drop(job_tx);
        });
        ParallelRead { lines, times, result }
    }
}

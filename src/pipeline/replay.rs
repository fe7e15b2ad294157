//! Replay: reads finished logs (plain, gzip, stdin) through a pipeline as fast as the disk
//! gives them. Owns the ordered parallel parse (chunks parsed on several threads, their
//! events forwarded in input order so every window sees what one parser would give it) and
//! the driver of `recwatch replay`. Never prints or renders: the CLI does.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::bounded;
use tokio_util::sync::CancellationToken;

use super::{OnStoreError, Pipeline, PipelineError, PipelineOptions, RunOutcome, SourceSpec};
use crate::classify::path::PathSemantics;
use crate::config::Config;
use crate::detect::event::EventBatch;
use crate::detect::thread::WorkerMsg;
use crate::parse::time::UtcOffset;
use crate::parse::{LineFormat, MAX_LINE_LEN};
use crate::privacy::Pseudonymizer;
use crate::report::InputSummary;
use crate::source::framing::{Chunk, Frame, LineChunks};
use crate::source::replay::{open, Input};
use crate::store::{Notify, Store};
use crate::telemetry::Telemetry;

/// Bytes read per chunk handed to a parser thread.
const CHUNK_BYTES: usize = 1 << 20;

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
}

/// What a replay read, and what its pipeline produced.
pub struct ReplayOutcome {
    /// One per input, in order.
    pub inputs: Vec<InputSummary>,
    pub run: RunOutcome,
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
    };
    let mut pipeline = Pipeline::start(config, sources, pipeline_options, store, telemetry.clone());
    let mut summaries = Vec::with_capacity(inputs.len());
    for input in inputs {
        let name = input.name();
        let on_bytes = on_bytes.clone();
        let mut summary = InputSummary::new(name.clone());
        let unparsed_before = crate::report::unparsed_lines(&telemetry);
        match open(input, Box::new(on_bytes)) {
            Err(e) => {
                on_error(&e.to_string());
                summary.error = Some(e.to_string());
            }
            Ok(opened) => {
                let mut chunks = LineChunks::new(opened.reader, MAX_LINE_LEN, CHUNK_BYTES);
                let (lines, result) = pipeline.ingest_parallel(0, &mut chunks, options.parsers);
                summary.lines = lines;
                summary.bytes = chunks.bytes_read;
                if let Err(e) = result {
                    let what = if opened.gzip { "gzip stream is truncated or corrupt" } else { "read error" };
                    on_error(&format!("{name}: {what}: {e} (lines before it were processed)"));
                    summary.error = Some(format!("{what}: {e}"));
                }
            }
        }
        // The parsers have published their counts once ingest_parallel returned.
        summary.skipped = crate::report::unparsed_lines(&telemetry) - unparsed_before;
        summaries.push(summary);
    }
    Ok(ReplayOutcome { inputs: summaries, run: pipeline.finish()? })
}

/// One chunk parsed by a parser thread, waiting to be forwarded in input order.
struct ParsedChunk {
    seq: u64,
    /// The chunk, returned for reuse.
    chunk: Chunk,
    batches: Vec<(usize, EventBatch)>,
    lines: u64,
    latest: i64,
}

impl Pipeline {
    /// Reads `chunks` (whole lines, see [`LineChunks`]) to their end, parsing them on
    /// `parsers` threads while this thread reads; each chunk's events reach the workers in
    /// input order, so every window sees exactly what a single parser would give it.
    /// Returns the lines read; on a read error, the lines before it were processed.
    pub fn ingest_parallel<R: std::io::Read>(
        &mut self,
        source: u16,
        chunks: &mut LineChunks<R>,
        parsers: usize,
    ) -> (u64, std::io::Result<()>) {
        let parsers = parsers.max(1);
        // Chunks in flight: enough to keep every parser busy while results wait for order.
        let in_flight_max = 2 * parsers;
        let (job_tx, job_rx) = bounded::<(u64, Chunk)>(in_flight_max);
        let (done_tx, done_rx) = bounded::<ParsedChunk>(in_flight_max);
        let mut lines = 0u64;
        let mut result = Ok(());
        std::thread::scope(|scope| {
            for _ in 0..parsers {
                let (job_rx, done_tx, mut parser) = (job_rx.clone(), done_tx.clone(), self.ingest.parser());
                scope.spawn(move || {
                    for (seq, chunk) in job_rx {
                        let before = parser.tally.lines;
                        chunk.frames(|frame| match frame {
                            Frame::Line(line) => parser.line(source, line),
                            Frame::Truncated(head) => parser.truncated(source, head),
                        });
                        let lines = parser.tally.lines - before;
                        parser.flush();
                        let batches = parser.collected.replace(Vec::new()).unwrap_or_default();
                        let latest = parser.latest_event_time;
                        if done_tx.send(ParsedChunk { seq, chunk, batches, lines, latest }).is_err() {
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
                    self.ingest.latest_event_time = self.ingest.latest_event_time.max(parsed.latest);
                    for (worker, batch) in parsed.batches {
                        if self.ingest.to_workers[worker].send(WorkerMsg::Events(batch)).is_err() {
                            self.ingest.downstream_failed = true;
                        }
                    }
                    spare.push(parsed.chunk);
                    next_to_forward += 1;
                }
            }
            drop(job_tx);
        });
        (lines, result)
    }
}

//! recwatch: watches web-server and storage access logs and raises durable alerts when
//! unknown clients fetch call-recording audio.
//!
//! # Layout (the folders are the data flow)
//! - [`source`]: reads raw bytes (replay files, `.gz`, stdin, followed files, Kafka topics)
//!   and frames them into complete lines.
//! - [`parse`]: tokenizes one access-log line into borrowed fields; never classifies.
//! - [`bytes16`]: sixteen bytes at a time, for the scans every line pays for (the vector unit,
//!   or a byte loop with the same answers).
//! - [`classify`]: is the path a sensitive resource ([`classify::path`]), what kind of client is
//!   this ([`classify::client`]).
//! - [`detect`]: data-driven rules over per-client sliding windows, owned by worker threads
//!   ([`detect::thread`]); turns events into [`detect::alert::Alert`]s.
//! - [`store`]: the only module that talks to sled: alerts, their time index, checkpoints,
//!   the notifier outbox and the evidence ledger ([`store::ledger`]: per client and resource,
//!   exactly once by source position); [`store::writer`] is the single thread that writes
//!   alert and ledger deltas with the checkpoint once every worker has passed a barrier.
//! - [`alerting`]: delivers stored alerts to Alertmanager and signed webhooks from the durable
//!   outbox, with retries; what a receiver is told when.
//! - [`pipeline`]: wires source → parse → classify → detect → store with bounded queues;
//!   [`pipeline::Ingest`] is the per-line path, [`pipeline::replay`] the ordered parallel
//!   replay of finished logs.
//! - [`privacy`]: personnummer and phone numbers in paths → keyed pseudonyms (`pnr-…`, `tel-…`).
//! - [`report`]: the scope report (calls, files, clients, Art. 33) as JSON, CSV, Markdown, HTML.
//! - [`escape`]: the one escaping rule for every output of log-derived text (terminal, log,
//!   Markdown, CSV, JSON).
//! - [`daemon`]: `recwatch run`: runtime, signals and systemd notify; the tail loop and its
//!   checkpoints, the Kafka consumer loops, reload and the retention sweep.
//! - [`config`]: raw TOML → validated, compiled [`config::Config`], made of the settings type
//!   each stage defines (`StoreSettings`, `KafkaSettings`, `AlertingSettings`, …); errors say
//!   file:line: key. Only the wiring (`pipeline`, `daemon`, the CLI) imports it.
//! - [`telemetry`]: lock-free counters every stage adds to; its events count and log in one call.
//! - [`http`]: `/metrics`, health and readiness probes, and the token-protected alerts API.
#![deny(unsafe_code)]

pub mod alerting;
pub mod bytes16;
pub mod classify;
pub mod config;
pub mod daemon;
pub mod detect;
pub mod escape;
pub mod http;
pub mod parse;
pub mod pipeline;
pub mod privacy;
pub mod report;
pub mod source;
pub mod store;
pub mod telemetry;

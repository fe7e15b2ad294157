//! Sources: where raw log bytes come from, framed into complete lines.
//! Owns input handles, line framing and the settings of the configured sources
//! ([`SourceSettings`], [`TailSettings`]). Never parses a line: emits raw line bytes.

pub mod framing;
pub mod kafka;
pub mod mapped;
pub mod replay;
pub mod tail;

use std::time::Duration;

use crate::classify::path::PathSemantics;
use crate::parse::time::UtcOffset;
use crate::parse::LineFormat;

/// One configured log source (`[[source]]`).
#[derive(Clone, Debug, PartialEq)]
pub struct SourceSettings {
    /// What alerts show as their source (Kafka envelopes that name a host or file override it).
    pub name: String,
    /// Format of the log lines (for Kafka: of each message's line): a named one or a plan
    /// compiled from the operator's `log_format`/`LogFormat` string.
    pub format: LineFormat,
    /// How the server that wrote the log resolves request paths to files.
    pub path_semantics: PathSemantics,
    /// Offset of timestamps the log writes without a zone.
    pub timezone: UtcOffset,
    pub input: SourceInput,
}

/// Where a source's lines come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceInput {
    /// A path or a glob, followed across rotation.
    File {
        path: String,
    },
    Kafka(kafka::KafkaSettings),
}

impl SourceSettings {
    /// The followed path or glob of a file source.
    pub fn path(&self) -> Option<&str> {
        match &self.input {
            SourceInput::File { path } => Some(path),
            SourceInput::Kafka(_) => None,
        }
    }
}

/// How file sources are followed (`[tail]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TailSettings {
    /// Stat-scan interval: the safety net under inotify, the only mechanism in poll mode.
    pub poll_interval: Duration,
    /// false = pure-poll mode, for NFS/SMB where inotify sees nothing.
    pub inotify: bool,
    /// How long a rotated-away or deleted file stays open after it stopped growing; never 0
    /// (a rotated file would be closed before its last lines are read).
    pub rotated_drain: Duration,
}

//! Telemetry as events: one method per thing that happened, which bumps its counter AND
//! writes its log line, so the two cannot drift apart (Vector's `internal_events` is the
//! model). Owns the wording and the fields of those log lines, in one voice
//! (`source`, `path`, `error`, then what is particular). Never decides anything: callers
//! call an event after they acted. Label values stay closed: an event may log a path or an
//! error, it never makes one a label.

use std::fmt::Display;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;

use tracing::{debug, error, info, warn};

use super::{KafkaTelemetry, ReceiverCounters, Telemetry};

/// What the tailer tried when an I/O error stopped it; decides the log line of
/// [`Telemetry::file_read_failed`]. All count as `read_errors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileOp {
    /// Listing the directory of a checkpointed file, to find its rotated siblings.
    ListDirectory,
    /// Opening a candidate log file.
    Open,
    /// Stat of a candidate log file.
    Stat,
    /// Reading the head of a candidate log file (its fingerprint).
    ReadHead,
    /// Stat of a file already followed.
    StatFollowed,
    /// Reading the head of a file already followed (its fingerprint).
    ReadFollowed,
    /// Reading lines of a followed file.
    Read,
    /// Reading the incomplete last line of a rotated file.
    ReadLastLine,
}

impl FileOp {
    pub const ALL: [FileOp; 8] = [
        FileOp::ListDirectory,
        FileOp::Open,
        FileOp::Stat,
        FileOp::ReadHead,
        FileOp::StatFollowed,
        FileOp::ReadFollowed,
        FileOp::Read,
        FileOp::ReadLastLine,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FileOp::ListDirectory => "list_directory",
            FileOp::Open => "open",
            FileOp::Stat => "stat",
            FileOp::ReadHead => "read_head",
            FileOp::StatFollowed => "stat_followed",
            FileOp::ReadFollowed => "read_followed",
            FileOp::Read => "read",
            FileOp::ReadLastLine => "read_last_line",
        }
    }

    fn message(self) -> &'static str {
        match self {
            FileOp::ListDirectory => "cannot list the directory of a checkpointed file",
            FileOp::Open => "cannot open log file",
            FileOp::Stat => "cannot stat log file",
            FileOp::ReadHead => "cannot read log file",
            FileOp::StatFollowed => "cannot stat followed file",
            FileOp::ReadFollowed => "cannot read followed file",
            FileOp::Read => "read failed",
            FileOp::ReadLastLine => "cannot read the last line of a rotated file",
        }
    }
}

/// Why the tailer fell back to a full stat scan; decides the log line of
/// [`Telemetry::rescan`]. All count as `rescans`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RescanReason {
    /// The inotify watcher's channel closed: polling only from now on.
    WatcherStopped,
    /// inotify reported an overflow or an error.
    QueueOverflow,
    /// A watched directory was removed or renamed (seen in an event).
    WatchedDirectoryRemoved,
    /// A watched directory vanished or was replaced (seen by a stat).
    WatchedDirectoryVanished,
}

impl RescanReason {
    pub const ALL: [RescanReason; 4] = [
        RescanReason::WatcherStopped,
        RescanReason::QueueOverflow,
        RescanReason::WatchedDirectoryRemoved,
        RescanReason::WatchedDirectoryVanished,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RescanReason::WatcherStopped => "watcher_stopped",
            RescanReason::QueueOverflow => "queue_overflow",
            RescanReason::WatchedDirectoryRemoved => "watched_directory_removed",
            RescanReason::WatchedDirectoryVanished => "watched_directory_vanished",
        }
    }
}

// ---- sources: files
impl Telemetry {
    /// A followed file left its path (renamed or deleted): it is drained, then released.
    pub fn file_rotated(&self, source: u16, path: &Path) {
        self.rotations.fetch_add(1, Relaxed);
        info!(source, path = %path.display(), "file rotated or deleted: draining it");
    }

    /// A file found away from its pattern path (a rotated generation, by its checkpoint) is
    /// followed again to drain it.
    pub fn rotated_file_followed(&self, source: u16, path: &Path, offset: u64) {
        self.rotations.fetch_add(1, Relaxed);
        debug!(source, path = %path.display(), offset, "following a rotated file to drain it");
    }

    /// A followed file shrank or changed its head. `copy` is where its old generation was
    /// found (copytruncate), so nothing is lost; without one, unread lines are lost.
    pub fn file_truncated(&self, source: u16, path: &Path, offset: u64, scanned: u64, copy: Option<&Path>) {
        self.truncations.fetch_add(1, Relaxed);
        match copy {
            Some(copy) => info!(source, path = %path.display(), copy = %copy.display(), offset,
                "file truncated (copytruncate): reading the rest of the old generation from its copy"),
            None => warn!(source, path = %path.display(), offset, scanned,
                "file truncated or rewritten: reading the new generation from 0; unread lines of the old one are lost"),
        }
    }

    /// An I/O error of the tailer; the file is tried again at the next scan.
    pub fn file_read_failed(&self, source: u16, path: &Path, op: FileOp, error: &dyn Display) {
        self.read_errors.fetch_add(1, Relaxed);
        warn!(source, path = %path.display(), op = op.as_str(), error = %error, "{}", op.message());
    }

    /// The incomplete last line of a rotated file was handed on, flagged as partial.
    pub fn partial_line_flushed(&self, source: u16, path: &Path, bytes: usize) {
        self.partial_lines.fetch_add(1, Relaxed);
        info!(source, path = %path.display(), bytes, "flushed an incomplete last line of a rotated file");
    }

    /// The tailer falls back to a full stat scan.
    pub fn rescan(&self, reason: RescanReason) {
        self.rescans.fetch_add(1, Relaxed);
        let reason_label = reason.as_str();
        match reason {
            RescanReason::WatcherStopped => warn!(reason = reason_label, "inotify watcher stopped: polling only"),
            RescanReason::QueueOverflow => {
                warn!(reason = reason_label, "inotify asked for a rescan (queue overflow or error): full scan now")
            }
            RescanReason::WatchedDirectoryRemoved => {
                info!(reason = reason_label, "a watched directory was removed or renamed: rescanning")
            }
            RescanReason::WatchedDirectoryVanished => {
                info!(reason = reason_label, "a watched directory vanished or was replaced: rescanning")
            }
        }
    }

    /// inotify cannot be set up at all: the tailer polls only.
    pub fn inotify_unavailable(&self, error: &dyn Display) {
        self.rescans.fetch_add(1, Relaxed);
        warn!(error = %error, "inotify unavailable: polling only");
    }

    /// Directories could not be watched (inotify watch limit?): the stat scan covers them.
    /// Called once when watching starts failing, with the first directory that failed.
    pub fn directories_unwatchable(&self, first: &Path, error: &dyn Display, directories: usize) {
        self.rescans.fetch_add(1, Relaxed);
        warn!(dir = %first.display(), error = %error, directories,
            "cannot watch directory (inotify watch limit?): relying on the stat scan");
    }
}

// ---- store, retention, reload
impl Telemetry {
    /// A durable write of alerts and checkpoints failed. `retrying`: the writer pauses reading
    /// and tries again; otherwise the error ends the pipeline (and is reported by its caller).
    pub fn store_write_failed(&self, error: &dyn Display, retrying: bool) {
        self.store_errors.fetch_add(1, Relaxed);
        if retrying {
            error!(error = %error, "alert store write failed; reading pauses, retrying");
        } else {
            debug!(error = %error, "alert store write failed; the pipeline stops");
        }
    }

    /// The retention sweep removed `removed` alerts older than `retention_days`.
    pub fn alerts_expired(&self, removed: usize, retention_days: u32) {
        self.alerts_expired.fetch_add(removed as u64, Relaxed);
        info!(removed, retention_days, "retention sweep removed expired alerts");
    }

    /// The retention sweep could not remove expired alerts.
    pub fn retention_sweep_failed(&self, error: &dyn Display) {
        self.store_errors.fetch_add(1, Relaxed);
        warn!(error = %error, "retention sweep failed; retried in an hour");
    }

    /// An unreadable store was moved aside to `moved_to` and a fresh one started.
    pub fn store_quarantined(&self, error: &dyn Display, moved_to: &Path) {
        self.store_quarantines.fetch_add(1, Relaxed);
        error!(error = %error, moved_to = %moved_to.display(),
            "alert store unreadable: quarantined it and started a fresh one; sources are read again from the start");
    }

    /// A reload was refused (bad config, unreadable key): the running configuration stays.
    pub fn config_reload_failed(&self, error: &dyn Display) {
        self.config_reload_failures.fetch_add(1, Relaxed);
        error!(error = %error, "reload failed: keeping the running configuration");
    }

    /// A reload that kept sources and pipelines running; `receivers_restarted` says whether
    /// the receivers changed, `rules_swapped` whether rules, sensitive paths or networks were
    /// swapped into the running pipelines.
    pub fn config_reloaded_in_place(&self, receivers_restarted: bool, rules_swapped: bool) {
        self.config_reloads.fetch_add(1, Relaxed);
        let changes = match (rules_swapped, receivers_restarted) {
            (true, _) => "rules, sensitive paths and networks swapped into the running pipelines; sources kept",
            (false, true) => "receivers restarted; sources and pipelines kept",
            (false, false) => "nothing changed",
        };
        info!(changes, "configuration reloaded");
    }

    /// A reload that restarted the pipeline with `rules` rules and `sources` sources.
    pub fn config_reloaded(&self, rules: usize, sources: usize) {
        self.config_reloads.fetch_add(1, Relaxed);
        info!(rules, sources, "configuration reloaded");
    }
}

// ---- Kafka
impl KafkaTelemetry {
    /// The client reported an error (broker down, transport); librdkafka retries it.
    pub fn client_error(&self, error: &dyn Display, reason: &str) {
        self.consumer_errors.fetch_add(1, Relaxed);
        warn!(source = %self.source, error = %error, "Kafka client error (retried): {reason}");
    }

    /// A poll returned an error instead of a message; polling goes on.
    pub fn consumer_error(&self, error: &dyn Display) {
        self.consumer_errors.fetch_add(1, Relaxed);
        warn!(source = %self.source, error = %error, "Kafka consumer error (retried)");
    }

    /// An asynchronous offset commit failed as a whole (`Some(error)`) or for some partitions
    /// (`None`); the stored offsets are committed again.
    pub fn commit_failed(&self, error: Option<&dyn Display>) {
        self.commit_failures.fetch_add(1, Relaxed);
        match error {
            Some(error) => {
                warn!(source = %self.source, error = %error, "offset commit failed; the stored offsets are committed again")
            }
            None => warn!(source = %self.source, "offset commit failed for some partitions; retried"),
        }
    }

    /// A synchronous commit failed; its caller says what that means where it happened.
    pub fn commit_sync_failed(&self, error: &dyn Display) {
        self.commit_failures.fetch_add(1, Relaxed);
        debug!(source = %self.source, error = %error, "synchronous offset commit failed");
    }

    /// The client refused to store an offset (the partition is no longer assigned).
    pub fn offset_not_stored(&self, topic: &str, partition: i32, error: &dyn Display) {
        self.offset_store_errors.fetch_add(1, Relaxed);
        debug!(source = %self.source, topic, partition, error = %error, "offset not stored (partition no longer assigned)");
    }

    /// A rebalance assigned `partitions` to this consumer.
    pub fn partitions_assigned(&self, partitions: &dyn std::fmt::Debug) {
        self.rebalance_assigns.fetch_add(1, Relaxed);
        info!(source = %self.source, partitions = ?partitions, "partitions assigned");
    }

    /// A rebalance took `partitions` away.
    pub fn partitions_revoked(&self, partitions: &dyn std::fmt::Debug) {
        self.rebalance_revokes.fetch_add(1, Relaxed);
        info!(source = %self.source, partitions = ?partitions, "partitions revoked");
    }

    /// `messages` of revoked partitions were not durable yet: their next owner reads them again.
    pub fn dropped_in_flight(&self, messages: u64) {
        self.dropped_in_flight.fetch_add(messages, Relaxed);
        warn!(source = %self.source, messages,
            "revoked partitions had work not yet durable: their next owner reads it again");
    }
}

// ---- alerting
impl ReceiverCounters {
    /// `alerts` notifications are attempted again after an earlier failure.
    pub fn notifications_retried(&self, alerts: u64) {
        self.retries.fetch_add(alerts, Relaxed);
    }

    /// The receiver accepted `alerts` notifications.
    pub fn notifications_sent(&self, alerts: u64) {
        self.sent.fetch_add(alerts, Relaxed);
    }

    /// The receiver refused `alerts` notifications for good: they are not retried.
    pub fn notifications_refused(&self, receiver: &str, alerts: u64, reason: &dyn Display) {
        self.failed.fetch_add(alerts, Relaxed);
        error!(receiver, alerts, reason = %reason, "receiver refused the notification; it is not retried");
    }

    /// An attempt to deliver `alerts` notifications failed; they are retried in `retry_in_ms`.
    /// `first`: the first failure of at least one of them (later ones log at debug).
    pub fn notifications_failed(
        &self,
        receiver: &str,
        alerts: u64,
        error: &dyn Display,
        retry_in_ms: i64,
        first: bool,
    ) {
        self.failed.fetch_add(alerts, Relaxed);
        if first {
            warn!(receiver, alerts, error = %error, retry_in_ms, "notification failed; retrying");
        } else {
            debug!(receiver, alerts, error = %error, retry_in_ms, "notification failed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;

    use super::*;

    #[test]
    fn a_file_event_counts_once_per_call() {
        let t = Telemetry::default();
        let error = io::Error::from(io::ErrorKind::PermissionDenied);
        for (i, op) in FileOp::ALL.into_iter().enumerate() {
            t.file_read_failed(i as u16, Path::new("/var/log/nginx/access.log"), op, &error);
        }
        t.file_rotated(0, Path::new("/var/log/nginx/access.log"));
        t.file_truncated(0, Path::new("/var/log/nginx/access.log"), 10, 20, None);
        t.partial_line_flushed(0, Path::new("/var/log/nginx/access.log.1"), 3);
        assert_eq!(t.read_errors.load(Relaxed), FileOp::ALL.len() as u64);
        assert_eq!((t.rotations.load(Relaxed), t.truncations.load(Relaxed)), (1, 1));
        assert_eq!(t.partial_lines.load(Relaxed), 1);
    }

    #[test]
    fn every_rescan_reason_counts_one_rescan() {
        let t = Telemetry::default();
        for reason in RescanReason::ALL {
            t.rescan(reason);
        }
        t.inotify_unavailable(&"no inotify instances left");
        t.directories_unwatchable(Path::new("/var/log/a"), &"watch limit", 3);
        assert_eq!(t.rescans.load(Relaxed), RescanReason::ALL.len() as u64 + 2);
    }

    #[test]
    fn kafka_and_receiver_events_count_what_they_say() {
        let t = Telemetry::default();
        let k = t.kafka_source("clicks");
        k.commit_failed(Some(&"broker down"));
        k.commit_failed(None);
        k.commit_sync_failed(&"broker down");
        k.dropped_in_flight(5);
        k.partitions_assigned(&[("calls", 0)]);
        k.partitions_revoked(&[("calls", 0)]);
        assert_eq!(k.commit_failures.load(Relaxed), 3);
        assert_eq!(k.dropped_in_flight.load(Relaxed), 5);
        assert_eq!((k.rebalance_assigns.load(Relaxed), k.rebalance_revokes.load(Relaxed)), (1, 1));

        let r = t.receiver("hook");
        r.notifications_sent(2);
        r.notifications_refused("hook", 3, &"HTTP 422");
        r.notifications_failed("hook", 4, &"HTTP 503", 1000, true);
        r.notifications_retried(4);
        assert_eq!((r.sent.load(Relaxed), r.failed.load(Relaxed), r.retries.load(Relaxed)), (2, 7, 4));
    }

    #[test]
    fn reload_and_store_events_count_what_they_say() {
        let t = Telemetry::default();
        t.config_reloaded_in_place(false, false);
        t.config_reloaded(3, 2);
        t.config_reload_failed(&"recwatch.toml:3: rules[0].name: missing");
        t.store_write_failed(&"disk full", true);
        t.retention_sweep_failed(&"disk full");
        t.alerts_expired(12, 30);
        t.store_quarantined(&"corrupt", Path::new("/var/lib/recwatch/db.corrupt-1"));
        assert_eq!((t.config_reloads.load(Relaxed), t.config_reload_failures.load(Relaxed)), (2, 1));
        assert_eq!(t.store_errors.load(Relaxed), 2);
        assert_eq!(t.alerts_expired.load(Relaxed), 12);
        assert_eq!(t.store_quarantines.load(Relaxed), 1);
    }
}

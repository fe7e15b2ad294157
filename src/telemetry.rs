//! Lock-free counters every stage adds to; the one place that knows what is counted.
//! Owns the counter set. Never blocks and never formats on the hot path: stages keep local
//! tallies and publish them here once per chunk or batch.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::parse::SkipReason;

#[derive(Default)]
pub struct Telemetry {
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub lines_parsed: AtomicU64,
    /// Indexed like [`SkipReason::ALL`].
    pub lines_skipped: [AtomicU64; SkipReason::ALL.len()],
    /// Requests to any path under a sensitive prefix.
    pub sensitive_requests: AtomicU64,
    /// Requests classified as recordings (prefix and extension).
    pub recording_requests: AtomicU64,
    pub alerts_opened: AtomicU64,
    pub alert_writes: AtomicU64,
    pub groups_evicted: AtomicU64,
}

/// A stage's local tally of line outcomes, published with one atomic add per field.
#[derive(Clone, Copy, Default, Debug)]
pub struct LineTally {
    pub lines: u64,
    pub bytes: u64,
    pub parsed: u64,
    pub skipped: [u64; SkipReason::ALL.len()],
    pub sensitive: u64,
    pub recordings: u64,
}

impl LineTally {
    pub fn skip(&mut self, reason: SkipReason) {
        self.skipped[reason as usize] += 1;
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
        self.sensitive_requests.fetch_add(t.sensitive, Relaxed);
        self.recording_requests.fetch_add(t.recordings, Relaxed);
        *t = LineTally::default();
    }

    pub fn skipped(&self, reason: SkipReason) -> u64 {
        self.lines_skipped[reason as usize].load(Relaxed)
    }
}

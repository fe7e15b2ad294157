//! Exact sliding event-time window over one group's matching events for one rule.
//! Owns the entries of `(t - window, t]`. Never looks at wall-clock time.

use std::collections::{HashMap, VecDeque};

use super::rule::Aggregate;

#[derive(Clone, Copy)]
struct Entry {
    time: i64,
    path_key: u128,
    body_bytes: u64,
}

/// Entries are evicted from the front while `front.time <= now - window`, so with
/// non-decreasing time the window is exactly `(now - window, now]`.
pub struct Window {
    entries: VecDeque<Entry>,
    /// Only for distinct counting: occurrences of each path key in the window.
    path_counts: Option<HashMap<u128, u32, ahash::RandomState>>,
    /// Exact: at most [`Window::MAX_ENTRIES`] values below 2^64 each, so it cannot overflow
    /// (logged sizes are attacker-influenced: `%b` may be u64::MAX on every line).
    sum_bytes: u128,
}

impl Window {
    /// Per-window cap on entries: a flood beyond this keeps only the newest, so memory stays
    /// bounded; every aggregate is then a lower bound, far above any sane threshold.
    pub const MAX_ENTRIES: usize = 65_536;

    pub fn new(aggregate: Aggregate) -> Window {
        Window {
            entries: VecDeque::new(),
            path_counts: (aggregate == Aggregate::DistinctPaths).then(HashMap::default),
            sum_bytes: 0,
        }
    }

    /// Adds one event at `time` and evicts what fell out of `(time - window_secs, time]`.
    pub fn push(&mut self, time: i64, window_secs: i64, path_key: u128, body_bytes: u64) {
        self.evict_through(time - window_secs);
        if self.entries.len() >= Self::MAX_ENTRIES {
            self.pop_front();
        }
        self.entries.push_back(Entry { time, path_key, body_bytes });
        self.sum_bytes += u128::from(body_bytes);
        if let Some(counts) = &mut self.path_counts {
            *counts.entry(path_key).or_insert(0) += 1;
        }
    }

    fn evict_through(&mut self, cutoff: i64) {
        while self.entries.front().is_some_and(|e| e.time <= cutoff) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let Some(e) = self.entries.pop_front() else { return };
        self.sum_bytes -= u128::from(e.body_bytes);
        if let Some(counts) = &mut self.path_counts {
            if let Some(n) = counts.get_mut(&e.path_key) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&e.path_key);
                }
            }
        }
    }

    pub fn value(&self, aggregate: Aggregate) -> u64 {
        match aggregate {
            Aggregate::None | Aggregate::Count => self.entries.len() as u64,
            Aggregate::DistinctPaths => self.path_counts.as_ref().map_or(0, |c| c.len() as u64),
            Aggregate::SumBytes => self.sum_bytes(),
        }
    }

    pub fn oldest_time(&self) -> Option<i64> {
        self.entries.front().map(|e| e.time)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn path_keys(&self) -> impl Iterator<Item = u128> + '_ {
        self.entries.iter().map(|e| e.path_key)
    }

    /// The bytes in the window, saturating at u64::MAX.
    pub fn sum_bytes(&self) -> u64 {
        u64::try_from(self.sum_bytes).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_half_open_on_the_left() {
        let mut w = Window::new(Aggregate::DistinctPaths);
        w.push(100, 60, 1, 10);
        w.push(159, 60, 2, 10);
        assert_eq!(w.value(Aggregate::DistinctPaths), 2);
        // at t=160 the entry at 100 is exactly 60 s old: outside (t-60, t]
        w.push(160, 60, 2, 10);
        assert_eq!(w.value(Aggregate::DistinctPaths), 1);
        assert_eq!(w.value(Aggregate::Count), 2);
        assert_eq!(w.sum_bytes(), 20);
        assert_eq!(w.oldest_time(), Some(159));
    }

    #[test]
    fn repeats_count_once_for_distinct() {
        let mut w = Window::new(Aggregate::DistinctPaths);
        for i in 0..50 {
            w.push(1000 + i, 60, (i % 5) as u128, 1);
        }
        assert_eq!(w.value(Aggregate::DistinctPaths), 5);
        assert_eq!(w.value(Aggregate::Count), 50);
    }

    #[test]
    fn flood_is_capped() {
        let mut w = Window::new(Aggregate::Count);
        for i in 0..(Window::MAX_ENTRIES as u128 + 10) {
            w.push(5, 60, i, 0);
        }
        assert_eq!(w.len(), Window::MAX_ENTRIES);
    }
}

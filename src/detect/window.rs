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
    /// Counts distinct paths.
    distinct: bool,
    /// Only for distinct counting, and only once the window holds more than
    /// [`Window::SMALL`] entries (below, the entries are scanned): occurrences of each path
    /// key in the window. Most clients fetch once; a map per window was most of their memory
    /// (boxed: an absent map costs 8 bytes, not 64).
    #[allow(clippy::box_collection)]
    path_counts: Option<Box<HashMap<u128, u32, ahash::RandomState>>>,
    /// The bytes of the entries, exact: at most [`Window::MAX_ENTRIES`] (2^16) values below
    /// 2^64 each, so below 2^80 (logged sizes are attacker-influenced: `%b` may be u64::MAX on
    /// every line). In two words, not a `u128`: a window takes 56 bytes, not 64 (issue 13).
    sum_low: u64,
    sum_high: u16,
}

impl Window {
    /// Per-window cap on entries: a flood beyond this keeps only the newest, so memory stays
    /// bounded; every aggregate is then a lower bound, far above any sane threshold.
    pub const MAX_ENTRIES: usize = 65_536;
    /// Up to this many entries, distinct paths are counted by scanning them.
    const SMALL: usize = 8;

    pub fn new(aggregate: Aggregate) -> Window {
        Window {
            entries: VecDeque::new(),
            distinct: aggregate == Aggregate::DistinctPaths,
            path_counts: None,
            sum_low: 0,
            sum_high: 0,
        }
    }

    /// Adds one event at `time` and evicts what fell out of `(time - window_secs, time]`.
    pub fn push(&mut self, time: i64, window_secs: i64, path_key: u128, body_bytes: u64) {
        self.evict_through(time - window_secs);
        if self.entries.len() >= Self::MAX_ENTRIES {
            self.pop_front();
        }
        if self.entries.capacity() == 0 {
            // Room for one entry, not the four a first push makes: most windows keep one.
            self.entries.reserve_exact(1);
        }
        self.entries.push_back(Entry { time, path_key, body_bytes });
        let (low, carry) = self.sum_low.overflowing_add(body_bytes);
        (self.sum_low, self.sum_high) = (low, self.sum_high + u16::from(carry));
        if let Some(counts) = &mut self.path_counts {
            *counts.entry(path_key).or_insert(0) += 1;
        } else if self.distinct && self.entries.len() > Self::SMALL {
            let mut counts: Box<HashMap<u128, u32, ahash::RandomState>> = Box::default();
            for e in &self.entries {
                *counts.entry(e.path_key).or_insert(0) += 1;
            }
            self.path_counts = Some(counts);
        }
    }

    fn evict_through(&mut self, cutoff: i64) {
        while self.entries.front().is_some_and(|e| e.time <= cutoff) {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        let Some(e) = self.entries.pop_front() else { return };
        let (low, borrow) = self.sum_low.overflowing_sub(e.body_bytes);
        (self.sum_low, self.sum_high) = (low, self.sum_high - u16::from(borrow));
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
            Aggregate::DistinctPaths => match &self.path_counts {
                Some(counts) => counts.len() as u64,
                // At most SMALL entries: the first occurrence of each key counts.
                None => {
                    let keys = || self.entries.iter().map(|e| e.path_key);
                    keys().enumerate().filter(|&(i, k)| !keys().take(i).any(|p| p == k)).count() as u64
                }
            },
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
        if self.sum_high > 0 {
            u64::MAX
        } else {
            self.sum_low
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

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

    /// The distinct count is the same whether the window scans its few entries or keeps a map
    /// (it switches past SMALL entries and keeps the map as entries leave).
    #[test]
    fn distinct_counts_agree_below_and_above_the_small_window_size() {
        let mut w = Window::new(Aggregate::DistinctPaths);
        let mut t = 0;
        for round in 0..3u128 {
            for i in 0..(Window::SMALL as u128 + 4) {
                t += 1;
                w.push(t, 10, (i + round) % 6, 1);
                let truth: HashSet<u128> = w.path_keys().collect();
                assert_eq!(w.value(Aggregate::DistinctPaths), truth.len() as u64, "at t={t}");
            }
        }
        assert!(w.path_counts.is_some());
    }

    /// Sizes near u64::MAX (a `%b` an attacker controls) carry into the high word and back:
    /// the sum saturates while they are in the window and is exact again once they left.
    #[test]
    fn byte_sums_of_huge_sizes_saturate_then_come_back_exact() {
        let mut w = Window::new(Aggregate::SumBytes);
        for t in 0..3 {
            w.push(t, 10, 1, u64::MAX);
        }
        assert_eq!(w.sum_bytes(), u64::MAX);
        w.push(5, 10, 1, 7);
        assert_eq!(w.sum_bytes(), u64::MAX);
        w.push(12, 10, 1, 5);
        assert_eq!(w.sum_bytes(), 12, "the three huge sizes left the window");
        assert_eq!(std::mem::size_of::<Window>(), 56);
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

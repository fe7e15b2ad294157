//! Detection: data-driven rules evaluated over per-group sliding windows.
//! Owns rule definitions, per-client/per-source state, alert episodes and the engine's
//! settings ([`EngineSettings`]). State is owned by one worker thread each (events are routed
//! by group hash); nothing here locks or does I/O.

pub mod alert;
pub mod event;
pub mod evidence;
pub mod rule;
pub mod scope;
pub mod thread;
pub mod window;
pub mod worker;

/// How detection runs (`[engine]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineSettings {
    /// Worker threads, at least 1 (0 in the file is resolved to the number of cores).
    pub workers: usize,
    /// Per-worker cap on tracked groups; beyond it the least recently seen are evicted.
    pub max_clients_per_worker: usize,
    /// Groups idle longer than this (event time) are evicted; positive.
    pub client_idle_secs: i64,
    /// An event time more than this ahead of the wall clock is not trusted: it moves no
    /// clock (see [`event::Event::future`]); not negative.
    pub future_tolerance_secs: i64,
}

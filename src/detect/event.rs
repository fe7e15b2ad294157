//! The unit of work that crosses from the parsing thread to a detection worker.
//! Owns the batch layout (fixed-size events plus one byte arena, recycled). Never holds a
//! reference into the source's read buffer: bytes a rule or alert needs are copied into the arena.

use std::ops::Range;

use crate::classify::client::{ClientClass, ClientId};
use crate::classify::path::PathClass;
use crate::parse::Transport;

/// One request to a sensitive resource, classified.
#[derive(Clone, Debug)]
pub struct Event {
    pub client: ClientId,
    /// A host-name client's name as logged, in the batch arena; empty for an address.
    pub client_name: Range<u32>,
    pub client_class: ClientClass,
    /// Event time from the log line, Unix seconds (windows use event time, never wall time).
    /// For a [`Event::future`] event, the reading side's latest trusted time instead.
    pub time: i64,
    /// The logged time was more than the tolerance ahead of the wall clock (a line dated 2100):
    /// the event is still detected, but moves no clock. Workers place it at the group's own
    /// latest time (else at `time`), and never let it advance eviction or an alert's times.
    pub future: bool,
    pub status: u16,
    pub body_bytes: u64,
    pub path_class: PathClass,
    pub user_present: bool,
    /// Plain or TLS, when the line's format says (R4).
    pub transport: Transport,
    /// Index of the source (file, topic) the line came from.
    pub source: u16,
    /// The line was counted before a restart (its position is before the durable
    /// checkpoint): read again only to rebuild windows, it changes no count.
    pub reread: bool,
    /// Keyed 128-bit hash of the normalised path: the distinct-count key, stable across
    /// restarts (keyed with [`crate::privacy::Pseudonymizer::stable_seed`]).
    pub path_key: u128,
    /// Normalised path, in the batch arena.
    pub path: Range<u32>,
    /// Request method as logged, in the batch arena.
    pub method: Range<u32>,
    /// User agent, log escapes undone, in the batch arena.
    pub user_agent: Range<u32>,
    /// Which rule groups this copy of the event is for (a worker may get one event twice:
    /// once for the client's rules and once for the source's).
    pub route: Route,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub client_rules: bool,
    pub source_rules: bool,
}

/// A batch of events for one worker. Recycled: the worker clears and returns it, so the
/// steady state allocates nothing.
#[derive(Default)]
pub struct EventBatch {
    pub events: Vec<Event>,
    pub arena: Vec<u8>,
}

impl EventBatch {
    pub const MAX_EVENTS: usize = 256;

    pub fn with_capacity() -> EventBatch {
        EventBatch { events: Vec::with_capacity(Self::MAX_EVENTS), arena: Vec::with_capacity(Self::MAX_EVENTS * 160) }
    }

    pub fn push_bytes(&mut self, bytes: &[u8]) -> Range<u32> {
        let start = self.arena.len() as u32;
        self.arena.extend_from_slice(bytes);
        start..self.arena.len() as u32
    }

    pub fn bytes(&self, r: &Range<u32>) -> &[u8] {
        &self.arena[r.start as usize..r.end as usize]
    }

    pub fn is_full(&self) -> bool {
        self.events.len() >= Self::MAX_EVENTS
    }

    pub fn clear(&mut self) {
        self.events.clear();
        self.arena.clear();
    }
}

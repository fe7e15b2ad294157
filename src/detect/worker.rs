//! One detection worker: owns the state of the groups (clients, sources) routed to it, applies
//! every rule to each event, opens and updates alert episodes, evicts idle groups.
//! Single-threaded by construction (no lock); never does I/O: changed alerts (as deltas) and
//! the evidence ledger's deltas are handed out at each barrier and written by the store stage.
//!
//! Memory per group is bounded whatever arrives: a window holds at most
//! [`Window::MAX_ENTRIES`] entries, an episode's distinct-path set at most the rule's
//! threshold + 1 keys (the store keeps each alert's full distinct set), and a worker at most
//! `max_groups` groups (the least recently seen are evicted, counted).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::alert::{Alert, AlertKey, AlertStatus, MAX_SAMPLE_PATHS, MAX_USER_AGENTS};
use super::event::{Event, EventBatch};
use super::evidence::{AlertChange, Evidence};
use super::rule::{Aggregate, Facts, GroupBy, MethodKind, Rule};
use super::window::Window;
use crate::classify::client::{unified, ClientClass, ClientId, ClientKind};
use crate::privacy::Pseudonymizer;

pub use super::scope::ClientScope;
use super::scope::{client_text, ip_text, ScopeSettings, Scopes};

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
type FastSet<K> = HashSet<K, ahash::RandomState>;

/// What every worker shares, read-only: the compiled rules and the names alerts show.
pub struct DetectConfig {
    pub rules: Vec<Rule>,
    /// Indices into `rules` of the client-grouped rules; a group's slot `i` is `client_rules[i]`.
    pub client_rules: Vec<usize>,
    pub source_rules: Vec<usize>,
    pub partner_names: Vec<String>,
    pub source_names: Vec<String>,
    /// Groups idle longer than this (event time) are evicted. Never below the longest rule
    /// window or suppression time, so eviction cannot change a detection.
    pub idle_secs: i64,
    /// Per-worker cap on tracked groups; beyond it the least recently seen are evicted.
    pub max_groups: usize,
    /// Keep per-client totals for the scope report (replay). Off in the daemon.
    pub keep_scope: bool,
    /// Episodes keep every path key they count, so their distinct counts are exact in memory
    /// and the store keeps no distinct sets for them (replay: see [`path_cap`]). Off in the
    /// daemon, whose memory must not grow with an alert's distinct paths.
    pub keeps_every_path: bool,
    /// What the scope counts as a call, and its period (set by the pipeline after `new`).
    pub scope: ScopeSettings,
    /// The longest window or suppression time of the rules: how long (event time) a group's
    /// state or an alert episode can still matter.
    pub memory_secs: i64,
    /// Paths and user agents become alert text only through this: personnummer and phone
    /// numbers are pseudonymised where they enter an alert, so every output sees pseudonyms.
    pub pseudonyms: Pseudonymizer,
    /// Keys the ledger's client hash of host-name clients (stable across restarts).
    pub stable_seed: u64,
    /// Record the evidence ledger's deltas (the daemon always; a replay with `--ledger`).
    pub ledger: bool,
}

impl DetectConfig {
    pub fn new(
        rules: Vec<Rule>,
        partner_names: Vec<String>,
        source_names: Vec<String>,
        idle_secs: i64,
        max_groups: usize,
        keep_scope: bool,
        pseudonyms: Pseudonymizer,
    ) -> DetectConfig {
        let pick = |g: GroupBy| rules.iter().enumerate().filter(|(_, r)| r.group_by == g).map(|(i, _)| i).collect();
        let longest = rules.iter().map(|r| r.window_secs.max(r.suppress_secs)).max().unwrap_or(0);
        DetectConfig {
            client_rules: pick(GroupBy::Client),
            source_rules: pick(GroupBy::Source),
            rules,
            partner_names,
            source_names,
            idle_secs: idle_secs.max(longest),
            max_groups: max_groups.max(1),
            keep_scope,
            keeps_every_path: false,
            scope: ScopeSettings::default(),
            memory_secs: longest,
            stable_seed: pseudonyms.stable_seed(),
            pseudonyms,
            ledger: true,
        }
    }

    /// Whether a source-grouped rule matches an event with `facts`: the reading side routes
    /// an event to its source's worker only then (issue 18: every sensitive event used to be
    /// copied there, and the source's worker tested and dropped most of them).
    pub fn source_rules_match(&self, facts: &Facts<'_>) -> bool {
        self.source_rules.iter().any(|&i| self.rules[i].matches(facts))
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
enum GroupKey {
    Client(ClientId),
    Source(u16),
}

impl GroupKey {
    /// Whether an episode of this group keeps its alert's client text: the key gives back an
    /// address, not a host name or the first client of a source-grouped alert.
    fn keeps_client_text(self) -> bool {
        !matches!(self, GroupKey::Client(ClientId::Ip(_)))
    }
}

struct GroupState {
    last_seen: i64,
    /// One per rule slot, in one allocation (issue 13: a group is most of a mass fetch's
    /// detection memory; two vectors cost a hash-map entry 32 bytes more and one allocation).
    slots: Box<[Slot]>,
}

impl GroupState {
    fn new(last_seen: i64, slots: usize) -> GroupState {
        GroupState { last_seen, slots: (0..slots).map(|_| Slot::default()).collect() }
    }
}

/// What a group keeps for one rule. Boxed: most slots of most groups are empty, and an empty
/// box costs 8 bytes.
#[derive(Default)]
struct Slot {
    /// Created on the first matching event of a windowed rule.
    window: Option<Box<Window>>,
    /// The open alert, if the rule fired and has not been quiet for its suppression time.
    episode: Option<Box<Episode>>,
}

/// An alert episode as a worker keeps it: the alert's identity, times and counts, and what it
/// saw since the last hand-out. The rest of the alert (rule name, severity, client, kind and
/// source text) is rebuilt from the rule, the group key and the tables when it is handed out
/// ([`Episode::take_change`]): a full [`Alert`] held ten heap strings, ~900 bytes for every
/// one-fetch client of a mass fetch (issue 13).
struct Episode {
    /// [`Alert::id_key`]; the alert's id is its hex form.
    id: AlertKey,
    first_seen: i64,
    last_seen: i64,
    /// The worker's own view of the counts (exact in a replay; the store keeps the truth).
    requests: u64,
    distinct_resources: u64,
    bytes: u64,
    class: ClientClass,
    /// Index into the worker's source names ([`NO_SOURCE`]: a resumed alert of a source that
    /// is no longer read).
    source: u16,
    /// The alert's client when the group key cannot give it back: a client known by name, or
    /// the first client of a source-grouped alert.
    client: Option<Box<str>>,
    /// Path keys known to be counted in the alert, at most `path_cap`: a cache that spares
    /// the store most look-ups, never the truth (the store keeps the alert's distinct set).
    seen_paths: PathCache,
    path_cap: usize,
    /// What it saw since the last hand-out; absent while nothing (most episodes of a mass
    /// fetch are handed out once, then wait for their suppression time to pass).
    unsent: Option<Box<Unsent>>,
    /// Changed since it was last handed to the store.
    dirty: bool,
    /// For a resolved (closed) episode: events at or before this time were counted in the
    /// resolved alert (late or re-read lines), so they are not counted again.
    counted_through: i64,
    /// Resolved by a person: closed for good. Only its `counted_through` matters: events up to
    /// it were counted in the resolved alert (re-reads); the first match after it opens a new
    /// alert (a new id, notified).
    closed: bool,
}

/// What an episode saw since its last hand-out: requests, 2xx bytes and the keys of paths that
/// may be new to the alert (the store adds them), and paths (pseudonymised) and user agents
/// (the store unions them into the alert, bounded).
#[derive(Default)]
struct Unsent {
    requests: u64,
    bytes: u64,
    paths: Vec<u128>,
    sample: Vec<String>,
    user_agents: Vec<String>,
}

/// The path keys an episode knows are counted in its alert, at most its `path_cap`: a sorted
/// vector, exactly as long as what it holds, while small (an episode of a one-fetch client
/// holds one key in 16 bytes; a hash set took ~100 bytes per episode, issue 13); a hash set
/// beyond [`PathCache::SMALL`] keys (a replay's episodes keep every key).
enum PathCache {
    Small(Vec<u128>),
    Large(Box<FastSet<u128>>),
}

impl Default for PathCache {
    fn default() -> Self {
        PathCache::Small(Vec::new())
    }
}

impl PathCache {
    const SMALL: usize = 64;

    fn contains(&self, key: &u128) -> bool {
        match self {
            PathCache::Small(keys) => keys.binary_search(key).is_ok(),
            PathCache::Large(keys) => keys.contains(key),
        }
    }

    fn insert(&mut self, key: u128) {
        match self {
            PathCache::Small(keys) if keys.len() >= Self::SMALL => {
                let mut large: FastSet<u128> = keys.drain(..).collect();
                large.insert(key);
                *self = PathCache::Large(Box::new(large));
            }
            PathCache::Small(keys) => {
                if let Err(at) = keys.binary_search(&key) {
                    keys.reserve_exact(1);
                    keys.insert(at, key);
                }
            }
            PathCache::Large(keys) => {
                keys.insert(key);
            }
        }
    }

    fn len(&self) -> usize {
        match self {
            PathCache::Small(keys) => keys.len(),
            PathCache::Large(keys) => keys.len(),
        }
    }
}

/// Counters one worker keeps; the pipeline publishes them.
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkerStats {
    pub events: u64,
    pub alerts_opened: u64,
    pub groups_evicted: u64,
    pub groups_tracked: u64,
}

pub struct Worker {
    cfg: Arc<DetectConfig>,
    /// Names alerts show as `source`, by event source index: the configured ones, then
    /// those the reading side registered later (Kafka envelopes name their host and file).
    source_names: Vec<String>,
    groups: FastMap<GroupKey, GroupState>,
    dirty: Vec<(GroupKey, usize)>,
    scope: Scopes,
    latest_time: i64,
    events_since_sweep: u64,
    /// Changed alerts of groups evicted, or of episodes closed (a new one replaced them),
    /// before their changes were handed out.
    evicted_changes: Vec<AlertChange>,
    /// The evidence ledger's deltas since the last hand-out, per (client, path key).
    evidence: FastMap<(ClientId, u128), Evidence>,
    pub stats: WorkerStats,
}

fn is_success(status: u16) -> bool {
    (200..300).contains(&status)
}

impl Worker {
    /// Events between idle sweeps; a sweep is O(groups), so this keeps it amortised.
    const SWEEP_EVERY: u64 = 65_536;

    pub fn new(cfg: Arc<DetectConfig>) -> Worker {
        Worker {
            source_names: cfg.source_names.clone(),
            cfg,
            groups: FastMap::default(),
            dirty: Vec::new(),
            scope: Scopes::default(),
            latest_time: i64::MIN,
            events_since_sweep: 0,
            evicted_changes: Vec::new(),
            evidence: FastMap::default(),
            stats: WorkerStats::default(),
        }
    }

    /// A source registered after the start; its index is the next one (see
    /// [`crate::pipeline::Ingest::source_named`], which sends it before any of its events).
    pub fn add_source(&mut self, name: String) {
        self.source_names.push(name);
    }

    /// New rules from a reload, applied between two events. Call after [`Worker::take_changed`]
    /// (nothing is dirty then). A rule that [`Rule::counts_like`] its old self keeps every
    /// group's window and open episode; a new or changed rule starts with empty windows and
    /// no episode (its next alert is judged on events after the reload only); a removed
    /// rule's state is dropped. Groups, sources and scope are kept.
    pub fn reconfigure(&mut self, cfg: Arc<DetectConfig>) {
        debug_assert!(self.dirty.is_empty(), "reconfigure after take_changed");
        self.dirty.clear();
        let old = &self.cfg;
        // For each new slot of each kind, the old slot whose state it keeps.
        let carry = |old_slots: &[usize], new_slots: &[usize]| -> Vec<Option<usize>> {
            new_slots.iter().map(|&n| old_slots.iter().position(|&o| cfg.rules[n].counts_like(&old.rules[o]))).collect()
        };
        let client = carry(&old.client_rules, &cfg.client_rules);
        let source = carry(&old.source_rules, &cfg.source_rules);
        for (key, g) in self.groups.iter_mut() {
            let map = match key {
                GroupKey::Client(_) => &client,
                GroupKey::Source(_) => &source,
            };
            let mut old_slots = std::mem::take(&mut g.slots);
            g.slots = map
                .iter()
                .map(|o| o.and_then(|o| old_slots.get_mut(o)).map(std::mem::take).unwrap_or_default())
                .collect();
        }
        self.cfg = cfg;
    }

    /// Applies every event of the batch, then evicts idle groups if due.
    pub fn process_batch(&mut self, batch: &EventBatch) {
        for ev in &batch.events {
            self.process(ev, batch);
        }
        if self.events_since_sweep >= Self::SWEEP_EVERY || self.groups.len() > self.cfg.max_groups {
            self.sweep();
        }
        self.stats.groups_tracked = self.groups.len() as u64;
    }

    pub fn process(&mut self, ev: &Event, batch: &EventBatch) {
        self.stats.events += 1;
        self.events_since_sweep += 1;
        if !ev.future {
            // A time too far ahead of the wall clock must not age every group out.
            self.latest_time = self.latest_time.max(ev.time);
        }
        let facts = Facts {
            path_class: ev.path_class,
            status: ev.status,
            method: batch.bytes(&ev.method),
            client_kind: ev.client_class.kind,
            user_present: ev.user_present,
            user_agent: batch.bytes(&ev.user_agent),
            transport: ev.transport,
        };
        let cfg = &*self.cfg;
        if ev.route.client_rules {
            let key = GroupKey::Client(ev.client);
            apply_rules(
                cfg,
                &self.source_names,
                &cfg.client_rules,
                key,
                &mut self.groups,
                &mut self.dirty,
                &mut self.evicted_changes,
                &mut self.stats,
                ev,
                batch,
                &facts,
            );
            if cfg.keep_scope {
                self.scope.record(&cfg.scope, &cfg.pseudonyms, ev, batch);
            }
            if cfg.ledger && !ev.reread && ev.client_class.kind != ClientKind::Internal {
                record_evidence(cfg, &self.source_names, &mut self.evidence, ev, batch);
            }
        }
        if ev.route.source_rules {
            let key = GroupKey::Source(ev.source);
            apply_rules(
                cfg,
                &self.source_names,
                &cfg.source_rules,
                key,
                &mut self.groups,
                &mut self.dirty,
                &mut self.evicted_changes,
                &mut self.stats,
                ev,
                batch,
                &facts,
            );
        }
    }

    /// Hands out what every alert counted since the last call (the store stage writes it;
    /// the pipeline calls this at each barrier and at the end, when durability is needed).
    pub fn take_changed(&mut self, changed: &mut Vec<AlertChange>) {
        changed.append(&mut self.evicted_changes);
        for (key, slot) in self.dirty.drain(..) {
            let Some(state) = self.groups.get_mut(&key) else { continue };
            if let Some(ep) = state.slots[slot].episode.as_mut().filter(|ep| ep.dirty) {
                changed.push(ep.take_change(&self.cfg, &self.source_names, key, slot));
            }
        }
    }

    /// Hands out the evidence (ledger deltas) since the last call.
    pub fn take_evidence(&mut self, evidence: &mut Vec<Evidence>) {
        evidence.extend(self.evidence.drain().map(|(_, e)| e));
    }

    fn sweep(&mut self) {
        self.events_since_sweep = 0;
        let before = self.groups.len();
        let cutoff = self.latest_time.saturating_sub(self.cfg.idle_secs);
        let (cfg, source_names, evicted_changes) = (&*self.cfg, &self.source_names, &mut self.evicted_changes);
        let mut retain = |key: &GroupKey, g: &mut GroupState, keep: bool| {
            if !keep {
                for (slot, s) in g.slots.iter_mut().enumerate() {
                    if let Some(ep) = s.episode.as_mut().filter(|ep| ep.dirty) {
                        evicted_changes.push(ep.take_change(cfg, source_names, *key, slot));
                    }
                }
            }
            keep
        };
        self.groups.retain(|key, g| retain(key, g, g.last_seen >= cutoff));
        if self.groups.len() > self.cfg.max_groups {
            // Keep the most recently seen 90 % of the cap.
            let keep = self.cfg.max_groups - self.cfg.max_groups / 10;
            let mut seen: Vec<i64> = self.groups.values().map(|g| g.last_seen).collect();
            let nth = seen.len() - keep;
            let (_, newest_evicted, _) = seen.select_nth_unstable(nth.saturating_sub(1));
            let newest_evicted = *newest_evicted;
            let mut budget = nth;
            self.groups.retain(|key, g| {
                let evict = budget > 0 && g.last_seen <= newest_evicted;
                budget -= usize::from(evict);
                retain(key, g, !evict)
            });
        }
        self.stats.groups_evicted += (before - self.groups.len()) as u64;
    }

    /// Re-opens the episode of a stored alert (after a restart), so later matching events
    /// update that alert instead of opening a second one. A resolved alert comes back closed:
    /// its re-read lines stay counted in it, and the first match after it opens a new alert.
    /// Alerts of rules no longer configured, or of groups this worker does not own, are
    /// ignored by the caller's routing.
    pub fn resume(&mut self, alert: Alert) {
        let Some((key, slot, n)) = self.locate(&alert) else { return };
        let path_cap = path_cap(&self.cfg, rule_of(&self.cfg, key, slot));
        let Some(resumed) = Episode::of_stored(&alert, key, &self.cfg, &self.source_names, path_cap) else { return };
        let g = self.groups.entry(key).or_insert_with(|| GroupState::new(alert.last_seen, n));
        g.last_seen = g.last_seen.max(alert.last_seen);
        self.latest_time = self.latest_time.max(alert.last_seen);
        if g.slots[slot].episode.as_ref().is_none_or(|ep| ep.last_seen < resumed.last_seen) {
            g.slots[slot].episode = Some(Box::new(resumed));
        }
    }

    /// A person resolved `alert`: its episode (if this worker runs it) is closed for good. What
    /// it counted but has not handed out yet still goes to the store (into the resolved alert);
    /// the rule's window starts empty, so the next match is judged on events after the resolve
    /// and opens a new alert with a new id.
    pub fn close(&mut self, alert: &Alert) {
        let Some((key, slot, _)) = self.locate(alert) else { return };
        let Some(g) = self.groups.get_mut(&key) else { return };
        let id = Alert::parse_id(&alert.id);
        let Some(ep) = g.slots[slot].episode.as_mut().filter(|ep| Some(ep.id) == id && !ep.closed) else { return };
        if ep.dirty {
            self.evicted_changes.push(ep.take_change(&self.cfg, &self.source_names, key, slot));
        }
        ep.close(alert.last_seen);
        g.slots[slot].window = None;
    }

    /// The group key and rule slot of a stored alert, and the number of slots of its kind.
    fn locate(&self, alert: &Alert) -> Option<(GroupKey, usize, usize)> {
        let cfg = &*self.cfg;
        let (slots, key) = match alert.group_by.as_str() {
            "source" => {
                let i = self.source_names.iter().position(|n| *n == alert.source)?;
                (&cfg.source_rules, GroupKey::Source(i as u16))
            }
            _ => (&cfg.client_rules, GroupKey::Client(ClientId::from_text(&alert.client)?)),
        };
        let slot = slots.iter().position(|&i| cfg.rules[i].id == alert.rule_id)?;
        Some((key, slot, slots.len()))
    }

    /// Which worker of `workers` owns the group of `alert` (for [`Worker::resume`] routing).
    /// `source_names` are the reading side's, registered sources included.
    pub fn owner_of(
        alert: &Alert,
        source_names: &[String],
        workers: usize,
        route: impl Fn(ClientId) -> usize,
    ) -> Option<usize> {
        match alert.group_by.as_str() {
            "source" => source_names.iter().position(|n| *n == alert.source).map(|i| i % workers),
            _ => ClientId::from_text(&alert.client).map(route),
        }
    }

    /// Per-client totals of this worker (clients are partitioned, so workers' maps are disjoint).
    pub fn take_scope(&mut self) -> Vec<ClientScope> {
        std::mem::take(&mut self.scope).into_clients(&self.cfg.scope, &self.cfg.pseudonyms)
    }
}

#[allow(clippy::too_many_arguments)]
fn apply_rules(
    cfg: &DetectConfig,
    source_names: &[String],
    slots: &[usize],
    key: GroupKey,
    groups: &mut FastMap<GroupKey, GroupState>,
    dirty: &mut Vec<(GroupKey, usize)>,
    closed_changes: &mut Vec<AlertChange>,
    stats: &mut WorkerStats,
    ev: &Event,
    batch: &EventBatch,
    facts: &Facts<'_>,
) {
    // Rules are tested before the group's state is looked up: most events create no state.
    let matched = slots
        .iter()
        .enumerate()
        .filter(|(_, &i)| cfg.rules[i].matches(facts))
        .fold(0u128, |m, (slot, _)| m | 1 << slot);
    if matched == 0 {
        return;
    }
    let g = groups.entry(key).or_insert_with(|| GroupState::new(ev.time, slots.len()));
    // An event dated too far in the future is placed at the group's own latest time: it is
    // counted and can fire, but moves no window, suppression or alert time.
    let placed;
    let ev = if ev.future {
        placed = Event { time: g.last_seen, ..ev.clone() };
        &placed
    } else {
        ev
    };
    g.last_seen = g.last_seen.max(ev.time);
    for (slot, &rule_index) in slots.iter().enumerate() {
        if matched & (1 << slot) == 0 {
            continue;
        }
        let rule = &cfg.rules[rule_index];
        let success_bytes = if is_success(ev.status) { ev.body_bytes } else { 0 };
        if let Some(ep) = g.slots[slot].episode.as_ref().filter(|ep| ep.closed) {
            if ev.time <= ep.counted_through {
                // Counted in the resolved alert before a restart: neither counted again nor
                // allowed to fill a window that would re-open it.
                continue;
            }
            // The first match after a resolve: judged afresh, without what the closed alert
            // already counted.
            g.slots[slot] = Slot::default();
        }
        if rule.is_windowed() {
            let w = g.slots[slot].window.get_or_insert_with(|| Box::new(Window::new(rule.aggregate)));
            w.push(ev.time, rule.window_secs, ev.path_key, success_bytes);
        }
        let Slot { window, episode } = &mut g.slots[slot];
        if let Some(ep) = episode {
            if ev.time - ep.last_seen <= rule.suppress_secs {
                if ev.time > ep.counted_through {
                    ep.record(ev, batch, success_bytes, &cfg.pseudonyms);
                    if !ev.reread {
                        mark_dirty(ep, key, slot, dirty);
                    }
                }
                continue;
            }
            // The episode is over; changes not handed out yet must still reach the store.
            if let Some(mut ep) = episode.take().filter(|ep| ep.dirty) {
                closed_changes.push(ep.take_change(cfg, source_names, key, slot));
            }
        }
        let fired = match rule.aggregate {
            Aggregate::None => true,
            aggregate => window.as_ref().is_some_and(|w| w.value(aggregate) > rule.threshold),
        };
        if fired {
            let ep = episode.insert(Box::new(Episode::open(
                cfg,
                source_names,
                rule,
                key,
                ev,
                batch,
                success_bytes,
                window.as_deref(),
            )));
            stats.alerts_opened += 1;
            // Opened by a line counted before a restart: the alert is in the store already.
            if !ev.reread {
                mark_dirty(ep, key, slot, dirty);
            }
        }
    }
}

/// How many path keys an episode of `rule` keeps in memory: in the daemon enough for the rule
/// to decide (threshold + 1), never more, and the store keeps the alert's whole distinct set;
/// in a replay every key ([`KEEPS_EVERY_PATH`]): its distinct counts are exact in memory (a
/// replay keeps every client's files for its scope anyway) and the store keeps no sets for it.
fn path_cap(cfg: &DetectConfig, rule: &Rule) -> usize {
    if cfg.keeps_every_path {
        return KEEPS_EVERY_PATH;
    }
    usize::try_from(rule.threshold).unwrap_or(usize::MAX).saturating_add(1).min(Window::MAX_ENTRIES)
}

/// The `path_cap` of an episode that keeps every path key it counts.
const KEEPS_EVERY_PATH: usize = usize::MAX;

/// The rule of slot `slot` of a group of `key`'s kind.
fn rule_of(cfg: &DetectConfig, key: GroupKey, slot: usize) -> &Rule {
    match key {
        GroupKey::Client(_) => &cfg.rules[cfg.client_rules[slot]],
        GroupKey::Source(_) => &cfg.rules[cfg.source_rules[slot]],
    }
}

/// Ledger key of a client: its address (IPv6-mapped), or a hash of its lower-cased name keyed
/// with the stable seed (so it agrees across restarts and with a report computing it later).
pub fn ledger_client_key(client: ClientId, name: &[u8], stable_seed: u64) -> u128 {
    match client {
        ClientId::Ip(ip) => unified(ip),
        ClientId::Name(_) => {
            let lower: Vec<u8> = name.iter().map(u8::to_ascii_lowercase).collect();
            xxhash_rust::xxh3::xxh3_128_with_seed(&lower, stable_seed) | 1 << 127
        }
    }
}

/// Counts a non-internal client's request to a sensitive path into the ledger's deltas.
fn record_evidence(
    cfg: &DetectConfig,
    source_names: &[String],
    evidence: &mut FastMap<(ClientId, u128), Evidence>,
    ev: &Event,
    batch: &EventBatch,
) {
    let e = evidence.entry((ev.client, ev.path_key)).or_insert_with(|| Evidence {
        client: client_text(ev, batch),
        client_kind: ev.client_class.kind.as_str().to_string(),
        partner: ev.client_class.partner_name_in(&cfg.partner_names).map(str::to_string),
        path: cfg.pseudonyms.pseudonymize_bytes(batch.bytes(&ev.path)).into_owned(),
        path_class: ev.path_class.as_str().to_string(),
        source: source_names.get(usize::from(ev.source)).cloned().unwrap_or_default(),
        first_seen: ev.time,
        last_seen: ev.time,
        requests: 0,
        ok: 0,
        bytes: 0,
        statuses: Vec::new(),
        key: (ledger_client_key(ev.client, batch.bytes(&ev.client_name), cfg.stable_seed), ev.path_key),
        hours: Vec::new(),
    });
    e.count(ev.time, ev.status, ev.body_bytes, MethodKind::Body.admits(batch.bytes(&ev.method)));
}

fn mark_dirty(ep: &mut Episode, key: GroupKey, slot: usize, dirty: &mut Vec<(GroupKey, usize)>) {
    if !ep.dirty {
        ep.dirty = true;
        dirty.push((key, slot));
    }
}

impl Episode {
    /// Opens an alert at `ev`. For windowed rules the alert starts with what is in the window
    /// (it is why the rule fired); its start is the oldest event there.
    #[allow(clippy::too_many_arguments)]
    fn open(
        cfg: &DetectConfig,
        source_names: &[String],
        rule: &Rule,
        key: GroupKey,
        ev: &Event,
        batch: &EventBatch,
        success_bytes: u64,
        window: Option<&Window>,
    ) -> Episode {
        let client = client_text(ev, batch);
        let mut paths: FastSet<u128> = FastSet::default();
        let (first_seen, requests, bytes) = match window {
            Some(w) if !w.is_empty() => {
                paths.extend(w.path_keys());
                (w.oldest_time().unwrap_or(ev.time), w.len() as u64, w.sum_bytes())
            }
            _ => {
                paths.insert(ev.path_key);
                (ev.time, 1, success_bytes)
            }
        };
        let group_name = match key {
            GroupKey::Source(source) => source_names.get(usize::from(source)).map_or("", String::as_str),
            GroupKey::Client(_) => &client,
        };
        let id = Alert::id_key(&rule.id, group_name, first_seen);
        let path_cap = path_cap(cfg, rule);
        let mut ep = Episode {
            id,
            first_seen,
            last_seen: ev.time.max(first_seen),
            requests,
            distinct_resources: paths.len() as u64,
            bytes,
            class: ev.client_class,
            source: ev.source,
            client: key.keeps_client_text().then(|| client.into_boxed_str()),
            ..Episode::empty(path_cap)
        };
        let unsent = ep.unsent.insert(Box::new(Unsent {
            sample: vec![cfg.pseudonyms.pseudonymize_bytes(batch.bytes(&ev.path)).into_owned()],
            ..Unsent::default()
        }));
        if !ev.reread {
            // What the window holds is why the rule fired: all of it is counted at the opening.
            unsent.requests = requests;
            unsent.bytes = bytes;
            if path_cap != KEEPS_EVERY_PATH {
                unsent.paths.extend(paths.iter().copied());
            }
        }
        for key in paths.into_iter().take(path_cap) {
            ep.seen_paths.insert(key);
        }
        ep.note_user_agent(batch.bytes(&ev.user_agent), &cfg.pseudonyms);
        ep
    }

    /// An episode that has counted nothing yet.
    fn empty(path_cap: usize) -> Episode {
        Episode {
            id: AlertKey { opened: None, hash: 0 },
            first_seen: 0,
            last_seen: 0,
            requests: 0,
            distinct_resources: 0,
            bytes: 0,
            class: ClientClass::UNKNOWN,
            source: NO_SOURCE,
            client: None,
            seen_paths: PathCache::default(),
            path_cap,
            unsent: None,
            dirty: false,
            counted_through: i64::MIN,
            closed: false,
        }
    }

    /// The episode of a stored alert (resumed after a restart), if its id is one a worker made.
    fn of_stored(
        alert: &Alert,
        key: GroupKey,
        cfg: &DetectConfig,
        source_names: &[String],
        path_cap: usize,
    ) -> Option<Episode> {
        let kind = ClientKind::from_name(&alert.client_kind).unwrap_or(ClientKind::Unknown);
        let partner = alert.partner.as_ref().and_then(|p| cfg.partner_names.iter().position(|n| n == p));
        let closed = alert.status == AlertStatus::Resolved;
        Some(Episode {
            id: Alert::parse_id(&alert.id)?,
            first_seen: alert.first_seen,
            last_seen: alert.last_seen,
            requests: alert.requests,
            distinct_resources: alert.distinct_resources,
            bytes: alert.bytes,
            class: ClientClass { kind, partner: partner.map_or(0, |p| p as u16) },
            source: source_names.iter().position(|n| *n == alert.source).map_or(NO_SOURCE, |i| i as u16),
            client: key.keeps_client_text().then(|| alert.client.clone().into_boxed_str()),
            counted_through: if closed { alert.last_seen } else { i64::MIN },
            closed,
            ..Episode::empty(path_cap)
        })
    }

    /// What it counted since the last hand-out, for the store: the alert (rebuilt from the
    /// rule of `key`'s slot `slot` and the tables) and the deltas. The sample and user agents
    /// move into the change: the store unions them into the alert (bounded), so the episode
    /// keeps only what it sees next.
    fn take_change(&mut self, cfg: &DetectConfig, source_names: &[String], key: GroupKey, slot: usize) -> AlertChange {
        self.dirty = false;
        let unsent = self.unsent.take().map_or_else(Unsent::default, |unsent| *unsent);
        let rule = rule_of(cfg, key, slot);
        let client = match (&self.client, key) {
            (Some(client), _) => client.to_string(),
            (None, GroupKey::Client(ClientId::Ip(ip))) => ip_text(ip),
            (None, _) => String::new(),
        };
        let alert = Alert {
            id: Alert::id_text(self.id),
            rule_id: rule.id.clone(),
            rule: rule.name.clone(),
            severity: rule.severity,
            group_by: rule.group_by.as_str().to_string(),
            client,
            client_kind: self.class.kind.as_str().to_string(),
            partner: self.class.partner_name_in(&cfg.partner_names).map(str::to_string),
            source: source_names.get(usize::from(self.source)).cloned().unwrap_or_default(),
            first_seen: self.first_seen,
            last_seen: self.last_seen,
            requests: self.requests,
            distinct_resources: self.distinct_resources,
            bytes: self.bytes,
            sample: unsent.sample,
            user_agents: unsent.user_agents,
            status: AlertStatus::Open,
        };
        AlertChange { alert, requests: unsent.requests, bytes: unsent.bytes, paths: unsent.paths }
    }

    /// Turns a running episode into a closed one that remembers only how far it counted.
    fn close(&mut self, resolved_last_seen: i64) {
        self.closed = true;
        self.counted_through = self.last_seen.max(resolved_last_seen);
        self.seen_paths = PathCache::default();
        if let Some(unsent) = &mut self.unsent {
            unsent.paths = Vec::new();
        }
    }

    /// Counts `ev` into the open alert. Distinct counting uses the raw path's key; only what
    /// is kept for output (sample, user agents) is pseudonymised, and only when it is kept.
    /// A re-read line (counted before a restart) moves the episode's times and nothing else.
    fn record(&mut self, ev: &Event, batch: &EventBatch, success_bytes: u64, pseudonyms: &Pseudonymizer) {
        if ev.time <= self.counted_through {
            return;
        }
        self.first_seen = self.first_seen.min(ev.time);
        self.last_seen = self.last_seen.max(ev.time);
        if ev.reread {
            return;
        }
        // Sums of logged values saturate: `%b` is attacker-influenced and may be u64::MAX.
        self.requests = self.requests.saturating_add(1);
        self.bytes = self.bytes.saturating_add(success_bytes);
        let unsent = self.unsent.get_or_insert_with(Box::default);
        unsent.requests = unsent.requests.saturating_add(1);
        unsent.bytes = unsent.bytes.saturating_add(success_bytes);
        if !self.seen_paths.contains(&ev.path_key) {
            // Maybe new to the alert: the store decides (it keeps the alert's distinct set),
            // unless this episode keeps every key and knows.
            if self.path_cap != KEEPS_EVERY_PATH {
                unsent.paths.push(ev.path_key);
            }
            if self.seen_paths.len() < self.path_cap {
                self.seen_paths.insert(ev.path_key);
                // The worker's own view: exact in a replay; in the daemon a lower bound once
                // the cache is full or after a restart, and the store's count is exact.
                self.distinct_resources = self.distinct_resources.saturating_add(1);
            }
            if unsent.sample.len() < MAX_SAMPLE_PATHS {
                let path = pseudonyms.pseudonymize_bytes(batch.bytes(&ev.path));
                if !unsent.sample.iter().any(|s| *s == *path) {
                    unsent.sample.push(path.into_owned());
                }
            }
        }
        self.note_user_agent(batch.bytes(&ev.user_agent), pseudonyms);
    }

    fn note_user_agent(&mut self, ua: &[u8], pseudonyms: &Pseudonymizer) {
        if ua.is_empty() {
            return;
        }
        let uas = &mut self.unsent.get_or_insert_with(Box::default).user_agents;
        // Stored agents are pseudonymised; one without a token is stored as logged, so the
        // common case (an agent seen before) is a plain comparison.
        if uas.len() >= MAX_USER_AGENTS || uas.iter().any(|u| u.as_bytes() == ua) {
            return;
        }
        let ua = pseudonyms.pseudonymize_bytes(ua);
        if !uas.iter().any(|u| *u == *ua) {
            // Most clients send one agent: room for one, not the four a first push makes.
            uas.reserve_exact(1);
            uas.push(ua.into_owned());
        }
    }
}

/// [`Episode::source`] of a resumed alert whose source is no longer read.
const NO_SOURCE: u16 = u16::MAX;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::client::ClientClass;
    use crate::classify::path::PathClass;
    use crate::detect::event::Route;
    use crate::detect::rule::{Aggregate, StatusSet, UserMatch};

    /// What the store holds, per test thread: alerts by id and their distinct sets, changed
    /// as [`crate::store`] changes them (deltas added, path keys unioned).
    type Model = (HashMap<String, Alert>, HashSet<(String, u128)>);
    thread_local! {
        static STORE: std::cell::RefCell<Model> = std::cell::RefCell::default();
    }

    /// Takes the worker's changes, applies them to the test thread's store model, and pushes
    /// each changed alert as stored onto `out`.
    fn reset_store() {
        STORE.with(|store| *store.borrow_mut() = Model::default());
    }

    fn take(w: &mut Worker, out: &mut Vec<Alert>) {
        let (mut changes, mut evidence) = (Vec::new(), Vec::new());
        w.take_changed(&mut changes);
        w.take_evidence(&mut evidence);
        STORE.with(|store| {
            let (alerts, paths) = &mut *store.borrow_mut();
            for c in changes {
                let a = alerts.entry(c.alert.id.clone()).or_insert_with(|| Alert {
                    requests: 0,
                    bytes: 0,
                    distinct_resources: 0,
                    ..c.alert.clone()
                });
                a.merge_meta_from(&c.alert);
                a.requests = a.requests.saturating_add(c.requests);
                a.bytes = a.bytes.saturating_add(c.bytes);
                for p in c.paths {
                    if paths.insert((a.id.clone(), p)) {
                        a.distinct_resources += 1;
                    }
                }
                out.push(a.clone());
            }
        });
    }

    fn test_key() -> Pseudonymizer {
        Pseudonymizer::new(b"worker test key, 32 bytes long!!")
    }

    fn rules(rule: Rule) -> Arc<DetectConfig> {
        Arc::new(DetectConfig::new(vec![rule], vec![], vec!["web1".into()], 3600, 1000, true, test_key()))
    }

    fn statuses(items: &[&str]) -> StatusSet {
        StatusSet::parse(&items.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    /// R1 of the defaults: an unknown client gets `status` for a recording.
    fn r1(status: &[&str]) -> Rule {
        Rule {
            statuses: statuses(status),
            client_kinds: ClientKind::Unknown.bit(),
            ..Rule::for_test("R1", "unknown-client-fetch")
        }
    }

    /// R2 of the defaults: more than 20 distinct recordings in 60 s.
    fn r2() -> Rule {
        Rule {
            aggregate: Aggregate::DistinctPaths,
            window_secs: 60,
            threshold: 20,
            ..Rule::for_test("R2", "enumeration")
        }
    }

    fn push(batch: &mut EventBatch, client: &str, kind: ClientKind, time: i64, status: u16, path: &str, user: bool) {
        push_sized(batch, client, kind, time, status, path, user, 1000);
    }

    #[allow(clippy::too_many_arguments)]
    fn push_sized(
        batch: &mut EventBatch,
        client: &str,
        kind: ClientKind,
        time: i64,
        status: u16,
        path: &str,
        user: bool,
        body_bytes: u64,
    ) {
        let p = batch.push_bytes(path.as_bytes());
        let method = batch.push_bytes(b"GET");
        let user_agent = batch.push_bytes(b"curl/8");
        let client_name = batch.push_bytes(b"");
        batch.events.push(Event {
            client: ClientId::Ip(client.parse().unwrap()),
            client_name,
            client_class: ClientClass { kind, partner: 0 },
            time,
            future: false,
            status,
            body_bytes,
            path_class: PathClass::Recording,
            user_present: user,
            transport: crate::parse::Transport::Unknown,
            source: 0,
            reread: false,
            path_key: xxhash_rust::xxh3::xxh3_128(path.as_bytes()),
            path: p,
            method,
            user_agent,
            route: Route { client_rules: true, source_rules: true },
        });
    }

    #[test]
    fn an_episode_closed_by_a_new_one_is_still_handed_out() {
        // Two episodes of one client in one batch, more than suppress_secs apart: both alerts
        // reach the store, though no barrier came between them (replay has none).
        let mut w = Worker::new(rules(Rule { suppress_secs: 100, ..Rule::for_test("R1", "fetch") }));
        let mut batch = EventBatch::with_capacity();
        push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1000, 200, "/r/a.wav", false);
        push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1050, 200, "/r/b.wav", false);
        push(&mut batch, "198.51.100.1", ClientKind::Unknown, 2000, 200, "/r/c.wav", false);
        w.process_batch(&batch);
        let mut changed = Vec::new();
        take(&mut w, &mut changed);
        let mut got: Vec<(i64, u64)> = changed.iter().map(|a| (a.first_seen, a.requests)).collect();
        got.sort();
        assert_eq!(got, [(1000, 2), (2000, 1)]);
    }

    /// 15 distinct recordings, a reload to `new`, then `more` distinct ones: the distinct
    /// counts of the R2 alerts handed out after the reload.
    fn distinct_after_reload(new: Rule, more: i64) -> Vec<u64> {
        let mut w = Worker::new(rules(r2()));
        let mut batch = EventBatch::with_capacity();
        for i in 0..15 {
            push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1000 + i, 200, &format!("/r/{i}.wav"), false);
        }
        w.process_batch(&batch);
        let mut changed = Vec::new();
        take(&mut w, &mut changed);
        assert!(changed.is_empty());
        w.reconfigure(rules(new));
        batch.clear();
        for i in 15..15 + more {
            push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1000 + i, 200, &format!("/r/{i}.wav"), false);
        }
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        changed.iter().map(|a| a.distinct_resources).collect()
    }

    #[test]
    fn a_reload_that_changes_only_the_threshold_keeps_the_window() {
        // 15 before + 1 after > 10: the window counted across the reload.
        assert_eq!(distinct_after_reload(Rule { threshold: 10, ..r2() }, 1), [16]);
    }

    #[test]
    fn a_reload_that_changes_what_a_rule_counts_starts_its_window_empty() {
        // A longer window counts differently: the 15 before the reload are dropped, so 10
        // after it stay at the threshold and the 11th fires.
        let changed = Rule { threshold: 10, window_secs: 120, ..r2() };
        assert_eq!(distinct_after_reload(changed.clone(), 10), Vec::<u64>::new());
        assert_eq!(distinct_after_reload(changed, 11), [11]);
    }

    #[test]
    fn a_replay_episode_counts_every_distinct_path_itself_and_hands_out_no_keys() {
        let mut cfg = DetectConfig::new(vec![r1(&["200"])], vec![], vec!["web1".into()], 3600, 1000, true, test_key());
        cfg.keeps_every_path = true;
        let mut w = Worker::new(Arc::new(cfg));
        let mut batch = EventBatch::default();
        // 300 distinct recordings (past the cache's small form), each fetched twice.
        for i in 0..600 {
            push(&mut batch, "203.0.113.7", ClientKind::Unknown, 1_000 + i, 200, &format!("/r/{}.wav", i % 300), false);
        }
        w.process_batch(&batch);
        let mut changes = Vec::new();
        w.take_changed(&mut changes);
        assert_eq!(changes.len(), 1);
        assert_eq!((changes[0].alert.requests, changes[0].alert.distinct_resources), (600, 300));
        assert!(changes[0].paths.is_empty(), "the store keeps no distinct set for a replay");
    }

    #[test]
    fn enumeration_fires_on_the_21st_distinct_path_within_the_window() {
        let mut w = Worker::new(rules(r2()));
        let mut batch = EventBatch::with_capacity();
        // 20 distinct in the window, plus repeats: no alert
        for i in 0..20 {
            push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1000 + i, 200, &format!("/r/{i}.wav"), false);
            push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1000 + i, 206, &format!("/r/{i}.wav"), false);
        }
        let mut changed = Vec::new();
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        assert!(changed.is_empty());
        // the 21st distinct path, but 60 s after the first: the first has left (t-60, t]
        batch.clear();
        push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1060, 200, "/r/20.wav", false);
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        assert!(changed.is_empty());
        // one more distinct path at 1061 while 19 older ones (1002..=1019) + 2 new are in the window
        batch.clear();
        push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1061, 200, "/r/21.wav", false);
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        assert!(changed.is_empty(), "1002..=1019 is 18 paths + 2 = 20, not more than 20");
        batch.clear();
        push(&mut batch, "198.51.100.1", ClientKind::Unknown, 1061, 200, "/r/22.wav", false);
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        assert_eq!(changed.len(), 1);
        let a = &changed[0];
        assert_eq!((a.rule.as_str(), a.distinct_resources), ("enumeration", 21));
        assert_eq!(a.first_seen, 1002);
    }

    #[test]
    fn samples_are_pseudonymised_and_distinct_counts_stay_over_the_real_paths() {
        let mut w = Worker::new(rules(r1(&["200"])));
        let mut batch = EventBatch::with_capacity();
        for (i, path) in
            ["/r/19121212-1212.wav", "/r/121212-1212.wav", "/r/0701234567.wav", "/r/121212-1212.wav"].iter().enumerate()
        {
            push(&mut batch, "198.51.100.4", ClientKind::Unknown, 100 + i as i64, 200, path, false);
        }
        let mut changed = Vec::new();
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        let a = changed.pop().unwrap();
        assert_eq!((a.requests, a.distinct_resources), (4, 3), "two spellings of one person are two files");
        let key = test_key();
        let pnr = key.pseudonym(crate::privacy::TokenKind::Personnummer, "1212121212");
        let tel = key.pseudonym(crate::privacy::TokenKind::Phone, "46701234567");
        assert_eq!(a.sample, [format!("/r/{pnr}.wav"), format!("/r/{tel}.wav")]);
    }

    #[test]
    fn a_suppressed_alert_keeps_counting_and_a_quiet_period_opens_a_new_one() {
        let mut w = Worker::new(rules(Rule { suppress_secs: 600, ..r1(&["200", "206"]) }));
        let mut batch = EventBatch::with_capacity();
        for i in 0..5 {
            push(
                &mut batch,
                "2001:db8::7",
                ClientKind::Unknown,
                100 + i * 100,
                200,
                &format!("/r/{}.wav", i % 3),
                false,
            );
        }
        push(&mut batch, "10.0.0.1", ClientKind::Internal, 100, 200, "/r/x.wav", false);
        push(&mut batch, "2001:db8::7", ClientKind::Unknown, 150, 404, "/r/y.wav", false);
        let mut changed = Vec::new();
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        assert_eq!(changed.len(), 1);
        let a = changed.pop().unwrap();
        assert_eq!((a.requests, a.distinct_resources, a.bytes, a.first_seen, a.last_seen), (5, 3, 5000, 100, 500));
        assert_eq!(a.sample.len(), 3);
        batch.clear();
        push(&mut batch, "2001:db8::7", ClientKind::Unknown, 1101, 200, "/r/0.wav", false);
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        let b = changed.pop().unwrap();
        assert_ne!(a.id, b.id, "601 s of quiet: a new alert");
        assert_eq!((b.requests, b.first_seen), (1, 1101));
    }

    #[test]
    fn a_resumed_episode_is_updated_by_rereads_without_double_counting() {
        let mut batch = EventBatch::with_capacity();
        for i in 0..4 {
            push(&mut batch, "198.51.100.9", ClientKind::Unknown, 100 + i, 200, &format!("/r/{i}.wav"), false);
        }
        let mut changed = Vec::new();
        let mut before_crash = Worker::new(rules(r1(&["200"])));
        before_crash.process_batch(&batch);
        take(&mut before_crash, &mut changed);
        let stored = changed.pop().unwrap();
        assert_eq!(stored.requests, 4);
        // restart: the stored alert is resumed, the last two lines are read again (flagged by
        // their position, before the checkpoint), then a new one in the same second
        let mut after = Worker::new(rules(r1(&["200"])));
        after.resume(stored.clone());
        let mut reread = EventBatch::with_capacity();
        push(&mut reread, "198.51.100.9", ClientKind::Unknown, 102, 200, "/r/2.wav", false);
        push(&mut reread, "198.51.100.9", ClientKind::Unknown, 103, 200, "/r/3.wav", false);
        reread.events.iter_mut().for_each(|e| e.reread = true);
        after.process_batch(&reread);
        take(&mut after, &mut changed);
        assert!(changed.is_empty(), "re-read lines change nothing");
        let mut fresh = EventBatch::with_capacity();
        push(&mut fresh, "198.51.100.9", ClientKind::Unknown, 103, 200, "/r/4.wav", false);
        push(&mut fresh, "198.51.100.9", ClientKind::Unknown, 103, 200, "/r/0.wav", false);
        after.process_batch(&fresh);
        take(&mut after, &mut changed);
        let a = changed.pop().unwrap();
        assert_eq!(a.id, stored.id, "the same alert continues");
        // a new line in an already-seen second counts; the store's distinct set is exact
        assert_eq!((a.requests, a.distinct_resources, a.last_seen), (6, 5, 103));
    }

    #[test]
    fn a_fetch_after_a_resolve_opens_a_new_alert_instead_of_folding_into_the_resolved_one() {
        // The case: one fetch, resolved, then more fetches well inside suppress_secs.
        let mut w = Worker::new(rules(Rule { suppress_secs: 3600, ..r1(&["200"]) }));
        let mut batch = EventBatch::with_capacity();
        push(&mut batch, "198.51.100.5", ClientKind::Unknown, 100, 200, "/r/0.wav", false);
        w.process_batch(&batch);
        let mut changed = Vec::new();
        take(&mut w, &mut changed);
        let mut first = changed.pop().unwrap();
        first.status = AlertStatus::Resolved;
        w.close(&first);
        for i in 1..=3 {
            batch.clear();
            push(&mut batch, "198.51.100.5", ClientKind::Unknown, 100 + i * 600, 200, &format!("/r/{i}.wav"), false);
            w.process_batch(&batch);
        }
        take(&mut w, &mut changed);
        assert_eq!(changed.len(), 1, "{changed:?}");
        let second = &changed[0];
        assert_ne!(second.id, first.id);
        assert_eq!((second.requests, second.distinct_resources, second.first_seen), (3, 3, 700));
        assert_eq!(w.stats.alerts_opened, 2);
    }

    #[test]
    fn a_resolved_windowed_alert_needs_a_fresh_crossing_after_the_resolve() {
        let mut w = Worker::new(rules(r2()));
        let mut batch = EventBatch::with_capacity();
        for i in 0..21 {
            push(&mut batch, "198.51.100.6", ClientKind::Unknown, 1000 + i, 200, &format!("/r/{i}.wav"), false);
        }
        w.process_batch(&batch);
        let mut changed = Vec::new();
        take(&mut w, &mut changed);
        let mut first = changed.pop().unwrap();
        first.status = AlertStatus::Resolved;
        w.close(&first);
        // 20 more distinct paths right after: not more than 20 since the resolve
        batch.clear();
        for i in 21..41 {
            push(&mut batch, "198.51.100.6", ClientKind::Unknown, 1000 + i, 200, &format!("/r/{i}.wav"), false);
        }
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        assert!(changed.is_empty(), "{changed:?}");
        batch.clear();
        push(&mut batch, "198.51.100.6", ClientKind::Unknown, 1041, 200, "/r/41.wav", false);
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        let second = changed.pop().unwrap();
        assert_ne!(second.id, first.id);
        assert_eq!((second.distinct_resources, second.first_seen), (21, 1021));
    }

    #[test]
    fn a_resolved_alert_resumed_after_a_restart_keeps_its_rereads_and_the_next_match_is_new() {
        let mut batch = EventBatch::with_capacity();
        for i in 0..3 {
            push(&mut batch, "198.51.100.8", ClientKind::Unknown, 100 + i, 200, &format!("/r/{i}.wav"), false);
        }
        let mut changed = Vec::new();
        let mut before = Worker::new(rules(r1(&["200"])));
        before.process_batch(&batch);
        take(&mut before, &mut changed);
        let mut stored = changed.pop().unwrap();
        stored.status = AlertStatus::Resolved;
        let mut after = Worker::new(rules(r1(&["200"])));
        after.resume(stored.clone());
        after.process_batch(&batch);
        take(&mut after, &mut changed);
        assert!(changed.is_empty(), "re-read lines of the resolved alert open nothing: {changed:?}");
        batch.clear();
        push(&mut batch, "198.51.100.8", ClientKind::Unknown, 103, 200, "/r/3.wav", false);
        after.process_batch(&batch);
        take(&mut after, &mut changed);
        let new = changed.pop().unwrap();
        assert_ne!(new.id, stored.id);
        assert_eq!((new.requests, new.first_seen, new.status), (1, 103, AlertStatus::Open));
    }

    proptest::proptest! {
        /// `%b` is attacker-influenced: lines of u64::MAX bytes (the parser's ceiling) must
        /// neither panic (debug build) nor wrap; every sum is the true sum, capped at u64::MAX.
        #[test]
        fn byte_sums_saturate_instead_of_overflowing(
            lines in proptest::collection::vec(
                (0u8..4, proptest::prop_oneof![
                    proptest::strategy::Just(u64::MAX),
                    proptest::strategy::Just(u64::MAX - 1),
                    proptest::strategy::Just(1u64 << 63),
                    0u64..10_000,
                ], 0i64..3),
                1..80,
            )
        ) {
            reset_store();
            let sum_rule = Rule {
                aggregate: Aggregate::SumBytes,
                threshold: u64::MAX - 1,
                ..Rule::for_test("S1", "bytes")
            };
            let r3 = Rule { group_by: GroupBy::Source, ..Rule::for_test("R3", "exposure") };
            let cfg = Arc::new(DetectConfig::new(
                vec![r1(&["200"]), r2(), sum_rule, r3],
                vec![],
                vec!["web1".into()],
                3600,
                1000,
                true,
                test_key(),
            ));
            let mut w = Worker::new(cfg);
            let mut batch = EventBatch::with_capacity();
            let mut truth: u128 = 0;
            let mut time = 1000;
            for (i, &(path, bytes, step)) in lines.iter().enumerate() {
                time += step;
                truth += u128::from(bytes);
                push_sized(&mut batch, "203.0.113.1", ClientKind::Unknown, time, 200, &format!("/r/{path}.wav"), false, bytes);
                if batch.is_full() || i + 1 == lines.len() {
                    w.process_batch(&batch);
                    batch.clear();
                }
            }
            let expected = u64::try_from(truth).unwrap_or(u64::MAX);
            let mut changed = Vec::new();
            take(&mut w, &mut changed);
            let r1_alert = changed.iter().find(|a| a.rule_id == "R1").unwrap();
            proptest::prop_assert_eq!(r1_alert.bytes, expected);
            proptest::prop_assert_eq!(r1_alert.requests, lines.len() as u64);
            let r3_alert = changed.iter().find(|a| a.rule_id == "R3").unwrap();
            proptest::prop_assert_eq!(r3_alert.bytes, expected);
            let scope = w.take_scope();
            proptest::prop_assert_eq!(scope[0].bytes, expected);
            // The window sum is exact inside: the byte rule fires only when the true window sum
            // passes u64::MAX - 1, and then starts with the capped sum.
            if let Some(a) = changed.iter().find(|a| a.rule_id == "S1") {
                proptest::prop_assert!(a.bytes >= u64::MAX - 1);
            }
        }
    }

    #[test]
    fn a_line_dated_2100_inside_an_enumeration_neither_hides_r2_nor_splits_r1() {
        // The case: one line of the same client dated 2100 between its fetches used to
        // empty the R2 window (nothing fired) and age the group out (R1 split in two).
        let cfg = Arc::new(DetectConfig::new(
            vec![r1(&["200"]), r2()],
            vec![],
            vec!["web1".into()],
            60,
            1000,
            false,
            test_key(),
        ));
        let mut w = Worker::new(cfg);
        let mut batch = EventBatch::with_capacity();
        for i in 0..30 {
            push(&mut batch, "198.51.100.7", ClientKind::Unknown, 1000 + i, 200, &format!("/r/{i}.wav"), false);
            if i == 10 {
                // the reading side flags it and places it at its latest trusted time
                push(&mut batch, "198.51.100.7", ClientKind::Unknown, 1010, 200, "/r/future.wav", false);
                batch.events.last_mut().unwrap().future = true;
            }
        }
        w.process_batch(&batch);
        let mut changed = Vec::new();
        take(&mut w, &mut changed);
        let r1 = changed.iter().filter(|a| a.rule_id == "R1").collect::<Vec<_>>();
        assert_eq!(r1.len(), 1, "R1 not split: {changed:?}");
        assert_eq!((r1[0].requests, r1[0].distinct_resources, r1[0].last_seen), (31, 31, 1029));
        let r2 = changed.iter().find(|a| a.rule_id == "R2").expect("R2 fires");
        assert_eq!(r2.first_seen, 1000);
        assert_eq!(w.latest_time, 1029, "the future line moved no clock");
    }

    #[test]
    fn source_grouped_rule_makes_one_alert_for_many_clients() {
        let r3 = Rule {
            statuses: statuses(&["2xx"]),
            client_kinds: ClientKind::Partner.bit() | ClientKind::Unknown.bit(),
            user: UserMatch::Absent,
            group_by: GroupBy::Source,
            ..Rule::for_test("R3", "unauthenticated-exposure")
        };
        let mut w = Worker::new(rules(r3));
        let mut batch = EventBatch::with_capacity();
        push(&mut batch, "198.51.100.1", ClientKind::Unknown, 10, 200, "/r/a.wav", false);
        push(&mut batch, "198.51.100.2", ClientKind::Unknown, 11, 200, "/r/b.wav", false);
        push(&mut batch, "198.51.100.3", ClientKind::Unknown, 12, 200, "/r/c.wav", true);
        let mut changed = Vec::new();
        w.process_batch(&batch);
        take(&mut w, &mut changed);
        assert_eq!(changed.len(), 1);
        assert_eq!((changed[0].source.as_str(), changed[0].requests), ("web1", 2));
        assert_eq!(changed[0].group_by, "source");
    }

    #[test]
    fn a_handed_out_alert_is_the_one_a_full_alert_was_before_episodes_were_compacted() {
        // The episode keeps ids, times and counts; the rest is rebuilt at each hand-out and
        // must read as the alert did when the episode held it whole.
        let r1 = Rule { client_kinds: ClientKind::Unknown.bit() | ClientKind::Partner.bit(), ..r1(&["2xx"]) };
        let r3 = Rule { id: "R3".into(), group_by: GroupBy::Source, ..r1.clone() };
        let cfg =
            DetectConfig::new(vec![r3, r1], vec!["acme".into()], vec!["web1".into()], 3600, 100, false, test_key());
        let mut w = Worker::new(Arc::new(cfg));
        let mut batch = EventBatch::with_capacity();
        push(&mut batch, "2001:db8::7", ClientKind::Unknown, 10, 200, "/r/a.wav", false);
        push(&mut batch, "198.51.100.9", ClientKind::Partner, 11, 200, "/r/b.wav", false);
        let named = batch.push_bytes(b"crawler.example.net");
        let mut by_name = batch.events[0].clone();
        by_name.client = ClientId::of_name(b"crawler.example.net");
        by_name.client_name = named;
        by_name.time = 12;
        batch.events.push(by_name);
        w.process_batch(&batch);
        let mut changed = Vec::new();
        take(&mut w, &mut changed);
        let shown = |rule: &str, client: &str| {
            let a = changed.iter().find(|a| a.rule_id == rule && a.client == client).expect(client);
            (a.id.clone(), a.client_kind.clone(), a.partner.clone(), a.source.clone(), a.group_by.clone(), a.requests)
        };
        let id = |group: &str, t: i64| Alert::make_id(if group == "web1" { "R3" } else { "R1" }, group, t);
        let some = |s: &str| Some(s.to_string());
        assert_eq!(
            shown("R1", "2001:db8::7"),
            (id("2001:db8::7", 10), "unknown".into(), None, "web1".into(), "client".into(), 1)
        );
        assert_eq!(
            shown("R1", "198.51.100.9"),
            (id("198.51.100.9", 11), "partner".into(), some("acme"), "web1".into(), "client".into(), 1)
        );
        assert_eq!(
            shown("R1", "crawler.example.net"),
            (id("crawler.example.net", 12), "unknown".into(), None, "web1".into(), "client".into(), 1)
        );
        // A source-grouped alert is named after its first client and keyed by its source.
        assert_eq!(
            shown("R3", "2001:db8::7"),
            (id("web1", 10), "unknown".into(), None, "web1".into(), "source".into(), 3)
        );
        for a in &changed {
            assert_eq!(Alert::parse_id(&a.id).map(Alert::id_text).as_deref(), Some(a.id.as_str()));
        }
        assert_eq!(Alert::parse_id("00019FE4A00EEB29"), None);
    }

    #[test]
    fn idle_groups_are_evicted_and_the_cap_holds() {
        let cfg = Arc::new(DetectConfig::new(vec![r2()], vec![], vec!["s".into()], 60, 50, false, test_key()));
        let mut w = Worker::new(cfg);
        let mut changed = Vec::new();
        for round in 0..10i64 {
            let mut batch = EventBatch::with_capacity();
            for i in 0..40 {
                push(
                    &mut batch,
                    &format!("198.51.{round}.{i}"),
                    ClientKind::Unknown,
                    round * 10,
                    200,
                    "/r/a.wav",
                    false,
                );
            }
            w.process_batch(&batch);
            take(&mut w, &mut changed);
            assert!(w.groups.len() <= 50 + 40, "cap exceeded: {}", w.groups.len());
        }
        assert!(w.stats.groups_evicted >= 300, "{:?}", w.stats);
    }
}

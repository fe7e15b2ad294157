//! What each client took over a replay, for the scope report: calls and files taken, partial
//! transfers, bytes, first and last time, user agents. Owns [`ClientScope`], what counts as
//! taken or partial, and the period filter (`--since/--until`). Kept by the worker that owns
//! the client (no lock); never touches alerts or windows: detection sees every event, the
//! scope only those inside the period.
//!
//! A recording is *taken* by a complete transfer: a 2xx answer other than 206 to a method
//! whose answer carries the file (not HEAD, OPTIONS, TRACE or CONNECT). A *partial*
//! transfer is a 206 (a byte range; xferlog's incomplete downloads read as 206) or a 499 (the
//! client closed the connection before the answer was complete). A call is taken when at
//! least one of its files was; which call a file belongs to is [`CallIds`]' business. Calls
//! are told apart by a hash of their id; the id itself is kept (pseudonymised, as paths are,
//! once per call and worker) only for clients outside the internal networks, whose calls the
//! report lists: an internal client's calls are counted, never listed (as in the ledger,
//! which keeps no internal client at all).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::event::{Event, EventBatch};
use crate::classify::call::CallIds;
use crate::classify::client::{ClientClass, ClientId, ClientKind};
use crate::classify::path::PathClass;
use crate::detect::rule::MethodKind;
use crate::privacy::Pseudonymizer;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;
/// The sets and maps inside each client's scope, seeded with the process's one random seed:
/// a `RandomState` in each of them made every scope 96 bytes larger, and a replay touches
/// thousands of scopes in turn (the smaller they are, the more of them stay in the cache).
type ScopeSet<K> = HashSet<K, ProcessSeed>;
type ScopeMap<K, V> = HashMap<K, V, ProcessSeed>;

/// ahash keyed once per process (as `ahash::RandomState` is per map): a key an attacker
/// chose cannot be made to collide without knowing the seed.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessSeed;

impl std::hash::BuildHasher for ProcessSeed {
    type Hasher = ahash::AHasher;

    fn build_hasher(&self) -> ahash::AHasher {
        static SEED: std::sync::OnceLock<ahash::RandomState> = std::sync::OnceLock::new();
        SEED.get_or_init(ahash::RandomState::new).build_hasher()
    }
}

/// Distinct user agents kept per client (the rest are counted only).
pub const MAX_SCOPE_USER_AGENTS: usize = 8;

/// The status nginx logs when the client closed the connection first.
const CLIENT_CLOSED: u16 = 499;

/// What the scope counts, and over which time.
#[derive(Clone, Debug, Default)]
pub struct ScopeSettings {
    pub call_ids: Arc<CallIds>,
    /// Events outside it are left out of the scope (detection still sees them).
    pub period: Period,
}

/// `[since, until)`, Unix seconds; an open end is unbounded (`--since/--until`, read by
/// [`crate::report::period`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Period {
    pub since: Option<i64>,
    pub until: Option<i64>,
}

impl Period {
    pub fn contains(&self, t: i64) -> bool {
        self.since.is_none_or(|s| t >= s) && self.until.is_none_or(|u| t < u)
    }
}

/// How one transfer of a recording ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transfer {
    Complete,
    Partial,
    /// Refused, not found, redirected, …: nothing was taken.
    None,
}

impl Transfer {
    pub fn of_status(status: u16) -> Transfer {
        match status {
            206 | CLIENT_CLOSED => Transfer::Partial,
            200..=299 => Transfer::Complete,
            _ => Transfer::None,
        }
    }
}

/// One call as one client touched it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CallTaken {
    /// Distinct files of the call the client took completely.
    pub files: u64,
    /// Distinct files of the call the client got only partially (never completely).
    pub partial_files: u64,
    /// The call id, pseudonymised: kept for clients outside the internal networks only.
    pub name: Option<Arc<str>>,
}

/// The key a call is told apart by: a hash of its id as read from the path.
pub fn call_key(call_id: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(call_id)
}

/// Totals per client over a replay's period: the scope report's "who took what".
#[derive(Clone, Debug, Default)]
pub struct ClientScope {
    /// How the client is shown: its address, or its host name as first logged.
    pub client: String,
    pub class: Option<ClientClass>,
    /// Requests to any sensitive path (any status).
    pub requests: u64,
    /// Complete transfers of recordings.
    pub successful: u64,
    /// Partial transfers of recordings (206, 499).
    pub partial_transfers: u64,
    /// Body bytes of recordings answered 2xx (partial ones too; saturating).
    pub bytes: u64,
    /// Distinct recordings taken completely (keys of their normalised paths).
    pub files: ScopeSet<u128>,
    /// Distinct recordings transferred partially, taken completely or not.
    pub partial: ScopeSet<u128>,
    /// Calls touched by a complete or partial transfer, by [`call_key`].
    pub calls: ScopeMap<u128, CallTaken>,
    /// Distinct user agents of its requests, pseudonymised, at most [`MAX_SCOPE_USER_AGENTS`].
    pub user_agents: Vec<String>,
    /// A hash of the last user agent looked up in `user_agents`: a client sends the same one
    /// request after request, and this spares reading the list (cold in memory) each time.
    pub(crate) last_user_agent: u64,
    /// Transfers of recordings (complete or partial) by hour: the report's timeline.
    pub fetch_hours: FetchHours,
    pub first_seen: i64,
    pub last_seen: i64,
}

impl ClientScope {
    /// Distinct calls with at least one file taken completely.
    pub fn calls_taken(&self) -> impl Iterator<Item = (&u128, &CallTaken)> {
        self.calls.iter().filter(|(_, c)| c.files > 0)
    }

    /// Whether `ua` differs from the user agent of the client's previous request.
    fn user_agent_changed(&mut self, ua: &[u8]) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(ua);
        std::mem::replace(&mut self.last_user_agent, hash) != hash
    }

    /// Distinct files transferred only partially, never completely.
    pub fn partial_only(&self) -> impl Iterator<Item = &u128> {
        self.partial.iter().filter(|k| !self.files.contains(k))
    }
}

/// Counts by hour (Unix seconds / 3600). Logs come mostly in time order, so the hour being
/// counted is kept in the struct itself: a count rarely touches the list of the others.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchHours {
    /// The hour counted last, and its count (0: none yet).
    current: (i64, u64),
    /// Every other hour counted, sorted.
    others: Vec<(i64, u64)>,
}

impl FetchHours {
    pub fn add(&mut self, hour: i64, n: u64) {
        if self.current.1 > 0 && self.current.0 != hour {
            let (earlier, count) = self.current;
            match self.others.binary_search_by_key(&earlier, |&(h, _)| h) {
                Ok(i) => self.others[i].1 = self.others[i].1.saturating_add(count),
                Err(i) => self.others.insert(i, (earlier, count)),
            }
            self.current = (hour, 0);
        }
        self.current = (hour, self.current.1.saturating_add(n));
    }

    /// Every hour counted and its count, sorted by hour.
    pub fn sorted(&self) -> Vec<(i64, u64)> {
        let mut all = self.others.clone();
        if self.current.1 > 0 {
            match all.binary_search_by_key(&self.current.0, |&(h, _)| h) {
                Ok(i) => all[i].1 = all[i].1.saturating_add(self.current.1),
                Err(i) => all.insert(i, self.current),
            }
        }
        all
    }
}

/// How an event's client is shown in alerts and reports: its address, or its host name.
pub fn client_text(ev: &Event, batch: &EventBatch) -> String {
    match ev.client {
        ClientId::Ip(std::net::IpAddr::V4(ip)) => ipv4_text(ip),
        ClientId::Ip(ip) => ip.to_string(),
        ClientId::Name(_) => String::from_utf8_lossy(batch.bytes(&ev.client_name)).into_owned(),
    }
}

/// `ip` in dotted decimal, as `Display` writes it, without the formatting machinery (a
/// replay names every client it sees: thousands of times per run).
fn ipv4_text(ip: std::net::Ipv4Addr) -> String {
    let mut text = String::with_capacity(15);
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

/// The scopes of one worker's clients, and the pseudonymised ids of the calls they took
/// (each pseudonymised once).
#[derive(Debug, Default)]
pub struct Scopes {
    pub clients: FastMap<ClientId, ClientScope>,
    call_names: FastMap<u128, Arc<str>>,
    /// User agents as logged, and pseudonymised (each once: a browser's version number reads
    /// like a run of digits, so most agents go through the token scanner).
    user_agent_names: FastMap<Box<[u8]>, Arc<str>>,
}

impl Scopes {
    /// Counts one event into its client's scope, if it falls in the period.
    pub fn record(&mut self, settings: &ScopeSettings, pseudonyms: &Pseudonymizer, ev: &Event, batch: &EventBatch) {
        // A line read again after a restart was counted before it.
        if ev.reread || !settings.period.contains(ev.time) {
            return;
        }
        let Scopes { clients, call_names, user_agent_names } = self;
        let s = clients.entry(ev.client).or_insert_with(|| ClientScope {
            client: client_text(ev, batch),
            class: Some(ev.client_class),
            first_seen: ev.time,
            last_seen: ev.time,
            ..ClientScope::default()
        });
        // Sums of logged values saturate: `%b` is attacker-influenced and may be u64::MAX.
        s.requests = s.requests.saturating_add(1);
        s.first_seen = s.first_seen.min(ev.time);
        s.last_seen = s.last_seen.max(ev.time);
        let ua = batch.bytes(&ev.user_agent);
        if s.user_agents.len() < MAX_SCOPE_USER_AGENTS && !ua.is_empty() && s.user_agent_changed(ua) {
            let text = match user_agent_names.get(ua) {
                Some(text) => text,
                None => user_agent_names.entry(ua.into()).or_insert(pseudonyms.pseudonymize_bytes(ua).into()),
            };
            if !s.user_agents.iter().any(|k| **k == **text) {
                s.user_agents.push(text.to_string());
            }
        }
        // A HEAD (OPTIONS, TRACE, CONNECT) answered 2xx transferred nothing.
        if ev.path_class != PathClass::Recording || !MethodKind::Body.admits(batch.bytes(&ev.method)) {
            return;
        }
        let transfer = Transfer::of_status(ev.status);
        if transfer == Transfer::None {
            return;
        }
        s.fetch_hours.add(ev.time.div_euclid(3_600), 1);
        if (200..300).contains(&ev.status) {
            s.bytes = s.bytes.saturating_add(ev.body_bytes);
        }
        let new_file = match transfer {
            Transfer::Complete => {
                s.successful = s.successful.saturating_add(1);
                s.files.insert(ev.path_key)
            }
            _ => {
                s.partial_transfers = s.partial_transfers.saturating_add(1);
                s.partial.insert(ev.path_key)
            }
        };
        if !new_file {
            return;
        }
        // Once per (client, file): the regex stays off the per-request path, the pseudonymiser
        // runs once per call.
        let call_id = settings.call_ids.call_of(batch.bytes(&ev.path));
        let key = call_key(call_id);
        let taken_before = transfer == Transfer::Partial && s.files.contains(&ev.path_key);
        let completed_partial = transfer == Transfer::Complete && s.partial.contains(&ev.path_key);
        let entry = s.calls.entry(key).or_default();
        if entry.name.is_none() && ev.client_class.kind != ClientKind::Internal {
            let name = call_names.entry(key).or_insert_with(|| pseudonyms.pseudonymize_bytes(call_id).into());
            entry.name = Some(name.clone());
        }
        match transfer {
            Transfer::Complete => {
                entry.files += 1;
                if completed_partial {
                    entry.partial_files = entry.partial_files.saturating_sub(1);
                }
            }
            _ if !taken_before => entry.partial_files += 1,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::client::ClientClass;
    use crate::detect::event::Route;
    use crate::parse::Transport;

    fn event(batch: &mut EventBatch, path: &str, status: u16, time: i64) -> Event {
        let path_range = batch.push_bytes(path.as_bytes());
        let user_agent = batch.push_bytes(b"curl/8");
        let empty = batch.push_bytes(b"");
        Event {
            client: ClientId::Ip("203.0.113.9".parse().unwrap()),
            client_name: empty.clone(),
            client_class: ClientClass::UNKNOWN,
            time,
            future: false,
            reread: false,
            status,
            body_bytes: 10,
            path_class: PathClass::Recording,
            user_present: false,
            transport: Transport::Unknown,
            source: 0,
            path_key: xxhash_rust::xxh3::xxh3_128(path.as_bytes()),
            path: path_range,
            method: empty.clone(),
            user_agent,
            route: Route { client_rules: true, source_rules: false },
        }
    }

    #[test]
    fn calls_files_and_partial_transfers_are_counted_once_each_inside_the_period() {
        let settings = ScopeSettings {
            call_ids: Arc::new(CallIds::new(r"call-(?P<call>\d+)-part").unwrap()),
            period: Period { since: Some(100), until: Some(200) },
        };
        let key = Pseudonymizer::new(b"0123456789abcdef0123");
        let mut scope = Scopes::default();
        let mut batch = EventBatch::default();
        let evs = [
            event(&mut batch, "/r/call-1-part1.wav", 200, 100),
            event(&mut batch, "/r/call-1-part1.wav", 200, 110), // again: one file
            event(&mut batch, "/r/call-1-part2.wav", 206, 120), // partial, then complete
            event(&mut batch, "/r/call-1-part2.wav", 200, 121),
            event(&mut batch, "/r/call-2-part1.wav", 206, 130), // partial only
            event(&mut batch, "/r/call-2-part2.wav", 499, 131), // aborted
            event(&mut batch, "/r/call-3-part1.wav", 404, 140), // nothing taken
            event(&mut batch, "/r/call-4-part1.wav", 200, 200), // after the period
            event(&mut batch, "/r/call-5-part1.wav", 200, 99),  // before it
        ];
        for ev in &evs {
            scope.record(&settings, &key, ev, &batch);
        }
        let s = scope.clients.values().next().unwrap();
        assert_eq!((s.requests, s.successful, s.partial_transfers), (7, 3, 3));
        assert_eq!((s.files.len(), s.partial_only().count()), (2, 2));
        let names: Vec<_> = s.calls_taken().filter_map(|(_, c)| c.name.as_deref()).collect();
        assert_eq!(names, ["1"]);
        let taken = |call: &str| s.calls[&call_key(call.as_bytes())].clone();
        assert_eq!(taken("1"), CallTaken { files: 2, partial_files: 0, name: Some("1".into()) });
        assert_eq!(taken("2"), CallTaken { files: 0, partial_files: 2, name: Some("2".into()) });
        assert_eq!((s.first_seen, s.last_seen), (100, 140));
        assert_eq!(s.user_agents, ["curl/8"]);
    }

    #[test]
    fn hours_counted_out_of_order_come_out_sorted_and_summed() {
        let mut hours = FetchHours::default();
        assert_eq!(hours.sorted(), []);
        for (hour, n) in [(5, 1), (5, 2), (3, 1), (7, 1), (5, 1), (3, 4), (3, 1)] {
            hours.add(hour, n);
        }
        assert_eq!(hours.sorted(), [(3, 6), (5, 4), (7, 1)]);
        hours.add(9, u64::MAX);
        hours.add(9, 1);
        assert_eq!(hours.sorted().last(), Some(&(9, u64::MAX)), "counts saturate");
    }

    #[test]
    fn ipv4_text_is_display_for_every_octet() {
        for octet in 0..=255u8 {
            let ip = std::net::Ipv4Addr::new(octet, 255 - octet, octet / 3, 7);
            assert_eq!(ipv4_text(ip), ip.to_string());
        }
    }

    #[test]
    fn call_ids_are_pseudonymised() {
        let settings = ScopeSettings {
            call_ids: Arc::new(CallIds::new(r"^/r/(?P<call>[^/]+)/").unwrap()),
            ..ScopeSettings::default()
        };
        let key = Pseudonymizer::new(b"0123456789abcdef0123");
        let mut scope = Scopes::default();
        let mut batch = EventBatch::default();
        let ev = event(&mut batch, "/r/19121212-1212/part1.wav", 200, 5);
        scope.record(&settings, &key, &ev, &batch);
        let s = scope.clients.values().next().unwrap();
        let call = s.calls.values().next().unwrap().name.as_deref().unwrap();
        assert!(call.starts_with("pnr-") && !call.contains("1212"), "{call}");
    }

    #[test]
    fn an_internal_client_calls_are_counted_not_named() {
        let settings = ScopeSettings::default();
        let key = Pseudonymizer::new(b"0123456789abcdef0123");
        let mut scope = Scopes::default();
        let mut batch = EventBatch::default();
        let mut ev = event(&mut batch, "/r/call-7.wav", 200, 5);
        ev.client_class = ClientClass { kind: ClientKind::Internal, partner: 0 };
        scope.record(&settings, &key, &ev, &batch);
        let s = scope.clients.values().next().unwrap();
        assert_eq!(s.calls_taken().count(), 1);
        assert_eq!(s.calls.values().next().unwrap().name, None);
        assert!(scope.call_names.is_empty(), "nothing was pseudonymised");
    }
}

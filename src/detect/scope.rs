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
//! once per client and call, at the end) only for clients outside the internal networks,
//! whose calls the report lists: an internal client's calls are counted, never listed (as in
//! the ledger, which keeps no internal client at all).

use std::collections::HashMap;
use std::sync::Arc;

use super::event::{Event, EventBatch};
use crate::classify::call::CallIds;
use crate::classify::client::{ClientClass, ClientId, ClientKind};
use crate::classify::path::PathClass;
use crate::detect::rule::MethodKind;
use crate::privacy::Pseudonymizer;

type FastMap<K, V> = HashMap<K, V, ahash::RandomState>;

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

/// The key a call is told apart by: a hash of its id as read from the path. (Without a call
/// pattern a replay's scope keys each file's call by the file's path key instead.)
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
    /// Distinct recordings taken completely (keys of their normalised paths), sorted.
    pub files: Vec<u128>,
    /// Distinct recordings transferred partially, taken completely or not, sorted.
    pub partial: Vec<u128>,
    /// Calls touched by a complete or partial transfer, by key, sorted by key.
    pub calls: Vec<(u128, CallTaken)>,
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
    pub fn calls_taken(&self) -> impl Iterator<Item = &(u128, CallTaken)> {
        self.calls.iter().filter(|(_, c)| c.files > 0)
    }

    /// The call with key `key`, if the client touched it.
    pub fn call(&self, key: u128) -> Option<&CallTaken> {
        self.calls.binary_search_by_key(&key, |(k, _)| *k).ok().map(|i| &self.calls[i].1)
    }

    /// Sorts the files, partial files and calls pushed in any order, and merges duplicates (a
    /// call pushed once per file adds up; its name is the first given).
    pub fn normalise(&mut self) {
        for keys in [&mut self.files, &mut self.partial] {
            keys.sort_unstable();
            keys.dedup();
        }
        self.calls.sort_by_key(|(key, _)| *key);
        self.calls.dedup_by(|(later_key, later), (key, kept)| {
            let same = later_key == key;
            if same {
                kept.files += later.files;
                kept.partial_files += later.partial_files;
                if kept.name.is_none() {
                    kept.name = later.name.take();
                }
            }
            same
        });
    }

    /// Whether `ua` differs from the user agent of the client's previous request.
    fn user_agent_changed(&mut self, ua: &[u8]) -> bool {
        let hash = xxhash_rust::xxh3::xxh3_64(ua);
        std::mem::replace(&mut self.last_user_agent, hash) != hash
    }

    /// Distinct files transferred only partially, never completely.
    pub fn partial_only(&self) -> impl Iterator<Item = &u128> {
        self.partial.iter().filter(|k| self.files.binary_search(k).is_err())
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
        ClientId::Ip(ip) => ip_text(ip),
        ClientId::Name(_) => String::from_utf8_lossy(batch.bytes(&ev.client_name)).into_owned(),
    }
}

/// A client address as alerts and reports show it (`Display`).
pub fn ip_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(ip) => ipv4_text(ip),
        ip => ip.to_string(),
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

/// The scopes of one worker's clients while a replay runs. Per event it touches only the
/// client's totals and appends a transfer to a log (with its path, in an arena); which files
/// and calls each client took, and their names, are folded from that log once, at the end
/// ([`Scopes::into_clients`]): hash sets and maps per client and per file, grown one insert at
/// a time, cost a third of the detection thread (nearly every transfer in a scrape is of a
/// file new to the client), a sorted log costs one sort.
#[derive(Debug, Default)]
pub struct Scopes {
    /// Index of each client's scope in `clients`.
    index: FastMap<ClientId, u32>,
    /// The clients' totals; their files, partial files and calls are filled at the end.
    clients: Vec<ClientScope>,
    /// Every transfer of a recording in the period, folded to one entry per (client, file)
    /// whenever it has doubled since it was last folded (so it stays within about twice the
    /// distinct pairs, however often they repeat).
    transfers: Vec<FileTransfer>,
    /// Entries of `transfers` when it was last folded.
    folded_len: usize,
    /// The transfers' normalised paths, one after another (rebuilt when folded).
    paths: Vec<u8>,
    /// User agents as logged, and pseudonymised (each once: a browser's version number reads
    /// like a run of digits, so most agents go through the token scanner).
    user_agent_names: FastMap<Box<[u8]>, Arc<str>>,
}

/// One or more transfers of one file to one client.
#[derive(Clone, Copy, Debug)]
struct FileTransfer {
    path_key: u128,
    client: u32,
    /// Where its path is in [`Scopes::paths`].
    path_start: u32,
    path_len: u32,
    complete: bool,
    partial: bool,
}

impl FileTransfer {
    /// Its path, in `arena` ([`Scopes::paths`]).
    fn path<'a>(&self, arena: &'a [u8]) -> &'a [u8] {
        &arena[self.path_start as usize..][..self.path_len as usize]
    }
}

impl Scopes {
    /// Counts one event into its client's scope, if it falls in the period.
    pub fn record(&mut self, settings: &ScopeSettings, pseudonyms: &Pseudonymizer, ev: &Event, batch: &EventBatch) {
        // A line read again after a restart was counted before it.
        if ev.reread || !settings.period.contains(ev.time) {
            return;
        }
        let Scopes { index, clients, user_agent_names, .. } = self;
        let slot = *index.entry(ev.client).or_insert_with(|| {
            clients.push(ClientScope {
                client: client_text(ev, batch),
                class: Some(ev.client_class),
                first_seen: ev.time,
                last_seen: ev.time,
                ..ClientScope::default()
            });
            (clients.len() - 1) as u32
        });
        let s = &mut clients[slot as usize];
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
        let complete = transfer == Transfer::Complete;
        if complete {
            s.successful = s.successful.saturating_add(1);
        } else {
            s.partial_transfers = s.partial_transfers.saturating_add(1);
        }
        let path = batch.bytes(&ev.path);
        self.transfers.push(FileTransfer {
            path_key: ev.path_key,
            client: slot,
            path_start: self.paths.len() as u32,
            path_len: path.len() as u32,
            complete,
            partial: !complete,
        });
        self.paths.extend_from_slice(path);
        // Offsets are u32: fold well before the arena could pass 4 GiB.
        if self.transfers.len() >= 2 * self.folded_len.max(1 << 16) || self.paths.len() > 1 << 31 {
            self.fold();
            self.folded_len = self.transfers.len();
        }
    }

    /// Folds the transfers (see [`fold_transfers`]); the arena keeps only their paths.
    fn fold(&mut self) {
        let Scopes { transfers, paths, .. } = self;
        fold_transfers(transfers);
        let mut kept = Vec::with_capacity(transfers.iter().map(|t| t.path_len as usize).sum());
        for t in transfers.iter_mut() {
            let start = kept.len() as u32;
            kept.extend_from_slice(t.path(paths));
            t.path_start = start;
        }
        *paths = kept;
    }

    /// The clients' scopes, with the files, partial files and calls each took. A file's call
    /// is what `settings.call_ids` makes of its path (the pattern runs once per client and
    /// file); calls are named (pseudonymised) for clients outside the internal networks only.
    pub fn into_clients(self, settings: &ScopeSettings, pseudonyms: &Pseudonymizer) -> Vec<ClientScope> {
        let Scopes { mut clients, mut transfers, paths, .. } = self;
        fold_transfers(&mut transfers);
        let whole_files = settings.call_ids.pattern().is_none();
        // (call key, taken completely, call id) per file of a client.
        let mut files: Vec<(u128, bool, &[u8])> = Vec::new();
        for run in transfers.chunk_by(|a, b| a.client == b.client) {
            let s = &mut clients[run[0].client as usize];
            let named = s.class.is_none_or(|c| c.kind != ClientKind::Internal);
            // The run is sorted by path key: so are these.
            s.files = run.iter().filter(|t| t.complete).map(|t| t.path_key).collect();
            s.partial = run.iter().filter(|t| t.partial).map(|t| t.path_key).collect();
            files.clear();
            files.extend(run.iter().map(|t| {
                let call = settings.call_ids.call_of(t.path(&paths));
                // Without a pattern each file is its own call, told apart by its path key:
                // no second hash, and the run is already sorted by it.
                (if whole_files { t.path_key } else { call_key(call) }, t.complete, call)
            }));
            if !whole_files {
                files.sort_unstable_by_key(|f| f.0);
            }
            s.calls = files
                .chunk_by(|a, b| a.0 == b.0)
                .map(|call| {
                    let (key, _, id) = call[0];
                    let complete = call.iter().filter(|f| f.1).count() as u64;
                    let name = named.then(|| pseudonyms.pseudonymize_bytes(id).into());
                    (key, CallTaken { files: complete, partial_files: call.len() as u64 - complete, name })
                })
                .collect();
        }
        clients
    }
}

/// Sorts `transfers` by client and file and folds each (client, file) into one entry.
fn fold_transfers(transfers: &mut Vec<FileTransfer>) {
    transfers.sort_unstable_by_key(|t| (t.client, t.path_key));
    transfers.dedup_by(|later, kept| {
        let same = later.client == kept.client && later.path_key == kept.path_key;
        if same {
            kept.complete |= later.complete;
            kept.partial |= later.partial;
        }
        same
    });
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
        let clients = scope.into_clients(&settings, &key);
        let s = &clients[0];
        assert_eq!((s.requests, s.successful, s.partial_transfers), (7, 3, 3));
        assert_eq!((s.files.len(), s.partial_only().count()), (2, 2));
        let names: Vec<_> = s.calls_taken().filter_map(|(_, c)| c.name.as_deref()).collect();
        assert_eq!(names, ["1"]);
        let taken = |call: &str| s.call(call_key(call.as_bytes())).unwrap().clone();
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
        let clients = scope.into_clients(&settings, &key);
        let call = clients[0].calls[0].1.name.as_deref().unwrap();
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
        // The same call taken by a client outside: named for it, still not for the internal one.
        let mut outside = event(&mut batch, "/r/call-7.wav", 200, 6);
        outside.client = ClientId::Ip("198.51.100.7".parse().unwrap());
        scope.record(&settings, &key, &outside, &batch);
        let clients = scope.into_clients(&settings, &key);
        let name = |s: &ClientScope| s.calls[0].1.name.clone();
        assert_eq!(clients[0].calls_taken().count(), 1);
        assert_eq!(name(&clients[0]), None);
        assert!(name(&clients[1]).is_some());
    }

    #[test]
    fn transfers_repeated_past_the_fold_count_once_per_client_and_file() {
        let settings = ScopeSettings::default();
        let key = Pseudonymizer::new(b"0123456789abcdef0123");
        let mut scope = Scopes::default();
        let mut batch = EventBatch::default();
        let paths: Vec<String> = (0..50).map(|i| format!("/r/f{i}.wav")).collect();
        let mut evs = Vec::new();
        for (i, path) in paths.iter().enumerate() {
            // Even files only partially, odd ones partially and then completely.
            evs.push(event(&mut batch, path, 206, i as i64));
            if i % 2 == 1 {
                evs.push(event(&mut batch, path, 200, i as i64));
            }
        }
        // Far more transfers than the log holds before it folds them.
        let rounds = (3 << 16) / evs.len() + 1;
        for _ in 0..rounds {
            for ev in &evs {
                scope.record(&settings, &key, ev, &batch);
            }
        }
        assert!(scope.transfers.len() < 1 << 17, "folded: {}", scope.transfers.len());
        assert!(scope.paths.len() < (1 << 17) * 12, "the arena too: {}", scope.paths.len());
        let clients = scope.into_clients(&settings, &key);
        let s = &clients[0];
        assert_eq!((s.files.len(), s.partial.len(), s.partial_only().count()), (25, 50, 25));
        assert_eq!(s.calls.len(), 50);
        assert_eq!(s.calls_taken().count(), 25);
        assert!(s.calls.iter().all(|(_, c)| c.files + c.partial_files == 1));
        assert_eq!(s.successful, 25 * rounds as u64);
    }
}

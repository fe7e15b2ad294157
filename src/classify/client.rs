//! Client identity and classification: which hop of a line is the client (X-Forwarded-For
//! believed only from trusted proxies), what identifies it (an address or a host name), and
//! whether it is internal, a named partner, or unknown, by longest-prefix CIDR match.
//! Owns the prefix tables (IPv4 and IPv6 in one IPv6-mapped space) and the trusted-proxy set.
//! The one place that decides "is this client internal" and "who is the client behind a proxy".
//! Never allocates on lookup.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::IpAddr;
use std::sync::OnceLock;

use crate::parse::{client_hops, is_host_name, parse_client_ip, parse_forwarded_ip};

/// Who made a request, as detection keys it: an address, or a host name (Apache
/// `HostnameLookups On`, an obfuscated proxy hop) by a keyed hash of its lower-cased text.
/// `Copy` and small, so the IP path pays nothing for names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientId {
    Ip(IpAddr),
    /// Keyed 128-bit hash of the lower-cased name (see [`ClientId::of_name`]), little-endian;
    /// the text travels beside it where it is shown. Bytes, not a `u128`: aligned to 1, a
    /// client id takes 18 bytes, not 32 (issue 13: a worker's map of groups is keyed by it).
    Name([u8; 16]),
}

impl ClientId {
    /// The identity of a host-name client: DNS names are case-insensitive, so `Monitor` and
    /// `monitor` are one client. The hash is keyed per process, so names cannot be crafted to
    /// collide; identities never leave the process (alerts store the text).
    pub fn of_name(name: &[u8]) -> ClientId {
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), "client-name")
        });
        let mut lower = [0u8; 256];
        let len = name.len().min(lower.len());
        for (out, byte) in lower.iter_mut().zip(&name[..len]) {
            *out = byte.to_ascii_lowercase();
        }
        ClientId::Name(xxhash_rust::xxh3::xxh3_128_with_seed(&lower[..len], seed).to_le_bytes())
    }

    /// The identity of a client as alerts show it (an address or a host name); `None` for
    /// anything else.
    pub fn from_text(text: &str) -> Option<ClientId> {
        match parse_client_ip(text.as_bytes()) {
            Some(ip) => Some(ClientId::Ip(ip)),
            None => is_host_name(text.as_bytes()).then(|| ClientId::of_name(text.as_bytes())),
        }
    }
}

/// The client of one line, borrowed from it: an address, or a host name (as written).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Client<'a> {
    Ip(IpAddr),
    Name(&'a [u8]),
}

/// What kind of client made a request; rules match on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKind {
    Internal,
    Partner,
    Unknown,
}

impl ClientKind {
    pub const ALL: [ClientKind; 3] = [ClientKind::Internal, ClientKind::Partner, ClientKind::Unknown];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientKind::Internal => "internal",
            ClientKind::Partner => "partner",
            ClientKind::Unknown => "unknown",
        }
    }

    pub fn from_name(s: &str) -> Option<ClientKind> {
        ClientKind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// Bit used in rule masks.
    pub fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The classification of one client: its kind and, for partners, which one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientClass {
    pub kind: ClientKind,
    /// Index into [`Networks::partner_name`]; meaningful only for [`ClientKind::Partner`].
    pub partner: u16,
}

impl ClientClass {
    pub const UNKNOWN: ClientClass = ClientClass { kind: ClientKind::Unknown, partner: 0 };

    /// The partner's name among the configured `names`, for a class of kind Partner.
    pub fn partner_name_in(self, names: &[String]) -> Option<&str> {
        match self.kind {
            ClientKind::Partner => names.get(usize::from(self.partner)).map(String::as_str),
            _ => None,
        }
    }
}

/// A network in the unified IPv6 space (IPv4 lives in `::ffff:0:0/96`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    /// Network address, host bits cleared.
    pub addr: u128,
    /// Prefix length in the unified space (IPv4 /8 is 104).
    pub len: u8,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid CIDR {text:?}: {why} (expected e.g. 10.0.0.0/8, 2001:db8::/32 or a single address)")]
pub struct CidrError {
    pub text: String,
    pub why: &'static str,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, CidrError> {
        let err = |why| CidrError { text: text.to_string(), why };
        let (addr_text, len_text) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l)),
            None => (text, None),
        };
        let ip: IpAddr = addr_text.trim().parse().map_err(|_| err("not an IP address"))?;
        let (max, base) = match ip {
            IpAddr::V4(_) => (32u8, 96u8),
            IpAddr::V6(_) => (128u8, 0u8),
        };
        let len = match len_text {
            None => max,
            Some(l) => l.trim().parse::<u8>().ok().filter(|&l| l <= max).ok_or_else(|| err("bad prefix length"))?,
        };
        let len = base + len;
        let addr = unified(ip);
        let masked = addr & mask(len);
        if masked != addr {
            return Err(err("host bits set after the prefix"));
        }
        Ok(Cidr { addr: masked, len })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = std::net::Ipv6Addr::from(self.addr);
        match v6.to_ipv4_mapped() {
            Some(v4) if self.len >= 96 => write!(f, "{}/{}", v4, self.len - 96),
            _ => write!(f, "{}/{}", v6, self.len),
        }
    }
}

/// An address in the unified space; IPv4 and IPv4-mapped IPv6 give the same value.
pub fn unified(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

fn mask(len: u8) -> u128 {
    if len == 0 {
        0
    } else {
        u128::MAX << (128 - u32::from(len))
    }
}

/// Longest-prefix-match table: one hash map per prefix length present, longest first.
/// Cost per lookup: one hash probe per distinct prefix length configured.
pub struct Networks {
    by_len: Vec<(u8, HashMap<u128, ClientClass, ahash::RandomState>)>,
    partner_names: Vec<String>,
    /// `[networks] trusted_proxies`, by prefix length (longest first): peers whose
    /// X-Forwarded-For is believed. Empty: no line's X-Forwarded-For is ever believed.
    trusted_proxies: Vec<(u8, HashSet<u128, ahash::RandomState>)>,
    /// Host-name clients configured as internal or as a partner's (`internal_hosts`,
    /// `hosts`); every other name is unknown.
    hosts: HashMap<ClientId, ClientClass, ahash::RandomState>,
}

impl Networks {
    /// `internal` wins over a partner network of the same prefix.
    pub fn new(internal: &[Cidr], partners: &[(String, Vec<Cidr>)]) -> Networks {
        let mut tables: HashMap<u8, HashMap<u128, ClientClass, ahash::RandomState>> = HashMap::new();
        let internal_class = ClientClass { kind: ClientKind::Internal, partner: 0 };
        for c in internal {
            tables.entry(c.len).or_default().insert(c.addr, internal_class);
        }
        for (i, (_, cidrs)) in partners.iter().enumerate() {
            let class = ClientClass { kind: ClientKind::Partner, partner: i as u16 };
            for c in cidrs {
                tables.entry(c.len).or_default().entry(c.addr).or_insert(class);
            }
        }
        let mut by_len: Vec<_> = tables.into_iter().collect();
        by_len.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        Networks {
            by_len,
            partner_names: partners.iter().map(|(n, _)| n.clone()).collect(),
            trusted_proxies: Vec::new(),
            hosts: HashMap::default(),
        }
    }

    /// The same table, knowing host-name clients: `internal` names, and per partner (by its
    /// index in the `partners` given to [`Networks::new`]) its names. Case-insensitive;
    /// internal wins over a partner for a name given twice.
    pub fn with_host_names(mut self, internal: &[String], partners: &[(u16, Vec<String>)]) -> Networks {
        for name in internal {
            let class = ClientClass { kind: ClientKind::Internal, partner: 0 };
            self.hosts.insert(ClientId::of_name(name.as_bytes()), class);
        }
        for (partner, names) in partners {
            let class = ClientClass { kind: ClientKind::Partner, partner: *partner };
            for name in names {
                self.hosts.entry(ClientId::of_name(name.as_bytes())).or_insert(class);
            }
        }
        self
    }

    /// The same table, believing X-Forwarded-For from peers in `proxies` (load balancers,
    /// reverse proxies in front of the logging server).
    pub fn with_trusted_proxies(mut self, proxies: &[Cidr]) -> Networks {
        let mut tables: HashMap<u8, HashSet<u128, ahash::RandomState>> = HashMap::new();
        for c in proxies {
            tables.entry(c.len).or_default().insert(c.addr);
        }
        self.trusted_proxies = tables.into_iter().collect();
        self.trusted_proxies.sort_by_key(|(len, _)| std::cmp::Reverse(*len));
        self
    }

    /// Whether `ip` is a configured trusted proxy.
    pub fn is_trusted_proxy(&self, ip: IpAddr) -> bool {
        let addr = unified(ip);
        self.trusted_proxies.iter().any(|(len, set)| set.contains(&(addr & mask(*len))))
    }

    /// The client of a line: its client field (`client_is_list` when it holds several hops)
    /// and, for formats that log it, the X-Forwarded-For value (`forwarded_for`, asked for
    /// only when the peer is a trusted proxy).
    ///
    /// The hops are X-Forwarded-For's, then the client field's, left to right; the rightmost
    /// is the peer the server saw. Walking from the right, trusted proxies are passed over:
    /// the client is the rightmost hop that is not a trusted proxy (the leftmost hop when all
    /// are). So a hop a client wrote itself is never believed unless every hop to its right is
    /// a trusted proxy, and with no trusted proxies configured the client is the peer.
    /// A hop that is no address ends the walk as a host-name client (`None` when it is not a
    /// host name either).
    #[inline]
    pub fn resolve_client<'a>(
        &self,
        field: &'a [u8],
        client_is_list: bool,
        forwarded_for: impl FnOnce() -> Option<&'a [u8]>,
    ) -> Option<Client<'a>> {
        if !client_is_list {
            let Some(peer) = parse_client_ip(field) else {
                return is_host_name(field).then_some(Client::Name(field));
            };
            if self.trusted_proxies.is_empty() || !self.is_trusted_proxy(peer) {
                return Some(Client::Ip(peer));
            }
        }
        let forwarded = forwarded_for().unwrap_or(b"");
        self.rightmost_untrusted(client_hops(forwarded).chain(client_hops(field)).rev())
    }

    /// The first hop (walking right to left) that is not a trusted proxy.
    fn rightmost_untrusted<'a>(&self, hops_right_to_left: impl Iterator<Item = &'a [u8]>) -> Option<Client<'a>> {
        let mut nearest_trusted = None;
        for hop in hops_right_to_left {
            match parse_forwarded_ip(hop) {
                Some(ip) if self.is_trusted_proxy(ip) => nearest_trusted = Some(ip),
                Some(ip) => return Some(Client::Ip(ip)),
                None => return is_host_name(hop).then_some(Client::Name(hop)),
            }
        }
        nearest_trusted.map(Client::Ip)
    }

    pub fn classify(&self, ip: IpAddr) -> ClientClass {
        let addr = unified(ip);
        for (len, table) in &self.by_len {
            if let Some(class) = table.get(&(addr & mask(*len))) {
                return *class;
            }
        }
        ClientClass::UNKNOWN
    }

    /// The class of a client identity: a host name is unknown unless configured by name
    /// (no network contains a name).
    #[inline]
    pub fn classify_client(&self, client: ClientId) -> ClientClass {
        match client {
            ClientId::Ip(ip) => self.classify(ip),
            ClientId::Name(_) => self.hosts.get(&client).copied().unwrap_or(ClientClass::UNKNOWN),
        }
    }

    /// The partner's configured name, for a class of kind Partner.
    pub fn partner_name(&self, class: ClientClass) -> Option<&str> {
        class.partner_name_in(&self.partner_names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets() -> Networks {
        let internal = ["10.0.0.0/8", "192.168.0.0/16", "fd00::/8"].map(|c| Cidr::parse(c).unwrap());
        let partners = vec![
            ("acme".to_string(), vec![Cidr::parse("203.0.113.0/24").unwrap()]),
            ("globex".to_string(), vec![Cidr::parse("2001:db8:1::/48").unwrap(), Cidr::parse("10.9.0.0/16").unwrap()]),
        ];
        Networks::new(&internal, &partners)
    }

    fn kind(n: &Networks, ip: &str) -> ClientKind {
        n.classify(ip.parse().unwrap()).kind
    }

    #[test]
    fn internal_ranges_and_near_misses() {
        let n = nets();
        assert_eq!(kind(&n, "10.1.2.3"), ClientKind::Internal);
        assert_eq!(kind(&n, "192.168.255.1"), ClientKind::Internal);
        for near_miss in ["100.10.1.1", "110.1.1.1", "192.169.0.1", "172.16.0.1", "45.10.0.3", "11.0.0.1"] {
            assert_eq!(kind(&n, near_miss), ClientKind::Unknown, "{near_miss}");
        }
        assert_eq!(kind(&n, "fd12::1"), ClientKind::Internal);
        assert_eq!(kind(&n, "2a01:4f8::1"), ClientKind::Unknown);
    }

    #[test]
    fn ipv4_mapped_ipv6_is_the_ipv4_address() {
        let n = nets();
        assert_eq!(kind(&n, "::ffff:10.1.2.3"), ClientKind::Internal);
        assert_eq!(kind(&n, "::ffff:8.8.8.8"), ClientKind::Unknown);
    }

    #[test]
    fn longest_prefix_wins_and_partners_are_named() {
        let n = nets();
        let c = n.classify("10.9.1.1".parse().unwrap());
        assert_eq!(c.kind, ClientKind::Partner);
        assert_eq!(n.partner_name(c), Some("globex"));
        let c = n.classify("203.0.113.77".parse().unwrap());
        assert_eq!(n.partner_name(c), Some("acme"));
        assert_eq!(kind(&n, "2001:db8:1:ff::1"), ClientKind::Partner);
        assert_eq!(kind(&n, "2001:db8:2::1"), ClientKind::Unknown);
    }

    fn proxied() -> Networks {
        nets().with_trusted_proxies(&["10.0.0.0/24", "2001:db8:ff::/48"].map(|c| Cidr::parse(c).unwrap()))
    }

    fn resolve<'a>(n: &Networks, field: &'a str, forwarded_for: Option<&'a str>) -> Option<Client<'a>> {
        let is_list = field.contains(',') || field.contains('"') || field.contains(' ');
        n.resolve_client(field.as_bytes(), is_list, || forwarded_for.map(str::as_bytes))
    }

    fn ip(text: &str) -> Option<Client<'static>> {
        Some(Client::Ip(text.parse().unwrap()))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let n = proxied();
        // Untrusted peer: its X-Forwarded-For never counts, whatever it claims.
        assert_eq!(resolve(&n, "203.0.113.9", Some("10.0.0.1")), ip("203.0.113.9"));
        assert_eq!(resolve(&nets(), "10.0.0.5", Some("85.181.35.98")), ip("10.0.0.5"));
        // Trusted peer: the rightmost hop that is not a trusted proxy.
        assert_eq!(resolve(&n, "10.0.0.5", Some("85.181.35.98")), ip("85.181.35.98"));
        assert_eq!(resolve(&n, "10.0.0.5", Some("10.0.0.1, 85.181.35.98, 10.0.0.7")), ip("85.181.35.98"));
        // A spoofed leftmost hop is passed by: the attacker's own address is nearer.
        assert_eq!(resolve(&n, "10.0.0.5", Some("192.168.1.1, 85.181.35.98")), ip("85.181.35.98"));
        // Ports and brackets as some proxies write them.
        assert_eq!(resolve(&n, "10.0.0.5", Some("85.181.35.98:5123")), ip("85.181.35.98"));
        assert_eq!(resolve(&n, "2001:db8:ff::1", Some("[2a01:4f8::1]:443")), ip("2a01:4f8::1"));
        // Only trusted hops: the request came from the proxy itself, the farthest one.
        assert_eq!(resolve(&n, "10.0.0.5", Some("10.0.0.9")), ip("10.0.0.9"));
        assert_eq!(resolve(&n, "10.0.0.5", None), ip("10.0.0.5"));
        // A hop that is no address: a named client if it is a host name, else nothing.
        assert_eq!(resolve(&n, "10.0.0.5", Some("unknown")), Some(Client::Name(b"unknown")));
        assert_eq!(resolve(&n, "10.0.0.5", Some("1.2.3.4.5.6")), None);
    }

    #[test]
    fn client_field_lists_resolve_like_forwarded_for() {
        let n = proxied();
        // No proxy trusted by `nets()`: the nearest hop, the peer.
        assert_eq!(resolve(&nets(), "10.0.0.2, 10.0.0.1, 85.181.35.98", None), ip("85.181.35.98"));
        assert_eq!(resolve(&nets(), "85.181.35.98, 10.0.0.1", None), ip("10.0.0.1"));
        assert_eq!(resolve(&n, "85.181.35.98, 10.0.0.1", None), ip("85.181.35.98"));
        assert_eq!(resolve(&n, "\"10.5.102.222, 199.96.1.1, 204.246.1.1\" 10.0.0.185", None), ip("204.246.1.1"));
        assert_eq!(resolve(&n, "2a03:0:10ff:f00f::8000, 10.0.0.17 10.0.0.121", None), ip("2a03:0:10ff:f00f::8000"));
        assert_eq!(resolve(&n, "\"\"", None), None);
    }

    #[test]
    fn host_names_are_clients_of_their_own() {
        let n = nets();
        assert_eq!(resolve(&n, "monitoring-server", None), Some(Client::Name(b"monitoring-server")));
        assert_eq!(resolve(&n, "256.1.1.1", None), None);
        let id = ClientId::of_name(b"Monitoring-Server");
        assert_eq!(id, ClientId::of_name(b"monitoring-server"));
        assert_ne!(id, ClientId::of_name(b"monitoring-server2"));
        assert_eq!(ClientId::from_text("monitoring-server"), Some(id));
        assert_eq!(ClientId::from_text("::ffff:10.1.2.3"), Some(ClientId::Ip("10.1.2.3".parse().unwrap())));
        assert_eq!(ClientId::from_text("not a name"), None);
        assert_eq!(n.classify_client(id), ClientClass::UNKNOWN);
        let named = nets().with_host_names(&["Monitoring-Server".into()], &[(1, vec!["backup.globex.example".into()])]);
        assert_eq!(named.classify_client(id).kind, ClientKind::Internal);
        let partner = named.classify_client(ClientId::of_name(b"BACKUP.globex.example"));
        assert_eq!(named.partner_name(partner), Some("globex"));
        assert_eq!(named.classify_client(ClientId::of_name(b"other-server")), ClientClass::UNKNOWN);
    }

    #[test]
    fn cidr_parse_errors_and_display() {
        assert!(Cidr::parse("10.0.0.1/8").is_err());
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("ten/8").is_err());
        assert_eq!(Cidr::parse("10.0.0.0/8").unwrap().to_string(), "10.0.0.0/8");
        assert_eq!(Cidr::parse("2001:db8::/32").unwrap().to_string(), "2001:db8::/32");
        assert_eq!(Cidr::parse("1.2.3.4").unwrap().to_string(), "1.2.3.4/32");
        let all = Networks::new(&[Cidr::parse("0.0.0.0/0").unwrap()], &[]);
        assert_eq!(kind(&all, "1.2.3.4"), ClientKind::Internal);
        assert_eq!(kind(&all, "2a01::1"), ClientKind::Unknown);
    }
}

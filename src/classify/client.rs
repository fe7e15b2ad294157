//! Client classification: internal, a named partner, or unknown, by longest-prefix CIDR match.
//! Owns the prefix table (IPv4 and IPv6 in one IPv6-mapped space). The one place that decides
//! "is this client internal". Never allocates on lookup.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;

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
        Networks { by_len, partner_names: partners.iter().map(|(n, _)| n.clone()).collect() }
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

    /// The partner's configured name, for a class of kind Partner.
    pub fn partner_name(&self, class: ClientClass) -> Option<&str> {
        match class.kind {
            ClientKind::Partner => self.partner_names.get(usize::from(class.partner)).map(String::as_str),
            _ => None,
        }
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

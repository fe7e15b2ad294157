//! Compiled detection rules: what a rule matches, how it aggregates, what it groups by.
//! Owns the rule vocabulary (R1–R6 defaults included). Never holds state: evaluation state
//! lives in [`super::worker`].

use std::fmt;

use regex::bytes::Regex;

use crate::classify::client::ClientKind;
use crate::classify::path::PathClass;
use crate::parse::Transport;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Critical,
    Warning,
    Info,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Severity::Critical, Severity::Warning, Severity::Info];
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
            Severity::Info => "info",
        }
    }
    pub fn from_name(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// How matching events are folded over the window before the threshold test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Aggregate {
    /// Every matching event fires.
    None,
    /// Number of matching events in the window.
    Count,
    /// Number of distinct normalised paths in the window (exact).
    DistinctPaths,
    /// Sum of body bytes of matching events in the window.
    SumBytes,
}

impl Aggregate {
    pub const ALL: [Aggregate; 4] = [Aggregate::None, Aggregate::Count, Aggregate::DistinctPaths, Aggregate::SumBytes];
    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::None => "none",
            Aggregate::Count => "count",
            Aggregate::DistinctPaths => "distinct",
            Aggregate::SumBytes => "sum_bytes",
        }
    }
    pub fn from_name(s: &str) -> Option<Aggregate> {
        Aggregate::ALL.into_iter().find(|v| v.as_str() == s)
    }
}

/// What an alert is about: one client, or one source (server) as a whole.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GroupBy {
    Client,
    Source,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Client => "client",
            GroupBy::Source => "source",
        }
    }
    pub fn from_name(s: &str) -> Option<GroupBy> {
        [GroupBy::Client, GroupBy::Source].into_iter().find(|v| v.as_str() == s)
    }
}

/// Which transport a rule counts, as the line says it ([`Transport`]): R4 counts `plain`.
/// A line whose format carries no scheme, port or TLS field is `unknown` and matches only
/// `any`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TransportMatch {
    Any,
    Plain,
    Tls,
}

impl TransportMatch {
    pub const ALL: [TransportMatch; 3] = [TransportMatch::Any, TransportMatch::Plain, TransportMatch::Tls];

    pub fn as_str(self) -> &'static str {
        match self {
            TransportMatch::Any => "any",
            TransportMatch::Plain => "plain",
            TransportMatch::Tls => "tls",
        }
    }

    pub fn from_name(s: &str) -> Option<TransportMatch> {
        TransportMatch::ALL.into_iter().find(|v| v.as_str() == s)
    }

    fn admits(self, transport: Transport) -> bool {
        match self {
            TransportMatch::Any => true,
            TransportMatch::Plain => transport == Transport::Plain,
            TransportMatch::Tls => transport == Transport::Tls,
        }
    }
}

/// Whether the request carried an authenticated user (`%u` not `-`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserMatch {
    Any,
    Present,
    Absent,
}

impl UserMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            UserMatch::Any => "any",
            UserMatch::Present => "present",
            UserMatch::Absent => "absent",
        }
    }
    pub fn from_name(s: &str) -> Option<UserMatch> {
        [UserMatch::Any, UserMatch::Present, UserMatch::Absent].into_iter().find(|v| v.as_str() == s)
    }
}

/// Which request methods a rule counts, by whether the response to them carries the
/// resource. A 2xx answer to HEAD, OPTIONS or TRACE (or CONNECT) transfers no file: counting
/// it as a fetch is a false alarm, yet it is still a request for the resource (enumeration,
/// probing), so only fetch rules say `body`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MethodKind {
    /// Every method.
    Any,
    /// Methods whose successful response carries the resource: all but [`NO_BODY_METHODS`].
    Body,
    /// Only [`NO_BODY_METHODS`].
    NoBody,
}

/// Methods whose 2xx response never carries the requested file (RFC 9110: HEAD's response
/// has no content, OPTIONS describes the resource, TRACE echoes the request, CONNECT opens a
/// tunnel). Compared exactly: methods are case-sensitive, and a server treats `head` as an
/// unknown method, not as HEAD.
pub const NO_BODY_METHODS: [&[u8]; 4] = [b"HEAD", b"OPTIONS", b"TRACE", b"CONNECT"];

impl MethodKind {
    pub const ALL: [MethodKind; 3] = [MethodKind::Any, MethodKind::Body, MethodKind::NoBody];
    pub fn as_str(self) -> &'static str {
        match self {
            MethodKind::Any => "any",
            MethodKind::Body => "body",
            MethodKind::NoBody => "no_body",
        }
    }
    pub fn from_name(s: &str) -> Option<MethodKind> {
        MethodKind::ALL.into_iter().find(|v| v.as_str() == s)
    }

    /// Whether a request with `method` (as logged) is of this kind.
    pub fn admits(self, method: &[u8]) -> bool {
        match self {
            MethodKind::Any => true,
            MethodKind::Body => !NO_BODY_METHODS.contains(&method),
            MethodKind::NoBody => NO_BODY_METHODS.contains(&method),
        }
    }
}

/// A set of HTTP status codes 0..1000 as a bitset: one AND per test.
#[derive(Clone, PartialEq, Eq)]
pub struct StatusSet {
    bits: [u64; 16],
    /// As written in the config, for `recwatch check`.
    text: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid status {0:?} (expected a code like 200, a class like 2xx or a range like 401-404)")]
pub struct StatusError(pub String);

impl StatusSet {
    pub fn any() -> StatusSet {
        StatusSet { bits: [u64::MAX; 16], text: vec!["any".into()] }
    }

    pub fn parse(items: &[String]) -> Result<StatusSet, StatusError> {
        if items.is_empty() {
            return Ok(StatusSet::any());
        }
        let mut set = StatusSet { bits: [0; 16], text: items.to_vec() };
        for item in items {
            let (lo, hi) = parse_status_item(item).ok_or_else(|| StatusError(item.clone()))?;
            for code in lo..=hi {
                set.bits[usize::from(code / 64)] |= 1 << (code % 64);
            }
        }
        Ok(set)
    }

    pub fn contains(&self, status: u16) -> bool {
        status < 1000 && self.bits[usize::from(status / 64)] & (1 << (status % 64)) != 0
    }
}

fn parse_status_item(item: &str) -> Option<(u16, u16)> {
    let item = item.trim();
    let code = |s: &str| s.parse::<u16>().ok().filter(|c| (100..=599).contains(c));
    if let Some(class) = item.strip_suffix("xx").or_else(|| item.strip_suffix("XX")) {
        let d = class.parse::<u16>().ok().filter(|d| (1..=5).contains(d))?;
        return Some((d * 100, d * 100 + 99));
    }
    if let Some((a, b)) = item.split_once('-') {
        let (a, b) = (code(a)?, code(b)?);
        return (a <= b).then_some((a, b));
    }
    code(item).map(|c| (c, c))
}

impl fmt::Debug for StatusSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.text.join(","))
    }
}

/// One compiled rule. Built by [`crate::config`] from a `[[rule]]` table.
#[derive(Clone, Debug)]
pub struct Rule {
    /// Short stable id (e.g. "R1"); part of every alert id, so renaming it changes alert ids.
    pub id: String,
    /// The name reports and notifications show ("unknown-client-fetch").
    pub name: String,
    pub severity: Severity,
    pub description: String,
    /// Bit mask over [`PathClass`].
    pub path_classes: u8,
    pub statuses: StatusSet,
    /// Upper-case method names; empty = any.
    pub methods: Vec<Vec<u8>>,
    /// Whether the method must be one whose response carries the resource.
    pub method_kind: MethodKind,
    /// Bit mask over [`ClientKind`].
    pub client_kinds: u8,
    pub user: UserMatch,
    /// The transport the line must say (R4: plain).
    pub transport: TransportMatch,
    pub user_agent: Option<Regex>,
    pub aggregate: Aggregate,
    pub window_secs: i64,
    /// Fires when the aggregate is strictly greater than this.
    pub threshold: u64,
    pub group_by: GroupBy,
    /// A new alert is opened only after this many seconds without a matching event.
    pub suppress_secs: i64,
}

impl Rule {
    /// Whether a window and an open episode of `old` stay valid under `self` after a reload:
    /// same id and grouping, and the same events counted the same way (what matches, the
    /// aggregate, the window). Threshold, suppression, name, severity and description may
    /// differ: they judge the counts, they do not make them.
    pub fn counts_like(&self, old: &Rule) -> bool {
        self.id == old.id
            && self.group_by == old.group_by
            && self.aggregate == old.aggregate
            && self.window_secs == old.window_secs
            && self.path_classes == old.path_classes
            && self.statuses == old.statuses
            && self.methods == old.methods
            && self.method_kind == old.method_kind
            && self.client_kinds == old.client_kinds
            && self.user == old.user
            && self.user_agent.as_ref().map(Regex::as_str) == old.user_agent.as_ref().map(Regex::as_str)
    }
}

impl Rule {
    /// A rule for stage unit tests, built without a config file: fires on every GET/any
    /// request to a recording from any client, once per hour per client. Tests change what
    /// they need with struct update syntax.
    #[cfg(test)]
    pub(crate) fn for_test(id: &str, name: &str) -> Rule {
        Rule {
            id: id.into(),
            name: name.into(),
            severity: Severity::Warning,
            description: String::new(),
            path_classes: path_class_bit(PathClass::Recording),
            statuses: StatusSet::any(),
            methods: Vec::new(),
            method_kind: MethodKind::Any,
            client_kinds: ClientKind::ALL.iter().fold(0, |m, k| m | k.bit()),
            user: UserMatch::Any,
            transport: TransportMatch::Any,
            user_agent: None,
            aggregate: Aggregate::None,
            window_secs: 60,
            threshold: 0,
            group_by: GroupBy::Client,
            suppress_secs: 3600,
        }
    }
}

pub fn path_class_bit(c: PathClass) -> u8 {
    match c {
        PathClass::Recording => 1,
        PathClass::Listing => 2,
        PathClass::OtherUnderPrefix => 4,
    }
}

/// The facts about one request a rule can test, already classified.
pub struct Facts<'a> {
    pub path_class: PathClass,
    pub status: u16,
    pub method: &'a [u8],
    pub client_kind: ClientKind,
    pub user_present: bool,
    pub user_agent: &'a [u8],
    pub transport: Transport,
}

impl Rule {
    pub fn matches(&self, f: &Facts<'_>) -> bool {
        self.path_classes & path_class_bit(f.path_class) != 0
            && self.client_kinds & f.client_kind.bit() != 0
            && self.statuses.contains(f.status)
            && match self.user {
                UserMatch::Any => true,
                UserMatch::Present => f.user_present,
                UserMatch::Absent => !f.user_present,
            }
            && (self.methods.is_empty() || self.methods.iter().any(|m| m.eq_ignore_ascii_case(f.method)))
            && self.method_kind.admits(f.method)
            && self.transport.admits(f.transport)
            && self.user_agent.as_ref().is_none_or(|re| re.is_match(f.user_agent))
    }

    pub fn is_windowed(&self) -> bool {
        self.aggregate != Aggregate::None
    }

    /// One line for `recwatch check`.
    pub fn describe(&self) -> String {
        let classes: Vec<&str> = PathClass::ALL
            .iter()
            .filter(|c| self.path_classes & path_class_bit(**c) != 0)
            .map(|c| c.as_str())
            .collect();
        let kinds: Vec<&str> =
            ClientKind::ALL.iter().filter(|k| self.client_kinds & k.bit() != 0).map(|k| k.as_str()).collect();
        let methods: Vec<String> = self.methods.iter().map(|m| String::from_utf8_lossy(m).into_owned()).collect();
        let mut s = format!(
            "{} {} [{}] path={} status={:?} client={} user={}",
            self.id,
            self.name,
            self.severity.as_str(),
            classes.join(","),
            self.statuses,
            kinds.join(","),
            self.user.as_str()
        );
        if !methods.is_empty() {
            s += &format!(" method={}", methods.join(","));
        }
        if self.method_kind != MethodKind::Any {
            s += &format!(" method_kind={}", self.method_kind.as_str());
        }
        if self.transport != TransportMatch::Any {
            s += &format!(" transport={}", self.transport.as_str());
        }
        if let Some(re) = &self.user_agent {
            s += &format!(" user_agent=/{}/", re.as_str());
        }
        match self.aggregate {
            Aggregate::None => s += " fires on every match",
            a => s += &format!(" fires when {} > {} in {} s", a.as_str(), self.threshold, self.window_secs),
        }
        s += &format!(" group_by={} suppress={} s", self.group_by.as_str(), self.suppress_secs);
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_sets() {
        let s = StatusSet::parse(&["200".into(), "206".into()]).unwrap();
        assert!(s.contains(200) && s.contains(206) && !s.contains(204));
        let s = StatusSet::parse(&["2xx".into(), "401-404".into()]).unwrap();
        assert!(s.contains(299) && s.contains(403) && !s.contains(405) && !s.contains(304));
        assert!(StatusSet::any().contains(999) && !StatusSet::any().contains(1000));
        for bad in ["2x", "6xx", "abc", "404-401", "99", "700"] {
            assert!(StatusSet::parse(&[bad.into()]).is_err(), "{bad}");
        }
    }

    /// Issue 12, class 5: HEAD, OPTIONS and TRACE answered 200/206 transfer no audio but
    /// counted as R1 fetches.
    #[test]
    fn head_options_and_trace_answered_2xx_counted_as_fetches() {
        let cases: &[(&[u8], bool, bool)] = &[
            (b"GET", true, false),
            (b"POST", true, false),
            (b"PROPFIND", true, false),
            (b"head", true, false),
            (b"HEAD", false, true),
            (b"OPTIONS", false, true),
            (b"TRACE", false, true),
            (b"CONNECT", false, true),
        ];
        for (method, body, no_body) in cases {
            let name = String::from_utf8_lossy(method);
            assert!(MethodKind::Any.admits(method), "{name}");
            assert_eq!(MethodKind::Body.admits(method), *body, "{name}");
            assert_eq!(MethodKind::NoBody.admits(method), *no_body, "{name}");
        }
        for kind in MethodKind::ALL {
            assert_eq!(MethodKind::from_name(kind.as_str()), Some(kind));
        }
    }
}

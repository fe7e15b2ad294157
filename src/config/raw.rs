//! The config file's schema as serde sees it: every table and key, unknown keys rejected
//! (`deny_unknown_fields`), and the one place every default value is written (the built-in
//! rules included). Owns turning text into these raw structs, with serde's errors placed at
//! their file:line:key. Never validates a value beyond its TOML type: that is [`super::build`].

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::error::{key_text, ConfigError, Locator, Seg};

/// The rules used when a config has no `[[rule]]` table: R1 to R6 of DESIGN.md.
/// Also shipped, with comments, in `config/recwatch.toml`.
pub const DEFAULT_RULES_TOML: &str = include_str!("default_rules.toml");

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawConfig {
    pub store: RawStore,
    pub sensitive: RawSensitive,
    pub networks: RawNetworks,
    pub source: Vec<RawSource>,
    pub engine: RawEngine,
    pub http: RawHttp,
    pub tail: RawTail,
    /// Empty: [`default_rules`] apply.
    pub rule: Vec<RawRule>,
    pub receiver: Vec<RawReceiver>,
    pub privacy: RawPrivacy,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawPrivacy {
    pub pseudonym_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawHttp {
    pub listen: String,
    pub token_file: Option<String>,
    /// None: `http://<listen>`.
    pub external_url: Option<String>,
    pub max_connections: usize,
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp { listen: "127.0.0.1:9898".into(), token_file: None, external_url: None, max_connections: 256 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTail {
    pub poll_interval_ms: u64,
    pub inotify: bool,
    pub rotated_drain_secs: u64,
}

impl Default for RawTail {
    fn default() -> Self {
        RawTail { poll_interval_ms: 250, inotify: true, rotated_drain_secs: 5 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    /// Relative to the config file's directory.
    pub path: String,
    pub retention_days: u32,
    pub rollup_after: u64,
    pub rollup_window_secs: i64,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore { path: "/var/lib/recwatch".into(), retention_days: 90, rollup_after: 20, rollup_window_secs: 3600 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSensitive {
    pub prefixes: Vec<String>,
    pub extensions: Vec<String>,
    pub case_insensitive: bool,
    /// Regex with a named group `call` over the normalised path: which call a file is part of.
    pub call_id: Option<String>,
}

impl Default for RawSensitive {
    fn default() -> Self {
        RawSensitive {
            prefixes: vec!["/recordings/".into()],
            extensions: ["wav", "mp3", "gsm", "ogg"].map(String::from).to_vec(),
            case_insensitive: true,
            call_id: None,
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawNetworks {
    pub internal: Vec<String>,
    pub partner: Vec<RawPartner>,
    /// Peers whose X-Forwarded-For is believed (load balancers, reverse proxies).
    pub trusted_proxies: Vec<String>,
    /// Host-name clients (Apache `HostnameLookups On`) that are internal.
    pub internal_hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPartner {
    pub name: String,
    #[serde(default)]
    pub cidrs: Vec<String>,
    /// The partner's host-name clients.
    #[serde(default)]
    pub hosts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawSource {
    /// None: the path, or `kafka:<topics>`.
    pub name: Option<String>,
    /// "file" or "kafka".
    pub kind: String,
    /// File sources: a path or a glob.
    pub path: Option<String>,
    /// A named format; None: "combined" (unless a format string below is given).
    pub format: Option<String>,
    /// The source's nginx `log_format` string (optionally led by `escape=json|default|none`).
    pub nginx_log_format: Option<String>,
    /// The source's Apache `LogFormat` string.
    pub apache_log_format: Option<String>,
    /// JSON formats: field name → dotted key path, replacing the producer's default paths.
    pub json_fields: Option<std::collections::BTreeMap<String, String>>,
    /// `samba_full_audit`: the shares' `full_audit:prefix` (None: Samba's default `%u|%I`).
    pub samba_prefix: Option<String>,
    /// `samba_full_audit`: the shares' `guest account` (None: Samba's default `nobody`).
    pub samba_guest_account: Option<String>,
    /// How the server behind this log resolves paths: "linux" (nginx, Apache) or "windows"
    /// (IIS, Samba, NAS shares).
    pub path_semantics: String,
    /// Offset of timestamps written without a zone: "UTC" (None) or e.g. "+02:00".
    pub timezone: Option<String>,
    /// Kafka sources: `[source.kafka]`.
    pub kafka: Option<RawKafka>,
}

impl Default for RawSource {
    fn default() -> Self {
        RawSource {
            name: None,
            kind: "file".into(),
            path: None,
            format: None,
            nginx_log_format: None,
            apache_log_format: None,
            json_fields: None,
            samba_prefix: None,
            samba_guest_account: None,
            path_semantics: "linux".into(),
            timezone: None,
            kafka: None,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKafka {
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    pub group_id: String,
    #[serde(default = "kafka_payload")]
    pub payload: String,
    /// librdkafka properties, passed through (TLS, SASL, timeouts, …).
    #[serde(default)]
    pub options: BTreeMap<String, RawOptionValue>,
}

fn kafka_payload() -> String {
    "auto".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawOptionValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl RawOptionValue {
    /// The value as librdkafka takes it.
    pub fn text(&self) -> String {
        match self {
            RawOptionValue::Text(s) => s.clone(),
            RawOptionValue::Int(i) => i.to_string(),
            RawOptionValue::Float(f) => f.to_string(),
            RawOptionValue::Bool(b) => b.to_string(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawEngine {
    /// 0: the number of cores.
    pub workers: usize,
    pub max_clients_per_worker: usize,
    pub client_idle_secs: i64,
    pub future_tolerance_secs: i64,
}

impl Default for RawEngine {
    fn default() -> Self {
        RawEngine { workers: 0, max_clients_per_worker: 16_000, client_idle_secs: 3600, future_tolerance_secs: 300 }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum RawStatus {
    Code(u16),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRule {
    pub id: String,
    pub name: String,
    #[serde(default = "rule_severity")]
    pub severity: String,
    #[serde(default)]
    pub description: String,
    #[serde(default = "rule_path_class")]
    pub path_class: Vec<String>,
    #[serde(default)]
    pub status: Vec<RawStatus>,
    #[serde(default)]
    pub method: Vec<String>,
    /// "any", "body" (not HEAD/OPTIONS/TRACE/CONNECT) or "no_body".
    #[serde(default = "rule_method_kind")]
    pub method_kind: String,
    /// Empty: every kind.
    #[serde(default)]
    pub client_kind: Vec<String>,
    #[serde(default = "rule_user")]
    pub user: String,
    /// "any", "plain" or "tls": what the line must say about the transport.
    #[serde(default = "rule_transport")]
    pub transport: String,
    pub user_agent: Option<String>,
    #[serde(default = "rule_aggregate")]
    pub aggregate: String,
    #[serde(default = "rule_window_secs")]
    pub window_secs: i64,
    #[serde(default)]
    pub threshold: u64,
    #[serde(default = "rule_group_by")]
    pub group_by: String,
    #[serde(default = "rule_suppress_secs")]
    pub suppress_secs: i64,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn rule_severity() -> String {
    "warning".into()
}
fn rule_path_class() -> Vec<String> {
    vec!["recording".into()]
}
fn rule_method_kind() -> String {
    "any".into()
}
fn rule_transport() -> String {
    "any".into()
}
fn rule_user() -> String {
    "any".into()
}
fn rule_aggregate() -> String {
    "none".into()
}
fn rule_window_secs() -> i64 {
    60
}
fn rule_group_by() -> String {
    "client".into()
}
fn rule_suppress_secs() -> i64 {
    3600
}
fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReceiver {
    pub name: String,
    pub kind: String,
    pub url: String,
    /// None: every severity.
    pub severities: Option<Vec<String>>,
    #[serde(default = "receiver_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "receiver_resend_secs")]
    pub resend_secs: u64,
    #[serde(default = "receiver_retry_initial_ms")]
    pub retry_initial_ms: u64,
    #[serde(default = "receiver_retry_max_ms")]
    pub retry_max_ms: u64,
    pub secret_file: Option<String>,
    pub token_file: Option<String>,
}

fn receiver_timeout_ms() -> u64 {
    5000
}
fn receiver_resend_secs() -> u64 {
    60
}
fn receiver_retry_initial_ms() -> u64 {
    1000
}
fn receiver_retry_max_ms() -> u64 {
    300_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFile {
    rule: Vec<RawRule>,
}

/// The built-in rules ([`DEFAULT_RULES_TOML`]).
pub(super) fn default_rules() -> Result<Vec<RawRule>, ConfigError> {
    let locator = Locator::new(DEFAULT_RULES_TOML, false);
    Ok(parse::<RawRuleFile>(Path::new("<built-in rules>"), &locator, DEFAULT_RULES_TOML)?.rule)
}

/// Deserialises `text`; an error names the line (from serde's span, else the key's line) and
/// the key path.
pub(super) fn parse<T: DeserializeOwned>(file: &Path, locator: &Locator, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::new(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path: Vec<Seg> = e
            .path()
            .iter()
            .filter_map(|s| match s {
                serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                serde_path_to_error::Segment::Enum { variant } => Some(Seg::Key(variant.clone())),
                serde_path_to_error::Segment::Unknown => None,
            })
            .collect();
        let inner = e.inner();
        let line = inner.span().map(|s| locator.line_of_offset(s.start)).or_else(|| locator.line_of(&path));
        ConfigError {
            file: file.to_path_buf(),
            line,
            key: key_text(&path),
            message: inner.message().trim().to_string(),
        }
    })
}

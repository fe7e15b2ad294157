//! Configuration: a raw serde view of the TOML file (unknown keys rejected) is *built* into a
//! validated, compiled [`Config`] (CIDR tables, path tables, regexes, rules). `recwatch check`
//! runs exactly this path, so what `check` accepts, `run` and `replay` accept.
//! Owns every error message about the file; each names file, line and key. Never reads logs.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use crate::classify::client::{Cidr, ClientKind, Networks};
use crate::classify::path::{PathClass, SensitivePaths};
use crate::detect::rule::{path_class_bit, Aggregate, GroupBy, Rule, Severity, StatusSet, UserMatch};
use crate::alerting::{ReceiverConfig, ReceiverKind, Secret};
use crate::parse::LogFormat;
use crate::privacy::Pseudonymizer;
use crate::source::kafka::PayloadFormat;

/// The rules used when a config has no `[[rule]]` table: R1, R2, R3, R5 and R6 of DESIGN.md.
/// Also shipped, with comments, in `config/recwatch.toml`.
pub const DEFAULT_RULES_TOML: &str = include_str!("default_rules.toml");

/// Rules per config; the detector tests them as one 128-bit mask.
pub const MAX_RULES: usize = 128;

#[derive(Debug)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based line, when the error can be tied to one.
    pub line: Option<usize>,
    /// Dotted key path, e.g. `rule[2].aggregate`.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    sensitive: RawSensitive,
    #[serde(default)]
    networks: RawNetworks,
    #[serde(default)]
    source: Vec<RawSource>,
    #[serde(default)]
    engine: RawEngine,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    tail: RawTail,
    #[serde(default)]
    rule: Vec<RawRule>,
    #[serde(default)]
    receiver: Vec<RawReceiver>,
    #[serde(default)]
    privacy: RawPrivacy,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawPrivacy {
    pseudonym_key_file: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    #[serde(default = "default_listen")]
    listen: String,
    token_file: Option<String>,
    external_url: Option<String>,
}

fn default_listen() -> String {
    "127.0.0.1:9898".into()
}

impl Default for RawHttp {
    fn default() -> Self {
        RawHttp { listen: default_listen(), token_file: None, external_url: None }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTail {
    #[serde(default = "default_poll_ms")]
    poll_interval_ms: u64,
    #[serde(default = "yes")]
    inotify: bool,
    #[serde(default = "default_drain_secs")]
    rotated_drain_secs: u64,
}

fn default_poll_ms() -> u64 {
    250
}
fn default_drain_secs() -> u64 {
    5
}

impl Default for RawTail {
    fn default() -> Self {
        RawTail { poll_interval_ms: default_poll_ms(), inotify: true, rotated_drain_secs: default_drain_secs() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStore {
    #[serde(default = "default_store_path")]
    path: String,
    #[serde(default = "default_retention_days")]
    retention_days: u32,
}

fn default_store_path() -> String {
    "/var/lib/recwatch".into()
}
fn default_retention_days() -> u32 {
    90
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore { path: default_store_path(), retention_days: default_retention_days() }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSensitive {
    #[serde(default = "default_prefixes")]
    prefixes: Vec<String>,
    #[serde(default = "default_extensions")]
    extensions: Vec<String>,
    #[serde(default = "yes")]
    case_insensitive: bool,
}

fn default_prefixes() -> Vec<String> {
    vec!["/recordings/".into()]
}
fn default_extensions() -> Vec<String> {
    ["wav", "mp3", "gsm", "ogg"].map(String::from).to_vec()
}
fn yes() -> bool {
    true
}

impl Default for RawSensitive {
    fn default() -> Self {
        RawSensitive { prefixes: default_prefixes(), extensions: default_extensions(), case_insensitive: true }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNetworks {
    #[serde(default)]
    internal: Vec<String>,
    #[serde(default)]
    partner: Vec<RawPartner>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPartner {
    name: String,
    cidrs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    name: Option<String>,
    /// "file" (default) or "kafka".
    #[serde(default = "default_kind")]
    kind: String,
    /// File sources: a path or a glob.
    path: Option<String>,
    #[serde(default = "default_format")]
    format: String,
    /// Kafka sources: `[source.kafka]`.
    kafka: Option<RawKafka>,
}

fn default_kind() -> String {
    "file".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKafka {
    brokers: Vec<String>,
    topics: Vec<String>,
    group_id: String,
    #[serde(default = "default_payload")]
    payload: String,
    /// librdkafka properties, passed through (TLS, SASL, timeouts, …).
    #[serde(default)]
    options: std::collections::BTreeMap<String, RawOptionValue>,
}

fn default_payload() -> String {
    "auto".into()
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawOptionValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl RawOptionValue {
    fn text(&self) -> String {
        match self {
            RawOptionValue::Text(s) => s.clone(),
            RawOptionValue::Int(i) => i.to_string(),
            RawOptionValue::Float(f) => f.to_string(),
            RawOptionValue::Bool(b) => b.to_string(),
        }
    }
}

fn default_format() -> String {
    "combined".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngine {
    #[serde(default)]
    workers: usize,
    #[serde(default = "default_max_clients")]
    max_clients_per_worker: usize,
    #[serde(default = "default_idle")]
    client_idle_secs: i64,
}

fn default_max_clients() -> usize {
    100_000
}
fn default_idle() -> i64 {
    3600
}

impl Default for RawEngine {
    fn default() -> Self {
        RawEngine { workers: 0, max_clients_per_worker: default_max_clients(), client_idle_secs: default_idle() }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawStatus {
    Code(u16),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    id: String,
    name: String,
    #[serde(default = "default_severity")]
    severity: String,
    #[serde(default)]
    description: String,
    #[serde(default = "default_path_class")]
    path_class: Vec<String>,
    #[serde(default)]
    status: Vec<RawStatus>,
    #[serde(default)]
    method: Vec<String>,
    #[serde(default)]
    client_kind: Vec<String>,
    #[serde(default = "default_user")]
    user: String,
    user_agent: Option<String>,
    #[serde(default = "default_aggregate")]
    aggregate: String,
    #[serde(default = "default_window")]
    window_secs: i64,
    #[serde(default)]
    threshold: u64,
    #[serde(default = "default_group_by")]
    group_by: String,
    #[serde(default = "default_suppress")]
    suppress_secs: i64,
    #[serde(default = "yes")]
    enabled: bool,
}

fn default_severity() -> String {
    "warning".into()
}
fn default_path_class() -> Vec<String> {
    vec!["recording".into()]
}
fn default_user() -> String {
    "any".into()
}
fn default_aggregate() -> String {
    "none".into()
}
fn default_window() -> i64 {
    60
}
fn default_group_by() -> String {
    "client".into()
}
fn default_suppress() -> i64 {
    3600
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    kind: String,
    url: String,
    severities: Option<Vec<String>>,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_resend_secs")]
    resend_secs: u64,
    #[serde(default = "default_retry_initial_ms")]
    retry_initial_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    retry_max_ms: u64,
    secret_file: Option<String>,
    token_file: Option<String>,
}

fn default_timeout_ms() -> u64 {
    5000
}
fn default_resend_secs() -> u64 {
    60
}
fn default_retry_initial_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    300_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRuleFile {
    rule: Vec<RawRule>,
}

/// One configured log source.
#[derive(Clone, Debug, PartialEq)]
pub struct SourceConfig {
    /// What alerts show as their source (Kafka envelopes that name a host or file override it).
    pub name: String,
    /// Format of the log lines (for Kafka: of each message's line).
    pub format: LogFormat,
    pub input: SourceInput,
}

/// Where a source's lines come from.
#[derive(Clone, Debug, PartialEq)]
pub enum SourceInput {
    /// A path or a glob, followed across rotation.
    File {
        path: String,
    },
    Kafka(KafkaSourceConfig),
}

/// A Kafka consumer-group membership: what `[source.kafka]` configures.
#[derive(Clone, Debug, PartialEq)]
pub struct KafkaSourceConfig {
    /// `host:port` of the bootstrap brokers.
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    pub group_id: String,
    pub payload: PayloadFormat,
    /// librdkafka properties passed through verbatim, validated by librdkafka at load time.
    pub options: Vec<(String, String)>,
}

/// librdkafka properties recwatch sets itself; `[source.kafka.options]` may not override them
/// (the at-least-once promise depends on the last two).
pub const KAFKA_RESERVED_OPTIONS: &[(&str, &str)] = &[
    ("bootstrap.servers", "use source.kafka.brokers"),
    ("metadata.broker.list", "use source.kafka.brokers"),
    ("group.id", "use source.kafka.group_id"),
    ("enable.auto.commit", "offsets are committed automatically once durable; not configurable"),
    ("enable.auto.offset.store", "offsets are stored only after their alerts are durable; not configurable"),
];

impl SourceConfig {
    /// The followed path or glob of a file source.
    pub fn path(&self) -> Option<&str> {
        match &self.input {
            SourceInput::File { path } => Some(path),
            SourceInput::Kafka(_) => None,
        }
    }
}

/// The validated, compiled configuration.
pub struct Config {
    pub file: PathBuf,
    /// sled database directory.
    pub store_dir: PathBuf,
    pub retention_days: u32,
    pub sensitive: Arc<SensitivePaths>,
    pub sensitive_prefixes: Vec<String>,
    pub sensitive_extensions: Vec<String>,
    pub case_insensitive: bool,
    pub networks: Arc<Networks>,
    pub internal: Vec<Cidr>,
    pub partners: Vec<(String, Vec<Cidr>)>,
    pub sources: Vec<SourceConfig>,
    /// Detection worker threads; resolved (0 in the file = number of cores).
    pub workers: usize,
    pub max_clients_per_worker: usize,
    pub client_idle_secs: i64,
    /// Address of /metrics, /healthz, /readyz and the alert API.
    pub listen: std::net::SocketAddr,
    /// File holding the API bearer token; without one the alert API answers 401.
    pub token_file: Option<PathBuf>,
    /// How others reach the API (no trailing slash): the base of the alerts' generatorURL.
    /// Default `http://<listen>`.
    pub external_url: String,
    /// Where alerts are delivered (`[[receiver]]`), in config order.
    pub receivers: Vec<ReceiverConfig>,
    /// Stat-scan interval of the tailer (the safety net under inotify; the only mechanism in poll mode).
    pub poll_interval: std::time::Duration,
    /// false = pure-poll mode, for NFS/SMB where inotify sees nothing.
    pub inotify: bool,
    /// How long a rotated-away or deleted file stays open after it stopped growing.
    pub rotated_drain: std::time::Duration,
    pub rules: Vec<Rule>,
    /// `privacy.pseudonym_key_file`, resolved; None: the state directory's key is used.
    pub pseudonym_key_file: Option<PathBuf>,
    /// The key loaded from `pseudonym_key_file` (checked here, so `check` reports a bad one).
    pub pseudonyms: Option<Pseudonymizer>,
}

/// Key path segment, for error messages and locating lines.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

fn key_text(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Finds lines of keys in the original text, for errors found after deserialising.
struct Locator {
    text: String,
    doc: Option<toml_edit::ImDocument<String>>,
}

impl Locator {
    fn line_of_offset(&self, offset: usize) -> usize {
        self.text.as_bytes()[..offset.min(self.text.len())].iter().filter(|&&b| b == b'\n').count() + 1
    }

    /// The line of the deepest item of `path` that exists in the document.
    fn line_of(&self, path: &[Seg]) -> Option<usize> {
        let doc = self.doc.as_ref()?;
        let mut item = doc.as_item();
        let mut best = None;
        for seg in path {
            let next = match seg {
                Seg::Key(k) => item.get(k.as_str()),
                Seg::Index(i) => match item {
                    toml_edit::Item::ArrayOfTables(aot) => aot.get(*i).map(|_| ()).and_then(|_| item.get(*i)),
                    _ => item.get(*i),
                },
            };
            let Some(next) = next else { break };
            item = next;
            if let Some(span) = item_span(item) {
                best = Some(span);
            }
        }
        best.map(|s| self.line_of_offset(s))
    }
}

fn item_span(item: &toml_edit::Item) -> Option<usize> {
    match item {
        toml_edit::Item::Value(v) => v.span().map(|s| s.start),
        toml_edit::Item::Table(t) => t.span().map(|s| s.start),
        toml_edit::Item::ArrayOfTables(a) => a.span().map(|s| s.start),
        toml_edit::Item::None => None,
    }
}

struct Builder<'a> {
    file: &'a Path,
    locator: &'a Locator,
}

impl Builder<'_> {
    fn err(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_path_buf(),
            line: self.locator.line_of(path),
            key: key_text(path),
            message: message.into(),
        }
    }
}

fn key(k: &str) -> Seg {
    Seg::Key(k.to_string())
}

fn one_of<T: Copy>(
    b: &Builder<'_>,
    path: &[Seg],
    value: &str,
    parse: impl Fn(&str) -> Option<T>,
    names: &[&str],
) -> Result<T, ConfigError> {
    parse(value).ok_or_else(|| b.err(path, format!("unknown value {value:?} (expected one of: {})", names.join(", "))))
}

impl Config {
    /// Reads, parses and validates a config file.
    pub fn load(file: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(file).map_err(|e| ConfigError {
            file: file.to_path_buf(),
            line: None,
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::from_toml(file, &text)
    }

    /// Parses and validates config text; `file` is used in messages and to resolve relative paths.
    pub fn from_toml(file: &Path, text: &str) -> Result<Config, ConfigError> {
        let locator = Locator { text: text.to_string(), doc: toml_edit::ImDocument::parse(text.to_string()).ok() };
        let raw: RawConfig = deserialize(file, &locator, text)?;
        let b = Builder { file, locator: &locator };
        let raw_rules = if raw.rule.is_empty() {
            let defaults = Locator { text: DEFAULT_RULES_TOML.to_string(), doc: None };
            deserialize::<RawRuleFile>(Path::new("<built-in rules>"), &defaults, DEFAULT_RULES_TOML)?.rule
        } else {
            raw.rule
        };
        let mut config = build(&b, raw.store, raw.sensitive, raw.networks, raw.source, raw.engine, raw_rules)?;
        let base = file.parent().unwrap_or(Path::new("."));
        config.listen = raw.http.listen.parse().map_err(|_| {
            b.err(&[key("http"), key("listen")], format!("{:?} is not an address like 127.0.0.1:9898", raw.http.listen))
        })?;
        config.token_file = raw.http.token_file.map(|f| base.join(f));
        config.external_url = match raw.http.external_url {
            None => format!("http://{}", config.listen),
            Some(u) => http_url(&b, &[key("http"), key("external_url")], &u, true)?,
        };
        config.receivers = build_receivers(&b, base, raw.receiver)?;
        if !(10..=60_000).contains(&raw.tail.poll_interval_ms) {
            return Err(b.err(&[key("tail"), key("poll_interval_ms")], "must be between 10 and 60000"));
        }
        config.poll_interval = std::time::Duration::from_millis(raw.tail.poll_interval_ms);
        config.inotify = raw.tail.inotify;
        config.rotated_drain = std::time::Duration::from_secs(raw.tail.rotated_drain_secs);
        if let Some(f) = raw.privacy.pseudonym_key_file {
            let at = [key("privacy"), key("pseudonym_key_file")];
            if f.trim().is_empty() {
                return Err(b.err(&at, "must not be empty"));
            }
            let path = base.join(f);
            config.pseudonyms = Some(Pseudonymizer::load(&path).map_err(|e| b.err(&at, e.to_string()))?);
            config.pseudonym_key_file = Some(path);
        }
        Ok(config)
    }

    /// A readable summary of the effective configuration, for `recwatch check`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        s += &format!("config: {}\n", self.file.display());
        s += &format!("store: {} (retention {} days)\n", self.store_dir.display(), self.retention_days);
        s += &format!(
            "sensitive: prefixes {:?}, extensions {:?}, case-{}\n",
            self.sensitive_prefixes,
            self.sensitive_extensions,
            if self.case_insensitive { "insensitive" } else { "sensitive" }
        );
        let internal: Vec<String> = self.internal.iter().map(|c| c.to_string()).collect();
        s += &format!(
            "internal networks: {}\n",
            if internal.is_empty() { "(none)".into() } else { internal.join(", ") }
        );
        for (name, cidrs) in &self.partners {
            let c: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
            s += &format!("partner {name}: {}\n", c.join(", "));
        }
        for src in &self.sources {
            match &src.input {
                SourceInput::File { path } => {
                    s += &format!("source {}: {} ({})\n", src.name, path, src.format.as_str());
                }
                SourceInput::Kafka(k) => {
                    s += &format!(
                        "source {}: kafka topics {:?} from {} as group {:?} ({} payload, {} lines, {} client options)\n",
                        src.name,
                        k.topics,
                        k.brokers.join(","),
                        k.group_id,
                        k.payload.as_str(),
                        src.format.as_str(),
                        k.options.len()
                    );
                }
            }
        }
        s += &format!(
            "engine: {} workers, at most {} clients per worker, idle eviction after {} s\n",
            self.workers, self.max_clients_per_worker, self.client_idle_secs
        );
        s += &format!(
            "http: {} (alert API {})\n",
            self.listen,
            self.token_file
                .as_ref()
                .map_or("disabled: no token_file".to_string(), |f| format!("token in {}", f.display()))
        );
        s += &format!(
            "tail: {} every {} ms, rotated files drained for {} s\n",
            if self.inotify { "inotify + stat scan" } else { "stat scan only (poll mode)" },
            self.poll_interval.as_millis(),
            self.rotated_drain.as_secs()
        );
        s += &format!("external url: {}\n", self.external_url);
        if self.receivers.is_empty() {
            s += "receivers: none (alerts are only stored and served)\n";
        }
        for r in &self.receivers {
            s += &format!("{}\n", r.describe());
        }
        s += &format!(
            "privacy: personnummer and phone numbers in paths pseudonymised with the key in {}\n",
            self.pseudonym_key_file.as_ref().map_or_else(
                || format!("{} (created on first use)", self.store_dir.join(crate::privacy::STATE_KEY_FILE).display()),
                |f| f.display().to_string()
            )
        );
        s += &format!("rules ({}):\n", self.rules.len());
        for r in &self.rules {
            s += &format!("  {}\n", r.describe());
        }
        s
    }
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn deserialize<T: serde::de::DeserializeOwned>(file: &Path, locator: &Locator, text: &str) -> Result<T, ConfigError> {
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

fn build(
    b: &Builder<'_>,
    store: RawStore,
    sensitive: RawSensitive,
    networks: RawNetworks,
    sources: Vec<RawSource>,
    engine: RawEngine,
    raw_rules: Vec<RawRule>,
) -> Result<Config, ConfigError> {
    let base = b.file.parent().unwrap_or(Path::new("."));
    if store.path.trim().is_empty() {
        return Err(b.err(&[key("store"), key("path")], "must not be empty"));
    }
    let store_dir = base.join(&store.path);

    for (i, p) in sensitive.prefixes.iter().enumerate() {
        if !p.starts_with('/') {
            return Err(
                b.err(&[key("sensitive"), key("prefixes"), Seg::Index(i)], format!("{p:?} must start with '/'"))
            );
        }
    }
    for (i, e) in sensitive.extensions.iter().enumerate() {
        if e.is_empty() || e.contains(['.', '/']) {
            return Err(b.err(
                &[key("sensitive"), key("extensions"), Seg::Index(i)],
                format!("{e:?} must be a bare extension like \"wav\" (no dot, no slash)"),
            ));
        }
    }
    let sensitive_paths = SensitivePaths::new(&sensitive.prefixes, &sensitive.extensions, sensitive.case_insensitive);

    let mut internal = Vec::new();
    for (i, c) in networks.internal.iter().enumerate() {
        internal.push(
            Cidr::parse(c).map_err(|e| b.err(&[key("networks"), key("internal"), Seg::Index(i)], e.to_string()))?,
        );
    }
    let mut partners = Vec::new();
    for (i, p) in networks.partner.iter().enumerate() {
        let at = |k: &str| vec![key("networks"), key("partner"), Seg::Index(i), key(k)];
        if p.name.trim().is_empty() || partners.iter().any(|(n, _)| *n == p.name) {
            return Err(b.err(&at("name"), format!("partner name {:?} is empty or used twice", p.name)));
        }
        let mut cidrs = Vec::new();
        for (j, c) in p.cidrs.iter().enumerate() {
            let mut path = at("cidrs");
            path.push(Seg::Index(j));
            cidrs.push(Cidr::parse(c).map_err(|e| b.err(&path, e.to_string()))?);
        }
        partners.push((p.name.clone(), cidrs));
    }
    let networks_table = Networks::new(&internal, &partners);

    let mut source_configs: Vec<SourceConfig> = Vec::new();
    for (i, s) in sources.into_iter().enumerate() {
        let at = |k: &str| [key("source"), Seg::Index(i), key(k)];
        let format = one_of(b, &at("format"), &s.format, LogFormat::from_name, &LogFormat::ALL.map(|f| f.as_str()))?;
        let (input, default_name) = match s.kind.as_str() {
            "file" => {
                if s.kafka.is_some() {
                    return Err(b.err(&at("kafka"), "only for kind = \"kafka\""));
                }
                let Some(path) = s.path.filter(|p| !p.trim().is_empty()) else {
                    return Err(b.err(&at("path"), "a file source needs a non-empty path (or set kind = \"kafka\")"));
                };
                (SourceInput::File { path: path.clone() }, path)
            }
            "kafka" => {
                if s.path.is_some() {
                    return Err(b.err(&at("path"), "a kafka source has no path (its input is [source.kafka])"));
                }
                let Some(raw) = s.kafka else {
                    return Err(b.err(&at("kind"), "a kafka source needs a [source.kafka] table"));
                };
                let kafka = build_kafka(b, i, raw)?;
                let name = format!("kafka:{}", kafka.topics.join(","));
                (SourceInput::Kafka(kafka), name)
            }
            other => return Err(b.err(&at("kind"), format!("unknown value {other:?} (expected one of: file, kafka)"))),
        };
        let name = s.name.unwrap_or(default_name);
        if source_configs.iter().any(|o| o.name == name) {
            return Err(b.err(&at("name"), format!("source name {name:?} is used twice")));
        }
        source_configs.push(SourceConfig { name, format, input });
    }

    let workers = match engine.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n > 256 => return Err(b.err(&[key("engine"), key("workers")], "at most 256")),
        n => n,
    };
    if engine.client_idle_secs <= 0 {
        return Err(b.err(&[key("engine"), key("client_idle_secs")], "must be positive"));
    }
    if engine.max_clients_per_worker == 0 {
        return Err(b.err(&[key("engine"), key("max_clients_per_worker")], "must be positive"));
    }

    let mut rules: Vec<Rule> = Vec::new();
    for (i, r) in raw_rules.into_iter().enumerate() {
        if !r.enabled {
            continue;
        }
        let rule = build_rule(b, i, r)?;
        if let Some(dup) = rules.iter().find(|o| o.id == rule.id || o.name == rule.name) {
            return Err(b.err(
                &[key("rule"), Seg::Index(i), key("id")],
                format!("rule id/name {:?}/{:?} is already used by {}", rule.id, rule.name, dup.id),
            ));
        }
        rules.push(rule);
    }

    if rules.len() > MAX_RULES {
        return Err(b.err(&[key("rule")], format!("at most {MAX_RULES} rules")));
    }

    Ok(Config {
        file: b.file.to_path_buf(),
        store_dir,
        retention_days: store.retention_days,
        sensitive: Arc::new(sensitive_paths),
        sensitive_prefixes: sensitive.prefixes,
        sensitive_extensions: sensitive.extensions,
        case_insensitive: sensitive.case_insensitive,
        networks: Arc::new(networks_table),
        internal,
        partners,
        sources: source_configs,
        workers,
        max_clients_per_worker: engine.max_clients_per_worker,
        client_idle_secs: engine.client_idle_secs,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], 9898)),
        token_file: None,
        external_url: "http://127.0.0.1:9898".into(),
        receivers: Vec::new(),
        poll_interval: std::time::Duration::from_millis(250),
        inotify: true,
        rotated_drain: std::time::Duration::from_secs(5),
        rules,
        pseudonym_key_file: None,
        pseudonyms: None,
    })
}

/// A URL with scheme http (or https where `https_ok`: a URL for others to follow, never one
/// recwatch requests itself: this build has no TLS client) and a host; returned without a
/// trailing slash.
fn http_url(b: &Builder<'_>, at: &[Seg], text: &str, https_ok: bool) -> Result<String, ConfigError> {
    let url = url::Url::parse(text).map_err(|e| b.err(at, format!("{text:?} is not a URL: {e}")))?;
    match url.scheme() {
        "http" => {}
        "https" if https_ok => {}
        "https" => {
            return Err(b.err(
                at,
                format!("{text:?}: https is not supported by this build (no TLS client); use http on a trusted network or a local TLS-terminating proxy"),
            ))
        }
        other => return Err(b.err(at, format!("{text:?}: scheme {other:?} is not http"))),
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(b.err(at, format!("{text:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(b.err(at, format!("{text:?}: credentials in the URL are not allowed (use token_file)")));
    }
    if url.fragment().is_some() {
        return Err(b.err(at, format!("{text:?}: a URL fragment is not allowed")));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Reads a key or token file: its contents without surrounding whitespace, at least 16 bytes;
/// a token (`printable`: it goes into a header) without control characters.
fn read_secret(
    b: &Builder<'_>,
    at: &[Seg],
    base: &Path,
    file: &str,
    printable: bool,
) -> Result<(PathBuf, Secret), ConfigError> {
    let path = base.join(file);
    let bytes = std::fs::read(&path).map_err(|e| b.err(at, format!("cannot read {}: {e}", path.display())))?;
    let trimmed = bytes.trim_ascii();
    if trimmed.len() < 16 {
        return Err(b.err(at, format!("{} holds fewer than 16 bytes", path.display())));
    }
    if printable && trimmed.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Err(b.err(at, format!("{}: a token must be printable (it goes into a header)", path.display())));
    }
    Ok((path, Secret::new(trimmed.to_vec())))
}

fn build_receivers(b: &Builder<'_>, base: &Path, raw: Vec<RawReceiver>) -> Result<Vec<ReceiverConfig>, ConfigError> {
    let mut receivers: Vec<ReceiverConfig> = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = |k: &str| vec![key("receiver"), Seg::Index(i), key(k)];
        let valid_name = !r.name.is_empty()
            && r.name.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_' || c == b'-');
        if !valid_name {
            return Err(
                b.err(&at("name"), format!("{:?} must be made of a-z, 0-9, _ and - (it is a metric label)", r.name))
            );
        }
        if receivers.iter().any(|o| o.name == r.name) {
            return Err(b.err(&at("name"), format!("receiver name {:?} is used twice", r.name)));
        }
        let kind = one_of(b, &at("kind"), &r.kind, ReceiverKind::from_name, &ReceiverKind::ALL.map(|k| k.as_str()))?;
        let url = http_url(b, &at("url"), &r.url, false)?;
        let severities = match &r.severities {
            None => Severity::ALL.to_vec(),
            Some(list) if list.is_empty() => {
                return Err(b.err(&at("severities"), "must name at least one severity (leave it out for all)"))
            }
            Some(list) => {
                let mut out = Vec::new();
                for (j, s) in list.iter().enumerate() {
                    let mut path = at("severities");
                    path.push(Seg::Index(j));
                    out.push(one_of(b, &path, s, Severity::from_name, &Severity::ALL.map(|s| s.as_str()))?);
                }
                out
            }
        };
        if !(100..=60_000).contains(&r.timeout_ms) {
            return Err(b.err(&at("timeout_ms"), "must be between 100 and 60000"));
        }
        if !(1..=86_400).contains(&r.resend_secs) {
            return Err(b.err(&at("resend_secs"), "must be between 1 and 86400"));
        }
        if !(10..=3_600_000).contains(&r.retry_initial_ms) {
            return Err(b.err(&at("retry_initial_ms"), "must be between 10 and 3600000"));
        }
        if !(r.retry_initial_ms..=3_600_000).contains(&r.retry_max_ms) {
            return Err(b.err(&at("retry_max_ms"), "must be between retry_initial_ms and 3600000"));
        }
        let (secret_file, secret) = match (&r.secret_file, kind) {
            (Some(f), ReceiverKind::Webhook) => {
                let (path, secret) = read_secret(b, &at("secret_file"), base, f, false)?;
                (Some(path), Some(secret))
            }
            (Some(_), ReceiverKind::Alertmanager) => {
                return Err(b.err(&at("secret_file"), "only webhook receivers sign their bodies"))
            }
            (None, ReceiverKind::Webhook) => {
                return Err(b.err(&at("secret_file"), "a webhook receiver needs secret_file (its HMAC-SHA256 key)"))
            }
            (None, ReceiverKind::Alertmanager) => (None, None),
        };
        let (token_file, token) = match &r.token_file {
            Some(f) => {
                let (path, token) = read_secret(b, &at("token_file"), base, f, true)?;
                (Some(path), Some(token))
            }
            None => (None, None),
        };
        receivers.push(ReceiverConfig {
            name: r.name,
            kind,
            url,
            severities,
            timeout: std::time::Duration::from_millis(r.timeout_ms),
            resend: std::time::Duration::from_secs(r.resend_secs),
            retry_initial: std::time::Duration::from_millis(r.retry_initial_ms),
            retry_max: std::time::Duration::from_millis(r.retry_max_ms),
            secret,
            token,
            secret_file,
            token_file,
        });
    }
    Ok(receivers)
}

fn build_kafka(b: &Builder<'_>, i: usize, raw: RawKafka) -> Result<KafkaSourceConfig, ConfigError> {
    let at = |k: &str| vec![key("source"), Seg::Index(i), key("kafka"), key(k)];
    let at_item = |k: &str, j: usize| {
        let mut p = at(k);
        p.push(Seg::Index(j));
        p
    };
    if raw.brokers.is_empty() {
        return Err(b.err(&at("brokers"), "needs at least one broker (host:port)"));
    }
    for (j, broker) in raw.brokers.iter().enumerate() {
        let valid = broker.rsplit_once(':').is_some_and(|(host, port)| {
            !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) && !broker.contains([',', ' '])
        });
        if !valid {
            return Err(b.err(&at_item("brokers", j), format!("{broker:?} is not host:port")));
        }
    }
    if raw.topics.is_empty() {
        return Err(b.err(&at("topics"), "needs at least one topic"));
    }
    for (j, topic) in raw.topics.iter().enumerate() {
        if topic.trim().is_empty() || topic.contains([' ', ',']) {
            return Err(b.err(&at_item("topics", j), format!("{topic:?} is not a topic name (or ^regex)")));
        }
    }
    if raw.group_id.trim().is_empty() {
        return Err(b.err(&at("group_id"), "must not be empty"));
    }
    let payload =
        one_of(b, &at("payload"), &raw.payload, PayloadFormat::from_name, &PayloadFormat::ALL.map(|p| p.as_str()))?;
    let mut options = Vec::new();
    for (name, value) in &raw.options {
        let mut path = at("options");
        path.push(key(name));
        if let Some((_, why)) = KAFKA_RESERVED_OPTIONS.iter().find(|(k, _)| k == name) {
            return Err(b.err(&path, format!("set by recwatch: {why}")));
        }
        let value = value.text();
        crate::source::kafka::check_client_option(name, &value).map_err(|e| b.err(&path, e))?;
        options.push((name.clone(), value));
    }
    Ok(KafkaSourceConfig { brokers: raw.brokers, topics: raw.topics, group_id: raw.group_id, payload, options })
}

fn build_rule(b: &Builder<'_>, i: usize, r: RawRule) -> Result<Rule, ConfigError> {
    let at = |k: &str| vec![key("rule"), Seg::Index(i), key(k)];
    let at_item = |k: &str, j: usize| {
        let mut p = at(k);
        p.push(Seg::Index(j));
        p
    };
    if r.id.trim().is_empty() || r.name.trim().is_empty() {
        return Err(b.err(&at("id"), "id and name must not be empty"));
    }
    let severity = one_of(b, &at("severity"), &r.severity, Severity::from_name, &Severity::ALL.map(|s| s.as_str()))?;
    let mut path_classes = 0u8;
    for (j, c) in r.path_class.iter().enumerate() {
        let class = one_of(
            b,
            &at_item("path_class", j),
            c,
            |s| PathClass::ALL.into_iter().find(|p| p.as_str() == s),
            &PathClass::ALL.map(|p| p.as_str()),
        )?;
        path_classes |= path_class_bit(class);
    }
    if path_classes == 0 {
        return Err(b.err(&at("path_class"), "must name at least one path class"));
    }
    let status_text: Vec<String> = r
        .status
        .iter()
        .map(|s| match s {
            RawStatus::Code(c) => c.to_string(),
            RawStatus::Text(t) => t.clone(),
        })
        .collect();
    let statuses = StatusSet::parse(&status_text).map_err(|e| b.err(&at("status"), e.to_string()))?;
    let mut client_kinds = 0u8;
    for (j, k) in r.client_kind.iter().enumerate() {
        let kind =
            one_of(b, &at_item("client_kind", j), k, ClientKind::from_name, &ClientKind::ALL.map(|k| k.as_str()))?;
        client_kinds |= kind.bit();
    }
    if r.client_kind.is_empty() {
        client_kinds = ClientKind::ALL.iter().fold(0, |m, k| m | k.bit());
    }
    let user = one_of(b, &at("user"), &r.user, UserMatch::from_name, &["any", "present", "absent"])?;
    let user_agent = match &r.user_agent {
        None => None,
        Some(re) => Some(
            regex::bytes::RegexBuilder::new(re)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| b.err(&at("user_agent"), format!("invalid regex: {e}")))?,
        ),
    };
    let aggregate =
        one_of(b, &at("aggregate"), &r.aggregate, Aggregate::from_name, &Aggregate::ALL.map(|a| a.as_str()))?;
    let group_by = one_of(b, &at("group_by"), &r.group_by, GroupBy::from_name, &["client", "source"])?;
    if aggregate != Aggregate::None {
        if !(1..=86_400).contains(&r.window_secs) {
            return Err(b.err(&at("window_secs"), "must be between 1 and 86400"));
        }
        if r.threshold == 0 {
            return Err(b.err(
                &at("threshold"),
                "a windowed rule needs a threshold > 0 (it fires when the aggregate exceeds it)",
            ));
        }
    }
    if r.suppress_secs < 0 {
        return Err(b.err(&at("suppress_secs"), "must not be negative"));
    }
    Ok(Rule {
        id: r.id,
        name: r.name,
        severity,
        description: r.description,
        path_classes,
        statuses,
        methods: r.method.iter().map(|m| m.trim().to_ascii_uppercase().into_bytes()).collect(),
        client_kinds,
        user,
        user_agent,
        aggregate,
        window_secs: r.window_secs,
        threshold: r.threshold,
        group_by,
        suppress_secs: r.suppress_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/recwatch/recwatch.toml"), text)
    }

    #[test]
    fn empty_config_gets_the_default_rules() {
        let c = load("").unwrap();
        let ids: Vec<&str> = c.rules.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(ids, ["R1", "R2", "R3", "R5", "R6"]);
        assert_eq!(c.store_dir, Path::new("/var/lib/recwatch"));
        assert!(c.workers >= 1);
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let e = load(
            "[networks]\ninternal = [\"10.0.0.0/8\"]\n\n[[rule]]\nid = \"X\"\nname = \"x\"\nagregate = \"count\"\n",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("/etc/recwatch/recwatch.toml:7: rule[0]"), "{msg}");
        assert!(msg.contains("agregate"), "{msg}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = load("[networks]\ninternal = [\n  \"10.0.0.0/8\",\n  \"10.0.0.1/8\",\n]\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(4), "networks.internal[1]"), "{e}");
        let e = load("[[source]]\npath = \"/var/log/nginx/access.log\"\nformat = \"combind\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "source[0].format"), "{e}");
        assert!(e.message.contains("combined"), "{e}");
        let e = load("[[rule]]\nid = \"R9\"\nname = \"n\"\naggregate = \"distinct\"\n").unwrap_err();
        assert_eq!(e.key, "rule[0].threshold", "{e}");
        let e = load("[[rule]]\nid = \"R9\"\nname = \"n\"\nuser_agent = \"(\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(4), "rule[0].user_agent"), "{e}");
        let e = load("[sensitive]\nprefixes = [\"recordings/\"]\n").unwrap_err();
        assert_eq!(e.key, "sensitive.prefixes[0]", "{e}");
    }

    #[test]
    fn syntax_errors_have_a_line() {
        let e = load("[store]\npath = \n").unwrap_err();
        assert_eq!(e.line, Some(2), "{e}");
    }

    #[test]
    fn relative_store_path_is_relative_to_the_config_file() {
        let c = load("[store]\npath = \"state\"\n").unwrap();
        assert_eq!(c.store_dir, Path::new("/etc/recwatch/state"));
    }

    const KAFKA: &str = "[[source]]\nname = \"fleet\"\nkind = \"kafka\"\n[source.kafka]\nbrokers = [\"k1:9092\", \"[::1]:9093\"]\ntopics = [\"logs\"]\ngroup_id = \"recwatch\"\n";

    #[test]
    fn kafka_sources_are_built_with_their_options() {
        let c = load(&format!("{KAFKA}payload = \"envelope\"\n[source.kafka.options]\n\"security.protocol\" = \"SASL_SSL\"\n\"session.timeout.ms\" = 6000\n\"enable.partition.eof\" = false\n")).unwrap();
        let SourceInput::Kafka(k) = &c.sources[0].input else { panic!("not kafka: {:?}", c.sources[0]) };
        assert_eq!(
            (k.topics.as_slice(), k.group_id.as_str(), k.payload),
            (&["logs".to_string()][..], "recwatch", PayloadFormat::Envelope)
        );
        assert_eq!(k.brokers, ["k1:9092", "[::1]:9093"]);
        let options: Vec<(&str, &str)> = k.options.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert_eq!(
            options,
            [("enable.partition.eof", "false"), ("security.protocol", "SASL_SSL"), ("session.timeout.ms", "6000")]
        );
        assert_eq!(c.sources[0].path(), None);
        assert!(c.describe().contains("kafka topics [\"logs\"]"), "{}", c.describe());
    }

    #[test]
    fn kafka_errors_name_their_line_and_key() {
        let e = load(&format!("{KAFKA}[source.kafka.options]\n\"group.id\" = \"other\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(9), "source[0].kafka.options.group.id"), "{e}");
        assert!(e.message.contains("group_id"), "{e}");
        let e = load(&format!("{KAFKA}[source.kafka.options]\n\"no.such.thing\" = 1\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(9), "source[0].kafka.options.no.such.thing"), "{e}");
        let e = load(&format!("{KAFKA}[source.kafka.options]\n\"enable.auto.offset.store\" = true\n")).unwrap_err();
        assert!(e.message.contains("durable"), "{e}");
        let e = load(&KAFKA.replace("\"k1:9092\"", "\"k1\"")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(5), "source[0].kafka.brokers[0]"), "{e}");
        let e = load(&KAFKA.replace("topics = [\"logs\"]", "topics = []")).unwrap_err();
        assert_eq!(e.key, "source[0].kafka.topics", "{e}");
        let e = load(&format!("{KAFKA}payload = \"xml\"\n")).unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(8), "source[0].kafka.payload"), "{e}");
        let e = load("[[source]]\nkind = \"kafka\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(2), "source[0].kind"), "{e}");
        let e = load("[[source]]\nkind = \"kafka\"\npath = \"/x\"\n").unwrap_err();
        assert_eq!((e.line, e.key.as_str()), (Some(3), "source[0].path"), "{e}");
        let e = load("[[source]]\nkind = \"pipe\"\n").unwrap_err();
        assert!(e.message.contains("file, kafka"), "{e}");
        let e = load("[[source]]\nname = \"x\"\n").unwrap_err();
        assert_eq!(e.key, "source[0].path", "{e}");
        let e = load(&format!("{KAFKA}[source.kafka.options]\n\"fetch.wait.max.ms\" = \"soon\"\n")).unwrap_err();
        assert_eq!(e.line, Some(9), "{e}");
    }

    #[test]
    fn the_commented_kafka_example_is_valid() {
        let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/recwatch.toml")).unwrap();
        let start = text.find("# [[source]]").expect("a commented Kafka example");
        let block: String = text[start..]
            .lines()
            .take_while(|l| l.starts_with('#'))
            .map(|l| format!("{}\n", l.trim_start_matches('#').strip_prefix(' ').unwrap_or("")))
            .collect();
        let c = load(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        assert!(matches!(c.sources[0].input, SourceInput::Kafka(_)));
    }

    #[test]
    fn pseudonym_key_file_is_loaded_relative_to_the_config_and_errors_name_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("recwatch.toml");
        std::fs::write(dir.path().join("key"), "0123456789abcdef0123456789abcdef\n").unwrap();
        std::fs::write(dir.path().join("short"), "short\n").unwrap();
        let c = Config::from_toml(&file, "[privacy]\npseudonym_key_file = \"key\"\n").unwrap();
        assert_eq!(c.pseudonym_key_file.as_deref(), Some(dir.path().join("key").as_path()));
        let expected = Pseudonymizer::new(b"0123456789abcdef0123456789abcdef");
        assert_eq!(c.pseudonyms.unwrap().pseudonymize("/r/121212-1212"), expected.pseudonymize("/r/121212-1212"));
        for (name, wanted) in [("short", "shorter than 16 bytes"), ("missing", "cannot read")] {
            let text = format!("[store]\npath = \"s\"\n\n[privacy]\npseudonym_key_file = \"{name}\"\n");
            let e = Config::from_toml(&file, &text).unwrap_err();
            assert_eq!((e.line, e.key.as_str()), (Some(5), "privacy.pseudonym_key_file"), "{e}");
            assert!(e.message.contains(wanted), "{e}");
        }
        assert!(load("").unwrap().pseudonyms.is_none());
    }

    #[test]
    fn shipped_configs_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        for f in ["config/recwatch.toml", "config/examples/reference.toml"] {
            let c = Config::load(&root.join(f)).unwrap_or_else(|e| panic!("{e}"));
            assert!(!c.rules.is_empty(), "{f}");
        }
        let reference = Config::load(&root.join("config/examples/reference.toml")).unwrap();
        let names: Vec<&str> = reference.rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["unknown-client-fetch", "enumeration"]);
    }

    #[test]
    fn receivers_are_validated_and_their_secrets_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("hmac.key"), "0123456789abcdef0123\n").unwrap();
        std::fs::write(dir.path().join("short"), "abc").unwrap();
        let file = dir.path().join("recwatch.toml");
        let load = |text: &str| Config::from_toml(&file, text);
        let c = load(
            "[http]\nexternal_url = \"https://recwatch.example/\"\n[[receiver]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093/\"\nseverities = [\"critical\"]\n[[receiver]]\nname = \"hook-1\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:8080/hook\"\nsecret_file = \"hmac.key\"\ntimeout_ms = 500\n",
        )
        .unwrap();
        assert_eq!(c.external_url, "https://recwatch.example");
        let (am, hook) = (&c.receivers[0], &c.receivers[1]);
        assert_eq!(
            (am.endpoint().as_str(), am.severities.as_slice()),
            ("http://127.0.0.1:9093/api/v2/alerts", &[Severity::Critical][..])
        );
        assert_eq!(hook.endpoint(), "http://127.0.0.1:8080/hook");
        assert_eq!(hook.secret.as_ref().unwrap().expose(), b"0123456789abcdef0123");
        assert_eq!(hook.severities, Severity::ALL);
        assert_eq!((hook.timeout.as_millis(), hook.resend.as_secs()), (500, 60));
        assert!(!format!("{c:?}").contains("0123456789abcdef"), "secrets are never printed");
        assert_eq!(load("").unwrap().external_url, "http://127.0.0.1:9898");

        let err = |text: &str| load(text).unwrap_err();
        let am = "[[receiver]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:9093\"\n";
        let e = err(&format!("{am}[[receiver]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://h\"\n"));
        assert_eq!((e.line, e.key.as_str()), (Some(6), "receiver[1].name"), "{e}");
        let e = err("[[receiver]]\nname = \"On Call\"\nkind = \"webhook\"\nurl = \"http://h\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(2), "receiver[0].name"), "{e}");
        let e = err("[[receiver]]\nname = \"x\"\nkind = \"pager\"\nurl = \"http://h\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(3), "receiver[0].kind"), "{e}");
        let e = err("[[receiver]]\nname = \"x\"\nkind = \"alertmanager\"\nurl = \"https://h\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(4), "receiver[0].url"), "{e}");
        assert!(e.message.contains("https is not supported"), "{e}");
        let e = err(&format!("{am}severities = [\"critical\", \"urgent\"]\n"));
        assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].severities[1]"), "{e}");
        let e = err("[[receiver]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://h/x\"\n");
        assert_eq!(e.key, "receiver[0].secret_file", "{e}");
        let e = err("[[receiver]]\nname = \"x\"\nkind = \"webhook\"\nurl = \"http://h/x\"\nsecret_file = \"short\"\n");
        assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].secret_file"), "{e}");
        let e = err(&format!("{am}token_file = \"missing\"\n"));
        assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].token_file"), "{e}");
        let e = err(&format!("{am}timeout_ms = 0\n"));
        assert_eq!(e.key, "receiver[0].timeout_ms", "{e}");
        let e = err(&format!("{am}retry_initial_ms = 5000\nretry_max_ms = 1000\n"));
        assert_eq!((e.line, e.key.as_str()), (Some(6), "receiver[0].retry_max_ms"), "{e}");
        let e = err(&format!("{am}secret = \"inline\"\n"));
        assert_eq!((e.line, e.key.as_str()), (Some(5), "receiver[0].secret"), "{e}");
    }

    #[test]
    fn the_commented_receivers_of_the_shipped_config_are_valid() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let shipped = std::fs::read_to_string(root.join("config/recwatch.toml")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret"), "0123456789abcdef-0123456789").unwrap();
        let secret = dir.path().join("secret").display().to_string();
        let start = shipped.find("# [[receiver]]").expect("the shipped config documents receivers");
        let mut text = String::new();
        for line in shipped[start..].lines() {
            let line = line.strip_prefix("# ").unwrap_or("");
            let line = match line.split_once(" = ") {
                Some((k, _)) if k.ends_with("_file") => format!("{k} = {secret:?}"),
                _ => line.to_string(),
            };
            text += &line;
            text += "\n";
        }
        let c = Config::from_toml(&dir.path().join("recwatch.toml"), &text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let kinds: Vec<_> = c.receivers.iter().map(|r| (r.name.as_str(), r.kind)).collect();
        assert_eq!(kinds, [("oncall", ReceiverKind::Alertmanager), ("soc-webhook", ReceiverKind::Webhook)]);
    }
}

//! Builds the compiled [`Config`] from the raw schema: checks every value (ranges, names,
//! URLs, CIDRs, regexes, librdkafka options), compiles the tables, reads key and token files,
//! resolves paths relative to the config file and applies the command line's [`Overrides`],
//! each stage's settings built whole. Owns every "is this value valid" decision and its
//! message. Never writes a default (those are in [`super::raw`]) and never reads logs.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::error::{key, ConfigError, Locator, Seg};
use super::raw::{
    self, RawConfig, RawEngine, RawHttp, RawKafka, RawNetworks, RawReceiver, RawRule, RawSensitive, RawSource,
    RawStatus, RawStore, RawTail,
};
use super::{Config, Overrides, MAX_RULES};
use crate::alerting::{AlertingSettings, ReceiverKind, ReceiverSettings, Secret};
use crate::classify::call::CallIds;
use crate::classify::client::{Cidr, ClientKind};
use crate::classify::path::{PathClass, PathSemantics};
use crate::classify::ClassifySettings;
use crate::detect::rule::{
    path_class_bit, Aggregate, GroupBy, MethodKind, Rule, Severity, StatusSet, TransportMatch, UserMatch,
};
use crate::detect::EngineSettings;
use crate::http::HttpSettings;
use crate::parse::json::{JsonPlan, JsonProducer};
use crate::parse::plan::{apache_named_equivalent, nginx_named_equivalent};
use crate::parse::samba::{SambaPlan, FORMAT_NAME as SAMBA_FORMAT};
use crate::parse::time::UtcOffset;
use crate::parse::{is_host_name, parse_client_ip, FieldPlan, LineFormat, LogFormat};
use crate::privacy::Pseudonymizer;
use crate::source::kafka::{check_client_option, KafkaSettings, PayloadFormat};
use crate::source::{SourceInput, SourceSettings, TailSettings};
use crate::store::{Rollup, StoreSettings};

/// Where errors point: the file, its text's key lines, and the directory relative paths are in.
pub(super) struct Builder<'a> {
    pub file: &'a Path,
    pub locator: &'a Locator,
}

impl Builder<'_> {
    fn err(&self, path: &[Seg], message: impl Into<String>) -> ConfigError {
        self.locator.err(self.file, path, message)
    }

    /// The directory relative paths in the file are resolved against.
    fn base(&self) -> &Path {
        self.file.parent().unwrap_or(Path::new("."))
    }
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

/// The whole config, every stage's settings complete.
pub(super) fn build(b: &Builder<'_>, raw: RawConfig, overrides: &Overrides) -> Result<Config, ConfigError> {
    let raw_rules = if raw.rule.is_empty() { raw::default_rules()? } else { raw.rule };
    let http = build_http(b, &raw.http, overrides)?;
    let external_url = match &raw.http.external_url {
        None => super::default_external_url(http.listen),
        Some(u) => http_url(b, &[key("http"), key("external_url")], u, true)?,
    };
    let mut sources = build_sources(b, raw.source)?;
    for extra in &overrides.sources {
        if !sources.iter().any(|s| s.name == extra.name) {
            sources.push(extra.clone());
        }
    }
    let (pseudonym_key_file, pseudonyms) = match raw.privacy.pseudonym_key_file {
        None => (None, None),
        Some(f) => {
            let at = [key("privacy"), key("pseudonym_key_file")];
            if f.trim().is_empty() {
                return Err(b.err(&at, "must not be empty"));
            }
            let path = b.base().join(f);
            let key = Pseudonymizer::load(&path).map_err(|e| b.err(&at, e.to_string()))?;
            (Some(path), Some(key))
        }
    };
    Ok(Config {
        file: b.file.to_path_buf(),
        store: build_store(b, raw.store, overrides)?,
        classify: build_classify(b, raw.sensitive, raw.networks)?,
        sources,
        tail: build_tail(b, &raw.tail)?,
        engine: build_engine(b, &raw.engine, overrides)?,
        rules: build_rules(b, raw_rules)?,
        http,
        alerting: AlertingSettings { external_url, receivers: build_receivers(b, raw.receiver)? },
        pseudonym_key_file,
        pseudonyms,
    })
}

fn build_store(b: &Builder<'_>, store: RawStore, overrides: &Overrides) -> Result<StoreSettings, ConfigError> {
    if store.path.trim().is_empty() {
        return Err(b.err(&[key("store"), key("path")], "must not be empty"));
    }
    if store.retention_days == 0 {
        return Err(b.err(
            &[key("store"), key("retention_days")],
            "must be at least 1 (0 would delete every alert, the evidence of a breach, within the hour)",
        ));
    }
    let dir = overrides.store_dir.clone().unwrap_or_else(|| b.base().join(&store.path));
    if store.rollup_window_secs <= 0 {
        return Err(b.err(&[key("store"), key("rollup_window_secs")], "must be positive"));
    }
    Ok(StoreSettings {
        dir,
        retention_days: store.retention_days,
        rollup: Rollup { after: store.rollup_after, window_secs: store.rollup_window_secs },
    })
}

fn build_classify(
    b: &Builder<'_>,
    sensitive: RawSensitive,
    networks: RawNetworks,
) -> Result<ClassifySettings, ConfigError> {
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
    let call_ids = match &sensitive.call_id {
        None => CallIds::none(),
        Some(p) => CallIds::new(p).map_err(|e| b.err(&[key("sensitive"), key("call_id")], e.to_string()))?,
    };
    let mut internal = Vec::new();
    for (i, c) in networks.internal.iter().enumerate() {
        internal.push(
            Cidr::parse(c).map_err(|e| b.err(&[key("networks"), key("internal"), Seg::Index(i)], e.to_string()))?,
        );
    }
    let mut partners: Vec<(String, Vec<Cidr>)> = Vec::new();
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
    let mut trusted_proxies = Vec::new();
    for (i, c) in networks.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(
            Cidr::parse(c)
                .map_err(|e| b.err(&[key("networks"), key("trusted_proxies"), Seg::Index(i)], e.to_string()))?,
        );
    }
    let host_name = |path: Vec<Seg>, name: &String| {
        if is_host_name(name.as_bytes()) && parse_client_ip(name.as_bytes()).is_none() {
            Ok(name.clone())
        } else {
            Err(b.err(&path, format!("{name:?} is not a host name (letters, digits, '-', '.', '_')")))
        }
    };
    let mut internal_hosts = Vec::new();
    for (i, name) in networks.internal_hosts.iter().enumerate() {
        internal_hosts.push(host_name(vec![key("networks"), key("internal_hosts"), Seg::Index(i)], name)?);
    }
    let mut partner_hosts = Vec::new();
    for (i, p) in networks.partner.iter().enumerate() {
        let mut names = Vec::new();
        for (j, name) in p.hosts.iter().enumerate() {
            names.push(host_name(
                vec![key("networks"), key("partner"), Seg::Index(i), key("hosts"), Seg::Index(j)],
                name,
            )?);
        }
        partner_hosts.push((i as u16, names));
    }
    let mut settings =
        ClassifySettings::new(sensitive.prefixes, sensitive.extensions, sensitive.case_insensitive, internal, partners)
            .with_proxies_and_hosts(trusted_proxies, internal_hosts, partner_hosts);
    settings.call_ids = Arc::new(call_ids);
    Ok(settings)
}

fn build_sources(b: &Builder<'_>, sources: Vec<RawSource>) -> Result<Vec<SourceSettings>, ConfigError> {
    let mut built: Vec<SourceSettings> = Vec::new();
    for (i, s) in sources.into_iter().enumerate() {
        let at = |k: &str| [key("source"), Seg::Index(i), key(k)];
        let json_producer = s.format.as_deref().and_then(JsonProducer::from_name);
        if s.json_fields.is_some() && json_producer.is_none() {
            return Err(
                b.err(&at("json_fields"), "only for the JSON formats (json, caddy_json, traefik_json, nginx_json)")
            );
        }
        let samba = s.format.as_deref() == Some(SAMBA_FORMAT);
        for (k, given) in
            [("samba_prefix", s.samba_prefix.is_some()), ("samba_guest_account", s.samba_guest_account.is_some())]
        {
            if given && !samba {
                return Err(b.err(&at(k), format!("only for format = \"{SAMBA_FORMAT}\"")));
            }
        }
        let format = match (&s.format, &s.nginx_log_format, &s.apache_log_format) {
            (Some(name), None, None) if name == "xferlog" => LineFormat::Xferlog,
            (Some(_), None, None) if samba => {
                let prefix = s.samba_prefix.as_deref().unwrap_or(SambaPlan::DEFAULT_PREFIX);
                let guest = s.samba_guest_account.as_deref().unwrap_or(SambaPlan::DEFAULT_GUEST_ACCOUNT);
                let plan = SambaPlan::new(prefix, guest).map_err(|e| {
                    let k = if s.samba_prefix.is_some() { "samba_prefix" } else { "format" };
                    b.err(&at(k), format!("full_audit:prefix {prefix:?}: {e}"))
                })?;
                LineFormat::Samba(Arc::new(plan))
            }
            (Some(name), None, None) if name == "s3" => LineFormat::Plan(Arc::new(FieldPlan::s3())),
            (Some(_), None, None) if json_producer.is_some() => {
                let overrides: Vec<(String, String)> = s.json_fields.clone().unwrap_or_default().into_iter().collect();
                let plan = JsonPlan::new(json_producer.unwrap_or(JsonProducer::Custom), &overrides);
                let key = if s.json_fields.is_some() { "json_fields" } else { "format" };
                LineFormat::Json(Arc::new(plan.map_err(|e| b.err(&at(key), e.to_string()))?))
            }
            (named, None, None) => {
                let names: Vec<&str> = LogFormat::ALL
                    .map(|f| f.as_str())
                    .into_iter()
                    .chain(JsonProducer::ALL.map(|(_, name)| name))
                    .chain(["xferlog", "s3", SAMBA_FORMAT])
                    .collect();
                LineFormat::Named(one_of(
                    b,
                    &at("format"),
                    named.as_deref().unwrap_or("combined"),
                    LogFormat::from_name,
                    &names,
                )?)
            }
            // A string that is a named format word for word is read by that format's tokenizer.
            (None, Some(text), None) => match nginx_named_equivalent(text) {
                Some(named) => LineFormat::Named(named),
                None => LineFormat::Plan(Arc::new(
                    FieldPlan::nginx(text).map_err(|e| b.err(&at("nginx_log_format"), e.to_string()))?,
                )),
            },
            (None, None, Some(text)) => match apache_named_equivalent(text) {
                Some(named) => LineFormat::Named(named),
                None => LineFormat::Plan(Arc::new(
                    FieldPlan::apache(text).map_err(|e| b.err(&at("apache_log_format"), e.to_string()))?,
                )),
            },
            (Some(_), _, _) => {
                return Err(b.err(&at("format"), "give either format or a log format string, not both"));
            }
            (None, Some(_), Some(_)) => {
                return Err(b.err(&at("apache_log_format"), "give either nginx_log_format or apache_log_format"));
            }
        };
        let path_semantics = one_of(
            b,
            &at("path_semantics"),
            &s.path_semantics,
            PathSemantics::from_name,
            &PathSemantics::ALL.map(|p| p.as_str()),
        )?;
        let timezone = match &s.timezone {
            Some(text) => UtcOffset::parse(text).map_err(|e| b.err(&at("timezone"), e.to_string()))?,
            None => UtcOffset::UTC,
        };
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
        if built.iter().any(|o| o.name == name) {
            return Err(b.err(&at("name"), format!("source name {name:?} is used twice")));
        }
        built.push(SourceSettings { name, format, path_semantics, timezone, input });
    }
    Ok(built)
}

fn build_tail(b: &Builder<'_>, tail: &RawTail) -> Result<TailSettings, ConfigError> {
    if !(10..=60_000).contains(&tail.poll_interval_ms) {
        return Err(b.err(&[key("tail"), key("poll_interval_ms")], "must be between 10 and 60000"));
    }
    if !(1..=86_400).contains(&tail.rotated_drain_secs) {
        return Err(b.err(
            &[key("tail"), key("rotated_drain_secs")],
            "must be between 1 and 86400 (0 would close a rotated file before its last lines are read)",
        ));
    }
    Ok(TailSettings {
        poll_interval: Duration::from_millis(tail.poll_interval_ms),
        inotify: tail.inotify,
        rotated_drain: Duration::from_secs(tail.rotated_drain_secs),
    })
}

fn build_engine(b: &Builder<'_>, engine: &RawEngine, overrides: &Overrides) -> Result<EngineSettings, ConfigError> {
    let workers = match engine.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n if n > 256 => return Err(b.err(&[key("engine"), key("workers")], "at most 256")),
        n => n,
    };
    if engine.client_idle_secs <= 0 {
        return Err(b.err(&[key("engine"), key("client_idle_secs")], "must be positive"));
    }
    if engine.future_tolerance_secs < 0 {
        return Err(b.err(&[key("engine"), key("future_tolerance_secs")], "must not be negative"));
    }
    if engine.max_clients_per_worker == 0 {
        return Err(b.err(&[key("engine"), key("max_clients_per_worker")], "must be positive"));
    }
    Ok(EngineSettings {
        workers: overrides.workers.map_or(workers, |w| w.max(1)),
        max_clients_per_worker: engine.max_clients_per_worker,
        client_idle_secs: engine.client_idle_secs,
        future_tolerance_secs: engine.future_tolerance_secs,
    })
}

fn build_http(b: &Builder<'_>, http: &RawHttp, overrides: &Overrides) -> Result<HttpSettings, ConfigError> {
    let listen = match overrides.listen {
        Some(listen) => listen,
        None => http.listen.parse().map_err(|_| {
            b.err(&[key("http"), key("listen")], format!("{:?} is not an address like 127.0.0.1:9898", http.listen))
        })?,
    };
    if http.max_connections == 0 {
        return Err(b.err(&[key("http"), key("max_connections")], "must be at least 1"));
    }
    Ok(HttpSettings {
        listen,
        token_file: http.token_file.as_ref().map(|f| b.base().join(f)),
        max_connections: http.max_connections,
    })
}

fn build_rules(b: &Builder<'_>, raw_rules: Vec<RawRule>) -> Result<Vec<Rule>, ConfigError> {
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
    Ok(rules)
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

fn build_receivers(b: &Builder<'_>, raw: Vec<RawReceiver>) -> Result<Vec<ReceiverSettings>, ConfigError> {
    let base = b.base();
    let mut receivers: Vec<ReceiverSettings> = Vec::new();
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
        receivers.push(ReceiverSettings {
            name: r.name,
            kind,
            url,
            severities,
            timeout: Duration::from_millis(r.timeout_ms),
            resend: Duration::from_secs(r.resend_secs),
            retry_initial: Duration::from_millis(r.retry_initial_ms),
            retry_max: Duration::from_millis(r.retry_max_ms),
            secret,
            token,
            secret_file,
            token_file,
        });
    }
    Ok(receivers)
}

fn build_kafka(b: &Builder<'_>, i: usize, raw: RawKafka) -> Result<KafkaSettings, ConfigError> {
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
        let value = value.text();
        check_client_option(name, &value).map_err(|e| b.err(&path, e))?;
        options.push((name.clone(), value));
    }
    Ok(KafkaSettings { brokers: raw.brokers, topics: raw.topics, group_id: raw.group_id, payload, options })
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
    let method_kind =
        one_of(b, &at("method_kind"), &r.method_kind, MethodKind::from_name, &MethodKind::ALL.map(|k| k.as_str()))?;
    let transport =
        one_of(b, &at("transport"), &r.transport, TransportMatch::from_name, &TransportMatch::ALL.map(|t| t.as_str()))?;
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
        method_kind,
        client_kinds,
        user,
        transport,
        user_agent,
        aggregate,
        window_secs: r.window_secs,
        threshold: r.threshold,
        group_by,
        suppress_secs: r.suppress_secs,
    })
}

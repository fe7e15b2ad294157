//! `recwatch check`'s readable summary of the effective configuration ([`Config::describe`],
//! also `Config`'s `Debug`). Owns its wording. Never validates and never prints a secret
//! (only the files they were read from).

use std::fmt;

use super::Config;
use crate::parse::time::UtcOffset;
use crate::parse::LineFormat;
use crate::source::SourceInput;

impl Config {
    /// A readable summary of the effective configuration, for `recwatch check`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        s += &format!("config: {}\n", self.file.display());
        s += &format!("store: {} (retention {} days)\n", self.store.dir.display(), self.store.retention_days);
        s += &format!(
            "sensitive: prefixes {:?}, extensions {:?}, case-{}\n",
            self.classify.prefixes,
            self.classify.extensions,
            if self.classify.case_insensitive { "insensitive" } else { "sensitive" }
        );
        s += &match self.classify.call_ids.pattern() {
            Some(p) => format!("call id: {p:?} (its group `call` names the call a file belongs to)\n"),
            None => "call id: none (every file is its own call)\n".to_string(),
        };
        let internal: Vec<String> = self.classify.internal.iter().map(|c| c.to_string()).collect();
        s += &format!(
            "internal networks: {}\n",
            if internal.is_empty() { "(none)".into() } else { internal.join(", ") }
        );
        for (name, cidrs) in &self.classify.partners {
            let c: Vec<String> = cidrs.iter().map(|c| c.to_string()).collect();
            s += &format!("partner {name}: {}\n", c.join(", "));
        }
        if !self.classify.trusted_proxies.is_empty() {
            let c: Vec<String> = self.classify.trusted_proxies.iter().map(|c| c.to_string()).collect();
            s += &format!("trusted proxies (X-Forwarded-For believed from): {}\n", c.join(", "));
        }
        if !self.classify.internal_hosts.is_empty() {
            s += &format!("internal host names: {}\n", self.classify.internal_hosts.join(", "));
        }
        for src in &self.sources {
            match &src.input {
                SourceInput::File { path } => {
                    s += &format!(
                        "source {}: {} ({}, {} paths",
                        src.name,
                        path,
                        src.format.describe(),
                        src.path_semantics.as_str()
                    );
                    if src.timezone != UtcOffset::UTC {
                        s += &format!(", zone-less timestamps at {}", src.timezone);
                    }
                    s += ")\n";
                }
                SourceInput::Kafka(k) => {
                    s += &format!(
                        "source {}: kafka topics {:?} from {} as group {:?} ({} payload, {} lines, {} paths, {} client options)\n",
                        src.name,
                        k.topics,
                        k.brokers.join(","),
                        k.group_id,
                        k.payload.as_str(),
                        src.format.describe(),
                        src.path_semantics.as_str(),
                        k.options.len()
                    );
                }
            }
            if let LineFormat::Plan(plan) = &src.format {
                if !plan.unknown_fields().is_empty() {
                    s += &format!(
                        "warning: source {}: {} unknown to recwatch, read as opaque fields\n",
                        src.name,
                        plan.unknown_fields().join(", ")
                    );
                }
            }
        }
        s += &format!(
            "engine: {} workers, at most {} clients per worker, idle eviction after {} s, event times more than {} s ahead of the wall clock move no clock\n",
            self.engine.workers,
            self.engine.max_clients_per_worker,
            self.engine.client_idle_secs,
            self.engine.future_tolerance_secs
        );
        s += &format!(
            "http: {} (alert API {})\n",
            self.http.listen,
            self.http
                .token_file
                .as_ref()
                .map_or("disabled: no token_file".to_string(), |f| format!("token in {}", f.display()))
        );
        s += &format!(
            "tail: {} every {} ms, rotated files drained for {} s\n",
            if self.tail.inotify { "inotify + stat scan" } else { "stat scan only (poll mode)" },
            self.tail.poll_interval.as_millis(),
            self.tail.rotated_drain.as_secs()
        );
        s += &format!("external url: {}\n", self.alerting.external_url);
        if self.alerting.receivers.is_empty() {
            s += "receivers: none (alerts are only stored and served)\n";
        }
        for r in &self.alerting.receivers {
            s += &format!("{}\n", r.describe());
        }
        s += &format!(
            "privacy: personnummer and phone numbers in paths pseudonymised with the key in {}\n",
            self.pseudonym_key_file.as_ref().map_or_else(
                || format!("{} (created on first use)", self.store.dir.join(crate::privacy::STATE_KEY_FILE).display()),
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

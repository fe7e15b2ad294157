//! What goes over the wire: Alertmanager v2 postable alerts and the webhook body with its
//! HMAC-SHA256 signature. Owns label, annotation and field names. Pure functions of an alert,
//! its notification state and the [`Context`]; never sends anything.
//!
//! Alertmanager identifies an alert by its label set, so the labels are exactly the stable
//! identity of a recwatch alert: `alertname` (rule name), `rule` (rule id), `severity`,
//! `instance` (host name), `source` (log source) and `alert_id` (the recwatch alert id). Counts
//! that grow while the alert fires go into annotations, so an update never becomes a new alert.

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::Context;
use crate::detect::alert::Alert;
use crate::parse::time::format_rfc3339;
use crate::report::AlertRow;

/// Header carrying the webhook body's signature: `sha256=<lowercase hex HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "X-Recwatch-Signature";

/// Paths listed in the `files` annotation at most (the alert keeps up to 20).
const MAX_FILES_ANNOTATED: usize = 20;

/// What a notification says about its alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Firing; Alertmanager is told it ends at `ends_ms` unless re-sent before.
    Firing { ends_ms: i64 },
    /// Resolved (API/CLI) or ended (quiet for its suppress window) at `ends_ms`.
    Over { ends_ms: i64 },
}

impl State {
    pub fn ends_ms(self) -> i64 {
        match self {
            State::Firing { ends_ms } | State::Over { ends_ms } => ends_ms,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            State::Firing { .. } => "firing",
            State::Over { .. } => "resolved",
        }
    }
}

/// One alert in Alertmanager's `POST /api/v2/alerts` body.
#[derive(Serialize, Debug, PartialEq)]
pub struct PostableAlert {
    pub labels: BTreeMap<&'static str, String>,
    pub annotations: BTreeMap<&'static str, String>,
    #[serde(rename = "startsAt")]
    pub starts_at: String,
    #[serde(rename = "endsAt")]
    pub ends_at: String,
    #[serde(rename = "generatorURL")]
    pub generator_url: String,
}

/// RFC 3339 with milliseconds, UTC.
fn rfc3339_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let text = format_rfc3339(secs);
    match text.strip_suffix('Z') {
        Some(base) => format!("{base}.{:03}Z", ms.rem_euclid(1000)),
        None => text,
    }
}

/// A one-line summary for people: what happened, who, how much.
pub fn summary(alert: &Alert) -> String {
    let who = match &alert.partner {
        Some(p) => format!("{} client {} (partner {p})", alert.client_kind, alert.client),
        None => format!("{} client {}", alert.client_kind, alert.client),
    };
    let scope = if alert.group_by == "source" { format!(" on source {}", alert.source) } else { String::new() };
    format!(
        "{} ({}){scope}: {who}, {} requests, {} distinct recordings, {} bytes",
        alert.rule, alert.rule_id, alert.requests, alert.distinct_resources, alert.bytes
    )
}

/// The Alertmanager form of an alert in `state`. `startsAt` is the first request (never after
/// `endsAt`, which Alertmanager would refuse).
pub fn alertmanager_alert(alert: &Alert, state: State, context: &Context) -> PostableAlert {
    let mut labels = BTreeMap::new();
    labels.insert("alertname", alert.rule.clone());
    labels.insert("rule", alert.rule_id.clone());
    labels.insert("severity", alert.severity.as_str().to_string());
    labels.insert("instance", context.instance.clone());
    labels.insert("source", alert.source.clone());
    labels.insert("alert_id", alert.id.clone());

    let mut annotations = BTreeMap::new();
    annotations.insert("summary", summary(alert));
    let description = context.description(&alert.rule_id);
    if !description.is_empty() {
        annotations.insert("description", description.to_string());
    }
    annotations.insert("client", alert.client.clone());
    annotations.insert("client_kind", alert.client_kind.clone());
    if let Some(p) = &alert.partner {
        annotations.insert("partner", p.clone());
    }
    annotations.insert("files", alert.sample.iter().take(MAX_FILES_ANNOTATED).cloned().collect::<Vec<_>>().join("\n"));
    annotations.insert("requests", alert.requests.to_string());
    annotations.insert("distinct_resources", alert.distinct_resources.to_string());
    annotations.insert("bytes", alert.bytes.to_string());
    annotations.insert("first_seen", format_rfc3339(alert.first_seen));
    annotations.insert("last_seen", format_rfc3339(alert.last_seen));
    if !alert.user_agents.is_empty() {
        annotations.insert("user_agents", alert.user_agents.join("\n"));
    }
    annotations.insert("status", alert.status.as_str().to_string());

    let starts_ms = alert.first_seen.saturating_mul(1000);
    let ends_ms = state.ends_ms().max(starts_ms);
    PostableAlert {
        labels,
        annotations,
        starts_at: rfc3339_ms(starts_ms),
        ends_at: rfc3339_ms(ends_ms),
        generator_url: context.alert_url(&alert.id),
    }
}

/// The webhook body.
#[derive(Serialize)]
struct WebhookBody<'a> {
    /// "firing" or "resolved" (resolved by a person, or ended).
    state: &'static str,
    /// When it ended (RFC 3339), once over.
    ends_at: Option<String>,
    /// When this notification was made: a receiver can refuse replays of old bodies.
    sent_at: String,
    receiver: &'a str,
    instance: &'a str,
    /// The alert in recwatch's API.
    url: String,
    /// The alert as the API shows it.
    alert: AlertRow,
}

/// The webhook body bytes (the signature covers exactly these).
pub fn webhook_body(alert: &Alert, state: State, receiver: &str, context: &Context, now_ms: i64) -> Vec<u8> {
    let body = WebhookBody {
        state: state.name(),
        ends_at: matches!(state, State::Over { .. }).then(|| rfc3339_ms(state.ends_ms())),
        sent_at: rfc3339_ms(now_ms),
        receiver,
        instance: &context.instance,
        url: context.alert_url(&alert.id),
        alert: AlertRow::from(alert),
    };
    serde_json::to_vec(&body).expect("a webhook body always serialises")
}

/// `sha256=<hex>` of HMAC-SHA256(key, body).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::alert::AlertStatus;
    use std::collections::HashMap;

    fn alert() -> Alert {
        Alert {
            id: "5c0f00aa11bb22cc".into(),
            source: "nginx".into(),
            first_seen: 1_550_480_401,
            last_seen: 1_550_480_460,
            requests: 3,
            distinct_resources: 2,
            bytes: 8192,
            sample: vec!["/recordings/a.wav".into(), "/recordings/b.wav".into()],
            user_agents: vec!["curl/8".into()],
            status: AlertStatus::Open,
            ..crate::detect::alert::tests::alert(0)
        }
    }

    fn context() -> Context {
        Context {
            instance: "web1".into(),
            external_url: "http://recwatch.example:9898".into(),
            rules: HashMap::from([("R1".to_string(), (3600, "Unknown client fetched a recording".to_string()))]),
        }
    }

    #[test]
    fn alertmanager_labels_are_the_stable_identity_and_counts_are_annotations() {
        let a = alertmanager_alert(&alert(), State::Firing { ends_ms: 1_550_480_700_250 }, &context());
        let labels: Vec<(&str, &str)> = a.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        assert_eq!(
            labels,
            [
                ("alert_id", "5c0f00aa11bb22cc"),
                ("alertname", "unknown-client-fetch"),
                ("instance", "web1"),
                ("rule", "R1"),
                ("severity", "critical"),
                ("source", "nginx"),
            ]
        );
        assert_eq!(a.annotations["client"], "203.0.113.7");
        assert_eq!(a.annotations["files"], "/recordings/a.wav\n/recordings/b.wav");
        assert_eq!(a.annotations["requests"], "3");
        assert_eq!(a.annotations["description"], "Unknown client fetched a recording");
        assert_eq!(
            a.annotations["summary"],
            "unknown-client-fetch (R1): unknown client 203.0.113.7, 3 requests, 2 distinct recordings, 8192 bytes"
        );
        assert_eq!(a.starts_at, "2019-02-18T09:00:01.000Z");
        assert_eq!(a.ends_at, "2019-02-18T09:05:00.250Z");
        assert_eq!(a.generator_url, "http://recwatch.example:9898/api/v1/alerts/5c0f00aa11bb22cc");
        // more requests later: same labels
        let mut later = alert();
        later.requests = 30;
        let b = alertmanager_alert(&later, State::Firing { ends_ms: 0 }, &context());
        assert_eq!(a.labels, b.labels);
        // an end before the start (clock skew in the log) is clamped, not refused
        assert_eq!(b.ends_at, b.starts_at);
    }

    #[test]
    fn webhook_signature_is_hmac_sha256_of_the_exact_body() {
        // RFC 4231 test case 2
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        let body = webhook_body(&alert(), State::Over { ends_ms: 1_550_484_060_000 }, "hook", &context(), 0);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["state"], "resolved");
        assert_eq!(v["ends_at"], "2019-02-18T10:01:00.000Z");
        assert_eq!(v["alert"]["id"], "5c0f00aa11bb22cc");
        assert_eq!(v["alert"]["sample"][1], "/recordings/b.wav");
        assert_eq!(v["url"], "http://recwatch.example:9898/api/v1/alerts/5c0f00aa11bb22cc");
        assert_eq!(v["receiver"], "hook");
    }
}

//! Tells on-call: delivers stored alerts to the configured receivers (Alertmanager v2, signed
//! JSON webhooks) from the durable outbox the store keeps. Owns its settings ([`AlertingSettings`]),
//! the notifier threads, what each receiver is told when (firing, re-sent, resolved, ended),
//! retries with jittered exponential back-off, and the payloads. Never changes an alert and
//! never writes to sled itself: it reads alerts and moves outbox records through [`Store`].
//!
//! # How a change travels
//! 1. The store stage (or an ack/resolve through the API or the CLI) writes the alert and an
//!    outbox marker in one transaction ([`crate::store::OutboxMarker`], one per alert: later
//!    changes fold into it).
//! 2. The dispatcher thread (`notify`) moves each marker into one delivery record per receiver
//!    whose `severities` include the alert's ([`crate::store::Delivery`], again one per
//!    (receiver, alert), holding what the receiver was told and whether a newer change waits).
//! 3. One sender thread per receiver (`notify-<name>`) looks at its records at least once a
//!    second and sends what is due ([`sender`]); a slow or dead receiver never delays another.
//!
//! A record survives restarts, so a pending delivery is resumed after a crash; it is removed
//! once the receiver has been told that the alert is over. Delivery is at least once: a crash
//! between the receiver's answer and the record update re-sends that one notification.
//!
//! # What a receiver is told
//! An alert is *firing* until it is resolved (API/CLI) or its episode *ends*: no matching
//! request for its rule's `suppress_secs` (event time), counted from no earlier than when
//! recwatch first queued it (so an alert found in a backlog still pages). Alertmanager gets
//! firing alerts again every `resend_secs` with `endsAt` = now + 4 × `resend_secs` (a dead
//! recwatch lets them expire), and `endsAt` = the resolve or end time when over. A webhook gets
//! the first notification, each status change and the end at once, and count updates of a
//! firing alert at most once per `resend_secs`.

pub mod payload;
pub mod sender;

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Sender};
use tokio_util::sync::CancellationToken;

use crate::detect::alert::{Alert, AlertStatus};
use crate::detect::rule::{Rule, Severity};
use crate::store::{Delivery, OutboxMarker, Store};
use crate::telemetry::Telemetry;

/// Rules whose suppress window is unknown (removed from the config) end after this long.
const DEFAULT_SUPPRESS_SECS: i64 = 3600;
/// Markers moved per dispatcher pass.
const FAN_OUT_BATCH: usize = 256;
/// The dispatcher looks at the outbox at least this often (it is also woken by every write).
const DISPATCH_EVERY: Duration = Duration::from_millis(500);
/// How long stopping waits for a sender in the middle of an HTTP request.
const STOP_GRACE: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiverKind {
    /// Alertmanager's API v2: `POST {url}/api/v2/alerts`.
    Alertmanager,
    /// A JSON body POSTed to `url`, signed with HMAC-SHA256.
    Webhook,
}

impl ReceiverKind {
    pub const ALL: [ReceiverKind; 2] = [ReceiverKind::Alertmanager, ReceiverKind::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            ReceiverKind::Alertmanager => "alertmanager",
            ReceiverKind::Webhook => "webhook",
        }
    }

    pub fn from_name(s: &str) -> Option<ReceiverKind> {
        ReceiverKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// A key or token read from a file; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the alerting stage is configured with (`[[receiver]]` tables, `http.external_url`).
#[derive(Clone, Debug)]
pub struct AlertingSettings {
    /// How others reach the alert API (no trailing slash): the base of the alerts'
    /// generatorURL.
    pub external_url: String,
    /// Where alerts are delivered, in config order.
    pub receivers: Vec<ReceiverSettings>,
}

/// One `[[receiver]]` of the config, validated.
#[derive(Clone, Debug)]
pub struct ReceiverSettings {
    /// `[a-z0-9_-]+`, unique: the `receiver` label of the notifier metrics.
    pub name: String,
    pub kind: ReceiverKind,
    /// Alertmanager: the base URL (no trailing slash); webhook: the full URL.
    pub url: String,
    /// Severities routed to this receiver.
    pub severities: Vec<Severity>,
    /// Time for one whole HTTP request.
    pub timeout: Duration,
    /// Alertmanager: firing alerts are re-sent this often. Webhook: count updates of a firing
    /// alert are sent at most this often.
    pub resend: Duration,
    /// First retry delay after a failure; doubles per failure up to `retry_max`, jittered.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// HMAC-SHA256 key of the webhook signature.
    pub secret: Option<Secret>,
    /// Sent as `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    pub secret_file: Option<PathBuf>,
    pub token_file: Option<PathBuf>,
}

impl ReceiverSettings {
    pub fn routes(&self, severity: Severity) -> bool {
        self.severities.contains(&severity)
    }

    /// Where requests go.
    pub fn endpoint(&self) -> String {
        match self.kind {
            ReceiverKind::Alertmanager => format!("{}/api/v2/alerts", self.url),
            ReceiverKind::Webhook => self.url.clone(),
        }
    }

    pub fn describe(&self) -> String {
        let severities: Vec<&str> = self.severities.iter().map(|s| s.as_str()).collect();
        let mut s = format!(
            "receiver {} ({}): POST {}, severities {}, timeout {} ms, {} {} s, retries {}..{} ms",
            self.name,
            self.kind.as_str(),
            self.endpoint(),
            severities.join(","),
            self.timeout.as_millis(),
            if self.kind == ReceiverKind::Alertmanager { "re-sent every" } else { "updates at most every" },
            self.resend.as_secs(),
            self.retry_initial.as_millis(),
            self.retry_max.as_millis()
        );
        if let Some(f) = &self.secret_file {
            s += &format!(", signed with the key in {}", f.display());
        }
        if let Some(f) = &self.token_file {
            s += &format!(", bearer token in {}", f.display());
        }
        s
    }
}

/// What every payload needs besides the alert: who sends it and where the alert is shown.
#[derive(Clone, Debug)]
pub struct Context {
    /// The `instance` label: this host's name.
    pub instance: String,
    /// Base of generatorURL (`{external_url}/api/v1/alerts/{id}`), no trailing slash.
    pub external_url: String,
    /// Per rule id: suppress window (seconds) and description.
    pub rules: HashMap<String, (i64, String)>,
}

impl Context {
    pub fn new(external_url: &str, rules: &[Rule]) -> Context {
        Context {
            instance: hostname(),
            external_url: external_url.to_string(),
            rules: rules.iter().map(|r| (r.id.clone(), (r.suppress_secs, r.description.clone()))).collect(),
        }
    }

    pub fn suppress_secs(&self, rule_id: &str) -> i64 {
        self.rules.get(rule_id).map_or(DEFAULT_SUPPRESS_SECS, |(s, _)| *s)
    }

    pub fn description(&self, rule_id: &str) -> &str {
        self.rules.get(rule_id).map_or("", |(_, d)| d.as_str())
    }

    pub fn alert_url(&self, id: &str) -> String {
        format!("{}/api/v1/alerts/{id}", self.external_url)
    }

    /// When the alert's episode ends if nothing new comes (Unix ms): its rule's suppress window
    /// after its last request, but never before that window has passed since recwatch first
    /// queued it (`queued_first_ms`).
    pub fn episode_end_ms(&self, alert: &Alert, queued_first_ms: i64) -> i64 {
        let suppress_ms = self.suppress_secs(&alert.rule_id).saturating_mul(1000);
        alert.last_seen.saturating_mul(1000).max(queued_first_ms).saturating_add(suppress_ms)
    }
}

/// The host name for the `instance` label (`localhost` when it cannot be read).
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The running notifier threads.
pub struct Notifier {
    /// Its own token (not the daemon's): the notifier keeps delivering during the drain and
    /// is stopped after it, or alone by a reload.
    stop: CancellationToken,
    wakers: Vec<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
    store: Store,
}

impl Notifier {
    /// Starts the dispatcher and one sender per configured receiver. Delivery records of
    /// receivers no longer configured are dropped (and logged); the receivers' counters are
    /// registered at 0 so their series exist from the first scrape.
    /// `rules` give each alert's suppress window and description.
    pub fn start(settings: &AlertingSettings, rules: &[Rule], store: Store, telemetry: Arc<Telemetry>) -> Notifier {
        let names: Vec<&str> = settings.receivers.iter().map(|r| r.name.as_str()).collect();
        telemetry.set_receivers(&names);
        match store.drop_deliveries_except(&names) {
            Ok(dropped) => {
                for (receiver, n) in dropped {
                    tracing::warn!(receiver = %receiver, deliveries = n, "receiver no longer configured: its pending deliveries are dropped");
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot clean up deliveries of removed receivers"),
        }
        let context = Arc::new(Context::new(&settings.external_url, rules));
        let stop = CancellationToken::new();
        let mut wakers = Vec::new();
        let mut threads = Vec::new();
        let mut sender_wakers = Vec::new();
        for receiver in &settings.receivers {
            let (wake_tx, wake_rx) = bounded::<()>(1);
            sender_wakers.push(wake_tx.clone());
            wakers.push(wake_tx);
            let sender = sender::Sender::new(
                receiver.clone(),
                context.clone(),
                store.clone(),
                telemetry.receiver(&receiver.name),
            );
            let stop = stop.clone();
            threads.push(
                std::thread::Builder::new()
                    .name(format!("notify-{}", receiver.name))
                    .spawn(move || sender.run(&wake_rx, &stop))
                    .expect("spawning a notifier thread"),
            );
        }
        let dispatcher =
            Dispatcher { receivers: settings.receivers.clone(), wakers: sender_wakers, context, store: store.clone() };
        let stop_dispatch = stop.clone();
        threads.push(
            std::thread::Builder::new()
                .name("notify".into())
                .spawn(move || dispatcher.run(&stop_dispatch))
                .expect("spawning the notifier dispatcher"),
        );
        if !settings.receivers.is_empty() {
            tracing::info!(receivers = settings.receivers.len(), "notifiers started");
        }
        Notifier { stop, wakers, threads, store }
    }

    /// Stops every thread; waits for a request in flight at most [`STOP_GRACE`] (what it was
    /// sending stays pending and is sent after the next start).
    pub fn stop(&mut self) {
        self.stop.cancel();
        for w in &self.wakers {
            let _ = w.try_send(());
        }
        self.store.interrupt_outbox_wait();
        let deadline = Instant::now() + STOP_GRACE;
        for t in std::mem::take(&mut self.threads) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!("a notifier is still waiting for its receiver at shutdown; its delivery stays pending");
            }
        }
        // What was moved out of the outbox or told is durable before the process exits.
        if let Err(e) = self.store.flush() {
            tracing::error!(error = %e, "cannot flush the notifier outbox at shutdown (changes are queued again)");
        }
    }
}

/// Moves outbox markers into per-receiver delivery records.
struct Dispatcher {
    receivers: Vec<ReceiverSettings>,
    wakers: Vec<Sender<()>>,
    context: Arc<Context>,
    store: Store,
}

impl Dispatcher {
    fn run(self, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            let moved = match self.pass() {
                Ok(n) => n,
                Err(e) => {
                    tracing::error!(error = %e, "notifier outbox unreadable; retrying");
                    0
                }
            };
            if moved < FAN_OUT_BATCH {
                self.store.wait_for_outbox(DISPATCH_EVERY);
            }
        }
    }

    /// One pass over the queued markers; returns how many were moved.
    fn pass(&self) -> Result<usize, crate::store::StoreError> {
        let markers = self.store.outbox_markers(FAN_OUT_BATCH)?;
        let mut woken = vec![false; self.receivers.len()];
        for (id, _) in &markers {
            // Severity and rule never change, so routing can be decided outside the transaction.
            let alert = match self.store.get(id) {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(alert = %id, error = %e, "queued alert unreadable: not delivered");
                    None
                }
            };
            let targets: Vec<usize> = match &alert {
                Some(a) => (0..self.receivers.len()).filter(|&i| self.receivers[i].routes(a.severity)).collect(),
                None => Vec::new(),
            };
            let names: Vec<&str> = targets.iter().map(|&i| self.receivers[i].name.as_str()).collect();
            let now = sender::now_ms();
            self.store.fan_out(id, &names, |_, marker, existing| {
                let alert = alert.as_ref()?;
                queue_change(existing, marker, alert, &self.context, now)
            })?;
            for i in targets {
                woken[i] = true;
            }
        }
        for (i, w) in woken.into_iter().enumerate() {
            if w {
                let _ = self.wakers[i].try_send(());
            }
        }
        Ok(markers.len())
    }
}

/// The delivery record after a queued change: an existing record gets the change folded in;
/// a missing one is created for a new alert or a status change, and for an update of an alert
/// that is still firing (a receiver added since, or one that was told it ended and then
/// removed its record); an update of an alert that is over is not news.
pub fn queue_change(
    existing: Option<Delivery>,
    marker: &OutboxMarker,
    alert: &Alert,
    context: &Context,
    now_ms: i64,
) -> Option<Delivery> {
    let resolved_at = (alert.status == AlertStatus::Resolved).then_some(marker.queued_ms);
    match existing {
        Some(mut d) => {
            d.changes += 1;
            d.pending_since_ms = Some(d.pending_since_ms.map_or(marker.queued_ms, |p| p.min(marker.queued_ms)));
            if marker.urgent {
                d.urgent = true;
                d.urgent_changes += 1;
            }
            d.ends_ms = d.ends_ms.or(resolved_at);
            Some(d)
        }
        None => {
            let firing = alert.status != AlertStatus::Resolved && now_ms < context.episode_end_ms(alert, 0);
            (marker.urgent || firing).then(|| Delivery {
                queued_first_ms: marker.queued_ms,
                pending_since_ms: Some(marker.queued_ms),
                urgent: true,
                changes: 1,
                urgent_changes: 1,
                ends_ms: resolved_at,
                ..Delivery::default()
            })
        }
    }
}

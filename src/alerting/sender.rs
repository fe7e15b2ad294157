//! One receiver's sender thread: decides what is due from its delivery records ([`decide`]),
//! sends it over HTTP (blocking `ureq`, bounded by the receiver's timeout), and records the
//! outcome: success clears what was carried, failure backs off exponentially with jitter.
//! After a failure the whole receiver pauses for that back-off, so a dead receiver sees one
//! attempt per back-off period, not one per pending alert. Never touches another receiver.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::Receiver;
use tokio_util::sync::CancellationToken;

use super::payload::{self, State, SIGNATURE_HEADER};
use super::{Context, ReceiverKind, ReceiverSettings};
use crate::detect::alert::{Alert, AlertStatus};
use crate::store::{Delivery, Store, Told};
use crate::telemetry::ReceiverCounters;

/// A sender looks at its records at least this often (episode ends, re-sends).
const LOOK_EVERY_MS: i64 = 1000;
/// Alerts per Alertmanager request at most.
const ALERTMANAGER_BATCH: usize = 64;
/// Alertmanager is told a firing alert ends this many re-send intervals from now.
const RESENDS_BEFORE_EXPIRY: i64 = 4;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// What to do with one delivery record now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The receiver has been told all it will be told: remove the record.
    Forget,
    /// Nothing is due; look again at `at` (Unix ms) at the latest.
    Wait { at: i64 },
    /// Send `state` now.
    Send(State),
}

/// The receiver-specific timing [`decide`] needs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub resend_ms: i64,
    /// Alertmanager: firing alerts are re-sent every `resend_ms`.
    pub resends: bool,
}

/// What is due for one (receiver, alert) at `now` (Unix ms). Pure, so every rule of the
/// module docs is tested here: over (resolved, or the episode ended) → tell once, then forget;
/// never told or an urgent change → now; a count update → at most once per `resend_ms`;
/// Alertmanager → again every `resend_ms`; all of it no earlier than the back-off allows.
pub fn decide(d: &Delivery, alert: &Alert, now: i64, timing: Timing, context: &Context) -> Step {
    if d.told == Told::Over {
        return Step::Forget;
    }
    let episode_end = context.episode_end_ms(alert, d.queued_first_ms);
    let over_at = if alert.status == AlertStatus::Resolved {
        Some(d.ends_ms.unwrap_or(now))
    } else {
        (now >= episode_end).then_some(episode_end)
    };
    if let Some(ends_ms) = over_at {
        return if now >= d.retry_at_ms {
            Step::Send(State::Over { ends_ms })
        } else {
            Step::Wait { at: d.retry_at_ms }
        };
    }
    let regular = d.told_ms.saturating_add(timing.resend_ms);
    let due = match (d.told, d.pending_since_ms) {
        (Told::Nothing, _) => now,
        (_, Some(_)) if d.urgent => now,
        (_, Some(_)) => regular,
        (_, None) if timing.resends => regular,
        (_, None) => i64::MAX,
    }
    .max(d.retry_at_ms);
    if now >= due {
        let ends_ms = now.saturating_add(RESENDS_BEFORE_EXPIRY.saturating_mul(timing.resend_ms));
        Step::Send(State::Firing { ends_ms })
    } else {
        Step::Wait { at: due.min(episode_end) }
    }
}

/// The record `current` once the receiver was told what `read` held, at `now`: changes queued
/// since (`changes` moved) stay pending, for the regular time; it stays urgent only if an
/// urgent change was queued since. (A mass fetch updated an alert while it was being sent:
/// every such count update kept it urgent, so it was sent again at once, ~7 times a second.)
fn told(mut current: Delivery, read: &Delivery, now: i64) -> Delivery {
    current.told = Told::Active;
    current.told_ms = now;
    current.failures = 0;
    current.retry_at_ms = 0;
    if current.changes == read.changes {
        current.pending_since_ms = None;
    }
    if current.urgent_changes == read.urgent_changes {
        current.urgent = false;
    }
    current
}

/// How long to wait after the `failures`-th failure in a row: `initial · 2^(failures-1)`,
/// capped at `max`, then a uniform draw from its upper half (jitter, so receivers recovering
/// from an outage are not hit by every sender at once).
pub fn backoff_ms(failures: u32, initial_ms: i64, max_ms: i64) -> i64 {
    let exp = failures.saturating_sub(1).min(40);
    let delay = initial_ms.saturating_mul(1i64 << exp).min(max_ms).max(1);
    delay / 2 + fastrand::i64(0..=delay - delay / 2)
}

/// How one HTTP attempt ended.
#[derive(Debug)]
enum Outcome {
    Delivered,
    /// Worth trying again (network error, timeout, 5xx, 408, 429, auth or routing errors the
    /// operator can fix).
    Failed(String),
    /// The receiver refuses this payload (400, 422): retrying it cannot help.
    Rejected(String),
}

pub struct Sender {
    receiver: ReceiverSettings,
    context: Arc<Context>,
    store: Store,
    counters: Arc<ReceiverCounters>,
    agent: ureq::Agent,
    /// No attempt before this (Unix ms): set by a failure, for the whole receiver.
    paused_until: i64,
}

/// A due notification: the record as read, its alert and what to say.
struct Due {
    id: String,
    read: Delivery,
    alert: Alert,
    state: State,
}

impl Sender {
    pub fn new(
        receiver: ReceiverSettings,
        context: Arc<Context>,
        store: Store,
        counters: Arc<ReceiverCounters>,
    ) -> Sender {
        let agent = ureq::AgentBuilder::new()
            .timeout(receiver.timeout)
            .redirects(0)
            .user_agent(concat!("recwatch/", env!("CARGO_PKG_VERSION")))
            .build();
        Sender { receiver, context, store, counters, agent, paused_until: 0 }
    }

    fn timing(&self) -> Timing {
        Timing {
            resend_ms: self.receiver.resend.as_millis() as i64,
            resends: self.receiver.kind == ReceiverKind::Alertmanager,
        }
    }

    pub fn run(mut self, wake: &Receiver<()>, stop: &CancellationToken) {
        while !stop.is_cancelled() {
            let next = match self.round(stop) {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!(receiver = %self.receiver.name, error = %e, "cannot read the notifier outbox; retrying");
                    now_ms() + LOOK_EVERY_MS
                }
            };
            let wait = (next - now_ms()).clamp(0, LOOK_EVERY_MS);
            let _ = wake.recv_timeout(Duration::from_millis(wait as u64));
        }
    }

    /// Sends what is due; returns when to look again (Unix ms).
    fn round(&mut self, stop: &CancellationToken) -> Result<i64, crate::store::StoreError> {
        let now = now_ms();
        let mut next = now + LOOK_EVERY_MS;
        let mut due = Vec::new();
        for (id, d) in self.store.deliveries(&self.receiver.name)? {
            let alert = match self.store.get(&id) {
                Ok(Some(a)) => a,
                Ok(None) => {
                    self.forget(&id, &d)?;
                    continue;
                }
                Err(e @ crate::store::StoreError::Corrupt { .. }) => {
                    tracing::error!(receiver = %self.receiver.name, alert = %id, error = %e, "alert unreadable: its delivery is dropped");
                    self.forget(&id, &d)?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            match decide(&d, &alert, now, self.timing(), &self.context) {
                Step::Forget => self.forget(&id, &d)?,
                Step::Wait { at } => next = next.min(at),
                Step::Send(state) => due.push(Due { id, read: d, alert, state }),
            }
        }
        if due.is_empty() {
            return Ok(next);
        }
        if now < self.paused_until {
            return Ok(next.min(self.paused_until));
        }
        // Oldest news first; routine re-sends after.
        due.sort_by_key(|d| (d.read.pending_since_ms.unwrap_or(i64::MAX), d.read.told_ms));
        let batch = match self.receiver.kind {
            ReceiverKind::Alertmanager => ALERTMANAGER_BATCH,
            ReceiverKind::Webhook => 1,
        };
        for chunk in due.chunks(batch) {
            if stop.is_cancelled() {
                break;
            }
            let outcome = self.send(chunk);
            if !self.record(chunk, outcome)? {
                return Ok(self.paused_until);
            }
        }
        Ok(now_ms())
    }

    /// Removes a record, unless it changed since it was read (then the next round sees it).
    fn forget(&self, id: &str, read: &Delivery) -> Result<(), crate::store::StoreError> {
        self.store.update_delivery(&self.receiver.name, id, |cur| cur.filter(|c| c != read))?;
        Ok(())
    }

    fn send(&self, chunk: &[Due]) -> Outcome {
        let now = now_ms();
        let body = match self.receiver.kind {
            ReceiverKind::Alertmanager => {
                let alerts: Vec<_> =
                    chunk.iter().map(|d| payload::alertmanager_alert(&d.alert, d.state, &self.context)).collect();
                serde_json::to_vec(&alerts).expect("alerts always serialise")
            }
            ReceiverKind::Webhook => {
                let d = &chunk[0];
                payload::webhook_body(&d.alert, d.state, &self.receiver.name, &self.context, now)
            }
        };
        let mut request = self.agent.post(&self.receiver.endpoint()).set("Content-Type", "application/json");
        if let Some(key) = &self.receiver.secret {
            request = request.set(SIGNATURE_HEADER, &payload::signature(key.expose(), &body));
        }
        if let Some(token) = &self.receiver.token {
            request = request.set("Authorization", &format!("Bearer {}", String::from_utf8_lossy(token.expose())));
        }
        match request.send_bytes(&body) {
            Ok(response) if (200..300).contains(&response.status()) => {
                let _ = response.into_string();
                Outcome::Delivered
            }
            Ok(response) => Outcome::Failed(format!("answered {}", response.status())),
            Err(ureq::Error::Status(code, response)) => {
                let text: String = response.into_string().unwrap_or_default().chars().take(200).collect();
                let what = format!("answered {code}: {}", text.trim());
                if code == 400 || code == 422 {
                    Outcome::Rejected(what)
                } else {
                    Outcome::Failed(what)
                }
            }
            Err(e) => Outcome::Failed(e.to_string()),
        }
    }

    /// Records an attempt's outcome in each record of the chunk and the counters. Returns
    /// false when the receiver failed (it is paused).
    fn record(&mut self, chunk: &[Due], outcome: Outcome) -> Result<bool, crate::store::StoreError> {
        let now = now_ms();
        let n = chunk.len() as u64;
        let retries = chunk.iter().filter(|d| d.read.failures > 0).count() as u64;
        self.counters.notifications_retried(retries);
        let delivered = match &outcome {
            Outcome::Delivered => {
                self.counters.notifications_sent(n);
                true
            }
            Outcome::Rejected(why) => {
                self.counters.notifications_refused(&self.receiver.name, n, why);
                true
            }
            Outcome::Failed(_) => false,
        };
        if delivered {
            for d in chunk {
                self.store.update_delivery(&self.receiver.name, &d.id, |cur| {
                    if matches!(d.state, State::Over { .. }) {
                        return None;
                    }
                    Some(told(cur?, &d.read, now))
                })?;
            }
            // What the receiver was told must survive a crash, or it is told twice.
            self.store.flush()?;
            self.paused_until = 0;
            return Ok(true);
        }
        let Outcome::Failed(why) = outcome else { unreachable!("handled above") };
        let initial = self.receiver.retry_initial.as_millis() as i64;
        let max = self.receiver.retry_max.as_millis() as i64;
        // Drawn once per record (jitter): the pause is the longest of them.
        let delays: Vec<i64> =
            chunk.iter().map(|d| backoff_ms(d.read.failures.saturating_add(1), initial, max)).collect();
        let pause = delays.iter().copied().max().unwrap_or(0);
        let first = chunk.iter().any(|d| d.read.failures == 0);
        self.counters.notifications_failed(&self.receiver.name, n, &why, pause, first);
        for (d, delay) in chunk.iter().zip(delays) {
            self.store.update_delivery(&self.receiver.name, &d.id, |cur| {
                let mut r = cur?;
                r.failures = r.failures.saturating_add(1);
                r.retry_at_ms = now + delay;
                if let State::Over { ends_ms } = d.state {
                    r.ends_ms = Some(ends_ms);
                    r.pending_since_ms.get_or_insert(now);
                }
                Some(r)
            })?;
        }
        self.paused_until = now + pause;
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const T0: i64 = 1_700_000_000;

    fn context() -> Context {
        Context {
            instance: "h".into(),
            external_url: "http://127.0.0.1:9898".into(),
            rules: HashMap::from([("R1".to_string(), (600, String::new()))]),
        }
    }

    fn alert(last_seen: i64, status: AlertStatus) -> Alert {
        Alert {
            id: "a".into(),
            source: "web".into(),
            first_seen: T0,
            last_seen,
            requests: 1,
            distinct_resources: 1,
            bytes: 1,
            sample: vec![],
            user_agents: vec![],
            status,
            ..crate::detect::alert::tests::alert(0)
        }
    }

    fn queued(at_ms: i64) -> Delivery {
        Delivery {
            queued_first_ms: at_ms,
            pending_since_ms: Some(at_ms),
            urgent: true,
            changes: 1,
            ..Delivery::default()
        }
    }

    const AM: Timing = Timing { resend_ms: 60_000, resends: true };
    const HOOK: Timing = Timing { resend_ms: 60_000, resends: false };

    #[test]
    fn a_new_alert_fires_at_once_and_alertmanager_gets_it_again_every_resend() {
        let c = context();
        let now = T0 * 1000 + 5_000;
        let a = alert(T0, AlertStatus::Open);
        let d = queued(now);
        assert_eq!(decide(&d, &a, now, AM, &c), Step::Send(State::Firing { ends_ms: now + 240_000 }));
        let told = Delivery { told: Told::Active, told_ms: now, pending_since_ms: None, urgent: false, ..d.clone() };
        assert_eq!(decide(&told, &a, now + 1_000, AM, &c), Step::Wait { at: now + 60_000 });
        assert!(matches!(decide(&told, &a, now + 60_000, AM, &c), Step::Send(State::Firing { .. })));
        // a webhook is not re-sent: it waits for the episode's end
        let end = (T0 * 1000).max(now) + 600_000;
        assert_eq!(decide(&told, &a, now + 60_000, HOOK, &c), Step::Wait { at: end });
    }

    #[test]
    fn count_updates_are_throttled_status_changes_are_not() {
        let c = context();
        let now = T0 * 1000;
        let a = alert(T0, AlertStatus::Open);
        let update = Delivery {
            told: Told::Active,
            told_ms: now,
            pending_since_ms: Some(now + 10),
            urgent: false,
            changes: 2,
            ..queued(now)
        };
        assert_eq!(decide(&update, &a, now + 1_000, HOOK, &c), Step::Wait { at: now + 60_000 });
        assert!(matches!(decide(&update, &a, now + 60_000, HOOK, &c), Step::Send(State::Firing { .. })));
        let acked = Delivery { urgent: true, ..update };
        assert!(matches!(decide(&acked, &a, now + 1_000, HOOK, &c), Step::Send(State::Firing { .. })));
    }

    /// Found by `scripts/bench --mass`: an alert updated while it was being sent stayed
    /// urgent, so a storm's roll-up and source alert were re-sent at once, over and over (58
    /// times each in 9 s at 100 k clients), instead of once per `resend_ms`.
    #[test]
    fn count_updates_queued_while_an_alert_was_sent_kept_it_urgent_and_resent_at_once() {
        let c = context();
        let now = T0 * 1000;
        let a = alert(T0, AlertStatus::Open);
        let read = crate::alerting::queue_change(
            None,
            &crate::store::OutboxMarker { queued_ms: now, urgent: true },
            &a,
            &c,
            now,
        )
        .unwrap();
        assert!(matches!(decide(&read, &a, now, HOOK, &c), Step::Send(_)), "a new alert goes at once");
        // While it is sent, a count update is queued.
        let update = crate::store::OutboxMarker { queued_ms: now + 5, urgent: false };
        let during = crate::alerting::queue_change(Some(read.clone()), &update, &a, &c, now + 5).unwrap();
        let after = told(during, &read, now + 10);
        assert!(!after.urgent && after.pending_since_ms.is_some(), "{after:?}");
        assert_eq!(decide(&after, &a, now + 20, HOOK, &c), Step::Wait { at: now + 10 + 60_000 });
        // An ack queued during a send keeps it urgent.
        let ack = crate::store::OutboxMarker { queued_ms: now + 5, urgent: true };
        let during = crate::alerting::queue_change(Some(read.clone()), &ack, &a, &c, now + 5).unwrap();
        assert!(told(during, &read, now + 10).urgent);
        // Nothing queued during the send: up to date.
        let after = told(read.clone(), &read, now + 10);
        assert!(!after.urgent && after.pending_since_ms.is_none());
    }

    #[test]
    fn resolve_and_episode_end_are_told_once_then_forgotten() {
        let c = context();
        let now = T0 * 1000 + 1_000;
        let told = Delivery { told: Told::Active, told_ms: now, pending_since_ms: None, urgent: false, ..queued(now) };
        let resolved_at = now + 5_000;
        let resolved = Delivery { ends_ms: Some(resolved_at), ..told.clone() };
        let a = alert(T0, AlertStatus::Resolved);
        assert_eq!(decide(&resolved, &a, now + 9_000, AM, &c), Step::Send(State::Over { ends_ms: resolved_at }));
        // no request for the suppress window (600 s) after the later of last request and queueing
        let open = alert(T0 + 30, AlertStatus::Open);
        let end = (T0 + 30) * 1000 + 600_000;
        assert!(matches!(decide(&told, &open, end - 1, HOOK, &c), Step::Wait { .. }));
        assert_eq!(decide(&told, &open, end, HOOK, &c), Step::Send(State::Over { ends_ms: end }));
        let over = Delivery { told: Told::Over, ..told };
        assert_eq!(decide(&over, &open, end, HOOK, &c), Step::Forget);
    }

    #[test]
    fn an_alert_found_in_a_backlog_fires_for_a_whole_suppress_window() {
        let c = context();
        let found = T0 * 1000 + 3_600_000;
        let d = queued(found);
        let a = alert(T0, AlertStatus::Open);
        assert!(matches!(decide(&d, &a, found, HOOK, &c), Step::Send(State::Firing { .. })));
        assert_eq!(c.episode_end_ms(&a, found), found + 600_000);
    }

    #[test]
    fn back_off_waits_and_grows_with_jitter_up_to_the_cap() {
        let c = context();
        let now = T0 * 1000;
        let failing = Delivery { failures: 2, retry_at_ms: now + 4_000, ..queued(now) };
        assert_eq!(decide(&failing, &alert(T0, AlertStatus::Open), now, AM, &c), Step::Wait { at: now + 4_000 });
        for (failures, low, high) in [(1, 500, 1_000), (2, 1_000, 2_000), (3, 2_000, 4_000), (10, 15_000, 30_000)] {
            for _ in 0..50 {
                let d = backoff_ms(failures, 1_000, 30_000);
                assert!((low..=high).contains(&d), "{failures}: {d}");
            }
        }
        assert!((0..=1).contains(&backoff_ms(u32::MAX, 1, 1)));
    }
}

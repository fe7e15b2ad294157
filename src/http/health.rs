//! What `/readyz` and the systemd watchdog both ask: is the daemon doing its job right now?
//! Owns the daemon's readiness flags (started, draining, the pipeline's progress) and the one
//! check over them and the store's own health. Never waits on the store (a stuck store could
//! not answer): it reads what the store owner publishes.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::Duration;

use crate::store::{Store, STALL_AFTER};

/// Work handed to the pipeline must become durable within this, or a stage is stuck.
pub const STAGE_DEADLINE: Duration = Duration::from_secs(30);

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Set by the daemon, read by `/readyz` and the watchdog. Lock-free except the rare reason
/// string of a stopped stage.
#[derive(Default)]
pub struct Readiness {
    /// State loaded, sources open, every Kafka consumer in its group.
    started: AtomicBool,
    /// Stopping: no longer a target for traffic.
    draining: AtomicBool,
    /// Since when (Unix ms) work handed to the pipeline has not all been durable; 0: none.
    pending_since_ms: AtomicI64,
    /// A stage that has stopped or stopped making progress, by the daemon's own account.
    stage_failure: Mutex<Option<String>>,
}

impl Readiness {
    pub fn set_started(&self, started: bool) {
        self.started.store(started, Relaxed);
    }

    pub fn set_draining(&self) {
        self.draining.store(true, Relaxed);
    }

    /// Whether work handed to the pipeline is still waiting to be durable.
    pub fn work_pending(&self, pending: bool) {
        if !pending {
            self.pending_since_ms.store(0, Relaxed);
        } else if self.pending_since_ms.load(Relaxed) == 0 {
            self.pending_since_ms.store(now_ms(), Relaxed);
        }
    }

    /// A stage stopped or stuck (None: every stage is fine).
    pub fn stage_failure(&self, failure: Option<String>) {
        *self.stage_failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    /// Whether the daemon does its job (the watchdog's question): the store neither failed nor
    /// stuck, every stage alive, handed-out work durable within [`STAGE_DEADLINE`].
    pub fn live(&self, store: &Store) -> Result<(), String> {
        if let Some(problem) = store.health(STALL_AFTER) {
            return Err(problem);
        }
        if let Some(failure) = self.stage_failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Err(failure);
        }
        let since = self.pending_since_ms.load(Relaxed);
        let waiting = now_ms().saturating_sub(since);
        if since != 0 && waiting > STAGE_DEADLINE.as_millis() as i64 {
            return Err(format!("the pipeline has not made its work durable for {}s", waiting / 1000));
        }
        Ok(())
    }

    /// Whether traffic may be sent here (`/readyz`): started, not draining, and [`Readiness::live`].
    pub fn ready(&self, store: &Store) -> Result<(), String> {
        if self.draining.load(Relaxed) {
            return Err("draining: the daemon is stopping".into());
        }
        if !self.started.load(Relaxed) {
            return Err("starting: state not loaded or a Kafka consumer not in its group yet".into());
        }
        self.live(store)
    }
}

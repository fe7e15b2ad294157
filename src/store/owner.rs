//! The one thread that enters sled. Owns the [`Db`], the bounded request queue in front of it
//! and the store's health (what runs now and since when, the last failure). Requests are
//! closures sent by [`super::Store`] handles; each carries a deadline, after which its caller
//! has stopped waiting and it is skipped. Never retries a request and never decides what to
//! write: after an I/O failure (sled keeps its error forever, e.g. after ENOSPC) it drops the
//! database and reopens it, once a second, until that works; requests meanwhile fail at once
//! with the reason. Between requests, at most once a second, it gives the memory allocator's
//! free pages back to the system (sled's freed tree nodes).

use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::db::Db;
use super::{now_ms, StoreError};

/// How often a failed store is reopened.
const REOPEN_EVERY: Duration = Duration::from_secs(1);
/// How often, at most, the owner gives the allocator's free pages back to the system.
const TRIM_EVERY: Duration = Duration::from_secs(1);

/// One request: runs on the owner with the database (or the reason there is none) and sends
/// its own reply; returns the I/O failure it met, if any, so the owner can reopen.
pub(super) type Work = Box<dyn FnOnce(Result<&Db, StoreError>) -> Option<String> + Send>;

pub(super) struct Job {
    pub(super) op: &'static str,
    /// The caller stops waiting at this instant; a job still queued then is skipped.
    pub(super) deadline: Instant,
    pub(super) work: Work,
}

/// What the owner is doing, readable from any thread without asking it (a stalled owner
/// could not answer).
#[derive(Default)]
pub(super) struct Health {
    /// When the running request started (Unix ms); 0 while idle.
    busy_since_ms: AtomicI64,
    busy_op: Mutex<&'static str>,
    /// Why the store cannot be used right now (an I/O failure not yet cured by a reopen).
    failure: Mutex<Option<String>>,
    /// The owner thread has ended (every handle gone, or it panicked outside a request).
    ended: AtomicBool,
}

impl Health {
    /// None when the store is usable; else why not: failed, or one request has run longer
    /// than `stall_after`.
    pub(super) fn problem(&self, stall_after: Duration) -> Option<String> {
        if self.ended.load(Relaxed) {
            return Some("the store owner thread has ended".into());
        }
        if let Some(f) = self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Some(format!("store failed: {f}"));
        }
        let since = self.busy_since_ms.load(Relaxed);
        let running = Duration::from_millis(now_ms().saturating_sub(since).max(0) as u64);
        if since != 0 && running > stall_after {
            let op = *self.busy_op.lock().unwrap_or_else(|p| p.into_inner());
            return Some(format!("store stalled: {op} has been running for {}s", running.as_secs()));
        }
        None
    }

    /// Why the store cannot answer at all (failed, or its owner gone); a stall is not one.
    pub(super) fn failed(&self) -> Option<String> {
        if self.ended.load(Relaxed) {
            return Some("the store owner thread has ended".into());
        }
        self.failure()
    }

    fn set_failure(&self, failure: Option<String>) {
        *self.failure.lock().unwrap_or_else(|p| p.into_inner()) = failure;
    }

    fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

pub(super) struct Owner {
    /// The sled directory (reopened from here after a failure).
    pub(super) dir: PathBuf,
    pub(super) db: Option<Db>,
    /// recwatch's own lock on the store, held for the owner's lifetime (across reopens).
    pub(super) _lock: Option<File>,
    pub(super) health: Arc<Health>,
}

impl Owner {
    pub(super) fn run(mut self, rx: Receiver<Job>) {
        let mut trimmed = Instant::now();
        loop {
            let next = if self.db.is_some() {
                rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
            } else {
                rx.recv_timeout(REOPEN_EVERY)
            };
            let job = match next {
                Ok(job) => Some(job),
                Err(RecvTimeoutError::Timeout) => None,
                Err(RecvTimeoutError::Disconnected) => break,
            };
            if self.db.is_none() {
                self.reopen();
            }
            let Some(job) = job else { continue };
            if Instant::now() >= job.deadline {
                continue; // its caller has given up
            }
            self.health.busy_since_ms.store(now_ms().max(1), Relaxed);
            *self.health.busy_op.lock().unwrap_or_else(|p| p.into_inner()) = job.op;
            let op = job.op;
            let db = match &self.db {
                Some(db) => Ok(db),
                None => Err(StoreError::Failed(self.health.failure().unwrap_or_default())),
            };
            let outcome = catch_unwind(AssertUnwindSafe(|| (job.work)(db)));
            self.health.busy_since_ms.store(0, Relaxed);
            if trimmed.elapsed() >= TRIM_EVERY {
                give_back_free_memory();
                trimmed = Instant::now();
            }
            let failure = match outcome {
                Ok(failure) => failure,
                Err(_) => Some(format!("the database panicked in {op}")),
            };
            if let (Some(failure), Some(_)) = (failure, &self.db) {
                tracing::error!(op, error = %failure, "alert store failed: reopening it until that works");
                self.health.set_failure(Some(failure));
                // sled keeps an I/O error for good: only a fresh instance can write again.
                self.db = None;
            }
        }
        if let Some(db) = self.db.take() {
            if let Err(e) = db.flush() {
                tracing::error!(error = %e, "final flush of the alert store failed");
            }
        }
        self.health.ended.store(true, Relaxed);
    }

    fn reopen(&mut self) {
        match catch_unwind(|| Db::open(&self.dir)) {
            Ok(Ok(db)) => {
                tracing::warn!(dir = %self.dir.display(), "alert store reopened after a failure");
                self.db = Some(db);
                self.health.set_failure(None);
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "alert store still cannot be reopened"),
            Err(_) => tracing::debug!("alert store reopen panicked"),
        }
    }
}

/// Returns the free pages of every malloc arena to the system. sled replaces whole tree nodes
/// on each write and frees the old ones; glibc keeps those pages inside its arenas, where they
/// count as the daemon's memory. Once a second this keeps a mass fetch of 1 M clients at a
/// peak RSS of 228 MiB instead of 246 (`scripts/bench --mass`), at ~5 % of its lines/s.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn give_back_free_memory() {
    // SAFETY: malloc_trim takes no pointer and only walks glibc's own arenas under their locks;
    // any thread may call it at any time.
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn give_back_free_memory() {}

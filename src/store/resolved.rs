//! Tells the detection workers which alerts a person resolved, so the next match of that rule
//! and group opens a new alert instead of folding into the closed one. Owns the subscriber
//! list (one receiver per worker, added when a pipeline starts). Never touches sled and never
//! blocks a sender: a full or dropped receiver is skipped (a worker that lost a notice still
//! learns of the resolve at its next restart, from the stored status).

use std::sync::Mutex;

use crossbeam_channel::{Receiver, Sender};

use crate::detect::alert::Alert;

/// Notices a worker may hold unread; resolves are human actions, so this is never reached in
/// practice, and beyond it a notice is dropped rather than blocking the API. Notices are
/// boxed: the queue's slots are allocated and written when a worker subscribes, and 4096
/// whole alerts would be 1.7 MB per worker.
const NOTICE_QUEUE: usize = 4096;

/// Fan-out of resolve notices to every subscribed worker. The lock is taken only when a
/// worker subscribes and when a person resolves an alert, never on the line path.
#[derive(Default)]
pub struct ResolvedFeed {
    subscribers: Mutex<Vec<Sender<Box<Alert>>>>,
}

impl ResolvedFeed {
    /// A receiver of every alert resolved from now on.
    pub fn subscribe(&self) -> Receiver<Box<Alert>> {
        let (tx, rx) = crossbeam_channel::bounded(NOTICE_QUEUE);
        self.lock().push(tx);
        rx
    }

    /// Tells every live subscriber that `alert` is resolved; forgets those that went away.
    pub fn publish(&self, alert: &Alert) {
        self.lock().retain(|tx| match tx.try_send(Box::new(alert.clone())) {
            Ok(()) | Err(crossbeam_channel::TrySendError::Full(_)) => true,
            Err(crossbeam_channel::TrySendError::Disconnected(_)) => false,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Sender<Box<Alert>>>> {
        // A panic while holding this lock leaves a plain Vec behind: still usable.
        self.subscribers.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::alert::tests::alert;

    #[test]
    fn every_live_subscriber_hears_a_resolve_and_dropped_ones_are_forgotten() {
        let feed = ResolvedFeed::default();
        let (a, b) = (feed.subscribe(), feed.subscribe());
        drop(b);
        feed.publish(&alert(1));
        assert_eq!(a.try_recv().unwrap().id, alert(1).id);
        assert_eq!(feed.lock().len(), 1);
    }
}

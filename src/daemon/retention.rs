//! The retention sweep (GDPR storage limitation): removes alerts last seen longer ago than
//! `retention_days`. Owns the sweep's clock (wall time, never ahead of the newest log event).
//! Never deletes anything else: checkpoints and the outbox are not its business.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::Store;
use crate::telemetry::Telemetry;

/// The retention sweep runs each time its clock has advanced this much.
const RETENTION_SWEEP_EVERY_SECS: i64 = 3600;

/// Removes alerts last seen more than `retention_days` ago. Its clock is the wall clock, but
/// never later than the newest log event read (so replaying old logs into a store does not
/// expire them on the spot); it sweeps whenever that clock has moved an hour since the last
/// sweep (hourly when live; at once when logs jump ahead).
pub(super) async fn retention_sweeps(
    store: Store,
    retention_days: u32,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    let mut check = tokio::time::interval(Duration::from_secs(1));
    let mut last_sweep = i64::MIN;
    loop {
        tokio::select! {
            _ = check.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let newest_event = telemetry.newest_event_unix.load(Relaxed);
        let wall = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        let clock = wall.min(newest_event);
        if newest_event == 0 || clock < last_sweep.saturating_add(RETENTION_SWEEP_EVERY_SECS) {
            continue;
        }
        last_sweep = clock;
        let cutoff = clock - i64::from(retention_days) * 86_400;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || store.remove_last_seen_before(cutoff)).await {
            Ok(Ok(0)) => {}
            Ok(Ok(n)) => {
                telemetry.alerts_expired(n, retention_days);
            }
            Ok(Err(e)) => {
                telemetry.retention_sweep_failed(&e);
            }
            Err(e) => tracing::warn!(error = %e, "retention sweep task failed"),
        }
    }
}

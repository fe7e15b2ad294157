//! SIGHUP: reload the configuration without losing a line. Owns the order of the swap:
//! the new config is loaded and checked first (a bad one keeps the old running, counted and
//! logged); then the running pipeline is drained under a final checkpoint, the Kafka loops
//! commit and stop, and everything starts again from the rewind point with the new config.
//! Never decides when to reload (the signal task does) nor what a config means.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;

use super::files::{RewindHistory, Running};
use super::kafka::stop_kafka_loops;
use super::{load_config, Control, RunOptions};
use crate::alerting::Notifier;
use crate::privacy::Pseudonymizer;
use crate::store::Store;
use crate::telemetry::Telemetry;

/// Reloads from `opts`' config file: the next [`Running`], and whether it is new (false when
/// the new config was refused and the old one keeps running). An error only when draining
/// the old pipeline failed.
pub(super) fn reload(
    running: Running,
    history: &mut RewindHistory,
    opts: &RunOptions,
    store: &Store,
    telemetry: &Arc<Telemetry>,
    control: &Arc<Control>,
    notifier: &mut Notifier,
) -> anyhow::Result<(Running, bool)> {
    let reloaded = load_config(opts).and_then(|new| {
        let key = Pseudonymizer::resolve(new.pseudonyms.as_ref(), &new.store.dir)?;
        Ok((new, key))
    });
    let (new, key) = match reloaded {
        Ok(loaded) => loaded,
        Err(e) => {
            telemetry.config_reload_failures.fetch_add(1, Relaxed);
            tracing::error!(error = %e, "reload failed: keeping the running configuration");
            return Ok((running, false));
        }
    };
    let event_time = running.pipeline.ingest.latest_event_time();
    let checkpoint = running.checkpoint(history);
    let Running { mut pipeline, kafka_loops, .. } = running;
    pipeline.ingest.barrier(serde_json::to_vec(&checkpoint)?, Instant::now());
    pipeline.finish().context("draining the pipeline for a reload")?;
    // Kafka consumers stop with a final commit and rejoin with the new config.
    stop_kafka_loops(kafka_loops)?;
    let config = Arc::new(new);
    notifier.stop();
    *notifier = Notifier::start(&config.alerting, &config.rules, store.clone(), telemetry.clone());
    // Like a restart: re-read from the rewind point (see [`Running::start`]).
    let next = Running::start(config, key, checkpoint.rewind, event_time, store, telemetry, control);
    telemetry.config_reloads.fetch_add(1, Relaxed);
    tracing::info!(rules = next.config.rules.len(), sources = next.config.sources.len(), "configuration reloaded");
    Ok((next, true))
}

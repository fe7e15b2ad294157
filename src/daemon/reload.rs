//! SIGHUP: reload the configuration without losing a line. Owns the order of the swap and
//! what it touches: the new config is loaded and checked first (a bad one keeps the old
//! running, counted and logged); then only what changed is restarted. The receivers alone
//! (`[[receiver]]`, `http.external_url`, their secret files): the notifier is swapped and
//! nothing is read again; the sources, the tailer and every Kafka consumer (and its group
//! membership) stay as they are. Rules, sensitive paths and networks (`[[rule]]`,
//! `[sensitive]`, `[networks]`): swapped into the running pipelines through their queues
//! ([`crate::pipeline::Pipeline::reconfigure`]), so every line read before the reload is
//! judged by the old ones and every line after by the new, none read twice; tailer and Kafka
//! consumers stay; windows and open episodes are kept for rules that count the same events
//! ([`crate::detect::rule::Rule::counts_like`]) and start empty for new or changed ones; the
//! notifier restarts (it names the rules). Anything else the pipelines use (sources, engine,
//! tail, the pseudonym key): the running pipeline is drained under a
//! final checkpoint, the Kafka loops commit and stop, and everything starts again from the
//! rewind point with the new config. Nothing changed: nothing restarts. What changed is judged
//! from the files' text ([`Fingerprint`]), read before the config is built. `[http]`'s own
//! keys (listen, token, limits) take effect at the next start. Never decides when to reload
//! (the signal task does) nor what a config means.

use std::path::{Path, PathBuf};
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

/// What a config file says, as far as a reload needs to know what changed: its text parsed
/// (the compiled config has no equality), split into what the pipelines use and what only
/// the receivers use, with the bytes of the files those parts name.
#[derive(Debug)]
pub(super) struct Fingerprint {
    /// Everything but `[http]`, `[[receiver]]`, `[[rule]]`, `[sensitive]` and `[networks]`,
    /// and the pseudonym key file's bytes: what a running pipeline cannot take in place.
    pipelines: (toml::Table, Option<Vec<u8>>),
    /// `[[rule]]`, `[sensitive]` and `[networks]`: swapped into the running pipelines.
    swappable: [Option<toml::Value>; 3],
    /// `[[receiver]]`, `http.external_url`, and the bytes of every file a receiver names.
    receivers: (Option<toml::Value>, Option<toml::Value>, Vec<Option<Vec<u8>>>),
}

impl Fingerprint {
    /// None when the file cannot be read or parsed (a reload then restarts everything, if
    /// the config builds at all).
    pub(super) fn read(config: &Path) -> Option<Fingerprint> {
        let text = std::fs::read_to_string(config).ok()?;
        let mut table: toml::Table = text.parse().ok()?;
        let base = config.parent().unwrap_or(Path::new("."));
        let file_bytes = |v: &toml::Value| v.as_str().and_then(|f| std::fs::read(base.join(PathBuf::from(f))).ok());
        let key = table.get("privacy").and_then(|p| p.get("pseudonym_key_file")).and_then(file_bytes);
        let receivers = table.remove("receiver");
        let external_url = table.get_mut("http").and_then(|h| h.as_table_mut()).and_then(|h| h.remove("external_url"));
        table.remove("http");
        let swappable = [table.remove("rule"), table.remove("sensitive"), table.remove("networks")];
        let mut secrets = Vec::new();
        for r in receivers.as_ref().and_then(|r| r.as_array()).into_iter().flatten() {
            for (name, value) in r.as_table().into_iter().flatten() {
                if name.ends_with("_file") {
                    secrets.push(file_bytes(value));
                }
            }
        }
        Some(Fingerprint { pipelines: (table, key), swappable, receivers: (receivers, external_url, secrets) })
    }
}

/// Reloads from `opts`' config file: the next [`Running`], and whether its pipelines are new
/// (false when the new config was refused, or changed nothing the pipelines use). `running_as`
/// is the fingerprint of the running config, replaced when the new one is taken. An error only
/// when draining the old pipeline failed.
#[allow(clippy::too_many_arguments)]
pub(super) fn reload(
    mut running: Running,
    running_as: &mut Option<Fingerprint>,
    history: &mut RewindHistory,
    opts: &RunOptions,
    store: &Store,
    telemetry: &Arc<Telemetry>,
    control: &Arc<Control>,
    notifier: &mut Notifier,
) -> anyhow::Result<(Running, bool)> {
    let fresh = Fingerprint::read(&opts.config);
    let reloaded = load_config(opts).and_then(|new| {
        let key = Pseudonymizer::resolve(new.pseudonyms.as_ref(), &new.store.dir)?;
        Ok((new, key))
    });
    let (new, key) = match reloaded {
        Ok(loaded) => loaded,
        Err(e) => {
            telemetry.config_reload_failed(&e);
            return Ok((running, false));
        }
    };
    let (pipelines_same, swappable_same, receivers_same) = match (running_as.as_ref(), &fresh) {
        (Some(o), Some(n)) => (o.pipelines == n.pipelines, o.swappable == n.swappable, o.receivers == n.receivers),
        _ => (false, false, false),
    };
    *running_as = fresh;
    if pipelines_same {
        let config = Arc::new(new);
        if !swappable_same {
            running.pipeline.reconfigure(&config);
            for k in &running.kafka_loops {
                k.reconfigure(config.clone());
            }
        }
        // The notifier names rules in what it sends: new rules restart it too.
        if !receivers_same || !swappable_same {
            notifier.stop();
            *notifier = Notifier::start(&config.alerting, &config.rules, store.clone(), telemetry.clone());
        }
        running.config = config;
        telemetry.config_reloaded_in_place(!receivers_same, !swappable_same);
        return Ok((running, false));
    }
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
    let next = Running::start(config, key, checkpoint, store, telemetry, control);
    telemetry.config_reloaded(next.config.rules.len(), next.config.sources.len());
    Ok((next, true))
}

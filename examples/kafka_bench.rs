//! Kafka consume benchmark: how many log lines per second one recwatch instance consumes
//! from a topic and evaluates (parse, classify, detect, alerts durable, offsets stored).
//!
//! cargo run --release --example kafka_bench -- [LINES] [PARTITIONS]
//!
//! Produces LINES generated lines (the in-project generator, keyed by client as
//! `recwatch kafka-key` does) into librdkafka's mock cluster (default 128 partitions: the mock
//! keeps only the last 5 MB per partition, so a hot partition may lose its oldest lines before
//! they are read; the rate is computed over the lines actually consumed),
//! then runs the daemon's
//! consumer loop (`recwatch::daemon::run_kafka_source`) on them with the reference rules and
//! times it from the first message consumed to the last one evaluated and committed.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use recwatch::config::{Config, Overrides};
use recwatch::parse::{client_key, LogFormat};
use recwatch::store::Store;
use recwatch::telemetry::Telemetry;

#[path = "../tests/support/synth.rs"]
#[allow(dead_code)] // each user takes only part of the generator
mod synth;
use synth::{generate, SynthOptions};

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RECWATCH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let mut args = std::env::args().skip(1);
    let lines: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let partitions: i32 = args.next().map_or(Ok(128), |a| a.parse())?;
    let topic = "access-logs";

    let mut text = Vec::new();
    generate(&SynthOptions { lines, seed: 42, ..SynthOptions::default() }, &mut text)?;
    let cluster = MockCluster::new(1)?;
    cluster.create_topic(topic, partitions, 1)?;
    let bootstrap = cluster.bootstrap_servers();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "2000000")
        .create()?;
    let started = Instant::now();
    let mut bytes = 0usize;
    let total = lines;
    for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        bytes += line.len() + 1;
        let key = client_key(LogFormat::Combined, line).unwrap_or_default();
        let mut record = BaseRecord::to(topic).key(&key).payload(line);
        while let Err((_, r)) = producer.send(record) {
            record = r;
            producer.poll(Duration::from_millis(5));
        }
    }
    producer.flush(Duration::from_secs(120))?;
    eprintln!(
        "produced {lines} lines ({} MB) into {partitions} partitions in {:.1?}",
        bytes / 1_000_000,
        started.elapsed()
    );

    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("recwatch.toml");
    let reference = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/examples/reference.toml"))?;
    let reference = reference.replace("path = \"/var/lib/recwatch/reference\"", "path = \"state\"");
    std::fs::write(
        &config_path,
        format!(
            "{reference}\n[[source]]\nname = \"bench\"\nkind = \"kafka\"\n[source.kafka]\nbrokers = [\"{}\"]\ntopics = [\"{topic}\"]\ngroup_id = \"bench\"\npayload = \"line\"\n[source.kafka.options]\n\"auto.commit.interval.ms\" = 100\n{}",
            bootstrap.split(',').next().unwrap_or_default(),
            std::env::var("KAFKA_BENCH_OPTIONS").unwrap_or_default()
        ),
    )?;
    let overrides = Overrides {
        workers: std::env::var("KAFKA_BENCH_WORKERS").ok().and_then(|w| w.parse().ok()),
        ..Overrides::default()
    };
    let config = Config::load_with(&config_path, &overrides).map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::create_dir_all(&config.store.dir)?;
    let store = Store::open_state_dir(&config.store.dir)?;
    let telemetry = Arc::new(Telemetry::default());
    let stop = tokio_util::sync::CancellationToken::new();
    let consumer = {
        let (store, telemetry, stop) = (store.clone(), telemetry.clone(), stop.clone());
        std::thread::spawn(move || recwatch::daemon::run_kafka_source(&config, "bench", &store, &telemetry, &stop))
    };
    let kafka = telemetry.kafka_source("bench");
    let wait_start = Instant::now();
    while kafka.messages.load(Relaxed) == 0 {
        anyhow::ensure!(wait_start.elapsed() < Duration::from_secs(60), "no message consumed within 60 s");
        std::thread::sleep(Duration::from_micros(200));
    }
    let first = Instant::now();
    eprintln!("joined the group and got the first message after {:.1?}", wait_start.elapsed());
    // Done when every line is consumed, or (the mock dropped some) when nothing more came
    // for five seconds.
    let (mut seen, mut last_change) = (0, Instant::now());
    loop {
        let now = kafka.messages.load(Relaxed);
        if now != seen {
            (seen, last_change) = (now, Instant::now());
        }
        if now >= lines || last_change.elapsed() > Duration::from_secs(5) {
            break;
        }
        anyhow::ensure!(first.elapsed() < Duration::from_secs(300), "not everything consumed within 300 s");
        std::thread::sleep(Duration::from_micros(200));
    }
    let took = last_change.duration_since(first);
    let stopping = Instant::now();
    stop.cancel();
    consumer.join().map_err(|_| anyhow::anyhow!("the consumer panicked"))??;
    eprintln!(
        "final drain (queued events evaluated, alerts durable, offsets committed, group left): {:.1?}",
        stopping.elapsed()
    );
    let lines = kafka.messages.load(Relaxed);
    let bytes = (bytes as f64 * lines as f64 / total as f64) as usize;
    println!(
        "kafka consume+evaluate (mock cluster, {partitions} partitions, 1 instance) {lines} lines {:8.1} ms  {:7.2} M lines/s  {:8.1} MB/s  alerts {}",
        took.as_secs_f64() * 1000.0,
        lines as f64 / took.as_secs_f64() / 1e6,
        bytes as f64 / took.as_secs_f64() / 1e6,
        store.list(&Default::default())?.len()
    );
    Ok(())
}

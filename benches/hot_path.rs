//! Criterion benchmarks of the per-line hot path: tokenizing, classifying, and one detection
//! worker applying the R1/R2 rules to a batch of events. Throughput is in lines (events).

use std::path::Path;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use recwatch::classify::path::PathSemantics;
use recwatch::config::Config;
use recwatch::detect::event::{Event, EventBatch, Route};
use recwatch::detect::worker::{DetectConfig, Worker};
use recwatch::parse::{parse_line, LogFormat};
use recwatch::privacy::Pseudonymizer;

#[path = "../tests/support/synth.rs"]
#[allow(dead_code)] // each user takes only part of the generator
mod synth;
use synth::{generate, SynthOptions};

fn sample_lines() -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    generate(&SynthOptions { lines: 20_000, seed: 1, ..SynthOptions::default() }, &mut out).unwrap();
    out.split(|&b| b == b'\n').filter(|l| !l.is_empty()).map(|l| l.to_vec()).collect()
}

fn reference() -> Config {
    Config::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/reference.toml")).unwrap()
}

fn parse_and_classify(c: &mut Criterion) {
    let lines = sample_lines();
    let config = reference();
    let mut g = c.benchmark_group("hot_path");
    g.throughput(Throughput::Elements(lines.len() as u64));
    g.bench_function("parse_line", |b| {
        b.iter(|| {
            let mut ok = 0u32;
            for l in &lines {
                ok += parse_line(LogFormat::Combined, black_box(l)).is_ok() as u32;
            }
            ok
        })
    });
    let mut scratch = Vec::with_capacity(4096);
    g.bench_function("parse_line+classify_path", |b| {
        b.iter(|| {
            let mut sensitive = 0u32;
            for l in &lines {
                if let Ok(a) = parse_line(LogFormat::Combined, black_box(l)) {
                    sensitive +=
                        config.classify.paths.classify(a.target, PathSemantics::Linux, &mut scratch).is_some() as u32;
                }
            }
            sensitive
        })
    });
    g.finish();
}

fn detect(c: &mut Criterion) {
    let config = reference();
    let cfg = Arc::new(DetectConfig::new(
        config.rules.clone(),
        vec![],
        vec!["bench".into()],
        3600,
        100_000,
        false,
        Pseudonymizer::new(b"bench key, 32 bytes long, fixed"),
    ));
    // 256 events from 40 clients over 60 s, half of them external, 30 distinct files.
    let mut batch = EventBatch::with_capacity();
    for i in 0..EventBatch::MAX_EVENTS as u32 {
        let path = format!("/recordings/2019/02/18/call-{}-part1.wav", i % 30);
        let path = batch.push_bytes(path.as_bytes());
        let method = batch.push_bytes(b"GET");
        let user_agent = batch.push_bytes(b"curl/7.64.0");
        let client = if i % 2 == 0 { format!("10.0.0.{}", i % 40) } else { format!("203.0.113.{}", i % 40) };
        let client: std::net::IpAddr = client.parse().unwrap();
        let client_name = batch.push_bytes(b"");
        batch.events.push(Event {
            client: recwatch::classify::client::ClientId::Ip(client),
            client_name,
            client_class: config.classify.networks.classify(client),
            future: false,
            time: 1_550_480_400 + i64::from(i / 4),
            status: if i % 3 == 0 { 404 } else { 200 },
            body_bytes: 4096,
            path_class: recwatch::classify::path::PathClass::Recording,
            user_present: false,
            transport: recwatch::parse::Transport::Unknown,
            source: 0,
            reread: false,
            path_key: u128::from(i % 30),
            path,
            method,
            user_agent,
            route: Route { client_rules: true, source_rules: false },
        });
    }
    let mut g = c.benchmark_group("detect");
    g.throughput(Throughput::Elements(batch.events.len() as u64));
    g.bench_function("worker_batch_r1_r2", |b| {
        let mut worker = Worker::new(cfg.clone());
        let (mut changed, mut evidence) = (Vec::new(), Vec::new());
        b.iter(|| {
            worker.process_batch(black_box(&batch));
            worker.take_changed(&mut changed);
            worker.take_evidence(&mut evidence);
            changed.clear();
            evidence.clear();
        })
    });
    g.finish();
}

criterion_group!(benches, parse_and_classify, detect);
criterion_main!(benches);

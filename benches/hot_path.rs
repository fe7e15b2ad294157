//! Criterion benchmarks of the per-line hot path: tokenizing, classifying, and one detection
//! worker applying the R1/R2 rules to a batch of events; and parsing plus classifying in every
//! format a source can have (the same synthetic requests written in each). Throughput is in
//! lines (events).

use std::path::Path;
use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use recwatch::classify::path::PathSemantics;
use recwatch::config::Config;
use recwatch::detect::event::{Event, EventBatch, Route};
use recwatch::detect::worker::{DetectConfig, Worker};
use recwatch::parse::{parse_line, LineFormat, LogFormat};
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

/// The synthetic requests written in `format` (a `[[source]]` format key): combined lines
/// re-rendered field by field.
fn lines_in(format: &str, combined: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    combined
        .iter()
        .filter_map(|l| parse_line(LogFormat::Combined, l).ok())
        .map(|a| {
            let (client, time, method, target) = (text(a.client), text(a.time), text(a.method), text(a.target));
            let (status, bytes, ua) = (a.status, a.body_bytes(), text(a.user_agent().unwrap_or(b"-")));
            let request = format!("{method} {target} HTTP/1.1");
            match format {
                "common" => format!("{client} - - [{time}] \"{request}\" {status} {bytes}"),
                "vhost_combined" => format!("files.example:443 {client} - - [{time}] \"{request}\" {status} {bytes} \"-\" \"{ua}\""),
                "nginx_log_format" => format!(
                    "{client} - - [{time}] https \"{request}\" {status} {bytes} \"-\" \"{ua}\" \"-\" rt=0.002 ua=\"-\""
                ),
                "traefik_json" => format!(
                    "{{\"ClientHost\":\"{client}\",\"ClientUsername\":\"-\",\"DownstreamContentSize\":{bytes},\
                     \"DownstreamStatus\":{status},\"RequestMethod\":\"{method}\",\"RequestPath\":\"{target}\",\
                     \"RequestProtocol\":\"HTTP/1.1\",\"RequestScheme\":\"https\",\"StartUTC\":\"2019-02-18T09:00:01.5Z\",\
                     \"request_User-Agent\":\"{}\"}}",
                    ua.replace('\\', "\\\\").replace('"', "\\\"")
                ),
                "xferlog" => format!("Mon Feb 18 09:00:01 2019 1 {client} {bytes} {target} b _ o a anon@ ftp 0 * c"),
                "samba_full_audit" => {
                    format!("2019-02-18T09:00:01.222723+00:00 nas smbd[21760]:   nobody|{client}|laptop|rec|pread_recv|ok|{target}")
                }
                _ => text(&combined[0]),
            }
            .into_bytes()
        })
        .collect()
}

fn formats(c: &mut Criterion) {
    let combined = sample_lines();
    let dir = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("format");
    g.throughput(Throughput::Elements(combined.len() as u64));
    for (name, source) in [
        ("combined", "format = \"combined\""),
        ("common", "format = \"common\""),
        ("vhost_combined", "format = \"vhost_combined\""),
        (
            "nginx_log_format",
            r#"nginx_log_format = '$remote_addr - $remote_user [$time_local] $scheme "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" "$http_x_forwarded_for" rt=$request_time ua="$upstream_addr"'"#,
        ),
        ("traefik_json", "format = \"traefik_json\""),
        ("xferlog", "format = \"xferlog\""),
        ("samba_full_audit", "format = \"samba_full_audit\"\nsamba_prefix = \"%u|%I|%m|%S\""),
    ] {
        let config_path = dir.path().join(format!("{name}.toml"));
        std::fs::write(
            &config_path,
            format!(
                "[sensitive]\nprefixes = [\"/recordings/\"]\nextensions = [\"wav\", \"mp3\", \"gsm\", \"ogg\"]\n\
                 [[source]]\nname = \"{name}\"\npath = \"/var/log/{name}.log\"\n{source}\n"
            ),
        )
        .unwrap();
        let config = Config::load(&config_path).unwrap();
        let format: LineFormat = config.sources[0].format.clone();
        let lines = if name == "combined" { combined.clone() } else { lines_in(name, &combined) };
        let parsed = lines.iter().filter(|l| format.parse(l).is_ok()).count();
        assert!(parsed * 10 >= lines.len() * 9, "{name}: only {parsed} of {} lines parse", lines.len());
        let mut scratch = Vec::with_capacity(4096);
        g.bench_function(name, |b| {
            b.iter(|| {
                let mut sensitive = 0u32;
                for l in &lines {
                    if let Ok(a) = format.parse(black_box(l)) {
                        sensitive +=
                            config.classify.paths.classify(a.target, PathSemantics::Linux, &mut scratch).is_some()
                                as u32;
                    }
                }
                sensitive
            })
        });
    }
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

criterion_group!(benches, parse_and_classify, formats, detect);
criterion_main!(benches);

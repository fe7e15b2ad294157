//! Soak: a real `recwatch run` under everything at once, for minutes: ~10 k lines/s appended
//! (and the log rotated), SIGHUP every second (every other one after a rule change, so the
//! rules are swapped into running pipelines), the alert API listed and acked in a loop, `/metrics` scraped in a
//! loop, a receiver that always fails (so deliveries retry). The
//! daemon must never wedge: every request answers within its deadline, reading keeps making
//! progress, a line written at the end raises its alert, and SIGTERM ends it cleanly.
//!
//! `RECWATCH_SOAK_SECS` sets the length (default [`DEFAULT_SOAK_SECS`], the CI-sized form run by
//! `cargo test`; `scripts/soak` runs 30 minutes).

use std::io::{BufRead, BufReader, Read, Write};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

mod common;
use common::{wait_until, Daemon};

const TOKEN: &str = "soak-token-0123456789abcdef";
/// Every request of the soak must be answered within this (the server's own request limit is
/// 10 s; a wedged daemon never answers).
const REQUEST_DEADLINE: Duration = Duration::from_secs(15);
/// Reading must advance within this, or the daemon is wedged.
const PROGRESS_DEADLINE: Duration = Duration::from_secs(30);
const LINES_PER_SECOND: u64 = 10_000;
/// The soak's length when `RECWATCH_SOAK_SECS` is unset: the "at least 5 minutes" in CI.
const DEFAULT_SOAK_SECS: u64 = 300;

/// A receiver that answers 500 to everything; counts the requests.
fn failing_receiver() -> (u16, Arc<AtomicU64>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let (mut line, mut length) = (String::new(), 0usize);
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            counted.fetch_add(1, Relaxed);
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, hits)
}

/// Line `n` of the generated log: event time advances one second per LINES_PER_SECOND lines;
/// one line in ten is an unknown client (of 200) fetching a recording.
fn line(n: u64) -> String {
    let t = n / LINES_PER_SECOND;
    let (h, m, s) = (10 + t / 3600, (t / 60) % 60, t % 60);
    let client =
        if n % 10 == 0 { format!("198.51.100.{}", (n / 10) % 200) } else { format!("10.0.{}.{}", n % 7, n % 250) };
    format!(
        "{client} - - [18/Feb/2019:{h:02}:{m:02}:{s:02} +0100] \"GET /recordings/{}.wav HTTP/1.1\" 200 4096 \"-\" \"soak/1\"\n",
        n % 5000
    )
}

/// What the request loops saw: requests by kind, the slowest, and any failure.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    slowest_ms: AtomicU64,
    failures: Mutex<Vec<String>>,
}

impl Tally {
    fn timed<T>(&self, what: &str, f: impl FnOnce() -> Result<T, String>) -> Option<T> {
        let started = Instant::now();
        let result = f();
        self.requests.fetch_add(1, Relaxed);
        self.slowest_ms.fetch_max(started.elapsed().as_millis() as u64, Relaxed);
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                self.failures.lock().unwrap().push(format!("{what} after {:?}: {e}", started.elapsed()));
                None
            }
        }
    }
}

/// The daemon's resident memory (KiB) and open file descriptors, from /proc: figures for the
/// report (a leak shows as growth between start and end), never asserted on.
fn resources(pid: u32) -> (u64, usize) {
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().trim_end_matches(" kB").parse().ok()))
        })
        .flatten()
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0);
    (rss, fds)
}

fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| series.split('{').next() == Some(name))
        .map(|(_, v)| v.parse::<f64>().unwrap_or(0.0))
        .reduce(|a, b| a + b)
}

#[test]
fn soak_under_load_sighup_api_metrics_and_a_failing_receiver_never_wedges() {
    let soak = Duration::from_secs(
        std::env::var("RECWATCH_SOAK_SECS").ok().and_then(|v| v.parse().ok()).unwrap_or(DEFAULT_SOAK_SECS),
    );
    let dir = tempfile::tempdir().unwrap();
    let (receiver_port, receiver_hits) = failing_receiver();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("hmac.key"), "soak-hmac-key-0123456789abcdef").unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config_file = dir.path().join("recwatch.toml");
    let log_path = log.display().to_string();
    let config = move |threshold: u32| {
        format!(
        "[store]\npath = \"state\"\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\nrotated_drain_secs = 5\n[[source]]\nname = \"web\"\npath = \"{}\"\n[[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"critical\"\nstatus = [200, 206]\nclient_kind = [\"unknown\"]\n[[rule]]\nid = \"R2\"\nname = \"enumeration\"\nseverity = \"critical\"\naggregate = \"distinct\"\nwindow_secs = 5\nthreshold = {threshold}\n[[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{receiver_port}/hook\"\nsecret_file = \"hmac.key\"\nretry_initial_ms = 100\nretry_max_ms = 1000\n",
        log_path
    )
    };
    std::fs::write(&config_file, config(20)).unwrap();
    let d = Daemon::spawn(&config_file, Some(TOKEN));
    d.wait_ready();
    let pid = d.pid().to_string();
    let (rss_start, fds_start) = resources(d.pid());

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    // the writer: LINES_PER_SECOND in batches every 100 ms; rotates every 15 s
    {
        let (stop, written, log, dir) = (stop.clone(), written.clone(), log.clone(), dir.path().to_path_buf());
        threads.push(std::thread::spawn(move || {
            let started = Instant::now();
            let mut last_rotation = Instant::now();
            while !stop.load(Relaxed) {
                let due = started.elapsed().as_millis() as u64 * LINES_PER_SECOND / 1000;
                let from = written.load(Relaxed);
                if due > from {
                    let batch: String = (from..due).map(line).collect();
                    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
                    f.write_all(batch.as_bytes()).unwrap();
                    written.store(due, Relaxed);
                }
                if last_rotation.elapsed() >= Duration::from_secs(15) {
                    std::fs::rename(&log, dir.join("access.log.1")).unwrap();
                    last_rotation = Instant::now();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // SIGHUP every second; every other one after a rule change (swapped into the running pipelines),
    // the rest with nothing changed
    let hups = Arc::new(AtomicU64::new(0));
    {
        let (stop, hups, pid, config_file) = (stop.clone(), hups.clone(), pid.clone(), config_file.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                if hups.load(Relaxed) % 2 == 0 {
                    std::fs::write(&config_file, config(20 + (hups.load(Relaxed) / 2 % 2) as u32)).unwrap();
                }
                assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
                hups.fetch_add(1, Relaxed);
                std::thread::sleep(Duration::from_secs(1));
            }
        }));
    }
    let client = reqwest::blocking::Client::builder().timeout(REQUEST_DEADLINE).build().unwrap();
    let base = d.base();
    // the API: list open alerts, ack the first
    let api = Arc::new(Tally::default());
    {
        let (stop, api, client, base) = (stop.clone(), api.clone(), client.clone(), base.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                let listed = api.timed("GET /api/v1/alerts", || {
                    let r = client
                        .get(format!("{base}/api/v1/alerts?status=open&limit=50"))
                        .bearer_auth(TOKEN)
                        .send()
                        .map_err(|e| e.to_string())?;
                    if r.status() != 200 {
                        return Err(format!("status {}", r.status()));
                    }
                    r.json::<Vec<serde_json::Value>>().map_err(|e| e.to_string())
                });
                if let Some(id) = listed.as_ref().and_then(|l| l.first()).and_then(|a| a["id"].as_str()) {
                    api.timed("POST ack", || {
                        let r = client
                            .post(format!("{base}/api/v1/alerts/{id}/ack"))
                            .bearer_auth(TOKEN)
                            .send()
                            .map_err(|e| e.to_string())?;
                        (r.status() == 200).then_some(()).ok_or_else(|| format!("status {}", r.status()))
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }));
    }
    // /metrics in a loop; the newest lines_read_total for the progress check
    let scrapes = Arc::new(Tally::default());
    let lines_read = Arc::new(AtomicU64::new(0));
    let alerts_raised = Arc::new(AtomicU64::new(0));
    {
        let (stop, scrapes, lines_read, alerts_raised, client, base) =
            (stop.clone(), scrapes.clone(), lines_read.clone(), alerts_raised.clone(), client.clone(), base.clone());
        threads.push(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                if let Some(text) = scrapes.timed("GET /metrics", || {
                    let r = client.get(format!("{base}/metrics")).send().map_err(|e| e.to_string())?;
                    if r.status() != 200 {
                        return Err(format!("status {}", r.status()));
                    }
                    r.text().map_err(|e| e.to_string())
                }) {
                    lines_read.store(metric(&text, "recwatch_lines_read_total").unwrap_or(0.0) as u64, Relaxed);
                    alerts_raised.store(metric(&text, "recwatch_alerts_total").unwrap_or(0.0) as u64, Relaxed);
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }));
    }

    let started = Instant::now();
    let mut last = (0u64, Instant::now());
    let mut reported = Instant::now();
    while started.elapsed() < soak {
        std::thread::sleep(Duration::from_secs(1));
        if reported.elapsed() >= Duration::from_secs(60) {
            reported = Instant::now();
            let (rss, fds) = resources(d.pid());
            eprintln!(
                "soak at {:?}: {} lines written, {} read, {} alerts, {} SIGHUPs, API slowest {} ms, /metrics slowest {} ms, RSS {} MiB, {} fds",
                started.elapsed(),
                written.load(Relaxed),
                lines_read.load(Relaxed),
                alerts_raised.load(Relaxed),
                hups.load(Relaxed),
                api.slowest_ms.load(Relaxed),
                scrapes.slowest_ms.load(Relaxed),
                rss / 1024,
                fds
            );
        }
        let now = lines_read.load(Relaxed);
        if now > last.0 {
            last = (now, Instant::now());
        }
        let failures = api.failures.lock().unwrap().len() + scrapes.failures.lock().unwrap().len();
        d.assert_alive();
        if failures > 0 || last.1.elapsed() > PROGRESS_DEADLINE {
            break;
        }
    }
    stop.store(true, Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let ran = started.elapsed();
    let (rss_end, fds_end) = resources(d.pid());
    let report = format!(
        "soak {ran:?}: {} lines written, {} lines read (re-reads after reloads included), {} alerts, {} SIGHUPs; \
         API {} requests (slowest {} ms), /metrics {} scrapes (slowest {} ms, deadline {REQUEST_DEADLINE:?}), \
         failing receiver hit {} times; RSS {} MiB at start, {} MiB at end; {fds_start} fds at start, {fds_end} at end",
        written.load(Relaxed),
        lines_read.load(Relaxed),
        alerts_raised.load(Relaxed),
        hups.load(Relaxed),
        api.requests.load(Relaxed),
        api.slowest_ms.load(Relaxed),
        scrapes.requests.load(Relaxed),
        scrapes.slowest_ms.load(Relaxed),
        receiver_hits.load(Relaxed),
        rss_start / 1024,
        rss_end / 1024,
    );
    eprintln!("{report}");
    let failures: Vec<String> =
        api.failures.lock().unwrap().iter().chain(scrapes.failures.lock().unwrap().iter()).cloned().collect();
    assert!(failures.is_empty(), "requests not answered in time: {failures:?}\n{report}");
    assert!(last.1.elapsed() <= PROGRESS_DEADLINE, "reading stopped for {:?}\n{report}", last.1.elapsed());
    assert!(ran >= soak, "the soak ended early\n{report}");
    assert!(receiver_hits.load(Relaxed) > 0, "the failing receiver was never tried\n{report}");

    // still alive end to end: a new client's fetch written now raises its alert
    let mut f = std::fs::OpenOptions::new().create(true).append(true).open(&log).unwrap();
    f.write_all(b"192.0.2.200 - - [18/Feb/2019:23:59:59 +0100] \"GET /recordings/last.wav HTTP/1.1\" 200 4096 \"-\" \"soak/1\"\n")
        .unwrap();
    wait_until("the last line's alert", Duration::from_secs(120), || {
        d.get("/api/v1/alerts?client=192.0.2.200").filter(|(s, b)| *s == 200 && b.contains("192.0.2.200")).map(|_| ())
    });
    assert!(d.terminate().success(), "SIGTERM ends the daemon cleanly\n{report}");
}

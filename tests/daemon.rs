//! End-to-end tests of `recwatch run`: the real binary follows real files, is stopped,
//! killed and restarted, and is observed only through its own interfaces (/metrics, the
//! alert API, the store). Every wait is on an event with a deadline, never a fixed sleep.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod common;
use common::{reserve_port, wait_until, Daemon};
use serde_json::Value;

#[path = "support/synth.rs"]
#[allow(dead_code)] // each user takes only part of the generator
mod synth;
use synth::{generate, SynthOptions};

const TOKEN: &str = "test-token-0123456789abcdef";

/// A test environment: a directory with logs, a config, a state dir; daemons started in it.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// `internal` lists the internal networks; `source` the followed path (relative to dir).
    fn new(internal: &str, source: &str, rules: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        let config = format!(
            "[store]\npath = \"state\"\n[networks]\ninternal = [{internal}]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\nrotated_drain_secs = 1\n[[source]]\nname = \"web\"\npath = \"{}\"\n{rules}",
            dir.path().join(source).display()
        );
        std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
        Env { dir }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn start(&self) -> Daemon {
        let d = Daemon::spawn(&self.path("recwatch.toml"), Some(TOKEN));
        d.wait_ready();
        d
    }

    /// The report of a clean replay of `log` (in the dir) into `clean-state`, ledger included:
    /// what a daemon's alerts, counts and ledger must equal.
    fn clean_replay(&self, log: &str) -> Value {
        let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
            .args(["replay", "--ledger", "--config"])
            .arg(self.path("recwatch.toml"))
            .arg("--state-dir")
            .arg(self.path("clean-state"))
            .arg(self.path(log))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn append(&self, file: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path(file)).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

fn fetch_line(client: &str, second: u32, path: &str, status: u16) -> String {
    format!(
        "{client} - - [18/Feb/2019:10:{:02}:{:02} +0100] \"GET {path} HTTP/1.1\" {status} 4096 \"-\" \"curl/8\"\n",
        second / 60,
        second % 60
    )
}

const R1_R2: &str = "[[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"critical\"\nstatus = [200, 206]\nclient_kind = [\"unknown\"]\n[[rule]]\nid = \"R2\"\nname = \"enumeration\"\nseverity = \"critical\"\naggregate = \"distinct\"\nwindow_secs = 60\nthreshold = 20\n";

#[test]
fn starts_without_its_log_file_and_alerts_when_it_appears() {
    let env = Env::new("\"10.0.0.0/8\"", "logs/access.log", R1_R2);
    let d = env.start();
    d.wait_metric("recwatch_sources_waiting", "", 1.0);
    std::fs::create_dir_all(env.path("logs")).unwrap();
    env.append("logs/access.log", &fetch_line("10.1.1.1", 1, "/recordings/a.wav", 200));
    env.append("logs/access.log", &fetch_line("203.0.113.5", 2, "/Recordings/%2e/b.WAV", 200));
    d.wait_metric("recwatch_alerts_total", "rule=\"unknown-client-fetch\"", 1.0);
    let alerts = d.alerts();
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(alerts[0]["client"], "203.0.113.5");
    assert_eq!(alerts[0]["sample"][0], "/recordings/b.wav");
    assert_eq!(d.metric("recwatch_sources_waiting", ""), Some(0.0));

    // while the daemon holds the store, the terminal commands go through its API
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
            .args(args)
            .arg("--config")
            .arg(env.path("recwatch.toml"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let listed: Vec<Value> = serde_json::from_str(&cli(&["alerts", "list", "--json"])).unwrap();
    assert_eq!(listed, alerts);
    let id = alerts[0]["id"].as_str().unwrap();
    assert_eq!(cli(&["alerts", "ack", id]).trim(), format!("{id} acked"));
    assert_eq!(d.alerts()[0]["status"], "acked");
    assert!(d.terminate().success());
}

#[test]
fn port_0_is_reported_on_stderr_and_in_the_state_dir_until_a_clean_exit() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    let d = env.start();
    assert_ne!(d.addr.port(), 0);
    assert!(d.stderr().contains(&format!("recwatch: listening on http://{}\n", d.addr)), "{}", d.stderr());
    let file = env.path("state/http.addr");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), format!("{}\n", d.addr));
    assert!(d.terminate().success());
    assert!(!file.exists(), "removed on a clean exit");
}

#[test]
fn sigterm_flushes_and_a_restart_neither_loses_nor_doubles_alerts() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    let mut log = String::new();
    for i in 0..30 {
        log += &fetch_line("198.51.100.7", i, &format!("/recordings/{i}.wav"), 200);
    }
    env.append("access.log", &log);
    let d = env.start();
    d.wait_metric("recwatch_lines_read_total", "", 30.0);
    d.wait_metric("recwatch_alerts_total", "rule=\"enumeration\"", 1.0);
    let before = d.alerts();
    assert_eq!(before.len(), 2, "{before:?}");
    assert!(d.terminate().success(), "SIGTERM exits 0");

    let d = env.start();
    env.append("access.log", &fetch_line("198.51.100.7", 31, "/recordings/31.wav", 200));
    wait_until("the new line to be counted", Duration::from_secs(20), || {
        let a = d.alerts();
        a.iter().all(|x| x["requests"].as_u64() == Some(31) || x["rule"] == "enumeration").then_some(())
    });
    let after = d.alerts();
    let ids = |v: &[Value]| v.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&after), ids(&before), "same alerts, updated, none added");
    let r1 = after.iter().find(|a| a["rule"] == "unknown-client-fetch").unwrap();
    assert_eq!(r1["requests"], 31, "re-read lines are not counted twice");
    assert!(d.terminate().success());
}

#[test]
fn sighup_reloads_and_a_broken_config_keeps_the_old_one_running() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    env.append("access.log", &fetch_line("203.0.113.1", 1, "/recordings/a.wav", 200));
    let d = env.start();
    d.wait_metric("recwatch_alerts_total", "rule=\"unknown-client-fetch\"", 1.0);
    let cfg = env.path("recwatch.toml");
    let good = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, good.replace("[[rule]]", "[[rul]]")).unwrap();
    d.signal("HUP");
    d.wait_metric("recwatch_config_reloads_total", "result=\"failure\"", 1.0);
    // still running on the old rules
    env.append("access.log", &fetch_line("203.0.113.2", 2, "/recordings/b.wav", 200));
    d.wait_metric("recwatch_alerts_total", "rule=\"unknown-client-fetch\"", 2.0);
    // a good change: 203.0.113.0/24 becomes internal
    std::fs::write(&cfg, good.replace("\"10.0.0.0/8\"", "\"10.0.0.0/8\", \"203.0.113.0/24\"")).unwrap();
    d.signal("HUP");
    d.wait_metric("recwatch_config_reloads_total", "result=\"success\"", 1.0);
    env.append("access.log", &fetch_line("203.0.113.3", 3, "/recordings/c.wav", 200));
    env.append("access.log", &fetch_line("198.51.100.1", 4, "/recordings/d.wav", 200));
    d.wait_metric("recwatch_alerts_total", "rule=\"unknown-client-fetch\"", 3.0);
    let clients: BTreeSet<String> = d.alerts().iter().map(|a| a["client"].as_str().unwrap().to_string()).collect();
    assert!(!clients.contains("203.0.113.3"), "now internal: {clients:?}");
    assert!(clients.contains("198.51.100.1"));
    assert!(d.terminate().success());
}

#[test]
fn alerts_older_than_the_retention_are_swept() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    let config = std::fs::read_to_string(env.path("recwatch.toml")).unwrap();
    std::fs::write(
        env.path("recwatch.toml"),
        config.replacen("path = \"state\"\n", "path = \"state\"\nretention_days = 1\n", 1),
    )
    .unwrap();
    let line = |client: &str, day: u32| {
        format!(
            "{client} - - [{day}/Feb/2019:10:00:00 +0100] \"GET /recordings/a.wav HTTP/1.1\" 200 9 \"-\" \"curl/8\"\n"
        )
    };
    // 198.51.100.1 fetched three days before the newest line: past a one-day retention.
    env.append("access.log", &(line("198.51.100.1", 18) + &line("198.51.100.2", 21)));
    let d = env.start();
    d.wait_metric("recwatch_alerts_expired_total", "", 1.0);
    let left = d.alerts();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_eq!(left[0]["client"], "198.51.100.2");
    assert_eq!(d.metric("recwatch_alerts_expired_total", ""), Some(1.0));
    assert!(d.terminate().success());
}

#[test]
fn a_corrupt_store_is_quarantined_and_the_daemon_starts_anyway() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    env.append("access.log", &fetch_line("203.0.113.1", 1, "/recordings/a.wav", 200));
    let d = env.start();
    d.wait_metric("recwatch_alerts_total", "", 1.0);
    assert!(d.terminate().success());
    // overwrite every file of the database with zeros
    let db = env.path("state/db");
    for entry in walk(&db) {
        let len = std::fs::metadata(&entry).unwrap().len().max(512) as usize;
        std::fs::write(&entry, vec![0u8; len]).unwrap();
    }
    let d = env.start();
    d.wait_metric("recwatch_store_quarantines_total", "", 1.0);
    assert!(std::fs::read_dir(env.path("state")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("db.corrupt-")));
    // the log is read again into the fresh store
    d.wait_metric("recwatch_alerts_total", "", 1.0);
    assert_eq!(d.alerts().len(), 1);
    assert!(d.terminate().success());
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn down_across_two_rotations_resumes_every_generation() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    env.append("access.log", &fetch_line("203.0.113.1", 1, "/recordings/a.wav", 200));
    let d = env.start();
    d.wait_metric("recwatch_alerts_total", "", 1.0);
    assert!(d.terminate().success());
    // the original gets a line after we stopped, then two rotations happen while we are down
    env.append("access.log", &fetch_line("203.0.113.2", 2, "/recordings/b.wav", 200));
    std::fs::rename(env.path("access.log"), env.path("access.log.1")).unwrap();
    env.append("access.log", &fetch_line("203.0.113.3", 3, "/recordings/c.wav", 200));
    std::fs::rename(env.path("access.log.1"), env.path("access.log.2")).unwrap();
    std::fs::rename(env.path("access.log"), env.path("access.log.1")).unwrap();
    env.append("access.log", &fetch_line("203.0.113.4", 4, "/recordings/d.wav", 200));
    let d = env.start();
    // one alert per client, one client per generation (the first alert is from before)
    let clients = wait_until("an alert from every generation", Duration::from_secs(30), || {
        let clients: BTreeSet<String> = d.alerts().iter().map(|a| a["client"].as_str().unwrap().to_string()).collect();
        (clients.len() >= 4).then_some(clients)
    });
    assert_eq!(clients.len(), 4, "{clients:?}");
    assert!(d.terminate().success());
}

/// Alerts of a finished run as (rule, client) → number of alerts.
fn alert_counts(alerts: &[Value]) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for a in alerts {
        *m.entry((a["rule"].as_str().unwrap().to_string(), a["client"].as_str().unwrap().to_string())).or_insert(0) +=
            1;
    }
    m
}

#[test]
fn kill_9_at_random_points_neither_loses_nor_doubles_alerts() {
    let cycles: usize = std::env::var("RECWATCH_KILL_CYCLES").ok().and_then(|v| v.parse().ok()).unwrap_or(20);
    let env = Env::new("\"10.0.0.0/8\", \"192.168.0.0/16\"", "access.log", R1_R2);
    let mut full = Vec::new();
    generate(&SynthOptions { lines: 60_000, seed: 21, ..SynthOptions::default() }, &mut full).unwrap();
    // the expected alerts: a clean replay of the same lines
    std::fs::write(env.path("full.log"), &full).unwrap();
    let clean = env.clean_replay("full.log");
    let expected = alert_counts(clean["alerts"].as_array().unwrap());
    assert!(expected.len() > 10);

    // write the log in pieces while the daemon is killed at pseudo-random points
    let chunks: Vec<&[u8]> = full.split_inclusive(|&b| b == b'\n').collect();
    let per_cycle = chunks.len().div_ceil(cycles);
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut written = 0;
    for _ in 0..cycles {
        let d = env.start();
        let end = (written + per_cycle).min(chunks.len());
        env.append("access.log", &String::from_utf8(chunks[written..end].concat()).unwrap());
        written = end;
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_millis(rng % 150));
        drop(d); // SIGKILL
    }
    let d = env.start();
    // Every line read: no lag, with lines counted, in ONE scrape. (Read from two scrapes, the
    // lag of a moment before the first poll — 0, nothing scanned yet — was paired with the
    // line count after it, and a SIGTERM then stopped the final run after its first 4 MiB.)
    wait_until("every line to be read", Duration::from_secs(60), || {
        let m = d.scrape()?;
        (m.metric("recwatch_source_lag_bytes", "")? == 0.0 && m.metric("recwatch_lines_read_total", "")? > 0.0)
            .then_some(())
    });
    let status = d.terminate();
    assert!(status.success());
    let listed = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["alerts", "list", "--json", "--state-dir"])
        .arg(env.path("state"))
        .output()
        .unwrap();
    let got: Vec<Value> = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(alert_counts(&got), expected, "alerts after {cycles} kill -9 cycles equal a clean replay");
    // ... and so does every count in them (the evidence is counted once per line, by position)
    assert_eq!(
        alert_totals(&got),
        alert_totals(clean["alerts"].as_array().unwrap()),
        "counts after {cycles} kill -9 cycles equal a clean replay"
    );
    let (got, replayed) = (ledger(&env.path("state")), ledger(&env.path("clean-state")));
    assert!(got.len() > 10, "the ledger holds the unknown clients' fetches: {}", got.len());
    assert_eq!(got, replayed, "the evidence ledger after {cycles} kill -9 cycles equals a clean replay's");
}

/// A ledger entry's numbers: requests, 2xx requests, bytes, first seen, last seen.
type LedgerCounts = (u64, u64, u64, i64, i64);

/// The evidence ledger of a stopped daemon's (or a replay's) state dir, by (client, path).
fn ledger(state_dir: &Path) -> BTreeMap<(String, String), LedgerCounts> {
    let store = recwatch::store::Store::open_state_dir_read_only(state_dir).unwrap();
    store
        .ledger_entries(None, 0)
        .unwrap()
        .into_iter()
        .map(|e| ((e.client, e.path), (e.requests, e.ok, e.bytes, e.first_seen, e.last_seen)))
        .collect()
}

/// Each alert's identity and counts: (id, rule, client) → (requests, distinct, bytes).
fn alert_totals(alerts: &[Value]) -> BTreeMap<(String, String, String), (u64, u64, u64)> {
    alerts
        .iter()
        .map(|a| {
            let text = |k: &str| a[k].as_str().unwrap_or_default().to_string();
            let n = |k: &str| a[k].as_u64().unwrap();
            ((text("id"), text("rule"), text("client")), (n("requests"), n("distinct_resources"), n("bytes")))
        })
        .collect()
}

/// The case: a client fetches call-0..99, the daemon is stopped (SIGTERM, or killed),
/// restarted, and the client fetches call-100..199 (the first ones in an already-seen second):
/// the alert says 200 requests of 200 recordings, like a replay of the same log.
fn restart_in_the_middle_of_one_clients_fetches(kill: bool) {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    let mut first = String::new();
    for i in 0..100 {
        first += &fetch_line("203.0.113.50", i / 4, &format!("/recordings/call-{i}.wav"), 200);
    }
    env.append("access.log", &first);
    let d = env.start();
    d.wait_metric("recwatch_lines_read_total", "", 100.0);
    wait_until("the first 100 fetches counted", Duration::from_secs(60), || {
        d.alerts().iter().any(|a| a["rule"] == "unknown-client-fetch" && a["requests"] == 100).then_some(())
    });
    if kill {
        drop(d); // SIGKILL
    } else {
        assert!(d.terminate().success());
    }
    let mut second = String::new();
    for i in 100..200 {
        second += &fetch_line("203.0.113.50", i / 4 - 1, &format!("/recordings/call-{i}.wav"), 200);
    }
    env.append("access.log", &second);
    let d = env.start();
    let after = wait_until("all 200 fetches counted", Duration::from_secs(60), || {
        let alerts = d.alerts();
        alerts.iter().any(|a| a["rule"] == "unknown-client-fetch" && a["requests"] == 200).then_some(alerts)
    });
    assert!(d.terminate().success());
    let r1 = after.iter().find(|a| a["rule"] == "unknown-client-fetch").unwrap();
    assert_eq!((r1["requests"].as_u64(), r1["distinct_resources"].as_u64()), (Some(200), Some(200)), "{r1}");
    let replayed = env.clean_replay("access.log");
    assert_eq!(alert_totals(&after), alert_totals(replayed["alerts"].as_array().unwrap()));
    let entries = ledger(&env.path("state"));
    assert_eq!(entries.len(), 200, "one ledger entry per recording");
    assert!(entries.values().all(|e| e.0 == 1 && e.1 == 1 && e.2 == 4096), "each fetched once: {entries:?}");
    assert_eq!(entries, ledger(&env.path("clean-state")));
}

#[test]
fn sigterm_in_the_middle_of_one_clients_fetches_keeps_requests_and_distinct_exact() {
    restart_in_the_middle_of_one_clients_fetches(false);
}

#[test]
fn kill_9_in_the_middle_of_one_clients_fetches_keeps_requests_and_distinct_exact() {
    restart_in_the_middle_of_one_clients_fetches(true);
}

/// The kill -9 test's early stops: the daemon said ready before its first scan, when the lag
/// gauge still read 0 (no file known yet), so "ready and lag 0" did not mean "caught up".
#[test]
fn once_ready_a_lag_of_0_means_every_line_was_read() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    let mut log = Vec::new();
    // More than one poll's read budget (4 MiB), so the first poll leaves a backlog.
    generate(&SynthOptions { lines: 40_000, seed: 5, ..SynthOptions::default() }, &mut log).unwrap();
    assert!(log.len() > 5 << 20, "{} bytes", log.len());
    let lines = log.iter().filter(|&&b| b == b'\n').count() as f64;
    std::fs::write(env.path("access.log"), &log).unwrap();
    let d = env.start();
    // From readiness on, every scrape shows either a backlog or lines read.
    wait_until("a lag of 0", Duration::from_secs(60), || {
        let m = d.scrape().unwrap();
        let lag = m.metric("recwatch_source_lag_bytes", "").unwrap();
        let read = m.metric("recwatch_lines_read_total", "").unwrap();
        assert!(lag > 0.0 || read > 0.0, "ready, lag 0 and no line read yet, with {lines} lines in the file");
        (lag == 0.0).then_some(())
    });
    d.wait_metric("recwatch_lines_read_total", "", lines);
    assert!(d.terminate().success());
}

#[test]
fn real_nginx_access_log_raises_the_alert_end_to_end() {
    let env = Env::new("\"10.0.0.0/8\"", "nginx/access.log", R1_R2);
    let www = env.path("www/recordings/2019/02");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("call-1-part1.wav"), vec![7u8; 5000]).unwrap();
    std::fs::write(env.path("www/index.html"), "hello").unwrap();
    std::fs::create_dir_all(env.path("nginx")).unwrap();
    // nginx needs its port up front: a reserved one (see common::ReservedPort).
    let reserved = reserve_port();
    let nginx_port = reserved.port;
    let conf = format!(
        "user root;\nmaster_process off;\ndaemon off;\npid {dir}/nginx/nginx.pid;\nerror_log {dir}/nginx/error.log;\nevents {{ worker_connections 64; }}\nhttp {{\n  access_log {dir}/nginx/access.log combined;\n  client_body_temp_path {dir}/nginx/tmp;\n  proxy_temp_path {dir}/nginx/tmp;\n  fastcgi_temp_path {dir}/nginx/tmp;\n  uwsgi_temp_path {dir}/nginx/tmp;\n  scgi_temp_path {dir}/nginx/tmp;\n  server {{ listen 127.0.0.1:{nginx_port}; root {dir}/www; }}\n}}\n",
        dir = env.dir.path().display()
    );
    std::fs::write(env.path("nginx/nginx.conf"), conf).unwrap();
    let nginx = Command::new("/usr/sbin/nginx")
        .arg("-c")
        .arg(env.path("nginx/nginx.conf"))
        .stdin(Stdio::null())
        .spawn()
        .expect("nginx is installed by scripts/test");
    struct Kill(Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _nginx = Kill(nginx);
    let d = env.start();
    let http = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let base = format!("http://127.0.0.1:{nginx_port}");
    wait_until("nginx to answer", Duration::from_secs(20), || http.get(format!("{base}/")).send().ok().map(|_| ()));
    assert_eq!(http.get(format!("{base}/index.html")).send().unwrap().status(), 200);
    let r = http.get(format!("{base}/recordings/2019/02/call-1-part1.wav?download=1")).send().unwrap();
    assert_eq!(r.status(), 200);
    d.wait_metric("recwatch_alerts_total", "rule=\"unknown-client-fetch\"", 1.0);
    let alerts = d.alerts();
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["client"], "127.0.0.1");
    assert_eq!(alerts[0]["bytes"], 5000);
    assert_eq!(alerts[0]["sample"][0], "/recordings/2019/02/call-1-part1.wav");
    assert!(d.metric("recwatch_lines_read_total", "").unwrap() >= 3.0);
    assert!(d.terminate().success());
}

#[test]
fn a_full_state_disk_stops_checkpoints_sigterm_still_exits_and_a_restart_recovers() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    let state = env.path("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"]).arg(&state).status().unwrap();
    assert!(mounted.success(), "this test needs root to mount a small tmpfs as the state directory");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(state.clone());
    env.append("access.log", "");
    let d = env.start();
    // fill the state disk, then make the daemon write alerts
    let filler = state.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 65536]).is_ok() {}
    drop(f);
    let padding = "x".repeat(400);
    let mut lines = String::new();
    for i in 0..300u32 {
        lines += &format!(
            "198.51.{}.{} - - [18/Feb/2019:10:00:01 +0100] \"GET /recordings/{i}.wav HTTP/1.1\" 200 4096 \"-\" \"{padding}\"\n",
            i / 250,
            i % 250
        );
    }
    env.append("access.log", &lines);
    d.wait_metric("recwatch_store_errors_total", "", 1.0);
    let pid = d.pid();
    let status = d.terminate();
    assert!(status.code().is_some(), "SIGTERM ends the daemon (pid {pid}) even while its store cannot write");
    // space comes back; a restart re-reads what was not durable
    std::fs::remove_file(&filler).unwrap();
    let d = env.start();
    wait_until("all 300 alerts after the restart", Duration::from_secs(30), || (d.alerts().len() == 300).then_some(()));
    assert!(d.terminate().success());
}

#[test]
fn a_line_dated_2100_inside_an_enumeration_still_fires_r2_without_splitting_r1_or_doubling_after_a_restart() {
    let env = Env::new("\"10.0.0.0/8\"", "access.log", R1_R2);
    let d = env.start();
    let mut text = String::new();
    for i in 0..40 {
        text += &fetch_line("203.0.113.77", i, &format!("/recordings/call-{i}.wav"), 200);
        if i == 20 {
            text += "203.0.113.77 - - [01/Jan/2100:00:00:00 +0000] \"GET /recordings/future.wav HTTP/1.1\" 200 4096 \"-\" \"curl/8\"\n";
        }
    }
    text += &fetch_line("203.0.113.78", 41, "/recordings/call-0.wav", 200);
    env.append("access.log", &text);
    d.wait_metric("recwatch_alerts_total", "rule=\"enumeration\"", 1.0);
    d.wait_metric("recwatch_events_future_total", "source=\"web\"", 1.0);
    let before = wait_until("every line counted", Duration::from_secs(60), || {
        let alerts = d.alerts();
        (alerts.len() == 3 && alerts.iter().any(|a| a["client"] == "203.0.113.78")).then_some(alerts)
    });
    let r1: Vec<&Value> =
        before.iter().filter(|a| a["rule"] == "unknown-client-fetch" && a["client"] == "203.0.113.77").collect();
    assert_eq!(r1.len(), 1, "R1 not split: {before:?}");
    assert_eq!((r1[0]["requests"].as_u64(), r1[0]["distinct_resources"].as_u64()), (Some(41), Some(41)));
    for a in &before {
        assert!(a["last_seen"].as_str().unwrap().starts_with("2019-"), "no alert time moved to 2100: {a}");
    }
    assert!(d.terminate().success());

    // After a restart (which re-reads part of the log) nothing is doubled, and the client's
    // next fetches continue its alerts.
    let d = env.start();
    env.append("access.log", &fetch_line("203.0.113.77", 42, "/recordings/call-42.wav", 200));
    let after = wait_until("the fetch after the restart counted", Duration::from_secs(60), || {
        let alerts = d.alerts();
        alerts
            .iter()
            .any(|a| a["rule"] == "unknown-client-fetch" && a["client"] == "203.0.113.77" && a["requests"] == 42)
            .then_some(alerts)
    });
    let ids = |alerts: &[Value]| alerts.iter().map(|a| a["id"].as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
    assert_eq!(ids(&after), ids(&before), "no duplicate after the restart: {after:?}");
    assert!(d.terminate().success());

    // A replay of the same log gives the same alerts and counts (distinct ones included: the
    // store keeps each alert's distinct set).
    let replayed = env.clean_replay("access.log");
    let counts = |alerts: &[Value]| {
        alerts
            .iter()
            .map(|a| {
                let field = |k: &str| a[k].to_string();
                (field("id"), field("rule"), field("client"), field("requests"), field("distinct_resources"))
            })
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(counts(replayed["alerts"].as_array().unwrap()), counts(&after));
}

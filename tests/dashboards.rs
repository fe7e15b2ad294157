//! The shipped Grafana dashboard and Prometheus rules (`dashboards/`) against the real things:
//! `promtool check rules` and `promtool test rules` (every self-alert fires on synthetic series
//! and stays quiet when healthy), then a real `recwatch run` following a log that is being
//! written and a real Prometheus (Debian's `prometheus`, on 127.0.0.1 with a temp store)
//! scraping it and evaluating the rules: every query of the dashboard, every recording rule and
//! every alert's expression without its final comparison must return data.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{reserve_port, wait_until, Daemon, Guard, ReservedPort};

const TOKEN: &str = "dashboards-test-token-0123456789";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn get(url: &str) -> Option<(u16, String)> {
    match ureq::get(url).timeout(Duration::from_secs(5)).call() {
        Ok(r) => Some((r.status(), r.into_string().ok()?)),
        Err(ureq::Error::Status(code, r)) => Some((code, r.into_string().unwrap_or_default())),
        Err(_) => None,
    }
}

fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("dashboards"))
        .output()
        .expect("promtool is installed (Debian package prometheus; scripts/test installs it)");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "recwatch.rules.yml"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
    assert!(!out.to_lowercase().contains("warning"), "{out}");
    let (ok, out) = promtool(&["test", "rules", "tests/recwatch.rules.test.yml"]);
    assert!(ok && out.contains("SUCCESS"), "{out}");
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("dashboards/recwatch.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().unwrap() {
        out.push(p);
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

/// (panel title, PromQL) of every target, with Grafana's variables replaced as Grafana would
/// for "all instances" and a short range.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_else(|| panic!("a target of {} has no expr", p["title"]));
            let q = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$__range", "5m")
                .replace("${job}", ".*")
                .replace("$job", ".*")
                .replace("${instance}", ".*")
                .replace("$instance", ".*");
            assert!(!q.contains('$'), "unsubstituted variable in {q}");
            out.push((p["title"].as_str().unwrap().to_string(), q));
        }
    }
    out
}

#[test]
fn dashboard_has_a_stable_uid_a_datasource_variable_and_a_query_per_panel() {
    let d = dashboard();
    assert_eq!(d["uid"], "recwatch-overview");
    assert_eq!(d["__inputs"][0]["name"], "DS_PROMETHEUS");
    let vars = d["templating"]["list"].as_array().unwrap();
    let ds = vars.iter().find(|v| v["type"] == "datasource").expect("a datasource variable");
    assert_eq!((ds["name"].as_str(), ds["query"].as_str()), (Some("datasource"), Some("prometheus")));
    let mut ids = std::collections::BTreeSet::new();
    for p in panels(&d) {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id {}", p["id"]);
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{}", p["title"]);
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{}", p["title"]);
        }
    }
    let titles: Vec<&str> = panels(&d).iter().filter_map(|p| p["title"].as_str()).collect();
    for wanted in [
        "Ingest rate",
        "Parse skips by reason",
        "Sensitive requests by outcome",
        "Alerts by rule",
        "Open alerts by rule",
        "Detection latency",
        "Source lag",
        "Notifier deliveries",
        "Notifier outbox",
        "Tracked clients",
    ] {
        assert!(titles.contains(&wanted), "no panel {wanted:?} in {titles:?}");
    }
}

/// The daemon's configuration for the live test: one webhook receiver, so the notifier
/// panels and rules have data too.
fn daemon_config(dir: &Path, log: &Path) -> String {
    std::fs::write(dir.join("token"), TOKEN).unwrap();
    std::fs::write(dir.join("webhook.key"), "a-webhook-hmac-key-for-tests").unwrap();
    let (sink, _) = common::webhook_sink();
    format!(
        r#"[store]
path = "state"
[networks]
internal = ["10.0.0.0/8"]
[http]
listen = "127.0.0.1:0"
token_file = "token"
[tail]
poll_interval_ms = 50
[[source]]
name = "web"
path = "{}"
[[receiver]]
name = "soc"
kind = "webhook"
url = "http://127.0.0.1:{sink}/hook"
secret_file = "webhook.key"
resend_secs = 1
"#,
        log.display()
    )
}

fn access_line(client: &str, second: u32, path: &str, status: u16) -> String {
    format!(
        "{client} - - [18/Feb/2019:10:{:02}:{:02} +0100] \"GET {path} HTTP/1.1\" {status} 4096 \"-\" \"curl/8\"\n",
        (second / 60) % 60,
        second % 60
    )
}

/// A few seconds of traffic: internal and unknown clients fetching recordings, refusals,
/// a listing, other files under the prefix, unrelated pages and unparsable junk.
fn write_workload(log: &Path, rounds: u32) {
    for round in 0..rounds {
        let mut text = String::new();
        for i in 0..20 {
            let s = round * 20 + i;
            text += &access_line("10.1.2.3", s, &format!("/recordings/2019/02/18/call-{s}.wav"), 200);
            text += &access_line("10.1.2.3", s, "/index.html", 200);
        }
        text += &access_line("203.0.113.7", round, &format!("/recordings/2019/02/18/call-{round}.wav"), 206);
        text += &access_line("198.51.100.9", round, "/recordings/secret.wav", 404);
        text += &access_line("198.51.100.9", round, "/recordings/", 200);
        text += &access_line("198.51.100.9", round, "/recordings/2019/index.txt", 403);
        text += "this is not an access log line\n";
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
        f.write_all(text.as_bytes()).unwrap();
        drop(f);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Removes an alert expression's final `<op> <number>`: what is left is the measured value.
fn strip_final_comparison(expr: &str) -> Option<String> {
    let expr = expr.trim();
    for op in [" == ", " != ", " >= ", " <= ", " > ", " < "] {
        if let Some((left, right)) = expr.rsplit_once(op) {
            if right.trim().parse::<f64>().is_ok() {
                return Some(left.trim().to_string());
            }
        }
    }
    None
}

struct Prometheus {
    _process: Guard,
    /// Prometheus needs its port up front: held for its life (see common::ReservedPort).
    _port: ReservedPort,
    base: String,
    log: PathBuf,
}

impl Prometheus {
    fn start(dir: &Path, target: std::net::SocketAddr) -> Prometheus {
        let reserved = reserve_port();
        let port = reserved.port;
        let rules = root().join("dashboards/recwatch.rules.yml");
        let config = format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nscrape_configs:\n  - job_name: recwatch\n    static_configs:\n      - targets: ['{target}']\n",
            rules.display()
        );
        std::fs::write(dir.join("prometheus.yml"), config).unwrap();
        let log = dir.join("prometheus.log");
        let out = std::fs::File::create(&log).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", dir.join("prometheus.yml").display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("prometheus is installed (Debian package prometheus; scripts/test installs it)");
        let mut p =
            Prometheus { _process: Guard(child), _port: reserved, base: format!("http://127.0.0.1:{port}"), log };
        wait_until("Prometheus to be ready", Duration::from_secs(60), || {
            if let Some(status) = p._process.0.try_wait().unwrap() {
                panic!("Prometheus exited: {status}\n{}", p.log_tail());
            }
            (get(&format!("{}/-/ready", p.base)).map(|(s, _)| s) == Some(200)).then_some(())
        });
        p
    }

    fn api(&self, path: &str, query: &[(&str, &str)]) -> Value {
        let mut request = ureq::get(&format!("{}{path}", self.base)).timeout(Duration::from_secs(10));
        for (k, v) in query {
            request = request.query(k, v);
        }
        let body = match request.call() {
            Ok(r) => r.into_string().unwrap(),
            Err(ureq::Error::Status(code, r)) => {
                panic!("{path} {query:?}: HTTP {code}: {}", r.into_string().unwrap_or_default())
            }
            Err(e) => panic!("{path}: {e}\n{}", self.log_tail()),
        };
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{path} {query:?}: {v}");
        v["data"].clone()
    }

    /// The instant-query result vector (or scalar as a one-element list).
    fn query(&self, promql: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", promql)]);
        match data["resultType"].as_str() {
            Some("vector") | Some("matrix") => data["result"].as_array().unwrap().clone(),
            _ => vec![data["result"].clone()],
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().rev().take(30).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n")
    }
}

#[test]
fn every_dashboard_and_rule_query_returns_data_from_real_prometheus_scraping_recwatch() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    std::fs::write(dir.path().join("recwatch.toml"), daemon_config(dir.path(), &log)).unwrap();
    let daemon = Daemon::spawn(&dir.path().join("recwatch.toml"), Some(TOKEN));
    daemon.wait_ready();
    let prometheus = Prometheus::start(dir.path(), daemon.addr);
    let writer = {
        let log = log.clone();
        std::thread::spawn(move || write_workload(&log, 24))
    };

    // Prometheus has scraped recwatch while lines were read and alerts raised, and has
    // evaluated the recording rules over them.
    wait_until("Prometheus to scrape lines and alerts", Duration::from_secs(60), || {
        let alerts = prometheus.query("sum(recwatch_alerts_total{job=\"recwatch\"})");
        let raised = alerts.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok()).unwrap_or(0.0);
        let samples = prometheus.query("count_over_time(recwatch_lines_read_total[1m])");
        let scraped = samples.first().and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok()).unwrap_or(0.0);
        (raised >= 1.0 && scraped >= 5.0).then_some(())
    });
    writer.join().unwrap();
    let rules_loaded = wait_until("every rule evaluated once", Duration::from_secs(60), || {
        let groups = prometheus.api("/api/v1/rules", &[]);
        let rules: Vec<Value> = groups["groups"]
            .as_array()?
            .iter()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        rules.iter().all(|r| r["health"] != "unknown" && r["lastEvaluation"] != "0001-01-01T00:00:00Z").then_some(rules)
    });

    // Every rule of the file is loaded by the real Prometheus and evaluates without error.
    let rules_text = std::fs::read_to_string(root().join("dashboards/recwatch.rules.yml")).unwrap();
    let in_file = rules_text
        .lines()
        .filter(|l| l.trim_start().starts_with("- record:") || l.trim_start().starts_with("- alert:"))
        .count();
    assert_eq!(rules_loaded.len(), in_file, "rules loaded by Prometheus vs. in the file");
    for r in &rules_loaded {
        assert_eq!(r["health"], "ok", "rule {} failed: {}", r["name"], r["lastError"]);
    }

    // The queries: dashboard targets, recording rules, alert expressions without the comparison.
    let mut queries: Vec<(String, String)> =
        dashboard_queries(&dashboard()).into_iter().map(|(title, q)| (format!("panel {title:?}"), q)).collect();
    for r in &rules_loaded {
        let name = r["name"].as_str().unwrap();
        let expr = r["query"].as_str().unwrap();
        match r["type"].as_str().unwrap() {
            "recording" => {
                queries.push((format!("recording rule {name}"), expr.to_string()));
                queries.push((format!("recorded series {name}"), name.to_string()));
            }
            _ => {
                let measured = strip_final_comparison(expr)
                    .unwrap_or_else(|| panic!("alert {name}: {expr:?} does not end in a comparison with a number"));
                queries.push((format!("alert {name}"), measured));
            }
        }
    }
    // The dashboard's variables read label values of recwatch_build_info.
    for label in ["job", "instance"] {
        let values = prometheus.api(&format!("/api/v1/label/{label}/values"), &[("match[]", "recwatch_build_info")]);
        assert!(!values.as_array().unwrap().is_empty(), "variable {label} would have no values");
    }

    let mut empty = Vec::new();
    for (what, q) in &queries {
        if prometheus.query(q).is_empty() {
            empty.push(format!("{what}: {q}"));
        }
    }
    eprintln!("{} queries checked", queries.len());
    assert!(empty.is_empty(), "queries without data:\n  {}\n{}", empty.join("\n  "), prometheus.log_tail());
    daemon.assert_alive();
}

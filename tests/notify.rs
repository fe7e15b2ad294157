//! The notifiers against real things: a real `recwatch run` daemon following a real log file,
//! delivering to a real Alertmanager (Debian's `prometheus-alertmanager`, started here on
//! 127.0.0.1 with a temp storage dir and gossip off) and to a webhook server written here that
//! fails in scripted ways. Observed only through the daemon's API and /metrics, Alertmanager's
//! API and what the webhook server received. Every wait is on an event with a deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde_json::Value;
use sha2::Sha256;

mod common;
use common::{promtool_check, reserve_port, wait_until, Daemon, ReservedPort};

const TOKEN: &str = "test-token-0123456789abcdef";
const HMAC_KEY: &str = "webhook-key-0123456789abcdef";
const WAIT: Duration = Duration::from_secs(60);

fn http() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

fn now_unix() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// A combined-format line for a fetch at Unix time `t` (UTC).
fn fetch_line(client: &str, t: i64, path: &str) -> String {
    let (y, m, d) = recwatch::parse::time::civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{client} - - [{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000] \"GET {path} HTTP/1.1\" 200 4096 \"-\" \"curl/8\"\n",
        MONTHS[m as usize - 1],
        s / 3600,
        s % 3600 / 60,
        s % 60
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap().trim().to_string()
}

// --- Alertmanager

/// A real Alertmanager on 127.0.0.1 at a reserved port (see common::ReservedPort: while it is
/// down, connections there are refused and nobody else can listen there); killed when dropped.
struct Alertmanager {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Alertmanager {
    fn start(port: &ReservedPort) -> Alertmanager {
        let port = port.port;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("alertmanager.yml");
        std::fs::write(&config, "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n").unwrap();
        let child = Command::new("prometheus-alertmanager")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=")
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager is installed (scripts/test installs it)");
        let mut am = Alertmanager { child, base: format!("http://127.0.0.1:{port}"), _dir: dir };
        wait_until("Alertmanager to be ready", WAIT, || {
            if let Some(status) = am.child.try_wait().unwrap() {
                panic!("Alertmanager exited: {status}");
            }
            let r = http().get(format!("{}/-/ready", am.base)).send().ok()?;
            r.status().is_success().then_some(())
        });
        am
    }

    /// Active alerts (`GET /api/v2/alerts`); resolved ones are not listed.
    fn alerts(&self) -> Vec<Value> {
        let r = http().get(format!("{}/api/v2/alerts", self.base)).send().unwrap();
        assert!(r.status().is_success());
        r.json().unwrap()
    }

    fn alert_with_id(&self, id: &str) -> Option<Value> {
        self.alerts().into_iter().find(|a| a["labels"]["alert_id"] == id)
    }
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// --- recwatch

/// Where the daemon's alert links point (`http.external_url`): a name, never contacted.
const EXTERNAL_URL: &str = "http://recwatch.test:9898";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// A daemon config following `access.log`, with R1 only and these `[[receiver]]` tables.
    fn new(receivers: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        std::fs::write(dir.path().join("hmac.key"), format!("{HMAC_KEY}\n")).unwrap();
        let config = format!(
            "[store]\npath = \"state\"\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\nexternal_url = \"{EXTERNAL_URL}/\"\n[tail]\npoll_interval_ms = 50\n[[source]]\nname = \"web\"\npath = \"{}\"\n[[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"critical\"\nstatus = [200, 206]\nclient_kind = [\"unknown\"]\n{receivers}",
            dir.path().join("access.log").display()
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

    fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path("access.log")).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

fn series(name: &str, receiver: &str) -> String {
    format!("recwatch_notify_{name}{{receiver=\"{receiver}\"}}")
}

// --- a scripted webhook server

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    Status500,
    /// Read the request, then say nothing for this long and close (past the client's timeout).
    Silence(Duration),
    Accept,
}

#[derive(Clone, Debug)]
struct Received {
    headers: BTreeMap<String, String>,
    body: Vec<u8>,
    answer: Answer,
}

/// A webhook receiver on 127.0.0.1: the n-th request gets `script[n]`, later ones
/// `after_script`; every request is recorded. One thread per connection, so a silent answer
/// never holds up the next request.
struct WebhookServer {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    after_script: Arc<Mutex<Answer>>,
    stop: Arc<AtomicBool>,
}

impl WebhookServer {
    fn start(script: Vec<Answer>, after_script: Answer) -> WebhookServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}/hooks/recwatch", listener.local_addr().unwrap());
        let received = Arc::new(Mutex::new(Vec::new()));
        let after = Arc::new(Mutex::new(after_script));
        let stop = Arc::new(AtomicBool::new(false));
        let next = Arc::new(AtomicUsize::new(0));
        let (received2, after2, stop2) = (received.clone(), after.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop2.load(SeqCst) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let (received, after, script, next) =
                            (received2.clone(), after2.clone(), script.clone(), next.clone());
                        std::thread::spawn(move || serve(stream, &script, &next, &after, &received));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        WebhookServer { url, received, after_script: after, stop }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn accepted(&self) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.answer == Answer::Accept).collect()
    }
}

impl Drop for WebhookServer {
    fn drop(&mut self) {
        self.stop.store(true, SeqCst);
    }
}

fn serve(
    stream: TcpStream,
    script: &[Answer],
    next: &AtomicUsize,
    after: &Mutex<Answer>,
    received: &Mutex<Vec<Received>>,
) {
    stream.set_nonblocking(false).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut headers = BTreeMap::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    assert!(request_line.starts_with("POST /hooks/recwatch "), "{request_line}");
    let len: usize = headers["content-length"].parse().unwrap();
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    let n = next.fetch_add(1, SeqCst);
    let answer = script.get(n).copied().unwrap_or_else(|| *after.lock().unwrap());
    received.lock().unwrap().push(Received { headers, body, answer });
    let mut stream = stream;
    match answer {
        Answer::Status500 => {
            let _ = stream
                .write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\noops");
        }
        Answer::Silence(d) => std::thread::sleep(d),
        Answer::Accept => {
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    }
}

/// Whether `r` carries `X-Recwatch-Signature: sha256=<HMAC-SHA256 of its exact body>`.
fn signature_valid(r: &Received) -> bool {
    let Some(hex) = r.headers.get("x-recwatch-signature").and_then(|h| h.strip_prefix("sha256=")) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(HMAC_KEY.as_bytes()).unwrap();
    mac.update(&r.body);
    let expected: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    hex == expected
}

// --- tests

fn alertmanager_receiver(port: &ReservedPort) -> String {
    let port = port.port;
    format!(
        "[[receiver]]\nname = \"oncall\"\nkind = \"alertmanager\"\nurl = \"http://127.0.0.1:{port}\"\nseverities = [\"critical\", \"warning\"]\ntimeout_ms = 2000\nresend_secs = 2\nretry_initial_ms = 100\nretry_max_ms = 500\n"
    )
}

#[test]
fn an_unknown_clients_fetch_reaches_alertmanager_is_re_sent_and_resolving_it_ends_it() {
    let am_port = reserve_port();
    let am = Alertmanager::start(&am_port);
    // a second receiver that takes warnings only: it must never hear of this critical alert
    // (its reserved port refuses every connection)
    let never = reserve_port();
    let quiet = format!(
        "[[receiver]]\nname = \"quiet\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{}/never\"\nseverities = [\"warning\"]\nsecret_file = \"hmac.key\"\n",
        never.port
    );
    let env = Env::new(&(alertmanager_receiver(&am_port) + &quiet));
    let d = env.start();
    // every receiver's series exist from the start
    for receiver in ["oncall", "quiet"] {
        for name in ["sent_total", "failed_total", "retries_total", "pending", "oldest_pending_age_seconds"] {
            assert_eq!(d.series(&series(name, receiver)), Some(0.0), "{name} {receiver}");
        }
    }

    let t = now_unix();
    env.append(&fetch_line("10.1.1.1", t, "/recordings/2024/internal.wav"));
    env.append(&fetch_line("203.0.113.9", t, "/Recordings/%2e/call-7-part1.WAV"));
    let alert = wait_until("the alert in recwatch", WAIT, || d.alerts().into_iter().next());
    let id = alert["id"].as_str().unwrap().to_string();
    let got = wait_until("the alert in Alertmanager", WAIT, || am.alert_with_id(&id));
    eprintln!("alert as received by Alertmanager:\n{}", serde_json::to_string_pretty(&got).unwrap());
    assert_eq!(am.alerts().len(), 1, "one alert: the internal client is not one");
    let labels = &got["labels"];
    assert_eq!(labels["alertname"], "unknown-client-fetch");
    assert_eq!(labels["rule"], "R1");
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["source"], "web");
    assert_eq!(labels["instance"], hostname());
    assert_eq!(labels.as_object().unwrap().len(), 6, "{labels}");
    assert_eq!(got["annotations"]["client"], "203.0.113.9");
    assert_eq!(got["annotations"]["files"], "/recordings/call-7-part1.wav");
    assert_eq!(got["annotations"]["requests"], "1");
    assert_eq!(got["status"]["state"], "active");
    assert_eq!(got["startsAt"], alert["first_seen"].as_str().unwrap().replace('Z', ".000Z"));
    assert_eq!(got["generatorURL"], format!("{EXTERNAL_URL}/api/v1/alerts/{id}"));
    // the link leads to the alert in recwatch's API
    let path = format!("/api/v1/alerts/{id}");
    let (status, body) = d.get(&path).unwrap();
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap()["id"], id.as_str());

    // re-sent while active: Alertmanager's endsAt moves forward, still one alert
    let first_ends = got["endsAt"].as_str().unwrap().to_string();
    d.wait_series(&series("sent_total", "oncall"), |v| v >= 2.0);
    let moved = wait_until("a re-send to move endsAt", WAIT, || {
        let a = am.alert_with_id(&id)?;
        (a["endsAt"].as_str()? > first_ends.as_str()).then_some(a)
    });
    assert_eq!(moved["labels"], got["labels"]);
    assert_eq!(am.alerts().len(), 1);

    // resolving it in recwatch ends it in Alertmanager
    let (status, body) = d.post(&format!("/api/v1/alerts/{id}/resolve"));
    assert_eq!(status, 200, "{body}");
    wait_until("Alertmanager to drop the resolved alert", WAIT, || am.alert_with_id(&id).is_none().then_some(()));
    d.wait_series(&series("pending", "oncall"), |v| v == 0.0);
    assert_eq!(d.series(&series("failed_total", "oncall")), Some(0.0));
    for name in ["sent_total", "failed_total", "pending"] {
        assert_eq!(d.series(&series(name, "quiet")), Some(0.0), "quiet {name}: not routed");
    }
    let sent = d.series(&series("sent_total", "oncall")).unwrap();
    assert!(sent >= 3.0, "first send, a re-send, the resolve: {sent}");

    // resolved means closed for good: a later request of the same client opens a new alert (a
    // new id, sent to Alertmanager); the resolved one stays resolved there and in recwatch.
    env.append(&fetch_line("203.0.113.9", t + 1, "/recordings/call-7-part2.wav"));
    let later = wait_until("the client's new alert in Alertmanager", WAIT, || {
        am.alerts().into_iter().find(|a| a["annotations"]["client"] == "203.0.113.9")
    });
    assert_ne!(later["labels"]["alert_id"], id.as_str());
    assert_eq!(later["annotations"]["requests"], "1");
    assert!(am.alert_with_id(&id).is_none(), "the resolved alert stays resolved");
    let old = d.alerts().into_iter().find(|a| a["id"] == id.as_str()).unwrap();
    assert_eq!((old["status"].as_str(), old["requests"].as_u64()), (Some("resolved"), Some(1)));
    assert_eq!(am.alerts().len(), 1);
    assert!(d.terminate().success());
}

#[test]
fn alerts_raised_while_alertmanager_is_down_arrive_once_after_a_recwatch_restart() {
    let am_port = reserve_port();
    let env = Env::new(&alertmanager_receiver(&am_port));
    let d = env.start();
    let t = now_unix();
    let clients = ["198.51.100.1", "198.51.100.2", "198.51.100.3"];
    for (i, c) in clients.iter().enumerate() {
        env.append(&fetch_line(c, t, &format!("/recordings/{i}.wav")));
    }
    d.wait_series(&series("pending", "oncall"), |v| v == 3.0);
    d.wait_series(&series("failed_total", "oncall"), |v| v >= 2.0);
    let ids: BTreeSet<String> = d.alerts().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect();
    assert_eq!(ids.len(), 3);
    assert!(d.terminate().success());

    // restarted with Alertmanager still down: the outbox survived
    let d = env.start();
    assert_eq!(d.series(&series("pending", "oncall")), Some(3.0));
    d.wait_series(&series("failed_total", "oncall"), |v| v >= 1.0);
    let am = Alertmanager::start(&am_port);
    d.wait_series(&series("pending", "oncall"), |v| v == 0.0);
    let got = wait_until("every alert in Alertmanager", WAIT, || {
        let alerts = am.alerts();
        (alerts.len() >= 3).then_some(alerts)
    });
    let am_ids: Vec<String> = got.iter().map(|a| a["labels"]["alert_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(am_ids.len(), 3, "{got:?}");
    assert_eq!(am_ids.iter().cloned().collect::<BTreeSet<_>>(), ids, "one Alertmanager alert per recwatch alert");
    let am_clients: BTreeSet<&str> = got.iter().map(|a| a["annotations"]["client"].as_str().unwrap()).collect();
    assert_eq!(am_clients, clients.into_iter().collect());
    assert!(d.series(&series("sent_total", "oncall")).unwrap() >= 3.0);
    assert!(d.series(&series("retries_total", "oncall")).unwrap() >= 1.0);
    // no more alerts appear while it keeps re-sending them
    d.wait_series(&series("sent_total", "oncall"), |v| v >= 6.0);
    assert_eq!(am.alerts().len(), 3);
    promtool_check(&d.get("/metrics").unwrap().1);
    assert!(d.terminate().success());
}

fn webhook_receiver(url: &str, timeout_ms: u64) -> String {
    format!(
        "[[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"{url}\"\ntimeout_ms = {timeout_ms}\nretry_initial_ms = 100\nretry_max_ms = 400\nsecret_file = \"hmac.key\"\ntoken_file = \"token\"\n"
    )
}

#[test]
fn a_webhook_that_fails_then_times_out_gets_one_signed_delivery_and_retries_are_counted() {
    let server =
        WebhookServer::start(vec![Answer::Status500, Answer::Silence(Duration::from_millis(1500))], Answer::Accept);
    let env = Env::new(&webhook_receiver(&server.url, 500));
    let d = env.start();
    env.append(&fetch_line("203.0.113.50", now_unix(), "/recordings/a.wav"));
    d.wait_series(&series("sent_total", "hook"), |v| v == 1.0);
    d.wait_series(&series("pending", "hook"), |v| v == 0.0);
    assert_eq!(d.series(&series("failed_total", "hook")), Some(2.0), "a 500 and a timeout");
    assert_eq!(d.series(&series("retries_total", "hook")), Some(2.0), "attempts 2 and 3");
    let alert = d.alerts().into_iter().next().unwrap();
    assert!(d.terminate().success());

    let received = server.received();
    let answers: Vec<Answer> = received.iter().map(|r| r.answer).collect();
    assert_eq!(answers, [Answer::Status500, Answer::Silence(Duration::from_millis(1500)), Answer::Accept]);
    for r in &received {
        assert!(signature_valid(r), "{:?}", r.headers);
        assert_eq!(r.headers["authorization"], format!("Bearer {TOKEN}"));
        assert_eq!(r.headers["content-type"], "application/json");
    }
    let body: Value = serde_json::from_slice(&server.accepted()[0].body).unwrap();
    assert_eq!(body["state"], "firing");
    assert_eq!(body["receiver"], "hook");
    assert_eq!(body["alert"], alert, "the alert as the API shows it");
    assert_eq!(body["url"], format!("{EXTERNAL_URL}/api/v1/alerts/{}", alert["id"].as_str().unwrap()));
    // a tampered body does not verify
    let mut forged = server.accepted()[0].clone();
    forged.body[10] ^= 1;
    assert!(!signature_valid(&forged));
}

#[test]
fn kill_9_while_retrying_and_the_pending_delivery_still_arrives_once() {
    let server = WebhookServer::start(Vec::new(), Answer::Status500);
    let env = Env::new(&webhook_receiver(&server.url, 2000));
    let d = env.start();
    env.append(&fetch_line("203.0.113.60", now_unix(), "/recordings/b.wav"));
    wait_until("two failed attempts", WAIT, || (server.received().len() >= 2).then_some(()));
    let id = d.alerts()[0]["id"].as_str().unwrap().to_string();
    d.kill9(); // mid-retry
    *server.after_script.lock().unwrap() = Answer::Accept;

    let d = env.start();
    d.wait_series(&series("sent_total", "hook"), |v| v == 1.0);
    d.wait_series(&series("pending", "hook"), |v| v == 0.0);
    assert!(d.terminate().success());
    let accepted = server.accepted();
    assert_eq!(accepted.len(), 1, "delivered once");
    let body: Value = serde_json::from_slice(&accepted[0].body).unwrap();
    assert_eq!(body["alert"]["id"], id.as_str());
    assert_eq!(body["state"], "firing");
    assert!(signature_valid(&accepted[0]));
}

#[test]
fn resolving_an_alert_then_fetching_again_opens_a_new_notified_alert_and_the_resolved_one_cannot_be_acked() {
    let server = WebhookServer::start(Vec::new(), Answer::Accept);
    let env = Env::new(&webhook_receiver(&server.url, 2000));
    let d = env.start();
    let t0 = now_unix();
    env.append(&fetch_line("203.0.113.70", t0, "/recordings/first.wav"));
    d.wait_series(&series("sent_total", "hook"), |v| v == 1.0);
    let first = d.alerts()[0]["id"].as_str().unwrap().to_string();
    let (status, body) = d.post(&format!("/api/v1/alerts/{first}/resolve"));
    assert_eq!(status, 200, "{body}");
    d.wait_series(&series("sent_total", "hook"), |v| v == 2.0);

    // Acking it now is refused, by the API and by the CLI (which asks the running daemon).
    let (status, body) = d.post(&format!("/api/v1/alerts/{first}/ack"));
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("closed for good"), "{body}");
    let cli = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["alerts", "ack", &first, "--config"])
        .arg(env.path("recwatch.toml"))
        .output()
        .unwrap();
    assert!(!cli.status.success());
    let stderr = String::from_utf8_lossy(&cli.stderr);
    assert!(stderr.contains("409") && stderr.contains("closed for good"), "{stderr}");

    // The same client fetches again (well inside suppress_secs): a new alert, told to the hook.
    env.append(&fetch_line("203.0.113.70", t0 + 1, "/recordings/second.wav"));
    env.append(&fetch_line("203.0.113.70", t0 + 2, "/recordings/third.wav"));
    d.wait_series(&series("sent_total", "hook"), |v| v >= 3.0);
    let alerts = wait_until("the second alert to count both fetches", WAIT, || {
        let alerts = d.alerts();
        (alerts.len() == 2 && alerts.iter().any(|a| a["requests"] == 2)).then_some(alerts)
    });
    let old = alerts.iter().find(|a| a["id"] == first.as_str()).unwrap();
    let new = alerts.iter().find(|a| a["id"] != first.as_str()).unwrap();
    assert_eq!((old["status"].as_str(), old["requests"].as_u64()), (Some("resolved"), Some(1)));
    assert_eq!((new["status"].as_str(), new["requests"].as_u64()), (Some("open"), Some(2)));
    let new_id = new["id"].as_str().unwrap().to_string();
    wait_until("the new alert's firing delivery", WAIT, || {
        server
            .accepted()
            .iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .any(|b| b["alert"]["id"] == new_id.as_str() && b["state"] == "firing")
            .then_some(())
    });
    assert!(d.terminate().success());

    // After a restart the resolved alert stays closed and nothing is counted twice.
    let d = env.start();
    env.append(&fetch_line("203.0.113.70", t0 + 3, "/recordings/fourth.wav"));
    let alerts = wait_until("the fourth fetch counted", WAIT, || {
        let alerts = d.alerts();
        alerts.iter().any(|a| a["requests"] == 3).then_some(alerts)
    });
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let old = alerts.iter().find(|a| a["id"] == first.as_str()).unwrap();
    assert_eq!((old["status"].as_str(), old["requests"].as_u64()), (Some("resolved"), Some(1)));
    assert!(d.terminate().success());
}

//! The HTTP server end to end: each test starts its own server on 127.0.0.1:0 over a temporary
//! sled store, talks to it with a blocking client (bounded timeouts), and shuts it down
//! gracefully. Covers the token check, the alerts API (filters, show, ack, resolve,
//! persistence), request limits, the probes, and /metrics (names, `promtool check metrics`,
//! series count independent of the number of clients).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use recwatch::detect::alert::{Alert, AlertStatus};
use recwatch::detect::rule::Severity;
use recwatch::http::{serve_with, HttpState, Limits, Readiness};
use recwatch::store::{Notify, Store};
use recwatch::telemetry::Telemetry;
use reqwest::blocking::{Client, RequestBuilder, Response};
use reqwest::StatusCode;

mod common;
use common::promtool_check;
use serde_json::Value;

const TOKEN: &str = "0123456789abcdef-token";
const T0: i64 = 1_550_480_401; // 2019-02-18T09:00:01Z

fn alert(rule_id: &str, rule: &str, severity: Severity, client: &str, first_seen: i64) -> Alert {
    Alert {
        id: Alert::make_id(rule_id, client, first_seen),
        rule_id: rule_id.into(),
        rule: rule.into(),
        severity,
        group_by: "client".into(),
        client: client.into(),
        client_kind: "unknown".into(),
        partner: None,
        source: "access.log".into(),
        first_seen,
        last_seen: first_seen + 5,
        requests: 3,
        distinct_resources: 2,
        bytes: 4711,
        sample: vec!["/recordings/2019/02/18/call-1-part1.wav".into()],
        user_agents: vec!["curl/7.64.0".into()],
        status: AlertStatus::Open,
    }
}

/// Four alerts: two for one client (R1, R2), one IPv6 client a day earlier (R5), one more R1.
fn fixture() -> Vec<Alert> {
    vec![
        alert("R1", "unknown-client-fetch", Severity::Critical, "203.0.113.7", T0),
        alert("R2", "enumeration", Severity::Critical, "203.0.113.7", T0 + 100),
        alert("R5", "probing", Severity::Warning, "2001:db8::1", T0 - 86_400),
        alert("R1", "unknown-client-fetch", Severity::Critical, "198.51.100.9", T0 + 9_000),
    ]
}

struct Server {
    addr: SocketAddr,
    base: String,
    store: Option<Store>,
    telemetry: Arc<Telemetry>,
    ready: Arc<Readiness>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
    dir: tempfile::TempDir,
}

impl Server {
    fn start(alerts: &[Alert]) -> Server {
        Server::start_with(alerts, Some(TOKEN), Limits::default())
    }

    fn start_with(alerts: &[Alert], token: Option<&str>, limits: Limits) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        store.upsert(alerts, Notify::Skip).unwrap();
        store.flush().unwrap();
        let telemetry = Arc::new(Telemetry::default());
        let ready = Arc::new(Readiness::default());
        let state = HttpState {
            store: store.clone(),
            telemetry: telemetry.clone(),
            api_token: token.map(Arc::from),
            ready: ready.clone(),
        };
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build()?;
            let result = runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                addr_tx.send(listener.local_addr()?).expect("test is waiting for the address");
                serve_with(listener, state, limits, async {
                    let _ = stopped.await;
                })
                .await
            });
            runtime.shutdown_timeout(Duration::from_secs(5));
            result
        });
        let addr = addr_rx.recv_timeout(Duration::from_secs(10)).expect("server did not start");
        Server {
            addr,
            base: format!("http://{addr}"),
            store: Some(store),
            telemetry,
            ready,
            stop: Some(stop),
            thread: Some(thread),
            dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    /// Asks for shutdown and waits for `serve` to return; panics if it fails or hangs.
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while !thread.is_finished() {
                assert!(Instant::now() < deadline, "server did not shut down");
                std::thread::sleep(Duration::from_millis(10));
            }
            thread.join().expect("server thread panicked").expect("serve failed");
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.stop.take().map(|s| s.send(()));
            return;
        }
        self.shut_down();
    }
}

fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(10)).build().unwrap()
}

fn authed(r: RequestBuilder) -> RequestBuilder {
    r.bearer_auth(TOKEN)
}

fn json(r: Response) -> Value {
    r.json().unwrap()
}

fn error_message(r: Response) -> String {
    let body = json(r);
    body["error"].as_str().unwrap_or_else(|| panic!("no error message in {body}")).to_string()
}

fn ids(list: &Value) -> Vec<String> {
    list.as_array().unwrap().iter().map(|a| a["id"].as_str().unwrap().to_string()).collect()
}

fn assert_unauthorized(r: Response) {
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    let challenge = r.headers().get("www-authenticate").expect("WWW-Authenticate").to_str().unwrap().to_string();
    assert!(challenge.starts_with("Bearer"), "{challenge}");
    assert!(!error_message(r).is_empty());
}

#[test]
fn api_without_a_token_is_401_with_a_bearer_challenge() {
    let server = Server::start(&fixture());
    let c = client();
    let id = &fixture()[0].id;
    assert_unauthorized(c.get(server.url("/api/v1/alerts")).send().unwrap());
    assert_unauthorized(c.get(server.url(&format!("/api/v1/alerts/{id}"))).send().unwrap());
    assert_unauthorized(c.post(server.url(&format!("/api/v1/alerts/{id}/ack"))).send().unwrap());
    assert_unauthorized(c.get(server.url("/api/v1/alerts")).basic_auth("admin", Some(TOKEN)).send().unwrap());
    assert_unauthorized(c.get(server.url("/api/v1/alerts")).header("authorization", "Bearer ").send().unwrap());
    assert_eq!(server.store().get(id).unwrap().unwrap().status, AlertStatus::Open);
}

#[test]
fn wrong_token_is_401_whatever_its_length() {
    let server = Server::start(&fixture());
    let c = client();
    let same_length: String = TOKEN.chars().rev().collect();
    assert_eq!(same_length.len(), TOKEN.len());
    let one_off = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    for wrong in [same_length.as_str(), one_off.as_str(), &TOKEN[..TOKEN.len() - 1], &format!("{TOKEN}x"), "x"] {
        assert_unauthorized(c.get(server.url("/api/v1/alerts")).bearer_auth(wrong).send().unwrap());
    }
    // The scheme is case-insensitive (RFC 7235).
    let r = c.get(server.url("/api/v1/alerts")).header("authorization", format!("bearer {TOKEN}")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[test]
fn without_a_configured_token_the_api_refuses_everyone() {
    for token in [None, Some("")] {
        let server = Server::start_with(&fixture(), token, Limits::default());
        let c = client();
        assert_unauthorized(c.get(server.url("/api/v1/alerts")).bearer_auth(TOKEN).send().unwrap());
        assert_unauthorized(c.get(server.url("/api/v1/alerts")).header("authorization", "Bearer").send().unwrap());
        assert_eq!(c.get(server.url("/healthz")).send().unwrap().status(), StatusCode::OK);
    }
}

#[test]
fn list_filters_show_ack_and_resolve_work_and_persist() {
    let mut server = Server::start(&fixture());
    let c = client();
    let all = fixture();
    let list = |query: &str| {
        let r = authed(c.get(server.url(&format!("/api/v1/alerts{query}")))).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{query}");
        assert!(r.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
        let total: usize = r.headers()["x-total-count"].to_str().unwrap().parse().unwrap();
        (json(r), total)
    };

    // Everything, in first-seen order, in the report's row shape.
    let (everything, total) = list("");
    assert_eq!(total, 4);
    assert_eq!(ids(&everything), [all[2].id.as_str(), all[0].id.as_str(), all[1].id.as_str(), all[3].id.as_str()]);
    let first = &everything[1];
    assert_eq!(first["rule"], "unknown-client-fetch");
    assert_eq!(first["rule_id"], "R1");
    assert_eq!(first["severity"], "critical");
    assert_eq!(first["client"], "203.0.113.7");
    assert_eq!(first["first_seen"], "2019-02-18T09:00:01Z");
    assert_eq!(first["status"], "open");
    assert_eq!(first["sample"][0], "/recordings/2019/02/18/call-1-part1.wav");

    // Filters: rule by name or id, client in any spelling, since as Unix seconds or RFC 3339, limit.
    assert_eq!(ids(&list("?rule=unknown-client-fetch").0), [all[0].id.as_str(), all[3].id.as_str()]);
    assert_eq!(ids(&list("?rule=R2").0), [all[1].id.as_str()]);
    assert_eq!(ids(&list("?client=203.0.113.7").0), [all[0].id.as_str(), all[1].id.as_str()]);
    assert_eq!(ids(&list("?client=%3A%3Affff%3A203.0.113.7&rule=R1").0), [all[0].id.as_str()]);
    assert_eq!(ids(&list("?client=2001:DB8:0::1").0), [all[2].id.as_str()]);
    assert_eq!(ids(&list(&format!("?since={}", T0 + 105)).0), [all[1].id.as_str(), all[3].id.as_str()]);
    assert_eq!(ids(&list("?since=2019-02-18T09:01:45Z").0), [all[1].id.as_str(), all[3].id.as_str()]);
    assert_eq!(ids(&list("?since=2019-02-18T10:01:45%2B01:00").0), [all[1].id.as_str(), all[3].id.as_str()]);
    assert_eq!(ids(&list("?since=2030-01-01T00:00:00Z").0), Vec::<String>::new());
    let (limited, total) = list("?limit=2");
    assert_eq!((ids(&limited), total), (vec![all[1].id.clone(), all[3].id.clone()], 4), "the most recent two");
    assert_eq!(ids(&list("?status=open&rule=&client=").0).len(), 4);
    // Host-name clients (Apache HostnameLookups On) are clients too: none here.
    assert!(ids(&list("?client=Host.Example").0).is_empty());

    // Paging: each page names the cursor of the page before it; the pages tile the list.
    let page = |query: &str| {
        let r = authed(c.get(server.url(&format!("/api/v1/alerts{query}")))).send().unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{query}");
        let next = r.headers().get("x-next-cursor").map(|v| v.to_str().unwrap().to_string());
        (ids(&json(r)), next)
    };
    let (newest, cursor) = page("?limit=3");
    assert_eq!(newest, [all[0].id.as_str(), all[1].id.as_str(), all[3].id.as_str()]);
    let (older, last) = page(&format!("?limit=3&cursor={}", cursor.unwrap()));
    assert_eq!((older, last), (vec![all[2].id.clone()], None));
    let (r1_newest, cursor) = page("?limit=1&rule=R1");
    assert_eq!(r1_newest, [all[3].id.as_str()]);
    assert_eq!(page(&format!("?limit=1&rule=R1&cursor={}", cursor.unwrap())), (vec![all[0].id.clone()], None));

    for bad in [
        "?status=closed",
        "?since=yesterday",
        "?since=2019-02-30T00:00:00Z",
        "?limit=0",
        "?limit=10001",
        "?limit=-1",
        "?client=host%20example",
        "?client=a/b",
        "?cursor=xyz",
        "?cursor=00",
        "?stauts=open",
        "?rule=a&rule=b",
    ] {
        let r = authed(c.get(server.url(&format!("/api/v1/alerts{bad}")))).send().unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(!error_message(r).is_empty(), "{bad}");
    }

    // Show.
    let shown = json(authed(c.get(server.url(&format!("/api/v1/alerts/{}", all[2].id)))).send().unwrap());
    assert_eq!((shown["id"].as_str(), shown["rule"].as_str()), (Some(all[2].id.as_str()), Some("probing")));
    assert_eq!(shown["severity"], "warning");

    // Ack, resolve: the answer is the updated row, and listing by status sees it.
    let r = authed(c.post(server.url(&format!("/api/v1/alerts/{}/ack", all[0].id)))).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let acked = json(r);
    assert_eq!((acked["id"].as_str(), acked["status"].as_str()), (Some(all[0].id.as_str()), Some("acked")));
    let r = authed(c.post(server.url(&format!("/api/v1/alerts/{}/resolve", all[3].id)))).send().unwrap();
    assert_eq!(json(r)["status"], "resolved");
    // A resolved alert is closed for good: acking it is a conflict, and changes nothing.
    let r = authed(c.post(server.url(&format!("/api/v1/alerts/{}/ack", all[3].id)))).send().unwrap();
    assert_eq!(r.status(), StatusCode::CONFLICT);
    assert!(error_message(r).contains("closed for good"));
    assert_eq!(ids(&list("?status=acked").0), [all[0].id.as_str()]);
    assert_eq!(ids(&list("?status=resolved").0), [all[3].id.as_str()]);
    assert_eq!(ids(&list("?status=open").0), [all[2].id.as_str(), all[1].id.as_str()]);

    // Durable: after the server is gone and the store reopened, the statuses are still there.
    server.shut_down();
    drop(server.store.take());
    let store = Store::open(&server.dir.path().join("db")).unwrap();
    assert_eq!(store.get(&all[0].id).unwrap().unwrap().status, AlertStatus::Acked);
    assert_eq!(store.get(&all[3].id).unwrap().unwrap().status, AlertStatus::Resolved);
    assert_eq!(store.get(&all[1].id).unwrap().unwrap().status, AlertStatus::Open);
}

#[test]
fn unknown_alerts_and_paths_are_404() {
    let server = Server::start(&fixture());
    let c = client();
    for path in ["/api/v1/alerts/0123456789abcdef", "/api/v1/alerts/..%2F..%2Fetc", "/api/v1/alerts/%00"] {
        let r = authed(c.get(server.url(path))).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert!(!error_message(r).is_empty());
    }
    for action in ["ack", "resolve"] {
        let r = authed(c.post(server.url(&format!("/api/v1/alerts/0123456789abcdef/{action}")))).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
    }
    assert_eq!(server.store().len(), 4, "a 404 ack created nothing");
    for path in ["/", "/api", "/api/v2/alerts", "/metrics/x", "/favicon.ico"] {
        let r = authed(c.get(server.url(path))).send().unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        assert_eq!(error_message(r), "not found");
    }
    let r = authed(c.get(server.url(&format!("/api/v1/alerts/{}/ack", fixture()[0].id)))).send().unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
}

#[test]
fn request_bodies_over_4_kib_are_413() {
    let server = Server::start(&fixture());
    let c = client();
    let ack = server.url(&format!("/api/v1/alerts/{}/ack", fixture()[0].id));
    let r = authed(c.post(&ack)).body(vec![b'x'; 4097]).send().unwrap();
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!error_message(r).is_empty());
    // Without a declared length (chunked) the limit holds too.
    let r = authed(c.post(&ack)).body(reqwest::blocking::Body::new(io::Cursor::new(vec![b'x'; 64 * 1024]))).send();
    match r {
        Ok(r) => assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE),
        // The server may close before the client has written everything.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    assert_eq!(server.store().get(&fixture()[0].id).unwrap().unwrap().status, AlertStatus::Open);
    let r = authed(c.post(&ack)).body(vec![b'x'; 4096]).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK, "4 KiB is allowed");
}

/// Writes raw bytes and reads the response head (or nothing, if the server closed).
fn raw_exchange(stream: &mut TcpStream) -> String {
    let mut buf = [0u8; 4096];
    let mut got = Vec::new();
    while let Ok(n) = stream.read(&mut buf) {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
        if got.windows(4).any(|w| w == b"\r\n\r\n") {
            break;
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn slow_bodies_get_408_and_silent_connections_are_closed() {
    let limits = Limits {
        request_timeout: Duration::from_millis(300),
        idle_timeout: Duration::from_millis(600),
        ..Limits::default()
    };
    let server = Server::start_with(&fixture(), Some(TOKEN), limits);
    let started = Instant::now();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let id = &fixture()[0].id;
    write!(
        stream,
        "POST /api/v1/alerts/{id}/ack HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 10\r\n\r\nab"
    )
    .unwrap();
    let head = raw_exchange(&mut stream);
    assert!(head.starts_with("HTTP/1.1 408"), "{head:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.store().get(id).unwrap().unwrap().status, AlertStatus::Open);

    // A connection that never sends a request is closed once idle.
    let started = Instant::now();
    let mut silent = TcpStream::connect(server.addr).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    let closed = matches!(silent.read(&mut buf), Ok(0) | Err(_));
    assert!(closed && started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
}

#[test]
fn shutdown_lets_an_in_flight_request_finish_and_refuses_new_ones() {
    let mut server = Server::start(&fixture());
    let id = fixture()[0].id.clone();
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        stream,
        "POST /api/v1/alerts/{id}/resolve HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\
         Expect: 100-continue\r\nContent-Length: 2\r\n\r\n"
    )
    .unwrap();
    // The server says "100 Continue" once a handler has started reading the body: from then
    // on the request is in flight.
    let interim = raw_exchange(&mut stream);
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim:?}");
    let _ = server.stop.take().unwrap().send(());
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.addr).is_ok() {
        assert!(Instant::now() < deadline, "still accepting after shutdown");
        std::thread::sleep(Duration::from_millis(10));
    }
    stream.write_all(b"{}").unwrap();
    let head = raw_exchange(&mut stream);
    assert!(head.starts_with("HTTP/1.1 200"), "{head:?}");
    server.shut_down();
    assert_eq!(server.store().get(&id).unwrap().unwrap().status, AlertStatus::Resolved);
}

#[test]
fn healthz_is_ok_and_readyz_follows_the_ready_flag() {
    let server = Server::start(&[]);
    let c = client();
    let r = c.get(server.url("/healthz")).send().unwrap();
    assert_eq!((r.status(), r.text().unwrap().trim().to_string()), (StatusCode::OK, "ok".to_string()));
    assert_eq!(c.get(server.url("/readyz")).send().unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
    server.ready.set_started(true);
    assert_eq!(c.get(server.url("/readyz")).send().unwrap().status(), StatusCode::OK);
    server.ready.set_started(false);
    assert_eq!(c.get(server.url("/readyz")).send().unwrap().status(), StatusCode::SERVICE_UNAVAILABLE);
}

fn scrape(server: &Server) -> String {
    let r = client().get(server.url("/metrics")).send().unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "text/plain; version=0.0.4");
    r.text().unwrap()
}

/// Series lines (not comments) of an exposition.
fn series(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).collect()
}

const EXPECTED_NAMES: &[&str] = &[
    "recwatch_build_info",
    "recwatch_lines_read_total",
    "recwatch_bytes_read_total",
    "recwatch_lines_parsed_total",
    "recwatch_lines_skipped_total",
    "recwatch_lines_truncated_total",
    "recwatch_sensitive_requests_total",
    "recwatch_recording_requests_total",
    "recwatch_alerts_fired_total",
    "recwatch_alerts_total",
    "recwatch_alerts_open",
    "recwatch_files_open",
    "recwatch_sources_waiting",
    "recwatch_file_rotations_total",
    "recwatch_file_truncations_total",
    "recwatch_partial_lines_total",
    "recwatch_source_lag_bytes",
    "recwatch_tail_rescans_total",
    "recwatch_read_errors_total",
    "recwatch_clients_tracked",
    "recwatch_clients_evicted_total",
    "recwatch_events_future_total",
    "recwatch_alert_writes_total",
    "recwatch_store_errors_total",
    "recwatch_store_write_duration_seconds",
    "recwatch_detection_latency_seconds",
    "recwatch_last_checkpoint_timestamp_seconds",
    "recwatch_store_quarantines_total",
    "recwatch_config_reloads_total",
];

#[test]
fn metrics_expose_every_family_and_pass_promtool() {
    let server = Server::start(&fixture());
    let t = &server.telemetry;
    t.lines_read.store(1000, Ordering::Relaxed);
    t.bytes_read.store(223_648, Ordering::Relaxed);
    t.files_open.store(2, Ordering::Relaxed);
    t.source_lag_bytes.store(-3, Ordering::Relaxed);
    t.lines_skipped[1].store(7, Ordering::Relaxed);
    t.lines_truncated("access").store(2, Ordering::Relaxed);
    t.last_checkpoint_unix.store(T0, Ordering::Relaxed);
    t.config_reload_failures.store(1, Ordering::Relaxed);
    t.alert_opened("unknown-client-fetch", "critical");
    t.alert_opened("probing", "warning");
    t.store_write_seconds.observe(0.004);
    t.detection_latency_seconds.observe(0.2);
    t.detection_latency_seconds.observe(30.0);
    t.register_sources(["web"]);
    t.events_future("web", 2);
    server.store().set_status(&fixture()[3].id, AlertStatus::Resolved).unwrap();

    let text = scrape(&server);
    for name in EXPECTED_NAMES {
        assert!(text.contains(&format!("# HELP {name} ")), "no HELP for {name}:\n{text}");
        assert!(text.lines().any(|l| l.starts_with(name)), "no series for {name}:\n{text}");
    }
    for expected in [
        "recwatch_lines_read_total 1000\n",
        "recwatch_events_future_total{source=\"web\"} 2\n",
        "recwatch_source_lag_bytes -3\n",
        "recwatch_lines_skipped_total{reason=\"too_long\"} 7\n",
        "recwatch_lines_skipped_total{reason=\"binary\"} 0\n",
        "recwatch_lines_truncated_total{source=\"access\"} 2\n",
        "recwatch_last_checkpoint_timestamp_seconds 1550480401\n",
        "recwatch_config_reloads_total{result=\"success\"} 0\n",
        "recwatch_config_reloads_total{result=\"failure\"} 1\n",
        "recwatch_alerts_total{rule=\"probing\",severity=\"warning\"} 1\n",
        "recwatch_alerts_open{rule=\"unknown-client-fetch\",severity=\"critical\"} 1\n",
        "recwatch_alerts_open{rule=\"enumeration\",severity=\"critical\"} 1\n",
        "recwatch_alerts_open{rule=\"probing\",severity=\"warning\"} 1\n",
        "recwatch_detection_latency_seconds_bucket{le=\"0.25\"} 1\n",
        "recwatch_detection_latency_seconds_bucket{le=\"+Inf\"} 2\n",
        "recwatch_detection_latency_seconds_count 2\n",
        "# TYPE recwatch_store_write_duration_seconds histogram\n",
        "# TYPE recwatch_files_open gauge\n",
        "# TYPE recwatch_lines_read_total counter\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(text.contains(&format!("recwatch_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))));
    for client in ["203.0.113.7", "2001:db8::1", "198.51.100.9", "/recordings"] {
        assert!(!text.contains(client), "{client} leaked into /metrics");
    }
    promtool_check(&text);
}

#[test]
fn metric_series_do_not_grow_with_the_number_of_clients() {
    let server = Server::start(&fixture());
    // One alert of the rule already counted, so the labelled families exist before and after.
    server.telemetry.alert_opened("unknown-client-fetch", "critical");
    let before = scrape(&server);
    let many: Vec<Alert> = (0..1000u32)
        .map(|i| {
            let client = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            alert("R1", "unknown-client-fetch", Severity::Critical, &client, T0 + i64::from(i))
        })
        .collect();
    assert_eq!(server.store().upsert(&many, Notify::Skip).unwrap().len(), 1000);
    for _ in &many {
        server.telemetry.alert_opened("unknown-client-fetch", "critical");
    }
    let after = scrape(&server);
    assert_eq!(series(&before).len(), series(&after).len(), "before:\n{before}\nafter:\n{after}");
    assert!(after.contains("recwatch_alerts_open{rule=\"unknown-client-fetch\",severity=\"critical\"} 1002\n"));
    assert!(!after.contains("10.0.3.231"));
    promtool_check(&after);
}

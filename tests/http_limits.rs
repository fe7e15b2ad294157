//! HTTP limits against a real `recwatch run` with the open-file limit of the issue (512): a
//! flood of clients trickling header bytes neither keeps `/metrics` out nor takes the file
//! descriptors the tailer needs.

use std::io::Write;
use std::net::TcpStream;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
use common::{wait_until, Daemon};

const TOKEN: &str = "http-limits-token-0123456789";
/// The bound for /metrics under the flood is 1 s; a scrape gets this deadline, which
/// leaves room for a loaded 2-core machine (the slowest scrape is printed).
const SCRAPE_DEADLINE: Duration = Duration::from_secs(3);

fn fetch_line(client: &str, path: &str) -> String {
    format!("{client} - - [18/Feb/2019:10:00:01 +0100] \"GET {path} HTTP/1.1\" 200 4096 \"-\" \"curl/8\"\n")
}

/// The soft open-file limit of this process raised to `n` (the test holds thousands of sockets).
fn raise_own_nofile(n: u64) {
    let pid = std::process::id().to_string();
    let _ = Command::new("prlimit").args(["--pid", &pid, &format!("--nofile={n}:{n}")]).status();
}

#[test]
fn three_thousand_slow_connections_neither_keep_metrics_out_nor_starve_the_tailer() {
    const SLOW: usize = 3000;
    raise_own_nofile(8192);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, "").unwrap();
    let config = format!(
        "[store]\npath = \"state\"\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\nrotated_drain_secs = 1\n[[source]]\nname = \"web\"\npath = \"{}\"\n[[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"critical\"\nstatus = [200, 206]\nclient_kind = [\"unknown\"]\n",
        log.display()
    );
    std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
    // the open-file limit of the host
    let mut command = Command::new("prlimit");
    command
        .args(["--nofile=512:512", env!("CARGO_BIN_EXE_recwatch"), "run", "--config"])
        .arg(dir.path().join("recwatch.toml"))
        .env("RECWATCH_LOG", "warn");
    let d = Daemon::start(command, Some(TOKEN));
    d.wait_ready();
    let port = d.addr.port();

    // the flood: SLOW connections, each sending one header byte at a time, reconnecting when
    // closed (so the pressure never lets up)
    let stop = Arc::new(AtomicBool::new(false));
    let connects = Arc::new(AtomicUsize::new(0));
    let flood = {
        let (stop, connects) = (stop.clone(), connects.clone());
        std::thread::spawn(move || {
            let head = b"GET /api/v1/alerts HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
            let open = |connects: &AtomicUsize| {
                let s = TcpStream::connect(("127.0.0.1", port)).ok()?;
                s.set_nonblocking(true).ok()?;
                connects.fetch_add(1, Relaxed);
                Some((s, 0usize))
            };
            let mut conns: Vec<Option<(TcpStream, usize)>> = (0..SLOW).map(|_| open(&connects)).collect();
            while !stop.load(Relaxed) {
                for c in conns.iter_mut() {
                    let alive = match c {
                        Some((s, sent)) => {
                            let byte = head[*sent % head.len()];
                            match s.write(&[byte]) {
                                Ok(n) => {
                                    *sent += n;
                                    n == 1
                                }
                                Err(e) => e.kind() == std::io::ErrorKind::WouldBlock,
                            }
                        }
                        None => false,
                    };
                    if !alive {
                        *c = open(&connects);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    wait_until("the flood to be connected", Duration::from_secs(120), || {
        (connects.load(Relaxed) >= SLOW).then_some(())
    });

    // /metrics answers, scrape after scrape, while the flood goes on
    let client = reqwest::blocking::Client::builder().timeout(SCRAPE_DEADLINE).build().unwrap();
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let started = Instant::now();
        let response = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .unwrap_or_else(|e| panic!("scrape {i} under the flood failed within {SCRAPE_DEADLINE:?}: {e}"));
        assert_eq!(response.status(), 200);
        assert!(response.text().unwrap().contains("recwatch_lines_read_total"));
        slowest = slowest.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(300));
    }
    eprintln!("slowest /metrics scrape under {SLOW} slow connections: {slowest:?}");

    // the tailer still opens files: rotate the log and alert on a line in the new one
    std::fs::rename(&log, dir.path().join("access.log.1")).unwrap();
    std::fs::write(&log, fetch_line("203.0.113.77", "/recordings/x.wav")).unwrap();
    wait_until("the alert from the rotated-in log", Duration::from_secs(60), || {
        d.get("/api/v1/alerts").filter(|(s, body)| *s == 200 && body.contains("203.0.113.77")).map(|_| ())
    });
    assert!(connects.load(Relaxed) > SLOW, "slow connections were closed to make room");
    stop.store(true, Relaxed);
    flood.join().unwrap();
    assert!(d.terminate().success());
}

#[test]
fn a_request_head_trickled_past_its_deadline_is_cut_off_though_bytes_keep_coming() {
    use recwatch::http::{serve_with, HttpState, Limits, Readiness};
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let store = recwatch::store::Store::open(&dir.path().join("db")).unwrap();
    let state = HttpState {
        store,
        telemetry: Arc::new(recwatch::telemetry::Telemetry::default()),
        api_token: None,
        ready: Arc::new(Readiness::default()),
    };
    let limits = Limits { head_timeout: Duration::from_millis(500), ..Limits::default() };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    runtime.spawn(serve_with(listener, state, limits, std::future::pending()));

    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    // one byte every 100 ms: never idle, never a complete head
    let started = Instant::now();
    let closed = loop {
        if s.write_all(b"G").is_err() {
            break true;
        }
        let mut buf = [0u8; 512];
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => break true,
        }
        if started.elapsed() > Duration::from_secs(20) {
            break false;
        }
    };
    assert!(closed, "a head trickled for 20 s (deadline 500 ms) was still open");

    // a complete request within the deadline is served, and the kept-alive connection gets a
    // fresh head deadline for its next request
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    for _ in 0..2 {
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&buf[..n]));
        std::thread::sleep(Duration::from_millis(700));
    }
}

#[test]
fn max_connections_zero_is_refused_with_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("recwatch.toml");
    std::fs::write(&config, "[http]\nlisten = \"127.0.0.1:9898\"\nmax_connections = 0\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch")).args(["check", "--config"]).arg(&config).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&format!("{}:3: http.max_connections: must be at least 1", config.display())), "{stderr}");
}

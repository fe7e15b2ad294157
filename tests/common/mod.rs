//! Pieces shared by integration tests (each test binary includes this module and uses only
//! some of it).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A webhook receiver on 127.0.0.1 that answers 200 to every request and keeps each body.
/// Serves until the test process ends. Returns its port and the bodies received so far.
pub fn webhook_sink() -> (u16, Arc<Mutex<Vec<String>>>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let received = bodies.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = v.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok() {
                received.lock().unwrap().push(String::from_utf8_lossy(&body).into_owned());
            }
            let _ = reader.get_mut().write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, bodies)
}

/// A free TCP port on 127.0.0.1 (bound and released: a server started next can take it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `f` every 50 ms until it gives a value; fails the test after `deadline`.
pub fn wait_until<T>(what: &str, deadline: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < deadline, "timed out after {deadline:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A child process killed when the test ends, also on panic.
pub struct Guard(pub std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pipes an exposition into `promtool check metrics`: it must print nothing and exit 0.
/// promtool is a hard requirement of the suite (scripts/test installs Debian's `prometheus`).
pub fn promtool_check(text: &str) {
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run promtool ({e}); install it: apt-get install prometheus"));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let mut child = Guard(child);
    wait_until("promtool check metrics", Duration::from_secs(30), || child.0.try_wait().unwrap());
    let mut out = (String::new(), String::new());
    child.0.stdout.take().unwrap().read_to_string(&mut out.0).unwrap();
    child.0.stderr.take().unwrap().read_to_string(&mut out.1).unwrap();
    let status = child.0.wait().unwrap();
    let (stdout, stderr) = out;
    assert!(
        status.success() && stdout.is_empty() && stderr.is_empty(),
        "promtool check metrics: {status}\nstdout: {stdout}\nstderr: {stderr}\ninput:\n{text}"
    );
}

/// A `recwatch run` child serving HTTP on 127.0.0.1:`port`; SIGKILLed when dropped.
pub struct Daemon {
    pub child: std::process::Child,
    pub port: u16,
    /// Bearer token for the alert API, when the config sets one.
    pub token: Option<&'static str>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Daemon {
    /// Starts `recwatch run --config config` (log level warn) and waits for its HTTP server
    /// (`/healthz`), not for readiness.
    pub fn spawn(config: &std::path::Path, port: u16, token: Option<&'static str>) -> Daemon {
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_recwatch"))
            .args(["run", "--config"])
            .arg(config)
            .env("RECWATCH_LOG", "warn")
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let d = Daemon { child, port, token };
        wait_until("/healthz", Duration::from_secs(30), || {
            (d.get("/healthz").map(|(s, _)| s) == Some(200)).then_some(())
        });
        d
    }

    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        let mut request = reqwest::blocking::Client::new()
            .get(format!("http://127.0.0.1:{}{path}", self.port))
            .timeout(Duration::from_secs(5));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        let r = request.send().ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    }

    /// Sum of every series of a metric whose labels contain `label` (e.g. `rule="enumeration"`).
    pub fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let (_, body) = self.get("/metrics")?;
        let mut sum = None;
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ')?;
            if series.split('{').next()? == name && series.contains(label) {
                *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
            }
        }
        sum
    }

    pub fn wait_metric(&self, name: &str, label: &str, at_least: f64) {
        wait_until(&format!("{name}{{{label}}} >= {at_least}"), Duration::from_secs(60), || {
            (self.metric(name, label).unwrap_or(0.0) >= at_least).then_some(())
        });
    }

    pub fn wait_ready(&self) {
        wait_until("/readyz", Duration::from_secs(60), || {
            (self.get("/readyz").map(|(s, _)| s) == Some(200)).then_some(())
        });
    }

    /// The alerts the API lists.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.get("/api/v1/alerts").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM, and the exit status (within 30 s).
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
        wait_until("the daemon to exit after SIGTERM", Duration::from_secs(30), || self.child.try_wait().unwrap())
    }

    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

//! Pieces shared by integration tests (each test binary includes this module and uses only
//! some of it): the `recwatch run` child fixture, port reservations for third-party servers,
//! a webhook sink, `wait_until`, a kill-on-drop guard and the promtool check.
//!
//! Ports: a test never picks a port by binding and releasing one (another process can take it
//! in between, and the test then talks to a stranger). recwatch itself binds port 0 and reports
//! the address it got ([`Daemon`]); servers written here bind port 0 and tell their port; a
//! third-party server that must be told its port up front (Alertmanager, Prometheus, nginx,
//! tansu) gets a [`ReservedPort`].
#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
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

/// A TCP port on 127.0.0.1 held for as long as this value lives, for a third-party server
/// that needs its port on the command line.
///
/// How it holds the port: a socket bound with `SO_REUSEADDR` to port 0 and never listening.
/// Linux then never hands that port to anyone else's bind-to-port-0 (nor to an outgoing
/// connection), a connection to it is refused (a server that is down), and a server that sets
/// `SO_REUSEADDR` itself — Go's net.Listen (Alertmanager, Prometheus), nginx, Apache, tokio
/// (tansu) all do — can still bind and listen on it, stop, and start on it again. So a test
/// can configure recwatch with the address of a receiver that is not started yet, or is
/// restarted, without anyone else ever answering there.
pub struct ReservedPort {
    _socket: socket2::Socket,
    pub port: u16,
}

pub fn reserve_port() -> ReservedPort {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.set_reuse_address(true).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    let port = socket.local_addr().unwrap().as_socket().unwrap().port();
    ReservedPort { _socket: socket, port }
}

/// Starts a third-party server that must be told its port up front (nginx, Apache, vsftpd) on a
/// [`reserve_port`] port: `spawn(port)` starts it (the server sets `SO_REUSEADDR`, so it can
/// listen there while the reservation keeps everyone else's port 0 away). Returns once it
/// accepts connections; fails the test with the server's error log if it exits or never does.
pub fn start_server(name: &str, error_log: &std::path::Path, spawn: impl FnOnce(u16) -> Child) -> (Guard, SocketAddr) {
    let reserved = reserve_port();
    let addr = SocketAddr::from(([127, 0, 0, 1], reserved.port));
    let mut server = Guard(spawn(reserved.port));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = server.0.try_wait() {
            panic!(
                "{name} exited ({status}); its error log:\n{}",
                std::fs::read_to_string(error_log).unwrap_or_default()
            );
        }
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
            return (server, addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{name} did not start; its error log:\n{}", std::fs::read_to_string(error_log).unwrap_or_default());
}

/// Starts real Apache 2.4 (`apache2 -X`, one process) on a reserved loopback port with its
/// config, pid, lock and error files in `state`, serving `www`; `directives` adds the test's
/// own lines (log format, modules). Its access log is whatever `directives` says.
pub fn start_apache(state: &std::path::Path, www: &std::path::Path, directives: &str) -> (Guard, SocketAddr) {
    let modules = "/usr/lib/apache2/modules";
    start_server("apache2", &state.join("error.log"), |port| {
        let conf = format!(
            r#"ServerRoot "{s}"
DefaultRuntimeDir "{s}"
PidFile "{s}/httpd.pid"
Mutex file:{s} default
Listen 127.0.0.1:{port}
ServerName localhost
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
User www-data
Group www-data
ErrorLog "{s}/error.log"
{directives}
DocumentRoot "{www}"
<Directory />
  Require all denied
</Directory>
<Directory "{www}">
  Require all granted
</Directory>
"#,
            s = state.display(),
            www = www.display(),
        );
        std::fs::write(state.join("httpd.conf"), conf).unwrap();
        Command::new("/usr/sbin/apache2")
            .arg("-X")
            .arg("-d")
            .arg(state)
            .arg("-f")
            .arg(state.join("httpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("apache2 is installed by scripts/test")
    })
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
pub struct Guard(pub Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pipes an exposition into `promtool check metrics`: it must print nothing and exit 0.
/// promtool is a hard requirement of the suite (scripts/test installs Debian's `prometheus`).
pub fn promtool_check(text: &str) {
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

/// How long a daemon wait (a metric, readiness) may take: generous, because the suite shares a
/// small machine with other test processes (a deadline only bounds a failing test).
pub const DAEMON_WAIT: Duration = Duration::from_secs(120);

/// The line `recwatch run` writes to stderr once its HTTP listener is bound (README, "HTTP").
const LISTENING: &str = "recwatch: listening on http://";

/// A `recwatch run` child (its config sets `listen = "127.0.0.1:0"`), talked to at the address
/// it reported on its own stderr; SIGKILLed when dropped.
///
/// Every request first checks that this child is still running: a daemon that died fails the
/// test with its exit status and the end of its stderr, instead of the test talking to
/// whatever else might answer.
pub struct Daemon {
    child: Mutex<Child>,
    pid: u32,
    /// Where the child's HTTP server listens, as it reported.
    pub addr: SocketAddr,
    /// Bearer token for the alert API, when the config sets one.
    pub token: Option<&'static str>,
    /// Everything the child wrote to stderr so far (read by a thread, so it never blocks).
    stderr: Arc<Mutex<Vec<u8>>>,
    /// That thread; joined once the child has exited, so `stderr` is then complete.
    reader: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let child = self.child.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// `recwatch run --config config`, logging at warn.
pub fn run_command(config: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_recwatch"));
    command.args(["run", "--config"]).arg(config).env("RECWATCH_LOG", "warn");
    command
}

impl Daemon {
    /// Starts `recwatch run --config config` (log level warn) and waits for its HTTP server
    /// (`/healthz`), not for readiness.
    pub fn spawn(config: &Path, token: Option<&'static str>) -> Daemon {
        Daemon::start(run_command(config), token)
    }

    /// Starts `command` (a `recwatch run`, possibly wrapped in `sh -c 'exec …'`) with its stdin
    /// closed and its stderr captured, reads the address it reports, and waits for `/healthz`.
    pub fn start(mut command: Command, token: Option<&'static str>) -> Daemon {
        let mut child = command.stdin(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap();
        let pid = child.id();
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let mut pipe = BufReader::new(child.stderr.take().unwrap());
        let captured = stderr.clone();
        let reader = std::thread::spawn(move || {
            let mut line = Vec::new();
            while pipe.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
                if let Some(addr) = String::from_utf8_lossy(&line).trim_end().strip_prefix(LISTENING) {
                    let _ = addr_tx.send(addr.parse::<SocketAddr>());
                }
                captured.lock().unwrap().extend_from_slice(&line);
                line.clear();
            }
        });
        let mut d = Daemon {
            child: Mutex::new(child),
            pid,
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            token,
            stderr,
            reader: Mutex::new(Some(reader)),
        };
        d.addr = wait_until("the daemon to report its address", DAEMON_WAIT, || {
            d.assert_alive();
            addr_rx.try_recv().ok()
        })
        .unwrap_or_else(|e| panic!("the daemon reported an address that does not parse: {e}"));
        wait_until("/healthz", DAEMON_WAIT, || (d.get("/healthz").map(|(s, _)| s) == Some(200)).then_some(()));
        d
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// `http://ADDR` of this daemon.
    pub fn base(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Fails the test if this daemon has exited, with its status and the end of its stderr.
    pub fn assert_alive(&self) {
        let status = self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait().unwrap();
        if let Some(status) = status {
            panic!(
                "the daemon (pid {}) has exited: {status}\n--- end of its stderr:\n{}",
                self.pid,
                self.stderr_tail(40)
            );
        }
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// The last `n` lines of the daemon's stderr.
    pub fn stderr_tail(&self, n: usize) -> String {
        let text = self.stderr();
        let mut tail: VecDeque<&str> = VecDeque::new();
        for line in text.lines() {
            if tail.len() == n {
                tail.pop_front();
            }
            tail.push_back(line);
        }
        tail.into_iter().collect::<Vec<_>>().join("\n")
    }

    fn request(&self, method: reqwest::Method, path: &str) -> Option<(u16, String)> {
        self.assert_alive();
        let mut request = reqwest::blocking::Client::new()
            .request(method, format!("{}{path}", self.base()))
            .timeout(Duration::from_secs(5));
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        let r = request.send().ok()?;
        Some((r.status().as_u16(), r.text().ok()?))
    }

    /// GET `path` (with the token, if any); None when the request fails.
    pub fn get(&self, path: &str) -> Option<(u16, String)> {
        self.request(reqwest::Method::GET, path)
    }

    /// POST `path` without a body (with the token, if any); the request must get an answer.
    pub fn post(&self, path: &str) -> (u16, String) {
        self.request(reqwest::Method::POST, path).unwrap_or_else(|| panic!("POST {path}: no answer"))
    }

    /// One scrape of /metrics, to read several values that must agree with each other.
    pub fn scrape(&self) -> Option<Scrape> {
        let (status, body) = self.get("/metrics")?;
        (status == 200).then_some(Scrape(body))
    }

    /// Sum of every series of a metric whose labels contain `label` (e.g. `rule="enumeration"`).
    pub fn metric(&self, name: &str, label: &str) -> Option<f64> {
        self.scrape()?.metric(name, label)
    }

    /// The value of one series, written exactly (e.g. `recwatch_notify_sent_total{receiver="oncall"}`).
    pub fn series(&self, series: &str) -> Option<f64> {
        self.scrape()?.series(series)
    }

    pub fn wait_metric(&self, name: &str, label: &str, at_least: f64) {
        wait_until(&format!("{name}{{{label}}} >= {at_least}"), DAEMON_WAIT, || {
            (self.metric(name, label).unwrap_or(0.0) >= at_least).then_some(())
        });
    }

    /// Waits until one series satisfies `pred`; its value then.
    pub fn wait_series(&self, series: &str, pred: impl Fn(f64) -> bool) -> f64 {
        wait_until(series, DAEMON_WAIT, || self.series(series).filter(|v| pred(*v)))
    }

    pub fn wait_ready(&self) {
        wait_until("/readyz", DAEMON_WAIT, || (self.get("/readyz").map(|(s, _)| s) == Some(200)).then_some(()));
    }

    /// The alerts the API lists.
    pub fn alerts(&self) -> Vec<serde_json::Value> {
        let (status, body) = self.get("/api/v1/alerts").unwrap();
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Sends `signal` (a `kill` name: `HUP`, `TERM`) to this daemon; fails if it has exited.
    pub fn signal(&self, signal: &str) {
        self.assert_alive();
        let sent = Command::new("kill").arg(format!("-{signal}")).arg(self.pid.to_string()).status().unwrap();
        assert!(sent.success(), "kill -{signal} {}", self.pid);
    }

    /// SIGTERM, and the exit status (within 30 s). Its stderr is complete afterwards.
    pub fn terminate(&self) -> ExitStatus {
        self.signal("TERM");
        let status = wait_until("the daemon to exit after SIGTERM", Duration::from_secs(30), || {
            self.child.lock().unwrap_or_else(|e| e.into_inner()).try_wait().unwrap()
        });
        if let Some(reader) = self.reader.lock().unwrap().take() {
            let _ = reader.join();
        }
        status
    }

    pub fn kill9(self) {
        let mut child = self.child.lock().unwrap_or_else(|e| e.into_inner());
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// One /metrics exposition.
pub struct Scrape(pub String);

impl Scrape {
    /// Sum of every series of a metric whose labels contain `label`; None if there is none.
    pub fn metric(&self, name: &str, label: &str) -> Option<f64> {
        let mut sum = None;
        for line in self.0.lines().filter(|l| !l.starts_with('#')) {
            let (series, value) = line.rsplit_once(' ')?;
            if series.split('{').next()? == name && series.contains(label) {
                *sum.get_or_insert(0.0) += value.parse::<f64>().ok()?;
            }
        }
        sum
    }

    /// The value of one series, written exactly.
    pub fn series(&self, series: &str) -> Option<f64> {
        self.0.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }
}

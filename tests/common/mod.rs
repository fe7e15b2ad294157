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

//! Real-world lines through a real nginx: what nginx itself writes for a spoofed
//! X-Forwarded-For (its `main` format) and for a 64 KiB User-Agent, replayed by the real
//! `recwatch replay`. Owns the nginx it starts (a unix socket in a temp dir: no TCP port;
//! `realip` gives every request its own client address from a test header). Never contacts
//! anything but that socket.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An nginx serving `<dir>/www` on `<dir>/nginx.sock`, logging `<dir>/access.log` in `format`.
struct Nginx {
    child: Child,
    socket: PathBuf,
    log: PathBuf,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// `realip` takes each request's client address from `X-Test-Peer` (trusted from the unix
    /// socket only), so one test process can be many clients. `log_format main` is nginx.org's
    /// default; large header buffers let a 64 KiB User-Agent through (the default answers 400).
    fn start(dir: &Path, format: &str) -> Nginx {
        let www = dir.join("www/recordings");
        std::fs::create_dir_all(&www).unwrap();
        std::fs::write(www.join("call-1.wav"), vec![7u8; 4000]).unwrap();
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let d = dir.display();
        let conf = format!(
            "user root;\nmaster_process off;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n\
               log_format main '$remote_addr - $remote_user [$time_local] \"$request\" '\n\
                               '$status $body_bytes_sent \"$http_referer\" '\n\
                               '\"$http_user_agent\" \"$http_x_forwarded_for\"';\n\
               access_log {d}/access.log {format};\n\
               large_client_header_buffers 4 128k;\n\
               client_body_temp_path {d}/tmp;\n  proxy_temp_path {d}/tmp;\n  fastcgi_temp_path {d}/tmp;\n\
               uwsgi_temp_path {d}/tmp;\n  scgi_temp_path {d}/tmp;\n\
               set_real_ip_from unix:;\n  real_ip_header X-Test-Peer;\n\
               server {{ listen unix:{d}/nginx.sock; root {d}/www; }}\n\
             }}\n"
        );
        std::fs::write(dir.join("nginx.conf"), conf).unwrap();
        let child = Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(dir.join("nginx.conf"))
            .stdin(Stdio::null())
            .spawn()
            .expect("nginx is installed by scripts/test");
        let nginx = Nginx { child, socket: dir.join("nginx.sock"), log: dir.join("access.log") };
        let started = Instant::now();
        while UnixStream::connect(&nginx.socket).is_err() {
            assert!(started.elapsed() < Duration::from_secs(30), "nginx did not open {}", nginx.socket.display());
            std::thread::sleep(Duration::from_millis(50));
        }
        nginx
    }

    /// Sends one GET with `headers` as the client `peer`; returns the status code.
    fn get(&self, path: &str, peer: &str, headers: &[(&str, &str)]) -> u16 {
        let mut stream = UnixStream::connect(&self.socket).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nX-Test-Peer: {peer}\r\n");
        for (name, value) in headers {
            request += &format!("{name}: {value}\r\n");
        }
        request += "Connection: close\r\n\r\n";
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let status_line = String::from_utf8_lossy(&response[..response.len().min(12)]).into_owned();
        status_line.get(9..12).and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no status in {status_line:?}"))
    }

    /// The access log once it holds `lines` lines (nginx writes each at the request's end).
    fn log_with(&self, lines: usize) -> String {
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            if text.lines().count() >= lines {
                return text;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "nginx logged {} of {lines} lines",
                text.lines().count()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `recwatch replay` of `log` with a config of R1 over `/recordings/*.wav`; the JSON report.
fn replay(dir: &Path, networks: &str, format: &str, log: &Path) -> Value {
    let config = dir.join("recwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"state\"\n[sensitive]\nprefixes = [\"/recordings/\"]\nextensions = [\"wav\"]\n\
             [networks]\n{networks}\n[[source]]\nname = \"nginx\"\npath = \"{}\"\nformat = \"{format}\"\n\
             [[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"critical\"\n\
             status = [200, 206]\nclient_kind = [\"unknown\"]\n",
            log.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--no-progress")
        .arg(log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// (rule, client) of every alert in a replay report, sorted.
fn alerted(report: &Value) -> Vec<(String, String)> {
    let mut got: Vec<(String, String)> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["rule_id"].as_str().unwrap_or_default().to_string(), a["client"].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    got
}

#[test]
fn spoofed_x_forwarded_for_from_an_untrusted_client_does_not_make_it_internal() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path(), "main");
    let wav = "/recordings/call-1.wav";
    // An outsider claiming to be internal: its header is logged, never believed.
    assert_eq!(nginx.get(wav, "203.0.113.9", &[("X-Forwarded-For", "10.0.0.1")]), 200);
    // The trusted load balancer forwarding an outsider: the outsider is the client, also when
    // the outsider put a spoofed internal hop in front.
    assert_eq!(nginx.get(wav, "10.0.0.5", &[("X-Forwarded-For", "85.181.35.98")]), 200);
    assert_eq!(nginx.get(wav, "10.0.0.5", &[("X-Forwarded-For", "10.0.0.1, 198.51.100.4")]), 200);
    // The trusted load balancer forwarding an internal client: no alert.
    assert_eq!(nginx.get(wav, "10.0.0.5", &[("X-Forwarded-For", "10.0.0.77")]), 200);
    // An internal client that is no proxy: its header is not believed either.
    assert_eq!(nginx.get(wav, "10.0.0.6", &[("X-Forwarded-For", "192.0.2.1")]), 200);
    let log = nginx.log_with(5);
    assert!(log.lines().next().unwrap().ends_with("\"10.0.0.1\""), "nginx main format: {log}");

    let networks = "internal = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"10.0.0.5\"]";
    let report = replay(dir.path(), networks, "main", &nginx.log);
    let r1 = |client: &str| ("R1".to_string(), client.to_string());
    assert_eq!(alerted(&report), [r1("198.51.100.4"), r1("203.0.113.9"), r1("85.181.35.98")], "{report:#}");

    // Without trusted proxies nothing is believed: the load balancer itself is the client.
    let dir2 = tempfile::tempdir().unwrap();
    let report = replay(dir2.path(), "internal = [\"10.0.0.0/8\"]", "main", &nginx.log);
    assert_eq!(alerted(&report), [r1("203.0.113.9")], "{report:#}");
}

#[test]
fn recording_fetch_with_a_64_kib_user_agent_raises_r1() {
    let dir = tempfile::tempdir().unwrap();
    let nginx = Nginx::start(dir.path(), "combined");
    // `\xFF` bytes are logged as `\xFF` text, four bytes each: the line is far over the bound.
    let user_agent = "Mozilla/5.0 ".to_string() + &"\u{FF}".repeat(32 * 1024);
    let mut stream_headers = vec![("User-Agent", user_agent.as_str())];
    assert_eq!(nginx.get("/recordings/call-1.wav", "203.0.113.20", &stream_headers), 200);
    stream_headers.clear();
    assert_eq!(nginx.get("/recordings/call-1.wav", "10.0.0.20", &stream_headers), 200);
    let log = nginx.log_with(2);
    assert!(log.lines().next().unwrap().len() > 64 * 1024, "nginx logged the whole user agent");

    let report = replay(dir.path(), "internal = [\"10.0.0.0/8\"]", "combined", &nginx.log);
    assert_eq!(alerted(&report), [("R1".to_string(), "203.0.113.20".to_string())], "{report:#}");
}

#[test]
fn proxy_timezone_and_host_name_settings_are_checked_with_file_line_and_key() {
    use recwatch::config::Config;
    let file = Path::new("/etc/recwatch/recwatch.toml");
    let source = "[[source]]\npath = \"/var/log/nginx/access.log\"\nformat = \"main\"\n";
    let good = format!(
        "[networks]\ninternal = [\"10.0.0.0/8\"]\ntrusted_proxies = [\"10.0.0.5\", \"2001:db8::/64\"]\n\
         internal_hosts = [\"monitoring-server\"]\n{source}timezone = \"+02:00\"\n"
    );
    let config = Config::from_toml(file, &good).unwrap();
    assert_eq!(config.sources[0].timezone.to_string(), "+02:00");
    assert!(config.describe().contains("trusted proxies (X-Forwarded-For believed from): 10.0.0.5/32, 2001:db8::/64"));
    let cases = [
        (
            format!("[networks]\ntrusted_proxies = [\"10.0.0.0/33\"]\n{source}"),
            "/etc/recwatch/recwatch.toml:2: networks.trusted_proxies[0]: invalid CIDR",
        ),
        (
            format!("[networks]\ninternal_hosts = [\"10.1.2.3\"]\n{source}"),
            "/etc/recwatch/recwatch.toml:2: networks.internal_hosts[0]: \"10.1.2.3\" is not a host name",
        ),
        (
            format!("{source}timezone = \"Europe/Stockholm\"\n"),
            "/etc/recwatch/recwatch.toml:4: source[0].timezone: invalid time zone \"Europe/Stockholm\"",
        ),
    ];
    for (text, want) in cases {
        let Err(err) = Config::from_toml(file, &text) else { panic!("accepted; wanted {want}") };
        let err = err.to_string();
        assert!(err.starts_with(want), "{err}\nwanted: {want}");
    }
}

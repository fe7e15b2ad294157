//! Real servers as the oracle: real nginx and real Apache 2.4 serve a doc root of recordings
//! and public decoys on 127.0.0.1; several hundred crafted raw requests, each from its own
//! client address, decide the truth by their response bodies (was recording audio sent?);
//! then `recwatch replay` reads each server's own `combined` log with
//! `config/examples/reference.toml`, and must flag exactly the clients that got audio.
//! Owns the servers' configs, the request corpus and the differential; never contacts any
//! address but 127.0.0.0/8, never leaves a server running (each is killed on drop).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Recording files (under the doc root): each gets distinct binary content.
const RECORDINGS: &[&str] = &[
    "recordings/call.wav",
    "recordings/x.wav",
    "recordings/a.gsm",
    "recordings/b.mp3",
    "recordings/demo.wav",
    "recordings/2019/02/call-1-part1.wav",
];

/// Public files: ASCII content, never audio, though some look like recordings by name.
const PUBLIC: &[&str] =
    &["training/recordings/demo.wav", "training/x.wav", "static/beep.wav", "index.html", "recordings/README.txt"];

/// The whole test, both servers included, must finish within this.
const BUDGET: Duration = Duration::from_secs(300);

/// Content of recording `index`: bytes >= 0x80 only, so any part of it in a response body is
/// recognisable (server-made pages, public files and echoed requests are ASCII).
fn recording_content(index: usize) -> Vec<u8> {
    (0..600).map(|j| 0x80 | ((index * 37 + j * 5 + j / 128) % 128) as u8).collect()
}

/// Whether a response body carried recording audio: it holds bytes >= 0x80, and every run of
/// them is part of some recording (a range, a multipart range, or a whole file).
fn body_is_recording_audio(body: &[u8], recordings: &[Vec<u8>]) -> bool {
    let mut runs = body.split(|&byte| byte < 0x80).filter(|run| !run.is_empty()).peekable();
    runs.peek().is_some()
        && runs.all(|run| recordings.iter().any(|content| content.windows(run.len()).any(|window| window == run)))
}

/// One crafted request: its request line (sent verbatim) and extra header lines; `http09`
/// requests are just the line (no headers at all).
struct Crafted {
    what: &'static str,
    line: Vec<u8>,
    headers: Vec<Vec<u8>>,
    http09: bool,
}

fn request(what: &'static str, line: impl Into<Vec<u8>>) -> Crafted {
    Crafted { what, line: line.into(), headers: Vec::new(), http09: false }
}

fn with_header(mut crafted: Crafted, header: impl Into<Vec<u8>>) -> Crafted {
    crafted.headers.push(header.into());
    crafted
}

const REC: &str = "/recordings/call.wav";
const DECOY: &str = "/training/recordings/demo.wav";

/// Targets sent with GET HTTP/1.1, GET HTTP/1.0 and HEAD HTTP/1.1.
const TARGETS: &[(&str, &str)] = &[
    ("plain", "/recordings/call.wav"),
    ("plain", "/recordings/x.wav"),
    ("plain", "/recordings/a.gsm"),
    ("plain", "/recordings/b.mp3"),
    ("plain", "/recordings/2019/02/call-1-part1.wav"),
    ("plain", "/recordings/missing.wav"),
    ("plain", "/recordings/README.txt"),
    ("plain", "/recordings/"),
    ("plain", "/recordings"),
    ("decoy", "/training/recordings/demo.wav"),
    ("decoy", "/training/x.wav"),
    ("decoy", "/static/beep.wav"),
    ("decoy", "/index.html"),
    ("encoding", "/recordings/%63all.wav"),
    ("encoding", "/%72ecordings/call.wav"),
    ("encoding", "/recordings/call%2ewav"),
    ("encoding", "/recordings%2fcall.wav"),
    ("encoding", "/recordings%2Fcall.wav"),
    ("encoding", "/recordings/%2e/call.wav"),
    ("encoding", "/x/%2e%2e/recordings/call.wav"),
    ("encoding", "/x/%2E%2E/recordings/call.wav"),
    ("encoding", "/x/.%2e/recordings/call.wav"),
    ("encoding", "/x%2f..%2frecordings/call.wav"),
    ("encoding", "/recordings/%252e%252e/call.wav"),
    ("encoding", "/x/%252e%252e/recordings/call.wav"),
    ("encoding", "/recordings/call.wav%00"),
    ("encoding", "/recordings/call.wav%00.txt"),
    ("encoding", "/recordings%5ccall.wav"),
    ("encoding", "/recordings/%5c/../call.wav"),
    ("encoding", "/recordings/%20/../call.wav"),
    ("encoding", "/recordings/call.wav%20"),
    ("encoding", "/x/%c0%ae%c0%ae/recordings/call.wav"),
    ("encoding", "/recordings/%c0%ae%c0%ae/call.wav"),
    ("encoding", "/recordings/call.wav%3fdl=1"),
    ("encoding", "/recordings/call.wav%23x"),
    ("encoding", "/recordings/%2e%2e%2ftraining/recordings/demo.wav"),
    ("encoding", "/training/%2e%2e/recordings/call.wav"),
    ("encoding", "/recordings/%"),
    ("encoding", "/recordings/%zz.wav"),
    ("dots", "/recordings/.../../call.wav"),
    ("dots", "/recordings/./call.wav"),
    ("dots", "/recordings/../recordings/call.wav"),
    ("dots", "/../recordings/call.wav"),
    ("dots", "/recordings/x/../call.wav"),
    ("dots", "/recordings/.;x/../call.wav"),
    ("dots", "/recordings/;x/../call.wav"),
    ("dots", "/recordings/x.wav/../call.wav"),
    ("dots", "/recordings/call.wav;x"),
    ("dots", "/recordings;x/call.wav"),
    ("dots", "/recordings/..;/recordings/call.wav"),
    ("dots", "/recordings/call.wav."),
    ("dots", "/recordings./call.wav"),
    ("dots", "/recordings/.../call.wav"),
    ("dots", "/recordings/x./../call.wav"),
    ("dots", "/training/.../../recordings/demo.wav"),
    ("dots", "/training/%20/../recordings/demo.wav"),
    ("dots", "/training/;x/../recordings/demo.wav"),
    ("dots", "/training/.;x/../recordings/demo.wav"),
    ("dots", "/training/\\/../recordings/demo.wav"),
    ("dots", "/training/%5c/../recordings/demo.wav"),
    ("dots", "/training/x./../recordings/demo.wav"),
    ("dots", "/recordings/\\/../call.wav"),
    ("dots", "/recordings/x\\../../recordings/call.wav"),
    ("dots", "/recordings/x\\..\\call.wav"),
    ("dots", "/recordings/.."),
    ("dots", "/recordings/../../../etc/hostname"),
    ("slashes", "//recordings/call.wav"),
    ("slashes", "/recordings//call.wav"),
    ("slashes", "///recordings///call.wav"),
    ("slashes", "/recordings/call.wav/"),
    ("slashes", "/recordings\\call.wav"),
    ("slashes", "\\recordings\\call.wav"),
    ("case", "/RECORDINGS/call.wav"),
    ("case", "/Recordings/CALL.WAV"),
    ("case", "/recordings/call.WAV"),
    ("absolute", "http://h/recordings/call.wav"),
    ("absolute", "HTTP://h/recordings/call.wav"),
    ("absolute", "https://h/recordings/call.wav"),
    ("absolute", "ftp://h/recordings/call.wav"),
    ("absolute", "x://h/recordings/call.wav"),
    ("absolute", "svn+ssh://h/recordings/call.wav"),
    ("absolute", "a.b-c+d://h:99/recordings/call.wav"),
    ("absolute", "http://h:80/recordings/call.wav"),
    ("absolute", "http://user@h/recordings/call.wav"),
    ("absolute", "http://[::1]/recordings/call.wav"),
    ("absolute", "http://h"),
    ("absolute", "http://h?x=/recordings/call.wav"),
    ("absolute", "http://h/training/.../../recordings/demo.wav"),
    ("absolute", "http://h/training/recordings/demo.wav"),
    ("absolute", "http:/recordings/call.wav"),
    ("absolute", "x:/recordings/call.wav"),
    ("absolute", "ftp:/recordings/call.wav"),
    ("absolute", "http:recordings/call.wav"),
    ("absolute", "1http://h/recordings/call.wav"),
    ("absolute", "recordings/call.wav"),
    ("query", "/recordings/call.wav?dl=1"),
    ("query", "/recordings/call.wav#x"),
    ("query", "/training/recordings/demo.wav?/recordings/call.wav"),
    ("query", "/index.html?f=/recordings/call.wav"),
    ("query", "/recordings/call.wav?a=%2e%2e/x"),
];

/// The request corpus, in sending order.
fn corpus() -> Vec<Crafted> {
    let mut out = Vec::new();
    for &(what, target) in TARGETS {
        for (method, version) in [("GET", "HTTP/1.1"), ("GET", "HTTP/1.0"), ("HEAD", "HTTP/1.1")] {
            out.push(request(what, format!("{method} {target} {version}")));
        }
    }
    for method in ["OPTIONS", "TRACE", "POST", "PUT", "DELETE", "PROPFIND", "get", "Head", "FOO", "CONNECT"] {
        for target in [REC, DECOY] {
            out.push(request("method", format!("{method} {target} HTTP/1.1")));
        }
    }
    for target in [REC, DECOY, "/recordings/b.mp3"] {
        out.push(Crafted { what: "version", line: format!("GET {target}").into(), headers: Vec::new(), http09: true });
        for line in [
            format!("GET {target}"),
            format!("GET {target} HTTP/1.1 "),
            format!("GET {target} HTTP/1.1   "),
            format!("GET  {target} HTTP/1.1"),
            format!("GET {target}  HTTP/1.1"),
            format!("GET {target} http/1.1"),
            format!("GET {target} HTTP/2.0"),
            format!("GET {target} HTTP/1.2"),
            format!("GET {target} HTTP/0.9"),
            format!("GET {target} HTTP/1"),
            format!("GET {target} HTTP/1.1 x"),
            format!("GET {target}\tHTTP/1.1"),
            format!("HEAD {target} HTTP/1.0 "),
        ] {
            out.push(request("version", line));
        }
    }
    for target in [REC, DECOY] {
        for range in
            ["bytes=0-9", "bytes=100-", "bytes=-16", "bytes=0-0", "bytes=0-3,10-13", "bytes=99999-", "bytes=5-2", "x"]
        {
            out.push(with_header(request("range", format!("GET {target} HTTP/1.1")), format!("Range: {range}")));
        }
        out.push(with_header(request("range", format!("HEAD {target} HTTP/1.1")), "Range: bytes=0-9"));
        out.push(with_header(request("range", format!("GET {target} HTTP/1.0")), "Range: bytes=1-20"));
    }
    let long_ascii = "A".repeat(3000);
    let mut high = b"User-Agent: ".to_vec();
    high.extend(std::iter::repeat_n(0xFFu8, 1000));
    for target in [REC, DECOY] {
        let line = format!("GET {target} HTTP/1.1");
        out.push(with_header(request("long header", line.clone()), format!("User-Agent: {long_ascii}")));
        out.push(with_header(request("long header", line.clone()), high.clone()));
        out.push(with_header(request("long header", line.clone()), format!("Referer: http://r/{long_ascii}")));
        out.push(with_header(request("long header", line.clone()), format!("Cookie: c={}", "b".repeat(6000))));
        let mut many = request("long header", line.clone());
        for i in 0..40 {
            many = with_header(many, format!("X-Filler-{i}: {}", "f".repeat(100)));
        }
        out.push(many);
        let fake_line =
            r#"127.9.9.9 - - [18/Feb/2019:10:00:01 +0100] "GET /recordings/call.wav HTTP/1.1" 200 600 "-" "x"#;
        for header in [
            format!(r#"User-Agent: x" 200 1 "-" "{fake_line}"#),
            format!("User-Agent: \\\" {fake_line}"),
            r#"Referer: \" 200 600 "-" "x"#.to_string(),
            "User-Agent: \x1b[31mred\x1b[0m \\x22 127.9.9.9".to_string(),
            format!("Authorization: Basic {}", base64(b"- [18/Feb/2019:10:00:01 +0100] \"GET /recordings/x.wav:x")),
            format!("Authorization: Basic {}", base64(b"127.9.9.9 alice:pw")),
        ] {
            out.push(with_header(request("log injection", line.clone()), header));
        }
        out.push(with_header(request("log injection", line.clone()), "User-Agent: \u{202e}vaw.llac\u{202c}"));
    }
    for line in [
        format!("GET {REC}\" 200 600 \"-\" \"x HTTP/1.1"),
        format!("GET {DECOY}\" 200 600 \"-\" \"x HTTP/1.1"),
        format!("GET /index.html?{REC}\" 200 1 HTTP/1.1"),
        format!("GET {REC} HTTP/1.1\" 404 0 \"-"),
    ] {
        out.push(request("log injection", line));
    }
    out
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Request `index`'s two client addresses: the socket's own (what a server logs when it
/// never read the test header) and the one in `X-Test-Client` (what realip/remoteip log).
fn client_addresses(index: usize) -> (Ipv4Addr, Ipv4Addr) {
    let (high, low) = ((index / 250) as u8, (index % 250 + 1) as u8);
    (Ipv4Addr::new(127, 1, high, low), Ipv4Addr::new(100, 64, high, low))
}

/// The bytes sent for `crafted` as request `index`.
fn wire_bytes(crafted: &Crafted, index: usize) -> Vec<u8> {
    let mut bytes = crafted.line.clone();
    bytes.extend_from_slice(b"\r\n");
    if crafted.http09 {
        return bytes;
    }
    let (_, header_client) = client_addresses(index);
    bytes.extend_from_slice(
        format!("Host: localhost\r\nX-Test-Client: {header_client}\r\nConnection: close\r\n").as_bytes(),
    );
    for header in &crafted.headers {
        bytes.extend_from_slice(header);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"\r\n");
    bytes
}

/// Sends `bytes` from `source` to `server` and reads the reply until the server closes the
/// connection. A server still waiting for more gets a half-close; the read is bounded.
fn exchange(server: SocketAddr, source: Ipv4Addr, bytes: &[u8]) -> Vec<u8> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((source, 0)).into()).unwrap();
    if let Err(e) = socket.connect_timeout(&server.into(), Duration::from_secs(10)) {
        panic!("connecting to {server} from {source} for {:?}: {e}", String::from_utf8_lossy(bytes));
    }
    let mut stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A server may answer and close before reading everything (a 400 on the request line):
    // a failed write is part of the exchange, not an error of the test.
    let _ = stream.write_all(bytes);
    let mut reply = Vec::new();
    let mut half_closed = false;
    let mut buf = [0u8; 16384];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) && !half_closed => {
                let _ = stream.shutdown(Shutdown::Write);
                half_closed = true;
            }
            Err(_) => break,
        }
    }
    reply
}

/// A parsed reply: the status (`None` for an HTTP/0.9 reply, which is the body alone).
struct Reply {
    status: Option<u16>,
    body: Vec<u8>,
}

fn parse_reply(raw: &[u8]) -> Reply {
    if !raw.starts_with(b"HTTP/") {
        return Reply { status: None, body: raw.to_vec() };
    }
    let status = raw.get(9..12).and_then(|s| std::str::from_utf8(s).ok()?.parse().ok());
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Reply { status, body: Vec::new() };
    };
    let head = String::from_utf8_lossy(&raw[..head_end]).to_ascii_lowercase();
    let mut body = raw[head_end + 4..].to_vec();
    if head.contains("\r\ntransfer-encoding: chunked") {
        body = dechunk(&body);
    }
    Reply { status, body }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(line_end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..line_end]).ok().and_then(|s| usize::from_str_radix(s.trim(), 16).ok());
        let Some(size) = size.filter(|&size| size > 0) else { break };
        let start = line_end + 2;
        let end = (start + size).min(rest.len());
        out.extend_from_slice(&rest[start..end]);
        rest = rest.get(end + 2..).unwrap_or(&[]);
    }
    out
}

fn write_doc_root(www: &Path) -> Vec<Vec<u8>> {
    let mut contents = Vec::new();
    for (index, path) in RECORDINGS.iter().enumerate() {
        let file = www.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let content = recording_content(index);
        std::fs::write(&file, &content).unwrap();
        contents.push(content);
    }
    for path in PUBLIC {
        let file = www.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, format!("public file {path}, no audio here\n").repeat(8)).unwrap();
    }
    contents
}

/// Makes the tree readable by the unprivileged user Apache's worker switches to.
fn open_up(dir: &Path) {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            open_up(&path);
        } else {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    }
}

fn start_nginx(dir: &Path) -> (common::Guard, SocketAddr, PathBuf) {
    let state = dir.join("nginx");
    std::fs::create_dir_all(state.join("tmp")).unwrap();
    let log = state.join("access.log");
    let (server, addr) = common::start_server("nginx", &state.join("error.log"), |port| {
        let conf = format!(
            "user root;
master_process off;
daemon off;
pid {s}/nginx.pid;
error_log {s}/error.log;
events {{ worker_connections 64; }}
http {{
  access_log {s}/access.log combined;
  client_body_temp_path {s}/tmp;
  proxy_temp_path {s}/tmp;
  fastcgi_temp_path {s}/tmp;
  uwsgi_temp_path {s}/tmp;
  scgi_temp_path {s}/tmp;
  set_real_ip_from 127.0.0.0/8;
  real_ip_header X-Test-Client;
  server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
",
            s = state.display(),
            www = dir.join("www").display(),
        );
        std::fs::write(state.join("nginx.conf"), conf).unwrap();
        Command::new("/usr/sbin/nginx")
            .arg("-c")
            .arg(state.join("nginx.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx is installed by scripts/test")
    });
    (server, addr, log)
}

fn start_apache(dir: &Path) -> (common::Guard, SocketAddr, PathBuf) {
    let state = dir.join("apache");
    std::fs::create_dir_all(&state).unwrap();
    let log = state.join("access.log");
    let directives = format!(
        r#"LoadModule remoteip_module /usr/lib/apache2/modules/mod_remoteip.so
LogFormat "%h %l %u %t \"%r\" %>s %O \"%{{Referer}}i\" \"%{{User-Agent}}i\"" combined
CustomLog "{}" combined
RemoteIPHeader X-Test-Client
RemoteIPInternalProxy 127.0.0.0/8"#,
        log.display()
    );
    let (server, addr) = common::start_apache(&state, &dir.join("www"), &directives);
    (server, addr, log)
}

/// What one request did on one server.
struct Outcome {
    status: Option<u16>,
    body_len: usize,
    audio: bool,
}

/// Sends the corpus, then a sentinel whose log line proves every earlier request is logged
/// (each server here handles one connection at a time, in order).
fn send_corpus(server: SocketAddr, log: &Path, corpus: &[Crafted], recordings: &[Vec<u8>]) -> Vec<Outcome> {
    let outcomes = corpus
        .iter()
        .enumerate()
        .map(|(index, crafted)| {
            let (source, _) = client_addresses(index);
            let reply = parse_reply(&exchange(server, source, &wire_bytes(crafted, index)));
            let audio = body_is_recording_audio(&reply.body, recordings);
            Outcome { status: reply.status, body_len: reply.body.len(), audio }
        })
        .collect();
    let sentinel = "/sentinel-all-requests-sent";
    let bytes = format!("GET {sentinel} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    exchange(server, Ipv4Addr::new(127, 0, 0, 2), bytes.as_bytes());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read(log).unwrap_or_default().windows(sentinel.len()).any(|w| w == sentinel.as_bytes()) {
        assert!(Instant::now() < deadline, "the sentinel request never reached {}", log.display());
        std::thread::sleep(Duration::from_millis(20));
    }
    outcomes
}

/// Clients `recwatch replay` raised R1 (unknown-client-fetch) for, reading `log`.
fn r1_clients(log: &Path, state: &Path) -> BTreeSet<String> {
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/reference.toml");
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .arg("--state-dir")
        .arg(state)
        .args(["--no-progress", "--report", "json"])
        .arg(log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|alert| alert["rule"] == "unknown-client-fetch")
        .map(|alert| alert["client"].as_str().unwrap().to_string())
        .collect()
}

/// The differential on one server: returns (audio served, flagged, disagreements table).
fn differential(
    server_name: &str,
    corpus: &[Crafted],
    outcomes: &[Outcome],
    log: &Path,
    flagged: &BTreeSet<String>,
) -> (usize, usize, Vec<String>) {
    let log_text = String::from_utf8_lossy(&std::fs::read(log).unwrap()).into_owned();
    let mut log_lines: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for line in log_text.lines() {
        let client = line.split(' ').next().unwrap_or("").to_string();
        log_lines.entry(client).or_default().push(line);
    }
    let mut index_of: BTreeMap<String, usize> = BTreeMap::new();
    for index in 0..corpus.len() {
        let (socket, header) = client_addresses(index);
        index_of.insert(socket.to_string(), index);
        index_of.insert(header.to_string(), index);
    }
    let mut rows = Vec::new();
    for (index, (crafted, outcome)) in corpus.iter().zip(outcomes).enumerate() {
        let (socket, header) = client_addresses(index);
        let raised = flagged.contains(&socket.to_string()) || flagged.contains(&header.to_string());
        if raised != outcome.audio {
            let logged: Vec<&str> = [socket.to_string(), header.to_string()]
                .iter()
                .flat_map(|client| log_lines.get(client).cloned().unwrap_or_default())
                .collect();
            rows.push(format!(
                "| {server_name} | {} | #{index} {} | {:?} | {} | {} | {} |",
                if outcome.audio { "MISSED" } else { "FALSE ALARM" },
                crafted.what,
                String::from_utf8_lossy(&crafted.line),
                outcome.status.map_or("0.9".to_string(), |s| s.to_string()),
                outcome.body_len,
                logged.join(" / ").chars().take(300).collect::<String>(),
            ));
        }
    }
    for client in flagged.iter().filter(|client| !index_of.contains_key(*client)) {
        rows.push(format!("| {server_name} | FALSE ALARM | client {client} sent no request | | | |"));
    }
    (outcomes.iter().filter(|o| o.audio).count(), flagged.len(), rows)
}

#[test]
fn recwatch_flags_exactly_the_clients_real_nginx_and_apache_served_recordings_to() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let recordings = write_doc_root(&dir.join("www"));
    open_up(dir);
    let corpus = corpus();
    assert!(corpus.len() >= 300, "the corpus has {} requests", corpus.len());

    let mut summary = String::from("| server | requests | audio served | refused or not audio | R1 clients |\n");
    let mut disagreements = Vec::new();
    for (name, start) in [("nginx", start_nginx as fn(&Path) -> _), ("apache", start_apache)] {
        let (server, addr, log) = start(dir);
        let outcomes = send_corpus(addr, &log, &corpus, &recordings);
        drop(server);
        let flagged = r1_clients(&log, &dir.join(format!("state-{name}")));
        let (audio, raised, rows) = differential(name, &corpus, &outcomes, &log, &flagged);
        writeln!(summary, "| {name} | {} | {audio} | {} | {raised} |", corpus.len(), corpus.len() - audio).unwrap();
        // The corpus must exercise both sides on every server, or 0 disagreements proves little.
        assert!(audio >= 60, "{name} served audio to only {audio} requests:\n{summary}");
        assert!(corpus.len() - audio >= 100, "{name} refused only {} requests", corpus.len() - audio);
        disagreements.extend(rows);
        assert!(started.elapsed() < BUDGET, "over the time budget after {name}");
    }
    println!("{summary}");
    assert!(
        disagreements.is_empty(),
        "{} disagreements between what the servers sent and what recwatch flagged:\n{summary}\n| server | kind | request | line | status | body bytes | logged as |\n|---|---|---|---|---|---|---|\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
}

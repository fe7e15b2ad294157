//! The formats operators actually run, written by the real programs: nginx with a custom
//! `log_format` (X-Forwarded-For, scheme, request time) and an `escape=json` template (read
//! both as a compiled format string and as JSON by the `nginx_json` field map), and
//! Apache with a custom `LogFormat` (`%D`, `%H`, `%{X-Forwarded-For}i`), vsftpd writing
//! `xferlog` for an anonymous FTP download (curl as the client), and Samba's smbd writing
//! `vfs_full_audit` records for a guest download (smbclient as the client). Each serves a
//! recording to a client recwatch does not know; `recwatch replay`, given the server's own
//! format string, must raise R1, R3 and R4 (plain HTTP or FTP; SMB does not say) for it, and
//! nothing for a public page.
//! Owns the servers' configs for these formats; never contacts any address but 127.0.0.1,
//! never touches system-wide state (every server's dirs are under the test's temp dir), never
//! leaves a server running (each is killed on drop).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// nginx's custom format: client, host, scheme, time, request, status, bytes, request time,
/// the forwarded-for list and the user agent.
const NGINX_CUSTOM: &str = r#"$remote_addr $host $scheme [$time_local] "$request" $status $body_bytes_sent rt=$request_time "$http_x_forwarded_for" "$http_user_agent""#;

/// nginx's JSON template, as an operator writes it after `log_format json escape=json`; its
/// keys are the variables' names, which is what `format = "nginx_json"` expects.
const NGINX_JSON: &str = r#"{"time_iso8601":"$time_iso8601","remote_addr":"$remote_addr","request":"$request","status":$status,"body_bytes_sent":$body_bytes_sent,"request_time":$request_time,"scheme":"$scheme","http_user_agent":"$http_user_agent","http_x_forwarded_for":"$http_x_forwarded_for"}"#;

/// Apache's custom format, as written inside the LogFormat directive's quotes.
/// `%{HTTPS}e` is mod_ssl's always-set flag: `-` here, where no TLS is configured.
const APACHE_CUSTOM: &str = r#"%h %l %u %t \"%r\" %>s %b %D %H %{HTTPS}e \"%{X-Forwarded-For}i\" \"%{User-Agent}i\""#;

/// A doc root with one recording and one public page, readable by Apache's worker user.
fn write_doc_root(dir: &Path) -> PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(www.join("recordings")).unwrap();
    std::fs::write(www.join("recordings/call.wav"), vec![0x80u8; 600]).unwrap();
    std::fs::write(www.join("index.html"), "public page\n").unwrap();
    for path in [dir, &www, &www.join("recordings")] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    for file in ["recordings/call.wav", "index.html"] {
        std::fs::set_permissions(www.join(file), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    www
}

/// Sends one GET and reads the reply to the end; returns the status line.
fn get(server: SocketAddr, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect_timeout(&server, Duration::from_secs(10)).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: files.example\r\n{headers}Connection: close\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    stream.read_to_end(&mut reply).unwrap();
    String::from_utf8_lossy(&reply).lines().next().unwrap_or_default().to_string()
}

/// The fetch every producer serves: a recording to 127.0.0.1 (unknown: only 10/8 is
/// internal) with a forged X-Forwarded-For and a quote in the user agent, then a public page.
/// Waits until both are logged in every file of `logs`.
fn fetch_recording(server: SocketAddr, logs: &[&Path]) {
    let status = get(server, "/recordings/call.wav", "X-Forwarded-For: 10.0.0.9\r\nUser-Agent: grab \"it\" 404\r\n");
    assert!(status.contains(" 200 "), "the recording was not served: {status}");
    assert!(get(server, "/index.html", "").contains(" 200 "));
    let deadline = Instant::now() + Duration::from_secs(60);
    for log in logs {
        while std::fs::read_to_string(log).unwrap_or_default().lines().count() < 2 {
            assert!(Instant::now() < deadline, "{} never got both lines", log.display());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `recwatch replay` of `log` with a source configured by `format_key = 'format'`: the rule
/// names raised, with their client.
fn replay_rules(dir: &Path, name: &str, format_line: &str, log: &Path) -> Vec<(String, String)> {
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"state-{name}\"\n[sensitive]\nprefixes = [\"/recordings/\"]\nextensions = [\"wav\"]\n\
             [networks]\ninternal = [\"10.0.0.0/8\"]\n[[source]]\nname = \"{name}\"\npath = \"{}\"\n{format_line}\n",
            log.display()
        ),
    )
    .unwrap();
    let check =
        Command::new(env!("CARGO_BIN_EXE_recwatch")).arg("check").arg("--config").arg(&config).output().unwrap();
    assert!(check.status.success(), "check refused {name}: {}", String::from_utf8_lossy(&check.stderr));
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .args(["--no-progress", "--report", "json"])
        .arg(log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rules: Vec<(String, String)> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["rule"].as_str().unwrap().to_string(), a["client"].as_str().unwrap_or("").to_string()))
        .collect();
    rules.sort();
    rules
}

/// What a recording served over plain HTTP to 127.0.0.1 must raise: R1 for the client, R3
/// and R4 for the source (their alerts name the first client they saw).
fn expected() -> Vec<(String, String)> {
    ["plaintext-exposure", "unauthenticated-exposure", "unknown-client-fetch"]
        .map(|rule| (rule.to_string(), "127.0.0.1".to_string()))
        .to_vec()
}

#[test]
fn real_nginx_custom_log_format_and_escape_json_raise_r1_r3_and_r4() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = write_doc_root(dir);
    let state = dir.join("nginx");
    std::fs::create_dir_all(state.join("tmp")).unwrap();
    let (custom_log, json_log) = (state.join("custom.log"), state.join("json.log"));
    let (server, addr) = common::start_server("nginx", &state.join("error.log"), |port| {
        let conf = format!(
            "user root;
master_process off;
daemon off;
pid {s}/nginx.pid;
error_log {s}/error.log;
events {{ worker_connections 64; }}
http {{
  log_format custom '{NGINX_CUSTOM}';
  log_format json escape=json '{NGINX_JSON}';
  access_log {s}/custom.log custom;
  access_log {s}/json.log json;
  client_body_temp_path {s}/tmp;
  proxy_temp_path {s}/tmp;
  fastcgi_temp_path {s}/tmp;
  uwsgi_temp_path {s}/tmp;
  scgi_temp_path {s}/tmp;
  server {{ listen 127.0.0.1:{port}; root {www}; }}
}}
",
            s = state.display(),
            www = www.display(),
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
    fetch_recording(addr, &[&custom_log, &json_log]);
    drop(server);

    let custom = replay_rules(dir, "custom", &format!("nginx_log_format = '{NGINX_CUSTOM}'"), &custom_log);
    assert_eq!(custom, expected(), "custom log_format:\n{}", std::fs::read_to_string(&custom_log).unwrap());
    let json = replay_rules(dir, "json", &format!("nginx_log_format = '''escape=json '{NGINX_JSON}' '''"), &json_log);
    assert_eq!(json, expected(), "escape=json log_format:\n{}", std::fs::read_to_string(&json_log).unwrap());
    // The same JSON read as JSON, by the nginx_json default map (keys named as the variables).
    let json_map = replay_rules(dir, "json-map", "format = \"nginx_json\"", &json_log);
    assert_eq!(json_map, expected(), "nginx_json map:\n{}", std::fs::read_to_string(&json_log).unwrap());

    // `check --sample` names nginx_json for the JSON log, and says no known format fits the
    // custom one (only its format string can read it).
    let sample = |log: &Path| {
        Command::new(env!("CARGO_BIN_EXE_recwatch")).arg("check").arg("--sample").arg(log).output().unwrap()
    };
    let out = sample(&json_log);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.ends_with("format = \"nginx_json\"\n"), "{text}");
    let out = sample(&custom_log);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success() && text.contains("no known format fits"), "{text}");
}

#[test]
fn real_apache_custom_logformat_raises_r1_r3_and_r4() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = write_doc_root(dir);
    let state = dir.join("apache");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = state.join("access.log");
    let directives = format!("LogFormat \"{APACHE_CUSTOM}\" custom\nCustomLog \"{}\" custom", log.display());
    let (server, addr) = common::start_apache(&state, &www, &directives);
    fetch_recording(addr, &[&log]);
    drop(server);

    let rules = replay_rules(dir, "apache", &format!("apache_log_format = '{APACHE_CUSTOM}'"), &log);
    assert_eq!(rules, expected(), "custom LogFormat:\n{}", std::fs::read_to_string(&log).unwrap());
}

#[test]
fn real_vsftpd_anonymous_download_in_xferlog_raises_r1_r3_and_r4() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = write_doc_root(dir);
    let state = dir.join("vsftpd");
    std::fs::create_dir_all(&state).unwrap();
    let log = state.join("xferlog");
    let (server, addr) = common::start_server("vsftpd", &state.join("vsftpd.log"), |port| {
        let conf = format!(
            "listen=YES
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root={www}
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_address=127.0.0.1
connect_from_port_20=NO
xferlog_enable=YES
xferlog_std_format=YES
xferlog_file={log}
vsftpd_log_file={s}/vsftpd.log
use_localtime=NO
seccomp_sandbox=NO
secure_chroot_dir=/var/run/vsftpd/empty
",
            www = www.display(),
            log = log.display(),
            s = state.display(),
        );
        std::fs::write(state.join("vsftpd.conf"), conf).unwrap();
        Command::new("/usr/sbin/vsftpd")
            .arg(state.join("vsftpd.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vsftpd is installed by scripts/test")
    });
    let fetched = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "60", "--output"])
        .arg(state.join("fetched.wav"))
        .arg(format!("ftp://{addr}/recordings/call.wav"))
        .output()
        .expect("curl is installed by scripts/test");
    assert!(fetched.status.success(), "curl: {}", String::from_utf8_lossy(&fetched.stderr));
    assert_eq!(std::fs::read(state.join("fetched.wav")).unwrap().len(), 600);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_to_string(&log).unwrap_or_default().lines().count() < 1 {
        assert!(Instant::now() < deadline, "vsftpd never logged the transfer");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);

    let rules = replay_rules(dir, "ftp", "format = \"xferlog\"", &log);
    assert_eq!(rules, expected(), "xferlog:\n{}", std::fs::read_to_string(&log).unwrap());
    let sample = Command::new(env!("CARGO_BIN_EXE_recwatch")).arg("check").arg("--sample").arg(&log).output().unwrap();
    let text = String::from_utf8_lossy(&sample.stdout);
    assert!(sample.status.success() && text.ends_with("format = \"xferlog\"\n"), "{text}");
}

/// smbd and every process it forked (it leads its own process group): SIGTERM to the group,
/// then SIGKILL if it lingers; the parent's [`common::Guard`] reaps it.
struct SmbdGroup(common::Guard);

impl Drop for SmbdGroup {
    fn drop(&mut self) {
        let group = format!("-{}", self.0 .0.id());
        let _ = Command::new("kill").args(["-TERM", "--", &group]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && matches!(self.0 .0.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = Command::new("kill").args(["-KILL", "--", &group]).stderr(Stdio::null()).status();
    }
}

#[test]
fn real_smbd_guest_download_in_full_audit_raises_r1_and_r3() {
    if !Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0\n") {
        eprintln!("SKIPPED real_smbd_guest_download_in_full_audit_raises_r1_and_r3: smbd needs root (scripts/test runs as root)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let www = write_doc_root(dir);
    std::fs::write(www.join("recordings/locked.wav"), b"not for guests").unwrap();
    std::fs::set_permissions(www.join("recordings/locked.wav"), std::fs::Permissions::from_mode(0o600)).unwrap();
    // File names are file names, not URLs: a `#` cuts nothing, `%2e` decodes to nothing.
    for name in ["call #5.wav", "evil%2ewav"] {
        std::fs::write(www.join("recordings").join(name), vec![0x80u8; 600]).unwrap();
        std::fs::set_permissions(www.join("recordings").join(name), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let state = dir.join("samba");
    for sub in ["private", "lock", "state", "cache", "pid", "ncalrpc", "bind-dns", "log"] {
        std::fs::create_dir_all(state.join(sub)).unwrap();
    }
    let audit_log = state.join("log/audit.log");
    let conf = state.join("smb.conf");
    let (server, addr) = common::start_server("smbd", &state.join("log/log.smbd"), |port| {
        std::fs::write(
            &conf,
            format!(
                "[global]
  smb ports = {port}
  interfaces = 127.0.0.1
  bind interfaces only = yes
  server role = standalone server
  disable netbios = yes
  rpc start on demand helpers = no
  load printers = no
  printcap name = /dev/null
  disable spoolss = yes
  private dir = {s}/private
  lock directory = {s}/lock
  state directory = {s}/state
  cache directory = {s}/cache
  pid directory = {s}/pid
  ncalrpc dir = {s}/ncalrpc
  binddns dir = {s}/bind-dns
  passdb backend = tdbsam:{s}/private/passdb.tdb
  map to guest = Bad User
  guest account = nobody
  logging = file
  log file = {s}/log/log.smbd
  log level = 0 full_audit:1@{audit}
  debug syslog format = yes
[rec]
  path = {www}
  guest ok = yes
  read only = yes
  vfs objects = full_audit
  full_audit:syslog = false
  full_audit:prefix = %u|%I|%m|%S
  full_audit:success = connect create_file openat pread_recv
  full_audit:failure = create_file openat
",
                s = state.display(),
                audit = audit_log.display(),
                www = www.display(),
            ),
        )
        .unwrap();
        Command::new("/usr/sbin/smbd")
            .arg("--foreground")
            .arg("--configfile")
            .arg(&conf)
            .arg("--log-basename")
            .arg(state.join("log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smbd is installed by scripts/test (Debian samba)")
    });
    let server = SmbdGroup(server);
    let smbclient = |commands: &str| {
        Command::new("timeout")
            .args(["60", "smbclient", &format!("//{}/rec", addr.ip()), "-p", &addr.port().to_string(), "-N"])
            .arg("--configfile")
            .arg(&conf)
            .arg("-c")
            .arg(commands)
            .current_dir(&state)
            .output()
            .expect("smbclient is installed by scripts/test")
    };
    let fetched = smbclient(
        "get recordings/call.wav fetched.wav; get index.html index.html; \
         get \"recordings/call #5.wav\" hash.wav; get recordings/evil%2ewav evil.bin",
    );
    assert!(fetched.status.success(), "smbclient: {}", String::from_utf8_lossy(&fetched.stderr));
    assert_eq!(std::fs::read(state.join("hash.wav")).unwrap().len(), 600);
    assert_eq!(std::fs::read(state.join("fetched.wav")).unwrap().len(), 600);
    // Refused: the guest (nobody) may not read a 0600 file of root's.
    let refused = smbclient("get recordings/locked.wav locked.wav");
    assert!(String::from_utf8_lossy(&refused.stdout).contains("NT_STATUS_ACCESS_DENIED"), "{refused:?}");
    let reads = |text: &str| text.lines().filter(|l| l.contains("|pread_recv|ok|")).count();
    let deadline = Instant::now() + Duration::from_secs(60);
    while reads(&std::fs::read_to_string(&audit_log).unwrap_or_default()) < 4 {
        assert!(Instant::now() < deadline, "smbd never logged the four reads");
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(server);
    let log_text = std::fs::read_to_string(&audit_log).unwrap();

    // The share's root on the server is what Samba logs: the sensitive prefix is the
    // recordings directory there.
    let source = "format = \"samba_full_audit\"\nsamba_prefix = \"%u|%I|%m|%S\"";
    let config = dir.join("smb.toml");
    std::fs::write(
        &config,
        format!(
            "[store]\npath = \"state-smb\"\n[sensitive]\nprefixes = [\"{www}/recordings/\"]\nextensions = [\"wav\"]\n\
             [networks]\ninternal = [\"10.0.0.0/8\"]\n[[source]]\nname = \"smb\"\npath = \"{log}\"\n{source}\n",
            www = www.display(),
            log = audit_log.display(),
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .arg("replay")
        .arg("--config")
        .arg(&config)
        .args(["--no-progress", "--report", "json"])
        .arg(&audit_log)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut rules: Vec<(String, String)> = report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["rule"].as_str().unwrap().to_string(), a["client"].as_str().unwrap_or("").to_string()))
        .collect();
    rules.sort();
    let want: Vec<(String, String)> = ["unauthenticated-exposure", "unknown-client-fetch"]
        .map(|rule| (rule.to_string(), "127.0.0.1".to_string()))
        .to_vec();
    assert_eq!(rules, want, "full_audit log:\n{log_text}\nreport: {report}");
    // Every line was read: the records of other operations (connect, the opens of a path
    // lookup) are lines recording no access, none is unparsed; the refused open of
    // locked.wav is one more request for a recording.
    let skipped = report["skipped"].as_object().unwrap();
    for (reason, count) in skipped {
        assert!(reason == "no_access" || count == 0, "{reason}: {count}\n{log_text}");
    }
    assert!(skipped["no_access"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["lines"].as_u64(), Some(log_text.lines().count() as u64), "{report}");
    assert!(report["inputs"][0].get("warning").is_none(), "{report}");
    assert!(log_text.contains("|create_file|fail ("), "{log_text}");
    assert!(report["recording_requests"].as_u64().unwrap() >= 3, "{report}");
    // The recordings the guest took, by the names the share gives them (case-folded, as the
    // default `case_insensitive` compares them).
    let guest = report["clients"].as_array().unwrap().iter().find(|c| c["client"] == "127.0.0.1").unwrap();
    let mut taken: Vec<&str> =
        guest["call_list"].as_array().unwrap().iter().map(|c| c["call"].as_str().unwrap()).collect();
    taken.sort();
    let recordings = www.join("recordings").display().to_string().to_lowercase();
    assert_eq!(taken, [format!("{recordings}/call #5.wav"), format!("{recordings}/call.wav")], "{report}");

    let sample =
        Command::new(env!("CARGO_BIN_EXE_recwatch")).arg("check").arg("--sample").arg(&audit_log).output().unwrap();
    let text = String::from_utf8_lossy(&sample.stdout);
    assert!(sample.status.success() && text.ends_with(&format!("{source}\n")), "{text}");
}

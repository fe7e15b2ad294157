//! The service as systemd runs it: the shipped unit passes `systemd-analyze verify` and
//! `security` (exposure ≤ 1.5), the daemon speaks the sd_notify protocol (READY, WATCHDOG,
//! STOPPING) on a real datagram socket, and an unprivileged user in group adm can read
//! 0640 root:adm logs (Debian's nginx/Apache layout).

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn unit_with_binary(dir: &Path) -> std::path::PathBuf {
    let unit = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/recwatch.service")).unwrap();
    let unit = unit.replace("/usr/bin/recwatch", env!("CARGO_BIN_EXE_recwatch"));
    let path = dir.join("recwatch.service");
    std::fs::write(&path, unit).unwrap();
    path
}

#[test]
fn shipped_unit_verifies_and_its_exposure_is_at_most_1_5() {
    let dir = tempfile::tempdir().unwrap();
    let unit = unit_with_binary(dir.path());
    let verify = Command::new("systemd-analyze").arg("verify").arg(&unit).output().unwrap();
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.trim().is_empty(), "verify: {complaints}");
    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=15"])
        .arg(&unit)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "{text}");
    let level: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for recwatch.service: ").map(|(_, r)| r.to_string()))
        .and_then(|r| r.split_whitespace().next().map(str::to_string))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in: {text}"));
    assert!(level <= 1.5, "exposure {level}");
}

#[test]
fn sd_notify_says_ready_pings_the_watchdog_and_says_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    std::fs::write(dir.path().join("access.log"), "").unwrap();
    let config = format!(
        "[store]\npath = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[source]]\npath = \"{}\"\n",
        dir.path().join("access.log").display()
    );
    std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
    // As systemd does: WATCHDOG_PID names the service's own pid (`exec` keeps the shell's).
    let child = Command::new("sh")
        .arg("-c")
        .arg("WATCHDOG_PID=$$ exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_recwatch"))
        .arg(dir.path().join("recwatch.toml"))
        .env("NOTIFY_SOCKET", &socket_path)
        .env("WATCHDOG_USEC", "200000")
        .env("RECWATCH_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    struct KillOnDrop(std::process::Child);
    impl Drop for KillOnDrop {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = KillOnDrop(child);
    let mut seen: Vec<String> = Vec::new();
    let mut buf = [0u8; 512];
    let mut receive_until = |seen: &mut Vec<String>, done: &dyn Fn(&[String]) -> bool, what: &str| {
        let start = Instant::now();
        while !done(seen) {
            assert!(start.elapsed() < Duration::from_secs(20), "no {what}; got {seen:?}");
            if let Ok(n) = socket.recv(&mut buf) {
                seen.extend(String::from_utf8_lossy(&buf[..n]).lines().map(str::to_string));
            }
        }
    };
    receive_until(&mut seen, &|s| s.iter().any(|m| m == "READY=1"), "READY=1");
    receive_until(&mut seen, &|s| s.iter().filter(|m| *m == "WATCHDOG=1").count() >= 3, "three WATCHDOG=1");
    Command::new("kill").args(["-TERM", &child.0.id().to_string()]).status().unwrap();
    receive_until(&mut seen, &|s| s.iter().any(|m| m == "STOPPING=1"), "STOPPING=1");
    assert!(child.0.wait().unwrap().success());
    let ready = seen.iter().position(|m| m == "READY=1").unwrap();
    let first_ping = seen.iter().position(|m| m == "WATCHDOG=1").unwrap();
    assert!(ready < first_ping, "READY comes before the first ping: {seen:?}");
}

#[test]
fn an_unprivileged_user_in_group_adm_reads_0640_root_adm_logs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(
        &log,
        "203.0.113.9 - - [18/Feb/2019:10:00:01 +0100] \"GET /recordings/a.wav HTTP/1.1\" 200 5 \"-\" \"x\"\n",
    )
    .unwrap();
    assert!(Command::new("chown").args(["root:adm"]).arg(&log).status().unwrap().success());
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o640)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/reference.toml");
    let as_nobody = |groups: &str| {
        Command::new("setpriv")
            .args(["--reuid=nobody", "--regid=nogroup", &format!("--groups={groups}"), "--"])
            .arg(env!("CARGO_BIN_EXE_recwatch"))
            .args(["replay", "--config"])
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .arg(&log)
            .output()
            .unwrap()
    };
    let with_adm = as_nobody("adm");
    assert!(with_adm.status.success(), "{}", String::from_utf8_lossy(&with_adm.stderr));
    let report: serde_json::Value = serde_json::from_slice(&with_adm.stdout).unwrap();
    assert_eq!(report["alerts"][0]["client"], "203.0.113.9");
    let without = as_nobody("nogroup");
    assert_eq!(without.status.code(), Some(2), "nothing readable without adm");
    assert!(String::from_utf8_lossy(&without.stderr).contains("Permission denied"));
}

#[test]
fn install_script_puts_every_file_in_place_and_keeps_an_edited_config() {
    let root = tempfile::tempdir().unwrap();
    let install = || {
        let out = Command::new("bash")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/install"))
            .env("DESTDIR", root.path())
            .env("RECWATCH_BINARY", env!("CARGO_BIN_EXE_recwatch"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    };
    install();
    for (path, mode) in [
        ("usr/bin/recwatch", 0o755),
        ("lib/systemd/system/recwatch.service", 0o644),
        ("etc/recwatch/recwatch.toml", 0o644),
        ("usr/share/recwatch/examples/reference.toml", 0o644),
        ("usr/share/doc/recwatch/README.md", 0o644),
        ("usr/lib/sysusers.d/recwatch.conf", 0o644),
        ("usr/share/man/man1/recwatch.1.gz", 0o644),
        ("usr/share/man/man1/recwatch-run.1.gz", 0o644),
        ("usr/share/man/man1/recwatch-alerts-list.1.gz", 0o644),
    ] {
        let meta = std::fs::metadata(root.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{path}");
    }
    // the service account exists in the staging root, in group adm
    let passwd = std::fs::read_to_string(root.path().join("etc/passwd")).unwrap();
    assert!(passwd.lines().any(|l| l.starts_with("recwatch:") && l.ends_with(":/var/lib/recwatch:/usr/sbin/nologin")));
    let group = std::fs::read_to_string(root.path().join("etc/group")).unwrap();
    let adm = group.lines().find(|l| l.starts_with("adm:")).expect("group adm");
    assert!(adm.rsplit(':').next().unwrap().split(',').any(|m| m == "recwatch"), "{adm}");
    // the installed binary accepts the installed config
    let check = Command::new(root.path().join("usr/bin/recwatch"))
        .args(["check", "--config"])
        .arg(root.path().join("etc/recwatch/recwatch.toml"))
        .output()
        .unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let config = root.path().join("etc/recwatch/recwatch.toml");
    std::fs::write(&config, "# edited by the operator\n").unwrap();
    install();
    assert_eq!(std::fs::read_to_string(&config).unwrap(), "# edited by the operator\n");
}

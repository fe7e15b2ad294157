//! Opening the store: a lock is not corruption, a permission is not corruption, and a command
//! that only reads never writes. Real `recwatch` processes on real state directories; root
//! for the test that runs the daemon as another user (`nobody`, via setpriv).

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod common;
use common::{wait_until, Daemon};

const TOKEN: &str = "store-open-token-0123456789";
const R1: &str = "[[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"critical\"\nstatus = [200, 206]\nclient_kind = [\"unknown\"]\n";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        // readable by the unprivileged daemon of the ownership test
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("token"), TOKEN).unwrap();
        let config = format!(
            "[store]\npath = \"state\"\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\n[[source]]\nname = \"web\"\npath = \"{}\"\n{R1}",
            dir.path().join("access.log").display()
        );
        std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
        let env = Env { dir };
        env.append(&fetch_line("203.0.113.9", "/recordings/a.wav"));
        env
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn append(&self, text: &str) {
        let mut f = std::fs::OpenOptions::new().create(true).append(true).open(self.path("access.log")).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    fn start(&self) -> Daemon {
        let d = Daemon::spawn(&self.path("recwatch.toml"), Some(TOKEN));
        d.wait_ready();
        d
    }

    /// `recwatch ARGS --config …`, with an optional prefix (e.g. setpriv) and umask.
    fn cli(&self, args: &[&str], umask: Option<&str>) -> Output {
        let mut line = format!("{} {}", env!("CARGO_BIN_EXE_recwatch"), args.join(" "));
        line += &format!(" --config {}", self.path("recwatch.toml").display());
        if let Some(mask) = umask {
            line = format!("umask {mask} && {line}");
        }
        Command::new("sh").args(["-c", &line]).env("RECWATCH_LOG", "warn").output().unwrap()
    }
}

fn fetch_line(client: &str, path: &str) -> String {
    format!("{client} - - [18/Feb/2019:10:00:01 +0100] \"GET {path} HTTP/1.1\" 200 4096 \"-\" \"curl/8\"\n")
}

/// Every file under `dir` with its bytes, owner and mode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (Vec<u8>, u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p.clone());
                out.insert(p, (Vec::new(), meta.uid(), meta.mode()));
            } else {
                out.insert(p.clone(), (std::fs::read(&p).unwrap(), meta.uid(), meta.mode()));
            }
        }
    }
    out
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_second_instance_exits_at_once_naming_the_holder_and_leaves_the_store_byte_identical() {
    let env = Env::new();
    let d = env.start();
    d.wait_metric("recwatch_alerts_total", "", 1.0);
    // Quiet once the outbox marker of the alert is gone (no receiver: the dispatcher drops it
    // right after the write, racing the metric): nothing more to read, so nothing is written.
    let mut last = snapshot(&env.path("state"));
    let before = wait_until("the store to stop changing", Duration::from_secs(30), || {
        let now = snapshot(&env.path("state"));
        let settled = now == last;
        last = now;
        settled.then(|| last.clone())
    });
    let second = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["run", "--listen", "127.0.0.1:0", "--config"])
        .arg(env.path("recwatch.toml"))
        .env("RECWATCH_LOG", "warn")
        .output()
        .unwrap();
    assert!(!second.status.success());
    let pid = d.pid();
    let expected = format!("another recwatch (pid {pid}) holds the store at {}", env.path("state/db").display());
    assert!(stderr(&second).contains(&expected), "{}", stderr(&second));
    assert_eq!(snapshot(&env.path("state")), before, "the second instance touched the store");
    assert!(
        !std::fs::read_dir(env.path("state")).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .contains("corrupt")),
        "nothing quarantined"
    );
    assert_eq!(d.alerts().len(), 1, "the first daemon still serves its store");
    assert!(d.terminate().success());
}

#[test]
fn a_read_only_command_on_a_zeroed_store_fails_and_leaves_the_files_as_they_were() {
    let env = Env::new();
    let d = env.start();
    d.wait_metric("recwatch_alerts_total", "", 1.0);
    assert!(d.terminate().success());
    for entry in snapshot(&env.path("state/db")).keys() {
        if entry.is_file() && !entry.ends_with("recwatch.lock") {
            let len = std::fs::metadata(entry).unwrap().len().max(512) as usize;
            std::fs::write(entry, vec![0u8; len]).unwrap();
        }
    }
    let before = snapshot(&env.path("state"));
    for args in [&["alerts", "list"][..], &["alerts", "show", "0123456789abcdef"][..]] {
        let out = env.cli(args, None);
        assert!(!out.status.success(), "{args:?} on a zeroed store succeeded");
        assert!(stderr(&out).contains("is unreadable"), "{args:?}: {}", stderr(&out));
        assert_eq!(snapshot(&env.path("state")), before, "{args:?} wrote to the damaged store");
    }
}

#[test]
fn root_with_umask_077_on_the_services_store_then_a_service_start_quarantines_nothing() {
    let env = Env::new();
    if !Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0\n") {
        panic!("this test needs root (it runs the daemon as nobody)");
    }
    // the state directory belongs to the service user, as systemd's StateDirectory= makes it
    std::fs::create_dir_all(env.path("state")).unwrap();
    std::os::unix::fs::chown(env.path("state"), Some(65534), Some(65534)).unwrap();
    let as_nobody = || {
        let mut command = Command::new("setpriv");
        command
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                env!("CARGO_BIN_EXE_recwatch"),
                "run",
                "--config",
            ])
            .arg(env.path("recwatch.toml"))
            .env("RECWATCH_LOG", "warn");
        let d = Daemon::start(command, Some(TOKEN));
        wait_until("/readyz of the daemon running as nobody", Duration::from_secs(60), || {
            (d.get("/readyz").map(|(s, _)| s) == Some(200)).then_some(())
        });
        d
    };
    let d = as_nobody();
    d.wait_metric("recwatch_alerts_total", "", 1.0);
    let id = d.alerts()[0]["id"].as_str().unwrap().to_string();
    assert!(d.terminate().success());

    // root, umask 077, service stopped: refused, and no root-owned file appears in the store
    let before = snapshot(&env.path("state"));
    let out = env.cli(&["alerts", "resolve", &id], Some("077"));
    assert!(!out.status.success(), "root wrote the service's store");
    assert!(stderr(&out).contains("belongs to nobody (uid 65534)"), "{}", stderr(&out));
    assert_eq!(snapshot(&env.path("state")), before);
    // reading needs no write access: root may list
    let out = env.cli(&["alerts", "list", "--json"], Some("077"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(snapshot(&env.path("state")), before);

    // the service starts cleanly; while it runs, root's resolve goes through its API
    let d = as_nobody();
    assert_eq!(d.metric("recwatch_store_quarantines_total", ""), Some(0.0));
    let out = env.cli(&["alerts", "resolve", &id], Some("077"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(d.alerts()[0]["status"], "resolved");
    assert!(d.terminate().success());

    // and again after a restart: nothing quarantined, the resolution kept
    let d = as_nobody();
    assert_eq!(d.metric("recwatch_store_quarantines_total", ""), Some(0.0));
    assert_eq!(d.alerts()[0]["status"], "resolved");
    assert!(d.terminate().success());
}

/// `recwatch alerts list` by a user who may not enter the state directory used to list an
/// empty store (the store looked missing) instead of saying it cannot be read.
#[test]
fn a_store_the_user_cannot_reach_is_an_error_not_an_empty_list() {
    if !Command::new("id").arg("-u").output().unwrap().stdout.starts_with(b"0\n") {
        panic!("this test needs root (it runs the CLI as nobody)");
    }
    let env = Env::new();
    let d = env.start();
    d.wait_metric("recwatch_alerts_total", "", 1.0);
    assert!(d.terminate().success());
    std::fs::set_permissions(env.path("state"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let before = snapshot(&env.path("state"));
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_recwatch"), "alerts", "list"])
        .arg("--config")
        .arg(env.path("recwatch.toml"))
        .env("RECWATCH_LOG", "warn")
        .output()
        .unwrap();
    assert!(!out.status.success(), "listed: {}", String::from_utf8_lossy(&out.stdout));
    assert!(stderr(&out).to_lowercase().contains("permission denied"), "{}", stderr(&out));
    assert_eq!(snapshot(&env.path("state")), before);
}

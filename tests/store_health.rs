//! Health that tells the truth: a stuck store makes `/readyz` answer 503 with the reason
//! within its deadline; a full state disk makes it 503 ("store failed") and, once space
//! returns, the daemon reopens its store in-process and ends with the alerts of a clean replay.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use recwatch::http::{serve_with, HttpState, Limits, Readiness};
use recwatch::store::{Store, STALL_AFTER};
use serde_json::Value;

mod common;
use common::{wait_until, Daemon};

const TOKEN: &str = "store-health-token-0123456789";

#[test]
fn a_stalled_store_makes_readyz_503_with_the_reason_within_its_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("db")).unwrap();
    let ready = Arc::new(Readiness::default());
    ready.set_started(true);
    let state = HttpState {
        store: store.clone(),
        telemetry: Arc::new(recwatch::telemetry::Telemetry::default()),
        api_token: None,
        ready: ready.clone(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0")).unwrap();
    let url = format!("http://{}/readyz", listener.local_addr().unwrap());
    runtime.spawn(serve_with(listener, state, Limits::default(), std::future::pending()));
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    let readyz = || {
        let r = client.get(&url).send().unwrap();
        (r.status().as_u16(), r.text().unwrap())
    };
    assert_eq!(readyz(), (200, "ready\n".to_string()));

    // the owner thread held for longer than the stall deadline
    let held = store.clone();
    let stall = STALL_AFTER + Duration::from_secs(5);
    let pause = std::thread::spawn(move || held.pause(stall));
    let (status, body) =
        wait_until("/readyz to report the stalled store", STALL_AFTER + Duration::from_secs(4), || {
            Some(readyz()).filter(|(s, _)| *s == 503)
        });
    assert_eq!(status, 503);
    assert!(body.starts_with("not ready: store stalled: pause has been running for"), "{body}");
    pause.join().unwrap().unwrap();
    wait_until("/readyz ready again once the store answers", Duration::from_secs(10), || {
        Some(readyz()).filter(|(s, _)| *s == 200)
    });
    ready.set_draining();
    assert_eq!(readyz(), (503, "not ready: draining: the daemon is stopping\n".to_string()));
}

fn fetch_line(i: u32) -> String {
    let padding = "x".repeat(400);
    format!(
        "198.51.{}.{} - - [18/Feb/2019:10:00:01 +0100] \"GET /recordings/{i}.wav HTTP/1.1\" 200 4096 \"-\" \"{padding}\"\n",
        i / 250,
        i % 250
    )
}

fn alert_counts(alerts: &[Value]) -> BTreeMap<(String, String), u64> {
    alerts
        .iter()
        .map(|a| {
            (
                (a["rule"].as_str().unwrap().to_string(), a["client"].as_str().unwrap().to_string()),
                a["requests"].as_u64().unwrap(),
            )
        })
        .collect()
}

struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn a_full_state_disk_makes_readyz_503_and_the_store_is_reopened_in_process_when_space_returns() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let config = format!(
        "[store]\npath = \"state\"\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\n[[source]]\nname = \"web\"\npath = \"{}\"\n[[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"critical\"\nstatus = [200, 206]\nclient_kind = [\"unknown\"]\n",
        dir.path().join("access.log").display()
    );
    std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", "size=3m", "tmpfs"]).arg(&state).status().unwrap();
    assert!(mounted.success(), "this test needs root to mount a small tmpfs as the state directory");
    let _unmount = Unmount(state.clone());
    std::fs::write(dir.path().join("access.log"), "").unwrap();
    let d = Daemon::spawn(&dir.path().join("recwatch.toml"), Some(TOKEN));
    d.wait_ready();

    // fill the state disk, then make the daemon write alerts
    let filler = state.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 65536]).is_ok() {}
    drop(f);
    let lines: String = (0..300).map(fetch_line).collect();
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("access.log"))
        .unwrap()
        .write_all(lines.as_bytes())
        .unwrap();
    d.wait_metric("recwatch_store_errors_total", "", 1.0);
    let body = wait_until("/readyz to say the store failed", Duration::from_secs(60), || {
        d.get("/readyz").filter(|(s, b)| *s == 503 && b.contains("store failed")).map(|(_, b)| b)
    });
    assert!(body.contains("No space left on device"), "{body}");

    // space comes back: the same process recovers, without a restart
    std::fs::remove_file(&filler).unwrap();
    d.wait_ready();
    wait_until("all 300 alerts after the disk freed", Duration::from_secs(60), || {
        (d.alerts().len() == 300).then_some(())
    });
    let live = alert_counts(&d.alerts());
    assert_eq!(d.metric("recwatch_store_quarantines_total", ""), Some(0.0));
    assert!(d.terminate().success());

    // nothing lost: the alerts equal a clean replay of the same lines
    std::fs::write(dir.path().join("full.log"), &lines).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["replay", "--no-progress", "--config"])
        .arg(dir.path().join("recwatch.toml"))
        .arg("--state-dir")
        .arg(dir.path().join("clean-state"))
        .arg(dir.path().join("full.log"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let clean: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(live, alert_counts(clean["alerts"].as_array().unwrap()));
}

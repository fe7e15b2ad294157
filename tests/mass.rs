//! A mass fetch against the live daemon (issue 13): distinct unknown clients, each fetching one
//! recording (a scraped exposure). Once the per-worker cap on tracked clients is reached, the
//! daemon's memory must not grow with more clients: every client's alert and evidence live in
//! the store. Measured as a slope between two points (resident memory after 50 k and after
//! 100 k clients), never as a time.

use std::io::Write;
use std::time::Duration;

mod common;
use common::{wait_until, webhook_sink, Daemon};
use serde_json::Value;

const TOKEN: &str = "mass-token-0123456789abcdef";

/// Resident memory of `pid` in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// A distinct address outside the internal networks (2001:db8::/32, documentation).
fn client(i: u64) -> String {
    format!("2001:db8:{:x}:{:x}::{:x}", i >> 32 & 0xffff, i >> 16 & 0xffff, i & 0xffff)
}

#[test]
fn memory_does_not_grow_with_clients_once_the_caps_are_reached() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(&log, "").unwrap();
    // Default rules; a small cap so it is reached early in a test.
    let config = format!(
        "[store]\npath = \"state\"\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\n[engine]\nworkers = 2\nmax_clients_per_worker = 2000\n[[source]]\nname = \"web\"\npath = \"{}\"\n",
        log.display()
    );
    std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
    let d = Daemon::spawn(&dir.path().join("recwatch.toml"), Some(TOKEN));
    d.wait_ready();
    let mut file = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    let mut written = 0u64;
    let mut rss = Vec::new();
    for _ in 0..4 {
        let mut chunk = String::new();
        for i in written..written + 25_000 {
            chunk += &format!(
                "{} - - [29/Nov/2026:22:00:00 +0000] \"GET /recordings/call-{i}.wav HTTP/1.1\" 200 65536 \"-\" \"scraper/1\"\n",
                client(i)
            );
        }
        file.write_all(chunk.as_bytes()).unwrap();
        written += 25_000;
        wait_until("every client read and made durable", Duration::from_secs(600), || {
            let m = d.scrape()?;
            let done = m.metric("recwatch_lines_read_total", "")? >= written as f64
                && m.metric("recwatch_source_lag_bytes", "")? == 0.0
                && d.get("/readyz").is_some_and(|(status, _)| status == 200);
            done.then_some(())
        });
        rss.push(rss_kib(d.pid()));
    }
    let tracked = d.metric("recwatch_clients_tracked", "").unwrap();
    assert!(tracked <= 2.0 * 2000.0 + 512.0, "the cap holds: {tracked} tracked");
    assert!(d.metric("recwatch_clients_evicted_total", "").unwrap() >= 90_000.0, "clients over the cap are evicted");
    // The slope between 50 k and 100 k clients: under 40 bytes per client (it was ~2 KiB per
    // client before the caps and the store held the state).
    let (at_50k, at_100k) = (rss[1], rss[3]);
    let per_client = (at_100k.saturating_sub(at_50k) * 1024) as f64 / 50_000.0;
    assert!(per_client < 40.0, "memory grew {per_client:.0} bytes per client from 50 k to 100 k clients: {rss:?} KiB");
    assert!(d.terminate().success());
    // Every client is in the store: its alert, and its fetch in the evidence ledger.
    let store = recwatch::store::Store::open_state_dir_read_only(&dir.path().join("state")).unwrap();
    assert_eq!(store.len(), 100_001, "one R1 alert per client and one R3 for the source");
    let ledger = store.ledger_entries(None, 0).unwrap();
    assert_eq!(ledger.len(), 100_000);
    assert!(ledger.iter().all(|e| e.requests == 1 && e.bytes == 65536));
}

/// Storm-proof paging: 60 unknown clients fetch a recording each. With `rollup_after = 5`, the
/// receiver gets the first 5 R1 alerts one by one and then ONE roll-up alert for (R1, source),
/// updated as it grows, instead of 55 more; every individual alert is still stored and listed.
#[test]
fn a_mass_fetch_pages_one_rollup_alert_instead_of_one_per_client() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("hook.key"), "mass-webhook-secret-0123456789").unwrap();
    let (port, bodies) = webhook_sink();
    let mut text = String::new();
    for i in 0..60u64 {
        text += &format!(
            "{} - - [29/Nov/2026:22:00:{:02} +0000] \"GET /recordings/call-{i}.wav HTTP/1.1\" 200 1000 \"-\" \"scraper/1\"\n",
            client(i),
            i % 60
        );
    }
    std::fs::write(&log, text).unwrap();
    let config = format!(
        "[store]\npath = \"state\"\nrollup_after = 5\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\n[[source]]\nname = \"web\"\npath = \"{}\"\n[[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{port}/hook\"\nsecret_file = \"hook.key\"\nresend_secs = 1\n",
        log.display()
    );
    std::fs::write(dir.path().join("recwatch.toml"), config).unwrap();
    let d = Daemon::spawn(&dir.path().join("recwatch.toml"), Some(TOKEN));
    d.wait_ready();
    // Told: 5 R1 alerts, the R3 alert, and the roll-up once it has all 55 others.
    let told = wait_until("the roll-up of 55 clients to reach the receiver", Duration::from_secs(120), || {
        let alerts: Vec<Value> = bodies
            .lock()
            .unwrap()
            .iter()
            .filter_map(|b| serde_json::from_str::<Value>(b).ok())
            .map(|b| b["alert"].clone())
            .collect();
        alerts
            .iter()
            .any(|a| a["rule"] == "unknown-client-fetch-rollup" && a["distinct_resources"] == 55 && a["requests"] == 55)
            .then_some(alerts)
    });
    let ids = |pred: &dyn Fn(&Value) -> bool| {
        told.iter()
            .filter(|a| pred(a))
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect::<std::collections::BTreeSet<_>>()
    };
    let individual = ids(&|a: &Value| a["rule"] == "unknown-client-fetch");
    let rollups = ids(&|a: &Value| a["rule"] == "unknown-client-fetch-rollup");
    assert_eq!(individual.len(), 5, "only the first 5 R1 alerts are paged one by one: {individual:?}");
    assert_eq!(rollups.len(), 1, "one roll-up for (R1, web): {rollups:?}");
    let rollup = told.iter().rev().find(|a| a["rule"] == "unknown-client-fetch-rollup").unwrap();
    assert_eq!(rollup["client"], "55 clients");
    assert_eq!(rollup["sample"].as_array().unwrap().len(), 20, "the top clients: {rollup}");
    // Every individual alert is still stored and listed: 60 R1, R3, and the roll-up.
    let listed = d.alerts();
    let r1 = listed.iter().filter(|a| a["rule"] == "unknown-client-fetch").count();
    assert_eq!(r1, 60);
    assert!(listed.iter().any(|a| a["rule"] == "unknown-client-fetch-rollup"));
    assert!(d.terminate().success());
}

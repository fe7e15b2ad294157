//! SIGHUP swaps only what changed: an unchanged config restarts nothing and reads nothing
//! again; a changed receiver restarts the notifier only (sources keep their place); a changed
//! rule is swapped into the running pipeline: the lines after the reload are judged by it,
//! none before it, none twice. A real `recwatch run`, observed through its metrics and API.
//! The windowed rule makes a rebuild re-read from its rewind point (60 s of event time back:
//! every line here), so a restart that should not happen shows in the line count.

use std::io::Write;
use std::process::Command;
use std::time::Duration;

mod common;
use common::{wait_until, webhook_sink, Daemon};

const TOKEN: &str = "reload-token-0123456789abcdef";

fn fetch_line(client: &str) -> String {
    format!("{client} - - [18/Feb/2019:10:00:01 +0100] \"GET /recordings/a.wav HTTP/1.1\" 200 4096 \"-\" \"curl/8\"\n")
}

/// 200 clients fetch before a test looks for one client's page: every alert is paged by
/// itself (`rollup_after = 0`), not rolled up into a storm's one page.
fn config(log: &std::path::Path, severity: &str, receiver: &str) -> String {
    format!(
        "[store]\npath = \"state\"\nrollup_after = 0\n[networks]\ninternal = [\"10.0.0.0/8\"]\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\n[[source]]\nname = \"web\"\npath = \"{}\"\n[[rule]]\nid = \"R1\"\nname = \"unknown-client-fetch\"\nseverity = \"{severity}\"\nstatus = [200, 206]\nclient_kind = [\"unknown\"]\n[[rule]]\nid = \"R2\"\nname = \"enumeration\"\nseverity = \"critical\"\naggregate = \"distinct\"\nwindow_secs = 60\nthreshold = 1000\n{receiver}",
        log.display()
    )
}

#[test]
fn sighup_restarts_only_what_changed_and_reads_nothing_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    std::fs::write(dir.path().join("hmac.key"), "reload-hmac-key-0123456789").unwrap();
    let log = dir.path().join("access.log");
    let file = dir.path().join("recwatch.toml");
    let lines: String = (0..200).map(|i| fetch_line(&format!("198.51.100.{}", i % 250))).collect();
    std::fs::write(&log, lines).unwrap();
    std::fs::write(&file, config(&log, "critical", "")).unwrap();
    let d = Daemon::spawn(&file, Some(TOKEN));
    d.wait_ready();
    d.wait_metric("recwatch_lines_read_total", "", 200.0);
    let pid = d.pid().to_string();
    let hup = |reloads: f64| {
        assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
        d.wait_metric("recwatch_config_reloads_total", "", reloads);
    };
    let append =
        |text: &str| std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(text.as_bytes()).unwrap();

    // unchanged: nothing restarts, nothing is read again, reading goes on
    hup(1.0);
    append(&fetch_line("203.0.113.1"));
    d.wait_metric("recwatch_lines_read_total", "", 201.0);
    assert_eq!(d.metric("recwatch_lines_read_total", ""), Some(201.0), "a reload of an unchanged config re-read lines");

    // a receiver added: the notifier starts with it, the sources keep their place
    let (sink_port, bodies) = webhook_sink();
    let receiver = format!(
        "[[receiver]]\nname = \"hook\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{sink_port}/hook\"\nsecret_file = \"hmac.key\"\n"
    );
    std::fs::write(&file, config(&log, "critical", &receiver)).unwrap();
    hup(2.0);
    append(&fetch_line("203.0.113.2"));
    d.wait_metric("recwatch_lines_read_total", "", 202.0);
    wait_until("the added receiver to be told", Duration::from_secs(60), || {
        bodies.lock().unwrap().iter().any(|b| b.contains("203.0.113.2")).then_some(())
    });
    assert_eq!(d.metric("recwatch_lines_read_total", ""), Some(202.0), "a receiver change re-read lines");

    // a rule changed: swapped into the running pipeline, nothing read again
    std::fs::write(&file, config(&log, "warning", &receiver)).unwrap();
    hup(3.0);
    append(&fetch_line("203.0.113.3"));
    d.wait_metric("recwatch_lines_read_total", "", 203.0);
    let alert = wait_until("the alert under the changed rule", Duration::from_secs(60), || {
        let (status, body) = d.get("/api/v1/alerts?client=203.0.113.3")?;
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
        (status == 200).then(|| alerts.into_iter().next()).flatten()
    });
    assert_eq!(alert["severity"], "warning");
    assert_eq!(d.metric("recwatch_lines_read_total", ""), Some(203.0), "a rule change re-read lines");
    assert!(d.terminate().success());
}

fn missing_line(client: &str) -> String {
    format!(
        "{client} - - [18/Feb/2019:10:00:01 +0100] \"GET /recordings/gone.wav HTTP/1.1\" 404 153 \"-\" \"curl/8\"\n"
    )
}

/// The one alert of `rule` for `client` once its request count reaches `at_least`.
fn alert_of(d: &Daemon, rule: &str, client: &str, at_least: u64) -> serde_json::Value {
    wait_until(&format!("{rule} for {client} at {at_least} requests"), Duration::from_secs(60), || {
        let (status, body) = d.get(&format!("/api/v1/alerts?client={client}"))?;
        let alerts: Vec<serde_json::Value> = serde_json::from_str(&body).ok()?;
        let mine: Vec<_> = alerts.into_iter().filter(|a| a["rule_id"] == rule).collect();
        assert!(mine.len() <= 1, "{rule} for {client} opened twice: {mine:?}");
        (status == 200).then(|| mine.into_iter().next()).flatten().filter(|a| a["requests"].as_u64() >= Some(at_least))
    })
}

/// A rule added by SIGHUP judges exactly the lines read after the reload: the 404s before it
/// raise nothing under it, the 404s after it are counted once each; R1's open alert goes on
/// counting across the reload without counting a line twice (its rule counts the same
/// events, so its episode is kept). A rebuild would re-read the 60 s rewind and count the
/// earlier 404s too.
#[test]
fn a_rule_added_by_sighup_judges_the_next_lines_only_and_reads_none_twice() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), TOKEN).unwrap();
    let log = dir.path().join("access.log");
    let file = dir.path().join("recwatch.toml");
    let before: String =
        (0..100).map(|_| fetch_line("198.51.100.7")).chain((0..20).map(|_| missing_line("198.51.100.8"))).collect();
    std::fs::write(&log, before).unwrap();
    std::fs::write(&file, config(&log, "critical", "")).unwrap();
    let d = Daemon::spawn(&file, Some(TOKEN));
    d.wait_ready();
    d.wait_metric("recwatch_lines_read_total", "", 120.0);
    alert_of(&d, "R1", "198.51.100.7", 100);

    let r9 = "[[rule]]\nid = \"R9\"\nname = \"missing-recording\"\nseverity = \"info\"\nstatus = [404]\nclient_kind = [\"unknown\"]\n";
    std::fs::write(&file, config(&log, "critical", r9)).unwrap();
    d.signal("HUP");
    d.wait_metric("recwatch_config_reloads_total", "", 1.0);
    let after: String =
        (0..30).map(|_| fetch_line("198.51.100.7")).chain((0..5).map(|_| missing_line("198.51.100.8"))).collect();
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(after.as_bytes()).unwrap();
    d.wait_metric("recwatch_lines_read_total", "", 155.0);

    let r9_alert = alert_of(&d, "R9", "198.51.100.8", 5);
    let r1_alert = alert_of(&d, "R1", "198.51.100.7", 130);
    assert_eq!(r9_alert["requests"], 5, "R9 judged lines read before the reload");
    assert_eq!(r1_alert["requests"], 130, "R1 counted a line twice");
    assert_eq!(d.metric("recwatch_lines_read_total", ""), Some(155.0), "the reload re-read lines");
    assert!(d.terminate().success());
}

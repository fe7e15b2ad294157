//! No raw personnummer or phone number in any output (RELIABILITY row 30): `recwatch run` and
//! `recwatch replay` read logs whose recording paths and user agents hold personnummer,
//! samordningsnummer and phone numbers in several spellings; every output — API responses,
//! the store through `recwatch alerts list/show`, the replay report as JSON, CSV and Markdown,
//! the daemon's log, /metrics — is searched for the raw digits: none present, and the
//! pseudonyms that `recwatch pseudonym` prints for the same numbers are.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

mod common;
use common::{run_command, wait_until, Daemon};

const TOKEN: &str = "privacy-test-token-0123456789ab";

/// (spelling in a path, what must never appear in any output: the identifying digits).
/// 19121212-1212 is Skatteverket's test person, 701063-2391 its samordningsnummer example.
const PERSONAL: &[(&str, &str)] = &[
    ("19121212-1212", "1212121212"),
    ("121212-1212", "1212121212"),
    ("191212121212", "1212121212"),
    ("701063-2391", "7010632391"),
    ("0701234567", "701234567"),
    ("070-765 43 21", "765 43 21"),
    ("+46 8 123 456 78", "123 456 78"),
    ("0046317654321", "317654321"),
];

/// Digits that must survive: dates and call ids next to the personal numbers.
const KEPT: &[&str] = &["20190218-093000", "1550480401.123"];

/// The recording paths of the workload: one per spelling, plus two spellings of one person
/// in one more file each (distinct files, same pseudonym).
fn paths() -> Vec<String> {
    let mut out: Vec<String> = PERSONAL
        .iter()
        .map(|(token, _)| {
            format!("/recordings/2019/02/18/{}_20190218-093000_1550480401.123.wav", token.replace(' ', "%20"))
        })
        .collect();
    out.push("/recordings/pnr/19121212-1212/call.wav".into());
    out.push("/recordings/pnr/121212-1212/call.wav".into());
    out
}

fn log_text() -> String {
    let mut text = String::new();
    for (i, path) in paths().iter().enumerate() {
        text += &format!(
            "203.0.113.7 - - [18/Feb/2019:10:00:{i:02} +0100] \"GET {path} HTTP/1.1\" 200 4096 \"-\" \"recorder-fetch (+46701234567)\"\n"
        );
    }
    text
}

fn recwatch(args: &[&str], config: &Path) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch")).args(args).arg("--config").arg(config).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The pseudonym of each personal spelling under the key `config` (and `state_dir`) resolve to.
fn pseudonyms(config: &Path, state_dir: &Path) -> Vec<String> {
    let mut args = vec!["pseudonym", "--state-dir", state_dir.to_str().unwrap()];
    args.extend(PERSONAL.iter().map(|(t, _)| *t));
    let (ok, out, err) = recwatch(&args, config);
    assert!(ok, "{err}");
    let lines: Vec<String> = out.lines().map(str::to_string).collect();
    assert_eq!(lines.len(), PERSONAL.len(), "{out}");
    for (line, (token, _)) in lines.iter().zip(PERSONAL) {
        assert!(line.starts_with("pnr-") || line.starts_with("tel-"), "{token} -> {line}");
    }
    lines
}

/// Fails naming the output and the leaked digits.
fn assert_clean(what: &str, text: &str) {
    for (token, digits) in PERSONAL {
        assert!(!text.contains(token), "{what} contains {token:?}:\n{text}");
        assert!(!text.contains(digits), "{what} contains the digits {digits:?} of {token:?}:\n{text}");
    }
    assert!(!text.contains("46701234567"), "{what} contains the user agent's phone number:\n{text}");
}

fn assert_has_pseudonyms(what: &str, text: &str, expected: &[String]) {
    for p in expected {
        assert!(text.contains(p.as_str()), "{what} lacks the pseudonym {p}:\n{text}");
    }
    for kept in KEPT {
        assert!(text.contains(kept), "{what} lost {kept:?}, which is not personal:\n{text}");
    }
}

fn get(d: &Daemon, path: &str) -> (u16, String) {
    d.assert_alive();
    let r = ureq::get(&format!("{}{path}", d.base()))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .timeout(Duration::from_secs(5))
        .call();
    match r {
        Ok(r) => (r.status(), r.into_string().unwrap()),
        Err(ureq::Error::Status(code, r)) => (code, r.into_string().unwrap_or_default()),
        Err(e) => panic!("{path}: {e}"),
    }
}

fn post(d: &Daemon, path: &str) -> String {
    d.assert_alive();
    ureq::post(&format!("{}{path}", d.base()))
        .set("Authorization", &format!("Bearer {TOKEN}"))
        .timeout(Duration::from_secs(5))
        .call()
        .unwrap()
        .into_string()
        .unwrap()
}

#[test]
fn no_raw_personnummer_or_phone_number_in_any_output_of_run_or_replay() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), TOKEN).unwrap();
    std::fs::write(d.join("webhook.key"), "a-webhook-hmac-key-for-tests").unwrap();
    let (sink, payloads) = common::webhook_sink();
    let log = d.join("access.log");
    std::fs::write(&log, "").unwrap();
    // The daemon uses the key it creates in its state dir; replay one from the config.
    let daemon_config = d.join("daemon.toml");
    std::fs::write(
        &daemon_config,
        format!(
            "[store]\npath = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n[tail]\npoll_interval_ms = 50\n[[source]]\nname = \"web\"\npath = \"{}\"\n[[receiver]]\nname = \"soc\"\nkind = \"webhook\"\nurl = \"http://127.0.0.1:{sink}/hook\"\nsecret_file = \"webhook.key\"\n",
            log.display()
        ),
    )
    .unwrap();
    std::fs::write(d.join("replay.key"), "a replay key of more than sixteen bytes\n").unwrap();
    let replay_config = d.join("replay.toml");
    std::fs::write(
        &replay_config,
        "[store]\npath = \"replay-state\"\n[privacy]\npseudonym_key_file = \"replay.key\"\n",
    )
    .unwrap();

    // --- the daemon
    let mut command = run_command(&daemon_config);
    command.env("RECWATCH_LOG", "debug");
    let daemon = Daemon::start(command, Some(TOKEN));
    daemon.wait_ready();
    std::fs::OpenOptions::new().append(true).open(&log).unwrap().write_all(log_text().as_bytes()).unwrap();
    let distinct = paths().len() as u64;
    let alerts: Vec<Value> = wait_until("the alerts to count every file", Duration::from_secs(30), || {
        let (status, body) = get(&daemon, "/api/v1/alerts");
        let alerts: Vec<Value> = serde_json::from_str(&body).ok().filter(|_| status == 200)?;
        let r1 = alerts.iter().find(|a| a["rule"] == "unknown-client-fetch")?;
        (r1["distinct_resources"] == distinct).then_some(alerts)
    });
    let daemon_keys = pseudonyms(&daemon_config, &d.join("state"));
    let mut outputs: Vec<(String, String)> =
        vec![("GET /api/v1/alerts".into(), serde_json::to_string(&alerts).unwrap())];
    let r1 = alerts.iter().find(|a| a["rule"] == "unknown-client-fetch").unwrap();
    for a in &alerts {
        let id = a["id"].as_str().unwrap();
        outputs.push((format!("GET /api/v1/alerts/{id}"), get(&daemon, &format!("/api/v1/alerts/{id}")).1));
    }
    let r1_id = r1["id"].as_str().unwrap().to_string();
    outputs.push(("POST ack".into(), post(&daemon, &format!("/api/v1/alerts/{r1_id}/ack"))));
    // Webhook payloads: wait for the one telling of the ack (so every alert has been sent).
    let sent = wait_until("the webhook to hear of the ack", Duration::from_secs(30), || {
        let bodies = payloads.lock().unwrap().clone();
        bodies.iter().any(|b| b.contains(&r1_id) && b.contains("\"acked\"")).then_some(bodies)
    });
    outputs.push(("webhook payloads".into(), sent.join("\n")));
    outputs.push(("GET /metrics".into(), get(&daemon, "/metrics").1));
    assert!(daemon.terminate().success());
    outputs.push(("daemon stderr".into(), daemon.stderr()));

    // --- the store, through the terminal commands
    let (ok, list, err) = recwatch(&["alerts", "list", "--json"], &daemon_config);
    assert!(ok, "{err}");
    outputs.push(("recwatch alerts list --json".into(), list));
    let (ok, table, err) = recwatch(&["alerts", "list"], &daemon_config);
    assert!(ok, "{err}");
    assert_clean("recwatch alerts list", &table);
    let (ok, show, err) = recwatch(&["alerts", "show", &r1_id], &daemon_config);
    assert!(ok, "{err}");
    outputs.push(("recwatch alerts show".into(), show));
    for (what, text) in &outputs {
        assert_clean(what, text);
    }
    for (what, text) in
        outputs.iter().filter(|(w, _)| w.contains("alerts") || w.contains("ack") || w.contains("webhook"))
    {
        assert_has_pseudonyms(what, text, &daemon_keys);
    }
    // Distinct counting is over the raw paths: three spellings of one person are three files,
    // though their samples read the same (so do the two `/recordings/pnr/…/call.wav`).
    let r1 = alerts.iter().find(|a| a["rule"] == "unknown-client-fetch").unwrap();
    let sample: Vec<&str> = r1["sample"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    assert_eq!(sample.len() as u64, distinct - 3, "{sample:?}");

    // --- replay, with the configured key: each report format
    let mut reports = Vec::new();
    for format in ["json", "csv", "md"] {
        let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
            .args(["replay", "--no-progress", "--report", format, "--config"])
            .arg(&replay_config)
            .arg(&log)
            .env("RECWATCH_LOG", "debug")
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_clean(&format!("replay --report {format}"), &stdout);
        assert_clean(&format!("replay --report {format} stderr"), &String::from_utf8_lossy(&out.stderr));
        reports.push((format, stdout));
    }
    let replay_keys = pseudonyms(&replay_config, &d.join("unused"));
    assert_ne!(replay_keys, daemon_keys, "another key, other pseudonyms");
    for (format, text) in reports.iter().filter(|(f, _)| *f != "csv") {
        assert_has_pseudonyms(&format!("replay --report {format}"), text, &replay_keys);
    }
    let (ok, list, err) = recwatch(&["alerts", "list", "--json"], &replay_config);
    assert!(ok, "{err}");
    assert_clean("replay store", &list);
    assert_has_pseudonyms("replay store", &list, &replay_keys);
    assert!(!d.join("replay-state").join("pseudonym.key").exists(), "a configured key is used, none is created");
}

#[test]
fn pseudonym_command_needs_an_existing_key_and_never_creates_one() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("recwatch.toml");
    std::fs::write(&config, "[store]\npath = \"state\"\n").unwrap();
    let (ok, _, err) = recwatch(&["pseudonym", "19121212-1212"], &config);
    assert!(!ok && err.contains("no pseudonym key yet"), "{err}");
    assert!(!dir.path().join("state/pseudonym.key").exists());
    std::fs::write(dir.path().join("bad.toml"), "[privacy]\npseudonym_key_file = \"missing.key\"\n").unwrap();
    let (ok, _, err) = recwatch(&["check"], &dir.path().join("bad.toml"));
    assert!(!ok && err.contains("bad.toml:2: privacy.pseudonym_key_file: cannot read"), "{err}");
}

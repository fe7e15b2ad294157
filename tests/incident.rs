//! A generated incident (tests/support/incident.rs: unknown clients taking overlapping sets of
//! calls of 3–4 files over four days, partial transfers, rotated and gzipped logs) against its
//! ground truth: `recwatch replay --report json` counts per client and in total, in calls and in
//! files, exactly what the generator knows was taken; `--since/--until` counts one day exactly
//! as replaying that day's file alone does; and `recwatch report` over the store of a live
//! daemon that followed the same lines (while it runs, and after it stopped) gives the same
//! numbers for the clients outside the known networks (the evidence ledger keeps only those).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

mod common;
#[path = "support/incident.rs"]
mod incident;

use incident::{write_incident, ClientTruth, DAYS, START};

const CONFIG: &str =
    "[sensitive]\ncall_id = '/call-(?P<call>\\d+)/part\\d+\\.wav$'\n\n[networks]\ninternal = [\"10.0.0.0/8\"]\n";

fn replay(dir: &Path, state: &str, extra: &[&str], inputs: &[PathBuf]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["replay", "--no-progress", "--report", "json", "--config", "recwatch.toml", "--state-dir", state])
        .args(extra)
        .args(inputs)
        .current_dir(dir)
        .env("RECWATCH_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Per client: (calls, files, partial files, partial transfers) as the report says them.
fn counted(report: &Value) -> BTreeMap<String, (u64, u64, u64, u64)> {
    report["clients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let n = |k: &str| c[k].as_u64().unwrap();
            (
                c["client"].as_str().unwrap().to_string(),
                (n("calls"), n("files"), n("partial_files"), n("partial_transfers")),
            )
        })
        .collect()
}

fn expected(truth: &BTreeMap<String, ClientTruth>) -> BTreeMap<String, (u64, u64, u64, u64)> {
    truth
        .iter()
        .filter(|(_, t)| !t.files.is_empty() || t.partial_transfers > 0)
        .map(|(c, t)| {
            (c.clone(), (t.calls.len() as u64, t.files.len() as u64, t.partial_files.len() as u64, t.partial_transfers))
        })
        .collect()
}

#[test]
fn replay_counts_the_generated_incident_exactly_in_calls_and_files() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recwatch.toml"), CONFIG).unwrap();
    let (logs, truth) = write_incident(dir.path(), 17, 6);
    assert!(logs.iter().any(|p| p.to_string_lossy().ends_with(".gz")), "rotated and gzipped");
    let report = replay(dir.path(), "state", &[], &logs);

    assert_eq!(truth.unknown.len(), 6);
    assert!(truth.unknown.values().any(|t| !t.partial_files.is_empty()), "some files only partially");
    let counts = counted(&report);
    let unknown: BTreeMap<_, _> =
        counts.iter().filter(|(c, _)| c.starts_with("203.")).map(|(c, v)| (c.clone(), *v)).collect();
    assert_eq!(unknown, expected(&truth.unknown), "per unknown client: calls, files, partial files, partial transfers");
    let internal: BTreeMap<_, _> =
        counts.iter().filter(|(c, _)| c.starts_with("10.")).map(|(c, v)| (c.clone(), *v)).collect();
    assert_eq!(internal, expected(&truth.internal));

    let all: Vec<&ClientTruth> = truth.unknown.values().chain(truth.internal.values()).collect();
    let calls: BTreeSet<u32> = all.iter().flat_map(|t| t.calls.iter().copied()).collect();
    let files: BTreeSet<(u32, u32)> = all.iter().flat_map(|t| t.files.iter().copied()).collect();
    assert_eq!(report["totals"]["calls"].as_u64(), Some(calls.len() as u64), "distinct calls in total");
    assert_eq!(report["totals"]["files"].as_u64(), Some(files.len() as u64), "distinct files in total");
    let art33 = &report["art33"];
    assert_eq!(art33["data_subjects_approx"].as_u64(), Some(truth.unknown_calls().len() as u64));
    assert_eq!(art33["records"].as_u64(), Some(truth.unknown_files().len() as u64));
    let outside: Vec<String> = truth.unknown.keys().cloned().collect();
    assert_eq!(art33["clients_outside_known_networks"], serde_json::json!(outside));
    let first_lines: Vec<&str> =
        report["inputs"].as_array().unwrap().iter().map(|i| i["first_line"].as_str().unwrap()).collect();
    assert_eq!(art33["period_examined"]["since"].as_str(), first_lines.iter().min().copied(), "from the first line");
    let shared: BTreeSet<String> =
        report["shared_calls"].as_array().unwrap().iter().map(|s| s["call"].as_str().unwrap().to_string()).collect();
    let expected_shared: BTreeSet<String> = truth.shared_calls().iter().map(u32::to_string).collect();
    assert!(!expected_shared.is_empty(), "the generator makes clients overlap");
    assert_eq!(shared, expected_shared, "calls taken by more than one client");
    // Every input read in full, its coverage known.
    for input in report["inputs"].as_array().unwrap() {
        assert!(input["error"].is_null() && input["lines"].as_u64().unwrap() > 0, "{input}");
        assert!(input["first_line"].is_string() && input["last_line"].is_string(), "{input}");
    }
}

#[test]
fn since_and_until_count_one_day_as_that_days_log_alone_does() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("recwatch.toml"), CONFIG).unwrap();
    let (logs, _) = write_incident(dir.path(), 5, 5);
    assert_eq!(logs.len(), DAYS);
    // Day 1 (the second) is access.log.2.gz: newest first, four days.
    let day = 1;
    let since = incident_time(START + 86_400 * day);
    let until = incident_time(START + 86_400 * (day + 1));
    let whole = replay(dir.path(), "a", &["--since", &since, "--until", &until], &logs);
    let alone = replay(dir.path(), "b", &[], &[logs[DAYS - 1 - day as usize].clone()]);
    assert_eq!(counted(&whole), counted(&alone));
    assert!(!counted(&alone).is_empty(), "the day has fetches");
    assert_eq!(whole["totals"], alone["totals"]);
    assert_eq!(whole["period"]["since"], since.as_str());
    assert_eq!(whole["art33"]["period_examined"]["until"], until.as_str());
}

/// RFC 3339 of a Unix time (UTC), as the report writes it.
fn incident_time(t: i64) -> String {
    recwatch::parse::time::format_rfc3339(t)
}

/// The incident's lines in time order, as one live log would have them.
fn chronological(logs: &[PathBuf]) -> String {
    let mut text = String::new();
    for path in logs.iter().rev() {
        let bytes = std::fs::read(path).unwrap();
        if path.extension().is_some_and(|e| e == "gz") {
            std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut text).unwrap();
        } else {
            text += std::str::from_utf8(&bytes).unwrap();
        }
    }
    text
}

fn store_report(dir: &Path) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["report", "--config", "recwatch.toml", "--format", "json"])
        .current_dir(dir)
        .env("RECWATCH_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "report failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn report_from_the_live_daemons_ledger_equals_replay_and_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let token = "incident-token-0123456789";
    std::fs::write(dir.path().join("token"), token).unwrap();
    std::fs::write(
        dir.path().join("recwatch.toml"),
        format!(
            "{CONFIG}[store]\npath = \"state\"\n[http]\nlisten = \"127.0.0.1:0\"\ntoken_file = \"token\"\n\
             [tail]\npoll_interval_ms = 50\n[[source]]\nname = \"web\"\npath = \"{}\"\n",
            dir.path().join("live.log").display()
        ),
    )
    .unwrap();
    let (logs, truth) = write_incident(dir.path(), 23, 6);
    let live = chronological(&logs);
    let lines = live.lines().count() as f64;
    std::fs::write(dir.path().join("live.log"), &live).unwrap();
    let daemon = common::Daemon::spawn(&dir.path().join("recwatch.toml"), Some(token));
    daemon.wait_ready();
    daemon.wait_metric("recwatch_lines_read_total", "", lines);

    let unknown = expected(&truth.unknown);
    let outside = |r: &Value| -> BTreeMap<String, (u64, u64, u64, u64)> {
        counted(r).into_iter().filter(|(c, _)| c.starts_with("203.")).collect()
    };
    // While the daemon runs (a private copy of its store): the ledger is durable with each
    // checkpoint, so the report reaches the truth once the last lines are checkpointed.
    let running = common::wait_until("the store report to count every fetch", common::DAEMON_WAIT, || {
        let r = store_report(dir.path());
        (outside(&r) == unknown).then_some(r)
    });
    assert!(daemon.terminate().success());
    let stopped = store_report(dir.path());
    assert_eq!(outside(&stopped), unknown, "after a clean stop");
    for r in [&running, &stopped] {
        assert_eq!(r["origin"], "store");
        assert_eq!(r["totals"]["calls"].as_u64(), Some(truth.unknown_calls().len() as u64), "calls (outside clients)");
        assert_eq!(r["totals"]["files"].as_u64(), Some(truth.unknown_files().len() as u64), "files (outside clients)");
        assert_eq!(r["art33"]["data_subjects_approx"].as_u64(), Some(truth.unknown_calls().len() as u64));
        assert_eq!(r["art33"]["records"].as_u64(), Some(truth.unknown_files().len() as u64));
    }
    // The replay of the rotated files says the same of those clients.
    let replayed = replay(dir.path(), "replay-state", &[], &logs);
    assert_eq!(outside(&replayed), outside(&stopped));
    assert_eq!(replayed["art33"]["data_subjects_approx"], stopped["art33"]["data_subjects_approx"]);
    assert_eq!(replayed["art33"]["records"], stopped["art33"]["records"]);
    // One client, one day: the filters narrow the same ledger.
    let one = truth.unknown.keys().next().unwrap().clone();
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["report", "--config", "recwatch.toml", "--client", &one, "--format", "csv"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    assert_eq!(csv.lines().count(), 3, "header, the client, total: {csv}");
    assert!(csv.lines().nth(1).unwrap().starts_with(&format!("{one},unknown,")), "{csv}");
}

//! End-to-end tests of `recwatch replay`, `check` and `alerts` through the real binary, on
//! logs from the in-project generator, against a deliberately naive oracle of rules R1/R2.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

#[path = "support/synth.rs"]
#[allow(dead_code)] // each user takes only part of the generator
mod synth;
use synth::{generate, SynthOptions};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_recwatch"))
}

fn reference_config() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/reference.toml")
}

fn synth_log(dir: &Path, name: &str, lines: u64, seed: u64, evasions: bool) -> PathBuf {
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    let opts = SynthOptions { lines, seed, evasions, ..SynthOptions::default() };
    generate(&opts, std::io::BufWriter::new(file)).unwrap();
    path
}

fn replay(state: &Path, config: &Path, extra: &[&str], inputs: &[&Path]) -> Output {
    let mut cmd = bin();
    cmd.arg("replay").arg("--config").arg(config).arg("--state-dir").arg(state).args(extra);
    cmd.args(inputs);
    cmd.stdin(Stdio::null()).output().unwrap()
}

fn report(out: &Output) -> Value {
    assert!(out.status.success(), "replay failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn clients_with(report: &Value, rule: &str) -> BTreeSet<String> {
    report["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["rule"] == rule)
        .map(|a| a["client"].as_str().unwrap().to_string())
        .collect()
}

/// R1 and R2 exactly as the specification states them, written as plainly as possible:
/// a regex per line, a deque per client. No normalisation: only for logs without evasions.
fn naive_oracle(log: &Path) -> (BTreeSet<String>, BTreeSet<String>) {
    let line_re = regex::Regex::new(
        r#"^(\S+) \S+ \S+ \[(\d\d)/(\w\w\w)/(\d{4}):(\d\d):(\d\d):(\d\d) ([+-])(\d\d)(\d\d)\] "[A-Z]+ (\S+) [^"]*" (\d{3}) "#,
    )
    .unwrap();
    let rec_re = regex::Regex::new(r"^/recordings/.*\.(?:wav|mp3|gsm|ogg)$").unwrap();
    let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let internal = |ip: &str| -> bool {
        match ip.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(v4)) => {
                let o = v4.octets();
                o[0] == 10 || (o[0] == 192 && o[1] == 168)
            }
            _ => false,
        }
    };
    let mut a = BTreeSet::new();
    let mut b = BTreeSet::new();
    // per client: (time, path) in the window, and how often each path occurs there
    type Window = (VecDeque<(i64, String)>, HashMap<String, usize>);
    let mut windows: HashMap<String, Window> = HashMap::new();
    for line in std::fs::read_to_string(log).unwrap().lines() {
        let Some(c) = line_re.captures(line) else { continue };
        let target = &c[11];
        let path = target.split('?').next().unwrap();
        if !rec_re.is_match(path) {
            continue;
        }
        let n = |i: usize| c[i].parse::<i64>().unwrap();
        let month = months.iter().position(|m| *m == &c[3]).unwrap() as i64 + 1;
        // days from civil (proleptic Gregorian)
        let (y, m) = if month <= 2 { (n(4) - 1, month + 9) } else { (n(4), month - 3) };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let doy = (153 * m + 2) / 5 + n(2) - 1;
        let days = era * 146097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719468;
        let offset = (n(9) * 3600 + n(10) * 60) * if &c[8] == "-" { -1 } else { 1 };
        let t = days * 86400 + n(5) * 3600 + n(6) * 60 + n(7) - offset;
        let ip = c[1].to_string();
        if (&c[12] == "200" || &c[12] == "206") && !internal(&ip) {
            a.insert(ip.parse::<std::net::IpAddr>().unwrap().to_string());
        }
        let (dq, counts) = windows.entry(ip.clone()).or_default();
        while dq.front().is_some_and(|(ft, _)| *ft <= t - 60) {
            let (_, old) = dq.pop_front().unwrap();
            let k = counts.get_mut(&old).unwrap();
            *k -= 1;
            if *k == 0 {
                counts.remove(&old);
            }
        }
        dq.push_back((t, path.to_string()));
        *counts.entry(path.to_string()).or_default() += 1;
        if counts.len() > 20 {
            b.insert(ip.parse::<std::net::IpAddr>().unwrap().to_string());
        }
    }
    (a, b)
}

#[test]
fn alerts_equal_the_naive_oracle_for_any_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    let log = synth_log(dir.path(), "access.log", 120_000, 7, false);
    let (oracle_a, oracle_b) = naive_oracle(&log);
    assert!(oracle_a.len() > 10 && oracle_b.len() > 3, "the generated log must exercise both rules");
    for workers in ["1", "2", "3"] {
        let state = dir.path().join(format!("state-{workers}"));
        let r = report(&replay(&state, &reference_config(), &["--workers", workers], &[&log]));
        assert_eq!(r["lines"], 120_000);
        assert_eq!(r["parsed"], 120_000);
        assert_eq!(clients_with(&r, "unknown-client-fetch"), oracle_a, "R1 with {workers} workers");
        assert_eq!(clients_with(&r, "enumeration"), oracle_b, "R2 with {workers} workers");
    }
}

#[test]
fn evasive_spellings_raise_the_same_alerts_as_plain_paths() {
    let dir = tempfile::tempdir().unwrap();
    let plain = synth_log(dir.path(), "plain.log", 100_000, 11, false);
    let evasive = synth_log(dir.path(), "evasive.log", 100_000, 11, true);
    let rp = report(&replay(&dir.path().join("s1"), &reference_config(), &[], &[&plain]));
    let re = report(&replay(&dir.path().join("s2"), &reference_config(), &[], &[&evasive]));
    for rule in ["unknown-client-fetch", "enumeration"] {
        assert_eq!(clients_with(&re, rule), clients_with(&rp, rule), "{rule}");
    }
    assert_eq!(re["recording_requests"], rp["recording_requests"]);
    // and the per-client scope (distinct recordings and calls taken) is the same too
    let scope = |r: &Value| -> HashSet<(String, u64)> {
        r["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                let n = |k: &str| c[k].as_u64().unwrap();
                (c["client"].as_str().unwrap().to_string(), n("files") * 1_000_000 + n("calls"))
            })
            .collect()
    };
    assert_eq!(scope(&re), scope(&rp));
}

#[test]
fn replaying_the_same_log_twice_updates_alerts_instead_of_doubling_them() {
    let dir = tempfile::tempdir().unwrap();
    let log = synth_log(dir.path(), "access.log", 50_000, 3, false);
    let state = dir.path().join("state");
    let first = report(&replay(&state, &reference_config(), &["--workers", "2"], &[&log]));
    let second = report(&replay(&state, &reference_config(), &["--workers", "1"], &[&log]));
    assert_eq!(first["alerts"], second["alerts"]);
    let listed = bin().args(["alerts", "list", "--json", "--state-dir"]).arg(&state).output().unwrap();
    assert!(listed.status.success());
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), first["alerts"].as_array().unwrap().len());
}

#[test]
fn ack_from_the_terminal_survives_a_later_replay() {
    let dir = tempfile::tempdir().unwrap();
    let log = synth_log(dir.path(), "access.log", 30_000, 5, false);
    let state = dir.path().join("state");
    let r = report(&replay(&state, &reference_config(), &[], &[&log]));
    let id = r["alerts"][0]["id"].as_str().unwrap().to_string();
    let ack = bin().args(["alerts", "ack", &id, "--state-dir"]).arg(&state).output().unwrap();
    assert!(ack.status.success(), "{}", String::from_utf8_lossy(&ack.stderr));
    let r = report(&replay(&state, &reference_config(), &[], &[&log]));
    let again = r["alerts"].as_array().unwrap().iter().find(|a| a["id"] == id.as_str()).unwrap();
    assert_eq!(again["status"], "acked");
    let show = bin().args(["alerts", "show", &id, "--state-dir"]).arg(&state).output().unwrap();
    let shown: Value = serde_json::from_slice(&show.stdout).unwrap();
    assert_eq!(shown["status"], "acked");
}

#[test]
fn gzip_and_stdin_inputs_give_the_same_report_as_plain() {
    let dir = tempfile::tempdir().unwrap();
    let log = synth_log(dir.path(), "access.log", 20_000, 9, false);
    let gz = dir.path().join("access.log.1.gz");
    let mut enc = flate2::write::GzEncoder::new(std::fs::File::create(&gz).unwrap(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(&log).unwrap()).unwrap();
    enc.finish().unwrap();
    let plain = report(&replay(&dir.path().join("a"), &reference_config(), &[], &[&log]));
    let gzipped = report(&replay(&dir.path().join("b"), &reference_config(), &[], &[&gz]));
    let mut child = bin()
        .arg("replay")
        .arg("--config")
        .arg(reference_config())
        .arg("--state-dir")
        .arg(dir.path().join("c"))
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let bytes = std::fs::read(&log).unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&bytes));
    let piped = report(&child.wait_with_output().unwrap());
    writer.join().unwrap().unwrap();
    for r in [&gzipped, &piped] {
        assert_eq!(r["alerts"], plain["alerts"]);
        assert_eq!(r["clients"], plain["clients"]);
        assert_eq!(r["lines"], plain["lines"]);
    }
}

#[test]
fn unreadable_inputs_fail_clearly_and_a_truncated_gzip_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // nothing readable: non-zero exit and a message naming the problem
    let missing = dir.path().join("missing.log");
    let out = replay(&state, &reference_config(), &[], &[&missing]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.log: no such file"));
    let out = replay(&state, &reference_config(), &[], &[dir.path()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is a directory"));

    // a truncated gzip: lines before the cut are processed, the error is reported
    let log = synth_log(dir.path(), "access.log", 20_000, 4, false);
    let gz = dir.path().join("cut.log.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&std::fs::read(&log).unwrap()).unwrap();
    let full = enc.finish().unwrap();
    std::fs::write(&gz, &full[..full.len() / 2]).unwrap();
    let out = replay(&state, &reference_config(), &[], &[&gz]);
    let r = report(&out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated or corrupt"));
    assert!(r["inputs"][0]["error"].is_string());
    let lines = r["lines"].as_u64().unwrap();
    assert!(lines > 1000 && lines < 20_000, "{lines}");
    // binary junk, over-long and malformed lines: the golden case
    // tests/cases/junk-binary-over-long-and-malformed-lines-are-counted
}

#[test]
fn check_names_file_line_and_key_of_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    std::fs::write(
        &cfg,
        "[networks]\ninternal = [\"10.0.0.0/8\"]\n\n[[rule]]\nid = \"R1\"\nname = \"x\"\naggregate = \"distinkt\"\n",
    )
    .unwrap();
    let out = bin().arg("check").arg("--config").arg(&cfg).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:7: rule[0].aggregate", cfg.display())), "{err}");
    assert!(err.contains("distinct"), "the message lists the valid values: {err}");

    let good = bin().arg("check").arg("--config").arg(reference_config()).output().unwrap();
    assert!(good.status.success());
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(text.contains("R2 enumeration") && text.contains("distinct > 20 in 60 s"), "{text}");
}

#[test]
fn csv_markdown_and_html_reports_render() {
    let dir = tempfile::tempdir().unwrap();
    let log = synth_log(dir.path(), "access.log", 20_000, 2, false);
    let csv = replay(&dir.path().join("a"), &reference_config(), &["--report", "csv"], &[&log]);
    assert!(csv.status.success());
    let csv = String::from_utf8(csv.stdout).unwrap();
    assert!(csv.starts_with(
        "client,kind,partner,requests,calls,files,successful,partial_transfers,partial_files,bytes,first_seen,\
         last_seen,alerts,user_agents\n"
    ));
    assert!(csv.lines().count() > 10);
    assert!(csv.lines().last().unwrap().starts_with("TOTAL,"), "{csv}");
    let md = replay(&dir.path().join("b"), &reference_config(), &["--report", "md"], &[&log]);
    let md = String::from_utf8(md.stdout).unwrap();
    assert!(md.starts_with("# recwatch scope report") && md.contains("## Alerts ("), "{md}");
    assert!(md.contains("## For an Art. 33 notification") && md.contains("What this report cannot know"), "{md}");
    let html = replay(&dir.path().join("c"), &reference_config(), &["--report", "html"], &[&log]);
    let html = String::from_utf8(html.stdout).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
    for section in ["id=\"summary\"", "id=\"timeline-svg\"", "id=\"by-calls\"", "id=\"art33\"", "<details"] {
        assert!(html.contains(section), "{section} missing");
    }
}

#[test]
fn body_sizes_of_u64_max_saturate_the_sums_instead_of_panicking_or_wrapping() {
    // `%b` is whatever the server logged; an attacker-influenced u64::MAX on two lines used to
    // panic a debug build (and wrap in release). This binary is a debug build.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let mut text = String::new();
    for i in 0..3 {
        text += &format!(
            "203.0.113.99 - - [18/Feb/2019:09:00:0{i} +0000] \"GET /recordings/call-{i}.wav HTTP/1.1\" 200 {} \"-\" \"curl/8\"\n",
            u64::MAX
        );
    }
    std::fs::write(&log, text).unwrap();
    let state = dir.path().join("state");
    let r = report(&replay(&state, &reference_config(), &[], &[&log]));
    let r1 = r["alerts"].as_array().unwrap().iter().find(|a| a["rule"] == "unknown-client-fetch").unwrap();
    assert_eq!((r1["requests"].as_u64(), r1["bytes"].as_u64()), (Some(3), Some(u64::MAX)));
    let client = r["clients"].as_array().unwrap().iter().find(|c| c["client"] == "203.0.113.99").unwrap();
    assert_eq!(client["bytes"].as_u64(), Some(u64::MAX));
    for format in ["md", "csv"] {
        let out = replay(&state, &reference_config(), &["--report", format], &[&log]);
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        assert!(String::from_utf8_lossy(&out.stdout).contains(&u64::MAX.to_string()), "{format}");
    }
}

//! Golden cases as data: every directory under `tests/cases/` holds a `recwatch.toml`, an
//! `input.log` and the `expected.json` that `recwatch replay --report json` (the real binary,
//! run in the case's directory with a fresh state directory) must print for them, alert ids
//! left out (they are hashes: a case states what was detected, not how ids are spelled).
//! A case may also pin the other formats: an `expected.csv`, `expected.md` or `expected.html`
//! next to it is compared byte for byte with `--report csv|md|html` (such a case configures a
//! fixed pseudonym key, so its pseudonyms are stable). Adding a case needs no code: see
//! `tests/cases/README.md`.
//!
//! `RECWATCH_BLESS=1 cargo test --test cases` writes each case's current output to its
//! `expected.json` (review the diff before committing it); `RECWATCH_CASE=name` runs only the
//! cases whose directory name contains `name`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases")
}

/// The report as a case compares it: alert ids removed, pretty-printed with sorted keys.
fn comparable(mut report: Value) -> String {
    if let Some(alerts) = report.get_mut("alerts").and_then(Value::as_array_mut) {
        for alert in alerts {
            if let Some(a) = alert.as_object_mut() {
                a.remove("id");
            }
        }
    }
    serde_json::to_string_pretty(&report).unwrap() + "\n"
}

/// The report formats a case can pin: (`--report` value, expected file).
const FORMATS: [(&str, &str); 4] =
    [("json", "expected.json"), ("csv", "expected.csv"), ("md", "expected.md"), ("html", "expected.html")];

/// Replays one case; its comparable report in `format`, or why it could not run.
fn run_case(dir: &Path, state: &Path, format: &str) -> Result<String, String> {
    for file in ["recwatch.toml", "input.log"] {
        if !dir.join(file).is_file() {
            return Err(format!("no {file} (a case needs recwatch.toml, input.log and expected.json)"));
        }
    }
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["replay", "--no-progress", "--report", format, "--config", "recwatch.toml", "--state-dir"])
        .arg(state)
        .arg("input.log")
        .current_dir(dir)
        .env("RECWATCH_LOG", "warn")
        .output()
        .map_err(|e| format!("cannot run recwatch: {e}"))?;
    if !out.status.success() {
        return Err(format!("recwatch replay failed ({}):\n{}", out.status, String::from_utf8_lossy(&out.stderr)));
    }
    if format != "json" {
        return String::from_utf8(out.stdout).map_err(|e| format!("the {format} report is not UTF-8: {e}"));
    }
    let report: Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| format!("the report is not JSON ({e}):\n{}", String::from_utf8_lossy(&out.stdout)))?;
    Ok(comparable(report))
}

/// A line diff (longest common subsequence) of `expected` → `actual`, with 3 lines of context
/// around each change: `-` lines are expected only, `+` lines are what replay printed.
fn diff(expected: &str, actual: &str) -> String {
    let a: Vec<&str> = expected.lines().collect();
    let b: Vec<&str> = actual.lines().collect();
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    let changed: Vec<usize> = ops.iter().enumerate().filter(|(_, (op, _))| *op != ' ').map(|(k, _)| k).collect();
    let near = |k: usize| changed.iter().any(|&c| c.abs_diff(k) <= 3);
    let mut out = String::new();
    let mut skipped = false;
    for (k, (op, line)) in ops.iter().enumerate() {
        if near(k) {
            out += &format!("{op} {line}\n");
            skipped = false;
        } else if !skipped {
            out += "  …\n";
            skipped = true;
        }
    }
    out
}

#[test]
fn every_golden_case_replays_to_its_expected_report() {
    let bless = std::env::var("RECWATCH_BLESS").is_ok_and(|v| v == "1");
    let only = std::env::var("RECWATCH_CASE").ok();
    let mut cases: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .filter(|p| only.as_deref().is_none_or(|o| p.file_name().unwrap().to_string_lossy().contains(o)))
        .collect();
    cases.sort();
    let states = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    for dir in &cases {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        for (format, file) in FORMATS {
            let expected_path = dir.join(file);
            if format != "json" && !expected_path.is_file() {
                continue;
            }
            let actual = match run_case(dir, &states.path().join(format!("{name}.{format}")), format) {
                Ok(actual) => actual,
                Err(why) => {
                    failures.push(format!("case {name} ({format}): {why}"));
                    continue;
                }
            };
            if bless {
                std::fs::write(&expected_path, &actual).unwrap();
                eprintln!("blessed {}", expected_path.display());
                continue;
            }
            match std::fs::read_to_string(&expected_path) {
                Err(e) => failures.push(format!("case {name}: cannot read {file} ({e}); RECWATCH_BLESS=1 writes it")),
                Ok(expected) if expected != actual => failures.push(format!(
                    "case {name}: the report differs from {file} (- expected, + actual):\n{}",
                    diff(&expected, &actual)
                )),
                Ok(_) => {}
            }
        }
    }
    eprintln!("{} golden cases", cases.len());
    assert!(only.is_some() || cases.len() >= 10, "tests/cases/ holds {} cases, fewer than 10", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed (RECWATCH_BLESS=1 rewrites the expected files after a deliberate change):\n\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

#[test]
fn the_case_diff_shows_changed_lines_with_context() {
    let expected = "{\n  \"a\": 1,\n  \"b\": 2,\n  \"c\": 3\n}\n";
    let actual = "{\n  \"a\": 1,\n  \"b\": 5,\n  \"c\": 3\n}\n";
    assert_eq!(diff(expected, actual), "  {\n    \"a\": 1,\n-   \"b\": 2,\n+   \"b\": 5,\n    \"c\": 3\n  }\n");
    assert_eq!(diff(expected, expected).matches(['-', '+']).count(), 0);
}

//! Hostile text in, clean output out (RELIABILITY row 22, issue 15): the nasty strings of
//! `tests/nasty_strings.txt` (terminal escapes, the 8-bit CSI, bidi and invisible characters,
//! Markdown and HTML, spreadsheet formulas) go into recording paths, user agents (as nginx
//! writes them, `\xHH`-escaped) and partner names; every output is then checked, one test per
//! output: the replay report as JSON, Markdown and CSV, `recwatch alerts list` (table and
//! JSON) and `alerts show`, `recwatch check`, and an error message. None may hold a raw
//! control, bidi or invisible character; JSON must stay valid and lossless; Markdown must keep
//! every path inside its code span; no CSV cell may start a formula.

use std::path::{Path, PathBuf};
use std::process::Command;

use recwatch::escape::is_unsafe;
use serde_json::Value;

/// The corpus, decoded: `\u{…}` escapes and `\\`.
fn nasty_strings() -> Vec<String> {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nasty_strings.txt")).unwrap();
    text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(decode).collect()
}

fn decode(line: &str) -> String {
    let mut out = String::new();
    let mut rest = line;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        if let Some(body) = rest.strip_prefix("\\u{") {
            let end = body.find('}').unwrap();
            out.push(char::from_u32(u32::from_str_radix(&body[..end], 16).unwrap()).unwrap());
            rest = &body[end + 1..];
        } else if let Some(after) = rest.strip_prefix("\\\\") {
            out.push('\\');
            rest = after;
        } else {
            out.push('\\');
            rest = &rest[1..];
        }
    }
    out + rest
}

/// Percent-encodes everything but unreserved characters (a request target as a client sends it).
fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => char::from(b).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// nginx's log escaping of a header value: `"`, `\` and bytes outside printable ASCII as `\xHH`.
fn nginx_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'"' | b'\\' => format!("\\x{b:02X}"),
            0x20..=0x7e => char::from(b).to_string(),
            b => format!("\\x{b:02X}"),
        })
        .collect()
}

/// A case directory: a config with nasty partner names and an access log with one unknown
/// client per nasty string fetching a recording named after it.
struct Case {
    _dir: tempfile::TempDir,
    config: PathBuf,
    state: PathBuf,
    log: PathBuf,
}

fn case() -> Case {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let shipped = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("config/recwatch.toml")).unwrap();
    let mut config = shipped.replace("path = \"/var/lib/recwatch\"", &format!("path = {:?}", state.to_str().unwrap()));
    for (i, nasty) in nasty_strings().iter().enumerate() {
        // TOML basic strings take \u escapes: every partner name is one nasty string.
        let name: String = nasty.chars().map(|c| format!("\\U{:08X}", u32::from(c))).collect();
        config += &format!("\n[[networks.partner]]\nname = \"{name}\"\ncidrs = [\"198.51.100.{}/32\"]\n", i + 1);
    }
    let config_path = dir.path().join("recwatch.toml");
    std::fs::write(&config_path, config).unwrap();
    let mut log = String::new();
    for (i, nasty) in nasty_strings().iter().enumerate() {
        for client in [format!("203.0.113.{}", i + 1), format!("198.51.100.{}", i + 1)] {
            log += &format!(
                "{client} - - [18/Feb/2019:10:00:{:02} +0100] \"GET /recordings/{i}-{}.wav HTTP/1.1\" 200 4096 \"-\" \"{}\"\n",
                i % 60,
                percent(nasty),
                nginx_escape(nasty)
            );
        }
    }
    let log_path = dir.path().join("access.log");
    std::fs::write(&log_path, log).unwrap();
    Case { config: config_path, state, log: log_path, _dir: dir }
}

fn recwatch(args: &[&str], case: &Case) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(args)
        .arg("--config")
        .arg(&case.config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn replay(case: &Case, report: &str) -> String {
    let (ok, out, err) = recwatch(
        &[
            "replay",
            "--no-progress",
            "--state-dir",
            case.state.to_str().unwrap(),
            "--report",
            report,
            case.log.to_str().unwrap(),
        ],
        case,
    );
    assert!(ok, "{err}");
    out
}

/// No raw unsafe character anywhere (line breaks between lines allowed).
fn assert_clean(what: &str, text: &str) {
    for (n, line) in text.lines().enumerate() {
        if let Some(c) = line.chars().find(|c| is_unsafe(*c)) {
            panic!("{what}: line {}: raw U+{:04X} in {line:?}", n + 1, u32::from(c));
        }
    }
}

/// Every string of a JSON value.
fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::String(s) => out.push(s.clone()),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// JSON output: valid, clean as text, and lossless: the decoded strings hold the nasty
/// characters themselves (the CSI and the bidi override among them).
fn assert_json_lossless(what: &str, text: &str) -> Value {
    assert_clean(what, text);
    let value: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: invalid JSON: {e}"));
    let mut all = Vec::new();
    strings(&value, &mut all);
    for needle in ['\u{9b}', '\u{202e}', '\u{1b}', '\u{e0041}'] {
        assert!(all.iter().any(|s| s.contains(needle)), "{what}: U+{:04X} was lost", u32::from(needle));
    }
    value
}

#[test]
fn replay_json_report_is_valid_lossless_and_escaped() {
    let case = case();
    let report = assert_json_lossless("replay --report json", &replay(&case, "json"));
    let alerts = report["alerts"].as_array().unwrap();
    assert!(alerts.len() >= nasty_strings().len(), "one alert per unknown client at least: {}", alerts.len());
}

/// The Markdown text outside code spans (CommonMark: a span closes at the next backtick run of
/// the same length), with backslash-escaped punctuation (literal text) left out.
fn outside_code_spans(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1).is_some_and(u8::is_ascii_punctuation) {
            out.push_str(" ESCAPED ");
            i += 2;
            continue;
        }
        if b[i] == b'`' {
            let run = b[i..].iter().take_while(|c| **c == b'`').count();
            let mut j = i + run;
            let mut closed = None;
            while j < b.len() {
                if b[j] == b'`' {
                    let r = b[j..].iter().take_while(|c| **c == b'`').count();
                    if r == run {
                        closed = Some(j + r);
                        break;
                    }
                    j += r;
                } else {
                    j += 1;
                }
            }
            match closed {
                Some(end) => {
                    out.push_str(" CODE ");
                    i = end;
                }
                None => panic!("unclosed code span in {line:?}"),
            }
            continue;
        }
        out.push(char::from(b[i]));
        i += 1;
    }
    out
}

#[test]
fn markdown_report_keeps_every_path_in_its_code_span() {
    let case = case();
    let md = replay(&case, "md");
    assert_clean("replay --report md", &md);
    let samples: Vec<&str> = md.lines().filter(|l| l.starts_with("- `")).collect();
    assert!(samples.len() >= nasty_strings().len(), "{md}");
    for line in &samples {
        let outside = outside_code_spans(line);
        for live in ["](", "![", "<img", "<", "*", "_", "~~", "http"] {
            assert!(!outside.contains(live), "{live:?} outside a code span in {line:?} (left: {outside:?})");
        }
    }
    // Every row of a table has as many cells as its header.
    let mut header_cells = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            header_cells = None;
            continue;
        }
        if line.starts_with("|---") {
            continue;
        }
        let cells = outside_code_spans(line).matches(" | ").count();
        match header_cells {
            None => header_cells = Some(cells),
            Some(h) => assert_eq!(cells, h, "a cell boundary came from the data: {line:?}"),
        }
    }
    // Partner names are plain text: escaped, never live.
    for line in md.lines().filter(|l| l.contains("partner |") || l.contains("| partner")) {
        let outside = outside_code_spans(line);
        assert!(!outside.contains("](") && !outside.contains("<img"), "{line:?}");
    }
}

#[test]
fn html_report_has_only_its_own_markup() {
    let case = case();
    let html = replay(&case, "html");
    assert_clean("replay --report html", &html);
    const TAGS: &[&str] = &[
        "!DOCTYPE", "html", "head", "meta", "title", "style", "body", "main", "h1", "h2", "h3", "p", "section", "div",
        "b", "svg", "text", "g", "line", "rect", "path", "table", "thead", "tbody", "tr", "th", "td", "label", "input",
        "code", "details", "summary", "ul", "li", "br",
    ];
    for (at, _) in html.match_indices('<') {
        let rest = html[at + 1..].trim_start_matches('/');
        let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '!').collect();
        let after = rest[name.len()..].chars().next();
        assert!(
            TAGS.contains(&name.as_str()) && matches!(after, Some(' ' | '>' | '/')),
            "markup that is not the report's own at {at}: {:?}",
            &html[at..(at + 60).min(html.len())]
        );
        // No event handler, link or source in any tag (attribute values hold no `"` of the data).
        let tag = &html[at..at + html[at..].find('>').unwrap()];
        let mut in_value = false;
        for (i, c) in tag.char_indices() {
            if c == '"' {
                in_value = !in_value;
            } else if !in_value && c == ' ' {
                let attr: String = tag[i + 1..].chars().take_while(|c| c.is_ascii_alphabetic()).collect();
                let attr = attr.to_ascii_lowercase();
                assert!(
                    !attr.starts_with("on") && !["href", "src", "action", "formaction"].contains(&attr.as_str()),
                    "attribute {attr:?} in {tag:?}"
                );
            }
        }
    }
    // Every nasty path made it in, as text.
    assert!(html.matches("<tr data-client=").count() >= 2 * nasty_strings().len(), "one row per client");
}

/// Splits one CSV record (RFC 4180, no line breaks inside cells).
fn csv_cells(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => cells.push(String::new()),
            c => cells.last_mut().unwrap().push(c),
        }
    }
    assert!(!quoted, "unterminated quote in {line:?}");
    cells
}

#[test]
fn csv_report_has_no_formula_cells() {
    let case = case();
    let csv = replay(&case, "csv");
    assert_clean("replay --report csv", &csv);
    let mut lines = csv.lines();
    let header = csv_cells(lines.next().unwrap());
    let mut partners = 0;
    for line in lines {
        let cells = csv_cells(line);
        assert_eq!(cells.len(), header.len(), "{line:?}");
        for cell in &cells {
            assert!(!cell.starts_with(['=', '+', '-', '@', '\t', '\r']), "formula cell {cell:?} in {line:?}");
        }
        partners += usize::from(cells[1] == "partner");
    }
    assert_eq!(partners, nasty_strings().len(), "{csv}");
    assert!(csv.contains("\"'=HYPERLINK("), "the formula is kept, defused: {csv}");
}

#[test]
fn alerts_list_and_show_print_no_raw_control_or_bidi_character() {
    let case = case();
    replay(&case, "json");
    let state = case.state.to_str().unwrap();
    let (ok, table, err) = recwatch(&["alerts", "list", "--state-dir", state], &case);
    assert!(ok, "{err}");
    assert_clean("alerts list", &table);
    assert!(table.lines().count() > nasty_strings().len(), "{table}");
    let (ok, json, err) = recwatch(&["alerts", "list", "--json", "--state-dir", state], &case);
    assert!(ok, "{err}");
    let rows = assert_json_lossless("alerts list --json", &json);
    let mut shown = String::new();
    for row in rows.as_array().unwrap() {
        let id = row["id"].as_str().unwrap();
        let (ok, one, err) = recwatch(&["alerts", "show", id, "--state-dir", state], &case);
        assert!(ok, "{err}");
        assert_clean("alerts show", &one);
        shown += &one;
    }
    assert!(shown.contains("\\u009b") && shown.contains("\\u202e"), "show escapes, JSON-style: {shown}");
}

#[test]
fn check_prints_partner_names_escaped() {
    let case = case();
    let (ok, out, err) = recwatch(&["check"], &case);
    assert!(ok, "{err}");
    assert_clean("check", &out);
    assert!(out.contains("\\u{9b}2J"), "{out}");
}

#[test]
fn error_messages_escape_what_came_from_outside() {
    let case = case();
    for nasty in nasty_strings() {
        let missing = case.state.join(format!("missing-{}", nasty.replace(['/', '\0'], "_")));
        let (ok, _, err) = recwatch(
            &["replay", "--no-progress", "--state-dir", case.state.to_str().unwrap(), missing.to_str().unwrap()],
            &case,
        );
        assert!(!ok);
        assert_clean("replay error", &err);
        assert!(err.starts_with("recwatch: "), "{err}");
        let id = nasty.replace('\0', "_");
        let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
            .args(["alerts", "show", "--state-dir", case.state.to_str().unwrap(), "--config"])
            .arg(&case.config)
            .args(["--", &id])
            .output()
            .unwrap();
        let (ok, err) = (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned());
        assert!(!ok);
        assert_clean("alerts show error", &err);
        assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    }
}

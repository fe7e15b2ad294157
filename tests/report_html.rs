//! The HTML scope report in a real browser: `recwatch replay --report html` over a log whose
//! numbers are known, opened from a file (file:// only, every host name unresolvable) in
//! headless Chromium (Debian `chromium`, installed by `scripts/test`). The DOM Chromium builds
//! must show the expected totals and one timeline row per client that fetched recordings; the
//! screenshot must be a real PNG that is not blank and shows the unknown clients' red bars.

use std::path::{Path, PathBuf};
use std::process::Command;

use flate2::read::ZlibDecoder;

/// Four outside clients and one internal: (client, calls, files of each call, partial
/// transfers). Calls `call-<n>` have files `part<k>.wav`; clients 1 and 2 overlap in call 2.
fn log_and_truth() -> (String, Truth) {
    let mut log = String::new();
    let mut line = |client: &str, call: u32, part: u32, status: u16, minute: u32, hour: u32| {
        log += &format!(
            "{client} - - [18/Feb/2019:{hour:02}:{minute:02}:00 +0000] \"GET /recordings/call-{call}/part{part}.wav \
             HTTP/1.1\" {status} 4096 \"-\" \"fetcher/{client}\"\n"
        );
    };
    // 203.0.113.1: calls 1, 2 complete (3 files each).
    for call in [1, 2] {
        for part in 1..=3 {
            line("203.0.113.1", call, part, 200, part, 9);
        }
    }
    // 203.0.113.2: call 2 (2 files), call 3 (4 files), one partial of call 4.
    for part in 1..=2 {
        line("203.0.113.2", 2, part, 200, part, 11);
    }
    for part in 1..=4 {
        line("203.0.113.2", 3, part, 200, 10 + part, 11);
    }
    line("203.0.113.2", 4, 1, 206, 30, 11);
    // 192.0.2.7: call 5 (1 file), then a refusal (no fetch).
    line("192.0.2.7", 5, 1, 200, 5, 14);
    line("192.0.2.7", 6, 1, 403, 6, 14);
    // 198.51.100.3 only gets a 404: outside, but no fetch, so no timeline row.
    line("198.51.100.3", 7, 1, 404, 1, 15);
    // Internal: call 1 again.
    line("10.0.0.5", 1, 1, 200, 0, 8);
    let truth = Truth {
        // Calls 1, 2, 3, 5 (call 4 only partially; the internal client's call 1 is no new one).
        calls: 4,
        // 6 (client 1) + 4 (call 3; call 2's files were taken already) + 1 (call 5).
        files: 11,
        data_subjects: 4,
        records: 11,
        partial_transfers: 1,
        fetching_clients: 4,
        outside: 4,
    };
    (log, truth)
}

struct Truth {
    calls: u64,
    files: u64,
    data_subjects: u64,
    records: u64,
    partial_transfers: u64,
    fetching_clients: usize,
    outside: u64,
}

fn chromium() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        for name in ["chromium", "chromium-browser"] {
            let p = Path::new(dir).join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("chromium is not installed (scripts/test installs the Debian package `chromium`)");
}

/// Runs headless Chromium on `page` with `args` (file:// only: every host name resolves to
/// nothing, no background networking); its stdout.
fn run_chromium(page: &Path, profile: &Path, args: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .env("HOME", profile)
        .output()
        .expect("running chromium");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The number in the element carrying `attr="name"` (`<b data-total="calls">12</b>`).
fn number(dom: &str, attr: &str, name: &str) -> u64 {
    let key = format!("{attr}=\"{name}\"");
    let at = dom.find(&key).unwrap_or_else(|| panic!("no {key} in the DOM"));
    let rest = &dom[at..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].trim().parse().unwrap_or_else(|_| panic!("{key} holds no number"))
}

#[test]
fn the_html_report_renders_in_chromium_with_the_expected_totals_and_one_timeline_row_per_fetching_client() {
    let dir = tempfile::tempdir().unwrap();
    let (log, truth) = log_and_truth();
    std::fs::write(dir.path().join("access.log"), log).unwrap();
    std::fs::write(
        dir.path().join("recwatch.toml"),
        "[sensitive]\ncall_id = '/call-(?P<call>\\d+)/'\n[networks]\ninternal = [\"10.0.0.0/8\"]\n",
    )
    .unwrap();
    let page = dir.path().join("scope.html");
    let out = Command::new(env!("CARGO_BIN_EXE_recwatch"))
        .args(["replay", "--no-progress", "--report", "html", "--config", "recwatch.toml", "--state-dir", "state"])
        .arg("--output")
        .arg(&page)
        .arg("access.log")
        .current_dir(dir.path())
        .env("RECWATCH_LOG", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let profile = dir.path().join("profile");
    let dom = run_chromium(&page, &profile, &["--dump-dom"]);
    assert!(dom.contains("<h1>recwatch scope report</h1>"), "not the report: {}", &dom[..dom.len().min(500)]);
    assert_eq!(number(&dom, "data-total", "calls"), truth.calls, "calls");
    assert_eq!(number(&dom, "data-total", "files"), truth.files, "files");
    assert_eq!(number(&dom, "data-total", "data-subjects"), truth.data_subjects, "data subjects");
    assert_eq!(number(&dom, "data-total", "records"), truth.records, "records");
    assert_eq!(number(&dom, "data-total", "partial-transfers"), truth.partial_transfers, "partial transfers");
    assert_eq!(number(&dom, "data-total", "clients-outside"), truth.outside, "clients outside");
    assert_eq!(number(&dom, "data-art33", "data-subjects"), truth.data_subjects, "Art. 33 section");
    let rows: Vec<&str> = dom.split("<g class=\"tl-client\" data-client=\"").skip(1).collect();
    assert_eq!(rows.len(), truth.fetching_clients, "one timeline row per client that fetched recordings");
    assert!(!rows.iter().any(|r| r.starts_with("198.51.100.3\"")), "a client that fetched nothing has no row");
    for r in &rows {
        assert!(r[..r.find("</g>").unwrap()].contains("class=\"tl-fetch\""), "a row without a fetch mark: {r}");
    }
    // R1 fired for the three unknown clients that fetched: each has an alert mark.
    assert_eq!(dom.matches("class=\"tl-alert\"").count(), 3, "alert marks");
    // No script ran or was present; the sorted copies of the table are all there.
    assert!(!dom.contains("<script"));
    assert_eq!(dom.matches("<div class=\"sorted\"").count(), 10);

    let png = dir.path().join("scope.png");
    run_chromium(&page, &profile, &[&format!("--screenshot={}", png.display()), "--window-size=1200,2000"]);
    let image = decode_png(&std::fs::read(&png).expect("chromium wrote no screenshot"));
    assert_eq!((image.width, image.height), (1200, 2000));
    let distinct: std::collections::HashSet<[u8; 3]> = image.pixels.iter().copied().collect();
    assert!(distinct.len() > 50, "a blank page: {} colours", distinct.len());
    let background = image.pixels.iter().filter(|p| **p == image.pixels[0]).count();
    assert!(background < image.pixels.len() * 95 / 100, "almost all one colour");
    // The unknown clients' bars and the alert cards are #c62828.
    let red = image.pixels.iter().filter(|p| p[0] > 180 && p[1] < 70 && p[2] < 70).count();
    assert!(red > 200, "no red marks ({red} red pixels)");
}

/// An 8-bit RGB or RGBA PNG, as RGB pixels.
struct Image {
    width: usize,
    height: usize,
    pixels: Vec<[u8; 3]>,
}

/// Decodes a non-interlaced 8-bit RGB/RGBA PNG (what Chromium writes): chunks, zlib, the five
/// row filters.
fn decode_png(bytes: &[u8]) -> Image {
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut at, mut idat, mut header) = (8, Vec::new(), None);
    while at + 8 <= bytes.len() {
        let len = u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let kind = &bytes[at + 4..at + 8];
        let data = &bytes[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => header = Some(data.to_vec()),
            b"IDAT" => idat.extend_from_slice(data),
            b"IEND" => break,
            _ => {}
        }
        at += 12 + len;
    }
    let h = header.expect("no IHDR");
    let width = u32::from_be_bytes(h[0..4].try_into().unwrap()) as usize;
    let height = u32::from_be_bytes(h[4..8].try_into().unwrap()) as usize;
    assert_eq!((h[8], h[12]), (8, 0), "8-bit, not interlaced");
    let channels = match h[9] {
        2 => 3,
        6 => 4,
        other => panic!("colour type {other}"),
    };
    let mut raw = Vec::new();
    std::io::Read::read_to_end(&mut ZlibDecoder::new(&idat[..]), &mut raw).unwrap();
    let stride = width * channels;
    assert_eq!(raw.len(), height * (stride + 1), "image data length");
    let mut prev = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(width * height);
    for y in 0..height {
        let filter = raw[y * (stride + 1)];
        let mut row = raw[y * (stride + 1) + 1..(y + 1) * (stride + 1)].to_vec();
        for i in 0..stride {
            let a = if i >= channels { row[i - channels] } else { 0 };
            let b = prev[i];
            let c = if i >= channels { prev[i - channels] } else { 0 };
            row[i] = row[i].wrapping_add(match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = ((p - i16::from(a)).abs(), (p - i16::from(b)).abs(), (p - i16::from(c)).abs());
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                f => panic!("row filter {f}"),
            });
        }
        pixels.extend(row.chunks(channels).map(|p| [p[0], p[1], p[2]]));
        prev = row;
    }
    Image { width, height, pixels }
}

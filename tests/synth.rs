//! The synthetic log generator's own tests: determinism, the traffic model's shape, and that
//! the counts it reports match what it wrote. Never starts a daemon or reads real logs.

#[path = "support/synth.rs"]
mod synth;

use std::io;

use std::collections::{HashMap, VecDeque};
use synth::*;

fn run_gen(opts: &SynthOptions) -> (Vec<u8>, SynthStats) {
    let mut buf = Vec::new();
    let stats = generate(opts, &mut buf).expect("generate");
    (buf, stats)
}

fn opts(lines: u64, seed: u64) -> SynthOptions {
    SynthOptions { lines, seed, ..SynthOptions::default() }
}

fn lines(buf: &[u8]) -> Vec<&str> {
    std::str::from_utf8(buf).expect("utf-8").lines().collect()
}

/// (ip, timestamp text, method, target, status) of a combined line, checking its shape.
fn fields(line: &str) -> (&str, &str, &str, &str, u16) {
    let sp = line.find(' ').expect("ip");
    let ip = &line[..sp];
    assert!(!ip.is_empty() && ip.bytes().all(|b| b.is_ascii_hexdigit() || b == b'.' || b == b':'), "ip: {line}");
    let lb = line.find(" [").expect("[");
    let rb = line.find("] \"").expect("]");
    let ts = &line[lb + 2..rb];
    let req_start = rb + 3;
    let req_end = req_start + line[req_start..].find("\" ").expect("request end");
    let mut req = line[req_start..req_end].split(' ');
    let method = req.next().expect("method");
    let target = req.next().expect("target");
    assert!(req.next().expect("proto").starts_with("HTTP/"), "{line}");
    let rest = &line[req_end + 2..];
    let status: u16 = rest[..3].parse().expect("status");
    assert_eq!(&rest[3..4], " ", "{line}");
    assert!((100..600).contains(&status));
    assert!(line.ends_with('"'), "{line}");
    assert_eq!(line.matches('"').count(), 6, "{line}");
    (ip, ts, method, target, status)
}

/// `18/Feb/2019:10:00:01 +0100` -> Unix seconds.
fn parse_ts(ts: &str) -> i64 {
    recwatch::parse::time::parse_clf_time(ts.as_bytes()).expect("timestamp")
}

/// The reference rule's path test: /recordings/ + audio extension, query removed.
fn is_rec(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or("");
    path.starts_with("/recordings/") && [".wav", ".mp3", ".gsm", ".ogg"].iter().any(|e| path.ends_with(e))
}

#[test]
fn deterministic() {
    let a = run_gen(&opts(20_000, 7));
    let b = run_gen(&opts(20_000, 7));
    assert_eq!(a, b);
    let c = run_gen(&opts(20_000, 8));
    assert_ne!(a.0, c.0);
    let e = SynthOptions { evasions: true, seq_ids: true, ..opts(20_000, 7) };
    assert_eq!(run_gen(&e), run_gen(&e));
}

#[test]
fn exact_line_count() {
    for n in [0u64, 1, 2, 999, 12_345] {
        let (buf, st) = run_gen(&opts(n, 3));
        assert_eq!(buf.iter().filter(|&&b| b == b'\n').count() as u64, n);
        assert_eq!(st.lines, n);
        assert!(buf.is_empty() || buf.ends_with(b"\n"));
    }
}

#[test]
fn shape_and_time_order() {
    let o = opts(50_000, 11);
    let (buf, st) = run_gen(&o);
    let mut prev = i64::MIN;
    let ls = lines(&buf);
    for l in &ls {
        let (_, ts, _, _, _) = fields(l);
        assert!(ts.ends_with(" +0100"), "{l}");
        let t = parse_ts(ts);
        assert!(t >= prev, "time went back: {l}");
        prev = t;
    }
    assert_eq!(parse_ts(fields(ls[0]).1), st.first_unix);
    assert_eq!(prev, st.last_unix);
    assert!(st.first_unix >= o.start_unix && st.first_unix < o.start_unix + 10);
    assert!(ls[0].contains("[18/Feb/2019:01:00:0"), "{}", ls[0]);
    // a whole day at the default rate is ~2.6 M lines; 50 k lines at night is ~40 min
    assert!(st.last_unix - st.first_unix > 1200);
}

#[test]
fn tz_offset_is_honoured() {
    let o = SynthOptions { tz_minutes: -330, ..opts(5000, 2) };
    let (buf, st) = run_gen(&o);
    let ls = lines(&buf);
    assert!(ls[0].contains("[17/Feb/2019:18:30:0"), "{}", ls[0]);
    for l in &ls {
        assert!(fields(l).1.ends_with(" -0530"));
    }
    assert_eq!(parse_ts(fields(ls[ls.len() - 1]).1), st.last_unix);
}

#[test]
fn recording_fraction() {
    let (buf, st) = run_gen(&opts(100_000, 5));
    let n = lines(&buf).iter().filter(|l| is_rec(fields(l).3)).count() as u64;
    assert_eq!(n, st.recording_requests);
    let frac = n as f64 / 100_000.0;
    assert!((0.03..0.09).contains(&frac), "{frac}");

    let o = SynthOptions { rec_frac: 0.0, ..opts(20_000, 5) };
    let (buf, st) = run_gen(&o);
    assert_eq!(st.recording_requests, 0);
    assert_eq!(st.sessions_total(), 0);
    assert!(lines(&buf).iter().all(|l| !is_rec(fields(l).3)));
}

#[test]
fn sessions_and_window_cases() {
    let (buf, st) = run_gen(&opts(200_000, 1));
    for (k, n) in st.sessions {
        assert!(n > 0, "no {k} session: {:?}", st.sessions);
    }
    assert_eq!(st.evasions_total(), 0);
    // per IP: > 20 distinct recordings in 60 s, and > 20 requests with <= 20 distinct
    let mut win: HashMap<&str, VecDeque<(i64, &str)>> = HashMap::new();
    let (mut distinct_hit, mut count_only) = (Vec::new(), Vec::new());
    for l in lines(&buf) {
        let (ip, ts, _, target, _) = fields(l);
        if !is_rec(target) {
            continue;
        }
        let t = parse_ts(ts);
        let path = target.split('?').next().unwrap_or("");
        let w = win.entry(ip).or_default();
        while w.front().is_some_and(|&(t0, _)| t0 <= t - 60) {
            w.pop_front();
        }
        w.push_back((t, path));
        let mut d: Vec<&str> = w.iter().map(|x| x.1).collect();
        d.sort_unstable();
        d.dedup();
        if d.len() > 20 {
            distinct_hit.push(ip);
        } else if w.len() > 20 {
            count_only.push(ip);
        }
    }
    assert!(distinct_hit.iter().any(|ip| ip.starts_with("192.168.10.")));
    assert!(distinct_hit.iter().any(|ip| !ip.starts_with("192.168.")));
    assert!(count_only.iter().any(|ip| !distinct_hit.contains(ip)));
}

#[test]
fn near_misses_present() {
    let (buf, _) = run_gen(&opts(100_000, 9));
    let text = std::str::from_utf8(&buf).expect("utf-8");
    for needle in [
        ".json HTTP",
        ".wav.md5 HTTP",
        "/static/audio/beep.wav",
        "?download=1 ",
        "\"HEAD /recordings/",
        "GET /recordings/ HTTP",
    ] {
        assert!(text.contains(needle), "missing {needle}");
    }
    let ls = lines(&buf);
    let listing = ls.iter().any(|l| {
        let t = fields(l).3;
        t.len() == 23 && t.starts_with("/recordings/") && t.ends_with('/')
    });
    assert!(listing, "no directory listing");
    for prefix in ["100.10.", "110.", "192.169.", "172.", "2a0"] {
        assert!(ls.iter().any(|l| l.starts_with(prefix)), "no client {prefix}");
    }
    assert!(ls.iter().any(|l| fields(l).0.contains(".10.0.")));
}

#[test]
fn evasions_emit_every_kind_and_change_nothing_else() {
    let plain = run_gen(&opts(200_000, 4));
    let ev = run_gen(&SynthOptions { evasions: true, ..opts(200_000, 4) });
    for (k, n) in ev.1.evasions {
        assert!(n > 0, "no {k}: {:?}", ev.1.evasions);
    }
    assert_eq!(plain.1.recording_requests, ev.1.recording_requests);
    assert_eq!(plain.1.sessions, ev.1.sessions);
    let (pl, el) = (lines(&plain.0), lines(&ev.0));
    assert_eq!(pl.len(), el.len());
    let mut changed = 0;
    for (a, b) in pl.iter().zip(&el) {
        if a == b {
            continue;
        }
        changed += 1;
        let (fa, fb) = (fields(a), fields(b));
        assert!(is_rec(fa.3), "non-recording line changed: {a}");
        assert_eq!((fa.1, fa.2, fa.4), (fb.1, fb.2, fb.4));
        let tail = |l: &'_ str| l[l.find("\" ").expect("req end")..].to_string();
        assert_eq!(tail(a), tail(b));
    }
    assert_eq!(changed, ev.1.evasions_total());
    let text = std::str::from_utf8(&ev.0).expect("utf-8");
    for needle in [
        "%2ewav",
        "%2e/",
        "/recordings%2F",
        "//recordings/",
        "/recordings//",
        "/./recordings/",
        "/static/../recordings/",
        "/Recordings/",
        ".WAV",
        ";jsessionid=",
        "GET http://nas.example/recordings/",
        "\n::ffff:",
    ] {
        assert!(text.contains(needle) || text.contains(&needle.to_ascii_uppercase()), "missing {needle}");
    }
}

#[test]
fn seq_ids_tag_the_user_agent_only() {
    let plain = run_gen(&opts(3000, 6)).0;
    let tagged = run_gen(&SynthOptions { seq_ids: true, ..opts(3000, 6) }).0;
    let (pl, tl) = (lines(&plain), lines(&tagged));
    for (i, (p, t)) in pl.iter().zip(&tl).enumerate() {
        fields(t);
        let tag = format!(" seq/{}\"", i + 1);
        assert!(t.ends_with(&tag), "{t}");
        assert_eq!(format!("{}\"", &t[..t.len() - tag.len()]), *p);
    }
}

#[test]
fn bad_options_are_rejected() {
    for o in [
        SynthOptions { rec_frac: 1.5, ..opts(10, 1) },
        SynthOptions { peak_rate: 0.0, ..opts(10, 1) },
        SynthOptions { tz_minutes: 1440, ..opts(10, 1) },
    ] {
        let e = generate(&o, Vec::new()).expect_err("must fail");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }
}

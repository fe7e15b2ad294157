//! Synthetic access-log generator CLI (the Rust counterpart of bench/genlog.py).
//!
//! cargo run --release --example genlog -- --lines N --seed S [--evasions] [--seq-ids] [--out FILE]
//!
//! Writes to stdout unless --out is given; prints a one-line summary on stderr.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Instant;

#[path = "../tests/support/synth.rs"]
#[allow(dead_code)] // each user takes only part of the generator
mod synth;
use synth::{generate, SynthOptions};

const USAGE: &str = "usage: genlog [--lines N] [--seed S] [--rec-frac F] [--start UNIX|YYYY-MM-DDTHH:MM:SS]
              [--tz MINUTES] [--rate PEAK] [--evasions] [--seq-ids] [--out FILE] [--quiet]
  -n, --lines N      number of lines (default 1000000)
  -s, --seed S       RNG seed (default 42); same arguments give byte-identical output
  -r, --rec-frac F   approx. fraction of recording requests, 0..0.9 (default 0.05)
      --start T      first timestamp, UTC (default 2019-02-18T00:00:00)
      --tz MINUTES   log time-zone offset (default 60 = +0100)
      --rate PEAK    peak requests per simulated second (default 50)
      --evasions     also emit encoded/obfuscated recording fetches
      --seq-ids      append ` seq/<line number>` to every user agent
  -o, --out FILE     output file ('-' or absent = stdout)
  -q, --quiet        no summary on stderr";

/// `YYYY-MM-DDTHH:MM:SS[Z]` (UTC) or plain Unix seconds.
fn parse_start(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let s = s.strip_suffix('Z').unwrap_or(s);
    let b = s.as_bytes();
    if b.len() != 19 || b[4] != b'-' || b[7] != b'-' || b[10] != b'T' {
        return None;
    }
    let n = |a: usize, e: usize| s.get(a..e)?.parse::<i64>().ok();
    let (y, m, d) = (n(0, 4)?, n(5, 7)?, n(8, 10)?);
    let (hh, mm, ss) = (n(11, 13)?, n(14, 16)?, n(17, 19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // days from civil (proleptic Gregorian)
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

fn run() -> Result<(), String> {
    let mut o = SynthOptions::default();
    let mut out_path: Option<String> = None;
    let mut quiet = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let bad = |name: &str, v: &str| format!("bad value for {name}: {v}");
        match a.as_str() {
            "-n" | "--lines" => {
                let v = val(&a)?;
                o.lines = v.replace('_', "").parse().map_err(|_| bad(&a, &v))?;
            }
            "-s" | "--seed" => {
                let v = val(&a)?;
                o.seed = v.parse().map_err(|_| bad(&a, &v))?;
            }
            "-r" | "--rec-frac" => {
                let v = val(&a)?;
                o.rec_frac = v.parse().map_err(|_| bad(&a, &v))?;
            }
            "--start" => {
                let v = val(&a)?;
                o.start_unix = parse_start(&v).ok_or_else(|| bad(&a, &v))?;
            }
            "--tz" => {
                let v = val(&a)?;
                o.tz_minutes = v.parse().map_err(|_| bad(&a, &v))?;
            }
            "--rate" => {
                let v = val(&a)?;
                o.peak_rate = v.parse().map_err(|_| bad(&a, &v))?;
            }
            "-o" | "--out" => out_path = Some(val(&a)?),
            "--evasions" => o.evasions = true,
            "--seq-ids" => o.seq_ids = true,
            "-q" | "--quiet" => quiet = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => return Err(format!("unknown argument {a}\n{USAGE}")),
        }
    }

    let t0 = Instant::now();
    let res = match out_path.as_deref() {
        None | Some("-") => generate(&o, io::stdout().lock()),
        Some(p) => {
            let f = std::fs::File::create(p).map_err(|e| format!("{p}: {e}"))?;
            generate(&o, f)
        }
    };
    let st = match res {
        Ok(st) => st,
        // `genlog | head` is fine
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
        Err(e) => return Err(format!("genlog: {e}")),
    };
    let dt = t0.elapsed().as_secs_f64();
    if !quiet {
        let kinds: Vec<String> = st.sessions.iter().map(|(k, n)| format!("{k}: {n}")).collect();
        let mut line = format!(
            "genlog: {} lines in {:.2} s ({:.0} lines/s); {:.2}% recording requests; \
             {} sessions {{{}}}",
            st.lines,
            dt,
            if dt > 0.0 { st.lines as f64 / dt } else { 0.0 },
            100.0 * st.recording_requests as f64 / st.lines.max(1) as f64,
            st.sessions_total(),
            kinds.join(", "),
        );
        if o.evasions {
            let ev: Vec<String> = st.evasions.iter().map(|(k, n)| format!("{k}: {n}")).collect();
            line += &format!("; {} evasions {{{}}}", st.evasions_total(), ev.join(", "));
        }
        line += &format!("; log spans {:.1} h", (st.last_unix - st.first_unix) as f64 / 3600.0);
        let _ = writeln!(io::stderr(), "{line}");
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(2)
        }
    }
}

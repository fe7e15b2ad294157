//! A generated incident with its ground truth, for the scope report's tests (dev-only: included
//! with `#[path]`). Several unknown clients take overlapping sets of calls of 3–4 files over
//! several days, some files only partially (206 ranges, 499 aborts), some refused; internal
//! clients and page traffic around them. Written as a rotated log set (`access.log`,
//! `access.log.1`, `access.log.2.gz`, …, newest first, as logrotate with `delaycompress`
//! leaves it). Owns the model, its seeded PRNG and the truth: per client the calls and files
//! taken completely, files got only partially, partial transfers. Never reads the clock or
//! the network.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};

/// What one client did, as a report should count it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClientTruth {
    /// Calls with at least one file taken completely.
    pub calls: BTreeSet<u32>,
    /// Files taken completely: (call, part).
    pub files: BTreeSet<(u32, u32)>,
    /// Files got partially and never completely.
    pub partial_files: BTreeSet<(u32, u32)>,
    /// Partial transfers (206 and 499 answers).
    pub partial_transfers: u64,
}

/// The incident's truth, by client address.
#[derive(Clone, Debug, Default)]
pub struct Truth {
    pub unknown: BTreeMap<String, ClientTruth>,
    pub internal: BTreeMap<String, ClientTruth>,
}

impl Truth {
    /// Distinct calls taken by the unknown clients (the report's approximate data subjects).
    pub fn unknown_calls(&self) -> BTreeSet<u32> {
        self.unknown.values().flat_map(|c| c.calls.iter().copied()).collect()
    }

    pub fn unknown_files(&self) -> BTreeSet<(u32, u32)> {
        self.unknown.values().flat_map(|c| c.files.iter().copied()).collect()
    }

    /// Calls taken by more than one client (unknown or internal).
    pub fn shared_calls(&self) -> BTreeSet<u32> {
        let mut seen: BTreeMap<u32, usize> = BTreeMap::new();
        for c in self.unknown.values().chain(self.internal.values()) {
            for call in &c.calls {
                *seen.entry(*call).or_default() += 1;
            }
        }
        seen.into_iter().filter(|(_, n)| *n > 1).map(|(c, _)| c).collect()
    }
}

/// SplitMix64: small, seeded, the same sequence everywhere.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The file name of the log for one day: the newest is `access.log`, the one before
/// `access.log.1`, older ones gzipped.
fn rotated_name(age: usize) -> String {
    match age {
        0 => "access.log".to_string(),
        1 => "access.log.1".to_string(),
        n => format!("access.log.{n}.gz"),
    }
}

/// 2019-02-18T00:00:00Z, the first day of the incident.
pub const START: i64 = 1_550_448_000;

/// Number of days, one log file each.
pub const DAYS: usize = 4;

/// Files per call: 3 or 4 (the 1177 case's average).
fn parts_of(call: u32) -> u32 {
    3 + call % 2
}

fn clf(t: i64) -> String {
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{d:02}/{}/{y:04}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        secs / 3_600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes the incident's rotated logs into `dir`; returns their paths (newest first) and the
/// truth. `clients` unknown clients each take 4–9 calls out of a pool of `clients * 4`, so
/// their sets overlap.
pub fn write_incident(dir: &Path, seed: u64, clients: usize) -> (Vec<PathBuf>, Truth) {
    let mut rng = Rng(seed);
    let mut truth = Truth::default();
    // (time, line) per day.
    let mut days: Vec<Vec<(i64, String)>> = vec![Vec::new(); DAYS];
    let pool = (clients * 4) as u64;
    let push = |days: &mut Vec<Vec<(i64, String)>>, t: i64, line: String| {
        days[((t - START) / 86_400) as usize].push((t, line));
    };
    let path = |call: u32, part: u32| format!("/recordings/2019/02/call-{call}/part{part}.wav");
    for c in 0..clients {
        let client = format!("203.0.113.{}", 10 + c);
        let ua = format!("grabber/{c}");
        let entry = truth.unknown.entry(client.clone()).or_default();
        let calls = 4 + rng.below(6);
        // Each client works in one or two sessions on different days.
        for k in 0..calls {
            let call = rng.below(pool) as u32 + 1;
            let day = ((c as u64 + k * 3 + rng.below(2)) % DAYS as u64) as i64;
            let mut t = START + day * 86_400 + 3_600 * (1 + rng.below(20) as i64) + rng.below(3_000) as i64;
            for part in 1..=parts_of(call) {
                t += 1 + rng.below(20) as i64;
                let roll = rng.below(10);
                let (status, bytes) = match roll {
                    0 => (206, 65_536),
                    1 => (499, 0),
                    2 => (404, 0),
                    _ => (200, 480_000 + rng.below(1_000)),
                };
                push(
                    &mut days,
                    t,
                    format!(
                        "{client} - - [{}] \"GET {} HTTP/1.1\" {status} {bytes} \"-\" \"{ua}\"",
                        clf(t),
                        path(call, part)
                    ),
                );
                match status {
                    200 => {
                        entry.files.insert((call, part));
                        entry.calls.insert(call);
                    }
                    206 | 499 => {
                        entry.partial_transfers += 1;
                        entry.partial_files.insert((call, part));
                    }
                    _ => {}
                }
            }
        }
        let files = entry.files.clone();
        entry.partial_files.retain(|f| !files.contains(f));
    }
    // Internal staff listen to a few calls of the same pool each day; pages around everything.
    for day in 0..DAYS as i64 {
        let client = format!("10.0.0.{}", 1 + day);
        let entry = truth.internal.entry(client.clone()).or_default();
        for k in 0..3 {
            let call = rng.below(pool) as u32 + 1;
            let t = START + day * 86_400 + 8 * 3_600 + k * 600;
            push(
                &mut days,
                t,
                format!("{client} - - [{}] \"GET {} HTTP/1.1\" 200 480000 \"-\" \"crm/1\"", clf(t), path(call, 1)),
            );
            entry.files.insert((call, 1));
            entry.calls.insert(call);
        }
        for k in 0..200 {
            let t = START + day * 86_400 + k * 400 + rng.below(300) as i64;
            push(
                &mut days,
                t,
                format!("198.18.0.{} - - [{}] \"GET /index.html HTTP/1.1\" 200 512 \"-\" \"browser\"", k % 50, clf(t)),
            );
        }
    }
    let mut paths = Vec::new();
    for (day, mut lines) in days.into_iter().enumerate() {
        lines.sort_by_key(|(t, _)| *t);
        let mut text = String::new();
        for (_, line) in lines {
            text += &line;
            text.push('\n');
        }
        let age = DAYS - 1 - day;
        let path = dir.join(rotated_name(age));
        if path.extension().is_some_and(|e| e == "gz") {
            let mut gz =
                flate2::write::GzEncoder::new(std::fs::File::create(&path).unwrap(), flate2::Compression::fast());
            gz.write_all(text.as_bytes()).unwrap();
            gz.finish().unwrap();
        } else {
            std::fs::write(&path, text).unwrap();
        }
        paths.push((age, path));
    }
    paths.sort();
    (paths.into_iter().map(|(_, p)| p).collect(), truth)
}

//! The file tailer against the scenarios of RELIABILITY.md rows 1–13 and 18: real `logrotate`,
//! real renames, truncations, deletions, symlinks and directories, with a writer appending
//! concurrently where it matters. Oracle: every line carries a unique id (`seq/<n>` from the
//! generator, or `line <n>`); the set of ids seen must contain the set written, with no duplicate,
//! except inside the loss windows RELIABILITY allows, which are asserted bounded and counted.
//! Every scenario runs with inotify and in pure-poll mode (row 12). Tests wait on conditions (ids
//! seen, gauges), never on fixed sleeps.

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use recwatch::source::tail::{FileCheckpoint, LineSink, TailOptions, TailSource, Tailer};
use recwatch::telemetry::Telemetry;

#[path = "support/synth.rs"]
#[allow(dead_code)] // each user takes only part of the generator
mod synth;
use synth::{generate, SynthOptions};

const LOGROTATE: &str = "/usr/sbin/logrotate";
const DEADLINE: Duration = Duration::from_secs(20);

// ---- the recording sink and the id oracle

#[derive(Default)]
struct Rec {
    /// Times each id was seen.
    seen: HashMap<u64, u32>,
    /// Ids in the order they arrived.
    order: Vec<u64>,
    /// Lines without an id (headers, or garbage that must not appear).
    other: Vec<Vec<u8>>,
    partial: Vec<Vec<u8>>,
    /// Heads of lines over the bound.
    heads: Vec<Vec<u8>>,
}

impl LineSink for Rec {
    fn line(&mut self, _source: u16, line: &[u8]) {
        match id_of(line) {
            Some(id) => {
                *self.seen.entry(id).or_insert(0) += 1;
                self.order.push(id);
            }
            None => self.other.push(line.to_vec()),
        }
    }
    fn truncated(&mut self, _source: u16, head: &[u8]) {
        self.heads.push(head.to_vec());
    }
    fn partial_line(&mut self, _source: u16, line: &[u8]) {
        self.partial.push(line.to_vec());
    }
}

impl Rec {
    fn has_all(&self, ids: impl IntoIterator<Item = u64>) -> bool {
        ids.into_iter().all(|id| self.seen.contains_key(&id))
    }
    fn missing(&self, ids: impl IntoIterator<Item = u64>) -> Vec<u64> {
        ids.into_iter().filter(|id| !self.seen.contains_key(id)).collect()
    }
    fn duplicates(&self) -> u64 {
        self.seen.values().map(|&n| u64::from(n) - 1).sum()
    }
    /// Exactly the ids in `ids`, each once, nothing else.
    fn assert_exactly(&self, ids: std::ops::RangeInclusive<u64>) {
        let missing = self.missing(ids.clone());
        assert!(missing.is_empty(), "{} ids lost, first {:?}", missing.len(), &missing[..missing.len().min(10)]);
        assert_eq!(self.duplicates(), 0, "duplicates");
        let extra: Vec<u64> = self.seen.keys().copied().filter(|id| !ids.contains(id)).collect();
        assert!(extra.is_empty(), "ids never written (or from another generation): {extra:?}");
        assert!(self.other.is_empty(), "lines without an id: {:?}", lossy(&self.other));
    }
}

/// `... seq/<n>"` from the generator, or a line starting with `line <n>`.
fn id_of(line: &[u8]) -> Option<u64> {
    let digits = match memchr::memmem::find(line, b"seq/") {
        Some(i) => &line[i + 4..],
        None => line.strip_prefix(b"line ")?,
    };
    let end = digits.iter().position(|b| !b.is_ascii_digit()).unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

fn lossy(lines: &[Vec<u8>]) -> Vec<String> {
    lines.iter().take(5).map(|l| String::from_utf8_lossy(l).into_owned()).collect()
}

/// Fixed-width `line <n>` lines (12 bytes each), so generations can be refilled to the same size.
fn numbered(ids: std::ops::RangeInclusive<u64>) -> Vec<u8> {
    ids.flat_map(|n| format!("line {n:06}\n").into_bytes()).collect()
}

/// Realistic access-log lines from the in-project generator, ids 1..=n, each ending in '\n'.
fn synth_lines(n: u64, seed: u64) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    generate(&SynthOptions { lines: n, seed, seq_ids: true, ..SynthOptions::default() }, &mut out).unwrap();
    out.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec).collect()
}

// ---- driving the tailer

fn options(inotify: bool) -> TailOptions {
    TailOptions {
        poll_interval: Duration::from_millis(100),
        use_inotify: inotify,
        read_chunk: 64 * 1024,
        rotated_drain: Duration::from_millis(300),
        ..TailOptions::default()
    }
}

fn start(patterns: &[&Path], opts: TailOptions, resume: Vec<FileCheckpoint>) -> (Tailer, Arc<Telemetry>) {
    let telemetry = Arc::new(Telemetry::default());
    let sources = patterns
        .iter()
        .enumerate()
        .map(|(i, p)| TailSource { index: i as u16, pattern: p.to_str().unwrap().to_string() })
        .collect();
    (Tailer::new(sources, opts, resume, telemetry.clone()), telemetry)
}

/// Polls (with short inotify waits in between) until `done` holds; fails after 20 s.
fn drive(t: &mut Tailer, rec: &mut Rec, what: &str, mut done: impl FnMut(&Rec) -> bool) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        t.poll(rec, 1 << 20);
        if done(rec) {
            return;
        }
        if Instant::now() >= deadline {
            let mut ids: Vec<u64> = rec.seen.keys().copied().collect();
            ids.sort();
            let max = ids.last().copied().unwrap_or(0);
            let missing: Vec<u64> = (1..=max).filter(|i| !rec.seen.contains_key(i)).collect();
            eprintln!(
                "ids absent below the highest seen ({max}): {} {:?}",
                missing.len(),
                &missing[..missing.len().min(40)]
            );
            eprintln!(
                "other lines {:?}, partial {:?}, truncated {}",
                lossy(&rec.other),
                lossy(&rec.partial),
                rec.heads.len()
            );
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}; {} ids seen", rec.seen.len());
        t.wait(Duration::from_millis(50));
    }
}

fn gauge(v: &std::sync::atomic::AtomicI64) -> i64 {
    v.load(Relaxed)
}

fn append(path: &Path, bytes: &[u8]) {
    OpenOptions::new().create(true).append(true).open(path).unwrap().write_all(bytes).unwrap();
}

fn ino(path: &Path) -> u64 {
    fs::metadata(path).unwrap().ino()
}

// ---- a writer appending concurrently, like nginx

/// Appends `lines` one `write` each, a little at a time; with `reopen` it reopens the path when
/// the file there is no longer the one it writes to (nginx after logrotate's `USR1`).
struct Writer {
    written: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Writer {
    fn spawn(path: &Path, lines: Vec<Vec<u8>>, reopen: bool) -> Writer {
        let written = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        let (w, f, path) = (written.clone(), finished.clone(), path.to_path_buf());
        let handle = std::thread::spawn(move || {
            let open = || OpenOptions::new().create(true).append(true).open(&path).unwrap();
            let mut file = open();
            for (i, line) in lines.iter().enumerate() {
                file.write_all(line).unwrap();
                w.store(i as u64 + 1, Relaxed);
                if i % 5 == 4 {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if reopen && i % 10 == 9 {
                    if let Ok(m) = fs::metadata(&path) {
                        if m.ino() != file.metadata().unwrap().ino() {
                            file = open();
                        }
                    }
                }
            }
            f.store(true, Relaxed);
        });
        Writer { written, finished, handle: Some(handle) }
    }

    fn written(&self) -> u64 {
        self.written.load(Relaxed)
    }

    fn finished(&self) -> bool {
        self.finished.load(Relaxed)
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Runs the real logrotate once, forced, with its own state file. Fails (never skips) when
/// logrotate is missing: `scripts/test` installs it.
fn logrotate(dir: &Path, config: &str) {
    let conf = dir.join("logrotate.conf");
    fs::write(&conf, config).unwrap();
    let out = Command::new(LOGROTATE)
        .arg("-f")
        .arg("-s")
        .arg(dir.join("logrotate.state"))
        .arg(&conf)
        .output()
        .unwrap_or_else(|e| panic!("{LOGROTATE} must be installed (apt-get install logrotate): {e}"));
    assert!(out.status.success(), "logrotate failed: {}", String::from_utf8_lossy(&out.stderr));
}

/// One test per mode: inotify, and pure poll (row 12: poll mode gives the same results).
macro_rules! both_modes {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[test]
            fn inotify() {
                super::$name(true)
            }
            #[test]
            fn poll_only() {
                super::$name(false)
            }
        }
    )*};
}

both_modes!(
    logrotate_create_while_writing,
    logrotate_copytruncate_while_writing,
    logrotate_compress_never_reads_gz,
    logrotate_delaycompress_never_reads_gz,
    deleted_while_being_read_is_drained_then_released,
    truncation_and_refill_start_new_generations,
    inode_reuse_never_inherits_an_offset,
    identical_first_kib_in_two_files_both_read,
    partial_line_completed_later_is_one_line,
    partial_line_at_rotation_is_flushed_once,
    late_file_and_directory_are_picked_up,
    symlink_retargeted_is_followed_by_identity,
    watched_directory_removed_and_recreated_loses_nothing,
    stopped_across_a_rotation_resumes_the_rotated_file,
    stopped_across_two_rotations_reads_the_middle_one_whole,
);

// ---- row 1: rename + create while writing

fn logrotate_create_while_writing(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    let config = format!("{} {{\n  rotate 5\n  create\n  missingok\n}}\n", log.display());
    let n = 3000;
    let (mut t, tel) = start(&[&log], options(inotify), Vec::new());
    let writer = Writer::spawn(&log, synth_lines(n, 1), true);
    let mut rotations = 0;
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "every line across two logrotate runs", |rec| {
        if rotations < 2 && writer.written() >= (rotations + 1) * n / 3 {
            logrotate(dir.path(), &config);
            rotations += 1;
        }
        rotations == 2 && writer.finished() && rec.has_all(1..=n)
    });
    rec.assert_exactly(1..=n);
    assert!(tel.rotations.load(Relaxed) >= 2, "rotations counted");
    drive(&mut t, &mut rec, "rotated files drained and released", |_| gauge(&tel.files_open) == 1);
    assert!(rec.partial.is_empty());
    assert_eq!(tel.truncations.load(Relaxed), 0);
    assert_eq!(gauge(&tel.source_lag_bytes), 0);
    assert!(logs.join("access.log.2").exists(), "logrotate rotated twice");
}

// ---- row 2: copytruncate

fn logrotate_copytruncate_while_writing(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    let config = format!("{} {{\n  rotate 5\n  copytruncate\n  missingok\n}}\n", log.display());
    let n = 3000;
    let (mut t, tel) = start(&[&log], options(inotify), Vec::new());
    let writer = Writer::spawn(&log, synth_lines(n, 2), false);
    // Ids written while logrotate ran (copy → truncate): the only place loss is allowed.
    let mut windows: Vec<(u64, u64)> = Vec::new();
    let in_window = |windows: &[(u64, u64)], id: u64| windows.iter().any(|&(a, b)| id > a && id <= b + 1);
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "every line outside the copy→truncate windows", |rec| {
        if windows.len() < 2 && writer.written() >= (windows.len() as u64 + 1) * n / 3 {
            let before = writer.written();
            logrotate(dir.path(), &config);
            windows.push((before, writer.written()));
        }
        windows.len() == 2
            && writer.finished()
            && (1..=n).all(|id| rec.seen.contains_key(&id) || in_window(&windows, id))
    });
    let missing = rec.missing(1..=n);
    let allowed: u64 = windows.iter().map(|(a, b)| b + 1 - a).sum();
    assert!(missing.iter().all(|&id| in_window(&windows, id)), "lost outside the windows {windows:?}: {missing:?}");
    assert!(missing.len() as u64 <= allowed);
    assert_eq!(rec.duplicates(), 0, "duplicates");
    assert!(rec.other.is_empty(), "garbage lines: {:?}", lossy(&rec.other));
    assert_eq!(tel.truncations.load(Relaxed), 2, "each copytruncate is one new generation");
    // What logrotate copied was read, from the copy if not before the truncate: the loss is
    // only what was written between the end of the copy and the truncate.
    for copy in ["access.log.1", "access.log.2"] {
        let body = fs::read(logs.join(copy)).unwrap();
        let ids: Vec<u64> = body.split(|&b| b == b'\n').filter_map(id_of).collect();
        assert!(!ids.is_empty());
        assert!(rec.has_all(ids.iter().copied()), "lines of {copy} lost: {:?}", rec.missing(ids));
    }
    eprintln!("copytruncate: {} of {n} lines lost inside windows {windows:?}", missing.len());
}

// ---- row 3: compress / delaycompress (Debian's nginx config)

fn logrotate_compress_never_reads_gz(inotify: bool) {
    logrotate_compressing(inotify, false)
}

fn logrotate_delaycompress_never_reads_gz(inotify: bool) {
    logrotate_compressing(inotify, true)
}

/// The pattern `access.log*` also matches `access.log.1` and the `.gz` files: identity keeps the
/// renamed file from being read twice, and compressed rotations are never read.
fn logrotate_compressing(inotify: bool, delay: bool) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    let config = format!(
        "{} {{\n  daily\n  rotate 14\n  missingok\n  notifempty\n  create 0640 root root\n  compress\n  {}\n}}\n",
        log.display(),
        if delay { "delaycompress" } else { "" }
    );
    let n = 3000;
    let pattern = logs.join("access.log*");
    let (mut t, tel) = start(&[&pattern], options(inotify), Vec::new());
    let writer = Writer::spawn(&log, synth_lines(n, 3), true);
    let mut rotations = 0;
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "every line across three compressing rotations", |rec| {
        if rotations < 3 && writer.written() >= (rotations + 1) * n / 4 {
            logrotate(dir.path(), &config);
            rotations += 1;
        }
        rotations == 3 && writer.finished() && rec.has_all(1..=n)
    });
    rec.assert_exactly(1..=n);
    let gz = fs::read_dir(&logs).unwrap().flatten().filter(|e| e.path().extension().is_some_and(|x| x == "gz")).count();
    assert!(gz >= 1, "logrotate compressed something");
    drive(&mut t, &mut rec, "everything written read", |_| gauge(&tel.source_lag_bytes) == 0);
    rec.assert_exactly(1..=n);
}

// ---- row 4: deleted while being read

fn deleted_while_being_read_is_drained_then_released(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let n = 20_000;
    let pad = "x".repeat(80);
    let body: Vec<u8> = (1..=n).flat_map(|i| format!("line {i} {pad}\n").into_bytes()).collect();
    fs::write(&log, &body).unwrap();
    let (mut t, tel) = start(&[&log], options(inotify), Vec::new());
    let mut rec = Rec::default();
    let r = t.poll(&mut rec, 64 * 1024);
    assert!(r.more_pending, "a 64 KiB budget reads part of a 1.8 MB file");
    assert!(r.bytes_read <= 64 * 1024 + 16 * 1024 + 1);
    assert!(rec.seen.len() < n as usize);
    fs::remove_file(&log).unwrap();
    drive(&mut t, &mut rec, "the deleted file read to EOF through its descriptor", |rec| rec.has_all(1..=n));
    drive(&mut t, &mut rec, "the deleted file released", |_| gauge(&tel.files_open) == 0);
    rec.assert_exactly(1..=n);
    assert_eq!(gauge(&tel.sources_waiting), 1, "the path is waited for again");
    assert_eq!(tel.rotations.load(Relaxed), 1);
    assert!(t.checkpoints().is_empty());
}

// ---- row 5: truncation in place, refill to the same and a larger size

fn truncation_and_refill_start_new_generations(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    fs::write(&log, numbered(1..=100)).unwrap();
    let (mut t, tel) = start(&[&log], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "generation 1", |r| r.has_all(1..=100));
    let truncate = || OpenOptions::new().write(true).open(&log).unwrap().set_len(0).unwrap();
    truncate();
    drive(&mut t, &mut rec, "truncate -s 0 seen", |_| tel.truncations.load(Relaxed) == 1);
    append(&log, &numbered(101..=150));
    drive(&mut t, &mut rec, "generation 2", |r| r.has_all(101..=150));
    // Truncated and refilled to exactly the same size before any poll: only the head tells.
    truncate();
    append(&log, &numbered(151..=200));
    assert_eq!(fs::metadata(&log).unwrap().len(), 50 * 12);
    drive(&mut t, &mut rec, "generation 3 (same size)", |r| r.has_all(151..=200));
    // Refilled past the old size before any poll.
    truncate();
    append(&log, &numbered(201..=400));
    drive(&mut t, &mut rec, "generation 4 (larger)", |r| r.has_all(201..=400));
    rec.assert_exactly(1..=400);
    assert_eq!(tel.truncations.load(Relaxed), 3);
    assert_eq!(t.checkpoints()[0].offset, 200 * 12);
}

// ---- row 6: inode reuse

/// Creates `path` with `content`, retrying (delete, recreate) until it gets inode `want`.
/// Returns whether it did; ext4 hands a freed inode out again at once.
fn create_with_ino(path: &Path, content: &[u8], want: u64) -> bool {
    let scratch = path.with_extension("new");
    for _ in 0..200 {
        fs::write(&scratch, content).unwrap();
        if ino(&scratch) == want {
            fs::rename(&scratch, path).unwrap();
            return true;
        }
        fs::remove_file(&scratch).unwrap();
    }
    fs::write(path, content).unwrap();
    false
}

fn inode_reuse_never_inherits_an_offset(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // While running: the old file is released (its offset remembered), then its inode returns.
    fs::write(&log, numbered(1..=50)).unwrap();
    let old = ino(&log);
    let (mut t, tel) = start(&[&log], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the first file", |r| r.has_all(1..=50));
    fs::remove_file(&log).unwrap();
    drive(&mut t, &mut rec, "the deleted file released", |_| gauge(&tel.files_open) == 0);
    let reused = create_with_ino(&log, &numbered(51..=150), old);
    drive(&mut t, &mut rec, "the new file on the reused inode, from 0", |r| r.has_all(51..=150));
    rec.assert_exactly(1..=150);
    // Across a restart: the checkpoint names an inode that now holds another file.
    let cps = t.checkpoints();
    assert_eq!(cps.len(), 1);
    drop(t);
    fs::remove_file(&log).unwrap();
    let content = numbered(151..=400);
    let reused_again = create_with_ino(&log, &content, cps[0].ino);
    let mut cps = cps;
    if !reused_again {
        // The file system did not hand the inode out again: forge what reuse looks like.
        cps[0].dev = fs::metadata(&log).unwrap().dev();
        cps[0].ino = ino(&log);
    }
    assert!(content.len() as u64 > cps[0].offset, "the new file is long enough to be misread at the old offset");
    let (mut t, _tel) = start(&[&log], options(inotify), cps);
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the new file after restart, from 0", |r| r.has_all(151..=400));
    rec.assert_exactly(151..=400);
    eprintln!("inode reuse: while running {reused}, across restart {reused_again} (else simulated)");
}

// ---- row 7: two files with the same first KiB

fn identical_first_kib_in_two_files_both_read(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let header: Vec<u8> = (0..12).flat_map(|_| format!("# same header {}\n", "h".repeat(84)).into_bytes()).collect();
    assert!(header.len() > 1024);
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    fs::write(&a, [&header[..], &numbered(1..=100)].concat()).unwrap();
    fs::write(&b, [&header[..], &numbered(1001..=1100)].concat()).unwrap();
    let pattern = dir.path().join("*.log");
    let (mut t, tel) = start(&[&pattern], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "both files", |r| r.has_all((1..=100).chain(1001..=1100)));
    assert_eq!(rec.other.len(), 24, "the header of each file, once each");
    assert_eq!(gauge(&tel.files_open), 2);
    let cps = t.checkpoints();
    assert_eq!(cps.len(), 2);
    assert_eq!(cps[0].fingerprint, cps[1].fingerprint, "same fingerprint, told apart by inode");
    drop(t);
    append(&a, &numbered(101..=150));
    append(&b, &numbered(1101..=1150));
    let (mut t, _tel) = start(&[&pattern], options(inotify), cps);
    let mut rec2 = Rec::default();
    drive(&mut t, &mut rec2, "both files after restart", |r| r.has_all((101..=150).chain(1101..=1150)));
    assert!(rec2.other.is_empty(), "headers not re-read");
    assert_eq!(rec2.seen.len(), 100);
    assert_eq!(rec.duplicates() + rec2.duplicates(), 0);
}

// ---- row 8: partial last line completed later, also across a restart

fn partial_line_completed_later_is_one_line(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    fs::write(&log, b"first\nabc").unwrap();
    let (mut t, _tel) = start(&[&log], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the complete line", |r| !r.other.is_empty());
    for _ in 0..3 {
        t.poll(&mut rec, 1 << 20);
    }
    assert_eq!(rec.other, [b"first".to_vec()], "no line before its '\\n'");
    append(&log, b"def\n");
    drive(&mut t, &mut rec, "the completed line", |r| r.other.len() == 2);
    assert_eq!(rec.other, [b"first".to_vec(), b"abcdef".to_vec()]);
    // Across a restart: the checkpoint stops before the partial part.
    append(&log, b"ghi");
    t.poll(&mut rec, 1 << 20);
    let cps = t.checkpoints();
    assert_eq!(cps[0].offset, 13, "after \"abcdef\\n\", before \"ghi\"");
    drop(t);
    append(&log, b"jkl\n");
    let (mut t, _tel) = start(&[&log], options(inotify), cps);
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the line completed while stopped", |r| !r.other.is_empty());
    t.poll(&mut rec, 1 << 20);
    assert_eq!(rec.other, [b"ghijkl".to_vec()]);
    assert!(rec.partial.is_empty());
}

// ---- row 9: partial line at rotation and deletion

fn partial_line_at_rotation_is_flushed_once(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let rotated = dir.path().join("access.log.1");
    fs::write(&log, b"line 1\nline 2\npart").unwrap();
    let (mut t, tel) = start(&[&log], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the complete lines", |r| r.has_all(1..=2));
    fs::rename(&log, &rotated).unwrap();
    fs::write(&log, b"line 3\n").unwrap();
    drive(&mut t, &mut rec, "the partial line flushed", |r| r.has_all([3]) && !r.partial.is_empty());
    drive(&mut t, &mut rec, "the rotated file released", |_| gauge(&tel.files_open) == 1);
    assert_eq!(rec.partial, [b"part".to_vec()], "flushed once, flagged");
    assert_eq!(tel.partial_lines.load(Relaxed), 1);

    // Completed through the old descriptor within the drain time: a normal line, no partial.
    append(&log, b"line 4\nline 5");
    drive(&mut t, &mut rec, "line 4", |r| r.has_all([4]));
    let mut old = OpenOptions::new().append(true).open(&log).unwrap();
    fs::rename(&log, &rotated).unwrap();
    fs::write(&log, b"line 6\n").unwrap();
    drive(&mut t, &mut rec, "the new file", |r| r.has_all([6]));
    old.write_all(b"5\n").unwrap();
    drive(&mut t, &mut rec, "the line completed after rotation", |r| r.has_all([55]));
    drive(&mut t, &mut rec, "the rotated file released", |_| gauge(&tel.files_open) == 1);
    assert_eq!(tel.partial_lines.load(Relaxed), 1);

    // Deleted with a partial last line.
    append(&log, b"line 7\npar");
    drive(&mut t, &mut rec, "line 7", |r| r.has_all([7]));
    fs::remove_file(&log).unwrap();
    drive(&mut t, &mut rec, "the deleted file's partial line", |r| r.partial.len() == 2);
    drive(&mut t, &mut rec, "the deleted file released", |_| gauge(&tel.files_open) == 0);
    assert_eq!(rec.partial, [b"part".to_vec(), b"par".to_vec()]);
    assert_eq!(tel.partial_lines.load(Relaxed), 2);
    let mut expected: Vec<u64> = rec.seen.keys().copied().collect();
    expected.sort();
    assert_eq!(expected, [1, 2, 3, 4, 6, 7, 55]);
    assert_eq!(rec.duplicates(), 0);
}

// ---- row 10: file and directory appear late

fn late_file_and_directory_are_picked_up(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("late/sub/access.log");
    let glob = dir.path().join("later/*.log");
    let (mut t, tel) = start(&[&log, &glob], options(inotify), Vec::new());
    let mut rec = Rec::default();
    t.poll(&mut rec, 1 << 20);
    assert_eq!(gauge(&tel.sources_waiting), 2);
    assert_eq!(gauge(&tel.files_open), 0);
    fs::create_dir_all(log.parent().unwrap()).unwrap();
    fs::write(&log, numbered(1..=100)).unwrap();
    drive(&mut t, &mut rec, "the late file in a late directory", |r| r.has_all(1..=100));
    fs::create_dir(dir.path().join("later")).unwrap();
    fs::write(dir.path().join("later/x.log"), numbered(101..=200)).unwrap();
    drive(&mut t, &mut rec, "the late glob match", |r| r.has_all(101..=200));
    append(&log, &numbered(201..=300));
    drive(&mut t, &mut rec, "growth of the late file", |r| r.has_all(201..=300));
    rec.assert_exactly(1..=300);
    assert_eq!(gauge(&tel.sources_waiting), 0);
    assert_eq!(gauge(&tel.files_open), 2);
}

// ---- row 11: symlinked path retargeted with `ln -sfn`

fn ln_sfn(target: &Path, link: &Path) {
    let st = Command::new("ln").arg("-sfn").arg(target).arg(link).status().unwrap();
    assert!(st.success());
}

fn symlink_retargeted_is_followed_by_identity(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    let link = dir.path().join("current.log");
    fs::write(&a, numbered(1..=100)).unwrap();
    fs::write(&b, numbered(1001..=1100)).unwrap();
    ln_sfn(&a, &link);
    let (mut t, tel) = start(&[&link], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the first target", |r| r.has_all(1..=100));
    ln_sfn(&b, &link);
    append(&a, &numbered(101..=150)); // the old target still written to for a moment
    drive(&mut t, &mut rec, "the new target and the old one drained", |r| r.has_all((101..=150).chain(1001..=1100)));
    drive(&mut t, &mut rec, "the old target released", |_| gauge(&tel.files_open) == 1);
    // Back to the old target after it was released: continues at its offset, no re-read.
    ln_sfn(&a, &link);
    append(&a, &numbered(151..=200));
    drive(&mut t, &mut rec, "the old target again", |r| r.has_all(151..=200));
    drive(&mut t, &mut rec, "b released", |_| gauge(&tel.files_open) == 1);
    rec.assert_exactly_many(&[1..=200, 1001..=1100]);
    assert_eq!(tel.rotations.load(Relaxed), 2);
}

// ---- row 13: a watched directory removed and recreated

fn watched_directory_removed_and_recreated_loses_nothing(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    fs::write(&log, numbered(1..=100)).unwrap();
    let (mut t, tel) = start(&[&log], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the first file", |r| r.has_all(1..=100));
    append(&log, &numbered(101..=150)); // unread when the directory goes
    fs::remove_dir_all(&logs).unwrap();
    fs::create_dir(&logs).unwrap();
    fs::write(&log, numbered(151..=250)).unwrap();
    drive(&mut t, &mut rec, "both generations", |r| r.has_all(1..=250));
    // The recreated directory is watched again: a write shows up.
    append(&log, &numbered(251..=300));
    drive(&mut t, &mut rec, "growth in the recreated directory", |r| r.has_all(251..=300));
    rec.assert_exactly(1..=300);
    if inotify {
        assert!(tel.rescans.load(Relaxed) >= 1, "the lost watch is counted as a rescan");
    } else {
        assert_eq!(tel.rescans.load(Relaxed), 0, "no watches in poll mode");
    }
}

// ---- row 18 (and row 8's checkpoint contract): stopped across rotations

fn stopped_across_a_rotation_resumes_the_rotated_file(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    let config = format!("{} {{\n  rotate 14\n  missingok\n  create\n  compress\n  delaycompress\n}}\n", log.display());
    fs::write(&log, numbered(1..=100)).unwrap();
    let (mut t, _tel) = start(&[&log], options(inotify), Vec::new());
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "before the stop", |r| r.has_all(1..=100));
    let cps = t.checkpoints();
    drop(t);
    append(&log, &numbered(101..=150)); // written while stopped, then rotated away
    logrotate(dir.path(), &config);
    append(&log, &numbered(151..=200));
    assert!(logs.join("access.log.1").exists());
    let (mut t, tel) = start(&[&log], options(inotify), cps);
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the rotated file's rest, then the new file", |r| r.has_all(101..=200));
    rec.assert_exactly(101..=200);
    assert!(rec.order.windows(2).all(|w| w[0] < w[1]), "the rotated file first");
    drive(&mut t, &mut rec, "the rotated file released", |_| gauge(&tel.files_open) == 1);
    assert!(t.checkpoints().iter().all(|c| c.path == log));
}

fn stopped_across_two_rotations_reads_the_middle_one_whole(inotify: bool) {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    fs::create_dir(&logs).unwrap();
    let log = logs.join("access.log");
    let config = format!("{} {{\n  rotate 14\n  missingok\n  create\n}}\n", log.display());
    fs::write(&log, numbered(1..=100)).unwrap();
    logrotate(dir.path(), &config); // an older rotation, already read in a past life
    fs::write(&log, numbered(101..=200)).unwrap();
    let cps = {
        let (mut t, _tel) = start(&[&log], options(inotify), Vec::new());
        let mut rec = Rec::default();
        drive(&mut t, &mut rec, "before the stop", |r| r.has_all(101..=200));
        t.checkpoints()
    };
    append(&log, &numbered(201..=250));
    logrotate(dir.path(), &config);
    std::thread::sleep(Duration::from_millis(20)); // distinct mtimes on coarse-clock file systems
    append(&log, &numbered(251..=300));
    logrotate(dir.path(), &config);
    std::thread::sleep(Duration::from_millis(20));
    append(&log, &numbered(301..=350));
    assert!(logs.join("access.log.3").exists());
    let (mut t, _tel) = start(&[&log], options(inotify), cps);
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "the checkpointed file's rest, the middle rotation, the current file", |r| {
        r.has_all(201..=350)
    });
    t.poll(&mut rec, 1 << 20);
    rec.assert_exactly(201..=350);
    assert!(rec.order.windows(2).all(|w| w[0] < w[1]), "oldest generation first");
}

// ---- bounded lines, arbitrary bytes

#[test]
fn over_long_lines_binary_and_nul_bytes_keep_the_tail_going() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let opts = TailOptions { max_line_len: 200, ..options(false) };
    let (mut t, _tel) = start(&[&log], opts, Vec::new());
    let mut body = numbered(1..=10);
    body.extend(vec![b'A'; 100_000]); // far longer than the line bound and the read chunk
    body.push(b'\n');
    body.extend(b"line 000011 \x00\xff\xfe binary\r\n");
    body.extend(numbered(12..=20));
    fs::write(&log, &body).unwrap();
    let mut rec = Rec::default();
    drive(&mut t, &mut rec, "lines around an over-long one", |r| r.has_all(1..=20));
    rec.assert_exactly(1..=20);
    assert_eq!(rec.heads, [vec![b'A'; 200]], "the over-long line is judged by its head, once");
}

#[test]
fn small_budgets_are_shared_fairly_between_files() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
    fs::write(&a, numbered(1..=100_000)).unwrap();
    fs::write(&b, numbered(200_001..=300_000)).unwrap();
    let pattern = dir.path().join("*.log");
    let (mut t, _tel) = start(&[&pattern], options(false), Vec::new());
    let mut rec = Rec::default();
    let mut polls = 0;
    while t.poll(&mut rec, 128 * 1024).more_pending {
        polls += 1;
        let from_a = rec.seen.keys().filter(|&&id| id <= 100_000).count() as i64;
        let from_b = rec.seen.len() as i64 - from_a;
        if from_a < 100_000 && from_b < 100_000 {
            assert!((from_a - from_b).abs() <= 2 * 64 * 1024 / 12, "unfair: a {from_a}, b {from_b}");
        }
        assert!(polls < 1000);
    }
    assert!(polls >= 15, "a 2.4 MB backlog under a 128 KiB budget takes many polls ({polls})");
    rec.assert_exactly_many(&[1..=100_000, 200_001..=300_000]);
}

impl Rec {
    fn assert_exactly_many(&self, ranges: &[std::ops::RangeInclusive<u64>]) {
        let total: u64 = ranges.iter().map(|r| r.end() - r.start() + 1).sum();
        for r in ranges {
            assert!(self.has_all(r.clone()), "missing ids in {r:?}");
        }
        assert_eq!(self.seen.len() as u64, total);
        assert_eq!(self.duplicates(), 0);
    }
}

/// Checkpoints serialise and survive a round trip (the caller persists them as JSON).
#[test]
fn checkpoints_round_trip_through_json() {
    let cp = FileCheckpoint {
        source: 3,
        path: PathBuf::from("/var/log/nginx/access.log"),
        dev: 2049,
        ino: 1234,
        fingerprint_len: 1024,
        fingerprint: u64::MAX,
        offset: 42,
    };
    let json = serde_json::to_string(&cp).unwrap();
    assert_eq!(serde_json::from_str::<FileCheckpoint>(&json).unwrap(), cp);
}

// ---- inotify shortens the wait (the poll interval is only the safety net)

#[test]
fn inotify_wakes_the_wait_on_append_rotation_and_late_directory() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("logs/access.log");
    let opts = TailOptions { poll_interval: Duration::from_secs(30), ..options(true) };
    let (mut t, _tel) = start(&[&log], opts, Vec::new());
    let mut rec = Rec::default();
    t.poll(&mut rec, 1 << 20);
    // Each step: one change, then the waits must end long before the 30 s poll interval.
    let step = |t: &mut Tailer, rec: &mut Rec, change: &dyn Fn(), ids: &[u64]| {
        change();
        let started = Instant::now();
        loop {
            t.wait(Duration::from_secs(30));
            t.poll(rec, 1 << 20);
            assert!(started.elapsed() < Duration::from_secs(10), "no inotify wake-up for {ids:?}");
            if rec.has_all(ids.iter().copied()) {
                break;
            }
        }
    };
    let ids = |r: std::ops::RangeInclusive<u64>| r.collect::<Vec<u64>>();
    step(&mut t, &mut rec, &|| fs::create_dir(log.parent().unwrap()).unwrap(), &[]);
    step(&mut t, &mut rec, &|| fs::write(&log, numbered(1..=10)).unwrap(), &ids(1..=10));
    step(&mut t, &mut rec, &|| append(&log, &numbered(11..=20)), &ids(11..=20));
    let rotate = || {
        fs::rename(&log, log.with_extension("log.1")).unwrap();
        fs::write(&log, numbered(21..=30)).unwrap();
    };
    step(&mut t, &mut rec, &rotate, &ids(21..=30));
    rec.assert_exactly(1..=30);
}

// ---- model-based: random sequences against the set of ids written

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) % n
    }
}

/// The model: what was written where, and what the tailer owes.
struct Model {
    log: PathBuf,
    /// The writer's handle on the current file (None after a deletion: the next append creates).
    file: Option<fs::File>,
    next_id: u64,
    /// Ids of complete lines written.
    written: Vec<u64>,
    /// The rest of a half-written line in the current file.
    half: Option<(u64, Vec<u8>, Vec<u8>)>,
    /// Halves left behind in rotated or deleted files: owed as partial lines.
    partials: Vec<Vec<u8>>,
    /// Lines over the bound written (each owed once as its head).
    truncated: u64,
    generation: u32,
}

impl Model {
    fn line(&mut self) -> (u64, Vec<u8>) {
        let id = self.next_id;
        self.next_id += 1;
        (id, format!("line {id:06} {}\n", "p".repeat((id % 23) as usize)).into_bytes())
    }

    fn write(&mut self, bytes: &[u8]) {
        if self.file.is_none() {
            self.file = Some(OpenOptions::new().create(true).append(true).open(&self.log).unwrap());
        }
        self.file.as_mut().unwrap().write_all(bytes).unwrap();
    }

    fn complete_half(&mut self) {
        if let Some((id, _, rest)) = self.half.take() {
            self.write(&rest);
            self.written.push(id);
        }
    }

    fn append(&mut self, rng: &mut Rng) {
        self.complete_half();
        for _ in 0..1 + rng.below(20) {
            if rng.below(30) == 0 {
                self.write(&[b'L'; 100]);
                self.write(b"\n");
                self.truncated += 1;
            }
            let (id, line) = self.line();
            self.write(&line);
            self.written.push(id);
        }
        if rng.below(3) == 0 {
            let (id, line) = self.line();
            let cut = 1 + rng.below(line.len() as u64 - 2) as usize;
            self.write(&line[..cut]);
            self.half = Some((id, line[..cut].to_vec(), line[cut..].to_vec()));
        }
    }

    /// The half line stays behind in a file that leaves the path.
    fn abandon_half(&mut self) {
        if let Some((_, head, _)) = self.half.take() {
            self.partials.push(head);
        }
    }
}

fn caught_up(m: &Model, rec: &Rec, tel: &Telemetry) -> bool {
    rec.has_all(m.written.iter().copied()) && rec.partial.len() == m.partials.len() && gauge(&tel.files_open) <= 1
}

#[test]
fn random_write_rotate_truncate_delete_restart_sequences_match_the_model() {
    let _ = tracing_subscriber::fmt().with_env_filter("recwatch=debug").with_test_writer().try_init();
    for seed in 1..=16u64 {
        eprintln!("SEED {seed}");
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        let opts = TailOptions {
            use_inotify: seed % 2 == 0,
            max_line_len: 64,
            read_chunk: 4096,
            // Safe this short here: the model's writes to a rotated file all happen before the
            // next poll, and a poll reads growth before it decides to release.
            rotated_drain: Duration::from_millis(50),
            poll_interval: Duration::from_millis(50),
        };
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
        let mut m = Model {
            log: log.clone(),
            file: None,
            next_id: 1,
            written: Vec::new(),
            half: None,
            partials: Vec::new(),
            truncated: 0,
            generation: 0,
        };
        let (mut t, mut tel) = start(&[&log], opts.clone(), Vec::new());
        let mut rec = Rec::default();
        for _ in 0..150 {
            let mut must_poll = false;
            let op = rng.below(100);
            eprintln!(
                "op {op} next_id {} half {:?} file {}",
                m.next_id,
                m.half.as_ref().map(|h| h.0),
                m.file.is_some()
            );
            if (55..=74).contains(&op) {
                // The file leaves the path: a scan must have seen it (a file rotated or deleted
                // before any scan is invisible to every tailer of a plain path, and documented).
                t.poll(&mut rec, 1 + rng.below(64 * 1024) as usize);
            }
            match op {
                0..=54 => m.append(&mut rng),
                55..=66 if m.file.is_some() => {
                    // Rotation (rename + create); the writer may finish its line and append a
                    // little more to the old file before reopening, like nginx before USR1.
                    m.generation += 1;
                    fs::rename(&log, log.with_extension(format!("log.{}", m.generation))).unwrap();
                    if rng.below(2) == 0 {
                        m.append(&mut rng);
                    }
                    m.abandon_half();
                    m.file = Some(OpenOptions::new().create_new(true).append(true).open(&log).unwrap());
                    must_poll = true;
                }
                67..=74 if m.file.is_some() => {
                    fs::remove_file(&log).unwrap();
                    m.abandon_half();
                    m.file = None;
                    must_poll = true;
                }
                75..=84 if m.file.is_some() => {
                    // Truncation once everything was read (loss before that is allowed, and
                    // tested with copytruncate); sometimes refilled before any poll.
                    m.complete_half();
                    drive(&mut t, &mut rec, "catching up before a truncation", |r| {
                        r.has_all(m.written.iter().copied())
                    });
                    m.file.as_ref().unwrap().set_len(0).unwrap();
                    if rng.below(2) == 0 {
                        m.append(&mut rng);
                    }
                    must_poll = true;
                }
                85..=89 => {
                    // Restart with the checkpoints once every line was handed out and rotated
                    // files were released.
                    drive(&mut t, &mut rec, "catching up before a restart", |r| caught_up(&m, r, &tel));
                    let cps = t.checkpoints();
                    drop(t);
                    (t, tel) = start(&[&log], opts.clone(), cps);
                }
                _ => {}
            }
            // The tailer sees every generation at the path at least once (a file rotated away
            // before any scan saw it is invisible to every tailer following a plain path).
            for _ in 0..rng.below(3).max(u64::from(must_poll)) {
                t.poll(&mut rec, 1 + rng.below(64 * 1024) as usize);
            }
        }
        m.complete_half();
        drive(&mut t, &mut rec, "the model's lines", |r| caught_up(&m, r, &tel));
        let written: std::collections::BTreeSet<u64> = m.written.iter().copied().collect();
        let seen: std::collections::BTreeSet<u64> = rec.seen.keys().copied().collect();
        assert_eq!(seen, written, "seed {seed}: ids seen differ from ids written");
        assert_eq!(rec.duplicates(), 0, "seed {seed}: duplicates");
        assert_eq!(rec.partial, m.partials, "seed {seed}: partial lines");
        assert_eq!(rec.heads.len() as u64, m.truncated, "seed {seed}: over-long lines");
        assert!(rec.heads.iter().all(|h| *h == [b'L'; 64]), "seed {seed}: heads");
        assert!(rec.other.is_empty(), "seed {seed}: {:?}", lossy(&rec.other));
    }
}

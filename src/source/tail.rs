//! Follows access logs (paths or globs) across rotation, truncation, deletion and symlink
//! retargeting, and hands complete lines to a [`LineSink`]. Owns file identity (device, inode,
//! head fingerprint), read offsets and checkpoints, the open descriptors of rotated files being
//! drained, and the partial-line policy. Never parses a line and never allocates per line;
//! lines are cut by [`crate::source::framing::Framer`], one per followed file.

use std::collections::{HashSet, VecDeque};
use std::fs::{self, File, Metadata};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};
use xxhash_rust::xxh3::xxh3_64;

use crate::source::framing::{Frame, Framer};
use crate::telemetry::{FileOp, RescanReason, Telemetry};

/// Bytes of a file's head hashed into its fingerprint.
pub const FINGERPRINT_MAX: usize = 1024;
/// Bytes before the checkpoint offset remembered (as a hash) to recognise a copytruncate copy.
const ANCHOR_MAX: usize = 256;
/// Identities of released files remembered, so a file that comes back (a symlink retargeted
/// back, a glob that matches it again) continues at its offset instead of being re-read.
const RELEASED_MEMORY: usize = 256;
/// Rotated siblings with these extensions are compressed: never read, never matched by a glob.
const COMPRESSED_EXTENSIONS: &[&str] = &["gz", "bz2", "xz", "zst", "lz4", "lzma", "zip", "Z", "br"];

/// One configured input: a path or a glob like `/var/log/nginx/*access.log`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailSource {
    /// Passed back with every line and in checkpoints.
    pub index: u16,
    pub pattern: String,
}

#[derive(Clone, Debug)]
pub struct TailOptions {
    /// How often a full stat scan runs at the latest (the safety net under inotify).
    pub poll_interval: Duration,
    /// `false` = pure-poll mode, for NFS/SMB where inotify never fires.
    pub use_inotify: bool,
    /// Longer lines are handed out as their first `max_line_len` bytes
    /// ([`LineSink::truncated`]); the rest is dropped as it is read, never buffered.
    pub max_line_len: usize,
    /// Bytes read per `pread` at most (less where the poll's budget or the sink's
    /// [`LineSink::read_hint`] says); raised to `max_line_len + 1` so a full read always
    /// frames a line.
    pub read_chunk: usize,
    /// How long a rotated-away or deleted file stays open after its last growth: the writer
    /// (nginx before `USR1`) may still append to it.
    pub rotated_drain: Duration,
}

impl Default for TailOptions {
    fn default() -> Self {
        TailOptions {
            poll_interval: Duration::from_millis(250),
            use_inotify: true,
            max_line_len: crate::parse::MAX_LINE_LEN,
            read_chunk: 256 * 1024,
            rotated_drain: Duration::from_secs(5),
        }
    }
}

/// Where a followed file stands, to be persisted by the caller once every line before `offset`
/// is durably processed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FileCheckpoint {
    pub source: u16,
    /// The path the file was followed at (where the pattern matched it), not necessarily its
    /// current name: on resume its rotated siblings are searched next to this path.
    pub path: PathBuf,
    pub dev: u64,
    pub ino: u64,
    /// Bytes of the head covered by `fingerprint` (at most [`FINGERPRINT_MAX`]).
    pub fingerprint_len: u32,
    pub fingerprint: u64,
    /// Just after the last complete line handed out.
    pub offset: u64,
}

/// Receives what the tailer reads. Slices borrow the tailer's read buffer.
pub trait LineSink {
    /// A complete line, without its `\n` (a `\r` before it is left for the parser).
    fn line(&mut self, source: u16, line: &[u8]);
    /// The first `max_line_len` bytes of a longer line, handed out once; the rest of the line
    /// is dropped up to its `\n` and tailing continues. The checkpoint moves past the line
    /// once its `\n` is read: a restart before that hands the head out again.
    fn truncated(&mut self, source: u16, head: &[u8]);
    /// The incomplete last line of a rotated or deleted file, flushed once when the file is
    /// released (flagged so the consumer can tell it may be cut).
    fn partial_line(&mut self, source: u16, line: &[u8]);
    /// The lines handed out from now on were already counted before a restart
    /// ([`Tailer::counted_through`]): read again only to rebuild windows. Called with `true`
    /// before such a run of lines and with `false` right after it.
    fn rereading(&mut self, _source: u16, _rereading: bool) {}
    /// The lines handed out since the last barrier are enough for one: the poll ends after
    /// the current read.
    fn barrier_due(&self) -> bool {
        false
    }
    /// About how many more bytes the sink takes before its barrier is due: the next read is
    /// at most that (and at least [`MIN_READ`]).
    fn read_hint(&self) -> usize {
        usize::MAX
    }
}

/// The smallest read: a read smaller than `max_line_len + 1` that holds no whole line is made
/// again with the whole buffer.
const MIN_READ: usize = 4096;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollResult {
    /// File bytes consumed by this poll (positions advanced, re-reads of a partial tail excluded).
    pub bytes_read: u64,
    /// Some file still has unread bytes (the byte budget ran out): poll again without waiting.
    pub more_pending: bool,
}

/// A compiled [`TailSource`].
struct Source {
    index: u16,
    pattern: String,
    /// `None` for a plain path.
    glob: Option<glob::Pattern>,
    /// The deepest directory of the pattern without wildcards (the directory watched).
    literal_dir: PathBuf,
    /// Wildcards only in the file name: events elsewhere in `literal_dir` are not ours.
    glob_in_name_only: bool,
}

impl Source {
    fn new(s: &TailSource) -> Source {
        let is_glob = s.pattern.contains(['*', '?', '[']);
        let glob = if is_glob {
            match glob::Pattern::new(&s.pattern) {
                Ok(p) => Some(p),
                Err(e) => {
                    warn!(source = s.index, pattern = %s.pattern, error = %e, "invalid glob, followed as a plain path");
                    None
                }
            }
        } else {
            None
        };
        let path = Path::new(&s.pattern);
        let literal_dir = match glob {
            None => parent_dir(path),
            Some(_) => {
                let mut dir = PathBuf::new();
                for c in path.components() {
                    if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
                        break;
                    }
                    dir.push(c);
                }
                if dir.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    dir
                }
            }
        };
        let glob_in_name_only = glob.is_some() && parent_dir(path) == literal_dir;
        Source { index: s.index, pattern: s.pattern.clone(), glob, literal_dir, glob_in_name_only }
    }

    fn matches(&self, p: &Path) -> bool {
        match &self.glob {
            None => p == Path::new(&self.pattern),
            Some(g) => g.matches_path(p),
        }
    }

    /// Paths currently matching, in a stable order (compressed files excluded from globs).
    fn expand(&self, out: &mut Vec<PathBuf>) {
        if self.glob.is_none() {
            out.push(PathBuf::from(&self.pattern));
            return;
        }
        match glob::glob(&self.pattern) {
            Ok(paths) => out.extend(paths.flatten().filter(|p| !is_compressed(p))),
            Err(e) => debug!(source = self.index, error = %e, "glob failed"),
        }
    }

    /// An inotify event on `p` may concern this source.
    fn interested_in(&self, p: &Path) -> bool {
        if self.matches(p) || self.literal_dir.starts_with(p) {
            return true;
        }
        self.glob.is_some() && !self.glob_in_name_only && p.starts_with(&self.literal_dir)
    }
}

/// A file being followed (one generation of one inode).
struct Followed {
    source: u16,
    /// Path at which the pattern matched it first: names its lineage and its checkpoint.
    origin: PathBuf,
    /// `origin` with symlinks resolved at open (for inotify relevance and copy lookups).
    real: PathBuf,
    file: File,
    dev: u64,
    ino: u64,
    fp_len: u32,
    fp: u64,
    /// Just after the last complete line handed out (the checkpoint).
    offset: u64,
    /// Where the next read starts: `offset`, or further inside a truncated line being dropped.
    read_pos: u64,
    /// The line bound, and whether the rest of a truncated line is being dropped.
    framer: Framer,
    /// Bytes of the file looked at so far (a partial tail is re-read only once it grew).
    scanned_to: u64,
    /// Size at the last `fstat` (or larger, if a read found more): a smaller size is a truncation.
    size: u64,
    /// A read hit EOF during this poll.
    hit_eof: bool,
    /// Hash of the (up to [`ANCHOR_MAX`]) bytes just before `offset`: recognises a copytruncate copy.
    anchor_len: u32,
    anchor: u64,
    /// Lines before this offset were counted before a restart (the durable checkpoint's
    /// position of this file): read again only to rebuild windows, flagged to the sink.
    counted_to: u64,
    /// Generation order within the lineage (`source`, `origin`): older generations are read first.
    seq: u64,
    /// Seen at a pattern path by the current scan.
    at_pattern: bool,
    /// Not at any pattern path any more (renamed, deleted, symlink retargeted): draining.
    rotated: bool,
    last_growth: Instant,
    /// Last time the head fingerprint was verified intact.
    verified_at: SystemTime,
}

impl Followed {
    fn pending(&self) -> bool {
        !self.hit_eof && self.size > self.scanned_to
    }

    fn lag(&self) -> u64 {
        self.size.saturating_sub(self.scanned_to)
    }

    /// Where lines are done: the read position, or, while lines counted before a restart are
    /// read again, the position they were counted through (a checkpoint taken then and
    /// persisted must not move that back: after another crash the lines between would be
    /// counted twice).
    fn checkpoint(&self) -> FileCheckpoint {
        FileCheckpoint {
            source: self.source,
            path: self.origin.clone(),
            dev: self.dev,
            ino: self.ino,
            fingerprint_len: self.fp_len,
            fingerprint: self.fp,
            offset: self.offset.max(self.counted_to),
        }
    }
}

/// Identity and position of a released file that still exists under another name.
struct Released {
    dev: u64,
    ino: u64,
    /// Birth time where the file system reports one: a reused inode is born again, so a short
    /// fingerprint that happens to match the new file's first bytes cannot fool the match.
    born: Option<SystemTime>,
    fp_len: u32,
    fp: u64,
    offset: u64,
}

/// Where a new file starts reading.
enum Start<'a> {
    /// At offset 0, unless a released identity matches.
    New,
    /// At the checkpoint's offset if the identity still matches, else at 0.
    Resume(&'a FileCheckpoint),
    /// At the checkpoint's offset if the identity still matches, else not followed at all (a
    /// rotated sibling that only shares the inode number is not ours to read).
    ResumeOnly(&'a FileCheckpoint),
}

type WatchEvent = notify::Result<notify::Event>;

struct Watch {
    watcher: notify::RecommendedWatcher,
    rx: crossbeam_channel::Receiver<WatchEvent>,
    /// Directories watched, with the identity they had when the watch was added.
    watched: Vec<(PathBuf, (u64, u64))>,
    /// Adding a watch failed at the last attempt (counted once per failure streak).
    failing: bool,
    #[cfg(test)]
    inject: crossbeam_channel::Sender<WatchEvent>,
}

/// This tailer's contribution to the shared gauges (several tailers may add to them).
#[derive(Clone, Copy, Default)]
struct Gauges {
    open: i64,
    waiting: i64,
    lag: i64,
}

/// Follows the files of a set of sources. Not shared between threads: one owner polls it.
///
/// # How files are followed
/// Every [`Tailer::poll`] is a full stat scan: globs are re-evaluated, every followed file is
/// `fstat`ed and its head fingerprint verified, new data is read. inotify (watches on the parent
/// directories of the patterns) only shortens [`Tailer::wait`]; with `use_inotify = false`
/// (NFS/SMB) the results are the same, only later.
///
/// A file is followed by identity, not by name: (dev, inode, fingerprint), the fingerprint being
/// the xxh3 of its first `min(len, 1024)` bytes (recomputed as the file grows, verified on every
/// poll). A file that leaves its pattern path (renamed, deleted, symlink retargeted) keeps its
/// descriptor and is drained to EOF; it is released once it has not grown for
/// `rotated_drain`, and an incomplete last line is then flushed once as
/// [`LineSink::partial_line`]. A file that shrinks or whose head changes is a new generation
/// (read from 0, `truncations` counted).
///
/// # Where reading starts
/// - A file matching a pattern with no checkpoint is read **from the beginning** — on the first
///   start too: the tailer cannot tell "old" lines from lines written while it was not running.
/// - A `resume` checkpoint is matched by identity against the files matching the patterns and
///   their rotated siblings (every uncompressed file in the same directory whose name starts with
///   the checkpoint's file name); the match continues at the checkpoint's offset, and siblings
///   newer (mtime) than a matched rotated file, which no checkpoint covers, are read from 0 before
///   the current file. An offset is never inherited across a different identity (inode reuse).
///
/// # Where lines can be lost (each case is logged)
/// - The writer appends to a rotated or deleted file more than `rotated_drain` after its last
///   growth (the descriptor was released).
/// - copytruncate: lines written after logrotate's copy and before its truncate (`truncations`).
///   Lines in the copy that were not read yet are recovered from the copy when it is found next to
///   the file (same head fingerprint, same bytes before our offset).
/// - A file rewritten in place (truncated and refilled) past our offset before a poll saw it, with
///   the same first 1 KiB: indistinguishable from growth.
/// - A file rotated away or deleted before any scan saw it at its path (two rotations within one
///   scan interval, or a file written and deleted in between).
/// - While the daemon is stopped: a checkpointed file compressed or deleted (the rest of it), and
///   then also any intermediate rotation no checkpoint covers (logged as a warning).
pub struct Tailer {
    sources: Vec<Source>,
    opts: TailOptions,
    files: Vec<Followed>,
    /// `resume` checkpoints not matched yet (their directory does not exist right now).
    pending: Vec<FileCheckpoint>,
    /// Positions up to which lines were counted before a restart, not matched to a file yet.
    counted: Vec<FileCheckpoint>,
    released: VecDeque<Released>,
    /// The one read buffer (`read_chunk` bytes); lines handed out borrow it.
    buf: Vec<u8>,
    telemetry: Arc<Telemetry>,
    next_seq: u64,
    /// Round-robin start, so no file is always read first under a small byte budget.
    rr: usize,
    published: Gauges,
    watch: Option<Watch>,
    /// Poll again at once (an inotify rescan, a lost or failed watch).
    wake_now: bool,
    last_more_pending: bool,
    /// Sources whose pattern matches no file right now (logged once when it starts).
    waiting_sources: HashSet<u16>,
}

impl Tailer {
    /// Builds the tailer; no file is opened before the first [`Tailer::poll`]. With
    /// `use_inotify` and no inotify available, it falls back to polling (`rescans` counted).
    pub fn new(
        sources: Vec<TailSource>,
        mut opts: TailOptions,
        resume: Vec<FileCheckpoint>,
        telemetry: Arc<Telemetry>,
    ) -> Tailer {
        opts.max_line_len = opts.max_line_len.max(1);
        opts.read_chunk = opts.read_chunk.max(opts.max_line_len + 1).max(4096);
        let sources: Vec<Source> = sources.iter().map(Source::new).collect();
        // A checkpoint of a source that is no longer configured (or whose pattern changed) is
        // not resumed: its files are no longer ours to read.
        let pending = resume
            .into_iter()
            .filter(|cp| {
                let ours = sources.iter().any(|s| s.index == cp.source && s.matches(&cp.path));
                if !ours {
                    info!(source = cp.source, path = %cp.path.display(), "checkpoint of a source no longer configured: ignored");
                }
                ours
            })
            .collect();
        let watch = if opts.use_inotify { start_watch(&telemetry) } else { None };
        Tailer {
            waiting_sources: HashSet::new(),
            sources,
            buf: vec![0; opts.read_chunk],
            opts,
            files: Vec::new(),
            pending,
            counted: Vec::new(),
            released: VecDeque::new(),
            telemetry,
            next_seq: 0,
            rr: 0,
            published: Gauges::default(),
            wake_now: false,
            watch,
            last_more_pending: false,
        }
    }

    /// One pass: re-evaluates globs, stats every known file, detects rotation, truncation,
    /// deletion and new files, reads new complete lines (at most about `max_bytes` in total,
    /// round-robin across files, older generations of a file first) into the sink, and releases
    /// drained rotated files. Never blocks waiting for data.
    pub fn poll<S: LineSink>(&mut self, sink: &mut S, max_bytes: usize) -> PollResult {
        let now = Instant::now();
        self.drain_events();
        let waiting = self.scan(now);
        self.check_files(now);
        // Before reading too: a poll can take long (a 4 MiB budget under load), and a gauge
        // still showing the last poll (0 before the first one) would claim no backlog meanwhile.
        self.publish(waiting);
        let (bytes_read, more_pending) = self.read_files(sink, max_bytes);
        self.extend_fingerprints();
        self.release_drained(sink, now);
        self.update_watches();
        self.publish(waiting);
        self.last_more_pending = more_pending;
        PollResult { bytes_read, more_pending }
    }

    /// Where lines were counted through before a restart (the durable checkpoint's files,
    /// while `resume` is further back so windows are rebuilt): lines of those files before
    /// these offsets are handed out between [`LineSink::rereading`] `true` and `false`.
    /// Matched by identity and head fingerprint, like `resume`. Call before the first poll.
    pub fn counted_through(&mut self, files: Vec<FileCheckpoint>) {
        self.counted = files;
    }

    /// Positions of every followed file right now (and of `resume` checkpoints whose directory
    /// is missing), to be persisted by the caller AFTER the lines before them are processed
    /// durably.
    pub fn checkpoints(&self) -> Vec<FileCheckpoint> {
        // A resume checkpoint not matched yet keeps the position its lines were counted
        // through, as a followed file does (see `Followed::checkpoint`).
        let counted = |p: &FileCheckpoint| {
            let through = self.counted.iter().filter(|c| (c.source, c.dev, c.ino) == (p.source, p.dev, p.ino));
            through.map(|c| c.offset).fold(p.offset, u64::max)
        };
        let pending = self.pending.iter().map(|p| FileCheckpoint { offset: counted(p), ..p.clone() });
        self.files.iter().map(Followed::checkpoint).chain(pending).collect()
    }

    /// Blocks until an inotify event concerning a followed file or pattern arrives, or
    /// `min(timeout, poll_interval)` passes. Returns at once when the last poll left data
    /// pending or a rescan is due. In pure-poll mode it just sleeps.
    pub fn wait(&mut self, timeout: Duration) {
        let timeout = timeout.min(self.opts.poll_interval);
        if std::mem::take(&mut self.wake_now) || self.last_more_pending {
            return;
        }
        let deadline = Instant::now() + timeout;
        let Some(rx) = self.watch.as_ref().map(|w| w.rx.clone()) else {
            std::thread::sleep(timeout);
            return;
        };
        loop {
            match rx.recv_deadline(deadline) {
                Ok(ev) => {
                    if self.on_event(&ev) {
                        return;
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => return,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        self.telemetry.rescan(RescanReason::WatcherStopped);
        self.watch = None;
        std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
    }

    // ---- scan: which files exist, which are new, which left their path

    /// Re-evaluates every pattern; opens new files; marks files no longer at a pattern path
    /// as rotated. Returns how many sources match no file.
    fn scan(&mut self, now: Instant) -> i64 {
        for f in &mut self.files {
            f.at_pattern = false;
        }
        struct Candidate {
            source: u16,
            path: PathBuf,
            id: (u64, u64),
        }
        let mut cands: Vec<Candidate> = Vec::new();
        let mut ids = HashSet::new();
        let mut waiting = 0;
        let mut paths = Vec::new();
        for s in &self.sources {
            paths.clear();
            s.expand(&mut paths);
            let mut matched = false;
            for path in paths.drain(..) {
                let Ok(m) = fs::metadata(&path) else { continue };
                if !m.is_file() {
                    continue;
                }
                matched = true;
                let id = (m.dev(), m.ino());
                if ids.insert(id) {
                    cands.push(Candidate { source: s.index, path, id });
                }
            }
            if !matched {
                waiting += 1;
                if self.waiting_sources.insert(s.index) {
                    info!(source = s.index, pattern = %s.pattern, "no file matches yet: waiting for it");
                }
            } else if self.waiting_sources.remove(&s.index) {
                info!(source = s.index, pattern = %s.pattern, "a file appeared: following it");
            }
        }
        // Files already followed: still (or again) at a pattern path.
        cands.retain(|c| match self.files.iter_mut().find(|f| (f.dev, f.ino) == c.id) {
            Some(f) => {
                f.at_pattern = true;
                if f.rotated {
                    f.rotated = false;
                    info!(source = f.source, path = %c.path.display(), "rotated file is at a followed path again");
                }
                false
            }
            None => true,
        });
        if !self.pending.is_empty() {
            let at_pattern: Vec<(u16, PathBuf, (u64, u64))> =
                cands.iter().map(|c| (c.source, c.path.clone(), c.id)).collect();
            let used = self.resume(&at_pattern, now);
            cands.retain(|c| !used.contains(&c.id));
        }
        for c in cands {
            self.follow(c.source, &c.path, &c.path, Start::New, true, now);
        }
        for f in &mut self.files {
            if !f.at_pattern && !f.rotated {
                f.rotated = true;
                f.last_growth = now;
                self.telemetry.file_rotated(f.source, &f.origin);
            }
        }
        waiting
    }

    /// Matches `resume` checkpoints by identity: first against rotated siblings (so older
    /// generations get lower sequence numbers), then against files at pattern paths. Returns the
    /// identities of the pattern-path candidates it opened.
    fn resume(&mut self, at_pattern: &[(u16, PathBuf, (u64, u64))], now: Instant) -> HashSet<(u64, u64)> {
        let pending = std::mem::take(&mut self.pending);
        let checkpointed: HashSet<(u64, u64)> = pending.iter().map(|cp| (cp.dev, cp.ino)).collect();
        let pattern_ids: HashSet<(u64, u64)> = at_pattern.iter().map(|c| c.2).collect();
        let mut used = HashSet::new();
        let (here, elsewhere): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|cp| pattern_ids.contains(&(cp.dev, cp.ino)));
        for cp in elsewhere {
            if self.files.iter().any(|f| (f.dev, f.ino) == (cp.dev, cp.ino)) {
                continue;
            }
            let siblings = match siblings(&cp.path) {
                Ok(s) => s,
                Err(e) => {
                    if e.kind() != io::ErrorKind::NotFound {
                        self.telemetry.file_read_failed(cp.source, &cp.path, FileOp::ListDirectory, &e);
                    }
                    self.pending.push(cp);
                    continue;
                }
            };
            let Some((path, meta)) = siblings.iter().find(|(_, m)| (m.dev(), m.ino()) == (cp.dev, cp.ino)) else {
                warn!(source = cp.source, path = %cp.path.display(), offset = cp.offset,
                    "checkpointed file is gone (compressed or deleted while stopped): the rest of it is lost");
                continue;
            };
            if self.follow(cp.source, &cp.path, path, Start::ResumeOnly(&cp), false, now).is_none() {
                continue;
            }
            // Rotations newer than the resumed one that no checkpoint covers: read them whole,
            // in the order they were written, before the current file. An equal mtime counts
            // as newer: timestamps are as coarse as a kernel tick, and reading a file twice
            // (idempotent alerts) is better than losing one.
            let mtime = mtime_ns(meta);
            let mut newer: Vec<&(PathBuf, Metadata)> = siblings
                .iter()
                .filter(|(_, m)| {
                    let id = (m.dev(), m.ino());
                    mtime_ns(m) >= mtime
                        && !checkpointed.contains(&id)
                        && !pattern_ids.contains(&id)
                        && !self.files.iter().any(|f| (f.dev, f.ino) == id)
                })
                .collect();
            newer.sort_by_key(|(_, m)| mtime_ns(m));
            for (p, _) in newer {
                info!(source = cp.source, path = %p.display(), "rotated while stopped and never read: reading it whole");
                self.follow(cp.source, &cp.path, p, Start::New, false, now);
            }
        }
        for cp in here {
            if let Some((source, path, id)) = at_pattern.iter().find(|c| c.2 == (cp.dev, cp.ino)) {
                // Keeps its lineage (a glob like `access.log*` may now match it as `access.log.1`).
                self.follow(*source, &cp.path, path, Start::Resume(&cp), true, now);
                used.insert(*id);
            }
        }
        used
    }

    /// Opens `path` and follows it (lineage `origin`). Returns its index, or `None` if it could
    /// not be opened or is already followed.
    fn follow(
        &mut self,
        source: u16,
        origin: &Path,
        path: &Path,
        start: Start<'_>,
        at_pattern: bool,
        now: Instant,
    ) -> Option<usize> {
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
            Err(e) => {
                self.telemetry.file_read_failed(source, path, FileOp::Open, &e);
                return None;
            }
        };
        let meta = match file.metadata() {
            Ok(m) if m.is_file() => m,
            Ok(_) => return None,
            Err(e) => {
                self.telemetry.file_read_failed(source, path, FileOp::Stat, &e);
                return None;
            }
        };
        let id = (meta.dev(), meta.ino());
        if let Some(f) = self.files.iter_mut().find(|f| (f.dev, f.ino) == id) {
            // Replaced between the path stat and the open by a file we already follow.
            f.at_pattern |= at_pattern;
            return None;
        }
        let size = meta.len();
        let mut head = [0u8; FINGERPRINT_MAX];
        let head_len = match read_full_at(&file, &mut head[..(size.min(FINGERPRINT_MAX as u64) as usize)], 0) {
            Ok(n) => n,
            Err(e) => {
                self.telemetry.file_read_failed(source, path, FileOp::ReadHead, &e);
                return None;
            }
        };
        let head = &head[..head_len];
        let same = |fp_len: u32, fp: u64, offset: u64| {
            size >= offset && head.len() >= fp_len as usize && xxh3_64(&head[..fp_len as usize]) == fp
        };
        let mut offset = 0;
        match start {
            Start::Resume(cp) | Start::ResumeOnly(cp) => {
                if same(cp.fingerprint_len, cp.fingerprint, cp.offset) {
                    offset = cp.offset;
                    info!(source, path = %path.display(), offset, "resuming from checkpoint");
                } else if matches!(start, Start::ResumeOnly(_)) {
                    warn!(source, path = %path.display(), "rotated sibling has the checkpointed inode but other content: not read");
                    return None;
                } else {
                    warn!(source, path = %path.display(), checkpoint_offset = cp.offset,
                        "same inode but not the checkpointed file any more (rewritten or inode reused): reading from the start");
                }
            }
            Start::New => {
                if let Some(k) = self.released.iter().position(|r| (r.dev, r.ino) == id) {
                    let r = self.released.remove(k).expect("index from position");
                    let born = meta.created().ok();
                    let same_birth = r.born.is_none() || born.is_none() || r.born == born;
                    if same_birth && same(r.fp_len, r.fp, r.offset) {
                        offset = r.offset;
                        debug!(source, path = %path.display(), offset, "a released file is back: continuing at its offset");
                    }
                }
            }
        }
        if !at_pattern {
            self.telemetry.rotated_file_followed(source, path, offset);
        }
        let mut counted_to = 0;
        if let Some(k) = self.counted.iter().position(|c| (c.source, c.dev, c.ino) == (source, id.0, id.1)) {
            let c = self.counted.swap_remove(k);
            if same(c.fingerprint_len, c.fingerprint, c.offset) && c.offset > offset {
                counted_to = c.offset;
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.files.push(Followed {
            source,
            origin: origin.to_path_buf(),
            real: fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf()),
            file,
            dev: id.0,
            ino: id.1,
            fp_len: head.len() as u32,
            fp: xxh3_64(head),
            offset,
            read_pos: offset,
            framer: Framer::new(self.opts.max_line_len),
            scanned_to: offset,
            size,
            hit_eof: false,
            anchor_len: 0,
            anchor: 0,
            counted_to,
            seq,
            at_pattern,
            rotated: !at_pattern,
            last_growth: now,
            verified_at: SystemTime::now(),
        });
        debug!(source, path = %path.display(), offset, "following file");
        Some(self.files.len() - 1)
    }

    // ---- check: truncation and rewrites

    /// `fstat`s every followed file and verifies its head fingerprint; a shrink or a changed head
    /// starts a new generation (after trying to recover unread lines from a copytruncate copy).
    fn check_files(&mut self, now: Instant) {
        let mut head = [0u8; FINGERPRINT_MAX];
        let mut copies = Vec::new();
        for i in 0..self.files.len() {
            let f = &mut self.files[i];
            f.hit_eof = false;
            let size = match f.file.metadata() {
                Ok(m) => m.len(),
                Err(e) => {
                    self.telemetry.file_read_failed(f.source, &f.origin, FileOp::StatFollowed, &e);
                    f.hit_eof = true;
                    continue;
                }
            };
            let intact = size >= f.size
                && match refresh_fingerprint(f, &mut head, size) {
                    Ok(ok) => ok,
                    Err(e) => {
                        self.telemetry.file_read_failed(f.source, &f.origin, FileOp::ReadFollowed, &e);
                        f.hit_eof = true;
                        continue;
                    }
                };
            if intact {
                if size > f.size {
                    f.size = size;
                    f.last_growth = now;
                }
                f.verified_at = SystemTime::now();
                continue;
            }
            let copy =
                if f.offset > 0 && f.anchor_len > 0 { find_copy(&self.files[i], &self.files, now) } else { None };
            let f = &mut self.files[i];
            let copy_path = copy.as_ref().map(|c| c.real.as_path());
            self.telemetry.file_truncated(f.source, &f.origin, f.offset, f.scanned_to, copy_path);
            if let Some(mut c) = copy {
                c.seq = f.seq;
                f.seq = self.next_seq;
                self.next_seq += 1;
                copies.push(c);
            }
            f.offset = 0;
            f.read_pos = 0;
            f.counted_to = 0;
            f.scanned_to = 0;
            f.framer = Framer::new(f.framer.max_line_len());
            f.anchor_len = 0;
            f.size = size;
            f.fp_len = 0;
            f.fp = xxh3_64(&[]);
            f.last_growth = now;
            if let Err(e) = refresh_fingerprint(f, &mut head, size) {
                self.telemetry.file_read_failed(f.source, &f.origin, FileOp::ReadFollowed, &e);
            }
            f.verified_at = SystemTime::now();
        }
        self.files.extend(copies);
    }

    /// After reading: a file that was shorter than [`FINGERPRINT_MAX`] gets its fingerprint
    /// extended over what was read, so a checkpoint's offset never lies outside its fingerprint.
    fn extend_fingerprints(&mut self) {
        let mut head = [0u8; FINGERPRINT_MAX];
        for f in &mut self.files {
            if (f.fp_len as usize) < FINGERPRINT_MAX && f.scanned_to > f.fp_len as u64 {
                // A mismatch here is a truncation racing the read: the next check sees it.
                let _ = refresh_fingerprint(f, &mut head, f.scanned_to);
            }
        }
    }

    // ---- read

    /// Reads pending files round-robin in chunks until `max_bytes` are read or nothing is
    /// pending. A file waits while an older generation of its lineage has unread bytes.
    fn read_files<S: LineSink>(&mut self, sink: &mut S, max_bytes: usize) -> (u64, bool) {
        let n = self.files.len();
        let mut budget = max_bytes.max(1);
        let mut consumed = 0u64;
        'rounds: loop {
            let mut progressed = false;
            for k in 0..n {
                let i = (self.rr + k) % n;
                if !self.files[i].pending() || self.blocked(i) {
                    continue;
                }
                if budget == 0 || sink.barrier_due() {
                    break 'rounds;
                }
                let want = self.opts.read_chunk.min(budget).min(sink.read_hint()).max(MIN_READ);
                let f = &mut self.files[i];
                let before = f.scanned_to;
                match read_lines(f, &mut self.buf, want, sink) {
                    Ok(got) => {
                        budget = budget.saturating_sub(got);
                        consumed += f.scanned_to - before;
                        progressed |= got > 0;
                    }
                    Err(e) => {
                        self.telemetry.file_read_failed(f.source, &f.origin, FileOp::Read, &e);
                        f.hit_eof = true;
                    }
                }
            }
            if !progressed {
                break;
            }
        }
        self.rr = self.rr.wrapping_add(1);
        (consumed, self.files.iter().any(Followed::pending))
    }

    /// An older generation of the same lineage still has unread bytes.
    fn blocked(&self, i: usize) -> bool {
        let f = &self.files[i];
        self.files.iter().any(|o| o.seq < f.seq && o.source == f.source && o.origin == f.origin && o.pending())
    }

    // ---- release

    /// Releases rotated files read to EOF that have not grown for `rotated_drain`, flushing an
    /// incomplete last line once as a partial line.
    fn release_drained<S: LineSink>(&mut self, sink: &mut S, now: Instant) {
        let mut i = 0;
        while i < self.files.len() {
            let f = &self.files[i];
            let drained = f.rotated
                && f.scanned_to >= f.size
                && now.saturating_duration_since(f.last_growth) >= self.opts.rotated_drain;
            if drained {
                self.release(i, Some(sink));
            } else {
                i += 1;
            }
        }
    }

    /// Closes file `i`, remembering its identity and offset. With a sink, an incomplete last
    /// line is flushed first.
    fn release<S: LineSink>(&mut self, i: usize, sink: Option<&mut S>) {
        let mut f = self.files.remove(i);
        if let Some(sink) = sink {
            if f.framer.is_dropping() {
                // The last line's head was handed out and the rest read: a file that comes
                // back continues after it, not at its head again.
                f.offset = f.read_pos;
            } else if f.size > f.offset {
                // Read to EOF by now, so what is left is shorter than the bound.
                let len = (f.size - f.offset) as usize;
                match read_full_at(&f.file, &mut self.buf[..len.min(self.opts.max_line_len)], f.offset) {
                    Ok(n) if n > 0 => {
                        sink.partial_line(f.source, &self.buf[..n]);
                        self.telemetry.partial_line_flushed(f.source, &f.origin, n);
                        f.offset += n as u64;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        self.telemetry.file_read_failed(f.source, &f.origin, FileOp::ReadLastLine, &e);
                    }
                }
            }
            debug!(source = f.source, path = %f.origin.display(), "rotated file drained: released");
        }
        // A deleted file never comes back; its inode number may, for another file.
        let Ok(meta) = f.file.metadata() else { return };
        if meta.nlink() == 0 {
            return;
        }
        if self.released.len() == RELEASED_MEMORY {
            self.released.pop_front();
        }
        let born = meta.created().ok();
        self.released.push_back(Released {
            dev: f.dev,
            ino: f.ino,
            born,
            fp_len: f.fp_len,
            fp: f.fp,
            offset: f.offset,
        });
    }

    // ---- inotify

    /// Empties the event queue before a full scan (the scan sees everything anyway), noting
    /// rescan requests and lost watches.
    fn drain_events(&mut self) {
        let Some(rx) = self.watch.as_ref().map(|w| w.rx.clone()) else { return };
        while let Ok(ev) = rx.try_recv() {
            self.on_event(&ev);
        }
    }

    /// Notes one inotify event; returns whether it should end a `wait`. A rescan request
    /// (queue overflow, error) or a watched directory removed or renamed (its watch is gone)
    /// counts a rescan.
    fn on_event(&mut self, ev: &WatchEvent) -> bool {
        use notify::event::{EventKind, ModifyKind};
        let ev = match ev {
            Ok(ev) if !ev.need_rescan() => ev,
            _ => {
                self.telemetry.rescan(RescanReason::QueueOverflow);
                return true;
            }
        };
        if matches!(ev.kind, EventKind::Access(_)) {
            // Opens and reads, ours included: never a change.
            return false;
        }
        if matches!(ev.kind, EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))) {
            if let Some(w) = &mut self.watch {
                let before = w.watched.len();
                w.watched.retain(|(dir, _)| !ev.paths.contains(dir));
                if w.watched.len() != before {
                    self.telemetry.rescan(RescanReason::WatchedDirectoryRemoved);
                    self.wake_now = true;
                    return true;
                }
            }
        }
        if ev.paths.is_empty() || self.files.iter().any(|f| f.rotated) {
            // A draining file may have been renamed anywhere in a watched directory.
            return true;
        }
        ev.paths.iter().any(|p| {
            self.files.iter().any(|f| f.origin == *p || f.real == *p) || self.sources.iter().any(|s| s.interested_in(p))
        })
    }

    /// Watches the directories of the patterns (the nearest existing ancestor while missing) and
    /// of followed files. A watched directory that vanished or was replaced, or a watch that
    /// cannot be added, counts a rescan and makes the next poll immediate.
    fn update_watches(&mut self) {
        let Some(w) = &mut self.watch else { return };
        let mut desired: Vec<PathBuf> = Vec::new();
        let mut want = |d: PathBuf| {
            if !desired.contains(&d) {
                desired.push(d);
            }
        };
        for s in &self.sources {
            if let Some(d) = nearest_existing_dir(&s.literal_dir) {
                want(d);
            }
        }
        for f in self.files.iter().filter(|f| !f.rotated) {
            want(parent_dir(&f.origin));
            want(parent_dir(&f.real));
        }
        let mut lost = false;
        w.watched.retain(|(dir, id)| {
            let now_id = fs::metadata(dir).ok().filter(|m| m.is_dir()).map(|m| (m.dev(), m.ino()));
            // Vanished or replaced under the watch: events may have been missed.
            lost |= now_id != Some(*id);
            let keep = desired.contains(dir) && now_id == Some(*id);
            if !keep {
                let _ = notify::Watcher::unwatch(&mut w.watcher, dir);
            }
            keep
        });
        if lost {
            self.telemetry.rescan(RescanReason::WatchedDirectoryVanished);
            self.wake_now = true;
        }
        let mut first_failure: Option<(PathBuf, notify::Error)> = None;
        let mut failures = 0;
        for d in desired {
            if w.watched.iter().any(|(p, _)| *p == d) {
                continue;
            }
            let Ok(m) = fs::metadata(&d) else { continue };
            match notify::Watcher::watch(&mut w.watcher, &d, notify::RecursiveMode::NonRecursive) {
                Ok(()) => w.watched.push((d, (m.dev(), m.ino()))),
                Err(e) => {
                    failures += 1;
                    first_failure.get_or_insert((d, e));
                }
            }
        }
        let failed = first_failure.is_some();
        if let Some((dir, e)) = first_failure {
            if !w.failing {
                self.telemetry.directories_unwatchable(&dir, &e, failures);
            }
            self.wake_now = true;
        }
        w.failing = failed;
    }

    // ---- gauges

    fn publish(&mut self, waiting: i64) {
        let now = Gauges {
            open: self.files.len() as i64,
            waiting,
            lag: self.files.iter().map(Followed::lag).sum::<u64>() as i64,
        };
        let t = &self.telemetry;
        t.files_open.fetch_add(now.open - self.published.open, Relaxed);
        t.sources_waiting.fetch_add(now.waiting - self.published.waiting, Relaxed);
        t.source_lag_bytes.fetch_add(now.lag - self.published.lag, Relaxed);
        self.published = now;
    }
}

impl Drop for Tailer {
    fn drop(&mut self) {
        self.files.clear();
        self.publish(0);
    }
}

impl std::fmt::Debug for Tailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tailer")
            .field("sources", &self.sources.iter().map(|s| &s.pattern).collect::<Vec<_>>())
            .field("files", &self.files.len())
            .field("inotify", &self.watch.is_some())
            .finish()
    }
}

/// Reads one chunk of `f` at `read_pos` into `buf` (`want` bytes, or all of `buf` when those
/// hold no whole line) and hands out the complete lines in it (and the head of a line already
/// over the bound). Returns the bytes read (re-reads of a partial
/// tail included).
fn read_lines<S: LineSink>(f: &mut Followed, buf: &mut [u8], want: usize, sink: &mut S) -> io::Result<usize> {
    let start = f.read_pos;
    // Lines counted before a restart are read in reads of their own that end at the counted
    // position (a line boundary), flagged to the sink.
    let rereading = f.counted_to > start;
    let counted_left = if rereading { (f.counted_to - start).try_into().unwrap_or(usize::MAX) } else { usize::MAX };
    let most = buf.len().min(counted_left);
    let mut len = want.min(most);
    let mut n = read_full_at(&f.file, &mut buf[..len], start)?;
    if n == len && len < most && !f.framer.is_dropping() && memchr::memchr(b'\n', &buf[..n]).is_none() {
        // A short read inside one line: read again with room for any line.
        len = most;
        n = read_full_at(&f.file, &mut buf[..len], start)?;
    }
    if n < len {
        f.hit_eof = true;
    }
    let end = start + n as u64;
    f.scanned_to = f.scanned_to.max(end);
    f.size = f.size.max(f.scanned_to);
    let data = &buf[..n];
    let source = f.source;
    if rereading {
        sink.rereading(source, true);
    }
    let framed = f.framer.frame(data, false, |frame| match frame {
        Frame::Line(line) => sink.line(source, line),
        Frame::Truncated(head) => sink.truncated(source, head),
    });
    if rereading {
        sink.rereading(source, false);
        if start + n as u64 >= f.counted_to || n == 0 {
            f.counted_to = 0;
        }
    }
    if framed.lines_end > 0 {
        // Just after the last `\n` read: a truncated line's dropped rest included.
        f.offset = start + framed.lines_end as u64;
        let a = framed.lines_end.min(ANCHOR_MAX);
        f.anchor_len = a as u32;
        f.anchor = xxh3_64(&data[framed.lines_end - a..framed.lines_end]);
    }
    // A partial line is read again with what follows it; a truncated one is not.
    f.read_pos = start + framed.consumed as u64;
    Ok(n)
}

/// Verifies the fingerprint of `f` against its first `fp_len` bytes and extends it up to
/// `min(limit, FINGERPRINT_MAX)` bytes. `Ok(false)`: the head changed (a new generation).
fn refresh_fingerprint(f: &mut Followed, head: &mut [u8; FINGERPRINT_MAX], limit: u64) -> io::Result<bool> {
    let want = limit.min(FINGERPRINT_MAX as u64) as usize;
    let fp_len = f.fp_len as usize;
    if want == fp_len && fp_len == 0 {
        return Ok(true);
    }
    let n = read_full_at(&f.file, &mut head[..want.max(fp_len)], 0)?;
    if n < fp_len || xxh3_64(&head[..fp_len]) != f.fp {
        return Ok(false);
    }
    if n > fp_len {
        f.fp_len = n as u32;
        f.fp = xxh3_64(&head[..n]);
    }
    Ok(true)
}

/// After `f` was truncated: its copytruncate copy next to it, if one holds the old generation
/// beyond our offset (same head fingerprint, same bytes just before the offset, changed
/// recently), opened at our offset as a rotated file of the same lineage.
fn find_copy(f: &Followed, followed: &[Followed], now: Instant) -> Option<Followed> {
    let since = f.verified_at.checked_sub(Duration::from_secs(30)).unwrap_or(UNIX_EPOCH);
    let since_ns = since.duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as i128).unwrap_or(0);
    let mut places = vec![f.origin.clone()];
    if f.real != f.origin {
        places.push(f.real.clone());
    }
    let mut head = [0u8; FINGERPRINT_MAX];
    let mut anchor = [0u8; ANCHOR_MAX];
    for place in places {
        let Ok(sibs) = siblings(&place) else { continue };
        for (path, m) in sibs {
            let id = (m.dev(), m.ino());
            let ctime = m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128;
            if m.len() <= f.offset || ctime < since_ns || followed.iter().any(|o| (o.dev, o.ino) == id) {
                continue;
            }
            let Ok(file) = File::open(&path) else { continue };
            let fp_len = f.fp_len as usize;
            let a = f.anchor_len as usize;
            let same_head = matches!(read_full_at(&file, &mut head[..fp_len], 0), Ok(n) if n == fp_len && xxh3_64(&head[..n]) == f.fp);
            let same_anchor = same_head
                && matches!(read_full_at(&file, &mut anchor[..a], f.offset - a as u64), Ok(n) if n == a && xxh3_64(&anchor[..n]) == f.anchor);
            if !same_anchor {
                continue;
            }
            return Some(Followed {
                source: f.source,
                origin: f.origin.clone(),
                real: path,
                file,
                dev: id.0,
                ino: id.1,
                fp_len: f.fp_len,
                fp: f.fp,
                offset: f.offset,
                read_pos: f.offset,
                framer: Framer::new(f.framer.max_line_len()),
                scanned_to: f.offset,
                size: m.len(),
                hit_eof: false,
                anchor_len: f.anchor_len,
                anchor: f.anchor,
                counted_to: f.counted_to,
                seq: f.seq,
                at_pattern: false,
                rotated: true,
                last_growth: now,
                verified_at: SystemTime::now(),
            });
        }
    }
    None
}

/// Uncompressed regular files next to `path` whose name starts with its file name (rotated
/// siblings: `access.log.1`, `access.log-20240101`), `path` itself excluded.
fn siblings(path: &Path) -> io::Result<Vec<(PathBuf, Metadata)>> {
    let dir = parent_dir(path);
    let Some(base) = path.file_name() else { return Ok(Vec::new()) };
    let base = base.as_encoded_bytes();
    let mut out = Vec::new();
    for entry in fs::read_dir(&dir)? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let name = name.as_encoded_bytes();
        if name.len() <= base.len() || !name.starts_with(base) {
            continue;
        }
        let p = entry.path();
        if is_compressed(&p) {
            continue;
        }
        if let Ok(m) = fs::metadata(&p) {
            if m.is_file() {
                out.push((p, m));
            }
        }
    }
    Ok(out)
}

/// `.gz`, `.bz2`, `.xz`, `.zst` and friends: rotated and compressed, never tailed.
pub fn is_compressed(path: &Path) -> bool {
    path.extension().and_then(|e| e.to_str()).is_some_and(|e| COMPRESSED_EXTENSIONS.contains(&e))
}

fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

fn nearest_existing_dir(dir: &Path) -> Option<PathBuf> {
    let mut d = dir;
    loop {
        if d.is_dir() {
            return Some(d.to_path_buf());
        }
        d = d.parent().filter(|p| !p.as_os_str().is_empty())?;
    }
}

fn mtime_ns(m: &Metadata) -> i128 {
    m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128
}

/// `pread` until `buf` is full or EOF.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read_at(&mut buf[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

fn start_watch(telemetry: &Telemetry) -> Option<Watch> {
    let (tx, rx) = crossbeam_channel::bounded::<WatchEvent>(4096);
    #[cfg(test)]
    let inject = tx.clone();
    // A full queue only means a wake-up is already pending: the next poll scans everything.
    let handler = move |ev: WatchEvent| {
        let _ = tx.try_send(ev);
    };
    match <notify::RecommendedWatcher as notify::Watcher>::new(handler, notify::Config::default()) {
        Ok(watcher) => Some(Watch {
            watcher,
            rx,
            watched: Vec::new(),
            failing: false,
            #[cfg(test)]
            inject,
        }),
        Err(e) => {
            telemetry.inotify_unavailable(&e);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Rec {
        lines: Vec<Vec<u8>>,
        heads: Vec<Vec<u8>>,
        partial: Vec<Vec<u8>>,
    }

    impl LineSink for Rec {
        fn line(&mut self, _: u16, line: &[u8]) {
            self.lines.push(line.to_vec());
        }
        fn truncated(&mut self, _: u16, head: &[u8]) {
            self.heads.push(head.to_vec());
        }
        fn partial_line(&mut self, _: u16, line: &[u8]) {
            self.partial.push(line.to_vec());
        }
    }

    fn tailer(pattern: &Path, opts: TailOptions, tel: &Arc<Telemetry>) -> Tailer {
        let src = TailSource { index: 0, pattern: pattern.to_str().unwrap().to_string() };
        Tailer::new(vec![src], opts, Vec::new(), tel.clone())
    }

    #[test]
    fn a_synthetic_rescan_event_wakes_the_wait_and_is_counted() {
        let dir = tempfile::tempdir().unwrap();
        let tel = Arc::new(Telemetry::default());
        let mut t = tailer(&dir.path().join("a.log"), TailOptions::default(), &tel);
        t.poll(&mut Rec::default(), 1 << 20);
        let ev = notify::Event::new(notify::EventKind::Other).set_flag(notify::event::Flag::Rescan);
        t.watch.as_ref().expect("inotify available").inject.send(Ok(ev)).unwrap();
        let started = Instant::now();
        t.wait(Duration::from_secs(10));
        assert!(started.elapsed() < Duration::from_secs(5), "the rescan event did not end the wait");
        assert_eq!(tel.rescans.load(Relaxed), 1);
    }

    #[test]
    fn our_own_reads_do_not_wake_the_wait() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, b"one\n").unwrap();
        let tel = Arc::new(Telemetry::default());
        let opts = TailOptions { poll_interval: Duration::from_millis(300), ..TailOptions::default() };
        let mut t = tailer(&path, opts, &tel);
        let mut rec = Rec::default();
        t.poll(&mut rec, 1 << 20);
        t.poll(&mut rec, 1 << 20);
        let started = Instant::now();
        t.wait(Duration::from_secs(10));
        assert!(started.elapsed() >= Duration::from_millis(250), "woken by our own reads");
        assert_eq!(rec.lines, [b"one".to_vec()]);
    }

    #[test]
    fn over_long_lines_give_their_head_once_and_tailing_continues_across_polls() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let tel = Arc::new(Telemetry::default());
        let opts = TailOptions { max_line_len: 100, use_inotify: false, ..TailOptions::default() };
        let mut t = tailer(&path, opts, &tel);
        let mut rec = Rec::default();
        let long: Vec<u8> = (0..5000).map(|i| b'a' + (i % 26) as u8).collect();
        fs::write(&path, [&b"ok1\n"[..], &long[..2000]].concat()).unwrap();
        t.poll(&mut rec, 1 << 20);
        assert_eq!(rec.heads, [long[..100].to_vec()], "a partial tail already over the bound gives its head");
        assert_eq!(t.checkpoints()[0].offset, 4, "the checkpoint waits for the truncated line's end");
        let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
        io::Write::write_all(&mut f, &[&long[2000..], b"\nok2\n", &long[..], b"\nok3\npart"].concat()).unwrap();
        t.poll(&mut rec, 1 << 20);
        assert_eq!(rec.lines, [b"ok1".to_vec(), b"ok2".to_vec(), b"ok3".to_vec()]);
        assert_eq!(rec.heads, [long[..100].to_vec(), long[..100].to_vec()]);
        // The checkpoint is just after "ok3\n".
        let len = fs::metadata(&path).unwrap().len();
        assert_eq!(t.checkpoints()[0].offset, len - 4);
    }

    /// The kill -9 test's early stops: a scrape during the first poll saw the lag gauge at 0
    /// (nothing published yet) while lines were being read, and took it for "caught up".
    #[test]
    fn lag_gauge_shows_the_backlog_while_the_first_poll_reads_it() {
        struct LagAtEachLine(Arc<Telemetry>, Vec<i64>);
        impl LineSink for LagAtEachLine {
            fn line(&mut self, _: u16, _: &[u8]) {
                self.1.push(self.0.source_lag_bytes.load(Relaxed));
            }
            fn truncated(&mut self, _: u16, _: &[u8]) {}
            fn partial_line(&mut self, _: u16, _: &[u8]) {}
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, b"one\ntwo\n").unwrap();
        let tel = Arc::new(Telemetry::default());
        let mut t = tailer(&path, TailOptions { use_inotify: false, ..TailOptions::default() }, &tel);
        let mut sink = LagAtEachLine(tel.clone(), Vec::new());
        t.poll(&mut sink, 1 << 20);
        assert_eq!(sink.1, [8, 8], "the backlog as scanned before the reads");
        assert_eq!(tel.source_lag_bytes.load(Relaxed), 0, "read to the end");
    }

    #[test]
    fn truncated_line_read_in_small_pieces_moves_the_checkpoint_past_its_whole_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let tel = Arc::new(Telemetry::default());
        let opts = TailOptions { max_line_len: 100, use_inotify: false, ..TailOptions::default() };
        let mut t = tailer(&path, opts, &tel);
        let mut rec = Rec::default();
        let long = vec![b'y'; 10_000];
        let content = [&b"ok1\n"[..], &long, b"\r\nok2\n"].concat();
        fs::write(&path, &content).unwrap();
        let mut offsets = Vec::new();
        // 150 bytes a poll: the long line spans about 67 polls.
        while t.poll(&mut rec, 150).more_pending {
            offsets.push(t.checkpoints()[0].offset);
        }
        offsets.push(t.checkpoints()[0].offset);
        assert_eq!(rec.lines, [b"ok1".to_vec(), b"ok2".to_vec()]);
        assert_eq!(rec.heads, [vec![b'y'; 100]]);
        assert!(offsets.iter().all(|o| [4, content.len() as u64 - 4, content.len() as u64].contains(o)), "{offsets:?}");
        assert_eq!(offsets.last(), Some(&(content.len() as u64)));
    }

    /// Found by the kill -9 test: a checkpoint taken while a restart re-read lines counted
    /// before it said only the re-read part was counted; killed again then, the daemon counted
    /// the rest twice.
    #[test]
    fn a_checkpoint_taken_while_rereading_keeps_the_position_counted_before_the_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let lines: String = (0..1000).map(|i| format!("line {i:04}\n")).collect();
        fs::write(&path, &lines).unwrap();
        let tel = Arc::new(Telemetry::default());
        let opts = TailOptions { read_chunk: 4096, max_line_len: 100, ..TailOptions::default() };
        // Counted through the whole file before a restart; the restart re-reads from 0.
        let mut first = tailer(&path, opts.clone(), &tel);
        first.poll(&mut Rec::default(), 1 << 20);
        let counted = first.checkpoints();
        assert_eq!(counted[0].offset, lines.len() as u64);
        let rewind = vec![FileCheckpoint { offset: 0, ..counted[0].clone() }];
        let src = TailSource { index: 0, pattern: path.to_str().unwrap().to_string() };
        let mut again = Tailer::new(vec![src], opts, rewind, tel.clone());
        again.counted_through(counted.clone());
        // One small poll: still re-reading.
        let mut rec = Rec::default();
        again.poll(&mut rec, 1);
        assert!(!rec.lines.is_empty() && rec.lines.len() < 1000, "{} lines", rec.lines.len());
        assert_eq!(again.checkpoints()[0].offset, lines.len() as u64, "counted through the whole file");
    }

    /// A sink that wants reads of `hint` bytes and counts the polls' reads by their lines.
    struct Hinted {
        rec: Rec,
        hint: usize,
        due_after: usize,
    }

    impl LineSink for Hinted {
        fn line(&mut self, s: u16, line: &[u8]) {
            self.rec.line(s, line);
        }
        fn truncated(&mut self, s: u16, head: &[u8]) {
            self.rec.truncated(s, head);
        }
        fn partial_line(&mut self, s: u16, line: &[u8]) {
            self.rec.partial_line(s, line);
        }
        fn barrier_due(&self) -> bool {
            self.rec.lines.len() >= self.due_after
        }
        fn read_hint(&self) -> usize {
            self.hint
        }
    }

    /// Reads follow the sink's hint (down to MIN_READ) and a poll ends once its barrier is
    /// due; a line longer than such a short read is read whole with the full buffer, not cut
    /// and not stuck.
    #[test]
    fn reads_are_as_short_as_the_sink_asks_and_a_longer_line_is_still_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let short: String = (0..1000).map(|i| format!("line {i:04} {}\n", "x".repeat(90))).collect();
        let long = "y".repeat(3 * MIN_READ);
        fs::write(&path, format!("{short}{long}\nafter\n")).unwrap();
        let tel = Arc::new(Telemetry::default());
        let opts = TailOptions { max_line_len: 4 * MIN_READ, ..TailOptions::default() };
        let mut t = tailer(&path, opts, &tel);
        let mut sink = Hinted { rec: Rec::default(), hint: 1, due_after: 10 };
        t.poll(&mut sink, 1 << 20);
        // One read of MIN_READ bytes (~40 lines of 101 bytes), then the barrier was due.
        assert_eq!(sink.rec.lines.len(), MIN_READ / 101, "one short read");
        sink.due_after = usize::MAX;
        for _ in 0..100 {
            if !t.poll(&mut sink, 1 << 20).more_pending {
                break;
            }
        }
        assert_eq!(sink.rec.lines.len(), 1002);
        assert_eq!(sink.rec.lines[1000], long.as_bytes());
        assert_eq!(sink.rec.lines[1001], b"after");
        assert!(sink.rec.heads.is_empty());
    }

    #[test]
    fn patterns_know_their_watched_directory() {
        let s = Source::new(&TailSource { index: 0, pattern: "/var/log/nginx/*access.log".into() });
        assert_eq!(s.literal_dir, Path::new("/var/log/nginx"));
        assert!(s.glob_in_name_only);
        assert!(s.interested_in(Path::new("/var/log/nginx/site-access.log")));
        assert!(!s.interested_in(Path::new("/var/log/nginx/error.log")));
        assert!(s.interested_in(Path::new("/var/log")), "an ancestor appearing matters");
        let s = Source::new(&TailSource { index: 0, pattern: "/srv/*/logs/access.log".into() });
        assert_eq!(s.literal_dir, Path::new("/srv"));
        assert!(s.interested_in(Path::new("/srv/new-vhost")));
        let s = Source::new(&TailSource { index: 0, pattern: "access.log".into() });
        assert_eq!(s.literal_dir, Path::new("."));
        assert!(is_compressed(Path::new("/x/access.log.2.gz")));
        assert!(!is_compressed(Path::new("/x/access.log.1")));
    }
}

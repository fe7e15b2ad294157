//! Opening a store without ever mistaking a lock or a permission for corruption. Owns
//! recwatch's own lock file (`recwatch.lock` in the database directory, holding the pid of
//! the process that writes the store), the ownership and permission checks, and read-only
//! opens on a private copy (so a command that only reads never writes to the store, even one
//! sled cannot open cleanly). Never quarantines or deletes anything: that is the daemon's
//! decision, taken only on [`StoreError::is_corruption`].
//!
//! Ownership: a store is written only by the user that owns its directory. Root running the
//! CLI on a store owned by `recwatch` is refused with a message saying to run as that user
//! (`sudo -u recwatch recwatch alerts …`); dropping privileges silently was considered and not
//! done: a root shell writing into a service's state should be a visible choice.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::panic::catch_unwind;
use std::path::{Path, PathBuf};

use fs2::FileExt;

use super::db::Db;
use super::StoreError;

/// recwatch's lock file inside the database directory.
pub const LOCK_FILE: &str = "recwatch.lock";

/// The user this process runs as: (uid, gid, supplementary groups), from /proc/self/status.
fn whoami() -> (u32, u32, Vec<u32>) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| rest.split_whitespace().filter_map(|v| v.parse().ok()).collect())
            .unwrap_or_default()
    };
    // Uid:/Gid: are real, effective, saved, filesystem: the effective one decides access.
    let uid = field("Uid:").get(1).copied().unwrap_or(u32::MAX);
    let gid = field("Gid:").get(1).copied().unwrap_or(u32::MAX);
    (uid, gid, field("Groups:"))
}

/// A user's name from /etc/passwd, else `uid N`.
pub(super) fn user_name(uid: u32) -> String {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| format!("{name} (uid {uid})"))
        })
        .unwrap_or_else(|| format!("uid {uid}"))
}

fn current_user() -> String {
    user_name(whoami().0)
}

/// Whether this process may read and write `path` (and enter it, for a directory).
fn may_read_write(meta: &std::fs::Metadata) -> bool {
    let (uid, gid, groups) = whoami();
    if uid == 0 {
        return true;
    }
    let mode = meta.mode();
    let need = if meta.is_dir() { 0o7 } else { 0o6 };
    let bits = if meta.uid() == uid {
        mode >> 6
    } else if meta.gid() == gid || groups.contains(&meta.gid()) {
        mode >> 3
    } else {
        mode
    };
    bits & need == need
}

fn permission_error(path: &Path, meta: &std::fs::Metadata) -> StoreError {
    StoreError::Permission {
        path: path.to_path_buf(),
        owner: user_name(meta.uid()),
        mode: meta.mode() & 0o7777,
        user: current_user(),
    }
}

/// Every file and directory under `dir` (and `dir`): the first this process could not read
/// and write is a permission error naming it.
fn check_permissions(dir: &Path) -> Result<(), StoreError> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error(&path, e))?;
        if !may_read_write(&meta) {
            return Err(permission_error(&path, &meta));
        }
        if meta.is_dir() {
            for entry in std::fs::read_dir(&path).map_err(|e| io_error(&path, e))? {
                stack.push(entry.map_err(|e| io_error(&path, e))?.path());
            }
        }
    }
    Ok(())
}

fn io_error(path: &Path, e: std::io::Error) -> StoreError {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            return permission_error(path, &meta);
        }
    }
    StoreError::Io { path: path.to_path_buf(), source: e }
}

/// The pid written in a lock file, if readable.
fn holder_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// Takes recwatch's exclusive lock on the store in `dir` (created if missing) and writes our
/// pid into it. Another holder: [`StoreError::Locked`] with its pid; nothing is changed.
fn lock_exclusive(dir: &Path) -> Result<File, StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, e))?;
    match file.try_lock_exclusive() {
        Ok(()) => {}
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
            return Err(StoreError::Locked { dir: dir.to_path_buf(), pid: holder_pid(&mut file) })
        }
        Err(e) => return Err(io_error(&path, e)),
    }
    let pid = format!("{}\n", std::process::id());
    file.set_len(0)
        .and_then(|_| file.rewind())
        .and_then(|_| file.write_all(pid.as_bytes()))
        .map_err(|e| io_error(&path, e))?;
    Ok(file)
}

/// Whether another process holds the store's lock (without taking it for longer than the
/// check, and without creating the lock file).
fn check_unlocked(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(LOCK_FILE);
    let mut file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_error(&path, e)),
    };
    match FileExt::try_lock_shared(&file) {
        Ok(()) => {
            let _ = FileExt::unlock(&file);
            Ok(())
        }
        Err(e) if e.kind() == fs2::lock_contended_error().kind() => {
            Err(StoreError::Locked { dir: dir.to_path_buf(), pid: holder_pid(&mut file) })
        }
        Err(e) => Err(io_error(&path, e)),
    }
}

/// sled's open, its failures sorted: permission, someone else's sled lock, or corruption.
fn open_sled(dir: &Path) -> Result<Db, StoreError> {
    let failure = match catch_unwind(|| Db::open(dir)) {
        Ok(Ok(db)) => return Ok(db),
        Ok(Err(sled::Error::Io(e))) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            // name the file if we can find it; else the directory
            check_permissions(dir)?;
            return Err(StoreError::Permission {
                path: dir.to_path_buf(),
                owner: std::fs::metadata(dir).map(|m| user_name(m.uid())).unwrap_or_default(),
                mode: std::fs::metadata(dir).map(|m| m.mode() & 0o7777).unwrap_or(0),
                user: current_user(),
            });
        }
        Ok(Err(sled::Error::Io(e))) if e.to_string().contains("could not acquire lock") => {
            return Err(StoreError::Locked { dir: dir.to_path_buf(), pid: None });
        }
        Ok(Err(sled::Error::Io(e))) => return Err(StoreError::Io { path: dir.to_path_buf(), source: e }),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "the database panicked while opening".to_string(),
    };
    Err(StoreError::Unreadable { dir: dir.to_path_buf(), reason: failure })
}

/// A `db` file with bytes but no recwatch record in it: sled "recovered" something that was
/// not a recwatch store (zeroed, or another program's).
fn check_written(db: &Db, dir: &Path, had_data: bool) -> Result<(), StoreError> {
    match db.looks_written() {
        Ok(true) => Ok(()),
        Ok(false) if had_data => Err(StoreError::Unreadable {
            dir: dir.to_path_buf(),
            reason: "the database file holds data but no recwatch record (zeroed or not a recwatch store)".into(),
        }),
        Ok(false) => Ok(()),
        Err(e) => Err(StoreError::Unreadable { dir: dir.to_path_buf(), reason: e.to_string() }),
    }
}

fn db_file_has_data(dir: &Path) -> bool {
    std::fs::metadata(dir.join("db")).is_ok_and(|m| m.len() > 0)
}

/// Opens the store in `dir` for writing: creates it if missing, refuses a store owned by
/// another user, checks permissions, takes the lock, then opens sled.
pub(super) fn open_writable(dir: &Path) -> Result<(Db, File), StoreError> {
    let existed = dir.exists();
    if !existed {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| io_error(dir.parent().unwrap_or(dir), e))?;
    }
    // A running daemon first: its lock says so, whoever owns the store.
    check_unlocked(dir)?;
    let meta = std::fs::metadata(dir).map_err(|e| io_error(dir, e))?;
    let (uid, _, _) = whoami();
    if meta.uid() != uid {
        return Err(StoreError::NotOwner {
            dir: dir.to_path_buf(),
            owner: user_name(meta.uid()),
            user: user_name(uid),
        });
    }
    // The lock first: a second instance must touch nothing, not even by checking.
    let lock = lock_exclusive(dir)?;
    check_permissions(dir)?;
    let had_data = db_file_has_data(dir);
    let db = open_sled(dir)?;
    check_written(&db, dir, had_data)?;
    db.mark_format().map_err(|e| StoreError::Unreadable { dir: dir.to_path_buf(), reason: e.to_string() })?;
    Ok((db, lock))
}

/// A private scratch directory for a read-only open (removed when the store is dropped).
fn scratch_dir() -> Result<PathBuf, StoreError> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("recwatch-read-{}-{}-{attempt}", std::process::id(), fastrand::u64(..)));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(io_error(&base, e)),
        }
    }
    Err(StoreError::Io { path: base, source: std::io::Error::other("no free scratch directory name") })
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), StoreError> {
    for entry in std::fs::read_dir(from).map_err(|e| io_error(from, e))? {
        let entry = entry.map_err(|e| io_error(from, e))?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == LOCK_FILE {
            continue;
        }
        let meta = std::fs::symlink_metadata(&src).map_err(|e| io_error(&src, e))?;
        if meta.is_dir() {
            std::fs::DirBuilder::new().mode(0o700).create(&dst).map_err(|e| io_error(&dst, e))?;
            copy_tree(&src, &dst)?;
        } else if meta.is_file() {
            std::fs::copy(&src, &dst).map_err(|e| io_error(&src, e))?;
            let _ = std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o600));
        }
    }
    Ok(())
}

/// Opens a copy of the store in `dir` for reading: the store itself is never written (not
/// even by sled's recovery). A missing store reads as an empty one. Returns the database and
/// the scratch directory holding the copy.
pub(super) fn open_read_only(dir: &Path) -> Result<(Db, PathBuf), StoreError> {
    open_copy(dir, false)
}

/// [`open_read_only`], also while a daemon holds the store: the copy is then what a crash at
/// this instant would leave (sled recovers it to its last flush, which is the last durable
/// checkpoint with its ledger writes); [`StoreError::Unreadable`] when a copy caught a write
/// sled cannot recover from (try again).
pub(super) fn open_read_only_while_held(dir: &Path) -> Result<(Db, PathBuf), StoreError> {
    open_copy(dir, true)
}

fn open_copy(dir: &Path, while_held: bool) -> Result<(Db, PathBuf), StoreError> {
    // `try_exists`, not `exists`: a store this user cannot reach (a parent it may not enter) is
    // a permission error, never an empty store.
    let exists = dir.try_exists().map_err(|e| io_error(dir, e))?;
    if exists && !while_held {
        check_unlocked(dir)?;
    }
    let scratch = scratch_dir()?;
    let opened = (|| {
        let had_data = exists && db_file_has_data(dir);
        if exists {
            copy_tree(dir, &scratch)?;
        }
        let db = open_sled(&scratch).map_err(|e| match e {
            StoreError::Unreadable { reason, .. } => StoreError::Unreadable { dir: dir.to_path_buf(), reason },
            other => other,
        })?;
        check_written(&db, dir, had_data)?;
        Ok(db)
    })();
    match opened {
        Ok(db) => Ok((db, scratch)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&scratch);
            Err(e)
        }
    }
}

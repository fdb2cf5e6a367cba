//! Crash-safe writing of bosun's own state files (journal, managed set, upgrade state, caches)
//! in the state directory. These are host paths, not node paths under `--root`.
//!
//! Invariant: after [`write_atomic`] returns, the file holds exactly the new bytes and survives
//! power loss; if the process dies at any point before that, the file holds exactly the old
//! bytes (or is absent if it was absent), never a mix. Procedure: write a unique temp file in
//! the same directory, `fchmod`, `fsync` it, `rename` it over the target, `fsync` the directory.
//! A temp file left by a crash is named `.<name>.tmp.<pid>.<random>` (the pid only tells a
//! reader who wrote it); [`sweep_temps`] removes them.
//!
//! Staleness is decided by a lock, never by pid liveness (pids are reused, across reboots
//! too): [`write_atomic`] holds a shared `flock` on the directory itself from before it creates
//! its temp until after the rename, and [`sweep_temps`] removes temps only while it holds an
//! exclusive `flock` on the directory, taken without waiting. Holding it means no writer, in
//! any process (this one included: flock locks belong to open file descriptions), is between
//! creating and renaming a temp, so every temp present is a dead writer's. If a writer holds
//! the lock, the sweep removes nothing this time. The kernel drops a dead process's locks, so a
//! crash never leaves the directory locked.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

/// A state file operation failed; names the file and the step.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {op} failed: {source}")]
pub struct StateFileError {
    /// The state file (also for the fsync of its directory).
    pub path: PathBuf,
    /// The step that failed (`create temp file`, `rename into place`, `fsync directory`, …).
    pub op: &'static str,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

fn err<'a>(path: &'a Path, op: &'static str) -> impl FnOnce(Errno) -> StateFileError + 'a {
    move |e| StateFileError {
        path: path.to_path_buf(),
        op,
        source: e.into(),
    }
}

fn split(path: &Path) -> Result<(PathBuf, String), StateFileError> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| StateFileError {
            path: path.to_path_buf(),
            op: "resolve name",
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "path has no UTF-8 file name",
            ),
        })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((dir, name.to_string()))
}

fn open_dir(dir: &Path, full: &Path) -> Result<OwnedFd, StateFileError> {
    rfs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(err(full, "open directory"))
}

/// Takes a shared `flock` on the directory open as `dirfd` (its own open file description,
/// from [`open_dir`]), waiting while a sweep holds it. The lock lasts as long as `dirfd` is
/// open. Where the filesystem has no flock it takes nothing: the sweep cannot lock either and
/// then removes nothing.
fn lock_shared(dirfd: &OwnedFd) {
    while let Err(Errno::INTR) = rfs::flock(dirfd, FlockOperation::LockShared) {}
}

/// Takes an exclusive `flock` on the directory open as `dirfd` if no one holds any lock on it
/// (without waiting); whether it did. The lock lasts as long as `dirfd` is open.
fn try_lock_exclusive(dirfd: &OwnedFd) -> bool {
    rfs::flock(dirfd, FlockOperation::NonBlockingLockExclusive).is_ok()
}

fn random_suffix() -> String {
    let mut b = [0u8; 6];
    // getrandom only fails without any entropy source; fall back to time, uniqueness is
    // still enforced by O_EXCL.
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b.copy_from_slice(&t.to_le_bytes()[..6]);
    }
    hex::encode(b)
}

/// Atomically replaces `path` with `bytes` and permission bits `mode`, durably. Writes to
/// disk (a temp file in the same directory, then rename and directory fsync). The directory
/// must exist.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateFileError> {
    let (dir, name) = split(path)?;
    let dirfd = open_dir(&dir, path)?;
    // Held until the temp is renamed or removed (dirfd closes on return): a sweep must not
    // take it for a dead writer's.
    lock_shared(&dirfd);
    let tmp = format!(".{name}.tmp.{}.{}", std::process::id(), random_suffix());
    let fd = rfs::openat(
        &dirfd,
        tmp.as_str(),
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(err(path, "create temp file"))?;
    let result = (|| {
        let mut file = std::fs::File::from(fd);
        file.write_all(bytes).map_err(|e| StateFileError {
            path: path.to_path_buf(),
            op: "write temp file",
            source: e,
        })?;
        rfs::fchmod(&file, Mode::from_raw_mode(mode & 0o7777))
            .map_err(err(path, "chmod temp file"))?;
        rfs::fsync(&file).map_err(err(path, "fsync temp file"))?;
        rfs::renameat(&dirfd, tmp.as_str(), &dirfd, name.as_str())
            .map_err(err(path, "rename into place"))?;
        rfs::fsync(&dirfd).map_err(err(path, "fsync directory"))
    })();
    if result.is_err() {
        let _ = rfs::unlinkat(&dirfd, tmp.as_str(), rfs::AtFlags::empty());
    }
    result
}

/// Removes `path` durably (unlink, then fsync the directory). Absent is not an error. Writes
/// to disk.
pub fn remove_durable(path: &Path) -> Result<(), StateFileError> {
    let (dir, name) = split(path)?;
    let dirfd = open_dir(&dir, path)?;
    match rfs::unlinkat(&dirfd, name.as_str(), rfs::AtFlags::empty()) {
        Ok(()) => rfs::fsync(&dirfd).map_err(err(path, "fsync directory")),
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(err(path, "remove")(e)),
    }
}

/// Reads `path`, returning `None` if it does not exist. Reads the filesystem only.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateFileError> {
    match std::fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StateFileError {
            path: path.to_path_buf(),
            op: "read",
            source: e,
        }),
    }
}

/// Removes temp files left in `dir` by [`write_atomic`] calls whose process died; returns how
/// many. Removes nothing while any writer holds the directory's lock (see module docs). Writes
/// to disk.
pub fn sweep_temps(dir: &Path) -> Result<usize, StateFileError> {
    let dirfd = open_dir(dir, dir)?;
    if !try_lock_exclusive(&dirfd) {
        return Ok(0);
    }
    let mut names = Vec::new();
    let it = rfs::Dir::read_from(&dirfd).map_err(err(dir, "list directory"))?;
    for entry in it {
        let entry = entry.map_err(err(dir, "list directory"))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if is_state_temp(&name) {
            names.push(name);
        }
    }
    for n in &names {
        match rfs::unlinkat(&dirfd, n.as_str(), rfs::AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(err(dir, "remove stale temp file")(e)),
        }
    }
    if !names.is_empty() {
        rfs::fsync(&dirfd).map_err(err(dir, "fsync directory"))?;
    }
    Ok(names.len())
}

/// Whether `name` is a [`write_atomic`] temp (`.<name>.tmp.<pid>.<12 hex>`) (pure).
fn is_state_temp(name: &str) -> bool {
    let Some(rest) = name.strip_prefix('.') else {
        return false;
    };
    let mut parts = rest.rsplitn(3, '.');
    let (Some(rand), Some(pid), Some(head)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    head.len() > 4
        && head.ends_with(".tmp")
        && !pid.is_empty()
        && pid.bytes().all(|b| b.is_ascii_digit())
        && rand.len() == 12
        && rand.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_atomic_replaces_and_sets_mode() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("state.json");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o640).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        // Only the target remains: no temp files.
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn write_atomic_names_missing_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("nope/state.json");
        let e = write_atomic(&p, b"x", 0o600).unwrap_err();
        assert!(e.to_string().contains("nope/state.json"), "{e}");
    }

    #[test]
    fn sweep_removes_only_state_temps_whatever_pid_they_name() {
        let d = tempfile::tempdir().unwrap();
        // Our own pid, certainly alive: the pid in the name decides nothing, the lock does.
        let own = format!(".managed.json.tmp.{}.00112233aabb", std::process::id());
        std::fs::write(d.path().join(&own), b"x").unwrap();
        std::fs::write(d.path().join(".journal.json.tmp.1.00112233aabb"), b"x").unwrap();
        std::fs::write(d.path().join("journal.json"), b"keep").unwrap();
        std::fs::write(d.path().join(".hidden.tmp"), b"keep").unwrap();
        std::fs::write(d.path().join(".x.tmp.12.not-hex-here"), b"keep").unwrap();
        assert_eq!(sweep_temps(d.path()).unwrap(), 2);
        let mut left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [".hidden.tmp", ".x.tmp.12.not-hex-here", "journal.json"]
        );
    }

    #[test]
    fn sweep_keeps_temps_while_a_writer_holds_the_directory_lock() {
        let d = tempfile::tempdir().unwrap();
        let temp = d.path().join(".status.json.tmp.1.00112233aabb");
        std::fs::write(&temp, b"x").unwrap();
        // A writer between creating and renaming its temp: its own open of the directory,
        // shared-locked, as write_atomic holds it.
        let writer = open_dir(d.path(), d.path()).unwrap();
        lock_shared(&writer);
        assert_eq!(sweep_temps(d.path()).unwrap(), 0);
        assert!(temp.exists());
        // Another writer can still write meanwhile (shared with shared).
        write_atomic(&d.path().join("other.json"), b"y", 0o600).unwrap();
        drop(writer);
        assert_eq!(sweep_temps(d.path()).unwrap(), 1);
        assert!(!temp.exists());
    }
}

//! Stat stamps of the files bosun wrote, so a re-plan that changes nothing reads no file
//! contents: for each managed file, the stat fields that change whenever the file does
//! (device, inode, size, mtime, ctime) and the SHA-256 of the content it had when stamped.
//!
//! A plan ([`FileStamps::holds`]) trusts a file whose stat equals its stamp and whose
//! stamped hash equals the hash of the content it wants: that file holds exactly the wanted
//! bytes, so it is not opened. Any other file is read and compared as before.
//!
//! Invariants:
//! - A stamp is only taken from a file that was read back and found equal to the content it
//!   stands for, with the same stat before and after the read ([`FileStamps::record`]).
//! - Racy files are never stamped (the problem git's index has): the kernel stamps ctime with a
//!   clock that ticks every few milliseconds, so a change made in the same tick as the last one
//!   could leave ctime as it was. A stamp is taken only when the file's ctime is older than the
//!   coarse clock read before its first stat; any later change then gets a later ctime
//!   (multigrain timestamps, Linux ≥ 6.13, only make them finer).
//! - The file is a cache: missing, unreadable or from another version means "no stamps"
//!   (every file is read), never an error. It is written atomically, only when it changed.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags};
use sha2::{Digest, Sha256};

use crate::fsroot::Root;
use crate::statefile;

/// File name of the stamps in the state dir.
pub const STAMPS_FILE: &str = "file-stamps.json";
const STAMPS_VERSION: u32 = 1;

/// What a managed file looked like when it held content with hash `sha256`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stamp {
    dev: u64,
    ino: u64,
    size: i64,
    mtime: (i64, u64),
    ctime: (i64, u64),
    /// Hex SHA-256 of the content.
    sha256: String,
}

impl Stamp {
    /// Whether `st` is the stat this stamp was taken from.
    fn matches(&self, st: &rfs::Stat) -> bool {
        let (mtime, ctime) = times(st);
        self.dev == st.st_dev
            && self.ino == st.st_ino
            && self.size == st.st_size
            && self.mtime == mtime
            && self.ctime == ctime
    }
}

/// (seconds, nanoseconds) of mtime and ctime.
fn times(st: &rfs::Stat) -> ((i64, u64), (i64, u64)) {
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    (
        (st.st_mtime as i64, st.st_mtime_nsec as u64),
        (st.st_ctime as i64, st.st_ctime_nsec as u64),
    )
}

/// Hex SHA-256 of `bytes` (pure).
pub fn content_hash(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Record {
    version: u32,
    stamps: BTreeMap<String, Stamp>,
}

/// The stamps of one state dir, by node path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileStamps {
    stamps: BTreeMap<String, Stamp>,
    /// What the file on disk holds, to skip writes that change nothing.
    saved: BTreeMap<String, Stamp>,
}

impl FileStamps {
    /// Reads the stamps of `state_dir`; anything unreadable is no stamps. Reads the file.
    pub fn load(state_dir: &Path) -> FileStamps {
        let stamps = std::fs::read(state_dir.join(STAMPS_FILE))
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .filter(|r| r.version == STAMPS_VERSION)
            .map(|r| r.stamps)
            .unwrap_or_default();
        FileStamps {
            saved: stamps.clone(),
            stamps,
        }
    }

    /// Whether the file at `path`, whose stat is `st`, is known to hold exactly `wanted` (its
    /// stamp matches `st` and hashes the same content). Pure.
    pub fn holds(&self, path: &str, st: &rfs::Stat, wanted: &[u8]) -> bool {
        self.stamps.get(path).is_some_and(|stamp| {
            i64::try_from(wanted.len()) == Ok(stamp.size)
                && stamp.matches(st)
                && stamp.sha256 == content_hash(wanted)
        })
    }

    /// Whether `path` has a stamp at all.
    pub fn has(&self, path: &str) -> bool {
        self.stamps.contains_key(path)
    }

    /// Stamps each `(path, content)` of `files` whose file under `root` holds exactly that
    /// content (read back, stat unchanged across the read, not racy; see the module docs), and
    /// forgets the stamp of every path not in `keep` or not confirmed. Reads the files.
    pub fn record<'a>(
        &mut self,
        root: &Root,
        files: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        keep: &BTreeSet<&str>,
    ) {
        self.stamps.retain(|p, _| keep.contains(p.as_str()));
        for (path, content) in files {
            match stamp_of(root, path, content) {
                Some(stamp) => {
                    self.stamps.insert(path.to_string(), stamp);
                }
                None => {
                    self.stamps.remove(path);
                }
            }
        }
    }

    /// Writes the stamps to `state_dir` when they changed (atomically, mode 0600). Writes to
    /// disk.
    pub fn save(&mut self, state_dir: &Path) -> Result<(), statefile::StateFileError> {
        if self.stamps == self.saved {
            return Ok(());
        }
        let record = Record {
            version: STAMPS_VERSION,
            stamps: self.stamps.clone(),
        };
        let bytes = serde_json::to_vec(&record).unwrap_or_default();
        statefile::write_atomic(&state_dir.join(STAMPS_FILE), &bytes, 0o600)?;
        self.saved = self.stamps.clone();
        Ok(())
    }
}

/// The stamp of the regular file at `path` if it holds exactly `content` and is not racy.
/// Reads the file.
fn stamp_of(root: &Root, path: &str, content: &[u8]) -> Option<Stamp> {
    let parent = root.open_parent(path, false).ok()??;
    let before = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let fd = rfs::openat(
        &parent.dir,
        parent.name.as_str(),
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    let st = rfs::fstat(&fd).ok()?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile
        || u64::try_from(st.st_size).ok()? != content.len() as u64
    {
        return None;
    }
    let (mtime, ctime) = times(&st);
    #[allow(clippy::unnecessary_cast)] // the field types differ between targets
    let now = (before.tv_sec as i64, before.tv_nsec as u64);
    if ctime >= now {
        return None; // racy: a change in this clock tick could keep this ctime
    }
    let mut read = Vec::with_capacity(content.len());
    std::fs::File::from(fd.as_fd().try_clone_to_owned().ok()?)
        .read_to_end(&mut read)
        .ok()?;
    let after = rfs::statat(&parent.dir, parent.name.as_str(), AtFlags::SYMLINK_NOFOLLOW).ok()?;
    let stamp = Stamp {
        dev: st.st_dev,
        ino: st.st_ino,
        size: st.st_size,
        mtime,
        ctime,
        sha256: content_hash(content),
    };
    (read == content && stamp.matches(&after)).then_some(stamp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(root: &Root, path: &str) -> rfs::Stat {
        let parent = root.open_parent(path, false).unwrap().unwrap();
        rfs::statat(&parent.dir, parent.name.as_str(), AtFlags::SYMLINK_NOFOLLOW).unwrap()
    }

    /// Waits until the coarse clock is past the ctime of each of `paths`, so they are not racy.
    /// One tick of that clock is not always enough: with multigrain timestamps (Linux ≥ 6.13)
    /// a file's ctime can be ahead of the coarse clock (measured here: 0.3 ms ahead of the
    /// next tick, for about 1 in 700 fresh files).
    fn wait_past_ctimes(paths: &[std::path::PathBuf]) {
        use std::os::unix::fs::MetadataExt;
        let newest = paths
            .iter()
            .map(|p| {
                let m = std::fs::symlink_metadata(p).unwrap();
                (m.ctime(), m.ctime_nsec())
            })
            .max()
            .unwrap();
        loop {
            let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
            #[allow(clippy::unnecessary_cast)] // the field types differ between targets
            if (now.tv_sec as i64, now.tv_nsec as i64) > newest {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    #[test]
    fn a_stamped_file_is_known_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/a"), "alpha\n").unwrap();
        std::fs::write(dir.path().join("etc/b"), "beta\n").unwrap();
        let root = Root::open(dir.path()).unwrap();
        wait_past_ctimes(&[dir.path().join("etc/a"), dir.path().join("etc/b")]);
        let mut stamps = FileStamps::default();
        let keep: BTreeSet<&str> = ["/etc/a", "/etc/b"].into();
        stamps.record(
            &root,
            [
                ("/etc/a", &b"alpha\n"[..]),
                ("/etc/b", &b"not what is there\n"[..]),
            ],
            &keep,
        );
        assert!(stamps.has("/etc/a"));
        assert!(!stamps.has("/etc/b"), "content differs: not stamped");
        stamps.save(state.path()).unwrap();
        let stamps = FileStamps::load(state.path());

        let st = stat(&root, "/etc/a");
        assert!(stamps.holds("/etc/a", &st, b"alpha\n"));
        assert!(!stamps.holds("/etc/a", &st, b"other\n"));
        // Same size, new content: ctime moves on.
        std::fs::write(dir.path().join("etc/a"), "ALPHA\n").unwrap();
        let st = stat(&root, "/etc/a");
        assert!(!stamps.holds("/etc/a", &st, b"alpha\n"));
    }

    #[test]
    fn a_file_changed_in_the_current_clock_tick_is_not_stamped() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::open(dir.path()).unwrap();
        let mut stamps = FileStamps::default();
        let keep: BTreeSet<&str> = ["/a"].into();
        // Write and stamp within one tick of the coarse clock (retry if the tick ends between).
        for _ in 0..100 {
            let t0 = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
            std::fs::write(dir.path().join("a"), "x").unwrap();
            stamps.record(&root, [("/a", &b"x"[..])], &keep);
            if rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse) == t0 {
                assert!(!stamps.has("/a"), "stamped a racy file");
                return;
            }
        }
        panic!("the coarse clock ticked during every attempt");
    }

    #[test]
    fn unreadable_or_foreign_stamp_files_are_no_stamps() {
        let state = tempfile::tempdir().unwrap();
        std::fs::write(state.path().join(STAMPS_FILE), "not json").unwrap();
        assert_eq!(FileStamps::load(state.path()), FileStamps::default());
        std::fs::write(
            state.path().join(STAMPS_FILE),
            r#"{"version": 99, "stamps": {}}"#,
        )
        .unwrap();
        assert_eq!(FileStamps::load(state.path()), FileStamps::default());
    }
}

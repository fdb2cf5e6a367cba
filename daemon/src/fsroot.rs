//! The filesystem under `--root`: resolving node paths (`/etc/hostname`) to directory handles
//! beneath one root directory, creating missing parent directories, and observing what is on
//! disk at managed paths.
//!
//! Invariants:
//! - Every lookup starts from the root's directory file descriptor and never leaves it: with
//!   `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` when the kernel has it, otherwise
//!   ([`Resolver::Walk`], kernels before 5.6) component by component with `O_NOFOLLOW`, following
//!   symlinks in parents by hand with the same rules. The root acts as `/` (a chroot): an
//!   absolute symlink target starts again at the root, and `..` at the root stays at the root.
//!   So a node's own absolute links (Debian's `/var/lock → /run/lock`, `/var/lib/rancher →
//!   /data/rancher`) resolve as they do when the node boots, with `--root /` and with any other
//!   root, and a link aimed at the host's `/etc` from an image under `--root ./img` lands in
//!   `./img/etc`, never in the host's.
//! - The final component of a managed path is never followed: a symlink, directory or device at
//!   a managed path is reported as such ([`EntryKind`]), not read through.
//! - Directories created for missing parents get mode 0755 and owner root:root (the chown is
//!   skipped when not running as root, e.g. `bosun plan --root ./scratch` on a laptop), and the
//!   directory that received the new entry is fsynced so the new directory survives a crash.
//! - Managed paths must be absolute and normalised: no `.` or `..` components, no NUL, no
//!   trailing `/`. Anything else is an [`FsError::InvalidPath`] before any I/O.

use std::collections::{BTreeMap, VecDeque};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

/// Most symlinks followed while resolving one path (the kernel's own limit).
const MAX_SYMLINKS: usize = 40;

/// Errors from resolving or reading paths under the root. Each carries the node path.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The root directory cannot be opened (missing, not a directory, no permission).
    #[error("cannot open root directory {root}: {source}")]
    OpenRoot {
        /// The root directory.
        root: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A managed path is not absolute and normalised (relative, `.`/`..`, NUL, trailing `/`);
    /// refused before any I/O.
    #[error("invalid managed path {path:?}: {reason} (expected an absolute, normalised path such as /etc/hostname)")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The kernel refused the lookup as crossing out of the root (`EXDEV`); `RESOLVE_IN_ROOT`
    /// keeps symlinks and `..` inside, so this is not expected from them.
    #[error("{path}: the kernel refused to resolve it inside the root {root} (EXDEV); refusing")]
    Escape {
        /// The node path.
        path: String,
        /// The root directory.
        root: PathBuf,
    },
    /// More than 40 symlinks on the way (ELOOP).
    #[error("{path}: too many levels of symbolic links under root {root}")]
    SymlinkLoop {
        /// The node path.
        path: String,
        /// The root directory.
        root: PathBuf,
    },
    /// A parent component of the path is not a directory (a file, device, or a symlink to one).
    #[error("{path}: parent {component:?} is a {found}, expected a directory (under root {root})")]
    NotADirectory {
        /// The node path.
        path: String,
        /// The parent component that is not a directory.
        component: String,
        /// What it is instead.
        found: EntryKind,
        /// The root directory.
        root: PathBuf,
    },
    /// Any other filesystem operation on the path failed (open, stat, read, mkdir, fsync).
    #[error("{path}: {op} failed under root {root}: {source}")]
    Io {
        /// The node path.
        path: String,
        /// The operation that failed.
        op: &'static str,
        /// The root directory.
        root: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// How paths are resolved beneath the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolver {
    /// `openat2` with `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` (Linux ≥ 5.6).
    Openat2,
    /// Component-by-component `openat(O_NOFOLLOW)` with symlinks resolved by hand inside the
    /// root, as `RESOLVE_IN_ROOT` does. Used when `openat2` is `ENOSYS`.
    Walk,
}

/// What kind of filesystem object sits at a path (never followed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A symbolic link (not followed).
    Symlink,
    /// A directory.
    Directory,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A type the kernel reported that none of the above covers.
    Unknown,
}

impl EntryKind {
    fn from_file_type(t: FileType) -> Self {
        match t {
            FileType::RegularFile => EntryKind::File,
            FileType::Symlink => EntryKind::Symlink,
            FileType::Directory => EntryKind::Directory,
            FileType::CharacterDevice => EntryKind::CharDevice,
            FileType::BlockDevice => EntryKind::BlockDevice,
            FileType::Fifo => EntryKind::Fifo,
            FileType::Socket => EntryKind::Socket,
            _ => EntryKind::Unknown,
        }
    }
}

impl std::fmt::Display for EntryKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EntryKind::File => "regular file",
            EntryKind::Symlink => "symbolic link",
            EntryKind::Directory => "directory",
            EntryKind::CharDevice => "character device",
            EntryKind::BlockDevice => "block device",
            EntryKind::Fifo => "fifo",
            EntryKind::Socket => "socket",
            EntryKind::Unknown => "special file",
        })
    }
}

/// What was found at one managed path. `content` is the file's bytes for regular files and
/// empty for every other kind (symlinks are not followed, devices are not opened), and empty
/// when `desired_content` says the file was not read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    /// What is there.
    pub kind: EntryKind,
    /// The bytes of a regular file; empty for every other kind.
    pub content: Vec<u8>,
    /// The file was not read: its stat stamp vouches that it holds exactly the desired
    /// content (see [`crate::stamps`]).
    pub desired_content: bool,
    /// Permission bits only (`st_mode & 0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

impl Observed {
    /// A regular file (for building observations in tests and callers).
    pub fn file(content: impl Into<Vec<u8>>, mode: u32, uid: u32, gid: u32) -> Self {
        Observed {
            kind: EntryKind::File,
            content: content.into(),
            desired_content: false,
            mode,
            uid,
            gid,
        }
    }
}

/// The disk state of a set of node paths at one moment: `None` means nothing is there
/// (including a missing parent directory).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Observation {
    entries: BTreeMap<String, Option<Observed>>,
}

impl Observation {
    /// An empty observation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records what is at `path` (pure; used by [`Root::observe`] and by tests).
    pub fn insert(&mut self, path: impl Into<String>, observed: Option<Observed>) {
        self.entries.insert(path.into(), observed);
    }

    /// Whether `path` was observed at all (absent or present).
    pub fn contains(&self, path: &str) -> bool {
        self.entries.contains_key(path)
    }

    /// What is at `path`; `None` if nothing is there or it was not observed.
    pub fn get(&self, path: &str) -> Option<&Observed> {
        self.entries.get(path).and_then(Option::as_ref)
    }

    /// Every observed path in path order, with what is there (`None`: nothing).
    pub fn iter(&self) -> impl Iterator<Item = (&str, Option<&Observed>)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_ref()))
    }
}

/// An open directory under the root plus the final component of the path inside it.
#[derive(Debug)]
pub struct ParentDir {
    /// The open parent directory (beneath the root).
    pub dir: OwnedFd,
    /// The final path component (a single file name, no `/`).
    pub name: String,
}

/// A directory that every managed path is resolved beneath.
#[derive(Debug)]
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
    resolver: Resolver,
}

/// Splits a node path into its parent components and file name, validating it (pure).
pub fn split_node_path(path: &str) -> Result<(Vec<&str>, &str), FsError> {
    let invalid = |reason| FsError::InvalidPath {
        path: path.to_string(),
        reason,
    };
    if !path.starts_with('/') {
        return Err(invalid("not absolute"));
    }
    if path.contains('\0') {
        return Err(invalid("contains a NUL byte"));
    }
    if path.ends_with('/') {
        return Err(invalid("ends with '/' (names a directory, not a file)"));
    }
    let mut comps = Vec::new();
    for c in path.split('/').filter(|c| !c.is_empty()) {
        if c == "." || c == ".." {
            return Err(invalid("contains a '.' or '..' component"));
        }
        comps.push(c);
    }
    let name = comps.pop().ok_or_else(|| invalid("has no file name"))?;
    Ok((comps, name))
}

/// The node path of the directory holding `path` (`/etc/hostname` → `/etc`), pure.
pub fn parent_node_path(path: &str) -> Result<String, FsError> {
    let (comps, _) = split_node_path(path)?;
    Ok(format!("/{}", comps.join("/")))
}

impl Root {
    /// Opens `path` as the root, choosing [`Resolver::Openat2`] when the kernel supports it.
    /// Reads the filesystem only.
    pub fn open(path: impl AsRef<Path>) -> Result<Root, FsError> {
        let mut root = Self::open_with_resolver(path, Resolver::Openat2)?;
        match rfs::openat2(
            &root.fd,
            ".",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Ok(_) => {}
            Err(Errno::NOSYS) | Err(Errno::PERM) => root.resolver = Resolver::Walk,
            Err(e) => {
                return Err(FsError::OpenRoot {
                    root: root.path.clone(),
                    source: e.into(),
                })
            }
        }
        Ok(root)
    }

    /// Opens `path` as the root with a fixed resolver (tests use this to exercise
    /// [`Resolver::Walk`] on kernels that have `openat2`). Reads the filesystem only.
    pub fn open_with_resolver(path: impl AsRef<Path>, resolver: Resolver) -> Result<Root, FsError> {
        let path = path.as_ref().to_path_buf();
        let fd = rfs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| FsError::OpenRoot {
            root: path.clone(),
            source: e.into(),
        })?;
        Ok(Root { fd, path, resolver })
    }

    /// The host path of the root directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How this root resolves paths (`openat2`, or the walk fallback).
    pub fn resolver(&self) -> Resolver {
        self.resolver
    }

    /// The host path a node path maps to (for messages; never used for I/O).
    pub fn host_path(&self, node_path: &str) -> PathBuf {
        self.path.join(node_path.trim_start_matches('/'))
    }

    fn io_err(&self, path: &str, op: &'static str, e: Errno) -> FsError {
        FsError::Io {
            path: path.to_string(),
            op,
            root: self.path.clone(),
            source: e.into(),
        }
    }

    /// Opens the directory at node path `dir` (e.g. `/etc/rancher`). Returns `None` if it (or
    /// an ancestor) does not exist and `create` is false. With `create`, missing directories
    /// are made (0755 root:root) and their parents fsynced: writes to disk.
    pub fn open_dir(&self, dir: &str, create: bool) -> Result<Option<OwnedFd>, FsError> {
        let comps: Vec<&str> = dir.split('/').filter(|c| !c.is_empty()).collect();
        if !dir.starts_with('/') || comps.iter().any(|c| *c == "." || *c == "..") {
            return Err(FsError::InvalidPath {
                path: dir.to_string(),
                reason: "directory is not absolute and normalised",
            });
        }
        self.open_dir_components(&comps, create, dir)
    }

    /// Opens the parent directory of node path `path` and returns it with the file name.
    /// `None` if the parent does not exist and `create` is false. With `create`, writes to
    /// disk (see [`Root::open_dir`]).
    pub fn open_parent(&self, path: &str, create: bool) -> Result<Option<ParentDir>, FsError> {
        let (comps, name) = split_node_path(path)?;
        Ok(self
            .open_dir_components(&comps, create, path)?
            .map(|dir| ParentDir {
                dir,
                name: name.to_string(),
            }))
    }

    fn open_dir_components(
        &self,
        comps: &[&str],
        create: bool,
        display: &str,
    ) -> Result<Option<OwnedFd>, FsError> {
        match self.resolver {
            Resolver::Openat2 => self.open_dir_openat2(comps, create, display),
            Resolver::Walk => self.open_dir_walk(comps, create, display),
        }
    }

    fn openat2_dir(&self, rel: &str) -> Result<OwnedFd, Errno> {
        let rel = if rel.is_empty() { "." } else { rel };
        let mut tries = 0;
        loop {
            match rfs::openat2(
                &self.fd,
                rel,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
            ) {
                // openat2 returns EAGAIN when a concurrent rename races the lookup.
                Err(Errno::AGAIN) if tries < 16 => tries += 1,
                other => return other,
            }
        }
    }

    fn map_resolve_err(
        &self,
        display: &str,
        comps: &[&str],
        e: Errno,
        dirfd: BorrowedFd<'_>,
    ) -> FsError {
        match e {
            Errno::XDEV => FsError::Escape {
                path: display.to_string(),
                root: self.path.clone(),
            },
            Errno::LOOP => FsError::SymlinkLoop {
                path: display.to_string(),
                root: self.path.clone(),
            },
            Errno::NOTDIR => {
                let last = comps.last().copied().unwrap_or(".");
                let found = rfs::statat(dirfd, last, AtFlags::SYMLINK_NOFOLLOW)
                    .map(|st| EntryKind::from_file_type(FileType::from_raw_mode(st.st_mode)))
                    .unwrap_or(EntryKind::Unknown);
                FsError::NotADirectory {
                    path: display.to_string(),
                    component: format!("/{}", comps.join("/")),
                    found,
                    root: self.path.clone(),
                }
            }
            e => self.io_err(display, "open directory", e),
        }
    }

    fn open_dir_openat2(
        &self,
        comps: &[&str],
        create: bool,
        display: &str,
    ) -> Result<Option<OwnedFd>, FsError> {
        match self.openat2_dir(&comps.join("/")) {
            Ok(fd) => return Ok(Some(fd)),
            Err(Errno::NOENT) if create => {}
            Err(Errno::NOENT) => return Ok(None),
            Err(Errno::NOTDIR) => {
                // Find the first prefix that is not a directory, for the message.
                for i in 1..=comps.len() {
                    if let Err(Errno::NOTDIR) = self.openat2_dir(&comps[..i].join("/")) {
                        let parent = self.openat2_dir(&comps[..i - 1].join("/"));
                        let parent =
                            parent.map_err(|e| self.io_err(display, "open directory", e))?;
                        return Err(self.map_resolve_err(
                            display,
                            &comps[..i],
                            Errno::NOTDIR,
                            parent.as_fd(),
                        ));
                    }
                }
                return Err(self.io_err(display, "open directory", Errno::NOTDIR));
            }
            Err(e) => return Err(self.map_resolve_err(display, comps, e, self.fd.as_fd())),
        }
        // Create missing components one by one, each lookup still confined by openat2.
        let mut cur = self
            .openat2_dir("")
            .map_err(|e| self.io_err(display, "open root", e))?;
        for i in 0..comps.len() {
            let prefix = comps[..=i].join("/");
            let next = match self.openat2_dir(&prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    self.make_dir(cur.as_fd(), comps[i], display)?;
                    match self.openat2_dir(&prefix) {
                        Ok(fd) => fd,
                        Err(e) => {
                            return Err(self.map_resolve_err(display, &comps[..=i], e, cur.as_fd()))
                        }
                    }
                }
                Err(e) => return Err(self.map_resolve_err(display, &comps[..=i], e, cur.as_fd())),
            };
            cur = next;
        }
        Ok(Some(cur))
    }

    /// mkdir `name` in `parent` with 0755 root:root and fsync `parent`. Writes to disk.
    fn make_dir(&self, parent: BorrowedFd<'_>, name: &str, display: &str) -> Result<(), FsError> {
        match rfs::mkdirat(parent, name, Mode::from_raw_mode(0o755)) {
            Ok(()) => {}
            // Lost a race, or a dangling symlink: the follow-up open decides.
            Err(Errno::EXIST) => return Ok(()),
            Err(e) => return Err(self.io_err(display, "create parent directory", e)),
        }
        let fd = rfs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.io_err(display, "open new parent directory", e))?;
        // mkdir applies the umask; set the exact mode.
        rfs::fchmod(&fd, Mode::from_raw_mode(0o755))
            .map_err(|e| self.io_err(display, "chmod new parent directory", e))?;
        if rustix::process::geteuid().is_root() {
            rfs::fchown(
                &fd,
                Some(rustix::process::Uid::ROOT),
                Some(rustix::process::Gid::ROOT),
            )
            .map_err(|e| self.io_err(display, "chown new parent directory", e))?;
        }
        rfs::fsync(&fd).map_err(|e| self.io_err(display, "fsync new parent directory", e))?;
        rfs::fsync(parent).map_err(|e| self.io_err(display, "fsync directory", e))?;
        Ok(())
    }

    fn open_dir_walk(
        &self,
        comps: &[&str],
        create: bool,
        display: &str,
    ) -> Result<Option<OwnedFd>, FsError> {
        // `stack` holds the directories below the root that we are in; empty = at the root.
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut queue: VecDeque<String> = comps.iter().map(|c| c.to_string()).collect();
        let mut links = 0usize;
        let mut walked: Vec<String> = Vec::new();
        while let Some(c) = queue.pop_front() {
            if c.is_empty() || c == "." {
                continue;
            }
            if c == ".." {
                // At the root, `..` is the root (as in a chroot and `RESOLVE_IN_ROOT`).
                stack.pop();
                walked.pop();
                continue;
            }
            let cur: BorrowedFd<'_> = stack.last().map(|f| f.as_fd()).unwrap_or(self.fd.as_fd());
            let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
            let mut created = false;
            loop {
                match rfs::openat(cur, c.as_str(), flags, Mode::empty()) {
                    Ok(fd) => {
                        stack.push(fd);
                        walked.push(c.clone());
                        break;
                    }
                    Err(Errno::NOENT) if create && !created => {
                        self.make_dir(cur, &c, display)?;
                        created = true;
                    }
                    Err(Errno::NOENT) => {
                        if create {
                            return Err(self.io_err(display, "open directory", Errno::NOENT));
                        }
                        return Ok(None);
                    }
                    Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                        let st = rfs::statat(cur, c.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                            .map_err(|e| self.io_err(display, "stat", e))?;
                        let kind = EntryKind::from_file_type(FileType::from_raw_mode(st.st_mode));
                        if kind != EntryKind::Symlink {
                            walked.push(c.clone());
                            return Err(FsError::NotADirectory {
                                path: display.to_string(),
                                component: format!("/{}", walked.join("/")),
                                found: kind,
                                root: self.path.clone(),
                            });
                        }
                        links += 1;
                        if links > MAX_SYMLINKS {
                            return Err(FsError::SymlinkLoop {
                                path: display.to_string(),
                                root: self.path.clone(),
                            });
                        }
                        let target = rfs::readlinkat(cur, c.as_str(), Vec::new())
                            .map_err(|e| self.io_err(display, "readlink", e))?;
                        let target = target.to_string_lossy().into_owned();
                        if target.starts_with('/') {
                            // An absolute target starts again at the root, not the host's `/`.
                            stack.clear();
                            walked.clear();
                        }
                        for t in target.split('/').rev() {
                            queue.push_front(t.to_string());
                        }
                        break;
                    }
                    Err(e) => return Err(self.io_err(display, "open directory", e)),
                }
            }
        }
        match stack.pop() {
            Some(fd) => Ok(Some(fd)),
            None => rfs::openat(
                &self.fd,
                ".",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map(Some)
            .map_err(|e| self.io_err(display, "open root", e)),
        }
    }

    /// Observes one node path without following a symlink at it. Reads the filesystem only.
    pub fn observe_one(&self, path: &str) -> Result<Option<Observed>, FsError> {
        let Some(parent) = self.open_parent(path, false)? else {
            return Ok(None);
        };
        self.observe_in(parent.dir.as_fd(), &parent.name, path, &|_, _| false)
    }

    /// Observes what is at `name` in the open directory `dir` (node path `path`). A regular
    /// file for which `known` is true (its stat says it holds the desired content, see
    /// [`crate::stamps`]) is not opened. Reads the filesystem only.
    fn observe_in(
        &self,
        dir: BorrowedFd<'_>,
        name: &str,
        path: &str,
        known: &dyn Fn(&str, &rfs::Stat) -> bool,
    ) -> Result<Option<Observed>, FsError> {
        let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(self.io_err(path, "stat", e)),
        };
        let kind = EntryKind::from_file_type(FileType::from_raw_mode(st.st_mode));
        let mut observed = Observed {
            kind,
            content: Vec::new(),
            desired_content: false,
            mode: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        };
        if kind != EntryKind::File {
            return Ok(Some(observed));
        }
        if known(path, &st) {
            observed.desired_content = true;
            return Ok(Some(observed));
        }
        let fd = match rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            // Replaced between stat and open: observe again.
            Err(Errno::NOENT) | Err(Errno::LOOP) => return self.observe_in(dir, name, path, known),
            Err(e) => return Err(self.io_err(path, "open", e)),
        };
        let st = rfs::fstat(&fd).map_err(|e| self.io_err(path, "stat", e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return self.observe_in(dir, name, path, known);
        }
        observed.mode = st.st_mode & 0o7777;
        observed.uid = st.st_uid;
        observed.gid = st.st_gid;
        let mut file = std::fs::File::from(fd);
        if let Ok(len) = usize::try_from(st.st_size) {
            observed.content.reserve_exact(len);
        }
        file.read_to_end(&mut observed.content)
            .map_err(|e| FsError::Io {
                path: path.to_string(),
                op: "read",
                root: self.path.clone(),
                source: e,
            })?;
        Ok(Some(observed))
    }

    /// Observes every path in `paths`. Reads the filesystem only.
    pub fn observe<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
    ) -> Result<Observation, FsError> {
        self.observe_known(paths, &|_, _| false)
    }

    /// Observes every path in `paths`, each parent directory resolved once; a regular file for
    /// which `known` is true is not opened (see [`Root::observe_in`]). Reads the filesystem
    /// only.
    pub fn observe_known<'a>(
        &self,
        paths: impl IntoIterator<Item = &'a str>,
        known: &dyn Fn(&str, &rfs::Stat) -> bool,
    ) -> Result<Observation, FsError> {
        let mut obs = Observation::new();
        let mut parents: BTreeMap<String, Option<OwnedFd>> = BTreeMap::new();
        for p in paths {
            let (_, name) = split_node_path(p)?;
            let dir = parent_node_path(p)?;
            if !parents.contains_key(&dir) {
                // Resolved through the file's path, so an error names the file.
                let fd = self.open_parent(p, false)?.map(|parent| parent.dir);
                parents.insert(dir.clone(), fd);
            }
            let o = match &parents[&dir] {
                Some(fd) => self.observe_in(fd.as_fd(), name, p, known)?,
                None => None,
            };
            obs.insert(p, o);
        }
        Ok(obs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_rejects_unnormalised_paths() {
        assert_eq!(
            split_node_path("/etc/hostname").unwrap(),
            (vec!["etc"], "hostname")
        );
        assert_eq!(split_node_path("/a//b").unwrap(), (vec!["a"], "b"));
        for bad in ["etc/x", "/etc/../x", "/etc/./x", "/etc/", "/", "/a\0b", ""] {
            assert!(
                matches!(split_node_path(bad), Err(FsError::InvalidPath { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn parent_of_top_level_file_is_root() {
        assert_eq!(parent_node_path("/x").unwrap(), "/");
        assert_eq!(
            parent_node_path("/etc/rancher/k3s/config.yaml").unwrap(),
            "/etc/rancher/k3s"
        );
    }
}

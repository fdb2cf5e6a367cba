//! Applying a [`Plan`] to the filesystem under a [`Root`] as one crash-safe transaction, and
//! recovering an interrupted one at start-up.
//!
//! Invariant: after any crash (SIGKILL or power loss) followed by [`recover`], every file bosun
//! touched holds exactly the content, mode and owner of one whole commit — all old or all new —
//! the managed set in the state dir matches that commit, and no temp file is left.
//!
//! One transaction (`txid`: 16 random hex digits):
//! 1. Take the `apply.lock` flock in the state dir; [`recover`] any earlier transaction. A plan
//!    is only valid against the tree recovery leaves: planners observe through a
//!    [`RecoveredView`], and if this recovery rolls forward a transaction the plan did not
//!    count in ([`ApplyOptions::planned_over`]), the apply refuses the plan
//!    ([`ApplyError::PlanPredatesRecovery`]) and writes nothing of it.
//! 2. Write the [`journal::Intent`] (txid + directories that may get temp files), durably.
//! 3. Stage every create/update as `.bosun-tmp.<name>.<txid>` in the target's directory:
//!    `O_CREAT|O_EXCL|O_NOFOLLOW`, write, `fchown`, then `fchmod` (after chown, which would clear
//!    set-id bits), then make it durable (see [`Durability`]). Missing parent directories are
//!    created 0755 root:root and their parents fsynced. Mode-only and owner-only updates are
//!    staged the same way (the whole file is rewritten) so they commit atomically with the rest.
//! 4. fsync every directory holding a temp, so the temps' directory entries are durable.
//! 5. Write the [`journal::Journal`] (renames, deletes, managed set after) with
//!    [`statefile::write_atomic`]. Its rename into place is the commit point.
//! 6. Roll forward: rename each temp onto its target, unlink pruned files, fsync each touched
//!    directory, write the managed set atomically, remove the intent, then the journal (both
//!    durably).
//!
//! [`recover`]: with a journal present, roll forward (step 6; a temp that no longer exists was
//! already renamed — the target must then exist). With an intent but no journal, the
//! transaction never committed: remove every `.bosun-tmp.*.<txid>` in its directories, remove
//! the (empty) directories it created, then the intent. Both steps are idempotent, so a crash
//! during recovery is recovered by running it again.
//!
//! Durability choice: [`Durability::SyncfsOnce`] (the default) skips per-file fsync and calls
//! `syncfs` once per filesystem holding temps: one journal commit instead of N on ext4. It was
//! about twice as fast for 1,000 files in `bench/apply` (see the README), which is why it is the
//! default. Its cost is that it also flushes unrelated dirty data (containerd, k3s), so its
//! latency depends on what else is writing. [`Durability::FsyncEach`] fsyncs every temp file and
//! flushes only bosun's own data (`--durability fsync`). Both give the same guarantees.
//!
//! Not guarded: changes made by others between observation and apply (the plan's "before" is
//! not re-checked). Renaming replaces the inode, so hard links to a managed file are not updated.

pub mod journal;
mod recovered;

pub use recovered::{PendingRecovery, RecoveredView};

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, FlockOperation, Mode, OFlags};
use rustix::io::Errno;

use crate::desired::DesiredFile;
use crate::fsroot::{parent_node_path, split_node_path, FsError, Root};
use crate::plan::{Deletion, FileChange, Plan};
use crate::statefile::{self, StateFileError};
use journal::{Intent, Journal, JournalError, StagedRename};

/// The managed set: node paths bosun created and may prune.
pub const MANAGED_FILE: &str = "managed-files.json";
/// flock'd for the duration of an apply or recovery.
pub const LOCK_FILE: &str = "apply.lock";
/// Every staged temp file's name starts with this.
pub const TEMP_PREFIX: &str = ".bosun-tmp.";
const MANAGED_VERSION: u32 = 1;
const NAME_MAX: usize = 255;

/// Why an apply or a recovery failed. Each variant names the path (and root) involved; a failure
/// before the commit point leaves the old files in place.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Resolving or observing a path under the root failed (a symlink escaping it, a non-directory
    /// parent, …).
    #[error(transparent)]
    Fs(#[from] FsError),
    /// Reading or writing the transaction journal or intent failed, or it is corrupt.
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Writing or removing a state file (managed set, intent, journal) failed.
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    /// A filesystem operation on a node path failed: staging a temp, chown/chmod, fsync, rename or
    /// unlink.
    #[error("{path}: {op} failed under root {root}: {source}")]
    Io {
        /// The node path (absolute, as in the config).
        path: String,
        /// The operation that failed (`write`, `fchown`, `rename`, …).
        op: &'static str,
        /// The root the path was resolved under.
        root: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// Recovery found a committed transaction whose staged temp and target are both gone (removed
    /// by someone else); nothing is guessed.
    #[error("{path}: transaction {txid} committed but neither its staged file {temp} nor the target exists under root {root}; something removed them. Restore the file or remove {journal} to give up on this transaction")]
    StagedFileLost {
        /// The node path whose file is missing.
        path: String,
        /// The staged temp file's name.
        temp: String,
        /// The committed transaction.
        txid: String,
        /// The root the path is under.
        root: PathBuf,
        /// The journal file to remove to give up on the transaction.
        journal: PathBuf,
    },
    /// The managed-set file in the state dir is not the expected JSON.
    #[error("{path}: not a valid managed-set file (expected {{\"version\":1,\"paths\":[...]}}): {reason}")]
    ManagedCorrupt {
        /// The managed-set file.
        path: PathBuf,
        /// The parse error.
        reason: String,
    },
    /// A plan computed before recovery rolled a transaction forward (not through
    /// [`RecoveredView`]): nothing of it was applied.
    #[error("an interrupted apply (transaction {txid}) was completed first, and this plan was computed before it (not through apply::RecoveredView): nothing of the plan was applied; plan again")]
    PlanPredatesRecovery {
        /// The transaction recovery rolled forward.
        txid: String,
    },
    /// Creating the state directory or taking its `apply.lock` failed.
    #[error("state directory {path}: {op} failed: {source}")]
    StateDir {
        /// The state directory.
        path: PathBuf,
        /// The operation that failed (`create`, `open lock file`, `lock`).
        op: &'static str,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// How staged temp files are made durable before the commit point (see module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fsync every staged temp file (flushes only bosun's data; `--durability fsync`).
    FsyncEach,
    /// One `syncfs` per filesystem holding temps (fewer journal commits; also flushes other
    /// writers' dirty data). The default.
    #[default]
    SyncfsOnce,
}

/// Options of [`apply`].
#[derive(Debug, Clone, Default)]
pub struct ApplyOptions {
    /// How staged files are made durable before the commit point.
    pub durability: Durability,
    /// The committed transaction the plan already counts as rolled forward
    /// ([`RecoveredView::planned_over`]). Recovery inside the apply rolling forward any other
    /// transaction means the plan is stale: the apply refuses it.
    pub planned_over: Option<String>,
}

/// What [`recover`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The txid of a committed transaction that was rolled forward.
    pub rolled_forward: Option<String>,
    /// The txid of an uncommitted transaction whose temps were removed.
    pub rolled_back: Option<String>,
    /// Temps renamed onto their targets while rolling forward.
    pub renamed: usize,
    /// Pruned files unlinked while rolling forward.
    pub deleted: usize,
    /// Temp files removed while rolling back.
    pub removed_temps: usize,
}

/// What [`apply`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// `None` when the plan changed no file (only the managed set may have been rewritten).
    pub txid: Option<String>,
    /// Files created or updated (including mode- or owner-only changes).
    pub written: usize,
    /// Files pruned (bosun created them and the config no longer names them).
    pub deleted: usize,
    /// Recovery of an earlier interrupted transaction, done first.
    pub recovery: RecoveryReport,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ManagedRecord {
    version: u32,
    paths: BTreeSet<String>,
}

/// The temp file name for `name` in transaction `txid` (pure): `.bosun-tmp.<name>.<txid>`,
/// with `name` shortened (at a char boundary) to fit NAME_MAX.
pub fn temp_name(name: &str, txid: &str) -> String {
    let budget = NAME_MAX - TEMP_PREFIX.len() - 1 - txid.len();
    let mut end = name.len().min(budget);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    format!("{TEMP_PREFIX}{}.{txid}", &name[..end])
}

fn is_temp_of(name: &str, txid: &str) -> bool {
    name.starts_with(TEMP_PREFIX) && name.strip_suffix(txid).is_some_and(|h| h.ends_with('.'))
}

fn new_txid() -> String {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
            ^ u128::from(std::process::id());
        b.copy_from_slice(&t.to_le_bytes()[..8]);
    }
    hex::encode(b)
}

/// Reads the managed set from the state dir (empty if never written). Reads the filesystem
/// only.
pub fn load_managed(state_dir: &Path) -> Result<BTreeSet<String>, ApplyError> {
    let path = state_dir.join(MANAGED_FILE);
    let Some(bytes) = statefile::read_optional(&path)? else {
        return Ok(BTreeSet::new());
    };
    let rec: ManagedRecord =
        serde_json::from_slice(&bytes).map_err(|e| ApplyError::ManagedCorrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    if rec.version != MANAGED_VERSION {
        return Err(ApplyError::ManagedCorrupt {
            path,
            reason: format!("version {} is not supported", rec.version),
        });
    }
    Ok(rec.paths)
}

/// Writes the managed set atomically and durably. Writes to disk.
pub fn write_managed(state_dir: &Path, paths: &BTreeSet<String>) -> Result<(), ApplyError> {
    let rec = ManagedRecord {
        version: MANAGED_VERSION,
        paths: paths.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&rec).expect("managed set always serialises");
    statefile::write_atomic(&state_dir.join(MANAGED_FILE), &bytes, 0o600)?;
    Ok(())
}

/// Exclusive flock on the state dir's lock file; released when dropped.
struct StateLock(#[allow(dead_code)] OwnedFd);

fn lock(state_dir: &Path) -> Result<StateLock, ApplyError> {
    let dir_err = |op| {
        move |source: std::io::Error| ApplyError::StateDir {
            path: state_dir.to_path_buf(),
            op,
            source,
        }
    };
    std::fs::create_dir_all(state_dir).map_err(dir_err("create"))?;
    let fd = rfs::open(
        state_dir.join(LOCK_FILE),
        OFlags::RDWR | OFlags::CREATE | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(|e| dir_err("open lock file")(e.into()))?;
    rfs::flock(&fd, FlockOperation::LockExclusive).map_err(|e| dir_err("lock")(e.into()))?;
    Ok(StateLock(fd))
}

fn io_err(root: &Root, path: &str, op: &'static str) -> impl FnOnce(Errno) -> ApplyError {
    let root = root.path().to_path_buf();
    let path = path.to_string();
    move |e| ApplyError::Io {
        path,
        op,
        root,
        source: e.into(),
    }
}

/// Open directories of one transaction, keyed by node path, so each is resolved once.
struct Dirs<'r> {
    root: &'r Root,
    open: BTreeMap<String, OwnedFd>,
    touched: BTreeSet<String>,
}

impl<'r> Dirs<'r> {
    fn new(root: &'r Root) -> Self {
        Dirs {
            root,
            open: BTreeMap::new(),
            touched: BTreeSet::new(),
        }
    }

    fn get(&mut self, dir: &str, create: bool) -> Result<Option<&OwnedFd>, ApplyError> {
        if !self.open.contains_key(dir) {
            match self.root.open_dir(dir, create)? {
                Some(fd) => {
                    self.open.insert(dir.to_string(), fd);
                }
                None => return Ok(None),
            }
        }
        Ok(self.open.get(dir))
    }

    /// Opens the existing parent directory of every file to write (`targets`: parent, name,
    /// change) and to delete, each resolved via the file's path so an error names the file.
    /// A missing parent is left out (staging creates it). Reads the filesystem only.
    fn open_parents(
        &mut self,
        targets: &[(String, String, &FileChange)],
        deletes: &[Deletion],
    ) -> Result<(), ApplyError> {
        let root = self.root;
        for (dir, _, f) in targets {
            if !self.open.contains_key(dir) {
                // Resolve via the file's path so an error names the file.
                if let Some(parent) = root.open_parent(&f.path, false)? {
                    self.open.insert(dir.clone(), parent.dir);
                }
            }
        }
        for d in deletes {
            let dir = parent_node_path(&d.path)?;
            if let std::collections::btree_map::Entry::Vacant(slot) = self.open.entry(dir) {
                if let Some(parent) = root.open_parent(&d.path, false)? {
                    slot.insert(parent.dir);
                }
            }
        }
        Ok(())
    }

    /// The directories staging `targets` will create (none of them exists yet), deepest
    /// first, so a rollback can remove them again. Reads the filesystem only.
    fn to_create(
        &self,
        targets: &[(String, String, &FileChange)],
    ) -> Result<Vec<String>, ApplyError> {
        let mut missing = BTreeSet::new();
        for (dir, _, _) in targets {
            let mut d = dir.clone();
            while d != "/" && !self.open.contains_key(&d) && !missing.contains(&d) {
                if self.root.open_dir(&d, false)?.is_some() {
                    break;
                }
                missing.insert(d.clone());
                d = parent_node_path(&d)?;
            }
        }
        let mut created_dirs: Vec<String> = missing.into_iter().collect();
        created_dirs.sort_by_key(|d| std::cmp::Reverse(d.matches('/').count()));
        Ok(created_dirs)
    }

    /// fsync every directory that was touched. Writes to disk.
    fn sync_touched(&mut self) -> Result<(), ApplyError> {
        for d in std::mem::take(&mut self.touched) {
            if let Some(fd) = self.open.get(&d) {
                rfs::fsync(fd).map_err(io_err(self.root, &d, "fsync directory"))?;
            }
        }
        Ok(())
    }
}

/// Applies `plan` under `root` as one transaction with default options. Writes to disk: files
/// under the root, the journal, intent and managed set in `state_dir`.
pub fn apply(root: &Root, state_dir: &Path, plan: &Plan) -> Result<ApplyReport, ApplyError> {
    apply_with(root, state_dir, plan, ApplyOptions::default())
}

/// [`apply`] with explicit options. Writes to disk.
pub fn apply_with(
    root: &Root,
    state_dir: &Path,
    plan: &Plan,
    opts: ApplyOptions,
) -> Result<ApplyReport, ApplyError> {
    let _lock = lock(state_dir)?;
    let mut report = ApplyReport {
        recovery: recover_locked(root, state_dir)?,
        ..ApplyReport::default()
    };
    check_plan_basis(&report.recovery, opts.planned_over.as_deref())?;
    let changes: Vec<&FileChange> = plan.creates.iter().chain(&plan.updates).collect();
    if changes.is_empty() && plan.deletes.is_empty() {
        if load_managed(state_dir)? != plan.managed_after {
            write_managed(state_dir, &plan.managed_after)?;
        }
        return Ok(report);
    }
    // Validate every path before any write.
    let mut targets = Vec::with_capacity(changes.len());
    for c in &changes {
        let (_, name) = split_node_path(&c.path)?;
        targets.push((parent_node_path(&c.path)?, name.to_string(), *c));
    }
    for d in &plan.deletes {
        split_node_path(&d.path)?;
    }
    // Resolve every existing parent before writing anything, so a parent that escapes the
    // root or is not a directory fails the apply with nothing written.
    let mut dirs = Dirs::new(root);
    dirs.open_parents(&targets, &plan.deletes)?;
    let created_dirs = dirs.to_create(&targets)?;

    let txid = new_txid();
    let intent = Intent::new(
        txid.clone(),
        targets.iter().map(|(d, _, _)| d.clone()).collect(),
    )
    .with_created_dirs(created_dirs);
    journal::write_intent(state_dir, &intent)?;

    // Roll back: nothing was committed. If this cleanup fails too, the intent stays and the
    // next recovery removes the temps.
    let roll_back = |e: ApplyError| {
        if sweep_intent(root, &intent).is_ok() {
            remove_created_dirs(root, &intent);
            let _ = journal::remove_intent(state_dir);
        }
        e
    };
    let mut renames = Vec::with_capacity(targets.len());
    stage_all(&mut dirs, &targets, &txid, opts.durability, &mut renames).map_err(&roll_back)?;

    let j = Journal::new(
        txid.clone(),
        renames,
        plan.deletes.iter().map(|d| d.path.clone()).collect(),
        plan.managed_after.clone(),
    );
    // The commit point.
    if let Err(e) = journal::write_journal(state_dir, &j) {
        // If the rename happened and only a later step failed, the journal is in place and
        // the transaction is committed: leave it for recovery to roll forward.
        return Err(match journal::read_journal(state_dir) {
            Ok(None) => roll_back(e.into()),
            _ => e.into(),
        });
    }
    let (renamed, deleted) = roll_forward(&mut dirs, state_dir, &j)?;
    report.txid = Some(txid);
    report.written = renamed;
    report.deleted = deleted;
    Ok(report)
}

fn stage_all(
    dirs: &mut Dirs<'_>,
    targets: &[(String, String, &FileChange)],
    txid: &str,
    durability: Durability,
    renames: &mut Vec<StagedRename>,
) -> Result<(), ApplyError> {
    let root = dirs.root;
    for (dir, name, c) in targets {
        let f = &c.desired;
        let temp = temp_name(name, txid);
        let io = io_err(root, &c.path, "stage");
        let dirfd = dirs
            .get(dir, true)?
            .ok_or_else(|| io(Errno::NOENT))?
            .try_clone()
            .map_err(|e| ApplyError::Io {
                path: c.path.clone(),
                op: "dup directory handle",
                root: root.path().to_path_buf(),
                source: e,
            })?;
        // Record first so a failure part-way through removes this temp too.
        renames.push(StagedRename {
            path: c.path.clone(),
            temp: temp.clone(),
        });
        dirs.touched.insert(dir.clone());
        stage_one(root, dirfd.as_fd(), &temp, &c.path, f, durability)?;
    }
    match durability {
        Durability::FsyncEach => dirs.sync_touched()?,
        Durability::SyncfsOnce => {
            let mut devices = BTreeSet::new();
            for d in std::mem::take(&mut dirs.touched) {
                let fd = &dirs.open[&d];
                let st = rfs::fstat(fd).map_err(io_err(root, &d, "stat directory"))?;
                if devices.insert(st.st_dev) {
                    rfs::syncfs(fd).map_err(io_err(root, &d, "syncfs"))?;
                }
            }
        }
    }
    Ok(())
}

/// Writes one temp file with the desired content, owner and mode. Writes to disk.
fn stage_one(
    root: &Root,
    dirfd: std::os::fd::BorrowedFd<'_>,
    temp: &str,
    path: &str,
    f: &DesiredFile,
    durability: Durability,
) -> Result<(), ApplyError> {
    let fd = rfs::openat(
        dirfd,
        temp,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o600),
    )
    .map_err(io_err(root, path, "create temp file"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&f.content).map_err(|e| ApplyError::Io {
        path: path.to_string(),
        op: "write temp file",
        root: root.path().to_path_buf(),
        source: e,
    })?;
    rfs::fchown(
        &file,
        Some(rustix::process::Uid::from_raw(f.uid)),
        Some(rustix::process::Gid::from_raw(f.gid)),
    )
    .map_err(io_err(root, path, "chown temp file"))?;
    rfs::fchmod(&file, Mode::from_raw_mode(f.mode & 0o7777)).map_err(io_err(
        root,
        path,
        "chmod temp file",
    ))?;
    if durability == Durability::FsyncEach {
        rfs::fsync(&file).map_err(io_err(root, path, "fsync temp file"))?;
    }
    Ok(())
}

/// Step 6 of the transaction; idempotent. Writes to disk.
fn roll_forward(
    dirs: &mut Dirs<'_>,
    state_dir: &Path,
    j: &Journal,
) -> Result<(usize, usize), ApplyError> {
    let root = dirs.root;
    let mut renamed = 0;
    for r in &j.renames {
        let dir = parent_node_path(&r.path)?;
        let (_, name) = split_node_path(&r.path)?;
        let lost = || ApplyError::StagedFileLost {
            path: r.path.clone(),
            temp: r.temp.clone(),
            txid: j.txid.clone(),
            root: root.path().to_path_buf(),
            journal: state_dir.join(journal::JOURNAL_FILE),
        };
        let Some(fd) = dirs.get(&dir, false)? else {
            return Err(lost());
        };
        match rfs::renameat(fd, r.temp.as_str(), fd, name) {
            Ok(()) => renamed += 1,
            Err(Errno::NOENT) => {
                // Already renamed by an earlier, interrupted roll-forward?
                if rfs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW).is_err() {
                    return Err(lost());
                }
            }
            Err(e) => return Err(io_err(root, &r.path, "rename into place")(e)),
        }
        dirs.touched.insert(dir);
    }
    let mut deleted = 0;
    for p in &j.deletes {
        let dir = parent_node_path(p)?;
        let (_, name) = split_node_path(p)?;
        let Some(fd) = dirs.get(&dir, false)? else {
            continue;
        };
        match rfs::unlinkat(fd, name, AtFlags::empty()) {
            Ok(()) => deleted += 1,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(io_err(root, p, "delete")(e)),
        }
        dirs.touched.insert(dir);
    }
    dirs.sync_touched()?;
    write_managed(state_dir, &j.managed_after)?;
    // Intent first: an intent without a journal then always means "never committed".
    journal::remove_intent(state_dir)?;
    journal::remove_journal(state_dir)?;
    Ok((renamed, deleted))
}

/// Removes this intent's temp files from its directories; returns how many. Writes to disk.
fn sweep_intent(root: &Root, intent: &Intent) -> Result<usize, ApplyError> {
    let mut removed = 0;
    for dir in &intent.dirs {
        let fd = match root.open_dir(dir, false) {
            Ok(Some(fd)) => fd,
            Ok(None) => continue,
            // No temp can have been staged through a parent that does not resolve beneath the
            // root to a directory.
            Err(
                FsError::Escape { .. }
                | FsError::NotADirectory { .. }
                | FsError::SymlinkLoop { .. },
            ) => continue,
            Err(e) => return Err(e.into()),
        };
        let io = |op| {
            let root = root.path().to_path_buf();
            move |e: Errno| ApplyError::Io {
                path: dir.clone(),
                op,
                root,
                source: e.into(),
            }
        };
        let mut names = Vec::new();
        let mut list = rfs::Dir::read_from(&fd).map_err(io("list directory"))?;
        for entry in list.by_ref() {
            let entry = entry.map_err(io("list directory"))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if is_temp_of(&name, &intent.txid) {
                names.push(name);
            }
        }
        for n in &names {
            match rfs::unlinkat(&fd, n.as_str(), AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => return Err(io("remove stale temp file")(e)),
            }
        }
        if !names.is_empty() {
            rfs::fsync(&fd).map_err(io("fsync directory"))?;
        }
        removed += names.len();
    }
    Ok(removed)
}

/// Removes the directories an uncommitted transaction created, deepest first, where they are
/// empty. Best effort: a directory that cannot be removed is only an empty leftover. Writes to
/// disk.
fn remove_created_dirs(root: &Root, intent: &Intent) {
    for d in &intent.created_dirs {
        let Ok(Some(parent)) = root.open_parent(d, false) else {
            continue;
        };
        if rfs::unlinkat(&parent.dir, parent.name.as_str(), AtFlags::REMOVEDIR).is_ok() {
            let _ = rfs::fsync(&parent.dir);
        }
    }
}

/// Refuses a plan computed before `recovery` rolled a transaction forward: only a plan that
/// counted it in (`planned_over`, from [`RecoveredView::planned_over`]) is still valid (pure).
pub fn check_plan_basis(
    recovery: &RecoveryReport,
    planned_over: Option<&str>,
) -> Result<(), ApplyError> {
    match &recovery.rolled_forward {
        Some(txid) if planned_over != Some(txid.as_str()) => {
            Err(ApplyError::PlanPredatesRecovery { txid: txid.clone() })
        }
        _ => Ok(()),
    }
}

/// Finishes or undoes an interrupted transaction so the files under `root` equal exactly one
/// whole commit; run at start-up before planning. Writes to disk.
pub fn recover(root: &Root, state_dir: &Path) -> Result<RecoveryReport, ApplyError> {
    let _lock = lock(state_dir)?;
    recover_locked(root, state_dir)
}

fn recover_locked(root: &Root, state_dir: &Path) -> Result<RecoveryReport, ApplyError> {
    let mut report = RecoveryReport::default();
    if let Some(j) = journal::read_journal(state_dir)? {
        let mut dirs = Dirs::new(root);
        let (renamed, deleted) = roll_forward(&mut dirs, state_dir, &j)?;
        report.rolled_forward = Some(j.txid.clone());
        report.renamed = renamed;
        report.deleted = deleted;
    }
    // Roll-forward removed its own intent, so one still here never committed.
    if let Some(intent) = journal::read_intent(state_dir)? {
        report.removed_temps = sweep_intent(root, &intent)?;
        remove_created_dirs(root, &intent);
        report.rolled_back = Some(intent.txid.clone());
        journal::remove_intent(state_dir)?;
    }
    statefile::sweep_temps(state_dir)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_fit_name_max_and_match_their_txid() {
        let t = temp_name("hostname", "0123456789abcdef");
        assert_eq!(t, ".bosun-tmp.hostname.0123456789abcdef");
        assert!(is_temp_of(&t, "0123456789abcdef"));
        assert!(!is_temp_of(&t, "fedcba9876543210"));
        let long = "é".repeat(200);
        let t = temp_name(&long, "0123456789abcdef");
        assert!(t.len() <= NAME_MAX, "{}", t.len());
        assert!(is_temp_of(&t, "0123456789abcdef"));
    }

    #[test]
    fn managed_set_round_trips_and_reports_corruption() {
        let d = tempfile::tempdir().unwrap();
        assert!(load_managed(d.path()).unwrap().is_empty());
        let s: BTreeSet<String> = ["/a".to_string(), "/b/c".to_string()].into();
        write_managed(d.path(), &s).unwrap();
        assert_eq!(load_managed(d.path()).unwrap(), s);
        std::fs::write(d.path().join(MANAGED_FILE), b"[1,2]").unwrap();
        let e = load_managed(d.path()).unwrap_err();
        assert!(e.to_string().contains(MANAGED_FILE), "{e}");
    }
}

//! Drift detection: notice manual edits, chmods and deletions of managed files.
//!
//! The watcher watches the *parent directories* of managed files (not the files): editors and
//! bosun itself save atomically by renaming a new inode over the old one, which would silently
//! end a watch on the file. Events are debounced (notify-debouncer-full) and filtered
//! ([`relevant_paths`], pure): only managed paths count, bosun's own staged temp files
//! (`.bosun-tmp.*`) and read-only accesses (opens, reads: bosun's own planning reads every
//! managed file) are ignored.
//!
//! The watcher only says "look again". The daemon then re-plans the last applied snapshot; a
//! re-plan without changes is a no-op, which is what makes bosun's own writes harmless here.
//! A periodic full re-plan (`drift.resync_interval`) catches whatever the watcher missed
//! (a parent directory created later, an overflowed inotify queue).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use crate::apply::TEMP_PREFIX;

/// How long events are collected before the daemon is told.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// Corrections closer together than this continue a drift streak.
pub const DRIFT_STREAK_WINDOW: Duration = Duration::from_secs(10);
/// Corrections in one streak before drift events are held back.
pub const DRIFT_STREAK_LIMIT: u32 = 10;
/// Longest hold of drift events.
pub const DRIFT_HOLD_CAP: Duration = Duration::from_secs(300);

/// How long to hold drift events after `streak` back-to-back corrections (pure): nothing up to
/// [`DRIFT_STREAK_LIMIT`], then 2 s doubling up to 5 min. Something that keeps rewriting a
/// managed file (another agent, a file the plan can never satisfy) must not turn bosun into a
/// busy loop; the periodic resync and new commits still apply.
pub fn drift_hold(streak: u32) -> Option<Duration> {
    let over = streak.checked_sub(DRIFT_STREAK_LIMIT)?;
    Some(
        Duration::from_secs(2)
            .saturating_mul(1u32 << over.min(16))
            .min(DRIFT_HOLD_CAP),
    )
}

/// Back-to-back drift corrections, and the hold they lead to (pure; time is a parameter).
#[derive(Debug, Clone, Default)]
pub struct DriftStreak {
    /// Corrections that changed files, each within [`DRIFT_STREAK_WINDOW`] of the last.
    count: u32,
    last_fix: Option<Instant>,
    /// Drift events are held (not acted on) until then.
    hold_until: Option<Instant>,
}

impl DriftStreak {
    /// Notes a drift correction that changed files at `now`; returns the new hold, if the
    /// streak is long enough for one.
    pub fn corrected(&mut self, now: Instant) -> Option<Duration> {
        let close = self
            .last_fix
            .is_some_and(|t| now.duration_since(t) < DRIFT_STREAK_WINDOW);
        self.count = if close { self.count + 1 } else { 1 };
        self.last_fix = Some(now);
        let hold = drift_hold(self.count);
        self.hold_until = hold.map(|d| now + d);
        hold
    }

    /// Corrections in the current streak.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Whether drift events are held at `now`.
    pub fn holding(&self, now: Instant) -> bool {
        self.hold_until.is_some_and(|t| now < t)
    }

    /// When the current hold ends, if there is one.
    pub fn hold_until(&self) -> Option<Instant> {
        self.hold_until
    }
}

/// Why drift watching could not start.
#[derive(Debug, thiserror::Error)]
pub enum DriftError {
    /// The inotify watcher could not be created (inotify limits, no inotify).
    #[error("starting the file watcher: {0}")]
    Start(#[source] notify::Error),
}

/// Whether an event kind can mean a change (pure): everything but opens, reads and
/// close-without-write.
pub fn is_change(kind: &EventKind) -> bool {
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// The managed paths among `paths` (pure). `managed` holds host paths.
pub fn relevant_paths<'a>(
    paths: impl IntoIterator<Item = &'a Path>,
    managed: &BTreeSet<PathBuf>,
) -> BTreeSet<PathBuf> {
    paths
        .into_iter()
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(TEMP_PREFIX))
        })
        .filter(|p| managed.contains(*p))
        .map(Path::to_path_buf)
        .collect()
}

/// Watches the parent directories of managed files and sends the changed managed paths
/// (host paths) on a channel. Stops watching when dropped.
pub struct DriftWatcher {
    debouncer: Debouncer<RecommendedWatcher, RecommendedCache>,
    managed: Arc<Mutex<BTreeSet<PathBuf>>>,
    watched: BTreeSet<PathBuf>,
}

impl std::fmt::Debug for DriftWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftWatcher")
            .field("watched", &self.watched)
            .finish()
    }
}

impl DriftWatcher {
    /// Starts the watcher thread (inotify). Nothing is watched until [`Self::set_managed`].
    pub fn start(
        tx: tokio::sync::mpsc::UnboundedSender<BTreeSet<PathBuf>>,
    ) -> Result<DriftWatcher, DriftError> {
        let managed: Arc<Mutex<BTreeSet<PathBuf>>> = Arc::default();
        let filter = managed.clone();
        let handler = move |result: DebounceEventResult| match result {
            Ok(events) => {
                let managed = filter.lock().unwrap_or_else(|p| p.into_inner());
                let changed = relevant_paths(
                    events
                        .iter()
                        .filter(|e| is_change(&e.kind))
                        .flat_map(|e| e.paths.iter().map(PathBuf::as_path)),
                    &managed,
                );
                if !changed.is_empty() {
                    let _ = tx.send(changed);
                }
            }
            Err(errors) => {
                for e in errors {
                    tracing::warn!("file watcher: {e} (the periodic resync still catches drift)");
                }
            }
        };
        let debouncer = new_debouncer(DEBOUNCE, None, handler).map_err(DriftError::Start)?;
        Ok(DriftWatcher {
            debouncer,
            managed,
            watched: BTreeSet::new(),
        })
    }

    /// Sets the managed files (host paths): watches their parent directories that exist,
    /// stops watching directories no longer needed. A directory that cannot be watched is
    /// logged and left to the periodic resync.
    pub fn set_managed(&mut self, files: BTreeSet<PathBuf>) {
        let dirs: BTreeSet<PathBuf> = files
            .iter()
            .filter_map(|p| p.parent().map(Path::to_path_buf))
            .collect();
        for gone in self.watched.difference(&dirs).cloned().collect::<Vec<_>>() {
            let _ = self.debouncer.unwatch(&gone);
            self.watched.remove(&gone);
        }
        for dir in dirs {
            if self.watched.contains(&dir) || !dir.is_dir() {
                continue;
            }
            match self.debouncer.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => {
                    self.watched.insert(dir);
                }
                Err(e) => tracing::warn!(
                    "cannot watch {} for drift: {e} (the periodic resync still covers it)",
                    dir.display()
                ),
            }
        }
        *self.managed.lock().unwrap_or_else(|p| p.into_inner()) = files;
    }

    /// The directories currently watched.
    pub fn watched(&self) -> &BTreeSet<PathBuf> {
        &self.watched
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use notify::event::{CreateKind, ModifyKind, RemoveKind};

    #[test]
    fn only_managed_paths_count_and_temps_are_ignored() {
        let managed: BTreeSet<PathBuf> = [PathBuf::from("/r/etc/a.conf")].into();
        let seen = [
            Path::new("/r/etc/a.conf"),
            Path::new("/r/etc/.bosun-tmp.a.conf.0123456789abcdef"),
            Path::new("/r/etc/other"),
        ];
        let got = relevant_paths(seen, &managed);
        assert_eq!(got, managed);
    }

    #[test]
    fn reads_are_not_changes_but_writes_chmods_and_removes_are() {
        assert!(!is_change(&EventKind::Access(AccessKind::Open(
            AccessMode::Any
        ))));
        assert!(!is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Read
        ))));
        assert!(is_change(&EventKind::Access(AccessKind::Close(
            AccessMode::Write
        ))));
        assert!(is_change(&EventKind::Modify(ModifyKind::Metadata(
            notify::event::MetadataKind::Permissions
        ))));
        assert!(is_change(&EventKind::Remove(RemoveKind::File)));
        assert!(is_change(&EventKind::Create(CreateKind::File)));
    }

    #[test]
    fn drift_is_held_only_after_a_long_streak_and_the_hold_is_capped() {
        assert_eq!(drift_hold(1), None);
        assert_eq!(drift_hold(DRIFT_STREAK_LIMIT - 1), None);
        assert_eq!(drift_hold(DRIFT_STREAK_LIMIT), Some(Duration::from_secs(2)));
        assert_eq!(
            drift_hold(DRIFT_STREAK_LIMIT + 2),
            Some(Duration::from_secs(8))
        );
        assert_eq!(drift_hold(u32::MAX), Some(DRIFT_HOLD_CAP));
    }

    #[test]
    fn a_streak_needs_corrections_close_together() {
        let t0 = Instant::now();
        let mut s = DriftStreak::default();
        for i in 0..DRIFT_STREAK_LIMIT - 1 {
            assert_eq!(s.corrected(t0 + Duration::from_secs(u64::from(i))), None);
        }
        let at = t0 + Duration::from_secs(u64::from(DRIFT_STREAK_LIMIT));
        assert_eq!(s.corrected(at), Some(Duration::from_secs(2)));
        assert!(s.holding(at + Duration::from_secs(1)));
        assert!(!s.holding(at + Duration::from_secs(2)));
        // A pause longer than the window starts a new streak.
        assert_eq!(s.corrected(at + DRIFT_STREAK_WINDOW), None);
        assert_eq!(s.count(), 1);
    }
}

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
use std::time::Duration;

use notify::event::{AccessKind, AccessMode, EventKind};
use notify::{RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};

use crate::apply::TEMP_PREFIX;

/// How long events are collected before the daemon is told.
pub const DEBOUNCE: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum DriftError {
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
}

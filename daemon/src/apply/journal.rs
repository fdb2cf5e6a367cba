//! The two records an apply keeps in the state directory, both written with
//! [`crate::statefile::write_atomic`] so each is either absent or complete:
//!
//! - [`Intent`] (`apply-intent.json`), written before the first temp file is staged: the
//!   transaction id and every directory that may receive a temp file. It lets recovery find and
//!   remove temps of a transaction that never committed.
//! - [`Journal`] (`apply-journal.json`), written after every temp is durable: the renames and
//!   deletes that make up the commit and the managed set after it. Its atomic rename into
//!   place is the commit point; recovery rolls a present journal forward.
//!
//! The intent is removed before the journal, so "intent without journal" always means the
//! transaction never committed.
//!
//! Both are versioned JSON; an unknown version or unparsable record is an error, never
//! guessed at.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::statefile::{self, StateFileError};

/// Name of the [`Journal`] in the state dir; its presence means "committed, roll forward".
pub const JOURNAL_FILE: &str = "apply-journal.json";
/// Name of the [`Intent`] in the state dir; alone (no journal) it means "never committed, roll
/// back".
pub const INTENT_FILE: &str = "apply-intent.json";
const VERSION: u32 = 1;

/// Why a journal or intent could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// Reading, writing or removing the record failed.
    #[error(transparent)]
    Io(#[from] StateFileError),
    /// The record is not the expected JSON (never guessed at: recovery stops).
    #[error("{path}: not a valid bosun apply record (version {VERSION} JSON expected): {source}")]
    Corrupt {
        /// The record file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The record has a version this bosun does not read.
    #[error("{path}: record version {found} is not supported (expected {VERSION})")]
    Version {
        /// The record file.
        path: PathBuf,
        /// The version it carries.
        found: u32,
    },
}

/// One staged file: `temp` (a file name in the directory of `path`) is renamed onto `path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedRename {
    /// Node path of the final file.
    pub path: String,
    /// File name of the staged temp file, in the same directory.
    pub temp: String,
}

/// The commit record of a transaction: written after every temp is durable; its atomic rename into
/// place is the commit point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Record format version (1).
    pub version: u32,
    /// The transaction id (16 hex digits), also the suffix of its temp files.
    pub txid: String,
    /// Temp files to rename onto their targets, in order.
    pub renames: Vec<StagedRename>,
    /// Node paths to unlink.
    pub deletes: Vec<String>,
    /// The managed set once the transaction is applied.
    pub managed_after: BTreeSet<String>,
}

/// The start record of a transaction: written before the first temp is staged, so recovery can find
/// and remove the temps of a transaction that never committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Intent {
    /// Record format version (1).
    pub version: u32,
    /// The transaction id (16 hex digits), the suffix of its temp files.
    pub txid: String,
    /// Node paths of directories that may hold this transaction's temp files.
    pub dirs: BTreeSet<String>,
    /// Directories this transaction creates, deepest first; removed again (if empty) when the
    /// transaction rolls back.
    #[serde(default)]
    pub created_dirs: Vec<String>,
}

impl Journal {
    /// A journal of the current version. Pure (writing it is the caller's job).
    pub fn new(
        txid: String,
        renames: Vec<StagedRename>,
        deletes: Vec<String>,
        managed_after: BTreeSet<String>,
    ) -> Self {
        Journal {
            version: VERSION,
            txid,
            renames,
            deletes,
            managed_after,
        }
    }
}

impl Intent {
    /// An intent of the current version creating no directories. Pure.
    pub fn new(txid: String, dirs: BTreeSet<String>) -> Self {
        Intent {
            version: VERSION,
            txid,
            dirs,
            created_dirs: Vec::new(),
        }
    }

    /// Records the directories the transaction will create (pure).
    pub fn with_created_dirs(mut self, created_dirs: Vec<String>) -> Self {
        self.created_dirs = created_dirs;
        self
    }
}

fn write<T: Serialize>(path: &Path, value: &T) -> Result<(), JournalError> {
    let bytes = serde_json::to_vec_pretty(value).expect("journal records always serialise");
    statefile::write_atomic(path, &bytes, 0o600)?;
    Ok(())
}

fn read<T: for<'de> Deserialize<'de>>(
    path: &Path,
    version: impl Fn(&T) -> u32,
) -> Result<Option<T>, JournalError> {
    let Some(bytes) = statefile::read_optional(path)? else {
        return Ok(None);
    };
    let value: T = serde_json::from_slice(&bytes).map_err(|source| JournalError::Corrupt {
        path: path.to_path_buf(),
        source,
    })?;
    let found = version(&value);
    if found != VERSION {
        return Err(JournalError::Version {
            path: path.to_path_buf(),
            found,
        });
    }
    Ok(Some(value))
}

/// Writes the journal durably: this is the commit point. Writes to disk.
pub fn write_journal(state_dir: &Path, j: &Journal) -> Result<(), JournalError> {
    write(&state_dir.join(JOURNAL_FILE), j)
}

/// Reads the journal if one is present. Reads the filesystem only.
pub fn read_journal(state_dir: &Path) -> Result<Option<Journal>, JournalError> {
    read(&state_dir.join(JOURNAL_FILE), |j: &Journal| j.version)
}

/// Removes the journal durably (the transaction is complete). Writes to disk.
pub fn remove_journal(state_dir: &Path) -> Result<(), JournalError> {
    Ok(statefile::remove_durable(&state_dir.join(JOURNAL_FILE))?)
}

/// Writes the intent record durably. Writes to disk.
pub fn write_intent(state_dir: &Path, i: &Intent) -> Result<(), JournalError> {
    write(&state_dir.join(INTENT_FILE), i)
}

/// Reads the intent record if one is present. Reads the filesystem only.
pub fn read_intent(state_dir: &Path) -> Result<Option<Intent>, JournalError> {
    read(&state_dir.join(INTENT_FILE), |i: &Intent| i.version)
}

/// Removes the intent record durably. Writes to disk.
pub fn remove_intent(state_dir: &Path) -> Result<(), JournalError> {
    Ok(statefile::remove_durable(&state_dir.join(INTENT_FILE))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_rejects_garbage() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read_journal(d.path()).unwrap(), None);
        let j = Journal::new(
            "abc".into(),
            vec![StagedRename {
                path: "/etc/a".into(),
                temp: ".bosun-tmp.a.abc".into(),
            }],
            vec!["/etc/old".into()],
            ["/etc/a".to_string()].into(),
        );
        write_journal(d.path(), &j).unwrap();
        assert_eq!(read_journal(d.path()).unwrap(), Some(j));
        remove_journal(d.path()).unwrap();
        assert_eq!(read_journal(d.path()).unwrap(), None);

        std::fs::write(d.path().join(JOURNAL_FILE), b"{ half").unwrap();
        let e = read_journal(d.path()).unwrap_err();
        assert!(e.to_string().contains(JOURNAL_FILE), "{e}");
    }

    #[test]
    fn unknown_version_is_refused() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join(INTENT_FILE),
            br#"{"version":9,"txid":"x","dirs":[]}"#,
        )
        .unwrap();
        assert!(matches!(
            read_intent(d.path()),
            Err(JournalError::Version { found: 9, .. })
        ));
    }
}

//! The Git source: where config commits come from and why bosun trusts them.
//!
//! This module owns the chain of custody from a remote repository to a [`Snapshot`]:
//!
//! 1. [`fetch()`] keeps a bare repository cache in `cache_dir`. Every poll first reads the ref
//!    advertisement; when the advertised id equals what the cache holds, no pack is fetched
//!    ([`FetchOutcome::Unchanged`]). Otherwise only the configured ref is fetched (shallow when
//!    `depth` is set and the transport supports it).
//! 2. [`verify_commit`] checks the head commit's SSH or OpenPGP signature against the trust roots
//!    of the local agent config (never taken from Git), and [`check_descends`] refuses a commit
//!    that does not descend from the last applied one (anti-rollback).
//! 3. [`snapshot`] reads `config.yaml`, `groups/*.yaml` and this node's `nodes/<host>.yaml`
//!    straight from the commit's tree in the object database (no other node's file). There is
//!    no worktree and no checkout, so a half-fetched or half-written tree can never be applied.
//!
//! [`poll`] runs the three steps in that order for the daemon.
//!
//! Transports: `git://` and `file://` (libgit2's own), `ssh://` (key file; host key pinned by an
//! optional `known_hosts` file) and `https://` (token file as the password; extra CA bundle)
//! through bosun's `transport` module: OpenSSH and rustls, no OpenSSL in the process.
//!
//! Memory: a fetch receives at most `max_fetch_bytes` and rebuilds no object over
//! [`MAX_OBJECT_BYTES`] (`budget`), so a commit that will be refused cannot exhaust memory
//! before it is.
//!
//! Invariants:
//! - Everything here is blocking (libgit2); the daemon calls it from `spawn_blocking`.
//! - The cache only ever gains objects and moves refs under `refs/bosun/`; it never has a
//!   worktree. Deleting `cache_dir` is always safe (the next fetch starts from scratch).
//! - Verification fails closed: an unreadable trust root is an error, never "no keys".

mod allowed_signers;
mod budget;
mod fetch;
mod known_hosts;
mod openpgp;
mod transport;
mod tree;
mod verify;
mod verify_memo;

use std::io;
use std::path::{Path, PathBuf};

use crate::snapshot::Snapshot;

pub use allowed_signers::{AllowedSigner, AllowedSigners};
pub use budget::{FetchBudget, TooLarge, DEFAULT_MAX_FETCH_BYTES, MAX_OBJECT_BYTES};
pub use fetch::{fetch, fetch_counted, unshallow, FetchOutcome, TransferCounters, TransferTotals};
pub use known_hosts::KnownHosts;
pub use openpgp::OpenPgpKeyring;
pub use transport::SshTarget;
pub use tree::{snapshot, snapshot_counted, ReadCount};
pub use verify::{
    check_descends, check_descends_or_deepen, verify_commit, verify_commit_at, Ancestry, Refusal,
    SignersSource, Verdict, VerifyConfig, VerifyMode, MAX_COMMIT_AHEAD_SECS,
};
pub use verify_memo::VerifyMemo;

pub use git2::Oid;

/// Default username sent with an HTTPS token (GitHub's convention; GitLab accepts any name).
pub const DEFAULT_TOKEN_USERNAME: &str = "x-access-token";

/// How long to wait for a TCP/SSH connection to the remote before giving up.
pub const CONNECT_TIMEOUT_MS: i32 = 15_000;
/// How long a stalled read from or write to the remote may take before the fetch fails.
pub const SERVER_TIMEOUT_MS: i32 = 60_000;

/// Where and what to fetch. Comes from the local agent config, never from Git.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceConfig {
    /// `https://`, `ssh://` (or scp-like `user@host:path`), `git://` or `file://` URL.
    pub url: String,
    /// A branch (`main`, `refs/heads/main`), a tag (`v1`, `refs/tags/v1`) or a full commit id.
    pub reference: String,
    /// Directory of the config repo inside the Git repo (`/`-separated, relative).
    pub subdir: Option<String>,
    /// Shallow fetch depth. Ignored for `file://` remotes (libgit2's local transport cannot
    /// fetch shallow).
    pub depth: Option<u32>,
    /// Private key for `ssh://` remotes (no passphrase).
    pub ssh_key_file: Option<PathBuf>,
    /// OpenSSH `known_hosts` file pinning the `ssh://` server's host key. When `None`, ssh
    /// checks the daemon user's and the system's known_hosts files (and refuses unknown hosts).
    pub ssh_known_hosts: Option<PathBuf>,
    /// File holding an HTTPS token, sent as the password. Read at every fetch, so a rotated
    /// token is picked up without a restart. Refused with a plain `http://` URL unless the
    /// host is loopback (the token would cross the network in clear).
    pub token_file: Option<PathBuf>,
    /// Username sent with the token; [`DEFAULT_TOKEN_USERNAME`] when `None`.
    pub token_username: Option<String>,
    /// PEM bundle of CA certificates trusted for an `https://` remote, on top of the Mozilla
    /// roots built into bosun (for a private Git server).
    pub ca_file: Option<PathBuf>,
    /// Bare repository cache (created on first use).
    pub cache_dir: PathBuf,
    /// The most one fetch may receive, enforced while receiving (see `budget`); a commit over
    /// it is refused ([`Refusal::FetchTooLarge`]). Default [`DEFAULT_MAX_FETCH_BYTES`].
    pub max_fetch_bytes: u64,
}

impl SourceConfig {
    /// A config with only the required fields set.
    pub fn new(url: impl Into<String>, reference: impl Into<String>, cache_dir: PathBuf) -> Self {
        SourceConfig {
            url: url.into(),
            reference: reference.into(),
            subdir: None,
            depth: None,
            ssh_key_file: None,
            ssh_known_hosts: None,
            token_file: None,
            token_username: None,
            ca_file: None,
            cache_dir,
            max_fetch_bytes: DEFAULT_MAX_FETCH_BYTES,
        }
    }
}

/// Errors of the Git source. Each names the URL, path or commit it is about.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Talking to the remote failed: connect, authentication, TLS, the ref advertisement or the
    /// fetch itself (the transport's own reason when it has one).
    #[error("{url}: {op}: {source}")]
    Remote {
        /// The remote URL.
        url: String,
        /// What was being done (`connect`, `fetch`, `list refs`, …).
        op: &'static str,
        /// libgit2's error, or the transport's reason wrapped in one.
        #[source]
        source: git2::Error,
    },
    /// The bare cache repository could not be opened, created or updated.
    #[error("git cache {}: {op}: {source}", path.display())]
    Cache {
        /// The cache directory.
        path: PathBuf,
        /// What was being done (`open`, `init`, `update ref`, …).
        op: &'static str,
        /// libgit2's error.
        #[source]
        source: git2::Error,
    },
    /// A local file could not be read (token, known_hosts, allowed_signers) or the cache directory
    /// could not be created or cleaned.
    #[error("reading {what} {}: {source}", path.display())]
    ReadFile {
        /// What the file is for (`ssh known_hosts file`, `cache directory`, …).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The SSH server's host key is not pinned by the configured `known_hosts` (or the host is not
    /// listed in it).
    #[error("{url}: refusing the SSH server: {reason}")]
    HostKeyRejected {
        /// The remote URL.
        url: String,
        /// Why ssh refused it.
        reason: String,
    },
    /// The source or verification settings cannot work: an empty or malformed reference, a URL
    /// scheme bosun does not fetch, a token over plain `http://` to a non-loopback host, or
    /// verification on with no trusted key. (The daemon also reports a poll task that panicked
    /// this way.)
    #[error("source config: {0}")]
    InvalidConfig(String),
    /// The remote does not advertise the configured branch or tag.
    #[error("{url}: ref {reference:?} is not advertised by the remote (it has: {available})")]
    RefNotFound {
        /// The remote URL.
        url: String,
        /// The configured reference.
        reference: String,
        /// Some refs the remote does advertise, for the message.
        available: String,
    },
    /// The configured commit id is not reachable from any advertised branch or tag.
    #[error("{url}: commit {commit} is not reachable from any branch or tag of the remote")]
    CommitNotFound {
        /// The remote URL.
        url: String,
        /// The configured commit.
        commit: Oid,
    },
    /// The reference points to an object that is not a commit (a tag of a tree or blob).
    #[error("{url}: ref {reference:?} points to {target}, which is not a commit")]
    NotACommit {
        /// The remote URL.
        url: String,
        /// The configured reference.
        reference: String,
        /// The object it points to.
        target: Oid,
    },
    /// The commit's tree cannot be read as a config repo: a bad `subdir`, a missing directory, a
    /// layer that is not a regular file or exceeds the size limit.
    #[error("commit {commit}: {path}: {reason}")]
    Snapshot {
        /// The commit read.
        commit: Oid,
        /// The path in the repository.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An `allowed_signers` line does not parse (key, principals, options).
    #[error("allowed signers {origin}:{line}: {reason}")]
    AllowedSigners {
        /// The file or inline source the line came from.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// A `known_hosts` line does not parse.
    #[error("known hosts {origin}:{line}: {reason}")]
    KnownHosts {
        /// The file the line came from.
        origin: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// An `openpgp_keys` entry is not a usable OpenPGP public key.
    #[error("OpenPGP key #{index} of openpgp_keys: {reason}")]
    OpenPgpKey {
        /// Position of the key in `openpgp_keys` (0-based).
        index: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The commit was fetched but is not trusted: unsigned, signed by an unknown key, or not
    /// descending from the last applied commit. Nothing is applied.
    #[error("commit {commit} refused: {reason}")]
    Refused {
        /// The refused commit.
        commit: Oid,
        /// Why.
        reason: Refusal,
    },
    /// The shallow cache lacks the history needed to tell whether the new commit descends from
    /// the last applied one ([`check_descends`]; [`check_descends_or_deepen`] then fetches the
    /// full history and asks once more).
    #[error(
        "commit {new}: cannot tell whether it descends from the last applied commit {last_applied}: \
         the cache is shallow and the history between them is missing (fetch deeper or unshallow)"
    )]
    ShallowAncestry {
        /// The fetched commit.
        new: Oid,
        /// The commit applied last.
        last_applied: Oid,
    },
}

impl SourceError {
    /// The refusal reason when this error is a verification or anti-rollback refusal.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            SourceError::Refused { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

/// Sets libgit2's process-wide options (connect and server timeouts) and registers bosun's
/// `http(s)://` and `ssh://` transports. Runs once per process: later calls do nothing.
///
/// # Safety
///
/// Mutates C globals without synchronisation on libgit2's side: the first call must happen
/// before any other thread exists that uses libgit2 (`main` calls it before building the tokio
/// runtime, because libgit2's option setters and its transport registry are not thread-safe).
#[allow(unsafe_code)]
pub unsafe fn init_git_globals() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: the caller guarantees no other thread uses libgit2 yet (see above); the
        // options are plain integers in libgit2's global settings, and the transport registry
        // is a global vector that nothing else touches yet. `Once` makes a second call a no-op.
        unsafe {
            // These setters cannot fail (libgit2 returns an error code only for unknown
            // options).
            let _ = git2::opts::set_server_connect_timeout_in_milliseconds(CONNECT_TIMEOUT_MS);
            let _ = git2::opts::set_server_timeout_in_milliseconds(SERVER_TIMEOUT_MS);
            budget::set_max_object_size();
            if let Err(e) = transport::register() {
                tracing::warn!("registering git transports: {e}");
            }
        }
    });
}

/// A commit that passed every check of [`poll`], with its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// What the fetch did (`Unchanged` polls still re-verify: the trust roots may have changed).
    pub fetch: FetchOutcome,
    /// Whose signature made the commit trusted (or that verification is off).
    pub verdict: Verdict,
    /// How the commit relates to the last applied one.
    pub ancestry: Ancestry,
    /// The node's files and the commit's time; `None` when the commit is the one the caller
    /// said it already has.
    pub files: Option<CommitFiles>,
}

/// What [`poll`] read from an accepted commit the caller does not hold yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommitFiles {
    /// The node's files.
    pub snapshot: Snapshot,
    /// The commit's committer time (unix seconds): the clock of rollout waves.
    pub committed_at: i64,
}

impl Accepted {
    /// The accepted commit id.
    pub fn commit(&self) -> Oid {
        self.fetch.commit()
    }
}

/// One full poll in chain-of-custody order: fetch the ref ([`fetch_counted`]), verify the head
/// signature ([`verify_commit`], through `memo`: the same commit under the same trust roots is
/// not checked twice), refuse rollbacks ([`check_descends_or_deepen`]), then read the
/// files of node `hostname` ([`snapshot`]) unless the commit is `have` (the caller holds its
/// files already: an idle poll reads no tree). Talks to the network and writes to the cache;
/// nothing else. A refusal is `Err(SourceError::Refused { .. })` and leaves the caller's
/// applied state untouched.
pub fn poll(
    cfg: &SourceConfig,
    verify: &VerifyConfig,
    last_applied: Option<Oid>,
    counters: &TransferCounters,
    hostname: &str,
    have: Option<Oid>,
    memo: &mut VerifyMemo,
) -> Result<Accepted, SourceError> {
    let fetched = fetch_counted(cfg, counters)?;
    if matches!(fetched, FetchOutcome::Updated { .. }) {
        // libgit2's indexer freed its per-object tables; give them back (see `memory`).
        crate::memory::trim_heap();
    }
    let commit = fetched.commit();
    let cache = Cache::open(&cfg.cache_dir)?;
    let verdict = {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        memo.verify(&cache, commit, verify, now)?
    };
    let ancestry = check_descends_or_deepen(
        cfg,
        commit,
        last_applied,
        verify.allow_history_rewrite,
        counters,
    )?;
    let files = if have == Some(commit) {
        None
    } else {
        Some(CommitFiles {
            snapshot: snapshot(&cache, commit, cfg.subdir.as_deref(), hostname)?,
            committed_at: cache.commit_time(commit)?,
        })
    };
    Ok(Accepted {
        fetch: fetched,
        verdict,
        ancestry,
        files,
    })
}

/// The bare repository cache of one source. Holds objects and `refs/bosun/*` only.
pub struct Cache {
    repo: git2::Repository,
    dir: PathBuf,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache").field("dir", &self.dir).finish()
    }
}

impl Cache {
    /// Opens the bare cache at `dir`, creating it (and its parents) when missing. Writes to
    /// disk on first use.
    pub fn open(dir: &Path) -> Result<Cache, SourceError> {
        let cache_err = |op, source| SourceError::Cache {
            path: dir.to_path_buf(),
            op,
            source,
        };
        let repo = if dir.join("HEAD").is_file() {
            git2::Repository::open_bare(dir).map_err(|e| cache_err("open", e))?
        } else {
            std::fs::create_dir_all(dir).map_err(|source| SourceError::ReadFile {
                what: "cache directory",
                path: dir.to_path_buf(),
                source,
            })?;
            git2::Repository::init_bare(dir).map_err(|e| cache_err("init", e))?
        };
        Ok(Cache {
            repo,
            dir: dir.to_path_buf(),
        })
    }

    /// Removes `*.lock` files that a crash or power loss left in the cache (under `refs/`, and
    /// `packed-refs.lock`, `shallow.lock`, `config.lock`, `HEAD.lock`). Left alone, a stale ref
    /// lock fails every later fetch of that ref. Deletes files; returns the paths removed.
    ///
    /// Only call this when no fetch can be running on the cache (the daemon: once at startup,
    /// before its first poll).
    pub fn clear_stale_locks(dir: &Path) -> Result<Vec<PathBuf>, SourceError> {
        fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> io::Result<()> {
            let entries = match std::fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let path = entry.path();
                if entry.file_type()?.is_dir() {
                    walk(&path, found)?;
                } else if path.extension().is_some_and(|e| e == "lock") {
                    found.push(path);
                }
            }
            Ok(())
        }
        let io_err = |path: &Path, source| SourceError::ReadFile {
            what: "stale lock in the git cache",
            path: path.to_path_buf(),
            source,
        };
        let mut found = Vec::new();
        walk(&dir.join("refs"), &mut found).map_err(|e| io_err(&dir.join("refs"), e))?;
        for name in [
            "packed-refs.lock",
            "shallow.lock",
            "config.lock",
            "HEAD.lock",
        ] {
            let p = dir.join(name);
            if p.is_file() {
                found.push(p);
            }
        }
        for p in &found {
            std::fs::remove_file(p).map_err(|e| io_err(p, e))?;
        }
        Ok(found)
    }

    /// The cache directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The underlying repository (read access for callers that need more than this API).
    pub fn repo(&self) -> &git2::Repository {
        &self.repo
    }

    /// Whether the cache holds a shallow history.
    pub fn is_shallow(&self) -> bool {
        self.repo.is_shallow()
    }

    /// Whether `commit` is present in the object database.
    pub fn has_commit(&self, commit: Oid) -> bool {
        self.repo.find_commit(commit).is_ok()
    }

    /// The committer time (unix seconds) of `commit`. Reads the object database.
    pub fn commit_time(&self, commit: Oid) -> Result<i64, SourceError> {
        let c = self
            .repo
            .find_commit(commit)
            .map_err(|e| self.err("read commit", e))?;
        let seconds = c.committer().when().seconds();
        Ok(seconds)
    }

    fn err(&self, op: &'static str, source: git2::Error) -> SourceError {
        SourceError::Cache {
            path: self.dir.clone(),
            op,
            source,
        }
    }
}

/// Parses the meaningful lines of an OpenSSH-style file (allowed_signers, known_hosts):
/// trimmed, blank and `#` comment lines skipped. A line `parse` rejects becomes
/// `error(line number, reason)` (1-based). Pure.
pub(crate) fn parse_content_lines<T>(
    text: &str,
    parse: impl Fn(&str) -> Result<T, String>,
    error: impl Fn(usize, String) -> SourceError,
) -> Result<Vec<T>, SourceError> {
    text.lines()
        .enumerate()
        .map(|(idx, raw)| (idx + 1, raw.trim()))
        .filter(|(_, line)| !line.is_empty() && !line.starts_with('#'))
        .map(|(line_no, line)| parse(line).map_err(|reason| error(line_no, reason)))
        .collect()
}

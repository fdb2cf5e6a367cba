//! How much one fetch may bring in: `source.max_fetch_bytes` and the per-object limit, so that
//! a commit that will be refused anyway (unsigned, or just too big) cannot exhaust memory
//! first.
//!
//! What libgit2 keeps in memory while fetching (measured with `bench/fetch/run.py`, numbers in
//! docs/ARCHITECTURE.md): over a network transport the indexer hashes an object that arrives
//! whole with an 8 KiB buffer, so a 128 MiB blob costs 0.1 MiB; an object that arrives as a
//! delta is rebuilt in memory (base and result both whole), 2× its size; libgit2's `file://`
//! transport builds the pack in this process and holds each object whole plus its deflated
//! copy, 2× its size again. Hence two limits:
//!
//! - [`FetchBudget`]: the bytes received, enforced while receiving on every transport: by the
//!   indexer's progress callback (every 100 KiB of pack data on `git://`, `http(s)://` and
//!   `ssh://`), by bosun's own `http(s)` and `ssh` transports on every byte they read (the ref
//!   advertisement and negotiation too), and, for `file://`, before anything is packed, on the
//!   inflated sizes of the objects the fetch would copy ([`local_preflight`]).
//! - [`MAX_OBJECT_BYTES`]: one object rebuilt from a delta, or packed by the `file://`
//!   transport, so the 2× above stays within 128 MiB.
//!
//! A commit refused for its size is remembered in the cache ([`TooLarge`]): later polls refuse
//! it again without downloading it, until the remote moves or the limit is raised.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{Cache, Oid, SourceError};

/// Default of `source.max_fetch_bytes`.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 128 << 20;

/// The largest Git object libgit2 may rebuild from a delta (`GIT_OPT_SET_PACK_MAX_OBJECT_SIZE`)
/// and the largest the `file://` pre-flight lets through. Rebuilding costs twice the object, so
/// this keeps a fetch within 128 MiB of memory under the unit's `MemoryMax=256M`.
pub const MAX_OBJECT_BYTES: u64 = 64 << 20;

/// File in the cache remembering the commit last refused for its size.
const MARKER: &str = "bosun-too-large";

/// The receive limit of one fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchBudget {
    /// The most bytes one fetch may receive.
    pub limit: u64,
}

impl FetchBudget {
    /// Whether `received` bytes are over the limit (pure).
    pub fn exceeded(&self, received: u64) -> bool {
        received > self.limit
    }
}

/// Why a fetch was over its budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TooLarge {
    /// More than the limit was received (or, for `file://`, would have been copied).
    Bytes {
        /// The limit.
        limit: u64,
        /// Bytes received (or to copy) when the fetch stopped.
        seen: u64,
    },
    /// One object is bigger than [`MAX_OBJECT_BYTES`].
    Object {
        /// The object.
        id: Oid,
        /// Its size in bytes.
        size: u64,
    },
    /// An object that arrived as a delta would be bigger than [`MAX_OBJECT_BYTES`] rebuilt
    /// (libgit2 stops before allocating it and does not say which object).
    Rebuilt,
}

impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TooLarge::Bytes { limit, seen } => write!(
                f,
                "fetching it takes more than source.max_fetch_bytes ({limit} bytes; stopped at {seen}); raise the limit in the agent config if the repo really is that big"
            ),
            TooLarge::Object { id, size } => write!(
                f,
                "Git object {id} is {size} bytes, over the {MAX_OBJECT_BYTES}-byte limit on one object (it would be held in memory whole)"
            ),
            TooLarge::Rebuilt => write!(
                f,
                "a Git object in it arrives as a delta that rebuilds to more than {MAX_OBJECT_BYTES} bytes (it would be held in memory whole)"
            ),
        }
    }
}

/// Sets libgit2's limit on objects rebuilt from deltas. Writes a libgit2 global: call only
/// from `init_git_globals` (before other threads use libgit2).
///
/// # Safety
/// As [`super::init_git_globals`].
#[allow(unsafe_code)] // a libgit2 global option: see `# Safety`.
pub(super) unsafe fn set_max_object_size() {
    let size = usize::try_from(MAX_OBJECT_BYTES).unwrap_or(usize::MAX);
    // SAFETY: the caller guarantees no other thread uses libgit2; the option takes a size_t.
    unsafe {
        libgit2_sys::git_libgit2_opts(
            libgit2_sys::GIT_OPT_SET_PACK_MAX_OBJECT_SIZE as std::ffi::c_int,
            size,
        );
    }
}

/// The refusal remembered for `commit`, when it was refused under a limit at least as high as
/// `limit`. Reads the cache directory.
pub fn remembered(cache: &Cache, commit: Oid, limit: u64) -> Option<TooLarge> {
    let text = std::fs::read_to_string(cache.dir().join(MARKER)).ok()?;
    let mut words = text.split_whitespace();
    let (id, was_limit, what, n) = (words.next()?, words.next()?, words.next()?, words.next()?);
    let was_limit: u64 = was_limit.parse().ok()?;
    if Oid::from_str(id).ok()? != commit || was_limit < limit {
        return None;
    }
    let n: u64 = n.parse().ok()?;
    match what {
        "bytes" => Some(TooLarge::Bytes { limit, seen: n }),
        "rebuilt" => Some(TooLarge::Rebuilt),
        object => Some(TooLarge::Object {
            id: Oid::from_str(object).ok()?,
            size: n,
        }),
    }
}

/// Remembers that `commit` was refused under `limit`. Writes one small file in the cache (a
/// failure only means the next poll downloads it again).
pub fn remember(cache: &Cache, commit: Oid, limit: u64, why: &TooLarge) {
    let line = match why {
        TooLarge::Bytes { seen, .. } => format!("{commit} {limit} bytes {seen}\n"),
        TooLarge::Object { id, size } => format!("{commit} {limit} {id} {size}\n"),
        TooLarge::Rebuilt => format!("{commit} {limit} rebuilt 0\n"),
    };
    if let Err(e) =
        crate::statefile::write_atomic(&cache.dir().join(MARKER), line.as_bytes(), 0o600)
    {
        tracing::debug!("remembering the oversized commit {commit}: {e}");
    }
}

/// Whether `e` is libgit2 refusing to rebuild a delta over [`MAX_OBJECT_BYTES`]
/// (`GIT_OPT_SET_PACK_MAX_OBJECT_SIZE`; libgit2 has no error code of its own for it). Pure.
pub fn is_rebuilt_too_large(e: &git2::Error) -> bool {
    e.message().contains("overly large object")
}

/// The repository directory a local URL (`file://`, an absolute or `./` path) names.
pub fn local_path(url: &str) -> PathBuf {
    PathBuf::from(url.strip_prefix("file://").unwrap_or(url))
}

/// For libgit2's `file://` transport, which packs in this process: the objects a fetch of
/// `wants` would copy from the repository at `source` (everything reachable from them that the
/// cache lacks) must each fit [`MAX_OBJECT_BYTES`] and together fit `budget`, counted inflated
/// (that is what the transport holds). Reads both repositories (object headers only, and trees).
pub fn local_preflight(
    source: &Path,
    cache: &Cache,
    wants: &[Oid],
    budget: FetchBudget,
) -> Result<Option<TooLarge>, SourceError> {
    let fail = |op, source_err| SourceError::Remote {
        url: source.display().to_string(),
        op,
        source: source_err,
    };
    let repo = git2::Repository::open(source).map_err(|e| fail("open the local repository", e))?;
    let odb = repo
        .odb()
        .map_err(|e| fail("open the object database", e))?;
    let have = cache
        .repo()
        .odb()
        .map_err(|e| cache.err("open the object database", e))?;
    let mut walk = repo.revwalk().map_err(|e| fail("walk history", e))?;
    for want in wants {
        let commit = repo
            .find_object(*want, None)
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| fail("read the wanted commit", e))?;
        walk.push(commit.id())
            .map_err(|e| fail("walk history", e))?;
    }
    // What the cache already has does not travel (the transport negotiates the same way).
    if let Ok(refs) = cache.repo().references_glob("refs/bosun/*") {
        for id in refs.flatten().filter_map(|r| r.target()) {
            if odb.exists(id) {
                let _ = walk.hide(id);
            }
        }
    }
    let mut counter = Counter {
        odb: &odb,
        have: &have,
        seen: HashSet::new(),
        total: 0,
        budget,
    };
    for commit in walk {
        let commit = commit.map_err(|e| fail("walk history", e))?;
        let tree = repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(|e| fail("read a commit", e))?;
        if let Some(over) = counter.add(commit).map_err(|e| fail("read an object", e))? {
            return Ok(Some(over));
        }
        if let Some(over) = counter
            .tree(&repo, &tree)
            .map_err(|e| fail("read a tree", e))?
        {
            return Ok(Some(over));
        }
    }
    Ok(None)
}

/// Sums the inflated sizes of objects not yet seen and not in the cache.
struct Counter<'a> {
    odb: &'a git2::Odb<'a>,
    have: &'a git2::Odb<'a>,
    seen: HashSet<Oid>,
    total: u64,
    budget: FetchBudget,
}

impl Counter<'_> {
    /// Counts `id` unless known; `Some` once over a limit. Reads one object header.
    fn add(&mut self, id: Oid) -> Result<Option<TooLarge>, git2::Error> {
        if !self.seen.insert(id) || self.have.exists(id) {
            return Ok(None);
        }
        let (size, _) = self.odb.read_header(id)?;
        let size = size as u64;
        if size > MAX_OBJECT_BYTES {
            return Ok(Some(TooLarge::Object { id, size }));
        }
        self.total += size;
        if self.budget.exceeded(self.total) {
            return Ok(Some(TooLarge::Bytes {
                limit: self.budget.limit,
                seen: self.total,
            }));
        }
        Ok(None)
    }

    /// Counts `tree` and everything below it (submodule commits are not copied).
    fn tree(
        &mut self,
        repo: &git2::Repository,
        tree: &git2::Tree<'_>,
    ) -> Result<Option<TooLarge>, git2::Error> {
        if self.seen.contains(&tree.id()) || self.have.exists(tree.id()) {
            return Ok(None);
        }
        if let Some(over) = self.add(tree.id())? {
            return Ok(Some(over));
        }
        for entry in tree.iter() {
            match entry.kind() {
                Some(git2::ObjectType::Tree) => {
                    let sub = repo.find_tree(entry.id())?;
                    if let Some(over) = self.tree(repo, &sub)? {
                        return Ok(Some(over));
                    }
                }
                Some(git2::ObjectType::Blob) => {
                    if let Some(over) = self.add(entry.id())? {
                        return Ok(Some(over));
                    }
                }
                _ => {}
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_is_exceeded_only_past_the_limit() {
        let b = FetchBudget { limit: 10 };
        assert!(!b.exceeded(10));
        assert!(b.exceeded(11));
    }

    #[test]
    fn a_remembered_refusal_holds_for_the_same_commit_and_no_higher_limit() {
        let d = tempfile::tempdir().unwrap();
        let cache = Cache::open(d.path()).unwrap();
        let c = Oid::from_str("0123456789abcdef0123456789abcdef01234567").unwrap();
        let other = Oid::from_str("1123456789abcdef0123456789abcdef01234567").unwrap();
        assert_eq!(remembered(&cache, c, 100), None);
        remember(
            &cache,
            c,
            100,
            &TooLarge::Bytes {
                limit: 100,
                seen: 150,
            },
        );
        assert_eq!(
            remembered(&cache, c, 100),
            Some(TooLarge::Bytes {
                limit: 100,
                seen: 150
            })
        );
        assert!(remembered(&cache, c, 50).is_some());
        assert_eq!(
            remembered(&cache, c, 200),
            None,
            "a raised limit tries again"
        );
        assert_eq!(remembered(&cache, other, 100), None, "the remote moved");
        remember(&cache, c, 100, &TooLarge::Object { id: other, size: 7 });
        assert_eq!(
            remembered(&cache, c, 100),
            Some(TooLarge::Object { id: other, size: 7 })
        );
    }

    #[test]
    fn local_urls_name_their_directory() {
        assert_eq!(local_path("file:///srv/fleet"), PathBuf::from("/srv/fleet"));
        assert_eq!(local_path("/srv/fleet"), PathBuf::from("/srv/fleet"));
    }
}
